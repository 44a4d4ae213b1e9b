/* Decoder neighbours (sae_decoder_neighbors) against cosines computed in
 * double from W_dec. */
#include "nomem.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double model_sd[4] = {0.3, 0.05, 0.3, 0.3};

/* cos(i, j) in double from W_dec (d_sae x d_in), 0 for a zero row. */
static double ref_cos(const float *w, size_t d_in, size_t i, size_t j)
{
    double dot = 0.0, ni = 0.0, nj = 0.0;
    for (size_t c = 0; c < d_in; c++) {
        dot += (double)w[i * d_in + c] * w[j * d_in + c];
        ni += (double)w[i * d_in + c] * w[i * d_in + c];
        nj += (double)w[j * d_in + c] * w[j * d_in + c];
    }
    return ni > 0.0 && nj > 0.0 ? dot / sqrt(ni * nj) : 0.0;
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

static Suite *neighbors_suite(void)
{
    Suite *s = suite_create("neighbors");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, neighbors_match_cosines_computed_in_double);
    tcase_add_test(tc, parallel_rows_zero_rows_and_ties);
    tcase_add_test(tc, bad_arguments_and_allocation_failures);
    suite_add_tcase(s, tc);
    /* 2100 features: tagged "slow" so the valgrind runs skip it */
    TCase *blocks = tcase_create("blocks");
    tcase_set_timeout(blocks, 120);
    tcase_set_tags(blocks, "slow");
    tcase_add_test(blocks, several_blocks_of_rows);
    suite_add_tcase(s, blocks);
    return s;
}

TEST_MAIN(neighbors_suite)
