/*
 * The data-dependent parts of the training recipe, shared by sae-train and
 * sae-sweep: a sample of the training rows, the input scale estimated from it
 * (--normalize) and b_dec initialised from it (--b-dec-init). Resampling dead
 * features from the sample happens in the training loop (train.h), the
 * density histogram over it in hist.h.
 *
 * The sample is drawn once per run from the seed (its own random stream, so
 * the batches are the same with or without it): sample_tokens rows chosen
 * uniformly with replacement, or every row in order when the data has no more
 * than that. A resumed run draws the same sample again.
 */
#ifndef TOOL_RECIPE_H
#define TOOL_RECIPE_H

#include "config.h"
#include "data.h"

#include <libsae/sae.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The sample's random stream of the run's seed (the batches' is another). */
#define TOOL_STREAM_SAMPLE 0x5a3e1e

typedef struct tool_sample {
    float *x;      /* n x d floats, scaled by the run's input scale */
    size_t n, d;
} tool_sample;

/* Whether a run of c needs the sample (--normalize, --b-dec-init,
 * --resample-every, or a histogram). */
bool tool_recipe_needs_sample(const tool_config *c, bool hist);

/* Draw min(n, rows) rows of data into s (as above). Returns 0, or -1 when
 * out of memory. */
int tool_sample_draw(tool_sample *s, const tool_data *data, size_t n, uint64_t seed);
void tool_sample_free(tool_sample *s);

/* The input scale of a run (--normalize), and the sample scaled by it:
 * *scale is sae_estimate_input_scale of the raw sample when estimate is
 * true, else the given *scale (a checkpoint's) is kept; without --normalize
 * it is 1. The sample is then multiplied by *scale (tool_scale), as batches
 * are. Returns a libsae status; err gets a one-line description on failure. */
int tool_recipe_scale(const tool_config *c, tool_sample *s, bool estimate, double *scale, char *err,
                      size_t errlen);

/* --b-dec-init: sae_model_init_b_dec(m, the scaled sample, c->b_dec_init);
 * nothing without it. Returns a libsae status, with err as above. */
int tool_recipe_b_dec(const tool_config *c, sae_model *m, const tool_sample *s, char *err,
                      size_t errlen);

/* All of the above for a run of sae-train or sae-train-mpi on data: draw the
 * sample when the run needs it (tool_recipe_needs_sample with hist), its
 * input scale (a new run estimates it; resuming keeps the checkpoint's
 * *scale) and a new run's b_dec in m. Returns 0, or an exit status with the
 * problem printed: TOOL_EXIT_USAGE for a sample that does not fit in memory
 * (see --sample) or data the recipe cannot use (non-finite), 1 when libsae
 * failed. */
int tool_recipe_prepare(const tool_config *c, const tool_data *data, bool resuming, bool hist,
                        sae_model *m, tool_sample *s, double *scale);

#endif
