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
    const size_t block = sae__block_size(n_tokens);
    e->block = block;
    e->cap = cap;
    e->d_sae = m->d_sae;
    int rc = sae__forward_init(&e->fw, m, block, SAE_FORWARD_F);
    if (rc != SAE_OK)
        return rc;
    e->f = e->fw.f;
    e->select = cap > 0 ? sae__alloc(m->d_sae * sizeof(float)) : NULL;
    if (cap > 0 && !e->select) {
        sae__sparse_encoder_free(e);
        return sae__fail(SAE_E_NOMEM, "out of memory for the cap's selection");
    }
    return SAE_OK;
}

void sae__sparse_encoder_free(sae_sparse_encoder *e)
{
    sae__free(e->select);
    sae__forward_free(&e->fw); /* e->f is the forward pass's */
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
    sae_topk_cut cut = sae__topk_cut(f, d, count, e->select);
    for (size_t i = 0; i < d; i++)
        if (sae__topk_keep(f[i], &cut)) {
            feat[n] = (uint32_t)i;
            val[n++] = f[i];
        }
    return count;
}

/* The checks of the two entry points: m, and x as n_tokens x d_in finite
 * floats; then the encoder's scratch. */
static int start_encoding(const char *fn, const sae_model *m, const float *x, size_t n_tokens,
                          size_t cap, sae_sparse_encoder *e)
{
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: m is NULL", fn);
    int rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc == SAE_OK)
        rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in);
    if (rc != SAE_OK)
        return rc;
    if (sae__sparse_encoder_init(e, m, n_tokens, cap) != SAE_OK)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for a block of %zu x %zu features", fn,
                         n_tokens < SAE_BLOCK_TOKENS ? n_tokens : (size_t)SAE_BLOCK_TOKENS,
                         m->d_sae);
    return SAE_OK;
}

int sae_encode_sparse_size(const sae_model *m, const float *x, size_t n_tokens,
                           size_t max_per_token, size_t *nnz)
{
    static const char fn[] = "sae_encode_sparse_size";
    if (!nnz)
        return sae__fail(SAE_E_INVALID_ARG, "%s: nnz is NULL", fn);
    sae_sparse_encoder e;
    int rc = start_encoding(fn, m, x, n_tokens, max_per_token, &e);
    if (rc != SAE_OK)
        return rc;
    size_t total = 0; /* at most n_tokens * d_sae pairs: no overflow */
    for (size_t t0 = 0; t0 < n_tokens && rc == SAE_OK; t0 += e.block) {
        size_t rows = sae__block_rows(n_tokens, t0, e.block);
        sae__sparse_encoder_run(&e, x + t0 * m->d_in, rows);
        if ((rc = sae__check_features(fn, e.f, rows, e.d_sae, t0)) != SAE_OK)
            break;
        for (size_t t = 0; t < rows; t++)
            total += sae__sparse_encoder_token(&e, t, NULL, NULL, 0);
    }
    sae__sparse_encoder_free(&e);
    if (rc == SAE_OK)
        *nnz = total;
    return rc;
}

int sae_encode_sparse(const sae_model *m, const float *x, size_t n_tokens, size_t max_per_token,
                      size_t *offsets, uint32_t *features, float *values, size_t capacity,
                      size_t *n_encoded)
{
    static const char fn[] = "sae_encode_sparse";
    if (!n_encoded)
        return sae__fail(SAE_E_INVALID_ARG, "%s: n_encoded is NULL", fn);
    /* the byte size of every buffer before any of them is read */
    int rc = sae__check_offsets(fn, "offsets", offsets, n_tokens);
    if (rc == SAE_OK)
        rc = sae__check_capacity(fn, "features", features, capacity, "capacity",
                                 sizeof(uint32_t));
    if (rc == SAE_OK)
        rc = sae__check_capacity(fn, "values", values, capacity, "capacity", sizeof(float));
    if (rc != SAE_OK)
        return rc;
    sae_sparse_encoder e = {0}; /* start_encoding may return before it is set */
    rc = start_encoding(fn, m, x, n_tokens, max_per_token, &e);
    if (rc == SAE_OK)
        rc = sae__forward_check(&e.fw, fn, x, n_tokens);
    if (rc != SAE_OK)
        goto cleanup;
    size_t nnz = 0, done = 0;
    offsets[0] = 0;
    for (size_t t0 = 0; t0 < n_tokens && done == t0; t0 += e.block) {
        size_t rows = sae__block_rows(n_tokens, t0, e.block);
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
    *n_encoded = done;
cleanup:
    sae__sparse_encoder_free(&e);
    return rc;
}
