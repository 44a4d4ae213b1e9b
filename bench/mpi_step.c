/*
 * mpi_step: what one distributed training step sends and holds, per rank,
 * measured with libsae-mpi's counting communicator (bench/mpi_bench.sh runs
 * it and prints the ratios; results in RESULTS.md).
 *
 *   mpi_step --ranks 1 [shape]                 one process, no communicator
 *   mpirun -np N mpi_step --mode data|features [shape]
 *   mpi_step --simulate N [--rank r] [shape]   rank r of N feature shards, alone
 *   shape: --d-in 768 --d-sae 10000 --batch 4096 --k 32 --steps 3
 *
 * Prints one line "key=value ..." per rank: per-step calls and payload bytes
 * of each collective kind, the formula's bytes, the median step time, the
 * peak resident memory (getrusage) and the state this rank holds (its
 * parameters, gradients and Adam moments: 16 bytes per parameter). TopK,
 * one thread per rank (OPENBLAS_NUM_THREADS=1 is the script's).
 *
 * --simulate N measures ONE real rank r of an N-rank feature-sharded job
 * without MPI and without the other N - 1 shards (a model too big for this
 * machine: d_sae 1,000,000 is 24.6 GB of state): the rank holds only its
 * slice [d_sae r / N, d_sae (r + 1) / N) and runs the real step, whose
 * collectives go through the counting communicator to simulated peers that
 * complete them as the other shards would in shape: the step's header
 * exchange returns every peer's own shard range (so the tiling check passes
 * as in a real job), every other allgather returns N copies of this rank's
 * block (the peers' candidates, statistics and partials), an allreduce adds
 * N - 1 copies of this rank's buffer as the peers' contributions (each shard
 * contributes about 1/N of the reconstruction, so the sum is of the real
 * magnitude), a broadcast leaves the buffer as it is. The payload and count
 * of every call are the real rank's (its buffers have the real sizes); the
 * compute is its slice's; the peak RSS is its process's, with the exchange
 * buffers of N records a real allgather also needs.
 */
#define _GNU_SOURCE /* clock_gettime, RTLD_DEFAULT */
#include "../src/parallel.h" /* header_record: the simulated peers answer it */

#include <libsae/sae.h>
#include <libsae/sae_mpi.h>
#include <mpi.h>

#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct shape {
    size_t d_in, d_sae, batch, k;
    int steps;
} shape;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The simulated peers of --simulate (see the top). */
typedef struct peers {
    int n_ranks;
    size_t d_sae;
    bool header_next; /* the next allgather is a step's header exchange */
} peers;

static int peers_allreduce_f32(void *ctx, float *buf, size_t count)
{
    const float n = (float)((peers *)ctx)->n_ranks;
    for (size_t i = 0; i < count; i++)
        buf[i] *= n;
    return 0;
}

static int peers_allreduce_f64(void *ctx, double *buf, size_t count)
{
    const double n = (double)((peers *)ctx)->n_ranks;
    for (size_t i = 0; i < count; i++)
        buf[i] *= n;
    return 0;
}

static int peers_allgather(void *ctx, const void *send, size_t bytes, void *recv)
{
    peers *p = ctx;
    for (int r = 0; r < p->n_ranks; r++)
        memcpy((unsigned char *)recv + (size_t)r * bytes, send, bytes);
    if (p->header_next && bytes == sizeof(header_record)) {
        for (int r = 0; r < p->n_ranks; r++) { /* rank r's shard */
            header_record h;
            memcpy(&h, (unsigned char *)recv + (size_t)r * bytes, sizeof h);
            size_t begin, end;
            sae_shard_range(p->d_sae, p->n_ranks, r, &begin, &end);
            h.shard_begin = begin;
            h.shard_end = end;
            memcpy((unsigned char *)recv + (size_t)r * bytes, &h, sizeof h);
        }
    }
    p->header_next = false;
    return 0;
}

static int peers_broadcast(void *ctx, void *buf, size_t bytes, int root)
{
    (void)ctx, (void)buf, (void)bytes, (void)root;
    return 0;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "mpi_step: %s: %s (%s)\n", what, sae_status_string(rc), sae_error_detail());
    exit(1);
}

/* The command line (see the top). */
typedef struct options {
    shape s;
    int mode;        /* SAE_PARALLEL_DATA, SAE_PARALLEL_FEATURES, or 0: no communicator */
    int ranks_alone; /* --ranks 1: one process without MPI */
    int simulate;    /* --simulate N: rank sim_rank of N feature shards, alone */
    int sim_rank;
} options;

static options parse_options(int argc, char **argv)
{
    options opt = {{768, 10000, 4096, 32, 3}, 0, 0, 0, 0};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--mode"))
            opt.mode = !strcmp(v, "data") ? SAE_PARALLEL_DATA : SAE_PARALLEL_FEATURES;
        else if (!strcmp(o, "--simulate"))
            opt.simulate = atoi(v);
        else if (!strcmp(o, "--rank"))
            opt.sim_rank = atoi(v);
        else if (!strcmp(o, "--ranks"))
            opt.ranks_alone = atoi(v);
        else if (!strcmp(o, "--d-in"))
            opt.s.d_in = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--d-sae"))
            opt.s.d_sae = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--batch"))
            opt.s.batch = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--k"))
            opt.s.k = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--steps"))
            opt.s.steps = atoi(v);
    }
    if (opt.simulate)
        opt.mode = SAE_PARALLEL_FEATURES;
    if (opt.simulate && (opt.simulate < 2 || opt.sim_rank < 0 || opt.sim_rank >= opt.simulate ||
                         (size_t)opt.simulate > opt.s.d_sae)) {
        fprintf(stderr, "mpi_step: --simulate N >= 2 with 0 <= --rank < N\n");
        exit(1);
    }
    return opt;
}

/* This rank's communicators: world (MPI, or the simulated peers) and
 * counted, which counts every call that goes through world. Not to be
 * moved once open: counted points at world and counts, world at sim. */
typedef struct ranks {
    bool use_mpi;
    int n_ranks, rank;
    peers sim;
    sae_comm world, counted;
    sae_mpi_counts counts;
} ranks;

static void ranks_open(ranks *r, const options *opt, int *argc, char ***argv)
{
    memset(r, 0, sizeof *r);
    r->use_mpi = !opt->ranks_alone && !opt->simulate;
    r->n_ranks = 1;
    r->sim = (peers){opt->simulate, opt->s.d_sae, false};
    int rc = SAE_OK;
    if (opt->simulate) {
        r->world = (sae_comm){sizeof(sae_comm), &r->sim, opt->sim_rank, opt->simulate,
                              peers_allreduce_f32, peers_allreduce_f64, peers_allgather,
                              peers_broadcast};
    } else if (r->use_mpi) {
        MPI_Init(argc, argv);
        if ((rc = sae_mpi_comm_create(&r->world, MPI_COMM_WORLD)) != SAE_OK)
            die("sae_mpi_comm_create", rc);
    } else {
        return; /* one process, no communicator */
    }
    r->n_ranks = r->world.n_ranks;
    r->rank = r->world.rank;
    if ((rc = sae_mpi_counting_create(&r->counted, &r->world, &r->counts)) != SAE_OK)
        die("sae_mpi_counting_create", rc);
}

static void ranks_close(ranks *r)
{
    sae_mpi_counting_free(&r->counted);
    if (r->use_mpi) {
        sae_mpi_comm_free(&r->world);
        MPI_Finalize();
    }
}

/* This rank's TopK model (its shard of features [begin, end) when
 * feature-sharded) and its optimizer on one thread, on the communicator. */
static void make_trainer(const options *opt, ranks *r, size_t begin, size_t end, sae_model **m,
                         sae_optimizer **o)
{
    const shape *s = &opt->s;
    int rc = opt->mode == SAE_PARALLEL_FEATURES
                 ? sae_model_create_shard(m, s->d_in, s->d_sae, begin, end, 1, SAE_ARCH_TOPK,
                                          (double)s->k)
                 : sae_model_create_arch(m, s->d_in, s->d_sae, 1, SAE_ARCH_TOPK, (double)s->k);
    if (rc != SAE_OK || (rc = sae_optimizer_create(o, *m)) != SAE_OK)
        die("creating the model", rc);
    sae_optimizer_set(*o, SAE_OPT_THREADS, 1);
    sae_optimizer_set(*o, SAE_OPT_LR, 1e-4);
    if (opt->mode && (rc = sae_optimizer_set_comm(*o, opt->mode, &r->counted)) != SAE_OK)
        die("sae_optimizer_set_comm", rc);
}

/* The global batch: the same N(0, 1) rows on every rank (rng stream 7). */
static float *make_batch(const shape *s)
{
    float *x = malloc(s->batch * s->d_in * sizeof *x);
    if (!x)
        die("the batch", SAE_E_NOMEM);
    sae_rng g;
    sae_rng_seed(&g, 7, 0);
    for (size_t i = 0; i < s->batch * s->d_in; i++)
        x[i] = (float)sae_rng_normal(&g);
    return x;
}

/* The median time of `steps` steps on the n rows of x, in ms, after a
 * warm-up step; the counts are those of the timed steps. */
static double median_step_ms(sae_model *m, sae_optimizer *o, ranks *r, const float *x, size_t n,
                             int steps)
{
    sae_losses l;
    int rc;
    r->sim.header_next = true;
    if ((rc = sae_step(m, o, x, n, &l)) != SAE_OK) /* warm-up */
        die("sae_step", rc);
    memset(&r->counts, 0, sizeof r->counts);
    double *ms = calloc((size_t)steps, sizeof *ms);
    if (!ms)
        die("the step times", SAE_E_NOMEM);
    for (int i = 0; i < steps; i++) {
        r->sim.header_next = true;
        double t = now();
        if ((rc = sae_step(m, o, x, n, &l)) != SAE_OK)
            die("sae_step", rc);
        ms[i] = 1e3 * (now() - t);
    }
    qsort(ms, (size_t)steps, sizeof *ms, cmp_double);
    double median = ms[steps / 2];
    free(ms);
    return median;
}

/* The rank's line (see the top): features and tokens are its part. */
static void print_rank(const options *opt, const ranks *r, size_t features, size_t tokens,
                       double ms)
{
    const shape *s = &opt->s;
    const int mode = opt->mode, steps = s->steps;
    const sae_mpi_counts *c = &r->counts;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double params = 2.0 * (double)s->d_in * (double)features + (double)features +
                          (double)s->d_in;
    /* the formulas (bytes per step per rank): data, the gradient block;
     * features, the partial reconstructions (n d_in floats) and the TopK
     * candidates (n k floats) */
    const double formula = mode == SAE_PARALLEL_DATA
                               ? 4.0 * (2.0 * (double)s->d_in * (double)s->d_sae +
                                        (double)s->d_sae + (double)s->d_in)
                               : 4.0 * (double)s->batch * ((double)s->d_in + (double)s->k);
    double bytes = 0, calls = 0;
    for (int k = 0; k < 4; k++) {
        bytes += (double)c->bytes[k];
        calls += (double)c->calls[k];
    }
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    printf("simulated=%d mode=%s ranks=%d rank=%d d_in=%zu d_sae=%zu features=%zu tokens=%zu k=%zu "
           "ms=%.1f calls=%.2f bytes=%.0f allreduce_f32_bytes=%.0f allreduce_f64_bytes=%.0f "
           "allgather_bytes=%.0f broadcast_bytes=%.0f formula_bytes=%.0f state_mb=%.1f "
           "batch_mb=%.1f peak_rss_mb=%.1f blas=%s\n",
           opt->simulate, mode == SAE_PARALLEL_DATA ? "data" : mode ? "features" : "none",
           r->n_ranks, r->rank, s->d_in, s->d_sae, features, tokens, s->k, ms, calls / steps,
           bytes / steps, (double)c->bytes[0] / steps, (double)c->bytes[1] / steps,
           (double)c->bytes[2] / steps, (double)c->bytes[3] / steps, formula,
           16.0 * params / 1e6, 4.0 * (double)(s->batch * s->d_in) / 1e6,
           (double)ru.ru_maxrss / 1e3, corename ? corename() : "(not OpenBLAS)");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const options opt = parse_options(argc, argv);
    ranks r;
    ranks_open(&r, &opt, &argc, &argv);
    /* this rank's part: features [begin, end), tokens [t0, t1) */
    size_t begin = 0, end = opt.s.d_sae, t0 = 0, t1 = opt.s.batch;
    if (opt.mode == SAE_PARALLEL_FEATURES)
        sae_shard_range(opt.s.d_sae, r.n_ranks, r.rank, &begin, &end);
    if (opt.mode == SAE_PARALLEL_DATA)
        sae_shard_range(opt.s.batch, r.n_ranks, r.rank, &t0, &t1);
    sae_model *m;
    sae_optimizer *o;
    make_trainer(&opt, &r, begin, end, &m, &o);
    float *x = make_batch(&opt.s);
    double ms = median_step_ms(m, o, &r, x + t0 * opt.s.d_in, t1 - t0, opt.s.steps);
    print_rank(&opt, &r, end - begin, t1 - t0, ms);
    free(x);
    sae_optimizer_free(o);
    sae_model_free(m);
    ranks_close(&r);
    return 0;
}
