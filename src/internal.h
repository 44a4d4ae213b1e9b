/*
 * Internal declarations shared by the library's source files. Not installed.
 *
 * Memory layout. A model keeps all its parameters in one 64-byte-aligned block
 * of floats with four named views; gradients and both Adam moments use the same
 * layout, so the optimizer, the gradient norm and clipping are one loop over
 * one flat buffer (as in llm.c). Each view starts on a 64-byte boundary; the
 * padding floats between views are kept at zero in every buffer.
 *
 *   w_enc_t  d_sae x d_in   W_enc transposed: row i is feature i's encoder
 *                           direction, so per-feature work reads one contiguous
 *                           row (get/set convert to SAELens's d_in x d_sae)
 *   w_dec    d_sae x d_in   W_dec, as SAELens stores it
 *   b_enc    d_sae
 *   b_dec    d_in
 */
#ifndef LIBSAE_INTERNAL_H
#define LIBSAE_INTERNAL_H

#include "libsae/sae.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SAE_ALIGN_BYTES 64
#define SAE_ALIGN_FLOATS (SAE_ALIGN_BYTES / sizeof(float))

/* Tokens per block in the forward/backward passes: bounds the dense
 * n_tokens x d_sae scratch to SAE_BLOCK_TOKENS x d_sae floats per buffer. */
#define SAE_BLOCK_TOKENS 1024

/* ---- allocation (alloc.c) -------------------------------------------------
 * Every allocation in the library goes through these, so tests can count bytes
 * and inject a failure at each allocation site (built with SAE_TESTING). */
void *sae__alloc(size_t bytes);        /* 64-byte aligned; NULL on failure or 0 */
void *sae__alloc_zero(size_t bytes);   /* same, zero-filled */
void sae__free(void *p);               /* NULL is fine */

/* *out = a * b; returns false (and leaves *out alone) if that overflows. */
static inline bool sae__mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return false;
    *out = a * b;
    return true;
}

static inline bool sae__add(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a)
        return false;
    *out = a + b;
    return true;
}

#ifdef SAE_TESTING
/* Test hooks, compiled only into the test build of the library. */
extern long sae__test_fail_countdown; /* fail the allocation that brings it to 0;
                                         negative: never fail */
extern size_t sae__test_bytes_live;   /* bytes currently allocated */
extern size_t sae__test_bytes_peak;   /* high-water mark of bytes_live */
extern size_t sae__test_alloc_calls;  /* allocations attempted */
#endif

/* ---- RNG (rng.c): the library's own generator, the same bits everywhere --- */
typedef struct sae_rng {
    uint64_t s[4]; /* xoshiro256** state */
} sae_rng;

void sae__rng_seed(sae_rng *r, uint64_t seed, uint64_t stream);
uint64_t sae__rng_next(sae_rng *r);
double sae__rng_uniform(sae_rng *r);  /* in [0, 1) with 53 random bits */
double sae__rng_normal(sae_rng *r);   /* standard normal (Box-Muller) */

/* ---- model (model.c) ------------------------------------------------------ */

/* Offsets, in floats, of the four views inside a parameter-shaped block. */
typedef struct sae_layout {
    size_t w_enc_t, w_dec, b_enc, b_dec;
    size_t total; /* floats in the block, padding included */
} sae_layout;

/* Fill *lay for the given shape; false if any size overflows. */
bool sae__layout_init(sae_layout *lay, size_t d_in, size_t d_sae);

struct sae_model {
    size_t d_in, d_sae;
    sae_layout lay;
    float *params; /* lay.total floats */
    /* max |p| over all parameters: lets the optimizer prove cheaply that an
     * update cannot overflow. Kept exact by every function that writes params. */
    float param_absmax;
};

static inline float *sae__w_enc_t(const sae_model *m) { return m->params + m->lay.w_enc_t; }
static inline float *sae__w_dec(const sae_model *m) { return m->params + m->lay.w_dec; }
static inline float *sae__b_enc(const sae_model *m) { return m->params + m->lay.b_enc; }
static inline float *sae__b_dec(const sae_model *m) { return m->params + m->lay.b_dec; }

/* Recompute m->param_absmax after the parameters changed wholesale. */
void sae__model_refresh_absmax(sae_model *m);

/* ---- small vector helpers (model.c) --------------------------------------- */
bool sae__all_finite(const float *v, size_t count);
float sae__absmax(const float *v, size_t count);

/* norms[i] = ||w_dec[i,:]||_2 for the d_sae rows (accumulated in double). */
void sae__decoder_row_norms(const sae_model *m, float *norms);

/* ---- forward pieces shared by encode, loss and step (forward.c) ---------- */

/* For rows tokens of x (rows x d_in): xc = x - b_dec (rows x d_in) and
 * f = ReLU(xc W_enc + b_enc) (rows x d_sae). */
void sae__encode_block(const sae_model *m, const float *x, size_t rows, float *xc, float *f);

/* x_hat = f W_dec + b_dec for rows tokens; f: rows x d_sae, x_hat: rows x d_in. */
void sae__decode_block(const sae_model *m, const float *f, size_t rows, float *x_hat);

/* Unnormalised loss sums over tokens, in double. */
typedef struct sae_loss_sums {
    double l2;     /* sum_t sum_j (x_hat_tj - x_tj)^2 */
    double l1;     /* sum_t sum_i f_ti * norms[i] */
    double active; /* sum_t #{i : f_ti > 0} */
} sae_loss_sums;

/* The forward pass of rows tokens, adding their losses to *sums:
 * xc = x - b_dec (rows x d_in), f (rows x d_sae), err = x_hat - x (rows x d_in).
 * norms: the d_sae decoder row norms. */
void sae__forward_block(const sae_model *m, const float *norms, const float *x, size_t rows,
                        float *xc, float *f, float *err, sae_loss_sums *sums);

/* Per-token averages of the sums, and loss = l2 + lambda * l1. */
void sae__losses_from_sums(const sae_loss_sums *sums, size_t n_tokens, double lambda,
                           sae_losses *out);

/* ---- loss and backward (backward.c) --------------------------------------- */

/* Scratch for one step, owned by the optimizer. Sized for a block of tokens on
 * the first step and grown only when a larger batch arrives; never shrunk. */
typedef struct sae_workspace {
    size_t d_in, d_sae;
    size_t block_cap;     /* tokens per block the block buffers hold (0: none yet) */
    float *xc;            /* block_cap x d_in: x - b_dec */
    float *err;           /* block_cap x d_in: x_hat - x, then dL/dx_hat */
    float *f;             /* block_cap x d_sae: features */
    float *df;            /* block_cap x d_sae: dL/df, then dL/dpre */
    float *norms;         /* d_sae: decoder row norms */
    double *f_sum;        /* d_sae: sum over the batch of f_ti */
    double *g_b_enc;      /* d_sae: dL/db_enc accumulated in double */
    double *g_b_dec;      /* d_in: dL/db_dec accumulated in double */
    uint64_t *last_fired; /* d_sae: 1 + index of the last token where f_ti > 0, 0 if none */
} sae_workspace;

/* Allocate the per-feature buffers (once) and the block buffers for at least
 * block tokens. On SAE_E_NOMEM the workspace is as it was. */
int sae__workspace_reserve(sae_workspace *ws, size_t d_in, size_t d_sae, size_t block);
void sae__workspace_free(sae_workspace *ws);

/* Forward pass and exact gradients of loss = l2 + lambda * l1 over the batch.
 * grad: a parameter-layout block, every view overwritten (padding untouched).
 * Adds the batch's loss sums to *sums and fills ws->last_fired. The workspace
 * must hold min(n_tokens, SAE_BLOCK_TOKENS) tokens. Cannot fail. */
void sae__forward_backward(const sae_model *m, double lambda, const float *x, size_t n_tokens,
                           sae_workspace *ws, float *grad, sae_loss_sums *sums);

/* ---- optimizer (optimizer.c) ---------------------------------------------- */

struct sae_optimizer {
    /* the shape of the models it steps */
    size_t d_in, d_sae;
    sae_layout lay;
    double lr, beta1, beta2, eps, l1_coeff, grad_clip;
    uint64_t steps;
    float *grad;         /* lay.total floats: gradients, parameter layout */
    float *m1;           /* lay.total floats: Adam first moment */
    float *m2;           /* lay.total floats: Adam second moment */
    float m1_absmax;     /* max |m1| after the last update */
    float m2_max;        /* max m2 after the last update */
    uint64_t *since_fired; /* d_sae: training tokens since each feature last fired */
    sae_workspace ws;
};

#endif /* LIBSAE_INTERNAL_H */
