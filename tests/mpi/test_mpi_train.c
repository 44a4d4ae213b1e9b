/* Distributed training over real MPI (libsae-mpi over MPI_COMM_WORLD), run
 * as 2 and 3 ranks: what tests/test_parallel.c checks with the thread
 * double, here with Open MPI's own reductions.
 *
 * - Data-parallel (uneven shares of the global batch): after training, every
 *   rank's model and optimizer (every tensor, the Adam moments, the counters
 *   and the step count: the bytes sae_model_save_buffer and
 *   sae_optimizer_save_buffer write) and its losses are bit for bit rank 0's,
 *   compared through hashes gathered with MPI_Allgather.
 * - Feature-sharded (uneven shards): the replicated b_dec and the losses are
 *   bit for bit the same on every rank.
 * - Both modes: every tensor within 1e-4 relative of the single-process run
 *   on the same seed, data and global batch (each rank trains that run
 *   itself and compares what it holds: the whole model, or its slice), the
 *   losses of every step likewise.
 * ReLU, TopK with AuxK, BatchTopK, Gated, a TopK skip transcoder with AuxK
 * (learning a target y; feature-sharded: W_skip, like b_dec, bit for bit on
 * every rank), and a Matryoshka SAE with AuxK whose level bands cross the
 * shards' boundaries. */
#include "mpitest.h"

#include <libsae/sae_mpi.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { D_IN = 16, D_OUT = 11, D_SAE = 40, N_TOKENS = 48, STEPS = 6, MAX_RANKS = 3,
       N_TENSORS = 8 };

static const int tensors[N_TENSORS] = {SAE_W_ENC,     SAE_B_ENC,  SAE_W_DEC, SAE_B_DEC,
                                       SAE_THRESHOLD, SAE_W_SKIP, SAE_B_MAG, SAE_R_MAG};
static const char *const tensor_names[N_TENSORS] = {"W_enc",     "b_enc",  "W_dec", "b_dec",
                                                    "threshold", "W_skip", "b_mag", "r_mag"};

/* uneven token shares of the global batch, and uneven shards of d_sae */
static const size_t tokens_split[MAX_RANKS + 1][MAX_RANKS + 1] = {
    {0}, {0, N_TOKENS}, {0, 17, N_TOKENS}, {0, 10, 29, N_TOKENS}};
static const size_t shards_split[MAX_RANKS + 1][MAX_RANKS + 1] = {
    {0}, {0, D_SAE}, {0, 15, D_SAE}, {0, 9, 25, D_SAE}};

/* Matryoshka's levels 6, 20, 33, D_SAE: the shards' boundaries (15; 9, 25)
 * fall inside bands */
static const size_t matryoshka_widths[] = {6, 20, 33};

typedef struct run_spec {
    const char *name;
    int arch;
    double param; /* k */
    bool auxk;    /* a short dead window and AuxK */
    int kind;     /* SAE_KIND_*: transcoders learn y (D_OUT wide) */
} run_spec;

/* STEPS batches of N_TOKENS x d: a few directions with sparse positive
 * weights plus noise (so that features fire unevenly and some die), from a
 * fixed xorshift stream: the same on every rank. */
static float *make_data(size_t d, uint64_t seed)
{
    const size_t n = (size_t)STEPS * N_TOKENS;
    float *x = malloc(n * d * sizeof *x);
    MPITEST_CHECK(x != NULL, "out of memory");
    uint64_t s = seed;
#define NEXT_UNIFORM() (s ^= s << 13, s ^= s >> 7, s ^= s << 17, (double)(s >> 11) / 9007199254740992.0)
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++) {
            double noise = NEXT_UNIFORM() + NEXT_UNIFORM() + NEXT_UNIFORM() - 1.5;
            double dir = NEXT_UNIFORM() < 0.25 ? 2.0 * NEXT_UNIFORM() : 0.0;
            x[t * d + j] = (float)(0.3 * noise + dir + 0.1 * (double)(j % 3));
        }
#undef NEXT_UNIFORM
    return x;
}

static void configure(sae_optimizer *o, const run_spec *s)
{
    int rc = sae_optimizer_set(o, SAE_OPT_LR, 1e-2);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_L1_COEFF, 0.3);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_THREADS, 1);
    if (rc == SAE_OK && s->auxk)
        rc = sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, N_TOKENS);
    if (rc == SAE_OK && s->auxk)
        rc = sae_optimizer_set(o, SAE_OPT_AUXK_K, 4);
    if (rc == SAE_OK && s->auxk)
        rc = sae_optimizer_set(o, SAE_OPT_AUXK_COEFF, 0.5);
    MPITEST_CHECK(rc == SAE_OK, "%s: options: %s", s->name, sae_status_string(rc));
}

/* A trained model's tensors (whole or a shard's slice) and losses. */
typedef struct trained {
    sae_model *m;
    sae_optimizer *o;
    sae_losses losses[STEPS];
} trained;

/* Train s on x (and y): alone (comm NULL), or as this rank of comm in mode. */
static trained train(const run_spec *s, const float *x, const float *y, const sae_comm *comm,
                     int mode)
{
    trained t;
    memset(&t, 0, sizeof t);
    const size_t *split = NULL;
    size_t begin = 0, end = D_SAE;
    if (comm && mode == SAE_PARALLEL_FEATURES) {
        split = shards_split[comm->n_ranks];
        begin = split[comm->rank];
        end = split[comm->rank + 1];
    }
    const bool transcoder = s->kind != SAE_KIND_AUTOENCODER;
    int rc = transcoder ? sae_model_create_transcoder_shard(&t.m, D_IN, D_OUT, D_SAE, begin, end,
                                                            42, s->kind, s->arch, s->param)
             : s->arch == SAE_ARCH_MATRYOSHKA
                 ? sae_model_create_matryoshka_shard(&t.m, D_IN, D_SAE, begin, end, 42,
                                                     (size_t)s->param, matryoshka_widths, 3)
                 : sae_model_create_shard(&t.m, D_IN, D_SAE, begin, end, 42, s->arch, s->param);
    MPITEST_CHECK(rc == SAE_OK, "%s: create: %s", s->name, sae_status_string(rc));
    rc = sae_optimizer_create(&t.o, t.m);
    MPITEST_CHECK(rc == SAE_OK, "%s: optimizer: %s", s->name, sae_status_string(rc));
    configure(t.o, s);
    if (comm) {
        rc = sae_optimizer_set_comm(t.o, mode, comm);
        MPITEST_CHECK(rc == SAE_OK, "%s: set_comm: %s", s->name, sae_status_string(rc));
    }
    for (int step = 0; step < STEPS; step++) {
        size_t first = (size_t)step * N_TOKENS, n = N_TOKENS;
        if (comm && mode == SAE_PARALLEL_DATA) { /* this rank's rows of the global batch */
            split = tokens_split[comm->n_ranks];
            first += split[comm->rank];
            n = split[comm->rank + 1] - split[comm->rank];
        }
        rc = transcoder ? sae_step_target(t.m, t.o, x + first * D_IN, y + first * D_OUT, n,
                                          &t.losses[step])
                        : sae_step(t.m, t.o, x + first * D_IN, n, &t.losses[step]);
        MPITEST_CHECK(rc == SAE_OK, "%s: step %d: %s (%s)", s->name, step, sae_status_string(rc),
                      sae_error_detail());
    }
    return t;
}

static void trained_free(trained *t)
{
    sae_optimizer_free(t->o);
    sae_model_free(t->m);
}

/* FNV-1a over bytes */
static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Whether every rank passed the same hash (MPI_Allgather of 8 bytes). */
static bool same_on_every_rank(uint64_t mine, int *first_different)
{
    uint64_t all[MAX_RANKS];
    int n;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    MPITEST_CHECK(MPI_Allgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD) ==
                      MPI_SUCCESS, "MPI_Allgather");
    for (int r = 1; r < n; r++)
        if (all[r] != all[0]) {
            *first_different = r;
            return false;
        }
    return true;
}

/* The hash of what sae_model_save_buffer / sae_optimizer_save_buffer write. */
static uint64_t saved_hash(const sae_model *m, const sae_optimizer *o)
{
    size_t model_bytes = 0, opt_bytes = 0;
    int rc = m ? sae_model_save_size(m, &model_bytes) : sae_optimizer_save_size(o, &opt_bytes);
    MPITEST_CHECK(rc == SAE_OK, "save_size: %s", sae_status_string(rc));
    size_t bytes = m ? model_bytes : opt_bytes, written = 0;
    unsigned char *buf = malloc(bytes);
    MPITEST_CHECK(buf != NULL, "out of memory");
    rc = m ? sae_model_save_buffer(m, buf, bytes, &written)
           : sae_optimizer_save_buffer(o, buf, bytes, &written);
    MPITEST_CHECK(rc == SAE_OK && written == bytes, "save_buffer: %s", sae_status_string(rc));
    uint64_t h = hash_bytes(buf, bytes);
    free(buf);
    return h;
}

static float *get_tensor(const sae_model *m, int k, size_t *n)
{
    *n = sae_model_tensor_size(m, tensors[k]);
    float *v = malloc((*n ? *n : 1) * sizeof *v);
    MPITEST_CHECK(v != NULL, "out of memory");
    int rc = *n ? sae_model_get_tensor(m, tensors[k], v, *n) : SAE_OK;
    MPITEST_CHECK(rc == SAE_OK, "get %s: %s", tensor_names[k], sae_status_string(rc));
    return v;
}

/* Every tensor this rank holds (whole model or shard) against the same
 * places of the single-process model: max difference over the largest
 * magnitude of the whole tensor, at most 1e-4. */
static void check_against_one_process(const char *what, const sae_model *got,
                                      const sae_model *want)
{
    size_t begin, end, total;
    sae_model_shard(got, &begin, &end, &total);
    const size_t width = end - begin, d_out = sae_model_d_out(want);
    for (int k = 0; k < N_TENSORS; k++) {
        size_t n_got, n_want;
        float *g = get_tensor(got, k, &n_got), *w = get_tensor(want, k, &n_want);
        double scale = 1e-30, diff = 0.0;
        for (size_t i = 0; i < n_want; i++)
            scale = fmax(scale, fabs((double)w[i]));
        for (size_t i = 0; i < n_got; i++) {
            size_t at = i; /* the place of got's value i in the whole tensor */
            if (tensors[k] == SAE_W_ENC) /* d_in x width: the columns begin.. */
                at = (i / width) * total + begin + i % width;
            else if (tensors[k] == SAE_W_DEC) /* width x d_out: the rows begin.. */
                at = begin * d_out + i;
            else if (n_got == width && n_want == total)
                at = begin + i; /* b_enc, per-feature thresholds, b_mag, r_mag */
            MPITEST_CHECK(at < n_want, "%s: %s: value %zu outside the whole tensor", what,
                          tensor_names[k], i);
            diff = fmax(diff, fabs((double)g[i] - w[at]));
        }
        MPITEST_CHECK(diff / scale <= 1e-4, "%s: %s off by %g relative", what, tensor_names[k],
                      diff / scale);
        free(g);
        free(w);
    }
}

static void check_losses(const char *what, const trained *got, const trained *want)
{
    for (int step = 0; step < STEPS; step++) {
        const sae_losses *a = &got->losses[step], *b = &want->losses[step];
        double e = fabs(a->loss - b->loss) + fabs(a->l2 - b->l2) + fabs(a->l1 - b->l1) +
                   fabs(a->l0 - b->l0);
        MPITEST_CHECK(e <= 1e-4 * (fabs(b->loss) + fabs(b->l1) + fabs(b->l0) + 1e-12),
                      "%s: step %d: losses %g %g %g %g, want %g %g %g %g", what, step, a->loss,
                      a->l2, a->l1, a->l0, b->loss, b->l2, b->l1, b->l0);
    }
}

/* The hash of tensor k of m (which every shard holds whole). */
static uint64_t tensor_hash(const sae_model *m, int k)
{
    size_t n;
    float *v = get_tensor(m, k, &n);
    uint64_t h = hash_bytes(v, n * sizeof *v);
    free(v);
    return h;
}

static void check_spec(const run_spec *s, const float *x, const float *y, const sae_comm *comm)
{
    trained one = train(s, x, y, NULL, 0);
    if (s->auxk) { /* AuxK must really train: its term is in the loss */
        bool aux = false;
        for (int step = 0; step < STEPS; step++)
            aux |= one.losses[step].loss > one.losses[step].l2 * (1.0 + 1e-6);
        MPITEST_CHECK(aux, "%s: AuxK never ran in the single-process run", s->name);
    }
    char what[96];
    int r;

    /* data-parallel: replicas bit for bit, the single-process model */
    snprintf(what, sizeof what, "%s, data-parallel, %d ranks", s->name, comm->n_ranks);
    trained data = train(s, x, y, comm, SAE_PARALLEL_DATA);
    MPITEST_CHECK(same_on_every_rank(saved_hash(data.m, NULL), &r),
                  "%s: rank %d's model differs from rank 0's", what, r);
    MPITEST_CHECK(same_on_every_rank(saved_hash(NULL, data.o), &r),
                  "%s: rank %d's optimizer state differs from rank 0's", what, r);
    MPITEST_CHECK(same_on_every_rank(hash_bytes(data.losses, sizeof data.losses), &r),
                  "%s: rank %d's losses differ from rank 0's", what, r);
    check_against_one_process(what, data.m, one.m);
    check_losses(what, &data, &one);
    trained_free(&data);

    /* feature-sharded: b_dec (and W_skip) and the losses bit for bit, the slices */
    snprintf(what, sizeof what, "%s, feature-sharded, %d ranks", s->name, comm->n_ranks);
    trained shard = train(s, x, y, comm, SAE_PARALLEL_FEATURES);
    MPITEST_CHECK(same_on_every_rank(tensor_hash(shard.m, 3), &r),
                  "%s: rank %d's b_dec differs from rank 0's", what, r);
    MPITEST_CHECK(same_on_every_rank(tensor_hash(shard.m, 5), &r),
                  "%s: rank %d's W_skip differs from rank 0's", what, r);
    MPITEST_CHECK(same_on_every_rank(hash_bytes(shard.losses, sizeof shard.losses), &r),
                  "%s: rank %d's losses differ from rank 0's", what, r);
    check_against_one_process(what, shard.m, one.m);
    check_losses(what, &shard, &one);
    trained_free(&shard);
    trained_free(&one);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &mpitest_rank);
    int n_ranks;
    MPI_Comm_size(MPI_COMM_WORLD, &n_ranks);
    MPITEST_CHECK(n_ranks >= 2 && n_ranks <= MAX_RANKS, "run me as 2 or 3 ranks, not %d",
                  n_ranks);
    sae_comm comm;
    int rc = sae_mpi_comm_create(&comm, MPI_COMM_WORLD);
    MPITEST_CHECK(rc == SAE_OK, "sae_mpi_comm_create: %s", sae_status_string(rc));

    float *x = make_data(D_IN, 0x9E3779B97F4A7C15ull), *y = make_data(D_OUT, 0x2545F4914F6CDD1Dull);
    static const run_spec specs[] = {
        {"relu", SAE_ARCH_RELU, 0.0, false, SAE_KIND_AUTOENCODER},
        {"topk+auxk", SAE_ARCH_TOPK, 4.0, true, SAE_KIND_AUTOENCODER},
        {"batchtopk", SAE_ARCH_BATCHTOPK, 4.0, false, SAE_KIND_AUTOENCODER},
        {"gated", SAE_ARCH_GATED, 0.0, false, SAE_KIND_AUTOENCODER},
        {"topk+auxk skip transcoder", SAE_ARCH_TOPK, 4.0, true, SAE_KIND_SKIP_TRANSCODER},
        {"matryoshka+auxk", SAE_ARCH_MATRYOSHKA, 4.0, true, SAE_KIND_AUTOENCODER},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        check_spec(&specs[i], x, y, &comm);
        if (mpitest_rank == 0)
            printf("ok: %s on %d ranks: replicas bit-identical, the single-process model\n",
                   specs[i].name, n_ranks);
    }
    free(y);
    free(x);
    sae_mpi_comm_free(&comm);
    MPI_Finalize();
    return 0;
}
