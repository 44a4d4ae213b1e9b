/* A library model twin of a reference family model, and the library's
 * gradients compared with the reference's (see families_pass.h). */
#include "families_pass.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>

/* A library model of r's family with r's parameters, and r re-read from it
 * (so both hold the same float values). */
sae_model *families_lib_model(reff_model *r)
{
    sae_model *m = NULL;
    int rc;
    if (r->kind != REFF_AUTOENCODER)
        rc = sae_model_create_transcoder(&m, r->d_in, r->d_out, r->d_sae, 1, r->kind, r->arch,
                                         r->arch == REFF_JUMPRELU ? 0.1 : (double)r->k);
    else if (r->arch == REFF_MATRYOSHKA)
        rc = sae_model_create_matryoshka(&m, r->d_in, r->d_sae, 1, r->k, r->widths, r->n_levels);
    else
        rc = sae_model_create_arch(&m, r->d_in, r->d_sae, 1, r->arch,
                                   r->arch == REFF_JUMPRELU ? 0.1 : (double)r->k);
    ck_assert_int_eq(rc, SAE_OK);
    static const int tensors[] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC,
                                  SAE_W_SKIP, SAE_B_MAG, SAE_R_MAG, SAE_THRESHOLD};
    for (size_t k = 0; k < sizeof tensors / sizeof tensors[0]; k++) {
        const int which = tensors[k];
        double *src = which == SAE_W_ENC ? r->W_enc : which == SAE_B_ENC ? r->b_enc
                    : which == SAE_W_DEC ? r->W_dec : which == SAE_B_DEC ? r->b_dec
                    : which == SAE_W_SKIP ? r->W_skip : which == SAE_B_MAG ? r->b_mag
                    : which == SAE_R_MAG ? r->r_mag : r->log_theta;
        if (!src)
            continue;
        size_t count = sae_model_tensor_size(m, which);
        ck_assert_uint_gt(count, 0);
        float *v = malloc(count * sizeof(float));
        for (size_t i = 0; i < count; i++)
            v[i] = (float)(which == SAE_THRESHOLD ? exp(src[i]) : src[i]);
        ck_assert_int_eq(sae_model_set_tensor(m, which, v, count), SAE_OK);
        for (size_t i = 0; i < count; i++)
            src[i] = which == SAE_THRESHOLD ? (double)sae__log_thr(m)[i] : (double)v[i];
        free(v);
    }
    return m;
}

/* The gradient block (parameter layout) as reference tensors in g. */
void families_grads_to_reff(const sae_model *m, const float *grad, reff_model *g)
{
    const size_t d_in = m->d_in, d_out = m->d_out, d_sae = m->d_sae;
    for (size_t i = 0; i < d_sae; i++) {
        g->b_enc[i] = grad[m->lay.b_enc + i];
        for (size_t j = 0; j < d_in; j++)
            g->W_enc[j * d_sae + i] = grad[m->lay.w_enc_t + i * d_in + j];
        for (size_t j = 0; j < d_out; j++)
            g->W_dec[i * d_out + j] = grad[m->lay.w_dec + i * d_out + j];
        if (g->log_theta)
            g->log_theta[i] = grad[m->lay.log_thr + i];
        if (g->r_mag) {
            g->r_mag[i] = grad[m->lay.r_mag + i];
            g->b_mag[i] = grad[m->lay.b_mag + i];
        }
    }
    for (size_t j = 0; j < d_out; j++)
        g->b_dec[j] = grad[m->lay.b_dec + j];
    for (size_t k = 0; g->W_skip && k < d_out * d_in; k++)
        g->W_skip[k] = grad[m->lay.w_skip + k];
}

/* The library's gradients (internal entry point, on `kernel`) against the
 * reference's: returns max |lib - ref| / max |ref|; *res the pass's result. */
double families_gradient_error(reff_model *r, const reff_train *t, const float *x, const float *y,
                             size_t n, int kernel, sae_backward_result *res)
{
    sae_model *m = families_lib_model(r);
    const test_pass p = {t->lambda, t->bandwidth, t->auxk_coeff, t->k_aux, t->dead, kernel, 2};
    float *grad = test_lib_backward(m, x, y, n, &p, res);

    reff_model want, got;
    reff_alloc_like(&want, r);
    reff_alloc_like(&got, r);
    reff_gradients(r, t, x, y, n, &want);
    families_grads_to_reff(m, grad, &got);
    double err = 0.0, scale = 0.0, sumsq = 0.0;
    for (size_t k = 0; k < reff_n_params(r); k++) {
        double a = *reff_param(&want, k), b = *reff_param(&got, k);
        err = fmax(err, fabs(a - b));
        scale = fmax(scale, fabs(a));
        sumsq += b * b;
    }
    /* the norm the step clips with is the norm of these very gradients */
    ck_assert_double_eq_tol(res->grad_sumsq, sumsq, 1e-5 * sumsq);
    /* and the loss it reports is the reference's */
    reff_losses l;
    reff_loss(r, t, x, y, n, NULL, &l);
    ck_assert_double_eq_tol(res->sums.l2 / (double)n, l.l2, 1e-5 * (1.0 + l.l2));
    reff_free(&got);
    reff_free(&want);
    sae__free(grad);
    sae_model_free(m);
    ck_assert_double_gt(scale, 0.0);
    return err / scale;
}

