/*
 * Each feature's nearest features by the cosine similarity of their decoder
 * rows (sae_decoder_neighbors): the d_sae x d_sae Gram matrix of W_dec, one
 * block of rows at a time through CBLAS, each row reduced to its k best
 * entries before the next block, so memory stays O(block x d_sae).
 */
#include "internal.h"

#include <cblas.h>

/* Gram rows per block: 16 MB of floats. */
#define NEIGHBOR_BLOCK_FLOATS ((size_t)1 << 22)

/* (c, j) ranks before (d, l): higher cosine, then lower index. */
static bool ranks_before(float c, uint32_t j, float d, uint32_t l)
{
    return c > d || (c == d && j < l);
}

/* The k best (cosine, index) pairs of one Gram row, excluding `self`, into
 * idx/cos sorted best first. */
static void row_neighbors(const float *gram, const float *norms, size_t d_sae, size_t self,
                          size_t k, uint32_t *idx, float *cos)
{
    size_t len = 0;
    const float ni = norms[self];
    for (size_t j = 0; j < d_sae; j++) {
        if (j == self)
            continue;
        /* in double: the product of two tiny norms may underflow float */
        float c = ni > 0.0f && norms[j] > 0.0f
                      ? (float)((double)gram[j] / ((double)ni * norms[j]))
                      : 0.0f;
        if (len == k && !ranks_before(c, (uint32_t)j, cos[k - 1], idx[k - 1]))
            continue;
        size_t pos = len < k ? len++ : k - 1;
        for (; pos > 0 && ranks_before(c, (uint32_t)j, cos[pos - 1], idx[pos - 1]); pos--) {
            cos[pos] = cos[pos - 1];
            idx[pos] = idx[pos - 1];
        }
        cos[pos] = c;
        idx[pos] = (uint32_t)j;
    }
}

int sae_decoder_neighbors(const sae_model *m, size_t k, uint32_t *idx, float *cosine,
                          size_t count)
{
    static const char fn[] = "sae_decoder_neighbors";
    if (!m || !idx)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : "idx");
    if (k == 0 || k >= m->d_sae)
        return sae__fail(SAE_E_INVALID_ARG, "%s: k = %zu is outside [1, d_sae - 1 = %zu]", fn, k,
                         m->d_sae - 1);
    if (count / k != m->d_sae || count % k != 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: count is %zu, not d_sae * k = %zu * %zu", fn,
                         count, m->d_sae, k);
    const size_t d_sae = m->d_sae, d_out = m->d_out; /* W_dec's rows: d_out wide */
    size_t block = NEIGHBOR_BLOCK_FLOATS / d_sae;
    block = block == 0 ? 1 : block > d_sae ? d_sae : block;
    int rc = SAE_OK;
    float *norms = sae__alloc(d_sae * sizeof(float));
    float *gram = sae__alloc(block * d_sae * sizeof(float)); /* <= max(2^22, d_sae) floats */
    float *cos_row = sae__alloc(k * sizeof(float));
    if (!norms || !gram || !cos_row) {
        rc = sae__fail(SAE_E_NOMEM, "%s: out of memory for %zu x %zu cosines", fn, block, d_sae);
        goto cleanup;
    }
    sae__decoder_row_norms(m, norms, NULL);
    /* |W_dec[i] . W_dec[j]| <= n_i n_j (Cauchy-Schwarz, every partial sum of
     * the GEMM too): finite when the largest norm squared is */
    double max_norm = 0.0;
    for (size_t i = 0; i < d_sae; i++)
        max_norm = norms[i] > max_norm ? norms[i] : max_norm;
    if (!(max_norm * max_norm < 0x1p126)) {
        rc = sae__fail(SAE_E_NONFINITE, "%s: a decoder row's norm is %g: the rows' dot "
                       "products are not finite in float", fn, max_norm);
        goto cleanup;
    }
    const float *w_dec = sae__w_dec(m);
    for (size_t i0 = 0; i0 < d_sae; i0 += block) {
        size_t rows = d_sae - i0 < block ? d_sae - i0 : block;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d_sae, (int)d_out,
                    1.0f, w_dec + i0 * d_out, (int)d_out, w_dec, (int)d_out, 0.0f, gram,
                    (int)d_sae);
        for (size_t r = 0; r < rows; r++) {
            size_t i = i0 + r;
            row_neighbors(gram + r * d_sae, norms, d_sae, i, k, idx + i * k,
                          cosine ? cosine + i * k : cos_row);
        }
    }
cleanup:
    sae__free(cos_row);
    sae__free(gram);
    sae__free(norms);
    return rc;
}
