"""The floor of any allocator that refuses a double free: the jitted free stack of the
benchmarks plus one live byte per object, the least work that still makes the brief's check.

Issue 12's targets compare numslab's bulk round with a free stack, whose round is two vector
copies of indices. :mod:`numslab.tools.floor` measures what SLUB 7.0's rules cost on top of
the brief's checks; this module measures what the checks alone cost, with no slab, sheaf,
page or free pointer at all: an allocator with any structure is slower. A bulk allocation
pops ``n`` indices as the stack does and marks each live; a bulk free checks each index (in
the pool, live, and so not twice in the batch), clears its mark, and pushes the batch back;
a refused batch leaves every array as it was (the marks cleared before the bad index are set
again), as numslab leaves its state. Everything else is in the floor's favour: indices, not
addresses (no grid or page to find), a byte per object instead of a bit, one pool.

State, all owned by :class:`CheckedStack`:

* ``stack`` int64[capacity]: the free indices, ``stack[:top]``; the pool's indices are
  ``0..capacity-1``.
* ``top`` int64[1]: how many are free.
* ``live`` uint8[capacity]: 1 for an index handed out and not freed, else 0.

Invariant: the free indices and the live ones partition ``0..capacity-1``.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(inline="always", cache=True)
def _pop_mark(stack, t, live, n, out):
    """Pop ``n`` indices below ``t`` (a uint64 top, at least ``n``) into ``out``, each marked
    live; the new top."""
    t -= np.uint64(n)
    for i in range(n):
        x = stack[t + np.uint64(i)]
        out[np.uint64(i)] = x
        live[np.uint64(x)] = 1
    return t


@nb.njit(inline="always", cache=True)
def _check_clear(live, n, objs):
    """Clear the live marks of ``objs[:n]``: -1, or the index of the first object that is
    out of the pool or not live (a double free, or a second copy in the batch), with every
    mark as it was."""
    cap = np.uint64(live.size)
    for i in range(n):
        x = np.uint64(objs[np.uint64(i)])
        if x >= cap or live[x] == 0:
            for j in range(i):
                live[np.uint64(objs[np.uint64(j)])] = 1
            return i
        live[x] = 0
    return -1


@nb.njit(cache=True)
def checked_alloc_bulk(stack, top, live, n, out):
    """Pop ``n`` indices into ``out``, marked live: ``n``, or 0 (nothing changed) when fewer
    are free."""
    t = np.uint64(top[0])
    if t < np.uint64(n):
        return 0
    top[0] = np.int64(_pop_mark(stack, t, live, n, out))
    return n


@nb.njit(cache=True)
def checked_free_bulk(stack, top, live, n, objs):
    """Free ``objs[:n]``: -1, or the index of the first refused object (out of the pool, not
    live, or twice in the batch), with every array as it was."""
    bad = _check_clear(live, n, objs)
    if bad >= 0:
        return bad
    t = np.uint64(top[0])
    for i in range(n):
        stack[t + np.uint64(i)] = objs[np.uint64(i)]
    top[0] = np.int64(t + np.uint64(n))
    return -1


@nb.njit(cache=True)
def rounds_checked(stack, top, live, bulk, rounds, out):
    """Inside @njit, written in the loop as the jitted stack's round is (``bench``'s
    ``jit_stack_loop_bulk``): ``rounds`` times, allocate ``bulk`` then free them. The number
    of rounds whose free was refused (0 unless the state is broken)."""
    t = np.uint64(top[0])
    b = np.uint64(bulk)
    refused = 0
    for _ in range(rounds):
        if t >= b:
            t = _pop_mark(stack, t, live, bulk, out)
        if _check_clear(live, bulk, out) >= 0:
            refused += 1
            continue
        for i in range(bulk):
            stack[t + np.uint64(i)] = out[np.uint64(i)]
        t += b
    top[0] = np.int64(t)
    return refused


class CheckedStack:
    """A free stack of ``capacity`` indices that refuses a double free (the module's state)."""

    def __init__(self, capacity: int) -> None:
        self.stack = np.arange(capacity, dtype=np.int64)
        self.top = np.array([capacity], dtype=np.int64)
        self.live = np.zeros(capacity, dtype=np.uint8)

    def alloc_bulk(self, n: int, out: np.ndarray) -> int:
        """``n`` indices into ``out`` (int64[>= n]): ``n``, or 0 when fewer are free."""
        return checked_alloc_bulk(self.stack, self.top, self.live, n, out)

    def free_bulk(self, n: int, objs: np.ndarray) -> int:
        """Free ``objs[:n]`` (int64): -1, or the index of the first refused object."""
        return checked_free_bulk(self.stack, self.top, self.live, n, objs)

    def run(self, bulk: int, rounds: int, out: np.ndarray) -> None:
        """``rounds`` alloc+free rounds of ``bulk`` objects in one compiled loop."""
        if rounds_checked(self.stack, self.top, self.live, bulk, rounds, out):
            raise RuntimeError("checked stack: a round's free was refused")
