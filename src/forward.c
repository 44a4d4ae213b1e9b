/*
 * The forward pass, one for inference and training alike:
 *
 *   xc    = x - b_dec                      (checked finite on the way)
 *   pre   = xc W_enc + b_enc               one SGEMM per block of tokens
 *   f     = act(pre)                       the architecture's activation
 *   x_hat = f W_dec + b_dec                one SGEMM (the dense decoder)
 *
 * with, per token, what the loss and the backward pass need: sum_i f_i r_i
 * (r_i = ||W_dec[i,:]||, the L1 term), the active count, the flags of the
 * active features (and JumpReLU's band), AuxK's picks.
 *
 * sae__encode_block is the encoder of both: sae_encode and friends reach it
 * through a sae_forward (per-call scratch, on the calling thread), and
 * sae__forward_backward (backward.c) with the step's workspace and threads.
 *
 * Activations (see sae.h, "Architectures"):
 *   ReLU       f = max(pre, 0)
 *   TopK       the k largest of max(pre, 0) per token; ties at the k-th value
 *              are kept in feature order
 *   BatchTopK  training: the n k largest of max(pre, 0) over the batch (ties
 *              in token, then feature order); inference: pre where
 *              pre > threshold (ReLU while the threshold is unset, < 0)
 *   JumpReLU   f = pre where pre > theta_i, else 0
 * Selection uses a quickselect on a scratch copy per token, and an exact radix
 * select over float bit patterns for the batch (positive floats order like
 * their bit patterns read as unsigned integers).
 */
#include "internal.h"
#include "parallel.h"
#include "simd.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---- decoder row norms ------------------------------------------------------- */

typedef struct row_norms_task {
    const sae_model *m;
    float *norms;
} row_norms_task;

static void row_norms_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const sae_model *m = ((row_norms_task *)ctx)->m;
    float *norms = ((row_norms_task *)ctx)->norms;
    const float *w_dec = sae__w_dec(m);
    for (size_t i = begin; i < end; i++)
        norms[i] = sae__row_norm(w_dec + i * m->d_out, m->d_out);
}

float sae__row_norm(const float *row, size_t d)
{
    /* eight partial sums in a fixed order (the products are exact in double):
     * independent chains the compiler can keep in one vector register */
    double acc[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    size_t j = 0;
    for (; j + 8 <= d; j += 8)
        for (size_t l = 0; l < 8; l++)
            acc[l] += (double)row[j + l] * row[j + l];
    for (size_t l = 0; j < d; j++, l++)
        acc[l] += (double)row[j] * row[j];
    double sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    return (float)sqrt(sum);
}

void sae__decoder_row_norms(const sae_model *m, float *norms, sae_pool *pool)
{
    row_norms_task task = {m, norms};
    sae__parallel_for(pool, m->d_sae, row_norms_range, &task);
}

void sae__thresholds(const sae_model *m, float *theta)
{
    const float *t = sae__log_thr(m);
    for (size_t i = 0; i < m->lay.log_thr_count; i++)
        theta[i] = expf(t[i]);
}

void sae__mag_scales(const sae_model *m, float *scale)
{
    const float *r = sae__r_mag(m);
    for (size_t i = 0; i < m->lay.gated_count; i++)
        scale[i] = expf(r[i]);
}

void sae__activation_init(sae_activation *act, const sae_model *m, const float *norms,
                          const float *theta, const float *mag_scale)
{
    memset(act, 0, sizeof *act);
    act->arch = m->arch;
    act->d_sae = m->d_sae;
    act->k = m->k;
    act->b_enc = sae__b_enc(m);
    act->norms = norms;
    act->theta = theta;
    act->mag_scale = mag_scale;
    act->b_mag = sae__b_mag(m);
    act->batch_threshold = m->batch_threshold;
}

/* ---- the ReLU activation with its statistics (vectorised) -------------------------- */

/* The statistics of one token's features f[0..d): *l1 = sum_i f_i r_i, and
 * the number of f_i > 0 (returned) with their flags in mask (ceil(d / 16)
 * chunks, may be NULL). With relu (the ReLU SAE), each f_i first becomes
 * max(f_i + b_enc_i, 0), in the same pass. Inlined with relu constant, so each
 * use compiles to its own branch-free loop. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline size_t row_stats(float *f, const float *b_enc, const float *norms, size_t d,
                               double *l1, uint16_t *mask, const bool relu)
{
    double s = 0.0;
    size_t active = 0;
    for (size_t i0 = 0; i0 < d; i0 += 16) {
        size_t i1 = d - i0 < 16 ? d : i0 + 16;
        unsigned bits = 0;
        for (size_t i = i0; i < i1; i++) {
            float v = f[i];
            if (relu) {
                v += b_enc[i];
                v = v > 0.0f ? v : 0.0f;
                f[i] = v;
            }
            s += (double)v * norms[i];
            active += v > 0.0f;
            bits |= (unsigned)(v > 0.0f) << (i - i0);
        }
        if (mask)
            mask[i0 / 16] = (uint16_t)bits;
    }
    *l1 = s;
    return active;
}

#ifdef SAE_HAVE_AVX512
SAE_AVX512 static size_t relu_stats_avx512(float *f, const float *b_enc, const float *norms,
                                           size_t d, double *l1, uint16_t *mask)
{
    __m512d s = _mm512_setzero_pd();
    __m512 part = _mm512_setzero_ps();
    size_t active = 0;
    const __m512 zero = _mm512_setzero_ps();
    for (size_t i = 0; i < d; i += 16) {
        __mmask16 mk = sae__lanes_below(d, i);
        __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, f + i), _mm512_maskz_loadu_ps(mk, b_enc + i));
        v = _mm512_max_ps(v, zero);
        _mm512_mask_storeu_ps(f + i, mk, v);
        __mmask16 on = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
        active += (size_t)__builtin_popcount(on);
        if (mask)
            mask[i / 16] = (uint16_t)on;
        part = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(mk, norms + i), part);
        if ((i & 255) == 240) { /* flush the float partial sums to double every 256 */
            s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm512_castps512_ps256(part)));
            s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm256_castpd_ps(
                                     _mm512_extractf64x4_pd(_mm512_castps_pd(part), 1))));
            part = zero;
        }
    }
    s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm512_castps512_ps256(part)));
    s = _mm512_add_pd(s, _mm512_cvtps_pd(
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(part), 1))));
    *l1 = _mm512_reduce_add_pd(s);
    return active;
}
#endif

#if defined(__GNUC__)
__attribute__((noinline)) /* a loop of its own: compiled as tightly as it was alone */
#endif
static size_t relu_stats_portable(float *f, const float *b_enc, const float *norms, size_t d,
                                  double *l1, uint16_t *mask)
{
    return row_stats(f, b_enc, norms, d, l1, mask, true);
}

static size_t relu_stats(float *f, const float *b_enc, const float *norms, size_t d, double *l1,
                         uint16_t *mask)
{
#ifdef SAE_HAVE_AVX512
    if (sae__use_avx512())
        return relu_stats_avx512(f, b_enc, norms, d, l1, mask);
#endif
    return relu_stats_portable(f, b_enc, norms, d, l1, mask);
}

/* ---- selection: TopK per token, AuxK's picks ------------------------------------------ */

/* The cut of the k largest positive values of f[0..d) (among those with
 * pick[i] set, if pick is non-NULL). scratch: d floats. */
static sae_topk_cut topk_cut_of(const float *f, size_t d, size_t k, const uint8_t *pick,
                            float *scratch)
{
    size_t n = 0;
    for (size_t i = 0; i < d; i++)
        if (f[i] > 0.0f && (!pick || pick[i]))
            scratch[n++] = f[i];
    sae_topk_cut cut = {0.0f, 0};
    if (n <= k)
        return cut; /* every positive value is kept: kth = 0, all strictly above */
    cut.kth = sae__kth_largest(scratch, n, k); /* select.c */
    size_t above = 0;
    for (size_t i = 0; i < d; i++)
        above += f[i] > cut.kth && (!pick || pick[i]);
    cut.ties = k - above;
    return cut;
}

sae_topk_cut sae__topk_cut(const float *f, size_t d, size_t k, float *scratch)
{
    return topk_cut_of(f, d, k, NULL, scratch);
}

/* ---- the activation of one token ------------------------------------------------- */

/* Gated: one token's u = xc W_enc to f = H(u + b_gate) ReLU(exp(r_mag) u +
 * b_mag), in place, and gate = ReLU(u + b_gate) (may be NULL) with
 * *gate_l1 = sum_i gate_i r_i; open (may be NULL): ceil(d / 16) chunks of
 * flags, gate_i > 0. */
static void gated_row(const sae_activation *a, float *f, float *gate, double *gate_l1,
                      uint16_t *open)
{
    const size_t d = a->d_sae;
    double s = 0.0;
    for (size_t i0 = 0; i0 < d; i0 += 16) {
        size_t i1 = d - i0 < 16 ? d : i0 + 16;
        unsigned bits = 0;
        for (size_t i = i0; i < i1; i++) {
            float u = f[i], g = u + a->b_enc[i], mag = a->mag_scale[i] * u + a->b_mag[i];
            g = g > 0.0f ? g : 0.0f;
            f[i] = g > 0.0f && mag > 0.0f ? mag : 0.0f;
            s += (double)g * a->norms[i];
            bits |= (unsigned)(g > 0.0f) << (i - i0);
            if (gate)
                gate[i] = g;
        }
        if (open)
            open[i0 / 16] = (uint16_t)bits;
    }
    *gate_l1 = s;
}

/* One token's GEMM output (pre-activations without b_enc) to features, in
 * place; *l1 = sum_i f_i r_i; returns the active count. mask, band (may be
 * NULL): ceil(d_sae / 16) chunks of flags (f_i > 0; JumpReLU's band). aux
 * (may be NULL): AuxK's top k_aux picks among dead features. gate, *gate_l1:
 * Gated's gate values (may be NULL) and sparsity term. scratch: d_sae
 * floats. */
static size_t activate_row(const sae_activation *a, float *f, double *l1, uint16_t *mask,
                           uint16_t *band, sae_aux_row *aux, float *gate, double *gate_l1,
                           float *scratch)
{
    const size_t d = a->d_sae;
    const float *b_enc = a->b_enc;
    /* the ReLU SAE (never with AuxK): the vectorised pass does it all */
    if (a->arch == SAE_ARCH_RELU)
        return relu_stats(f, b_enc, a->norms, d, l1, mask);
    if (a->arch == SAE_ARCH_GATED) { /* band: the gates that are open */
        gated_row(a, f, gate, gate_l1, band);
        return row_stats(f, NULL, a->norms, d, l1, mask, false);
    }
    for (size_t i = 0; i < d; i++)
        f[i] += b_enc[i];

    /* AuxK's picks come from ReLU(pre) before TopK removes anything */
    if (aux) {
        sae_topk_cut cut = topk_cut_of(f, d, a->k_aux, a->dead, scratch);
        size_t n = 0;
        for (size_t i = 0; i < d; i++)
            if (a->dead[i] && sae__topk_keep(f[i], &cut)) {
                aux->feat[n] = (uint32_t)i;
                aux->fval[n] = f[i];
                n++;
            }
        aux->count = n;
    }

    switch (a->arch) {
    case SAE_ARCH_TOPK: {
        sae_topk_cut cut = topk_cut_of(f, d, a->k, NULL, scratch);
        for (size_t i = 0; i < d; i++)
            f[i] = sae__topk_keep(f[i], &cut) ? f[i] : 0.0f;
        break;
    }
    case SAE_ARCH_BATCHTOPK:
    case SAE_ARCH_MATRYOSHKA:
        if (a->training || a->batch_threshold < 0.0f) {
            for (size_t i = 0; i < d; i++) /* training: the batch selection follows */
                f[i] = f[i] > 0.0f ? f[i] : 0.0f;
        } else {
            float thr = a->batch_threshold;
            for (size_t i = 0; i < d; i++)
                f[i] = f[i] > thr && f[i] > 0.0f ? f[i] : 0.0f;
        }
        break;
    case SAE_ARCH_JUMPRELU: {
        const float half = 0.5f * a->bandwidth;
        for (size_t i0 = 0; i0 < d; i0 += 16) {
            size_t i1 = d - i0 < 16 ? d : i0 + 16;
            unsigned in_band = 0;
            for (size_t i = i0; i < i1; i++) {
                float u = f[i] - a->theta[i];
                if (band)
                    in_band |= (unsigned)(u > -half && u < half) << (i - i0);
                f[i] = u > 0.0f ? f[i] : 0.0f;
            }
            if (band)
                band[i0 / 16] = (uint16_t)in_band;
        }
        break;
    }
    default: /* the ReLU SAE returned above */
        break;
    }

    return row_stats(f, NULL, a->norms, d, l1, mask, false);
}

/* ---- the encoder ------------------------------------------------------------------ */

/* xc = x - b_dec for the block's rows (b_dec NULL: xc = x), and its bf16
 * rounding, xc16 when not NULL; bad[tid] flags NaN or Inf in x. */
typedef struct center_task {
    const float *x, *b_dec;
    float *xc;
    uint16_t *xc16;
    size_t d_in;
    int bad[SAE_MAX_THREADS];
} center_task;

static void center_range(void *ctx, size_t begin, size_t end, int tid)
{
    center_task *c = ctx;
    const size_t d_in = c->d_in;
    int bad = 0;
    for (size_t t = begin; t < end; t++) {
        const float *xt = c->x + t * d_in;
        float *xct = c->xc + t * d_in;
        if (c->b_dec)
            for (size_t j = 0; j < d_in; j++) {
                bad |= (xt[j] - xt[j]) != 0.0f; /* NaN for Inf and NaN */
                xct[j] = xt[j] - c->b_dec[j];
            }
        else
            for (size_t j = 0; j < d_in; j++) {
                bad |= (xt[j] - xt[j]) != 0.0f;
                xct[j] = xt[j];
            }
        if (c->xc16)
            sae__bf16_from_f32(c->xc16 + t * d_in, xct, d_in);
    }
    c->bad[tid] = bad;
}

/* The activation of each token of the block, and its per-token outputs. */
typedef struct activate_task {
    const sae_activation *act;
    const sae_encoded *out;
    float *scratch; /* n_threads x d_sae */
    size_t pairs[SAE_MAX_THREADS];
} activate_task;

static void activate_range(void *ctx, size_t begin, size_t end, int tid)
{
    activate_task *a = ctx;
    const sae_encoded *out = a->out;
    const size_t d_sae = a->act->d_sae, chunks = out->mask_chunks;
    size_t pairs_range = 0;
    for (size_t t = begin; t < end; t++) {
        uint16_t *mask = out->mask ? out->mask + t * chunks : NULL;
        uint16_t *band = out->band ? out->band + t * chunks : NULL;
        sae_aux_row aux = {NULL, NULL, 0};
        if (a->act->dead) {
            aux.feat = out->aux.feat + t * out->aux.cap;
            aux.fval = out->aux.fval + t * out->aux.cap;
        }
        double l1, gate_l1 = 0.0;
        size_t active = activate_row(a->act, out->f + t * d_sae, &l1, mask, band,
                                     a->act->dead ? &aux : NULL,
                                     out->gate ? out->gate + t * d_sae : NULL, &gate_l1,
                                     a->scratch + (size_t)tid * d_sae);
        size_t pairs = active;
        if (band && a->act->arch == SAE_ARCH_JUMPRELU) { /* JumpReLU's pairs include its band */
            pairs = 0;
            for (size_t c = 0; c < chunks; c++)
                pairs += (size_t)__builtin_popcount((unsigned)(mask[c] | band[c]));
        }
        if (a->act->dead)
            out->aux.count[t] = aux.count;
        if (out->l1)
            out->l1[t] = l1;
        if (out->active)
            out->active[t] = active;
        if (out->pairs)
            out->pairs[t] = pairs;
        if (out->gate_l1)
            out->gate_l1[t] = gate_l1;
        if (out->sums) {
            out->sums->l1 += l1;
            out->sums->active += (double)active;
            out->sums->gate += gate_l1;
        }
        pairs_range += pairs;
    }
    a->pairs[tid] = pairs_range;
}

int sae__center(const sae_model *m, sae_pool *pool, const float *x, size_t rows, float *xc,
                uint16_t *xc16)
{
    /* a transcoder's b_dec is in the output's space: its input is not centred */
    center_task c = {.x = x, .b_dec = m->kind == SAE_KIND_AUTOENCODER ? sae__b_dec(m) : NULL,
                     .xc = xc, .xc16 = xc16, .d_in = m->d_in};
    for (int k = 0; k < sae__pool_threads(pool); k++)
        c.bad[k] = 0;
    sae__parallel_for(pool, rows, center_range, &c);
    int bad = 0;
    for (int k = 0; k < sae__pool_threads(pool); k++)
        bad |= c.bad[k];
    return bad ? sae__fail(SAE_E_NONFINITE, "x holds NaN or Inf") : SAE_OK;
}

#ifdef SAE_TESTING
_Thread_local bool sae__test_encode_fails = false;
#endif

int sae__encode_block(const sae_model *m, const sae_activation *act, sae_pool *pool,
                      float *scratch, const float *x, size_t rows, const sae_encoded *out,
                      size_t *pairs)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    int rc = sae__center(m, pool, x, rows, out->xc, out->w_enc16 ? out->xc16 : NULL);
    if (rc != SAE_OK)
        return rc;
#ifdef SAE_TESTING
    if (sae__test_encode_fails)
        return sae__fail(SAE_E_NOMEM, "sae_step: the encoder's product failed (test hook)");
#endif
    /* pre = xc W_enc; b_enc is added by the activation (one pass over the
     * block, not two) */
    if (out->w_enc16) {
        rc = sae__gemm_use_bf16(out->gemm, pool, false, true, rows, d_sae, d_in, 1.0f,
                                    out->xc16, d_in, out->w_enc16, d_in, 0.0f, out->f, d_sae);
        if (rc != SAE_OK)
            return rc;
    } else {
        sae__gemm_use_f32(out->gemm, pool, false, true, rows, d_sae, d_in, 1.0f, out->xc, d_in,
                          sae__w_enc_t(m), d_in, 0.0f, out->f, d_sae);
    }
    /* sums are added token by token: on one thread, in token order */
    sae_pool *act_pool = out->sums ? NULL : pool;
    activate_task a = {.act = act, .out = out, .scratch = scratch};
    for (int k = 0; k < sae__pool_threads(act_pool); k++)
        a.pairs[k] = 0;
    sae__parallel_for(act_pool, rows, activate_range, &a);
    if (pairs) {
        *pairs = 0;
        for (int k = 0; k < sae__pool_threads(act_pool); k++)
            *pairs += a.pairs[k];
    }
    return SAE_OK;
}

/* ---- BatchTopK's selection over the batch ---------------------------------- */

static uint32_t float_bits(float v)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

/* The bit pattern of the K-th largest positive value of f (rows x d), by a
 * two-level radix select on the upper and lower 16 bits; 0 if there are at
 * most K positive values. hist: 65536 counters per thread of scratch. */
typedef struct radix_task {
    const float *f;
    size_t d;
    uint64_t *hist;
    uint32_t prefix, prefix_mask;
    int shift;
} radix_task;

static void radix_count_range(void *ctx, size_t begin, size_t end, int tid)
{
    const radix_task *r = ctx;
    uint64_t *h = r->hist + (size_t)tid * 65536;
    for (size_t t = begin; t < end; t++) {
        const float *row = r->f + t * r->d;
        for (size_t i = 0; i < r->d; i++) {
            uint32_t b = float_bits(row[i]);
            if (row[i] > 0.0f && (b & r->prefix_mask) == r->prefix)
                h[(b >> r->shift) & 0xFFFFu]++;
        }
    }
}

static int batch_kth_bits(const float *f, size_t rows, size_t d, size_t K, uint64_t *hist,
                          sae_pool *pool, sae_par_step *par, uint32_t *kth)
{
    const int n_threads = sae__pool_threads(pool);
    radix_task r = {f, d, hist, 0, 0, 16};
    *kth = 0;
    for (int level = 0; level < 2; level++) {
        r.shift = level == 0 ? 16 : 0;
        memset(hist, 0, (size_t)n_threads * 65536 * sizeof(uint64_t));
        sae__parallel_for(pool, rows, radix_count_range, &r);
        for (int h = 1; h < n_threads; h++)
            for (size_t b = 0; b < 65536; b++)
                hist[b] += hist[(size_t)h * 65536 + b];
        int rc = sae__par_batch_hist(par, hist); /* a distributed batch: every rank's */
        if (rc != SAE_OK)
            return rc;
        /* walk buckets from the largest values down */
        uint64_t seen = 0;
        size_t bucket = 65536;
        while (bucket-- > 0) {
            if (seen + hist[bucket] >= K)
                break;
            seen += hist[bucket];
        }
        if (bucket == (size_t)-1)
            return SAE_OK; /* fewer than K positive values */
        K -= (size_t)seen;
        r.prefix |= (uint32_t)bucket << r.shift;
        r.prefix_mask |= 0xFFFFu << r.shift;
    }
    *kth = r.prefix;
    return SAE_OK;
}

typedef struct select_task {
    float *f;
    size_t d;
    const float *norms;
    const sae_encoded *out;
    size_t *ties;   /* per token: its ties at the K-th value, then those it keeps */
    float kth_value;
    bool min_positive; /* also each thread's smallest positive value (distributed) */
    uint32_t min_bits[SAE_MAX_THREADS];
} select_task;

/* Per token: entries above the K-th value (into out->active) and equal to it. */
static void count_ties_range(void *ctx, size_t begin, size_t end, int tid)
{
    select_task *s = ctx;
    uint32_t min_bits = UINT32_MAX;
    for (size_t t = begin; t < end; t++) {
        size_t above = 0, ties = 0;
        const float *row = s->f + t * s->d;
        for (size_t i = 0; i < s->d; i++) {
            above += row[i] > s->kth_value;
            ties += s->kth_value > 0.0f && row[i] == s->kth_value;
        }
        for (size_t i = 0; s->min_positive && i < s->d; i++) {
            uint32_t b = float_bits(row[i]);
            if (row[i] > 0.0f && b < min_bits)
                min_bits = b;
        }
        s->ties[t] = ties;
        s->out->active[t] = above;
    }
    s->min_bits[tid] = min_bits;
}

/* Keep what is selected, zero the rest; statistics and the mask per token. */
static void keep_selected_range(void *ctx, size_t begin, size_t end, int tid)
{
    select_task *s = ctx;
    const sae_encoded *out = s->out;
    uint32_t min_bits = UINT32_MAX;
    for (size_t t = begin; t < end; t++) {
        float *row = s->f + t * s->d;
        uint16_t *mask = out->mask + t * out->mask_chunks;
        sae_topk_cut cut = {s->kth_value, s->ties[t]};
        double l1 = 0.0;
        size_t active = 0;
        for (size_t i = 0; i < s->d; i++) {
            bool keep = sae__topk_keep(row[i], &cut);
            float v = keep ? row[i] : 0.0f;
            row[i] = v;
            l1 += (double)v * s->norms[i];
            active += keep;
            if (i % 16 == 0)
                mask[i / 16] = 0;
            mask[i / 16] |= (uint16_t)((unsigned)keep << (i % 16));
            uint32_t b = float_bits(v);
            if (keep && b < min_bits)
                min_bits = b;
        }
        out->l1[t] = l1;
        out->active[t] = active;
        out->pairs[t] = active;
    }
    s->min_bits[tid] = min_bits;
}

/* The smallest of the threads' bit patterns, as a float (0 if none). */
static float min_of_threads(const select_task *s, int n_threads)
{
    uint32_t min_bits = UINT32_MAX;
    for (int h = 0; h < n_threads; h++)
        min_bits = s->min_bits[h] < min_bits ? s->min_bits[h] : min_bits;
    float v;
    memcpy(&v, &min_bits, sizeof v);
    return min_bits == UINT32_MAX ? 0.0f : v;
}

int sae__batch_topk(float *f, size_t rows, size_t d, size_t k, const float *norms,
                    const sae_encoded *out, size_t *ties, uint64_t *radix_hist, sae_pool *pool,
                    sae_par_step *par, float *min_kept)
{
    const int n_threads = sae__pool_threads(pool);
    /* the batch: these rows, or a data-parallel step's global batch */
    size_t K = (par && par->data ? par->n_global : rows) * k;
    select_task s = {.f = f, .d = d, .norms = norms, .out = out, .ties = ties,
                     .min_positive = par != NULL};
    uint32_t kth;
    int rc = batch_kth_bits(f, rows, d, K, radix_hist, pool, par, &kth);
    if (rc != SAE_OK)
        return rc;
    memcpy(&s.kth_value, &kth, sizeof s.kth_value);
    /* values above the K-th are kept; ties at it are kept in token, then
     * feature order until K: count ties per token, then each token's allowance */
    for (int h = 0; h < n_threads; h++)
        s.min_bits[h] = UINT32_MAX;
    sae__parallel_for(pool, rows, count_ties_range, &s);
    size_t above_total = 0;
    for (size_t t = 0; t < rows; t++)
        above_total += out->active[t];
    float min_positive = min_of_threads(&s, n_threads);
    if (par) { /* the ranks' shares of the ties, in the global order */
        rc = sae__par_batch_ties(par, ties, rows, K, kth != 0, &above_total, &min_positive);
        if (rc != SAE_OK)
            return rc;
    } else {
        size_t ties_left = kth ? K - above_total : 0;
        for (size_t t = 0; t < rows; t++) {
            size_t take = ties[t] < ties_left ? ties[t] : ties_left;
            ties[t] = take;
            ties_left -= take;
        }
    }
    for (int h = 0; h < n_threads; h++)
        s.min_bits[h] = UINT32_MAX;
    sae__parallel_for(pool, rows, keep_selected_range, &s);
    /* the smallest value kept: the K-th if there were K positive values, else
     * the smallest positive one (over every rank) */
    *min_kept = par ? (kth ? s.kth_value : min_positive) : min_of_threads(&s, n_threads);
    return SAE_OK;
}

/* ---- the decoder ------------------------------------------------------------------ */

void sae__forward_decode_onto(const sae_model *m, const sae_gemm_use *gemm, sae_pool *pool,
                              const float *f, size_t rows, const float *base, float *x_hat)
{
    const size_t d_out = m->d_out;
    for (size_t t = 0; base && t < rows; t++)
        memcpy(x_hat + t * d_out, base, d_out * sizeof(float));
    sae__gemm_use_f32(gemm, pool, false, false, rows, d_out, m->d_sae, 1.0f, f, m->d_sae,
                      sae__w_dec(m), d_out, base ? 1.0f : 0.0f, x_hat, d_out);
}

void sae__forward_decode(const sae_model *m, const sae_gemm_use *gemm, sae_pool *pool,
                         const float *f, size_t rows, float *x_hat)
{
    sae__forward_decode_onto(m, gemm, pool, f, rows, sae__b_dec(m), x_hat);
}

void sae__forward_decode_prefix(const sae_model *m, const float *f, size_t rows, size_t width,
                                float *x_hat)
{
    const size_t d_out = m->d_out;
    const float *b_dec = sae__b_dec(m);
    for (size_t t = 0; t < rows; t++)
        memcpy(x_hat + t * d_out, b_dec, d_out * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)d_out, (int)width,
                1.0f, f, (int)m->d_sae, sae__w_dec(m), (int)d_out, 1.0f, x_hat, (int)d_out);
}

void sae__forward_skip(const sae_model *m, const float *x, size_t rows, float *y)
{
    if (m->kind != SAE_KIND_SKIP_TRANSCODER)
        return;
    /* y (rows x d_out) += x (rows x d_in) W_skip^T, W_skip: d_out x d_in */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)m->d_out, (int)m->d_in,
                1.0f, x, (int)m->d_in, sae__w_skip(m), (int)m->d_in, 1.0f, y, (int)m->d_out);
}

/* ---- the forward pass for read-only callers ----------------------------------------- */

void sae__forward_free(sae_forward *fw)
{
    sae__free(fw->norms);
    sae__free(fw->theta);
    sae__free(fw->mag_scale);
    sae__free(fw->scratch);
    sae__free(fw->xc);
    sae__free(fw->f);
    sae__free(fw->gate);
    sae__free(fw->x_hat);
    sae__gemm_free(fw->ctx);
    memset(fw, 0, sizeof *fw);
}

int sae__forward_init(sae_forward *fw, const sae_model *m, size_t block, unsigned buffers)
{
    const size_t d_in = m->d_in, d_out = m->d_out, d_sae = m->d_sae;
    const bool gated = m->arch == SAE_ARCH_GATED;
    memset(fw, 0, sizeof *fw);
    fw->m = m;
    fw->block = block;
    /* block <= SAE_BLOCK_TOKENS in the library's callers, and d_in * d_sae
     * was checked at model creation: none of these sizes overflows */
    bool ok = (fw->norms = sae__alloc(d_sae * sizeof(float))) &&
              (fw->scratch = sae__alloc(d_sae * sizeof(float))) &&
              (fw->xc = sae__alloc(block * d_in * sizeof(float))) &&
              (m->arch != SAE_ARCH_JUMPRELU || (fw->theta = sae__alloc(d_sae * sizeof(float)))) &&
              (!gated || (fw->mag_scale = sae__alloc(d_sae * sizeof(float)))) &&
              (!(buffers & SAE_FORWARD_F) || (fw->f = sae__alloc(block * d_sae * sizeof(float)))) &&
              (!(buffers & SAE_FORWARD_F) || !gated ||
               (fw->gate = sae__alloc(block * d_sae * sizeof(float)))) &&
              (!(buffers & SAE_FORWARD_X_HAT) ||
               (fw->x_hat = sae__alloc(block * d_out * sizeof(float)))) &&
              sae__gemm_create(&fw->ctx, SAE_GEMM_AUTO) == SAE_OK;
    if (!ok) {
        sae__forward_free(fw);
        return sae__fail(SAE_E_NOMEM, "out of memory for the forward pass of %zu tokens", block);
    }
    sae__decoder_row_norms(m, fw->norms, NULL);
    if (fw->theta)
        sae__thresholds(m, fw->theta);
    if (fw->mag_scale)
        sae__mag_scales(m, fw->mag_scale);
    sae__activation_init(&fw->act, m, fw->norms, fw->theta, fw->mag_scale);
    fw->gemm = (sae_gemm_use){NULL, fw->ctx};
    return SAE_OK;
}

int sae__forward_encode(sae_forward *fw, const float *x, size_t rows, float *f,
                        sae_loss_sums *sums)
{
    const sae_encoded out = {.xc = fw->xc, .f = f, .gate = f == fw->f ? fw->gate : NULL,
                             .sums = sums, .gemm = &fw->gemm};
    return sae__encode_block(fw->m, &fw->act, NULL, fw->scratch, x, rows, &out, NULL);
}

int sae__check_features(const char *fn, const float *f, size_t rows, size_t d_sae, size_t t0)
{
    if (sae__all_finite(f, rows * d_sae))
        return SAE_OK;
    return sae__fail(SAE_E_NONFINITE, "%s: the features of tokens %zu..%zu are not finite (the "
                     "model's weights overflow on this input)", fn, t0, t0 + rows - 1);
}

/* Whether every pre-activation of x (n_tokens x d_in) is provably below
 * 2^126 in magnitude: |pre_i| <= (max|x| + max|b_dec|) d_in max|W_enc| +
 * max|b_enc|, and every partial sum of the GEMM is bounded the same way.
 * Gated's magnitude path scales by exp(r_mag) <= exp(p): p e^p bounds both. */
static bool features_bounded(const sae_model *m, const float *x, size_t n_tokens)
{
    const double p = m->param_absmax * (m->arch == SAE_ARCH_GATED ? exp(m->param_absmax) : 1.0);
    const double x_max = sae__absmax(x, n_tokens * m->d_in);
    return (x_max + p) * (double)m->d_in * p + p < 0x1p126;
}

int sae__forward_check(sae_forward *fw, const char *fn, const float *x, size_t n_tokens)
{
    const sae_model *m = fw->m;
    if (features_bounded(m, x, n_tokens))
        return SAE_OK;
    /* the bound cannot tell: encode once to look, in the forward pass's f or
     * a block of scratch */
    float *f = fw->f ? fw->f : sae__alloc(fw->block * m->d_sae * sizeof(float));
    if (!f)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for a block of features", fn);
    int rc = SAE_OK;
    for (size_t t0 = 0; t0 < n_tokens && rc == SAE_OK; t0 += fw->block) {
        size_t rows = sae__block_rows(n_tokens, t0, fw->block);
        if ((rc = sae__forward_encode(fw, x + t0 * m->d_in, rows, f, NULL)) == SAE_OK)
            rc = sae__check_features(fn, f, rows, m->d_sae, t0);
    }
    if (f != fw->f)
        sae__free(f);
    return rc;
}

/* ---- the losses -------------------------------------------------------------------- */

int sae__check_losses(const char *fn, const sae_losses *l)
{
    if (isfinite(l->loss) && isfinite(l->l2) && isfinite(l->l1) && isfinite(l->l0))
        return SAE_OK;
    return sae__fail(SAE_E_NONFINITE, "%s: the losses are not finite (loss %g, l2 %g, l1 %g): "
                     "the model's weights overflow on this batch (e.g. a decoder row's norm)",
                     fn, l->loss, l->l2, l->l1);
}

void sae__losses_from_sums(const sae_loss_sums *sums, size_t n_tokens, int arch, double lambda,
                           double extra, sae_losses *out)
{
    out->l2 = sums->l2 / (double)n_tokens;
    out->l1 = sums->l1 / (double)n_tokens;
    out->l0 = sums->active / (double)n_tokens;
    const double n = (double)n_tokens;
    switch (arch) {
    case SAE_ARCH_RELU: out->loss = out->l2 + lambda * out->l1; break;
    case SAE_ARCH_JUMPRELU: out->loss = out->l2 + lambda * out->l0; break;
    case SAE_ARCH_GATED: out->loss = out->l2 + lambda * sums->gate / n + sums->extra / n; break;
    case SAE_ARCH_MATRYOSHKA: out->loss = out->l2 + sums->extra / n; break;
    default: out->loss = out->l2; break;
    }
    out->loss += extra;
}
