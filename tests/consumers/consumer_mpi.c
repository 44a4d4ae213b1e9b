/* A program of the INSTALLED companion library libsae-mpi, built by
 * tests/consumers/run.sh with `pkg-config --cflags --libs sae-mpi` and with
 * find_package(sae COMPONENTS mpi), and run as 2 ranks: it makes libsae's
 * communicator over MPI_COMM_WORLD, sums through it, and prints what every
 * rank agrees on. */
#include <libsae/sae_mpi.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    sae_comm comm;
    int rc = sae_mpi_comm_create(&comm, MPI_COMM_WORLD);
    if (rc != SAE_OK) {
        fprintf(stderr, "sae_mpi_comm_create: %s\n", sae_status_string(rc));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    double v[2] = {1.0, (double)comm.rank};
    if (comm.allreduce_f64(comm.ctx, v, 2) != 0 || v[0] != comm.n_ranks) {
        fprintf(stderr, "rank %d: allreduce_f64 failed\n", comm.rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (comm.rank == 0)
        printf("libsae %s, libsae-mpi: %d ranks, sum of ranks %g\n", sae_version_string(),
               comm.n_ranks, v[1]);
    sae_mpi_comm_free(&comm);
    MPI_Finalize();
    return 0;
}
