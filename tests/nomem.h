/* Allocation-failure injection for the Check suites (the pattern of
 * tests/test_memory.c): fail the 1st, 2nd, ... allocation of a call until it
 * succeeds. Needs the test build of the library (SAE_TESTING). */
#ifndef SAE_TEST_NOMEM_H
#define SAE_TEST_NOMEM_H

#include "../src/internal.h"

#include <check.h>

typedef int (*nomem_call)(void *ctx);

/* Each failure must return SAE_E_NOMEM, leak nothing and, checked by
 * after_failure (may be NULL), change nothing. Returns the number of
 * allocation sites the call went through before it succeeded. */
static inline int nomem_fail_each_allocation(nomem_call call, void *ctx,
                                             void (*after_failure)(void *ctx))
{
    for (long k = 0;; k++) {
        size_t live = sae__test_bytes_live;
        sae__test_fail_countdown = k;
        int rc = call(ctx);
        sae__test_fail_countdown = -1;
        if (rc == SAE_OK)
            return (int)k;
        ck_assert_msg(rc == SAE_E_NOMEM, "allocation %ld: status %d", k, rc);
        ck_assert_msg(sae__test_bytes_live == live, "allocation %ld leaked %zu bytes", k,
                      sae__test_bytes_live - live);
        if (after_failure)
            after_failure(ctx);
        ck_assert_int_lt(k, 1000);
    }
}

#endif
