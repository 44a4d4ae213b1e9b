/* Learning: on synthetic sparse data the loss falls and the features become
 * sparse. Uses only the public API, as a host program would. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>

START_TEST(training_on_sparse_data_learns_sparse_features)
{
    const size_t d_in = 32, d_sae = 64, n_true = 24, n_data = 8192, batch = 128;
    float *data = test_sparse_data(n_data, d_in, n_true, 3.0, 17, NULL);
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, 1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 3e-3), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_L1_COEFF, 0.1), SAE_OK);
    sae_losses start, end;
    ck_assert_int_eq(sae_loss(m, data, 1024, 0.1, &start), SAE_OK);
    for (size_t s = 0; s < 600; s++) {
        const float *x = data + (s * batch % n_data) * d_in;
        ck_assert_int_eq(sae_step(m, o, x, batch, NULL), SAE_OK);
    }
    ck_assert_int_eq(sae_loss(m, data, 1024, 0.1, &end), SAE_OK);
    double fvu;
    ck_assert_int_eq(sae_fvu(m, data, 1024, &fvu), SAE_OK);
    printf("loss %.4f -> %.4f, l2 %.4f -> %.4f, l0 %.1f -> %.1f (d_sae %zu), fvu %.3f\n",
           start.loss, end.loss, start.l2, end.l2, start.l0, end.l0, d_sae, fvu);
    ck_assert_double_lt(end.loss, 0.3 * start.loss);
    ck_assert_double_lt(end.l0, d_sae / 4.0);
    ck_assert_double_lt(fvu, 0.1);
    free(data);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

static Suite *training_suite(void)
{
    Suite *s = suite_create("training");
    TCase *tc = tcase_create("learning");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, training_on_sparse_data_learns_sparse_features);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(training_suite)
