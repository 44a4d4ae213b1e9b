/* Helpers shared by the Check suites: data, snapshots, and a main(). */
#ifndef SAE_TEST_UTIL_H
#define SAE_TEST_UTIL_H

#include <check.h>
#include <libsae/sae.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The library's version as the text it writes into files: "0.2.0". */
#define TEST_STR2(x) #x
#define TEST_STR(x) TEST_STR2(x)
#define TEST_VERSION_TEXT \
    TEST_STR(SAE_VERSION_MAJOR) "." TEST_STR(SAE_VERSION_MINOR) "." TEST_STR(SAE_VERSION_PATCH)

/* A small deterministic generator for test data (independent of the library's). */
typedef struct test_rng { uint64_t state; } test_rng;
double test_uniform(test_rng *r);                 /* [0, 1) */
double test_normal(test_rng *r);

/* malloc'ed n x d floats of N(0, 1) * scale + offset. */
float *test_gaussian(size_t n, size_t d, double scale, double offset, uint64_t seed);

/* Synthetic sparse data: n tokens in d_in, each a positive combination of
 * about `active` of n_true random unit directions with coefficients in (0, 1).
 * true_dirs (n_true x d_in) may be NULL. */
float *test_sparse_data(size_t n, size_t d_in, size_t n_true, double active, uint64_t seed,
                        float *true_dirs);

/* A model of architecture arch (param as sae_model_create_arch) with every
 * tensor random: W_enc, W_dec, b_enc and b_dec drawn from N(0, sd[k]^2), b_dec
 * shifted by 0.2, so biases matter and decoder rows have different norms. */
sae_model *test_random_model(int arch, double param, size_t d_in, size_t d_sae, uint64_t seed,
                             const double sd[4]);

/* A model of architecture arch with every tensor perturbed well away from
 * the init (test_random_model with sd 0.5 for W_enc, 0.2 for b_enc, 0.3 for
 * W_dec and b_dec), so that biases and decoder norms matter: the model of
 * the gradient and forward-pass tests. */
sae_model *test_perturbed_model(int arch, double param, size_t d_in, size_t d_sae,
                                uint64_t seed);

/* A random model (test_random_model, sd 0.3 for the weights and b_dec,
 * 0.05 for b_enc) of each architecture with typical parameters: k = 3 for
 * TopK and BatchTopK, thresholds 0.05 for JumpReLU. The BatchTopK model has
 * taken one step on Gaussian data, so that its inference threshold is set. */
sae_model *test_arch_model(int arch, size_t d_in, size_t d_sae, uint64_t seed);

/* A model (sae_model_create with seed) and its optimizer (lr 1e-2) after
 * `steps` steps on one batch of 32 tokens of N(0, 1) (seed + 1): moments,
 * counters and the step count are not zero. */
void test_trained_pair(size_t d_in, size_t d_sae, uint64_t seed, size_t steps, sae_model **m,
                       sae_optimizer **o);

/* Everything observable about a model, for "unchanged" checks: its shape,
 * architecture, kind, k, Matryoshka widths and every tensor, SAE_THRESHOLD
 * included (JumpReLU's thresholds, BatchTopK's threshold), and the families'
 * (W_skip, b_mag, r_mag). */
#define TEST_N_TENSORS 8
typedef struct model_snapshot {
    size_t d_in, d_sae, k;
    int arch;
    size_t d_out, n_levels, widths[64];
    int kind;
    size_t sizes[TEST_N_TENSORS];
    float *tensors[TEST_N_TENSORS]; /* NULL for a tensor of size 0 */
} model_snapshot;

void snapshot_take(model_snapshot *s, const sae_model *m);
bool snapshot_equal(const model_snapshot *s, const sae_model *m); /* bit for bit */
void snapshot_free(model_snapshot *s);

/* Everything observable about an optimizer. Options are read by number,
 * 1 .. TEST_MAX_OPTION; numbers that are not options are recorded as such. */
#define TEST_MAX_OPTION 64
typedef struct optimizer_snapshot {
    double options[TEST_MAX_OPTION];
    int option_status[TEST_MAX_OPTION];
    uint64_t steps;
    size_t d_sae;
    uint64_t *since_fired;
} optimizer_snapshot;

void opt_snapshot_take(optimizer_snapshot *s, const sae_optimizer *o, size_t d_sae);
bool opt_snapshot_equal(const optimizer_snapshot *s, const sae_optimizer *o);
void opt_snapshot_free(optimizer_snapshot *s);

/* Run one suite with CK_NORMAL output; returns the process exit status. */
int test_run_suite(Suite *s);

#define TEST_MAIN(make_suite) \
    int main(void) { return test_run_suite(make_suite()); }

#endif
