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

Transcoders train on pairs: each source row x has a target row y (d_out
values), from a second array or file with as many rows (drawn with the same
row indices), or for a stream a second iterable yielding the targets of its
rows in the same order (cut into batches the same way, whatever its own
batch sizes).
"""

from __future__ import annotations

import os
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from ._arrays import as_float32, is_torch_tensor
from .rng import Rng

SHUFFLE_STREAM = 0x5BA7C4  # sae-train's stream of the seed for the batch order


def scaled(x: np.ndarray, scale: float) -> np.ndarray:
    """x * scale in double, rounded once to float32 (as sae-train scales)."""
    if scale == 1.0:
        return x
    return (x.astype(np.float64) * scale).astype(np.float32)


def _check_matrix(x: np.ndarray, what: str, width: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{what} has shape {x.shape}: expected (tokens, {width})")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what} is empty: shape {x.shape}")


class Rows:
    """Training rows of a finite data set, drawn by seeded shuffles (with
    their targets, for transcoders: pair())."""

    def __init__(self, x: np.ndarray, seed: int, path: Optional[str] = None,
                 kind: str = "npy") -> None:
        _check_matrix(x, "the training data", "d_in")
        self.x, self.path, self.kind = x, path, kind
        self.y: Optional[np.ndarray] = None  # the targets (rows x d_out), transcoders
        self.target_path: Optional[str] = None
        self.rows, self.d_in = x.shape
        self.rng = Rng(seed, SHUFFLE_STREAM)
        self.last_rows = np.zeros(0, np.intp)  # the data rows of the last batch
        self.order = np.arange(self.rows, dtype=np.uint64)
        self.pos = self.rows  # shuffled before the first draw
        self.drawn = 0

    def row_of(self, i: int) -> int:
        """The data row of row i of the last batch."""
        return int(self.last_rows[i])

    def pair(self, y: np.ndarray, path: Optional[str] = None) -> None:
        """Give each row its target: row i of y (as many rows as x)."""
        _check_matrix(y, "the target", "d_out")
        if y.shape[0] != self.rows:
            raise ValueError(f"the target has {y.shape[0]} rows but the training data "
                             f"{self.rows}: a target row per row")
        self.y, self.target_path = y, path

    @property
    def d_out(self) -> int:
        """The targets' width; 0 without targets."""
        return 0 if self.y is None else self.y.shape[1]

    def _refill(self) -> None:
        self.rng.shuffle(self.order)
        self.pos = 0

    def next(self, n: int, scale: float = 1.0) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """The next n rows (a new array), times scale, and their targets
        (None without targets)."""
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
        idx = (take[0] if len(take) == 1 else np.concatenate(take)).astype(np.intp)
        self.last_rows = idx
        return scaled(self.x[idx], scale), None if self.y is None else self.y[idx]

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

    def __init__(self, batches: Any, d_in: Optional[int] = None,
                 what: str = "the stream") -> None:
        self.it: Iterator[Any] = iter(batches)
        self.d_in = d_in
        self.what = what
        self.target: Optional["Stream"] = None  # the targets of its rows, transcoders
        self.target_path = None
        self.last_n = 0  # rows in the last batch
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
        a = as_float32(item, f"a batch of {self.what}")
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if a.ndim != 2:
            raise ValueError(f"a batch of {self.what} has shape {a.shape}: expected (n, columns)")
        if self.d_in is None:
            self.d_in = a.shape[1]
        elif a.shape[1] != self.d_in:
            raise ValueError(f"a batch of {self.what} has {a.shape[1]} columns, "
                             f"{self.what} had {self.d_in}")
        if a.shape[0]:
            self.pending.append(a)
            self.n_pending += a.shape[0]
        return True

    def peek_d_in(self) -> int:
        while self.d_in is None and not self.done:
            self._pull()
        if self.d_in is None:
            raise ValueError(f"{self.what} yielded no batches")
        return self.d_in

    def row_of(self, i: int) -> int:
        """The stream row (counted from the start of this run's stream) of
        row i of the last batch."""
        return self.drawn - self.last_n + i

    def pair(self, target: "Stream") -> None:
        """Give each row its target: the rows of `target`, in order."""
        self.target = target

    @property
    def d_out(self) -> int:
        """The targets' width; 0 without targets."""
        return 0 if self.target is None else self.target.peek_d_in()

    def peek(self, n: int) -> np.ndarray:
        """A copy of the first n rows still to come (fewer if the stream
        ends first), without consuming them: the recipe's sample."""
        while self.n_pending < n and self._pull():
            pass
        if not self.pending:
            raise ValueError("the stream yielded no rows")
        return np.concatenate(self.pending)[:n].copy()

    def next(self, n: int, scale: float = 1.0
             ) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
        """The next n rows, times scale, and their targets (None without
        targets); None when the stream ends first (the rows left over are
        dropped)."""
        x = self._take(n, scale)
        if x is None or self.target is None:
            return None if x is None else (x, None)
        y = self.target._take(n, 1.0)
        if y is None:
            left = self.target.drawn + self.target.n_pending
            raise ValueError(f"the target stream ended after {left} rows but the source has "
                             f"at least {self.drawn}: a target row per row")
        return x, y

    def _take(self, n: int, scale: float) -> Optional[np.ndarray]:
        while self.n_pending < n:
            if not self._pull():
                return None
        self.last_n = n
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


def nonfinite_row(error: Any, data: Any, x: np.ndarray, y: Optional[np.ndarray]) -> Any:
    """The library's NonFiniteError of a step on x (and its target y), with
    the data row of the batch's first NaN/Inf (x's, then y's) added to its
    detail, as sae-train reports it: the batch's own index in the library's
    detail says nothing about where the value sits in the data. The error
    as it was when neither holds one (a diverging step)."""
    for what, a, where in (("source", x, data.path), ("target", y, data.target_path)):
        if a is None:
            continue
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        if bad.size:
            name = f" {where}" if where else ""
            row = f"the {what}{name} has a NaN or Inf in row {data.row_of(int(bad[0]))}"
            return type(error)(error.status, error.function, error.description,
                               f"{error.detail}; {row}" if error.detail else row)
    return error


def _open_matrix(source: Any, width: Optional[int], what: str, width_name: str
                 ) -> Tuple[np.ndarray, Optional[str], str]:
    """A 2-D float32 array (memory-mapped for a file), its path and kind
    ("npy" or "raw"; "array" for an array)."""
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
            return x, path, "npy"
        if width is None:
            raise ValueError(f"{path}: raw float32 data needs {width_name} (or give a .npy file)")
        size = os.path.getsize(path)
        if size % (4 * width):
            raise ValueError(f"{path}: {size} bytes is not a whole number of rows of "
                             f"{width} float32")
        return (np.memmap(path, dtype="<f4", mode="r", shape=(size // (4 * width), width)),
                path, "raw")
    return as_float32(source, what), None, "array"


def _is_matrix(source: Any) -> bool:
    return isinstance(source, (str, bytes, os.PathLike, np.ndarray)) or is_torch_tensor(source)


def open_source(source: Any, seed: int, d_in: Optional[int] = None) -> Any:
    """Rows for arrays and files, Stream for anything else iterable."""
    if _is_matrix(source):
        x, path, kind = _open_matrix(source, d_in, "source", "d_in")
        return Rows(x, seed, path, "npy" if kind == "array" else kind)
    if hasattr(source, "__iter__") or hasattr(source, "__next__"):
        return Stream(source, d_in)
    raise TypeError(f"source must be an array, a .npy path or an iterable of batches, "
                    f"got {type(source).__name__}")


def open_target(data: Any, target: Any, d_out: Optional[int] = None) -> None:
    """Pair data's rows with the targets in `target`: an array or a file
    (.npy, or raw float32 with d_out) with a row per row of an array or file
    source, or an iterable of batches for a stream."""
    if isinstance(data, Rows):
        if not _is_matrix(target):
            raise TypeError(f"target must be an array or a file (a row per training row) "
                            f"when the source is one, got {type(target).__name__}")
        y, path, _ = _open_matrix(target, d_out, "target", "d_out")
        data.pair(y, path)
    else:
        if _is_matrix(target) or not (hasattr(target, "__iter__") or hasattr(target, "__next__")):
            raise TypeError(f"target must be an iterable of batches (the targets of the "
                            f"stream's rows, in order) when the source is a stream, got "
                            f"{type(target).__name__}")
        data.pair(Stream(target, d_out, "the target stream"))
    if d_out is not None and data.d_out != d_out:
        raise ValueError(f"the target has {data.d_out} columns, d_out is {d_out}")
