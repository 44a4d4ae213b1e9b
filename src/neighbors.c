/*
 * Rows compared by their cosine similarity: each feature's nearest features
 * by decoder direction (sae_decoder_neighbors), and each row of one
 * dictionary's best match among the rows of another (sae_max_cosine, the
 * mean max cosine similarity's terms). One pass serves both: the cosines of
 * a block of A's rows against every row of B, a product by CBLAS, each row
 * reduced (to its k best, or its best) before the next block, so memory
 * stays O(block x n_b).
 */
#include "internal.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>

/* Cosine rows per block: 16 MB of floats. */
#define COSINE_BLOCK_FLOATS ((size_t)1 << 22)

/* The rows of a (n_a x d) against the rows of b (n_b x d), norms given:
 * row(ctx, i, cos) receives cos[j] = cos(a_i, b_j) for j < n_b (0 when
 * either row is zero), i in increasing order. */
typedef struct cosine_pass {
    const float *a, *b;
    const float *norm_a, *norm_b; /* n_a, n_b: the rows' norms */
    size_t n_a, n_b, d;
    void (*row)(void *ctx, size_t i, const float *cos);
    void *ctx;
} cosine_pass;

static float largest(const float *v, size_t n)
{
    float max = 0.0f;
    for (size_t i = 0; i < n; i++)
        max = v[i] > max ? v[i] : max;
    return max;
}

/* SAE_E_NONFINITE when the dot products could overflow float, SAE_E_NOMEM;
 * nothing is passed to row() then. */
static int cosine_rows(const char *fn, const cosine_pass *p)
{
    const size_t n_b = p->n_b, d = p->d;
    /* |a_i . b_j| <= n_i n_j (Cauchy-Schwarz, every partial sum of the GEMM
     * too): finite when the largest norms' product is */
    double max_a = largest(p->norm_a, p->n_a), max_b = largest(p->norm_b, n_b);
    if (!(max_a * max_b < 0x1p126))
        return sae__fail(SAE_E_NONFINITE, "%s: rows' norms up to %g and %g: their dot products "
                         "are not finite in float", fn, max_a, max_b);
    size_t block = COSINE_BLOCK_FLOATS / n_b;
    block = block == 0 ? 1 : block > p->n_a ? p->n_a : block;
    float *cos = sae__alloc(block * n_b * sizeof(float)); /* <= max(2^22, n_b) floats */
    if (!cos)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for %zu x %zu cosines", fn, block, n_b);
    for (size_t i0 = 0; i0 < p->n_a; i0 += block) {
        size_t rows = p->n_a - i0 < block ? p->n_a - i0 : block;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n_b, (int)d, 1.0f,
                    p->a + i0 * d, (int)d, p->b, (int)d, 0.0f, cos, (int)n_b);
        for (size_t r = 0; r < rows; r++) {
            float *c = cos + r * n_b;
            const float ni = p->norm_a[i0 + r];
            for (size_t j = 0; j < n_b; j++) /* in double: the product of two tiny norms may
                                              * underflow float */
                c[j] = ni > 0.0f && p->norm_b[j] > 0.0f
                           ? (float)((double)c[j] / ((double)ni * p->norm_b[j]))
                           : 0.0f;
            p->row(p->ctx, i0 + r, c);
        }
    }
    sae__free(cos);
    return SAE_OK;
}

/* ---- sae_decoder_neighbors -------------------------------------------------- */

/* (c, j) ranks before (d, l): higher cosine, then lower index. */
static bool ranks_before(float c, uint32_t j, float d, uint32_t l)
{
    return c > d || (c == d && j < l);
}

typedef struct neighbors_task {
    size_t d_sae, k;
    uint32_t *idx;  /* d_sae x k */
    float *cosine;  /* d_sae x k, or NULL: cos_row */
    float *cos_row; /* k */
} neighbors_task;

/* The k best (cosine, index) pairs of feature i's cosines c (d_sae), itself
 * excluded, into its rows of idx and cosine, sorted best first. */
static void row_neighbors(void *ctx, size_t i, const float *c)
{
    const neighbors_task *t = ctx;
    const size_t k = t->k;
    uint32_t *idx = t->idx + i * k;
    float *cos = t->cosine ? t->cosine + i * k : t->cos_row;
    size_t len = 0;
    for (size_t j = 0; j < t->d_sae; j++) {
        if (j == i)
            continue;
        if (len == k && !ranks_before(c[j], (uint32_t)j, cos[k - 1], idx[k - 1]))
            continue;
        size_t pos = len < k ? len++ : k - 1;
        for (; pos > 0 && ranks_before(c[j], (uint32_t)j, cos[pos - 1], idx[pos - 1]); pos--) {
            cos[pos] = cos[pos - 1];
            idx[pos] = idx[pos - 1];
        }
        cos[pos] = c[j];
        idx[pos] = (uint32_t)j;
    }
}

int sae_decoder_neighbors(const sae_model *m, size_t k, uint32_t *idx, float *cosine,
                          size_t count)
{
    static const char fn[] = "sae_decoder_neighbors";
    if (!m || !idx)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : "idx");
    if (k == 0 || k >= m->d_sae)
        return sae__fail(SAE_E_INVALID_ARG, "%s: k = %zu is outside [1, d_sae - 1 = %zu]", fn, k,
                         m->d_sae - 1);
    if (count / k != m->d_sae || count % k != 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: count is %zu, not d_sae * k = %zu * %zu", fn,
                         count, m->d_sae, k);
    const size_t d_sae = m->d_sae;
    float *norms = sae__alloc(d_sae * sizeof(float));
    float *cos_row = sae__alloc(k * sizeof(float));
    int rc = SAE_OK;
    if (!norms || !cos_row) {
        rc = sae__fail(SAE_E_NOMEM, "%s: out of memory for %zu norms", fn, d_sae);
    } else {
        sae__decoder_row_norms(m, norms, NULL);
        neighbors_task task = {d_sae, k, idx, cosine, cos_row};
        /* W_dec's rows against themselves: d_out wide (a transcoder's output) */
        cosine_pass pass = {sae__w_dec(m), sae__w_dec(m), norms, norms, d_sae, d_sae, m->d_out,
                            row_neighbors, &task};
        rc = cosine_rows(fn, &pass);
    }
    sae__free(cos_row);
    sae__free(norms);
    return rc;
}

/* ---- sae_max_cosine ---------------------------------------------------------- */

typedef struct best_task {
    size_t n_b;
    float *cosine;   /* n_a, or NULL */
    uint32_t *index; /* n_a, or NULL */
} best_task;

/* Row i's largest cosine (the first, at the lowest index, on ties). */
static void row_best(void *ctx, size_t i, const float *c)
{
    const best_task *t = ctx;
    size_t best = 0;
    for (size_t j = 1; j < t->n_b; j++)
        best = c[j] > c[best] ? j : best;
    if (t->cosine)
        t->cosine[i] = c[best];
    if (t->index)
        t->index[i] = (uint32_t)best;
}

/* norms[i] = ||v_i|| of the n rows of v (n x d); SAE_E_NONFINITE naming the
 * first row whose norm is not finite in float. */
static int finite_row_norms(const char *fn, const char *name, const float *v, size_t n, size_t d,
                            float *norms)
{
    for (size_t i = 0; i < n; i++) {
        norms[i] = sae__row_norm(v + i * d, d);
        if (!isfinite(norms[i]))
            return sae__fail(SAE_E_NONFINITE, "%s: row %zu of %s holds NaN or Inf, or its norm "
                             "exceeds FLT_MAX", fn, i, name);
    }
    return SAE_OK;
}

int sae_max_cosine(const float *a, size_t n_a, const float *b, size_t n_b, size_t d,
                   float *cosine, uint32_t *index)
{
    static const char fn[] = "sae_max_cosine";
    if (!a || !b)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !a ? "a" : "b");
    if (!cosine && !index)
        return sae__fail(SAE_E_INVALID_ARG, "%s: cosine and index are both NULL", fn);
    if (n_a == 0 || n_b == 0 || d == 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is 0", fn,
                         n_a == 0 ? "n_a" : n_b == 0 ? "n_b" : "d");
    /* CBLAS takes int sizes; the indices are 32-bit */
    if (n_b > INT_MAX || d > INT_MAX)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s = %zu exceeds INT_MAX (CBLAS's sizes)", fn,
                         n_b > INT_MAX ? "n_b" : "d", n_b > INT_MAX ? n_b : d);
    if (n_a > SIZE_MAX / d / sizeof(float) || n_b > SIZE_MAX / d / sizeof(float))
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s * d * 4 overflows size_t", fn,
                         n_a > SIZE_MAX / d / sizeof(float) ? "n_a" : "n_b");
    float *norm_a = sae__alloc(n_a * sizeof(float)), *norm_b = sae__alloc(n_b * sizeof(float));
    int rc = norm_a && norm_b ? SAE_OK
                              : sae__fail(SAE_E_NOMEM, "%s: out of memory for %zu + %zu norms",
                                          fn, n_a, n_b);
    if (rc == SAE_OK)
        rc = finite_row_norms(fn, "a", a, n_a, d, norm_a);
    if (rc == SAE_OK)
        rc = finite_row_norms(fn, "b", b, n_b, d, norm_b);
    if (rc == SAE_OK) {
        best_task task = {n_b, cosine, index};
        cosine_pass pass = {a, b, norm_a, norm_b, n_a, n_b, d, row_best, &task};
        rc = cosine_rows(fn, &pass);
    }
    sae__free(norm_b);
    sae__free(norm_a);
    return rc;
}
