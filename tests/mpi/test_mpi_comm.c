/* libsae-mpi's communicator over MPI_COMM_WORLD, run as 2 and 3 ranks: every
 * collective against values computed independently on each rank, at sizes
 * that cross the piece boundaries of large calls (this file is also built
 * with pieces of 7 bytes), the errors of sae_mpi_comm_create, an MPI error
 * returned as a status instead of aborting, and the counting communicator
 * over it. */
#include "mpitest.h"

#include <libsae/sae_mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Built with SAE_MPI_MAX_CALL_BYTES (7-byte pieces), large sizes would take
 * tens of thousands of MPI calls: sizes up to 1000 cross enough boundaries. */
#ifdef SAE_MPI_MAX_CALL_BYTES
#define LARGE 1000
#else
#define LARGE 100003
#endif

static const size_t elem_counts[] = {1, 3, 7, 999, LARGE};

static void check_allreduce(const sae_comm *c)
{
    const int n = c->n_ranks;
    for (size_t s = 0; s < sizeof elem_counts / sizeof elem_counts[0]; s++) {
        size_t count = elem_counts[s];
        float *f = malloc((count + 1) * sizeof *f);
        double *d = malloc((count + 1) * sizeof *d);
        MPITEST_CHECK(f && d, "out of memory");
        for (size_t k = 0; k <= count; k++) { /* whole numbers and halves: exact sums */
            f[k] = (float)((c->rank + 1) * (double)(k % 1000 + 1));
            d[k] = (c->rank + 0.5) * (double)(k + 1);
        }
        MPITEST_CHECK(c->allreduce_f32(c->ctx, f, count) == 0, "allreduce_f32 of %zu", count);
        MPITEST_CHECK(c->allreduce_f64(c->ctx, d, count) == 0, "allreduce_f64 of %zu", count);
        for (size_t k = 0; k < count; k++) {
            float want_f = (float)((double)(k % 1000 + 1) * n * (n + 1) / 2);
            double want_d = (double)(k + 1) * n * n / 2.0;
            MPITEST_CHECK(f[k] == want_f, "f32 sum [%zu of %zu]: %g, want %g", k, count,
                          (double)f[k], (double)want_f);
            MPITEST_CHECK(d[k] == want_d, "f64 sum [%zu of %zu]: %g, want %g", k, count, d[k],
                          want_d);
        }
        /* the element past the count is untouched */
        MPITEST_CHECK(f[count] == (float)((c->rank + 1) * (double)(count % 1000 + 1)),
                      "f32 past the end changed");
        MPITEST_CHECK(d[count] == (c->rank + 0.5) * (double)(count + 1), "f64 past the end");
        free(f);
        free(d);
    }
}

static unsigned char pattern(int rank, size_t b) { return (unsigned char)(rank * 31 + b * 7 + 1); }

static void check_allgather(const sae_comm *c)
{
    const size_t sizes[] = {1, 5, 7, 8, 13, LARGE - 2};
    const size_t n = (size_t)c->n_ranks;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t bytes = sizes[s];
        unsigned char *send = malloc(bytes), *recv = malloc(n * bytes + 16);
        MPITEST_CHECK(send && recv, "out of memory");
        for (size_t b = 0; b < bytes; b++)
            send[b] = pattern(c->rank, b);
        memset(recv, 0xA5, n * bytes + 16);
        MPITEST_CHECK(c->allgather(c->ctx, send, bytes, recv) == 0, "allgather of %zu", bytes);
        for (size_t r = 0; r < n; r++)
            for (size_t b = 0; b < bytes; b++)
                MPITEST_CHECK(recv[r * bytes + b] == pattern((int)r, b),
                              "allgather of %zu: byte %zu of rank %zu", bytes, b, r);
        for (size_t b = 0; b < 16; b++)
            MPITEST_CHECK(recv[n * bytes + b] == 0xA5, "allgather wrote past n * bytes");
        for (size_t b = 0; b < bytes; b++)
            MPITEST_CHECK(send[b] == pattern(c->rank, b), "allgather changed send");
        free(send);
        free(recv);
    }
}

static void check_broadcast(const sae_comm *c)
{
    const size_t sizes[] = {1, 7, LARGE / 10};
    for (int root = 0; root < c->n_ranks; root++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t bytes = sizes[s];
            unsigned char *buf = malloc(bytes + 1);
            MPITEST_CHECK(buf, "out of memory");
            for (size_t b = 0; b <= bytes; b++)
                buf[b] = pattern(c->rank, b);
            MPITEST_CHECK(c->broadcast(c->ctx, buf, bytes, root) == 0, "broadcast");
            for (size_t b = 0; b < bytes; b++)
                MPITEST_CHECK(buf[b] == pattern(root, b), "broadcast from %d of %zu: byte %zu",
                              root, bytes, b);
            MPITEST_CHECK(buf[bytes] == pattern(c->rank, bytes), "broadcast wrote past bytes");
            free(buf);
        }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    mpitest_rank = rank;

    /* bad arguments: a status, *out zeroed */
    sae_comm c;
    memset(&c, 0xFF, sizeof c);
    MPITEST_CHECK(sae_mpi_comm_create(&c, MPI_COMM_NULL) == SAE_E_INVALID_ARG, "COMM_NULL");
    MPITEST_CHECK(c.ctx == NULL && c.struct_size == 0 && c.allgather == NULL, "not zeroed");
    MPITEST_CHECK(sae_mpi_comm_create(NULL, MPI_COMM_WORLD) == SAE_E_INVALID_ARG, "NULL out");
    sae_mpi_comm_free(NULL);
    sae_mpi_comm_free(&c); /* zeroed: a no-op */

    MPITEST_CHECK(sae_mpi_comm_create(&c, MPI_COMM_WORLD) == SAE_OK, "create");
    MPITEST_CHECK(c.struct_size == sizeof c && c.rank == rank && c.n_ranks == size,
                  "rank %d of %d, struct_size %zu", c.rank, c.n_ranks, c.struct_size);
    check_allreduce(&c);
    check_allgather(&c);
    check_broadcast(&c);

    /* An MPI error comes back as a status (MPI_ERRORS_RETURN on the
     * duplicate), and the communicator still works afterwards. */
    unsigned char byte = 1;
    MPITEST_CHECK(c.broadcast(c.ctx, &byte, 1, size) != 0, "broadcast from a rank past the end");
    check_broadcast(&c);

    /* counting over MPI: calls and payload bytes, as this rank made them */
    sae_mpi_counts counts;
    memset(&counts, 0, sizeof counts);
    sae_comm counted;
    MPITEST_CHECK(sae_mpi_counting_create(&counted, &c, &counts) == SAE_OK, "counting");
    MPITEST_CHECK(counted.rank == rank && counted.n_ranks == size, "counting rank");
    float f[10] = {0};
    double d[3] = {0};
    unsigned char send[5] = {0}, *recv = malloc(5 * (size_t)size);
    MPITEST_CHECK(recv, "out of memory");
    MPITEST_CHECK(counted.allreduce_f32(counted.ctx, f, 10) == 0, "counted f32");
    MPITEST_CHECK(counted.allreduce_f32(counted.ctx, f, 3) == 0, "counted f32");
    MPITEST_CHECK(counted.allreduce_f64(counted.ctx, d, 3) == 0, "counted f64");
    MPITEST_CHECK(counted.allgather(counted.ctx, send, 5, recv) == 0, "counted allgather");
    MPITEST_CHECK(counted.broadcast(counted.ctx, send, 4, 0) == 0, "counted broadcast");
    MPITEST_CHECK(counts.calls[SAE_MPI_ALLREDUCE_F32] == 2 && counts.bytes[SAE_MPI_ALLREDUCE_F32] == 52,
                  "f32 counts %llu %llu", (unsigned long long)counts.calls[0],
                  (unsigned long long)counts.bytes[0]);
    MPITEST_CHECK(counts.calls[SAE_MPI_ALLREDUCE_F64] == 1 && counts.bytes[SAE_MPI_ALLREDUCE_F64] == 24,
                  "f64 counts");
    MPITEST_CHECK(counts.calls[SAE_MPI_ALLGATHER] == 1 && counts.bytes[SAE_MPI_ALLGATHER] == 5,
                  "allgather counts");
    MPITEST_CHECK(counts.calls[SAE_MPI_BROADCAST] == 1 && counts.bytes[SAE_MPI_BROADCAST] == 4,
                  "broadcast counts");
    sae_mpi_counting_free(&counted);
    MPITEST_CHECK(counted.ctx == NULL, "counting_free zeroes");
    free(recv);

    sae_mpi_comm_free(&c);
    MPITEST_CHECK(c.ctx == NULL && c.allreduce_f32 == NULL, "comm_free zeroes");
    sae_mpi_comm_free(&c);
    if (rank == 0)
        printf("test_mpi_comm: %d ranks: every collective and error checked\n", size);
    MPI_Finalize();
    return 0;
}
