"""Threads and the engine: each thread's simulated CPU, and the sheaf parked fast paths use.

The facade's side of ``native.ENGINE_BUSY``: the ``NO_SHEAF`` sheaf that parked fast paths
point at.

See ARCHITECTURE.md, "Threads: who may be inside the engine".
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from ..engine.layout import NO_SHEAF, SH_SIZE

if TYPE_CHECKING:
    from .allocator import SlabAllocator


def register(sa: "SlabAllocator") -> None:
    """Write ``sa``'s ``NO_SHEAF`` sheaf, which parked main sheaves point at.

    Its size word -1 (empty to an allocation, full to a free), in the shadow half's frame 0, which
    no sheaf and no user reaches. While a thread compiles a unit mid-operation, the engine points
    every CPU's main sheaf here (``native.park_rows``)."""
    sa._mem[(no_sheaf(sa) >> 3) + SH_SIZE] = -1


def no_sheaf(sa: "SlabAllocator") -> int:
    """The handle of ``sa``'s ``NO_SHEAF`` sheaf."""
    return sa.memory.size + NO_SHEAF


class ThreadCpu(threading.local):
    """Per-thread simulated CPU, bound round-robin on each thread's first use.

    ``threading.local`` runs ``__init__`` again in each thread on its first use, which binds the
    thread round-robin (the hot paths then read one attribute, with no call and no try)."""

    def __init__(self, next_cpu: Callable[[], int]) -> None:
        self.cpu = next_cpu()


class RoundRobin:
    """The next CPU for a thread that has none yet, round-robin over ``n``.

    Apart from the allocator: a thread-local holding the allocator would be a reference cycle."""

    def __init__(self, n: int) -> None:
        self._n, self._next, self._lock = n, 0, threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            cpu = self._next % self._n
            self._next += 1
        return cpu
