/* The checkpoint loaders' fuzz harness (fuzz_load.c), shared with replay.c. */
#ifndef SAE_FUZZ_LOAD_H
#define SAE_FUZZ_LOAD_H

#include <libsae/sae.h>
#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry point: runs data through every loader (see fuzz_load.c). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Create (once) the scratch directories: checkpoint directories holding valid
 * 3 x 5 weights of each architecture (k = 2; JumpReLU thresholds 0.5); returns
 * the ReLU one's path. Removed at exit. */
const char *fuzz_setup(void);

/* The 3 x 5 models the optimizer inputs are loaded for: ReLU (TopK and
 * BatchTopK have its layout) and JumpReLU. */
const sae_model *fuzz_shape_model(void);
const sae_model *fuzz_jumprelu_shape_model(void);

/* sae_model_load of the scratch checkpoint directory of architecture arch
 * (SAE_ARCH_*) with data as its cfg.json. */
int fuzz_load_with_config(int arch, const uint8_t *data, size_t size);

#endif
