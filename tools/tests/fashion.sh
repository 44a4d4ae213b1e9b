#!/bin/sh
# The real data: convert Fashion-MNIST's t10k images (Debian:
# dataset-fashion-mnist), train a few steps on them and draw the tiles.
# Exits 77 (skipped) when the dataset is not installed.
# Usage: fashion.sh BINDIR
. "$(dirname "$0")/lib.sh"
images=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
if [ ! -r "$images" ]; then
    echo "dataset-fashion-mnist is not installed: skipping"
    exit 77
fi
run "$1/sae-idx2npy" "$images" "$tmp/t10k.npy"
grep -qF "10000 x 784 float32 in [0, 1]" "$tmp/out" || fail "convert: $(cat "$tmp/out" "$tmp/err")"
run "$1/sae-train" "$tmp/t10k.npy" --eval "$tmp/t10k.npy" --d-sae 64 --lambda 1 --steps 30 \
    --batch 64 --tiles "$tmp/tiles.png" --tiles-count 16
[ "$rc" -eq 0 ] || fail "train: exit $rc: $(cat "$tmp/err")"
cat "$tmp/out"
grep -q "^eval on $tmp/t10k.npy (10000 rows): l2 [0-9.]* .* fvu 0\\.[0-9]*$" "$tmp/out" ||
    fail "no evaluation with an FVU below 1"
if command -v gnuplot >/dev/null 2>&1; then
    [ "$(head -c 4 "$tmp/tiles.png" | od -An -c | tr -d ' ')" = '211PNG' ] || fail "tiles.png is not a PNG"
fi
finish
