/*
 * The library's random numbers: xoshiro256** seeded through splitmix64 (see
 * sae.h, "Random numbers"; public, so that programs draw the same bits).
 * Integer arithmetic only until the final conversion, so a seed gives the same
 * bits on every machine, compiler and thread count. Independent streams (one per
 * decoder row, say) come from mixing the stream number into the seed.
 */
#include "internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void sae_rng_seed(sae_rng *r, uint64_t seed, uint64_t stream)
{
    if (!r)
        return;
    uint64_t sm = seed;
    uint64_t mixed = splitmix64(&sm) ^ (stream * 0xd1342543de82ef95ULL);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&mixed);
}

uint64_t sae_rng_next(sae_rng *r)
{
    if (!r)
        return 0;
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double sae_rng_uniform(sae_rng *r)
{
    return (double)(sae_rng_next(r) >> 11) * 0x1.0p-53;
}

double sae_rng_normal(sae_rng *r)
{
    if (!r)
        return 0.0;
    /* Box-Muller; u1 in (0, 1] so the log is finite. One value per call keeps the
     * stream position independent of how many normals a caller draws. */
    double u1 = 1.0 - sae_rng_uniform(r);
    double u2 = sae_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t sae_rng_below(sae_rng *r, uint64_t n)
{
    if (!r || n == 0)
        return 0;
    /* 2^64 mod n: the draws below it would favour the small residues */
    const uint64_t reject_below = (0 - n) % n;
    for (;;) {
        uint64_t x = sae_rng_next(r);
        if (x >= reject_below)
            return x % n;
    }
}

int sae_rng_shuffle(sae_rng *r, uint64_t *v, size_t n)
{
    if (!r)
        return sae__fail(SAE_E_INVALID_ARG, "sae_rng_shuffle: r is NULL");
    int rc = sae__check_capacity("sae_rng_shuffle", "v", v, n, "n", sizeof(uint64_t));
    if (rc != SAE_OK)
        return rc;
    for (size_t i = n; i-- > 1;) {
        size_t j = (size_t)sae_rng_below(r, (uint64_t)i + 1);
        uint64_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    return SAE_OK;
}
