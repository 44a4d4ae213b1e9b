/* Threads for the library's own loops (OpenMP when the build has it). */
#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int sae__resolve_threads(int requested)
{
#ifdef _OPENMP
    if (requested > 0)
        return requested;
    int n = omp_get_max_threads(); /* OMP_NUM_THREADS, else one per online core */
    return n > 0 ? n : 1;
#else
    (void)requested;
    return 1;
#endif
}
