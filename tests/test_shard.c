/* Feature shards (src/shard.c): TopK's per-token selection across shards,
 * over the thread double with 2 and 3 uneven shards, against a reference that
 * selects from the whole row, many ties at the k-th value included. */
#include "../src/parallel.h"
#include "comm_threads.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

enum { D = 23, ROWS = 48, MAX_K = 8, MAX_RANKS = 3 };

/* The single-process rule on a whole row: keep the k largest positive values,
 * ties at the k-th kept in feature order. */
static void reference_topk(const float *row, size_t d, size_t k, float *out)
{
    memset(out, 0, d * sizeof *out);
    for (size_t kept = 0; kept < k; kept++) {
        size_t best = d;
        for (size_t i = 0; i < d; i++)
            if (row[i] > 0.0f && out[i] == 0.0f && (best == d || row[i] > row[best]))
                best = i; /* strictly greater: the lowest index wins a tie */
        if (best == d)
            break;
        out[best] = row[best];
    }
}

typedef struct shard_run {
    const float *rows;          /* ROWS x D, the whole pre-activations after ReLU */
    size_t k;
    size_t begin[MAX_RANKS + 1]; /* shard r: features [begin[r], begin[r+1]) */
    float result[ROWS][D];      /* each shard writes its columns */
    int rc[MAX_RANKS], agreed[MAX_RANKS];
    int status[MAX_RANKS];      /* what each rank brings to the exchange */
} shard_run;

static void select_on_shard(int rank, const sae_comm *c, void *arg)
{
    shard_run *run = arg;
    const size_t b = run->begin[rank], w = run->begin[rank + 1] - b, k = run->k;
    float local[ROWS][D], cand[ROWS * MAX_K];
    sae_shard_cut cut[ROWS];
    void *scratch = malloc(sae__shard_select_scratch(c->n_ranks, ROWS, k));
    memset(cand, 0, sizeof cand);
    for (size_t t = 0; t < ROWS; t++) {
        /* the local selection, by the same rule, then its values as candidates */
        reference_topk(run->rows + t * D + b, w, k, local[t]);
        size_t n = 0;
        for (size_t i = 0; i < w; i++)
            if (local[t][i] > 0.0f)
                cand[t * k + n++] = local[t][i];
    }
    run->rc[rank] = sae__shard_select(c, run->status[rank], ROWS, k, cand, cut, scratch,
                                      &run->agreed[rank]);
    if (run->rc[rank] == SAE_OK && run->agreed[rank] == SAE_OK)
        for (size_t t = 0; t < ROWS; t++) {
            sae__shard_keep(local[t], w, cut[t]);
            memcpy(&run->result[t][b], local[t], w * sizeof(float));
        }
    free(scratch);
}

/* Pre-activations after ReLU with many ties: quarters in [0, 2], a third of
 * them 0, and some rows with fewer than k positive values. */
static float *tied_rows(uint64_t seed)
{
    test_rng r = {seed};
    float *v = malloc(ROWS * D * sizeof *v);
    for (size_t t = 0; t < ROWS; t++)
        for (size_t i = 0; i < D; i++) {
            double u = test_uniform(&r);
            bool sparse_row = t % 7 == 3;
            v[t * D + i] = (u < (sparse_row ? 0.85 : 0.33)) ? 0.0f : (float)((int)(u * 8.0)) / 4.0f;
        }
    return v;
}

START_TEST(topk_across_shards_is_the_whole_rows_topk)
{
    static const size_t splits[][MAX_RANKS + 1] = {
        {0, 11, D, 0}, {0, 1, D, 0}, {0, 7, 15, D}, {0, 3, 4, D}, {0, 10, 20, D},
    };
    static const int n_ranks[] = {2, 2, 3, 3, 3};
    float *rows = tied_rows(7);
    for (size_t s = 0; s < sizeof n_ranks / sizeof n_ranks[0]; s++)
        for (size_t k = 1; k <= MAX_K; k += 3) {
            shard_run run;
            memset(&run, 0, sizeof run);
            run.rows = rows;
            run.k = k;
            memcpy(run.begin, splits[s], sizeof run.begin);
            test_comm_group *g = test_comm_group_create(n_ranks[s], 0);
            ck_assert_ptr_nonnull(g);
            test_comm_run(g, select_on_shard, &run);
            test_comm_group_free(g);
            for (int r = 0; r < n_ranks[s]; r++) {
                ck_assert_int_eq(run.rc[r], SAE_OK);
                ck_assert_int_eq(run.agreed[r], SAE_OK);
            }
            for (size_t t = 0; t < ROWS; t++) {
                float want[D];
                reference_topk(rows + t * D, D, k, want);
                for (size_t i = 0; i < D; i++)
                    ck_assert_msg(run.result[t][i] == want[i],
                                  "split %zu, k %zu, token %zu, feature %zu: %g, want %g", s, k, t,
                                  i, (double)run.result[t][i], (double)want[i]);
            }
        }
    free(rows);
}
END_TEST

START_TEST(a_failed_rank_stops_every_rank)
{
    float *rows = tied_rows(8);
    shard_run run;
    memset(&run, 0, sizeof run);
    run.rows = rows;
    run.k = 4;
    const size_t split[] = {0, 9, 17, D};
    memcpy(run.begin, split, sizeof split);
    run.status[2] = SAE_E_NONFINITE;
    run.status[1] = SAE_E_NOMEM;
    test_comm_group *g = test_comm_group_create(3, 0);
    test_comm_run(g, select_on_shard, &run);
    test_comm_group_free(g);
    for (int r = 0; r < 3; r++) {
        ck_assert_int_eq(run.rc[r], SAE_OK);
        ck_assert_int_eq(run.agreed[r], SAE_E_NOMEM); /* rank 1's: the lowest */
    }
    free(rows);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("shard");
    TCase *tc = tcase_create("shard");
    tcase_add_test(tc, topk_across_shards_is_the_whole_rows_topk);
    tcase_add_test(tc, a_failed_rank_stops_every_rank);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(make_suite)
