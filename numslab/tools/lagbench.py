"""Bulk rounds that free an older batch: ``-lag``, what a simulation's particles do.

The ``slab_bulk_test01`` round frees the batch it just allocated; a program that keeps batches
alive for a while frees one allocated :data:`LAG` rounds before, which numslab checks object by
object (no record of the last allocation matches it).

Each round frees the oldest of :data:`LAG` batches in flight and allocates a new one in its
place: numslab through ``numslab.jit`` on :mod:`numslab.tools.bench`'s default cache
(``slab-lag``), and the jitted free-index stack written in the loop (``jit-stack-lag``, its
batches rows of one 2-D array, so it passes no array view to any call, as a competent user
writes it). numslab's calls take a row (a view: its reference count moves once a round, a cost
the stack's loop does not pay, spread over the batch). Inside @njit only: from Python a batch
is a call either way and the per-object check is the same.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from numslab import jit as sjit
from numslab.flags import GFP_ATOMIC
from numslab.tools.toolsjit import tools_jit

#: Batches in flight: each round frees the batch allocated this many rounds before.
LAG = 8
#: The two workloads (inside @njit).
LAG_IMPLS = ("slab-lag", "jit-stack-lag")


@tools_jit()
def jit_stack_loop_lag(stack, top, bulk, rounds, outs):
    """Inside @njit: ``rounds`` times, push the oldest batch of ``outs`` and pop a new one.

    ``outs`` (int64[LAG, >= bulk]) holds the batches in flight, row ``r % LAG`` the oldest at
    round ``r``; the stack (int64[capacity]) and its top (int64[1]) as
    :func:`numslab.tools.bench.jit_stack_loop_bulk`'s, unsigned indices."""
    t = np.uint64(top[0])
    lag = outs.shape[0]
    for r in range(rounds):
        s = r % lag
        for i in range(bulk):                       # the free: a push above the top
            stack[t + np.uint64(i)] = outs[s, np.uint64(i)]
        for i in range(bulk):                       # the allocation: a pop of the same
            outs[s, np.uint64(i)] = stack[t + np.uint64(i)]     # (the top is back where it was)


@tools_jit()
def slab_loop_lag(h, cid, bulk, rounds, outs):
    """Inside @njit: ``rounds`` times, free the oldest batch of ``outs`` and allocate one there.

    ``outs`` (int64[LAG, >= bulk]) holds the batches in flight, all allocated, row ``r % LAG``
    the oldest at round ``r``: ``kmem_cache_free_bulk`` of it, then ``kmem_cache_alloc_bulk``
    into it."""
    lag = outs.shape[0]
    for r in range(rounds):
        o = outs[r % lag]
        sjit.kmem_cache_free_bulk(h, cid, bulk, o, 0)
        sjit.kmem_cache_alloc_bulk(h, cid, bulk, o, 0, GFP_ATOMIC)


def fill_lag(sa: Any, c: Any, bulk: int, outs: np.ndarray) -> int:
    """Allocate each row of ``outs`` (int64[LAG, >= bulk]) from Python: the batches in flight.

    ``kmem_cache_alloc_bulk`` of ``bulk`` objects of cache ``c`` into each row (through the
    facade: no function of its own to compile); the total."""
    return sum(sa.kmem_cache_alloc_bulk(c, GFP_ATOMIC, bulk, row) for row in outs)


def make_lag_round(impl: str, bulk: int, pool: Any) -> Callable[[int], None]:
    """A function ``run(rounds)`` of :data:`LAG_IMPLS`' ``impl`` at ``bulk``.

    ``pool`` is a :class:`numslab.tools.bench.JitStack` holding at least ``LAG * bulk``
    indices (``jit-stack-lag``) or an allocator and its cache (``slab-lag``); :data:`LAG`
    batches of ``bulk`` are taken from it first, then the round is warmed up."""
    outs = np.zeros((LAG, bulk), np.int64)
    if impl == "jit-stack-lag":
        t = int(pool.top[0]) - LAG * bulk
        outs[:] = pool.stack[t:t + LAG * bulk].reshape(LAG, bulk)
        pool.top[0] = t

        def run(rounds: int) -> None:
            jit_stack_loop_lag(pool.stack, pool.top, bulk, rounds, outs)
    else:
        sa, c = pool
        h, cid = sa.handle, c.id
        if fill_lag(sa, c, bulk, outs) != LAG * bulk:
            raise MemoryError(f"slab-lag: {LAG} batches of {bulk} do not fit the cache")

        def run(rounds: int) -> None:
            slab_loop_lag(h, cid, bulk, rounds, outs)
    run(2 * LAG)
    run.outs = outs                     # (the batches in flight: for the tests)
    return run


def lag_memory(bulk: int, object_size: int) -> str:
    """The arena ``slab-lag`` needs at ``bulk``: 64 MiB, or twice its batches in flight."""
    return f"{max(64, -(-2 * LAG * bulk * object_size // (1 << 20)))}M"
