/*
 * What a training run reports as it goes: rows of the CSV log, and the
 * progress display (a live line redrawn in place on a terminal, a plain line
 * every N steps when stderr is a pipe or a file).
 *
 * The CSV columns (EX_CSV_COLUMNS), one row per logged step (every N steps,
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
 *              update, l2 / (the batch's variance about its mean), averaged
 *              like the losses ("nan" for a batch without variance)
 *   resampled  dead features resampled since the previous row
 * With --normalize, loss, l2 and l1 are those of the scaled batches the model
 * trains on (fvu does not depend on the scale).
 */
#ifndef EX_PROGRESS_H
#define EX_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EX_CSV_COLUMNS \
    "step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac,checkpoint,lr_t,lambda_t,fvu,resampled"

typedef struct ex_row {
    uint64_t step, tokens;
    double seconds, loss, l2, l1, l0, l0_frac, dead_frac;
    bool checkpoint;
    double lr_t, lambda_t, fvu;
    uint64_t resampled;
} ex_row;

/* Write the header / one row. `lead` goes before the columns and `trail`
 * after them: "" or, for example, "lambda" in the header and "0.01" in the
 * rows. Return 0 or -1. */
int ex_csv_header(FILE *f, const char *lead, const char *trail);
int ex_csv_row(FILE *f, const char *lead, const char *trail, const ex_row *r);

/* For --help: lead, the columns and trail as in the header, indented by 4
 * and wrapped after a comma so that no line exceeds 80 columns. */
void ex_csv_columns_help(FILE *f, const char *lead, const char *trail);

/* Open a log without lead columns (sae-train's) to append rows, for a
 * resumed run: a missing or empty file gets the header; an existing one must
 * start with exactly that header and end with a complete row. *last_step gets
 * the step of its last row (0 if it has none). Returns NULL with the problem
 * in err (one line). */
FILE *ex_csv_append(const char *path, uint64_t *last_step, char *err, size_t errlen);

typedef struct ex_progress {
    FILE *out;
    bool live;            /* out is a terminal: redraw one line in place */
    const char *label;    /* printed before each line, may be "" */
    uint64_t total_steps;
    uint64_t every;       /* plain mode: a line every `every` steps */
    double last_draw;
    int drawn;            /* width of the live line on screen */
} ex_progress;

/* live: redraw in place (pass isatty(fileno(out))). */
void ex_progress_init(ex_progress *p, FILE *out, bool live, const char *label,
                      uint64_t total_steps, uint64_t every);
/* Called after each step with the running figures; draws when due (live:
 * at most 5 times a second and on the last step; plain: every `every` steps
 * and on the last step). final forces a draw. */
void ex_progress_update(ex_progress *p, const ex_row *r, bool final);
/* A line of its own, e.g. "checkpoint written": on a terminal it replaces
 * the live line, which the next update draws again below it. */
void ex_progress_note(ex_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* End the live line (newline) so other output can follow. */
void ex_progress_end(ex_progress *p);

#endif
