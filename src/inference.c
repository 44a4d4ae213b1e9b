/*
 * The read-only calls on a model: sae_encode, sae_decode, sae_loss and
 * sae_fvu, for every architecture, over the forward pass of forward.c.
 * Tokens are processed in blocks of at most SAE_BLOCK_TOKENS, so scratch stays
 * O(block x (d_in + d_sae)); all scratch is allocated per call, so these
 * functions may run concurrently on one model.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

int sae_encode(const sae_model *m, const float *x, size_t n_tokens, float *f)
{
    static const char fn[] = "sae_encode";
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: m is NULL", fn);
    int rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, "f", f, n_tokens, "n_tokens", m->d_sae, "d_sae", sizeof(float));
    if (rc == SAE_OK)
        rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in);
    if (rc != SAE_OK)
        return rc;
    sae_forward fw;
    if (sae__forward_init(&fw, m, sae__block_size(n_tokens), 0) != SAE_OK)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for the forward pass", fn);
    for (size_t t0 = 0; t0 < n_tokens; t0 += fw.block) {
        size_t rows = sae__block_rows(n_tokens, t0, fw.block);
        sae__forward_encode(&fw, x + t0 * m->d_in, rows, f + t0 * m->d_sae, NULL);
    }
    sae__forward_free(&fw);
    return SAE_OK;
}

int sae_decode(const sae_model *m, const float *f, size_t n_tokens, float *x_hat)
{
    static const char fn[] = "sae_decode";
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: m is NULL", fn);
    int rc = sae__check_rows(fn, "f", f, n_tokens, "n_tokens", m->d_sae, "d_sae", sizeof(float));
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, "x_hat", x_hat, n_tokens, "n_tokens", m->d_in, "d_in",
                             sizeof(float));
    if (rc == SAE_OK)
        rc = sae__check_finite(fn, "f", f, n_tokens * m->d_sae);
    if (rc != SAE_OK)
        return rc;
    for (size_t t0 = 0; t0 < n_tokens; t0 += SAE_BLOCK_TOKENS) {
        size_t rows = sae__block_rows(n_tokens, t0, SAE_BLOCK_TOKENS);
        sae__forward_decode(m, f + t0 * m->d_sae, rows, x_hat + t0 * m->d_in);
    }
    return SAE_OK;
}

/* The forward pass over the whole batch with per-call scratch, summing the
 * losses. Shared by sae_loss and sae_fvu. */
static int forward_sums(const char *fn, const sae_model *m, const float *x, size_t n_tokens,
                        sae_loss_sums *sums)
{
    const size_t d_in = m->d_in;
    sae_forward fw;
    if (sae__forward_init(&fw, m, sae__block_size(n_tokens),
                          SAE_FORWARD_F | SAE_FORWARD_X_HAT) != SAE_OK)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for the forward pass", fn);
    memset(sums, 0, sizeof *sums);
    for (size_t t0 = 0; t0 < n_tokens; t0 += fw.block) {
        size_t rows = sae__block_rows(n_tokens, t0, fw.block);
        const float *xb = x + t0 * d_in;
        sae__forward_encode(&fw, xb, rows, fw.f, sums);
        sae__forward_decode(m, fw.f, rows, fw.x_hat);
        for (size_t k = 0; k < rows * d_in; k++) {
            double e = (double)fw.x_hat[k] - xb[k];
            sums->l2 += e * e;
        }
    }
    sae__forward_free(&fw);
    return SAE_OK;
}

int sae_loss(const sae_model *m, const float *x, size_t n_tokens, double lambda, sae_losses *out)
{
    static const char fn[] = "sae_loss";
    if (!m || !out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : "out");
    int rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc != SAE_OK)
        return rc;
    if (!isfinite(lambda))
        return sae__fail(SAE_E_NONFINITE, "%s: lambda is %g", fn, lambda);
    if (lambda < 0.0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: lambda = %g is negative", fn, lambda);
    if ((rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in)) != SAE_OK)
        return rc;
    sae_loss_sums sums;
    rc = forward_sums(fn, m, x, n_tokens, &sums);
    if (rc == SAE_OK)
        sae__losses_from_sums(&sums, n_tokens, m->arch, lambda, 0.0, out);
    return rc;
}

int sae_fvu(const sae_model *m, const float *x, size_t n_tokens, double *out)
{
    static const char fn[] = "sae_fvu";
    if (!m || !out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : "out");
    int rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc != SAE_OK)
        return rc;
    if (n_tokens < 2)
        return sae__fail(SAE_E_INVALID_ARG, "%s: n_tokens is 1: the variance needs 2", fn);
    if ((rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in)) != SAE_OK)
        return rc;
    /* Total variance around the batch mean, two-pass in double. */
    const size_t d_in = m->d_in;
    double *mean = sae__alloc(d_in * sizeof(double));
    if (!mean)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for the mean", fn);
    sae__mean_rows(x, n_tokens, d_in, mean);
    double total = 0.0;
    for (size_t t = 0; t < n_tokens; t++)
        for (size_t j = 0; j < d_in; j++) {
            double d = x[t * d_in + j] - mean[j];
            total += d * d;
        }
    sae__free(mean);
    if (!(total > 0.0))
        return sae__fail(SAE_E_INVALID_ARG, "%s: x has no variance", fn);
    sae_loss_sums sums;
    rc = forward_sums(fn, m, x, n_tokens, &sums);
    if (rc == SAE_OK)
        *out = sums.l2 / total;
    return rc;
}
