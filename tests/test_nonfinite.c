/* No SAE_OK with a non-finite result: a model whose weights are finite but
 * near FLT_MAX makes features, reconstructions, decoder row norms and losses
 * overflow float. Every function that produces numbers from it returns
 * SAE_E_NONFINITE with a detail, and leaves its outputs and handles as they
 * were; the same calls on the same model with ordinary data still succeed
 * where their results are finite. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { D_IN = 4, D_SAE = 6, N = 3 };
#define SENTINEL 42.0f

static void fill(float *v, size_t n, float value)
{
    for (size_t k = 0; k < n; k++)
        v[k] = value;
}

static bool all_equal(const float *v, size_t n, float value)
{
    for (size_t k = 0; k < n; k++)
        if (v[k] != value)
            return false;
    return true;
}

/* A model with one tensor set to `value` everywhere (finite). */
static sae_model *model_with(int which, float value)
{
    sae_model *m = NULL;
    ck_assert_int_eq(sae_model_create(&m, D_IN, D_SAE, 3), SAE_OK);
    size_t size = sae_model_tensor_size(m, which);
    float *t = malloc(size * sizeof(float));
    fill(t, size, value);
    ck_assert_int_eq(sae_model_set_tensor(m, which, t, size), SAE_OK);
    free(t);
    return m;
}

static void expect_nonfinite(int rc)
{
    ck_assert_int_eq(rc, SAE_E_NONFINITE);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "not finite"));
}

/* The case: decoder rows of 3e38 are finite, their norms are not. */
START_TEST(huge_decoder_losses_are_refused)
{
    sae_model *m = model_with(SAE_W_DEC, 3e38f);
    model_snapshot before;
    snapshot_take(&before, m);
    float x[N * D_IN];
    for (size_t k = 0; k < N * D_IN; k++)
        x[k] = (float)(k % 5) - 1.5f; /* some features fire */
    sae_losses l = {1, 2, 3, 4};
    expect_nonfinite(sae_loss(m, x, N, 1.0, &l));
    ck_assert(l.loss == 1 && l.l2 == 2 && l.l1 == 3 && l.l0 == 4);
    /* x_hat of any firing feature overflows */
    float f[N * D_SAE], x_hat[N * D_IN];
    fill(f, N * D_SAE, 1.0f);
    fill(x_hat, N * D_IN, SENTINEL);
    ck_assert_int_eq(sae_decode(m, f, N, x_hat), SAE_E_NONFINITE);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_decode: x_hat"));
    ck_assert(all_equal(x_hat, N * D_IN, SENTINEL));
    /* and training on it */
    sae_optimizer *o = NULL;
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_step(m, o, x, N, &l), SAE_E_NONFINITE);
    ck_assert_uint_eq(sae_optimizer_steps(o), 0);
    ck_assert(l.loss == 1);

    /* features (W_enc untouched) are finite: encoding still works */
    ck_assert_int_eq(sae_encode(m, x, N, f), SAE_OK);
    ck_assert(snapshot_equal(&before, m));
    sae_optimizer_free(o);
    snapshot_free(&before);
    sae_model_free(m);
}
END_TEST

/* An encoder of 3e38: the features of any nonzero token overflow. */
START_TEST(huge_encoder_features_are_refused)
{
    sae_model *m = model_with(SAE_W_ENC, 3e38f);
    model_snapshot before;
    snapshot_take(&before, m);
    float x[N * D_IN];
    for (size_t k = 0; k < N * D_IN; k++)
        x[k] = 1.0f + (float)(k % 3); /* positive, with variance */
    float f[N * D_SAE];
    fill(f, N * D_SAE, SENTINEL);

    expect_nonfinite(sae_encode(m, x, N, f));
    ck_assert(all_equal(f, N * D_SAE, SENTINEL));
    sae_losses l = {1, 2, 3, 4};
    ck_assert_int_eq(sae_loss(m, x, N, 1.0, &l), SAE_E_NONFINITE);
    ck_assert(l.loss == 1 && l.l2 == 2);
    double fvu = 7.0;
    expect_nonfinite(sae_fvu(m, x, N, &fvu));
    ck_assert(fvu == 7.0);

    size_t nnz = 9, offsets[N + 1] = {5, 5, 5, 5}, done = 9;
    uint32_t feat[N * D_SAE] = {0};
    expect_nonfinite(sae_encode_sparse_size(m, x, N, 0, &nnz));
    ck_assert_uint_eq(nnz, 9);
    expect_nonfinite(sae_encode_sparse(m, x, N, 0, offsets, feat, f, N * D_SAE, &done));
    ck_assert(done == 9 && offsets[0] == 5 && offsets[N] == 5 && all_equal(f, N * D_SAE, SENTINEL));

    uint64_t counts[D_SAE];
    for (size_t i = 0; i < D_SAE; i++)
        counts[i] = 11;
    expect_nonfinite(sae_feature_fire_counts(m, x, N, counts, D_SAE));
    size_t n_dead = 13;
    expect_nonfinite(sae_feature_density_histogram(m, x, N, -3.0, 0.0, 4, counts, &n_dead));
    ck_assert(counts[0] == 11 && counts[D_SAE - 1] == 11 && n_dead == 13);

    sae_feature_stats *s = NULL;
    ck_assert_int_eq(sae_feature_stats_create(&s, D_SAE, 2, 4, -3.0, 0.0), SAE_OK);
    expect_nonfinite(sae_feature_stats_add(s, m, x, N));
    ck_assert_uint_eq(sae_feature_stats_rows(s), 0);
    ck_assert_uint_eq(sae_feature_stats_next_row(s), 0);

    /* zero tokens give zero features: nothing overflows, nothing is refused */
    fill(x, N * D_IN, 0.0f);
    ck_assert_int_eq(sae_encode(m, x, N, f), SAE_OK);
    ck_assert(snapshot_equal(&before, m));
    sae_feature_stats_free(s);
    snapshot_free(&before);
    sae_model_free(m);
}
END_TEST

static Suite *nonfinite_suite(void)
{
    Suite *s = suite_create("nonfinite");
    TCase *tc = tcase_create("results");
    tcase_add_test(tc, huge_decoder_losses_are_refused);
    tcase_add_test(tc, huge_encoder_features_are_refused);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(nonfinite_suite)
