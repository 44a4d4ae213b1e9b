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
 *
 * A training step's data path (sae_step), x -> f -> x_hat -> gradients ->
 * Adam, file by file (each named for what it holds):
 *
 *   optimizer.c  sae_step: the lr and lambda of the step (schedule.c), the
 *                workspace (workspace.c), then sae__forward_backward, then
 *                clipping and one Adam pass over the flat parameter block
 *   backward.c   sae__forward_backward: for each block of tokens the forward
 *                pass, then the gradients on the dense path (CBLAS) or the
 *                sparse path (sparse.c), AuxK, the biases
 *   forward.c    the forward pass: x -> xc -> f (sae__encode_block: one GEMM
 *                and the architecture's activation per token) -> x_hat
 *                (sae__forward_decode); the same encoder and decoder serve
 *                sae_encode, sae_loss and every read-only call (sae_output).
 *                The dense path's encoder and decoder.
 *   encode_fused.c  the sparse path's encoder: x -> f as (token, feature)
 *                pairs, a tile of features at a time, with select.c's
 *                streaming TopK / BatchTopK selection (the one file beside
 *                it that the path reads)
 *   sparse.c     the sparse path's decoder and gradients over those pairs
 *
 * The dense path reads three of them: optimizer.c -> backward.c -> forward.c.
 * The sparse path: optimizer.c -> backward.c -> encode_fused.c (+ select.c)
 * -> sparse.c, with forward.c's activation parameters and, where the fused
 * encoder does not apply (a BatchTopK transcoder), its block encoder. Every
 * product goes through gemm.c (CBLAS or oneDNN); distributed steps add
 * parallel.c's hooks, which exchange what the ranks computed.
 *
 * select.c is to the selection what gemm.c is to the products: kernels with
 * the contracts stated below ("selection on streams"), shared by both paths
 * (the dense path's TopK and BatchTopK cut with them too) and by
 * sparse_codes.c. It is kept apart from encode_fused.c for that reason:
 * folded into the fused encoder, the dense encoder would read the sparse
 * path's file.
 */
#ifndef LIBSAE_INTERNAL_H
#define LIBSAE_INTERNAL_H

#include "libsae/sae.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Element-wise loops worth compiling for several vector widths, chosen at
 * run time (GCC/Clang function multiversioning on x86-64). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define SAE_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SAE_VECTOR_CLONES
#endif

#define SAE_ALIGN_BYTES 64
#define SAE_ALIGN_FLOATS (SAE_ALIGN_BYTES / sizeof(float))

/* Tokens per block in the forward/backward passes: bounds the dense
 * n_tokens x d_sae scratch to SAE_BLOCK_TOKENS x d_sae floats per buffer. */
#define SAE_BLOCK_TOKENS 1024

/* The block of a call over n_tokens tokens, and the rows of the block that
 * starts at token t0. */
static inline size_t sae__block_size(size_t n_tokens)
{
    return n_tokens < SAE_BLOCK_TOKENS ? n_tokens : SAE_BLOCK_TOKENS;
}

static inline size_t sae__block_rows(size_t n_tokens, size_t t0, size_t block)
{
    return n_tokens - t0 < block ? n_tokens - t0 : block;
}

typedef struct sae_pool sae_pool; /* threads.c */
typedef struct sae_par sae_par;           /* distributed training (parallel.h) */
typedef struct sae_par_step sae_par_step;

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
extern int sae__test_portable_kernels; /* nonzero: never use the AVX-512 kernels */
extern int sae__test_sparse_layout;   /* 0: by density; 1: rows in place; 2: packed panels */
extern _Thread_local bool sae__test_encode_fails; /* the calling thread's sae__encode_block
                                         fails (SAE_E_NOMEM) after centring, as the bf16
                                         product's allocation can: one rank's failure */
#endif

/* ---- errors (status.c) ------------------------------------------------------
 * Every failure site records why it fails, for sae_error_detail (one message
 * per thread), naming the function and what was wrong, and returns its status:
 *     return sae__fail(SAE_E_INVALID_ARG, "sae_step: n_tokens is 0");
 * Only sites that hand a failure to their caller set it; a status that an
 * internal caller recovers from (a missing optional file) does not. */
#if defined(__GNUC__)
#define SAE_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define SAE_PRINTF(fmt, args)
#endif
int sae__fail(int status, const char *fmt, ...) SAE_PRINTF(2, 3);

/* Put "<prefix>: " in front of the current detail (a caller adding context,
 * such as the file being read, to a failure reported below it); returns
 * status. */
int sae__fail_context(int status, const char *fmt, ...) SAE_PRINTF(2, 3);

/* ---- argument checks (validate.c) -------------------------------------------
 * Every public function checks its buffer arguments with these before it
 * touches any of them. */

/* ptr non-NULL, rows > 0, and rows x width elements of elem_size bytes within
 * size_t; the names say what the detail calls them ("x", "n_tokens", "d_in"). */
int sae__check_rows(const char *fn, const char *name, const void *ptr, size_t rows,
                    const char *rows_name, size_t width, const char *width_name, size_t elem_size);

/* A buffer of capacity elements of elem_size bytes that may be short (the
 * function writes at most capacity): ptr may be NULL only when capacity is
 * 0, and the byte size must fit size_t. */
int sae__check_capacity(const char *fn, const char *name, const void *ptr, size_t capacity,
                        const char *capacity_name, size_t elem_size);

/* offsets of a sparse batch: n_tokens + 1 size_t entries, n_tokens > 0, the
 * byte size within size_t. */
int sae__check_offsets(const char *fn, const char *name, const void *ptr, size_t n_tokens);

/* SAE_E_NONFINITE (naming the first NaN or Inf of v; fn may be NULL for a
 * caller that adds its name) unless v[0..count) is finite. */
int sae__check_finite(const char *fn, const char *name, const float *v, size_t count);

/* The random numbers are the public sae_rng_* (rng.c): one generator. */

/* ---- model (model.c) ------------------------------------------------------ */

/* Offsets, in floats, of the views inside a parameter-shaped block. */
typedef struct sae_layout {
    size_t w_enc_t, w_dec, b_enc, b_dec;
    size_t log_thr;       /* JumpReLU: d_sae log thresholds t_i (theta_i = exp t_i) */
    size_t log_thr_count; /* d_sae for JumpReLU, else 0 */
    size_t r_mag, b_mag;  /* Gated: d_sae each, the magnitude path's log scales and bias */
    size_t gated_count;   /* d_sae for Gated, else 0 */
    size_t w_skip;        /* skip transcoders: d_out x d_in, SAELens's W_skip as it is */
    size_t w_skip_count;  /* d_out * d_in for skip transcoders, else 0 */
    size_t d_out;         /* the width of W_dec's rows and b_dec (d_in for autoencoders) */
    size_t total;         /* floats in the block, padding included */
} sae_layout;

/* What a model's parameter block holds: its dimensions, architecture (SAE_ARCH_*)
 * and kind (SAE_KIND_*). An autoencoder has d_out = d_in. */
typedef struct sae_shape {
    size_t d_in, d_out, d_sae;
    int arch, kind;
} sae_shape;

/* Fill *lay for the shape: W_enc^T d_sae x d_in, W_dec d_sae x d_out, b_enc
 * d_sae, b_dec d_out, and the views the architecture and kind add; false if any
 * size overflows. */
bool sae__layout_for(sae_layout *lay, const sae_shape *shape);

/* The autoencoder layout (with_thresholds: JumpReLU's extra view). */
bool sae__layout_init(sae_layout *lay, size_t d_in, size_t d_sae, bool with_thresholds);

/* Matryoshka's level widths: at most this many. */
#define SAE_MAX_LEVELS 64

struct sae_model {
    size_t d_in, d_sae;
    size_t d_out;         /* the output's width: d_in for autoencoders */
    int arch;             /* SAE_ARCH_* */
    int kind;             /* SAE_KIND_* */
    size_t k;             /* TopK / BatchTopK / Matryoshka: active features per token */
    float batch_threshold; /* BatchTopK, Matryoshka at inference: f = pre where pre > it;
                              negative until training has set it */
    size_t n_levels;      /* Matryoshka: widths[0..n_levels), increasing, the last d_sae */
    size_t widths[SAE_MAX_LEVELS];
    sae_layout lay;
    float *params; /* lay.total floats */
    /* max |p| over all parameters: lets the optimizer prove cheaply that an
     * update cannot overflow. Kept exact by every function that writes params. */
    float param_absmax;
    /* changes whenever the parameters do (sae__model_refresh_absmax, a step),
     * and starts from a value no other model is likely to have: caches of
     * derived tensors (the optimizer's bf16 W_enc) key on (model, version) */
    uint64_t version;
    /* A shard of a feature-sharded model (sae_model_create_shard) holds
     * features [shard_begin, shard_begin + d_sae) of d_sae_total (a whole
     * model: 0 and d_sae; 0 and 0 in a zeroed struct, which is whole too). */
    size_t shard_begin, d_sae_total;
};

/* Create features [begin, end) of the model sae_model_create_arch(d_in,
 * d_sae, seed, arch, param) creates: exactly its slice (a whole model:
 * 0, d_sae). SAE_E_INVALID_ARG / SAE_E_NONFINITE / SAE_E_NOMEM as there, and
 * for an empty or out-of-range slice. */
int sae__model_create(sae_model **out, size_t d_in, size_t d_sae, size_t begin, size_t end,
                      uint64_t seed, int arch, double param);

/* sae_model_create_matryoshka's features [begin, end) (a shard when not
 * [0, d_sae)), its errors naming fn. */
int sae__matryoshka_create(sae_model **out, const char *fn, size_t d_in, size_t d_sae,
                           size_t begin, size_t end, uint64_t seed, size_t k,
                           const size_t *widths, size_t n_widths);

/* Features [begin, end) of the transcoder sae_model_create_transcoder makes
 * (a whole one: 0, d_sae); its errors, naming fn. */
int sae__transcoder_create(sae_model **out, const char *fn, size_t d_in, size_t d_out,
                           size_t d_sae, size_t begin, size_t end, uint64_t seed, int kind,
                           int arch, double param);

/* SAE_E_STATE (naming fn) if m is a shard: for functions that need every
 * feature (shard.c). */
int sae__check_whole(const char *fn, const sae_model *m);

/* Whether m is a proper part of a feature-sharded model, and its d_sae_total. */
static inline bool sae__is_shard(const sae_model *m) { return m->d_sae_total > m->d_sae; }
static inline size_t sae__total_features(const sae_model *m)
{
    return m->d_sae_total > m->d_sae ? m->d_sae_total : m->d_sae;
}

static inline float *sae__w_enc_t(const sae_model *m) { return m->params + m->lay.w_enc_t; }
static inline float *sae__w_dec(const sae_model *m) { return m->params + m->lay.w_dec; }
static inline float *sae__b_enc(const sae_model *m) { return m->params + m->lay.b_enc; }
static inline float *sae__b_dec(const sae_model *m) { return m->params + m->lay.b_dec; }
static inline float *sae__log_thr(const sae_model *m) { return m->params + m->lay.log_thr; }
static inline float *sae__r_mag(const sae_model *m) { return m->params + m->lay.r_mag; }
static inline float *sae__b_mag(const sae_model *m) { return m->params + m->lay.b_mag; }
static inline float *sae__w_skip(const sae_model *m) { return m->params + m->lay.w_skip; }

/* BatchTopK and Matryoshka select over the batch in training and keep one
 * threshold for inference; TopK, BatchTopK and Matryoshka have a k. */
static inline bool sae__batch_selected(int arch)
{
    return arch == SAE_ARCH_BATCHTOPK || arch == SAE_ARCH_MATRYOSHKA;
}
static inline bool sae__has_k(int arch) { return arch == SAE_ARCH_TOPK || sae__batch_selected(arch); }

/* What a function computes beyond the plain autoencoders (ReLU, TopK,
 * BatchTopK, JumpReLU): flags for sae__family_check. */
enum { SAE_FAMILY_GATED = 1, SAE_FAMILY_MATRYOSHKA = 2, SAE_FAMILY_TRANSCODER = 4 };

/* SAE_OK if m (not NULL) is a plain autoencoder or of a family in `accepts`;
 * else SAE_E_INVALID_ARG with a detail naming fn and the family. */
int sae__family_check(const char *fn, const sae_model *m, unsigned accepts);

/* SAELens's decoder_init_norm default, and libsae's (Anthropic's April 2024 recipe). */
#define SAE_DECODER_INIT_NORM 0.1

/* Check param for arch (sae_model_create_arch's rules); *k = the k it gives
 * (0 for architectures without one). Sets the detail, naming fn. */
int sae__check_arch_param(const char *fn, int arch, double param, size_t d_sae, size_t *k);

/* A model of the shape, or its features [begin, end) of shape->d_sae (a
 * shard; [0, d_sae): the whole model), initialised as sae_model_create
 * documents with decoder rows of L2 norm decoder_init_norm (transcoders:
 * encoder columns drawn apart); param as sae_model_create_arch (checked by the
 * caller), k and Matryoshka's widths set by the caller afterwards. fn names
 * the public function in the error detail. */
int sae__model_new(sae_model **out, const char *fn, const sae_shape *shape, size_t begin,
                   size_t end, uint64_t seed, double param, double decoder_init_norm);

/* Draw the initial parameters again (sae__model_new's), keeping the shape,
 * architecture, k, widths and JumpReLU thresholds. */
void sae__model_init_params(sae_model *m, uint64_t seed, double decoder_init_norm);

/* A fresh version for a new model (see struct sae_model). */
uint64_t sae__model_new_version(const sae_model *m);

/* Recompute m->param_absmax after the parameters changed wholesale (and
 * advance m->version). */
void sae__model_refresh_absmax(sae_model *m);

/* ---- small vector helpers (model.c) --------------------------------------- */
bool sae__all_finite(const float *v, size_t count);
float sae__absmax(const float *v, size_t count);

/* mean[j] = (1/n) sum_t x[t][j] over the n rows of x (n x d floats), in double. */
void sae__mean_rows(const float *x, size_t n, size_t d, double *mean);
/* sum_t ||x_t - mean||^2 of the rows of x (n x d), two-pass in double; mean
 * (d doubles) receives the rows' mean (sae__mean_rows). The one copy of this
 * loop: sae_total_variance and the FVU's denominator (metrics.c). */
double sae__sum_squared_deviations(const float *x, size_t n, size_t d, double *mean);

/* ---- GEMM backends (gemm.c) ------------------------------------------------
 * Every dense matrix product goes through a context of one backend: CBLAS, or
 * oneDNN when the library was built with it (SAE_HAVE_ONEDNN). A context is
 * used by one thread at a time. */

typedef struct sae_gemm_ctx sae_gemm_ctx;

bool sae__gemm_available(int backend);   /* built in (AUTO and CBLAS always) */
int sae__gemm_resolve(int backend);      /* AUTO: oneDNN when built in, else CBLAS */
const char *sae__gemm_name(int backend); /* "auto", "cblas", "onednn" */

/* A context for backend (AUTO resolves as above). SAE_E_INVALID_ARG if the
 * backend is not built in, SAE_E_NOMEM; *out is NULL on error. */
int sae__gemm_create(sae_gemm_ctx **out, int backend);
void sae__gemm_free(sae_gemm_ctx *g);            /* NULL is fine */
int sae__gemm_backend(const sae_gemm_ctx *g);    /* what it runs; CBLAS for NULL */

/* C (m x n, row stride ldc) = alpha op(A) op(B) + beta C, row-major float32;
 * op(A) is m x k (A stored k x m when trans_a), op(B) k x n (B stored n x k
 * when trans_b). g NULL: CBLAS. Never fails: a product oneDNN cannot make runs
 * on CBLAS. */
void sae__gemm_f32(sae_gemm_ctx *g, bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                   float alpha, const float *a, size_t lda, const float *b, size_t ldb, float beta,
                   float *c, size_t ldc);

/* The same with bfloat16 A and B: float32 products, float32 accumulation and C.
 * Natively on oneDNN; otherwise the inputs are widened to float32 in panels
 * (the same products) for SGEMM, which may fail with SAE_E_NOMEM. */
int sae__gemm_bf16(sae_gemm_ctx *g, bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                   float alpha, const uint16_t *a, size_t lda, const uint16_t *b, size_t ldb,
                   float beta, float *c, size_t ldc);

/* Whether sae__gemm_bf16 runs natively (faster than float32) on g. */
bool sae__gemm_bf16_native(sae_gemm_ctx *g);

/* Products over a pool's threads (gemm.c): a team holds one context per
 * thread. On oneDNN each thread computes its share of rows of C serially (no
 * OpenMP team, whose spinning workers would take the step's cores); on CBLAS
 * the calling thread runs the product on the BLAS's own threads. The pool
 * must have at most the team's threads. */
typedef struct sae_gemm_team sae_gemm_team;

int sae__gemm_team_create(sae_gemm_team **out, int backend, int n_threads);
void sae__gemm_team_free(sae_gemm_team *t);          /* NULL is fine */
int sae__gemm_team_backend(const sae_gemm_team *t);  /* CBLAS for NULL */
int sae__gemm_team_size(const sae_gemm_team *t);
sae_gemm_ctx *sae__gemm_team_member(sae_gemm_team *t, int tid);

/* Hold the calling thread's OpenMP to one thread while it runs oneDNN products
 * (a no-op for CBLAS); returns what sae__gemm_serial_end restores. A pool
 * worker is held from its first product on, for good (0: nothing to restore). */
int sae__gemm_serial_begin(const sae_gemm_team *t);
void sae__gemm_serial_end(const sae_gemm_team *t, int saved);

void sae__gemm_f32_team(sae_gemm_team *t, sae_pool *pool, bool trans_a, bool trans_b, size_t m,
                        size_t n, size_t k, float alpha, const float *a, size_t lda,
                        const float *b, size_t ldb, float beta, float *c, size_t ldc);
int sae__gemm_bf16_team(sae_gemm_team *t, sae_pool *pool, bool trans_a, bool trans_b, size_t m,
                        size_t n, size_t k, float alpha, const uint16_t *a, size_t lda,
                        const uint16_t *b, size_t ldb, float beta, float *c, size_t ldc);

/* How a caller runs its products: split over its pool by a team (the step),
 * or on one context from the calling thread (read-only calls: OpenMP or BLAS
 * threads; small products on CBLAS). Both NULL, or a NULL use: CBLAS. */
typedef struct sae_gemm_use {
    sae_gemm_team *team;
    sae_gemm_ctx *g;
} sae_gemm_use;

void sae__gemm_use_f32(const sae_gemm_use *u, sae_pool *pool, bool trans_a, bool trans_b, size_t m,
                       size_t n, size_t k, float alpha, const float *a, size_t lda, const float *b,
                       size_t ldb, float beta, float *c, size_t ldc);
/* u must have a team or a context (the widened fallback's scratch). */
int sae__gemm_use_bf16(const sae_gemm_use *u, sae_pool *pool, bool trans_a, bool trans_b, size_t m,
                       size_t n, size_t k, float alpha, const uint16_t *a, size_t lda,
                       const uint16_t *b, size_t ldb, float beta, float *c, size_t ldc);

/* ---- selection on streams (select.c) ------------------------------------------
 * The k largest positive values of a stream that arrives a tile at a time, in
 * a buffer of cap >= k entries: TopK per token (ties at the k-th value kept in
 * index order, the order the values arrive in), AuxK among the dead features,
 * and BatchTopK over the batch (ties in token, then feature order). */

/* The k-th largest (1 <= k <= n) of v[0..n); reorders v. */
float sae__kth_largest(float *v, size_t n, size_t k);

/* One token's stream: indices in increasing order across pushes. */
typedef struct sae_topk_stream {
    uint32_t *idx;   /* cap entries: the candidates' indices, in arrival order */
    float *val;      /* cap entries: their values */
    size_t cap, k, count;
    float bar;       /* a value must beat it to enter (0, then the k-th kept) */
} sae_topk_stream;

void sae__topk_stream_init(sae_topk_stream *s, uint32_t *idx, float *val, size_t cap, size_t k);

/* Offer v[0..w) as indices base .. base + w - 1 (larger than any offered
 * before), where pick[j] (pick may be NULL: all) allows. scratch: cap floats. */
void sae__topk_stream_push(sae_topk_stream *s, const float *v, size_t w, uint32_t base,
                           const uint8_t *pick, float *scratch);

/* The selection: the first count entries of idx/val (in index order) are
 * the k largest positive values offered, ties in index order (all of them
 * if fewer than k); returns count. */
size_t sae__topk_stream_finish(sae_topk_stream *s, float *scratch);

/* The batch's stream: (token, feature, value) in any order. */
typedef struct sae_batch_entry {
    uint32_t tok, feat;
    float val;
} sae_batch_entry;

typedef struct sae_batch_stream {
    sae_batch_entry *e; /* cap entries, in arrival order */
    size_t cap, K, count;
    sae_batch_entry bar; /* with has_bar: an entry must come before it to enter */
    bool has_bar;
} sae_batch_stream;

void sae__batch_stream_init(sae_batch_stream *s, sae_batch_entry *e, size_t cap, size_t K);

/* Refuse values below floor (> 0; 0 or less: no effect) from the start, as
 * if a compaction had set the bar there: the stream then keeps the values
 * at or above floor that can still be selected. Exact only if the batch has
 * at least K such values (the caller checks and passes again without one). */
void sae__batch_stream_floor(sae_batch_stream *s, float floor);

/* Offer token tok's values v[0..w) as features base .. base + w - 1.
 * scratch: cap + 1 entries. */
void sae__batch_stream_push(sae_batch_stream *s, const float *v, size_t w, uint32_t tok,
                            uint32_t base, sae_batch_entry *scratch);

/* Reduce e[0..n) (the union of streams' entries) to the K that come first
 * (larger value, then earlier token, then earlier feature), in their
 * relative order; returns how many remain (min(n, K)) and sets *kth to the
 * smallest value kept (0 if none). scratch: n + 1 entries. */
size_t sae__batch_select(sae_batch_entry *e, size_t n, size_t K, sae_batch_entry *scratch,
                         float *kth);

/* ---- bfloat16 (bf16.c) ------------------------------------------------------
 * float32 -> bf16 rounds to nearest even, keeps NaNs (quiet), turns subnormals
 * into signed zeros: VCVTNEPS2BF16's results, which the AVX512_BF16 kernel
 * uses and the portable one reproduces. bf16 -> float32 is exact. */
uint16_t sae__bf16_round(float value);
void sae__bf16_from_f32(uint16_t *dst, const float *src, size_t count);
void sae__bf16_to_f32(float *dst, const uint16_t *src, size_t count);
bool sae__bf16_native(void); /* the AVX512_BF16 kernel runs */

/* ---- threads (threads.c) --------------------------------------------------- */

/* A pool of threads that run one task at a time (see threads.c for why not
 * OpenMP). Owned by an optimizer; NULL means "the calling thread alone". */
typedef void (*sae_task_fn)(void *ctx, int tid, int n_threads);

#define SAE_MAX_THREADS 1024

/* n_threads >= 1 (the caller is thread 0). SAE_E_NOMEM if memory or a thread
 * cannot be had; nothing is left running then. */
int sae__pool_create(sae_pool **out, int n_threads);
void sae__pool_free(sae_pool *p);
int sae__pool_threads(const sae_pool *p); /* 1 for NULL */
/* Whether the calling thread is a worker of some pool (the library's own
 * thread, never the caller's): per-thread settings made there need no undoing. */
bool sae__pool_worker(void);

/* fn(ctx, tid, n) on every thread tid of the pool, the caller as tid 0;
 * returns when all have finished. */
void sae__pool_run(sae_pool *p, sae_task_fn fn, void *ctx);

/* Thread tid's contiguous share [*begin, *end) of n items. */
static inline void sae__share(size_t n, int tid, int n_threads, size_t *begin, size_t *end)
{
    *begin = n * (size_t)tid / (size_t)n_threads;
    *end = n * (size_t)(tid + 1) / (size_t)n_threads;
}

/* fn(ctx, begin, end, tid) over each thread's share of [0, n). */
typedef void (*sae_range_fn)(void *ctx, size_t begin, size_t end, int tid);
void sae__parallel_for(sae_pool *p, size_t n, sae_range_fn fn, void *ctx);

/* The thread count a step uses: requested if > 0, else one per online core. */
int sae__resolve_threads(int requested);

/* ---- the forward pass (forward.c) ---------------------------------------------
 * One encoder and one decoder for inference and training; see forward.c. */

/* Unnormalised loss sums over tokens, in double. */
typedef struct sae_loss_sums {
    double l2;     /* sum_t sum_j (x_hat_tj - x_tj)^2 (y_hat - y for transcoders) */
    double l1;     /* sum_t sum_i f_ti * norms[i] */
    double active; /* sum_t #{i : f_ti > 0} */
    double gate;   /* Gated: sum_t sum_i ReLU(pi_gate)_ti * norms[i], the sparsity term */
    double extra;  /* Gated: the auxiliary reconstruction's squared error; Matryoshka:
                      the inner levels' squared errors (the full width's is l2) */
} sae_loss_sums;

/* Per-token averages of the sums, and the architecture's loss: l2 + lambda * l1
 * (ReLU), l2 + lambda * l0 (JumpReLU), l2 (TopK, BatchTopK), l2 + lambda * gate
 * + extra (Gated), l2 + extra (Matryoshka), plus `extra` (AuxK's weighted
 * term, or 0). */
void sae__losses_from_sums(const sae_loss_sums *sums, size_t n_tokens, int arch, double lambda,
                           double extra, sae_losses *out);

/* SAE_E_NONFINITE (fn's detail) unless every loss of *l is finite. */
int sae__check_losses(const char *fn, const sae_losses *l);

/* norms[i] = ||w_dec[i,:]||_2 for the d_sae rows (accumulated in double),
 * on the pool's threads (NULL: the caller's). */
void sae__decoder_row_norms(const sae_model *m, float *norms, sae_pool *pool);

/* One row's norm as sae__decoder_row_norms computes it (the same bits). */
float sae__row_norm(const float *row, size_t d);

/* theta[i] = exp(t_i), JumpReLU's thresholds from its log thresholds
 * (nothing for other architectures). */
void sae__thresholds(const sae_model *m, float *theta);

/* How pre-activations become features: the model's architecture, and what
 * training adds (JumpReLU's band, BatchTopK's batch selection, AuxK). */
typedef struct sae_activation {
    int arch;
    size_t d_sae, k;
    const float *b_enc;      /* d_sae, added to the GEMM's output */
    const float *norms;      /* d_sae decoder row norms, for the L1 sum */
    const float *theta;      /* JumpReLU: d_sae thresholds */
    const float *mag_scale;  /* Gated: d_sae scales exp(r_mag) of the magnitude path */
    const float *b_mag;      /* Gated: d_sae, the magnitude path's bias */
    float batch_threshold;   /* BatchTopK, Matryoshka at inference */
    float bandwidth;         /* JumpReLU in training: eps of the band; 0: no band */
    bool training;           /* BatchTopK: leave the selection to sae__batch_topk */
    const uint8_t *dead;     /* AuxK: dead features; NULL: no AuxK picks */
    size_t k_aux;
} sae_activation;

/* The model's activation at inference (training sets the last four fields).
 * theta: JumpReLU's thresholds; mag_scale: Gated's exp(r_mag) (see
 * sae__thresholds and sae__mag_scales; NULL for other architectures). */
void sae__activation_init(sae_activation *act, const sae_model *m, const float *norms,
                          const float *theta, const float *mag_scale);

/* scale[i] = exp(r_mag_i), Gated's magnitude scales (nothing for others). */
void sae__mag_scales(const sae_model *m, float *scale);

/* TopK's selection of the k largest positive values of a row, visited in
 * index order: every value above kth is kept, then those equal to kth while
 * ties lasts (kth = 0 and ties = 0 when at most k values are positive: every
 * positive value is kept). Used by TopK, AuxK's picks, BatchTopK and the
 * sparse codes' cap. */
typedef struct sae_topk_cut {
    float kth;
    size_t ties;
} sae_topk_cut;

/* The cut of the k >= 1 largest positive values of f[0..d). scratch: d floats. */
sae_topk_cut sae__topk_cut(const float *f, size_t d, size_t k, float *scratch);

/* Whether the cut keeps v (the next value in index order); takes a tie if v
 * is one. */
static inline bool sae__topk_keep(float v, sae_topk_cut *cut)
{
    if (!(v > 0.0f))
        return false;
    if (v > cut->kth)
        return true;
    if (v == cut->kth && cut->ties > 0) {
        cut->ties--;
        return true;
    }
    return false;
}

/* One token's AuxK picks. */
typedef struct sae_aux_row {
    uint32_t *feat;          /* room for k_aux picks */
    float *fval;
    size_t count;
} sae_aux_row;

/* AuxK's picks of a run of tokens: token t's at feat/fval + t * cap. */
typedef struct sae_aux_picks {
    uint32_t *feat;
    float *fval;
    size_t *count;
    size_t cap;
} sae_aux_picks;

/* Where the encoder puts a block's results: rows of the block for xc, f and
 * the flags, one entry per token of the block for the others. Every field
 * but xc and f may be NULL / zero (not wanted). */
typedef struct sae_encoded {
    float *xc;            /* rows x d_in: x - b_dec (transcoders: x itself) */
    float *f;             /* rows x d_sae: pre-activations, then features */
    float *gate;          /* rows x d_sae: Gated, ReLU(pi_gate) (may be NULL) */
    uint16_t *mask;       /* rows x mask_chunks: bit i%16 of chunk i/16 set if f_ti > 0 */
    uint16_t *band;       /* rows x mask_chunks: JumpReLU's |pre - theta| < eps/2;
                             Gated's open gates, pi_gate > 0 */
    size_t mask_chunks;   /* ceil(d_sae / 16) */
    double *l1;           /* rows: sum_i f_ti r_i */
    double *gate_l1;      /* rows: Gated, sum_i ReLU(pi_gate)_ti r_i (may be NULL) */
    size_t *active;       /* rows: #{i : f_ti > 0} */
    size_t *pairs;        /* rows: the sparse path's pairs (active, plus JumpReLU's band) */
    sae_aux_picks aux;    /* with act->dead: AuxK's picks */
    sae_loss_sums *sums;  /* += the block's L1 sums and active counts, in token
                             order (the activation then runs on one thread) */
    const sae_gemm_use *gemm; /* the encoder's product (NULL: CBLAS) */
    uint16_t *xc16;       /* with w_enc16, rows x d_in: bf16(xc), the product's input */
    const uint16_t *w_enc16; /* d_sae x d_in: bf16(W_enc), or NULL: a float32 product */
} sae_encoded;

/* The encoder, for a block of `rows` tokens x (rows x d_in floats):
 * out->xc = x - b_dec (an autoencoder) or x (a transcoder, whose b_dec lives
 * in the output's space), out->f = act(xc W_enc + b_enc) and the per-token
 * outputs out asks for; *pairs (may be NULL) = the sum of the pairs. The
 * loops run on pool (NULL: the calling thread); scratch: pool threads x d_sae
 * floats (TopK's selection). SAE_E_NONFINITE if x holds NaN or Inf (found
 * while centring: the outputs are then partly written). */
int sae__encode_block(const sae_model *m, const sae_activation *act, sae_pool *pool,
                      float *scratch, const float *x, size_t rows, const sae_encoded *out,
                      size_t *pairs);

/* xc = x - b_dec for rows tokens (x, xc: rows x d_in), and its bf16 rounding
 * when xc16 is not NULL. SAE_E_NONFINITE if x holds NaN or Inf. */
int sae__center(const sae_model *m, sae_pool *pool, const float *x, size_t rows, float *xc,
                uint16_t *xc16);

/* The decoder: x_hat = f W_dec + b_dec for rows tokens (f: rows x d_sae,
 * x_hat: rows x d_out), its product through gemm (NULL: CBLAS) on pool. */
void sae__forward_decode(const sae_model *m, const sae_gemm_use *gemm, sae_pool *pool,
                         const float *f, size_t rows, float *x_hat);

/* The decoder over the first `width` features only: x_hat = b_dec +
 * sum_{i < width} f_i W_dec[i,:] (Matryoshka's levels). */
void sae__forward_decode_prefix(const sae_model *m, const float *f, size_t rows, size_t width,
                                float *x_hat);

/* A skip transcoder's skip term: y += x W_skip^T for rows tokens (x: rows x
 * d_in, y: rows x d_out); nothing for other models. */
void sae__forward_skip(const sae_model *m, const float *x, size_t rows, float *y);

/* The same onto another base row (d_out floats; NULL: zeros): x_hat = f W_dec
 * + base. A feature shard decodes its part of x_hat so. */
void sae__forward_decode_onto(const sae_model *m, const sae_gemm_use *gemm, sae_pool *pool,
                              const float *f, size_t rows, const float *base, float *x_hat);

/* BatchTopK's training selection: keep the rows * k largest values of the
 * ReLU'd block f (rows x d) over all rows, zero the rest, and rewrite out's
 * l1, active, pairs and mask. ties: rows counters of scratch. radix_hist:
 * pool threads x 65536 counters. *min_kept = the smallest value kept. With
 * par (a distributed step), the selection spans every rank's batch (a
 * data-parallel step's global batch of n k values) or features; the ranks
 * exchange (SAE_E_COMM, or another rank's failure, is returned). */
int sae__batch_topk(float *f, size_t rows, size_t d, size_t k, const float *norms,
                    const sae_encoded *out, size_t *ties, uint64_t *radix_hist, sae_pool *pool,
                    sae_par_step *par, float *min_kept);

/* The forward pass for read-only callers (sae_encode, sae_loss, sae_fvu,
 * resampling, metrics), on the calling thread, with per-call scratch (so
 * such calls on one model may run concurrently). Usage:
 *
 *     sae_forward fw;
 *     if (sae__forward_init(&fw, m, sae__block_size(n), SAE_FORWARD_F) != SAE_OK) ...
 *     for (size_t t0 = 0; t0 < n; t0 += fw.block) {
 *         size_t rows = sae__block_rows(n, t0, fw.block);
 *         sae__forward_encode(&fw, x + t0 * d_in, rows, fw.f, NULL);
 *         ...
 *     }
 *     sae__forward_free(&fw);
 */
typedef struct sae_forward {
    const sae_model *m;
    sae_activation act;
    size_t block;    /* tokens one sae__forward_encode may take */
    float *norms;    /* d_sae decoder row norms */
    float *theta;    /* d_sae JumpReLU thresholds (NULL otherwise) */
    float *mag_scale; /* d_sae Gated magnitude scales (NULL otherwise) */
    float *scratch;  /* d_sae for TopK's selection */
    float *xc;       /* block x d_in */
    float *f;        /* block x d_sae, with SAE_FORWARD_F (else NULL) */
    float *gate;     /* block x d_sae, Gated with SAE_FORWARD_F: ReLU(pi_gate) (else NULL) */
    float *x_hat;    /* block x d_out, with SAE_FORWARD_X_HAT (else NULL) */
    sae_gemm_ctx *ctx;   /* the products' context (SAE_GEMM_AUTO) */
    sae_gemm_use gemm;
} sae_forward;

enum { SAE_FORWARD_F = 1, SAE_FORWARD_X_HAT = 2 };

/* Allocate the scratch for blocks of up to `block` tokens (block x d_sae and
 * block x d_in must not overflow: sae__block_size(n) is always fine), and the
 * buffers f and x_hat asked for. SAE_E_NOMEM leaves nothing allocated. */
int sae__forward_init(sae_forward *fw, const sae_model *m, size_t block, unsigned buffers);
void sae__forward_free(sae_forward *fw);

/* f = act((x - b_dec) W_enc + b_enc) for rows <= fw->block tokens (x: rows x
 * d_in, f: rows x d_sae), the model's architecture at inference; adds the L1
 * sums and active counts (Gated: and the gate's sparsity term, with the gate's
 * values in fw->gate) to *sums if it is not NULL. SAE_E_NONFINITE if x holds
 * NaN or Inf. */
int sae__forward_encode(sae_forward *fw, const float *x, size_t rows, float *f,
                        sae_loss_sums *sums);

/* SAE_E_NONFINITE (fn's detail naming the tokens) unless the features f of
 * rows tokens from token t0 (rows x d_sae) are finite. */
int sae__check_features(const char *fn, const float *f, size_t rows, size_t d_sae, size_t t0);

/* SAE_OK if every feature of x (n_tokens x d_in, finite) is finite, which a
 * model with huge weights or inputs can break: a bound from the largest
 * parameter proves it cheaply for ordinary data; otherwise x is encoded once
 * to look (into fw->f, or a block of scratch). Else SAE_E_NONFINITE with
 * fn's detail, or SAE_E_NOMEM. Call it before writing any output. */
int sae__forward_check(sae_forward *fw, const char *fn, const float *x, size_t n_tokens);

/* ---- the step's workspace (workspace.c) --------------------------------------- */

/* Column tiles of the sparse path, in floats: the decoder gathers rows of a
 * d_sae x SAE_DEC_TILE panel of W_dec (1.3 MB at d_sae = 10000), the feature
 * phase rows of a tokens x SAE_FEAT_TILE panel (1 MB at 4096 tokens). */
#define SAE_DEC_TILE 32
#define SAE_FEAT_TILE 64

/* Scratch for one step, owned by the optimizer. Buffers are allocated on the
 * first step and grown only when a larger (or, for the sparse buffers, denser)
 * batch arrives; never shrunk. Sizes below are in elements. Each buffer holds
 * one thing; where a buffer holds successive stages of the same data (f), the
 * code that moves it on names the new stage. */
typedef struct sae_workspace {
    size_t d_in, d_sae;
    size_t d_out;         /* the output's width (d_in for autoencoders) */

    /* per feature (d_sae), allocated once */
    float *norms;         /* decoder row norms ||W_dec[i,:]|| */
    const sae_model *norms_model; /* the model and version whose norms they are */
    uint64_t norms_version;       /* (the Adam pass writes them: no step reads
                                     W_dec for them again) */
    double *f_sum;        /* sum over the batch of f_ti */
    double *g_b_enc;      /* dL/db_enc, accumulated in double */
    double *row_sumsq;    /* squared norm of feature i's gradient rows */
    uint64_t *last_fired; /* 1 + index of the last token where f_ti > 0; 0: none */
    float *norm_coeff;    /* c_i: the L1 term's gradient through r_i is c_i W_dec[i,:] */
    double *g_b_dec;      /* d_out: dL/db_dec, accumulated in double */
    double *aux_mean;     /* d_out: AuxK, the mean of the residuals e_t */

    float *theta;         /* d_sae: JumpReLU thresholds exp(t_i) */
    double *theta_grad;   /* d_sae: JumpReLU dL/dtheta_i */
    uint8_t *dead;        /* d_sae: AuxK's dead features (nonzero) */
    float *zeros;         /* d_out zeros: AuxK decodes without b_dec */
    float *mag_scale;     /* d_sae: Gated, exp(r_mag) */
    double *gate_sum;     /* d_sae: Gated, sum over the batch of ReLU(pi_gate)_ti */
    double *g_b_mag;      /* d_sae: Gated, dL/db_mag */
    double *g_r_mag;      /* d_sae: Gated, dL/dr_mag */

    /* per token of the batch; with AuxK (and for Gated) the token arrays have
     * 2 n rows: rows n + t hold token t's auxiliary reconstruction (a second
     * "token") */
    size_t tokens_cap;    /* tokens the per-token arrays hold */
    size_t rows_cap;      /* rows the doubled arrays (dxh, l2_tok, row_ptr) hold */
    float *xc;            /* tokens_cap x d_in: x - b_dec */
    float *dxh;           /* rows_cap x d_out: x_hat - x, then dL/dx_hat (transcoders:
                             y_hat and y) */
    double *l1_tok;       /* tokens_cap: sum_i f_ti r_i */
    double *gate_tok;     /* tokens_cap: Gated, sum_i ReLU(pi_gate)_ti r_i */
    double *l2_tok;       /* rows_cap: sum_j (x_hat_tj - x_tj)^2 */
    size_t *active_tok;   /* tokens_cap: #{i : f_ti > 0} */
    size_t *ties;         /* tokens_cap: BatchTopK, each token's ties at the cut */
    size_t *row_ptr;      /* rows_cap + 1: CSR row starts (the encoder writes the
                             pair count of token t at row_ptr[t + 1]; a prefix
                             sum turns the counts into the starts) */
    size_t aux_tokens;    /* tokens the AuxK buffers hold */
    size_t aux_cap;       /* k_aux the AuxK buffers hold per token */
    uint32_t *aux_feat;   /* aux_tokens x aux_cap: AuxK's picks per token */
    float *aux_fval;      /* aux_tokens x aux_cap */
    size_t *aux_count;    /* aux_tokens */

    /* per block of at most SAE_BLOCK_TOKENS tokens */
    size_t block_cap;
    float *f;             /* block_cap x d_sae: pre-activations, f, then (dense
                             path) dL/df and dL/dpre */
    float *gate;          /* block_cap x d_sae: Gated, ReLU(pi_gate), then dL/dpi_gate
                             (NULL for other architectures) */
    uint16_t *mask;       /* block_cap x mask_chunks: bit i%16 of chunk i/16 of row t is
                             set if f_ti > 0 */
    uint16_t *band;       /* block_cap x mask_chunks: JumpReLU, |pre - theta| < eps/2;
                             Gated, the open gates */
    size_t mask_chunks;   /* 16-bit chunks per row: ceil(d_sae / 16) */
    float *ones;          /* block_cap: 1.0f, for column sums by SGEMV */
    float *col_sum;       /* d_sae: one block's column sums */

    /* the sparse path: active (token, feature) pairs, token-major (CSR) and
     * feature-major (CSC) */
    size_t nnz_cap;
    uint32_t *feat;       /* nnz_cap: feature of each pair, token-major */
    float *fval;          /* nnz_cap: f of each pair, token-major */
    uint32_t *tok;        /* nnz_cap: token of each pair, feature-major */
    float *cfval;         /* nnz_cap: f, feature-major */
    float *cgval;         /* nnz_cap: dL/dpre, feature-major */
    size_t *col_ptr;      /* d_sae + 1: CSC column starts */

    /* per thread: transpose counts and column panels, packed contiguously so
     * they stay in L2 (rows of d_in floats have a stride that maps onto few
     * cache sets) */
    sae_pool *pool;       /* the step's threads (thread_cap of them) */
    size_t thread_cap;    /* threads the buffers below hold */
    size_t panel_tokens;  /* tokens each t_panel holds */
    size_t *hist;         /* thread_cap x d_sae: per-thread counts for the transpose */
    float *w_panel;       /* thread_cap x d_sae x SAE_DEC_TILE: column tiles of W_dec */
    float *t_panel;       /* thread_cap x panel_tokens x SAE_FEAT_TILE: tiles of dL/dx_hat or xc */
    float *scratch;       /* thread_cap x d_sae: TopK selection */
    uint64_t *radix_hist; /* thread_cap x 65536: BatchTopK's radix select (or NULL) */

    /* the step's matrix products (gemm.c): a team of one context per pool
     * thread, of the backend SAE_OPT_GEMM resolves to */
    sae_gemm_team *team;
    sae_gemm_use gemm;    /* {team, NULL} */
    struct sae_fused_encoder *fused; /* the sparse path's encoder, for the team's
                                        backend and thread count */
    /* SAE_OPT_PRECISION bf16: the encoder product's inputs */
    bool bf16;            /* this step's encoder product is bf16 (w_enc16 holds
                             the model's W_enc) */
    uint16_t *xc16;       /* tokens_cap x d_in: bf16(xc) */
    uint16_t *w_enc16;    /* d_sae x d_in: bf16(W_enc), rewritten by each Adam pass */
    const sae_model *w16_model; /* the model and version whose W_enc it holds */
    uint64_t w16_version;
    size_t xc16_tokens;   /* tokens xc16 holds */
} sae_workspace;

/* What a step needs its workspace to hold. */
typedef struct sae_step_shape {
    size_t d_in, d_sae;
    size_t n_tokens;
    int n_threads;
    int arch;
    size_t k_aux;         /* AuxK picks per token; 0: no AuxK */
    size_t d_out;         /* the output's width; 0: d_in (an autoencoder) */
    int gemm;             /* SAE_OPT_GEMM: the backend of the products' team */
    bool bf16;            /* SAE_OPT_PRECISION bf16: the encoder's bf16 inputs */
    bool batch_fused;     /* BatchTopK selects in the fused encoder (one process,
                             sae__fused_covers): blocks of SAE_BLOCK_TOKENS
                             suffice, not one block of the whole batch */
    size_t levels;        /* Matryoshka: its level count (dL/dx_hat rows per level) */
} sae_step_shape;

/* Make the workspace hold a step of this shape: every buffer except the
 * sparse pair arrays, which grow inside the step as density requires; the
 * products' team (one context per pool thread, of the backend shape->gemm
 * resolves to) and, with bf16, the bf16 copies of xc and W_enc.
 * On SAE_E_NOMEM the workspace is as it was (a first reservation frees all). */
int sae__workspace_reserve(sae_workspace *ws, const sae_step_shape *shape);
void sae__workspace_free(sae_workspace *ws);

/* Make the block buffers (f, mask, band: n_tokens x d_sae) and the radix
 * histograms hold a BatchTopK batch of n_tokens as one block, for a step
 * that takes the block loop after all (SAE_E_NOMEM: the workspace is as it
 * was). */
int sae__workspace_reserve_batch(sae_workspace *ws, size_t n_tokens);

/* Grow the pair arrays to hold nnz pairs, keeping the first `keep` pairs of
 * feat and fval (stored earlier in the step). */
int sae__workspace_reserve_pairs(sae_workspace *ws, size_t nnz, size_t keep);

/* ---- loss and gradients (backward.c) -------------------------------------------- */

/* Density (active pairs / all pairs) of the first block at or below which
 * SAE_KERNEL_AUTO takes the sparse path. Measured at d_in 768, d_sae 10000 on
 * 2 cores, sparse stays faster than dense up to ~22% at 4096 tokens and at
 * least 15% at 256 and 1024 (bench/RESULTS.md). */
#define SAE_SPARSE_MAX_DENSITY 0.15

/* The loss a step trains, by architecture (see the header's "Architectures"). */
typedef struct sae_step_config {
    double lambda;        /* L1 (ReLU) or L0 (JumpReLU) coefficient */
    int kernel;           /* SAE_KERNEL_* */
    sae_pool *pool;       /* the step's threads */
    double auxk_coeff;    /* TopK, BatchTopK: AuxK weight; 0: off */
    size_t k_aux;
    const uint8_t *dead;  /* d_sae flags for AuxK, NULL when it is off */
    double bandwidth;     /* JumpReLU's eps */
    size_t loss_tokens;   /* the tokens the loss averages over: the global batch
                             of a data-parallel step (0: n_tokens) */
    sae_par_step *par;    /* a distributed step's exchanges (parallel.h), or NULL */
} sae_step_config;

typedef struct sae_backward_result {
    sae_loss_sums sums;
    double aux_loss;     /* AuxK, normalised (0 when off) */
    double grad_sumsq;   /* squared L2 norm of the whole gradient (NaN/Inf if not finite) */
    float batch_min_kept; /* BatchTopK: smallest value kept (0 if none) */
    bool used_sparse;    /* which path ran */
} sae_backward_result;

/* Forward pass and exact gradients (estimators for JumpReLU's thresholds) of
 * the architecture's loss over the batch x (n_tokens x d_in) against the
 * target y (n_tokens x d_out; NULL: x, an autoencoder's). grad: a parameter-layout block,
 * every view overwritten (padding untouched). Fills *res and ws->last_fired.
 * The workspace must be reserved for this shape. Errors: SAE_E_NONFINITE if x
 * holds NaN/Inf, SAE_E_NOMEM if the sparse buffers cannot grow. */
int sae__forward_backward(const sae_model *m, const sae_step_config *cfg, const float *x,
                          const float *y, size_t n_tokens, sae_workspace *ws, float *grad,
                          sae_backward_result *res);

/* ---- the sparse path (sparse.c), called by sae__forward_backward ------------- */

/* Compress the block f (rows x d_sae, tokens t0..) into the CSR arrays from
 * its flags: mask, or with_band mask | band (JumpReLU: f is 0 for pairs in
 * the band that did not fire). ws->row_ptr[t0 .. t0 + rows] must hold the
 * prefix sums already. */
void sae__sparse_compress_block(sae_workspace *ws, size_t t0, size_t rows, bool with_band,
                                sae_pool *pool);

/* Decode tokens [t0, t0 + count) from the CSR: out row t of ws->dxh (d_out
 * wide) = scale * (base + sum_k f_k W_dec[i_k,:] - target row t - t0), and
 * ws->l2_tok[t] = the squared norm before scaling. base NULL: each out row
 * holds its own base already (a skip transcoder's b_dec + x_t W_skip^T).
 * target rows may be the output rows themselves; a NULL target is zeros. */
void sae__sparse_token_phase(const sae_model *m, const float *target, size_t t0, size_t count,
                             const float *base, float scale, sae_workspace *ws, sae_pool *pool);

/* Gradient rows of W_dec and W_enc (and JumpReLU's thresholds), dL/db_enc and
 * feature statistics, from the CSC (built here from the CSR over n_rows "tokens":
 * n_tokens real ones, then AuxK's rows). */
void sae__sparse_feature_phase(const sae_model *m, const sae_step_config *cfg, size_t n_tokens,
                               size_t n_rows, sae_workspace *ws, float *grad);

/* ---- Matryoshka's nested losses on the sparse path (matryoshka.c) -----------------
 * ws->dxh and ws->l2_tok hold (n_levels + 1) blocks of n_tokens rows: block 0
 * the full width's dL/dx_hat (then the sum over all levels), block 1 AuxK's
 * rows, block l + 1 level l - 1's (then the sum over levels >= l). */

/* The rows of dxh a Matryoshka step uses: (n_levels + 1) n_tokens; 0 for
 * other architectures. */
size_t sae__matryoshka_rows(const sae_model *m, size_t n_tokens);

/* The block of n_tokens rows of dxh whose rows feature i's pairs read
 * dL/dx_hat from (the sum over the levels that contain i): 0 for the first
 * band and for every other architecture. i is m's own index (a shard's:
 * feature shard_begin + i of the whole model). */
size_t sae__matryoshka_block(const sae_model *m, size_t feature);

/* SAE_E_INVALID_ARG (detail naming fn) for a Matryoshka batch the sparse
 * path cannot index (more than UINT32_MAX / 2 tokens); SAE_OK otherwise. */
int sae__matryoshka_check_batch(const char *fn, const sae_model *m, size_t n_tokens);

/* The token phase over the CSR (pairs in ascending feature order per token):
 * each level's reconstruction as a prefix sum of the token's pairs, then its
 * dL/dx_hat = scale * (x_hat_l - target) and squared error into its block. */
void sae__matryoshka_decode(const sae_model *m, const float *target, size_t n_tokens,
                            float scale, sae_workspace *ws, sae_pool *pool);

/* After AuxK has read block 0: each level's block becomes the sum over the
 * levels at or above it (block 0: all of them). */
void sae__matryoshka_suffix_sums(const sae_model *m, size_t n_tokens, sae_workspace *ws,
                                 sae_pool *pool);

/* A hash of a Matryoshka model's level widths (0 for other architectures),
 * for distributed ranks to check that they train the same model. */
uint64_t sae__matryoshka_widths_hash(const sae_model *m);

/* The inner levels' squared errors summed over the batch (sums.extra). */
double sae__matryoshka_inner_l2(const sae_model *m, size_t n_tokens, const sae_workspace *ws);

/* ---- options (options.c) --------------------------------------------------- */

/* The values of the SAE_OPT_* options, typed (the ABI passes doubles). */
typedef struct sae_options {
    double lr, beta1, beta2, eps;
    double l1_coeff;            /* lambda */
    double grad_clip;           /* 0: off */
    int threads;                /* 0: one per online core */
    int kernel;                 /* SAE_KERNEL_* */
    uint64_t total_steps;       /* 0: unknown (schedule.c) */
    double l1_warmup_fraction;
    uint64_t lr_warmup_steps;
    double lr_decay_fraction;
    int lr_schedule;            /* SAE_LR_* */
    double auxk_coeff;          /* 0: AuxK off */
    uint64_t auxk_k;            /* 0: d_in / 2 */
    uint64_t dead_window;       /* tokens */
    double jumprelu_bandwidth;
    double threshold_beta;
    int gemm;                   /* SAE_GEMM_* */
    int precision;              /* SAE_PRECISION_* */
} sae_options;

enum sae_option_store { SAE_OPTION_STORE_REAL, SAE_OPTION_STORE_INT, SAE_OPTION_STORE_U64 };

/* One row of the option table. */
typedef struct sae_option_info {
    int id;                     /* SAE_OPT_* */
    const char *name;           /* sae_option_name */
    enum sae_option_store store;
    size_t offset;              /* of the field in sae_options */
    double def, lower, upper;   /* default and bounds (sae_option_bounds) */
    unsigned flags;             /* SAE_OPTION_* */
} sae_option_info;

size_t sae__option_count(void);
const sae_option_info *sae__option_at(size_t i);  /* in increasing number; NULL past the end */
const sae_option_info *sae__option_find(int option); /* NULL if unknown */
double sae__option_read(const sae_options *opt, const sae_option_info *info);
void sae__options_init(sae_options *opt);          /* every default */

/* Store value, which sae__option_check allowed, in its typed field. */
void sae__option_write(sae_options *opt, const sae_option_info *info, double value);

/* Whether value is allowed for the option: SAE_OK, SAE_E_NONFINITE or
 * SAE_E_INVALID_ARG (the detail names fn, the option and its range). */
int sae__option_check(const char *fn, const sae_option_info *info, double value);

/* ---- the sparse path's fused encoder (encode_fused.c) ----------------------------
 * xc W_enc + b_enc made a tile at a time and turned into the step's pairs
 * while in cache (see encode_fused.c). Tokens per sub-block: */
#define SAE_FUSED_TILE_TOKENS 512

/* What sae__encode_fused returns besides SAE_OK and errors (positive, so
 * they never reach a caller of the library). */
enum {
    SAE_FUSED_TOO_DENSE = 1, /* a sub-block was denser than max_density */
    SAE_FUSED_OUT_FULL = 2   /* out->cap < out->pairs: grow and call again */
};

typedef struct sae_fused_encoder sae_fused_encoder;

/* Whether the fused encoder covers m: ReLU, TopK, BatchTopK and JumpReLU,
 * autoencoders and transcoders alike (a transcoder's encoder is the same
 * product of its uncentred input x). Gated SAEs and Matryoshka take the
 * block-by-block encoder. */
static inline bool sae__fused_covers(const sae_model *m)
{
    return m->arch == SAE_ARCH_RELU || m->arch == SAE_ARCH_TOPK ||
           m->arch == SAE_ARCH_BATCHTOPK || m->arch == SAE_ARCH_JUMPRELU;
}

/* Whether SAE_OPT_PRECISION bf16 applies to m's encoder product: the plain
 * autoencoders the fused encoder covers, and Gated SAEs, whose gate and
 * magnitude pre-activations are both the one product xc W_enc (with W_mag =
 * exp(r_mag) W_gate), which the block encoder takes in bf16 as the fused one
 * does (transcoders and Matryoshka train in float32). */
static inline bool sae__bf16_covers(const sae_model *m)
{
    return m->kind == SAE_KIND_AUTOENCODER &&
           (sae__fused_covers(m) || m->arch == SAE_ARCH_GATED);
}

/* Scratch for passes with the pool's threads (at most n_threads) and the
 * tile shapes of a backend. */
int sae__fused_encoder_create(sae_fused_encoder **out, size_t d_sae, int n_threads, int backend);
void sae__fused_encoder_free(sae_fused_encoder *e); /* NULL is fine */

/* BatchTopK: passes made again because the floor taken from the previous
 * pass's K-th value let fewer than K values through (encode_fused.c). */
uint64_t sae__fused_encoder_batch_repasses(const sae_fused_encoder *e);

typedef struct sae_fused_args {
    const sae_activation *act;   /* training: JumpReLU's band, AuxK's dead features */
    size_t d_in, n_tokens;
    const float *xc;             /* n_tokens x d_in: x - b_dec */
    const float *w_enc;          /* d_sae x d_in (W_enc transposed) */
    const uint16_t *xc16, *w_enc16; /* both or neither: bf16 inputs of the GEMM */
    double max_density;          /* ReLU, JumpReLU: pairs per token and feature a
                                    sub-block may reach; >= 1: no limit */
} sae_fused_args;

/* Where the pairs go. row_ptr: n_tokens + 1; feat, fval: cap pairs; l1,
 * active: n_tokens; with act->dead, AuxK's picks (aux_cap per token). */
typedef struct sae_fused_out {
    size_t *row_ptr;
    uint32_t *feat;
    float *fval;
    size_t cap;
    double *l1;
    size_t *active;
    uint32_t *aux_feat;
    float *aux_fval;
    size_t *aux_count, aux_cap;
    size_t pairs;                /* set: the pairs of the pass */
    float batch_min_kept;        /* set for BatchTopK: the smallest value kept */
} sae_fused_out;

/* The pass. The pairs of each token are in feature order: f > 0 for ReLU,
 * the selections of TopK and BatchTopK (ties as sae.h says), and for JumpReLU
 * those above the threshold or within its band (f = 0 for band-only pairs).
 * Returns SAE_OK, SAE_FUSED_TOO_DENSE, SAE_FUSED_OUT_FULL (out->pairs says
 * how many) or SAE_E_NOMEM. */
int sae__encode_fused(sae_fused_encoder *e, const sae_fused_args *args,
                       sae_gemm_team *team, sae_pool *pool, sae_fused_out *out);

/* ---- sparse codes (sparse_codes.c) ---------------------------------------- */

/* Encoding a batch block by block into each token's active (feature, value)
 * pairs: sae_encode_sparse and the feature statistics. The dense scratch is
 * one block of features, bounded whatever n_tokens is. */
typedef struct sae_sparse_encoder {
    sae_forward fw;
    size_t d_sae;
    size_t block;    /* tokens per block */
    size_t cap;      /* pairs kept per token, the largest values; 0: all */
    float *f;        /* block x d_sae: the current block's features (fw.f) */
    float *select;   /* d_sae: the cap's selection scratch (NULL without a cap) */
} sae_sparse_encoder;

/* Scratch for encoding n_tokens (>= 1) tokens of m. SAE_E_NOMEM leaves
 * nothing allocated. */
int sae__sparse_encoder_init(sae_sparse_encoder *e, const sae_model *m, size_t n_tokens,
                             size_t cap);
void sae__sparse_encoder_free(sae_sparse_encoder *e);

/* Encode the next rows (<= e->block) tokens of x (rows x d_in, finite). */
void sae__sparse_encoder_run(sae_sparse_encoder *e, const float *x, size_t rows);

/* Token t of the block just encoded: returns its pair count (after the cap);
 * when feat is not NULL and the count is at most room, writes the pairs to
 * feat/val in ascending feature order. */
size_t sae__sparse_encoder_token(sae_sparse_encoder *e, size_t t, uint32_t *feat, float *val,
                                 size_t room);

/* ---- optimizer (optimizer.c) ---------------------------------------------- */

struct sae_optimizer {
    /* the shape of the models it steps */
    size_t d_in, d_sae;
    sae_layout lay;
    int arch, kind;      /* the architecture and kind of the model it was made for */
    sae_options opt;
    uint64_t steps;
    float *grad;         /* lay.total floats: gradients, parameter layout */
    float *m1;           /* lay.total floats: Adam first moment */
    float *m2;           /* lay.total floats: Adam second moment */
    float m1_absmax;     /* max |m1| after the last update */
    float m2_max;        /* max m2 after the last update */
    uint64_t *since_fired; /* d_sae: training tokens since each feature last fired */
    sae_workspace ws;
    size_t shard_begin, d_sae_total; /* the model's (a shard's: see struct sae_model) */
    sae_par *par;        /* attached communicators (sae_optimizer_set_comm), or NULL */
};

/* ---- training recipe (schedule.c) ---------------------------------------- */

/* The learning rate and L1 coefficient sae_step applies at step t (1-based),
 * from the optimizer's options. SAE_E_INVALID_ARG if t is 0 or the schedule
 * options contradict each other (see sae_optimizer_lr_at). */
int sae__schedule_values(const sae_optimizer *o, uint64_t t, double *lr, double *lambda);

#endif /* LIBSAE_INTERNAL_H */
