/* Decoder neighbours (sae_decoder_neighbors) and each row's best match in
 * another dictionary (sae_max_cosine) against cosines computed in double. */
#include "nomem.h"
#include "testutil.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const double model_sd[4] = {0.3, 0.05, 0.3, 0.3};

/* cos(a_i, b_j) in double (rows of d), 0 for a zero row. */
static double ref_cos_of(const float *a, size_t i, const float *b, size_t j, size_t d)
{
    double dot = 0.0, ni = 0.0, nj = 0.0;
    for (size_t c = 0; c < d; c++) {
        dot += (double)a[i * d + c] * b[j * d + c];
        ni += (double)a[i * d + c] * a[i * d + c];
        nj += (double)b[j * d + c] * b[j * d + c];
    }
    return ni > 0.0 && nj > 0.0 ? dot / sqrt(ni * nj) : 0.0;
}

/* cos(i, j) of two rows of W_dec (d_sae x d_in). */
static double ref_cos(const float *w, size_t d_in, size_t i, size_t j)
{
    return ref_cos_of(w, i, w, j, d_in);
}

static int desc(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a < b) - (a > b);
}

/* Every feature's list: k distinct other features, cosines as the reference
 * computes them, best first, and none left out that is clearly better than
 * the k-th (up to float rounding). */
static void check_neighbors(const sae_model *m, size_t k)
{
    const size_t d_in = sae_model_d_in(m), d_sae = sae_model_d_sae(m);
    float *w = malloc(d_sae * d_in * sizeof(float));
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, w, d_sae * d_in), SAE_OK);
    uint32_t *idx = malloc(d_sae * k * sizeof(uint32_t));
    float *cos = malloc(d_sae * k * sizeof(float));
    double *all = malloc(d_sae * sizeof(double));
    ck_assert_int_eq(sae_decoder_neighbors(m, k, idx, cos, d_sae * k), SAE_OK);
    for (size_t i = 0; i < d_sae; i++) {
        size_t n = 0;
        for (size_t j = 0; j < d_sae; j++)
            if (j != i)
                all[n++] = ref_cos(w, d_in, i, j);
        qsort(all, n, sizeof *all, desc);
        for (size_t r = 0; r < k; r++) {
            uint32_t j = idx[i * k + r];
            ck_assert_uint_lt(j, d_sae);
            ck_assert_uint_ne(j, i);
            for (size_t q = 0; q < r; q++)
                ck_assert_uint_ne(idx[i * k + q], j);
            ck_assert_double_eq_tol(cos[i * k + r], ref_cos(w, d_in, i, j), 1e-5);
            if (r > 0)
                ck_assert(cos[i * k + r] <= cos[i * k + r - 1]);
            ck_assert_double_ge(cos[i * k + r], all[r] - 1e-5);
        }
    }
    /* without the cosines: the same indices */
    uint32_t *idx2 = malloc(d_sae * k * sizeof(uint32_t));
    ck_assert_int_eq(sae_decoder_neighbors(m, k, idx2, NULL, d_sae * k), SAE_OK);
    ck_assert_mem_eq(idx2, idx, d_sae * k * sizeof(uint32_t));
    free(idx2);
    free(all);
    free(cos);
    free(idx);
    free(w);
}

START_TEST(neighbors_match_cosines_computed_in_double)
{
    sae_model *m = test_random_model(SAE_ARCH_RELU, 0.0, 16, 50, 1, model_sd);
    check_neighbors(m, 1);
    check_neighbors(m, 7);
    check_neighbors(m, 49);
    sae_model_free(m);
}
END_TEST

/* More features than one 16 MB block of the Gram matrix holds rows of. */
START_TEST(several_blocks_of_rows)
{
    sae_model *m = test_random_model(SAE_ARCH_RELU, 0.0, 3, 2100, 2, model_sd);
    check_neighbors(m, 4);
    sae_model_free(m);
}
END_TEST

START_TEST(parallel_rows_zero_rows_and_ties)
{
    const size_t d_in = 4, d_sae = 8;
    sae_model *m = test_random_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, 3, model_sd);
    float w[8 * 4];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, w, 32), SAE_OK);
    for (size_t c = 0; c < d_in; c++) {
        w[3 * d_in + c] = 0.0f;                  /* feature 3: a zero row */
        w[5 * d_in + c] = 2.0f * w[7 * d_in + c]; /* 5 and 7: the same direction */
    }
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_DEC, w, 32), SAE_OK);
    uint32_t idx[8 * 3];
    float cos[8 * 3];
    ck_assert_int_eq(sae_decoder_neighbors(m, 3, idx, cos, 24), SAE_OK);
    ck_assert_uint_eq(idx[5 * 3], 7);
    ck_assert_uint_eq(idx[7 * 3], 5);
    ck_assert_double_eq_tol(cos[5 * 3], 1.0, 1e-6);
    /* the zero row: cosine 0 with everything, so the lowest other indices */
    ck_assert_uint_eq(idx[3 * 3 + 0], 0);
    ck_assert_uint_eq(idx[3 * 3 + 1], 1);
    ck_assert_uint_eq(idx[3 * 3 + 2], 2);
    for (int r = 0; r < 3; r++)
        ck_assert(cos[3 * 3 + r] == 0.0f);
    check_neighbors(m, 3);
    sae_model_free(m);
}
END_TEST

typedef struct nn_call { const sae_model *m; uint32_t *idx; float *cos; } nn_call;

static int call_neighbors(void *ctx)
{
    nn_call *c = ctx;
    return sae_decoder_neighbors(c->m, 2, c->idx, c->cos, 12);
}

START_TEST(bad_arguments_and_allocation_failures)
{
    sae_model *m = test_random_model(SAE_ARCH_RELU, 0.0, 3, 6, 4, model_sd);
    uint32_t idx[12];
    float cos[12];
    ck_assert_int_eq(sae_decoder_neighbors(NULL, 2, idx, cos, 12), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_decoder_neighbors(m, 2, NULL, cos, 12), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_decoder_neighbors(m, 0, idx, cos, 0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_decoder_neighbors(m, 6, idx, cos, 36), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_decoder_neighbors(m, 2, idx, cos, 11), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_decoder_neighbors(m, 2, idx, cos, 13), SAE_E_INVALID_ARG);
    nn_call c = {m, idx, cos};
    ck_assert_int_ge(nomem_fail_each_allocation(call_neighbors, &c, NULL), 3);
    sae_model_free(m);
}
END_TEST

/* ---- sae_max_cosine ------------------------------------------------------------ */

/* Each row of a: the cosine sae_max_cosine reports is the double
 * computation's largest over b's rows (up to float rounding), at an index
 * that reaches it, the lowest where cosines tie exactly; cosine alone and
 * index alone give the same. Returns the mean (the MMCS). */
static double check_max_cosine(const float *a, size_t n_a, const float *b, size_t n_b, size_t d)
{
    float *cos = malloc(n_a * sizeof(float)), *cos_only = malloc(n_a * sizeof(float));
    uint32_t *idx = malloc(n_a * sizeof(uint32_t)), *idx_only = malloc(n_a * sizeof(uint32_t));
    ck_assert_int_eq(sae_max_cosine(a, n_a, b, n_b, d, cos, idx), SAE_OK);
    double sum = 0.0;
    for (size_t i = 0; i < n_a; i++) {
        double best = -2.0;
        for (size_t j = 0; j < n_b; j++)
            best = fmax(best, ref_cos_of(a, i, b, j, d));
        ck_assert_uint_lt(idx[i], n_b);
        ck_assert_double_eq_tol(cos[i], best, 1e-5);
        ck_assert_double_eq_tol(ref_cos_of(a, i, b, idx[i], d), best, 1e-5);
        sum += cos[i];
    }
    ck_assert_int_eq(sae_max_cosine(a, n_a, b, n_b, d, cos_only, NULL), SAE_OK);
    ck_assert_int_eq(sae_max_cosine(a, n_a, b, n_b, d, NULL, idx_only), SAE_OK);
    ck_assert_mem_eq(cos_only, cos, n_a * sizeof(float));
    ck_assert_mem_eq(idx_only, idx, n_a * sizeof(uint32_t));
    free(idx_only);
    free(idx);
    free(cos_only);
    free(cos);
    return sum / (double)n_a;
}

/* Ground truth against a decoder: the MMCS of a model's W_dec rows against
 * directions planted among them (one copied, one scaled, one negated), zero
 * rows on both sides, and a row whose every cosine is negative. */
START_TEST(max_cosine_matches_cosines_computed_in_double)
{
    const size_t d = 24, n_a = 37, n_b = 53;
    float *a = test_gaussian(n_a, d, 1.0, 0.0, 11), *b = test_gaussian(n_b, d, 1.0, 0.0, 12);
    for (size_t c = 0; c < d; c++) {
        b[40 * d + c] = a[2 * d + c];         /* a_2 = b_40: cosine 1 */
        b[7 * d + c] = 3.0f * a[5 * d + c];   /* a_5 = b_7 / 3: cosine 1 */
        b[9 * d + c] = -a[6 * d + c];         /* a_6 = -b_9: cosine -1 there */
        a[10 * d + c] = 0.0f;                 /* a zero row: cosine 0 with every row */
        b[3 * d + c] = 0.0f;                  /* a zero row of b: cosine 0 */
    }
    double mmcs = check_max_cosine(a, n_a, b, n_b, d);
    ck_assert_double_gt(mmcs, 0.3);
    float cos[37];
    uint32_t idx[37];
    ck_assert_int_eq(sae_max_cosine(a, n_a, b, n_b, d, cos, idx), SAE_OK);
    ck_assert_uint_eq(idx[2], 40);
    ck_assert_uint_eq(idx[5], 7);
    ck_assert_double_eq_tol(cos[2], 1.0, 1e-6);
    ck_assert_double_eq_tol(cos[5], 1.0, 1e-6);
    ck_assert_uint_ne(idx[6], 9);
    ck_assert(cos[10] == 0.0f && idx[10] == 0); /* ties to the lowest index */

    /* the largest cosine may be negative: (1, 0) against (-1, 0) and (-1, -1) */
    const float one[2] = {1.0f, 0.0f}, opposite[4] = {-1.0f, 0.0f, -1.0f, -1.0f};
    ck_assert_int_eq(sae_max_cosine(one, 1, opposite, 2, 2, cos, idx), SAE_OK);
    ck_assert_uint_eq(idx[0], 1);
    ck_assert_double_eq_tol(cos[0], -sqrt(0.5), 1e-6);

    /* a decoder against itself: every row finds itself (cosine 1) */
    sae_model *m = test_random_model(SAE_ARCH_RELU, 0.0, 16, 50, 1, model_sd);
    float w[50 * 16];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, w, 50 * 16), SAE_OK);
    ck_assert_double_eq_tol(check_max_cosine(w, 50, w, 50, 16), 1.0, 1e-6);
    sae_model_free(m);
    free(b);
    free(a);
}
END_TEST

/* More rows of a than one 16 MB block of cosines holds (2^22 / 5000 = 838). */
START_TEST(max_cosine_several_blocks_of_rows)
{
    const size_t d = 3, n_a = 2000, n_b = 5000;
    float *a = test_gaussian(n_a, d, 1.0, 0.0, 13), *b = test_gaussian(n_b, d, 1.0, 0.0, 14);
    check_max_cosine(a, n_a, b, n_b, d);
    free(b);
    free(a);
}
END_TEST

typedef struct mc_call { const float *a, *b; float *cos; uint32_t *idx; } mc_call;

static int call_max_cosine(void *ctx)
{
    mc_call *c = ctx;
    return sae_max_cosine(c->a, 3, c->b, 5, 4, c->cos, c->idx);
}

/* The outputs keep their sentinels after any refusal. */
static void untouched(void *ctx)
{
    mc_call *c = ctx;
    for (size_t i = 0; i < 3; i++)
        ck_assert(c->cos[i] == 7.0f && c->idx[i] == 77);
}

static void expect_refused(int rc, int status, const char *needle, mc_call *c)
{
    ck_assert_int_eq(rc, status);
    ck_assert_msg(strstr(sae_error_detail(), "sae_max_cosine") &&
                      strstr(sae_error_detail(), needle),
                  "detail \"%s\" lacks \"%s\"", sae_error_detail(), needle);
    untouched(c);
}

START_TEST(max_cosine_bad_arguments_and_allocation_failures)
{
    float *a = test_gaussian(3, 4, 1.0, 0.0, 15), *b = test_gaussian(5, 4, 1.0, 0.0, 16);
    float cos[3] = {7.0f, 7.0f, 7.0f};
    uint32_t idx[3] = {77, 77, 77};
    mc_call c = {a, b, cos, idx};
    const int bad = SAE_E_INVALID_ARG;
    expect_refused(sae_max_cosine(NULL, 3, b, 5, 4, cos, idx), bad, "a is NULL", &c);
    expect_refused(sae_max_cosine(a, 3, NULL, 5, 4, cos, idx), bad, "b is NULL", &c);
    expect_refused(sae_max_cosine(a, 3, b, 5, 4, NULL, NULL), bad, "both NULL", &c);
    expect_refused(sae_max_cosine(a, 0, b, 5, 4, cos, idx), bad, "n_a is 0", &c);
    expect_refused(sae_max_cosine(a, 3, b, 0, 4, cos, idx), bad, "n_b is 0", &c);
    expect_refused(sae_max_cosine(a, 3, b, 5, 0, cos, idx), bad, "d is 0", &c);
    expect_refused(sae_max_cosine(a, 3, b, (size_t)INT_MAX + 1, 4, cos, idx), bad, "INT_MAX", &c);
    expect_refused(sae_max_cosine(a, 3, b, 5, (size_t)INT_MAX + 1, cos, idx), bad, "INT_MAX", &c);
    expect_refused(sae_max_cosine(a, SIZE_MAX / 8, b, 5, 4, cos, idx), bad, "overflows", &c);
    /* NaN, Inf, a norm above FLT_MAX, norms whose product overflows float */
    a[1 * 4 + 2] = NAN;
    expect_refused(sae_max_cosine(a, 3, b, 5, 4, cos, idx), SAE_E_NONFINITE, "row 1 of a", &c);
    a[1 * 4 + 2] = 0.5f;
    b[4 * 4 + 0] = INFINITY;
    expect_refused(sae_max_cosine(a, 3, b, 5, 4, cos, idx), SAE_E_NONFINITE, "row 4 of b", &c);
    b[4 * 4 + 0] = 3e38f;
    b[4 * 4 + 1] = 3e38f;
    expect_refused(sae_max_cosine(a, 3, b, 5, 4, cos, idx), SAE_E_NONFINITE, "FLT_MAX", &c);
    b[4 * 4 + 1] = 0.5f;
    expect_refused(sae_max_cosine(a, 3, b, 5, 4, cos, idx), SAE_E_NONFINITE, "not finite", &c);
    b[4 * 4 + 0] = 0.5f;
    ck_assert_int_ge(nomem_fail_each_allocation(call_max_cosine, &c, untouched), 3);
    free(b);
    free(a);
}
END_TEST

static Suite *neighbors_suite(void)
{
    Suite *s = suite_create("neighbors");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, neighbors_match_cosines_computed_in_double);
    tcase_add_test(tc, parallel_rows_zero_rows_and_ties);
    tcase_add_test(tc, bad_arguments_and_allocation_failures);
    tcase_add_test(tc, max_cosine_matches_cosines_computed_in_double);
    tcase_add_test(tc, max_cosine_bad_arguments_and_allocation_failures);
    suite_add_tcase(s, tc);
    /* 2100 features: tagged "slow" so the valgrind runs skip it */
    TCase *blocks = tcase_create("blocks");
    tcase_set_timeout(blocks, 120);
    tcase_set_tags(blocks, "slow");
    tcase_add_test(blocks, several_blocks_of_rows);
    tcase_add_test(blocks, max_cosine_several_blocks_of_rows);
    suite_add_tcase(s, blocks);
    return s;
}

TEST_MAIN(neighbors_suite)
