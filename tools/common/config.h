/*
 * The options sae-train and sae-sweep share (data, model, architecture,
 * schedules and the rest of the training recipe): their table for
 * getopt_long, defaults, parsing, the checks that need several of them,
 * their --help text, and the model and optimizer they describe.
 */
#ifndef TOOL_CLI_H
#define TOOL_CLI_H

#include <getopt.h>
#include <libsae/sae.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct tool_config {
    const char *input;        /* training data file; NULL: synthetic */
    const char *eval_path;    /* --eval FILE; NULL: held-out synthetic or training rows */
    size_t d_in;              /* raw files: columns; synthetic: dimension */
    size_t synth_features;    /* synthetic: true features */
    double synth_active;      /* synthetic: mean active features per token */
    uint64_t synth_tokens;    /* synthetic: training tokens generated */
    size_t d_sae;
    double decoder_init_norm; /* decoder rows' L2 norm at initialisation (sae_model_reinit;
                                 SAELens's decoder_init_norm, 0.1 = create's) */
    double lambda, lr, clip;
    size_t batch;
    uint64_t steps, tokens;   /* tokens != 0 overrides steps */
    uint64_t seed;
    uint64_t log_every;
    uint64_t dead_window;     /* tokens: reports, AuxK (SAE_OPT_DEAD_WINDOW), resampling */
    /* architecture (sae-sweep may list several: archs[0..n_archs)) */
    int arch;                 /* SAE_ARCH_*: archs[0] */
    int archs[4];
    size_t n_archs;
    size_t k;                 /* TopK, BatchTopK, Matryoshka */
    size_t widths[64];        /* Matryoshka: --widths, the level widths (d_sae appended
                                 when the list does not end with it) */
    size_t n_widths;
    double threshold0;        /* JumpReLU: initial threshold */
    double bandwidth;         /* JumpReLU: SAE_OPT_JUMPRELU_BANDWIDTH */
    double auxk_coeff;        /* TopK, BatchTopK, Matryoshka: SAE_OPT_AUXK_COEFF */
    uint64_t auxk_k;          /* SAE_OPT_AUXK_K (0: d_in / 2) */
    double threshold_beta;    /* BatchTopK: SAE_OPT_THRESHOLD_BETA */
    /* schedules (SAE_OPT_TOTAL_STEPS is set to steps) */
    int lr_schedule;          /* SAE_LR_* */
    uint64_t lr_warmup;       /* steps */
    double lr_decay;          /* fraction of steps, SAE_LR_LINEAR */
    double l1_warmup;         /* fraction of steps */
    /* the data-dependent parts of the recipe, computed from a sample */
    size_t sample;            /* tokens in the sample (capped at the data's rows) */
    bool normalize;           /* train on s x, s from sae_estimate_input_scale */
    int b_dec_init;           /* SAE_B_DEC_*, or -1: b_dec starts at 0 */
    uint64_t resample_every;  /* steps; 0: never */
    uint64_t resample_window; /* tokens; 0: dead_window */
    /* transcoders (sae-train's --target options, TOOL_TARGET_LONG_OPTIONS): the
     * model reads the input rows and predicts the target rows of the same tokens */
    const char *target_path;  /* --target FILE: the targets of FILE's rows; NULL: none */
    const char *eval_target_path; /* --eval-target FILE: the targets of --eval's rows */
    bool synth_target;        /* --synth-target: synthetic pairs (synth.h) */
    bool skip;                /* --skip: a skip transcoder (learns W_skip too) */
    size_t d_out;             /* raw --target: columns; synthetic: target dimension
                                 (0: d_in); after tool_inputs_load, the target's width */
    /* how the steps compute (SAE_OPT_PRECISION, SAE_OPT_GEMM; saved in the
     * optimizer's file, so a resumed run keeps them unless given) */
    int precision;            /* SAE_PRECISION_*: the encoder product's inputs */
    int gemm;                 /* SAE_GEMM_*: the products' backend */
    uint64_t given;           /* the shared options on the command line (tool_config_given) */
} tool_config;

/* Option codes of the shared options (program-specific ones use other values). */
enum {
    TOOL_OPT_D_IN = 1000, TOOL_OPT_EVAL, TOOL_OPT_SYNTH_FEATURES, TOOL_OPT_SYNTH_ACTIVE,
    TOOL_OPT_SYNTH_TOKENS, TOOL_OPT_D_SAE, TOOL_OPT_LAMBDA, TOOL_OPT_LR, TOOL_OPT_CLIP, TOOL_OPT_BATCH,
    TOOL_OPT_STEPS, TOOL_OPT_TOKENS, TOOL_OPT_SEED, TOOL_OPT_LOG_EVERY, TOOL_OPT_DEAD_WINDOW,
    TOOL_OPT_ARCH, TOOL_OPT_K, TOOL_OPT_THRESHOLD, TOOL_OPT_BANDWIDTH, TOOL_OPT_AUXK_COEFF, TOOL_OPT_AUXK_K,
    TOOL_OPT_THRESHOLD_BETA, TOOL_OPT_LR_SCHEDULE, TOOL_OPT_LR_WARMUP, TOOL_OPT_LR_DECAY,
    TOOL_OPT_L1_WARMUP, TOOL_OPT_SAMPLE, TOOL_OPT_NORMALIZE, TOOL_OPT_B_DEC_INIT, TOOL_OPT_RESAMPLE_EVERY,
    TOOL_OPT_RESAMPLE_WINDOW, TOOL_OPT_TARGET, TOOL_OPT_EVAL_TARGET, TOOL_OPT_SYNTH_TARGET,
    TOOL_OPT_SKIP, TOOL_OPT_D_OUT, TOOL_OPT_DECODER_INIT_NORM, TOOL_OPT_WIDTHS, TOOL_OPT_PRECISION,
    TOOL_OPT_GEMM
};

#define TOOL_CONFIG_LONG_OPTIONS                                                   \
    {"d-in", required_argument, NULL, TOOL_OPT_D_IN},                              \
    {"eval", required_argument, NULL, TOOL_OPT_EVAL},                              \
    {"synth-features", required_argument, NULL, TOOL_OPT_SYNTH_FEATURES},          \
    {"synth-active", required_argument, NULL, TOOL_OPT_SYNTH_ACTIVE},              \
    {"synth-tokens", required_argument, NULL, TOOL_OPT_SYNTH_TOKENS},              \
    {"d-sae", required_argument, NULL, TOOL_OPT_D_SAE},                            \
    {"decoder-init-norm", required_argument, NULL, TOOL_OPT_DECODER_INIT_NORM},    \
    {"lambda", required_argument, NULL, TOOL_OPT_LAMBDA},                          \
    {"lr", required_argument, NULL, TOOL_OPT_LR},                                  \
    {"clip", required_argument, NULL, TOOL_OPT_CLIP},                              \
    {"batch", required_argument, NULL, TOOL_OPT_BATCH},                            \
    {"steps", required_argument, NULL, TOOL_OPT_STEPS},                            \
    {"tokens", required_argument, NULL, TOOL_OPT_TOKENS},                          \
    {"seed", required_argument, NULL, TOOL_OPT_SEED},                              \
    {"log-every", required_argument, NULL, TOOL_OPT_LOG_EVERY},                    \
    {"dead-window", required_argument, NULL, TOOL_OPT_DEAD_WINDOW},                \
    {"arch", required_argument, NULL, TOOL_OPT_ARCH},                              \
    {"k", required_argument, NULL, TOOL_OPT_K},                                    \
    {"widths", required_argument, NULL, TOOL_OPT_WIDTHS},                          \
    {"threshold", required_argument, NULL, TOOL_OPT_THRESHOLD},                    \
    {"bandwidth", required_argument, NULL, TOOL_OPT_BANDWIDTH},                    \
    {"auxk-coeff", required_argument, NULL, TOOL_OPT_AUXK_COEFF},                  \
    {"auxk-k", required_argument, NULL, TOOL_OPT_AUXK_K},                          \
    {"threshold-beta", required_argument, NULL, TOOL_OPT_THRESHOLD_BETA},          \
    {"lr-schedule", required_argument, NULL, TOOL_OPT_LR_SCHEDULE},                \
    {"lr-warmup", required_argument, NULL, TOOL_OPT_LR_WARMUP},                    \
    {"lr-decay", required_argument, NULL, TOOL_OPT_LR_DECAY},                      \
    {"l1-warmup", required_argument, NULL, TOOL_OPT_L1_WARMUP},                    \
    {"sample", required_argument, NULL, TOOL_OPT_SAMPLE},                          \
    {"normalize", no_argument, NULL, TOOL_OPT_NORMALIZE},                          \
    {"b-dec-init", required_argument, NULL, TOOL_OPT_B_DEC_INIT},                  \
    {"resample-every", required_argument, NULL, TOOL_OPT_RESAMPLE_EVERY},          \
    {"resample-window", required_argument, NULL, TOOL_OPT_RESAMPLE_WINDOW},        \
    {"precision", required_argument, NULL, TOOL_OPT_PRECISION},                    \
    {"gemm", required_argument, NULL, TOOL_OPT_GEMM},                              \
    {"help", no_argument, NULL, 'h'}

/* The transcoder options (sae-train; tool_config_option parses them). */
#define TOOL_TARGET_LONG_OPTIONS                                                   \
    {"target", required_argument, NULL, TOOL_OPT_TARGET},                          \
    {"eval-target", required_argument, NULL, TOOL_OPT_EVAL_TARGET},                \
    {"synth-target", no_argument, NULL, TOOL_OPT_SYNTH_TARGET},                    \
    {"skip", no_argument, NULL, TOOL_OPT_SKIP},                                    \
    {"d-out", required_argument, NULL, TOOL_OPT_D_OUT}

/* Whether c trains a transcoder (--target or --synth-target). */
bool tool_config_transcoder(const tool_config *c);

/* The defaults: tuned so the built-in synthetic data trains well in seconds. */
void tool_config_defaults(tool_config *c);

/* Apply a shared option; false if `code` is not one. Exits 2 on a bad value. */
bool tool_config_option(tool_config *c, int code, const char *arg);

/* Whether the shared option `code` (TOOL_OPT_*) was given on the command line. */
bool tool_config_given(const tool_config *c, int code);

/* Take the optional positional FILE, resolve --tokens into steps. Exits 2 on
 * a bad command line. */
void tool_config_finish(tool_config *c, int argc, char **argv, int optind_);

/* Once the architecture is known (from the command line, or from the
 * checkpoint when resuming): check that every option given applies to an
 * architecture chosen and that k fits in d_sae (the default k is lowered to
 * d_sae). Exits 2 on a contradiction. */
void tool_config_check(tool_config *c);

/* Check that the schedule options fit in c->steps (exit 2 if not); once the
 * total is known (after tool_config_resume when resuming). */
void tool_config_check_schedule(const tool_config *c);

/* Architecture names: "relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka" (SAE_ARCH_*),
 * and the name of the learning-rate schedule SAE_LR_*. */
const char *tool_arch_name(int arch);
int tool_arch_parse(const char *name); /* -1 if unknown */
const char *tool_lr_schedule_name(int schedule);
bool tool_arch_is_topk(int arch);    /* TopK, BatchTopK or Matryoshka: sparsity is k, no lambda */

/* The --help lines of the shared options, with the defaults of c, and of the
 * transcoder options. */
void tool_config_help(FILE *f, const tool_config *c);
void tool_target_help(FILE *f);

/* A model of architecture c->arch (decoder rows of norm c->decoder_init_norm;
 * k c->k, or initial threshold
 * c->threshold0; a transcoder from d_in to c->d_out when
 * tool_config_transcoder, skip with c->skip) and an optimizer with every option of c: lr, lambda (0 for
 * TopK and BatchTopK, which ignore it), clip, the architecture's options,
 * the schedules with SAE_OPT_TOTAL_STEPS = c->steps, and SAE_OPT_DEAD_WINDOW =
 * c->dead_window. Returns a libsae status; on failure both are NULL. */
int tool_make_sae(const tool_config *c, size_t d_in, sae_model **m, sae_optimizer **o);

/* The same for features [begin, end) of the model (sae_model_create_shard:
 * exactly its slice); end 0: the whole model. */
int tool_make_sae_shard(const tool_config *c, size_t d_in, size_t begin, size_t end,
                        sae_model **m, sae_optimizer **o);

/* The architecture in a few words, for messages: "relu, lambda 0.3",
 * "topk k 8", "jumprelu, lambda 0.01". */
void tool_describe_arch(const tool_config *c, char *buf, size_t len);

/* How the steps compute, for a run's header line: "fp32, GEMMs on oneDNN
 * (--gemm auto), BLAS core Haswell" (the backend sae_gemm_backend resolves
 * c->gemm to in this build; the OpenBLAS kernel openblas_get_corename names,
 * when the process has OpenBLAS). */
void tool_describe_compute(const tool_config *c, char *buf, size_t len);

/* Set the optimizer options of c in o (what tool_make_sae sets after lr).
 * Returns a libsae status; o may be partly set on failure. */
int tool_config_apply(const tool_config *c, sae_optimizer *o);

#endif
