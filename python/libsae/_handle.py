"""The life cycle shared by Model and Optimizer: an owned C handle, freed by
close(), the end of a with block or garbage collection, and adoptable from
or releasable to code that calls the C API directly."""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Optional, TypeVar

from ._arrays import void_pointer, writable_bytes
from .capi import lib
from .errors import check

H = TypeVar("H", bound="Handle")


def handle_address(handle: Any, what: str) -> int:
    """The address held by an int, a ctypes c_void_p or any ctypes pointer."""
    if isinstance(handle, int) and not isinstance(handle, bool):
        addr: Optional[int] = handle
    elif isinstance(handle, (ctypes.c_void_p, ctypes._Pointer)):  # type: ignore[attr-defined]
        addr = ctypes.cast(handle, ctypes.c_void_p).value
    else:
        raise TypeError(f"{what}: expected an address (int) or a ctypes pointer, "
                        f"got {type(handle).__name__}")
    if not addr:
        raise ValueError(f"{what}: NULL handle")
    return addr


class Handle:
    """An owned sae_model * or sae_optimizer *, with the encoding functions
    the two share the shape of (sae_*_save_size, sae_*_save_buffer)."""

    _kind = "handle"
    _free: Callable[[Any], None]
    _c_save_size: Any      # staticmethod(lib.sae_<kind>_save_size)
    _c_save_buffer: Any    # staticmethod(lib.sae_<kind>_save_buffer)

    def __init__(self) -> None:  # subclasses build through _adopt
        raise TypeError(f"use the {type(self).__name__} constructors")

    def _adopt(self, addr: int, owned: bool = True) -> None:
        self._ptr: Optional[ctypes.c_void_p] = ctypes.c_void_p(addr)
        self._owned = owned

    @property
    def handle(self) -> ctypes.c_void_p:
        """The C handle (a c_void_p) for calls through libsae.capi. Still
        owned by this object: do not free it."""
        if self._ptr is None:
            raise ValueError(f"this {self._kind} is closed")
        return self._ptr

    @property
    def closed(self) -> bool:
        return getattr(self, "_ptr", None) is None

    def release(self) -> int:
        """Give up ownership: return the handle's address (for code that frees
        it with the C API) and close this object without freeing."""
        addr = self.handle.value
        self._ptr = None
        assert addr is not None
        return addr

    def close(self) -> None:
        """Free the C handle (idempotent). Using the object afterwards raises
        ValueError."""
        ptr = getattr(self, "_ptr", None)
        if ptr is not None:
            self._ptr = None
            if self._owned:
                type(self)._free(ptr)

    def save_size(self) -> int:
        """The byte size of the safetensors encoding."""
        size = ctypes.c_size_t()
        check(self._c_save_size(self.handle, ctypes.byref(size)), self._c_save_size.__name__)
        return size.value

    def save_buffer(self, buf: Any) -> int:
        """Encode into a writable bytes-like buf (at least save_size()
        bytes); returns the bytes written."""
        b = writable_bytes(buf, "buf")
        written = ctypes.c_size_t()
        check(self._c_save_buffer(self.handle, void_pointer(b), b.size, ctypes.byref(written)),
              self._c_save_buffer.__name__)
        return written.value

    def to_bytes(self) -> bytes:
        """The safetensors encoding, as bytes (what save() writes to a file)."""
        buf = bytearray(self.save_size())
        n = self.save_buffer(buf)
        return bytes(memoryview(buf)[:n])

    def __enter__(self: H) -> H:
        self.handle  # noqa: B018 - raises if closed
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def free_model(ptr: Any) -> None:
    lib.sae_model_free(ptr)


def free_optimizer(ptr: Any) -> None:
    lib.sae_optimizer_free(ptr)
