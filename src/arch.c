/*
 * Architectures: the activation that turns pre-activations into features, for
 * inference (sae_encode and friends) and for training, where it also reports
 * what the backward pass needs (active mask, JumpReLU's band, AuxK's picks).
 *
 *   ReLU       f = max(pre, 0)
 *   TopK       the k largest of max(pre, 0) per token; ties at the k-th value
 *              are kept in feature order
 *   BatchTopK  training: the n k largest of max(pre, 0) over the batch (ties
 *              in token, then feature order); inference: pre where
 *              pre > threshold (ReLU while the threshold is unset, < 0)
 *   JumpReLU   f = pre where pre > theta_i, else 0
 *
 * Selection uses a quickselect on a scratch copy per token, and an exact radix
 * select over float bit patterns for the batch (positive floats order like
 * their bit patterns read as unsigned integers).
 */
#include "internal.h"

#include <math.h>
#include <string.h>


/* The k-th largest (1-based) of v[0..n), 1 <= k <= n; reorders v. */
static float kth_largest(float *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1, want = k - 1; /* index in descending order */
    while (lo < hi) {
        /* median of three as pivot */
        size_t mid = lo + (hi - lo) / 2;
        float a = v[lo], b = v[mid], c = v[hi];
        float pivot = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        size_t i = lo, j = hi;
        while (i <= j) { /* descending partition */
            while (v[i] > pivot)
                i++;
            while (v[j] < pivot)
                j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (want <= j && j != (size_t)-1 && j >= lo)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return v[want];
    }
    return v[want];
}

/* Keep the k largest positive values of f[0..d) (selected among `pick` entries
 * if pick is non-NULL) and report them through keep(): returns how many were
 * kept. scratch: d floats. Entries above the k-th value are kept, then entries
 * equal to it in index order up to k. */
typedef struct topk_result {
    float kth;     /* the k-th largest value (0 if fewer than k positive) */
    size_t above;  /* entries strictly above kth */
    size_t ties;   /* entries equal to kth to keep, in index order */
} topk_result;

static topk_result topk_threshold(const float *f, size_t d, size_t k, const uint8_t *pick,
                                  float *scratch)
{
    size_t n = 0;
    for (size_t i = 0; i < d; i++)
        if (f[i] > 0.0f && (!pick || pick[i]))
            scratch[n++] = f[i];
    topk_result r = {0.0f, n, 0};
    if (n <= k)
        return r; /* every positive value is kept: kth = 0, all strictly above */
    r.kth = kth_largest(scratch, n, k);
    size_t above = 0;
    for (size_t i = 0; i < d; i++)
        above += f[i] > r.kth && (!pick || pick[i]);
    r.above = above;
    r.ties = k - above;
    return r;
}

size_t sae__activate_row(const sae_activation *a, float *f, double *l1, uint16_t *mask,
                         uint16_t *band, sae_aux_row *aux, float *scratch)
{
    const size_t d = a->d_sae;
    const float *b_enc = a->b_enc;
    /* the ReLU SAE (never with AuxK): the shared vectorised pass does it all */
    if (a->arch == SAE_ARCH_RELU)
        return sae__relu_stats_row(f, b_enc, a->norms, d, l1, mask);
    for (size_t i = 0; i < d; i++)
        f[i] += b_enc[i];

    /* AuxK's picks come from ReLU(pre) before TopK removes anything */
    if (aux) {
        topk_result r = topk_threshold(f, d, a->k_aux, a->dead, scratch);
        size_t n = 0, ties = r.ties;
        for (size_t i = 0; i < d; i++) {
            if (!a->dead[i] || !(f[i] > 0.0f))
                continue;
            bool take = f[i] > r.kth || (f[i] == r.kth && ties > 0);
            if (take) {
                ties -= f[i] == r.kth && !(f[i] > r.kth);
                aux->feat[n] = (uint32_t)i;
                aux->fval[n] = f[i];
                n++;
            }
        }
        aux->count = n;
    }

    switch (a->arch) {
    case SAE_ARCH_TOPK: {
        topk_result r = topk_threshold(f, d, a->k, NULL, scratch);
        size_t ties = r.ties;
        for (size_t i = 0; i < d; i++) {
            float v = f[i];
            bool keep = v > 0.0f && (v > r.kth || (v == r.kth && ties > 0));
            if (keep && !(v > r.kth))
                ties--;
            f[i] = keep ? v : 0.0f;
        }
        break;
    }
    case SAE_ARCH_BATCHTOPK:
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

    double s = 0.0;
    size_t active = 0;
    for (size_t i0 = 0; i0 < d; i0 += 16) {
        size_t i1 = d - i0 < 16 ? d : i0 + 16;
        unsigned bits = 0;
        for (size_t i = i0; i < i1; i++) {
            s += (double)f[i] * a->norms[i];
            active += f[i] > 0.0f;
            bits |= (unsigned)(f[i] > 0.0f) << (i - i0);
        }
        if (mask)
            mask[i0 / 16] = (uint16_t)bits;
    }
    *l1 = s;
    return active;
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

static uint32_t batch_kth_bits(const float *f, size_t rows, size_t d, size_t K, uint64_t *hist,
                               sae_pool *pool)
{
    const int n_threads = sae__pool_threads(pool);
    radix_task r = {f, d, hist, 0, 0, 16};
    for (int level = 0; level < 2; level++) {
        r.shift = level == 0 ? 16 : 0;
        memset(hist, 0, (size_t)n_threads * 65536 * sizeof(uint64_t));
        sae__parallel_for(pool, rows, radix_count_range, &r);
        for (int h = 1; h < n_threads; h++)
            for (size_t b = 0; b < 65536; b++)
                hist[b] += hist[(size_t)h * 65536 + b];
        /* walk buckets from the largest values down */
        uint64_t seen = 0;
        size_t bucket = 65536;
        while (bucket-- > 0) {
            if (seen + hist[bucket] >= K)
                break;
            seen += hist[bucket];
        }
        if (bucket == (size_t)-1)
            return 0; /* fewer than K positive values */
        K -= (size_t)seen;
        r.prefix |= (uint32_t)bucket << r.shift;
        r.prefix_mask |= 0xFFFFu << r.shift;
    }
    return r.prefix;
}

typedef struct select_task {
    float *f;
    size_t d;
    const float *norms;
    sae_workspace *ws;
    float kth_value;
    uint32_t kth;
    uint32_t min_bits[SAE_MAX_THREADS];
} select_task;

/* Per token: entries above the K-th value and entries equal to it. */
static void count_ties_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    select_task *s = ctx;
    size_t *allow = s->ws->row_ptr; /* scratch, overwritten by the counts later */
    for (size_t t = begin; t < end; t++) {
        size_t above = 0, ties = 0;
        const float *row = s->f + t * s->d;
        for (size_t i = 0; i < s->d; i++) {
            above += row[i] > s->kth_value;
            ties += s->kth != 0 && row[i] == s->kth_value;
        }
        allow[t + 1] = ties;
        s->ws->active_tok[t] = above;
    }
}

/* Keep what is selected, zero the rest; statistics and the mask per token. */
static void keep_selected_range(void *ctx, size_t begin, size_t end, int tid)
{
    select_task *s = ctx;
    sae_workspace *ws = s->ws;
    uint32_t min_bits = UINT32_MAX;
    for (size_t t = begin; t < end; t++) {
        float *row = s->f + t * s->d;
        uint16_t *mask = ws->mask + t * ws->mask_chunks;
        size_t ties = ws->row_ptr[t + 1];
        double l1 = 0.0;
        size_t active = 0;
        for (size_t i = 0; i < s->d; i++) {
            float v = row[i];
            bool keep = v > 0.0f &&
                        (v > s->kth_value || (s->kth != 0 && v == s->kth_value && ties > 0));
            if (keep && !(v > s->kth_value))
                ties--;
            v = keep ? v : 0.0f;
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
        ws->l1_tok[t] = l1;
        ws->active_tok[t] = active;
        ws->row_ptr[t + 1] = active;
    }
    s->min_bits[tid] = min_bits;
}

float sae__batch_topk(float *f, size_t rows, size_t d, size_t k, const float *norms,
                      sae_workspace *ws, sae_pool *pool)
{
    const int n_threads = sae__pool_threads(pool);
    size_t K = rows * k;
    select_task s = {.f = f, .d = d, .norms = norms, .ws = ws};
    s.kth = batch_kth_bits(f, rows, d, K, ws->radix_hist, pool);
    memcpy(&s.kth_value, &s.kth, sizeof s.kth_value);
    /* values above the K-th are kept; ties at it are kept in token, then
     * feature order until K: count ties per token, then each token's allowance */
    sae__parallel_for(pool, rows, count_ties_range, &s);
    size_t above_total = 0;
    for (size_t t = 0; t < rows; t++)
        above_total += ws->active_tok[t];
    size_t ties_left = s.kth ? K - above_total : 0;
    for (size_t t = 0; t < rows; t++) {
        size_t take = ws->row_ptr[t + 1] < ties_left ? ws->row_ptr[t + 1] : ties_left;
        ws->row_ptr[t + 1] = take;
        ties_left -= take;
    }
    for (int h = 0; h < n_threads; h++)
        s.min_bits[h] = UINT32_MAX;
    sae__parallel_for(pool, rows, keep_selected_range, &s);
    uint32_t min_bits = UINT32_MAX;
    for (int h = 0; h < n_threads; h++)
        min_bits = s.min_bits[h] < min_bits ? s.min_bits[h] : min_bits;
    float min_kept;
    memcpy(&min_kept, &min_bits, sizeof min_kept);
    return min_bits == UINT32_MAX ? 0.0f : min_kept;
}

/* ---- TopK's selection for other callers ------------------------------------ */

void sae__topk_select(const float *f, size_t d, size_t k, float *scratch, float *kth,
                      size_t *ties)
{
    topk_result r = topk_threshold(f, d, k, NULL, scratch);
    *kth = r.kth;
    *ties = r.ties;
}
