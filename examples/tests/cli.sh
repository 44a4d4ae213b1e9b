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
            --log-every --dead-window --tiles --save --resume --checkpoint-every "step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac,checkpoint"; do
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

# NaN in the data: exit 2, naming the file and the row (rows 0..3, row 2 bad).
{ printf '\223NUMPY\001\000\166\000'; printf '%-117s\n' "$ok_dict"
  head -c 24 /dev/zero; printf '\000\000\300\177'; head -c 20 /dev/zero; } >"$tmp/nan.npy"
run "$train" "$tmp/nan.npy" --d-sae 8 --steps 5
[ "$rc" -eq 2 ] || fail "NaN in the data: exit $rc, want 2"
[ "$(tail -n 1 "$tmp/err")" = "sae-train: $tmp/nan.npy: row 2 holds NaN or Inf" ] ||
    fail "NaN in the data: $(tail -n 1 "$tmp/err")"
[ ! -s "$tmp/out" ] || fail "NaN in the data: a report on stdout: $(cat "$tmp/out")"

# A valid file is described by --info: rows x columns and the format.
run "$train" --info "$tmp/ok.npy"
grep -qF "ok.npy: npy v1.0, 4 x 3 float32" "$tmp/out" || fail "--info: $(cat "$tmp/out" "$tmp/err")"
run "$train" --info --d-in 1 "$tmp/raw.f32"
grep -qF "raw float32, 11 x 1 float32" "$tmp/out" || fail "--info raw: $(cat "$tmp/out" "$tmp/err")"
finish
