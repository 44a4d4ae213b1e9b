/* Distributed training over the thread double (tests/comm_threads.c): 2 and 3
 * ranks, data-parallel on uneven shares of the global batch and
 * feature-sharded with uneven shards, every architecture, against the
 * single-process run on the same seed, data and global batch: every tensor
 * within 1e-4 relative, the losses too; shards that start as exactly the
 * slice of the single-process initialisation; replicas bit-identical when
 * the transport's sums differ between ranks; a failure on one rank (NaN in
 * its rows, a transport error, ranks that disagree) returned by all with
 * nothing changed. */
#include "../src/parallel.h"
#include "comm_threads.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { D_IN = 12, D_SAE = 37, N_TOKENS = 48, STEPS = 5, MAX_RANKS = 3, N_TENSORS = 5 };
/* a 2-D grid: up to 6 ranks, 2 data groups of 3 shards or 3 of 2 */
enum { MAX_GROUPS = 3, MAX_GRID = 6 };

static const int tensors[N_TENSORS] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC, SAE_THRESHOLD};

/* One training run's settings. */
typedef struct run_spec {
    int arch;
    double param;          /* k, or JumpReLU's initial threshold */
    int kernel;            /* SAE_KERNEL_* */
    bool auxk;             /* a short dead window, so that AuxK trains */
    const float *x;        /* STEPS batches of N_TOKENS x D_IN */
    bool resample;         /* resample the features dead for a step after step 2 */
    int recipe;            /* 0, or the training recipe with this SAE_LR_* schedule
                              (recipe_before, recipe_after) */
    bool paired;           /* features in equal pairs (pair_features): ties everywhere */
} run_spec;

/* Features 2i and 2i + 1 made equal (W_enc's column and b_enc of 2i + 1
 * and W_dec's row copied from 2i's in the whole model sae_model_create_arch
 * (seed 42) makes; a shard gets its slice), and W_enc blind to the last
 * input (its row zeroed, until the first step trains it): every activation
 * is tied with its pair's, and tokens that differ in the last input alone
 * tie too, so BatchTopK's K-th value has ties to share in the global order
 * whose choice changes the model. */
static int pair_features(sae_model *m, const run_spec *s)
{
    sae_model *whole;
    int rc = sae_model_create_arch(&whole, D_IN, D_SAE, 42, s->arch, s->param);
    if (rc != SAE_OK)
        return rc;
    float w[D_IN * D_SAE], b[D_SAE], ws[D_IN * D_SAE], dec[D_SAE * D_IN];
    rc = sae_model_get_tensor(whole, SAE_W_ENC, w, D_IN * D_SAE);
    if (rc == SAE_OK)
        rc = sae_model_get_tensor(whole, SAE_B_ENC, b, D_SAE);
    if (rc == SAE_OK)
        rc = sae_model_get_tensor(whole, SAE_W_DEC, dec, D_SAE * D_IN);
    sae_model_free(whole);
    memset(w + (D_IN - 1) * D_SAE, 0, D_SAE * sizeof(float)); /* x's last input is unseen */
    for (size_t i = 1; i < D_SAE; i += 2) {
        for (size_t j = 0; j < D_IN; j++)
            w[j * D_SAE + i] = w[j * D_SAE + i - 1];
        b[i] = b[i - 1];
        memcpy(dec + i * D_IN, dec + (i - 1) * D_IN, D_IN * sizeof(float));
    }
    size_t begin, end;
    sae_model_shard(m, &begin, &end, NULL);
    const size_t width = end - begin;
    for (size_t j = 0; j < D_IN; j++)
        memcpy(ws + j * width, w + j * D_SAE + begin, width * sizeof(float));
    if (rc == SAE_OK)
        rc = sae_model_set_tensor(m, SAE_W_ENC, ws, D_IN * width);
    if (rc == SAE_OK)
        rc = sae_model_set_tensor(m, SAE_B_ENC, b + begin, width);
    if (rc == SAE_OK) /* (BatchTopK ranks f times the decoder row's norm) */
        rc = sae_model_set_tensor(m, SAE_W_DEC, dec + begin * D_IN, width * D_IN);
    return rc;
}

/* Resampling: after step RESAMPLE_AFTER (1-based), the features silent for a
 * step's tokens, from a sample of the first batch's rows. */
enum { RESAMPLE_AFTER = 2, RESAMPLE_SAMPLE = 40 };

static int resample_if_due(const run_spec *s, sae_model *m, sae_optimizer *o, int step,
                           size_t *n)
{
    *n = 0;
    if (!s->resample || step + 1 != RESAMPLE_AFTER)
        return SAE_OK;
    return sae_resample_dead(m, o, s->x, RESAMPLE_SAMPLE, N_TOKENS, 99, n);
}

/* The training recipe: b_dec at the geometric median of the first batch, an
 * lr schedule with warm-up and decay, lambda warm-up, gradient clipping
 * tight enough to act at every step (a rank-local norm would clip
 * differently) and, after training, the input scale folded in. Every rank
 * makes the same calls. */
enum { FOLDED_SCALE_X1000 = 700 };

static int recipe_before(const run_spec *s, sae_model *m, sae_optimizer *o)
{
    if (!s->recipe)
        return SAE_OK;
    int rc = sae_model_init_b_dec(m, s->x, N_TOKENS, SAE_B_DEC_GEOMETRIC_MEDIAN);
    const struct { int option; double value; } recipe[] = {
        {SAE_OPT_TOTAL_STEPS, STEPS},         {SAE_OPT_LR_SCHEDULE, s->recipe},
        {SAE_OPT_LR_WARMUP_STEPS, 2},         {SAE_OPT_LR_DECAY_FRACTION, 0.4},
        {SAE_OPT_L1_WARMUP_FRACTION, 0.5},    {SAE_OPT_GRAD_CLIP, 0.05},
    };
    for (size_t k = 0; rc == SAE_OK && k < sizeof recipe / sizeof recipe[0]; k++)
        rc = sae_optimizer_set(o, recipe[k].option, recipe[k].value);
    return rc;
}

static int recipe_after(const run_spec *s, sae_model *m)
{
    return s->recipe ? sae_model_fold_input_scale(m, FOLDED_SCALE_X1000 / 1000.0) : SAE_OK;
}

static void configure(sae_optimizer *o, const run_spec *s)
{
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 1e-2), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_L1_COEFF, s->arch == SAE_ARCH_JUMPRELU ? 0.02 : 0.3),
                     SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_THREADS, 1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_KERNEL, s->kernel), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_JUMPRELU_BANDWIDTH, 0.05), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_THRESHOLD_BETA, 0.5), SAE_OK);
    if (s->auxk) {
        ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, N_TOKENS), SAE_OK);
        ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_AUXK_K, 4), SAE_OK);
        ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_AUXK_COEFF, 0.5), SAE_OK);
    }
}

/* Every tensor of a model, whole (the tensors a shard holds go to their
 * columns or rows of the whole model's). */
typedef struct tensors_of {
    float *t[N_TENSORS];
    size_t n[N_TENSORS];
} tensors_of;

static void tensors_alloc(tensors_of *w, const sae_model *whole_like)
{
    for (int k = 0; k < N_TENSORS; k++) {
        w->n[k] = sae_model_tensor_size(whole_like, tensors[k]);
        w->t[k] = calloc(w->n[k] ? w->n[k] : 1, sizeof(float));
    }
}

static void tensors_free(tensors_of *w)
{
    for (int k = 0; k < N_TENSORS; k++)
        free(w->t[k]);
}

/* Copy m's tensors into w; a shard's into its features' places. */
static int tensors_put(tensors_of *w, const sae_model *m)
{
    size_t begin, end, total;
    sae_model_shard(m, &begin, &end, &total);
    const size_t width = end - begin;
    for (int k = 0; k < N_TENSORS; k++) {
        size_t n = sae_model_tensor_size(m, tensors[k]);
        if (n == 0)
            continue;
        float *v = malloc(n * sizeof *v);
        int rc = sae_model_get_tensor(m, tensors[k], v, n);
        if (rc != SAE_OK) {
            free(v);
            return rc;
        }
        switch (tensors[k]) {
        case SAE_W_ENC: /* d_in x width: columns begin.. */
            for (size_t j = 0; j < D_IN; j++)
                memcpy(w->t[k] + j * total + begin, v + j * width, width * sizeof(float));
            break;
        case SAE_W_DEC:
            memcpy(w->t[k] + begin * D_IN, v, n * sizeof(float));
            break;
        case SAE_B_DEC:
            memcpy(w->t[k], v, n * sizeof(float));
            break;
        default: /* b_enc, JumpReLU thresholds: one per feature; BatchTopK's: one */
            memcpy(w->t[k] + (n == width ? begin : 0), v, n * sizeof(float));
            break;
        }
        free(v);
    }
    return SAE_OK;
}

/* max |a - b| / max |b|: the relative error of a tensor */
static double rel_err(const float *a, const float *b, size_t n)
{
    double diff = 0.0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return diff / scale;
}

/* The single-process run: its final tensors and losses. */
static size_t reference_resampled;

static void reference_run(const run_spec *s, tensors_of *out, sae_losses losses[STEPS])
{
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create_arch(&m, D_IN, D_SAE, 42, s->arch, s->param), SAE_OK);
    if (s->paired)
        ck_assert_int_eq(pair_features(m, s), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    configure(o, s);
    if (s->resample)
        ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, N_TOKENS), SAE_OK);
    ck_assert_int_eq(recipe_before(s, m, o), SAE_OK);
    for (int step = 0; step < STEPS; step++) {
        ck_assert_int_eq(sae_step(m, o, s->x + (size_t)step * N_TOKENS * D_IN, N_TOKENS,
                                  &losses[step]), SAE_OK);
        size_t n;
        ck_assert_int_eq(resample_if_due(s, m, o, step, &n), SAE_OK);
        if (step + 1 == RESAMPLE_AFTER)
            reference_resampled = n;
    }
    ck_assert_int_eq(recipe_after(s, m), SAE_OK);
    tensors_alloc(out, m);
    ck_assert_int_eq(tensors_put(out, m), SAE_OK);
    sae_optimizer_free(o);
    sae_model_free(m);
}

/* What the ranks of a distributed run do and bring back (a grid's rank of
 * group g and shard s at g * shards + s). */
typedef struct dist_run {
    const run_spec *spec;
    int mode;                       /* SAE_PARALLEL_*; both: a 2-D grid */
    size_t split[MAX_RANKS + 1];    /* data: token shares; features and grids: shards */
    size_t rows[MAX_GROUPS + 1];    /* a grid: the groups' token shares */
    int shards;                     /* a grid: shards per group */
    sae_model *models[MAX_GRID];    /* kept for the caller's checks */
    sae_optimizer *opts[MAX_GRID];
    int status[MAX_GRID][STEPS];
    int resample_status[MAX_GRID];
    int recipe_status[MAX_GRID];    /* recipe_before's, then recipe_after's */
    size_t resampled[MAX_GRID];
    sae_losses losses[MAX_GRID][STEPS];
    bool initial_slice[MAX_GRID];   /* features: the shard began as the slice */
    bool no_settle;                 /* test hook: trust the transport's sums */
} dist_run;

static bool equal_floats(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* Whether a fresh shard's tensors are the slice of a fresh whole model's. */
static bool shard_is_slice(const sae_model *shard, const run_spec *s)
{
    sae_model *whole;
    if (sae_model_create_arch(&whole, D_IN, D_SAE, 42, s->arch, s->param) != SAE_OK)
        return false;
    tensors_of a, b;
    tensors_alloc(&a, whole);
    tensors_alloc(&b, whole);
    bool same = tensors_put(&a, whole) == SAE_OK;
    /* b: NaN everywhere, then the shard's tensors in their places */
    for (int k = 0; same && k < N_TENSORS; k++)
        memset(b.t[k], 0xFF, b.n[k] * sizeof(float));
    same = same && tensors_put(&b, shard) == SAE_OK;
    size_t begin, end, total;
    sae_model_shard(shard, &begin, &end, &total);
    for (int k = 0; same && k < N_TENSORS; k++) {
        for (size_t i = 0; same && i < a.n[k]; i++) {
            /* the shard's places: the same bits as the whole model's */
            bool mine = true;
            if (tensors[k] == SAE_W_ENC)
                mine = i % D_SAE >= begin && i % D_SAE < end;
            else if (tensors[k] == SAE_W_DEC)
                mine = i / D_IN >= begin && i / D_IN < end;
            else if (tensors[k] == SAE_B_ENC || (tensors[k] == SAE_THRESHOLD && a.n[k] == D_SAE))
                mine = i >= begin && i < end;
            if (mine)
                same = memcmp(&a.t[k][i], &b.t[k][i], sizeof(float)) == 0;
        }
    }
    tensors_free(&a);
    tensors_free(&b);
    sae_model_free(whole);
    return same;
}

/* One rank of a distributed run, result slot `index`: features [begin, end)
 * (a shard unless whole), rows [first, first + n) of each batch, its
 * communicators (NULL: not attached). */
static void train_rank(dist_run *d, int index, bool whole, size_t begin, size_t end, size_t first,
                       size_t n, const sae_comm *features, const sae_comm *data)
{
    const run_spec *s = d->spec;
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    int rc = whole ? sae_model_create_arch(&m, D_IN, D_SAE, 42, s->arch, s->param)
                   : sae_model_create_shard(&m, D_IN, D_SAE, begin, end, 42, s->arch, s->param);
    if (rc == SAE_OK && !whole)
        d->initial_slice[index] = shard_is_slice(m, s);
    if (rc == SAE_OK && s->paired)
        rc = pair_features(m, s);
    if (rc == SAE_OK)
        rc = sae_optimizer_create(&o, m);
    if (rc == SAE_OK) {
        /* configure() asserts: only on the main thread; here the same calls */
        sae_optimizer_set(o, SAE_OPT_LR, 1e-2);
        sae_optimizer_set(o, SAE_OPT_L1_COEFF, s->arch == SAE_ARCH_JUMPRELU ? 0.02 : 0.3);
        sae_optimizer_set(o, SAE_OPT_THREADS, 1);
        sae_optimizer_set(o, SAE_OPT_KERNEL, s->kernel);
        sae_optimizer_set(o, SAE_OPT_JUMPRELU_BANDWIDTH, 0.05);
        sae_optimizer_set(o, SAE_OPT_THRESHOLD_BETA, 0.5);
        if (s->auxk) {
            sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, N_TOKENS);
            sae_optimizer_set(o, SAE_OPT_AUXK_K, 4);
            sae_optimizer_set(o, SAE_OPT_AUXK_COEFF, 0.5);
        }
        if (s->resample)
            sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, N_TOKENS);
        if (features)
            rc = sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, features);
        if (rc == SAE_OK && data)
            rc = sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, data);
    }
    d->recipe_status[index] = rc == SAE_OK ? recipe_before(s, m, o) : rc;
#ifdef SAE_TESTING
    if (rc == SAE_OK && d->no_settle)
        o->par->no_settle = true;
#endif
    for (int step = 0; step < STEPS; step++) {
        const float *x = s->x + ((size_t)step * N_TOKENS + first) * D_IN;
        d->status[index][step] = rc == SAE_OK ? sae_step(m, o, x, n, &d->losses[index][step]) : rc;
        /* every rank passes the same sample */
        if (s->resample && step + 1 == RESAMPLE_AFTER)
            d->resample_status[index] = resample_if_due(s, m, o, step, &d->resampled[index]);
    }
    if (d->recipe_status[index] == SAE_OK)
        d->recipe_status[index] = rc == SAE_OK ? recipe_after(s, m) : rc;
    d->models[index] = m;
    d->opts[index] = o;
}

static void rank_main(int rank, const sae_comm *comm, void *arg)
{
    dist_run *d = arg;
    const size_t *split = d->split;
    if (d->mode == SAE_PARALLEL_DATA) /* this rank's rows of the global batch */
        train_rank(d, rank, true, 0, D_SAE, split[rank], split[rank + 1] - split[rank], NULL,
                   comm);
    else
        train_rank(d, rank, false, split[rank], split[rank + 1], 0, N_TOKENS, comm, NULL);
}

/* A grid's rank: its group's rows, its shard */
static void grid_main(int group, int shard, const sae_comm *features, const sae_comm *data,
                      void *arg)
{
    dist_run *d = arg;
    train_rank(d, group * d->shards + shard, false, d->split[shard], d->split[shard + 1],
               d->rows[group], d->rows[group + 1] - d->rows[group], features, data);
}

static void dist_free(dist_run *d, int n_ranks)
{
    for (int r = 0; r < n_ranks; r++) {
        sae_optimizer_free(d->opts[r]);
        sae_model_free(d->models[r]);
    }
}

/* A finished run against the single process: every rank's statuses; the
 * model each replica holds (data: each rank's; features: the shards'; a
 * grid: each group's shards) bit-identical to the first's, b_dec on every
 * rank too; the first within 1e-4 relative of the single process, tensor by
 * tensor, and every rank's losses. */
static void verify_run(const run_spec *s, dist_run *d, int n_ranks, const char *mode_name)
{
    tensors_of want;
    sae_losses want_losses[STEPS];
    reference_run(s, &want, want_losses);
    for (int r = 0; r < n_ranks; r++)
        ck_assert_msg(d->recipe_status[r] == SAE_OK, "%s: rank %d: the recipe: %s", mode_name, r,
                      sae_status_string(d->recipe_status[r]));
    for (int r = 0; r < n_ranks; r++)
        for (int step = 0; step < STEPS; step++)
            ck_assert_msg(d->status[r][step] == SAE_OK,
                          "%s, arch %d, %d ranks: rank %d step %d: %s", mode_name, s->arch,
                          n_ranks, r, step,
                          sae_status_string(d->status[r][step]));
    for (int r = 0; s->resample && r < n_ranks; r++) {
        ck_assert_msg(d->resample_status[r] == SAE_OK, "rank %d resampling: %s", r,
                      sae_status_string(d->resample_status[r]));
        ck_assert_uint_eq(d->resampled[r], reference_resampled);
    }
    /* the replicas: ranks [r0, r0 + per) hold one model */
    const int per = d->mode == SAE_PARALLEL_DATA ? 1
                    : d->mode == SAE_PARALLEL_FEATURES ? n_ranks : d->shards;
    sae_model *whole; /* the shapes of the whole model's tensors */
    ck_assert_int_eq(sae_model_create_arch(&whole, D_IN, D_SAE, 1, s->arch, s->param), SAE_OK);
    tensors_of got;
    tensors_alloc(&got, whole);
    for (int r0 = 0; r0 < n_ranks; r0 += per) {
        tensors_of mine;
        tensors_alloc(&mine, whole);
        for (int r = r0; r < r0 + per; r++) {
            ck_assert_msg(per == 1 || d->initial_slice[r], "shard %d did not start as the slice",
                          r);
            ck_assert_int_eq(tensors_put(&mine, d->models[r]), SAE_OK);
        }
        for (int k = 0; k < N_TENSORS; k++) {
            if (r0 == 0)
                memcpy(got.t[k], mine.t[k], got.n[k] * sizeof(float));
            else /* bit for bit the same */
                ck_assert_msg(equal_floats(mine.t[k], got.t[k], got.n[k]),
                              "%s: the model of ranks %d.. differs from ranks 0..'s in tensor %d",
                              mode_name, r0, tensors[k]);
        }
        tensors_free(&mine);
    }
    sae_model_free(whole);
    for (int r = 1; r < n_ranks; r++) { /* b_dec is on every rank: the same bits */
        float a[D_IN], b[D_IN];
        ck_assert_int_eq(sae_model_get_tensor(d->models[0], SAE_B_DEC, a, D_IN), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(d->models[r], SAE_B_DEC, b, D_IN), SAE_OK);
        ck_assert_msg(equal_floats(a, b, D_IN), "%s: rank %d's b_dec differs from rank 0's",
                      mode_name, r);
    }
    for (int k = 0; k < N_TENSORS; k++) {
        if (want.n[k] == 0)
            continue;
        double e = rel_err(got.t[k], want.t[k], want.n[k]);
        ck_assert_msg(e <= 1e-4, "%s, arch %d, kernel %d, %d ranks: tensor %d off by %g relative",
                      mode_name, s->arch, s->kernel, n_ranks, tensors[k], e);
    }
    for (int r = 0; r < n_ranks; r++)
        for (int step = 0; step < STEPS; step++) {
            const sae_losses *a = &d->losses[r][step], *b = &want_losses[step];
            double e = fabs(a->loss - b->loss) + fabs(a->l2 - b->l2) + fabs(a->l1 - b->l1) +
                       fabs(a->l0 - b->l0);
            ck_assert_msg(e <= 1e-4 * (fabs(b->loss) + fabs(b->l1) + fabs(b->l0) + 1e-12),
                          "%s, arch %d: rank %d step %d: losses %g %g %g %g, want %g %g %g %g",
                          mode_name, s->arch, r, step, a->loss, a->l2, a->l1, a->l0, b->loss,
                          b->l2, b->l1, b->l0);
        }
    tensors_free(&got);
    tensors_free(&want);
    dist_free(d, n_ranks);
}

/* Run spec on n_ranks ranks in mode and compare with the single process. */
static void check_against_one_process(const run_spec *s, int mode, int n_ranks,
                                      const size_t *split, unsigned flags)
{
    dist_run d;
    memset(&d, 0, sizeof d);
    d.spec = s;
    d.mode = mode;
    memcpy(d.split, split, (size_t)(n_ranks + 1) * sizeof *split);
    test_comm_group *g = test_comm_group_create(n_ranks, flags);
    ck_assert_ptr_nonnull(g);
    test_comm_run(g, rank_main, &d);
    test_comm_group_free(g);
    verify_run(s, &d, n_ranks, mode == SAE_PARALLEL_DATA ? "data" : "features");
}

/* The same on a 2-D grid: groups data groups (rows: their token shares) of
 * shards feature shards (split). */
static void check_grid(const run_spec *s, int groups, const size_t *rows, int shards,
                       const size_t *split, unsigned flags)
{
    dist_run d;
    memset(&d, 0, sizeof d);
    d.spec = s;
    d.mode = SAE_PARALLEL_DATA | SAE_PARALLEL_FEATURES;
    d.shards = shards;
    memcpy(d.split, split, (size_t)(shards + 1) * sizeof *split);
    memcpy(d.rows, rows, (size_t)(groups + 1) * sizeof *rows);
    test_comm_grid *grid = test_comm_grid_create(groups, shards, flags);
    ck_assert_ptr_nonnull(grid);
    test_comm_grid_run(grid, grid_main, &d);
    test_comm_grid_free(grid);
    verify_run(s, &d, groups * shards, "grid");
}

static float *steps_of_data(uint64_t seed)
{
    return test_gaussian((size_t)STEPS * N_TOKENS, D_IN, 1.0, 0.3, seed);
}

/* the uneven splits: token shares of a global batch, shards of d_sae */
static const size_t tokens2[] = {0, 17, N_TOKENS}, tokens3[] = {0, 10, 29, N_TOKENS};
static const size_t shards2[] = {0, 20, D_SAE}, shards3[] = {0, 9, 25, D_SAE};

static void check_arch(int arch, double param, int kernel, bool auxk)
{
    float *x = steps_of_data(100 + (uint64_t)arch);
    run_spec s = {arch, param, kernel, auxk, x, false, 0, false};
    if (auxk) { /* AuxK must really train: its term is in the loss */
        tensors_of unused;
        sae_losses l[STEPS];
        reference_run(&s, &unused, l);
        tensors_free(&unused);
        bool aux = false;
        for (int step = 0; step < STEPS; step++)
            aux |= l[step].loss > l[step].l2 * (1.0 + 1e-6);
        ck_assert_msg(aux, "AuxK never ran");
    }
    check_against_one_process(&s, SAE_PARALLEL_DATA, 2, tokens2, 0);
    check_against_one_process(&s, SAE_PARALLEL_DATA, 3, tokens3, 0);
    check_against_one_process(&s, SAE_PARALLEL_FEATURES, 2, shards2, 0);
    check_against_one_process(&s, SAE_PARALLEL_FEATURES, 3, shards3, 0);
    /* 2 x 2 and 2 x 3 grids, uneven groups and shards */
    check_grid(&s, 2, tokens2, 2, shards2, 0);
    check_grid(&s, 2, tokens2, 3, shards3, 0);
    free(x);
}

/* BatchTopK with ties at the K-th value in every mode: features in equal
 * pairs (one pair split between shards 0 and 1 of shards3), and the rows
 * 24 .. 40 of each batch copies of rows 0 .. 16 but for the last input
 * (tokens2's first group: the copies are in the second group). The single
 * process keeps ties in token, then feature order; so must 2 data-parallel
 * ranks, 3 shards, and a 2 x 3 grid (group, token, shard). Seed 62's first
 * step cuts the ties between the groups: a grid that let the second group
 * take its ties first fails here (0.5% off). */
START_TEST(batchtopk_ties_keep_the_global_order)
{
    float *x = steps_of_data(62);
    for (int step = 0; step < STEPS; step++) {
        float *batch = x + (size_t)step * N_TOKENS * D_IN;
        memcpy(batch + 24 * D_IN, batch, 17 * D_IN * sizeof(float));
        for (size_t t = 24; t < 41; t++) /* the same pre-activations, another target */
            batch[t * D_IN + D_IN - 1] += 1.0f;
    }
    run_spec s = {SAE_ARCH_BATCHTOPK, 3, SAE_KERNEL_AUTO, false, x, false, 0, true};
    check_against_one_process(&s, SAE_PARALLEL_DATA, 2, tokens2, 0);
    check_against_one_process(&s, SAE_PARALLEL_FEATURES, 3, shards3, 0);
    check_grid(&s, 2, tokens2, 3, shards3, 0);
    free(x);
}
END_TEST

START_TEST(relu_dense_matches_one_process) { check_arch(SAE_ARCH_RELU, 0.0, SAE_KERNEL_DENSE, false); }
END_TEST

START_TEST(relu_sparse_matches_one_process) { check_arch(SAE_ARCH_RELU, 0.0, SAE_KERNEL_SPARSE, false); }
END_TEST

START_TEST(relu_auto_matches_one_process) { check_arch(SAE_ARCH_RELU, 0.0, SAE_KERNEL_AUTO, false); }
END_TEST

START_TEST(topk_matches_one_process) { check_arch(SAE_ARCH_TOPK, 4, SAE_KERNEL_AUTO, false); }
END_TEST

START_TEST(topk_auxk_matches_one_process) { check_arch(SAE_ARCH_TOPK, 3, SAE_KERNEL_AUTO, true); }
END_TEST

START_TEST(batchtopk_auxk_matches_one_process)
{
    check_arch(SAE_ARCH_BATCHTOPK, 4, SAE_KERNEL_AUTO, true);
}
END_TEST

START_TEST(resampling_matches_one_process)
{
    float *x = steps_of_data(12);
    /* (with k 3 of 37 features, many are silent for a step's tokens) */
    for (int a = 0; a < 2; a++) {
        static const int archs[] = {SAE_ARCH_TOPK, SAE_ARCH_BATCHTOPK};
        run_spec s = {archs[a], 3, SAE_KERNEL_AUTO, false, x, true, 0, false};
        tensors_of unused;
        sae_losses l[STEPS];
        reference_run(&s, &unused, l);
        tensors_free(&unused);
        ck_assert_msg(reference_resampled > 0, "arch %d: nothing to resample", archs[a]);
        check_against_one_process(&s, SAE_PARALLEL_DATA, 3, tokens3, 0);
        check_against_one_process(&s, SAE_PARALLEL_FEATURES, 2, shards2, 0);
        check_against_one_process(&s, SAE_PARALLEL_FEATURES, 3, shards3, 0);
        /* a grid: each group resamples its shards; the groups' loss weights
         * (their sums in another order on each) made the same over DATA */
        check_grid(&s, 2, tokens2, 3, shards3, TEST_COMM_SKEWED);
    }
    free(x);
}
END_TEST

/* The schedules and the recipe's steps in both modes (the recipe must
 * change the result: without it the run ends elsewhere). */
START_TEST(recipe_matches_one_process)
{
    float *x = steps_of_data(21);
    static const struct { int arch; double param; int schedule; } runs[] = {
        {SAE_ARCH_RELU, 0.0, SAE_LR_LINEAR},
        {SAE_ARCH_TOPK, 4, SAE_LR_COSINE},
        {SAE_ARCH_JUMPRELU, 0.05, SAE_LR_LINEAR},
    };
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        run_spec s = {runs[k].arch, runs[k].param, SAE_KERNEL_AUTO, false, x, false,
                      runs[k].schedule, false};
        tensors_of clipped, free_run;
        sae_losses l[STEPS];
        reference_run(&s, &clipped, l);
        s.recipe = 0;
        reference_run(&s, &free_run, l);
        ck_assert_msg(rel_err(clipped.t[0], free_run.t[0], clipped.n[0]) > 1e-3,
                      "arch %d: the recipe changed nothing", runs[k].arch);
        tensors_free(&clipped);
        tensors_free(&free_run);
        s.recipe = runs[k].schedule;
        check_against_one_process(&s, SAE_PARALLEL_DATA, 2, tokens2, 0);
        check_against_one_process(&s, SAE_PARALLEL_DATA, 3, tokens3, 0);
        check_against_one_process(&s, SAE_PARALLEL_FEATURES, 2, shards2, 0);
        check_against_one_process(&s, SAE_PARALLEL_FEATURES, 3, shards3, 0);
    }
    free(x);
}
END_TEST

START_TEST(jumprelu_matches_one_process)
{
    check_arch(SAE_ARCH_JUMPRELU, 0.05, SAE_KERNEL_DENSE, false);
    check_arch(SAE_ARCH_JUMPRELU, 0.05, SAE_KERNEL_SPARSE, false);
}
END_TEST

/* ---- Gated SAEs, transcoders and Matryoshka SAEs, both modes ------------------- */

/* Matryoshka's levels: 3, 8, 22, D_SAE. Their bands cross the shards'
 * boundaries (20 of shards2; 9 and 25 of shards3), and shards3's last shard
 * holds features of the last band only. */
static const size_t matryoshka_widths[3] = {3, 8, 22};

/* Every tensor a model may hold (Gated: b_mag, r_mag; skip transcoders: W_skip). */
static const int all_tensors[] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC,  SAE_B_DEC,
                                  SAE_THRESHOLD, SAE_W_SKIP, SAE_B_MAG, SAE_R_MAG};
enum { N_ALL_TENSORS = sizeof all_tensors / sizeof all_tensors[0], D_OUT = 9 };

typedef struct family_run {
    int kind, arch;                  /* SAE_KIND_*, SAE_ARCH_* */
    double param;
    bool auxk;
    int mode;                        /* SAE_PARALLEL_DATA or _FEATURES; both: a 3 x 2 grid */
    const float *x, *y;              /* STEPS batches of x (D_IN) and, for transcoders, y (D_OUT) */
    const size_t *split;             /* data: token shares; features and grids: shards */
    const size_t *rows;              /* a grid: the groups' token shares */
    int shards;                      /* a grid: shards per group */
    float *t[MAX_GRID][N_ALL_TENSORS]; /* each rank's tensors (a shard's: its part) */
    size_t n[MAX_GRID][N_ALL_TENSORS];
    float *initial[MAX_GRID][N_ALL_TENSORS]; /* features: each shard's tensors when made */
    int status[MAX_GRID];            /* the first failure of the rank's calls */
    sae_losses losses[MAX_GRID][STEPS];
} family_run;

/* The model's tensors into out[k] (allocated), their sizes into n[k]. */
static int family_tensors(const sae_model *m, float *out[N_ALL_TENSORS], size_t n[N_ALL_TENSORS])
{
    int rc = SAE_OK;
    for (int k = 0; rc == SAE_OK && k < N_ALL_TENSORS; k++) {
        n[k] = sae_model_tensor_size(m, all_tensors[k]);
        out[k] = calloc(n[k] ? n[k] : 1, sizeof(float));
        if (!out[k])
            rc = SAE_E_NOMEM;
        else if (n[k])
            rc = sae_model_get_tensor(m, all_tensors[k], out[k], n[k]);
    }
    return rc;
}

/* Train the family's model: alone (comm NULL, rank 0) or as a rank of comm
 * in g->mode (features: the shard [split[rank], split[rank + 1])). No
 * ck_assert here: it runs on the ranks' threads. */
/* Rank `index` of a family run: shard `shard` of group `group`'s rows, with
 * the communicators given (none: the single process, whole). */
static void family_train(family_run *g, int index, int group, int shard, const sae_comm *features,
                         const sae_comm *data)
{
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    const bool transcoder = g->kind != SAE_KIND_AUTOENCODER;
    const size_t begin = features ? g->split[shard] : 0;
    const size_t end = features ? g->split[shard + 1] : D_SAE;
    /* data-parallel and grids: the group's rows; feature shards: the whole batch */
    const size_t *rows = !data ? NULL : features ? g->rows : g->split;
    const size_t first = rows ? rows[group] : 0;
    const size_t n = rows ? rows[group + 1] - rows[group] : N_TOKENS;
    int rc = transcoder ? sae_model_create_transcoder_shard(&m, D_IN, D_OUT, D_SAE, begin, end,
                                                            42, g->kind, g->arch, g->param)
             : g->arch == SAE_ARCH_MATRYOSHKA
                 ? sae_model_create_matryoshka_shard(&m, D_IN, D_SAE, begin, end, 42,
                                                     (size_t)g->param, matryoshka_widths, 3)
                 : sae_model_create_shard(&m, D_IN, D_SAE, begin, end, 42, g->arch, g->param);
    size_t unused[N_ALL_TENSORS];
    if (rc == SAE_OK && features)
        rc = family_tensors(m, g->initial[index], unused);
    if (rc == SAE_OK)
        rc = sae_optimizer_create(&o, m);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_LR, 1e-2);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_L1_COEFF, 0.3);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_THREADS, 1);
    if (rc == SAE_OK && g->auxk)
        rc = sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, N_TOKENS);
    if (rc == SAE_OK && g->auxk)
        rc = sae_optimizer_set(o, SAE_OPT_AUXK_K, 4);
    if (rc == SAE_OK && g->auxk)
        rc = sae_optimizer_set(o, SAE_OPT_AUXK_COEFF, 0.5);
    if (rc == SAE_OK && features)
        rc = sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, features);
    if (rc == SAE_OK && data)
        rc = sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, data);
    for (int step = 0; rc == SAE_OK && step < STEPS; step++) {
        size_t at = (size_t)step * N_TOKENS + first;
        rc = transcoder ? sae_step_target(m, o, g->x + at * D_IN, g->y + at * D_OUT, n,
                                          &g->losses[index][step])
                        : sae_step(m, o, g->x + at * D_IN, n, &g->losses[index][step]);
    }
    if (rc == SAE_OK)
        rc = family_tensors(m, g->t[index], g->n[index]);
    g->status[index] = rc;
    sae_optimizer_free(o);
    sae_model_free(m);
}

static void family_rank(int rank, const sae_comm *comm, void *arg)
{
    family_run *g = arg;
    if (g->mode == SAE_PARALLEL_DATA)
        family_train(g, rank, rank, 0, NULL, comm);
    else
        family_train(g, rank, 0, rank, comm, NULL);
}

static void family_grid_rank(int group, int shard, const sae_comm *features,
                             const sae_comm *data, void *arg)
{
    family_run *g = arg;
    family_train(g, group * g->shards + shard, group, shard, features, data);
}

static void family_free(family_run *g)
{
    for (int r = 0; r < MAX_GRID; r++)
        for (int k = 0; k < N_ALL_TENSORS; k++) {
            free(g->t[r][k]);
            free(g->initial[r][k]);
        }
}

/* Tensor k of the whole model (n floats, d_out wide rows of W_dec) from the
 * shards' parts (part[r]: shard [split[r], split[r + 1])'s): W_enc's columns,
 * W_dec's rows, one value per feature; b_dec, W_skip and BatchTopK's one
 * threshold are whole on every shard (rank 0's taken). */
static void family_assemble(int k, float *const part[MAX_GRID][N_ALL_TENSORS], const size_t *split,
                            int n_ranks, float *whole, size_t n)
{
    for (int r = 0; r < n_ranks; r++) {
        const size_t begin = split[r], width = split[r + 1] - begin;
        const float *v = part[r][k];
        switch (all_tensors[k]) {
        case SAE_W_ENC: /* D_IN x width: columns begin.. */
            for (size_t j = 0; j < D_IN; j++)
                memcpy(whole + j * D_SAE + begin, v + j * width, width * sizeof(float));
            break;
        case SAE_W_DEC: /* width x d_out: rows begin.. */
            memcpy(whole + begin * (n / D_SAE), v, width * (n / D_SAE) * sizeof(float));
            break;
        default:
            if (n == D_SAE) /* per feature */
                memcpy(whole + begin, v, width * sizeof(float));
            else if (r == 0) /* whole on every shard */
                memcpy(whole, v, n * sizeof(float));
            break;
        }
    }
}

/* Whether tensor k is whole on every shard (b_dec, W_skip, BatchTopK's threshold). */
static bool family_replicated(int k, size_t n_whole)
{
    return all_tensors[k] != SAE_W_ENC && all_tensors[k] != SAE_W_DEC && n_whole != D_SAE;
}

/* spec (kind, arch, param, auxk) on 2 and 3 ranks in spec->mode (data:
 * uneven token shares; features: uneven shards, each starting as exactly
 * the slice of the single-process model), the transport rounding
 * differently on every rank: the single-process model within 1e-4, the
 * replicated tensors bit for bit on every rank, losses within 1e-4.
 * extra_tensor: one the family has. */
static void check_family(const family_run *spec, int extra_tensor)
{
    float *x = steps_of_data(23 + (uint64_t)spec->arch);
    float *y = test_gaussian((size_t)STEPS * N_TOKENS, D_OUT, 1.0, 0.2, 31);
    const bool grid = spec->mode == (SAE_PARALLEL_DATA | SAE_PARALLEL_FEATURES);
    const bool features = spec->mode & SAE_PARALLEL_FEATURES;
    const char *mode = grid ? "grid" : features ? "features" : "data";
    family_run want = *spec;
    want.x = x;
    want.y = y;
    family_train(&want, 0, 0, 0, NULL, NULL);
    ck_assert_int_eq(want.status[0], SAE_OK);
    ck_assert_uint_gt(want.n[0][extra_tensor], 0);
    /* the initial whole model, for the shards' first tensors */
    float *init[N_ALL_TENSORS];
    size_t init_n[N_ALL_TENSORS];
    sae_model *m0;
    ck_assert_int_eq(spec->kind != SAE_KIND_AUTOENCODER
                         ? sae_model_create_transcoder(&m0, D_IN, D_OUT, D_SAE, 42, spec->kind,
                                                       spec->arch, spec->param)
                     : spec->arch == SAE_ARCH_MATRYOSHKA
                         ? sae_model_create_matryoshka(&m0, D_IN, D_SAE, 42, (size_t)spec->param,
                                                       matryoshka_widths, 3)
                         : sae_model_create_arch(&m0, D_IN, D_SAE, 42, spec->arch, spec->param),
                     SAE_OK);
    ck_assert_int_eq(family_tensors(m0, init, init_n), SAE_OK);
    sae_model_free(m0);
    /* a grid: 3 groups (three, so that the order of their sums matters) of
     * 2 shards, group g's shard s at rank 2 g + s */
    for (int n_ranks = grid ? 3 : 2; n_ranks <= 3; n_ranks++) {
        family_run got = *spec;
        got.x = x;
        got.y = y;
        got.split = grid ? shards2
                    : features ? (n_ranks == 2 ? shards2 : shards3)
                               : (n_ranks == 2 ? tokens2 : tokens3);
        got.rows = tokens3;
        got.shards = 2;
        if (grid) {
            test_comm_grid *cells = test_comm_grid_create(3, 2, TEST_COMM_SKEWED);
            ck_assert_ptr_nonnull(cells);
            test_comm_grid_run(cells, family_grid_rank, &got);
            test_comm_grid_free(cells);
        } else {
            test_comm_group *grp = test_comm_group_create(n_ranks, TEST_COMM_SKEWED);
            ck_assert_ptr_nonnull(grp);
            test_comm_run(grp, family_rank, &got);
            test_comm_group_free(grp);
        }
        /* ranks, and the shards that make one model */
        const int total = grid ? 6 : n_ranks, per = grid ? 2 : n_ranks;
        for (int r = 0; r < total; r++)
            ck_assert_msg(got.status[r] == SAE_OK, "%s, kind %d arch %d, %d ranks: rank %d: %s",
                          mode, spec->kind, spec->arch, n_ranks, r,
                          sae_status_string(got.status[r]));
        for (int k = 0; k < N_ALL_TENSORS; k++) {
            const size_t n = want.n[0][k];
            float *whole = calloc(n ? n : 1, sizeof(float));
            ck_assert_ptr_nonnull(whole);
            if (features) {
                /* each shard began as exactly its slice */
                family_assemble(k, got.initial, got.split, per, whole, n);
                ck_assert_msg(equal_floats(whole, init[k], n), "kind %d arch %d, %d shards: "
                              "tensor %d did not start as the slice", spec->kind, spec->arch,
                              per, all_tensors[k]);
                family_assemble(k, got.t, got.split, per, whole, n);
            } else {
                memcpy(whole, got.t[0][k], n * sizeof(float));
            }
            /* replicas, and what every shard holds whole: bit for bit rank 0's
             * (a grid: each shard's replicas in the other groups, too) */
            for (int r = per; grid && r < total; r++)
                ck_assert_msg(equal_floats(got.t[r][k], got.t[r % per][k], got.n[r][k]),
                              "grid, kind %d arch %d: rank %d's tensor %d differs from rank %d's",
                              spec->kind, spec->arch, r, all_tensors[k], r % per);
            for (int r = 1; r < total && (!features || family_replicated(k, n)); r++)
                ck_assert_msg(equal_floats(got.t[r][k], got.t[0][k], n),
                              "%s, kind %d arch %d, %d ranks: rank %d's tensor %d differs from "
                              "rank 0's", mode, spec->kind, spec->arch, n_ranks, r,
                              all_tensors[k]);
            double e = rel_err(whole, want.t[0][k], n);
            ck_assert_msg(e <= 1e-4, "%s, kind %d arch %d, %d ranks: tensor %d off by %g relative",
                          mode, spec->kind, spec->arch, n_ranks, all_tensors[k], e);
            free(whole);
        }
        for (int r = 0; r < total; r++)
            for (int step = 0; step < STEPS; step++) {
                const sae_losses *a = &got.losses[r][step], *b = &want.losses[0][step];
                double e = fabs(a->loss - b->loss) + fabs(a->l2 - b->l2) + fabs(a->l1 - b->l1) +
                           fabs(a->l0 - b->l0);
                ck_assert_msg(e <= 1e-4 * (fabs(b->loss) + fabs(b->l1) + fabs(b->l0)),
                              "%s, kind %d arch %d, %d ranks: rank %d step %d: loss %g, want %g",
                              mode, spec->kind, spec->arch, n_ranks, r, step, a->loss, b->loss);
            }
        family_free(&got);
    }
    /* the loss has the family's terms: Gated's gate and auxiliary
     * reconstruction, AuxK's */
    if (spec->arch == SAE_ARCH_GATED || spec->auxk) {
        bool extra = false;
        for (int step = 0; step < STEPS; step++)
            extra |= want.losses[0][step].loss > want.losses[0][step].l2 * (1.0 + 1e-6);
        ck_assert(extra);
    }
    for (int k = 0; k < N_ALL_TENSORS; k++)
        free(init[k]);
    family_free(&want);
    free(y);
    free(x);
}

START_TEST(gated_data_parallel_matches_one_process)
{
    family_run s = {.kind = SAE_KIND_AUTOENCODER, .arch = SAE_ARCH_GATED,
                    .mode = SAE_PARALLEL_DATA};
    check_family(&s, 6); /* b_mag */
}
END_TEST

START_TEST(matryoshka_data_parallel_matches_one_process)
{
    family_run s = {.kind = SAE_KIND_AUTOENCODER, .arch = SAE_ARCH_MATRYOSHKA, .param = 3,
                    .auxk = true, .mode = SAE_PARALLEL_DATA};
    check_family(&s, 4); /* the BatchTopK threshold */
}
END_TEST

START_TEST(transcoders_data_parallel_match_one_process)
{
    family_run relu = {.kind = SAE_KIND_TRANSCODER, .arch = SAE_ARCH_RELU,
                       .mode = SAE_PARALLEL_DATA};
    check_family(&relu, 2); /* W_dec, D_SAE x D_OUT */
    family_run skip = {.kind = SAE_KIND_SKIP_TRANSCODER, .arch = SAE_ARCH_TOPK, .param = 3,
                       .auxk = true, .mode = SAE_PARALLEL_DATA};
    check_family(&skip, 5); /* W_skip */
}
END_TEST

START_TEST(gated_feature_shards_match_one_process)
{
    family_run s = {.kind = SAE_KIND_AUTOENCODER, .arch = SAE_ARCH_GATED,
                    .mode = SAE_PARALLEL_FEATURES};
    check_family(&s, 7); /* r_mag */
}
END_TEST

START_TEST(transcoder_feature_shards_match_one_process)
{
    /* the dense path (ReLU), with and without the skip map, and the sparse
     * path with AuxK's second reconstruction (TopK) */
    family_run relu = {.kind = SAE_KIND_TRANSCODER, .arch = SAE_ARCH_RELU,
                       .mode = SAE_PARALLEL_FEATURES};
    check_family(&relu, 2);
    family_run relu_skip = {.kind = SAE_KIND_SKIP_TRANSCODER, .arch = SAE_ARCH_RELU,
                            .mode = SAE_PARALLEL_FEATURES};
    check_family(&relu_skip, 5);
    family_run topk_skip = {.kind = SAE_KIND_SKIP_TRANSCODER, .arch = SAE_ARCH_TOPK, .param = 3,
                            .auxk = true, .mode = SAE_PARALLEL_FEATURES};
    check_family(&topk_skip, 5);
}
END_TEST

START_TEST(families_on_a_grid_match_one_process)
{
    /* Gated (dense, its gate term and auxiliary reconstruction), a skip
     * transcoder's dense path (W_skip replicated over the shards and summed
     * over the groups), and its sparse path with AuxK */
    const int grid = SAE_PARALLEL_DATA | SAE_PARALLEL_FEATURES;
    family_run gated = {.kind = SAE_KIND_AUTOENCODER, .arch = SAE_ARCH_GATED, .mode = grid};
    check_family(&gated, 7); /* r_mag */
    family_run relu_skip = {.kind = SAE_KIND_SKIP_TRANSCODER, .arch = SAE_ARCH_RELU,
                            .mode = grid};
    check_family(&relu_skip, 5);
    family_run topk_skip = {.kind = SAE_KIND_SKIP_TRANSCODER, .arch = SAE_ARCH_TOPK, .param = 3,
                            .auxk = true, .mode = grid};
    check_family(&topk_skip, 5);
    /* Matryoshka: one BatchTopK selection over the grid, every level summed
     * over each group's shards, AuxK */
    family_run matryoshka = {.kind = SAE_KIND_AUTOENCODER, .arch = SAE_ARCH_MATRYOSHKA,
                             .param = 3, .auxk = true, .mode = grid};
    check_family(&matryoshka, 4); /* the BatchTopK threshold */
}
END_TEST

START_TEST(matryoshka_feature_shards_match_one_process)
{
    /* one BatchTopK selection across the shards, every level summed over
     * them, AuxK's picks and second reconstruction */
    family_run s = {.kind = SAE_KIND_AUTOENCODER, .arch = SAE_ARCH_MATRYOSHKA, .param = 3,
                    .auxk = true, .mode = SAE_PARALLEL_FEATURES};
    check_family(&s, 4); /* the BatchTopK threshold */
}
END_TEST

/* BatchTopK selects over the whole batch as one block: with more tokens than
 * a block of the other architectures (SAE_BLOCK_TOKENS), AuxK's candidate
 * exchange across 3 shards needs the batch's room (16 candidates per token),
 * and gives the single process's losses. */
enum { WIDE_TOKENS = 2048, WIDE_STEPS = 2 };

typedef struct wide_run {
    const float *x;
    int status[MAX_RANKS];
    sae_losses losses[MAX_RANKS][WIDE_STEPS];
} wide_run;

static void wide_train(wide_run *w, int rank, const sae_comm *comm)
{
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    const size_t begin = comm ? shards3[rank] : 0, end = comm ? shards3[rank + 1] : D_SAE;
    int rc = sae_model_create_shard(&m, D_IN, D_SAE, begin, end, 42, SAE_ARCH_BATCHTOPK, 2);
    if (rc == SAE_OK)
        rc = sae_optimizer_create(&o, m);
    const struct { int option; double value; } opts[] = {
        {SAE_OPT_LR, 1e-2}, {SAE_OPT_THREADS, 1}, {SAE_OPT_DEAD_WINDOW, 1},
        {SAE_OPT_AUXK_K, 16}, {SAE_OPT_AUXK_COEFF, 0.5}};
    for (size_t k = 0; rc == SAE_OK && k < sizeof opts / sizeof opts[0]; k++)
        rc = sae_optimizer_set(o, opts[k].option, opts[k].value);
    if (rc == SAE_OK && comm)
        rc = sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, comm);
    for (int step = 0; rc == SAE_OK && step < WIDE_STEPS; step++)
        rc = sae_step(m, o, w->x + (size_t)step * WIDE_TOKENS * D_IN, WIDE_TOKENS,
                      &w->losses[rank][step]);
    w->status[rank] = rc;
    sae_optimizer_free(o);
    sae_model_free(m);
}

static void wide_rank(int rank, const sae_comm *comm, void *arg) { wide_train(arg, rank, comm); }

START_TEST(batchtopk_auxk_shards_take_a_batch_wider_than_a_block)
{
    float *x = test_gaussian((size_t)WIDE_STEPS * WIDE_TOKENS, D_IN, 1.0, 0.3, 5);
    wide_run want = {.x = x}, got = {.x = x};
    wide_train(&want, 0, NULL);
    ck_assert_int_eq(want.status[0], SAE_OK);
    ck_assert(want.losses[0][1].loss > want.losses[0][1].l2 * (1.0 + 1e-6)); /* AuxK ran */
    test_comm_group *g = test_comm_group_create(3, 0);
    ck_assert_ptr_nonnull(g);
    test_comm_run(g, wide_rank, &got);
    test_comm_group_free(g);
    for (int r = 0; r < 3; r++) {
        ck_assert_msg(got.status[r] == SAE_OK, "rank %d: %s", r, sae_status_string(got.status[r]));
        for (int step = 0; step < WIDE_STEPS; step++) {
            const sae_losses *a = &got.losses[r][step], *b = &want.losses[0][step];
            ck_assert_msg(fabs(a->loss - b->loss) <= 1e-4 * b->loss, "rank %d step %d: loss %g, "
                          "want %g", r, step, a->loss, b->loss);
        }
    }
    free(x);
}
END_TEST

/* ---- bits, failures, disagreements ---------------------------------------------- */

START_TEST(replicas_stay_identical_when_the_transport_rounds_differently)
{
    float *x = steps_of_data(7);
    run_spec relu = {SAE_ARCH_RELU, 0.0, SAE_KERNEL_AUTO, false, x, false, 0, false};
    run_spec topk = {SAE_ARCH_TOPK, 4, SAE_KERNEL_AUTO, true, x, false, 0, false};
    /* each rank adds the ranks' gradients in its own order: the hash check
     * makes every rank take rank 0's (checked bit for bit inside) */
    check_against_one_process(&relu, SAE_PARALLEL_DATA, 3, tokens3, TEST_COMM_SKEWED);
    check_against_one_process(&topk, SAE_PARALLEL_DATA, 3, tokens3, TEST_COMM_SKEWED);
    check_against_one_process(&topk, SAE_PARALLEL_FEATURES, 3, shards3, TEST_COMM_SKEWED);
    check_against_one_process(&relu, SAE_PARALLEL_FEATURES, 3, shards3, TEST_COMM_SKEWED);
    /* a grid: the groups' replicas of each shard, and b_dec on every rank
     * (three groups: a sum of two is the same in either order) */
    check_grid(&relu, 3, tokens3, 2, shards2, TEST_COMM_SKEWED);
    check_grid(&topk, 3, tokens3, 2, shards2, TEST_COMM_SKEWED);
    /* without the check, the same transport makes the replicas drift apart:
     * the test above can fail */
    dist_run d;
    memset(&d, 0, sizeof d);
    d.spec = &relu;
    d.mode = SAE_PARALLEL_DATA;
    d.no_settle = true;
    memcpy(d.split, tokens3, sizeof tokens3);
    test_comm_group *g = test_comm_group_create(3, TEST_COMM_SKEWED);
    test_comm_run(g, rank_main, &d);
    test_comm_group_free(g);
    tensors_of a, b;
    tensors_alloc(&a, d.models[0]);
    tensors_alloc(&b, d.models[0]);
    ck_assert_int_eq(tensors_put(&a, d.models[0]), SAE_OK);
    ck_assert_int_eq(tensors_put(&b, d.models[1]), SAE_OK);
    ck_assert(!equal_floats(a.t[0], b.t[0], a.n[0]));
    tensors_free(&a);
    tensors_free(&b);
    dist_free(&d, 3);
    free(x);
}
END_TEST

/* A distributed run where the ranks may be given bad rows or settings:
 * each rank's statuses, and its tensors before and after. A grid's rank of
 * group g and shard s is rank g * shards + s. */
typedef struct fault_run {
    int mode;                  /* SAE_PARALLEL_*; both: a 2-D grid */
    const size_t *split;       /* data: token shares; features and grids: shards */
    const size_t *rows;        /* a grid: the groups' token shares */
    int shards;                /* a grid: shards per group */
    int arch;                  /* SAE_ARCH_TOPK unless set */
    const float *x;            /* STEPS batches */
    int nan_rank, nan_step;    /* rank whose rows hold a NaN at that step (-1: none, -2: all;
                                  a grid: the group) */
    int lr_rank;               /* rank with another learning rate (-1: none) */
    int x_rank;                /* features: rank given other data (-1: none) */
    int encode_rank, encode_step; /* rank whose encoder fails at that step (-1: none) */
    const size_t (*ranges)[2]; /* features and grids: each rank's [begin, end), else split */
    int status[MAX_GRID][STEPS];
    bool unchanged[MAX_GRID][STEPS]; /* a failed step left the model as it was */
    uint64_t steps[MAX_GRID];
} fault_run;

/* Rank `index` of a fault run: features [begin, end) (whole: the model),
 * rows [first, first + n), its communicators; nan: its rows hold a NaN at
 * f->nan_step. */
static void fault_train(fault_run *f, int index, bool whole, size_t begin, size_t end,
                        size_t first, size_t n, const sae_comm *features, const sae_comm *data,
                        bool nan)
{
    const int arch = f->arch ? f->arch : SAE_ARCH_TOPK;
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    if (whole)
        sae_model_create_arch(&m, D_IN, D_SAE, 42, arch, 4);
    else
        sae_model_create_shard(&m, D_IN, D_SAE, begin, end, 42, arch, 4);
    sae_optimizer_create(&o, m);
    sae_optimizer_set(o, SAE_OPT_THREADS, 1);
    sae_optimizer_set(o, SAE_OPT_LR, index == f->lr_rank ? 2e-3 : 1e-3);
    if (features)
        sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, features);
    if (data)
        sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, data);
    float *batch = malloc(N_TOKENS * D_IN * sizeof *batch);
    model_snapshot before;
    for (int step = 0; step < STEPS; step++) {
        memcpy(batch, f->x + (size_t)step * N_TOKENS * D_IN, N_TOKENS * D_IN * sizeof *batch);
        if (nan && step == f->nan_step)
            batch[first * D_IN + 5] = NAN;
        if (index == f->x_rank)
            batch[first * D_IN + 3] += 1.0f;
        snapshot_take(&before, m);
        sae__test_encode_fails = index == f->encode_rank && step == f->encode_step;
        f->status[index][step] = sae_step(m, o, batch + first * D_IN, n, NULL);
        sae__test_encode_fails = false;
        f->unchanged[index][step] = snapshot_equal(&before, m);
        snapshot_free(&before);
    }
    f->steps[index] = sae_optimizer_steps(o);
    free(batch);
    sae_optimizer_free(o);
    sae_model_free(m);
}

static void fault_rank(int rank, const sae_comm *comm, void *arg)
{
    fault_run *f = arg;
    const bool nan = rank == f->nan_rank || f->nan_rank == -2;
    if (f->mode == SAE_PARALLEL_DATA)
        fault_train(f, rank, true, 0, D_SAE, f->split[rank], f->split[rank + 1] - f->split[rank],
                    NULL, comm, nan);
    else if (f->ranges)
        fault_train(f, rank, false, f->ranges[rank][0], f->ranges[rank][1], 0, N_TOKENS, comm,
                    NULL, nan);
    else
        fault_train(f, rank, false, f->split[rank], f->split[rank + 1], 0, N_TOKENS, comm, NULL,
                    nan);
}

static void fault_grid_rank(int group, int shard, const sae_comm *features, const sae_comm *data,
                            void *arg)
{
    fault_run *f = arg;
    const int index = group * f->shards + shard;
    const size_t begin = f->ranges ? f->ranges[index][0] : f->split[shard];
    const size_t end = f->ranges ? f->ranges[index][1] : f->split[shard + 1];
    fault_train(f, index, false, begin, end, f->rows[group], f->rows[group + 1] - f->rows[group],
                features, data, group == f->nan_rank);
}

/* A run with nothing wrong, to change one thing of. */
static fault_run faults(int mode, const size_t *split, const float *x)
{
    fault_run f;
    memset(&f, 0, sizeof f);
    f.mode = mode;
    f.split = split;
    f.x = x;
    f.nan_rank = f.lr_rank = f.x_rank = f.encode_rank = -1;
    return f;
}

static void run_faults(fault_run *f, test_comm_group *g)
{
    test_comm_run(g, fault_rank, f);
    test_comm_group_free(g);
}

START_TEST(nan_in_one_ranks_rows_stops_every_rank)
{
    float *x = steps_of_data(3);
    for (int mode = SAE_PARALLEL_DATA; mode <= SAE_PARALLEL_FEATURES; mode++) {
        fault_run f = faults(mode, mode == SAE_PARALLEL_DATA ? tokens3 : shards3, x);
        f.nan_step = 2;
        /* data: rank 1's rows; features: the batch every shard steps on */
        f.nan_rank = mode == SAE_PARALLEL_DATA ? 1 : -2;
        run_faults(&f, test_comm_group_create(3, 0));
        for (int r = 0; r < 3; r++) {
            for (int step = 0; step < STEPS; step++) {
                ck_assert_msg(f.status[r][step] == (step == 2 ? SAE_E_NONFINITE : SAE_OK),
                              "mode %d rank %d step %d: %s", mode, r, step,
                              sae_status_string(f.status[r][step]));
                if (step == 2)
                    ck_assert(f.unchanged[r][step]);
            }
            /* the failed step is not counted, and the ranks go on together */
            ck_assert_uint_eq(f.steps[r], STEPS - 1);
        }
    }
    free(x);
}
END_TEST

START_TEST(a_transport_failure_stops_every_rank_without_a_hang)
{
    float *x = steps_of_data(4);
    /* rank 2's calls fail from its 9th on (in the second or third step) */
    for (int mode = SAE_PARALLEL_DATA; mode <= SAE_PARALLEL_FEATURES; mode++) {
        fault_run f = faults(mode, mode == SAE_PARALLEL_DATA ? tokens3 : shards3, x);
        test_comm_group *g = test_comm_group_create(3, 0);
        test_comm_fail_at(g, 2, 8);
        run_faults(&f, g);
        for (int r = 0; r < 3; r++) {
            ck_assert_int_eq(f.status[r][0], SAE_OK);
            ck_assert_int_eq(f.status[r][STEPS - 1], SAE_E_COMM);
            for (int step = 0; step < STEPS; step++)
                if (f.status[r][step] != SAE_OK) {
                    ck_assert_int_eq(f.status[r][step], SAE_E_COMM);
                    ck_assert(f.unchanged[r][step]);
                }
        }
    }
    free(x);
}
END_TEST

START_TEST(ranks_that_disagree_are_refused)
{
    float *x = steps_of_data(5);
    fault_run cases[3] = {faults(SAE_PARALLEL_DATA, tokens3, x),
                          faults(SAE_PARALLEL_FEATURES, shards3, x),
                          faults(SAE_PARALLEL_FEATURES, shards3, x)};
    cases[0].lr_rank = 1; /* another learning rate */
    cases[1].lr_rank = 2;
    cases[2].x_rank = 1;  /* another batch on one shard */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        run_faults(&cases[c], test_comm_group_create(3, 0));
        for (int r = 0; r < 3; r++)
            for (int step = 0; step < STEPS; step++) {
                ck_assert_msg(cases[c].status[r][step] == SAE_E_INVALID_ARG,
                              "case %zu rank %d step %d: %s", c, r, step,
                              sae_status_string(cases[c].status[r][step]));
                ck_assert(cases[c].unchanged[r][step]);
            }
    }
    /* shards that leave a gap, overlap, or stop short of d_sae */
    static const size_t shard_sets[][MAX_RANKS][2] = {
        {{0, 9}, {10, 25}, {25, D_SAE}},
        {{0, 12}, {10, 25}, {25, D_SAE}},
        {{0, 9}, {9, 25}, {25, D_SAE - 1}},
    };
    for (size_t c = 0; c < sizeof shard_sets / sizeof shard_sets[0]; c++) {
        fault_run f = faults(SAE_PARALLEL_FEATURES, shards3, x);
        f.ranges = shard_sets[c];
        run_faults(&f, test_comm_group_create(3, 0));
        for (int r = 0; r < 3; r++)
            ck_assert_msg(f.status[r][0] == SAE_E_INVALID_ARG, "shard set %zu rank %d: %s", c, r,
                          sae_status_string(f.status[r][0]));
    }
    free(x);
}
END_TEST

/* ---- the 2-D grid: failures, disagreements, what it refuses ---------------------- */

/* A 2 x 3 grid with nothing wrong (groups of 17 and 31 tokens, shards of 9,
 * 16 and 12 features), to change one thing of. */
static fault_run grid_faults(const float *x)
{
    fault_run f = faults(SAE_PARALLEL_DATA | SAE_PARALLEL_FEATURES, shards3, x);
    f.rows = tokens2;
    f.shards = 3;
    return f;
}

enum { GRID_RANKS = 6 };

static void run_grid_faults(fault_run *f, test_comm_grid *grid)
{
    test_comm_grid_run(grid, fault_grid_rank, f);
    test_comm_grid_free(grid);
}

/* Every rank: status want at every step (OK where want_at_step < 0 or at the
 * other steps), failed steps unchanged. */
static void expect_grid_statuses(const fault_run *f, int want, int only_step, const char *what)
{
    for (int r = 0; r < GRID_RANKS; r++)
        for (int step = 0; step < STEPS; step++) {
            int expect = only_step < 0 || step == only_step ? want : SAE_OK;
            ck_assert_msg(f->status[r][step] == expect, "%s: rank %d step %d: %s, want %s", what,
                          r, step, sae_status_string(f->status[r][step]),
                          sae_status_string(expect));
            if (expect != SAE_OK)
                ck_assert_msg(f->unchanged[r][step], "%s: rank %d step %d changed the model",
                              what, r, step);
        }
}

START_TEST(grid_exchanges_and_failures)
{
    float *x = steps_of_data(8);
    /* nothing wrong: DATA carries three calls per step (the header, the
     * gradient allreduce, the statistics) */
    fault_run f = grid_faults(x);
    test_comm_grid *grid = test_comm_grid_create(2, 3, 0);
    test_comm_grid_run(grid, fault_grid_rank, &f);
    for (int s = 0; s < 3; s++)
        for (int g = 0; g < 2; g++)
            ck_assert_uint_eq(test_comm_calls(test_comm_grid_data(grid, s), g), 3 * STEPS);
    test_comm_grid_free(grid);
    expect_grid_statuses(&f, SAE_OK, -1, "a clean grid");
    /* NaN in group 1's rows at step 2: every rank of both groups refuses it */
    f = grid_faults(x);
    f.nan_rank = 1;
    f.nan_step = 2;
    run_grid_faults(&f, test_comm_grid_create(2, 3, 0));
    expect_grid_statuses(&f, SAE_E_NONFINITE, 2, "NaN in group 1's rows");
    for (int r = 0; r < GRID_RANKS; r++)
        ck_assert_uint_eq(f.steps[r], STEPS - 1);
    free(x);
}
END_TEST

/* One shard's encoder fails (an allocation of its bf16 product, on its node
 * alone): it still joins the block's exchanges (TopK's candidates,
 * BatchTopK's histograms and ties), which carry its failure to every rank,
 * 3 shards and a 2 x 3 grid (shard 1 of group 1). */
START_TEST(an_encoder_failure_on_one_shard_stops_every_rank)
{
    float *x = steps_of_data(5);
    const int archs[] = {SAE_ARCH_TOPK, SAE_ARCH_BATCHTOPK};
    for (int a = 0; a < 2; a++) {
        fault_run f = faults(SAE_PARALLEL_FEATURES, shards3, x);
        f.arch = archs[a];
        f.encode_rank = 1;
        f.encode_step = 2;
        run_faults(&f, test_comm_group_create(3, 0));
        for (int r = 0; r < 3; r++) {
            for (int step = 0; step < STEPS; step++) {
                ck_assert_msg(f.status[r][step] == (step == 2 ? SAE_E_NOMEM : SAE_OK),
                              "arch %d rank %d step %d: %s", archs[a], r, step,
                              sae_status_string(f.status[r][step]));
                if (step == 2)
                    ck_assert(f.unchanged[r][step]);
            }
            ck_assert_uint_eq(f.steps[r], STEPS - 1);
        }
        f = grid_faults(x);
        f.arch = archs[a];
        f.encode_rank = 4;
        f.encode_step = 2;
        run_grid_faults(&f, test_comm_grid_create(2, 3, 0));
        expect_grid_statuses(&f, SAE_E_NOMEM, 2, "an encoder failure on a grid");
    }
    free(x);
}
END_TEST

/* A transport failure at call `call` of rank `rank` of one communicator of a
 * 2 x 3 grid (axis 0: shard 1's DATA communicator, 1: group 1's FEATURES
 * communicator) in a run of arch: no hang, no mismatched call (the double
 * aborts on one), and every rank fails from some step on with SAE_E_COMM and
 * nothing changed, the ranks at most a step apart (a group whose last
 * exchange succeeded may finish the step the other group fails). */
static void grid_transport_failure(const float *x, int arch, int axis, int rank, uint64_t call)
{
    fault_run f = grid_faults(x);
    f.arch = arch;
    test_comm_grid *grid = test_comm_grid_create(2, 3, 0);
    test_comm_fail_at(axis == 0 ? test_comm_grid_data(grid, 1) : test_comm_grid_features(grid, 1),
                      rank, call);
    run_grid_faults(&f, grid);
    int first[GRID_RANKS], lo = STEPS, hi = 0;
    for (int r = 0; r < GRID_RANKS; r++) {
        first[r] = STEPS;
        for (int step = 0; step < STEPS; step++) {
            int st = f.status[r][step];
            if (st != SAE_OK && first[r] == STEPS)
                first[r] = step;
            ck_assert_msg(step < first[r] ? st == SAE_OK : st == SAE_E_COMM,
                          "arch %d, axis %d call %d: rank %d step %d: %s", arch, axis, (int)call,
                          r, step, sae_status_string(st));
            if (st != SAE_OK)
                ck_assert(f.unchanged[r][step]);
        }
        lo = first[r] < lo ? first[r] : lo;
        hi = first[r] > hi ? first[r] : hi;
    }
    ck_assert_msg(hi < STEPS && hi - lo <= 1, "arch %d, axis %d call %d: ranks failed at steps "
                  "%d .. %d", arch, axis, (int)call, lo, hi);
}

START_TEST(grid_transport_failures_stop_every_rank)
{
    float *x = steps_of_data(8);
    /* every call of the second step (and some of the third) on each axis */
    static const int archs[] = {SAE_ARCH_TOPK, SAE_ARCH_BATCHTOPK};
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
        for (uint64_t call = 3; call < 9; call++)
            grid_transport_failure(x, archs[a], 0, 1, call);
        for (uint64_t call = 6; call < 20; call++)
            grid_transport_failure(x, archs[a], 1, 2, call);
    }
    free(x);
}
END_TEST

START_TEST(grid_ranks_that_disagree_are_refused)
{
    float *x = steps_of_data(9);
    /* another learning rate on one rank; group 1 cut into other shards (each
     * group tiles d_sae, the DATA ranks hold different ones); another batch
     * on one shard of group 1 (group 0 learns it over DATA) */
    static const size_t other_shards[GRID_RANKS][2] = {{0, 9}, {9, 25}, {25, D_SAE},
                                                       {0, 9}, {9, 20}, {20, D_SAE}};
    fault_run cases[3] = {grid_faults(x), grid_faults(x), grid_faults(x)};
    cases[0].lr_rank = 4;
    cases[1].ranges = other_shards;
    cases[2].x_rank = 5;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        run_grid_faults(&cases[c], test_comm_grid_create(2, 3, 0));
        expect_grid_statuses(&cases[c], SAE_E_INVALID_ARG, -1, "disagreeing ranks");
    }
    free(x);
}
END_TEST

START_TEST(set_comm_checks_its_arguments)
{
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, 4, 6, 1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    test_comm_group *g = test_comm_group_create(2, 0), *one_more = test_comm_group_create(2, 0);
    sae_comm c, bad;
    test_comm_get(g, 0, &c);
    ck_assert_int_eq(sae_optimizer_set_comm(NULL, SAE_PARALLEL_DATA, &c), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_set_comm(o, 0, &c), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_set_comm(o, 3, &c), SAE_E_INVALID_ARG);
    bad = c;
    bad.struct_size = 8;
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, &bad), SAE_E_INVALID_ARG);
    bad = c;
    bad.rank = 2;
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, &bad), SAE_E_INVALID_ARG);
    bad = c;
    bad.allgather = NULL;
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, &bad), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(o->par);
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, NULL), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, &c), SAE_OK);
    /* a 2-D grid takes two communicators, not one twice */
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, &c), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(), "sae_optimizer_set_comm: comm is the communicator "
                     "already attached as SAE_PARALLEL_DATA: a 2-D grid needs the ranks of the "
                     "data group (FEATURES) and the ranks holding the same shard (DATA), two "
                     "communicators");
    ck_assert_int_eq(o->par->features.struct_size, 0);
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, &c), SAE_OK); /* replaced */
    sae_comm other;
    test_comm_get(one_more, 0, &other);
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, &other), SAE_OK);
    ck_assert_ptr_eq(o->par->features.ctx, other.ctx);
    ck_assert_ptr_eq(o->par->data.ctx, c.ctx);
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, NULL), SAE_OK);
    ck_assert_ptr_eq(o->par->features.ctx, other.ctx); /* the other axis stays */
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, NULL), SAE_OK);
    ck_assert_ptr_null(o->par);
    /* a communicator of one rank: the single-process step */
    test_comm_group *one = test_comm_group_create(1, 0);
    sae_comm solo;
    test_comm_get(one, 0, &solo);
    ck_assert_int_eq(sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, &solo), SAE_OK);
    float *x = test_gaussian(8, 4, 1.0, 0.0, 1);
    sae_losses l;
    ck_assert_int_eq(sae_step(m, o, x, 8, &l), SAE_OK);
    free(x);
    sae_optimizer_free(o); /* frees what set_comm allocated */
    sae_model_free(m);
    test_comm_group_free(one);
    test_comm_group_free(one_more);
    test_comm_group_free(g);
}
END_TEST

START_TEST(shards_are_slices_and_refuse_whole_model_calls)
{
    size_t b, e, total;
    ck_assert_int_eq(sae_shard_range(10, 3, 0, &b, &e), SAE_OK);
    ck_assert_uint_eq(b, 0);
    ck_assert_uint_eq(e, 3);
    ck_assert_int_eq(sae_shard_range(10, 3, 1, &b, &e), SAE_OK);
    ck_assert_uint_eq(b, 3);
    ck_assert_uint_eq(e, 6);
    ck_assert_int_eq(sae_shard_range(10, 3, 2, &b, &e), SAE_OK);
    ck_assert_uint_eq(b, 6);
    ck_assert_uint_eq(e, 10);
    /* the even split of a huge model: no overflow */
    ck_assert_int_eq(sae_shard_range(SIZE_MAX, 7, 6, &b, &e), SAE_OK);
    ck_assert_uint_eq(e, SIZE_MAX);
    b = e = 77;
    ck_assert_int_eq(sae_shard_range(10, 0, 0, &b, &e), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_shard_range(10, 11, 0, &b, &e), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_shard_range(10, 3, 3, &b, &e), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_shard_range(10, 3, -1, &b, &e), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_shard_range(0, 1, 0, &b, &e), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_shard_range(10, 3, 0, NULL, &e), SAE_E_INVALID_ARG);
    ck_assert_uint_eq(b, 77);

    sae_model *m = (sae_model *)&b;
    ck_assert_int_eq(sae_model_create_shard(&m, 4, 10, 5, 5, 1, SAE_ARCH_RELU, 0), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(sae_model_create_shard(&m, 4, 10, 5, 11, 1, SAE_ARCH_RELU, 0), SAE_E_INVALID_ARG);
    /* k counts the whole model's features, not the shard's */
    ck_assert_int_eq(sae_model_create_shard(&m, 4, 10, 0, 3, 1, SAE_ARCH_TOPK, 5), SAE_OK);
    ck_assert_uint_eq(sae_model_k(m), 5);
    ck_assert_uint_eq(sae_model_d_sae(m), 3);
    ck_assert_uint_eq(sae_model_tensor_size(m, SAE_W_ENC), 12);
    ck_assert_int_eq(sae_model_shard(m, &b, &e, &total), SAE_OK);
    ck_assert_uint_eq(b, 0);
    ck_assert_uint_eq(e, 3);
    ck_assert_uint_eq(total, 10);
    ck_assert_int_eq(sae_model_shard(NULL, &b, &e, &total), SAE_E_INVALID_ARG);

    /* a skip transcoder's shard: its features' slice, d_out-wide decoder
     * rows, the whole W_skip; a bad range, kind or d_out leaves *out NULL */
    sae_model *tc = (sae_model *)&b;
    ck_assert_int_eq(sae_model_create_transcoder_shard(&tc, 4, 6, 10, 5, 5, 1,
                     SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_RELU, 0), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(tc);
    ck_assert_int_eq(sae_model_create_transcoder_shard(&tc, 4, 6, 10, 5, 11, 1,
                     SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_RELU, 0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create_transcoder_shard(&tc, 4, 0, 10, 0, 3, 1,
                     SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_RELU, 0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create_transcoder_shard(&tc, 4, 6, 10, 0, 3, 1,
                     SAE_KIND_AUTOENCODER, SAE_ARCH_RELU, 0), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(tc);
    ck_assert_int_eq(sae_model_create_transcoder_shard(NULL, 4, 6, 10, 0, 3, 1,
                     SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_RELU, 0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create_transcoder_shard(&tc, 4, 6, 10, 7, 10, 1,
                     SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_RELU, 0), SAE_OK);
    ck_assert_uint_eq(sae_model_d_sae(tc), 3);
    ck_assert_uint_eq(sae_model_tensor_size(tc, SAE_W_ENC), 3 * 4);
    ck_assert_uint_eq(sae_model_tensor_size(tc, SAE_W_DEC), 3 * 6);
    ck_assert_uint_eq(sae_model_tensor_size(tc, SAE_W_SKIP), 6 * 4);
    ck_assert_int_eq(sae_model_shard(tc, &b, &e, &total), SAE_OK);
    ck_assert_uint_eq(b, 7);
    ck_assert_uint_eq(e, 10);
    ck_assert_uint_eq(total, 10);
    sae_model_free(tc);

    /* a Matryoshka shard keeps the whole model's widths and k; a bad range,
     * k or width list leaves *out NULL */
    const size_t widths[] = {4, 10};
    sae_model *mat = (sae_model *)&b;
    ck_assert_int_eq(sae_model_create_matryoshka_shard(&mat, 4, 10, 6, 6, 1, 2, widths, 2),
                     SAE_E_INVALID_ARG);
    ck_assert_ptr_null(mat);
    ck_assert_int_eq(sae_model_create_matryoshka_shard(&mat, 4, 10, 6, 11, 1, 2, widths, 2),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create_matryoshka_shard(&mat, 4, 10, 0, 5, 1, 0, widths, 2),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create_matryoshka_shard(&mat, 4, 10, 0, 5, 1, 2, NULL, 2),
                     SAE_E_INVALID_ARG);
    const size_t descending[] = {10, 4};
    ck_assert_int_eq(sae_model_create_matryoshka_shard(&mat, 4, 10, 0, 5, 1, 2, descending, 2),
                     SAE_E_INVALID_ARG);
    ck_assert_ptr_null(mat);
    ck_assert_int_eq(sae_model_create_matryoshka_shard(NULL, 4, 10, 0, 5, 1, 2, widths, 2),
                     SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_create_matryoshka_shard(&mat, 4, 10, 3, 10, 1, 2, widths, 2),
                     SAE_OK);
    size_t got[2] = {0};
    ck_assert_uint_eq(sae_model_d_sae(mat), 7);
    ck_assert_uint_eq(sae_model_matryoshka_levels(mat), 2);
    ck_assert_int_eq(sae_model_matryoshka_widths(mat, got, 2), SAE_OK);
    ck_assert_uint_eq(got[0], 4);
    ck_assert_uint_eq(got[1], 10);
    ck_assert_int_eq(sae_model_shard(mat, &b, &e, &total), SAE_OK);
    ck_assert_uint_eq(b, 3);
    ck_assert_uint_eq(e, 10);
    sae_model_free(mat);
    float x[8] = {0}, f[6], xh[8];
    sae_losses l;
    double fvu;
    uint64_t counts[3] = {0}, hist[4];
    size_t n_dead, size;
    ck_assert_int_eq(sae_encode(m, x, 2, f), SAE_E_STATE);
    ck_assert_int_eq(sae_decode(m, f, 2, xh), SAE_E_STATE);
    ck_assert_int_eq(sae_loss(m, x, 2, 0.0, &l), SAE_E_STATE);
    ck_assert_int_eq(sae_fvu(m, x, 2, &fvu), SAE_E_STATE);
    ck_assert_int_eq(sae_feature_fire_counts(m, x, 2, counts, 3), SAE_E_STATE);
    ck_assert_int_eq(sae_feature_density_histogram(m, x, 2, -3, 0, 4, hist, &n_dead), SAE_E_STATE);
    ck_assert_int_eq(sae_model_save_size(m, &size), SAE_E_STATE);
    ck_assert_int_eq(sae_model_save(m, "/nonexistent/shard.safetensors"), SAE_E_STATE);
    sae_optimizer *o;
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_save_size(o, &size), SAE_E_STATE);
    /* a whole model's optimizer does not step a shard of the same local size */
    sae_model *small;
    ck_assert_int_eq(sae_model_create_arch(&small, 4, 3, 1, SAE_ARCH_TOPK, 2), SAE_OK);
    ck_assert_int_eq(sae_step(small, o, x, 2, NULL), SAE_E_INVALID_ARG);
    sae_model_free(small);
    sae_optimizer_free(o);
    sae_model_free(m);
    /* the whole range is an ordinary model */
    ck_assert_int_eq(sae_model_create_shard(&m, 4, 10, 0, 10, 1, SAE_ARCH_RELU, 0), SAE_OK);
    ck_assert_int_eq(sae_model_save_size(m, &size), SAE_OK);
    sae_model_free(m);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("parallel");
    TCase *tc = tcase_create("against_one_process");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, relu_dense_matches_one_process);
    tcase_add_test(tc, relu_sparse_matches_one_process);
    tcase_add_test(tc, relu_auto_matches_one_process);
    tcase_add_test(tc, topk_matches_one_process);
    tcase_add_test(tc, topk_auxk_matches_one_process);
    tcase_add_test(tc, batchtopk_auxk_matches_one_process);
    tcase_add_test(tc, batchtopk_ties_keep_the_global_order);
    tcase_add_test(tc, jumprelu_matches_one_process);
    tcase_add_test(tc, resampling_matches_one_process);
    tcase_add_test(tc, recipe_matches_one_process);
    tcase_add_test(tc, gated_data_parallel_matches_one_process);
    tcase_add_test(tc, transcoders_data_parallel_match_one_process);
    tcase_add_test(tc, gated_feature_shards_match_one_process);
    tcase_add_test(tc, transcoder_feature_shards_match_one_process);
    tcase_add_test(tc, matryoshka_data_parallel_matches_one_process);
    tcase_add_test(tc, matryoshka_feature_shards_match_one_process);
    tcase_add_test(tc, families_on_a_grid_match_one_process);
    tcase_add_test(tc, batchtopk_auxk_shards_take_a_batch_wider_than_a_block);
    suite_add_tcase(s, tc);
    TCase *tf = tcase_create("faults");
    tcase_set_timeout(tf, 120);
    tcase_add_test(tf, replicas_stay_identical_when_the_transport_rounds_differently);
    tcase_add_test(tf, nan_in_one_ranks_rows_stops_every_rank);
    tcase_add_test(tf, a_transport_failure_stops_every_rank_without_a_hang);
    tcase_add_test(tf, ranks_that_disagree_are_refused);
    tcase_add_test(tf, grid_exchanges_and_failures);
    tcase_add_test(tf, an_encoder_failure_on_one_shard_stops_every_rank);
    tcase_add_test(tf, grid_ranks_that_disagree_are_refused);
    tcase_add_test(tf, grid_transport_failures_stop_every_rank);
    tcase_add_test(tf, set_comm_checks_its_arguments);
    tcase_add_test(tf, shards_are_slices_and_refuse_whole_model_calls);
    suite_add_tcase(s, tf);
    return s;
}

TEST_MAIN(make_suite)
