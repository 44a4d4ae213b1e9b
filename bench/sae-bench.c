/*
 * sae-bench: how close is a libsae training step to its floor?
 *
 * The encoder of a step is one dense SGEMM (B x d_in by d_in x d_sae) that no
 * amount of sparsity removes, and the Adam update is one memory-bound pass over
 * all parameters. Their sum is the floor. For each batch size and density
 * regime this program times, interleaved in one process:
 *   - sae_step on the batch,
 *   - one SGEMM of the encoder's shape,
 *   - one fused Adam-like pass over 2 d_in d_sae + d_in + d_sae floats
 *     (read g, p, m, v; write p, m, v),
 * and prints the medians, the ratio step / (SGEMM + Adam pass), tokens/s and
 * the measured L0 of the batch. Regimes: "dense" (fresh init, L0 ~ d_sae / 2)
 * and target L0 values reached by lowering b_enc uniformly.
 *
 * With --rss it only trains (no SGEMM or Adam buffers of its own) and prints the
 * process's peak resident set, so the memory of a step can be read alone.
 */
#define _GNU_SOURCE
#include <libsae/sae.h>

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <pthread.h>
#include <unistd.h>

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

/* Standard normal data from a fixed seed (or the file given with --data). */
static float *make_data(size_t n, size_t d_in, const char *path)
{
    float *x = malloc(n * d_in * sizeof(float));
    if (!x)
        die("out of memory");
    if (path) {
        FILE *fp = fopen(path, "rb");
        if (!fp || fread(x, sizeof(float), n * d_in, fp) != n * d_in)
            die("cannot read enough float32 values from --data file");
        fclose(fp);
        return x;
    }
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
    float *b = malloc(d_sae * sizeof(float));
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

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

typedef struct options {
    size_t d_in, d_sae;
    size_t batches[8];
    int n_batches;
    double regimes[8]; /* target L0; 0 = dense (fresh init) */
    int n_regimes;
    int reps, threads, kernel;
    const char *data;
    int rss_only;
    double b_enc;      /* with --b-enc: set b_enc directly instead of searching */
    int have_b_enc;
} options;

static int parse_list(const char *s, double *out, int cap)
{
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && n < cap; tok = strtok_r(NULL, ",", &save))
        out[n++] = strcmp(tok, "dense") == 0 ? 0.0 : atof(tok);
    free(copy);
    return n;
}

static void usage(void)
{
    puts("usage: sae-bench [options]\n"
         "  --d-in N        input dimension (768)\n"
         "  --d-sae N       features (10000)\n"
         "  --batch LIST    batch sizes, comma-separated (256,1024,4096)\n"
         "  --regimes LIST  'dense' and/or target L0 values (dense,300,30)\n"
         "  --reps N        timed repetitions per measurement (5)\n"
         "  --threads N     SAE_OPT_THREADS and the Adam pass's threads (0 = all cores)\n"
         "  --kernel K      auto | dense | sparse (auto)\n"
         "  --data FILE     raw float32 batch data (default: N(0,1) from a fixed seed)\n"
         "  --b-enc X       set every b_enc to X instead of searching for a target L0\n"
         "  --rss           train only and print the peak RSS (one batch size)");
}

static options parse(int argc, char **argv)
{
    options o = {768, 10000, {256, 1024, 4096}, 3, {0, 300, 30}, 3, 5, 0, SAE_KERNEL_AUTO, NULL, 0,
                 0.0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            usage();
            exit(0);
        } else if (strcmp(a, "--rss") == 0) {
            o.rss_only = 1;
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
        else if (strcmp(a, "--kernel") == 0)
            o.kernel = strcmp(v, "dense") == 0    ? SAE_KERNEL_DENSE
                       : strcmp(v, "sparse") == 0 ? SAE_KERNEL_SPARSE
                                                  : SAE_KERNEL_AUTO;
        else if (strcmp(a, "--regimes") == 0)
            o.n_regimes = parse_list(v, o.regimes, 8);
        else if (strcmp(a, "--batch") == 0) {
            double b[8];
            o.n_batches = parse_list(v, b, 8);
            for (int k = 0; k < o.n_batches; k++)
                o.batches[k] = (size_t)b[k];
        } else
            die("unknown option (see --help)");
    }
    if (o.d_in == 0 || o.d_sae == 0 || o.reps < 1 || o.n_batches < 1 || o.n_regimes < 1)
        die("bad option value");
    return o;
}

int main(int argc, char **argv)
{
    options opt = parse(argc, argv);
    int threads = opt.threads;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    size_t max_b = 0;
    for (int k = 0; k < opt.n_batches; k++)
        max_b = opt.batches[k] > max_b ? opt.batches[k] : max_b;
    float *x = make_data(max_b, opt.d_in, opt.data);

    size_t n_params = 2 * opt.d_in * opt.d_sae + opt.d_in + opt.d_sae;
    float *ap = NULL, *ag = NULL, *am = NULL, *av = NULL, *w = NULL, *out = NULL;
    if (!opt.rss_only) {
        ap = calloc(n_params, sizeof(float));
        ag = calloc(n_params, sizeof(float));
        am = calloc(n_params, sizeof(float));
        av = calloc(n_params, sizeof(float));
        w = malloc(opt.d_sae * opt.d_in * sizeof(float));
        out = malloc(max_b * opt.d_sae * sizeof(float));
        if (!ap || !ag || !am || !av || !w || !out)
            die("out of memory");
        for (size_t k = 0; k < n_params; k++)
            ag[k] = (float)((k % 17) * 1e-3);
        for (size_t k = 0; k < opt.d_sae * opt.d_in; k++)
            w[k] = (float)((k % 13) * 1e-2);
        printf("libsae %s, d_in %zu, d_sae %zu, %d threads, %d reps (medians)\n",
               sae_version_string(), opt.d_in, opt.d_sae, threads, opt.reps);
        printf("%6s %8s %8s %10s %10s %10s %7s %11s\n", "batch", "regime", "L0", "step ms",
               "sgemm ms", "adam ms", "ratio", "tokens/s");
    }

    for (int bi = 0; bi < opt.n_batches; bi++) {
        size_t n = opt.batches[bi];
        for (int ri = 0; ri < opt.n_regimes; ri++) {
            sae_model *m;
            sae_optimizer *o;
            check(sae_model_create(&m, opt.d_in, opt.d_sae, 1), "create model");
            double l0 = opt.regimes[ri] > 0 ? set_density(m, x, n, opt.regimes[ri]) : 0.0;
            if (opt.have_b_enc) {
                float *b = malloc(opt.d_sae * sizeof(float));
                for (size_t i = 0; i < opt.d_sae; i++)
                    b[i] = (float)opt.b_enc;
                check(sae_model_set_tensor(m, SAE_B_ENC, b, opt.d_sae), "set b_enc");
                free(b);
            }
            check(sae_optimizer_create(&o, m), "create optimizer");
            check(sae_optimizer_set(o, SAE_OPT_THREADS, opt.threads), "threads");
            check(sae_optimizer_set(o, SAE_OPT_KERNEL, opt.kernel), "kernel");
            sae_losses l;
            check(sae_step(m, o, x, n, &l), "warm-up step");
            double *t_step = calloc((size_t)opt.reps, sizeof(double));
            double *t_gemm = calloc((size_t)opt.reps, sizeof(double));
            double *t_adam = calloc((size_t)opt.reps, sizeof(double));
            double l0_sum = 0.0;
            for (int r = 0; r < opt.reps; r++) {
                double t0 = now();
                check(sae_step(m, o, x, n, &l), "step");
                t_step[r] = now() - t0;
                l0_sum += l.l0;
                if (opt.rss_only)
                    continue;
                t0 = now();
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)opt.d_sae,
                            (int)opt.d_in, 1.0f, x, (int)opt.d_in, w, (int)opt.d_in, 0.0f, out,
                            (int)opt.d_sae);
                t_gemm[r] = now() - t0;
                t0 = now();
                adam_like_pass(ap, ag, am, av, n_params, threads);
                t_adam[r] = now() - t0;
            }
            double step = median(t_step, opt.reps);
            l0 = l0_sum / opt.reps;
            if (opt.rss_only) {
                printf("batch %zu, L0 %.0f: step %.1f ms, peak RSS %.1f MB\n", n, l0, step * 1e3,
                       peak_rss_kb() / 1024.0);
            } else {
                double gemm = median(t_gemm, opt.reps), adam = median(t_adam, opt.reps);
                char regime[16];
                if (opt.have_b_enc)
                    snprintf(regime, sizeof regime, "b%.3g", opt.b_enc);
                else if (opt.regimes[ri] > 0)
                    snprintf(regime, sizeof regime, "L0~%g", opt.regimes[ri]);
                else
                    snprintf(regime, sizeof regime, "dense");
                printf("%6zu %8s %8.0f %10.1f %10.1f %10.1f %7.2f %11.0f\n", n, regime, l0,
                       step * 1e3, gemm * 1e3, adam * 1e3, step / (gemm + adam), n / step);
                fflush(stdout);
            }
            free(t_step);
            free(t_gemm);
            free(t_adam);
            sae_optimizer_free(o);
            sae_model_free(m);
        }
    }
    free(x);
    free(ap);
    free(ag);
    free(am);
    free(av);
    free(w);
    free(out);
    return 0;
}
