/*
 * Batches by seeded shuffle: each epoch visits every row of the data once in
 * a random order (Fisher-Yates, reshuffled at each epoch); a batch copies its
 * rows into a caller buffer, so the data itself stays memory-mapped.
 */
#ifndef EX_BATCH_H
#define EX_BATCH_H

#include "data.h"
#include "rng.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ex_batcher {
    const ex_data *data;
    size_t *order; /* a permutation of 0..rows-1 */
    size_t pos;    /* next index into order */
    ex_rng rng;
} ex_batcher;

/* Returns 0, or -1 when out of memory. The same seed gives the same batches. */
int ex_batcher_init(ex_batcher *b, const ex_data *data, uint64_t seed);

/* Copy the next n rows into dst (n x cols floats); rows (may be NULL) gets
 * their indices in the data. */
void ex_batcher_next(ex_batcher *b, float *dst, size_t n, size_t *rows);

void ex_batcher_free(ex_batcher *b);

#endif
