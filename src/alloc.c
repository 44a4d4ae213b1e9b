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
    sae__test_alloc_calls++;
    if (sae__test_fail_countdown >= 0 && sae__test_fail_countdown-- == 0)
        return NULL;
#endif
    void *p = NULL;
    if (posix_memalign(&p, SAE_ALIGN_BYTES, bytes + SAE_HEADER_BYTES) != 0)
        return NULL;
#ifdef SAE_TESTING
    memcpy(p, &bytes, sizeof bytes);
    sae__test_bytes_live += bytes;
    if (sae__test_bytes_live > sae__test_bytes_peak)
        sae__test_bytes_peak = sae__test_bytes_live;
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
    sae__test_bytes_live -= bytes;
#endif
    free(base);
}
