/*
 * The vector kernels' common ground: whether the AVX-512 versions are
 * compiled (x86 with GCC or Clang) and used (the CPU has them and the test
 * build did not ask for the portable ones). Each hot loop has a portable
 * version with the same contract and, where it pays, an AVX-512 one. Not
 * installed.
 */
#ifndef LIBSAE_SIMD_H
#define LIBSAE_SIMD_H

#include "internal.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SAE_HAVE_AVX512 1
#include <immintrin.h>
#define SAE_AVX512 __attribute__((target("avx512f")))

/* The lanes of the 16-float vector starting at column j that lie below w. */
SAE_AVX512 static inline __mmask16 sae__lanes_below(size_t w, size_t j)
{
    if (j >= w)
        return 0;
    return w - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - j)) - 1u);
}
#endif

/* Whether to run the AVX-512 kernels. */
static inline bool sae__use_avx512(void)
{
#ifdef SAE_TESTING
    if (sae__test_portable_kernels)
        return false;
#endif
#ifdef SAE_HAVE_AVX512
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

#endif /* LIBSAE_SIMD_H */
