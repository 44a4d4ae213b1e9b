#include "batch.h"

#include <stdlib.h>
#include <string.h>

void tool_scale(float *v, size_t count, double s)
{
    for (size_t k = 0; k < count; k++)
        v[k] = (float)((double)v[k] * s);
}

/* A new epoch: the order shuffled again, in place (so the k-th epoch's
 * order is the k-th shuffle of 0..rows-1). */
static void shuffle(tool_batcher *b)
{
    (void)sae_rng_shuffle(&b->rng, b->order, b->data->rows); /* fails only on NULL */
    b->pos = 0;
}

int tool_batcher_init(tool_batcher *b, const tool_data *data, uint64_t seed)
{
    memset(b, 0, sizeof *b);
    b->data = data;
    b->scale = 1.0;
    if (data->rows > SIZE_MAX / sizeof *b->order)
        return -1;
    b->order = malloc(data->rows * sizeof *b->order);
    if (!b->order)
        return -1;
    for (size_t i = 0; i < data->rows; i++)
        b->order[i] = i;
    sae_rng_seed(&b->rng, seed, TOOL_STREAM_BATCHES);
    shuffle(b);
    return 0;
}

void tool_batcher_next(tool_batcher *b, float *dst, size_t n, size_t *rows)
{
    const size_t cols = b->data->cols;
    for (size_t t = 0; t < n; t++) {
        if (b->pos == b->data->rows)
            shuffle(b);
        size_t row = (size_t)b->order[b->pos++];
        float *out = dst + t * cols;
        const float *in = b->data->x + row * cols;
        if (b->scale == 1.0)
            memcpy(out, in, cols * sizeof(float));
        else
            for (size_t j = 0; j < cols; j++)
                out[j] = (float)((double)in[j] * b->scale);
        if (rows)
            rows[t] = row;
    }
    b->drawn += n;
}

void tool_batcher_skip(tool_batcher *b, uint64_t n)
{
    b->drawn += n;
    while (n > 0) {
        if (b->pos == b->data->rows)
            shuffle(b);
        size_t left = b->data->rows - b->pos;
        size_t k = n < left ? (size_t)n : left;
        b->pos += k;
        n -= k;
    }
}

void tool_batcher_free(tool_batcher *b)
{
    free(b->order);
    memset(b, 0, sizeof *b);
}

int tool_batcher_start(tool_batcher *b, const tool_data *data, uint64_t seed, double scale,
                       uint64_t drawn)
{
    if (tool_batcher_init(b, data, seed) != 0)
        return -1;
    b->scale = scale;
    tool_batcher_skip(b, drawn);
    return 0;
}
