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
 * The model (here the SAELens "standard" ReLU SAE that sae_model_create makes;
 * TopK, BatchTopK and JumpReLU change f and the loss: see "Architectures"; all
 * tensors float32, row-major):
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
 *   mutable state: all scratch memory lives in the handles or in the call. The
 *   one exception is the message sae_error_detail returns, kept per thread.
 * - A failing call also records, for the calling thread, a message that says
 *   why (sae_error_detail): the argument, option, key, tensor or file.
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
#define SAE_VERSION_MINOR 2
#define SAE_VERSION_PATCH 0
#define SAE_VERSION_NUMBER \
    (SAE_VERSION_MAJOR * 10000 + SAE_VERSION_MINOR * 100 + SAE_VERSION_PATCH)

/* The version of the library actually linked, as SAE_VERSION_NUMBER computes it
 * (compare with the header's value to detect a mismatch), and as "0.2.0".
 * Functions marked "Since 0.2" need a libsae.so.0 of version 0.2 or later
 * (symbol version SAE_0.2). */
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
    SAE_E_STATE = -6,       /* the call is not valid in the handle's state */
    SAE_E_COMM = -7         /* a communicator function (sae_comm) reported a
                               failure: see "Distributed training" */
};

/* A static, never-NULL English description of a status code ("unknown status"
 * for values this version does not know). */
SAE_API const char *sae_status_string(int status);

/* Why the last failing libsae call on the calling thread failed, in English,
 * naming what was wrong: the function and the argument, option, key, tensor or
 * file, e.g. "sae_step: x: n_tokens x d_in floats = 2^62 x 768 overflows
 * size_t" or "sae_model_load: run/cfg.json: key \"k\": 0 is outside [1, 512]".
 * Never NULL; "" before the thread's first failure. Successful calls leave it
 * as it was, so read it right after the call that failed. The string belongs
 * to the library and stays valid until the thread's next failing call; each
 * thread has its own (like dlerror: a failed load has no handle to keep it).
 * The status code says what kind of failure it was; this text is for people
 * and may change between versions. Since 0.2. */
SAE_API const char *sae_error_detail(void);

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

/* *out = a new model that is a deep copy of m: every tensor bit for bit, the
 * architecture, k, BatchTopK's threshold and JumpReLU's log thresholds; it
 * computes exactly what m computes and is independent of it (free both).
 * Reads m only: may run concurrently with the other read-only calls on m.
 * Errors: SAE_E_INVALID_ARG (out or m NULL), SAE_E_NOMEM. On error *out is
 * NULL. Since 0.2. */
SAE_API int sae_model_clone(sae_model **out, const sae_model *m);

/* The model's dimensions; 0 if m is NULL. */
SAE_API size_t sae_model_d_in(const sae_model *m);
SAE_API size_t sae_model_d_sae(const sae_model *m);

/* Tensor selectors for get/set, in the SAELens layout (row-major):
 *   SAE_W_ENC: d_in x d_sae   SAE_B_ENC: d_sae
 *   SAE_W_DEC: d_sae x d_in   SAE_B_DEC: d_in
 *   SAE_THRESHOLD: JumpReLU: d_sae thresholds theta_i > 0 (trained as log theta);
 *                  BatchTopK: 1 float, the inference threshold (negative until
 *                  training has set it); other architectures: none (size 0)  */
enum sae_tensor {
    SAE_W_ENC = 0,
    SAE_B_ENC = 1,
    SAE_W_DEC = 2,
    SAE_B_DEC = 3,
    SAE_THRESHOLD = 4,
    SAE_W_SKIP = 5,   /* skip transcoders: d_out x d_in (SAELens's layout) */
    SAE_B_MAG = 6,    /* Gated: d_sae, the magnitude path's bias */
    SAE_R_MAG = 7     /* Gated: d_sae, the magnitude path's log scales */
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
/* Architectures                                                             */
/* ------------------------------------------------------------------------ */

/* The activation is fixed when a model is created. With pre = (x - b_dec) W_enc
 * + b_enc (d_sae values per token):
 *
 *   SAE_ARCH_RELU       f = ReLU(pre). Trained on l2 + lambda * l1 (the L1 term
 *                       weighted by decoder row norms). sae_model_create's model.
 *   SAE_ARCH_TOPK       f keeps the k largest values of ReLU(pre) per token, the
 *                       rest 0 (Gao et al. 2024; ties at the k-th value are kept
 *                       in feature order). Trained on l2 + auxk_coeff * AuxK: no
 *                       sparsity penalty, lambda is ignored (sparsity is k).
 *   SAE_ARCH_BATCHTOPK  training keeps the n * k largest values of ReLU(pre)
 *                       over the whole batch of n tokens (Bussmann et al. 2024),
 *                       same loss as TopK. Each step moves the inference
 *                       threshold (SAE_THRESHOLD) toward the smallest value kept:
 *                       threshold = beta * threshold + (1 - beta) * min_kept (the
 *                       first step sets it). sae_encode and friends use
 *                       f = pre where pre > threshold (ReLU before the first step),
 *                       which is how SAELens loads it (as JumpReLU).
 *   SAE_ARCH_JUMPRELU   f_i = pre_i * H(pre_i - theta_i), theta_i = exp(t_i) > 0
 *                       learned per feature (Rajamanoharan et al. 2024). Trained
 *                       on l2 + lambda * l0 with l0 = (1/n) sum_t #{i : f_ti > 0},
 *                       through straight-through estimators with the rectangle
 *                       kernel K(u) = 1 for |u| < 1/2 and bandwidth eps:
 *                       dL/dtheta_i gets -(theta_i / eps) K((pre - theta_i)/eps) dL/df
 *                       from the jump and -(1 / eps) K(...) lambda / n from l0;
 *                       dL/dt_i = theta_i dL/dtheta_i.
 *   SAE_ARCH_GATED      Gated SAE (Rajamanoharan et al. 2024). A gate path and a
 *                       magnitude path share the encoder matrix: with
 *                       u = (x - b_dec) W_enc,
 *                           pi_gate = u + b_gate,   pi_mag = exp(r_mag) u + b_mag,
 *                           f = H(pi_gate) ReLU(pi_mag)   (H(0) = 0),
 *                       one GEMM for both paths. b_gate is SAE_B_ENC, b_mag
 *                       SAE_B_MAG, r_mag SAE_R_MAG (all start at 0). Trained on
 *                       the paper's loss, with the sparsity term weighted by the
 *                       decoder norms r_i as everywhere in libsae:
 *                           l2 + lambda (1/n) sum_t sum_i ReLU(pi_gate)_ti r_i
 *                              + (1/n) sum_t ||ReLU(pi_gate_t) W_dec + b_dec - x_t||^2
 *                       where the last term (the auxiliary reconstruction) reads a
 *                       frozen copy of the decoder: it trains the gate path (and
 *                       b_dec through the encoder's input), not W_dec or b_dec
 *                       (SAELens 6.18 lets that term train the decoder;
 *                       dictionary_learning and the paper freeze it). sae_loss and
 *                       sae_step report that whole loss; the step always runs the
 *                       dense kernel (SAE_OPT_KERNEL does not apply).
 *                       Gated needs a larger lambda than ReLU for the same l0
 *                       (the penalty acts on the gate, not on f).
 *   SAE_ARCH_MATRYOSHKA Matryoshka BatchTopK (Bussmann et al. 2025): a BatchTopK
 *                       SAE whose first w_1 < w_2 < ... < w_M = d_sae features
 *                       each reconstruct x on their own: level m decodes the
 *                       features below w_m, x_hat_m = b_dec + sum_{i < w_m} f_i
 *                       W_dec[i,:], and the loss is sum_m l2(x_hat_m) (sae_loss
 *                       and sae_step: sae_losses.l2 is the full width's, .loss
 *                       the sum, plus AuxK's term in a step; sae_loss_levels
 *                       gives each level's l2). The unweighted sum is the
 *                       paper's and SAELens's (6.16.3+); dictionary_learning
 *                       averages the levels (the same gradient over M: scale lr
 *                       and the AuxK coefficient to match it). Trained with one
 *                       BatchTopK selection over the full width (its threshold
 *                       estimate and AuxK as BatchTopK's, AuxK on the full
 *                       width's residual); each level's reconstruction is a
 *                       prefix sum of a token's selected features, not a decode
 *                       of its own, so a step costs BatchTopK's plus M - 1
 *                       passes over n x d_in, and its workspace holds
 *                       (M + 1) n x d_in floats of gradient rows. Always the
 *                       sparse kernel (SAE_OPT_KERNEL does not apply); at most
 *                       UINT32_MAX / 2 tokens per step. Trains data-parallel
 *                       and feature-sharded too (sae_optimizer_set_comm,
 *                       sae_model_create_matryoshka_shard).
 *                       Inference (sae_encode, sae_output) as BatchTopK, with
 *                       its threshold.
 *
 * AuxK (TopK, BatchTopK and Matryoshka; Gao et al. 2024): with e = x - x_hat
 * (held fixed; Matryoshka: the full width's), the features dead for at least
 * SAE_OPT_DEAD_WINDOW training tokens, and
 * e_aux = sum of the top k_aux values of ReLU(pre) among dead features times
 * their decoder rows (no b_dec),
 *     AuxK = (1/n) sum_t ||e_aux_t - e_t||^2 / ((1/n) sum_t ||e_t - mean(e)||^2),
 * normalised as OpenAI's and dictionary_learning's trainers do.
 *
 * In every architecture, sae_losses.l1 reports sum_i f_i ||W_dec[i,:]|| and l0
 * the active count; sae_losses.loss is the loss trained (sae_loss: without AuxK,
 * which needs the optimizer's dead-feature counters).
 */
enum sae_arch {
    SAE_ARCH_RELU = 0,
    SAE_ARCH_TOPK = 1,
    SAE_ARCH_BATCHTOPK = 2,
    SAE_ARCH_JUMPRELU = 3,
    SAE_ARCH_GATED = 4,
    SAE_ARCH_MATRYOSHKA = 5
};

/* Create a model of architecture `arch`, initialised like sae_model_create
 * (JumpReLU thresholds all start at param). param: 0 for ReLU; k (a whole
 * number in [1, d_sae]) for TopK and BatchTopK; the initial threshold theta
 * (in [1e-30, 1e30]; the JumpReLU paper uses 0.001) for JumpReLU.
 * Errors: as sae_model_create; SAE_E_INVALID_ARG for an unknown arch or a param
 * out of range; SAE_E_NONFINITE for a NaN/Inf param. On error *out is NULL. */
SAE_API int sae_model_create_arch(sae_model **out, size_t d_in, size_t d_sae, uint64_t seed,
                                  int arch, double param);

/* The model's architecture (SAE_ARCH_*), or -1 if m is NULL. */
SAE_API int sae_model_arch(const sae_model *m);

/* k of a TopK, BatchTopK or Matryoshka model; 0 for other architectures or NULL. */
SAE_API size_t sae_model_k(const sae_model *m);

/* Create a Matryoshka BatchTopK SAE (SAE_ARCH_MATRYOSHKA) with k as BatchTopK's
 * and the level widths widths[0..n_widths): strictly increasing, each in
 * [1, d_sae]; d_sae is appended when the list does not end with it (as SAELens
 * does), so n_widths 0 (widths may then be NULL) gives one level, d_sae: plain
 * BatchTopK's loss. At most 64 levels. Initialised like sae_model_create.
 * Errors: as sae_model_create_arch; SAE_E_INVALID_ARG for widths that are
 * NULL with n_widths > 0, 0, above d_sae, not increasing, or too many.
 * On error *out is NULL. */
SAE_API int sae_model_create_matryoshka(sae_model **out, size_t d_in, size_t d_sae, uint64_t seed,
                                        size_t k, const size_t *widths, size_t n_widths);

/* The number of levels of a Matryoshka model (its last width is d_sae); 0 for
 * other architectures or NULL. */
SAE_API size_t sae_model_matryoshka_levels(const sae_model *m);

/* Copy the level widths of a Matryoshka model to widths (count must be exactly
 * sae_model_matryoshka_levels). Errors: SAE_E_INVALID_ARG. */
SAE_API int sae_model_matryoshka_widths(const sae_model *m, size_t *widths, size_t count);

/* Each level's reconstruction error of a Matryoshka model on x (n_tokens x
 * d_in): l2[m] = (1/n) sum_t ||x_hat_m,t - x_t||^2 with x_hat_m decoded from
 * the features below widths[m] (the inference features, as sae_encode: the
 * BatchTopK threshold), for m < count; count must be exactly
 * sae_model_matryoshka_levels (the last level is sae_loss's l2, their sum its
 * loss). One encoder pass and one decoder pass whatever the level count.
 * Read-only. Errors: SAE_E_INVALID_ARG (m, x or l2 NULL, n_tokens 0 or
 * overflowing, a model that is not Matryoshka, count not the level count, a
 * shard), SAE_E_NONFINITE (NaN/Inf in x, or errors that are not finite),
 * SAE_E_NOMEM. On error l2 is unchanged. */
SAE_API int sae_loss_levels(const sae_model *m, const float *x, size_t n_tokens, double *l2,
                            size_t count);

/* ------------------------------------------------------------------------ */
/* Transcoders                                                               */
/* ------------------------------------------------------------------------ */

/* A transcoder reads x (d_in values per token) and predicts a different target
 * y (d_out values per token; d_out may differ from d_in), e.g. an MLP's output
 * from its input (Dunefsky et al. 2024):
 *
 *     f     = act(x W_enc + b_enc)           no b_dec is subtracted from x
 *     y_hat = f W_dec + b_dec                W_dec: d_sae x d_out, b_dec: d_out
 *
 * A skip transcoder (Paulo et al. 2025) adds a learned linear map of the input:
 *
 *     y_hat = f W_dec + b_dec + x W_skip^T   W_skip: d_out x d_in (SAE_W_SKIP)
 *
 * act is ReLU, TopK, BatchTopK or JumpReLU, trained on that architecture's
 * loss with y_hat - y as the error (AuxK's residual is y - y_hat). There are
 * no Gated or Matryoshka transcoders. Initialisation: W_dec's rows and W_enc's
 * columns are independent random directions of norm 0.1 (there is no tied
 * initialisation between different spaces), b_enc, b_dec and W_skip are 0.
 *
 * Train with sae_step_target and evaluate with sae_loss_target and
 * sae_fvu_target (x and y of the same tokens); sae_step, sae_loss and sae_fvu
 * refuse a transcoder. sae_encode reads x (n x d_in); sae_decode gives
 * f W_dec + b_dec (n x d_out, without the skip term: it has no x);
 * sae_output gives y_hat.
 */

/* What a model maps: an autoencoder reconstructs its input; the others are
 * transcoders. */
enum sae_model_kind {
    SAE_KIND_AUTOENCODER = 0,
    SAE_KIND_TRANSCODER = 1,
    SAE_KIND_SKIP_TRANSCODER = 2
};

/* Create a transcoder of kind SAE_KIND_TRANSCODER or SAE_KIND_SKIP_TRANSCODER
 * with activation arch (SAE_ARCH_RELU, _TOPK, _BATCHTOPK or _JUMPRELU) and param
 * as sae_model_create_arch. Errors: as sae_model_create_arch (d_out as d_in);
 * SAE_E_INVALID_ARG for another kind or architecture. On error *out is NULL. */
SAE_API int sae_model_create_transcoder(sae_model **out, size_t d_in, size_t d_out,
                                        size_t d_sae, uint64_t seed, int kind, int arch,
                                        double param);

/* The width of the model's output: d_out of a transcoder, d_in of an
 * autoencoder; 0 if m is NULL. */
SAE_API size_t sae_model_d_out(const sae_model *m);

/* The model's kind (SAE_KIND_*), or -1 if m is NULL. */
SAE_API int sae_model_kind(const sae_model *m);

/* Draw the model's initial parameters again, as its create function does, from
 * seed and with decoder rows of L2 norm decoder_init_norm (SAELens's
 * decoder_init_norm; the create functions use 0.1, the April 2024 recipe's).
 * Every tensor is re-initialised except JumpReLU's thresholds; the
 * architecture, k, widths and shape stay, and a BatchTopK or Matryoshka
 * threshold becomes unset. An optimizer's state refers to the old parameters:
 * reinitialise before training (e.g. right after creating the model).
 * Errors: SAE_E_INVALID_ARG (m NULL, decoder_init_norm not in (0, 1e30]),
 * SAE_E_NONFINITE (NaN or Inf); the model is then unchanged. Needs the model
 * to itself. */
SAE_API int sae_model_reinit(sae_model *m, uint64_t seed, double decoder_init_norm);

/* ------------------------------------------------------------------------ */
/* Encode, decode, loss                                                      */
/* ------------------------------------------------------------------------ */

/* f = the model's activation of (x - b_dec) W_enc + b_enc: ReLU for
 * sae_model_create's model, TopK, BatchTopK's threshold or JumpReLU's for
 * the others (see "Architectures").
 * x: n_tokens x d_in floats (read); f: n_tokens x d_sae floats (written).
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens 0, or n_tokens x d_in or n_tokens
 * x d_sae floats overflowing size_t), SAE_E_NONFINITE (x holds NaN/Inf, or a
 * feature would overflow float: weights or inputs near FLT_MAX), SAE_E_NOMEM;
 * f is untouched on error. */
SAE_API int sae_encode(const sae_model *m, const float *x, size_t n_tokens, float *f);

/* x_hat = f W_dec + b_dec.
 * f: n_tokens x d_sae floats (read; any finite values); x_hat: n_tokens x d_out
 * floats (written; d_out = d_in for an autoencoder). A skip transcoder's skip
 * term needs x: sae_output adds it. Errors as sae_encode (SAE_E_NONFINITE:
 * NaN/Inf in f, or an x_hat that would overflow float); x_hat is untouched on
 * error. */
SAE_API int sae_decode(const sae_model *m, const float *f, size_t n_tokens, float *x_hat);

/* The losses of a batch, as defined at the top of this header. This struct is
 * frozen: it will never change size or layout. */
typedef struct sae_losses {
    double loss; /* the loss trained: l2 + lambda * l1 for ReLU (see "Architectures") */
    double l2;   /* squared error summed over d_in, averaged over tokens */
    double l1;   /* sum_i f_i ||W_dec[i,:]||, averaged over tokens (no lambda) */
    double l0;   /* active features per token, averaged over tokens */
} sae_losses;

/* Evaluate the losses of the batch x (n_tokens x d_in floats) with L1
 * coefficient lambda (>= 0, finite) without changing anything.
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens 0 or overflowing, lambda < 0),
 * SAE_E_NONFINITE (NaN/Inf in x or lambda, or a loss that overflows: e.g.
 * decoder rows whose norms exceed FLT_MAX), SAE_E_NOMEM; *out is untouched
 * on error. */
SAE_API int sae_loss(const sae_model *m, const float *x, size_t n_tokens, double lambda,
                     sae_losses *out);

/* Fraction of variance unexplained on the batch x (n_tokens x d_in floats):
 *     sum_t ||x_t - x_hat_t||^2  /  sum_t ||x_t - mean_t(x)||^2
 * 0 is a perfect reconstruction, 1 is no better than predicting the batch mean.
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens < 2 or overflowing, or x with zero
 * variance), SAE_E_NONFINITE (NaN/Inf in x, or a reconstruction error that
 * overflows), SAE_E_NOMEM; *out is untouched on error. */
SAE_API int sae_fvu(const sae_model *m, const float *x, size_t n_tokens, double *out);

/* The model's output for the inputs x (n_tokens x d_in floats, read) into out
 * (n_tokens x d_out floats, written): an autoencoder's reconstruction x_hat, a
 * transcoder's y_hat (with the skip term: see "Transcoders"), from the
 * inference features of sae_encode, without materialising them for the caller.
 * Errors as sae_encode (SAE_E_NONFINITE also for an output that would
 * overflow float); out is untouched on error. */
SAE_API int sae_output(const sae_model *m, const float *x, size_t n_tokens, float *out);

/* sae_loss and sae_fvu against a target: the model reads x (n_tokens x d_in
 * floats) and its output is compared with y (n_tokens x d_out floats), e.g. a
 * transcoder's; for an autoencoder, y == x gives sae_loss and sae_fvu. The
 * FVU's denominator is y's variance around its batch mean. sae_loss,
 * sae_fvu and sae_step refuse transcoders (SAE_E_INVALID_ARG): they have no
 * target to compare with. Errors as sae_loss and sae_fvu, for y as for x. */
SAE_API int sae_loss_target(const sae_model *m, const float *x, const float *y, size_t n_tokens,
                            double lambda, sae_losses *out);
SAE_API int sae_fvu_target(const sae_model *m, const float *x, const float *y, size_t n_tokens,
                           double *out);

/* The total variance of the rows of x (n_tokens x d floats, read): the mean
 * over tokens of ||x_t - mean(x)||^2, i.e. the trace of x's covariance
 * (divided by n_tokens, not n_tokens - 1), two-pass in double. It is the
 * FVU's denominator per token: a step's sae_losses.l2 / this is the batch's
 * FVU before the update, with no second forward pass (sae_fvu computes the
 * same quotient). mean: d doubles that receive x's mean over tokens (e.g. to
 * combine the variances of several batches), or NULL. One token gives 0.
 * Errors: SAE_E_INVALID_ARG (x or out NULL, n_tokens or d 0, or their
 * product overflowing), SAE_E_NONFINITE (NaN/Inf in x), SAE_E_NOMEM; *out and
 * mean are untouched on error. */
SAE_API int sae_total_variance(const float *x, size_t n_tokens, size_t d, double *mean,
                               double *out);

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
 *                                core). They are the optimizer's own (created at
 *                                its first step, joined by sae_optimizer_free) and
 *                                sleep between the step's loops; BLAS calls are
 *                                made from one thread, never inside these loops,
 *                                so the library's threads and the BLAS library's
 *                                (set with e.g. OPENBLAS_NUM_THREADS) take turns
 *                                instead of oversubscribing the cores. Results do
 *                                not depend on this count; with a fixed BLAS
 *                                configuration the same inputs give the same bits.
 *                                An optimizer's threads do not survive fork(): in
 *                                a forked child its steps run on the calling
 *                                thread alone (same results, more slowly).
 *   SAE_OPT_KERNEL      0        SAE_KERNEL_AUTO (0), SAE_KERNEL_DENSE (1) or
 *                                SAE_KERNEL_SPARSE (2): how sae_step runs the
 *                                decoder and the backward pass. Dense uses CBLAS
 *                                GEMMs; sparse touches only the (token, feature)
 *                                pairs with f > 0. Auto takes the sparse path when
 *                                at most 15% of the first block's (token, feature)
 *                                pairs are active (measured faster up to ~22% on
 *                                the reference machine). All give the same
 *                                gradients up to float rounding. TopK and
 *                                BatchTopK always run sparse (L0 <= k).
 *   SAE_OPT_GEMM        0        SAE_GEMM_AUTO (0), SAE_GEMM_CBLAS (1) or
 *                                SAE_GEMM_ONEDNN (2): the backend of the step's
 *                                matrix products. Auto is oneDNN when libsae was
 *                                built with it (it picks kernels by instruction
 *                                set, and is the faster one on AVX-512 CPUs),
 *                                else CBLAS. A build without oneDNN runs
 *                                SAE_GEMM_ONEDNN on CBLAS: sae_gemm_backend says
 *                                what a value runs on. Results differ between
 *                                backends by float rounding only. Since 0.2.
 *   SAE_OPT_PRECISION   0        SAE_PRECISION_FP32 (0) or SAE_PRECISION_BF16
 *                                (1): the inputs of the encoder's product, the
 *                                step's largest. With bf16, x - b_dec and W_enc
 *                                enter it rounded to bfloat16 (8 significant
 *                                bits), products are summed in float32, and
 *                                everything else stays float32: the parameters
 *                                (master weights), Adam's moments, the decoder
 *                                and every gradient. The optimizer keeps a bf16
 *                                copy of W_enc (d_in x d_sae x 2 bytes), written
 *                                by the Adam pass itself. Native bf16 products
 *                                (oneDNN, on CPUs with AVX512_BF16 or AMX) take
 *                                about half the time of float32 ones; elsewhere
 *                                the same numbers are computed in float32.
 *                                sae_encode and the other read-only calls stay
 *                                float32, and so do the steps of Matryoshka SAEs
 *                                and transcoders (bf16 covers the ReLU, TopK,
 *                                BatchTopK, JumpReLU and Gated autoencoders: a
 *                                Gated SAE's gate and magnitude pre-activations
 *                                are both xc W_enc, the one bf16 product, with
 *                                W_mag = exp(r_mag) W_gate applied in float32).
 *                                Since 0.2.
 *
 * Architecture options (see "Architectures"; ignored by the others):
 *   SAE_OPT_AUXK_COEFF  1/32     >= 0, finite: AuxK weight (TopK, BatchTopK); 0: off
 *   SAE_OPT_AUXK_K      0        a whole number >= 0: k_aux; 0 means d_in / 2
 *                                (at least 1), the anchors' heuristic
 *   SAE_OPT_DEAD_WINDOW 1e7      a whole number >= 1: training tokens without
 *                                firing after which AuxK treats a feature as dead
 *   SAE_OPT_JUMPRELU_BANDWIDTH 0.001  > 0, finite: eps of the JumpReLU estimators
 *   SAE_OPT_THRESHOLD_BETA 0.999 [0, 1): BatchTopK's threshold moving average
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
    SAE_OPT_LR_SCHEDULE = 13,

    SAE_OPT_AUXK_COEFF = 20,
    SAE_OPT_AUXK_K = 21,
    SAE_OPT_DEAD_WINDOW = 22,
    SAE_OPT_JUMPRELU_BANDWIDTH = 23,
    SAE_OPT_THRESHOLD_BETA = 24,
    SAE_OPT_GEMM = 30,               /* since 0.2 */
    SAE_OPT_PRECISION = 31           /* since 0.2 */
};

/* Values of SAE_OPT_KERNEL. */
enum sae_kernel {
    SAE_KERNEL_AUTO = 0,
    SAE_KERNEL_DENSE = 1,
    SAE_KERNEL_SPARSE = 2
};

/* Values of SAE_OPT_GEMM (since 0.2). */
enum sae_gemm {
    SAE_GEMM_AUTO = 0,
    SAE_GEMM_CBLAS = 1,
    SAE_GEMM_ONEDNN = 2
};

/* Values of SAE_OPT_PRECISION (since 0.2). */
enum sae_precision {
    SAE_PRECISION_FP32 = 0,
    SAE_PRECISION_BF16 = 1
};

/* The backend a value of SAE_OPT_GEMM runs on in this build of the library:
 * SAE_GEMM_CBLAS or SAE_GEMM_ONEDNN (SAE_GEMM_AUTO: oneDNN when built in, else
 * CBLAS; SAE_GEMM_ONEDNN: CBLAS when not built in). Errors: SAE_E_INVALID_ARG
 * (a value that is not an enum sae_gemm). Since 0.2. */
SAE_API int sae_gemm_backend(int gemm);

/* Set an option. Errors: SAE_E_INVALID_ARG (o NULL, unknown option, value out
 * of the allowed range), SAE_E_NONFINITE (NaN or Inf). The optimizer is
 * unchanged on error. */
SAE_API int sae_optimizer_set(sae_optimizer *o, int option, double value);

/* Read an option into *value. Errors: SAE_E_INVALID_ARG. */
SAE_API int sae_optimizer_get(const sae_optimizer *o, int option, double *value);

/* The option table itself, so that bindings and command-line tools need not
 * hard-code names, defaults or ranges (as zstd's ZSTD_cParam_getBounds). It is
 * the table sae_optimizer_set checks against and checkpoints save from.
 *
 * The name of an option: the lower-case rest of its SAE_OPT_ name ("lr",
 * "l1_coeff", "jumprelu_bandwidth", ...), a static string; NULL if `option`
 * is not an option of this version. Since 0.2. */
SAE_API const char *sae_option_name(int option);

/* *value = the option's default, what sae_optimizer_create sets.
 * Errors: SAE_E_INVALID_ARG (unknown option, value NULL; *value is then
 * untouched). Since 0.2. */
SAE_API int sae_option_default(int option, double *value);

/* Flags of sae_option_bounds. */
enum sae_option_flags {
    SAE_OPTION_LOWER_OPEN = 1, /* the lower bound itself is not allowed */
    SAE_OPTION_UPPER_OPEN = 2, /* the upper bound itself is not allowed */
    SAE_OPTION_WHOLE = 4       /* whole numbers only (counts and enum values) */
};

/* The values sae_optimizer_set accepts for `option`: finite numbers from
 * *lower to *upper, each bound included unless *flags has its _OPEN flag,
 * and only whole numbers if *flags has SAE_OPTION_WHOLE. An option without a
 * finite limit reports DBL_MAX (e.g. SAE_OPT_LR: lower 0, open; upper
 * DBL_MAX). Errors: SAE_E_INVALID_ARG (unknown option, an output NULL; the
 * outputs are then untouched). Since 0.2. */
SAE_API int sae_option_bounds(int option, double *lower, double *upper, unsigned *flags);

/* The number of successful steps taken with this optimizer. 0 if o is NULL. */
SAE_API uint64_t sae_optimizer_steps(const sae_optimizer *o);

/* One training step on the batch x (n_tokens x d_in floats): forward pass,
 * exact gradients of the architecture's loss (ReLU: l2 + lambda * l1, with
 * ReLU'(0) = 0; see "Architectures" for the others), optional global
 * gradient-norm clipping, and one Adam update of every parameter.
 * The lr and lambda are those of step sae_optimizer_steps(o) + 1 of the
 * schedules ("Training recipe"; with no schedule option set, SAE_OPT_LR and
 * SAE_OPT_L1_COEFF themselves).
 * *out (may be NULL) receives the losses of the batch before the update, its
 * loss computed with the lambda the step applied (and AuxK's weighted term).
 * Adam follows torch.optim.Adam except that moments below FLT_MIN are flushed
 * to 0: features that stop firing would otherwise fill the moments with
 * subnormal floats, which are many times slower to compute with; the updates
 * lost are below 1e-30 * lr.
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens 0 or overflowing, optimizer made
 * for a model of another shape or architecture's parameter set, schedule
 * options that contradict each other, a transcoder: see sae_step_target, a
 * Matryoshka batch above UINT32_MAX / 2 tokens), SAE_E_NONFINITE (NaN/Inf in x, or
 * gradients or updated parameters that would not be finite), SAE_E_NOMEM (the
 * step's workspace grows when a larger or denser batch than ever before
 * arrives). On any error the model, the
 * optimizer and *out are unchanged. */
SAE_API int sae_step(sae_model *m, sae_optimizer *o, const float *x, size_t n_tokens,
                     sae_losses *out);

/* sae_step against a target: the model reads x (n_tokens x d_in floats) and
 * learns to output y (n_tokens x d_out floats, finite), the error being
 * y_hat - y wherever sae_step's is x_hat - x (and AuxK's residual y - y_hat).
 * Transcoders train with it (sae_step refuses them); for an autoencoder,
 * y == x is sae_step. Errors as sae_step, for y as for x. */
SAE_API int sae_step_target(sae_model *m, sae_optimizer *o, const float *x, const float *y,
                            size_t n_tokens, sae_losses *out);

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
/* Checkpoints                                                               */
/* ------------------------------------------------------------------------ */

/* Models and optimizers are saved as safetensors files (huggingface/safetensors:
 * an 8-byte little-endian header length, a JSON header, raw little-endian data).
 *
 * A model file holds exactly SAELens's tensors for the model's architecture,
 * float32:
 *   W_enc [d_in, d_sae]   W_dec [d_sae, d_out]   b_enc [d_sae]   b_dec [d_out]
 * (d_out = d_in but for transcoders); a Gated SAE has "b_gate" (its SAE_B_ENC)
 * instead of b_enc, and "b_mag", "r_mag" [d_sae] (SAELens's names); a skip
 * transcoder "W_skip" [d_out, d_in]; for JumpReLU, "threshold" [d_sae]: theta = exp(t) as SAE_THRESHOLD
 * reads it (SAELens's inference format, not the log thresholds t), and for
 * BatchTopK and Matryoshka the same tensor holding the threshold in every
 * feature (0 while it is unset, which is ReLU), which is how SAELens saves
 * them for inference: as JumpReLU SAEs. "__metadata__" records what SAELens's files
 * leave to cfg.json, so that a single file says what it is:
 *   "libsae_architecture"   "standard" (ReLU), "topk", "batchtopk", "jumprelu",
 *                           "gated" or "matryoshka_batchtopk"
 *   "libsae_kind"           transcoders only: "transcoder" or "skip_transcoder"
 *   "libsae_k"              TopK, BatchTopK, Matryoshka: k, decimal
 *   "libsae_threshold"      BatchTopK, Matryoshka: the threshold exactly
 *                           (negative: unset), as a C99/Python hexadecimal float
 *   "libsae_matryoshka_widths"  Matryoshka: the level widths, decimal,
 *                           comma-separated ("256,1024,4096": the last is d_sae)
 *   "libsae_log_threshold"  JumpReLU: the log thresholds t themselves, each
 *                           float's IEEE-754 bits as 8 lower-case hex digits
 *                           (Python: numpy.frombuffer(bytes.fromhex(s), ">f4")),
 *                           because log(exp(t)) is not always t in float
 *   "libsae_version"        the writer's sae_version_string(), e.g. "0.2.0"
 * Saved into a directory with a cfg.json beside it, it loads unchanged in
 * SAELens (6.x, and earlier versions that know the architecture):
 *     SAE.load_from_disk("run/checkpoint")
 * and SAELens sees a "standard", "gated", "topk" (with k) or "jumprelu" SAE
 * (JumpReLU, BatchTopK and Matryoshka), or a "transcoder", "skip_transcoder",
 * "jumprelu_transcoder" (JumpReLU and BatchTopK) or "jumprelu_skip_transcoder"
 * (SAELens after 6.18) with "d_out". A TopK transcoder is
 * "topk_transcoder" / "topk_skip_transcoder": SAELens has no such class and
 * refuses the directory rather than computing something else; libsae loads
 * it.
 *
 * An optimizer file (libsae's own, same container) holds the Adam moments in
 * SAELens's shapes as F32 tensors "<tensor>.exp_avg" and "<tensor>.exp_avg_sq"
 * (torch.optim.Adam's state names) for W_enc, W_dec, b_enc and b_dec (and, for
 * JumpReLU, "log_threshold" [d_sae], SAELens's name of the trained t; for a
 * Gated SAE "b_gate" instead of b_enc, "b_mag" and "r_mag"; for a skip
 * transcoder "W_skip"), the
 * per-feature counters as U64 "tokens_since_fired" [d_sae], and in
 * "__metadata__": "libsae_format": "optimizer", "libsae_format_version": "1",
 * "step" (decimal), and one "option.<n>" entry per option number n the library
 * knows (SAE_OPT_*), its value exactly as a C99/Python hexadecimal float
 * (Python: float.fromhex). Loading a model and its optimizer in a new process
 * and training on resumes bit for bit: N steps, save, load, N more steps give
 * the same parameters as 2N uninterrupted steps (at the same thread count).
 *
 * Writes are atomic: the data goes to a temporary file in the destination's
 * directory ("<path>.tmp-" and 16 hex digits), which is flushed, fsync'ed and
 * then renamed over the destination. If anything fails (a full disk, a file
 * size limit, a missing directory), SAE_E_IO is returned, the temporary file is
 * removed and the previous file at path is untouched; a process killed mid-save
 * may leave the temporary file behind, never a damaged checkpoint. A symlink at
 * path is replaced by the new file, not written through. Paths are passed to
 * the operating system as they are (bytes, no encoding conversion).
 *
 * Saving only reads the model or optimizer: it may run concurrently with the
 * other read-only calls on the same handle, not with sae_step or
 * sae_model_set_tensor. Loading creates new handles and touches no others.
 *
 * Loading trusts nothing in the file; any of the following is SAE_E_FORMAT,
 * with nothing allocated, leaked or changed, and no read out of bounds:
 * - a header length below 2, above 100,000,000 or beyond the end of the data;
 *   a header that is not one strict JSON object (RFC 8259, valid UTF-8, no
 *   duplicate keys, nesting depth at most 3, at most 2^20 JSON values, only
 *   whitespace after it);
 * - a tensor entry that does not have exactly "dtype" (a safetensors dtype),
 *   "shape" (at most 8 non-negative integers) and "data_offsets" ([begin, end]),
 *   whose byte size (shape x dtype, checked for overflow) differs from
 *   end - begin, or tensors that, sorted by offset, do not tile the data
 *   section exactly (a gap, an overlap, or data before the end of the file);
 *   a "__metadata__" that is not an object of strings;
 * - a missing required tensor, a required tensor of another dtype or of shapes
 *   that disagree with each other (or a zero dimension), or a value that is NaN
 *   or infinite;
 * - libsae metadata that is not exactly as written above, or that disagrees
 *   with the tensors or with cfg.json: an unknown architecture name; k missing,
 *   not a plain decimal or outside [1, d_sae]; a "threshold" tensor with an
 *   architecture that has none, or none with one that has; JumpReLU
 *   thresholds outside [1e-30, 1e30] (the range sae_model_create_arch allows),
 *   or log thresholds that are not 8 hex digits per feature of finite floats
 *   whose exp() is the threshold (to 2^-20 relative: the writer's expf may
 *   round differently); BatchTopK thresholds that are not all equal to the
 *   recorded threshold (or 0 when that is negative), or a recorded threshold
 *   that is not exactly a float; libsae_k, libsae_threshold or
 *   libsae_log_threshold without libsae_architecture;
 * - a file truncated at any point.
 * No allocation is sized by a number from the file before that number has been
 * checked against the file's own size.
 */

/* The exact byte size of the model's safetensors encoding (what
 * sae_model_save_buffer writes and sae_model_save writes to a file path).
 * Errors: SAE_E_INVALID_ARG (m or size NULL). */
SAE_API int sae_model_save_size(const sae_model *m, size_t *size);

/* Encode the model into buf (capacity bytes, caller-owned); *written (may be
 * NULL) receives the byte count, which equals sae_model_save_size.
 * Errors: SAE_E_INVALID_ARG (NULL m or buf, or capacity smaller than needed;
 * buf is then untouched). */
SAE_API int sae_model_save_buffer(const sae_model *m, void *buf, size_t capacity,
                                  size_t *written);

/* Save the model to path, atomically (see above).
 * - If path is an existing directory, write path/sae_weights.safetensors and
 *   path/cfg.json (SAELens's configuration: d_in, d_sae, "dtype": "float32",
 *   "architecture", "apply_b_dec_to_input": true (transcoders: false, and
 *   "d_out"), "normalize_activations": "none", and, in SAELens 6's layout,
 *   "metadata": {"sae_lens_version": "6.0.0" (the layout's: SAELens 6 reads
 *   the file natively and keeps every metadata key), its LLM keys (model_name,
 *   hook_name, ... empty), "producer": "libsae", "libsae_version": ...}, plus
 *   the top-level fields older SAELens versions require). "architecture" is "standard" (ReLU), "gated", "topk" or
 *   "jumprelu" (JumpReLU, BatchTopK and Matryoshka), or a transcoder's (see
 *   above); a TopK configuration (TopK transcoders too) also has "k", "rescale_acts_by_decoder_norm": false,
 *   "activation_fn_str": "topk" and "activation_fn_kwargs": {"k": k} (where
 *   SAELens before 6.0 reads k), the others "activation_fn_str": "relu".
 *   Both files are written and fsync'ed before either is renamed into place.
 * - Otherwise write a single safetensors file at path (a new file, or one that
 *   replaces a regular file).
 * Errors: SAE_E_INVALID_ARG (NULL), SAE_E_IO (cannot write: see above; also
 * when path exists but is not a regular file or directory), SAE_E_NOMEM.
 * sae_model_save_size, sae_model_save_buffer and sae_model_save also return
 * SAE_E_INVALID_ARG for a JumpReLU model so wide (about 12.5 million features)
 * that its log thresholds would not fit the 100,000,000-byte header limit. */
SAE_API int sae_model_save(const sae_model *m, const char *path);

/* Create a model from the safetensors bytes buf[0..size) (caller-owned, only
 * read during the call). Tensors may be F32, F16, BF16 or F64 (converted to
 * float32; F64 values beyond float's range are rejected); files written by
 * PyTorch (safetensors.torch.save_file) and SAELens load as they are.
 * The architecture is the file's "libsae_architecture"; in files without it
 * (SAELens's), "b_gate" makes a Gated SAE (with "b_mag" and "r_mag", and no
 * "b_enc"), a "threshold" tensor a JumpReLU model (as SAELens saves JumpReLU
 * and BatchTopK SAEs; its thresholds become t = logf(theta), as
 * sae_model_set_tensor(SAE_THRESHOLD) computes them), or a "log_threshold"
 * tensor (SAELens's JumpReLU training checkpoints: t itself, in
 * [logf(1e-30), logf(1e30)]; never beside "threshold" or in libsae's own
 * files), and otherwise the model is ReLU (a SAELens TopK SAE keeps its k in
 * cfg.json: load its directory). The kind is the file's "libsae_kind", else
 * cfg.json's architecture, else the tensors': "W_skip" [d_out, d_in] makes a
 * skip transcoder, a W_dec of d_out != d_in a transcoder. Matryoshka models
 * load whole (sae_model_load_shard of one is SAE_E_INVALID_ARG).
 * Tensors with other names are ignored, except those that would change what
 * the SAE computes and that libsae cannot represent: "topk_threshold"
 * (SAELens's BatchTopK training state, outside its training checkpoints),
 * which is SAE_E_FORMAT; "scaling_factor" /
 * "finetuning_scaling_factor" (older SAELens files) are accepted only as
 * [d_sae] vectors of ones.
 * Errors: SAE_E_INVALID_ARG (out or buf NULL), SAE_E_FORMAT (see above; also
 * dimensions the model cannot have, e.g. above INT_MAX), SAE_E_NOMEM.
 * On error *out is NULL. */
SAE_API int sae_model_load_buffer(sae_model **out, const void *buf, size_t size);

/* Load a model from path: a safetensors file, or a directory holding
 * sae_weights.safetensors (as written by sae_model_save or SAELens). In a
 * directory, a cfg.json, when present, must be strict JSON (at most 1 MB)
 * describing, as SAELens reads it, the SAE the weights hold and libsae
 * computes the same way: "architecture" "standard" (also when absent: SAELens's
 * default), "gated", "topk", "jumprelu", "transcoder", "skip_transcoder",
 * "jumprelu_transcoder", "jumprelu_skip_transcoder" (with "d_out", equal to
 * the tensors'), or libsae's "topk_transcoder" / "topk_skip_transcoder",
 * agreeing with the weights (a BatchTopK or Matryoshka file is "jumprelu");
 * any other is SAE_E_FORMAT with a detail naming the key and the value; "activation_fn" / "activation_fn_str" absent or "topk"
 * for TopK, absent or "relu" otherwise (so SAELens's pre-6.0 "standard" with
 * a topk activation, which 6.x reads as ReLU, is refused); for TopK, k as
 * "k" and/or "activation_fn_kwargs": {"k": ...}, whole numbers, equal to
 * each other and to the file's "libsae_k" if any (a TopK SAE saved by SAELens
 * takes its k from here); "rescale_acts_by_decoder_norm" absent or false, or,
 * for the TopK family, true: SAELens's TopK, BatchTopK and Matryoshka SAEs
 * trained with it (its default since 6.14) compute TopK(pre * r) with
 * r_i = ||W_dec[i,:]|| and decode f / r; the load folds the norms into the
 * weights exactly as SAELens's _fold_norm_topk (n_i = max(r_i, 1e-8): b_enc_i
 * and W_enc[:,i] times n_i, W_dec[i,:] over n_i), which computes the same SAE
 * as plain TopK, and leaves an already folded file (an inference save, norms
 * 1) as it is up to rounding; SAELens's BatchTopK and Matryoshka BatchTopK
 * training checkpoints ("architecture" "batchtopk" / "matryoshka_batchtopk",
 * "k" a whole number, which may be written as a float such as 32.0,
 * Matryoshka's "matryoshka_widths" as sae_model_create_matryoshka takes them)
 * load with their one-value "topk_threshold" as the BatchTopK threshold
 * (there, and only there, that tensor is allowed);
 * "apply_b_dec_to_input" absent or true (transcoders: true or false, both
 * meaning no b_dec subtraction, as SAELens's transcoders compute);
 * "normalize_activations" absent,
 * null, false or "none"; and "d_in" / "d_sae", when present, equal to the
 * tensors' shapes; otherwise SAE_E_FORMAT. Other keys are ignored.
 * Errors: as sae_model_load_buffer, plus SAE_E_IO (path missing, unreadable,
 * or not a regular file or directory). On error *out is NULL. */
SAE_API int sae_model_load(sae_model **out, const char *path);

/* The exact byte size of the optimizer's safetensors encoding.
 * Errors: SAE_E_INVALID_ARG (o or size NULL), SAE_E_NOMEM. */
SAE_API int sae_optimizer_save_size(const sae_optimizer *o, size_t *size);

/* Encode the optimizer into buf (capacity bytes); *written (may be NULL)
 * receives the byte count. Errors: SAE_E_INVALID_ARG (NULL, or capacity too
 * small; buf is then untouched), SAE_E_NOMEM. */
SAE_API int sae_optimizer_save_buffer(const sae_optimizer *o, void *buf, size_t capacity,
                                      size_t *written);

/* Save the optimizer to path atomically: a single file, or, if path is an
 * existing directory, path/optimizer.safetensors (so one directory can hold a
 * whole training checkpoint: sae_weights.safetensors, cfg.json and
 * optimizer.safetensors). Errors as sae_model_save. */
SAE_API int sae_optimizer_save(const sae_optimizer *o, const char *path);

/* Create an optimizer for models shaped like m from an optimizer encoding
 * buf[0..size): moments, step count, activity counters and every option are
 * restored. Options missing from the file (written by an older version) keep
 * their defaults; an option number this version does not know, or a value
 * sae_optimizer_set would refuse, is SAE_E_FORMAT. Unknown metadata keys are
 * ignored; unknown tensors, moments that are not F32 or are non-finite, and
 * negative second moments are SAE_E_FORMAT. The file records no architecture,
 * only the layout: a JumpReLU optimizer (with log_threshold moments) fits only
 * JumpReLU models, the others fit ReLU, TopK and BatchTopK models alike.
 * Errors: SAE_E_INVALID_ARG (NULL, or a valid file for another shape or
 * layout than m's),
 * SAE_E_FORMAT, SAE_E_NOMEM. On error *out is NULL. */
SAE_API int sae_optimizer_load_buffer(sae_optimizer **out, const sae_model *m, const void *buf,
                                      size_t size);

/* Load an optimizer from path: a file, or a directory holding
 * optimizer.safetensors. Errors as sae_optimizer_load_buffer, plus SAE_E_IO.
 * On error *out is NULL. sae_optimizer_load and sae_optimizer_load_buffer
 * also take a shard (sae_model_load_shard): they read the part of the whole
 * model's optimizer that belongs to its features. */
SAE_API int sae_optimizer_load(sae_optimizer **out, const sae_model *m, const char *path);

/* ------------------------------------------------------------------------ */
/* Checkpoint directories: a training run's checkpoints, crash-safe          */
/* ------------------------------------------------------------------------ */

/* A run that saves itself every N steps writes several files per checkpoint
 * (the model, cfg.json, the optimizer, a trainer's own state). Saved one by
 * one over the old ones, a crash between two files would leave a mixture.
 * A checkpoint directory changes in one atomic step instead: after a crash at
 * any instant it holds the complete previous checkpoint or the complete new
 * one, and sae_checkpoint_current finds it without a human. The layout:
 *
 *   DIR/gen-<n>/    a generation: one complete checkpoint, the files its
 *                   writer put there (n decimal, growing with each commit)
 *   DIR/current     a symbolic link to "gen-<n>", the current generation
 *   DIR/<file>      for each file of the current generation, a symbolic link
 *                   to "current/<file>"
 *
 * so DIR also reads as a plain checkpoint directory: SAELens opens it with
 * SAE.load_from_disk(DIR) (DIR/cfg.json and DIR/sae_weights.safetensors),
 * sae_model_load(DIR) and sae_optimizer_load(DIR) work, and so does every
 * reader of a flat directory. A writer:
 *
 *     char stage[4096];
 *     int rc = sae_checkpoint_begin("run", stage, sizeof stage);  // run/gen-8
 *     if (rc == SAE_OK) {
 *         if ((rc = sae_model_save(m, stage)) == SAE_OK &&
 *             (rc = sae_optimizer_save(o, stage)) == SAE_OK)
 *             rc = sae_checkpoint_commit("run", stage);           // atomic
 *         if (rc != SAE_OK)
 *             sae_checkpoint_abort("run", stage);                 // run as it was
 *     }
 *
 * and a reader (resuming):
 *
 *     char ckpt[4096];
 *     if (sae_checkpoint_current("run", ckpt, sizeof ckpt) == SAE_OK &&  // run/gen-8
 *         sae_model_load(&m, ckpt) == SAE_OK) ...
 *
 * Between sae_checkpoint_begin and sae_checkpoint_commit the staging
 * directory is the writer's: regular files with plain names (no '/', not
 * starting with '.', not "current" or "gen-<n>", at most 200 bytes), no
 * subdirectories. A commit fsyncs each of its files and the directory, makes
 * the links DIR/<file> that are missing, and then replaces DIR/current by
 * renaming a new link over it (rename(2) is atomic): that rename is the
 * commit. Only then does it remove the previous generation, links to files
 * the new one does not have, and what a crashed writer left (generations
 * that were never committed, temporary links named ".sae-*"); whatever it
 * cannot remove stays harmless and goes at the next sae_checkpoint_begin.
 * Other files in DIR (a log, say) are never touched.
 *
 * A directory of flat files from before (sae_model_save and
 * sae_optimizer_save into DIR itself, with no DIR/current) is a checkpoint
 * too: sae_checkpoint_current returns DIR itself, and the first commit into
 * it converts it without a moment in which DIR/<file> shows other bytes than
 * the old checkpoint's or the new one's: its regular files are hard-linked
 * into "gen-0", which becomes current, before the flat files that the new
 * generation also has are replaced by links.
 *
 * One writer per directory at a time (a second one would remove the first's
 * staging directory). Readers may run concurrently with a writer; one that
 * resolved DIR/current just before a commit may find the old generation gone
 * and must look again. Do not write into DIR itself (sae_model_save(m, DIR)
 * would replace the links by plain files); write into the stage. The file
 * system must support symbolic and hard links (any POSIX file system does;
 * FAT does not).
 */

/* Start a new generation in dir: create dir if it is missing (one level: its
 * parent must exist), remove what a crashed writer left (see above), create
 * the empty staging directory dir/gen-<n> and write its path into stage
 * (capacity bytes; strlen(dir) + 32 always suffice).
 * Errors: SAE_E_INVALID_ARG (NULL or empty dir, stage NULL, capacity too
 * small: then nothing is created), SAE_E_IO (dir cannot be created or is not
 * a writable directory), SAE_E_FORMAT (dir/current exists but is not a link to
 * a generation: not a checkpoint directory, left alone), SAE_E_NOMEM. */
SAE_API int sae_checkpoint_begin(const char *dir, char *stage, size_t capacity);

/* Make the staging directory stage (as sae_checkpoint_begin wrote it) dir's
 * current generation, atomically, as described above. On SAE_OK the new
 * checkpoint is durable (fsync'ed) and current.
 * Errors: SAE_E_INVALID_ARG (NULL, stage not a staging directory of dir, an
 * empty stage or one holding anything but plain regular files, stage already
 * current), SAE_E_IO (a file could not be synced, a link or the rename failed:
 * the previous generation is still current and whole, the stage is kept, to
 * retry or abort), SAE_E_FORMAT (as sae_checkpoint_begin), SAE_E_NOMEM. */
SAE_API int sae_checkpoint_commit(const char *dir, const char *stage);

/* Remove the staging directory stage and its files, after a failed write.
 * dir is left as it was before sae_checkpoint_begin. Errors:
 * SAE_E_INVALID_ARG (NULL, stage not a staging directory of dir, or the
 * current generation), SAE_E_IO (something could not be removed). */
SAE_API int sae_checkpoint_abort(const char *dir, const char *stage);

/* The directory holding dir's current checkpoint: dir/gen-<n>, or dir itself
 * for a directory of flat files from before (one with a
 * sae_weights.safetensors and no current link), written into path (capacity
 * bytes; strlen(dir) + 32 always suffice). Read-only.
 * Errors: SAE_E_INVALID_ARG (NULL, empty dir, capacity too small), SAE_E_IO
 * (dir missing or unreadable, no checkpoint in it, or the generation that
 * current names is gone), SAE_E_FORMAT (dir/current is not a link to
 * "gen-<n>"). */
SAE_API int sae_checkpoint_current(const char *dir, char *path, size_t capacity);

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
 * fold when training is over (to save or deploy the model). The same holds for
 * every family: Gated's gate and magnitude paths read the same u = (x - b_dec)
 * W_enc; a transcoder trained on (s x, s y) gets W_enc' = s W_enc, W_dec' =
 * W_dec / s, b_dec' = b_dec / s, and a skip transcoder's W_skip is unchanged.
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
 * method, a transcoder: its b_dec lives in its target's space, not x's),
 * SAE_E_NONFINITE (NaN/Inf in x), SAE_E_NOMEM. The model is
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
 * capacity > 0, capacity x sizeof(size_t) overflowing size_t). */
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
 * is dead, a Gated SAE or a transcoder: not resampled by this version; a
 * Matryoshka SAE is resampled as BatchTopK), SAE_E_NONFINITE (NaN/Inf in x, a
 * reconstruction that overflows, or new encoder rows whose norm is not a
 * finite float), SAE_E_STATE (every feature is dead: there is no live encoder
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

/* Per-feature firing counts over a stream of batches: for each feature i,
 * counts[i] += the number of tokens of x on which it fires (f_ti > 0, the
 * model's inference activation, exactly as sae_encode computes it).
 * x: n_tokens x d_in floats, row-major, read; counts: count = d_sae uint64_t,
 * read and written (start them at 0, then call once per batch). The density
 * of feature i is counts[i] / (tokens seen), the dead features those at 0;
 * sae_feature_density_histogram bins one batch's densities.
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens 0 or overflowing, count != d_sae,
 * a count that would pass 2^64 - 1), SAE_E_NONFINITE (NaN/Inf in x, or
 * features that are not finite), SAE_E_NOMEM. counts is untouched on error.
 * Read-only on the model: may run concurrently with the other read-only
 * calls. Since 0.2. */
SAE_API int sae_feature_fire_counts(const sae_model *m, const float *x, size_t n_tokens,
                                    uint64_t *counts, size_t count);

/* ------------------------------------------------------------------------ */
/* Random numbers                                                            */
/* ------------------------------------------------------------------------ */

/* The library's own generator, public so that programs and bindings can draw
 * exactly the bits the library draws (sae_model_create's initialisation,
 * sae_resample_dead's picks) and shuffle or sample data reproducibly: the
 * same seed gives the same numbers on every machine, compiler and thread
 * count. xoshiro256** (Blackman and Vigna), seeded through splitmix64. Not
 * for cryptography. A generator is plain data: copy it to fork a stream,
 * use one per thread.
 *
 * This struct is frozen: it will never change size or layout. */
typedef struct sae_rng {
    uint64_t s[4]; /* xoshiro256** state; never all zero once seeded */
} sae_rng;

/* Seed *r with stream `stream` of `seed`: different streams of one seed are
 * independent sequences. With z the splitmix64 generator started at state
 * `seed`, its first output is XORed with stream * 0xd1342543de82ef95 (mod
 * 2^64), and the four state words are the next four outputs of splitmix64
 * started at that value. sae_model_create seeds row i of W_dec with
 * (seed, i). */
SAE_API void sae_rng_seed(sae_rng *r, uint64_t seed, uint64_t stream);

/* The next 64 random bits (xoshiro256**'s output). */
SAE_API uint64_t sae_rng_next(sae_rng *r);

/* Uniform in [0, 1): the top 53 bits of sae_rng_next times 2^-53. */
SAE_API double sae_rng_uniform(sae_rng *r);

/* Standard normal, one value per call (Box-Muller from two uniforms u1, u2:
 * sqrt(-2 log(1 - u1)) cos(2 pi u2); the pair's second value is not kept, so
 * the stream's position does not depend on how many normals were drawn). */
SAE_API double sae_rng_normal(sae_rng *r);

/* Uniform in [0, n) without bias, 0 when n is 0: x mod n for the first
 * x = sae_rng_next(r) at or above 2^64 mod n (fewer than 2 draws on average;
 * one for n a power of two). */
SAE_API uint64_t sae_rng_below(sae_rng *r, uint64_t n);

/* Shuffle v[0..n) in place (Fisher-Yates: for i = n-1 down to 1, swap v[i]
 * and v[sae_rng_below(r, i + 1)]); every order is equally likely. E.g. fill
 * v with 0 .. n-1 to draw a random order of n training batches.
 * Errors: SAE_E_INVALID_ARG (r NULL, v NULL with n > 0, or n x 8 bytes
 * overflowing size_t; nothing changes). */
SAE_API int sae_rng_shuffle(sae_rng *r, uint64_t *v, size_t n);

/* A NULL r makes sae_rng_seed do nothing and the draws return 0. */

/* ------------------------------------------------------------------------ */
/* Sparse codes                                                              */
/* ------------------------------------------------------------------------ */

/* Each token's active features as (feature, value) pairs, in CSR form: the
 * pairs of token t are features[offsets[t] .. offsets[t + 1]) and
 * values[offsets[t] .. offsets[t + 1]), in ascending feature order. The values
 * are the nonzero entries sae_encode writes for the same x and n_tokens (f >
 * 0, the model's inference activation in every architecture), bit for bit,
 * and the dense n_tokens x d_sae matrix is never built: the batch is encoded
 * as sae_encode cuts it, in blocks of 1024 tokens, into a scratch of one
 * block's features (1024 x d_sae floats: 41 MB at d_sae 10,000). A
 * 10,000-feature token takes 40 KB dense and 8 bytes per active feature
 * here. (The BLAS's rounding can depend on how a batch is cut: encoding the
 * tokens of a batch in two calls may differ from one call in the last bit.)
 *
 * max_per_token caps the pairs of each token: 0 keeps every active feature;
 * c > 0 keeps the c largest values of each token (ties at the c-th largest
 * value go to the lower feature indices, as in TopK), still listed in feature
 * order. A TopK model never has more than k.
 *
 * Both functions read x (n_tokens x d_in floats, row-major) and may run
 * concurrently with the other read-only calls on the model.
 */

/* *nnz = the number of pairs sae_encode_sparse writes for this batch and cap
 * (it encodes the batch to count them). With a cap c, n_tokens * c is a bound
 * that needs no counting.
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens 0 or overflowing), SAE_E_NONFINITE
 * (NaN/Inf in x), SAE_E_NOMEM; *nnz is untouched on error. */
SAE_API int sae_encode_sparse_size(const sae_model *m, const float *x, size_t n_tokens,
                                   size_t max_per_token, size_t *nnz);

/* Encode x into pairs: offsets (n_tokens + 1 entries, written), features and
 * values (capacity entries each, written; may be NULL when capacity is 0).
 * Tokens are encoded in order; the pairs of a token that would not fit in
 * what is left of capacity are not written, and encoding stops there:
 * *n_encoded receives the number of whole tokens encoded, offsets[0 ..
 * *n_encoded] are written (offsets[0] = 0, offsets[*n_encoded] the pairs
 * written) and the rest of offsets is untouched. A short capacity is not an
 * error: continue with x + *n_encoded * d_in, or size the buffers with
 * sae_encode_sparse_size (or n_tokens * max_per_token) to encode all tokens
 * in one call.
 * Errors: SAE_E_INVALID_ARG (m, x, offsets or n_encoded NULL, features or
 * values NULL with capacity > 0, n_tokens 0, or the byte size of x, offsets,
 * features or values overflowing size_t), SAE_E_NONFINITE (NaN/Inf in x, or a
 * feature that would overflow float), SAE_E_NOMEM; nothing is written on
 * error. */
SAE_API int sae_encode_sparse(const sae_model *m, const float *x, size_t n_tokens,
                              size_t max_per_token, size_t *offsets, uint32_t *features,
                              float *values, size_t capacity, size_t *n_encoded);

/* ------------------------------------------------------------------------ */
/* Feature statistics over a stream                                          */
/* ------------------------------------------------------------------------ */

/* What each feature does over a dataset, accumulated batch by batch without
 * keeping the rows: per feature, over the rows where it fires (f > 0),
 *   - the firing count (density = count / rows),
 *   - the sum and the sum of squares of its activation (mean, variance),
 *   - the maximum,
 *   - a histogram of the activations over log-spaced bins,
 *   - its top_n activating rows: (row id, value) pairs, the largest values
 *     first, ties broken by the lower row id.
 * Rows get consecutive ids in the order they are fed, continuing across
 * calls (the first row fed is row 0 unless sae_feature_stats_set_next_row
 * says otherwise). Memory is O(d_sae x (top_n + n_bins)), whatever the
 * number of rows (plus, during sae_feature_stats_add, the scratch of one
 * block of features that sae_encode_sparse also uses).
 *
 * Every statistic is exact or totally ordered: the sums are kept as exact
 * fixed-point integers (read out rounded once to double), so feeding rows in
 * one accumulator or in several that are then merged, in any order, gives the
 * same numbers bit for bit. To split a dataset over threads or processes,
 * give each accumulator its first row id with sae_feature_stats_set_next_row,
 * feed each its rows, and merge them.
 *
 *     sae_feature_stats *s;
 *     sae_feature_stats_create(&s, d_sae, 20, 60, -4.0, 2.0);
 *     for (each batch x of n rows) sae_feature_stats_add(s, m, x, n);
 *     sae_feature_stats_counts(s, counts, d_sae);
 *     sae_feature_stats_top(s, feature, rows, values, 20, &n_top);
 *     sae_feature_stats_save(s, "run/feature_stats.safetensors");
 *     sae_feature_stats_free(s);
 *
 * The histogram's bins are log-spaced between 10^log10_min and 10^log10_max:
 * with n = n_bins, edge_k = 10^(log10_min + k (log10_max - log10_min) / n)
 * (computed in double, k = 0..n) and a value v goes to bin k if edge_k <= v <
 * edge_(k+1); values below edge_1 go to bin 0 and values at or above edge_(n-1)
 * to bin n - 1, so the first and last bins also count what lies beyond the
 * range. A range of [-4, 2] in 60 bins (10 per decade) suits activations
 * of inputs scaled to norm sqrt(d_in).
 *
 * A handle is not locked: feed, merge and save one from one thread at a time
 * (use one per thread and merge them). The queries only read it.
 */
typedef struct sae_feature_stats sae_feature_stats;

/* Create an empty accumulator for d_sae features (1 .. INT_MAX) keeping the
 * top_n (1 .. 65536) rows of each, with n_bins (1 .. 65536) histogram bins
 * over [10^log10_min, 10^log10_max] (-60 <= log10_min < log10_max <= 60).
 * Errors: SAE_E_INVALID_ARG (out NULL, a value out of range, sizes that
 * overflow), SAE_E_NONFINITE (a NaN/Inf bound), SAE_E_NOMEM. On error *out is
 * NULL. */
SAE_API int sae_feature_stats_create(sae_feature_stats **out, size_t d_sae, size_t top_n,
                                     size_t n_bins, double log10_min, double log10_max);

/* Free an accumulator. NULL is a no-op. */
SAE_API void sae_feature_stats_free(sae_feature_stats *s);

/* Feed the rows x (n_tokens x d_in floats, row-major, read), encoded by m
 * as sae_encode would (m's d_sae must be the accumulator's; m is only read).
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens 0 or overflowing, another d_sae,
 * row ids that would pass 2^64 - 1), SAE_E_NONFINITE (NaN/Inf in x),
 * SAE_E_NOMEM. The accumulator is unchanged on error. */
SAE_API int sae_feature_stats_add(sae_feature_stats *s, const sae_model *m, const float *x,
                                  size_t n_tokens);

/* Feed n_tokens rows given as sparse codes (as sae_encode_sparse writes
 * them): row t's pairs are features[offsets[t] .. offsets[t + 1]) and
 * values[...] (offsets: n_tokens + 1 non-decreasing entries; offsets[0] need
 * not be 0). Within a row, features must be strictly ascending and below
 * d_sae, and values positive and finite. For hosts that have the codes
 * already: no model is needed.
 * Errors: SAE_E_INVALID_ARG (NULL, n_tokens 0, n_tokens + 1 offsets
 * overflowing size_t, decreasing offsets, a feature
 * out of range or out of order, a value <= 0, row ids that would pass
 * 2^64 - 1), SAE_E_NONFINITE (a NaN/Inf value). The accumulator is unchanged
 * on error. */
SAE_API int sae_feature_stats_add_sparse(sae_feature_stats *s, size_t n_tokens,
                                         const size_t *offsets, const uint32_t *features,
                                         const float *values);

/* Merge src into dst: dst becomes the accumulator of both sets of rows. Both
 * need the same d_sae, top_n, bins and range, and their rows must be disjoint
 * (different row ids: give each its first row id with
 * sae_feature_stats_set_next_row). dst's next row id becomes the larger of
 * the two. Merging is exact, associative and commutative.
 * Errors: SAE_E_INVALID_ARG (NULL, dst == src, another configuration, or
 * more rows in the two than row ids in the span they cover, from the lowest
 * row id fed to the larger next row id, so that they cannot be disjoint: the
 * same rows fed to both, say; or a row id in the top lists of both),
 * SAE_E_NOMEM. dst is unchanged on error. */
SAE_API int sae_feature_stats_merge(sae_feature_stats *dst, const sae_feature_stats *src);

/* The configuration and progress: 0 if s is NULL. rows: rows fed and merged;
 * next_row: the id the next row fed gets. */
SAE_API size_t sae_feature_stats_d_sae(const sae_feature_stats *s);
SAE_API size_t sae_feature_stats_top_n(const sae_feature_stats *s);
SAE_API size_t sae_feature_stats_bins(const sae_feature_stats *s);
SAE_API uint64_t sae_feature_stats_rows(const sae_feature_stats *s);
SAE_API uint64_t sae_feature_stats_next_row(const sae_feature_stats *s);

/* Set the id of the next row fed; it may only move forward (row >=
 * sae_feature_stats_next_row(s)), so ids stay unique within an accumulator.
 * Errors: SAE_E_INVALID_ARG (s NULL, row below the next row id). */
SAE_API int sae_feature_stats_set_next_row(sae_feature_stats *s, uint64_t row);

/* The n_bins + 1 bin edges (activation values, ascending) into edges; count
 * must be n_bins + 1. Errors: SAE_E_INVALID_ARG. */
SAE_API int sae_feature_stats_bin_edges(const sae_feature_stats *s, double *edges, size_t count);

/* Per-feature results, count = d_sae entries each (feature order):
 *   counts: rows where the feature fired;
 *   sums:   sum and sum of squares of its activations over those rows, each
 *           the exact value rounded once to double (either may be NULL);
 *   max:    its largest activation (0 if it never fired);
 * and the histogram: d_sae x n_bins counts, row-major (count = d_sae *
 * n_bins); each feature's bins add up to its count.
 * Errors: SAE_E_INVALID_ARG (NULL, or another count). */
SAE_API int sae_feature_stats_counts(const sae_feature_stats *s, uint64_t *counts, size_t count);
SAE_API int sae_feature_stats_sums(const sae_feature_stats *s, double *sum, double *sum_sq,
                                   size_t count);
SAE_API int sae_feature_stats_max(const sae_feature_stats *s, float *max, size_t count);
SAE_API int sae_feature_stats_histogram(const sae_feature_stats *s, uint64_t *hist,
                                        size_t count);

/* The top activating rows of one feature, the largest value first (ties: the
 * lower row id first): *n receives their number, min(count, top_n), and the
 * first min(*n, capacity) go to rows and values (may be NULL when capacity
 * is 0). Errors: SAE_E_INVALID_ARG (NULL, feature >= d_sae, capacity entries
 * overflowing size_t). */
SAE_API int sae_feature_stats_top(const sae_feature_stats *s, size_t feature, uint64_t *rows,
                                  float *values, size_t capacity, size_t *n);

/* Saving and loading. The file is a safetensors file (see "Checkpoints") with
 * "__metadata__" {"libsae_format": "feature_stats", "libsae_format_version":
 * "1"} and exactly these tensors (d = d_sae, N = top_n, B = n_bins):
 *   count        U64 [d]        firing counts
 *   sum          U64 [d, 6]     exact sums: sum_k limb_k * 2^(64 k - 149)
 *   sum_sq       U64 [d, 10]    exact sums of squares: sum_k limb_k * 2^(64 k - 298)
 *   histogram    U64 [d, B]
 *   top_rows     U64 [d, N]     row ids (slots past min(count, N) are 0)
 *   top_values   F32 [d, N]     values (slots past min(count, N) are 0)
 *   log10_range  F64 [2]        log10_min, log10_max
 *   rows         U64 [3]        rows fed, the lowest row id fed (the next
 *                               row id while no row is), the next row id
 * (Python: sum(int(l) << (64 * k) for k, l in enumerate(limbs)) * 2.0**-149.)
 * Saving is atomic as for models; a directory path means
 * path/feature_stats.safetensors. Loading checks everything the container
 * rules of "Checkpoints" check, plus: the metadata above, exactly these
 * tensors with these dtypes and consistent shapes, a configuration
 * sae_feature_stats_create accepts, no more rows than row ids from the lowest
 * to the next, and for every feature: count <= rows, bins adding up to the
 * count, a top list of min(count, N) finite positive values strictly in
 * order, row ids in that span, zero slots after it, and sums consistent with the count and
 * the maximum (e.g. max <= sum <= count * max); anything else is
 * SAE_E_FORMAT, with nothing allocated or changed.
 *
 * sae_feature_stats_save_size: the exact byte size of the encoding.
 * sae_feature_stats_save_buffer: encode into buf (capacity bytes); *written
 *   (may be NULL) gets the byte count. SAE_E_INVALID_ARG if capacity is too
 *   small (buf untouched).
 * sae_feature_stats_save: write to path (errors as sae_model_save).
 * sae_feature_stats_load_buffer / _load: a new accumulator from buf[0..size)
 *   or from path (a file, or a directory holding feature_stats.safetensors);
 *   errors: SAE_E_INVALID_ARG (NULL), SAE_E_FORMAT, SAE_E_IO (the file),
 *   SAE_E_NOMEM; *out is NULL on error. */
SAE_API int sae_feature_stats_save_size(const sae_feature_stats *s, size_t *size);
SAE_API int sae_feature_stats_save_buffer(const sae_feature_stats *s, void *buf,
                                          size_t capacity, size_t *written);
SAE_API int sae_feature_stats_save(const sae_feature_stats *s, const char *path);
SAE_API int sae_feature_stats_load_buffer(sae_feature_stats **out, const void *buf,
                                          size_t size);
SAE_API int sae_feature_stats_load(sae_feature_stats **out, const char *path);

/* ------------------------------------------------------------------------ */
/* Decoder neighbours                                                        */
/* ------------------------------------------------------------------------ */

/* Each feature's k nearest features by the cosine similarity of their
 * decoder rows, cos(i, j) = W_dec[i,:] . W_dec[j,:] / (||W_dec[i,:]||
 * ||W_dec[j,:]||) (0 when either row is zero), the feature itself excluded:
 * idx[i * k + r] is feature i's r-th nearest (the highest cosine first, ties
 * to the lower index) and cosine[i * k + r] (may be NULL) its cosine.
 * idx and cosine hold count = d_sae * k entries; 1 <= k < d_sae. The Gram
 * matrix is computed by SGEMM in blocks of rows (about 16 MB of scratch):
 * O(d_sae^2 d_out) work (a transcoder's rows are d_out wide), about a second at d_sae 10,000 and d_in 768.
 * Errors: SAE_E_INVALID_ARG (NULL m or idx, k out of range, another count),
 * SAE_E_NONFINITE (a decoder row's norm squared is not below 2^126: its dot
 * products would overflow float), SAE_E_NOMEM; idx and cosine are untouched
 * on error. Read-only on the model. */
SAE_API int sae_decoder_neighbors(const sae_model *m, size_t k, uint32_t *idx, float *cosine,
                                  size_t count);

/* ------------------------------------------------------------------------ */
/* Comparing dictionaries                                                    */
/* ------------------------------------------------------------------------ */

/* For each row a_i of a (n_a x d), its largest cosine similarity with a row
 * of b (n_b x d), cos(a_i, b_j) = a_i . b_j / (||a_i|| ||b_j||) (0 when
 * either row is zero), into cosine[i], and the j that reaches it (the lowest
 * on ties) into index[i]. cosine and index hold n_a entries; either may be
 * NULL, not both. The mean of cosine is the mean max cosine similarity
 * (MMCS) by which dictionaries are compared: a the ground-truth directions
 * of synthetic data and b a trained decoder (SAE_W_DEC, d_sae x d_in), or a
 * and b the decoders of two seeds or widths. The dot products are SGEMM in
 * blocks of a's rows (about 16 MB of scratch), the norms summed in double:
 * O(n_a n_b d) work, cosines within about 1e-6 of a double computation;
 * 8192 rows against 10,000 of 768 take about 1.6 s of CPU time.
 * Errors: SAE_E_INVALID_ARG (a or b NULL, cosine and index both NULL, n_a,
 * n_b or d 0, n_b or d above INT_MAX, n_a * d * 4 or n_b * d * 4
 * overflowing size_t), SAE_E_NONFINITE (a row holds NaN or Inf or its norm
 * exceeds FLT_MAX; the two largest norms' product is not below 2^126: the
 * dot products would overflow float), SAE_E_NOMEM; cosine and index are
 * untouched on error. Since 0.2. */
SAE_API int sae_max_cosine(const float *a, size_t n_a, const float *b, size_t n_b, size_t d,
                           float *cosine, uint32_t *index);

/* ------------------------------------------------------------------------ */
/* Distributed training: the communicator                                   */
/* ------------------------------------------------------------------------ */

/* libsae trains across processes (ranks) without depending on any transport:
 * the host hands it a communicator, a struct of function pointers it fills
 * in over whatever its cluster uses (MPI, NCCL, sockets, threads). The
 * companion library libsae-mpi (<libsae/sae_mpi.h>) fills one in over an
 * MPI_Comm.
 *
 * Every function returns 0 on success and nonzero on failure, which libsae
 * reports as SAE_E_COMM. The functions are collective: every rank of the
 * communicator calls the same functions in the same order with the same
 * counts (libsae guarantees this of its own calls). libsae calls them only
 * from the thread that called into libsae, never from its own threads. It
 * never passes a count or byte size of 0.
 *
 *   allreduce_f32  buf[0..count) on every rank becomes the elementwise sum
 *   allreduce_f64  over all ranks of their buf (in place). The sums need
 *                  not be bitwise reproducible, nor even give the same bits
 *                  on every rank: libsae keeps its replicas identical itself
 *                  (it checks a hash of what it reduced and takes rank 0's
 *                  result where they differ).
 *   allgather      recv (n_ranks * bytes) receives every rank's send
 *                  (bytes), rank r's at recv + r * bytes. send and recv do
 *                  not overlap.
 *   broadcast      buf (bytes) on every rank becomes root's buf.
 *
 * The struct grows only at the end: set struct_size to sizeof(sae_comm) as
 * your program was compiled (a later library reads only the fields your
 * struct has; an earlier one refuses a struct_size it does not know to be
 * complete with SAE_E_INVALID_ARG). libsae copies the struct where it keeps
 * it; ctx must stay valid as long as the copy is in use. */
typedef struct sae_comm {
    size_t struct_size;  /* sizeof(sae_comm): set it first */
    void *ctx;           /* the host's, passed back to every function */
    int rank;            /* this process's rank, 0 <= rank < n_ranks */
    int n_ranks;         /* ranks in the communicator, >= 1 */
    int (*allreduce_f32)(void *ctx, float *buf, size_t count);
    int (*allreduce_f64)(void *ctx, double *buf, size_t count);
    int (*allgather)(void *ctx, const void *send, size_t bytes, void *recv);
    int (*broadcast)(void *ctx, void *buf, size_t bytes, int root);
} sae_comm;

/* ------------------------------------------------------------------------ */
/* Distributed training: data-parallel and feature-sharded steps             */
/* ------------------------------------------------------------------------ */

/* Two ways to train one SAE on several ranks, chosen per optimizer:
 *
 * SAE_PARALLEL_DATA: every rank holds the whole model (created the same way:
 *   same shape, seed, architecture, options) and calls sae_step on its own
 *   rows; the global batch is the ranks' rows in rank order (their counts
 *   may differ). The step is the single-process step on the global batch:
 *   losses averaged over it, BatchTopK's n k largest over it, AuxK normalised
 *   by its residual variance, dead-feature counters counting its tokens. The
 *   gradients are summed with one allreduce_f32 of the whole gradient block
 *   (2 d_in d_sae + d_sae + d_in floats, a little padding included) per step;
 *   the statistics, a 64-bit hash of the summed gradient and each feature's
 *   last firing (4 d_sae bytes) travel in one allgather. The replicas stay
 *   bit-identical: where the hashes differ, rank 0's sum is broadcast.
 *
 * SAE_PARALLEL_FEATURES: rank r holds features [begin_r, end_r) of a d_sae-
 *   feature model (sae_model_create_shard; in rank order the shards cover
 *   [0, d_sae), uneven ones allowed), with their Adam moments and activity
 *   counters; b_dec is on every rank. Every rank calls sae_step on the same
 *   x (checked by hash). Each computes its features' activations; TopK and
 *   BatchTopK (and AuxK's picks) select across shards as one process would
 *   (each shard sends its k largest values per token: 4 n k bytes); the
 *   shards' partial reconstructions are summed (allreduce_f32 of n d_out
 *   floats, twice with AuxK or for a Gated SAE's auxiliary reconstruction),
 *   so the communication does not grow with d_sae; every gradient but
 *   b_dec's (and a skip transcoder's W_skip's, which every shard holds and
 *   updates alike) is the shard's own. Transcoders are sharded with
 *   sae_model_create_transcoder_shard and step with sae_step_target, every
 *   rank on the same x and y. Matryoshka SAEs are sharded with
 *   sae_model_create_matryoshka_shard: one BatchTopK selection across the
 *   shards, and every level's reconstruction summed over them (levels x n
 *   d_out floats per step instead of n d_out). No rank holds a per-feature
 *   tensor of the whole model.
 *
 * Both at once, a 2-D grid: G data groups of S feature shards each (G x S
 *   ranks). The ranks of one data group hold the S shards of the model and
 *   step on the same x, that group's rows of the global batch; they share a
 *   FEATURES communicator (rank s: shard s). The ranks that hold the same
 *   shard, one per group, share a DATA communicator (rank g: group g), and
 *   are replicas of each other. Each rank attaches both
 *   (sae_optimizer_set_comm, either first). The global batch is the groups'
 *   rows in group order (their counts may differ); the step is the single-
 *   process step on it, as above: the TopK and AuxK candidates, the
 *   reconstruction sums and b_dec's encoder term go over FEATURES, within a
 *   group; the loss's 1/n and AuxK's residual variance are the global
 *   batch's, and each shard's gradient block (its features' rows, columns
 *   and values, b_dec) is summed over DATA with one allreduce_f32, checked by
 *   hash as data-parallel replicas are; the statistics add over both. Per
 *   step and rank: the feature-sharded exchanges for the group's n rows
 *   (n d_out floats of reconstruction, 4 n k bytes of TopK candidates, twice
 *   with AuxK), plus the shard's gradient block over DATA (about
 *   (2 d_in d_sae / S + d_in) floats), plus small allgathers (the header, the
 *   statistics with 4 d_sae / S bytes of last firings, hashes): three calls
 *   over DATA per step (the header, the gradient allreduce, the statistics;
 *   four with AuxK), and about eight over FEATURES. BatchTopK (and
 *   Matryoshka) select the n k largest over the global batch: their radix
 *   histograms (2 x 512 KB) are summed over FEATURES then DATA, and ties at
 *   the K-th value are kept in group, token, then feature order, as one
 *   process keeps them. Every architecture and family trains on a grid;
 *   sae_resample_dead is refused on a grid in this version
 *   (SAE_E_INVALID_ARG on every rank, with a detail).
 *
 * With the same seed, data and global batch, all give the single-process
 * model up to the order of floating-point sums. Collective calls (the step,
 * and sae_resample_dead with a feature-sharded optimizer) must be made by
 * every rank in the same order. Argument errors, a NaN in one rank's rows
 * or an allocation that fails on one rank are found in the step's exchanges
 * and returned by every rank (the same status; nothing changes on any rank),
 * as are ranks that disagree on the batch (feature-sharded), the shape, the
 * shards, the step count or the options (all but SAE_OPT_THREADS must be
 * equal), and on a grid ranks whose two communicators do not form one
 * (the ranks of a FEATURES communicator not one data group, the ranks of a
 * DATA communicator not holding the same shard, some ranks with one
 * communicator, others with two). A NULL model or optimizer cannot be
 * reported to the other ranks. A communicator function that fails
 * (SAE_E_COMM) stops the step on every rank of that communicator, unchanged;
 * on a grid the other ranks learn of it at the step's last exchange or at
 * the next step's first, and return SAE_E_COMM too (ranks of another group
 * may have finished the step already: restart from a checkpoint).
 */
enum sae_parallel {
    SAE_PARALLEL_DATA = 1,     /* whole models, each rank its rows; on a grid: the
                                  ranks holding the same shard, one per data group */
    SAE_PARALLEL_FEATURES = 2  /* shards, every rank the same rows; on a grid: the
                                  shards of one data group */
};

/* Attach a communicator to o for mode (SAE_PARALLEL_DATA or
 * SAE_PARALLEL_FEATURES): from now on sae_step is a distributed step over
 * comm's ranks. comm is copied (its ctx must stay valid while attached); a
 * NULL comm detaches the mode's communicator, and o steps alone again. Not a
 * collective call: the ranks check each other at the next step. An optimizer
 * holds one communicator per mode; one of each makes it a rank of a 2-D
 * grid (see above). Attachments are not saved with the optimizer.
 * Errors: SAE_E_INVALID_ARG (o NULL, an unknown mode, a comm whose
 * struct_size, rank, n_ranks or functions are invalid, the communicator
 * attached for the other mode given again: a grid's two axes are two
 * communicators), SAE_E_NOMEM. o is unchanged on error. Transcoders step with
 * sae_step_target: data-parallel ranks each on their rows of x and y,
 * feature shards all on the same x and y. */
SAE_API int sae_optimizer_set_comm(sae_optimizer *o, int mode, const sae_comm *comm);

/* The even split of d_sae features into n_shards shards: shard s holds
 * [d_sae s / n_shards, d_sae (s + 1) / n_shards) (sizes differ by at most
 * one). Errors: SAE_E_INVALID_ARG (NULL output, d_sae 0, n_shards < 1 or
 * above d_sae, shard outside [0, n_shards)); the outputs are then untouched. */
SAE_API int sae_shard_range(size_t d_sae, int n_shards, int shard, size_t *begin, size_t *end);

/* Create features [begin, end) of the model sae_model_create_arch(out, d_in,
 * d_sae, seed, arch, param) creates: exactly its slice, bit for bit (each
 * decoder row has its own random stream), of size O((end - begin) d_in).
 * The shard is a model of end - begin features: sae_model_d_sae, the tensor
 * sizes and sae_model_get/set_tensor are those of its slice (W_enc: d_in x
 * (end - begin), the columns begin .. end - 1), while k stays the whole
 * model's. Functions that need every feature (sae_encode, sae_decode,
 * sae_loss, sae_fvu, the density and firing statistics, sae_model_save,
 * sae_optimizer_save) return SAE_E_STATE on a shard. [begin, end) =
 * [0, d_sae) is an ordinary model. Gated shards hold their features' b_gate,
 * b_mag and r_mag.
 * Errors: as sae_model_create_arch, and SAE_E_INVALID_ARG for begin >= end
 * or end > d_sae. On error *out is NULL. */
SAE_API int sae_model_create_shard(sae_model **out, size_t d_in, size_t d_sae, size_t begin,
                                   size_t end, uint64_t seed, int arch, double param);

/* The same for a transcoder: features [begin, end) of the model
 * sae_model_create_transcoder(out, d_in, d_out, d_sae, seed, kind, arch,
 * param) creates, exactly its slice (W_enc's columns and W_dec's rows, d_out
 * wide, each from its own random stream). b_dec (d_out) and a skip
 * transcoder's W_skip (d_out x d_in) are whole on every shard.
 * Errors: as sae_model_create_transcoder, and SAE_E_INVALID_ARG for
 * begin >= end or end > d_sae. On error *out is NULL. */
SAE_API int sae_model_create_transcoder_shard(sae_model **out, size_t d_in, size_t d_out,
                                              size_t d_sae, size_t begin, size_t end,
                                              uint64_t seed, int kind, int arch, double param);

/* The same for a Matryoshka SAE: features [begin, end) of the model
 * sae_model_create_matryoshka(out, d_in, d_sae, seed, k, widths, n_widths)
 * creates, exactly its slice. The shard keeps the whole model's level widths
 * (sae_model_matryoshka_widths) and k; its levels' boundaries need not fall
 * on the shards' (a band of features may span shards). Feature-sharded, each
 * level's reconstruction is summed over the shards: (levels) n d_in floats
 * per step, one allreduce of the full width and one of the inner levels.
 * Errors: as sae_model_create_matryoshka, and SAE_E_INVALID_ARG for
 * begin >= end or end > d_sae. On error *out is NULL. */
SAE_API int sae_model_create_matryoshka_shard(sae_model **out, size_t d_in, size_t d_sae,
                                              size_t begin, size_t end, uint64_t seed, size_t k,
                                              const size_t *widths, size_t n_widths);

/* The features m holds: [*begin, *end) of *d_sae_total ([0, d_sae) of d_sae
 * for an ordinary model). Any output may be NULL. Errors: SAE_E_INVALID_ARG
 * (m NULL). */
SAE_API int sae_model_shard(const sae_model *m, size_t *begin, size_t *end, size_t *d_sae_total);

/* Checkpoints of a distributed run are the single-process files ("Checkpoints"
 * above): sae_weights.safetensors and cfg.json (SAELens opens them) and
 * optimizer.safetensors, which one process loads with sae_model_load and
 * sae_optimizer_load, and any number of shards with sae_model_load_shard and
 * sae_optimizer_load (resharding is just loading other slices). No rank
 * holds more than its own part to save or load them.
 *
 * Save m collectively into path (a file, or an existing directory for
 * sae_weights.safetensors and cfg.json, as sae_model_save): every rank of
 * comm calls it. If the ranks hold the same whole model (data-parallel),
 * rank 0 writes it (sae_model_save) and the others return its status. If
 * they hold shards that cover [0, d_sae) in rank order, rank 0 creates the
 * temporary files, every rank writes its slices into them at their offsets
 * (rows of W_dec, columns of W_enc, its b_enc, thresholds and JumpReLU log
 * thresholds' digits, a Gated SAE's b_gate, b_mag and r_mag; b_dec and
 * W_skip by rank 0), then rank 0 renames them into
 * place once all have succeeded: atomic as sae_model_save, the same bytes as
 * a single process saving the whole model. Every rank returns the same
 * status. path must name the same file on every rank: a shared file system
 * whose writes, fsync'ed and closed, are seen by another host's rename and
 * open (Lustre, GPFS, BeeGFS, NFS with close-to-open consistency).
 * Errors: SAE_E_INVALID_ARG (NULL, ranks that disagree on the model's shape
 * or shards), SAE_E_IO (as sae_model_save, on any rank), SAE_E_NOMEM,
 * SAE_E_COMM. */
SAE_API int sae_model_save_collective(const sae_model *m, const sae_comm *comm, const char *path);

/* The same for an optimizer (a file, or path/optimizer.safetensors in an
 * existing directory): a shard's optimizer writes the moments and counters of
 * its features. */
SAE_API int sae_optimizer_save_collective(const sae_optimizer *o, const sae_comm *comm,
                                          const char *path);

/* A distributed run's checkpoint, through the communicators attached to o
 * (sae_optimizer_set_comm): m's sae_weights.safetensors and cfg.json and o's
 * optimizer.safetensors into the existing directory dir (e.g. the staging
 * directory of sae_checkpoint_begin, committed afterwards), the files of a
 * single process saving the whole model. Every rank of the run calls it
 * with its model, its optimizer and the same dir. One mode: as
 * sae_model_save_collective then sae_optimizer_save_collective over its
 * communicator. A 2-D grid: the shards of data group 0 (DATA rank 0) write
 * them over their FEATURES communicator, and every other rank learns their
 * status from its shard's rank in group 0 (a broadcast over DATA): the
 * replicas write nothing. Every rank returns the same status, but for a rank
 * outside group 0 whose own arguments are wrong (it returns its error; the
 * checkpoint is written). A single process (or any number of shards) loads
 * it: sae_model_load / sae_model_load_shard, then sae_optimizer_load.
 * Errors: SAE_E_INVALID_ARG (NULL, o made for another model or shard, ranks
 * that disagree), SAE_E_STATE (no communicator attached: use sae_model_save
 * and sae_optimizer_save), SAE_E_IO (dir not a directory, a write on any
 * writing rank), SAE_E_NOMEM, SAE_E_COMM. A NULL argument cannot be reported
 * to the other ranks. */
SAE_API int sae_checkpoint_save_collective(const sae_model *m, const sae_optimizer *o,
                                           const char *dir);

/* Load features [begin, end) of the model saved at path (a file or a
 * directory, as sae_model_load) as a shard (sae_model_create_shard): reads
 * only those features' rows, columns and values (and b_dec), checked as
 * sae_model_load checks a file (a transcoder's shard: W_dec rows d_out wide,
 * b_dec and W_skip whole; a Matryoshka shard: the whole model's widths and
 * BatchTopK threshold). The shard's
 * optimizer: sae_optimizer_load with the shard, which reads its part of the
 * whole model's optimizer file.
 * Errors: as sae_model_load; SAE_E_INVALID_ARG for begin >= end or an end
 * past the file's d_sae. On error *out is NULL. */
SAE_API int sae_model_load_shard(sae_model **out, const char *path, size_t begin, size_t end);

#ifdef __cplusplus
}
#endif

#endif /* SAE_H_INCLUDED */
