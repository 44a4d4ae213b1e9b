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

#endif /* LIBSAE_PARALLEL_H */
