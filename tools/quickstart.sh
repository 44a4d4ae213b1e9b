#!/bin/sh
# The main job, from a fresh checkout: install what is missing (as root),
# build libsae and the tools, and run the lambda sweep on the built-in
# synthetic data. The table goes to stdout; the CSV files and the graphs
# (l1.png, l2.png, l0_frac.png, tradeoff.png) to build/sweep/.
set -eu
cd "$(dirname "$0")/.."
cmake/deps.sh run
cmake --preset default >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
build/tools/sae-sweep --out build/sweep "$@"
