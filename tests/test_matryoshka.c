/*
 * Matryoshka BatchTopK training (issue 16): the step's nested losses against
 * the double-precision reference of tests/reference_families.c, which decodes
 * every level on its own and is itself checked against finite differences
 * (tests/test_reference_families.c); the library decodes the levels as prefix
 * sums of each token's pairs and must agree on both sparse layouts, with and
 * without AuxK, whatever the thread count. Then sae_loss_levels, the losses a
 * step reports, and the recovery of sparse directions, level by level.
 */
#include "families_pass.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *every_third(size_t d_sae)
{
    unsigned char *dead = calloc(d_sae, 1);
    for (size_t i = 0; i < d_sae; i += 3)
        dead[i] = 1;
    return dead;
}

/* The reference's loss parts: the inner levels' l2 summed (what the step
 * reports in sums.extra / n). */
static double inner_levels(const reff_model *r, const reff_losses *l)
{
    double sum = 0.0;
    for (size_t lv = 0; lv + 1 < r->n_levels; lv++)
        sum += l->level_l2[lv];
    return sum;
}

/* ---- gradients ------------------------------------------------------------------- */

START_TEST(gradients_match_the_reference)
{
    const size_t d_in = 10, d_sae = 24, n = 40;
    float *x = test_gaussian(n, d_in, 1.0, 0.3, 11);
    unsigned char *dead = every_third(d_sae);
    static const struct {
        const char *what;
        size_t widths[4], n_levels;
    } cases[] = {
        {"four levels", {3, 9, 17, 24}, 4},
        {"two levels", {12, 24}, 2},
        {"one level (BatchTopK)", {24}, 1},
        {"narrow bands", {1, 2, 23, 24}, 4},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int auxk = 0; auxk < 2; auxk++)
            for (int layout = 1; layout <= 2; layout++) { /* rows in place, packed panels */
                reff_model r;
                reff_alloc(&r, REFF_MATRYOSHKA, REFF_AUTOENCODER, d_in, d_in, d_sae, 4,
                           cases[c].widths, cases[c].n_levels);
                reff_randomize(&r, 0.4, 12 + c);
                reff_train t = {.auxk_coeff = auxk ? 0.5 : 0.0, .k_aux = 3, .dead = dead};
                sae_backward_result res;
                sae__test_sparse_layout = layout;
                double err = families_gradient_error(&r, &t, x, NULL, n, SAE_KERNEL_AUTO, &res);
                sae__test_sparse_layout = 0;
                if (err > 2e-5)
                    ck_abort_msg("%s%s, layout %d: relative gradient error %g", cases[c].what,
                                 auxk ? " + auxk" : "", layout, err);
                ck_assert(res.used_sparse);
                reff_losses l;
                reff_loss(&r, &t, x, NULL, n, NULL, &l);
                double inner = inner_levels(&r, &l);
                ck_assert_double_eq_tol(res.sums.extra / (double)n, inner, 1e-5 * (1.0 + inner));
                if (cases[c].n_levels > 1)
                    ck_assert_double_gt(inner, 0.0); /* the inner levels are there */
                if (auxk) {
                    ck_assert_double_gt(l.aux, 0.0);
                    ck_assert_double_eq_tol(res.aux_loss, l.aux, 1e-5 * (1.0 + l.aux));
                }
                reff_free(&r);
            }
    free(dead);
    free(x);
}
END_TEST

/* Every sum of the pass is taken in a fixed order: one thread and three give
 * the same bits. */
START_TEST(the_pass_does_not_depend_on_threads)
{
    const size_t d_in = 12, d_sae = 40, n = 64, widths[3] = {5, 20, 40};
    float *x = test_gaussian(n, d_in, 1.0, 0.1, 21);
    unsigned char *dead = every_third(d_sae);
    reff_model r;
    reff_alloc(&r, REFF_MATRYOSHKA, REFF_AUTOENCODER, d_in, d_in, d_sae, 5, widths, 3);
    reff_randomize(&r, 0.4, 22);
    sae_model *m = families_lib_model(&r);
    float *grad[2];
    sae_backward_result res[2];
    for (int k = 0; k < 2; k++) {
        test_pass p = {.auxk_coeff = 0.25, .k_aux = 4, .dead = dead,
                       .kernel = SAE_KERNEL_AUTO, .n_threads = k ? 3 : 1};
        grad[k] = test_lib_backward(m, x, NULL, n, &p, &res[k]);
    }
    ck_assert(memcmp(grad[0], grad[1], m->lay.total * sizeof(float)) == 0);
    ck_assert(memcmp(&res[0].sums, &res[1].sums, sizeof res[0].sums) == 0);
    ck_assert_double_eq(res[0].aux_loss, res[1].aux_loss);
    sae__free(grad[0]);
    sae__free(grad[1]);
    sae_model_free(m);
    reff_free(&r);
    free(dead);
    free(x);
}
END_TEST

/* ---- the public functions ----------------------------------------------------------- */

/* A step reports the reference's training loss of the model before it: the
 * levels' sum, the full width's l2 as l2 (AuxK's term: the pass's test above,
 * with dead features, which a fresh optimizer has not). */
START_TEST(a_step_reports_the_nested_loss)
{
    const size_t d_in = 8, d_sae = 20, n = 48, widths[3] = {4, 10, 20};
    float *x = test_gaussian(n, d_in, 1.0, 0.2, 31);
    reff_model r;
    reff_alloc(&r, REFF_MATRYOSHKA, REFF_AUTOENCODER, d_in, d_in, d_sae, 3, widths, 3);
    reff_randomize(&r, 0.4, 32);
    sae_model *m = families_lib_model(&r);
    sae_optimizer *o;
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    reff_train t = {.auxk_coeff = 0.0};
    reff_losses want;
    reff_loss(&r, &t, x, NULL, n, NULL, &want);
    sae_losses l;
    ck_assert_int_eq(sae_step(m, o, x, n, &l), SAE_OK);
    ck_assert_double_eq_tol(l.l2, want.l2, 1e-5 * (1.0 + want.l2));
    ck_assert_double_eq_tol(l.l0, want.l0, 1e-9);
    ck_assert_double_eq_tol(l.loss, want.loss, 1e-5 * (1.0 + want.loss));
    ck_assert_double_gt(want.loss, want.l2 + want.level_l2[0]); /* not the full width alone */
    /* the step set the BatchTopK threshold, used at inference */
    float threshold;
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, &threshold, 1), SAE_OK);
    ck_assert_float_gt(threshold, 0.0f);
    /* an autoencoder's step against y == x is sae_step, bit for bit */
    sae_model *m2 = families_lib_model(&r);
    sae_optimizer *o2;
    ck_assert_int_eq(sae_optimizer_create(&o2, m2), SAE_OK);
    float *y = malloc(n * d_in * sizeof(float));
    memcpy(y, x, n * d_in * sizeof(float));
    sae_losses l2;
    ck_assert_int_eq(sae_step_target(m2, o2, x, y, n, &l2), SAE_OK);
    ck_assert_double_eq(l.loss, l2.loss);
    model_snapshot s;
    snapshot_take(&s, m);
    ck_assert(snapshot_equal(&s, m2));
    snapshot_free(&s);
    free(y);
    sae_optimizer_free(o2);
    sae_model_free(m2);
    sae_optimizer_free(o);
    sae_model_free(m);
    reff_free(&r);
    free(x);
}
END_TEST

/* sae_loss_levels: each level's l2 at inference, against the reference's
 * inference features decoded level by level; the last level is sae_loss's
 * l2 and the levels' sum its loss. */
START_TEST(loss_levels_match_the_reference)
{
    const size_t d_in = 9, d_sae = 30, n = 37, widths[4] = {2, 7, 19, 30};
    reff_model r;
    reff_alloc(&r, REFF_MATRYOSHKA, REFF_AUTOENCODER, d_in, d_in, d_sae, 4, widths, 4);
    reff_randomize(&r, 0.4, 41);
    sae_model *m = families_lib_model(&r);
    float *x = test_gaussian(n, d_in, 1.0, 0.2, 42);
    for (int with_threshold = 0; with_threshold < 2; with_threshold++) {
        float threshold = with_threshold ? 0.3f : -1.0f; /* unset: ReLU */
        if (with_threshold)
            ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, &threshold, 1), SAE_OK);
        double *f = malloc(n * d_sae * sizeof(double)), *fl = malloc(n * d_sae * sizeof(double));
        double *y = malloc(n * d_in * sizeof(double));
        reff_infer(&r, threshold, x, n, f, NULL);
        double got[4], sum = 0.0;
        ck_assert_int_eq(sae_loss_levels(m, x, n, got, 4), SAE_OK);
        for (size_t lv = 0; lv < 4; lv++) {
            for (size_t k = 0; k < n * d_sae; k++)
                fl[k] = k % d_sae < widths[lv] ? f[k] : 0.0;
            reff_output(&r, x, fl, n, y);
            double want = 0.0;
            for (size_t k = 0; k < n * d_in; k++)
                want += (y[k] - x[k]) * (y[k] - x[k]) / (double)n;
            ck_assert_double_eq_tol(got[lv], want, 1e-5 * (1.0 + want));
            sum += got[lv];
        }
        sae_losses l;
        ck_assert_int_eq(sae_loss(m, x, n, 0.0, &l), SAE_OK);
        ck_assert_double_eq_tol(l.l2, got[3], 1e-6 * (1.0 + l.l2));
        ck_assert_double_eq_tol(l.loss, sum, 1e-6 * (1.0 + sum));
        ck_assert_double_ne(got[0], got[3]); /* the nested levels differ */
        free(y);
        free(fl);
        free(f);
    }
    sae_model_free(m);
    reff_free(&r);
    free(x);
}
END_TEST

START_TEST(loss_levels_bad_input_changes_nothing)
{
    const size_t d_in = 6, d_sae = 12, n = 8, widths[2] = {4, 12};
    sae_model *m, *relu;
    ck_assert_int_eq(sae_model_create_matryoshka(&m, d_in, d_sae, 1, 2, widths, 2), SAE_OK);
    ck_assert_int_eq(sae_model_create(&relu, d_in, d_sae, 1), SAE_OK);
    float *x = test_gaussian(n, d_in, 1.0, 0.0, 51);
    double l2[3] = {-1.0, -1.0, -1.0};
    ck_assert_int_eq(sae_loss_levels(NULL, x, n, l2, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss_levels(m, NULL, n, l2, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss_levels(m, x, n, NULL, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss_levels(m, x, 0, l2, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss_levels(m, x, SIZE_MAX / 2, l2, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss_levels(m, x, n, l2, 3), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "2 levels"));
    ck_assert_int_eq(sae_loss_levels(m, x, n, l2, 1), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_loss_levels(relu, x, n, l2, 1), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "not a Matryoshka"));
    x[7] = NAN;
    ck_assert_int_eq(sae_loss_levels(m, x, n, l2, 2), SAE_E_NONFINITE);
    x[7] = 0.5f;
    for (int k = 0; k < 3; k++)
        ck_assert_double_eq(l2[k], -1.0);
    ck_assert_int_eq(sae_loss_levels(m, x, n, l2, 2), SAE_OK);
    ck_assert_double_ge(l2[0], l2[1] * 0.5);
    ck_assert_double_eq(l2[2], -1.0);
    free(x);
    sae_model_free(relu);
    sae_model_free(m);
}
END_TEST

/* ---- learning ------------------------------------------------------------------------ */

/* A Matryoshka SAE finds the true directions of sparse data, and its first
 * levels reconstruct on their own far better than a BatchTopK SAE's first
 * features of the same count do (the point of the nesting). */
START_TEST(matryoshka_recovers_sparse_directions)
{
    const size_t d_in = 32, n_true = 48, d_sae = 96, n = 8192, batch = 256, k = 3;
    const size_t widths[3] = {16, 48, 96};
    float *dirs_f = malloc(n_true * d_in * sizeof(float));
    float *x = test_sparse_data(n, d_in, n_true, 3.0, 61, dirs_f);
    double *dirs = malloc(n_true * d_in * sizeof(double));
    for (size_t j = 0; j < n_true * d_in; j++)
        dirs[j] = dirs_f[j];
    free(dirs_f);
    /* the same initialisation for both: BatchTopK is the one-level Matryoshka */
    sae_model *models[2];
    ck_assert_int_eq(sae_model_create_matryoshka(&models[0], d_in, d_sae, 62, k, widths, 3),
                     SAE_OK);
    ck_assert_int_eq(sae_model_create_matryoshka(&models[1], d_in, d_sae, 62, k, NULL, 0),
                     SAE_OK);
    double levels[2][3], fvu_of[2], mmcs_of[2];
    for (int which = 0; which < 2; which++) {
        sae_model *m = models[which];
        sae_optimizer *o;
        ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
        ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 3e-3), SAE_OK);
        /* a threshold estimate that follows a run of 384 steps */
        ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_THRESHOLD_BETA, 0.99), SAE_OK);
        sae_losses l;
        for (size_t epoch = 0; epoch < 12; epoch++)
            for (size_t t0 = 0; t0 < n; t0 += batch)
                ck_assert_int_eq(sae_step(m, o, x + t0 * d_in, batch, &l), SAE_OK);
        sae_optimizer_free(o);
        /* the BatchTopK model's first features, read as a Matryoshka's levels */
        sae_model *view = m;
        if (which == 1) {
            ck_assert_int_eq(sae_model_create_matryoshka(&view, d_in, d_sae, 62, k, widths, 3),
                             SAE_OK);
            static const int tensors[] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC,
                                          SAE_THRESHOLD};
            for (size_t q = 0; q < 5; q++) {
                size_t count = sae_model_tensor_size(m, tensors[q]);
                float *v = malloc(count * sizeof(float));
                ck_assert_int_eq(sae_model_get_tensor(m, tensors[q], v, count), SAE_OK);
                ck_assert_int_eq(sae_model_set_tensor(view, tensors[q], v, count), SAE_OK);
                free(v);
            }
        }
        ck_assert_int_eq(sae_loss_levels(view, x, n, levels[which], 3), SAE_OK);
        double fvu;
        ck_assert_int_eq(sae_fvu(m, x, n, &fvu), SAE_OK);
        ck_assert_int_eq(sae_loss(m, x, n, 0.0, &l), SAE_OK);
        float *w_dec = malloc(d_sae * d_in * sizeof(float));
        ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, w_dec, d_sae * d_in), SAE_OK);
        double above, mmcs = reff_mmcs(w_dec, d_sae, d_in, dirs, n_true, &above);
        fprintf(stderr, "%s: fvu %.4f, l0 %.2f, decoder MMCS %.3f (%.0f%% > 0.9), l2 of the "
                        "first 16 / 48 / 96 features %.4f / %.4f / %.4f\n",
                which ? "batchtopk" : "matryoshka", fvu, l.l0, mmcs, 100 * above,
                levels[which][0], levels[which][1], levels[which][2]);
        fvu_of[which] = fvu;
        mmcs_of[which] = mmcs;
        if (which == 1)
            sae_model_free(view);
        free(w_dec);
    }
    ck_assert_double_gt(levels[0][0], levels[0][1]);
    ck_assert_double_gt(levels[0][1], levels[0][2]);
    ck_assert_double_lt(fvu_of[0], 0.2);
    ck_assert_double_gt(mmcs_of[0], 0.9);
    /* the nesting: the first features explain much more on their own
     * (measured: 0.62 vs 0.87 for 16, 0.16 vs 0.56 for 48) */
    ck_assert_double_lt(levels[0][0], levels[1][0]);
    ck_assert_double_lt(levels[0][1], 0.5 * levels[1][1]);
    sae_model_free(models[1]);
    sae_model_free(models[0]);
    free(dirs);
    free(x);
}
END_TEST

static Suite *matryoshka_suite(void)
{
    Suite *s = suite_create("matryoshka");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, gradients_match_the_reference);
    tcase_add_test(tc, the_pass_does_not_depend_on_threads);
    tcase_add_test(tc, a_step_reports_the_nested_loss);
    tcase_add_test(tc, loss_levels_match_the_reference);
    tcase_add_test(tc, loss_levels_bad_input_changes_nothing);
    suite_add_tcase(s, tc);
    /* training runs: tagged "slow" so the valgrind runs skip them */
    TCase *learning = tcase_create("learning");
    tcase_set_timeout(learning, 300);
    tcase_set_tags(learning, "slow");
    tcase_add_test(learning, matryoshka_recovers_sparse_directions);
    suite_add_tcase(s, learning);
    return s;
}

int main(void) { return test_run_suite(matryoshka_suite()); }
