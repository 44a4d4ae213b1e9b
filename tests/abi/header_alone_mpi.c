/* libsae-mpi's header on its own (it brings <mpi.h> and <libsae/sae.h>
 * itself): compiled by CTest as C99, C11, C++11 and C++17 with gcc and clang
 * and -Wall -Wextra -Wpedantic -Werror, like header_alone.c. It pins the
 * enumerator values and the frozen struct, and each function's exact type. */
#include <libsae/sae_mpi.h>

#define SAE_MPI_TEST_PIN(name, cond) typedef char name[(cond) ? 1 : -1]

SAE_MPI_TEST_PIN(sae_mpi_test_f32, SAE_MPI_ALLREDUCE_F32 == 0);
SAE_MPI_TEST_PIN(sae_mpi_test_f64, SAE_MPI_ALLREDUCE_F64 == 1);
SAE_MPI_TEST_PIN(sae_mpi_test_gather, SAE_MPI_ALLGATHER == 2);
SAE_MPI_TEST_PIN(sae_mpi_test_bcast, SAE_MPI_BROADCAST == 3);
SAE_MPI_TEST_PIN(sae_mpi_test_counts_size, sizeof(sae_mpi_counts) == 8 * sizeof(uint64_t));

struct sae_mpi_test_api {
    int (*comm_create)(sae_comm *, MPI_Comm);
    void (*comm_free)(sae_comm *);
    const char *(*error_detail)(void);
    int (*grid_create)(sae_comm *, sae_comm *, MPI_Comm, int);
    int (*counting_create)(sae_comm *, const sae_comm *, sae_mpi_counts *);
    void (*counting_free)(sae_comm *);
};

#ifdef __cplusplus
extern "C" {
#endif
extern const struct sae_mpi_test_api sae_mpi_test_api_0_2;
#ifdef __cplusplus
}
#endif

const struct sae_mpi_test_api sae_mpi_test_api_0_2 = {
    sae_mpi_comm_create,
    sae_mpi_comm_free,
    sae_mpi_error_detail,
    sae_mpi_grid_create,
    sae_mpi_counting_create,
    sae_mpi_counting_free,
};

enum sae_mpi_count_kind sae_mpi_test_kind = SAE_MPI_ALLGATHER;
