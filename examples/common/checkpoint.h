/*
 * Checkpoint directories of sae-train and sae-sweep. A checkpoint DIR holds
 *   sae_weights.safetensors, cfg.json  the model (sae_model_save: SAELens opens
 *                                       DIR with SAE.load_from_disk)
 *   optimizer.safetensors               Adam moments, step count, options
 *                                       (sae_optimizer_save)
 *   train_state.txt                     what else resuming needs (below)
 * A save writes all four into a new directory inside DIR (".saving-" and 6
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
 * Lines starting with '#' are comments; unknown keys are ignored.
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
} ex_run_state;

/* The state of a run of c on in before its first step. */
void ex_run_state_init(ex_run_state *s, const ex_config *c, const ex_inputs *in);

/* Make sure dir is a directory we can write in, creating it (one level, like
 * mkdir) when missing. Exits 2 with "<program>: <opt> '<dir>': <problem>"
 * otherwise (e.g. the parent directory does not exist). */
void ex_checkpoint_prepare(const char *opt, const char *dir);

/* Write a checkpoint of m, o and s into dir (an existing directory), as
 * above. When fresh (the first save of a run into a directory that may hold
 * another run's checkpoint), the old state file is removed before the
 * renames, so that a crash between them cannot pair it with the new files by
 * chance. Returns SAE_OK or the status of the failing step (SAE_E_IO for the
 * state file, a directory or a rename); err gets a one-line description
 * naming the file. On failure the files in dir are as they were. */
int ex_checkpoint_save(const char *dir, const sae_model *m, const sae_optimizer *o,
                       const ex_run_state *s, bool fresh, char *err, size_t errlen);

/* Load the checkpoint in dir. On any problem (a missing directory or file, a
 * corrupt or inconsistent checkpoint) exits 2 with one line naming the file
 * and the problem (the libsae status string for the model and optimizer). */
void ex_checkpoint_load(const char *dir, sae_model **m, sae_optimizer **o, ex_run_state *s);

/* The state file alone: 0, or -1 with the problem in err. Exposed for tests. */
int ex_run_state_write(const char *path, const ex_run_state *s);
int ex_run_state_read(const char *path, ex_run_state *s, char *err, size_t errlen);

/* Resuming: make c describe the checkpointed run (seed, data, batch, d_in,
 * d_sae; a value given on the command line that contradicts the checkpoint
 * exits 2), take the hyperparameters lr, lambda and clip from the optimizer
 * unless given on the command line (then set them in o), and resolve the
 * total number of steps: --steps N, --tokens N (total), or else the
 * checkpointed run's own total. Exits 2 when the total is below the steps
 * already taken. s then describes the continued run (its total, batch, ...)
 * for the checkpoints it will write. */
void ex_config_resume(ex_config *c, const char *dir, ex_run_state *s, const sae_model *m,
                      sae_optimizer *o);

/* Check that the loaded training data has the checkpoint's shape (exit 2),
 * and record its format in s. */
void ex_inputs_check_resume(const ex_inputs *in, const ex_config *c, const char *dir,
                            ex_run_state *s);

#endif
