/*
 * Batches by seeded shuffle: each epoch visits every row of the data once in
 * a random order (Fisher-Yates, reshuffled at each epoch); a batch copies its
 * rows into a caller buffer, so the data itself stays memory-mapped.
 *
 * The rows come as one endless sequence that depends only on the seed and the
 * data's row count: the k-th row drawn is the same however the draws are cut
 * into batches. A resumed run seeks past the rows it has already drawn and
 * goes on with exactly the batches an uninterrupted run would have taken.
 *
 * With a scale s other than 1 (training with --normalize on s x), each row is
 * multiplied by s as it is copied (tool_scale), so the mapped data is never
 * copied whole.
 */
#ifndef TOOL_BATCH_H
#define TOOL_BATCH_H

#include "data.h"

#include <libsae/sae.h>

#include <stddef.h>
#include <stdint.h>

/* The batches' random stream of the run's seed (sae_rng_seed(r, seed, it)). */
#define TOOL_STREAM_BATCHES 0x5ba7c4

typedef struct tool_batcher {
    const tool_data *data;
    uint64_t *order; /* a permutation of 0..rows-1 (sae_rng_shuffle's element type) */
    size_t pos;    /* next index into order */
    uint64_t drawn; /* rows drawn so far (tool_batcher_next and _skip) */
    double scale;   /* rows are multiplied by it as they are copied (1: copied as they are) */
    sae_rng rng;
} tool_batcher;

/* v[k] = (float)(v[k] * s) for k < count, in double and rounded once: how
 * batches and the recipe's sample are scaled, so both get the same floats. */
void tool_scale(float *v, size_t count, double s);

/* Returns 0, or -1 when out of memory. The same seed gives the same batches.
 * The scale starts at 1. */
int tool_batcher_init(tool_batcher *b, const tool_data *data, uint64_t seed);

/* A run's batches: tool_batcher_init, rows multiplied by scale, and the
 * `drawn` rows a resumed run has drawn skipped (tool_batcher_skip). Returns
 * 0, or -1 when out of memory. */
int tool_batcher_start(tool_batcher *b, const tool_data *data, uint64_t seed, double scale,
                       uint64_t drawn);

/* Copy the next n rows into dst (n x cols floats), times the scale; rows (may
 * be NULL) gets their indices in the data. */
void tool_batcher_next(tool_batcher *b, float *dst, size_t n, size_t *rows);

/* Skip n rows, as if they had been drawn (drawn += n). It replays the
 * shuffles of the epochs it passes without copying any data: O(rows) work per
 * epoch skipped, far less than training on that epoch took. */
void tool_batcher_skip(tool_batcher *b, uint64_t n);

void tool_batcher_free(tool_batcher *b);

#endif
