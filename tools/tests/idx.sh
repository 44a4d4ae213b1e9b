#!/bin/sh
# sae-idx2npy on tiny hand-made IDX files: the values (scaled to [0, 1]),
# gzip or not, --limit, and each malformed input (exit 2, one line, no
# output file left behind).
# Usage: idx.sh BINDIR
. "$(dirname "$0")/lib.sh"
conv=$1/sae-idx2npy
# 3 images of 2 x 2 pixels: magic 0 0 8 3, dims 3 2 2 (big-endian), 12 bytes.
header='\000\000\010\003\000\000\000\003\000\000\000\002\000\000\000\002'
pixels='\000\377\063\000\377\000\000\063\146\231\314\377' # 0 255 51 0 255 0 0 51 102 153 204 255
printf "$header$pixels" >"$tmp/img.idx"
gzip -c "$tmp/img.idx" >"$tmp/img.idx.gz"

# data_hex NPY: the float32 data of our .npy, as hex words
data_hex() {
    hlen=$(od -An -tu2 -j8 -N2 "$1" | tr -d ' ')
    od -An -tx4 -v -j $((10 + hlen)) "$1" | tr -s ' \n' ' '
}
want=" 00000000 3f800000 3e4ccccd 00000000 3f800000 00000000 00000000 3e4ccccd 3ecccccd 3f19999a 3f4ccccd 3f800000 "

for in in img.idx img.idx.gz; do
    run "$conv" "$tmp/$in" "$tmp/$in.npy"
    [ "$rc" -eq 0 ] || fail "$in: exit $rc: $(cat "$tmp/err")"
    grep -qF "$tmp/$in.npy: 3 x 4 float32 in [0, 1]" "$tmp/out" || fail "$in: $(cat "$tmp/out")"
    got=$(data_hex "$tmp/$in.npy")
    [ "$got" = "$want" ] || fail "$in: data$got, want$want"
done
cmp -s "$tmp/img.idx.npy" "$tmp/img.idx.gz.npy" || fail "gzip and plain give different files"
run "$1/sae-train" --info "$tmp/img.idx.npy"
grep -qF "npy v1.0, 3 x 4 float32" "$tmp/out" || fail "sae-train --info: $(cat "$tmp/out" "$tmp/err")"
run "$conv" --limit 2 "$tmp/img.idx.gz" "$tmp/two.npy"
[ "$rc" -eq 0 ] && grep -qF "2 x 4 float32" "$tmp/out" || fail "--limit 2: $(cat "$tmp/out" "$tmp/err")"
[ "$(data_hex "$tmp/two.npy")" = " 00000000 3f800000 3e4ccccd 00000000 3f800000 00000000 00000000 3e4ccccd " ] ||
    fail "--limit 2: data $(data_hex "$tmp/two.npy")"

# Malformed inputs.
expect_no_output() {
    [ ! -e "$tmp/bad.npy" ] && [ ! -e "$tmp/bad.npy.part" ] || fail "$1: output left behind"
}
printf '\001\000\010\003' >"$tmp/magic.idx"
expect_usage_error "not an IDX file" "$conv" "$tmp/magic.idx" "$tmp/bad.npy"
expect_no_output magic
printf '\000\000\015\003\000\000\000\001\000\000\000\001\000\000\000\001\000\000\000\000' >"$tmp/float.idx"
expect_usage_error "IDX type 0x0d is not unsigned bytes" "$conv" "$tmp/float.idx" "$tmp/bad.npy"
printf '\000\000\010\001\000\000\000\003\001\002\003' >"$tmp/labels.idx"
expect_usage_error "1-D IDX file (labels?)" "$conv" "$tmp/labels.idx" "$tmp/bad.npy"
printf "$header" >"$tmp/trunc.idx"
printf '\000\377\063' >>"$tmp/trunc.idx"
expect_usage_error "truncated (end of file in the data)" "$conv" "$tmp/trunc.idx" "$tmp/bad.npy"
expect_no_output truncated
printf "$header$pixels\000" >"$tmp/extra.idx"
expect_usage_error "unexpected data after 3 items" "$conv" "$tmp/extra.idx" "$tmp/bad.npy"
expect_no_output extra
printf '\000\000\010' >"$tmp/short.idx"
expect_usage_error "truncated (end of file in the header)" "$conv" "$tmp/short.idx" "$tmp/bad.npy"
expect_usage_error "$tmp/missing.idx: No such file or directory" "$conv" "$tmp/missing.idx" "$tmp/bad.npy"
expect_usage_error "expected IN and OUT.npy" "$conv" "$tmp/img.idx"
expect_usage_error "--limit: must be at least 1" "$conv" --limit 0 "$tmp/img.idx" "$tmp/bad.npy"
finish
