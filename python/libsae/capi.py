"""The C API of libsae through ctypes: the one signature table of the tree.

Every function declared in include/libsae/sae.h is here, typed exactly as the
header declares it (tests/python/test_coverage.py compares the two), and is
callable as an attribute of this module's ``lib``::

    from libsae import capi
    handle = ctypes.c_void_p()
    rc = capi.lib.sae_model_create(ctypes.byref(handle), 64, 512, 1)

The rest of the package (Model, Optimizer, train, ...) is built on it; tests
and other FFI users import it instead of declaring signatures of their own.

Which library is loaded, in this order:

1. ``$LIBSAE_PATH``, when set (a path to libsae.so.0; an error if it does not
   load);
2. the library installed with this package by ``cmake --install`` (recorded
   in ``libsae/_install.py`` as a path relative to the package);
3. ``libsae.so.0`` through the system's dynamic loader (ldconfig's cache,
   ``LD_LIBRARY_PATH``).

A function that the loaded library does not export (an older libsae.so.0)
stays callable and raises ``MissingFunctionError`` naming it and the library's
version, so that everything else keeps working.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_char_p, c_double, c_int, c_size_t, c_uint, c_uint64, c_void_p
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = ["lib", "library_path", "Losses", "RngState", "Comm", "FUNCTIONS", "STRUCTS", "MissingFunctionError",
           "float_ptr", "uint64_ptr", "size_ptr"]


class Losses(ctypes.Structure):
    """struct sae_losses (frozen: four doubles)."""
    _fields_ = [("loss", c_double), ("l2", c_double), ("l1", c_double), ("l0", c_double)]


class RngState(ctypes.Structure):
    """struct sae_rng (frozen: xoshiro256** state)."""
    _fields_ = [("s", c_uint64 * 4)]


# struct sae_comm's functions (each returns 0 or a nonzero failure).
AllreduceF32 = ctypes.CFUNCTYPE(c_int, c_void_p, POINTER(ctypes.c_float), c_size_t)
AllreduceF64 = ctypes.CFUNCTYPE(c_int, c_void_p, POINTER(c_double), c_size_t)
Allgather = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t, c_void_p)
Broadcast = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t, c_int)


class Comm(ctypes.Structure):
    """struct sae_comm: a host's communicator (sae.h, "Communicators");
    struct_size must be ctypes.sizeof(Comm)."""
    _fields_ = [("struct_size", c_size_t), ("ctx", c_void_p), ("rank", c_int),
                ("n_ranks", c_int), ("allreduce_f32", AllreduceF32),
                ("allreduce_f64", AllreduceF64), ("allgather", Allgather),
                ("broadcast", Broadcast)]


# The structs of sae.h, by their C name.
STRUCTS: Dict[str, Any] = {"sae_losses": Losses, "sae_rng": RngState, "sae_comm": Comm}

# Handles are opaque pointers: sae_model *, sae_optimizer * are c_void_p and
# an output handle (sae_model **) is POINTER(c_void_p).
_handle = c_void_p
_out_handle = POINTER(c_void_p)
float_ptr = POINTER(ctypes.c_float)
uint64_ptr = POINTER(c_uint64)
size_ptr = POINTER(c_size_t)
_double_ptr = POINTER(c_double)
_losses_ptr = POINTER(Losses)
_rng_ptr = POINTER(RngState)

# name: (restype, argtypes), in the header's order.
FUNCTIONS: Dict[str, Tuple[Any, List[Any]]] = {
    # version
    "sae_version_number": (c_uint, []),
    "sae_version_string": (c_char_p, []),
    # status codes
    "sae_status_string": (c_char_p, [c_int]),
    "sae_error_detail": (c_char_p, []),
    # model
    "sae_model_create": (c_int, [_out_handle, c_size_t, c_size_t, c_uint64]),
    "sae_model_free": (None, [_handle]),
    "sae_model_clone": (c_int, [_out_handle, _handle]),
    "sae_model_d_in": (c_size_t, [_handle]),
    "sae_model_d_sae": (c_size_t, [_handle]),
    "sae_model_tensor_size": (c_size_t, [_handle, c_int]),
    "sae_model_get_tensor": (c_int, [_handle, c_int, float_ptr, c_size_t]),
    "sae_model_set_tensor": (c_int, [_handle, c_int, float_ptr, c_size_t]),
    # architectures
    "sae_model_create_arch": (c_int, [_out_handle, c_size_t, c_size_t, c_uint64, c_int, c_double]),
    "sae_model_arch": (c_int, [_handle]),
    "sae_model_k": (c_size_t, [_handle]),
    "sae_model_create_matryoshka": (c_int, [_out_handle, c_size_t, c_size_t, c_uint64, c_size_t,
                                            size_ptr, c_size_t]),
    "sae_model_matryoshka_levels": (c_size_t, [_handle]),
    "sae_model_matryoshka_widths": (c_int, [_handle, size_ptr, c_size_t]),
    "sae_loss_levels": (c_int, [_handle, float_ptr, c_size_t, _double_ptr, c_size_t]),
    # transcoders
    "sae_model_create_transcoder": (c_int, [_out_handle, c_size_t, c_size_t, c_size_t, c_uint64,
                                            c_int, c_int, c_double]),
    "sae_model_d_out": (c_size_t, [_handle]),
    "sae_model_kind": (c_int, [_handle]),
    "sae_model_reinit": (c_int, [_handle, c_uint64, c_double]),
    # encode, decode, loss
    "sae_encode": (c_int, [_handle, float_ptr, c_size_t, float_ptr]),
    "sae_decode": (c_int, [_handle, float_ptr, c_size_t, float_ptr]),
    "sae_loss": (c_int, [_handle, float_ptr, c_size_t, c_double, _losses_ptr]),
    "sae_fvu": (c_int, [_handle, float_ptr, c_size_t, _double_ptr]),
    "sae_output": (c_int, [_handle, float_ptr, c_size_t, float_ptr]),
    "sae_loss_target": (c_int, [_handle, float_ptr, float_ptr, c_size_t, c_double, _losses_ptr]),
    "sae_fvu_target": (c_int, [_handle, float_ptr, float_ptr, c_size_t, _double_ptr]),
    # optimizer and training step
    "sae_optimizer_create": (c_int, [_out_handle, _handle]),
    "sae_optimizer_free": (None, [_handle]),
    "sae_optimizer_set": (c_int, [_handle, c_int, c_double]),
    "sae_optimizer_get": (c_int, [_handle, c_int, _double_ptr]),
    "sae_option_name": (c_char_p, [c_int]),
    "sae_option_default": (c_int, [c_int, _double_ptr]),
    "sae_option_bounds": (c_int, [c_int, _double_ptr, _double_ptr, POINTER(c_uint)]),
    "sae_gemm_backend": (c_int, [c_int]),
    "sae_optimizer_steps": (c_uint64, [_handle]),
    "sae_step": (c_int, [_handle, _handle, float_ptr, c_size_t, _losses_ptr]),
    "sae_step_target": (c_int, [_handle, _handle, float_ptr, float_ptr, c_size_t, _losses_ptr]),
    # feature activity
    "sae_optimizer_tokens_since_fired": (c_int, [_handle, uint64_ptr, c_size_t]),
    "sae_optimizer_dead_count": (c_int, [_handle, c_uint64, size_ptr]),
    # checkpoints
    "sae_model_save_size": (c_int, [_handle, size_ptr]),
    "sae_model_save_buffer": (c_int, [_handle, c_void_p, c_size_t, size_ptr]),
    "sae_model_save": (c_int, [_handle, c_char_p]),
    "sae_model_load_buffer": (c_int, [_out_handle, c_void_p, c_size_t]),
    "sae_model_load": (c_int, [_out_handle, c_char_p]),
    "sae_optimizer_save_size": (c_int, [_handle, size_ptr]),
    "sae_optimizer_save_buffer": (c_int, [_handle, c_void_p, c_size_t, size_ptr]),
    "sae_optimizer_save": (c_int, [_handle, c_char_p]),
    "sae_optimizer_load_buffer": (c_int, [_out_handle, _handle, c_void_p, c_size_t]),
    "sae_optimizer_load": (c_int, [_out_handle, _handle, c_char_p]),
    # checkpoint directories
    "sae_checkpoint_begin": (c_int, [c_char_p, c_char_p, c_size_t]),
    "sae_checkpoint_commit": (c_int, [c_char_p, c_char_p]),
    "sae_checkpoint_abort": (c_int, [c_char_p, c_char_p]),
    "sae_checkpoint_current": (c_int, [c_char_p, c_char_p, c_size_t]),
    # training recipe
    "sae_optimizer_lr_at": (c_int, [_handle, c_uint64, _double_ptr]),
    "sae_optimizer_l1_coeff_at": (c_int, [_handle, c_uint64, _double_ptr]),
    "sae_estimate_input_scale": (c_int, [float_ptr, c_size_t, c_size_t, _double_ptr]),
    "sae_total_variance": (c_int, [float_ptr, c_size_t, c_size_t, _double_ptr, _double_ptr]),
    "sae_model_fold_input_scale": (c_int, [_handle, c_double]),
    "sae_model_init_b_dec": (c_int, [_handle, float_ptr, c_size_t, c_int]),
    "sae_optimizer_dead_features": (c_int, [_handle, c_uint64, size_ptr, c_size_t, size_ptr]),
    "sae_resample_dead": (c_int, [_handle, _handle, float_ptr, c_size_t, c_uint64, c_uint64,
                                  size_ptr]),
    "sae_feature_density_histogram": (c_int, [_handle, float_ptr, c_size_t, c_double, c_double,
                                              c_size_t, uint64_ptr, size_ptr]),
    "sae_feature_fire_counts": (c_int, [_handle, float_ptr, c_size_t, uint64_ptr, c_size_t]),
    # random numbers
    "sae_rng_seed": (None, [_rng_ptr, c_uint64, c_uint64]),
    "sae_rng_next": (c_uint64, [_rng_ptr]),
    "sae_rng_uniform": (c_double, [_rng_ptr]),
    "sae_rng_normal": (c_double, [_rng_ptr]),
    "sae_rng_below": (c_uint64, [_rng_ptr, c_uint64]),
    "sae_rng_shuffle": (c_int, [_rng_ptr, uint64_ptr, c_size_t]),
    # distributed training
    "sae_optimizer_set_comm": (c_int, [_handle, c_int, POINTER(Comm)]),
    "sae_shard_range": (c_int, [c_size_t, c_int, c_int, size_ptr, size_ptr]),
    "sae_model_create_shard": (c_int, [_out_handle, c_size_t, c_size_t, c_size_t, c_size_t,
                                       c_uint64, c_int, c_double]),
    "sae_model_create_transcoder_shard": (c_int, [_out_handle, c_size_t, c_size_t, c_size_t,
                                                  c_size_t, c_size_t, c_uint64, c_int, c_int,
                                                  c_double]),
    "sae_model_create_matryoshka_shard": (c_int, [_out_handle, c_size_t, c_size_t, c_size_t,
                                                  c_size_t, c_uint64, c_size_t, size_ptr,
                                                  c_size_t]),
    "sae_model_shard": (c_int, [_handle, size_ptr, size_ptr, size_ptr]),
    "sae_model_save_collective": (c_int, [_handle, POINTER(Comm), c_char_p]),
    "sae_optimizer_save_collective": (c_int, [_handle, POINTER(Comm), c_char_p]),
    "sae_checkpoint_save_collective": (c_int, [_handle, _handle, c_char_p]),
    "sae_model_load_shard": (c_int, [_out_handle, c_char_p, c_size_t, c_size_t]),
}

# sae.h's "Sparse codes", "Feature statistics over a stream" and "Decoder
# neighbours" (issue 15), in the header's order.
_uint32_ptr = POINTER(ctypes.c_uint32)
FUNCTIONS.update({
    "sae_encode_sparse_size": (c_int, [_handle, float_ptr, c_size_t, c_size_t, size_ptr]),
    "sae_encode_sparse": (c_int, [_handle, float_ptr, c_size_t, c_size_t, size_ptr, _uint32_ptr,
                                  float_ptr, c_size_t, size_ptr]),
    "sae_feature_stats_create": (c_int, [_out_handle, c_size_t, c_size_t, c_size_t, c_double,
                                         c_double]),
    "sae_feature_stats_free": (None, [_handle]),
    "sae_feature_stats_add": (c_int, [_handle, _handle, float_ptr, c_size_t]),
    "sae_feature_stats_add_sparse": (c_int, [_handle, c_size_t, size_ptr, _uint32_ptr, float_ptr]),
    "sae_feature_stats_merge": (c_int, [_handle, _handle]),
    "sae_feature_stats_d_sae": (c_size_t, [_handle]),
    "sae_feature_stats_top_n": (c_size_t, [_handle]),
    "sae_feature_stats_bins": (c_size_t, [_handle]),
    "sae_feature_stats_rows": (c_uint64, [_handle]),
    "sae_feature_stats_next_row": (c_uint64, [_handle]),
    "sae_feature_stats_set_next_row": (c_int, [_handle, c_uint64]),
    "sae_feature_stats_bin_edges": (c_int, [_handle, _double_ptr, c_size_t]),
    "sae_feature_stats_counts": (c_int, [_handle, uint64_ptr, c_size_t]),
    "sae_feature_stats_sums": (c_int, [_handle, _double_ptr, _double_ptr, c_size_t]),
    "sae_feature_stats_max": (c_int, [_handle, float_ptr, c_size_t]),
    "sae_feature_stats_histogram": (c_int, [_handle, uint64_ptr, c_size_t]),
    "sae_feature_stats_top": (c_int, [_handle, c_size_t, uint64_ptr, float_ptr, c_size_t,
                                      size_ptr]),
    "sae_feature_stats_save_size": (c_int, [_handle, size_ptr]),
    "sae_feature_stats_save_buffer": (c_int, [_handle, c_void_p, c_size_t, size_ptr]),
    "sae_feature_stats_save": (c_int, [_handle, c_char_p]),
    "sae_feature_stats_load_buffer": (c_int, [_out_handle, c_void_p, c_size_t]),
    "sae_feature_stats_load": (c_int, [_out_handle, c_char_p]),
    "sae_decoder_neighbors": (c_int, [_handle, c_size_t, _uint32_ptr, float_ptr, c_size_t]),
    "sae_max_cosine": (c_int, [float_ptr, c_size_t, float_ptr, c_size_t, c_size_t, float_ptr,
                               _uint32_ptr]),
})


class MissingFunctionError(AttributeError):
    """The loaded libsae.so.0 predates a function this package binds."""


def _missing(name: str, path: str) -> Callable[..., Any]:
    def call(*_args: Any) -> Any:
        version = "unknown version"
        try:
            version = lib.sae_version_string().decode()
        except Exception:  # pragma: no cover - a library without even that
            pass
        raise MissingFunctionError(
            f"{name} is not in {path} (libsae {version}): install a newer libsae, "
            f"or point LIBSAE_PATH at one")
    call.__name__ = name
    return call


class _Library:
    """The loaded libsae.so.0, its functions typed as FUNCTIONS says."""

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self._cdll = cdll
        self.path = path
        self.missing: List[str] = []
        for name, (restype, argtypes) in FUNCTIONS.items():
            try:
                fn = getattr(cdll, name)
            except AttributeError:
                self.missing.append(name)
                setattr(self, name, _missing(name, path))
                continue
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not in FUNCTIONS.
        raise AttributeError(f"{name} is not a libsae function bound in libsae.capi.FUNCTIONS")


def _candidates() -> List[Tuple[str, str]]:
    """(path, where it came from), in the order they are tried."""
    env = os.environ.get("LIBSAE_PATH")
    if env:
        return [(env, "$LIBSAE_PATH")]
    out = []
    try:
        from . import _install  # type: ignore[attr-defined]  # written by cmake --install only
    except ImportError:
        pass
    else:
        here = os.path.dirname(os.path.abspath(__file__))
        out.append((os.path.normpath(os.path.join(here, _install.LIBRARY)),
                    "the library installed with this package"))
    out.append(("libsae.so.0", "the dynamic loader"))
    return out


def _load() -> _Library:
    tried = []
    for path, where in _candidates():
        if where.startswith("the library installed") and not os.path.exists(path):
            tried.append(f"{path} ({where}): missing")
            continue
        try:
            cdll = ctypes.CDLL(path)
        except OSError as e:
            if where == "$LIBSAE_PATH":
                raise OSError(f"libsae: LIBSAE_PATH={path} does not load: {e}") from None
            tried.append(f"{path} ({where}): {e}")
            continue
        return _Library(cdll, _resolved(cdll, path))
    raise OSError("libsae: cannot find libsae.so.0; install libsae (cmake --install) or set "
                  "LIBSAE_PATH to its path. Tried: " + "; ".join(tried))


def _resolved(cdll: ctypes.CDLL, path: str) -> str:
    """The file the loader actually opened (for `libsae.so.0` found by name)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            addr = ctypes.cast(cdll.sae_version_number, c_void_p).value or 0
            for line in maps:
                parts = line.split()
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                if lo <= addr < hi and len(parts) >= 6:
                    return parts[5]
    except (OSError, ValueError, AttributeError):
        pass
    return path


lib: Any = _load()
library_path: str = lib.path


def address(ptr: Any) -> Optional[int]:
    """The integer address held by a ctypes pointer or handle (None for NULL)."""
    return ctypes.cast(ptr, c_void_p).value
