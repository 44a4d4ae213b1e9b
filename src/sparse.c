/*
 * Sparse kernels: the step's decoder and backward pass over only the
 * (token, feature) pairs with f > 0, O(n * L0 * d_in) work instead of
 * O(n * d_sae * d_in).
 *
 * After the encoder (a dense SGEMM in backward.c), each block's features are
 * compressed to the active pairs of each token (CSR: feat, fval). Then:
 *
 *   token phase    x_hat_t = b_dec + sum_k f_k W_dec[i_k,:];  dL/dx_hat_t = (2/n)(x_hat_t - x_t)
 *   feature phase  per feature i, over its pairs k (CSC: tok, cfval, cgval):
 *                  g_k         = W_dec[i,:] . dL/dx_hat_{t_k} + (lambda/n) r_i   (dL/dpre)
 *                  dW_dec[i,:] = sum_k f_k dL/dx_hat_{t_k} + c_i W_dec[i,:]
 *                  dW_enc[:,i] = sum_k g_k xc_{t_k}
 *
 * Memory, not arithmetic, bounds these loops: every pair reads whole rows of
 * W_dec, dL/dx_hat or xc at random, and rows of d_in floats (3 KB at 768) map
 * onto few L2 cache sets. So each phase walks the columns in tiles, packing the
 * tile of the matrix it gathers from into a contiguous panel that stays in L2
 * (like a GEMM's packing), and keeps the output tile in registers. The dot
 * product g_k is accumulated tile by tile in the same pass that reads
 * dL/dx_hat for dW_dec, so those rows are read once.
 *
 * Every output (a token's row, a feature's row, a pair's g) is computed by one
 * thread in a fixed order, so results do not depend on the thread count. The
 * hot kernels have an AVX-512 version chosen at run time and a portable one.
 */
#include "internal.h"
#include "simd.h"

#include <math.h>
#include <string.h>

/* ---- portable kernels ------------------------------------------------------------ */

/* Where the tile kernels read row r of what they gather from: a packed panel
 * (ld = the tile width) or the matrix itself (ld = d_in, base at column j0).
 * Rows at or past `wrap` read row r - wrap of `high` (AuxK's rows n + t read
 * xc_t; a Matryoshka feature's rows t < n read its band's block of dL/dx_hat,
 * its AuxK rows n + t the AuxK block). */
typedef struct tile_rows {
    const float *base;
    size_t ld;
    size_t wrap;
    const float *high;
} tile_rows;

static inline const float *tile_row(const tile_rows *src, uint32_t r)
{
    return r < src->wrap ? src->base + r * src->ld : src->high + (r - src->wrap) * src->ld;
}

/* One token, one column tile of width w <= SAE_DEC_TILE:
 * out = scale * (base + sum_k val[k] row(idx[k]) - x); returns |out / scale|^2. */
static double decode_tile_portable(const tile_rows *src, const uint32_t *idx, const float *val,
                                   size_t nk, const float *base, const float *x, size_t w,
                                   float scale, float *out)
{
    float acc[SAE_DEC_TILE];
    for (size_t j = 0; j < w; j++)
        acc[j] = base[j];
    for (size_t k = 0; k < nk; k++) {
        const float *row = tile_row(src, idx[k]);
        for (size_t j = 0; j < w; j++)
            acc[j] += val[k] * row[j];
    }
    double l2 = 0.0;
    for (size_t j = 0; j < w; j++) {
        float e = acc[j] - x[j];
        l2 += (double)e * e;
        out[j] = e * scale;
    }
    return l2;
}

/* One feature, one column tile of width w <= SAE_FEAT_TILE of dW_dec:
 * gdec = c wrow + sum_k f[k] row(tok[k]), and g[k] += wrow . row(tok[k]).
 * Returns |gdec|^2. */
static double feature_dec_tile_portable(const tile_rows *src, const uint32_t *tok, const float *f,
                                        float *g, size_t nk, float c, const float *wrow,
                                        size_t w, float *gdec)
{
    float acc[SAE_FEAT_TILE];
    for (size_t j = 0; j < w; j++)
        acc[j] = c * wrow[j];
    for (size_t k = 0; k < nk; k++) {
        const float *row = tile_row(src, tok[k]);
        float dot = 0.0f;
        for (size_t j = 0; j < w; j++) {
            acc[j] += f[k] * row[j];
            dot += wrow[j] * row[j];
        }
        g[k] += dot;
    }
    double s = 0.0;
    for (size_t j = 0; j < w; j++) {
        gdec[j] = acc[j];
        s += (double)acc[j] * acc[j];
    }
    return s;
}

/* One feature, one column tile of dW_enc: genc = sum_k g[k] row(tok[k]).
 * Returns |genc|^2. */
static double feature_enc_tile_portable(const tile_rows *src, const uint32_t *tok, const float *g,
                                        size_t nk, size_t w, float *genc)
{
    float acc[SAE_FEAT_TILE] = {0};
    for (size_t k = 0; k < nk; k++) {
        const float *row = tile_row(src, tok[k]);
        for (size_t j = 0; j < w; j++)
            acc[j] += g[k] * row[j];
    }
    double s = 0.0;
    for (size_t j = 0; j < w; j++) {
        genc[j] = acc[j];
        s += (double)acc[j] * acc[j];
    }
    return s;
}

/* ---- AVX-512 kernels (same contracts) ---------------------------------------------- */
#ifdef SAE_HAVE_AVX512

/* sum of squares of a float vector, in double (large floats would overflow) */
SAE_AVX512 static inline __m512d sq_acc_pd(__m512 v, __m512d acc)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return _mm512_fmadd_pd(lo, lo, _mm512_fmadd_pd(hi, hi, acc));
}

SAE_AVX512 static double decode_tile_avx512(const tile_rows *src, const uint32_t *idx, const float *val,
                                        size_t nk, const float *base, const float *x, size_t w,
                                        float scale, float *out)
{
    const __mmask16 m0 = sae__lanes_below(w, 0), m1 = sae__lanes_below(w, 16);
    /* two accumulator pairs, for even and odd k, halve the FMA dependency chain */
    __m512 a0 = _mm512_maskz_loadu_ps(m0, base), a1 = _mm512_maskz_loadu_ps(m1, base + 16);
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + 2 <= nk; k += 2) {
        const float *r = tile_row(src, idx[k]), *q = tile_row(src, idx[k + 1]);
        __m512 v = _mm512_set1_ps(val[k]), u = _mm512_set1_ps(val[k + 1]);
        a0 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m0, r), a0);
        a1 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m1, r + 16), a1);
        b0 = _mm512_fmadd_ps(u, _mm512_maskz_loadu_ps(m0, q), b0);
        b1 = _mm512_fmadd_ps(u, _mm512_maskz_loadu_ps(m1, q + 16), b1);
    }
    if (k < nk) {
        const float *r = tile_row(src, idx[k]);
        __m512 v = _mm512_set1_ps(val[k]);
        a0 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m0, r), a0);
        a1 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m1, r + 16), a1);
    }
    __m512 e0 = _mm512_sub_ps(_mm512_add_ps(a0, b0), _mm512_maskz_loadu_ps(m0, x));
    __m512 e1 = _mm512_sub_ps(_mm512_add_ps(a1, b1), _mm512_maskz_loadu_ps(m1, x + 16));
    e0 = _mm512_maskz_mov_ps(m0, e0);
    e1 = _mm512_maskz_mov_ps(m1, e1);
    __m512d sq = sq_acc_pd(e1, sq_acc_pd(e0, _mm512_setzero_pd()));
    const __m512 sv = _mm512_set1_ps(scale);
    _mm512_mask_storeu_ps(out, m0, _mm512_mul_ps(e0, sv));
    _mm512_mask_storeu_ps(out + 16, m1, _mm512_mul_ps(e1, sv));
    return _mm512_reduce_add_pd(sq);
}

SAE_AVX512 static double feature_dec_tile_avx512(const tile_rows *src, const uint32_t *tok,
                                             const float *f, float *g, size_t nk, float c,
                                             const float *wrow, size_t w, float *gdec)
{
    enum { V = SAE_FEAT_TILE / 16 };
    __mmask16 mk[V];
    __m512 wv[V], acc[V];
    const __m512 cv = _mm512_set1_ps(c);
    for (int u = 0; u < V; u++) {
        mk[u] = sae__lanes_below(w, 16 * (size_t)u);
        wv[u] = _mm512_maskz_loadu_ps(mk[u], wrow + 16 * u);
        acc[u] = _mm512_mul_ps(cv, wv[u]);
    }
    for (size_t k = 0; k < nk; k++) {
        const float *r = tile_row(src, tok[k]);
        __m512 fv = _mm512_set1_ps(f[k]);
        __m512 d0 = _mm512_maskz_loadu_ps(mk[0], r), d1 = _mm512_maskz_loadu_ps(mk[1], r + 16);
        __m512 d2 = _mm512_maskz_loadu_ps(mk[2], r + 32);
        __m512 d3 = _mm512_maskz_loadu_ps(mk[3], r + 48);
        acc[0] = _mm512_fmadd_ps(fv, d0, acc[0]);
        acc[1] = _mm512_fmadd_ps(fv, d1, acc[1]);
        acc[2] = _mm512_fmadd_ps(fv, d2, acc[2]);
        acc[3] = _mm512_fmadd_ps(fv, d3, acc[3]);
        __m512 dot = _mm512_fmadd_ps(wv[1], d1, _mm512_mul_ps(wv[0], d0));
        dot = _mm512_fmadd_ps(wv[3], d3, _mm512_fmadd_ps(wv[2], d2, dot));
        g[k] += _mm512_reduce_add_ps(dot);
    }
    __m512d sq = _mm512_setzero_pd();
    for (int u = 0; u < V; u++) {
        _mm512_mask_storeu_ps(gdec + 16 * u, mk[u], acc[u]);
        sq = sq_acc_pd(acc[u], sq); /* lanes past w are 0: masked loads */
    }
    return _mm512_reduce_add_pd(sq);
}

SAE_AVX512 static double feature_enc_tile_avx512(const tile_rows *src, const uint32_t *tok,
                                             const float *g, size_t nk, size_t w, float *genc)
{
    enum { V = SAE_FEAT_TILE / 16 };
    __m512 acc[V], acc2[V];
    __mmask16 mk[V];
    for (int u = 0; u < V; u++) {
        acc[u] = acc2[u] = _mm512_setzero_ps();
        mk[u] = sae__lanes_below(w, 16 * (size_t)u);
    }
    size_t k = 0;
    for (; k + 2 <= nk; k += 2) {
        const float *r = tile_row(src, tok[k]), *q = tile_row(src, tok[k + 1]);
        __m512 gv = _mm512_set1_ps(g[k]), hv = _mm512_set1_ps(g[k + 1]);
        for (int u = 0; u < V; u++) {
            acc[u] = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(mk[u], r + 16 * u), acc[u]);
            acc2[u] = _mm512_fmadd_ps(hv, _mm512_maskz_loadu_ps(mk[u], q + 16 * u), acc2[u]);
        }
    }
    if (k < nk) {
        const float *r = tile_row(src, tok[k]);
        __m512 gv = _mm512_set1_ps(g[k]);
        for (int u = 0; u < V; u++)
            acc[u] = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(mk[u], r + 16 * u), acc[u]);
    }
    __m512d sq = _mm512_setzero_pd();
    for (int u = 0; u < V; u++) {
        __m512 v = _mm512_add_ps(acc[u], acc2[u]);
        _mm512_mask_storeu_ps(genc + 16 * u, mk[u], v);
        sq = sq_acc_pd(v, sq);
    }
    return _mm512_reduce_add_pd(sq);
}
#endif /* SAE_HAVE_AVX512 */

/* ---- dispatch ------------------------------------------------------------------------ */

typedef struct sparse_kernels {
    double (*decode_tile)(const tile_rows *, const uint32_t *, const float *, size_t,
                          const float *, const float *, size_t, float, float *);
    double (*feature_dec_tile)(const tile_rows *, const uint32_t *, const float *, float *, size_t,
                               float, const float *, size_t, float *);
    double (*feature_enc_tile)(const tile_rows *, const uint32_t *, const float *, size_t, size_t,
                               float *);
} sparse_kernels;

#ifdef SAE_TESTING
int sae__test_portable_kernels = 0;
#endif

static sparse_kernels pick_kernels(void)
{
#ifdef SAE_HAVE_AVX512
    if (sae__use_avx512())
        return (sparse_kernels){decode_tile_avx512, feature_dec_tile_avx512,
                                feature_enc_tile_avx512};
#endif
    return (sparse_kernels){decode_tile_portable, feature_dec_tile_portable,
                            feature_enc_tile_portable};
}

/* ---- phases ------------------------------------------------------------------------------ */

/* Compress a block into the CSR from its flags: the pairs whose bit is set in
 * mask (or band, for JumpReLU). Reading the flags (1 bit per feature) and
 * only the flagged values costs far less than scanning f again. */
typedef struct compress_task {
    sae_workspace *ws;
    size_t t0;
    bool with_band;
} compress_task;

static void compress_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const compress_task *c = ctx;
    sae_workspace *ws = c->ws;
    const size_t d_sae = ws->d_sae, chunks = ws->mask_chunks;
    for (size_t t = begin; t < end; t++) {
        size_t at = ws->row_ptr[c->t0 + t];
        const float *f = ws->f + t * d_sae;
        const uint16_t *mask = ws->mask + t * chunks, *band = ws->band + t * chunks;
        for (size_t k = 0; k < chunks; k++) {
            unsigned bits = c->with_band ? (unsigned)(mask[k] | band[k]) : mask[k];
            while (bits) {
                size_t i = 16 * k + (size_t)__builtin_ctz(bits);
                ws->feat[at] = (uint32_t)i;
                ws->fval[at] = f[i];
                at++;
                bits &= bits - 1;
            }
        }
    }
}

void sae__sparse_compress_block(sae_workspace *ws, size_t t0, size_t rows, bool with_band,
                                sae_pool *pool)
{
    compress_task c = {ws, t0, with_band};
    sae__parallel_for(pool, rows, compress_range, &c);
}

/* The calling thread's share of items [0, count) when item i costs
 * (ptr[i + 1] - ptr[i]) + per_item: contiguous ranges of equal work. */
static void balanced_range(const size_t *ptr, size_t count, size_t per_item, int tid, int n_threads,
                           size_t *begin, size_t *end)
{
    const size_t me = (size_t)tid, nt = (size_t)n_threads;
    double total = (double)(ptr[count] - ptr[0]) + (double)per_item * (double)count;
    size_t bounds[2];
    for (int side = 0; side < 2; side++) {
        double target = total * (double)(me + (size_t)side) / (double)nt;
        size_t lo = 0, hi = count; /* first i whose prefix work reaches target */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            double work = (double)(ptr[mid] - ptr[0]) + (double)per_item * (double)mid;
            if (work < target)
                lo = mid + 1;
            else
                hi = mid;
        }
        bounds[side] = lo;
    }
    *begin = bounds[0];
    *end = me + 1 == nt ? count : bounds[1];
}

/* Packing one panel shared by all threads, each packing a share of its rows
 * (row r reads source row r mod src_rows: AuxK's rows n + t read row t). */
typedef struct pack_task {
    const float *src;
    size_t ld, src_rows, j0, w, tile;
    float *panel;
} pack_task;

static void pack_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const pack_task *pk = ctx;
    for (size_t r = begin; r < end; r++) {
        float *dst = pk->panel + r * pk->tile;
        memcpy(dst, pk->src + (r % pk->src_rows) * pk->ld + pk->j0, pk->w * sizeof(float));
        for (size_t j = pk->w; j < pk->tile; j++)
            dst[j] = 0.0f;
    }
}

static void pack_shared(sae_pool *pool, const float *src, size_t ld, size_t src_rows, size_t rows,
                        size_t j0, size_t w, size_t tile, float *panel)
{
    pack_task pk = {src, ld, src_rows, j0, w, tile, panel};
    sae__parallel_for(pool, rows, pack_range, &pk);
}

/* Per-item overhead of a token or a feature in a tile, in pair-equivalents
 * (loads and stores of its own rows), for balancing. */
#define SAE_ITEM_COST 2

typedef struct token_task {
    const sae_model *m;
    const float *target, *base;
    size_t t0, count;
    float scale;
    sae_workspace *ws;
    bool direct;
    size_t j0;     /* packed panels: the tile this run decodes */
} token_task;

/* Pairs per token (over the whole step) up to which the phases read rows in
 * place instead of packing panels: packing costs a pass over the matrix per
 * thread and tile whatever the density, and pays off only when many pairs
 * reuse each panel. */
#define SAE_DIRECT_MAX_PAIRS 64

#ifdef SAE_TESTING
int sae__test_sparse_layout = 0;
#endif

/* Rows in place for tokens [t0, t0 + count)? */
static bool use_direct(const sae_workspace *ws, size_t t0, size_t count)
{
#ifdef SAE_TESTING
    if (sae__test_sparse_layout)
        return sae__test_sparse_layout == 1;
#endif
    return ws->row_ptr[t0 + count] - ws->row_ptr[t0] <= (size_t)SAE_DIRECT_MAX_PAIRS * count;
}

/* Row t's target from column j0 (no target: zeros). */
static inline const float *target_at(const token_task *k, size_t t, size_t j0)
{
    return k->target ? k->target + (t - k->t0) * k->m->d_out + j0 : k->ws->zeros + j0;
}

static void token_run(void *ctx, int tid, int n_threads)
{
    const token_task *k = ctx;
    const sparse_kernels kern = pick_kernels();
    sae_workspace *ws = k->ws;
    const size_t d_out = k->m->d_out, t0 = k->t0;
    const float *w_dec = sae__w_dec(k->m);
    size_t begin, end;
    balanced_range(ws->row_ptr + t0, k->count, SAE_ITEM_COST, tid, n_threads, &begin, &end);
    begin += t0;
    end += t0;
    if (k->direct) {
        for (size_t t = begin; t < end; t++)
            ws->l2_tok[t] = 0.0;
        /* token by token: its rows of W_dec stay in cache across the tiles */
        for (size_t t = begin; t < end; t++) {
            size_t p0 = ws->row_ptr[t], nk = ws->row_ptr[t + 1] - p0;
            for (size_t j0 = 0; j0 < d_out; j0 += SAE_DEC_TILE) {
                size_t w = d_out - j0 < SAE_DEC_TILE ? d_out - j0 : SAE_DEC_TILE;
                tile_rows src = {w_dec + j0, d_out, SIZE_MAX, NULL};
                float *out = ws->dxh + t * d_out + j0;
                ws->l2_tok[t] += kern.decode_tile(&src, ws->feat + p0, ws->fval + p0, nk,
                                                  k->base ? k->base + j0 : out,
                                                  target_at(k, t, j0), w,
                                                  k->scale, out);
            }
        }
        return;
    }
    /* packed panels: one tile, already packed by all threads (k->j0) */
    tile_rows src = {ws->w_panel, SAE_DEC_TILE, SIZE_MAX, NULL};
    size_t j0 = k->j0, w = d_out - j0 < SAE_DEC_TILE ? d_out - j0 : SAE_DEC_TILE;
    for (size_t t = begin; t < end; t++) {
        size_t p0 = ws->row_ptr[t], nk = ws->row_ptr[t + 1] - p0;
        float *out = ws->dxh + t * d_out + j0;
        ws->l2_tok[t] += kern.decode_tile(&src, ws->feat + p0, ws->fval + p0, nk,
                                          k->base ? k->base + j0 : out,
                                          target_at(k, t, j0), w, k->scale, out);
    }
}

void sae__sparse_token_phase(const sae_model *m, const float *target, size_t t0, size_t count,
                             const float *base, float scale, sae_workspace *ws, sae_pool *pool)
{
    token_task k = {m, target, base, t0, count, scale, ws, false, 0};
    k.direct = use_direct(ws, t0, count);
    if (k.direct) {
        sae__pool_run(pool, token_run, &k);
        return;
    }
    /* packed panels, shared: all threads pack a tile of W_dec, then decode it */
    for (size_t t = t0; t < t0 + count; t++)
        ws->l2_tok[t] = 0.0;
    for (k.j0 = 0; k.j0 < m->d_out; k.j0 += SAE_DEC_TILE) {
        size_t w = m->d_out - k.j0 < SAE_DEC_TILE ? m->d_out - k.j0 : SAE_DEC_TILE;
        pack_shared(pool, sae__w_dec(m), m->d_out, m->d_sae, m->d_sae, k.j0, w, SAE_DEC_TILE,
                    ws->w_panel);
        sae__pool_run(pool, token_run, &k);
    }
}

/* Build the feature-major copy of the pairs. Threads take contiguous token
 * ranges, count per feature, then scatter at offsets that keep every feature's
 * pairs in token order, whatever the thread count. */
typedef struct transpose_task {
    sae_workspace *ws;
    size_t n_rows;
} transpose_task;

static void transpose_count(void *ctx, int tid, int n_threads)
{
    const sae_workspace *ws = ((transpose_task *)ctx)->ws;
    const size_t n_tokens = ((transpose_task *)ctx)->n_rows;
    size_t t_begin, t_end;
    sae__share(n_tokens, tid, n_threads, &t_begin, &t_end);
    size_t *hist = ws->hist + (size_t)tid * ws->d_sae;
    memset(hist, 0, ws->d_sae * sizeof(size_t));
    for (size_t p = ws->row_ptr[t_begin]; p < ws->row_ptr[t_end]; p++)
        hist[ws->feat[p]]++;
}

static void transpose_scatter(void *ctx, int tid, int n_threads)
{
    sae_workspace *ws = ((transpose_task *)ctx)->ws;
    const size_t n_tokens = ((transpose_task *)ctx)->n_rows;
    size_t t_begin, t_end;
    sae__share(n_tokens, tid, n_threads, &t_begin, &t_end);
    size_t *next = ws->hist + (size_t)tid * ws->d_sae;
    for (size_t t = t_begin; t < t_end; t++)
        for (size_t p = ws->row_ptr[t]; p < ws->row_ptr[t + 1]; p++) {
            size_t q = next[ws->feat[p]]++;
            ws->tok[q] = (uint32_t)t;
            ws->cfval[q] = ws->fval[p];
        }
}

/* Build the feature-major copy of the pairs. Threads take contiguous token
 * ranges, count per feature, then scatter at offsets that keep every feature's
 * pairs in token order, whatever the thread count. */
static void transpose_pairs(sae_workspace *ws, size_t n_tokens, sae_pool *pool)
{
    const size_t d_sae = ws->d_sae, nt = (size_t)sae__pool_threads(pool);
    transpose_task ctx = {ws, n_tokens};
    sae__pool_run(pool, transpose_count, &ctx);
    size_t at = 0;
    for (size_t i = 0; i < d_sae; i++) {
        ws->col_ptr[i] = at;
        for (size_t h = 0; h < nt; h++) {
            size_t count = ws->hist[h * d_sae + i];
            ws->hist[h * d_sae + i] = at;
            at += count;
        }
    }
    ws->col_ptr[d_sae] = at;
    sae__pool_run(pool, transpose_scatter, &ctx);
}

enum feature_stage { FEATURE_PREPARE, FEATURE_DEC, FEATURE_SETTLE, FEATURE_ENC };

typedef struct feature_task {
    const sae_model *m;
    const sae_step_config *cfg;
    size_t n_tokens, n_rows;
    sae_workspace *ws;
    float *grad;
    bool direct;
    enum feature_stage stage; /* packed panels: what this run does */
    size_t j0;                /* ... and on which tile */
} feature_task;

/* What every feature's pass shares. */
typedef struct feature_ctx {
    const sae_model *m;
    const sae_step_config *cfg;
    sparse_kernels kern;
    sae_workspace *ws;
    size_t n_tokens;
    double l1_scale, inv_eps, l0_term;
    float half_band;
    bool jump;
    float *g_w_dec, *g_w_enc;
    float *c; /* d_sae norm-term coefficients */
} feature_ctx;

/* Feature i before its tiles: statistics over the real tokens' pairs (AuxK's
 * rows come after them in each column), the norm term's coefficient, and the
 * L1 part of each pair's g. */
static void feature_prepare(const feature_ctx *fc, size_t i)
{
    sae_workspace *ws = fc->ws;
    size_t k0 = ws->col_ptr[i], k1 = ws->col_ptr[i + 1], k_main = k0;
    double f_sum = 0.0;
    for (; k_main < k1 && ws->tok[k_main] < fc->n_tokens; k_main++)
        f_sum += ws->cfval[k_main];
    fc->c[i] = (ws->norms[i] > 0.0f && f_sum != 0.0)
                   ? (float)(fc->l1_scale * f_sum / ws->norms[i]) : 0.0f;
    float g_l1 = (float)fc->l1_scale * ws->norms[i];
    for (size_t k = k0; k < k1; k++)
        ws->cgval[k] = k < k_main ? g_l1 : 0.0f;
    ws->f_sum[i] = f_sum;
    ws->last_fired[i] = 0;
    for (size_t k = k_main; k-- > k0;)
        if (ws->cfval[k] > 0.0f) { /* JumpReLU's band pairs did not fire */
            ws->last_fired[i] = (uint64_t)ws->tok[k] + 1;
            break;
        }
    ws->row_sumsq[i] = 0.0;
}

/* Feature i between its two passes, once every g is complete: JumpReLU's
 * threshold estimators over the band (then dL/dpre only where it fired), and
 * dL/db_enc. */
static void feature_settle(const feature_ctx *fc, size_t i)
{
    sae_workspace *ws = fc->ws;
    size_t k0 = ws->col_ptr[i], k1 = ws->col_ptr[i + 1];
    if (fc->jump) {
        double theta_grad = 0.0;
        const float theta = ws->theta[i];
        for (size_t k = k0; k < k1; k++) {
            float f = ws->cfval[k];
            if (f == 0.0f || f - theta < fc->half_band)
                theta_grad += -(double)theta * fc->inv_eps * ws->cgval[k] + fc->l0_term;
            if (f == 0.0f)
                ws->cgval[k] = 0.0f;
        }
        ws->theta_grad[i] = theta_grad;
    }
    double g_sum = 0.0;
    for (size_t k = k0; k < k1; k++)
        g_sum += ws->cgval[k];
    ws->g_b_enc[i] = g_sum;
}

/* The rows of dL/dx_hat feature i's pairs read, in grad (ws->dxh from column
 * j0, or its packed panel; ld its row stride): a Matryoshka feature's tokens
 * read the block of its band (matryoshka.c), its AuxK rows block 1. */
static tile_rows grad_rows(const feature_ctx *fc, size_t i, const float *grad, size_t ld)
{
    size_t block = sae__matryoshka_block(fc->m, i), n = fc->n_tokens;
    if (block == 0)
        return (tile_rows){grad, ld, SIZE_MAX, NULL};
    return (tile_rows){grad + block * n * ld, ld, n, grad + n * ld};
}

static void feature_dec(const feature_ctx *fc, size_t i, const float *grad, size_t ld, size_t j0,
                        size_t w)
{
    sae_workspace *ws = fc->ws;
    const size_t d_out = fc->m->d_out;
    size_t k0 = ws->col_ptr[i], nk = ws->col_ptr[i + 1] - k0;
    const tile_rows rows = grad_rows(fc, i, grad, ld), *src = &rows;
    ws->row_sumsq[i] += fc->kern.feature_dec_tile(src, ws->tok + k0, ws->cfval + k0,
                                                  ws->cgval + k0, nk, fc->c[i],
                                                  sae__w_dec(fc->m) + i * d_out + j0, w,
                                                  fc->g_w_dec + i * d_out + j0);
}

static void feature_enc(const feature_ctx *fc, size_t i, const tile_rows *src, size_t j0,
                        size_t w)
{
    sae_workspace *ws = fc->ws;
    const size_t d_in = fc->m->d_in;
    size_t k0 = ws->col_ptr[i], nk = ws->col_ptr[i + 1] - k0;
    ws->row_sumsq[i] += fc->kern.feature_enc_tile(src, ws->tok + k0, ws->cgval + k0, nk, w,
                                                  fc->g_w_enc + i * d_in + j0);
}

static void feature_run(void *ctx, int tid, int n_threads)
{
    const feature_task *task = ctx;
    const sae_model *m = task->m;
    const sae_step_config *cfg = task->cfg;
    sae_workspace *ws = task->ws;
    const size_t d_in = m->d_in, d_out = m->d_out, d_sae = m->d_sae;
    const size_t n_tokens = task->n_tokens;
    /* the tokens the loss averages over (a data-parallel step's global batch) */
    const double n_loss = (double)(cfg->loss_tokens ? cfg->loss_tokens : n_tokens);
    const bool jump = m->arch == SAE_ARCH_JUMPRELU;
    feature_ctx fc = {
        .m = m, .cfg = cfg, .kern = pick_kernels(), .ws = ws, .n_tokens = n_tokens,
        /* the L1 terms belong to the ReLU SAE only */
        .l1_scale = m->arch == SAE_ARCH_RELU ? cfg->lambda / n_loss : 0.0,
        .inv_eps = jump ? 1.0 / cfg->bandwidth : 0.0,
        .l0_term = jump ? -cfg->lambda / (n_loss * cfg->bandwidth) : 0.0,
        .half_band = (float)(0.5 * cfg->bandwidth), .jump = jump,
        .g_w_dec = task->grad + m->lay.w_dec, .g_w_enc = task->grad + m->lay.w_enc_t,
        .c = ws->norm_coeff,
    };
    size_t begin, end;
    balanced_range(ws->col_ptr, d_sae, SAE_ITEM_COST, tid, n_threads, &begin, &end);
    if (task->direct) {
        /* feature by feature: its tokens' rows stay in cache across the tiles */
        for (size_t i = begin; i < end; i++) {
            feature_prepare(&fc, i);
            for (size_t j0 = 0; j0 < d_out; j0 += SAE_FEAT_TILE)
                feature_dec(&fc, i, ws->dxh + j0, d_out, j0,
                            d_out - j0 < SAE_FEAT_TILE ? d_out - j0 : SAE_FEAT_TILE);
            feature_settle(&fc, i);
            for (size_t j0 = 0; j0 < d_in; j0 += SAE_FEAT_TILE) {
                tile_rows src = {ws->xc + j0, d_in, n_tokens, ws->xc + j0};
                feature_enc(&fc, i, &src, j0, d_in - j0 < SAE_FEAT_TILE ? d_in - j0 : SAE_FEAT_TILE);
            }
        }
        return;
    }
    /* packed panels: one stage of the shared schedule (task->stage) */
    tile_rows src = {ws->t_panel, SAE_FEAT_TILE, SIZE_MAX, NULL};
    const size_t width = task->stage == FEATURE_DEC ? d_out : d_in; /* of the tile's matrix */
    size_t j0 = task->j0, w = width - j0 < SAE_FEAT_TILE ? width - j0 : SAE_FEAT_TILE;
    for (size_t i = begin; i < end; i++) {
        switch (task->stage) {
        case FEATURE_PREPARE: feature_prepare(&fc, i); break;
        case FEATURE_DEC: feature_dec(&fc, i, ws->t_panel, SAE_FEAT_TILE, j0, w); break;
        case FEATURE_SETTLE: feature_settle(&fc, i); break;
        default: feature_enc(&fc, i, &src, j0, w); break;
        }
    }
}

void sae__sparse_feature_phase(const sae_model *m, const sae_step_config *cfg, size_t n_tokens,
                               size_t n_rows, sae_workspace *ws, float *grad)
{
    transpose_pairs(ws, n_rows, cfg->pool);
    feature_task task = {m, cfg, n_tokens, n_rows, ws, grad, use_direct(ws, 0, n_rows),
                         FEATURE_PREPARE, 0};
    sae__pool_run(cfg->pool, feature_run, &task);
    if (task.direct)
        return;
    /* packed panels, shared: all threads pack a tile, then work on it */
    const size_t d_in = m->d_in, d_out = m->d_out;
    /* the rows of dL/dx_hat: one per row of the CSR, or Matryoshka's blocks */
    const size_t matryoshka_rows = sae__matryoshka_rows(m, n_tokens);
    const size_t dxh_rows = matryoshka_rows ? matryoshka_rows : n_rows;
    task.stage = FEATURE_DEC;
    for (task.j0 = 0; task.j0 < d_out; task.j0 += SAE_FEAT_TILE) {
        size_t w = d_out - task.j0 < SAE_FEAT_TILE ? d_out - task.j0 : SAE_FEAT_TILE;
        pack_shared(cfg->pool, ws->dxh, d_out, dxh_rows, dxh_rows, task.j0, w, SAE_FEAT_TILE,
                    ws->t_panel);
        sae__pool_run(cfg->pool, feature_run, &task);
    }
    task.stage = FEATURE_SETTLE;
    sae__pool_run(cfg->pool, feature_run, &task);
    task.stage = FEATURE_ENC;
    for (task.j0 = 0; task.j0 < d_in; task.j0 += SAE_FEAT_TILE) {
        size_t w = d_in - task.j0 < SAE_FEAT_TILE ? d_in - task.j0 : SAE_FEAT_TILE;
        pack_shared(cfg->pool, ws->xc, d_in, n_tokens, n_rows, task.j0, w, SAE_FEAT_TILE,
                    ws->t_panel);
        sae__pool_run(cfg->pool, feature_run, &task);
    }
}
