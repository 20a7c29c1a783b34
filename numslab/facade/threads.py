"""Threads and the engine: each thread's simulated CPU, and the facade's side of
``native.ENGINE_BUSY`` (while a thread compiles a unit in the middle of an operation, other
threads' inlined fast paths are parked).

See ARCHITECTURE.md, "Threads: who may be inside the engine".
"""
from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..engine.layout import C_MAIN, C_SLAB, NIL, NO_SHEAF, SH_SIZE
from ..engine.native import PARK_HOOKS

if TYPE_CHECKING:
    from .allocator import SlabAllocator

#: Every live allocator, by its state's address.
_BY_STATE: "weakref.WeakValueDictionary[int, SlabAllocator]" = weakref.WeakValueDictionary()


def register(sa: "SlabAllocator") -> None:
    """Make ``sa`` known to :func:`park_fast_paths` and write its ``NO_SHEAF`` sheaf (its
    size word -1, in the shadow half's frame 0, which no sheaf and no user reaches)."""
    sa._mem[(no_sheaf(sa) >> 3) + SH_SIZE] = -1
    _BY_STATE[sa._st] = sa


def no_sheaf(sa: "SlabAllocator") -> int:
    """The handle of ``sa``'s ``NO_SHEAF`` sheaf."""
    return sa.memory.size + NO_SHEAF


def park_fast_paths(st: int) -> Callable[[], None] | None:
    """Before a thread compiles a unit in the middle of an operation on state ``st`` (the
    compiler lets other threads run): point every CPU's main sheaf at ``NO_SHEAF`` and clear
    every CPU slab, so that ``numslab.jit``'s inlined allocations and frees in other
    threads take the units, which wait. Returns what puts them back (a row that Python
    changed meanwhile, a new cache's, is left as it is now); None for an unknown state."""
    sa = _BY_STATE.get(st)
    if sa is None:
        return None
    cpt = sa.state.cpu
    caches = dict(sa._caches)               # the rows parked: the caches that exist now
    rows = np.zeros(cpt.shape[0], bool)
    rows[list(caches)] = True
    main, slab = cpt[..., C_MAIN].copy(), cpt[..., C_SLAB].copy()
    parked = no_sheaf(sa)
    cpt[rows, :, C_MAIN] = np.where(main[rows] != 0, parked, 0)
    cpt[rows, :, C_SLAB] = NIL

    def restore() -> None:
        # only the rows of caches that still are the ones parked: a cache created meanwhile
        # (in a slot unused then, or freed and taken again) keeps the words it was given
        same = np.zeros_like(rows)
        same[[cid for cid, c in caches.items() if sa._caches.get(cid) is c]] = True
        now = cpt[..., C_MAIN]
        back = (now == parked) & same[:, None]
        now[back] = main[back]
        now = cpt[..., C_SLAB]
        back = (now == NIL) & same[:, None]
        now[back] = slab[back]
    return restore


PARK_HOOKS.append(park_fast_paths)


class ThreadCpu(threading.local):
    """Per-thread simulated CPU: ``threading.local`` runs ``__init__`` again in each thread
    on its first use, which binds the thread round-robin (the hot paths then read one
    attribute, with no call and no try)."""

    def __init__(self, next_cpu: Callable[[], int]) -> None:
        self.cpu = next_cpu()


class RoundRobin:
    """The next CPU for a thread that has none yet, round-robin over ``n`` (apart from the
    allocator: a thread-local holding the allocator would be a reference cycle)."""

    def __init__(self, n: int) -> None:
        self._n, self._next, self._lock = n, 0, threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            cpu = self._next % self._n
            self._next += 1
        return cpu
