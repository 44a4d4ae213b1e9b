/*
 * The optimizer: Adam with torch.optim.Adam semantics, global gradient-norm
 * clipping, feature-activity counters, and sae_step, which ties the backward
 * pass to one update.
 *
 * A step changes nothing unless it succeeds. Gradients are checked while their
 * norm is summed; an update that could overflow is caught by a cheap bound
 * (below) or, when the bound cannot rule it out, by a dry run of the update
 * before anything is written.
 */
#include "internal.h"
#include "parallel.h"
#include "simd.h"

#include <float.h>
#include <math.h>
#include <string.h>


int sae_optimizer_create(sae_optimizer **out, const sae_model *m)
{
    static const char fn[] = "sae_optimizer_create";
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: m is NULL", fn);
    sae_optimizer *o = sae__alloc_zero(sizeof *o);
    if (!o)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for the optimizer", fn);
    o->d_in = m->d_in;
    o->d_sae = m->d_sae;
    o->lay = m->lay;
    o->arch = m->arch;
    o->kind = m->kind;
    o->shard_begin = m->shard_begin;
    o->d_sae_total = sae__total_features(m);
    sae__options_init(&o->opt);
    size_t bytes = m->lay.total * sizeof(float); /* bounded by the layout check */
    o->grad = sae__alloc_zero(bytes);
    o->m1 = o->grad ? sae__alloc_zero(bytes) : NULL;
    o->m2 = o->m1 ? sae__alloc_zero(bytes) : NULL;
    o->since_fired = o->m2 ? sae__alloc_zero(m->d_sae * sizeof(uint64_t)) : NULL;
    if (!o->since_fired) {
        sae_optimizer_free(o);
        return SAE_E_NOMEM;
    }
    *out = o;
    return SAE_OK;
}

void sae_optimizer_free(sae_optimizer *o)
{
    if (!o)
        return;
    sae__workspace_free(&o->ws);
    sae__par_free(o->par);
    sae__free(o->since_fired);
    sae__free(o->m2);
    sae__free(o->m1);
    sae__free(o->grad);
    sae__free(o);
}

uint64_t sae_optimizer_steps(const sae_optimizer *o) { return o ? o->steps : 0; }

int sae_optimizer_tokens_since_fired(const sae_optimizer *o, uint64_t *dst, size_t count)
{
    static const char fn[] = "sae_optimizer_tokens_since_fired";
    if (!o || !dst)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !o ? "o" : "dst");
    if (count != o->d_sae)
        return sae__fail(SAE_E_INVALID_ARG, "%s: count is %zu, not d_sae = %zu", fn, count,
                         o->d_sae);
    memcpy(dst, o->since_fired, count * sizeof(uint64_t));
    return SAE_OK;
}

int sae_optimizer_dead_count(const sae_optimizer *o, uint64_t window_tokens, size_t *n_dead)
{
    static const char fn[] = "sae_optimizer_dead_count";
    if (!o || !n_dead)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !o ? "o" : "n_dead");
    if (window_tokens == 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: window_tokens is 0", fn);
    size_t dead = 0;
    for (size_t i = 0; i < o->d_sae; i++)
        dead += o->since_fired[i] >= window_tokens;
    *n_dead = dead;
    return SAE_OK;
}

/* The Adam update constants of step t (1-based), in float as torch applies them. */
typedef struct adam_consts {
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float step_size;     /* lr / (1 - beta1^t) */
    float bc2_sqrt;      /* sqrt(1 - beta2^t) */
    float eps;
    float grad_scale;    /* clipping factor, 1 when off */
} adam_consts;

/* Maxima of the values an update wrote, for the next step's overflow bound. */
typedef struct adam_maxima {
    float param_absmax, m1_absmax, m2_max;
} adam_maxima;

/* The update of one element, exactly as torch.optim.Adam orders it:
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   p = p - step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * The constants are copied to locals first so the compiler can keep them in
 * registers and vectorise the loops (a pointer to them could alias the arrays).
 *
 * Moments below FLT_MIN are flushed to 0. A feature that stops firing gets
 * zero gradients, and its moments decay geometrically into subnormal floats,
 * whose arithmetic is many times slower on x86 (a 3x slower step was seen with
 * many dead features). The update they would make is at most
 * step_size * FLT_MIN / eps (about 1e-30 * lr): nothing is lost. */
#define ADAM_LOCALS(c)                                                     \
    const float b1 = (c)->beta1, omb1 = (c)->one_minus_beta1;              \
    const float b2 = (c)->beta2, omb2 = (c)->one_minus_beta2;              \
    const float neg_step = -(c)->step_size, bc2 = (c)->bc2_sqrt;           \
    const float eps = (c)->eps, gscale = (c)->grad_scale
#define ADAM_ELEMENT(g_in, p, m, v)                                        \
    do {                                                                   \
        float g_ = (g_in) * gscale;                                        \
        (m) = (m) * b1 + g_ * omb1;                                        \
        (v) = (v) * b2 + omb2 * (g_ * g_);                                 \
        (m) = fabsf(m) < FLT_MIN ? 0.0f : (m); /* no subnormals (above) */  \
        (v) = (v) < FLT_MIN ? 0.0f : (v);                                  \
        float denom_ = sqrtf(v) / bc2 + eps;                               \
        (p) = (p) + neg_step * ((m) / denom_);                             \
    } while (0)

/* Apply the update to elements [begin, end); one pass reads g, p, m, v and
 * writes p, m, v. Returns the maxima of what it wrote. */
SAE_VECTOR_CLONES
static void adam_apply_range(const adam_consts *c, const float *restrict grad,
                             float *restrict param, float *restrict m1, float *restrict m2,
                             size_t begin, size_t end, adam_maxima *maxima)
{
    ADAM_LOCALS(c);
    /* Maxima of |p|, |m| and v taken on the bit patterns: for non-negative
     * floats they order like unsigned integers, and integer max vectorises
     * (a float max may not, because of NaN and signed-zero rules). */
    uint32_t p_mx = 0, m_mx = 0, v_mx = 0;
    for (size_t k = begin; k < end; k++) {
        float p = param[k], m = m1[k], v = m2[k];
        ADAM_ELEMENT(grad[k], p, m, v);
        param[k] = p;
        m1[k] = m;
        m2[k] = v;
        uint32_t pb, mb, vb;
        memcpy(&pb, &p, sizeof pb);
        memcpy(&mb, &m, sizeof mb);
        memcpy(&vb, &v, sizeof vb);
        pb &= 0x7fffffffu;
        mb &= 0x7fffffffu;
        p_mx = pb > p_mx ? pb : p_mx;
        m_mx = mb > m_mx ? mb : m_mx;
        v_mx = vb > v_mx ? vb : v_mx;
    }
    memcpy(&maxima->param_absmax, &p_mx, sizeof p_mx);
    memcpy(&maxima->m1_absmax, &m_mx, sizeof m_mx);
    memcpy(&maxima->m2_max, &v_mx, sizeof v_mx);
}

#ifdef SAE_HAVE_AVX512
/* adam_apply_range with AVX-512, written out: the compilers do not vectorise
 * the maxima reductions of the loop above (it ran scalar, at twice the time of
 * the memory traffic). The same operations in the same order, without fused
 * multiply-adds, so both versions give the same bits. */
SAE_AVX512 static void
adam_apply_range_avx512(const adam_consts *c, const float *grad, float *param, float *m1,
                        float *m2, size_t begin, size_t end, adam_maxima *maxima)
{
    const __m512 b1 = _mm512_set1_ps(c->beta1), omb1 = _mm512_set1_ps(c->one_minus_beta1);
    const __m512 b2 = _mm512_set1_ps(c->beta2), omb2 = _mm512_set1_ps(c->one_minus_beta2);
    const __m512 neg_step = _mm512_set1_ps(-c->step_size), bc2 = _mm512_set1_ps(c->bc2_sqrt);
    const __m512 eps = _mm512_set1_ps(c->eps), gscale = _mm512_set1_ps(c->grad_scale);
    const __m512 tiny = _mm512_set1_ps(FLT_MIN), zero = _mm512_setzero_ps();
    __m512 p_mx = zero, m_mx = zero, v_mx = zero;
    for (size_t k = begin; k < end; k += 16) {
        __mmask16 lanes = end - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (end - k)) - 1u);
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, grad + k), gscale);
        __m512 m = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, m1 + k), b1),
                                 _mm512_mul_ps(g, omb1));
        __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, m2 + k), b2),
                                 _mm512_mul_ps(omb2, _mm512_mul_ps(g, g)));
        m = _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(_mm512_abs_ps(m), tiny, _CMP_LT_OQ), zero);
        v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, tiny, _CMP_LT_OQ), zero);
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v), bc2), eps);
        __m512 p = _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, param + k),
                                 _mm512_mul_ps(neg_step, _mm512_div_ps(m, denom)));
        _mm512_mask_storeu_ps(param + k, lanes, p);
        _mm512_mask_storeu_ps(m1 + k, lanes, m);
        _mm512_mask_storeu_ps(m2 + k, lanes, v);
        /* finite here (proved or checked before the pass), so max is exact */
        p_mx = _mm512_mask_max_ps(p_mx, lanes, p_mx, _mm512_abs_ps(p));
        m_mx = _mm512_mask_max_ps(m_mx, lanes, m_mx, _mm512_abs_ps(m));
        v_mx = _mm512_mask_max_ps(v_mx, lanes, v_mx, v);
    }
    maxima->param_absmax = _mm512_reduce_max_ps(p_mx);
    maxima->m1_absmax = _mm512_reduce_max_ps(m_mx);
    maxima->m2_max = _mm512_reduce_max_ps(v_mx);
}
#endif

/* The same update computed without writing: whether every new value of
 * [begin, end) would be finite. */
SAE_VECTOR_CLONES
static bool adam_check_range(const adam_consts *c, const float *restrict grad,
                             const float *restrict param, const float *restrict m1,
                             const float *restrict m2, size_t begin, size_t end)
{
    ADAM_LOCALS(c);
    int bad = 0;
    for (size_t k = begin; k < end; k++) {
        float p = param[k], m = m1[k], v = m2[k];
        ADAM_ELEMENT(grad[k], p, m, v);
        bad |= (p - p != 0.0f) | (m - m != 0.0f) | (v - v != 0.0f);
    }
    return !bad;
}

/* Whether an update with these constants provably keeps every value finite.
 * |g| <= ||g|| (the global norm), |m'| <= max(|m|, |g|), v' <= max(v, g^2),
 * and the denominator is at least eps, so |p'| <= |p| + step_size max|m'| / eps. */
static bool adam_provably_finite(const adam_consts *c, double grad_norm, float param_absmax,
                                 float m1_absmax, float m2_max)
{
    const double slack = 1.01;
    double g = grad_norm * c->grad_scale * slack;
    double m = fmax(m1_absmax, g) * slack;
    double v = fmax(m2_max, g * g) * slack;
    double p = (double)param_absmax + (double)c->step_size * m / ((double)c->eps * (1.0 - 1e-6));
    return v < FLT_MAX / 2 && m < FLT_MAX / 2 && p < FLT_MAX / 2 && isfinite(c->step_size);
}

/* The update over the whole parameter block, split into one contiguous range
 * per thread. With check set it only reports whether the result would be finite. */
typedef void (*adam_apply_fn)(const adam_consts *, const float *, float *, float *, float *,
                              size_t, size_t, adam_maxima *);

typedef struct adam_task {
    adam_apply_fn apply;
    const adam_consts *c;
    const float *grad;
    float *param, *m1, *m2;
    size_t count;
    bool check;
    /* with SAE_OPT_PRECISION bf16: bf16(param[k]) to w16[k - w16_begin] for k
     * in [w16_begin, w16_end) (W_enc), written while the values are in cache */
    uint16_t *w16;
    size_t w16_begin, w16_end;
    /* with norms: norms[i] = ||param[dec_begin + i d_row ..][0 .. d_row)||
     * for the d_sae rows of W_dec, each by the thread whose range holds it
     * whole, while in cache (the others after the pass) */
    float *norms;
    size_t dec_begin, dec_end, d_row;
    bool finite[SAE_MAX_THREADS];
    adam_maxima maxima[SAE_MAX_THREADS];
} adam_task;

static void maxima_merge(adam_maxima *into, const adam_maxima *part)
{
    into->param_absmax = fmaxf(into->param_absmax, part->param_absmax);
    into->m1_absmax = fmaxf(into->m1_absmax, part->m1_absmax);
    into->m2_max = fmaxf(into->m2_max, part->m2_max);
}

/* Elements per chunk of the bf16 copy and of the norms' rows: updated, then
 * read again from L1/L2. */
#define ADAM_CHUNK 2048

static void apply_plain(const adam_task *a, size_t begin, size_t end, adam_maxima *mx)
{
    if (begin >= end)
        return;
    adam_maxima part;
    a->apply(a->c, a->grad, a->param, a->m1, a->m2, begin, end, &part);
    maxima_merge(mx, &part);
}

/* [lo, hi) inside W_enc: updated, then rounded to the bf16 copy, by chunks. */
static void apply_w16(const adam_task *a, size_t lo, size_t hi, adam_maxima *mx)
{
    for (size_t k = lo; k < hi; k += ADAM_CHUNK) {
        size_t k1 = hi - k < ADAM_CHUNK ? hi : k + ADAM_CHUNK;
        apply_plain(a, k, k1, mx);
        sae__bf16_from_f32(a->w16 + (k - a->w16_begin), a->param + k, k1 - k);
    }
}

/* [lo, hi) inside W_dec: updated, and the norms of the rows it holds whole,
 * by chunks of rows. */
static void apply_norms(const adam_task *a, size_t lo, size_t hi, adam_maxima *mx)
{
    const size_t d = a->d_row;
    size_t r0 = (lo - a->dec_begin + d - 1) / d, r1 = (hi - a->dec_begin) / d;
    if (r0 >= r1) {
        apply_plain(a, lo, hi, mx);
        return;
    }
    apply_plain(a, lo, a->dec_begin + r0 * d, mx);
    const size_t chunk_rows = d < ADAM_CHUNK ? ADAM_CHUNK / d : 1;
    for (size_t r = r0; r < r1; r += chunk_rows) {
        size_t re = r1 - r < chunk_rows ? r1 : r + chunk_rows;
        apply_plain(a, a->dec_begin + r * d, a->dec_begin + re * d, mx);
        for (size_t i = r; i < re; i++)
            a->norms[i] = sae__row_norm(a->param + a->dec_begin + i * d, d);
    }
    apply_plain(a, a->dec_begin + r1 * d, hi, mx);
}

/* The update of [begin, end), with the bf16 copy and the row norms where
 * they cover. */
typedef struct adam_region {
    size_t lo, hi;
    void (*fn)(const adam_task *, size_t, size_t, adam_maxima *);
} adam_region;

static void adam_apply_regions(const adam_task *a, size_t begin, size_t end, adam_maxima *mx)
{
    *mx = (adam_maxima){0.0f, 0.0f, 0.0f};
    adam_region region[2];
    int n = 0;
    if (a->w16)
        region[n++] = (adam_region){a->w16_begin, a->w16_end, apply_w16};
    if (a->norms)
        region[n++] = (adam_region){a->dec_begin, a->dec_end, apply_norms};
    if (n == 2 && region[1].lo < region[0].lo) {
        adam_region first = region[1];
        region[1] = region[0];
        region[0] = first;
    }
    size_t pos = begin;
    for (int r = 0; r < n; r++) {
        size_t lo = pos > region[r].lo ? pos : region[r].lo;
        size_t hi = end < region[r].hi ? end : region[r].hi;
        if (lo >= hi)
            continue;
        apply_plain(a, pos, lo, mx);
        region[r].fn(a, lo, hi, mx);
        pos = hi;
    }
    apply_plain(a, pos, end, mx);
}

/* Thread tid's range of the block: on 64-byte boundaries. */
static void adam_range(size_t count, int tid, int n_threads, size_t *begin, size_t *end)
{
    size_t lines = (count + SAE_ALIGN_FLOATS - 1) / SAE_ALIGN_FLOATS;
    sae__share(lines, tid, n_threads, begin, end);
    *begin *= SAE_ALIGN_FLOATS;
    *end = *end * SAE_ALIGN_FLOATS < count ? *end * SAE_ALIGN_FLOATS : count;
    *begin = *begin < *end ? *begin : *end;
}

static void adam_run(void *ctx, int tid, int n_threads)
{
    adam_task *a = ctx;
    size_t begin, end;
    adam_range(a->count, tid, n_threads, &begin, &end);
    if (a->check)
        a->finite[tid] = adam_check_range(a->c, a->grad, a->param, a->m1, a->m2, begin, end);
    else
        adam_apply_regions(a, begin, end, &a->maxima[tid]);
}

/* What the Adam pass writes besides the update (NULL pointers: nothing): the
 * bf16 copy of W_enc (w16_count values from param[w_enc]), and the d_rows row
 * norms of W_dec (rows of d_row values from param[w_dec]). */
typedef struct adam_extras {
    uint16_t *w16;
    size_t w_enc, w16_count;
    float *norms;
    size_t w_dec, d_rows, d_row;
} adam_extras;

/* The update over the whole parameter block, one contiguous range per thread.
 * With check set it only reports whether the result would be finite; else
 * it also writes x's extras as the update goes. */
static bool adam_pass(const adam_consts *c, const float *grad, float *param, float *m1, float *m2,
                      size_t count, sae_pool *pool, bool check, adam_maxima *maxima,
                      const adam_extras *x)
{
    adam_task a = {.apply = adam_apply_range, .c = c, .grad = grad, .param = param, .m1 = m1,
                   .m2 = m2, .count = count, .check = check};
    if (x && !check) {
        a.w16 = x->w16;
        a.w16_begin = x->w_enc;
        a.w16_end = x->w_enc + x->w16_count;
        a.norms = x->d_row ? x->norms : NULL;
        a.dec_begin = x->w_dec;
        a.dec_end = x->w_dec + x->d_rows * x->d_row;
        a.d_row = x->d_row;
    }
#ifdef SAE_HAVE_AVX512
    if (sae__use_avx512())
        a.apply = adam_apply_range_avx512;
#endif
    sae__pool_run(pool, adam_run, &a);
    /* the rows no thread held whole: those across a boundary of two ranges */
    for (int k = 1; a.norms && k < sae__pool_threads(pool); k++) {
        size_t begin, end;
        adam_range(count, k, sae__pool_threads(pool), &begin, &end);
        if (begin > a.dec_begin && begin < a.dec_end && (begin - a.dec_begin) % a.d_row != 0) {
            size_t i = (begin - a.dec_begin) / a.d_row;
            a.norms[i] = sae__row_norm(param + a.dec_begin + i * a.d_row, a.d_row);
        }
    }
    bool finite = true;
    adam_maxima mx = {0.0f, 0.0f, 0.0f};
    for (int k = 0; k < sae__pool_threads(pool); k++) {
        if (check)
            finite &= a.finite[k];
        else
            maxima_merge(&mx, &a.maxima[k]);
    }
    if (!check)
        *maxima = mx;
    return finite;
}

/* bf16(W_enc) row by row (d_sae rows of d_in). */
typedef struct bf16_task {
    const float *w;
    uint16_t *w16;
    size_t d_in;
} bf16_task;

static void bf16_rows(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const bf16_task *b = ctx;
    sae__bf16_from_f32(b->w16 + begin * b->d_in, b->w + begin * b->d_in, (end - begin) * b->d_in);
}

/* AuxK's configuration for this step: on for TopK, BatchTopK and Matryoshka
 * with a positive coefficient and at least one dead feature (flags in
 * ws->dead). The default k_aux is half the output's width (d_out / 2, as
 * sparsify's transcoders; d_in / 2 for an autoencoder). */
static size_t auxk_setup(const sae_model *m, sae_optimizer *o)
{
    if (!sae__has_k(m->arch) || !(o->opt.auxk_coeff > 0.0))
        return 0;
    size_t k_aux = (size_t)o->opt.auxk_k;
    if (k_aux == 0)
        k_aux = m->d_out / 2 > 0 ? m->d_out / 2 : 1;
    const size_t d_sae = sae__total_features(m); /* a shard picks among all features */
    return k_aux < d_sae ? k_aux : d_sae;
}

static size_t mark_dead(const sae_optimizer *o, uint8_t *dead)
{
    size_t n_dead = 0;
    uint64_t window = o->opt.dead_window;
    for (size_t i = 0; i < o->d_sae; i++) {
        dead[i] = o->since_fired[i] >= window;
        n_dead += dead[i];
    }
    return n_dead;
}

/* The pairs a distributed TopK, BatchTopK or Matryoshka step can make,
 * reserved before its exchanges begin (nothing may fail on one rank alone
 * once they have): n k per rank (data-parallel BatchTopK and Matryoshka: up
 * to all of the global batch's n k), and n k_aux more with AuxK. ReLU and JumpReLU grow theirs as usual. */
static int reserve_parallel_pairs(const sae_model *m, sae_optimizer *o, size_t n_tokens,
                                  size_t n_global, size_t k_aux)
{
    if (!sae__has_k(m->arch))
        return SAE_OK;
    size_t main_pairs, aux_pairs, total;
    size_t n = sae__batch_selected(m->arch) ? n_global : n_tokens;
    if (!sae__mul(n, m->k, &main_pairs) || !sae__mul(n_tokens, k_aux, &aux_pairs) ||
        !sae__add(main_pairs, aux_pairs, &total))
        return SAE_E_NOMEM;
    return sae__workspace_reserve_pairs(&o->ws, total, 0);
}

/* The step's arguments against the model and the optimizer: SAE_OK or the
 * failure, with its detail set (fn names the public function). */
static int step_check_args(const char *fn, const sae_model *m, const sae_optimizer *o,
                           const float *x, const float *y, size_t n_tokens)
{
    int rc = SAE_OK;
    /* the moments must match the model's parameter block, view by view (JumpReLU,
     * Gated and skip transcoders have more; a transcoder's W_dec is d_out wide) */
    if (m->d_in != o->d_in || m->d_sae != o->d_sae || memcmp(&m->lay, &o->lay, sizeof m->lay) != 0 ||
        m->shard_begin != o->shard_begin || sae__total_features(m) != o->d_sae_total)
        rc = sae__fail(SAE_E_INVALID_ARG, "%s: the optimizer was made for a model of another "
                       "shape or parameter set", fn);
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc == SAE_OK && y &&
        (rc = sae__check_rows(fn, "y", y, n_tokens, "n_tokens", m->d_out, "d_out",
                              sizeof(float))) == SAE_OK)
        rc = sae__check_finite(fn, "y", y, n_tokens * m->d_out);
    if (rc == SAE_OK)
        rc = sae__matryoshka_check_batch(fn, m, n_tokens);
    if (rc == SAE_OK && !y && m->kind != SAE_KIND_AUTOENCODER)
        rc = sae__fail(SAE_E_INVALID_ARG, "%s: a transcoder learns a target y: use "
                       "sae_step_target", fn);
    return rc;
}

/* Adam's update of step t from the gradients in o->grad (norm: theirs; the
 * maxima bound the update, see adam_provably_finite), and what it refreshes on
 * the way: the bf16 copy of W_enc and the next step's decoder row norms. */
static int adam_update(const char *fn, sae_model *m, sae_optimizer *o, sae_par_step *par,
                       uint64_t t, double lr, double norm, float param_absmax, float m1_absmax,
                       float m2_max, bool bf16)
{
    int rc;
    adam_consts c;
    c.beta1 = (float)o->opt.beta1;
    c.one_minus_beta1 = (float)(1.0 - o->opt.beta1);
    c.beta2 = (float)o->opt.beta2;
    c.one_minus_beta2 = (float)(1.0 - o->opt.beta2);
    c.step_size = (float)(lr / (1.0 - pow(o->opt.beta1, (double)t)));
    c.bc2_sqrt = (float)sqrt(1.0 - pow(o->opt.beta2, (double)t));
    c.eps = (float)o->opt.eps;
    c.grad_scale = (o->opt.grad_clip > 0.0 && norm > o->opt.grad_clip) ? (float)(o->opt.grad_clip / norm) : 1.0f;

    const size_t w_enc_count = m->d_sae * m->d_in;
    /* every rank takes the same decision: the bound reads maxima over all */
    if (!adam_provably_finite(&c, norm, param_absmax, m1_absmax, m2_max)) {
        bool finite =
            adam_pass(&c, o->grad, m->params, o->m1, o->m2, o->lay.total, o->ws.pool, true, NULL,
                      NULL);
        if (par && (rc = sae__par_all_true(par, finite, &finite)) != SAE_OK)
            return rc;
        if (!finite)
            return sae__fail(SAE_E_NONFINITE, "%s: the updated parameters would not be finite",
                             fn);
    }
    adam_maxima mx;
    /* the pass also writes the bf16 copy of W_enc and the next step's decoder
     * row norms */
    adam_extras extras = {bf16 ? o->ws.w_enc16 : NULL, m->lay.w_enc_t, w_enc_count,
                          o->ws.norms, m->lay.w_dec, m->d_sae, m->d_out};
    adam_pass(&c, o->grad, m->params, o->m1, o->m2, o->lay.total, o->ws.pool, false, &mx,
              &extras);
    m->version++; /* the parameters changed; the bf16 copy and norms followed them */
    if (bf16)
        o->ws.w16_version = m->version;
    o->ws.norms_model = m;
    o->ws.norms_version = m->version;
    m->param_absmax = mx.param_absmax;
    o->m1_absmax = mx.m1_absmax;
    o->m2_max = mx.m2_max;
    o->steps = t;
    return SAE_OK;
}

/* After the update: tokens since each feature last fired (n_loss: the tokens
 * the loss averages over) and BatchTopK's threshold estimate. */
static void step_bookkeeping(sae_model *m, sae_optimizer *o, size_t n_loss,
                             const sae_backward_result *res)
{
    /* (last_fired counts in the batch the loss averages over: the global one
     * of a data-parallel step) */
    for (size_t i = 0; i < o->d_sae; i++) {
        uint64_t last = o->ws.last_fired[i];
        uint64_t since = o->since_fired[i];
        o->since_fired[i] = last ? n_loss - last
                                 : (since > UINT64_MAX - n_loss ? UINT64_MAX : since + n_loss);
    }
    if (sae__batch_selected(m->arch) && res->batch_min_kept > 0.0f) {
        float beta = (float)o->opt.threshold_beta;
        m->batch_threshold = m->batch_threshold < 0.0f
                                 ? res->batch_min_kept
                                 : beta * m->batch_threshold + (1.0f - beta) * res->batch_min_kept;
    }
}

/* The step on x against the target y (NULL: x); fn names the public function. */
static int step(const char *fn, sae_model *m, sae_optimizer *o, const float *x, const float *y,
                size_t n_tokens, sae_losses *out)
{
    if (!m || !o)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : "o");
    /* With communicators attached, a failure is not returned before the
     * step's first exchange: the other ranks learn of it there, and every
     * rank returns the same status. */
    int rc = step_check_args(fn, m, o, x, y, n_tokens);
    /* ---- schedule hook (schedule.c): the lr and lambda of this step -------- */
    uint64_t t = o->steps + 1;
    double lr = 0.0, lambda = 0.0;
    if (rc == SAE_OK)
        rc = sae__schedule_values(o, t, &lr, &lambda);
    /* ------------------------------------------------------------------------ */
    const int n_threads = sae__resolve_threads(o->opt.threads);
    size_t k_aux = auxk_setup(m, o);
    /* bf16 for the plain autoencoders (others: float32) */
    const bool bf16 = o->opt.precision == SAE_PRECISION_BF16 && sae__bf16_covers(m);
    sae_step_shape shape = {m->d_in, m->d_sae, n_tokens, n_threads, m->arch, k_aux, m->d_out,
                            o->opt.gemm, bf16, sae__fused_covers(m) && !o->par, m->n_levels};
    const bool fresh = o->ws.norms == NULL; /* the first step: all or nothing */
    if (rc == SAE_OK)
        rc = sae__workspace_reserve(&o->ws, &shape);
    sae_par_step ps, *par = NULL;
    if (o->par) {
        par = &ps;
        rc = sae__par_begin(o, m, x, y, n_tokens, k_aux, rc, &ps);
        if (rc != SAE_OK) /* agreed by every rank */
            return rc;
        /* a reservation that fails now: the others learn of it at the pass's
         * next exchange */
        if (ps.status == SAE_OK) /* (a grid may carry a failure from the header) */
            ps.status = reserve_parallel_pairs(m, o, n_tokens, ps.n_global, k_aux);
    } else if (rc != SAE_OK) {
        return rc;
    }
    /* bf16: the copy of W_enc that the last Adam pass wrote, unless the model
     * is another one or was changed since (then it is made here) */
    o->ws.bf16 = bf16;
    if (bf16 && (o->ws.w16_model != m || o->ws.w16_version != m->version)) {
        bf16_task b = {sae__w_enc_t(m), o->ws.w_enc16, m->d_in};
        sae__parallel_for(o->ws.pool, m->d_sae, bf16_rows, &b);
        o->ws.w16_model = m;
        o->ws.w16_version = m->version;
    }
    /* AuxK runs when some feature is dead (feature shards: in some shard) */
    if (k_aux && mark_dead(o, o->ws.dead) == 0 && !(par && par->features && par->n_dead_total))
        k_aux = 0;
    sae_step_config cfg = {lambda, o->opt.kernel, o->ws.pool, o->opt.auxk_coeff, k_aux,
                           k_aux ? o->ws.dead : NULL, o->opt.jumprelu_bandwidth,
                           par ? par->n_global : n_tokens, par};

    sae_backward_result res;
    memset(&res, 0, sizeof res);
    /* (a distributed step runs the pass whatever this rank's status: its
     * exchanges tell the others) */
    rc = sae__forward_backward(m, &cfg, x, y, n_tokens, &o->ws, o->grad, &res);
    float param_absmax = m->param_absmax, m1_absmax = o->m1_absmax, m2_max = o->m2_max;
    if (par) /* the ranks' gradients and statistics, or the first failure */
        rc = sae__par_reduce(par, o, m, rc, &res, &param_absmax, &m1_absmax, &m2_max);
    else if (rc == SAE_E_NOMEM && fresh)
        sae__workspace_free(&o->ws);
    if (rc != SAE_OK)
        return par ? rc : rc == SAE_E_NONFINITE ? sae__fail(rc, "%s: x holds NaN or Inf", fn)
                                                : sae__fail(rc, "%s: out of memory for the step's "
                                                            "active pairs", fn);
    const size_t n_loss = cfg.loss_tokens;
    /* Non-finite gradients stop the step: their squared norm is then NaN or Inf
     * (it is summed in double, which finite float squares cannot overflow). */
    if (!isfinite(res.grad_sumsq))
        return sae__fail(SAE_E_NONFINITE, "%s: the gradients are not finite", fn);
    double norm = sqrt(res.grad_sumsq);

    if ((rc = adam_update(fn, m, o, par, t, lr, norm, param_absmax, m1_absmax, m2_max, bf16)) !=
        SAE_OK)
        return rc;
    step_bookkeeping(m, o, n_loss, &res);
    if (out)
        sae__losses_from_sums(&res.sums, n_loss, m->arch, lambda,
                              o->opt.auxk_coeff * res.aux_loss, out);
    return SAE_OK;
}

int sae_step(sae_model *m, sae_optimizer *o, const float *x, size_t n_tokens, sae_losses *out)
{
    return step("sae_step", m, o, x, NULL, n_tokens, out);
}

int sae_step_target(sae_model *m, sae_optimizer *o, const float *x, const float *y,
                    size_t n_tokens, sae_losses *out)
{
    if (!y)
        return sae__fail(SAE_E_INVALID_ARG, "sae_step_target: y is NULL");
    return step("sae_step_target", m, o, x, y, n_tokens, out);
}
