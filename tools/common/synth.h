/*
 * Synthetic activations with known features (after Sharkey, Braun and
 * Millidge 2022, "Taking features out of superposition with sparse
 * autoencoders"): n_feat ground-truth directions, random unit vectors in d_in;
 * each token is a sparse positive combination of them. Every feature is active
 * in a token independently with probability active / n_feat (so `active`
 * features per token on average) with a coefficient uniform in (0, 1].
 * An SAE trained on such data should find the directions again; MMCS measures
 * how well it did.
 *
 * Exactly (the library's generator, sae_rng_*; tools/training-runs.md):
 * direction i (i = 0 .. n_feat-1) is d_in draws of sae_rng_normal from
 * stream TOOL_STREAM_DIRECTIONS of the seed, each rounded to float, then
 * scaled by 1 / sqrt(its sum of squares in double) (redrawn if all zero);
 * token t (0, 1, ...) of a matrix from stream `stream` visits the features
 * in order: feature i is active when sae_rng_uniform < active / n_feat, and
 * then gets the coefficient c = (float)(1 - sae_rng_uniform), the token
 * adding c * direction i in float. The training tokens are stream
 * TOOL_STREAM_TRAIN_TOKENS, the held-out ones TOOL_STREAM_EVAL_TOKENS.
 */
#ifndef TOOL_SYNTH_H
#define TOOL_SYNTH_H

#include <libsae/sae.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOOL_STREAM_DIRECTIONS 0xd1c7
#define TOOL_STREAM_TARGET_DIRECTIONS 0xd1c8   /* transcoder pairs: the output directions */
#define TOOL_STREAM_SKIP_MAP 0xd1c9            /* skip transcoder pairs: A */
#define TOOL_STREAM_TRAIN_TOKENS 1
#define TOOL_STREAM_EVAL_TOKENS 2

typedef struct tool_synth {
    size_t d_in, n_feat;
    double active;
    float *dirs; /* n_feat x d_in, unit rows */
} tool_synth;

/* Draw the directions from `seed`. Returns 0, or -1 when out of memory. */
int tool_synth_init(tool_synth *s, size_t d_in, size_t n_feat, double active, uint64_t seed);

/* Fill x (n x d_in floats) with n tokens drawn from rng. */
void tool_synth_tokens(const tool_synth *s, float *x, size_t n, sae_rng *rng);

/* A malloc'd n x d_in matrix of tokens from stream `stream` of `seed`, or NULL. */
float *tool_synth_matrix(const tool_synth *s, size_t n, uint64_t seed, uint64_t stream);

/*
 * Synthetic transcoder pairs (x, y): y holds the same sparse code as x,
 * written in the n_feat directions of `out` (another tool_synth, d_out wide,
 * drawn from stream TOOL_STREAM_TARGET_DIRECTIONS of the seed). A skip map A
 * (d_out x d_in floats, entries sae_rng_normal / sqrt(d_in) from stream
 * TOOL_STREAM_SKIP_MAP) makes it a skip transcoder's data: after its
 * features, a token's x gets dense noise z (d_in draws of sae_rng_normal /
 * sqrt(d_in), from the tokens' stream) and y gets A x (x with the noise; in
 * double, rounded once). The noise is what makes A identifiable: without it
 * A x would be a sparse map of the code, which the decoder rows absorb.
 * The x of a pair without A are exactly tool_synth_tokens's.
 */
typedef struct tool_synth_pairs {
    tool_synth out;   /* the output directions (out.d_in is d_out) */
    float *skip;      /* A, d_out x d_in; NULL: no skip map */
} tool_synth_pairs;

/* Draw the output directions (and A if skip) from `seed`. Returns 0, or -1
 * when out of memory. */
int tool_synth_pairs_init(tool_synth_pairs *p, const tool_synth *in, size_t d_out, bool skip,
                          uint64_t seed);
/* Malloc'd n x d_in inputs (*x) and n x d_out targets (*y) from stream
 * `stream` of `seed`; -1 (both NULL) when out of memory. */
int tool_synth_pairs_matrix(const tool_synth *in, const tool_synth_pairs *p, size_t n,
                            uint64_t seed, uint64_t stream, float **x, float **y);
void tool_synth_pairs_free(tool_synth_pairs *p);

void tool_synth_free(tool_synth *s);

/* Mean max cosine similarity: for each true direction (truth: n_true x d rows)
 * its largest cosine with any row of dec (n_dec x d, e.g. the SAE's W_dec),
 * averaged over the true directions into *mmcs; *recovered gets the share of
 * true directions whose largest cosine exceeds threshold. Zero rows count as
 * cosine 0. The cosines are libsae's sae_max_cosine; returns its status. */
int tool_mmcs(const float *truth, size_t n_true, const float *dec, size_t n_dec, size_t d,
              double threshold, double *mmcs, double *recovered);

#endif
