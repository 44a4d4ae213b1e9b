#include "synth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int tool_synth_init(tool_synth *s, size_t d_in, size_t n_feat, double active, uint64_t seed)
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
    sae_rng_seed(&rng, seed, TOOL_STREAM_DIRECTIONS);
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

void tool_synth_tokens(const tool_synth *s, float *x, size_t n, sae_rng *rng)
{
    const double p = s->active / (double)s->n_feat;
    memset(x, 0, n * s->d_in * sizeof(float));
    for (size_t t = 0; t < n; t++) {
        float *xt = x + t * s->d_in;
        for (size_t i = 0; i < s->n_feat; i++) {
            if (sae_rng_uniform(rng) >= p)
                continue;
            float c = (float)(1.0 - sae_rng_uniform(rng)); /* in (0, 1] */
            const float *dir = s->dirs + i * s->d_in;
            for (size_t j = 0; j < s->d_in; j++)
                xt[j] += c * dir[j];
        }
    }
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

static double dot(const float *a, const float *b, size_t d)
{
    double acc = 0.0;
    for (size_t j = 0; j < d; j++)
        acc += (double)a[j] * b[j];
    return acc;
}

void tool_mmcs(const float *truth, size_t n_true, const float *dec, size_t n_dec, size_t d,
               double threshold, double *mmcs, double *recovered)
{
    double sum = 0.0;
    size_t hits = 0;
    for (size_t i = 0; i < n_true; i++) {
        const float *g = truth + i * d;
        double gn = sqrt(dot(g, g, d)), best = 0.0;
        for (size_t k = 0; k < n_dec && gn > 0.0; k++) {
            const float *w = dec + k * d;
            double wn = sqrt(dot(w, w, d));
            if (wn > 0.0) {
                double cosine = dot(g, w, d) / (gn * wn);
                if (cosine > best)
                    best = cosine;
            }
        }
        sum += best;
        hits += best > threshold;
    }
    *mmcs = n_true ? sum / (double)n_true : 0.0;
    *recovered = n_true ? (double)hits / (double)n_true : 0.0;
}
