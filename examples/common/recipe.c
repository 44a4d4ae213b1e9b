#include "recipe.h"

#include "batch.h"
#include "plot.h"
#include "rng.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SAMPLE_STREAM 0x5a3e1e /* the sample's random stream (the shuffle's is another) */
#define BINS_PER_DECADE 5

bool ex_recipe_needs_sample(const ex_config *c, bool hist)
{
    return c->normalize || c->b_dec_init >= 0 || c->resample_every > 0 || hist;
}

int ex_sample_draw(ex_sample *s, const ex_data *data, size_t n, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    const size_t d = data->cols;
    if (n > data->rows)
        n = data->rows;
    if (n == 0 || n > SIZE_MAX / sizeof(float) / d)
        return -1;
    s->x = malloc(n * d * sizeof(float));
    if (!s->x)
        return -1;
    s->n = n;
    s->d = d;
    if (n == data->rows) { /* the whole data */
        memcpy(s->x, data->x, n * d * sizeof(float));
        return 0;
    }
    ex_rng rng;
    ex_rng_seed(&rng, seed, SAMPLE_STREAM);
    for (size_t t = 0; t < n; t++) {
        size_t row = (size_t)ex_rng_below(&rng, data->rows);
        memcpy(s->x + t * d, data->x + row * d, d * sizeof(float));
    }
    return 0;
}

void ex_sample_free(ex_sample *s)
{
    free(s->x);
    memset(s, 0, sizeof *s);
}

int ex_recipe_scale(const ex_config *c, ex_sample *s, bool estimate, double *scale, char *err,
                    size_t errlen)
{
    if (!c->normalize) {
        *scale = 1.0;
        return SAE_OK;
    }
    if (estimate) {
        int rc = sae_estimate_input_scale(s->x, s->n, s->d, scale);
        if (rc != SAE_OK) {
            snprintf(err, errlen, "--normalize: estimating the input scale: %s%s",
                     sae_status_string(rc),
                     rc == SAE_E_INVALID_ARG ? " (every token of the sample is zero?)" : "");
            return rc;
        }
    }
    ex_scale(s->x, s->n * s->d, *scale);
    return SAE_OK;
}

int ex_recipe_b_dec(const ex_config *c, sae_model *m, const ex_sample *s, char *err,
                    size_t errlen)
{
    if (c->b_dec_init < 0)
        return SAE_OK;
    int rc = sae_model_init_b_dec(m, s->x, s->n, c->b_dec_init);
    if (rc != SAE_OK)
        snprintf(err, errlen, "--b-dec-init: %s", sae_status_string(rc));
    return rc;
}

/* ---- the density histogram ------------------------------------------------- */

int ex_hist_header(FILE *f)
{
    return fprintf(f, "%s\n", EX_HIST_COLUMNS) < 0 ? -1 : 0;
}

int ex_hist_write(FILE *f, const sae_model *m, const ex_sample *s, uint64_t step, size_t *n_dead)
{
    /* from the first whole decade at or below 1/n (which clamps nothing) to 0 */
    double lo = floor(-log10((double)s->n));
    if (lo > -1.0)
        lo = -1.0;
    const size_t bins = (size_t)(-lo) * BINS_PER_DECADE;
    uint64_t *counts = malloc(bins * sizeof *counts);
    if (!counts)
        return SAE_E_NOMEM;
    size_t dead = 0;
    int rc = sae_feature_density_histogram(m, s->x, s->n, lo, 0.0, bins, counts, &dead);
    for (size_t b = 0; b < bins && rc == SAE_OK; b++) {
        double a = lo + (double)b / BINS_PER_DECADE, z = lo + (double)(b + 1) / BINS_PER_DECADE;
        if (fprintf(f, "%llu,%zu,%zu,%.1f,%.1f,%llu\n", (unsigned long long)step, s->n, dead, a, z,
                    (unsigned long long)counts[b]) < 0)
            rc = SAE_E_IO;
    }
    if (rc == SAE_OK && fflush(f) != 0)
        rc = SAE_E_IO;
    free(counts);
    if (rc == SAE_OK && n_dead)
        *n_dead = dead;
    return rc;
}

FILE *ex_hist_open(const char *path, bool append, char *err, size_t errlen)
{
    static const char header[] = EX_HIST_COLUMNS "\n";
    bool empty = true;
    if (append) {
        FILE *f = fopen(path, "r");
        if (f) {
            char head[sizeof header] = "";
            size_t n = fread(head, 1, sizeof header - 1, f);
            empty = n == 0;
            fclose(f);
            if (!empty && (n != sizeof header - 1 || memcmp(head, header, n) != 0)) {
                snprintf(err, errlen, "exists and does not start with the header %s",
                         EX_HIST_COLUMNS);
                return NULL;
            }
        } else if (errno != ENOENT) {
            snprintf(err, errlen, "%s", strerror(errno));
            return NULL;
        }
    }
    FILE *f = fopen(path, append ? "a" : "w");
    if (!f) {
        snprintf(err, errlen, "cannot write: %s", strerror(errno));
        return NULL;
    }
    if (empty && ex_hist_header(f) != 0) {
        fclose(f);
        snprintf(err, errlen, "cannot write");
        return NULL;
    }
    return f;
}

/* path with its ".csv" ending (if any) replaced by ext */
static char *with_ext(const char *path, const char *ext)
{
    size_t len = strlen(path);
    if (len >= 4 && strcmp(path + len - 4, ".csv") == 0)
        len -= 4;
    char *out = malloc(len + strlen(ext) + 1);
    if (out) {
        memcpy(out, path, len);
        strcpy(out + len, ext);
    }
    return out;
}

char *ex_hist_png_path(const char *csv_path)
{
    return with_ext(csv_path, ".png");
}

/* The steps of the histograms in the CSV (at most max, the last ones), the
 * sample size, d_sae (binned + dead of the last) and the last dead count. */
static int scan_hist(const char *path, uint64_t *steps, size_t max, size_t *n_steps,
                     size_t *sample, uint64_t *total, size_t *dead)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    *n_steps = 0;
    *total = 0;
    if (!fgets(line, sizeof line, f) || strncmp(line, EX_HIST_COLUMNS, strlen(EX_HIST_COLUMNS))) {
        fclose(f);
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        unsigned long long step, count;
        size_t n, d;
        double a, z;
        if (sscanf(line, "%llu,%zu,%zu,%lf,%lf,%llu", &step, &n, &d, &a, &z, &count) != 6)
            continue;
        if (*n_steps == 0 || steps[(*n_steps - 1) % max] != step) {
            steps[*n_steps % max] = step;
            ++*n_steps;
            *total = d;
        }
        *total += count;
        *sample = n;
        *dead = d;
    }
    fclose(f);
    return *n_steps ? 0 : -1;
}

int ex_hist_plot(const char *csv_path, const char *title)
{
    enum { MAX_CURVES = 12 };
    uint64_t steps[MAX_CURVES];
    size_t n_steps, sample = 0, dead = 0;
    uint64_t d_sae = 0;
    if (scan_hist(csv_path, steps, MAX_CURVES, &n_steps, &sample, &d_sae, &dead) != 0)
        return -1;
    char *png = with_ext(csv_path, ".png"), *script = with_ext(csv_path, ".gp");
    FILE *f = png && script ? fopen(script, "w") : NULL;
    if (!f) {
        free(png);
        free(script);
        return -1;
    }
    const char *csv_base = strrchr(csv_path, '/'), *png_base = strrchr(png, '/');
    csv_base = csv_base ? csv_base + 1 : csv_path;
    png_base = png_base ? png_base + 1 : png;
    size_t shown = n_steps < MAX_CURVES ? n_steps : MAX_CURVES;
    fprintf(f, "# The feature-density histograms of %s (gnuplot this file to redraw).\n"
               "set terminal pngcairo size 800,560 font 'sans,11' linewidth 1.5\n"
               "set output ", csv_base);
    ex_gp_quote(f, png_base);
    fprintf(f, "\nset datafile separator ','\n"
               "set title ");
    ex_gp_quote(f, title);
    fprintf(f, " noenhanced\n"
               "set xlabel 'log_{10} feature density (fraction of the %zu sample tokens it fires on)'\n"
               "set ylabel 'features'\n"
               "set grid ytics\n"
               "set key below Left reverse\n"
               "set style fill solid 0.45 border -1\n"
               "steps = '", sample);
    for (size_t i = 0; i < shown; i++) /* the last `shown`, oldest first */
        fprintf(f, "%s%llu", i ? " " : "",
                (unsigned long long)steps[(n_steps - shown + i) % MAX_CURVES]);
    fprintf(f, "'\n"
               "N = words(steps)\n"
               "pick(i) = strcol('step') eq word(steps, i) ? column('count') : NaN\n"
               "mid = '(0.5 * (column(\"log10_lo\") + column(\"log10_hi\")))'\n"
               "plot for [i=1:N-1] '%s' using @mid:(pick(i)) with histeps linewidth 1 "
               "title sprintf('step %%s', word(steps, i)), \\\n"
               "     '%s' using @mid:(pick(N)):(0.2) with boxes linecolor rgb '#1b9e77' "
               "title sprintf('step %%s: %zu of %llu features dead (not shown)', word(steps, N))\n",
               csv_base, csv_base, dead, (unsigned long long)d_sae);
    int bad = ferror(f);
    int rc = fclose(f) != 0 || bad ? -1 : ex_gnuplot(script);
    free(png);
    free(script);
    return rc;
}

/* ---- copies ------------------------------------------------------------------- */

int ex_model_copy(const sae_model *m, sae_model **out)
{
    const int arch = sae_model_arch(m);
    double param = arch == SAE_ARCH_JUMPRELU ? 1.0 : (double)sae_model_k(m);
    int rc = sae_model_create_arch(out, sae_model_d_in(m), sae_model_d_sae(m), 0, arch, param);
    static const int tensors[] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC, SAE_THRESHOLD};
    for (size_t i = 0; i < sizeof tensors / sizeof *tensors && rc == SAE_OK; i++) {
        size_t n = sae_model_tensor_size(m, tensors[i]);
        if (n == 0)
            continue;
        float *buf = malloc(n * sizeof *buf);
        rc = buf ? sae_model_get_tensor(m, tensors[i], buf, n) : SAE_E_NOMEM;
        if (rc == SAE_OK)
            rc = sae_model_set_tensor(*out, tensors[i], buf, n);
        free(buf);
    }
    if (rc != SAE_OK && *out) {
        sae_model_free(*out);
        *out = NULL;
    }
    return rc;
}
