#include "hist.h"

#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BINS_PER_DECADE 5

int tool_hist_header(FILE *f)
{
    return fprintf(f, "%s\n", TOOL_HIST_COLUMNS) < 0 ? -1 : 0;
}

int tool_hist_write(FILE *f, const sae_model *m, const tool_sample *s, uint64_t step, size_t *n_dead)
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

FILE *tool_hist_open(const char *path, bool append, char *err, size_t errlen)
{
    static const char header[] = TOOL_HIST_COLUMNS "\n";
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
                         TOOL_HIST_COLUMNS);
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
    if (empty && tool_hist_header(f) != 0) {
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

char *tool_hist_png_path(const char *csv_path)
{
    return with_ext(csv_path, ".png");
}

int tool_hist_read_row(FILE *f, tool_hist_row *r)
{
    char line[256];
    if (!fgets(line, sizeof line, f))
        return 0;
    unsigned long long step, count;
    int n = sscanf(line, "%llu,%zu,%zu,%lf,%lf,%llu", &step, &r->sample, &r->dead, &r->log10_lo,
                   &r->log10_hi, &count);
    r->step = step;
    r->count = count;
    return n == 6 ? 1 : -1;
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
    if (!fgets(line, sizeof line, f) || strncmp(line, TOOL_HIST_COLUMNS, strlen(TOOL_HIST_COLUMNS))) {
        fclose(f);
        return -1;
    }
    tool_hist_row r;
    int got;
    while ((got = tool_hist_read_row(f, &r)) != 0) {
        if (got < 0)
            continue;
        if (*n_steps == 0 || steps[(*n_steps - 1) % max] != r.step) {
            steps[*n_steps % max] = r.step;
            ++*n_steps;
            *total = r.dead;
        }
        *total += r.count;
        *sample = r.sample;
        *dead = r.dead;
    }
    fclose(f);
    return *n_steps ? 0 : -1;
}

int tool_hist_plot(const char *csv_path, const char *title)
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
    tool_gp_quote(f, png_base);
    fprintf(f, "\nset datafile separator ','\n"
               "set title ");
    tool_gp_quote(f, title);
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
    int rc = fclose(f) != 0 || bad ? -1 : tool_gnuplot(script);
    free(png);
    free(script);
    return rc;
}

