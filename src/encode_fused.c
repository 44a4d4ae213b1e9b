/*
 * The sparse path's encoder, fused: pre-activations are made a tile at a
 * time and turned into active pairs while the tile is in cache.
 *
 *   for each sub-block of SAE_FUSED_TILE_TOKENS tokens (a thread's own):
 *       for each tile of features:
 *           tile = xc[sub-block] W_enc[tile]^T      one GEMM of the tile's shape
 *           tile += b_enc; the activation           in place, in cache
 *           ReLU, JumpReLU: the tile's pairs and the L1 sums and active
 *                           counts, into a staging area
 *           TopK:           offered to each token's stream (select.c)
 *           BatchTopK:      offered to the thread's stream over the batch
 *           AuxK:           the dead features offered to each token's stream
 *       the sub-block's pairs, token by token, into the thread's arena
 *   the arenas, in token order, become the batch's CSR (row_ptr, feat, fval)
 *
 * so the n x d_sae pre-activations are never written to memory and read back,
 * BatchTopK needs O(n k) memory rather than O(n d_sae), and no selection
 * ever looks at a whole row.
 *
 * BatchTopK's streams start with a floor: a little below the previous pass's
 * K-th value (the batch's K-th value moves little from step to step). Without
 * it each thread's stream takes every positive value until it first fills
 * (2 n k entries), then compacts again and again while its bar climbs; with
 * it a thread keeps about its share of K entries and never compacts, and the
 * final selection runs on about K. The selection stays exact: when fewer
 * than K values reach the floor (the model moved, another batch), the pass
 * is made again without one (sae__fused_encoder_batch_repasses counts them). Every token belongs to one thread, which sees its
 * features in increasing order: sums, selections and pairs do not depend on
 * the thread count.
 *
 * On oneDNN each thread runs the GEMM of its own tiles, serially (see
 * gemm.c, "teams"); on CBLAS the calling thread runs one GEMM for the tiles
 * of all threads (the BLAS's own threads share it), then the threads process
 * their tiles: rounds of one sub-block per thread.
 *
 * ReLU and JumpReLU stop when a sub-block is denser than the caller allows
 * (the dense path is then faster): sae__encode_fused returns
 * SAE_FUSED_TOO_DENSE and the caller takes the dense path for the step.
 */
#include "internal.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SAE_HAVE_AVX512_ENCODE 1
#include <immintrin.h>
#endif

/* Features per tile: a tile of SAE_FUSED_TILE_TOKENS x this many floats fits in
 * L2 (512 KB) on oneDNN, where each thread makes its own; CBLAS makes the
 * tiles of all threads in one call, and wider tiles amortise that call. */
#define TILE_FEATURES_ONEDNN 256
#define TILE_FEATURES_CBLAS 2048

enum { THREAD_OK = 0, THREAD_TOO_DENSE = 1, THREAD_ARENA_FULL = 2 };

/* One thread's scratch. */
typedef struct enc_thread {
    float *tile;           /* SAE_FUSED_TILE_TOKENS x tile_features (in tiles) */
    /* a sub-block's pairs in (tile, token) order, and where each run starts */
    uint32_t *stage_feat;
    float *stage_val;
    size_t stage_cap;
    uint32_t *stage_start; /* n_tiles x SAE_FUSED_TILE_TOKENS */
    uint32_t *stage_count; /* n_tiles x SAE_FUSED_TILE_TOKENS */
    size_t staged;
    /* the thread's pairs, sub-block after sub-block, token by token */
    uint32_t *arena_feat;
    float *arena_val;
    size_t arena_cap, arena_used;
    /* BatchTopK: the thread's stream over the batch (in batch_all) */
    sae_batch_stream batch_stream;
    float *select_scratch; /* the per-token streams' compaction */
    int status;
    size_t need;           /* THREAD_ARENA_FULL: arena pairs needed */
} enc_thread;

struct sae_fused_encoder {
    int n_threads;
    size_t d_sae, tile_features, n_tiles;
    enc_thread *th;
    float *tiles;          /* the threads' tiles, one after the other: a CBLAS
                              round makes them all with one GEMM */
    size_t stage_cap;      /* pairs a thread's staging holds: the density limit */
    size_t tokens_cap;     /* tokens the per-token arrays hold */
    size_t *sub_offset;    /* per sub-block: its first pair in its thread's arena */
    size_t sub_cap;
    /* TopK's and AuxK's per-token streams */
    sae_topk_stream *topk, *aux;
    uint32_t *topk_idx, *aux_idx;
    float *topk_val, *aux_val;
    size_t topk_per_token, aux_per_token, select_cap;
    size_t batch_cap;      /* BatchTopK: entries per thread's stream */
    sae_batch_entry *batch_all;     /* n_threads x batch_cap: the streams */
    sae_batch_entry *batch_scratch; /* n_threads x (batch_cap + 1) + 1: their compactions,
                                       then the final selection's */
    size_t last_pairs;     /* the previous pass's pairs, to size the arenas */
    float batch_floor;     /* BatchTopK: the next pass's floor (0: none) */
    float batch_fraction;  /* the floor / the last K-th value */
    uint64_t batch_repasses;
};

/* The floor under the last K-th value: entries between the two cost a little
 * in the final selection; a floor above the next pass's K-th value costs a
 * pass. The fraction starts at BATCH_FLOOR_FRACTION, falls by a factor
 * BATCH_FLOOR_BACKOFF after each pass made again (a K-th value falling fast,
 * early in training), and climbs back by 1/BATCH_FLOOR_BACKOFF per pass that
 * was not. */
#define BATCH_FLOOR_FRACTION 0.85f
#define BATCH_FLOOR_BACKOFF 0.7f
#define BATCH_FLOOR_MIN 0.1f

uint64_t sae__fused_encoder_batch_repasses(const sae_fused_encoder *e)
{
    return e->batch_repasses;
}

/* ---- scratch ------------------------------------------------------------------------- */

static void thread_free(enc_thread *t)
{
    sae__free(t->stage_feat);
    sae__free(t->stage_val);
    sae__free(t->stage_start);
    sae__free(t->stage_count);
    sae__free(t->arena_feat);
    sae__free(t->arena_val);
    sae__free(t->select_scratch);
    memset(t, 0, sizeof *t);
}

void sae__fused_encoder_free(sae_fused_encoder *e)
{
    if (!e)
        return;
    for (int p = 0; e->th && p < e->n_threads; p++)
        thread_free(&e->th[p]);
    sae__free(e->th);
    sae__free(e->tiles);
    sae__free(e->sub_offset);
    sae__free(e->topk);
    sae__free(e->aux);
    sae__free(e->topk_idx);
    sae__free(e->aux_idx);
    sae__free(e->topk_val);
    sae__free(e->aux_val);
    sae__free(e->batch_all);
    sae__free(e->batch_scratch);
    sae__free(e);
}

/* *buf = a fresh allocation of count elements of size bytes (the old one freed),
 * unless it already holds them. */
static int grow(void **buf, size_t *cap, size_t count, size_t size)
{
    if (*buf && count <= *cap)
        return SAE_OK;
    size_t bytes;
    if (!sae__mul(count ? count : 1, size, &bytes))
        return SAE_E_NOMEM;
    void *fresh = sae__alloc(bytes);
    if (!fresh)
        return SAE_E_NOMEM;
    sae__free(*buf);
    *buf = fresh;
    *cap = count;
    return SAE_OK;
}

/* The same for a pair of arrays that share one capacity. */
static int grow_pair(uint32_t **feat, float **val, size_t *cap, size_t count)
{
    if (*feat && count <= *cap)
        return SAE_OK;
    size_t c1 = *cap, c2 = *cap;
    int rc = grow((void **)feat, &c1, count, sizeof(uint32_t));
    if (rc == SAE_OK)
        rc = grow((void **)val, &c2, count, sizeof(float));
    if (rc == SAE_OK)
        *cap = count;
    return rc;
}

int sae__fused_encoder_create(sae_fused_encoder **out, size_t d_sae, int n_threads, int backend)
{
    *out = NULL;
    sae_fused_encoder *e = sae__alloc_zero(sizeof *e);
    if (!e)
        return SAE_E_NOMEM;
    e->n_threads = n_threads;
    e->d_sae = d_sae;
    e->batch_fraction = BATCH_FLOOR_FRACTION;
    e->tile_features = backend == SAE_GEMM_ONEDNN ? TILE_FEATURES_ONEDNN
                       : d_sae < TILE_FEATURES_CBLAS ? d_sae : TILE_FEATURES_CBLAS;
    e->n_tiles = (d_sae + e->tile_features - 1) / e->tile_features;
    e->th = sae__alloc_zero((size_t)n_threads * sizeof *e->th);
    int rc = e->th ? SAE_OK : SAE_E_NOMEM;
    const size_t tile_floats = (size_t)SAE_FUSED_TILE_TOKENS * e->tile_features;
    const size_t runs = e->n_tiles * SAE_FUSED_TILE_TOKENS;
    size_t cap = 0, all_tiles;
    if (rc == SAE_OK && !sae__mul(tile_floats, (size_t)n_threads, &all_tiles))
        rc = SAE_E_NOMEM;
    if (rc == SAE_OK)
        rc = grow((void **)&e->tiles, &cap, all_tiles, sizeof(float));
    for (int p = 0; rc == SAE_OK && p < n_threads; p++) {
        enc_thread *t = &e->th[p];
        size_t c2 = 0, c3 = 0;
        t->tile = e->tiles + (size_t)p * tile_floats;
        rc = grow((void **)&t->stage_start, &c2, runs, sizeof(uint32_t));
        if (rc == SAE_OK)
            rc = grow((void **)&t->stage_count, &c3, runs, sizeof(uint32_t));
    }
    if (rc != SAE_OK) {
        sae__fused_encoder_free(e);
        return rc;
    }
    *out = e;
    return SAE_OK;
}

/* Make the scratch hold a pass over n_tokens tokens of this activation with
 * at most max_pairs pairs per sub-block (ReLU, JumpReLU). */
static int reserve(sae_fused_encoder *e, const sae_activation *act, size_t n_tokens,
                   size_t max_sub_pairs)
{
    int rc = SAE_OK;
    const int T = e->n_threads;
    const bool topk = act->arch == SAE_ARCH_TOPK, batch = act->arch == SAE_ARCH_BATCHTOPK;
    size_t n_sub = (n_tokens + SAE_FUSED_TILE_TOKENS - 1) / SAE_FUSED_TILE_TOKENS;
    rc = grow((void **)&e->sub_offset, &e->sub_cap, n_sub, sizeof(size_t));
    /* per-token streams: TopK (k, with room to compact rarely), AuxK */
    size_t topk_per = topk ? (act->k < 32 ? 128 : 4 * act->k) : 0;
    size_t aux_per = act->dead ? 2 * act->k_aux : 0;
    size_t tokens = n_tokens > e->tokens_cap ? n_tokens : e->tokens_cap;
    if (rc == SAE_OK && (n_tokens > e->tokens_cap || topk_per > e->topk_per_token ||
                         aux_per > e->aux_per_token)) {
        size_t tk = topk_per > e->topk_per_token ? topk_per : e->topk_per_token;
        size_t ax = aux_per > e->aux_per_token ? aux_per : e->aux_per_token;
        size_t cap = 0, n_topk, n_aux;
        if (!sae__mul(tokens, tk, &n_topk) || !sae__mul(tokens, ax, &n_aux))
            return SAE_E_NOMEM;
        sae_topk_stream *s1 = NULL, *s2 = NULL;
        uint32_t *i1 = NULL, *i2 = NULL;
        float *v1 = NULL, *v2 = NULL;
        if (tk) {
            rc = grow((void **)&s1, &cap, tokens, sizeof *s1);
            if (rc == SAE_OK)
                rc = grow_pair(&i1, &v1, &cap, n_topk);
        }
        if (rc == SAE_OK && ax) {
            cap = 0;
            rc = grow((void **)&s2, &cap, tokens, sizeof *s2);
            if (rc == SAE_OK)
                rc = grow_pair(&i2, &v2, &cap, n_aux);
        }
        if (rc != SAE_OK) {
            sae__free(s1), sae__free(s2), sae__free(i1), sae__free(i2), sae__free(v1),
                sae__free(v2);
            return rc;
        }
        sae__free(e->topk), sae__free(e->aux), sae__free(e->topk_idx), sae__free(e->aux_idx);
        sae__free(e->topk_val), sae__free(e->aux_val);
        e->topk = s1, e->aux = s2, e->topk_idx = i1, e->aux_idx = i2, e->topk_val = v1,
        e->aux_val = v2;
        e->topk_per_token = tk;
        e->aux_per_token = ax;
        e->tokens_cap = tokens;
    }
    size_t select = e->topk_per_token > e->aux_per_token ? e->topk_per_token : e->aux_per_token;
    /* BatchTopK: a stream of twice K per thread (K itself always fits) */
    if (batch) {
        size_t K, batch_cap, all;
        if (!sae__mul(n_tokens, act->k, &K) || !sae__mul(K, 2, &batch_cap) ||
            !sae__mul(batch_cap + 1, (size_t)T, &all) || !sae__add(all, 1, &all))
            return SAE_E_NOMEM;
        if (batch_cap > e->batch_cap) {
            size_t c1 = 0, c2 = 0;
            sae_batch_entry *streams = NULL, *scratch = NULL;
            rc = grow((void **)&streams, &c1, all, sizeof(sae_batch_entry));
            if (rc == SAE_OK)
                rc = grow((void **)&scratch, &c2, all, sizeof(sae_batch_entry));
            if (rc != SAE_OK) {
                sae__free(streams);
                return rc;
            }
            sae__free(e->batch_all);
            sae__free(e->batch_scratch);
            e->batch_all = streams;
            e->batch_scratch = scratch;
            e->batch_cap = batch_cap;
        }
    }
    for (int p = 0; rc == SAE_OK && p < T; p++) {
        enc_thread *t = &e->th[p];
        if (select > e->select_cap || !t->select_scratch) {
            size_t cap = 0;
            sae__free(t->select_scratch);
            t->select_scratch = NULL;
            rc = grow((void **)&t->select_scratch, &cap, select ? select : 1, sizeof(float));
        }
        /* room for a whole tile row past the limit: the check comes before a row */
        if (rc == SAE_OK && !topk && !batch)
            rc = grow_pair(&t->stage_feat, &t->stage_val, &t->stage_cap,
                           max_sub_pairs + e->tile_features);
    }
    if (rc == SAE_OK)
        e->select_cap = select > e->select_cap ? select : e->select_cap;
    return rc;
}

/* ---- one tile ------------------------------------------------------------------------ */

/* The work a pass shares. */
typedef struct enc_pass {
    sae_fused_encoder *e;
    const sae_activation *act;
    sae_gemm_team *team;
    const float *w_enc;
    const uint16_t *w_enc16; /* bf16 encoder (with xc16), or NULL */
    const float *xc;
    const uint16_t *xc16;
    size_t d_in, n_tokens, n_sub;
    size_t max_sub_pairs;
    sae_fused_out *out;
    int gemm_rc[SAE_MAX_THREADS];
} enc_pass;

/* ReLU (jump false) or JumpReLU on one token's w pre-activations (b_enc added
 * here); appends its pairs to the staging area at *at; adds to *l1 and
 * *active; returns the pairs. */
static size_t relu_row_portable(float *v, size_t w, const float *b, const float *r,
                                const float *theta, float half, bool jump, uint32_t f0,
                                uint32_t *feat, float *val, double *l1, size_t *active)
{
    size_t n = 0, on = 0;
    float part = 0.0f;
    for (size_t j = 0; j < w; j++) {
        float x = v[j] + b[j];
        bool fire, keep;
        if (jump) {
            float u = x - theta[j];
            fire = u > 0.0f;
            keep = fire || (u > -half && u < half);
        } else {
            fire = keep = x > 0.0f;
        }
        float f = fire ? x : 0.0f;
        part += f * r[j];
        on += fire;
        if (keep) {
            feat[n] = f0 + (uint32_t)j;
            val[n] = f;
            n++;
        }
        if ((j & 255) == 255) { /* float partial sums to double every 256 */
            *l1 += part;
            part = 0.0f;
        }
    }
    *l1 += part;
    *active += on;
    return n;
}

#ifdef SAE_HAVE_AVX512_ENCODE
__attribute__((target("avx512f"))) static size_t
relu_row_avx512(float *v, size_t w, const float *b, const float *r, const float *theta,
                float half, bool jump, uint32_t f0, uint32_t *feat, float *val, double *l1,
                size_t *active)
{
    const __m512 zero = _mm512_setzero_ps();
    const __m512 hv = _mm512_set1_ps(half), nhv = _mm512_set1_ps(-half);
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512 part = zero;
    size_t n = 0, on = 0;
    for (size_t j = 0; j < w; j += 16) {
        __mmask16 in = w - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - j)) - 1u);
        __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(in, v + j), _mm512_maskz_loadu_ps(in, b + j));
        __mmask16 fire, keep;
        if (jump) {
            __m512 u = _mm512_sub_ps(x, _mm512_maskz_loadu_ps(in, theta + j));
            fire = _mm512_mask_cmp_ps_mask(in, u, zero, _CMP_GT_OQ);
            __mmask16 band = _mm512_mask_cmp_ps_mask(in, u, nhv, _CMP_GT_OQ) &
                             _mm512_mask_cmp_ps_mask(in, u, hv, _CMP_LT_OQ);
            keep = fire | band;
        } else {
            fire = keep = _mm512_mask_cmp_ps_mask(in, x, zero, _CMP_GT_OQ);
        }
        __m512 f = _mm512_maskz_mov_ps(fire, x);
        part = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(in, r + j), part);
        on += (size_t)__builtin_popcount(fire);
        if (keep) {
            __m512i ix = _mm512_add_epi32(lane, _mm512_set1_epi32((int)(f0 + (uint32_t)j)));
            _mm512_mask_compressstoreu_ps(val + n, keep, f);
            _mm512_mask_compressstoreu_epi32(feat + n, keep, ix);
            n += (size_t)__builtin_popcount(keep);
        }
        if ((j & 255) == 240) {
            *l1 += _mm512_reduce_add_ps(part);
            part = zero;
        }
    }
    *l1 += _mm512_reduce_add_ps(part);
    *active += on;
    return n;
}

__attribute__((target("avx512f"))) static void relu_bias_avx512(float *v, size_t w, const float *b)
{
    for (size_t j = 0; j < w; j += 16) {
        __mmask16 in = w - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - j)) - 1u);
        __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(in, v + j), _mm512_maskz_loadu_ps(in, b + j));
        _mm512_mask_storeu_ps(v + j, in, _mm512_max_ps(x, _mm512_setzero_ps()));
    }
}
#endif

static bool use_vector(void)
{
#ifdef SAE_HAVE_AVX512_ENCODE
#ifdef SAE_TESTING
    if (sae__test_portable_kernels)
        return false;
#endif
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

/* v = max(v + b, 0) over w values. */
static void relu_bias(float *v, size_t w, const float *b, bool vector)
{
#ifdef SAE_HAVE_AVX512_ENCODE
    if (vector) {
        relu_bias_avx512(v, w, b);
        return;
    }
#endif
    (void)vector;
    for (size_t j = 0; j < w; j++) {
        float x = v[j] + b[j];
        v[j] = x > 0.0f ? x : 0.0f;
    }
}

/* Thread p's tile j of sub-block sb, in its tile buffer (rows x w): the
 * activation, and the pairs or the streams. */
static void post_tile(enc_pass *ps, int p, size_t sb, size_t j, bool vector)
{
    sae_fused_encoder *e = ps->e;
    enc_thread *t = &e->th[p];
    if (t->status != THREAD_OK)
        return;
    const sae_activation *a = ps->act;
    const size_t t0 = sb * SAE_FUSED_TILE_TOKENS;
    const size_t rows = ps->n_tokens - t0 < SAE_FUSED_TILE_TOKENS ? ps->n_tokens - t0
                                                                : SAE_FUSED_TILE_TOKENS;
    const size_t f0 = j * e->tile_features;
    const size_t w = e->d_sae - f0 < e->tile_features ? e->d_sae - f0 : e->tile_features;
    const float *b = a->b_enc + f0;
    sae_fused_out *out = ps->out;
    for (size_t q = 0; q < rows; q++) {
        float *v = t->tile + q * e->tile_features;
        size_t tok = t0 + q;
        switch (a->arch) {
        case SAE_ARCH_RELU:
        case SAE_ARCH_JUMPRELU: {
            bool jump = a->arch == SAE_ARCH_JUMPRELU;
            float half = 0.5f * a->bandwidth;
            const float *theta = jump ? a->theta + f0 : NULL;
            if (t->staged > ps->max_sub_pairs) {
                t->status = THREAD_TOO_DENSE;
                return;
            }
            size_t n;
#ifdef SAE_HAVE_AVX512_ENCODE
            if (vector)
                n = relu_row_avx512(v, w, b, a->norms + f0, theta, half, jump, (uint32_t)f0,
                                    t->stage_feat + t->staged, t->stage_val + t->staged,
                                    &out->l1[tok], &out->active[tok]);
            else
#endif
                n = relu_row_portable(v, w, b, a->norms + f0, theta, half, jump, (uint32_t)f0,
                                      t->stage_feat + t->staged, t->stage_val + t->staged,
                                      &out->l1[tok], &out->active[tok]);
            t->stage_start[j * SAE_FUSED_TILE_TOKENS + q] = (uint32_t)t->staged;
            t->stage_count[j * SAE_FUSED_TILE_TOKENS + q] = (uint32_t)n;
            t->staged += n;
            break;
        }
        case SAE_ARCH_TOPK:
            relu_bias(v, w, b, vector);
            sae__topk_stream_push(&e->topk[tok], v, w, (uint32_t)f0, NULL, t->select_scratch);
            break;
        default: /* BatchTopK */
            relu_bias(v, w, b, vector);
            sae__batch_stream_push(&t->batch_stream, v, w, (uint32_t)tok, (uint32_t)f0,
                                   e->batch_scratch + (size_t)p * (e->batch_cap + 1));
            break;
        }
        if (a->dead)
            sae__topk_stream_push(&e->aux[tok], v, w, (uint32_t)f0, a->dead + f0,
                                  t->select_scratch);
    }
}

/* Before thread p's tiles of sub-block sb: the per-token state. */
static void start_sub_block(enc_pass *ps, int p, size_t sb)
{
    sae_fused_encoder *e = ps->e;
    const sae_activation *a = ps->act;
    const size_t t0 = sb * SAE_FUSED_TILE_TOKENS;
    const size_t rows = ps->n_tokens - t0 < SAE_FUSED_TILE_TOKENS ? ps->n_tokens - t0
                                                                : SAE_FUSED_TILE_TOKENS;
    e->th[p].staged = 0;
    for (size_t tok = t0; tok < t0 + rows; tok++) {
        ps->out->l1[tok] = 0.0;
        ps->out->active[tok] = 0;
        if (a->arch == SAE_ARCH_TOPK)
            sae__topk_stream_init(&e->topk[tok], e->topk_idx + tok * e->topk_per_token,
                                  e->topk_val + tok * e->topk_per_token, e->topk_per_token, a->k);
        if (a->dead)
            sae__topk_stream_init(&e->aux[tok], e->aux_idx + tok * e->aux_per_token,
                                  e->aux_val + tok * e->aux_per_token, e->aux_per_token,
                                  a->k_aux);
    }
}

/* After thread p's tiles of sub-block sb: its tokens' pairs, token by token,
 * into the thread's arena (ReLU, JumpReLU, TopK); AuxK's picks. */
static void finish_sub_block(enc_pass *ps, int p, size_t sb)
{
    sae_fused_encoder *e = ps->e;
    enc_thread *t = &e->th[p];
    if (t->status != THREAD_OK)
        return;
    const sae_activation *a = ps->act;
    sae_fused_out *out = ps->out;
    const size_t t0 = sb * SAE_FUSED_TILE_TOKENS;
    const size_t rows = ps->n_tokens - t0 < SAE_FUSED_TILE_TOKENS ? ps->n_tokens - t0
                                                                : SAE_FUSED_TILE_TOKENS;
    if (a->dead)
        for (size_t tok = t0; tok < t0 + rows; tok++) {
            sae_topk_stream *s = &e->aux[tok];
            size_t n = sae__topk_stream_finish(s, t->select_scratch);
            memcpy(out->aux_feat + tok * out->aux_cap, s->idx, n * sizeof(uint32_t));
            memcpy(out->aux_fval + tok * out->aux_cap, s->val, n * sizeof(float));
            out->aux_count[tok] = n;
        }
    if (a->arch == SAE_ARCH_BATCHTOPK)
        return; /* its pairs come from the selection over the batch */
    size_t pairs = 0;
    if (a->arch == SAE_ARCH_TOPK) {
        for (size_t tok = t0; tok < t0 + rows; tok++)
            pairs += sae__topk_stream_finish(&e->topk[tok], t->select_scratch);
    } else {
        pairs = t->staged;
    }
    if (t->arena_used + pairs > t->arena_cap) {
        t->status = THREAD_ARENA_FULL;
        t->need = t->arena_used + pairs;
        return;
    }
    e->sub_offset[sb] = t->arena_used;
    uint32_t *feat = t->arena_feat + t->arena_used;
    float *val = t->arena_val + t->arena_used;
    for (size_t q = 0; q < rows; q++) {
        size_t tok = t0 + q, n = 0;
        if (a->arch == SAE_ARCH_TOPK) {
            sae_topk_stream *s = &e->topk[tok];
            double l1 = 0.0;
            for (size_t i = 0; i < s->count; i++) {
                feat[n] = s->idx[i];
                val[n] = s->val[i];
                l1 += (double)s->val[i] * a->norms[s->idx[i]];
                n++;
            }
            out->l1[tok] = l1;
            out->active[tok] = n;
        } else {
            for (size_t j = 0; j < e->n_tiles; j++) {
                size_t run = j * SAE_FUSED_TILE_TOKENS + q, c = t->stage_count[run];
                memcpy(feat + n, t->stage_feat + t->stage_start[run], c * sizeof(uint32_t));
                memcpy(val + n, t->stage_val + t->stage_start[run], c * sizeof(float));
                n += c;
            }
        }
        out->row_ptr[tok + 1] = n;
        feat += n;
        val += n;
    }
    t->arena_used += pairs;
}

/* ---- the pass --------------------------------------------------------------------------- */

/* The GEMM of thread p's tile j of sub-block sb, on the calling thread. */
static int tile_gemm(enc_pass *ps, sae_gemm_ctx *g, float *tile, size_t t0, size_t rows, size_t f0,
                     size_t w)
{
    const size_t d_in = ps->d_in, ld = ps->e->tile_features;
    if (ps->w_enc16)
        return sae__gemm_bf16(g, false, true, rows, w, d_in, 1.0f, ps->xc16 + t0 * d_in, d_in,
                              ps->w_enc16 + f0 * d_in, d_in, 0.0f, tile, ld);
    sae__gemm_f32(g, false, true, rows, w, d_in, 1.0f, ps->xc + t0 * d_in, d_in,
                  ps->w_enc + f0 * d_in, d_in, 0.0f, tile, ld);
    return SAE_OK;
}

/* oneDNN: each thread runs its sub-blocks p, p + T, ..., tiles and all. */
static void pass_serial(void *ctx, int p, int n_threads)
{
    enc_pass *ps = ctx;
    sae_fused_encoder *e = ps->e;
    enc_thread *t = &e->th[p];
    const bool vector = use_vector();
    sae_gemm_ctx *g = sae__gemm_team_member(ps->team, p);
    int saved = sae__gemm_serial_begin(ps->team);
    ps->gemm_rc[p] = SAE_OK;
    for (size_t sb = (size_t)p; sb < ps->n_sub && t->status == THREAD_OK; sb += (size_t)n_threads) {
        size_t t0 = sb * SAE_FUSED_TILE_TOKENS;
        size_t rows = ps->n_tokens - t0 < SAE_FUSED_TILE_TOKENS ? ps->n_tokens - t0
                                                              : SAE_FUSED_TILE_TOKENS;
        start_sub_block(ps, p, sb);
        for (size_t j = 0; j < e->n_tiles && t->status == THREAD_OK; j++) {
            size_t f0 = j * e->tile_features;
            size_t w = e->d_sae - f0 < e->tile_features ? e->d_sae - f0 : e->tile_features;
            int rc = tile_gemm(ps, g, t->tile, t0, rows, f0, w);
            if (rc != SAE_OK) {
                ps->gemm_rc[p] = rc;
                break;
            }
            post_tile(ps, p, sb, j, vector);
        }
        if (ps->gemm_rc[p] != SAE_OK)
            break;
        finish_sub_block(ps, p, sb);
    }
    sae__gemm_serial_end(ps->team, saved);
}

/* CBLAS: a round is one sub-block per thread; its tiles are made by one GEMM
 * on the calling thread, then processed by every thread. */
typedef struct round_task {
    enc_pass *ps;
    size_t round, j;
    int stage; /* 0: start, 1: tile j, 2: finish */
} round_task;

static void round_run(void *ctx, int p, int n_threads)
{
    round_task *r = ctx;
    size_t sb = r->round * (size_t)n_threads + (size_t)p;
    if (sb >= r->ps->n_sub)
        return;
    if (r->stage == 0)
        start_sub_block(r->ps, p, sb);
    else if (r->stage == 1)
        post_tile(r->ps, p, sb, r->j, use_vector());
    else
        finish_sub_block(r->ps, p, sb);
}

static int pass_rounds(enc_pass *ps, sae_pool *pool)
{
    sae_fused_encoder *e = ps->e;
    const size_t T = (size_t)sae__pool_threads(pool);
    sae_gemm_ctx *g = sae__gemm_team_member(ps->team, 0);
    for (size_t round = 0; round * T < ps->n_sub; round++) {
        size_t t0 = round * T * SAE_FUSED_TILE_TOKENS;
        size_t rows = ps->n_tokens - t0 < T * SAE_FUSED_TILE_TOKENS ? ps->n_tokens - t0
                                                                  : T * SAE_FUSED_TILE_TOKENS;
        round_task r = {ps, round, 0, 0};
        sae__pool_run(pool, round_run, &r);
        for (size_t j = 0; j < e->n_tiles; j++) {
            size_t f0 = j * e->tile_features;
            size_t w = e->d_sae - f0 < e->tile_features ? e->d_sae - f0 : e->tile_features;
            /* one GEMM per sub-block, of a shape that does not depend on the
             * thread count (so neither do the bits: BLAS kernels may differ
             * by shape); the BLAS's own threads share each */
            for (size_t p = 0; p * SAE_FUSED_TILE_TOKENS < rows; p++) {
                size_t s0 = p * SAE_FUSED_TILE_TOKENS;
                size_t sub = rows - s0 < SAE_FUSED_TILE_TOKENS ? rows - s0 : SAE_FUSED_TILE_TOKENS;
                int rc = tile_gemm(ps, g, e->th[p].tile, t0 + s0, sub, f0, w);
                if (rc != SAE_OK)
                    return rc;
            }
            r.stage = 1;
            r.j = j;
            sae__pool_run(pool, round_run, &r);
        }
        r.stage = 2;
        sae__pool_run(pool, round_run, &r);
        for (size_t p = 0; p < T; p++)
            if (e->th[p].status != THREAD_OK)
                return SAE_OK;
    }
    return SAE_OK;
}

/* BatchTopK after the pass: the entries the threads' streams hold. */
static size_t batch_reached(const sae_fused_encoder *e, int T)
{
    size_t n = 0;
    for (int p = 0; p < T; p++)
        n += e->th[p].batch_stream.count;
    return n;
}

/* BatchTopK after the pass: the K = n k first entries of the threads'
 * streams, as CSR (tokens in order, features in order within a token); the
 * next pass's floor (floor: this pass's, 0 if none). */
static int batch_assemble(enc_pass *ps, float floor, size_t *pairs)
{
    sae_fused_encoder *e = ps->e;
    const sae_activation *a = ps->act;
    sae_fused_out *out = ps->out;
    /* the streams, made contiguous in batch_all, then the selection */
    sae_batch_entry *u = e->batch_all;
    size_t n = 0;
    for (int p = 0; p < e->n_threads; p++) {
        const sae_batch_stream *s = &e->th[p].batch_stream;
        if (!s->e)
            continue;
        memmove(u + n, s->e, s->count * sizeof(sae_batch_entry));
        n += s->count;
    }
    float kth;
    n = sae__batch_select(u, n, ps->n_tokens * a->k, e->batch_scratch, &kth);
    *pairs = n;
    if (floor > 0.0f) /* a floor that held: the next one a little closer */
        e->batch_fraction = e->batch_fraction / BATCH_FLOOR_BACKOFF > BATCH_FLOOR_FRACTION
                                ? BATCH_FLOOR_FRACTION
                                : e->batch_fraction / BATCH_FLOOR_BACKOFF;
    e->batch_floor = n ? e->batch_fraction * kth : 0.0f;
    if (n > out->cap)
        return SAE_FUSED_OUT_FULL;
    out->batch_min_kept = n ? kth : 0.0f;
    /* counting sort by token: stable, and a token's entries came in feature
     * order from the one thread that owns it */
    memset(out->row_ptr, 0, (ps->n_tokens + 1) * sizeof(size_t));
    for (size_t q = 0; q < n; q++)
        out->row_ptr[u[q].tok + 1]++;
    for (size_t tok = 0; tok < ps->n_tokens; tok++) {
        out->active[tok] = out->row_ptr[tok + 1];
        out->row_ptr[tok + 1] += out->row_ptr[tok];
    }
    for (size_t q = 0; q < n; q++) {
        size_t at = out->row_ptr[u[q].tok]++; /* the starts move to the ends */
        out->feat[at] = u[q].feat;
        out->fval[at] = u[q].val;
    }
    memmove(out->row_ptr + 1, out->row_ptr, ps->n_tokens * sizeof(size_t));
    out->row_ptr[0] = 0;
    for (size_t tok = 0; tok < ps->n_tokens; tok++) {
        double l1 = 0.0;
        for (size_t q = out->row_ptr[tok]; q < out->row_ptr[tok + 1]; q++)
            l1 += (double)out->fval[q] * a->norms[out->feat[q]];
        out->l1[tok] = l1;
    }
    return SAE_OK;
}

int sae__encode_fused(sae_fused_encoder *e, const sae_fused_args *args,
                       sae_gemm_team *team, sae_pool *pool, sae_fused_out *out)
{
    const sae_activation *a = args->act;
    const size_t n = args->n_tokens, d_sae = e->d_sae;
    const int T = sae__pool_threads(pool);
    if (T > e->n_threads || (a->arch == SAE_ARCH_BATCHTOPK && a->k == 0))
        return SAE_E_INVALID_ARG;
    size_t max_sub = args->max_density >= 1.0
                         ? (size_t)SAE_FUSED_TILE_TOKENS * d_sae
                         : (size_t)(args->max_density * (double)SAE_FUSED_TILE_TOKENS * (double)d_sae);
    max_sub = max_sub < e->tile_features ? e->tile_features : max_sub;
    int rc = reserve(e, a, n, max_sub);
    if (rc != SAE_OK)
        return rc;
    enc_pass ps = {.e = e, .act = a, .team = team, .w_enc = args->w_enc,
                   .w_enc16 = args->w_enc16, .xc = args->xc, .xc16 = args->xc16,
                   .d_in = args->d_in, .n_tokens = n,
                   .n_sub = (n + SAE_FUSED_TILE_TOKENS - 1) / SAE_FUSED_TILE_TOKENS,
                   .max_sub_pairs = max_sub, .out = out};
    /* the arenas: the previous pass's pairs and a quarter more, split by thread */
    size_t arena = e->last_pairs + e->last_pairs / 4;
    float floor = a->arch == SAE_ARCH_BATCHTOPK ? e->batch_floor : 0.0f;
    for (;;) {
        for (int p = 0; p < T; p++) {
            enc_thread *t = &e->th[p];
            size_t want = arena / (size_t)T + 4096;
            if (a->arch != SAE_ARCH_BATCHTOPK) {
                rc = grow_pair(&t->arena_feat, &t->arena_val, &t->arena_cap,
                               t->need > want ? t->need : want);
                if (rc != SAE_OK)
                    return rc;
            }
            t->arena_used = 0;
            t->status = THREAD_OK;
            t->need = 0;
            if (a->arch == SAE_ARCH_BATCHTOPK) {
                sae__batch_stream_init(&t->batch_stream, e->batch_all + (size_t)p * e->batch_cap,
                                       e->batch_cap, n * a->k);
                sae__batch_stream_floor(&t->batch_stream, floor);
            } else
                t->batch_stream.e = NULL;
        }
        if (sae__gemm_team_backend(team) == SAE_GEMM_ONEDNN) {
            sae__pool_run(pool, pass_serial, &ps);
            for (int p = 0; p < T; p++)
                if (ps.gemm_rc[p] != SAE_OK)
                    return ps.gemm_rc[p];
        } else {
            rc = pass_rounds(&ps, pool);
            if (rc != SAE_OK)
                return rc;
        }
        bool full = false;
        for (int p = 0; p < T; p++) {
            if (e->th[p].status == THREAD_TOO_DENSE)
                return SAE_FUSED_TOO_DENSE;
            if (e->th[p].status == THREAD_ARENA_FULL) {
                full = true;
                e->th[p].need += e->th[p].need / 2;
            }
        }
        if (!full && floor > 0.0f && batch_reached(e, T) < n * a->k) {
            floor = 0.0f; /* the floor was too high: the exact selection needs another pass */
            e->batch_repasses++;
            e->batch_fraction = e->batch_fraction * BATCH_FLOOR_BACKOFF < BATCH_FLOOR_MIN
                                    ? BATCH_FLOOR_MIN
                                    : e->batch_fraction * BATCH_FLOOR_BACKOFF;
            continue;
        }
        if (!full)
            break;
    }
    for (int p = 0; p < T; p++)
        e->th[p].need = 0;
    /* the pairs, in token order */
    size_t pairs = 0;
    if (a->arch == SAE_ARCH_BATCHTOPK) {
        rc = batch_assemble(&ps, floor, &pairs);
        out->pairs = pairs;
        if (rc != SAE_OK)
            return rc;
    } else {
        for (int p = 0; p < T; p++)
            pairs += e->th[p].arena_used;
        out->pairs = pairs;
        if (pairs > out->cap)
            return SAE_FUSED_OUT_FULL;
        out->row_ptr[0] = 0;
        for (size_t tok = 0; tok < n; tok++)
            out->row_ptr[tok + 1] += out->row_ptr[tok];
        for (size_t sb = 0; sb < ps.n_sub; sb++) {
            const enc_thread *t = &e->th[sb % (size_t)T];
            size_t t0 = sb * SAE_FUSED_TILE_TOKENS;
            size_t t1 = t0 + SAE_FUSED_TILE_TOKENS < n ? t0 + SAE_FUSED_TILE_TOKENS : n;
            size_t at = out->row_ptr[t0], count = out->row_ptr[t1] - at;
            if (count == 0) /* (out->feat may be NULL: no pairs yet) */
                continue;
            memcpy(out->feat + at, t->arena_feat + e->sub_offset[sb], count * sizeof(uint32_t));
            memcpy(out->fval + at, t->arena_val + e->sub_offset[sb], count * sizeof(float));
        }
    }
    out->pairs = pairs;
    e->last_pairs = pairs;
    return SAE_OK;
}
