"""One place for Numba options, and the fast-call helper the facade uses.

Every kernel in numslab is compiled through :func:`jit`; :func:`fastcall` returns the
compiled entry point of one signature so a Python call skips Numba's type dispatch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numba as nb

#: Options shared by every kernel: nopython, cached on disk, no GIL release (the facade
#: relies on the GIL to serialise calls into one allocator), and no Numba runtime (NRT):
#: kernels only index arrays they are given, so they need no reference counts, and
#: without NRT a call between kernels costs no atomic increments and decrements (with it,
#: about 6 atomics, 30-60 ns, per call passing three arrays; measured in ARCHITECTURE.md).
JIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": False, "boundscheck": False,
                               "_nrt": False}


def jit(func: Callable | None = None, **overrides: Any) -> Callable:
    """Compile ``func`` with numslab's Numba options (a decorator, usable with arguments).

    ``nrt=True`` turns the Numba runtime back on, for the few functions that create arrays
    or lists (the checks in ``debug``, shrink's buckets, the packet pipeline).
    """
    if "nrt" in overrides:
        overrides["_nrt"] = overrides.pop("nrt")
    options = {**JIT_OPTIONS, **overrides}
    if func is None:
        return lambda f: nb.njit(**options)(f)
    return nb.njit(**options)(func)


def jit_rt(func: Callable | None = None, **overrides: Any) -> Callable:
    """:func:`jit` with the Numba runtime on (for code that creates arrays)."""
    return jit(func, nrt=True, **overrides)


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


def drop_stale_cache(root: Path = Path(__file__).parent) -> bool:
    """Delete numslab's cached kernels if any numslab source file changed since they were
    written; True if it did.

    Numba keys a cached function on its own file alone, while a caller's cached machine
    code embeds the code of the kernels it calls: after an edit to ``bulk.py``, a cached
    entry point in ``entry.py`` would keep running the old ``bulk.py``. A stamp of every
    source file's size and modification time, kept beside the cache, catches that.
    (A ``NUMBA_CACHE_DIR`` elsewhere is not cleaned.)
    """
    files = sorted(root.rglob("*.py"))
    stamp = hashlib.sha1(repr([(str(f.relative_to(root)), f.stat().st_mtime_ns,
                                f.stat().st_size) for f in files]).encode()).hexdigest()
    mark = root / "__pycache__" / "numslab-kernels.stamp"
    try:
        if mark.read_text() == stamp:
            return False
    except OSError:
        pass
    for pattern in ("*.nbi", "*.nbc"):
        for f in root.rglob(pattern):
            f.unlink(missing_ok=True)
    try:
        mark.parent.mkdir(exist_ok=True)
        mark.write_text(stamp)
    except OSError:                 # a read-only install: Numba will not cache there either
        pass
    return True
