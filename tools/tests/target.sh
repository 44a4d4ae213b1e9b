#!/bin/sh
# sae-train's transcoders (--target, --synth-target, --skip), Gated and Matryoshka SAEs:
# synthetic pairs are learned (the decoder finds the output directions, W_skip
# the skip map), a target file is read row for row and checked, and every
# contradiction is one line with exit status 2.
# Usage: target.sh BINDIR
. "$(dirname "$0")/lib.sh"
train=$1/sae-train
small="--d-in 32 --synth-features 32 --synth-active 2 --synth-tokens 16384 --d-sae 96 --lr 3e-3
       --steps 1000 --batch 128"

# report_value PATTERN: the number after PATTERN on the report's lines
report_value() {
    sed -n "s/^$1\([0-9.]*\).*/\1/p" "$tmp/out"
}

# A skip transcoder on synthetic pairs: y = the code in 24 other dims + A x.
# shellcheck disable=SC2086
run "$train" $small --synth-target --skip --d-out 24 --arch topk --k 2
[ "$rc" -eq 0 ] || fail "skip transcoder: exit $rc: $(cat "$tmp/err")"
cat "$tmp/out"
grep -q "^training on synthetic data: 16384 x 32 (synthetic) -> synthetic targets: 16384 x 24 (synthetic); d_sae 96, topk skip transcoder k 2" "$tmp/err" ||
    fail "no training line for the skip transcoder: $(head -1 "$tmp/err")"
grep -q "^eval on held-out synthetic (8192 pairs): l2 " "$tmp/out" || fail "no eval line on the pairs"
mmcs=$(report_value "ground truth: mmcs ")
skip=$(report_value "ground truth: ||W_skip - A|| \/ ||A|| = ")
awk -v m="${mmcs:-0}" 'BEGIN { exit !(m > 0.9) }' || fail "decoder MMCS '$mmcs' is not above 0.9"
awk -v s="${skip:-9}" 'BEGIN { exit !(s < 0.3) }' || fail "||W_skip - A|| / ||A|| '$skip' is not below 0.3"

# A Gated SAE on the synthetic set.
# shellcheck disable=SC2086
run "$train" $small --arch gated --lambda 1
[ "$rc" -eq 0 ] || fail "gated: exit $rc: $(cat "$tmp/err")"
cat "$tmp/out"
mmcs=$(report_value "ground truth: mmcs ")
awk -v m="${mmcs:-0}" 'BEGIN { exit !(m > 0.9) }' || fail "gated MMCS '$mmcs' is not above 0.9"

# A Matryoshka SAE on the synthetic set: each level's l2 reported, decreasing.
# shellcheck disable=SC2086
run "$train" $small --arch matryoshka --k 2 --widths 16,48
[ "$rc" -eq 0 ] || fail "matryoshka: exit $rc: $(cat "$tmp/err")"
cat "$tmp/out"
grep -q "d_sae 96, matryoshka k 2, widths 16,48,96" "$tmp/err" ||
    fail "no training line for matryoshka: $(head -1 "$tmp/err")"
mmcs=$(report_value "ground truth: mmcs ")
awk -v m="${mmcs:-0}" 'BEGIN { exit !(m > 0.9) }' || fail "matryoshka MMCS '$mmcs' is not above 0.9"
levels=$(sed -n 's/^eval levels (features: l2 fvu):  16: \([0-9.]*\) [0-9.]*  48: \([0-9.]*\) [0-9.]*  96: \([0-9.]*\) .*/\1 \2 \3/p' "$tmp/out")
echo "$levels" | awk '{ exit !(NF == 3 && $1 > $2 && $2 > $3) }' ||
    fail "matryoshka levels: '$(grep "^eval levels" "$tmp/out")'"
# its checkpoint resumes with its widths; other widths are refused
run "$train" --arch matryoshka --k 2 --widths 128 --steps 6 --save "$tmp/ck5" --stop-at 3
[ "$rc" -eq 0 ] || fail "matryoshka --save: exit $rc: $(cat "$tmp/err")"
run "$train" --resume "$tmp/ck5"
[ "$rc" -eq 0 ] || fail "matryoshka --resume: exit $rc: $(cat "$tmp/err")"
grep -q "^eval levels (features: l2 fvu):  128: [0-9.]* [0-9.]*  512: " "$tmp/out" ||
    fail "resumed matryoshka: $(cat "$tmp/out")"
expect_usage_error "--widths: the checkpoint in '$tmp/ck5' has widths 128,512" \
    "$train" --resume "$tmp/ck5" --widths 64
expect_usage_error "--arch matryoshka: give the level widths (--widths W1,W2,..., e.g. --widths 128,512)" \
    "$train" --arch matryoshka
expect_usage_error "--widths: the widths must increase (32 after 64)" \
    "$train" --arch matryoshka --widths 64,32
expect_usage_error "--widths: 600 is more than --d-sae 512 features" \
    "$train" --arch matryoshka --widths 600
expect_usage_error "--widths: applies to --arch matryoshka, not to topk" "$train" --arch topk --widths 8
expect_usage_error "--arch matryoshka: transcoders are relu, topk, batchtopk or jumprelu" \
    "$train" --synth-target --arch matryoshka --widths 8

# Files: x (256 x 8, raw), y (256 x 4, raw with --d-out, and as .npy).
raw_f32 "$tmp/x.f32" 256 8
raw_f32 "$tmp/y.f32" 256 4
raw_f32 "$tmp/y255.f32" 255 4
npy "$tmp/y.npy" "{'descr': '<f4', 'fortran_order': False, 'shape': (256, 4), }" 4096
npy "$tmp/y3.npy" "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }" 48
run "$train" "$tmp/x.f32" --d-in 8 --target "$tmp/y.f32" --d-out 4 --d-sae 16 --steps 20 --batch 64
[ "$rc" -eq 0 ] || fail "raw target: exit $rc: $(cat "$tmp/err")"
grep -q "^eval on the first 256 training rows: l2 " "$tmp/out" || fail "raw target: no eval line"
grep -q " -> $tmp/y.f32: 256 x 4 (raw float32); d_sae 16, relu transcoder, lambda 0.3" "$tmp/err" ||
    fail "raw target: no training line: $(head -1 "$tmp/err")"
run "$train" "$tmp/x.f32" --d-in 8 --target "$tmp/y.npy" --d-sae 16 --steps 20 --batch 64 \
    --eval "$tmp/x.f32" --eval-target "$tmp/y.npy" --skip --info
[ "$rc" -eq 0 ] || fail "--info with targets: exit $rc: $(cat "$tmp/err")"
grep -q "^$tmp/y.npy: npy v1.0, 256 x 4 float32 (targets)" "$tmp/out" || fail "--info: $(cat "$tmp/out")"
# a NaN in the targets is reported as the target's row (row 3 of 4 columns)
{ head -c 48 "$tmp/y.f32"; printf '\000\000\300\177'; tail -c +53 "$tmp/y.f32"; } >"$tmp/ynan.f32"
run "$train" "$tmp/x.f32" --d-in 8 --target "$tmp/ynan.f32" --d-out 4 --d-sae 16 --steps 8 --batch 64
[ "$rc" -eq 2 ] || fail "NaN in the targets: exit $rc, want 2"
grep -q "^sae-train: $tmp/ynan.f32: row 3 holds NaN or Inf$" "$tmp/err" ||
    fail "NaN in the targets: $(cat "$tmp/err")"

expect_usage_error "$tmp/y255.f32: 255 rows, but $tmp/x.f32 has 256 (a target per row)" \
    "$train" "$tmp/x.f32" --d-in 8 --target "$tmp/y255.f32" --d-out 4
expect_usage_error "$tmp/y3.npy: 3 rows, but $tmp/x.f32 has 256" \
    "$train" "$tmp/x.f32" --d-in 8 --target "$tmp/y.npy" --eval "$tmp/x.f32" --eval-target "$tmp/y3.npy"
expect_usage_error "$tmp/y.f32: not a .npy file (no \\x93NUMPY magic); for raw float32 give --d-out" \
    "$train" "$tmp/x.f32" --d-in 8 --target "$tmp/y.f32"
expect_usage_error "--target '$tmp/y.npy': give the input FILE too" "$train" --target "$tmp/y.npy"
expect_usage_error "--synth-target: synthetic pairs, not FILE '$tmp/x.f32'" \
    "$train" "$tmp/x.f32" --d-in 8 --synth-target
expect_usage_error "--synth-target: the targets come from --target" \
    "$train" "$tmp/x.f32" --d-in 8 --target "$tmp/y.npy" --synth-target
for opt in "--skip" "--d-out 4" "--eval-target $tmp/y.npy"; do
    # shellcheck disable=SC2086
    expect_usage_error "${opt%% *}: applies to transcoders" "$train" $opt
done
expect_usage_error "--eval '$tmp/x.f32': give its targets too (--eval-target FILE)" \
    "$train" --synth-target --eval "$tmp/x.f32" --d-in 8
expect_usage_error "--arch gated: transcoders are relu, topk, batchtopk or jumprelu" \
    "$train" --synth-target --arch gated
expect_usage_error "--normalize: applies to autoencoders" "$train" --synth-target --normalize
expect_usage_error "--b-dec-init: applies to autoencoders" "$train" --synth-target --b-dec-init mean
expect_usage_error "--resample-every: libsae" "$train" --arch gated --resample-every 100
expect_usage_error "--resample-every: libsae" "$train" --synth-target --resample-every 100
# Checkpoints: a transcoder run stopped and resumed ends as the uninterrupted
# run, bit for bit (the same evaluation line); the checkpoint records the
# target file, so --resume needs neither FILE nor --target; SAELens's cfg.json.
pairs="--d-in 16 --synth-features 16 --synth-active 2 --synth-tokens 2048 --d-sae 32 --steps 40
       --batch 64 --synth-target --skip --d-out 8 --arch topk --k 2"
# shellcheck disable=SC2086
run "$train" $pairs
[ "$rc" -eq 0 ] || fail "uninterrupted pairs: exit $rc: $(cat "$tmp/err")"
want=$(grep "^eval on" "$tmp/out")
# shellcheck disable=SC2086
run "$train" $pairs --save "$tmp/ck" --stop-at 20
[ "$rc" -eq 0 ] || fail "stopped pairs: exit $rc: $(cat "$tmp/err")"
grep -q '"architecture": "topk_skip_transcoder"' "$tmp/ck/cfg.json" || fail "cfg.json: $(head -3 "$tmp/ck/cfg.json")"
grep -q '"d_out": 8' "$tmp/ck/cfg.json" || fail "cfg.json lacks d_out"
run "$train" --resume "$tmp/ck"
[ "$rc" -eq 0 ] || fail "resumed pairs: exit $rc: $(cat "$tmp/err")"
[ "$(grep "^eval on" "$tmp/out")" = "$want" ] || fail "resumed: '$(grep "^eval on" "$tmp/out")', want '$want'"
run "$train" "$tmp/x.f32" --d-in 8 --target "$tmp/y.f32" --d-out 4 --d-sae 16 --steps 12 --batch 64
want=$(grep "^eval on" "$tmp/out")
run "$train" "$tmp/x.f32" --d-in 8 --target "$tmp/y.f32" --d-out 4 --d-sae 16 --steps 12 --batch 64 \
    --save "$tmp/ck2" --stop-at 5
[ "$rc" -eq 0 ] || fail "stopped file run: exit $rc: $(cat "$tmp/err")"
grep -q "^target $tmp/y.f32$" "$tmp/ck2/train_state.txt" || fail "train_state.txt lacks the target"
run "$train" --resume "$tmp/ck2"
[ "$rc" -eq 0 ] || fail "resumed file run: exit $rc: $(cat "$tmp/err")"
[ "$(grep "^eval on" "$tmp/out")" = "$want" ] || fail "resumed file run: '$(grep "^eval on" "$tmp/out")', want '$want'"
expect_usage_error "--skip: the checkpoint in '$tmp/ck2' has a transcoder without a skip map" \
    "$train" --resume "$tmp/ck2" --skip
run "$train" --arch gated --lambda 1 --steps 5 --save "$tmp/ck4"
[ "$rc" -eq 0 ] || fail "gated --save: exit $rc: $(cat "$tmp/err")"
grep -q '"architecture": "gated"' "$tmp/ck4/cfg.json" || fail "gated cfg.json: $(head -3 "$tmp/ck4/cfg.json")"
expect_usage_error "--synth-target: the checkpoint in '$tmp/ck4' is an autoencoder" \
    "$train" --resume "$tmp/ck4" --synth-target

run "$train" --help
for word in --target --eval-target --skip --d-out --synth-target gated matryoshka --widths; do
    grep -qF -- "$word" "$tmp/out" || fail "--help does not mention $word"
done
finish
