#include "resume.h"

#include "args.h"
#include "checkpoint.h"

#include <stdio.h>
#include <string.h>

/* An option given on the command line must agree with the checkpoint. */
static void agree(const tool_config *c, int code, const char *opt, uint64_t given, uint64_t saved,
                  const char *dir)
{
    if (tool_config_given(c, code) && given != saved)
        tool_usage_error("%s %llu: the checkpoint in '%s' has %llu", opt, (unsigned long long)given,
                         dir, (unsigned long long)saved);
}

/* Take a hyperparameter from the optimizer, or set the command line's value. */
static void hyper(const tool_config *c, int code, int option, double *value, sae_optimizer *o)
{
    if (tool_config_given(c, code)) {
        int rc = sae_optimizer_set(o, option, *value);
        if (rc != SAE_OK)
            tool_usage_error("cannot set option %d to %g: %s", option, *value, tool_status(rc));
    } else {
        sae_optimizer_get(o, option, value);
    }
}

static void hyper_u64(const tool_config *c, int code, int option, uint64_t *value, sae_optimizer *o)
{
    double v = (double)*value;
    hyper(c, code, option, &v, o);
    *value = (uint64_t)v;
}

/* A setting fixed at the start of a run, given again: it must agree. */
static void fixed(const tool_config *c, int code, const char *opt, bool agrees, const char *dir,
                  const char *saved)
{
    if (tool_config_given(c, code) && !agrees)
        tool_usage_error("%s: the checkpoint in '%s' has %s", opt, dir, saved);
}

static const char *b_dec_name(int method)
{
    return method == SAE_B_DEC_MEAN ? "mean" : method == SAE_B_DEC_GEOMETRIC_MEDIAN ? "median" : "none";
}

/* The data: the checkpoint's synthetic settings, or its file (FILE may name
 * a moved copy); d_in, d_sae and the seed. */
static void resume_data(tool_config *c, const char *dir, const tool_run_state *s, const sae_model *m)
{
    if (tool_config_given(c, TOOL_OPT_DECODER_INIT_NORM))
        tool_usage_error("--decoder-init-norm: applies to a new model, not to the checkpoint in "
                         "'%s'", dir);
    const size_t d_in = sae_model_d_in(m);
    size_t d_sae = 0; /* all features, also of a shard (sae-train-mpi) */
    sae_model_shard(m, NULL, NULL, &d_sae);
    agree(c, TOOL_OPT_D_SAE, "--d-sae", c->d_sae, d_sae, dir);
    agree(c, TOOL_OPT_D_IN, "--d-in", c->d_in, d_in, dir);
    agree(c, TOOL_OPT_SEED, "--seed", c->seed, s->seed, dir);
    c->d_sae = d_sae;
    c->seed = s->seed;
    if (strcmp(s->data, "synthetic") != 0) {
        if (!c->input && !s->input[0])
            tool_usage_error("--resume '%s': give the training FILE (%zu x %zu floats)", dir,
                             s->rows, s->d_in);
        if (!c->input)
            c->input = s->input;
        if (strcmp(s->data, "raw") == 0)
            c->d_in = d_in; /* a .npy states its own shape, checked after loading */
        return;
    }
    if (c->input)
        tool_usage_error("--resume '%s': the checkpoint was trained on synthetic data, not on "
                         "'%s'", dir, c->input);
    agree(c, TOOL_OPT_SYNTH_FEATURES, "--synth-features", c->synth_features, s->synth_features, dir);
    if (tool_config_given(c, TOOL_OPT_SYNTH_ACTIVE) && c->synth_active != s->synth_active)
        tool_usage_error("--synth-active %g: the checkpoint in '%s' has %g", c->synth_active, dir,
                         s->synth_active);
    agree(c, TOOL_OPT_SYNTH_TOKENS, "--synth-tokens", c->synth_tokens, s->synth_tokens, dir);
    c->d_in = d_in;
    c->synth_features = s->synth_features;
    c->synth_active = s->synth_active;
    c->synth_tokens = s->synth_tokens;
}

/* A transcoder's settings (the model's kind and d_out, the checkpoint's
 * target file unless --target names a moved copy). */
static void resume_kind(tool_config *c, const char *dir, const tool_run_state *s, const sae_model *m)
{
    const int kind = sae_model_kind(m);
    const bool synthetic = strcmp(s->data, "synthetic") == 0;
    if (kind == SAE_KIND_AUTOENCODER) {
        if (tool_config_transcoder(c))
            tool_usage_error("--%s: the checkpoint in '%s' is an autoencoder",
                             c->synth_target ? "synth-target" : "target", dir);
        return;
    }
    fixed(c, TOOL_OPT_SKIP, "--skip", kind == SAE_KIND_SKIP_TRANSCODER, dir,
          "a transcoder without a skip map");
    agree(c, TOOL_OPT_D_OUT, "--d-out", c->d_out, sae_model_d_out(m), dir);
    c->skip = kind == SAE_KIND_SKIP_TRANSCODER;
    c->d_out = sae_model_d_out(m);
    if (synthetic) {
        if (c->target_path)
            tool_usage_error("--target '%s': the checkpoint in '%s' was trained on synthetic "
                             "pairs", c->target_path, dir);
        c->synth_target = true;
    } else if (!c->target_path) {
        if (!s->target[0])
            tool_usage_error("--resume '%s': the checkpoint is a transcoder: give its --target "
                             "FILE (%zu x %zu floats)", dir, s->rows, c->d_out);
        c->target_path = s->target;
    }
}

/* Whether --widths (as given: d_sae may be left out) are a Matryoshka
 * model's level widths; the model's go into c, and into text as "widths
 * W1,W2,...". */
static bool same_widths(tool_config *c, const sae_model *m, char *text, size_t len)
{
    size_t n = sae_model_matryoshka_levels(m), w[64];
    text[0] = '\0';
    if (n == 0 || n > 64 || sae_model_matryoshka_widths(m, w, n) != SAE_OK)
        return true; /* not Matryoshka: --widths is refused as not applying */
    bool same = !tool_config_given(c, TOOL_OPT_WIDTHS) ||
                ((c->n_widths == n || c->n_widths + 1 == n) &&
                 memcmp(c->widths, w, c->n_widths * sizeof *w) == 0);
    memcpy(c->widths, w, n * sizeof *w);
    c->n_widths = n;
    int at = snprintf(text, len, "widths ");
    for (size_t i = 0; i < n && at >= 0 && (size_t)at < len; i++)
        at += snprintf(text + at, len - (size_t)at, "%s%zu", i ? "," : "", w[i]);
    return same;
}

/* The architecture (the model's) and what was fixed at the start of the run. */
static void resume_arch(tool_config *c, const char *dir, const tool_run_state *s, const sae_model *m)
{
    const int arch = sae_model_arch(m);
    char saved[64];
    if (c->n_archs > 1)
        tool_usage_error("--arch: one architecture (the checkpoint's %s)", tool_arch_name(arch));
    snprintf(saved, sizeof saved, "%s", tool_arch_name(arch));
    fixed(c, TOOL_OPT_ARCH, "--arch", c->arch == arch, dir, saved);
    snprintf(saved, sizeof saved, "%s k %zu", tool_arch_name(arch), sae_model_k(m));
    fixed(c, TOOL_OPT_K, "--k", !tool_arch_is_topk(arch) || c->k == sae_model_k(m), dir, saved);
    char widths[64 * 22];
    bool same = same_widths(c, m, widths, sizeof widths);
    fixed(c, TOOL_OPT_WIDTHS, "--widths", same, dir, widths);
    snprintf(saved, sizeof saved, "%g", s->threshold0);
    fixed(c, TOOL_OPT_THRESHOLD, "--threshold", arch != SAE_ARCH_JUMPRELU || s->threshold0 == 0.0 ||
          c->threshold0 == s->threshold0, dir, saved);
    fixed(c, TOOL_OPT_NORMALIZE, "--normalize", s->normalize, dir, "none (it trained on raw x)");
    fixed(c, TOOL_OPT_B_DEC_INIT, "--b-dec-init", c->b_dec_init == s->b_dec_init, dir,
          b_dec_name(s->b_dec_init));
    c->arch = c->archs[0] = arch;
    c->n_archs = 1;
    if (tool_arch_is_topk(arch))
        c->k = sae_model_k(m);
    if (s->threshold0 > 0.0)
        c->threshold0 = s->threshold0;
    c->normalize = s->normalize;
    c->b_dec_init = s->b_dec_init;
    tool_config_check(c);
}

/* The settings that may change: the state's and the optimizer's, unless
 * given (then set in o). */
static void resume_settings(tool_config *c, const tool_run_state *s, sae_optimizer *o)
{
    if (!tool_config_given(c, TOOL_OPT_BATCH))
        c->batch = s->batch;
    if (!tool_config_given(c, TOOL_OPT_LOG_EVERY))
        c->log_every = s->log_every;
    if (!tool_config_given(c, TOOL_OPT_DEAD_WINDOW))
        c->dead_window = s->dead_window;
    if (!tool_config_given(c, TOOL_OPT_SAMPLE) && s->sample)
        c->sample = s->sample;
    if (!tool_config_given(c, TOOL_OPT_RESAMPLE_EVERY))
        c->resample_every = s->resample_every;
    if (!tool_config_given(c, TOOL_OPT_RESAMPLE_WINDOW))
        c->resample_window = s->resample_window;
    hyper(c, TOOL_OPT_LR, SAE_OPT_LR, &c->lr, o);
    hyper(c, TOOL_OPT_LAMBDA, SAE_OPT_L1_COEFF, &c->lambda, o);
    hyper(c, TOOL_OPT_CLIP, SAE_OPT_GRAD_CLIP, &c->clip, o);
    hyper(c, TOOL_OPT_BANDWIDTH, SAE_OPT_JUMPRELU_BANDWIDTH, &c->bandwidth, o);
    hyper(c, TOOL_OPT_AUXK_COEFF, SAE_OPT_AUXK_COEFF, &c->auxk_coeff, o);
    hyper_u64(c, TOOL_OPT_AUXK_K, SAE_OPT_AUXK_K, &c->auxk_k, o);
    hyper(c, TOOL_OPT_THRESHOLD_BETA, SAE_OPT_THRESHOLD_BETA, &c->threshold_beta, o);
    hyper(c, TOOL_OPT_LR_DECAY, SAE_OPT_LR_DECAY_FRACTION, &c->lr_decay, o);
    hyper(c, TOOL_OPT_L1_WARMUP, SAE_OPT_L1_WARMUP_FRACTION, &c->l1_warmup, o);
    hyper_u64(c, TOOL_OPT_LR_WARMUP, SAE_OPT_LR_WARMUP_STEPS, &c->lr_warmup, o);
    uint64_t schedule = (uint64_t)c->lr_schedule;
    hyper_u64(c, TOOL_OPT_LR_SCHEDULE, SAE_OPT_LR_SCHEDULE, &schedule, o);
    c->lr_schedule = (int)schedule;
    /* how the steps compute: a performance choice, so a resumed run may
     * change it (bf16 rounds the encoder product's inputs only; the master
     * weights and Adam's moments are float32 either way) */
    uint64_t precision = (uint64_t)c->precision, gemm = (uint64_t)c->gemm;
    hyper_u64(c, TOOL_OPT_PRECISION, SAE_OPT_PRECISION, &precision, o);
    hyper_u64(c, TOOL_OPT_GEMM, SAE_OPT_GEMM, &gemm, o);
    c->precision = (int)precision;
    c->gemm = (int)gemm;
    /* the one window of the reports, AuxK and resampling */
    if (sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, (double)c->dead_window) != SAE_OK)
        tool_usage_error("--dead-window %llu: refused by libsae", (unsigned long long)c->dead_window);
}

/* The total number of steps (--steps, --tokens, or the run's own), over
 * which the schedules run. */
static void resume_total(tool_config *c, const char *dir, const tool_run_state *s, sae_optimizer *o)
{
    if (c->tokens) {
        if (c->tokens < s->tokens)
            tool_usage_error("--tokens %llu: the checkpoint in '%s' has already trained on %llu",
                             (unsigned long long)c->tokens, dir, (unsigned long long)s->tokens);
        uint64_t left = c->tokens - s->tokens;
        c->steps = s->step + left / c->batch + (left % c->batch != 0);
    } else if (!tool_config_given(c, TOOL_OPT_STEPS)) {
        c->steps = s->steps > s->step ? s->steps : s->step;
    } else if (c->steps < s->step) {
        tool_usage_error("--steps %llu: the checkpoint in '%s' is already at step %llu (--steps is "
                         "the total)", (unsigned long long)c->steps, dir, (unsigned long long)s->step);
    }
    tool_config_check_schedule(c);
    double lr;
    int rc = sae_optimizer_set(o, SAE_OPT_TOTAL_STEPS, (double)c->steps);
    if (rc == SAE_OK)
        rc = sae_optimizer_lr_at(o, 1, &lr);
    if (rc != SAE_OK)
        tool_usage_error("--resume '%s': the schedules do not fit in %llu steps: %s", dir,
                         (unsigned long long)c->steps, tool_status(rc));
}

void tool_config_resume(tool_config *c, const char *dir, tool_run_state *s, const sae_model *m,
                        sae_optimizer *o)
{
    resume_data(c, dir, s, m);
    resume_kind(c, dir, s, m);
    resume_arch(c, dir, s, m);
    resume_settings(c, s, o);
    resume_total(c, dir, s, o);
    tool_run_state_settings(s, c); /* what the next checkpoint records */
    if (c->input && c->input != s->input)
        tool_run_state_set_input(s, c->input);
    if (c->target_path && c->target_path != s->target)
        tool_run_state_set_target(s, c->target_path);
}

void tool_inputs_check_resume(const tool_inputs *in, const tool_config *c, const char *dir,
                              tool_run_state *s)
{
    if (in->train.rows != s->rows || in->train.cols != s->d_in)
        tool_usage_error("--resume '%s': %s has %zu x %zu floats, the checkpoint was trained on "
                         "%zu x %zu", dir, c->input ? c->input : "the synthetic data", in->train.rows,
                         in->train.cols, s->rows, s->d_in);
    if (in->target.x && s->d_out && in->target.cols != s->d_out)
        tool_usage_error("--resume '%s': the targets %s have %zu columns, the checkpoint's %zu", dir,
                         c->target_path ? c->target_path : "(synthetic)", in->target.cols, s->d_out);
    if (!in->synthetic)
        snprintf(s->data, sizeof s->data, "%s",
                 strncmp(in->train.format, "npy", 3) == 0 ? "npy" : "raw");
}

void tool_config_load_run(tool_config *c, const char *dir, int n_shards, int shard, sae_model **m,
                          sae_optimizer **o, tool_run_state *s)
{
    if (dir) {
        tool_checkpoint_load_shard(dir, n_shards, shard, m, o, s);
        tool_config_resume(c, dir, s, *m, *o);
    } else {
        tool_config_check(c);
        tool_config_check_schedule(c);
    }
}
