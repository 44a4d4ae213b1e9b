/*
 * Distributed training inside libsae: how the library uses a host's
 * communicator (sae_comm, sae.h "Distributed training"). Not installed.
 *
 * Rules every distributed call follows (the design, issue 12):
 * - Ranks make the same collective calls in the same order. The sequence of
 *   a call is decided only from values every rank knows (options, shapes,
 *   and what earlier exchanges of the call returned).
 * - Every exchange of records (sae__comm_exchange) starts each record with
 *   its rank's status. A rank that fails on its own (NaN in its data, an
 *   allocation) keeps joining the call's exchanges with its status set until
 *   the next exchange, where every rank sees the same first failure and
 *   stops. An allreduce is always followed by an exchange, so a failure
 *   before it is seen right after it.
 * - Replicated values stay bit-identical on every rank whatever the
 *   transport's rounding: small sums are allgathered and added in rank order
 *   on every rank (sae__comm_sum_ordered_*); sums of whole numbers go through
 *   allreduce_f64 (exact in any order below 2^53); large float sums go
 *   through allreduce_f32, then every rank hashes its result, the hashes
 *   travel in the next exchange, and where they differ rank 0's result is
 *   broadcast (sae__comm_same_or_root).
 */
#ifndef LIBSAE_PARALLEL_H
#define LIBSAE_PARALLEL_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

/* The size of the 0.2 struct: the fields this version reads. */
#define SAE_COMM_SIZE_0_2 (offsetof(sae_comm, broadcast) + sizeof(void (*)(void)))

/* Check a host's communicator and copy the fields this version knows into
 * *dst (dst->struct_size becomes sizeof(sae_comm)). SAE_E_INVALID_ARG for a
 * struct_size below SAE_COMM_SIZE_0_2, n_ranks < 1, a rank outside
 * [0, n_ranks) or a NULL function; *dst is then untouched. */
int sae__comm_copy(sae_comm *dst, const sae_comm *src);

/* The transport, failures as SAE_E_COMM. */
int sae__comm_allreduce_f32(const sae_comm *c, float *buf, size_t count);
int sae__comm_allreduce_f64(const sae_comm *c, double *buf, size_t count);
int sae__comm_allgather(const sae_comm *c, const void *send, size_t bytes, void *recv);
int sae__comm_broadcast(const sae_comm *c, void *buf, size_t bytes, int root);

/* One exchange of `bytes`-byte records, each starting with an int32_t
 * status: every rank's record lands in all (n_ranks * bytes, rank r's at
 * r * bytes), and *agreed becomes the status of the lowest rank whose record
 * holds a failure (SAE_OK if none): the same on every rank. Returns SAE_OK
 * or SAE_E_COMM (then *agreed is SAE_E_COMM too). */
int sae__comm_exchange(const sae_comm *c, const void *mine, size_t bytes, void *all,
                       int *agreed);

/* out[k] = sum over ranks r = 0, 1, ... of rank r's mine[k], added in that
 * order on every rank, so every rank gets the same bits. scratch: n_ranks *
 * count elements. mine and out may be the same buffer. */
int sae__comm_sum_ordered_f64(const sae_comm *c, const double *mine, size_t count, double *out,
                              double *scratch);
int sae__comm_sum_ordered_f32(const sae_comm *c, const float *mine, size_t count, float *out,
                              float *scratch);

/* A 64-bit hash of the bit patterns of v[0..count) (a position-weighted sum
 * with odd weights: any single changed value changes it). */
uint64_t sae__hash_f32(const float *v, size_t count);

/* sum_k v[k]^2 in double, and the hash of v, in one pass over v. */
double sae__sumsq_hash_f32(const float *v, size_t count, uint64_t *hash);

/* After an allreduce_f32 of buf (count floats), and an exchange whose
 * records (n_ranks of them, `stride` bytes apart) hold each rank's hash of
 * its buf at byte `offset`: if the hashes are not all equal, every rank takes
 * rank 0's buf (a broadcast), and *replaced says so (the caller recomputes
 * what it derived from buf). The same decision on every rank. */
int sae__comm_same_or_root(const sae_comm *c, float *buf, size_t count, const void *records,
                           size_t stride, size_t offset, bool *replaced);

/* Bytes before the payload of the step's records: the int32_t status, then
 * padding (payloads stay 8-byte aligned). */
#define SAE_RECORD_HEADER 8

/* ---- feature shards (shard.c) ------------------------------------------------ */

/* One token's cut across shards (see shard.c): keep values above kth (all
 * positive ones when kth is 0) and the first `allow` values equal to it. */
typedef struct sae_shard_cut {
    float kth;
    uint32_t allow;
} sae_shard_cut;

/* The record of one block's candidate exchange, and the scratch
 * sae__shard_select needs (the caller checks them for overflow). */
static inline size_t sae__shard_select_record(size_t rows, size_t k)
{
    return SAE_RECORD_HEADER + rows * k * sizeof(float);
}
static inline size_t sae__shard_select_scratch(int n_ranks, size_t rows, size_t k)
{
    return ((size_t)n_ranks + 1) * sae__shard_select_record(rows, k) +
           (size_t)n_ranks * k * sizeof(float);
}

/* TopK / AuxK across feature shards, for a block of rows tokens: cand holds
 * this shard's values kept by its local selection (rows x k floats, each
 * token's in any order, 0-padded); status is this rank's (the exchange
 * carries it: *agreed is the first failure, then cut is not written). Every
 * rank gets cut[t] for each token. Returns SAE_OK or SAE_E_COMM. */
int sae__shard_select(const sae_comm *c, int status, size_t rows, size_t k, const float *cand,
                      sae_shard_cut *cut, void *scratch, int *agreed);

/* Apply a cut to one token's values v[0..count) of this shard, in feature
 * order: zero what the whole model does not keep. Returns how many stay. */
size_t sae__shard_keep(float *v, size_t count, sae_shard_cut cut);

/* ---- the distributed step (parallel.c) ----------------------------------------- */

/* The record of a step's first exchange (sae__par_begin), one per rank.
 * Here rather than in parallel.c for bench/mpi_step.c's simulated peers,
 * which answer it with the other ranks' shards. */
typedef struct header_record {
    int32_t status;
    int32_t arch;
    uint64_t n_tokens, d_in, d_sae_total, shard_begin, shard_end, k, steps;
    uint64_t options_hash; /* every option but the thread count */
    uint64_t x_hash;       /* features: the batch */
    uint64_t d_out, kind;  /* the output's width, the model's kind (SAE_KIND_*) */
    uint64_t n_dead;       /* features: this shard's dead features */
    uint64_t widths_hash;  /* Matryoshka: its level widths (sae__matryoshka_widths_hash) */
    int32_t grid_rank;     /* a 2-D grid: this rank's place on the other axis (its rank */
    int32_t grid_ranks;    /* and n_ranks there); -1 and 0 outside a grid */
} header_record;

/* What an optimizer keeps for distributed training (sae_optimizer_set_comm). */
struct sae_par {
    sae_comm data;           /* struct_size 0: not attached */
    sae_comm features;
    unsigned char *scratch;  /* the step's exchanges, reserved before the first */
    size_t scratch_cap;
#ifdef SAE_TESTING
    bool no_settle;          /* test hook: skip the hash check of allreduces */
#endif
};

/* One step's distributed state (sae_step_config.par). */
struct sae_par_step {
    sae_par *par;
    const sae_comm *data;     /* the data-parallel ranks, or NULL */
    const sae_comm *features; /* the feature shards, or NULL (both: a 2-D grid) */
    size_t n_global;          /* the global batch (data), else the batch */
    size_t token_offset;      /* data: this rank's first token in it */
    size_t n_dead_total;      /* features: dead features over all shards */
    int status;               /* this rank's own failure in the step (sticky) */
};

void sae__par_free(sae_par *p);

/* The step's first exchange, after sae_step's own checks gave `status`:
 * every rank's status, batch, shape, options, shard and (features) the hash
 * of x (and of a transcoder's target y, NULL otherwise); reserves the step's
 * scratch first. Fills *ps. Returns the agreed
 * status (SAE_E_INVALID_ARG when the ranks disagree). */
int sae__par_begin(sae_optimizer *o, const sae_model *m, const float *x, const float *y,
                   size_t n_tokens, size_t k_aux, int status, sae_par_step *ps);

/* After sae__forward_backward (status: its result): combine the gradients
 * and statistics of the ranks into *res, ws->last_fired (global token
 * positions), the maxima Adam's overflow bound reads, and the gradient.
 * Returns the agreed status. */
int sae__par_reduce(sae_par_step *ps, sae_optimizer *o, const sae_model *m, int status,
                    sae_backward_result *res, float *param_absmax, float *m1_absmax,
                    float *m2_max);

/* When Adam's cheap bound fails, each rank dry-runs its update: whether all
 * of them came out finite (the same answer everywhere). */
int sae__par_all_true(sae_par_step *ps, bool mine, bool *all);

/* ---- hooks inside sae__forward_backward (NULL ps: nothing to do) --------- */

/* Feature shards, after each block's encoder: TopK's selection across
 * shards (rewrites the block's f, mask, l1, active and pair counts), and
 * AuxK's picks likewise. */
int sae__par_topk_block(sae_par_step *ps, const sae_model *m, const sae_encoded *out,
                        size_t rows, const float *norms);
int sae__par_aux_block(sae_par_step *ps, const sae_aux_picks *aux, size_t rows, size_t k_aux);

/* Feature shards, with SAE_KERNEL_AUTO: the path the density of all shards'
 * first block picks (the same on every rank). */
int sae__par_sparse_choice(sae_par_step *ps, size_t pairs, size_t rows, size_t d_sae_total,
                           bool *sparse);

/* Feature shards: x_hat rows (rows x d_out floats, this shard's part; b_dec
 * and a skip transcoder's x W_skip^T on rank 0 only) become the sum over
 * shards, the same bits on every rank. */
int sae__par_reconstruct(sae_par_step *ps, float *x_hat, size_t rows, size_t d_out);

/* Feature shards, Matryoshka: the same for its levels' partial
 * reconstructions, in two runs of dxh (count_a floats at a: the full
 * width's; count_b at b: the inner levels'), two allreduces and one hash
 * check (rank 0's both where any rank's hash differs). */
int sae__par_reconstruct_levels(sae_par_step *ps, float *a, size_t count_a, float *b,
                                size_t count_b);

/* Feature shards, Matryoshka (matryoshka.c): every level's reconstruction
 * summed over the shards, then its error, as sae__matryoshka_decode leaves
 * them, the same bits on every rank. Returns the agreed status. */
int sae__matryoshka_decode_shards(const sae_model *m, sae_par_step *ps, const float *target,
                                  size_t n_tokens, float scale, sae_workspace *ws,
                                  sae_pool *pool);

/* Feature shards, sparse path: rows of ws->dxh [t0, t0 + count) hold the
 * summed reconstruction y; make them scale * (y - e) with e = target_scale *
 * target (rounded to float as one process computes e), and ws->l2_tok the
 * squared norm of y - e (rows of d_out floats). */
void sae__par_error_rows(sae_workspace *ws, const float *target, float target_scale, size_t t0,
                         size_t count, size_t d_out, float scale, sae_pool *pool);

/* AuxK's global statistics: its picks, and the residuals' sum of squares
 * and sum (d_in doubles) over the global batch. Data-parallel ranks add
 * theirs; shards have the same already and agree on the picks. */
int sae__par_auxk_sums(sae_par_step *ps, size_t *picks, double *sumsq, double *sum_e,
                       size_t d_in);

/* Feature shards: g_b_dec (d_in floats) -= W_enc dL/db_enc summed over every
 * shard's features (each shard's part added in rank order). */
int sae__par_enc_term(sae_par_step *ps, const sae_model *m, const float *g_b_enc, float *g_b_dec);

/* BatchTopK across ranks: the per-level radix histograms (65536 counts)
 * summed, and each token's share of the ties at the K-th value in the
 * global order (token, then feature; a grid: group, token, then feature). ties: rows counts, in and out;
 * *above_total, *min_positive: this rank's, then everyone's. */
int sae__par_batch_hist(sae_par_step *ps, uint64_t *hist);
int sae__par_batch_ties(sae_par_step *ps, size_t *ties, size_t rows, size_t K, bool have_kth,
                        size_t *above_total, float *min_positive);

/* ---- resampling (sae_resample_dead with communicators) ---------------------- */

/* The first exchange of a resampling: statuses, and the dead features, live
 * ones and their encoder norms' sum of every shard (summed into *n_dead,
 * *n_live, *live_norm_sum; *dead_before: the dead features of the shards
 * before this one); data-parallel ranks check they share the sample. Fills
 * *ps (NULL ->features for data-parallel ranks, which resample alone).
 * Returns the agreed status. */
int sae__par_resample_begin(sae_optimizer *o, const sae_model *m, const float *x,
                            size_t n_tokens, int status, size_t *n_dead, size_t *n_live,
                            double *live_norm_sum, size_t *dead_before, sae_par_step *ps);

/* Feature shards, inference: TopK across shards on dense rows of features
 * (rows x d, each after this shard's own TopK). */
int sae__par_topk_rows(sae_par_step *ps, float *f, size_t rows, size_t d, size_t k);

#endif /* LIBSAE_PARALLEL_H */
