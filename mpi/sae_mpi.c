/*
 * libsae-mpi: the sae_comm of <libsae/sae.h> over an MPI communicator, the
 * 2-D grid's two communicators split from one, and a communicator that
 * counts what passes through another.
 *
 * MPI counts are int; libsae's are size_t. A call larger than
 * SAE_MPI_MAX_CALL_BYTES is made as several MPI calls over consecutive
 * pieces (an allgather's pieces land in each rank's block through a datatype
 * whose extent is the whole block). Test builds shrink the limit to a few
 * bytes so that the tests cross every piece boundary.
 */
#include "libsae/sae_mpi.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SAE_MPI_MAX_CALL_BYTES
#define SAE_MPI_MAX_CALL_BYTES ((size_t)1 << 30)
#endif

/* ---- why the last call failed (sae_mpi_error_detail) ------------------------- */

static _Thread_local char detail[512];

const char *sae_mpi_error_detail(void) { return detail; }

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return status;
}

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

/* Make *out the communicator over `owned`, a communicator of ours (a
 * duplicate or a split: sae_mpi_comm_free frees it), in the context c
 * allocated by the caller: MPI_ERRORS_RETURN on it, its rank and size.
 * Returns 0, or 1 when an MPI call failed (out untouched). */
static int wrap(sae_comm *out, mpi_ctx *c, MPI_Comm owned)
{
    int rank, size;
    if (MPI_Comm_set_errhandler(owned, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
        MPI_Comm_rank(owned, &rank) != MPI_SUCCESS || MPI_Comm_size(owned, &size) != MPI_SUCCESS)
        return 1;
    c->comm = owned;
    out->struct_size = sizeof *out;
    out->ctx = c;
    out->rank = rank;
    out->n_ranks = size;
    out->allreduce_f32 = mpi_allreduce_f32;
    out->allreduce_f64 = mpi_allreduce_f64;
    out->allgather = mpi_allgather;
    out->broadcast = mpi_broadcast;
    return 0;
}

/* comm is usable by the library: not MPI_COMM_NULL, MPI running. */
static int check_comm(const char *fn, MPI_Comm comm)
{
    if (comm == MPI_COMM_NULL)
        return fail(SAE_E_INVALID_ARG, "%s: comm is MPI_COMM_NULL", fn);
    if (!mpi_usable())
        return fail(SAE_E_INVALID_ARG, "%s: MPI is not initialised (MPI_Init) or already "
                    "finalised", fn);
    return SAE_OK;
}

int sae_mpi_comm_create(sae_comm *out, MPI_Comm comm)
{
    static const char fn[] = "sae_mpi_comm_create";
    if (!out)
        return fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    memset(out, 0, sizeof *out);
    int rc = check_comm(fn, comm);
    if (rc != SAE_OK)
        return rc;
    mpi_ctx *c = malloc(sizeof *c);
    if (!c)
        return fail(SAE_E_NOMEM, "%s: out of memory", fn);
    MPI_Comm dup;
    if (MPI_Comm_dup(comm, &dup) != MPI_SUCCESS) {
        free(c);
        return fail(SAE_E_COMM, "%s: MPI_Comm_dup failed", fn);
    }
    if (wrap(out, c, dup) != 0) {
        MPI_Comm_free(&dup);
        free(c);
        return fail(SAE_E_COMM, "%s: setting up the duplicate of comm failed "
                    "(MPI_Comm_set_errhandler, _rank or _size)", fn);
    }
    return SAE_OK;
}

/* ---- the 2-D grid ---------------------------------------------------------------- */

/* What each rank knows alone, made common in one MPI_Allreduce (MPI_MAX). */
enum { AGREE_BAD_OUT, AGREE_NOMEM, AGREE_MAX_SHARDS, AGREE_NEG_MIN_SHARDS, AGREE_N };

int sae_mpi_grid_create(sae_comm *features, sae_comm *data, MPI_Comm comm, int n_shards)
{
    static const char fn[] = "sae_mpi_grid_create";
    if (features)
        memset(features, 0, sizeof *features);
    if (data)
        memset(data, 0, sizeof *data);
    int rc = check_comm(fn, comm);
    if (rc != SAE_OK)
        return rc;
    int rank, size;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS)
        return fail(SAE_E_COMM, "%s: MPI_Comm_rank or MPI_Comm_size of comm failed", fn);
    mpi_ctx *fc = malloc(sizeof *fc), *dc = malloc(sizeof *dc);
    int mine[AGREE_N] = {!features || !data || features == data, !fc || !dc, n_shards, -n_shards};
    int all[AGREE_N];
    if (MPI_Allreduce(mine, all, AGREE_N, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS)
        rc = fail(SAE_E_COMM, "%s: MPI_Allreduce over comm failed", fn);
    else if (all[AGREE_BAD_OUT])
        rc = fail(SAE_E_INVALID_ARG, "%s: features or data is NULL, or both are the same "
                  "struct (%s)", fn, mine[AGREE_BAD_OUT] ? "on this rank" : "on another rank");
    else if (all[AGREE_MAX_SHARDS] != -all[AGREE_NEG_MIN_SHARDS])
        rc = fail(SAE_E_INVALID_ARG, "%s: the ranks pass different n_shards (from %d to %d; "
                  "this rank %d)", fn, -all[AGREE_NEG_MIN_SHARDS], all[AGREE_MAX_SHARDS], n_shards);
    else if (n_shards < 1)
        rc = fail(SAE_E_INVALID_ARG, "%s: n_shards %d is below 1", fn, n_shards);
    else if (size % n_shards != 0)
        rc = fail(SAE_E_INVALID_ARG, "%s: the %d ranks of comm do not split into groups of "
                  "n_shards = %d (ranks = groups x n_shards)", fn, size, n_shards);
    else if (all[AGREE_NOMEM])
        rc = fail(SAE_E_NOMEM, "%s: out of memory (%s)", fn,
                  mine[AGREE_NOMEM] ? "on this rank" : "on another rank");
    if (rc != SAE_OK) {
        free(fc);
        free(dc);
        return rc;
    }
    /* group g = rank / n_shards holds consecutive ranks; shard s = rank % n_shards */
    const int group = rank / n_shards, shard = rank % n_shards;
    MPI_Comm fcomm = MPI_COMM_NULL, dcomm = MPI_COMM_NULL;
    int ok = MPI_Comm_split(comm, group, shard, &fcomm) == MPI_SUCCESS;
    ok = MPI_Comm_split(comm, shard, group, &dcomm) == MPI_SUCCESS && ok;
    ok = ok && wrap(features, fc, fcomm) == 0 && wrap(data, dc, dcomm) == 0;
    int all_ok = 0;
    if (MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm) == MPI_SUCCESS && all_ok)
        return SAE_OK;
    if (fcomm != MPI_COMM_NULL)
        MPI_Comm_free(&fcomm);
    if (dcomm != MPI_COMM_NULL)
        MPI_Comm_free(&dcomm);
    free(fc);
    free(dc);
    memset(features, 0, sizeof *features);
    memset(data, 0, sizeof *data);
    return fail(SAE_E_COMM, "%s: splitting comm failed (MPI_Comm_split or setting up its "
                "parts, %s)", fn, ok ? "on another rank" : "on this rank");
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
    static const char fn[] = "sae_mpi_counting_create";
    if (!out)
        return fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    memset(out, 0, sizeof *out);
    if (!inner || !counts)
        return fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, inner ? "counts" : "inner");
    /* the 0.2 fields must all be there: struct_size covers the whole struct */
    if (inner->struct_size < sizeof *inner)
        return fail(SAE_E_INVALID_ARG, "%s: inner->struct_size %zu is below the 0.2 layout's "
                    "%zu", fn, inner->struct_size, sizeof *inner);
    if (inner->n_ranks < 1 || inner->rank < 0 || inner->rank >= inner->n_ranks)
        return fail(SAE_E_INVALID_ARG, "%s: inner: rank %d of %d ranks", fn, inner->rank,
                    inner->n_ranks);
    if (!inner->allreduce_f32 || !inner->allreduce_f64 || !inner->allgather || !inner->broadcast)
        return fail(SAE_E_INVALID_ARG, "%s: inner: a NULL function", fn);
    counting_ctx *c = malloc(sizeof *c);
    if (!c)
        return fail(SAE_E_NOMEM, "%s: out of memory", fn);
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
