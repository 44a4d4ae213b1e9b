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

/* v[k] = scale * ((k % period) + offset): data with some spread. */
static void fill_ramp(float *v, size_t n, size_t period, float offset, float scale)
{
    for (size_t k = 0; k < n; k++)
        v[k] = scale * ((float)(k % period) + offset);
}

static bool all_equal(const float *v, size_t n, float value)
{
    for (size_t k = 0; k < n; k++)
        if (v[k] != value)
            return false;
    return true;
}

/* A d_in x D_SAE model with one tensor set to `value` everywhere (finite). */
static sae_model *model_with_shape(size_t d_in, int which, float value)
{
    sae_model *m = NULL;
    ck_assert_int_eq(sae_model_create(&m, d_in, D_SAE, 3), SAE_OK);
    size_t size = sae_model_tensor_size(m, which);
    float *t = malloc(size * sizeof(float));
    fill(t, size, value);
    ck_assert_int_eq(sae_model_set_tensor(m, which, t, size), SAE_OK);
    free(t);
    return m;
}

static sae_model *model_with(int which, float value)
{
    return model_with_shape(D_IN, which, value);
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
    fill_ramp(x, N * D_IN, 5, -1.5f, 1.0f); /* some features fire */
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
    fill_ramp(x, N * D_IN, 3, 1.0f, 1.0f); /* positive, with variance */
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

/* sae_output: an autoencoder's reconstruction with a decoder of 3e38, and a
 * skip transcoder whose skip term alone overflows; the _target losses too. */
START_TEST(huge_outputs_are_refused)
{
    sae_model *m = model_with(SAE_W_DEC, 3e38f);
    float x[N * D_IN], out[N * D_IN];
    fill_ramp(x, N * D_IN, 5, -1.5f, 40.0f); /* features of about 1 and more */
    fill(out, N * D_IN, SENTINEL);
    expect_nonfinite(sae_output(m, x, N, out));
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_output"));
    ck_assert(all_equal(out, N * D_IN, SENTINEL));
    sae_model_free(m);

    enum { D_OUT = 5 };
    ck_assert_int_eq(sae_model_create_transcoder(&m, D_IN, D_OUT, D_SAE, 3,
                                                 SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_RELU, 0.0),
                     SAE_OK);
    float w_skip[D_OUT * D_IN];
    fill(w_skip, D_OUT * D_IN, 3e38f);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_SKIP, w_skip, D_OUT * D_IN), SAE_OK);
    model_snapshot before;
    snapshot_take(&before, m);
    float y[N * D_OUT], y_hat[N * D_OUT];
    fill_ramp(y, N * D_OUT, 3, 0.0f, 1.0f);
    fill(y_hat, N * D_OUT, SENTINEL);
    fill(x, N * D_IN, 1.0f); /* x W_skip^T = 4 * 3e38 per value */
    expect_nonfinite(sae_output(m, x, N, y_hat));
    ck_assert(all_equal(y_hat, N * D_OUT, SENTINEL));
    sae_losses l = {1, 2, 3, 4};
    expect_nonfinite(sae_loss_target(m, x, y, N, 1.0, &l));
    ck_assert(l.loss == 1 && l.l2 == 2 && l.l1 == 3 && l.l0 == 4);
    double fvu = 7.0;
    expect_nonfinite(sae_fvu_target(m, x, y, N, &fvu));
    ck_assert(fvu == 7.0);
    /* x = 0: no skip term, ordinary features: the output is finite */
    fill(x, N * D_IN, 0.0f);
    ck_assert_int_eq(sae_output(m, x, N, y_hat), SAE_OK);
    ck_assert(!all_equal(y_hat, N * D_OUT, SENTINEL));
    ck_assert(snapshot_equal(&before, m));
    snapshot_free(&before);
    sae_model_free(m);
}
END_TEST

/* A Gated model whose magnitude path's scale exp(r_mag) overflows the
 * features, though every parameter is a modest finite number. */
START_TEST(huge_gated_magnitudes_are_refused)
{
    sae_model *m = NULL;
    ck_assert_int_eq(sae_model_create_arch(&m, D_IN, D_SAE, 3, SAE_ARCH_GATED, 0.0), SAE_OK);
    float r_mag[D_SAE], b_enc[D_SAE];
    fill(r_mag, D_SAE, 88.0f); /* exp(88) = 1.65e38 */
    fill(b_enc, D_SAE, 1.0f);  /* every gate open */
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_R_MAG, r_mag, D_SAE), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, b_enc, D_SAE), SAE_OK);
    float x[N * D_IN], f[N * D_SAE], out[N * D_IN];
    fill_ramp(x, N * D_IN, 5, -2.0f, 50.0f);
    fill(f, N * D_SAE, SENTINEL);
    fill(out, N * D_IN, SENTINEL);
    expect_nonfinite(sae_encode(m, x, N, f));
    ck_assert(all_equal(f, N * D_SAE, SENTINEL));
    expect_nonfinite(sae_output(m, x, N, out));
    ck_assert(all_equal(out, N * D_IN, SENTINEL));
    sae_losses l = {1, 2, 3, 4};
    expect_nonfinite(sae_loss(m, x, N, 1.0, &l));
    ck_assert(l.loss == 1 && l.l2 == 2);
    sae_model_free(m);
}
END_TEST

/* Decoder rows of 3e38 have no finite norm: their cosines cannot be computed
 * in float, and sae_decoder_neighbors says so instead of returning NaN. */
START_TEST(huge_decoder_neighbors_are_refused)
{
    sae_model *m = model_with(SAE_W_DEC, 3e38f);
    enum { K = 2 };
    uint32_t idx[D_SAE * K];
    float cosine[D_SAE * K];
    for (size_t k = 0; k < D_SAE * K; k++)
        idx[k] = 77;
    fill(cosine, D_SAE * K, SENTINEL);
    expect_nonfinite(sae_decoder_neighbors(m, K, idx, cosine, D_SAE * K));
    ck_assert(all_equal(cosine, D_SAE * K, SENTINEL));
    for (size_t k = 0; k < D_SAE * K; k++)
        ck_assert_uint_eq(idx[k], 77);
    sae_model_free(m);

    /* rows of 1e18 have finite norms (2e18) but Gram entries of 4e36 x d_in
     * overflow no float: these still work, with cosine 1 for equal rows */
    m = model_with(SAE_W_DEC, 1e18f);
    ck_assert_int_eq(sae_decoder_neighbors(m, K, idx, cosine, D_SAE * K), SAE_OK);
    for (size_t k = 0; k < D_SAE * K; k++)
        ck_assert_float_eq_tol(cosine[k], 1.0f, 1e-6f);
    sae_model_free(m);
}
END_TEST

/* Resampling gives dead features encoder rows of 0.2 x the live rows' mean
 * norm: for live rows of 3e38 in 64 dims that norm is not a float. */
START_TEST(huge_resampled_rows_are_refused)
{
    enum { WIDE = 64 };
    /* an optimizer with one live feature: on zero inputs only the feature
     * with b_enc > 0 fires (it may step any model of the shape it was made for) */
    sae_model *quiet = NULL, *m = model_with_shape(WIDE, SAE_W_ENC, 3e38f);
    ck_assert_int_eq(sae_model_create(&quiet, WIDE, D_SAE, 5), SAE_OK);
    float b_enc[D_SAE];
    fill(b_enc, D_SAE, -1.0f);
    b_enc[0] = 1.0f;
    ck_assert_int_eq(sae_model_set_tensor(quiet, SAE_B_ENC, b_enc, D_SAE), SAE_OK);
    sae_optimizer *o = NULL;
    ck_assert_int_eq(sae_optimizer_create(&o, quiet), SAE_OK);
    float x[N * WIDE];
    fill(x, N * WIDE, 0.0f);
    ck_assert_int_eq(sae_step(quiet, o, x, N, NULL), SAE_OK);
    uint64_t dead = 0;
    ck_assert_int_eq(sae_optimizer_dead_count(o, N, &dead), SAE_OK);
    ck_assert_uint_eq(dead, D_SAE - 1);
    /* x = b_dec: centred inputs are 0, the huge encoder gives finite features */
    float b_dec[WIDE];
    fill(b_dec, WIDE, 1.0f);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_DEC, b_dec, WIDE), SAE_OK);
    fill(x, N * WIDE, 1.0f);
    model_snapshot before;
    snapshot_take(&before, m);
    optimizer_snapshot opt_before;
    opt_snapshot_take(&opt_before, o, D_SAE);
    size_t n_resampled = 99;
    expect_nonfinite(sae_resample_dead(m, o, x, N, N, 7, &n_resampled));
    ck_assert_uint_eq(n_resampled, 99);
    ck_assert(snapshot_equal(&before, m));
    ck_assert(opt_snapshot_equal(&opt_before, o));
    /* the ordinary model of the same shape resamples from the same state */
    ck_assert_int_eq(sae_resample_dead(quiet, o, x, N, N, 7, &n_resampled), SAE_OK);
    ck_assert_uint_eq(n_resampled, D_SAE - 1);
    opt_snapshot_free(&opt_before);
    snapshot_free(&before);
    sae_optimizer_free(o);
    sae_model_free(quiet);
    sae_model_free(m);
}
END_TEST

static Suite *nonfinite_suite(void)
{
    Suite *s = suite_create("nonfinite");
    TCase *tc = tcase_create("results");
    tcase_add_test(tc, huge_decoder_losses_are_refused);
    tcase_add_test(tc, huge_encoder_features_are_refused);
    tcase_add_test(tc, huge_outputs_are_refused);
    tcase_add_test(tc, huge_gated_magnitudes_are_refused);
    tcase_add_test(tc, huge_decoder_neighbors_are_refused);
    tcase_add_test(tc, huge_resampled_rows_are_refused);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(nonfinite_suite)
