#!/bin/sh
# sae-train's checkpoints: --save, --checkpoint-every and --resume. N steps,
# a save and N more steps in a new process give byte for byte the checkpoint
# (and, but for the seconds column, the log) of 2N uninterrupted steps, on
# synthetic data and on a file; settings come from the checkpoint unless
# given; a contradicting option, a corrupt, mixed or missing checkpoint is
# one line on stderr and exit status 2, with the checkpoint left as it was.
# Usage: resume.sh BINDIR
. "$(dirname "$0")/lib.sh"
train=$1/sae-train
# 1000 rows in batches of 64: the runs cross epochs, and step 40 falls mid-epoch.
small="--d-in 16 --synth-features 24 --synth-tokens 1000 --d-sae 32 --batch 64 --log-every 10"

# same_checkpoint A B: the two checkpoint directories hold the same files
same_checkpoint() {
    for f in sae_weights.safetensors cfg.json optimizer.safetensors; do
        cmp -s "$1/$f" "$2/$f" || fail "$3: $f differs between $1 and $2"
    done
}

# --- save at 40, resume to 80 == 80 uninterrupted -----------------------------
# shellcheck disable=SC2086
run "$train" $small --steps 80 --save "$tmp/full" --checkpoint-every 40 --log "$tmp/full.csv"
[ "$rc" -eq 0 ] || fail "80 steps: exit $rc: $(cat "$tmp/err")"
grep -qx "checkpoint at step 40: $tmp/full" "$tmp/err" || fail "no note of the checkpoint at step 40"
grep -q "checkpoint at step 80" "$tmp/err" && fail "the final checkpoint is noted as a periodic one"
grep -qx "checkpoint: $tmp/full (step 80; continue with --resume $tmp/full)" "$tmp/out" ||
    fail "80 steps: no checkpoint line: $(cat "$tmp/out")"
# shellcheck disable=SC2086
run "$train" $small --steps 40 --save "$tmp/half" --log "$tmp/half.csv"
[ "$rc" -eq 0 ] || fail "40 steps: exit $rc: $(cat "$tmp/err")"
grep -qx "step 40" "$tmp/half/train_state.txt" || fail "train_state.txt: $(cat "$tmp/half/train_state.txt")"
cp -r "$tmp/half" "$tmp/half40"
run "$train" --resume "$tmp/half" --steps 80 --log "$tmp/half.csv"
[ "$rc" -eq 0 ] || fail "resume: exit $rc: $(cat "$tmp/err")"
grep -q "^trained 40 steps (2560 tokens) in [0-9.]* s, from step 40 to 80$" "$tmp/out" ||
    fail "resume: report $(head -n 1 "$tmp/out")"
grep -q "^resuming $tmp/half at step 40 of 80$" "$tmp/err" || fail "resume: $(head -n 1 "$tmp/err")"
same_checkpoint "$tmp/full" "$tmp/half" "save at 40 and resume to 80"
grep -qx "step 80" "$tmp/half/train_state.txt" || fail "resumed train_state.txt: not at step 80"
# The appended log: one header, the rows of the uninterrupted run.
[ "$(grep -c '^step,' "$tmp/half.csv")" -eq 1 ] || fail "the resumed log has $(grep -c '^step,' "$tmp/half.csv") headers"
steps=$(tail -n +2 "$tmp/half.csv" | cut -d, -f1 | tr '\n' ' ')
[ "$steps" = "1 2 5 10 20 30 40 50 60 70 80 " ] || fail "resumed log steps '$steps'"
cut -d, -f1,2,4- "$tmp/full.csv" >"$tmp/full.cols"
cut -d, -f1,2,4- "$tmp/half.csv" >"$tmp/half.cols"
cmp -s "$tmp/full.cols" "$tmp/half.cols" || fail "the resumed log differs from the uninterrupted one: $(diff "$tmp/full.cols" "$tmp/half.cols")"
# The checkpoint column: 1 after steps 40 and 80 only (the header is checked above).
marks=$(awk -F, 'NR > 1 && $10 == 1 { printf "%s ", $1 }' "$tmp/full.csv")
[ "$marks" = "40 80 " ] || fail "checkpoint column set at steps '$marks', want '40 80 '"

# --- --checkpoint-every: the files, a row per checkpoint ----------------------
# shellcheck disable=SC2086
run "$train" $small --steps 25 --log-every 100 --checkpoint-every 10 --save "$tmp/every" --log "$tmp/every.csv"
[ "$rc" -eq 0 ] || fail "--checkpoint-every: exit $rc: $(cat "$tmp/err")"
for f in sae_weights.safetensors cfg.json optimizer.safetensors train_state.txt; do
    [ -s "$tmp/every/$f" ] || fail "--checkpoint-every: no $f"
done
# the layout: three generations written, the last current, the files as links through it
[ "$(ls -A "$tmp/every" | tr '\n' ' ')" = "cfg.json current gen-3 optimizer.safetensors sae_weights.safetensors train_state.txt " ] ||
    fail "--checkpoint-every: the directory holds $(ls -A "$tmp/every" | tr '\n' ' ')"
[ "$(readlink "$tmp/every/current")" = gen-3 ] || fail "--checkpoint-every: current -> $(readlink "$tmp/every/current")"
for f in sae_weights.safetensors cfg.json optimizer.safetensors train_state.txt; do
    [ "$(readlink "$tmp/every/$f")" = "current/$f" ] || fail "--checkpoint-every: $f -> $(readlink "$tmp/every/$f")"
done
rows=$(tail -n +2 "$tmp/every.csv" | cut -d, -f1,10 | tr '\n' ' ')
[ "$rows" = "1,0 2,0 5,0 10,1 20,1 25,1 " ] || fail "--checkpoint-every 10: rows (step,checkpoint) '$rows'"
grep -q "checkpoint at step 10: $tmp/every" "$tmp/err" && grep -q "checkpoint at step 20: $tmp/every" "$tmp/err" ||
    fail "--checkpoint-every: no notes in $(cat "$tmp/err")"
grep -q '"d_sae": *32' "$tmp/every/cfg.json" || fail "cfg.json: $(cat "$tmp/every/cfg.json")"

# --- settings: from the checkpoint unless given ------------------------------
# shellcheck disable=SC2086
run "$train" $small --steps 10 --batch 32 --lr 2e-3 --lambda 0.1 --clip 0.5 --save "$tmp/hp"
[ "$rc" -eq 0 ] || fail "hp: exit $rc"
run "$train" --resume "$tmp/hp" --steps 12
grep -q "d_sae 32, relu, lambda 0.1, lr 0.002, batch 32, 12 steps" "$tmp/err" ||
    fail "settings not taken from the checkpoint: $(cat "$tmp/err")"
run "$train" --resume "$tmp/hp" --steps 14 --lr 1e-3 --lambda 0.2 --batch 64
grep -q "lambda 0.2, lr 0.001, batch 64, 14 steps" "$tmp/err" || fail "explicit settings: $(cat "$tmp/err")"
grep -qx "batch 64" "$tmp/hp/train_state.txt" || fail "the new batch is not recorded"
run "$train" --resume "$tmp/hp" --steps 15
grep -q "lambda 0.2, lr 0.001, batch 64, 15 steps" "$tmp/err" || fail "settings did not stick: $(cat "$tmp/err")"
# --tokens is the total too: 12 x 32 + 3 x 64 = 576 so far; 600 needs one more step.
run "$train" --resume "$tmp/hp" --tokens 600
grep -q "^trained 1 steps (64 tokens)" "$tmp/out" || fail "--tokens 600: $(head -n 1 "$tmp/out")"
# Without --steps, the checkpointed run's own total: nothing left to do.
run "$train" --resume "$tmp/full"
[ "$rc" -eq 0 ] && grep -qx "nothing to train: already at step 80 of 80" "$tmp/out" ||
    fail "resume at the end: exit $rc: $(cat "$tmp/out" "$tmp/err")"
grep -q "^eval on held-out synthetic" "$tmp/out" || fail "resume at the end: no evaluation"
same_checkpoint "$tmp/full" "$tmp/half" "a resume with nothing to do"
# --save elsewhere leaves the resumed checkpoint alone.
run "$train" --resume "$tmp/half40" --steps 80 --save "$tmp/moved"
same_checkpoint "$tmp/full" "$tmp/moved" "resume into another directory"
grep -qx "step 40" "$tmp/half40/train_state.txt" || fail "--save DIR: the resumed checkpoint changed"

# --- a file, recorded and found again ----------------------------------------
raw_f32 "$tmp/acts.f32" 500 8
raw_f32 "$tmp/other.f32" 400 8
file="--d-in 8 --d-sae 16 --batch 32 --lr 3e-3"
# shellcheck disable=SC2086
run "$train" "$tmp/acts.f32" $file --steps 60 --save "$tmp/ffull"
[ "$rc" -eq 0 ] || fail "file, 60 steps: exit $rc: $(cat "$tmp/err")"
# shellcheck disable=SC2086
run "$train" "$tmp/acts.f32" $file --steps 25 --save "$tmp/fhalf"
run "$train" --resume "$tmp/fhalf" --steps 60
[ "$rc" -eq 0 ] || fail "file, resume: exit $rc: $(cat "$tmp/err")"
grep -q "^training on $tmp/acts.f32: 500 x 8 (raw float32)" "$tmp/err" || fail "file, resume: $(cat "$tmp/err")"
same_checkpoint "$tmp/ffull" "$tmp/fhalf" "a file: save at 25 and resume to 60"
# A moved copy of the file is fine, and recorded for the next resume.
mv "$tmp/acts.f32" "$tmp/moved.f32"
run "$train" "$tmp/moved.f32" --resume "$tmp/fhalf" --steps 61
[ "$rc" -eq 0 ] || fail "a moved file: exit $rc: $(cat "$tmp/err")"
grep -qx "input $tmp/moved.f32" "$tmp/fhalf/train_state.txt" || fail "the moved file is not recorded"
mv "$tmp/moved.f32" "$tmp/acts.f32"
expect_usage_error "--resume '$tmp/fhalf': $tmp/other.f32 has 400 x 8 floats, the checkpoint was trained on 500 x 8" \
    "$train" "$tmp/other.f32" --resume "$tmp/fhalf" --steps 70
expect_usage_error "--resume '$tmp/full': the checkpoint was trained on synthetic data, not on '$tmp/acts.f32'" \
    "$train" "$tmp/acts.f32" --resume "$tmp/full" --steps 90

# --- options that contradict the checkpoint ----------------------------------
expect_usage_error "--d-sae 64: the checkpoint in '$tmp/full' has 32" "$train" --resume "$tmp/full" --d-sae 64 --steps 90
expect_usage_error "--d-in 8: the checkpoint in '$tmp/full' has 16" "$train" --resume "$tmp/full" --d-in 8 --steps 90
expect_usage_error "--seed 2: the checkpoint in '$tmp/full' has 1" "$train" --resume "$tmp/full" --seed 2 --steps 90
expect_usage_error "--synth-tokens 2000: the checkpoint in '$tmp/full' has 1000" "$train" --resume "$tmp/full" --synth-tokens 2000
expect_usage_error "--steps 50: the checkpoint in '$tmp/full' is already at step 80" "$train" --resume "$tmp/full" --steps 50
expect_usage_error "--tokens 100: the checkpoint in '$tmp/full' has already trained on 5120" "$train" --resume "$tmp/full" --tokens 100

# --- missing, corrupt and mixed checkpoints: exit 2, one line, nothing changed --
expect_usage_error "--resume '$tmp/nowhere': No such file or directory" "$train" --resume "$tmp/nowhere"
expect_usage_error "--resume '$tmp/acts.f32': not a directory" "$train" --resume "$tmp/acts.f32"
# bad: a fresh copy of the 40-step checkpoint in $tmp/bad, to damage
bad() {
    rm -rf "$tmp/bad" "$tmp/bad.before"
    cp -r "$tmp/half40" "$tmp/bad"
}
# damaged WHAT NEEDLE: resuming from $tmp/bad fails with NEEDLE, changing nothing
damaged() {
    cp -r "$tmp/bad" "$tmp/bad.before"
    expect_usage_error "$2" "$train" --resume "$tmp/bad" --steps 50
    diff -r --no-dereference "$tmp/bad" "$tmp/bad.before" >/dev/null || fail "$1: the checkpoint changed"
}
# (the files are damaged in the current generation, gen-1, through the links)
[ "$(readlink "$tmp/half40/current")" = gen-1 ] || fail "half40: current -> $(readlink "$tmp/half40/current")"
bad; head -c 300 "$tmp/half40/sae_weights.safetensors" >"$tmp/bad/sae_weights.safetensors"
damaged "truncated weights" "$tmp/bad/gen-1/sae_weights.safetensors: malformed or unsupported file or buffer"
bad; head -c 1000 "$tmp/half40/optimizer.safetensors" >"$tmp/bad/optimizer.safetensors"
damaged "truncated optimizer" "$tmp/bad/gen-1/optimizer.safetensors: malformed or unsupported file or buffer"
bad; rm "$tmp/bad/current/optimizer.safetensors"
damaged "no optimizer" "$tmp/bad/gen-1/optimizer.safetensors: input/output error"
bad; head -c 100 "$tmp/half40/train_state.txt" >"$tmp/bad/train_state.txt"
damaged "truncated state" "$tmp/bad/gen-1/train_state.txt: truncated (no end line)"
bad; rm "$tmp/bad/current/train_state.txt"
damaged "no state" "$tmp/bad/gen-1/train_state.txt: No such file or directory"
bad; cp "$tmp/full/optimizer.safetensors" "$tmp/bad/"
damaged "an optimizer from another step" \
    "the optimizer is at step 80 but train_state.txt at step 40 (files of two checkpoints?)"
bad; cp "$tmp/ffull/optimizer.safetensors" "$tmp/bad/"
damaged "an optimizer for another shape" \
    "$tmp/bad/gen-1/optimizer.safetensors: made for another model shape than sae_weights.safetensors"
bad; rm "$tmp/bad/current"
damaged "no current generation" "--resume '$tmp/bad': input/output error"
bad; rm -r "$tmp/bad/gen-1"
damaged "a current generation that is gone" "--resume '$tmp/bad': input/output error"

# --- a save that fails leaves the previous checkpoint whole -------------------
# A file size limit (here 7168 bytes, as a full disk would) lets the weights
# (about 5 kB) be written but not the optimizer (about 10 kB): exit 1, one line
# naming the file, and the 40-step checkpoint as it was, still resumable.
cp -r "$tmp/half40" "$tmp/limited"
rc=0
(trap '' XFSZ; ulimit -f 14 && exec "$train" --resume "$tmp/limited" --steps 50) >"$tmp/out" 2>"$tmp/err" || rc=$?
[ "$rc" -eq 1 ] || fail "a failed save: exit $rc, want 1: $(cat "$tmp/err")"
grep -q "^sae-train: step 50: checkpoint: $tmp/limited/gen-2/optimizer.safetensors: input/output error" "$tmp/err" ||
    fail "a failed save: $(tail -n 1 "$tmp/err")"
diff -r --no-dereference "$tmp/limited" "$tmp/half40" >/dev/null || fail "a failed save changed the checkpoint: $(ls -a "$tmp/limited")"
run "$train" --resume "$tmp/limited" --steps 80
same_checkpoint "$tmp/full" "$tmp/limited" "resume after a failed save"

# --- checkpoints of sae-train before checkpoint directories: flat files ----
# still resume, byte for byte, and the next save converts the directory;
# staging directories such a sae-train left behind are removed.
mkdir "$tmp/flat"
for f in sae_weights.safetensors cfg.json optimizer.safetensors train_state.txt; do
    cp "$tmp/half40/$f" "$tmp/flat/$f" # (through the links: plain files)
done
mkdir "$tmp/flat/.saving-Ab3dEf" && echo partial >"$tmp/flat/.saving-Ab3dEf/optimizer.safetensors"
# (format 2: an earlier sae-train's state, whose batches came from another generator)
sed -i 's/^format 3$/format 2/' "$tmp/flat/train_state.txt"
echo "my notes" >"$tmp/flat/notes.txt"
run "$train" --resume "$tmp/flat" --steps 80
[ "$rc" -eq 0 ] || fail "flat checkpoint: exit $rc: $(cat "$tmp/err")"
grep -q "^sae-train: note: $tmp/flat/train_state.txt was written by an earlier sae-train" "$tmp/err" ||
    fail "flat checkpoint of format 2: no note: $(cat "$tmp/err")"
same_checkpoint "$tmp/full" "$tmp/flat" "a flat checkpoint resumed to 80"
[ "$(ls -A "$tmp/flat" | tr '\n' ' ')" = "cfg.json current gen-1 notes.txt optimizer.safetensors sae_weights.safetensors train_state.txt " ] ||
    fail "flat checkpoint: converted to $(ls -A "$tmp/flat" | tr '\n' ' ')"
[ "$(readlink "$tmp/flat/sae_weights.safetensors")" = current/sae_weights.safetensors ] || fail "flat: not converted"
[ "$(cat "$tmp/flat/notes.txt")" = "my notes" ] || fail "flat: notes.txt changed"

# --- --save and --log problems, before any training --------------------------
expect_usage_error "--save '$tmp/no/ck': the parent directory does not exist" "$train" --save "$tmp/no/ck"
expect_usage_error "--save '$tmp/acts.f32': exists and is not a directory" "$train" --save "$tmp/acts.f32"
expect_usage_error "--checkpoint-every: give --save DIR" "$train" --checkpoint-every 10
echo "a,b" >"$tmp/foreign.csv"
expect_usage_error "--log '$tmp/foreign.csv': exists and does not start with the header" \
    "$train" --resume "$tmp/half40" --steps 50 --log "$tmp/foreign.csv"
printf 'step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac,checkpoint,lr_t,lambda_t,fvu,resampled\n1,64,0.1,1,1' >"$tmp/partial.csv"
expect_usage_error "--log '$tmp/partial.csv': its last row is incomplete" \
    "$train" --resume "$tmp/half40" --steps 50 --log "$tmp/partial.csv"
grep -qx "step 40" "$tmp/half40/train_state.txt" || fail "a refused resume changed the checkpoint"
# A new or an empty log gets the header, then the resumed rows.
: >"$tmp/empty.csv"
for log in "$tmp/new.csv" "$tmp/empty.csv"; do
    run "$train" --resume "$tmp/half40" --steps 50 --save "$tmp/logs" --log "$log"
    [ "$rc" -eq 0 ] || fail "$log: exit $rc: $(cat "$tmp/err")"
    [ "$(cut -d, -f1 "$log" | tr '\n' ' ')" = "step 50 " ] || fail "$log: $(cat "$log")"
done
# A log that went on past the checkpoint (the run was killed later): a note, then the rows.
cp "$tmp/full.csv" "$tmp/past.csv"
run "$train" --resume "$tmp/half40" --steps 50 --save "$tmp/past" --log "$tmp/past.csv"
[ "$rc" -eq 0 ] || fail "a log past the checkpoint: exit $rc"
grep -q "note: --log '$tmp/past.csv' goes on to step 80, past the checkpoint's step 40" "$tmp/err" ||
    fail "a log past the checkpoint: $(cat "$tmp/err")"
[ "$(tail -n 1 "$tmp/past.csv" | cut -d, -f1)" = 50 ] || fail "a log past the checkpoint: no new rows"
finish
