/*
 * sae-features: what a trained SAE's features do on a dataset, as a feature
 * dashboard in the browser.
 *
 *   sae-features run/checkpoint acts.npy --out dash --labels tokens.txt
 *
 * reads the model (a checkpoint directory or a .safetensors file) and the
 * data (memory-mapped .npy or raw float32), feeds every row to the library's
 * feature statistics (sae_feature_stats_add), computes the FVU on the data
 * and each feature's nearest features by decoder cosine
 * (sae_decoder_neighbors), and writes into the output directory:
 *   dashboard.html             one self-contained page (no network): an
 *                              overview, a sortable and filterable table of
 *                              every feature, and a card per feature
 *   features.csv               one row per feature
 *   features.json              the data the page holds
 *   feature_stats.safetensors  the statistics (sae_feature_stats_load)
 * Memory: the model, the statistics (O(d_sae x (top + bins))) and one batch
 * of features; the data stays mapped.
 */
#include "dashboard.h"
#include "labels.h"

#include "common/args.h"
#include "common/data.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(void)
{
    printf(
        "Usage: sae-features [options] CHECKPOINT DATA --out DIR\n"
        "Write the feature dashboard of the SAE in CHECKPOINT (a checkpoint directory\n"
        "as sae-train or SAELens write it, or a .safetensors model file) on DATA (a\n"
        "float32 .npy of rows x d_in, or raw float32), into DIR: dashboard.html (one\n"
        "self-contained page: open it from disk), features.csv, features.json and\n"
        "feature_stats.safetensors.\n"
        "  --out DIR            the output directory (created if missing)\n"
        "  --labels FILE        one line of text per data row, shown with the rows a\n"
        "                       feature fires on most; a line 'before<TAB>token<TAB>after'\n"
        "                       highlights the token in its context\n"
        "  --image HxW          draw the inputs and decoder rows as H x W images\n"
        "                       (default: when d_in is a square, e.g. 784 = 28 x 28)\n"
        "  --no-image           do not draw images\n"
        "  --rows N             use the first N rows of DATA (default: all)\n"
        "  --top N              top-activating rows kept per feature (default 12)\n"
        "  --neighbors K        nearest features by decoder cosine (default 8; 0: none)\n"
        "  --bins N             bins of the activation histograms (default 60)\n"
        "  --hist-range LO,HI   their range as log10 of the activation (default: the\n"
        "                       6 decades below the largest activation of the first\n"
        "                       4096 rows, with a factor 2 of headroom)\n"
        "  --dense P            density at or above which a feature counts as dense\n"
        "                       (default 0.1)\n"
        "  --batch N            rows encoded per call (default 4096)\n"
        "  --title TEXT         the page's title (default: the checkpoint's name)\n"
        "  --quiet              no progress on stderr\n"
        "  -h, --help           this help\n"
        "Exit status: 0 done, 1 a library or write error, 2 bad command line or input.\n");
}

typedef struct options {
    const char *checkpoint, *data, *out, *labels, *title;
    size_t image_h, image_w;
    int image;              /* -1 auto, 0 off, 1 given */
    uint64_t rows, top, neighbors, bins, batch;
    double hist_range[2];
    int have_range;
    double dense;
    int quiet;
} options;

static void parse_image(const char *s, options *o)
{
    char *end;
    unsigned long long h = strtoull(s, &end, 10), w = 0;
    if (end != s && (*end == 'x' || *end == 'X'))
        w = strtoull(end + 1, &end, 10);
    if (*end || h == 0 || w == 0 || h > 100000 || w > 100000)
        tool_usage_error("--image: '%s' is not HxW (e.g. 28x28)", s);
    o->image_h = (size_t)h;
    o->image_w = (size_t)w;
    o->image = 1;
}

static void parse_range(const char *s, options *o)
{
    char *end, *end2;
    double lo = strtod(s, &end), hi = *end == ',' ? strtod(end + 1, &end2) : NAN;
    if (end == s || *end != ',' || *end2 || !(lo < hi) || lo < -60 || hi > 60)
        tool_usage_error("--hist-range: '%s' is not LO,HI with -60 <= LO < HI <= 60", s);
    o->hist_range[0] = lo;
    o->hist_range[1] = hi;
    o->have_range = 1;
}

static void parse(int argc, char **argv, options *o)
{
    enum { LABELS = 256, IMAGE, NO_IMAGE, ROWS, TOP, NEIGHBORS, BINS, RANGE, DENSE, BATCH, TITLE };
    static const struct option longopts[] = {
        {"out", required_argument, NULL, 'o'},    {"labels", required_argument, NULL, LABELS},
        {"image", required_argument, NULL, IMAGE}, {"no-image", no_argument, NULL, NO_IMAGE},
        {"rows", required_argument, NULL, ROWS},  {"top", required_argument, NULL, TOP},
        {"neighbors", required_argument, NULL, NEIGHBORS},
        {"bins", required_argument, NULL, BINS},  {"hist-range", required_argument, NULL, RANGE},
        {"dense", required_argument, NULL, DENSE}, {"batch", required_argument, NULL, BATCH},
        {"title", required_argument, NULL, TITLE}, {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    *o = (options){.image = -1, .top = 12, .neighbors = 8, .bins = 60, .batch = 4096,
                   .dense = 0.1};
    int c;
    while ((c = tool_getopt(argc, argv, longopts)) != -1) {
        switch (c) {
        case 'o': o->out = optarg; break;
        case LABELS: o->labels = optarg; break;
        case IMAGE: parse_image(optarg, o); break;
        case NO_IMAGE: o->image = 0; break;
        case ROWS: o->rows = tool_arg_count("--rows", optarg, 1); break;
        case TOP: o->top = tool_arg_count("--top", optarg, 1); break;
        case NEIGHBORS: o->neighbors = tool_arg_count("--neighbors", optarg, 0); break;
        case BINS: o->bins = tool_arg_count("--bins", optarg, 1); break;
        case RANGE: parse_range(optarg, o); break;
        case DENSE: o->dense = tool_arg_double("--dense", optarg, 0.0, false); break;
        case BATCH: o->batch = tool_arg_count("--batch", optarg, 1); break;
        case TITLE: o->title = optarg; break;
        case 'q': o->quiet = 1; break;
        case 'h': usage(); exit(0);
        default: break; /* tool_getopt has exited */
        }
    }
    if (argc - optind != 2)
        tool_usage_error("needs CHECKPOINT and DATA (see --help)");
    if (!o->out)
        tool_usage_error("needs --out DIR (see --help)");
    if (o->top > 65536 || o->bins > 65536)
        tool_usage_error("--top and --bins are at most 65536");
    if (o->dense > 1.0)
        tool_usage_error("--dense: %g is not a density in (0, 1]", o->dense);
    o->checkpoint = argv[optind];
    o->data = argv[optind + 1];
}

static void progress(const options *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(const options *o, const char *fmt, ...)
{
    if (o->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", tool_program());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* The library failed: "<program>: <what>: <status> (<detail>)", exit 1. */
static _Noreturn void library_failure(int rc, const char *what)
{
    fprintf(stderr, "%s: %s: %s (%s)\n", tool_program(), what, sae_status_string(rc),
            sae_error_detail());
    exit(1);
}

/* log10 range of the histograms: the option, or the 6 decades below twice
 * the largest activation of the first rows. */
static void histogram_range(const options *o, const sae_model *m, const float *x, size_t rows,
                            double range[2])
{
    if (o->have_range) {
        range[0] = o->hist_range[0];
        range[1] = o->hist_range[1];
        return;
    }
    const size_t n = rows < 4096 ? rows : 4096;
    size_t nnz, done;
    int rc = sae_encode_sparse_size(m, x, n, 0, &nnz);
    size_t *offsets = malloc((n + 1) * sizeof(size_t));
    uint32_t *feat = malloc((nnz + 1) * sizeof(uint32_t));
    float *val = malloc((nnz + 1) * sizeof(float));
    if (rc == SAE_OK && (!offsets || !feat || !val))
        rc = SAE_E_NOMEM;
    if (rc == SAE_OK)
        rc = sae_encode_sparse(m, x, n, 0, offsets, feat, val, nnz, &done);
    if (rc != SAE_OK)
        library_failure(rc, "encoding the first rows");
    float max = 0.0f;
    for (size_t k = 0; k < nnz; k++)
        max = val[k] > max ? val[k] : max;
    free(val);
    free(feat);
    free(offsets);
    range[1] = max > 0.0f ? ceil(log10(2.0 * max)) : 2.0;
    range[1] = range[1] > 60.0 ? 60.0 : range[1];
    range[0] = range[1] - 6.0;
}

/* The image shape: the option, or a square d_in. */
static void image_shape(options *o, size_t d_in)
{
    if (o->image == 1 && o->image_h * o->image_w != d_in)
        tool_usage_error("--image %zux%zu: %zu pixels, but d_in is %zu", o->image_h, o->image_w,
                         o->image_h * o->image_w, d_in);
    if (o->image == -1) {
        size_t side = (size_t)llround(sqrt((double)d_in));
        o->image_h = o->image_w = side * side == d_in && side >= 2 ? side : 0;
    }
    if (o->image == 0)
        o->image_h = o->image_w = 0;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) {
        fprintf(stderr, "%s: out of memory\n", tool_program());
        exit(1);
    }
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static double file_mb(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0.0;
}

/* The checkpoint of --checkpoint, or a usage error naming why not. */
static sae_model *load_model(const options *o)
{
    sae_model *m;
    int rc = sae_model_load(&m, o->checkpoint);
    if (rc != SAE_OK)
        tool_usage_error("%s: %s%s%s%s", o->checkpoint, sae_status_string(rc),
                         *sae_error_detail() ? " (" : "", sae_error_detail(),
                         *sae_error_detail() ? ")" : "");
    return m;
}

/* The data (rows of d_in values) and the rows to read (--rows caps them);
 * the image shape, the labels file, the neighbour count and the output
 * directory checked against them. Usage errors exit. */
static size_t open_inputs(options *o, tool_data *data, size_t d_in, size_t d_sae)
{
    char err[512];
    if (tool_data_open(data, o->data, d_in, err, sizeof err) != 0)
        tool_usage_error("%s: %s", o->data, err);
    if (data->cols != d_in)
        tool_usage_error("%s: rows of %zu values, but the model's d_in is %zu", o->data,
                         data->cols, d_in);
    size_t rows = data->rows;
    if (o->rows && o->rows < rows)
        rows = (size_t)o->rows;
    if (rows == 0)
        tool_usage_error("%s: no rows", o->data);
    image_shape(o, d_in);
    if (o->labels && labels_check(o->labels, data->rows, err, sizeof err) != 0)
        tool_usage_error("--labels: %s", err);
    if (o->neighbors >= d_sae)
        o->neighbors = d_sae - 1;
    if (mkdir(o->out, 0777) != 0 && errno != EEXIST)
        tool_usage_error("--out '%s': %s", o->out, strerror(errno));
    return rows;
}

/* The feature statistics of the rows of x (rows x d_in), batch by batch. */
static sae_feature_stats *collect_stats(const options *o, const sae_model *m, const float *x,
                                        size_t rows)
{
    const size_t d_in = sae_model_d_in(m);
    double range[2];
    histogram_range(o, m, x, rows, range);
    sae_feature_stats *stats;
    int rc = sae_feature_stats_create(&stats, sae_model_d_sae(m), (size_t)o->top,
                                      (size_t)o->bins, range[0], range[1]);
    if (rc != SAE_OK)
        library_failure(rc, "creating the statistics");
    for (size_t t0 = 0; t0 < rows; t0 += (size_t)o->batch) {
        size_t n = rows - t0 < o->batch ? rows - t0 : (size_t)o->batch;
        if ((rc = sae_feature_stats_add(stats, m, x + t0 * d_in, n)) != SAE_OK)
            library_failure(rc, "the statistics");
    }
    return stats;
}

/* Active features per row, and the features that never fired, from the
 * statistics' counts over rows. */
static double mean_l0(const sae_feature_stats *stats, size_t d_sae, size_t rows, size_t *dead)
{
    uint64_t *counts = malloc(d_sae * sizeof(uint64_t));
    if (!counts)
        library_failure(SAE_E_NOMEM, "the counts");
    sae_feature_stats_counts(stats, counts, d_sae);
    double active = 0.0;
    *dead = 0;
    for (size_t i = 0; i < d_sae; i++) {
        active += (double)counts[i];
        *dead += counts[i] == 0;
    }
    free(counts);
    return active / (double)rows;
}

/* sae_fvu on the rows; NaN where it is undefined (one row, no variance). */
static double data_fvu(const sae_model *m, const float *x, size_t rows)
{
    double fvu = NAN;
    if (rows < 2)
        return fvu;
    int rc = sae_fvu(m, x, rows, &fvu);
    if (rc == SAE_E_INVALID_ARG) /* data without variance: FVU is undefined */
        return NAN;
    if (rc != SAE_OK)
        library_failure(rc, "the FVU");
    return fvu;
}

/* Each feature's --neighbors nearest by decoder cosine (d_sae x k each,
 * malloc'ed), or NULL for none. */
static void neighbors(const options *o, const sae_model *m, uint32_t **nn, float **nn_cos)
{
    const size_t d_sae = sae_model_d_sae(m), k = (size_t)o->neighbors;
    *nn = NULL;
    *nn_cos = NULL;
    if (k == 0)
        return;
    double t0 = tool_now();
    *nn = malloc(d_sae * k * sizeof(uint32_t));
    *nn_cos = malloc(d_sae * k * sizeof(float));
    int rc = *nn && *nn_cos ? sae_decoder_neighbors(m, k, *nn, *nn_cos, d_sae * k) : SAE_E_NOMEM;
    if (rc != SAE_OK)
        library_failure(rc, "the decoder neighbours");
    progress(o, "nearest features by decoder cosine in %.1f s", tool_now() - t0);
}

/* The four files into --out; returns the exit status (a failure said). */
static int write_outputs(const options *o, const dashboard *d, double t0)
{
    char err[512];
    char *html = join(o->out, "dashboard.html"), *csv = join(o->out, "features.csv");
    char *json = join(o->out, "features.json"), *st = join(o->out, "feature_stats.safetensors");
    int status = 0, rc;
    if (dashboard_write_html(d, html, err, sizeof err) != 0 ||
        dashboard_write_csv(d, csv, err, sizeof err) != 0 ||
        dashboard_write_json(d, json, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", tool_program(), err);
        status = 1;
    } else if ((rc = sae_feature_stats_save(d->stats, st)) != SAE_OK) {
        fprintf(stderr, "%s: %s: %s (%s)\n", tool_program(), st, sae_status_string(rc),
                sae_error_detail());
        status = 1;
    } else {
        progress(o, "wrote %s (%.1f MB), features.csv, features.json, feature_stats.safetensors "
                 "in %.1f s", html, file_mb(html), tool_now() - t0);
    }
    free(st);
    free(json);
    free(csv);
    free(html);
    return status;
}

int main(int argc, char **argv)
{
    tool_set_program("sae-features");
    options o;
    parse(argc, argv, &o);
    double t0 = tool_now();
    sae_model *m = load_model(&o);
    const size_t d_in = sae_model_d_in(m), d_sae = sae_model_d_sae(m);
    tool_data data;
    size_t rows = open_inputs(&o, &data, d_in, d_sae);
    progress(&o, "%s: d_in %zu, d_sae %zu; %s: %zu rows (%s)", o.checkpoint, d_in, d_sae, o.data,
             rows, data.format);

    sae_feature_stats *stats = collect_stats(&o, m, data.x, rows);
    size_t dead;
    const double l0 = mean_l0(stats, d_sae, rows, &dead), fvu = data_fvu(m, data.x, rows);
    progress(&o, "statistics of %zu rows in %.1f s: L0 %.2f, FVU %.4f, %zu dead features", rows,
             tool_now() - t0, l0, fvu, dead);
    uint32_t *nn;
    float *nn_cos;
    neighbors(&o, m, &nn, &nn_cos);

    uint64_t *ids = NULL;
    size_t n_ids = 0;
    char **labels = NULL, err[512];
    if (dashboard_top_rows(stats, &ids, &n_ids) != 0)
        library_failure(SAE_E_NOMEM, "the top rows");
    if (o.labels && labels_read(o.labels, data.rows, ids, n_ids, &labels, err, sizeof err) != 0)
        tool_usage_error("--labels: %s", err);
    char default_title[300];
    snprintf(default_title, sizeof default_title, "SAE features: %s", o.checkpoint);
    dashboard d = {.title = o.title ? o.title : default_title, .checkpoint_path = o.checkpoint,
                   .data_path = o.data, .labels_path = o.labels, .m = m, .stats = stats,
                   .x = data.x, .rows = rows, .d_in = d_in, .nn = nn, .nn_cos = nn_cos,
                   .nn_k = (size_t)o.neighbors, .l0 = l0, .fvu = fvu,
                   .dense_threshold = o.dense, .image_h = o.image_h, .image_w = o.image_w,
                   .labels = labels};
    int status = write_outputs(&o, &d, t0);
    labels_free(labels, n_ids);
    free(ids);
    free(nn_cos);
    free(nn);
    sae_feature_stats_free(stats);
    tool_data_close(&data);
    sae_model_free(m);
    return status;
}
