/*
 * Resuming a run: the command line against the checkpoint's settings.
 */
#ifndef TOOL_RESUME_H
#define TOOL_RESUME_H

#include "config.h"
#include "inputs.h"
#include "run_state.h"

#include <libsae/sae.h>

/* Resuming: make c describe the checkpointed run (seed, data, d_in, d_sae,
 * architecture and k, --normalize and its scale, --b-dec-init; a value given
 * on the command line that contradicts the checkpoint exits 2), take batch,
 * log_every, dead_window, sample and the resampling settings from the state
 * and the optimizer options (lr, lambda, clip, the architecture's options,
 * the schedules) from the optimizer unless given on the command line (then
 * set them in o), and resolve the total number of steps: --steps N, --tokens
 * N (total), or else the checkpointed run's own total, which becomes
 * SAE_OPT_TOTAL_STEPS. Exits 2 when the total is below the steps already
 * taken or the schedules do not fit in it. s then describes the continued
 * run (its total, batch, ...) for the checkpoints it will write. */
void tool_config_resume(tool_config *c, const char *dir, tool_run_state *s, const sae_model *m,
                        sae_optimizer *o);

/* The settings of a run of sae-train or sae-train-mpi. Resuming (dir not
 * NULL): load dir's checkpoint into *m, *o and *s (tool_checkpoint_load_shard:
 * shard `shard` of n_shards, n_shards 0 the whole model) and make c describe
 * it (tool_config_resume). A new run: check c (tool_config_check,
 * tool_config_check_schedule). Exits 2 on a contradiction. */
void tool_config_load_run(tool_config *c, const char *dir, int n_shards, int shard, sae_model **m,
                          sae_optimizer **o, tool_run_state *s);

/* Check that the loaded training data has the checkpoint's shape (exit 2),
 * and record its format in s. */
void tool_inputs_check_resume(const tool_inputs *in, const tool_config *c, const char *dir,
                              tool_run_state *s);

#endif
