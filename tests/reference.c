#include "reference.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p)
        abort(); /* tests only */
    return p;
}

void ref_alloc_arch(ref_model *r, size_t d_in, size_t d_sae, int arch, size_t k)
{
    r->d_in = d_in;
    r->d_sae = d_sae;
    r->arch = arch;
    r->k = k;
    r->W_enc = dalloc(d_in * d_sae);
    r->b_enc = dalloc(d_sae);
    r->W_dec = dalloc(d_sae * d_in);
    r->b_dec = dalloc(d_in);
    r->log_theta = arch == SAE_ARCH_JUMPRELU ? dalloc(d_sae) : NULL;
}

void ref_alloc(ref_model *r, size_t d_in, size_t d_sae)
{
    ref_alloc_arch(r, d_in, d_sae, SAE_ARCH_RELU, 0);
}

void ref_free(ref_model *r)
{
    free(r->W_enc);
    free(r->b_enc);
    free(r->W_dec);
    free(r->b_dec);
    free(r->log_theta);
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
    ref_alloc_arch(r, d_in, d_sae, sae_model_arch(m), sae_model_k(m));
    if (r->log_theta) {
        copy_in(m, SAE_THRESHOLD, r->log_theta, d_sae);
        for (size_t i = 0; i < d_sae; i++)
            r->log_theta[i] = log(r->log_theta[i]);
    }
    copy_in(m, SAE_W_ENC, r->W_enc, d_in * d_sae);
    copy_in(m, SAE_B_ENC, r->b_enc, d_sae);
    copy_in(m, SAE_W_DEC, r->W_dec, d_sae * d_in);
    copy_in(m, SAE_B_DEC, r->b_dec, d_in);
}

void ref_to_model(const ref_model *r, sae_model *m)
{
    if (r->log_theta) {
        double *theta = dalloc(r->d_sae);
        for (size_t i = 0; i < r->d_sae; i++)
            theta[i] = exp(r->log_theta[i]);
        copy_out(theta, r->d_sae, SAE_THRESHOLD, m);
        free(theta);
    }
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
    return 2 * r->d_in * r->d_sae + r->d_in + r->d_sae + (r->log_theta ? r->d_sae : 0);
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
    k -= mat;
    if (k < r->d_in)
        return &r->b_dec[k];
    return &r->log_theta[k - r->d_in];
}

/* ---- architectures ------------------------------------------------------------ */

/* Indices of the `keep` largest of v[0..d) that are > 0 and allowed, ties in
 * index order: marks them in sel. A plain O(d^2) selection: clear, not fast. */
static void select_largest(const double *v, size_t d, size_t keep, const unsigned char *allowed,
                           unsigned char *sel)
{
    memset(sel, 0, d);
    for (size_t taken = 0; taken < keep; taken++) {
        size_t best = d;
        for (size_t i = 0; i < d; i++)
            if (!sel[i] && v[i] > 0.0 && (!allowed || allowed[i]) && (best == d || v[i] > v[best]))
                best = i;
        if (best == d)
            break;
        sel[best] = 1;
    }
}

void ref_features(const ref_model *r, const float *x, size_t n, double *f, double *pre_out)
{
    const size_t d = r->d_sae;
    double *pre = dalloc(n * d);
    unsigned char *sel = calloc(n * d, 1);
    for (size_t t = 0; t < n; t++)
        ref_pre(r, x + t * r->d_in, pre + t * d);
    switch (r->arch) {
    case SAE_ARCH_TOPK:
        for (size_t t = 0; t < n; t++)
            select_largest(pre + t * d, d, r->k, NULL, sel + t * d);
        break;
    case SAE_ARCH_BATCHTOPK:
        select_largest(pre, n * d, n * r->k, NULL, sel);
        break;
    case SAE_ARCH_JUMPRELU:
        for (size_t t = 0; t < n; t++)
            for (size_t i = 0; i < d; i++)
                sel[t * d + i] = pre[t * d + i] > exp(r->log_theta[i]);
        break;
    default:
        for (size_t k = 0; k < n * d; k++)
            sel[k] = pre[k] > 0.0;
        break;
    }
    for (size_t k = 0; k < n * d; k++)
        f[k] = sel[k] && pre[k] > 0.0 ? pre[k] : 0.0;
    if (pre_out)
        memcpy(pre_out, pre, n * d * sizeof(double));
    free(sel);
    free(pre);
}

/* x_hat (n x d_in) from features f, with or without b_dec */
static void ref_decode(const ref_model *r, const double *f, size_t n, bool bias, double *x_hat)
{
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < r->d_in; j++) {
            double s = bias ? r->b_dec[j] : 0.0;
            for (size_t i = 0; i < r->d_sae; i++)
                s += f[t * r->d_sae + i] * r->W_dec[i * r->d_in + j];
            x_hat[t * r->d_in + j] = s;
        }
}

/* AuxK's picks per token from the pre-activations: f_aux (n x d_sae). */
static void ref_auxk_features(const ref_model *r, const double *pre, size_t n, const ref_train *t,
                              double *f_aux)
{
    const size_t d = r->d_sae;
    unsigned char *sel = calloc(d, 1);
    for (size_t tok = 0; tok < n; tok++) {
        select_largest(pre + tok * d, d, t->k_aux, t->dead, sel);
        for (size_t i = 0; i < d; i++)
            f_aux[tok * d + i] = sel[i] ? pre[tok * d + i] : 0.0;
    }
    free(sel);
}

double ref_auxk_fixed_e(const ref_model *r, const float *x, size_t n, const ref_train *t,
                        const double *e)
{
    const size_t d_in = r->d_in, d = r->d_sae;
    double *f = dalloc(n * d), *pre = dalloc(n * d), *f_aux = dalloc(n * d), *e_hat = dalloc(n * d_in);
    ref_features(r, x, n, f, pre);
    ref_auxk_features(r, pre, n, t, f_aux);
    ref_decode(r, f_aux, n, false, e_hat);
    double num = 0.0, total = 0.0, mean_sq = 0.0;
    for (size_t k = 0; k < n * d_in; k++) {
        num += (e_hat[k] - e[k]) * (e_hat[k] - e[k]);
        total += e[k] * e[k];
    }
    for (size_t j = 0; j < d_in; j++) {
        double mean = 0.0;
        for (size_t tok = 0; tok < n; tok++)
            mean += e[tok * d_in + j] / (double)n;
        mean_sq += mean * mean;
    }
    double denom = total / (double)n - mean_sq;
    free(f);
    free(pre);
    free(f_aux);
    free(e_hat);
    return denom > 0.0 ? num / (double)n / denom : 0.0;
}

double ref_train_loss(const ref_model *r, const float *x, size_t n, const ref_train *t)
{
    const size_t d_in = r->d_in, d = r->d_sae;
    double *f = dalloc(n * d), *x_hat = dalloc(n * d_in), *e = dalloc(n * d_in);
    ref_features(r, x, n, f, NULL);
    ref_decode(r, f, n, true, x_hat);
    double l2 = 0.0, l1 = 0.0, l0 = 0.0;
    for (size_t k = 0; k < n * d_in; k++) {
        e[k] = x[k] - x_hat[k];
        l2 += e[k] * e[k];
    }
    for (size_t tok = 0; tok < n; tok++)
        for (size_t i = 0; i < d; i++) {
            l1 += f[tok * d + i] * row_norm(r, i);
            l0 += f[tok * d + i] > 0.0;
        }
    double loss = l2 / (double)n;
    if (r->arch == SAE_ARCH_RELU)
        loss += t->lambda * l1 / (double)n;
    if (r->arch == SAE_ARCH_JUMPRELU)
        loss += t->lambda * l0 / (double)n;
    if (t->auxk_coeff > 0.0)
        loss += t->auxk_coeff * ref_auxk_fixed_e(r, x, n, t, e);
    free(f);
    free(x_hat);
    free(e);
    return loss;
}

void ref_train_gradients(const ref_model *r, const float *x, size_t n, const ref_train *t,
                         ref_grads *g)
{
    const size_t d_in = r->d_in, d = r->d_sae;
    double *f = dalloc(n * d), *pre = dalloc(n * d), *x_hat = dalloc(n * d_in);
    double *dxh = dalloc(n * d_in), *dpre = dalloc(n * d), *df = dalloc(n * d);
    ref_features(r, x, n, f, pre);
    ref_decode(r, f, n, true, x_hat);
    memset(g->W_enc, 0, d_in * d * sizeof(double));
    memset(g->b_enc, 0, d * sizeof(double));
    memset(g->W_dec, 0, d * d_in * sizeof(double));
    memset(g->b_dec, 0, d_in * sizeof(double));
    if (g->log_theta)
        memset(g->log_theta, 0, d * sizeof(double));
    const double l1 = r->arch == SAE_ARCH_RELU ? t->lambda : 0.0;
    for (size_t k = 0; k < n * d_in; k++)
        dxh[k] = 2.0 * (x_hat[k] - x[k]) / (double)n;
    for (size_t tok = 0; tok < n; tok++)
        for (size_t i = 0; i < d; i++) {
            double s = l1 * row_norm(r, i) / (double)n;
            for (size_t j = 0; j < d_in; j++)
                s += r->W_dec[i * d_in + j] * dxh[tok * d_in + j];
            df[tok * d + i] = s;
            dpre[tok * d + i] = f[tok * d + i] > 0.0 ? s : 0.0;
        }
    /* decoder rows, with the L1 term's gradient through the row norms */
    for (size_t i = 0; i < d; i++) {
        double f_sum = 0.0, norm = row_norm(r, i);
        for (size_t tok = 0; tok < n; tok++)
            f_sum += f[tok * d + i];
        for (size_t j = 0; j < d_in; j++) {
            double s = 0.0;
            for (size_t tok = 0; tok < n; tok++)
                s += f[tok * d + i] * dxh[tok * d_in + j];
            if (norm > 0.0)
                s += l1 / (double)n * f_sum * r->W_dec[i * d_in + j] / norm;
            g->W_dec[i * d_in + j] = s;
        }
    }
    for (size_t k = 0; k < n * d_in; k++)
        g->b_dec[k % d_in] += dxh[k];
    /* JumpReLU's threshold estimators */
    if (r->arch == SAE_ARCH_JUMPRELU)
        for (size_t i = 0; i < d; i++) {
            double theta = exp(r->log_theta[i]), gt = 0.0;
            for (size_t tok = 0; tok < n; tok++) {
                double u = (pre[tok * d + i] - theta) / t->bandwidth;
                if (u > -0.5 && u < 0.5)
                    gt += -(theta / t->bandwidth) * df[tok * d + i] -
                          t->lambda / ((double)n * t->bandwidth);
            }
            g->log_theta[i] = theta * gt;
        }
    /* AuxK with the residual held fixed: extra dL/dpre and decoder rows */
    if (t->auxk_coeff > 0.0) {
        double *f_aux = dalloc(n * d), *e_hat = dalloc(n * d_in), *de = dalloc(n * d_in);
        ref_auxk_features(r, pre, n, t, f_aux);
        ref_decode(r, f_aux, n, false, e_hat);
        double total = 0.0, mean_sq = 0.0;
        for (size_t k = 0; k < n * d_in; k++)
            total += (x[k] - x_hat[k]) * (x[k] - x_hat[k]);
        for (size_t j = 0; j < d_in; j++) {
            double mean = 0.0;
            for (size_t tok = 0; tok < n; tok++)
                mean += (x[tok * d_in + j] - x_hat[tok * d_in + j]) / (double)n;
            mean_sq += mean * mean;
        }
        double denom = total / (double)n - mean_sq;
        if (denom > 0.0) {
            for (size_t k = 0; k < n * d_in; k++)
                de[k] = 2.0 * t->auxk_coeff * (e_hat[k] - (x[k] - x_hat[k])) / ((double)n * denom);
            for (size_t i = 0; i < d; i++)
                for (size_t tok = 0; tok < n; tok++) {
                    double fa = f_aux[tok * d + i];
                    if (fa <= 0.0)
                        continue;
                    double s = 0.0;
                    for (size_t j = 0; j < d_in; j++) {
                        s += r->W_dec[i * d_in + j] * de[tok * d_in + j];
                        g->W_dec[i * d_in + j] += fa * de[tok * d_in + j];
                    }
                    dpre[tok * d + i] += s;
                }
        }
        free(f_aux);
        free(e_hat);
        free(de);
    }
    /* encoder side, from dL/dpre */
    for (size_t tok = 0; tok < n; tok++)
        for (size_t i = 0; i < d; i++) {
            double gp = dpre[tok * d + i];
            if (gp == 0.0)
                continue;
            g->b_enc[i] += gp;
            for (size_t j = 0; j < d_in; j++) {
                g->W_enc[j * d + i] += ((double)x[tok * d_in + j] - r->b_dec[j]) * gp;
                g->b_dec[j] -= r->W_enc[j * d + i] * gp;
            }
        }
    free(f);
    free(pre);
    free(x_hat);
    free(dxh);
    free(dpre);
    free(df);
}
