/*
 * The SAE families beyond one activation on an autoencoder: creating
 * Matryoshka SAEs (their level widths) and transcoders (their output width and
 * skip map), the queries that describe them, and drawing a model's
 * initialisation again with SAELens's decoder_init_norm.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

int sae_model_create_matryoshka(sae_model **out, size_t d_in, size_t d_sae, uint64_t seed,
                                size_t k, const size_t *widths, size_t n_widths)
{
    return sae__matryoshka_create(out, "sae_model_create_matryoshka", d_in, d_sae, 0, d_sae, seed,
                                  k, widths, n_widths);
}

int sae__matryoshka_create(sae_model **out, const char *fn, size_t d_in, size_t d_sae,
                           size_t begin, size_t end, uint64_t seed, size_t k,
                           const size_t *widths, size_t n_widths)
{
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!widths && n_widths > 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: widths is NULL with n_widths %zu", fn, n_widths);
    if (k == 0 || k > d_sae)
        return sae__fail(SAE_E_INVALID_ARG, "%s: k = %zu is outside [1, d_sae = %zu]", fn, k,
                         d_sae);
    size_t levels[SAE_MAX_LEVELS], n_levels = 0;
    for (size_t m = 0; m < n_widths; m++) {
        if (widths[m] == 0 || widths[m] > d_sae)
            return sae__fail(SAE_E_INVALID_ARG, "%s: widths[%zu] = %zu is outside [1, d_sae = %zu]",
                             fn, m, widths[m], d_sae);
        if (m > 0 && widths[m] <= widths[m - 1])
            return sae__fail(SAE_E_INVALID_ARG,
                             "%s: widths[%zu] = %zu does not exceed widths[%zu] = %zu", fn, m,
                             widths[m], m - 1, widths[m - 1]);
        if (n_levels == SAE_MAX_LEVELS)
            return sae__fail(SAE_E_INVALID_ARG, "%s: more than %d levels", fn, SAE_MAX_LEVELS);
        levels[n_levels++] = widths[m];
    }
    if (n_levels == 0 || levels[n_levels - 1] != d_sae) { /* the full width is a level */
        if (n_levels == SAE_MAX_LEVELS)
            return sae__fail(SAE_E_INVALID_ARG, "%s: more than %d levels with d_sae appended",
                             fn, SAE_MAX_LEVELS);
        levels[n_levels++] = d_sae;
    }
    sae_shape shape = {d_in, d_in, d_sae, SAE_ARCH_MATRYOSHKA, SAE_KIND_AUTOENCODER};
    int rc = sae__model_new(out, fn, &shape, begin, end, seed, 0.0, SAE_DECODER_INIT_NORM);
    if (rc != SAE_OK)
        return rc;
    (*out)->k = k;
    (*out)->n_levels = n_levels;
    memcpy((*out)->widths, levels, n_levels * sizeof(size_t));
    return SAE_OK;
}

size_t sae_model_matryoshka_levels(const sae_model *m) { return m ? m->n_levels : 0; }

int sae_model_matryoshka_widths(const sae_model *m, size_t *widths, size_t count)
{
    static const char fn[] = "sae_model_matryoshka_widths";
    if (!m || !widths)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, m ? "widths" : "m");
    if (m->n_levels == 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: the model is not a Matryoshka SAE", fn);
    if (count != m->n_levels)
        return sae__fail(SAE_E_INVALID_ARG, "%s: count is %zu, the model has %zu levels", fn,
                         count, m->n_levels);
    memcpy(widths, m->widths, count * sizeof(size_t));
    return SAE_OK;
}

int sae_model_create_transcoder(sae_model **out, size_t d_in, size_t d_out, size_t d_sae,
                                uint64_t seed, int kind, int arch, double param)
{
    return sae__transcoder_create(out, "sae_model_create_transcoder", d_in, d_out, d_sae, 0,
                                  d_sae, seed, kind, arch, param);
}

int sae__transcoder_create(sae_model **out, const char *fn, size_t d_in, size_t d_out,
                           size_t d_sae, size_t begin, size_t end, uint64_t seed, int kind,
                           int arch, double param)
{
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (kind != SAE_KIND_TRANSCODER && kind != SAE_KIND_SKIP_TRANSCODER)
        return sae__fail(SAE_E_INVALID_ARG,
                         "%s: kind %d is not SAE_KIND_TRANSCODER or SAE_KIND_SKIP_TRANSCODER", fn,
                         kind);
    if (arch == SAE_ARCH_GATED || arch == SAE_ARCH_MATRYOSHKA)
        return sae__fail(SAE_E_INVALID_ARG,
                         "%s: transcoders take ReLU, TopK, BatchTopK or JumpReLU, not %s", fn,
                         arch == SAE_ARCH_GATED ? "Gated" : "Matryoshka");
    size_t k;
    int rc = sae__check_arch_param(fn, arch, param, d_sae, &k);
    if (rc != SAE_OK)
        return rc;
    sae_shape shape = {d_in, d_out, d_sae, arch, kind};
    rc = sae__model_new(out, fn, &shape, begin, end, seed, param, SAE_DECODER_INIT_NORM);
    if (rc == SAE_OK)
        (*out)->k = k;
    return rc;
}

size_t sae_model_d_out(const sae_model *m) { return m ? m->d_out : 0; }

int sae_model_kind(const sae_model *m) { return m ? m->kind : -1; }

int sae_model_reinit(sae_model *m, uint64_t seed, double decoder_init_norm)
{
    static const char fn[] = "sae_model_reinit";
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: m is NULL", fn);
    if (!isfinite(decoder_init_norm))
        return sae__fail(SAE_E_NONFINITE, "%s: decoder_init_norm is %g", fn, decoder_init_norm);
    if (!(decoder_init_norm > 0.0 && decoder_init_norm <= 1e30))
        return sae__fail(SAE_E_INVALID_ARG, "%s: decoder_init_norm %g is outside (0, 1e30]", fn,
                         decoder_init_norm);
    sae__model_init_params(m, seed, decoder_init_norm);
    return SAE_OK;
}

int sae__family_check(const char *fn, const sae_model *m, unsigned accepts)
{
    const char *family = NULL;
    if (m->kind != SAE_KIND_AUTOENCODER && !(accepts & SAE_FAMILY_TRANSCODER))
        family = "a transcoder";
    else if (m->arch == SAE_ARCH_GATED && !(accepts & SAE_FAMILY_GATED))
        family = "a Gated SAE";
    else if (m->arch == SAE_ARCH_MATRYOSHKA && !(accepts & SAE_FAMILY_MATRYOSHKA))
        family = "a Matryoshka SAE";
    if (family)
        return sae__fail(SAE_E_INVALID_ARG, "%s: not available for %s in libsae %s", fn, family,
                         sae_version_string());
    return SAE_OK;
}
