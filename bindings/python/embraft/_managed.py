"""Ownership of the library's handles (after wasmtime-py's `Managed`).

Each C handle the binding holds is wrapped in a `Managed` subclass that
frees it exactly once: `close()` may be called any number of times, a
`weakref.finalize` frees a handle its owner forgot (a safety net, not the
way to release one), and `ptr()` after the handle was closed or consumed
raises `ClosedError` instead of handing a dangling address to the library.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, ClassVar, Generic, Optional, TypeVar

from . import _ffi
from .errors import ClosedError

P = TypeVar("P", bound=_ffi._Handle)


class Managed(Generic[P]):
    """Owns one C handle of type `P`. Subclasses name the function that
    frees it (`_free`) and what it is, for error messages (`_what`).

    Not locked: the owner serializes `close()` against its own calls when
    other threads may use the handle (the node's driver does)."""

    _free: ClassVar[Callable[[Any], None]]
    _what: ClassVar[str] = "handle"

    def __init__(self, ptr: P) -> None:
        if not ptr:
            raise ValueError(f"a {self._what} handle cannot be NULL")
        self._ptr: Optional[P] = ptr
        # The finalizer holds the pointer, not self, so that self can become
        # garbage; a class attribute is looked up now, while it exists.
        self._finalizer = weakref.finalize(self, type(self)._free, ptr)

    def ptr(self) -> P:
        """The handle, for a call into the library."""
        ptr = self._ptr
        if ptr is None:
            raise ClosedError(f"the {self._what} is closed")
        return ptr

    def take(self) -> P:
        """The handle, given up to a library call that consumes it (which
        then frees it): this object no longer frees it and is closed."""
        ptr = self.ptr()
        self._ptr = None
        self._finalizer.detach()
        return ptr

    def close(self) -> None:
        """Frees the handle; harmless once closed."""
        self._ptr = None
        self._finalizer()

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def __enter__(self: "M") -> "M":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else hex(self._ptr.value or 0)
        return f"<{type(self).__name__} {state}>"


M = TypeVar("M", bound=Managed[Any])
