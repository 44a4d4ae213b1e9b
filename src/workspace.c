/*
 * The step's workspace: every scratch buffer of a training step, owned by the
 * optimizer, allocated on the first step and grown only when a larger (or, for
 * the sparse pairs, denser) batch arrives. Each group of buffers is allocated
 * all or nothing, so a failed reservation leaves the workspace as it was.
 */
#include "internal.h"

#include <string.h>

/* One buffer of a group: where it lives and how many bytes it needs now. */
typedef struct grow_item {
    void **slot;
    size_t bytes;
    void *fresh;
} grow_item;

/* Allocate every item; only if all succeed, free the old buffers and commit. */
static int grow_all(grow_item *items, size_t count)
{
    for (size_t k = 0; k < count; k++) {
        items[k].fresh = sae__alloc(items[k].bytes);
        if (!items[k].fresh) {
            for (size_t j = 0; j < k; j++)
                sae__free(items[j].fresh);
            return sae__fail(SAE_E_NOMEM, "out of memory for the step's workspace (%zu bytes)",
                             items[k].bytes);
        }
    }
    for (size_t k = 0; k < count; k++) {
        sae__free(*items[k].slot);
        *items[k].slot = items[k].fresh;
    }
    return SAE_OK;
}

/* bytes = a * b * c, false on overflow */
static bool bytes3(size_t a, size_t b, size_t c, size_t *bytes)
{
    size_t ab;
    return sae__mul(a, b, &ab) && sae__mul(ab, c, bytes);
}

#define ITEM(field, n_bytes) {(void **)&ws->field, (n_bytes), NULL}

static int reserve_features(sae_workspace *ws, size_t d_in, size_t d_out, size_t d_sae)
{
    if (ws->norms)
        return SAE_OK;
    grow_item items[] = {
        ITEM(norms, d_sae * sizeof(float)),          ITEM(f_sum, d_sae * sizeof(double)),
        ITEM(g_b_enc, d_sae * sizeof(double)),       ITEM(row_sumsq, d_sae * sizeof(double)),
        ITEM(last_fired, d_sae * sizeof(uint64_t)),  ITEM(norm_coeff, d_sae * sizeof(float)),
        ITEM(g_b_dec, d_out * sizeof(double)),       ITEM(aux_mean, d_out * sizeof(double)),
        ITEM(col_ptr, (d_sae + 1) * sizeof(size_t)), ITEM(theta, d_sae * sizeof(float)),
        ITEM(theta_grad, d_sae * sizeof(double)),    ITEM(dead, d_sae),
        ITEM(zeros, d_out * sizeof(float)),          ITEM(mag_scale, d_sae * sizeof(float)),
        ITEM(gate_sum, d_sae * sizeof(double)),      ITEM(g_b_mag, d_sae * sizeof(double)),
        ITEM(g_r_mag, d_sae * sizeof(double)),
    };
    int rc = grow_all(items, sizeof items / sizeof items[0]);
    if (rc == SAE_OK) {
        memset(ws->zeros, 0, d_out * sizeof(float));
        ws->d_in = d_in;
        ws->d_out = d_out;
        ws->d_sae = d_sae;
    }
    return rc;
}

/* rows: n_tokens, doubled when AuxK adds a second row per token. */
static int reserve_tokens(sae_workspace *ws, size_t n_tokens, size_t rows, size_t k_aux)
{
    if (n_tokens > ws->tokens_cap || rows > ws->rows_cap) {
        size_t tokens = n_tokens > ws->tokens_cap ? n_tokens : ws->tokens_cap;
        size_t r = rows > ws->rows_cap ? rows : ws->rows_cap;
        size_t xc_bytes, dxh_bytes;
        if (!bytes3(tokens, ws->d_in, sizeof(float), &xc_bytes) ||
            !bytes3(r, ws->d_out, sizeof(float), &dxh_bytes) || r > SIZE_MAX / sizeof(double) - 1)
            return sae__fail(SAE_E_INVALID_ARG, "the step's workspace: its size overflows size_t");
        grow_item items[] = {
            ITEM(xc, xc_bytes),
            ITEM(dxh, dxh_bytes),
            ITEM(l1_tok, tokens * sizeof(double)),
            ITEM(gate_tok, tokens * sizeof(double)),
            ITEM(active_tok, tokens * sizeof(size_t)),
            ITEM(ties, tokens * sizeof(size_t)),
            ITEM(l2_tok, r * sizeof(double)),
            ITEM(row_ptr, (r + 1) * sizeof(size_t)),
        };
        int rc = grow_all(items, sizeof items / sizeof items[0]);
        if (rc != SAE_OK)
            return rc;
        ws->tokens_cap = tokens;
        ws->rows_cap = r;
    }
    if (k_aux && (n_tokens > ws->aux_tokens || k_aux > ws->aux_cap)) {
        size_t tokens = n_tokens > ws->aux_tokens ? n_tokens : ws->aux_tokens;
        size_t cap = k_aux > ws->aux_cap ? k_aux : ws->aux_cap;
        size_t aux_bytes;
        if (!bytes3(tokens, cap, sizeof(float), &aux_bytes))
            return sae__fail(SAE_E_INVALID_ARG, "the step's workspace: its size overflows size_t");
        grow_item items[] = {
            ITEM(aux_feat, aux_bytes), /* sizeof(uint32_t) == sizeof(float) */
            ITEM(aux_fval, aux_bytes),
            ITEM(aux_count, tokens * sizeof(size_t)),
        };
        int rc = grow_all(items, sizeof items / sizeof items[0]);
        if (rc != SAE_OK)
            return rc;
        ws->aux_tokens = tokens;
        ws->aux_cap = cap;
    }
    return SAE_OK;
}

static int reserve_block(sae_workspace *ws, size_t block, bool gated)
{
    if (block <= ws->block_cap && (!gated || ws->gate))
        return SAE_OK;
    block = block > ws->block_cap ? block : ws->block_cap;
    size_t chunks = (ws->d_sae + 15) / 16, f_bytes, mask_bytes;
    if (!bytes3(block, ws->d_sae, sizeof(float), &f_bytes) ||
        !bytes3(block, chunks, sizeof(uint16_t), &mask_bytes))
        return sae__fail(SAE_E_INVALID_ARG, "the step's workspace: its size overflows size_t");
    grow_item items[] = {
        ITEM(f, f_bytes),
        ITEM(mask, mask_bytes),
        ITEM(band, mask_bytes),
        ITEM(ones, block * sizeof(float)),
        ITEM(col_sum, ws->d_sae * sizeof(float)),
        ITEM(gate, f_bytes),
    };
    /* Gated's gate values only for Gated (or if they exist already) */
    size_t count = sizeof items / sizeof items[0] - (gated || ws->gate ? 0 : 1);
    int rc = grow_all(items, count);
    if (rc != SAE_OK)
        return rc;
    for (size_t t = 0; t < block; t++)
        ws->ones[t] = 1.0f;
    ws->mask_chunks = chunks;
    ws->block_cap = block;
    return SAE_OK;
}

/* The pool runs exactly n_threads threads; a new count replaces it. */
static int reserve_pool(sae_workspace *ws, int n_threads)
{
    if (ws->pool && sae__pool_threads(ws->pool) == n_threads)
        return SAE_OK;
    sae_pool *pool;
    int rc = sae__pool_create(&pool, n_threads);
    if (rc != SAE_OK)
        return rc;
    sae__pool_free(ws->pool);
    ws->pool = pool;
    return SAE_OK;
}

/* The products' team: one context per pool thread, of the shape's backend;
 * and the fused encoder of the sparse path, for the same backend and threads. */
static int reserve_team(sae_workspace *ws, int gemm, int n_threads)
{
    int backend = sae__gemm_resolve(sae__gemm_available(gemm) ? gemm : SAE_GEMM_CBLAS);
    if (ws->team && sae__gemm_team_backend(ws->team) == backend &&
        sae__gemm_team_size(ws->team) == n_threads)
        return SAE_OK;
    sae_gemm_team *team;
    sae_fused_encoder *fused;
    int rc = sae__gemm_team_create(&team, backend, n_threads);
    if (rc != SAE_OK)
        return rc;
    rc = sae__fused_encoder_create(&fused, ws->d_sae, n_threads, backend);
    if (rc != SAE_OK) {
        sae__gemm_team_free(team);
        return rc;
    }
    sae__gemm_team_free(ws->team);
    sae__fused_encoder_free(ws->fused);
    ws->team = team;
    ws->fused = fused;
    ws->gemm = (sae_gemm_use){team, NULL};
    return SAE_OK;
}

/* bf16 inputs of the encoder: x - b_dec for the batch, and W_enc (which the
 * optimizer fills). A new W_enc copy holds no model yet. */
static int reserve_bf16(sae_workspace *ws, size_t n_tokens)
{
    if (ws->w_enc16 && n_tokens <= ws->xc16_tokens)
        return SAE_OK;
    size_t tokens = n_tokens > ws->xc16_tokens ? n_tokens : ws->xc16_tokens, xc_bytes, w_bytes;
    if (!bytes3(tokens, ws->d_in, sizeof(uint16_t), &xc_bytes) ||
        !bytes3(ws->d_sae, ws->d_in, sizeof(uint16_t), &w_bytes))
        return SAE_E_INVALID_ARG;
    grow_item items[] = {ITEM(xc16, xc_bytes)};
    int rc = grow_all(items, 1);
    if (rc == SAE_OK && !ws->w_enc16) {
        ws->w_enc16 = sae__alloc(w_bytes);
        rc = ws->w_enc16 ? SAE_OK : SAE_E_NOMEM;
        ws->w16_model = NULL;
    }
    if (rc == SAE_OK)
        ws->xc16_tokens = tokens;
    return rc;
}

static int reserve_threads(sae_workspace *ws, int n_threads, size_t rows, bool radix)
{
    size_t threads = (size_t)n_threads;
    bool need_radix = radix && !ws->radix_hist;
    if (threads <= ws->thread_cap && rows <= ws->panel_tokens && !need_radix)
        return SAE_OK;
    threads = threads > ws->thread_cap ? threads : ws->thread_cap;
    rows = rows > ws->panel_tokens ? rows : ws->panel_tokens;
    size_t panel_bytes, w_bytes, hist_bytes, scratch_bytes;
    if (threads > 4096 || !bytes3(rows, threads * SAE_FEAT_TILE, sizeof(float), &panel_bytes) ||
        !bytes3(threads * ws->d_sae, SAE_DEC_TILE, sizeof(float), &w_bytes) ||
        !bytes3(threads, ws->d_sae, sizeof(size_t), &hist_bytes) ||
        !bytes3(threads, ws->d_sae, sizeof(float), &scratch_bytes))
        return sae__fail(SAE_E_INVALID_ARG, "the step's workspace: its size overflows size_t");
    grow_item items[] = {
        ITEM(hist, hist_bytes),
        ITEM(w_panel, w_bytes),
        ITEM(t_panel, panel_bytes),
        ITEM(scratch, scratch_bytes),
        ITEM(radix_hist, threads * 65536 * sizeof(uint64_t)),
    };
    /* the radix histograms only for BatchTopK (or if they exist already) */
    size_t count = sizeof items / sizeof items[0] - (radix || ws->radix_hist ? 0 : 1);
    int rc = grow_all(items, count);
    if (rc != SAE_OK)
        return rc;
    ws->thread_cap = threads;
    ws->panel_tokens = rows;
    return SAE_OK;
}

int sae__workspace_reserve(sae_workspace *ws, const sae_step_shape *s)
{
    bool fresh = !ws->norms;
    /* AuxK, and Gated's auxiliary reconstruction, take a second row per token */
    const bool doubled = s->k_aux || s->arch == SAE_ARCH_GATED;
    size_t rows = doubled ? 2 * s->n_tokens : s->n_tokens;
    if (doubled && s->n_tokens > SIZE_MAX / 2)
        return sae__fail(SAE_E_INVALID_ARG, "the step's workspace: its size overflows size_t");
    /* Matryoshka: a block of rows per level and AuxK's (matryoshka.c) */
    if (s->arch == SAE_ARCH_MATRYOSHKA && s->levels &&
        !sae__mul(s->levels + 1, s->n_tokens, &rows))
        return sae__fail(SAE_E_INVALID_ARG, "the step's workspace: its size overflows size_t");
    /* BatchTopK (and Matryoshka) select over the whole batch: one block of all
     * its tokens, unless the fused encoder selects (in O(n k) of its own) */
    const bool batch = sae__batch_selected(s->arch) && !s->batch_fused;
    size_t block = batch ? s->n_tokens
                   : s->n_tokens < SAE_BLOCK_TOKENS ? s->n_tokens : SAE_BLOCK_TOKENS;
    int rc = reserve_features(ws, s->d_in, s->d_out ? s->d_out : s->d_in, s->d_sae);
    if (rc == SAE_OK)
        rc = reserve_tokens(ws, s->n_tokens, rows, s->k_aux);
    if (rc == SAE_OK)
        rc = reserve_block(ws, block, s->arch == SAE_ARCH_GATED);
    if (rc == SAE_OK)
        rc = reserve_threads(ws, s->n_threads, rows, batch);
    if (rc == SAE_OK)
        rc = reserve_pool(ws, s->n_threads);
    if (rc == SAE_OK)
        rc = reserve_team(ws, s->gemm, s->n_threads);
    if (rc == SAE_OK && s->bf16)
        rc = reserve_bf16(ws, s->n_tokens);
    /* the pair arrays exist from the start (the fused encoder writes into
     * ws->feat + row_ptr[t] even when no feature fires: NULL + 0 is undefined) */
    if (rc == SAE_OK)
        rc = sae__workspace_reserve_pairs(ws, 1, 0);
    if (rc != SAE_OK && fresh) /* all or nothing on the first reservation */
        sae__workspace_free(ws);
    return rc;
}

int sae__workspace_reserve_batch(sae_workspace *ws, size_t n_tokens)
{
    int rc = reserve_block(ws, n_tokens, ws->gate != NULL);
    if (rc == SAE_OK)
        rc = reserve_threads(ws, (int)ws->thread_cap, ws->panel_tokens, true);
    return rc;
}

int sae__workspace_reserve_pairs(sae_workspace *ws, size_t nnz, size_t keep)
{
    /* at least one pair, so that the arrays exist even when no feature fires
     * (ws->feat + row_ptr[t] with feat NULL is undefined, even + 0) */
    nnz = nnz ? nnz : 1;
    if (nnz <= ws->nnz_cap)
        return SAE_OK;
    size_t cap = nnz + nnz / 4; /* headroom: density drifts between steps */
    if (cap > SIZE_MAX / sizeof(float) / 2)
        return sae__fail(SAE_E_NOMEM, "out of memory for the step's sparse pairs");
    uint32_t *old_feat = ws->feat;
    float *old_fval = ws->fval;
    grow_item items[] = {
        ITEM(tok, cap * sizeof(uint32_t)),
        ITEM(cfval, cap * sizeof(float)),
        ITEM(cgval, cap * sizeof(float)),
    };
    /* feat and fval hold pairs already stored this step: copy them over */
    uint32_t *feat = sae__alloc(cap * sizeof(uint32_t));
    float *fval = sae__alloc(cap * sizeof(float));
    int rc = !feat || !fval ? sae__fail(SAE_E_NOMEM, "out of memory for %zu sparse pairs", cap)
                            : grow_all(items, sizeof items / sizeof items[0]);
    if (rc != SAE_OK)
        goto cleanup;
    if (keep) {
        memcpy(feat, old_feat, keep * sizeof(uint32_t));
        memcpy(fval, old_fval, keep * sizeof(float));
    }
    ws->feat = feat;
    ws->fval = fval;
    ws->nnz_cap = cap;
    feat = old_feat; /* what is left to free */
    fval = old_fval;
cleanup:
    sae__free(feat);
    sae__free(fval);
    return rc;
}

void sae__workspace_free(sae_workspace *ws)
{
    void *buffers[] = {
        ws->norms, ws->f_sum, ws->g_b_enc, ws->row_sumsq, ws->last_fired, ws->norm_coeff,
        ws->g_b_dec, ws->aux_mean, ws->col_ptr, ws->theta, ws->theta_grad, ws->dead, ws->zeros,
        ws->mag_scale, ws->gate_sum, ws->g_b_mag, ws->g_r_mag, ws->gate,
        ws->xc, ws->dxh, ws->l1_tok, ws->gate_tok, ws->l2_tok, ws->active_tok, ws->ties, ws->row_ptr,
        ws->aux_feat, ws->aux_fval, ws->aux_count,
        ws->f, ws->mask, ws->band, ws->ones, ws->col_sum,
        ws->feat, ws->fval, ws->tok, ws->cfval, ws->cgval,
        ws->hist, ws->w_panel, ws->t_panel, ws->scratch, ws->radix_hist,
        ws->xc16, ws->w_enc16,
    };
    for (size_t k = 0; k < sizeof buffers / sizeof buffers[0]; k++)
        sae__free(buffers[k]);
    sae__gemm_team_free(ws->team);
    sae__fused_encoder_free(ws->fused);
    sae__pool_free(ws->pool);
    memset(ws, 0, sizeof *ws);
}
