/*
 * The fused sparse encoder (src/encode_fused.c) against a plain reference
 * written here: pre-activations of small integers and eighths, which every
 * GEMM (whole, tiled, float32 or bf16) computes exactly, so the pairs must
 * agree bit for bit, ties included (there are many). Every architecture,
 * AuxK, token counts that end in partial sub-blocks, feature counts that end
 * in partial tiles, 1 to 3 threads, both backends, both precisions; and the
 * density limit, a too-small output, and arenas that must grow.
 */
#include "../src/internal.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct problem {
    size_t n, d_in, d_sae;
    float *xc, *w_enc, *b_enc, *norms, *theta;
    uint16_t *xc16, *w16;
    uint8_t *dead;
    double *pre; /* n x d_sae, exact */
} problem;

static problem make_problem(size_t n, size_t d_in, size_t d_sae, double shift, uint64_t seed)
{
    problem p = {n, d_in, d_sae, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    test_rng r = {seed};
    p.xc = malloc(n * d_in * sizeof(float));
    p.w_enc = malloc(d_sae * d_in * sizeof(float));
    p.b_enc = malloc(d_sae * sizeof(float));
    p.norms = malloc(d_sae * sizeof(float));
    p.theta = malloc(d_sae * sizeof(float));
    p.dead = malloc(d_sae);
    for (size_t q = 0; q < n * d_in; q++)
        p.xc[q] = (float)((int)(test_uniform(&r) * 3) - 1);            /* -1, 0, 1 */
    for (size_t q = 0; q < d_sae * d_in; q++)
        p.w_enc[q] = (float)((int)(test_uniform(&r) * 9) - 4) / 8.0f;  /* -1/2 .. 1/2 */
    for (size_t i = 0; i < d_sae; i++) {
        p.b_enc[i] = (float)(-shift + (double)((int)(test_uniform(&r) * 5) - 2) / 4.0);
        p.norms[i] = (float)(0.5 + test_uniform(&r));
        p.theta[i] = (float)((int)(test_uniform(&r) * 4) + 1) / 4.0f;  /* 1/4 .. 1 */
        p.dead[i] = test_uniform(&r) < 0.4;
    }
    p.xc16 = malloc(n * d_in * sizeof(uint16_t));
    p.w16 = malloc(d_sae * d_in * sizeof(uint16_t));
    sae__bf16_from_f32(p.xc16, p.xc, n * d_in);
    sae__bf16_from_f32(p.w16, p.w_enc, d_sae * d_in);
    p.pre = malloc(n * d_sae * sizeof(double));
    for (size_t t = 0; t < n; t++)
        for (size_t i = 0; i < d_sae; i++) {
            double s = p.b_enc[i];
            for (size_t j = 0; j < d_in; j++)
                s += (double)p.xc[t * d_in + j] * p.w_enc[i * d_in + j];
            p.pre[t * d_sae + i] = (double)(float)s; /* exact: a float */
        }
    return p;
}

static void free_problem(problem *p)
{
    free(p->xc), free(p->w_enc), free(p->b_enc), free(p->norms), free(p->theta);
    free(p->xc16), free(p->w16), free(p->dead), free(p->pre);
}

/* The reference: per token, the pairs in feature order (count in *counts[t]). */
typedef struct expected {
    size_t *row_ptr;
    uint32_t *feat;
    float *fval;
    size_t *active;
    double *l1;
    float min_kept;
    size_t *aux_count;
    uint32_t *aux_feat; /* n x k_aux */
} expected;

typedef struct cand {
    double v;
    size_t t, i;
} cand;

static int cand_order(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static expected reference(const problem *p, int arch, size_t k, float half, size_t k_aux,
                          bool with_aux)
{
    const size_t n = p->n, d = p->d_sae;
    expected x;
    x.row_ptr = calloc(n + 1, sizeof(size_t));
    x.feat = malloc(n * d * sizeof(uint32_t));
    x.fval = malloc(n * d * sizeof(float));
    x.active = calloc(n, sizeof(size_t));
    x.l1 = calloc(n, sizeof(double));
    x.min_kept = 0.0f;
    x.aux_count = calloc(n, sizeof(size_t));
    x.aux_feat = malloc(n * (k_aux ? k_aux : 1) * sizeof(uint32_t));
    uint8_t *keep = calloc(n * d, 1);
    float *val = calloc(n * d, sizeof(float));
    cand *c = malloc(n * d * sizeof(cand));
    if (arch == SAE_ARCH_BATCHTOPK) {
        size_t m = 0;
        for (size_t t = 0; t < n; t++)
            for (size_t i = 0; i < d; i++)
                if (p->pre[t * d + i] > 0.0)
                    c[m++] = (cand){p->pre[t * d + i], t, i};
        qsort(c, m, sizeof *c, cand_order);
        size_t K = n * k < m ? n * k : m;
        for (size_t q = 0; q < K; q++) {
            keep[c[q].t * d + c[q].i] = 1;
            val[c[q].t * d + c[q].i] = (float)c[q].v;
        }
        x.min_kept = K ? (float)c[K - 1].v : 0.0f;
    }
    if (arch == SAE_ARCH_TOPK)
        for (size_t t = 0; t < n; t++) {
            const double *pre = p->pre + t * d;
            size_t m = 0;
            for (size_t i = 0; i < d; i++)
                if (pre[i] > 0.0)
                    c[m++] = (cand){pre[i], 0, i};
            qsort(c, m, sizeof *c, cand_order);
            for (size_t q = 0; q < m && q < k; q++) {
                keep[t * d + c[q].i] = 1;
                val[t * d + c[q].i] = (float)c[q].v;
            }
        }
    /* the pairs, token by token */
    size_t at = 0;
    for (size_t t = 0; t < n; t++) {
        const double *pre = p->pre + t * d;
        x.row_ptr[t] = at;
        for (size_t i = 0; i < d; i++) {
            bool fire, pair;
            float f;
            if (arch == SAE_ARCH_RELU) {
                fire = pair = pre[i] > 0.0;
                f = (float)pre[i];
            } else if (arch == SAE_ARCH_JUMPRELU) {
                float u = (float)pre[i] - p->theta[i];
                fire = u > 0.0f;
                pair = fire || (u > -half && u < half);
                f = fire ? (float)pre[i] : 0.0f;
            } else {
                fire = pair = keep[t * d + i];
                f = val[t * d + i];
            }
            if (pair) {
                x.feat[at] = (uint32_t)i;
                x.fval[at] = f;
                at++;
            }
            if (fire) {
                x.active[t]++;
                x.l1[t] += (double)f * p->norms[i];
            }
        }
        if (with_aux) {
            size_t m = 0;
            for (size_t i = 0; i < d; i++)
                if (p->dead[i] && pre[i] > 0.0)
                    c[m++] = (cand){pre[i], 0, i};
            qsort(c, m, sizeof *c, cand_order);
            m = m < k_aux ? m : k_aux;
            /* in feature order */
            for (size_t a = 0; a < m; a++)
                for (size_t b = a + 1; b < m; b++)
                    if (c[b].i < c[a].i) {
                        cand tmp = c[a];
                        c[a] = c[b];
                        c[b] = tmp;
                    }
            for (size_t q = 0; q < m; q++)
                x.aux_feat[t * k_aux + q] = (uint32_t)c[q].i;
            x.aux_count[t] = m;
        }
    }
    x.row_ptr[n] = at;
    free(keep);
    free(val);
    free(c);
    return x;
}

static void free_expected(expected *x)
{
    free(x->row_ptr), free(x->feat), free(x->fval), free(x->active), free(x->l1);
    free(x->aux_count), free(x->aux_feat);
}

/* The first k < count with a[k] != b[k], or count. */
static size_t first_size_mismatch(const size_t *a, const size_t *b, size_t count)
{
    size_t k = 0;
    while (k < count && a[k] == b[k])
        k++;
    return k;
}

/* One pass of the encoder enc (with its team and pool) against the reference. */
static void check_pass(sae_fused_encoder *enc, sae_gemm_team *team, sae_pool *pool,
                       const problem *p, int arch, size_t k, bool with_aux, bool bf16)
{
    const float half = 0.125f;
    const size_t k_aux = 5;
    sae_activation act = {.arch = arch, .d_sae = p->d_sae, .k = k, .b_enc = p->b_enc,
                          .norms = p->norms, .theta = p->theta, .bandwidth = 2 * half,
                          .training = true, .dead = with_aux ? p->dead : NULL, .k_aux = k_aux};
    sae_fused_args args = {&act, p->d_in, p->n, p->xc, p->w_enc,
                                   bf16 ? p->xc16 : NULL, bf16 ? p->w16 : NULL, 1.0};
    size_t n = p->n;
    sae_fused_out out = {calloc(n + 1, sizeof(size_t)), NULL, NULL, 16, calloc(n, sizeof(double)),
                          calloc(n, sizeof(size_t)), malloc(n * k_aux * sizeof(uint32_t)),
                          malloc(n * k_aux * sizeof(float)), calloc(n, sizeof(size_t)), k_aux, 0,
                          0.0f};
    out.feat = malloc(out.cap * sizeof(uint32_t));
    out.fval = malloc(out.cap * sizeof(float));
    int rc = sae__encode_fused(enc, &args, team, pool, &out);
    if (rc == SAE_FUSED_OUT_FULL) { /* 16 pairs are too few: grow and call again */
        out.cap = out.pairs;
        out.feat = realloc(out.feat, out.cap * sizeof(uint32_t));
        out.fval = realloc(out.fval, out.cap * sizeof(float));
        rc = sae__encode_fused(enc, &args, team, pool, &out);
    }
    ck_assert_int_eq(rc, SAE_OK);
    expected x = reference(p, arch, k, half, k_aux, with_aux);
    /* one assertion per array (Check reports each assertion through a pipe:
     * one per element made this test take minutes) */
    ck_assert_uint_eq(out.pairs, x.row_ptr[n]);
    size_t t_bad = first_size_mismatch(out.row_ptr, x.row_ptr, n + 1);
    ck_assert_msg(t_bad > n, "row_ptr[%zu]", t_bad);
    size_t q_bad = out.pairs;
    for (size_t q = 0; q < out.pairs && q_bad == out.pairs; q++)
        if (out.feat[q] != x.feat[q] || out.fval[q] != x.fval[q])
            q_bad = q;
    ck_assert_msg(q_bad == out.pairs, "pair %zu: feature %u value %g, expected %u %g", q_bad,
                  (unsigned)out.feat[q_bad], (double)out.fval[q_bad], (unsigned)x.feat[q_bad],
                  (double)x.fval[q_bad]);
    t_bad = first_size_mismatch(out.active, x.active, n);
    ck_assert_msg(t_bad == n, "active count of token %zu", t_bad);
    for (size_t t = 0; t < n; t++)
        if (!(fabs(out.l1[t] - x.l1[t]) <= 1e-5 * (1.0 + fabs(x.l1[t]))))
            ck_abort_msg("l1 of token %zu: %.9g, expected %.9g", t, out.l1[t], x.l1[t]);
    if (with_aux) {
        t_bad = first_size_mismatch(out.aux_count, x.aux_count, n);
        ck_assert_msg(t_bad == n, "AuxK count of token %zu", t_bad);
        for (size_t t = 0; t < n; t++)
            if (memcmp(out.aux_feat + t * k_aux, x.aux_feat + t * k_aux,
                       x.aux_count[t] * sizeof(uint32_t)) != 0)
                ck_abort_msg("AuxK picks of token %zu", t);
    }
    if (arch == SAE_ARCH_BATCHTOPK)
        ck_assert_float_eq(out.batch_min_kept, x.min_kept);
    free_expected(&x);
    free(out.row_ptr), free(out.feat), free(out.fval), free(out.l1), free(out.active);
    free(out.aux_feat), free(out.aux_fval), free(out.aux_count);
}

/* One pass of a fresh encoder against the reference. */
static void check_case(const problem *p, int arch, size_t k, bool with_aux, int backend,
                       int n_threads, bool bf16)
{
    sae_pool *pool;
    ck_assert_int_eq(sae__pool_create(&pool, n_threads), SAE_OK);
    sae_gemm_team *team;
    ck_assert_int_eq(sae__gemm_team_create(&team, backend, n_threads), SAE_OK);
    sae_fused_encoder *enc;
    ck_assert_int_eq(sae__fused_encoder_create(&enc, p->d_sae, n_threads, backend), SAE_OK);
    check_pass(enc, team, pool, p, arch, k, with_aux, bf16);
    sae__fused_encoder_free(enc);
    sae__gemm_team_free(team);
    sae__pool_free(pool);
}

static const int backends[] = {SAE_GEMM_CBLAS, SAE_GEMM_ONEDNN};

static void every_backend(int arch, size_t k, bool with_aux, bool quick)
{
    /* 1100 tokens: sub-blocks of 512, 512 and 76; 300 features: a partial tile */
    problem p = make_problem(quick ? 600 : 1100, 48, 300, arch == SAE_ARCH_RELU ? 1.5 : 0.0,
                             17 + (uint64_t)arch);
    for (size_t b = 0; b < 2; b++) {
        if (!sae__gemm_available(backends[b]))
            continue;
        for (int threads = 1; threads <= (quick ? 2 : 3); threads++)
            for (int bf16 = 0; bf16 < (quick ? 1 : 2); bf16++)
                check_case(&p, arch, k, with_aux, backends[b], threads, bf16);
    }
    free_problem(&p);
}

START_TEST(relu_pairs)
{
    every_backend(SAE_ARCH_RELU, 0, false, false);
}
END_TEST

START_TEST(jumprelu_pairs_and_band)
{
    every_backend(SAE_ARCH_JUMPRELU, 0, false, false);
}
END_TEST

START_TEST(topk_selection)
{
    every_backend(SAE_ARCH_TOPK, 7, false, false);
    every_backend(SAE_ARCH_TOPK, 40, true, false);
}
END_TEST

START_TEST(batchtopk_selection)
{
    every_backend(SAE_ARCH_BATCHTOPK, 6, false, false);
    every_backend(SAE_ARCH_BATCHTOPK, 3, true, false);
}
END_TEST

START_TEST(quick_every_arch)
{
    every_backend(SAE_ARCH_RELU, 0, false, true);
    every_backend(SAE_ARCH_JUMPRELU, 0, false, true);
    every_backend(SAE_ARCH_TOPK, 7, true, true);
    every_backend(SAE_ARCH_BATCHTOPK, 6, true, true);
}
END_TEST

/* BatchTopK's streams start at a floor below the previous pass's K-th value:
 * a batch much like the last passes once, one whose K-th value fell below
 * the floor (lower biases) is passed again without it, and the floor then
 * follows it; all exact. */
START_TEST(batchtopk_floor_from_the_previous_pass)
{
    problem near = make_problem(600, 48, 300, 0.0, 5), low = make_problem(600, 48, 300, 2.0, 5);
    sae_pool *pool;
    ck_assert_int_eq(sae__pool_create(&pool, 2), SAE_OK);
    sae_gemm_team *team;
    ck_assert_int_eq(sae__gemm_team_create(&team, SAE_GEMM_AUTO, 2), SAE_OK);
    sae_fused_encoder *enc;
    ck_assert_int_eq(sae__fused_encoder_create(&enc, near.d_sae, 2, sae__gemm_team_backend(team)),
                     SAE_OK);
    check_pass(enc, team, pool, &near, SAE_ARCH_BATCHTOPK, 6, true, false); /* sets the floor */
    uint64_t repasses = sae__fused_encoder_batch_repasses(enc);
    check_pass(enc, team, pool, &near, SAE_ARCH_BATCHTOPK, 6, true, false);
    ck_assert_uint_eq(sae__fused_encoder_batch_repasses(enc), repasses);
    check_pass(enc, team, pool, &low, SAE_ARCH_BATCHTOPK, 6, true, false);
    ck_assert_uint_eq(sae__fused_encoder_batch_repasses(enc), repasses + 1);
    /* the floor follows: the same batch again, then the first one, pass once */
    check_pass(enc, team, pool, &low, SAE_ARCH_BATCHTOPK, 6, true, false);
    check_pass(enc, team, pool, &near, SAE_ARCH_BATCHTOPK, 6, true, false);
    ck_assert_uint_eq(sae__fused_encoder_batch_repasses(enc), repasses + 1);
    sae__fused_encoder_free(enc);
    sae__gemm_team_free(team);
    sae__pool_free(pool);
    free_problem(&near);
    free_problem(&low);
}
END_TEST

START_TEST(density_limit_stops_the_pass)
{
    problem p = make_problem(700, 32, 300, -5.0, 3); /* nearly every pre-activation > 0 */
    sae_pool *pool;
    ck_assert_int_eq(sae__pool_create(&pool, 2), SAE_OK);
    sae_gemm_team *team;
    ck_assert_int_eq(sae__gemm_team_create(&team, SAE_GEMM_AUTO, 2), SAE_OK);
    sae_fused_encoder *enc;
    ck_assert_int_eq(sae__fused_encoder_create(&enc, p.d_sae, 2, sae__gemm_team_backend(team)),
                     SAE_OK);
    sae_activation act = {.arch = SAE_ARCH_RELU, .d_sae = p.d_sae, .b_enc = p.b_enc,
                          .norms = p.norms};
    sae_fused_args args = {&act, p.d_in, p.n, p.xc, p.w_enc, NULL, NULL, 0.15};
    size_t cap = p.n * p.d_sae;
    sae_fused_out out = {calloc(p.n + 1, sizeof(size_t)), malloc(cap * sizeof(uint32_t)),
                          malloc(cap * sizeof(float)), cap, calloc(p.n, sizeof(double)),
                          calloc(p.n, sizeof(size_t)), NULL, NULL, NULL, 0, 0, 0.0f};
    ck_assert_int_eq(sae__encode_fused(enc, &args, team, pool, &out), SAE_FUSED_TOO_DENSE);
    args.max_density = 1.0; /* no limit: the same pass completes */
    ck_assert_int_eq(sae__encode_fused(enc, &args, team, pool, &out), SAE_OK);
    ck_assert_uint_gt(out.pairs, p.n * p.d_sae / 2);
    free(out.row_ptr), free(out.feat), free(out.fval), free(out.l1), free(out.active);
    sae__fused_encoder_free(enc);
    sae__gemm_team_free(team);
    sae__pool_free(pool);
    free_problem(&p);
}
END_TEST

static Suite *encode_fused_suite(void)
{
    Suite *s = suite_create("encode_fused");
    TCase *tc = tcase_create("quick");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, quick_every_arch);
    tcase_add_test(tc, density_limit_stops_the_pass);
    tcase_add_test(tc, batchtopk_floor_from_the_previous_pass);
    suite_add_tcase(s, tc);
    tc = tcase_create("sweep");
    tcase_set_tags(tc, "slow");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, relu_pairs);
    tcase_add_test(tc, jumprelu_pairs_and_band);
    tcase_add_test(tc, topk_selection);
    tcase_add_test(tc, batchtopk_selection);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(encode_fused_suite)
