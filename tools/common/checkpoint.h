/*
 * Checkpoint directories of sae-train and sae-sweep. A checkpoint DIR holds
 *   sae_weights.safetensors, cfg.json  the model (sae_model_save: SAELens opens
 *                                       DIR with SAE.load_from_disk)
 *   optimizer.safetensors               Adam moments, step count, options
 *                                       (sae_optimizer_save)
 *   train_weights.safetensors           with --normalize only: the model as
 *                                       trained, on s x (see below)
 *   train_state.txt                     what else resuming needs (below)
 *
 * --normalize: the model trains on s x. The model in sae_weights.safetensors
 * is a copy with s folded in (sae_model_fold_input_scale), which takes raw
 * activations, as SAELens expects ("normalize_activations": "none"). The Adam
 * moments refer to the unfolded weights, and unfolding (folding with 1 / s)
 * would round, so the run's own model goes to train_weights.safetensors (a
 * single safetensors file) and s to train_state.txt: --resume loads that
 * file, not sae_weights.safetensors, and goes on bit for bit. The exported
 * copy gets s exactly as sae_model_fold_input_scale computes it (JumpReLU
 * thresholds, which the fold leaves alone, up to a float rounding: see
 * tool_model_copy).
 *
 * A save writes all of them into a new directory inside DIR (".saving-" and 6
 * characters; the library writes each file atomically and fsyncs it), and
 * only then renames them into DIR, optimizer first and state last: a save
 * that fails (a full disk) leaves the previous checkpoint whole, and a crash
 * between the renames leaves files of two steps, which tool_checkpoint_load
 * refuses (the optimizer's step count against the state's) rather than
 * resuming from a mixture. A crash mid-write may leave the .saving-
 * directory behind, never a damaged checkpoint.
 */
#ifndef TOOL_CHECKPOINT_H
#define TOOL_CHECKPOINT_H

#include "run_state.h"

#include <libsae/sae.h>
#include <stdbool.h>
#include <stddef.h>

/* Make sure dir is a directory we can write in, creating it (one level, like
 * mkdir) when missing. Exits 2 with "<program>: <opt> '<dir>': <problem>"
 * otherwise (e.g. the parent directory does not exist). */
void tool_checkpoint_prepare(const char *opt, const char *dir);

/* Write a checkpoint of m, o and s into dir (an existing directory), as
 * above (with s->normalize: the folded copy, and m as train_weights). When fresh (the first save of a run into a directory that may hold
 * another run's checkpoint), the old state file is removed before the
 * renames, so that a crash between them cannot pair it with the new files by
 * chance. Returns SAE_OK or the status of the failing step (SAE_E_IO for the
 * state file, a directory or a rename); err gets a one-line description
 * naming the file. On failure the files in dir are as they were. */
int tool_checkpoint_save(const char *dir, const sae_model *m, const sae_optimizer *o,
                         const tool_run_state *s, bool fresh, char *err, size_t errlen);

/* Load the checkpoint in dir: the model as trained (train_weights.safetensors
 * of a --normalize run, else sae_weights.safetensors), the optimizer and the
 * state. On any problem (a missing directory or file, a corrupt or
 * inconsistent checkpoint, a model whose architecture is not the state's)
 * exits 2 with one line naming the file and the problem (the libsae status
 * string for the model and optimizer). */
void tool_checkpoint_load(const char *dir, sae_model **m, sae_optimizer **o, tool_run_state *s);

#endif
