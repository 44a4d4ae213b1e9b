/*
 * GEMM backends: the dense matrix products of the library, on CBLAS (always
 * there) or on oneDNN (when libsae was built with it: SAE_HAVE_ONEDNN).
 *
 *   C (m x n) = alpha op(A) op(B) + beta C        row-major, op = transpose or not
 *
 * in float32, and with bfloat16 A and B (float32 products accumulated in
 * float32, float32 C) for the mixed-precision encoder.
 *
 * CBLAS is the baseline: every build has it and every call can fall back to
 * it. oneDNN runs the same products as matmul primitives, kernels it picks by
 * instruction set (AVX-512, AVX512_BF16, AMX...) rather than by CPU model,
 * and has a native bf16 x bf16 -> f32 product that CBLAS lacks. Creating a
 * primitive costs far more than small products, so a context keeps the last
 * few it made, keyed by everything that shapes them.
 *
 * Without a native bf16 product (a CBLAS context, or a oneDNN that cannot make
 * one on this CPU) the bf16 product widens its inputs to float32 in panels and
 * calls SGEMM: the same numbers (every product of two bf16 values is exact in
 * float32), at float32 speed.
 *
 * A context is used by one thread at a time (oneDNN's stream is not
 * thread-safe); an optimizer owns one, read-only callers make their own.
 */
#include "internal.h"

#include <cblas.h>
#include <string.h>

#ifdef SAE_HAVE_ONEDNN
#include <dlfcn.h>
#endif

#ifdef SAE_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>

/* Matmul primitives kept per context: a step uses a handful of shapes. */
#define SAE_GEMM_PLANS 16

typedef struct gemm_key {
    int bf16;                       /* 1: bf16 inputs */
    int trans_a, trans_b;
    size_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
} gemm_key;

typedef struct gemm_plan {
    gemm_key key;
    bool used;
    bool failed;                    /* oneDNN could not make it: use the fallback */
    uint64_t last_use;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
} gemm_plan;
#endif

struct sae_gemm_ctx {
    int backend; /* SAE_GEMM_CBLAS or SAE_GEMM_ONEDNN: what this context runs */
#ifdef SAE_HAVE_ONEDNN
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    gemm_plan plans[SAE_GEMM_PLANS];
    uint64_t clock;
#endif
    /* the bf16 fallback's float32 panels */
    float *wide_a, *wide_b;
    size_t wide_a_cap, wide_b_cap; /* floats */
};

bool sae__gemm_available(int backend)
{
    switch (backend) {
    case SAE_GEMM_AUTO:
    case SAE_GEMM_CBLAS: return true;
#ifdef SAE_HAVE_ONEDNN
    case SAE_GEMM_ONEDNN: return true;
#endif
    default: return false;
    }
}

int sae__gemm_resolve(int backend)
{
    if (backend != SAE_GEMM_AUTO)
        return backend;
#ifdef SAE_HAVE_ONEDNN
    return SAE_GEMM_ONEDNN;
#else
    return SAE_GEMM_CBLAS;
#endif
}

const char *sae__gemm_name(int backend)
{
    switch (backend) {
    case SAE_GEMM_AUTO: return "auto";
    case SAE_GEMM_CBLAS: return "cblas";
    case SAE_GEMM_ONEDNN: return "onednn";
    default: return "unknown";
    }
}

int sae_gemm_backend(int gemm)
{
    if (gemm != SAE_GEMM_AUTO && gemm != SAE_GEMM_CBLAS && gemm != SAE_GEMM_ONEDNN)
        return sae__fail(SAE_E_INVALID_ARG, "sae_gemm_backend: %d is not an enum sae_gemm", gemm);
    return sae__gemm_resolve(sae__gemm_available(gemm) ? gemm : SAE_GEMM_CBLAS);
}

int sae__gemm_backend(const sae_gemm_ctx *g)
{
    return g ? g->backend : SAE_GEMM_CBLAS;
}

/* ---- oneDNN ------------------------------------------------------------------- */
#ifdef SAE_HAVE_ONEDNN

static void plan_release(gemm_plan *p)
{
    if (p->prim)
        dnnl_primitive_destroy(p->prim);
    if (p->a)
        dnnl_memory_destroy(p->a);
    if (p->b)
        dnnl_memory_destroy(p->b);
    if (p->c)
        dnnl_memory_destroy(p->c);
    memset(p, 0, sizeof *p);
}

static bool key_equal(const gemm_key *x, const gemm_key *y)
{
    return x->bf16 == y->bf16 && x->trans_a == y->trans_a && x->trans_b == y->trans_b &&
           x->m == y->m && x->n == y->n && x->k == y->k && x->lda == y->lda &&
           x->ldb == y->ldb && x->ldc == y->ldc &&
           memcmp(&x->alpha, &y->alpha, sizeof x->alpha) == 0 &&
           memcmp(&x->beta, &y->beta, sizeof x->beta) == 0;
}

/* Make the matmul primitive of a key: row-major A, B, C described by their
 * strides (a transposed operand swaps them), alpha as an output scale, beta as
 * a sum post-op. Returns false (leaving p empty) if oneDNN cannot. */
static bool plan_make(sae_gemm_ctx *g, gemm_plan *p, const gemm_key *key)
{
    const dnnl_data_type_t in = key->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t a_dims = {(dnnl_dim_t)key->m, (dnnl_dim_t)key->k};
    dnnl_dims_t b_dims = {(dnnl_dim_t)key->k, (dnnl_dim_t)key->n};
    dnnl_dims_t c_dims = {(dnnl_dim_t)key->m, (dnnl_dim_t)key->n};
    dnnl_dims_t a_strides = {(dnnl_dim_t)key->lda, 1}, b_strides = {(dnnl_dim_t)key->ldb, 1};
    dnnl_dims_t c_strides = {(dnnl_dim_t)key->ldc, 1};
    if (key->trans_a) {
        a_strides[0] = 1;
        a_strides[1] = (dnnl_dim_t)key->lda;
    }
    if (key->trans_b) {
        b_strides[0] = 1;
        b_strides[1] = (dnnl_dim_t)key->ldb;
    }
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_matmul_desc_t op;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    bool ok = dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, in, a_strides) == dnnl_success &&
              dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, in, b_strides) == dnnl_success &&
              dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_strides) ==
                  dnnl_success &&
              dnnl_matmul_desc_init(&op, &a_md, &b_md, NULL, &c_md) == dnnl_success &&
              dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && key->alpha != 1.0f)
        ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha) == dnnl_success;
    if (ok && key->beta != 0.0f)
        ok = dnnl_post_ops_create(&ops) == dnnl_success &&
             dnnl_post_ops_append_sum(ops, key->beta) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success;
    ok = ok && dnnl_primitive_desc_create(&pd, &op, attr, g->engine, NULL) == dnnl_success;
    memset(p, 0, sizeof *p);
    ok = ok && dnnl_primitive_create(&p->prim, pd) == dnnl_success &&
         dnnl_memory_create(&p->a, &a_md, g->engine, DNNL_MEMORY_NONE) == dnnl_success &&
         dnnl_memory_create(&p->b, &b_md, g->engine, DNNL_MEMORY_NONE) == dnnl_success &&
         dnnl_memory_create(&p->c, &c_md, g->engine, DNNL_MEMORY_NONE) == dnnl_success;
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (ops)
        dnnl_post_ops_destroy(ops);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (!ok)
        plan_release(p);
    return ok;
}

/* The plan for key: cached, or made in the least recently used slot. NULL if
 * oneDNN cannot make it (remembered, so a failing shape is not retried). */
static gemm_plan *plan_get(sae_gemm_ctx *g, const gemm_key *key)
{
    gemm_plan *victim = &g->plans[0];
    g->clock++;
    for (int i = 0; i < SAE_GEMM_PLANS; i++) {
        gemm_plan *p = &g->plans[i];
        if (p->used && key_equal(&p->key, key)) {
            p->last_use = g->clock;
            return p->failed ? NULL : p;
        }
        if (!p->used || (victim->used && p->last_use < victim->last_use))
            victim = p;
    }
    plan_release(victim);
    bool made = plan_make(g, victim, key);
    victim->key = *key;
    victim->used = true;
    victim->failed = !made;
    victim->last_use = g->clock;
    return made ? victim : NULL;
}

static bool onednn_run(sae_gemm_ctx *g, const gemm_key *key, const void *a, const void *b, float *c)
{
    gemm_plan *p = plan_get(g, key);
    if (!p)
        return false;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, p->a}, {DNNL_ARG_WEIGHTS, p->b}, {DNNL_ARG_DST, p->c}};
    return dnnl_memory_set_data_handle(p->a, (void *)a) == dnnl_success &&
           dnnl_memory_set_data_handle(p->b, (void *)b) == dnnl_success &&
           dnnl_memory_set_data_handle(p->c, c) == dnnl_success &&
           dnnl_primitive_execute(p->prim, g->stream, 3, args) == dnnl_success &&
           dnnl_stream_wait(g->stream) == dnnl_success;
}
#endif /* SAE_HAVE_ONEDNN */

/* ---- contexts -------------------------------------------------------------------- */

int sae__gemm_create(sae_gemm_ctx **out, int backend)
{
    *out = NULL;
    if (!sae__gemm_available(backend))
        return SAE_E_INVALID_ARG;
    sae_gemm_ctx *g = sae__alloc_zero(sizeof *g);
    if (!g)
        return SAE_E_NOMEM;
    g->backend = sae__gemm_resolve(backend);
#ifdef SAE_HAVE_ONEDNN
    if (g->backend == SAE_GEMM_ONEDNN &&
        (dnnl_engine_create(&g->engine, dnnl_cpu, 0) != dnnl_success ||
         dnnl_stream_create(&g->stream, g->engine, dnnl_stream_default_flags) != dnnl_success)) {
        sae__gemm_free(g); /* the engine, if it was made */
        return SAE_E_NOMEM;
    }
#endif
    *out = g;
    return SAE_OK;
}

void sae__gemm_free(sae_gemm_ctx *g)
{
    if (!g)
        return;
#ifdef SAE_HAVE_ONEDNN
    for (int i = 0; i < SAE_GEMM_PLANS; i++)
        plan_release(&g->plans[i]);
    if (g->stream)
        dnnl_stream_destroy(g->stream);
    if (g->engine)
        dnnl_engine_destroy(g->engine);
#endif
    sae__free(g->wide_a);
    sae__free(g->wide_b);
    sae__free(g);
}

/* ---- float32 ------------------------------------------------------------------------ */

/* C = beta C: a product over k = 0 terms (CBLAS need not touch A or B then). */
static void scale_c(size_t m, size_t n, float beta, float *c, size_t ldc)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
}

static void cblas_run(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                      const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                      size_t ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a, (int)lda,
                b, (int)ldb, beta, c, (int)ldc);
}

void sae__gemm_f32(sae_gemm_ctx *g, bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                   float alpha, const float *a, size_t lda, const float *b, size_t ldb, float beta,
                   float *c, size_t ldc)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) {
        scale_c(m, n, beta, c, ldc);
        return;
    }
#ifdef SAE_HAVE_ONEDNN
    if (g && g->backend == SAE_GEMM_ONEDNN) {
        gemm_key key = {0, trans_a, trans_b, m, n, k, lda, ldb, ldc, alpha, beta};
        if (onednn_run(g, &key, a, b, c))
            return;
    }
#else
    (void)g;
#endif
    cblas_run(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* ---- bfloat16 inputs ------------------------------------------------------------------ */

/* Columns of C per panel of the fallback: B's panel is k x SAE_GEMM_PANEL floats. */
#define SAE_GEMM_PANEL 256

static int wide_reserve(float **buf, size_t *cap, size_t floats)
{
    if (floats <= *cap)
        return SAE_OK;
    size_t bytes;
    if (!sae__mul(floats, sizeof(float), &bytes))
        return SAE_E_NOMEM;
    float *fresh = sae__alloc(bytes);
    if (!fresh)
        return SAE_E_NOMEM;
    sae__free(*buf);
    *buf = fresh;
    *cap = floats;
    return SAE_OK;
}

/* rows x cols of a bf16 matrix (leading dimension ld) into a packed float32 one */
static void widen(float *dst, const uint16_t *src, size_t rows, size_t cols, size_t ld)
{
    for (size_t r = 0; r < rows; r++)
        sae__bf16_to_f32(dst + r * cols, src + r * ld, cols);
}

static int bf16_fallback(sae_gemm_ctx *g, bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                         float alpha, const uint16_t *a, size_t lda, const uint16_t *b, size_t ldb,
                         float beta, float *c, size_t ldc)
{
    /* A whole, as stored (m x k, or k x m when transposed) */
    size_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k, a_floats, b_floats;
    size_t panel = n < SAE_GEMM_PANEL ? n : SAE_GEMM_PANEL;
    if (!sae__mul(a_rows, a_cols, &a_floats) || !sae__mul(k, panel, &b_floats))
        return SAE_E_NOMEM;
    int rc = wide_reserve(&g->wide_a, &g->wide_a_cap, a_floats);
    if (rc == SAE_OK)
        rc = wide_reserve(&g->wide_b, &g->wide_b_cap, b_floats);
    if (rc != SAE_OK)
        return rc;
    widen(g->wide_a, a, a_rows, a_cols, lda);
    for (size_t j0 = 0; j0 < n; j0 += panel) {
        size_t w = n - j0 < panel ? n - j0 : panel;
        /* B's panel for columns j0 .. j0 + w of C: k x w, or w x k when transposed */
        if (trans_b)
            widen(g->wide_b, b + j0 * ldb, w, k, ldb);
        else
            widen(g->wide_b, b + j0, k, w, ldb);
        cblas_run(trans_a, trans_b, m, w, k, alpha, g->wide_a, a_cols, g->wide_b,
                  trans_b ? k : w, beta, c + j0, ldc);
    }
    return SAE_OK;
}

int sae__gemm_bf16(sae_gemm_ctx *g, bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                   float alpha, const uint16_t *a, size_t lda, const uint16_t *b, size_t ldb,
                   float beta, float *c, size_t ldc)
{
    if (m == 0 || n == 0)
        return SAE_OK;
    if (k == 0) {
        scale_c(m, n, beta, c, ldc);
        return SAE_OK;
    }
#ifdef SAE_HAVE_ONEDNN
    if (g->backend == SAE_GEMM_ONEDNN) {
        gemm_key key = {1, trans_a, trans_b, m, n, k, lda, ldb, ldc, alpha, beta};
        if (onednn_run(g, &key, a, b, c))
            return SAE_OK;
    }
#endif
    return bf16_fallback(g, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

bool sae__gemm_bf16_native(sae_gemm_ctx *g)
{
#ifdef SAE_HAVE_ONEDNN
    if (g->backend != SAE_GEMM_ONEDNN)
        return false;
    /* whether oneDNN makes a bf16 matmul here (a tiny one; cached) */
    gemm_key key = {1, 0, 1, 16, 16, 16, 16, 16, 16, 1.0f, 0.0f};
    return plan_get(g, &key) != NULL;
#else
    (void)g;
    return false;
#endif
}

/* ---- products over the pool's threads --------------------------------------------- *
 * oneDNN runs its parallel loops on OpenMP, whose idle workers spin for
 * milliseconds after each product: on a machine with as many cores as the
 * step has threads they take a core from the step's own threads (see
 * threads.c on why the library has its own pool). So within a step every
 * oneDNN product runs serially on the pool's threads, each on its share of
 * rows of C (or, in the fused encoder, on its own tiles), with OpenMP held to
 * one thread on that thread: no OpenMP team is ever started. A pool's worker
 * is held once, for its lifetime (only oneDNN's products run OpenMP there);
 * the caller's thread for the duration of each product, then restored.
 * CBLAS products run on the calling thread and the BLAS's own threads. */

struct sae_gemm_team {
    int backend;
    int n;                       /* members, one per pool thread */
    sae_gemm_ctx **member;
    void (*omp_set_num_threads)(int); /* the OpenMP runtime's, when loaded */
    int (*omp_get_max_threads)(void);
};

int sae__gemm_team_create(sae_gemm_team **out, int backend, int n_threads)
{
    *out = NULL;
    if (!sae__gemm_available(backend) || n_threads < 1)
        return SAE_E_INVALID_ARG;
    sae_gemm_team *t = sae__alloc_zero(sizeof *t);
    if (!t)
        return SAE_E_NOMEM;
    t->backend = sae__gemm_resolve(backend);
    t->n = n_threads;
    t->member = sae__alloc_zero((size_t)n_threads * sizeof *t->member);
    int rc = t->member ? SAE_OK : SAE_E_NOMEM;
    for (int i = 0; rc == SAE_OK && i < n_threads; i++)
        rc = sae__gemm_create(&t->member[i], t->backend);
    if (rc != SAE_OK) {
        sae__gemm_team_free(t);
        return rc;
    }
#ifdef SAE_HAVE_ONEDNN
    /* oneDNN's OpenMP runtime is loaded with it; nothing to do without one */
    *(void **)&t->omp_set_num_threads = dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    *(void **)&t->omp_get_max_threads = dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    if (!t->omp_set_num_threads || !t->omp_get_max_threads)
        t->omp_set_num_threads = NULL;
#endif
    *out = t;
    return SAE_OK;
}

void sae__gemm_team_free(sae_gemm_team *t)
{
    if (!t)
        return;
    for (int i = 0; t->member && i < t->n; i++)
        sae__gemm_free(t->member[i]);
    sae__free(t->member);
    sae__free(t);
}

int sae__gemm_team_backend(const sae_gemm_team *t)
{
    return t ? t->backend : SAE_GEMM_CBLAS;
}

int sae__gemm_team_size(const sae_gemm_team *t)
{
    return t ? t->n : 0;
}

sae_gemm_ctx *sae__gemm_team_member(sae_gemm_team *t, int tid)
{
    return t && tid < t->n ? t->member[tid] : NULL;
}

/* Whether this thread, a pool worker, has OpenMP held to one thread already
 * (one OpenMP runtime per process: whatever team set it). */
static _Thread_local bool omp_held;

int sae__gemm_serial_begin(const sae_gemm_team *t)
{
    if (!t || t->backend != SAE_GEMM_ONEDNN || !t->omp_set_num_threads)
        return 0;
    if (sae__pool_worker()) { /* the library's own thread: once, for good */
        if (!omp_held) {
            t->omp_set_num_threads(1);
            omp_held = true;
        }
        return 0;
    }
    /* the caller's thread: its setting is restored after the product */
    int saved = t->omp_get_max_threads();
    if (saved == 1)
        return 0;
    t->omp_set_num_threads(1);
    return saved;
}

void sae__gemm_serial_end(const sae_gemm_team *t, int saved)
{
    if (saved > 0 && t->omp_set_num_threads)
        t->omp_set_num_threads(saved);
}

/* The rows of C are cut into SPLIT_CHUNKS chunks of whole 16-row groups,
 * whatever the thread count, and thread p computes chunks p, p + T, ...: each
 * chunk is one product of a shape that depends on m alone, so oneDNN picks
 * the same kernel and sums in the same order at any thread count (sae.h:
 * results do not depend on SAE_OPT_THREADS). Four chunks balance 1, 2 and 4
 * threads. */
#define SPLIT_CHUNKS 4

typedef struct split_task {
    sae_gemm_team *team;
    bool trans_a, trans_b, bf16;
    size_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const void *a, *b;
    float *c;
    int rc[SAE_MAX_THREADS];
} split_task;

static void split_run(void *ctx, int tid, int n_threads)
{
    split_task *s = ctx;
    size_t groups = (s->m + 15) / 16;
    sae_gemm_ctx *g = sae__gemm_team_member(s->team, tid);
    size_t esize = s->bf16 ? sizeof(uint16_t) : sizeof(float);
    s->rc[tid] = SAE_OK;
    int saved = sae__gemm_serial_begin(s->team);
    for (int chunk = tid; chunk < SPLIT_CHUNKS && s->rc[tid] == SAE_OK; chunk += n_threads) {
        size_t begin, end;
        sae__share(groups, chunk, SPLIT_CHUNKS, &begin, &end);
        begin *= 16;
        end = end * 16 < s->m ? end * 16 : s->m;
        if (begin >= end)
            continue;
        /* rows [begin, end) of op(A): rows of A, or columns of A stored k x m */
        const char *a = (const char *)s->a + (s->trans_a ? begin : begin * s->lda) * esize;
        float *c = s->c + begin * s->ldc;
        if (s->bf16)
            s->rc[tid] = sae__gemm_bf16(g, s->trans_a, s->trans_b, end - begin, s->n, s->k,
                                        s->alpha, (const uint16_t *)(const void *)a, s->lda, s->b,
                                        s->ldb, s->beta, c, s->ldc);
        else
            sae__gemm_f32(g, s->trans_a, s->trans_b, end - begin, s->n, s->k, s->alpha,
                          (const float *)(const void *)a, s->lda, s->b, s->ldb, s->beta, c,
                          s->ldc);
    }
    sae__gemm_serial_end(s->team, saved);
}

static int split(sae_gemm_team *t, sae_pool *pool, split_task *s)
{
    sae__pool_run(pool, split_run, s);
    for (int i = 0; i < sae__pool_threads(pool); i++)
        if (s->rc[i] != SAE_OK)
            return s->rc[i];
    (void)t;
    return SAE_OK;
}

void sae__gemm_f32_team(sae_gemm_team *t, sae_pool *pool, bool trans_a, bool trans_b, size_t m,
                        size_t n, size_t k, float alpha, const float *a, size_t lda,
                        const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    if (!t || t->backend != SAE_GEMM_ONEDNN || sae__pool_threads(pool) > t->n) {
        sae__gemm_f32(t ? t->member[0] : NULL, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                      beta, c, ldc);
        return;
    }
    split_task s = {t, trans_a, trans_b, false, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c, {0}};
    split(t, pool, &s);
}

int sae__gemm_bf16_team(sae_gemm_team *t, sae_pool *pool, bool trans_a, bool trans_b, size_t m,
                        size_t n, size_t k, float alpha, const uint16_t *a, size_t lda,
                        const uint16_t *b, size_t ldb, float beta, float *c, size_t ldc)
{
    if (t->backend != SAE_GEMM_ONEDNN || sae__pool_threads(pool) > t->n)
        return sae__gemm_bf16(t->member[0], trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                              c, ldc);
    split_task s = {t, trans_a, trans_b, true, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c, {0}};
    return split(t, pool, &s);
}

/* ---- the library's callers ------------------------------------------------------------ */

/* Below this many multiply-adds a product runs on CBLAS when it is not split
 * over a pool: oneDNN generates a kernel for each new shape (tens of ms the
 * first time), which a small product of a read-only call does not repay. */
#define SAE_GEMM_ONEDNN_MIN_MACS 16777216.0

static sae_gemm_ctx *plain_context(const sae_gemm_use *u, size_t m, size_t n, size_t k)
{
    if (!u || !u->g)
        return NULL;
    if (u->g->backend == SAE_GEMM_ONEDNN && (double)m * (double)n * (double)k < SAE_GEMM_ONEDNN_MIN_MACS)
        return NULL;
    return u->g;
}

void sae__gemm_use_f32(const sae_gemm_use *u, sae_pool *pool, bool trans_a, bool trans_b, size_t m,
                       size_t n, size_t k, float alpha, const float *a, size_t lda, const float *b,
                       size_t ldb, float beta, float *c, size_t ldc)
{
    if (u && u->team)
        sae__gemm_f32_team(u->team, pool, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                           c, ldc);
    else
        sae__gemm_f32(plain_context(u, m, n, k), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                      beta, c, ldc);
}

int sae__gemm_use_bf16(const sae_gemm_use *u, sae_pool *pool, bool trans_a, bool trans_b, size_t m,
                       size_t n, size_t k, float alpha, const uint16_t *a, size_t lda,
                       const uint16_t *b, size_t ldb, float beta, float *c, size_t ldc)
{
    if (u->team)
        return sae__gemm_bf16_team(u->team, pool, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                                   beta, c, ldc);
    return sae__gemm_bf16(u->g, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
