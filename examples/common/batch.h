/*
 * Batches by seeded shuffle: each epoch visits every row of the data once in
 * a random order (Fisher-Yates, reshuffled at each epoch); a batch copies its
 * rows into a caller buffer, so the data itself stays memory-mapped.
 *
 * The rows come as one endless sequence that depends only on the seed and the
 * data's row count: the k-th row drawn is the same however the draws are cut
 * into batches. A resumed run seeks past the rows it has already drawn and
 * goes on with exactly the batches an uninterrupted run would have taken.
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
    uint64_t drawn; /* rows drawn so far (ex_batcher_next and _skip) */
    ex_rng rng;
} ex_batcher;

/* Returns 0, or -1 when out of memory. The same seed gives the same batches. */
int ex_batcher_init(ex_batcher *b, const ex_data *data, uint64_t seed);

/* Copy the next n rows into dst (n x cols floats); rows (may be NULL) gets
 * their indices in the data. */
void ex_batcher_next(ex_batcher *b, float *dst, size_t n, size_t *rows);

/* Skip n rows, as if they had been drawn (drawn += n). It replays the
 * shuffles of the epochs it passes without copying any data: O(rows) work per
 * epoch skipped, far less than training on that epoch took. */
void ex_batcher_skip(ex_batcher *b, uint64_t n);

void ex_batcher_free(ex_batcher *b);

#endif
