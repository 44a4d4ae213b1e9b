#!/bin/sh
# On an easy synthetic set sae-train finds the true features: MMCS > 0.9.
# Usage: mmcs.sh BINDIR
. "$(dirname "$0")/lib.sh"
run "$1/sae-train" --d-in 32 --synth-features 32 --synth-active 2 --synth-tokens 16384 \
    --d-sae 96 --lambda 0.1 --lr 3e-3 --steps 1000 --batch 128
[ "$rc" -eq 0 ] || fail "sae-train exit $rc: $(cat "$tmp/err")"
cat "$tmp/out"
mmcs=$(sed -n 's/^ground truth: mmcs \([0-9.]*\) .*/\1/p' "$tmp/out")
[ -n "$mmcs" ] || fail "no MMCS in the report"
awk -v m="${mmcs:-0}" 'BEGIN { exit !(m > 0.9) }' || fail "MMCS $mmcs is not above 0.9"
grep -q "^eval on held-out synthetic (8192 tokens): l2 " "$tmp/out" || fail "no eval line"
finish
