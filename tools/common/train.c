#include "train.h"

#include "args.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

volatile sig_atomic_t tool_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    tool_interrupted = 1;
}

void tool_catch_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C kills at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

void tool_release_sigint(void)
{
    signal(SIGINT, SIG_DFL);
}

/* Running sums of the batch losses since the last logged row. */
typedef struct window {
    double loss, l2, l1, l0, fvu;
    uint64_t steps, resampled;
} window;

/* Sum v[0..count) over the ranks of comm: allgathered, added in rank order
 * (every rank gets the same bits). Returns 0, or -1 (transport, memory). */
static int sum_over_ranks(const sae_comm *comm, double *v, size_t count)
{
    double *all = malloc((size_t)comm->n_ranks * count * sizeof *all);
    if (!all || comm->allgather(comm->ctx, v, count * sizeof *v, all) != 0) {
        free(all);
        return -1;
    }
    for (size_t k = 0; k < count; k++) {
        v[k] = 0.0;
        for (int r = 0; r < comm->n_ranks; r++)
            v[k] += all[(size_t)r * count + k];
    }
    free(all);
    return 0;
}

/* A shard's model: the ranks' counts are summed (data-parallel replicas
 * count the same features). */
static bool sharded(const tool_train *t)
{
    size_t begin, end, total;
    sae_model_shard(t->model, &begin, &end, &total);
    return end - begin < total;
}

static size_t dead_count(const tool_train *t)
{
    size_t dead = 0;
    sae_optimizer_dead_count(t->opt, t->dead_window, &dead);
    double v = (double)dead;
    if (t->comm && sharded(t) && sum_over_ranks(t->comm, &v, 1) != 0)
        return SIZE_MAX; /* the step's exchanges would have failed first */
    return (size_t)v;
}

static size_t total_features(const tool_train *t)
{
    size_t total = 0;
    sae_model_shard(t->model, NULL, NULL, &total);
    return total;
}

/* dead: the dead features at this step, before any resampling */
static tool_row make_row(const tool_train *t, const window *w, double seconds, size_t dead)
{
    tool_row r = {0};
    double n = w->steps ? (double)w->steps : 1.0;
    r.step = t->steps_done;
    r.tokens = t->batches->drawn;
    r.seconds = seconds;
    r.loss = w->loss / n;
    r.l2 = w->l2 / n;
    r.l1 = w->l1 / n;
    r.l0 = w->l0 / n;
    r.l0_frac = r.l0 / (double)total_features(t);
    r.dead_frac = dead == SIZE_MAX ? NAN : (double)dead / (double)total_features(t);
    /* the schedules' values at this step (step 1's before any) */
    uint64_t step = r.step ? r.step : 1;
    if (sae_optimizer_lr_at(t->opt, step, &r.lr_t) != SAE_OK)
        r.lr_t = NAN;
    if (sae_optimizer_l1_coeff_at(t->opt, step, &r.lambda_t) != SAE_OK)
        r.lambda_t = NAN;
    r.fvu = w->steps ? w->fvu / n : NAN;
    r.resampled = w->resampled;
    return r;
}

/* Data-parallel: the total variance per token of the whole batch from each
 * rank's n rows, their mean (d doubles) and their total variance: the
 * ranks' (count, mean, sum of squared deviations) allgathered and combined
 * in rank order (Chan et al.), the same bits on every rank. NAN on a
 * transport or memory failure (the step's own exchanges report it). */
static double variance_over_ranks(const sae_comm *comm, size_t n, size_t d, const double *mean,
                                  double variance)
{
    const size_t block = d + 2, ranks = (size_t)comm->n_ranks;
    double *mine = malloc(block * sizeof *mine), *all = malloc(ranks * block * sizeof *all);
    double *global = calloc(d ? d : 1, sizeof *global);
    double result = NAN;
    if (mine && all && global) {
        mine[0] = (double)n;
        mine[1] = variance * (double)n;
        memcpy(mine + 2, mean, d * sizeof *mean);
        if (comm->allgather(comm->ctx, mine, block * sizeof *mine, all) == 0) {
            double count = 0.0;
            for (size_t r = 0; r < ranks; r++)
                count += all[r * block];
            for (size_t r = 0; r < ranks; r++)
                for (size_t j = 0; j < d; j++)
                    global[j] += all[r * block] / count * all[r * block + 2 + j];
            result = 0.0;
            for (size_t r = 0; r < ranks; r++) {
                double gap = 0.0;
                for (size_t j = 0; j < d; j++) {
                    double e = all[r * block + 2 + j] - global[j];
                    gap += e * e;
                }
                result += all[r * block + 1] + all[r * block] * gap;
            }
            result /= count;
        }
    }
    free(global);
    free(all);
    free(mine);
    return result;
}

/* The seed sae_resample_dead gets after step `step`: the first draw of
 * stream TOOL_STREAM_RESAMPLE + step of the run's seed (so a resumed run
 * resamples as the uninterrupted one). */
static uint64_t resample_seed(uint64_t seed, uint64_t step)
{
    sae_rng r;
    sae_rng_seed(&r, seed, TOOL_STREAM_RESAMPLE + step);
    return sae_rng_next(&r);
}

/* 1, 2, 5, 10, 20, 50, 100, ...: extra rows before the first regular one, so a
 * plot on a logarithmic step axis shows the start of training. */
static bool one_two_five(uint64_t step)
{
    while (step >= 10 && step % 10 == 0)
        step /= 10;
    return step == 1 || step == 2 || step == 5;
}

static bool stopped(const tool_train *t)
{
    return t->stop && *t->stop;
}

/* What one call of tool_train_run keeps between steps. */
typedef struct loop {
    float *x;        /* the batch: batch x d_in floats */
    float *y;        /* transcoders: its targets, batch x d_out floats; else NULL */
    size_t *rows;    /* its rows' indices in the data */
    double *mean;    /* d_out doubles: the batch's mean (sae_total_variance) */
    window w;        /* the losses since the last logged row */
    double start;    /* tool_now() when the call began */
    uint64_t end;    /* the step to stop after: steps, or stop_at */
} loop;

static int fail(tool_train *t, int rc, const char *what, uint64_t step)
{
    snprintf(t->error, sizeof t->error, "step %llu: %s%s%s", (unsigned long long)step, what,
             *what ? ": " : "", rc == SAE_E_IO ? "cannot write it" : tool_status(rc));
    return rc;
}

/* The first of the n rows of x (n x d) holding NaN or Inf (its index in the
 * data), or SIZE_MAX. */
static size_t nonfinite_row(const float *x, size_t n, size_t d, const size_t *rows)
{
    for (size_t k = 0; k < n * d; k++)
        if (!isfinite(x[k]))
            return rows[k / d];
    return SIZE_MAX;
}

/* Draw the next batch (with its targets) and take a step on it; the window
 * gets its losses. */
static int take_step(tool_train *t, loop *lp)
{
    const size_t d_in = sae_model_d_in(t->model), d_out = sae_model_d_out(t->model);
    sae_losses l;
    size_t n = t->batch; /* the rows this rank steps on */
    if (t->share_end > 0) { /* data-parallel: this rank's rows alone */
        n = t->share_end - t->share_begin;
        tool_batcher_skip(t->batches, t->share_begin);
        tool_batcher_next(t->batches, lp->x, n, lp->rows);
        tool_batcher_skip(t->batches, t->batch - t->share_end);
    } else {
        tool_batcher_next(t->batches, lp->x, n, lp->rows);
    }
    for (size_t r = 0; lp->y && r < n; r++)
        memcpy(lp->y + r * d_out, t->target->x + lp->rows[r] * d_out, d_out * sizeof(float));
    const float *y = lp->y ? lp->y : lp->x; /* what the model reconstructs */
    /* the batch's FVU from the step's l2, without a second forward pass; NaN
     * or Inf in the batch leave it NAN (the step says where) */
    double variance = NAN;
    sae_total_variance(y, n, d_out, lp->mean, &variance);
    if (t->share_end > 0)
        variance = variance_over_ranks(t->rows_comm ? t->rows_comm : t->comm, n, d_out,
                                       lp->mean, variance);
    int rc = lp->y ? sae_step_target(t->model, t->opt, lp->x, lp->y, n, &l)
                   : sae_step(t->model, t->opt, lp->x, n, &l);
    if (rc == SAE_E_NONFINITE) { /* bad data, or a diverging step? */
        t->bad_row = nonfinite_row(lp->x, n, d_in, lp->rows);
        if (t->bad_row == SIZE_MAX && lp->y) {
            t->bad_row = nonfinite_row(lp->y, n, d_out, lp->rows);
            t->bad_row_in_target = t->bad_row != SIZE_MAX;
        }
    }
    if (rc != SAE_OK) {
        snprintf(t->error, sizeof t->error, "step %llu: %s",
                 (unsigned long long)t->steps_done + 1, tool_status(rc));
        return rc;
    }
    t->steps_done++;
    t->steps_run++;
    lp->w.loss += l.loss;
    lp->w.l2 += l.l2;
    lp->w.l1 += l.l1;
    lp->w.l0 += l.l0;
    lp->w.fvu += variance > 0.0 ? l.l2 / variance : NAN;
    lp->w.steps++;
    return SAE_OK;
}

/* The density histogram when due, then the resampling when due (not after
 * the run's last step: those features would never train). */
static int recipe_after_step(tool_train *t, loop *lp, bool last)
{
    int rc = SAE_OK;
    if (t->hist && (last || (t->hist_every && t->steps_done % t->hist_every == 0))) {
        rc = tool_hist_write(t->hist, t->model, t->sample, t->steps_done, &t->hist_dead);
        if (rc != SAE_OK)
            return fail(t, rc, "the density histogram", t->steps_done);
    }
    if (!t->resample_every || t->steps_done % t->resample_every != 0 || t->steps_done >= t->steps)
        return SAE_OK;
    size_t n = 0;
    rc = sae_resample_dead(t->model, t->opt, t->sample->x, t->sample->n, t->resample_window,
                           resample_seed(t->seed, t->steps_done), &n);
    if (rc != SAE_OK)
        return fail(t, rc, "resampling the dead features", t->steps_done);
    lp->w.resampled += n;
    t->resampled += n;
    t->resamplings += n > 0;
    if (n && t->progress)
        tool_progress_note(t->progress, "%s%sstep %llu: resampled %zu dead features",
                           t->progress->label, *t->progress->label ? "  " : "",
                           (unsigned long long)t->steps_done, n);
    return SAE_OK;
}

/* A checkpoint of the state after this step. */
static int save_checkpoint(tool_train *t, double seconds)
{
    t->state->step = t->steps_done;
    t->state->tokens = t->batches->drawn;
    t->state->seconds = seconds;
    char err[512];
    int rc = t->comm ? tool_checkpoint_save_collective(t->checkpoint_dir, t->model, t->opt,
                                                       t->state, t->world ? t->world : t->comm,
                                                       t->replica ? NULL : t->comm, err,
                                                       sizeof err)
                     : tool_checkpoint_save(t->checkpoint_dir, t->model, t->opt, t->state, err,
                                            sizeof err);
    if (rc != SAE_OK) {
        snprintf(t->error, sizeof t->error, "step %llu: checkpoint: %s",
                 (unsigned long long)t->steps_done, err);
        return rc;
    }
    t->checkpoints++;
    return SAE_OK;
}

/* The progress display and, when due, the CSV row of this step. */
static int report_step(tool_train *t, loop *lp, tool_row *r, bool last, bool checkpoint)
{
    bool log_due = last || checkpoint || t->steps_done % t->log_every == 0 ||
                   (t->steps_done < t->log_every && one_two_five(t->steps_done));
    if (t->progress) {
        tool_progress_update(t->progress, r, last);
        if (r->checkpoint && !last)
            tool_progress_note(t->progress, "%s%scheckpoint at step %llu: %s", t->progress->label,
                               *t->progress->label ? "  " : "", (unsigned long long)r->step,
                               t->checkpoint_dir);
    }
    if (!log_due)
        return SAE_OK;
    t->last = *r;
    lp->w = (window){0};
    if (t->csv && tool_csv_row(t->csv, t->csv_lead, t->csv_trail, r) != 0) {
        snprintf(t->error, sizeof t->error, "step %llu: cannot write the log",
                 (unsigned long long)t->steps_done);
        return SAE_E_IO;
    }
    return SAE_OK;
}

/* One step and what follows it; *last is set when the run ends after it. */
static int step_and_report(tool_train *t, loop *lp, bool *last)
{
    int rc = take_step(t, lp);
    if (rc != SAE_OK)
        return rc;
    /* the stop flag is read once per step, so the step that sees it is logged
     * and checkpointed as the last */
    *last = t->steps_done == lp->end || stopped(t);
    /* the log's dead share and the histogram: the model this step left,
     * before resampling changes it */
    const size_t dead = dead_count(t);
    if ((rc = recipe_after_step(t, lp, *last)) != SAE_OK)
        return rc;
    double seconds = t->seconds_before + (tool_now() - lp->start);
    bool checkpoint = t->checkpoint_dir &&
                      (*last || (t->checkpoint_every && t->steps_done % t->checkpoint_every == 0));
    int save_rc = checkpoint ? save_checkpoint(t, seconds) : SAE_OK;
    if (save_rc != SAE_OK)
        *last = true; /* log this step, then stop */
    tool_row r = make_row(t, &lp->w, seconds, dead);
    r.checkpoint = checkpoint && save_rc == SAE_OK;
    rc = report_step(t, lp, &r, *last, checkpoint);
    return rc != SAE_OK ? rc : save_rc;
}

void tool_train_init(tool_train *t, const tool_config *c, sae_model *m, sae_optimizer *o,
                     tool_batcher *b, tool_run_state *s, const tool_sample *sample)
{
    *t = (tool_train){
        .model = m, .opt = o, .batches = b, .batch = c->batch, .steps = c->steps,
        .log_every = c->log_every, .dead_window = c->dead_window, .csv_lead = "",
        .csv_trail = "", .seconds_before = s->seconds, .state = s, .sample = sample,
        .resample_every = c->resample_every,
        .resample_window = c->resample_window ? c->resample_window : c->dead_window,
        .seed = c->seed, .bad_row = SIZE_MAX,
    };
}

void tool_train_summary(const tool_train *t)
{
    if (t->checkpoints && t->last.checkpoint)
        printf("checkpoint: %s (step %llu; continue with --resume %s)\n", t->checkpoint_dir,
               (unsigned long long)t->steps_done, t->checkpoint_dir);
    if (t->resample_every)
        printf("resampled: %llu dead features in %llu of the resamplings (every %llu steps)\n",
               (unsigned long long)t->resampled, (unsigned long long)t->resamplings,
               (unsigned long long)t->resample_every);
}

int tool_train_run(tool_train *t)
{
    const size_t d_in = sae_model_d_in(t->model), d_out = sae_model_d_out(t->model);
    const uint64_t drawn_before = t->batches->drawn;
    loop lp = {
        .x = malloc(t->batch * d_in * sizeof(float)),
        .y = t->target ? malloc(t->batch * d_out * sizeof(float)) : NULL,
        .rows = malloc(t->batch * sizeof(size_t)),
        .mean = malloc(d_out * sizeof(double)),
        .start = tool_now(),
        .end = t->stop_at && t->stop_at < t->steps ? t->stop_at : t->steps,
    };
    int rc = SAE_OK;
    t->bad_row = SIZE_MAX;
    t->bad_row_in_target = false;
    t->steps_done = sae_optimizer_steps(t->opt);
    t->steps_run = t->checkpoints = t->resampled = t->resamplings = 0;
    t->hist_dead = 0;
    t->error[0] = '\0';
    t->last = make_row(t, &lp.w, t->seconds_before, dead_count(t));
    if (!lp.x || !lp.rows || !lp.mean || (t->target && !lp.y)) {
        rc = SAE_E_NOMEM;
        snprintf(t->error, sizeof t->error, "%s", tool_status(rc));
    }
    bool last = rc != SAE_OK || t->steps_done >= lp.end || stopped(t);
    while (!last && rc == SAE_OK)
        rc = step_and_report(t, &lp, &last);
    if (t->progress)
        tool_progress_end(t->progress);
    free(lp.mean);
    free(lp.rows);
    free(lp.y);
    free(lp.x);
    t->tokens_run = t->batches->drawn - drawn_before;
    t->seconds_run = tool_now() - lp.start;
    if (rc == SAE_OK && t->csv && fflush(t->csv) != 0) {
        rc = SAE_E_IO;
        snprintf(t->error, sizeof t->error, "cannot write the log");
    }
    return rc;
}
