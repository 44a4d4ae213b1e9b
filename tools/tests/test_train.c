/*
 * The training loop's new log columns against a replica run step by step
 * through the public API: the same model (created from the same seed), the
 * same batches (a second batcher with the same seed, scaled with tool_scale),
 * and for each step sae_fvu of the batch before the update (the fvu column),
 * sae_optimizer_lr_at / _l1_coeff_at (lr_t, lambda_t), then sae_step. The
 * two runs must also end with the same parameters, bit for bit.
 */
#include "common/batch.h"
#include "common/config.h"
#include "common/progress.h"
#include "common/synth.h"
#include "common/train.h"

#include "check.h"

#include <libsae/sae.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static bool near(double got, double want, double rel)
{
    return fabs(got - want) <= rel * fabs(want) + 1e-12;
}

enum { D_IN = 12, D_SAE = 24, BATCH = 16, STEPS = 12 };

/* The run both sides make: a linear lr schedule with warm-up, a lambda
 * warm-up. */
static tool_config run_config(int arch)
{
    tool_config c;
    tool_config_defaults(&c);
    c.d_sae = D_SAE;
    c.arch = c.archs[0] = arch;
    c.k = 3;
    c.steps = STEPS;
    c.lr = 2e-3;
    c.lambda = 0.2;
    c.lr_schedule = SAE_LR_LINEAR;
    c.lr_warmup = 4;
    c.lr_decay = 0.25;
    c.l1_warmup = 0.5;
    return c;
}

/* One step of the replica: the batch's sae_fvu before the update, the
 * schedules' values, then sae_step; and the loop's CSV row of that step
 * against them. */
static void replica_step(sae_model *m, sae_optimizer *o, tool_batcher *b, double scale,
                         uint64_t step, int arch, FILE *csv)
{
    float batch[BATCH * D_IN];
    tool_batcher_next(b, batch, BATCH, NULL);
    tool_scale(batch, BATCH * D_IN, scale);
    double fvu, lr, lambda;
    CHECK(sae_fvu(m, batch, BATCH, &fvu) == SAE_OK, "fvu");
    CHECK(sae_optimizer_lr_at(o, step, &lr) == SAE_OK, "lr_at");
    CHECK(sae_optimizer_l1_coeff_at(o, step, &lambda) == SAE_OK, "l1_coeff_at");
    sae_losses l;
    CHECK(sae_step(m, o, batch, BATCH, &l) == SAE_OK, "step");

    char line[512];
    unsigned long long s, tokens, resampled;
    int checkpoint;
    double seconds, loss, l2, l1, l0, l0_frac, dead, lr_t, lambda_t, fvu_t;
    CHECK(fgets(line, sizeof line, csv) != NULL, "no row for step %llu", (unsigned long long)step);
    int n = sscanf(line, "%llu,%llu,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%d,%lf,%lf,%lf,%llu", &s, &tokens,
                   &seconds, &loss, &l2, &l1, &l0, &l0_frac, &dead, &checkpoint, &lr_t, &lambda_t,
                   &fvu_t, &resampled);
    CHECK(n == 14 && s == step, "row '%s'", line);
    CHECK(near(l2, l.l2, 1e-5) && near(l0, l.l0, 1e-5), "step %llu: l2 %g l0 %g, replica %g %g", s,
          l2, l0, l.l2, l.l0);
    CHECK(near(fvu_t, fvu, 1e-5), "step %llu (arch %d, scale %g): fvu %.9g, sae_fvu %.9g", s, arch,
          scale, fvu_t, fvu);
    CHECK(near(lr_t, lr, 1e-5), "step %llu: lr_t %g, lr_at %g", s, lr_t, lr);
    CHECK(near(lambda_t, tool_arch_is_topk(arch) ? 0.0 : lambda, 1e-5),
          "step %llu: lambda_t %g, l1_coeff_at %g", s, lambda_t, lambda);
    CHECK(resampled == 0, "resampled %llu", resampled);
}

static bool same_w_dec(const sae_model *a, const sae_model *b)
{
    size_t n = sae_model_tensor_size(a, SAE_W_DEC);
    float *w1 = malloc(n * sizeof *w1), *w2 = malloc(n * sizeof *w2);
    sae_model_get_tensor(a, SAE_W_DEC, w1, n);
    sae_model_get_tensor(b, SAE_W_DEC, w2, n);
    bool same = memcmp(w1, w2, n * sizeof *w1) == 0;
    free(w1);
    free(w2);
    return same;
}

/* Train STEPS steps of architecture arch with the loop (log_every 1, the
 * batcher scaled by scale) and with the replica; compare. */
static void compare(int arch, double scale)
{
    tool_synth truth;
    if (tool_synth_init(&truth, D_IN, 16, 3.0, 5) != 0)
        abort();
    tool_data data;
    tool_data_wrap(&data, tool_synth_matrix(&truth, 500, 5, 1), 500, D_IN, "synthetic");
    const tool_config c = run_config(arch);
    sae_model *m, *m2;
    sae_optimizer *o, *o2;
    CHECK(tool_make_sae(&c, D_IN, &m, &o) == SAE_OK, "make");
    CHECK(tool_make_sae(&c, D_IN, &m2, &o2) == SAE_OK, "make");

    FILE *csv = tmpfile();
    tool_csv_header(csv, "", "");
    tool_batcher b, b2;
    CHECK(tool_batcher_init(&b, &data, 9) == 0 && tool_batcher_init(&b2, &data, 9) == 0, "batcher");
    b.scale = scale;
    tool_train t = {
        .model = m, .opt = o, .batches = &b, .batch = BATCH, .steps = STEPS, .log_every = 1,
        .dead_window = 1000, .csv = csv, .csv_lead = "", .csv_trail = "",
    };
    CHECK(tool_train_run(&t) == SAE_OK, "run: %s", t.error);
    CHECK(t.steps_done == STEPS, "%llu steps", (unsigned long long)t.steps_done);

    rewind(csv);
    char line[512];
    CHECK(fgets(line, sizeof line, csv) && strncmp(line, TOOL_CSV_COLUMNS, strlen(TOOL_CSV_COLUMNS)) == 0,
          "header");
    for (uint64_t step = 1; step <= STEPS; step++)
        replica_step(m2, o2, &b2, scale, step, arch, csv);
    /* the lr does what the schedule says: warm-up, then decay to 0 */
    double lr1, lr12;
    sae_optimizer_lr_at(o2, 1, &lr1);
    sae_optimizer_lr_at(o2, 12, &lr12);
    CHECK(near(lr1, 2e-3 / 4, 1e-12) && lr12 == 0.0, "lr at 1: %g, at 12: %g", lr1, lr12);
    CHECK(same_w_dec(m, m2), "arch %d: the loop's W_dec differs from the replica's", arch);
    fclose(csv);
    tool_batcher_free(&b);
    tool_batcher_free(&b2);
    sae_optimizer_free(o);
    sae_optimizer_free(o2);
    sae_model_free(m);
    sae_model_free(m2);
    tool_data_close(&data);
    tool_synth_free(&truth);
}

/* --decoder-init-norm X: the model tool_make_sae makes is the library's
 * initialisation with decoder rows of norm X (sae_model_reinit), bit for bit;
 * without it, sae_model_create_arch's (norm 0.1). */
static void decoder_init_norm_option(void)
{
    for (int given = 0; given < 2; given++) {
        tool_config c;
        tool_config_defaults(&c);
        c.d_sae = D_SAE;
        if (given)
            CHECK(tool_config_option(&c, TOOL_OPT_DECODER_INIT_NORM, "0.5"), "option");
        sae_model *m, *want;
        sae_optimizer *o;
        CHECK(tool_make_sae(&c, D_IN, &m, &o) == SAE_OK, "make");
        CHECK(sae_model_create_arch(&want, D_IN, D_SAE, c.seed, SAE_ARCH_RELU, 0.0) == SAE_OK, "create");
        if (given)
            CHECK(sae_model_reinit(want, c.seed, 0.5) == SAE_OK, "reinit");
        CHECK(same_w_dec(m, want), "--decoder-init-norm (given %d): another W_dec", given);
        float *w = malloc(D_SAE * D_IN * sizeof *w);
        CHECK(w && sae_model_get_tensor(m, SAE_W_DEC, w, D_SAE * D_IN) == SAE_OK, "W_dec");
        double norm = 0.0;
        for (int j = 0; j < D_IN; j++)
            norm += (double)w[j] * w[j];
        CHECK(near(sqrt(norm), given ? 0.5 : 0.1, 1e-6), "row 0 has norm %g", sqrt(norm));
        free(w);
        sae_optimizer_free(o);
        sae_model_free(want);
        sae_model_free(m);
    }
}

int main(void)
{
    decoder_init_norm_option();
    compare(SAE_ARCH_RELU, 1.0);
    compare(SAE_ARCH_RELU, 2.75);
    compare(SAE_ARCH_TOPK, 0.3);
    compare(SAE_ARCH_JUMPRELU, 1.0);
    return check_finish();
}
