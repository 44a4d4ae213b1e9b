"""libsae.Rng (sae_rng_*) against an independent Python implementation of
what sae.h documents: splitmix64 seeding with the stream mixed in, and
xoshiro256**; so Python draws the bits C programs draw."""
import copy
import pickle

import numpy as np
import pytest

import libsae

M64 = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Reference:
    def __init__(self, seed, stream):
        state, first = splitmix64(seed)
        state = first ^ ((stream * 0xD1342543DE82EF95) & M64)
        self.s = []
        for _ in range(4):
            state, z = splitmix64(state)
            self.s.append(z)

    def next(self):
        s = self.s
        out = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return out


@pytest.mark.parametrize("seed, stream", [(0, 0), (42, 7), (M64, 0x5BA7C4)])
def test_bits_as_documented(seed, stream):
    r, ref = libsae.Rng(seed, stream), Reference(seed, stream)
    assert list(r.state) == ref.s
    assert [r.next() for _ in range(8)] == [ref.next() for _ in range(8)]
    assert r.uniform() == (ref.next() >> 11) * 2.0 ** -53


def test_draws_and_shuffle():
    r = libsae.Rng(3)
    u = [r.uniform() for _ in range(2000)]
    assert 0 <= min(u) and max(u) < 1 and abs(np.mean(u) - 0.5) < 0.03
    z = np.array([r.normal() for _ in range(4000)])
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1
    assert {r.below(5) for _ in range(200)} == set(range(5)) and r.below(0) == 0
    order = r.permutation(100)
    assert sorted(order.tolist()) == list(range(100))
    # Fisher-Yates from the top with below(i + 1), as sae.h documents
    a, b = libsae.Rng(9), libsae.Rng(9)
    v = np.arange(10, dtype=np.uint64)
    a.shuffle(v)
    w = list(range(10))
    for i in range(9, 0, -1):
        j = b.below(i + 1)
        w[i], w[j] = w[j], w[i]
    assert v.tolist() == w
    with pytest.raises(TypeError, match="uint64"):
        a.shuffle(np.arange(10))


def test_copy_and_pickle_fork_the_stream():
    r = libsae.Rng(5, 1)
    r.next()
    forks = [copy.copy(r), copy.deepcopy(r), pickle.loads(pickle.dumps(r)),
             libsae.Rng.from_state(r.state)]
    want = [r.next() for _ in range(5)]
    for other in forks:
        assert [other.next() for _ in range(5)] == want
    with pytest.raises(ValueError, match="4 words"):
        libsae.Rng.from_state([1, 2, 3])
