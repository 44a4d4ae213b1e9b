#!/bin/sh
# sae-train-mpi --parallel grid --shards S (data-parallel groups of S feature
# shards): the command lines it refuses, each with exit status 2 on every
# rank and its message once (rank 0's).
# Usage: mpi_grid.sh BINDIR MPIEXEC [MPIEXEC FLAGS...]
. "$(dirname "$0")/lib.sh"
bin=$1
shift
MPIRUN="$*"
. "$(dirname "$0")/mpi_lib.sh"

# refused NP MESSAGE ARGS...: mpirun -np NP sae-train-mpi ARGS exits 2 and
# says MESSAGE exactly once
refused() {
    np=$1
    message=$2
    shift 2
    # shellcheck disable=SC2086
    run $MPIRUN -np "$np" "$bin/sae-train-mpi" "$@"
    if [ "$rc" -ne 2 ]; then
        fail "$*: exit $rc, want 2: $(cat "$tmp/err")"
    elif [ "$(grep -cF -- "sae-train-mpi: $message" "$tmp/err")" -ne 1 ]; then
        fail "$*: want '$message' once: $(cat "$tmp/err")"
    else
        echo "ok: $np ranks, $*: $message"
    fi
}

refused 2 "--parallel grid: needs --shards S, the feature shards of each data group" \
    --parallel grid
refused 2 "--shards 3: the 2 ranks do not split into groups of 3 shards (ranks = groups x shards)" \
    --parallel grid --shards 3
refused 2 "--shards: only with --parallel grid" --parallel features --shards 2
refused 2 "--shards: must be at least 1, got '0'" --parallel grid --shards 0
refused 2 "--parallel 'rows': data, features or grid" --parallel rows
refused 2 "--d-sae 1: grid on 2 shards needs a feature per shard" \
    --parallel grid --shards 2 --d-sae 1 --steps 1
refused 2 "--batch 1: grid on 2 groups needs at least one token per group" \
    --parallel grid --shards 1 --batch 1 --steps 1
finish
