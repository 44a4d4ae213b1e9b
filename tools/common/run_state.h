/*
 * train_state.txt: what resuming a run needs beyond the model and the
 * optimizer (the full specification, with the batch order and the sample
 * that these settings determine: tools/training-runs.md). Text, one
 * "key value" line each, ending with "end":
 *   format 3               this layout
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
 *   target PATH, d_out N   transcoders: the targets' file (not for synthetic
 *                          pairs) and their width (optional keys; the kind,
 *                          skip or not, is the model's)
 *   arch NAME, k K         the architecture (k for TopK and BatchTopK), checked
 *   threshold0 X           against the model loaded; JumpReLU's initial threshold
 *   scale S                with --normalize only: the input scale s
 *   b_dec_init M           none, mean or median
 *   sample N               tokens in the recipe's sample
 *   resample_every N,      resampling (0: never; window 0: dead_window)
 *   resample_window W
 *   hist_every N           sae-train --hist-every (0: none)
 * Format 2 added the recipe's group (optional when reading); format 1 files
 * (earlier sae-train) still load, as runs without them. Format 3 is format
 * 2 with the library's random numbers (sae_rng_*) behind the batches, the
 * sample and the synthetic data: resuming a format 1 or 2 checkpoint goes
 * on with other batches than its run would have drawn (tool_checkpoint_load
 * says so). Lines starting with '#' are comments; unknown keys are ignored.
 */
#ifndef TOOL_RUN_STATE_H
#define TOOL_RUN_STATE_H

#include "config.h"
#include "inputs.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOOL_STATE_FILE "train_state.txt"

#define TOOL_STATE_FORMAT 3

typedef struct tool_run_state {
    int format;            /* the file's format (TOOL_STATE_FORMAT when written) */
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
    char target[1024];     /* transcoders: the targets' path; "" if synthetic or none */
    size_t d_out;          /* transcoders: the targets' width; 0: an autoencoder */
    int arch;              /* SAE_ARCH_*, or -1 if not recorded (format 1) */
    size_t k;
    double threshold0;     /* JumpReLU; 0 if not recorded */
    bool normalize;
    double scale;          /* with normalize; else 1 */
    int b_dec_init;        /* SAE_B_DEC_*, or -1 */
    size_t sample;
    uint64_t resample_every, resample_window;
    uint64_t hist_every;
} tool_run_state;

/* The state of a run of c on in before its first step, with input scale
 * `scale` (1 without --normalize). */
void tool_run_state_init(tool_run_state *s, const tool_config *c, const tool_inputs *in, double scale);

/* Take the settings that may change between runs (the total, batch,
 * log_every, dead_window, sample and the resampling) from c. */
void tool_run_state_settings(tool_run_state *s, const tool_config *c);

/* Write s to path (atomically: a temporary file, fsync, rename), or read it
 * back: 0, or -1 (read: with the problem in err, one line). */
int tool_run_state_write(const char *path, const tool_run_state *s);
int tool_run_state_read(const char *path, tool_run_state *s, char *err, size_t errlen);

/* Record path as the run's input file (not recorded, "", if it does not fit
 * on one line of the file). */
void tool_run_state_set_input(tool_run_state *s, const char *path);
void tool_run_state_set_target(tool_run_state *s, const char *path);

#endif
