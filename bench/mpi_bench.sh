#!/bin/sh
# Distributed training, measured (issue 12): per-rank collectives, payload
# bytes and peak memory of a training step, from libsae-mpi's counting
# communicator (bench/mpi_step.c), against the formulas; the step time of 2
# ranks against 1 on this machine; and a projected step time per N on a
# 25 Gb/s network from the measured single-rank compute and the measured
# volume. TopK k 32, d_in 768, B 4096, one BLAS thread per rank.
#
#   bench/mpi_bench.sh [BUILD_DIR] [all|real|simulated|matryoshka|grid]
#                                          (default: build all; results: RESULTS.md)
#
# grid: a 2 x 2 grid (2 data groups of 2 feature shards, sae-train-mpi
# --parallel grid --shards 2 --comm-stats, 2 steps on synthetic data) at
# d_sae 10,000: bytes and collectives per step per rank on each axis against
# the formulas (features: 4 n_g (d_in + k) for the group's n_g = B / G rows;
# data: the shard's gradient block, 4 (2 d_in d_sae / S + d_sae / S + d_in)),
# and the projected step time of grid shapes G x S at 25 Gb/s from the
# measured 1-rank compute (mpi_step) and those volumes.
# matryoshka: feature-sharded Matryoshka BatchTopK on 2 ranks at d_sae 10,000
# with 2, 3 and 4 levels (sae-train-mpi --comm-stats, its counting
# communicator, 2 steps on synthetic data), and 2 levels with AuxK on its
# second step: bytes per step against 4 n d_in (L + AuxK) + the BatchTopK
# histograms, and the 3 n d_in floats.
# real: mpirun jobs of 1-3 ranks at d_sae 10,000 and 40,000.
# simulated: d_sae 1,000,000 feature-sharded, whose 24.6 GB of state do not
# fit this machine: ONE real rank of an N-rank job (N = 32, 64, 100) holds
# only its 1/N slice and runs the real step; its collectives are counted and
# completed by simulated peers (mpi_step --simulate, see mpi_step.c). The
# same simulation at N = 2 and 3, d_sae 10,000, is checked against the real
# mpirun jobs' counts (the script fails if they differ).
# The machine has 2 shared cores, so wall-clock scaling is not measured
# here: 2 ranks share the 2 cores the 1-rank run had to itself.
set -eu
bin=${1:-build}/bench/mpi_step
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
mpirun="mpirun --oversubscribe"
shape="--d-in 768 --batch 4096 --k 32 --steps ${STEPS:-3}"
parts=${2:-all}
out=$(mktemp)
sim=$(mktemp)
trap 'rm -f "$out" "$sim"' EXIT
# the start of both tables' awk programs: mpi_step's key=value lines kept in
# rows[], and get(line, key) reading one value
awk_rows='
function get(line, key,   i, n, kv) {
    n = split(line, f, " ")
    for (i = 1; i <= n; i++) { split(f[i], kv, "="); if (kv[1] == key) return kv[2] }
    return ""
}
{ rows[NR] = $0 }'
if [ "$parts" = all ] || [ "$parts" = matryoshka ]; then
    train=${1:-build}/tools/sae-train-mpi
    mat="--d-in 768 --d-sae 10000 --batch 4096 --k 32 --arch matryoshka --parallel features
         --comm-stats --synth-tokens 8192 --sample 4096 --log-every 1 --steps 2"
    # shellcheck disable=SC2086
    for spec in "2:5000:0" "3:2500,5000:0" "4:625,2500,5000:0" "2:5000:1"; do
        levels=${spec%%:*}
        rest=${spec#*:}
        widths=${rest%%:*}
        auxk=${rest#*:}
        if [ "$auxk" = 1 ]; then # every feature not firing on the batch's last token is dead
            extra="--dead-window 1 --auxk-coeff 0.03125"
        else
            extra="--auxk-coeff 0"
        fi
        $mpirun -np 2 "$train" $mat --widths "$widths" $extra 2>/dev/null |
            sed -n "s/^  rank 0:/levels=$levels auxk=$auxk/p"
    done >"$out"
    echo "Feature-sharded Matryoshka, 2 ranks, d_in 768, d_sae 10,000, B 4096, k 32 (bytes rank 0 sent per step; 2 steps, AuxK on the second):"
    echo
    awk '
    function num(key,   i) { for (i = 1; i <= NF; i++) if ($i == key) return $(i + 3); return 0 }
    {
        split($1, a, "="); L = a[2]; split($2, b, "="); aux = b[2]
        for (i = 1; i <= NF; i++) if ($i == "total") { calls = $(i + 1); bytes = $(i + 3) }
        n = 4096; d_in = 768
        # the levels (an AuxK step: one more n d_in, and its candidates, n
        # k_aux floats, k_aux = d_in / 2), the two radix histograms (65536
        # doubles each); not in it: the O(d_in) records. AuxK runs on 1 of the
        # 2 steps: half of its bytes per step
        f32 = 4 * n * d_in * (L + aux / 2)
        formula = f32 + 2 * 8 * 65536 + aux / 2 * 4 * n * (d_in / 2)
        target = 4 * 3 * n * d_in
        if (NR == 1) printf "| levels L | AuxK | collectives/step | bytes/step | allreduce_f32 bytes | formula 4 n d_in (L + AuxK) + 4 n k_aux AuxK + 1 MiB | bytes/formula | 3 n d_in floats | <= 3 n d_in + histograms |\n|---:|---|---:|---:|---:|---:|---:|---:|---|\n"
        printf "| %d | %s | %s | %s | %s | %.0f | %.4f | %.0f | %s |\n", L, aux ? "step 2 of 2" : "off", calls, bytes, num("allreduce_f32"), formula, bytes / formula, target, f32 <= target ? "yes" : "NO"
    }' "$out"
    [ "$parts" = matryoshka ] && exit 0
fi
if [ "$parts" = all ] || [ "$parts" = grid ]; then
    train=${1:-build}/tools/sae-train-mpi
    grid="--d-in 768 --d-sae 10000 --batch 4096 --arch topk --k 32 --parallel grid --shards 2
          --comm-stats --synth-tokens 8192 --sample 4096 --log-every 1 --steps 2"
    # shellcheck disable=SC2086
    {
        $mpirun -np 4 "$train" $grid 2>/dev/null |
            sed -n 's/^  rank \([0-9]*\): \([a-z]*\):/grid rank=\1 axis=\2/p'
        "$bin" --ranks 1 $shape --d-sae 10000
    } >"$out"
    grep -m1 -o 'blas=.*' "$out" | sed 's/^blas=/# BLAS core (openblas_get_corename): /'
    echo "2 x 2 grid (2 groups of 2 shards, 4 ranks), d_in 768, d_sae 10,000, B 4096 (2048 rows per group), TopK k 32: per step per rank on each axis (sae-train-mpi --comm-stats, 2 steps):"
    echo
    awk -v bw_gbit=25 '
    function num(key,   i) { for (i = 1; i <= NF; i++) if ($i == key) return $(i + 3); return 0 }
    function kv(key,   i, a) { for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == key) return a[2] }; return "" }
    BEGIN { d_in = 768; d_sae = 10000; B = 4096; k = 32; G = 2; S = 2 }
    $1 == "grid" {
        axis = kv("axis")
        for (i = 1; i <= NF; i++) if ($i == "total") { calls = $(i + 1); bytes = $(i + 3) }
        n_g = B / G; d_s = d_sae / S
        formula = axis == "features" ? 4 * n_g * (d_in + k) : 4 * (2 * d_in * d_s + d_s + d_in)
        if (!header++) printf "| rank | axis | collectives/step | bytes/step | allreduce_f32 bytes | allgather bytes | formula bytes | bytes/formula |\n|---:|---|---:|---:|---:|---:|---:|---:|\n"
        printf "| %s | %s | %s | %s | %s | %s | %.0f | %.4f |\n", kv("rank"), axis, calls, bytes, num("allreduce_f32"), num("allgather"), formula, bytes / formula
        ratio[axis] = bytes / formula
        next
    }
    { t1 = kv("ms") }
    END {
        bw = bw_gbit * 1e9 / 8
        printf "\nProjected step time of grid shapes at %d Gb/s (d_sae 10,000, B 4096; compute = the measured 1-rank %.0f ms / N; each axis its formula x the ratio measured above: features %.4f, data %.4f; ring allreduce 2 (r-1)/r x payload, allgather (r-1) x the block over r ranks; \"group on a node\": the features axis on shared memory, only the data axis on the network):\n\n", bw_gbit, t1, ratio["features"], ratio["data"]
        printf "| N | groups G x shards S | features-axis network ms | data-axis network ms | projected ms/step | group on a node: ms/step |\n|---:|---|---:|---:|---:|---:|\n"
        split("4:1 4:2 4:4 16:1 16:2 16:4 16:8 16:16 64:8 64:16 64:64", shapes, " ")
        for (i = 1; i in shapes; i++) {
            split(shapes[i], ns, ":"); N = ns[1]; S = ns[2]; G = N / S
            n_g = B / G; d_s = d_sae / S
            fa = S > 1 ? (2 * (S - 1) / S * 4 * n_g * d_in + (S - 1) * 4 * n_g * k) * ratio["features"] : 0
            da = G > 1 ? 2 * (G - 1) / G * 4 * (2 * d_in * d_s + d_s + d_in) * ratio["data"] : 0
            wf = 1e3 * fa / bw; wd = 1e3 * da / bw
            printf "| %d | %d x %d | %.1f | %.1f | %.0f | %.0f |\n", N, G, S, wf, wd, t1 / N + wf + wd, t1 / N + wd
        }
    }' "$out"
    [ "$parts" = grid ] && exit 0
fi
if [ "$parts" = all ] || [ "$parts" = simulated ]; then
    # shellcheck disable=SC2086
    {
        # the check: the simulation against the real jobs' counts
        "$bin" --simulate 2 --rank 1 $shape --d-sae 10000
        "$bin" --simulate 3 --rank 2 $shape --d-sae 10000
        $mpirun -np 3 "$bin" --mode features $shape --d-sae 10000 --steps 1
        for n in 32 64 100; do
            "$bin" --simulate "$n" --rank $((n / 2)) $shape --d-sae 1000000
        done
    } >"$sim"
    grep -m1 -o 'blas=.*' "$sim" | sed 's/^blas=/# BLAS core (openblas_get_corename): /'
    awk -v bw_gbit=25 "$awk_rows"'
    END {
        # the simulation reproduces a real job: the same calls and bytes per step
        for (r = 1; r <= NR; r++) {
            l = rows[r]
            if (get(l, "simulated") == 0 && get(l, "d_sae") == 10000) { real_calls = get(l, "calls"); real_bytes = get(l, "bytes") }
        }
        bad = 0
        for (r = 1; r <= NR; r++) {
            l = rows[r]
            if (get(l, "simulated") > 0 && get(l, "d_sae") == 10000) {
                same = get(l, "calls") == real_calls && get(l, "bytes") == real_bytes
                printf "check: simulated rank %s of %s at d_sae 10,000: %s collectives, %s bytes per step; real 3-rank job: %s, %s: %s\n", get(l, "rank"), get(l, "ranks"), get(l, "calls"), get(l, "bytes"), real_calls, real_bytes, same ? "the same" : "DIFFERENT"
                if (!same) bad = 1
            }
        }
        bw = bw_gbit * 1e9 / 8
        printf "\n| N | rank | features | ms/step | collectives/step | bytes sent/step | of which allreduce | formula 4 n (d_in + k) | <= target 4 n (3 d_in + k) | bytes received/step | peak RSS MB | state+batch MB | RSS/(state+batch) | network ms at %d Gb/s | projected ms/step |\n", bw_gbit
        printf "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n"
        for (r = 1; r <= NR; r++) {
            l = rows[r]
            if (get(l, "d_sae") != 1000000) continue
            N = get(l, "ranks"); bytes = get(l, "bytes"); ar = get(l, "allreduce_f32_bytes"); ag = get(l, "allgather_bytes")
            d_in = get(l, "d_in"); k = get(l, "k"); n = get(l, "tokens")
            target = 4 * n * (3 * d_in + k)
            # ring allreduce: 2 (N-1)/N x payload each way; allgather: (N-1) blocks in
            recv = 2 * (N - 1) / N * ar + (N - 1) * ag
            wire = 1e3 * recv / bw
            sb = get(l, "state_mb") + get(l, "batch_mb")
            printf "| %d | %d | %d | %.0f | %.2f | %.0f | %.0f | %.0f | %s | %.0f | %.0f | %.0f | %.2f | %.1f | %.0f |\n", N, get(l, "rank"), get(l, "features"), get(l, "ms"), get(l, "calls"), bytes, ar, get(l, "formula_bytes"), bytes <= target ? "yes" : "NO", recv, get(l, "peak_rss_mb"), sb, get(l, "peak_rss_mb") / sb, wire, get(l, "ms") + wire
        }
        exit bad
    }' "$sim"
    [ "$parts" = simulated ] && exit 0
fi
# shellcheck disable=SC2086
{
    "$bin" --ranks 1 $shape --d-sae 10000
    $mpirun -np 2 "$bin" --mode data $shape --d-sae 10000
    $mpirun -np 2 "$bin" --mode features $shape --d-sae 10000
    $mpirun -np 3 "$bin" --mode features $shape --d-sae 10000
    $mpirun -np 2 "$bin" --mode features $shape --d-sae 40000
} >"$out"
grep -m1 -o 'blas=.*' "$out" | sed 's/^blas=/# BLAS core (openblas_get_corename): /'
awk -v bw_gbit=25 "$awk_rows"'
END {
    printf "| mode | N | rank | features | tokens | ms/step | collectives/step | bytes/step | formula bytes | bytes/formula | <= target | peak RSS MB | state+batch MB | RSS/(state+batch) |\n"
    printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n"
    for (r = 1; r <= NR; r++) {
        l = rows[r]; mode = get(l, "mode"); n = get(l, "ranks"); bytes = get(l, "bytes")
        d_in = get(l, "d_in"); k = get(l, "k"); tok = get(l, "tokens")
        formula = mode == "none" ? 0 : get(l, "formula_bytes")
        # targets: data, one allreduce of the gradients (plus small allgathers);
        # features, 3 n d_in floats plus the TopK candidates
        target = "-"
        if (mode == "features") target = (bytes <= 4 * (3 * 4096 * d_in + 4096 * k)) ? "yes" : "NO"
        if (mode == "data") target = (get(l, "allreduce_f32_bytes") <= formula) ? "yes" : "NO"
        sb = get(l, "state_mb") + get(l, "batch_mb")
        printf "| %s | %s | %s | %s | %s | %.0f | %.2f | %.0f | %s | %s | %s | %.0f | %.0f | %.2f |\n",
            mode, n, get(l, "rank"), get(l, "features"), tok, get(l, "ms"), get(l, "calls"),
            bytes, formula ? formula : "-", formula ? sprintf("%.3f", bytes / formula) : "-",
            target, get(l, "peak_rss_mb"), sb, get(l, "peak_rss_mb") / sb
        if (mode == "none") t1 = get(l, "ms")
        small = get(l, "d_sae") == 10000
        if (mode == "data" && get(l, "rank") == 0) { t_data2 = get(l, "ms"); ar = get(l, "allreduce_f32_bytes"); ag_d = get(l, "allgather_bytes") }
        if (mode == "features" && n == 2 && small && get(l, "rank") == 0) { t_feat2 = get(l, "ms"); fr = get(l, "allreduce_f32_bytes"); ag_f = get(l, "allgather_bytes") }
    }
    printf "\n2 ranks vs 1 on this 2-core machine, d_sae 10,000: step time of 2 ranks / 1 rank: data-parallel %.2f, feature-sharded %.2f (tokens/s: %.2fx and %.2fx of 1 rank)\n", t_data2 / t1, t_feat2 / t1, t1 / t_data2, t1 / t_feat2
    bw = bw_gbit * 1e9 / 8
    printf "\nProjected step time at %d Gb/s (d_sae 10,000; compute = 1-rank %.0f ms / N; ring allreduce moves 2 (N-1)/N x payload per rank, an allgather receives (N-1) x the block):\n\n", bw_gbit, t1
    printf "| N | data-parallel ms | of which network | feature-sharded ms | of which network |\n|---:|---:|---:|---:|---:|\n"
    split("1 2 4 8 16 64", ns, " ")
    for (i = 1; i <= 6; i++) {
        N = ns[i]
        wd = N > 1 ? 1e3 * (2 * (N - 1) / N * ar + (N - 1) * ag_d) / bw : 0
        wf = N > 1 ? 1e3 * (2 * (N - 1) / N * fr + (N - 1) * ag_f) / bw : 0
        printf "| %d | %.0f | %.1f | %.0f | %.1f |\n", N, t1 / N + wd, wd, t1 / N + wf, wf
    }
}' "$out"
