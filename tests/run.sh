#!/bin/sh
# The whole test suite, from a fresh checkout on Debian:
#   1. installs missing build and test packages (when run as root),
#   2. builds and runs every test under AddressSanitizer + UBSan (build-asan/),
#   3. builds the optimised library (build/) and runs every test, including the
#      valgrind runs of the unit tests; its CTest summary is the last output.
# Exit status 0 only if everything passed.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)
cmake/deps.sh test

echo "== ASan + UBSan build (build-asan/) =="
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$jobs"
ctest --preset asan -j "$jobs"

echo "== Optimised build (build/) =="
cmake --preset default >/dev/null
cmake --build --preset default -j "$jobs"
ctest --preset default -j "$jobs"
