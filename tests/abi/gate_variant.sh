#!/bin/sh
# Proves that the abidiff gate (cmake/abi.sh check) tells compatible changes
# from incompatible ones. Each variant is a small copy of libsae.so built from
# the real sources with one deliberate change; the gate compares it with the
# unchanged sources' ABI ("reference") and must pass or fail as listed below,
# naming the changed thing in its report.
#
#   gate_variant.sh VARIANT WORK_DIR SOURCE_DIR CC "CFLAGS" SOURCES...
#
# CFLAGS: the -D and -I flags of the sae target (the variant's own include
# directory comes first, so its copy of sae.h wins).
#
# VARIANT "reference" builds the unchanged library and its ABI dump (a CTest
# fixture the others need).
set -eu
variant=$1 work=$2 srcdir=$3 cc=$4 cflags=$5
shift 5
abi_sh=$srcdir/cmake/abi.sh
dir=$work/$variant
rm -rf "$dir"
mkdir -p "$dir/include/libsae"
cp "$srcdir/include/libsae/sae.h" "$dir/include/libsae/sae.h"
cp "$srcdir/cmake/libsae.map" "$dir/libsae.map"
src_root=$srcdir
extra=
defines=

# Edit a copy with sed and make sure the edit happened: a pattern that no
# longer matches must not turn this test into one that cannot fail.
edit() { # FILE SED-SCRIPT
    cp "$1" "$1.orig"
    sed "$2" "$1.orig" > "$1"
    if cmp -s "$1" "$1.orig"; then
        echo "gate_variant.sh: variant $variant: '$2' changed nothing in $1;" >&2
        echo "  update tests/abi/gate_variant.sh to the current sources" >&2
        exit 2
    fi
}

# expect: pass or fail; report: text the gate's report must contain; binary:
# text the variant's debug info or dynamic symbols must contain (proof that the
# change reached the library the gate looked at).
expect=pass report="ABI check passed" binary=
case $variant in
reference|unchanged)
    report="has the ABI of" ;;
added_function)
    # A new function in a new version node, as the next release would add it.
    cat > "$dir/added.c" <<'EOF'
#include <libsae/sae.h>
SAE_API int sae_abi_gate_added(int x);
int sae_abi_gate_added(int x) { return x + 1; }
EOF
    printf 'SAE_ABI_GATE_TEST {\n  global:\n    sae_abi_gate_added;\n} SAE_0.1;\n' >> "$dir/libsae.map"
    extra=$dir/added.c
    report="sae_abi_gate_added" binary="sae_abi_gate_added" ;;
added_enumerator)
    edit "$dir/include/libsae/sae.h" 's/SAE_OPT_GRAD_CLIP = 6/SAE_OPT_GRAD_CLIP = 6, SAE_OPT_ABI_GATE_TEST = 999/'
    binary="SAE_OPT_ABI_GATE_TEST" ;;
added_type)
    cat >> "$dir/include/libsae/sae.h" <<'EOF'
enum sae_abi_gate_kind { SAE_ABI_GATE_A = 0, SAE_ABI_GATE_B = 1 };
typedef struct sae_abi_gate_info { double value; unsigned flags; } sae_abi_gate_info;
EOF
    report="sae_abi_gate_kind" binary="sae_abi_gate_kind" ;;
internal_change)
    # The opaque handles' layout is private: it may change freely.
    cp -R "$srcdir/src" "$dir/src"
    changed=$(find "$dir/src" -name '*.[ch]' -exec grep -l '^struct sae_model[[:space:]]*{' {} + || true)
    if [ -z "$changed" ]; then
        echo "gate_variant.sh: no 'struct sae_model {' in src/; update this script" >&2
        exit 2
    fi
    for f in $changed; do
        sed -i 's/^\(struct sae_model[[:space:]]*{\)/\1 char sae_abi_gate_padding[40];/' "$f"
    done
    src_root=$dir
    binary="sae_abi_gate_padding" ;;
removed_function)
    edit "$dir/libsae.map" '/^[[:space:]]*sae_status_string;/d'
    expect=fail report="Removed function" ;;
changed_enum_value)
    edit "$dir/include/libsae/sae.h" 's/SAE_E_IO = -4/SAE_E_IO = -44/'
    expect=fail report="SAE_E_IO' from value '-4' to '-44'" binary="SAE_E_IO" ;;
changed_struct)
    edit "$dir/include/libsae/sae.h" 's/double l0;/double l0; double abi_gate_extra;/'
    expect=fail report="abi_gate_extra" binary="abi_gate_extra" ;;
changed_signature)
    # sae_status_string(int) becomes sae_status_string(long): the sources build
    # the old function under another (unexported) name, and a wrapper with the
    # new signature takes the exported name.
    defines=-Dsae_status_string=sae_abi_gate_status_string_v1
    cat > "$dir/changed.c" <<'EOF'
#include <libsae/sae.h>
#undef sae_status_string
SAE_API const char *sae_status_string(long status);
const char *sae_status_string(long status) { return sae_abi_gate_status_string_v1((int)status); }
EOF
    extra=$dir/changed.c
    expect=fail report="type name changed from 'int' to 'long int'" ;;
*)
    echo "gate_variant.sh: unknown variant $variant" >&2; exit 2 ;;
esac

srcs=
for s in "$@"; do srcs="$srcs $src_root/$s"; done
# shellcheck disable=SC2086 # word splitting of the flag and file lists is intended
"$cc" -std=c11 -g -O0 -fPIC -shared -fvisibility=hidden -fno-eliminate-unused-debug-types \
    -DSAE_BUILDING_LIBRARY $defines -I"$dir/include" $cflags $srcs $extra \
    -Wl,--version-script="$dir/libsae.map" -Wl,-soname,libsae.so.0 -o "$dir/libsae.so"

if [ "$variant" = reference ]; then
    sh "$abi_sh" dump "$dir/libsae.so" "$dir/include/libsae" "$dir/libsae.abi"
    echo "reference ABI: $dir/libsae.abi"
    exit 0
fi
[ -f "$work/reference/libsae.abi" ] || { echo "gate_variant.sh: run the reference variant first" >&2; exit 2; }

set +e
sh "$abi_sh" check "$work/reference" "$dir/libsae.so" "$dir/include/libsae" "$dir" > "$dir/gate.txt" 2>&1
rc=$?
set -e
cat "$dir/gate.txt"
echo "--"
case $expect:$rc in
pass:0|fail:1) ;;
*)
    echo "gate_variant.sh: variant $variant: the gate should $expect, but abi.sh check exited with $rc" >&2
    exit 1 ;;
esac
if ! grep -qF -- "$report" "$dir/gate.txt"; then
    echo "gate_variant.sh: variant $variant: the gate's report does not say \"$report\"" >&2
    exit 1
fi
if [ -n "$binary" ] && ! { readelf --debug-dump=info "$dir/libsae.so"; nm -D "$dir/libsae.so"; } 2>/dev/null | grep -qF -- "$binary"; then
    echo "gate_variant.sh: variant $variant: '$binary' is not in the variant library" >&2
    exit 1
fi
echo "variant $variant: the gate did $expect, as it should"
