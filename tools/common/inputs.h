/*
 * The data a run trains and evaluates on: a memory-mapped file (data.h), or
 * the built-in synthetic data (synth.h) with a held-out evaluation set; and
 * the evaluation itself (losses, FVU, MMCS against the synthetic truth).
 */
#ifndef TOOL_INPUTS_H
#define TOOL_INPUTS_H

#include "config.h"
#include "data.h"
#include "synth.h"

#include <libsae/sae.h>
#include <stdbool.h>
#include <stddef.h>

#define TOOL_SYNTH_D_IN 64         /* synthetic dimension unless --d-in */
#define TOOL_SYNTH_EVAL_TOKENS 8192   /* held-out synthetic tokens */
#define TOOL_TRAIN_EVAL_ROWS 16384    /* training rows evaluated when there is no --eval */

/* The data a run trains and evaluates on. */
typedef struct tool_inputs {
    tool_data train, eval;    /* eval.x == NULL: evaluate on training rows */
    size_t eval_rows;         /* rows evaluated */
    char eval_label[160];     /* e.g. "held-out synthetic (8192 tokens)" */
    bool synthetic;
    tool_synth synth;         /* ground truth when synthetic */
    /* transcoders: the targets of train's and eval's rows, row for row
     * (target.x == NULL: an autoencoder, whose target is its input) */
    tool_data target, eval_target;
    tool_synth_pairs pairs;   /* ground truth of synthetic pairs (--synth-target) */
} tool_inputs;

/* Load (map or generate) the inputs of c, and set c->d_out to the target's
 * width (0 without one). Exits 2 with "<program>: FILE: problem" on a
 * missing or malformed file, or targets whose row count is not their
 * inputs'. */
void tool_inputs_load(tool_inputs *in, tool_config *c);
void tool_inputs_free(tool_inputs *in);
/* The evaluation rows: eval data, or the first eval_rows training rows; and
 * their targets (NULL for an autoencoder). */
const float *tool_inputs_eval_x(const tool_inputs *in);
const float *tool_inputs_eval_y(const tool_inputs *in);

/* sae_loss and sae_fvu of m on the evaluation rows (a transcoder:
 * sae_loss_target and sae_fvu_target on their targets). Returns a libsae
 * status. */
int tool_evaluate(const sae_model *m, const tool_inputs *in, double lambda, sae_losses *l,
                  double *fvu);

/* tool_evaluate of m with c's lambda (0 for TopK, BatchTopK and Matryoshka,
 * which have none), printed on stdout as one line: "eval on <rows>: l2 ..
 * l1 ..  l0 .. (..% of d_sae)  fvu .."; a Matryoshka model's levels on a
 * second line: "eval levels (features: l2 fvu):  <width>: <l2> <fvu> ...".
 * Returns a libsae status (nothing printed on a failure). */
int tool_evaluate_print(const sae_model *m, const tool_inputs *in, const tool_config *c);

/* MMCS of m's decoder rows against the synthetic ground truth (of synthetic
 * pairs: the output directions), and the share of true features found with
 * cosine > 0.9 (see tool_mmcs). Returns a libsae status (SAE_E_NOMEM when
 * out of memory, sae_max_cosine's). */
int tool_truth_mmcs(const sae_model *m, const tool_inputs *in, double *mmcs, double *recovered);

/* Synthetic skip transcoder pairs: ||W_skip - A||_F / ||A||_F of m. */
int tool_truth_skip_error(const sae_model *m, const tool_inputs *in, double *error);

#endif
