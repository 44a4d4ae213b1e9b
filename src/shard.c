/*
 * Feature shards: the per-token selections of TopK and AuxK across shards.
 *
 * A feature-sharded model (rank r holds features [begin_r, end_r), in rank
 * order) must keep exactly the features one process would: per token, the k
 * largest positive values over all d_sae features, ties at the k-th value
 * kept in feature order. Each shard first selects locally with that same
 * rule (k values at most), then the shards exchange these candidates (k
 * floats per token each, 0-padded) and every rank computes, per token:
 *
 *   kth    the k-th largest positive candidate over all shards (0 if there
 *          are at most k: then every positive value is kept)
 *   allow  how many of its own values equal to kth the shard keeps: the
 *          ties allowed, k - #{candidates > kth}, go to the shards in rank
 *          order (= feature order), each up to the ties it listed
 *
 * and keeps its values above kth and its first `allow` ties. The candidates
 * suffice: fewer than k values lie above kth, so every shard listed all of
 * its own; and a shard whose ties were cut short at k listed at least as
 * many as are allowed in all, so later shards get none either way.
 */
#include "parallel.h"

#include <stdlib.h>
#include <string.h>

static int descending(const void *pa, const void *pb)
{
    float a = *(const float *)pa, b = *(const float *)pb;
    return (a < b) - (a > b);
}

int sae__shard_select(const sae_comm *c, int status, size_t rows, size_t k, const float *cand,
                      sae_shard_cut *cut, void *scratch, int *agreed)
{
    const size_t n_ranks = (size_t)c->n_ranks, me = (size_t)c->rank;
    const size_t record = sae__shard_select_record(rows, k);
    unsigned char *mine = scratch, *all = mine + record;
    float *pool = (float *)(all + n_ranks * record); /* n_ranks * k floats */
    int32_t st = status;
    memcpy(mine, &st, sizeof st);
    memset(mine + sizeof st, 0, SAE_RECORD_HEADER - sizeof st);
    memcpy(mine + SAE_RECORD_HEADER, cand, rows * k * sizeof(float));
    int rc = sae__comm_exchange(c, mine, record, all, agreed);
    if (rc != SAE_OK || *agreed != SAE_OK)
        return rc;
    for (size_t t = 0; t < rows; t++) {
        size_t n = 0;
        for (size_t r = 0; r < n_ranks; r++) {
            const float *v = (const float *)(all + r * record + SAE_RECORD_HEADER) + t * k;
            for (size_t j = 0; j < k; j++)
                if (v[j] > 0.0f)
                    pool[n++] = v[j];
        }
        float kth = 0.0f;
        if (n > k) {
            qsort(pool, n, sizeof *pool, descending);
            kth = pool[k - 1];
        }
        size_t above = 0, ties_before = 0, ties_mine = 0;
        for (size_t r = 0; r < n_ranks; r++) {
            const float *v = (const float *)(all + r * record + SAE_RECORD_HEADER) + t * k;
            for (size_t j = 0; j < k; j++) {
                above += v[j] > kth;
                if (kth > 0.0f && v[j] == kth) {
                    ties_before += r < me;
                    ties_mine += r == me;
                }
            }
        }
        size_t allowed = kth > 0.0f ? k - above : 0; /* ties the whole model keeps */
        size_t left = allowed > ties_before ? allowed - ties_before : 0;
        cut[t].kth = kth;
        cut[t].allow = (uint32_t)(left < ties_mine ? left : ties_mine);
    }
    return SAE_OK;
}

size_t sae__shard_keep(float *v, size_t count, sae_shard_cut cut)
{
    size_t kept = 0;
    uint32_t allow = cut.allow;
    for (size_t i = 0; i < count; i++) {
        float x = v[i];
        bool keep = x > cut.kth || (x == cut.kth && x > 0.0f && allow > 0);
        if (keep && !(x > cut.kth))
            allow--;
        v[i] = keep ? x : 0.0f;
        kept += keep;
    }
    return kept;
}

/* ---- shard models ------------------------------------------------------------- */

int sae_shard_range(size_t d_sae, int n_shards, int shard, size_t *begin, size_t *end)
{
    static const char fn[] = "sae_shard_range";
    if (!begin || !end)
        return sae__fail(SAE_E_INVALID_ARG, "%s: begin or end is NULL", fn);
    if (d_sae == 0 || n_shards < 1 || (size_t)n_shards > d_sae)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %d shards of %zu features (each needs one)", fn,
                         n_shards, d_sae);
    if (shard < 0 || shard >= n_shards)
        return sae__fail(SAE_E_INVALID_ARG, "%s: shard %d is outside [0, %d)", fn, shard,
                         n_shards);
    /* d_sae * shard in 128 bits' worth: split the product to avoid overflow */
    const size_t q = d_sae / (size_t)n_shards, r = d_sae % (size_t)n_shards;
    *begin = q * (size_t)shard + r * (size_t)shard / (size_t)n_shards;
    *end = q * (size_t)(shard + 1) + r * (size_t)(shard + 1) / (size_t)n_shards;
    return SAE_OK;
}

int sae_model_create_shard(sae_model **out, size_t d_in, size_t d_sae, size_t begin, size_t end,
                           uint64_t seed, int arch, double param)
{
    int rc = sae__model_create(out, d_in, d_sae, begin, end, seed, arch, param);
    if (rc == SAE_E_INVALID_ARG && out && (begin >= end || end > d_sae))
        return sae__fail(rc, "sae_model_create_shard: [%zu, %zu) is not a slice of %zu features",
                         begin, end, d_sae);
    return rc;
}

int sae_model_create_transcoder_shard(sae_model **out, size_t d_in, size_t d_out, size_t d_sae,
                                      size_t begin, size_t end, uint64_t seed, int kind, int arch,
                                      double param)
{
    return sae__transcoder_create(out, "sae_model_create_transcoder_shard", d_in, d_out, d_sae,
                                  begin, end, seed, kind, arch, param);
}

int sae_model_create_matryoshka_shard(sae_model **out, size_t d_in, size_t d_sae, size_t begin,
                                      size_t end, uint64_t seed, size_t k, const size_t *widths,
                                      size_t n_widths)
{
    return sae__matryoshka_create(out, "sae_model_create_matryoshka_shard", d_in, d_sae, begin,
                                  end, seed, k, widths, n_widths);
}

int sae_model_shard(const sae_model *m, size_t *begin, size_t *end, size_t *d_sae_total)
{
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "sae_model_shard: m is NULL");
    if (begin)
        *begin = m->shard_begin;
    if (end)
        *end = m->shard_begin + m->d_sae;
    if (d_sae_total)
        *d_sae_total = sae__total_features(m);
    return SAE_OK;
}

int sae__check_whole(const char *fn, const sae_model *m)
{
    if (m && sae__is_shard(m))
        return sae__fail(SAE_E_STATE, "%s: the model is a shard (features [%zu, %zu) of %zu): "
                         "this needs every feature", fn, m->shard_begin,
                         m->shard_begin + m->d_sae, m->d_sae_total);
    return SAE_OK;
}
