#!/bin/sh
# The whole test suite, from a fresh checkout on Debian:
#   1. installs missing build and test packages (when run as root),
#   2. fuzzes the checkpoint loaders with libFuzzer for SAE_FUZZ_SECONDS
#      (default 60) in a clang build (build-fuzz/),
#   3. builds and runs every test under AddressSanitizer + UBSan (build-asan/),
#      with CBLAS as the only GEMM backend (SAE_WITH_ONEDNN=OFF),
#   4. builds the suites that run threads (label "threads") with clang-14's
#      ThreadSanitizer + UBSan and runs them (build-tsan/, about 2 minutes),
#   5. builds the optimised library (build/, with oneDNN when installed) and
#      runs every test, including the valgrind runs of the unit tests; its
#      CTest summary is the last output.
# Exit status 0 only if everything passed.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)
cmake/deps.sh test

fuzz_seconds=${SAE_FUZZ_SECONDS:-60}
echo "== libFuzzer on the checkpoint loaders, $fuzz_seconds s (build-fuzz/) =="
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSAE_FUZZ_ONLY=ON -DSAE_FUZZ_SECONDS="$fuzz_seconds" >/dev/null
# libFuzzer reports every new input; keep its log, show the summary (or the
# end of the log if it found something).
if ! cmake --build build-fuzz -j "$jobs" --target fuzz >build-fuzz/fuzz.log 2>&1; then
    tail -n 60 build-fuzz/fuzz.log
    echo "libFuzzer failed: see build-fuzz/fuzz.log and build-fuzz/tests/fuzz/crash-*" >&2
    exit 1
fi
grep -E '^(Done|stat::)' build-fuzz/fuzz.log

echo "== ASan + UBSan build (build-asan/) =="
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$jobs"
ctest --preset asan -j "$jobs"

echo "== ThreadSanitizer + clang's UBSan, the thread tests (build-tsan/) =="
# Only the targets of the thread tests are built (the build preset lists
# them) and only they run (label "threads"); OPENBLAS_NUM_THREADS=1 in their
# environment (tests/CMakeLists.txt), because OpenBLAS's own threads are not
# instrumented.
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j "$jobs"
ctest --preset tsan -j "$jobs"

echo "== Optimised build (build/) =="
cmake --preset default >/dev/null
cmake --build --preset default -j "$jobs"
ctest --preset default -j "$jobs"
