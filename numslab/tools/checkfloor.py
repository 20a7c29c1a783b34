"""The floor of any allocator that refuses a double free.

The jitted free stack of the benchmarks made a sparse set, the least work measured that still makes
the brief's check.

Issue 12's targets compare numslab's bulk round with a free stack, whose round is two vector
copies of indices. :mod:`numslab.tools.floor` measures what SLUB 7.0's rules cost on top of
the brief's checks; this module measures what the checks alone cost, with no slab, sheaf,
page or free pointer at all: an allocator with any structure is slower. An index is free
exactly when it sits below the top of the stack at the position it remembers (the sparse-set
membership test), so a bulk allocation is the stack's own pop, a vector copy that writes no
mark; a bulk free checks each index (in the pool, not free, not twice in the batch), records
its new position, and pushes the batch. A refused batch leaves the free set and its order as
they were. Everything else is in the floor's favour: indices, not addresses (no grid or page
to find), one pool. Designs measured and not chosen (December 6, 2026): a live byte per
object, set at allocation and cleared at free, 0.93-1.4 ns a pair at 16 to 4096 against the
sparse set's 0.63-0.94; an address's live byte or bit per 256-byte granule, slower still.

The free has two forms, the same check: :func:`_free_push` pushes each index as it is
checked; :func:`_free_copy` checks the whole batch first (an index pushed earlier in the batch
is found in the batch itself) and pushes it in one vector copy, which the next pop reads
without waiting on scalar stores: 1.4-2x faster at 16, 10-15% slower from 250. The loop that
:func:`numslab.tools.bench.make_round` times takes the faster form for its size.

State, all owned by :class:`CheckedStack`:

* ``stack`` int64[capacity]: the free indices, ``stack[:top]``; above ``top``, stale.
* ``pos`` int64[capacity]: for a free index, its position in ``stack``; for a live one, stale.
* ``top`` int64[1]: how many are free.

Invariant: ``pos[stack[i]] == i`` for every ``i < top``, and the free indices and the live
ones partition ``0..capacity-1``; so ``x`` is free iff ``pos[x] < top`` and
``stack[pos[x]] == x``.
"""
from __future__ import annotations

import numba as nb
import numpy as np

#: The smallest batch the timed loop frees with :func:`_free_push` (below it, _free_copy).
PUSH_FROM = 64


@nb.njit(inline="always", cache=True)
def _pop(stack, t, n, out):
    """Pop ``n`` indices below ``t`` (a uint64 top, at least ``n``) into ``out``.

    The stack's own vector copy (an index below the new top no longer: live). The new top."""
    t -= np.uint64(n)
    for i in range(n):
        out[np.uint64(i)] = stack[t + np.uint64(i)]
    return t


@nb.njit(inline="always", cache=True)
def _free_push(stack, pos, t, n, objs):
    """Check and push ``objs[:n]`` one by one on the stack of top ``t``.

    The new top, or ``-1 - i`` for the first refused object ``i`` (out of the pool, free, or twice
    in the batch; the top to keep is ``t``)."""
    cap = np.uint64(pos.size)
    for i in range(n):
        x = np.uint64(objs[np.uint64(i)])
        if x >= cap:
            return -1 - i
        p = np.uint64(pos[x])
        if p < t and np.uint64(stack[p]) == x:
            return -1 - i
        stack[t] = x
        pos[x] = t
        t += np.uint64(1)
    return np.int64(t)


@nb.njit(inline="always", cache=True)
def _free_copy(stack, pos, t, n, objs):
    """Check all of ``objs[:n]``, then push them in one copy: as :func:`_free_push`.

    An index pushed earlier in the batch is found in ``objs`` itself."""
    cap = np.uint64(pos.size)
    for i in range(n):
        x = np.uint64(objs[np.uint64(i)])
        if x >= cap:
            return -1 - i
        p = np.uint64(pos[x])
        if p < t:
            if np.uint64(stack[p]) == x:
                return -1 - i
        elif p - t < np.uint64(i):
            if np.uint64(objs[p - t]) == x:
                return -1 - i
        pos[x] = t + np.uint64(i)
    for i in range(n):
        stack[t + np.uint64(i)] = objs[np.uint64(i)]
    return np.int64(t + np.uint64(n))


@nb.njit(cache=True)
def checked_alloc_bulk(stack, pos, top, n, out):
    """Pop ``n`` indices into ``out``: ``n``, or 0 (nothing changed) when fewer are free."""
    t = np.uint64(top[0])
    if t < np.uint64(n):
        return 0
    top[0] = np.int64(_pop(stack, t, n, out))
    return n


@nb.njit(cache=True)
def checked_free_bulk(stack, pos, top, n, objs):
    """Free ``objs[:n]``: -1, or the index of the first refused object, nothing changed.

    Refused: out of the pool, not live, or twice in the batch; the free set and its order are then
    as they were."""
    r = _free_copy(stack, pos, np.uint64(top[0]), n, objs)
    if r < 0:
        return -1 - r
    top[0] = r
    return -1


@nb.njit(cache=True)
def rounds_checked(stack, pos, top, bulk, rounds, out):
    """Inside @njit: ``rounds`` times, allocate ``bulk`` then free them; the rounds refused.

    Written in the loop as the jitted stack's round is (``bench``'s ``jit_stack_loop_bulk``); the
    free's faster form for the size: :data:`PUSH_FROM`. Returns the number of rounds whose free was
    refused (0 unless the state is broken)."""
    t = np.uint64(top[0])
    b = np.uint64(bulk)
    refused = 0
    for _ in range(rounds):
        if t >= b:
            t = _pop(stack, t, bulk, out)
        if bulk >= PUSH_FROM:
            r = _free_push(stack, pos, t, bulk, out)
        else:
            r = _free_copy(stack, pos, t, bulk, out)
        if r < 0:
            refused += 1
        else:
            t = np.uint64(r)
    top[0] = np.int64(t)
    return refused


class CheckedStack:
    """A free stack of ``capacity`` indices that refuses a double free (the module's state)."""

    def __init__(self, capacity: int) -> None:
        self.stack = np.arange(capacity, dtype=np.int64)
        self.pos = np.arange(capacity, dtype=np.int64)
        self.top = np.array([capacity], dtype=np.int64)

    def free_set(self) -> list[int]:
        """The free indices in stack order (what a refused batch must leave as it was)."""
        return self.stack[:int(self.top[0])].tolist()

    def alloc_bulk(self, n: int, out: np.ndarray) -> int:
        """``n`` indices into ``out`` (int64[>= n]): ``n``, or 0 when fewer are free."""
        return checked_alloc_bulk(self.stack, self.pos, self.top, n, out)

    def free_bulk(self, n: int, objs: np.ndarray) -> int:
        """Free ``objs[:n]`` (int64[>= n]): -1, or the index of the first refused object."""
        return checked_free_bulk(self.stack, self.pos, self.top, n, objs)

    def run(self, bulk: int, rounds: int, out: np.ndarray) -> None:
        """``rounds`` alloc+free rounds of ``bulk`` objects in one compiled loop.

        ``out``: int64[>= bulk], the round's batch.
        """
        if rounds_checked(self.stack, self.pos, self.top, bulk, rounds, out):
            raise RuntimeError("checked stack: a round's free was refused")
