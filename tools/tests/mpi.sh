#!/bin/sh
# sae-train-mpi against sae-train: the same run (a file, TopK with the whole
# recipe: --normalize, --b-dec-init, a linear lr schedule with warm-up and
# decay, resampling) on 2 data-parallel and 3 feature-sharded ranks gives
# sae-train's model (every tensor within 1e-4 relative: check_same_model)
# and log (within 1e-4); the checkpoint of 3 shards resumes on 2 shards as
# sae-train resumes its own; a skip transcoder (--target) on 3 shards and a
# Gated SAE on 2 give sae-train's models; an error every rank meets is said
# once; a bad option is exit status 2 on every rank;
# a rank killed mid-run ends the job with an error instead of a hang.
# Usage: mpi.sh BINDIR MPIEXEC [MPIEXEC FLAGS...]
. "$(dirname "$0")/lib.sh"
bin=$1
shift
MPIRUN="$*"
. "$(dirname "$0")/mpi_lib.sh"
train=$bin/sae-train
raw_f32 "$tmp/acts.f32" 600 16
# shellcheck disable=SC2089
opts="$tmp/acts.f32 --d-in 16 --d-sae 40 --arch topk --k 3 --batch 50 --log-every 5 --lr 3e-3
      --normalize --b-dec-init median --lr-schedule linear --lr-warmup 4 --lr-decay 0.3
      --resample-every 12 --resample-window 50 --dead-window 100 --sample 200"

# --- one process, 2 data-parallel ranks, 3 feature shards ---------------------
# shellcheck disable=SC2086,SC2090
run "$train" $opts --steps 30 --save "$tmp/one" --log "$tmp/one.csv"
[ "$rc" -eq 0 ] || fail "sae-train: exit $rc: $(cat "$tmp/err")"
for mode in data:2 features:3 grid:4; do
    m=${mode%:*}
    n=${mode#*:}
    shards=
    [ "$m" = grid ] && shards="--shards 2"
    # shellcheck disable=SC2086,SC2090
    run $MPIRUN -np "$n" "$bin/sae-train-mpi" $opts --steps 30 --parallel "$m" $shards \
        --save "$tmp/$m" --log "$tmp/$m.csv" --comm-stats
    [ "$rc" -eq 0 ] || fail "$m on $n ranks: exit $rc: $(cat "$tmp/err")"
    grep -q "^trained 30 steps (1500 tokens) in [0-9.]* s on $n ranks" "$tmp/out" ||
        fail "$m: report: $(cat "$tmp/out")"
    # --comm-stats: each rank's allreduces (a grid: its data axis's, the
    # gradient block's once per step)
    [ "$(grep -c '^  rank [0-9]*: \(data: \)\{0,1\}allreduce_f32 1\.[0-9] calls' "$tmp/out")" \
        -eq "$n" ] || fail "$m: --comm-stats: $(cat "$tmp/out")"
    grep -q "^resampled: [1-9]" "$tmp/out" || fail "$m: nothing resampled: $(cat "$tmp/out")"
    run "$bin/check_same_model" "$tmp/$m" "$tmp/one"
    [ "$rc" -eq 0 ] || fail "$m on $n ranks: not sae-train's model: $(cat "$tmp/out" "$tmp/err")"
    run "$bin/check_same_model" "$tmp/$m/train_weights.safetensors" "$tmp/one/train_weights.safetensors"
    [ "$rc" -eq 0 ] || fail "$m on $n ranks: train_weights: $(cat "$tmp/out" "$tmp/err")"
    cmp -s "$tmp/$m/cfg.json" "$tmp/one/cfg.json" || fail "$m: cfg.json differs"
    grep -v '^seconds ' "$tmp/$m/train_state.txt" >"$tmp/state.mpi"
    grep -v '^seconds ' "$tmp/one/train_state.txt" >"$tmp/state.one"
    cmp -s "$tmp/state.mpi" "$tmp/state.one" || fail "$m: train_state.txt differs"
    close_logs "$tmp/$m.csv" "$tmp/one.csv" >"$tmp/diff" || fail "$m: log: $(head -3 "$tmp/diff")"
done
echo "ok: 2 data-parallel ranks, 3 feature shards and a 2 x 2 grid train sae-train's model"

# --- 3 shards' checkpoint resumed on 2 shards, as sae-train resumes its own ---
run "$train" --resume "$tmp/one" --steps 45 --log "$tmp/one.csv"
[ "$rc" -eq 0 ] || fail "sae-train --resume: exit $rc: $(cat "$tmp/err")"
# shellcheck disable=SC2086
run $MPIRUN -np 2 "$bin/sae-train-mpi" --resume "$tmp/features" --steps 45 --parallel features \
    --log "$tmp/features.csv"
[ "$rc" -eq 0 ] || fail "resume on 2 shards: exit $rc: $(cat "$tmp/err")"
grep -q "^resuming $tmp/features at step 30 of 45" "$tmp/err" || fail "resume: $(cat "$tmp/err")"
run "$bin/check_same_model" "$tmp/features" "$tmp/one"
[ "$rc" -eq 0 ] || fail "3 shards resumed on 2: not sae-train's model: $(cat "$tmp/out" "$tmp/err")"
close_logs "$tmp/features.csv" "$tmp/one.csv" >"$tmp/diff" || fail "resumed log: $(head -3 "$tmp/diff")"
echo "ok: 3 shards' checkpoint resumed on 2 shards"

# --- the families: a skip transcoder (--target) on 3 shards, Gated on 2,
# Matryoshka on 2 data-parallel ranks and on 2 shards (the shards' boundary,
# feature 20, inside the band [8, 25)) ------------------------------------------
raw_f32 "$tmp/y.f32" 600 10
for spec in "features:3:skip:--target $tmp/y.f32 --d-out 10 --skip --arch topk --k 3 --auxk-k 4 --dead-window 50" \
            "features:2:gated:--arch gated --lambda 0.1" \
            "data:2:matryoshka:--arch matryoshka --k 3 --widths 8,20 --dead-window 100" \
            "features:2:matryoshka_shards:--arch matryoshka --k 3 --widths 8,25 --dead-window 100"; do
    m=${spec%%:*}
    rest=${spec#*:}
    n=${rest%%:*}
    rest=${rest#*:}
    name=${rest%%:*}
    fam=${rest#*:}
    # shellcheck disable=SC2086
    run "$train" "$tmp/acts.f32" --d-in 16 --d-sae 40 --batch 50 --log-every 5 --steps 20 $fam \
        --save "$tmp/$name.one"
    [ "$rc" -eq 0 ] || fail "sae-train $name: exit $rc: $(cat "$tmp/err")"
    # shellcheck disable=SC2086
    run $MPIRUN -np "$n" "$bin/sae-train-mpi" "$tmp/acts.f32" --d-in 16 --d-sae 40 --batch 50 \
        --log-every 5 --steps 20 $fam --parallel "$m" --save "$tmp/$name.mpi"
    [ "$rc" -eq 0 ] || fail "$name on $n $m ranks: exit $rc: $(cat "$tmp/err")"
    run "$bin/check_same_model" "$tmp/$name.mpi" "$tmp/$name.one"
    [ "$rc" -eq 0 ] || fail "$name on $n ranks: not sae-train's model: $(cat "$tmp/out" "$tmp/err")"
    cmp -s "$tmp/$name.mpi/cfg.json" "$tmp/$name.one/cfg.json" || fail "$name: cfg.json differs"
done
grep -q '"architecture": "topk_skip_transcoder"' "$tmp/skip.mpi/cfg.json" ||
    fail "skip transcoder: cfg.json: $(cat "$tmp/skip.mpi/cfg.json")"
grep -q '"architecture": "gated"' "$tmp/gated.mpi/cfg.json" || fail "gated: cfg.json"
grep -a -q '"libsae_matryoshka_widths":"8,20,40"' "$tmp/matryoshka.mpi/sae_weights.safetensors" ||
    fail "matryoshka: no widths in the weights' metadata"
grep -a -q '"libsae_matryoshka_widths":"8,25,40"' \
    "$tmp/matryoshka_shards.mpi/sae_weights.safetensors" ||
    fail "matryoshka on 2 shards: no widths in the weights' metadata"
echo "ok: a skip transcoder on 3 shards, a Gated SAE on 2, a Matryoshka SAE on 2 data-parallel ranks and on 2 shards train sae-train's models"

# --- an error every rank meets (a step's): said once, by rank 0 ---------------
# shellcheck disable=SC2086
run $MPIRUN -np 2 "$bin/sae-train-mpi" --lr 1e300 --steps 2 --parallel features
[ "$rc" -ne 0 ] || fail "--lr 1e300: exit 0"
[ "$(grep -c "sae-train-mpi: rank 0: step 1: non-finite" "$tmp/err")" -eq 1 ] &&
    [ "$(grep -c "non-finite" "$tmp/err")" -eq 1 ] || fail "--lr 1e300: $(cat "$tmp/err")"
echo "ok: a step's error is said once"

# --- --precision and --gemm (the shared options): named in the header line,
# recorded by the collective checkpoint; bf16 on 2 data-parallel ranks trains
# sae-train's bf16 model ---------------------------------------------------------
bf16="$tmp/acts.f32 --d-in 16 --d-sae 40 --batch 50 --steps 10 --precision bf16 --gemm cblas"
# shellcheck disable=SC2086
run "$train" $bf16 --save "$tmp/bf16.one"
[ "$rc" -eq 0 ] || fail "sae-train bf16: exit $rc: $(cat "$tmp/err")"
# shellcheck disable=SC2086
run $MPIRUN -np 2 "$bin/sae-train-mpi" $bf16 --parallel data --save "$tmp/bf16.mpi"
[ "$rc" -eq 0 ] || fail "bf16 on 2 ranks: exit $rc: $(cat "$tmp/err")"
grep -q "^training on .*; 2 ranks, data-parallel; bf16, GEMMs on CBLAS (--gemm cblas)" "$tmp/err" ||
    fail "bf16 on 2 ranks: header: $(grep '^training on' "$tmp/err")"
grep -a -q '"option.31":"0x1.0000000000000p+0"' "$tmp/bf16.mpi/optimizer.safetensors" ||
    fail "bf16 on 2 ranks: SAE_OPT_PRECISION not saved as bf16"
run "$bin/check_same_model" "$tmp/bf16.mpi" "$tmp/bf16.one"
[ "$rc" -eq 0 ] || fail "bf16 on 2 ranks: not sae-train's model: $(cat "$tmp/out" "$tmp/err")"
echo "ok: --precision bf16 --gemm cblas on 2 data-parallel ranks"

# --- a bad option: exit status 2, the message once (rank 0's) -----------------
# shellcheck disable=SC2086
run $MPIRUN -np 2 "$bin/sae-train-mpi" --parallel rows
[ "$rc" -ne 0 ] || fail "--parallel rows: exit 0"
[ "$(grep -c "sae-train-mpi: --parallel 'rows': data, features or grid" "$tmp/err")" -eq 1 ] ||
    fail "--parallel rows: $(cat "$tmp/err")"
echo "ok: a bad option stops every rank"

# --- a rank killed mid-run: the job ends with an error, no hang ---------------
killed_rank_ends_job 2 --d-sae 64 --batch 256 --steps 100000000 --log-every 10 --parallel features
finish
