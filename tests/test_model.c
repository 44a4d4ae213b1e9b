/* The model API: version, status strings, creation, initialisation, tensors. */
#include "nomem.h"
#include "testutil.h"

#include <float.h>
#include <stdio.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

START_TEST(version_matches_header)
{
    ck_assert_uint_eq(sae_version_number(), SAE_VERSION_NUMBER);
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", SAE_VERSION_MAJOR, SAE_VERSION_MINOR,
             SAE_VERSION_PATCH);
    ck_assert_str_eq(sae_version_string(), expect);
}
END_TEST

START_TEST(status_codes_are_pinned_and_described)
{
    ck_assert_int_eq(SAE_OK, 0);
    ck_assert_int_eq(SAE_E_INVALID_ARG, -1);
    ck_assert_int_eq(SAE_E_NOMEM, -2);
    ck_assert_int_eq(SAE_E_NONFINITE, -3);
    ck_assert_int_eq(SAE_E_IO, -4);
    ck_assert_int_eq(SAE_E_FORMAT, -5);
    ck_assert_int_eq(SAE_E_STATE, -6);
    ck_assert_int_eq(SAE_E_COMM, -7);
    const char *seen[8];
    for (int s = 0; s >= -7; s--) {
        const char *text = sae_status_string(s);
        ck_assert_ptr_nonnull(text);
        ck_assert_str_ne(text, "unknown status");
        for (int k = 0; k < -s; k++)
            ck_assert_str_ne(text, seen[k]);
        seen[-s] = text;
    }
    ck_assert_str_eq(sae_status_string(-1000), "unknown status");
    ck_assert_str_eq(sae_status_string(1), "unknown status");
    ck_assert_str_eq(sae_status_string(INT32_MIN), "unknown status");
}
END_TEST

START_TEST(create_reports_dimensions_and_sizes)
{
    sae_model *m = NULL;
    ck_assert_int_eq(sae_model_create(&m, 7, 19, 1), SAE_OK);
    ck_assert_uint_eq(sae_model_d_in(m), 7);
    ck_assert_uint_eq(sae_model_d_sae(m), 19);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_W_ENC), 7 * 19);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_B_ENC), 19);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_W_DEC), 19 * 7);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_B_DEC), 7);
    ck_assert_uint_eq(sae_model_tensor_size(m, 4), 0);
    ck_assert_uint_eq(sae_model_tensor_size(m, -1), 0);
    ck_assert_uint_eq(sae_model_tensor_size(NULL, SAE_W_ENC), 0);
    ck_assert_uint_eq(sae_model_d_in(NULL), 0);
    ck_assert_uint_eq(sae_model_d_sae(NULL), 0);
    sae_model_free(m);
    sae_model_free(NULL);
}
END_TEST

/* Anthropic's April 2024 init: decoder rows of norm 0.1, W_enc = W_dec^T, zero biases. */
START_TEST(init_follows_the_april_2024_recipe)
{
    const size_t d_in = 13, d_sae = 40;
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 7), SAE_OK);
    float *w_enc = malloc(d_in * d_sae * sizeof(float));
    float *w_dec = malloc(d_sae * d_in * sizeof(float));
    float b_enc[40], b_dec[13];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_ENC, w_enc, d_in * d_sae), SAE_OK);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, w_dec, d_in * d_sae), SAE_OK);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_ENC, b_enc, d_sae), SAE_OK);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_DEC, b_dec, d_in), SAE_OK);
    double mean_abs_cos = 0.0;
    for (size_t i = 0; i < d_sae; i++) {
        double norm = 0.0;
        for (size_t j = 0; j < d_in; j++) {
            norm += (double)w_dec[i * d_in + j] * w_dec[i * d_in + j];
            ck_assert_float_eq(w_enc[j * d_sae + i], w_dec[i * d_in + j]);
        }
        ck_assert_double_eq_tol(sqrt(norm), 0.1, 1e-6);
        ck_assert_float_eq(b_enc[i], 0.0f);
        if (i > 0) { /* directions are spread out, not copies */
            double dot = 0.0;
            for (size_t j = 0; j < d_in; j++)
                dot += (double)w_dec[i * d_in + j] * w_dec[(i - 1) * d_in + j];
            mean_abs_cos += fabs(dot) / 0.01 / (d_sae - 1);
        }
    }
    for (size_t j = 0; j < d_in; j++)
        ck_assert_float_eq(b_dec[j], 0.0f);
    /* E|cos| of random directions in 13 dims is about 0.22. */
    ck_assert_double_lt(mean_abs_cos, 0.4);
    ck_assert_double_gt(mean_abs_cos, 0.1);
    free(w_enc);
    free(w_dec);
    sae_model_free(m);
}
END_TEST

static uint64_t fnv1a(const void *data, size_t bytes)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t k = 0; k < bytes; k++)
        h = (h ^ p[k]) * 0x100000001b3ULL;
    return h;
}

/* The seed alone fixes the bits: the same on every run and machine (this hash
 * was recorded once and must never change), different for another seed. */
START_TEST(init_is_deterministic_from_the_seed)
{
    sae_model *a, *b, *c;
    ck_assert_int_eq(sae_model_create(&a, 8, 16, 42), SAE_OK);
    ck_assert_int_eq(sae_model_create(&b, 8, 16, 42), SAE_OK);
    ck_assert_int_eq(sae_model_create(&c, 8, 16, 43), SAE_OK);
    float wa[128], wb[128], wc[128];
    sae_model_get_tensor(a, SAE_W_DEC, wa, 128);
    sae_model_get_tensor(b, SAE_W_DEC, wb, 128);
    sae_model_get_tensor(c, SAE_W_DEC, wc, 128);
    ck_assert_mem_eq(wa, wb, sizeof wa);
    ck_assert(memcmp(wa, wc, sizeof wa) != 0);
    ck_assert_uint_eq(fnv1a(wa, sizeof wa), 4295249185894198474ULL);
    sae_model_free(a);
    sae_model_free(b);
    sae_model_free(c);
}
END_TEST

START_TEST(tensors_round_trip_in_saelens_layout)
{
    const size_t d_in = 5, d_sae = 3;
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 3), SAE_OK);
    /* W_enc[j][i] = 10 j + i is d_in x d_sae, row-major */
    float w_enc[15], back[15];
    for (size_t j = 0; j < d_in; j++)
        for (size_t i = 0; i < d_sae; i++)
            w_enc[j * d_sae + i] = (float)(10 * j + i);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, w_enc, 15), SAE_OK);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_ENC, back, 15), SAE_OK);
    ck_assert_mem_eq(w_enc, back, sizeof back);
    /* encoding a one-hot input e_j gives row j of W_enc (biases are zero) */
    float x[5] = {0, 0, 1, 0, 0}, f[3];
    ck_assert_int_eq(sae_encode(m, x, 1, f), SAE_OK);
    ck_assert_float_eq(f[0], 20.0f);
    ck_assert_float_eq(f[1], 21.0f);
    ck_assert_float_eq(f[2], 22.0f);
    float b_dec[5] = {1, 2, 3, 4, 5}, b_dec_back[5];
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_DEC, b_dec, 5), SAE_OK);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_DEC, b_dec_back, 5), SAE_OK);
    ck_assert_mem_eq(b_dec, b_dec_back, sizeof b_dec);
    sae_model_free(m);
}
END_TEST

START_TEST(create_rejects_bad_arguments)
{
    sae_model *m = (sae_model *)&m; /* must be overwritten with NULL */
    ck_assert_int_eq(sae_model_create(NULL, 4, 4, 0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create(&m, 0, 4, 0), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(sae_model_create(&m, 4, 0, 0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create(&m, SIZE_MAX / 2, 4, 0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create(&m, (size_t)1 << 33, (size_t)1 << 33, 0),
                     SAE_E_INVALID_ARG);
    /* each dimension fits CBLAS, but the parameter block's byte size overflows */
    ck_assert_int_eq(sae_model_create(&m, INT32_MAX, INT32_MAX, 0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create(&m, (size_t)INT32_MAX + 1, 1, 0), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(m);
}
END_TEST

START_TEST(tensor_access_rejects_bad_arguments)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, 4, 6, 9), SAE_OK);
    model_snapshot before;
    snapshot_take(&before, m);
    float buf[24] = {0};
    ck_assert_int_eq(sae_model_get_tensor(NULL, SAE_W_ENC, buf, 24), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_ENC, NULL, 24), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_ENC, buf, 23), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_ENC, buf, 4), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_get_tensor(m, 4, buf, 24), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_set_tensor(NULL, SAE_W_DEC, buf, 24), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_DEC, NULL, 24), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_DEC, buf, 25), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_DEC, buf, 6), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_set_tensor(m, -1, buf, 24), SAE_E_INVALID_ARG);
    buf[23] = NAN;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_DEC, buf, 24), SAE_E_NONFINITE);
    buf[23] = INFINITY;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, buf, 24), SAE_E_NONFINITE);
    buf[0] = -INFINITY;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, buf, 6), SAE_E_NONFINITE);
    ck_assert(snapshot_equal(&before, m));
    snapshot_free(&before);
    sae_model_free(m);
}
END_TEST

/* sae_model_clone: every architecture, with its thresholds set, copies bit
 * for bit and independently. */
START_TEST(clone_copies_every_architecture)
{
    static const double sd[4] = {0.3, 0.1, 0.3, 0.1};
    const int arch = _i;
    const double param[4] = {0, 3, 3, 0.05};
    const size_t d_in = 6, d_sae = 9, n = 5;
    sae_model *m = test_random_model(arch, param[arch], d_in, d_sae, 31, sd);
    float thr[9] = {0.02f, 0.3f, 1e-3f, 0.07f, 0.2f, 0.011f, 0.5f, 0.09f, 0.04f};
    if (arch == SAE_ARCH_BATCHTOPK || arch == SAE_ARCH_JUMPRELU)
        ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, thr,
                                              sae_model_tensor_size(m, SAE_THRESHOLD)),
                         SAE_OK);
    sae_model *c = (sae_model *)&c;
    ck_assert_int_eq(sae_model_clone(&c, m), SAE_OK);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_ne(c, m);
    model_snapshot snap;
    snapshot_take(&snap, m);
    ck_assert(snapshot_equal(&snap, c)); /* shape, arch, k, all five tensors */
    /* the same file, byte for byte (JumpReLU's exact log thresholds included) */
    size_t size_m, size_c;
    ck_assert_int_eq(sae_model_save_size(m, &size_m), SAE_OK);
    ck_assert_int_eq(sae_model_save_size(c, &size_c), SAE_OK);
    ck_assert_uint_eq(size_m, size_c);
    unsigned char *bm = malloc(size_m), *bc = malloc(size_c);
    ck_assert_int_eq(sae_model_save_buffer(m, bm, size_m, NULL), SAE_OK);
    ck_assert_int_eq(sae_model_save_buffer(c, bc, size_c, NULL), SAE_OK);
    ck_assert_mem_eq(bm, bc, size_m);
    /* the same features */
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 5);
    float fm[5 * 9], fc[5 * 9];
    ck_assert_int_eq(sae_encode(m, x, n, fm), SAE_OK);
    ck_assert_int_eq(sae_encode(c, x, n, fc), SAE_OK);
    ck_assert_mem_eq(fm, fc, sizeof fm);
    /* independent: changing or freeing one leaves the other as it was */
    float b_enc[9] = {0};
    ck_assert_int_eq(sae_model_set_tensor(c, SAE_B_ENC, b_enc, d_sae), SAE_OK);
    ck_assert(snapshot_equal(&snap, m));
    sae_model_free(m);
    ck_assert_int_eq(sae_model_get_tensor(c, SAE_B_ENC, b_enc, d_sae), SAE_OK);
    ck_assert_int_eq(sae_encode(c, x, n, fc), SAE_OK);
    snapshot_free(&snap);
    free(x);
    free(bm);
    free(bc);
    sae_model_free(c);
}
END_TEST

static int call_clone(void *p)
{
    sae_model *c = (sae_model *)&c;
    int rc = sae_model_clone(&c, p);
    if (rc != SAE_OK)
        ck_assert_ptr_null(c);
    sae_model_free(c);
    return rc;
}

START_TEST(clone_rejects_bad_arguments_and_fails_cleanly)
{
    sae_model *m, *c = (sae_model *)&c;
    ck_assert_int_eq(sae_model_create(&m, 4, 6, 9), SAE_OK);
    ck_assert_int_eq(sae_model_clone(NULL, m), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_clone(&c, NULL), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(c);
    /* two allocations (the handle, the parameters), each failing cleanly */
    ck_assert_int_eq(nomem_fail_each_allocation(call_clone, m, NULL), 2);
    sae_model_free(m);
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, version_matches_header);
    tcase_add_test(tc, status_codes_are_pinned_and_described);
    tcase_add_test(tc, create_reports_dimensions_and_sizes);
    tcase_add_test(tc, init_follows_the_april_2024_recipe);
    tcase_add_test(tc, init_is_deterministic_from_the_seed);
    tcase_add_test(tc, tensors_round_trip_in_saelens_layout);
    tcase_add_test(tc, create_rejects_bad_arguments);
    tcase_add_test(tc, tensor_access_rejects_bad_arguments);
    tcase_add_loop_test(tc, clone_copies_every_architecture, 0, 4);
    tcase_add_test(tc, clone_rejects_bad_arguments_and_fails_cleanly);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(model_suite)
