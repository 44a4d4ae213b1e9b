/*
 * Selection on streams (src/select.c): the k largest positive values of a
 * token's stream and the K largest of a batch, checked against a sort of the
 * whole input, with many ties (values from a small set), zeros and negative
 * values, tiles of every width, buffers barely larger than k, and both the
 * AVX-512 and the portable kernels.
 */
#include "../src/internal.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

/* A value with many ties: one of `levels` values in [-1, 2), a quarter <= 0. */
static float tied_value(test_rng *r, int levels)
{
    return (float)((int)(test_uniform(r) * levels) - levels / 4) / (float)levels * 2.0f;
}

typedef struct ranked {
    float val;
    uint32_t idx;
} ranked;

static int by_preference(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->val != y->val)
        return x->val > y->val ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static int by_index(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* The expected selection: the k first positives by (value desc, index asc),
 * listed in index order; returns how many. */
static size_t expected_topk(const float *v, size_t d, size_t k, const uint8_t *pick, ranked *out)
{
    size_t n = 0;
    for (size_t i = 0; i < d; i++)
        if (v[i] > 0.0f && (!pick || pick[i]))
            out[n++] = (ranked){v[i], (uint32_t)i};
    qsort(out, n, sizeof *out, by_preference);
    if (n > k)
        n = k;
    qsort(out, n, sizeof *out, by_index);
    return n;
}

static void check_topk_case(size_t d, size_t k, size_t cap, int levels, bool with_pick,
                            uint64_t seed)
{
    test_rng r = {seed};
    float *v = malloc(d * sizeof(float)), *val = malloc(cap * sizeof(float));
    float *scratch = malloc(cap * sizeof(float));
    uint32_t *idx = malloc(cap * sizeof(uint32_t));
    uint8_t *pick = with_pick ? malloc(d) : NULL;
    ranked *want = malloc(d * sizeof(ranked));
    for (size_t i = 0; i < d; i++) {
        v[i] = tied_value(&r, levels);
        if (pick)
            pick[i] = test_uniform(&r) < 0.3;
    }
    sae_topk_stream s;
    sae__topk_stream_init(&s, idx, val, cap, k);
    for (size_t i0 = 0; i0 < d;) { /* tiles of random widths, 1 to 70 */
        size_t w = 1 + (size_t)(test_uniform(&r) * 70);
        w = w > d - i0 ? d - i0 : w;
        sae__topk_stream_push(&s, v + i0, w, (uint32_t)i0, pick ? pick + i0 : NULL, scratch);
        i0 += w;
    }
    size_t got = sae__topk_stream_finish(&s, scratch);
    size_t n = expected_topk(v, d, k, pick, want);
    ck_assert_uint_eq(got, n);
    for (size_t q = 0; q < n; q++) {
        ck_assert_uint_eq(idx[q], want[q].idx);
        ck_assert_float_eq(val[q], want[q].val);
    }
    free(v);
    free(val);
    free(scratch);
    free(idx);
    free(pick);
    free(want);
}

static void topk_cases(bool portable)
{
    sae__test_portable_kernels = portable;
    uint64_t seed = 1;
    static const size_t ks[] = {1, 3, 8, 32};
    static const int levels[] = {4, 16, 1000, 1 << 20};
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 4; b++)
            for (int p = 0; p < 2; p++) {
                size_t k = ks[a];
                check_topk_case(300, k, k + 1, levels[b], p, seed++);
                check_topk_case(300, k, 2 * k + 5, levels[b], p, seed++);
                check_topk_case(1000, k, 4 * k, levels[b], p, seed++);
            }
    /* fewer positives than k: all of them */
    check_topk_case(20, 32, 40, 8, false, seed++);
    sae__test_portable_kernels = 0;
}

START_TEST(topk_stream_vector)
{
    topk_cases(false);
}
END_TEST

START_TEST(topk_stream_portable)
{
    topk_cases(true);
}
END_TEST

START_TEST(kth_largest_matches_sort)
{
    test_rng r = {99};
    for (size_t n = 1; n < 60; n++)
        for (int rep = 0; rep < 5; rep++) {
            float *v = malloc(n * sizeof(float)), *sorted = malloc(n * sizeof(float));
            for (size_t i = 0; i < n; i++)
                v[i] = sorted[i] = tied_value(&r, rep == 0 ? 2 : 7);
            ranked *rk = malloc(n * sizeof(ranked));
            for (size_t i = 0; i < n; i++)
                rk[i] = (ranked){sorted[i], (uint32_t)i};
            qsort(rk, n, sizeof *rk, by_preference);
            size_t k = 1 + (size_t)(test_uniform(&r) * (double)n);
            ck_assert_float_eq(sae__kth_largest(v, n, k), rk[k - 1].val);
            free(v);
            free(sorted);
            free(rk);
        }
}
END_TEST

/* ---- the batch ------------------------------------------------------------------- */

static int by_batch_preference(const void *a, const void *b)
{
    const sae_batch_entry *x = a, *y = b;
    if (x->val != y->val)
        return x->val > y->val ? -1 : 1;
    if (x->tok != y->tok)
        return (x->tok > y->tok) - (x->tok < y->tok);
    return (x->feat > y->feat) - (x->feat < y->feat);
}

/* floor: 0, or the streams start at the K-th value itself (ties included: a
 * floor at the K-th value still lets the exact selection through). */
static void check_batch_case(size_t n_tok, size_t d, size_t K, size_t cap, int levels,
                             int n_streams, bool floor_at_kth, uint64_t seed)
{
    test_rng r = {seed};
    float *v = malloc(n_tok * d * sizeof(float));
    for (size_t q = 0; q < n_tok * d; q++)
        v[q] = tied_value(&r, levels);
    /* expected: every positive entry, sorted by preference, the first K */
    sae_batch_entry *want = malloc(n_tok * d * sizeof *want);
    size_t n = 0;
    for (size_t t = 0; t < n_tok; t++)
        for (size_t i = 0; i < d; i++)
            if (v[t * d + i] > 0.0f)
                want[n++] = (sae_batch_entry){(uint32_t)t, (uint32_t)i, v[t * d + i]};
    qsort(want, n, sizeof *want, by_batch_preference);
    n = n < K ? n : K;
    float floor = floor_at_kth && n ? want[n - 1].val : 0.0f;
    /* each stream takes a contiguous range of tokens and offers it tile by
     * tile (features in tiles, tokens within a tile), as the encoder does */
    sae_batch_entry *all = malloc((size_t)n_streams * cap * sizeof *all);
    sae_batch_entry *scratch = malloc(((size_t)n_streams * cap + 1) * sizeof *scratch);
    size_t total = 0;
    for (int st = 0; st < n_streams; st++) {
        sae_batch_stream s;
        sae__batch_stream_init(&s, all + total, cap, K);
        sae__batch_stream_floor(&s, floor);
        size_t t0 = n_tok * (size_t)st / (size_t)n_streams;
        size_t t1 = n_tok * (size_t)(st + 1) / (size_t)n_streams;
        for (size_t f0 = 0; f0 < d; f0 += 13) {
            size_t w = d - f0 < 13 ? d - f0 : 13;
            for (size_t t = t0; t < t1; t++)
                sae__batch_stream_push(&s, v + t * d + f0, w, (uint32_t)t, (uint32_t)f0,
                                       scratch);
        }
        total += s.count;
    }
    float kth;
    size_t kept = sae__batch_select(all, total, K, scratch, &kth);
    ck_assert_uint_eq(kept, n);
    ck_assert_float_eq(kth, n ? want[n - 1].val : 0.0f);
    qsort(want, n, sizeof *want, by_batch_preference);
    qsort(all, kept, sizeof *all, by_batch_preference);
    for (size_t q = 0; q < n; q++) {
        ck_assert_uint_eq(all[q].tok, want[q].tok);
        ck_assert_uint_eq(all[q].feat, want[q].feat);
        ck_assert_float_eq(all[q].val, want[q].val);
    }
    free(v);
    free(all);
    free(scratch);
    free(want);
}

START_TEST(batch_stream_matches_sort)
{
    uint64_t seed = 500;
    static const int levels[] = {3, 50, 1 << 20};
    for (size_t l = 0; l < 3; l++)
        for (int streams = 1; streams <= 3; streams++)
            for (int floor = 0; floor < 2; floor++) {
                check_batch_case(40, 57, 40 * 3, 40 * 3 + 1, levels[l], streams, floor, seed++);
                check_batch_case(40, 57, 40 * 3, 2 * 40 * 3, levels[l], streams, floor, seed++);
                check_batch_case(16, 100, 16 * 8, 3 * 16 * 8, levels[l], streams, floor, seed++);
            }
    /* fewer positives than K */
    check_batch_case(4, 10, 100, 200, 5, 2, false, seed++);
}
END_TEST

/* A floor above the K-th value keeps fewer than K: what tells the fused
 * encoder that its floor was too high (encode_fused.c passes again). */
START_TEST(batch_stream_floor_too_high)
{
    const float v[8] = {0.5f, 0.9f, 0.1f, 0.7f, 0.3f, 0.8f, 0.2f, 0.6f};
    sae_batch_entry e[16], scratch[17];
    sae_batch_stream s;
    sae__batch_stream_init(&s, e, 16, 4); /* the 4th largest: 0.6 */
    sae__batch_stream_floor(&s, 0.65f);
    sae__batch_stream_push(&s, v, 8, 0, 0, scratch);
    ck_assert_uint_eq(s.count, 3); /* 0.9, 0.7, 0.8 */
    sae__batch_stream_init(&s, e, 16, 4);
    sae__batch_stream_floor(&s, 0.6f); /* at the 4th: exact */
    sae__batch_stream_push(&s, v, 8, 0, 0, scratch);
    float kth;
    ck_assert_uint_eq(sae__batch_select(e, s.count, 4, scratch, &kth), 4);
    ck_assert_float_eq(kth, 0.6f);
}
END_TEST

static Suite *select_suite(void)
{
    Suite *s = suite_create("select");
    TCase *tc = tcase_create("select");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, kth_largest_matches_sort);
    tcase_add_test(tc, topk_stream_vector);
    tcase_add_test(tc, topk_stream_portable);
    tcase_add_test(tc, batch_stream_matches_sort);
    tcase_add_test(tc, batch_stream_floor_too_high);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(select_suite)
