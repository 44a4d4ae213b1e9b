#include "train.h"

#include "opts.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Running sums of the batch losses since the last logged row. */
typedef struct window {
    double loss, l2, l1, l0;
    uint64_t steps;
} window;

static ex_row make_row(const ex_train *t, const window *w, double seconds)
{
    ex_row r = {0};
    double n = w->steps ? (double)w->steps : 1.0;
    r.step = t->steps_done;
    r.tokens = t->steps_done * t->batch;
    r.seconds = seconds;
    r.loss = w->loss / n;
    r.l2 = w->l2 / n;
    r.l1 = w->l1 / n;
    r.l0 = w->l0 / n;
    r.l0_frac = r.l0 / (double)sae_model_d_sae(t->model);
    size_t dead = 0;
    sae_optimizer_dead_count(t->opt, t->dead_window, &dead);
    r.dead_frac = (double)dead / (double)sae_model_d_sae(t->model);
    return r;
}

/* 1, 2, 5, 10, 20, 50, 100, ...: extra rows before the first regular one, so a
 * plot on a logarithmic step axis shows the start of training. */
static bool one_two_five(uint64_t step)
{
    while (step >= 10 && step % 10 == 0)
        step /= 10;
    return step == 1 || step == 2 || step == 5;
}

int ex_train_run(ex_train *t)
{
    const size_t d_in = sae_model_d_in(t->model);
    float *x = malloc(t->batch * d_in * sizeof(float));
    size_t *rows = malloc(t->batch * sizeof *rows);
    t->bad_row = SIZE_MAX;
    if (!x || !rows) {
        free(x);
        free(rows);
        return SAE_E_NOMEM;
    }
    window w = {0};
    int rc = SAE_OK;
    double start = ex_now();
    t->steps_done = 0;
    while (t->steps_done < t->steps && !(t->stop && *t->stop)) {
        sae_losses l;
        ex_batcher_next(t->batches, x, t->batch, rows);
        rc = sae_step(t->model, t->opt, x, t->batch, &l);
        if (rc == SAE_E_NONFINITE) { /* bad data, or a diverging step? */
            for (size_t k = 0; k < t->batch * d_in && t->bad_row == SIZE_MAX; k++)
                if (!isfinite(x[k]))
                    t->bad_row = rows[k / d_in];
        }
        if (rc != SAE_OK)
            break;
        t->steps_done++;
        w.loss += l.loss;
        w.l2 += l.l2;
        w.l1 += l.l1;
        w.l0 += l.l0;
        w.steps++;
        bool last = t->steps_done == t->steps || (t->stop && *t->stop);
        bool log_due = t->steps_done % t->log_every == 0 || last ||
                       (t->steps_done < t->log_every && one_two_five(t->steps_done));
        ex_row r = make_row(t, &w, ex_now() - start);
        if (t->progress)
            ex_progress_update(t->progress, &r, last);
        if (log_due) {
            t->last = r;
            if (t->csv && ex_csv_row(t->csv, t->csv_lead, &r) != 0) {
                rc = SAE_E_IO;
                break;
            }
            w = (window){0};
        }
    }
    if (t->progress)
        ex_progress_end(t->progress);
    free(rows);
    free(x);
    if (rc == SAE_OK && t->csv && fflush(t->csv) != 0)
        rc = SAE_E_IO;
    return rc;
}
