/*
 * Feature statistics over a stream of rows (sae_feature_stats_*): per
 * feature, where it fires (f > 0), the firing count, the exact sum and sum of
 * squares of its activations, a log-spaced histogram of them and its top-N
 * rows. Everything is exact or ordered deterministically, so accumulators
 * over disjoint rows merge, in any order, into the accumulator over all rows
 * bit for bit:
 *
 * - Sums are fixed-point integers wide enough for any float (a Kulisch
 *   accumulator): a float v = m 2^e (m < 2^24, e >= -149) adds m to bit
 *   e + 149 of the sum; its square, m^2 2^(2e) computed exactly, adds m^2 to
 *   bit 2e + 298 of the sum of squares. 64 bits of headroom above the largest
 *   float hold 2^64 additions. Reading rounds once to double.
 * - Top-N lists are kept sorted by value (descending), ties by row id
 *   (ascending), which is a total order on (value, row): any insertion or
 *   merge order gives the same list.
 * - Memory is O(d_sae x (N + bins)) whatever the number of rows.
 *
 * The file format is the safetensors container (safetensors.c) with the
 * tensors listed in sae.h; the loader trusts nothing in it.
 */
#include "fileio.h"
#include "internal.h"
#include "safetensors.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SUM_LIMBS 6    /* 2^-149 .. 2^(128 + 64): 341 bits */
#define SQ_LIMBS 10    /* 2^-298 .. 2^(256 + 64): 618 bits */
#define SUM_BASE (-149)
#define SQ_BASE (-298)

#define MAX_TOP_N 65536
#define MAX_BINS 65536
#define MAX_LOG10 60.0

#define STATS_FILE "feature_stats.safetensors"
#define FORMAT_NAME "feature_stats"

struct sae_feature_stats {
    size_t d_sae, top_n, n_bins;
    double log10_min, log10_max;
    uint64_t rows;      /* rows fed (and merged in) */
    uint64_t first_row; /* the lowest row id fed (next_row while rows is 0) */
    uint64_t next_row;  /* the row id the next row fed gets */
    double *edges;      /* n_bins + 1: bin k holds edges[k] <= v < edges[k + 1] */
    uint64_t *count;    /* d_sae: rows where the feature fired */
    uint64_t *sum;      /* d_sae x SUM_LIMBS, little-endian limbs */
    uint64_t *sum_sq;   /* d_sae x SQ_LIMBS */
    uint64_t *hist;     /* d_sae x n_bins */
    uint64_t *top_row;  /* d_sae x top_n: the first min(count, top_n) are used */
    float *top_val;     /* d_sae x top_n */
};

/* ---- exact sums ------------------------------------------------------------ */

/* L += m 2^pos. The callers' bounds keep every carry inside the limbs; the
 * loop bound keeps a hostile file's sums from writing past them. */
static void limbs_add(uint64_t *limbs, size_t n, uint64_t m, unsigned pos)
{
    size_t k = pos / 64;
    unsigned shift = pos % 64;
    uint64_t lo = m << shift, hi = shift ? m >> (64 - shift) : 0;
    uint64_t old = limbs[k];
    limbs[k] += lo;
    uint64_t carry = limbs[k] < old;
    if (++k >= n)
        return;
    old = limbs[k];
    limbs[k] += hi + carry; /* hi < 2^48: no overflow of hi + carry */
    carry = limbs[k] < old;
    while (carry && ++k < n)
        carry = ++limbs[k] == 0;
}

/* a += b, limb by limb. */
static void limbs_merge(uint64_t *a, const uint64_t *b, size_t n)
{
    uint64_t carry = 0;
    for (size_t k = 0; k < n; k++) {
        uint64_t s = a[k] + carry;
        carry = s < carry;
        a[k] = s + b[k];
        carry += a[k] < s;
    }
}

/* The value of the limbs times 2^base, rounded once to the nearest double. */
static double limbs_value(const uint64_t *limbs, size_t n, int base)
{
    size_t j = n;
    while (j > 0 && limbs[j - 1] == 0)
        j--;
    if (j == 0)
        return 0.0;
    j--;
    int top = 63;
    while (!(limbs[j] >> top))
        top--;
    /* w: the 64 bits from the highest set one down, the rest as a sticky bit
     * (below the rounding position, so the conversion rounds correctly) */
    uint64_t w = limbs[j] << (63 - top), sticky = 0;
    size_t below = j; /* limbs entirely below w */
    if (top < 63 && j > 0) {
        w |= limbs[j - 1] >> (top + 1);
        sticky = limbs[j - 1] << (63 - top);
        below = j - 1;
    }
    for (size_t k = 0; k < below; k++)
        sticky |= limbs[k];
    w |= sticky != 0;
    return ldexp((double)w, (int)(64 * j) + top - 63 + base);
}

/* v > 0 finite as m 2^e with m an integer below 2^24. */
static void float_parts(float v, uint64_t *m, int *e)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    uint32_t exp = (bits >> 23) & 0xFFu, mant = bits & 0x7FFFFFu;
    *m = exp ? (mant | 0x800000u) : mant;
    *e = exp ? (int)exp - 150 : -149;
}

/* ---- one pair ---------------------------------------------------------------- */

/* (v, r) comes before (w, s) in a top list. */
static bool ranks_before(float v, uint64_t r, float w, uint64_t s)
{
    return v > w || (v == w && r < s);
}

static size_t bin_of(const sae_feature_stats *s, float v)
{
    size_t a = 0, b = s->n_bins - 1; /* the bin is in [a, b] */
    while (a < b) {
        size_t mid = a + (b - a + 1) / 2;
        if ((double)v >= s->edges[mid])
            a = mid;
        else
            b = mid - 1;
    }
    return a;
}

static int compare_row_ids(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static size_t top_len(const sae_feature_stats *s, size_t i)
{
    return s->count[i] < s->top_n ? (size_t)s->count[i] : s->top_n;
}

/* Feature i fired with value v (> 0, finite) on row `row`. */
static void add_pair(sae_feature_stats *s, size_t i, float v, uint64_t row)
{
    const size_t n = s->top_n;
    uint64_t *rows = s->top_row + i * n;
    float *vals = s->top_val + i * n;
    size_t pos = top_len(s, i);
    if (pos < n || ranks_before(v, row, vals[n - 1], rows[n - 1])) {
        if (pos == n)
            pos = n - 1; /* the last entry drops out */
        for (; pos > 0 && ranks_before(v, row, vals[pos - 1], rows[pos - 1]); pos--) {
            vals[pos] = vals[pos - 1];
            rows[pos] = rows[pos - 1];
        }
        vals[pos] = v;
        rows[pos] = row;
    }
    s->count[i]++;
    s->hist[i * s->n_bins + bin_of(s, v)]++;
    uint64_t m;
    int e;
    float_parts(v, &m, &e);
    limbs_add(s->sum + i * SUM_LIMBS, SUM_LIMBS, m, (unsigned)(e - SUM_BASE));
    limbs_add(s->sum_sq + i * SQ_LIMBS, SQ_LIMBS, m * m, (unsigned)(2 * e - SQ_BASE));
}

/* ---- create, free, queries ------------------------------------------------- */

/* SAE_OK if sae_feature_stats_create accepts the configuration, else the
 * status with fn's detail. */
static int check_config(const char *fn, size_t d_sae, size_t top_n, size_t n_bins, double lo,
                        double hi)
{
    if (!isfinite(lo) || !isfinite(hi))
        return sae__fail(SAE_E_NONFINITE, "%s: log10 range [%g, %g] is not finite", fn, lo, hi);
    if (d_sae < 1 || d_sae > INT_MAX)
        return sae__fail(SAE_E_INVALID_ARG, "%s: d_sae %zu is outside [1, %d]", fn, d_sae,
                         INT_MAX);
    if (top_n < 1 || top_n > MAX_TOP_N)
        return sae__fail(SAE_E_INVALID_ARG, "%s: top_n %zu is outside [1, %d]", fn, top_n,
                         MAX_TOP_N);
    if (n_bins < 1 || n_bins > MAX_BINS)
        return sae__fail(SAE_E_INVALID_ARG, "%s: n_bins %zu is outside [1, %d]", fn, n_bins,
                         MAX_BINS);
    if (!(lo >= -MAX_LOG10 && hi <= MAX_LOG10 && lo < hi))
        return sae__fail(SAE_E_INVALID_ARG,
                         "%s: log10 range [%g, %g] is not an interval within [-60, 60]", fn, lo,
                         hi);
    return SAE_OK;
}

void sae_feature_stats_free(sae_feature_stats *s)
{
    if (!s)
        return;
    sae__free(s->edges);
    sae__free(s->count);
    sae__free(s->sum);
    sae__free(s->sum_sq);
    sae__free(s->hist);
    sae__free(s->top_row);
    sae__free(s->top_val);
    sae__free(s);
}

/* A zeroed accumulator of this configuration (already checked). */
static int stats_alloc(const char *fn, sae_feature_stats **out, size_t d_sae, size_t top_n,
                       size_t n_bins, double lo, double hi)
{
    *out = NULL;
    size_t hist_bytes, top_bytes, top_val_bytes;
    if (!sae__mul(d_sae, n_bins, &hist_bytes) || !sae__mul(hist_bytes, 8, &hist_bytes) ||
        !sae__mul(d_sae, top_n, &top_bytes) || !sae__mul(top_bytes, 8, &top_bytes))
        return sae__fail(SAE_E_INVALID_ARG, "%s: d_sae x (top_n + n_bins) = %zu x (%zu + %zu) "
                         "overflows size_t", fn, d_sae, top_n, n_bins);
    top_val_bytes = top_bytes / 2;
    sae_feature_stats *s = sae__alloc_zero(sizeof *s);
    if (!s)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory", fn);
    s->d_sae = d_sae;
    s->top_n = top_n;
    s->n_bins = n_bins;
    s->log10_min = lo;
    s->log10_max = hi;
    /* d_sae <= INT_MAX and the limb counts are small: no overflow below */
    s->edges = sae__alloc((n_bins + 1) * sizeof(double));
    s->count = sae__alloc_zero(d_sae * sizeof(uint64_t));
    s->sum = sae__alloc_zero(d_sae * SUM_LIMBS * sizeof(uint64_t));
    s->sum_sq = sae__alloc_zero(d_sae * SQ_LIMBS * sizeof(uint64_t));
    s->hist = sae__alloc_zero(hist_bytes);
    s->top_row = sae__alloc_zero(top_bytes);
    s->top_val = sae__alloc_zero(top_val_bytes);
    if (!s->edges || !s->count || !s->sum || !s->sum_sq || !s->hist || !s->top_row ||
        !s->top_val) {
        sae_feature_stats_free(s);
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for %zu features' statistics", fn,
                         d_sae);
    }
    for (size_t k = 0; k <= n_bins; k++)
        s->edges[k] = pow(10.0, lo + (hi - lo) * (double)k / (double)n_bins);
    *out = s;
    return SAE_OK;
}

int sae_feature_stats_create(sae_feature_stats **out, size_t d_sae, size_t top_n,
                             size_t n_bins, double log10_min, double log10_max)
{
    static const char fn[] = "sae_feature_stats_create";
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    int rc = check_config(fn, d_sae, top_n, n_bins, log10_min, log10_max);
    if (rc != SAE_OK)
        return rc;
    return stats_alloc(fn, out, d_sae, top_n, n_bins, log10_min, log10_max);
}

size_t sae_feature_stats_d_sae(const sae_feature_stats *s) { return s ? s->d_sae : 0; }
size_t sae_feature_stats_top_n(const sae_feature_stats *s) { return s ? s->top_n : 0; }
size_t sae_feature_stats_bins(const sae_feature_stats *s) { return s ? s->n_bins : 0; }
uint64_t sae_feature_stats_rows(const sae_feature_stats *s) { return s ? s->rows : 0; }
uint64_t sae_feature_stats_next_row(const sae_feature_stats *s) { return s ? s->next_row : 0; }

int sae_feature_stats_set_next_row(sae_feature_stats *s, uint64_t row)
{
    static const char fn[] = "sae_feature_stats_set_next_row";
    if (!s)
        return sae__fail(SAE_E_INVALID_ARG, "%s: s is NULL", fn);
    if (row < s->next_row)
        return sae__fail(SAE_E_INVALID_ARG, "%s: row %llu is below the next row id %llu", fn,
                         (unsigned long long)row, (unsigned long long)s->next_row);
    s->next_row = row;
    if (s->rows == 0)
        s->first_row = row;
    return SAE_OK;
}

/* The checks of the queries: s and out non-NULL, count as expected. */
static int check_query(const char *fn, const sae_feature_stats *s, const void *out,
                       const char *out_name, size_t count, size_t expected, const char *what)
{
    if (!s || !out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !s ? "s" : out_name);
    if (count != expected)
        return sae__fail(SAE_E_INVALID_ARG, "%s: count is %zu, not %s = %zu", fn, count, what,
                         expected);
    return SAE_OK;
}

int sae_feature_stats_bin_edges(const sae_feature_stats *s, double *edges, size_t count)
{
    int rc = check_query("sae_feature_stats_bin_edges", s, edges, "edges", count,
                         s ? s->n_bins + 1 : 0, "n_bins + 1");
    if (rc != SAE_OK)
        return rc;
    memcpy(edges, s->edges, count * sizeof(double));
    return SAE_OK;
}

int sae_feature_stats_counts(const sae_feature_stats *s, uint64_t *counts, size_t count)
{
    int rc = check_query("sae_feature_stats_counts", s, counts, "counts", count,
                         s ? s->d_sae : 0, "d_sae");
    if (rc != SAE_OK)
        return rc;
    memcpy(counts, s->count, count * sizeof(uint64_t));
    return SAE_OK;
}

int sae_feature_stats_sums(const sae_feature_stats *s, double *sum, double *sum_sq, size_t count)
{
    int rc = check_query("sae_feature_stats_sums", s, sum ? (const void *)sum : sum_sq,
                         "sum and sum_sq", count, s ? s->d_sae : 0, "d_sae");
    if (rc != SAE_OK)
        return rc;
    for (size_t i = 0; i < count; i++) {
        if (sum)
            sum[i] = limbs_value(s->sum + i * SUM_LIMBS, SUM_LIMBS, SUM_BASE);
        if (sum_sq)
            sum_sq[i] = limbs_value(s->sum_sq + i * SQ_LIMBS, SQ_LIMBS, SQ_BASE);
    }
    return SAE_OK;
}

int sae_feature_stats_max(const sae_feature_stats *s, float *max, size_t count)
{
    int rc = check_query("sae_feature_stats_max", s, max, "max", count, s ? s->d_sae : 0,
                         "d_sae");
    if (rc != SAE_OK)
        return rc;
    for (size_t i = 0; i < count; i++) /* the first of a top list is the maximum */
        max[i] = s->count[i] ? s->top_val[i * s->top_n] : 0.0f;
    return SAE_OK;
}

int sae_feature_stats_histogram(const sae_feature_stats *s, uint64_t *hist, size_t count)
{
    int rc = check_query("sae_feature_stats_histogram", s, hist, "hist", count,
                         s ? s->d_sae * s->n_bins : 0, "d_sae * n_bins");
    if (rc != SAE_OK)
        return rc;
    memcpy(hist, s->hist, count * sizeof(uint64_t));
    return SAE_OK;
}

int sae_feature_stats_top(const sae_feature_stats *s, size_t feature, uint64_t *rows,
                          float *values, size_t capacity, size_t *n)
{
    static const char fn[] = "sae_feature_stats_top";
    if (!s || !n)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !s ? "s" : "n");
    int rc = sae__check_capacity(fn, "rows", rows, capacity, "capacity", sizeof(uint64_t));
    if (rc == SAE_OK)
        rc = sae__check_capacity(fn, "values", values, capacity, "capacity", sizeof(float));
    if (rc != SAE_OK)
        return rc;
    if (feature >= s->d_sae)
        return sae__fail(SAE_E_INVALID_ARG, "%s: feature %zu is not below d_sae = %zu", fn,
                         feature, s->d_sae);
    size_t len = top_len(s, feature), copy = len < capacity ? len : capacity;
    if (copy > 0) {
        memcpy(rows, s->top_row + feature * s->top_n, copy * sizeof(uint64_t));
        memcpy(values, s->top_val + feature * s->top_n, copy * sizeof(float));
    }
    *n = len;
    return SAE_OK;
}

/* ---- feeding rows ------------------------------------------------------------ */

/* Whether n_tokens more rows get ids below 2^64. */
static int check_row_ids(const char *fn, const sae_feature_stats *s, size_t n_tokens)
{
    if (n_tokens > UINT64_MAX - s->next_row)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %zu rows from row id %llu would pass 2^64 - 1",
                         fn, n_tokens, (unsigned long long)s->next_row);
    return SAE_OK;
}

int sae_feature_stats_add(sae_feature_stats *s, const sae_model *m, const float *x,
                          size_t n_tokens)
{
    static const char fn[] = "sae_feature_stats_add";
    if (!s || !m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !s ? "s" : "m");
    if (m->d_sae != s->d_sae)
        return sae__fail(SAE_E_INVALID_ARG, "%s: the model has d_sae = %zu, the statistics %zu",
                         fn, m->d_sae, s->d_sae);
    int rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc == SAE_OK && (rc = check_row_ids(fn, s, n_tokens)) == SAE_OK)
        rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in);
    if (rc != SAE_OK)
        return rc;
    const size_t d_sae = s->d_sae;
    sae_sparse_encoder e;
    if (sae__sparse_encoder_init(&e, m, n_tokens, 0) != SAE_OK)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for a block of features", fn);
    uint32_t *feat = sae__alloc(d_sae * sizeof(uint32_t));
    float *val = sae__alloc(d_sae * sizeof(float));
    if (!feat || !val)
        rc = sae__fail(SAE_E_NOMEM, "%s: out of memory for %zu pairs", fn, d_sae);
    else
        rc = sae__forward_check(&e.fw, fn, x, n_tokens);
    if (rc != SAE_OK)
        goto cleanup;
    for (size_t t0 = 0; t0 < n_tokens; t0 += e.block) {
        size_t rows = sae__block_rows(n_tokens, t0, e.block);
        sae__sparse_encoder_run(&e, x + t0 * m->d_in, rows);
        for (size_t t = 0; t < rows; t++) {
            size_t n = sae__sparse_encoder_token(&e, t, feat, val, d_sae);
            for (size_t k = 0; k < n; k++)
                add_pair(s, feat[k], val[k], s->next_row);
            s->next_row++;
            s->rows++;
        }
    }
cleanup:
    sae__free(val);
    sae__free(feat);
    sae__sparse_encoder_free(&e);
    return rc;
}

int sae_feature_stats_add_sparse(sae_feature_stats *s, size_t n_tokens, const size_t *offsets,
                                 const uint32_t *features, const float *values)
{
    static const char fn[] = "sae_feature_stats_add_sparse";
    if (!s)
        return sae__fail(SAE_E_INVALID_ARG, "%s: s is NULL", fn);
    int rc = sae__check_offsets(fn, "offsets", offsets, n_tokens);
    if (rc == SAE_OK)
        rc = check_row_ids(fn, s, n_tokens);
    if (rc != SAE_OK)
        return rc;
    /* check everything before changing anything */
    if (offsets[n_tokens] != offsets[0] && (!features || !values))
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn,
                         !features ? "features" : "values");
    for (size_t t = 0; t < n_tokens; t++) {
        if (offsets[t + 1] < offsets[t])
            return sae__fail(SAE_E_INVALID_ARG, "%s: offsets[%zu] = %zu is below offsets[%zu] = %zu",
                             fn, t + 1, offsets[t + 1], t, offsets[t]);
        for (size_t k = offsets[t]; k < offsets[t + 1]; k++) {
            if (!isfinite(values[k]))
                return sae__fail(SAE_E_NONFINITE, "%s: values[%zu] (row %zu) is not finite", fn,
                                 k, t);
            if (!(values[k] > 0.0f))
                return sae__fail(SAE_E_INVALID_ARG, "%s: values[%zu] = %g (row %zu) is not "
                                 "positive", fn, k, (double)values[k], t);
            if (features[k] >= s->d_sae)
                return sae__fail(SAE_E_INVALID_ARG, "%s: features[%zu] = %u is not below d_sae "
                                 "= %zu", fn, k, (unsigned)features[k], s->d_sae);
            if (k > offsets[t] && features[k] <= features[k - 1])
                return sae__fail(SAE_E_INVALID_ARG, "%s: features[%zu] = %u (row %zu) does not "
                                 "follow %u in ascending order", fn, k, (unsigned)features[k], t,
                                 (unsigned)features[k - 1]);
        }
    }
    for (size_t t = 0; t < n_tokens; t++) {
        for (size_t k = offsets[t]; k < offsets[t + 1]; k++)
            add_pair(s, features[k], values[k], s->next_row);
        s->next_row++;
        s->rows++;
    }
    return SAE_OK;
}

/* ---- merging ------------------------------------------------------------------ */

static bool same_config(const sae_feature_stats *a, const sae_feature_stats *b)
{
    return a->d_sae == b->d_sae && a->top_n == b->top_n && a->n_bins == b->n_bins &&
           a->log10_min == b->log10_min && a->log10_max == b->log10_max;
}

int sae_feature_stats_merge(sae_feature_stats *dst, const sae_feature_stats *src)
{
    static const char fn[] = "sae_feature_stats_merge";
    if (!dst || !src)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !dst ? "dst" : "src");
    if (dst == src)
        return sae__fail(SAE_E_INVALID_ARG, "%s: dst and src are the same accumulator", fn);
    if (!same_config(dst, src))
        return sae__fail(SAE_E_INVALID_ARG, "%s: the configurations differ (d_sae, top_n, "
                         "n_bins or the log10 range)", fn);
    /* the span of row ids the two cover; disjoint rows fit in it */
    uint64_t next = dst->next_row > src->next_row ? dst->next_row : src->next_row;
    uint64_t first = next;
    if (dst->rows > 0)
        first = dst->first_row;
    if (src->rows > 0 && src->first_row < first)
        first = src->first_row;
    if (src->rows > next - first || dst->rows > next - first - src->rows)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %llu + %llu rows cannot be disjoint within row "
                         "ids %llu..%llu", fn, (unsigned long long)dst->rows,
                         (unsigned long long)src->rows, (unsigned long long)first,
                         (unsigned long long)next);
    const size_t n = dst->top_n;
    int rc = SAE_OK;
    uint64_t *rows = sae__alloc(n * sizeof(uint64_t));
    float *vals = sae__alloc(n * sizeof(float));
    if (!rows || !vals) {
        rc = sae__fail(SAE_E_NOMEM, "%s: out of memory", fn);
        goto cleanup;
    }
    /* a row in both top lists of a feature proves the rows overlap: refuse
     * before anything changes (the span check above cannot see it) */
    for (size_t i = 0; i < dst->d_sae; i++) {
        size_t la = top_len(dst, i), lb = top_len(src, i);
        memcpy(rows, dst->top_row + i * n, la * sizeof(uint64_t));
        qsort(rows, la, sizeof(uint64_t), compare_row_ids);
        for (size_t b = 0; b < lb; b++)
            if (bsearch(src->top_row + i * n + b, rows, la, sizeof(uint64_t), compare_row_ids)) {
                rc = sae__fail(SAE_E_INVALID_ARG, "%s: row %llu is in both accumulators "
                               "(feature %zu's top rows): the rows are not disjoint", fn,
                               (unsigned long long)src->top_row[i * n + b], i);
                goto cleanup;
            }
    }
    for (size_t i = 0; i < dst->d_sae; i++) {
        /* the two sorted top lists, merged: the first n of the union */
        size_t la = top_len(dst, i), lb = top_len(src, i), a = 0, b = 0, k = 0;
        const uint64_t *ra = dst->top_row + i * n, *rb = src->top_row + i * n;
        const float *va = dst->top_val + i * n, *vb = src->top_val + i * n;
        for (; k < n && (a < la || b < lb); k++) {
            bool take_a = b == lb || (a < la && ranks_before(va[a], ra[a], vb[b], rb[b]));
            rows[k] = take_a ? ra[a] : rb[b];
            vals[k] = take_a ? va[a] : vb[b];
            a += take_a;
            b += !take_a;
        }
        memcpy(dst->top_row + i * n, rows, k * sizeof(uint64_t));
        memcpy(dst->top_val + i * n, vals, k * sizeof(float));
        dst->count[i] += src->count[i];
        for (size_t h = 0; h < dst->n_bins; h++)
            dst->hist[i * dst->n_bins + h] += src->hist[i * src->n_bins + h];
        limbs_merge(dst->sum + i * SUM_LIMBS, src->sum + i * SUM_LIMBS, SUM_LIMBS);
        limbs_merge(dst->sum_sq + i * SQ_LIMBS, src->sum_sq + i * SQ_LIMBS, SQ_LIMBS);
    }
    dst->rows += src->rows;
    dst->first_row = first;
    dst->next_row = next;
cleanup:
    sae__free(vals);
    sae__free(rows);
    return rc;
}

/* ---- saving ------------------------------------------------------------------- */

enum { T_COUNT, T_SUM, T_SUM_SQ, T_HIST, T_TOP_ROWS, T_TOP_VALUES, T_RANGE, T_ROWS, N_TENSORS };

static const char *const tensor_names[N_TENSORS] = {
    [T_COUNT] = "count",         [T_SUM] = "sum",
    [T_SUM_SQ] = "sum_sq",       [T_HIST] = "histogram",
    [T_TOP_ROWS] = "top_rows",   [T_TOP_VALUES] = "top_values",
    [T_RANGE] = "log10_range",   [T_ROWS] = "rows",
};

static const sae_st_kv stats_meta[2] = {
    {"libsae_format", FORMAT_NAME, NULL, 0},
    {"libsae_format_version", "1", NULL, 0},
};

/* The file's tensors; range and rows are the caller's arrays. */
static void stats_tensors(const sae_feature_stats *s, const double range[2],
                          const uint64_t rows[3], sae_st_out t[N_TENSORS])
{
    const size_t d = s->d_sae;
    t[T_COUNT] = (sae_st_out){"count", SAE_ST_U64, 1, {d, 0}, s->count, false, SAE_ST_AS_IS};
    t[T_SUM] = (sae_st_out){"sum", SAE_ST_U64, 2, {d, SUM_LIMBS}, s->sum, false, SAE_ST_AS_IS};
    t[T_SUM_SQ] = (sae_st_out){"sum_sq", SAE_ST_U64, 2, {d, SQ_LIMBS}, s->sum_sq, false,
                               SAE_ST_AS_IS};
    t[T_HIST] = (sae_st_out){"histogram", SAE_ST_U64, 2, {d, s->n_bins}, s->hist, false,
                             SAE_ST_AS_IS};
    t[T_TOP_ROWS] = (sae_st_out){"top_rows", SAE_ST_U64, 2, {d, s->top_n}, s->top_row, false,
                                 SAE_ST_AS_IS};
    t[T_TOP_VALUES] = (sae_st_out){"top_values", SAE_ST_F32, 2, {d, s->top_n}, s->top_val,
                                   false, SAE_ST_AS_IS};
    t[T_RANGE] = (sae_st_out){"log10_range", SAE_ST_F64, 1, {2, 0}, range, false, SAE_ST_AS_IS};
    t[T_ROWS] = (sae_st_out){"rows", SAE_ST_U64, 1, {3, 0}, rows, false, SAE_ST_AS_IS};
}

/* Write the encoding of s (a sae_feature_stats) to sink, or (sink NULL) only
 * measure it. */
static int stats_encode(const void *obj, const sae_st_sink *sink, size_t *size)
{
    const sae_feature_stats *s = obj;
    const double range[2] = {s->log10_min, s->log10_max};
    const uint64_t rows[3] = {s->rows, s->first_row, s->next_row};
    sae_st_out t[N_TENSORS];
    stats_tensors(s, range, rows, t);
    if (!sink)
        return sae__st_size(stats_meta, 2, t, N_TENSORS, size)
                   ? SAE_OK
                   : sae__fail(SAE_E_INVALID_ARG, "the statistics' encoding is too large");
    return sae__st_write(sink, stats_meta, 2, t, N_TENSORS);
}

int sae_feature_stats_save_size(const sae_feature_stats *s, size_t *size)
{
    if (!s || !size)
        return sae__fail(SAE_E_INVALID_ARG, "sae_feature_stats_save_size: %s is NULL",
                         !s ? "s" : "size");
    return stats_encode(s, NULL, size);
}

int sae_feature_stats_save_buffer(const sae_feature_stats *s, void *buf, size_t capacity,
                                  size_t *written)
{
    static const char fn[] = "sae_feature_stats_save_buffer";
    size_t size;
    if (!s || !buf)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !s ? "s" : "buf");
    int rc = stats_encode(s, NULL, &size);
    return rc == SAE_OK ? sae__st_save_buffer(fn, stats_encode, s, size, buf, capacity, written)
                        : rc;
}

int sae_feature_stats_save(const sae_feature_stats *s, const char *path)
{
    static const char fn[] = "sae_feature_stats_save";
    if (!s || !path)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !s ? "s" : "path");
    char *file = NULL;
    if (sae__is_directory(path) && !(file = sae__path_join(path, STATS_FILE)))
        return sae__fail(SAE_E_NOMEM, "%s: out of memory", fn);
    sae_tmpfile t;
    int rc = sae__tmpfile_open(&t, file ? file : path);
    if (rc == SAE_OK) {
        sae_st_sink sink = {sae__tmpfile_write, &t};
        rc = stats_encode(s, &sink, NULL);
        if (rc == SAE_OK)
            rc = sae__tmpfile_finish(&t);
        if (rc == SAE_OK)
            rc = sae__tmpfile_commit(&t);
        sae__tmpfile_abort(&t);
    }
    if (rc != SAE_OK)
        rc = sae__fail(rc, "%s: %s: cannot write the file", fn, file ? file : path);
    sae__free(file);
    return rc;
}

/* ---- loading ------------------------------------------------------------------- */

static bool shape_is(const sae_st_tensor *t, sae_st_dtype dtype, size_t rank, uint64_t a,
                     uint64_t b)
{
    return t && t->dtype == dtype && sae__st_shape_is(t, rank, a, b);
}

/* Whether x <= y allowing for the rounding of both (each within a few ulps
 * of an exact value). */
static bool at_most(double x, double y) { return x <= y * (1.0 + 0x1p-40); }

/* NULL if feature i keeps the invariants of an accumulator, else what it
 * breaks. */
static const char *feature_inconsistency(const sae_feature_stats *s, size_t i)
{
    const size_t n = s->top_n, len = top_len(s, i);
    const uint64_t c = s->count[i];
    const uint64_t *rows = s->top_row + i * n;
    const float *vals = s->top_val + i * n;
    const uint64_t *sum = s->sum + i * SUM_LIMBS, *sq = s->sum_sq + i * SQ_LIMBS;
    if (c > s->rows)
        return "its count exceeds the rows";
    uint64_t in_bins = 0;
    for (size_t h = 0; h < s->n_bins; h++) {
        uint64_t v = s->hist[i * s->n_bins + h];
        if (v > c - in_bins)
            return "its histogram holds more than its count";
        in_bins += v;
    }
    if (in_bins != c)
        return "its histogram holds less than its count";
    for (size_t k = 0; k < n; k++) {
        if (k >= len) {
            if (rows[k] != 0 || vals[k] != 0.0f || signbit(vals[k]))
                return "a top slot past its count is not zero";
        } else if (!(vals[k] > 0.0f) || !isfinite(vals[k])) {
            return "a top value is not positive and finite";
        } else if (rows[k] < s->first_row || rows[k] >= s->next_row) {
            return "a top row id is outside the rows fed";
        } else if (k > 0 && !ranks_before(vals[k - 1], rows[k - 1], vals[k], rows[k])) {
            return "its top list is out of order";
        }
    }
    /* the sums' widths leave 64 bits for the count; bounded by the count, the
     * largest value (the first in the list) and the smallest float */
    if (sum[SUM_LIMBS - 1] >> 22 || sq[SQ_LIMBS - 1] >> 43)
        return "a sum is beyond what its count allows";
    double total = limbs_value(sum, SUM_LIMBS, SUM_BASE);
    double total_sq = limbs_value(sq, SQ_LIMBS, SQ_BASE);
    if (c == 0)
        return total == 0.0 && total_sq == 0.0 ? NULL : "it never fired but has sums";
    double max = vals[0], cnt = (double)c;
    bool ok = at_most(max, total) && at_most(total, cnt * max) && at_most(max * max, total_sq) &&
              at_most(total_sq, cnt * max * max) &&
              at_most(total * total, cnt * total_sq * (1.0 + 0x1p-40)) &&
              at_most(cnt * 0x1p-149, total);
    return ok ? NULL : "its sums disagree with its count and maximum";
}

/* A failed load: the status with "<what>" as the detail. */
#define BAD_FILE(...) sae__fail(SAE_E_FORMAT, "feature statistics: " __VA_ARGS__)

/* The configuration and row ids of a header, checked. */
static int read_layout(const sae_st_source *src, const sae_st_header *h,
                       const sae_st_tensor *t[N_TENSORS], size_t dims[3], double range[2],
                       uint64_t rows[3])
{
    if (!sae__st_metadata_is(h, "libsae_format", FORMAT_NAME))
        return BAD_FILE("__metadata__ has no \"libsae_format\": \"" FORMAT_NAME "\"");
    if (!sae__st_metadata_is(h, "libsae_format_version", "1"))
        return BAD_FILE("\"libsae_format_version\" is not \"1\"");
    for (size_t k = 0; k < N_TENSORS; k++)
        if (!(t[k] = sae__st_find(h, tensor_names[k])))
            return BAD_FILE("tensor \"%s\" is missing", tensor_names[k]);
    if (h->n_tensors != N_TENSORS)
        return BAD_FILE("%zu tensors, not the %d of the format", h->n_tensors, N_TENSORS);
    const uint64_t d = t[T_COUNT]->shape[0];
    const uint64_t top_n = t[T_TOP_ROWS]->rank == 2 ? t[T_TOP_ROWS]->shape[1] : 0;
    const uint64_t n_bins = t[T_HIST]->rank == 2 ? t[T_HIST]->shape[1] : 0;
    const struct { size_t k; sae_st_dtype dtype; size_t rank; uint64_t a, b; } want[] = {
        {T_COUNT, SAE_ST_U64, 1, d, 0},        {T_SUM, SAE_ST_U64, 2, d, SUM_LIMBS},
        {T_SUM_SQ, SAE_ST_U64, 2, d, SQ_LIMBS}, {T_HIST, SAE_ST_U64, 2, d, n_bins},
        {T_TOP_ROWS, SAE_ST_U64, 2, d, top_n}, {T_TOP_VALUES, SAE_ST_F32, 2, d, top_n},
        {T_RANGE, SAE_ST_F64, 1, 2, 0},        {T_ROWS, SAE_ST_U64, 1, 3, 0},
    };
    for (size_t k = 0; k < N_TENSORS; k++)
        if (!shape_is(t[want[k].k], want[k].dtype, want[k].rank, want[k].a, want[k].b))
            return BAD_FILE("tensor \"%s\" has another dtype or shape than the format's",
                            tensor_names[want[k].k]);
    int rc = sae__st_read_f64(src, h, t[T_RANGE], range);
    if (rc == SAE_OK)
        rc = sae__st_read_u64(src, h, t[T_ROWS], rows);
    if (rc != SAE_OK)
        return rc == SAE_E_IO ? sae__fail(rc, "feature statistics: a read failed")
                              : BAD_FILE("the data ends early");
    /* the shapes are bounded by the file's size, so allocating them is safe */
    if (d > SIZE_MAX || top_n > SIZE_MAX || n_bins > SIZE_MAX)
        return BAD_FILE("shapes beyond size_t");
    rc = check_config("feature statistics", (size_t)d, (size_t)top_n, (size_t)n_bins, range[0],
                      range[1]);
    if (rc != SAE_OK)
        return SAE_E_FORMAT; /* check_config's detail says which */
    if (rows[1] > rows[2] || rows[0] > rows[2] - rows[1] || (rows[0] == 0 && rows[1] != rows[2]))
        return BAD_FILE("%llu rows do not fit row ids %llu..%llu", (unsigned long long)rows[0],
                        (unsigned long long)rows[1], (unsigned long long)rows[2]);
    dims[0] = (size_t)d;
    dims[1] = (size_t)top_n;
    dims[2] = (size_t)n_bins;
    return SAE_OK;
}

static int load_from(const sae_st_source *src, sae_feature_stats **out)
{
    *out = NULL;
    sae_st_header h;
    int rc = sae__st_read_header(src, &h);
    if (rc != SAE_OK)
        return rc == SAE_E_FORMAT ? BAD_FILE("not a valid safetensors file") : sae__fail(rc,
               "feature statistics: %s", rc == SAE_E_NOMEM ? "out of memory" : "a read failed");
    const sae_st_tensor *t[N_TENSORS];
    size_t dims[3] = {0, 0, 0};
    double range[2] = {0.0, 0.0};
    uint64_t rows[3] = {0, 0, 0};
    sae_feature_stats *s = NULL;
    rc = read_layout(src, &h, t, dims, range, rows);
    if (rc == SAE_OK)
        rc = stats_alloc("feature statistics", &s, dims[0], dims[1], dims[2], range[0], range[1]);
    if (rc == SAE_OK) {
        s->rows = rows[0];
        s->first_row = rows[1];
        s->next_row = rows[2];
        uint64_t *u64[] = {s->count, s->sum, s->sum_sq, s->hist, s->top_row};
        for (size_t k = 0; k < 5 && rc == SAE_OK; k++)
            rc = sae__st_read_u64(src, &h, t[k], u64[k]); /* T_COUNT .. T_TOP_ROWS */
        if (rc == SAE_OK)
            rc = sae__st_read_f32(src, &h, t[T_TOP_VALUES], s->top_val, 0, false);
        if (rc == SAE_E_FORMAT)
            rc = BAD_FILE("a top value is not finite, or the data ends early");
        else if (rc != SAE_OK)
            rc = sae__fail(rc, "feature statistics: a read failed");
        for (size_t i = 0; i < s->d_sae && rc == SAE_OK; i++) {
            const char *why = feature_inconsistency(s, i);
            if (why)
                rc = BAD_FILE("feature %zu: %s", i, why);
        }
    }
    if (rc == SAE_OK)
        *out = s;
    else
        sae_feature_stats_free(s);
    sae__st_header_free(&h);
    return rc;
}

int sae_feature_stats_load_buffer(sae_feature_stats **out, const void *buf, size_t size)
{
    static const char fn[] = "sae_feature_stats_load_buffer";
    if (!out || !buf) {
        if (out)
            *out = NULL;
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !out ? "out" : "buf");
    }
    sae_st_buffer_source b;
    sae__st_buffer_source_init(&b, buf, size);
    int rc = load_from(&b.src, out);
    return rc == SAE_OK ? rc : sae__fail_context(rc, "%s", fn);
}

int sae_feature_stats_load(sae_feature_stats **out, const char *path)
{
    static const char fn[] = "sae_feature_stats_load";
    if (!out || !path) {
        if (out)
            *out = NULL;
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !out ? "out" : "path");
    }
    *out = NULL;
    char *file = NULL;
    if (sae__is_directory(path) && !(file = sae__path_join(path, STATS_FILE)))
        return sae__fail(SAE_E_NOMEM, "%s: out of memory", fn);
    const char *name = file ? file : path;
    sae_file_source fs;
    int rc = sae__file_source_open(&fs, name, NULL);
    if (rc != SAE_OK) {
        rc = sae__fail(rc, "%s: %s: cannot open a regular file", fn, name);
    } else {
        rc = load_from(&fs.src, out);
        sae__file_source_close(&fs);
        if (rc != SAE_OK)
            rc = sae__fail_context(rc, "%s: %s", fn, name);
    }
    sae__free(file);
    return rc;
}
