#include "backward_pass.h"

#include <check.h>
#include <string.h>

float *test_lib_backward(const sae_model *m, const float *x, const float *y, size_t n,
                         const test_pass *p, sae_backward_result *res)
{
    const size_t k_aux = p->auxk_coeff > 0.0 ? p->k_aux : 0;
    sae_workspace ws;
    memset(&ws, 0, sizeof ws);
    sae_step_shape shape = {m->d_in, m->d_sae,    n,    p->n_threads, m->arch,
                            k_aux,   m->d_out, SAE_GEMM_AUTO, false, false, m->n_levels};
    ck_assert_int_eq(sae__workspace_reserve(&ws, &shape), SAE_OK);
    if (k_aux)
        memcpy(ws.dead, p->dead, m->d_sae);
    float *grad = sae__alloc_zero(m->lay.total * sizeof(float));
    ck_assert_ptr_nonnull(grad);
    sae_step_config cfg = {p->lambda, p->kernel, ws.pool, p->auxk_coeff, k_aux,
                           k_aux ? ws.dead : NULL, p->bandwidth, n, NULL};
    ck_assert_int_eq(sae__forward_backward(m, &cfg, x, y, n, &ws, grad, res), SAE_OK);
    sae__workspace_free(&ws);
    return grad;
}

void test_lib_gradients(const sae_model *m, const float *x, size_t n, const test_pass *p,
                        ref_grads *out, sae_backward_result *res)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    float *grad = test_lib_backward(m, x, NULL, n, p, res);
    for (size_t i = 0; i < d_sae; i++) {
        out->b_enc[i] = grad[m->lay.b_enc + i];
        for (size_t j = 0; j < d_in; j++) {
            out->W_enc[j * d_sae + i] = grad[m->lay.w_enc_t + i * d_in + j];
            out->W_dec[i * d_in + j] = grad[m->lay.w_dec + i * d_in + j];
        }
        if (out->log_theta)
            out->log_theta[i] = grad[m->lay.log_thr + i];
    }
    for (size_t j = 0; j < d_in; j++)
        out->b_dec[j] = grad[m->lay.b_dec + j];
    sae__free(grad);
}
