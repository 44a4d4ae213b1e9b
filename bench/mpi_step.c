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

int main(int argc, char **argv)
{
    shape s = {768, 10000, 4096, 32, 3};
    int mode = 0, ranks_alone = 0, simulate = 0, sim_rank = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--mode"))
            mode = !strcmp(v, "data") ? SAE_PARALLEL_DATA : SAE_PARALLEL_FEATURES;
        else if (!strcmp(o, "--simulate"))
            simulate = atoi(v);
        else if (!strcmp(o, "--rank"))
            sim_rank = atoi(v);
        else if (!strcmp(o, "--ranks"))
            ranks_alone = atoi(v);
        else if (!strcmp(o, "--d-in"))
            s.d_in = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--d-sae"))
            s.d_sae = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--batch"))
            s.batch = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--k"))
            s.k = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--steps"))
            s.steps = atoi(v);
    }
    if (simulate)
        mode = SAE_PARALLEL_FEATURES;
    const bool use_mpi = !ranks_alone && !simulate;
    if (use_mpi)
        MPI_Init(&argc, &argv);
    sae_comm world = {0}, counted = {0};
    sae_mpi_counts counts;
    memset(&counts, 0, sizeof counts);
    int n_ranks = 1, rank = 0;
    peers sim = {simulate, s.d_sae, false};
    if (simulate) {
        if (simulate < 2 || sim_rank < 0 || sim_rank >= simulate || (size_t)simulate > s.d_sae) {
            fprintf(stderr, "mpi_step: --simulate N >= 2 with 0 <= --rank < N\n");
            return 1;
        }
        world = (sae_comm){sizeof(sae_comm), &sim, sim_rank, simulate, peers_allreduce_f32,
                           peers_allreduce_f64, peers_allgather, peers_broadcast};
        n_ranks = simulate;
        rank = sim_rank;
        int rc = sae_mpi_counting_create(&counted, &world, &counts);
        if (rc != SAE_OK)
            die("sae_mpi_counting_create", rc);
    }
    if (use_mpi) {
        int rc = sae_mpi_comm_create(&world, MPI_COMM_WORLD);
        if (rc != SAE_OK)
            die("sae_mpi_comm_create", rc);
    }
    if (use_mpi) {
        n_ranks = world.n_ranks;
        rank = world.rank;
        int rc = sae_mpi_counting_create(&counted, &world, &counts);
        if (rc != SAE_OK)
            die("sae_mpi_counting_create", rc);
    }
    /* this rank's part: features [begin, end), tokens [t0, t1) */
    size_t begin = 0, end = s.d_sae, t0 = 0, t1 = s.batch;
    if (mode == SAE_PARALLEL_FEATURES)
        sae_shard_range(s.d_sae, n_ranks, rank, &begin, &end);
    if (mode == SAE_PARALLEL_DATA)
        sae_shard_range(s.batch, n_ranks, rank, &t0, &t1);
    sae_model *m;
    sae_optimizer *o;
    int rc = mode == SAE_PARALLEL_FEATURES
                 ? sae_model_create_shard(&m, s.d_in, s.d_sae, begin, end, 1, SAE_ARCH_TOPK, (double)s.k)
                 : sae_model_create_arch(&m, s.d_in, s.d_sae, 1, SAE_ARCH_TOPK, (double)s.k);
    if (rc != SAE_OK || (rc = sae_optimizer_create(&o, m)) != SAE_OK)
        die("creating the model", rc);
    sae_optimizer_set(o, SAE_OPT_THREADS, 1);
    sae_optimizer_set(o, SAE_OPT_LR, 1e-4);
    if (mode && (rc = sae_optimizer_set_comm(o, mode, &counted)) != SAE_OK)
        die("sae_optimizer_set_comm", rc);
    /* the global batch: the same N(0, 1) rows on every rank (rng stream 7) */
    float *x = malloc(s.batch * s.d_in * sizeof *x);
    sae_rng g;
    sae_rng_seed(&g, 7, 0);
    for (size_t i = 0; i < s.batch * s.d_in; i++)
        x[i] = (float)sae_rng_normal(&g);
    sae_losses l;
    const float *mine = x + t0 * s.d_in;
    sim.header_next = true;
    if ((rc = sae_step(m, o, mine, t1 - t0, &l)) != SAE_OK) /* warm-up */
        die("sae_step", rc);
    memset(&counts, 0, sizeof counts);
    double *ms = calloc((size_t)s.steps, sizeof *ms);
    for (int i = 0; i < s.steps; i++) {
        sim.header_next = true;
        double t = now();
        if ((rc = sae_step(m, o, mine, t1 - t0, &l)) != SAE_OK)
            die("sae_step", rc);
        ms[i] = 1e3 * (now() - t);
    }
    qsort(ms, (size_t)s.steps, sizeof *ms, cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double params = 2.0 * (double)s.d_in * (double)(end - begin) + (double)(end - begin) +
                          (double)s.d_in;
    /* the formulas (bytes per step per rank): data, the gradient block;
     * features, the partial reconstructions (n d_in floats) and the TopK
     * candidates (n k floats) */
    const double formula = mode == SAE_PARALLEL_DATA
                               ? 4.0 * (2.0 * (double)s.d_in * (double)s.d_sae + (double)s.d_sae +
                                        (double)s.d_in)
                               : 4.0 * (double)s.batch * ((double)s.d_in + (double)s.k);
    double bytes = 0, calls = 0;
    for (int k = 0; k < 4; k++) {
        bytes += (double)counts.bytes[k];
        calls += (double)counts.calls[k];
    }
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    printf("simulated=%d mode=%s ranks=%d rank=%d d_in=%zu d_sae=%zu features=%zu tokens=%zu k=%zu "
           "ms=%.1f calls=%.2f bytes=%.0f allreduce_f32_bytes=%.0f allreduce_f64_bytes=%.0f "
           "allgather_bytes=%.0f broadcast_bytes=%.0f formula_bytes=%.0f state_mb=%.1f "
           "batch_mb=%.1f peak_rss_mb=%.1f blas=%s\n",
           simulate, mode == SAE_PARALLEL_DATA ? "data" : mode ? "features" : "none", n_ranks, rank, s.d_in,
           s.d_sae, end - begin, t1 - t0, s.k, ms[s.steps / 2], calls / s.steps, bytes / s.steps,
           (double)counts.bytes[0] / s.steps, (double)counts.bytes[1] / s.steps,
           (double)counts.bytes[2] / s.steps, (double)counts.bytes[3] / s.steps, formula,
           16.0 * params / 1e6, 4.0 * (double)(s.batch * s.d_in) / 1e6, (double)ru.ru_maxrss / 1e3,
           corename ? corename() : "(not OpenBLAS)");
    fflush(stdout);
    free(ms);
    free(x);
    sae_optimizer_free(o);
    sae_model_free(m);
    sae_mpi_counting_free(&counted);
    if (use_mpi) {
        sae_mpi_comm_free(&world);
        MPI_Finalize();
    }
    return 0;
}
