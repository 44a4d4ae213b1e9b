/* Encode, decode, loss and FVU against the double-precision reference. */
#include "reference.h"
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void check_forward_against_reference(size_t d_in, size_t d_sae, size_t n)
{
    sae_model *m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 11 + d_in);
    float *x = test_gaussian(n, d_in, 1.0, 0.2, 5 + n);
    float *f = malloc(n * d_sae * sizeof(float));
    float *x_hat = malloc(n * d_in * sizeof(float));
    double *rf = malloc(n * d_sae * sizeof(double));
    double *rx_hat = malloc(n * d_in * sizeof(double));
    ref_model r;
    ref_from_model(&r, m);
    ref_forward(&r, x, n, rf, rx_hat);

    ck_assert_int_eq(sae_encode(m, x, n, f), SAE_OK);
    size_t active = 0;
    for (size_t k = 0; k < n * d_sae; k++) {
        ck_assert_double_eq_tol(f[k], rf[k], 1e-4);
        ck_assert(f[k] >= 0.0f);
        active += f[k] > 0.0f;
    }
    if (n * d_sae >= 20) /* both branches of the ReLU ran */
        ck_assert(active > 0 && active < n * d_sae);
    /* decode the library's own f, compare with decoding the reference's f */
    ck_assert_int_eq(sae_decode(m, f, n, x_hat), SAE_OK);
    for (size_t k = 0; k < n * d_in; k++)
        ck_assert_double_eq_tol(x_hat[k], rx_hat[k], 1e-4);

    const double lambda = 3.0;
    sae_losses got, want = ref_losses(&r, x, n, lambda);
    ck_assert_int_eq(sae_loss(m, x, n, lambda, &got), SAE_OK);
    ck_assert_double_eq_tol(got.l2, want.l2, 1e-5 * (1.0 + want.l2));
    ck_assert_double_eq_tol(got.l1, want.l1, 1e-5 * (1.0 + want.l1));
    ck_assert_double_eq_tol(got.loss, want.loss, 1e-5 * (1.0 + want.loss));
    ck_assert_double_eq(got.l0, want.l0); /* no pre-activation sits within rounding of 0 */

    ref_free(&r);
    free(x);
    free(f);
    free(x_hat);
    free(rf);
    free(rx_hat);
    sae_model_free(m);
}

START_TEST(forward_matches_reference_on_several_shapes)
{
    check_forward_against_reference(1, 1, 3);
    check_forward_against_reference(3, 7, 5);
    check_forward_against_reference(16, 48, 33);
    check_forward_against_reference(31, 5, 17);
    /* more tokens than one internal block */
    check_forward_against_reference(4, 9, 2500);
}
END_TEST

/* The L1 term from row norms equals the explicit per-token (d_sae x d_in)
 * formulation: sum_i ||f_i W_dec[i,:]|| = sum_i f_i ||W_dec[i,:]|| since f >= 0. */
START_TEST(l1_from_row_norms_equals_explicit_tensor)
{
    const size_t d_in = 6, d_sae = 10, n = 9;
    sae_model *m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 77);
    /* decoder rows of very different norms, so the weighting matters */
    float w_dec[60];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, w_dec, 60), SAE_OK);
    for (size_t i = 0; i < d_sae; i++)
        for (size_t j = 0; j < d_in; j++)
            w_dec[i * d_in + j] *= (float)(1 + 3 * i);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_DEC, w_dec, 60), SAE_OK);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 3);
    ref_model r;
    ref_from_model(&r, m);
    double explicit_l1 = ref_l1_explicit(&r, x, n);
    sae_losses got;
    ck_assert_int_eq(sae_loss(m, x, n, 1.0, &got), SAE_OK);
    ck_assert_double_gt(explicit_l1, 0.0);
    ck_assert_double_eq_tol(got.l1, explicit_l1, 1e-6 * explicit_l1);
    ref_free(&r);
    free(x);
    sae_model_free(m);
}
END_TEST

/* sum_t ||x_t - mean||^2 of x (n x d) computed directly in long double;
 * mean: d entries, written. */
static double direct_sum_squared_deviations(const float *x, size_t n, size_t d, long double *mean)
{
    for (size_t j = 0; j < d; j++) {
        mean[j] = 0.0L;
        for (size_t t = 0; t < n; t++)
            mean[j] += x[t * d + j];
        mean[j] /= (long double)n;
    }
    long double sum = 0.0L;
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++)
            sum += (x[t * d + j] - mean[j]) * (x[t * d + j] - mean[j]);
    return (double)sum;
}

START_TEST(fvu_is_error_over_variance)
{
    const size_t d_in = 8, d_sae = 16, n = 50;
    sae_model *m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 5);
    float *x = test_gaussian(n, d_in, 2.0, 1.0, 9);
    ref_model r;
    ref_from_model(&r, m);
    sae_losses l = ref_losses(&r, x, n, 0.0);
    long double mean[8];
    double var = direct_sum_squared_deviations(x, n, d_in, mean);
    double fvu;
    ck_assert_int_eq(sae_fvu(m, x, n, &fvu), SAE_OK);
    ck_assert_double_eq_tol(fvu, l.l2 * n / var, 1e-5);

    /* the per-token total variance is its denominator: l2 / it is the FVU */
    double per_token;
    ck_assert_int_eq(sae_total_variance(x, n, d_in, NULL, &per_token), SAE_OK);
    ck_assert_double_eq_tol(fvu, l.l2 / per_token, 1e-5);

    ref_free(&r);
    free(x);
    sae_model_free(m);
}
END_TEST

/* sae_total_variance: the mean over tokens of ||x_t - mean(x)||^2 and the
 * mean itself, against a direct computation, on data far from the origin
 * (where a one-pass sum of squares would lose the variance). */
START_TEST(total_variance_matches_direct_computation)
{
    const size_t d = 5, n = 300;
    float *x = test_gaussian(n, d, 0.5, 1000.0, 21);
    long double want_mean[5];
    double want = direct_sum_squared_deviations(x, n, d, want_mean) / (double)n;
    double got = -1.0, mean[5];
    ck_assert_int_eq(sae_total_variance(x, n, d, mean, &got), SAE_OK);
    ck_assert_double_eq_tol(got, want, 1e-9 * want);
    for (size_t j = 0; j < d; j++)
        ck_assert_double_eq_tol(mean[j], (double)want_mean[j], 1e-9);
    double without_mean = -1.0;
    ck_assert_int_eq(sae_total_variance(x, n, d, NULL, &without_mean), SAE_OK);
    ck_assert_double_eq(without_mean, got);

    /* one token: no spread, its mean is itself */
    ck_assert_int_eq(sae_total_variance(x + d, 1, d, mean, &got), SAE_OK);
    ck_assert_double_eq(got, 0.0);
    for (size_t j = 0; j < d; j++)
        ck_assert_double_eq(mean[j], x[d + j]);
    free(x);
}
END_TEST

START_TEST(total_variance_rejects_bad_input)
{
    float x[6] = {1, 2, 3, 4, 5, 6};
    double out = 7.0, mean[3] = {8, 8, 8};
    ck_assert_int_eq(sae_total_variance(NULL, 2, 3, mean, &out), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_total_variance: x"));
    ck_assert_int_eq(sae_total_variance(x, 2, 3, mean, NULL), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "out is NULL"));
    ck_assert_int_eq(sae_total_variance(x, 0, 3, mean, &out), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "n_tokens"));
    ck_assert_int_eq(sae_total_variance(x, 2, 0, mean, &out), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_total_variance(x, SIZE_MAX / 2, 3, mean, &out), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_total_variance(x, 2, SIZE_MAX / 8 + 1, NULL, &out), SAE_E_INVALID_ARG);
    for (int which = 0; which < 2; which++) {
        float bad[6] = {1, 2, 3, 4, 5, 6};
        bad[4] = which ? -INFINITY : NAN;
        ck_assert_int_eq(sae_total_variance(bad, 2, 3, mean, &out), SAE_E_NONFINITE);
        ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_total_variance"));
    }
    ck_assert_double_eq(out, 7.0);
    for (size_t j = 0; j < 3; j++)
        ck_assert_double_eq(mean[j], 8.0);
}
END_TEST

/* An SAE whose features copy the coordinates reconstructs non-negative x exactly. */
START_TEST(identity_sae_has_zero_fvu)
{
    const size_t d = 4, n = 10;
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, d, d, 1), SAE_OK);
    float eye[16] = {0};
    for (size_t i = 0; i < d; i++)
        eye[i * d + i] = 1.0f;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, eye, 16), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_DEC, eye, 16), SAE_OK);
    float *x = test_gaussian(n, d, 1.0, 0.0, 4);
    for (size_t k = 0; k < n * d; k++)
        x[k] = fabsf(x[k]);
    double fvu = -1.0;
    ck_assert_int_eq(sae_fvu(m, x, n, &fvu), SAE_OK);
    ck_assert_double_eq_tol(fvu, 0.0, 1e-12);
    sae_losses l;
    ck_assert_int_eq(sae_loss(m, x, n, 2.0, &l), SAE_OK);
    ck_assert_double_eq_tol(l.l2, 0.0, 1e-12);
    free(x);
    sae_model_free(m);
}
END_TEST

START_TEST(forward_functions_reject_bad_input)
{
    const size_t d_in = 3, d_sae = 4;
    sae_model *m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 2);
    model_snapshot before;
    snapshot_take(&before, m);
    float x[6] = {1, 2, 3, 4, 5, 6}, f[8], x_hat[6];
    sae_losses l = {1, 2, 3, 4}, l_before = l;
    double fvu = 7.0;

    ck_assert_int_eq(sae_encode(NULL, x, 2, f), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode(m, NULL, 2, f), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode(m, x, 2, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode(m, x, 0, f), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode(m, x, SIZE_MAX / 2, f), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_decode(NULL, f, 2, x_hat), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_decode(m, NULL, 2, x_hat), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_decode(m, f, 2, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_decode(m, f, 0, x_hat), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_decode(m, f, SIZE_MAX / 3, x_hat), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss(NULL, x, 2, 1.0, &l), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss(m, NULL, 2, 1.0, &l), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss(m, x, 2, 1.0, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss(m, x, 0, 1.0, &l), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss(m, x, SIZE_MAX / 2, 1.0, &l), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss(m, x, 2, -0.5, &l), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss(m, x, 2, NAN, &l), SAE_E_NONFINITE);
    ck_assert_int_eq(sae_loss(m, x, 2, INFINITY, &l), SAE_E_NONFINITE);
    ck_assert_int_eq(sae_fvu(NULL, x, 2, &fvu), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_fvu(m, x, 1, &fvu), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_fvu(m, x, 2, NULL), SAE_E_INVALID_ARG);
    float same[6] = {1, 2, 3, 1, 2, 3}; /* zero variance */
    ck_assert_int_eq(sae_fvu(m, same, 2, &fvu), SAE_E_INVALID_ARG);

    /* NaN or Inf anywhere in the data: nothing written */
    for (int which = 0; which < 2; which++) {
        float bad[6] = {1, 2, 3, 4, 5, 6};
        bad[5] = which ? INFINITY : NAN;
        for (size_t k = 0; k < 8; k++)
            f[k] = 42.0f;
        ck_assert_int_eq(sae_encode(m, bad, 2, f), SAE_E_NONFINITE);
        for (size_t k = 0; k < 8; k++)
            ck_assert_float_eq(f[k], 42.0f);
        ck_assert_int_eq(sae_loss(m, bad, 2, 1.0, &l), SAE_E_NONFINITE);
        ck_assert_int_eq(sae_fvu(m, bad, 2, &fvu), SAE_E_NONFINITE);
        float bad_f[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        bad_f[3] = which ? -INFINITY : NAN;
        for (size_t k = 0; k < 6; k++)
            x_hat[k] = 42.0f;
        ck_assert_int_eq(sae_decode(m, bad_f, 2, x_hat), SAE_E_NONFINITE);
        for (size_t k = 0; k < 6; k++)
            ck_assert_float_eq(x_hat[k], 42.0f);
    }
    ck_assert_mem_eq(&l, &l_before, sizeof l);
    ck_assert_double_eq(fvu, 7.0);
    ck_assert(snapshot_equal(&before, m));
    snapshot_free(&before);
    sae_model_free(m);
}
END_TEST

/* Read-only calls on one model may run concurrently (documented in the header). */
typedef struct encode_job {
    const sae_model *m;
    const float *x;
    size_t n;
    float *f;
    sae_losses l;
    int rc;
} encode_job;

static void *encode_worker(void *arg)
{
    encode_job *job = arg;
    for (int rep = 0; rep < 20 && job->rc == SAE_OK; rep++) {
        job->rc = sae_encode(job->m, job->x, job->n, job->f);
        if (job->rc == SAE_OK)
            job->rc = sae_loss(job->m, job->x, job->n, 1.0, &job->l);
    }
    return NULL;
}

START_TEST(read_only_calls_run_concurrently)
{
    const size_t d_in = 32, d_sae = 64, n = 100;
    sae_model *m = test_perturbed_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 8);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 10);
    float *expect = malloc(n * d_sae * sizeof(float));
    ck_assert_int_eq(sae_encode(m, x, n, expect), SAE_OK);
    sae_losses l_expect;
    ck_assert_int_eq(sae_loss(m, x, n, 1.0, &l_expect), SAE_OK);
    enum { THREADS = 4 };
    pthread_t tid[THREADS];
    encode_job jobs[THREADS];
    for (int k = 0; k < THREADS; k++) {
        jobs[k] = (encode_job){m, x, n, malloc(n * d_sae * sizeof(float)), {0, 0, 0, 0}, SAE_OK};
        ck_assert_int_eq(pthread_create(&tid[k], NULL, encode_worker, &jobs[k]), 0);
    }
    for (int k = 0; k < THREADS; k++) {
        pthread_join(tid[k], NULL);
        ck_assert_int_eq(jobs[k].rc, SAE_OK);
        ck_assert_mem_eq(jobs[k].f, expect, n * d_sae * sizeof(float));
        ck_assert_double_eq(jobs[k].l.loss, l_expect.loss);
        free(jobs[k].f);
    }
    free(expect);
    free(x);
    sae_model_free(m);
}
END_TEST

static Suite *forward_suite(void)
{
    Suite *s = suite_create("forward");
    TCase *tc = tcase_create("forward");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, forward_matches_reference_on_several_shapes);
    tcase_add_test(tc, l1_from_row_norms_equals_explicit_tensor);
    tcase_add_test(tc, fvu_is_error_over_variance);
    tcase_add_test(tc, identity_sae_has_zero_fvu);
    tcase_add_test(tc, total_variance_matches_direct_computation);
    tcase_add_test(tc, total_variance_rejects_bad_input);
    tcase_add_test(tc, forward_functions_reject_bad_input);
    tcase_add_test(tc, read_only_calls_run_concurrently);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(forward_suite)
