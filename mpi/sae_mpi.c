/*
 * libsae-mpi: the sae_comm of <libsae/sae.h> over an MPI communicator, and a
 * communicator that counts what passes through another.
 *
 * MPI counts are int; libsae's are size_t. A call larger than
 * SAE_MPI_MAX_CALL_BYTES is made as several MPI calls over consecutive
 * pieces (an allgather's pieces land in each rank's block through a datatype
 * whose extent is the whole block). Test builds shrink the limit to a few
 * bytes so that the tests cross every piece boundary.
 */
#include "libsae/sae_mpi.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#ifndef SAE_MPI_MAX_CALL_BYTES
#define SAE_MPI_MAX_CALL_BYTES ((size_t)1 << 30)
#endif

/* ---- over MPI ---------------------------------------------------------------- */

typedef struct mpi_ctx {
    MPI_Comm comm; /* our duplicate, with MPI_ERRORS_RETURN */
} mpi_ctx;

static int allreduce_pieces(MPI_Comm comm, void *buf, size_t count, size_t elem,
                            MPI_Datatype type)
{
    const size_t per_call = SAE_MPI_MAX_CALL_BYTES / elem > 0 ? SAE_MPI_MAX_CALL_BYTES / elem : 1;
    char *p = buf;
    while (count > 0) {
        size_t n = count < per_call ? count : per_call;
        if (MPI_Allreduce(MPI_IN_PLACE, p, (int)n, type, MPI_SUM, comm) != MPI_SUCCESS)
            return 1;
        p += n * elem;
        count -= n;
    }
    return 0;
}

static int mpi_allreduce_f32(void *ctx, float *buf, size_t count)
{
    return allreduce_pieces(((mpi_ctx *)ctx)->comm, buf, count, sizeof(float), MPI_FLOAT);
}

static int mpi_allreduce_f64(void *ctx, double *buf, size_t count)
{
    return allreduce_pieces(((mpi_ctx *)ctx)->comm, buf, count, sizeof(double), MPI_DOUBLE);
}

/* Bytes [offset, offset + len) of every rank's block: received as one
 * element of a type of len bytes whose extent is the whole block. */
static int allgather_piece(MPI_Comm comm, const char *send, size_t offset, size_t len,
                           size_t block, char *recv)
{
    MPI_Datatype piece, strided;
    if (MPI_Type_contiguous((int)len, MPI_BYTE, &piece) != MPI_SUCCESS)
        return 1;
    int rc = MPI_Type_create_resized(piece, 0, (MPI_Aint)block, &strided);
    MPI_Type_free(&piece);
    if (rc != MPI_SUCCESS)
        return 1;
    rc = MPI_Type_commit(&strided);
    if (rc == MPI_SUCCESS)
        rc = MPI_Allgather(send + offset, (int)len, MPI_BYTE, recv + offset, 1, strided, comm);
    MPI_Type_free(&strided);
    return rc != MPI_SUCCESS;
}

static int mpi_allgather(void *ctx, const void *send, size_t bytes, void *recv)
{
    MPI_Comm comm = ((mpi_ctx *)ctx)->comm;
    if (bytes <= SAE_MPI_MAX_CALL_BYTES)
        return MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, comm) !=
               MPI_SUCCESS;
    for (size_t offset = 0; offset < bytes; offset += SAE_MPI_MAX_CALL_BYTES) {
        size_t len = bytes - offset < SAE_MPI_MAX_CALL_BYTES ? bytes - offset
                                                             : SAE_MPI_MAX_CALL_BYTES;
        if (allgather_piece(comm, send, offset, len, bytes, recv))
            return 1;
    }
    return 0;
}

static int mpi_broadcast(void *ctx, void *buf, size_t bytes, int root)
{
    MPI_Comm comm = ((mpi_ctx *)ctx)->comm;
    char *p = buf;
    while (bytes > 0) {
        size_t n = bytes < SAE_MPI_MAX_CALL_BYTES ? bytes : SAE_MPI_MAX_CALL_BYTES;
        if (MPI_Bcast(p, (int)n, MPI_BYTE, root, comm) != MPI_SUCCESS)
            return 1;
        p += n;
        bytes -= n;
    }
    return 0;
}

static bool mpi_usable(void)
{
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    return initialized && !finalized;
}

int sae_mpi_comm_create(sae_comm *out, MPI_Comm comm)
{
    if (!out)
        return SAE_E_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if (comm == MPI_COMM_NULL || !mpi_usable())
        return SAE_E_INVALID_ARG;
    mpi_ctx *c = malloc(sizeof *c);
    if (!c)
        return SAE_E_NOMEM;
    if (MPI_Comm_dup(comm, &c->comm) != MPI_SUCCESS) {
        free(c);
        return SAE_E_COMM;
    }
    int rank, size;
    if (MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
        MPI_Comm_rank(c->comm, &rank) != MPI_SUCCESS ||
        MPI_Comm_size(c->comm, &size) != MPI_SUCCESS) {
        MPI_Comm_free(&c->comm);
        free(c);
        return SAE_E_COMM;
    }
    out->struct_size = sizeof *out;
    out->ctx = c;
    out->rank = rank;
    out->n_ranks = size;
    out->allreduce_f32 = mpi_allreduce_f32;
    out->allreduce_f64 = mpi_allreduce_f64;
    out->allgather = mpi_allgather;
    out->broadcast = mpi_broadcast;
    return SAE_OK;
}

void sae_mpi_comm_free(sae_comm *c)
{
    if (!c || !c->ctx || c->allreduce_f32 != mpi_allreduce_f32)
        return;
    mpi_ctx *ctx = c->ctx;
    if (mpi_usable())
        MPI_Comm_free(&ctx->comm);
    free(ctx);
    memset(c, 0, sizeof *c);
}

/* ---- counting -------------------------------------------------------------- */

typedef struct counting_ctx {
    sae_comm inner;
    sae_mpi_counts *counts;
} counting_ctx;

static void count(counting_ctx *c, enum sae_mpi_count_kind kind, uint64_t bytes)
{
    c->counts->calls[kind]++;
    c->counts->bytes[kind] += bytes;
}

static int counting_f32(void *ctx, float *buf, size_t n)
{
    counting_ctx *c = ctx;
    count(c, SAE_MPI_ALLREDUCE_F32, (uint64_t)n * sizeof(float));
    return c->inner.allreduce_f32(c->inner.ctx, buf, n);
}

static int counting_f64(void *ctx, double *buf, size_t n)
{
    counting_ctx *c = ctx;
    count(c, SAE_MPI_ALLREDUCE_F64, (uint64_t)n * sizeof(double));
    return c->inner.allreduce_f64(c->inner.ctx, buf, n);
}

static int counting_gather(void *ctx, const void *send, size_t bytes, void *recv)
{
    counting_ctx *c = ctx;
    count(c, SAE_MPI_ALLGATHER, bytes);
    return c->inner.allgather(c->inner.ctx, send, bytes, recv);
}

static int counting_bcast(void *ctx, void *buf, size_t bytes, int root)
{
    counting_ctx *c = ctx;
    count(c, SAE_MPI_BROADCAST, bytes);
    return c->inner.broadcast(c->inner.ctx, buf, bytes, root);
}

int sae_mpi_counting_create(sae_comm *out, const sae_comm *inner, sae_mpi_counts *counts)
{
    if (!out)
        return SAE_E_INVALID_ARG;
    memset(out, 0, sizeof *out);
    /* the 0.2 fields must all be there: struct_size covers the whole struct */
    if (!inner || !counts || inner->struct_size < sizeof *inner || inner->n_ranks < 1 ||
        inner->rank < 0 || inner->rank >= inner->n_ranks || !inner->allreduce_f32 ||
        !inner->allreduce_f64 || !inner->allgather || !inner->broadcast)
        return SAE_E_INVALID_ARG;
    counting_ctx *c = malloc(sizeof *c);
    if (!c)
        return SAE_E_NOMEM;
    c->inner = *inner; /* the fields this version knows */
    c->inner.struct_size = sizeof c->inner;
    c->counts = counts;
    out->struct_size = sizeof *out;
    out->ctx = c;
    out->rank = inner->rank;
    out->n_ranks = inner->n_ranks;
    out->allreduce_f32 = counting_f32;
    out->allreduce_f64 = counting_f64;
    out->allgather = counting_gather;
    out->broadcast = counting_bcast;
    return SAE_OK;
}

void sae_mpi_counting_free(sae_comm *c)
{
    if (!c || !c->ctx || c->allreduce_f32 != counting_f32)
        return;
    free(c->ctx);
    memset(c, 0, sizeof *c);
}
