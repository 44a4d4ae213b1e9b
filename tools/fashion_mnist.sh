#!/bin/sh
# Train an SAE on Fashion-MNIST (Debian: dataset-fashion-mnist) and look at it:
#   1. converts the IDX images to float32 .npy in [0, 1] with sae-idx2npy,
#   2. trains on the 60,000 training images with sae-train, logging to CSV,
#   3. reports L2, L0 and the fraction of variance unexplained on the 10,000
#      t10k test images, and draws the most active features' decoder rows as
#      28x28 tiles,
#   4. plots the training log on a log step axis (plot_log.sh),
#   5. writes the feature dashboard of the model on the test images with
#      sae-features (build/fashion-mnist/features/dashboard.html) and, when
#      Debian's chromium is installed, a screenshot of it (dashboard.png).
# Everything goes to build/fashion-mnist/. Extra arguments go to sae-train
# (e.g. --steps 500 for a quick look). Run from a configured and built tree:
#   cmake --preset default && cmake --build build -j && tools/fashion_mnist.sh
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/build/tools
out=$root/build/fashion-mnist
data=/usr/share/datasets/fashion-mnist
if [ ! -r "$data/train-images-idx3-ubyte.gz" ]; then
    echo "$0: $data not found (Debian: apt-get install dataset-fashion-mnist)" >&2
    exit 1
fi
mkdir -p "$out"
for split in train t10k; do
    [ -s "$out/$split.npy" ] || "$bin/sae-idx2npy" "$data/$split-images-idx3-ubyte.gz" "$out/$split.npy"
done
"$bin/sae-train" "$out/train.npy" --eval "$out/t10k.npy" \
    --d-sae 512 --lambda 1 --lr 3e-4 --batch 256 --steps 5000 --log-every 50 \
    --log "$out/train.csv" --tiles "$out/tiles.png" --save "$out/checkpoint" "$@"
"$root/tools/plot_log.sh" "$out/train.csv" "$out/train-log.png" \
    "sae-train on Fashion-MNIST: d_sae 512, lambda 1, lr 3e-4, batch 256"
"$bin/sae-features" "$out/checkpoint" "$out/t10k.npy" --out "$out/features" \
    --title "Fashion-MNIST SAE (d_sae 512, lambda 1) on the 10,000 test images"
# the card of the feature with the largest activation under the overview, as
# the README shows it
"$root/tools/features/screenshot.py" "$out/features/dashboard.html" "$out/dashboard.png" \
    --size 1280x1300 --click 'th[data-key=max]' --click '#rows tr.feature-row a' --top ||
    [ $? -eq 77 ]
