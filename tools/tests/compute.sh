#!/bin/sh
# --precision fp32|bf16 and --gemm auto|cblas|onednn in sae-train and
# sae-sweep: each reaches the optimizer (its saved options, option.31
# SAE_OPT_PRECISION and option.30 SAE_OPT_GEMM, and the run's numbers: bf16
# trains another model than fp32), the run's header line names them, a
# resumed run keeps the checkpoint's unless given (then the new value is what
# the next checkpoint records), and a bad value or one libsae cannot honour is
# one line and exit status 2.
# Usage: compute.sh BINDIR
. "$(dirname "$0")/lib.sh"
train=$1/sae-train
sweep=$1/sae-sweep
small="--d-in 16 --synth-features 24 --synth-tokens 1000 --d-sae 32 --batch 64 --steps 20"

# saved_option DIR N: the value of option N in DIR/optimizer.safetensors's
# metadata (a hexadecimal float, as the library writes it: 0x0.0p+0 for 0,
# 0x1.0000000000000p+0 for 1, ...)
saved_option() {
    head -c 4096 "$1/optimizer.safetensors" | tr -d '\000' |
        grep -ao "\"option\.$2\":\"[^\"]*\"" | sed 's/.*:"\(.*\)"/\1/'
}

# expect_option DIR N VALUE WHAT
expect_option() {
    got=$(saved_option "$1" "$2")
    [ "$got" = "$3" ] || fail "$4: option.$2 in $1/optimizer.safetensors is '$got', want '$3'"
}

# header: the "training on ..." line of the last run
header() { grep "^training on " "$tmp/err"; }

# This build's backend for --gemm auto, as sae-train --help states it.
run "$train" --help
if grep -q "this libsae: auto is oneDNN" "$tmp/out"; then auto_backend=oneDNN; else auto_backend=CBLAS; fi
grep -q -- "--precision P" "$tmp/out" && grep -q -- "--gemm B" "$tmp/out" ||
    fail "--help lacks --precision or --gemm"

# --- fp32 (the default) and bf16: recorded, announced, different numbers ------
# shellcheck disable=SC2086
run "$train" $small --save "$tmp/fp32"
[ "$rc" -eq 0 ] || fail "fp32 run: exit $rc: $(cat "$tmp/err")"
header | grep -q "; fp32, GEMMs on $auto_backend (--gemm auto), BLAS core [^ ]" ||
    fail "fp32 header: $(header)"
expect_option "$tmp/fp32" 31 0x0.0p+0 "default precision"
expect_option "$tmp/fp32" 30 0x0.0p+0 "default gemm"
# shellcheck disable=SC2086
run "$train" $small --precision bf16 --save "$tmp/bf16"
[ "$rc" -eq 0 ] || fail "bf16 run: exit $rc: $(cat "$tmp/err")"
header | grep -q "; bf16, GEMMs on $auto_backend (--gemm auto)" || fail "bf16 header: $(header)"
expect_option "$tmp/bf16" 31 0x1.0000000000000p+0 "--precision bf16"
# the encoder's inputs rounded to bf16: other steps, another model
cmp -s "$tmp/fp32/sae_weights.safetensors" "$tmp/bf16/sae_weights.safetensors" &&
    fail "--precision bf16 trained the same model as fp32"

# --- resume: kept unless given; given, it changes and is recorded ------------
cp -r "$tmp/bf16" "$tmp/bf16b"
cp "$tmp/bf16/sae_weights.safetensors" "$tmp/bf16_20.safetensors"
run "$train" --resume "$tmp/bf16" --steps 30
[ "$rc" -eq 0 ] || fail "resume bf16: exit $rc: $(cat "$tmp/err")"
header | grep -q "; bf16, " || fail "resumed without --precision: $(header)"
expect_option "$tmp/bf16" 31 0x1.0000000000000p+0 "resumed without --precision"
run "$train" --resume "$tmp/bf16b" --steps 30 --precision fp32 --gemm cblas
[ "$rc" -eq 0 ] || fail "resume bf16 as fp32: exit $rc: $(cat "$tmp/err")"
header | grep -q "; fp32, GEMMs on CBLAS (--gemm cblas)" || fail "resumed with --precision fp32: $(header)"
expect_option "$tmp/bf16b" 31 0x0.0p+0 "resumed with --precision fp32"
expect_option "$tmp/bf16b" 30 0x1.0000000000000p+0 "resumed with --gemm cblas"
cmp -s "$tmp/bf16/sae_weights.safetensors" "$tmp/bf16b/sae_weights.safetensors" &&
    fail "steps 21-30 in fp32 gave bf16's model"

# --- --gemm: each value recorded; onednn refused where libsae lacks it -------
# shellcheck disable=SC2086
run "$train" $small --gemm cblas --save "$tmp/cblas"
[ "$rc" -eq 0 ] || fail "--gemm cblas: exit $rc: $(cat "$tmp/err")"
header | grep -q "; fp32, GEMMs on CBLAS (--gemm cblas), BLAS core" || fail "cblas header: $(header)"
expect_option "$tmp/cblas" 30 0x1.0000000000000p+0 "--gemm cblas"
if [ "$auto_backend" = oneDNN ]; then
    # shellcheck disable=SC2086
    run "$train" $small --gemm onednn --precision bf16 --save "$tmp/onednn"
    [ "$rc" -eq 0 ] || fail "--gemm onednn: exit $rc: $(cat "$tmp/err")"
    header | grep -q "; bf16, GEMMs on oneDNN (--gemm onednn)" || fail "onednn header: $(header)"
    expect_option "$tmp/onednn" 30 0x1.0000000000000p+1 "--gemm onednn"
    # auto is oneDNN here: the same products, the same model bit for bit
    cmp -s "$tmp/bf16_20.safetensors" "$tmp/onednn/sae_weights.safetensors" ||
        fail "--gemm onednn and auto (oneDNN) trained different models"
else
    # shellcheck disable=SC2086
    expect_usage_error "--gemm onednn: libsae" "$train" $small --gemm onednn
fi

# --- bad values and combinations: one line, exit 2 ---------------------------
expect_usage_error "--precision: expected fp32 or bf16, got 'fp16'" "$train" --precision fp16
expect_usage_error "--gemm: expected auto, cblas or onednn, got 'mkl'" "$train" --gemm mkl
expect_usage_error "--precision bf16: libsae" "$train" --precision bf16 --arch matryoshka --widths 64
expect_usage_error "not matryoshka (they train in fp32)" "$train" --precision bf16 --arch matryoshka --widths 64
expect_usage_error "not transcoders" "$train" --precision bf16 --synth-target
# shellcheck disable=SC2086
run "$train" $small --arch matryoshka --k 4 --widths 8 --save "$tmp/matryoshka"
[ "$rc" -eq 0 ] || fail "matryoshka run: exit $rc: $(cat "$tmp/err")"
expect_usage_error "not matryoshka" "$train" --resume "$tmp/matryoshka" --precision bf16

# --- Gated steps in bf16 too (its gate and magnitude share the one product) ---
# shellcheck disable=SC2086
run "$train" $small --arch gated --save "$tmp/gated"
[ "$rc" -eq 0 ] || fail "gated run: exit $rc: $(cat "$tmp/err")"
# shellcheck disable=SC2086
run "$train" $small --arch gated --precision bf16 --save "$tmp/gated16"
[ "$rc" -eq 0 ] || fail "gated bf16 run: exit $rc: $(cat "$tmp/err")"
header | grep -q "; bf16, " || fail "gated bf16 header: $(header)"
expect_option "$tmp/gated16" 31 0x1.0000000000000p+0 "gated --precision bf16"
cmp -s "$tmp/gated/sae_weights.safetensors" "$tmp/gated16/sae_weights.safetensors" &&
    fail "--precision bf16 trained the same Gated model as fp32"

# --- sae-sweep: every run takes them; all its architectures must take bf16 ---
run "$sweep" --d-in 16 --synth-features 24 --synth-tokens 1000 --d-sae 32 --batch 64 --steps 20 \
    --lambdas 0.1 --arch relu,topk --ks 4 --precision bf16 --gemm cblas --out "$tmp/sweep" \
    --save-dir "$tmp/sweepck"
[ "$rc" -eq 0 ] || fail "sae-sweep bf16: exit $rc: $(cat "$tmp/err")"
grep -q "^sweep on .*; bf16, GEMMs on CBLAS (--gemm cblas)" "$tmp/err" ||
    fail "sweep header: $(grep '^sweep on' "$tmp/err")"
for d in lambda_0.1 topk_k_4; do
    expect_option "$tmp/sweepck/$d" 31 0x1.0000000000000p+0 "sae-sweep --precision bf16 ($d)"
    expect_option "$tmp/sweepck/$d" 30 0x1.0000000000000p+0 "sae-sweep --gemm cblas ($d)"
done
expect_usage_error "not matryoshka" "$sweep" --precision bf16 --arch relu,matryoshka --widths 64 --out "$tmp/no"
finish
