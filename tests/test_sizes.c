/* Counts whose buffers cannot exist: every public function that takes a
 * count (n_tokens, n_bins, capacity, n) refuses one for which the byte size
 * of any one of its buffer arguments overflows size_t, while the others
 * still fit, with SAE_E_INVALID_ARG and a detail naming that buffer, before
 * it reads or writes any buffer: the real buffers below are a few floats, so
 * a function that went on would read or write far past them (ASan build).
 * Outputs and handles are compared with their state before each call. */
#include "testutil.h"

#include <stdint.h>
#include <string.h>

/* The smallest count n for which n x width elements of elem_size bytes do
 * not fit in size_t. */
static size_t overflowing(size_t width, size_t elem_size)
{
    return SIZE_MAX / (width * elem_size) + 1;
}

/* Whether n x width elements of elem_size bytes fit in size_t. */
static bool fits(size_t n, size_t width, size_t elem_size)
{
    return n <= SIZE_MAX / (width * elem_size);
}

/* The last call failed with SAE_E_INVALID_ARG for the buffer `name` of fn. */
#define ASSERT_REFUSED(call, fn, name)                                                           \
    do {                                                                                         \
        ck_assert_int_eq((call), SAE_E_INVALID_ARG);                                             \
        ck_assert_ptr_nonnull(strstr(sae_error_detail(), fn ": " name));                         \
        ck_assert_ptr_nonnull(strstr(sae_error_detail(), "overflow"));                           \
    } while (0)

#define SENTINEL 42.0f
static void fill(float *v, size_t n)
{
    for (size_t k = 0; k < n; k++)
        v[k] = SENTINEL;
}
static bool untouched(const float *v, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (v[k] != SENTINEL)
            return false;
    return true;
}

/* A model of d_in x d_sae that has not been trained. */
static sae_model *model(size_t d_in, size_t d_sae)
{
    sae_model *m = NULL;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 7), SAE_OK);
    return m;
}

/* A model with d_sae 4, its optimizer, a small buffer of sentinels and
 * snapshots of both handles: what a refused call must leave as it was. */
typedef struct fixture {
    sae_model *m;
    sae_optimizer *o;
    float x[16];
    model_snapshot sm;
    optimizer_snapshot so;
} fixture;

static void fixture_setup(fixture *fx, sae_model *m)
{
    fx->m = m;
    fx->o = NULL;
    ck_assert_int_eq(sae_optimizer_create(&fx->o, fx->m), SAE_OK);
    fill(fx->x, 16);
    snapshot_take(&fx->sm, fx->m);
    opt_snapshot_take(&fx->so, fx->o, 4);
}

/* The buffer and both handles are as they were; frees the fixture. */
static void fixture_check_and_free(fixture *fx)
{
    ck_assert(untouched(fx->x, 16));
    ck_assert(snapshot_equal(&fx->sm, fx->m) && opt_snapshot_equal(&fx->so, fx->o));
    snapshot_free(&fx->sm);
    opt_snapshot_free(&fx->so);
    sae_optimizer_free(fx->o);
    sae_model_free(fx->m);
}

START_TEST(encode_and_decode_check_each_buffer)
{
    /* narrow: d_in > d_sae; wide: d_in < d_sae */
    sae_model *narrow = model(8, 2), *wide = model(2, 8);
    float x[16], f[16];
    fill(x, 16);
    fill(f, 16);
    model_snapshot s_narrow, s_wide;
    snapshot_take(&s_narrow, narrow);
    snapshot_take(&s_wide, wide);

    /* the case: n x d_sae floats fit, n x d_in floats do not */
    size_t n = overflowing(8, sizeof(float));
    ck_assert(fits(n, 2, sizeof(float)));
    ASSERT_REFUSED(sae_decode(narrow, f, n, x), "sae_decode", "x_hat");
    ASSERT_REFUSED(sae_encode(narrow, x, n, f), "sae_encode", "x");
    /* and the other way round */
    ASSERT_REFUSED(sae_decode(wide, f, n, x), "sae_decode", "f");
    ASSERT_REFUSED(sae_encode(wide, x, n, f), "sae_encode", "f");

    /* sae_output reads x like sae_encode (its output: see transcoders below) */
    ASSERT_REFUSED(sae_output(narrow, x, n, f), "sae_output", "x");

    ck_assert(untouched(x, 16) && untouched(f, 16));
    ck_assert(snapshot_equal(&s_narrow, narrow) && snapshot_equal(&s_wide, wide));
    snapshot_free(&s_narrow);
    snapshot_free(&s_wide);
    sae_model_free(narrow);
    sae_model_free(wide);
}
END_TEST

START_TEST(batch_functions_check_x)
{
    const size_t d_in = 8;
    fixture fx;
    fixture_setup(&fx, model(d_in, 4));
    sae_model *m = fx.m;
    sae_optimizer *o = fx.o;
    float *x = fx.x;
    const size_t n = overflowing(d_in, sizeof(float));

    sae_losses l = {1, 2, 3, 4};
    double v = 5.0;
    size_t count = 6;
    ASSERT_REFUSED(sae_loss(m, x, n, 1.0, &l), "sae_loss", "x");
    ASSERT_REFUSED(sae_fvu(m, x, n, &v), "sae_fvu", "x");
    ASSERT_REFUSED(sae_step(m, o, x, n, &l), "sae_step", "x");
    ASSERT_REFUSED(sae_estimate_input_scale(x, n, d_in, &v), "sae_estimate_input_scale", "x");
    ASSERT_REFUSED(sae_total_variance(x, n, d_in, NULL, &v), "sae_total_variance", "x");
    ASSERT_REFUSED(sae_model_init_b_dec(m, x, n, SAE_B_DEC_MEAN), "sae_model_init_b_dec", "x");
    ASSERT_REFUSED(sae_encode_sparse_size(m, x, n, 0, &count), "sae_encode_sparse_size", "x");
    uint64_t counts[4] = {9, 9, 9, 9};
    ASSERT_REFUSED(sae_feature_fire_counts(m, x, n, counts, 4), "sae_feature_fire_counts", "x");
    ASSERT_REFUSED(sae_feature_density_histogram(m, x, n, -3.0, 0.0, 4, counts, &count),
                   "sae_feature_density_histogram", "x");
    ASSERT_REFUSED(sae_resample_dead(m, o, x, n, 100, 1, &count), "sae_resample_dead", "x");
    sae_feature_stats *fs = NULL;
    ck_assert_int_eq(sae_feature_stats_create(&fs, 4, 2, 4, -3.0, 0.0), SAE_OK);
    ASSERT_REFUSED(sae_feature_stats_add(fs, m, x, n), "sae_feature_stats_add", "x");
    ck_assert_uint_eq(sae_feature_stats_rows(fs), 0);

    ck_assert(l.loss == 1 && l.l2 == 2 && l.l1 == 3 && l.l0 == 4);
    ck_assert(v == 5.0 && count == 6 && counts[0] == 9 && counts[3] == 9);
    sae_feature_stats_free(fs);
    fixture_check_and_free(&fx);
}
END_TEST

START_TEST(second_buffers_are_checked_too)
{
    /* d_in = 1: x (n floats) fits where a buffer of 8-byte entries does not */
    fixture fx;
    fixture_setup(&fx, model(1, 4));
    sae_model *m = fx.m;
    sae_optimizer *o = fx.o;
    float *x = fx.x;
    const size_t n = overflowing(1, sizeof(size_t));
    ck_assert(fits(n, 1, sizeof(float)));

    /* resampling's n_tokens weights (doubles) */
    size_t count = 6;
    ASSERT_REFUSED(sae_resample_dead(m, o, x, n, 1, 1, &count), "sae_resample_dead", "weights");
    /* offsets: n_tokens + 1 entries; with n_tokens = SIZE_MAX / 8 only the + 1 overflows */
    size_t offsets[4] = {7, 7, 7, 7};
    uint32_t feat[4] = {3, 3, 3, 3};
    ASSERT_REFUSED(sae_encode_sparse(m, x, SIZE_MAX / sizeof(size_t), 0, offsets, feat, x, 4,
                                     &count),
                   "sae_encode_sparse", "offsets");
    ASSERT_REFUSED(sae_encode_sparse(m, x, SIZE_MAX, 0, offsets, feat, x, 4, &count),
                   "sae_encode_sparse", "offsets");
    /* capacity: features and values */
    ASSERT_REFUSED(sae_encode_sparse(m, x, 2, 0, offsets, feat, x,
                                     overflowing(1, sizeof(uint32_t)), &count),
                   "sae_encode_sparse", "features");
    /* histogram bins (uint64) with x fine */
    uint64_t counts[4] = {9, 9, 9, 9};
    ASSERT_REFUSED(sae_feature_density_histogram(m, x, 2, -3.0, 0.0,
                                                 overflowing(1, sizeof(uint64_t)), counts, &count),
                   "sae_feature_density_histogram", "counts");
    /* dead feature indices */
    size_t idx[4] = {5, 5, 5, 5};
    ASSERT_REFUSED(sae_optimizer_dead_features(o, 1, idx, overflowing(1, sizeof(size_t)), &count),
                   "sae_optimizer_dead_features", "idx");
    /* the mean (d doubles) where x (1 x d floats) fits */
    double mean[4] = {8, 8, 8, 8}, v = 5.0;
    ck_assert(fits(1, overflowing(1, sizeof(double)), sizeof(float)));
    ASSERT_REFUSED(sae_total_variance(x, 1, overflowing(1, sizeof(double)), mean, &v),
                   "sae_total_variance", "mean");
    ck_assert(count == 6 && offsets[0] == 7 && offsets[3] == 7 && feat[0] == 3 && counts[0] == 9);
    ck_assert(idx[0] == 5 && idx[3] == 5 && mean[0] == 8 && mean[3] == 8 && v == 5.0);
    fixture_check_and_free(&fx);
}
END_TEST

/* A transcoder reads x (d_in wide) and writes or compares y (d_out wide):
 * with d_in 1 and d_out 8, n tokens of x fit where n of y do not. */
START_TEST(transcoders_check_x_and_y)
{
    sae_model *t = NULL;
    ck_assert_int_eq(sae_model_create_transcoder(&t, 1, 8, 4, 7, SAE_KIND_SKIP_TRANSCODER,
                                                 SAE_ARCH_RELU, 0.0),
                     SAE_OK);
    fixture fx;
    fixture_setup(&fx, t);
    sae_model *m = fx.m;
    sae_optimizer *o = fx.o;
    float *x = fx.x, y[16];
    fill(y, 16);
    const size_t n = overflowing(8, sizeof(float));
    ck_assert(fits(n, 1, sizeof(float)));
    sae_losses l = {1, 2, 3, 4};
    double v = 5.0;
    ASSERT_REFUSED(sae_output(m, x, n, y), "sae_output", "out");
    ASSERT_REFUSED(sae_loss_target(m, x, y, n, 1.0, &l), "sae_loss_target", "y");
    ASSERT_REFUSED(sae_fvu_target(m, x, y, n, &v), "sae_fvu_target", "y");
    ASSERT_REFUSED(sae_step_target(m, o, x, y, n, &l), "sae_step_target", "y");
    ck_assert(l.loss == 1 && l.l2 == 2 && v == 5.0 && untouched(y, 16));
    fixture_check_and_free(&fx);
}
END_TEST

START_TEST(feature_stats_and_rng_check_their_counts)
{
    sae_feature_stats *fs = NULL;
    ck_assert_int_eq(sae_feature_stats_create(&fs, 4, 2, 4, -3.0, 0.0), SAE_OK);
    size_t offsets[3] = {0, 1, 2};
    uint32_t feat[2] = {0, 1};
    float val[2] = {1.0f, 2.0f};
    ASSERT_REFUSED(sae_feature_stats_add_sparse(fs, SIZE_MAX / sizeof(size_t), offsets, feat,
                                                val),
                   "sae_feature_stats_add_sparse", "offsets");
    ck_assert_uint_eq(sae_feature_stats_rows(fs), 0);
    /* top rows: uint64 rows overflow where float values would not */
    uint64_t rows[2] = {8, 8};
    float top[2] = {SENTINEL, SENTINEL};
    size_t n = 6;
    ASSERT_REFUSED(sae_feature_stats_top(fs, 0, rows, top, overflowing(1, sizeof(uint64_t)), &n),
                   "sae_feature_stats_top", "rows");
    ck_assert(n == 6 && rows[0] == 8 && untouched(top, 2));
    sae_feature_stats_free(fs);

    sae_rng r, before;
    sae_rng_seed(&r, 1, 2);
    before = r;
    uint64_t v[2] = {1, 2};
    ASSERT_REFUSED(sae_rng_shuffle(&r, v, overflowing(1, sizeof(uint64_t))), "sae_rng_shuffle",
                   "v");
    ck_assert(v[0] == 1 && v[1] == 2 && memcmp(&r, &before, sizeof r) == 0);
}
END_TEST

static Suite *sizes_suite(void)
{
    Suite *s = suite_create("sizes");
    TCase *tc = tcase_create("overflowing counts");
    tcase_add_test(tc, encode_and_decode_check_each_buffer);
    tcase_add_test(tc, batch_functions_check_x);
    tcase_add_test(tc, second_buffers_are_checked_too);
    tcase_add_test(tc, transcoders_check_x_and_y);
    tcase_add_test(tc, feature_stats_and_rng_check_their_counts);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(sizes_suite)
