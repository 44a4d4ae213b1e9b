/*
 * Checkpoints of sae-train and sae-sweep: a checkpoint directory of the
 * library (sae_checkpoint_begin / _commit / _current: DIR/gen-<n>/ holds a
 * complete checkpoint, DIR/current points to it and changes in one rename,
 * DIR/<file> are links through current, so SAELens opens DIR as it is). A
 * generation holds
 *   sae_weights.safetensors, cfg.json  the model (sae_model_save)
 *   optimizer.safetensors               Adam moments, step count, options
 *                                       (sae_optimizer_save)
 *   train_weights.safetensors           with --normalize only: the model as
 *                                       trained, on s x (see below)
 *   train_state.txt                     what else resuming needs (run_state.h)
 *
 * --normalize: the model trains on s x. The model in sae_weights.safetensors
 * is a copy (sae_model_clone) with s folded in (sae_model_fold_input_scale),
 * which takes raw activations, as SAELens expects ("normalize_activations":
 * "none"). The Adam moments refer to the unfolded weights, and unfolding
 * (folding with 1 / s) would round, so the run's own model goes to
 * train_weights.safetensors (a single safetensors file) and s to
 * train_state.txt: --resume loads that file, not sae_weights.safetensors,
 * and goes on bit for bit.
 *
 * A crash at any moment of a save leaves the previous checkpoint current and
 * whole, or the new one; a save that fails (a full disk) removes its
 * staging directory and leaves DIR as it was. Checkpoint directories of
 * sae-train from before (flat files in DIR) still resume, and the first save
 * into one converts it.
 */
#ifndef TOOL_CHECKPOINT_H
#define TOOL_CHECKPOINT_H

#include "run_state.h"

#include <libsae/sae.h>
#include <stddef.h>

/* Make sure dir is a directory we can write in, creating it (one level, like
 * mkdir) when missing. Exits 2 with "<program>: <opt> '<dir>': <problem>"
 * otherwise (e.g. the parent directory does not exist). */
void tool_checkpoint_prepare(const char *opt, const char *dir);

/* Write a checkpoint of m, o and s as dir's new generation (with
 * s->normalize: the folded copy, and m as train_weights). Returns SAE_OK or
 * the status of the failing step; err gets a one-line description naming
 * the file. On failure dir is as it was. */
int tool_checkpoint_save(const char *dir, const sae_model *m, const sae_optimizer *o,
                         const tool_run_state *s, char *err, size_t errlen);

/* The same, collectively (sae-train-mpi): every rank of `all` (the run's
 * ranks) calls it with its model and optimizer (whole replicas or shards,
 * the optimizer's communicators attached) and the same state. Rank 0 of all
 * stages and commits the generation and writes train_state.txt; the model's
 * and optimizer's files are written by sae_checkpoint_save_collective
 * through the optimizer's communicators (each rank its slices; on a 2-D grid
 * data group 0's shards), and with --normalize train_weights by
 * sae_model_save_collective over `writers`: the communicator of the ranks
 * that write the model's slices (all of them in one mode, a grid's group 0),
 * NULL on the ranks that write nothing (a grid's other groups). dir must be
 * on a file system every rank sees. Every rank returns the same status; err
 * (on rank 0 at least) says what failed. */
int tool_checkpoint_save_collective(const char *dir, const sae_model *m, const sae_optimizer *o,
                                    const tool_run_state *s, const sae_comm *all,
                                    const sae_comm *writers, char *err, size_t errlen);

/* Load dir's current checkpoint: the model as trained
 * (train_weights.safetensors of a --normalize run, else
 * sae_weights.safetensors), the optimizer and the state. On any problem (a
 * missing directory or file, a corrupt or inconsistent checkpoint, a model
 * whose architecture is not the state's) exits 2 with one line naming the
 * file and the problem. */
void tool_checkpoint_load(const char *dir, sae_model **m, sae_optimizer **o, tool_run_state *s);

/* The same for shard `shard` of n_shards (sae-train-mpi --parallel
 * features): its slice (sae_shard_range) of the checkpoint's model and
 * optimizer, whatever number of shards wrote it. n_shards 0: the whole. */
void tool_checkpoint_load_shard(const char *dir, int n_shards, int shard, sae_model **m,
                                sae_optimizer **o, tool_run_state *s);

#endif
