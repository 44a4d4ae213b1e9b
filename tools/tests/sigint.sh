#!/bin/sh
# Ctrl-C: SIGINT to a running sae-train stops it after the current step with
# exit status 130; the log is complete up to that step, the model is still
# evaluated and saved (--save), and resuming from that checkpoint gives the
# model of a run that was never interrupted.
# Usage: sigint.sh BINDIR
. "$(dirname "$0")/lib.sh"
small="--d-in 16 --synth-features 24 --synth-tokens 4096 --d-sae 32 --batch 32"
# shellcheck disable=SC2086
"$1/sae-train" $small --steps 100000000 --log-every 1 --log "$tmp/log.csv" --save "$tmp/ck" \
    >"$tmp/out" 2>"$tmp/err" &
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
[ "$fields" -eq 14 ] || fail "last log row incomplete: '$last'"
[ "$(printf '%s\n' "$last" | cut -d, -f10)" = 1 ] || fail "the last row does not mark the checkpoint"
tail -c 1 "$tmp/log.csv" | od -An -c | grep -q '\\n' || fail "log does not end with a newline"
rows=$(($(wc -l <"$tmp/log.csv") - 1))
echo "stopped after step $step ($rows rows)"
[ "$rows" -eq "$step" ] || fail "$rows rows for $step steps (log-every 1)"
grep -q "interrupted after step $step; log kept in $tmp/log.csv; checkpoint in $tmp/ck" "$tmp/err" ||
    fail "no interruption message for step $step: $(tail -n 1 "$tmp/err")"
grep -q "^trained $step steps" "$tmp/out" || fail "report: $(cat "$tmp/out")"
grep -q "^eval on held-out synthetic" "$tmp/out" || fail "no evaluation after the interruption"
grep -qx "step $step" "$tmp/ck/train_state.txt" || fail "checkpoint: $(grep '^step' "$tmp/ck/train_state.txt")"

# Resume for 7 more steps: the model of $step + 7 uninterrupted steps.
run "$1/sae-train" --resume "$tmp/ck" --steps $((step + 7)) --log "$tmp/log.csv"
[ "$rc" -eq 0 ] || fail "resume: exit $rc: $(cat "$tmp/err")"
# shellcheck disable=SC2086
run "$1/sae-train" $small --steps $((step + 7)) --save "$tmp/straight"
[ "$rc" -eq 0 ] || fail "uninterrupted run: exit $rc: $(cat "$tmp/err")"
for f in sae_weights.safetensors optimizer.safetensors; do
    cmp -s "$tmp/ck/$f" "$tmp/straight/$f" || fail "$f: interrupted and resumed differs from uninterrupted"
done
rows=$(($(wc -l <"$tmp/log.csv") - 1))
[ "$rows" -eq $((step + 7)) ] || fail "$rows rows after resuming, want $((step + 7))"
finish
