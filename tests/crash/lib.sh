# What the crash tests share (sourced, POSIX sh): the tools' test helpers
# (tools/tests/lib.sh: a scratch directory $tmp removed on exit, fail,
# finish), the scratch directory on tmpfs when there is one (fsync is then
# free and the kills quick), and sig, a checksum of a checkpoint.
if [ -w /dev/shm ]; then
    TMPDIR=/dev/shm
    export TMPDIR
fi
. "$(dirname "$0")/../../tools/tests/lib.sh"

# sig DIR: a checksum of the checkpoint files in DIR, read through the path
# given (links included), train_state.txt but for its seconds; "missing" if
# one of them is
files="sae_weights.safetensors cfg.json optimizer.safetensors train_state.txt"
sig() {
    for f in $files; do [ -r "$1/$f" ] || { echo missing; return; }; done
    { cat "$1/sae_weights.safetensors" "$1/cfg.json" "$1/optimizer.safetensors"
      grep -v '^seconds ' "$1/train_state.txt"; } | cksum
}

# left DIR: DIR's entries, sorted, space-separated
left() {
    ls -A "$1" | tr '\n' ' '
}
