/*
 * Gradients: the library's backward pass against central finite differences of
 * the double-precision reference loss, and against the reference's analytic
 * gradients, on several shapes and on the awkward features: dead ones, ones
 * active on a single token, a zero decoder row, and b_dec (both paths).
 * Uses the library's internal backward entry point (test build).
 */
#include "backward_pass.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The library's gradients in the reference (SAELens) layout, on the sparse
 * path (the dense one is checked against it in test_kernels.c). */
static void lib_gradients(const sae_model *m, const float *x, size_t n, double lambda,
                          ref_grads *out)
{
    const test_pass p = {.lambda = lambda, .bandwidth = 0.001, .kernel = SAE_KERNEL_SPARSE,
                         .n_threads = 2};
    sae_backward_result res;
    test_lib_gradients(m, x, n, &p, out, &res);
    ck_assert(res.used_sparse);
    /* the norm the step clips with is the norm of these very gradients */
    double sumsq = 0.0;
    for (size_t k = 0; k < ref_n_params(out); k++)
        sumsq += pow(*ref_param(out, k), 2);
    ck_assert_double_eq_tol(res.grad_sumsq, sumsq, 1e-5 * sumsq + 1e-30);
}

/* Smallest |pre-activation| over the batch: finite differences need it to stay
 * clear of the ReLU kink. */
static double min_abs_pre(const ref_model *r, const float *x, size_t n)
{
    double mn = INFINITY;
    for (size_t t = 0; t < n; t++)
        for (size_t i = 0; i < r->d_sae; i++) {
            double s = r->b_enc[i];
            for (size_t j = 0; j < r->d_in; j++)
                s += ((double)x[t * r->d_in + j] - r->b_dec[j]) * r->W_enc[j * r->d_sae + i];
            mn = fmin(mn, fabs(s));
        }
    return mn;
}

typedef struct grad_check {
    double max_fd_err;   /* reference analytic vs finite differences */
    double max_lib_err;  /* library vs reference analytic */
    double scale;        /* largest gradient magnitude */
} grad_check;

static grad_check compare_gradients(const sae_model *m, const float *x, size_t n, double lambda,
                                    bool finite_differences)
{
    ref_model r;
    ref_from_model(&r, m);
    ref_grads analytic, lib;
    ref_alloc(&analytic, r.d_in, r.d_sae);
    ref_alloc(&lib, r.d_in, r.d_sae);
    ref_gradients(&r, x, n, lambda, &analytic);
    lib_gradients(m, x, n, lambda, &lib);
    grad_check c = {0, 0, 0};
    const double h = 1e-6;
    if (finite_differences)
        ck_assert_double_gt(min_abs_pre(&r, x, n), 1e-4);
    for (size_t k = 0; k < ref_n_params(&r); k++) {
        double a = *ref_param(&analytic, k);
        c.scale = fmax(c.scale, fabs(a));
        c.max_lib_err = fmax(c.max_lib_err, fabs(*ref_param(&lib, k) - a));
        if (finite_differences) {
            double *p = ref_param(&r, k), saved = *p;
            *p = saved + h;
            double up = ref_losses(&r, x, n, lambda).loss;
            *p = saved - h;
            double down = ref_losses(&r, x, n, lambda).loss;
            *p = saved;
            c.max_fd_err = fmax(c.max_fd_err, fabs((up - down) / (2 * h) - a));
        }
    }
    ref_free(&r);
    ref_free(&analytic);
    ref_free(&lib);
    return c;
}

static void check_shape(size_t d_in, size_t d_sae, size_t n, double lambda, uint64_t seed)
{
    sae_model *m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, seed);
    float *x = test_gaussian(n, d_in, 1.0, 0.1, seed + 10);
    grad_check c = compare_gradients(m, x, n, lambda, true);
    ck_assert_double_gt(c.scale, 1e-3);
    ck_assert_msg(c.max_fd_err < 1e-6 * (1 + c.scale), "reference vs FD: %g (scale %g)",
                  c.max_fd_err, c.scale);
    ck_assert_msg(c.max_lib_err < 2e-5 * (1 + c.scale), "library vs reference: %g (scale %g)",
                  c.max_lib_err, c.scale);
    free(x);
    sae_model_free(m);
}

START_TEST(gradients_match_finite_differences_on_several_shapes)
{
    check_shape(1, 1, 2, 0.7, 100);
    check_shape(2, 3, 4, 0.0, 200);
    check_shape(5, 8, 7, 2.5, 300);
    check_shape(7, 4, 3, 1.0, 400);   /* fewer features than inputs */
    check_shape(3, 11, 16, 5.0, 500);
}
END_TEST

/* Dead features (never active) get exactly zero encoder and decoder gradients;
 * a feature active on one token only still gets the right ones. */
START_TEST(gradients_of_dead_and_single_token_features)
{
    const size_t d_in = 4, d_sae = 6, n = 5;
    sae_model *m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 600);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 610);
    ref_model r;
    ref_from_model(&r, m);
    float b_enc[6];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_ENC, b_enc, d_sae), SAE_OK);
    b_enc[0] = -100.0f; /* feature 0: dead */
    /* feature 1: active on exactly one token; put its threshold between the two
     * largest pre-activations (without bias) over the batch */
    double best = -INFINITY, second = -INFINITY;
    for (size_t t = 0; t < n; t++) {
        double s = 0.0;
        for (size_t j = 0; j < d_in; j++)
            s += ((double)x[t * d_in + j] - r.b_dec[j]) * r.W_enc[j * d_sae + 1];
        if (s > best) {
            second = best;
            best = s;
        } else if (s > second) {
            second = s;
        }
    }
    b_enc[1] = (float)(-(best + second) / 2);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, b_enc, d_sae), SAE_OK);
    ref_free(&r);

    float *f = malloc(n * d_sae * sizeof(float));
    ck_assert_int_eq(sae_encode(m, x, n, f), SAE_OK);
    int active0 = 0, active1 = 0;
    for (size_t t = 0; t < n; t++) {
        active0 += f[t * d_sae + 0] > 0;
        active1 += f[t * d_sae + 1] > 0;
    }
    ck_assert_int_eq(active0, 0);
    ck_assert_int_eq(active1, 1);

    grad_check c = compare_gradients(m, x, n, 3.0, true);
    ck_assert_msg(c.max_fd_err < 1e-6 * (1 + c.scale), "reference vs FD: %g", c.max_fd_err);
    ck_assert_msg(c.max_lib_err < 2e-5 * (1 + c.scale), "library vs reference: %g",
                  c.max_lib_err);

    ref_grads lib;
    ref_alloc(&lib, d_in, d_sae);
    lib_gradients(m, x, n, 3.0, &lib);
    ck_assert(lib.b_enc[0] == 0.0);
    ck_assert(lib.b_enc[1] != 0.0);
    for (size_t j = 0; j < d_in; j++) {
        ck_assert(lib.W_enc[j * d_sae + 0] == 0.0);
        ck_assert(lib.W_dec[0 * d_in + j] == 0.0);
        ck_assert(lib.b_dec[j] != 0.0);
    }
    ref_free(&lib);
    free(f);
    free(x);
    sae_model_free(m);
}
END_TEST

/* b_dec enters twice (subtracted before the encoder, added after the decoder):
 * with W_enc = W_dec = 0 only the direct path remains, -2 mean(x - b_dec). */
START_TEST(b_dec_gradient_has_both_paths)
{
    const size_t d_in = 3, d_sae = 2, n = 4;
    sae_model *m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 700);
    float *x = test_gaussian(n, d_in, 1.0, 0.5, 710);
    float zeros[6] = {0};
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_DEC, zeros, 6), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, zeros, 6), SAE_OK);
    float b_dec[3];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_DEC, b_dec, 3), SAE_OK);
    ref_grads lib;
    ref_alloc(&lib, d_in, d_sae);
    lib_gradients(m, x, n, 1.0, &lib);
    for (size_t j = 0; j < d_in; j++) {
        double expect = 0.0;
        for (size_t t = 0; t < n; t++)
            expect += 2.0 * (b_dec[j] - x[t * d_in + j]) / n;
        ck_assert_double_eq_tol(lib.b_dec[j], expect, 1e-5);
    }
    ref_free(&lib);
    /* and with the encoder path switched on, the full gradient matches FD */
    sae_model_free(m);
    m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 720);
    grad_check c = compare_gradients(m, x, n, 1.0, true);
    ck_assert(c.max_lib_err < 2e-5 * (1 + c.scale));
    free(x);
    sae_model_free(m);
}
END_TEST

/* A zero decoder row has no norm gradient (subgradient 0, as torch uses). */
START_TEST(zero_decoder_row_uses_zero_subgradient)
{
    const size_t d_in = 4, d_sae = 3, n = 6;
    sae_model *m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 800);
    float w_dec[12];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, w_dec, 12), SAE_OK);
    for (size_t j = 0; j < d_in; j++)
        w_dec[2 * d_in + j] = 0.0f;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_DEC, w_dec, 12), SAE_OK);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 810);
    grad_check c = compare_gradients(m, x, n, 2.0, false);
    ck_assert(c.max_lib_err < 2e-5 * (1 + c.scale));
    free(x);
    sae_model_free(m);
}
END_TEST

/* Batches larger than one internal block accumulate across blocks. */
START_TEST(gradients_accumulate_across_blocks)
{
    const size_t d_in = 3, d_sae = 5, n = 2 * SAE_BLOCK_TOKENS + 77;
    sae_model *m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 900);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 910);
    grad_check c = compare_gradients(m, x, n, 1.5, false);
    ck_assert_double_gt(c.scale, 1e-3);
    ck_assert_msg(c.max_lib_err < 2e-5 * (1 + c.scale), "library vs reference: %g",
                  c.max_lib_err);
    free(x);
    sae_model_free(m);
}
END_TEST

static Suite *backward_suite(void)
{
    Suite *s = suite_create("backward");
    TCase *tc = tcase_create("gradients");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, gradients_match_finite_differences_on_several_shapes);
    tcase_add_test(tc, gradients_of_dead_and_single_token_features);
    tcase_add_test(tc, b_dec_gradient_has_both_paths);
    tcase_add_test(tc, zero_decoder_row_uses_zero_subgradient);
    tcase_add_test(tc, gradients_accumulate_across_blocks);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(backward_suite)
