/* Sparse codes (sae_encode_sparse) against sae_encode's dense features, in
 * every architecture. */
#include "nomem.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* The dense features of the batch, by sae_encode. */
static float *dense_features(const sae_model *m, const float *x, size_t n)
{
    float *f = malloc(n * sae_model_d_sae(m) * sizeof(float));
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(sae_encode(m, x, n, f), SAE_OK);
    return f;
}

/* The pairs sae_encode_sparse must give token t under cap c, from its dense
 * row: the positive values, the c largest (ties: lower feature) if capped,
 * in feature order. Returns the count; feat/val get the pairs. */
static size_t expected_pairs(const float *row, size_t d_sae, size_t cap, uint32_t *feat,
                             float *val)
{
    size_t n = 0;
    for (size_t i = 0; i < d_sae; i++)
        if (row[i] > 0.0f) {
            feat[n] = (uint32_t)i;
            val[n++] = row[i];
        }
    if (cap == 0 || n <= cap)
        return n;
    /* drop the smallest (the higher feature among equals) until cap remain */
    while (n > cap) {
        size_t worst = 0;
        for (size_t k = 1; k < n; k++)
            if (val[k] < val[worst] || (val[k] == val[worst] && feat[k] > feat[worst]))
                worst = k;
        memmove(feat + worst, feat + worst + 1, (n - worst - 1) * sizeof *feat);
        memmove(val + worst, val + worst + 1, (n - worst - 1) * sizeof *val);
        n--;
    }
    return n;
}

/* Encode sparsely with a roomy buffer and compare every token with the dense
 * features (bit for bit) and with the size query. */
static void check_against_dense(const sae_model *m, const float *x, size_t n, size_t cap)
{
    const size_t d_sae = sae_model_d_sae(m);
    float *f = dense_features(m, x, n);
    size_t nnz = 0;
    ck_assert_int_eq(sae_encode_sparse_size(m, x, n, cap, &nnz), SAE_OK);
    size_t *offsets = malloc((n + 1) * sizeof(size_t));
    uint32_t *features = malloc((nnz + 1) * sizeof(uint32_t));
    float *values = malloc((nnz + 1) * sizeof(float));
    uint32_t *want_feat = malloc(d_sae * sizeof(uint32_t));
    float *want_val = malloc(d_sae * sizeof(float));
    size_t done = 0;
    ck_assert_int_eq(sae_encode_sparse(m, x, n, cap, offsets, features, values, nnz, &done),
                     SAE_OK);
    ck_assert_uint_eq(done, n);
    ck_assert_uint_eq(offsets[0], 0);
    ck_assert_uint_eq(offsets[n], nnz);
    size_t active = 0;
    for (size_t t = 0; t < n; t++) {
        size_t count = expected_pairs(f + t * d_sae, d_sae, cap, want_feat, want_val);
        ck_assert_uint_eq(offsets[t + 1] - offsets[t], count);
        for (size_t k = 0; k < count; k++) {
            ck_assert_uint_eq(features[offsets[t] + k], want_feat[k]);
            ck_assert(values[offsets[t] + k] == want_val[k]); /* bit for bit */
        }
        active += count;
    }
    ck_assert(active > 0 && active < n * d_sae); /* both kinds of entries were there */
    free(want_val);
    free(want_feat);
    free(values);
    free(features);
    free(offsets);
    free(f);
}

static const int all_archs[4] = {SAE_ARCH_RELU, SAE_ARCH_TOPK, SAE_ARCH_BATCHTOPK,
                                 SAE_ARCH_JUMPRELU};

START_TEST(pairs_are_sae_encode_values_in_every_architecture)
{
    for (int a = 0; a < 4; a++) {
        sae_model *m = test_arch_model(all_archs[a], 12, 40, 100 + (uint64_t)a);
        float *x = test_gaussian(70, 12, 1.0, 0.0, 7);
        check_against_dense(m, x, 70, 0);
        free(x);
        sae_model_free(m);
    }
}
END_TEST

START_TEST(a_cap_keeps_the_largest_values_ties_to_the_lower_feature)
{
    for (int a = 0; a < 4; a++) {
        sae_model *m = test_arch_model(all_archs[a], 12, 40, 200 + (uint64_t)a);
        float *x = test_gaussian(50, 12, 1.0, 0.0, 8);
        static const size_t caps[5] = {1, 2, 5, 13, 41};
        for (int c = 0; c < 5; c++)
            check_against_dense(m, x, 50, caps[c]);
        free(x);
        sae_model_free(m);
    }
    /* equal values: features 0..7 share one encoder column and bias, so every
     * token's eight values are equal and the cap keeps the lowest features */
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, 3, 8, 1), SAE_OK);
    float w_enc[3 * 8];
    for (size_t j = 0; j < 3; j++)
        for (size_t i = 0; i < 8; i++)
            w_enc[j * 8 + i] = (float)(j + 1) * 0.25f;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, w_enc, 24), SAE_OK);
    float x[3] = {1.0f, 2.0f, 0.5f};
    size_t offsets[2], done;
    uint32_t feat[3];
    float val[3];
    ck_assert_int_eq(sae_encode_sparse(m, x, 1, 3, offsets, feat, val, 3, &done), SAE_OK);
    ck_assert_uint_eq(done, 1);
    ck_assert_uint_eq(offsets[1], 3);
    for (uint32_t k = 0; k < 3; k++) {
        ck_assert_uint_eq(feat[k], k);
        ck_assert(val[k] == val[0] && val[0] > 0.0f);
    }
    sae_model_free(m);
}
END_TEST

/* More tokens than one block (1024): the batch is encoded in several. */
START_TEST(batches_larger_than_one_block)
{
    const size_t d_in = 12, d_sae = 10, n = 2100;
    sae_model *m = test_arch_model(SAE_ARCH_RELU, d_in, d_sae, 300);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 9);
    check_against_dense(m, x, n, 0);
    check_against_dense(m, x, n, 5);
    free(x);
    sae_model_free(m);
}
END_TEST

/* A short capacity stops at a token boundary; the caller continues from
 * there with the rest of the batch (each call's values are sae_encode's of
 * the tokens it was given). */
START_TEST(a_short_capacity_stops_between_tokens_and_the_caller_continues)
{
    const size_t d_in = 10, d_sae = 30, n = 40;
    sae_model *m = test_arch_model(SAE_ARCH_RELU, d_in, d_sae, 400);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 10);
    size_t nnz;
    ck_assert_int_eq(sae_encode_sparse_size(m, x, n, 0, &nnz), SAE_OK);
    const size_t room = nnz / 5; /* about a fifth of the pairs per call */
    size_t off[41], t0 = 0, calls = 0, done;
    uint32_t feat[400], want_feat[30];
    float val[400], want_val[30];
    ck_assert_uint_lt(room, 400);
    while (t0 < n) {
        for (size_t k = 0; k <= n; k++)
            off[k] = 12345; /* untouched past the tokens encoded */
        ck_assert_int_eq(sae_encode_sparse(m, x + t0 * d_in, n - t0, 0, off, feat, val, room,
                                           &done), SAE_OK);
        ck_assert_uint_gt(done, 0);
        ck_assert_uint_le(off[done], room);
        float *f = dense_features(m, x + t0 * d_in, n - t0);
        for (size_t t = 0; t < done; t++) {
            size_t count = expected_pairs(f + t * d_sae, d_sae, 0, want_feat, want_val);
            ck_assert_uint_eq(off[t + 1] - off[t], count);
            ck_assert_mem_eq(feat + off[t], want_feat, count * sizeof(uint32_t));
            ck_assert_mem_eq(val + off[t], want_val, count * sizeof(float));
        }
        if (t0 + done < n) { /* the next token did not fit */
            size_t next = expected_pairs(f + done * d_sae, d_sae, 0, want_feat, want_val);
            ck_assert_uint_gt(off[done] + next, room);
            ck_assert_uint_eq(off[done + 1], 12345);
        }
        free(f);
        t0 += done;
        calls++;
    }
    ck_assert_uint_ge(calls, 5);

    /* capacity 0: only the leading tokens without pairs */
    ck_assert_int_eq(sae_encode_sparse(m, x, n, 0, off, NULL, NULL, 0, &done), SAE_OK);
    ck_assert_uint_eq(done, 0); /* token 0 has pairs */
    ck_assert_uint_eq(off[0], 0);
    free(x);
    sae_model_free(m);
}
END_TEST

START_TEST(bad_arguments_are_refused_and_nothing_is_written)
{
    sae_model *m = test_arch_model(SAE_ARCH_RELU, 4, 6, 500);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    size_t off[3] = {7, 7, 7}, done = 99, nnz = 99;
    uint32_t feat[12] = {0};
    float val[12] = {0};
    ck_assert_int_eq(sae_encode_sparse(NULL, x, 2, 0, off, feat, val, 12, &done),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode_sparse(m, NULL, 2, 0, off, feat, val, 12, &done),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode_sparse(m, x, 0, 0, off, feat, val, 12, &done), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode_sparse(m, x, SIZE_MAX / 2, 0, off, feat, val, 12, &done),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode_sparse(m, x, 2, 0, NULL, feat, val, 12, &done),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode_sparse(m, x, 2, 0, off, NULL, val, 12, &done), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode_sparse(m, x, 2, 0, off, feat, NULL, 12, &done), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode_sparse(m, x, 2, 0, off, feat, val, 12, NULL), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(), "sae_encode_sparse: n_encoded is NULL");
    ck_assert_int_eq(sae_encode_sparse_size(m, x, 2, 0, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode_sparse_size(NULL, x, 2, 0, &nnz), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_encode_sparse_size(m, x, 0, 0, &nnz), SAE_E_INVALID_ARG);
    x[5] = NAN;
    ck_assert_int_eq(sae_encode_sparse(m, x, 2, 0, off, feat, val, 12, &done), SAE_E_NONFINITE);
    ck_assert_str_eq(sae_error_detail(), "sae_encode_sparse: x[5] is NaN");
    ck_assert_int_eq(sae_encode_sparse_size(m, x, 2, 0, &nnz), SAE_E_NONFINITE);
    x[5] = INFINITY;
    ck_assert_int_eq(sae_encode_sparse(m, x, 2, 0, off, feat, val, 12, &done), SAE_E_NONFINITE);
    for (int k = 0; k < 3; k++)
        ck_assert_uint_eq(off[k], 7);
    for (int k = 0; k < 12; k++)
        ck_assert(feat[k] == 0 && val[k] == 0.0f);
    ck_assert_uint_eq(done, 99);
    ck_assert_uint_eq(nnz, 99);
    sae_model_free(m);
}
END_TEST

/* Huge weights: features that overflow are refused before anything is
 * written; huge weights on small inputs encode as sae_encode does. */
START_TEST(features_that_overflow_are_refused)
{
    sae_model *m = test_arch_model(SAE_ARCH_RELU, 4, 6, 700);
    float w_enc[24];
    for (int k = 0; k < 24; k++) /* odd features' columns positive, even negative */
        w_enc[k] = k % 2 ? 1e30f : -2e30f;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, w_enc, 24), SAE_OK);
    float big[8] = {1e10f, 1e10f, 1e10f, 1e10f, 1, 2, 3, 4};
    size_t off[3] = {7, 7, 7}, done = 99, nnz = 99;
    uint32_t feat[12] = {0};
    float val[12] = {0};
    ck_assert_int_eq(sae_encode_sparse(m, big, 2, 0, off, feat, val, 12, &done), SAE_E_NONFINITE);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_encode_sparse: the features of tokens"));
    ck_assert_int_eq(sae_encode_sparse_size(m, big, 2, 0, &nnz), SAE_E_NONFINITE);
    ck_assert(off[0] == 7 && off[1] == 7 && done == 99 && nnz == 99 && feat[0] == 0);
    /* small inputs: the bound cannot rule out an overflow, a look finds none */
    float small[8] = {1e-25f, -2e-25f, 3e-25f, 1e-25f, 2e-26f, 1e-25f, -1e-25f, 5e-26f};
    check_against_dense(m, small, 2, 0);
    sae_model_free(m);
}
END_TEST

typedef struct encode_call {
    const sae_model *m;
    const float *x;
    size_t n, cap, *off, *done;
    uint32_t *feat;
    float *val;
} encode_call;

static int call_encode_sparse(void *ctx)
{
    encode_call *c = ctx;
    return sae_encode_sparse(c->m, c->x, c->n, c->cap, c->off, c->feat, c->val, 200, c->done);
}

static int call_encode_sparse_size(void *ctx)
{
    encode_call *c = ctx;
    return sae_encode_sparse_size(c->m, c->x, c->n, c->cap, c->done);
}

START_TEST(every_allocation_failure_is_reported_without_leaks)
{
    sae_model *m = test_arch_model(SAE_ARCH_JUMPRELU, 5, 9, 600);
    float *x = test_gaussian(20, 5, 1.0, 0.0, 11);
    size_t off[21], done = 0;
    uint32_t feat[200];
    float val[200];
    encode_call c = {m, x, 20, 2, off, &done, feat, val};
    ck_assert_int_ge(nomem_fail_each_allocation(call_encode_sparse, &c, NULL), 3);
    ck_assert_uint_eq(done, 20);
    ck_assert_int_ge(nomem_fail_each_allocation(call_encode_sparse_size, &c, NULL), 3);
    ck_assert_uint_eq(done, off[20]);
    free(x);
    sae_model_free(m);
}
END_TEST

static Suite *sparse_codes_suite(void)
{
    Suite *s = suite_create("sparse_codes");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, pairs_are_sae_encode_values_in_every_architecture);
    tcase_add_test(tc, a_cap_keeps_the_largest_values_ties_to_the_lower_feature);
    tcase_add_test(tc, batches_larger_than_one_block);
    tcase_add_test(tc, a_short_capacity_stops_between_tokens_and_the_caller_continues);
    tcase_add_test(tc, bad_arguments_are_refused_and_nothing_is_written);
    tcase_add_test(tc, features_that_overflow_are_refused);
    tcase_add_test(tc, every_allocation_failure_is_reported_without_leaks);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(sparse_codes_suite)
