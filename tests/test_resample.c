/*
 * Dead features, their resampling and the feature-density histogram:
 * - the list of dead features, including a buffer smaller than the list;
 * - resampling changes exactly the dead features' rows, biases, Adam moments
 *   and activity counters (everything else byte-equal), sets them as Towards
 *   Monosemanticity specifies, is deterministic from the seed, and picks
 *   inputs with probability proportional to the squared loss (a chi-square
 *   test with a fixed seed, which the unsquared loss fails);
 * - the density histogram on a model whose firing counts are known;
 * - every bad input (status, nothing changed) and every allocation failure.
 * Uses the internal optimizer struct to set activity counters and to read the
 * Adam moments (test build).
 */
#include "nomem.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- state snapshots at the internal level ------------------------------------ */

typedef struct full_state {
    size_t total, d_sae;
    float *params, *m1, *m2;
    uint64_t *since;
    uint64_t steps;
    float param_absmax, m1_absmax, m2_max;
    double options[5];
} full_state;

static void state_take(full_state *s, const sae_model *m, const sae_optimizer *o)
{
    s->total = m->lay.total;
    s->d_sae = m->d_sae;
    size_t bytes = s->total * sizeof(float);
    s->params = malloc(bytes);
    s->m1 = malloc(bytes);
    s->m2 = malloc(bytes);
    s->since = malloc(s->d_sae * sizeof(uint64_t));
    memcpy(s->params, m->params, bytes);
    memcpy(s->m1, o->m1, bytes);
    memcpy(s->m2, o->m2, bytes);
    memcpy(s->since, o->since_fired, s->d_sae * sizeof(uint64_t));
    s->steps = o->steps;
    s->param_absmax = m->param_absmax;
    s->m1_absmax = o->m1_absmax;
    s->m2_max = o->m2_max;
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(sae_optimizer_get(o, k + 1, &s->options[k]), SAE_OK);
}

static bool state_equal(const full_state *s, const sae_model *m, const sae_optimizer *o)
{
    size_t bytes = s->total * sizeof(float);
    double options[5];
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(sae_optimizer_get(o, k + 1, &options[k]), SAE_OK);
    return memcmp(s->params, m->params, bytes) == 0 && memcmp(s->m1, o->m1, bytes) == 0 &&
           memcmp(s->m2, o->m2, bytes) == 0 &&
           memcmp(s->since, o->since_fired, s->d_sae * sizeof(uint64_t)) == 0 &&
           s->steps == o->steps && s->param_absmax == m->param_absmax &&
           s->m1_absmax == o->m1_absmax && s->m2_max == o->m2_max &&
           memcmp(s->options, options, sizeof options) == 0;
}

static void state_free(full_state *s)
{
    free(s->params);
    free(s->m1);
    free(s->m2);
    free(s->since);
}

/* ---- dead features --------------------------------------------------------------- */

START_TEST(dead_features_are_listed_in_order)
{
    sae_model *m;
    sae_optimizer *o;
    test_trained_pair(3, 7, 1, 3, &m, &o);
    const uint64_t since[7] = {0, 100, 5, 100, 99, 1000, 0};
    memcpy(o->since_fired, since, sizeof since);
    size_t idx[8], n = 0;
    for (int k = 0; k < 8; k++)
        idx[k] = 777;
    ck_assert_int_eq(sae_optimizer_dead_features(o, 100, idx, 8, &n), SAE_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert(idx[0] == 1 && idx[1] == 3 && idx[2] == 5 && idx[3] == 777);
    size_t count;
    ck_assert_int_eq(sae_optimizer_dead_count(o, 100, &count), SAE_OK);
    ck_assert_uint_eq(count, n);
    /* a small buffer: the first entries, the full total, the rest untouched */
    idx[0] = idx[1] = idx[2] = 777;
    ck_assert_int_eq(sae_optimizer_dead_features(o, 5, idx, 2, &n), SAE_OK);
    ck_assert_uint_eq(n, 5); /* 1, 2, 3, 4, 5 */
    ck_assert(idx[0] == 1 && idx[1] == 2 && idx[2] == 777);
    /* sizing call */
    ck_assert_int_eq(sae_optimizer_dead_features(o, 1, NULL, 0, &n), SAE_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert_int_eq(sae_optimizer_dead_features(o, 1001, idx, 8, &n), SAE_OK);
    ck_assert_uint_eq(n, 0);
    /* bad input */
    n = 42;
    ck_assert_int_eq(sae_optimizer_dead_features(NULL, 5, idx, 8, &n), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_dead_features(o, 0, idx, 8, &n), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_dead_features(o, 5, NULL, 8, &n), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_dead_features(o, 5, idx, 8, NULL), SAE_E_INVALID_ARG);
    ck_assert_uint_eq(n, 42);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* Features that really stop firing in training are listed. */
START_TEST(dead_features_follow_training)
{
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, 2, 4, 5), SAE_OK);
    const float w_enc[8] = {1, 0, 1, 0, 0, 1, 0, 1}; /* d_in x d_sae */
    const float b_enc[4] = {0, -1000, 0, -1000};     /* features 1 and 3 never fire */
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, w_enc, 8), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, b_enc, 4), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 1e-6), SAE_OK);
    float *x = test_gaussian(50, 2, 1.0, 3.0, 9); /* positive inputs: 0 and 2 fire */
    ck_assert_int_eq(sae_step(m, o, x, 50, NULL), SAE_OK);
    size_t idx[4], n;
    ck_assert_int_eq(sae_optimizer_dead_features(o, 50, idx, 4, &n), SAE_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert(idx[0] == 1 && idx[1] == 3);
    ck_assert_int_eq(sae_optimizer_dead_features(o, 51, idx, 4, &n), SAE_OK);
    ck_assert_uint_eq(n, 0);
    free(x);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* ---- resampling ------------------------------------------------------------------- */

static double row_norm(const float *row, size_t d)
{
    double s = 0.0;
    for (size_t j = 0; j < d; j++)
        s += (double)row[j] * row[j];
    return sqrt(s);
}

static bool all_zero(const float *v, size_t count)
{
    for (size_t k = 0; k < count; k++)
        if (v[k] != 0.0f)
            return false;
    return true;
}

/* Feature i of m and o (a live one) as in before: its encoder and decoder
 * rows, b_enc, their moments and its counter. */
static void expect_feature_unchanged(const sae_model *m, const sae_optimizer *o,
                                     const full_state *before, size_t i)
{
    const sae_layout *lay = &m->lay;
    const size_t d_in = m->d_in, rows[2] = {lay->w_enc_t + i * d_in, lay->w_dec + i * d_in};
    for (int r = 0; r < 2; r++) {
        ck_assert_mem_eq(m->params + rows[r], before->params + rows[r], d_in * 4);
        ck_assert_mem_eq(o->m1 + rows[r], before->m1 + rows[r], d_in * 4);
        ck_assert_mem_eq(o->m2 + rows[r], before->m2 + rows[r], d_in * 4);
    }
    ck_assert_mem_eq(m->params + lay->b_enc + i, before->params + lay->b_enc + i, 4);
    ck_assert_mem_eq(o->m1 + lay->b_enc + i, before->m1 + lay->b_enc + i, 4);
    ck_assert_mem_eq(o->m2 + lay->b_enc + i, before->m2 + lay->b_enc + i, 4);
    ck_assert_uint_eq(o->since_fired[i], before->since[i]);
}

/* Feature i (a dead one) resampled: its moments (nonzero before) and counter
 * reset, b_enc 0, the decoder row the unit direction of one of the n inputs
 * x, the encoder row the same direction at norm enc_norm. */
static void expect_feature_resampled(const sae_model *m, const sae_optimizer *o,
                                     const full_state *before, size_t i, const float *x,
                                     size_t n, double enc_norm)
{
    const sae_layout *lay = &m->lay;
    const size_t d_in = m->d_in, rows[2] = {lay->w_enc_t + i * d_in, lay->w_dec + i * d_in};
    ck_assert(!all_zero(before->m1 + rows[0], d_in) && !all_zero(before->m2 + rows[1], d_in));
    for (int r = 0; r < 2; r++) {
        ck_assert(all_zero(o->m1 + rows[r], d_in));
        ck_assert(all_zero(o->m2 + rows[r], d_in));
    }
    ck_assert(o->m1[lay->b_enc + i] == 0.0f && o->m2[lay->b_enc + i] == 0.0f);
    ck_assert(m->params[lay->b_enc + i] == 0.0f);
    ck_assert_uint_eq(o->since_fired[i], 0);
    const float *dec = m->params + rows[1], *enc = m->params + rows[0];
    ck_assert_double_eq_tol(row_norm(dec, d_in), 1.0, 1e-6);
    ck_assert_double_eq_tol(row_norm(enc, d_in), enc_norm, 1e-6 * enc_norm);
    size_t match = n;
    for (size_t t = 0; t < n && match == n; t++) {
        double norm = row_norm(x + t * d_in, d_in), err = 0.0;
        for (size_t j = 0; j < d_in; j++)
            err = fmax(err, fabs(dec[j] - x[t * d_in + j] / norm));
        if (err < 1e-6)
            match = t;
    }
    ck_assert_msg(match < n, "feature %zu: decoder row is no input's direction", i);
    for (size_t j = 0; j < d_in; j++)
        ck_assert_double_eq_tol(enc[j], dec[j] * enc_norm, 1e-6 * enc_norm);
}

START_TEST(resampling_changes_only_the_dead_features)
{
    const size_t d_in = 8, d_sae = 16, n = 64;
    const uint64_t window = 1000;
    sae_model *m;
    sae_optimizer *o;
    test_trained_pair(d_in, d_sae, 11, 3, &m, &o);
    /* declare dead three features whose moments are not zero (they fired in
     * the steps so far), so that the reset is visible */
    size_t dead[3], n_found = 0;
    for (size_t i = 0; i < d_sae; i++) {
        o->since_fired[i] = i % 3; /* live */
        if (n_found < 3 && i % 2 == 1 && !all_zero(o->m1 + m->lay.w_dec + i * d_in, d_in) &&
            !all_zero(o->m1 + m->lay.w_enc_t + i * d_in, d_in))
            dead[n_found++] = i;
    }
    ck_assert_uint_eq(n_found, 3);
    for (int k = 0; k < 3; k++)
        o->since_fired[dead[k]] = window + (uint64_t)k;
    float *x = test_gaussian(n, d_in, 1.0, 0.2, 13);
    full_state before;
    state_take(&before, m, o);
    /* the mean live encoder norm, in the SAELens layout through the API */
    float *w_enc = malloc(d_in * d_sae * sizeof(float));
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_ENC, w_enc, d_in * d_sae), SAE_OK);
    double live_sum = 0.0;
    for (size_t i = 0; i < d_sae; i++) {
        if (i == dead[0] || i == dead[1] || i == dead[2])
            continue;
        double s = 0.0;
        for (size_t j = 0; j < d_in; j++)
            s += pow(w_enc[j * d_sae + i], 2);
        live_sum += sqrt(s);
    }
    const double enc_norm = 0.2 * live_sum / 13.0;

    size_t n_resampled = 0;
    ck_assert_int_eq(sae_resample_dead(m, o, x, n, window, 42, &n_resampled), SAE_OK);
    ck_assert_uint_eq(n_resampled, 3);

    const sae_layout *lay = &m->lay;
    for (size_t i = 0; i < d_sae; i++) {
        if (i == dead[0] || i == dead[1] || i == dead[2])
            expect_feature_resampled(m, o, &before, i, x, n, enc_norm);
        else
            expect_feature_unchanged(m, o, &before, i);
    }
    /* b_dec, its moments, the padding, the step count, the options: untouched */
    ck_assert_mem_eq(m->params + lay->b_dec, before.params + lay->b_dec,
                     (lay->total - lay->b_dec) * 4);
    ck_assert_mem_eq(o->m1 + lay->b_dec, before.m1 + lay->b_dec, (lay->total - lay->b_dec) * 4);
    ck_assert_mem_eq(o->m2 + lay->b_dec, before.m2 + lay->b_dec, (lay->total - lay->b_dec) * 4);
    ck_assert_uint_eq(o->steps, before.steps);
    /* the cached maxima: param_absmax exact, the moment maxima still bounds */
    ck_assert(m->param_absmax == sae__absmax(m->params, lay->total));
    ck_assert(o->m1_absmax >= sae__absmax(o->m1, lay->total));
    ck_assert(o->m2_max >= sae__absmax(o->m2, lay->total));
    /* no longer dead, and training goes on */
    size_t n_dead;
    ck_assert_int_eq(sae_optimizer_dead_count(o, window, &n_dead), SAE_OK);
    ck_assert_uint_eq(n_dead, 0);
    ck_assert_int_eq(sae_step(m, o, x, n, NULL), SAE_OK);

    /* the same call on a copy gives the same bits; another seed, other picks */
    sae_model *m2, *m3;
    sae_optimizer *o2, *o3;
    test_trained_pair(d_in, d_sae, 11, 3, &m2, &o2);
    test_trained_pair(d_in, d_sae, 11, 3, &m3, &o3);
    memcpy(o2->since_fired, before.since, d_sae * sizeof(uint64_t));
    memcpy(o3->since_fired, before.since, d_sae * sizeof(uint64_t));
    ck_assert_int_eq(sae_resample_dead(m2, o2, x, n, window, 42, NULL), SAE_OK);
    ck_assert_int_eq(sae_resample_dead(m3, o3, x, n, window, 43, NULL), SAE_OK);
    full_state after;
    state_take(&after, m2, o2);
    sae_step(m2, o2, x, n, NULL); /* bring m2 to m's state: one step after resampling */
    ck_assert_mem_eq(m2->params, m->params, lay->total * 4);
    ck_assert(memcmp(after.params, m3->params, lay->total * 4) != 0);
    state_free(&after);
    sae_optimizer_free(o2);
    sae_model_free(m2);
    sae_optimizer_free(o3);
    sae_model_free(m3);

    state_free(&before);
    free(w_enc);
    free(x);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* A model whose reconstruction is b_dec for every input: the live feature's
 * bias keeps it silent, and the dead ones do not count. Its loss on x_t is
 * then ||x_t - b_dec||^2, known exactly. */
static void silent_model(size_t d_in, size_t d_sae, const float *b_dec, sae_model **m,
                         sae_optimizer **o)
{
    ck_assert_int_eq(sae_model_create(m, d_in, d_sae, 3), SAE_OK);
    float *b_enc = malloc(d_sae * sizeof(float));
    for (size_t i = 0; i < d_sae; i++)
        b_enc[i] = -1e6f;
    ck_assert_int_eq(sae_model_set_tensor(*m, SAE_B_ENC, b_enc, d_sae), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(*m, SAE_B_DEC, b_dec, d_in), SAE_OK);
    free(b_enc);
    ck_assert_int_eq(sae_optimizer_create(o, *m), SAE_OK);
    for (size_t i = 1; i < d_sae; i++)
        (*o)->since_fired[i] = 10; /* every feature but 0 is dead (window 10) */
}

/* Which input (by direction) each dead feature's decoder row came from. */
static void count_picks(const sae_model *m, const float *x, size_t n, size_t *counts)
{
    const size_t d_in = m->d_in;
    memset(counts, 0, n * sizeof(size_t));
    for (size_t i = 1; i < m->d_sae; i++) {
        const float *dec = sae__w_dec(m) + i * d_in;
        size_t found = n;
        for (size_t t = 0; t < n && found == n; t++) {
            double norm = row_norm(x + t * d_in, d_in), err = 0.0;
            if (norm == 0.0)
                continue;
            for (size_t j = 0; j < d_in; j++)
                err = fmax(err, fabs(dec[j] - x[t * d_in + j] / norm));
            if (err < 1e-6)
                found = t;
        }
        ck_assert_msg(found < n, "feature %zu matches no input", i);
        counts[found]++;
    }
}

/* Three inputs with losses 1, 2 and 3 (so squared losses 1, 4, 9): 1999 dead
 * features draw with probabilities 1/14, 4/14, 9/14. A chi-square test at
 * the 0.1% level (2 degrees of freedom: 13.82) accepts that, and rejects
 * probabilities proportional to the unsquared loss (1/6, 2/6, 3/6). */
START_TEST(resampling_picks_inputs_by_squared_loss)
{
    const size_t d_in = 3, d_sae = 2000, n = 3;
    const float zero[3] = {0, 0, 0};
    const float x[9] = {1, 0, 0, 0, 1.41421356f, 0, 0, 0, 1.7320508f};
    double loss[3];
    for (size_t t = 0; t < n; t++)
        loss[t] = pow(row_norm(x + t * d_in, d_in), 2);
    sae_model *m;
    sae_optimizer *o;
    silent_model(d_in, d_sae, zero, &m, &o);
    size_t resampled;
    ck_assert_int_eq(sae_resample_dead(m, o, x, n, 10, 2024, &resampled), SAE_OK);
    ck_assert_uint_eq(resampled, d_sae - 1);
    size_t counts[3];
    count_picks(m, x, n, counts);
    double chi2_sq = 0.0, chi2_lin = 0.0, sum_sq = 0.0, sum_lin = 0.0;
    for (size_t t = 0; t < n; t++) {
        sum_sq += loss[t] * loss[t];
        sum_lin += loss[t];
    }
    for (size_t t = 0; t < n; t++) {
        double e_sq = (double)(d_sae - 1) * loss[t] * loss[t] / sum_sq;
        double e_lin = (double)(d_sae - 1) * loss[t] / sum_lin;
        chi2_sq += pow(counts[t] - e_sq, 2) / e_sq;
        chi2_lin += pow(counts[t] - e_lin, 2) / e_lin;
    }
    printf("picks %zu %zu %zu: chi-square %.2f against loss^2, %.1f against loss\n", counts[0],
           counts[1], counts[2], chi2_sq, chi2_lin);
    ck_assert_double_lt(chi2_sq, 13.82);
    ck_assert_double_gt(chi2_lin, 13.82);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* One input with a huge loss is chosen by every dead feature; an all-zero
 * input is never chosen, whatever its loss; and when every loss is 0 the
 * nonzero inputs are used. */
START_TEST(resampling_special_inputs)
{
    const size_t d_in = 4, d_sae = 50, n = 20;
    float b_dec[4] = {0, 0, 0, 0};
    float *x = test_gaussian(n, d_in, 0.1, 0.0, 77);
    for (size_t j = 0; j < d_in; j++)
        x[7 * d_in + j] = 30.0f + (float)j; /* loss ~ 4000 vs ~ 0.04: 1e10 more likely */
    sae_model *m;
    sae_optimizer *o;
    silent_model(d_in, d_sae, b_dec, &m, &o);
    ck_assert_int_eq(sae_resample_dead(m, o, x, n, 10, 1, NULL), SAE_OK);
    size_t *counts = malloc(n * sizeof(size_t));
    count_picks(m, x, n, counts);
    ck_assert_uint_eq(counts[7], d_sae - 1);
    sae_optimizer_free(o);
    sae_model_free(m);

    /* b_dec far from 0: the zero input has the largest loss but no direction */
    for (size_t j = 0; j < d_in; j++) {
        b_dec[j] = 100.0f;
        x[7 * d_in + j] = 0.0f;
    }
    silent_model(d_in, d_sae, b_dec, &m, &o);
    ck_assert_int_eq(sae_resample_dead(m, o, x, n, 10, 1, NULL), SAE_OK);
    count_picks(m, x, n, counts);
    ck_assert_uint_eq(counts[7], 0);
    sae_optimizer_free(o);
    sae_model_free(m);

    /* every input equals b_dec: all losses are 0, the picks are uniform */
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d_in; j++)
            x[t * d_in + j] = b_dec[j];
    silent_model(d_in, d_sae, b_dec, &m, &o);
    size_t resampled = 0;
    ck_assert_int_eq(sae_resample_dead(m, o, x, n, 10, 1, &resampled), SAE_OK);
    ck_assert_uint_eq(resampled, d_sae - 1);
    for (size_t i = 1; i < d_sae; i++)
        for (size_t j = 0; j < d_in; j++)
            ck_assert_double_eq_tol(sae__w_dec(m)[i * d_in + j], 0.5, 1e-7);
    sae_optimizer_free(o);
    sae_model_free(m);
    free(counts);
    free(x);
}
END_TEST

START_TEST(resampling_with_no_dead_feature_changes_nothing)
{
    sae_model *m;
    sae_optimizer *o;
    test_trained_pair(4, 6, 3, 3, &m, &o);
    float *x = test_gaussian(10, 4, 1.0, 0.0, 4);
    full_state before;
    state_take(&before, m, o);
    size_t resampled = 99;
    size_t calls = sae__test_alloc_calls;
    ck_assert_int_eq(sae_resample_dead(m, o, x, 10, UINT64_MAX, 1, &resampled), SAE_OK);
    ck_assert_uint_eq(resampled, 0);
    ck_assert_uint_eq(sae__test_alloc_calls, calls);
    ck_assert(state_equal(&before, m, o));
    state_free(&before);
    free(x);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

static void expect_resample_fails(sae_model *m, sae_optimizer *o, sae_model *cm,
                                  sae_optimizer *co, const float *x, size_t n, uint64_t window,
                                  int expect)
{
    full_state before;
    state_take(&before, m, o);
    size_t resampled = 99;
    ck_assert_int_eq(sae_resample_dead(cm, co, x, n, window, 5, &resampled), expect);
    ck_assert_uint_eq(resampled, 99);
    ck_assert(state_equal(&before, m, o));
    state_free(&before);
}

START_TEST(resampling_rejects_bad_input_and_changes_nothing)
{
    const size_t d_in = 4, d_sae = 6, n = 10;
    sae_model *m, *other;
    sae_optimizer *o, *other_o;
    test_trained_pair(d_in, d_sae, 3, 3, &m, &o);
    ck_assert_int_eq(sae_model_create(&other, d_in + 1, d_sae, 1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&other_o, other), SAE_OK);
    o->since_fired[1] = o->since_fired[4] = 500;
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 4);
    expect_resample_fails(m, o, NULL, o, x, n, 100, SAE_E_INVALID_ARG);
    expect_resample_fails(m, o, m, NULL, x, n, 100, SAE_E_INVALID_ARG);
    expect_resample_fails(m, o, m, o, NULL, n, 100, SAE_E_INVALID_ARG);
    expect_resample_fails(m, o, m, o, x, 0, 100, SAE_E_INVALID_ARG);
    expect_resample_fails(m, o, m, o, x, SIZE_MAX / 8, 100, SAE_E_INVALID_ARG);
    expect_resample_fails(m, o, m, o, x, n, 0, SAE_E_INVALID_ARG);
    expect_resample_fails(m, o, m, other_o, x, n, 100, SAE_E_INVALID_ARG);
    expect_resample_fails(m, o, other, o, x, n, 100, SAE_E_INVALID_ARG);
    x[n * d_in - 1] = NAN;
    expect_resample_fails(m, o, m, o, x, n, 100, SAE_E_NONFINITE);
    x[0] = INFINITY;
    expect_resample_fails(m, o, m, o, x, n, 100, SAE_E_NONFINITE);
    /* all-zero inputs while features are dead: no direction to copy (the
     * model reconstructs them exactly: b_dec = 0 and no feature fires) */
    float zeros[40] = {0};
    float b_enc[6] = {-1, -1, -1, -1, -1, -1}, b_dec[4] = {0};
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, b_enc, d_sae), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_DEC, b_dec, d_in), SAE_OK);
    expect_resample_fails(m, o, m, o, zeros, n, 100, SAE_E_INVALID_ARG);
    /* every feature dead: no live encoder norm */
    free(x);
    x = test_gaussian(n, d_in, 1.0, 0.0, 4);
    for (size_t i = 0; i < d_sae; i++)
        o->since_fired[i] = 100;
    expect_resample_fails(m, o, m, o, x, n, 100, SAE_E_STATE);
    /* a reconstruction that overflows float */
    o->since_fired[0] = 0;
    float w_dec[24], w_enc[24];
    for (int k = 0; k < 24; k++) {
        w_dec[k] = 3e38f;
        w_enc[k] = 1.0f;
    }
    float b_big[6] = {100, 100, 100, 100, 100, 100};
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_DEC, w_dec, 24), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, w_enc, 24), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, b_big, 6), SAE_OK);
    expect_resample_fails(m, o, m, o, x, n, 100, SAE_E_NONFINITE);
    free(x);
    sae_optimizer_free(other_o);
    sae_model_free(other);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

typedef struct nomem_ctx {
    sae_model *m;
    sae_optimizer *o;
    float *x;
    size_t n;
    full_state before;
    uint64_t counts[8];
} nomem_ctx;

static int call_resample(void *p)
{
    nomem_ctx *c = p;
    return sae_resample_dead(c->m, c->o, c->x, c->n, 100, 9, NULL);
}

static void resample_unchanged(void *p)
{
    nomem_ctx *c = p;
    ck_assert(state_equal(&c->before, c->m, c->o));
}

START_TEST(resampling_fails_cleanly_at_every_allocation)
{
    nomem_ctx c;
    test_trained_pair(4, 6, 3, 3, &c.m, &c.o);
    c.o->since_fired[2] = 100;
    c.n = 2 * SAE_BLOCK_TOKENS + 5; /* several blocks */
    c.x = test_gaussian(c.n, 4, 1.0, 0.0, 4);
    state_take(&c.before, c.m, c.o);
    /* 7 sites: the forward pass's 3 scratch buffers (norms, selection scratch,
     * centred block) and its GEMM context, then the cumulative weights, x_hat
     * and f */
    ck_assert_int_eq(nomem_fail_each_allocation(call_resample, &c, resample_unchanged), 7);
    ck_assert(!state_equal(&c.before, c.m, c.o)); /* the last call succeeded */
    state_free(&c.before);
    free(c.x);
    sae_optimizer_free(c.o);
    sae_model_free(c.m);
}
END_TEST

/* ---- density histogram -------------------------------------------------------------- */

/* d_in = 1, x_t = t + 1 for t < 1000: feature i with W_enc = 1 and
 * b_enc = -(1000 - c_i) - 0.5 fires on exactly the c_i largest inputs. */
static sae_model *counting_model(const int *c, size_t d_sae)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, 1, d_sae, 1), SAE_OK);
    float *w = malloc(d_sae * sizeof(float)), *b = malloc(d_sae * sizeof(float));
    for (size_t i = 0; i < d_sae; i++) {
        w[i] = 1.0f;
        b[i] = -(float)(1000 - c[i]) - 0.5f;
    }
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, w, d_sae), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, b, d_sae), SAE_OK);
    free(w);
    free(b);
    return m;
}

START_TEST(density_histogram_of_known_counts)
{
    /* densities 0, 0, .002, .003, .03, .3, 1, .005: log10 -2.70, -2.52,
     * -1.52, -0.52, 0, -2.30 for the live ones */
    const int c[8] = {0, 0, 2, 3, 30, 300, 1000, 5};
    sae_model *m = counting_model(c, 8);
    float x[1000];
    for (int t = 0; t < 1000; t++)
        x[t] = (float)(t + 1);
    uint64_t counts[8];
    size_t n_dead = 99;
    /* [-4, 0) in 8 bins of half a decade: -2.70 -> bin 2, -2.52 -> 2, -2.30 -> 3,
     * -1.52 -> 4, -0.52 -> 6, 0 -> clamped into bin 7 */
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 1000, -4, 0, 8, counts, &n_dead), SAE_OK);
    const uint64_t want[8] = {0, 0, 2, 1, 1, 0, 1, 1};
    ck_assert_mem_eq(counts, want, sizeof want);
    ck_assert_uint_eq(n_dead, 2);
    /* [-2, 0] in 4 bins: everything below -2 clamps into bin 0 */
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 1000, -2, 0, 4, counts, &n_dead), SAE_OK);
    /* -1.52 -> 0.96 -> bin 0; -0.52 -> 2.96 -> bin 2; 0 -> 4: clamped to 3 */
    const uint64_t want4[4] = {4, 0, 1, 1};
    ck_assert_mem_eq(counts, want4, sizeof want4);
    ck_assert_uint_eq(n_dead, 2);
    /* the first 100 tokens (inputs 1 .. 100) only: just the feature with
     * c = 1000 fires; one bin */
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 100, -4, 0, 1, counts, &n_dead), SAE_OK);
    ck_assert_uint_eq(counts[0], 1);
    ck_assert_uint_eq(n_dead, 7);
    /* the firing counts themselves, accumulated over a stream of three
     * batches: all 1000 tokens, the first 100, the last 900 */
    uint64_t fired[8] = {0};
    ck_assert_int_eq(sae_feature_fire_counts(m, x, 1000, fired, 8), SAE_OK);
    ck_assert_int_eq(sae_feature_fire_counts(m, x, 100, fired, 8), SAE_OK);
    ck_assert_int_eq(sae_feature_fire_counts(m, x + 100, 900, fired, 8), SAE_OK);
    for (int i = 0; i < 8; i++)
        ck_assert_uint_eq(fired[i], 2 * (uint64_t)c[i]);
    sae_model_free(m);
}
END_TEST

/* On random data, against counts taken from sae_encode. */
START_TEST(density_histogram_matches_encode)
{
    const size_t d_in = 8, d_sae = 40, n = 1500; /* two blocks */
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 12), SAE_OK);
    float *b = test_gaussian(1, d_sae, 0.15, -0.1, 3);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, b, d_sae), SAE_OK);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 14);
    float *f = malloc(n * d_sae * sizeof(float));
    ck_assert_int_eq(sae_encode(m, x, n, f), SAE_OK);
    const size_t n_bins = 12;
    const double lo = -3.5, hi = 0.1;
    uint64_t want[12] = {0}, got[12];
    size_t want_dead = 0, got_dead;
    for (size_t i = 0; i < d_sae; i++) {
        size_t fired = 0;
        for (size_t t = 0; t < n; t++)
            fired += f[t * d_sae + i] > 0.0f;
        if (fired == 0) {
            want_dead++;
            continue;
        }
        double pos = floor((log10((double)fired / n) - lo) * n_bins / (hi - lo));
        want[pos < 0 ? 0 : pos >= n_bins ? n_bins - 1 : (size_t)pos]++;
    }
    ck_assert_int_eq(sae_feature_density_histogram(m, x, n, lo, hi, n_bins, got, &got_dead),
                     SAE_OK);
    /* the firing counts are those of sae_encode's features */
    uint64_t fired[40] = {0};
    ck_assert_int_eq(sae_feature_fire_counts(m, x, n, fired, d_sae), SAE_OK);
    for (size_t i = 0; i < d_sae; i++) {
        uint64_t want_fired = 0;
        for (size_t t = 0; t < n; t++)
            want_fired += f[t * d_sae + i] > 0.0f;
        ck_assert_uint_eq(fired[i], want_fired);
    }
    ck_assert_mem_eq(got, want, sizeof want);
    ck_assert_uint_eq(got_dead, want_dead);
    uint64_t sum = got_dead;
    size_t nonempty = 0;
    for (size_t k = 0; k < n_bins; k++) {
        sum += got[k];
        nonempty += got[k] > 0;
    }
    ck_assert_uint_eq(sum, d_sae);
    ck_assert_uint_ge(nonempty, 3); /* a spread of densities, not one bin */
    free(f);
    free(x);
    free(b);
    sae_model_free(m);
}
END_TEST

START_TEST(density_histogram_rejects_bad_input)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, 2, 3, 1), SAE_OK);
    float x[4] = {1, 2, 3, 4};
    uint64_t counts[4] = {7, 7, 7, 7};
    const uint64_t sevens[4] = {7, 7, 7, 7};
    size_t dead = 99;
    ck_assert_int_eq(sae_feature_density_histogram(NULL, x, 2, -3, 0, 4, counts, &dead),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_density_histogram(m, NULL, 2, -3, 0, 4, counts, &dead),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 2, -3, 0, 4, NULL, &dead),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 2, -3, 0, 4, counts, NULL),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 0, -3, 0, 4, counts, &dead),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_density_histogram(m, x, SIZE_MAX / 4, -3, 0, 4, counts, &dead),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 2, -3, 0, 0, counts, &dead),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 2, 0, -3, 4, counts, &dead),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 2, -1, -1, 4, counts, &dead),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 2, NAN, 0, 4, counts, &dead),
                     SAE_E_NONFINITE);
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 2, -3, INFINITY, 4, counts, &dead),
                     SAE_E_NONFINITE);
    x[3] = NAN;
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 2, -3, 0, 4, counts, &dead),
                     SAE_E_NONFINITE);
    ck_assert_mem_eq(counts, sevens, sizeof sevens);
    ck_assert_uint_eq(dead, 99);
    sae_model_free(m);
}
END_TEST

static int call_histogram(void *p)
{
    nomem_ctx *c = p;
    size_t dead;
    return sae_feature_density_histogram(c->m, c->x, c->n, -4, 0, 8, c->counts, &dead);
}

static void histogram_unchanged(void *p)
{
    nomem_ctx *c = p;
    for (int k = 0; k < 8; k++)
        ck_assert_uint_eq(c->counts[k], 5);
}

START_TEST(fire_counts_reject_bad_input)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, 2, 3, 1), SAE_OK);
    float x[4] = {1, 2, 3, 4};
    uint64_t counts[3] = {7, 7, 7};
    const uint64_t sevens[3] = {7, 7, 7};
    ck_assert_int_eq(sae_feature_fire_counts(NULL, x, 2, counts, 3), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_fire_counts(m, NULL, 2, counts, 3), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_fire_counts(m, x, 2, NULL, 3), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_fire_counts(m, x, 0, counts, 3), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(), "sae_feature_fire_counts: n_tokens is 0");
    ck_assert_int_eq(sae_feature_fire_counts(m, x, SIZE_MAX / 4, counts, 3), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_fire_counts(m, x, 2, counts, 2), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(), "sae_feature_fire_counts: count is 2, not d_sae = 3");
    ck_assert_int_eq(sae_feature_fire_counts(m, x, 2, counts, 4), SAE_E_INVALID_ARG);
    x[3] = NAN;
    ck_assert_int_eq(sae_feature_fire_counts(m, x, 2, counts, 3), SAE_E_NONFINITE);
    ck_assert_str_eq(sae_error_detail(), "sae_feature_fire_counts: x[3] is NaN");
    ck_assert_mem_eq(counts, sevens, sizeof sevens);
    /* a counter that would wrap: refused before any counter changes */
    x[3] = 4;
    float big_b_enc[3] = {10, 10, 10}; /* every feature fires on every token */
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, big_b_enc, 3), SAE_OK);
    uint64_t nearly[3] = {0, UINT64_MAX - 3, UINT64_MAX - 2};
    ck_assert_int_eq(sae_feature_fire_counts(m, x, 2, nearly, 3), SAE_OK);
    const uint64_t full[3] = {2, UINT64_MAX - 1, UINT64_MAX};
    ck_assert_mem_eq(nearly, full, sizeof full);
    ck_assert_int_eq(sae_feature_fire_counts(m, x, 2, nearly, 3), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(), "sae_feature_fire_counts: counts[1] would pass 2^64 - 1");
    ck_assert_mem_eq(nearly, full, sizeof full);
    sae_model_free(m);
}
END_TEST

static int call_fire_counts(void *p)
{
    nomem_ctx *c = p;
    return sae_feature_fire_counts(c->m, c->x, c->n, c->counts, 6);
}

/* _i = 0: the histogram; 1: the firing counts. 5 allocation sites each: the
 * counters, the forward pass's 3 scratch buffers and f. */
START_TEST(metrics_fail_cleanly_at_every_allocation)
{
    nomem_ctx c;
    ck_assert_int_eq(sae_model_create(&c.m, 4, 6, 2), SAE_OK);
    c.n = 50;
    c.x = test_gaussian(c.n, 4, 1.0, 0.0, 4);
    for (int k = 0; k < 8; k++)
        c.counts[k] = 5;
    nomem_call call = _i == 0 ? call_histogram : call_fire_counts;
    /* the forward pass's buffers and GEMM context, and the counts */
    ck_assert_int_eq(nomem_fail_each_allocation(call, &c, histogram_unchanged), 6);
    free(c.x);
    sae_model_free(c.m);
}
END_TEST

static Suite *resample_suite(void)
{
    Suite *s = suite_create("resample");
    TCase *dead = tcase_create("dead");
    tcase_set_timeout(dead, 120);
    tcase_add_test(dead, dead_features_are_listed_in_order);
    tcase_add_test(dead, dead_features_follow_training);
    tcase_add_test(dead, resampling_changes_only_the_dead_features);
    tcase_add_test(dead, resampling_picks_inputs_by_squared_loss);
    tcase_add_test(dead, resampling_special_inputs);
    tcase_add_test(dead, resampling_with_no_dead_feature_changes_nothing);
    tcase_add_test(dead, resampling_rejects_bad_input_and_changes_nothing);
    tcase_add_test(dead, resampling_fails_cleanly_at_every_allocation);
    suite_add_tcase(s, dead);
    TCase *density = tcase_create("density");
    tcase_set_timeout(density, 120);
    tcase_add_test(density, density_histogram_of_known_counts);
    tcase_add_test(density, density_histogram_matches_encode);
    tcase_add_test(density, density_histogram_rejects_bad_input);
    tcase_add_test(density, fire_counts_reject_bad_input);
    tcase_add_loop_test(density, metrics_fail_cleanly_at_every_allocation, 0, 2);
    suite_add_tcase(s, density);
    return s;
}

TEST_MAIN(resample_suite)
