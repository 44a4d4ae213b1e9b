/*
 * Loss and backward: the exact gradients of loss = l2 + lambda * l1 for a batch,
 * on the dense path (CBLAS GEMMs) or the sparse path (sparse.c), and the step's
 * workspace.
 *
 * With xc = x - b_dec, pre = xc W_enc + b_enc, f = ReLU(pre), e = x_hat - x,
 * r_i = ||W_dec[i,:]|| and n tokens:
 *
 *   dL/dx_hat_t    = (2/n) e_t
 *   dL/df_ti       = W_dec[i,:] . dL/dx_hat_t + (lambda/n) r_i
 *   dL/dpre_ti     = dL/df_ti if pre_ti > 0 else 0          (ReLU'(0) = 0)
 *   dL/dW_dec[i,:] = sum_t f_ti dL/dx_hat_t + (lambda/n) (sum_t f_ti) W_dec[i,:] / r_i
 *   dL/dW_enc[:,i] = sum_t dL/dpre_ti xc_t
 *   dL/db_enc_i    = sum_t dL/dpre_ti
 *   dL/db_dec      = sum_t dL/dx_hat_t - W_enc (dL/db_enc)   (both paths; the
 *                    encoder path is one GEMV, not a GEMM)
 *
 * The second term of dL/dW_dec is the gradient through the row norm in the L1
 * term; at r_i = 0 its subgradient 0 is used (as torch's norm backward does).
 * Nothing here is ever n x d_sae x d_in: the L1 term needs only r and f.
 *
 * Both paths encode in blocks of SAE_BLOCK_TOKENS tokens with one SGEMM each
 * (the encoder is dense whatever the sparsity). The first block's density picks
 * the path. Parallel loops split work so that every sum is taken in a fixed
 * order (per token over features, or per feature over tokens): results do not
 * depend on the thread count, only BLAS's own threading can change bits.
 */
#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- workspace ------------------------------------------------------------ */

#define FREE_AND_NULL(p) (sae__free(p), (p) = NULL)

static void free_feature_buffers(sae_workspace *ws)
{
    FREE_AND_NULL(ws->norms);
    FREE_AND_NULL(ws->f_sum);
    FREE_AND_NULL(ws->g_b_enc);
    FREE_AND_NULL(ws->row_sumsq);
    FREE_AND_NULL(ws->last_fired);
    FREE_AND_NULL(ws->g_b_dec);
    FREE_AND_NULL(ws->col_ptr);
}

static int reserve_feature_buffers(sae_workspace *ws, size_t d_in, size_t d_sae)
{
    if (ws->norms)
        return SAE_OK;
    ws->norms = sae__alloc(d_sae * sizeof(float));
    ws->f_sum = sae__alloc(d_sae * sizeof(double));
    ws->g_b_enc = sae__alloc(d_sae * sizeof(double));
    ws->row_sumsq = sae__alloc(d_sae * sizeof(double));
    ws->last_fired = sae__alloc(d_sae * sizeof(uint64_t));
    ws->g_b_dec = sae__alloc(d_in * sizeof(double));
    ws->col_ptr = sae__alloc((d_sae + 1) * sizeof(size_t));
    if (!ws->norms || !ws->f_sum || !ws->g_b_enc || !ws->row_sumsq || !ws->last_fired ||
        !ws->g_b_dec || !ws->col_ptr) {
        free_feature_buffers(ws);
        return SAE_E_NOMEM;
    }
    ws->d_in = d_in;
    ws->d_sae = d_sae;
    return SAE_OK;
}

/* Replace *slot with a new allocation of bytes (freeing the old one) only once
 * every allocation of a group has succeeded: callers allocate into locals,
 * then commit. */
static void commit(void **slot, void *fresh)
{
    sae__free(*slot);
    *slot = fresh;
}

static int reserve_token_buffers(sae_workspace *ws, size_t n_tokens)
{
    if (n_tokens <= ws->tokens_cap)
        return SAE_OK;
    size_t per_token, bytes;
    if (!sae__mul(n_tokens, ws->d_in, &per_token) || !sae__mul(per_token, sizeof(float), &bytes) ||
        n_tokens > SIZE_MAX / (SAE_FEAT_TILE * sizeof(float)) - 1)
        return SAE_E_INVALID_ARG;
    float *xc = sae__alloc(bytes);
    float *dxh = sae__alloc(bytes);
    double *l1_tok = sae__alloc(n_tokens * sizeof(double));
    double *l2_tok = sae__alloc(n_tokens * sizeof(double));
    size_t *row_ptr = sae__alloc((n_tokens + 1) * sizeof(size_t));
    if (!xc || !dxh || !l1_tok || !l2_tok || !row_ptr) {
        sae__free(xc);
        sae__free(dxh);
        sae__free(l1_tok);
        sae__free(l2_tok);
        sae__free(row_ptr);
        return SAE_E_NOMEM;
    }
    commit((void **)&ws->xc, xc);
    commit((void **)&ws->dxh, dxh);
    commit((void **)&ws->l1_tok, l1_tok);
    commit((void **)&ws->l2_tok, l2_tok);
    commit((void **)&ws->row_ptr, row_ptr);
    ws->tokens_cap = n_tokens;
    return SAE_OK;
}

static int reserve_block_buffers(sae_workspace *ws, size_t block)
{
    if (block <= ws->block_cap)
        return SAE_OK;
    size_t mask_chunks = (ws->d_sae + 15) / 16;
    /* block <= SAE_BLOCK_TOKENS and d_in * d_sae was checked at model creation,
     * so these products cannot overflow. */
    float *f = sae__alloc(block * ws->d_sae * sizeof(float));
    uint16_t *mask = sae__alloc(block * mask_chunks * sizeof(uint16_t));
    float *ones = sae__alloc(block * sizeof(float));
    float *col_sum = sae__alloc(ws->d_sae * sizeof(float));
    if (!f || !mask || !ones || !col_sum) {
        sae__free(f);
        sae__free(mask);
        sae__free(ones);
        sae__free(col_sum);
        return SAE_E_NOMEM;
    }
    for (size_t t = 0; t < block; t++)
        ones[t] = 1.0f;
    commit((void **)&ws->f, f);
    commit((void **)&ws->mask, mask);
    commit((void **)&ws->ones, ones);
    commit((void **)&ws->col_sum, col_sum);
    ws->mask_chunks = mask_chunks;
    ws->block_cap = block;
    return SAE_OK;
}

static int reserve_thread_buffers(sae_workspace *ws, int n_threads, size_t n_tokens)
{
    size_t threads = (size_t)n_threads;
    if (threads <= ws->thread_cap && n_tokens <= ws->panel_tokens)
        return SAE_OK;
    threads = threads > ws->thread_cap ? threads : ws->thread_cap;
    size_t tokens = n_tokens > ws->panel_tokens ? n_tokens : ws->panel_tokens;
    size_t panel_floats;
    if (threads > 4096 || !sae__mul(tokens, threads * SAE_FEAT_TILE, &panel_floats) ||
        panel_floats > SIZE_MAX / sizeof(float))
        return SAE_E_INVALID_ARG;
    /* threads <= 4096 and d_sae <= INT_MAX: these products fit */
    size_t *hist = sae__alloc(threads * ws->d_sae * sizeof(size_t));
    float *w_panel = sae__alloc(threads * ws->d_sae * SAE_DEC_TILE * sizeof(float));
    float *t_panel = sae__alloc(panel_floats * sizeof(float));
    if (!hist || !w_panel || !t_panel) {
        sae__free(hist);
        sae__free(w_panel);
        sae__free(t_panel);
        return SAE_E_NOMEM;
    }
    commit((void **)&ws->hist, hist);
    commit((void **)&ws->w_panel, w_panel);
    commit((void **)&ws->t_panel, t_panel);
    ws->thread_cap = threads;
    ws->panel_tokens = tokens;
    return SAE_OK;
}

int sae__workspace_reserve(sae_workspace *ws, size_t d_in, size_t d_sae, size_t n_tokens,
                           int n_threads)
{
    bool fresh = !ws->norms;
    int rc = reserve_feature_buffers(ws, d_in, d_sae);
    if (rc == SAE_OK)
        rc = reserve_token_buffers(ws, n_tokens);
    if (rc == SAE_OK)
        rc = reserve_block_buffers(ws, n_tokens < SAE_BLOCK_TOKENS ? n_tokens : SAE_BLOCK_TOKENS);
    if (rc == SAE_OK)
        rc = reserve_thread_buffers(ws, n_threads, n_tokens);
    if (rc != SAE_OK && fresh) /* all or nothing on the first reservation */
        sae__workspace_free(ws);
    return rc;
}

/* Grow the sparse pair arrays to hold at least nnz pairs. */
static int reserve_pairs(sae_workspace *ws, size_t nnz)
{
    if (nnz <= ws->nnz_cap)
        return SAE_OK;
    size_t cap = nnz + nnz / 4; /* headroom: density drifts between steps */
    if (cap > SIZE_MAX / sizeof(float) / 2)
        return SAE_E_NOMEM;
    uint32_t *feat = sae__alloc(cap * sizeof(uint32_t));
    float *fval = sae__alloc(cap * sizeof(float));
    uint32_t *tok = sae__alloc(cap * sizeof(uint32_t));
    float *cfval = sae__alloc(cap * sizeof(float));
    float *cgval = sae__alloc(cap * sizeof(float));
    if (!feat || !fval || !tok || !cfval || !cgval) {
        sae__free(feat);
        sae__free(fval);
        sae__free(tok);
        sae__free(cfval);
        sae__free(cgval);
        return SAE_E_NOMEM;
    }
    /* pairs already stored (earlier blocks of this step) move over */
    if (ws->nnz_cap) {
        memcpy(feat, ws->feat, ws->nnz_cap * sizeof(uint32_t));
        memcpy(fval, ws->fval, ws->nnz_cap * sizeof(float));
    }
    commit((void **)&ws->feat, feat);
    commit((void **)&ws->fval, fval);
    commit((void **)&ws->tok, tok);
    commit((void **)&ws->cfval, cfval);
    commit((void **)&ws->cgval, cgval);
    ws->nnz_cap = cap;
    return SAE_OK;
}

void sae__workspace_free(sae_workspace *ws)
{
    free_feature_buffers(ws);
    sae__free(ws->xc);
    sae__free(ws->dxh);
    sae__free(ws->l1_tok);
    sae__free(ws->l2_tok);
    sae__free(ws->row_ptr);
    sae__free(ws->f);
    sae__free(ws->mask);
    sae__free(ws->ones);
    sae__free(ws->col_sum);
    sae__free(ws->feat);
    sae__free(ws->fval);
    sae__free(ws->tok);
    sae__free(ws->cfval);
    sae__free(ws->cgval);
    sae__free(ws->hist);
    sae__free(ws->w_panel);
    sae__free(ws->t_panel);
    memset(ws, 0, sizeof *ws);
}

/* ---- pieces shared by both paths -------------------------------------------- */

static void fill_rows(float *dst, const float *row, size_t rows, size_t cols)
{
    for (size_t t = 0; t < rows; t++)
        memcpy(dst + t * cols, row, cols * sizeof(float));
}

/* xc = x - b_dec for tokens [t0, t0 + rows); false if x holds NaN or Inf. */
static bool center_block(const sae_model *m, const float *x, size_t t0, size_t rows,
                         sae_workspace *ws, int n_threads)
{
    const size_t d_in = m->d_in;
    const float *b_dec = sae__b_dec(m);
    int bad = 0;
    #pragma omp parallel for num_threads(n_threads) schedule(static) reduction(|:bad)
    for (size_t t = t0; t < t0 + rows; t++) {
        const float *xt = x + t * d_in;
        float *xct = ws->xc + t * d_in;
        int row_bad = 0;
        for (size_t j = 0; j < d_in; j++) {
            row_bad |= (xt[j] - xt[j]) != 0.0f; /* NaN for Inf and NaN */
            xct[j] = xt[j] - b_dec[j];
        }
        bad |= row_bad;
    }
    return !bad;
}

/* pre = xc W_enc + b_enc for the block, ReLU in place, and per token the L1
 * sum and the active count (into row_ptr[t + 1], for the CSR prefix sum).
 * b_enc is added in the ReLU pass rather than preloaded for the GEMM: one pass
 * over the block instead of two. Returns the block's active pairs. */
static size_t encode_block(const sae_model *m, size_t t0, size_t rows, sae_workspace *ws,
                           int n_threads)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    float *f = ws->f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d_sae, (int)d_in, 1.0f,
                ws->xc + t0 * d_in, (int)d_in, sae__w_enc_t(m), (int)d_in, 0.0f, f, (int)d_sae);
    const float *b_enc = sae__b_enc(m), *norms = ws->norms;
    size_t active_block = 0;
    #pragma omp parallel for num_threads(n_threads) schedule(static) reduction(+:active_block)
    for (size_t t = 0; t < rows; t++) {
        size_t active = sae__relu_stats_row(f + t * d_sae, b_enc, norms, d_sae, &ws->l1_tok[t0 + t],
                                            ws->mask + t * ws->mask_chunks);
        ws->row_ptr[t0 + t + 1] = active;
        active_block += active;
    }
    return active_block;
}

/* dL/db_dec: the direct path (column sums of dL/dx_hat, in token order, by
 * groups of 16 columns so each pass reads whole cache lines), then minus
 * W_enc dL/db_enc. Writes both bias gradients. */
static void bias_gradients(const sae_model *m, size_t n_tokens, sae_workspace *ws, float *grad,
                           int n_threads)
{
    enum { GROUP = 16 };
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    float *g_b_enc = grad + m->lay.b_enc, *g_b_dec = grad + m->lay.b_dec;
    const size_t groups = (d_in + GROUP - 1) / GROUP;
    #pragma omp parallel for num_threads(n_threads) schedule(static)
    for (size_t gi = 0; gi < groups; gi++) {
        size_t j0 = gi * GROUP, width = d_in - j0 < GROUP ? d_in - j0 : GROUP;
        double acc[GROUP] = {0};
        for (size_t t = 0; t < n_tokens; t++) {
            const float *row = ws->dxh + t * d_in + j0;
            for (size_t j = 0; j < width; j++)
                acc[j] += row[j];
        }
        for (size_t j = 0; j < width; j++)
            ws->g_b_dec[j0 + j] = acc[j];
    }
    for (size_t i = 0; i < d_sae; i++)
        g_b_enc[i] = (float)ws->g_b_enc[i];
    for (size_t j = 0; j < d_in; j++)
        g_b_dec[j] = (float)ws->g_b_dec[j];
    cblas_sgemv(CblasRowMajor, CblasTrans, (int)d_sae, (int)d_in, -1.0f, sae__w_enc_t(m),
                (int)d_in, g_b_enc, 1, 1.0f, g_b_dec, 1);
}

/* ---- dense path -------------------------------------------------------------- */

/* acc[i] += sum over the block's rows of f[t][i] (one SGEMV with a vector of ones). */
static void add_column_sums(const float *f, size_t rows, size_t d_sae, sae_workspace *ws,
                            double *acc)
{
    cblas_sgemv(CblasRowMajor, CblasTrans, (int)rows, (int)d_sae, 1.0f, f, (int)d_sae, ws->ones, 1,
                0.0f, ws->col_sum, 1);
    for (size_t i = 0; i < d_sae; i++)
        acc[i] += ws->col_sum[i];
}

/* last_fired[i] = 1 + the last token of the block where feature i fired, for
 * the features that fired in it; scans each 16-feature chunk backwards. */
static void update_last_fired(sae_workspace *ws, size_t t0, size_t rows, int n_threads)
{
    const size_t chunks = ws->mask_chunks, d_sae = ws->d_sae;
    #pragma omp parallel for num_threads(n_threads) schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        size_t width = d_sae - 16 * c < 16 ? d_sae - 16 * c : 16;
        unsigned unresolved = (1u << width) - 1u;
        for (size_t t = rows; t-- > 0 && unresolved;) {
            unsigned found = ws->mask[t * chunks + c] & unresolved;
            unresolved &= ~found;
            while (found) {
                unsigned bit = (unsigned)__builtin_ctz(found);
                ws->last_fired[16 * c + bit] = t0 + t + 1;
                found &= found - 1;
            }
        }
    }
}

static void dense_backward_block(const sae_model *m, const float *x, double lambda,
                                 size_t n_tokens, size_t t0, size_t rows, sae_workspace *ws,
                                 float *grad, int n_threads)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    const float beta = t0 == 0 ? 0.0f : 1.0f;
    const float scale = (float)(2.0 / (double)n_tokens);
    const float l1_scale = (float)(lambda / (double)n_tokens);
    float *f = ws->f, *dxh = ws->dxh + t0 * d_in;

    /* x_hat, then dL/dx_hat = (2/n)(x_hat - x) and the squared error per token */
    fill_rows(dxh, sae__b_dec(m), rows, d_in);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)d_in, (int)d_sae, 1.0f,
                f, (int)d_sae, sae__w_dec(m), (int)d_in, 1.0f, dxh, (int)d_in);
    #pragma omp parallel for num_threads(n_threads) schedule(static)
    for (size_t t = 0; t < rows; t++) {
        float *g = dxh + t * d_in;
        const float *xt = x + (t0 + t) * d_in;
        double l2 = 0.0;
        for (size_t j = 0; j < d_in; j++) {
            float e = g[j] - xt[j];
            l2 += (double)e * e;
            g[j] = e * scale;
        }
        ws->l2_tok[t0 + t] = l2;
    }

    /* dL/dW_dec (reconstruction part) += f^T dL/dx_hat; feature statistics */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d_sae, (int)d_in, (int)rows, 1.0f,
                f, (int)d_sae, dxh, (int)d_in, beta, grad + m->lay.w_dec, (int)d_in);
    add_column_sums(f, rows, d_sae, ws, ws->f_sum);
    update_last_fired(ws, t0, rows, n_threads);

    /* dL/df = dL/dx_hat W_dec^T, over f (no longer needed; the mask keeps
     * where f > 0), then dL/dpre and its column sums dL/db_enc */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d_sae, (int)d_in, 1.0f,
                dxh, (int)d_in, sae__w_dec(m), (int)d_in, 0.0f, f, (int)d_sae);
    #pragma omp parallel for num_threads(n_threads) schedule(static)
    for (size_t t = 0; t < rows; t++)
        sae__masked_dpre_row(f + t * d_sae, ws->mask + t * ws->mask_chunks, ws->norms, l1_scale,
                             d_sae);
    add_column_sums(f, rows, d_sae, ws, ws->g_b_enc);

    /* dL/dW_enc (stored transposed) += dL/dpre^T xc */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d_sae, (int)d_in, (int)rows, 1.0f,
                f, (int)d_sae, ws->xc + t0 * d_in, (int)d_in, beta, grad + m->lay.w_enc_t,
                (int)d_in);
}

/* After the dense blocks: the L1 term's gradient through the decoder row norms,
 * and each feature's squared gradient norm. */
static void dense_finish_rows(const sae_model *m, size_t n_tokens, double lambda,
                              sae_workspace *ws, float *grad, int n_threads)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    const double l1_scale = lambda / (double)n_tokens;
    const float *w_dec = sae__w_dec(m);
    float *g_w_dec = grad + m->lay.w_dec, *g_w_enc = grad + m->lay.w_enc_t;
    #pragma omp parallel for num_threads(n_threads) schedule(static)
    for (size_t i = 0; i < d_sae; i++) {
        float c = 0.0f;
        if (ws->norms[i] > 0.0f && ws->f_sum[i] != 0.0)
            c = (float)(l1_scale * ws->f_sum[i] / ws->norms[i]);
        float *gd = g_w_dec + i * d_in, *ge = g_w_enc + i * d_in;
        const float *w = w_dec + i * d_in;
        double sumsq = 0.0;
        for (size_t j = 0; j < d_in; j++) {
            float g = gd[j] + c * w[j];
            gd[j] = g;
            sumsq += (double)g * g + (double)ge[j] * ge[j];
        }
        ws->row_sumsq[i] = sumsq;
    }
}

/* ---- the pass ------------------------------------------------------------------ */

int sae__forward_backward(const sae_model *m, double lambda, int kernel, int n_threads,
                          const float *x, size_t n_tokens, sae_workspace *ws, float *grad,
                          sae_backward_result *res)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    const size_t block = ws->block_cap < n_tokens ? ws->block_cap : n_tokens;

    sae__decoder_row_norms(m, ws->norms, n_threads);
    memset(ws->f_sum, 0, d_sae * sizeof(double));
    memset(ws->g_b_enc, 0, d_sae * sizeof(double));
    memset(ws->last_fired, 0, d_sae * sizeof(uint64_t));
    ws->row_ptr[0] = 0;

    /* The sparse path indexes tokens and features with 32 bits. */
    bool sparse = kernel == SAE_KERNEL_SPARSE && n_tokens <= UINT32_MAX;
    for (size_t t0 = 0; t0 < n_tokens; t0 += block) {
        size_t rows = n_tokens - t0 < block ? n_tokens - t0 : block;
        if (!center_block(m, x, t0, rows, ws, n_threads))
            return SAE_E_NONFINITE;
        size_t active = encode_block(m, t0, rows, ws, n_threads);
        if (t0 == 0 && kernel == SAE_KERNEL_AUTO)
            sparse = n_tokens <= UINT32_MAX &&
                     (double)active <= SAE_SPARSE_MAX_DENSITY * (double)rows * (double)d_sae;
        if (sparse) {
            for (size_t t = t0; t < t0 + rows; t++)
                ws->row_ptr[t + 1] += ws->row_ptr[t];
            /* expect the rest of the batch to be about as dense as what came so far */
            size_t so_far = ws->row_ptr[t0 + rows];
            size_t expect = (size_t)((double)so_far * (double)n_tokens / (double)(t0 + rows));
            int rc = reserve_pairs(ws, expect > so_far ? expect : so_far);
            if (rc != SAE_OK)
                return rc;
            sae__sparse_compress_block(ws, t0, rows, n_threads);
        } else {
            dense_backward_block(m, x, lambda, n_tokens, t0, rows, ws, grad, n_threads);
        }
    }

    if (sparse) {
        sae__sparse_token_phase(m, x, n_tokens, lambda, ws, n_threads);
        sae__sparse_feature_phase(m, n_tokens, lambda, ws, grad, n_threads);
    } else {
        dense_finish_rows(m, n_tokens, lambda, ws, grad, n_threads);
    }
    bias_gradients(m, n_tokens, ws, grad, n_threads);

    /* Loss sums and the gradient norm, each summed in a fixed order. */
    sae_loss_sums sums = {0.0, 0.0, 0.0};
    for (size_t t = 0; t < n_tokens; t++) {
        sums.l1 += ws->l1_tok[t];
        sums.l2 += ws->l2_tok[t];
    }
    /* row_ptr holds prefix sums on the sparse path, counts on the dense one */
    if (sparse) {
        sums.active = (double)ws->row_ptr[n_tokens];
    } else {
        size_t active = 0;
        for (size_t t = 0; t < n_tokens; t++)
            active += ws->row_ptr[t + 1];
        sums.active = (double)active;
    }
    double sumsq = 0.0;
    for (size_t i = 0; i < d_sae; i++)
        sumsq += ws->row_sumsq[i];
    const float *g_b = grad + m->lay.b_enc;
    for (size_t i = 0; i < d_sae; i++)
        sumsq += (double)g_b[i] * g_b[i];
    g_b = grad + m->lay.b_dec;
    for (size_t j = 0; j < d_in; j++)
        sumsq += (double)g_b[j] * g_b[j];
    res->sums = sums;
    res->grad_sumsq = sumsq;
    res->used_sparse = sparse;
    return SAE_OK;
}
