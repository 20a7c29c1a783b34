"""How the tools' compiled loops are compiled: :func:`tools_jit`, ``numba.njit`` with a disk cache.

The on-disk cache is keyed on every tool's source and the engine's ABI, so that an edit or an
upgrade never runs stale code.

Numba's own cache checks only the file of the function it loads, but the benchmarks' loops call
and inline the floors' functions (``floor``, ``checkfloor``) from other modules: a cached
``bench.floor_round_at`` kept running the floor as it was before ``floor.py`` changed (December
7, 2026: its round left the new batch record unwritten, and ``numslab bench`` would have timed the
old floor). Functions that take ``numslab.jit`` handles need no more: a handle's Numba type is
named after the ABI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numba as nb

from ..engine.native import ABI, EngineCache, source_hash


def _tools_hash(folder: Path = Path(__file__).parent) -> str:
    """Hash of the tools' sources (the ``.py`` files of ``folder``) and the engine's ABI."""
    return source_hash(folder, ABI)


#: Part of every tool function's cache key.
TOOLS_HASH = _tools_hash()


class ToolsCache(EngineCache):
    """``native.EngineCache``, its key holding :data:`TOOLS_HASH` too.

    As the lab's ``LabCache``: the benchmarks' loops call the engine's units through the table."""

    def __init__(self, py_func: Callable) -> None:
        super().__init__(py_func, TOOLS_HASH)


def tools_jit(**options: Any) -> Callable:
    """``numba.njit(**options)`` cached on disk by :class:`ToolsCache` (``cache`` is implied)."""
    def wrap(f: Callable) -> Any:
        d = nb.njit(**options)(f)
        d._cache = ToolsCache(f)
        return d
    return wrap
