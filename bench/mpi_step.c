/*
 * mpi_step: what one distributed training step sends and holds, per rank,
 * measured with libsae-mpi's counting communicator (bench/mpi_bench.sh runs
 * it and prints the ratios; results in RESULTS.md).
 *
 *   mpi_step --ranks 1 [shape]                 one process, no communicator
 *   mpirun -np N mpi_step --mode data|features [shape]
 *   shape: --d-in 768 --d-sae 10000 --batch 4096 --k 32 --steps 3
 *
 * Prints one line "key=value ..." per rank: per-step calls and payload bytes
 * of each collective kind, the formula's bytes, the median step time, the
 * peak resident memory (getrusage) and the state this rank holds (its
 * parameters, gradients and Adam moments: 16 bytes per parameter). TopK,
 * one thread per rank (OPENBLAS_NUM_THREADS=1 is the script's).
 */
#define _GNU_SOURCE /* clock_gettime, RTLD_DEFAULT */
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

static void die(const char *what, int rc)
{
    fprintf(stderr, "mpi_step: %s: %s (%s)\n", what, sae_status_string(rc), sae_error_detail());
    exit(1);
}

int main(int argc, char **argv)
{
    shape s = {768, 10000, 4096, 32, 3};
    int mode = 0, ranks_alone = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--mode"))
            mode = !strcmp(v, "data") ? SAE_PARALLEL_DATA : SAE_PARALLEL_FEATURES;
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
    const bool use_mpi = !ranks_alone;
    if (use_mpi)
        MPI_Init(&argc, &argv);
    sae_comm world = {0}, counted = {0};
    sae_mpi_counts counts;
    memset(&counts, 0, sizeof counts);
    int n_ranks = 1, rank = 0;
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
    if ((rc = sae_step(m, o, mine, t1 - t0, &l)) != SAE_OK) /* warm-up */
        die("sae_step", rc);
    memset(&counts, 0, sizeof counts);
    double *ms = calloc((size_t)s.steps, sizeof *ms);
    for (int i = 0; i < s.steps; i++) {
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
    printf("mode=%s ranks=%d rank=%d d_in=%zu d_sae=%zu features=%zu tokens=%zu k=%zu "
           "ms=%.1f calls=%.2f bytes=%.0f allreduce_f32_bytes=%.0f allreduce_f64_bytes=%.0f "
           "allgather_bytes=%.0f broadcast_bytes=%.0f formula_bytes=%.0f state_mb=%.1f "
           "batch_mb=%.1f peak_rss_mb=%.1f blas=%s\n",
           mode == SAE_PARALLEL_DATA ? "data" : mode ? "features" : "none", n_ranks, rank, s.d_in,
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
