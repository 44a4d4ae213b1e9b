/*
 * Matryoshka BatchTopK (Bussmann et al. 2025, arXiv 2503.17547): the nested
 * reconstruction losses of a training step, on the sparse path.
 *
 * With level widths w_0 < ... < w_{M-1} = d_sae, band l = features
 * [w_{l-1}, w_l) (w_{-1} = 0), one BatchTopK selection f over the full width
 * (backward.c, as BatchTopK), n tokens and target x:
 *
 *   x_hat_l = b_dec + sum_{i < w_l} f_i W_dec[i,:]        l = 0 .. M-1
 *   L       = sum_l (1/n) sum_t ||x_hat_l,t - x_t||^2 + auxk_coeff AuxK(x - x_hat_{M-1})
 *   g_l,t   = (2/n)(x_hat_l,t - x_t),   G_l,t = sum_{m >= l} g_m,t
 *   dL/df_ti = W_dec[i,:] . G_band(i),t,   dL/dW_dec[i,:] = sum_t f_ti G_band(i),t
 *   dL/db_dec = sum_t G_0,t - W_enc dL/db_enc
 *
 * (SAELens 6.16.3+ and the paper: the unweighted sum of the levels' MSEs;
 * dictionary_learning weights each by 1/M and averages, the same direction.)
 *
 * No level is decoded on its own: each token's pairs are stored in ascending
 * feature order (the compression walks the flags in order), so x_hat_l is a
 * prefix sum of the token's pairs, taken once, with a row written at each
 * band boundary. The feature phase (sparse.c) then reads, for each feature,
 * the rows of its band's G: the band is constant over a feature's column.
 *
 * The rows of ws->dxh, in blocks of n (one row per token each), for M levels:
 *   block 0        G_0 (what b_dec's gradient sums; before the suffix sums:
 *                  g_{M-1}, the full width's, which AuxK reads as BatchTopK's)
 *   block 1        AuxK's rows, as for BatchTopK
 *   block l + 1    G_l, l = 1 .. M-1 (before the suffix sums: g_{l-1})
 * and ws->l2_tok the same blocks' squared errors (blocks 2 .. M: the inner
 * levels 0 .. M-2, block 0 the full width). (M + 1) n rows of d_out floats:
 * M - 1 more than BatchTopK with AuxK.
 */
#include "parallel.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

size_t sae__matryoshka_rows(const sae_model *m, size_t n_tokens)
{
    return m->arch == SAE_ARCH_MATRYOSHKA ? (m->n_levels + 1) * n_tokens : 0;
}

/* The block of dxh rows that level l's g_l occupies before the suffix sums. */
static size_t level_block(size_t levels, size_t l)
{
    return l + 1 == levels ? 0 : l + 2;
}

size_t sae__matryoshka_block(const sae_model *m, size_t feature)
{
    if (m->arch != SAE_ARCH_MATRYOSHKA)
        return 0;
    feature += m->shard_begin; /* a shard's feature: its index in the whole model */
    if (feature < m->widths[0])
        return 0;
    /* the band: the first level whose width exceeds the feature (binary search) */
    size_t lo = 1, hi = m->n_levels - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (feature < m->widths[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo + 1;
}

int sae__matryoshka_check_batch(const char *fn, const sae_model *m, size_t n_tokens)
{
    /* the levels are decoded over the sparse path's pairs, whose token
     * indexes are 32 bits wide (with AuxK's second row per token) */
    if (m->arch == SAE_ARCH_MATRYOSHKA && n_tokens > UINT32_MAX / 2)
        return sae__fail(SAE_E_INVALID_ARG, "%s: a Matryoshka step takes at most %u tokens "
                         "(n_tokens is %zu)", fn, UINT32_MAX / 2, n_tokens);
    return SAE_OK;
}

/* ---- the token phase: every level's reconstruction and its error --------------- */

typedef struct levels_task {
    const sae_model *m;
    const float *target; /* n x d_out; NULL: only the levels' (partial) sums */
    const float *base;   /* what every level starts from: b_dec, or a shard's zeros;
                          * NULL: the levels are already summed, only their errors */
    size_t n_tokens;
    float scale;         /* 2 / n over the loss's tokens */
    sae_workspace *ws;
} levels_task;

/* acc += v row, d floats (vectorised by the compiler) */
static void add_scaled_row(float *restrict acc, float v, const float *restrict row, size_t d)
{
    for (size_t j = 0; j < d; j++)
        acc[j] += v * row[j];
}

static void levels_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const levels_task *k = ctx;
    const sae_model *m = k->m;
    sae_workspace *ws = k->ws;
    const size_t d_out = m->d_out, n = k->n_tokens, levels = m->n_levels;
    const float *w_dec = sae__w_dec(m);
    /* a shard's pairs hold its own feature indexes: compare with the widths
     * less its first feature (a width at or below it bounds none of them) */
    size_t bound[SAE_MAX_LEVELS];
    for (size_t l = 0; l < levels; l++)
        bound[l] = m->widths[l] > m->shard_begin ? m->widths[l] - m->shard_begin : 0;
    for (size_t t = begin; t < end && k->base; t++) {
        /* x_hat of each level: the previous level's plus the band's pairs */
        const float *prev = k->base;
        size_t p = ws->row_ptr[t], p_end = ws->row_ptr[t + 1];
        for (size_t l = 0; l < levels; l++) {
            float *row = ws->dxh + (level_block(levels, l) * n + t) * d_out;
            memcpy(row, prev, d_out * sizeof(float));
            for (; p < p_end && ws->feat[p] < bound[l]; p++)
                add_scaled_row(row, ws->fval[p], w_dec + (size_t)ws->feat[p] * d_out, d_out);
            prev = row;
        }
    }
    for (size_t t = begin; t < end && k->target; t++) {
        /* then each level's error, its squared norm and g_l = scale * error */
        const float *x = k->target + t * d_out;
        for (size_t l = 0; l < levels; l++) {
            size_t block = level_block(levels, l);
            float *row = ws->dxh + (block * n + t) * d_out;
            double l2 = 0.0;
            for (size_t j = 0; j < d_out; j++) {
                float e = row[j] - x[j];
                l2 += (double)e * e;
                row[j] = e * k->scale;
            }
            ws->l2_tok[block * n + t] = l2;
        }
    }
}

void sae__matryoshka_decode(const sae_model *m, const float *target, size_t n_tokens,
                            float scale, sae_workspace *ws, sae_pool *pool)
{
    levels_task k = {m, target, sae__b_dec(m), n_tokens, scale, ws};
    sae__parallel_for(pool, n_tokens, levels_range, &k);
}

/* Feature shards: each shard sums its pairs into every level (b_dec on rank
 * 0 only), the levels are summed over the shards (parallel.c: the full
 * width's block and the inner levels' blocks, (M) n d_out floats), and every
 * rank takes the errors of the same sums. A rank that failed before joins
 * the exchanges without decoding. */
int sae__matryoshka_decode_shards(const sae_model *m, sae_par_step *ps, const float *target,
                                  size_t n_tokens, float scale, sae_workspace *ws, sae_pool *pool)
{
    const size_t levels = m->n_levels, rows = n_tokens * m->d_out;
    if (ps->status == SAE_OK) {
        levels_task k = {m, NULL, ps->features->rank == 0 ? sae__b_dec(m) : ws->zeros,
                         n_tokens, scale, ws};
        sae__parallel_for(pool, n_tokens, levels_range, &k);
    }
    /* block 0 (the full width), then blocks 2 .. M (the inner levels) */
    int rc = sae__par_reconstruct_levels(ps, ws->dxh, rows, ws->dxh + 2 * rows,
                                         (levels - 1) * rows);
    if (rc != SAE_OK)
        return rc;
    levels_task k = {m, target, NULL, n_tokens, scale, ws};
    sae__parallel_for(pool, n_tokens, levels_range, &k);
    return SAE_OK;
}

/* ---- the suffix sums G_l = sum_{m >= l} g_m, in place ---------------------------- */

static void suffix_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const levels_task *k = ctx;
    const sae_model *m = k->m;
    const size_t d_out = m->d_out, n = k->n_tokens, levels = m->n_levels;
    float *dxh = k->ws->dxh;
    for (size_t t = begin; t < end; t++) {
        /* block 0 holds g_{M-1} and then the running sum; block l + 1 holds
         * g_{l-1} and becomes G_l, while the running sum moves down a level */
        float *restrict run = dxh + t * d_out;
        for (size_t l = levels - 1; l >= 1; l--) {
            float *restrict cell = dxh + ((l + 1) * n + t) * d_out;
            for (size_t j = 0; j < d_out; j++) {
                float below = cell[j];
                cell[j] = run[j];
                run[j] += below;
            }
        }
    }
}

void sae__matryoshka_suffix_sums(const sae_model *m, size_t n_tokens, sae_workspace *ws,
                                 sae_pool *pool)
{
    if (m->n_levels < 2)
        return; /* one level: g_0 is G_0 */
    levels_task k = {.m = m, .n_tokens = n_tokens, .ws = ws};
    sae__parallel_for(pool, n_tokens, suffix_range, &k);
}

double sae__matryoshka_inner_l2(const sae_model *m, size_t n_tokens, const sae_workspace *ws)
{
    double sum = 0.0;
    for (size_t l = 0; l + 1 < m->n_levels; l++)
        for (size_t t = 0; t < n_tokens; t++)
            sum += ws->l2_tok[level_block(m->n_levels, l) * n_tokens + t];
    return sum;
}

/* ---- sae_loss_levels: each level's l2 at inference --------------------------------- */

int sae_loss_levels(const sae_model *m, const float *x, size_t n_tokens, double *l2, size_t count)
{
    static const char fn[] = "sae_loss_levels";
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: m is NULL", fn);
    if (m->arch != SAE_ARCH_MATRYOSHKA)
        return sae__fail(SAE_E_INVALID_ARG, "%s: the model is not a Matryoshka SAE", fn);
    if (!l2)
        return sae__fail(SAE_E_INVALID_ARG, "%s: l2 is NULL", fn);
    int rc = sae__check_whole(fn, m);
    if (rc != SAE_OK)
        return rc;
    if (count != m->n_levels)
        return sae__fail(SAE_E_INVALID_ARG, "%s: count is %zu, the model has %zu levels", fn,
                         count, m->n_levels);
    if ((rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in",
                              sizeof(float))) != SAE_OK ||
        (rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in)) != SAE_OK)
        return rc;
    sae_forward fw;
    if ((rc = sae__forward_init(&fw, m, sae__block_size(n_tokens),
                                SAE_FORWARD_F | SAE_FORWARD_X_HAT)) != SAE_OK)
        return sae__fail_context(rc, "%s", fn);
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    double sums[SAE_MAX_LEVELS] = {0};
    for (size_t t0 = 0; t0 < n_tokens; t0 += fw.block) {
        size_t rows = sae__block_rows(n_tokens, t0, fw.block);
        const float *xb = x + t0 * d_in;
        sae__forward_encode(&fw, xb, rows, fw.f, NULL);
        /* x_hat grows band by band: b_dec, then each band's features added */
        for (size_t t = 0; t < rows; t++)
            memcpy(fw.x_hat + t * d_in, sae__b_dec(m), d_in * sizeof(float));
        size_t lo = 0;
        for (size_t l = 0; l < m->n_levels; lo = m->widths[l++]) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)d_in,
                        (int)(m->widths[l] - lo), 1.0f, fw.f + lo, (int)d_sae,
                        sae__w_dec(m) + lo * d_in, (int)d_in, 1.0f, fw.x_hat, (int)d_in);
            for (size_t k = 0; k < rows * d_in; k++) {
                double e = (double)fw.x_hat[k] - xb[k];
                sums[l] += e * e;
            }
        }
    }
    sae__forward_free(&fw);
    for (size_t l = 0; l < count; l++)
        if (!isfinite(sums[l]))
            return sae__fail(SAE_E_NONFINITE, "%s: level %zu's error is not finite (the model's "
                             "weights overflow on this input)", fn, l);
    for (size_t l = 0; l < count; l++)
        l2[l] = sums[l] / (double)n_tokens;
    return SAE_OK;
}

uint64_t sae__matryoshka_widths_hash(const sae_model *m)
{
    if (m->arch != SAE_ARCH_MATRYOSHKA)
        return 0;
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a over the widths' values */
    for (size_t l = 0; l < m->n_levels; l++)
        for (int b = 0; b < 64; b += 8) {
            h ^= (uint64_t)m->widths[l] >> b & 0xffu;
            h *= 0x100000001b3u;
        }
    return h;
}
