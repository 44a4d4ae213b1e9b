/*
 * Loss and backward: the gradients of a batch's loss, on the dense path (CBLAS
 * GEMMs) or the sparse path (sparse.c), for every architecture.
 *
 * With xc = x - b_dec, pre = xc W_enc + b_enc, f = act(pre), e = x_hat - x,
 * r_i = ||W_dec[i,:]|| and n tokens, for the ReLU SAE (loss = l2 + lambda l1):
 *
 *   dL/dx_hat_t    = (2/n) e_t
 *   dL/df_ti       = W_dec[i,:] . dL/dx_hat_t + (lambda/n) r_i
 *   dL/dpre_ti     = dL/df_ti if f_ti > 0 else 0              (ReLU'(0) = 0)
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
 * TopK and BatchTopK drop the L1 terms (f is the selected values, dL/dpre flows
 * through the selected entries) and may add AuxK's rows; JumpReLU drops them
 * too and adds the threshold estimators (header, "Architectures").
 *
 * A transcoder's error is y_hat - y against its target y (d_out wide, like
 * b_dec and W_dec's rows); its encoder reads x itself, so b_dec gets no
 * gradient through the encoder; a skip transcoder adds x W_skip^T to y_hat and
 * dL/dW_skip = dL/dy_hat^T x (one GEMM over the batch).
 *
 * Gated (dense path only) keeps two per-token paths: with g_t = dL/dx_hat_t,
 * a_t = ReLU(pi_gate_t) and h_t = (2/n)(a_t W_dec + b_dec - x_t), the
 * auxiliary reconstruction's gradient through the frozen decoder,
 *   dL/dpi_mag_ti  = W_dec[i,:] . g_t            where f_ti > 0
 *   dL/dpi_gate_ti = W_dec[i,:] . h_t + (lambda/n) r_i   where the gate is open
 *   dL/du_ti       = dL/dpi_gate_ti + exp(r_mag_i) dL/dpi_mag_ti  (u = xc W_enc)
 *   dL/dr_mag_i    = sum_t dL/dpi_mag_ti (f_ti - b_mag_i)
 *                  = W_dec[i,:] . (sum_t f_ti g_t) - b_mag_i dL/db_mag_i
 * (the first sum is dL/dW_dec's reconstruction part, so f is not kept), and
 * the norm term of dL/dW_dec takes sum_t a_ti in place of sum_t f_ti.
 *
 * Both paths run the forward pass of forward.c (sae__encode_block) in blocks
 * of SAE_BLOCK_TOKENS tokens (BatchTopK: the whole batch), with one SGEMM each:
 * the encoder is dense whatever the sparsity. The first block's density picks
 * the path: the dense one decodes with sae__forward_decode and takes the
 * gradients with CBLAS here; the sparse one compresses each block to its
 * active pairs and decodes and differentiates over them (sparse.c).
 * Parallel loops split work so that every sum is taken in a fixed order (per
 * token over features, or per feature over tokens): results do not depend on
 * the thread count, only BLAS's own threading can change bits.
 */
#include "internal.h"
#include "parallel.h"
#include "simd.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---- dL/dpre on the dense path (vectorised) ------------------------------------ */

/* One token's dL/dpre: g[i] = g[i] + add * r[i] where the mask bit of i is
 * set, else 0 (g holds dL/df's reconstruction part, add the L1 term's
 * lambda / n). */
static void masked_dpre_portable(float *g, const uint16_t *mask, const float *r, float add,
                                 size_t d)
{
    for (size_t i = 0; i < d; i++)
        g[i] = (mask[i / 16] >> (i % 16)) & 1u ? g[i] + add * r[i] : 0.0f;
}

#ifdef SAE_HAVE_AVX512
SAE_AVX512 static void masked_dpre_avx512(float *g, const uint16_t *mask, const float *r,
                                          float add, size_t d)
{
    const __m512 av = _mm512_set1_ps(add);
    for (size_t i = 0; i < d; i += 16) {
        __mmask16 mk = sae__lanes_below(d, i);
        __mmask16 on = (__mmask16)(mask[i / 16] & mk);
        __m512 v = _mm512_maskz_loadu_ps(on, g + i);
        v = _mm512_maskz_fmadd_ps(on, av, _mm512_maskz_loadu_ps(on, r + i), v);
        _mm512_mask_storeu_ps(g + i, mk, v);
    }
}
#endif

/* ---- the bias gradients (both paths) ------------------------------------------- */

/* dL/db_dec: the direct path (column sums of dL/dx_hat over the real tokens, in
 * token order, by groups of 16 columns so each pass reads whole cache lines),
 * then minus W_enc dL/db_enc. Writes both bias gradients. */
enum { BIAS_GROUP = 16 };

typedef struct bias_task {
    const sae_model *m;
    sae_workspace *ws;
    size_t n_tokens;
} bias_task;

static void bias_groups_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const bias_task *b = ctx;
    const size_t d_out = b->m->d_out;
    for (size_t gi = begin; gi < end; gi++) {
        size_t j0 = gi * BIAS_GROUP, width = d_out - j0 < BIAS_GROUP ? d_out - j0 : BIAS_GROUP;
        double acc[BIAS_GROUP] = {0};
        for (size_t t = 0; t < b->n_tokens; t++) {
            const float *row = b->ws->dxh + t * d_out + j0;
            for (size_t j = 0; j < width; j++)
                acc[j] += row[j];
        }
        for (size_t j = 0; j < width; j++)
            b->ws->g_b_dec[j0 + j] = acc[j];
    }
}

static int bias_gradients(const sae_model *m, const sae_step_config *cfg, size_t n_tokens,
                          sae_workspace *ws, float *grad)
{
    const size_t d_in = m->d_in, d_out = m->d_out, d_sae = m->d_sae;
    float *g_b_enc = grad + m->lay.b_enc, *g_b_dec = grad + m->lay.b_dec;
    bias_task b = {m, ws, n_tokens};
    sae__parallel_for(cfg->pool, (d_out + BIAS_GROUP - 1) / BIAS_GROUP, bias_groups_range, &b);
    for (size_t i = 0; i < d_sae; i++)
        g_b_enc[i] = (float)ws->g_b_enc[i];
    for (size_t j = 0; j < d_out; j++)
        g_b_dec[j] = (float)ws->g_b_dec[j];
    if (m->kind != SAE_KIND_AUTOENCODER)
        return SAE_OK; /* a transcoder's encoder does not read b_dec */
    /* the encoder's path: minus W_enc times sum_t dL/du_t, which is dL/db_enc
     * (Gated: dL/db_gate + exp(r_mag) dL/db_mag, kept in col_sum here) */
    const float *g_u = g_b_enc;
    if (m->arch == SAE_ARCH_GATED) {
        for (size_t i = 0; i < d_sae; i++)
            ws->col_sum[i] = (float)(ws->g_b_enc[i] + (double)ws->mag_scale[i] * ws->g_b_mag[i]);
        g_u = ws->col_sum;
    }
    if (!cfg->par || !cfg->par->features) {
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)d_sae, (int)d_in, -1.0f, sae__w_enc_t(m),
                    (int)d_in, g_u, 1, 1.0f, g_b_dec, 1);
        return SAE_OK;
    }
    /* feature shards: W_enc dL/du sums over every shard's features */
    return sae__par_enc_term(cfg->par, m, g_u, g_b_dec);
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

/* What the dense path's loops share. */
typedef struct dense_task {
    const sae_model *m;
    const sae_step_config *cfg;
    sae_workspace *ws;
    const float *x;       /* the target: x, or a transcoder's y (n x d_out) */
    float *grad;
    size_t n_tokens, t0;
    size_t rows;          /* tokens of the block */
    float scale, l1_scale;
} dense_task;

/* last_fired[i] = 1 + the last token of the block where feature i fired, for
 * the features that fired in it; scans each 16-feature chunk backwards. */
static void last_fired_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const dense_task *d = ctx;
    sae_workspace *ws = d->ws;
    const size_t chunks = ws->mask_chunks, d_sae = ws->d_sae, rows = d->rows;
    for (size_t c = begin; c < end; c++) {
        size_t width = d_sae - 16 * c < 16 ? d_sae - 16 * c : 16;
        unsigned unresolved = (1u << width) - 1u;
        for (size_t t = rows; t-- > 0 && unresolved;) {
            unsigned found = ws->mask[t * chunks + c] & unresolved;
            unresolved &= ~found;
            while (found) {
                unsigned bit = (unsigned)__builtin_ctz(found);
                ws->last_fired[16 * c + bit] = d->t0 + t + 1;
                found &= found - 1;
            }
        }
    }
}

/* JumpReLU: add the block's band entries to dL/dtheta_i: for each (t, i) with
 * |pre - theta_i| < eps/2, -(theta_i/eps) dL/df_ti - lambda / (n eps), where
 * ws->f holds dL/df. By 16-feature chunks, each over tokens in order. */
static void theta_grad_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const dense_task *d = ctx;
    sae_workspace *ws = d->ws;
    const size_t chunks = ws->mask_chunks, d_sae = ws->d_sae, rows = d->rows;
    const double inv_eps = 1.0 / d->cfg->bandwidth;
    const double l0_term = -d->cfg->lambda / ((double)d->n_tokens * d->cfg->bandwidth);
    for (size_t c = begin; c < end; c++)
        for (size_t t = 0; t < rows; t++) {
            unsigned bits = ws->band[t * chunks + c];
            while (bits) {
                size_t i = 16 * c + (size_t)__builtin_ctz(bits);
                ws->theta_grad[i] += -(double)ws->theta[i] * inv_eps * ws->f[t * d_sae + i] + l0_term;
                bits &= bits - 1;
            }
        }
}

/* dL/dx_hat = (2/n)(x_hat - x) in place, and each token's squared error, for
 * the rows of the block starting at dxh row d->row0 (row0 + t0: the block's
 * tokens; n_tokens + t0: their auxiliary rows). */
typedef struct error_task {
    const dense_task *d;
    size_t row0;
} error_task;

static void error_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const error_task *e_task = ctx;
    const dense_task *d = e_task->d;
    const size_t d_out = d->m->d_out;
    for (size_t t = begin; t < end; t++) {
        float *g = d->ws->dxh + (e_task->row0 + t) * d_out;
        const float *xt = d->x + (d->t0 + t) * d_out;
        double l2 = 0.0;
        for (size_t j = 0; j < d_out; j++) {
            float e = g[j] - xt[j];
            l2 += (double)e * e;
            g[j] = e * d->scale;
        }
        d->ws->l2_tok[e_task->row0 + t] = l2;
    }
}

typedef void (*masked_dpre_fn)(float *, const uint16_t *, const float *, float, size_t);

static masked_dpre_fn pick_masked_dpre(void)
{
#ifdef SAE_HAVE_AVX512
    return sae__use_avx512() ? masked_dpre_avx512 : masked_dpre_portable;
#else
    return masked_dpre_portable;
#endif
}

/* dL/dpre from dL/df in place (ws->f holds dL/df here). */
static void dpre_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const dense_task *d = ctx;
    sae_workspace *ws = d->ws;
    masked_dpre_fn masked_dpre = pick_masked_dpre();
    for (size_t t = begin; t < end; t++)
        masked_dpre(ws->f + t * ws->d_sae, ws->mask + t * ws->mask_chunks, ws->norms, d->l1_scale,
                    ws->d_sae);
}

/* x_hat (the block's rows of dxh from dxh_row0) of features f, then
 * dL/dx_hat and the squared errors: y_hat for transcoders, with the skip term.
 * Feature shards each decode their features (b_dec and the skip term on
 * rank 0), and the sum over shards is taken before the errors. */
static int decode_errors(const dense_task *d, const float *f, size_t dxh_row0)
{
    const sae_model *m = d->m;
    sae_par_step *par = d->cfg->par;
    const bool shards = par && par->features, base = !shards || par->features->rank == 0;
    float *out = d->ws->dxh + dxh_row0 * m->d_out;
    sae__forward_decode_onto(m, &d->ws->gemm, d->cfg->pool, f, d->rows,
                             base ? sae__b_dec(m) : NULL, out);
    if (base)
        sae__forward_skip(m, d->ws->xc + d->t0 * m->d_in, d->rows, out);
    if (shards) {
        int rc = sae__par_reconstruct(par, out, d->rows, m->d_out);
        if (rc != SAE_OK)
            return rc;
    }
    error_task e = {d, dxh_row0};
    sae__parallel_for(d->cfg->pool, d->rows, error_range, &e);
    return SAE_OK;
}

static int dense_backward_block(const sae_model *m, const sae_step_config *cfg, const float *x,
                                size_t n_tokens, size_t t0, size_t rows, sae_workspace *ws,
                                float *grad)
{
    const size_t d_in = m->d_in, d_out = m->d_out, d_sae = m->d_sae;
    const float beta = t0 == 0 ? 0.0f : 1.0f;
    const float *f = ws->f;             /* rows x d_sae: the features */
    float *dxh = ws->dxh + t0 * d_out;  /* rows x d_out: x_hat, then dL/dx_hat */
    /* n_tokens: the tokens the loss averages over (a data-parallel step's global batch) */
    dense_task d = {.m = m, .cfg = cfg, .ws = ws, .x = x, .grad = grad, .n_tokens = n_tokens,
                    .t0 = t0, .rows = rows, .scale = (float)(2.0 / (double)n_tokens),
                    .l1_scale = m->arch == SAE_ARCH_RELU ? (float)(cfg->lambda / (double)n_tokens)
                                                         : 0.0f};

    /* x_hat, then dL/dx_hat = (2/n)(x_hat - x) and the squared error per token
     * (feature shards: each decodes its features, b_dec on rank 0, summed) */
    int rc = decode_errors(&d, f, t0);
    if (rc != SAE_OK)
        return rc;

    /* dL/dW_dec (reconstruction part) += f^T dL/dx_hat; feature statistics */
    sae__gemm_use_f32(&ws->gemm, cfg->pool, true, false, d_sae, d_out, rows, 1.0f, f, d_sae, dxh,
                      d_out, beta, grad + m->lay.w_dec, d_out);
    add_column_sums(f, rows, d_sae, ws, ws->f_sum);
    sae__parallel_for(cfg->pool, ws->mask_chunks, last_fired_range, &d);

    /* From here ws->f holds dL/df = dL/dx_hat W_dec^T (f itself is no longer
     * needed: the mask keeps where f > 0), then dL/dpre, and its column sums
     * are dL/db_enc. */
    float *g_pre = ws->f;
    sae__gemm_use_f32(&ws->gemm, cfg->pool, false, true, rows, d_sae, d_out, 1.0f, dxh, d_out,
                      sae__w_dec(m), d_out, 0.0f, g_pre, d_sae);
    if (m->arch == SAE_ARCH_JUMPRELU)
        sae__parallel_for(cfg->pool, ws->mask_chunks, theta_grad_range, &d);
    sae__parallel_for(cfg->pool, rows, dpre_range, &d);
    add_column_sums(g_pre, rows, d_sae, ws, ws->g_b_enc);

    /* dL/dW_enc (stored transposed) += dL/dpre^T xc */
    sae__gemm_use_f32(&ws->gemm, cfg->pool, true, false, d_sae, d_in, rows, 1.0f, g_pre, d_sae,
                      ws->xc + t0 * d_in, d_in, beta, grad + m->lay.w_enc_t, d_in);
    return SAE_OK;
}

/* Gated: the gradient of the open gates, dL/dpi_gate = dL/da + (lambda/n) r
 * where the gate is open (band), else 0, in place (ws->gate holds dL/da). */
static void gate_grad_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const dense_task *d = ctx;
    sae_workspace *ws = d->ws;
    const size_t d_sae = ws->d_sae;
    const float l1 = (float)(d->cfg->lambda / (double)d->n_tokens);
    for (size_t t = begin; t < end; t++) {
        float *g = ws->gate + t * d_sae;
        const uint16_t *open = ws->band + t * ws->mask_chunks;
        for (size_t i = 0; i < d_sae; i++)
            g[i] = (open[i / 16] >> (i % 16)) & 1u ? g[i] + l1 * ws->norms[i] : 0.0f;
    }
}

/* Gated: dL/dpi_mag = dL/df where f > 0 (mask), in place in ws->f, and then
 * (once its column sums are taken) dL/du = dL/dpi_gate + exp(r_mag) dL/dpi_mag. */
static void gated_dmag_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const dense_task *d = ctx;
    sae_workspace *ws = d->ws;
    masked_dpre_fn masked = pick_masked_dpre();
    for (size_t t = begin; t < end; t++) /* no L1 term on this path: add 0 */
        masked(ws->f + t * ws->d_sae, ws->mask + t * ws->mask_chunks, ws->norms, 0.0f, ws->d_sae);
}

static void gated_du_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const dense_task *d = ctx;
    sae_workspace *ws = d->ws;
    const size_t d_sae = ws->d_sae;
    for (size_t t = begin; t < end; t++) {
        float *g = ws->f + t * d_sae;
        const float *gate = ws->gate + t * d_sae;
        for (size_t i = 0; i < d_sae; i++)
            g[i] = gate[i] + ws->mag_scale[i] * g[i];
    }
}

/* Gated's block on the dense path. ws->f holds f and ws->gate the gate values
 * a = ReLU(pi_gate); the band flags say which gates are open. */
static int dense_gated_block(const sae_model *m, const sae_step_config *cfg, const float *x,
                             size_t n_tokens, size_t n_loss, size_t t0, size_t rows,
                             sae_workspace *ws, float *grad)
{
    const size_t d_in = m->d_in, d_out = m->d_out, d_sae = m->d_sae;
    const float beta = t0 == 0 ? 0.0f : 1.0f;
    float *dxh = ws->dxh + t0 * d_out;                 /* dL/dx_hat */
    float *dah = ws->dxh + (n_tokens + t0) * d_out;    /* the auxiliary path's h */
    /* d.n_tokens: the tokens the loss averages over (a data-parallel step's
     * global batch); n_tokens: this rank's, the rows of the workspace */
    dense_task d = {.m = m, .cfg = cfg, .ws = ws, .x = x, .grad = grad, .n_tokens = n_loss,
                    .t0 = t0, .rows = rows, .scale = (float)(2.0 / (double)n_loss)};

    /* both reconstructions and their errors: x_hat from f, the auxiliary one
     * from a through the same (frozen) W_dec and b_dec (feature shards: two
     * sums over the shards) */
    int rc = decode_errors(&d, ws->f, t0);
    if (rc == SAE_OK)
        rc = decode_errors(&d, ws->gate, n_tokens + t0);
    if (rc != SAE_OK)
        return rc;

    /* dL/dW_dec += f^T dL/dx_hat (the auxiliary term trains no decoder);
     * sum_t a_ti for the norm term; which features fired */
    sae__gemm_use_f32(&ws->gemm, cfg->pool, true, false, d_sae, d_out, rows, 1.0f, ws->f, d_sae,
                      dxh, d_out, beta, grad + m->lay.w_dec, d_out);
    add_column_sums(ws->gate, rows, d_sae, ws, ws->gate_sum);
    sae__parallel_for(cfg->pool, ws->mask_chunks, last_fired_range, &d);

    /* the gate path: dL/da = h W_dec^T over a, then dL/dpi_gate, summed into
     * dL/db_gate (g_b_enc) */
    sae__gemm_use_f32(&ws->gemm, cfg->pool, false, true, rows, d_sae, d_out, 1.0f, dah, d_out,
                      sae__w_dec(m), d_out, 0.0f, ws->gate, d_sae);
    sae__parallel_for(cfg->pool, rows, gate_grad_range, &d);
    add_column_sums(ws->gate, rows, d_sae, ws, ws->g_b_enc);

    /* the magnitude path: dL/df = g W_dec^T over f, dL/dpi_mag, summed into
     * dL/db_mag; then dL/du */
    sae__gemm_use_f32(&ws->gemm, cfg->pool, false, true, rows, d_sae, d_out, 1.0f, dxh, d_out,
                      sae__w_dec(m), d_out, 0.0f, ws->f, d_sae);
    sae__parallel_for(cfg->pool, rows, gated_dmag_range, &d);
    add_column_sums(ws->f, rows, d_sae, ws, ws->g_b_mag);
    sae__parallel_for(cfg->pool, rows, gated_du_range, &d);

    /* dL/dW_enc (stored transposed) += dL/du^T xc */
    sae__gemm_use_f32(&ws->gemm, cfg->pool, true, false, d_sae, d_in, rows, 1.0f, ws->f, d_sae,
                      ws->xc + t0 * d_in, d_in, beta, grad + m->lay.w_enc_t, d_in);
    return SAE_OK;
}

/* After the dense blocks: the L1 term's gradient through the decoder row norms
 * (ReLU only), and each feature's squared gradient norm. */
static void finish_rows_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const dense_task *d = ctx;
    const sae_model *m = d->m;
    const size_t d_in = m->d_in, d_out = m->d_out;
    const bool gated = m->arch == SAE_ARCH_GATED;
    const double l1_scale = m->arch == SAE_ARCH_RELU || gated
                                ? d->cfg->lambda / (double)d->n_tokens : 0.0;
    const float *w_dec = sae__w_dec(m);
    float *g_w_dec = d->grad + m->lay.w_dec, *g_w_enc = d->grad + m->lay.w_enc_t;
    sae_workspace *ws = d->ws;
    for (size_t i = begin; i < end; i++) {
        /* the norm term: sum_t f_ti, or Gated's sum_t a_ti, over r_i */
        double mass = gated ? ws->gate_sum[i] : ws->f_sum[i];
        float c = 0.0f;
        if (ws->norms[i] > 0.0f && mass != 0.0)
            c = (float)(l1_scale * mass / ws->norms[i]);
        float *gd = g_w_dec + i * d_out, *ge = g_w_enc + i * d_in;
        const float *w = w_dec + i * d_out;
        double sumsq = 0.0, w_dot_g = 0.0;
        for (size_t j = 0; j < d_out; j++) {
            w_dot_g += (double)w[j] * gd[j];
            float g = gd[j] + c * w[j];
            gd[j] = g;
            sumsq += (double)g * g;
        }
        for (size_t j = 0; j < d_in; j++)
            sumsq += (double)ge[j] * ge[j];
        if (gated) /* dL/dr_mag_i = W_dec[i,:] . sum_t f_ti g_t - b_mag_i dL/db_mag_i */
            ws->g_r_mag[i] = w_dot_g - (double)sae__b_mag(m)[i] * ws->g_b_mag[i];
        ws->row_sumsq[i] = sumsq;
    }
}

static void dense_finish_rows(const sae_model *m, const sae_step_config *cfg, size_t n_tokens,
                              sae_workspace *ws, float *grad)
{
    dense_task d = {.m = m, .cfg = cfg, .ws = ws, .grad = grad, .n_tokens = n_tokens};
    sae__parallel_for(cfg->pool, m->d_sae, finish_rows_range, &d);
}

/* ---- AuxK (sparse path) ---------------------------------------------------------- */

/* A failure of this rank alone: a single process stops; a distributed step
 * records it and goes on to its next exchange, where every rank stops. */
static int local_failure(const sae_step_config *cfg, int rc)
{
    if (rc == SAE_OK || !cfg->par)
        return rc;
    if (cfg->par->status == SAE_OK)
        cfg->par->status = rc;
    return SAE_OK;
}

static bool failed(const sae_step_config *cfg) { return cfg->par && cfg->par->status != SAE_OK; }

/* The sparse decoder of rows [t0, t0 + count) of ws->dxh: scale * (x_hat -
 * target) where x_hat = base + the pairs' rows of W_dec. Feature shards each
 * decode their pairs (base on rank 0), the sum is taken, then the error. */
static int sparse_decode(const sae_model *m, const sae_step_config *cfg, const float *target,
                         size_t t0, size_t count, const float *base, float scale,
                         sae_workspace *ws)
{
    sae__sparse_token_phase(m, target, t0, count, base, scale, ws, cfg->pool);
    return SAE_OK;
}

/* The same for feature shards: each decodes its pairs (base on rank 0), the
 * sum is taken, then the error against target_scale * target (the target
 * rows may be overwritten by the decoder: AuxK's residuals come from rows
 * 0 .. n - 1 of dL/dx_hat). */
static int sparse_decode_shards(const sae_model *m, const sae_step_config *cfg,
                                const float *target, float target_scale, size_t t0, size_t count,
                                const float *base, float scale, sae_workspace *ws)
{
    sae_par_step *par = cfg->par;
    if (!failed(cfg))
        sae__sparse_token_phase(m, NULL, t0, count, par->features->rank == 0 ? base : ws->zeros,
                                1.0f, ws, cfg->pool);
    int rc = sae__par_reconstruct(par, ws->dxh + t0 * m->d_out, count, m->d_out);
    if (rc == SAE_OK)
        sae__par_error_rows(ws, target, target_scale, t0, count, m->d_out, scale, cfg->pool);
    return rc;
}

/* After the main token phase: append AuxK's picks as rows n .. 2n - 1 of the
 * CSR, decode them without b_dec against the detached residual e = x - x_hat,
 * and leave dL/de_aux in dxh rows n .. 2n - 1. Returns the rows the feature
 * phase must cover (n without AuxK) and sets *aux_loss (normalised). The
 * normalisation is over the loss's tokens n_loss (a data-parallel step's
 * global batch, whose sums the ranks add up). */
static int add_auxk_rows(const sae_model *m, const sae_step_config *cfg, size_t n_tokens,
                         size_t n_loss, sae_workspace *ws, size_t *n_rows, double *aux_loss)
{
    const size_t d_out = m->d_out;
    *n_rows = n_tokens;
    *aux_loss = 0.0;
    size_t picks = 0;
    for (size_t t = 0; t < n_tokens; t++)
        picks += ws->aux_count[t];
    if (picks == 0 && !cfg->par) /* (distributed: the ranks decide together) */
        return SAE_OK;
    /* targets e_t = x_t - x_hat_t = -(n/2) dL/dx_hat_t (y - y_hat for transcoders),
     * and their variance */
    float *target = ws->dxh + n_tokens * d_out;
    const float back = -(float)((double)n_loss / 2.0);
    double total = 0.0;
    for (size_t t = 0; t < n_tokens; t++)
        total += ws->l2_tok[t];
    double *mean = ws->aux_mean;
    memset(mean, 0, d_out * sizeof(double));
    for (size_t t = 0; t < n_tokens; t++)
        for (size_t j = 0; j < d_out; j++) {
            float e = ws->dxh[t * d_out + j] * back;
            target[t * d_out + j] = e;
            mean[j] += e;
        }
    int rc = sae__par_auxk_sums(cfg->par, &picks, &total, mean, d_out);
    if (rc != SAE_OK || picks == 0)
        return rc;
    double mean_sq = 0.0;
    for (size_t j = 0; j < d_out; j++) {
        mean[j] /= (double)n_loss;
        mean_sq += mean[j] * mean[j];
    }
    double denom = total / (double)n_loss - mean_sq;
    if (!(denom > 0.0))
        return SAE_OK; /* a residual without variance: AuxK is 0 (as the anchors' nan_to_num) */
    size_t main_pairs = ws->row_ptr[n_tokens], my_picks = 0;
    for (size_t t = 0; t < n_tokens; t++)
        my_picks += ws->aux_count[t];
    rc = local_failure(cfg, sae__workspace_reserve_pairs(ws, main_pairs + my_picks, main_pairs));
    if (rc != SAE_OK)
        return rc;
    for (size_t t = 0; t < n_tokens && !failed(cfg); t++) {
        size_t at = ws->row_ptr[n_tokens + t], count = ws->aux_count[t];
        memcpy(ws->feat + at, ws->aux_feat + t * ws->aux_cap, count * sizeof(uint32_t));
        memcpy(ws->fval + at, ws->aux_fval + t * ws->aux_cap, count * sizeof(float));
        ws->row_ptr[n_tokens + t + 1] = at + count;
    }
    float scale = (float)(2.0 * cfg->auxk_coeff / ((double)n_loss * denom));
    if (cfg->par && cfg->par->features)
        rc = sparse_decode_shards(m, cfg, ws->dxh, back, n_tokens, n_tokens, ws->zeros, scale, ws);
    else
        rc = sparse_decode(m, cfg, target, n_tokens, n_tokens, ws->zeros, scale, ws);
    if (rc != SAE_OK)
        return rc;
    double aux = 0.0;
    for (size_t t = 0; t < n_tokens; t++)
        aux += ws->l2_tok[n_tokens + t];
    *aux_loss = aux / (double)n_loss / denom;
    *n_rows = 2 * n_tokens;
    return SAE_OK;
}

/* ---- the pass ------------------------------------------------------------------ */

/* A block whose encoder failed on this rank: no features, no picks, so
 * that the exchanges it still joins read defined values. */
static void empty_block(const sae_encoded *out, size_t rows, size_t d_sae, size_t *pairs)
{
    memset(out->f, 0, rows * d_sae * sizeof(float));
    memset(out->mask, 0, rows * out->mask_chunks * sizeof(uint16_t));
    for (size_t t = 0; t < rows; t++) {
        out->l1[t] = 0.0;
        out->active[t] = 0;
        out->pairs[t] = 0;
        if (out->aux.count)
            out->aux.count[t] = 0;
    }
    *pairs = 0;
}

/* The forward pass of tokens [t0, t0 + rows) into the workspace; each token's
 * pair count goes to row_ptr[t + 1]. *pairs = the block's pairs. Feature
 * shards select TopK and AuxK's picks across shards here. */
static int forward_block(const sae_model *m, const sae_step_config *cfg,
                         const sae_activation *act, const float *x, size_t t0, size_t rows,
                         sae_workspace *ws, size_t *pairs, sae_backward_result *res)
{
    const size_t d_in = m->d_in;
    const bool gated = m->arch == SAE_ARCH_GATED;
    sae_encoded out = {
        .xc = ws->xc + t0 * d_in, .f = ws->f, .mask = ws->mask,
        .band = m->arch == SAE_ARCH_JUMPRELU || gated ? ws->band : NULL,
        .gate = gated ? ws->gate : NULL, .gate_l1 = gated ? ws->gate_tok + t0 : NULL,
        .mask_chunks = ws->mask_chunks, .l1 = ws->l1_tok + t0,
        .active = ws->active_tok + t0, .pairs = ws->row_ptr + t0 + 1};
    if (cfg->dead)
        out.aux = (sae_aux_picks){ws->aux_feat + t0 * ws->aux_cap, ws->aux_fval + t0 * ws->aux_cap,
                                  ws->aux_count + t0, ws->aux_cap};
    out.gemm = &ws->gemm;
    if (ws->bf16) {
        out.xc16 = ws->xc16 + t0 * d_in;
        out.w_enc16 = ws->w_enc16;
    }
    int rc = sae__encode_block(m, act, cfg->pool, ws->scratch, x + t0 * d_in, rows, &out, pairs);
    if (rc != SAE_OK && !cfg->par)
        return rc;
    if (rc != SAE_OK) { /* this rank alone (an allocation): the block's exchanges, which the
                           other ranks make, carry its status, with an empty block */
        rc = local_failure(cfg, rc);
        empty_block(&out, rows, m->d_sae, pairs);
    }
    rc = sae__par_topk_block(cfg->par, m, &out, rows, ws->norms);
    if (rc == SAE_OK && cfg->dead)
        rc = sae__par_aux_block(cfg->par, &out.aux, rows, cfg->k_aux);
    if (rc == SAE_OK && sae__batch_selected(m->arch)) /* the block is the whole batch */
        rc = sae__batch_topk(ws->f, rows, m->d_sae, m->k, ws->norms, &out, ws->ties,
                             ws->radix_hist, cfg->pool, cfg->par, &res->batch_min_kept);
    if (rc == SAE_OK && cfg->par && cfg->par->features && m->arch == SAE_ARCH_TOPK) {
        *pairs = 0; /* TopK kept fewer than the local selection */
        for (size_t t = 0; t < rows; t++)
            *pairs += out.pairs[t];
    }
    return rc;
}

/* The sparse path's share of a block: the CSR row starts of its tokens (the
 * prefix sum of their pair counts), then its pairs. */
static int sparse_block(const sae_model *m, const sae_step_config *cfg, size_t n_tokens,
                        size_t t0, size_t rows, sae_workspace *ws)
{
    for (size_t t = t0; t < t0 + rows; t++)
        ws->row_ptr[t + 1] += ws->row_ptr[t];
    if (failed(cfg))
        return SAE_OK;
    /* expect the rest of the batch to be about as dense as what came so far */
    size_t so_far = ws->row_ptr[t0 + rows];
    size_t expect = (size_t)((double)so_far * (double)n_tokens / (double)(t0 + rows));
    int rc = sae__workspace_reserve_pairs(ws, expect > so_far ? expect : so_far, ws->row_ptr[t0]);
    if (rc == SAE_OK)
        sae__sparse_compress_block(ws, t0, rows, m->arch == SAE_ARCH_JUMPRELU, cfg->pool);
    return local_failure(cfg, rc);
}

/* The sparse path's forward pass with the fused encoder (encode_fused.c): xc
 * (and its bf16 rounding), then the batch's pairs straight into the CSR, the
 * per-token L1 sums and active counts, and AuxK's picks. SAE_FUSED_TOO_DENSE
 * when ReLU or JumpReLU is denser than max_density (the dense path is then
 * the faster one). */
static int fused_forward(const sae_model *m, const sae_step_config *cfg,
                         const sae_activation *act, const float *x, size_t n_tokens,
                         double max_density, sae_workspace *ws, sae_backward_result *res)
{
    uint16_t *xc16 = ws->bf16 ? ws->xc16 : NULL;
    int rc = sae__center(m, cfg->pool, x, n_tokens, ws->xc, xc16);
    if (rc != SAE_OK)
        return rc;
    sae_fused_args args = {act, m->d_in, n_tokens, ws->xc, sae__w_enc_t(m), xc16,
                           ws->bf16 ? ws->w_enc16 : NULL, max_density};
    for (;;) {
        sae_fused_out out = {.row_ptr = ws->row_ptr, .feat = ws->feat, .fval = ws->fval,
                             .cap = ws->nnz_cap, .l1 = ws->l1_tok, .active = ws->active_tok};
        if (cfg->dead) {
            out.aux_feat = ws->aux_feat;
            out.aux_fval = ws->aux_fval;
            out.aux_count = ws->aux_count;
            out.aux_cap = ws->aux_cap;
        }
        rc = sae__encode_fused(ws->fused, &args, ws->team, cfg->pool, &out);
        if (rc == SAE_FUSED_OUT_FULL) { /* once, when the batch is denser than ever */
            rc = sae__workspace_reserve_pairs(ws, out.pairs, 0);
            if (rc != SAE_OK)
                return rc;
            continue;
        }
        if (rc == SAE_OK && m->arch == SAE_ARCH_BATCHTOPK)
            res->batch_min_kept = out.batch_min_kept;
        return rc;
    }
}

/* The sparse path's decoder over the batch: y_hat = b_dec + sum_k f_k
 * W_dec[i_k,:] (+ a skip transcoder's x W_skip^T, added to b_dec's rows
 * first), then scale * (y_hat - target) in ws->dxh. */
static int sparse_decode_output(const sae_model *m, const sae_step_config *cfg,
                                const float *target, size_t n_tokens, float scale,
                                sae_workspace *ws)
{
    const bool shards = cfg->par && cfg->par->features;
    if (m->kind != SAE_KIND_SKIP_TRANSCODER)
        return shards ? sparse_decode_shards(m, cfg, target, 1.0f, 0, n_tokens, sae__b_dec(m),
                                             scale, ws)
                      : sparse_decode(m, cfg, target, 0, n_tokens, sae__b_dec(m), scale, ws);
    /* the skip term (feature shards: rank 0's, as b_dec) */
    const size_t d_out = m->d_out;
    if (!shards || cfg->par->features->rank == 0) {
        for (size_t t = 0; t < n_tokens; t++)
            memcpy(ws->dxh + t * d_out, sae__b_dec(m), d_out * sizeof(float));
        sae__forward_skip(m, ws->xc, n_tokens, ws->dxh);
    }
    return shards ? sparse_decode_shards(m, cfg, target, 1.0f, 0, n_tokens, NULL, scale, ws)
                  : sparse_decode(m, cfg, target, 0, n_tokens, NULL, scale, ws);
}

/* A skip transcoder's dL/dW_skip = dL/dy_hat^T x (d_out x d_in), over the
 * batch's rows of dxh (dL/dy_hat) and xc (x itself); returns its squared norm. */
static double skip_gradient(const sae_model *m, size_t n_tokens, const sae_workspace *ws,
                            float *grad)
{
    if (m->kind != SAE_KIND_SKIP_TRANSCODER)
        return 0.0;
    float *g = grad + m->lay.w_skip;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m->d_out, (int)m->d_in,
                (int)n_tokens, 1.0f, ws->dxh, (int)m->d_out, ws->xc, (int)m->d_in, 0.0f, g,
                (int)m->d_in);
    double sumsq = 0.0;
    for (size_t k = 0; k < m->lay.w_skip_count; k++)
        sumsq += (double)g[k] * g[k];
    return sumsq;
}

/* The loss sums and the gradient norm, each summed in a fixed order, and
 * JumpReLU's log-threshold gradients dL/dt_i = theta_i dL/dtheta_i; Gated's
 * magnitude-path gradients. */
static void finish_sums(const sae_model *m, size_t n_tokens, sae_workspace *ws, float *grad,
                        sae_backward_result *res)
{
    sae_loss_sums sums = {0.0, 0.0, 0.0, 0.0, 0.0};
    const bool gated = m->arch == SAE_ARCH_GATED;
    for (size_t t = 0; t < n_tokens; t++) {
        sums.l1 += ws->l1_tok[t];
        sums.l2 += ws->l2_tok[t];
        sums.active += (double)ws->active_tok[t];
        if (gated) {
            sums.gate += ws->gate_tok[t];
            sums.extra += ws->l2_tok[n_tokens + t];
        }
    }
    if (m->arch == SAE_ARCH_MATRYOSHKA)
        sums.extra = sae__matryoshka_inner_l2(m, n_tokens, ws);
    double sumsq = res->grad_sumsq; /* what the pass summed already (W_skip) */
    for (size_t i = 0; i < m->d_sae; i++)
        sumsq += ws->row_sumsq[i];
    const float *g_b = grad + m->lay.b_enc;
    for (size_t i = 0; i < m->d_sae; i++)
        sumsq += (double)g_b[i] * g_b[i];
    g_b = grad + m->lay.b_dec;
    for (size_t j = 0; j < m->d_out; j++)
        sumsq += (double)g_b[j] * g_b[j];
    float *g_t = grad + m->lay.log_thr;
    for (size_t i = 0; i < m->lay.log_thr_count; i++) {
        g_t[i] = (float)((double)ws->theta[i] * ws->theta_grad[i]);
        sumsq += (double)g_t[i] * g_t[i];
    }
    float *g_r = grad + m->lay.r_mag, *g_m = grad + m->lay.b_mag;
    for (size_t i = 0; i < m->lay.gated_count; i++) {
        g_r[i] = (float)ws->g_r_mag[i];
        g_m[i] = (float)ws->g_b_mag[i];
        sumsq += (double)g_r[i] * g_r[i] + (double)g_m[i] * g_m[i];
    }
    res->sums = sums;
    res->grad_sumsq = sumsq;
}

/* One call of sae__forward_backward: its arguments, the activation it runs
 * and the paths it takes. */
typedef struct pass {
    const sae_model *m;
    const sae_step_config *cfg;
    const float *x, *target; /* target: y, or x for an autoencoder */
    size_t n_tokens;
    size_t n_loss; /* the tokens the loss averages over (a data-parallel step's global batch) */
    sae_workspace *ws;
    float *grad;
    sae_backward_result *res;
    sae_activation act;
    bool topk, gated;
    bool sparse;    /* the gradients take the sparse path */
    bool fused;     /* the fused encoder made the pairs */
    bool too_dense; /* it stopped: the batch is too dense for the sparse path */
} pass;

/* The pass's starting state: the decoder row norms (those the last Adam pass
 * wrote, unless the model is another one or was changed since), the
 * per-feature sums zeroed, the activation set up for training. */
static void start_pass(pass *p)
{
    const sae_model *m = p->m;
    const sae_step_config *cfg = p->cfg;
    sae_workspace *ws = p->ws;
    const size_t d_sae = m->d_sae;
    if (ws->norms_model != m || ws->norms_version != m->version) {
        sae__decoder_row_norms(m, ws->norms, cfg->pool);
        ws->norms_model = m;
        ws->norms_version = m->version;
    }
    memset(ws->f_sum, 0, d_sae * sizeof(double));
    memset(ws->g_b_enc, 0, d_sae * sizeof(double));
    memset(ws->last_fired, 0, d_sae * sizeof(uint64_t));
    memset(ws->theta_grad, 0, d_sae * sizeof(double));
    memset(ws->gate_sum, 0, d_sae * sizeof(double));
    memset(ws->g_b_mag, 0, d_sae * sizeof(double));
    sae__thresholds(m, ws->theta);
    sae__mag_scales(m, ws->mag_scale);
    ws->row_ptr[0] = 0;
    sae__activation_init(&p->act, m, ws->norms, ws->theta, ws->mag_scale);
    p->act.bandwidth = (float)cfg->bandwidth;
    p->act.training = true;
    p->act.dead = cfg->dead;
    p->act.k_aux = cfg->k_aux;
    p->res->batch_min_kept = 0.0f;
    p->res->aux_loss = 0.0;
    p->res->grad_sumsq = 0.0;
}

/* The sparse path's encoder is fused whenever the step may take that path
 * and the fused encoder covers the model (sae__fused_covers: not Gated or
 * Matryoshka); a ReLU or JumpReLU batch too dense for it takes the dense
 * path. Feature shards and BatchTopK across data-parallel ranks select
 * across ranks block by block: they take the block loop. A distributed step
 * that fails here takes the block loop too, which meets the failure again
 * and tells the other ranks. */
static int try_fused(pass *p)
{
    const sae_model *m = p->m;
    const sae_step_config *cfg = p->cfg;
    const sae_par_step *par = cfg->par;
    if (!p->ws->fused || !sae__fused_covers(m) ||
        (par && (par->features || m->arch == SAE_ARCH_BATCHTOPK)) ||
        p->n_tokens > UINT32_MAX / 2 || (!p->topk && cfg->kernel == SAE_KERNEL_DENSE))
        return SAE_OK;
    double max_density = p->sparse ? 1.0 : SAE_SPARSE_MAX_DENSITY;
    int rc = fused_forward(m, cfg, &p->act, p->x, p->n_tokens, max_density, p->ws, p->res);
    if (rc == SAE_OK)
        p->fused = p->sparse = true;
    else if (rc == SAE_FUSED_TOO_DENSE)
        p->too_dense = true;
    else if (!par)
        return rc;
    return SAE_OK;
}

/* The forward pass block by block, each block's gradients on its path right
 * after it; SAE_KERNEL_AUTO chooses the path on the first block's density. */
static int block_loop(pass *p)
{
    const sae_model *m = p->m;
    const sae_step_config *cfg = p->cfg;
    sae_workspace *ws = p->ws;
    const size_t n_tokens = p->n_tokens;
    /* a batch selected block by block after all: one block of the batch (a
     * workspace reserved for the fused encoder holds less; never in a
     * distributed step, whose workspace holds the batch) */
    if (sae__batch_selected(m->arch) && ws->block_cap < n_tokens) {
        int rc = sae__workspace_reserve_batch(ws, n_tokens);
        if (rc != SAE_OK)
            return rc;
    }
    const size_t block = sae__batch_selected(m->arch) ? n_tokens
                         : ws->block_cap < n_tokens ? ws->block_cap : n_tokens;
    for (size_t t0 = 0; t0 < n_tokens; t0 += block) {
        size_t rows = sae__block_rows(n_tokens, t0, block), pairs = 0;
        int rc = forward_block(m, cfg, &p->act, p->x, t0, rows, ws, &pairs, p->res);
        if (rc != SAE_OK)
            return rc;
        if (t0 == 0 && cfg->kernel == SAE_KERNEL_AUTO && !p->topk && !p->gated) {
            p->sparse = !p->too_dense && n_tokens <= UINT32_MAX / 2 &&
                        (double)pairs <= SAE_SPARSE_MAX_DENSITY * (double)rows * (double)m->d_sae;
            if (cfg->par && cfg->par->features &&
                (rc = sae__par_sparse_choice(cfg->par, pairs, rows, sae__total_features(m),
                                             &p->sparse)) != SAE_OK)
                return rc;
        }
        if (p->sparse && (rc = sparse_block(m, cfg, n_tokens, t0, rows, ws)) != SAE_OK)
            return rc;
        if (p->gated && (rc = dense_gated_block(m, cfg, p->target, n_tokens, p->n_loss, t0, rows,
                                                ws, p->grad)) != SAE_OK)
            return rc;
        if (!p->gated && !p->sparse &&
            (rc = dense_backward_block(m, cfg, p->target, p->n_loss, t0, rows, ws, p->grad)) !=
                SAE_OK)
            return rc;
    }
    return SAE_OK;
}

/* The sparse path after the encoder: the reconstruction (every level's for
 * Matryoshka), AuxK's rows, then the feature phase over the pairs. */
static int finish_sparse(pass *p)
{
    const sae_model *m = p->m;
    const bool matryoshka = m->arch == SAE_ARCH_MATRYOSHKA;
    const float scale = (float)(2.0 / (double)p->n_loss);
    size_t n_rows = p->n_tokens; /* the tokens' rows, then AuxK's */
    int rc = SAE_OK;
    if (matryoshka && p->cfg->par && p->cfg->par->features) /* summed over the shards */
        rc = sae__matryoshka_decode_shards(m, p->cfg->par, p->target, p->n_tokens, scale, p->ws,
                                           p->cfg->pool);
    else if (matryoshka) /* every level's reconstruction (matryoshka.c) */
        sae__matryoshka_decode(m, p->target, p->n_tokens, scale, p->ws, p->cfg->pool);
    else
        rc = sparse_decode_output(m, p->cfg, p->target, p->n_tokens, scale, p->ws);
    if (rc == SAE_OK && p->cfg->dead)
        rc = add_auxk_rows(m, p->cfg, p->n_tokens, p->n_loss, p->ws, &n_rows, &p->res->aux_loss);
    if (rc != SAE_OK)
        return rc;
    if (matryoshka) /* AuxK has read the full width's rows */
        sae__matryoshka_suffix_sums(m, p->n_tokens, p->ws, p->cfg->pool);
    if (!failed(p->cfg))
        sae__sparse_feature_phase(m, p->cfg, p->n_tokens, n_rows, p->ws, p->grad);
    return SAE_OK;
}

int sae__forward_backward(const sae_model *m, const sae_step_config *cfg, const float *x,
                          const float *y, size_t n_tokens, sae_workspace *ws, float *grad,
                          sae_backward_result *res)
{
    pass p = {.m = m, .cfg = cfg, .x = x, .target = y ? y : x, .n_tokens = n_tokens,
              .n_loss = cfg->loss_tokens ? cfg->loss_tokens : n_tokens, .ws = ws, .grad = grad,
              .res = res, .topk = m->arch == SAE_ARCH_TOPK || sae__batch_selected(m->arch),
              .gated = m->arch == SAE_ARCH_GATED};
    start_pass(&p);
    /* TopK and BatchTopK are sparse by construction, Gated dense (its
     * auxiliary path reads every open gate); the sparse path indexes tokens
     * and features with 32 bits. Feature shards take the path all of them
     * can: the exchanges of the two differ. */
    p.sparse = !p.gated && (p.topk || cfg->kernel == SAE_KERNEL_SPARSE) &&
               n_tokens <= UINT32_MAX / 2;
    int rc = try_fused(&p);
    if (rc == SAE_OK && !p.fused)
        rc = block_loop(&p);
    if (rc == SAE_OK && p.sparse)
        rc = finish_sparse(&p);
    else if (rc == SAE_OK)
        dense_finish_rows(m, cfg, p.n_loss, ws, grad);
    if (rc == SAE_OK)
        rc = bias_gradients(m, cfg, n_tokens, ws, grad);
    if (rc != SAE_OK)
        return rc;
    res->grad_sumsq = skip_gradient(m, n_tokens, ws, grad);
    finish_sums(m, n_tokens, ws, grad, res);
    res->used_sparse = p.sparse;
    return cfg->par ? cfg->par->status : SAE_OK;
}
