/*
 * The training loop shared by sae-train and sae-sweep: draw a batch, take one
 * sae_step, and every log_every steps write a CSV row and update the progress
 * display. Before the first regular row it also logs steps 1, 2, 5, 10, 20,
 * 50, ... so that a plot on a logarithmic step axis shows the start. Stops
 * after step `steps`, or early when *stop becomes nonzero (a Ctrl-C handler
 * sets it) -- always between two steps, after writing a final row, so the log
 * ends with the last step taken.
 *
 * Steps are counted from the optimizer's step count, so a loaded optimizer
 * (sae_optimizer_load) continues where it stopped: `steps` is the total, the
 * rows carry the total step, and the batcher, which must have skipped the rows
 * drawn before (tool_batcher_skip), supplies the total token count.
 *
 * With a checkpoint directory it writes a checkpoint (tool_checkpoint_save)
 * every checkpoint_every steps and after the last step taken (also when
 * stopped early), logs a row for each, marked in the checkpoint column, and
 * notes the periodic ones on the progress display.
 *
 * The recipe's periodic parts: every resample_every steps (but after the
 * run's last, step `steps`) it resamples the features dead for
 * resample_window tokens from the sample
 * (sae_resample_dead, seeded by the seed and the step, so a resumed run does
 * the same), counts them in the CSV's resampled column and notes them on the
 * progress display; every hist_every steps and after its last step it
 * appends the density histogram over the sample to hist. The histogram and
 * the log's dead share are taken before the step's resampling.
 * Batches are scaled as the batcher's scale says (--normalize). With a target
 * (transcoders), each batch's rows come with their targets, copied as they
 * are, and the log's fvu is that of the targets.
 *
 * Distributed runs (sae-train-mpi: comm set, the optimizer's communicator):
 * every rank runs the loop with the same settings and draws the same
 * sequence of batches. Data-parallel, a rank copies only its rows
 * [share_begin, share_end) of each batch (the others are skipped, never
 * read) and steps on them; feature-sharded, every rank steps on the whole
 * batch. The log's fvu (variance over the whole batch) and dead share (over
 * all features) are combined across ranks, checkpoints are written
 * collectively (tool_checkpoint_save_collective), and the ranks agree on
 * every value the log and the loop's decisions depend on. On a 2-D grid
 * comm is the group's shards, rows_comm the groups (the rank's share is its
 * group's) and world all ranks. Pass progress,
 * csv and hist on one rank only, and no stop flag (a signal reaches the
 * ranks at different steps).
 */
#ifndef TOOL_TRAIN_H
#define TOOL_TRAIN_H

#include "batch.h"
#include "checkpoint.h"
#include "progress.h"
#include "hist.h"
#include "recipe.h"

#include <libsae/sae.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct tool_train {
    /* inputs */
    sae_model *model;
    sae_optimizer *opt;
    tool_batcher *batches;
    const tool_data *target;     /* transcoders: the targets of the batches' data,
                                    row for row (sae_step_target); NULL: sae_step */
    size_t batch;                /* tokens per step */
    uint64_t steps;              /* total steps, counting the optimizer's earlier ones */
    uint64_t stop_at;            /* 0, or stop after this step (< steps) as if done */
    uint64_t log_every;          /* CSV row every N steps, after the last, and at
                                    steps 1, 2, 5, 10, ... below N */
    uint64_t dead_window;        /* tokens, for dead_frac */
    FILE *csv;                   /* may be NULL */
    const char *csv_lead;        /* leading CSV column values, "" for none */
    const char *csv_trail;       /* trailing ones, likewise */
    tool_progress *progress;     /* may be NULL */
    volatile sig_atomic_t *stop; /* may be NULL */
    double seconds_before;       /* training seconds of earlier runs (resuming) */
    const char *checkpoint_dir;  /* NULL: no checkpoints */
    uint64_t checkpoint_every;   /* 0: only after the last step */
    tool_run_state *state;       /* saved with each checkpoint (step, tokens and
                                    seconds brought up to date) */
    const tool_sample *sample;   /* for resampling and histograms (scaled like the
                                    batches); may be NULL if neither is on */
    uint64_t resample_every;     /* steps; 0: never */
    uint64_t resample_window;    /* tokens */
    uint64_t seed;               /* of the run: seeds the resampling */
    FILE *hist;                  /* density histograms (tool_hist_write), may be NULL */
    uint64_t hist_every;         /* steps; 0: only after the last step */
    /* outputs */
    uint64_t steps_done;         /* the optimizer's step count at the end */
    uint64_t steps_run;          /* steps taken by this call */
    uint64_t tokens_run;         /* tokens trained on by this call */
    double seconds_run;          /* wall-clock seconds of this call */
    uint64_t checkpoints;        /* checkpoints written */
    uint64_t resampled;          /* features resampled by this call */
    uint64_t resamplings;        /* resampling calls that resampled any */
    const sae_comm *comm;        /* distributed runs (see above); NULL: one process */
    const sae_comm *rows_comm;   /* the ranks stepping on the other rows of each batch
                                    (share_*: the batch's variance is combined over
                                    them); NULL: comm */
    const sae_comm *world;       /* every rank of the run, when comm is not (a 2-D
                                    grid: comm is the group's shards): checkpoints are
                                    staged and agreed over it; NULL: comm */
    bool replica;                /* a 2-D grid's rank outside data group 0: writes no
                                    checkpoint file (tool_checkpoint_save_collective) */
    size_t share_begin, share_end; /* data-parallel: this rank's rows of each batch;
                                      both 0: the whole batch */
    size_t hist_dead;            /* dead features in the last histogram written */
    tool_row last;               /* the last row logged */
    size_t bad_row;              /* after SAE_E_NONFINITE: a data row holding
                                    NaN or Inf, or SIZE_MAX if the data was fine */
    bool bad_row_in_target;      /* that row is the target's (the input row is fine) */
    char error[600];             /* on failure: what failed, one line */
} tool_train;

/* The resampling seeds' random streams of the run's seed: stream
 * TOOL_STREAM_RESAMPLE + step for the resampling after that step. */
#define TOOL_STREAM_RESAMPLE 0x7e5a000000000000ULL

/* Ctrl-C: tool_catch_sigint makes SIGINT set tool_interrupted (pass it as
 * `stop`) and restores the default action, so that a second Ctrl-C kills at
 * once; tool_release_sigint restores it after training. */
extern volatile sig_atomic_t tool_interrupted;
void tool_catch_sigint(void);
void tool_release_sigint(void);

/* The settings of t that come from the run's options c (batch, steps,
 * log_every, dead_window, resample_every, resample_window: c's or else its
 * dead_window, seed), with its model, optimizer, batches, state
 * (seconds_before: the state's seconds) and sample; the rest zero: no csv
 * (lead and trail ""), progress, stop flag, stop_at, checkpoints,
 * histograms, target or communicator. */
void tool_train_init(tool_train *t, const tool_config *c, sae_model *m, sae_optimizer *o,
                     tool_batcher *b, tool_run_state *s, const tool_sample *sample);

/* After tool_train_run, for the report on stdout: where the checkpoint
 * written after the last step is, and what resampling did (when on). */
void tool_train_summary(const tool_train *t);

/* Returns SAE_OK, the libsae status of a failed step (the run stops there;
 * the rows logged so far stay in the CSV), the status of a failed checkpoint,
 * or SAE_E_IO if a CSV row could not be written; `error` describes it. */
int tool_train_run(tool_train *t);

#endif
