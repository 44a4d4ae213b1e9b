/*
 * The families' models: creating Gated and Matryoshka SAEs and transcoders,
 * the tensors each has, their initialisation (and again with a decoder norm,
 * SAELens's decoder_init_norm), the queries that describe them, clones, and
 * bad arguments (each refused with a detail naming it, nothing changed).
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *tensor(const sae_model *m, int which)
{
    size_t count = sae_model_tensor_size(m, which);
    ck_assert_uint_gt(count, 0);
    float *v = malloc(count * sizeof(float));
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(sae_model_get_tensor(m, which, v, count), SAE_OK);
    return v;
}

/* ||rows[i,:]|| for each of count rows of width floats, all equal to norm. */
static void assert_row_norms(const float *rows, size_t count, size_t width, double norm)
{
    for (size_t i = 0; i < count; i++) {
        double s = 0.0;
        for (size_t j = 0; j < width; j++)
            s += (double)rows[i * width + j] * rows[i * width + j];
        ck_assert_double_eq_tol(sqrt(s), norm, 1e-6 * norm);
    }
}

static void assert_zero(const sae_model *m, int which)
{
    float *v = tensor(m, which);
    for (size_t k = 0; k < sae_model_tensor_size(m, which); k++)
        ck_assert_float_eq(v[k], 0.0f);
    free(v);
}

/* The call failed with status, *out is NULL, and the detail names what. */
#define CHECK_REFUSED(call, status, what)                                          \
    do {                                                                            \
        sae_model *m_ = (sae_model *)1;                                             \
        ck_assert_int_eq(call(&m_), status);                                        \
        ck_assert_ptr_null(m_);                                                     \
        ck_assert_msg(strstr(sae_error_detail(), what), "detail \"%s\" lacks \"%s\"", \
                      sae_error_detail(), what);                                    \
    } while (0)

static size_t w_bad[70];
static size_t n_bad;
static size_t k_arg = 4;
static int create_m(sae_model **out)
{
    return sae_model_create_matryoshka(out, 8, 40, 1, k_arg, w_bad, n_bad);
}

START_TEST(matryoshka_widths_are_validated)
{
    sae_model *m;
    const size_t widths[3] = {5, 12, 40};
    ck_assert_int_eq(sae_model_create_matryoshka(NULL, 8, 40, 1, 4, widths, 3), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create_matryoshka(&m, 8, 40, 1, 4, NULL, 2), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(m);
    /* k outside [1, d_sae] */
    n_bad = 0;
    k_arg = 0;
    CHECK_REFUSED(create_m, SAE_E_INVALID_ARG, "k = 0");
    k_arg = 41;
    CHECK_REFUSED(create_m, SAE_E_INVALID_ARG, "k = 41");
    k_arg = 4;
    /* a width of 0, above d_sae, repeated or decreasing */
    const size_t cases[4][3] = {{0, 5, 40}, {5, 41, 40}, {5, 5, 40}, {12, 5, 40}};
    const char *why[4] = {"widths[0] = 0", "widths[1] = 41", "widths[1] = 5", "widths[1] = 5"};
    for (int c = 0; c < 4; c++) {
        memcpy(w_bad, cases[c], sizeof cases[c]);
        n_bad = 3;
        CHECK_REFUSED(create_m, SAE_E_INVALID_ARG, why[c]);
    }
    /* more than 64 levels */
    for (size_t a = 0; a < 70; a++)
        w_bad[a] = a + 1;
    n_bad = 65;
    sae_model *big;
    ck_assert_int_eq(sae_model_create_matryoshka(&big, 8, 100, 1, 4, w_bad, 65), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(big);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "64 levels"));
    /* 64 widths below d_sae: d_sae would make 65 */
    ck_assert_int_eq(sae_model_create_matryoshka(&big, 8, 100, 1, 4, w_bad, 64), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create_matryoshka(&big, 8, 64, 1, 4, w_bad, 64), SAE_OK);
    ck_assert_uint_eq(sae_model_matryoshka_levels(big), 64);
    sae_model_free(big);
}
END_TEST

START_TEST(matryoshka_models_know_their_levels)
{
    const size_t d_in = 8, d_sae = 40;
    const size_t widths[2] = {5, 12};
    sae_model *m;
    ck_assert_int_eq(sae_model_create_matryoshka(&m, d_in, d_sae, 3, 4, widths, 2), SAE_OK);
    ck_assert_int_eq(sae_model_arch(m), SAE_ARCH_MATRYOSHKA);
    ck_assert_int_eq(sae_model_kind(m), SAE_KIND_AUTOENCODER);
    ck_assert_uint_eq(sae_model_k(m), 4);
    ck_assert_uint_eq(sae_model_d_out(m), d_in);
    ck_assert_uint_eq(sae_model_matryoshka_levels(m), 3); /* d_sae appended */
    size_t got[3], wrong[2];
    ck_assert_int_eq(sae_model_matryoshka_widths(m, got, 3), SAE_OK);
    ck_assert_uint_eq(got[0], 5);
    ck_assert_uint_eq(got[1], 12);
    ck_assert_uint_eq(got[2], d_sae);
    ck_assert_int_eq(sae_model_matryoshka_widths(m, wrong, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_matryoshka_widths(m, NULL, 3), SAE_E_INVALID_ARG);
    /* the threshold of BatchTopK, unset */
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_THRESHOLD), 1);
    float thr;
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, &thr, 1), SAE_OK);
    ck_assert_float_lt(thr, 0.0f);
    /* no levels: one, d_sae; the tensors and initial values of BatchTopK */
    sae_model *one, *batch;
    ck_assert_int_eq(sae_model_create_matryoshka(&one, d_in, d_sae, 3, 4, NULL, 0), SAE_OK);
    ck_assert_uint_eq(sae_model_matryoshka_levels(one), 1);
    ck_assert_int_eq(sae_model_create_arch(&batch, d_in, d_sae, 3, SAE_ARCH_BATCHTOPK, 4), SAE_OK);
    const int shared[4] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC};
    for (int a = 0; a < 4; a++) {
        float *p = tensor(one, shared[a]), *q = tensor(batch, shared[a]);
        ck_assert_mem_eq(p, q, sae_model_tensor_size(one, shared[a]) * sizeof(float));
        free(p);
        free(q);
    }
    /* other architectures have no levels */
    ck_assert_uint_eq(sae_model_matryoshka_levels(batch), 0);
    ck_assert_int_eq(sae_model_matryoshka_widths(batch, got, 0), SAE_E_INVALID_ARG);
    ck_assert_uint_eq(sae_model_matryoshka_levels(NULL), 0);
    /* create_arch sends Matryoshka to its own function */
    sae_model *via_arch;
    ck_assert_int_eq(sae_model_create_arch(&via_arch, d_in, d_sae, 3, SAE_ARCH_MATRYOSHKA, 4),
                     SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_model_create_matryoshka"));
    sae_model_free(batch);
    sae_model_free(one);
    sae_model_free(m);
}
END_TEST

START_TEST(gated_models_have_both_paths)
{
    const size_t d_in = 7, d_sae = 20;
    sae_model *m, *bad = (sae_model *)1;
    ck_assert_int_eq(sae_model_create_arch(&bad, d_in, d_sae, 5, SAE_ARCH_GATED, 1.0),
                     SAE_E_INVALID_ARG);
    ck_assert_ptr_null(bad);
    ck_assert_int_eq(sae_model_create_arch(&m, d_in, d_sae, 5, SAE_ARCH_GATED, 0.0), SAE_OK);
    ck_assert_int_eq(sae_model_arch(m), SAE_ARCH_GATED);
    ck_assert_uint_eq(sae_model_k(m), 0);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_B_MAG), d_sae);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_R_MAG), d_sae);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_W_SKIP), 0);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_THRESHOLD), 0);
    /* SAELens's initialisation: b_gate = b_mag = r_mag = 0, W_enc = W_dec^T */
    assert_zero(m, SAE_B_ENC);
    assert_zero(m, SAE_B_MAG);
    assert_zero(m, SAE_R_MAG);
    float *w_enc = tensor(m, SAE_W_ENC), *w_dec = tensor(m, SAE_W_DEC);
    for (size_t i = 0; i < d_sae; i++)
        for (size_t j = 0; j < d_in; j++)
            ck_assert_float_eq(w_enc[j * d_sae + i], w_dec[i * d_in + j]);
    assert_row_norms(w_dec, d_sae, d_in, 0.1);
    /* the new tensors set and read back, NaN refused with the model unchanged */
    float *v = malloc(d_sae * sizeof(float));
    for (size_t i = 0; i < d_sae; i++)
        v[i] = 0.01f * (float)i - 0.05f;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_R_MAG, v, d_sae), SAE_OK);
    float *back = tensor(m, SAE_R_MAG);
    ck_assert_mem_eq(back, v, d_sae * sizeof(float));
    model_snapshot snap;
    snapshot_take(&snap, m);
    v[3] = NAN;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_MAG, v, d_sae), SAE_E_NONFINITE);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_MAG, v, d_sae - 1), SAE_E_INVALID_ARG);
    ck_assert(snapshot_equal(&snap, m));
    snapshot_free(&snap);
    free(back);
    free(v);
    free(w_enc);
    free(w_dec);
    sae_model_free(m);
}
END_TEST

static size_t tc_d_in = 9, tc_d_out = 5;
static int tc_kind = SAE_KIND_TRANSCODER, tc_arch = SAE_ARCH_RELU;
static double tc_param = 0.0;
static int create_tc(sae_model **out)
{
    return sae_model_create_transcoder(out, tc_d_in, tc_d_out, 30, 7, tc_kind, tc_arch, tc_param);
}

START_TEST(transcoders_are_validated)
{
    ck_assert_int_eq(sae_model_create_transcoder(NULL, 9, 5, 30, 7, SAE_KIND_TRANSCODER,
                                                 SAE_ARCH_RELU, 0.0),
                     SAE_E_INVALID_ARG);
    tc_kind = SAE_KIND_AUTOENCODER;
    CHECK_REFUSED(create_tc, SAE_E_INVALID_ARG, "kind 0");
    tc_kind = 3;
    CHECK_REFUSED(create_tc, SAE_E_INVALID_ARG, "kind 3");
    tc_kind = SAE_KIND_SKIP_TRANSCODER;
    tc_arch = SAE_ARCH_GATED;
    CHECK_REFUSED(create_tc, SAE_E_INVALID_ARG, "not Gated");
    tc_arch = SAE_ARCH_MATRYOSHKA;
    tc_param = 3;
    CHECK_REFUSED(create_tc, SAE_E_INVALID_ARG, "not Matryoshka");
    tc_arch = 9;
    CHECK_REFUSED(create_tc, SAE_E_INVALID_ARG, "unknown architecture 9");
    tc_arch = SAE_ARCH_TOPK;
    tc_param = 31;
    CHECK_REFUSED(create_tc, SAE_E_INVALID_ARG, "k = 31");
    tc_arch = SAE_ARCH_JUMPRELU;
    tc_param = NAN;
    CHECK_REFUSED(create_tc, SAE_E_NONFINITE, "param");
    tc_param = 0.01;
    tc_d_out = 0;
    CHECK_REFUSED(create_tc, SAE_E_INVALID_ARG, "d_out 0");
    tc_d_out = (size_t)1 << 40;
    CHECK_REFUSED(create_tc, SAE_E_INVALID_ARG, "INT_MAX");
    tc_d_out = 5;
    sae_model *m;
    ck_assert_int_eq(create_tc(&m), SAE_OK);
    sae_model_free(m);
}
END_TEST

START_TEST(transcoders_have_their_own_output)
{
    const size_t d_in = 9, d_out = 5, d_sae = 30;
    const int archs[4] = {SAE_ARCH_RELU, SAE_ARCH_TOPK, SAE_ARCH_BATCHTOPK, SAE_ARCH_JUMPRELU};
    const double params[4] = {0.0, 3.0, 3.0, 0.02};
    for (int kind = SAE_KIND_TRANSCODER; kind <= SAE_KIND_SKIP_TRANSCODER; kind++)
        for (int a = 0; a < 4; a++) {
            sae_model *m;
            ck_assert_int_eq(sae_model_create_transcoder(&m, d_in, d_out, d_sae, 7, kind, archs[a],
                                                         params[a]),
                             SAE_OK);
            ck_assert_int_eq(sae_model_kind(m), kind);
            ck_assert_int_eq(sae_model_arch(m), archs[a]);
            ck_assert_uint_eq(sae_model_d_in(m), d_in);
            ck_assert_uint_eq(sae_model_d_out(m), d_out);
            ck_assert_uint_eq(sae_model_k(m), archs[a] == SAE_ARCH_TOPK ||
                                                      archs[a] == SAE_ARCH_BATCHTOPK
                                                  ? 3
                                                  : 0);
            ck_assert_uint_eq(sae_model_tensor_size(m, SAE_W_ENC), d_in * d_sae);
            ck_assert_uint_eq(sae_model_tensor_size(m, SAE_W_DEC), d_sae * d_out);
            ck_assert_uint_eq(sae_model_tensor_size(m, SAE_B_DEC), d_out);
            ck_assert_uint_eq(sae_model_tensor_size(m, SAE_W_SKIP),
                              kind == SAE_KIND_SKIP_TRANSCODER ? d_out * d_in : 0);
            ck_assert_uint_eq(sae_model_tensor_size(m, SAE_B_MAG), 0);
            /* decoder rows and encoder columns: unit directions scaled to 0.1 */
            float *w_dec = tensor(m, SAE_W_DEC), *w_enc = tensor(m, SAE_W_ENC);
            assert_row_norms(w_dec, d_sae, d_out, 0.1);
            float *cols = malloc(d_sae * d_in * sizeof(float));
            for (size_t i = 0; i < d_sae; i++)
                for (size_t j = 0; j < d_in; j++)
                    cols[i * d_in + j] = w_enc[j * d_sae + i];
            assert_row_norms(cols, d_sae, d_in, 0.1);
            if (kind == SAE_KIND_SKIP_TRANSCODER)
                assert_zero(m, SAE_W_SKIP);
            if (archs[a] == SAE_ARCH_JUMPRELU) {
                float *thr = tensor(m, SAE_THRESHOLD);
                ck_assert_float_eq_tol(thr[0], 0.02f, 1e-7f);
                free(thr);
            }
            free(cols);
            free(w_enc);
            free(w_dec);
            sae_model_free(m);
        }
    /* with d_out = d_in, the encoder is still drawn apart from the decoder */
    sae_model *square;
    ck_assert_int_eq(sae_model_create_transcoder(&square, d_in, d_in, d_sae, 7,
                                                 SAE_KIND_TRANSCODER, SAE_ARCH_RELU, 0.0),
                     SAE_OK);
    float *w_dec = tensor(square, SAE_W_DEC), *w_enc = tensor(square, SAE_W_ENC);
    double same = 0.0;
    for (size_t i = 0; i < d_sae; i++)
        for (size_t j = 0; j < d_in; j++)
            same += w_enc[j * d_sae + i] == w_dec[i * d_in + j];
    ck_assert_double_lt(same, 0.01 * (double)(d_sae * d_in));
    free(w_enc);
    free(w_dec);
    sae_model_free(square);
    /* autoencoders report their input width as the output's */
    sae_model *ae;
    ck_assert_int_eq(sae_model_create(&ae, d_in, d_sae, 7), SAE_OK);
    ck_assert_uint_eq(sae_model_d_out(ae), d_in);
    ck_assert_int_eq(sae_model_kind(ae), SAE_KIND_AUTOENCODER);
    ck_assert_uint_eq(sae_model_d_out(NULL), 0);
    ck_assert_int_eq(sae_model_kind(NULL), -1);
    sae_model_free(ae);
}
END_TEST

/* reinit with 0.1 and the creation seed is creation; another norm scales the
 * decoder rows (and the tied encoder) and keeps what is not a parameter. */
START_TEST(reinit_draws_the_initialisation_again)
{
    const size_t d_in = 6, d_sae = 24;
    const size_t widths[1] = {8};
    sae_model *models[4];
    ck_assert_int_eq(sae_model_create_arch(&models[0], d_in, d_sae, 11, SAE_ARCH_JUMPRELU, 0.03),
                     SAE_OK);
    ck_assert_int_eq(sae_model_create_arch(&models[1], d_in, d_sae, 11, SAE_ARCH_GATED, 0.0),
                     SAE_OK);
    ck_assert_int_eq(sae_model_create_matryoshka(&models[2], d_in, d_sae, 11, 3, widths, 1), SAE_OK);
    ck_assert_int_eq(sae_model_create_transcoder(&models[3], d_in, 4, d_sae, 11,
                                                 SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_TOPK, 3),
                     SAE_OK);
    const double sd[4] = {0.5, 0.2, 0.3, 0.3};
    for (int a = 0; a < 4; a++) {
        sae_model *m = models[a], *fresh;
        ck_assert_int_eq(sae_model_clone(&fresh, m), SAE_OK);
        /* scramble every tensor, then draw the initialisation again */
        const int all[7] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC, SAE_W_SKIP, SAE_B_MAG,
                            SAE_R_MAG};
        for (int t = 0; t < 7; t++) {
            size_t count = sae_model_tensor_size(m, all[t]);
            if (!count)
                continue;
            float *v = test_gaussian(count, 1, sd[t % 4], 0.1, 90 + (uint64_t)t);
            ck_assert_int_eq(sae_model_set_tensor(m, all[t], v, count), SAE_OK);
            free(v);
        }
        if (sae_model_arch(m) == SAE_ARCH_MATRYOSHKA) {
            float thr = 0.5f;
            ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, &thr, 1), SAE_OK);
        }
        ck_assert_int_eq(sae_model_reinit(m, 11, 0.1), SAE_OK);
        model_snapshot want;
        snapshot_take(&want, fresh);
        ck_assert(snapshot_equal(&want, m)); /* creation, bit for bit */
        snapshot_free(&want);
        /* another norm */
        ck_assert_int_eq(sae_model_reinit(m, 11, 0.37), SAE_OK);
        float *w_dec = tensor(m, SAE_W_DEC), *w0 = tensor(fresh, SAE_W_DEC);
        size_t d_out = sae_model_d_out(m);
        assert_row_norms(w_dec, d_sae, d_out, 0.37);
        for (size_t k = 0; k < d_sae * d_out; k++) /* the same directions */
            ck_assert_float_eq_tol(w_dec[k], w0[k] * 3.7f, 1e-6f);
        free(w_dec);
        free(w0);
        /* bad norms change nothing */
        model_snapshot snap;
        snapshot_take(&snap, m);
        ck_assert_int_eq(sae_model_reinit(m, 11, 0.0), SAE_E_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(sae_error_detail(), "decoder_init_norm"));
        ck_assert_int_eq(sae_model_reinit(m, 11, -1.0), SAE_E_INVALID_ARG);
        ck_assert_int_eq(sae_model_reinit(m, 11, 1e31), SAE_E_INVALID_ARG);
        ck_assert_int_eq(sae_model_reinit(m, 11, NAN), SAE_E_NONFINITE);
        ck_assert_int_eq(sae_model_reinit(m, 11, INFINITY), SAE_E_NONFINITE);
        ck_assert(snapshot_equal(&snap, m));
        snapshot_free(&snap);
        sae_model_free(fresh);
        sae_model_free(m);
    }
    ck_assert_int_eq(sae_model_reinit(NULL, 1, 0.1), SAE_E_INVALID_ARG);
}
END_TEST

/* Clones keep the kind, output width, levels and the families' tensors. */
START_TEST(clones_keep_the_family)
{
    const size_t widths[2] = {4, 9};
    sae_model *models[3];
    ck_assert_int_eq(sae_model_create_arch(&models[0], 6, 16, 2, SAE_ARCH_GATED, 0.0), SAE_OK);
    ck_assert_int_eq(sae_model_create_matryoshka(&models[1], 6, 16, 2, 3, widths, 2), SAE_OK);
    ck_assert_int_eq(sae_model_create_transcoder(&models[2], 6, 3, 16, 2, SAE_KIND_SKIP_TRANSCODER,
                                                 SAE_ARCH_JUMPRELU, 0.05),
                     SAE_OK);
    float *v = test_gaussian(16 * 6, 1, 0.3, 0.0, 5);
    ck_assert_int_eq(sae_model_set_tensor(models[0], SAE_R_MAG, v, 16), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(models[2], SAE_W_SKIP, v, 18), SAE_OK);
    free(v);
    for (int a = 0; a < 3; a++) {
        sae_model *copy;
        ck_assert_int_eq(sae_model_clone(&copy, models[a]), SAE_OK);
        model_snapshot snap;
        snapshot_take(&snap, models[a]);
        ck_assert(snapshot_equal(&snap, copy));
        snapshot_free(&snap);
        sae_model_free(copy);
        sae_model_free(models[a]);
    }
}
END_TEST

static Suite *families_model_suite(void)
{
    Suite *s = suite_create("families_model");
    TCase *tc = tcase_create("models");
    tcase_add_test(tc, matryoshka_widths_are_validated);
    tcase_add_test(tc, matryoshka_models_know_their_levels);
    tcase_add_test(tc, gated_models_have_both_paths);
    tcase_add_test(tc, transcoders_are_validated);
    tcase_add_test(tc, transcoders_have_their_own_output);
    tcase_add_test(tc, reinit_draws_the_initialisation_again);
    tcase_add_test(tc, clones_keep_the_family);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(families_model_suite)
