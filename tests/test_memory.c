/*
 * Memory: every allocation site fails cleanly (SAE_E_NOMEM, nothing leaked,
 * nothing changed), and a step at d_in = 768, d_sae = 10000 allocates nothing
 * like the 6 GB the per-token (d_sae x d_in) L1 tensor would need.
 * Uses the test build's allocation hooks.
 */
#include "../src/internal.h"
#include "nomem.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fixture {
    sae_model *m;
    sae_optimizer *o;
    float *x;
    size_t n;
    model_snapshot ms;
    sae_model *made_model;
    sae_optimizer *made_opt;
    float out[64 * 32];
} fixture;

static int call_model_create(void *ctx)
{
    fixture *fx = ctx;
    fx->made_model = (sae_model *)fx; /* must come back NULL on failure */
    int rc = sae_model_create(&fx->made_model, 8, 32, 1);
    ck_assert(rc == SAE_OK || fx->made_model == NULL);
    return rc;
}

static int call_optimizer_create(void *ctx)
{
    fixture *fx = ctx;
    fx->made_opt = (sae_optimizer *)fx;
    int rc = sae_optimizer_create(&fx->made_opt, fx->m);
    ck_assert(rc == SAE_OK || fx->made_opt == NULL);
    return rc;
}

static int call_encode(void *ctx)
{
    fixture *fx = ctx;
    return sae_encode(fx->m, fx->x, fx->n, fx->out);
}

static int call_loss(void *ctx)
{
    fixture *fx = ctx;
    sae_losses l;
    return sae_loss(fx->m, fx->x, fx->n, 1.0, &l);
}

static int call_fvu(void *ctx)
{
    fixture *fx = ctx;
    double v;
    return sae_fvu(fx->m, fx->x, fx->n, &v);
}

static int call_step(void *ctx)
{
    fixture *fx = ctx;
    return sae_step(fx->m, fx->o, fx->x, fx->n, NULL);
}

static void model_unchanged(void *ctx)
{
    fixture *fx = ctx;
    ck_assert(snapshot_equal(&fx->ms, fx->m));
    ck_assert_uint_eq(sae_optimizer_steps(fx->o), 0);
}

START_TEST(every_allocation_failure_is_clean)
{
    fixture fx;
    memset(&fx, 0, sizeof fx);
    fx.n = 64;
    fx.x = test_gaussian(fx.n, 8, 1.0, 0.0, 1);
    size_t base = sae__test_bytes_live;

    ck_assert_int_ge(nomem_fail_each_allocation(call_model_create, &fx, NULL), 2);
    fx.m = fx.made_model;
    ck_assert_int_ge(nomem_fail_each_allocation(call_optimizer_create, &fx, NULL), 4);
    fx.o = fx.made_opt;
    snapshot_take(&fx.ms, fx.m);
    ck_assert_int_ge(nomem_fail_each_allocation(call_encode, &fx, NULL), 1);
    ck_assert_int_ge(nomem_fail_each_allocation(call_loss, &fx, NULL), 4);
    ck_assert_int_ge(nomem_fail_each_allocation(call_fvu, &fx, NULL), 5);
    /* the first step allocates the workspace */
    ck_assert_int_ge(nomem_fail_each_allocation(call_step, &fx, model_unchanged), 9);
    /* a larger batch grows it; the smaller buffers stay valid if that fails */
    free(fx.x);
    fx.n = 2 * SAE_BLOCK_TOKENS;
    fx.x = test_gaussian(fx.n, 8, 1.0, 0.0, 2);
    snapshot_free(&fx.ms);
    snapshot_take(&fx.ms, fx.m);
    for (long k = 0; k < 4; k++) {
        sae__test_fail_countdown = k;
        ck_assert_int_eq(call_step(&fx), SAE_E_NOMEM);
        sae__test_fail_countdown = -1;
        ck_assert(snapshot_equal(&fx.ms, fx.m));
        ck_assert_uint_eq(sae_optimizer_steps(fx.o), 1);
    }
    ck_assert_int_eq(call_step(&fx), SAE_OK);
    /* steps of the same or a smaller size allocate nothing at all */
    size_t calls = sae__test_alloc_calls;
    ck_assert_int_eq(call_step(&fx), SAE_OK);
    fx.n = 10;
    ck_assert_int_eq(call_step(&fx), SAE_OK);
    ck_assert_uint_eq(sae__test_alloc_calls, calls);

    snapshot_free(&fx.ms);
    sae_optimizer_free(fx.o);
    sae_model_free(fx.m);
    free(fx.x);
    ck_assert_uint_eq(sae__test_bytes_live, base);
}
END_TEST

/* At d_in = 768, d_sae = 10000 and 200 tokens, materialising f_ti * W_dec[i,:]
 * would take 200 * 10000 * 768 * 4 bytes = 6.1 GB. The library needs the
 * parameters, gradients and two Adam moments (4 x 30.7M floats... = 246 MB) plus
 * O(n (d_in + d_sae)) of workspace. */
START_TEST(step_memory_is_linear_not_cubic)
{
    const size_t d_in = 768, d_sae = 10000, n = 200;
    size_t base = sae__test_bytes_live;
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 3);
    sae__test_bytes_peak = sae__test_bytes_live;
    size_t before_step = sae__test_bytes_live;
    sae_losses l;
    ck_assert_int_eq(sae_step(m, o, x, n, &l), SAE_OK);
    size_t step_bytes = sae__test_bytes_peak - before_step;
    size_t total = sae__test_bytes_peak - base;
    double params_bytes = 4.0 * (2.0 * d_in * d_sae + d_in + d_sae);
    double naive = (double)n * d_sae * d_in * sizeof(float);
    double workspace_bound = 4.0 * (4.0 * n * (d_in + d_sae) + 8.0 * (d_in + d_sae)) + 4096;
    printf("step workspace %.1f MB, total %.1f MB (parameters %.1f MB), naive L1 tensor %.1f GB\n",
           step_bytes / 1e6, total / 1e6, params_bytes / 1e6, naive / 1e9);
    ck_assert_double_le(step_bytes, workspace_bound);
    ck_assert_double_le(total, 4.0 * params_bytes + workspace_bound);
    ck_assert_double_lt(total, naive / 20);
    free(x);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

static Suite *memory_suite(void)
{
    Suite *s = suite_create("memory");
    TCase *tc = tcase_create("nomem");
    tcase_add_test(tc, every_allocation_failure_is_clean);
    suite_add_tcase(s, tc);
    TCase *big = tcase_create("large");
    tcase_set_timeout(big, 300);
    tcase_add_test(big, step_memory_is_linear_not_cubic);
    suite_add_tcase(s, big);
    return s;
}

TEST_MAIN(memory_suite)
