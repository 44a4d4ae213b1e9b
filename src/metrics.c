/*
 * Training metrics beyond the losses: the total variance of a batch (the
 * FVU's denominator), per-feature firing counts over a stream of batches,
 * and the log10 feature-density histogram of a batch (the plot SAELens and
 * Anthropic use to spot dead and dense features).
 */
#include "internal.h"

#include <math.h>
#include <string.h>

double sae__sum_squared_deviations(const float *x, size_t n, size_t d, double *mean)
{
    sae__mean_rows(x, n, d, mean);
    double total = 0.0;
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++) {
            double e = x[t * d + j] - mean[j];
            total += e * e;
        }
    return total;
}

int sae_total_variance(const float *x, size_t n_tokens, size_t d, double *mean, double *out)
{
    static const char fn[] = "sae_total_variance";
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    int rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", d, "d", sizeof(float));
    if (rc == SAE_OK && mean)
        rc = sae__check_rows(fn, "mean", mean, d, "d", 1, "1", sizeof(double));
    if (rc == SAE_OK)
        rc = sae__check_finite(fn, "x", x, n_tokens * d);
    if (rc != SAE_OK)
        return rc;
    double *m = mean ? mean : sae__alloc(d * sizeof(double));
    if (!m)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for the mean (%zu doubles)", fn, d);
    /* finite floats: each square is below 2^258, the sum far below DBL_MAX */
    *out = sae__sum_squared_deviations(x, n_tokens, d, m) / (double)n_tokens;
    if (!mean)
        sae__free(m);
    return SAE_OK;
}

/* fired[i] = the tokens of x on which feature i fires (f_ti > 0, inference
 * activation). fired: d_sae counters, overwritten. The arguments are checked.
 * SAE_E_NONFINITE if a feature is not finite. */
static int count_firing(const char *fn, const sae_model *m, const float *x, size_t n_tokens,
                        uint64_t *fired)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    sae_forward fw;
    int rc = sae__forward_init(&fw, m, sae__block_size(n_tokens), SAE_FORWARD_F);
    if (rc != SAE_OK)
        return sae__fail_context(rc, "%s", fn);
    memset(fired, 0, d_sae * sizeof(uint64_t));
    for (size_t t0 = 0; t0 < n_tokens; t0 += fw.block) {
        size_t rows = sae__block_rows(n_tokens, t0, fw.block);
        sae__forward_encode(&fw, x + t0 * d_in, rows, fw.f, NULL);
        if ((rc = sae__check_features(fn, fw.f, rows, d_sae, t0)) != SAE_OK)
            goto cleanup;
        for (size_t t = 0; t < rows; t++)
            for (size_t i = 0; i < d_sae; i++)
                fired[i] += fw.f[t * d_sae + i] > 0.0f;
    }
cleanup:
    sae__forward_free(&fw);
    return rc;
}

int sae_feature_fire_counts(const sae_model *m, const float *x, size_t n_tokens,
                            uint64_t *counts, size_t count)
{
    static const char fn[] = "sae_feature_fire_counts";
    if (!m || !counts)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : "counts");
    if (count != m->d_sae)
        return sae__fail(SAE_E_INVALID_ARG, "%s: count is %zu, not d_sae = %zu", fn, count,
                         m->d_sae);
    int rc = sae__check_whole(fn, m);
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc == SAE_OK)
        rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in);
    if (rc != SAE_OK)
        return rc;
    uint64_t *fired = sae__alloc(m->d_sae * sizeof(uint64_t));
    if (!fired)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for %zu counters", fn, m->d_sae);
    rc = count_firing(fn, m, x, n_tokens, fired);
    for (size_t i = 0; rc == SAE_OK && i < m->d_sae; i++)
        if (fired[i] > UINT64_MAX - counts[i])
            rc = sae__fail(SAE_E_INVALID_ARG, "%s: counts[%zu] would pass 2^64 - 1", fn, i);
    for (size_t i = 0; rc == SAE_OK && i < m->d_sae; i++)
        counts[i] += fired[i];
    sae__free(fired);
    return rc;
}

int sae_feature_density_histogram(const sae_model *m, const float *x, size_t n_tokens,
                                  double log10_min, double log10_max, size_t n_bins,
                                  uint64_t *counts, size_t *n_dead)
{
    static const char fn[] = "sae_feature_density_histogram";
    if (!m || !counts || !n_dead)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn,
                         !m ? "m" : !counts ? "counts" : "n_dead");
    int rc = sae__check_whole(fn, m);
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, "counts", counts, n_bins, "n_bins", 1, "1", sizeof(uint64_t));
    if (rc != SAE_OK)
        return rc;
    if (!isfinite(log10_min) || !isfinite(log10_max))
        return sae__fail(SAE_E_NONFINITE, "%s: log10_min = %g, log10_max = %g: not finite", fn,
                         log10_min, log10_max);
    if (!(log10_min < log10_max))
        return sae__fail(SAE_E_INVALID_ARG, "%s: log10_min = %g is not below log10_max = %g", fn,
                         log10_min, log10_max);
    if ((rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in)) != SAE_OK)
        return rc;
    const size_t d_sae = m->d_sae;
    uint64_t *fired = sae__alloc(d_sae * sizeof(uint64_t));
    if (!fired)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for %zu counters", fn, d_sae);
    rc = count_firing(fn, m, x, n_tokens, fired);
    if (rc == SAE_OK) {
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
    }
    sae__free(fired);
    return rc;
}
