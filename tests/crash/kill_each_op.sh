#!/bin/sh
# Crash safety of sae-train's checkpoint directories, deterministically: the
# save at step 20 (or 10) of a 30-step run is killed (SIGKILL, by the
# LD_PRELOAD shim kill_after_op.c) right after each of its file-system
# operations in turn -- every open for
# writing, write, fflush, fsync, fclose, mkdir, rename, symlink, link,
# unlink, rmdir -- and after each kill
#   - the directory reads (through DIR/<file>, as SAELens reads it, and
#     through DIR/current, as --resume does) as the complete checkpoint of
#     step 10 or the complete one of step 20, never a mixture;
#   - --resume DIR succeeds without help, and its run to step 30 ends with
#     files byte for byte those of an uninterrupted run, with nothing left
#     over in DIR (its save clears what the killed one left).
# Three cases: a save replacing a checkpoint, the first save into a flat
# checkpoint directory of an earlier sae-train (converted on the way), and
# the first save into a new directory (killed before its commit, there is
# no checkpoint yet: a new run with --save succeeds).
# Usage: kill_each_op.sh BINDIR SHIM.so
. "$(dirname "$0")/lib.sh"
train=$1/sae-train
shim=$2
small="--d-in 16 --synth-features 24 --synth-tokens 1000 --d-sae 32 --batch 64"

# checkpoints of steps 10 and 20 of a 30-step run, and the run uninterrupted
# shellcheck disable=SC2086
"$train" $small --steps 30 --stop-at 10 --save "$tmp/ref10" >/dev/null 2>&1 || fail "the step-10 reference"
cp -r "$tmp/ref10" "$tmp/ref20"
"$train" --resume "$tmp/ref20" --stop-at 20 >/dev/null 2>&1 || fail "the step-20 reference"
# shellcheck disable=SC2086
"$train" $small --steps 30 --checkpoint-every 10 --save "$tmp/straight" >/dev/null 2>&1 || fail "the straight run"

sig10=$(sig "$tmp/ref10") sig20=$(sig "$tmp/ref20") sig30=$(sig "$tmp/straight")
[ "$sig10" != "$sig20" ] && [ "$sig20" != "$sig30" ] || fail "the references are not distinct"

# view DIR: what a reader finds in DIR: "10", "20", "none" or "mixed"
# (through DIR/<file> as SAELens reads it, and through DIR/current)
view() {
    flat=$(sig "$1")
    current=$flat
    [ -e "$1/current" ] || [ -L "$1/current" ] && current=$(sig "$1/current")
    if [ "$flat" != "$current" ]; then
        echo mixed
    elif [ "$flat" = "$sig10" ]; then
        echo 10
    elif [ "$flat" = "$sig20" ]; then
        echo 20
    elif [ "$flat" = missing ]; then
        echo none
    else
        echo mixed
    fi
}

# finished DIR WHAT [OTHER]: DIR holds the uninterrupted run's checkpoint and
# nothing else (but the file OTHER)
finished() {
    [ "$(sig "$1")" = "$sig30" ] || fail "$2: the resumed run's files differ from the uninterrupted run's"
    gen=$(readlink "$1/current")
    want="cfg.json current $gen ${3:+$3 }optimizer.safetensors sae_weights.safetensors train_state.txt "
    [ "$(left "$1")" = "$want" ] || fail "$2: left $(left "$1")"
}

kills=0 resumed=0 identical=0 fresh=0

# case NAME PREPARE KEEP CMD...: run CMD under the shim once to count the
# operations it makes in $tmp/d (prepared by PREPARE), then once per
# operation N, killed after it; check the view, resume, check the end.
case_() {
    name=$1 prepare=$2 keep=$3
    shift 3
    rm -rf "$tmp/d" "$tmp/log"
    $prepare
    SAE_CRASH_DIR="$tmp/d" SAE_CRASH_LOG="$tmp/log" LD_PRELOAD="$shim" "$@" >/dev/null 2>&1 ||
        fail "$name: the run under the shim failed"
    ops=$(wc -l <"$tmp/log")
    [ "$ops" -gt 20 ] || fail "$name: only $ops operations counted (is the shim preloaded?)"
    awk '{ print $2 }' "$tmp/log" | sort | uniq -c | tr -s ' \n' '  ' >"$tmp/kinds"
    echo "$name: $ops operations ($(cat "$tmp/kinds"))"
    n=1
    while [ "$n" -le "$ops" ]; do
        rm -rf "$tmp/d"
        $prepare
        rc=0
        SAE_CRASH_DIR="$tmp/d" SAE_CRASH_AT=$n LD_PRELOAD="$shim" "$@" >/dev/null 2>"$tmp/err" || rc=$?
        kills=$((kills + 1))
        [ "$rc" -eq 137 ] || fail "$name: op $n ($(sed -n "${n}p" "$tmp/log" | cut -d' ' -f2)): exit $rc, not killed"
        v=$(view "$tmp/d")
        case $v in
        10 | 20) ;;
        none) [ "$name" = fresh ] || fail "$name: after op $n: no checkpoint" ;;
        *) fail "$name: after op $n ($(sed -n "${n}p" "$tmp/log" | cut -d' ' -f2,3)): DIR reads as $v" ;;
        esac
        if [ "$v" = none ]; then # nothing was committed: a new run starts over
            # shellcheck disable=SC2086
            "$train" $small --steps 30 --stop-at 10 --save "$tmp/d" >/dev/null 2>"$tmp/err" ||
                fail "$name: after op $n: a new --save failed: $(cat "$tmp/err")"
            fresh=$((fresh + 1))
        fi
        if "$train" --resume "$tmp/d" >/dev/null 2>"$tmp/err"; then
            [ "$v" = none ] || resumed=$((resumed + 1))
            before=$failures
            finished "$tmp/d" "$name, op $n" "$keep"
            [ "$failures" -eq "$before" ] && identical=$((identical + 1))
        else
            fail "$name: after op $n: --resume failed: $(cat "$tmp/err")"
        fi
        n=$((n + 1))
    done
}

replace() { cp -r "$tmp/ref10" "$tmp/d"; }
flat() { # sae-train's flat files, a note of the user's and a stale .saving- directory
    mkdir "$tmp/d" "$tmp/d/.saving-Ab3dEf"
    for f in $files; do cp "$tmp/ref10/$f" "$tmp/d/$f"; done
    echo partial >"$tmp/d/.saving-Ab3dEf/optimizer.safetensors"
    echo mine >"$tmp/d/notes.txt"
}
nothing() { :; }

case_ replace replace "" "$train" --resume "$tmp/d" --stop-at 20
case_ flat flat notes.txt "$train" --resume "$tmp/d" --stop-at 20
# shellcheck disable=SC2086
case_ fresh nothing "" "$train" $small --steps 30 --stop-at 10 --save "$tmp/d"

echo "kills: $kills, resumed from a checkpoint: $resumed, started over (nothing committed yet): $fresh, byte-identical at the end: $identical"
[ "$identical" -eq "$kills" ] || fail "$((kills - identical)) of $kills kills did not end byte-identical"
finish
