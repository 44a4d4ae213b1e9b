/*
 * bfloat16 conversions for the mixed-precision encoder.
 *
 * bf16 is the upper half of an IEEE float32: the same 8-bit exponent, 7
 * stored mantissa bits. Rounding a float to bf16 here follows the AVX512_BF16
 * instruction VCVTNEPS2BF16 bit for bit, so that the vector and the portable
 * kernels agree on every input:
 *   - round to nearest, ties to even;
 *   - a NaN stays a NaN (its upper half with the quiet bit set);
 *   - a subnormal float becomes a zero of the same sign (the instruction
 *     treats denormal inputs as zero; they are below 1.2e-38 and no SAE
 *     weight or activation lives there);
 *   - values that round past the largest bf16 become infinities.
 * Widening bf16 to float is exact (a 16-bit shift).
 */
#include "internal.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SAE_HAVE_AVX512BF16_KERNELS 1
#include <immintrin.h>
#endif

uint16_t sae__bf16_round(float value)
{
    uint32_t u;
    memcpy(&u, &value, sizeof u);
    if ((u & 0x7f800000u) == 0)             /* zero or subnormal: signed zero */
        return (uint16_t)((u >> 16) & 0x8000u);
    if ((u & 0x7fffffffu) > 0x7f800000u)    /* NaN: keep it, quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);        /* ties to even */
    return (uint16_t)(u >> 16);
}

/* The same rounding without branches, so the compiler vectorises it. */
SAE_VECTOR_CLONES
static void to_bf16_portable(const float *restrict src, uint16_t *restrict dst, size_t count)
{
    for (size_t k = 0; k < count; k++) {
        uint32_t u;
        memcpy(&u, &src[k], sizeof u);
        uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        uint32_t nan = (u >> 16) | 0x0040u;
        uint32_t zero = (u >> 16) & 0x8000u;
        uint32_t out = (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
        out = (u & 0x7f800000u) == 0 ? zero : out;
        dst[k] = (uint16_t)out;
    }
}

SAE_VECTOR_CLONES
static void to_f32_portable(const uint16_t *restrict src, float *restrict dst, size_t count)
{
    for (size_t k = 0; k < count; k++) {
        uint32_t u = (uint32_t)src[k] << 16;
        memcpy(&dst[k], &u, sizeof u);
    }
}

#ifdef SAE_HAVE_AVX512BF16_KERNELS
__attribute__((target("avx512bf16,avx512f,avx512vl,avx512bw"))) static void
to_bf16_avx512bf16(const float *src, uint16_t *dst, size_t count)
{
    size_t k = 0;
    for (; k + 32 <= count; k += 32) {
        __m512bh pair = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + k + 16), _mm512_loadu_ps(src + k));
        _mm512_storeu_si512((void *)(dst + k), (__m512i)pair);
    }
    for (; k < count; k += 16) {
        __mmask16 lanes = count - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (count - k)) - 1u);
        __m256bh half = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lanes, src + k));
        _mm256_mask_storeu_epi16((void *)(dst + k), lanes, (__m256i)half);
    }
}
#endif

static bool use_bf16_instructions(void)
{
#ifdef SAE_TESTING
    if (sae__test_portable_kernels)
        return false;
#endif
#ifdef SAE_HAVE_AVX512BF16_KERNELS
    return __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

void sae__bf16_from_f32(uint16_t *dst, const float *src, size_t count)
{
#ifdef SAE_HAVE_AVX512BF16_KERNELS
    if (use_bf16_instructions()) {
        to_bf16_avx512bf16(src, dst, count);
        return;
    }
#endif
    to_bf16_portable(src, dst, count);
}

void sae__bf16_to_f32(float *dst, const uint16_t *src, size_t count)
{
    to_f32_portable(src, dst, count);
}

bool sae__bf16_native(void)
{
    return use_bf16_instructions();
}
