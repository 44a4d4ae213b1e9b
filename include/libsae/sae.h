/*
 * libsae: train sparse autoencoders (SAEs) in C.
 *
 * This header is the reference manual: what is not declared here is not API.
 *
 * A training loop, in full:
 *
 *     sae_model *m;  sae_optimizer *o;  sae_losses l;
 *     if (sae_model_create(&m, d_in, d_sae, 42) != SAE_OK) return 1;
 *     if (sae_optimizer_create(&o, m) != SAE_OK) { sae_model_free(m); return 1; }
 *     sae_optimizer_set(o, SAE_OPT_L1_COEFF, 5.0);
 *     for (size_t step = 0; step < n_steps; step++) {
 *         const float *x = batch(step);            // n_tokens x d_in floats
 *         int rc = sae_step(m, o, x, n_tokens, &l);
 *         if (rc != SAE_OK) { fprintf(stderr, "%s\n", sae_status_string(rc)); break; }
 *     }
 *     sae_optimizer_free(o);  sae_model_free(m);
 *
 * The model (SAELens "standard" ReLU SAE, all tensors float32, row-major):
 *
 *     W_enc: d_in x d_sae   b_enc: d_sae   W_dec: d_sae x d_in   b_dec: d_in
 *     f     = ReLU((x - b_dec) W_enc + b_enc)          features, 1 x d_sae per token
 *     x_hat = f W_dec + b_dec                          reconstruction, 1 x d_in
 *
 * and the training loss over a batch of n tokens x_1..x_n:
 *
 *     l2   = (1/n) sum_t sum_j (x_hat_tj - x_tj)^2
 *     l1   = (1/n) sum_t sum_i f_ti * ||W_dec[i,:]||_2
 *     loss = l2 + lambda * l1
 *     l0   = (1/n) sum_t #{i : f_ti > 0}                (reported, not trained)
 *
 * The L1 term weights each feature by the norm of its decoder row, so the
 * optimizer cannot shrink f and grow W_dec to dodge the penalty. It is computed
 * from the d_sae row norms times f; the library never builds a per-token
 * d_sae x d_in tensor.
 *
 * Conventions used throughout:
 * - Every function that can fail returns an int status: SAE_OK (0) or a negative
 *   SAE_E_* code. On failure, nothing the call could modify has changed (models,
 *   optimizers, caller buffers other than documented outputs, files), and an
 *   output handle pointer is set to NULL.
 * - Buffers are caller-owned. Their shapes are given as rows x columns of floats,
 *   row-major, with no padding between rows. The library never keeps a pointer to
 *   a caller buffer after a call returns.
 * - The library never prints, never exits, never aborts, and keeps no global
 *   mutable state: all scratch memory lives in the handles or in the call.
 *
 * Threads: handles are not internally locked. Read-only calls on one model
 * (sae_encode, sae_decode, sae_loss, sae_fvu, sae_model_get_tensor, the size
 * queries) may run concurrently from several threads. sae_step needs the model
 * and the optimizer to itself; sae_model_set_tensor needs the model to itself.
 * Different handles are independent. Dense algebra goes through CBLAS, whose
 * own threads are configured by the BLAS library (e.g. OPENBLAS_NUM_THREADS).
 *
 * ABI: a program built against any 0.x header keeps working with any later
 * libsae.so.0. Within SONAME 0 the library only grows: new functions, new enum
 * values, new options. Existing signatures, enum values and the frozen struct
 * sae_losses never change, and no function is removed. The enums are named
 * (enum sae_status, enum sae_tensor, enum sae_option) so that the ABI check can
 * see their values, but functions take and return plain int. Only names with the
 * prefix sae_ or SAE_ are declared here. See README.md, "ABI policy".
 */
#ifndef SAE_H_INCLUDED
#define SAE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* SAE_API marks the exported functions. Static-library users may define
 * SAE_STATIC_DEFINE; nothing else needs configuring. */
#ifndef SAE_API
#  if defined(_WIN32) && !defined(SAE_STATIC_DEFINE)
#    ifdef SAE_BUILDING_LIBRARY
#      define SAE_API __declspec(dllexport)
#    else
#      define SAE_API __declspec(dllimport)
#    endif
#  elif defined(__GNUC__) && __GNUC__ >= 4
#    define SAE_API __attribute__((visibility("default")))
#  else
#    define SAE_API
#  endif
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

#define SAE_VERSION_MAJOR 0
#define SAE_VERSION_MINOR 1
#define SAE_VERSION_PATCH 0
#define SAE_VERSION_NUMBER \
    (SAE_VERSION_MAJOR * 10000 + SAE_VERSION_MINOR * 100 + SAE_VERSION_PATCH)

/* The version of the library actually linked, as SAE_VERSION_NUMBER computes it
 * (compare with the header's value to detect a mismatch), and as "0.1.0". */
SAE_API unsigned sae_version_number(void);
SAE_API const char *sae_version_string(void);

/* ------------------------------------------------------------------------ */
/* Status codes. Values are pinned forever and never reused.                 */
/* ------------------------------------------------------------------------ */

enum sae_status {
    SAE_OK = 0,
    SAE_E_INVALID_ARG = -1, /* NULL pointer, zero or overflowing size, mismatched
                               count or shape, option out of range */
    SAE_E_NOMEM = -2,       /* an allocation failed; nothing leaked or changed */
    SAE_E_NONFINITE = -3,   /* NaN or Inf in input data or a hyperparameter, or a
                               step whose gradients/new parameters would be */
    SAE_E_IO = -4,          /* a file could not be read or written */
    SAE_E_FORMAT = -5,      /* a file or buffer is malformed or unsupported */
    SAE_E_STATE = -6        /* the call is not valid in the handle's state */
};

/* A static, never-NULL English description of a status code ("unknown status"
 * for values this version does not know). */
SAE_API const char *sae_status_string(int status);

/* ------------------------------------------------------------------------ */
/* Model                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct sae_model sae_model;

/* Create a ReLU SAE with d_in inputs and d_sae features, initialised as in
 * Anthropic's April 2024 recipe: each row of W_dec is a uniformly random
 * direction scaled to L2 norm 0.1, W_enc = W_dec^T, b_enc = b_dec = 0.
 * The initialisation depends only on (d_in, d_sae, seed): the same bits on every
 * run, machine and thread count (the library has its own RNG).
 * Errors: SAE_E_INVALID_ARG (out NULL, a zero dimension, a dimension above
 * INT_MAX (CBLAS's limit), or a parameter count whose byte size overflows
 * size_t), SAE_E_NOMEM. On error *out is NULL. */
SAE_API int sae_model_create(sae_model **out, size_t d_in, size_t d_sae, uint64_t seed);

/* Free a model. NULL is a no-op. */
SAE_API void sae_model_free(sae_model *m);

/* The model's dimensions; 0 if m is NULL. */
SAE_API size_t sae_model_d_in(const sae_model *m);
SAE_API size_t sae_model_d_sae(const sae_model *m);

/* Tensor selectors for get/set, in the SAELens layout (row-major):
 *   SAE_W_ENC: d_in x d_sae   SAE_B_ENC: d_sae
 *   SAE_W_DEC: d_sae x d_in   SAE_B_DEC: d_in                                 */
enum sae_tensor {
    SAE_W_ENC = 0,
    SAE_B_ENC = 1,
    SAE_W_DEC = 2,
    SAE_B_DEC = 3
};

/* The number of floats in tensor `which` (e.g. d_in * d_sae for SAE_W_ENC), or 0
 * if m is NULL or `which` is unknown. */
SAE_API size_t sae_model_tensor_size(const sae_model *m, int which);

/* Copy tensor `which` out to dst (count floats, in the layout above). count must
 * be exactly the tensor's size. Errors: SAE_E_INVALID_ARG. */
SAE_API int sae_model_get_tensor(const sae_model *m, int which, float *dst, size_t count);

/* Replace tensor `which` with src (count floats, exactly the tensor's size).
 * Errors: SAE_E_INVALID_ARG; SAE_E_NONFINITE if src holds NaN or Inf (the
 * model is then unchanged). */
SAE_API int sae_model_set_tensor(sae_model *m, int which, const float *src, size_t count);

/* ------------------------------------------------------------------------ */
/* Encode, decode, loss                                                      */
/* ------------------------------------------------------------------------ */

/* f = ReLU((x - b_dec) W_enc + b_enc).
 * x: n_tokens x d_in floats (read); f: n_tokens x d_sae floats (written).
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens 0 or overflowing), SAE_E_NONFINITE
 * (x holds NaN/Inf; f is then untouched), SAE_E_NOMEM. */
SAE_API int sae_encode(const sae_model *m, const float *x, size_t n_tokens, float *f);

/* x_hat = f W_dec + b_dec.
 * f: n_tokens x d_sae floats (read; any finite values); x_hat: n_tokens x d_in
 * floats (written). Errors as sae_encode. */
SAE_API int sae_decode(const sae_model *m, const float *f, size_t n_tokens, float *x_hat);

/* The losses of a batch, as defined at the top of this header. This struct is
 * frozen: it will never change size or layout. */
typedef struct sae_losses {
    double loss; /* l2 + lambda * l1 */
    double l2;   /* squared error summed over d_in, averaged over tokens */
    double l1;   /* sum_i f_i ||W_dec[i,:]||, averaged over tokens (no lambda) */
    double l0;   /* active features per token, averaged over tokens */
} sae_losses;

/* Evaluate the losses of the batch x (n_tokens x d_in floats) with L1
 * coefficient lambda (>= 0, finite) without changing anything.
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens 0, lambda < 0), SAE_E_NONFINITE
 * (NaN/Inf in x or lambda), SAE_E_NOMEM. */
SAE_API int sae_loss(const sae_model *m, const float *x, size_t n_tokens, double lambda,
                     sae_losses *out);

/* Fraction of variance unexplained on the batch x (n_tokens x d_in floats):
 *     sum_t ||x_t - x_hat_t||^2  /  sum_t ||x_t - mean_t(x)||^2
 * 0 is a perfect reconstruction, 1 is no better than predicting the batch mean.
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens < 2, or x with zero variance),
 * SAE_E_NONFINITE, SAE_E_NOMEM. */
SAE_API int sae_fvu(const sae_model *m, const float *x, size_t n_tokens, double *out);

/* ------------------------------------------------------------------------ */
/* Optimizer and training step                                               */
/* ------------------------------------------------------------------------ */

typedef struct sae_optimizer sae_optimizer;

/* Create an Adam optimizer (torch.optim.Adam semantics, no weight decay) for
 * models shaped like m: moments start at zero, the step count at 0, the
 * per-feature activity counters at 0, and the options at their defaults.
 * The optimizer does not keep m: it may step any model of the same shape.
 * Errors: SAE_E_INVALID_ARG, SAE_E_NOMEM. On error *out is NULL. */
SAE_API int sae_optimizer_create(sae_optimizer **out, const sae_model *m);

/* Free an optimizer. NULL is a no-op. */
SAE_API void sae_optimizer_free(sae_optimizer *o);

/* Options, set with sae_optimizer_set and read with sae_optimizer_get.
 * Numbers are pinned; new options get new numbers.
 *
 *   option              default  allowed
 *   SAE_OPT_LR          5e-5     > 0, finite
 *   SAE_OPT_BETA1       0.9      [0, 1)
 *   SAE_OPT_BETA2       0.999    [0, 1)
 *   SAE_OPT_EPS         1e-8     > 0, finite
 *   SAE_OPT_L1_COEFF    5        >= 0, finite (lambda)
 *   SAE_OPT_GRAD_CLIP   1        >= 0, finite; 0 turns clipping off. When on,
 *                                gradients are scaled by clip / ||g|| whenever the
 *                                global L2 norm ||g|| over all parameters exceeds clip.
 *   SAE_OPT_THREADS     0        a whole number in [0, 1024]: threads for the
 *                                library's own loops in sae_step (0: one per online
 *                                core). BLAS calls are made from one thread at a
 *                                time, never inside these loops, so the library's
 *                                threads and the BLAS library's threads (set with
 *                                e.g. OPENBLAS_NUM_THREADS) take turns instead of
 *                                oversubscribing the cores. With a fixed thread
 *                                count and BLAS configuration, steps are
 *                                deterministic: the same inputs give the same bits.
 *   SAE_OPT_KERNEL      0        SAE_KERNEL_AUTO (0), SAE_KERNEL_DENSE (1) or
 *                                SAE_KERNEL_SPARSE (2): how sae_step runs the
 *                                decoder and the backward pass. Dense uses CBLAS
 *                                GEMMs; sparse touches only the (token, feature)
 *                                pairs with f > 0. Auto picks by the measured
 *                                density of each batch. All give the same
 *                                gradients up to float rounding.
 *   SAE_OPT_TOTAL_STEPS, SAE_OPT_L1_WARMUP_FRACTION, SAE_OPT_LR_WARMUP_STEPS,
 *   SAE_OPT_LR_DECAY_FRACTION, SAE_OPT_LR_SCHEDULE (9 to 13): the schedules of
 *                                the lr and lambda, all off by default; see
 *                                "Training recipe" below.
 */
enum sae_option {
    SAE_OPT_LR = 1,
    SAE_OPT_BETA1 = 2,
    SAE_OPT_BETA2 = 3,
    SAE_OPT_EPS = 4,
    SAE_OPT_L1_COEFF = 5,
    SAE_OPT_GRAD_CLIP = 6,
    SAE_OPT_THREADS = 7,
    SAE_OPT_KERNEL = 8,
    SAE_OPT_TOTAL_STEPS = 9,         /* schedules: see "Training recipe" */
    SAE_OPT_L1_WARMUP_FRACTION = 10,
    SAE_OPT_LR_WARMUP_STEPS = 11,
    SAE_OPT_LR_DECAY_FRACTION = 12,
    SAE_OPT_LR_SCHEDULE = 13
};

/* Values of SAE_OPT_KERNEL. */
enum {
    SAE_KERNEL_AUTO = 0,
    SAE_KERNEL_DENSE = 1,
    SAE_KERNEL_SPARSE = 2
};

/* Set an option. Errors: SAE_E_INVALID_ARG (o NULL, unknown option, value out
 * of the allowed range), SAE_E_NONFINITE (NaN or Inf). The optimizer is
 * unchanged on error. */
SAE_API int sae_optimizer_set(sae_optimizer *o, int option, double value);

/* Read an option into *value. Errors: SAE_E_INVALID_ARG. */
SAE_API int sae_optimizer_get(const sae_optimizer *o, int option, double *value);

/* The number of successful steps taken with this optimizer. 0 if o is NULL. */
SAE_API uint64_t sae_optimizer_steps(const sae_optimizer *o);

/* One training step on the batch x (n_tokens x d_in floats): forward pass,
 * exact gradients of loss = l2 + lambda * l1 (ReLU'(0) = 0), optional global
 * gradient-norm clipping, and one Adam update of all four tensors.
 * The lr and lambda are those of step sae_optimizer_steps(o) + 1 of the
 * schedules ("Training recipe"; with no schedule option set, SAE_OPT_LR and
 * SAE_OPT_L1_COEFF themselves).
 * *out (may be NULL) receives the losses of the batch before the update, its
 * loss computed with the lambda the step applied.
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens 0 or overflowing, optimizer made
 * for another shape, schedule options that contradict each other),
 * SAE_E_NONFINITE (NaN/Inf in x, or gradients or updated
 * parameters that would not be finite), SAE_E_NOMEM (the step's workspace grows
 * when a larger batch than ever before arrives). On any error the model, the
 * optimizer and *out are unchanged. */
SAE_API int sae_step(sae_model *m, sae_optimizer *o, const float *x, size_t n_tokens,
                     sae_losses *out);

/* ------------------------------------------------------------------------ */
/* Feature activity (dead features)                                          */
/* ------------------------------------------------------------------------ */

/* Every sae_step records, per feature, how many training tokens have passed
 * since the feature last fired (f > 0). Counters start at 0 when the optimizer
 * is created, so a feature counts as dead only after it has been silent for a
 * full window.
 *
 * Copy the d_sae counters to dst (count must equal d_sae).
 * Errors: SAE_E_INVALID_ARG. */
SAE_API int sae_optimizer_tokens_since_fired(const sae_optimizer *o, uint64_t *dst,
                                             size_t count);

/* *n_dead = the number of features that have not fired in the last
 * window_tokens training tokens (counter >= window_tokens). window_tokens must
 * be > 0. Errors: SAE_E_INVALID_ARG. */
SAE_API int sae_optimizer_dead_count(const sae_optimizer *o, uint64_t window_tokens,
                                     size_t *n_dead);

/* ------------------------------------------------------------------------ */
/* Training recipe: schedules, input normalisation, b_dec from data, dead    */
/* features and their resampling, feature density                            */
/* ------------------------------------------------------------------------ */

/* The pieces of the modern recipe (Anthropic's April 2024 update, Towards
 * Monosemanticity, SAELens), used together like this:
 *
 *     double s;                                   // E ||s x||^2 = d_in
 *     sae_estimate_input_scale(sample, n_sample, d_in, &s);
 *     ... multiply the sample and every batch by s ...
 *     sae_model_init_b_dec(m, scaled_sample, n_sample, SAE_B_DEC_GEOMETRIC_MEDIAN);
 *     sae_optimizer_set(o, SAE_OPT_TOTAL_STEPS, n_steps);
 *     sae_optimizer_set(o, SAE_OPT_L1_WARMUP_FRACTION, 0.05);
 *     sae_optimizer_set(o, SAE_OPT_LR_SCHEDULE, SAE_LR_LINEAR);
 *     sae_optimizer_set(o, SAE_OPT_LR_DECAY_FRACTION, 0.2);
 *     for (...) sae_step(m, o, scaled_batch, n_tokens, &l);
 *     sae_model_fold_input_scale(m, s);           // the model now takes raw x
 *
 * Schedules. Options of the optimizer (sae_optimizer_set), applied by
 * sae_step to the step it takes, t = sae_optimizer_steps(o) + 1 (1-based).
 * With T = SAE_OPT_TOTAL_STEPS, lr = SAE_OPT_LR, lambda = SAE_OPT_L1_COEFF:
 *
 *   option                      default  allowed, and what it does
 *   SAE_OPT_TOTAL_STEPS         0        a whole number in [0, 2^53]: the steps
 *                                        the run will take. 0 = unknown: the L1
 *                                        warm-up and the lr decays, which need
 *                                        T, are then off (the lr warm-up is not).
 *   SAE_OPT_L1_WARMUP_FRACTION  0        [0, 1] (recipe: 0.05). With
 *                                        L = round(fraction * T) > 0,
 *                                        lambda_t = lambda * min(1, t / L):
 *                                        linear from 0 (before step 1) to
 *                                        lambda at step L. Off if L = 0.
 *   SAE_OPT_LR_WARMUP_STEPS     0        a whole number W in [0, 2^53]: the lr
 *                                        multiplier is t / W for t < W (lr / W
 *                                        at step 1, lr from step W on), in every
 *                                        schedule, T known or not. Off if W = 0.
 *   SAE_OPT_LR_DECAY_FRACTION   0        [0, 1] (recipe: 0.2); SAE_LR_LINEAR
 *                                        only. With D = round(fraction * T) > 0
 *                                        the multiplier is (T - t) / D for
 *                                        t > T - D: 1 at step T - D, 0 at step T.
 *   SAE_OPT_LR_SCHEDULE         0        SAE_LR_CONSTANT: warm-up, then lr.
 *                                        SAE_LR_LINEAR: warm-up, lr, and the
 *                                        linear decay over the last D steps.
 *                                        SAE_LR_COSINE: warm-up, then the
 *                                        multiplier (1 + cos(pi (t - W) / (T - W))) / 2
 *                                        for W < t <= T: 1 after the warm-up,
 *                                        0 at step T.
 *
 * lr_t is lr times the smaller of the warm-up and decay multipliers. L and D
 * are fraction * T rounded to the nearest whole step, halves away from zero.
 *
 * Past step T every schedule holds its final value: lambda_t = lambda, and
 * lr_t = 0 for SAE_LR_COSINE and for SAE_LR_LINEAR with D > 0 (lr otherwise).
 * A step with lr_t = 0 still runs: it reports the losses and updates the Adam
 * moments, the step count and the activity counters, but the update it adds
 * to each parameter is 0, so no parameter changes value. Raise
 * SAE_OPT_TOTAL_STEPS to train further.
 *
 * Each option is range-checked when set. Their combination is checked where
 * it is used (sae_step and the two queries below), so that options can be set
 * or restored in any order: when T > 0, SAE_LR_CONSTANT needs W <= T,
 * SAE_LR_LINEAR needs W + D <= T and SAE_LR_COSINE needs W < T. Otherwise
 * those calls return SAE_E_INVALID_ARG and change nothing.
 *
 * The losses sae_step reports use lambda_t, the coefficient it applied.
 */

/* Values of SAE_OPT_LR_SCHEDULE. */
enum sae_lr_schedule {
    SAE_LR_CONSTANT = 0,
    SAE_LR_LINEAR = 1,
    SAE_LR_COSINE = 2
};

/* The learning rate (*lr) and L1 coefficient (*lambda) that sae_step applies
 * at step `step` (1-based: the first sae_step takes step 1), from o's current
 * options, by the formulas above; sae_step uses exactly these values. Pure
 * queries: any step may be asked, before or after it is taken.
 * Errors: SAE_E_INVALID_ARG (o or the output NULL, step 0, schedule options
 * that contradict each other); the output is then untouched. */
SAE_API int sae_optimizer_lr_at(const sae_optimizer *o, uint64_t step, double *lr);
SAE_API int sae_optimizer_l1_coeff_at(const sae_optimizer *o, uint64_t step, double *lambda);

/* Input normalisation (SAELens's "expected_average_only_in"). Activation
 * norms differ widely between models and layers; training on s x, with s
 * chosen so that the mean squared norm of s x is d_in, lets one set of
 * hyperparameters serve them all.
 *
 * The scale of a sample x (n_tokens x d_in floats, row-major, read):
 *     *scale = sqrt(d_in / ((1/n_tokens) sum_t ||x_t||^2)),
 * computed in double. Use a sample of the training data (thousands of tokens).
 * Errors: SAE_E_INVALID_ARG (x or scale NULL, n_tokens or d_in 0, a size
 * whose byte count overflows, every x_t zero), SAE_E_NONFINITE (NaN/Inf in x).
 * *scale is untouched on error. */
SAE_API int sae_estimate_input_scale(const float *x, size_t n_tokens, size_t d_in,
                                     double *scale);

/* Fold the input scale s into the weights of a model trained on s x, so that
 * it takes raw activations x. The trained model computes
 *     f     = ReLU((s x - b_dec) W_enc + b_enc) = ReLU((x - b_dec / s) (s W_enc) + b_enc)
 *     x_hat = f W_dec + b_dec, its reconstruction of s x; that of x is
 *     x_hat / s = f (W_dec / s) + b_dec / s,
 * so the folded model is W_enc' = s W_enc, b_enc' = b_enc, W_dec' = W_dec / s,
 * b_dec' = b_dec / s: on raw x it gives the trained model's features on s x,
 * and that model's reconstruction divided by s. Each new value is computed in
 * double and rounded once to float (when s is a power of two, and nothing
 * under- or overflows, the fold is exact). Folding with 1 / s undoes it up to
 * that rounding. An optimizer's Adam moments refer to the unfolded weights:
 * fold when training is over (to save or deploy the model).
 * Errors: SAE_E_INVALID_ARG (m NULL, scale <= 0), SAE_E_NONFINITE (scale NaN
 * or Inf, or a folded weight that would overflow float). The model is
 * unchanged on error. Needs the model to itself. */
SAE_API int sae_model_fold_input_scale(sae_model *m, double scale);

/* Methods of sae_model_init_b_dec. */
enum sae_b_dec_init {
    SAE_B_DEC_MEAN = 0,
    SAE_B_DEC_GEOMETRIC_MEDIAN = 1
};

/* Set b_dec from a sample x (n_tokens x d_in floats, row-major, read) of the
 * data the model will be trained on (scaled, if training on s x):
 *   SAE_B_DEC_MEAN: the mean of the x_t, summed in double.
 *   SAE_B_DEC_GEOMETRIC_MEDIAN: the point y minimising sum_t ||x_t - y||_2
 *     (robust to outliers), by Weiszfeld's iteration in double from the mean,
 *     with the Vardi-Zhang modification for an iterate that lands exactly on
 *     data points (exact: no smoothing epsilon). It stops when an iteration
 *     moves y by at most 1e-10 times the mean distance of the points from
 *     their mean, or after 1000 iterations, each O(n_tokens * d_in). Then, if
 *     the data point nearest y is itself a median (the sum of the unit vectors
 *     from it to the other points has norm at most the number of points equal
 *     to it), y is that point exactly: an odd number of points on a line gives
 *     the middle one.
 * The result is rounded once to float. Only b_dec changes: call before
 * training (an optimizer's moments are not touched).
 * Errors: SAE_E_INVALID_ARG (m or x NULL, n_tokens 0 or overflowing, unknown
 * method), SAE_E_NONFINITE (NaN/Inf in x), SAE_E_NOMEM. The model is
 * unchanged on error. Needs the model to itself. */
SAE_API int sae_model_init_b_dec(sae_model *m, const float *x, size_t n_tokens, int method);

/* The dead features: those that have not fired in the last window_tokens
 * training tokens (counter >= window_tokens, as sae_optimizer_dead_count;
 * OpenAI's threshold is 10M tokens). Writes the first min(capacity, total)
 * indices, ascending, to idx[0..] and the total number of dead features to
 * *n_dead; a capacity below the total is not an error (call with capacity 0
 * and idx NULL to size the buffer). idx entries past the written ones are
 * untouched. The dead fraction is *n_dead / d_sae.
 * Errors: SAE_E_INVALID_ARG (o or n_dead NULL, window_tokens 0, idx NULL with
 * capacity > 0). */
SAE_API int sae_optimizer_dead_features(const sae_optimizer *o, uint64_t window_tokens,
                                        size_t *idx, size_t capacity, size_t *n_dead);

/* Resample the dead features (those silent for window_tokens training
 * tokens) as in Towards Monosemanticity ("Neuron Resampling"), from the
 * inputs x (n_tokens x d_in floats, row-major, read; e.g. a large random
 * sample of training data, prepared as the training batches are):
 *   1. each input gets the probability p_t = L_t^2 / sum_u L_u^2, where
 *      L_t = ||x_hat_t - x_t||^2 is its reconstruction loss under the current
 *      model: the square of the loss, as Anthropic specify. Inputs that are
 *      all zero get 0 (they have no direction). If every loss is 0, the
 *      nonzero inputs are equally likely.
 *   2. each dead feature i, in ascending order, draws one input t (with
 *      replacement, so one input may serve several features) and gets
 *          W_dec[i,:] = x_t / ||x_t||   (unit norm, the raw input's direction)
 *          W_enc[:,i] = x_t / ||x_t|| * 0.2 * (mean over the live features k
 *                       of ||W_enc[:,k]||)
 *          b_enc[i]   = 0;
 *   3. the Adam moments (both) of W_enc[:,i], W_dec[i,:] and b_enc[i] are set
 *      to 0, and so is feature i's tokens-since-fired counter.
 * Nothing else changes: the other features' parameters and moments, b_dec,
 * the step count and the options stay bit-identical. The draws depend only on
 * seed and the data: the same call gives the same bits. *n_resampled (may be
 * NULL) gets the number of features resampled (0 if none is dead).
 * Errors: SAE_E_INVALID_ARG (m, o or x NULL, n_tokens 0 or overflowing,
 * window_tokens 0, o made for another shape, every input zero while a feature
 * is dead), SAE_E_NONFINITE (NaN/Inf in x, or a reconstruction that
 * overflows), SAE_E_STATE (every feature is dead: there is no live encoder
 * norm to scale by), SAE_E_NOMEM. The model, the optimizer and *n_resampled
 * are unchanged on error. Needs the model and the optimizer to itself. */
SAE_API int sae_resample_dead(sae_model *m, sae_optimizer *o, const float *x, size_t n_tokens,
                              uint64_t window_tokens, uint64_t seed, size_t *n_resampled);

/* The log10 feature-density histogram of a batch x (n_tokens x d_in floats,
 * row-major, read). Feature i's density is p_i = (tokens with f_ti > 0) /
 * n_tokens. Dead features (p_i = 0, log10 undefined) are not binned: *n_dead
 * gets their number (the dead fraction is *n_dead / d_sae). Each live feature
 * adds 1 to counts[k], k = floor((log10(p_i) - log10_min) * n_bins /
 * (log10_max - log10_min)), clamped to [0, n_bins - 1]: densities below
 * log10_min land in the first bin, those at or above log10_max in the last.
 * p_i lies in [1/n_tokens, 1], so [log10(1/n_tokens), 0] is the range that
 * clamps nothing. counts: n_bins uint64_t (written); the counts and *n_dead
 * sum to d_sae.
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens or n_bins 0, overflowing size,
 * log10_min >= log10_max), SAE_E_NONFINITE (NaN/Inf in x or a bound),
 * SAE_E_NOMEM. counts and *n_dead are untouched on error. Read-only: may run
 * concurrently with the other read-only calls on the model. */
SAE_API int sae_feature_density_histogram(const sae_model *m, const float *x, size_t n_tokens,
                                          double log10_min, double log10_max, size_t n_bins,
                                          uint64_t *counts, size_t *n_dead);

#ifdef __cplusplus
}
#endif

#endif /* SAE_H_INCLUDED */
