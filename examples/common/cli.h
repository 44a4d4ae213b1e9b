/*
 * The options sae-train and sae-sweep share (data, model, architecture,
 * schedules and the rest of the training recipe), their --help text, and
 * loading the data they describe: a memory-mapped file, or the built-in
 * synthetic data with a held-out evaluation set.
 */
#ifndef EX_CLI_H
#define EX_CLI_H

#include "data.h"
#include "synth.h"

#include <getopt.h>
#include <libsae/sae.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct ex_config {
    const char *input;        /* training data file; NULL: synthetic */
    const char *eval_path;    /* --eval FILE; NULL: held-out synthetic or training rows */
    size_t d_in;              /* raw files: columns; synthetic: dimension */
    size_t synth_features;    /* synthetic: true features */
    double synth_active;      /* synthetic: mean active features per token */
    uint64_t synth_tokens;    /* synthetic: training tokens generated */
    size_t d_sae;
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
    size_t k;                 /* TopK, BatchTopK */
    double threshold0;        /* JumpReLU: initial threshold */
    double bandwidth;         /* JumpReLU: SAE_OPT_JUMPRELU_BANDWIDTH */
    double auxk_coeff;        /* TopK, BatchTopK: SAE_OPT_AUXK_COEFF */
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
    uint64_t given;           /* the shared options on the command line (ex_config_given) */
} ex_config;

/* Option codes of the shared options (program-specific ones use other values). */
enum {
    EX_OPT_D_IN = 1000, EX_OPT_EVAL, EX_OPT_SYNTH_FEATURES, EX_OPT_SYNTH_ACTIVE,
    EX_OPT_SYNTH_TOKENS, EX_OPT_D_SAE, EX_OPT_LAMBDA, EX_OPT_LR, EX_OPT_CLIP, EX_OPT_BATCH,
    EX_OPT_STEPS, EX_OPT_TOKENS, EX_OPT_SEED, EX_OPT_LOG_EVERY, EX_OPT_DEAD_WINDOW,
    EX_OPT_ARCH, EX_OPT_K, EX_OPT_THRESHOLD, EX_OPT_BANDWIDTH, EX_OPT_AUXK_COEFF, EX_OPT_AUXK_K,
    EX_OPT_THRESHOLD_BETA, EX_OPT_LR_SCHEDULE, EX_OPT_LR_WARMUP, EX_OPT_LR_DECAY,
    EX_OPT_L1_WARMUP, EX_OPT_SAMPLE, EX_OPT_NORMALIZE, EX_OPT_B_DEC_INIT, EX_OPT_RESAMPLE_EVERY,
    EX_OPT_RESAMPLE_WINDOW
};

#define EX_CONFIG_LONG_OPTIONS                                                   \
    {"d-in", required_argument, NULL, EX_OPT_D_IN},                              \
    {"eval", required_argument, NULL, EX_OPT_EVAL},                              \
    {"synth-features", required_argument, NULL, EX_OPT_SYNTH_FEATURES},          \
    {"synth-active", required_argument, NULL, EX_OPT_SYNTH_ACTIVE},              \
    {"synth-tokens", required_argument, NULL, EX_OPT_SYNTH_TOKENS},              \
    {"d-sae", required_argument, NULL, EX_OPT_D_SAE},                            \
    {"lambda", required_argument, NULL, EX_OPT_LAMBDA},                          \
    {"lr", required_argument, NULL, EX_OPT_LR},                                  \
    {"clip", required_argument, NULL, EX_OPT_CLIP},                              \
    {"batch", required_argument, NULL, EX_OPT_BATCH},                            \
    {"steps", required_argument, NULL, EX_OPT_STEPS},                            \
    {"tokens", required_argument, NULL, EX_OPT_TOKENS},                          \
    {"seed", required_argument, NULL, EX_OPT_SEED},                              \
    {"log-every", required_argument, NULL, EX_OPT_LOG_EVERY},                    \
    {"dead-window", required_argument, NULL, EX_OPT_DEAD_WINDOW},                \
    {"arch", required_argument, NULL, EX_OPT_ARCH},                              \
    {"k", required_argument, NULL, EX_OPT_K},                                    \
    {"threshold", required_argument, NULL, EX_OPT_THRESHOLD},                    \
    {"bandwidth", required_argument, NULL, EX_OPT_BANDWIDTH},                    \
    {"auxk-coeff", required_argument, NULL, EX_OPT_AUXK_COEFF},                  \
    {"auxk-k", required_argument, NULL, EX_OPT_AUXK_K},                          \
    {"threshold-beta", required_argument, NULL, EX_OPT_THRESHOLD_BETA},          \
    {"lr-schedule", required_argument, NULL, EX_OPT_LR_SCHEDULE},                \
    {"lr-warmup", required_argument, NULL, EX_OPT_LR_WARMUP},                    \
    {"lr-decay", required_argument, NULL, EX_OPT_LR_DECAY},                      \
    {"l1-warmup", required_argument, NULL, EX_OPT_L1_WARMUP},                    \
    {"sample", required_argument, NULL, EX_OPT_SAMPLE},                          \
    {"normalize", no_argument, NULL, EX_OPT_NORMALIZE},                          \
    {"b-dec-init", required_argument, NULL, EX_OPT_B_DEC_INIT},                  \
    {"resample-every", required_argument, NULL, EX_OPT_RESAMPLE_EVERY},          \
    {"resample-window", required_argument, NULL, EX_OPT_RESAMPLE_WINDOW},        \
    {"help", no_argument, NULL, 'h'}

/* The defaults: tuned so the built-in synthetic data trains well in seconds. */
void ex_config_defaults(ex_config *c);

/* getopt_long, except that an unknown option or a missing argument ends the
 * program with a one-line message and exit status 2. */
int ex_getopt(int argc, char **argv, const struct option *longopts);

/* Apply a shared option; false if `code` is not one. Exits 2 on a bad value. */
bool ex_config_option(ex_config *c, int code, const char *arg);

/* Whether the shared option `code` (EX_OPT_*) was given on the command line. */
bool ex_config_given(const ex_config *c, int code);

/* Take the optional positional FILE, resolve --tokens into steps. Exits 2 on
 * a bad command line. */
void ex_config_finish(ex_config *c, int argc, char **argv, int optind_);

/* Once the architecture is known (from the command line, or from the
 * checkpoint when resuming): check that every option given applies to an
 * architecture chosen and that k fits in d_sae (the default k is lowered to
 * d_sae). Exits 2 on a contradiction. */
void ex_config_check(ex_config *c);

/* Check that the schedule options fit in c->steps (exit 2 if not); once the
 * total is known (after ex_config_resume when resuming). */
void ex_config_check_schedule(const ex_config *c);

/* Architecture names: "relu", "topk", "batchtopk", "jumprelu" (SAE_ARCH_*),
 * and the name of the learning-rate schedule SAE_LR_*. */
const char *ex_arch_name(int arch);
int ex_arch_parse(const char *name); /* -1 if unknown */
const char *ex_lr_schedule_name(int schedule);
bool ex_arch_is_topk(int arch);      /* TopK or BatchTopK: sparsity is k, no lambda */

/* The --help lines of the shared options, with the defaults of c. */
void ex_config_help(FILE *f, const ex_config *c);

/* The data a run trains and evaluates on. */
typedef struct ex_inputs {
    ex_data train, eval;      /* eval.x == NULL: evaluate on training rows */
    size_t eval_rows;         /* rows evaluated */
    char eval_label[160];     /* e.g. "held-out synthetic (8192 tokens)" */
    bool synthetic;
    ex_synth synth;           /* ground truth when synthetic */
} ex_inputs;

/* Load (map or generate) the inputs of c. Exits 2 with "<program>: FILE:
 * problem" on a missing or malformed file. */
void ex_inputs_load(ex_inputs *in, const ex_config *c);
void ex_inputs_free(ex_inputs *in);
/* The evaluation rows: eval data, or the first eval_rows training rows. */
const float *ex_inputs_eval_x(const ex_inputs *in);

/* A model of architecture c->arch (k c->k, or initial threshold
 * c->threshold0) and an optimizer with every option of c: lr, lambda (0 for
 * TopK and BatchTopK, which ignore it), clip, the architecture's options,
 * the schedules with SAE_OPT_TOTAL_STEPS = c->steps, and SAE_OPT_DEAD_WINDOW =
 * c->dead_window. Returns a libsae status; on failure both are NULL. */
int ex_make_sae(const ex_config *c, size_t d_in, sae_model **m, sae_optimizer **o);

/* Set the optimizer options of c in o (what ex_make_sae sets after lr).
 * Returns a libsae status; o may be partly set on failure. */
int ex_config_apply(const ex_config *c, sae_optimizer *o);

/* sae_loss and sae_fvu of m on the evaluation rows. Returns a libsae status. */
int ex_evaluate(const sae_model *m, const ex_inputs *in, double lambda, sae_losses *l,
                double *fvu);

/* MMCS of m's decoder rows against the synthetic ground truth, and the share
 * of true features found with cosine > 0.9 (see ex_mmcs). Returns a libsae
 * status (SAE_E_NOMEM when out of memory). */
int ex_truth_mmcs(const sae_model *m, const ex_synth *truth, double *mmcs, double *recovered);

#endif
