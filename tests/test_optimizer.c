/* The optimizer: options, Adam and clipping against a hand-computed step in
 * double precision, feature activity, and every bad input to sae_step. */
#include "../src/internal.h"
#include "reference.h"
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

START_TEST(defaults_follow_the_recipe)
{
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, 3, 5, 1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    double v;
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_LR, &v), SAE_OK);
    ck_assert_double_eq(v, 5e-5);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_BETA1, &v), SAE_OK);
    ck_assert_double_eq(v, 0.9);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_BETA2, &v), SAE_OK);
    ck_assert_double_eq(v, 0.999);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_EPS, &v), SAE_OK);
    ck_assert_double_eq(v, 1e-8);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_L1_COEFF, &v), SAE_OK);
    ck_assert_double_eq(v, 5.0);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_GRAD_CLIP, &v), SAE_OK);
    ck_assert_double_eq(v, 1.0);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_THREADS, &v), SAE_OK);
    ck_assert_double_eq(v, 0.0);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_KERNEL, &v), SAE_OK);
    ck_assert_double_eq(v, SAE_KERNEL_AUTO);
    ck_assert_uint_eq(sae_optimizer_steps(o), 0);
    ck_assert_uint_eq(sae_optimizer_steps(NULL), 0);
    sae_optimizer_free(o);
    sae_optimizer_free(NULL);
    sae_model_free(m);
}
END_TEST

START_TEST(options_are_validated)
{
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, 3, 5, 1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    struct { int option; double value; int expect; } cases[] = {
        {SAE_OPT_LR, 1e-3, SAE_OK},           {SAE_OPT_LR, 0.0, SAE_E_INVALID_ARG},
        {SAE_OPT_LR, -1e-3, SAE_E_INVALID_ARG}, {SAE_OPT_LR, NAN, SAE_E_NONFINITE},
        {SAE_OPT_LR, INFINITY, SAE_E_NONFINITE},
        {SAE_OPT_BETA1, 0.0, SAE_OK},         {SAE_OPT_BETA1, 0.5, SAE_OK},
        {SAE_OPT_BETA1, 1.0, SAE_E_INVALID_ARG}, {SAE_OPT_BETA1, -0.1, SAE_E_INVALID_ARG},
        {SAE_OPT_BETA2, 0.99, SAE_OK},        {SAE_OPT_BETA2, 1.0, SAE_E_INVALID_ARG},
        {SAE_OPT_BETA2, -INFINITY, SAE_E_NONFINITE},
        {SAE_OPT_EPS, 1e-6, SAE_OK},          {SAE_OPT_EPS, 0.0, SAE_E_INVALID_ARG},
        {SAE_OPT_L1_COEFF, 0.0, SAE_OK},      {SAE_OPT_L1_COEFF, -1.0, SAE_E_INVALID_ARG},
        {SAE_OPT_L1_COEFF, NAN, SAE_E_NONFINITE},
        {SAE_OPT_GRAD_CLIP, 0.0, SAE_OK},     {SAE_OPT_GRAD_CLIP, -1.0, SAE_E_INVALID_ARG},
        {SAE_OPT_THREADS, 2.0, SAE_OK},       {SAE_OPT_THREADS, 0.0, SAE_OK},
        {SAE_OPT_THREADS, 1.5, SAE_E_INVALID_ARG}, {SAE_OPT_THREADS, -1.0, SAE_E_INVALID_ARG},
        {SAE_OPT_THREADS, 1025.0, SAE_E_INVALID_ARG},
        {SAE_OPT_KERNEL, SAE_KERNEL_SPARSE, SAE_OK}, {SAE_OPT_KERNEL, SAE_KERNEL_DENSE, SAE_OK},
        {SAE_OPT_KERNEL, SAE_KERNEL_AUTO, SAE_OK}, {SAE_OPT_KERNEL, 3.0, SAE_E_INVALID_ARG},
        {SAE_OPT_KERNEL, 0.5, SAE_E_INVALID_ARG},
        {0, 1.0, SAE_E_INVALID_ARG},          {9999, 1.0, SAE_E_INVALID_ARG},
        {-3, 1.0, SAE_E_INVALID_ARG},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        double before[8], after[8];
        for (int opt = 1; opt <= 8; opt++)
            sae_optimizer_get(o, opt, &before[opt - 1]);
        int rc = sae_optimizer_set(o, cases[k].option, cases[k].value);
        ck_assert_msg(rc == cases[k].expect, "case %zu: option %d value %g gave %d", k,
                      cases[k].option, cases[k].value, rc);
        for (int opt = 1; opt <= 8; opt++)
            sae_optimizer_get(o, opt, &after[opt - 1]);
        if (rc == SAE_OK)
            ck_assert_double_eq(after[cases[k].option - 1], cases[k].value);
        else
            ck_assert_mem_eq(before, after, sizeof before);
    }
    double v = 123.0;
    ck_assert_int_eq(sae_optimizer_set(NULL, SAE_OPT_LR, 1e-3), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_get(NULL, SAE_OPT_LR, &v), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_LR, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_get(o, 99, &v), SAE_E_INVALID_ARG);
    ck_assert_double_eq(v, 123.0);
    sae_optimizer *o2 = (sae_optimizer *)&v;
    ck_assert_int_eq(sae_optimizer_create(&o2, NULL), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(o2);
    ck_assert_int_eq(sae_optimizer_create(NULL, m), SAE_E_INVALID_ARG);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* The option table (sae_option_name / _default / _bounds) as the header's
 * tables state it, and sae_optimizer_set holding to exactly those bounds. */
START_TEST(option_table_matches_the_header)
{
    enum { L = SAE_OPTION_LOWER_OPEN, U = SAE_OPTION_UPPER_OPEN, W = SAE_OPTION_WHOLE };
    static const struct {
        int option;
        const char *name;
        double def, lower, upper;
        unsigned flags;
    } table[] = {
        {SAE_OPT_LR, "lr", 5e-5, 0, DBL_MAX, L},
        {SAE_OPT_BETA1, "beta1", 0.9, 0, 1, U},
        {SAE_OPT_BETA2, "beta2", 0.999, 0, 1, U},
        {SAE_OPT_EPS, "eps", 1e-8, 0, DBL_MAX, L},
        {SAE_OPT_L1_COEFF, "l1_coeff", 5, 0, DBL_MAX, 0},
        {SAE_OPT_GRAD_CLIP, "grad_clip", 1, 0, DBL_MAX, 0},
        {SAE_OPT_THREADS, "threads", 0, 0, 1024, W},
        {SAE_OPT_KERNEL, "kernel", SAE_KERNEL_AUTO, 0, 2, W},
        {SAE_OPT_TOTAL_STEPS, "total_steps", 0, 0, 9007199254740992.0, W},
        {SAE_OPT_L1_WARMUP_FRACTION, "l1_warmup_fraction", 0, 0, 1, 0},
        {SAE_OPT_LR_WARMUP_STEPS, "lr_warmup_steps", 0, 0, 9007199254740992.0, W},
        {SAE_OPT_LR_DECAY_FRACTION, "lr_decay_fraction", 0, 0, 1, 0},
        {SAE_OPT_LR_SCHEDULE, "lr_schedule", SAE_LR_CONSTANT, 0, 2, W},
        {SAE_OPT_AUXK_COEFF, "auxk_coeff", 1.0 / 32, 0, DBL_MAX, 0},
        {SAE_OPT_AUXK_K, "auxk_k", 0, 0, 4294967295.0, W},
        {SAE_OPT_DEAD_WINDOW, "dead_window", 1e7, 1, 1.8e19, W},
        {SAE_OPT_JUMPRELU_BANDWIDTH, "jumprelu_bandwidth", 0.001, 0, DBL_MAX, L},
        {SAE_OPT_THRESHOLD_BETA, "threshold_beta", 0.999, 0, 1, U},
        {SAE_OPT_GEMM, "gemm", SAE_GEMM_AUTO, 0, 2, W},
        {SAE_OPT_PRECISION, "precision", SAE_PRECISION_FP32, 0, 1, W},
    };
    const size_t n = sizeof table / sizeof table[0];
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, 3, 5, 1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    size_t known = 0;
    for (int option = -2; option <= 200; option++) {
        size_t k = 0;
        while (k < n && table[k].option != option)
            k++;
        double def = 7.0, lower = 7.0, upper = 7.0, v;
        unsigned flags = 7;
        if (k == n) { /* not an option: nothing is reported */
            ck_assert_ptr_null(sae_option_name(option));
            ck_assert_int_eq(sae_option_default(option, &def), SAE_E_INVALID_ARG);
            ck_assert_int_eq(sae_option_bounds(option, &lower, &upper, &flags), SAE_E_INVALID_ARG);
            ck_assert_int_eq(sae_optimizer_get(o, option, &v), SAE_E_INVALID_ARG);
            ck_assert(def == 7.0 && lower == 7.0 && upper == 7.0 && flags == 7);
            continue;
        }
        known++;
        ck_assert_str_eq(sae_option_name(option), table[k].name);
        ck_assert_int_eq(sae_option_default(option, &def), SAE_OK);
        ck_assert_int_eq(sae_option_bounds(option, &lower, &upper, &flags), SAE_OK);
        ck_assert_msg(def == table[k].def && lower == table[k].lower &&
                          upper == table[k].upper && flags == table[k].flags,
                      "option %d: default %g, bounds %g %g, flags %u", option, def, lower, upper,
                      flags);
        /* a new optimizer holds the default */
        ck_assert_int_eq(sae_optimizer_get(o, option, &v), SAE_OK);
        ck_assert(v == def);
        /* set accepts exactly the bounds the query reports, and changes
         * nothing when it refuses */
        const double probes[] = {lower, upper, nextafter(lower, -INFINITY),
                                 nextafter(upper, INFINITY), lower + 0.5};
        for (size_t p = 0; p < sizeof probes / sizeof probes[0]; p++) {
            double x = probes[p];
            bool ok = isfinite(x) && (flags & L ? x > lower : x >= lower) &&
                      (flags & U ? x < upper : x <= upper) && (!(flags & W) || x == floor(x));
            int rc = sae_optimizer_set(o, option, x);
            ck_assert_msg(rc == (ok ? SAE_OK : isfinite(x) ? SAE_E_INVALID_ARG : SAE_E_NONFINITE),
                          "option %d value %.17g: status %d", option, x, rc);
            ck_assert_int_eq(sae_optimizer_get(o, option, &v), SAE_OK);
            ck_assert(v == (ok ? x : def));
            ck_assert_int_eq(sae_optimizer_set(o, option, def), SAE_OK);
        }
    }
    ck_assert_uint_eq(known, n);
    /* NULL outputs: refused, and the others untouched */
    double lower = 7.0, upper = 7.0;
    unsigned flags = 7;
    ck_assert_int_eq(sae_option_default(SAE_OPT_LR, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_option_bounds(SAE_OPT_LR, NULL, &upper, &flags), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_option_bounds(SAE_OPT_LR, &lower, NULL, &flags), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_option_bounds(SAE_OPT_LR, &lower, &upper, NULL), SAE_E_INVALID_ARG);
    ck_assert(lower == 7.0 && upper == 7.0 && flags == 7);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* Three Adam steps against torch.optim.Adam's formulas evaluated in double on
 * the reference gradients, with and without clipping. eps is large here so the
 * clipping factor does not cancel out of the update. */
static void check_adam_steps(double clip, bool expect_clipping)
{
    const size_t d_in = 5, d_sae = 7, n = 6;
    const double lr = 1e-2, beta1 = 0.8, beta2 = 0.95, eps = 1e-3, lambda = 0.7;
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 3), SAE_OK);
    float b_dec[5] = {0.1f, -0.2f, 0.3f, 0.0f, 0.05f};
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_DEC, b_dec, 5), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, lr), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_BETA1, beta1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_BETA2, beta2), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_EPS, eps), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_L1_COEFF, lambda), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_GRAD_CLIP, clip), SAE_OK);

    ref_model r;
    ref_from_model(&r, m);
    size_t n_params = ref_n_params(&r);
    ref_free(&r);
    double *m1 = calloc(n_params, sizeof(double)), *m2 = calloc(n_params, sizeof(double));
    int clipped_steps = 0;
    for (int t = 1; t <= 3; t++) {
        float *x = test_gaussian(n, d_in, 1.0, 0.3, 40 + t);
        ref_from_model(&r, m);
        ref_grads g;
        ref_alloc(&g, d_in, d_sae);
        ref_gradients(&r, x, n, lambda, &g);
        double sumsq = 0.0;
        for (size_t k = 0; k < n_params; k++)
            sumsq += pow(*ref_param(&g, k), 2);
        double norm = sqrt(sumsq);
        double scale = (clip > 0 && norm > clip) ? clip / norm : 1.0;
        clipped_steps += scale < 1.0;
        ref_model expect;
        ref_alloc(&expect, d_in, d_sae);
        for (size_t k = 0; k < n_params; k++) {
            double gk = *ref_param(&g, k) * scale;
            m1[k] = beta1 * m1[k] + (1 - beta1) * gk;
            m2[k] = beta2 * m2[k] + (1 - beta2) * gk * gk;
            double denom = sqrt(m2[k]) / sqrt(1 - pow(beta2, t)) + eps;
            *ref_param(&expect, k) =
                *ref_param(&r, k) - lr / (1 - pow(beta1, t)) * m1[k] / denom;
        }
        sae_losses want = ref_losses(&r, x, n, lambda), got;
        ck_assert_int_eq(sae_step(m, o, x, n, &got), SAE_OK);
        ck_assert_uint_eq(sae_optimizer_steps(o), (uint64_t)t);
        ck_assert_double_eq_tol(got.loss, want.loss, 1e-5 * (1 + want.loss));
        ck_assert_double_eq_tol(got.l2, want.l2, 1e-5 * (1 + want.l2));
        ck_assert_double_eq_tol(got.l1, want.l1, 1e-5 * (1 + want.l1));
        ck_assert_double_eq(got.l0, want.l0);
        ref_model after;
        ref_from_model(&after, m);
        double max_err = 0.0, max_move = 0.0;
        for (size_t k = 0; k < n_params; k++) {
            max_err = fmax(max_err, fabs(*ref_param(&after, k) - *ref_param(&expect, k)));
            max_move = fmax(max_move, fabs(*ref_param(&after, k) - *ref_param(&r, k)));
        }
        ck_assert_msg(max_err < 2e-6, "step %d: max error %g", t, max_err);
        ck_assert_double_gt(max_move, lr / 2); /* the step really moved */
        ref_free(&after);
        ref_free(&expect);
        ref_free(&g);
        ref_free(&r);
        free(x);
    }
    if (expect_clipping)
        ck_assert_int_eq(clipped_steps, 3);
    else
        ck_assert_int_eq(clipped_steps, 0);
    free(m1);
    free(m2);
    sae_optimizer_free(o);
    sae_model_free(m);
}

/* _i = 0: the vector kernels (AVX-512 Adam where the CPU has it); 1: the
 * portable ones (test build hook) */
START_TEST(adam_matches_hand_computed_steps)
{
    sae__test_portable_kernels = _i;
    check_adam_steps(0.0, false);   /* clipping off */
    check_adam_steps(100.0, false); /* on, but the norm stays below it */
    sae__test_portable_kernels = 0;
}
END_TEST

START_TEST(clipping_scales_the_global_gradient_norm)
{
    sae__test_portable_kernels = _i;
    check_adam_steps(0.05, true);
    sae__test_portable_kernels = 0;
}
END_TEST

/* Feature activity: an always-on feature, a dead one, and one that fires only
 * on the first token of each batch. */
START_TEST(activity_counts_tokens_since_last_fired)
{
    const size_t n = 8;
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, 2, 3, 5), SAE_OK);
    float w_enc[6] = {0, 0, 1,   /* row j = 0 of W_enc (d_in x d_sae) */
                      0, 0, 0};  /* row j = 1 */
    float b_enc[3] = {100, -100, 0};
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, w_enc, 6), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, b_enc, 3), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 1e-7), SAE_OK);
    float x[16];
    for (size_t t = 0; t < n; t++) {
        x[2 * t] = t == 0 ? 1.0f : -1.0f;
        x[2 * t + 1] = 0.5f;
    }
    uint64_t since[3];
    size_t dead = 99;
    ck_assert_int_eq(sae_optimizer_tokens_since_fired(o, since, 3), SAE_OK);
    ck_assert(since[0] == 0 && since[1] == 0 && since[2] == 0);
    ck_assert_int_eq(sae_optimizer_dead_count(o, 1, &dead), SAE_OK);
    ck_assert_uint_eq(dead, 0);

    ck_assert_int_eq(sae_step(m, o, x, n, NULL), SAE_OK);
    ck_assert_int_eq(sae_optimizer_tokens_since_fired(o, since, 3), SAE_OK);
    ck_assert_uint_eq(since[0], 0);
    ck_assert_uint_eq(since[1], n);
    ck_assert_uint_eq(since[2], n - 1);
    ck_assert_int_eq(sae_step(m, o, x, n, NULL), SAE_OK);
    ck_assert_int_eq(sae_optimizer_tokens_since_fired(o, since, 3), SAE_OK);
    ck_assert_uint_eq(since[0], 0);
    ck_assert_uint_eq(since[1], 2 * n);
    ck_assert_uint_eq(since[2], n - 1);
    ck_assert_int_eq(sae_optimizer_dead_count(o, n, &dead), SAE_OK);
    ck_assert_uint_eq(dead, 1);
    ck_assert_int_eq(sae_optimizer_dead_count(o, n - 1, &dead), SAE_OK);
    ck_assert_uint_eq(dead, 2);
    ck_assert_int_eq(sae_optimizer_dead_count(o, 2 * n + 1, &dead), SAE_OK);
    ck_assert_uint_eq(dead, 0);

    dead = 99;
    ck_assert_int_eq(sae_optimizer_dead_count(o, 0, &dead), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_dead_count(NULL, 5, &dead), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_dead_count(o, 5, NULL), SAE_E_INVALID_ARG);
    ck_assert_uint_eq(dead, 99);
    ck_assert_int_eq(sae_optimizer_tokens_since_fired(o, since, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_tokens_since_fired(o, NULL, 3), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_tokens_since_fired(NULL, since, 3), SAE_E_INVALID_ARG);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* Two identical (model, optimizer) pairs; one suffers a failed call. A later
 * successful step must then give bit-identical results on both, which proves
 * the failure changed nothing, Adam moments included. */
typedef struct twins {
    sae_model *m[2];
    sae_optimizer *o[2];
    float *x;
    size_t n, d_in, d_sae;
} twins;

static void twins_create(twins *w, size_t d_in, size_t d_sae, size_t n)
{
    w->d_in = d_in;
    w->d_sae = d_sae;
    w->n = n;
    w->x = test_gaussian(n, d_in, 1.0, 0.0, 123);
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(sae_model_create(&w->m[k], d_in, d_sae, 9), SAE_OK);
        ck_assert_int_eq(sae_optimizer_create(&w->o[k], w->m[k]), SAE_OK);
        ck_assert_int_eq(sae_optimizer_set(w->o[k], SAE_OPT_LR, 1e-3), SAE_OK);
        ck_assert_int_eq(sae_step(w->m[k], w->o[k], w->x, n, NULL), SAE_OK);
    }
}

static void twins_check_and_free(twins *w)
{
    sae_losses l[2];
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(sae_step(w->m[k], w->o[k], w->x, w->n, &l[k]), SAE_OK);
    ck_assert_mem_eq(&l[0], &l[1], sizeof l[0]);
    model_snapshot s;
    snapshot_take(&s, w->m[0]);
    ck_assert(snapshot_equal(&s, w->m[1]));
    snapshot_free(&s);
    optimizer_snapshot os;
    opt_snapshot_take(&os, w->o[0], w->d_sae);
    ck_assert(opt_snapshot_equal(&os, w->o[1]));
    opt_snapshot_free(&os);
    for (int k = 0; k < 2; k++) {
        sae_optimizer_free(w->o[k]);
        sae_model_free(w->m[k]);
    }
    free(w->x);
}

/* Call sae_step on twin 0 expecting `expect`, then check nothing changed. */
static void expect_step_fails(twins *w, sae_model *m, sae_optimizer *o, const float *x, size_t n,
                              int expect)
{
    model_snapshot ms;
    optimizer_snapshot os;
    snapshot_take(&ms, w->m[0]);
    opt_snapshot_take(&os, w->o[0], w->d_sae);
    sae_losses out = {-1, -2, -3, -4}, out_before = out;
    ck_assert_int_eq(sae_step(m, o, x, n, &out), expect);
    ck_assert_mem_eq(&out, &out_before, sizeof out);
    ck_assert(snapshot_equal(&ms, w->m[0]));
    ck_assert(opt_snapshot_equal(&os, w->o[0]));
    snapshot_free(&ms);
    opt_snapshot_free(&os);
}

START_TEST(step_rejects_bad_arguments_and_changes_nothing)
{
    twins w;
    twins_create(&w, 6, 10, 12);
    sae_model *other;
    ck_assert_int_eq(sae_model_create(&other, 6, 11, 9), SAE_OK);
    sae_optimizer *other_o;
    ck_assert_int_eq(sae_optimizer_create(&other_o, other), SAE_OK);
    expect_step_fails(&w, NULL, w.o[0], w.x, w.n, SAE_E_INVALID_ARG);
    expect_step_fails(&w, w.m[0], NULL, w.x, w.n, SAE_E_INVALID_ARG);
    expect_step_fails(&w, w.m[0], w.o[0], NULL, w.n, SAE_E_INVALID_ARG);
    expect_step_fails(&w, w.m[0], w.o[0], w.x, 0, SAE_E_INVALID_ARG);
    expect_step_fails(&w, w.m[0], w.o[0], w.x, SIZE_MAX / 4, SAE_E_INVALID_ARG);
    expect_step_fails(&w, w.m[0], other_o, w.x, w.n, SAE_E_INVALID_ARG); /* other shape */
    expect_step_fails(&w, other, w.o[0], w.x, w.n, SAE_E_INVALID_ARG);
    float *bad = malloc(w.n * w.d_in * sizeof(float));
    memcpy(bad, w.x, w.n * w.d_in * sizeof(float));
    bad[w.n * w.d_in - 1] = NAN;
    expect_step_fails(&w, w.m[0], w.o[0], bad, w.n, SAE_E_NONFINITE);
    bad[w.n * w.d_in - 1] = -INFINITY;
    expect_step_fails(&w, w.m[0], w.o[0], bad, w.n, SAE_E_NONFINITE);
    free(bad);
    sae_optimizer_free(other_o);
    sae_model_free(other);
    twins_check_and_free(&w);
}
END_TEST

/* Gradients that overflow float, and updates that would overflow the Adam
 * moments or the parameters, return SAE_E_NONFINITE with nothing changed. */
START_TEST(step_refuses_nonfinite_gradients_and_updates)
{
    twins w;
    twins_create(&w, 6, 10, 12);
    float *scaled = malloc(w.n * w.d_in * sizeof(float));
    for (size_t k = 0; k < w.n * w.d_in; k++)
        scaled[k] = w.x[k] * 1e30f;
    expect_step_fails(&w, w.m[0], w.o[0], scaled, w.n, SAE_E_NONFINITE);

    /* lr / (1 - beta1^t) overflows float: the update cannot be finite. */
    ck_assert_int_eq(sae_optimizer_set(w.o[0], SAE_OPT_LR, 1e38), SAE_OK);
    expect_step_fails(&w, w.m[0], w.o[0], w.x, w.n, SAE_E_NONFINITE);
    ck_assert_int_eq(sae_optimizer_set(w.o[0], SAE_OPT_LR, 1e-3), SAE_OK);

    /* Unclipped gradients near 1e28 are finite, but their squares overflow the
     * second moment: caught by the dry run before anything is written. */
    for (size_t k = 0; k < w.n * w.d_in; k++)
        scaled[k] = w.x[k] * 1e15f;
    ck_assert_int_eq(sae_optimizer_set(w.o[0], SAE_OPT_GRAD_CLIP, 0), SAE_OK);
    expect_step_fails(&w, w.m[0], w.o[0], scaled, w.n, SAE_E_NONFINITE);
    ck_assert_int_eq(sae_optimizer_set(w.o[0], SAE_OPT_GRAD_CLIP, 1), SAE_OK);
    free(scaled);
    twins_check_and_free(&w);
}
END_TEST

/* A huge but representable update is not refused: the cheap bound fails, the
 * dry run proves the step finite, and it is applied. */
START_TEST(step_allows_huge_finite_updates)
{
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, 4, 6, 2), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 1e30), SAE_OK);
    float *x = test_gaussian(5, 4, 1.0, 0.0, 8);
    ck_assert_int_eq(sae_step(m, o, x, 5, NULL), SAE_OK);
    float b_dec[4];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_DEC, b_dec, 4), SAE_OK);
    for (int j = 0; j < 4; j++)
        ck_assert(fabsf(b_dec[j]) > 1e29f && isfinite(b_dec[j]));
    free(x);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* A batch on which no feature fires (x = b_dec, every b_enc < 0: no active
 * pair at all) is a valid step on either kernel and any architecture: the
 * reconstruction is exact, every gradient is 0, so Adam moves nothing, and
 * every feature's silence grows by the batch. Its empty pair arrays once made
 * pointer arithmetic on NULL (UBSan, issue 10). */
START_TEST(steps_with_no_active_feature)
{
    static const int archs[] = {SAE_ARCH_RELU, SAE_ARCH_TOPK, SAE_ARCH_BATCHTOPK,
                                SAE_ARCH_JUMPRELU, SAE_ARCH_GATED};
    static const double params[] = {0.0, 3.0, 3.0, 0.05, 0.0};
    const int arch = archs[_i / 2];
    const int kernel = _i % 2 ? SAE_KERNEL_SPARSE : SAE_KERNEL_DENSE;
    enum { D_IN = 8, D_SAE = 16, N = 5 };
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create_arch(&m, D_IN, D_SAE, 2, archs[_i / 2], params[_i / 2]),
                     SAE_OK);
    float b_enc[D_SAE], b_dec[D_IN], x[N * D_IN];
    for (size_t i = 0; i < D_SAE; i++)
        b_enc[i] = -1.0f;
    for (size_t j = 0; j < D_IN; j++)
        b_dec[j] = 0.25f * (float)j - 1.0f;
    for (size_t t = 0; t < N; t++)
        memcpy(x + t * D_IN, b_dec, sizeof b_dec);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_ENC, b_enc, D_SAE), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_B_DEC, b_dec, D_IN), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_KERNEL, kernel), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_THREADS, 2), SAE_OK);
    model_snapshot before;
    snapshot_take(&before, m);
    sae_losses l;
    for (int s = 0; s < 2; s++) {
        ck_assert_int_eq(sae_step(m, o, x, N, &l), SAE_OK);
        ck_assert_double_eq(l.l0, 0.0);
        ck_assert_double_eq(l.l2, 0.0);
    }
    ck_assert_uint_eq(sae_optimizer_steps(o), 2);
    uint64_t dead = 0;
    ck_assert_int_eq(sae_optimizer_dead_count(o, 2 * N, &dead), SAE_OK);
    ck_assert_uint_eq(dead, D_SAE);
    /* BatchTopK's first step sets its inference threshold; nothing else moves */
    if (arch != SAE_ARCH_BATCHTOPK)
        ck_assert(snapshot_equal(&before, m));
    /* the read-only calls on the same batch */
    float f[N * D_SAE];
    ck_assert_int_eq(sae_encode(m, x, N, f), SAE_OK);
    for (size_t k = 0; k < N * D_SAE; k++)
        ck_assert_float_eq(f[k], 0.0f);
    size_t nnz = 99;
    ck_assert_int_eq(sae_encode_sparse_size(m, x, N, 0, &nnz), SAE_OK);
    ck_assert_uint_eq(nnz, 0);
    snapshot_free(&before);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* On a fixed batch, steps at the default settings (but a larger lr) drive the
 * loss down. */
START_TEST(steps_reduce_the_loss)
{
    const size_t d_in = 16, d_sae = 32, n = 64;
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 4), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 1e-2), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_L1_COEFF, 0.1), SAE_OK);
    float *x = test_sparse_data(n, d_in, 8, 2.0, 6, NULL);
    sae_losses first, l;
    ck_assert_int_eq(sae_loss(m, x, n, 0.1, &first), SAE_OK);
    for (int s = 0; s < 100; s++)
        ck_assert_int_eq(sae_step(m, o, x, n, &l), SAE_OK);
    ck_assert_int_eq(sae_loss(m, x, n, 0.1, &l), SAE_OK);
    ck_assert_double_lt(l.loss, 0.3 * first.loss);
    free(x);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* Every value of SAE_OPT_GEMM trains the same model up to float rounding:
 * the losses of five steps (dense and sparse path) agree to 1e-5. */
START_TEST(gemm_backends_train_alike)
{
    const size_t d_in = 48, d_sae = 96, n = 300;
    float *x = test_sparse_data(n, d_in, 20, 3.0, 8, NULL);
    const int kernels[] = {SAE_KERNEL_DENSE, SAE_KERNEL_SPARSE};
    for (size_t kk = 0; kk < 2; kk++) {
        double ref[5];
        const int backends[] = {SAE_GEMM_CBLAS, SAE_GEMM_ONEDNN, SAE_GEMM_AUTO};
        for (size_t bi = 0; bi < 3; bi++) {
            const int gemm = backends[bi];
            sae_model *m;
            sae_optimizer *o;
            ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 5), SAE_OK);
            ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
            ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_GEMM, gemm), SAE_OK);
            ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_KERNEL, kernels[kk]), SAE_OK);
            ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_L1_COEFF, 0.5), SAE_OK);
            ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_THREADS, 2), SAE_OK);
            for (int s = 0; s < 5; s++) {
                sae_losses l;
                ck_assert_int_eq(sae_step(m, o, x, n, &l), SAE_OK);
                if (gemm == SAE_GEMM_CBLAS)
                    ref[s] = l.loss;
                else
                    ck_assert_msg(fabs(l.loss - ref[s]) <= 1e-5 * ref[s],
                                  "gemm %d, kernel %d, step %d: loss %.9g vs %.9g on CBLAS",
                                  gemm, kernels[kk], s, l.loss, ref[s]);
            }
            sae_optimizer_free(o);
            sae_model_free(m);
        }
    }
    free(x);
}
END_TEST

/* sae_gemm_backend: what each SAE_OPT_GEMM value runs on in this build. */
START_TEST(gemm_backend_reports_the_resolved_backend)
{
    ck_assert_int_eq(sae_gemm_backend(SAE_GEMM_CBLAS), SAE_GEMM_CBLAS);
    int automatic = sae_gemm_backend(SAE_GEMM_AUTO);
    ck_assert(automatic == SAE_GEMM_CBLAS || automatic == SAE_GEMM_ONEDNN);
    ck_assert_int_eq(sae_gemm_backend(SAE_GEMM_ONEDNN), automatic);
    ck_assert_int_eq(sae_gemm_backend(3), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_gemm_backend(-1), SAE_E_INVALID_ARG);
}
END_TEST

/* One step of a fresh optimizer, with `option` set to `value`, on a copy of
 * m: the losses a step of any optimizer on m must report. */
static sae_losses fresh_step(const sae_model *m, const float *x, size_t n, int option,
                             double value)
{
    sae_model *copy;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_clone(&copy, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, copy), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, option, value), SAE_OK);
    sae_losses l;
    ck_assert_int_eq(sae_step(copy, o, x, n, &l), SAE_OK);
    sae_optimizer_free(o);
    sae_model_free(copy);
    return l;
}

/* Tensor `which` of m (d_in x d_sae values) times factor. */
static void scale_tensor(sae_model *m, int which, float factor)
{
    const size_t count = sae_model_d_in(m) * sae_model_d_sae(m);
    float *w = malloc(count * sizeof *w);
    ck_assert_int_eq(sae_model_get_tensor(m, which, w, count), SAE_OK);
    for (size_t k = 0; k < count; k++)
        w[k] *= factor;
    ck_assert_int_eq(sae_model_set_tensor(m, which, w, count), SAE_OK);
    free(w);
}

/* The bf16 copy of W_enc that SAE_OPT_PRECISION bf16 keeps follows the model:
 * after sae_model_set_tensor, or for another model, a step computes the same
 * losses as a fresh optimizer would; and it is really bf16 (the losses
 * differ from float32's). For a ReLU SAE (the fused encoder) and a Gated one
 * (the block encoder: the gate and magnitude paths share the bf16 product). */
static double first_loss(const sae_model *m, const float *x, size_t n, int precision)
{
    return fresh_step(m, x, n, SAE_OPT_PRECISION, precision).loss;
}

START_TEST(bf16_weights_follow_the_model)
{
    static const int archs[] = {SAE_ARCH_RELU, SAE_ARCH_GATED};
    const size_t d_in = 64, d_sae = 128, n = 100;
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 9);
    sae_model *a, *b;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create_arch(&a, d_in, d_sae, 3, archs[_i], 0.0), SAE_OK);
    ck_assert_int_eq(sae_model_clone(&b, a), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, a), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_PRECISION, SAE_PRECISION_BF16), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 1e-2), SAE_OK);
    sae_losses l;
    double want = first_loss(a, x, n, SAE_PRECISION_BF16);
    ck_assert_double_ne(want, first_loss(a, x, n, SAE_PRECISION_FP32));
    ck_assert_int_eq(sae_step(a, o, x, n, &l), SAE_OK);
    ck_assert_double_eq(l.loss, want);
    /* the Adam pass rewrote the copy: the next step sees the new W_enc */
    want = first_loss(a, x, n, SAE_PRECISION_BF16);
    ck_assert_int_eq(sae_step(a, o, x, n, &l), SAE_OK);
    ck_assert_double_eq(l.loss, want);
    /* W_enc changed from outside */
    scale_tensor(a, SAE_W_ENC, 1.5f);
    want = first_loss(a, x, n, SAE_PRECISION_BF16);
    ck_assert_int_eq(sae_step(a, o, x, n, &l), SAE_OK);
    ck_assert_double_eq(l.loss, want);
    /* another model of the same shape */
    want = first_loss(b, x, n, SAE_PRECISION_BF16);
    ck_assert_int_eq(sae_step(b, o, x, n, &l), SAE_OK);
    ck_assert_double_eq(l.loss, want);
    free(x);
    sae_optimizer_free(o);
    sae_model_free(a);
    sae_model_free(b);
}
END_TEST

/* The decoder row norms the Adam pass leaves for the next step are those the
 * step would compute itself: each step's L1 equals a fresh optimizer's on the
 * same model, after Adam passes (2 threads: rows across the threads' ranges
 * included), after W_dec changed from outside, and for another model. */
static double first_l1(const sae_model *m, const float *x, size_t n)
{
    return fresh_step(m, x, n, SAE_OPT_THREADS, 2).l1;
}

START_TEST(cached_row_norms_follow_the_model)
{
    const size_t d_in = 37, d_sae = 101, n = 64; /* rows that straddle 64-byte lines */
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 19);
    sae_model *a, *b;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&a, d_in, d_sae, 8), SAE_OK);
    ck_assert_int_eq(sae_model_create(&b, d_in, d_sae, 9), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, a), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_THREADS, 2), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 3e-2), SAE_OK);
    sae_losses l;
    for (int s = 0; s < 4; s++) {
        double want = first_l1(a, x, n);
        ck_assert_int_eq(sae_step(a, o, x, n, &l), SAE_OK);
        ck_assert_double_eq(l.l1, want);
    }
    ck_assert_ptr_eq(o->ws.norms_model, a);
    scale_tensor(a, SAE_W_DEC, 0.5f);
    double want = first_l1(a, x, n);
    ck_assert_int_eq(sae_step(a, o, x, n, &l), SAE_OK);
    ck_assert_double_eq(l.l1, want);
    want = first_l1(b, x, n);
    ck_assert_int_eq(sae_step(b, o, x, n, &l), SAE_OK);
    ck_assert_double_eq(l.l1, want);
    free(x);
    sae_optimizer_free(o);
    sae_model_free(a);
    sae_model_free(b);
}
END_TEST

/* SAE_OPT_PRECISION bf16 covers the plain autoencoders and Gated SAEs only:
 * Matryoshka SAEs and transcoders (with and without W_skip, on either kernel)
 * train in float32,
 * bit for bit as without the option, and through the unfused encoder (whose
 * results test_families_train checks against the reference). */
START_TEST(families_step_in_float32_whatever_the_precision)
{
    const size_t d_in = 24, d_out = 10, d_sae = 48, n = 200;
    float *x = test_gaussian(n, d_in, 1.0, 0.2, 61), *y = test_gaussian(n, d_out, 1.0, 0.0, 62);
    static const struct {
        int kind, arch, kernel;
        double param;
    } cases[] = {
        {SAE_KIND_AUTOENCODER, SAE_ARCH_MATRYOSHKA, SAE_KERNEL_AUTO, 6},
        {SAE_KIND_TRANSCODER, SAE_ARCH_RELU, SAE_KERNEL_SPARSE, 0},
        {SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_TOPK, SAE_KERNEL_AUTO, 6},
        {SAE_KIND_SKIP_TRANSCODER, SAE_ARCH_JUMPRELU, SAE_KERNEL_AUTO, 0.05},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sae_model *m[2];
        for (int p = 0; p < 2; p++) {
            sae_optimizer *o;
            const size_t widths[] = {16, d_sae};
            if (cases[c].arch == SAE_ARCH_MATRYOSHKA)
                ck_assert_int_eq(sae_model_create_matryoshka(&m[p], d_in, d_sae, 4,
                                                             (size_t)cases[c].param, widths, 2),
                                 SAE_OK);
            else
                ck_assert_int_eq(sae_model_create_transcoder(&m[p], d_in, d_out, d_sae, 4,
                                                             cases[c].kind, cases[c].arch,
                                                             cases[c].param), SAE_OK);
            ck_assert_int_eq(sae_optimizer_create(&o, m[p]), SAE_OK);
            ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_PRECISION,
                                               p ? SAE_PRECISION_BF16 : SAE_PRECISION_FP32),
                             SAE_OK);
            ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_KERNEL, cases[c].kernel), SAE_OK);
            ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 1e-2), SAE_OK);
            for (int s = 0; s < 3; s++) {
                int rc = cases[c].kind == SAE_KIND_AUTOENCODER
                             ? sae_step(m[p], o, x, n, NULL)
                             : sae_step_target(m[p], o, x, y, n, NULL);
                ck_assert_int_eq(rc, SAE_OK);
            }
            sae_optimizer_free(o);
        }
        ck_assert_uint_eq(m[0]->lay.total, m[1]->lay.total);
        ck_assert_msg(memcmp(m[0]->params, m[1]->params, m[0]->lay.total * sizeof(float)) == 0,
                      "case %zu: bf16 changed a family's step", c);
        sae_model_free(m[0]);
        sae_model_free(m[1]);
    }
    free(x);
    free(y);
}
END_TEST

/* Transcoders and skip transcoders encode with the fused encoder too (their
 * encoder is the autoencoder's product, of x uncentred): on the sparse path,
 * every architecture it covers, with AuxK, gives the gradients and losses of
 * the block-by-block encoder (the same workspace without its fused encoder),
 * to rounding: the encoder's products have other shapes (tiles), and a BLAS
 * may sum a shape in another order (OpenBLAS's small-matrix kernels do). */
START_TEST(transcoder_steps_fused_match_the_block_loop)
{
    const size_t d_in = 16, d_out = 12, d_sae = 64, n = SAE_BLOCK_TOKENS + 100;
    float *x = test_gaussian(n, d_in, 1.0, 0.1, 81), *y = test_gaussian(n, d_out, 1.0, 0.0, 82);
    static const int archs[] = {SAE_ARCH_RELU, SAE_ARCH_TOPK, SAE_ARCH_BATCHTOPK,
                                SAE_ARCH_JUMPRELU};
    uint8_t dead[64];
    for (size_t i = 0; i < d_sae; i++)
        dead[i] = i % 3 == 0;
    for (int kind = SAE_KIND_TRANSCODER; kind <= SAE_KIND_SKIP_TRANSCODER; kind++)
        for (size_t a = 0; a < 4; a++) {
            const int arch = archs[a];
            const bool topk = arch == SAE_ARCH_TOPK || arch == SAE_ARCH_BATCHTOPK;
            const double param = topk ? 4 : arch == SAE_ARCH_JUMPRELU ? 0.05 : 0;
            sae_model *m;
            ck_assert_int_eq(sae_model_create_transcoder(&m, d_in, d_out, d_sae, 3, kind, arch,
                                                         param), SAE_OK);
            float *grad[2];
            double loss[2];
            for (int block = 0; block < 2; block++) {
                sae_workspace ws;
                memset(&ws, 0, sizeof ws);
                sae_step_shape shape = {d_in, d_sae, n, 2, arch, topk ? 6 : 0, d_out,
                                        SAE_GEMM_AUTO, false, true, 0};
                ck_assert_int_eq(sae__workspace_reserve(&ws, &shape), SAE_OK);
                ck_assert_ptr_nonnull(ws.fused);
                if (block) {
                    sae__fused_encoder_free(ws.fused);
                    ws.fused = NULL;
                }
                grad[block] = sae__alloc_zero(m->lay.total * sizeof(float));
                sae_step_config cfg = {0.01, SAE_KERNEL_SPARSE, ws.pool, topk ? 0.03 : 0.0,
                                       topk ? 6 : 0, topk ? dead : NULL, 0.001, n, NULL};
                sae_backward_result res;
                ck_assert_int_eq(sae__forward_backward(m, &cfg, x, y, n, &ws, grad[block], &res),
                                 SAE_OK);
                ck_assert(res.used_sparse);
                loss[block] = res.sums.l2 + res.aux_loss;
                sae__workspace_free(&ws);
            }
            for (size_t q = 0; q < m->lay.total; q++)
                if (!(fabsf(grad[0][q] - grad[1][q]) <= 1e-5f + 1e-4f * fabsf(grad[1][q])))
                    ck_abort_msg("kind %d arch %d: gradient %zu is %g, the block loop's %g",
                                 kind, arch, q, (double)grad[0][q], (double)grad[1][q]);
            ck_assert_double_eq_tol(loss[0], loss[1], 1e-6 * loss[1]);
            sae__free(grad[0]);
            sae__free(grad[1]);
            sae_model_free(m);
        }
    free(x);
    free(y);
}
END_TEST

/* BatchTopK's step selects over the batch in the fused encoder, in O(n k):
 * its workspace holds blocks of SAE_BLOCK_TOKENS features, not the batch's
 * n x d_sae; a step that takes the block loop after all (here a transcoder's
 * step without its fused encoder) grows the block to the batch and gives
 * the gradients of a workspace reserved for the batch from the start. */
START_TEST(batchtopk_workspace_is_not_batch_wide)
{
    const size_t d_in = 16, d_out = 12, d_sae = 64, n = 2 * SAE_BLOCK_TOKENS + 100;
    float *x = test_gaussian(n, d_in, 1.0, 0.1, 71), *y = test_gaussian(n, d_out, 1.0, 0.0, 72);
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create_arch(&m, d_in, d_sae, 2, SAE_ARCH_BATCHTOPK, 4), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    sae_losses l;
    ck_assert_int_eq(sae_step(m, o, x, n, &l), SAE_OK);
    ck_assert_double_le(l.l0, 4.0);
    ck_assert_uint_le(o->ws.block_cap, SAE_BLOCK_TOKENS);
    ck_assert_ptr_null(o->ws.radix_hist);
    sae_optimizer_free(o);
    sae_model_free(m);

    ck_assert_int_eq(sae_model_create_transcoder(&m, d_in, d_out, d_sae, 2, SAE_KIND_TRANSCODER,
                                                 SAE_ARCH_BATCHTOPK, 4), SAE_OK);
    float *grad[2];
    for (int small = 0; small < 2; small++) {
        sae_workspace ws;
        memset(&ws, 0, sizeof ws);
        sae_step_shape shape = {d_in, d_sae, n, 2, SAE_ARCH_BATCHTOPK, 0, d_out,
                                SAE_GEMM_AUTO, false, small != 0, 0};
        ck_assert_int_eq(sae__workspace_reserve(&ws, &shape), SAE_OK);
        ck_assert_uint_eq(ws.block_cap, small ? SAE_BLOCK_TOKENS : n);
        sae__fused_encoder_free(ws.fused); /* the block loop */
        ws.fused = NULL;
        grad[small] = sae__alloc_zero(m->lay.total * sizeof(float));
        sae_step_config cfg = {0.0, SAE_KERNEL_AUTO, ws.pool, 0.0, 0, NULL, 0.001, n, NULL};
        sae_backward_result res;
        ck_assert_int_eq(sae__forward_backward(m, &cfg, x, y, n, &ws, grad[small], &res), SAE_OK);
        ck_assert_uint_eq(ws.block_cap, n);
        sae__workspace_free(&ws);
    }
    ck_assert(memcmp(grad[0], grad[1], m->lay.total * sizeof(float)) == 0);
    sae__free(grad[0]);
    sae__free(grad[1]);
    sae_model_free(m);
    free(x);
    free(y);
}
END_TEST

/* After fork() the child has none of the optimizer's threads: its steps run
 * on the calling thread, finish, and give the parent's bits; freeing joins
 * nothing. */
START_TEST(steps_work_in_a_forked_child)
{
    const size_t d_in = 16, d_sae = 64, n = 300;
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 3), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_THREADS, 3), SAE_OK);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 5);
    ck_assert_int_eq(sae_step(m, o, x, n, NULL), SAE_OK); /* starts the threads */
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(60); /* a deadlock fails the test instead of hanging it */
        sae_losses l;
        int rc = sae_step(m, o, x, n, &l);
        float w[16 * 64];
        if (rc == SAE_OK)
            rc = sae_model_get_tensor(m, SAE_W_DEC, w, d_in * d_sae);
        sae_optimizer_free(o);
        sae_model_free(m);
        if (write(fds[1], &rc, sizeof rc) != sizeof rc || write(fds[1], w, sizeof w) != sizeof w)
            _exit(2);
        _exit(0);
    }
    close(fds[1]);
    int rc = -100, status = 0;
    float child_w[16 * 64], w[16 * 64];
    ck_assert_int_eq(read(fds[0], &rc, sizeof rc), (ssize_t)sizeof rc);
    ck_assert_int_eq(rc, SAE_OK);
    ck_assert_int_eq(read(fds[0], child_w, sizeof child_w), (ssize_t)sizeof child_w);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fds[0]);
    ck_assert_int_eq(sae_step(m, o, x, n, NULL), SAE_OK);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, w, d_in * d_sae), SAE_OK);
    ck_assert_mem_eq(w, child_w, sizeof w);
    free(x);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

static Suite *optimizer_suite(void)
{
    Suite *s = suite_create("optimizer");
    TCase *tc = tcase_create("adam");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, defaults_follow_the_recipe);
    tcase_add_test(tc, options_are_validated);
    tcase_add_test(tc, option_table_matches_the_header);
    tcase_add_loop_test(tc, steps_with_no_active_feature, 0, 10);
    tcase_add_loop_test(tc, adam_matches_hand_computed_steps, 0, 2);
    tcase_add_loop_test(tc, clipping_scales_the_global_gradient_norm, 0, 2);
    tcase_add_test(tc, activity_counts_tokens_since_last_fired);
    tcase_add_test(tc, step_rejects_bad_arguments_and_changes_nothing);
    tcase_add_test(tc, step_refuses_nonfinite_gradients_and_updates);
    tcase_add_test(tc, step_allows_huge_finite_updates);
    tcase_add_test(tc, steps_reduce_the_loss);
    tcase_add_test(tc, gemm_backends_train_alike);
    tcase_add_test(tc, gemm_backend_reports_the_resolved_backend);
    tcase_add_loop_test(tc, bf16_weights_follow_the_model, 0, 2); /* ReLU, Gated */
    tcase_add_test(tc, families_step_in_float32_whatever_the_precision);
    tcase_add_test(tc, batchtopk_workspace_is_not_batch_wide);
    tcase_add_test(tc, transcoder_steps_fused_match_the_block_loop);
    tcase_add_test(tc, cached_row_norms_follow_the_model);
    tcase_add_test(tc, steps_work_in_a_forked_child);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(optimizer_suite)
