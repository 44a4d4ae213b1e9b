/*
 * Checkpoint directories of sae-train and sae-sweep. A checkpoint DIR holds
 *   sae_weights.safetensors, cfg.json  the model (sae_model_save: SAELens opens
 *                                       DIR with SAE.load_from_disk)
 *   optimizer.safetensors               Adam moments, step count, options
 *                                       (sae_optimizer_save)
 *   train_weights.safetensors           with --normalize only: the model as
 *                                       trained, on s x (see below)
 *   train_state.txt                     what else resuming needs (below)
 *
 * --normalize: the model trains on s x. The model in sae_weights.safetensors
 * is a copy with s folded in (sae_model_fold_input_scale), which takes raw
 * activations, as SAELens expects ("normalize_activations": "none"). The Adam
 * moments refer to the unfolded weights, and unfolding (folding with 1 / s)
 * would round, so the run's own model goes to train_weights.safetensors (a
 * single safetensors file) and s to train_state.txt: --resume loads that
 * file, not sae_weights.safetensors, and goes on bit for bit. The exported
 * copy gets s exactly as sae_model_fold_input_scale computes it (JumpReLU
 * thresholds, which the fold leaves alone, up to a float rounding: see
 * ex_model_copy).
 *
 * A save writes all of them into a new directory inside DIR (".saving-" and 6
 * characters; the library writes each file atomically and fsyncs it), and
 * only then renames them into DIR, optimizer first and state last: a save
 * that fails (a full disk) leaves the previous checkpoint whole, and a crash
 * between the renames leaves files of two steps, which ex_checkpoint_load
 * refuses (the optimizer's step count against the state's) rather than
 * resuming from a mixture. A crash mid-write may leave the .saving-
 * directory behind, never a damaged checkpoint.
 *
 * train_state.txt is text, one "key value" line each, ending with "end":
 *   format 1               this layout
 *   step S                 steps taken (= the optimizer's step count)
 *   tokens T               rows drawn from the shuffle so far
 *   seconds X              training wall-clock seconds so far
 *   steps N                the run's total number of steps
 *   seed, batch,           as on the command line
 *   log_every, dead_window
 *   data synthetic|npy|raw what it trained on, rows and d_in its shape;
 *   rows R, d_in D         synthetic data is regenerated from seed and
 *   synth_features ...     synth_features, synth_active, synth_tokens;
 *   input PATH             a file's path as given (the rest of the line)
 *   arch NAME, k K         the architecture (k for TopK and BatchTopK), checked
 *   threshold0 X           against the model loaded; JumpReLU's initial threshold
 *   scale S                with --normalize only: the input scale s
 *   b_dec_init M           none, mean or median
 *   sample N               tokens in the recipe's sample
 *   resample_every N,      resampling (0: never; window 0: dead_window)
 *   resample_window W
 *   hist_every N           sae-train --hist-every (0: none)
 * Format 2 added the last group (optional when reading); format 1 files
 * (earlier sae-train) still load, as runs without them. Lines starting with
 * '#' are comments; unknown keys are ignored.
 */
#ifndef EX_CHECKPOINT_H
#define EX_CHECKPOINT_H

#include "cli.h"

#include <libsae/sae.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EX_STATE_FILE "train_state.txt"

typedef struct ex_run_state {
    uint64_t step, tokens, steps;
    double seconds;
    uint64_t seed;
    size_t batch;
    uint64_t log_every, dead_window;
    char data[16];         /* "synthetic", "npy" or "raw" */
    size_t rows, d_in;
    size_t synth_features;
    double synth_active;
    uint64_t synth_tokens;
    char input[1024];      /* the file's path; "" if synthetic or not recorded */
    int arch;              /* SAE_ARCH_*, or -1 if not recorded (format 1) */
    size_t k;
    double threshold0;     /* JumpReLU; 0 if not recorded */
    bool normalize;
    double scale;          /* with normalize; else 1 */
    int b_dec_init;        /* SAE_B_DEC_*, or -1 */
    size_t sample;
    uint64_t resample_every, resample_window;
    uint64_t hist_every;
} ex_run_state;

/* The state of a run of c on in before its first step, with input scale
 * `scale` (1 without --normalize). */
void ex_run_state_init(ex_run_state *s, const ex_config *c, const ex_inputs *in, double scale);

/* Make sure dir is a directory we can write in, creating it (one level, like
 * mkdir) when missing. Exits 2 with "<program>: <opt> '<dir>': <problem>"
 * otherwise (e.g. the parent directory does not exist). */
void ex_checkpoint_prepare(const char *opt, const char *dir);

/* Whether this libsae saves and loads models of architecture `arch` and
 * their optimizers back as they are, tried on a tiny model after one step:
 * its architecture, k and tensors (JumpReLU's thresholds within float
 * rounding), and an optimizer that loads for the loaded model. A libsae that
 * cannot yet save an architecture (it would load as another one) fails here,
 * before any training. Returns SAE_OK, or a status with a one-line reason in
 * err. */
int ex_checkpoint_check(int arch, char *err, size_t errlen);

/* Write a checkpoint of m, o and s into dir (an existing directory), as
 * above (with s->normalize: the folded copy, and m as train_weights). When fresh (the first save of a run into a directory that may hold
 * another run's checkpoint), the old state file is removed before the
 * renames, so that a crash between them cannot pair it with the new files by
 * chance. Returns SAE_OK or the status of the failing step (SAE_E_IO for the
 * state file, a directory or a rename); err gets a one-line description
 * naming the file. On failure the files in dir are as they were. */
int ex_checkpoint_save(const char *dir, const sae_model *m, const sae_optimizer *o,
                       const ex_run_state *s, bool fresh, char *err, size_t errlen);

/* Load the checkpoint in dir: the model as trained (train_weights.safetensors
 * of a --normalize run, else sae_weights.safetensors), the optimizer and the
 * state. On any problem (a missing directory or file, a corrupt or
 * inconsistent checkpoint, a model whose architecture is not the state's)
 * exits 2 with one line naming the file and the problem (the libsae status
 * string for the model and optimizer). */
void ex_checkpoint_load(const char *dir, sae_model **m, sae_optimizer **o, ex_run_state *s);

/* The state file alone: 0, or -1 with the problem in err. Exposed for tests. */
int ex_run_state_write(const char *path, const ex_run_state *s);
int ex_run_state_read(const char *path, ex_run_state *s, char *err, size_t errlen);

/* Resuming: make c describe the checkpointed run (seed, data, d_in, d_sae,
 * architecture and k, --normalize and its scale, --b-dec-init; a value given
 * on the command line that contradicts the checkpoint exits 2), take batch,
 * log_every, dead_window, sample and the resampling settings from the state
 * and the optimizer options (lr, lambda, clip, the architecture's options,
 * the schedules) from the optimizer unless given on the command line (then
 * set them in o), and resolve the total number of steps: --steps N, --tokens
 * N (total), or else the checkpointed run's own total, which becomes
 * SAE_OPT_TOTAL_STEPS. Exits 2 when the total is below the steps already
 * taken or the schedules do not fit in it. s then describes the continued
 * run (its total, batch, ...) for the checkpoints it will write. */
void ex_config_resume(ex_config *c, const char *dir, ex_run_state *s, const sae_model *m,
                      sae_optimizer *o);

/* Check that the loaded training data has the checkpoint's shape (exit 2),
 * and record its format in s. */
void ex_inputs_check_resume(const ex_inputs *in, const ex_config *c, const char *dir,
                            ex_run_state *s);

#endif
