/*
 * The training loop shared by sae-train and sae-sweep: draw a batch, take one
 * sae_step, and every log_every steps write a CSV row and update the progress
 * display. Before the first regular row it also logs steps 1, 2, 5, 10, 20,
 * 50, ... so that a plot on a logarithmic step axis shows the start. Stops after `steps` steps, or early when *stop becomes nonzero
 * (a Ctrl-C handler sets it) -- always between two steps, after writing a
 * final row, so the log ends with the last step taken.
 */
#ifndef EX_TRAIN_H
#define EX_TRAIN_H

#include "batch.h"
#include "progress.h"

#include <libsae/sae.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>

typedef struct ex_train {
    /* inputs */
    sae_model *model;
    sae_optimizer *opt;
    ex_batcher *batches;
    size_t batch;                /* tokens per step */
    uint64_t steps;              /* total steps */
    uint64_t log_every;          /* CSV row every N steps, after the last, and at
                                    steps 1, 2, 5, 10, ... below N */
    uint64_t dead_window;        /* tokens, for dead_frac */
    FILE *csv;                   /* may be NULL */
    const char *csv_lead;        /* leading CSV column values, "" for none */
    ex_progress *progress;       /* may be NULL */
    volatile sig_atomic_t *stop; /* may be NULL */
    /* outputs */
    uint64_t steps_done;
    ex_row last;                 /* the last row logged */
    size_t bad_row;              /* after SAE_E_NONFINITE: a data row holding
                                    NaN or Inf, or SIZE_MAX if the data was fine */
} ex_train;

/* Returns SAE_OK, the libsae status of a failed call (the run stops there;
 * the rows logged so far stay in the CSV), or SAE_E_IO if a CSV row could not
 * be written. */
int ex_train_run(ex_train *t);

#endif
