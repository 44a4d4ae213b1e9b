/*
 * Schedules: the lr warm-up and its linear and cosine decays, and the L1
 * warm-up, at chosen steps against numbers computed by hand; the validation
 * of the options; that sae_step applies exactly the values the queries report
 * (a twin stepped with those values set by hand ends up bit-identical, Adam
 * moments included); the behaviour past the total; and that training with
 * the recipe's schedules still learns.
 */
#include "../src/internal.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double pi = 3.14159265358979323846;

typedef struct pair {
    sae_model *m;
    sae_optimizer *o;
} pair;

static pair pair_create(size_t d_in, size_t d_sae, uint64_t seed)
{
    pair p;
    ck_assert_int_eq(sae_model_create(&p.m, d_in, d_sae, seed), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&p.o, p.m), SAE_OK);
    return p;
}

static void pair_free(pair *p)
{
    sae_optimizer_free(p->o);
    sae_model_free(p->m);
}

static void set(sae_optimizer *o, int option, double value)
{
    ck_assert_msg(sae_optimizer_set(o, option, value) == SAE_OK, "option %d = %g", option, value);
}

static void expect_lr(const sae_optimizer *o, uint64_t step, double want)
{
    double got = -1.0;
    ck_assert_int_eq(sae_optimizer_lr_at(o, step, &got), SAE_OK);
    ck_assert_msg(fabs(got - want) <= 1e-14 * fabs(want) + 1e-300,
                  "lr at step %llu: %.17g, want %.17g", (unsigned long long)step, got, want);
}

static void expect_l1(const sae_optimizer *o, uint64_t step, double want)
{
    double got = -1.0;
    ck_assert_int_eq(sae_optimizer_l1_coeff_at(o, step, &got), SAE_OK);
    ck_assert_msg(fabs(got - want) <= 1e-14 * fabs(want) + 1e-300,
                  "lambda at step %llu: %.17g, want %.17g", (unsigned long long)step, got, want);
}

START_TEST(new_options_default_to_off_and_are_validated)
{
    pair p = pair_create(3, 5, 1);
    const int opts[5] = {SAE_OPT_TOTAL_STEPS, SAE_OPT_L1_WARMUP_FRACTION, SAE_OPT_LR_WARMUP_STEPS,
                         SAE_OPT_LR_DECAY_FRACTION, SAE_OPT_LR_SCHEDULE};
    ck_assert_int_eq(SAE_OPT_TOTAL_STEPS, 9);
    ck_assert_int_eq(SAE_OPT_LR_SCHEDULE, 13);
    for (int k = 0; k < 5; k++) {
        double v = -1.0;
        ck_assert_int_eq(sae_optimizer_get(p.o, opts[k], &v), SAE_OK);
        ck_assert_double_eq(v, 0.0);
    }
    ck_assert_double_eq(SAE_LR_CONSTANT, 0.0);
    /* with everything off, every step gets the plain options */
    expect_lr(p.o, 1, 5e-5);
    expect_lr(p.o, 1000000, 5e-5);
    expect_l1(p.o, 1, 5.0);

    struct { int option; double value; int expect; } cases[] = {
        {SAE_OPT_TOTAL_STEPS, 1000, SAE_OK},        {SAE_OPT_TOTAL_STEPS, 0, SAE_OK},
        {SAE_OPT_TOTAL_STEPS, 9007199254740992.0, SAE_OK},
        {SAE_OPT_TOTAL_STEPS, 9007199254740994.0, SAE_E_INVALID_ARG},
        {SAE_OPT_TOTAL_STEPS, 10.5, SAE_E_INVALID_ARG}, {SAE_OPT_TOTAL_STEPS, -1, SAE_E_INVALID_ARG},
        {SAE_OPT_TOTAL_STEPS, NAN, SAE_E_NONFINITE}, {SAE_OPT_TOTAL_STEPS, INFINITY, SAE_E_NONFINITE},
        {SAE_OPT_L1_WARMUP_FRACTION, 0.05, SAE_OK}, {SAE_OPT_L1_WARMUP_FRACTION, 1.0, SAE_OK},
        {SAE_OPT_L1_WARMUP_FRACTION, 0.0, SAE_OK},
        {SAE_OPT_L1_WARMUP_FRACTION, 1.0000001, SAE_E_INVALID_ARG},
        {SAE_OPT_L1_WARMUP_FRACTION, -0.01, SAE_E_INVALID_ARG},
        {SAE_OPT_L1_WARMUP_FRACTION, NAN, SAE_E_NONFINITE},
        {SAE_OPT_LR_WARMUP_STEPS, 100, SAE_OK},     {SAE_OPT_LR_WARMUP_STEPS, 0, SAE_OK},
        {SAE_OPT_LR_WARMUP_STEPS, 0.5, SAE_E_INVALID_ARG},
        {SAE_OPT_LR_WARMUP_STEPS, -2, SAE_E_INVALID_ARG},
        {SAE_OPT_LR_WARMUP_STEPS, -INFINITY, SAE_E_NONFINITE},
        {SAE_OPT_LR_DECAY_FRACTION, 0.2, SAE_OK},   {SAE_OPT_LR_DECAY_FRACTION, 2.0, SAE_E_INVALID_ARG},
        {SAE_OPT_LR_DECAY_FRACTION, -0.5, SAE_E_INVALID_ARG},
        {SAE_OPT_LR_DECAY_FRACTION, INFINITY, SAE_E_NONFINITE},
        {SAE_OPT_LR_SCHEDULE, SAE_LR_LINEAR, SAE_OK}, {SAE_OPT_LR_SCHEDULE, SAE_LR_COSINE, SAE_OK},
        {SAE_OPT_LR_SCHEDULE, SAE_LR_CONSTANT, SAE_OK},
        {SAE_OPT_LR_SCHEDULE, 3, SAE_E_INVALID_ARG}, {SAE_OPT_LR_SCHEDULE, 1.5, SAE_E_INVALID_ARG},
        {SAE_OPT_LR_SCHEDULE, -1, SAE_E_INVALID_ARG}, {SAE_OPT_LR_SCHEDULE, NAN, SAE_E_NONFINITE},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        optimizer_snapshot before;
        opt_snapshot_take(&before, p.o, 5);
        int rc = sae_optimizer_set(p.o, cases[k].option, cases[k].value);
        ck_assert_msg(rc == cases[k].expect, "case %zu: option %d value %g gave %d", k,
                      cases[k].option, cases[k].value, rc);
        if (rc == SAE_OK) {
            double v;
            ck_assert_int_eq(sae_optimizer_get(p.o, cases[k].option, &v), SAE_OK);
            ck_assert_double_eq(v, cases[k].value);
        } else {
            ck_assert(opt_snapshot_equal(&before, p.o));
        }
        opt_snapshot_free(&before);
    }
    pair_free(&p);
}
END_TEST

/* Warm-up 100 steps, linear decay over the last 20% of 1000 steps. */
START_TEST(linear_schedule_at_chosen_steps)
{
    pair p = pair_create(3, 5, 1);
    set(p.o, SAE_OPT_LR, 1e-3);
    set(p.o, SAE_OPT_TOTAL_STEPS, 1000);
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 100);
    set(p.o, SAE_OPT_LR_DECAY_FRACTION, 0.2); /* D = 200: decay from step 800 */
    set(p.o, SAE_OPT_LR_SCHEDULE, SAE_LR_LINEAR);
    expect_lr(p.o, 1, 1e-5);        /* start: lr / W */
    expect_lr(p.o, 50, 5e-4);       /* half-way through the warm-up */
    expect_lr(p.o, 99, 9.9e-4);
    expect_lr(p.o, 100, 1e-3);      /* end of warm-up */
    expect_lr(p.o, 500, 1e-3);      /* middle */
    expect_lr(p.o, 800, 1e-3);      /* start of decay: (1000 - 800) / 200 = 1 */
    expect_lr(p.o, 801, 1e-3 * 199.0 / 200.0);
    expect_lr(p.o, 900, 5e-4);      /* half-way down */
    expect_lr(p.o, 999, 5e-6);      /* 1 / 200 */
    expect_lr(p.o, 1000, 0.0);      /* end */
    expect_lr(p.o, 1001, 0.0);      /* past the end: held */
    expect_lr(p.o, UINT64_MAX, 0.0);
    /* without a total the decay is off, the warm-up is not */
    set(p.o, SAE_OPT_TOTAL_STEPS, 0);
    expect_lr(p.o, 1, 1e-5);
    expect_lr(p.o, 999, 1e-3);
    expect_lr(p.o, 5000, 1e-3);
    /* D rounds to the nearest step: 0.2 * 7 = 1.4 -> 1 */
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 0);
    set(p.o, SAE_OPT_TOTAL_STEPS, 7);
    expect_lr(p.o, 6, 1e-3);
    expect_lr(p.o, 7, 0.0);
    /* a fraction that rounds to 0 steps: no decay, the final value is lr */
    set(p.o, SAE_OPT_LR_DECAY_FRACTION, 0.05); /* 0.35 -> 0 */
    expect_lr(p.o, 7, 1e-3);
    expect_lr(p.o, 8, 1e-3);
    /* the constant schedule ignores the decay fraction */
    set(p.o, SAE_OPT_LR_DECAY_FRACTION, 0.5);
    set(p.o, SAE_OPT_LR_SCHEDULE, SAE_LR_CONSTANT);
    expect_lr(p.o, 7, 1e-3);
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 4);
    expect_lr(p.o, 1, 2.5e-4);
    expect_lr(p.o, 3, 7.5e-4);
    expect_lr(p.o, 4, 1e-3);
    expect_lr(p.o, 100, 1e-3);
    pair_free(&p);
}
END_TEST

/* Warm-up 100 steps, then cosine to 0 over the remaining 900 of 1000. */
START_TEST(cosine_schedule_at_chosen_steps)
{
    pair p = pair_create(3, 5, 1);
    set(p.o, SAE_OPT_LR, 2e-3);
    set(p.o, SAE_OPT_TOTAL_STEPS, 1000);
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 100);
    set(p.o, SAE_OPT_LR_SCHEDULE, SAE_LR_COSINE);
    expect_lr(p.o, 1, 2e-5);
    expect_lr(p.o, 100, 2e-3);                                   /* end of warm-up: cos 0 */
    expect_lr(p.o, 325, 2e-3 * (1.0 + sqrt(0.5)) / 2.0);         /* a quarter: cos(pi/4) */
    expect_lr(p.o, 550, 1e-3);                                   /* middle: cos(pi/2) = 0 */
    expect_lr(p.o, 775, 2e-3 * (1.0 - sqrt(0.5)) / 2.0);         /* three quarters */
    expect_lr(p.o, 1000, 0.0);                                   /* end */
    expect_lr(p.o, 1001, 0.0);                                   /* held */
    /* no warm-up: the first step is already slightly below lr */
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 0);
    expect_lr(p.o, 1, 2e-3 * (1.0 + cos(pi / 1000.0)) / 2.0);
    expect_lr(p.o, 500, 1e-3);
    /* no total: cosine is off */
    set(p.o, SAE_OPT_TOTAL_STEPS, 0);
    expect_lr(p.o, 500, 2e-3);
    expect_lr(p.o, 5000, 2e-3);
    pair_free(&p);
}
END_TEST

/* lambda rises linearly over the first 5% of 1000 steps (50 steps). */
START_TEST(l1_warmup_at_chosen_steps)
{
    pair p = pair_create(3, 5, 1);
    set(p.o, SAE_OPT_L1_COEFF, 5.0);
    set(p.o, SAE_OPT_TOTAL_STEPS, 1000);
    set(p.o, SAE_OPT_L1_WARMUP_FRACTION, 0.05);
    expect_l1(p.o, 1, 0.1);     /* start: lambda / 50 */
    expect_l1(p.o, 25, 2.5);    /* middle of the warm-up */
    expect_l1(p.o, 49, 4.9);
    expect_l1(p.o, 50, 5.0);    /* end of warm-up */
    expect_l1(p.o, 51, 5.0);
    expect_l1(p.o, 1000, 5.0);  /* end */
    expect_l1(p.o, 1001, 5.0);  /* past the end: held */
    /* independent of the lr schedule */
    set(p.o, SAE_OPT_LR_SCHEDULE, SAE_LR_COSINE);
    expect_l1(p.o, 25, 2.5);
    /* no total, or a fraction that rounds to 0 steps: off */
    set(p.o, SAE_OPT_TOTAL_STEPS, 0);
    expect_l1(p.o, 1, 5.0);
    set(p.o, SAE_OPT_TOTAL_STEPS, 9);
    expect_l1(p.o, 1, 5.0); /* 0.05 * 9 = 0.45 -> 0 */
    set(p.o, SAE_OPT_TOTAL_STEPS, 10);
    expect_l1(p.o, 1, 5.0); /* 0.05 * 10 = 0.5 -> 1: full from step 1 */
    set(p.o, SAE_OPT_TOTAL_STEPS, 100);
    set(p.o, SAE_OPT_L1_WARMUP_FRACTION, 1.0);
    expect_l1(p.o, 1, 0.05);
    expect_l1(p.o, 100, 5.0);
    /* the lambda of every step scales with the option */
    set(p.o, SAE_OPT_L1_COEFF, 0.0);
    expect_l1(p.o, 50, 0.0);
    pair_free(&p);
}
END_TEST

START_TEST(contradicting_options_are_refused_where_used)
{
    pair p = pair_create(4, 6, 2);
    float *x = test_gaussian(8, 4, 1.0, 0.0, 3);
    double v = 123.0;
    /* each set succeeds; the combination is checked when used */
    set(p.o, SAE_OPT_TOTAL_STEPS, 100);
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 90);
    set(p.o, SAE_OPT_LR_DECAY_FRACTION, 0.2);
    set(p.o, SAE_OPT_LR_SCHEDULE, SAE_LR_LINEAR); /* 90 + 20 > 100 */
    model_snapshot ms;
    optimizer_snapshot os;
    snapshot_take(&ms, p.m);
    opt_snapshot_take(&os, p.o, 6);
    ck_assert_int_eq(sae_optimizer_lr_at(p.o, 1, &v), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_l1_coeff_at(p.o, 1, &v), SAE_E_INVALID_ARG);
    ck_assert_double_eq(v, 123.0);
    sae_losses l = {1, 2, 3, 4}, l_before = l;
    ck_assert_int_eq(sae_step(p.m, p.o, x, 8, &l), SAE_E_INVALID_ARG);
    ck_assert_mem_eq(&l, &l_before, sizeof l);
    ck_assert(snapshot_equal(&ms, p.m));
    ck_assert(opt_snapshot_equal(&os, p.o));
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 80); /* 80 + 20 = 100: allowed */
    ck_assert_int_eq(sae_optimizer_lr_at(p.o, 1, &v), SAE_OK);
    /* cosine needs at least one step after the warm-up */
    set(p.o, SAE_OPT_LR_SCHEDULE, SAE_LR_COSINE);
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 100);
    ck_assert_int_eq(sae_optimizer_lr_at(p.o, 1, &v), SAE_E_INVALID_ARG);
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 99);
    ck_assert_int_eq(sae_optimizer_lr_at(p.o, 1, &v), SAE_OK);
    /* constant: the warm-up must fit in the total */
    set(p.o, SAE_OPT_LR_SCHEDULE, SAE_LR_CONSTANT);
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 101);
    ck_assert_int_eq(sae_optimizer_lr_at(p.o, 1, &v), SAE_E_INVALID_ARG);
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 100);
    ck_assert_int_eq(sae_optimizer_lr_at(p.o, 1, &v), SAE_OK);
    /* with an unknown total anything goes */
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 1000);
    set(p.o, SAE_OPT_TOTAL_STEPS, 0);
    ck_assert_int_eq(sae_optimizer_lr_at(p.o, 1, &v), SAE_OK);
    ck_assert_double_eq_tol(v, 5e-5 / 1000, 1e-20);
    ck_assert_int_eq(sae_step(p.m, p.o, x, 8, &l), SAE_OK);

    /* bad arguments */
    v = 123.0;
    ck_assert_int_eq(sae_optimizer_lr_at(p.o, 0, &v), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_l1_coeff_at(p.o, 0, &v), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_lr_at(NULL, 1, &v), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_l1_coeff_at(NULL, 1, &v), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_lr_at(p.o, 1, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_l1_coeff_at(p.o, 1, NULL), SAE_E_INVALID_ARG);
    ck_assert_double_eq(v, 123.0);
    snapshot_free(&ms);
    opt_snapshot_free(&os);
    free(x);
    pair_free(&p);
}
END_TEST

static bool moments_equal(const sae_optimizer *a, const sae_optimizer *b)
{
    size_t bytes = a->lay.total * sizeof(float);
    return memcmp(a->m1, b->m1, bytes) == 0 && memcmp(a->m2, b->m2, bytes) == 0;
}

/* Twin A runs the schedules; twin B has none, and before each step gets A's
 * scheduled lr and lambda for that step set by hand. Both must stay
 * bit-identical (parameters, Adam moments, reported losses), which shows that
 * sae_step applies exactly what the queries report; A's loss must be l2 plus
 * the scheduled lambda times l1. */
static void check_step_uses_schedule(int schedule, int kernel)
{
    const size_t d_in = 6, d_sae = 12, n = 16;
    const uint64_t total = 20;
    pair a = pair_create(d_in, d_sae, 7), b = pair_create(d_in, d_sae, 7);
    sae_optimizer *both[2] = {a.o, b.o};
    for (int k = 0; k < 2; k++) {
        set(both[k], SAE_OPT_LR, 1e-2);
        set(both[k], SAE_OPT_L1_COEFF, 0.5);
        set(both[k], SAE_OPT_KERNEL, kernel);
    }
    set(a.o, SAE_OPT_TOTAL_STEPS, (double)total);
    set(a.o, SAE_OPT_LR_WARMUP_STEPS, 4);
    set(a.o, SAE_OPT_LR_DECAY_FRACTION, 0.3);
    set(a.o, SAE_OPT_LR_SCHEDULE, schedule);
    set(a.o, SAE_OPT_L1_WARMUP_FRACTION, 0.25);
    float *data = test_sparse_data(n * total, d_in, 8, 2.0, 11, NULL);
    /* steps 1 .. total - 1 (step `total` has lr 0, which cannot be set by hand) */
    for (uint64_t t = 1; t < total; t++) {
        double lr, lambda;
        ck_assert_int_eq(sae_optimizer_lr_at(a.o, t, &lr), SAE_OK);
        ck_assert_int_eq(sae_optimizer_l1_coeff_at(a.o, t, &lambda), SAE_OK);
        ck_assert_double_gt(lr, 0.0);
        set(b.o, SAE_OPT_LR, lr);
        set(b.o, SAE_OPT_L1_COEFF, lambda);
        const float *x = data + (t - 1) * n * d_in;
        sae_losses la, lb;
        ck_assert_int_eq(sae_step(a.m, a.o, x, n, &la), SAE_OK);
        ck_assert_int_eq(sae_step(b.m, b.o, x, n, &lb), SAE_OK);
        ck_assert_mem_eq(&la, &lb, sizeof la);
        ck_assert(la.loss == la.l2 + lambda * la.l1);
        ck_assert_mem_eq(a.m->params, b.m->params, a.m->lay.total * sizeof(float));
        ck_assert(moments_equal(a.o, b.o));
    }
    /* the last step and one past it: lr 0, so no parameter changes value, but
     * the moments, the step count and the activity counters move on */
    for (uint64_t t = total; t <= total + 1; t++) {
        double lr;
        ck_assert_int_eq(sae_optimizer_lr_at(a.o, t, &lr), SAE_OK);
        ck_assert_double_eq(lr, 0.0);
        size_t count = a.m->lay.total;
        float *before = malloc(count * sizeof(float)), *m1 = malloc(count * sizeof(float));
        memcpy(before, a.m->params, count * sizeof(float));
        memcpy(m1, a.o->m1, count * sizeof(float));
        sae_losses la;
        ck_assert_int_eq(sae_step(a.m, a.o, data, n, &la), SAE_OK);
        ck_assert_uint_eq(sae_optimizer_steps(a.o), t);
        for (size_t k = 0; k < count; k++)
            ck_assert_msg(a.m->params[k] == before[k], "parameter %zu moved at lr 0", k);
        ck_assert(memcmp(m1, a.o->m1, count * sizeof(float)) != 0);
        ck_assert(la.loss == la.l2 + 0.5 * la.l1);
        free(before);
        free(m1);
    }
    free(data);
    pair_free(&a);
    pair_free(&b);
}

START_TEST(step_applies_exactly_the_queried_values)
{
    check_step_uses_schedule(SAE_LR_LINEAR, SAE_KERNEL_DENSE);
    check_step_uses_schedule(SAE_LR_COSINE, SAE_KERNEL_SPARSE);
    check_step_uses_schedule(SAE_LR_LINEAR, SAE_KERNEL_AUTO);
}
END_TEST

/* A learning test like test_training.c's (smaller, so that its valgrind run
 * stays short), with the recipe's schedules: lambda warm-up over 5%, lr
 * warm-up, then linear decay over the last 20% (or cosine). The schedules
 * must not get in the way of learning. */
static void train_with_schedule(int schedule)
{
    const size_t d_in = 16, d_sae = 32, n_true = 8, n_data = 4096, batch = 64, steps = 400;
    const double lambda = 0.1;
    float *data = test_sparse_data(n_data, d_in, n_true, 2.0, 17, NULL);
    pair p = pair_create(d_in, d_sae, 1);
    set(p.o, SAE_OPT_LR, 1e-2);
    set(p.o, SAE_OPT_L1_COEFF, lambda);
    set(p.o, SAE_OPT_TOTAL_STEPS, (double)steps);
    set(p.o, SAE_OPT_L1_WARMUP_FRACTION, 0.05);
    set(p.o, SAE_OPT_LR_WARMUP_STEPS, 20);
    set(p.o, SAE_OPT_LR_DECAY_FRACTION, 0.2);
    set(p.o, SAE_OPT_LR_SCHEDULE, schedule);
    sae_losses start, end, first;
    ck_assert_int_eq(sae_loss(p.m, data, 1024, lambda, &start), SAE_OK);
    for (size_t s = 0; s < steps; s++) {
        const float *x = data + (s * batch % n_data) * d_in;
        sae_losses l;
        ck_assert_int_eq(sae_step(p.m, p.o, x, batch, &l), SAE_OK);
        if (s == 0)
            first = l;
    }
    /* the first step's reported loss used lambda / 20 (5% of 400 steps) */
    double lambda1;
    ck_assert_int_eq(sae_optimizer_l1_coeff_at(p.o, 1, &lambda1), SAE_OK);
    ck_assert_double_eq_tol(lambda1, lambda / 20.0, 1e-17);
    ck_assert(first.loss == first.l2 + lambda1 * first.l1);
    ck_assert_int_eq(sae_loss(p.m, data, 1024, lambda, &end), SAE_OK);
    double fvu;
    ck_assert_int_eq(sae_fvu(p.m, data, 1024, &fvu), SAE_OK);
    printf("schedule %d: loss %.4f -> %.4f, l0 %.1f -> %.1f (d_sae %zu), fvu %.3f\n", schedule,
           start.loss, end.loss, start.l0, end.l0, d_sae, fvu);
    ck_assert_double_lt(end.loss, 0.3 * start.loss);
    ck_assert_double_lt(end.l0, d_sae / 4.0);
    ck_assert_double_lt(fvu, 0.1);
    free(data);
    pair_free(&p);
}

START_TEST(training_with_schedules_learns)
{
    train_with_schedule(SAE_LR_LINEAR);
    train_with_schedule(SAE_LR_COSINE);
}
END_TEST

static Suite *schedule_suite(void)
{
    Suite *s = suite_create("schedule");
    TCase *tc = tcase_create("values");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, new_options_default_to_off_and_are_validated);
    tcase_add_test(tc, linear_schedule_at_chosen_steps);
    tcase_add_test(tc, cosine_schedule_at_chosen_steps);
    tcase_add_test(tc, l1_warmup_at_chosen_steps);
    tcase_add_test(tc, contradicting_options_are_refused_where_used);
    tcase_add_test(tc, step_applies_exactly_the_queried_values);
    suite_add_tcase(s, tc);
    TCase *learn = tcase_create("learning");
    tcase_set_timeout(learn, 300);
    tcase_add_test(learn, training_with_schedules_learns);
    suite_add_tcase(s, learn);
    return s;
}

TEST_MAIN(schedule_suite)
