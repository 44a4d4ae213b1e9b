/*
 * Selection without the whole row: the k largest values of a stream.
 *
 * TopK keeps, per token, the k largest positive values of max(pre, 0), ties
 * at the k-th value kept in feature order; BatchTopK keeps the K = n k largest
 * of the batch, ties in token, then feature order; AuxK keeps, per token, the
 * k_aux largest among the dead features. The fused encoder produces
 * pre-activations a tile of features at a time and never holds a token's row
 * (let alone the batch) whole, so these selections run on streams: values
 * arrive in feature order (per token) or in any order (the batch), and a
 * bounded buffer keeps every value that can still be selected.
 *
 * Per stream, with k to keep and a buffer of cap >= k entries:
 *   - a value enters if it is positive and above the stream's bar, once the
 *     bar is set (equal to it cannot win: the k earlier entries at or above
 *     the bar come first in index order);
 *   - when the buffer is full, it is compacted to exactly the k entries the
 *     selection would keep so far (those above the k-th value, then ties in
 *     index order), and the bar becomes the k-th value.
 * The entries are kept in arrival order, so a final selection over the buffer
 * (the same rule) gives exactly the selection over the whole stream.
 *
 * The vector kernel (AVX-512: compare, then compress-store the survivors)
 * makes the common case, a tile where nothing beats the bar, a few
 * instructions per 16 values.
 */
#include "internal.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SAE_HAVE_AVX512_SELECT 1
#include <immintrin.h>
#endif

/* ---- the k-th largest of a small array --------------------------------------- */

/* The k-th largest (1-based, 1 <= k <= n) of v[0..n); reorders v. Hoare
 * partition around a median of three, descending. */
float sae__kth_largest(float *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        float a = v[lo], b = v[mid], c = v[hi];
        float pivot = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        size_t i = lo, j = hi;
        for (;;) {
            while (v[i] > pivot)
                i++;
            while (v[j] < pivot)
                j--;
            if (i >= j)
                break;
            float t = v[i];
            v[i] = v[j];
            v[j] = t;
            i++;
            j--;
        }
        /* v[lo..j] >= pivot >= v[j+1..hi] */
        if (want <= j)
            hi = j;
        else
            lo = j + 1;
    }
    return v[want];
}

/* ---- one stream ----------------------------------------------------------------- */

/* Keep, of the entries idx/val[0..*count) (arrival order), exactly those the
 * selection of k keeps: above the k-th value, then ties at it in arrival
 * order; returns the k-th value. *count > k on entry. scratch: *count floats. */
static float compact(uint32_t *idx, float *val, size_t *count, size_t k, float *scratch)
{
    const size_t n = *count; /* every entry is positive: it beat a bar >= 0 */
    sae_topk_cut cut = sae__topk_cut(val, n, k, scratch);
    const float kth = cut.kth;
    size_t out = 0;
    for (size_t q = 0; q < n; q++) {
        bool keep = sae__topk_keep(val[q], &cut);
        idx[out] = idx[q];
        val[out] = val[q];
        out += keep;
    }
    *count = out;
    return kth;
}

void sae__topk_stream_init(sae_topk_stream *s, uint32_t *idx, float *val, size_t cap, size_t k)
{
    s->idx = idx;
    s->val = val;
    s->cap = cap;
    s->k = k;
    s->count = 0;
    s->bar = 0.0f;
}

/* Append the entries of v[0..w) (indices base + j) above the bar, where pick
 * (may be NULL) allows; compacts when full. Portable version. */
static void push_portable(sae_topk_stream *s, const float *v, size_t w, uint32_t base,
                          const uint8_t *pick, float *scratch)
{
    for (size_t j = 0; j < w; j++) {
        float x = v[j];
        if (!(x > s->bar) || (pick && !pick[j]))
            continue;
        if (s->count == s->cap)
            s->bar = compact(s->idx, s->val, &s->count, s->k, scratch);
        if (!(x > s->bar))
            continue;
        s->idx[s->count] = base + (uint32_t)j;
        s->val[s->count] = x;
        s->count++;
    }
}

#ifdef SAE_HAVE_AVX512_SELECT
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
push_avx512(sae_topk_stream *s, const float *v, size_t w, uint32_t base, const uint8_t *pick,
            float *scratch)
{
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (size_t j = 0; j < w; j += 16) {
        __mmask16 in = w - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - j)) - 1u);
        __m512 x = _mm512_maskz_loadu_ps(in, v + j);
        __mmask16 hit = _mm512_mask_cmp_ps_mask(in, x, _mm512_set1_ps(s->bar), _CMP_GT_OQ);
        if (!hit)
            continue;
        if (pick) {
            __m128i p = _mm_maskz_loadu_epi8(in, pick + j);
            hit &= _mm_test_epi8_mask(p, p);
            if (!hit)
                continue;
        }
        unsigned n = (unsigned)__builtin_popcount(hit);
        if (s->count + n > s->cap) { /* room for the slow path, entry by entry */
            push_portable(s, v + j, w - j < 16 ? w - j : 16, base + (uint32_t)j,
                          pick ? pick + j : NULL, scratch);
            continue;
        }
        __m512i ix = _mm512_add_epi32(lane, _mm512_set1_epi32((int)(base + (uint32_t)j)));
        _mm512_mask_compressstoreu_ps(s->val + s->count, hit, x);
        _mm512_mask_compressstoreu_epi32(s->idx + s->count, hit, ix);
        s->count += n;
    }
}
#endif

void sae__topk_stream_push(sae_topk_stream *s, const float *v, size_t w, uint32_t base,
                           const uint8_t *pick, float *scratch)
{
#ifdef SAE_HAVE_AVX512_SELECT
    bool vector = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl");
#ifdef SAE_TESTING
    vector = vector && !sae__test_portable_kernels;
#endif
    if (vector) {
        push_avx512(s, v, w, base, pick, scratch);
        return;
    }
#endif
    push_portable(s, v, w, base, pick, scratch);
}

size_t sae__topk_stream_finish(sae_topk_stream *s, float *scratch)
{
    if (s->count > s->k)
        s->bar = compact(s->idx, s->val, &s->count, s->k, scratch);
    return s->count;
}

/* ---- the batch ---------------------------------------------------------------------- */

/* The batch's order of preference: larger value, then earlier token, then
 * earlier feature. A total order: no two entries tie. */
static inline bool ahead(const sae_batch_entry *a, const sae_batch_entry *b)
{
    if (a->val != b->val)
        return a->val > b->val;
    if (a->tok != b->tok)
        return a->tok < b->tok;
    return a->feat < b->feat;
}

static inline uint64_t key_of(const sae_batch_entry *e)
{
    return (uint64_t)e->tok << 32 | e->feat;
}

/* The k-th smallest (1 <= k <= n) of v[0..n); reorders v. */
static uint64_t kth_smallest_key(uint64_t *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        uint64_t pivot = v[lo + (hi - lo) / 2];
        size_t i = lo, j = hi;
        for (;;) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i >= j)
                break;
            uint64_t t = v[i];
            v[i] = v[j];
            v[j] = t;
            i++;
            j--;
        }
        if (want <= j)
            hi = j;
        else
            lo = j + 1;
    }
    return v[want];
}

static inline uint32_t bits_of(float v)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

/* The K-th largest (1 <= K <= n) value of e[0..n), all positive: a radix
 * select on the bit patterns (which order positive floats as their values),
 * 12, 10 and 10 bits: a histogram pass over the entries, then over the
 * values of the chosen bucket only (copied to cand, n floats). Branch-free
 * counting: several times faster than a quickselect on the values. */
static float kth_largest_positive(const sae_batch_entry *e, size_t n, size_t K, float *cand)
{
    static const int shift[3] = {20, 10, 0};
    size_t hist[4096];
    uint32_t prefix = 0;
    size_t m = 0;
    for (int level = 0; level < 3; level++) {
        const size_t bins = level == 0 ? 4096 : 1024;
        const uint32_t low = (uint32_t)(bins - 1);
        memset(hist, 0, bins * sizeof hist[0]);
        if (level == 0)
            for (size_t q = 0; q < n; q++)
                hist[bits_of(e[q].val) >> 20]++;
        else
            for (size_t q = 0; q < m; q++)
                hist[(bits_of(cand[q]) >> shift[level]) & low]++;
        /* the bucket of the K-th, from the largest values down */
        size_t b = bins - 1, seen = 0;
        while (seen + hist[b] < K)
            seen += hist[b--];
        K -= seen;
        prefix |= (uint32_t)b << shift[level];
        if (level == 2)
            break;
        /* the bucket's values, for the next level */
        const uint32_t high = ~(uint32_t)0 << shift[level];
        size_t out = 0;
        if (level == 0) {
            for (size_t q = 0; q < n; q++) {
                cand[out] = e[q].val;
                out += (bits_of(e[q].val) & high) == prefix;
            }
        } else {
            for (size_t q = 0; q < m; q++) {
                cand[out] = cand[q];
                out += (bits_of(cand[q]) & high) == prefix;
            }
        }
        m = out;
    }
    float kth;
    memcpy(&kth, &prefix, sizeof kth);
    return kth;
}

/* Keep exactly the K entries of e[0..*n) that come first in the order of
 * preference, in their relative order; returns the K-th. *n > K on entry.
 * The selection runs on the values (ties at the K-th value, rare, are settled
 * by (token, feature)). scratch: *n + 1 entries. */
static sae_batch_entry batch_compact(sae_batch_entry *e, size_t *n, size_t K,
                                     sae_batch_entry *scratch)
{
    const size_t count = *n;
    float *vals = (float *)(void *)scratch;
    float kth = kth_largest_positive(e, count, K, vals);
    size_t above = 0, tied = 0;
    for (size_t q = 0; q < count; q++) {
        above += e[q].val > kth;
        tied += e[q].val == kth;
    }
    size_t ties = K - above; /* 1 <= ties <= tied */
    /* the last tie kept: the ties-th smallest (token, feature) among the tied
     * (keys after the values in scratch: 4 n + 8 (alignment) + 8 tied bytes
     * fit in 12 (n + 1)) */
    uintptr_t keys_at = ((uintptr_t)(vals + count) + 7) & ~(uintptr_t)7;
    uint64_t *keys = (uint64_t *)(void *)keys_at;
    size_t m = 0;
    for (size_t q = 0; q < count; q++)
        if (e[q].val == kth)
            keys[m++] = key_of(&e[q]);
    uint64_t cut = ties == tied ? UINT64_MAX : kth_smallest_key(keys, m, ties);
    sae_batch_entry bar = {0, 0, kth};
    uint64_t bar_key = 0;
    size_t out = 0;
    for (size_t q = 0; q < count; q++) {
        bool keep = e[q].val > kth || (e[q].val == kth && key_of(&e[q]) <= cut);
        if (keep && e[q].val == kth && key_of(&e[q]) >= bar_key) {
            bar_key = key_of(&e[q]);
            bar = e[q];
        }
        e[out] = e[q];
        out += keep;
    }
    *n = out;
    return bar;
}

void sae__batch_stream_init(sae_batch_stream *s, sae_batch_entry *e, size_t cap, size_t K)
{
    s->e = e;
    s->cap = cap;
    s->K = K;
    s->count = 0;
    s->bar = (sae_batch_entry){0, 0, 0.0f};
    s->has_bar = false;
}

void sae__batch_stream_floor(sae_batch_stream *s, float floor)
{
    if (!(floor > 0.0f))
        return;
    /* an entry at the floor comes before it: (token, feature) never reach
     * UINT32_MAX (the sparse path's indices stay below 2^31) */
    s->bar = (sae_batch_entry){UINT32_MAX, UINT32_MAX, floor};
    s->has_bar = true;
}

/* One value that passed the filter (positive, not below the bar's value). */
static inline void batch_offer(sae_batch_stream *s, float v, uint32_t tok, uint32_t feat,
                               sae_batch_entry *scratch)
{
    sae_batch_entry x = {tok, feat, v};
    if (s->has_bar && !ahead(&x, &s->bar))
        return;
    if (s->count == s->cap) {
        s->bar = batch_compact(s->e, &s->count, s->K, scratch);
        s->has_bar = true;
        if (!ahead(&x, &s->bar))
            return;
    }
    s->e[s->count++] = x;
}

#ifdef SAE_HAVE_AVX512_SELECT
__attribute__((target("avx512f"))) static void
batch_push_avx512(sae_batch_stream *s, const float *v, size_t w, uint32_t tok, uint32_t base,
                  sae_batch_entry *scratch)
{
    for (size_t j = 0; j < w; j += 16) {
        __mmask16 in = w - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - j)) - 1u);
        __m512 x = _mm512_maskz_loadu_ps(in, v + j);
        float low = s->bar.val; /* 0 before the first compaction: positives only */
        __mmask16 hit = _mm512_mask_cmp_ps_mask(in, x, _mm512_set1_ps(low), _CMP_GE_OQ) &
                        _mm512_mask_cmp_ps_mask(in, x, _mm512_setzero_ps(), _CMP_GT_OQ);
        while (hit) {
            unsigned b = (unsigned)__builtin_ctz(hit);
            hit &= hit - 1;
            float val = v[j + b];
            if (val < s->bar.val) /* the bar rose within this vector */
                continue;
            batch_offer(s, val, tok, base + (uint32_t)(j + b), scratch);
        }
    }
}
#endif

void sae__batch_stream_push(sae_batch_stream *s, const float *v, size_t w, uint32_t tok,
                            uint32_t base, sae_batch_entry *scratch)
{
#ifdef SAE_HAVE_AVX512_SELECT
    bool vector = __builtin_cpu_supports("avx512f");
#ifdef SAE_TESTING
    vector = vector && !sae__test_portable_kernels;
#endif
    if (vector) {
        batch_push_avx512(s, v, w, tok, base, scratch);
        return;
    }
#endif
    for (size_t j = 0; j < w; j++)
        if (v[j] > 0.0f && v[j] >= s->bar.val)
            batch_offer(s, v[j], tok, base + (uint32_t)j, scratch);
}

size_t sae__batch_select(sae_batch_entry *e, size_t n, size_t K, sae_batch_entry *scratch,
                         float *kth)
{
    if (n <= K) {
        float low = 0.0f;
        for (size_t q = 0; q < n; q++)
            low = q == 0 || e[q].val < low ? e[q].val : low;
        *kth = low;
        return n;
    }
    *kth = batch_compact(e, &n, K, scratch).val;
    return n;
}
