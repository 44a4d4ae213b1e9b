/*
 * The data-dependent parts of the training recipe, shared by sae-train and
 * sae-sweep: a sample of the training rows, the input scale estimated from it
 * (--normalize), b_dec initialised from it (--b-dec-init), and the log10
 * feature-density histogram over it (--hist), written as CSV and drawn with
 * gnuplot. Resampling dead features from the sample happens in the training
 * loop (train.h).
 *
 * The sample is drawn once per run from the seed (its own random stream, so
 * the batches are the same with or without it): sample_tokens rows chosen
 * uniformly with replacement, or every row in order when the data has no more
 * than that. A resumed run draws the same sample again.
 */
#ifndef EX_RECIPE_H
#define EX_RECIPE_H

#include "cli.h"
#include "data.h"

#include <libsae/sae.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct ex_sample {
    float *x;      /* n x d floats, scaled by the run's input scale */
    size_t n, d;
} ex_sample;

/* Whether a run of c needs the sample (--normalize, --b-dec-init,
 * --resample-every, or a histogram). */
bool ex_recipe_needs_sample(const ex_config *c, bool hist);

/* Draw min(n, rows) rows of data into s (as above). Returns 0, or -1 when
 * out of memory. */
int ex_sample_draw(ex_sample *s, const ex_data *data, size_t n, uint64_t seed);
void ex_sample_free(ex_sample *s);

/* The input scale of a run (--normalize), and the sample scaled by it:
 * *scale is sae_estimate_input_scale of the raw sample when estimate is
 * true, else the given *scale (a checkpoint's) is kept; without --normalize
 * it is 1. The sample is then multiplied by *scale (ex_scale), as batches
 * are. Returns a libsae status; err gets a one-line description on failure. */
int ex_recipe_scale(const ex_config *c, ex_sample *s, bool estimate, double *scale, char *err,
                    size_t errlen);

/* --b-dec-init: sae_model_init_b_dec(m, the scaled sample, c->b_dec_init);
 * nothing without it. Returns a libsae status, with err as above. */
int ex_recipe_b_dec(const ex_config *c, sae_model *m, const ex_sample *s, char *err,
                    size_t errlen);

/* The density histogram's CSV: a header, then per histogram one row per bin
 *   step,sample,dead,log10_lo,log10_hi,count
 * step: training steps taken; sample: tokens in the sample; dead: features
 * that fired on none of them (not binned; the counts and dead sum to d_sae);
 * [log10_lo, log10_hi): the bin of log10(fraction of the sample's tokens the
 * feature fires on), 5 bins per decade from the first whole decade at or
 * below log10(1 / sample) up to 0 (density 1, in the last bin). */
#define EX_HIST_COLUMNS "step,sample,dead,log10_lo,log10_hi,count"
int ex_hist_header(FILE *f);

/* Compute the histogram of m over s (sae_feature_density_histogram) and
 * write its rows for `step`. *n_dead (may be NULL) gets the dead count.
 * Returns a libsae status, SAE_E_IO if the rows could not be written. */
int ex_hist_write(FILE *f, const sae_model *m, const ex_sample *s, uint64_t step, size_t *n_dead);

/* Open the histogram CSV at path: a new file with the header, or, when
 * append, an existing one that must start with the header (a missing or
 * empty one gets it). NULL with a one-line problem in err. */
FILE *ex_hist_open(const char *path, bool append, char *err, size_t errlen);

/* The PNG drawn from a histogram CSV: path with ".csv" replaced by ".png"
 * (or ".png" appended), malloc'd; the gnuplot script likewise with ".gp". */
char *ex_hist_png_path(const char *csv_path);

/* Draw the histograms of the CSV at csv_path (the last one as bars, earlier
 * ones as outlines) into ex_hist_png_path(csv_path), writing the gnuplot
 * script beside it. title: e.g. the run's description. Returns EX_GNUPLOT_*,
 * or -1 if the CSV could not be read or the script written. */
int ex_hist_plot(const char *csv_path, const char *title);

/* A new model with m's architecture and k, and its tensors (exactly, but for
 * JumpReLU's thresholds, which go through the public API as exp(log theta):
 * up to a float rounding). For an exported copy, not for training on. Returns
 * a libsae status; *out is NULL on failure. */
int ex_model_copy(const sae_model *m, sae_model **out);

#endif
