/* The SAE families' library passes against the double-precision reference
 * (tests/reference_families.c): a library model holding a reference model's
 * parameters, and the library's gradients compared with the reference's.
 * Shared by test_families_train.c and test_matryoshka.c. */
#ifndef SAE_TEST_FAMILIES_PASS_H
#define SAE_TEST_FAMILIES_PASS_H

#include "backward_pass.h"
#include "reference_families.h"

/* A library model of r's family with r's parameters, and r re-read from it
 * (so both hold the same float values). Fails the test on error. */
sae_model *families_lib_model(reff_model *r);

/* A gradient block of m (the library's parameter layout) as reference
 * tensors in g (reff_alloc_like of m's reference twin). */
void families_grads_to_reff(const sae_model *m, const float *grad, reff_model *g);

/* The library's gradients of r's twin (internal entry point, on `kernel`,
 * two threads) against the reference's: returns max |lib - ref| / max |ref|,
 * after checking that the pass's gradient norm is its gradients' and its l2
 * the reference's; *res the pass's result. */
double families_gradient_error(reff_model *r, const reff_train *t, const float *x,
                               const float *y, size_t n, int kernel, sae_backward_result *res);

#endif
