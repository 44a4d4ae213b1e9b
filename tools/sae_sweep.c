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
 * DIR/<jumprelu or gated>_lambda_<lambda>/ or DIR/<arch>_k_<k>/, which SAELens opens and
 * sae-train --resume continues.
 */
#include "common/checkpoint.h"
#include "common/inputs.h"
#include "common/config.h"
#include "common/args.h"
#include "common/plot.h"
#include "common/progress.h"
#include "common/recipe.h"
#include "common/train.h"

#include <errno.h>
#include <libsae/sae.h>
#include <math.h>
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
    TOOL_CONFIG_LONG_OPTIONS,
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

static void usage(const tool_config *defaults)
{
    printf("Usage: sae-sweep [OPTION]... [FILE]\n"
           "Train one SAE per sparsity setting on the same data, seed and schedule, log\n"
           "L2, L1 and the fraction of active features over the steps, draw them with\n"
           "gnuplot and print the final trade-off (on FILE, or on built-in synthetic data).\n\n");
    tool_config_help(stdout, defaults);
    printf("Sweep:\n"
           "  --arch A,B,...      the architectures to compare (default relu)\n"
           "  --lambdas A,B,...   relu, jumprelu: the coefficients, one run each (default\n"
           "                      ");
    print_list(default_lambdas, sizeof default_lambdas / sizeof *default_lambdas);
    printf(")\n"
           "  --ks A,B,...        topk, batchtopk, matryoshka: the values of k, one run\n"
           "                      each (default ");
    print_list(default_ks, sizeof default_ks / sizeof *default_ks);
    printf("; --k N alone: just N)\n"
           "  --out DIR           output directory (default sweep), gets sweep.csv\n");
    tool_csv_columns_help(stdout, "lambda", "arch,k");
    printf("                      (one block of rows per run), final.csv, sweep.gp and\n"
           "                      l1.png, l2.png, l0_frac.png, tradeoff.png (when gnuplot\n"
           "                      is installed)\n"
           "  --save-dir DIR      save each run's model in DIR/lambda_<lambda>/ (relu),\n"
           "                      DIR/<jumprelu or gated>_lambda_<lambda>/ or DIR/<arch>_k_<k>/\n"
           "                      (created if missing, DIR's parent not):\n"
           "                      sae_weights.safetensors and cfg.json for SAELens,\n"
           "                      optimizer.safetensors and train_state.txt for\n"
           "                      sae-train --resume\n"
           "  -h, --help          this help\n\n"
           "--lambda is ignored; Ctrl-C stops the sweep after the current step.\n");
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
        tool_usage_error("cannot write '%s'", path);
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

static void write_script(FILE *f, const run_spec *runs, size_t n, const tool_config *c,
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
            const char *w = l == 0 ? tool_arch_name(runs[i].arch) : l == 1 ? runs[i].lambda_s
                          : l == 2 ? runs[i].k_s : runs[i].label;
            fprintf(f, "%s%s", i ? " " : "", w);
        }
        fprintf(f, "'\n");
    }
    fprintf(f, "N = words(archs)\n"
               "data = ");
    tool_gp_quote(f, data_label);
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
        fprintf(f, "%s%s", a ? " " : "", tool_arch_name(c->archs[a]));
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
static tool_config run_config(const tool_config *c, const run_spec *r)
{
    tool_config rc = *c;
    rc.arch = r->arch;
    rc.archs[0] = r->arch;
    rc.n_archs = 1;
    rc.lambda = r->lambda;
    if (r->k)
        rc.k = r->k;
    return rc;
}

/* Everything the sweep holds, freed in one place (sweep_free). */
typedef struct sweep {
    tool_config cfg;
    double lambdas[MAX_VALUES], ks[MAX_VALUES];
    size_t n_lambdas, n_ks;
    const char *out_dir, *save_dir;
    run_spec *runs;         /* MAX_RUNS of them, n_runs in use, in the order of --arch */
    size_t n_runs;
    tool_inputs in;
    tool_sample sample;     /* the recipe's, scaled once for all runs */
    double scale;
    FILE *csv, *final;
    char csv_path[4096], final_path[4096];
    size_t saved;           /* runs checkpointed */
} sweep;

static void parse_command_line(sweep *s, int argc, char **argv)
{
    tool_config *cfg = &s->cfg;
    tool_config_defaults(cfg);
    cfg->log_every = 20;
    const tool_config defaults = *cfg;
    s->out_dir = "sweep";
    int c;
    while ((c = tool_getopt(argc, argv, long_options)) != -1) {
        if (tool_config_option(cfg, c, optarg))
            continue;
        switch (c) {
        case 'h': usage(&defaults); exit(0);
        case OPT_LAMBDAS: s->n_lambdas = tool_arg_doubles("--lambdas", optarg, s->lambdas, MAX_VALUES); break;
        case OPT_KS: s->n_ks = tool_arg_doubles("--ks", optarg, s->ks, MAX_VALUES); break;
        case OPT_OUT: s->out_dir = optarg; break;
        case OPT_SAVE_DIR: s->save_dir = optarg; break;
        }
    }
    tool_config_finish(cfg, argc, argv, optind);
    tool_config_check(cfg);
    tool_config_check_schedule(cfg);
    bool any_topk = false, any_lambda = false;
    for (size_t a = 0; a < cfg->n_archs; a++) {
        any_topk |= tool_arch_is_topk(cfg->archs[a]);
        any_lambda |= !tool_arch_is_topk(cfg->archs[a]);
    }
    if (s->n_ks && !any_topk)
        tool_usage_error("--ks: applies to --arch topk, batchtopk or matryoshka");
    if (s->n_lambdas && !any_lambda)
        tool_usage_error("--lambdas: applies to --arch relu or jumprelu");
    if (!s->n_ks && tool_config_given(cfg, TOOL_OPT_K)) {
        s->ks[0] = (double)cfg->k;
        s->n_ks = 1;
    } else if (!s->n_ks) {
        s->n_ks = sizeof default_ks / sizeof *default_ks;
        memcpy(s->ks, default_ks, sizeof default_ks);
    }
    for (size_t i = 0; i < s->n_ks && any_topk; i++)
        if (s->ks[i] != floor(s->ks[i]) || s->ks[i] < 1 || s->ks[i] > (double)cfg->d_sae)
            tool_usage_error("--ks: %g is not a whole number in [1, d_sae = %zu]", s->ks[i], cfg->d_sae);
    if (!s->n_lambdas) {
        s->n_lambdas = sizeof default_lambdas / sizeof *default_lambdas;
        memcpy(s->lambdas, default_lambdas, sizeof default_lambdas);
    }
}

/* One run per value of k (TopK, BatchTopK) or lambda, per architecture. */
static void plan_runs(sweep *s)
{
    const tool_config *cfg = &s->cfg;
    s->runs = calloc(MAX_RUNS, sizeof *s->runs);
    if (!s->runs)
        tool_usage_error("out of memory");
    for (size_t a = 0; a < cfg->n_archs; a++) {
        const int arch = cfg->archs[a];
        const bool topk = tool_arch_is_topk(arch);
        const double *values = topk ? s->ks : s->lambdas;
        for (size_t i = 0; i < (topk ? s->n_ks : s->n_lambdas); i++) {
            run_spec *r = &s->runs[s->n_runs++];
            r->arch = arch;
            if (topk) {
                r->k = (size_t)values[i];
                snprintf(r->lambda_s, sizeof r->lambda_s, "0");
                snprintf(r->k_s, sizeof r->k_s, "%zu", r->k);
                snprintf(r->label, sizeof r->label, "%s:k=%zu", tool_arch_name(arch), r->k);
            } else {
                r->lambda = values[i];
                snprintf(r->lambda_s, sizeof r->lambda_s, "%g", r->lambda);
                snprintf(r->k_s, sizeof r->k_s, "0");
                if (cfg->n_archs == 1 && arch == SAE_ARCH_RELU)
                    snprintf(r->label, sizeof r->label, "%g", r->lambda);
                else
                    snprintf(r->label, sizeof r->label, "%s:%g", tool_arch_name(arch), r->lambda);
            }
        }
    }
}

/* --save-dir: DIR/<run> for each run, made (and checked) before training. */
static void prepare_save_dirs(sweep *s)
{
    tool_checkpoint_prepare("--save-dir", s->save_dir);
    for (size_t i = 0; i < s->n_runs; i++) {
        run_spec *r = &s->runs[i];
        int len;
        if (r->arch == SAE_ARCH_RELU)
            len = snprintf(r->dir, sizeof r->dir, "%s/lambda_%s", s->save_dir, r->lambda_s);
        else if (!tool_arch_is_topk(r->arch)) /* jumprelu, gated */
            len = snprintf(r->dir, sizeof r->dir, "%s/%s_lambda_%s", s->save_dir,
                           tool_arch_name(r->arch), r->lambda_s);
        else
            len = snprintf(r->dir, sizeof r->dir, "%s/%s_k_%s", s->save_dir, tool_arch_name(r->arch),
                           r->k_s);
        if (len >= (int)sizeof r->dir)
            tool_usage_error("--save-dir: the path is too long");
        tool_checkpoint_prepare("--save-dir", r->dir);
    }
}

/* The data, the output directories and files, the recipe's sample. */
static void set_up(sweep *s)
{
    tool_config *cfg = &s->cfg;
    tool_inputs_load(&s->in, cfg);
    if (s->save_dir)
        prepare_save_dirs(s);
    if (make_dirs(s->out_dir) != 0)
        tool_usage_error("--out: cannot create the directory '%s'", s->out_dir);
    char err[600];
    s->scale = 1.0;
    if (tool_recipe_needs_sample(cfg, false) &&
        tool_sample_draw(&s->sample, &s->in.train, cfg->sample, cfg->seed) != 0)
        tool_usage_error("out of memory for a sample of %zu x %zu floats (see --sample)", cfg->sample,
                         s->in.train.cols);
    if (tool_recipe_scale(cfg, &s->sample, true, &s->scale, err, sizeof err) != SAE_OK)
        tool_usage_error("%s", err);
    s->csv = open_out(s->out_dir, "sweep.csv", s->csv_path, sizeof s->csv_path);
    s->final = open_out(s->out_dir, "final.csv", s->final_path, sizeof s->final_path);
    tool_csv_header(s->csv, "lambda", "arch,k");
    fprintf(s->final, "lambda,l2,l1,l0,l0_frac,fvu,dead_frac%s,arch,k\n", s->in.synthetic ? ",mmcs" : "");
    char compute[160];
    tool_describe_compute(cfg, compute, sizeof compute);
    fprintf(stderr, "sweep on %s: %zu x %zu; d_sae %zu, lr %g, batch %zu, %llu steps, %zu runs; "
                    "%s\n",
            cfg->input ? cfg->input : "synthetic data", s->in.train.rows, s->in.train.cols,
            cfg->d_sae, cfg->lr, cfg->batch, (unsigned long long)cfg->steps, s->n_runs, compute);
    if (cfg->normalize)
        fprintf(stderr, "input scale %.6g (--normalize): the table is of the folded models on "
                        "raw data\n", s->scale);
    printf("%10s  %10s  %5s  %10s  %10s  %8s  %8s  %8s  %6s%s\n", "arch", "lambda", "k", "l2", "l1",
           "l0", "l0/d_sae", "fvu", "dead%", s->in.synthetic ? "      mmcs" : "");
    fflush(stdout);
}

/* The trained model of run r on the evaluation rows: a row of final.csv and
 * of the table. */
static int evaluate_run(sweep *s, const run_spec *r, const sae_model *m, double dead_frac)
{
    sae_losses l;
    double fvu, mmcs = 0.0, recovered;
    int rc = tool_evaluate(m, &s->in, r->lambda, &l, &fvu);
    if (rc == SAE_OK && s->in.synthetic)
        rc = tool_truth_mmcs(m, &s->in, &mmcs, &recovered);
    if (rc != SAE_OK)
        return rc;
    char mmcs_csv[32] = "", mmcs_col[32] = "";
    if (s->in.synthetic) {
        snprintf(mmcs_csv, sizeof mmcs_csv, ",%.6g", mmcs);
        snprintf(mmcs_col, sizeof mmcs_col, "  %8.4f", mmcs);
    }
    const double l0_frac = l.l0 / (double)s->cfg.d_sae;
    fprintf(s->final, "%s,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g%s,%s,%s\n", r->lambda_s, l.l2, l.l1, l.l0,
            l0_frac, fvu, dead_frac, mmcs_csv, tool_arch_name(r->arch), r->k_s);
    printf("%10s  %10s  %5s  %10.5g  %10.5g  %8.2f  %8.4f  %8.4f  %6.1f%s\n",
           tool_arch_name(r->arch), r->lambda_s, r->k_s, l.l2, l.l1, l.l0, l0_frac, fvu,
           100.0 * dead_frac, mmcs_col);
    fflush(stdout);
    return SAE_OK;
}

/* Train run number k and report it. Returns an exit status (0: go on). */
static int train_run(sweep *s, size_t k)
{
    const run_spec *r = &s->runs[k];
    const tool_config rcfg = run_config(&s->cfg, r);
    char err[600], trail[64], label[96];
    snprintf(trail, sizeof trail, "%s,%s", tool_arch_name(r->arch), r->k_s);
    if (tool_arch_is_topk(r->arch))
        snprintf(label, sizeof label, "%s k %zu (%zu/%zu)", tool_arch_name(r->arch), r->k, k + 1,
                 s->n_runs);
    else if (s->cfg.n_archs == 1 && r->arch == SAE_ARCH_RELU)
        snprintf(label, sizeof label, "lambda %g (%zu/%zu)", r->lambda, k + 1, s->n_runs);
    else
        snprintf(label, sizeof label, "%s lambda %g (%zu/%zu)", tool_arch_name(r->arch), r->lambda,
                 k + 1, s->n_runs);
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    tool_batcher batches = {0};
    tool_train run = {.bad_row = SIZE_MAX};
    int status = 0, rc = tool_make_sae(&rcfg, s->in.train.cols, &m, &o);
    if (rc == SAE_OK && (rc = tool_recipe_b_dec(&rcfg, m, &s->sample, err, sizeof err)) != SAE_OK)
        status = (fprintf(stderr, "%s: %s\n", tool_program(), err), 1);
    else if (rc == SAE_OK && tool_batcher_init(&batches, &s->in.train, s->cfg.seed) != 0)
        rc = SAE_E_NOMEM;
    if (rc == SAE_OK) {
        batches.scale = s->scale;
        tool_progress progress;
        tool_progress_init(&progress, stderr, isatty(STDERR_FILENO), label, rcfg.steps,
                           (rcfg.steps + 4) / 5);
        tool_run_state state;
        tool_run_state_init(&state, &rcfg, &s->in, s->scale);
        run = (tool_train){
            .model = m, .opt = o, .batches = &batches, .batch = rcfg.batch, .steps = rcfg.steps,
            .log_every = rcfg.log_every, .dead_window = rcfg.dead_window, .csv = s->csv,
            .csv_lead = r->lambda_s, .csv_trail = trail, .progress = &progress,
            .stop = &tool_interrupted, .checkpoint_dir = s->save_dir ? r->dir : NULL,
            .state = &state, .sample = &s->sample,
            .resample_every = rcfg.resample_every,
            .resample_window = rcfg.resample_window ? rcfg.resample_window : rcfg.dead_window,
            .seed = rcfg.seed,
        };
        rc = tool_train_run(&run);
        s->saved += run.checkpoints > 0;
        if (rc == SAE_OK && rcfg.normalize) /* evaluate on raw data */
            rc = sae_model_fold_input_scale(m, s->scale);
        if (rc == SAE_OK)
            rc = evaluate_run(s, r, m, run.last.dead_frac);
    }
    if (status == 0 && run.bad_row != SIZE_MAX) {
        fprintf(stderr, "%s: %s: row %zu holds NaN or Inf\n", tool_program(),
                rcfg.input ? rcfg.input : "synthetic data", run.bad_row);
        status = TOOL_EXIT_USAGE;
    } else if (status == 0 && rc != SAE_OK) {
        fprintf(stderr, "%s: %s: %s\n", tool_program(), label,
                run.error[0] ? run.error : tool_status(rc));
        status = 1;
    }
    tool_batcher_free(&batches);
    sae_optimizer_free(o);
    sae_model_free(m);
    return status;
}

/* sweep.gp and the graphs it draws. */
static void draw_graphs(const sweep *s)
{
    char script_path[4096];
    FILE *gp = open_out(s->out_dir, "sweep.gp", script_path, sizeof script_path);
    write_script(gp, s->runs, s->n_runs, &s->cfg, s->in.eval_label);
    if (fclose(gp) != 0)
        tool_usage_error("cannot write '%s'", script_path);
    int prc = tool_gnuplot(script_path);
    if (prc == TOOL_GNUPLOT_OK)
        fprintf(stderr, "graphs: %s/{l1,l2,l0_frac,tradeoff}.png\n", s->out_dir);
    else if (prc == TOOL_GNUPLOT_MISSING)
        fprintf(stderr, "%s: gnuplot not found (Debian: apt-get install gnuplot-nox); "
                        "no graphs, the CSV files are in '%s'\n", tool_program(), s->out_dir);
    else
        fprintf(stderr, "%s: gnuplot failed; the CSV files are in '%s'\n", tool_program(), s->out_dir);
}

static void sweep_free(sweep *s)
{
    if (s->csv)
        fclose(s->csv);
    if (s->final)
        fclose(s->final);
    free(s->runs);
    tool_sample_free(&s->sample);
    tool_inputs_free(&s->in);
}

int main(int argc, char **argv)
{
    tool_set_program(argv[0]);
    static sweep s; /* zeroed: sweep_free is safe at any point */
    parse_command_line(&s, argc, argv);
    plan_runs(&s);
    set_up(&s);
    tool_catch_sigint();
    int status = 0;
    for (size_t k = 0; k < s.n_runs && !tool_interrupted && status == 0; k++)
        status = train_run(&s, k);
    int bad = fclose(s.csv) != 0;
    bad |= fclose(s.final) != 0;
    s.csv = s.final = NULL;
    if (bad) {
        fprintf(stderr, "%s: cannot write the CSV files in '%s'\n", tool_program(), s.out_dir);
        status = 1;
    }
    if (tool_interrupted) {
        fprintf(stderr, "%s: interrupted; the CSV files in '%s' are complete so far\n",
                tool_program(), s.out_dir);
        if (status == 0)
            status = TOOL_EXIT_INTERRUPTED;
    }
    if (status == 0)
        draw_graphs(&s);
    fprintf(stderr, "data: %s, %s\n", s.csv_path, s.final_path);
    if (s.saved)
        fprintf(stderr, "checkpoints: %zu of %zu in %s/\n", s.saved, s.n_runs, s.save_dir);
    sweep_free(&s);
    return status;
}
