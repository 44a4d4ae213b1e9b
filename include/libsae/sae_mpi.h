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
 * Every function returns an SAE_* status of <libsae/sae.h>. Only names with
 * the prefix sae_mpi_ / SAE_MPI_ are declared here (and those of sae.h and
 * mpi.h, which it includes).
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
 * failed). On error *out is zeroed and nothing is left allocated. */
SAE_MPI_API int sae_mpi_comm_create(sae_comm *out, MPI_Comm comm);

/* Free what sae_mpi_comm_create made (collective over the ranks of comm, as
 * MPI_Comm_free is) and zero *c. Call it before MPI_Finalize, once nothing
 * uses the communicator any more. NULL and a zeroed struct are no-ops. */
SAE_MPI_API void sae_mpi_comm_free(sae_comm *c);

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
 * SAE_E_NOMEM. On error *out is zeroed. */
SAE_MPI_API int sae_mpi_counting_create(sae_comm *out, const sae_comm *inner,
                                        sae_mpi_counts *counts);

/* Free what sae_mpi_counting_create made (not inner) and zero *c. NULL and a
 * zeroed struct are no-ops. */
SAE_MPI_API void sae_mpi_counting_free(sae_comm *c);

#ifdef __cplusplus
}
#endif

#endif /* SAE_MPI_H_INCLUDED */
