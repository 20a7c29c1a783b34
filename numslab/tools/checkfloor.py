"""The floor of any allocator that refuses a double free.

The jitted free stack of the benchmarks made a sparse set, the least work measured that still makes
the brief's check.

Issue 12's targets compare numslab's bulk round with a free stack, whose round is two vector
copies of indices. :mod:`numslab.tools.floor` measures what SLUB 7.0's rules cost on top of
the brief's checks; this module measures what the checks alone cost, with no slab, sheaf,
page or free pointer at all: an allocator with any structure is slower. An index is free
exactly when it sits below the top of the stack at the position it remembers (the sparse-set
membership test), so a bulk allocation is the stack's own pop, a vector copy that writes no
mark. The popped indices stay where they were, above the top, each at the position it
remembers: the run, ``stack[top:run_end]``, live indices taken by the allocations and not freed
since. A bulk free whose batch is the run's start in its order (the batch the last allocation
took, given back) is checked by one vector compare with the stack above the top (:func:`_is_run`:
such indices are live, none twice, in the pool) and freed by raising the top, nothing written.
Any other free checks each index (in the pool, not free, not twice in the batch), records its
new position, pushes the batch and ends the run. A refused batch leaves the free set and its
order as they were. Everything else is in the floor's favour: indices, not addresses (no grid
or page to find), one pool.

The check an index at a time has two forms: :func:`_free_push` pushes each index as it is
checked; :func:`_free_copy` checks the whole batch first (an index pushed earlier in the batch
is found in the batch itself) and pushes it in one vector copy, which the next pop reads
without waiting on scalar stores: 1.4-2x faster at 16, 10-15% slower from 250. The loop that
:func:`numslab.tools.bench.make_round` times takes the faster form for its size when its batch
is not the run (never, when the state is sound and the pool holds the batch).

Measured (December 7, 2026; ns a pair at 16, 64, 250 and 4096, inside @njit, best of 7 samples
of 65,536 pairs, each design interleaved with the jitted stack in the same processes, two to six
processes): with the run 0.32-0.45, 0.16-0.52, 0.13-0.20, 0.28-0.36 (0.3-1.2x, 0.6-3.6x,
0.7-1.4x, 0.9-1.1x the stack); the same stack checked an index at a time (this module until
then) 1.96-1.99, 0.68-0.73, 0.71-0.72, 0.78-1.14 (2.6-3.8x the stack at 4096, up to 5.4x at 16);
the stack 0.37-1.12, 0.14-0.37, 0.14-0.28, 0.29-0.33. Both are bimodal at 64 with where the
batch and ``stack[top - 64]`` lie modulo 64 bytes: over the 64 placements, the stack 0.14-0.33,
this module 0.14-0.52, 0.69-2.32x the stack at the same placement (median 1.48x, two processes);
0.79-0.96x at 16, 0.86-1.22x at 250, 0.86-1.04x at 4096. Designs measured and not chosen: the
check as branch-free passes that LLVM vectorises with AVX-512 gathers (``vpgatherqq``: in the
pool and not free, two gathers; twice in the batch, the positions stored by a scalar loop, as
LLVM emits no scatter, then gathered back) 4.3-4.5, 1.9-2.1, 1.7, 1.8-1.9, its two gathers alone
2.8-3.0, 0.91-1.3, 0.93-0.98, 1.1-1.2, with 32-bit indices 2.7, 1.7-1.9, 1.7, 1.6-1.7; the batch
taken when each index's remembered position is the one it is pushed to (one gather) 2.6,
0.69-1.1, 0.61-0.66, 0.73-0.79; the stack a permutation of the pool with the live indices above
the top (the run without its end; any other batch swapped in an index at a time) as fast with
the batch in its order, but 1.1-4.7x slower than the push with the batch rotated by one,
reversed or shuffled, where the run costs up to 8% at 16 and nothing measurable above (1.6-1.7,
1.2-1.4, 1.2-1.3, 1.4-1.5 against the push's 1.5-1.8, 1.2-1.3, 1.3-1.7, 1.4-1.6, each with the
reordering's own copy). December 6: a live byte per object 0.93-1.4; an address's live byte or
bit per 256-byte granule, slower still.

State, all owned by :class:`CheckedStack`:

* ``stack`` int64[capacity]: the free indices, ``stack[:top]``; above ``top``, the run, then
  stale.
* ``pos`` int64[capacity]: for a free index or one in the run, its position in ``stack``; for
  another live one, stale.
* ``top`` int64[2]: how many are free, and the run's end (``top[0] <= top[1] <= capacity``).

Invariant: ``pos[stack[i]] == i`` for every ``i < top[1]``, the free indices and the live
ones partition ``0..capacity-1``, and ``stack[top[0]:top[1]]`` are live; so ``x`` is free iff
``pos[x] < top[0]`` and ``stack[pos[x]] == x``, and ``stack[top[0]:top[0] + n]`` can be freed
as it is.
"""
from __future__ import annotations

import numpy as np

from numslab.tools.toolsjit import tools_jit

#: The smallest batch the timed loop frees with :func:`_free_push` (below it, _free_copy).
PUSH_FROM = 64


@tools_jit(inline="always")
def _pop(stack, t, n, out):
    """Pop ``n`` indices below ``t`` (a uint64 top, at least ``n``) into ``out``.

    The stack's own vector copy (an index below the new top no longer: live). The new top."""
    t -= np.uint64(n)
    for i in range(n):
        out[np.uint64(i)] = stack[t + np.uint64(i)]
    return t


@tools_jit(inline="always")
def _is_run(stack, t, hi, n, objs):
    """Whether ``objs[:n]`` is ``stack[t:t + n]`` and within the run (``n <= hi - t``).

    Such a batch is live, no index twice, each at the position it remembers: it is freed by
    raising the top. One vector compare (no branch in the loop)."""
    if np.uint64(n) > hi - t:
        return False
    d = np.uint64(0)
    for i in range(n):
        d |= np.uint64(objs[np.uint64(i)]) ^ np.uint64(stack[t + np.uint64(i)])
    return d == 0


@tools_jit(inline="always")
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


@tools_jit(inline="always")
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


@tools_jit()
def checked_alloc_bulk(stack, pos, top, n, out):
    """Pop ``n`` indices into ``out``: ``n``, or 0 (nothing changed) when fewer are free.

    The popped indices join the run (its end ``top[1]`` stays)."""
    t = np.uint64(top[0])
    if t < np.uint64(n):
        return 0
    top[0] = np.int64(_pop(stack, t, n, out))
    return n


@tools_jit()
def checked_free_bulk(stack, pos, top, n, objs):
    """Free ``objs[:n]``: -1, or the index of the first refused object, nothing changed.

    Refused: out of the pool, not live, or twice in the batch; the free set and its order are then
    as they were. A batch at the start of the run is freed by raising the top; any other ends the
    run."""
    t = np.uint64(top[0])
    if _is_run(stack, t, np.uint64(top[1]), n, objs):
        top[0] = np.int64(t + np.uint64(n))
        return -1
    r = _free_copy(stack, pos, t, n, objs)
    if r < 0:
        top[1] = np.int64(t)
        return -1 - r
    top[0] = r
    top[1] = r
    return -1


@tools_jit()
def rounds_checked(stack, pos, top, bulk, rounds, out):
    """Inside @njit: ``rounds`` times, allocate ``bulk`` then free them; the rounds refused.

    Written in the loop as the jitted stack's round is (``bench``'s ``jit_stack_loop_bulk``); a
    batch not at the start of the run (none when the state is sound) takes the free's faster
    form for the size: :data:`PUSH_FROM`. Returns the number of rounds whose free was refused (0
    when the state is sound and ``bulk`` at most the free indices)."""
    t = np.uint64(top[0])
    hi = np.uint64(top[1])
    b = np.uint64(bulk)
    refused = 0
    for _ in range(rounds):
        if t >= b:
            t = _pop(stack, t, bulk, out)
        if _is_run(stack, t, hi, bulk, out):
            t += b
            continue
        if bulk >= PUSH_FROM:
            r = _free_push(stack, pos, t, bulk, out)
        else:
            r = _free_copy(stack, pos, t, bulk, out)
        if r < 0:
            refused += 1
        else:
            t = np.uint64(r)
        hi = t
    top[0] = np.int64(t)
    top[1] = np.int64(hi)
    return refused


class CheckedStack:
    """A free stack of ``capacity`` indices that refuses a double free (the module's state)."""

    def __init__(self, capacity: int) -> None:
        self.stack = np.arange(capacity, dtype=np.int64)
        self.pos = np.arange(capacity, dtype=np.int64)
        self.top = np.array([capacity, capacity], dtype=np.int64)

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
