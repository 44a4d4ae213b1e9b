/*
 * Synthetic activations with known features (after Sharkey, Braun and
 * Millidge 2022, "Taking features out of superposition with sparse
 * autoencoders"): n_feat ground-truth directions, random unit vectors in d_in;
 * each token is a sparse positive combination of them. Every feature is active
 * in a token independently with probability active / n_feat (so `active`
 * features per token on average) with a coefficient uniform in (0, 1).
 * An SAE trained on such data should find the directions again; MMCS measures
 * how well it did.
 */
#ifndef TOOL_SYNTH_H
#define TOOL_SYNTH_H

#include "rng.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tool_synth {
    size_t d_in, n_feat;
    double active;
    float *dirs; /* n_feat x d_in, unit rows */
} tool_synth;

/* Draw the directions from `seed`. Returns 0, or -1 when out of memory. */
int tool_synth_init(tool_synth *s, size_t d_in, size_t n_feat, double active, uint64_t seed);

/* Fill x (n x d_in floats) with n tokens drawn from rng. */
void tool_synth_tokens(const tool_synth *s, float *x, size_t n, tool_rng *rng);

/* A malloc'd n x d_in matrix of tokens from stream `stream` of `seed`, or NULL. */
float *tool_synth_matrix(const tool_synth *s, size_t n, uint64_t seed, uint64_t stream);

void tool_synth_free(tool_synth *s);

/* Mean max cosine similarity: for each true direction (truth: n_true x d rows)
 * its largest cosine with any row of dec (n_dec x d, e.g. the SAE's W_dec),
 * averaged over the true directions into *mmcs; *recovered gets the share of
 * true directions whose largest cosine exceeds threshold. Zero rows count as
 * cosine 0. */
void tool_mmcs(const float *truth, size_t n_true, const float *dec, size_t n_dec, size_t d,
               double threshold, double *mmcs, double *recovered);

#endif
