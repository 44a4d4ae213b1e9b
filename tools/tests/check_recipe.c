/*
 * Checks a sae-train checkpoint of a run on a raw float32 file against
 * computations made here, independently of the program's code path (used by
 * recipe.sh). The run must have used --sample at least the file's rows, so
 * that the recipe's sample is the whole file.
 *
 *   check_recipe DIR DATA.f32 D_IN [--b-dec mean|median] [--hist FILE]
 *
 * - the scale in train_state.txt (--normalize) makes the mean of ||s x||^2
 *   over the data d_in;
 * - the exported model (DIR, scale folded in) on raw x gives the features of
 *   the model as trained (DIR/train_weights.safetensors) on s x, and its
 *   reconstruction divided by s; their FVUs agree; the exported model's FVU
 *   on x is printed ("fvu 0.1234") for the caller to compare with the
 *   program's report;
 * - --b-dec: the trained model's b_dec is the mean of s x (summed here in
 *   double) or sae_model_init_b_dec's geometric median of s x, within what
 *   one step at a tiny learning rate moves it;
 * - --hist: the last histogram in FILE has the counts of features firing on
 *   each share of the data, counted here from sae_encode, and the dead count.
 * Exit status 0 when every check passes, 1 otherwise (each failure printed).
 */
#include "common/checkpoint.h"
#include "common/hist.h"
#include "common/data.h"

#include "check.h"

#include <libsae/sae.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static sae_model *load(const char *path)
{
    sae_model *m;
    int rc = sae_model_load(&m, path);
    if (rc != SAE_OK) {
        fprintf(stderr, "%s: %s\n", path, sae_status_string(rc));
        exit(1);
    }
    return m;
}

static double max_abs(const float *v, size_t n)
{
    double mx = 0.0;
    for (size_t i = 0; i < n; i++)
        mx = fmax(mx, fabs(v[i]));
    return mx;
}

/* The last histogram of the CSV: its rows' counts (bins of 0.2 decades from
 * lo), dead count and bin count. */
static int last_hist(const char *path, double *lo, unsigned long long *counts, size_t max,
                     size_t *bins, size_t *dead)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    unsigned long long last_step = ~0ULL;
    *bins = 0;
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return -1;
    }
    tool_hist_row r;
    int got;
    while ((got = tool_hist_read_row(f, &r)) != 0) {
        if (got < 0) {
            fclose(f);
            return -1;
        }
        if (r.step != last_step) {
            last_step = r.step;
            *bins = 0;
            *lo = r.log10_lo;
        }
        if (*bins < max)
            counts[*bins] = r.count;
        ++*bins;
        *dead = r.dead;
    }
    fclose(f);
    return 0;
}

/* What the checks share: the data, x and s x, and the two models. */
typedef struct checked {
    size_t n, d_in, d_sae;
    double s;              /* the input scale (1 without --normalize) */
    const float *x;        /* the data, n x d_in */
    float *sx;             /* s x as the batches are made: each float times s in double, rounded once */
    sae_model *exported;   /* DIR: the scale folded in, on raw x */
    sae_model *trained;    /* the model as trained, on s x */
    float *f;              /* the trained model's features on s x, n x d_sae */
} checked;

/* The scale: mean ||s x||^2 = d_in. */
static void check_scale(const checked *c)
{
    double sum2 = 0.0;
    for (size_t k = 0; k < c->n * c->d_in; k++)
        sum2 += (double)c->x[k] * c->x[k];
    double ratio = c->s * c->s * sum2 / (double)c->n / (double)c->d_in;
    CHECK(fabs(ratio - 1.0) < 1e-9, "mean ||s x||^2 / d_in = %.12g", ratio);
}

/* Features and reconstructions: the exported model on x against the trained
 * one on s x; their FVUs. Prints the scale and the exported model's FVU. */
static void check_folded(const checked *c)
{
    const size_t n = c->n, d_in = c->d_in, d_sae = c->d_sae;
    float *f1 = malloc(n * d_sae * sizeof *f1), *r1 = malloc(n * d_in * sizeof *r1),
          *r2 = malloc(n * d_in * sizeof *r2);
    CHECK(sae_encode(c->exported, c->x, n, f1) == SAE_OK, "encode");
    double fbig = max_abs(c->f, n * d_sae), fdiff = 0.0;
    for (size_t k = 0; k < n * d_sae; k++)
        fdiff = fmax(fdiff, fabs((double)f1[k] - c->f[k]));
    CHECK(fdiff <= 1e-4 * fbig, "features differ by %g (largest %g)", fdiff, fbig);
    CHECK(sae_decode(c->exported, f1, n, r1) == SAE_OK, "decode");
    CHECK(sae_decode(c->trained, c->f, n, r2) == SAE_OK, "decode");
    double rmax = max_abs(c->x, n * d_in), rdiff = 0.0;
    for (size_t k = 0; k < n * d_in; k++)
        rdiff = fmax(rdiff, fabs((double)r1[k] - (double)r2[k] / c->s));
    CHECK(rdiff <= 1e-4 * rmax, "reconstructions differ by %g (data up to %g)", rdiff, rmax);
    double fvu_raw, fvu_scaled;
    CHECK(sae_fvu(c->exported, c->x, n, &fvu_raw) == SAE_OK, "fvu");
    CHECK(sae_fvu(c->trained, c->sx, n, &fvu_scaled) == SAE_OK, "fvu");
    CHECK(fabs(fvu_raw - fvu_scaled) <= 1e-4 * fmax(1.0, fvu_scaled), "fvu %.8f on x, %.8f on s x",
          fvu_raw, fvu_scaled);
    printf("scale %.9g\nfvu %.4f\n", c->s, fvu_raw);
    free(f1);
    free(r1);
    free(r2);
}

/* b_dec from the data: the mean of s x (summed here in double) or
 * sae_model_init_b_dec's geometric median of s x. */
static void check_b_dec(const checked *c, const char *method)
{
    const size_t n = c->n, d_in = c->d_in;
    double *want = calloc(d_in, sizeof *want);
    float *got = malloc(d_in * sizeof *got);
    if (strcmp(method, "mean") == 0) {
        for (size_t t = 0; t < n; t++)
            for (size_t j = 0; j < d_in; j++)
                want[j] += c->sx[t * d_in + j];
        for (size_t j = 0; j < d_in; j++)
            want[j] /= (double)n;
    } else {
        sae_model *fresh;
        CHECK(sae_model_create(&fresh, d_in, 4, 1) == SAE_OK, "create");
        CHECK(sae_model_init_b_dec(fresh, c->sx, n, SAE_B_DEC_GEOMETRIC_MEDIAN) == SAE_OK, "median");
        CHECK(sae_model_get_tensor(fresh, SAE_B_DEC, got, d_in) == SAE_OK, "get");
        for (size_t j = 0; j < d_in; j++)
            want[j] = got[j];
        sae_model_free(fresh);
    }
    CHECK(sae_model_get_tensor(c->trained, SAE_B_DEC, got, d_in) == SAE_OK, "get");
    double diff = 0.0;
    for (size_t j = 0; j < d_in; j++)
        diff = fmax(diff, fabs(got[j] - want[j]));
    CHECK(diff < 1e-5, "b_dec is %g from the %s of s x", diff, method);
    printf("b_dec %s: off by %.3g\n", method, diff);
    free(got);
    free(want);
}

/* The last density histogram in hist_path against the features counted here. */
static void check_hist(const checked *c, const char *hist_path)
{
    unsigned long long counts[64], want[64] = {0};
    size_t bins = 0, dead = 0, want_dead = 0;
    double lo = -1.0;
    CHECK(last_hist(hist_path, &lo, counts, 64, &bins, &dead) == 0 && bins <= 64, "%s: unreadable",
          hist_path);
    for (size_t i = 0; i < c->d_sae; i++) {
        size_t fired = 0;
        for (size_t t = 0; t < c->n; t++)
            fired += c->f[t * c->d_sae + i] > 0.0f;
        if (fired == 0) {
            want_dead++;
            continue;
        }
        /* the header's formula, with log10_max 0; density 1 lands in the last */
        double b = floor((log10((double)fired / (double)c->n) - lo) * (double)bins / (0.0 - lo));
        size_t k = b < 0 ? 0 : (size_t)b >= bins ? bins - 1 : (size_t)b;
        want[k]++;
    }
    CHECK(dead == want_dead, "dead %zu, counted %zu", dead, want_dead);
    for (size_t k = 0; k < bins; k++)
        CHECK(counts[k] == want[k], "bin %zu: %llu, counted %llu", k, counts[k], want[k]);
    printf("histogram: %zu bins, %zu dead, as counted\n", bins, dead);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: check_recipe DIR DATA.f32 D_IN [--b-dec mean|median] [--hist FILE]\n");
        return 2;
    }
    const char *dir = argv[1], *b_dec_method = NULL, *hist_path = NULL;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--b-dec") == 0)
            b_dec_method = argv[i + 1];
        else if (strcmp(argv[i], "--hist") == 0)
            hist_path = argv[i + 1];
    }
    char path[4096], err[256];
    tool_run_state st;
    tool_data data;
    snprintf(path, sizeof path, "%s/train_state.txt", dir);
    if (tool_run_state_read(path, &st, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", path, err);
        return 1;
    }
    if (tool_data_open(&data, argv[2], (size_t)strtoul(argv[3], NULL, 10), err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", argv[2], err);
        return 1;
    }
    checked c = {.n = data.rows, .d_in = data.cols, .s = st.normalize ? st.scale : 1.0, .x = data.x};
    CHECK(st.sample >= c.n, "the run's sample (%zu) is not the whole data (%zu rows)", st.sample, c.n);
    c.exported = load(dir);
    snprintf(path, sizeof path, "%s/train_weights.safetensors", dir);
    c.trained = st.normalize ? load(path) : c.exported;
    c.d_sae = sae_model_d_sae(c.trained);
    c.sx = malloc(c.n * c.d_in * sizeof *c.sx);
    c.f = malloc(c.n * c.d_sae * sizeof *c.f);
    for (size_t k = 0; k < c.n * c.d_in; k++)
        c.sx[k] = (float)((double)data.x[k] * c.s);
    CHECK(sae_encode(c.trained, c.sx, c.n, c.f) == SAE_OK, "encode");
    if (st.normalize)
        check_scale(&c);
    check_folded(&c);
    if (b_dec_method)
        check_b_dec(&c, b_dec_method);
    if (hist_path)
        check_hist(&c, hist_path);
    free(c.sx);
    free(c.f);
    if (c.trained != c.exported)
        sae_model_free(c.trained);
    sae_model_free(c.exported);
    tool_data_close(&data);
    return check_finish();
}
