/* sae_mpi_grid_create, run as 4 and 6 ranks: for every n_shards that divides
 * the ranks, each rank lands in its group's features communicator (the
 * consecutive ranks g n_shards ..) ranked by shard and in its shard's data
 * communicator (every n_shards-th rank) ranked by group, checked by what the
 * two communicators gather and sum; bad input is refused on every rank alike
 * (the same status, the outputs zeroed, a detail naming the problem), also
 * when only one rank passes it. */
#include "mpitest.h"

#include <libsae/sae_mpi.h>
#include <stdlib.h>
#include <string.h>

static int world_rank, world_size;

/* the world ranks of c's ranks, in c's rank order, gathered over c */
static int *members(const sae_comm *c)
{
    int *all = malloc((size_t)c->n_ranks * sizeof *all);
    MPITEST_CHECK(all, "out of memory");
    MPITEST_CHECK(c->allgather(c->ctx, &world_rank, sizeof world_rank, all) == 0, "allgather");
    return all;
}

static void check_grid(int n_shards)
{
    const int group = world_rank / n_shards, shard = world_rank % n_shards;
    const int n_groups = world_size / n_shards;
    sae_comm features, data;
    int rc = sae_mpi_grid_create(&features, &data, MPI_COMM_WORLD, n_shards);
    MPITEST_CHECK(rc == SAE_OK, "n_shards %d: %d (%s)", n_shards, rc, sae_mpi_error_detail());
    MPITEST_CHECK(features.struct_size == sizeof features && data.struct_size == sizeof data,
                  "struct_size");
    MPITEST_CHECK(features.rank == shard && features.n_ranks == n_shards,
                  "n_shards %d: features: rank %d of %d, want %d of %d", n_shards, features.rank,
                  features.n_ranks, shard, n_shards);
    MPITEST_CHECK(data.rank == group && data.n_ranks == n_groups,
                  "n_shards %d: data: rank %d of %d, want %d of %d", n_shards, data.rank,
                  data.n_ranks, group, n_groups);

    /* features: the group's consecutive ranks; data: every n_shards-th rank */
    int *f = members(&features), *d = members(&data);
    for (int s = 0; s < n_shards; s++)
        MPITEST_CHECK(f[s] == group * n_shards + s, "n_shards %d: features rank %d is world %d",
                      n_shards, s, f[s]);
    for (int g = 0; g < n_groups; g++)
        MPITEST_CHECK(d[g] == g * n_shards + shard, "n_shards %d: data rank %d is world %d",
                      n_shards, g, d[g]);
    free(f);
    free(d);

    /* the sums stay within each axis: world ranks + 1 summed over the group
     * and over the shard's column */
    float fsum = (float)(world_rank + 1);
    double dsum = world_rank + 1;
    MPITEST_CHECK(features.allreduce_f32(features.ctx, &fsum, 1) == 0, "features allreduce");
    MPITEST_CHECK(data.allreduce_f64(data.ctx, &dsum, 1) == 0, "data allreduce");
    const int first = group * n_shards;
    MPITEST_CHECK(fsum == (float)(n_shards * (first + 1) + n_shards * (n_shards - 1) / 2),
                  "n_shards %d: features sum %g", n_shards, (double)fsum);
    MPITEST_CHECK(dsum == n_groups * (shard + 1.0) + n_shards * n_groups * (n_groups - 1) / 2.0,
                  "n_shards %d: data sum %g", n_shards, dsum);
    /* the last group's value of this shard reaches every group */
    int from_last = world_rank;
    MPITEST_CHECK(data.broadcast(data.ctx, &from_last, sizeof from_last, n_groups - 1) == 0,
                  "data broadcast");
    MPITEST_CHECK(from_last == (n_groups - 1) * n_shards + shard, "broadcast: %d", from_last);

    sae_mpi_comm_free(&data);
    sae_mpi_comm_free(&features);
    MPITEST_CHECK(features.ctx == NULL && data.ctx == NULL && data.allgather == NULL,
                  "sae_mpi_comm_free zeroes");
}

/* One bad call made by every rank (the outputs NULL where asked): the status
 * on every rank, the outputs zeroed, the detail starting with the function
 * and containing `says`. */
static void check_refused(const char *what, MPI_Comm comm, int n_shards, int null_features,
                          int same, int want, const char *says)
{
    sae_comm features, data;
    memset(&features, 0xFF, sizeof features);
    memset(&data, 0xFF, sizeof data);
    int rc = sae_mpi_grid_create(null_features ? NULL : &features, same ? &features : &data,
                                 comm, n_shards);
    MPITEST_CHECK(rc == want, "%s: %d, want %d", what, rc, want);
    if (!null_features)
        MPITEST_CHECK(features.ctx == NULL && features.struct_size == 0 &&
                      features.allgather == NULL, "%s: features not zeroed", what);
    if (!same)
        MPITEST_CHECK(data.ctx == NULL && data.struct_size == 0 && data.broadcast == NULL,
                      "%s: data not zeroed", what);
    const char *detail = sae_mpi_error_detail();
    MPITEST_CHECK(strncmp(detail, "sae_mpi_grid_create: ", 21) == 0 && strstr(detail, says),
                  "%s: detail \"%s\", want \"%s\"", what, detail, says);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    mpitest_rank = world_rank;
    MPITEST_CHECK(strcmp(sae_mpi_error_detail(), "") == 0, "detail before any failure");

    int grids = 0;
    for (int n_shards = 1; n_shards <= world_size; n_shards++)
        if (world_size % n_shards == 0) {
            check_grid(n_shards);
            grids++;
        }

    check_refused("MPI_COMM_NULL", MPI_COMM_NULL, 1, 0, 0, SAE_E_INVALID_ARG, "MPI_COMM_NULL");
    check_refused("n_shards 0", MPI_COMM_WORLD, 0, 0, 0, SAE_E_INVALID_ARG, "n_shards 0 is below 1");
    check_refused("n_shards -2", MPI_COMM_WORLD, -2, 0, 0, SAE_E_INVALID_ARG, "below 1");
    char says[128];
    snprintf(says, sizeof says, "the %d ranks of comm do not split into groups of n_shards = %d",
             world_size, world_size - 1);
    check_refused("n_shards size - 1", MPI_COMM_WORLD, world_size - 1, 0, 0, SAE_E_INVALID_ARG, says);
    check_refused("n_shards size + 1", MPI_COMM_WORLD, world_size + 1, 0, 0, SAE_E_INVALID_ARG,
                  "do not split");
    check_refused("the same struct twice", MPI_COMM_WORLD, 2, 0, 1, SAE_E_INVALID_ARG,
                  "the same struct (on this rank)");
    /* one rank alone passes a NULL output or another n_shards: every rank
     * refuses (none waits in a split the others never make) */
    check_refused("NULL features on the last rank", MPI_COMM_WORLD, 2,
                  world_rank == world_size - 1, 0, SAE_E_INVALID_ARG,
                  world_rank == world_size - 1 ? "is NULL" : "(on another rank)");
    check_refused("n_shards 1 on rank 0, 2 elsewhere", MPI_COMM_WORLD, world_rank == 0 ? 1 : 2, 0,
                  0, SAE_E_INVALID_ARG, "the ranks pass different n_shards (from 1 to 2");

    /* success leaves the detail as it was; a grid works after the refusals */
    check_grid(world_size);
    MPITEST_CHECK(strstr(sae_mpi_error_detail(), "different n_shards"), "detail overwritten");

    if (world_rank == 0)
        printf("test_mpi_grid: %d ranks: %d grids checked, bad input refused on every rank\n",
               world_size, grids);
    MPI_Finalize();
    return 0;
}
