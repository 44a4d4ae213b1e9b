/* The public generator (sae_rng_*): the published xoshiro256** and splitmix64
 * bits (values from an independent Python implementation of both), the
 * derived draws, and that the library's own draws are these. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

START_TEST(seeding_and_bits_match_the_reference)
{
    static const struct {
        uint64_t seed, stream;
        uint64_t state[4], next[4];
    } cases[] = {
        {42, 0, {0x57e1faba65107204u, 0xf4abd143feb24055u, 0x7c816738c12903b2u, 0x113e5dec6f8fd8a8u},
         {0x19e479e2aaa77bfbu, 0x5e3efe753be27527u, 0xc3ed7125b780200au, 0x85b911e2152f876eu}},
        {42, 7, {0x40dd2b9196388fc1u, 0x27f8ff719c1deaccu, 0x0435cf4d45e623d2u, 0x85bef5d0813e653cu},
         {0x62737c38a122f17bu, 0xea6ebb82a9ba9dafu, 0xd441ca1af7a73d34u, 0x98876492b1a0996au}},
        {0, 0, {0xa706dd2f4d197e6fu, 0xb382a305f4414f5eu, 0x631a9154fbabf717u, 0xa80aba8c86640906u},
         {0xfb5405f7bd79c540u, 0x780c98e26cea5883u, 0x2a146e0980febc66u, 0x4851477db8791fcau}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sae_rng r;
        sae_rng_seed(&r, cases[c].seed, cases[c].stream);
        ck_assert_mem_eq(r.s, cases[c].state, sizeof r.s);
        for (int k = 0; k < 4; k++)
            ck_assert_uint_eq(sae_rng_next(&r), cases[c].next[k]);
    }
}
END_TEST

START_TEST(uniform_and_normal_are_built_from_next)
{
    sae_rng r, copy;
    sae_rng_seed(&r, 9, 3);
    for (int k = 0; k < 1000; k++) {
        copy = r; /* a copy continues the same stream */
        double u = sae_rng_uniform(&r);
        ck_assert(u >= 0.0 && u < 1.0);
        ck_assert(u == (double)(sae_rng_next(&copy) >> 11) * 0x1.0p-53);
        ck_assert_mem_eq(r.s, copy.s, sizeof r.s);
    }
    for (int k = 0; k < 1000; k++) {
        copy = r;
        double z = sae_rng_normal(&r);
        double u1 = 1.0 - sae_rng_uniform(&copy), u2 = sae_rng_uniform(&copy);
        ck_assert(z == sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
        ck_assert_mem_eq(r.s, copy.s, sizeof r.s); /* two draws per normal */
    }
    /* moments of 200000 normals: mean 0, variance 1 (5 standard errors) */
    double s = 0.0, s2 = 0.0;
    const int n = 200000;
    for (int k = 0; k < n; k++) {
        double z = sae_rng_normal(&r);
        s += z;
        s2 += z * z;
    }
    ck_assert(fabs(s / n) < 5.0 / sqrt(n));
    ck_assert(fabs(s2 / n - 1.0) < 5.0 * sqrt(2.0 / n));
}
END_TEST

START_TEST(below_is_unbiased_and_pinned)
{
    sae_rng r;
    sae_rng_seed(&r, 1, 2);
    const uint64_t want[5] = {4, 6, 5, 7, 1}; /* n = 10, reference implementation */
    for (int k = 0; k < 5; k++)
        ck_assert_uint_eq(sae_rng_below(&r, 10), want[k]);
    /* n = 0 gives 0 and draws nothing; a power of two takes the low bits of one draw */
    sae_rng copy = r;
    ck_assert_uint_eq(sae_rng_below(&r, 0), 0);
    ck_assert_mem_eq(r.s, copy.s, sizeof r.s);
    ck_assert_uint_eq(sae_rng_below(&r, 1), 0);
    sae_rng_next(&copy);
    ck_assert_mem_eq(r.s, copy.s, sizeof r.s);
    ck_assert_uint_eq(sae_rng_below(&r, 64), sae_rng_next(&copy) & 63);
    ck_assert_mem_eq(r.s, copy.s, sizeof r.s);
    /* 2^63 + 1: half of all 64-bit values are rejected; the results stay below n */
    const uint64_t big = (UINT64_C(1) << 63) + 1;
    for (int k = 0; k < 100; k++)
        ck_assert_uint_lt(sae_rng_below(&r, big), big);
    /* n = 3, 60000 draws: each value 20000 times within 5 standard deviations */
    uint64_t counts[3] = {0, 0, 0};
    for (int k = 0; k < 60000; k++)
        counts[sae_rng_below(&r, 3)]++;
    for (int v = 0; v < 3; v++)
        ck_assert(fabs((double)counts[v] - 20000.0) < 5.0 * sqrt(60000.0 * (1.0 / 3) * (2.0 / 3)));
}
END_TEST

START_TEST(shuffle_is_fisher_yates)
{
    sae_rng r;
    sae_rng_seed(&r, 5, 1);
    uint64_t v[10];
    for (int k = 0; k < 10; k++)
        v[k] = (uint64_t)k;
    ck_assert_int_eq(sae_rng_shuffle(&r, v, 10), SAE_OK);
    const uint64_t want[10] = {4, 0, 8, 1, 6, 7, 9, 2, 3, 5}; /* reference implementation */
    ck_assert_mem_eq(v, want, sizeof want);
    /* every one of the 6 orders of 3 items is about equally likely */
    int seen[6] = {0};
    for (int k = 0; k < 6000; k++) {
        uint64_t w[3] = {0, 1, 2};
        ck_assert_int_eq(sae_rng_shuffle(&r, w, 3), SAE_OK);
        ck_assert_uint_eq(w[0] + w[1] + w[2], 3);
        ck_assert(w[0] != w[1] && w[1] != w[2] && w[0] != w[2]);
        seen[w[0] * 2 + (w[1] > w[2])]++;
    }
    for (int k = 0; k < 6; k++)
        ck_assert(abs(seen[k] - 1000) < 5 * 31); /* sd = sqrt(6000 / 6 * 5 / 6) */
    /* nothing to shuffle: fine, and draws nothing */
    sae_rng copy = r;
    ck_assert_int_eq(sae_rng_shuffle(&r, NULL, 0), SAE_OK);
    ck_assert_int_eq(sae_rng_shuffle(&r, v, 1), SAE_OK);
    ck_assert_mem_eq(r.s, copy.s, sizeof r.s);
}
END_TEST

START_TEST(bad_arguments_change_nothing)
{
    sae_rng r;
    sae_rng_seed(&r, 3, 4);
    sae_rng copy = r;
    uint64_t v[2] = {1, 2};
    ck_assert_int_eq(sae_rng_shuffle(NULL, v, 2), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_rng_shuffle: r"));
    ck_assert_int_eq(sae_rng_shuffle(&r, NULL, 2), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_rng_shuffle: v"));
    ck_assert_mem_eq(r.s, copy.s, sizeof r.s);
    ck_assert_uint_eq(v[0], 1);
    ck_assert_uint_eq(v[1], 2);
    /* a NULL generator: seeding does nothing, draws are 0 */
    sae_rng_seed(NULL, 1, 2);
    ck_assert_uint_eq(sae_rng_next(NULL), 0);
    ck_assert(sae_rng_uniform(NULL) == 0.0);
    ck_assert(sae_rng_normal(NULL) == 0.0);
    ck_assert_uint_eq(sae_rng_below(NULL, 10), 0);
}
END_TEST

/* The library draws from this generator: sae_model_create's row i of W_dec is
 * d_in normals of stream (seed, i), scaled to norm 0.1. */
START_TEST(model_initialisation_uses_the_public_generator)
{
    const size_t d_in = 7, d_sae = 5;
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 77), SAE_OK);
    float w_dec[35], row[7];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, w_dec, d_in * d_sae), SAE_OK);
    for (size_t i = 0; i < d_sae; i++) {
        sae_rng r;
        sae_rng_seed(&r, 77, i);
        double sum = 0.0;
        for (size_t j = 0; j < d_in; j++) {
            row[j] = (float)sae_rng_normal(&r);
            sum += (double)row[j] * row[j];
        }
        for (size_t j = 0; j < d_in; j++)
            ck_assert(w_dec[i * d_in + j] == (float)(row[j] * (0.1 / sqrt(sum))));
    }
    sae_model_free(m);
}
END_TEST

static Suite *rng_suite(void)
{
    Suite *s = suite_create("rng");
    TCase *tc = tcase_create("rng");
    tcase_add_test(tc, seeding_and_bits_match_the_reference);
    tcase_add_test(tc, uniform_and_normal_are_built_from_next);
    tcase_add_test(tc, below_is_unbiased_and_pinned);
    tcase_add_test(tc, shuffle_is_fisher_yates);
    tcase_add_test(tc, bad_arguments_change_nothing);
    tcase_add_test(tc, model_initialisation_uses_the_public_generator);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(rng_suite)
