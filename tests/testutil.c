#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t next_u64(test_rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double test_uniform(test_rng *r) { return (double)(next_u64(r) >> 11) * 0x1.0p-53; }

double test_normal(test_rng *r)
{
    double u1 = 1.0 - test_uniform(r), u2 = test_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

float *test_gaussian(size_t n, size_t d, double scale, double offset, uint64_t seed)
{
    test_rng r = {seed};
    float *x = malloc(n * d * sizeof(float));
    ck_assert_ptr_nonnull(x);
    for (size_t k = 0; k < n * d; k++)
        x[k] = (float)(test_normal(&r) * scale + offset);
    return x;
}

float *test_sparse_data(size_t n, size_t d_in, size_t n_true, double active, uint64_t seed,
                        float *true_dirs)
{
    test_rng r = {seed};
    float *dirs = malloc(n_true * d_in * sizeof(float));
    float *x = calloc(n * d_in, sizeof(float));
    ck_assert(dirs && x);
    for (size_t k = 0; k < n_true; k++) {
        double s = 0.0;
        for (size_t j = 0; j < d_in; j++) {
            dirs[k * d_in + j] = (float)test_normal(&r);
            s += (double)dirs[k * d_in + j] * dirs[k * d_in + j];
        }
        for (size_t j = 0; j < d_in; j++)
            dirs[k * d_in + j] = (float)(dirs[k * d_in + j] / sqrt(s));
    }
    double p = active / (double)n_true;
    for (size_t t = 0; t < n; t++)
        for (size_t k = 0; k < n_true; k++)
            if (test_uniform(&r) < p) {
                double c = test_uniform(&r);
                for (size_t j = 0; j < d_in; j++)
                    x[t * d_in + j] += (float)(c * dirs[k * d_in + j]);
            }
    if (true_dirs)
        memcpy(true_dirs, dirs, n_true * d_in * sizeof(float));
    free(dirs);
    return x;
}

static const int every_tensor[TEST_N_TENSORS] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC,
                                                  SAE_THRESHOLD, SAE_W_SKIP, SAE_B_MAG,
                                                  SAE_R_MAG};

sae_model *test_random_model(int arch, double param, size_t d_in, size_t d_sae, uint64_t seed,
                             const double sd[4])
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create_arch(&m, d_in, d_sae, seed, arch, param), SAE_OK);
    const size_t rows[4] = {d_in, 1, d_sae, 1}, cols[4] = {d_sae, d_sae, d_in, d_in};
    const double offset[4] = {0.0, 0.0, 0.0, 0.2};
    for (int k = 0; k < 4; k++) {
        float *v = test_gaussian(rows[k], cols[k], sd[k], offset[k], seed + 1 + (uint64_t)k);
        ck_assert_int_eq(sae_model_set_tensor(m, every_tensor[k], v, rows[k] * cols[k]), SAE_OK);
        free(v);
    }
    return m;
}

sae_model *test_perturbed_model(int arch, double param, size_t d_in, size_t d_sae,
                                uint64_t seed)
{
    static const double sd[4] = {0.5, 0.2, 0.3, 0.3}; /* W_enc, b_enc, W_dec, b_dec */
    return test_random_model(arch, param, d_in, d_sae, seed, sd);
}

sae_model *test_arch_model(int arch, size_t d_in, size_t d_sae, uint64_t seed)
{
    static const double sd[4] = {0.3, 0.05, 0.3, 0.3};
    const double param = arch == SAE_ARCH_TOPK || arch == SAE_ARCH_BATCHTOPK ? 3.0
                         : arch == SAE_ARCH_JUMPRELU                       ? 0.05
                                                                           : 0.0;
    sae_model *m = test_random_model(arch, param, d_in, d_sae, seed, sd);
    if (arch == SAE_ARCH_BATCHTOPK) {
        sae_optimizer *o;
        float *x = test_gaussian(64, d_in, 1.0, 0.0, seed + 9);
        ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
        ck_assert_int_eq(sae_step(m, o, x, 64, NULL), SAE_OK);
        float thr;
        ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, &thr, 1), SAE_OK);
        ck_assert_float_gt(thr, 0.0f);
        sae_optimizer_free(o);
        free(x);
    }
    return m;
}

void test_trained_pair(size_t d_in, size_t d_sae, uint64_t seed, size_t steps, sae_model **m,
                       sae_optimizer **o)
{
    ck_assert_int_eq(sae_model_create(m, d_in, d_sae, seed), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(o, *m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(*o, SAE_OPT_LR, 1e-2), SAE_OK);
    float *x = test_gaussian(32, d_in, 1.0, 0.0, seed + 1);
    for (size_t s = 0; s < steps; s++)
        ck_assert_int_eq(sae_step(*m, *o, x, 32, NULL), SAE_OK);
    free(x);
}

void snapshot_take(model_snapshot *s, const sae_model *m)
{
    s->d_in = sae_model_d_in(m);
    s->d_sae = sae_model_d_sae(m);
    s->arch = sae_model_arch(m);
    s->k = sae_model_k(m);
    s->d_out = sae_model_d_out(m);
    s->kind = sae_model_kind(m);
    s->n_levels = sae_model_matryoshka_levels(m);
    memset(s->widths, 0, sizeof s->widths);
    if (s->n_levels)
        ck_assert_int_eq(sae_model_matryoshka_widths(m, s->widths, s->n_levels), SAE_OK);
    for (int k = 0; k < TEST_N_TENSORS; k++) {
        s->sizes[k] = sae_model_tensor_size(m, every_tensor[k]);
        s->tensors[k] = NULL;
        if (s->sizes[k] == 0)
            continue;
        s->tensors[k] = malloc(s->sizes[k] * sizeof(float));
        ck_assert_ptr_nonnull(s->tensors[k]);
        ck_assert_int_eq(sae_model_get_tensor(m, every_tensor[k], s->tensors[k], s->sizes[k]),
                         SAE_OK);
    }
}

bool snapshot_equal(const model_snapshot *s, const sae_model *m)
{
    model_snapshot now;
    snapshot_take(&now, m);
    bool same = now.d_in == s->d_in && now.d_sae == s->d_sae && now.arch == s->arch &&
                now.k == s->k && now.d_out == s->d_out && now.kind == s->kind &&
                now.n_levels == s->n_levels && memcmp(now.widths, s->widths, sizeof s->widths) == 0 &&
                memcmp(now.sizes, s->sizes, sizeof s->sizes) == 0;
    for (int k = 0; k < TEST_N_TENSORS && same; k++)
        same = s->sizes[k] == 0 ||
               memcmp(now.tensors[k], s->tensors[k], s->sizes[k] * sizeof(float)) == 0;
    snapshot_free(&now);
    return same;
}

void snapshot_free(model_snapshot *s)
{
    for (int k = 0; k < TEST_N_TENSORS; k++)
        free(s->tensors[k]);
}

void opt_snapshot_take(optimizer_snapshot *s, const sae_optimizer *o, size_t d_sae)
{
    for (int k = 0; k < TEST_MAX_OPTION; k++) {
        s->options[k] = 0.0;
        s->option_status[k] = sae_optimizer_get(o, k + 1, &s->options[k]);
    }
    for (int k = 0; k < 8; k++) /* the 0.1 options exist */
        ck_assert_int_eq(s->option_status[k], SAE_OK);
    s->steps = sae_optimizer_steps(o);
    s->d_sae = d_sae;
    s->since_fired = malloc(d_sae * sizeof(uint64_t));
    ck_assert_ptr_nonnull(s->since_fired);
    ck_assert_int_eq(sae_optimizer_tokens_since_fired(o, s->since_fired, d_sae), SAE_OK);
}

bool opt_snapshot_equal(const optimizer_snapshot *s, const sae_optimizer *o)
{
    optimizer_snapshot now;
    opt_snapshot_take(&now, o, s->d_sae);
    bool same = memcmp(now.options, s->options, sizeof s->options) == 0 &&
                memcmp(now.option_status, s->option_status, sizeof s->option_status) == 0 &&
                now.steps == s->steps &&
                memcmp(now.since_fired, s->since_fired, s->d_sae * sizeof(uint64_t)) == 0;
    opt_snapshot_free(&now);
    return same;
}

void opt_snapshot_free(optimizer_snapshot *s) { free(s->since_fired); }

int test_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
