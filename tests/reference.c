#include "reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p)
        abort(); /* tests only */
    return p;
}

void ref_alloc(ref_model *r, size_t d_in, size_t d_sae)
{
    r->d_in = d_in;
    r->d_sae = d_sae;
    r->W_enc = dalloc(d_in * d_sae);
    r->b_enc = dalloc(d_sae);
    r->W_dec = dalloc(d_sae * d_in);
    r->b_dec = dalloc(d_in);
}

void ref_free(ref_model *r)
{
    free(r->W_enc);
    free(r->b_enc);
    free(r->W_dec);
    free(r->b_dec);
    memset(r, 0, sizeof *r);
}

static void copy_in(const sae_model *m, int which, double *dst, size_t count)
{
    float *tmp = malloc(count * sizeof(float));
    if (!tmp || sae_model_get_tensor(m, which, tmp, count) != SAE_OK)
        abort();
    for (size_t k = 0; k < count; k++)
        dst[k] = tmp[k];
    free(tmp);
}

static void copy_out(const double *src, size_t count, int which, sae_model *m)
{
    float *tmp = malloc(count * sizeof(float));
    if (!tmp)
        abort();
    for (size_t k = 0; k < count; k++)
        tmp[k] = (float)src[k];
    if (sae_model_set_tensor(m, which, tmp, count) != SAE_OK)
        abort();
    free(tmp);
}

void ref_from_model(ref_model *r, const sae_model *m)
{
    size_t d_in = sae_model_d_in(m), d_sae = sae_model_d_sae(m);
    ref_alloc(r, d_in, d_sae);
    copy_in(m, SAE_W_ENC, r->W_enc, d_in * d_sae);
    copy_in(m, SAE_B_ENC, r->b_enc, d_sae);
    copy_in(m, SAE_W_DEC, r->W_dec, d_sae * d_in);
    copy_in(m, SAE_B_DEC, r->b_dec, d_in);
}

void ref_to_model(const ref_model *r, sae_model *m)
{
    copy_out(r->W_enc, r->d_in * r->d_sae, SAE_W_ENC, m);
    copy_out(r->b_enc, r->d_sae, SAE_B_ENC, m);
    copy_out(r->W_dec, r->d_sae * r->d_in, SAE_W_DEC, m);
    copy_out(r->b_dec, r->d_in, SAE_B_DEC, m);
}

/* pre-activations of one token */
static void ref_pre(const ref_model *r, const float *xt, double *pre)
{
    for (size_t i = 0; i < r->d_sae; i++) {
        double s = r->b_enc[i];
        for (size_t j = 0; j < r->d_in; j++)
            s += ((double)xt[j] - r->b_dec[j]) * r->W_enc[j * r->d_sae + i];
        pre[i] = s;
    }
}

void ref_forward(const ref_model *r, const float *x, size_t n, double *f, double *x_hat)
{
    for (size_t t = 0; t < n; t++) {
        double *ft = f + t * r->d_sae;
        ref_pre(r, x + t * r->d_in, ft);
        for (size_t i = 0; i < r->d_sae; i++)
            ft[i] = ft[i] > 0.0 ? ft[i] : 0.0;
        for (size_t j = 0; j < r->d_in; j++) {
            double s = r->b_dec[j];
            for (size_t i = 0; i < r->d_sae; i++)
                s += ft[i] * r->W_dec[i * r->d_in + j];
            x_hat[t * r->d_in + j] = s;
        }
    }
}

static double row_norm(const ref_model *r, size_t i)
{
    double s = 0.0;
    for (size_t j = 0; j < r->d_in; j++)
        s += r->W_dec[i * r->d_in + j] * r->W_dec[i * r->d_in + j];
    return sqrt(s);
}

sae_losses ref_losses(const ref_model *r, const float *x, size_t n, double lambda)
{
    double *f = dalloc(n * r->d_sae), *x_hat = dalloc(n * r->d_in);
    ref_forward(r, x, n, f, x_hat);
    double l2 = 0.0, l1 = 0.0, l0 = 0.0;
    for (size_t t = 0; t < n; t++) {
        for (size_t j = 0; j < r->d_in; j++) {
            double e = x_hat[t * r->d_in + j] - x[t * r->d_in + j];
            l2 += e * e;
        }
        for (size_t i = 0; i < r->d_sae; i++) {
            l1 += f[t * r->d_sae + i] * row_norm(r, i);
            l0 += f[t * r->d_sae + i] > 0.0;
        }
    }
    free(f);
    free(x_hat);
    sae_losses out;
    out.l2 = l2 / n;
    out.l1 = l1 / n;
    out.l0 = l0 / n;
    out.loss = out.l2 + lambda * out.l1;
    return out;
}

double ref_l1_explicit(const ref_model *r, const float *x, size_t n)
{
    double *f = dalloc(n * r->d_sae), *x_hat = dalloc(n * r->d_in);
    double *big = dalloc(r->d_sae * r->d_in); /* one token's f_i * W_dec[i,:] */
    ref_forward(r, x, n, f, x_hat);
    double l1 = 0.0;
    for (size_t t = 0; t < n; t++) {
        for (size_t i = 0; i < r->d_sae; i++)
            for (size_t j = 0; j < r->d_in; j++)
                big[i * r->d_in + j] = f[t * r->d_sae + i] * r->W_dec[i * r->d_in + j];
        for (size_t i = 0; i < r->d_sae; i++) {
            double s = 0.0;
            for (size_t j = 0; j < r->d_in; j++)
                s += big[i * r->d_in + j] * big[i * r->d_in + j];
            l1 += sqrt(s);
        }
    }
    free(big);
    free(f);
    free(x_hat);
    return l1 / n;
}

void ref_gradients(const ref_model *r, const float *x, size_t n, double lambda, ref_grads *g)
{
    const size_t d_in = r->d_in, d_sae = r->d_sae;
    double *pre = dalloc(d_sae), *f = dalloc(d_sae), *x_hat = dalloc(d_in);
    double *dx_hat = dalloc(d_in), *dpre = dalloc(d_sae), *norms = dalloc(d_sae);
    for (size_t i = 0; i < d_sae; i++)
        norms[i] = row_norm(r, i);
    memset(g->W_enc, 0, d_in * d_sae * sizeof(double));
    memset(g->b_enc, 0, d_sae * sizeof(double));
    memset(g->W_dec, 0, d_sae * d_in * sizeof(double));
    memset(g->b_dec, 0, d_in * sizeof(double));
    for (size_t t = 0; t < n; t++) {
        const float *xt = x + t * d_in;
        ref_pre(r, xt, pre);
        for (size_t i = 0; i < d_sae; i++)
            f[i] = pre[i] > 0.0 ? pre[i] : 0.0;
        for (size_t j = 0; j < d_in; j++) {
            double s = r->b_dec[j];
            for (size_t i = 0; i < d_sae; i++)
                s += f[i] * r->W_dec[i * d_in + j];
            x_hat[j] = s;
            dx_hat[j] = 2.0 * (s - xt[j]) / n;
            g->b_dec[j] += dx_hat[j];
        }
        for (size_t i = 0; i < d_sae; i++) {
            double df = lambda * norms[i] / n;
            for (size_t j = 0; j < d_in; j++) {
                df += r->W_dec[i * d_in + j] * dx_hat[j];
                g->W_dec[i * d_in + j] += f[i] * dx_hat[j];
                if (norms[i] > 0.0)
                    g->W_dec[i * d_in + j] += lambda / n * f[i] * r->W_dec[i * d_in + j] / norms[i];
            }
            dpre[i] = pre[i] > 0.0 ? df : 0.0;
            g->b_enc[i] += dpre[i];
        }
        for (size_t j = 0; j < d_in; j++) {
            double xc = (double)xt[j] - r->b_dec[j];
            double back = 0.0;
            for (size_t i = 0; i < d_sae; i++) {
                g->W_enc[j * d_sae + i] += xc * dpre[i];
                back += r->W_enc[j * d_sae + i] * dpre[i];
            }
            g->b_dec[j] -= back;
        }
    }
    free(pre);
    free(f);
    free(x_hat);
    free(dx_hat);
    free(dpre);
    free(norms);
}

size_t ref_n_params(const ref_model *r)
{
    return 2 * r->d_in * r->d_sae + r->d_in + r->d_sae;
}

double *ref_param(ref_model *r, size_t k)
{
    size_t mat = r->d_in * r->d_sae;
    if (k < mat)
        return &r->W_enc[k];
    k -= mat;
    if (k < r->d_sae)
        return &r->b_enc[k];
    k -= r->d_sae;
    if (k < mat)
        return &r->W_dec[k];
    return &r->b_dec[k - mat];
}
