/*
 * sae-bench: how close is a libsae training step to its floor?
 *
 * The encoder of a step is one dense GEMM (B x d_in by d_in x d_sae) that no
 * amount of sparsity removes, and the Adam update is one memory-bound pass over
 * all parameters. Their sum is the floor: the fastest float32 GEMM of that
 * shape the machine has (CBLAS's SGEMM, or oneDNN's matmul when the bench was
 * built with it) plus one fused Adam-like pass over 2 d_in d_sae + d_in + d_sae
 * floats (read g, p, m, v; write p, m, v). The bench also times oneDNN's
 * bf16 x bf16 -> f32 matmul of the shape, the floor of a bf16 encoder.
 *
 * Every configuration (batch size x architecture x regime) is set up first;
 * then each repetition runs, per batch size, the GEMMs and the Adam pass, and
 * one sae_step of every configuration, interleaved, so that a ratio compares
 * times taken in the same minutes of a shared, noisy machine. Medians.
 *
 * Regimes: "dense" (fresh init, L0 ~ d_sae / 2); a target L0 reached by
 * lowering b_enc uniformly (ReLU, JumpReLU) or k itself (TopK, BatchTopK);
 * and "ckpt": a trained model (--model) on real data (--data), whose active
 * pairs are distributed as a real run's are.
 *
 * OpenBLAS reads OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE when it loads; an
 * environment that sets them (to a slower kernel) would measure the wrong
 * SGEMM, so the bench re-executes itself once without them (say so with the
 * header) unless --keep-blas-env. Tests and CI never do this.
 *
 * With --rss it only trains (no GEMM or Adam buffers of its own) and prints the
 * process's peak resident set, so the memory of a step can be read alone.
 */
#define _GNU_SOURCE
#include <libsae/sae.h>

#include <cblas.h>
#include <ctype.h>
#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <pthread.h>
#include <unistd.h>

#ifdef SAE_BENCH_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    if (n == 0)
        return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(const char *msg)
{
    fprintf(stderr, "sae-bench: %s\n", msg);
    exit(2);
}

static void check(int rc, const char *what)
{
    if (rc != SAE_OK) {
        fprintf(stderr, "sae-bench: %s: %s\n", what, sae_status_string(rc));
        exit(1);
    }
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes);
    if (!p)
        die("out of memory");
    return p;
}

/* ---- data ------------------------------------------------------------------------ */

/* Rows of d_in float32 from a .npy (float32, C order, 2-D) or a raw file;
 * *rows = how many the file holds. */
static float *read_data(const char *path, size_t d_in, size_t *rows)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        die("cannot open the --data file");
    unsigned char magic[10];
    long offset = 0;
    if (fread(magic, 1, 10, fp) == 10 && memcmp(magic, "\x93NUMPY", 6) == 0) {
        size_t hlen = magic[8] | (size_t)magic[9] << 8;
        if (magic[6] != 1) { /* 2.0 and 3.0: a 4-byte length */
            unsigned char more[2];
            if (fread(more, 1, 2, fp) != 2)
                die("truncated .npy header");
            hlen |= (size_t)more[0] << 16 | (size_t)more[1] << 24;
            offset = 12;
        } else {
            offset = 10;
        }
        char *h = xmalloc(hlen + 1);
        if (fread(h, 1, hlen, fp) != hlen)
            die("truncated .npy header");
        h[hlen] = '\0';
        if (!strstr(h, "'<f4'") || strstr(h, "'fortran_order': True"))
            die("--data .npy must hold little-endian float32 in C order");
        const char *shape = strstr(h, "'shape':");
        size_t n = 0, d = 0;
        if (!shape || sscanf(strchr(shape, '(') + 1, "%zu , %zu", &n, &d) != 2 || d != d_in)
            die("--data .npy must be 2-D with d_in columns");
        offset += (long)hlen;
        free(h);
    }
    if (fseek(fp, 0, SEEK_END) != 0)
        die("cannot seek the --data file");
    long size = ftell(fp);
    size_t n = (size_t)(size - offset) / (d_in * sizeof(float));
    if (n == 0)
        die("the --data file holds no full row");
    float *x = xmalloc(n * d_in * sizeof(float));
    if (fseek(fp, offset, SEEK_SET) != 0 || fread(x, sizeof(float), n * d_in, fp) != n * d_in)
        die("cannot read the --data file");
    fclose(fp);
    *rows = n;
    return x;
}

/* Standard normal data from a fixed seed. */
static float *gaussian_data(size_t n, size_t d_in)
{
    float *x = xmalloc(n * d_in * sizeof(float));
    uint64_t s = 12345;
    for (size_t k = 0; k < n * d_in; k += 2) {
        double u[2];
        for (int h = 0; h < 2; h++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            u[h] = ((double)(s >> 11) + 0.5) * 0x1.0p-53;
        }
        double r = sqrt(-2.0 * log(u[0]));
        x[k] = (float)(r * cos(6.283185307179586 * u[1]));
        if (k + 1 < n * d_in)
            x[k + 1] = (float)(r * sin(6.283185307179586 * u[1]));
    }
    return x;
}

/* Lower b_enc uniformly until the batch's L0 is close to target (bisection). */
static double set_density(sae_model *m, const float *x, size_t n, double target_l0)
{
    size_t d_sae = sae_model_d_sae(m);
    float *b = xmalloc(d_sae * sizeof(float));
    double lo = 0.0, hi = 1.0, l0 = 0.0;
    for (int it = 0; it < 40; it++) {
        double mid = 0.5 * (lo + hi);
        for (size_t i = 0; i < d_sae; i++)
            b[i] = (float)-mid;
        check(sae_model_set_tensor(m, SAE_B_ENC, b, d_sae), "set b_enc");
        sae_losses l;
        check(sae_loss(m, x, n, 0.0, &l), "loss");
        l0 = l.l0;
        if (fabs(l0 - target_l0) < 0.02 * target_l0)
            break;
        if (l0 > target_l0)
            lo = mid;
        else
            hi = mid;
    }
    free(b);
    return l0;
}

/* ---- the floor ------------------------------------------------------------------ */

/* The floor's memory pass: a fused Adam update over count floats, split over
 * threads created for the call (plain pthreads: an OpenMP runtime's spinning
 * workers would slow the libsae step that follows). */
typedef struct adam_like_job {
    float *p, *g, *m, *v;
    size_t begin, end;
} adam_like_job;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void *adam_like_range(void *arg)
{
    adam_like_job *j = arg;
    const float b1 = 0.9f, b2 = 0.999f, lr = 5e-5f, eps = 1e-8f;
    float *restrict p = j->p, *restrict m = j->m, *restrict v = j->v;
    const float *restrict g = j->g;
    for (size_t k = j->begin; k < j->end; k++) {
        float mk = b1 * m[k] + (1 - b1) * g[k];
        float vk = b2 * v[k] + (1 - b2) * g[k] * g[k];
        m[k] = mk;
        v[k] = vk;
        p[k] -= lr * mk / (sqrtf(vk) + eps);
    }
    return NULL;
}

static void adam_like_pass(float *p, float *g, float *m, float *v, size_t count, int threads)
{
    adam_like_job jobs[64];
    pthread_t tid[64];
    if (threads > 64)
        threads = 64;
    for (int k = 0; k < threads; k++)
        jobs[k] = (adam_like_job){p, g, m, v, count * (size_t)k / (size_t)threads,
                                  count * (size_t)(k + 1) / (size_t)threads};
    for (int k = 1; k < threads; k++)
        pthread_create(&tid[k], NULL, adam_like_range, &jobs[k]);
    adam_like_range(&jobs[0]);
    for (int k = 1; k < threads; k++)
        pthread_join(tid[k], NULL);
}

/* The encoder's product out (n x d_sae) = x (n x d_in) w^T (w: d_sae x d_in),
 * on oneDNN's matmul in float32 or bf16: one primitive made up front, as a
 * library keeps it. */
typedef struct onednn_encoder {
    int ready;
#ifdef SAE_BENCH_ONEDNN
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t prim;
    dnnl_memory_t x, w, out;
#endif
} onednn_encoder;

static void onednn_encoder_init(onednn_encoder *e, size_t n, size_t d_in, size_t d_sae, int bf16,
                                void *x, void *w, float *out)
{
    memset(e, 0, sizeof *e);
#ifdef SAE_BENCH_ONEDNN
    dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t xd = {(dnnl_dim_t)n, (dnnl_dim_t)d_in}, wd = {(dnnl_dim_t)d_in, (dnnl_dim_t)d_sae};
    dnnl_dims_t od = {(dnnl_dim_t)n, (dnnl_dim_t)d_sae};
    dnnl_dims_t xs = {(dnnl_dim_t)d_in, 1}, ws = {1, (dnnl_dim_t)d_in}, os = {(dnnl_dim_t)d_sae, 1};
    dnnl_memory_desc_t xm, wm, om;
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_engine_create(&e->engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&e->stream, e->engine, dnnl_stream_default_flags) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&xm, 2, xd, dt, xs) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&wm, 2, wd, dt, ws) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&om, 2, od, dnnl_f32, os) != dnnl_success ||
        dnnl_matmul_desc_init(&md, &xm, &wm, NULL, &om) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &md, NULL, e->engine, NULL) != dnnl_success ||
        dnnl_primitive_create(&e->prim, pd) != dnnl_success ||
        dnnl_memory_create(&e->x, &xm, e->engine, x) != dnnl_success ||
        dnnl_memory_create(&e->w, &wm, e->engine, w) != dnnl_success ||
        dnnl_memory_create(&e->out, &om, e->engine, out) != dnnl_success)
        die("oneDNN cannot make the encoder's matmul");
    dnnl_primitive_desc_destroy(pd);
    e->ready = 1;
#else
    (void)n, (void)d_in, (void)d_sae, (void)bf16, (void)x, (void)w, (void)out;
#endif
}

static double onednn_encoder_run(onednn_encoder *e)
{
#ifdef SAE_BENCH_ONEDNN
    if (e->ready) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->x}, {DNNL_ARG_WEIGHTS, e->w},
                                   {DNNL_ARG_DST, e->out}};
        double t0 = now();
        dnnl_primitive_execute(e->prim, e->stream, 3, args);
        dnnl_stream_wait(e->stream);
        return now() - t0;
    }
#else
    (void)e;
#endif
    return NAN;
}

static void onednn_encoder_free(onednn_encoder *e)
{
#ifdef SAE_BENCH_ONEDNN
    if (e->ready) {
        dnnl_primitive_destroy(e->prim);
        dnnl_memory_destroy(e->x);
        dnnl_memory_destroy(e->w);
        dnnl_memory_destroy(e->out);
        dnnl_stream_destroy(e->stream);
        dnnl_engine_destroy(e->engine);
    }
#endif
    memset(e, 0, sizeof *e);
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* ---- options ---------------------------------------------------------------------- */

enum { MAX_LIST = 8 };

typedef struct options {
    size_t d_in, d_sae, k;
    size_t batches[MAX_LIST];
    int n_batches;
    double regimes[MAX_LIST]; /* target L0 (k for TopK/BatchTopK); 0 = dense */
    int n_regimes;
    int archs[MAX_LIST];
    int n_archs;
    int reps, threads, kernel;
    int gemm;                 /* SAE_OPT_GEMM */
    int precisions[2];        /* SAE_OPT_PRECISION values, each a configuration */
    int n_precisions;
    const char *data, *model;
    int rss_only, keep_blas_env;
    double b_enc;             /* with --b-enc: set b_enc directly instead of searching */
    int have_b_enc;
} options;

static const char *arch_names[] = {"relu", "topk", "batchtopk", "jumprelu"};

static int parse_list(const char *s, double *out, int cap)
{
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && n < cap; tok = strtok_r(NULL, ",", &save))
        out[n++] = strcmp(tok, "dense") == 0 ? 0.0 : atof(tok);
    free(copy);
    return n;
}

static int parse_archs(const char *s, int *out, int cap)
{
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && n < cap; tok = strtok_r(NULL, ",", &save)) {
        int a = -1;
        for (int k = 0; k < 4; k++)
            if (strcmp(tok, arch_names[k]) == 0)
                a = k;
        if (a < 0)
            die("--arch: relu, topk, batchtopk or jumprelu (comma-separated)");
        out[n++] = a;
    }
    free(copy);
    return n;
}

static void usage(void)
{
    puts("usage: sae-bench [options]\n"
         "  --d-in N        input dimension (768)\n"
         "  --d-sae N       features (10000)\n"
         "  --batch LIST    batch sizes, comma-separated (256,1024,4096)\n"
         "  --arch LIST     relu, topk, batchtopk, jumprelu, comma-separated (relu)\n"
         "  --regimes LIST  'dense' and/or target L0 values (dense,300,30); for topk and\n"
         "                  batchtopk a number is k (and 'dense' is skipped)\n"
         "  --reps N        timed repetitions per measurement (5)\n"
         "  --threads N     SAE_OPT_THREADS and the Adam pass's threads (0 = all cores)\n"
         "  --kernel K      auto | dense | sparse (auto)\n"
         "  --gemm G        auto | cblas | onednn: SAE_OPT_GEMM, the step's GEMM backend\n"
         "                  (auto: oneDNN when libsae was built with it)\n"
         "  --precision L   fp32 and/or bf16, comma-separated: SAE_OPT_PRECISION, the\n"
         "                  encoder GEMM's inputs (fp32); each is a configuration\n"
         "  --data FILE     activations: .npy (float32, 2-D) or raw float32 rows of d_in\n"
         "                  (default: N(0,1) from a fixed seed)\n"
         "  --model PATH    a trained model (sae_model_load: a checkpoint directory or a\n"
         "                  .safetensors file): adds the regime 'ckpt', this model on the\n"
         "                  --data batch, as trained (its own b_enc); 'ckpt+opt' when the\n"
         "                  directory also holds the optimizer (its dead features: AuxK)\n"
         "  --b-enc X       set every b_enc to X instead of searching for a target L0\n"
         "  --keep-blas-env keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (default: re-run\n"
         "                  without them, to measure the kernel OpenBLAS picks itself)\n"
         "  --rss           train only and print the peak RSS (one batch size)");
}

static options parse(int argc, char **argv)
{
    options o = {.d_in = 768, .d_sae = 10000, .k = 32, .batches = {256, 1024, 4096},
                 .n_batches = 3, .regimes = {0, 300, 30}, .n_regimes = 3,
                 .archs = {0}, .n_archs = 1, .reps = 5, .kernel = SAE_KERNEL_AUTO,
                 .precisions = {SAE_PRECISION_FP32}, .n_precisions = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            usage();
            exit(0);
        } else if (strcmp(a, "--rss") == 0) {
            o.rss_only = 1;
            continue;
        } else if (strcmp(a, "--keep-blas-env") == 0) {
            o.keep_blas_env = 1;
            continue;
        }
        if (!v)
            die("option needs a value (see --help)");
        i++;
        if (strcmp(a, "--d-in") == 0)
            o.d_in = (size_t)atol(v);
        else if (strcmp(a, "--d-sae") == 0)
            o.d_sae = (size_t)atol(v);
        else if (strcmp(a, "--reps") == 0)
            o.reps = atoi(v);
        else if (strcmp(a, "--threads") == 0)
            o.threads = atoi(v);
        else if (strcmp(a, "--b-enc") == 0) {
            o.b_enc = atof(v);
            o.have_b_enc = 1;
            o.n_regimes = 1;
            o.regimes[0] = -1.0;
        } else if (strcmp(a, "--data") == 0)
            o.data = v;
        else if (strcmp(a, "--model") == 0)
            o.model = v;
        else if (strcmp(a, "--arch") == 0)
            o.n_archs = parse_archs(v, o.archs, MAX_LIST);
        else if (strcmp(a, "--kernel") == 0)
            o.kernel = strcmp(v, "dense") == 0    ? SAE_KERNEL_DENSE
                       : strcmp(v, "sparse") == 0 ? SAE_KERNEL_SPARSE
                                                  : SAE_KERNEL_AUTO;
        else if (strcmp(a, "--gemm") == 0) {
            o.gemm = strcmp(v, "auto") == 0     ? SAE_GEMM_AUTO
                     : strcmp(v, "cblas") == 0  ? SAE_GEMM_CBLAS
                     : strcmp(v, "onednn") == 0 ? SAE_GEMM_ONEDNN
                                                : -1;
            if (o.gemm < 0)
                die("--gemm: auto, cblas or onednn");
        } else if (strcmp(a, "--precision") == 0) {
            o.n_precisions = 0;
            if (strstr(v, "fp32"))
                o.precisions[o.n_precisions++] = SAE_PRECISION_FP32;
            if (strstr(v, "bf16"))
                o.precisions[o.n_precisions++] = SAE_PRECISION_BF16;
            if (o.n_precisions == 0)
                die("--precision: fp32, bf16 or fp32,bf16");
        } else if (strcmp(a, "--regimes") == 0)
            o.n_regimes = parse_list(v, o.regimes, MAX_LIST);
        else if (strcmp(a, "--batch") == 0) {
            double b[MAX_LIST];
            o.n_batches = parse_list(v, b, MAX_LIST);
            for (int k = 0; k < o.n_batches; k++)
                o.batches[k] = (size_t)b[k];
        } else
            die("unknown option (see --help)");
    }
    if (o.d_in == 0 || o.d_sae == 0 || o.reps < 1 || o.n_batches < 1 || o.n_archs < 1 ||
        (o.n_regimes < 1 && !o.model))
        die("bad option value");
    if (o.model && !o.data)
        die("--model needs --data: the activations it was trained on");
    return o;
}

/* ---- the environment line ---------------------------------------------------------- */

static const char *env_or(const char *name, const char *none)
{
    const char *v = getenv(name);
    return v ? v : none;
}

/* Re-execute without the OpenBLAS variables that pick its kernel (they are read
 * when OpenBLAS loads, before main); records what was unset in
 * SAE_BENCH_UNSET for the header. */
static void drop_blas_env(char **argv)
{
    const char *core = getenv("OPENBLAS_CORETYPE"), *l2 = getenv("OPENBLAS_L2_SIZE");
    if (!core && !l2)
        return;
    char note[256];
    snprintf(note, sizeof note, "%s%s%s%s%s", core ? "OPENBLAS_CORETYPE=" : "", core ? core : "",
             core && l2 ? " " : "", l2 ? "OPENBLAS_L2_SIZE=" : "", l2 ? l2 : "");
    setenv("SAE_BENCH_UNSET", note, 1);
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("OPENBLAS_L2_SIZE");
    execv("/proc/self/exe", argv);
    die("cannot re-execute itself without OPENBLAS_CORETYPE (use --keep-blas-env)");
}

static void cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown CPU");
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp)
        return;
    char line[512];
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, "model name", 10) == 0) {
            char *v = strchr(line, ':');
            if (v) {
                v++;
                while (isspace((unsigned char)*v))
                    v++;
                v[strcspn(v, "\n")] = '\0';
                snprintf(out, cap, "%s", v);
            }
            break;
        }
    fclose(fp);
}

static void print_header(const options *o, int threads)
{
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    /* OpenBLAS names the kernel it runs; another CBLAS has no such call */
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    printf("# libsae %s, %s, %d threads, d_in %zu, d_sae %zu, %d reps (medians)\n",
           sae_version_string(), cpu, threads, o->d_in, o->d_sae, o->reps);
    static const char *gemm_names[] = {"auto", "cblas", "onednn"};
    int backend = sae_gemm_backend(o->gemm);
    printf("# BLAS core: %s (openblas_get_corename); the step's GEMMs: %s (--gemm %s); "
           "prec: the encoder GEMM's inputs\n",
           corename ? corename() : "not OpenBLAS", backend == SAE_GEMM_ONEDNN ? "oneDNN" : "CBLAS",
           gemm_names[o->gemm]);
    const char *unset = getenv("SAE_BENCH_UNSET");
    printf("# environment: OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s OPENBLAS_NUM_THREADS=%s "
           "OMP_NUM_THREADS=%s%s%s%s\n",
           env_or("OPENBLAS_CORETYPE", "(unset)"), env_or("OPENBLAS_L2_SIZE", "(unset)"),
           env_or("OPENBLAS_NUM_THREADS", "(unset)"), env_or("OMP_NUM_THREADS", "(unset)"),
           unset ? "; this run unset " : "", unset ? unset : "",
           unset ? " (OpenBLAS picks its kernel itself)" : "");
#ifdef SAE_BENCH_ONEDNN
    const dnnl_version_t *v = dnnl_version();
    printf("# oneDNN %d.%d.%d for the floor's matmuls; floor = best fp32 GEMM + Adam pass\n",
           v->major, v->minor, v->patch);
#else
    printf("# built without oneDNN: floor = CBLAS SGEMM + Adam pass\n");
#endif
}

/* ---- the run ---------------------------------------------------------------------------- */

/* One timed configuration: a model and its optimizer on one batch. */
typedef struct config {
    size_t batch;
    int arch, precision;
    char regime[24];
    sae_model *m;
    sae_optimizer *o;
    double *t_step, l0_sum;
} config;

/* Per batch size: the floor's operands and times. */
typedef struct floor_set {
    size_t batch;
    float *out;
    onednn_encoder f32, bf16;
    double *t_cblas, *t_onednn, *t_bf16, *t_adam;
} floor_set;

static sae_model *make_model(const options *o, int arch, double regime, const float *x, size_t n,
                             char *name, size_t name_cap)
{
    sae_model *m;
    bool topk = arch == SAE_ARCH_TOPK || arch == SAE_ARCH_BATCHTOPK;
    double param = topk ? (regime > 0 ? regime : (double)o->k) : arch == SAE_ARCH_JUMPRELU ? 0.001 : 0;
    check(sae_model_create_arch(&m, o->d_in, o->d_sae, 1, arch, param), "create model");
    if (o->have_b_enc) {
        float *b = xmalloc(o->d_sae * sizeof(float));
        for (size_t i = 0; i < o->d_sae; i++)
            b[i] = (float)o->b_enc;
        check(sae_model_set_tensor(m, SAE_B_ENC, b, o->d_sae), "set b_enc");
        free(b);
        snprintf(name, name_cap, "b%.3g", o->b_enc);
    } else if (topk) {
        snprintf(name, name_cap, "k=%g", param);
    } else if (regime > 0) {
        set_density(m, x, n, regime);
        snprintf(name, name_cap, "L0~%g", regime);
    } else {
        snprintf(name, name_cap, "dense");
    }
    return m;
}

static int resolve_threads(const options *o)
{
    if (o->threads > 0)
        return o->threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static size_t largest_batch(const options *o)
{
    size_t max_b = 0;
    for (int k = 0; k < o->n_batches; k++)
        max_b = o->batches[k] > max_b ? o->batches[k] : max_b;
    return max_b;
}

/* The configurations of one batch size n: each architecture x regime (a
 * TopK SAE has no dense regime) x precision, then the --model checkpoint in
 * each precision. A precision after the first clones the same model.
 * Appends at cfg + *n_cfg. */
static void add_configs(const options *o, size_t n, const float *x, config *cfg, int *n_cfg)
{
    for (int ai = 0; ai < o->n_archs; ai++)
        for (int ri = 0; ri < o->n_regimes; ri++)
            for (int pi = 0; pi < o->n_precisions; pi++) {
                int arch = o->archs[ai];
                if ((arch == SAE_ARCH_TOPK || arch == SAE_ARCH_BATCHTOPK) && o->regimes[ri] == 0.0)
                    continue; /* a TopK SAE has no dense regime */
                config *c = &cfg[(*n_cfg)++];
                memset(c, 0, sizeof *c);
                c->batch = n;
                c->arch = arch;
                c->precision = o->precisions[pi];
                if (pi > 0) { /* the same model in another precision */
                    check(sae_model_clone(&c->m, c[-1].m), "clone model");
                    memcpy(c->regime, c[-1].regime, sizeof c->regime);
                    continue;
                }
                fprintf(stderr, "sae-bench: setting up batch %zu, %s ...\n", n, arch_names[arch]);
                c->m = make_model(o, arch, o->regimes[ri], x, n, c->regime, sizeof c->regime);
            }
    for (int pi = 0; o->model && pi < o->n_precisions; pi++) {
        config *c = &cfg[(*n_cfg)++];
        memset(c, 0, sizeof *c);
        c->batch = n;
        c->precision = o->precisions[pi];
        if (pi > 0)
            check(sae_model_clone(&c->m, c[-1].m), "clone model");
        else
            check(sae_model_load(&c->m, o->model), "load --model");
        if (sae_model_d_in(c->m) != o->d_in || sae_model_d_sae(c->m) != o->d_sae)
            die("--model's d_in / d_sae differ from --d-in / --d-sae");
        c->arch = sae_model_arch(c->m);
        snprintf(c->regime, sizeof c->regime, "ckpt");
    }
}

/* c's optimizer with the bench's options, warmed up by one step on x. */
static void make_optimizer(const options *o, config *c, const float *x)
{
    /* a checkpoint's optimizer too, when it has one: its activity counters
     * say which features are dead, and AuxK works on those */
    if (strcmp(c->regime, "ckpt") == 0 && sae_optimizer_load(&c->o, c->m, o->model) == SAE_OK)
        snprintf(c->regime, sizeof c->regime, "ckpt+opt");
    else
        check(sae_optimizer_create(&c->o, c->m), "create optimizer");
    check(sae_optimizer_set(c->o, SAE_OPT_THREADS, o->threads), "threads");
    check(sae_optimizer_set(c->o, SAE_OPT_KERNEL, o->kernel), "kernel");
    check(sae_optimizer_set(c->o, SAE_OPT_GEMM, o->gemm), "gemm");
    check(sae_optimizer_set(c->o, SAE_OPT_PRECISION, c->precision), "precision");
    /* a step of a trained model keeps its scale: the bench measures, not trains */
    check(sae_optimizer_set(c->o, SAE_OPT_LR, 1e-7), "lr");
    sae_losses l;
    check(sae_step(c->m, c->o, x, c->batch, &l), "warm-up step");
    c->t_step = xmalloc(sizeof(double) * (size_t)o->reps);
}

/* Every configuration, set up and warmed up; *n_cfg of them. */
static config *make_configs(const options *o, const float *x, int *n_cfg)
{
    config *cfg = xmalloc(sizeof(config) * (size_t)o->n_batches *
                          (size_t)(o->n_archs * o->n_regimes + 1) * (size_t)o->n_precisions);
    *n_cfg = 0;
    for (int bi = 0; bi < o->n_batches; bi++)
        add_configs(o, o->batches[bi], x, cfg, n_cfg);
    for (int k = 0; k < *n_cfg; k++)
        make_optimizer(o, &cfg[k], x);
    return cfg;
}

static void free_configs(config *cfg, int n_cfg)
{
    for (int k = 0; k < n_cfg; k++) {
        free(cfg[k].t_step);
        sae_optimizer_free(cfg[k].o);
        sae_model_free(cfg[k].m);
    }
    free(cfg);
}

/* The floor's operands, shared by the batch sizes: the Adam-like pass's four
 * buffers (n_params floats each), the encoder weights in fp32 and bf16, the
 * batch in bf16; and each batch size's floor_set. */
typedef struct floors {
    size_t n_params;
    float *ap, *ag, *am, *av, *w;
    uint16_t *x16, *w16;
    floor_set *fl; /* one per batch size */
} floors;

/* x: the batch (max batch x d_in floats), which oneDNN wraps, read only. */
static void floors_create(floors *F, const options *o, float *x)
{
    const size_t max_b = largest_batch(o);
    memset(F, 0, sizeof *F);
    F->n_params = 2 * o->d_in * o->d_sae + o->d_in + o->d_sae;
    F->ap = calloc(F->n_params, sizeof(float));
    F->ag = calloc(F->n_params, sizeof(float));
    F->am = calloc(F->n_params, sizeof(float));
    F->av = calloc(F->n_params, sizeof(float));
    F->w = xmalloc(o->d_sae * o->d_in * sizeof(float));
    F->w16 = xmalloc(o->d_sae * o->d_in * sizeof(uint16_t));
    F->x16 = xmalloc(max_b * o->d_in * sizeof(uint16_t));
    if (!F->ap || !F->ag || !F->am || !F->av)
        die("out of memory");
    for (size_t k = 0; k < F->n_params; k++)
        F->ag[k] = (float)((k % 17) * 1e-3);
    for (size_t k = 0; k < o->d_sae * o->d_in; k++) {
        F->w[k] = (float)((k % 13) * 1e-2);
        F->w16[k] = to_bf16(F->w[k]);
    }
    for (size_t k = 0; k < max_b * o->d_in; k++)
        F->x16[k] = to_bf16(x[k]);
    F->fl = xmalloc(sizeof(floor_set) * (size_t)o->n_batches);
    for (int bi = 0; bi < o->n_batches; bi++) {
        floor_set *f = &F->fl[bi];
        memset(f, 0, sizeof *f);
        f->batch = o->batches[bi];
        f->out = xmalloc(f->batch * o->d_sae * sizeof(float));
        onednn_encoder_init(&f->f32, f->batch, o->d_in, o->d_sae, 0, x, F->w, f->out);
        onednn_encoder_init(&f->bf16, f->batch, o->d_in, o->d_sae, 1, F->x16, F->w16, f->out);
        f->t_cblas = xmalloc(sizeof(double) * (size_t)o->reps);
        f->t_onednn = xmalloc(sizeof(double) * (size_t)o->reps);
        f->t_bf16 = xmalloc(sizeof(double) * (size_t)o->reps);
        f->t_adam = xmalloc(sizeof(double) * (size_t)o->reps);
    }
}

static void floors_free(floors *F, const options *o)
{
    for (int bi = 0; F->fl && bi < o->n_batches; bi++) {
        onednn_encoder_free(&F->fl[bi].f32);
        onednn_encoder_free(&F->fl[bi].bf16);
        free(F->fl[bi].out);
        free(F->fl[bi].t_cblas);
        free(F->fl[bi].t_onednn);
        free(F->fl[bi].t_bf16);
        free(F->fl[bi].t_adam);
    }
    free(F->fl);
    free(F->x16);
    free(F->w16);
    free(F->ap);
    free(F->ag);
    free(F->am);
    free(F->av);
    free(F->w);
}

/* Repetition r of the floor's parts for batch size bi: the SGEMM, oneDNN's
 * fp32 and bf16 matmuls, the Adam-like pass. */
static void time_floor(const options *o, floors *F, int bi, int r, const float *x, int threads)
{
    floor_set *f = &F->fl[bi];
    const size_t n = f->batch;
    double t0 = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)o->d_sae, (int)o->d_in, 1.0f,
                x, (int)o->d_in, F->w, (int)o->d_in, 0.0f, f->out, (int)o->d_sae);
    f->t_cblas[r] = now() - t0;
    f->t_onednn[r] = onednn_encoder_run(&f->f32);
    f->t_bf16[r] = onednn_encoder_run(&f->bf16);
    t0 = now();
    adam_like_pass(F->ap, F->ag, F->am, F->av, F->n_params, threads);
    f->t_adam[r] = now() - t0;
}

/* The rounds: per batch size the floor's parts (F NULL: none, --rss), then
 * one step of every configuration of that size. */
static void run_rounds(const options *o, floors *F, config *cfg, int n_cfg, const float *x,
                       int threads)
{
    for (int r = 0; r < o->reps; r++)
        for (int bi = 0; bi < o->n_batches; bi++) {
            size_t n = o->batches[bi];
            if (F)
                time_floor(o, F, bi, r, x, threads);
            for (int k = 0; k < n_cfg; k++) {
                config *c = &cfg[k];
                if (c->batch != n)
                    continue;
                sae_losses l;
                double t0 = now();
                check(sae_step(c->m, c->o, x, n, &l), "step");
                c->t_step[r] = now() - t0;
                c->l0_sum += l.l0;
            }
        }
}

/* One row of the table: c's median step against its batch size's floor. */
static void print_row(const options *o, const floors *F, config *c)
{
    double step = median(c->t_step, o->reps), l0 = c->l0_sum / o->reps;
    floor_set *f = NULL;
    for (int bi = 0; bi < o->n_batches; bi++)
        if (F->fl[bi].batch == c->batch)
            f = &F->fl[bi];
    double cb = median(f->t_cblas, o->reps), od = median(f->t_onednn, o->reps);
    double bf = median(f->t_bf16, o->reps), adam = median(f->t_adam, o->reps);
    double best = isnan(od) || cb < od ? cb : od;
    printf("%6zu %9s %9s %4s %7.0f %9.1f %9.1f %9.1f %9.1f %8.1f %9.1f %7.2f %10.0f\n", c->batch,
           arch_names[c->arch], c->regime, c->precision == SAE_PRECISION_BF16 ? "bf16" : "fp32",
           l0, step * 1e3, cb * 1e3, od * 1e3, bf * 1e3, adam * 1e3, (best + adam) * 1e3,
           step / (best + adam), (double)c->batch / step);
}

/* The table (F NULL, --rss: each configuration's step and peak RSS). */
static void print_results(const options *o, const floors *F, config *cfg, int n_cfg)
{
    if (F)
        printf("%6s %9s %9s %4s %7s %9s %9s %9s %9s %8s %9s %7s %10s\n", "batch", "arch",
               "regime", "prec", "L0", "step_ms", "cblas_ms", "onednn_ms", "bf16_ms", "adam_ms",
               "floor_ms", "ratio", "tokens/s");
    for (int k = 0; k < n_cfg; k++) {
        config *c = &cfg[k];
        if (F) {
            print_row(o, F, c);
            continue;
        }
        printf("batch %zu, %s %s, L0 %.0f: step %.1f ms, peak RSS %.1f MB\n", c->batch,
               arch_names[c->arch], c->regime, c->l0_sum / o->reps,
               median(c->t_step, o->reps) * 1e3, (double)peak_rss_kb() / 1024.0);
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    options opt = parse(argc, argv);
    if (!opt.keep_blas_env)
        drop_blas_env(argv);
    const int threads = resolve_threads(&opt);
    const size_t max_b = largest_batch(&opt);
    size_t rows = max_b;
    float *x = opt.data ? read_data(opt.data, opt.d_in, &rows) : gaussian_data(max_b, opt.d_in);
    if (rows < max_b)
        die("the --data file holds fewer rows than the largest batch");
    int n_cfg;
    config *cfg = make_configs(&opt, x, &n_cfg);
    floors F, *with_floor = NULL; /* --rss: no floor, the step's memory alone */
    if (!opt.rss_only) {
        floors_create(&F, &opt, x);
        with_floor = &F;
        print_header(&opt, threads);
    }
    run_rounds(&opt, with_floor, cfg, n_cfg, x, threads);
    print_results(&opt, with_floor, cfg, n_cfg);
    free_configs(cfg, n_cfg);
    if (with_floor)
        floors_free(with_floor, &opt);
    free(x);
    return 0;
}
