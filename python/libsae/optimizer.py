"""libsae.Optimizer: Adam and the training step (sae_optimizer)."""

from __future__ import annotations

import ctypes
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from . import _arrays
from ._arrays import ArrayLike, as_rows, float_pointer
from ._handle import Handle, free_optimizer, handle_address
from .capi import Losses as _CLosses
from .capi import lib, size_ptr, uint64_ptr
from .enums import OPTION_VALUES, Arch, Option, Parallel, enum_value
from .errors import check
from .model import Losses, Model, PathLike, _comm_ref, _paired_rows, _path
from .options import OptionKey, check_value, info, option_key, option_value, parse_options


class Optimizer(Handle):
    """Adam (torch.optim.Adam semantics) for models shaped like `model`, with
    the step count, per-feature activity counters and options.

        opt = libsae.Optimizer(model, lr=4e-4, l1_coeff=5, total_steps=10_000,
                               lr_schedule="linear", lr_decay_fraction=0.2)
        losses = opt.step(model, x)      # Losses before the update

    Options are keyword arguments (the Option names in lower case), checked
    against the library's bounds before any is set; configure(**options) sets
    more later, options() reads them all.
    """

    _kind = "optimizer"
    _free = free_optimizer
    _c_save_size = staticmethod(lib.sae_optimizer_save_size)
    _c_save_buffer = staticmethod(lib.sae_optimizer_save_buffer)

    def __init__(self, model: Model, **options: Any) -> None:
        values = parse_options(options, "sae_optimizer_set")
        out = ctypes.c_void_p()
        check(lib.sae_optimizer_create(ctypes.byref(out), model.handle), "sae_optimizer_create")
        self._adopt(out.value)  # type: ignore[arg-type]
        self._remember(model)
        try:
            for opt, value in values.items():
                self._set(opt, value)
        except BaseException:
            self.close()
            raise

    def _remember(self, model: Model) -> None:
        # what a pickled optimizer needs to find a model of the right shape
        self._shape = (model.d_in, model.d_sae, model.arch == Arch.JUMPRELU)

    @classmethod
    def _wrap(cls, addr: int, model: Optional[Model], owned: bool = True) -> "Optimizer":
        o = cls.__new__(cls)
        o._adopt(addr, owned)
        if model is not None:
            o._remember(model)
        return o

    @classmethod
    def from_handle(cls, handle: Any, model: Optional[Model] = None, *,
                    owned: bool = True) -> "Optimizer":
        """Adopt a sae_optimizer * made through the C API (see
        Model.from_handle). Give the model it was made for to make the
        optimizer picklable."""
        return cls._wrap(handle_address(handle, "Optimizer.from_handle"), model, owned)

    @classmethod
    def load(cls, model: Model, path: PathLike) -> "Optimizer":
        """The optimizer saved at path (a file, or a directory holding
        optimizer.safetensors) for models shaped like `model`: moments, step
        count, activity counters and options (sae_optimizer_load)."""
        out = ctypes.c_void_p()
        check(lib.sae_optimizer_load(ctypes.byref(out), model.handle, _path(path)),
              "sae_optimizer_load")
        return cls._wrap(out.value, model)  # type: ignore[arg-type]

    @classmethod
    def from_bytes(cls, model: Model, data: Any) -> "Optimizer":
        """The optimizer encoded in data (bytes-like, read in place)."""
        buf = _arrays.byte_view(data, "data")
        out = ctypes.c_void_p()
        check(lib.sae_optimizer_load_buffer(ctypes.byref(out), model.handle,
                                            _arrays.void_pointer(buf), buf.size),
              "sae_optimizer_load_buffer")
        return cls._wrap(out.value, model)  # type: ignore[arg-type]

    # --- saving --------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Save atomically: a file, or optimizer.safetensors in an existing
        directory (beside the model's files)."""
        check(lib.sae_optimizer_save(self.handle, _path(path)), "sae_optimizer_save")

    def save_collective(self, comm: Any, path: PathLike) -> None:
        """Save with every rank of comm (a libsae.capi.Comm): a shard's
        optimizer writes its part (sae_optimizer_save_collective)."""
        check(lib.sae_optimizer_save_collective(self.handle, _comm_ref(comm), _path(path)),
              "sae_optimizer_save_collective")

    def save_checkpoint_collective(self, model: Any, directory: PathLike) -> None:
        """Save the run's checkpoint (model's and this optimizer's files) into
        an existing directory through the communicators attached to this
        optimizer; every rank calls it (a 2-D grid: data group 0 writes)
        (sae_checkpoint_save_collective)."""
        check(lib.sae_checkpoint_save_collective(model.handle, self.handle, _path(directory)),
              "sae_checkpoint_save_collective")

    # --- distributed training --------------------------------------------------
    def set_comm(self, mode: Union[Parallel, str, int], comm: Optional[Any]) -> None:
        """Attach a communicator (a libsae.capi.Comm, whose functions may be
        ctypes callbacks of a Python host) for mode "data" or "features", or
        detach with None: step() is then a collective step
        (sae_optimizer_set_comm). The Comm is kept alive while attached."""
        m = enum_value(Parallel, mode, "mode")
        check(lib.sae_optimizer_set_comm(self.handle, m,
                                         _comm_ref(comm) if comm is not None else None),
              "sae_optimizer_set_comm")
        comms = self.__dict__.setdefault("_comms", {})
        if comm is None:
            comms.pop(m, None)
        else:
            comms[m] = comm

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        shape = getattr(self, "_shape", None)
        if shape is None:
            raise TypeError("an Optimizer adopted without its model cannot be pickled")
        return (_unpickle, shape + (self.to_bytes(),))

    # --- options ---------------------------------------------------------------
    def _set(self, option: Option, value: float) -> None:
        check(lib.sae_optimizer_set(self.handle, option, value), "sae_optimizer_set")

    def set(self, option: OptionKey, value: Any) -> None:
        """Set one option (an Option, its number or its name)."""
        opt = option_key(option)
        v = option_value(opt, value)
        check_value(opt, v, "sae_optimizer_set")
        self._set(opt, v)

    def configure(self, **options: Any) -> "Optimizer":
        """Set options by keyword: all or none (each is checked against the
        library's bounds before any is set, and a refusal by the library
        restores those already set)."""
        values = parse_options(options, "sae_optimizer_set")
        before = {opt: self._get(opt) for opt in values}
        done = []
        try:
            for opt, value in values.items():
                self._set(opt, value)
                done.append(opt)
        except BaseException:
            for opt in done:
                self._set(opt, before[opt])
            raise
        return self

    def _get(self, option: Option) -> float:
        value = ctypes.c_double()
        check(lib.sae_optimizer_get(self.handle, option, ctypes.byref(value)),
              "sae_optimizer_get")
        return value.value

    def get(self, option: OptionKey) -> Union[float, int]:
        """An option's value: a float, an int for whole-number options, an
        enum member for kernel and lr_schedule."""
        opt = option_key(option)
        value = self._get(opt)
        if opt in OPTION_VALUES:
            try:
                return OPTION_VALUES[opt](int(value))
            except ValueError:
                return int(value)
        return int(value) if info(opt).whole else value

    def options(self) -> Dict[str, Union[float, int]]:
        """Every option, by keyword name."""
        return {o.name.lower(): self.get(o) for o in Option}

    # --- training ---------------------------------------------------------------
    def step(self, model: Model, x: ArrayLike) -> Losses:
        """One training step on batch x (n, d_in); the batch's losses before
        the update (sae_step). On error nothing changed."""
        rows, _ = as_rows(x, model.d_in, "x")
        out = _CLosses()
        check(lib.sae_step(model.handle, self.handle, float_pointer(rows), rows.shape[0],
                           ctypes.byref(out)), "sae_step")
        return Losses._from_c(out)

    def step_target(self, model: Model, x: ArrayLike, y: ArrayLike) -> Losses:
        """One training step on inputs x (n, d_in) against the target y (n,
        d_out), as transcoders train (sae_step_target). On error nothing changed."""
        xr, yr = _paired_rows(model, x, y)
        out = _CLosses()
        check(lib.sae_step_target(model.handle, self.handle, float_pointer(xr), float_pointer(yr),
                                  xr.shape[0], ctypes.byref(out)), "sae_step_target")
        return Losses._from_c(out)

    @property
    def steps(self) -> int:
        """Successful steps taken (sae_optimizer_steps)."""
        return int(lib.sae_optimizer_steps(self.handle))

    def lr_at(self, step: int) -> float:
        """The learning rate sae_step applies at 1-based step `step`."""
        out = ctypes.c_double()
        check(lib.sae_optimizer_lr_at(self.handle, step, ctypes.byref(out)),
              "sae_optimizer_lr_at")
        return out.value

    def l1_coeff_at(self, step: int) -> float:
        """The L1 coefficient sae_step applies at 1-based step `step`."""
        out = ctypes.c_double()
        check(lib.sae_optimizer_l1_coeff_at(self.handle, step, ctypes.byref(out)),
              "sae_optimizer_l1_coeff_at")
        return out.value

    # --- feature activity ----------------------------------------------------------
    def tokens_since_fired(self, d_sae: Optional[int] = None) -> np.ndarray:
        """Per feature, the training tokens since it last fired (uint64)."""
        n = d_sae if d_sae is not None else self._d_sae()
        out = np.empty(n, dtype=np.uint64)
        check(lib.sae_optimizer_tokens_since_fired(self.handle, out.ctypes.data_as(uint64_ptr),
                                                   n), "sae_optimizer_tokens_since_fired")
        return out

    def _d_sae(self) -> int:
        shape = getattr(self, "_shape", None)
        if shape is None:
            raise TypeError("this optimizer was adopted without its model: pass d_sae")
        return shape[1]

    def dead_count(self, window_tokens: int) -> int:
        """Features that fired on none of the last window_tokens training tokens."""
        out = ctypes.c_size_t()
        check(lib.sae_optimizer_dead_count(self.handle, window_tokens, ctypes.byref(out)),
              "sae_optimizer_dead_count")
        return out.value

    def dead_features(self, window_tokens: int) -> np.ndarray:
        """The indices (ascending) of those features."""
        total = ctypes.c_size_t()
        check(lib.sae_optimizer_dead_features(self.handle, window_tokens, None, 0,
                                              ctypes.byref(total)), "sae_optimizer_dead_features")
        idx = np.empty(total.value, dtype=np.uintp)
        if total.value:
            check(lib.sae_optimizer_dead_features(self.handle, window_tokens,
                                                  idx.ctypes.data_as(size_ptr), idx.size,
                                                  ctypes.byref(total)),
                  "sae_optimizer_dead_features")
        return idx[:total.value]

    def resample_dead(self, model: Model, x: ArrayLike, window_tokens: int, seed: int = 0) -> int:
        """Resample the features dead for window_tokens tokens from the inputs
        x (n, d_in), as in Towards Monosemanticity; the number resampled."""
        rows, _ = as_rows(x, model.d_in, "x")
        n = ctypes.c_size_t()
        check(lib.sae_resample_dead(model.handle, self.handle, float_pointer(rows),
                                    rows.shape[0], window_tokens, seed, ctypes.byref(n)),
              "sae_resample_dead")
        return n.value

    def __repr__(self) -> str:
        if self.closed:
            return "<libsae.Optimizer (closed)>"
        return f"<libsae.Optimizer steps={self.steps}>"


def _unpickle(d_in: int, d_sae: int, jumprelu: bool, data: bytes) -> Optimizer:
    # the optimizer file fits any model of its shape and layout
    with Model(d_in, d_sae, arch=Arch.JUMPRELU if jumprelu else Arch.RELU) as shape_of:
        return Optimizer.from_bytes(shape_of, data)


__all__ = ["Optimizer"]
