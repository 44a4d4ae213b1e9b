#!/bin/sh
# Crash safety of sae-train's checkpoint directories, at random moments:
# sae-train --save DIR --checkpoint-every N is killed with SIGKILL at a
# random moment, KILLS times (default 30), each time started again with
# --resume DIR. After every kill
#   - DIR reads the same through DIR/<file> (as SAELens reads it) and through
#     DIR/current, and --resume DIR --info loads it (once the first
#     checkpoint exists);
# and at the end the resumed run, finished, has byte for byte the files of
# an uninterrupted run, with nothing left over in DIR. A run that ends before
# its kill (on a fast machine) is checked the same way and the next one
# starts from scratch.
#
#   tests/crash/kill_loop.sh build/tools [KILLS] [SECONDS]
#
# SECONDS (default 120) bounds the loop; SAE_KILL_SEED fixes the random
# moments (default: from the clock; printed, to repeat a run).
. "$(dirname "$0")/lib.sh"
train=$1/sae-train
kills_wanted=${2:-30}
seconds=${3:-120}
seed=${SAE_KILL_SEED:-$(date +%s)}
# small and frequent: a save every 2 steps, so that many kills land in one
args="--d-in 16 --synth-features 24 --synth-tokens 4096 --d-sae 64 --batch 32 --steps 3000 --checkpoint-every 2"

# shellcheck disable=SC2086
"$train" $args --save "$tmp/straight" >/dev/null 2>&1 || fail "the uninterrupted run"

# A finished run in DIR: byte for byte the uninterrupted run's files, and
# nothing left over.
check_finished() {
    [ "$(sig "$tmp/d")" = "$(sig "$tmp/straight")" ] ||
        { fail "$1: the resumed run's files differ from the uninterrupted run's"; return 1; }
    gen=$(readlink "$tmp/d/current")
    [ "$(left "$tmp/d")" = "cfg.json current $gen optimizer.safetensors sae_weights.safetensors train_state.txt " ] ||
        { fail "$1: left over in DIR: $(left "$tmp/d")"; return 1; }
}

# the random delays, in ms: 20 to 400 (sae-train takes some 20 ms to start)
# (four per kill wanted: on a fast machine, runs end between kills)
awk -v seed="$seed" -v n="$((4 * kills_wanted))" 'BEGIN { srand(seed); for (i = 0; i < n; i++) printf "%d\n", 20 + 380 * rand() }' >"$tmp/delays"
echo "seed $seed"
start=$(date +%s)
kills=0 loaded=0 consistent=0 before_first=0 finished=0
while read -r ms; do
    [ "$kills" -lt "$kills_wanted" ] && [ $(($(date +%s) - start)) -lt "$seconds" ] || break
    if [ -e "$tmp/d/current" ]; then
        "$train" --resume "$tmp/d" >/dev/null 2>"$tmp/err" &
    else # (killed before its first checkpoint: it starts over)
        # shellcheck disable=SC2086
        "$train" $args --save "$tmp/d" >/dev/null 2>"$tmp/err" &
    fi
    pid=$!
    sleep "$(awk -v ms="$ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    kill -KILL "$pid" 2>/dev/null
    rc=0
    { wait "$pid"; } 2>/dev/null || rc=$? # (no "Killed" notice)
    if [ "$rc" -eq 0 ]; then
        # the run ended before this kill (a fast machine): check it, and start
        # the next run from scratch
        finished=$((finished + 1))
        check_finished "run $finished, finished after $kills kills" || break
        rm -rf "$tmp/d"
        continue
    fi
    if [ "$rc" -ne 137 ]; then
        fail "kill $((kills + 1)): sae-train exited $rc: $(tail -n 1 "$tmp/err")"
        break
    fi
    kills=$((kills + 1))
    if [ ! -e "$tmp/d/current" ]; then
        before_first=$((before_first + 1))
        continue
    fi
    [ "$(sig "$tmp/d")" = "$(sig "$tmp/d/current")" ] && consistent=$((consistent + 1)) ||
        fail "kill $kills: DIR/<file> and DIR/current differ"
    if "$train" --resume "$tmp/d" --info >/dev/null 2>"$tmp/err"; then
        loaded=$((loaded + 1))
    else
        fail "kill $kills: --resume cannot load it: $(cat "$tmp/err")"
    fi
done <"$tmp/delays"

# the last resume, to the end
if [ ! -e "$tmp/d/current" ]; then
    identical=0 # (the loop ended on a finished run, or before any checkpoint)
    [ "$finished" -gt 0 ] || fail "no checkpoint was ever written"
elif "$train" --resume "$tmp/d" >/dev/null 2>"$tmp/err"; then
    identical=0
    check_finished "the last run" && identical=1
else
    identical=0
    fail "the last --resume failed: $(cat "$tmp/err")"
fi
echo "kills: $kills ($before_first before the first checkpoint), resumable after the kill: $loaded" \
     "(DIR/<file> = DIR/current: $consistent), runs that ended between kills: $finished" \
     "(each byte-identical), last run finished byte-identical: $identical," \
     "$(($(date +%s) - start)) s"
[ "$kills" -ge "$kills_wanted" ] || fail "only $kills of $kills_wanted kills in $seconds s"
finish
