/* The checkpoint tests' shared side (checkpoint_util.c): files and
 * directories, an independent safetensors reader and writer, trained models
 * and their saved bytes, and running this test program again as a child. */
#ifndef SAE_TEST_CHECKPOINT_UTIL_H
#define SAE_TEST_CHECKPOINT_UTIL_H

#include "../src/internal.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A malloc'ed byte string. */
typedef struct bytes {
    unsigned char *p;
    size_t len;
} bytes;

/* The architectures every checkpoint test runs over, with the names their
 * files carry (libsae_architecture). */
struct arch_case {
    int arch;
    const char *name;
};
#define N_ARCH_CASES 4
extern const struct arch_case arch_cases[N_ARCH_CASES];

/* This program's path, for run_self: main() sets it with realpath(argv[0]). */
extern char self_exe[PATH_MAX];

/* A new directory under $TMPDIR (or /tmp), malloc'ed path. */
char *make_tmpdir(void);

/* "dir/name", malloc'ed. */
char *join(const char *dir, const char *name);

/* rm -r path. */
void remove_tree(const char *path);

/* Entries in dir other than . and .., or -1 (no Check calls: children use it). */
int count_entries(const char *dir);

/* A whole file, and writing one (failing the test on error). */
bytes read_file(const char *path);

void write_file(const char *path, const void *data, size_t len);
bool same_bytes(bytes a, bytes b);

/* An independent safetensors writer: the JSON header as given, unpadded,
 * then the data. */
bytes st_build(const char *header, const void *data, size_t data_len);

/* ... and an independent reader: the header text of b (malloc'ed) and where
 * the data starts. */
char *st_header(bytes b, size_t *data_start);

/* The data of tensor `name` in a header written by libsae (compact JSON). */
const unsigned char *st_tensor(bytes b, const char *name, const char *dtype, size_t *len);

/* A copy of b with the first `from` in its header replaced by `to`. */
bytes st_edit(bytes b, const char *from, const char *to);

/* Little-endian float32 at p. */
float le_float(const unsigned char *p);
void put_le_float(unsigned char *p, float f);

/* A model with distinct, nonzero values in every tensor (biases too). */
sae_model *trained_model(size_t d_in, size_t d_sae, uint64_t seed);

/* What sae_model_save_buffer / sae_optimizer_save_buffer write. */
bytes model_bytes(const sae_model *m);
bytes optimizer_bytes(const sae_optimizer *o);

/* Bit-for-bit equality of the architecture and every tensor, JumpReLU's log
 * thresholds included (no Check calls: child processes use it). */
bool models_equal(const sae_model *a, const sae_model *b);

/* A trained model of architecture arch (k = 2; JumpReLU thresholds from 0.5
 * and a wide band, so that they move; BatchTopK's threshold set by training). */
sae_model *trained_arch_model(int arch, size_t d_in, size_t d_sae, uint64_t seed);

/* The value of string metadata `key` in header text h (malloc'ed), or NULL.
 * libsae writes its values without escapes. */
char *meta_value(const char *h, const char *key);

/* A copy of b without its "__metadata__" (as a file from SAELens). */
bytes st_drop_metadata(bytes b);

/* Run this test program again as a new process (natively, even when this one
 * runs under valgrind) with the given arguments; returns its wait status.
 * Child modes are dispatched in main(). */
int run_self(const char *mode, const char *a1, const char *a2, const char *a3);

/* Fail the test unless a child's wait status is exit 0. */
void expect_exit0(int status);

/* A model of arch_cases[c] with fixed parameters (BatchTopK's threshold
 * set to 0.375), the base of the per-architecture file edits. */
sae_model *edit_base_model(size_t c);

#endif
