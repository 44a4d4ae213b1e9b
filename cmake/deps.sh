#!/bin/sh
# Install the Debian packages libsae needs, when they are missing.
#   cmake/deps.sh build   compiler, CMake, CBLAS (OpenBLAS), oneDNN (optional GEMM
#                         backend), Check, pkg-config, zlib
#   cmake/deps.sh run     build + gnuplot (the examples' graphs)
#   cmake/deps.sh test    run + everything the whole test suite uses (MPI included:
#                         openmpi-bin and libopenmpi-dev, for libsae-mpi and its tests;
#                         chromium, for the feature dashboard's browser test)
# As root it runs apt-get; otherwise it names the command to run and fails.
set -eu
what=${1:-build}
pkgs="cmake make gcc g++ pkgconf libopenblas-dev libdnnl-dev check zlib1g-dev"
case $what in
build) ;;
run) pkgs="$pkgs gnuplot-nox python3" ;;
test) pkgs="$pkgs gnuplot-nox python3 python3-numpy python3-torch python3-pytest python3-tqdm \
python3-pip python3-setuptools python3-wheel python3-venv valgrind clang-14 \
libclang-rt-14-dev abigail-tools binutils dataset-fashion-mnist \
libgfortran-12-dev openmpi-bin libopenmpi-dev chromium" ;;
*) echo "usage: $0 build|run|test" >&2; exit 2 ;;
esac
missing=
for p in $pkgs; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case $status in
    *" installed") ;;
    *) missing="$missing $p" ;;
    esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    echo "Installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
else
    echo "Missing Debian packages:$missing" >&2
    echo "Install them with: sudo apt-get install$missing" >&2
    exit 1
fi
