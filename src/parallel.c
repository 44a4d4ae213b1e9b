/*
 * The distributed step: what sae_step and sae__forward_backward exchange when
 * an optimizer has communicators attached (sae_optimizer_set_comm). The rules
 * are in parallel.h; the design, mode by mode:
 *
 * Data-parallel (every rank holds the whole model, steps on its rows of the
 * global batch, rank order being token order). The loss averages over the
 * global batch (gradients scaled by 1 / n_global), so the ranks' gradients
 * add up to the single-process gradient: one allreduce_f32 of the gradient
 * block, checked by hash. BatchTopK selects over the global batch (radix
 * histograms summed, ties in global token order), AuxK normalises by the
 * global residual variance, and each feature's last firing is the last over
 * the ranks (allgathered with the statistics).
 *
 * Feature-sharded (rank r holds features [begin_r, end_r), every rank steps
 * on the same x): TopK and AuxK select across shards per token (shard.c),
 * the shards' partial reconstructions are summed (allreduce_f32 of n x d_in,
 * checked by hash) so every rank has x_hat, and dL/db_dec's encoder term is
 * summed over shards; every other gradient is the shard's own. b_dec and its
 * moments stay identical on every rank.
 *
 * A 2-D grid (both): data groups of feature shards. Within a group the
 * feature-sharded exchanges (FEATURES); between the groups, for each shard,
 * the data-parallel ones (DATA): the shard's gradient block, the loss's
 * global batch, AuxK's residual sums, BatchTopK's histograms after the
 * group's and its ties in group order. Every exchange is over one axis, so
 * a failure seen over one is carried to the step's end (carry_on), and the
 * decisions that choose later calls are taken from values every rank of
 * the axis holds alike.
 *
 * Every exchange carries the ranks' statuses (sae__comm_exchange); every
 * allreduce is followed by one.
 */
#include "parallel.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---- attaching ----------------------------------------------------------------- */

void sae__par_free(sae_par *p)
{
    if (!p)
        return;
    sae__free(p->scratch);
    sae__free(p);
}

int sae_optimizer_set_comm(sae_optimizer *o, int mode, const sae_comm *comm)
{
    static const char fn[] = "sae_optimizer_set_comm";
    if (!o)
        return sae__fail(SAE_E_INVALID_ARG, "%s: o is NULL", fn);
    if (mode != SAE_PARALLEL_DATA && mode != SAE_PARALLEL_FEATURES)
        return sae__fail(SAE_E_INVALID_ARG, "%s: mode %d is neither SAE_PARALLEL_DATA (1) nor "
                         "SAE_PARALLEL_FEATURES (2)", fn, mode);
    sae_comm copy;
    memset(&copy, 0, sizeof copy);
    if (comm) {
        int rc = sae__comm_copy(&copy, comm);
        if (rc != SAE_OK)
            return sae__fail(rc, "%s: comm: struct_size %zu (at least %zu), rank %d of %d, or "
                             "a NULL function", fn, comm->struct_size,
                             (size_t)SAE_COMM_SIZE_0_2, comm->rank, comm->n_ranks);
    }
    const sae_par *p = o->par;
    /* a 2-D grid: the other axis's communicator must be another one */
    const sae_comm *other = !p ? NULL : mode == SAE_PARALLEL_DATA ? &p->features : &p->data;
    if (comm && other && other->struct_size && other->ctx == copy.ctx &&
        other->allreduce_f32 == copy.allreduce_f32 && other->allgather == copy.allgather)
        return sae__fail(SAE_E_INVALID_ARG, "%s: comm is the communicator already attached as "
                         "%s: a 2-D grid needs the ranks of the data group (FEATURES) and the "
                         "ranks holding the same shard (DATA), two communicators", fn,
                         mode == SAE_PARALLEL_DATA ? "SAE_PARALLEL_FEATURES"
                                                   : "SAE_PARALLEL_DATA");
    if (!comm && !p)
        return SAE_OK; /* nothing attached, nothing to detach */
    if (!o->par && !(o->par = sae__alloc_zero(sizeof *o->par)))
        return sae__fail(SAE_E_NOMEM, "%s: out of memory", fn);
    if (mode == SAE_PARALLEL_DATA)
        o->par->data = copy;
    else
        o->par->features = copy;
    if (!o->par->data.struct_size && !o->par->features.struct_size) {
        sae__par_free(o->par); /* all detached: a single process again */
        o->par = NULL;
    }
    return SAE_OK;
}

/* ---- scratch ------------------------------------------------------------------- */

static bool reserve(sae_par *p, size_t bytes)
{
    if (bytes <= p->scratch_cap)
        return true;
    unsigned char *fresh = sae__alloc(bytes);
    if (!fresh)
        return false;
    sae__free(p->scratch);
    p->scratch = fresh;
    p->scratch_cap = bytes;
    return true;
}

/* a * b + c bytes, or SIZE_MAX when that overflows (no allocation fits it) */
static size_t bytes_of(size_t a, size_t b, size_t c)
{
    size_t ab, total;
    return sae__mul(a, b, &ab) && sae__add(ab, c, &total) ? total : SIZE_MAX;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Records of every rank plus one of this rank's: the common shape of the
 * exchanges below (mine at the start of the scratch, all after it). */
static size_t exchange_bytes(const sae_comm *c, size_t record)
{
    return bytes_of((size_t)c->n_ranks + 1, record, 0);
}

/* ---- the step's first exchange ------------------------------------------------- */

static uint64_t options_hash(const sae_optimizer *o)
{
    uint64_t h = 0;
    for (size_t i = 0; i < sae__option_count(); i++) {
        const sae_option_info *info = sae__option_at(i);
        if (info->id == SAE_OPT_THREADS)
            continue; /* results do not depend on it */
        double v = sae__option_read(&o->opt, info);
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        h = (h ^ bits) * 0x100000001b3ull + (uint64_t)info->id;
    }
    return h;
}

/* The scratch a step needs at most, so that nothing is allocated once the
 * ranks have started exchanging. */
static size_t step_scratch(const sae_par_step *ps, const sae_model *m, size_t n_tokens,
                           size_t k_aux)
{
    const size_t d_in = m->d_in, d_sae = m->d_sae;
    /* BatchTopK and Matryoshka select over the batch as one block (AuxK's
     * candidates too) */
    const size_t block = sae__batch_selected(m->arch) ? n_tokens : sae__block_size(n_tokens);
    size_t need = 0;
    /* the small exchanges over either axis (a 2-D grid has both) */
    for (int axis = 0; axis < 2; axis++) {
        const sae_comm *c = axis == 0 ? ps->data : ps->features;
        if (!c)
            continue;
        need = max_size(need, exchange_bytes(c, sizeof(header_record)));
        /* the small records: counts, ties, hashes, the statistics (at most
         * SAE_RECORD_HEADER + 96 bytes: stats_record) */
        need = max_size(need, exchange_bytes(c, SAE_RECORD_HEADER + 96));
        /* AuxK's residual sums: d_out wide (a transcoder's output); a grid
         * exchanges them over both axes */
        need = max_size(need, exchange_bytes(c, bytes_of(max_size(d_in, m->d_out) + 3,
                                                         sizeof(double), SAE_RECORD_HEADER)));
    }
    need = max_size(need, bytes_of(65536, sizeof(double), 0)); /* BatchTopK's histograms */
    if (ps->data) /* the statistics with each feature's last firing */
        need = max_size(need, exchange_bytes(ps->data, bytes_of(d_sae, sizeof(uint32_t),
                                                                SAE_RECORD_HEADER + 96)));
    if (ps->features) {
        const sae_comm *c = ps->features;
        const int n = c->n_ranks;
        size_t kk = max_size(m->k, k_aux);
        /* candidates, their cut, and the exchange */
        need = max_size(need, bytes_of(block, kk * sizeof(float) + sizeof(sae_shard_cut),
                                       sae__shard_select_scratch(n, block, kk)));
        /* BatchTopK's per-token ties */
        need = max_size(need, exchange_bytes(c, bytes_of(n_tokens, sizeof(uint32_t),
                                                         SAE_RECORD_HEADER)));
        need = max_size(need, exchange_bytes(c, bytes_of(d_in, sizeof(float), SAE_RECORD_HEADER)));
    }
    return need;
}

/* What a header record disagrees on with this rank's, over one axis (NULL:
 * nothing); expect_begin: where the shard of a FEATURES rank must begin. */
static const char *header_disagreement(const sae_par_step *ps, bool features_axis,
                                       const header_record *h, const header_record *mine,
                                       uint64_t expect_begin)
{
    const bool grid = ps->data && ps->features;
    if (h->arch != mine->arch || h->d_in != mine->d_in || h->k != mine->k ||
        h->d_out != mine->d_out || h->kind != mine->kind || h->widths_hash != mine->widths_hash)
        return "the architecture, kind, d_in, d_out, k or Matryoshka widths";
    if (h->d_sae_total != mine->d_sae_total)
        return "d_sae";
    if (h->steps != mine->steps)
        return "the optimizer's step count";
    if (h->options_hash != mine->options_hash)
        return "the optimizer's options (all but SAE_OPT_THREADS must be equal)";
    if (h->grid_rank != mine->grid_rank || h->grid_ranks != mine->grid_ranks)
        return !grid ? "the mode: some ranks have a DATA and a FEATURES communicator (a 2-D "
                       "grid), others one"
               : features_axis ? "the data group: the ranks of a FEATURES communicator must "
                                 "have the same rank and size in their DATA communicators"
                               : "the shard's place: the ranks of a DATA communicator must have "
                                 "the same rank and size in their FEATURES communicators";
    if (!features_axis && !grid && (h->shard_begin != 0 || h->shard_end != h->d_sae_total))
        return "the model: data-parallel ranks hold the whole model, not a shard";
    if (!features_axis && grid &&
        (h->shard_begin != mine->shard_begin || h->shard_end != mine->shard_end))
        return "the shard: the ranks of a DATA communicator in a 2-D grid hold the same shard";
    if (features_axis && h->shard_begin != expect_begin)
        return "the shards: in rank order they must cover [0, d_sae) without a gap";
    if (features_axis && (h->n_tokens != mine->n_tokens || h->x_hash != mine->x_hash))
        return "x (and y): feature-sharded ranks step on the same batch";
    return NULL;
}

/* Storage for n records of `bytes` each: the scratch when the reservation
 * holds them, else the stack buffer (capacity bytes), else NULL. */
static void *records_storage(const sae_par *p, size_t n, size_t bytes, void *stack,
                             size_t capacity)
{
    if (p->scratch_cap >= n * bytes)
        return p->scratch;
    return n * bytes <= capacity ? stack : NULL;
}

/* What a call returns after an exchange (sae__comm_exchange's rc and
 * agreed), with its error detail: the communicator's failure, this rank's
 * own failure `own` (its detail set where it happened), or another rank's. */
static int exchange_status(int rc, int agreed, int own, const char *fn)
{
    if (rc != SAE_OK)
        return sae__fail(rc, "%s: the communicator failed", fn);
    if (agreed == SAE_OK || agreed == own)
        return agreed;
    return sae__fail(agreed, "%s: another rank failed: %s", fn, sae_status_string(agreed));
}

/* One header exchange over an axis (mine->status: this rank's status so
 * far) and its checks; adds the axis's sums to *ps (features: dead
 * features; data: the global batch and this rank's offset in it). Returns
 * the agreed status, with the detail set. */
static int header_axis(const char *fn, sae_par_step *ps, const sae_comm *c, bool features_axis,
                       const header_record *mine)
{
    header_record stack_records[17];
    header_record *all = records_storage(ps->par, (size_t)c->n_ranks, sizeof *all,
                                         stack_records, sizeof stack_records);
    if (!all)
        return SAE_E_NOMEM; /* cannot even tell the others (a transport would time out) */
    int agreed;
    int rc = sae__comm_exchange(c, mine, sizeof *mine, all, &agreed);
    if ((rc = exchange_status(rc, agreed, mine->status, fn)) != SAE_OK)
        return rc;
    /* the ranks must agree on what they train */
    uint64_t expect_begin = 0;
    for (size_t r = 0; r < (size_t)c->n_ranks; r++) {
        const header_record *h = &all[r];
        const char *what = header_disagreement(ps, features_axis, h, mine, expect_begin);
        if (what)
            return sae__fail(SAE_E_INVALID_ARG, "%s: rank %zu and rank %d of the %s "
                             "communicator disagree on %s", fn, r, c->rank,
                             features_axis ? "FEATURES" : "DATA", what);
        expect_begin = h->shard_end;
        if (features_axis) {
            ps->n_dead_total += h->n_dead;
        } else {
            ps->n_global += h->n_tokens;
            if (r < (size_t)c->rank)
                ps->token_offset += h->n_tokens;
        }
    }
    if (features_axis && expect_begin != mine->d_sae_total)
        return sae__fail(SAE_E_INVALID_ARG, "%s: the shards end at feature %zu, not at d_sae %zu",
                         fn, (size_t)expect_begin, (size_t)mine->d_sae_total);
    return SAE_OK;
}

/* A 2-D grid's last word on a status: the FEATURES ranks exchange what each
 * learnt over its DATA communicator, so that every rank of the grid returns
 * the same status (the first failure of the lowest shard that saw one). */
static int grid_agree(const char *fn, sae_par_step *ps, int status, bool *broken)
{
    *broken = false;
    typedef struct status_record { int32_t status, pad; } status_record;
    status_record mine = {status, 0}, stack_records[17];
    const sae_comm *c = ps->features;
    status_record *all = records_storage(ps->par, (size_t)c->n_ranks, sizeof mine,
                                         stack_records, sizeof stack_records);
    if (!all)
        return SAE_E_NOMEM;
    int agreed;
    int rc = sae__comm_exchange(c, &mine, sizeof mine, all, &agreed);
    if (rc != SAE_OK) {
        *broken = true;
        return sae__fail(rc, "%s: the communicator failed", fn);
    }
    if (agreed != SAE_OK && agreed != status)
        return sae__fail(agreed, "%s: another rank failed: %s", fn, sae_status_string(agreed));
    return agreed;
}

int sae__par_begin(sae_optimizer *o, const sae_model *m, const float *x, const float *y,
                   size_t n_tokens, size_t k_aux, int status, sae_par_step *ps)
{
    static const char fn[] = "sae_step";
    sae_par *p = o->par;
    memset(ps, 0, sizeof *ps);
    ps->par = p;
    ps->data = p->data.struct_size ? &p->data : NULL;
    ps->features = p->features.struct_size ? &p->features : NULL;
    const bool grid = ps->data && ps->features;

    header_record mine;
    memset(&mine, 0, sizeof mine);
    if (status == SAE_OK && !reserve(p, step_scratch(ps, m, n_tokens, k_aux)))
        status = sae__fail(SAE_E_NOMEM, "%s: out of memory for the exchanges of a "
                           "distributed step", fn);
    /* a rank whose rows hold NaN must say so now, before any rank starts the
     * exchanges of the pass (features: every rank has the same x) */
    if (status == SAE_OK && ps->data && !ps->features && !sae__all_finite(x, n_tokens * m->d_in))
        status = sae__check_finite(fn, "x", x, n_tokens * m->d_in);
    if (status == SAE_OK && ps->features) {
        if (!sae__all_finite(x, n_tokens * m->d_in))
            status = sae__check_finite(fn, "x", x, n_tokens * m->d_in);
        else /* and a transcoder's target y (checked finite by the caller) */
            mine.x_hash = sae__hash_f32(x, n_tokens * m->d_in) ^
                          (y ? sae__hash_f32(y, n_tokens * m->d_out) * 0x9e3779b97f4a7c15ull
                             : 0);
    }
    mine.arch = m->arch;
    mine.n_tokens = n_tokens;
    mine.d_in = m->d_in;
    mine.d_sae_total = sae__total_features(m);
    mine.shard_begin = m->shard_begin;
    mine.shard_end = m->shard_begin + m->d_sae;
    mine.k = m->k;
    mine.widths_hash = sae__matryoshka_widths_hash(m);
    mine.d_out = m->d_out;
    mine.kind = (uint64_t)m->kind;
    mine.steps = o->steps;
    mine.options_hash = options_hash(o);
    for (size_t i = 0; ps->features && i < o->d_sae; i++)
        mine.n_dead += o->since_fired[i] >= o->opt.dead_window;

    /* features first (the group's shards and batch), then data (the groups'
     * batches and the same shard in each); a grid ends with a FEATURES
     * exchange of what each rank learnt, so that all return the same */
    int agreed = status;
    if (ps->features) {
        mine.status = agreed;
        mine.grid_rank = grid ? ps->data->rank : -1;
        mine.grid_ranks = grid ? ps->data->n_ranks : 0;
        agreed = header_axis(fn, ps, ps->features, true, &mine);
        if (!grid && agreed != SAE_OK)
            return agreed;
    }
    if (ps->data) {
        mine.status = agreed;
        mine.grid_rank = grid ? ps->features->rank : -1;
        mine.grid_ranks = grid ? ps->features->n_ranks : 0;
        agreed = header_axis(fn, ps, ps->data, false, &mine);
        if (!grid && agreed != SAE_OK)
            return agreed;
    }
    if (grid) {
        const int before = agreed;
        bool broken;
        agreed = grid_agree(fn, ps, before, &broken);
        /* this group's FEATURES communicator failed at its last word while the
         * header was fine: the other groups go on with the step and make its
         * DATA calls, so this rank does too, carrying the failure to the
         * step's end (where every rank learns it) */
        if (broken && before == SAE_OK)
            ps->status = agreed;
        else if (agreed != SAE_OK)
            return agreed;
    }
    if (!ps->data) { /* the same batch on every shard */
        ps->n_global = n_tokens;
        ps->token_offset = 0;
    }
    return SAE_OK;
}

/* ---- hooks of the pass ------------------------------------------------------- */

/* A failure seen in an exchange of the pass (the communicator's, or another
 * rank's agreed by it). One mode: every rank of the communicator saw it and
 * stops the pass there (the step's last exchange tells nothing new). A 2-D
 * grid: the ranks of the other axis have not seen it and will make their
 * exchanges, so the rank records it (ps->status, carried by every later
 * exchange), keeps what it has (the hooks leave their outputs in a state
 * the pass can go on from) and goes on joining every exchange until the
 * step's last, where every rank of the grid learns it. */
static int carry_on(sae_par_step *ps, int rc)
{
    if (rc == SAE_OK || !(ps->data && ps->features))
        return rc;
    if (ps->status == SAE_OK)
        ps->status = rc;
    return SAE_OK;
}

/* An exchange of small records from the scratch: mine at the start, all
 * after it. Returns the agreed status, or SAE_E_COMM. */
static int exchange_small(sae_par_step *ps, const sae_comm *c, void *mine, size_t bytes,
                          void **all)
{
    unsigned char *base = ps->par->scratch;
    memcpy(base, mine, bytes);
    int32_t st = ps->status;
    memcpy(base, &st, sizeof st);
    *all = base + bytes;
    int agreed;
    int rc = sae__comm_exchange(c, base, bytes, *all, &agreed);
    return rc != SAE_OK ? rc : agreed;
}

/* Records of a size known only at run time (a header with the status, then
 * a payload): record_payload starts this rank's at the start of the scratch
 * and returns where its payload goes; exchange_records then exchanges the
 * records of `bytes` each and points *all at every rank's, in rank order,
 * after it; record_of is rank r's payload there (unaligned: read with
 * memcpy). Returns the agreed status, or the communicator's failure. */
static unsigned char *record_payload(sae_par_step *ps)
{
    unsigned char *mine = ps->par->scratch;
    int32_t st = ps->status;
    memset(mine, 0, SAE_RECORD_HEADER);
    memcpy(mine, &st, sizeof st);
    return mine + SAE_RECORD_HEADER;
}

static int exchange_records(sae_par_step *ps, const sae_comm *c, size_t bytes,
                            const unsigned char **all)
{
    unsigned char *mine = ps->par->scratch;
    *all = mine + bytes;
    int agreed;
    int rc = sae__comm_exchange(c, mine, bytes, mine + bytes, &agreed);
    return rc != SAE_OK ? rc : agreed;
}

static const unsigned char *record_of(const unsigned char *all, size_t bytes, size_t r)
{
    return all + r * bytes + SAE_RECORD_HEADER;
}

/* Records of the small exchanges (each starts with the status). */
typedef struct hash_record {
    int32_t status, pad;
    uint64_t hash;
} hash_record;

typedef struct count_record {
    int32_t status, pad;
    double count;
} count_record;

typedef struct ties_record {
    int32_t status, pad;
    double above, ties, min_positive;
} ties_record;

/* The sum over ranks of a count_record's count (whole numbers: exact). */
static double count_total(const sae_comm *c, const void *all)
{
    double total = 0.0;
    for (int r = 0; r < c->n_ranks; r++) {
        count_record q;
        memcpy(&q, (const unsigned char *)all + (size_t)r * sizeof q, sizeof q);
        total += q.count;
    }
    return total;
}

/* Rows of allreduced buffers (count_b floats at b too, unless count_b is 0)
 * made the same on every rank: hash, exchange the hashes (with the
 * statuses), take rank 0's where they differ (the same decision for both). */
static int settle2(sae_par_step *ps, const sae_comm *c, float *a, size_t count_a, float *b,
                   size_t count_b)
{
    uint64_t hash = sae__hash_f32(a, count_a);
    if (count_b)
        hash ^= sae__hash_f32(b, count_b) * 0x9e3779b97f4a7c15ull;
    hash_record rec = {ps->status, 0, hash};
    void *all;
    int rc = exchange_small(ps, c, &rec, sizeof rec, &all);
    if (rc != SAE_OK) /* (a grid goes on with its own sums) */
        return carry_on(ps, rc);
#ifdef SAE_TESTING
    if (ps->par->no_settle)
        return SAE_OK;
#endif
    bool replaced;
    rc = sae__comm_same_or_root(c, a, count_a, all, sizeof rec, offsetof(hash_record, hash),
                                &replaced);
    if (rc == SAE_OK && count_b)
        rc = sae__comm_same_or_root(c, b, count_b, all, sizeof rec, offsetof(hash_record, hash),
                                    &replaced);
    return carry_on(ps, rc);
}

static int settle(sae_par_step *ps, const sae_comm *c, float *buf, size_t count)
{
    return settle2(ps, c, buf, count, NULL, 0);
}

int sae__par_topk_block(sae_par_step *ps, const sae_model *m, const sae_encoded *out, size_t rows,
                        const float *norms)
{
    if (!ps || !ps->features || m->arch != SAE_ARCH_TOPK)
        return SAE_OK;
    const size_t k = m->k, d = m->d_sae, chunks = out->mask_chunks;
    float *cand = (float *)(void *)ps->par->scratch;
    sae_shard_cut *cut = (sae_shard_cut *)(void *)(cand + rows * k);
    void *scratch = cut + rows;
    memset(cand, 0, rows * k * sizeof(float));
    for (size_t t = 0; t < rows; t++) { /* the local TopK's values */
        const float *f = out->f + t * d;
        size_t n = 0;
        for (size_t c = 0; c < chunks; c++)
            for (unsigned bits = out->mask[t * chunks + c]; bits; bits &= bits - 1)
                cand[t * k + n++] = f[16 * c + (size_t)__builtin_ctz(bits)];
    }
    int agreed;
    int rc = sae__shard_select(ps->features, ps->status, rows, k, cand, cut, scratch, &agreed);
    if (rc != SAE_OK || agreed != SAE_OK) /* (a grid goes on with the local TopK) */
        return carry_on(ps, rc != SAE_OK ? rc : agreed);
    for (size_t t = 0; t < rows; t++) { /* keep what the whole model keeps */
        float *f = out->f + t * d;
        uint16_t *mask = out->mask + t * chunks;
        sae_shard_cut left = cut[t];
        double l1 = 0.0;
        size_t active = 0;
        for (size_t c = 0; c < chunks; c++) {
            unsigned kept = 0;
            for (unsigned bits = mask[c]; bits; bits &= bits - 1) {
                unsigned bit = (unsigned)__builtin_ctz(bits);
                size_t i = 16 * c + bit;
                if (sae__shard_keep(&f[i], 1, left) == 0)
                    continue; /* f[i] is 0 now */
                if (!(f[i] > left.kth))
                    left.allow--;
                kept |= 1u << bit;
                l1 += (double)f[i] * norms[i];
                active++;
            }
            mask[c] = (uint16_t)kept;
        }
        out->l1[t] = l1;
        out->active[t] = active;
        out->pairs[t] = active;
    }
    return SAE_OK;
}

int sae__par_aux_block(sae_par_step *ps, const sae_aux_picks *aux, size_t rows, size_t k_aux)
{
    if (!ps || !ps->features || !aux->count)
        return SAE_OK;
    float *cand = (float *)(void *)ps->par->scratch;
    sae_shard_cut *cut = (sae_shard_cut *)(void *)(cand + rows * k_aux);
    void *scratch = cut + rows;
    memset(cand, 0, rows * k_aux * sizeof(float));
    for (size_t t = 0; t < rows; t++)
        memcpy(cand + t * k_aux, aux->fval + t * aux->cap, aux->count[t] * sizeof(float));
    int agreed;
    int rc = sae__shard_select(ps->features, ps->status, rows, k_aux, cand, cut, scratch,
                               &agreed);
    if (rc != SAE_OK || agreed != SAE_OK) /* (a grid goes on with the local picks) */
        return carry_on(ps, rc != SAE_OK ? rc : agreed);
    for (size_t t = 0; t < rows; t++) { /* the picks in feature order, compacted */
        uint32_t *feat = aux->feat + t * aux->cap;
        float *fval = aux->fval + t * aux->cap;
        size_t n = 0;
        sae_shard_cut left = cut[t];
        for (size_t j = 0; j < aux->count[t]; j++) {
            float v = fval[j];
            if (sae__shard_keep(&v, 1, left) == 0)
                continue;
            if (!(v > left.kth))
                left.allow--;
            feat[n] = feat[j];
            fval[n] = fval[j];
            n++;
        }
        aux->count[t] = n;
    }
    return SAE_OK;
}

int sae__par_sparse_choice(sae_par_step *ps, size_t pairs, size_t rows, size_t d_sae_total,
                           bool *sparse)
{
    count_record rec = {ps->status, 0, (double)pairs};
    void *all;
    int rc = exchange_small(ps, ps->features, &rec, sizeof rec, &all);
    if (rc != SAE_OK) { /* a grid's shards that saw it all take the dense path */
        *sparse = false;
        return carry_on(ps, rc);
    }
    double total = count_total(ps->features, all);
    *sparse = total <= SAE_SPARSE_MAX_DENSITY * (double)rows * (double)d_sae_total;
    return SAE_OK;
}

int sae__par_reconstruct(sae_par_step *ps, float *x_hat, size_t rows, size_t d_out)
{
    if (!ps || !ps->features)
        return SAE_OK;
    int rc = sae__comm_allreduce_f32(ps->features, x_hat, rows * d_out);
    if (rc != SAE_OK) /* (a grid: the communicator is broken, its later calls fail too) */
        return carry_on(ps, sae__fail(rc, "sae_step: the communicator failed"));
    return settle(ps, ps->features, x_hat, rows * d_out);
}

int sae__par_reconstruct_levels(sae_par_step *ps, float *a, size_t count_a, float *b,
                                size_t count_b)
{
    int rc = sae__comm_allreduce_f32(ps->features, a, count_a);
    if (rc == SAE_OK && count_b)
        rc = sae__comm_allreduce_f32(ps->features, b, count_b);
    if (rc != SAE_OK) /* (a grid: the communicator is broken, its later calls fail too) */
        return carry_on(ps, sae__fail(rc, "sae_step: the communicator failed"));
    return settle2(ps, ps->features, a, count_a, b, count_b);
}

typedef struct error_task {
    sae_workspace *ws;
    const float *target;
    float target_scale;
    size_t t0, d_out;
    float scale;
} error_task;

static void error_rows_range(void *ctx, size_t begin, size_t end, int tid)
{
    (void)tid;
    const error_task *e = ctx;
    const size_t d_out = e->d_out;
    for (size_t t = begin; t < end; t++) {
        float *g = e->ws->dxh + (e->t0 + t) * d_out;
        const float *y = e->target + t * d_out;
        double l2 = 0.0;
        for (size_t j = 0; j < d_out; j++) {
            float v = g[j] - y[j] * e->target_scale;
            l2 += (double)v * v;
            g[j] = v * e->scale;
        }
        e->ws->l2_tok[e->t0 + t] = l2;
    }
}

void sae__par_error_rows(sae_workspace *ws, const float *target, float target_scale, size_t t0,
                         size_t count, size_t d_out, float scale, sae_pool *pool)
{
    error_task e = {ws, target, target_scale, t0, d_out, scale};
    sae__parallel_for(pool, count, error_rows_range, &e);
}

int sae__par_auxk_sums(sae_par_step *ps, size_t *picks, double *sumsq, double *sum_e,
                       size_t d_in)
{
    if (!ps)
        return SAE_OK;
    if (!ps->data) { /* the same residuals everywhere: agree on whether any shard picked */
        count_record rec = {ps->status, 0, (double)*picks};
        void *all;
        int rc = exchange_small(ps, ps->features, &rec, sizeof rec, &all);
        if (rc == SAE_OK)
            *picks = (size_t)count_total(ps->features, all);
        return rc;
    }
    /* data-parallel: [status | picks, sumsq, sum_e...] added in rank order
     * (a grid: each shard's picks over the groups, and the groups' residuals) */
    const sae_comm *c = ps->data;
    const size_t count = d_in + 2, bytes = SAE_RECORD_HEADER + count * sizeof(double);
    double *v = (double *)(void *)record_payload(ps);
    v[0] = (double)*picks;
    v[1] = *sumsq;
    memcpy(v + 2, sum_e, d_in * sizeof(double));
    const unsigned char *all;
    int rc = exchange_records(ps, c, bytes, &all);
    if (rc != SAE_OK && (rc = carry_on(ps, rc)) != SAE_OK)
        return rc;
    for (size_t k = 0; k < count && ps->status == SAE_OK; k++) {
        double s = 0.0;
        for (int r = 0; r < c->n_ranks; r++) {
            double w;
            memcpy(&w, record_of(all, bytes, (size_t)r) + k * sizeof w, sizeof w);
            s += w;
        }
        v[k] = s;
    }
    if (ps->features) {
        /* a grid: the picks add over the shards; the residual sums are the
         * same on every shard of a group but for the transport's rounding:
         * every shard takes shard 0's, so that the group decides alike. A
         * failure seen by any shard: no AuxK on any (the step fails). */
        record_payload(ps); /* this rank's status, before v */
        rc = exchange_records(ps, ps->features, bytes, &all);
        if (rc != SAE_OK || ps->status != SAE_OK) {
            *picks = 0;
            return carry_on(ps, rc);
        }
        double total = 0.0;
        for (int r = 0; r < ps->features->n_ranks; r++) {
            double w;
            memcpy(&w, record_of(all, bytes, (size_t)r), sizeof w);
            total += w;
        }
        memcpy(v, record_of(all, bytes, 0), count * sizeof(double));
        v[0] = total;
    }
    *picks = (size_t)v[0];
    *sumsq = v[1];
    memcpy(sum_e, v + 2, d_in * sizeof(double));
    return SAE_OK;
}

int sae__par_enc_term(sae_par_step *ps, const sae_model *m, const float *g_b_enc, float *g_b_dec)
{
    const size_t d_in = m->d_in;
    const sae_comm *c = ps->features;
    const size_t bytes = SAE_RECORD_HEADER + d_in * sizeof(float);
    float *term = (float *)(void *)record_payload(ps);
    cblas_sgemv(CblasRowMajor, CblasTrans, (int)m->d_sae, (int)d_in, 1.0f, sae__w_enc_t(m),
                (int)d_in, g_b_enc, 1, 0.0f, term, 1);
    const unsigned char *all;
    int rc = exchange_records(ps, c, bytes, &all);
    if (rc != SAE_OK)
        return carry_on(ps, rc);
    for (size_t j = 0; j < d_in; j++) {
        float sum = 0.0f;
        for (int r = 0; r < c->n_ranks; r++) {
            float v;
            memcpy(&v, record_of(all, bytes, (size_t)r) + j * sizeof v, sizeof v);
            sum += v;
        }
        g_b_dec[j] -= sum;
    }
    return SAE_OK;
}

/* ---- BatchTopK ------------------------------------------------------------------- */

/* The communicator a one-mode batch-wide selection spans. */
static const sae_comm *batch_comm(const sae_par_step *ps)
{
    return ps->data ? ps->data : ps->features;
}

/* One exchange of a grid's BatchTopK over c: statuses as ever; *valid says
 * whether the records arrived (an agreed failure still brings them: the
 * rank carries it on; a failed communicator does not). */
static void grid_exchange(sae_par_step *ps, const sae_comm *c, const void *mine, size_t bytes,
                          const unsigned char **all, bool *valid)
{
    unsigned char *base = ps->par->scratch;
    memcpy(base, mine, bytes);
    int32_t st = ps->status;
    memcpy(base, &st, sizeof st);
    *all = base + bytes;
    int agreed;
    int rc = sae__comm_exchange(c, base, bytes, base + bytes, &agreed);
    *valid = rc == SAE_OK;
    carry_on(ps, rc != SAE_OK ? sae__fail(rc, "sae_step: the communicator failed") : agreed);
}

int sae__par_batch_hist(sae_par_step *ps, uint64_t *hist)
{
    if (!ps)
        return SAE_OK;
    double *h = (double *)(void *)ps->par->scratch; /* counts below 2^53: exact sums */
    for (size_t b = 0; b < 65536; b++)
        h[b] = (double)hist[b];
    if (!(ps->data && ps->features)) {
        int rc = sae__comm_allreduce_f64(batch_comm(ps), h, 65536);
        if (rc != SAE_OK)
            return sae__fail(rc, "sae_step: the communicator failed");
        for (size_t b = 0; b < 65536; b++)
            hist[b] = (uint64_t)h[b];
        return SAE_OK;
    }
    /* a grid: the group's counts over FEATURES, then the groups' over DATA
     * (exact: every rank of the grid gets the same counts). The walk that
     * follows chooses the next calls, so every rank must see the same counts
     * even when a communicator fails: a group whose FEATURES communicator
     * failed adds nothing (all its ranks fail at the same call); a DATA
     * communicator that failed has a rank in every group, and a FEATURES
     * exchange of flags tells every group, whose ranks then all take empty
     * counts. */
    int rc = sae__comm_allreduce_f64(ps->features, h, 65536);
    if (rc != SAE_OK) {
        memset(h, 0, 65536 * sizeof *h);
        carry_on(ps, sae__fail(rc, "sae_step: the communicator failed"));
    }
    const int rc_data = sae__comm_allreduce_f64(ps->data, h, 65536);
    if (rc_data != SAE_OK)
        carry_on(ps, sae__fail(rc_data, "sae_step: the communicator failed"));
    for (size_t b = 0; b < 65536; b++)
        hist[b] = (uint64_t)h[b];
    count_record rec = {ps->status, 0, rc_data != SAE_OK ? 1.0 : 0.0};
    const unsigned char *all;
    bool valid;
    grid_exchange(ps, ps->features, &rec, sizeof rec, &all, &valid);
    if (valid ? count_total(ps->features, all) > 0.0 : rc_data != SAE_OK)
        memset(hist, 0, 65536 * sizeof *hist);
    return SAE_OK;
}

/* Each token's share of `allowed` ties at the K-th value among the ranks of
 * c, in token order, then rank (feature) order: ties (rows counts) in and
 * out. */
static int ties_by_token(sae_par_step *ps, const sae_comm *c, size_t *ties, size_t rows,
                         size_t allowed)
{
    const size_t n = (size_t)c->n_ranks, me = (size_t)c->rank;
    const size_t bytes = SAE_RECORD_HEADER + rows * sizeof(uint32_t);
    unsigned char *mine = record_payload(ps);
    for (size_t t = 0; t < rows; t++) {
        uint32_t v = (uint32_t)ties[t];
        memcpy(mine + t * sizeof v, &v, sizeof v);
    }
    const unsigned char *recs;
    int rc = exchange_records(ps, c, bytes, &recs);
    if (rc != SAE_OK) {
        memset(ties, 0, rows * sizeof *ties); /* (a grid goes on keeping no tie) */
        return carry_on(ps, rc);
    }
    size_t before = 0; /* ties of earlier tokens, all ranks */
    for (size_t t = 0; t < rows; t++) {
        size_t at_t = 0, mine_t = 0;
        for (size_t r = 0; r < n; r++) {
            uint32_t v;
            memcpy(&v, record_of(recs, bytes, r) + t * sizeof v, sizeof v);
            if (r < me)
                at_t += v;
            if (r == me)
                mine_t = v;
        }
        size_t start = before + at_t;
        size_t left = allowed > start ? allowed - start : 0;
        ties[t] = left < mine_t ? left : mine_t;
        for (size_t r = 0; r < n; r++) {
            uint32_t v;
            memcpy(&v, record_of(recs, bytes, r) + t * sizeof v, sizeof v);
            before += v;
        }
    }
    return SAE_OK;
}

/* ties[t] = min(ties[t], what is left of `left`), in token order. */
static void take_in_order(size_t *ties, size_t rows, size_t left)
{
    for (size_t t = 0; t < rows; t++) {
        size_t take = ties[t] < left ? ties[t] : left;
        ties[t] = take;
        left -= take;
    }
}

/* A grid's ties: the global order is group, token, then shard. The group's
 * totals over FEATURES, the groups' over DATA (the groups before this one
 * take theirs first), then the group agrees on its allowance (shard 0's:
 * the same decisions on every shard whatever the transport did), and its
 * shards share it token by token. */
static int grid_batch_ties(sae_par_step *ps, size_t *ties, size_t rows, size_t K, bool have_kth,
                           size_t *above_total, float *min_positive)
{
    size_t tie_total = 0;
    for (size_t t = 0; t < rows; t++)
        tie_total += ties[t];
    double sums[2][3] = {{0.0, 0.0, 0.0}, {0.0, 0.0, 0.0}}; /* group, grid: above, ties, min */
    double ties_before = 0.0;
    ties_record rec = {ps->status, 0, (double)*above_total, (double)tie_total,
                       (double)*min_positive};
    for (int axis = 0; axis < 2; axis++) {
        const sae_comm *c = axis == 0 ? ps->features : ps->data;
        const unsigned char *all;
        bool valid;
        grid_exchange(ps, c, &rec, sizeof rec, &all, &valid);
        for (int r = 0; valid && r < c->n_ranks; r++) {
            ties_record q;
            memcpy(&q, all + (size_t)r * sizeof q, sizeof q);
            sums[axis][0] += q.above;
            sums[axis][1] += q.ties;
            if (axis == 1 && r < c->rank)
                ties_before += q.ties;
            if (q.min_positive > 0.0 && (sums[axis][2] == 0.0 || q.min_positive < sums[axis][2]))
                sums[axis][2] = q.min_positive;
        }
        /* (a group whose FEATURES exchange failed adds nothing over DATA) */
        rec = (ties_record){ps->status, 0, sums[axis][0], sums[axis][1], sums[axis][2]};
    }
    const double group_ties = sums[0][1], above = sums[1][0];
    double allowed = have_kth && (double)K > above ? (double)K - above : 0.0;
    allowed = allowed > ties_before ? allowed - ties_before : 0.0;
    ties_record agree = {ps->status, 0, above, allowed, sums[1][2]};
    const unsigned char *all;
    bool valid;
    grid_exchange(ps, ps->features, &agree, sizeof agree, &all, &valid);
    if (valid) /* shard 0's */
        memcpy(&agree, all, sizeof agree);
    *above_total = (size_t)agree.above;
    *min_positive = (float)agree.min_positive;
    if (agree.ties >= group_ties) /* room for every tie of the group */
        return SAE_OK;
    if (agree.ties == 0.0) {
        memset(ties, 0, rows * sizeof *ties);
        return SAE_OK;
    }
    return ties_by_token(ps, ps->features, ties, rows, (size_t)agree.ties);
}

int sae__par_batch_ties(sae_par_step *ps, size_t *ties, size_t rows, size_t K, bool have_kth,
                        size_t *above_total, float *min_positive)
{
    if (ps->data && ps->features)
        return grid_batch_ties(ps, ties, rows, K, have_kth, above_total, min_positive);
    const sae_comm *c = batch_comm(ps);
    const size_t n = (size_t)c->n_ranks, me = (size_t)c->rank;
    size_t tie_total = 0;
    for (size_t t = 0; t < rows; t++)
        tie_total += ties[t];
    ties_record rec = {ps->status, 0, (double)*above_total, (double)tie_total,
                       (double)*min_positive};
    void *all;
    int rc = exchange_small(ps, c, &rec, sizeof rec, &all);
    if (rc != SAE_OK)
        return rc;
    double above = 0.0, ties_all = 0.0, ties_before = 0.0;
    float min_pos = 0.0f;
    for (size_t r = 0; r < n; r++) {
        ties_record q;
        memcpy(&q, (unsigned char *)all + r * sizeof rec, sizeof q);
        above += q.above;
        ties_all += q.ties;
        if (r < me)
            ties_before += q.ties;
        if (q.min_positive > 0.0 && (min_pos == 0.0f || (float)q.min_positive < min_pos))
            min_pos = (float)q.min_positive;
    }
    *above_total = (size_t)above;
    *min_positive = min_pos;
    size_t allowed = have_kth ? K - (size_t)above : 0;
    if (ps->data) { /* token order is rank order: the ranks before take theirs first */
        take_in_order(ties, rows, (double)allowed > ties_before ? allowed - (size_t)ties_before
                                                                : 0);
        return SAE_OK;
    }
    if ((double)allowed >= ties_all)
        return SAE_OK; /* features with room for every tie: all are kept */
    /* features, more ties than room: token order first, then shard order */
    return ties_by_token(ps, c, ties, rows, allowed);
}

/* ---- the end of the step ----------------------------------------------------------- */

/* The statistics every rank brings to the last exchange of a step. */
typedef struct stats_record {
    int32_t status, pad;
    uint64_t hash;        /* data: of the summed gradient; features: of W_skip's gradient */
    double sumsq;         /* features: the shard's squared gradient norm, without the
                             replicated tensors' (b_dec, W_skip) */
    double l1, l2, active, aux_loss;
    double gate, extra;   /* Gated's sparsity term and auxiliary reconstruction */
    float param_absmax, m1_absmax, m2_max, pad2;
} stats_record;

_Static_assert(sizeof(stats_record) <= SAE_RECORD_HEADER + 96,
               "step_scratch reserves SAE_RECORD_HEADER + 96 bytes per statistics record");

static stats_record stats_at(const unsigned char *all, size_t stride, int r)
{
    stats_record q;
    memcpy(&q, all + (size_t)r * stride, sizeof q);
    return q;
}

int sae__par_reduce(sae_par_step *ps, sae_optimizer *o, const sae_model *m, int status,
                    sae_backward_result *res, float *param_absmax, float *m1_absmax,
                    float *m2_max)
{
    static const char fn[] = "sae_step";
    const bool grid = ps->data && ps->features;
    if (ps->status == SAE_OK)
        ps->status = status;
    stats_record mine;
    memset(&mine, 0, sizeof mine);
    /* what the ranks add up: over DATA (the groups' batches) then over
     * FEATURES (the shards' features) */
    sae_loss_sums sums = res->sums;
    double aux = res->aux_loss, grad_sumsq = res->grad_sumsq;
    int rc;
    if (ps->data) {
        /* one allreduce of the (shard's) gradient block, then its hash and
         * each feature's last firing (global token positions, 1-based) */
        const sae_comm *c = ps->data;
        const size_t d_sae = o->d_sae, stride = sizeof mine + d_sae * sizeof(uint32_t);
        if ((rc = sae__comm_allreduce_f32(c, o->grad, o->lay.total)) != SAE_OK &&
            (rc = carry_on(ps, sae__fail(rc, "%s: the communicator failed", fn))) != SAE_OK)
            return rc;
        mine.status = ps->status;
        mine.l1 = sums.l1;
        mine.l2 = sums.l2;
        mine.active = sums.active;
        mine.gate = sums.gate;
        mine.extra = sums.extra;
        mine.aux_loss = aux;
        mine.sumsq = sae__sumsq_hash_f32(o->grad, o->lay.total, &mine.hash);
        unsigned char *rec = o->par->scratch, *all = rec + stride;
        memcpy(rec, &mine, sizeof mine);
        for (size_t i = 0; i < d_sae; i++) {
            uint64_t last = o->ws.last_fired[i];
            uint32_t global = last ? (uint32_t)(ps->token_offset + last) : 0;
            memcpy(rec + sizeof mine + i * sizeof global, &global, sizeof global);
        }
        int agreed;
        rc = sae__comm_exchange(c, rec, stride, all, &agreed);
        rc = exchange_status(rc, agreed, ps->status, fn);
        if (rc != SAE_OK) {
            if (!grid) /* (a grid: the FEATURES exchange below tells the group) */
                return rc;
            ps->status = rc;
        } else {
            memset(&sums, 0, sizeof sums);
            aux = 0.0;
            for (int r = 0; r < c->n_ranks; r++) {
                stats_record q = stats_at(all, stride, r);
                sums.l1 += q.l1;
                sums.active += q.active;
                sums.l2 += q.l2;
                sums.gate += q.gate;
                sums.extra += q.extra;
                aux += q.aux_loss;
            }
            bool replaced = false;
#ifdef SAE_TESTING
            if (!o->par->no_settle)
#endif
                rc = sae__comm_same_or_root(c, o->grad, o->lay.total, all, stride,
                                            offsetof(stats_record, hash), &replaced);
            if (rc != SAE_OK && (rc = carry_on(ps, sae__fail(rc, "%s: the communicator "
                                                             "failed", fn))) != SAE_OK)
                return rc;
            uint64_t unused;
            grad_sumsq = replaced ? sae__sumsq_hash_f32(o->grad, o->lay.total, &unused)
                                  : mine.sumsq;
            for (size_t i = 0; i < d_sae; i++) {
                uint32_t last = 0;
                for (int r = 0; r < c->n_ranks; r++) {
                    uint32_t v;
                    memcpy(&v, all + (size_t)r * stride + sizeof mine + i * sizeof v, sizeof v);
                    last = v > last ? v : last;
                }
                o->ws.last_fired[i] = last;
            }
        }
    }
    if (ps->features) {
        /* b_dec's and W_skip's gradients are the same on every shard (the
         * summed reconstruction's; a grid's, summed over DATA on each): counted
         * once, and checked by hash (a BLAS or a transport may round
         * differently on another host) */
        const sae_comm *c = ps->features;
        float *g_b_dec = o->grad + m->lay.b_dec, *g_skip = o->grad + m->lay.w_skip;
        uint64_t h_b_dec, h_skip = 0;
        double rep_sumsq = sae__sumsq_hash_f32(g_b_dec, m->d_out, &h_b_dec);
        if (m->lay.w_skip_count)
            rep_sumsq += sae__sumsq_hash_f32(g_skip, m->lay.w_skip_count, &h_skip);
        memset(&mine, 0, sizeof mine);
        mine.status = ps->status;
        mine.hash = h_b_dec ^ h_skip * 0x9e3779b97f4a7c15ull;
        mine.sumsq = grad_sumsq - rep_sumsq;
        mine.l1 = sums.l1;
        mine.active = sums.active;
        mine.gate = sums.gate; /* Gated's sparsity term: each shard's features */
        mine.param_absmax = *param_absmax;
        mine.m1_absmax = *m1_absmax;
        mine.m2_max = *m2_max;
        const size_t stride = sizeof mine;
        unsigned char *rec = o->par->scratch, *all = rec + stride;
        memcpy(rec, &mine, sizeof mine);
        int agreed;
        rc = sae__comm_exchange(c, rec, stride, all, &agreed);
        if ((rc = exchange_status(rc, agreed, ps->status, fn)) != SAE_OK)
            return rc;
        double sumsq = 0.0;
        sums.l1 = sums.active = sums.gate = 0.0;
        for (int r = 0; r < c->n_ranks; r++) {
            stats_record q = stats_at(all, stride, r);
            sumsq += q.sumsq;
            sums.l1 += q.l1;
            sums.active += q.active;
            sums.gate += q.gate;
            *param_absmax = fmaxf(*param_absmax, q.param_absmax);
            *m1_absmax = fmaxf(*m1_absmax, q.m1_absmax);
            *m2_max = fmaxf(*m2_max, q.m2_max);
        }
        /* l2, Gated's auxiliary reconstruction and AuxK: every shard has the
         * whole reconstruction (a grid: summed over the groups above) */
        bool replaced = false;
#ifdef SAE_TESTING
        if (!o->par->no_settle)
#endif
        {
            rc = sae__comm_same_or_root(c, g_b_dec, m->d_out, all, stride,
                                        offsetof(stats_record, hash), &replaced);
            if (rc == SAE_OK && m->lay.w_skip_count)
                rc = sae__comm_same_or_root(c, g_skip, m->lay.w_skip_count, all, stride,
                                            offsetof(stats_record, hash), &replaced);
        }
        if (rc != SAE_OK)
            return sae__fail(rc, "%s: the communicator failed", fn);
        if (replaced) {
            uint64_t unused;
            rep_sumsq = sae__sumsq_hash_f32(g_b_dec, m->d_out, &unused);
            if (m->lay.w_skip_count)
                rep_sumsq += sae__sumsq_hash_f32(g_skip, m->lay.w_skip_count, &unused);
        }
        grad_sumsq = sumsq + rep_sumsq;
    }
    res->sums = sums;
    res->aux_loss = aux;
    res->grad_sumsq = grad_sumsq;
    return SAE_OK;
}

int sae__par_all_true(sae_par_step *ps, bool mine, bool *all_true)
{
    /* over DATA, then (a grid) over FEATURES the groups' answers; a grid's
     * failure over DATA goes on to the FEATURES exchange, so that every rank
     * returns the same */
    double bad = mine ? 0.0 : 1.0;
    int rc = SAE_OK;
    for (int axis = 0; axis < 2; axis++) {
        const sae_comm *c = axis == 0 ? ps->data : ps->features;
        if (!c)
            continue;
        count_record rec = {ps->status, 0, bad};
        void *all;
        rc = exchange_small(ps, c, &rec, sizeof rec, &all);
        if (rc != SAE_OK && (axis == 1 || !ps->features))
            return rc;
        if (rc != SAE_OK)
            ps->status = rc;
        else
            bad = count_total(c, all);
    }
    *all_true = bad == 0.0;
    return rc;
}

/* ---- resampling ------------------------------------------------------------------ */

typedef struct resample_record {
    int32_t status, pad;
    double n_dead, n_live, live_norm_sum;
    uint64_t x_hash, n_tokens;
} resample_record;

/* One exchange of a resampling's first records over c (the storage: the
 * scratch, or the stack for a few ranks); the agreed status. */
static int resample_exchange(const char *fn, const sae_par *p, const sae_comm *c,
                             const resample_record *mine, resample_record **all,
                             resample_record *stack, size_t stack_count)
{
    const size_t n = (size_t)c->n_ranks;
    *all = stack;
    if (p->scratch_cap >= n * sizeof(resample_record))
        *all = (resample_record *)(void *)p->scratch;
    else if (n > stack_count)
        return SAE_E_NOMEM; /* cannot even tell the others */
    int agreed;
    int rc = sae__comm_exchange(c, mine, sizeof *mine, *all, &agreed);
    if ((rc = exchange_status(rc, agreed, mine->status, fn)) != SAE_OK)
        return rc;
    for (size_t r = 0; r < n; r++)
        if ((*all)[r].x_hash != mine->x_hash || (*all)[r].n_tokens != mine->n_tokens)
            return sae__fail(SAE_E_INVALID_ARG, "%s: rank %zu and rank %d disagree on x: every "
                             "rank resamples from the same sample", fn, r, c->rank);
    return SAE_OK;
}

int sae__par_resample_begin(sae_optimizer *o, const sae_model *m, const float *x,
                            size_t n_tokens, int status, size_t *n_dead, size_t *n_live,
                            double *live_norm_sum, size_t *dead_before, sae_par_step *ps)
{
    static const char fn[] = "sae_resample_dead";
    sae_par *p = o->par;
    memset(ps, 0, sizeof *ps);
    ps->par = p;
    ps->features = p->features.struct_size ? &p->features : NULL;
    /* a grid: every group resamples its shards from the same sample, and the
     * groups check they agree (x, the dead features of their replicas) */
    const bool grid = ps->features && p->data.struct_size;
    if (grid)
        ps->data = &p->data;
    const sae_comm *c = ps->features ? ps->features : &p->data;
    const size_t block = sae__block_size(n_tokens), k = m->k;
    size_t need = exchange_bytes(c, sizeof(resample_record));
    if (ps->features) {
        need = max_size(need, exchange_bytes(c, sizeof(hash_record)));
        if (m->arch == SAE_ARCH_TOPK)
            need = max_size(need, bytes_of(block, k * sizeof(float) + sizeof(sae_shard_cut),
                                           sae__shard_select_scratch(c->n_ranks, block, k)));
    }
    if (grid)
        need = max_size(need, exchange_bytes(ps->data, sizeof(resample_record)));
    if (status == SAE_OK && !reserve(p, need))
        status = sae__fail(SAE_E_NOMEM, "%s: out of memory for the exchanges", fn);
    resample_record mine = {status, 0, (double)*n_dead, (double)*n_live, *live_norm_sum,
                            status == SAE_OK ? sae__hash_f32(x, n_tokens * m->d_in) : 0,
                            n_tokens};
    resample_record stack_records[17], *all;
    int rc = resample_exchange(fn, p, c, &mine, &all, stack_records, 17);
    if (rc != SAE_OK && !grid)
        return rc;
    double dead = 0.0, live = 0.0, norms = 0.0, before = 0.0;
    for (size_t r = 0; rc == SAE_OK && r < (size_t)c->n_ranks; r++) {
        dead += all[r].n_dead;
        live += all[r].n_live;
        norms += all[r].live_norm_sum;
        if (r < (size_t)c->rank)
            before += all[r].n_dead;
    }
    if (grid) {
        /* DATA: the same sample, the same dead features in every group; then
         * the group's last word, so that every rank returns the same */
        resample_record group = {rc, 0, dead, live, norms, mine.x_hash, n_tokens};
        /* (a group that failed joins too: the others wait for it) */
        int rc_data = resample_exchange(fn, p, ps->data, &group, &all, stack_records, 17);
        for (size_t r = 0; rc == SAE_OK && rc_data == SAE_OK && r < (size_t)ps->data->n_ranks;
             r++)
            if (all[r].n_dead != dead)
                rc_data = sae__fail(SAE_E_INVALID_ARG, "%s: data groups %zu and %d hold other "
                                    "dead features: the replicas of a shard must be the same",
                                    fn, r, ps->data->rank);
        if (rc == SAE_OK)
            rc = rc_data;
        bool broken;
        if ((rc = grid_agree(fn, ps, rc, &broken)) != SAE_OK)
            return rc;
    }
    if (ps->features) { /* the shards' features together */
        *n_dead = (size_t)dead;
        *n_live = (size_t)live;
        *live_norm_sum = norms;
        *dead_before = (size_t)before;
    } else {
        *dead_before = 0; /* data-parallel ranks hold the same features */
    }
    return SAE_OK;
}

int sae__par_resample_weights(sae_par_step *ps, double *cum, size_t n_tokens, int status)
{
    static const char fn[] = "sae_resample_dead";
    if (!ps || !(ps->data && ps->features))
        return status;
    if (ps->status == SAE_OK)
        ps->status = status;
    /* every group weighed the same sample with the same model: the same bits
     * but for the transport's sums, so the groups take group 0's where their
     * hashes differ */
    uint64_t hash = 0;
    for (size_t t = 0; t < n_tokens; t++) {
        uint64_t bits;
        memcpy(&bits, &cum[t], sizeof bits);
        hash = (hash ^ bits) * 0x100000001b3ull + t;
    }
    hash_record rec = {ps->status, 0, hash};
    void *all;
    int rc = exchange_small(ps, ps->data, &rec, sizeof rec, &all);
    if (rc == SAE_OK) {
        bool differ = false;
        for (int r = 0; r < ps->data->n_ranks; r++) {
            hash_record q;
            memcpy(&q, (const unsigned char *)all + (size_t)r * sizeof q, sizeof q);
            differ |= q.hash != rec.hash;
        }
        if (differ && (rc = sae__comm_broadcast(ps->data, cum, n_tokens * sizeof *cum, 0)) !=
                          SAE_OK)
            rc = sae__fail(rc, "%s: the communicator failed", fn);
    } else if (rc != ps->status) {
        rc = sae__fail(rc, "%s: another rank failed: %s", fn, sae_status_string(rc));
    }
    bool broken;
    return grid_agree(fn, ps, rc, &broken);
}

int sae__par_topk_rows(sae_par_step *ps, float *f, size_t rows, size_t d, size_t k)
{
    float *cand = (float *)(void *)ps->par->scratch;
    sae_shard_cut *cut = (sae_shard_cut *)(void *)(cand + rows * k);
    void *scratch = cut + rows;
    memset(cand, 0, rows * k * sizeof(float));
    for (size_t t = 0; t < rows; t++) {
        size_t n = 0;
        for (size_t i = 0; i < d && n < k; i++)
            if (f[t * d + i] > 0.0f)
                cand[t * k + n++] = f[t * d + i];
    }
    int agreed;
    int rc = sae__shard_select(ps->features, ps->status, rows, k, cand, cut, scratch, &agreed);
    if (rc != SAE_OK || agreed != SAE_OK)
        return rc != SAE_OK ? rc : agreed;
    for (size_t t = 0; t < rows; t++)
        sae__shard_keep(f + t * d, d, cut[t]);
    return SAE_OK;
}
