/*
 * Sparse codes: each token's active (feature, value) pairs, in CSR form
 * (per-token offsets, feature indices, values), for hosts that store or send
 * features and for the feature statistics (feature_stats.c).
 *
 * The batch is encoded by the inference forward pass (forward.c) one block
 * of tokens at a time into a dense scratch of one block's features, and each
 * token's row is then compressed: never n_tokens x d_sae floats at once. The
 * blocks are sae_encode's (SAE_BLOCK_TOKENS tokens from the first), because
 * the GEMM's rounding depends on how a batch is cut into blocks (OpenBLAS's
 * kernels sum in different orders for different row positions): the same
 * cut gives sae_encode's values bit for bit.
 */
#include "internal.h"

#include <string.h>

int sae__sparse_encoder_init(sae_sparse_encoder *e, const sae_model *m, size_t n_tokens,
                             size_t cap)
{
    memset(e, 0, sizeof *e);
    const size_t block = n_tokens < SAE_BLOCK_TOKENS ? n_tokens : SAE_BLOCK_TOKENS;
    size_t floats;
    if (!sae__mul(block, m->d_sae, &floats) || !sae__mul(floats, sizeof(float), &floats))
        return SAE_E_NOMEM;
    e->block = block;
    e->cap = cap;
    e->d_sae = m->d_sae;
    if (sae__forward_init(&e->fw, m, block) != SAE_OK)
        return SAE_E_NOMEM;
    e->f = sae__alloc(floats);
    e->select = cap > 0 ? sae__alloc(m->d_sae * sizeof(float)) : NULL;
    if (!e->f || (cap > 0 && !e->select)) {
        sae__sparse_encoder_free(e);
        return SAE_E_NOMEM;
    }
    return SAE_OK;
}

void sae__sparse_encoder_free(sae_sparse_encoder *e)
{
    sae__free(e->select);
    sae__free(e->f);
    sae__forward_free(&e->fw);
    memset(e, 0, sizeof *e);
}

void sae__sparse_encoder_run(sae_sparse_encoder *e, const float *x, size_t rows)
{
    sae__forward_encode(&e->fw, x, rows, e->f, NULL);
}

size_t sae__sparse_encoder_token(sae_sparse_encoder *e, size_t t, uint32_t *feat, float *val,
                                 size_t room)
{
    const size_t d = e->d_sae;
    const float *f = e->f + t * d;
    size_t active = 0;
    for (size_t i = 0; i < d; i++)
        active += f[i] > 0.0f;
    size_t count = e->cap > 0 && active > e->cap ? e->cap : active;
    if (!feat || count > room)
        return count;
    size_t n = 0;
    if (count == active) {
        for (size_t i = 0; i < d; i++)
            if (f[i] > 0.0f) {
                feat[n] = (uint32_t)i;
                val[n++] = f[i];
            }
        return count;
    }
    /* the cap: the `count` largest values, ties at the last one in feature
     * order (as TopK keeps them), listed in feature order */
    float kth;
    size_t ties;
    sae__topk_select(f, d, count, e->select, &kth, &ties);
    for (size_t i = 0; i < d; i++) {
        float v = f[i];
        bool keep = v > 0.0f && (v > kth || (v == kth && ties > 0));
        if (!keep)
            continue;
        if (!(v > kth))
            ties--;
        feat[n] = (uint32_t)i;
        val[n++] = v;
    }
    return count;
}

/* Arguments shared by the two entry points; x is checked for NaN/Inf. */
static int check_sparse_batch(const sae_model *m, const float *x, size_t n_tokens)
{
    size_t elems, bytes;
    if (!m || !x || n_tokens == 0 || !sae__mul(n_tokens, m->d_in, &elems) ||
        !sae__mul(elems, sizeof(float), &bytes))
        return SAE_E_INVALID_ARG;
    return sae__all_finite(x, elems) ? SAE_OK : SAE_E_NONFINITE;
}

int sae_encode_sparse_size(const sae_model *m, const float *x, size_t n_tokens,
                           size_t max_per_token, size_t *nnz)
{
    if (!nnz)
        return SAE_E_INVALID_ARG;
    int rc = check_sparse_batch(m, x, n_tokens);
    if (rc != SAE_OK)
        return rc;
    sae_sparse_encoder e;
    if (sae__sparse_encoder_init(&e, m, n_tokens, max_per_token) != SAE_OK)
        return SAE_E_NOMEM;
    size_t total = 0; /* at most n_tokens * d_sae pairs, each at least 8 bytes */
    for (size_t t0 = 0; t0 < n_tokens; t0 += e.block) {
        size_t rows = n_tokens - t0 < e.block ? n_tokens - t0 : e.block;
        sae__sparse_encoder_run(&e, x + t0 * m->d_in, rows);
        for (size_t t = 0; t < rows; t++)
            total += sae__sparse_encoder_token(&e, t, NULL, NULL, 0);
    }
    sae__sparse_encoder_free(&e);
    *nnz = total;
    return SAE_OK;
}

int sae_encode_sparse(const sae_model *m, const float *x, size_t n_tokens, size_t max_per_token,
                      size_t *offsets, uint32_t *features, float *values, size_t capacity,
                      size_t *n_encoded)
{
    if (!offsets || !n_encoded || (capacity > 0 && (!features || !values)))
        return SAE_E_INVALID_ARG;
    int rc = check_sparse_batch(m, x, n_tokens);
    if (rc != SAE_OK)
        return rc;
    sae_sparse_encoder e;
    if (sae__sparse_encoder_init(&e, m, n_tokens, max_per_token) != SAE_OK)
        return SAE_E_NOMEM;
    size_t nnz = 0, done = 0;
    offsets[0] = 0;
    for (size_t t0 = 0; t0 < n_tokens && done == t0; t0 += e.block) {
        size_t rows = n_tokens - t0 < e.block ? n_tokens - t0 : e.block;
        sae__sparse_encoder_run(&e, x + t0 * m->d_in, rows);
        for (size_t t = 0; t < rows; t++) {
            size_t room = capacity - nnz;
            size_t count = sae__sparse_encoder_token(&e, t, features ? features + nnz : NULL,
                                                     values ? values + nnz : NULL, room);
            if (count > room)
                break; /* the rest does not fit: the caller continues from here */
            nnz += count;
            offsets[++done] = nnz;
        }
    }
    sae__sparse_encoder_free(&e);
    *n_encoded = done;
    return SAE_OK;
}
