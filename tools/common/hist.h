/*
 * The log10 feature-density histogram of a model over the recipe's sample
 * (sae-train --hist): CSV rows, and a PNG drawn with gnuplot.
 */
#ifndef TOOL_HIST_H
#define TOOL_HIST_H

#include "recipe.h"

#include <libsae/sae.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The density histogram's CSV: a header, then per histogram one row per bin
 *   step,sample,dead,log10_lo,log10_hi,count
 * step: training steps taken; sample: tokens in the sample; dead: features
 * that fired on none of them (not binned; the counts and dead sum to d_sae);
 * [log10_lo, log10_hi): the bin of log10(fraction of the sample's tokens the
 * feature fires on), 5 bins per decade from the first whole decade at or
 * below log10(1 / sample) up to 0 (density 1, in the last bin). */
#define TOOL_HIST_COLUMNS "step,sample,dead,log10_lo,log10_hi,count"
int tool_hist_header(FILE *f);

/* One row of the CSV. */
typedef struct tool_hist_row {
    uint64_t step, count;
    size_t sample, dead;
    double log10_lo, log10_hi;
} tool_hist_row;

/* Read the next row of a histogram CSV (after its header line): 1, 0 at the
 * end of the file, -1 for a line that is not a row. */
int tool_hist_read_row(FILE *f, tool_hist_row *r);

/* Compute the histogram of m over s (sae_feature_density_histogram) and
 * write its rows for `step`. *n_dead (may be NULL) gets the dead count.
 * Returns a libsae status, SAE_E_IO if the rows could not be written. */
int tool_hist_write(FILE *f, const sae_model *m, const tool_sample *s, uint64_t step, size_t *n_dead);

/* Open the histogram CSV at path: a new file with the header, or, when
 * append, an existing one that must start with the header (a missing or
 * empty one gets it). NULL with a one-line problem in err. */
FILE *tool_hist_open(const char *path, bool append, char *err, size_t errlen);

/* The PNG drawn from a histogram CSV: path with ".csv" replaced by ".png"
 * (or ".png" appended), malloc'd; the gnuplot script likewise with ".gp". */
char *tool_hist_png_path(const char *csv_path);

/* Draw the histograms of the CSV at csv_path (the last one as bars, earlier
 * ones as outlines) into tool_hist_png_path(csv_path), writing the gnuplot
 * script beside it. title: e.g. the run's description. Returns TOOL_GNUPLOT_*,
 * or -1 if the CSV could not be read or the script written. */
int tool_hist_plot(const char *csv_path, const char *title);

#endif
