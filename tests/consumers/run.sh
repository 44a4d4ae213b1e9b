#!/bin/sh
# Consumers of the INSTALLED libsae, one CTest test per step
# (tests/consumers/CMakeLists.txt):
#
#   install  cmake --install the build tree into a fresh temporary prefix
#   c        consumer.c with `pkg-config --cflags --libs sae` (the README's
#            command), run against the installed libsae.so.0; its output is the
#            reference for the other steps
#   cxx      consumer.cpp (the installed <libsae/sae.hpp>) in a CMake project:
#            find_package(sae CONFIG REQUIRED), linked once with sae::sae and
#            once with sae::sae_static; and with `pkg-config --cflags --libs sae`
#   static   consumer.c linked with libsae.a through pkg-config, as the README
#            says: the archive by name with the shared CBLAS, and a fully static
#            program with `pkg-config --static`
#   python   consumer.py imports the installed Python package (no
#            LIBSAE_PATH): it must load the libsae.so.0 installed with it
#   pip      `pip install --no-build-isolation` of python/ into a fresh venv
#            (Debian's packages seen through --system-site-packages, no
#            network), consumer.py run with LIBSAE_PATH at the installed
#            library
#   compat   consumer.c compiled against the frozen header of the ABI baseline
#            (abi/<version>/include), run against the current library
#   mpi      the companion library libsae-mpi (when built): consumer_mpi.c with
#            `pkg-config --cflags --libs sae-mpi` and in a CMake project with
#            find_package(sae COMPONENTS mpi), each run as 2 ranks ($MPIEXEC)
#
# Every program checks sae_version_number() against its header's
# SAE_VERSION_NUMBER, and must print the same losses, digit for digit, as the
# pkg-config C program. Nothing may come from the build tree: the programs see
# only the prefix, and each shared one is checked to load the installed
# libsae.so.0.
#
# Environment (set by CTest): SAE_BUILD_DIR SAE_SOURCE_DIR SAE_WORK_DIR
# SAE_LIBDIR (CMAKE_INSTALL_LIBDIR) CMAKE CC CXX PKG_CONFIG PYTHON
# SAE_PYTHON_DIR (where the package installs, relative to the prefix), for
# compat SAE_ABI_BASELINE, for mpi MPIEXEC (and MPIEXEC_FLAGS).
set -eu
step=$1
: "${SAE_BUILD_DIR:?}" "${SAE_SOURCE_DIR:?}" "${SAE_WORK_DIR:?}" "${SAE_LIBDIR:?}"
: "${CMAKE:=cmake}" "${CC:=cc}" "${CXX:=c++}" "${PKG_CONFIG:=pkg-config}" "${PYTHON:=/usr/bin/python3}"
here=$SAE_SOURCE_DIR/tests/consumers
W=$SAE_WORK_DIR
P=$W/prefix
libdir=$P/$SAE_LIBDIR
# One BLAS thread: the same summation order in every process.
export OPENBLAS_NUM_THREADS=1
export PKG_CONFIG_PATH="$libdir/pkgconfig"
pkg() { "$PKG_CONFIG" "$@"; }
fail() { echo "consumers/run.sh $step: $*" >&2; exit 1; }

# The program must load libsae.so.0 from the prefix (given LD_LIBRARY_PATH
# or its own RUNPATH), not from the build tree or the system.
loads_installed() { # BIN
    found=$(LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-} ldd "$1" | awk '$1 == "libsae.so.0" { print $3 }')
    [ -n "$found" ] || fail "$1 does not load libsae.so.0"
    [ "$(readlink -f "$found")" = "$(readlink -f "$libdir/libsae.so.0")" ] ||
        fail "$1 loads $found, not the installed $libdir/libsae.so.0"
    echo "$1 loads $found"
}
links_no_libsae_so() { # BIN
    if readelf -d "$1" | grep -q 'NEEDED.*libsae'; then
        fail "$1 was meant to contain libsae.a but needs libsae.so: $(readelf -d "$1" | grep NEEDED)"
    fi
    echo "$1 contains libsae (no libsae.so needed)"
}
# The losses of OUT must equal the reference C program's, line for line.
same_losses() { # OUT
    grep -v '^#' "$W/c_shared.out" > "$W/ref.losses"
    grep -v '^#' "$1" > "$1.losses"
    if ! cmp -s "$W/ref.losses" "$1.losses"; then
        diff "$W/ref.losses" "$1.losses" >&2 || true
        fail "$1: the losses differ from the pkg-config C program's"
    fi
    echo "$1: $(wc -l < "$1.losses") lines of losses identical to the C program's"
}
need_reference() {
    [ -s "$W/c_shared.out" ] || fail "no $W/c_shared.out: run the consumer_c test first"
}

case $step in
install)
    rm -rf "$W"
    mkdir -p "$W"
    "$CMAKE" --install "$SAE_BUILD_DIR" --prefix "$P"
    for f in "$P/include/libsae/sae.h" "$P/include/libsae/sae.hpp" "$libdir/libsae.so.0" "$libdir/libsae.so" \
             "$libdir/libsae.a" "$libdir/pkgconfig/sae.pc" "$libdir/cmake/sae/saeConfig.cmake"; do
        [ -e "$f" ] || fail "cmake --install did not install $f"
    done
    echo "installed into $P"
    ;;

c)
    [ "$(pkg --variable=pcfiledir sae)" = "$libdir/pkgconfig" ] ||
        fail "pkg-config finds sae.pc in $(pkg --variable=pcfiledir sae), not in the prefix"
    echo "pkg-config --cflags --libs sae: $(pkg --cflags --libs sae)"
    # shellcheck disable=SC2046 # the README's command, word splitting intended
    "$CC" -std=c11 -Wall -Wextra -Wpedantic -Werror -o "$W/c_shared" "$here/consumer.c" \
        $(pkg --cflags --libs sae)
    export LD_LIBRARY_PATH="$libdir"
    loads_installed "$W/c_shared"
    "$W/c_shared" > "$W/c_shared.out"
    cat "$W/c_shared.out"
    if [ "$(grep -c '^step ' "$W/c_shared.out")" -ne 5 ] || ! grep -q '^final ' "$W/c_shared.out"; then
        fail "expected 5 step lines and a final line"
    fi
    ;;

cxx)
    need_reference
    rm -rf "$W/cxx"
    "$CMAKE" -S "$here/project" -B "$W/cxx" -DCMAKE_PREFIX_PATH="$P" \
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    sae_dir=$(sed -n 's/^sae_DIR:PATH=//p' "$W/cxx/CMakeCache.txt")
    [ "$(readlink -f "$sae_dir")" = "$(readlink -f "$libdir/cmake/sae")" ] ||
        fail "find_package(sae) found $sae_dir, not the installed package"
    echo "find_package(sae) found $sae_dir"
    "$CMAKE" --build "$W/cxx"
    loads_installed "$W/cxx/consumer_cxx"   # through the RUNPATH CMake gave it
    "$W/cxx/consumer_cxx" > "$W/cxx_shared.out"
    same_losses "$W/cxx_shared.out"
    links_no_libsae_so "$W/cxx/consumer_cxx_static"
    "$W/cxx/consumer_cxx_static" > "$W/cxx_static.out"
    same_losses "$W/cxx_static.out"
    # pkg-config's flags find <libsae/sae.hpp> too
    # shellcheck disable=SC2046
    "$CXX" -std=c++17 -Wall -Wextra -Wpedantic -Werror -o "$W/cxx_pkg" "$here/consumer.cpp" \
        $(pkg --cflags --libs sae)
    LD_LIBRARY_PATH="$libdir" loads_installed "$W/cxx_pkg"
    LD_LIBRARY_PATH="$libdir" "$W/cxx_pkg" > "$W/cxx_pkg.out"
    same_losses "$W/cxx_pkg.out"
    ;;

static)
    need_reference
    # libsae.a with the shared CBLAS, libm and the OpenMP runtime (README, "Linking").
    # shellcheck disable=SC2046
    "$CC" -std=c11 -Wall -Wextra -Wpedantic -Werror -o "$W/c_static" "$here/consumer.c" \
        $(pkg --cflags sae) "$(pkg --variable=libdir sae)/libsae.a" \
        $(pkg --libs $(pkg --print-requires-private sae)) $(pkg --variable=private_libs sae)
    links_no_libsae_so "$W/c_static"
    "$W/c_static" > "$W/c_static.out"
    same_losses "$W/c_static.out"
    # A fully static program: --static adds Requires.private (CBLAS) and
    # Libs.private (libm) of sae.pc. Not with oneDNN: Debian ships no libdnnl.a.
    case " $(pkg --variable=gemm_backends sae) " in
    *" onednn "*)
        echo "libsae was built with oneDNN, which has no static library: no fully static program"
        exit 0 ;;
    esac
    echo "pkg-config --libs --static sae: $(pkg --libs --static sae)"
    # shellcheck disable=SC2046
    "$CC" -static -std=c11 -Wall -Wextra -Wpedantic -Werror -o "$W/c_full_static" \
        "$here/consumer.c" $(pkg --cflags --libs --static sae)
    if readelf -d "$W/c_full_static" | grep -q NEEDED; then
        fail "c_full_static is not static: $(readelf -d "$W/c_full_static" | grep NEEDED)"
    fi
    "$W/c_full_static" > "$W/c_full_static.out"
    same_losses "$W/c_full_static.out"
    ;;

python)
    need_reference
    : "${SAE_PYTHON_DIR:?}"
    [ -f "$P/$SAE_PYTHON_DIR/libsae/_install.py" ] ||
        fail "cmake --install did not install the Python package into $P/$SAE_PYTHON_DIR"
    # from another directory, so that nothing of the source tree is importable
    (cd "$W" && env -u LIBSAE_PATH PYTHONPATH="$P/$SAE_PYTHON_DIR" PYTHONDONTWRITEBYTECODE=1 \
        "$PYTHON" "$here/consumer.py" "$libdir/libsae.so.0" "$P/include/libsae/sae.h" \
        "$W/c_shared.out")
    ;;

pip)
    need_reference
    rm -rf "$W/venv" "$W/pysrc"
    "$PYTHON" -m venv --system-site-packages "$W/venv" ||
        fail "python3 -m venv failed (Debian: python3-venv)"
    cp -R "$SAE_SOURCE_DIR/python" "$W/pysrc"   # pip builds in the tree it is given
    PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$W/venv/bin/python" -m pip install --no-build-isolation "$W/pysrc"
    (cd "$W" && LIBSAE_PATH="$libdir/libsae.so.0" PYTHONDONTWRITEBYTECODE=1 \
        "$W/venv/bin/python" "$here/consumer.py" "$libdir/libsae.so.0" \
        "$P/include/libsae/sae.h" "$W/c_shared.out")
    "$W/venv/bin/python" -c "import importlib.util as u, os, sys
sys.exit(not os.path.exists(os.path.join(u.find_spec('libsae').submodule_search_locations[0], 'py.typed')))" ||
        fail "pip did not install py.typed"
    ;;

compat)
    need_reference
    : "${SAE_ABI_BASELINE:?}"
    frozen=$SAE_ABI_BASELINE/include
    [ -f "$frozen/libsae/sae.h" ] || fail "no frozen header $frozen/libsae/sae.h"
    # Only the frozen header is on the include path; only the installed
    # library on the link path.
    # shellcheck disable=SC2046
    "$CC" -std=c99 -Wall -Wextra -Wpedantic -Werror -DSAE_CONSUMER_OLDER_HEADER -I"$frozen" \
        -o "$W/c_compat" "$here/consumer.c" $(pkg --libs sae)
    export LD_LIBRARY_PATH="$libdir"
    loads_installed "$W/c_compat"
    "$W/c_compat" > "$W/c_compat.out"
    cat "$W/c_compat.out"
    same_losses "$W/c_compat.out"
    ;;

mpi)
    : "${MPIEXEC:?}"
    for f in "$P/include/libsae/sae_mpi.h" "$libdir/libsae-mpi.so.0" "$libdir/libsae-mpi.a" \
             "$libdir/pkgconfig/sae-mpi.pc" "$libdir/cmake/sae/saeMpiTargets.cmake"; do
        [ -e "$f" ] || fail "cmake --install did not install $f"
    done
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    run2() { # BIN: as 2 ranks; every rank must load the installed libraries
        # shellcheck disable=SC2086 # MPIEXEC_FLAGS is a list of flags
        "$MPIEXEC" ${MPIEXEC_FLAGS:-} -n 2 "$1" > "$1.out"
        cat "$1.out"
        grep -q '2 ranks, sum of ranks 1$' "$1.out" || fail "$1: unexpected output"
    }
    echo "pkg-config --cflags --libs sae-mpi: $(pkg --cflags --libs sae-mpi)"
    # shellcheck disable=SC2046
    "$CC" -std=c11 -Wall -Wextra -Werror -o "$W/c_mpi" "$here/consumer_mpi.c" \
        $(pkg --cflags --libs sae-mpi)
    export LD_LIBRARY_PATH="$libdir"
    loads_installed "$W/c_mpi"
    found=$(ldd "$W/c_mpi" | awk '$1 == "libsae-mpi.so.0" { print $3 }')
    [ "$(readlink -f "$found")" = "$(readlink -f "$libdir/libsae-mpi.so.0")" ] ||
        fail "$W/c_mpi loads libsae-mpi.so.0 from '$found', not the prefix"
    run2 "$W/c_mpi"
    rm -rf "$W/cmake_mpi"
    "$CMAKE" -S "$here/project_mpi" -B "$W/cmake_mpi" -DCMAKE_PREFIX_PATH="$P" \
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    "$CMAKE" --build "$W/cmake_mpi"
    run2 "$W/cmake_mpi/consumer_mpi_cmake"
    ;;

*)
    echo "usage: $0 install|c|cxx|static|python|pip|compat|mpi" >&2
    exit 2
    ;;
esac
