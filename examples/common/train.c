#include "train.h"

#include "opts.h"
#include "rng.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Running sums of the batch losses since the last logged row. */
typedef struct window {
    double loss, l2, l1, l0, fvu;
    uint64_t steps, resampled;
} window;

static size_t dead_count(const ex_train *t)
{
    size_t dead = 0;
    sae_optimizer_dead_count(t->opt, t->dead_window, &dead);
    return dead;
}

/* dead: the dead features at this step, before any resampling */
static ex_row make_row(const ex_train *t, const window *w, double seconds, size_t dead)
{
    ex_row r = {0};
    double n = w->steps ? (double)w->steps : 1.0;
    r.step = t->steps_done;
    r.tokens = t->batches->drawn;
    r.seconds = seconds;
    r.loss = w->loss / n;
    r.l2 = w->l2 / n;
    r.l1 = w->l1 / n;
    r.l0 = w->l0 / n;
    r.l0_frac = r.l0 / (double)sae_model_d_sae(t->model);
    r.dead_frac = (double)dead / (double)sae_model_d_sae(t->model);
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

/* sum_t ||x_t - mean||^2 of the batch x (n x d), in double; mean: d doubles
 * of scratch. */
static double batch_variance(const float *x, size_t n, size_t d, double *mean)
{
    for (size_t j = 0; j < d; j++)
        mean[j] = 0.0;
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++)
            mean[j] += x[t * d + j];
    for (size_t j = 0; j < d; j++)
        mean[j] /= (double)n;
    double sum = 0.0;
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++) {
            double e = x[t * d + j] - mean[j];
            sum += e * e;
        }
    return sum;
}

/* The resampling seed of a step: the run's seed and the step, mixed. */
static uint64_t resample_seed(uint64_t seed, uint64_t step)
{
    uint64_t state = seed ^ (step * 0xd1342543de82ef95ULL);
    return ex_splitmix64(&state);
}

/* 1, 2, 5, 10, 20, 50, 100, ...: extra rows before the first regular one, so a
 * plot on a logarithmic step axis shows the start of training. */
static bool one_two_five(uint64_t step)
{
    while (step >= 10 && step % 10 == 0)
        step /= 10;
    return step == 1 || step == 2 || step == 5;
}

static bool stopped(const ex_train *t)
{
    return t->stop && *t->stop;
}

int ex_train_run(ex_train *t)
{
    const size_t d_in = sae_model_d_in(t->model);
    float *x = malloc(t->batch * d_in * sizeof(float));
    size_t *rows = malloc(t->batch * sizeof *rows);
    double *mean = malloc(d_in * sizeof *mean);
    const uint64_t drawn_before = t->batches->drawn;
    const double start = ex_now();
    bool fresh = t->checkpoint_fresh;
    window w = {0};
    int rc = SAE_OK;
    t->bad_row = SIZE_MAX;
    t->steps_done = sae_optimizer_steps(t->opt);
    t->steps_run = t->checkpoints = t->resampled = t->resamplings = 0;
    t->hist_dead = 0;
    const uint64_t end = t->stop_at && t->stop_at < t->steps ? t->stop_at : t->steps;
    t->error[0] = '\0';
    t->last = make_row(t, &w, t->seconds_before, dead_count(t));
    if (!x || !rows || !mean) {
        rc = SAE_E_NOMEM;
        snprintf(t->error, sizeof t->error, "%s", sae_status_string(rc));
    }
    /* the stop flag is read once per step, so the step that sees it is logged
     * and checkpointed as the last */
    bool last = rc != SAE_OK || t->steps_done >= end || stopped(t);
    while (!last) {
        sae_losses l;
        ex_batcher_next(t->batches, x, t->batch, rows);
        double variance = batch_variance(x, t->batch, d_in, mean);
        rc = sae_step(t->model, t->opt, x, t->batch, &l);
        if (rc == SAE_E_NONFINITE) { /* bad data, or a diverging step? */
            for (size_t k = 0; k < t->batch * d_in && t->bad_row == SIZE_MAX; k++)
                if (!isfinite(x[k]))
                    t->bad_row = rows[k / d_in];
        }
        if (rc != SAE_OK) {
            snprintf(t->error, sizeof t->error, "step %llu: %s",
                     (unsigned long long)t->steps_done + 1, sae_status_string(rc));
            break;
        }
        t->steps_done++;
        t->steps_run++;
        w.loss += l.loss;
        w.l2 += l.l2;
        w.l1 += l.l1;
        w.l0 += l.l0;
        w.fvu += variance > 0.0 ? l.l2 * (double)t->batch / variance : NAN;
        w.steps++;
        last = t->steps_done == end || stopped(t);

        /* the log's dead share and the histogram: the model this step left,
         * before resampling changes it */
        const size_t dead = dead_count(t);
        if (t->hist && (last || (t->hist_every && t->steps_done % t->hist_every == 0))) {
            rc = ex_hist_write(t->hist, t->model, t->sample, t->steps_done, &t->hist_dead);
            if (rc != SAE_OK) {
                snprintf(t->error, sizeof t->error, "step %llu: the density histogram: %s",
                         (unsigned long long)t->steps_done,
                         rc == SAE_E_IO ? "cannot write it" : sae_status_string(rc));
                break;
            }
        }
        /* not after the run's last step: those features would never train */
        if (t->resample_every && t->steps_done % t->resample_every == 0 &&
            t->steps_done < t->steps) {
            size_t n = 0;
            rc = sae_resample_dead(t->model, t->opt, t->sample->x, t->sample->n,
                                   t->resample_window, resample_seed(t->seed, t->steps_done), &n);
            if (rc != SAE_OK) {
                snprintf(t->error, sizeof t->error, "step %llu: resampling the dead features: %s",
                         (unsigned long long)t->steps_done, sae_status_string(rc));
                break;
            }
            w.resampled += n;
            t->resampled += n;
            t->resamplings += n > 0;
            if (n && t->progress)
                ex_progress_note(t->progress, "%s%sstep %llu: resampled %zu dead features",
                                 t->progress->label, *t->progress->label ? "  " : "",
                                 (unsigned long long)t->steps_done, n);
        }
        double seconds = t->seconds_before + (ex_now() - start);

        bool checkpoint = t->checkpoint_dir &&
                          (last || (t->checkpoint_every && t->steps_done % t->checkpoint_every == 0));
        int save_rc = SAE_OK;
        if (checkpoint) {
            t->state->step = t->steps_done;
            t->state->tokens = t->batches->drawn;
            t->state->seconds = seconds;
            char err[512];
            save_rc = ex_checkpoint_save(t->checkpoint_dir, t->model, t->opt, t->state, fresh, err,
                                         sizeof err);
            if (save_rc == SAE_OK) {
                fresh = false;
                t->checkpoints++;
            } else {
                snprintf(t->error, sizeof t->error, "step %llu: checkpoint: %s",
                         (unsigned long long)t->steps_done, err);
                last = true; /* log this step, then stop */
            }
        }

        bool log_due = last || checkpoint || t->steps_done % t->log_every == 0 ||
                       (t->steps_done < t->log_every && one_two_five(t->steps_done));
        ex_row r = make_row(t, &w, seconds, dead);
        r.checkpoint = checkpoint && save_rc == SAE_OK;
        if (t->progress) {
            ex_progress_update(t->progress, &r, last);
            if (r.checkpoint && !last)
                ex_progress_note(t->progress, "%s%scheckpoint at step %llu: %s",
                                 t->progress->label, *t->progress->label ? "  " : "",
                                 (unsigned long long)r.step, t->checkpoint_dir);
        }
        if (log_due) {
            t->last = r;
            if (t->csv && ex_csv_row(t->csv, t->csv_lead, t->csv_trail, &r) != 0) {
                rc = SAE_E_IO;
                snprintf(t->error, sizeof t->error, "step %llu: cannot write the log",
                         (unsigned long long)t->steps_done);
                break;
            }
            w = (window){0};
        }
        if (save_rc != SAE_OK) {
            rc = save_rc;
            break;
        }
    }
    if (t->progress)
        ex_progress_end(t->progress);
    free(mean);
    free(rows);
    free(x);
    t->tokens_run = t->batches->drawn - drawn_before;
    t->seconds_run = ex_now() - start;
    if (rc == SAE_OK && t->csv && fflush(t->csv) != 0) {
        rc = SAE_E_IO;
        snprintf(t->error, sizeof t->error, "cannot write the log");
    }
    return rc;
}
