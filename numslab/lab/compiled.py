"""How the laboratory's kernels are compiled: :func:`lab_jit`, Numba's ``njit`` with a disk cache.

The on-disk cache is keyed on every source compiled into them, so that an edit or an upgrade never
runs stale code.

Numba's own cache checks only the file of the function it loads, but the lab's kernels inline
helpers from other modules (``fixed``, ``parse``) and the engine's fast paths (``numslab.jit``):
their keys carry the engine's ABI and a hash of the lab's sources. Helpers marked ``inline``
are compiled once and inlined by LLVM (``forceinline``), not by Numba's IR inliner, which
types a helper again at every call site: that halved the compile of the trace scan, with the
same speed. They are compiled link-only, as the engine's helpers are (``engine/linkonly.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..engine.native import ABI, CompiledDispatcher, EngineCache, HelperDispatcher, source_hash


def _lab_hash(folder: Path = Path(__file__).parent) -> str:
    """Hash of the lab's sources (the ``.py`` files of ``folder``) and the engine's ABI."""
    return source_hash(folder, ABI)


#: Part of every lab kernel's cache key.
LAB_HASH = _lab_hash()


class LabCache(EngineCache):
    """``native.EngineCache`` (the ABI, the unit table's layout) keyed on :data:`LAB_HASH` too."""

    def __init__(self, py_func: Callable) -> None:
        super().__init__(py_func, LAB_HASH)


def lab_jit(*, inline: bool = False, nogil: bool = False, **options: Any) -> Callable:
    """``numba.njit`` for the lab's kernels: cached (:class:`LabCache`), ``nogil`` as asked.

    Compiled under ``NUMBA_DISABLE_JIT`` too (``CompiledDispatcher``: the replay failed there on
    the engine's intrinsics, "<intrinsic data_address> is not usable in pure-python"). ``inline``
    marks a helper: LLVM's always-inline (``forceinline``) into the kernels that call it, and
    compiled link-only like the engine's helpers (``engine/linkonly.py``: no wrapper, machine code
    or cache entry of its own; Python cannot call it)."""
    def wrap(f: Callable) -> Any:
        if inline:
            return HelperDispatcher(f, targetoptions={"nopython": True, "nogil": nogil,
                                                      "forceinline": True, **options})
        d = CompiledDispatcher(f, targetoptions={"nopython": True, "nogil": nogil, **options})
        d._cache = LabCache(f)
        return d
    return wrap
