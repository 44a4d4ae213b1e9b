#!/bin/sh
# sae-train-mpi --parallel grid --shards S (data-parallel groups of S feature
# shards) against sae-train: ReLU with the recipe (--normalize, --b-dec-init,
# a linear lr schedule) on a 2 x 2 grid, TopK with AuxK on a 2 x 3 grid
# (uneven shards, uneven rows per group) and BatchTopK on a 2 x 2 grid give
# sae-train's model (every tensor
# within 1e-4 relative: check_same_model), cfg.json, state and log; the
# grid's checkpoint resumes in one process (sae-train --resume) and on a
# grid as sae-train resumes its own; a NaN row is said once; a rank killed
# mid-run ends the job; the command lines it refuses, each with exit status
# 2 on every rank and its message once (rank 0's).
# Usage: mpi_grid.sh BINDIR MPIEXEC [MPIEXEC FLAGS...]
. "$(dirname "$0")/lib.sh"
bin=$1
shift
MPIRUN="$*"
. "$(dirname "$0")/mpi_lib.sh"

# refused NP MESSAGE ARGS...: mpirun -np NP sae-train-mpi ARGS exits 2 and
# says MESSAGE exactly once
refused() {
    np=$1
    message=$2
    shift 2
    # shellcheck disable=SC2086
    run $MPIRUN -np "$np" "$bin/sae-train-mpi" "$@"
    if [ "$rc" -ne 2 ]; then
        fail "$*: exit $rc, want 2: $(cat "$tmp/err")"
    elif [ "$(grep -cF -- "sae-train-mpi: $message" "$tmp/err")" -ne 1 ]; then
        fail "$*: want '$message' once: $(cat "$tmp/err")"
    else
        echo "ok: $np ranks, $*: $message"
    fi
}

raw_f32 "$tmp/acts.f32" 600 16
# train NAME NP SHARDS ARGS...: sae-train ARGS saving $tmp/NAME.one and
# sae-train-mpi ARGS on NP ranks as a grid of SHARDS shards saving
# $tmp/NAME.grid, each with its log; the same model, files and log
train() {
    name=$1
    np=$2
    shards=$3
    shift 3
    run "$bin/sae-train" "$tmp/acts.f32" --d-in 16 --log-every 5 "$@" --save "$tmp/$name.one" \
        --log "$tmp/$name.one.csv"
    [ "$rc" -eq 0 ] || fail "sae-train $name: exit $rc: $(cat "$tmp/err")"
    # shellcheck disable=SC2086
    run $MPIRUN -np "$np" "$bin/sae-train-mpi" "$tmp/acts.f32" --d-in 16 --log-every 5 "$@" \
        --parallel grid --shards "$shards" --save "$tmp/$name.grid" --log "$tmp/$name.grid.csv" \
        --comm-stats
    [ "$rc" -eq 0 ] || fail "$name on a grid of $np ranks: exit $rc: $(cat "$tmp/err")"
    groups=$((np / shards))
    grep -q "; $np ranks, grid of $groups groups x $shards shards;" "$tmp/err" ||
        fail "$name: header: $(grep '^training on' "$tmp/err")"
    # --comm-stats: each rank's two communicators, the gradient block's
    # allreduce once per step over data
    [ "$(grep -c '^  rank [0-9]*: features: .*allreduce_f32' "$tmp/out")" -eq "$np" ] &&
        [ "$(grep -c '^  rank [0-9]*: data: .*allreduce_f32 1\.0 calls' "$tmp/out")" -eq "$np" ] ||
        fail "$name: --comm-stats: $(cat "$tmp/out")"
    run "$bin/check_same_model" "$tmp/$name.grid" "$tmp/$name.one"
    [ "$rc" -eq 0 ] || fail "$name on a grid: not sae-train's model: $(cat "$tmp/out" "$tmp/err")"
    cmp -s "$tmp/$name.grid/cfg.json" "$tmp/$name.one/cfg.json" || fail "$name: cfg.json differs"
    grep -v '^seconds ' "$tmp/$name.grid/train_state.txt" >"$tmp/state.grid"
    grep -v '^seconds ' "$tmp/$name.one/train_state.txt" >"$tmp/state.one"
    cmp -s "$tmp/state.grid" "$tmp/state.one" || fail "$name: train_state.txt differs"
    close_logs "$tmp/$name.grid.csv" "$tmp/$name.one.csv" >"$tmp/diff" ||
        fail "$name: log: $(head -3 "$tmp/diff")"
    echo "ok: $name on a grid of $groups groups x $shards shards trains sae-train's model"
}
train relu 4 2 --d-sae 40 --batch 50 --steps 30 --arch relu --lambda 0.1 --normalize \
    --b-dec-init median --lr-schedule linear --lr-warmup 4 --lr-decay 0.3 --lr 3e-3
train topk 6 3 --d-sae 40 --batch 51 --steps 20 --arch topk --k 3 --auxk-k 4 --dead-window 50
train batchtopk 4 2 --d-sae 40 --batch 50 --steps 20 --arch batchtopk --k 3

# --- the grid's checkpoint resumed by one process and by a grid ----------------
cp -r "$tmp/relu.grid" "$tmp/relu.grid2"
run "$bin/sae-train" --resume "$tmp/relu.one" --steps 45 --log "$tmp/relu.one.csv"
[ "$rc" -eq 0 ] || fail "sae-train --resume: exit $rc: $(cat "$tmp/err")"
run "$bin/sae-train" --resume "$tmp/relu.grid" --steps 45 --log "$tmp/relu.grid.csv"
[ "$rc" -eq 0 ] || fail "sae-train --resume of the grid's checkpoint: exit $rc: $(cat "$tmp/err")"
run "$bin/check_same_model" "$tmp/relu.grid" "$tmp/relu.one"
[ "$rc" -eq 0 ] || fail "the grid's checkpoint resumed by sae-train: $(cat "$tmp/out" "$tmp/err")"
close_logs "$tmp/relu.grid.csv" "$tmp/relu.one.csv" >"$tmp/diff" ||
    fail "the grid's checkpoint resumed by sae-train: log: $(head -3 "$tmp/diff")"
# shellcheck disable=SC2086
run $MPIRUN -np 4 "$bin/sae-train-mpi" --resume "$tmp/relu.grid2" --steps 45 --parallel grid \
    --shards 2
[ "$rc" -eq 0 ] || fail "a grid resuming its checkpoint: exit $rc: $(cat "$tmp/err")"
grep -q "^resuming $tmp/relu.grid2 at step 30 of 45" "$tmp/err" || fail "resume: $(cat "$tmp/err")"
run "$bin/check_same_model" "$tmp/relu.grid2" "$tmp/relu.one"
[ "$rc" -eq 0 ] || fail "a grid resuming its checkpoint: $(cat "$tmp/out" "$tmp/err")"
echo "ok: the grid's checkpoint resumes in sae-train and on a grid as sae-train's own"

# --- a NaN row: said once, by the first shard of the group that read it -------
cp "$tmp/acts.f32" "$tmp/nan.f32"
printf '\377\377\377\177' | dd of="$tmp/nan.f32" bs=1 seek=$((37 * 64 + 12)) conv=notrunc 2>/dev/null
# shellcheck disable=SC2086
run $MPIRUN -np 4 "$bin/sae-train-mpi" "$tmp/nan.f32" --d-in 16 --d-sae 40 --batch 50 --steps 20 \
    --parallel grid --shards 2
[ "$rc" -ne 0 ] || fail "a NaN row: exit 0"
[ "$(grep -c "nan.f32: row 37 holds NaN or Inf" "$tmp/err")" -eq 1 ] ||
    fail "a NaN row: $(cat "$tmp/err")"
echo "ok: a NaN row is said once"

killed_rank_ends_job 4 --d-sae 64 --batch 256 --steps 100000000 --log-every 10 --parallel grid \
    --shards 2

refused 2 "--parallel grid: needs --shards S, the feature shards of each data group" \
    --parallel grid
refused 2 "--shards 3: the 2 ranks do not split into groups of 3 shards (ranks = groups x shards)" \
    --parallel grid --shards 3
refused 2 "--shards: only with --parallel grid" --parallel features --shards 2
refused 2 "--shards: must be at least 1, got '0'" --parallel grid --shards 0
refused 2 "--parallel 'rows': data, features or grid" --parallel rows
refused 2 "--d-sae 1: grid on 2 shards needs a feature per shard" \
    --parallel grid --shards 2 --d-sae 1 --steps 1
refused 2 "--batch 1: grid on 2 groups needs at least one token per group" \
    --parallel grid --shards 1 --batch 1 --steps 1
finish
