/* The library's backward pass as the tests call it: its internal entry point
 * sae__forward_backward on a fresh workspace (test build only), shared by the
 * gradient tests of test_backward.c, test_arch.c, test_kernels.c and
 * test_families_train.c. */
#ifndef SAE_TEST_BACKWARD_PASS_H
#define SAE_TEST_BACKWARD_PASS_H

#include "../src/internal.h"
#include "reference.h"

/* The settings of one pass, as a step takes them from its options. */
typedef struct test_pass {
    double lambda;              /* L1 (ReLU, Gated) or L0 (JumpReLU) coefficient */
    double bandwidth;           /* JumpReLU's eps */
    double auxk_coeff;          /* TopK, BatchTopK; 0: AuxK off */
    size_t k_aux;               /* used when auxk_coeff > 0 */
    const unsigned char *dead;  /* d_sae flags for AuxK (auxk_coeff > 0) */
    int kernel;                 /* SAE_KERNEL_* */
    int n_threads;
} test_pass;

/* The gradient of the architecture's training loss over x (n x d_in) against
 * y (n x d_out; NULL: x, an autoencoder's): m->lay.total floats in the
 * library's parameter layout, from sae__alloc (free with sae__free). *res
 * gets the pass's result. Fails the test unless the pass returns SAE_OK. */
float *test_lib_backward(const sae_model *m, const float *x, const float *y, size_t n,
                         const test_pass *p, sae_backward_result *res);

/* The same gradient of an autoencoder in the reference's (SAELens) layout,
 * JumpReLU's log thresholds included when out has them. */
void test_lib_gradients(const sae_model *m, const float *x, size_t n, const test_pass *p,
                        ref_grads *out, sae_backward_result *res);

#endif
