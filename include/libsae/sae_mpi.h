/*
 * libsae-mpi: libsae's communicator over MPI.
 *
 * This header is the reference manual of the companion library libsae-mpi
 * (libsae-mpi.so.0, pkg-config module "sae-mpi", CMake component
 * find_package(sae COMPONENTS mpi) giving the target sae::sae_mpi). libsae
 * itself knows nothing of MPI: it trains across ranks through the sae_comm
 * struct of <libsae/sae.h> ("Distributed training"), and this library fills
 * one in over an MPI communicator:
 *
 *     MPI_Init(&argc, &argv);
 *     sae_comm comm;
 *     if (sae_mpi_comm_create(&comm, MPI_COMM_WORLD) != SAE_OK) MPI_Abort(MPI_COMM_WORLD, 1);
 *     ... hand &comm to libsae (it copies the struct) ...
 *     sae_mpi_comm_free(&comm);                  // before MPI_Finalize
 *     MPI_Finalize();
 *
 * Threads: libsae calls the communicator only from the thread that called
 * into libsae. If that is the thread that initialised MPI, MPI_Init (or
 * MPI_THREAD_FUNNELED) is enough; otherwise initialise MPI with
 * MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE.
 *
 * Every function returns an SAE_* status of <libsae/sae.h>, and a failing
 * call says why in sae_mpi_error_detail (libsae's own calls keep theirs in
 * sae_error_detail). Only names with the prefix sae_mpi_ / SAE_MPI_ are
 * declared here (and those of sae.h and mpi.h, which it includes).
 */
#ifndef SAE_MPI_H_INCLUDED
#define SAE_MPI_H_INCLUDED

#include <mpi.h>

#include "sae.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SAE_MPI_API marks the functions exported by libsae-mpi (SAE_API marks
 * libsae's). Static-library users may define SAE_MPI_STATIC_DEFINE. */
#ifndef SAE_MPI_API
#  if defined(_WIN32) && !defined(SAE_MPI_STATIC_DEFINE)
#    ifdef SAE_MPI_BUILDING_LIBRARY
#      define SAE_MPI_API __declspec(dllexport)
#    else
#      define SAE_MPI_API __declspec(dllimport)
#    endif
#  elif defined(__GNUC__) && __GNUC__ >= 4
#    define SAE_MPI_API __attribute__((visibility("default")))
#  else
#    define SAE_MPI_API
#  endif
#endif

/* ------------------------------------------------------------------------ */
/* The MPI communicator                                                      */
/* ------------------------------------------------------------------------ */

/* Fill *out with a libsae communicator over the ranks of comm (collective:
 * every rank of comm calls it). out->rank and out->n_ranks are the rank and
 * size of comm.
 *
 * The communicator works on its own duplicate of comm (MPI_Comm_dup), so
 * libsae's messages never mix with the host's, and sets MPI_ERRORS_RETURN on
 * it: a failed collective comes back to libsae as SAE_E_COMM instead of
 * aborting the process in MPI's default handler. (A rank that dies is
 * another matter: Open MPI's mpirun then terminates the job, and the other
 * ranks exit with an error instead of waiting for it.) Reductions use
 * MPI_Allreduce with MPI_SUM on MPI_FLOAT / MPI_DOUBLE; counts above MPI's
 * int range are split into several calls.
 *
 * Errors: SAE_E_INVALID_ARG (out NULL, comm MPI_COMM_NULL, or MPI not
 * initialised or already finalised), SAE_E_NOMEM, SAE_E_COMM (an MPI call
 * failed). On error *out is zeroed and nothing is left allocated; the
 * reason is in sae_mpi_error_detail. */
SAE_MPI_API int sae_mpi_comm_create(sae_comm *out, MPI_Comm comm);

/* Free what sae_mpi_comm_create or sae_mpi_grid_create made (collective over
 * the communicator's ranks, as MPI_Comm_free is) and zero *c. Call it before MPI_Finalize, once nothing
 * uses the communicator any more. NULL and a zeroed struct are no-ops. */
SAE_MPI_API void sae_mpi_comm_free(sae_comm *c);

/* Why the last failing libsae-mpi call on the calling thread failed, in
 * English, naming the function and what was wrong (e.g. "sae_mpi_grid_create:
 * the 6 ranks of comm do not split into groups of n_shards = 4"). Never NULL;
 * "" before the thread's first failure; successful calls leave it as it was.
 * The string belongs to the library and stays valid until the thread's next
 * failing libsae-mpi call; each thread has its own. */
SAE_MPI_API const char *sae_mpi_error_detail(void);

/* ------------------------------------------------------------------------ */
/* A 2-D grid: data-parallel groups of feature-sharded ranks                 */
/* ------------------------------------------------------------------------ */

/* Split the ranks of comm into a grid of n_groups = size / n_shards data
 * groups of n_shards feature shards each, and fill *features and *data with
 * MPI communicators for its two axes (collective: every rank of comm calls
 * it with the same n_shards). Rank r of comm is shard r % n_shards of group
 * r / n_shards:
 *
 *   *features  the n_shards ranks of r's group, ranks g n_shards ..
 *              g n_shards + n_shards - 1 of comm, ranked by shard:
 *              features->rank = shard, features->n_ranks = n_shards.
 *              They hold the group's shards and step on the same rows.
 *   *data      the n_groups ranks that hold r's shard, one per group
 *              (ranks shard, shard + n_shards, ... of comm), ranked by group:
 *              data->rank = group, data->n_ranks = n_groups.
 *
 *     sae_comm features, data;
 *     sae_mpi_grid_create(&features, &data, MPI_COMM_WORLD, n_shards);
 *     sae_shard_range(d_sae, features.n_ranks, features.rank, &begin, &end);
 *     ... sae_model_create_shard(&m, d_in, d_sae, begin, end, seed, arch, param) ...
 *     sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, &features);
 *     sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, &data);
 *     ... each group steps on its rows of the global batch (data.rank) ...
 *     sae_mpi_comm_free(&data);
 *     sae_mpi_comm_free(&features);
 *
 * A group's shards are consecutive ranks, so a launcher that places ranks on
 * nodes in rank order (Open MPI's mpirun by default, Slurm's srun with its
 * default block distribution) puts a group on one node when n_shards divides
 * the ranks per node: the feature axis's exchanges (the reconstructions, n
 * x d_in floats of the group's rows per step) stay on the node and the data
 * axis's (the shard's gradient block) cross the network. For another
 * placement pass a communicator in the rank order you want (MPI_Comm_split
 * with your own key). n_shards 1 gives feature communicators of one rank
 * (plain data-parallel), n_shards = size one group (plain feature-sharded).
 *
 * Each communicator is its own MPI communicator (MPI_Comm_split of comm)
 * with MPI_ERRORS_RETURN, as sae_mpi_comm_create's; free each with
 * sae_mpi_comm_free (collective over its ranks) before MPI_Finalize.
 *
 * Errors, with *features and *data zeroed and nothing created:
 * SAE_E_INVALID_ARG, on the calling rank alone and without communication,
 * for comm MPI_COMM_NULL or MPI not initialised (or finalised); after one
 * MPI_Allreduce over comm, on every rank alike: features or data NULL or the
 * same struct on any rank, n_shards different between ranks, n_shards < 1,
 * or a size of comm that n_shards does not divide; SAE_E_NOMEM (on any
 * rank); SAE_E_COMM when an MPI call failed. The reason is in
 * sae_mpi_error_detail. */
SAE_MPI_API int sae_mpi_grid_create(sae_comm *features, sae_comm *data, MPI_Comm comm,
                                    int n_shards);

/* ------------------------------------------------------------------------ */
/* Counting what goes through a communicator                                 */
/* ------------------------------------------------------------------------ */

/* Kinds of collectives, the indices of sae_mpi_counts' arrays. */
enum sae_mpi_count_kind {
    SAE_MPI_ALLREDUCE_F32 = 0,
    SAE_MPI_ALLREDUCE_F64 = 1,
    SAE_MPI_ALLGATHER = 2,
    SAE_MPI_BROADCAST = 3
};

/* Calls and payload bytes per kind of collective, as this rank made them.
 * The payload of an allreduce is its buffer (count * 4 or 8 bytes), of an
 * allgather the block this rank sends (it receives n_ranks times as much),
 * of a broadcast its buffer. What crosses the network depends on the
 * transport's algorithms (a ring allreduce sends and receives about
 * 2 (n_ranks - 1) / n_ranks times its payload per rank). This struct is
 * frozen: it will never change size or layout. */
typedef struct sae_mpi_counts {
    uint64_t calls[4]; /* by enum sae_mpi_count_kind */
    uint64_t bytes[4];
} sae_mpi_counts;

/* Fill *out with a communicator that forwards every call to inner (any
 * sae_comm: MPI's or the host's own) and adds each call and its payload to
 * *counts (caller-owned, not reset here; zero it to start counting). Failed
 * calls are counted too, and their status is passed through. inner is
 * copied; inner->ctx and counts must stay valid while *out is in use.
 * Errors: SAE_E_INVALID_ARG (a NULL argument, or an inner struct_size too
 * small, n_ranks < 1, a rank outside [0, n_ranks) or a NULL function),
 * SAE_E_NOMEM. On error *out is zeroed; the reason is in
 * sae_mpi_error_detail. */
SAE_MPI_API int sae_mpi_counting_create(sae_comm *out, const sae_comm *inner,
                                        sae_mpi_counts *counts);

/* Free what sae_mpi_counting_create made (not inner) and zero *c. NULL and a
 * zeroed struct are no-ops. */
SAE_MPI_API void sae_mpi_counting_free(sae_comm *c);

#ifdef __cplusplus
}
#endif

#endif /* SAE_MPI_H_INCLUDED */
