/*
 * What checkpoint files hold, shared by the single-process writers
 * (checkpoint.c) and the collective ones (collective.c). Not installed.
 */
#ifndef LIBSAE_CHECKPOINT_H
#define LIBSAE_CHECKPOINT_H

#include "internal.h"
#include "safetensors.h"

#define SAE_WEIGHTS_FILE "sae_weights.safetensors"
#define SAE_CONFIG_FILE "cfg.json"
#define SAE_OPTIMIZER_FILE "optimizer.safetensors"

enum { SAE_MODEL_MAX_TENSORS = 5, SAE_MODEL_MAX_META = 5, SAE_OPT_MAX_TENSORS = 11 };

/* Everything a model file is made of. Points into itself: not to be copied.
 * The shapes are the whole model's; for a shard, the data are its slices
 * (see collective.c) and the JumpReLU log thresholds' hex digits are left
 * to be placed (hex_floats NULL). */
typedef struct sae_model_contents {
    sae_st_out t[SAE_MODEL_MAX_TENSORS];
    size_t n_t;
    sae_st_kv meta[SAE_MODEL_MAX_META];
    size_t n_meta;
    char k_text[24];
    char threshold_text[32];
    float saelens_threshold; /* BatchTopK: the threshold SAELens gets */
} sae_model_contents;

void sae__model_contents(const sae_model *m, sae_model_contents *c);

/* SAELens's cfg.json for m (the whole model's d_sae for a shard). */
int sae__config_encode(const sae_model *m, const sae_st_sink *sink);

/* The tensors of o's file (shapes of the whole model; a shard's data are its
 * slices); returns their count. */
size_t sae__optimizer_tensors(const sae_optimizer *o, sae_st_out t[SAE_OPT_MAX_TENSORS]);

/* The metadata of o's file: keys and values in one allocation (*block, to
 * free with sae__free). step: room for the step's decimal. */
int sae__optimizer_metadata(const sae_optimizer *o, sae_st_kv **kv, size_t *n, void **block,
                            char step[24]);

#endif /* LIBSAE_CHECKPOINT_H */
