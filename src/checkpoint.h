/*
 * Checkpoints, in pieces (not installed):
 *
 *   numtext.c         numbers as text, exactly and whatever the locale
 *   saelens_config.c  SAELens's cfg.json: written beside a model, checked on load
 *   model_file.c      what a model file holds, and its loader
 *   optimizer_file.c  what an optimizer file holds, and its loader
 *   checkpoint.c      the public save/load functions over buffers, files and
 *                     directories, one body for models and optimizers
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

/* The architecture SAELens is told: BatchTopK is a JumpReLU SAE to it. */
int sae__saelens_arch(int arch);

/* ---- SAELens's cfg.json (saelens_config.c) --------------------------------------- */

#define SAE_CONFIG_FILE "cfg.json"

/* What a cfg.json says about the SAE, as SAELens would build it. */
typedef struct sae_saelens_config {
    uint64_t d_in, d_sae; /* 0: not given */
    int arch;             /* SAE_ARCH_RELU ("standard", also when absent), _TOPK or
                             _JUMPRELU; -1: there is no cfg.json */
    uint64_t k;           /* TopK: k (always given) */
} sae_saelens_config;

/* Write m's cfg.json to sink. */
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

/* Load from src: the model (cfg: what a cfg.json beside it said, or NULL),
 * the optimizer for models shaped like m. On error *out is untouched and the
 * detail says what in the file was wrong. */
int sae__model_file_load(const sae_st_source *src, const sae_saelens_config *cfg,
                         sae_model **out);
int sae__optimizer_file_load(const sae_st_source *src, const sae_model *m, sae_optimizer **out);

#endif /* LIBSAE_CHECKPOINT_H */
