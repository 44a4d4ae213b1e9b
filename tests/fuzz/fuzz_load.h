/* The checkpoint loaders' fuzz harness (fuzz_load.c), shared with replay.c. */
#ifndef SAE_FUZZ_LOAD_H
#define SAE_FUZZ_LOAD_H

#include <libsae/sae.h>
#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry point: runs data through every loader (see fuzz_load.c). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Create (once) the scratch directory: a checkpoint directory holding valid
 * 3 x 5 weights, whose path is returned. Removed at exit. */
const char *fuzz_setup(void);

/* The 3 x 5 model the optimizer inputs are loaded for. */
const sae_model *fuzz_shape_model(void);

/* sae_model_load of the scratch checkpoint directory with data as cfg.json. */
int fuzz_load_with_config(const uint8_t *data, size_t size);

#endif
