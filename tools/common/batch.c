#include "batch.h"

#include <stdlib.h>
#include <string.h>

void tool_scale(float *v, size_t count, double s)
{
    for (size_t k = 0; k < count; k++)
        v[k] = (float)((double)v[k] * s);
}

static void shuffle(tool_batcher *b)
{
    size_t n = b->data->rows;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)tool_rng_below(&b->rng, (uint64_t)i + 1);
        size_t t = b->order[i];
        b->order[i] = b->order[j];
        b->order[j] = t;
    }
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
    tool_rng_seed(&b->rng, seed, 0x5ba7c4);
    shuffle(b);
    return 0;
}

void tool_batcher_next(tool_batcher *b, float *dst, size_t n, size_t *rows)
{
    const size_t cols = b->data->cols;
    for (size_t t = 0; t < n; t++) {
        if (b->pos == b->data->rows)
            shuffle(b);
        size_t row = b->order[b->pos++];
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
