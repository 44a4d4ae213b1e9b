/*
 * The library's allocator: 64-byte-aligned blocks from posix_memalign.
 *
 * The test build (SAE_TESTING) keeps a small header before each block to count
 * live bytes and can fail any chosen allocation, so tests reach every
 * SAE_E_NOMEM path and measure what a step allocates.
 */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#ifdef SAE_TESTING
long sae__test_fail_countdown = -1;
size_t sae__test_bytes_live = 0;
size_t sae__test_bytes_peak = 0;
size_t sae__test_alloc_calls = 0;
#define SAE_HEADER_BYTES SAE_ALIGN_BYTES
#else
#define SAE_HEADER_BYTES 0
#endif

void *sae__alloc(size_t bytes)
{
    if (bytes == 0 || bytes > SIZE_MAX - SAE_ALIGN_BYTES - SAE_HEADER_BYTES)
        return NULL;
#ifdef SAE_TESTING
    /* atomics: read-only calls and the step's threads allocate concurrently */
    __atomic_fetch_add(&sae__test_alloc_calls, 1, __ATOMIC_RELAXED);
    long countdown = __atomic_load_n(&sae__test_fail_countdown, __ATOMIC_RELAXED);
    while (countdown >= 0 &&
           !__atomic_compare_exchange_n(&sae__test_fail_countdown, &countdown, countdown - 1,
                                        false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    if (countdown == 0)
        return NULL;
#endif
    void *p = NULL;
    if (posix_memalign(&p, SAE_ALIGN_BYTES, bytes + SAE_HEADER_BYTES) != 0)
        return NULL;
#ifdef SAE_TESTING
    memcpy(p, &bytes, sizeof bytes);
    size_t live = __atomic_add_fetch(&sae__test_bytes_live, bytes, __ATOMIC_RELAXED);
    size_t peak = __atomic_load_n(&sae__test_bytes_peak, __ATOMIC_RELAXED);
    while (live > peak && !__atomic_compare_exchange_n(&sae__test_bytes_peak, &peak, live, false,
                                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
#endif
    return (char *)p + SAE_HEADER_BYTES;
}

void *sae__alloc_zero(size_t bytes)
{
    void *p = sae__alloc(bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void sae__free(void *p)
{
    if (!p)
        return;
    char *base = (char *)p - SAE_HEADER_BYTES;
#ifdef SAE_TESTING
    size_t bytes;
    memcpy(&bytes, base, sizeof bytes);
    __atomic_fetch_sub(&sae__test_bytes_live, bytes, __ATOMIC_RELAXED);
#endif
    free(base);
}
