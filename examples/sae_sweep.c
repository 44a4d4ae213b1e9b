/*
 * sae-sweep: the basic SAE experiment. Train one SAE per sparsity setting on
 * the same data, seed and schedule -- per L1 (ReLU) or L0 (JumpReLU)
 * coefficient lambda, per k for TopK and BatchTopK, for one architecture or
 * several; log L2, L1 (before lambda) and the fraction of features active
 * per token over the steps; draw the curves with gnuplot; print the final
 * trade-off as a table.
 *
 *   sae-sweep --out build/sweep                  # built-in synthetic data
 *   sae-sweep acts.npy --lambdas 1,3,10,30 --d-sae 4096 --tokens 5M --out sweep
 *   sae-sweep --arch relu,topk,batchtopk,jumprelu --out build/archs
 *
 * Writes in the --out directory:
 *   sweep.csv   lambda,<the sae-train log columns>,arch,k (one block of rows
 *               per run; lambda 0 and k the run's for TopK and BatchTopK, k 0
 *               for the others)
 *   final.csv   lambda,l2,l1,l0,l0_frac,fvu,dead_frac on the evaluation rows
 *               (and mmcs against the true features of the synthetic data),
 *               arch,k
 *   sweep.gp    the gnuplot script, and the PNGs it draws:
 *               l1.png, l2.png, l0_frac.png (vs step), tradeoff.png (L2 vs L0,
 *               a curve per architecture)
 * and with --save-dir DIR a checkpoint per run in DIR/lambda_<lambda>/ (ReLU),
 * DIR/jumprelu_lambda_<lambda>/ or DIR/<arch>_k_<k>/, which SAELens opens and
 * sae-train --resume continues.
 */
#include "common/checkpoint.h"
#include "common/cli.h"
#include "common/opts.h"
#include "common/plot.h"
#include "common/progress.h"
#include "common/recipe.h"
#include "common/train.h"

#include <errno.h>
#include <libsae/sae.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_VALUES 16
#define MAX_RUNS (4 * MAX_VALUES)

enum { OPT_LAMBDAS = 1, OPT_OUT, OPT_SAVE_DIR, OPT_KS };

static const struct option long_options[] = {
    EX_CONFIG_LONG_OPTIONS,
    {"lambdas", required_argument, NULL, OPT_LAMBDAS},
    {"ks", required_argument, NULL, OPT_KS},
    {"out", required_argument, NULL, OPT_OUT},
    {"save-dir", required_argument, NULL, OPT_SAVE_DIR},
    {NULL, 0, NULL, 0},
};

/* The default sweeps on the built-in data, from too sparse a penalty (dense
 * features, small L2) to too large (features die, L2 grows), about a factor
 * of 3 apart; and k from below the ~4 true features per token to well above. */
static const double default_lambdas[] = {0.03, 0.1, 0.3, 1};
static const double default_ks[] = {2, 4, 8, 16};

static void print_list(const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%s%g", i ? "," : "", v[i]);
}

static void usage(const ex_config *defaults)
{
    printf("Usage: sae-sweep [OPTION]... [FILE]\n"
           "Train one SAE per sparsity setting on the same data, seed and schedule, log\n"
           "L2, L1 and the fraction of active features over the steps, draw them with\n"
           "gnuplot and print the final trade-off (on FILE, or on built-in synthetic data).\n\n");
    ex_config_help(stdout, defaults);
    printf("Sweep:\n"
           "  --arch A,B,...      the architectures to compare (default relu)\n"
           "  --lambdas A,B,...   relu, jumprelu: the coefficients, one run each (default\n"
           "                      ");
    print_list(default_lambdas, sizeof default_lambdas / sizeof *default_lambdas);
    printf(")\n"
           "  --ks A,B,...        topk, batchtopk: the values of k, one run each (default\n"
           "                      ");
    print_list(default_ks, sizeof default_ks / sizeof *default_ks);
    printf("; --k N alone: just N)\n"
           "  --out DIR           output directory (default sweep), gets sweep.csv\n");
    ex_csv_columns_help(stdout, "lambda", "arch,k");
    printf("                      (one block of rows per run), final.csv, sweep.gp and\n"
           "                      l1.png, l2.png, l0_frac.png, tradeoff.png (when gnuplot\n"
           "                      is installed)\n"
           "  --save-dir DIR      save each run's model in DIR/lambda_<lambda>/ (relu),\n"
           "                      DIR/jumprelu_lambda_<lambda>/ or DIR/<arch>_k_<k>/\n"
           "                      (created if missing, DIR's parent not):\n"
           "                      sae_weights.safetensors and cfg.json for SAELens,\n"
           "                      optimizer.safetensors and train_state.txt for\n"
           "                      sae-train --resume\n"
           "  -h, --help          this help\n\n"
           "--lambda is ignored; Ctrl-C stops the sweep after the current step.\n");
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* mkdir -p */
static int make_dirs(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -1;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char saved = *s;
            *s = '\0';
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                free(p);
                return -1;
            }
            *s = saved;
            if (!saved)
                break;
        }
    }
    free(p);
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

static FILE *open_out(const char *dir, const char *name, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        ex_usage_error("cannot write '%s'", path);
    return f;
}

/* One training run of the sweep. */
typedef struct run_spec {
    int arch;
    double lambda;   /* 0 for TopK and BatchTopK */
    size_t k;        /* 0 for ReLU and JumpReLU */
    char lambda_s[32], k_s[24]; /* as in the CSV files */
    char label[48];  /* in the graphs' keys */
    char dir[4096];  /* --save-dir: its checkpoint */
} run_spec;

static void write_script(FILE *f, const run_spec *runs, size_t n, const ex_config *c,
                         const char *data_label)
{
    bool only_relu = c->n_archs == 1 && c->arch == SAE_ARCH_RELU;
    fprintf(f, "# Draws the sae-sweep graphs from sweep.csv and final.csv: gnuplot sweep.gp\n"
               "set terminal pngcairo size 800,520 font 'sans,11' linewidth 1.5\n"
               "set datafile separator ','\n"
               "set grid\n"
               "set key outside right top title '%s' noenhanced\n",
            only_relu ? "L1 coefficient" : "run");
    /* the runs as parallel word lists: arch, lambda and k as in the CSV, label */
    const char *lists[] = {"archs", "lams", "ks", "labels"};
    for (int l = 0; l < 4; l++) {
        fprintf(f, "%s = '", lists[l]);
        for (size_t i = 0; i < n; i++) {
            const char *w = l == 0 ? ex_arch_name(runs[i].arch) : l == 1 ? runs[i].lambda_s
                          : l == 2 ? runs[i].k_s : runs[i].label;
            fprintf(f, "%s%s", i ? " " : "", w);
        }
        fprintf(f, "'\n");
    }
    fprintf(f, "N = words(archs)\n"
               "data = ");
    ex_gp_quote(f, data_label);
    fprintf(f, "\n"
               "# the rows of run i, others undefined (so each curve is one run)\n"
               "is_run(i) = strcol('arch') eq word(archs, i) && strcol('lambda') eq word(lams, i) "
               "&& strcol('k') eq word(ks, i)\n"
               "pick(i, col) = is_run(i) ? column(col) : NaN\n"
               "set xlabel 'training step'\n"
               "\n"
               "set output 'l1.png'\n"
               "set title 'L1 = mean sum_i f_i ||W_{dec,i}||  (before lambda) vs step'\n"
               "set ylabel 'L1 (log scale)'\n"
               "set logscale y\n"
               "plot for [i=1:N] 'sweep.csv' using 'step':(pick(i, 'l1')) with lines "
               "title word(labels, i) noenhanced\n"
               "\n"
               "set output 'l2.png'\n"
               "set title 'L2 = mean squared reconstruction error vs step'\n"
               "set ylabel 'L2 (log scale)'\n"
               "plot for [i=1:N] 'sweep.csv' using 'step':(pick(i, 'l2')) with lines "
               "title word(labels, i) noenhanced\n"
               "\n"
               "set output 'l0_frac.png'\n"
               "set title 'fraction of features active per token (L0 / d_{sae}) vs step'\n"
               "set ylabel 'fraction nonzero (log scale)'\n"
               "plot for [i=1:N] 'sweep.csv' using 'step':(pick(i, 'l0_frac')) with lines "
               "title word(labels, i) noenhanced\n"
               "\n"
               "set output 'tradeoff.png'\n"
               "set title sprintf('after training, on %%s: reconstruction vs sparsity', data) noenhanced\n"
               "set xlabel 'L0 = active features per token (log scale)'\n"
               "set ylabel 'L2 (log scale)'\n"
               "set logscale xy\n"
               "# the points' range (not whole decades), with room for the labels, and\n"
               "# tics at 1, 2 and 5 times the powers of ten in it\n"
               "set autoscale fix\n"
               "set offsets graph 0.1, graph 0.25, graph 0.12, graph 0.08\n");
    for (int axis = 0; axis < 2; axis++) {
        fprintf(f, "set %ctics (", axis ? 'y' : 'x');
        for (int e = -9; e <= 9; e++)
            fprintf(f, "%s1e%d, 2e%d, 5e%d", e > -9 ? ", " : "", e, e, e);
        fprintf(f, ")\nset format %c '%%g'\n", axis ? 'y' : 'x');
    }
    /* a curve per architecture, each point labelled with its lambda or k */
    fprintf(f, "arch_list = '");
    for (size_t a = 0; a < c->n_archs; a++)
        fprintf(f, "%s%s", a ? " " : "", ex_arch_name(c->archs[a]));
    fprintf(f, "'\n"
               "A = words(arch_list)\n"
               "of_arch(a, col) = strcol('arch') eq word(arch_list, a) ? column(col) : NaN\n"
               "point(a) = strcol('arch') ne word(arch_list, a) ? '' : "
               "(strcol('k') eq '0' ? 'lambda '.strcol('lambda') : 'k '.strcol('k'))\n"
               "%s\n"
               "plot for [a=1:A] 'final.csv' using 'l0':(of_arch(a, 'l2')) with linespoints "
               "pointtype 7 pointsize 1.5 title word(arch_list, a), \\\n"
               "     for [a=1:A] '' using 'l0':(of_arch(a, 'l2')):(point(a)) "
               "with labels offset char 0.8,0.7 left font ',9' notitle\n",
            c->n_archs == 1 ? "unset key" : "set key inside top right title 'architecture'");
}

/* Apply the run's architecture and sparsity to a copy of the configuration. */
static ex_config run_config(const ex_config *c, const run_spec *r)
{
    ex_config rc = *c;
    rc.arch = r->arch;
    rc.archs[0] = r->arch;
    rc.n_archs = 1;
    rc.lambda = r->lambda;
    if (r->k)
        rc.k = r->k;
    return rc;
}

int main(int argc, char **argv)
{
    ex_set_program(argv[0]);
    ex_config cfg;
    ex_config_defaults(&cfg);
    cfg.log_every = 20;
    const ex_config defaults = cfg;
    double lambdas[MAX_VALUES], ks[MAX_VALUES];
    size_t n_lambdas = 0, n_ks = 0;
    const char *out_dir = "sweep", *save_dir = NULL;
    int c;
    while ((c = ex_getopt(argc, argv, long_options)) != -1) {
        if (ex_config_option(&cfg, c, optarg))
            continue;
        switch (c) {
        case 'h': usage(&defaults); return 0;
        case OPT_LAMBDAS: n_lambdas = ex_arg_doubles("--lambdas", optarg, lambdas, MAX_VALUES); break;
        case OPT_KS: n_ks = ex_arg_doubles("--ks", optarg, ks, MAX_VALUES); break;
        case OPT_OUT: out_dir = optarg; break;
        case OPT_SAVE_DIR: save_dir = optarg; break;
        }
    }
    ex_config_finish(&cfg, argc, argv, optind);
    ex_config_check(&cfg);
    ex_config_check_schedule(&cfg);
    bool any_topk = false, any_lambda = false;
    for (size_t a = 0; a < cfg.n_archs; a++) {
        any_topk |= ex_arch_is_topk(cfg.archs[a]);
        any_lambda |= !ex_arch_is_topk(cfg.archs[a]);
    }
    if (n_ks && !any_topk)
        ex_usage_error("--ks: applies to --arch topk or batchtopk");
    if (n_lambdas && !any_lambda)
        ex_usage_error("--lambdas: applies to --arch relu or jumprelu");
    if (!n_ks && ex_config_given(&cfg, EX_OPT_K)) {
        ks[0] = (double)cfg.k;
        n_ks = 1;
    } else if (!n_ks) {
        n_ks = sizeof default_ks / sizeof *default_ks;
        memcpy(ks, default_ks, sizeof default_ks);
    }
    for (size_t i = 0; i < n_ks && any_topk; i++)
        if (ks[i] != floor(ks[i]) || ks[i] < 1 || ks[i] > (double)cfg.d_sae)
            ex_usage_error("--ks: %g is not a whole number in [1, d_sae = %zu]", ks[i], cfg.d_sae);

    /* the runs, in the order of --arch */
    run_spec *runs = calloc(MAX_RUNS, sizeof *runs);
    if (!runs)
        ex_usage_error("out of memory");
    size_t n_runs = 0;
    for (size_t a = 0; a < cfg.n_archs; a++) {
        const int arch = cfg.archs[a];
        const double *values = ks;
        size_t n = n_ks;
        if (!ex_arch_is_topk(arch)) {
            values = n_lambdas ? lambdas : default_lambdas;
            n = n_lambdas ? n_lambdas : sizeof default_lambdas / sizeof *default_lambdas;
        }
        for (size_t i = 0; i < n; i++) {
            run_spec *r = &runs[n_runs++];
            r->arch = arch;
            if (ex_arch_is_topk(arch)) {
                r->k = (size_t)values[i];
                snprintf(r->lambda_s, sizeof r->lambda_s, "0");
                snprintf(r->k_s, sizeof r->k_s, "%zu", r->k);
                snprintf(r->label, sizeof r->label, "%s:k=%zu", ex_arch_name(arch), r->k);
            } else {
                r->lambda = values[i];
                snprintf(r->lambda_s, sizeof r->lambda_s, "%g", r->lambda);
                snprintf(r->k_s, sizeof r->k_s, "0");
                if (cfg.n_archs == 1 && arch == SAE_ARCH_RELU)
                    snprintf(r->label, sizeof r->label, "%g", r->lambda);
                else
                    snprintf(r->label, sizeof r->label, "%s:%g", ex_arch_name(arch), r->lambda);
            }
        }
    }

    ex_inputs in;
    ex_inputs_load(&in, &cfg);
    const size_t d_in = in.train.cols;
    char err[600];
    if (save_dir) { /* DIR/<run>, made (and checked) before training */
        for (size_t a = 0; a < cfg.n_archs; a++) /* can this libsae save the architecture? */
            if (ex_checkpoint_check(cfg.archs[a], err, sizeof err) != SAE_OK)
                ex_usage_error("--save-dir: %s", err);
        ex_checkpoint_prepare("--save-dir", save_dir);
        for (size_t i = 0; i < n_runs; i++) {
            run_spec *r = &runs[i];
            int len;
            if (r->arch == SAE_ARCH_RELU)
                len = snprintf(r->dir, sizeof r->dir, "%s/lambda_%s", save_dir, r->lambda_s);
            else if (r->arch == SAE_ARCH_JUMPRELU)
                len = snprintf(r->dir, sizeof r->dir, "%s/jumprelu_lambda_%s", save_dir, r->lambda_s);
            else
                len = snprintf(r->dir, sizeof r->dir, "%s/%s_k_%s", save_dir, ex_arch_name(r->arch),
                               r->k_s);
            if (len >= (int)sizeof r->dir)
                ex_usage_error("--save-dir: the path is too long");
            ex_checkpoint_prepare("--save-dir", r->dir);
        }
    }
    if (make_dirs(out_dir) != 0)
        ex_usage_error("--out: cannot create the directory '%s'", out_dir);

    /* The recipe's sample, scaled once for all runs. */
    ex_sample sample = {0};
    double scale = 1.0;
    if (ex_recipe_needs_sample(&cfg, false) &&
        ex_sample_draw(&sample, &in.train, cfg.sample, cfg.seed) != 0)
        ex_usage_error("out of memory for a sample of %zu x %zu floats (see --sample)", cfg.sample,
                       d_in);
    if (ex_recipe_scale(&cfg, &sample, true, &scale, err, sizeof err) != SAE_OK)
        ex_usage_error("%s", err);

    char path[4096], final_path[4096], script_path[4096];
    FILE *csv = open_out(out_dir, "sweep.csv", path, sizeof path);
    FILE *final = open_out(out_dir, "final.csv", final_path, sizeof final_path);
    ex_csv_header(csv, "lambda", "arch,k");
    fprintf(final, "lambda,l2,l1,l0,l0_frac,fvu,dead_frac%s,arch,k\n", in.synthetic ? ",mmcs" : "");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    fprintf(stderr, "sweep on %s: %zu x %zu; d_sae %zu, lr %g, batch %zu, %llu steps, %zu runs\n",
            cfg.input ? cfg.input : "synthetic data", in.train.rows, d_in, cfg.d_sae, cfg.lr,
            cfg.batch, (unsigned long long)cfg.steps, n_runs);
    if (cfg.normalize)
        fprintf(stderr, "input scale %.6g (--normalize): the table is of the folded models on "
                        "raw data\n", scale);
    printf("%10s  %10s  %5s  %10s  %10s  %8s  %8s  %8s  %6s%s\n", "arch", "lambda", "k", "l2", "l1",
           "l0", "l0/d_sae", "fvu", "dead%", in.synthetic ? "      mmcs" : "");
    fflush(stdout);
    int status = 0;
    uint64_t print_every = (cfg.steps + 4) / 5;
    size_t saved = 0; /* runs checkpointed */
    for (size_t k = 0; k < n_runs && !interrupted && status == 0; k++) {
        const run_spec *r = &runs[k];
        ex_config rcfg = run_config(&cfg, r);
        sae_model *m;
        sae_optimizer *o;
        ex_batcher batches;
        int rc = ex_make_sae(&rcfg, d_in, &m, &o);
        if (rc == SAE_OK && ex_recipe_b_dec(&rcfg, m, &sample, err, sizeof err) != SAE_OK) {
            fprintf(stderr, "%s: %s\n", ex_program(), err);
            status = 1;
            sae_optimizer_free(o);
            sae_model_free(m);
            break;
        }
        if (rc == SAE_OK && ex_batcher_init(&batches, &in.train, cfg.seed) != 0) {
            sae_optimizer_free(o);
            sae_model_free(m);
            rc = SAE_E_NOMEM;
        }
        if (rc != SAE_OK) {
            fprintf(stderr, "%s: %s\n", ex_program(), sae_status_string(rc));
            status = 1;
            break;
        }
        batches.scale = scale;
        char trail[64], label[96];
        snprintf(trail, sizeof trail, "%s,%s", ex_arch_name(r->arch), r->k_s);
        if (ex_arch_is_topk(r->arch))
            snprintf(label, sizeof label, "%s k %zu (%zu/%zu)", ex_arch_name(r->arch), r->k, k + 1,
                     n_runs);
        else if (cfg.n_archs == 1 && r->arch == SAE_ARCH_RELU)
            snprintf(label, sizeof label, "lambda %g (%zu/%zu)", r->lambda, k + 1, n_runs);
        else
            snprintf(label, sizeof label, "%s lambda %g (%zu/%zu)", ex_arch_name(r->arch),
                     r->lambda, k + 1, n_runs);
        ex_progress progress;
        ex_progress_init(&progress, stderr, isatty(STDERR_FILENO), label, cfg.steps, print_every);
        ex_run_state state;
        ex_run_state_init(&state, &rcfg, &in, scale);
        ex_train run = {
            .model = m, .opt = o, .batches = &batches, .batch = cfg.batch, .steps = cfg.steps,
            .log_every = cfg.log_every, .dead_window = cfg.dead_window, .csv = csv,
            .csv_lead = r->lambda_s, .csv_trail = trail, .progress = &progress,
            .stop = &interrupted, .checkpoint_dir = save_dir ? r->dir : NULL,
            .checkpoint_fresh = true, .state = &state, .sample = &sample,
            .resample_every = cfg.resample_every,
            .resample_window = cfg.resample_window ? cfg.resample_window : cfg.dead_window,
            .seed = cfg.seed,
        };
        rc = ex_train_run(&run);
        saved += run.checkpoints > 0;
        if (rc == SAE_OK && cfg.normalize) /* evaluate on raw data */
            rc = sae_model_fold_input_scale(m, scale);
        sae_losses l;
        double fvu;
        if (rc == SAE_OK)
            rc = ex_evaluate(m, &in, r->lambda, &l, &fvu);
        double mmcs = 0.0, recovered;
        if (rc == SAE_OK && in.synthetic)
            rc = ex_truth_mmcs(m, &in.synth, &mmcs, &recovered);
        if (rc == SAE_OK) {
            char mmcs_csv[32] = "", mmcs_col[32] = "";
            if (in.synthetic) {
                snprintf(mmcs_csv, sizeof mmcs_csv, ",%.6g", mmcs);
                snprintf(mmcs_col, sizeof mmcs_col, "  %8.4f", mmcs);
            }
            fprintf(final, "%s,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g%s,%s\n", r->lambda_s, l.l2, l.l1, l.l0,
                    l.l0 / (double)cfg.d_sae, fvu, run.last.dead_frac, mmcs_csv, trail);
            printf("%10s  %10s  %5s  %10.5g  %10.5g  %8.2f  %8.4f  %8.4f  %6.1f%s\n",
                   ex_arch_name(r->arch), r->lambda_s, r->k_s, l.l2, l.l1, l.l0,
                   l.l0 / (double)cfg.d_sae, fvu, 100.0 * run.last.dead_frac, mmcs_col);
            fflush(stdout);
        } else if (run.bad_row != SIZE_MAX) {
            fprintf(stderr, "%s: %s: row %zu holds NaN or Inf\n", ex_program(),
                    cfg.input ? cfg.input : "synthetic data", run.bad_row);
            status = EX_EXIT_USAGE;
        } else {
            fprintf(stderr, "%s: %s: %s\n", ex_program(), label,
                    run.error[0] ? run.error : sae_status_string(rc));
            status = 1;
        }
        ex_batcher_free(&batches);
        sae_optimizer_free(o);
        sae_model_free(m);
    }
    if (fclose(csv) != 0 || fclose(final) != 0) {
        fprintf(stderr, "%s: cannot write the CSV files in '%s'\n", ex_program(), out_dir);
        status = 1;
    }
    if (interrupted) {
        fprintf(stderr, "%s: interrupted; the CSV files in '%s' are complete so far\n",
                ex_program(), out_dir);
        if (status == 0)
            status = EX_EXIT_INTERRUPTED;
    }
    if (status == 0) {
        FILE *gp = open_out(out_dir, "sweep.gp", script_path, sizeof script_path);
        write_script(gp, runs, n_runs, &cfg, in.eval_label);
        if (fclose(gp) != 0)
            ex_usage_error("cannot write '%s'", script_path);
        int prc = ex_gnuplot(script_path);
        if (prc == EX_GNUPLOT_OK)
            fprintf(stderr, "graphs: %s/{l1,l2,l0_frac,tradeoff}.png\n", out_dir);
        else if (prc == EX_GNUPLOT_MISSING)
            fprintf(stderr, "%s: gnuplot not found (Debian: apt-get install gnuplot-nox); "
                            "no graphs, the CSV files are in '%s'\n", ex_program(), out_dir);
        else
            fprintf(stderr, "%s: gnuplot failed; the CSV files are in '%s'\n", ex_program(), out_dir);
    }
    fprintf(stderr, "data: %s/sweep.csv, %s\n", out_dir, final_path);
    if (saved)
        fprintf(stderr, "checkpoints: %zu of %zu in %s/\n", saved, n_runs, save_dir);
    free(runs);
    ex_sample_free(&sample);
    ex_inputs_free(&in);
    return status;
}
