"""What the features do: sparse codes (sae_encode_sparse), feature statistics
over a stream (sae_feature_stats_*) and decoder neighbours
(sae_decoder_neighbors), and dictionaries compared row by row (sae_max_cosine).

    codes = libsae.encode_sparse(model, x)          # CSR: offsets, features, values
    with libsae.FeatureStats(model.d_sae, top_n=20) as stats:
        for x in batches:
            stats.add(model, x)
        stats.density(), stats.top(7)               # numpy arrays
        stats.save("run/feature_stats.safetensors")
    idx, cos = libsae.decoder_neighbors(model, 8)   # (d_sae, 8) each
    cos, idx = libsae.max_cosine(truth, model.W_dec) # (n_true,) each; cos.mean(): MMCS
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, NamedTuple, Sequence, Tuple, Union

import numpy as np

from . import _arrays
from ._arrays import ArrayLike, as_rows, float_pointer
from ._handle import Handle, handle_address
from .capi import lib, size_ptr, uint64_ptr
from .errors import check

PathLike = Union[str, bytes, "os.PathLike[str]"]
_uint32_ptr = ctypes.POINTER(ctypes.c_uint32)
_double_ptr = ctypes.POINTER(ctypes.c_double)


def _ptr(a: np.ndarray, ptype: Any) -> Any:
    return a.ctypes.data_as(ptype)


class SparseCodes(NamedTuple):
    """Sparse codes in CSR form: row t's active features are
    features[offsets[t]:offsets[t + 1]] (ascending), with values[...]."""
    offsets: np.ndarray   # (n_tokens + 1,) uintp (size_t)
    features: np.ndarray  # (nnz,) uint32
    values: np.ndarray    # (nnz,) float32

    @property
    def n_tokens(self) -> int:
        return len(self.offsets) - 1

    def row(self, t: int) -> Tuple[np.ndarray, np.ndarray]:
        """(features, values) of row t."""
        a, b = int(self.offsets[t]), int(self.offsets[t + 1])
        return self.features[a:b], self.values[a:b]

    def to_dense(self, d_sae: int) -> np.ndarray:
        """The (n_tokens, d_sae) float32 matrix (what Model.encode returns)."""
        out = np.zeros((self.n_tokens, d_sae), dtype=np.float32)
        rows = np.repeat(np.arange(self.n_tokens), np.diff(self.offsets.astype(np.int64)))
        out[rows, self.features] = self.values
        return out


def encode_sparse(model: Any, x: ArrayLike, max_per_token: int = 0) -> SparseCodes:
    """The active (feature, value) pairs of each row of x, the values
    Model.encode gives bit for bit (sae_encode_sparse). max_per_token > 0
    keeps each row's largest values only (ties to the lower feature). Sizes
    the buffers with sae_encode_sparse_size first, unless a cap bounds them."""
    rows, _ = as_rows(x, model.d_in, "x")
    n = rows.shape[0]
    if max_per_token < 0:
        raise ValueError(f"max_per_token is {max_per_token}: 0 (no cap) or a positive count")
    if max_per_token:
        capacity = n * min(int(max_per_token), model.d_sae)
    else:
        nnz = ctypes.c_size_t()
        check(lib.sae_encode_sparse_size(model.handle, float_pointer(rows), n, 0,
                                         ctypes.byref(nnz)), "sae_encode_sparse_size")
        capacity = nnz.value
    offsets = np.empty(n + 1, dtype=np.uintp)
    features = np.empty(max(capacity, 1), dtype=np.uint32)
    values = np.empty(max(capacity, 1), dtype=np.float32)
    done = ctypes.c_size_t()
    check(lib.sae_encode_sparse(model.handle, float_pointer(rows), n, int(max_per_token),
                                _ptr(offsets, size_ptr), _ptr(features, _uint32_ptr),
                                float_pointer(values), capacity, ctypes.byref(done)),
          "sae_encode_sparse")
    if done.value != n:  # the buffers were sized for all rows
        raise RuntimeError(f"sae_encode_sparse encoded {done.value} of {n} rows")
    nnz_written = int(offsets[n])
    return SparseCodes(offsets, features[:nnz_written], values[:nnz_written])


def decoder_neighbors(model: Any, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Each feature's k nearest features by decoder cosine, the feature
    itself excluded (sae_decoder_neighbors): (idx, cos), each (d_sae, k),
    best first, ties to the lower index."""
    d_sae = model.d_sae
    idx = np.empty((d_sae, max(int(k), 0)), dtype=np.uint32)
    cos = np.empty((d_sae, max(int(k), 0)), dtype=np.float32)
    check(lib.sae_decoder_neighbors(model.handle, int(k), _ptr(idx, _uint32_ptr),
                                    float_pointer(cos), idx.size), "sae_decoder_neighbors")
    return idx, cos


def max_cosine(a: ArrayLike, b: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """For each row of a (n_a, d), its largest cosine similarity with a row
    of b (n_b, d) and the row that reaches it, the lowest on ties
    (sae_max_cosine): (cos, idx), float32 and uint32 arrays of n_a. A zero
    row has cosine 0 with every row. cos.mean() is the mean max cosine
    similarity (MMCS) of a against b: max_cosine(true_directions,
    model.W_dec), or max_cosine(run_a.W_dec, run_b.W_dec) for two seeds."""
    rows = []
    for name, x in (("a", a), ("b", b)):
        arr = _arrays.as_float32(x, name)
        if arr.ndim != 2:
            raise ValueError(f"{name} has shape {tuple(arr.shape)}: expected (rows, d)")
        rows.append(arr)
    a2, b2 = rows
    if a2.shape[1] != b2.shape[1]:
        raise ValueError(f"a has rows of {a2.shape[1]} and b of {b2.shape[1]}: both must be d wide")
    cos = np.empty(a2.shape[0], dtype=np.float32)
    idx = np.empty(a2.shape[0], dtype=np.uint32)
    check(lib.sae_max_cosine(float_pointer(a2), a2.shape[0], float_pointer(b2), b2.shape[0],
                             a2.shape[1], float_pointer(cos), _ptr(idx, _uint32_ptr)),
          "sae_max_cosine")
    return cos, idx


def _free_stats(ptr: Any) -> None:
    lib.sae_feature_stats_free(ptr)


class FeatureStats(Handle):
    """Per-feature statistics over a stream of rows (sae_feature_stats): the
    firing count, exact sums of the activation and its square, maximum,
    log-spaced histogram and top-N rows (row id, value; ties to the lower
    row id). Rows get consecutive ids as they are fed. Accumulators over
    disjoint rows merge exactly (merge); save/load/to_bytes/from_bytes use
    the library's safetensors format."""

    _kind = "feature statistics"
    _free = _free_stats
    _c_save_size = staticmethod(lib.sae_feature_stats_save_size)
    _c_save_buffer = staticmethod(lib.sae_feature_stats_save_buffer)

    def __init__(self, d_sae: int, *, top_n: int = 20, bins: int = 60,
                 log10_range: Sequence[float] = (-4.0, 2.0)) -> None:
        lo, hi = (float(v) for v in log10_range)
        out = ctypes.c_void_p()
        check(lib.sae_feature_stats_create(ctypes.byref(out), int(d_sae), int(top_n), int(bins),
                                           lo, hi), "sae_feature_stats_create")
        self._adopt(out.value)  # type: ignore[arg-type]

    @classmethod
    def _wrap(cls, addr: int, owned: bool = True) -> "FeatureStats":
        s = cls.__new__(cls)
        s._adopt(addr, owned)
        return s

    @classmethod
    def from_handle(cls, handle: Any, *, owned: bool = True) -> "FeatureStats":
        """Adopt a sae_feature_stats * made through the C API (freed with this
        object unless owned=False)."""
        return cls._wrap(handle_address(handle, "FeatureStats.from_handle"), owned)

    @classmethod
    def load(cls, path: PathLike) -> "FeatureStats":
        """From a file, or a directory holding feature_stats.safetensors."""
        out = ctypes.c_void_p()
        check(lib.sae_feature_stats_load(ctypes.byref(out), os.fsencode(path)),
              "sae_feature_stats_load")
        return cls._wrap(out.value)  # type: ignore[arg-type]

    @classmethod
    def from_bytes(cls, data: Any) -> "FeatureStats":
        buf = _arrays.byte_view(data, "data")
        out = ctypes.c_void_p()
        check(lib.sae_feature_stats_load_buffer(ctypes.byref(out), _arrays.void_pointer(buf),
                                                buf.size), "sae_feature_stats_load_buffer")
        return cls._wrap(out.value)  # type: ignore[arg-type]

    def save(self, path: PathLike) -> None:
        """Write atomically to path (a directory: path/feature_stats.safetensors)."""
        check(lib.sae_feature_stats_save(self.handle, os.fsencode(path)),
              "sae_feature_stats_save")

    def __reduce__(self) -> Tuple[Any, Tuple[bytes]]:
        return (FeatureStats.from_bytes, (self.to_bytes(),))

    # ---- feeding ----
    def add(self, model: Any, x: ArrayLike) -> None:
        """Feed the rows of x (n x d_in), encoded by model."""
        rows, _ = as_rows(x, model.d_in, "x")
        check(lib.sae_feature_stats_add(self.handle, model.handle, float_pointer(rows),
                                        rows.shape[0]), "sae_feature_stats_add")

    def add_sparse(self, codes: Union[SparseCodes, Tuple[ArrayLike, ArrayLike, ArrayLike]]) -> None:
        """Feed rows given as sparse codes: a SparseCodes or (offsets,
        features, values) with offsets of n + 1 entries."""
        offsets, features, values = codes
        off = np.ascontiguousarray(offsets, dtype=np.uintp)
        feat = np.ascontiguousarray(features, dtype=np.uint32)
        val = _arrays.as_float32(values, "values")
        if off.ndim != 1 or off.size < 2:
            raise ValueError("offsets must have n_tokens + 1 >= 2 entries")
        if int(off[-1]) > min(feat.size, val.size):
            raise ValueError(f"offsets end at {int(off[-1])}, beyond the {feat.size} features "
                             f"and {val.size} values given")
        check(lib.sae_feature_stats_add_sparse(self.handle, off.size - 1, _ptr(off, size_ptr),
                                               _ptr(feat, _uint32_ptr), float_pointer(val)),
              "sae_feature_stats_add_sparse")

    def merge(self, other: "FeatureStats") -> None:
        """Merge other (over rows disjoint from this one's) into this one."""
        check(lib.sae_feature_stats_merge(self.handle, other.handle), "sae_feature_stats_merge")

    # ---- configuration and progress ----
    @property
    def d_sae(self) -> int:
        return int(lib.sae_feature_stats_d_sae(self.handle))

    @property
    def top_n(self) -> int:
        return int(lib.sae_feature_stats_top_n(self.handle))

    @property
    def bins(self) -> int:
        return int(lib.sae_feature_stats_bins(self.handle))

    @property
    def rows(self) -> int:
        """Rows fed and merged."""
        return int(lib.sae_feature_stats_rows(self.handle))

    @property
    def next_row(self) -> int:
        """The id the next row fed gets; set it (forward only) to give an
        accumulator its share of a dataset before merging."""
        return int(lib.sae_feature_stats_next_row(self.handle))

    @next_row.setter
    def next_row(self, row: int) -> None:
        check(lib.sae_feature_stats_set_next_row(self.handle, int(row)),
              "sae_feature_stats_set_next_row")

    # ---- results ----
    def bin_edges(self) -> np.ndarray:
        """The bins + 1 edges of the histogram (activation values)."""
        out = np.empty(self.bins + 1, dtype=np.float64)
        check(lib.sae_feature_stats_bin_edges(self.handle, _ptr(out, _double_ptr), out.size),
              "sae_feature_stats_bin_edges")
        return out

    def counts(self) -> np.ndarray:
        """(d_sae,) uint64: rows each feature fired on."""
        out = np.empty(self.d_sae, dtype=np.uint64)
        check(lib.sae_feature_stats_counts(self.handle, _ptr(out, uint64_ptr), out.size),
              "sae_feature_stats_counts")
        return out

    def sums(self) -> Tuple[np.ndarray, np.ndarray]:
        """(sum, sum of squares) of each feature's activations where it fires,
        each exact, rounded once to float64."""
        s1 = np.empty(self.d_sae, dtype=np.float64)
        s2 = np.empty(self.d_sae, dtype=np.float64)
        check(lib.sae_feature_stats_sums(self.handle, _ptr(s1, _double_ptr), _ptr(s2, _double_ptr),
                                         s1.size), "sae_feature_stats_sums")
        return s1, s2

    def max(self) -> np.ndarray:
        """(d_sae,) float32: each feature's largest activation (0 if it never fired)."""
        out = np.empty(self.d_sae, dtype=np.float32)
        check(lib.sae_feature_stats_max(self.handle, float_pointer(out), out.size),
              "sae_feature_stats_max")
        return out

    def histogram(self) -> np.ndarray:
        """(d_sae, bins) uint64 counts over bin_edges()."""
        out = np.empty((self.d_sae, self.bins), dtype=np.uint64)
        check(lib.sae_feature_stats_histogram(self.handle, _ptr(out, uint64_ptr), out.size),
              "sae_feature_stats_histogram")
        return out

    def top(self, feature: int) -> Tuple[np.ndarray, np.ndarray]:
        """(row ids uint64, values float32) of the feature's top rows, the
        largest value first."""
        rows = np.empty(self.top_n, dtype=np.uint64)
        vals = np.empty(self.top_n, dtype=np.float32)
        n = ctypes.c_size_t()
        check(lib.sae_feature_stats_top(self.handle, int(feature), _ptr(rows, uint64_ptr),
                                        float_pointer(vals), rows.size, ctypes.byref(n)),
              "sae_feature_stats_top")
        return rows[:n.value], vals[:n.value]

    def density(self) -> np.ndarray:
        """(d_sae,) float64: the fraction of rows each feature fires on."""
        return self.counts() / max(self.rows, 1)

    def mean(self) -> np.ndarray:
        """(d_sae,) float64: the mean activation where the feature fires (0 if never)."""
        c = self.counts().astype(np.float64)
        return np.divide(self.sums()[0], c, out=np.zeros_like(c), where=c > 0)

    def __repr__(self) -> str:
        if self.closed:
            return "<libsae.FeatureStats (closed)>"
        return (f"<libsae.FeatureStats d_sae={self.d_sae} top_n={self.top_n} bins={self.bins} "
                f"rows={self.rows}>")


__all__ = ["SparseCodes", "encode_sparse", "decoder_neighbors", "FeatureStats"]
