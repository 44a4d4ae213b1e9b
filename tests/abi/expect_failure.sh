#!/bin/sh
# Run a checker on input that is wrong on purpose: it must exit with status 1
# (a finding, not a crash or a usage error) and its output must contain every
# NEEDLE, i.e. name each planted problem.
#
#   expect_failure.sh NEEDLE... -- COMMAND [ARG...]
set -u
needles=
n=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    n=$((n + 1))
    needles="$needles$1
"
    shift
done
[ $# -gt 1 ] || { echo "usage: $0 NEEDLE... -- COMMAND [ARG...]" >&2; exit 2; }
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
echo "--"
if [ $rc -ne 1 ]; then
    echo "expect_failure.sh: '$1' exited with $rc; expected 1 (problems found)" >&2
    exit 1
fi
status=0
printf '%s' "$needles" | while IFS= read -r needle; do
    if printf '%s\n' "$out" | grep -qF -- "$needle"; then
        echo "found: $needle"
    else
        echo "expect_failure.sh: the output does not contain: $needle" >&2
        exit 1
    fi
done || status=1
[ $status -eq 0 ] && echo "expect_failure.sh: all $n planted problems were reported"
exit $status
