/*
 * A test double of a communicator: N ranks as threads of one process.
 *
 * Each rank gets its own sae_comm (test_comm_get); a collective waits until
 * every rank has called it (a rendezvous), then each rank computes its result
 * from all ranks' buffers. Sums run over the ranks in rank order, in the
 * element type, so results are deterministic and the same on every rank --
 * except in TEST_COMM_SKEWED mode, where rank r adds the ranks in the order
 * r, r+1, ..., r-1: the sum a real transport may give, different in the
 * last bits on each rank.
 *
 * Calls that do not match across ranks (kind, count, root) are bugs of the
 * caller: the double prints both calls and aborts the test process.
 *
 * Failure injection: test_comm_fail_at(g, rank, call) makes that rank's
 * call number `call` (0-based, every kind counted) return 1 without taking
 * part; the group is then broken: every collective pending or started later,
 * on any rank, returns 1 at once (as a transport whose peer died would).
 */
#ifndef SAE_TEST_COMM_THREADS_H
#define SAE_TEST_COMM_THREADS_H

#include <libsae/sae.h>
#include <stdint.h>

enum { TEST_COMM_SKEWED = 1 };

typedef struct test_comm_group test_comm_group;

/* NULL if memory is short. */
test_comm_group *test_comm_group_create(int n_ranks, unsigned flags);
void test_comm_group_free(test_comm_group *g);

/* The communicator of rank `rank` (valid as long as the group). */
void test_comm_get(test_comm_group *g, int rank, sae_comm *out);

/* Make rank's call number `call` fail (see above). */
void test_comm_fail_at(test_comm_group *g, int rank, uint64_t call);

/* Calls made by rank so far (every kind). */
uint64_t test_comm_calls(const test_comm_group *g, int rank);

/* Run fn(rank, comm, arg) on one thread per rank and wait for all. */
typedef void (*test_comm_fn)(int rank, const sae_comm *comm, void *arg);
void test_comm_run(test_comm_group *g, test_comm_fn fn, void *arg);

/* A 2-D grid of groups x shards ranks (threads): the ranks of data group g
 * (rank g * shards + s for s = 0 .. shards - 1) share a FEATURES
 * communicator, test_comm_grid_features(grid, g), where rank s holds shard s;
 * the ranks holding shard s (one per group) share a DATA communicator,
 * test_comm_grid_data(grid, s), where rank g is group g. Each communicator
 * is a group of its own above (flags, failure injection, call counts);
 * skewed, shard s's DATA communicator starts rank r's sums at rank r + s and
 * group g's FEATURES communicator at rank r + g, so that the shards of a
 * group, and the groups, see different bits as well. */
typedef struct test_comm_grid test_comm_grid;

/* NULL if memory is short. */
test_comm_grid *test_comm_grid_create(int groups, int shards, unsigned flags);
void test_comm_grid_free(test_comm_grid *grid);
test_comm_group *test_comm_grid_features(test_comm_grid *grid, int group);
test_comm_group *test_comm_grid_data(test_comm_grid *grid, int shard);

/* Run fn on one thread per rank of the grid and wait for all. */
typedef void (*test_grid_fn)(int group, int shard, const sae_comm *features,
                             const sae_comm *data, void *arg);
void test_comm_grid_run(test_comm_grid *grid, test_grid_fn fn, void *arg);

#endif
