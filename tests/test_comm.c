/* The library's use of a communicator (src/comm.c), over the thread double:
 * the struct check, exchanges that agree on the first failure, sums with the
 * same bits on every rank when the transport's do not, the hash that detects
 * a rank-dependent allreduce, and transport failures seen by every rank. */
#include "../src/parallel.h"
#include "comm_threads.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_RANKS = 3 };

START_TEST(copy_checks_the_struct)
{
    test_comm_group *g = test_comm_group_create(3, 0);
    ck_assert_ptr_nonnull(g);
    sae_comm good, dst, bad;
    test_comm_get(g, 2, &good);
    ck_assert_int_eq(sae__comm_copy(&dst, &good), SAE_OK);
    ck_assert_int_eq(dst.rank, 2);
    ck_assert_int_eq(dst.n_ranks, 3);
    ck_assert_uint_eq(dst.struct_size, sizeof dst);
    /* a later struct with more fields: the known ones are copied */
    bad = good;
    bad.struct_size = sizeof bad + 40;
    ck_assert_int_eq(sae__comm_copy(&dst, &bad), SAE_OK);
    ck_assert_uint_eq(dst.struct_size, sizeof dst);
    for (int k = 0; k < 8; k++) {
        bad = good;
        switch (k) {
        case 0: bad.struct_size = SAE_COMM_SIZE_0_2 - 1; break;
        case 1: bad.struct_size = 0; break;
        case 2: bad.n_ranks = 0; break;
        case 3: bad.rank = -1; break;
        case 4: bad.rank = 3; break;
        case 5: bad.allreduce_f64 = NULL; break;
        case 6: bad.allgather = NULL; break;
        default: bad.broadcast = NULL; break;
        }
        memset(&dst, 0x5A, sizeof dst);
        sae_comm before = dst;
        ck_assert_msg(sae__comm_copy(&dst, &bad) == SAE_E_INVALID_ARG, "case %d accepted", k);
        ck_assert_msg(memcmp(&dst, &before, sizeof dst) == 0, "case %d changed dst", k);
    }
    ck_assert_int_eq(sae__comm_copy(&dst, NULL), SAE_E_INVALID_ARG);
    test_comm_group_free(g);
}
END_TEST

typedef struct record {
    int32_t status;
    int32_t rank;
    double value;
} record;

typedef struct exchange_run {
    int32_t status_of[MAX_RANKS];
    int rc[MAX_RANKS], agreed[MAX_RANKS];
    record all[MAX_RANKS][MAX_RANKS];
} exchange_run;

static void exchange_records(int rank, const sae_comm *c, void *arg)
{
    exchange_run *run = arg;
    record mine = {run->status_of[rank], rank, rank * 1.5};
    run->rc[rank] = sae__comm_exchange(c, &mine, sizeof mine, run->all[rank], &run->agreed[rank]);
}

START_TEST(exchange_agrees_on_the_first_failure)
{
    const int32_t cases[][MAX_RANKS] = {
        {SAE_OK, SAE_OK, SAE_OK},
        {SAE_OK, SAE_E_NOMEM, SAE_E_NONFINITE}, /* rank 1's, the lowest failing rank */
        {SAE_E_INVALID_ARG, SAE_OK, SAE_E_NOMEM},
        {SAE_OK, SAE_OK, SAE_E_NONFINITE},
    };
    const int expect[] = {SAE_OK, SAE_E_NOMEM, SAE_E_INVALID_ARG, SAE_E_NONFINITE};
    for (size_t k = 0; k < sizeof expect / sizeof expect[0]; k++) {
        test_comm_group *g = test_comm_group_create(3, 0);
        ck_assert_ptr_nonnull(g);
        exchange_run run;
        memset(&run, 0, sizeof run);
        memcpy(run.status_of, cases[k], sizeof run.status_of);
        test_comm_run(g, exchange_records, &run);
        for (int r = 0; r < 3; r++) {
            ck_assert_int_eq(run.rc[r], SAE_OK);
            ck_assert_int_eq(run.agreed[r], expect[k]);
            for (int q = 0; q < 3; q++) {
                ck_assert_int_eq(run.all[r][q].rank, q);
                ck_assert_int_eq(run.all[r][q].status, cases[k][q]);
                ck_assert_double_eq(run.all[r][q].value, q * 1.5);
            }
        }
        test_comm_group_free(g);
    }
}
END_TEST

START_TEST(transport_failure_is_seen_by_every_rank)
{
    test_comm_group *g = test_comm_group_create(3, 0);
    ck_assert_ptr_nonnull(g);
    test_comm_fail_at(g, 1, 0);
    exchange_run run;
    memset(&run, 0, sizeof run);
    test_comm_run(g, exchange_records, &run);
    for (int r = 0; r < 3; r++) {
        ck_assert_int_eq(run.rc[r], SAE_E_COMM);
        ck_assert_int_eq(run.agreed[r], SAE_E_COMM);
    }
    test_comm_group_free(g);
}
END_TEST

/* Values whose float sum depends on the order: the rank-order sum and the
 * sum starting at another rank differ in the last bits. */
enum { N_VALUES = 64 };

static float value_of(int rank, size_t k)
{
    static const float big[3] = {1e8f, 3.0f, -1e8f};
    return big[rank] * (float)(k + 1) + (float)rank * 0.37f + (float)k * 1e-3f;
}

typedef struct hash_record {
    int32_t status;
    int32_t pad;
    uint64_t hash;
} hash_record;

typedef struct sums_run {
    float raw[MAX_RANKS][N_VALUES];      /* the transport's allreduce_f32 */
    float ordered[MAX_RANKS][N_VALUES];  /* sae__comm_sum_ordered_f32 */
    double ordered64[MAX_RANKS][N_VALUES];
    float settled[MAX_RANKS][N_VALUES];  /* allreduce, then same_or_root */
    bool replaced[MAX_RANKS];
    int rc[MAX_RANKS];
} sums_run;

static void sum_everything(int rank, const sae_comm *c, void *arg)
{
    sums_run *run = arg;
    float mine[N_VALUES], scratch[MAX_RANKS * N_VALUES];
    double mine64[N_VALUES], scratch64[MAX_RANKS * N_VALUES];
    for (size_t k = 0; k < N_VALUES; k++) {
        mine[k] = value_of(rank, k);
        mine64[k] = (double)mine[k] * 1e10 + rank;
    }
    int rc = sae__comm_sum_ordered_f32(c, mine, N_VALUES, run->ordered[rank], scratch);
    if (rc == SAE_OK)
        rc = sae__comm_sum_ordered_f64(c, mine64, N_VALUES, mine64, scratch64); /* in place */
    memcpy(run->ordered64[rank], mine64, sizeof mine64);
    memcpy(run->raw[rank], mine, sizeof mine);
    if (rc == SAE_OK)
        rc = sae__comm_allreduce_f32(c, run->raw[rank], N_VALUES);
    /* the step's pattern: allreduce, hash, exchange the hashes, settle */
    memcpy(run->settled[rank], run->raw[rank], sizeof mine);
    hash_record rec = {rc, 0, 0}, all[MAX_RANKS];
    rec.hash = sae__hash_f32(run->settled[rank], N_VALUES);
    int agreed;
    if (rc == SAE_OK)
        rc = sae__comm_exchange(c, &rec, sizeof rec, all, &agreed);
    if (rc == SAE_OK)
        rc = sae__comm_same_or_root(c, run->settled[rank], N_VALUES, all, sizeof rec,
                                    offsetof(hash_record, hash), &run->replaced[rank]);
    run->rc[rank] = rc;
}

START_TEST(replicated_sums_have_the_same_bits_on_every_rank)
{
    for (int skewed = 0; skewed <= 1; skewed++) {
        test_comm_group *g = test_comm_group_create(3, skewed ? TEST_COMM_SKEWED : 0);
        ck_assert_ptr_nonnull(g);
        sums_run *run = calloc(1, sizeof *run);
        ck_assert_ptr_nonnull(run);
        test_comm_run(g, sum_everything, run);
        bool raw_differs = false;
        for (int r = 0; r < 3; r++) {
            ck_assert_int_eq(run->rc[r], SAE_OK);
            for (size_t k = 0; k < N_VALUES; k++) {
                /* the rank-order sums, computed here independently */
                float want = value_of(0, k);
                want += value_of(1, k);
                want += value_of(2, k);
                double want64 = ((double)value_of(0, k) * 1e10 + 0) +
                                ((double)value_of(1, k) * 1e10 + 1);
                want64 += (double)value_of(2, k) * 1e10 + 2;
                ck_assert_mem_eq(&run->ordered[r][k], &want, sizeof want);
                ck_assert_mem_eq(&run->ordered64[r][k], &want64, sizeof want64);
                raw_differs |= memcmp(&run->raw[r][k], &run->raw[0][k], sizeof(float)) != 0;
            }
            /* after settling, every rank holds rank 0's allreduce */
            ck_assert_mem_eq(run->settled[r], run->raw[0], sizeof run->raw[0]);
            ck_assert(run->replaced[r] == (bool)skewed);
        }
        /* the skewed double really gives different bits per rank (so the
         * checks above can fail), the plain one does not */
        ck_assert(raw_differs == (bool)skewed);
        free(run);
        test_comm_group_free(g);
    }
}
END_TEST

START_TEST(hash_sees_any_changed_value)
{
    const size_t n = 1037; /* not a multiple of the lanes */
    float *v = test_gaussian(1, n, 1.0, 0.0, 9);
    ck_assert_ptr_nonnull(v);
    uint64_t h0;
    double sq = sae__sumsq_hash_f32(v, n, &h0);
    double want = 0.0;
    for (size_t k = 0; k < n; k++)
        want += (double)v[k] * v[k];
    ck_assert_double_eq_tol(sq, want, 1e-12 * want);
    ck_assert_uint_eq(sae__hash_f32(v, n), h0);
    for (size_t k = 0; k < n; k += 7) {
        float keep = v[k];
        v[k] = nextafterf(keep, INFINITY);
        ck_assert_msg(sae__hash_f32(v, n) != h0, "a changed value %zu kept the hash", k);
        v[k] = -keep;
        ck_assert_msg(sae__hash_f32(v, n) != h0, "a sign flip at %zu kept the hash", k);
        v[k] = keep;
    }
    /* swapping two different values changes it too (positions are weighted) */
    float t = v[3];
    v[3] = v[500];
    v[500] = t;
    ck_assert_uint_ne(sae__hash_f32(v, n), h0);
    /* 0 and -0 differ as bits, and so do their hashes */
    float z[2] = {0.0f, 1.0f}, nz[2] = {-0.0f, 1.0f};
    ck_assert_uint_ne(sae__hash_f32(z, 2), sae__hash_f32(nz, 2));
    free(v);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("comm");
    TCase *tc = tcase_create("comm");
    tcase_add_test(tc, copy_checks_the_struct);
    tcase_add_test(tc, exchange_agrees_on_the_first_failure);
    tcase_add_test(tc, transport_failure_is_seen_by_every_rank);
    tcase_add_test(tc, replicated_sums_have_the_same_bits_on_every_rank);
    tcase_add_test(tc, hash_sees_any_changed_value);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(make_suite)
