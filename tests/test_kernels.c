/*
 * The dense and sparse paths of a step: both agree with the double-precision
 * reference at every density, the automatic choice follows the density, the
 * AVX-512 and portable kernels agree, and results do not depend on the thread
 * count. Uses the library's internal backward entry point (test build).
 */
#include "backward_pass.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Gradients in the library's own layout, with the path that ran. */
typedef struct run {
    float *grad;
    sae_backward_result res;
} run;

static run run_backward(const sae_model *m, const float *x, size_t n, double lambda, int kernel,
                        int n_threads)
{
    const test_pass p = {.lambda = lambda, .bandwidth = 0.001, .kernel = kernel,
                         .n_threads = n_threads};
    run r;
    r.grad = test_lib_backward(m, x, NULL, n, &p, &r.res);
    return r;
}

static int descending(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* A model whose features fire on about `density` of the tokens of x: b_enc is
 * set per feature to the matching quantile of its pre-activations. */
static sae_model *model_with_density(size_t d_in, size_t d_sae, const float *x, size_t n,
                                     double density, uint64_t seed)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, seed), SAE_OK);
    float *b_dec = test_gaussian(1, d_in, 0.1, 0.0, seed + 1);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_DEC, b_dec, d_in), SAE_OK);
    float *f = malloc(n * d_sae * sizeof(float)), *col = malloc(n * sizeof(float));
    float *b_enc = calloc(d_sae, sizeof(float));
    /* with b_enc = 0, pre = f where positive; use the pre-activations directly */
    ref_model r;
    ref_from_model(&r, m);
    for (size_t i = 0; i < d_sae; i++) {
        for (size_t t = 0; t < n; t++) {
            double s = 0.0;
            for (size_t j = 0; j < d_in; j++)
                s += ((double)x[t * d_in + j] - r.b_dec[j]) * r.W_enc[j * d_sae + i];
            col[t] = (float)s;
        }
        /* threshold between sorted neighbours so that ~density * n tokens pass */
        qsort(col, n, sizeof(float), descending);
        size_t keep = (size_t)(density * (double)n);
        if (keep >= n)
            b_enc[i] = -col[n - 1] + 1.0f;
        else if (keep == 0)
            b_enc[i] = -col[0] - 1.0f;
        else
            b_enc[i] = -0.5f * (col[keep - 1] + col[keep]);
    }
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, b_enc, d_sae), SAE_OK);
    ref_free(&r);
    free(f);
    free(col);
    free(b_enc);
    free(b_dec);
    return m;
}

/* max |a - b| over the gradient views, and the largest |b| */
static void grad_diff(const sae_model *m, const float *a, const float *b, double *err, double *scale)
{
    *err = 0.0;
    *scale = 0.0;
    const size_t views[4][2] = {{m->lay.w_enc_t, m->d_in * m->d_sae},
                                {m->lay.w_dec, m->d_in * m->d_sae},
                                {m->lay.b_enc, m->d_sae},
                                {m->lay.b_dec, m->d_in}};
    for (int v = 0; v < 4; v++)
        for (size_t k = views[v][0]; k < views[v][0] + views[v][1]; k++) {
            *err = fmax(*err, fabs((double)a[k] - b[k]));
            *scale = fmax(*scale, fabs((double)b[k]));
        }
}

/* The reference gradients in the library's layout. */
static float *reference_grad(const sae_model *m, const float *x, size_t n, double lambda)
{
    ref_model r;
    ref_grads g;
    ref_from_model(&r, m);
    ref_alloc(&g, m->d_in, m->d_sae);
    ref_gradients(&r, x, n, lambda, &g);
    float *out = sae__alloc_zero(m->lay.total * sizeof(float));
    for (size_t i = 0; i < m->d_sae; i++) {
        out[m->lay.b_enc + i] = (float)g.b_enc[i];
        for (size_t j = 0; j < m->d_in; j++) {
            out[m->lay.w_enc_t + i * m->d_in + j] = (float)g.W_enc[j * m->d_sae + i];
            out[m->lay.w_dec + i * m->d_in + j] = (float)g.W_dec[i * m->d_in + j];
        }
    }
    for (size_t j = 0; j < m->d_in; j++)
        out[m->lay.b_dec + j] = (float)g.b_dec[j];
    ref_free(&r);
    ref_free(&g);
    return out;
}

/* Odd sizes on purpose: d_in = 70 leaves partial column tiles and vector tails,
 * n spans several encoder blocks. */
/* Run the sparse path with rows read in place (_i = 0) and from packed
 * panels (_i = 1), whatever the density would pick. */
START_TEST(dense_and_sparse_paths_match_the_reference_at_every_density)
{
    sae__test_sparse_layout = _i + 1;
    const size_t d_in = 70, d_sae = 80, n = SAE_BLOCK_TOKENS + 100;
    const double densities[] = {0.0, 0.002, 0.03, 0.2, 0.6, 1.0};
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 31);
    for (size_t di = 0; di < sizeof densities / sizeof densities[0]; di++) {
        sae_model *m = model_with_density(d_in, d_sae, x, n, densities[di], 40 + di);
        float *want = reference_grad(m, x, n, 2.0);
        sae_losses want_l;
        ref_model r;
        ref_from_model(&r, m);
        want_l = ref_losses(&r, x, n, 2.0);
        ref_free(&r);
        run dense = run_backward(m, x, n, 2.0, SAE_KERNEL_DENSE, 2);
        run sparse = run_backward(m, x, n, 2.0, SAE_KERNEL_SPARSE, 2);
        ck_assert(!dense.res.used_sparse);
        ck_assert(sparse.res.used_sparse);
        double err, scale, err_ds, scale_ds;
        grad_diff(m, dense.grad, want, &err, &scale);
        ck_assert_msg(err <= 1e-5 * (1 + scale), "density %g dense: err %g scale %g",
                      densities[di], err, scale);
        grad_diff(m, sparse.grad, want, &err, &scale);
        ck_assert_msg(err <= 1e-5 * (1 + scale), "density %g sparse: err %g scale %g",
                      densities[di], err, scale);
        grad_diff(m, sparse.grad, dense.grad, &err_ds, &scale_ds);
        ck_assert_msg(err_ds <= 1e-5 * (1 + scale_ds), "density %g: paths differ by %g",
                      densities[di], err_ds);
        /* the same losses and the same gradient norm on both paths */
        sae_losses ld, ls;
        sae__losses_from_sums(&dense.res.sums, n, SAE_ARCH_RELU, 2.0, 0.0, &ld);
        sae__losses_from_sums(&sparse.res.sums, n, SAE_ARCH_RELU, 2.0, 0.0, &ls);
        ck_assert_double_eq_tol(ld.loss, want_l.loss, 1e-5 * (1 + want_l.loss));
        ck_assert_double_eq_tol(ls.loss, want_l.loss, 1e-5 * (1 + want_l.loss));
        ck_assert_double_eq(ld.l0, want_l.l0);
        ck_assert_double_eq(ls.l0, want_l.l0);
        ck_assert_double_eq_tol(dense.res.grad_sumsq, sparse.res.grad_sumsq,
                                1e-5 * dense.res.grad_sumsq + 1e-30);
        sae__free(dense.grad);
        sae__free(sparse.grad);
        sae__free(want);
        sae_model_free(m);
    }
    free(x);
    sae__test_sparse_layout = 0;
}
END_TEST

/* The portable kernels (used where AVX-512 is missing) agree with the vector ones. */
START_TEST(portable_kernels_agree_with_vector_kernels)
{
    sae__test_sparse_layout = _i + 1; /* both layouts */
    const size_t d_in = 100, d_sae = 90, n = 300;
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 5);
    sae_model *m = model_with_density(d_in, d_sae, x, n, 0.05, 6);
    run fast = run_backward(m, x, n, 1.0, SAE_KERNEL_SPARSE, 2);
    sae__test_portable_kernels = 1;
    run slow = run_backward(m, x, n, 1.0, SAE_KERNEL_SPARSE, 2);
    run slow_dense = run_backward(m, x, n, 1.0, SAE_KERNEL_DENSE, 2);
    sae__test_portable_kernels = 0;
    double err, scale;
    grad_diff(m, slow.grad, fast.grad, &err, &scale);
    ck_assert_msg(err <= 1e-5 * (1 + scale), "portable vs vector: %g", err);
    grad_diff(m, slow_dense.grad, fast.grad, &err, &scale);
    ck_assert_msg(err <= 1e-5 * (1 + scale), "portable dense vs vector sparse: %g", err);
    ck_assert_double_eq(slow.res.sums.active, fast.res.sums.active);
    ck_assert_double_eq_tol(slow.res.sums.l1, fast.res.sums.l1, 1e-6 * fast.res.sums.l1);
    sae__free(fast.grad);
    sae__free(slow.grad);
    sae__free(slow_dense.grad);
    sae_model_free(m);
    free(x);
    sae__test_sparse_layout = 0;
}
END_TEST

/* The library's loops split work so that each sum runs in a fixed order:
 * gradients are bit-identical at any thread count, on both paths. */
START_TEST(results_do_not_depend_on_the_thread_count)
{
    sae__test_sparse_layout = _i + 1;
    const size_t d_in = 64, d_sae = 200, n = 700;
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 8);
    sae_model *m = model_with_density(d_in, d_sae, x, n, 0.04, 9);
    for (int kernel = SAE_KERNEL_DENSE; kernel <= SAE_KERNEL_SPARSE; kernel++) {
        run one = run_backward(m, x, n, 1.5, kernel, 1);
        for (int threads = 2; threads <= 5; threads += 3) {
            run many = run_backward(m, x, n, 1.5, kernel, threads);
            ck_assert_mem_eq(many.grad, one.grad, m->lay.total * sizeof(float));
            ck_assert_mem_eq(&many.res.sums, &one.res.sums, sizeof one.res.sums);
            ck_assert_mem_eq(&many.res.grad_sumsq, &one.res.grad_sumsq, sizeof(double));
            ck_assert(many.res.used_sparse == one.res.used_sparse);
            sae__free(many.grad);
        }
        sae__free(one.grad);
    }
    sae_model_free(m);
    free(x);
    sae__test_sparse_layout = 0;
}
END_TEST

START_TEST(auto_choice_follows_the_density)
{
    const size_t d_in = 32, d_sae = 400, n = 500;
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 12);
    sae_model *sparse_m = model_with_density(d_in, d_sae, x, n, 0.01, 13);
    sae_model *dense_m = model_with_density(d_in, d_sae, x, n, 0.5, 14);
    run a = run_backward(sparse_m, x, n, 1.0, SAE_KERNEL_AUTO, 2);
    run b = run_backward(dense_m, x, n, 1.0, SAE_KERNEL_AUTO, 2);
    ck_assert(a.res.used_sparse);
    ck_assert(!b.res.used_sparse);
    sae__free(a.grad);
    sae__free(b.grad);
    sae_model_free(sparse_m);
    sae_model_free(dense_m);
    free(x);
}
END_TEST

/* Through the public API: steps on the forced paths train the same model. */
START_TEST(public_kernel_option_gives_the_same_training)
{
    const size_t d_in = 24, d_sae = 96, n = 256;
    float *x = test_sparse_data(n, d_in, 16, 2.0, 3, NULL);
    sae_model *m[2];
    sae_optimizer *o[2];
    const int kernels[2] = {SAE_KERNEL_DENSE, SAE_KERNEL_SPARSE};
    sae_losses l[2];
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(sae_model_create(&m[k], d_in, d_sae, 2), SAE_OK);
        ck_assert_int_eq(sae_optimizer_create(&o[k], m[k]), SAE_OK);
        ck_assert_int_eq(sae_optimizer_set(o[k], SAE_OPT_KERNEL, kernels[k]), SAE_OK);
        ck_assert_int_eq(sae_optimizer_set(o[k], SAE_OPT_LR, 1e-3), SAE_OK);
        ck_assert_int_eq(sae_optimizer_set(o[k], SAE_OPT_THREADS, 2), SAE_OK);
        for (int s = 0; s < 20; s++)
            ck_assert_int_eq(sae_step(m[k], o[k], x, n, &l[k]), SAE_OK);
    }
    ck_assert_double_eq_tol(l[0].loss, l[1].loss, 1e-4 * l[0].loss);
    ck_assert_double_eq_tol(l[0].l0, l[1].l0, 0.05 * l[0].l0 + 0.5);
    float *wa = malloc(d_in * d_sae * sizeof(float)), *wb = malloc(d_in * d_sae * sizeof(float));
    ck_assert_int_eq(sae_model_get_tensor(m[0], SAE_W_DEC, wa, d_in * d_sae), SAE_OK);
    ck_assert_int_eq(sae_model_get_tensor(m[1], SAE_W_DEC, wb, d_in * d_sae), SAE_OK);
    double err = 0.0;
    for (size_t k = 0; k < d_in * d_sae; k++)
        err = fmax(err, fabs((double)wa[k] - wb[k]));
    ck_assert_double_lt(err, 1e-4); /* 20 steps of lr 1e-3 move weights by up to 2e-2 */
    free(wa);
    free(wb);
    for (int k = 0; k < 2; k++) {
        sae_optimizer_free(o[k]);
        sae_model_free(m[k]);
    }
    free(x);
}
END_TEST

static Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("paths");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, dense_and_sparse_paths_match_the_reference_at_every_density, 0, 2);
    tcase_add_loop_test(tc, portable_kernels_agree_with_vector_kernels, 0, 2);
    tcase_add_loop_test(tc, results_do_not_depend_on_the_thread_count, 0, 2);
    tcase_add_test(tc, auto_choice_follows_the_density);
    tcase_add_test(tc, public_kernel_option_gives_the_same_training);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(kernels_suite)
