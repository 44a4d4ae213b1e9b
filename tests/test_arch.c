/*
 * Architectures: TopK, BatchTopK and JumpReLU models and the AuxK loss, against
 * the double-precision reference (tests/reference.c): features, gradients
 * (finite differences where the loss is smooth, the anchors' estimators where
 * it is not), the BatchTopK threshold, bad input, and learning on synthetic
 * data with known features.
 */
#include "backward_pass.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest |library - reference| and the largest reference gradient. */
static void compare(const ref_model *shape, ref_grads *lib, ref_grads *want, double *err,
                    double *scale)
{
    *err = *scale = 0.0;
    for (size_t k = 0; k < ref_n_params(shape); k++) {
        *err = fmax(*err, fabs(*ref_param(lib, k) - *ref_param(want, k)));
        *scale = fmax(*scale, fabs(*ref_param(want, k)));
    }
}

/* Central differences of the training loss for the first `count` parameters
 * (all but JumpReLU's thresholds), with AuxK's residual held at e0. */
static double max_fd_error(ref_model *r, const float *x, size_t n, const ref_train *t,
                           const double *e0, ref_grads *analytic, size_t count)
{
    ref_train main_only = *t;
    main_only.auxk_coeff = 0.0;
    const double h = 1e-6;
    double worst = 0.0;
    for (size_t k = 0; k < count; k++) {
        double *p = ref_param(r, k), saved = *p;
        *p = saved + h;
        double up = ref_train_loss(r, x, n, &main_only);
        if (e0)
            up += t->auxk_coeff * ref_auxk_fixed_e(r, x, n, t, e0);
        *p = saved - h;
        double down = ref_train_loss(r, x, n, &main_only);
        if (e0)
            down += t->auxk_coeff * ref_auxk_fixed_e(r, x, n, t, e0);
        *p = saved;
        worst = fmax(worst, fabs((up - down) / (2 * h) - *ref_param(analytic, k)));
    }
    return worst;
}

/* The residual e = x - x_hat of the reference model (n x d_in). */
static double *residual(const ref_model *r, const float *x, size_t n)
{
    double *f = malloc(n * r->d_sae * sizeof(double)), *e = malloc(n * r->d_in * sizeof(double));
    ref_features(r, x, n, f, NULL);
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < r->d_in; j++) {
            double s = r->b_dec[j];
            for (size_t i = 0; i < r->d_sae; i++)
                s += f[t * r->d_sae + i] * r->W_dec[i * r->d_in + j];
            e[t * r->d_in + j] = x[t * r->d_in + j] - s;
        }
    free(f);
    return e;
}

/* Check one architecture's gradients: library vs reference analytic, and the
 * reference analytic vs finite differences for every smooth parameter. */
static void check_gradients(int arch, double param, const ref_train *t, uint64_t seed)
{
    const size_t d_in = 5, d_sae = 12, n = 7;
    sae_model *m = test_perturbed_model(arch, param, d_in, d_sae, seed);
    float *x = test_gaussian(n, d_in, 1.0, 0.1, seed + 10);
    ref_model r;
    ref_from_model(&r, m);
    ref_grads want, lib;
    ref_alloc_arch(&want, d_in, d_sae, arch, r.k);
    ref_alloc_arch(&lib, d_in, d_sae, arch, r.k);
    ref_train_gradients(&r, x, n, t, &want);
    /* dense; sparse with rows in place; sparse from packed panels */
    int kernels[3] = {SAE_KERNEL_DENSE, SAE_KERNEL_SPARSE, SAE_KERNEL_SPARSE};
    for (int kk = 0; kk < 3; kk++) {
        sae__test_sparse_layout = kk;
        const test_pass p = {t->lambda, t->bandwidth, t->auxk_coeff, t->k_aux, t->dead,
                             kernels[kk], 2};
        sae_backward_result res;
        test_lib_gradients(m, x, n, &p, &lib, &res);
        sae__test_sparse_layout = 0;
        double err, scale;
        compare(&r, &lib, &want, &err, &scale);
        ck_assert_msg(scale > 1e-3, "arch %d: gradients vanish", arch);
        ck_assert_msg(err < 2e-5 * (1 + scale), "arch %d kernel %d: library vs reference %g (%g)",
                      arch, kernels[kk], err, scale);
    }
    double *e0 = t->auxk_coeff > 0.0 ? residual(&r, x, n) : NULL;
    size_t smooth = 2 * d_in * d_sae + d_in + d_sae; /* not the thresholds */
    double fd = max_fd_error(&r, x, n, t, e0, &want, smooth);
    ck_assert_msg(fd < 1e-6, "arch %d: reference vs finite differences %g", arch, fd);
    free(e0);
    ref_free(&r);
    ref_free(&want);
    ref_free(&lib);
    free(x);
    sae_model_free(m);
}

START_TEST(create_arch_validates_and_reports)
{
    sae_model *m = NULL;
    ck_assert_int_eq(sae_model_create_arch(&m, 4, 10, 1, SAE_ARCH_TOPK, 3), SAE_OK);
    ck_assert_int_eq(sae_model_arch(m), SAE_ARCH_TOPK);
    ck_assert_uint_eq(sae_model_k(m), 3);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_THRESHOLD), 0);
    sae_model_free(m);
    ck_assert_int_eq(sae_model_create_arch(&m, 4, 10, 1, SAE_ARCH_BATCHTOPK, 10), SAE_OK);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_THRESHOLD), 1);
    float thr = 0.0f;
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, &thr, 1), SAE_OK);
    ck_assert_float_lt(thr, 0.0f); /* unset until training */
    sae_model_free(m);
    ck_assert_int_eq(sae_model_create_arch(&m, 4, 10, 1, SAE_ARCH_JUMPRELU, 0.001), SAE_OK);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_THRESHOLD), 10);
    ck_assert_uint_eq(sae_model_k(m), 0);
    float theta[10];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, theta, 10), SAE_OK);
    for (int i = 0; i < 10; i++)
        ck_assert_float_eq_tol(theta[i], 0.001f, 1e-9f);
    sae_model_free(m);
    ck_assert_int_eq(sae_model_create(&m, 4, 10, 1), SAE_OK);
    ck_assert_int_eq(sae_model_arch(m), SAE_ARCH_RELU);
    sae_model_free(m);
    ck_assert_int_eq(sae_model_arch(NULL), -1);
    ck_assert_uint_eq(sae_model_k(NULL), 0);

    struct { int arch; double param; int expect; } bad[] = {
        {SAE_ARCH_RELU, 1.0, SAE_E_INVALID_ARG},    {SAE_ARCH_TOPK, 0.0, SAE_E_INVALID_ARG},
        {SAE_ARCH_TOPK, 11.0, SAE_E_INVALID_ARG},   {SAE_ARCH_TOPK, 2.5, SAE_E_INVALID_ARG},
        {SAE_ARCH_BATCHTOPK, -1, SAE_E_INVALID_ARG}, {SAE_ARCH_JUMPRELU, 0.0, SAE_E_INVALID_ARG},
        {SAE_ARCH_JUMPRELU, -0.1, SAE_E_INVALID_ARG}, {SAE_ARCH_JUMPRELU, 1e31, SAE_E_INVALID_ARG},
        {SAE_ARCH_TOPK, NAN, SAE_E_NONFINITE},       {SAE_ARCH_JUMPRELU, INFINITY, SAE_E_NONFINITE},
        {4, 1.0, SAE_E_INVALID_ARG},                 {-1, 0.0, SAE_E_INVALID_ARG},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        m = (sae_model *)&m;
        ck_assert_int_eq(sae_model_create_arch(&m, 4, 10, 1, bad[k].arch, bad[k].param),
                         bad[k].expect);
        ck_assert_ptr_null(m);
    }
    ck_assert_int_eq(sae_model_create_arch(NULL, 4, 10, 1, SAE_ARCH_TOPK, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create_arch(&m, 0, 10, 1, SAE_ARCH_TOPK, 2), SAE_E_INVALID_ARG);
}
END_TEST

START_TEST(thresholds_round_trip_and_reject_bad_values)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create_arch(&m, 3, 4, 2, SAE_ARCH_JUMPRELU, 0.5), SAE_OK);
    float theta[4] = {0.1f, 2.0f, 1e-3f, 30.0f}, back[4];
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, theta, 4), SAE_OK);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, back, 4), SAE_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq_tol(back[i], theta[i], 1e-6f * theta[i]);
    model_snapshot before;
    snapshot_take(&before, m);
    float bad[4] = {0.1f, 0.0f, 1.0f, 1.0f};
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, bad, 4), SAE_E_INVALID_ARG);
    bad[1] = -1.0f;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, bad, 4), SAE_E_INVALID_ARG);
    bad[1] = NAN;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, bad, 4), SAE_E_NONFINITE);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, theta, 3), SAE_E_INVALID_ARG);
    ck_assert(snapshot_equal(&before, m));
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, back, 4), SAE_OK);
    ck_assert_mem_eq(back, back, sizeof back);
    snapshot_free(&before);
    sae_model_free(m);
    /* no thresholds in a ReLU model */
    ck_assert_int_eq(sae_model_create(&m, 3, 4, 2), SAE_OK);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, back, 4), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, theta, 4), SAE_E_INVALID_ARG);
    sae_model_free(m);
}
END_TEST

/* sae_encode matches the reference's features for each architecture. */
START_TEST(encode_matches_reference)
{
    const size_t d_in = 6, d_sae = 20, n = 9;
    struct { int arch; double param; } cases[] = {
        {SAE_ARCH_RELU, 0}, {SAE_ARCH_TOPK, 1}, {SAE_ARCH_TOPK, 4}, {SAE_ARCH_TOPK, 20},
        {SAE_ARCH_JUMPRELU, 0.15},
    };
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 3);
    float *f = malloc(n * d_sae * sizeof(float));
    double *want = malloc(n * d_sae * sizeof(double));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sae_model *m = test_perturbed_model(cases[c].arch, cases[c].param, d_in, d_sae, 50 + c);
        ref_model r;
        ref_from_model(&r, m);
        ref_features(&r, x, n, want, NULL);
        ck_assert_int_eq(sae_encode(m, x, n, f), SAE_OK);
        size_t active = 0;
        for (size_t k = 0; k < n * d_sae; k++) {
            ck_assert_msg(fabs(f[k] - want[k]) < 1e-5, "arch %d entry %zu: %g vs %g",
                          cases[c].arch, k, f[k], want[k]);
            active += f[k] > 0.0f;
        }
        if (cases[c].arch == SAE_ARCH_TOPK)
            ck_assert_uint_le(active, n * (size_t)cases[c].param);
        sae_losses l;
        ck_assert_int_eq(sae_loss(m, x, n, 0.5, &l), SAE_OK);
        ck_assert_double_eq(l.l0, (double)active / n);
        ref_train t = {0.5, 0.001, 0.0, 0, NULL};
        ck_assert_double_eq_tol(l.loss, ref_train_loss(&r, x, n, &t), 1e-5 * (1 + l.loss));
        ref_free(&r);
        sae_model_free(m);
    }
    free(x);
    free(f);
    free(want);
}
END_TEST

/* TopK keeps exactly k per token, ties at the k-th value in feature order. */
START_TEST(topk_breaks_ties_in_feature_order)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create_arch(&m, 1, 5, 1, SAE_ARCH_TOPK, 2), SAE_OK);
    float w_enc[5] = {1, 3, 3, 3, -2}, f[5];
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, w_enc, 5), SAE_OK);
    float x = 1.0f;
    ck_assert_int_eq(sae_encode(m, &x, 1, f), SAE_OK);
    float expect[5] = {0, 3, 3, 0, 0};
    ck_assert_mem_eq(f, expect, sizeof f);
    sae_model_free(m);
}
END_TEST

/* BatchTopK at inference: f = pre where pre > threshold; ReLU while unset. */
START_TEST(batchtopk_inference_uses_the_threshold)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create_arch(&m, 1, 4, 1, SAE_ARCH_BATCHTOPK, 1), SAE_OK);
    float w_enc[4] = {0.1f, 0.5f, 1.0f, -1.0f}, f[4];
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, w_enc, 4), SAE_OK);
    float x = 1.0f;
    ck_assert_int_eq(sae_encode(m, &x, 1, f), SAE_OK);
    ck_assert(f[0] > 0.0f && f[1] > 0.0f && f[2] > 0.0f && f[3] == 0.0f);
    float thr = 0.3f;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, &thr, 1), SAE_OK);
    ck_assert_int_eq(sae_encode(m, &x, 1, f), SAE_OK);
    ck_assert(f[0] == 0.0f && f[1] == 0.5f && f[2] == 1.0f && f[3] == 0.0f);
    sae_model_free(m);
}
END_TEST

START_TEST(topk_gradients_match_reference)
{
    ref_train t = {5.0, 0.001, 0.0, 0, NULL}; /* lambda must be ignored */
    check_gradients(SAE_ARCH_TOPK, 3, &t, 100);
}
END_TEST

START_TEST(batchtopk_gradients_match_reference)
{
    ref_train t = {5.0, 0.001, 0.0, 0, NULL};
    check_gradients(SAE_ARCH_BATCHTOPK, 3, &t, 200);
}
END_TEST

/* JumpReLU: finite differences for W and b (the loss is smooth away from the
 * thresholds); the thresholds' estimators against the reference's formula,
 * with a bandwidth wide enough that many pairs fall in the band. */
START_TEST(jumprelu_gradients_match_reference)
{
    ref_train t = {0.7, 0.4, 0.0, 0, NULL};
    check_gradients(SAE_ARCH_JUMPRELU, 0.1, &t, 300);
}
END_TEST

/* AuxK: a third of the features dead, k_aux 2; TopK and BatchTopK. */
START_TEST(auxk_gradients_match_reference)
{
    unsigned char dead[12] = {1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0};
    ref_train t = {0.0, 0.001, 1.0 / 32.0, 2, dead};
    check_gradients(SAE_ARCH_TOPK, 3, &t, 400);
    t.auxk_coeff = 0.5;
    check_gradients(SAE_ARCH_BATCHTOPK, 2, &t, 500);
}
END_TEST

/* sae_step for BatchTopK: the threshold starts at the smallest kept value,
 * then moves by the moving average. */
START_TEST(batchtopk_threshold_tracks_the_smallest_kept_value)
{
    const size_t d_in = 6, d_sae = 16, n = 10, k = 2;
    sae_model *m = test_perturbed_model(SAE_ARCH_BATCHTOPK, (double)k, d_in, d_sae, 600);
    sae_optimizer *o;
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_THRESHOLD_BETA, 0.75), SAE_OK);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 601);
    double expect = -1.0;
    for (int s = 0; s < 3; s++) {
        ref_model r;
        ref_from_model(&r, m);
        double *f = malloc(n * d_sae * sizeof(double)), min_kept = INFINITY;
        ref_features(&r, x, n, f, NULL);
        size_t kept = 0;
        for (size_t q = 0; q < n * d_sae; q++)
            if (f[q] > 0.0) {
                min_kept = fmin(min_kept, f[q]);
                kept++;
            }
        ck_assert_uint_eq(kept, n * k);
        expect = expect < 0.0 ? min_kept : 0.75 * expect + 0.25 * min_kept;
        sae_losses l;
        ck_assert_int_eq(sae_step(m, o, x, n, &l), SAE_OK);
        ck_assert_double_eq(l.l0, (double)k);
        float thr;
        ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, &thr, 1), SAE_OK);
        ck_assert_double_eq_tol(thr, expect, 1e-5 * expect);
        free(f);
        ref_free(&r);
    }
    free(x);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

START_TEST(architecture_options_are_validated)
{
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create_arch(&m, 8, 16, 1, SAE_ARCH_TOPK, 4), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    double v;
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_AUXK_COEFF, &v), SAE_OK);
    ck_assert_double_eq(v, 1.0 / 32.0);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_AUXK_K, &v), SAE_OK);
    ck_assert_double_eq(v, 0.0);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_DEAD_WINDOW, &v), SAE_OK);
    ck_assert_double_eq(v, 1e7);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_JUMPRELU_BANDWIDTH, &v), SAE_OK);
    ck_assert_double_eq(v, 0.001);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_THRESHOLD_BETA, &v), SAE_OK);
    ck_assert_double_eq(v, 0.999);
    struct { int option; double value; int expect; } cases[] = {
        {SAE_OPT_AUXK_COEFF, 0.0, SAE_OK},   {SAE_OPT_AUXK_COEFF, -1.0, SAE_E_INVALID_ARG},
        {SAE_OPT_AUXK_COEFF, NAN, SAE_E_NONFINITE},
        {SAE_OPT_AUXK_K, 7.0, SAE_OK},        {SAE_OPT_AUXK_K, 1.5, SAE_E_INVALID_ARG},
        {SAE_OPT_AUXK_K, -1.0, SAE_E_INVALID_ARG},
        {SAE_OPT_DEAD_WINDOW, 1.0, SAE_OK},   {SAE_OPT_DEAD_WINDOW, 0.0, SAE_E_INVALID_ARG},
        {SAE_OPT_DEAD_WINDOW, 2.5, SAE_E_INVALID_ARG},
        {SAE_OPT_JUMPRELU_BANDWIDTH, 0.5, SAE_OK}, {SAE_OPT_JUMPRELU_BANDWIDTH, 0.0, SAE_E_INVALID_ARG},
        {SAE_OPT_THRESHOLD_BETA, 0.0, SAE_OK}, {SAE_OPT_THRESHOLD_BETA, 1.0, SAE_E_INVALID_ARG},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        ck_assert_msg(sae_optimizer_set(o, cases[k].option, cases[k].value) == cases[k].expect,
                      "case %zu", k);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* An optimizer's moments follow its model's parameter block: one made for a
 * JumpReLU model cannot step a ReLU model of the same shape, and back. */
START_TEST(optimizer_must_match_the_parameter_block)
{
    sae_model *jump, *relu;
    sae_optimizer *o_jump, *o_relu;
    ck_assert_int_eq(sae_model_create_arch(&jump, 4, 8, 1, SAE_ARCH_JUMPRELU, 0.01), SAE_OK);
    ck_assert_int_eq(sae_model_create(&relu, 4, 8, 1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o_jump, jump), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o_relu, relu), SAE_OK);
    float *x = test_gaussian(3, 4, 1.0, 0.0, 2);
    ck_assert_int_eq(sae_step(relu, o_jump, x, 3, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_step(jump, o_relu, x, 3, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_step(jump, o_jump, x, 3, NULL), SAE_OK);
    free(x);
    sae_optimizer_free(o_jump);
    sae_optimizer_free(o_relu);
    sae_model_free(jump);
    sae_model_free(relu);
}
END_TEST

/* Mean over true directions of the best |cosine| with a decoder row, and the
 * share above 0.9. */
static double mmcs(const sae_model *m, const float *dirs, size_t n_true, double *recovered)
{
    size_t d_in = sae_model_d_in(m), d_sae = sae_model_d_sae(m);
    float *w = malloc(d_in * d_sae * sizeof(float));
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, w, d_in * d_sae), SAE_OK);
    double total = 0.0;
    size_t good = 0;
    for (size_t a = 0; a < n_true; a++) {
        double best = 0.0;
        for (size_t i = 0; i < d_sae; i++) {
            double dot = 0.0, norm = 0.0;
            for (size_t j = 0; j < d_in; j++) {
                dot += (double)w[i * d_in + j] * dirs[a * d_in + j];
                norm += (double)w[i * d_in + j] * w[i * d_in + j];
            }
            if (norm > 0.0)
                best = fmax(best, dot / sqrt(norm));
        }
        total += best;
        good += best > 0.9;
    }
    free(w);
    *recovered = (double)good / (double)n_true;
    return total / (double)n_true;
}

/* What a training on synthetic data reached. */
typedef struct quality {
    double mmcs, recovered, l0, fvu;
} quality;

/* Train a model of arch on synthetic data (24 true features of 32 dims, about
 * 3 active per token) with the encoder's product in the given precision. */
static quality train_synthetic(int arch, double param, double lambda, double lr, int steps,
                               int precision)
{
    const size_t d_in = 32, d_sae = 64, n_true = 24, n_data = 8192, batch = 256;
    float *dirs = malloc(n_true * d_in * sizeof(float));
    float *data = test_sparse_data(n_data, d_in, n_true, 3.0, 17, dirs);
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create_arch(&m, d_in, d_sae, 1, arch, param), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, lr), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_L1_COEFF, lambda), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, 20 * batch), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_JUMPRELU_BANDWIDTH, 0.05), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_PRECISION, precision), SAE_OK);
    for (int s = 0; s < steps; s++)
        ck_assert_int_eq(sae_step(m, o, data + ((size_t)s * batch % n_data) * d_in, batch, NULL),
                         SAE_OK);
    quality q;
    q.mmcs = mmcs(m, dirs, n_true, &q.recovered);
    sae_losses l;
    ck_assert_int_eq(sae_loss(m, data, 2048, lambda, &l), SAE_OK);
    ck_assert_int_eq(sae_fvu(m, data, 2048, &q.fvu), SAE_OK);
    q.l0 = l.l0;
    printf("arch %d, %s: MMCS %.4f, recovered %.0f%%, L0 %.3f, FVU %.4f\n", arch,
           precision == SAE_PRECISION_BF16 ? "bf16" : "fp32", q.mmcs, 100 * q.recovered, q.l0,
           q.fvu);
    free(dirs);
    free(data);
    sae_optimizer_free(o);
    sae_model_free(m);
    return q;
}

/* Each architecture recovers the true features of synthetic data; and the
 * bf16 encoder product (SAE_OPT_PRECISION) trains a model as good on the
 * same data and seed: MMCS within 0.01, FVU within 0.01 (absolute), L0
 * within 5% (RESULTS.md states the measured differences). */
static void check_recovery(int arch, double param, double lambda, double lr, int steps,
                           double bar)
{
    quality f32 = train_synthetic(arch, param, lambda, lr, steps, SAE_PRECISION_FP32);
    ck_assert_msg(f32.mmcs > bar, "arch %d: MMCS %.3f below %.2f", arch, f32.mmcs, bar);
    quality b16 = train_synthetic(arch, param, lambda, lr, steps, SAE_PRECISION_BF16);
    ck_assert_msg(fabs(b16.mmcs - f32.mmcs) <= 0.01, "arch %d: MMCS %.4f (bf16) vs %.4f", arch,
                  b16.mmcs, f32.mmcs);
    ck_assert_msg(fabs(b16.fvu - f32.fvu) <= 0.01, "arch %d: FVU %.4f (bf16) vs %.4f", arch,
                  b16.fvu, f32.fvu);
    ck_assert_msg(fabs(b16.l0 - f32.l0) <= 0.05 * f32.l0, "arch %d: L0 %.3f (bf16) vs %.3f", arch,
                  b16.l0, f32.l0);
}

START_TEST(each_architecture_recovers_true_features)
{
    check_recovery(SAE_ARCH_RELU, 0, 0.1, 3e-3, 1500, 0.9);
    check_recovery(SAE_ARCH_TOPK, 4, 0.0, 3e-3, 1500, 0.9);
    check_recovery(SAE_ARCH_BATCHTOPK, 4, 0.0, 3e-3, 1500, 0.9);
    check_recovery(SAE_ARCH_JUMPRELU, 0.05, 0.05, 3e-3, 1500, 0.9);
    check_recovery(SAE_ARCH_GATED, 0, 1.0, 3e-3, 1500, 0.9);
}
END_TEST

static Suite *arch_suite(void)
{
    Suite *s = suite_create("arch");
    TCase *tc = tcase_create("architectures");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, create_arch_validates_and_reports);
    tcase_add_test(tc, thresholds_round_trip_and_reject_bad_values);
    tcase_add_test(tc, encode_matches_reference);
    tcase_add_test(tc, topk_breaks_ties_in_feature_order);
    tcase_add_test(tc, batchtopk_inference_uses_the_threshold);
    tcase_add_test(tc, topk_gradients_match_reference);
    tcase_add_test(tc, batchtopk_gradients_match_reference);
    tcase_add_test(tc, jumprelu_gradients_match_reference);
    tcase_add_test(tc, auxk_gradients_match_reference);
    tcase_add_test(tc, batchtopk_threshold_tracks_the_smallest_kept_value);
    tcase_add_test(tc, architecture_options_are_validated);
    tcase_add_test(tc, optimizer_must_match_the_parameter_block);
    suite_add_tcase(s, tc);
    /* trains four models: tagged "slow" so the valgrind runs skip it */
    TCase *learning = tcase_create("learning");
    tcase_set_tags(learning, "slow");
    tcase_set_timeout(learning, 600);
    tcase_add_test(learning, each_architecture_recovers_true_features);
    suite_add_tcase(s, learning);
    return s;
}

TEST_MAIN(arch_suite)
