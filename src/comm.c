/*
 * The library's side of a host's communicator (parallel.h): checking and
 * copying a sae_comm, exchanges that agree on a status, sums that give the
 * same bits on every rank, and the hash that checks an allreduce did.
 */
#include "parallel.h"

#include <string.h>

int sae__comm_copy(sae_comm *dst, const sae_comm *src)
{
    if (!dst || !src || src->struct_size < SAE_COMM_SIZE_0_2 || src->n_ranks < 1 ||
        src->rank < 0 || src->rank >= src->n_ranks || !src->allreduce_f32 ||
        !src->allreduce_f64 || !src->allgather || !src->broadcast)
        return SAE_E_INVALID_ARG;
    sae_comm c;
    memset(&c, 0, sizeof c);
    memcpy(&c, src, SAE_COMM_SIZE_0_2); /* the fields of 0.2; later ones: none yet */
    c.struct_size = sizeof c;
    *dst = c;
    return SAE_OK;
}

int sae__comm_allreduce_f32(const sae_comm *c, float *buf, size_t count)
{
    return c->allreduce_f32(c->ctx, buf, count) == 0 ? SAE_OK : SAE_E_COMM;
}

int sae__comm_allreduce_f64(const sae_comm *c, double *buf, size_t count)
{
    return c->allreduce_f64(c->ctx, buf, count) == 0 ? SAE_OK : SAE_E_COMM;
}

int sae__comm_allgather(const sae_comm *c, const void *send, size_t bytes, void *recv)
{
    return c->allgather(c->ctx, send, bytes, recv) == 0 ? SAE_OK : SAE_E_COMM;
}

int sae__comm_broadcast(const sae_comm *c, void *buf, size_t bytes, int root)
{
    return c->broadcast(c->ctx, buf, bytes, root) == 0 ? SAE_OK : SAE_E_COMM;
}

int sae__comm_exchange(const sae_comm *c, const void *mine, size_t bytes, void *all, int *agreed)
{
    *agreed = SAE_E_COMM;
    int rc = sae__comm_allgather(c, mine, bytes, all);
    if (rc != SAE_OK)
        return rc;
    *agreed = SAE_OK;
    for (int r = 0; r < c->n_ranks; r++) {
        int32_t status;
        memcpy(&status, (const char *)all + (size_t)r * bytes, sizeof status);
        if (status != SAE_OK) {
            *agreed = status;
            break;
        }
    }
    return SAE_OK;
}

int sae__comm_sum_ordered_f64(const sae_comm *c, const double *mine, size_t count, double *out,
                              double *scratch)
{
    int rc = sae__comm_allgather(c, mine, count * sizeof(double), scratch);
    if (rc != SAE_OK)
        return rc;
    for (size_t k = 0; k < count; k++) {
        double s = scratch[k];
        for (int r = 1; r < c->n_ranks; r++)
            s += scratch[(size_t)r * count + k];
        out[k] = s;
    }
    return SAE_OK;
}

int sae__comm_sum_ordered_f32(const sae_comm *c, const float *mine, size_t count, float *out,
                              float *scratch)
{
    int rc = sae__comm_allgather(c, mine, count * sizeof(float), scratch);
    if (rc != SAE_OK)
        return rc;
    for (size_t k = 0; k < count; k++) {
        float s = scratch[k];
        for (int r = 1; r < c->n_ranks; r++)
            s += scratch[(size_t)r * count + k];
        out[k] = s;
    }
    return SAE_OK;
}

/* The hash: sum over k of (bits(v[k]) + 1) * w_k mod 2^64 with odd weights
 * w_k = (2k + 1) * W. A single changed value changes it: the difference of
 * two 32-bit patterns times an odd number is not 0 mod 2^64. Eight lanes,
 * so the loop vectorises. */
#define HASH_WEIGHT 0x9E3779B97F4A7C15ull

SAE_VECTOR_CLONES
double sae__sumsq_hash_f32(const float *v, size_t count, uint64_t *hash)
{
    enum { LANES = 8 };
    double sq[LANES] = {0};
    uint64_t h[LANES] = {0};
    size_t k = 0;
    for (; k + LANES <= count; k += LANES)
        for (int l = 0; l < LANES; l++) {
            uint32_t bits;
            memcpy(&bits, &v[k + l], sizeof bits);
            sq[l] += (double)v[k + l] * v[k + l];
            h[l] += ((uint64_t)bits + 1u) * ((2u * (uint64_t)(k + l) + 1u) * HASH_WEIGHT);
        }
    for (; k < count; k++) {
        uint32_t bits;
        memcpy(&bits, &v[k], sizeof bits);
        sq[0] += (double)v[k] * v[k];
        h[0] += ((uint64_t)bits + 1u) * ((2u * (uint64_t)k + 1u) * HASH_WEIGHT);
    }
    double s = 0.0;
    uint64_t hv = 0;
    for (int l = 0; l < LANES; l++) {
        s += sq[l];
        hv += h[l];
    }
    *hash = hv;
    return s;
}

uint64_t sae__hash_f32(const float *v, size_t count)
{
    uint64_t h;
    sae__sumsq_hash_f32(v, count, &h);
    return h;
}

int sae__comm_same_or_root(const sae_comm *c, float *buf, size_t count, const void *records,
                           size_t stride, size_t offset, bool *replaced)
{
    uint64_t first;
    memcpy(&first, (const char *)records + offset, sizeof first);
    bool same = true;
    for (int r = 1; r < c->n_ranks && same; r++) {
        uint64_t h;
        memcpy(&h, (const char *)records + (size_t)r * stride + offset, sizeof h);
        same = h == first;
    }
    *replaced = !same;
    if (same)
        return SAE_OK;
    return sae__comm_broadcast(c, buf, count * sizeof(float), 0);
}
