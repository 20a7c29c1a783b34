"""Issue 11's speed measures: the single alloc+free pair inside @njit and one bulk call's cost.

The single alloc+free pair inside @njit against a FIFO ring (``single_pair_table``) and the cost of
one bulk call from Python against the @njit function a user would write (``call_cost_table``); the
bulk peers and shapes are in ``tools.bench``."""
from __future__ import annotations

import timeit
from typing import Callable

import numba as nb
import numpy as np

from numslab import jit as sjit
from numslab.drivers.calls import fastcall
from numslab.flags import GFP_ATOMIC
from numslab.tools.bench import KERNEL, OBJECT_SIZE, new_bench_cache, time_per_object


# ---- the single alloc+free pair inside @njit (issue 11) ---------------------------------------
# The loop holds SINGLE_LIVE live objects; each round frees one chosen at random, allocates a
# new one in its place and writes a word into it. The peer is a FIFO ring of free indices, so
# that the compiler cannot fold a free and the next alloc together (a bare LIFO stack pair is
# folded away to nothing). Every loop draws its victims from the same xorshift64 sequence and
# returns the sum of the objects it allocated, so no round can be optimised away.
#: Live objects of the single-pair loop.
SINGLE_LIVE = 256
#: Free indices the FIFO ring holds and records it hands out: sized like the live set, as a
#: user sizes a pool (a power of two, at least twice SINGLE_LIVE; 4096 made the ring walk 1 MiB
#: of records where 128 KiB serve, and cost it 5-10% here).
RING_CAPACITY = 512
#: Sheaf capacity of the ``slab-sheaves`` single-pair cache.
SINGLE_SHEAF_CAPACITY = 32
#: Seed of the xorshift64 generator (Marsaglia's example seed).
SINGLE_SEED = 88172645463325252
#: Rounds of one timed single-pair run.
SINGLE_ROUNDS = 1 << 16
#: The single-pair implementations: the peer first (the ratios' reference).
SINGLE_IMPLS = ("fifo-ring", "slab", "slab-sheaves")


@nb.njit(inline="always")
def _victim(x, live):
    """One xorshift64 step from ``x`` and the victim it draws in ``0..live-1``.

    Both loops draw the same sequence (inlined into each, so neither pays a call)."""
    x ^= x << np.uint64(13)
    x ^= x >> np.uint64(7)
    x ^= x << np.uint64(17)
    return x, (np.int64(x >> np.uint64(32)) * live) >> 32


@nb.njit(cache=True)
def ring_single_pair(records, capacity, live, rounds, seed):
    """The peer: a FIFO ring of ``capacity`` free record indices; the sum of the indices allocated.

    ``capacity`` is a power of two; written in the loop with ``live`` objects held. The ring and
    the live set are local arrays, as a competent user writes them (Numba then knows the records'
    stores cannot touch them), of unsigned indices, so that no index into them or into ``records``
    carries negative-index code; ``records`` is the preallocated ``int64[capacity, words]``
    records. Returns the sum of the indices allocated in the rounds."""
    mask = np.uint64(capacity - 1)             # unsigned positions: no negative-index code
    one = np.uint64(1)
    ring = np.arange(capacity).astype(np.uint64)
    held = np.empty(live, np.uint64)
    head = np.uint64(0)
    tail = np.uint64(capacity)
    for k in range(live):
        idx = ring[head & mask]
        head += one
        records[idx, 0] = k
        held[k] = idx
    x = np.uint64(seed)
    acc = 0
    for r in range(rounds):
        x, j = _victim(x, live)
        ring[tail & mask] = held[j]            # free the victim at the tail ...
        tail += one
        idx = ring[head & mask]                # ... allocate at the head
        head += one
        records[idx, 0] = r
        held[j] = idx
        acc += np.int64(idx)
    return acc


@nb.njit(cache=True)
def slab_single_pair(h, cid, live, rounds, seed):
    """The same loop through ``numslab.jit``; the sum of the addresses allocated in the rounds.

    Through ``numslab.jit.kmem_cache_alloc``/``kmem_cache_free`` on cache ``cid`` (the live set a
    local array too), the word written through ``numslab.jit.arena``; every object is freed before
    it returns."""
    mem = sjit.arena(h).view(np.int64)
    held = np.empty(live, np.int64)
    for k in range(live):
        obj = sjit.kmem_cache_alloc(h, cid, 0, GFP_ATOMIC)
        if obj == 0:
            raise MemoryError("slab_single_pair: out of memory")
        mem[obj >> 3] = k
        held[k] = obj
    x = np.uint64(seed)
    acc = 0
    for r in range(rounds):
        x, j = _victim(x, live)
        sjit.kmem_cache_free(h, cid, held[j], 0)
        obj = sjit.kmem_cache_alloc(h, cid, 0, GFP_ATOMIC)
        if obj == 0:
            raise MemoryError("slab_single_pair: out of memory")
        mem[obj >> 3] = r
        held[j] = obj
        acc += obj
    for k in range(live):
        sjit.kmem_cache_free(h, cid, held[k], 0)
    return acc


def xorshift_victims(rounds: int, live: int = SINGLE_LIVE, seed: int = SINGLE_SEED) -> list:
    """The victims' slots the single-pair loops draw, in plain Python (for the tests)."""
    x, m, out = seed, (1 << 64) - 1, []
    for _ in range(rounds):
        x ^= (x << 13) & m
        x ^= x >> 7
        x ^= (x << 17) & m
        out.append(((x >> 32) * live) >> 32)
    return out


def make_single_pair(impl: str, live: int = SINGLE_LIVE,
                     kernel: str = KERNEL) -> Callable[[int], int]:
    """A function ``run(rounds)`` running the single-pair loop of ``impl``, returning its sum.

    ``impl`` is one of :data:`SINGLE_IMPLS`; ``rounds`` rounds, warmed up once. Its closure holds
    the state for inspection: ``records``, or ``h`` (whose ``_owner`` is the allocator) and
    ``cid``."""
    if impl not in SINGLE_IMPLS:
        raise ValueError(f"unknown implementation {impl!r}: one of {SINGLE_IMPLS}")
    if impl == "fifo-ring":
        records = np.empty((RING_CAPACITY, OBJECT_SIZE // 8), np.int64)
        records.fill(0)         # every page faulted in now: np.zeros maps them on first touch,
                                # and a short timed run paid for that (0.07x "the ring")

        def run(rounds: int) -> int:
            return ring_single_pair(records, RING_CAPACITY, live, rounds, SINGLE_SEED)
    else:
        sa, c = new_bench_cache(sheaf_capacity=SINGLE_SHEAF_CAPACITY
                                if impl == "slab-sheaves" else 0, kernel=kernel)
        h, cid = sa.handle, c.id

        def run(rounds: int) -> int:
            return slab_single_pair(h, cid, live, rounds, SINGLE_SEED)
    run(2)
    return run


def single_pair_table(rounds: int = SINGLE_ROUNDS, repeat: int = 5,
                      impls: tuple[str, ...] = SINGLE_IMPLS,
                      kernel: str = KERNEL) -> dict[str, float]:
    """ns per round of the single-pair loop for every implementation (best of ``repeat``).

    The set-up and release of the live set are in the timing, 2 * SINGLE_LIVE operations against
    ``2 * rounds``."""
    runs = {impl: make_single_pair(impl, kernel=kernel) for impl in impls}
    best = {impl: float("inf") for impl in impls}
    for _ in range(repeat):                     # interleaved: noise hits every impl alike
        for impl, run in runs.items():
            best[impl] = min(best[impl], time_per_object(run, 1, rounds, 1))
    return best


# ---- the cost of one call from Python (issue 11) ----------------------------------------------
#: Objects per call, calls per timed sample.
CALL_BULK = 16
CALL_CALLS = 32
#: The callers: the facade (a plain, gated SlabAllocator), the user's @njit function called
#: through Numba's dispatcher, the same function through its native entry point, and a
#: reference: an empty @njit function called through the dispatcher with the same arguments,
#: an int in place of the handle (what any call of a jitted function from Python costs).
CALL_IMPLS = ("facade", "njit-call", "njit-fastcall", "empty-njit")
CALL_OPS = ("alloc_bulk", "free_bulk")


@nb.njit(cache=True)
def user_alloc_bulk(h, cid, gfp, nr, out):
    """The peer a user writes: ``kmem_cache_alloc_bulk`` through ``numslab.jit``."""
    return sjit.kmem_cache_alloc_bulk(h, cid, nr, out, 0, gfp)


@nb.njit(cache=True)
def user_free_bulk(h, cid, nr, objs):
    """The peer a user writes: ``kmem_cache_free_bulk`` through ``numslab.jit``."""
    sjit.kmem_cache_free_bulk(h, cid, nr, objs, 0)


@nb.njit(cache=True)
def empty_alloc_bulk(h, cid, gfp, nr, out):
    """The reference: :func:`user_alloc_bulk`'s arguments (``h`` an int), no work."""
    return 0


@nb.njit(cache=True)
def empty_free_bulk(h, cid, nr, objs):
    """The reference: :func:`user_free_bulk`'s arguments (``h`` an int), no work."""
    return None


def make_calls(impl: str, bulk: int = CALL_BULK, calls: int = CALL_CALLS,
               kernel: str = KERNEL) -> tuple:
    """``(alloc_all, free_all, sa, c, rows)``: bulk calls through ``impl`` into ``rows``, and back.

    ``alloc_all()`` makes ``calls`` allocation calls of ``bulk`` objects through ``impl`` (one of
    :data:`CALL_IMPLS`), one row of ``rows`` each, and ``free_all()`` frees them row by row
    (``empty-njit``: the same calls of an empty function, which leave ``rows`` and the cache
    alone). The cache's sheaves hold every object of the rows (``sheaf_capacity = bulk * calls``)
    and are warmed, so that every call is served by the CPU's main sheaf."""
    if impl not in CALL_IMPLS:
        raise ValueError(f"unknown implementation {impl!r}: one of {CALL_IMPLS}")
    sa, c = new_bench_cache(sheaf_capacity=bulk * calls, kernel=kernel)
    rows = list(np.zeros((calls, bulk), np.int64))
    gfp = GFP_ATOMIC
    if impl == "facade":
        a, f = sa.kmem_cache_alloc_bulk, sa.kmem_cache_free_bulk

        def alloc_all() -> None:
            for o in rows:
                a(c, gfp, bulk, o)

        def free_all() -> None:
            for o in rows:
                f(c, bulk, o)
    else:
        h, cid = sa.handle, c.id
        if impl == "njit-call":
            a, f = user_alloc_bulk, user_free_bulk
        elif impl == "empty-njit":
            a, f = empty_alloc_bulk, empty_free_bulk
            h = sa._handle                      # an int: the handle's address
        else:
            a = fastcall(user_alloc_bulk, h, cid, gfp, bulk, rows[0])
            f = fastcall(user_free_bulk, h, cid, bulk, rows[0])

        def alloc_all() -> None:
            for o in rows:
                a(h, cid, gfp, bulk, o)

        def free_all() -> None:
            for o in rows:
                f(h, cid, bulk, o)
    for _ in range(2):                          # compile, fill the main sheaf
        alloc_all()
        free_all()
    return alloc_all, free_all, sa, c, rows


def call_cost(impl: str, bulk: int = CALL_BULK, calls: int = CALL_CALLS,
              repeat: int = 50) -> dict[str, float]:
    """ns per ``kmem_cache_alloc_bulk`` and per ``kmem_cache_free_bulk`` call through ``impl``.

    Calls of ``bulk`` objects: best of ``repeat`` samples of ``calls`` calls each (the Python loop
    over the rows is in every implementation's figure)."""
    return call_cost_table(bulk, calls, repeat, (impl,))[impl]


def call_cost_table(bulk: int = CALL_BULK, calls: int = CALL_CALLS, repeat: int = 50,
                    impls: tuple[str, ...] = CALL_IMPLS,
                    kernel: str = KERNEL) -> dict[str, dict[str, float]]:
    """:func:`call_cost` of every implementation, samples interleaved."""
    made = {impl: make_calls(impl, bulk, calls, kernel)[:2] for impl in impls}
    clock = timeit.default_timer
    best = {impl: {op: float("inf") for op in CALL_OPS} for impl in impls}
    for _ in range(repeat):
        for impl, (alloc_all, free_all) in made.items():
            t0 = clock()
            alloc_all()
            t1 = clock()
            free_all()
            t2 = clock()
            b = best[impl]
            b["alloc_bulk"] = min(b["alloc_bulk"], t1 - t0)
            b["free_bulk"] = min(b["free_bulk"], t2 - t1)
    return {impl: {op: t / calls * 1e9 for op, t in row.items()} for impl, row in best.items()}
