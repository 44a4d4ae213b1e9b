"""libsae.Rng: the library's own random number generator (sae_rng_*), so
that Python draws exactly the bits C programs and sae-train draw:
xoshiro256** seeded through splitmix64, the same numbers on every machine.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .capi import RngState, lib, uint64_ptr
from .errors import check


class Rng:
    """A generator seeded with stream `stream` of `seed` (sae_rng_seed).
    Plain data: copy.copy() forks the stream; pickling keeps the state."""

    __slots__ = ("_state",)

    def __init__(self, seed: int = 0, stream: int = 0) -> None:
        self._state = RngState()
        lib.sae_rng_seed(ctypes.byref(self._state), seed, stream)

    @property
    def state(self) -> tuple:
        """The four 64-bit state words (struct sae_rng)."""
        return tuple(self._state.s)

    @classmethod
    def from_state(cls, state: Any) -> "Rng":
        r = cls.__new__(cls)
        r._state = RngState()
        words = [int(w) for w in state]
        if len(words) != 4:
            raise ValueError(f"an Rng state is 4 words, got {len(words)}")
        r._state.s[:] = words
        return r

    def __copy__(self) -> "Rng":
        return Rng.from_state(self.state)

    def __deepcopy__(self, memo: Any) -> "Rng":
        return self.__copy__()

    def __reduce__(self) -> Any:
        return (Rng.from_state, (self.state,))

    def next(self) -> int:
        """The next 64 random bits."""
        return int(lib.sae_rng_next(ctypes.byref(self._state)))

    def uniform(self) -> float:
        """Uniform in [0, 1), 53 bits."""
        return float(lib.sae_rng_uniform(ctypes.byref(self._state)))

    def normal(self) -> float:
        """Standard normal (Box-Muller, one value per call)."""
        return float(lib.sae_rng_normal(ctypes.byref(self._state)))

    def below(self, n: int) -> int:
        """Uniform in [0, n) without bias; 0 when n is 0."""
        return int(lib.sae_rng_below(ctypes.byref(self._state), n))

    def shuffle(self, values: np.ndarray) -> None:
        """Shuffle a C-contiguous uint64 array in place (Fisher-Yates, as
        sae_rng_shuffle: the order C code gets from the same state)."""
        if not isinstance(values, np.ndarray) or values.dtype != np.uint64:
            raise TypeError("Rng.shuffle takes a numpy array of uint64 "
                            "(e.g. np.arange(n, dtype=np.uint64))")
        if not values.flags.c_contiguous or not values.flags.writeable:
            raise ValueError("Rng.shuffle needs a writable C-contiguous array")
        check(lib.sae_rng_shuffle(ctypes.byref(self._state), values.ctypes.data_as(uint64_ptr),
                                  values.size), "sae_rng_shuffle")

    def permutation(self, n: int) -> np.ndarray:
        """0 .. n-1 in a random order (uint64)."""
        order = np.arange(n, dtype=np.uint64)
        self.shuffle(order)
        return order

    def __repr__(self) -> str:
        return f"<libsae.Rng state={[hex(w) for w in self.state]}>"


__all__ = ["Rng"]
