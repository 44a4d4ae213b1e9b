/*
 * The dashboard's files (see dashboard.h): the numbers come from the
 * library's feature statistics, the page is page.html with the JSON in place
 * of its placeholder.
 */
#include "dashboard.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* page.html, as a string (generated at build time by embed.cmake). */
extern const char sae_features_page[];

#define PLACEHOLDER "/*SAE_FEATURES_DATA*/"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int compare_u64(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return (a > b) - (a < b);
}

int dashboard_top_rows(const sae_feature_stats *s, uint64_t **ids, size_t *n)
{
    const size_t d_sae = sae_feature_stats_d_sae(s), top_n = sae_feature_stats_top_n(s);
    uint64_t *all = malloc((d_sae * top_n + 1) * sizeof(uint64_t));
    float *vals = malloc(top_n * sizeof(float));
    if (!all || !vals) {
        free(vals);
        free(all);
        return -1;
    }
    size_t total = 0, len;
    for (size_t i = 0; i < d_sae; i++) {
        sae_feature_stats_top(s, i, all + total, vals, top_n, &len);
        total += len;
    }
    qsort(all, total, sizeof *all, compare_u64);
    size_t unique = 0;
    for (size_t k = 0; k < total; k++)
        if (unique == 0 || all[k] != all[unique - 1])
            all[unique++] = all[k];
    free(vals);
    *ids = all;
    *n = unique;
    return 0;
}

/* ---- what the files hold, gathered once ---------------------------------------- */

typedef struct tables {
    size_t d_sae, top_n, n_bins;
    uint64_t *count;      /* d_sae */
    double *mean, *std;   /* d_sae, over the rows where the feature fires */
    float *max;           /* d_sae */
    uint64_t *hist;       /* d_sae x n_bins */
    double *edges;        /* n_bins + 1 */
    uint64_t *top_rows;   /* d_sae x top_n */
    float *top_values;    /* d_sae x top_n */
    size_t *top_len;      /* d_sae */
    uint64_t *row_ids;    /* the rows the top lists name, ascending */
    size_t n_row_ids;
    float *w_dec;         /* d_sae x d_in with an image shape, else NULL */
} tables;

static void tables_free(tables *t)
{
    free(t->count);
    free(t->mean);
    free(t->std);
    free(t->max);
    free(t->hist);
    free(t->edges);
    free(t->top_rows);
    free(t->top_values);
    free(t->top_len);
    free(t->row_ids);
    free(t->w_dec);
    memset(t, 0, sizeof *t);
}

static int tables_fill(tables *t, const dashboard *d, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    const sae_feature_stats *s = d->stats;
    const size_t n = t->d_sae = sae_feature_stats_d_sae(s);
    const size_t top_n = t->top_n = sae_feature_stats_top_n(s);
    const size_t bins = t->n_bins = sae_feature_stats_bins(s);
    t->count = malloc(n * sizeof(uint64_t));
    t->mean = malloc(n * sizeof(double));
    t->std = malloc(n * sizeof(double));
    t->max = malloc(n * sizeof(float));
    t->hist = malloc(n * bins * sizeof(uint64_t));
    t->edges = malloc((bins + 1) * sizeof(double));
    t->top_rows = malloc(n * top_n * sizeof(uint64_t));
    t->top_values = malloc(n * top_n * sizeof(float));
    t->top_len = malloc(n * sizeof(size_t));
    if (d->image_h)
        t->w_dec = malloc(n * d->d_in * sizeof(float));
    if (!t->count || !t->mean || !t->std || !t->max || !t->hist || !t->edges || !t->top_rows ||
        !t->top_values || !t->top_len || (d->image_h && !t->w_dec) ||
        dashboard_top_rows(s, &t->row_ids, &t->n_row_ids) != 0) {
        tables_free(t);
        set_err(err, errlen, "out of memory for the tables of %zu features", n);
        return -1;
    }
    /* the queries cannot fail with these sizes; sum and sum_sq share mean/std */
    sae_feature_stats_counts(s, t->count, n);
    sae_feature_stats_sums(s, t->mean, t->std, n);
    sae_feature_stats_max(s, t->max, n);
    sae_feature_stats_histogram(s, t->hist, n * bins);
    sae_feature_stats_bin_edges(s, t->edges, bins + 1);
    for (size_t i = 0; i < n; i++) {
        sae_feature_stats_top(s, i, t->top_rows + i * top_n, t->top_values + i * top_n, top_n,
                              &t->top_len[i]);
        double c = (double)t->count[i], mean = c > 0 ? t->mean[i] / c : 0.0;
        double var = c > 0 ? t->std[i] / c - mean * mean : 0.0;
        t->mean[i] = mean;
        t->std[i] = var > 0 ? sqrt(var) : 0.0;
    }
    if (t->w_dec)
        sae_model_get_tensor(d->m, SAE_W_DEC, t->w_dec, n * d->d_in);
    return 0;
}

/* ---- JSON text ------------------------------------------------------------------- */

/* The length of the valid UTF-8 sequence at s (0 if it is not one). */
static size_t utf8_length(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    size_t len = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 && s[0] < 0xE0 ? 2 : 0;
    if (len == 0)
        return 0;
    for (size_t k = 1; k < len; k++)
        if ((s[k] & 0xC0) != 0x80)
            return 0;
    uint32_t c = len == 2 ? (s[0] & 0x1Fu) : len == 3 ? (s[0] & 0x0Fu) : (s[0] & 0x07u);
    for (size_t k = 1; k < len; k++)
        c = c << 6 | (s[k] & 0x3Fu);
    if ((len == 3 && (c < 0x800 || (c >= 0xD800 && c < 0xE000))) ||
        (len == 4 && (c < 0x10000 || c > 0x10FFFF)))
        return 0;
    return len;
}

/* A JSON string that is also safe inside an HTML <script> element: '<', '>'
 * and '&' are escaped, and bytes that are not UTF-8 become U+FFFD. */
static void json_string(FILE *f, const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    fputc('"', f);
    while (*s) {
        size_t len = utf8_length(s);
        if (len == 0) {
            fputs("\\ufffd", f);
            s++;
        } else if (len > 1) {
            fwrite(s, 1, len, f);
            s += len;
        } else {
            unsigned c = *s++;
            if (c == '"' || c == '\\')
                fprintf(f, "\\%c", c);
            else if (c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0x7F)
                fprintf(f, "\\u%04x", c);
            else
                fputc((int)c, f);
        }
    }
    fputc('"', f);
}

static void json_number(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.9g", v); /* every float exactly */
    else
        fputs("null", f);
}

static void base64(FILE *f, const unsigned char *b, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', f);
    for (size_t k = 0; k < n; k += 3) {
        uint32_t v = (uint32_t)b[k] << 16 | (k + 1 < n ? (uint32_t)b[k + 1] << 8 : 0) |
                     (k + 2 < n ? b[k + 2] : 0);
        char out[4] = {abc[v >> 18], abc[(v >> 12) & 63], k + 1 < n ? abc[(v >> 6) & 63] : '=',
                       k + 2 < n ? abc[v & 63] : '='};
        fwrite(out, 1, 4, f);
    }
    fputc('"', f);
}

/* One array per feature: "name":[v_0,...]. */
static void json_doubles(FILE *f, const char *name, const double *v, size_t n)
{
    fprintf(f, "\"%s\":[", name);
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        json_number(f, v[i]);
    }
    fputs("]", f);
}

static const char *arch_name(int arch)
{
    switch (arch) {
    case SAE_ARCH_RELU: return "relu";
    case SAE_ARCH_TOPK: return "topk";
    case SAE_ARCH_BATCHTOPK: return "batchtopk";
    case SAE_ARCH_JUMPRELU: return "jumprelu";
    default: return "unknown";
    }
}

static void write_meta(FILE *f, const dashboard *d, const tables *t)
{
    fputs("\"meta\":{\"title\":", f);
    json_string(f, d->title);
    fputs(",\"checkpoint\":", f);
    json_string(f, d->checkpoint_path);
    fputs(",\"data\":", f);
    json_string(f, d->data_path);
    fputs(",\"labels\":", f);
    if (d->labels_path)
        json_string(f, d->labels_path);
    else
        fputs("null", f);
    fputs(",\"libsae\":", f);
    json_string(f, sae_version_string());
    fprintf(f, ",\"rows\":%zu,\"d_in\":%zu,\"d_sae\":%zu,\"arch\":\"%s\",\"k\":%zu,\"l0\":",
            d->rows, d->d_in, t->d_sae, arch_name(sae_model_arch(d->m)), sae_model_k(d->m));
    json_number(f, d->l0);
    fputs(",\"fvu\":", f);
    json_number(f, d->fvu);
    fputs(",\"dense_threshold\":", f);
    json_number(f, d->dense_threshold);
    fputs(",\"edges\":[", f);
    for (size_t k = 0; k <= t->n_bins; k++) {
        if (k)
            fputc(',', f);
        json_number(f, t->edges[k]);
    }
    fputs("],\"image\":", f);
    if (d->image_h)
        fprintf(f, "[%zu,%zu]", d->image_h, d->image_w);
    else
        fputs("null", f);
    fprintf(f, ",\"top_n\":%zu,\"nn_k\":%zu}", t->top_n, d->nn ? d->nn_k : 0);
}

static void write_features(FILE *f, const dashboard *d, const tables *t, signed char *scratch)
{
    const size_t n = t->d_sae, top_n = t->top_n, bins = t->n_bins;
    fputs("\"features\":{\"count\":[", f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, i ? ",%llu" : "%llu", (unsigned long long)t->count[i]);
    fputs("],", f);
    json_doubles(f, "mean", t->mean, n);
    fputc(',', f);
    json_doubles(f, "std", t->std, n);
    fputs(",\"max\":[", f);
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        json_number(f, t->max[i]);
    }
    /* each histogram from its first to its last nonzero bin */
    fputs("],\"hist\":[", f);
    for (size_t i = 0; i < n; i++) {
        const uint64_t *h = t->hist + i * bins;
        size_t first = 0, last = bins;
        while (first < bins && h[first] == 0)
            first++;
        while (last > first && h[last - 1] == 0)
            last--;
        fprintf(f, "%s[%zu", i ? "," : "", first < bins ? first : 0);
        for (size_t b = first; b < last; b++)
            fprintf(f, ",%llu", (unsigned long long)h[b]);
        fputc(']', f);
    }
    fputs("],\"top_rows\":[", f);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ",[" : "[", f);
        for (size_t r = 0; r < t->top_len[i]; r++)
            fprintf(f, r ? ",%llu" : "%llu", (unsigned long long)t->top_rows[i * top_n + r]);
        fputc(']', f);
    }
    fputs("],\"top_values\":[", f);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ",[" : "[", f);
        for (size_t r = 0; r < t->top_len[i]; r++) {
            if (r)
                fputc(',', f);
            json_number(f, t->top_values[i * top_n + r]);
        }
        fputc(']', f);
    }
    fputs("],\"nn\":[", f);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ",[" : "[", f);
        for (size_t r = 0; d->nn && r < d->nn_k; r++)
            fprintf(f, r ? ",%u" : "%u", (unsigned)d->nn[i * d->nn_k + r]);
        fputc(']', f);
    }
    fputs("],\"nn_cos\":[", f);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ",[" : "[", f);
        for (size_t r = 0; d->nn && r < d->nn_k; r++) {
            if (r)
                fputc(',', f);
            fprintf(f, "%.4f", (double)d->nn_cos[i * d->nn_k + r]);
        }
        fputc(']', f);
    }
    fputc(']', f);
    if (t->w_dec) { /* each decoder row as int8, scaled by its largest magnitude */
        fputs(",\"decoder\":[", f);
        for (size_t i = 0; i < n; i++) {
            const float *w = t->w_dec + i * d->d_in;
            float amax = 0.0f;
            for (size_t j = 0; j < d->d_in; j++)
                amax = fabsf(w[j]) > amax ? fabsf(w[j]) : amax;
            for (size_t j = 0; j < d->d_in; j++)
                scratch[j] = (signed char)(amax > 0 ? lrintf(127.0f * w[j] / amax) : 0);
            if (i)
                fputc(',', f);
            base64(f, (const unsigned char *)scratch, d->d_in);
        }
        fputc(']', f);
    }
    fputc('}', f);
}

/* The rows the top lists name: labels and/or images (0..255 over the range
 * of the values of all these rows). */
static void write_rows(FILE *f, const dashboard *d, const tables *t, unsigned char *scratch)
{
    float lo = INFINITY, hi = -INFINITY;
    for (size_t k = 0; d->image_h && k < t->n_row_ids; k++) {
        const float *x = d->x + t->row_ids[k] * d->d_in;
        for (size_t j = 0; j < d->d_in; j++) {
            lo = x[j] < lo ? x[j] : lo;
            hi = x[j] > hi ? x[j] : hi;
        }
    }
    fputs("\"rows\":[", f);
    for (size_t k = 0; k < t->n_row_ids; k++) {
        fprintf(f, "%s{\"id\":%llu", k ? "," : "", (unsigned long long)t->row_ids[k]);
        if (d->labels) {
            fputs(",\"label\":", f);
            json_string(f, d->labels[k]);
        }
        if (d->image_h) {
            const float *x = d->x + t->row_ids[k] * d->d_in;
            for (size_t j = 0; j < d->d_in; j++)
                scratch[j] = (unsigned char)(hi > lo ? lrintf(255.0f * (x[j] - lo) / (hi - lo)) : 0);
            fputs(",\"img\":", f);
            base64(f, scratch, d->d_in);
        }
        fputc('}', f);
    }
    fputc(']', f);
}

static int write_data(FILE *f, const dashboard *d, char *err, size_t errlen)
{
    tables t;
    if (tables_fill(&t, d, err, errlen) != 0)
        return -1;
    unsigned char *scratch = malloc(d->d_in + 1);
    if (!scratch) {
        tables_free(&t);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    fputc('{', f);
    write_meta(f, d, &t);
    fputc(',', f);
    write_features(f, d, &t, (signed char *)scratch);
    fputc(',', f);
    write_rows(f, d, &t, scratch);
    fputs("}", f);
    free(scratch);
    tables_free(&t);
    return 0;
}

/* ---- files ------------------------------------------------------------------------- */

typedef int (*write_fn)(FILE *f, const dashboard *d, char *err, size_t errlen);

/* Write path through path.tmp, renamed into place once complete. */
static int write_file(const char *path, write_fn fn, const dashboard *d, char *err,
                      size_t errlen)
{
    size_t len = strlen(path);
    char *tmp = malloc(len + 5);
    if (!tmp) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        set_err(err, errlen, "cannot write '%s': %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    err[0] = '\0';
    int rc = fn(f, d, err, errlen);
    if (fclose(f) != 0 || rc != 0) {
        if (!err[0])
            set_err(err, errlen, "cannot write '%s'", tmp);
        rc = -1;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        set_err(err, errlen, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        rc = -1;
    }
    if (rc != 0)
        remove(tmp);
    free(tmp);
    return rc;
}

static int write_page(FILE *f, const dashboard *d, char *err, size_t errlen)
{
    const char *cut = strstr(sae_features_page, PLACEHOLDER);
    if (!cut) { /* the build embeds page.html, which has it */
        set_err(err, errlen, "the page template has no data placeholder");
        return -1;
    }
    fwrite(sae_features_page, 1, (size_t)(cut - sae_features_page), f);
    if (write_data(f, d, err, errlen) != 0)
        return -1;
    fputs(cut + strlen(PLACEHOLDER), f);
    return ferror(f) ? -1 : 0;
}

static int write_json(FILE *f, const dashboard *d, char *err, size_t errlen)
{
    if (write_data(f, d, err, errlen) != 0)
        return -1;
    fputc('\n', f);
    return ferror(f) ? -1 : 0;
}

static int write_csv(FILE *f, const dashboard *d, char *err, size_t errlen)
{
    tables t;
    if (tables_fill(&t, d, err, errlen) != 0)
        return -1;
    fputs("feature,count,density,mean,std,max,top_rows,top_values,neighbors,neighbor_cosines\n", f);
    for (size_t i = 0; i < t.d_sae; i++) {
        fprintf(f, "%zu,%llu,%.7g,%.7g,%.7g,%.7g,", i, (unsigned long long)t.count[i],
                (double)t.count[i] / (double)d->rows, t.mean[i], t.std[i], (double)t.max[i]);
        for (size_t r = 0; r < t.top_len[i]; r++)
            fprintf(f, r ? " %llu" : "%llu", (unsigned long long)t.top_rows[i * t.top_n + r]);
        fputc(',', f);
        for (size_t r = 0; r < t.top_len[i]; r++)
            fprintf(f, r ? " %.7g" : "%.7g", (double)t.top_values[i * t.top_n + r]);
        fputc(',', f);
        for (size_t r = 0; d->nn && r < d->nn_k; r++)
            fprintf(f, r ? " %u" : "%u", (unsigned)d->nn[i * d->nn_k + r]);
        fputc(',', f);
        for (size_t r = 0; d->nn && r < d->nn_k; r++)
            fprintf(f, r ? " %.4f" : "%.4f", (double)d->nn_cos[i * d->nn_k + r]);
        fputc('\n', f);
    }
    tables_free(&t);
    return ferror(f) ? -1 : 0;
}

int dashboard_write_html(const dashboard *d, const char *path, char *err, size_t errlen)
{
    return write_file(path, write_page, d, err, errlen);
}

int dashboard_write_json(const dashboard *d, const char *path, char *err, size_t errlen)
{
    return write_file(path, write_json, d, err, errlen);
}

int dashboard_write_csv(const dashboard *d, const char *path, char *err, size_t errlen)
{
    return write_file(path, write_csv, d, err, errlen);
}
