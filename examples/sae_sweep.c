/*
 * sae-sweep: the basic SAE experiment. Train one SAE per L1 coefficient
 * lambda on the same data, seed and schedule; log L2, L1 (before lambda) and
 * the fraction of features active per token over the steps; draw the curves
 * with gnuplot; print the final trade-off as a table.
 *
 *   sae-sweep --out build/sweep                  # built-in synthetic data
 *   sae-sweep acts.npy --lambdas 1,3,10,30 --d-sae 4096 --tokens 5M --out sweep
 *
 * Writes in the --out directory:
 *   sweep.csv   lambda,step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac,checkpoint
 *               (the sae-train log columns, one block of rows per lambda)
 *   final.csv   lambda,l2,l1,l0,l0_frac,fvu,dead_frac on the evaluation rows
 *               (and mmcs against the true features of the synthetic data)
 *   sweep.gp    the gnuplot script, and the PNGs it draws:
 *               l1.png, l2.png, l0_frac.png (vs step), tradeoff.png (L2 vs L0)
 * and with --save-dir DIR a checkpoint per lambda in DIR/lambda_<lambda>/,
 * which SAELens opens and sae-train --resume continues.
 */
#include "common/checkpoint.h"
#include "common/cli.h"
#include "common/opts.h"
#include "common/plot.h"
#include "common/progress.h"
#include "common/train.h"

#include <errno.h>
#include <libsae/sae.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LAMBDAS 16

enum { OPT_LAMBDAS = 1, OPT_OUT, OPT_SAVE_DIR };

static const struct option long_options[] = {
    EX_CONFIG_LONG_OPTIONS,
    {"lambdas", required_argument, NULL, OPT_LAMBDAS},
    {"out", required_argument, NULL, OPT_OUT},
    {"save-dir", required_argument, NULL, OPT_SAVE_DIR},
    {NULL, 0, NULL, 0},
};

/* The default sweep on the built-in data: from too small (dense features,
 * small L2) to too large (features die, L2 grows), about a factor of 3 apart. */
static const double default_lambdas[] = {0.03, 0.1, 0.3, 1};

static void usage(const ex_config *defaults)
{
    printf("Usage: sae-sweep [OPTION]... [FILE]\n"
           "Train one SAE per L1 coefficient on the same data, seed and schedule, log\n"
           "L2, L1 and the fraction of active features over the steps, draw them with\n"
           "gnuplot and print the final trade-off (on FILE, or on built-in synthetic data).\n\n");
    ex_config_help(stdout, defaults);
    printf("Sweep:\n"
           "  --lambdas A,B,...   L1 coefficients (default ");
    for (size_t i = 0; i < sizeof default_lambdas / sizeof *default_lambdas; i++)
        printf("%s%g", i ? "," : "", default_lambdas[i]);
    printf(")\n"
           "  --out DIR           output directory (default sweep), gets sweep.csv\n"
           "    lambda,%s\n"
           "                      (one block of rows per lambda),\n"
           "                      final.csv, sweep.gp and l1.png, l2.png, l0_frac.png,\n"
           "                      tradeoff.png (when gnuplot is installed)\n"
           "  --save-dir DIR      save each lambda's model in DIR/lambda_<lambda>/ (created\n"
           "                      if missing, DIR's parent not): sae_weights.safetensors\n"
           "                      and cfg.json for SAELens, optimizer.safetensors and\n"
           "                      train_state.txt for sae-train --resume\n"
           "  -h, --help          this help\n\n"
           "--lambda is ignored; Ctrl-C stops the sweep after the current step.\n",
           EX_CSV_COLUMNS);
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

static void write_script(FILE *f, const double *lambdas, size_t n, const char *data_label)
{
    fprintf(f, "# Draws the sae-sweep graphs from sweep.csv and final.csv: gnuplot sweep.gp\n"
               "set terminal pngcairo size 800,520 font 'sans,11' linewidth 1.5\n"
               "set datafile separator ','\n"
               "set grid\n"
               "set key outside right top title 'L1 coefficient'\n"
               "lambdas = '");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%g", i ? " " : "", lambdas[i]);
    fprintf(f, "'\n"
               "N = words(lambdas)\n"
               "data = ");
    ex_gp_quote(f, data_label);
    fprintf(f, "\n"
               "# the rows of lambda i, others undefined (so each curve is one lambda)\n"
               "pick(i, col) = strcol('lambda') eq word(lambdas, i) ? column(col) : NaN\n"
               "set xlabel 'training step'\n"
               "\n"
               "set output 'l1.png'\n"
               "set title 'L1 = mean sum_i f_i ||W_{dec,i}||  (before lambda) vs step'\n"
               "set ylabel 'L1 (log scale)'\n"
               "set logscale y\n"
               "plot for [i=1:N] 'sweep.csv' using 'step':(pick(i, 'l1')) with lines "
               "title sprintf('%%s', word(lambdas, i))\n"
               "\n"
               "set output 'l2.png'\n"
               "set title 'L2 = mean squared reconstruction error vs step'\n"
               "set ylabel 'L2 (log scale)'\n"
               "plot for [i=1:N] 'sweep.csv' using 'step':(pick(i, 'l2')) with lines "
               "title sprintf('%%s', word(lambdas, i))\n"
               "\n"
               "set output 'l0_frac.png'\n"
               "set title 'fraction of features active per token (L0 / d_{sae}) vs step'\n"
               "set ylabel 'fraction nonzero (log scale)'\n"
               "plot for [i=1:N] 'sweep.csv' using 'step':(pick(i, 'l0_frac')) with lines "
               "title sprintf('%%s', word(lambdas, i))\n"
               "\n"
               "set output 'tradeoff.png'\n"
               "set title sprintf('after training, on %%s: reconstruction vs sparsity', data) noenhanced\n"
               "set xlabel 'L0 = active features per token (log scale)'\n"
               "set ylabel 'L2 (log scale)'\n"
               "set logscale xy\n"
               "set offsets graph 0.08, graph 0.08, graph 0.08, graph 0.08\n"
               "unset key\n"
               "plot 'final.csv' using 'l0':'l2' with linespoints pointtype 7 pointsize 1.5, \\\n"
               "     '' using 'l0':'l2':(sprintf('lambda %%s', strcol('lambda'))) "
               "with labels offset char 1,1 left\n");
}

int main(int argc, char **argv)
{
    ex_set_program(argv[0]);
    ex_config cfg;
    ex_config_defaults(&cfg);
    cfg.log_every = 20;
    const ex_config defaults = cfg;
    double lambdas[MAX_LAMBDAS];
    size_t n_lambdas = sizeof default_lambdas / sizeof *default_lambdas;
    memcpy(lambdas, default_lambdas, sizeof default_lambdas);
    const char *out_dir = "sweep", *save_dir = NULL;
    int c;
    while ((c = ex_getopt(argc, argv, long_options)) != -1) {
        if (ex_config_option(&cfg, c, optarg))
            continue;
        switch (c) {
        case 'h': usage(&defaults); return 0;
        case OPT_LAMBDAS: n_lambdas = ex_arg_doubles("--lambdas", optarg, lambdas, MAX_LAMBDAS); break;
        case OPT_OUT: out_dir = optarg; break;
        case OPT_SAVE_DIR: save_dir = optarg; break;
        }
    }
    ex_config_finish(&cfg, argc, argv, optind);
    ex_inputs in;
    ex_inputs_load(&in, &cfg);
    const size_t d_in = in.train.cols;
    char (*ckpt_dirs)[4096] = NULL; /* DIR/lambda_<lambda>, made before training */
    if (save_dir) {
        ex_checkpoint_prepare("--save-dir", save_dir);
        ckpt_dirs = calloc(n_lambdas, sizeof *ckpt_dirs);
        if (!ckpt_dirs)
            ex_usage_error("out of memory");
        for (size_t k = 0; k < n_lambdas; k++) {
            if (snprintf(ckpt_dirs[k], sizeof ckpt_dirs[k], "%s/lambda_%g", save_dir, lambdas[k]) >=
                (int)sizeof ckpt_dirs[k])
                ex_usage_error("--save-dir: the path is too long");
            ex_checkpoint_prepare("--save-dir", ckpt_dirs[k]);
        }
    }
    if (make_dirs(out_dir) != 0)
        ex_usage_error("--out: cannot create the directory '%s'", out_dir);
    char path[4096], final_path[4096], script_path[4096];
    FILE *csv = open_out(out_dir, "sweep.csv", path, sizeof path);
    FILE *final = open_out(out_dir, "final.csv", final_path, sizeof final_path);
    ex_csv_header(csv, "lambda");
    fprintf(final, "lambda,l2,l1,l0,l0_frac,fvu,dead_frac%s\n", in.synthetic ? ",mmcs" : "");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    fprintf(stderr, "sweep on %s: %zu x %zu; d_sae %zu, lr %g, batch %zu, %llu steps, %zu lambdas\n",
            cfg.input ? cfg.input : "synthetic data", in.train.rows, d_in, cfg.d_sae, cfg.lr,
            cfg.batch, (unsigned long long)cfg.steps, n_lambdas);
    printf("%10s  %10s  %10s  %8s  %8s  %8s%s\n", "lambda", "l2", "l1", "l0", "l0/d_sae", "fvu",
           in.synthetic ? "      mmcs" : "");
    fflush(stdout);
    int status = 0;
    uint64_t print_every = (cfg.steps + 4) / 5;
    size_t saved = 0; /* lambdas checkpointed */
    for (size_t k = 0; k < n_lambdas && !interrupted && status == 0; k++) {
        sae_model *m;
        sae_optimizer *o;
        ex_batcher batches;
        int rc = ex_make_sae(&cfg, d_in, lambdas[k], &m, &o);
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
        char lead[32], label[64];
        snprintf(lead, sizeof lead, "%g", lambdas[k]);
        snprintf(label, sizeof label, "lambda %g (%zu/%zu)", lambdas[k], k + 1, n_lambdas);
        ex_progress progress;
        ex_progress_init(&progress, stderr, isatty(STDERR_FILENO), label, cfg.steps, print_every);
        ex_run_state state;
        ex_run_state_init(&state, &cfg, &in);
        ex_train run = {
            .model = m, .opt = o, .batches = &batches, .batch = cfg.batch, .steps = cfg.steps,
            .log_every = cfg.log_every, .dead_window = cfg.dead_window, .csv = csv, .csv_lead = lead,
            .progress = &progress, .stop = &interrupted,
            .checkpoint_dir = save_dir ? ckpt_dirs[k] : NULL, .checkpoint_fresh = true,
            .state = &state,
        };
        rc = ex_train_run(&run);
        saved += run.checkpoints > 0;
        sae_losses l;
        double fvu;
        if (rc == SAE_OK)
            rc = ex_evaluate(m, &in, lambdas[k], &l, &fvu);
        double mmcs = 0.0, recovered;
        if (rc == SAE_OK && in.synthetic)
            rc = ex_truth_mmcs(m, &in.synth, &mmcs, &recovered);
        if (rc == SAE_OK) {
            char mmcs_csv[32] = "", mmcs_col[32] = "";
            if (in.synthetic) {
                snprintf(mmcs_csv, sizeof mmcs_csv, ",%.6g", mmcs);
                snprintf(mmcs_col, sizeof mmcs_col, "  %8.4f", mmcs);
            }
            fprintf(final, "%g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g%s\n", lambdas[k], l.l2, l.l1, l.l0,
                    l.l0 / (double)cfg.d_sae, fvu, run.last.dead_frac, mmcs_csv);
            printf("%10g  %10.5g  %10.5g  %8.2f  %8.4f  %8.4f%s\n", lambdas[k], l.l2, l.l1, l.l0,
                   l.l0 / (double)cfg.d_sae, fvu, mmcs_col);
            fflush(stdout);
        } else if (run.bad_row != SIZE_MAX) {
            fprintf(stderr, "%s: %s: row %zu holds NaN or Inf\n", ex_program(),
                    cfg.input ? cfg.input : "synthetic data", run.bad_row);
            status = EX_EXIT_USAGE;
        } else {
            fprintf(stderr, "%s: lambda %g: %s\n", ex_program(), lambdas[k],
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
        write_script(gp, lambdas, n_lambdas, in.eval_label);
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
        fprintf(stderr, "checkpoints: %zu of %zu in %s/lambda_*/\n", saved, n_lambdas, save_dir);
    free(ckpt_dirs);
    ex_inputs_free(&in);
    return status;
}
