/* Checkpoints of distributed runs (src/collective.c and the shard loaders),
 * over the thread double: shards that save one model and one optimizer
 * together write the single-process files (a single process loads them, and
 * saving what it loaded gives the same bytes), which 2 shards, 3 shards or
 * one process resume (resharding: each loads its slice); data-parallel
 * ranks leave the writing to rank 0; a save that fails on any rank fails on
 * every rank and leaves no file behind. */
#define _XOPEN_SOURCE 700 /* mkdtemp */
#include "../src/parallel.h"
#include "comm_threads.h"
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { D_IN = 10, D_SAE = 29, N_TOKENS = 32, MAX_RANKS = 3 };

static const size_t shards3[] = {0, 8, 19, D_SAE}, shards2[] = {0, 15, D_SAE};

static void configure(sae_optimizer *o)
{
    sae_optimizer_set(o, SAE_OPT_LR, 1e-2);
    sae_optimizer_set(o, SAE_OPT_THREADS, 1);
    sae_optimizer_set(o, SAE_OPT_L1_COEFF, 0.1);
    sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, N_TOKENS);
    sae_optimizer_set(o, SAE_OPT_THRESHOLD_BETA, 0.5);
}

static double arch_param(int arch)
{
    return arch == SAE_ARCH_JUMPRELU                             ? 0.05
           : arch == SAE_ARCH_RELU || arch == SAE_ARCH_GATED ? 0.0
                                                             : 4;
}

/* A temporary directory of the test's own. */
static void temp_dir(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/sae-collective-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

static size_t files_in(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(*size ? *size : 1);
    ck_assert_uint_eq(fread(buf, 1, *size, f), *size);
    fclose(f);
    return buf;
}

/* What the ranks do: train a few steps (features mode on the same x, or
 * data-parallel on a share), then save collectively into dir. kind: a
 * SAE_KIND_*; transcoders learn y (D_OUT wide). */
enum { D_OUT = 7 };

typedef struct save_run {
    int mode, arch, kind;
    const size_t *split;
    const float *x, *y;
    const char *dir;       /* the checkpoint directory */
    int steps;
    sae_model *models[MAX_RANKS];
    sae_optimizer *opts[MAX_RANKS];
    int step_status[MAX_RANKS], model_status[MAX_RANKS], opt_status[MAX_RANKS];
} save_run;

/* Matryoshka's levels 4, 12, D_SAE: bands that cross the shards' boundaries */
static const size_t matryoshka_widths[] = {4, 12};

/* Features [begin, end) of the run's model (the whole one: 0, D_SAE). */
static int create_part(const save_run *s, size_t begin, size_t end, sae_model **m)
{
    if (s->arch == SAE_ARCH_MATRYOSHKA)
        return sae_model_create_matryoshka_shard(m, D_IN, D_SAE, begin, end, 5,
                                                 (size_t)arch_param(s->arch), matryoshka_widths,
                                                 2);
    if (s->kind != SAE_KIND_AUTOENCODER)
        return sae_model_create_transcoder_shard(m, D_IN, D_OUT, D_SAE, begin, end, 5, s->kind,
                                                 s->arch, arch_param(s->arch));
    return sae_model_create_shard(m, D_IN, D_SAE, begin, end, 5, s->arch, arch_param(s->arch));
}

/* One step on rows [first, first + n) of batch `step`. */
static int step_on(const save_run *s, sae_model *m, sae_optimizer *o, int step, size_t first,
                   size_t n)
{
    const size_t row = (size_t)step * N_TOKENS + first;
    if (s->kind != SAE_KIND_AUTOENCODER)
        return sae_step_target(m, o, s->x + row * D_IN, s->y + row * D_OUT, n, NULL);
    return sae_step(m, o, s->x + row * D_IN, n, NULL);
}

static void train_and_save(int rank, const sae_comm *comm, void *arg)
{
    save_run *s = arg;
    const bool data = s->mode == SAE_PARALLEL_DATA;
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    if (data)
        create_part(s, 0, D_SAE, &m);
    else
        create_part(s, s->split[rank], s->split[rank + 1], &m);
    sae_optimizer_create(&o, m);
    configure(o);
    sae_optimizer_set_comm(o, s->mode, comm);
    int rc = SAE_OK;
    for (int step = 0; step < s->steps && rc == SAE_OK; step++)
        rc = data ? step_on(s, m, o, step, s->split[rank], s->split[rank + 1] - s->split[rank])
                  : step_on(s, m, o, step, 0, N_TOKENS);
    s->step_status[rank] = rc;
    s->model_status[rank] = sae_model_save_collective(m, comm, s->dir);
    s->opt_status[rank] = sae_optimizer_save_collective(o, comm, s->dir);
    s->models[rank] = m;
    s->opts[rank] = o;
}

/* Resuming: each rank loads its shard [split[r], split[r + 1]) of the
 * checkpoint in dir and its optimizer, and takes step `steps` (feature
 * shards: the whole batch). */
static void load_and_step(int rank, const sae_comm *comm, void *arg)
{
    save_run *s = arg;
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    int rc = sae_model_load_shard(&m, s->dir, s->split[rank], s->split[rank + 1]);
    if (rc == SAE_OK)
        rc = sae_optimizer_load(&o, m, s->dir);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_THREADS, 1);
    if (rc == SAE_OK)
        rc = sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, comm);
    if (rc == SAE_OK)
        rc = step_on(s, m, o, s->steps, 0, N_TOKENS);
    s->step_status[rank] = rc;
    s->models[rank] = m;
    s->opts[rank] = o;
}

static void run_ranks(save_run *s, int n_ranks, test_comm_fn fn)
{
    test_comm_group *g = test_comm_group_create(n_ranks, 0);
    ck_assert_ptr_nonnull(g);
    test_comm_run(g, fn, s);
    test_comm_group_free(g);
}

static void free_run(save_run *s, int n_ranks)
{
    for (int r = 0; r < n_ranks; r++) {
        sae_optimizer_free(s->opts[r]);
        sae_model_free(s->models[r]);
        s->opts[r] = NULL;
        s->models[r] = NULL;
    }
}

/* Every tensor a model may have. */
static const int tensors[] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC,
                              SAE_THRESHOLD, SAE_W_SKIP, SAE_B_MAG, SAE_R_MAG};
enum { N_TENSORS = sizeof tensors / sizeof tensors[0] };

/* The whole model's tensor against a shard's slice of it: W_enc columns,
 * W_dec rows (d_out wide), per-feature entries at [begin, end); b_dec and
 * W_skip whole. tol 0: the same bits; else within tol of the tensor's
 * largest magnitude. */
static void check_slice(const sae_model *whole, const sae_model *shard, int which, double tol)
{
    size_t begin, end, total;
    sae_model_shard(shard, &begin, &end, &total);
    size_t n_whole = sae_model_tensor_size(whole, which), n = sae_model_tensor_size(shard, which);
    if (n == 0)
        return;
    float *a = malloc(n_whole * sizeof *a), *b = malloc(n * sizeof *b);
    ck_assert_int_eq(sae_model_get_tensor(whole, which, a, n_whole), SAE_OK);
    ck_assert_int_eq(sae_model_get_tensor(shard, which, b, n), SAE_OK);
    const size_t w = end - begin, d_out = sae_model_d_out(whole);
    double scale = 1e-30;
    for (size_t k = 0; k < n_whole; k++)
        scale = fmax(scale, fabs((double)a[k]));
    for (size_t k = 0; k < n; k++) {
        size_t at = k;
        if (which == SAE_W_ENC)
            at = (k / w) * total + begin + k % w;
        else if (which == SAE_W_DEC)
            at = begin * d_out + k;
        else if (n == w && n_whole == total)
            at = begin + k;
        bool ok = tol == 0.0 ? memcmp(&a[at], &b[k], sizeof(float)) == 0
                             : fabs((double)a[at] - b[k]) <= tol * scale;
        ck_assert_msg(ok, "tensor %d [%zu] of the shard [%zu, %zu): %a, the whole model has %a",
                      which, k, begin, end, (double)b[k], (double)a[at]);
    }
    free(a);
    free(b);
}

static void check_optimizer_slice(const sae_optimizer *whole, const sae_optimizer *shard)
{
    const size_t b = shard->shard_begin, w = shard->d_sae, d_out = whole->lay.d_out;
    ck_assert_uint_eq(whole->steps, shard->steps);
    for (size_t i = 0; i < w; i++)
        ck_assert_uint_eq(whole->since_fired[b + i], shard->since_fired[i]);
    const float *blocks[2][2] = {{whole->m1, shard->m1}, {whole->m2, shard->m2}};
    for (int k = 0; k < 2; k++) {
        const float *a = blocks[k][0], *s = blocks[k][1];
        /* W_enc (transposed) and W_dec: the shard's rows; per-feature
         * entries; b_dec and W_skip whole */
        ck_assert_mem_eq(a + whole->lay.w_enc_t + b * D_IN, s + shard->lay.w_enc_t,
                         w * D_IN * sizeof(float));
        ck_assert_mem_eq(a + whole->lay.w_dec + b * d_out, s + shard->lay.w_dec,
                         w * d_out * sizeof(float));
        ck_assert_mem_eq(a + whole->lay.b_enc + b, s + shard->lay.b_enc, w * sizeof(float));
        ck_assert_mem_eq(a + whole->lay.b_dec, s + shard->lay.b_dec, d_out * sizeof(float));
        if (whole->lay.log_thr_count)
            ck_assert_mem_eq(a + whole->lay.log_thr + b, s + shard->lay.log_thr,
                             w * sizeof(float));
        if (whole->lay.gated_count) {
            ck_assert_mem_eq(a + whole->lay.b_mag + b, s + shard->lay.b_mag, w * sizeof(float));
            ck_assert_mem_eq(a + whole->lay.r_mag + b, s + shard->lay.r_mag, w * sizeof(float));
        }
        if (whole->lay.w_skip_count)
            ck_assert_mem_eq(a + whole->lay.w_skip, s + shard->lay.w_skip,
                             whole->lay.w_skip_count * sizeof(float));
    }
}

/* The checkpoint of *saved resumed by n_ranks shards (split): their next
 * step gives whole_next, one process's, within 1e-4. */
static void check_resumes(const save_run *saved, const sae_model *whole_next, int n_ranks,
                          const size_t *split)
{
    save_run r = *saved;
    r.split = split;
    run_ranks(&r, n_ranks, load_and_step);
    for (int k = 0; k < n_ranks; k++) {
        ck_assert_msg(r.step_status[k] == SAE_OK, "%d shards resuming: rank %d: %s", n_ranks, k,
                      sae_status_string(r.step_status[k]));
        for (int t = 0; t < N_TENSORS; t++)
            check_slice(whole_next, r.models[k], tensors[t], 1e-4);
        ck_assert_uint_eq(sae_optimizer_steps(r.opts[k]), (uint64_t)saved->steps + 1);
    }
    free_run(&r, n_ranks);
}

/* A run of the family (kind, arch) on 3 shards saves one checkpoint: the
 * single-process files in SAELens's layout (cfg_name: the architecture
 * cfg.json names; d_out for transcoders), which one process loads (every
 * shard's values exactly; saving them again gives the same bytes) and 2
 * shards load (resharding); one process, 3 shards and 2 shards resume it
 * alike. */
static void check_family(int kind, int arch, const char *cfg_name)
{
    char dir[64], again[64];
    temp_dir(dir, sizeof dir);
    temp_dir(again, sizeof again);
    float *x = test_gaussian(4 * N_TOKENS, D_IN, 1.0, 0.2, 77);
    float *y = test_gaussian(4 * N_TOKENS, D_OUT, 1.0, 0.2, 78);
    save_run s = {.mode = SAE_PARALLEL_FEATURES, .arch = arch, .kind = kind, .split = shards3,
                  .x = x, .y = y, .dir = dir, .steps = 3};
    run_ranks(&s, 3, train_and_save);
    for (int r = 0; r < 3; r++) {
        ck_assert_msg(s.step_status[r] == SAE_OK, "rank %d: %s", r,
                      sae_status_string(s.step_status[r]));
        ck_assert_msg(s.model_status[r] == SAE_OK, "rank %d: %s", r,
                      sae_status_string(s.model_status[r]));
        ck_assert_int_eq(s.opt_status[r], SAE_OK);
    }
    ck_assert_uint_eq(files_in(dir), 3); /* weights, cfg.json, optimizer: nothing else */
    /* SAELens's layout: the architecture's name, d_out for transcoders */
    char path[128], want[64];
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    size_t cfg_size;
    char *cfg = (char *)read_file(path, &cfg_size);
    cfg = realloc(cfg, cfg_size + 1);
    ck_assert_ptr_nonnull(cfg);
    cfg[cfg_size] = '\0';
    snprintf(want, sizeof want, "\"architecture\": \"%s\"", cfg_name);
    ck_assert_msg(strstr(cfg, want), "cfg.json lacks %s:\n%s", want, cfg);
    snprintf(want, sizeof want, "\"d_out\": %d", D_OUT);
    ck_assert(kind == SAE_KIND_AUTOENCODER ? !strstr(cfg, "\"d_out\"") : !!strstr(cfg, want));
    free(cfg);
    /* one process loads the files: every shard's values, exactly */
    sae_model *whole;
    sae_optimizer *whole_o;
    ck_assert_int_eq(sae_model_load(&whole, dir), SAE_OK);
    ck_assert_int_eq(sae_model_arch(whole), arch);
    ck_assert_int_eq(sae_model_kind(whole), kind);
    ck_assert_uint_eq(sae_model_d_sae(whole), D_SAE);
    if (arch == SAE_ARCH_MATRYOSHKA) { /* its levels */
        size_t widths[3];
        ck_assert_int_eq(sae_model_matryoshka_widths(whole, widths, 3), SAE_OK);
        ck_assert(widths[0] == 4 && widths[1] == 12 && widths[2] == D_SAE);
    }
    ck_assert_int_eq(sae_optimizer_load(&whole_o, whole, dir), SAE_OK);
    for (int r = 0; r < 3; r++) {
        for (int k = 0; k < N_TENSORS; k++)
            check_slice(whole, s.models[r], tensors[k], 0.0);
        check_optimizer_slice(whole_o, s.opts[r]);
    }
    /* and saving what it loaded gives the same bytes: the single-process format */
    ck_assert_int_eq(sae_model_save(whole, again), SAE_OK);
    ck_assert_int_eq(sae_optimizer_save(whole_o, again), SAE_OK);
    static const char *const names[] = {"sae_weights.safetensors", "cfg.json",
                                        "optimizer.safetensors"};
    for (int k = 0; k < 3; k++) {
        char a[128], b[128];
        snprintf(a, sizeof a, "%s/%s", dir, names[k]);
        snprintf(b, sizeof b, "%s/%s", again, names[k]);
        size_t na, nb;
        unsigned char *fa = read_file(a, &na), *fb = read_file(b, &nb);
        ck_assert_uint_eq(na, nb);
        ck_assert_msg(memcmp(fa, fb, na) == 0, "%s differs from a single process's", names[k]);
        free(fa);
        free(fb);
    }
    /* resharding: 2 shards load their slices, and equal the 3 shards' values */
    for (int r = 0; r < 2; r++) {
        sae_model *shard;
        sae_optimizer *so;
        ck_assert_int_eq(sae_model_load_shard(&shard, dir, shards2[r], shards2[r + 1]), SAE_OK);
        ck_assert_int_eq(sae_optimizer_load(&so, shard, dir), SAE_OK);
        for (int k = 0; k < N_TENSORS; k++)
            check_slice(whole, shard, tensors[k], 0.0);
        check_optimizer_slice(whole_o, so);
        sae_optimizer_free(so);
        sae_model_free(shard);
    }
    /* resuming: one process's next step, then 3 shards' and 2 shards' */
    ck_assert_int_eq(sae_optimizer_set(whole_o, SAE_OPT_THREADS, 1), SAE_OK);
    ck_assert_int_eq(step_on(&s, whole, whole_o, s.steps, 0, N_TOKENS), SAE_OK);
    check_resumes(&s, whole, 3, shards3);
    check_resumes(&s, whole, 2, shards2);
    sae_optimizer_free(whole_o);
    sae_model_free(whole);
    free_run(&s, 3);
    free(y);
    free(x);
    remove_dir(dir);
    remove_dir(again);
}

static void check_arch(int arch)
{
    static const char *const names[] = {[SAE_ARCH_RELU] = "standard", [SAE_ARCH_TOPK] = "topk",
                                        [SAE_ARCH_BATCHTOPK] = "jumprelu",
                                        [SAE_ARCH_JUMPRELU] = "jumprelu"};
    check_family(SAE_KIND_AUTOENCODER, arch, names[arch]);
}

START_TEST(relu_shards_save_the_single_process_files) { check_arch(SAE_ARCH_RELU); }
END_TEST

START_TEST(topk_shards_save_the_single_process_files) { check_arch(SAE_ARCH_TOPK); }
END_TEST

START_TEST(batchtopk_shards_save_the_single_process_files) { check_arch(SAE_ARCH_BATCHTOPK); }
END_TEST

START_TEST(jumprelu_shards_save_the_single_process_files) { check_arch(SAE_ARCH_JUMPRELU); }
END_TEST

START_TEST(gated_shards_save_the_single_process_files)
{
    check_family(SAE_KIND_AUTOENCODER, SAE_ARCH_GATED, "gated");
}
END_TEST

START_TEST(matryoshka_shards_save_the_single_process_files)
{
    check_family(SAE_KIND_AUTOENCODER, SAE_ARCH_MATRYOSHKA, "jumprelu"); /* as BatchTopK */
}
END_TEST

START_TEST(transcoder_shards_save_the_single_process_files)
{
    check_family(SAE_KIND_TRANSCODER, SAE_ARCH_RELU, "transcoder");
    check_family(SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_RELU, "skip_transcoder");
    check_family(SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_JUMPRELU, "jumprelu_skip_transcoder");
}
END_TEST

START_TEST(data_parallel_ranks_leave_the_writing_to_rank_0)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    float *x = test_gaussian(2 * N_TOKENS, D_IN, 1.0, 0.2, 78);
    static const size_t tokens3[] = {0, 10, 21, N_TOKENS};
    save_run s = {.mode = SAE_PARALLEL_DATA, .arch = SAE_ARCH_TOPK, .split = tokens3, .x = x,
                  .dir = dir, .steps = 2};
    run_ranks(&s, 3, train_and_save);
    for (int r = 0; r < 3; r++) {
        ck_assert_int_eq(s.step_status[r], SAE_OK);
        ck_assert_int_eq(s.model_status[r], SAE_OK);
        ck_assert_int_eq(s.opt_status[r], SAE_OK);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    size_t n, n_ref;
    unsigned char *saved = read_file(path, &n);
    ck_assert_int_eq(sae_model_save_size(s.models[1], &n_ref), SAE_OK);
    unsigned char *ref = malloc(n_ref);
    ck_assert_int_eq(sae_model_save_buffer(s.models[1], ref, n_ref, NULL), SAE_OK);
    ck_assert_uint_eq(n, n_ref); /* every replica is the same: rank 1's bytes */
    ck_assert(memcmp(saved, ref, n) == 0);
    free(saved);
    free(ref);
    free_run(&s, 3);
    free(x);
    remove_dir(dir);
}
END_TEST

START_TEST(a_failed_save_fails_everywhere_and_leaves_nothing)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    float *x = test_gaussian(N_TOKENS, D_IN, 1.0, 0.2, 79);
    /* a file in a directory that does not exist */
    char missing[128];
    snprintf(missing, sizeof missing, "%s/no/such/dir/model.safetensors", dir);
    save_run s = {.mode = SAE_PARALLEL_FEATURES, .arch = SAE_ARCH_RELU, .split = shards3, .x = x,
                  .dir = missing, .steps = 1};
    run_ranks(&s, 3, train_and_save);
    for (int r = 0; r < 3; r++) {
        ck_assert_int_eq(s.model_status[r], SAE_E_IO);
        ck_assert_int_eq(s.opt_status[r], SAE_E_IO);
    }
    free_run(&s, 3);
    free(x);
    ck_assert_uint_eq(files_in(dir), 0);
    remove_dir(dir);
}
END_TEST

START_TEST(shard_loading_checks_its_range)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, D_IN, D_SAE, 1), SAE_OK);
    ck_assert_int_eq(sae_model_save(m, dir), SAE_OK);
    sae_model *shard = (sae_model *)&m;
    ck_assert_int_eq(sae_model_load_shard(&shard, dir, 5, 5), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(shard);
    ck_assert_int_eq(sae_model_load_shard(&shard, dir, 5, D_SAE + 1), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(shard);
    ck_assert_int_eq(sae_model_load_shard(NULL, dir, 0, 5), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_load_shard(&shard, dir, 3, 11), SAE_OK);
    check_slice(m, shard, SAE_W_ENC, 0.0);
    check_slice(m, shard, SAE_W_DEC, 0.0);
    sae_model_free(shard);
    sae_model_free(m);
    remove_dir(dir);
}
END_TEST

/* ---- a 2-D grid's checkpoint --------------------------------------------------- */

/* A 2 x 3 grid: data groups of 12 and 20 tokens, each the 3 shards of
 * shards3; group g's shard r at rank 3 g + r. */
enum { GRID_GROUPS = 2, GRID_RANKS = GRID_GROUPS * MAX_RANKS };
static const size_t group_rows[] = {0, 12, N_TOKENS};

typedef struct grid_save {
    const save_run *s;
    sae_model *models[GRID_RANKS];
    sae_optimizer *opts[GRID_RANKS];
    int step_status[GRID_RANKS], save_status[GRID_RANKS], bad_status[GRID_RANKS];
} grid_save;

static void grid_train_and_save(int group, int shard, const sae_comm *features,
                                const sae_comm *data, void *arg)
{
    grid_save *g = arg;
    const save_run *s = g->s;
    const int r = group * MAX_RANKS + shard;
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    create_part(s, s->split[shard], s->split[shard + 1], &m);
    sae_optimizer_create(&o, m);
    configure(o);
    sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, features);
    sae_optimizer_set_comm(o, SAE_PARALLEL_DATA, data);
    int rc = SAE_OK;
    for (int step = 0; step < s->steps && rc == SAE_OK; step++)
        rc = step_on(s, m, o, step, group_rows[group], group_rows[group + 1] - group_rows[group]);
    g->step_status[r] = rc;
    /* every rank calls it; group 0 writes */
    g->save_status[r] = sae_checkpoint_save_collective(m, o, s->dir);
    g->bad_status[r] = sae_checkpoint_save_collective(m, o, "/nonexistent/sae-grid-dir");
    g->models[r] = m;
    g->opts[r] = o;
}

START_TEST(a_grid_saves_one_checkpoint_that_one_process_resumes)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    float *x = test_gaussian(4 * N_TOKENS, D_IN, 1.0, 0.2, 81);
    save_run s = {.mode = SAE_PARALLEL_FEATURES, .arch = SAE_ARCH_TOPK,
                  .kind = SAE_KIND_AUTOENCODER, .split = shards3, .x = x, .dir = dir,
                  .steps = 3};
    grid_save g;
    memset(&g, 0, sizeof g);
    g.s = &s;
    test_comm_grid *grid = test_comm_grid_create(GRID_GROUPS, MAX_RANKS, 0);
    ck_assert_ptr_nonnull(grid);
    test_comm_grid_run(grid, grid_train_and_save, &g);
    test_comm_grid_free(grid);
    for (int r = 0; r < GRID_RANKS; r++) {
        ck_assert_msg(g.step_status[r] == SAE_OK, "rank %d: %s", r,
                      sae_status_string(g.step_status[r]));
        ck_assert_msg(g.save_status[r] == SAE_OK, "rank %d: %s", r,
                      sae_status_string(g.save_status[r]));
        ck_assert_int_eq(g.bad_status[r], SAE_E_IO); /* group 0's failure, on every rank */
    }
    ck_assert_uint_eq(files_in(dir), 3); /* weights, cfg.json, optimizer: nothing else */
    /* one process loads it: every rank's values exactly (group 0's shards,
     * which the other group's replicas equal) */
    sae_model *whole;
    sae_optimizer *whole_o;
    ck_assert_int_eq(sae_model_load(&whole, dir), SAE_OK);
    ck_assert_int_eq(sae_optimizer_load(&whole_o, whole, dir), SAE_OK);
    ck_assert_uint_eq(sae_optimizer_steps(whole_o), 3);
    for (int r = 0; r < GRID_RANKS; r++) {
        for (int k = 0; k < N_TENSORS; k++)
            check_slice(whole, g.models[r], tensors[k], 0.0);
        check_optimizer_slice(whole_o, g.opts[r]);
    }
    /* and resumes it: one process's next step, 3 shards' alike */
    ck_assert_int_eq(sae_optimizer_set(whole_o, SAE_OPT_THREADS, 1), SAE_OK);
    ck_assert_int_eq(step_on(&s, whole, whole_o, s.steps, 0, N_TOKENS), SAE_OK);
    check_resumes(&s, whole, 3, shards3);
    /* bad input: no communicator attached, NULL */
    ck_assert_int_eq(sae_checkpoint_save_collective(whole, whole_o, dir), SAE_E_STATE);
    ck_assert_int_eq(sae_checkpoint_save_collective(NULL, whole_o, dir), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_checkpoint_save_collective(whole, NULL, dir), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_checkpoint_save_collective(whole, whole_o, NULL), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(), "sae_checkpoint_save_collective: dir is NULL");
    sae_optimizer_free(whole_o);
    sae_model_free(whole);
    for (int r = 0; r < GRID_RANKS; r++) {
        sae_optimizer_free(g.opts[r]);
        sae_model_free(g.models[r]);
    }
    free(x);
    remove_dir(dir);
}
END_TEST

/* One mode: the same call saves as the model's and optimizer's collective
 * saves do (feature shards; every rank returns the same status). */
static void shards_save_checkpoint(int rank, const sae_comm *comm, void *arg)
{
    save_run *s = arg;
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    create_part(s, s->split[rank], s->split[rank + 1], &m);
    sae_optimizer_create(&o, m);
    configure(o);
    sae_optimizer_set_comm(o, SAE_PARALLEL_FEATURES, comm);
    s->step_status[rank] = step_on(s, m, o, 0, 0, N_TOKENS);
    s->model_status[rank] = sae_checkpoint_save_collective(m, o, s->dir);
    s->models[rank] = m;
    s->opts[rank] = o;
}

START_TEST(shards_save_a_checkpoint_in_one_call)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    float *x = test_gaussian(N_TOKENS, D_IN, 1.0, 0.2, 82);
    save_run s = {.mode = SAE_PARALLEL_FEATURES, .arch = SAE_ARCH_RELU,
                  .kind = SAE_KIND_AUTOENCODER, .split = shards2, .x = x, .dir = dir,
                  .steps = 1};
    run_ranks(&s, 2, shards_save_checkpoint);
    sae_model *whole;
    sae_optimizer *whole_o;
    ck_assert_int_eq(sae_model_load(&whole, dir), SAE_OK);
    ck_assert_int_eq(sae_optimizer_load(&whole_o, whole, dir), SAE_OK);
    for (int r = 0; r < 2; r++) {
        ck_assert_int_eq(s.step_status[r], SAE_OK);
        ck_assert_int_eq(s.model_status[r], SAE_OK);
        for (int k = 0; k < N_TENSORS; k++)
            check_slice(whole, s.models[r], tensors[k], 0.0);
        check_optimizer_slice(whole_o, s.opts[r]);
    }
    sae_optimizer_free(whole_o);
    sae_model_free(whole);
    free_run(&s, 2);
    free(x);
    remove_dir(dir);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("collective");
    TCase *tc = tcase_create("checkpoints");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, relu_shards_save_the_single_process_files);
    tcase_add_test(tc, topk_shards_save_the_single_process_files);
    tcase_add_test(tc, batchtopk_shards_save_the_single_process_files);
    tcase_add_test(tc, jumprelu_shards_save_the_single_process_files);
    tcase_add_test(tc, gated_shards_save_the_single_process_files);
    tcase_add_test(tc, transcoder_shards_save_the_single_process_files);
    tcase_add_test(tc, matryoshka_shards_save_the_single_process_files);
    tcase_add_test(tc, data_parallel_ranks_leave_the_writing_to_rank_0);
    tcase_add_test(tc, a_failed_save_fails_everywhere_and_leaves_nothing);
    tcase_add_test(tc, shard_loading_checks_its_range);
    tcase_add_test(tc, a_grid_saves_one_checkpoint_that_one_process_resumes);
    tcase_add_test(tc, shards_save_a_checkpoint_in_one_call);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(make_suite)
