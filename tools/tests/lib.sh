# Helpers for the tools' shell tests (sourced, POSIX sh).
# Each test gets a fresh temporary directory $tmp, removed on exit, so nothing
# is ever written to the source tree.
set -u
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sae-tools-test.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# run CMD...: run it, keeping stdout in $tmp/out, stderr in $tmp/err and the
# exit status in $rc.
run() {
    rc=0
    "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
}

# expect_usage_error NEEDLE CMD...: exit status 2 and exactly one line on
# stderr, containing NEEDLE.
expect_usage_error() {
    needle=$1
    shift
    run "$@"
    lines=$(wc -l <"$tmp/err")
    if [ "$rc" -ne 2 ]; then
        fail "$*: exit $rc, want 2 (stderr: $(cat "$tmp/err"))"
    elif [ "$lines" -ne 1 ]; then
        fail "$*: $lines lines on stderr, want 1: $(cat "$tmp/err")"
    elif ! grep -qF -- "$needle" "$tmp/err"; then
        fail "$*: stderr '$(cat "$tmp/err")' lacks '$needle'"
    else
        echo "ok: $(cat "$tmp/err")"
    fi
}

# npy FILE DICT DATA_BYTES [MAJOR]: a version-1 .npy file with header dict
# DICT (padded to 128 bytes) and DATA_BYTES bytes of float32 zeros.
npy() {
    { printf '\223NUMPY\001\000\166\000'; printf '%-117s\n' "$2"; head -c "$3" /dev/zero; } >"$1"
}

# raw_f32 FILE ROWS COLS: random little-endian float32 in (-1, -0.5] and [0.5, 1)
raw_f32() {
    awk -v n=$(($2 * $3)) 'BEGIN { srand(5); for (i = 0; i < n; i++)
        printf "\\%03o\\%03o\\%03o\\%s", rand() * 256, rand() * 256, rand() * 128, rand() < 0.5 ? "077" : "277" }' >"$tmp/fmt"
    # shellcheck disable=SC2059
    printf "$(cat "$tmp/fmt")" >"$1"
}

# csv_column NAME CSV: "step,value" of column NAME (found by the header) per row
csv_column() {
    awk -F, -v name="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
        { print $1 "," $c }' "$2"
}

finish() {
    if [ "$failures" -ne 0 ]; then
        echo "$failures check(s) failed" >&2
        exit 1
    fi
    echo "all checks passed"
    exit 0
}
