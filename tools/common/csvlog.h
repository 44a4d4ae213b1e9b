/*
 * The CSV log of a training run (sae-train --log, sae-sweep's sweep.csv).
 *
 * The CSV columns (TOOL_CSV_COLUMNS), one row per logged step (every N steps,
 * the last step, and steps 1, 2, 5, 10, 20, 50, ... below N):
 *   step       steps taken so far
 *   tokens     training tokens seen so far
 *   seconds    wall-clock seconds since training started
 *   loss       l2 + lambda * l1      \
 *   l2         reconstruction error   | each the mean, over the steps since the
 *   l1         decoder-norm L1        | previous row, of the batch's value
 *   l0         active features/token /  before that step's update
 *   l0_frac    l0 / d_sae, the fraction of features active per token
 *   dead_frac  fraction of features that fired on none of the last
 *              dead-window training tokens (0 until that many have passed),
 *              before that step's resampling
 *   checkpoint 1 if a checkpoint was written after this step, else 0
 *   lr_t       the learning rate sae_step applied at this step, and
 *   lambda_t   the sparsity coefficient (sae_optimizer_lr_at, _l1_coeff_at:
 *              the schedules' values; lambda_t is 0 for TopK and BatchTopK)
 *   fvu        fraction of variance unexplained of the batch before the
 *              update, l2 / (the batch's variance about its mean,
 *              sae_total_variance), averaged like the losses ("nan" for a
 *              batch without variance); libsae.train's log has the same
 *   resampled  dead features resampled since the previous row
 * With --normalize, loss, l2 and l1 are those of the scaled batches the model
 * trains on (fvu does not depend on the scale).
 */
#ifndef TOOL_CSVLOG_H
#define TOOL_CSVLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TOOL_CSV_COLUMNS \
    "step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac,checkpoint,lr_t,lambda_t,fvu,resampled"

typedef struct tool_row {
    uint64_t step, tokens;
    double seconds, loss, l2, l1, l0, l0_frac, dead_frac;
    bool checkpoint;
    double lr_t, lambda_t, fvu;
    uint64_t resampled;
} tool_row;

/* Write the header / one row. `lead` goes before the columns and `trail`
 * after them: "" or, for example, "lambda" in the header and "0.01" in the
 * rows. Return 0 or -1. */
int tool_csv_header(FILE *f, const char *lead, const char *trail);
int tool_csv_row(FILE *f, const char *lead, const char *trail, const tool_row *r);

/* For --help: lead, the columns and trail as in the header, indented by 4
 * and wrapped after a comma so that no line exceeds 80 columns. */
void tool_csv_columns_help(FILE *f, const char *lead, const char *trail);

/* Open a log without lead columns (sae-train's) to append rows, for a
 * resumed run: a missing or empty file gets the header; an existing one must
 * start with exactly that header and end with a complete row. *last_step gets
 * the step of its last row (0 if it has none). Returns NULL with the problem
 * in err (one line). */
FILE *tool_csv_append(const char *path, uint64_t *last_step, char *err, size_t errlen);

/* A run's --log (sae-train, sae-train-mpi): a new file with the header, or,
 * resuming (append), the old one continued (tool_csv_append), with a note on
 * stderr when its rows go past the checkpoint's step resume_step (the new
 * rows follow them). Line-buffered, so that complete rows reach the disk as
 * they come. Returns NULL with the problem in err, one line naming --log and
 * the path. */
FILE *tool_csv_open_log(const char *path, bool append, uint64_t resume_step, char *err,
                        size_t errlen);

#endif
