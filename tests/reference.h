/*
 * A double-precision reference SAE for the tests: the formulas of the header,
 * written out directly (including the explicit d_sae x d_in form of the L1
 * term), with no BLAS and nothing shared with the library.
 */
#ifndef SAE_TEST_REFERENCE_H
#define SAE_TEST_REFERENCE_H

#include <libsae/sae.h>
#include <stddef.h>

typedef struct ref_model {
    size_t d_in, d_sae;
    int arch;          /* SAE_ARCH_* */
    size_t k;          /* TopK, BatchTopK */
    double *W_enc; /* d_in x d_sae */
    double *b_enc; /* d_sae */
    double *W_dec; /* d_sae x d_in */
    double *b_dec; /* d_in */
    double *log_theta; /* d_sae, JumpReLU (NULL otherwise) */
} ref_model;

/* What the training loss adds for the architectures (reference_ex). */
typedef struct ref_train {
    double lambda;      /* L1 (ReLU) or L0 (JumpReLU) coefficient */
    double bandwidth;   /* JumpReLU's eps */
    double auxk_coeff;  /* TopK/BatchTopK; 0: no AuxK */
    size_t k_aux;
    const unsigned char *dead; /* d_sae flags for AuxK */
} ref_train;

/* Gradients in the same SAELens layout as ref_model. */
typedef ref_model ref_grads;

void ref_alloc(ref_model *r, size_t d_in, size_t d_sae);
void ref_alloc_arch(ref_model *r, size_t d_in, size_t d_sae, int arch, size_t k);
void ref_free(ref_model *r);
void ref_from_model(ref_model *r, const sae_model *m);  /* allocates and copies */
void ref_to_model(const ref_model *r, sae_model *m);    /* rounds to float */

/* f (n x d_sae) and x_hat (n x d_in) in double. */
void ref_forward(const ref_model *r, const float *x, size_t n, double *f, double *x_hat);

/* Losses with the L1 term from decoder row norms. */
sae_losses ref_losses(const ref_model *r, const float *x, size_t n, double lambda);

/* The L1 term built the slow way, from the per-token d_sae x d_in tensor
 * f_ti * W_dec[i,:] and the norm of each of its rows. */
double ref_l1_explicit(const ref_model *r, const float *x, size_t n);

/* Analytic gradients of loss = l2 + lambda * l1 (g must be ref_alloc'ed). */
void ref_gradients(const ref_model *r, const float *x, size_t n, double lambda, ref_grads *g);

/* The features of a batch in the model's architecture, as training computes
 * them (BatchTopK: over the batch). f: n x d_sae; pre (may be NULL): n x d_sae. */
void ref_features(const ref_model *r, const float *x, size_t n, double *f, double *pre);

/* The training loss of the architecture (with AuxK when t->auxk_coeff > 0; its
 * residual e is computed from the same parameters, so finite differences of
 * this function see e move: use ref_train_loss_fixed_e for those). */
double ref_train_loss(const ref_model *r, const float *x, size_t n, const ref_train *t);

/* AuxK's term alone with the residual e (n x d_in) given. */
double ref_auxk_fixed_e(const ref_model *r, const float *x, size_t n, const ref_train *t,
                        const double *e);

/* Gradients of the training loss (estimators for JumpReLU's log thresholds,
 * AuxK with e held fixed). g must be ref_alloc_arch'ed like r. */
void ref_train_gradients(const ref_model *r, const float *x, size_t n, const ref_train *t,
                         ref_grads *g);

/* Number of parameters and a flat view: parameter k of the tensors in the
 * order W_enc, b_enc, W_dec, b_dec, log_theta (JumpReLU). */
size_t ref_n_params(const ref_model *r);
double *ref_param(ref_model *r, size_t k);

#endif
