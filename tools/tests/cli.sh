#!/bin/sh
# sae-train's command line and input errors: each bad option, value or file
# gives exit status 2 and one line on stderr naming the problem.
# Usage: cli.sh BINDIR
. "$(dirname "$0")/lib.sh"
train=$1/sae-train
ok_dict="{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3), }"

run "$train" --help
[ "$rc" -eq 0 ] || fail "--help: exit $rc"
for word in --d-in --eval --d-sae --lambda --lr --batch --steps --tokens --seed --clip --log \
            --log-every --dead-window --tiles --save --resume --checkpoint-every "step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac,checkpoint" \
            "lambda_t,fvu,resampled" --arch --k --threshold --bandwidth --auxk-coeff --auxk-k --threshold-beta \
            --lr-schedule --lr-warmup --lr-decay --l1-warmup --sample --normalize --b-dec-init \
            --resample-every --resample-window --hist --hist-every --stop-at "step,sample,dead,log10_lo,log10_hi,count"; do
    grep -qF -- "$word" "$tmp/out" || fail "--help does not mention $word"
done

expect_usage_error "unknown option '--frobnicate'" "$train" --frobnicate
expect_usage_error "unknown option '-x'" "$train" -x
expect_usage_error "option '--lr' needs a value" "$train" --lr
expect_usage_error "--lr: expected a finite number, got 'fast'" "$train" --lr fast
expect_usage_error "--lr: must be > 0" "$train" --lr 0
expect_usage_error "--lambda: must be >= 0" "$train" --lambda -1
expect_usage_error "--steps: must be at least 1" "$train" --steps 0
expect_usage_error "--d-sae: expected a whole number, got '12x'" "$train" --d-sae 12x
expect_usage_error "--batch: expected a whole number, got '-5'" "$train" --batch -5
expect_usage_error "unexpected argument 'b.npy'" "$train" "$tmp/a.npy" b.npy
expect_usage_error "--tiles: d_in 60 is not a square" "$train" --d-in 60 --tiles "$tmp/t.png"
expect_usage_error "does not end in .png" "$train" --tiles "$tmp/t.jpg"
expect_usage_error "--tiles: cannot write in the directory of '$tmp/no/t.png'" "$train" --tiles "$tmp/no/t.png"

expect_usage_error "$tmp/missing.npy: No such file or directory" "$train" "$tmp/missing.npy"
npy "$tmp/trunc.npy" "$ok_dict" 40
expect_usage_error "truncated: shape (4, 3) needs 48 bytes of data, the file has 40" "$train" "$tmp/trunc.npy"
npy "$tmp/f8.npy" "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3), }" 96
expect_usage_error "dtype '<f8' is not supported" "$train" "$tmp/f8.npy"
npy "$tmp/fortran.npy" "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 3), }" 48
expect_usage_error "fortran_order is True" "$train" "$tmp/fortran.npy"
npy "$tmp/rank3.npy" "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 3), }" 48
expect_usage_error "shape (2, 2, 3) is not 2-D" "$train" "$tmp/rank3.npy"
head -c 44 /dev/zero >"$tmp/raw.f32"
expect_usage_error "not a .npy file" "$train" "$tmp/raw.f32"
expect_usage_error "size 44 bytes is not a multiple of d_in x 4 = 3 x 4 bytes" "$train" --d-in 3 "$tmp/raw.f32"
npy "$tmp/ok.npy" "$ok_dict" 48
expect_usage_error "$tmp/trunc.npy: truncated" "$train" "$tmp/ok.npy" --eval "$tmp/trunc.npy"
expect_usage_error "--log: cannot write '$tmp/no/such/dir/log.csv'" "$train" --log "$tmp/no/such/dir/log.csv"

# The recipe's options: each bad value, and each option no chosen architecture uses.
expect_usage_error "--arch: expected relu, topk, batchtopk, jumprelu, gated or matryoshka, got 'temporal'" "$train" --arch temporal
expect_usage_error "--arch: 'relu,relu' lists relu twice" "$train" --arch relu,relu
expect_usage_error "--arch: sae-train trains one architecture (sae-sweep compares several)" "$train" --arch relu,topk
expect_usage_error "--k: must be at least 1, got '0'" "$train" --arch topk --k 0
expect_usage_error "--k: applies to --arch topk, batchtopk or matryoshka, not to relu" "$train" --k 3
expect_usage_error "--k 40: more than --d-sae 32 features" "$train" --arch topk --k 40 --d-sae 32
expect_usage_error "--lambda: applies to --arch relu, jumprelu or gated (topk's sparsity is --k), not to topk" "$train" --arch topk --lambda 1
expect_usage_error "--threshold: must be > 0, got '0'" "$train" --arch jumprelu --threshold 0
expect_usage_error "--threshold: must be in [1e-30, 1e30], got '1e31'" "$train" --arch jumprelu --threshold 1e31
expect_usage_error "--threshold: applies to --arch jumprelu, not to batchtopk" "$train" --arch batchtopk --threshold 0.1
expect_usage_error "--bandwidth: must be > 0, got '0'" "$train" --arch jumprelu --bandwidth 0
expect_usage_error "--bandwidth: applies to --arch jumprelu, not to relu" "$train" --bandwidth 0.1
expect_usage_error "--auxk-coeff: must be >= 0, got '-1'" "$train" --arch topk --auxk-coeff -1
expect_usage_error "--auxk-k: must be at least 1, got '0'" "$train" --arch topk --auxk-k 0
expect_usage_error "--auxk-k: applies to --arch topk, batchtopk or matryoshka, not to jumprelu" "$train" --arch jumprelu --auxk-k 4
expect_usage_error "--threshold-beta: must be in [0, 1), got '1'" "$train" --arch batchtopk --threshold-beta 1
expect_usage_error "--threshold-beta: applies to --arch batchtopk or matryoshka, not to topk" "$train" --arch topk --threshold-beta 0.9
expect_usage_error "--lr-schedule: expected constant, linear or cosine, got 'exp'" "$train" --lr-schedule exp
expect_usage_error "--lr-decay: must be in [0, 1], got '1.5'" "$train" --lr-schedule linear --lr-decay 1.5
expect_usage_error "--lr-decay: applies to --lr-schedule linear, not constant" "$train" --lr-decay 0.2
expect_usage_error "--lr-warmup: expected a whole number, got '-3'" "$train" --lr-warmup -3
expect_usage_error "--lr-warmup 200: more than the 100 steps" "$train" --steps 100 --lr-warmup 200
expect_usage_error "--lr-warmup 50 and --lr-decay 0.6 (60 steps): more than the 100 steps" \
    "$train" --steps 100 --lr-schedule linear --lr-warmup 50 --lr-decay 0.6
expect_usage_error "--lr-warmup 100: leaves none of the 100 steps to the cosine" \
    "$train" --steps 100 --lr-schedule cosine --lr-warmup 100
expect_usage_error "--l1-warmup: must be >= 0, got '-0.1'" "$train" --l1-warmup -0.1
expect_usage_error "--l1-warmup: applies to --arch relu, jumprelu or gated, not to batchtopk" "$train" --arch batchtopk --l1-warmup 0.05
expect_usage_error "--sample: must be at least 1, got '0'" "$train" --sample 0
expect_usage_error "--b-dec-init: expected mean or median, got 'mode'" "$train" --b-dec-init mode
expect_usage_error "--resample-every: must be at least 1, got '0'" "$train" --resample-every 0
expect_usage_error "--resample-window: give --resample-every N too" "$train" --resample-window 1000
expect_usage_error "--hist-every: give --hist FILE to write them in" "$train" --hist-every 10
expect_usage_error "--hist '$tmp/no/h.csv': cannot write: No such file or directory" "$train" --steps 1 --hist "$tmp/no/h.csv"
expect_usage_error "--stop-at 100: not before the last step, 100" "$train" --steps 100 --stop-at 100

# NaN in the data: exit 2, naming the file and the row (rows 0..3, row 2 bad).
{ printf '\223NUMPY\001\000\166\000'; printf '%-117s\n' "$ok_dict"
  head -c 24 /dev/zero; printf '\000\000\300\177'; head -c 20 /dev/zero; } >"$tmp/nan.npy"
run "$train" "$tmp/nan.npy" --d-sae 8 --steps 5
[ "$rc" -eq 2 ] || fail "NaN in the data: exit $rc, want 2"
[ "$(tail -n 1 "$tmp/err")" = "sae-train: $tmp/nan.npy: row 2 holds NaN or Inf" ] ||
    fail "NaN in the data: $(tail -n 1 "$tmp/err")"
[ ! -s "$tmp/out" ] || fail "NaN in the data: a report on stdout: $(cat "$tmp/out")"

# Files numpy itself writes, in each version it writes (when numpy is there).
if /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
    /usr/bin/python3 - "$tmp" <<'PY'
import sys
import numpy as np
from numpy.lib import format as npf
x = np.arange(12, dtype=np.float32).reshape(4, 3)
np.save(sys.argv[1] + "/np.npy", x)
for major in (1, 2, 3):
    with open("%s/np%d.npy" % (sys.argv[1], major), "wb") as f:
        npf.write_array(f, x, version=(major, 0))
PY
    for v in "" 1 2 3; do
        run "$train" --info "$tmp/np$v.npy"
        grep -qF "np$v.npy: npy v${v:-1}.0, 4 x 3 float32" "$tmp/out" || fail "numpy's version ${v:-default}: $(cat "$tmp/out" "$tmp/err")"
    done
else
    echo "numpy not installed: not reading numpy's own files"
fi

# A valid file is described by --info: rows x columns and the format.
run "$train" --info "$tmp/ok.npy"
grep -qF "ok.npy: npy v1.0, 4 x 3 float32" "$tmp/out" || fail "--info: $(cat "$tmp/out" "$tmp/err")"
run "$train" --info --d-in 1 "$tmp/raw.f32"
grep -qF "raw float32, 11 x 1 float32" "$tmp/out" || fail "--info raw: $(cat "$tmp/out" "$tmp/err")"
finish
