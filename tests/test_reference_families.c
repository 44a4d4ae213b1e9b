/*
 * The families' reference (tests/reference_families.c) checked on its own,
 * before any library code is compared with it: its gradients against central
 * finite differences of its loss in double (AuxK's residual held fixed), the
 * JumpReLU estimator against the exact derivative of its surrogate, agreement
 * with the older reference (tests/reference.c) on the families both cover,
 * the special cases where a new family is an old one (one Matryoshka level is
 * BatchTopK; a gated SAE whose paths agree is a ReLU SAE), SAELens's decoder-norm
 * fold, and the synthetic transcoder data.
 */
#include "reference.h"
#include "reference_families.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *floats(size_t count, double sd, uint64_t seed)
{
    return test_gaussian(count, 1, sd, 0.0, seed);
}

typedef struct fd_result {
    double max_err;   /* largest |finite difference - analytic| */
    double scale;     /* largest |analytic| */
    size_t checked;
} fd_result;

/* Central differences of the loss in every parameter (log thresholds only
 * when `thresholds`), with AuxK's residual held at its value at r. */
static fd_result finite_differences(reff_model *r, const reff_train *t, const float *x,
                                    const float *y, size_t n, bool thresholds)
{
    reff_model g;
    reff_alloc_like(&g, r);
    reff_gradients(r, t, x, y, n, &g);
    double *e = malloc(n * r->d_out * sizeof(double));
    double *w_dec = malloc(r->d_sae * r->d_out * sizeof(double));
    double *b_dec = malloc(r->d_out * sizeof(double));
    ck_assert(e && w_dec && b_dec);
    reff_residual(r, t, x, y, n, e);
    memcpy(w_dec, r->W_dec, r->d_sae * r->d_out * sizeof(double));
    memcpy(b_dec, r->b_dec, r->d_out * sizeof(double));
    const reff_held held = {e, w_dec, b_dec};
    fd_result res = {0.0, 0.0, 0};
    for (size_t k = 0; k < reff_n_params(r); k++) {
        bool is_threshold = strcmp(reff_param_tensor(r, k), "log_threshold") == 0;
        if (is_threshold != thresholds)
            continue;
        double *p = reff_param(r, k), saved = *p, h = 1e-6 * fmax(1.0, fabs(saved));
        reff_losses up, down;
        *p = saved + h;
        reff_loss(r, t, x, y, n, &held, &up);
        *p = saved - h;
        reff_loss(r, t, x, y, n, &held, &down);
        *p = saved;
        double fd = (up.loss - down.loss) / (2.0 * h), an = *reff_param(&g, k);
        if (fabs(fd - an) > res.max_err)
            res.max_err = fabs(fd - an);
        res.scale = fmax(res.scale, fabs(an));
        res.checked++;
    }
    free(e);
    free(w_dec);
    free(b_dec);
    reff_free(&g);
    return res;
}

static void check_fd(const char *what, reff_model *r, const reff_train *t, const float *x,
                     const float *y, size_t n)
{
    fd_result res = finite_differences(r, t, x, y, n, false);
    printf("%-34s %4zu parameters, max |fd - analytic| %.2e (largest gradient %.3f)\n", what,
           res.checked, res.max_err, res.scale);
    ck_assert_double_gt(res.scale, 1e-3);
    ck_assert_msg(res.max_err < 1e-7 * (1.0 + res.scale), "%s: fd error %g (scale %g)", what,
                  res.max_err, res.scale);
}

/* dead: every third feature, so AuxK has candidates */
static unsigned char *every_third(size_t d_sae)
{
    unsigned char *dead = calloc(d_sae, 1);
    ck_assert_ptr_nonnull(dead);
    for (size_t i = 0; i < d_sae; i += 3)
        dead[i] = 1;
    return dead;
}

START_TEST(gated_gradients_match_finite_differences)
{
    const size_t d_in = 6, d_sae = 10, n = 9;
    reff_model r;
    reff_alloc(&r, REFF_GATED, REFF_AUTOENCODER, d_in, d_in, d_sae, 0, NULL, 0);
    reff_randomize(&r, 0.5, 11);
    float *x = floats(n * d_in, 1.0, 12);
    reff_train t = {.lambda = 0.3};
    reff_losses l;
    reff_loss(&r, &t, x, NULL, n, NULL, &l);
    /* every part of the loss is present */
    ck_assert_double_gt(l.l2, 0.0);
    ck_assert_double_gt(l.penalty, 0.0);
    ck_assert_double_gt(l.aux, 0.0);
    ck_assert_double_gt(l.l0, 0.5);
    ck_assert_double_eq_tol(l.loss, l.l2 + 0.3 * l.penalty + l.aux, 1e-12);
    check_fd("gated", &r, &t, x, NULL, n);
    free(x);
    reff_free(&r);
}
END_TEST

START_TEST(matryoshka_gradients_match_finite_differences)
{
    const size_t d_in = 6, d_sae = 12, n = 8;
    const size_t widths[3] = {3, 7, 12};
    reff_model r;
    reff_alloc(&r, REFF_MATRYOSHKA, REFF_AUTOENCODER, d_in, d_in, d_sae, 3, widths, 3);
    reff_randomize(&r, 0.5, 21);
    float *x = floats(n * d_in, 1.0, 22);
    unsigned char *dead = every_third(d_sae);
    reff_train t = {.auxk_coeff = 0.5, .k_aux = 2, .dead = dead};
    reff_losses l;
    reff_loss(&r, &t, x, NULL, n, NULL, &l);
    ck_assert_double_gt(l.aux, 0.0);
    ck_assert_double_eq(l.l2, l.level_l2[2]);
    ck_assert_double_eq_tol(l.loss, l.level_l2[0] + l.level_l2[1] + l.level_l2[2] + 0.5 * l.aux,
                            1e-12);
    ck_assert_double_le(l.l0, 3.0 + 1e-12); /* BatchTopK keeps n k over the batch */
    check_fd("matryoshka batchtopk + auxk", &r, &t, x, NULL, n);
    free(dead);
    free(x);
    reff_free(&r);
}
END_TEST

START_TEST(transcoder_gradients_match_finite_differences)
{
    const size_t d_in = 6, d_out = 4, d_sae = 10, n = 8;
    float *x = floats(n * d_in, 1.0, 31), *y = floats(n * d_out, 1.0, 32);
    unsigned char *dead = every_third(d_sae);
    static const struct {
        const char *what;
        int arch, kind;
        double param;
    } cases[] = {
        {"transcoder relu", REFF_RELU, REFF_TRANSCODER, 0},
        {"skip transcoder relu", REFF_RELU, REFF_SKIP_TRANSCODER, 0},
        {"skip transcoder topk + auxk", REFF_TOPK, REFF_SKIP_TRANSCODER, 3},
        {"transcoder batchtopk + auxk", REFF_BATCHTOPK, REFF_TRANSCODER, 3},
        {"skip transcoder jumprelu", REFF_JUMPRELU, REFF_SKIP_TRANSCODER, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        reff_model r;
        reff_alloc(&r, cases[c].arch, cases[c].kind, d_in, d_out, d_sae, (size_t)cases[c].param,
                   NULL, 0);
        reff_randomize(&r, 0.5, 33 + c);
        reff_train t = {.lambda = 0.2, .bandwidth = 0.01, .auxk_coeff = 0.5, .k_aux = 2,
                        .dead = dead};
        check_fd(cases[c].what, &r, &t, x, y, n);
        reff_free(&r);
    }
    free(dead);
    free(x);
    free(y);
}
END_TEST

/* The estimator for the log thresholds is the exact derivative of the
 * rectangle-kernel surrogate at th = th0 (reference_families.h). */
START_TEST(jumprelu_estimator_is_the_surrogate_derivative)
{
    const size_t d_in = 5, d_out = 4, d_sae = 8, n = 24;
    reff_model r;
    reff_alloc(&r, REFF_JUMPRELU, REFF_SKIP_TRANSCODER, d_in, d_out, d_sae, 0, NULL, 0);
    reff_randomize(&r, 0.5, 41);
    float *x = floats(n * d_in, 1.0, 42), *y = floats(n * d_out, 1.0, 43);
    reff_train t = {.lambda = 0.4, .bandwidth = 0.3, .surrogate_log_theta0 = r.log_theta};
    double *theta0 = malloc(d_sae * sizeof(double));
    ck_assert_ptr_nonnull(theta0);
    memcpy(theta0, r.log_theta, d_sae * sizeof(double));
    t.surrogate_log_theta0 = theta0;
    /* at th = th0 the surrogate is the loss */
    reff_losses sur, plain;
    reff_loss(&r, &t, x, y, n, NULL, &sur);
    reff_train t_plain = t;
    t_plain.surrogate_log_theta0 = NULL;
    reff_loss(&r, &t_plain, x, y, n, NULL, &plain);
    ck_assert_double_eq_tol(sur.loss, plain.loss, 1e-12);
    fd_result res = finite_differences(&r, &t, x, y, n, true);
    printf("jumprelu estimator vs surrogate: %zu thresholds, max error %.2e (largest %.3f)\n",
           res.checked, res.max_err, res.scale);
    ck_assert_uint_eq(res.checked, d_sae);
    ck_assert_double_gt(res.scale, 1e-2); /* points fall in the band */
    ck_assert_msg(res.max_err < 1e-7 * (1.0 + res.scale), "estimator error %g", res.max_err);
    free(theta0);
    free(x);
    free(y);
    reff_free(&r);
}
END_TEST

/* ---- agreement with the older reference --------------------------------------- */

static void to_old(const reff_model *r, ref_model *o)
{
    ref_alloc_arch(o, r->d_in, r->d_sae, r->arch == REFF_MATRYOSHKA ? SAE_ARCH_BATCHTOPK : r->arch,
                   r->k);
    memcpy(o->W_enc, r->W_enc, r->d_in * r->d_sae * sizeof(double));
    memcpy(o->b_enc, r->b_enc, r->d_sae * sizeof(double));
    memcpy(o->W_dec, r->W_dec, r->d_sae * r->d_in * sizeof(double));
    memcpy(o->b_dec, r->b_dec, r->d_in * sizeof(double));
    if (r->log_theta)
        memcpy(o->log_theta, r->log_theta, r->d_sae * sizeof(double));
}

static double max_rel_diff(const double *a, const double *b, size_t count)
{
    double diff = 0.0, scale = 1e-300;
    for (size_t k = 0; k < count; k++) {
        diff = fmax(diff, fabs(a[k] - b[k]));
        scale = fmax(scale, fabs(b[k]));
    }
    return diff / scale;
}

/* Loss and gradients of an autoencoder of an older family, by both references. */
static void check_against_old(int arch, const size_t *widths, size_t n_levels, uint64_t seed)
{
    const size_t d_in = 5, d_sae = 9, n = 7;
    reff_model r;
    reff_alloc(&r, arch, REFF_AUTOENCODER, d_in, d_in, d_sae, 3, widths, n_levels);
    reff_randomize(&r, 0.5, seed);
    float *x = floats(n * d_in, 1.0, seed + 1);
    unsigned char *dead = every_third(d_sae);
    bool topk = arch != REFF_RELU && arch != REFF_JUMPRELU;
    reff_train t = {.lambda = 0.3, .bandwidth = 0.2, .auxk_coeff = topk ? 0.5 : 0.0, .k_aux = 2,
                    .dead = dead};
    ref_train ot = {0.3, 0.2, t.auxk_coeff, 2, dead};
    ref_model o, og;
    to_old(&r, &o);
    reff_losses l;
    reff_loss(&r, &t, x, NULL, n, NULL, &l);
    double old_loss = ref_train_loss(&o, x, n, &ot);
    ck_assert_double_eq_tol(l.loss, old_loss, 1e-12 * (1.0 + fabs(old_loss)));
    reff_model g;
    reff_alloc_like(&g, &r);
    reff_gradients(&r, &t, x, NULL, n, &g);
    ref_alloc_arch(&og, d_in, d_sae, o.arch, o.k);
    ref_train_gradients(&o, x, n, &ot, &og);
    ck_assert_double_lt(max_rel_diff(g.W_enc, og.W_enc, d_in * d_sae), 1e-12);
    ck_assert_double_lt(max_rel_diff(g.b_enc, og.b_enc, d_sae), 1e-12);
    ck_assert_double_lt(max_rel_diff(g.W_dec, og.W_dec, d_sae * d_in), 1e-12);
    ck_assert_double_lt(max_rel_diff(g.b_dec, og.b_dec, d_in), 1e-12);
    if (g.log_theta)
        ck_assert_double_lt(max_rel_diff(g.log_theta, og.log_theta, d_sae), 1e-12);
    free(dead);
    free(x);
    reff_free(&g);
    reff_free(&r);
    ref_free(&og);
    ref_free(&o);
}

START_TEST(agrees_with_the_older_reference)
{
    check_against_old(REFF_RELU, NULL, 0, 51);
    check_against_old(REFF_TOPK, NULL, 0, 53);
    check_against_old(REFF_BATCHTOPK, NULL, 0, 55);
    check_against_old(REFF_JUMPRELU, NULL, 0, 57);
    /* one Matryoshka level (the full width) is BatchTopK */
    const size_t full = 9;
    check_against_old(REFF_MATRYOSHKA, &full, 1, 59);
}
END_TEST

/* A gated SAE whose magnitude path equals its gate path (r_mag = 0,
 * b_mag = b_gate) computes the ReLU SAE's features and reconstruction. */
START_TEST(gated_with_equal_paths_is_relu)
{
    const size_t d_in = 5, d_sae = 9, n = 7;
    reff_model r;
    reff_alloc(&r, REFF_GATED, REFF_AUTOENCODER, d_in, d_in, d_sae, 0, NULL, 0);
    reff_randomize(&r, 0.5, 61);
    memset(r.r_mag, 0, d_sae * sizeof(double));
    memcpy(r.b_mag, r.b_enc, d_sae * sizeof(double));
    float *x = floats(n * d_in, 1.0, 62);
    ref_model o;
    to_old(&r, &o);
    o.arch = SAE_ARCH_RELU;
    double *f = malloc(n * d_sae * sizeof(double)), *y_hat = malloc(n * d_in * sizeof(double));
    double *of = malloc(n * d_sae * sizeof(double)), *ox = malloc(n * d_in * sizeof(double));
    double *gate = malloc(n * d_sae * sizeof(double));
    ck_assert(f && y_hat && of && ox && gate);
    reff_features(&r, NULL, x, n, f, NULL, gate);
    reff_output(&r, x, f, n, y_hat);
    ref_forward(&o, x, n, of, ox);
    ck_assert_double_lt(max_rel_diff(f, of, n * d_sae), 1e-14);
    ck_assert_double_lt(max_rel_diff(gate, of, n * d_sae), 1e-14);
    ck_assert_double_lt(max_rel_diff(y_hat, ox, n * d_in), 1e-14);
    /* so its loss is l2 + lambda l1 + the same reconstruction again */
    reff_train t = {.lambda = 0.3};
    reff_losses l;
    reff_loss(&r, &t, x, NULL, n, NULL, &l);
    sae_losses ol = ref_losses(&o, x, n, 0.3);
    ck_assert_double_eq_tol(l.loss, 2.0 * ol.l2 + 0.3 * ol.l1, 1e-12 * (1.0 + ol.loss));
    free(f);
    free(y_hat);
    free(of);
    free(ox);
    free(gate);
    free(x);
    ref_free(&o);
    reff_free(&r);
}
END_TEST

/* A transcoder: the skip term alone when no feature fires, and no b_dec on the
 * encoder's input. */
START_TEST(transcoder_output_is_decoder_plus_skip)
{
    const size_t d_in = 5, d_out = 3, d_sae = 6, n = 4;
    reff_model r;
    reff_alloc(&r, REFF_RELU, REFF_SKIP_TRANSCODER, d_in, d_out, d_sae, 0, NULL, 0);
    reff_randomize(&r, 0.5, 71);
    float *x = floats(n * d_in, 1.0, 72);
    double *f = malloc(n * d_sae * sizeof(double)), *y_hat = malloc(n * d_out * sizeof(double));
    ck_assert(f && y_hat);
    reff_features(&r, NULL, x, n, f, NULL, NULL);
    for (size_t t = 0; t < n; t++)
        for (size_t i = 0; i < d_sae; i++) {
            double pre = r.b_enc[i];
            for (size_t j = 0; j < d_in; j++)
                pre += x[t * d_in + j] * r.W_enc[j * d_sae + i];
            ck_assert_double_eq_tol(f[t * d_sae + i], pre > 0 ? pre : 0.0, 1e-14);
        }
    for (size_t i = 0; i < d_sae; i++)
        r.b_enc[i] = -100.0; /* nothing fires */
    reff_features(&r, NULL, x, n, f, NULL, NULL);
    reff_output(&r, x, f, n, y_hat);
    for (size_t t = 0; t < n; t++)
        for (size_t o = 0; o < d_out; o++) {
            double s = r.b_dec[o];
            for (size_t j = 0; j < d_in; j++)
                s += r.W_skip[o * d_in + j] * x[t * d_in + j];
            ck_assert_double_eq_tol(y_hat[t * d_out + o], s, 1e-14);
        }
    free(f);
    free(y_hat);
    free(x);
    reff_free(&r);
}
END_TEST

/* SAELens's rescaled TopK (and BatchTopK at inference) equals the plain
 * forward of the folded model: the fold libsae applies when loading. */
START_TEST(folding_decoder_norms_preserves_the_rescaled_forward)
{
    const size_t d_in = 6, d_sae = 11, n = 9;
    float *x = floats(n * d_in, 1.0, 81);
    const int archs[2] = {REFF_TOPK, REFF_BATCHTOPK};
    for (int a = 0; a < 2; a++) {
        reff_model r, folded;
        reff_alloc(&r, archs[a], REFF_AUTOENCODER, d_in, d_in, d_sae, 3, NULL, 0);
        reff_randomize(&r, 0.5, 82 + (uint64_t)a);
        for (size_t i = 0; i < d_sae; i++) /* decoder norms from about 0.2 to 4 */
            for (size_t o = 0; o < d_in; o++)
                r.W_dec[i * d_in + o] *= 0.2 + 0.3 * (double)i;
        r.rescale = true;
        reff_alloc_like(&folded, &r);
        reff_copy(&folded, &r);
        reff_fold_decoder_norms(&folded);
        ck_assert(!folded.rescale);
        double *f1 = malloc(n * d_sae * sizeof(double)), *f2 = malloc(n * d_sae * sizeof(double));
        double *y1 = malloc(n * d_in * sizeof(double)), *y2 = malloc(n * d_in * sizeof(double));
        ck_assert(f1 && f2 && y1 && y2);
        const double thresholds[2] = {-1.0, 0.3};
        for (int k = 0; k < 2; k++) {
            reff_infer(&r, thresholds[k], x, n, f1, y1);
            reff_infer(&folded, thresholds[k], x, n, f2, y2);
            ck_assert_double_lt(max_rel_diff(f2, f1, n * d_sae), 1e-13);
            ck_assert_double_lt(max_rel_diff(y2, y1, n * d_in), 1e-13);
        }
        /* the rescaling changes what is selected: the test is not vacuous */
        reff_model plain;
        reff_alloc_like(&plain, &r);
        reff_copy(&plain, &r);
        plain.rescale = false;
        reff_infer(&plain, thresholds[1], x, n, f2, y2);
        reff_infer(&r, thresholds[1], x, n, f1, y1);
        ck_assert_double_gt(max_rel_diff(y2, y1, n * d_in), 1e-3);
        free(f1);
        free(f2);
        free(y1);
        free(y2);
        reff_free(&plain);
        reff_free(&folded);
        reff_free(&r);
    }
    free(x);
}
END_TEST

/* ---- synthetic transcoder data ----------------------------------------------- */

START_TEST(transcoder_data_is_a_sparse_map_with_known_features)
{
    const size_t n = 4000, d_in = 12, d_out = 7, n_true = 20;
    reff_transcoder_data d, again;
    reff_transcoder_data_make(&d, n, d_in, d_out, n_true, 3.0, 0.5, 91);
    ck_assert_ptr_nonnull(d.skip);
    double active = 0.0;
    for (size_t a = 0; a < n_true; a++) {
        double s_in = 0.0, s_out = 0.0;
        for (size_t j = 0; j < d_in; j++)
            s_in += d.dir_in[a * d_in + j] * d.dir_in[a * d_in + j];
        for (size_t o = 0; o < d_out; o++)
            s_out += d.dir_out[a * d_out + o] * d.dir_out[a * d_out + o];
        ck_assert_double_eq_tol(s_in, 1.0, 1e-12);
        ck_assert_double_eq_tol(s_out, 1.0, 1e-12);
    }
    for (size_t t = 0; t < n; t++) {
        const double *c = d.code + t * n_true;
        for (size_t a = 0; a < n_true; a++) {
            active += c[a] != 0.0;
            ck_assert(c[a] == 0.0 || (c[a] > 0.5 && c[a] < 1.5));
        }
        /* x = sum c d, y = sum c e + A x, to float rounding */
        for (size_t j = 0; j < d_in; j++) {
            double s = 0.0;
            for (size_t a = 0; a < n_true; a++)
                s += c[a] * d.dir_in[a * d_in + j];
            ck_assert_double_eq_tol(d.x[t * d_in + j], s, 1e-6 * (1.0 + fabs(s)));
        }
        for (size_t o = 0; o < d_out; o++) {
            double s = 0.0;
            for (size_t a = 0; a < n_true; a++)
                s += c[a] * d.dir_out[a * d_out + o];
            for (size_t j = 0; j < d_in; j++)
                s += d.skip[o * d_in + j] * d.x[t * d_in + j];
            ck_assert_double_eq_tol(d.y[t * d_out + o], s, 1e-5 * (1.0 + fabs(s)));
        }
    }
    active /= (double)n;
    ck_assert_double_eq_tol(active, 3.0, 0.15); /* binomial mean 3, sd 0.027 */
    /* deterministic in the seed */
    reff_transcoder_data_make(&again, n, d_in, d_out, n_true, 3.0, 0.5, 91);
    ck_assert_mem_eq(again.x, d.x, n * d_in * sizeof(float));
    ck_assert_mem_eq(again.y, d.y, n * d_out * sizeof(float));
    reff_transcoder_data_free(&again);
    reff_transcoder_data_make(&again, n, d_in, d_out, n_true, 3.0, 0.0, 92);
    ck_assert_ptr_null(again.skip);
    ck_assert(memcmp(again.x, d.x, n * d_in * sizeof(float)) != 0);

    /* MMCS: the true directions find themselves (as rows and as columns),
     * random directions do not */
    float *rows = malloc(n_true * d_out * sizeof(float)), *cols = malloc(d_in * n_true * sizeof(float));
    ck_assert(rows && cols);
    for (size_t a = 0; a < n_true; a++) {
        for (size_t o = 0; o < d_out; o++)
            rows[a * d_out + o] = (float)(3.0 * d.dir_out[a * d_out + o]); /* norm does not matter */
        for (size_t j = 0; j < d_in; j++)
            cols[j * n_true + a] = (float)d.dir_in[a * d_in + j];
    }
    double above;
    ck_assert_double_eq_tol(reff_mmcs(rows, n_true, d_out, d.dir_out, n_true, &above), 1.0, 1e-6);
    ck_assert_double_eq(above, 1.0);
    ck_assert_double_eq_tol(reff_mmcs_columns(cols, d_in, n_true, d.dir_in, n_true, &above), 1.0,
                            1e-6);
    ck_assert_double_eq(above, 1.0);
    ck_assert_double_lt(reff_mmcs(rows, n_true, d_out, again.dir_out, n_true, &above), 0.9);
    free(rows);
    free(cols);
    reff_transcoder_data_free(&again);
    reff_transcoder_data_free(&d);
}
END_TEST

static Suite *reference_families_suite(void)
{
    Suite *s = suite_create("reference_families");
    TCase *tc = tcase_create("reference");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, gated_gradients_match_finite_differences);
    tcase_add_test(tc, matryoshka_gradients_match_finite_differences);
    tcase_add_test(tc, transcoder_gradients_match_finite_differences);
    tcase_add_test(tc, jumprelu_estimator_is_the_surrogate_derivative);
    tcase_add_test(tc, agrees_with_the_older_reference);
    tcase_add_test(tc, gated_with_equal_paths_is_relu);
    tcase_add_test(tc, transcoder_output_is_decoder_plus_skip);
    tcase_add_test(tc, folding_decoder_norms_preserves_the_rescaled_forward);
    tcase_add_test(tc, transcoder_data_is_a_sparse_map_with_known_features);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(reference_families_suite)
