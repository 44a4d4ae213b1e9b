/* libsae-mpi's counting communicator over the thread double (no mpirun): it
 * forwards every call and result, counts calls and payload bytes per kind on
 * each rank, passes failures through (counted), and refuses communicators
 * it cannot forward to. */
#include "../comm_threads.h"
#include "../testutil.h"

#include <libsae/sae_mpi.h>
#include <string.h>

START_TEST(refuses_what_it_cannot_forward)
{
    test_comm_group *g = test_comm_group_create(2, 0);
    ck_assert_ptr_nonnull(g);
    sae_comm inner, out;
    sae_mpi_counts counts;
    test_comm_get(g, 1, &inner);
    ck_assert_int_eq(sae_mpi_counting_create(NULL, &inner, &counts), SAE_E_INVALID_ARG);
    struct { const char *what; sae_comm bad; bool null_counts; } cases[8];
    for (int k = 0; k < 8; k++) {
        cases[k].bad = inner;
        cases[k].null_counts = false;
    }
    cases[0].what = "struct_size too small", cases[0].bad.struct_size = sizeof inner - 1;
    cases[1].what = "no ranks", cases[1].bad.n_ranks = 0;
    cases[2].what = "negative rank", cases[2].bad.rank = -1;
    cases[3].what = "rank past the end", cases[3].bad.rank = 2;
    cases[4].what = "NULL allreduce_f32", cases[4].bad.allreduce_f32 = NULL;
    cases[5].what = "NULL allgather", cases[5].bad.allgather = NULL;
    cases[6].what = "NULL broadcast", cases[6].bad.broadcast = NULL;
    cases[7].what = "NULL counts", cases[7].null_counts = true;
    for (int k = 0; k < 8; k++) {
        memset(&out, 0xFF, sizeof out);
        int rc = sae_mpi_counting_create(&out, &cases[k].bad, cases[k].null_counts ? NULL : &counts);
        ck_assert_msg(rc == SAE_E_INVALID_ARG, "%s: %d", cases[k].what, rc);
        ck_assert_msg(out.ctx == NULL && out.allreduce_f32 == NULL && out.struct_size == 0,
                      "%s: *out not zeroed", cases[k].what);
        ck_assert_msg(strncmp(sae_mpi_error_detail(), "sae_mpi_counting_create: ", 25) == 0,
                      "%s: detail \"%s\"", cases[k].what, sae_mpi_error_detail());
    }
    ck_assert_int_eq(sae_mpi_counting_create(&out, NULL, &counts), SAE_E_INVALID_ARG);
    ck_assert_str_eq(sae_mpi_error_detail(), "sae_mpi_counting_create: inner is NULL");
    /* a later, larger struct is fine */
    sae_comm later = inner;
    later.struct_size = sizeof inner + 64;
    ck_assert_int_eq(sae_mpi_counting_create(&out, &later, &counts), SAE_OK);
    ck_assert_uint_eq(out.struct_size, sizeof out);
    sae_mpi_counting_free(&out);
    sae_mpi_counting_free(NULL);
    sae_mpi_counting_free(&inner); /* not a counting communicator: untouched */
    ck_assert_ptr_nonnull(inner.ctx);
    test_comm_group_free(g);
}
END_TEST

typedef struct counted_run {
    sae_mpi_counts counts[3];
    int status[3];
    float sums[3][4];
    int gathered[3][3];
    double bcast[3];
} counted_run;

static void counted_calls(int rank, const sae_comm *inner, void *arg)
{
    counted_run *run = arg;
    sae_comm c;
    if (sae_mpi_counting_create(&c, inner, &run->counts[rank]) != SAE_OK) {
        run->status[rank] = -100;
        return;
    }
    float f[4] = {1.0f, 2.0f, (float)rank, 0.5f};
    double d[2] = {rank, 1.0};
    int mine = 10 * rank + 1;
    double b = rank + 0.25;
    int rc = c.allreduce_f32(c.ctx, f, 4);
    rc |= c.allreduce_f64(c.ctx, d, 2);
    rc |= c.allreduce_f64(c.ctx, d, 1);
    rc |= c.allgather(c.ctx, &mine, sizeof mine, run->gathered[rank]);
    rc |= c.broadcast(c.ctx, &b, sizeof b, 2);
    memcpy(run->sums[rank], f, sizeof f);
    run->bcast[rank] = b;
    run->status[rank] = rc;
    sae_mpi_counting_free(&c);
}

START_TEST(counts_calls_and_payload_per_rank)
{
    test_comm_group *g = test_comm_group_create(3, 0);
    ck_assert_ptr_nonnull(g);
    counted_run run;
    memset(&run, 0, sizeof run);
    test_comm_run(g, counted_calls, &run);
    for (int r = 0; r < 3; r++) {
        ck_assert_int_eq(run.status[r], 0);
        /* results pass through */
        ck_assert_float_eq(run.sums[r][0], 3.0f);
        ck_assert_float_eq(run.sums[r][2], 3.0f);
        ck_assert_float_eq(run.sums[r][3], 1.5f);
        for (int q = 0; q < 3; q++)
            ck_assert_int_eq(run.gathered[r][q], 10 * q + 1);
        ck_assert_double_eq(run.bcast[r], 2.25);
        /* and are counted */
        const sae_mpi_counts *c = &run.counts[r];
        ck_assert_uint_eq(c->calls[SAE_MPI_ALLREDUCE_F32], 1);
        ck_assert_uint_eq(c->bytes[SAE_MPI_ALLREDUCE_F32], 16);
        ck_assert_uint_eq(c->calls[SAE_MPI_ALLREDUCE_F64], 2);
        ck_assert_uint_eq(c->bytes[SAE_MPI_ALLREDUCE_F64], 24);
        ck_assert_uint_eq(c->calls[SAE_MPI_ALLGATHER], 1);
        ck_assert_uint_eq(c->bytes[SAE_MPI_ALLGATHER], sizeof(int));
        ck_assert_uint_eq(c->calls[SAE_MPI_BROADCAST], 1);
        ck_assert_uint_eq(c->bytes[SAE_MPI_BROADCAST], sizeof(double));
    }
    test_comm_group_free(g);
}
END_TEST

START_TEST(failures_pass_through_and_are_counted)
{
    test_comm_group *g = test_comm_group_create(3, 0);
    ck_assert_ptr_nonnull(g);
    test_comm_fail_at(g, 1, 3); /* rank 1's allgather fails; the group breaks */
    counted_run run;
    memset(&run, 0, sizeof run);
    test_comm_run(g, counted_calls, &run);
    for (int r = 0; r < 3; r++) {
        ck_assert_int_ne(run.status[r], 0);
        ck_assert_uint_eq(run.counts[r].calls[SAE_MPI_ALLGATHER], 1);
        ck_assert_uint_eq(run.counts[r].calls[SAE_MPI_BROADCAST], 1);
    }
    test_comm_group_free(g);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("mpi_counting");
    TCase *tc = tcase_create("counting");
    tcase_add_test(tc, refuses_what_it_cannot_forward);
    tcase_add_test(tc, counts_calls_and_payload_per_rank);
    tcase_add_test(tc, failures_pass_through_and_are_counted);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(make_suite)
