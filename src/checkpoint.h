/*
 * Checkpoints, in pieces (not installed):
 *
 *   numtext.c         numbers as text, exactly and whatever the locale
 *   saelens_config.c  SAELens's cfg.json: written beside a model, checked on load
 *   model_file.c      what a model file holds, and its loader
 *   optimizer_file.c  what an optimizer file holds, and its loader
 *   checkpoint.c      the public save/load functions over buffers, files and
 *                     directories, one body for models and optimizers
 *   collective.c      the collective saves of distributed runs (each rank
 *                     writes its slices of the same files)
 *
 * The container is safetensors (safetensors.c), atomic writing fileio.c.
 */
#ifndef LIBSAE_CHECKPOINT_H
#define LIBSAE_CHECKPOINT_H

#include "internal.h"
#include "safetensors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- numbers as text (numtext.c) ------------------------------------------------
 * Written by hand: printf's and strtod's behaviour depends on the locale. */

/* v in decimal, without sign or leading zeros. */
#define SAE_DECIMAL_BYTES 21
void sae__format_decimal(uint64_t v, char out[SAE_DECIMAL_BYTES]);

/* s[0..len) as such a decimal, at most max; false otherwise. */
bool sae__parse_decimal(const char *s, size_t len, uint64_t max, uint64_t *out);

/* v exactly, as C99 "%a" and Python's float.hex() write it:
 * "0x1.<13 hex digits>p<exp>", "0x0.<13 hex digits>p-1022" (subnormal) or
 * "0x0.0p+0", with a leading '-' if negative. */
#define SAE_HEX_DOUBLE_BYTES 32
void sae__format_hex_double(double v, char out[SAE_HEX_DOUBLE_BYTES]);

/* s[0..len) in exactly that form; false otherwise. */
bool sae__parse_hex_double(const char *s, size_t len, double *out);

/* s[0..n) as n lower-case hex digits (n <= 16), most significant first. */
bool sae__parse_hex(const char *s, size_t n, uint64_t *out);

/* ---- architectures in files (model_file.c) ---------------------------------------- */

/* The name of a libsae architecture in files: SAELens's "architecture"
 * ("standard", "topk", "jumprelu") and libsae's own "batchtopk". */
const char *sae__arch_name(int arch);

/* The architecture called name[0..len), or -1. */
int sae__arch_by_name(const char *name, size_t len);

/* The architecture SAELens is told: BatchTopK and Matryoshka are JumpReLU SAEs
 * to it. */
int sae__saelens_arch(int arch);

/* cfg.json's "architecture" of a model of arch and kind (SAE_KIND_*):
 * "standard", "gated", "jumprelu", ..., "transcoder", "skip_transcoder",
 * "jumprelu_transcoder", "jumprelu_skip_transcoder", and libsae's
 * "topk_transcoder" / "topk_skip_transcoder". */
const char *sae__saelens_name(int arch, int kind);

/* The architecture (SAE_ARCH_*) and *kind of a cfg.json "architecture"
 * name[0..len) (sae__saelens_name's, libsae's own, "batchtopk" and
 * "matryoshka_batchtopk"), or -1. */
int sae__saelens_by_name(const char *name, size_t len, int *kind);

/* ---- SAELens's cfg.json (saelens_config.c) --------------------------------------- */

#define SAE_CONFIG_FILE "cfg.json"
#define SAE_WEIGHTS_FILE "sae_weights.safetensors"
#define SAE_OPTIMIZER_FILE "optimizer.safetensors"

/* What a cfg.json says about the SAE, as SAELens would build it. */
typedef struct sae_saelens_config {
    uint64_t d_in, d_sae; /* 0: not given */
    uint64_t d_out;       /* transcoders' "d_out"; 0: not given */
    int kind;             /* SAE_KIND_*: "transcoder" etc. are transcoders */
    int arch;             /* SAE_ARCH_RELU ("standard", also when absent), _TOPK,
                             _JUMPRELU, or the training checkpoints' _BATCHTOPK
                             ("batchtopk") and _MATRYOSHKA ("matryoshka_batchtopk");
                             -1: there is no cfg.json */
    uint64_t k;           /* TopK, BatchTopK, Matryoshka: k (always given) */
    bool rescale;         /* TopK family: rescale_acts_by_decoder_norm, folded at load */
    size_t n_widths;      /* Matryoshka: matryoshka_widths[0..n_widths) */
    size_t widths[SAE_MAX_LEVELS];
} sae_saelens_config;

/* Write m's cfg.json to sink (a shard: the whole model's d_sae). */
int sae__config_write(const sae_model *m, const sae_st_sink *sink);

/* Read and check dir/cfg.json into *cfg (cfg->arch -1 if there is none).
 * SAE_E_FORMAT (detail: the key and why), SAE_E_IO, SAE_E_NOMEM. */
int sae__config_read(const char *dir, sae_saelens_config *cfg);

/* ---- the two file layouts (model_file.c, optimizer_file.c) ------------------------ */

/* Encode the object to sink, or with size non-NULL only measure it into
 * *size (sink unused). SAE_E_INVALID_ARG if the file would exceed what
 * safetensors allows; SAE_E_NOMEM; the sink's errors. */
int sae__model_file_encode(const sae_model *m, const sae_st_sink *sink, size_t *size);
int sae__optimizer_file_encode(const sae_optimizer *o, const sae_st_sink *sink, size_t *size);

/* Everything a model file is made of. Points into itself: not to be copied.
 * The shapes are the whole model's; for a shard, the data are its slices
 * (see collective.c) and the JumpReLU log thresholds' hex digits are left
 * to be placed (hex_floats NULL). */
enum { SAE_MODEL_MAX_TENSORS = 7, SAE_MODEL_MAX_META = 8, SAE_OPT_MAX_TENSORS = 19 };
typedef struct sae_model_contents {
    sae_st_out t[SAE_MODEL_MAX_TENSORS];
    size_t n_t;
    sae_st_kv meta[SAE_MODEL_MAX_META];
    size_t n_meta;
    char k_text[SAE_DECIMAL_BYTES];
    char threshold_text[SAE_HEX_DOUBLE_BYTES];
    char widths_text[SAE_MAX_LEVELS * SAE_DECIMAL_BYTES]; /* Matryoshka: "w1,w2,..." */
    float saelens_threshold; /* BatchTopK: the threshold SAELens gets */
} sae_model_contents;

void sae__model_contents(const sae_model *m, sae_model_contents *c);

/* The tensors of o's file (shapes of the whole model; a shard's data are its
 * slices); returns their count. */
size_t sae__optimizer_tensors(const sae_optimizer *o, sae_st_out t[SAE_OPT_MAX_TENSORS]);

/* The metadata of o's file: keys and values in one allocation (*block, to
 * free with sae__free). step: room for the step's decimal. */
int sae__optimizer_metadata(const sae_optimizer *o, sae_st_kv **kv, size_t *n, void **block,
                            char step[SAE_DECIMAL_BYTES]);

/* Load from src: the model (cfg: what a cfg.json beside it said, or NULL),
 * or with end > 0 its features [begin, end) as a shard; the optimizer for
 * models shaped like m (a shard's: its features' part). On error *out is
 * untouched and the detail says what in the file was wrong. */
int sae__model_file_load(const sae_st_source *src, const sae_saelens_config *cfg,
                         size_t begin, size_t end, sae_model **out);
int sae__optimizer_file_load(const sae_st_source *src, const sae_model *m, sae_optimizer **out);

/* A float tensor whose first axis (or, with columns, second axis) is the
 * features: features [begin, end) of it into dst (transposed with columns,
 * as W_enc is kept); all of it when end is 0. */
int sae__read_f32_part(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                       float *dst, bool columns, size_t begin, size_t end);

#endif /* LIBSAE_CHECKPOINT_H */
