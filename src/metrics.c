/*
 * Training metrics beyond the losses: the log10 feature-density histogram
 * (the plot SAELens and Anthropic use to spot dead and dense features).
 */
#include "internal.h"

#include <math.h>
#include <string.h>

int sae_feature_density_histogram(const sae_model *m, const float *x, size_t n_tokens,
                                  double log10_min, double log10_max, size_t n_bins,
                                  uint64_t *counts, size_t *n_dead)
{
    size_t elems, bytes;
    if (!m || !x || !counts || !n_dead || n_tokens == 0 || n_bins == 0)
        return SAE_E_INVALID_ARG;
    if (!sae__mul(n_tokens, m->d_in, &elems) || !sae__mul(elems, sizeof(float), &bytes))
        return SAE_E_INVALID_ARG;
    if (!isfinite(log10_min) || !isfinite(log10_max))
        return SAE_E_NONFINITE;
    if (!(log10_min < log10_max) || n_bins > SIZE_MAX / sizeof(uint64_t))
        return SAE_E_INVALID_ARG;
    if (!sae__all_finite(x, elems))
        return SAE_E_NONFINITE;
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    /* block <= SAE_BLOCK_TOKENS and d_in * d_sae was checked at model creation */
    const size_t block = n_tokens < SAE_BLOCK_TOKENS ? n_tokens : SAE_BLOCK_TOKENS;
    sae_forward fw;
    if (sae__forward_init(&fw, m, block) != SAE_OK)
        return SAE_E_NOMEM;
    uint64_t *fired = sae__alloc_zero(d_sae * sizeof(uint64_t));
    float *f = sae__alloc(block * d_sae * sizeof(float));
    if (!fired || !f) {
        sae__free(f);
        sae__free(fired);
        sae__forward_free(&fw);
        return SAE_E_NOMEM;
    }
    for (size_t t0 = 0; t0 < n_tokens; t0 += block) {
        size_t rows = n_tokens - t0 < block ? n_tokens - t0 : block;
        sae__forward_encode(&fw, x + t0 * d_in, rows, f, NULL);
        for (size_t t = 0; t < rows; t++)
            for (size_t i = 0; i < d_sae; i++)
                fired[i] += f[t * d_sae + i] > 0.0f;
    }
    memset(counts, 0, n_bins * sizeof(uint64_t));
    size_t dead = 0;
    for (size_t i = 0; i < d_sae; i++) {
        if (fired[i] == 0) {
            dead++;
            continue;
        }
        double v = log10((double)fired[i] / (double)n_tokens);
        double pos = floor((v - log10_min) * (double)n_bins / (log10_max - log10_min));
        /* clamped into the first and last bins (NaN only from inf / inf: bin 0) */
        size_t bin = !(pos >= 0.0) ? 0 : pos >= (double)n_bins ? n_bins - 1 : (size_t)pos;
        counts[bin]++;
    }
    *n_dead = dead;
    sae__free(f);
    sae__free(fired);
    sae__forward_free(&fw);
    return SAE_OK;
}
