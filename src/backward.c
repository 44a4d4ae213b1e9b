/*
 * Loss and backward: the exact gradients of loss = l2 + lambda * l1 for a batch,
 * and the step's workspace.
 *
 * With xc = x - b_dec, pre = xc W_enc + b_enc, f = ReLU(pre), e = x_hat - x,
 * r_i = ||W_dec[i,:]|| and n tokens:
 *
 *   dL/dx_hat_t   = (2/n) e_t
 *   dL/df_ti      = W_dec[i,:] . dL/dx_hat_t + (lambda/n) r_i
 *   dL/dpre_ti    = dL/df_ti if pre_ti > 0 else 0          (ReLU'(0) = 0)
 *   dL/dW_dec[i,:] = sum_t f_ti dL/dx_hat_t + (lambda/n) (sum_t f_ti) W_dec[i,:] / r_i
 *   dL/dW_enc[:,i] = sum_t dL/dpre_ti xc_t
 *   dL/db_enc_i    = sum_t dL/dpre_ti
 *   dL/db_dec      = sum_t dL/dx_hat_t - W_enc (dL/db_enc)    (both paths; the
 *                    encoder path is one GEMV, not a GEMM)
 *
 * The second term of dL/dW_dec is the gradient through the row norm in the L1
 * term; at r_i = 0 its subgradient 0 is used (as torch's norm backward does).
 * Nothing here is ever n x d_sae x d_in: the L1 term needs only r and f.
 */
#include "internal.h"

#include <cblas.h>
#include <string.h>

static void free_feature_buffers(sae_workspace *ws)
{
    sae__free(ws->norms);
    sae__free(ws->f_sum);
    sae__free(ws->g_b_enc);
    sae__free(ws->g_b_dec);
    sae__free(ws->last_fired);
    ws->norms = NULL;
    ws->f_sum = ws->g_b_enc = ws->g_b_dec = NULL;
    ws->last_fired = NULL;
}

int sae__workspace_reserve(sae_workspace *ws, size_t d_in, size_t d_sae, size_t block)
{
    bool fresh = !ws->norms;
    if (fresh) {
        float *norms = sae__alloc(d_sae * sizeof(float));
        double *f_sum = sae__alloc(d_sae * sizeof(double));
        double *g_b_enc = sae__alloc(d_sae * sizeof(double));
        double *g_b_dec = sae__alloc(d_in * sizeof(double));
        uint64_t *last_fired = sae__alloc(d_sae * sizeof(uint64_t));
        if (!norms || !f_sum || !g_b_enc || !g_b_dec || !last_fired) {
            sae__free(norms);
            sae__free(f_sum);
            sae__free(g_b_enc);
            sae__free(g_b_dec);
            sae__free(last_fired);
            return SAE_E_NOMEM;
        }
        ws->d_in = d_in;
        ws->d_sae = d_sae;
        ws->norms = norms;
        ws->f_sum = f_sum;
        ws->g_b_enc = g_b_enc;
        ws->g_b_dec = g_b_dec;
        ws->last_fired = last_fired;
    }
    if (block <= ws->block_cap)
        return SAE_OK;
    /* The sizes are bounded by SAE_BLOCK_TOKENS times a dimension whose product
     * with the other was checked when the model was created. */
    float *xc = sae__alloc(block * d_in * sizeof(float));
    float *err = sae__alloc(block * d_in * sizeof(float));
    float *f = sae__alloc(block * d_sae * sizeof(float));
    float *df = sae__alloc(block * d_sae * sizeof(float));
    if (!xc || !err || !f || !df) {
        sae__free(xc);
        sae__free(err);
        sae__free(f);
        sae__free(df);
        if (fresh) /* all or nothing: leave the workspace as it was */
            free_feature_buffers(ws);
        return SAE_E_NOMEM;
    }
    sae__free(ws->xc);
    sae__free(ws->err);
    sae__free(ws->f);
    sae__free(ws->df);
    ws->xc = xc;
    ws->err = err;
    ws->f = f;
    ws->df = df;
    ws->block_cap = block;
    return SAE_OK;
}

void sae__workspace_free(sae_workspace *ws)
{
    sae__free(ws->xc);
    sae__free(ws->err);
    sae__free(ws->f);
    sae__free(ws->df);
    free_feature_buffers(ws);
    memset(ws, 0, sizeof *ws);
}

/* The backward pass of one block of rows tokens starting at token t0, after
 * sae__forward_block left xc, f and err = x_hat - x in the workspace.
 * first: this is the batch's first block (GEMMs overwrite rather than add). */
static void backward_block(const sae_model *m, double lambda, size_t n_tokens, size_t t0,
                           size_t rows, bool first, sae_workspace *ws, float *grad)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    const float beta = first ? 0.0f : 1.0f;
    const float scale = (float)(2.0 / (double)n_tokens);
    const float l1_scale = (float)(lambda / (double)n_tokens);
    float *err = ws->err, *f = ws->f, *df = ws->df;

    /* err becomes dL/dx_hat; its column sums feed dL/db_dec. */
    for (size_t t = 0; t < rows; t++)
        for (size_t j = 0; j < d_in; j++) {
            float g = err[t * d_in + j] * scale;
            err[t * d_in + j] = g;
            ws->g_b_dec[j] += g;
        }

    /* dL/df (reconstruction part) = dL/dx_hat W_dec^T: rows x d_sae. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d_sae, (int)d_in, 1.0f,
                err, (int)d_in, sae__w_dec(m), (int)d_in, 0.0f, df, (int)d_sae);

    /* dL/dW_dec (reconstruction part) += f^T dL/dx_hat: d_sae x d_in. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d_sae, (int)d_in, (int)rows, 1.0f,
                f, (int)d_sae, err, (int)d_in, beta, grad + m->lay.w_dec, (int)d_in);

    /* dL/dpre = (dL/df + (lambda/n) r) where f > 0, else 0; feature statistics. */
    const float *norms = ws->norms;
    for (size_t t = 0; t < rows; t++) {
        float *dft = df + t * d_sae;
        const float *ft = f + t * d_sae;
        const uint64_t token = t0 + t + 1;
        for (size_t i = 0; i < d_sae; i++) {
            bool on = ft[i] > 0.0f;
            float g = on ? dft[i] + l1_scale * norms[i] : 0.0f;
            dft[i] = g;
            ws->g_b_enc[i] += g;
            ws->f_sum[i] += ft[i];
            ws->last_fired[i] = on ? token : ws->last_fired[i];
        }
    }

    /* dL/dW_enc (stored transposed, d_sae x d_in) += dL/dpre^T xc. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d_sae, (int)d_in, (int)rows, 1.0f,
                df, (int)d_sae, ws->xc, (int)d_in, beta, grad + m->lay.w_enc_t, (int)d_in);
}

void sae__forward_backward(const sae_model *m, double lambda, const float *x, size_t n_tokens,
                           sae_workspace *ws, float *grad, sae_loss_sums *sums)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    const size_t block = ws->block_cap < n_tokens ? ws->block_cap : n_tokens;

    sae__decoder_row_norms(m, ws->norms);
    memset(ws->f_sum, 0, d_sae * sizeof(double));
    memset(ws->g_b_enc, 0, d_sae * sizeof(double));
    memset(ws->g_b_dec, 0, d_in * sizeof(double));
    memset(ws->last_fired, 0, d_sae * sizeof(uint64_t));

    for (size_t t0 = 0; t0 < n_tokens; t0 += block) {
        size_t rows = n_tokens - t0 < block ? n_tokens - t0 : block;
        sae__forward_block(m, ws->norms, x + t0 * d_in, rows, ws->xc, ws->f, ws->err, sums);
        backward_block(m, lambda, n_tokens, t0, rows, t0 == 0, ws, grad);
    }

    /* The L1 term's gradient through the decoder row norms. */
    const double l1_scale = lambda / (double)n_tokens;
    const float *w_dec = sae__w_dec(m);
    float *g_w_dec = grad + m->lay.w_dec;
    for (size_t i = 0; i < d_sae; i++) {
        if (ws->norms[i] <= 0.0f || ws->f_sum[i] == 0.0)
            continue;
        float c = (float)(l1_scale * ws->f_sum[i] / ws->norms[i]);
        for (size_t j = 0; j < d_in; j++)
            g_w_dec[i * d_in + j] += c * w_dec[i * d_in + j];
    }

    /* Biases: dL/db_enc, and dL/db_dec = direct path - W_enc dL/db_enc. */
    float *g_b_enc = grad + m->lay.b_enc, *g_b_dec = grad + m->lay.b_dec;
    for (size_t i = 0; i < d_sae; i++)
        g_b_enc[i] = (float)ws->g_b_enc[i];
    for (size_t j = 0; j < d_in; j++)
        g_b_dec[j] = (float)ws->g_b_dec[j];
    cblas_sgemv(CblasRowMajor, CblasTrans, (int)d_sae, (int)d_in, -1.0f, sae__w_enc_t(m),
                (int)d_in, g_b_enc, 1, 1.0f, g_b_dec, 1);
}
