#!/bin/sh
# Compile tests/cpp/test_sae_hpp.cpp (or $SAE_HPP_TEST, another test of the
# same directory) with one C++ compiler at one standard, warnings as errors,
# against the source tree's headers and the built libsae.so, and run it (a
# CTest test each: tests/cpp/CMakeLists.txt).
#   usage: run.sh CXX STD OUTDIR LIBSAE_SO [EXTRA_FLAGS...]
set -eu
cxx=$1 std=$2 out=$3 lib=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
src=${SAE_HPP_TEST:-test_sae_hpp.cpp}
exe=$out/$(basename "$src" .cpp)_$(basename "$cxx")_$std
# shellcheck disable=SC2068 # extra flags are words
"$cxx" -std="$std" -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Werror \
    -O1 -g "$@" -I"$here/../../include" "$here/$src" -o "$exe" \
    "$lib" -Wl,-rpath,"$(dirname "$lib")"
exec "$exe"
