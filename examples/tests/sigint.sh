#!/bin/sh
# Ctrl-C: SIGINT to a running sae-train stops it after the current step with
# exit status 130; the log is complete up to that step and the model is still
# evaluated.
# Usage: sigint.sh BINDIR
. "$(dirname "$0")/lib.sh"
"$1/sae-train" --d-in 16 --synth-features 24 --synth-tokens 4096 --d-sae 32 --batch 32 \
    --steps 100000000 --log-every 1 --log "$tmp/log.csv" >"$tmp/out" 2>"$tmp/err" &
pid=$!
# Wait (up to 30 s) until training is under way: a few rows in the log.
tries=0
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
while [ "$(lines "$tmp/log.csv")" -lt 20 ] && [ $tries -lt 300 ]; do
    sleep 0.1
    tries=$((tries + 1))
done
kill -INT $pid
rc=0
wait $pid || rc=$?
[ "$rc" -eq 130 ] || fail "exit status $rc after SIGINT, want 130 (stderr: $(tail -n 2 "$tmp/err"))"
last=$(tail -n 1 "$tmp/log.csv")
step=$(printf '%s\n' "$last" | cut -d, -f1)
fields=$(printf '%s\n' "$last" | awk -F, '{ print NF }')
[ "$fields" -eq 9 ] || fail "last log row incomplete: '$last'"
tail -c 1 "$tmp/log.csv" | od -An -c | grep -q '\\n' || fail "log does not end with a newline"
rows=$(($(wc -l <"$tmp/log.csv") - 1))
echo "stopped after step $step ($rows rows)"
[ "$rows" -eq "$step" ] || fail "$rows rows for $step steps (log-every 1)"
grep -q "interrupted after step $step; log kept in $tmp/log.csv" "$tmp/err" ||
    fail "no interruption message for step $step: $(tail -n 1 "$tmp/err")"
grep -q "^trained $step steps" "$tmp/out" || fail "report: $(cat "$tmp/out")"
grep -q "^eval on held-out synthetic" "$tmp/out" || fail "no evaluation after the interruption"
finish
