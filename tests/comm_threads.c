/* The thread communicator double (comm_threads.h). */
#include "comm_threads.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum call_kind { CALL_F32, CALL_F64, CALL_GATHER, CALL_BCAST };
static const char *const kind_names[] = {"allreduce_f32", "allreduce_f64", "allgather",
                                         "broadcast"};

typedef struct call_slot {
    enum call_kind kind;
    size_t count; /* elements (allreduce) or bytes */
    int root;
    const void *send;
    void *recv;
} call_slot;

typedef struct rank_ctx {
    test_comm_group *g;
    int rank;
    uint64_t calls;
    uint64_t fail_at; /* UINT64_MAX: never */
} rank_ctx;

struct test_comm_group {
    int n;
    unsigned flags;
    int skew_offset; /* skewed: rank r starts its sums at rank r + skew_offset */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned long generation;
    int arrived;
    int broken;
    call_slot *slots;
    rank_ctx *ranks;
};

/* Wait until every rank has arrived; 1 if the group is (or becomes) broken first. */
static int rendezvous(test_comm_group *g)
{
    pthread_mutex_lock(&g->mu);
    int rc = 0;
    if (g->broken) {
        rc = 1;
    } else {
        unsigned long gen = g->generation;
        if (++g->arrived == g->n) {
            g->arrived = 0;
            g->generation++;
            pthread_cond_broadcast(&g->cv);
        } else {
            while (gen == g->generation && !g->broken)
                pthread_cond_wait(&g->cv, &g->mu);
            rc = gen == g->generation; /* broken before everyone came */
        }
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

static void break_group(test_comm_group *g)
{
    pthread_mutex_lock(&g->mu);
    g->broken = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* The sum over ranks of element k, in rank order from `first`. */
static void sum_f32(const test_comm_group *g, int first, size_t count, float *out)
{
    for (size_t k = 0; k < count; k++) {
        float s = 0.0f;
        for (int q = 0; q < g->n; q++)
            s += ((const float *)g->slots[(first + q) % g->n].send)[k];
        out[k] = s;
    }
}

static void sum_f64(const test_comm_group *g, int first, size_t count, double *out)
{
    for (size_t k = 0; k < count; k++) {
        double s = 0.0;
        for (int q = 0; q < g->n; q++)
            s += ((const double *)g->slots[(first + q) % g->n].send)[k];
        out[k] = s;
    }
}

static int collective(rank_ctx *rc, call_slot call)
{
    test_comm_group *g = rc->g;
    const int me = rc->rank;
    if (rc->calls++ == rc->fail_at) {
        break_group(g);
        return 1;
    }
    g->slots[me] = call;
    if (rendezvous(g))
        return 1;
    for (int q = 0; q < g->n; q++) {
        const call_slot *s = &g->slots[q];
        if (s->kind != call.kind || s->count != call.count || s->root != call.root) {
            fprintf(stderr, "comm_threads: rank %d calls %s(count %zu, root %d) while rank %d "
                    "calls %s(count %zu, root %d)\n", me, kind_names[call.kind], call.count,
                    call.root, q, kind_names[s->kind], s->count, s->root);
            abort();
        }
    }
    const int first = g->flags & TEST_COMM_SKEWED ? (me + g->skew_offset) % g->n : 0;
    void *result = NULL;
    switch (call.kind) {
    case CALL_F32:
    case CALL_F64: {
        size_t elem = call.kind == CALL_F32 ? sizeof(float) : sizeof(double);
        result = malloc(call.count * elem);
        if (!result) {
            fprintf(stderr, "comm_threads: out of memory\n");
            abort();
        }
        if (call.kind == CALL_F32)
            sum_f32(g, first, call.count, result);
        else
            sum_f64(g, first, call.count, result);
        break;
    }
    case CALL_GATHER: /* nobody writes a send buffer during the call */
        for (int q = 0; q < g->n; q++)
            memcpy((char *)call.recv + (size_t)q * call.count, g->slots[q].send, call.count);
        break;
    case CALL_BCAST: /* only the root's buffer is read */
        if (me != call.root)
            memcpy(call.recv, g->slots[call.root].send, call.count);
        break;
    }
    int failed = rendezvous(g); /* everyone has read what it needs */
    if (!failed && result)
        memcpy(call.recv, result, call.count * (call.kind == CALL_F32 ? sizeof(float)
                                                                      : sizeof(double)));
    free(result);
    return failed;
}

static int do_f32(void *ctx, float *buf, size_t count)
{
    return collective(ctx, (call_slot){CALL_F32, count, 0, buf, buf});
}

static int do_f64(void *ctx, double *buf, size_t count)
{
    return collective(ctx, (call_slot){CALL_F64, count, 0, buf, buf});
}

static int do_gather(void *ctx, const void *send, size_t bytes, void *recv)
{
    return collective(ctx, (call_slot){CALL_GATHER, bytes, 0, send, recv});
}

static int do_bcast(void *ctx, void *buf, size_t bytes, int root)
{
    return collective(ctx, (call_slot){CALL_BCAST, bytes, root, buf, buf});
}

test_comm_group *test_comm_group_create(int n_ranks, unsigned flags)
{
    test_comm_group *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->n = n_ranks;
    g->flags = flags;
    g->slots = calloc((size_t)n_ranks, sizeof *g->slots);
    g->ranks = calloc((size_t)n_ranks, sizeof *g->ranks);
    if (!g->slots || !g->ranks) {
        test_comm_group_free(g);
        return NULL;
    }
    for (int r = 0; r < n_ranks; r++)
        g->ranks[r] = (rank_ctx){g, r, 0, UINT64_MAX};
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    return g;
}

void test_comm_group_free(test_comm_group *g)
{
    if (!g)
        return;
    if (g->slots && g->ranks) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
    }
    free(g->slots);
    free(g->ranks);
    free(g);
}

void test_comm_get(test_comm_group *g, int rank, sae_comm *out)
{
    memset(out, 0, sizeof *out);
    out->struct_size = sizeof *out;
    out->ctx = &g->ranks[rank];
    out->rank = rank;
    out->n_ranks = g->n;
    out->allreduce_f32 = do_f32;
    out->allreduce_f64 = do_f64;
    out->allgather = do_gather;
    out->broadcast = do_bcast;
}

void test_comm_fail_at(test_comm_group *g, int rank, uint64_t call)
{
    g->ranks[rank].fail_at = call;
}

uint64_t test_comm_calls(const test_comm_group *g, int rank) { return g->ranks[rank].calls; }

typedef struct run_arg {
    test_comm_group *g;
    int rank;
    test_comm_fn fn;
    void *arg;
} run_arg;

static void *run_rank(void *p)
{
    run_arg *a = p;
    sae_comm comm;
    test_comm_get(a->g, a->rank, &comm);
    a->fn(a->rank, &comm, a->arg);
    return NULL;
}

void test_comm_run(test_comm_group *g, test_comm_fn fn, void *arg)
{
    pthread_t *threads = calloc((size_t)g->n, sizeof *threads);
    run_arg *args = calloc((size_t)g->n, sizeof *args);
    if (!threads || !args) {
        fprintf(stderr, "comm_threads: out of memory\n");
        abort();
    }
    for (int r = 0; r < g->n; r++) {
        args[r] = (run_arg){g, r, fn, arg};
        if (pthread_create(&threads[r], NULL, run_rank, &args[r]) != 0) {
            fprintf(stderr, "comm_threads: cannot start a thread\n");
            abort();
        }
    }
    for (int r = 0; r < g->n; r++)
        pthread_join(threads[r], NULL);
    free(args);
    free(threads);
}

/* ---- the 2-D grid ------------------------------------------------------------ */

struct test_comm_grid {
    int groups, shards;
    test_comm_group **features; /* one per data group */
    test_comm_group **data;     /* one per shard */
};

test_comm_grid *test_comm_grid_create(int groups, int shards, unsigned flags)
{
    test_comm_grid *grid = calloc(1, sizeof *grid);
    if (!grid)
        return NULL;
    grid->groups = groups;
    grid->shards = shards;
    grid->features = calloc((size_t)groups, sizeof *grid->features);
    grid->data = calloc((size_t)shards, sizeof *grid->data);
    bool ok = grid->features && grid->data;
    for (int g = 0; ok && g < groups; g++) {
        ok = (grid->features[g] = test_comm_group_create(shards, flags)) != NULL;
        if (ok) /* skewed: each group's sums in another order too */
            grid->features[g]->skew_offset = g;
    }
    for (int s = 0; ok && s < shards; s++) {
        /* skewed: each shard's DATA sums in another order, so that the shards
         * of a group get different bits too */
        ok = (grid->data[s] = test_comm_group_create(groups, flags)) != NULL;
        if (ok)
            grid->data[s]->skew_offset = s;
    }
    if (!ok) {
        test_comm_grid_free(grid);
        return NULL;
    }
    return grid;
}

void test_comm_grid_free(test_comm_grid *grid)
{
    if (!grid)
        return;
    for (int g = 0; grid->features && g < grid->groups; g++)
        test_comm_group_free(grid->features[g]);
    for (int s = 0; grid->data && s < grid->shards; s++)
        test_comm_group_free(grid->data[s]);
    free(grid->features);
    free(grid->data);
    free(grid);
}

test_comm_group *test_comm_grid_features(test_comm_grid *grid, int group)
{
    return grid->features[group];
}

test_comm_group *test_comm_grid_data(test_comm_grid *grid, int shard) { return grid->data[shard]; }

typedef struct grid_arg {
    test_comm_grid *grid;
    int group, shard;
    test_grid_fn fn;
    void *arg;
} grid_arg;

static void *run_grid_rank(void *p)
{
    grid_arg *a = p;
    sae_comm features, data;
    test_comm_get(a->grid->features[a->group], a->shard, &features);
    test_comm_get(a->grid->data[a->shard], a->group, &data);
    a->fn(a->group, a->shard, &features, &data, a->arg);
    return NULL;
}

void test_comm_grid_run(test_comm_grid *grid, test_grid_fn fn, void *arg)
{
    const int n = grid->groups * grid->shards;
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    grid_arg *args = calloc((size_t)n, sizeof *args);
    if (!threads || !args) {
        fprintf(stderr, "comm_threads: out of memory\n");
        abort();
    }
    for (int r = 0; r < n; r++) {
        args[r] = (grid_arg){grid, r / grid->shards, r % grid->shards, fn, arg};
        if (pthread_create(&threads[r], NULL, run_grid_rank, &args[r]) != 0) {
            fprintf(stderr, "comm_threads: cannot start a thread\n");
            abort();
        }
    }
    for (int r = 0; r < n; r++)
        pthread_join(threads[r], NULL);
    free(args);
    free(threads);
}
