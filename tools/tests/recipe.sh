#!/bin/sh
# The training recipe through sae-train, each option reaching the library:
# the architectures (TopK's L0 is k in every row), the schedules (the lr_t
# and lambda_t columns against the header's formulas at every step),
# --normalize (the exported model on raw x against the trained one on s x,
# checked by check_recipe), --b-dec-init (the mean and median of the data),
# --hist (bins that sum to d_sae minus the dead, as counted independently),
# --resample-every (resamples logged on data whose features die), and a
# resumed run with all of them on, byte for byte the uninterrupted one.
# Usage: recipe.sh BINDIR
. "$(dirname "$0")/lib.sh"
train=$1/sae-train
check=$1/check_recipe
small="--d-in 16 --synth-features 24 --synth-tokens 2048 --d-sae 32 --batch 32"

# --- architectures -------------------------------------------------------------
# TopK keeps the k largest of the positive pre-activations: exactly k for every
# token with at least k. An all-zero token has none at the start (b_enc and b_dec
# are 0), so these tokens have 12 of 24 features active on average (a zero one
# has probability 2^-24).
for arch in topk batchtopk; do
    # shellcheck disable=SC2086
    run "$train" $small --synth-active 12 --arch $arch --k 3 --steps 60 --log-every 10 --log "$tmp/$arch.csv"
    [ "$rc" -eq 0 ] || fail "$arch: exit $rc: $(cat "$tmp/err")"
    grep -q "d_sae 32, $arch k 3, lr" "$tmp/err" || fail "$arch: $(head -n 1 "$tmp/err")"
    # training keeps k per token (BatchTopK: n * k per batch of n), and no lambda
    l0=$(csv_column l0 "$tmp/$arch.csv" | cut -d, -f2 | sort -u | tr '\n' ' ')
    [ "$l0" = "3 " ] || fail "$arch --k 3: l0 in the log '$l0', want '3 '"
    lambda=$(csv_column lambda_t "$tmp/$arch.csv" | cut -d, -f2 | sort -u | tr '\n' ' ')
    [ "$lambda" = "0 " ] || fail "$arch: lambda_t '$lambda', want '0 '"
    grep -q "^step 60/60 .*  l0 3.0  dead " "$tmp/err" || fail "$arch: progress line $(grep '^step 60' "$tmp/err")"
done
# shellcheck disable=SC2086
run "$train" $small --arch topk --k 3 --steps 20
grep -q "^eval on .*: l2 [0-9.]*  l1 [0-9.]*  l0 3.00 (9.38% of 32)" "$tmp/out" || fail "topk eval: $(cat "$tmp/out")"
# shellcheck disable=SC2086
run "$train" $small --arch jumprelu --lambda 0.5 --threshold 0.02 --bandwidth 0.01 --steps 30 \
    --log-every 10 --log "$tmp/jumprelu.csv"
[ "$rc" -eq 0 ] || fail "jumprelu: exit $rc: $(cat "$tmp/err")"
grep -q "d_sae 32, jumprelu, lambda 0.5, lr" "$tmp/err" || fail "jumprelu: $(head -n 1 "$tmp/err")"
[ "$(csv_column lambda_t "$tmp/jumprelu.csv" | cut -d, -f2 | sort -u)" = 0.5 ] || fail "jumprelu: lambda_t"

# --- schedules: lr_t and lambda_t at every step --------------------------------
# linear: warm-up W = 10 steps (lr t/W), decay over the last D = 0.2 * 100 = 20
# steps (lr (T - t)/D after step 80); lambda rises over L = 0.1 * 100 = 10 steps.
# shellcheck disable=SC2086
run "$train" $small --steps 100 --lr 1e-3 --lambda 0.4 --lr-schedule linear --lr-warmup 10 \
    --lr-decay 0.2 --l1-warmup 0.1 --log-every 1 --log "$tmp/linear.csv"
[ "$rc" -eq 0 ] || fail "linear: exit $rc: $(cat "$tmp/err")"
grep -q "^recipe: lr linear, warm-up 10 steps, decay over the last 20%; lambda warm-up over 10% of the steps$" "$tmp/err" ||
    fail "linear: $(grep recipe "$tmp/err")"
awk -F, 'NR == 1 { next }
    function near(a, b) { d = a - b; if (d < 0) d = -d; return d <= 1e-5 * (b < 0 ? -b : b) + 1e-12 }
    {
        t = $1; w = t < 10 ? t / 10 : 1; d = t > 80 ? (100 - t) / 20 : 1
        lr = 1e-3 * (w < d ? w : d); lambda = 0.4 * (t < 10 ? t / 10 : 1)
        if (!near($11, lr)) { print "step " t ": lr_t " $11 ", want " lr; bad = 1 }
        if (!near($12, lambda)) { print "step " t ": lambda_t " $12 ", want " lambda; bad = 1 }
        n++
    }
    END { if (n != 100) { print n " rows"; bad = 1 }; exit bad }' "$tmp/linear.csv" || fail "linear schedule"
# a few by hand: step 1 (lr/10, lambda/10), 5, 10, 80, 90, 100 (lr 0)
got=$(awk -F, '$1 ~ /^(1|5|10|80|90|100)$/ { printf "%s:%s:%s ", $1, $11, $12 }' "$tmp/linear.csv")
[ "$got" = "1:0.0001:0.04 5:0.0005:0.2 10:0.001:0.4 80:0.001:0.4 90:0.0005:0.4 100:0:0.4 " ] ||
    fail "linear: step:lr_t:lambda_t '$got'"
# cosine: warm-up 8 steps, then (1 + cos(pi (t - 8) / 32)) / 2 down to 0 at step 40
# shellcheck disable=SC2086
run "$train" $small --steps 40 --lr 2e-3 --lr-schedule cosine --lr-warmup 8 --log-every 1 --log "$tmp/cosine.csv"
[ "$rc" -eq 0 ] || fail "cosine: exit $rc: $(cat "$tmp/err")"
awk -F, 'NR == 1 { next }
    {
        t = $1; pi = atan2(0, -1)
        m = t < 8 ? t / 8 : (1 + cos(pi * (t - 8) / 32)) / 2
        d = $11 - 2e-3 * m; if (d < 0) d = -d
        if (d > 1e-5 * 2e-3 * m + 1e-12) { print "step " t ": lr_t " $11 ", want " 2e-3 * m; bad = 1 }
        if ($12 != 0.3) { print "step " t ": lambda_t " $12; bad = 1 }
    }
    END { exit bad }' "$tmp/cosine.csv" || fail "cosine schedule"
[ "$(tail -n 1 "$tmp/cosine.csv" | cut -d, -f1,11)" = "40,0" ] || fail "cosine: lr at the last step $(tail -n 1 "$tmp/cosine.csv")"

# --- --normalize, --hist: checked against check_recipe's own computations -----
raw_f32 "$tmp/acts.f32" 400 8
file="$tmp/acts.f32 --d-in 8 --d-sae 16 --batch 32 --lr 3e-3 --sample 400"
# shellcheck disable=SC2086
run "$train" $file --steps 60 --normalize --save "$tmp/norm" --hist "$tmp/h.csv" --hist-every 20
[ "$rc" -eq 0 ] || fail "--normalize: exit $rc: $(cat "$tmp/err")"
grep -q "^recipe: input scale [0-9.]* (--normalize); sample 400 tokens$" "$tmp/err" || fail "--normalize: $(cat "$tmp/err")"
[ -s "$tmp/norm/train_weights.safetensors" ] || fail "--normalize: no train_weights.safetensors"
grep -q "^scale [0-9.]*$" "$tmp/norm/train_state.txt" || fail "--normalize: no scale in train_state.txt"
run "$check" "$tmp/norm" "$tmp/acts.f32" 8 --hist "$tmp/h.csv"
[ "$rc" -eq 0 ] || fail "check_recipe --normalize: $(cat "$tmp/out" "$tmp/err")"
cat "$tmp/out"
# the program's own evaluation (the first training rows: all 400) is the exported model's
want=$(sed -n 's/^fvu //p' "$tmp/out")
run "$train" --resume "$tmp/norm"
got=$(sed -n 's/^eval on the first 400 training rows: .* fvu \([0-9.]*\)$/\1/p' "$tmp/out")
[ -n "$want" ] && [ "$got" = "$want" ] || fail "--normalize: the report's fvu '$got', the exported model's '$want'"
# the histograms: one per --hist-every steps and at the end, d_sae in all
steps=$(cut -d, -f1 "$tmp/h.csv" | uniq | tr '\n' ' ')
[ "$steps" = "step 20 40 60 " ] || fail "--hist: histograms at '$steps'"
awk -F, 'NR > 1 { s[$1] += $6; dead[$1] = $3; if (!($1 in first)) first[$1] = $4; last[$1] = $5 }
    END { for (k in s) { if (s[k] + dead[k] != 16) { print "step " k ": " s[k] " binned + " dead[k] " dead"; bad = 1 }
                         if (first[k] != -3 || last[k] != 0) { print "step " k ": bins " first[k] " to " last[k]; bad = 1 } }
          exit bad }' "$tmp/h.csv" || fail "--hist: bins and dead do not sum to d_sae"
if command -v gnuplot >/dev/null 2>&1; then
    [ "$(head -c 4 "$tmp/h.png" 2>/dev/null | od -An -c | tr -d ' ')" = '211PNG' ] || fail "--hist: h.png is not a PNG"
fi

# --- --b-dec-init: the mean (of s x) and the geometric median of the data ------
# One step at a tiny lr moves b_dec by about 1e-9.
# shellcheck disable=SC2086
run "$train" $file --steps 1 --lr 1e-9 --normalize --b-dec-init mean --save "$tmp/mean"
[ "$rc" -eq 0 ] || fail "--b-dec-init mean: exit $rc: $(cat "$tmp/err")"
run "$check" "$tmp/mean" "$tmp/acts.f32" 8 --b-dec mean
[ "$rc" -eq 0 ] || fail "check_recipe --b-dec mean: $(cat "$tmp/out" "$tmp/err")"
# shellcheck disable=SC2086
run "$train" $file --steps 1 --lr 1e-9 --b-dec-init median --save "$tmp/median"
[ "$rc" -eq 0 ] || fail "--b-dec-init median: exit $rc: $(cat "$tmp/err")"
run "$check" "$tmp/median" "$tmp/acts.f32" 8 --b-dec median
[ "$rc" -eq 0 ] || fail "check_recipe --b-dec median: $(cat "$tmp/out" "$tmp/err")"

# --- --resample-every on data whose features die -------------------------------
dying="--d-in 16 --synth-features 8 --synth-active 1 --synth-tokens 4096 --d-sae 64 --batch 64
       --lr 3e-3 --dead-window 640"
# shellcheck disable=SC2086
run "$train" $dying --lambda 1 --steps 200 --resample-every 25 --log-every 25 --log "$tmp/rs.csv"
[ "$rc" -eq 0 ] || fail "--resample-every: exit $rc: $(cat "$tmp/err")"
total=$(awk -F, 'NR > 1 { s += $14; if ($14 > 0 && $1 % 25 != 0) print "resampled at step " $1 > "/dev/stderr" } END { print s + 0 }' "$tmp/rs.csv")
[ "$total" -gt 0 ] || fail "--resample-every: nothing resampled: $(cat "$tmp/rs.csv")"
grep -q "^resampled: $total dead features in [1-9][0-9]* of the resamplings (every 25 steps)$" "$tmp/out" ||
    fail "--resample-every: report $(grep resampled "$tmp/out") for $total in the log"
notes=$(sed -n 's/^step \([0-9]*\): resampled \([0-9]*\) dead features$/\1,\2/p' "$tmp/err" | tr '\n' ' ')
rows=$(awk -F, 'NR > 1 && $14 > 0 { printf "%s,%s ", $1, $14 }' "$tmp/rs.csv")
[ "$notes" = "$rows" ] || fail "--resample-every: notes '$notes', log '$rows'"

# --- resuming a run with all of it: byte for byte the uninterrupted run --------
# (lambda 10: with --normalize the data is about 7 times larger, and the
# features must still die for the resampling to be exercised across the resume)
rec="--normalize --b-dec-init median --lr-schedule linear --lr-warmup 10 --lr-decay 0.2
     --l1-warmup 0.1 --lambda 10 --resample-every 20 --sample 500 --hist-every 40 --log-every 10"
# shellcheck disable=SC2086
run "$train" $dying $rec --steps 120 --save "$tmp/full" --log "$tmp/full.csv" --hist "$tmp/full-h.csv"
[ "$rc" -eq 0 ] || fail "recipe, 120 steps: exit $rc: $(cat "$tmp/err")"
[ "$(awk -F, 'NR > 1 { s += $14 } END { print s + 0 }' "$tmp/full.csv")" -gt 0 ] || fail "recipe: nothing resampled"
# shellcheck disable=SC2086
run "$train" $dying $rec --steps 120 --stop-at 40 --save "$tmp/half" --log "$tmp/half.csv" --hist "$tmp/half-h.csv"
[ "$rc" -eq 0 ] || fail "--stop-at 50: exit $rc: $(cat "$tmp/err")"
grep -qx "stopped at step 40 of 120 (--stop-at)" "$tmp/out" || fail "--stop-at: $(cat "$tmp/out")"
grep -qx "step 40" "$tmp/half/train_state.txt" || fail "--stop-at: the checkpoint is not at step 40"
run "$train" --resume "$tmp/half" --log "$tmp/half.csv" --hist "$tmp/half-h.csv"
[ "$rc" -eq 0 ] || fail "resume: exit $rc: $(cat "$tmp/err")"
grep -q "^recipe: lr linear, warm-up 10 steps, decay over the last 20%; lambda warm-up over 10% of the steps; input scale [0-9.]* (--normalize); b_dec = geometric median of the sample; resampling every 20 steps (dead for 640 tokens); sample 500 tokens$" "$tmp/err" ||
    fail "resume: the recipe is not the checkpoint's: $(grep recipe "$tmp/err")"
for f in sae_weights.safetensors train_weights.safetensors optimizer.safetensors cfg.json; do
    cmp -s "$tmp/full/$f" "$tmp/half/$f" || fail "resumed --normalize run: $f differs"
done
grep -v '^seconds' "$tmp/full/train_state.txt" >"$tmp/full.state"
grep -v '^seconds' "$tmp/half/train_state.txt" >"$tmp/half.state"
cmp -s "$tmp/full.state" "$tmp/half.state" || fail "train_state.txt differs: $(diff "$tmp/full.state" "$tmp/half.state")"
# the logs but for seconds and the checkpoint mark at step 40; the histograms
# (the periodic one at step 40 is the stopped run's last)
cut -d, -f1,2,4-9,11- "$tmp/full.csv" >"$tmp/full.cols"
cut -d, -f1,2,4-9,11- "$tmp/half.csv" >"$tmp/half.cols"
cmp -s "$tmp/full.cols" "$tmp/half.cols" || fail "the resumed log differs: $(diff "$tmp/full.cols" "$tmp/half.cols")"
cmp -s "$tmp/full-h.csv" "$tmp/half-h.csv" || fail "the resumed histograms differ: $(diff "$tmp/full-h.csv" "$tmp/half-h.csv")"

# --- what is fixed at the start of a run cannot change on resuming -------------
expect_usage_error "--arch: the checkpoint in '$tmp/half' has relu" "$train" --resume "$tmp/half" --arch topk
expect_usage_error "--k: applies to --arch topk, batchtopk or matryoshka, not to relu" "$train" --resume "$tmp/half" --k 3
expect_usage_error "--b-dec-init: the checkpoint in '$tmp/half' has median" "$train" --resume "$tmp/half" --b-dec-init mean
expect_usage_error "--normalize: the checkpoint in '$tmp/median' has none (it trained on raw x)" \
    "$train" --resume "$tmp/median" --normalize
expect_usage_error "--lr-warmup 500 and --lr-decay 0.2 (24 steps): more than the 120 steps" \
    "$train" --resume "$tmp/half" --lr-warmup 500

# --- checkpoints of the other architectures: saved and resumed as they are ---
for arch in topk batchtopk; do
    # shellcheck disable=SC2086
    run "$train" $small --arch $arch --k 3 --steps 20 --save "$tmp/$arch"
    [ "$rc" -eq 0 ] || fail "$arch --save: exit $rc: $(cat "$tmp/err")"
    run "$train" --resume "$tmp/$arch" --steps 30
    [ "$rc" -eq 0 ] || fail "$arch resume: exit $rc: $(cat "$tmp/err")"
    grep -q "d_sae 32, $arch k 3, lr" "$tmp/err" || fail "$arch resume: $(cat "$tmp/err")"
done
finish
