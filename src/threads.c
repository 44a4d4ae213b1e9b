/*
 * The library's own threads: a small pool per optimizer that runs one task on
 * every thread and returns when all are done.
 *
 * Why not OpenMP: a step alternates CBLAS calls (whose threads belong to the
 * BLAS library) with the library's loops. libgomp's idle workers spin for
 * about 300000 pause instructions before sleeping, and that spinning took a
 * core from OpenBLAS's worker during the next SGEMM (11% slower SGEMMs were
 * measured); its wait policy can only be set for the whole process through the
 * environment. These workers spin for a few microseconds, then block on a
 * condition variable, so between tasks they cost the BLAS nothing.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Iterations of the spin before blocking: a few microseconds, enough to catch
 * the next task of a step's back-to-back loops without a sleep. */
#define SPIN_ITERATIONS 2000

struct sae_pool {
    int n_threads;                 /* including the caller */
    pid_t owner;                   /* the process that started the workers */
    pthread_t *workers;            /* n_threads - 1 */
    pthread_mutex_t mutex;
    pthread_cond_t start, done;
    int made;    /* of mutex, start, done: how many are initialised (in that order) */
    int started; /* workers running */
    atomic_uint_fast64_t generation; /* bumped for each task */
    atomic_int remaining;            /* workers still running the task */
    bool stop;
    sae_task_fn fn;
    void *ctx;
};

typedef struct worker_arg {
    sae_pool *pool;
    int tid;
} worker_arg;

static _Thread_local bool is_worker; /* set on the pools' workers */

bool sae__pool_worker(void)
{
    return is_worker;
}

static void *worker_main(void *arg_)
{
    is_worker = true;
    worker_arg *arg = arg_;
    sae_pool *p = arg->pool;
    const int tid = arg->tid;
    sae__free(arg);
    uint_fast64_t seen = 0;
    for (;;) {
        for (int i = 0; i < SPIN_ITERATIONS &&
                        atomic_load_explicit(&p->generation, memory_order_acquire) == seen;
             i++)
            cpu_relax();
        pthread_mutex_lock(&p->mutex);
        while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen && !p->stop)
            pthread_cond_wait(&p->start, &p->mutex);
        bool stop = p->stop;
        pthread_mutex_unlock(&p->mutex);
        if (stop)
            return NULL;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        p->fn(p->ctx, tid, p->n_threads);
        if (atomic_fetch_sub_explicit(&p->remaining, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mutex);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mutex);
        }
    }
}

static void stop_workers(sae_pool *p, int started)
{
    pthread_mutex_lock(&p->mutex);
    p->stop = true;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mutex);
    for (int k = 0; k < started; k++)
        pthread_join(p->workers[k], NULL);
}

/* The workers of a pool of p->n_threads > 1 and what they synchronise with.
 * On failure p->made and p->started say how far it got (sae__pool_free
 * undoes exactly that). */
static int start_workers(sae_pool *p)
{
    const int n = p->n_threads;
    p->workers = sae__alloc((size_t)(n - 1) * sizeof(pthread_t));
    if (p->workers && pthread_mutex_init(&p->mutex, NULL) == 0)
        p->made = 1;
    if (p->made == 1 && pthread_cond_init(&p->start, NULL) == 0)
        p->made = 2;
    if (p->made == 2 && pthread_cond_init(&p->done, NULL) == 0)
        p->made = 3;
    if (p->made < 3)
        return sae__fail(SAE_E_NOMEM, "cannot make a pool of %d threads", n);
    for (int k = 0; k < n - 1; k++) {
        worker_arg *arg = sae__alloc(sizeof *arg);
        if (arg) {
            arg->pool = p;
            arg->tid = k + 1;
        }
        if (!arg || pthread_create(&p->workers[k], NULL, worker_main, arg) != 0) {
            sae__free(arg);
            /* out of threads is out of a resource, like memory */
            return sae__fail(SAE_E_NOMEM, "cannot start thread %d of %d", k + 1, n);
        }
        p->started = k + 1;
    }
    return SAE_OK;
}

int sae__pool_create(sae_pool **out, int n_threads)
{
    *out = NULL;
    if (n_threads < 1)
        return sae__fail(SAE_E_INVALID_ARG, "a pool of %d threads", n_threads);
    sae_pool *p = sae__alloc_zero(sizeof *p);
    if (!p)
        return sae__fail(SAE_E_NOMEM, "out of memory for a thread pool");
    p->n_threads = n_threads;
    p->owner = getpid();
    atomic_init(&p->generation, 0);
    atomic_init(&p->remaining, 0);
    int rc = n_threads > 1 ? start_workers(p) : SAE_OK;
    if (rc != SAE_OK) {
        sae__pool_free(p); /* the one teardown, of the pool as far as it got */
        return rc;
    }
    *out = p;
    return SAE_OK;
}

void sae__pool_free(sae_pool *p)
{
    if (!p)
        return;
    /* In a forked child the workers, and the waiters the copied condition
     * variables still count, belong to the parent: destroying them would wait
     * for threads that do not exist here, so the child only frees memory. */
    if (p->owner == getpid()) {
        if (p->started > 0)
            stop_workers(p, p->started);
        if (p->made >= 3)
            pthread_cond_destroy(&p->done);
        if (p->made >= 2)
            pthread_cond_destroy(&p->start);
        if (p->made >= 1)
            pthread_mutex_destroy(&p->mutex);
    }
    sae__free(p->workers);
    sae__free(p);
}

int sae__pool_threads(const sae_pool *p) { return p ? p->n_threads : 1; }

void sae__pool_run(sae_pool *p, sae_task_fn fn, void *ctx)
{
    if (!p || p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    if (p->owner != getpid()) {
        /* a forked child has no workers: run every share here, so the work is
         * split (and results come out) exactly as in the parent */
        for (int tid = 0; tid < p->n_threads; tid++)
            fn(ctx, tid, p->n_threads);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->remaining, p->n_threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mutex);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mutex);
    fn(ctx, 0, p->n_threads);
    for (int i = 0; i < SPIN_ITERATIONS &&
                    atomic_load_explicit(&p->remaining, memory_order_acquire) > 0;
         i++)
        cpu_relax();
    if (atomic_load_explicit(&p->remaining, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mutex);
        while (atomic_load_explicit(&p->remaining, memory_order_acquire) > 0)
            pthread_cond_wait(&p->done, &p->mutex);
        pthread_mutex_unlock(&p->mutex);
    }
}

int sae__resolve_threads(int requested)
{
    if (requested > 0)
        return requested;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n < 1024 ? n : 1024) : 1;
}

typedef struct range_task {
    size_t n;
    sae_range_fn fn;
    void *ctx;
} range_task;

static void run_range(void *ctx, int tid, int n_threads)
{
    const range_task *t = ctx;
    size_t begin, end;
    sae__share(t->n, tid, n_threads, &begin, &end);
    if (begin < end)
        t->fn(t->ctx, begin, end, tid);
}

void sae__parallel_for(sae_pool *p, size_t n, sae_range_fn fn, void *ctx)
{
    range_task t = {n, fn, ctx};
    sae__pool_run(p, run_range, &t);
}
