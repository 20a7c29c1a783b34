"""One place for Numba options, and the fast-call helper the facade uses.

Every kernel in numslab is compiled through :func:`jit`; :func:`fastcall` returns the
compiled entry point of one signature so a Python call skips Numba's type dispatch.
"""
from __future__ import annotations

from typing import Any, Callable

import numba as nb

#: Options shared by every kernel: nopython, cached on disk, no GIL release (the facade
#: relies on the GIL to serialise calls into one allocator).
JIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": False, "boundscheck": False}


def jit(func: Callable | None = None, **overrides: Any) -> Callable:
    """Compile ``func`` with numslab's Numba options (a decorator, usable with arguments)."""
    options = {**JIT_OPTIONS, **overrides}
    if func is None:
        return lambda f: nb.njit(**options)(f)
    return nb.njit(**options)(func)


def fastcall(dispatcher: Any, *example_args: Any) -> Callable:
    """Return the native entry point of ``dispatcher`` for the types of ``example_args``.

    The entry point unboxes arguments with fixed types and so skips the dispatcher's
    per-call type resolution (about 100 ns of the ~250 ns a call costs). Only internal
    callers that always pass the exact types use it.
    """
    if not hasattr(dispatcher, "compile"):      # NUMBA_DISABLE_JIT: plain Python function
        return dispatcher
    sig = tuple(nb.typeof(a) for a in example_args)
    dispatcher.compile(sig)
    for s, cres in dispatcher.overloads.items():
        if tuple(s) == sig:
            return cres.entry_point
    raise RuntimeError(f"no compiled overload of {dispatcher} for {sig}")  # pragma: no cover
