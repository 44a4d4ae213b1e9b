/* Feature statistics over a stream (sae_feature_stats_*): the numbers against
 * a direct computation from sae_encode's dense features, merging, saving and
 * loading, and bad input. */
#define _XOPEN_SOURCE 700 /* mkdtemp */
#include "nomem.h"
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The default configuration of these tests: 60 bins over [1e-4, 1e2]. */
#define TOP_N 5
#define BINS 60
#define LOG_MIN (-4.0)
#define LOG_MAX 2.0

static sae_feature_stats *new_stats(size_t d_sae)
{
    sae_feature_stats *s;
    ck_assert_int_eq(sae_feature_stats_create(&s, d_sae, TOP_N, BINS, LOG_MIN, LOG_MAX), SAE_OK);
    return s;
}

/* The accumulator's encoding: equal encodings are equal accumulators. */
static unsigned char *encoding(const sae_feature_stats *s, size_t *size)
{
    ck_assert_int_eq(sae_feature_stats_save_size(s, size), SAE_OK);
    unsigned char *buf = malloc(*size);
    size_t written = 0;
    ck_assert_int_eq(sae_feature_stats_save_buffer(s, buf, *size, &written), SAE_OK);
    ck_assert_uint_eq(written, *size);
    return buf;
}

static void assert_same(const sae_feature_stats *a, const sae_feature_stats *b)
{
    size_t na, nb;
    unsigned char *ea = encoding(a, &na), *eb = encoding(b, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert_mem_eq(ea, eb, na);
    free(ea);
    free(eb);
}

/* ---- the reference: straight from the dense features, in double ------------ */

typedef struct ref_entry { float value; uint64_t row; } ref_entry;

static int entry_order(const void *pa, const void *pb)
{
    const ref_entry *a = pa, *b = pb;
    if (a->value != b->value)
        return a->value > b->value ? -1 : 1;
    return (a->row > b->row) - (a->row < b->row);
}

/* Check s against the features f (n x d_sae) of rows first_row.. */
static void check_against_dense(const sae_feature_stats *s, const float *f, size_t n,
                                size_t d_sae, uint64_t first_row)
{
    uint64_t *counts = malloc(d_sae * sizeof(uint64_t));
    uint64_t *hist = malloc(d_sae * BINS * sizeof(uint64_t));
    double *sum = malloc(d_sae * sizeof(double)), *sum_sq = malloc(d_sae * sizeof(double));
    float *max = malloc(d_sae * sizeof(float));
    ref_entry *entries = malloc(n * sizeof(ref_entry));
    ck_assert_int_eq(sae_feature_stats_counts(s, counts, d_sae), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_histogram(s, hist, d_sae * BINS), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_sums(s, sum, sum_sq, d_sae), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_max(s, max, d_sae), SAE_OK);
    double edges[BINS + 1];
    for (int k = 0; k <= BINS; k++)
        edges[k] = pow(10.0, LOG_MIN + (LOG_MAX - LOG_MIN) * k / BINS);
    size_t fired_features = 0;
    for (size_t i = 0; i < d_sae; i++) {
        uint64_t c = 0, want_hist[BINS] = {0};
        double s1 = 0.0, s2 = 0.0;
        float mx = 0.0f;
        for (size_t t = 0; t < n; t++) {
            float v = f[t * d_sae + i];
            if (!(v > 0.0f))
                continue;
            entries[c++] = (ref_entry){v, first_row + t};
            s1 += v;
            s2 += (double)v * v;
            mx = v > mx ? v : mx;
            int bin = 0;
            while (bin < BINS - 1 && (double)v >= edges[bin + 1])
                bin++;
            want_hist[bin]++;
        }
        fired_features += c > 0;
        ck_assert_uint_eq(counts[i], c);
        ck_assert_double_eq_tol(sum[i], s1, 1e-12 * s1);
        ck_assert_double_eq_tol(sum_sq[i], s2, 1e-12 * s2);
        ck_assert(max[i] == mx);
        for (int b = 0; b < BINS; b++)
            ck_assert_uint_eq(hist[i * BINS + b], want_hist[b]);
        qsort(entries, c, sizeof *entries, entry_order);
        uint64_t rows[TOP_N];
        float values[TOP_N];
        size_t len = 99;
        ck_assert_int_eq(sae_feature_stats_top(s, i, rows, values, TOP_N, &len), SAE_OK);
        ck_assert_uint_eq(len, c < TOP_N ? c : TOP_N);
        for (size_t k = 0; k < len; k++) {
            ck_assert_uint_eq(rows[k], entries[k].row);
            ck_assert(values[k] == entries[k].value);
        }
    }
    ck_assert_uint_gt(fired_features, d_sae / 2);
    free(entries);
    free(max);
    free(sum_sq);
    free(sum);
    free(hist);
    free(counts);
}

static const int all_archs[4] = {SAE_ARCH_RELU, SAE_ARCH_TOPK, SAE_ARCH_BATCHTOPK,
                                 SAE_ARCH_JUMPRELU};


START_TEST(statistics_match_a_direct_computation_in_every_architecture)
{
    const size_t d_in = 10, d_sae = 24, n = 300;
    for (int a = 0; a < 4; a++) {
        sae_model *m = test_arch_model(all_archs[a], d_in, d_sae, 10 + (uint64_t)a);
        float *x = test_gaussian(n, d_in, 1.0, 0.0, 20 + (uint64_t)a);
        float *f = malloc(n * d_sae * sizeof(float));
        /* fed in three batches of different sizes: row ids continue; the
         * features are sae_encode's of each batch */
        sae_feature_stats *s = new_stats(d_sae);
        const size_t cut[4] = {0, 1, 121, n};
        for (int b = 0; b < 3; b++) {
            size_t rows = cut[b + 1] - cut[b];
            ck_assert_int_eq(sae_encode(m, x + cut[b] * d_in, rows, f + cut[b] * d_sae), SAE_OK);
            ck_assert_int_eq(sae_feature_stats_add(s, m, x + cut[b] * d_in, rows), SAE_OK);
        }
        ck_assert_uint_eq(sae_feature_stats_rows(s), n);
        ck_assert_uint_eq(sae_feature_stats_next_row(s), n);
        check_against_dense(s, f, n, d_sae, 0);
        sae_feature_stats_free(s);
        free(f);
        free(x);
        sae_model_free(m);
    }
}
END_TEST

/* A host with codes already: the sparse feed gives the same accumulator. */
START_TEST(sparse_codes_feed_the_same_statistics)
{
    const size_t d_in = 8, d_sae = 30, n = 200;
    sae_model *m = test_arch_model(SAE_ARCH_JUMPRELU, d_in, d_sae, 30);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 31);
    size_t nnz, done, *off = malloc((n + 1) * sizeof(size_t));
    ck_assert_int_eq(sae_encode_sparse_size(m, x, n, 0, &nnz), SAE_OK);
    uint32_t *feat = malloc(nnz * sizeof(uint32_t));
    float *val = malloc(nnz * sizeof(float));
    ck_assert_int_eq(sae_encode_sparse(m, x, n, 0, off, feat, val, nnz, &done), SAE_OK);
    sae_feature_stats *dense = new_stats(d_sae), *sparse = new_stats(d_sae);
    ck_assert_int_eq(sae_feature_stats_add(dense, m, x, n), SAE_OK);
    /* two slices of the CSR: the second's offsets do not start at 0 */
    ck_assert_int_eq(sae_feature_stats_add_sparse(sparse, 77, off, feat, val), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_add_sparse(sparse, n - 77, off + 77, feat, val), SAE_OK);
    assert_same(dense, sparse);
    sae_feature_stats_free(sparse);
    sae_feature_stats_free(dense);
    free(val);
    free(feat);
    free(off);
    free(x);
    sae_model_free(m);
}
END_TEST

/* Rows 0..n split over three accumulators (each told its first row id)
 * merge, in every order and grouping, into the sequential accumulator. */
START_TEST(merges_in_any_order_equal_the_sequential_accumulator)
{
    const size_t d_in = 10, d_sae = 20, n = 240;
    sae_model *m = test_arch_model(SAE_ARCH_RELU, d_in, d_sae, 40);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 41);
    /* one accumulator fed the three batches in order... */
    const size_t cut[4] = {0, 70, 71, n};
    sae_feature_stats *all = new_stats(d_sae);
    for (int p = 0; p < 3; p++)
        ck_assert_int_eq(sae_feature_stats_add(all, m, x + cut[p] * d_in, cut[p + 1] - cut[p]),
                         SAE_OK);
    /* ...equals three, each fed one batch, merged */
    for (int order = 0; order < 6; order++) {
        static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                        {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
        sae_feature_stats *part[3];
        for (int p = 0; p < 3; p++) {
            part[p] = new_stats(d_sae);
            ck_assert_int_eq(sae_feature_stats_set_next_row(part[p], cut[p]), SAE_OK);
            ck_assert_int_eq(sae_feature_stats_add(part[p], m, x + cut[p] * d_in,
                                                   cut[p + 1] - cut[p]), SAE_OK);
        }
        const int *o = perms[order];
        if (order % 2 == 0) { /* ((a + b) + c) */
            ck_assert_int_eq(sae_feature_stats_merge(part[o[0]], part[o[1]]), SAE_OK);
            ck_assert_int_eq(sae_feature_stats_merge(part[o[0]], part[o[2]]), SAE_OK);
            assert_same(part[o[0]], all);
        } else { /* (a + (b + c)) */
            ck_assert_int_eq(sae_feature_stats_merge(part[o[1]], part[o[2]]), SAE_OK);
            ck_assert_int_eq(sae_feature_stats_merge(part[o[0]], part[o[1]]), SAE_OK);
            assert_same(part[o[0]], all);
        }
        ck_assert_uint_eq(sae_feature_stats_rows(part[o[0]]), n);
        ck_assert_uint_eq(sae_feature_stats_next_row(part[o[0]]), n);
        for (int p = 0; p < 3; p++)
            sae_feature_stats_free(part[p]);
    }
    sae_feature_stats_free(all);
    free(x);
    sae_model_free(m);
}
END_TEST

/* Sums are exact: small values next to a huge one are not lost, whatever
 * the order, and extreme floats are fine. */
START_TEST(sums_are_exact_and_rounded_once)
{
    sae_feature_stats *s, *r;
    ck_assert_int_eq(sae_feature_stats_create(&s, 2, 3, 4, -50, 50), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_create(&r, 2, 3, 4, -50, 50), SAE_OK);
    /* feature 0: 2^60 then 1000 ones; feature 1: FLT_MAX three times and the
     * smallest subnormal */
    size_t off[1002];
    uint32_t feat[1005];
    float val[1005];
    size_t k = 0;
    off[0] = 0;
    feat[k] = 0, val[k++] = 0x1p60f;
    feat[k] = 1, val[k++] = FLT_MAX;
    off[1] = k;
    for (int t = 0; t < 1000; t++) {
        feat[k] = 0, val[k++] = 1.0f;
        if (t < 2)
            feat[k] = 1, val[k++] = FLT_MAX;
        if (t == 2)
            feat[k] = 1, val[k++] = FLT_TRUE_MIN;
        off[t + 2] = k;
    }
    ck_assert_int_eq(sae_feature_stats_add_sparse(s, 1001, off, feat, val), SAE_OK);
    double sum[2], sum_sq[2];
    ck_assert_int_eq(sae_feature_stats_sums(s, sum, sum_sq, 2), SAE_OK);
    ck_assert(sum[0] == 0x1p60 + 1024.0); /* 2^60 + 1000 rounded to double's 256-grid */
    ck_assert(sum_sq[0] == 0x1p120);      /* 2^120 + 1000 rounds to 2^120 */
    ck_assert(sum[1] == 3.0 * (double)FLT_MAX); /* + 2^-149 rounds away */
    ck_assert(sum_sq[1] == 3.0 * (double)FLT_MAX * (double)FLT_MAX);
    /* the same rows in reverse order in another accumulator, then merged */
    for (size_t t = 1001; t-- > 0;) {
        ck_assert_int_eq(sae_feature_stats_set_next_row(r, 5000 + (1000 - t)), SAE_OK);
        ck_assert_int_eq(sae_feature_stats_add_sparse(r, 1, off + t, feat, val), SAE_OK);
    }
    double rsum[2];
    ck_assert_int_eq(sae_feature_stats_sums(r, rsum, NULL, 2), SAE_OK);
    ck_assert(rsum[0] == sum[0] && rsum[1] == sum[1]);
    /* 2^-149 alone, and 1 + 2^-60 (exact in double after the sum) */
    sae_feature_stats *tiny;
    ck_assert_int_eq(sae_feature_stats_create(&tiny, 1, 1, 1, -50, 50), SAE_OK);
    size_t o2[3] = {0, 1, 2};
    uint32_t f2[2] = {0, 0};
    float v2[2] = {FLT_TRUE_MIN, FLT_TRUE_MIN};
    ck_assert_int_eq(sae_feature_stats_add_sparse(tiny, 2, o2, f2, v2), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_sums(tiny, sum, sum_sq, 1), SAE_OK);
    ck_assert(sum[0] == 0x1p-148 && sum_sq[0] == 0x1p-297);
    sae_feature_stats_free(tiny);
    sae_feature_stats_free(r);
    sae_feature_stats_free(s);
}
END_TEST

/* Ties in value go to the lower row id, across batches and merges. */
START_TEST(ties_go_to_the_lower_row_id)
{
    sae_feature_stats *s = new_stats(2), *late = new_stats(2), *early = new_stats(2);
    size_t off[11];
    uint32_t feat[10];
    float val[10];
    for (int t = 0; t <= 10; t++)
        off[t] = (size_t)t;
    for (int t = 0; t < 10; t++)
        feat[t] = 1, val[t] = t % 3 == 0 ? 2.0f : 1.0f; /* 2 at rows 0, 3, 6, 9 */
    ck_assert_int_eq(sae_feature_stats_add_sparse(s, 10, off, feat, val), SAE_OK);
    uint64_t rows[TOP_N];
    float values[TOP_N];
    size_t n;
    ck_assert_int_eq(sae_feature_stats_top(s, 1, rows, values, TOP_N, &n), SAE_OK);
    const uint64_t want[TOP_N] = {0, 3, 6, 9, 1};
    ck_assert_uint_eq(n, TOP_N);
    for (int k = 0; k < TOP_N; k++) {
        ck_assert_uint_eq(rows[k], want[k]);
        ck_assert(values[k] == (k < 4 ? 2.0f : 1.0f));
    }
    ck_assert_int_eq(sae_feature_stats_top(s, 0, rows, values, TOP_N, &n), SAE_OK);
    ck_assert_uint_eq(n, 0);
    /* the later rows merged into an accumulator of the earlier ones, and the
     * other way round */
    ck_assert_int_eq(sae_feature_stats_add_sparse(early, 5, off, feat, val), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_set_next_row(late, 5), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_add_sparse(late, 5, off + 5, feat, val), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_merge(late, early), SAE_OK);
    assert_same(late, s);
    /* capacity below the count: the first ones, and the full count */
    ck_assert_int_eq(sae_feature_stats_top(s, 1, rows, values, 2, &n), SAE_OK);
    ck_assert_uint_eq(n, TOP_N);
    ck_assert_uint_eq(rows[1], 3);
    ck_assert_int_eq(sae_feature_stats_top(s, 1, NULL, NULL, 0, &n), SAE_OK);
    ck_assert_uint_eq(n, TOP_N);
    sae_feature_stats_free(early);
    sae_feature_stats_free(late);
    sae_feature_stats_free(s);
}
END_TEST

START_TEST(histogram_bins_follow_the_documented_edges)
{
    sae_feature_stats *s;
    ck_assert_int_eq(sae_feature_stats_create(&s, 1, 1, 3, -1.0, 2.0), SAE_OK);
    double edges[4];
    ck_assert_int_eq(sae_feature_stats_bin_edges(s, edges, 4), SAE_OK);
    ck_assert(edges[0] == 0.1 && edges[1] == 1.0 && edges[2] == 10.0 && edges[3] == 100.0);
    ck_assert_int_eq(sae_feature_stats_bin_edges(s, edges, 3), SAE_E_INVALID_ARG);
    /* below the range, at edges, inside, beyond */
    const float v[8] = {1e-3f, 0.1f, 0.99f, 1.0f, 9.99f, 10.0f, 100.0f, 3e38f};
    const uint64_t want[3] = {3, 2, 3};
    size_t off[9];
    uint32_t feat[8] = {0};
    for (int t = 0; t <= 8; t++)
        off[t] = (size_t)t;
    ck_assert_int_eq(sae_feature_stats_add_sparse(s, 8, off, feat, v), SAE_OK);
    uint64_t hist[3];
    ck_assert_int_eq(sae_feature_stats_histogram(s, hist, 3), SAE_OK);
    for (int b = 0; b < 3; b++)
        ck_assert_uint_eq(hist[b], want[b]);
    ck_assert_uint_eq(sae_feature_stats_bins(s), 3);
    ck_assert_uint_eq(sae_feature_stats_top_n(s), 1);
    ck_assert_uint_eq(sae_feature_stats_d_sae(s), 1);
    sae_feature_stats_free(s);
}
END_TEST

/* ---- saving and loading ---------------------------------------------------- */

/* A small accumulator with every kind of entry: fired and silent features,
 * full and partial top lists. */
static sae_feature_stats *small_stats(void)
{
    sae_model *m = test_arch_model(SAE_ARCH_TOPK, 6, 5, 50);
    float *x = test_gaussian(7, 6, 1.0, 0.0, 51);
    sae_feature_stats *s;
    ck_assert_int_eq(sae_feature_stats_create(&s, 5, 3, 4, -2.0, 1.0), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_set_next_row(s, 10), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_add(s, m, x, 7), SAE_OK);
    free(x);
    sae_model_free(m);
    return s;
}

START_TEST(save_and_load_round_trip_through_buffers_files_and_directories)
{
    sae_feature_stats *s = small_stats(), *back;
    size_t size;
    unsigned char *buf = encoding(s, &size);
    ck_assert_int_eq(sae_feature_stats_load_buffer(&back, buf, size), SAE_OK);
    assert_same(s, back);
    ck_assert_uint_eq(sae_feature_stats_rows(back), 7);
    ck_assert_uint_eq(sae_feature_stats_next_row(back), 17);
    sae_feature_stats_free(back);

    char dir[] = "/tmp/sae_stats_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char file[64];
    snprintf(file, sizeof file, "%s/stats.safetensors", dir);
    ck_assert_int_eq(sae_feature_stats_save(s, file), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_load(&back, file), SAE_OK);
    assert_same(s, back);
    sae_feature_stats_free(back);
    ck_assert_int_eq(sae_feature_stats_save(s, dir), SAE_OK); /* dir/feature_stats.safetensors */
    ck_assert_int_eq(sae_feature_stats_load(&back, dir), SAE_OK);
    assert_same(s, back);
    sae_feature_stats_free(back);
    /* the file is the buffer encoding */
    FILE *f = fopen(file, "rb");
    unsigned char *disk = malloc(size + 1);
    ck_assert_uint_eq(fread(disk, 1, size + 1, f), size);
    fclose(f);
    ck_assert_mem_eq(disk, buf, size);
    free(disk);
    back = (sae_feature_stats *)&back;
    ck_assert_int_eq(sae_feature_stats_load(&back, "/nonexistent/x"), SAE_E_IO);
    ck_assert_ptr_null(back);
    /* a save that cannot happen leaves the previous file */
    ck_assert_int_eq(sae_feature_stats_save(s, "/nonexistent/x"), SAE_E_IO);
    char inner[80];
    snprintf(inner, sizeof inner, "%s/feature_stats.safetensors", dir);
    unlink(inner);
    unlink(file);
    rmdir(dir);
    free(buf);
    sae_feature_stats_free(s);
}
END_TEST

/* The data offsets of tensor `name` in a saved buffer, from its header. */
static size_t tensor_data(const unsigned char *buf, size_t size, const char *name)
{
    uint64_t header = 0;
    for (int k = 7; k >= 0; k--)
        header = header << 8 | buf[k];
    char key[64];
    snprintf(key, sizeof key, "\"%s\":{", name);
    char *text = malloc(header + 1);
    memcpy(text, buf + 8, header);
    text[header] = '\0';
    char *at = strstr(text, key);
    ck_assert_ptr_nonnull(at);
    at = strstr(at, "\"data_offsets\":[");
    unsigned long long begin = 0;
    ck_assert_int_eq(sscanf(at, "\"data_offsets\":[%llu", &begin), 1);
    free(text);
    ck_assert_uint_lt(8 + header + begin, size);
    return (size_t)(8 + header + begin);
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = v << 8 | p[k];
    return v;
}

START_TEST(inconsistent_files_are_refused)
{
    sae_feature_stats *s = small_stats(), *back;
    size_t size;
    unsigned char *good = encoding(s, &size), *bad = malloc(size);
    uint64_t counts[5];
    ck_assert_int_eq(sae_feature_stats_counts(s, counts, 5), SAE_OK);
    size_t fired = 0; /* a feature that fired at least twice (its list has 2+ entries) */
    while (counts[fired] < 2)
        fired++;
    const size_t count_at = tensor_data(good, size, "count");
    const size_t hist_at = tensor_data(good, size, "histogram");
    const size_t rows_at = tensor_data(good, size, "top_rows");
    const size_t vals_at = tensor_data(good, size, "top_values");
    const size_t sum_at = tensor_data(good, size, "sum");
    const size_t range_at = tensor_data(good, size, "log10_range");
    const size_t meta_rows_at = tensor_data(good, size, "rows");
    for (int c = 0; c < 9; c++) {
        memcpy(bad, good, size);
        switch (c) {
        case 0: /* a count its bins do not add up to */
            put_u64(bad + count_at + 8 * fired, counts[fired] + 1);
            break;
        case 1: /* a bin too many */
            put_u64(bad + hist_at + 8 * 4 * fired, get_u64(bad + hist_at + 8 * 4 * fired) + 1);
            break;
        case 2: { /* a top list out of order: the second value above the first */
            float first;
            memcpy(&first, bad + vals_at + 4 * (3 * fired), 4); /* little-endian host */
            first *= 2.0f;
            memcpy(bad + vals_at + 4 * (3 * fired + 1), &first, 4);
            break;
        }
        case 3: /* a row id at or past the next row id */
            put_u64(bad + rows_at + 8 * 3 * fired, 17);
            break;
        case 4: /* a sum of zero for a feature that fired */
            memset(bad + sum_at + 8 * 6 * fired, 0, 48);
            break;
        case 5: /* a sum above count * max */
            put_u64(bad + sum_at + 8 * (6 * fired + 5), 1);
            break;
        case 6: /* more rows than row ids */
            put_u64(bad + meta_rows_at, 18);
            break;
        case 7: /* a range create would refuse */
            memcpy(bad + range_at + 8, bad + range_at, 8);
            break;
        case 8: /* the format's name */
            for (size_t k = 0; k + 13 <= size; k++)
                if (memcmp(bad + k, "feature_stats", 13) == 0) {
                    bad[k] = 'F';
                    break;
                }
            break;
        }
        back = (sae_feature_stats *)&back;
        ck_assert_msg(sae_feature_stats_load_buffer(&back, bad, size) == SAE_E_FORMAT, "case %d", c);
        ck_assert_ptr_null(back);
        static const char *const why[9] = {
            "histogram holds less", "histogram holds more", "top list is out of order",
            "top row id is outside", "never fired but|disagree", "sums disagree",
            "rows do not fit", "log10 range", "libsae_format"};
        const char *d = sae_error_detail();
        ck_assert_msg(strncmp(d, "sae_feature_stats_load_buffer: feature statistics: ", 51) == 0,
                      "case %d: %s", c, d);
        char want[64];
        snprintf(want, sizeof want, "%s", why[c]);
        char *bar = strchr(want, '|');
        if (bar)
            *bar = '\0';
        ck_assert_msg(strstr(d, want) || (bar && strstr(d, bar + 1)), "case %d: %s", c, d);
    }
    /* truncated anywhere, and every single-byte change: refused, or a file
     * that saves back to exactly itself */
    for (size_t cut = 0; cut < size; cut++) {
        ck_assert_int_eq(sae_feature_stats_load_buffer(&back, good, cut), SAE_E_FORMAT);
        ck_assert_ptr_null(back);
    }
    for (size_t at = 0; at < size; at++) {
        memcpy(bad, good, size);
        bad[at] ^= (unsigned char)(1u << (at % 8));
        int rc = sae_feature_stats_load_buffer(&back, bad, size);
        ck_assert(rc == SAE_OK || rc == SAE_E_FORMAT);
        if (rc == SAE_OK) {
            size_t n2;
            unsigned char *again = encoding(back, &n2);
            ck_assert_uint_eq(n2, size);
            ck_assert_mem_eq(again, bad, size);
            free(again);
            sae_feature_stats_free(back);
        }
    }
    ck_assert_int_eq(sae_feature_stats_load_buffer(NULL, good, size), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_load_buffer(&back, NULL, size), SAE_E_INVALID_ARG);
    /* a model file is not a statistics file */
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, 3, 5, 1), SAE_OK);
    size_t msize;
    ck_assert_int_eq(sae_model_save_size(m, &msize), SAE_OK);
    unsigned char *mbuf = malloc(msize);
    ck_assert_int_eq(sae_model_save_buffer(m, mbuf, msize, NULL), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_load_buffer(&back, mbuf, msize), SAE_E_FORMAT);
    free(mbuf);
    sae_model_free(m);
    free(bad);
    free(good);
    sae_feature_stats_free(s);
}
END_TEST

/* ---- bad input ------------------------------------------------------------- */

/* Fail unless s still encodes to before's `size` bytes; frees before. */
static void expect_encoding(const sae_feature_stats *s, unsigned char *before, size_t size)
{
    size_t after_size;
    unsigned char *after = encoding(s, &after_size);
    ck_assert_uint_eq(after_size, size);
    ck_assert_mem_eq(after, before, size);
    free(after);
    free(before);
}

START_TEST(bad_configurations_are_refused)
{
    sae_feature_stats *t = (sae_feature_stats *)&t;
    ck_assert_int_eq(sae_feature_stats_create(&t, 0, 3, 4, -2, 1), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(sae_feature_stats_create(&t, 5, 0, 4, -2, 1), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_create(&t, 5, 3, 0, -2, 1), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_create(&t, 5, 70000, 4, -2, 1), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_create(&t, 5, 3, 4, 1, 1), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_create(&t, 5, 3, 4, -61, 1), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_create(&t, 5, 3, 4, NAN, 1), SAE_E_NONFINITE);
    ck_assert_int_eq(sae_feature_stats_create(&t, 5, 3, 4, -2, INFINITY), SAE_E_NONFINITE);
    ck_assert_int_eq(sae_feature_stats_create(&t, (size_t)1 << 40, 3, 4, -2, 1),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_create(NULL, 5, 3, 4, -2, 1), SAE_E_INVALID_ARG);
}
END_TEST

START_TEST(bad_batches_are_refused_and_the_accumulator_is_unchanged)
{
    sae_feature_stats *s = small_stats();
    size_t size;
    unsigned char *before = encoding(s, &size);
    sae_model *m = test_arch_model(SAE_ARCH_RELU, 6, 5, 60), *other = test_arch_model(SAE_ARCH_RELU, 6, 4, 61);
    float x[12] = {1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6};
    ck_assert_int_eq(sae_feature_stats_add(NULL, m, x, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_add(s, NULL, x, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_add(s, m, NULL, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_add(s, m, x, 0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_add(s, m, x, SIZE_MAX / 4), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_add(s, other, x, 2), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(),
                     "sae_feature_stats_add: the model has d_sae = 4, the statistics 5");
    x[7] = NAN;
    ck_assert_int_eq(sae_feature_stats_add(s, m, x, 2), SAE_E_NONFINITE);
    x[7] = 2;
    /* features that overflow: refused before any row is added */
    sae_model *huge = test_arch_model(SAE_ARCH_RELU, 6, 5, 62);
    float w_enc[30];
    for (int k = 0; k < 30; k++)
        w_enc[k] = 3e30f;
    ck_assert_int_eq(sae_model_set_tensor(huge, SAE_W_ENC, w_enc, 30), SAE_OK);
    x[3] = 1e12f;
    ck_assert_int_eq(sae_feature_stats_add(s, huge, x, 2), SAE_E_NONFINITE);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_feature_stats_add: the features"));
    x[3] = 4;
    sae_model_free(huge);

    size_t off[3] = {0, 2, 3};
    uint32_t feat[3] = {1, 3, 0};
    float val[3] = {0.5f, 1.0f, 2.0f};
    struct { size_t off2; uint32_t f1; float v0; int want; } bad[] = {
        {1, 3, 0.5f, SAE_E_INVALID_ARG},      /* offsets decrease */
        {3, 1, 0.5f, SAE_E_INVALID_ARG},      /* feature 1 twice in row 0 */
        {3, 5, 0.5f, SAE_E_INVALID_ARG},      /* feature 5 of 5 */
        {3, 3, 0.0f, SAE_E_INVALID_ARG},      /* a zero value */
        {3, 3, -1.0f, SAE_E_INVALID_ARG},     /* a negative value */
        {3, 3, NAN, SAE_E_NONFINITE},
        {3, 3, INFINITY, SAE_E_NONFINITE},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        size_t o[3] = {0, 2, bad[k].off2};
        uint32_t fe[3] = {feat[0], bad[k].f1, feat[2]};
        float va[3] = {bad[k].v0, val[1], val[2]};
        ck_assert_msg(sae_feature_stats_add_sparse(s, 2, o, fe, va) == bad[k].want, "case %zu", k);
    }
    ck_assert_int_eq(sae_feature_stats_add_sparse(s, 2, off, NULL, val), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_add_sparse(s, 0, off, feat, val), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_add_sparse(s, 2, NULL, feat, val), SAE_E_INVALID_ARG);
    /* row ids beyond 2^64 - 1 */
    sae_feature_stats *late = new_stats(5);
    ck_assert_int_eq(sae_feature_stats_set_next_row(late, UINT64_MAX - 1), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_add_sparse(late, 2, off, feat, val), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_add(late, m, x, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_add(late, m, x, 1), SAE_OK);
    ck_assert_uint_eq(sae_feature_stats_next_row(late), UINT64_MAX);
    /* ids only move forward */
    ck_assert_int_eq(sae_feature_stats_set_next_row(s, 16), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_set_next_row(NULL, 16), SAE_E_INVALID_ARG);
    expect_encoding(s, before, size);
    sae_feature_stats_free(late);
    sae_model_free(other);
    sae_model_free(m);
    sae_feature_stats_free(s);
}
END_TEST

/* Merges of other configurations, of overlapping rows, of itself. */
START_TEST(bad_merges_are_refused_and_the_accumulator_is_unchanged)
{
    sae_feature_stats *s = small_stats();
    size_t size;
    unsigned char *before = encoding(s, &size);
    sae_feature_stats *wider;
    ck_assert_int_eq(sae_feature_stats_create(&wider, 5, 3, 5, -2.0, 1.0), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_merge(s, wider), SAE_E_INVALID_ARG);
    sae_feature_stats_free(wider);
    ck_assert_int_eq(sae_feature_stats_create(&wider, 5, 3, 4, -2.0, 1.5), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_merge(s, wider), SAE_E_INVALID_ARG);
    sae_feature_stats_free(wider);
    sae_feature_stats *twin = small_stats(); /* the same rows 10..16 */
    ck_assert_int_eq(sae_feature_stats_merge(s, twin), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_merge(s, s), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_merge(s, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_merge(NULL, s), SAE_E_INVALID_ARG);
    sae_feature_stats_free(twin);
    /* overlapping rows the span cannot rule out: rows {0, 5} and {0} fit in
     * ids 0..5, but row 0 is in both top lists */
    sae_feature_stats *gappy = new_stats(5), *first = new_stats(5);
    const size_t one_row[2] = {0, 1};
    const uint32_t feature0 = 0;
    const float value1 = 1.0f;
    ck_assert_int_eq(sae_feature_stats_add_sparse(gappy, 1, one_row, &feature0, &value1), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_set_next_row(gappy, 5), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_add_sparse(gappy, 1, one_row, &feature0, &value1), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_add_sparse(first, 1, one_row, &feature0, &value1), SAE_OK);
    size_t gappy_size;
    unsigned char *gappy_before = encoding(gappy, &gappy_size);
    ck_assert_int_eq(sae_feature_stats_merge(gappy, first), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "row 0 is in both"));
    expect_encoding(gappy, gappy_before, gappy_size);
    sae_feature_stats_free(first);
    sae_feature_stats_free(gappy);
    expect_encoding(s, before, size);
    sae_feature_stats_free(s);
}
END_TEST

/* Queries with the wrong counts. */
START_TEST(bad_queries_are_refused)
{
    sae_feature_stats *s = small_stats();
    size_t size;
    unsigned char *before = encoding(s, &size);
    uint64_t u[10];
    double d[10];
    float fl[10];
    size_t n;
    ck_assert_int_eq(sae_feature_stats_counts(s, u, 4), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_sums(s, d, d, 6), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_sums(s, NULL, NULL, 5), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_max(s, fl, 4), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_histogram(s, u, 5), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_top(s, 5, u, fl, 3, &n), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_top(s, 0, NULL, fl, 3, &n), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_top(s, 0, u, fl, 3, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_feature_stats_save_buffer(s, u, size - 1, NULL), SAE_E_INVALID_ARG);
    ck_assert_uint_eq(sae_feature_stats_d_sae(NULL), 0);
    ck_assert_uint_eq(sae_feature_stats_rows(NULL), 0);
    sae_feature_stats_free(NULL);
    expect_encoding(s, before, size);
    sae_feature_stats_free(s);
}
END_TEST

typedef struct stats_call {
    sae_feature_stats *s, *src, *made;
    const sae_model *m;
    const float *x;
    const unsigned char *buf;
    size_t n, size;
    unsigned char *before;
} stats_call;

static int call_create(void *ctx)
{
    stats_call *c = ctx;
    sae_feature_stats_free(c->made);
    c->made = NULL;
    return sae_feature_stats_create(&c->made, 7, 4, 9, -3, 1);
}

static int call_add(void *ctx)
{
    stats_call *c = ctx;
    return sae_feature_stats_add(c->s, c->m, c->x, c->n);
}

static int call_merge(void *ctx)
{
    stats_call *c = ctx;
    return sae_feature_stats_merge(c->s, c->src);
}

static int call_load(void *ctx)
{
    stats_call *c = ctx;
    sae_feature_stats_free(c->made);
    c->made = NULL;
    return sae_feature_stats_load_buffer(&c->made, c->buf, c->size);
}

static void unchanged(void *ctx)
{
    stats_call *c = ctx;
    size_t n;
    unsigned char *now = encoding(c->s, &n);
    ck_assert_mem_eq(now, c->before, n);
    free(now);
}

START_TEST(every_allocation_failure_is_reported_and_changes_nothing)
{
    sae_model *m = test_arch_model(SAE_ARCH_RELU, 6, 7, 70);
    float *x = test_gaussian(30, 6, 1.0, 0.0, 71);
    stats_call c = {.m = m, .x = x, .n = 30};
    ck_assert_int_ge(nomem_fail_each_allocation(call_create, &c, NULL), 7);
    c.s = c.made;
    c.made = NULL;
    size_t size;
    c.before = encoding(c.s, &size);
    ck_assert_int_ge(nomem_fail_each_allocation(call_add, &c, unchanged), 3);
    free(c.before);
    ck_assert_int_eq(sae_feature_stats_create(&c.src, 7, 4, 9, -3, 1), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_set_next_row(c.src, 30), SAE_OK);
    ck_assert_int_eq(sae_feature_stats_add(c.src, m, x, 30), SAE_OK);
    c.before = encoding(c.s, &size);
    ck_assert_int_ge(nomem_fail_each_allocation(call_merge, &c, unchanged), 1);
    free(c.before);
    unsigned char *buf = encoding(c.s, &c.size);
    c.buf = buf;
    ck_assert_int_ge(nomem_fail_each_allocation(call_load, &c, NULL), 8);
    assert_same(c.made, c.s);
    free(buf);
    sae_feature_stats_free(c.made);
    sae_feature_stats_free(c.src);
    sae_feature_stats_free(c.s);
    free(x);
    sae_model_free(m);
}
END_TEST

/* Memory does not grow with the rows fed: the handle is O(d_sae x (N +
 * bins)) and a feed's scratch is one block. */
START_TEST(memory_does_not_grow_with_the_rows)
{
    const size_t d_in = 6, d_sae = 8;
    sae_model *m = test_arch_model(SAE_ARCH_RELU, d_in, d_sae, 80);
    float *x = test_gaussian(4096, d_in, 1.0, 0.0, 81);
    size_t live = sae__test_bytes_live;
    sae_feature_stats *s = new_stats(d_sae);
    size_t handle = sae__test_bytes_live - live;
    ck_assert_uint_lt(handle, 64 * 1024);
    size_t peak[2];
    for (int k = 0; k < 2; k++) {
        sae__test_bytes_peak = sae__test_bytes_live;
        ck_assert_int_eq(sae_feature_stats_add(s, m, x, k == 0 ? 2048 : 4096), SAE_OK);
        peak[k] = sae__test_bytes_peak - sae__test_bytes_live;
        ck_assert_uint_eq(sae__test_bytes_live - live, handle);
    }
    ck_assert_uint_eq(peak[0], peak[1]);
    sae_feature_stats_free(s);
    free(x);
    sae_model_free(m);
}
END_TEST

static Suite *feature_stats_suite(void)
{
    Suite *s = suite_create("feature_stats");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, statistics_match_a_direct_computation_in_every_architecture);
    tcase_add_test(tc, sparse_codes_feed_the_same_statistics);
    tcase_add_test(tc, merges_in_any_order_equal_the_sequential_accumulator);
    tcase_add_test(tc, sums_are_exact_and_rounded_once);
    tcase_add_test(tc, ties_go_to_the_lower_row_id);
    tcase_add_test(tc, histogram_bins_follow_the_documented_edges);
    tcase_add_test(tc, save_and_load_round_trip_through_buffers_files_and_directories);
    tcase_add_test(tc, inconsistent_files_are_refused);
    tcase_add_test(tc, bad_configurations_are_refused);
    tcase_add_test(tc, bad_batches_are_refused_and_the_accumulator_is_unchanged);
    tcase_add_test(tc, bad_merges_are_refused_and_the_accumulator_is_unchanged);
    tcase_add_test(tc, bad_queries_are_refused);
    tcase_add_test(tc, every_allocation_failure_is_reported_and_changes_nothing);
    tcase_add_test(tc, memory_does_not_grow_with_the_rows);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(feature_stats_suite)
