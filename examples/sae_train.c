/*
 * sae-train: train one sparse autoencoder on activations in a .npy or raw
 * float32 file (memory-mapped), or on built-in synthetic data with known
 * features, and report how well it reconstructs and how sparse it is.
 *
 *   sae-train                                  # synthetic data, reports MMCS
 *   sae-train acts.npy --d-sae 8192 --lambda 5 --lr 5e-5 --tokens 50M --log run.csv
 *   sae-train acts.f32 --d-in 768 ...          # raw little-endian float32
 *   sae-train acts.npy --steps 100k --save ck --checkpoint-every 5k
 *   sae-train --resume ck --steps 200k         # 100k more steps, same batches
 *   sae-train --arch topk --k 8 --normalize --b-dec-init median \
 *             --lr-schedule linear --lr-warmup 100 --lr-decay 0.2 --hist density.csv
 *
 * Exit status: 0 done, 1 a libsae call or a write failed, 2 bad command line
 * or input file, 130 stopped by Ctrl-C (the log is complete up to that step).
 */
#include "common/checkpoint.h"
#include "common/cli.h"
#include "common/opts.h"
#include "common/plot.h"
#include "common/progress.h"
#include "common/recipe.h"
#include "common/train.h"

#include <libsae/sae.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    OPT_LOG = 1, OPT_INFO, OPT_TILES, OPT_TILES_COUNT, OPT_SAVE, OPT_RESUME, OPT_CHECKPOINT_EVERY,
    OPT_HIST, OPT_HIST_EVERY, OPT_STOP_AT
};

static const struct option long_options[] = {
    EX_CONFIG_LONG_OPTIONS,
    {"log", required_argument, NULL, OPT_LOG},
    {"info", no_argument, NULL, OPT_INFO},
    {"tiles", required_argument, NULL, OPT_TILES},
    {"tiles-count", required_argument, NULL, OPT_TILES_COUNT},
    {"save", required_argument, NULL, OPT_SAVE},
    {"resume", required_argument, NULL, OPT_RESUME},
    {"checkpoint-every", required_argument, NULL, OPT_CHECKPOINT_EVERY},
    {"hist", required_argument, NULL, OPT_HIST},
    {"hist-every", required_argument, NULL, OPT_HIST_EVERY},
    {"stop-at", required_argument, NULL, OPT_STOP_AT},
    {NULL, 0, NULL, 0},
};

static void usage(const ex_config *defaults)
{
    printf("Usage: sae-train [OPTION]... [FILE]\n"
           "Train a sparse autoencoder with libsae %s on FILE, or on built-in synthetic\n"
           "data with known features when FILE is omitted.\n\n",
           sae_version_string());
    ex_config_help(stdout, defaults);
    printf("Output:\n"
           "  --log FILE          CSV log, a row every --log-every steps (and at steps\n"
           "                      1, 2, 5, 10, 20, ... before that, and at the end):\n");
    ex_csv_columns_help(stdout, "", "");
    printf("                      (loss..l0, fvu: means over the steps since the previous\n"
           "                      row; l0_frac = l0 / d_sae; dead_frac: share of dead\n"
           "                      features; lr_t, lambda_t: the values applied at the\n"
           "                      step; resampled: features resampled since the last row;\n"
           "                      with --normalize, loss, l2 and l1 are those of s x)\n"
           "  --hist FILE         the log10 feature-density histogram over the sample at\n"
           "                      the end, as CSV:\n"
           "    %s\n"
           "                      and a PNG beside it (FILE with .png for .csv) drawn by\n"
           "                      gnuplot when it is installed\n"
           "  --hist-every N      also every N steps\n"
           "  --info              describe the input data and exit\n"
           "  --tiles PNG         draw decoder rows as square tiles (d_in must be a square,\n"
           "                      e.g. 784 = 28x28): the most often active features\n"
           "  --tiles-count N     how many tiles (default 100)\n"
           "  -h, --help          this help\n"
           "Checkpoints (a directory: sae_weights.safetensors and cfg.json, which SAELens\n"
           "opens with SAE.load_from_disk; optimizer.safetensors and train_state.txt):\n"
           "  --save DIR          write a checkpoint into DIR after the last step (also\n"
           "                      after Ctrl-C); DIR is created if missing (its parent not)\n"
           "  --checkpoint-every N  also after every N-th step (a CSV row marks each)\n"
           "  --stop-at N         stop after step N of the --steps (the schedules span all\n"
           "                      of them), e.g. for a job's time limit; --resume goes on\n"
           "  --resume DIR        continue the run saved in DIR, drawing the same batches\n"
           "                      as if it had never stopped, and save into DIR (or into\n"
           "                      --save). --steps and --tokens count the total. FILE,\n"
           "                      d_in, d_sae, seed, the synthetic data, --arch, --k,\n"
           "                      --threshold, --normalize and --b-dec-init come from DIR\n"
           "                      (given ones must match); --lr, --lambda, --clip, the\n"
           "                      other architecture and schedule options, --batch,\n"
           "                      --log-every, --dead-window, --sample, --resample-* and\n"
           "                      --hist-every too, unless given. --log and --hist append.\n"
           "                      With --normalize, sae_weights.safetensors has the scale\n"
           "                      folded in (it takes raw x) and train_weights.safetensors\n"
           "                      is the model as trained, which --resume continues.\n\n"
           "Progress goes to stderr: a live line on a terminal, a line every --log-every\n"
           "steps otherwise. Ctrl-C stops after the current step; the log is kept and the\n"
           "model evaluated (and saved with --save). Exit status: 0 done, 1 training or a\n"
           "save failed, 2 bad command line, input or checkpoint, 130 interrupted.\n",
           EX_HIST_COLUMNS);
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Rank features by how often they fire on the evaluation rows; fill idx with
 * the (up to) count most active ones, most active first. Returns how many. */
static size_t most_active(const sae_model *m, const ex_inputs *in, size_t *idx, size_t count)
{
    const size_t d_sae = sae_model_d_sae(m), chunk = 256;
    size_t *fired = calloc(d_sae, sizeof *fired);
    float *f = malloc(chunk * d_sae * sizeof *f);
    size_t found = 0;
    if (fired && f) {
        const float *x = ex_inputs_eval_x(in);
        for (size_t t0 = 0; t0 < in->eval_rows; t0 += chunk) {
            size_t n = in->eval_rows - t0 < chunk ? in->eval_rows - t0 : chunk;
            if (sae_encode(m, x + t0 * sae_model_d_in(m), n, f) != SAE_OK)
                break;
            for (size_t k = 0; k < n * d_sae; k++)
                fired[k % d_sae] += f[k] > 0.0f;
        }
        /* selection: repeatedly take the most active remaining feature */
        for (; found < count; found++) {
            size_t best = d_sae;
            for (size_t i = 0; i < d_sae; i++)
                if (fired[i] > 0 && (best == d_sae || fired[i] > fired[best]))
                    best = i;
            if (best == d_sae)
                break;
            idx[found] = best;
            fired[best] = 0;
        }
    }
    free(f);
    free(fired);
    return found;
}

static int draw_tiles(const sae_model *m, const ex_inputs *in, const char *png, size_t count,
                      size_t side)
{
    const size_t d_in = sae_model_d_in(m), d_sae = sae_model_d_sae(m);
    float *w_dec = malloc(d_sae * d_in * sizeof *w_dec);
    float *tiles = malloc(count * d_in * sizeof *tiles);
    size_t *idx = malloc(count * sizeof *idx);
    int rc = -1;
    if (w_dec && tiles && idx &&
        sae_model_get_tensor(m, SAE_W_DEC, w_dec, d_sae * d_in) == SAE_OK) {
        size_t n = most_active(m, in, idx, count);
        for (size_t k = 0; k < n; k++)
            memcpy(tiles + k * d_in, w_dec + idx[k] * d_in, d_in * sizeof *tiles);
        char title[160];
        snprintf(title, sizeof title, "decoder rows of the %zu most active of %zu features (red +, blue -)", n,
                 d_sae);
        rc = n ? ex_plot_tiles(png, tiles, n, side, side, title) : -1;
    }
    free(idx);
    free(tiles);
    free(w_dec);
    return rc;
}

/* Whether the directory that would hold `path` is writable (checked before
 * training, not after). */
static bool dir_writable(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return access(".", W_OK) == 0;
    size_t len = slash == path ? 1 : (size_t)(slash - path);
    char *dir = strndup(path, len);
    bool ok = dir && access(dir, W_OK) == 0;
    free(dir);
    return ok;
}

static bool same_dir(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The CSV log: a new file, or (resuming) the old one continued. */
static FILE *open_log(const char *path, bool append, uint64_t resume_step)
{
    FILE *log;
    if (append) {
        char err[256];
        uint64_t last_step;
        log = ex_csv_append(path, &last_step, err, sizeof err);
        if (!log)
            ex_usage_error("--log '%s': %s", path, err);
        if (last_step > resume_step)
            fprintf(stderr, "%s: note: --log '%s' goes on to step %llu, past the checkpoint's "
                            "step %llu; the new rows follow\n", ex_program(), path,
                    (unsigned long long)last_step, (unsigned long long)resume_step);
    } else {
        log = fopen(path, "w");
        if (!log)
            ex_usage_error("--log: cannot write '%s'", path);
        ex_csv_header(log, "", "");
    }
    setvbuf(log, NULL, _IOLBF, 0); /* complete rows on disk as they come */
    return log;
}

/* One line on the recipe's options in use (none: nothing printed). */
static void describe_recipe(const ex_config *c, double scale, size_t sample)
{
    char line[512] = "";
    size_t n = 0;
#define ADD(...) (n += (size_t)snprintf(line + n, n < sizeof line ? sizeof line - n : 0, __VA_ARGS__))
    if (c->lr_warmup || c->lr_schedule != SAE_LR_CONSTANT) {
        ADD("; lr %s", ex_lr_schedule_name(c->lr_schedule));
        if (c->lr_warmup)
            ADD(", warm-up %llu steps", (unsigned long long)c->lr_warmup);
        if (c->lr_schedule == SAE_LR_LINEAR && c->lr_decay > 0.0)
            ADD(", decay over the last %g%%", 100.0 * c->lr_decay);
    }
    if (c->l1_warmup > 0.0)
        ADD("; lambda warm-up over %g%% of the steps", 100.0 * c->l1_warmup);
    if (c->normalize)
        ADD("; input scale %.6g (--normalize)", scale);
    if (c->b_dec_init >= 0)
        ADD("; b_dec = %s of the sample", c->b_dec_init == SAE_B_DEC_MEAN ? "mean" : "geometric median");
    if (c->resample_every)
        ADD("; resampling every %llu steps (dead for %llu tokens)",
            (unsigned long long)c->resample_every,
            (unsigned long long)(c->resample_window ? c->resample_window : c->dead_window));
    if (sample)
        ADD("; sample %zu tokens", sample);
#undef ADD
    if (n)
        fprintf(stderr, "recipe: %s\n", line + 2);
}

/* "relu, lambda 0.3", "topk k 8", "jumprelu, lambda 0.01" */
static void describe_arch(const ex_config *c, char *buf, size_t len)
{
    if (ex_arch_is_topk(c->arch))
        snprintf(buf, len, "%s k %zu", ex_arch_name(c->arch), c->k);
    else
        snprintf(buf, len, "%s, lambda %g", ex_arch_name(c->arch), c->lambda);
}

int main(int argc, char **argv)
{
    ex_set_program(argv[0]);
    ex_config cfg;
    ex_config_defaults(&cfg);
    const ex_config defaults = cfg;
    const char *log_path = NULL, *tiles_path = NULL, *save_dir = NULL, *resume_dir = NULL;
    const char *hist_path = NULL;
    size_t tiles_count = 100;
    uint64_t checkpoint_every = 0, hist_every = 0, stop_at = 0;
    bool info = false;
    int c;
    while ((c = ex_getopt(argc, argv, long_options)) != -1) {
        if (ex_config_option(&cfg, c, optarg))
            continue;
        switch (c) {
        case 'h': usage(&defaults); return 0;
        case OPT_LOG: log_path = optarg; break;
        case OPT_INFO: info = true; break;
        case OPT_TILES: tiles_path = optarg; break;
        case OPT_TILES_COUNT: tiles_count = (size_t)ex_arg_count("--tiles-count", optarg, 1); break;
        case OPT_SAVE: save_dir = optarg; break;
        case OPT_RESUME: resume_dir = optarg; break;
        case OPT_CHECKPOINT_EVERY: checkpoint_every = ex_arg_count("--checkpoint-every", optarg, 1); break;
        case OPT_HIST: hist_path = optarg; break;
        case OPT_HIST_EVERY: hist_every = ex_arg_count("--hist-every", optarg, 1); break;
        case OPT_STOP_AT: stop_at = ex_arg_count("--stop-at", optarg, 1); break;
        }
    }
    ex_config_finish(&cfg, argc, argv, optind);
    if (cfg.n_archs > 1)
        ex_usage_error("--arch: sae-train trains one architecture (sae-sweep compares several)");
    if (tiles_count > 10000)
        ex_usage_error("--tiles-count: at most 10000");
    if (tiles_path && (strlen(tiles_path) < 4 || strcmp(tiles_path + strlen(tiles_path) - 4, ".png")))
        ex_usage_error("--tiles: '%s' does not end in .png", tiles_path);
    if (tiles_path && !dir_writable(tiles_path))
        ex_usage_error("--tiles: cannot write in the directory of '%s'", tiles_path);
    if (checkpoint_every && !save_dir && !resume_dir)
        ex_usage_error("--checkpoint-every: give --save DIR (or --resume DIR) to write them in");
    if (hist_every && !hist_path)
        ex_usage_error("--hist-every: give --hist FILE to write them in");
    /* (resuming without --hist: no histograms, whatever the checkpoint's --hist-every) */

    /* A resumed run: the model, the optimizer and the run's settings from DIR. */
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    ex_run_state state;
    if (resume_dir) {
        ex_checkpoint_load(resume_dir, &m, &o, &state);
        ex_config_resume(&cfg, resume_dir, &state, m, o);
    } else {
        ex_config_check(&cfg);
        ex_config_check_schedule(&cfg);
    }
    if (stop_at && stop_at >= cfg.steps)
        ex_usage_error("--stop-at %llu: not before the last step, %llu", (unsigned long long)stop_at,
                       (unsigned long long)cfg.steps);

    ex_inputs in;
    ex_inputs_load(&in, &cfg);
    const size_t d_in = in.train.cols;
    if (info) {
        printf("%s: %s, %zu x %zu float32\n", cfg.input ? cfg.input : "synthetic", in.train.format,
               in.train.rows, in.train.cols);
        if (cfg.eval_path)
            printf("%s: %s, %zu x %zu float32\n", cfg.eval_path, in.eval.format, in.eval.rows,
                   in.eval.cols);
        ex_inputs_free(&in);
        sae_optimizer_free(o);
        sae_model_free(m);
        return 0;
    }
    if (resume_dir)
        ex_inputs_check_resume(&in, &cfg, resume_dir, &state);
    size_t side = (size_t)(sqrt((double)d_in) + 0.5);
    if (tiles_path && side * side != d_in)
        ex_usage_error("--tiles: d_in %zu is not a square number of pixels", d_in);

    /* Checkpoints go to --save, else back into --resume's directory. The first
     * one into another run's directory removes that run's state first. */
    bool fresh = true;
    if (resume_dir && (!save_dir || same_dir(save_dir, resume_dir))) {
        save_dir = resume_dir;
        fresh = false;
    }
    char err[600];
    if (save_dir && !resume_dir && ex_checkpoint_check(cfg.arch, err, sizeof err) != SAE_OK)
        ex_usage_error("--save: %s", err);
    if (save_dir) /* fail now, not after training */
        ex_checkpoint_prepare(save_dir == resume_dir ? "--resume" : "--save", save_dir);

    int rc = resume_dir ? SAE_OK : ex_make_sae(&cfg, d_in, &m, &o);
    if (rc != SAE_OK) {
        fprintf(stderr, "%s: %s\n", ex_program(), sae_status_string(rc));
        ex_inputs_free(&in);
        return 1;
    }

    /* The recipe's sample: the input scale, b_dec, resampling, histograms. */
    ex_sample sample = {0};
    if (ex_recipe_needs_sample(&cfg, hist_path != NULL) &&
        ex_sample_draw(&sample, &in.train, cfg.sample, cfg.seed) != 0)
        ex_usage_error("out of memory for a sample of %zu x %zu floats (see --sample)", cfg.sample,
                       d_in);
    double scale = resume_dir ? state.scale : 1.0;
    rc = ex_recipe_scale(&cfg, &sample, resume_dir == NULL, &scale, err, sizeof err);
    if (rc == SAE_OK && !resume_dir)
        rc = ex_recipe_b_dec(&cfg, m, &sample, err, sizeof err);
    if (rc != SAE_OK) {
        fprintf(stderr, "%s: %s\n", ex_program(), err);
        ex_sample_free(&sample);
        sae_optimizer_free(o);
        sae_model_free(m);
        ex_inputs_free(&in);
        return rc == SAE_E_NONFINITE ? EX_EXIT_USAGE : 1;
    }
    if (!resume_dir)
        ex_run_state_init(&state, &cfg, &in, scale);
    if (!resume_dir || hist_every) /* resuming: the checkpoint's, unless given */
        state.hist_every = hist_every;
    hist_every = state.hist_every;

    FILE *log = log_path ? open_log(log_path, resume_dir != NULL, state.step) : NULL;
    FILE *hist = NULL;
    if (hist_path && !(hist = ex_hist_open(hist_path, resume_dir != NULL, err, sizeof err)))
        ex_usage_error("--hist '%s': %s", hist_path, err);

    ex_batcher batches;
    if (ex_batcher_init(&batches, &in.train, cfg.seed) != 0) {
        fprintf(stderr, "%s: %s\n", ex_program(), sae_status_string(SAE_E_NOMEM));
        ex_sample_free(&sample);
        sae_optimizer_free(o);
        sae_model_free(m);
        ex_inputs_free(&in);
        return 1;
    }
    batches.scale = scale;
    ex_batcher_skip(&batches, state.tokens); /* the rows a resumed run has drawn */
    if (resume_dir)
        fprintf(stderr, "resuming %s at step %llu of %llu\n", resume_dir,
                (unsigned long long)state.step, (unsigned long long)cfg.steps);
    char arch[64];
    describe_arch(&cfg, arch, sizeof arch);
    fprintf(stderr, "training on %s: %zu x %zu (%s); d_sae %zu, %s, lr %g, batch %zu, %llu steps\n",
            cfg.input ? cfg.input : "synthetic data", in.train.rows, d_in, in.train.format, cfg.d_sae,
            arch, cfg.lr, cfg.batch, (unsigned long long)cfg.steps);
    describe_recipe(&cfg, scale, sample.n);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C kills at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    ex_progress progress;
    ex_progress_init(&progress, stderr, isatty(STDERR_FILENO), "", cfg.steps, cfg.log_every);
    ex_train run = {
        .model = m, .opt = o, .batches = &batches, .batch = cfg.batch, .steps = cfg.steps,
        .stop_at = stop_at, .log_every = cfg.log_every, .dead_window = cfg.dead_window,
        .csv = log, .csv_lead = "", .csv_trail = "", .progress = &progress, .stop = &interrupted,
        .seconds_before = state.seconds, .checkpoint_dir = save_dir,
        .checkpoint_every = checkpoint_every, .checkpoint_fresh = fresh, .state = &state,
        .sample = &sample, .resample_every = cfg.resample_every,
        .resample_window = cfg.resample_window ? cfg.resample_window : cfg.dead_window,
        .seed = cfg.seed, .hist = hist, .hist_every = hist ? hist_every : 0,
    };
    rc = ex_train_run(&run);
    signal(SIGINT, SIG_DFL);
    int status = 0;
    if (run.bad_row != SIZE_MAX) {
        fprintf(stderr, "%s: %s: row %zu holds NaN or Inf\n", ex_program(),
                cfg.input ? cfg.input : "synthetic data", run.bad_row);
        status = EX_EXIT_USAGE;
    } else if (rc != SAE_OK) {
        fprintf(stderr, "%s: %s\n", ex_program(), run.error);
        status = 1;
    }
    if (log && fclose(log) != 0 && status == 0) {
        fprintf(stderr, "%s: cannot write the log '%s'\n", ex_program(), log_path);
        status = 1;
    }
    /* the last histogram (of the model as trained, on the sample as trained
     * on) is the loop's, unless it took no step (resuming a finished run) */
    size_t hist_dead = run.hist_dead;
    if (hist && status == 0 && run.steps_run == 0) {
        rc = ex_hist_write(hist, m, &sample, run.steps_done, &hist_dead);
        if (rc != SAE_OK) {
            fprintf(stderr, "%s: --hist '%s': %s\n", ex_program(), hist_path,
                    rc == SAE_E_IO ? "cannot write" : sae_status_string(rc));
            status = 1;
        }
    }
    if (hist && fclose(hist) != 0 && status == 0) {
        fprintf(stderr, "%s: cannot write '%s'\n", ex_program(), hist_path);
        status = 1;
    }
    /* From here on the model takes raw activations. */
    bool raw = true;
    if (cfg.normalize && (rc = sae_model_fold_input_scale(m, scale)) != SAE_OK) {
        fprintf(stderr, "%s: folding the input scale %g into the model: %s\n", ex_program(), scale,
                sae_status_string(rc));
        raw = false;
        status = 1;
    }

    if (run.bad_row == SIZE_MAX) {
        if (run.steps_run == 0 && !interrupted)
            printf("nothing to train: already at step %llu of %llu\n",
                   (unsigned long long)run.steps_done, (unsigned long long)cfg.steps);
        else if (resume_dir)
            printf("trained %llu steps (%llu tokens) in %.1f s, from step %llu to %llu\n",
                   (unsigned long long)run.steps_run, (unsigned long long)run.tokens_run,
                   run.seconds_run, (unsigned long long)(run.steps_done - run.steps_run),
                   (unsigned long long)run.steps_done);
        else
            printf("trained %llu steps (%llu tokens) in %.1f s\n", (unsigned long long)run.steps_run,
                   (unsigned long long)run.tokens_run, run.seconds_run);
        if (run.steps_done < cfg.steps && !interrupted && stop_at && run.steps_done == stop_at)
            printf("stopped at step %llu of %llu (--stop-at)\n", (unsigned long long)stop_at,
                   (unsigned long long)cfg.steps);
        if (run.checkpoints && run.last.checkpoint)
            printf("checkpoint: %s (step %llu; continue with --resume %s)\n", save_dir,
                   (unsigned long long)run.steps_done, save_dir);
        if (cfg.resample_every)
            printf("resampled: %llu dead features in %llu of the resamplings (every %llu steps)\n",
                   (unsigned long long)run.resampled, (unsigned long long)run.resamplings,
                   (unsigned long long)cfg.resample_every);
    }
    sae_losses l;
    double fvu;
    if (run.bad_row == SIZE_MAX && run.steps_done > 0 && raw &&
        ex_evaluate(m, &in, ex_arch_is_topk(cfg.arch) ? 0.0 : cfg.lambda, &l, &fvu) == SAE_OK) {
        printf("eval on %s: l2 %.5g  l1 %.5g  l0 %.2f (%.2f%% of %zu)  fvu %.4f\n", in.eval_label,
               l.l2, l.l1, l.l0, 100.0 * l.l0 / (double)cfg.d_sae, cfg.d_sae, fvu);
        printf("dead: %.1f%% of features fired on none of the last %llu training tokens\n",
               100.0 * run.last.dead_frac, (unsigned long long)cfg.dead_window);
        double mmcs, recovered;
        if (in.synthetic && ex_truth_mmcs(m, &in.synth, &mmcs, &recovered) == SAE_OK)
            printf("ground truth: mmcs %.4f  recovered %.1f%% of %zu true features (cosine > 0.9)\n",
                   mmcs, 100.0 * recovered, in.synth.n_feat);
        if (hist_path) {
            printf("density: %zu of %zu features fired on none of the %zu sample tokens; "
                   "histogram in %s\n", hist_dead, cfg.d_sae, sample.n, hist_path);
            char title[256];
            snprintf(title, sizeof title, "feature density after %llu steps: %s, d_sae %zu",
                     (unsigned long long)run.steps_done, arch, cfg.d_sae);
            int prc = ex_hist_plot(hist_path, title);
            char *png = ex_hist_png_path(hist_path);
            if (prc == EX_GNUPLOT_OK) {
                printf("density histogram: %s\n", png);
            } else if (prc == EX_GNUPLOT_MISSING) {
                fprintf(stderr, "%s: --hist: gnuplot not found (Debian: gnuplot-nox); the CSV is "
                                "in %s\n", ex_program(), hist_path);
            } else {
                fprintf(stderr, "%s: --hist: drawing '%s' failed\n", ex_program(),
                        png ? png : hist_path);
                if (status == 0)
                    status = 1;
            }
            free(png);
        }
        if (tiles_path) {
            int prc = draw_tiles(m, &in, tiles_path, tiles_count, side);
            if (prc == EX_GNUPLOT_OK) {
                printf("tiles: %s\n", tiles_path);
            } else if (prc == EX_GNUPLOT_MISSING) {
                fprintf(stderr, "%s: --tiles: gnuplot not found (Debian: gnuplot-nox)\n",
                        ex_program());
            } else {
                fprintf(stderr, "%s: --tiles: drawing '%s' failed\n", ex_program(), tiles_path);
                if (status == 0)
                    status = 1;
            }
        }
    }
    if (interrupted) {
        fprintf(stderr, "%s: interrupted after step %llu%s%s%s%s\n", ex_program(),
                (unsigned long long)run.steps_done, log_path ? "; log kept in " : "",
                log_path ? log_path : "", run.last.checkpoint ? "; checkpoint in " : "",
                run.last.checkpoint ? save_dir : "");
        if (status == 0)
            status = EX_EXIT_INTERRUPTED;
    }
    ex_batcher_free(&batches);
    ex_sample_free(&sample);
    sae_optimizer_free(o);
    sae_model_free(m);
    ex_inputs_free(&in);
    return status;
}
