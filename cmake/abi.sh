#!/bin/sh
# The ABI baseline and the abidiff gate (Debian's abigail-tools).
#
#   cmake/abi.sh dump     LIB HEADERS_DIR OUT.abi
#       Write LIB's ABI as abidw XML: every exported function and every type
#       defined in the public headers (reachable from a function or not, so the
#       values of the status, tensor and option enums are recorded too). Types
#       defined elsewhere (src/internal.h, system headers) are kept opaque.
#
#   cmake/abi.sh baseline LIB HEADERS_DIR BASELINE_DIR
#       Release time only (CMake target abi-baseline): write BASELINE_DIR/libsae.abi
#       and freeze the public headers as BASELINE_DIR/include/libsae/.
#
#   cmake/abi.sh check    BASELINE_DIR LIB HEADERS_DIR WORK_DIR [NAME]
#       Compare LIB (with its public headers HEADERS_DIR) with the baseline
#       BASELINE_DIR/NAME.abi (NAME: libsae, or libsae-mpi for the companion
#       library, whose dump the abi-baseline target writes with `dump`).
#       Exit 0 if the ABI is unchanged or only grew (added functions, variables,
#       types or enumerators), 1 on anything else (a removed or changed function,
#       a changed enumerator value, a changed struct such as sae_losses, ...),
#       77 (CTest: skipped) if LIB has no debug info to compare.
#
# The baseline holds sizes and layouts for x86-64; LIB must be built with debug
# information (-g: RelWithDebInfo or Debug).
set -eu

die() { echo "abi.sh: $*" >&2; exit 2; }

need_debug_info() {
    if ! readelf -S "$1" 2>/dev/null | grep -q '\.debug_info'; then
        echo "abi.sh: $1 has no debug information (-g); build with" >&2
        echo "  CMAKE_BUILD_TYPE=RelWithDebInfo or Debug to compare its ABI" >&2
        return 1
    fi
}

dump() { # LIB HEADERS_DIR OUT
    abidw --load-all-types --headers-dir "$2" --drop-private-types \
          --drop-undefined-syms --no-corpus-path --no-comp-dir-path --short-locs \
          --no-elf-needed --type-id-style hash --out-file "$3" "$1"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
dump)
    [ $# -eq 3 ] || die "usage: dump LIB HEADERS_DIR OUT.abi"
    need_debug_info "$1" || exit 1
    dump "$1" "$2" "$3"
    ;;

baseline)
    [ $# -eq 3 ] || die "usage: baseline LIB HEADERS_DIR BASELINE_DIR"
    lib=$1 hdrs=$2 out=$3
    need_debug_info "$lib" || exit 1
    mkdir -p "$out/include/libsae"
    dump "$lib" "$hdrs" "$out/libsae.abi.tmp"
    mv "$out/libsae.abi.tmp" "$out/libsae.abi"
    rm -f "$out"/include/libsae/*.h
    cp "$hdrs"/*.h "$out/include/libsae/"
    echo "ABI baseline written: $out/libsae.abi ($(grep -c '<elf-symbol ' "$out/libsae.abi") functions)"
    echo "Frozen public headers: $out/include/libsae/"
    ;;

check)
    [ $# -eq 4 ] || [ $# -eq 5 ] || die "usage: check BASELINE_DIR LIB HEADERS_DIR WORK_DIR [NAME]"
    base=$1 lib=$2 hdrs=$3 work=$4 name=${5:-libsae}
    [ -f "$base/$name.abi" ] || die "no baseline $base/$name.abi"
    [ -d "$base/include/libsae" ] || die "no frozen headers in $base/include/libsae"
    need_debug_info "$lib" || exit 77
    mkdir -p "$work"
    dump "$lib" "$hdrs" "$work/current.abi"
    # -t: also compare the types no function mentions (the enums); --hd1/--hd2:
    # only types defined in the public headers count.
    set +e
    abidiff -t --hd1 "$base/include/libsae" --hd2 "$hdrs" \
            "$base/$name.abi" "$work/current.abi" > "$work/abidiff.txt" 2>&1
    rc=$?
    set -e
    # The exit status is a bit field: 1 error, 2 usage error, 4 ABI change,
    # 8 incompatible change (libabigail only sets it for removed symbols).
    if [ $((rc & 3)) -ne 0 ]; then
        cat "$work/abidiff.txt" >&2
        die "abidiff failed (exit status $rc)"
    fi
    if [ "$rc" -eq 0 ]; then
        echo "ABI check passed: $lib has the ABI of $base/$name.abi"
        exit 0
    fi
    # ABIDIFF_ABI_CHANGE without ABIDIFF_ABI_INCOMPATIBLE_CHANGE may still be
    # incompatible (a changed struct or enumerator value sets only that bit), so
    # the policy reads the report: it passes only if every line of it is a
    # summary whose removed and changed counts are zero, a heading for added
    # things, or an added thing ("[A] ..."). Anything else fails, including
    # kinds of report this script does not know.
    bad=$(awk '
        /^[[:space:]]*$/ { next }
        /^[[:space:]]*\[A\] / { next }
        /^[0-9]+ [Aa]dded .*:$/ { next }
        /summary:/ {
            line = $0; ok = 1
            while (match(line, /[0-9]+ (Removed|removed|Changed|changed)/)) {
                if (substr(line, RSTART, RLENGTH) !~ /^0 /) ok = 0
                line = substr(line, RSTART + RLENGTH)
            }
            if (ok) next
        }
        { print }' "$work/abidiff.txt")
    if [ $((rc & 8)) -eq 0 ] && [ -z "$bad" ]; then
        echo "ABI check passed: $lib only adds to the ABI of $base/$name.abi:"
        cat "$work/abidiff.txt"
        exit 0
    fi
    echo "ABI check FAILED: $lib is not compatible with $base/$name.abi" >&2
    echo "(abidiff exit status $rc; the full report follows)" >&2
    echo >&2
    cat "$work/abidiff.txt" >&2
    echo >&2
    echo "Within SONAME libsae.so.0 only additions are allowed: new functions," >&2
    echo "new enum values, new options. Restore what the report lists as removed" >&2
    echo "or changed (see README.md, \"ABI policy\")." >&2
    exit 1
    ;;

*)
    die "usage: $0 dump|baseline|check ..."
    ;;
esac
