"""Float buffers in and out of libsae without copies.

A buffer passes to the library as it is when it already has the layout the
library reads: a numpy array (np.memmap included) or a PyTorch CPU tensor of
float32, C-contiguous and aligned. Anything else is refused with a TypeError
(dtype, type) or ValueError (shape, layout, device) that names the argument
and how to convert it; the package never converts silently.
"""

from __future__ import annotations

import ctypes
from typing import Any, Optional, Tuple

import numpy as np

from .capi import float_ptr

ArrayLike = Any  # np.ndarray | np.memmap | torch.Tensor


def _from_torch(x: Any, name: str) -> np.ndarray:
    import torch  # only reached when x is a torch tensor, so torch is importable
    if x.device.type != "cpu":
        raise ValueError(f"{name} is a torch tensor on {x.device}: libsae reads CPU memory "
                         f"(pass {name}.cpu())")
    if x.dtype != torch.float32:
        raise TypeError(f"{name} is a torch tensor of {x.dtype}: libsae takes torch.float32 "
                        f"(pass {name}.float())")
    if x.layout != torch.strided:
        raise TypeError(f"{name} is a {x.layout} torch tensor: libsae takes dense tensors "
                        f"(pass {name}.to_dense())")
    if not x.is_contiguous():
        raise ValueError(f"{name} is not contiguous: libsae reads rows back to back "
                         f"(pass {name}.contiguous())")
    return x.detach().numpy()  # shares the tensor's memory


def is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "device")


def as_float32(x: ArrayLike, name: str) -> np.ndarray:
    """x as a float32, C-contiguous, aligned ndarray sharing x's memory."""
    if is_torch_tensor(x):
        a = _from_torch(x, name)
    elif isinstance(x, np.ndarray):
        a = x
    elif hasattr(x, "__array_interface__") or hasattr(x, "__array__"):
        a = np.asarray(x)
    else:
        raise TypeError(f"{name} must be a numpy array or a torch CPU tensor of float32, "
                        f"got {type(x).__name__} (pass np.asarray({name}, dtype=np.float32))")
    if a.dtype != np.float32:
        raise TypeError(f"{name} has dtype {a.dtype.str if a.dtype.byteorder == '>' else a.dtype}: "
                        f"libsae takes native float32 (pass {name}.astype(np.float32))")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous (strides {a.strides}): libsae reads rows "
                         f"back to back (pass np.ascontiguousarray({name}))")
    if not a.flags.aligned:
        raise ValueError(f"{name} is not aligned to 4 bytes (pass {name}.copy())")
    return a


def as_rows(x: ArrayLike, width: int, name: str, what: str = "d_in") -> Tuple[np.ndarray, bool]:
    """x as an (n, width) float32 view, and whether x was a single row
    (a 1-D array of width values)."""
    a = as_float32(x, name)
    if a.ndim == 1 and a.shape[0] == width:
        return a.reshape(1, width), True
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"{name} has shape {tuple(a.shape)}: expected (n_tokens, {width}) "
                         f"(n_tokens x {what}), or ({width},) for one token")
    if a.shape[0] == 0:
        raise ValueError(f"{name} has no rows: shape {tuple(a.shape)}")
    return a, False


def out_array(out: Optional[ArrayLike], shape: Tuple[int, ...], name: str = "out") -> np.ndarray:
    """A fresh float32 array of `shape`, or `out` checked to be one to write."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    a = as_float32(out, name)
    if a.shape != shape:
        raise ValueError(f"{name} has shape {tuple(a.shape)}: expected {shape}")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return a


def float_pointer(a: np.ndarray) -> Any:
    return a.ctypes.data_as(float_ptr)


def byte_view(buf: Any, name: str) -> np.ndarray:
    """A bytes-like object (bytes, bytearray, memoryview, mmap, uint8 array) as
    a uint8 array sharing its memory."""
    if isinstance(buf, str):
        raise TypeError(f"{name} must be bytes-like, got str (a path? use load())")
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(f"{name} must be bytes-like, got {type(buf).__name__}") from None
    if not view.contiguous:
        raise ValueError(f"{name} is not contiguous")
    return np.frombuffer(view.cast("B") if view.ndim != 1 or view.format != "B" else view,
                         dtype=np.uint8)


def writable_bytes(buf: Any, name: str) -> np.ndarray:
    a = byte_view(buf, name)
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return a


def void_pointer(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)
