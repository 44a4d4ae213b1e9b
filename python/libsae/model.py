"""libsae.Model: an SAE (sae_model) with numpy in and out."""

from __future__ import annotations

import ctypes
import math
import os
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _arrays
from ._arrays import ArrayLike, as_rows, float_pointer, out_array
from ._handle import Handle, free_model, handle_address
from .capi import Comm as capi_Comm
from .capi import Losses as _CLosses
from .capi import lib, size_ptr, uint64_ptr
from .enums import Arch, BDecInit, ModelKind, Tensor, enum_value
from .errors import check

PathLike = Union[str, bytes, "os.PathLike[str]"]

# SAELens's names of the tensors, as Model.tensors() returns them.
TENSOR_NAMES: Dict[Tensor, str] = {
    Tensor.W_ENC: "W_enc", Tensor.B_ENC: "b_enc", Tensor.W_DEC: "W_dec", Tensor.B_DEC: "b_dec",
    Tensor.THRESHOLD: "threshold", Tensor.W_SKIP: "W_skip", Tensor.B_MAG: "b_mag",
    Tensor.R_MAG: "r_mag",
}


# JumpReLU's initial threshold when none is given (the JumpReLU paper's).
JUMPRELU_THRESHOLD = 0.001


class Losses(NamedTuple):
    """struct sae_losses: the batch's losses (see sae.h)."""
    loss: float  # the loss trained (l2 + lambda * l1 for ReLU)
    l2: float    # squared error summed over d_in, averaged over tokens
    l1: float    # sum_i f_i ||W_dec[i,:]||, averaged over tokens (no lambda)
    l0: float    # active features per token, averaged over tokens

    @classmethod
    def _from_c(cls, c: _CLosses) -> "Losses":
        return cls(c.loss, c.l2, c.l1, c.l0)


def _path(path: PathLike) -> bytes:
    return os.fsencode(path)


def _arch_param(arch: Union[Arch, str, int], k: Optional[int],
                threshold: Optional[float]) -> Tuple[Arch, float]:
    """The architecture and sae_model_create_arch's param from Model's keywords."""
    a = enum_value(Arch, arch, "arch")
    if a in (Arch.TOPK, Arch.BATCHTOPK):
        if k is None:
            raise TypeError(f"Model(arch={a.name.lower()!r}) needs k")
        if threshold is not None:
            raise TypeError(f"threshold applies to jumprelu models, not {a.name.lower()}")
        return a, float(k)  # type: ignore[return-value]
    if a == Arch.JUMPRELU:
        if k is not None:
            raise TypeError("k applies to topk and batchtopk models, not jumprelu")
        return a, JUMPRELU_THRESHOLD if threshold is None else float(threshold)  # type: ignore[return-value]
    if k is not None or threshold is not None:
        raise TypeError(f"{'k' if k is not None else 'threshold'} does not apply to "
                        f"{a.name.lower()} models")
    return a, 0.0  # type: ignore[return-value]


def _comm_ref(comm: Any) -> Any:
    """A pointer to a struct sae_comm (libsae.capi.Comm) for the C API."""
    if isinstance(comm, capi_Comm):
        return ctypes.byref(comm)
    raise TypeError(f"comm: expected a libsae.capi.Comm, got {type(comm).__name__}")


class Model(Handle):
    """A sparse autoencoder (sae_model).

        model = libsae.Model(768, 16384, arch="topk", k=32, seed=1)
        f = model.encode(x)            # x: (n, 768) float32 -> (n, 16384)
        model.W_dec                    # (16384, 768) copy of the decoder

    arch is an Arch or its name ("relu", "topk", "batchtopk", "jumprelu");
    TopK and BatchTopK take k (1..d_sae), JumpReLU its initial threshold
    (default 0.001, the JumpReLU paper's). The initialisation depends only on
    (d_in, d_sae, seed). Arrays passed in must be float32 and C-contiguous
    (numpy, np.memmap or torch CPU tensors; no copy is made); arrays returned
    are new numpy arrays unless `out=` is given.
    """

    _kind = "model"
    _free = free_model
    _c_save_size = staticmethod(lib.sae_model_save_size)
    _c_save_buffer = staticmethod(lib.sae_model_save_buffer)

    def __init__(self, d_in: int, d_sae: int, *, arch: Union[Arch, str, int] = Arch.RELU,
                 k: Optional[int] = None, threshold: Optional[float] = None,
                 widths: Optional[Sequence[int]] = None, seed: int = 0) -> None:
        a = enum_value(Arch, arch, "arch")
        if a == Arch.MATRYOSHKA:
            if k is None:
                raise TypeError("Model(arch='matryoshka') needs k")
            if threshold is not None:
                raise TypeError("threshold applies to jumprelu models, not matryoshka")
            levels = _widths(widths)
            out = ctypes.c_void_p()
            check(lib.sae_model_create_matryoshka(ctypes.byref(out), d_in, d_sae, seed, k,
                                                  levels, len(levels)),
                  "sae_model_create_matryoshka")
            self._adopt(out.value)  # type: ignore[arg-type]
            return
        if widths is not None:
            raise TypeError(f"widths apply to matryoshka models, not {a.name.lower()}")
        _, param = _arch_param(a, k, threshold)
        out = ctypes.c_void_p()
        check(lib.sae_model_create_arch(ctypes.byref(out), d_in, d_sae, seed, a, param),
              "sae_model_create_arch")
        self._adopt(out.value)  # type: ignore[arg-type]

    @classmethod
    def transcoder(cls, d_in: int, d_out: int, d_sae: int, *,
                   arch: Union[Arch, str, int] = Arch.RELU, skip: bool = False,
                   k: Optional[int] = None, threshold: Optional[float] = None,
                   seed: int = 0) -> "Model":
        """A transcoder from x (d_in) to a target y (d_out), with a learned
        skip map W_skip (d_out, d_in) when skip=True (sae_model_create_transcoder).
        arch: relu, topk, batchtopk or jumprelu, with k / threshold as Model()."""
        a = enum_value(Arch, arch, "arch")
        kind = ModelKind.SKIP_TRANSCODER if skip else ModelKind.TRANSCODER
        _, param = _arch_param(a, k, threshold)
        out = ctypes.c_void_p()
        check(lib.sae_model_create_transcoder(ctypes.byref(out), d_in, d_out, d_sae, seed, kind,
                                              a, param), "sae_model_create_transcoder")
        return cls._wrap(out.value)  # type: ignore[arg-type]

    def reinit(self, seed: int = 0, decoder_init_norm: float = 0.1) -> None:
        """Draw the initial parameters again from seed, with decoder rows of
        L2 norm decoder_init_norm, SAELens's option (sae_model_reinit)."""
        check(lib.sae_model_reinit(self.handle, seed, decoder_init_norm), "sae_model_reinit")

    @classmethod
    def _wrap(cls, addr: int, owned: bool = True) -> "Model":
        m = cls.__new__(cls)
        m._adopt(addr, owned)
        return m

    @classmethod
    def create(cls, d_in: int, d_sae: int, seed: int = 0) -> "Model":
        """A ReLU SAE (sae_model_create); Model(d_in, d_sae, seed=seed) is the same."""
        out = ctypes.c_void_p()
        check(lib.sae_model_create(ctypes.byref(out), d_in, d_sae, seed), "sae_model_create")
        return cls._wrap(out.value)  # type: ignore[arg-type]

    @classmethod
    def from_handle(cls, handle: Any, *, owned: bool = True) -> "Model":
        """Adopt a sae_model * made through the C API (an int address or a
        ctypes pointer). owned=True: this object frees it; False: it only
        borrows it, and the caller keeps it alive and frees it."""
        return cls._wrap(handle_address(handle, "Model.from_handle"), owned)

    @classmethod
    def load(cls, path: PathLike) -> "Model":
        """A model from a safetensors file, or a directory holding
        sae_weights.safetensors (and cfg.json): libsae's or SAELens's
        (sae_model_load)."""
        out = ctypes.c_void_p()
        check(lib.sae_model_load(ctypes.byref(out), _path(path)), "sae_model_load")
        return cls._wrap(out.value)  # type: ignore[arg-type]

    @classmethod
    def from_bytes(cls, data: Any) -> "Model":
        """A model from safetensors bytes (any bytes-like object, read in
        place: sae_model_load_buffer)."""
        buf = _arrays.byte_view(data, "data")
        out = ctypes.c_void_p()
        check(lib.sae_model_load_buffer(ctypes.byref(out), _arrays.void_pointer(buf), buf.size),
              "sae_model_load_buffer")
        return cls._wrap(out.value)  # type: ignore[arg-type]

    # --- distributed training: shards ---------------------------------------
    @classmethod
    def create_shard(cls, d_in: int, d_sae: int, begin: int, end: int, *,
                     arch: Union[Arch, str, int] = Arch.RELU, k: Optional[int] = None,
                     threshold: Optional[float] = None, seed: int = 0) -> "Model":
        """Features [begin, end) of Model(d_in, d_sae, arch=..., seed=...):
        exactly its slice, as a model of end - begin features
        (sae_model_create_shard). k stays the whole model's."""
        a, param = _arch_param(arch, k, threshold)
        out = ctypes.c_void_p()
        check(lib.sae_model_create_shard(ctypes.byref(out), d_in, d_sae, begin, end, seed, a,
                                         param), "sae_model_create_shard")
        return cls._wrap(out.value)  # type: ignore[arg-type]

    @classmethod
    def create_transcoder_shard(cls, d_in: int, d_out: int, d_sae: int, begin: int, end: int, *,
                                arch: Union[Arch, str, int] = Arch.RELU, skip: bool = False,
                                k: Optional[int] = None, threshold: Optional[float] = None,
                                seed: int = 0) -> "Model":
        """Features [begin, end) of Model.transcoder(d_in, d_out, d_sae, ...):
        exactly its slice; b_dec and W_skip whole
        (sae_model_create_transcoder_shard)."""
        a = enum_value(Arch, arch, "arch")
        kind = ModelKind.SKIP_TRANSCODER if skip else ModelKind.TRANSCODER
        _, param = _arch_param(a, k, threshold)
        out = ctypes.c_void_p()
        check(lib.sae_model_create_transcoder_shard(ctypes.byref(out), d_in, d_out, d_sae, begin,
                                                    end, seed, kind, a, param),
              "sae_model_create_transcoder_shard")
        return cls._wrap(out.value)  # type: ignore[arg-type]

    @classmethod
    def create_matryoshka_shard(cls, d_in: int, d_sae: int, begin: int, end: int, *, k: int,
                                widths: Optional[Sequence[int]] = None,
                                seed: int = 0) -> "Model":
        """Features [begin, end) of Model(d_in, d_sae, arch="matryoshka", k=k,
        widths=widths, seed=seed): exactly its slice, with the whole model's
        level widths (sae_model_create_matryoshka_shard)."""
        levels = _widths(widths)
        out = ctypes.c_void_p()
        check(lib.sae_model_create_matryoshka_shard(ctypes.byref(out), d_in, d_sae, begin, end,
                                                    seed, k, levels, len(levels)),
              "sae_model_create_matryoshka_shard")
        return cls._wrap(out.value)  # type: ignore[arg-type]

    @classmethod
    def load_shard(cls, path: PathLike, begin: int, end: int) -> "Model":
        """Features [begin, end) of the model saved at path, reading only
        those (sae_model_load_shard)."""
        out = ctypes.c_void_p()
        check(lib.sae_model_load_shard(ctypes.byref(out), _path(path), begin, end),
              "sae_model_load_shard")
        return cls._wrap(out.value)  # type: ignore[arg-type]

    @property
    def shard(self) -> Tuple[int, int, int]:
        """(begin, end, d_sae_total): the features this model holds; (0,
        d_sae, d_sae) for a whole model (sae_model_shard)."""
        b, e, t = ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_size_t()
        check(lib.sae_model_shard(self.handle, ctypes.byref(b), ctypes.byref(e), ctypes.byref(t)),
              "sae_model_shard")
        return b.value, e.value, t.value

    def save_collective(self, comm: Any, path: PathLike) -> None:
        """Save with every rank of comm (a libsae.capi.Comm): shards write
        their parts of the single-process files (sae_model_save_collective)."""
        check(lib.sae_model_save_collective(self.handle, _comm_ref(comm), _path(path)),
              "sae_model_save_collective")

    def clone(self) -> "Model":
        """An independent deep copy: every tensor and the architecture's state
        bit for bit (sae_model_clone). copy.copy and copy.deepcopy do this."""
        out = ctypes.c_void_p()
        check(lib.sae_model_clone(ctypes.byref(out), self.handle), "sae_model_clone")
        return type(self)._wrap(out.value)  # type: ignore[arg-type]

    __copy__ = clone

    def __deepcopy__(self, memo: Any) -> "Model":
        return self.clone()

    # --- saving --------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Save atomically (sae_model_save): into an existing directory as
        sae_weights.safetensors + cfg.json (SAE.load_from_disk opens it), any
        other path as one safetensors file."""
        check(lib.sae_model_save(self.handle, _path(path)), "sae_model_save")

    def __reduce__(self) -> Tuple[Any, Tuple[bytes]]:
        return (Model.from_bytes, (self.to_bytes(),))

    # --- shape and architecture ------------------------------------------------
    @property
    def d_in(self) -> int:
        return int(lib.sae_model_d_in(self.handle))

    @property
    def d_sae(self) -> int:
        return int(lib.sae_model_d_sae(self.handle))

    @property
    def arch(self) -> Arch:
        value = lib.sae_model_arch(self.handle)
        try:
            return Arch(value)
        except ValueError:  # an architecture newer than this package
            return value  # type: ignore[return-value]

    @property
    def k(self) -> int:
        """k of a TopK, BatchTopK or Matryoshka model; 0 for the others."""
        return int(lib.sae_model_k(self.handle))

    @property
    def d_out(self) -> int:
        """The output's width: d_out of a transcoder, d_in of an autoencoder."""
        return int(lib.sae_model_d_out(self.handle))

    @property
    def kind(self) -> ModelKind:
        value = lib.sae_model_kind(self.handle)
        try:
            return ModelKind(value)
        except ValueError:  # a kind newer than this package
            return value  # type: ignore[return-value]

    @property
    def widths(self) -> Tuple[int, ...]:
        """A Matryoshka model's level widths (the last is d_sae); () for the others."""
        n = int(lib.sae_model_matryoshka_levels(self.handle))
        if n == 0:
            return ()
        buf = (ctypes.c_size_t * n)()
        check(lib.sae_model_matryoshka_widths(self.handle, buf, n), "sae_model_matryoshka_widths")
        return tuple(int(w) for w in buf)

    def __repr__(self) -> str:
        if self.closed:
            return "<libsae.Model (closed)>"
        arch = self.arch
        name = arch.name.lower() if isinstance(arch, Arch) else str(arch)
        extra = f", k={self.k}" if self.k else ""
        if self.kind != ModelKind.AUTOENCODER:
            extra += f" kind={self.kind.name.lower()} d_out={self.d_out}"
        return f"<libsae.Model d_in={self.d_in} d_sae={self.d_sae} arch={name}{extra}>"

    # --- tensors ---------------------------------------------------------------
    def tensor_size(self, which: Union[Tensor, str, int]) -> int:
        """Floats in tensor `which` (0 for THRESHOLD of ReLU and TopK)."""
        return int(lib.sae_model_tensor_size(self.handle, enum_value(Tensor, which, "which")))

    def tensor_shape(self, which: Union[Tensor, str, int]) -> Tuple[int, ...]:
        t = enum_value(Tensor, which, "which")
        d_in, d_sae, d_out = self.d_in, self.d_sae, self.d_out
        shapes = {Tensor.W_ENC: (d_in, d_sae), Tensor.B_ENC: (d_sae,),
                  Tensor.W_DEC: (d_sae, d_out), Tensor.B_DEC: (d_out,)}
        if t == Tensor.W_SKIP and self.tensor_size(t):
            return (d_out, d_in)
        return shapes.get(t, (self.tensor_size(t),))  # type: ignore[call-overload]

    def get(self, which: Union[Tensor, str, int], out: Optional[ArrayLike] = None) -> np.ndarray:
        """A copy of tensor `which` (a Tensor or "W_enc", "b_dec", ...), in
        SAELens's shape, into `out` when given."""
        t = _tensor(which)
        a = out_array(out, self.tensor_shape(t))
        if a.size == 0:  # THRESHOLD of an architecture without one
            return a
        check(lib.sae_model_get_tensor(self.handle, t, float_pointer(a), a.size),
              "sae_model_get_tensor")
        return a

    def set(self, which: Union[Tensor, str, int], values: ArrayLike) -> None:
        """Replace tensor `which` with float32 values of its shape."""
        t = _tensor(which)
        a = _arrays.as_float32(values, "values")
        shape = self.tensor_shape(t)
        if a.shape != shape:
            raise ValueError(f"values has shape {tuple(a.shape)}: tensor {t.name} is {shape}")
        check(lib.sae_model_set_tensor(self.handle, t, float_pointer(a), a.size),
              "sae_model_set_tensor")

    def tensors(self) -> Dict[str, np.ndarray]:
        """Copies of every tensor the model has, by SAELens name (a Gated
        model's b_enc is SAELens's b_gate)."""
        gated = self.arch == Arch.GATED
        return {("b_gate" if gated and t == Tensor.B_ENC else TENSOR_NAMES[t]): self.get(t)
                for t in Tensor if self.tensor_size(t) > 0}

    W_enc = property(lambda self: self.get(Tensor.W_ENC),
                     lambda self, v: self.set(Tensor.W_ENC, v), doc="(d_in, d_sae), a copy")
    b_enc = property(lambda self: self.get(Tensor.B_ENC),
                     lambda self, v: self.set(Tensor.B_ENC, v), doc="(d_sae,), a copy")
    W_dec = property(lambda self: self.get(Tensor.W_DEC),
                     lambda self, v: self.set(Tensor.W_DEC, v), doc="(d_sae, d_in), a copy")
    b_dec = property(lambda self: self.get(Tensor.B_DEC),
                     lambda self, v: self.set(Tensor.B_DEC, v), doc="(d_in,), a copy")
    threshold = property(lambda self: self.get(Tensor.THRESHOLD),
                         lambda self, v: self.set(Tensor.THRESHOLD, v),
                         doc="JumpReLU: (d_sae,) thresholds; BatchTopK: (1,); others: (0,)")

    # --- encode, decode, loss --------------------------------------------------
    def encode(self, x: ArrayLike, out: Optional[ArrayLike] = None) -> np.ndarray:
        """Features f (n, d_sae) of x (n, d_in), by the model's inference
        activation (sae_encode). A 1-D x of d_in values gives a 1-D f."""
        rows, single = as_rows(x, self.d_in, "x")
        f = out_array(out, (rows.shape[0], self.d_sae) if not single else (self.d_sae,))
        check(lib.sae_encode(self.handle, float_pointer(rows), rows.shape[0], float_pointer(f)),
              "sae_encode")
        return f

    def decode(self, f: ArrayLike, out: Optional[ArrayLike] = None) -> np.ndarray:
        """f W_dec + b_dec, (n, d_out), of f (n, d_sae): an autoencoder's
        reconstruction (a skip transcoder's output without its skip term)."""
        rows, single = as_rows(f, self.d_sae, "f", "d_sae")
        x_hat = out_array(out, (rows.shape[0], self.d_out) if not single else (self.d_out,))
        check(lib.sae_decode(self.handle, float_pointer(rows), rows.shape[0],
                             float_pointer(x_hat)), "sae_decode")
        return x_hat

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """decode(encode(x))."""
        return self.decode(self.encode(x))

    def loss(self, x: ArrayLike, l1_coeff: float) -> Losses:
        """The losses of batch x with L1 coefficient l1_coeff, changing nothing."""
        rows, _ = as_rows(x, self.d_in, "x")
        out = _CLosses()
        check(lib.sae_loss(self.handle, float_pointer(rows), rows.shape[0], l1_coeff,
                           ctypes.byref(out)), "sae_loss")
        return Losses._from_c(out)

    def loss_levels(self, x: ArrayLike) -> np.ndarray:
        """A Matryoshka model's l2 at each level on x (float64, one per
        width: the last is loss().l2, their sum loss().loss)."""
        rows, _ = as_rows(x, self.d_in, "x")
        n = int(lib.sae_model_matryoshka_levels(self.handle))
        out = np.zeros(n, dtype=np.float64)
        check(lib.sae_loss_levels(self.handle, float_pointer(rows), rows.shape[0],
                                  out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), n),
              "sae_loss_levels")
        return out

    def fvu(self, x: ArrayLike) -> float:
        """Fraction of variance unexplained on x (at least 2 rows)."""
        rows, _ = as_rows(x, self.d_in, "x")
        out = ctypes.c_double()
        check(lib.sae_fvu(self.handle, float_pointer(rows), rows.shape[0], ctypes.byref(out)),
              "sae_fvu")
        return out.value

    def output(self, x: ArrayLike, out: Optional[ArrayLike] = None) -> np.ndarray:
        """The model's output (n, d_out) for inputs x (n, d_in): an autoencoder's
        reconstruction, a transcoder's y_hat with its skip term (sae_output)."""
        rows, single = as_rows(x, self.d_in, "x")
        y_hat = out_array(out, (rows.shape[0], self.d_out) if not single else (self.d_out,))
        check(lib.sae_output(self.handle, float_pointer(rows), rows.shape[0],
                             float_pointer(y_hat)), "sae_output")
        return y_hat

    def loss_target(self, x: ArrayLike, y: ArrayLike, l1_coeff: float) -> Losses:
        """The losses of the model's output for x (n, d_in) against the target
        y (n, d_out), changing nothing (sae_loss_target)."""
        xr, yr = _paired_rows(self, x, y)
        out = _CLosses()
        check(lib.sae_loss_target(self.handle, float_pointer(xr), float_pointer(yr),
                                  xr.shape[0], l1_coeff, ctypes.byref(out)), "sae_loss_target")
        return Losses._from_c(out)

    def fvu_target(self, x: ArrayLike, y: ArrayLike) -> float:
        """Fraction of y's variance (n, d_out) the output for x leaves unexplained."""
        xr, yr = _paired_rows(self, x, y)
        out = ctypes.c_double()
        check(lib.sae_fvu_target(self.handle, float_pointer(xr), float_pointer(yr), xr.shape[0],
                                 ctypes.byref(out)), "sae_fvu_target")
        return out.value

    def to_torch(self) -> Any:
        """An equivalent torch.nn.Module for inference (forward, encode,
        decode; the same outputs within float rounding), holding copies of the
        tensors as Parameters. Needs torch (Debian: python3-torch)."""
        from .torch_export import to_torch
        return to_torch(self)

    # --- training recipe ---------------------------------------------------------
    def fold_input_scale(self, scale: float) -> None:
        """Fold the input scale s of a model trained on s x into its weights,
        so that it takes raw x (sae_model_fold_input_scale)."""
        check(lib.sae_model_fold_input_scale(self.handle, scale), "sae_model_fold_input_scale")

    def init_b_dec(self, x: ArrayLike,
                   method: Union[BDecInit, str, int] = BDecInit.GEOMETRIC_MEDIAN) -> None:
        """Set b_dec from a sample x (n, d_in) of the training data: its mean
        or geometric median (sae_model_init_b_dec)."""
        rows, _ = as_rows(x, self.d_in, "x")
        check(lib.sae_model_init_b_dec(self.handle, float_pointer(rows), rows.shape[0],
                                       enum_value(BDecInit, method, "method")),
              "sae_model_init_b_dec")

    def feature_density_histogram(self, x: ArrayLike, log10_min: Optional[float] = None,
                                  log10_max: float = 0.0,
                                  n_bins: int = 20) -> Tuple[np.ndarray, int]:
        """(counts, n_dead): the log10 feature-density histogram of batch x
        (n_bins uint64 counts over [log10_min, log10_max], densities outside
        clamped; log10_min defaults to log10(1 / n_tokens), which clamps
        nothing) and the features that fired on no token of x."""
        rows, _ = as_rows(x, self.d_in, "x")
        if log10_min is None:
            log10_min = -math.log10(rows.shape[0]) if rows.shape[0] > 1 else -1.0
        counts = np.zeros(n_bins, dtype=np.uint64)
        n_dead = ctypes.c_size_t()
        check(lib.sae_feature_density_histogram(
            self.handle, float_pointer(rows), rows.shape[0], log10_min, log10_max, n_bins,
            counts.ctypes.data_as(uint64_ptr), ctypes.byref(n_dead)),
            "sae_feature_density_histogram")
        return counts, n_dead.value

    def feature_fire_counts(self, x: ArrayLike,
                            counts: Optional[np.ndarray] = None) -> np.ndarray:
        """counts[i] += the tokens of batch x (n, d_in) on which feature i
        fires (sae_feature_fire_counts): pass the same uint64 counts (d_sae,)
        for each batch of a stream; a new zeroed array when None. Densities
        are counts / tokens seen."""
        rows, _ = as_rows(x, self.d_in, "x")
        if counts is None:
            counts = np.zeros(self.d_sae, dtype=np.uint64)
        elif (not isinstance(counts, np.ndarray) or counts.dtype != np.uint64 or
              counts.shape != (self.d_sae,) or not counts.flags.c_contiguous or
              not counts.flags.writeable):
            raise TypeError(f"counts must be a writable C-contiguous uint64 array of shape "
                            f"({self.d_sae},)")
        check(lib.sae_feature_fire_counts(self.handle, float_pointer(rows), rows.shape[0],
                                          counts.ctypes.data_as(uint64_ptr), counts.size),
              "sae_feature_fire_counts")
        return counts


def _paired_rows(model: "Model", x: ArrayLike, y: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """x (n, d_in) and its target y (n, d_out) as float32 rows, as many of each."""
    xr, _ = as_rows(x, model.d_in, "x")
    yr, _ = as_rows(y, model.d_out, "y", "d_out")
    if xr.shape[0] != yr.shape[0]:
        raise ValueError(f"x has {xr.shape[0]} rows, y {yr.shape[0]}")
    return xr, yr


def _widths(widths: Optional[Sequence[int]]) -> Any:
    """Matryoshka's level widths as a C array of size_t."""
    values = [] if widths is None else [int(w) for w in widths]
    if any(w < 0 for w in values):
        raise ValueError(f"widths must be positive, got {values}")
    return (ctypes.c_size_t * max(len(values), 1))(*values)


def _tensor(which: Union[Tensor, str, int]) -> Tensor:
    if isinstance(which, str):
        if which == "b_gate":
            return Tensor.B_ENC
        for t, name in TENSOR_NAMES.items():
            if which == name:
                return t
    return enum_value(Tensor, which, "which")  # type: ignore[return-value]


def shard_range(d_sae: int, n_shards: int, shard: int) -> Tuple[int, int]:
    """(begin, end) of shard `shard` in the even split of d_sae features into
    n_shards (sae_shard_range)."""
    b, e = ctypes.c_size_t(), ctypes.c_size_t()
    check(lib.sae_shard_range(d_sae, n_shards, shard, ctypes.byref(b), ctypes.byref(e)),
          "sae_shard_range")
    return b.value, e.value


def estimate_input_scale(x: ArrayLike) -> float:
    """s = sqrt(d_in / mean ||x_t||^2) of a sample x (n, d_in), so that s x
    has mean squared norm d_in (sae_estimate_input_scale)."""
    a = _arrays.as_float32(x, "x")
    if a.ndim != 2:
        raise ValueError(f"x has shape {tuple(a.shape)}: expected (n_tokens, d_in)")
    out = ctypes.c_double()
    check(lib.sae_estimate_input_scale(float_pointer(a), a.shape[0], a.shape[1],
                                       ctypes.byref(out)), "sae_estimate_input_scale")
    return out.value


def total_variance(x: ArrayLike, return_mean: bool = False):
    """The mean over tokens of ||x_t - mean(x)||^2 of a batch x (n, d)
    (sae_total_variance): the FVU's denominator per token, so a step's
    Losses.l2 / total_variance(x) is the batch's FVU. With return_mean,
    (variance, mean) with the batch's mean as a float64 array (d,)."""
    a = _arrays.as_float32(x, "x")
    if a.ndim != 2:
        raise ValueError(f"x has shape {tuple(a.shape)}: expected (n_tokens, d)")
    out = ctypes.c_double()
    mean = np.empty(a.shape[1], np.float64) if return_mean else None
    mean_ptr = mean.ctypes.data_as(ctypes.POINTER(ctypes.c_double)) if return_mean else None
    check(lib.sae_total_variance(float_pointer(a), a.shape[0], a.shape[1], mean_ptr,
                                 ctypes.byref(out)), "sae_total_variance")
    return (out.value, mean) if return_mean else out.value


__all__ = ["Model", "Losses", "estimate_input_scale", "shard_range", "total_variance",
           "TENSOR_NAMES"]
