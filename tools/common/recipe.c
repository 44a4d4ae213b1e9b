#include "recipe.h"

#include "args.h"
#include "batch.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


bool tool_recipe_needs_sample(const tool_config *c, bool hist)
{
    return c->normalize || c->b_dec_init >= 0 || c->resample_every > 0 || hist;
}

int tool_sample_draw(tool_sample *s, const tool_data *data, size_t n, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    const size_t d = data->cols;
    if (n > data->rows)
        n = data->rows;
    if (n == 0 || n > SIZE_MAX / sizeof(float) / d)
        return -1;
    s->x = malloc(n * d * sizeof(float));
    if (!s->x)
        return -1;
    s->n = n;
    s->d = d;
    if (n == data->rows) { /* the whole data */
        memcpy(s->x, data->x, n * d * sizeof(float));
        return 0;
    }
    sae_rng rng;
    sae_rng_seed(&rng, seed, TOOL_STREAM_SAMPLE);
    for (size_t t = 0; t < n; t++) {
        size_t row = (size_t)sae_rng_below(&rng, data->rows);
        memcpy(s->x + t * d, data->x + row * d, d * sizeof(float));
    }
    return 0;
}

void tool_sample_free(tool_sample *s)
{
    free(s->x);
    memset(s, 0, sizeof *s);
}

int tool_recipe_scale(const tool_config *c, tool_sample *s, bool estimate, double *scale, char *err,
                      size_t errlen)
{
    if (!c->normalize) {
        *scale = 1.0;
        return SAE_OK;
    }
    if (estimate) {
        int rc = sae_estimate_input_scale(s->x, s->n, s->d, scale);
        if (rc != SAE_OK) {
            snprintf(err, errlen, "--normalize: estimating the input scale: %s%s",
                     tool_status(rc),
                     rc == SAE_E_INVALID_ARG ? " (every token of the sample is zero?)" : "");
            return rc;
        }
    }
    tool_scale(s->x, s->n * s->d, *scale);
    return SAE_OK;
}

int tool_recipe_b_dec(const tool_config *c, sae_model *m, const tool_sample *s, char *err,
                      size_t errlen)
{
    if (c->b_dec_init < 0)
        return SAE_OK;
    int rc = sae_model_init_b_dec(m, s->x, s->n, c->b_dec_init);
    if (rc != SAE_OK)
        snprintf(err, errlen, "--b-dec-init: %s", tool_status(rc));
    return rc;
}

int tool_recipe_prepare(const tool_config *c, const tool_data *data, bool resuming, bool hist,
                        sae_model *m, tool_sample *s, double *scale)
{
    if (tool_recipe_needs_sample(c, hist) && tool_sample_draw(s, data, c->sample, c->seed) != 0) {
        fprintf(stderr, "%s: out of memory for a sample of %zu x %zu floats (see --sample)\n",
                tool_program(), c->sample, data->cols);
        return TOOL_EXIT_USAGE;
    }
    char err[600];
    int rc = tool_recipe_scale(c, s, !resuming, scale, err, sizeof err);
    if (rc == SAE_OK && !resuming)
        rc = tool_recipe_b_dec(c, m, s, err, sizeof err);
    if (rc != SAE_OK) {
        fprintf(stderr, "%s: %s\n", tool_program(), err);
        return rc == SAE_E_NONFINITE ? TOOL_EXIT_USAGE : 1;
    }
    return 0;
}
