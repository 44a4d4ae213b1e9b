# shellcheck shell=sh
# shellcheck disable=SC2154 # $tmp (lib.sh) and $bin (the test) are set by the scripts that source this
# Helpers of the sae-train-mpi tests (mpi.sh, mpi_grid.sh), sourced after
# lib.sh; $MPIRUN is the mpiexec command with its flags and $bin the tools'
# directory.

# close_logs A B: the same rows, every number within 1e-4 relative (seconds
# and the checkpoint column aside)
close_logs() {
    awk -F, 'NR == FNR { a[FNR] = $0; n = FNR; next }
        FNR == 1 { for (i = 1; i <= NF; i++) col[i] = $i; next }
        { split(a[FNR], x, ","); for (i = 1; i <= NF; i++) {
            if (col[i] == "seconds") continue
            d = x[i] - $i; if (d < 0) d = -d; m = $i < 0 ? -$i : $i
            if (d > 1e-4 * m + 1e-9) { print "row " FNR " " col[i] ": " x[i] " vs " $i; bad = 1 } } }
        END { if (FNR != n) { print FNR " rows vs " n; bad = 1 } exit bad }' "$1" "$2"
}

# killed_rank_ends_job NP ARGS...: mpirun -np NP sae-train-mpi ARGS (a run
# long enough to be killed, logging "step" lines), one rank killed with
# SIGKILL once it steps: the job must end within 60 s with a nonzero status.
killed_rank_ends_job() {
    np=$1
    shift
    # shellcheck disable=SC2086
    $MPIRUN -np "$np" "$bin/sae-train-mpi" "$@" >"$tmp/kill.out" 2>"$tmp/kill.err" &
    job=$!
    victim=
    for _ in $(seq 600); do # the ranks: mpirun's children (up to 60 s: a loaded machine)
        victim=$(ps -o pid= -o comm= --ppid "$job" | awk '$2 == "sae-train-mpi" { print $1; exit }')
        [ -n "$victim" ] && grep -q "^step" "$tmp/kill.err" 2>/dev/null && break
        sleep 0.1
    done
    if [ -z "$victim" ]; then
        fail "no rank of the job to kill: $(cat "$tmp/kill.err")"
        kill "$job" 2>/dev/null
        return
    fi
    sleep 1
    kill -9 "$victim"
    # wait for mpirun, at most 60 s
    for _ in $(seq 600); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$job" 2>/dev/null; then
        fail "the job still runs 60 s after a rank was killed"
        kill -9 "$job"
    fi
    krc=0
    wait "$job" || krc=$?
    if [ "$krc" -ne 0 ]; then
        echo "ok: a killed rank ends the job of $np ranks (exit $krc)"
    else
        fail "the job of a killed rank exits 0"
    fi
}
