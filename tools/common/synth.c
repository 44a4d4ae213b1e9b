#include "synth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The directions from stream `stream` of seed. */
static int init_directions(tool_synth *s, size_t d_in, size_t n_feat, double active, uint64_t seed,
                           uint64_t stream)
{
    memset(s, 0, sizeof *s);
    if (d_in == 0 || n_feat == 0 || n_feat > SIZE_MAX / sizeof(float) / d_in)
        return -1;
    s->dirs = malloc(n_feat * d_in * sizeof(float));
    if (!s->dirs)
        return -1;
    s->d_in = d_in;
    s->n_feat = n_feat;
    s->active = active;
    sae_rng rng;
    sae_rng_seed(&rng, seed, stream);
    for (size_t i = 0; i < n_feat; i++) {
        float *row = s->dirs + i * d_in;
        double norm2 = 0.0;
        while (norm2 == 0.0) {
            for (size_t j = 0; j < d_in; j++) {
                row[j] = (float)sae_rng_normal(&rng);
                norm2 += (double)row[j] * row[j];
            }
        }
        float inv = (float)(1.0 / sqrt(norm2));
        for (size_t j = 0; j < d_in; j++)
            row[j] *= inv;
    }
    return 0;
}

int tool_synth_init(tool_synth *s, size_t d_in, size_t n_feat, double active, uint64_t seed)
{
    return init_directions(s, d_in, n_feat, active, seed, TOOL_STREAM_DIRECTIONS);
}

/* Tokens of s into x and, with pairs, their targets into y. */
static void draw_tokens(const tool_synth *s, const tool_synth_pairs *pairs, float *x, float *y,
                        size_t n, sae_rng *rng)
{
    const double p = s->active / (double)s->n_feat;
    const size_t d_in = s->d_in, d_out = pairs ? pairs->out.d_in : 0;
    memset(x, 0, n * d_in * sizeof(float));
    if (y)
        memset(y, 0, n * d_out * sizeof(float));
    for (size_t t = 0; t < n; t++) {
        float *xt = x + t * d_in, *yt = y ? y + t * d_out : NULL;
        for (size_t i = 0; i < s->n_feat; i++) {
            if (sae_rng_uniform(rng) >= p)
                continue;
            float c = (float)(1.0 - sae_rng_uniform(rng)); /* in (0, 1] */
            const float *dir = s->dirs + i * d_in;
            for (size_t j = 0; j < d_in; j++)
                xt[j] += c * dir[j];
            for (size_t o = 0; yt && o < d_out; o++)
                yt[o] += c * pairs->out.dirs[i * d_out + o];
        }
        if (!pairs || !pairs->skip)
            continue;
        const double noise = 1.0 / sqrt((double)d_in);
        for (size_t j = 0; j < d_in; j++)
            xt[j] += (float)(noise * sae_rng_normal(rng));
        for (size_t o = 0; o < d_out; o++) {
            double sum = 0.0;
            for (size_t j = 0; j < d_in; j++)
                sum += (double)pairs->skip[o * d_in + j] * xt[j];
            yt[o] = (float)(yt[o] + sum);
        }
    }
}

void tool_synth_tokens(const tool_synth *s, float *x, size_t n, sae_rng *rng)
{
    draw_tokens(s, NULL, x, NULL, n, rng);
}

int tool_synth_pairs_init(tool_synth_pairs *p, const tool_synth *in, size_t d_out, bool skip,
                          uint64_t seed)
{
    memset(p, 0, sizeof *p);
    if (init_directions(&p->out, d_out, in->n_feat, in->active, seed,
                        TOOL_STREAM_TARGET_DIRECTIONS) != 0)
        return -1;
    if (!skip)
        return 0;
    if (d_out > SIZE_MAX / sizeof(float) / in->d_in || !(p->skip = malloc(d_out * in->d_in * sizeof(float)))) {
        tool_synth_pairs_free(p);
        return -1;
    }
    sae_rng rng;
    sae_rng_seed(&rng, seed, TOOL_STREAM_SKIP_MAP);
    const double sd = 1.0 / sqrt((double)in->d_in);
    for (size_t k = 0; k < d_out * in->d_in; k++)
        p->skip[k] = (float)(sd * sae_rng_normal(&rng));
    return 0;
}

int tool_synth_pairs_matrix(const tool_synth *in, const tool_synth_pairs *p, size_t n,
                            uint64_t seed, uint64_t stream, float **x, float **y)
{
    const size_t d_out = p->out.d_in;
    *x = NULL;
    *y = NULL;
    if (n == 0 || n > SIZE_MAX / sizeof(float) / in->d_in || n > SIZE_MAX / sizeof(float) / d_out)
        return -1;
    *x = malloc(n * in->d_in * sizeof(float));
    *y = malloc(n * d_out * sizeof(float));
    if (!*x || !*y) {
        free(*x);
        free(*y);
        *x = *y = NULL;
        return -1;
    }
    sae_rng rng;
    sae_rng_seed(&rng, seed, stream);
    draw_tokens(in, p, *x, *y, n, &rng);
    return 0;
}

void tool_synth_pairs_free(tool_synth_pairs *p)
{
    tool_synth_free(&p->out);
    free(p->skip);
    memset(p, 0, sizeof *p);
}

float *tool_synth_matrix(const tool_synth *s, size_t n, uint64_t seed, uint64_t stream)
{
    if (n == 0 || n > SIZE_MAX / sizeof(float) / s->d_in)
        return NULL;
    float *x = malloc(n * s->d_in * sizeof(float));
    if (x) {
        sae_rng rng;
        sae_rng_seed(&rng, seed, stream);
        tool_synth_tokens(s, x, n, &rng);
    }
    return x;
}

void tool_synth_free(tool_synth *s)
{
    free(s->dirs);
    memset(s, 0, sizeof *s);
}

int tool_mmcs(const float *truth, size_t n_true, const float *dec, size_t n_dec, size_t d,
              double threshold, double *mmcs, double *recovered)
{
    float *best = malloc(n_true * sizeof *best);
    if (!best)
        return SAE_E_NOMEM;
    int rc = sae_max_cosine(truth, n_true, dec, n_dec, d, best, NULL);
    if (rc == SAE_OK) {
        double sum = 0.0;
        size_t hits = 0;
        for (size_t i = 0; i < n_true; i++) {
            sum += best[i];
            hits += best[i] > threshold;
        }
        *mmcs = sum / (double)n_true;
        *recovered = (double)hits / (double)n_true;
    }
    free(best);
    return rc;
}
