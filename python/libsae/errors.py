"""One exception class per libsae status, carrying the status and the
library's own messages.

Every failing call raises a subclass of SAEError:

    status            exception           also a
    SAE_E_INVALID_ARG InvalidArgError     ValueError
    SAE_E_NOMEM       NoMemError          MemoryError
    SAE_E_NONFINITE   NonFiniteError      ValueError
    SAE_E_IO          SAEIOError          OSError
    SAE_E_FORMAT      FormatError         ValueError
    SAE_E_STATE       StateError          RuntimeError
    SAE_E_COMM        CommError           RuntimeError

e.status is the Status, e.function the C function that failed, e.description
the library's sae_status_string and e.detail its sae_error_detail (which
argument, key, tensor or file; "" when the library gives none).
"""

from __future__ import annotations

from typing import Dict, Optional, Type

from .capi import lib
from .enums import Status


class SAEError(Exception):
    """A libsae call failed. str(e) is "<function>: <description>[: <detail>]"."""

    def __init__(self, status: int, function: str, description: Optional[str] = None,
                 detail: str = "") -> None:
        try:
            self.status: int = Status(status)
        except ValueError:  # a status newer than this package
            self.status = status
        self.function = function
        self.description = description if description is not None else status_string(status)
        self.detail = detail
        message = f"{function}: {self.description}"
        if detail:
            message += f": {detail}"
        super().__init__(message)

    def __reduce__(self):  # picklable (multiprocessing, pytest-xdist)
        return (type(self), (self.status, self.function, self.description, self.detail))


class InvalidArgError(SAEError, ValueError):
    """SAE_E_INVALID_ARG: NULL, zero or overflowing size, mismatched shape,
    option out of range."""


class NoMemError(SAEError, MemoryError):
    """SAE_E_NOMEM: an allocation failed (nothing changed or leaked)."""


class NonFiniteError(SAEError, ValueError):
    """SAE_E_NONFINITE: NaN or Inf in data or a hyperparameter, or a step
    whose gradients or new parameters would be."""


class SAEIOError(SAEError, OSError):
    """SAE_E_IO: a file could not be read or written."""

    def __init__(self, status: int, function: str, description: Optional[str] = None,
                 detail: str = "") -> None:
        SAEError.__init__(self, status, function, description, detail)


class FormatError(SAEError, ValueError):
    """SAE_E_FORMAT: a file or buffer is malformed or unsupported."""


class StateError(SAEError, RuntimeError):
    """SAE_E_STATE: the call is not valid in the handle's state."""


class CommError(SAEError, RuntimeError):
    """SAE_E_COMM: a communicator function (struct sae_comm) reported a
    failure on some rank."""


ERRORS: Dict[Status, Type[SAEError]] = {
    Status.E_INVALID_ARG: InvalidArgError,
    Status.E_NOMEM: NoMemError,
    Status.E_NONFINITE: NonFiniteError,
    Status.E_IO: SAEIOError,
    Status.E_FORMAT: FormatError,
    Status.E_STATE: StateError,
    Status.E_COMM: CommError,
}


def status_string(status: int) -> str:
    """The library's description of a status code (sae_status_string)."""
    return lib.sae_status_string(int(status)).decode()


def error_detail() -> str:
    """Why the last failing libsae call on this thread failed
    (sae_error_detail); "" when the library gives no detail."""
    if "sae_error_detail" in lib.missing:  # a libsae before 0.2
        return ""
    raw = lib.sae_error_detail()
    return raw.decode(errors="replace") if raw else ""


def error(status: int, function: str, detail: Optional[str] = None) -> SAEError:
    """The exception for `status` returned by `function` (detail: the
    library's unless given, e.g. by a check made in Python)."""
    cls = ERRORS.get(status, SAEError)  # type: ignore[call-overload]
    return cls(status, function, None, error_detail() if detail is None else detail)


def check(status: int, function: str) -> None:
    """Raise the status's exception unless status is SAE_OK."""
    if status != 0:
        raise error(status, function)
