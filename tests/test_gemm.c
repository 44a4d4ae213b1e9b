/*
 * The GEMM backends and the bfloat16 conversions (src/gemm.c, src/bf16.c),
 * against double-precision references written here: every backend built in,
 * every transpose, alpha and beta, odd shapes and leading dimensions; bf16
 * rounding checked against the nearest bf16 found in double, on every upper
 * half of a float with the lower halves that decide a rounding.
 */
#include "../src/internal.h"
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- bf16 rounding ------------------------------------------------------------ */

static float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t float_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The bf16 the conversion must give, found without bit tricks: the two bf16
 * neighbours of x (truncation and the next one away from zero) compared in
 * double, ties to the even one; NaN quiet, subnormals to signed zero, past
 * the largest bf16 (at or beyond the midpoint to 2^128) infinity. */
static uint16_t reference_bf16(float x)
{
    uint32_t u = float_to_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if (isnan(x))
        return (uint16_t)((u >> 16) | 0x0040u);
    if (fpclassify(x) == FP_SUBNORMAL || x == 0.0f)
        return sign;
    if (isinf(x))
        return (uint16_t)(sign | 0x7f80u);
    uint16_t lo = (uint16_t)(u >> 16);       /* toward zero */
    uint16_t hi = (uint16_t)(lo + 1);        /* away from zero (may be infinity) */
    double a = fabs((double)x);
    double lo_v = fabs((double)bits_to_float((uint32_t)lo << 16));
    double hi_v = (hi & 0x7fffu) == 0x7f80u ? ldexp(1.0, 128)
                                            : fabs((double)bits_to_float((uint32_t)hi << 16));
    double d_lo = a - lo_v, d_hi = hi_v - a;
    if (d_lo < d_hi)
        return lo;
    if (d_hi < d_lo)
        return hi;
    return (lo & 1u) ? hi : lo;
}

/* Every `stride`-th upper half (all of them with stride 1, and always the
 * zeros, subnormals, the largest finite values, infinities and NaNs) with the
 * lower halves around the rounding boundary. */
static void check_rounding_kernel(bool portable, size_t stride)
{
    static const uint32_t lows[] = {0x0000, 0x0001, 0x3fff, 0x7fff, 0x8000, 0x8001, 0xc000, 0xffff};
    static const uint32_t special[] = {0x0000, 0x0001, 0x007f, 0x0080, 0x7f7f, 0x7f80, 0x7f81,
                                       0x7fc0, 0x8000, 0x8001, 0x807f, 0xff7f, 0xff80, 0xffc1};
    const size_t n_lows = sizeof lows / sizeof lows[0], n_special = sizeof special / sizeof special[0];
    const size_t n_highs = (65536 + stride - 1) / stride + n_special, count = n_highs * n_lows;
    float *src = malloc(count * sizeof(float));
    uint16_t *dst = malloc(count * sizeof(uint16_t));
    ck_assert_ptr_nonnull(src);
    ck_assert_ptr_nonnull(dst);
    for (size_t h = 0; h < n_highs; h++) {
        uint32_t hi = h < n_special ? special[h] : (uint32_t)((h - n_special) * stride);
        for (size_t k = 0; k < n_lows; k++)
            src[h * n_lows + k] = bits_to_float(hi << 16 | lows[k]);
    }
    sae__test_portable_kernels = portable;
    /* odd lengths and offsets exercise the kernels' tails */
    sae__bf16_from_f32(dst, src, 7);
    sae__bf16_from_f32(dst + 7, src + 7, count - 7);
    sae__test_portable_kernels = 0;
    for (size_t i = 0; i < count; i++) {
        uint16_t want = reference_bf16(src[i]);
        if (dst[i] != want)
            ck_abort_msg("%s: 0x%08x -> 0x%04x, expected 0x%04x", portable ? "portable" : "native",
                         float_to_bits(src[i]), dst[i], want);
        ck_assert_uint_eq(sae__bf16_round(src[i]), want);
    }
    free(src);
    free(dst);
}

/* the AVX512_BF16 kernel where the CPU has it (else the portable one again) */
START_TEST(bf16_rounding_sampled)
{
    check_rounding_kernel(true, 97);
    check_rounding_kernel(false, 97);
}
END_TEST

START_TEST(bf16_rounding_every_upper_half)
{
    check_rounding_kernel(true, 1);
    check_rounding_kernel(false, 1);
}
END_TEST

START_TEST(bf16_widening_is_exact)
{
    uint16_t *src = malloc(65536 * sizeof(uint16_t));
    float *dst = malloc(65536 * sizeof(float));
    uint16_t *back = malloc(65536 * sizeof(uint16_t));
    for (size_t i = 0; i < 65536; i++)
        src[i] = (uint16_t)i;
    sae__bf16_to_f32(dst, src, 65536);
    for (size_t i = 0; i < 65536; i++)
        ck_assert_uint_eq(float_to_bits(dst[i]), (uint32_t)i << 16);
    /* and a normal bf16 value or infinity survives the round trip */
    sae__bf16_from_f32(back, dst, 65536);
    for (size_t i = 0; i < 65536; i++) {
        float v = dst[i];
        if (isnan(v) || fpclassify(v) == FP_SUBNORMAL)
            continue;
        ck_assert_uint_eq(back[i], src[i]);
    }
    free(src);
    free(dst);
    free(back);
}
END_TEST

START_TEST(bf16_relative_error)
{
    /* |x - bf16(x)| <= 2^-8 |x| for normal values: half an ulp of 8 significant bits */
    float *x = test_gaussian(1, 4096, 3.0, 0.0, 7);
    uint16_t *h = malloc(4096 * sizeof(uint16_t));
    float *w = malloc(4096 * sizeof(float));
    sae__bf16_from_f32(h, x, 4096);
    sae__bf16_to_f32(w, h, 4096);
    for (size_t i = 0; i < 4096; i++)
        ck_assert_double_le(fabs((double)w[i] - x[i]), ldexp(fabs((double)x[i]), -8));
    free(x);
    free(h);
    free(w);
}
END_TEST

/* ---- GEMM ------------------------------------------------------------------------ */

/* One product and its operands as stored (row-major, with padding columns). */
typedef struct product {
    bool trans_a, trans_b;
    size_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    float *a, *b, *c0; /* A, B as stored; C's initial values */
} product;

static product make_product(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha,
                            float beta, uint64_t seed)
{
    product p = {ta, tb, m, n, k, 0, 0, n + 3, alpha, beta, NULL, NULL, NULL};
    size_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
    p.lda = a_cols + 2;
    p.ldb = b_cols + 1;
    p.a = test_gaussian(a_rows, p.lda, 1.0, 0.0, seed);
    p.b = test_gaussian(b_rows, p.ldb, 1.0, 0.0, seed + 1);
    p.c0 = test_gaussian(m, p.ldc, 1.0, 0.0, seed + 2);
    return p;
}

static void free_product(product *p)
{
    free(p->a);
    free(p->b);
    free(p->c0);
}

static double a_at(const product *p, const float *a, size_t i, size_t l)
{
    return p->trans_a ? a[l * p->lda + i] : a[i * p->lda + l];
}

static double b_at(const product *p, const float *b, size_t l, size_t j)
{
    return p->trans_b ? b[j * p->ldb + l] : b[l * p->ldb + j];
}

/* C in double from operands a, b (the product's, or their bf16 roundings);
 * the padding columns of C must keep their values. Tolerance: float32
 * accumulation over k terms of the products' magnitudes. */
static void check_result(const product *p, const float *a, const float *b, const float *c,
                         const char *what)
{
    for (size_t i = 0; i < p->m; i++) {
        for (size_t j = 0; j < p->n; j++) {
            double s = 0.0, mag = 0.0;
            for (size_t l = 0; l < p->k; l++) {
                double t = a_at(p, a, i, l) * b_at(p, b, l, j);
                s += t;
                mag += fabs(t);
            }
            double c0 = p->c0[i * p->ldc + j];
            double want = p->alpha * s + (p->beta == 0.0f ? 0.0 : p->beta * c0);
            double tol = 4.0 * FLT_EPSILON * ((double)(p->k + 2) * fabs(p->alpha) * mag +
                                              fabs(p->beta * c0)) + 1e-30;
            double got = c[i * p->ldc + j];
            if (!(fabs(got - want) <= tol))
                ck_abort_msg("%s %c%c %zux%zux%zu alpha %g beta %g: C[%zu,%zu] = %.9g, "
                             "expected %.9g (tolerance %.3g)",
                             what, p->trans_a ? 'T' : 'N', p->trans_b ? 'T' : 'N', p->m, p->n,
                             p->k, p->alpha, p->beta, i, j, got, want, tol);
        }
        for (size_t j = p->n; j < p->ldc; j++)
            ck_assert_float_eq(c[i * p->ldc + j], p->c0[i * p->ldc + j]);
    }
}

static const int backends[] = {SAE_GEMM_CBLAS, SAE_GEMM_ONEDNN};

/* fn on every backend built in, every transpose, three (alpha, beta) pairs
 * and five shapes; quick (the valgrind runs): two shapes and one pair, and on
 * oneDNN, whose kernels are generated at run time (slow under valgrind), only
 * the encoder's transpose (B transposed) of the first shape. */
static void for_each_case(void (*fn)(sae_gemm_ctx *g, const product *p), bool quick)
{
    static const size_t shapes[][3] = {{33, 17, 64}, {5, 7, 3}, {1, 1, 1}, {64, 130, 96},
                                       {3, 200, 1}};
    static const float ab[][2] = {{-0.5f, 1.0f}, {1.0f, 0.0f}, {2.0f, 0.25f}};
    const size_t n_shapes = quick ? 2 : sizeof shapes / sizeof shapes[0];
    const size_t n_ab = quick ? 1 : sizeof ab / sizeof ab[0];
    for (size_t bi = 0; bi < sizeof backends / sizeof backends[0]; bi++) {
        if (!sae__gemm_available(backends[bi]))
            continue;
        sae_gemm_ctx *g;
        ck_assert_int_eq(sae__gemm_create(&g, backends[bi]), SAE_OK);
        ck_assert_int_eq(sae__gemm_backend(g), backends[bi]);
        uint64_t seed = 100;
        bool few = quick && backends[bi] == SAE_GEMM_ONEDNN;
        for (size_t s = 0; s < (few ? 1 : n_shapes); s++)
            for (int t = few ? 2 : 0; t < (few ? 3 : 4); t++)
                for (size_t q = 0; q < n_ab; q++) {
                    product p = make_product(t & 1, t & 2, shapes[s][0], shapes[s][1],
                                             shapes[s][2], ab[q][0], ab[q][1], seed += 3);
                    fn(g, &p);
                    free_product(&p);
                }
        sae__gemm_free(g);
    }
}

static void run_f32(sae_gemm_ctx *g, const product *p)
{
    float *c = malloc(p->m * p->ldc * sizeof(float));
    memcpy(c, p->c0, p->m * p->ldc * sizeof(float));
    sae__gemm_f32(g, p->trans_a, p->trans_b, p->m, p->n, p->k, p->alpha, p->a, p->lda, p->b,
                  p->ldb, p->beta, c, p->ldc);
    check_result(p, p->a, p->b, c, sae__gemm_name(sae__gemm_backend(g)));
    /* the same call again (a cached oneDNN primitive) gives the same bits */
    float *c2 = malloc(p->m * p->ldc * sizeof(float));
    memcpy(c2, p->c0, p->m * p->ldc * sizeof(float));
    sae__gemm_f32(g, p->trans_a, p->trans_b, p->m, p->n, p->k, p->alpha, p->a, p->lda, p->b,
                  p->ldb, p->beta, c2, p->ldc);
    ck_assert_mem_eq(c, c2, p->m * p->ldc * sizeof(float));
    free(c);
    free(c2);
}

START_TEST(gemm_f32_quick)
{
    for_each_case(run_f32, true);
}
END_TEST

START_TEST(gemm_f32_every_case)
{
    for_each_case(run_f32, false);
}
END_TEST

/* The operands rounded to bf16, as bf16 and as the floats they stand for. */
static void round_matrix(const float *src, size_t count, uint16_t **half, float **wide)
{
    *half = malloc(count * sizeof(uint16_t));
    *wide = malloc(count * sizeof(float));
    sae__bf16_from_f32(*half, src, count);
    sae__bf16_to_f32(*wide, *half, count);
}

static void run_bf16(sae_gemm_ctx *g, const product *p)
{
    size_t a_count = (p->trans_a ? p->k : p->m) * p->lda;
    size_t b_count = (p->trans_b ? p->n : p->k) * p->ldb;
    uint16_t *a16, *b16;
    float *a_r, *b_r;
    round_matrix(p->a, a_count, &a16, &a_r);
    round_matrix(p->b, b_count, &b16, &b_r);
    float *c = malloc(p->m * p->ldc * sizeof(float));
    memcpy(c, p->c0, p->m * p->ldc * sizeof(float));
    ck_assert_int_eq(sae__gemm_bf16(g, p->trans_a, p->trans_b, p->m, p->n, p->k, p->alpha, a16,
                                    p->lda, b16, p->ldb, p->beta, c, p->ldc),
                     SAE_OK);
    /* exactly the product of the rounded operands, up to float32 accumulation */
    check_result(p, a_r, b_r, c, sae__gemm_bf16_native(g) ? "bf16 native" : "bf16 widened");
    free(a16);
    free(b16);
    free(a_r);
    free(b_r);
    free(c);
}

START_TEST(gemm_bf16_quick)
{
    for_each_case(run_bf16, true);
}
END_TEST

START_TEST(gemm_bf16_every_case)
{
    for_each_case(run_bf16, false);
}
END_TEST

START_TEST(gemm_k_zero_scales_c)
{
    for (size_t bi = 0; bi < sizeof backends / sizeof backends[0]; bi++) {
        if (!sae__gemm_available(backends[bi]))
            continue;
        sae_gemm_ctx *g;
        ck_assert_int_eq(sae__gemm_create(&g, backends[bi]), SAE_OK);
        float c[6] = {1, 2, 3, 4, 5, 6};
        sae__gemm_f32(g, false, false, 2, 3, 0, 1.0f, NULL, 1, NULL, 3, 0.5f, c, 3);
        for (int i = 0; i < 6; i++)
            ck_assert_float_eq(c[i], 0.5f * (float)(i + 1));
        ck_assert_int_eq(sae__gemm_bf16(g, false, false, 2, 3, 0, 1.0f, NULL, 1, NULL, 3, 0.0f,
                                        c, 3),
                         SAE_OK);
        for (int i = 0; i < 6; i++)
            ck_assert_float_eq(c[i], 0.0f);
        sae__gemm_free(g);
    }
}
END_TEST

START_TEST(gemm_backend_names_and_resolution)
{
    ck_assert(sae__gemm_available(SAE_GEMM_AUTO));
    ck_assert(sae__gemm_available(SAE_GEMM_CBLAS));
    ck_assert(!sae__gemm_available(3));
    ck_assert(!sae__gemm_available(-1));
    ck_assert_str_eq(sae__gemm_name(SAE_GEMM_CBLAS), "cblas");
    ck_assert_str_eq(sae__gemm_name(SAE_GEMM_ONEDNN), "onednn");
    ck_assert_str_eq(sae__gemm_name(SAE_GEMM_AUTO), "auto");
#ifdef SAE_TEST_HAVE_ONEDNN
    ck_assert(sae__gemm_available(SAE_GEMM_ONEDNN));
    ck_assert_int_eq(sae__gemm_resolve(SAE_GEMM_AUTO), SAE_GEMM_ONEDNN);
#else
    ck_assert(!sae__gemm_available(SAE_GEMM_ONEDNN));
    ck_assert_int_eq(sae__gemm_resolve(SAE_GEMM_AUTO), SAE_GEMM_CBLAS);
    sae_gemm_ctx *g = (sae_gemm_ctx *)&g;
    ck_assert_int_eq(sae__gemm_create(&g, SAE_GEMM_ONEDNN), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(g);
#endif
    sae_gemm_ctx *g2;
    ck_assert_int_eq(sae__gemm_create(&g2, SAE_GEMM_AUTO), SAE_OK);
    ck_assert_int_eq(sae__gemm_backend(g2), sae__gemm_resolve(SAE_GEMM_AUTO));
    sae__gemm_free(g2);
    sae__gemm_free(NULL);
    ck_assert_int_eq(sae__gemm_backend(NULL), SAE_GEMM_CBLAS);
}
END_TEST

START_TEST(gemm_allocation_failures)
{
    /* every allocation of a context and of the bf16 fallback can fail cleanly */
    product p = make_product(false, true, 9, 300, 20, 1.0f, 0.0f, 5);
    uint16_t *a16 = malloc(9 * p.lda * sizeof(uint16_t)), *b16 = malloc(300 * p.ldb * 2);
    sae__bf16_from_f32(a16, p.a, 9 * p.lda);
    sae__bf16_from_f32(b16, p.b, 300 * p.ldb);
    float *c = malloc(9 * p.ldc * sizeof(float));
    for (long fail_at = 1;; fail_at++) {
        sae_gemm_ctx *g;
        sae__test_fail_countdown = fail_at;
        int rc = sae__gemm_create(&g, SAE_GEMM_CBLAS);
        if (rc == SAE_OK)
            rc = sae__gemm_bf16(g, false, true, 9, 300, 20, 1.0f, a16, p.lda, b16, p.ldb, 0.0f, c,
                                p.ldc);
        sae__test_fail_countdown = -1;
        if (rc == SAE_OK) {
            sae__gemm_free(g);
            break;
        }
        ck_assert_int_eq(rc, SAE_E_NOMEM);
        sae__gemm_free(g); /* NULL after a failed create; usable after a failed product */
        ck_assert_int_eq(sae__test_bytes_live, 0);
        ck_assert_int_lt(fail_at, 10);
    }
    free(a16);
    free(b16);
    free(c);
    free_product(&p);
}
END_TEST

/* The products split over a pool agree with the reference, for pools of 1 to
 * 3 threads (shares of 16-row groups, some empty) and both element types. */
static void run_team(int backend, int n_threads, bool quick)
{
    sae_pool *pool;
    ck_assert_int_eq(sae__pool_create(&pool, n_threads), SAE_OK);
    sae_gemm_team *team;
    ck_assert_int_eq(sae__gemm_team_create(&team, backend, n_threads), SAE_OK);
    ck_assert_int_eq(sae__gemm_team_size(team), n_threads);
    ck_assert_int_eq(sae__gemm_team_backend(team), backend);
    static const size_t shapes[][3] = {{70, 33, 40}, {5, 9, 17}, {33, 65, 8}};
    uint64_t seed = 900;
    for (size_t sh = 0; sh < (quick ? 1 : 3); sh++)
        for (int t = quick ? 2 : 0; t < (quick ? 3 : 4); t++) {
            product p = make_product(t & 1, t & 2, shapes[sh][0], shapes[sh][1], shapes[sh][2],
                                     0.75f, 0.5f, seed += 3);
            float *c = malloc(p.m * p.ldc * sizeof(float));
            memcpy(c, p.c0, p.m * p.ldc * sizeof(float));
            sae__gemm_f32_team(team, pool, p.trans_a, p.trans_b, p.m, p.n, p.k, p.alpha, p.a,
                               p.lda, p.b, p.ldb, p.beta, c, p.ldc);
            check_result(&p, p.a, p.b, c, "team f32");
            size_t a_count = (p.trans_a ? p.k : p.m) * p.lda;
            size_t b_count = (p.trans_b ? p.n : p.k) * p.ldb;
            uint16_t *a16, *b16;
            float *a_r, *b_r;
            round_matrix(p.a, a_count, &a16, &a_r);
            round_matrix(p.b, b_count, &b16, &b_r);
            memcpy(c, p.c0, p.m * p.ldc * sizeof(float));
            ck_assert_int_eq(sae__gemm_bf16_team(team, pool, p.trans_a, p.trans_b, p.m, p.n, p.k,
                                                 p.alpha, a16, p.lda, b16, p.ldb, p.beta, c,
                                                 p.ldc),
                             SAE_OK);
            check_result(&p, a_r, b_r, c, "team bf16");
            free(a16);
            free(b16);
            free(a_r);
            free(b_r);
            free(c);
            free_product(&p);
        }
    sae__gemm_team_free(team);
    sae__pool_free(pool);
}

START_TEST(gemm_team_quick)
{
    for (size_t bi = 0; bi < sizeof backends / sizeof backends[0]; bi++)
        if (sae__gemm_available(backends[bi]))
            run_team(backends[bi], 2, true);
}
END_TEST

START_TEST(gemm_team_every_case)
{
    for (size_t bi = 0; bi < sizeof backends / sizeof backends[0]; bi++)
        if (sae__gemm_available(backends[bi]))
            for (int threads = 1; threads <= 3; threads++)
                run_team(backends[bi], threads, false);
}
END_TEST

static Suite *gemm_suite(void)
{
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("quick");
    tcase_add_test(tc, bf16_rounding_sampled);
    tcase_add_test(tc, bf16_widening_is_exact);
    tcase_add_test(tc, bf16_relative_error);
    tcase_add_test(tc, gemm_backend_names_and_resolution);
    tcase_add_test(tc, gemm_f32_quick);
    tcase_add_test(tc, gemm_bf16_quick);
    tcase_add_test(tc, gemm_k_zero_scales_c);
    tcase_add_test(tc, gemm_allocation_failures);
    tcase_add_test(tc, gemm_team_quick);
    tcase_set_timeout(tc, 300);
    suite_add_tcase(s, tc);
    /* the full sweeps: not under valgrind (CK_EXCLUDE_TAGS=slow) */
    tc = tcase_create("sweep");
    tcase_set_tags(tc, "slow");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, bf16_rounding_every_upper_half);
    tcase_add_test(tc, gemm_f32_every_case);
    tcase_add_test(tc, gemm_bf16_every_case);
    tcase_add_test(tc, gemm_team_every_case);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(gemm_suite)
