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
 *   sae-train mlp_in.npy --target mlp_out.npy --arch topk --k 32   # a transcoder
 *
 * Exit status: 0 done, 1 a libsae call or a write failed, 2 bad command line
 * or input file, 130 stopped by Ctrl-C (the log is complete up to that step).
 */
#include "common/checkpoint.h"
#include "common/hist.h"
#include "common/inputs.h"
#include "common/outputs.h"
#include "common/resume.h"
#include "common/config.h"
#include "common/args.h"
#include "common/plot.h"
#include "common/progress.h"
#include "common/recipe.h"
#include "common/train.h"

#include <libsae/sae.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { OPT_INFO = 1, OPT_TILES, OPT_TILES_COUNT, OPT_HIST, OPT_HIST_EVERY, OPT_STOP_AT };

static const struct option long_options[] = {
    TOOL_CONFIG_LONG_OPTIONS,
    TOOL_TARGET_LONG_OPTIONS,
    TOOL_OUTPUTS_LONG_OPTIONS,
    {"info", no_argument, NULL, OPT_INFO},
    {"tiles", required_argument, NULL, OPT_TILES},
    {"tiles-count", required_argument, NULL, OPT_TILES_COUNT},
    {"hist", required_argument, NULL, OPT_HIST},
    {"hist-every", required_argument, NULL, OPT_HIST_EVERY},
    {"stop-at", required_argument, NULL, OPT_STOP_AT},
    {NULL, 0, NULL, 0},
};

static void usage(const tool_config *defaults)
{
    printf("Usage: sae-train [OPTION]... [FILE]\n"
           "Train a sparse autoencoder with libsae %s on FILE, or on built-in synthetic\n"
           "data with known features when FILE is omitted.\n\n",
           sae_version_string());
    tool_config_help(stdout, defaults);
    tool_target_help(stdout);
    printf("Output:\n"
           "  --log FILE          CSV log, a row every --log-every steps (and at steps\n"
           "                      1, 2, 5, 10, 20, ... before that, and at the end):\n");
    tool_csv_columns_help(stdout, "", "");
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
           "  --tiles PNG         draw decoder rows as square tiles (d_in, a transcoder's\n"
           "                      d_out, must be a square, e.g. 784 = 28x28): the most\n"
           "                      often active features\n"
           "  --tiles-count N     how many tiles (default 100)\n"
           "  -h, --help          this help\n"
           "Checkpoints (a checkpoint directory: each checkpoint DIR/gen-<n>, DIR/current\n"
           "the latest, switched in one atomic step, and its files seen through links in\n"
           "DIR: sae_weights.safetensors and cfg.json, which SAELens opens with\n"
           "SAE.load_from_disk(DIR); optimizer.safetensors and train_state.txt. A crash\n"
           "leaves the previous checkpoint or the new one, whole):\n"
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
           "                      other architecture and schedule options, --precision,\n"
           "                      --gemm, --batch, --log-every, --dead-window, --sample,\n"
           "                      --resample-* and --hist-every too, unless given. --log\n"
           "                      and --hist append.\n"
           "                      With --normalize, sae_weights.safetensors has the scale\n"
           "                      folded in (it takes raw x) and train_weights.safetensors\n"
           "                      is the model as trained, which --resume continues.\n\n"
           "Progress goes to stderr: a live line on a terminal, a line every --log-every\n"
           "steps otherwise. Ctrl-C stops after the current step; the log is kept and the\n"
           "model evaluated (and saved with --save). Exit status: 0 done, 1 training or a\n"
           "save failed, 2 bad command line, input or checkpoint, 130 interrupted.\n",
           TOOL_HIST_COLUMNS);
}

/* The (up to) count features that fire on the most evaluation rows
 * (sae_feature_fire_counts), most active first, into idx. Returns how many
 * fire at all. */
static size_t most_active(const sae_model *m, const tool_inputs *in, size_t *idx, size_t count)
{
    const size_t d_sae = sae_model_d_sae(m);
    uint64_t *fired = calloc(d_sae, sizeof *fired);
    size_t found = 0;
    const float *x = tool_inputs_eval_x(in);
    if (fired && sae_feature_fire_counts(m, x, in->eval_rows, fired, d_sae) == SAE_OK) {
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
    free(fired);
    return found;
}

static int draw_tiles(const sae_model *m, const tool_inputs *in, const char *png, size_t count,
                      size_t side)
{
    const size_t d_in = sae_model_d_out(m), d_sae = sae_model_d_sae(m); /* a row's width */
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
        rc = n ? tool_plot_tiles(png, tiles, n, side, side, title) : -1;
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

/* One line on the recipe's options in use (none: nothing printed). */
static void describe_recipe(const tool_config *c, double scale, size_t sample)
{
    char line[512] = "";
    size_t n = 0;
#define ADD(...) (n += (size_t)snprintf(line + n, n < sizeof line ? sizeof line - n : 0, __VA_ARGS__))
    if (c->lr_warmup || c->lr_schedule != SAE_LR_CONSTANT) {
        ADD("; lr %s", tool_lr_schedule_name(c->lr_schedule));
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


/* sae-train's own options (the shared ones are in tool_config and
 * tool_outputs). */
typedef struct options {
    const char *tiles_path, *hist_path;
    size_t tiles_count;
    uint64_t checkpoint_every, hist_every, stop_at;
    bool info;
} options;

/* Everything a run holds, freed in one place (job_free). */
typedef struct job {
    tool_config cfg;
    options opt;
    tool_outputs out;
    tool_inputs in;
    sae_model *m;
    sae_optimizer *o;
    tool_run_state state;   /* of the checkpoint resumed, then of the run */
    tool_sample sample;     /* the recipe's, scaled by `scale` */
    double scale;           /* the input scale (--normalize), else 1 */
    FILE *log, *hist;
    tool_batcher batches;
    tool_progress progress;
    tool_train run;
    size_t side;            /* --tiles: the side of a square tile, in pixels */
    bool raw;               /* the model takes raw activations (folded, or never scaled) */
    char arch[64];          /* "relu, lambda 0.3", "topk k 8": for messages */
} job;

static void parse_command_line(job *j, int argc, char **argv)
{
    tool_config *cfg = &j->cfg;
    options *opt = &j->opt;
    tool_config_defaults(cfg);
    const tool_config defaults = *cfg;
    opt->tiles_count = 100;
    int c;
    while ((c = tool_getopt(argc, argv, long_options)) != -1) {
        if (tool_config_option(cfg, c, optarg) || tool_outputs_option(&j->out, c, optarg))
            continue;
        switch (c) {
        case 'h': usage(&defaults); exit(0);
        case OPT_INFO: opt->info = true; break;
        case OPT_TILES: opt->tiles_path = optarg; break;
        case OPT_TILES_COUNT: opt->tiles_count = (size_t)tool_arg_count("--tiles-count", optarg, 1); break;
        case OPT_HIST: opt->hist_path = optarg; break;
        case OPT_HIST_EVERY: opt->hist_every = tool_arg_count("--hist-every", optarg, 1); break;
        case OPT_STOP_AT: opt->stop_at = tool_arg_count("--stop-at", optarg, 1); break;
        }
    }
    tool_config_finish(cfg, argc, argv, optind);
    const char *tiles = opt->tiles_path;
    if (cfg->n_archs > 1)
        tool_usage_error("--arch: sae-train trains one architecture (sae-sweep compares several)");
    if (opt->tiles_count > 10000)
        tool_usage_error("--tiles-count: at most 10000");
    if (tiles && (strlen(tiles) < 4 || strcmp(tiles + strlen(tiles) - 4, ".png")))
        tool_usage_error("--tiles: '%s' does not end in .png", tiles);
    if (tiles && !dir_writable(tiles))
        tool_usage_error("--tiles: cannot write in the directory of '%s'", tiles);
    tool_outputs_check(&j->out);
    if (opt->hist_every && !opt->hist_path)
        tool_usage_error("--hist-every: give --hist FILE to write them in");
    /* (resuming without --hist: no histograms, whatever the checkpoint's --hist-every) */
}

/* The settings of the run (a resumed run's from its checkpoint, with the
 * model and the optimizer), and its data. Exits 2 on a contradiction. */
static void load_run(job *j)
{
    const options *opt = &j->opt;
    tool_config_load_run(&j->cfg, j->out.resume_dir, 0, 0, &j->m, &j->o, &j->state);
    if (opt->stop_at && opt->stop_at >= j->cfg.steps)
        tool_usage_error("--stop-at %llu: not before the last step, %llu",
                         (unsigned long long)opt->stop_at, (unsigned long long)j->cfg.steps);
    tool_inputs_load(&j->in, &j->cfg);
}

static void print_info(const job *j)
{
    const tool_inputs *in = &j->in;
    printf("%s: %s, %zu x %zu float32\n", j->cfg.input ? j->cfg.input : "synthetic",
           in->train.format, in->train.rows, in->train.cols);
    if (j->cfg.target_path)
        printf("%s: %s, %zu x %zu float32 (targets)\n", j->cfg.target_path, in->target.format,
               in->target.rows, in->target.cols);
    if (j->cfg.eval_path)
        printf("%s: %s, %zu x %zu float32\n", j->cfg.eval_path, in->eval.format, in->eval.rows,
               in->eval.cols);
    if (j->cfg.eval_target_path)
        printf("%s: %s, %zu x %zu float32 (targets)\n", j->cfg.eval_target_path,
               in->eval_target.format, in->eval_target.rows, in->eval_target.cols);
}

/* Where checkpoints go (--save, else back into --resume's directory), made
 * and checked before any training. */
static void prepare_outputs(job *j)
{
    const options *opt = &j->opt;
    const size_t d_in = j->in.train.cols, d_out = j->cfg.d_out ? j->cfg.d_out : d_in;
    if (j->out.resume_dir)
        tool_inputs_check_resume(&j->in, &j->cfg, j->out.resume_dir, &j->state);
    j->side = (size_t)(sqrt((double)d_out) + 0.5);
    if (opt->tiles_path && j->side * j->side != d_out)
        tool_usage_error("--tiles: %s %zu is not a square number of pixels",
                         j->cfg.d_out ? "d_out" : "d_in", d_out);
    tool_outputs_prepare(&j->out, true);
}

/* The model (new unless resumed), the recipe's sample, input scale and
 * b_dec, the run's state, the log and histogram files, the batches. Returns
 * 0, or an exit status with the problem printed. */
static int set_up(job *j)
{
    tool_config *cfg = &j->cfg;
    const options *opt = &j->opt;
    const tool_outputs *out = &j->out;
    const bool resuming = out->resume_dir != NULL;
    char err[600];
    int rc = resuming ? SAE_OK : tool_make_sae(cfg, j->in.train.cols, &j->m, &j->o);
    if (rc != SAE_OK)
        return tool_library_error(rc, "creating the model");
    size_t bytes;
    if (out->save_dir && (rc = sae_model_save_size(j->m, &bytes)) != SAE_OK) /* before training */
        tool_usage_error("--save '%s': %s", out->save_dir, tool_status(rc));
    j->scale = resuming ? j->state.scale : 1.0;
    int status = tool_recipe_prepare(cfg, &j->in.train, resuming, opt->hist_path != NULL, j->m,
                                     &j->sample, &j->scale);
    if (status != 0)
        return status;
    if (!resuming)
        tool_run_state_init(&j->state, cfg, &j->in, j->scale);
    if (!resuming || opt->hist_every) /* resuming: the checkpoint's, unless given */
        j->state.hist_every = opt->hist_every;
    if (out->log_path && !(j->log = tool_csv_open_log(out->log_path, resuming, j->state.step, err,
                                                      sizeof err)))
        tool_usage_error("%s", err);
    if (opt->hist_path && !(j->hist = tool_hist_open(opt->hist_path, resuming, err, sizeof err)))
        tool_usage_error("--hist '%s': %s", opt->hist_path, err);
    if (tool_batcher_start(&j->batches, &j->in.train, cfg->seed, j->scale, j->state.tokens) != 0)
        return tool_library_error(SAE_E_NOMEM, "the batches");
    return 0;
}

/* The training loop, from the state's step to the total (or --stop-at). */
static int train(job *j)
{
    const tool_config *cfg = &j->cfg;
    const tool_outputs *out = &j->out;
    if (out->resume_dir)
        fprintf(stderr, "resuming %s at step %llu of %llu\n", out->resume_dir,
                (unsigned long long)j->state.step, (unsigned long long)cfg->steps);
    tool_describe_arch(cfg, j->arch, sizeof j->arch);
    char target[1200] = "";
    if (j->in.target.x)
        snprintf(target, sizeof target, " -> %s: %zu x %zu (%s)",
                 cfg->target_path ? cfg->target_path : "synthetic targets", j->in.target.rows,
                 j->in.target.cols, j->in.target.format);
    char compute[160];
    tool_describe_compute(cfg, compute, sizeof compute);
    fprintf(stderr, "training on %s: %zu x %zu (%s)%s; d_sae %zu, %s, lr %g, batch %zu, %llu "
                    "steps; %s\n",
            cfg->input ? cfg->input : "synthetic data", j->in.train.rows, j->in.train.cols,
            j->in.train.format, target, cfg->d_sae, j->arch, cfg->lr, cfg->batch,
            (unsigned long long)cfg->steps, compute);
    describe_recipe(cfg, j->scale, j->sample.n);
    tool_catch_sigint();
    tool_progress_init(&j->progress, stderr, isatty(STDERR_FILENO), "", cfg->steps, cfg->log_every);
    tool_train *run = &j->run;
    tool_train_init(run, cfg, j->m, j->o, &j->batches, &j->state, &j->sample);
    run->target = j->in.target.x ? &j->in.target : NULL;
    run->stop_at = j->opt.stop_at;
    run->csv = j->log;
    run->progress = &j->progress;
    run->stop = &tool_interrupted;
    run->checkpoint_dir = out->save_dir;
    run->checkpoint_every = out->checkpoint_every;
    run->hist = j->hist;
    run->hist_every = j->hist ? j->state.hist_every : 0;
    int rc = tool_train_run(&j->run);
    tool_release_sigint();
    if (j->run.bad_row != SIZE_MAX) {
        const char *data = j->run.bad_row_in_target ? cfg->target_path : cfg->input;
        fprintf(stderr, "%s: %s: row %zu holds NaN or Inf\n", tool_program(),
                data ? data : "synthetic data", j->run.bad_row);
        return TOOL_EXIT_USAGE;
    }
    if (rc != SAE_OK) {
        fprintf(stderr, "%s: %s\n", tool_program(), j->run.error);
        return 1;
    }
    return 0;
}

/* Close the log and the histograms (the last histogram is the loop's,
 * unless it took no step), and fold the input scale into the model, which
 * from then on takes raw activations. */
static int finish_outputs(job *j, int status)
{
    const options *opt = &j->opt;
    if (j->log && fclose(j->log) != 0 && status == 0)
        status = tool_write_error(j->out.log_path);
    j->log = NULL;
    if (j->hist && status == 0 && j->run.steps_run == 0) {
        int rc = tool_hist_write(j->hist, j->m, &j->sample, j->run.steps_done, &j->run.hist_dead);
        if (rc != SAE_OK)
            status = rc == SAE_E_IO ? tool_write_error(opt->hist_path)
                                    : tool_library_error(rc, "--hist");
    }
    if (j->hist && fclose(j->hist) != 0 && status == 0)
        status = tool_write_error(opt->hist_path);
    j->hist = NULL;
    int rc;
    if (j->cfg.normalize && (rc = sae_model_fold_input_scale(j->m, j->scale)) != SAE_OK) {
        char what[96];
        snprintf(what, sizeof what, "folding the input scale %g into the model", j->scale);
        status = tool_library_error(rc, what);
        j->raw = false;
    }
    return status;
}

/* Draw the density histograms (--hist) and the tiles (--tiles) with
 * gnuplot. Returns status, or 1 if a drawing failed. */
static int draw(job *j, int status)
{
    const options *opt = &j->opt;
    if (opt->hist_path) {
        printf("density: %zu of %zu features fired on none of the %zu sample tokens; "
               "histogram in %s\n", j->run.hist_dead, j->cfg.d_sae, j->sample.n, opt->hist_path);
        char title[256];
        snprintf(title, sizeof title, "feature density after %llu steps: %s, d_sae %zu",
                 (unsigned long long)j->run.steps_done, j->arch, j->cfg.d_sae);
        char *png = tool_hist_png_path(opt->hist_path);
        int rc = tool_plot_report(tool_hist_plot(opt->hist_path, title), "--hist",
                                  png ? png : opt->hist_path, "density histogram", opt->hist_path);
        free(png);
        if (rc != 0 && status == 0)
            status = rc;
    }
    if (opt->tiles_path) {
        int rc = tool_plot_report(draw_tiles(j->m, &j->in, opt->tiles_path, opt->tiles_count, j->side),
                                  "--tiles", opt->tiles_path, "tiles", NULL);
        if (rc != 0 && status == 0)
            status = rc;
    }
    return status;
}

/* What the run did, and the model on the evaluation data. */
static int report(job *j, int status)
{
    const tool_config *cfg = &j->cfg;
    const tool_train *run = &j->run;
    const uint64_t stop_at = j->opt.stop_at;
    if (run->bad_row != SIZE_MAX)
        return status;
    if (run->steps_run == 0 && !tool_interrupted) {
        printf("nothing to train: already at step %llu of %llu\n",
               (unsigned long long)run->steps_done, (unsigned long long)cfg->steps);
    } else {
        printf("trained %llu steps (%llu tokens) in %.1f s", (unsigned long long)run->steps_run,
               (unsigned long long)run->tokens_run, run->seconds_run);
        if (j->out.resume_dir)
            printf(", from step %llu to %llu", (unsigned long long)(run->steps_done - run->steps_run),
                   (unsigned long long)run->steps_done);
        printf("\n");
    }
    if (run->steps_done < cfg->steps && !tool_interrupted && stop_at && run->steps_done == stop_at)
        printf("stopped at step %llu of %llu (--stop-at)\n", (unsigned long long)stop_at,
               (unsigned long long)cfg->steps);
    tool_train_summary(run);
    double mmcs, recovered;
    if (run->steps_done == 0 || !j->raw)
        return status;
    int rc = tool_evaluate_print(j->m, &j->in, cfg);
    if (rc != SAE_OK)
        return status ? status : tool_library_error(rc, "evaluating the model");
    printf("dead: %.1f%% of features fired on none of the last %llu training tokens\n",
           100.0 * run->last.dead_frac, (unsigned long long)cfg->dead_window);
    if (j->in.synthetic && tool_truth_mmcs(j->m, &j->in, &mmcs, &recovered) == SAE_OK)
        printf("ground truth: mmcs %.4f  recovered %.1f%% of %zu true %sfeatures (cosine > 0.9)\n",
               mmcs, 100.0 * recovered, j->in.synth.n_feat, j->in.target.x ? "output " : "");
    double skip_error;
    if (j->in.pairs.skip && tool_truth_skip_error(j->m, &j->in, &skip_error) == SAE_OK)
        printf("ground truth: ||W_skip - A|| / ||A|| = %.4f\n", skip_error);
    return draw(j, status);
}

static void note_interrupt(const job *j)
{
    const char *ck = j->run.last.checkpoint ? j->out.save_dir : NULL;
    fprintf(stderr, "%s: interrupted after step %llu%s%s%s%s\n", tool_program(),
            (unsigned long long)j->run.steps_done, j->out.log_path ? "; log kept in " : "",
            j->out.log_path ? j->out.log_path : "", ck ? "; checkpoint in " : "", ck ? ck : "");
}

static void job_free(job *j)
{
    if (j->log)
        fclose(j->log);
    if (j->hist)
        fclose(j->hist);
    tool_batcher_free(&j->batches);
    tool_sample_free(&j->sample);
    sae_optimizer_free(j->o);
    sae_model_free(j->m);
    tool_inputs_free(&j->in);
}

int main(int argc, char **argv)
{
    tool_set_program(argv[0]);
    static job j; /* zeroed: job_free is safe at any point */
    j.raw = true;
    parse_command_line(&j, argc, argv);
    load_run(&j);
    int status = 0;
    if (j.opt.info) {
        print_info(&j);
    } else {
        prepare_outputs(&j);
        status = set_up(&j);
        if (status == 0) {
            status = finish_outputs(&j, train(&j));
            status = report(&j, status);
            if (tool_interrupted)
                note_interrupt(&j);
        }
        if (status == 0 && tool_interrupted)
            status = TOOL_EXIT_INTERRUPTED;
    }
    job_free(&j);
    return status;
}
