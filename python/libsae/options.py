"""The optimizer's options: names, defaults and allowed bounds, from the
library's own option table (sae_option_name, sae_option_default,
sae_option_bounds), so that nothing here hard-codes a range.

Options are passed as keyword arguments named like the Option members in
lower case (lr=1e-4, l1_coeff=5, lr_schedule="cosine", total_steps=10_000);
values of the enum-valued options (kernel, lr_schedule) may be given by name.
"""

from __future__ import annotations

import ctypes
import math
import numbers
import sys
from typing import Any, Dict, NamedTuple, Union

from .capi import lib
from .enums import OPTION_VALUES, Gemm, Option, OptionFlag, Status, enum_value
from .errors import check, error

OptionKey = Union[Option, str, int]


class OptionInfo(NamedTuple):
    """One row of the library's option table."""
    option: Option
    name: str
    default: float
    lower: float
    upper: float
    lower_open: bool  # lower itself is not allowed
    upper_open: bool  # upper itself is not allowed
    whole: bool       # whole numbers only (counts, enum values)

    def allows(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if value < self.lower or (self.lower_open and value == self.lower):
            return False
        if value > self.upper or (self.upper_open and value == self.upper):
            return False
        return not self.whole or float(value).is_integer()

    def describe(self) -> str:
        big = sys.float_info.max  # the library's "no limit": shown as an open infinity
        lo = "(" if self.lower_open or self.lower == -big else "["
        hi = ")" if self.upper_open or self.upper == big else "]"
        kind = "a whole number in " if self.whole else ""
        return f"{kind}{lo}{_num(self.lower)}, {_num(self.upper)}{hi}"


def _num(v: float) -> str:
    if math.isinf(v) or abs(v) == sys.float_info.max:  # the library's "no limit"
        return "inf" if v > 0 else "-inf"
    return f"{v:g}" if not float(v).is_integer() or abs(v) < 1e15 else f"{v:.0f}"


def option_key(key: OptionKey) -> Option:
    """An Option from a member, its number or its keyword name."""
    if isinstance(key, str):
        name = key.strip().upper()
        if name.startswith("SAE_OPT_"):
            name = name[len("SAE_OPT_"):]
        if name in Option.__members__:
            return Option.__members__[name]
        raise TypeError(f"unknown option {key!r} (options: {', '.join(names())})")
    return enum_value(Option, key, "option")  # type: ignore[return-value]


_TABLE: Dict[Option, OptionInfo] = {}


def info(option: OptionKey) -> OptionInfo:
    """The library's name, default and bounds of an option."""
    opt = option_key(option)
    row = _TABLE.get(opt)
    if row is None:
        row = _TABLE[opt] = _query(opt)
    return row


def _query(opt: Option) -> OptionInfo:
    if "sae_option_bounds" in lib.missing:
        # a library without the option table: its own checks in
        # sae_optimizer_set are the only ones
        return OptionInfo(opt, opt.name.lower(), _default_from_optimizer(opt),
                          -math.inf, math.inf, False, False, False)
    raw = lib.sae_option_name(opt)
    default, lower, upper = ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
    flags = ctypes.c_uint()
    check(lib.sae_option_default(opt, ctypes.byref(default)), "sae_option_default")
    check(lib.sae_option_bounds(opt, ctypes.byref(lower), ctypes.byref(upper),
                                ctypes.byref(flags)), "sae_option_bounds")
    return OptionInfo(opt, raw.decode() if raw else opt.name.lower(), default.value,
                      lower.value, upper.value, bool(flags.value & OptionFlag.LOWER_OPEN),
                      bool(flags.value & OptionFlag.UPPER_OPEN),
                      bool(flags.value & OptionFlag.WHOLE))


def _default_from_optimizer(opt: Option) -> float:
    m, o = ctypes.c_void_p(), ctypes.c_void_p()
    check(lib.sae_model_create(ctypes.byref(m), 1, 1, 0), "sae_model_create")
    try:
        check(lib.sae_optimizer_create(ctypes.byref(o), m), "sae_optimizer_create")
        value = ctypes.c_double()
        check(lib.sae_optimizer_get(o, opt, ctypes.byref(value)), "sae_optimizer_get")
        return value.value
    finally:
        lib.sae_optimizer_free(o)
        lib.sae_model_free(m)


def names() -> list:
    return [o.name.lower() for o in Option]


def option_value(option: Option, value: Any) -> float:
    """value as the double the library takes: numbers as they are, enum
    values also by name. TypeError for anything else."""
    if option in OPTION_VALUES and isinstance(value, str):
        return float(enum_value(OPTION_VALUES[option], value, option.name.lower()))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"option {option.name.lower()}: expected a number, "
                        f"got {type(value).__name__}")
    return float(value)


def check_value(option: Option, value: float, function: str) -> None:
    """Raise NonFiniteError / InvalidArgError (with the bounds in the
    message) unless the library's bounds allow value."""
    row = info(option)
    if math.isnan(value) or math.isinf(value):
        raise error(Status.E_NONFINITE, function, f"option {row.name} = {value} is not finite")
    if not row.allows(value):
        raise error(Status.E_INVALID_ARG, function,
                    f"option {row.name} = {_num(value)} is outside {row.describe()}")


def parse_options(options: Dict[str, Any], function: str) -> Dict[Option, float]:
    """Keyword options as {Option: value}, every value checked against the
    library's bounds before any is set."""
    out: Dict[Option, float] = {}
    for key, value in options.items():
        opt = option_key(key)
        v = option_value(opt, value)
        check_value(opt, v, function)
        out[opt] = v
    return out


def gemm_backend(requested: Any = "auto") -> Gemm:
    """The backend a value of the gemm option runs on in this build of the
    library: Gemm.CBLAS or Gemm.ONEDNN (sae_gemm_backend). requested is a
    Gemm, its name ("auto", "cblas", "onednn") or its number."""
    value = enum_value(Gemm, requested, "gemm_backend")
    backend = lib.sae_gemm_backend(int(value))
    if backend < 0:
        check(backend, "sae_gemm_backend")
    return Gemm(backend)
