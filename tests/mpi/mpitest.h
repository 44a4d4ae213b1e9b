/* Checks for programs that run as several MPI ranks (under mpirun): a failed
 * check prints the rank, place and message and aborts the whole job
 * (MPI_Abort), so that no rank is left waiting in a collective for one that
 * stopped. */
#ifndef SAE_MPITEST_H
#define SAE_MPITEST_H

#include <mpi.h>
#include <stdio.h>

static int mpitest_rank = -1;

#define MPITEST_CHECK(cond, ...)                                                         \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", mpitest_rank, __FILE__, \
                    __LINE__, #cond);                                                    \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
            fflush(stderr);                                                              \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                \
        }                                                                                \
    } while (0)

#endif
