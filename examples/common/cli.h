/*
 * The options sae-train and sae-sweep share (data, model, schedule), their
 * --help text, and loading the data they describe: a memory-mapped file, or
 * the built-in synthetic data with a held-out evaluation set.
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
    uint64_t dead_window;     /* tokens */
    uint32_t given;           /* the shared options on the command line (ex_config_given) */
} ex_config;

/* Option codes of the shared options (program-specific ones use other values). */
enum {
    EX_OPT_D_IN = 1000, EX_OPT_EVAL, EX_OPT_SYNTH_FEATURES, EX_OPT_SYNTH_ACTIVE,
    EX_OPT_SYNTH_TOKENS, EX_OPT_D_SAE, EX_OPT_LAMBDA, EX_OPT_LR, EX_OPT_CLIP, EX_OPT_BATCH,
    EX_OPT_STEPS, EX_OPT_TOKENS, EX_OPT_SEED, EX_OPT_LOG_EVERY, EX_OPT_DEAD_WINDOW
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

/* A model and an optimizer configured from c with L1 coefficient lambda.
 * Returns a libsae status; on failure both are NULL. */
int ex_make_sae(const ex_config *c, size_t d_in, double lambda, sae_model **m,
                sae_optimizer **o);

/* sae_loss and sae_fvu of m on the evaluation rows. Returns a libsae status. */
int ex_evaluate(const sae_model *m, const ex_inputs *in, double lambda, sae_losses *l,
                double *fvu);

/* MMCS of m's decoder rows against the synthetic ground truth, and the share
 * of true features found with cosine > 0.9 (see ex_mmcs). Returns a libsae
 * status (SAE_E_NOMEM when out of memory). */
int ex_truth_mmcs(const sae_model *m, const ex_synth *truth, double *mmcs, double *recovered);

#endif
