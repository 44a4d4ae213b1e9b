/*
 * A double-precision reference for the SAE families of issue 16 (Gated,
 * Matryoshka BatchTopK, transcoders and skip transcoders), for the tests: the
 * formulas of /work/scratch/families-design.md written out literally (each
 * Matryoshka level decoded on its own, the Gated auxiliary path with its own
 * decoder pass), with no BLAS and nothing shared with the library. It also
 * covers the architectures libsae had before (ReLU, TopK, BatchTopK, JumpReLU),
 * as autoencoders and as transcoders, so it can be checked against the older
 * reference (tests/reference.c) where the two overlap.
 *
 * Shapes (SAELens's layout, row-major): W_enc d_in x d_sae, b_enc d_sae,
 * W_dec d_sae x d_out, b_dec d_out, W_skip d_out x d_in. An autoencoder has
 * d_out = d_in and reconstructs its input; a transcoder reads x (d_in) and
 * predicts a target y (d_out) without subtracting b_dec from its input.
 */
#ifndef SAE_TEST_REFERENCE_FAMILIES_H
#define SAE_TEST_REFERENCE_FAMILIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Activations and families. The first four are libsae's SAE_ARCH_* values; the
 * last two are the values the design gives SAE_ARCH_GATED and
 * SAE_ARCH_MATRYOSHKA. */
enum reff_arch {
    REFF_RELU = 0,
    REFF_TOPK = 1,
    REFF_BATCHTOPK = 2,
    REFF_JUMPRELU = 3,
    REFF_GATED = 4,
    REFF_MATRYOSHKA = 5
};

enum reff_kind { REFF_AUTOENCODER = 0, REFF_TRANSCODER = 1, REFF_SKIP_TRANSCODER = 2 };

#define REFF_MAX_LEVELS 8

typedef struct reff_model {
    int arch, kind;                /* REFF_* */
    size_t d_in, d_out, d_sae;
    size_t k;                      /* TopK, BatchTopK, Matryoshka: features per token */
    size_t n_levels;               /* Matryoshka: widths[0..n_levels), ascending, last d_sae */
    size_t widths[REFF_MAX_LEVELS];
    bool rescale;                  /* TopK family: SAELens's rescale_acts_by_decoder_norm
                                      (forward and loss only; no gradients) */
    double *W_enc;                 /* d_in x d_sae */
    double *b_enc;                 /* d_sae; Gated: b_gate */
    double *W_dec;                 /* d_sae x d_out */
    double *b_dec;                 /* d_out */
    double *log_theta;             /* JumpReLU: d_sae log thresholds (else NULL) */
    double *r_mag, *b_mag;         /* Gated: d_sae each (else NULL) */
    double *W_skip;                /* skip transcoders: d_out x d_in (else NULL) */
} reff_model;

/* What the training loss adds to the reconstruction (the header's options). */
typedef struct reff_train {
    double lambda;                 /* ReLU and Gated: L1 coefficient; JumpReLU: L0 */
    double bandwidth;              /* JumpReLU: the estimators' eps */
    double auxk_coeff;             /* TopK, BatchTopK, Matryoshka; 0: no AuxK */
    size_t k_aux;
    const unsigned char *dead;     /* d_sae flags, for AuxK */
    /* JumpReLU only, for checking the estimator: when not NULL, f and the L0
     * term use the surrogate whose exact derivative in the log thresholds is
     * the estimator, with these values (d_sae) as the detached thresholds'
     * logarithms:  f = pre H(pre - th0) + th0 (R(pre - th) - R(pre - th0)),
     * H(pre - th) -> H(pre - th0) + R(pre - th) - R(pre - th0), where
     * R(u) = clamp(u / eps + 1/2, 0, 1). At log_theta = surrogate_log_theta0
     * the surrogate's value is the loss. */
    const double *surrogate_log_theta0;
} reff_train;

typedef struct reff_losses {
    double loss;                   /* what training minimises */
    double l2;                     /* (1/n) sum_t ||y_hat_t - y_t||^2 (Matryoshka: full width) */
    double l1;                     /* (1/n) sum_t sum_i f_ti r_i */
    double l0;                     /* (1/n) sum_t #{i : f_ti > 0} */
    double penalty;                /* the term lambda multiplies: ReLU l1, JumpReLU l0,
                                      Gated (1/n) sum_t sum_i ReLU(pi_gate)_ti r_i */
    double aux;                    /* Gated: the frozen-decoder reconstruction term;
                                      TopK family: AuxK (before its coefficient) */
    double level_l2[REFF_MAX_LEVELS]; /* Matryoshka: each level's l2 */
} reff_losses;

/* Allocate (zeroed) every tensor the family has. widths: Matryoshka's level
 * widths (n_levels of them; NULL for the others). */
void reff_alloc(reff_model *r, int arch, int kind, size_t d_in, size_t d_out, size_t d_sae,
                size_t k, const size_t *widths, size_t n_levels);
void reff_free(reff_model *r);
/* Same shape and family as src, tensors zeroed (e.g. for gradients). */
void reff_alloc_like(reff_model *r, const reff_model *src);
void reff_copy(reff_model *dst, const reff_model *src);  /* same shape, values copied */

/* Random parameters: every tensor N(0, sd^2) (W_dec rows with different norms,
 * biases nonzero), JumpReLU thresholds log-uniform in [0.05, 0.5], r_mag in
 * [-0.5, 0.5], W_skip N(0, sd^2). */
void reff_randomize(reff_model *r, double sd, uint64_t seed);

/* The parameters as one flat list: W_enc, b_enc, W_dec, b_dec, log_theta,
 * r_mag, b_mag, W_skip (the ones the family has). */
size_t reff_n_params(const reff_model *r);
double *reff_param(reff_model *r, size_t k);
const char *reff_param_tensor(const reff_model *r, size_t k); /* its tensor's name */

/* Training-time features of a batch (BatchTopK and Matryoshka: selected over
 * the batch), n x d_sae. pre (may be NULL): the pre-activations (Gated: the
 * magnitude path pi_mag; rescaled TopK: pre * r). gate (may be NULL; Gated):
 * ReLU(pi_gate). t may be NULL (no surrogate). */
void reff_features(const reff_model *r, const reff_train *t, const float *x, size_t n,
                   double *f, double *pre, double *gate);

/* The model's output for features f (n x d_sae): f W_dec + b_dec, plus
 * x W_skip^T for skip transcoders; rescaled TopK divides f by r first.
 * y_hat: n x d_out. */
void reff_output(const reff_model *r, const float *x, const double *f, size_t n, double *y_hat);

/* Inference: f at inference (BatchTopK and Matryoshka: pre where pre >
 * threshold and pre > 0; threshold < 0: ReLU), and y_hat. Either may be NULL. */
void reff_infer(const reff_model *r, double threshold, const float *x, size_t n, double *f,
                double *y_hat);

/* What the gradients treat as constants (stop-gradients), held at given values
 * so that finite differences of reff_loss see the same function: AuxK's
 * residual e (n x d_out), and the decoder the Gated auxiliary term reads
 * (W_dec d_sae x d_out, b_dec d_out). NULL members (or a NULL reff_held): the
 * values of the model itself. */
typedef struct reff_held {
    const double *e;
    const double *W_dec, *b_dec;
} reff_held;

/* The training loss on the batch: x n x d_in, y n x d_out (NULL: y = x, for
 * autoencoders). held: see reff_held (may be NULL). */
void reff_loss(const reff_model *r, const reff_train *t, const float *x, const float *y,
               size_t n, const reff_held *held, reff_losses *out);

/* y - y_hat (n x d_out) of the full model: AuxK's residual. */
void reff_residual(const reff_model *r, const reff_train *t, const float *x, const float *y,
                   size_t n, double *e);

/* Gradients of the training loss into g (reff_alloc_like(g, r)): exact where
 * the loss is differentiable, AuxK with its residual held fixed, the Gated
 * auxiliary term through a frozen decoder, JumpReLU's log thresholds by the
 * rectangle-kernel estimator (dL/dt_i = theta_i dL/dtheta_i). */
void reff_gradients(const reff_model *r, const reff_train *t, const float *x, const float *y,
                    size_t n, reff_model *g);

/* SAELens's fold of the decoder norms of a rescaled TopK-family model
 * (_fold_norm_topk): n_i = max(r_i, 1e-8); b_enc *= n; W_dec[i] /= n_i;
 * W_enc[:,i] *= n_i; clears r->rescale. */
void reff_fold_decoder_norms(reff_model *r);

/* ---- synthetic data -------------------------------------------------------- */

/* A transcoder's ground truth: n_true features, each a unit input direction
 * d_k (d_in) and a unit output direction e_k (d_out); token t has a sparse
 * code c_t (each feature on with probability active / n_true, magnitude
 * uniform in (0.5, 1.5)), and
 *     x_t = sum_k c_tk d_k,      y_t = sum_k c_tk e_k + A x_t,
 * with A (d_out x d_in) N(0, skip_sd^2 / d_in) entries when skip_sd > 0 (a
 * dense linear part for the skip variant), else no A. */
typedef struct reff_transcoder_data {
    size_t n, d_in, d_out, n_true;
    float *x;          /* n x d_in */
    float *y;          /* n x d_out */
    double *code;      /* n x n_true */
    double *dir_in;    /* n_true x d_in, unit rows */
    double *dir_out;   /* n_true x d_out, unit rows */
    double *skip;      /* d_out x d_in, or NULL */
} reff_transcoder_data;

void reff_transcoder_data_make(reff_transcoder_data *d, size_t n, size_t d_in, size_t d_out,
                               size_t n_true, double active, double skip_sd, uint64_t seed);
void reff_transcoder_data_free(reff_transcoder_data *d);

/* Mean over the true directions (n_true x dim) of the best cosine with any of
 * the rows (n_rows x dim, floats); *above (may be NULL) gets the share of true
 * directions whose best cosine exceeds 0.9. */
double reff_mmcs(const float *rows, size_t n_rows, size_t dim, const double *dirs,
                 size_t n_true, double *above);

/* The same for columns: cols is dim x n_cols (e.g. W_enc, d_in x d_sae). */
double reff_mmcs_columns(const float *cols, size_t dim, size_t n_cols, const double *dirs,
                         size_t n_true, double *above);

#endif
