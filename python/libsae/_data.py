"""Where libsae.train's batches come from.

Rows: a 2-D float32 array (numpy, np.memmap, a torch CPU tensor) or a file
(.npy, memory-mapped; or raw little-endian float32 with d_in). Each epoch
visits every row once in a seeded random order (libsae's RNG, exactly as
sae-train draws them), so the k-th row drawn depends only on the seed and
the row count, and a resumed run skips the rows already drawn.

Stream: any iterable of (n, d_in) batches (numpy or torch CPU), e.g. a host
producing activations as it runs; rows are cut into training batches of
exactly batch_size rows (a batch that already has that size and layout
passes without a copy). A stream cannot be replayed: a resumed run trains on
what the stream yields from then on.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, List, Optional

import numpy as np

from ._arrays import as_float32, is_torch_tensor
from .rng import Rng

SHUFFLE_STREAM = 0x5BA7C4  # sae-train's stream of the seed for the batch order


def scaled(x: np.ndarray, scale: float) -> np.ndarray:
    """x * scale in double, rounded once to float32 (as sae-train scales)."""
    if scale == 1.0:
        return x
    return (x.astype(np.float64) * scale).astype(np.float32)


class Rows:
    """Training rows of a finite data set, drawn by seeded shuffles."""

    def __init__(self, x: np.ndarray, seed: int, path: Optional[str] = None,
                 kind: str = "npy") -> None:
        if x.ndim != 2:
            raise ValueError(f"the training data has shape {x.shape}: expected (tokens, d_in)")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"the training data is empty: shape {x.shape}")
        self.x, self.path, self.kind = x, path, kind
        self.rows, self.d_in = x.shape
        self.rng = Rng(seed, SHUFFLE_STREAM)
        self.order = np.arange(self.rows, dtype=np.uint64)
        self.pos = self.rows  # shuffled before the first draw
        self.drawn = 0

    def _refill(self) -> None:
        self.rng.shuffle(self.order)
        self.pos = 0

    def next(self, n: int, scale: float = 1.0) -> np.ndarray:
        """The next n rows (a new array), times scale."""
        take: List[np.ndarray] = []
        left = n
        while left:
            if self.pos == self.rows:
                self._refill()
            k = min(left, self.rows - self.pos)
            take.append(self.order[self.pos:self.pos + k].copy())  # the next shuffle reorders in place
            self.pos += k
            left -= k
        self.drawn += n
        idx = take[0] if len(take) == 1 else np.concatenate(take)
        return scaled(self.x[idx.astype(np.intp)], scale)

    def skip(self, n: int) -> None:
        """Skip n rows as if drawn: replays the shuffles, copies nothing."""
        self.drawn += n
        while n:
            if self.pos == self.rows:
                self._refill()
            k = min(n, self.rows - self.pos)
            self.pos += k
            n -= k


class Stream:
    """Training batches of exactly `batch` rows cut from an iterable."""

    def __init__(self, batches: Any, d_in: Optional[int] = None) -> None:
        self.it: Iterator[Any] = iter(batches)
        self.d_in = d_in
        self.pending: List[np.ndarray] = []
        self.n_pending = 0
        self.drawn = 0
        self.done = False
        self.path, self.kind, self.rows = None, "stream", 0

    def _pull(self) -> bool:
        try:
            item = next(self.it)
        except StopIteration:
            self.done = True
            return False
        a = as_float32(item, "a batch of the stream")
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if a.ndim != 2:
            raise ValueError(f"a batch of the stream has shape {a.shape}: expected (n, d_in)")
        if self.d_in is None:
            self.d_in = a.shape[1]
        elif a.shape[1] != self.d_in:
            raise ValueError(f"a batch of the stream has {a.shape[1]} columns, "
                             f"the stream had {self.d_in}")
        if a.shape[0]:
            self.pending.append(a)
            self.n_pending += a.shape[0]
        return True

    def peek_d_in(self) -> int:
        while self.d_in is None and not self.done:
            self._pull()
        if self.d_in is None:
            raise ValueError("the stream yielded no batches")
        return self.d_in

    def peek(self, n: int) -> np.ndarray:
        """A copy of the first n rows still to come (fewer if the stream
        ends first), without consuming them: the recipe's sample."""
        while self.n_pending < n and self._pull():
            pass
        if not self.pending:
            raise ValueError("the stream yielded no rows")
        return np.concatenate(self.pending)[:n].copy()

    def next(self, n: int, scale: float = 1.0) -> Optional[np.ndarray]:
        """The next n rows, times scale, or None when the stream ends first
        (the rows left over are dropped)."""
        while self.n_pending < n:
            if not self._pull():
                return None
        first = self.pending[0]
        if first.shape[0] == n and scale == 1.0:
            self.pending.pop(0)  # as the host gave it: no copy
            out = first
        else:
            out = np.empty((n, first.shape[1]), np.float32)
            filled = 0
            while filled < n:
                a = self.pending[0]
                k = min(n - filled, a.shape[0])
                out[filled:filled + k] = a[:k]
                filled += k
                if k == a.shape[0]:
                    self.pending.pop(0)
                else:
                    self.pending[0] = a[k:]
            out = scaled(out, scale)
        self.n_pending -= n
        self.drawn += n
        return out


def open_source(source: Any, seed: int, d_in: Optional[int] = None) -> Any:
    """Rows for arrays and files, Stream for anything else iterable."""
    if isinstance(source, (str, bytes, os.PathLike)):
        path = os.fsdecode(source)
        if path.endswith(".npy"):
            x = np.load(path, mmap_mode="r")
            if x.dtype != np.float32:
                raise TypeError(f"{path}: dtype {x.dtype.str} is not supported: need "
                                f"little-endian float32 '<f4' (save x.astype(np.float32))")
            if not x.flags.c_contiguous:
                raise ValueError(f"{path}: Fortran order is not supported (save "
                                 f"np.ascontiguousarray(x))")
            return Rows(x, seed, path, "npy")
        if d_in is None:
            raise ValueError(f"{path}: raw float32 data needs d_in (or give a .npy file)")
        size = os.path.getsize(path)
        if size % (4 * d_in):
            raise ValueError(f"{path}: {size} bytes is not a whole number of rows of "
                             f"{d_in} float32")
        x = np.memmap(path, dtype="<f4", mode="r", shape=(size // (4 * d_in), d_in))
        return Rows(x, seed, path, "raw")
    if isinstance(source, np.ndarray) or is_torch_tensor(source):
        return Rows(as_float32(source, "source"), seed)
    if hasattr(source, "__iter__") or hasattr(source, "__next__"):
        return Stream(source, d_in)
    raise TypeError(f"source must be an array, a .npy path or an iterable of batches, "
                    f"got {type(source).__name__}")
