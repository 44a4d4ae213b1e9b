/*
 * Encode and decode: the forward pass, and the read-only evaluations built on
 * it (sae_encode, sae_decode, sae_loss, sae_fvu), for every architecture.
 * Tokens are processed in blocks of at most SAE_BLOCK_TOKENS, so scratch stays
 * O(block x (d_in + d_sae)); all scratch is allocated per call, so these
 * functions may run concurrently on one model.
 */
#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

static void fill_rows(float *dst, const float *row, size_t rows, size_t cols)
{
    for (size_t t = 0; t < rows; t++)
        memcpy(dst + t * cols, row, cols * sizeof(float));
}

void sae__forward_free(sae_forward *c)
{
    sae__free(c->norms);
    sae__free(c->theta);
    sae__free(c->scratch);
    sae__free(c->xc);
}

int sae__forward_init(sae_forward *c, const sae_model *m, size_t block)
{
    memset(c, 0, sizeof *c);
    c->m = m;
    c->norms = sae__alloc(m->d_sae * sizeof(float));
    c->scratch = sae__alloc(m->d_sae * sizeof(float));
    c->xc = sae__alloc(block * m->d_in * sizeof(float));
    if (m->arch == SAE_ARCH_JUMPRELU)
        c->theta = sae__alloc(m->d_sae * sizeof(float));
    if (!c->norms || !c->scratch || !c->xc || (m->arch == SAE_ARCH_JUMPRELU && !c->theta)) {
        sae__forward_free(c);
        return SAE_E_NOMEM;
    }
    sae__decoder_row_norms(m, c->norms, NULL);
    for (size_t i = 0; c->theta && i < m->d_sae; i++)
        c->theta[i] = expf(sae__log_thr(m)[i]);
    c->act = (sae_activation){.arch = m->arch, .d_sae = m->d_sae, .k = m->k,
                              .b_enc = sae__b_enc(m), .norms = c->norms, .theta = c->theta,
                              .batch_threshold = m->batch_threshold};
    return SAE_OK;
}

void sae__forward_encode(sae_forward *c, const float *x, size_t rows, float *f,
                         sae_loss_sums *sums)
{
    const sae_model *m = c->m;
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    const float *b_dec = sae__b_dec(m);
    for (size_t t = 0; t < rows; t++)
        for (size_t j = 0; j < d_in; j++)
            c->xc[t * d_in + j] = x[t * d_in + j] - b_dec[j];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d_sae, (int)d_in, 1.0f,
                c->xc, (int)d_in, sae__w_enc_t(m), (int)d_in, 0.0f, f, (int)d_sae);
    for (size_t t = 0; t < rows; t++) {
        double l1;
        size_t active = sae__activate_row(&c->act, f + t * d_sae, &l1, NULL, NULL, NULL,
                                          c->scratch);
        if (sums) {
            sums->l1 += l1;
            sums->active += (double)active;
        }
    }
}

void sae__forward_decode(const sae_model *m, const float *f, size_t rows, float *x_hat)
{
    fill_rows(x_hat, sae__b_dec(m), rows, m->d_in);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)m->d_in, (int)m->d_sae,
                1.0f, f, (int)m->d_sae, sae__w_dec(m), (int)m->d_in, 1.0f, x_hat, (int)m->d_in);
}

void sae__losses_from_sums(const sae_loss_sums *sums, size_t n_tokens, int arch, double lambda,
                           double extra, sae_losses *out)
{
    out->l2 = sums->l2 / (double)n_tokens;
    out->l1 = sums->l1 / (double)n_tokens;
    out->l0 = sums->active / (double)n_tokens;
    switch (arch) {
    case SAE_ARCH_RELU: out->loss = out->l2 + lambda * out->l1; break;
    case SAE_ARCH_JUMPRELU: out->loss = out->l2 + lambda * out->l0; break;
    default: out->loss = out->l2; break;
    }
    out->loss += extra;
}

/* Argument checks shared by the batch functions: *elems = n_tokens * width. */
static int check_batch(const sae_model *m, const void *in, size_t n_tokens, size_t width,
                       const void *out, size_t *elems)
{
    if (!m || !in || !out || n_tokens == 0)
        return SAE_E_INVALID_ARG;
    size_t bytes;
    if (!sae__mul(n_tokens, width, elems) || !sae__mul(*elems, sizeof(float), &bytes))
        return SAE_E_INVALID_ARG;
    return SAE_OK;
}

int sae_encode(const sae_model *m, const float *x, size_t n_tokens, float *f)
{
    size_t elems;
    int rc = check_batch(m, x, n_tokens, m ? m->d_in : 0, f, &elems);
    if (rc == SAE_OK && !sae__mul(n_tokens, m->d_sae, &elems))
        rc = SAE_E_INVALID_ARG;
    if (rc != SAE_OK)
        return rc;
    if (!sae__all_finite(x, n_tokens * m->d_in))
        return SAE_E_NONFINITE;
    size_t block = n_tokens < SAE_BLOCK_TOKENS ? n_tokens : SAE_BLOCK_TOKENS;
    sae_forward c;
    if (sae__forward_init(&c, m, block) != SAE_OK)
        return SAE_E_NOMEM;
    for (size_t t0 = 0; t0 < n_tokens; t0 += block) {
        size_t rows = n_tokens - t0 < block ? n_tokens - t0 : block;
        sae__forward_encode(&c, x + t0 * m->d_in, rows, f + t0 * m->d_sae, NULL);
    }
    sae__forward_free(&c);
    return SAE_OK;
}

int sae_decode(const sae_model *m, const float *f, size_t n_tokens, float *x_hat)
{
    size_t elems;
    int rc = check_batch(m, f, n_tokens, m ? m->d_sae : 0, x_hat, &elems);
    if (rc == SAE_OK && !sae__mul(n_tokens, m->d_in, &elems))
        rc = SAE_E_INVALID_ARG;
    if (rc != SAE_OK)
        return rc;
    if (!sae__all_finite(f, n_tokens * m->d_sae))
        return SAE_E_NONFINITE;
    for (size_t t0 = 0; t0 < n_tokens; t0 += SAE_BLOCK_TOKENS) {
        size_t rows = n_tokens - t0 < SAE_BLOCK_TOKENS ? n_tokens - t0 : SAE_BLOCK_TOKENS;
        sae__forward_decode(m, f + t0 * m->d_sae, rows, x_hat + t0 * m->d_in);
    }
    return SAE_OK;
}

/* Run the forward pass over the whole batch with per-call scratch, summing the
 * losses. Shared by sae_loss and sae_fvu. */
static int forward_sums(const sae_model *m, const float *x, size_t n_tokens, sae_loss_sums *sums)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    size_t block = n_tokens < SAE_BLOCK_TOKENS ? n_tokens : SAE_BLOCK_TOKENS;
    sae_forward c;
    if (sae__forward_init(&c, m, block) != SAE_OK)
        return SAE_E_NOMEM;
    float *err = sae__alloc(block * d_in * sizeof(float));
    float *f = sae__alloc(block * d_sae * sizeof(float));
    int rc = SAE_E_NOMEM;
    if (err && f) {
        memset(sums, 0, sizeof *sums);
        for (size_t t0 = 0; t0 < n_tokens; t0 += block) {
            size_t rows = n_tokens - t0 < block ? n_tokens - t0 : block;
            const float *xb = x + t0 * d_in;
            sae__forward_encode(&c, xb, rows, f, sums);
            sae__forward_decode(m, f, rows, err);
            for (size_t k = 0; k < rows * d_in; k++) {
                double e = (double)err[k] - xb[k];
                sums->l2 += e * e;
            }
        }
        rc = SAE_OK;
    }
    sae__free(f);
    sae__free(err);
    sae__forward_free(&c);
    return rc;
}

int sae_loss(const sae_model *m, const float *x, size_t n_tokens, double lambda, sae_losses *out)
{
    size_t elems;
    int rc = check_batch(m, x, n_tokens, m ? m->d_in : 0, out, &elems);
    if (rc != SAE_OK)
        return rc;
    if (!isfinite(lambda))
        return SAE_E_NONFINITE;
    if (lambda < 0.0)
        return SAE_E_INVALID_ARG;
    if (!sae__all_finite(x, elems))
        return SAE_E_NONFINITE;
    sae_loss_sums sums;
    rc = forward_sums(m, x, n_tokens, &sums);
    if (rc == SAE_OK)
        sae__losses_from_sums(&sums, n_tokens, m->arch, lambda, 0.0, out);
    return rc;
}

int sae_fvu(const sae_model *m, const float *x, size_t n_tokens, double *out)
{
    size_t elems;
    int rc = check_batch(m, x, n_tokens, m ? m->d_in : 0, out, &elems);
    if (rc != SAE_OK)
        return rc;
    if (n_tokens < 2)
        return SAE_E_INVALID_ARG;
    if (!sae__all_finite(x, elems))
        return SAE_E_NONFINITE;
    /* Total variance around the batch mean, two-pass in double. */
    const size_t d_in = m->d_in;
    double *mean = sae__alloc_zero(d_in * sizeof(double));
    if (!mean)
        return SAE_E_NOMEM;
    for (size_t t = 0; t < n_tokens; t++)
        for (size_t j = 0; j < d_in; j++)
            mean[j] += x[t * d_in + j];
    for (size_t j = 0; j < d_in; j++)
        mean[j] /= (double)n_tokens;
    double total = 0.0;
    for (size_t t = 0; t < n_tokens; t++)
        for (size_t j = 0; j < d_in; j++) {
            double d = x[t * d_in + j] - mean[j];
            total += d * d;
        }
    sae__free(mean);
    if (!(total > 0.0))
        return SAE_E_INVALID_ARG;
    sae_loss_sums sums;
    rc = forward_sums(m, x, n_tokens, &sums);
    if (rc == SAE_OK)
        *out = sums.l2 / total;
    return rc;
}
