/*
 * A small deterministic random number generator for the examples
 * (xoshiro256** seeded through splitmix64): the same seed gives the same
 * synthetic data and the same shuffle on every machine.
 */
#ifndef TOOL_RNG_H
#define TOOL_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct tool_rng {
    uint64_t s[4];
} tool_rng;

static inline uint64_t tool_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Seed stream `stream` of `seed`: different streams are independent. */
static inline void tool_rng_seed(tool_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t sm = seed ^ (stream * 0xd1342543de82ef95ULL);
    for (int i = 0; i < 4; i++)
        r->s[i] = tool_splitmix64(&sm);
}

static inline uint64_t tool_rng_next(tool_rng *r)
{
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5;
    uint64_t result = ((x << 7) | (x >> 57)) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

/* Uniform in [0, 1). */
static inline double tool_rng_uniform(tool_rng *r)
{
    return (double)(tool_rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in the open interval (0, 1). */
static inline double tool_rng_open01(tool_rng *r)
{
    return ((double)(tool_rng_next(r) >> 11) + 0.5) * 0x1.0p-53;
}

/* Uniform integer in [0, n), n > 0 (the modulo bias, below n / 2^64, is
 * negligible for any n an example meets). */
static inline uint64_t tool_rng_below(tool_rng *r, uint64_t n)
{
    return tool_rng_next(r) % n;
}

/* Standard normal (Box-Muller). */
static inline double tool_rng_normal(tool_rng *r)
{
    double u1 = 1.0 - tool_rng_uniform(r); /* (0, 1]: the log is finite */
    double u2 = tool_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
