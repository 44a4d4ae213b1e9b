#!/bin/sh
# Compile tests/cpp/test_sae_hpp.cpp with one C++ compiler at one standard,
# warnings as errors, against the source tree's headers and the built
# libsae.so, and run it (a CTest test each: tests/cpp/CMakeLists.txt).
#   usage: run.sh CXX STD OUTDIR LIBSAE_SO [EXTRA_FLAGS...]
set -eu
cxx=$1 std=$2 out=$3 lib=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
exe=$out/test_sae_hpp_$(basename "$cxx")_$std
# shellcheck disable=SC2068 # extra flags are words
"$cxx" -std="$std" -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Werror \
    -O1 -g "$@" -I"$here/../../include" "$here/test_sae_hpp.cpp" -o "$exe" \
    "$lib" -Wl,-rpath,"$(dirname "$lib")"
exec "$exe"
