#define _POSIX_C_SOURCE 200809L /* pthread barriers */
/* sae_error_detail: why the last failing call on this thread failed. Per
 * thread, "" before the first failure, left alone by successful calls, and
 * naming the function and what was wrong. */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* The detail of the last failure contains every one of the given texts. */
static void expect_detail(const char *a, const char *b)
{
    const char *d = sae_error_detail();
    ck_assert_ptr_nonnull(d);
    ck_assert_msg(strstr(d, a) != NULL, "detail \"%s\" lacks \"%s\"", d, a);
    if (b)
        ck_assert_msg(strstr(d, b) != NULL, "detail \"%s\" lacks \"%s\"", d, b);
}

static void *fresh_thread(void *arg)
{
    (void)arg;
    return (void *)(strcmp(sae_error_detail(), "") == 0 ? "empty" : "not empty");
}

typedef struct thread_case {
    int option;        /* what the thread asks sae_option_bounds */
    pthread_barrier_t *both_failed;
    char seen[256];    /* its detail after the other thread failed too */
} thread_case;

static void *failing_thread(void *arg)
{
    thread_case *c = arg;
    double lo, hi;
    unsigned flags;
    int rc = sae_option_bounds(c->option, &lo, &hi, &flags);
    pthread_barrier_wait(c->both_failed);
    snprintf(c->seen, sizeof c->seen, "%d %s", rc, sae_error_detail());
    return NULL;
}

START_TEST(detail_is_per_thread)
{
    pthread_t t;
    void *result;
    ck_assert_int_eq(pthread_create(&t, NULL, fresh_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &result), 0);
    ck_assert_str_eq(result, "empty");

    /* two threads fail at once, each sees its own failure */
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    thread_case a = {1001, &barrier, ""}, b = {2002, &barrier, ""};
    pthread_t ta, tb;
    ck_assert_int_eq(pthread_create(&ta, NULL, failing_thread, &a), 0);
    ck_assert_int_eq(pthread_create(&tb, NULL, failing_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&barrier);
    ck_assert_str_eq(a.seen, "-1 sae_option_bounds: 1001 is not an option");
    ck_assert_str_eq(b.seen, "-1 sae_option_bounds: 2002 is not an option");
}
END_TEST

START_TEST(detail_survives_successful_calls)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_clone(&m, NULL), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(), "sae_model_clone: m is NULL");
    ck_assert_int_eq(sae_model_create(&m, 3, 4, 1), SAE_OK);
    double v;
    ck_assert_int_eq(sae_option_default(SAE_OPT_LR, &v), SAE_OK);
    ck_assert_str_eq(sae_error_detail(), "sae_model_clone: m is NULL");
    sae_model_free(m);
}
END_TEST

/* Options: the option's name, the value and the allowed range. */
START_TEST(option_failures_name_the_option_and_its_range)
{
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, 3, 4, 1), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_BETA1, 1.0), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(),
                     "sae_optimizer_set: option beta1 (2): 1 is not a number in [0, 1)");
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_THREADS, 2.5), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(),
                     "sae_optimizer_set: option threads (7): 2.5 is not a whole number in [0, 1024]");
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, -1e-3), SAE_E_INVALID_ARG);
    expect_detail("option lr (1): -0.001 is not a number in (0, ", NULL);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_EPS, NAN), SAE_E_NONFINITE);
    expect_detail("sae_optimizer_set: option eps (4): ", "not finite");
    ck_assert_int_eq(sae_optimizer_set(o, 14, 1.0), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(), "sae_optimizer_set: 14 is not an option");
    ck_assert_int_eq(sae_optimizer_get(o, SAE_OPT_LR, NULL), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_error_detail(), "sae_optimizer_get: value is NULL");
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

static Suite *errors_suite(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = tcase_create("detail");
    tcase_add_test(tc, detail_is_per_thread);
    tcase_add_test(tc, detail_survives_successful_calls);
    tcase_add_test(tc, option_failures_name_the_option_and_its_range);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(errors_suite)
