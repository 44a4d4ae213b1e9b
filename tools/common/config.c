#include "config.h"

#include "args.h"
#include "inputs.h"

#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_K 8            /* TopK, BatchTopK: about the L0 of ReLU at the default lambda */

/* indexed by SAE_ARCH_* */
static const char *const arch_names[] = {"relu", "topk", "batchtopk", "jumprelu", "gated",
                                         "matryoshka"};
#define N_ARCH_NAMES (int)(sizeof arch_names / sizeof *arch_names)
static const char *const schedule_names[] = {"constant", "linear", "cosine"};
static const char *const precision_names[] = {"fp32", "bf16"}; /* SAE_PRECISION_* */
static const char *const gemm_names[] = {"auto", "cblas", "onednn"}; /* SAE_GEMM_* */

/* The index of arg in names[0..n), or exit 2 with "<opt>: expected <list>". */
static int parse_name(const char *opt, const char *arg, const char *const *names, int n,
                      const char *expected)
{
    for (int i = 0; i < n; i++)
        if (strcmp(arg, names[i]) == 0)
            return i;
    tool_usage_error("%s: expected %s, got '%s'", opt, expected, arg);
}

const char *tool_arch_name(int arch)
{
    return arch >= 0 && arch < N_ARCH_NAMES ? arch_names[arch] : "unknown";
}

int tool_arch_parse(const char *name)
{
    for (int a = 0; a < N_ARCH_NAMES; a++)
        if (strcmp(name, arch_names[a]) == 0)
            return a;
    return -1;
}

const char *tool_lr_schedule_name(int schedule)
{
    return schedule >= 0 && schedule < 3 ? schedule_names[schedule] : "unknown";
}

bool tool_arch_is_topk(int arch)
{
    return arch == SAE_ARCH_TOPK || arch == SAE_ARCH_BATCHTOPK || arch == SAE_ARCH_MATRYOSHKA;
}

bool tool_config_transcoder(const tool_config *c)
{
    return c->target_path != NULL || c->synth_target;
}

void tool_config_defaults(tool_config *c)
{
    memset(c, 0, sizeof *c);
    c->synth_features = 256;
    c->synth_active = 4.0;
    c->synth_tokens = 65536;
    c->d_sae = 512;
    c->decoder_init_norm = 0.1;
    c->lambda = 0.3;
    c->lr = 1e-3;
    c->clip = 1.0;
    c->batch = 256;
    c->steps = 3000;
    c->seed = 1;
    c->log_every = 100;
    c->dead_window = 100000;
    c->arch = SAE_ARCH_RELU;
    c->archs[0] = SAE_ARCH_RELU;
    c->n_archs = 1;
    c->k = DEFAULT_K;
    /* JumpReLU: larger than the paper's 0.001 (for long runs on normalised
     * activations), so that the thresholds find the data's scale in 3000 steps */
    c->threshold0 = 0.05;
    c->bandwidth = 0.02;
    c->auxk_coeff = 1.0 / 32.0;
    c->threshold_beta = 0.999;
    c->lr_schedule = SAE_LR_CONSTANT;
    c->sample = 8192;
    c->b_dec_init = -1;
    c->precision = SAE_PRECISION_FP32;
    c->gemm = SAE_GEMM_AUTO;
}

static size_t arg_size(const char *opt, const char *s, uint64_t min)
{
    uint64_t v = tool_arg_count(opt, s, min);
    if (v > (uint64_t)SIZE_MAX / 16 || v > 0x7fffffff)
        tool_usage_error("%s: %s is too large", opt, s);
    return (size_t)v;
}

_Static_assert(TOOL_OPT_GEMM - TOOL_OPT_D_IN < 64, "tool_config.given has a bit per option");

/* --widths W1,W2,...: Matryoshka's level widths, each >= 1 (increasing and
 * within --d-sae: tool_config_check, once d_sae is known) */
static void parse_widths(tool_config *c, const char *arg)
{
    const size_t cap = sizeof c->widths / sizeof *c->widths;
    size_t n = 0;
    for (const char *p = arg;;) {
        size_t len = strcspn(p, ",");
        char word[32];
        if (len == 0 || len >= sizeof word)
            tool_usage_error("--widths: expected W1,W2,... (increasing feature counts), got '%s'",
                             arg);
        memcpy(word, p, len);
        word[len] = '\0';
        if (n == cap)
            tool_usage_error("--widths: at most %zu levels, got '%s'", cap, arg);
        c->widths[n++] = arg_size("--widths", word, 1);
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    c->n_widths = n;
}

static double arg_fraction(const char *opt, const char *s)
{
    double v = tool_arg_double(opt, s, 0.0, true);
    if (v > 1.0)
        tool_usage_error("%s: must be in [0, 1], got '%s'", opt, s);
    return v;
}

/* --arch NAME[,NAME...] (several only for sae-sweep, which checks) */
static void parse_archs(tool_config *c, const char *arg)
{
    size_t n = 0;
    const char *p = arg;
    for (;;) {
        size_t len = strcspn(p, ",");
        char name[16];
        int a = -1;
        if (len < sizeof name) {
            memcpy(name, p, len);
            name[len] = '\0';
            a = tool_arch_parse(name);
        }
        if (a < 0)
            tool_usage_error("--arch: expected relu, topk, batchtopk, jumprelu, gated or "
                             "matryoshka, got '%s'", arg);
        for (size_t i = 0; i < n; i++)
            if (c->archs[i] == a)
                tool_usage_error("--arch: '%s' lists %s twice", arg, tool_arch_name(a));
        if (n == 4)
            tool_usage_error("--arch: at most 4 architectures, got '%s'", arg);
        c->archs[n++] = a;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    c->n_archs = n;
    c->arch = c->archs[0];
}

bool tool_config_option(tool_config *c, int code, const char *arg)
{
    switch (code) {
    case TOOL_OPT_D_IN: c->d_in = arg_size("--d-in", arg, 1); break;
    case TOOL_OPT_EVAL: c->eval_path = arg; break;
    case TOOL_OPT_SYNTH_FEATURES: c->synth_features = arg_size("--synth-features", arg, 1); break;
    case TOOL_OPT_SYNTH_ACTIVE: c->synth_active = tool_arg_double("--synth-active", arg, 0.0, false); break;
    case TOOL_OPT_SYNTH_TOKENS: c->synth_tokens = arg_size("--synth-tokens", arg, 2); break;
    case TOOL_OPT_D_SAE: c->d_sae = arg_size("--d-sae", arg, 1); break;
    case TOOL_OPT_DECODER_INIT_NORM:
        c->decoder_init_norm = tool_arg_double("--decoder-init-norm", arg, 0.0, false);
        if (c->decoder_init_norm > 1e30)
            tool_usage_error("--decoder-init-norm: must be in (0, 1e30], got '%s'", arg);
        break;
    case TOOL_OPT_LAMBDA: c->lambda = tool_arg_double("--lambda", arg, 0.0, true); break;
    case TOOL_OPT_LR: c->lr = tool_arg_double("--lr", arg, 0.0, false); break;
    case TOOL_OPT_CLIP: c->clip = tool_arg_double("--clip", arg, 0.0, true); break;
    case TOOL_OPT_BATCH: c->batch = arg_size("--batch", arg, 1); break;
    case TOOL_OPT_STEPS: c->steps = tool_arg_count("--steps", arg, 1); c->tokens = 0; break;
    case TOOL_OPT_TOKENS: c->tokens = tool_arg_count("--tokens", arg, 1); break;
    case TOOL_OPT_SEED: c->seed = tool_arg_count("--seed", arg, 0); break;
    case TOOL_OPT_LOG_EVERY: c->log_every = tool_arg_count("--log-every", arg, 1); break;
    case TOOL_OPT_DEAD_WINDOW: c->dead_window = tool_arg_count("--dead-window", arg, 1); break;
    case TOOL_OPT_ARCH: parse_archs(c, arg); break;
    case TOOL_OPT_K: c->k = arg_size("--k", arg, 1); break;
    case TOOL_OPT_WIDTHS: parse_widths(c, arg); break;
    case TOOL_OPT_THRESHOLD:
        c->threshold0 = tool_arg_double("--threshold", arg, 0.0, false);
        if (c->threshold0 < 1e-30 || c->threshold0 > 1e30)
            tool_usage_error("--threshold: must be in [1e-30, 1e30], got '%s'", arg);
        break;
    case TOOL_OPT_BANDWIDTH: c->bandwidth = tool_arg_double("--bandwidth", arg, 0.0, false); break;
    case TOOL_OPT_AUXK_COEFF: c->auxk_coeff = tool_arg_double("--auxk-coeff", arg, 0.0, true); break;
    case TOOL_OPT_AUXK_K: c->auxk_k = arg_size("--auxk-k", arg, 1); break;
    case TOOL_OPT_THRESHOLD_BETA:
        c->threshold_beta = tool_arg_double("--threshold-beta", arg, 0.0, true);
        if (c->threshold_beta >= 1.0)
            tool_usage_error("--threshold-beta: must be in [0, 1), got '%s'", arg);
        break;
    case TOOL_OPT_LR_SCHEDULE:
        for (c->lr_schedule = 0; c->lr_schedule < 3; c->lr_schedule++)
            if (strcmp(arg, schedule_names[c->lr_schedule]) == 0)
                break;
        if (c->lr_schedule == 3)
            tool_usage_error("--lr-schedule: expected constant, linear or cosine, got '%s'", arg);
        break;
    case TOOL_OPT_LR_WARMUP: c->lr_warmup = tool_arg_count("--lr-warmup", arg, 0); break;
    case TOOL_OPT_LR_DECAY: c->lr_decay = arg_fraction("--lr-decay", arg); break;
    case TOOL_OPT_L1_WARMUP: c->l1_warmup = arg_fraction("--l1-warmup", arg); break;
    case TOOL_OPT_SAMPLE: c->sample = arg_size("--sample", arg, 1); break;
    case TOOL_OPT_NORMALIZE: c->normalize = true; break;
    case TOOL_OPT_B_DEC_INIT:
        if (strcmp(arg, "mean") == 0)
            c->b_dec_init = SAE_B_DEC_MEAN;
        else if (strcmp(arg, "median") == 0)
            c->b_dec_init = SAE_B_DEC_GEOMETRIC_MEDIAN;
        else
            tool_usage_error("--b-dec-init: expected mean or median, got '%s'", arg);
        break;
    case TOOL_OPT_RESAMPLE_EVERY: c->resample_every = tool_arg_count("--resample-every", arg, 1); break;
    case TOOL_OPT_RESAMPLE_WINDOW: c->resample_window = tool_arg_count("--resample-window", arg, 1); break;
    case TOOL_OPT_TARGET: c->target_path = arg; break;
    case TOOL_OPT_EVAL_TARGET: c->eval_target_path = arg; break;
    case TOOL_OPT_SYNTH_TARGET: c->synth_target = true; break;
    case TOOL_OPT_SKIP: c->skip = true; break;
    case TOOL_OPT_D_OUT: c->d_out = arg_size("--d-out", arg, 1); break;
    case TOOL_OPT_PRECISION:
        c->precision = parse_name("--precision", arg, precision_names, 2, "fp32 or bf16");
        break;
    case TOOL_OPT_GEMM:
        c->gemm = parse_name("--gemm", arg, gemm_names, 3, "auto, cblas or onednn");
        break;
    default: return false;
    }
    c->given |= UINT64_C(1) << (code - TOOL_OPT_D_IN);
    return true;
}

bool tool_config_given(const tool_config *c, int code)
{
    return c->given >> (code - TOOL_OPT_D_IN) & 1;
}

/* Whether any architecture chosen satisfies pred. */
static bool any_arch(const tool_config *c, bool (*pred)(int))
{
    for (size_t i = 0; i < c->n_archs; i++)
        if (pred(c->archs[i]))
            return true;
    return false;
}

static bool is_lambda_arch(int a) { return !tool_arch_is_topk(a); }
static bool is_jumprelu(int a) { return a == SAE_ARCH_JUMPRELU; }
static bool is_batchtopk(int a) { return a == SAE_ARCH_BATCHTOPK || a == SAE_ARCH_MATRYOSHKA; }
static bool is_gated(int a) { return a == SAE_ARCH_GATED; }
static bool is_matryoshka(int a) { return a == SAE_ARCH_MATRYOSHKA; }

/* An option given that no chosen architecture uses is a mistake, not a no-op. */
static void only_for(const tool_config *c, int code, const char *opt, bool (*pred)(int),
                     const char *which)
{
    if (tool_config_given(c, code) && !any_arch(c, pred))
        tool_usage_error("%s: applies to --arch %s, not to %s", opt, which, tool_arch_name(c->arch));
}

void tool_config_check_schedule(const tool_config *c)
{
    const uint64_t T = c->steps, W = c->lr_warmup;
    /* D as the library computes it: fraction * T rounded, halves away from 0 */
    const uint64_t D = (uint64_t)llround(c->lr_decay * (double)T);
    if (tool_config_given(c, TOOL_OPT_LR_DECAY) && c->lr_schedule != SAE_LR_LINEAR)
        tool_usage_error("--lr-decay: applies to --lr-schedule linear, not %s",
                         tool_lr_schedule_name(c->lr_schedule));
    switch (c->lr_schedule) {
    case SAE_LR_CONSTANT:
        if (W > T)
            tool_usage_error("--lr-warmup %llu: more than the %llu steps", (unsigned long long)W,
                             (unsigned long long)T);
        break;
    case SAE_LR_LINEAR:
        if (W > T || D > T - W)
            tool_usage_error("--lr-warmup %llu and --lr-decay %g (%llu steps): more than the %llu "
                             "steps", (unsigned long long)W, c->lr_decay, (unsigned long long)D,
                             (unsigned long long)T);
        break;
    case SAE_LR_COSINE:
        if (W >= T)
            tool_usage_error("--lr-warmup %llu: leaves none of the %llu steps to the cosine",
                             (unsigned long long)W, (unsigned long long)T);
        break;
    }
}

void tool_config_finish(tool_config *c, int argc, char **argv, int optind_)
{
    if (optind_ < argc)
        c->input = argv[optind_++];
    if (optind_ < argc)
        tool_usage_error("unexpected argument '%s' (one input FILE at most)", argv[optind_]);
    if (c->synth_active > (double)c->synth_features)
        tool_usage_error("--synth-active %g exceeds --synth-features %zu", c->synth_active,
                         c->synth_features);
    if (c->tokens)
        c->steps = c->tokens / c->batch + (c->tokens % c->batch != 0);
}

/* The transcoder options together, and with the data and the recipe. */
static void check_target(const tool_config *c)
{
    const bool transcoder = tool_config_transcoder(c);
    if (c->target_path && c->synth_target)
        tool_usage_error("--synth-target: the targets come from --target '%s'", c->target_path);
    if (c->target_path && !c->input)
        tool_usage_error("--target '%s': give the input FILE too (--synth-target: synthetic "
                         "pairs)", c->target_path);
    if (c->synth_target && c->input)
        tool_usage_error("--synth-target: synthetic pairs, not FILE '%s' (its targets: --target)",
                         c->input);
    if (!transcoder) {
        const struct { int code; const char *opt; } needs[] = {
            {TOOL_OPT_SKIP, "--skip"}, {TOOL_OPT_D_OUT, "--d-out"},
            {TOOL_OPT_EVAL_TARGET, "--eval-target"},
        };
        for (size_t i = 0; i < sizeof needs / sizeof *needs; i++)
            if (tool_config_given(c, needs[i].code))
                tool_usage_error("%s: applies to transcoders (--target FILE or --synth-target)",
                                 needs[i].opt);
        return;
    }
    if (c->eval_path && !c->eval_target_path)
        tool_usage_error("--eval '%s': give its targets too (--eval-target FILE)", c->eval_path);
    if (c->eval_target_path && !c->eval_path)
        tool_usage_error("--eval-target '%s': give the rows it is the target of (--eval FILE)",
                         c->eval_target_path);
    if (any_arch(c, is_gated) || any_arch(c, is_matryoshka))
        tool_usage_error("--arch %s: transcoders are relu, topk, batchtopk or jumprelu",
                         any_arch(c, is_gated) ? "gated" : "matryoshka");
    if (c->normalize)
        tool_usage_error("--normalize: applies to autoencoders (a transcoder's input and "
                         "target would need two scales)");
    if (c->b_dec_init >= 0)
        tool_usage_error("--b-dec-init: applies to autoencoders (a transcoder's b_dec is in "
                         "the target's space)");
}

/* Matryoshka's widths: given, increasing, within d_sae; d_sae appended */
static void check_widths(tool_config *c)
{
    if (!any_arch(c, is_matryoshka))
        return;
    if (c->n_widths == 0)
        tool_usage_error("--arch matryoshka: give the level widths (--widths W1,W2,..., e.g. "
                         "--widths %zu,%zu)", c->d_sae / 4 ? c->d_sae / 4 : 1, c->d_sae);
    for (size_t i = 0; i < c->n_widths; i++) {
        if (c->widths[i] > c->d_sae)
            tool_usage_error("--widths: %zu is more than --d-sae %zu features", c->widths[i],
                             c->d_sae);
        if (i > 0 && c->widths[i] <= c->widths[i - 1])
            tool_usage_error("--widths: the widths must increase (%zu after %zu)", c->widths[i],
                             c->widths[i - 1]);
    }
    if (c->widths[c->n_widths - 1] != c->d_sae) {
        if (c->n_widths == sizeof c->widths / sizeof *c->widths)
            tool_usage_error("--widths: at most %zu levels with --d-sae %zu", c->n_widths,
                             c->d_sae);
        c->widths[c->n_widths++] = c->d_sae;
    }
}

/* --precision bf16 where libsae steps in bf16, --gemm onednn where it has
 * oneDNN: asking for either elsewhere is a mistake, not a silent float32 or
 * CBLAS run. Every architecture of a sweep must take bf16 (the runs compare
 * at one precision). */
static void check_compute(const tool_config *c)
{
    if (c->precision == SAE_PRECISION_BF16) {
        const char *not_covered = tool_config_transcoder(c)       ? "transcoders"
                                  : any_arch(c, is_matryoshka) ? "matryoshka"
                                                               : NULL;
        if (not_covered)
            tool_usage_error("--precision bf16: libsae %s steps the relu, topk, batchtopk, "
                             "jumprelu and gated autoencoders in bf16, not %s (they train in "
                             "fp32)", sae_version_string(), not_covered);
    }
    if (tool_config_given(c, TOOL_OPT_GEMM) && c->gemm == SAE_GEMM_ONEDNN &&
        sae_gemm_backend(SAE_GEMM_ONEDNN) != SAE_GEMM_ONEDNN)
        tool_usage_error("--gemm onednn: libsae %s was built without oneDNN (its products run "
                         "on CBLAS: --gemm auto or cblas)", sae_version_string());
}

void tool_config_check(tool_config *c)
{
    only_for(c, TOOL_OPT_LAMBDA, "--lambda", is_lambda_arch,
             "relu, jumprelu or gated (topk's sparsity is --k)");
    only_for(c, TOOL_OPT_L1_WARMUP, "--l1-warmup", is_lambda_arch, "relu, jumprelu or gated");
    only_for(c, TOOL_OPT_K, "--k", tool_arch_is_topk, "topk, batchtopk or matryoshka");
    only_for(c, TOOL_OPT_AUXK_COEFF, "--auxk-coeff", tool_arch_is_topk,
             "topk, batchtopk or matryoshka");
    only_for(c, TOOL_OPT_AUXK_K, "--auxk-k", tool_arch_is_topk, "topk, batchtopk or matryoshka");
    only_for(c, TOOL_OPT_THRESHOLD_BETA, "--threshold-beta", is_batchtopk,
             "batchtopk or matryoshka");
    only_for(c, TOOL_OPT_WIDTHS, "--widths", is_matryoshka, "matryoshka");
    only_for(c, TOOL_OPT_THRESHOLD, "--threshold", is_jumprelu, "jumprelu");
    only_for(c, TOOL_OPT_BANDWIDTH, "--bandwidth", is_jumprelu, "jumprelu");
    if (tool_config_given(c, TOOL_OPT_RESAMPLE_WINDOW) && !c->resample_every)
        tool_usage_error("--resample-window: give --resample-every N too");
    check_target(c);
    if (c->resample_every && (tool_config_transcoder(c) || any_arch(c, is_gated)))
        tool_usage_error("--resample-every: libsae %s resamples the features of SAEs of "
                         "architecture relu, topk, batchtopk or jumprelu, not of %s",
                         sae_version_string(), tool_config_transcoder(c) ? "transcoders" : "gated");
    check_compute(c);
    if (tool_config_given(c, TOOL_OPT_K) && c->k > c->d_sae)
        tool_usage_error("--k %zu: more than --d-sae %zu features", c->k, c->d_sae);
    if (!tool_config_given(c, TOOL_OPT_K) && c->k > c->d_sae)
        c->k = c->d_sae;
    check_widths(c);
}

void tool_config_help(FILE *f, const tool_config *c)
{
    fprintf(f,
            "Data (FILE: a .npy of float32, 2-D (tokens, d_in), C order, as np.save writes;\n"
            "      anything else is read as raw little-endian float32 and needs --d-in;\n"
            "      the file is memory-mapped. Without FILE: built-in synthetic data):\n"
            "  --d-in N            columns of a raw FILE; dimension of the synthetic data\n"
            "                      (default %d)\n"
            "  --eval FILE         evaluate on FILE (same formats); default: held-out\n"
            "                      synthetic tokens, or the first %d training rows\n"
            "  --synth-features N  synthetic: number of true features (default %zu)\n"
            "  --synth-active X    synthetic: mean active features per token (default %g)\n"
            "  --synth-tokens N    synthetic: training tokens generated (default %llu)\n"
            "Model and training:\n"
            "  --d-sae N           SAE features (default %zu)\n"
            "  --decoder-init-norm X  the decoder rows' L2 norm at initialisation, > 0\n"
            "                      (SAELens's decoder_init_norm; default %g)\n"
            "  --lambda X          sparsity coefficient, >= 0: of L1 (relu) or of L0\n"
            "                      (jumprelu); topk has none (default %g)\n"
            "  --lr X              Adam learning rate, > 0 (default %g)\n"
            "  --clip X            clip the global gradient norm at X; 0 = off (default %g)\n"
            "  --batch N           tokens per step (default %zu)\n"
            "  --steps N           training steps (default %llu)\n"
            "  --tokens N          train on N tokens instead: steps = ceil(N / batch)\n"
            "  --seed N            seeds the model, the shuffle and the synthetic data\n"
            "                      (default %llu)\n"
            "  --log-every N       a CSV row every N steps (default %llu)\n"
            "  --dead-window N     a feature is dead when it fired on none of the last N\n"
            "                      training tokens: for reports, AuxK and resampling\n"
            "                      (default %llu)\n",
            TOOL_SYNTH_D_IN, TOOL_TRAIN_EVAL_ROWS, c->synth_features, c->synth_active,
            (unsigned long long)c->synth_tokens, c->d_sae, c->decoder_init_norm, c->lambda, c->lr,
            c->clip, c->batch, (unsigned long long)c->steps, (unsigned long long)c->seed,
            (unsigned long long)c->log_every, (unsigned long long)c->dead_window);
    fprintf(f,
            "Architecture:\n"
            "  --arch NAME         relu: f = ReLU(pre), L1 penalty; topk: the k largest\n"
            "                      per token; batchtopk: the n*k largest in a batch of n\n"
            "                      (a threshold at inference); jumprelu: learned\n"
            "                      per-feature thresholds, L0 penalty; gated: a gate and\n"
            "                      a magnitude path, L1 penalty on the gate and its\n"
            "                      auxiliary reconstruction (default %s)\n"
            "                      matryoshka: batchtopk whose first W1 < W2 < ... features\n"
            "                      each reconstruct on their own (the sum of the levels'\n"
            "                      losses; Bussmann et al. 2025)\n"
            "  --k N               topk, batchtopk, matryoshka: active features per token\n"
            "                      (default %zu)\n"
            "  --widths W1,W2,...  matryoshka: the level widths, increasing (--d-sae is\n"
            "                      the last, appended if missing)\n"
            "  --threshold X       jumprelu: initial threshold, > 0 (default %g; the\n"
            "                      paper's 0.001 suits long runs on --normalize'd data)\n"
            "  --bandwidth X       jumprelu: bandwidth of the straight-through estimators\n"
            "                      (default %g; the paper's 0.001, likewise)\n"
            "  --auxk-coeff X      topk, batchtopk, matryoshka: weight of the AuxK loss on\n"
            "                      dead features; 0 = off (default %g)\n"
            "  --auxk-k N          topk, batchtopk, matryoshka: dead features AuxK uses\n"
            "                      (default d_in/2)\n"
            "  --threshold-beta X  batchtopk, matryoshka: moving average of the threshold\n"
            "                      (default %g)\n"
            "Schedules (over the --steps of the run):\n"
            "  --lr-schedule S     constant; linear: decays to 0 over the last --lr-decay\n"
            "                      of the steps; cosine: to 0 at the last step\n"
            "                      (default %s)\n"
            "  --lr-warmup N       the lr rises linearly over the first N steps (default 0)\n"
            "  --lr-decay F        linear: the fraction of the steps that decays (recipe 0.2)\n"
            "  --l1-warmup F       lambda rises linearly from 0 over the first fraction F of\n"
            "                      the steps (recipe 0.05; default 0)\n"
            "Recipe (from a sample of the training rows, drawn by --seed):\n"
            "  --sample N          tokens in the sample (default %zu)\n"
            "  --normalize         train on s x, s such that the mean of ||s x||^2 is d_in;\n"
            "                      the model saved and evaluated takes raw x (s is folded in)\n"
            "  --b-dec-init M      set b_dec before training: mean or median (geometric)\n"
            "  --resample-every N  every N steps, resample the dead features from the sample\n"
            "  --resample-window N  dead: silent for N training tokens (default:\n"
            "                      --dead-window)\n"
            "Compute (kept by --resume unless given):\n"
            "  --precision P       fp32, or bf16: the encoder product (the step's largest)\n"
            "                      takes bfloat16 inputs and sums in float32; weights, Adam\n"
            "                      and every other pass stay float32 (relu, topk, batchtopk,\n"
            "                      jumprelu, gated autoencoders; default %s)\n"
            "  --gemm B            the products' backend: auto (oneDNN when libsae has it),\n"
            "                      cblas or onednn (default %s; this libsae: %s)\n"
            "Counts accept a k, M or G suffix (--tokens 2M).\n",
            tool_arch_name(c->arch), c->k, c->threshold0, c->bandwidth, c->auxk_coeff,
            c->threshold_beta, tool_lr_schedule_name(c->lr_schedule), c->sample,
            precision_names[c->precision], gemm_names[c->gemm],
            sae_gemm_backend(SAE_GEMM_AUTO) == SAE_GEMM_ONEDNN ? "auto is oneDNN"
                                                               : "no oneDNN, auto is CBLAS");
}

void tool_target_help(FILE *f)
{
    fprintf(f,
            "Transcoders (the model reads x and predicts another vector y of the same token,\n"
            "e.g. an MLP's output from its input: d_out may differ from d_in):\n"
            "  --target FILE       the targets y of FILE's rows, row for row (same row count;\n"
            "                      .npy, or raw float32 with --d-out); trains a transcoder\n"
            "  --eval-target FILE  the targets of the --eval FILE's rows (needed with --eval)\n"
            "  --skip              a skip transcoder: y_hat also gets a learned linear map\n"
            "                      W_skip x (d_out x d_in, starting at 0)\n"
            "  --d-out N           columns of a raw --target; with --synth-target, the\n"
            "                      dimension of the synthetic y (default d_in)\n"
            "  --synth-target      synthetic pairs instead of FILE: y is each token's sparse\n"
            "                      code written in d_out other true directions; with --skip,\n"
            "                      x also gets dense noise z and y gets A x (A: d_out x d_in,\n"
            "                      random); the report gives the decoder's MMCS against the\n"
            "                      output directions and ||W_skip - A|| / ||A||\n"
            "                      (the relu/topk/batchtopk/jumprelu options apply as to\n"
            "                      autoencoders; --normalize, --b-dec-init and --resample-every\n"
            "                      apply to autoencoders only)\n");
}

int tool_config_apply(const tool_config *c, sae_optimizer *o)
{
    const bool topk = tool_arch_is_topk(c->arch);
    const struct {
        int option;
        double value;
    } set[] = {
        {SAE_OPT_LR, c->lr},
        {SAE_OPT_L1_COEFF, topk ? 0.0 : c->lambda},
        {SAE_OPT_GRAD_CLIP, c->clip},
        {SAE_OPT_DEAD_WINDOW, (double)c->dead_window},
        {SAE_OPT_AUXK_COEFF, c->auxk_coeff},
        {SAE_OPT_AUXK_K, (double)c->auxk_k},
        {SAE_OPT_JUMPRELU_BANDWIDTH, c->bandwidth},
        {SAE_OPT_THRESHOLD_BETA, c->threshold_beta},
        {SAE_OPT_TOTAL_STEPS, (double)c->steps},
        {SAE_OPT_LR_SCHEDULE, (double)c->lr_schedule},
        {SAE_OPT_LR_WARMUP_STEPS, (double)c->lr_warmup},
        {SAE_OPT_LR_DECAY_FRACTION, c->lr_decay},
        {SAE_OPT_L1_WARMUP_FRACTION, topk ? 0.0 : c->l1_warmup},
        {SAE_OPT_PRECISION, (double)c->precision},
        {SAE_OPT_GEMM, (double)c->gemm},
    };
    int rc = SAE_OK;
    for (size_t i = 0; i < sizeof set / sizeof *set && rc == SAE_OK; i++)
        rc = sae_optimizer_set(o, set[i].option, set[i].value);
    double lr;
    if (rc == SAE_OK) /* the schedule options together (tool_config_check_schedule checked) */
        rc = sae_optimizer_lr_at(o, 1, &lr);
    return rc;
}

int tool_make_sae(const tool_config *c, size_t d_in, sae_model **m, sae_optimizer **o)
{
    return tool_make_sae_shard(c, d_in, 0, 0, m, o);
}

int tool_make_sae_shard(const tool_config *c, size_t d_in, size_t begin, size_t end,
                        sae_model **m, sae_optimizer **o)
{
    *o = NULL;
    double param = 0.0;
    if (tool_arch_is_topk(c->arch))
        param = (double)c->k;
    else if (c->arch == SAE_ARCH_JUMPRELU)
        param = c->threshold0;
    int rc;
    const size_t d_out = c->d_out ? c->d_out : d_in;
    const int kind = c->skip ? SAE_KIND_SKIP_TRANSCODER : SAE_KIND_TRANSCODER;
    if (tool_config_transcoder(c))
        rc = end > 0 ? sae_model_create_transcoder_shard(m, d_in, d_out, c->d_sae, begin, end,
                                                         c->seed, kind, c->arch, param)
                     : sae_model_create_transcoder(m, d_in, d_out, c->d_sae, c->seed, kind,
                                                   c->arch, param);
    else if (c->arch == SAE_ARCH_MATRYOSHKA)
        rc = end > 0 ? sae_model_create_matryoshka_shard(m, d_in, c->d_sae, begin, end, c->seed,
                                                         c->k, c->widths, c->n_widths)
                     : sae_model_create_matryoshka(m, d_in, c->d_sae, c->seed, c->k, c->widths,
                                                   c->n_widths);
    else
        rc = end > 0 ? sae_model_create_shard(m, d_in, c->d_sae, begin, end, c->seed, c->arch, param)
                     : sae_model_create_arch(m, d_in, c->d_sae, c->seed, c->arch, param);
    /* the initialisation again with the option's norm (the same draws: create's
     * is reinit's at 0.1) */
    if (rc == SAE_OK && tool_config_given(c, TOOL_OPT_DECODER_INIT_NORM))
        rc = sae_model_reinit(*m, c->seed, c->decoder_init_norm);
    if (rc == SAE_OK)
        rc = sae_optimizer_create(o, *m);
    if (rc == SAE_OK)
        rc = tool_config_apply(c, *o);
    if (rc != SAE_OK) {
        sae_optimizer_free(*o);
        sae_model_free(*m);
        *o = NULL;
        *m = NULL;
    }
    return rc;
}

void tool_describe_arch(const tool_config *c, char *buf, size_t len)
{
    const char *kind = !tool_config_transcoder(c) ? "" : c->skip ? " skip transcoder"
                                                                 : " transcoder";
    if (c->arch == SAE_ARCH_MATRYOSHKA) {
        int at = snprintf(buf, len, "matryoshka k %zu, widths ", c->k);
        for (size_t i = 0; i < c->n_widths && at >= 0 && (size_t)at < len; i++)
            at += snprintf(buf + at, len - (size_t)at, "%s%zu", i ? "," : "", c->widths[i]);
    } else if (tool_arch_is_topk(c->arch))
        snprintf(buf, len, "%s%s k %zu", tool_arch_name(c->arch), kind, c->k);
    else
        snprintf(buf, len, "%s%s, lambda %g", tool_arch_name(c->arch), kind, c->lambda);
}

void tool_describe_compute(const tool_config *c, char *buf, size_t len)
{
    const int backend = sae_gemm_backend(c->gemm);
    /* OpenBLAS names the kernel it runs (OPENBLAS_CORETYPE may force a slow
     * one); another CBLAS has no such call */
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    const char *core = corename ? corename() : NULL;
    snprintf(buf, len, "%s, GEMMs on %s (--gemm %s%s), BLAS core %s",
             precision_names[c->precision], backend == SAE_GEMM_ONEDNN ? "oneDNN" : "CBLAS",
             gemm_names[c->gemm],
             c->gemm == SAE_GEMM_ONEDNN && backend != SAE_GEMM_ONEDNN ? ": libsae without oneDNN"
                                                                       : "",
             core ? core : "not OpenBLAS");
}
