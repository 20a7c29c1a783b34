"""Benchmark workloads shared by ``numslab bench`` and the asv suite: the peers numslab is
measured against and the ``slab_bulk_test01`` shape (alloc N, free N, per-object cost).

The peers are what a Python programmer would otherwise use to hand out fixed-size records;
each allocates indices of a preallocated record array:

* ``DequePool`` — a pure-Python pool: a ``collections.deque`` of free indices.
* ``NumpyStack`` — a NumPy free stack: slices of an index array and a top counter.
* ``JitStack`` — a minimal ``@njit`` free-index stack (state: the stack array and a
  one-element top array), callable from Python and from inside ``@njit`` code; inside @njit
  the benchmark loops write its operations in the loop, as a competent Numba user would, so
  that they pay no reference-count traffic.

Issue 11's other measures live here too: the single alloc+free pair inside @njit against a
FIFO ring (``single_pair_table``), the cost of one bulk call from Python against the @njit
function a user would write (``call_cost_table``), the cold starts and a user's compile in
fresh interpreters (``COLD_CASES``, ``user_compile_code``), and the LLVM IR checks of the
loops (``refcount_calls_in_loops``, ``units_defined``).
"""
from __future__ import annotations

import re
import subprocess
import sys
import timeit
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numba as nb
import numpy as np

import numslab
from numslab import jit as sjit
from numslab.drivers.calls import fastcall
from numslab.flags import (GFP_ATOMIC, SLAB_ARRAY_ALLOC_FULL_COUNT, SLAB_ARRAY_ALLOC_LOCAL,
                           SLAB_ARRAY_ALLOC_NEW, SLAB_ARRAY_ALLOC_PARTIAL, SLAB_HWCACHE_ALIGN)


class DequePool:
    """Pure Python: ``alloc`` pops free indices from a deque, ``free`` pushes them back."""

    def __init__(self, capacity: int) -> None:
        self.free_list = deque(range(capacity))

    def alloc_bulk(self, n: int, out: list) -> int:
        if len(self.free_list) < n:
            return 0
        pop = self.free_list.pop
        for i in range(n):
            out[i] = pop()
        return n

    def free_bulk(self, n: int, objs: list) -> None:
        push = self.free_list.append
        for i in range(n):
            push(objs[i])

    def alloc(self) -> int:
        return self.free_list.pop()

    def free(self, i: int) -> None:
        self.free_list.append(i)


class NumpyStack:
    """NumPy: a stack of free indices moved by slices."""

    def __init__(self, capacity: int) -> None:
        self.stack = np.arange(capacity, dtype=np.int64)
        self.top = capacity

    def alloc_bulk(self, n: int, out: np.ndarray) -> int:
        if self.top < n:
            return 0
        self.top -= n
        out[:n] = self.stack[self.top:self.top + n]
        return n

    def free_bulk(self, n: int, objs: np.ndarray) -> None:
        self.stack[self.top:self.top + n] = objs[:n]
        self.top += n

    def alloc(self) -> int:
        if self.top == 0:
            return -1
        self.top -= 1
        return int(self.stack[self.top])

    def free(self, i: int) -> None:
        self.stack[self.top] = i
        self.top += 1


@nb.njit(cache=True)
def jit_stack_alloc_bulk(stack, top, n, out):
    """Pop ``n`` indices into ``out``; all or nothing."""
    t = top[0]
    if t < n:
        return 0
    for i in range(n):
        out[i] = stack[t - n + i]
    top[0] = t - n
    return n


@nb.njit(cache=True)
def jit_stack_free_bulk(stack, top, n, objs):
    """Push ``objs[:n]`` back."""
    t = top[0]
    for i in range(n):
        stack[t + i] = objs[i]
    top[0] = t + n


@nb.njit(cache=True)
def jit_stack_alloc(stack, top):
    """Pop one index (-1 if empty)."""
    t = top[0]
    if t == 0:
        return -1
    top[0] = t - 1
    return stack[t - 1]


@nb.njit(cache=True)
def jit_stack_free(stack, top, i):
    """Push one index."""
    stack[top[0]] = i
    top[0] += 1


class JitStack:
    """A minimal jitted free-index stack."""

    def __init__(self, capacity: int) -> None:
        self.stack = np.arange(capacity, dtype=np.int64)
        self.top = np.array([capacity], dtype=np.int64)

    def alloc_bulk(self, n: int, out: np.ndarray) -> int:
        return jit_stack_alloc_bulk(self.stack, self.top, n, out)

    def free_bulk(self, n: int, objs: np.ndarray) -> None:
        jit_stack_free_bulk(self.stack, self.top, n, objs)

    def alloc(self) -> int:
        return jit_stack_alloc(self.stack, self.top)

    def free(self, i: int) -> None:
        jit_stack_free(self.stack, self.top, i)


# ---- the jitted stack inside @njit: what a competent Numba user writes ---------------------------
# The stack's operations are written in the loop, its top kept in a local: the loop passes no
# array to another function, so Numba adds no reference-count traffic (a call of
# ``jit_stack_alloc(stack, top)`` from a loop increfs and decrefs both arrays, ~20 ns a pair).
# ``tests/test_bench.py`` checks in the LLVM IR that these loops call no NRT_incref/decref.
@nb.njit(cache=True)
def jit_stack_loop_bulk(stack, top, bulk, rounds, out):
    """Inside @njit: ``rounds`` times, alloc ``bulk`` then free them (slab_bulk_test01); the
    bulk pop is all or nothing, as :func:`jit_stack_alloc_bulk`."""
    t = top[0]
    for _ in range(rounds):
        if t >= bulk:
            t -= bulk
            for i in range(bulk):
                out[i] = stack[t + i]
        for i in range(bulk):
            stack[t + i] = out[i]
        t += bulk
    top[0] = t


@nb.njit(cache=True)
def jit_stack_loop_single(stack, top, bulk, rounds, out):
    """Inside @njit: ``rounds`` times, ``bulk`` single allocs then ``bulk`` single frees (an
    alloc from an empty stack gives -1, as :func:`jit_stack_alloc`)."""
    t = top[0]
    for _ in range(rounds):
        for i in range(bulk):
            if t == 0:
                out[i] = -1
            else:
                t -= 1
                out[i] = stack[t]
        for i in range(bulk):
            stack[t] = out[i]
            t += 1
    top[0] = t


# ---- numslab inside @njit (users' code) ------------------------------------------------------
@nb.njit(cache=True)
def slab_loop_bulk(h, cid, bulk, rounds, out):
    """Inside @njit: ``rounds`` times ``kmem_cache_alloc_bulk`` + ``kmem_cache_free_bulk``."""
    for _ in range(rounds):
        sjit.kmem_cache_alloc_bulk(h, cid, bulk, out, 0, GFP_ATOMIC)
        sjit.kmem_cache_free_bulk(h, cid, bulk, out, 0)


@nb.njit(cache=True)
def slab_loop_single(h, cid, bulk, rounds, out):
    """Inside @njit: ``rounds`` times ``bulk`` single allocations, then ``bulk`` frees."""
    for _ in range(rounds):
        for i in range(bulk):
            out[i] = sjit.kmem_cache_alloc(h, cid, 0, GFP_ATOMIC)
        for i in range(bulk):
            sjit.kmem_cache_free(h, cid, out[i], 0)


@nb.njit(cache=True)
def slab_loop_array(h, cid, bulk, rounds, out, flags):
    """Inside @njit: ``rounds`` times ``kmem_cache_alloc_array`` + ``kmem_cache_free_array``."""
    for _ in range(rounds):
        n = sjit.kmem_cache_alloc_array(h, cid, bulk, out, flags, 0, GFP_ATOMIC)
        sjit.kmem_cache_free_array(h, cid, n, out, 0)


# ---- the slab_bulk_test01 table ------------------------------------------------------------------
#: Bulk sizes of the kernel's slab_bulk_test01.
BULK_SIZES = (1, 2, 3, 4, 8, 16, 30, 32, 34, 48, 64, 128, 158, 250)
#: Brouer 2015, kernel SLUB on an i7-4790K at 4 GHz: ns per alloc+free pair (REFERENCE.md).
KERNEL_NS = {1: 11.25, 2: 7.5, 4: 5.0, 8: 4.7, 16: 4.5, 32: 4.7, 64: 5.1, 128: 6.8, 250: 9.3}
#: sk_buff-sized objects on a HWCACHE_ALIGN cache, as the kernel test; 256 bytes here.
OBJECT_SIZE = 256
#: Sheaf capacity of the ``slab-sheaves`` cache: the largest bulk size of the table, so that
#: in steady state a batch is served from the CPU's sheaves (6.18's per-CPU object arrays).
SHEAF_CAPACITY = 256
ARRAY_MODES = {"local": SLAB_ARRAY_ALLOC_LOCAL, "partial": SLAB_ARRAY_ALLOC_PARTIAL,
               "new": SLAB_ARRAY_ALLOC_NEW}
#: Implementations called from Python and from inside @njit.
#: ``slab-jit-round`` is a floor, not an API: from Python, one call per round into an @njit
#: function that allocates and frees the batch through ``numslab.jit`` on the sheaves cache
#: (half the crossings of any alloc-then-free API, and no facade).
PY_IMPLS = ("deque", "numpy-stack", "jit-stack", "slab-single", "slab-bulk", "slab-sheaves",
            "slab-local", "slab-partial", "slab-new", "slab-jit-round")
JIT_IMPLS = ("jit-stack", "jit-stack-single", "slab-single", "slab-bulk", "slab-sheaves",
             "slab-local", "slab-partial", "slab-new")


def new_bench_cache(nr_cpus: int = 1, memory: str = "64M", sheaves: bool = False,
                    sheaf_capacity: int | None = None) -> tuple:
    """A fresh allocator and a 256-byte HWCACHE_ALIGN cache (the kernel test's shape), with
    per-CPU sheaves of :data:`SHEAF_CAPACITY` objects if ``sheaves``, or of
    ``sheaf_capacity`` objects if that is given (0: none)."""
    sa = numslab.SlabAllocator(nr_cpus=nr_cpus, memory=memory)
    sa.populate()
    if sheaf_capacity is None:
        sheaf_capacity = SHEAF_CAPACITY if sheaves else 0
    cap = {"sheaf_capacity": sheaf_capacity} if sheaf_capacity else {}
    return sa, sa.kmem_cache_create("slab_bench_test", OBJECT_SIZE, flags=SLAB_HWCACHE_ALIGN,
                                    **cap)


def make_round(impl: str, bulk: int, inside_jit: bool = False) -> Callable[[int], None]:
    """A function ``run(rounds)`` doing ``rounds`` times: allocate ``bulk`` objects with
    ``impl`` and free them (``slab_bulk_test01``'s loop), warmed up once.

    The array modes run with FULL_COUNT, so that every round has ``bulk`` objects: NEW only
    acts on more than a slab's worth (16 objects here), so up to 16 ``slab-new`` is all
    FULL_COUNT top-up, one object at a time."""
    if impl not in PY_IMPLS + JIT_IMPLS:
        raise ValueError(f"unknown implementation {impl!r}: one of {PY_IMPLS + JIT_IMPLS}")
    cap = 1 << 16
    if impl == "deque":
        pool = DequePool(cap)
        buf = [0] * bulk

        def run(rounds: int) -> None:
            for _ in range(rounds):
                pool.alloc_bulk(bulk, buf)
                pool.free_bulk(bulk, buf)
    elif impl in ("numpy-stack", "jit-stack", "jit-stack-single"):
        st = (NumpyStack if impl == "numpy-stack" else JitStack)(cap)
        out = np.zeros(bulk, np.int64)
        if impl == "jit-stack-single":
            def run(rounds: int) -> None:
                jit_stack_loop_single(st.stack, st.top, bulk, rounds, out)
        elif inside_jit:
            def run(rounds: int) -> None:
                jit_stack_loop_bulk(st.stack, st.top, bulk, rounds, out)
        else:
            def run(rounds: int) -> None:
                a, f = st.alloc_bulk, st.free_bulk
                for _ in range(rounds):
                    a(bulk, out)
                    f(bulk, out)
    else:
        sa, c = new_bench_cache(sheaves=impl in ("slab-sheaves", "slab-jit-round"))
        out = np.zeros(bulk, np.int64)
        h, cid = sa.handle, c.id
        mode = impl.split("-", 1)[1]
        mode = "bulk" if mode == "sheaves" or (mode == "jit-round" and inside_jit) else mode
        if mode == "jit-round":
            loop = fastcall(slab_loop_bulk, h, cid, bulk, 1, out)

            def run(rounds: int) -> None:
                hh, ci = sa.handle, c.id
                for _ in range(rounds):
                    loop(hh, ci, bulk, 1, out)
        elif inside_jit:
            if mode == "single":
                def run(rounds: int) -> None:
                    slab_loop_single(h, cid, bulk, rounds, out)
            elif mode == "bulk":
                def run(rounds: int) -> None:
                    slab_loop_bulk(h, cid, bulk, rounds, out)
            else:
                flags = ARRAY_MODES[mode] | SLAB_ARRAY_ALLOC_FULL_COUNT

                def run(rounds: int) -> None:
                    slab_loop_array(h, cid, bulk, rounds, out, flags)
        elif mode == "single":
            def run(rounds: int) -> None:
                alloc, free = sa.kmem_cache_alloc, sa.kmem_cache_free
                for _ in range(rounds):
                    for i in range(bulk):
                        out[i] = alloc(c, GFP_ATOMIC)
                    for i in range(bulk):
                        free(c, int(out[i]))
        elif mode == "bulk":
            def run(rounds: int) -> None:
                a, f = sa.kmem_cache_alloc_bulk, sa.kmem_cache_free_bulk
                for _ in range(rounds):
                    a(c, GFP_ATOMIC, bulk, out)
                    f(c, bulk, out)
        else:
            flags = ARRAY_MODES[mode] | SLAB_ARRAY_ALLOC_FULL_COUNT

            def run(rounds: int) -> None:
                a, f = sa.kmem_cache_alloc_array, sa.kmem_cache_free_array
                for _ in range(rounds):
                    n = a(c, GFP_ATOMIC, bulk, out, flags)
                    f(c, n, out)
    run(2)
    return run


def time_per_object(run: Callable[[int], None], bulk: int, objects: int = 1 << 15,
                    repeat: int = 5) -> float:
    """Best-of-``repeat`` nanoseconds per alloc+free pair of ``run``."""
    rounds = max(1, objects // bulk)
    best = min(timeit.repeat(lambda: run(rounds), number=1, repeat=repeat))
    return best / (rounds * bulk) * 1e9


def bulk_table(sizes=BULK_SIZES, impls=PY_IMPLS, inside_jit: bool = False,
               objects: int = 1 << 15, repeat: int = 5) -> dict[str, dict[int, float]]:
    """ns per alloc+free pair for every implementation and bulk size."""
    return {impl: {b: time_per_object(make_round(impl, b, inside_jit), b, objects, repeat)
                   for b in sizes} for impl in impls}


# ---- a stream of large batches: NEW against PARTIAL (the seed's claim) -----------------------
@nb.njit(cache=True)
def slab_stream_array(h, cid, n, outs, flags):
    """Inside @njit: one ``kmem_cache_alloc_array`` of ``n`` objects into each row of
    ``outs``; the total allocated."""
    got = 0
    for b in range(outs.shape[0]):
        got += sjit.kmem_cache_alloc_array(h, cid, n, outs[b], flags, 0, GFP_ATOMIC)
    return got


_EVICT: list[np.ndarray] = []


def llc_bytes() -> int:
    """This machine's last-level cache in bytes (from sysfs; 32 MiB if it does not say)."""
    best = 0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        txt = f.read_text().strip().upper()
        try:
            best = max(best, int(txt.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(txt[-1], 0))
        except ValueError:
            pass
    return best or 32 << 20


def evict_caches() -> None:
    """Write a buffer of twice the last-level cache (at least 64 MiB, kept for the next
    call), so that what came before is cold."""
    if not _EVICT:
        _EVICT.append(np.zeros(max(2 * llc_bytes(), 64 << 20) // 8, np.int64))
    _EVICT[0][::8] += 1                        # one store per 64-byte line


def array_stream(mode: str, slabs: int, batches: int, inside_jit: bool = False,
                 memory: str = "64M", cold: bool = False) -> Callable[[], float]:
    """A function timing one stream of ``batches`` array allocations of ``slabs`` slabs'
    worth each, through the facade (or inside @njit through ``numslab.jit``); it returns ns
    per object of the allocations alone.

    Each batch takes slabs no earlier batch touched, as a stream of requests would: NEW
    carves fresh slabs, PARTIAL takes whole partial slabs of a fragmented cache (every slab
    of it has one object in use, so a batch of ``slabs`` slabs gets ``slabs * (per - 1)``
    objects and walks their free lists). Between streams everything is freed and the cache
    is made fragmented again (untimed).

    ``cold`` sweeps the caches after that set-up, as a stream would find slabs freed long
    before: the seed's case for NEW, whose fresh slabs need no free list, against PARTIAL,
    whose free-list walk then misses the cache on every object. Without it the partial slabs
    were written just before, and their free lists are warm."""
    sa, c = new_bench_cache(memory=memory)
    per = c.objs_per_slab
    flags = {"new": SLAB_ARRAY_ALLOC_NEW, "partial": SLAB_ARRAY_ALLOC_PARTIAL}[mode]
    n = slabs * per if mode == "new" else slabs * (per - 1)
    ask = n + 1 if mode == "new" else n        # the RFC's NEW acts on more than a slab's
    rows = np.zeros((batches, ask), np.int64)  # worth: asked n + 1, it gives the n whole
    outs = list(rows)                          # one array per batch for the facade
    keep = np.zeros(0, np.int64)
    h, cid = sa.handle, c.id

    def prepare() -> None:
        nonlocal keep
        if mode == "partial":                  # batches * slabs + 1 slabs, one object kept
            objs = c.alloc_bulk((batches * slabs + 1) * per)
            keep = objs[::per].copy()
            c.free_bulk(np.delete(objs, np.arange(0, len(objs), per)))
        if cold:
            evict_caches()
        rows[:] = 0                            # the arrays' pages are touched before timing

    def stream() -> float:
        prepare()
        alloc = sa.kmem_cache_alloc_array
        alloc(c, GFP_ATOMIC, 0, outs[0], flags)
        t0 = timeit.default_timer()
        if inside_jit:
            got = slab_stream_array(h, cid, ask, rows, flags)
        else:
            got = 0
            for o in outs:
                got += alloc(c, GFP_ATOMIC, ask, o, flags)
        t = timeit.default_timer() - t0
        if got != n * batches:                 # pragma: no cover - a setup error
            raise RuntimeError(f"{mode}: got {got} of {n * batches}")
        for o in outs:
            c.free_bulk(o[:n])
        if len(keep):
            c.free_bulk(keep)
        sa.kmem_cache_shrink(c)
        return t / (batches * n) * 1e9

    stream()                                   # compile and warm every path once
    return stream




# ---- the single alloc+free pair inside @njit (issue 11) ---------------------------------------
# The loop holds SINGLE_LIVE live objects; each round frees one chosen at random, allocates a
# new one in its place and writes a word into it. The peer is a FIFO ring of free indices, so
# that the compiler cannot fold a free and the next alloc together (a bare LIFO stack pair is
# folded away to nothing). Every loop draws its victims from the same xorshift64 sequence and
# returns the sum of the objects it allocated, so no round can be optimised away.
#: Live objects of the single-pair loop.
SINGLE_LIVE = 256
#: Free indices the FIFO ring holds (a power of two of at least 4096), and records it hands out.
RING_CAPACITY = 4096
#: Sheaf capacity of the ``slab-sheaves`` single-pair cache.
SINGLE_SHEAF_CAPACITY = 32
#: Seed of the xorshift64 generator (Marsaglia's example seed).
SINGLE_SEED = 88172645463325252
#: Rounds of one timed single-pair run.
SINGLE_ROUNDS = 1 << 16
#: The single-pair implementations: the peer first (the ratios' reference).
SINGLE_IMPLS = ("fifo-ring", "slab", "slab-sheaves")


@nb.njit(cache=True)
def ring_single_pair(ring, pos, records, live, rounds, seed):
    """The peer: a FIFO ring of free record indices, written in the loop. ``ring`` holds every
    free index (``len(ring)`` a power of two, all free on entry and on return), ``pos[0]`` is
    its head, ``records`` the preallocated ``int64[len(ring), words]`` records, ``live`` the
    live set's scratch. Returns the sum of the indices allocated in the rounds."""
    mask = ring.shape[0] - 1
    head = pos[0]
    tail = head + ring.shape[0]
    n = live.shape[0]
    for k in range(n):
        idx = ring[head & mask]
        head += 1
        records[idx, 0] = k
        live[k] = idx
    x = np.uint64(seed)
    acc = 0
    for r in range(rounds):
        x ^= x << np.uint64(13)
        x ^= x >> np.uint64(7)
        x ^= x << np.uint64(17)
        j = (np.int64(x >> np.uint64(32)) * n) >> 32
        ring[tail & mask] = live[j]            # free the victim at the tail ...
        tail += 1
        idx = ring[head & mask]                # ... allocate at the head
        head += 1
        records[idx, 0] = r
        live[j] = idx
        acc += idx
    for k in range(n):
        ring[tail & mask] = live[k]
        tail += 1
    pos[0] = head
    return acc


@nb.njit(cache=True)
def slab_single_pair(h, cid, live, rounds, seed):
    """The same loop through ``numslab.jit.kmem_cache_alloc``/``kmem_cache_free`` on cache
    ``cid``, the word written through ``numslab.jit.arena``; every object is freed before it
    returns. Returns the sum of the addresses allocated in the rounds."""
    mem = sjit.arena(h).view(np.int64)
    n = live.shape[0]
    for k in range(n):
        obj = sjit.kmem_cache_alloc(h, cid, 0, GFP_ATOMIC)
        if obj == 0:
            raise MemoryError("slab_single_pair: out of memory")
        mem[obj >> 3] = k
        live[k] = obj
    x = np.uint64(seed)
    acc = 0
    for r in range(rounds):
        x ^= x << np.uint64(13)
        x ^= x >> np.uint64(7)
        x ^= x << np.uint64(17)
        j = (np.int64(x >> np.uint64(32)) * n) >> 32
        sjit.kmem_cache_free(h, cid, live[j], 0)
        obj = sjit.kmem_cache_alloc(h, cid, 0, GFP_ATOMIC)
        if obj == 0:
            raise MemoryError("slab_single_pair: out of memory")
        mem[obj >> 3] = r
        live[j] = obj
        acc += obj
    for k in range(n):
        sjit.kmem_cache_free(h, cid, live[k], 0)
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


def make_single_pair(impl: str, live: int = SINGLE_LIVE) -> Callable[[int], int]:
    """A function ``run(rounds)`` running the single-pair loop of ``impl`` (one of
    :data:`SINGLE_IMPLS`) for ``rounds`` rounds and returning its sum, warmed up once. Its
    closure holds the state for inspection: ``ring``, ``pos`` and ``records``, or ``h`` (whose
    ``_owner`` is the allocator) and ``cid``."""
    if impl not in SINGLE_IMPLS:
        raise ValueError(f"unknown implementation {impl!r}: one of {SINGLE_IMPLS}")
    slots = np.zeros(live, np.int64)
    if impl == "fifo-ring":
        ring = np.arange(RING_CAPACITY, dtype=np.int64)
        pos = np.zeros(1, np.int64)
        records = np.zeros((RING_CAPACITY, OBJECT_SIZE // 8), np.int64)

        def run(rounds: int) -> int:
            return ring_single_pair(ring, pos, records, slots, rounds, SINGLE_SEED)
    else:
        sa, c = new_bench_cache(sheaf_capacity=SINGLE_SHEAF_CAPACITY
                                if impl == "slab-sheaves" else 0)
        h, cid = sa.handle, c.id

        def run(rounds: int) -> int:
            return slab_single_pair(h, cid, slots, rounds, SINGLE_SEED)
    run(2)
    return run


def single_pair_table(rounds: int = SINGLE_ROUNDS, repeat: int = 5,
                      impls=SINGLE_IMPLS) -> dict[str, float]:
    """ns per round of the single-pair loop for every implementation (best of ``repeat``;
    the set-up and release of the live set are in the timing, 2 * SINGLE_LIVE operations
    against ``2 * rounds``)."""
    runs = {impl: make_single_pair(impl) for impl in impls}
    best = {impl: float("inf") for impl in impls}
    for _ in range(repeat):                     # interleaved: noise hits every impl alike
        for impl, run in runs.items():
            best[impl] = min(best[impl], time_per_object(run, 1, rounds, 1))
    return best


# ---- the cost of one call from Python (issue 11) -------------------------------------------------
#: Objects per call, calls per timed sample.
CALL_BULK = 16
CALL_CALLS = 32
#: The callers: the facade (a plain, gated SlabAllocator), the user's @njit function called
#: through Numba's dispatcher, and the same function through its native entry point.
CALL_IMPLS = ("facade", "njit-call", "njit-fastcall")
CALL_OPS = ("alloc_bulk", "free_bulk")


@nb.njit(cache=True)
def user_alloc_bulk(h, cid, gfp, nr, out):
    """The peer a user writes: ``kmem_cache_alloc_bulk`` through ``numslab.jit``."""
    return sjit.kmem_cache_alloc_bulk(h, cid, nr, out, 0, gfp)


@nb.njit(cache=True)
def user_free_bulk(h, cid, nr, objs):
    """The peer a user writes: ``kmem_cache_free_bulk`` through ``numslab.jit``."""
    sjit.kmem_cache_free_bulk(h, cid, nr, objs, 0)


def make_calls(impl: str, bulk: int = CALL_BULK, calls: int = CALL_CALLS) -> tuple:
    """``(alloc_all, free_all, sa, c, rows)``: ``alloc_all()`` makes ``calls`` allocation
    calls of ``bulk`` objects through ``impl`` (one of :data:`CALL_IMPLS`), one row of
    ``rows`` each, and ``free_all()`` frees them row by row. The cache's sheaves hold every
    object of the rows (``sheaf_capacity = bulk * calls``) and are warmed, so that every call
    is served by the CPU's main sheaf."""
    if impl not in CALL_IMPLS:
        raise ValueError(f"unknown implementation {impl!r}: one of {CALL_IMPLS}")
    sa, c = new_bench_cache(sheaf_capacity=bulk * calls)
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
    """ns per ``kmem_cache_alloc_bulk`` and per ``kmem_cache_free_bulk`` call of ``bulk``
    objects through ``impl``: best of ``repeat`` samples of ``calls`` calls each (the Python
    loop over the rows is in every implementation's figure)."""
    return call_cost_table(bulk, calls, repeat, (impl,))[impl]


def call_cost_table(bulk: int = CALL_BULK, calls: int = CALL_CALLS, repeat: int = 50,
                    impls=CALL_IMPLS) -> dict[str, dict[str, float]]:
    """:func:`call_cost` of every implementation, samples interleaved."""
    made = {impl: make_calls(impl, bulk, calls)[:2] for impl in impls}
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


# ---- compile time (issue 11): the whole public API, and a user's own function ------------------
#: Records of the typed cache of :func:`exercise_public_api`.
API_RECORD = np.dtype([("key", np.int64), ("value", np.float64)])


def _api_py_ctor(memory: np.ndarray, addr: int) -> None:
    """A Python constructor (for :func:`exercise_public_api`)."""
    memory[addr] = 0x5A


@nb.njit(cache=True)
def _api_jit_ctor(memory, addr):
    """A jitted constructor (for :func:`exercise_public_api`)."""
    memory[addr] = 0xA5


@nb.njit(cache=True)
def jit_api_round(h, cid, out):
    """Every ``numslab.jit`` function once, on cache ``cid`` (no constructor) and kmalloc;
    everything allocated is freed. Returns the number of checks that held (7)."""
    ok = 0
    a = sjit.kmem_cache_alloc(h, cid)
    b = sjit.kmem_cache_alloc_node(h, cid, -1)
    mem = sjit.arena(h)
    mem[a] = 1
    if sjit.is_live(h, cid, a) and sjit.is_live(h, cid, b) and mem[a] == 1:
        ok += 1
    sjit.kmem_cache_free(h, cid, a)
    sjit.kmem_cache_free(h, cid, b)
    if not sjit.is_live(h, cid, a):
        ok += 1
    n = out.shape[0]
    if sjit.kmem_cache_alloc_bulk(h, cid, n, out) == n:
        ok += 1
    sjit.kmem_cache_free_bulk(h, cid, n, out)
    got = sjit.kmem_cache_alloc_array(h, cid, n, out, 0)
    if got > 0:
        ok += 1
    sjit.kmem_cache_free_array(h, cid, got, out)
    small = sjit.kmalloc(h, 100)
    large = sjit.kmalloc(h, 10000)
    if small != 0 and large != 0 and sjit.kmalloc(h, 0) == 16:
        ok += 1
    sjit.kfree(h, small)
    sjit.kfree(h, large)
    for i in range(n):
        out[i] = sjit.kmalloc(h, 8 << (i % 8))
    if sjit.is_live(h, -1, out[0]):
        ok += 1
    sjit.kfree_bulk(h, n, out)
    if not sjit.is_live(h, -1, out[0]):
        ok += 1
    return ok


def exercise_public_api() -> numslab.SlabAllocator:
    """Call every public operation once: the module-level API, every ``SlabAllocator`` and
    ``KmemCache`` method (caches plain, with sheaves, typed, with a Python and a jitted
    constructor; single, kmalloc, bulk, every array mode, the prefilled-sheaf API, records and
    store, pages, shrink, validate, slabinfo and the other reports) and every ``numslab.jit``
    function from inside one @njit function. In a fresh interpreter with an empty Numba cache
    this is what compiling the whole public API costs (asv ``timeraw_cold_public_api``).

    Returns the allocator, every cache but kmalloc's destroyed, nothing live."""
    from numslab.flags import GFP_KERNEL
    a = numslab.kmalloc(64)                              # the module-level API
    z = numslab.kzalloc(24)
    assert numslab.ksize(z) >= 24
    numslab.kfree(a)
    numslab.kfree(z)
    c = numslab.kmem_cache_create("api_module_level", 32)
    numslab.kmem_cache_free(c, numslab.kmem_cache_alloc(c))
    numslab.kmem_cache_free(c, numslab.kmem_cache_alloc_node(c, GFP_KERNEL, 0))
    numslab.kmem_cache_shrink(c)
    numslab.kmem_cache_destroy(c)
    numslab.free_pages(numslab.alloc_pages(0), 0)
    numslab.slabinfo()
    numslab.buddyinfo()
    numslab.validate()

    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=2, memory="16M")
    sa.populate()
    sa.set_cpu(0)
    sa.cpu_to_node(1)
    plain = sa.kmem_cache_create("api_plain", 200, flags=SLAB_HWCACHE_ALIGN)
    shv = sa.kmem_cache_create("api_sheaves", 64, sheaf_capacity=16)
    rec = sa.kmem_cache_create("api_records", 0, dtype=API_RECORD)
    pyc = sa.kmem_cache_create("api_py_ctor", 48, ctor=_api_py_ctor)
    jtc = sa.kmem_cache_create("api_jit_ctor", 48, ctor=_api_jit_ctor)
    made = [plain, shv, rec, pyc, jtc]
    assert sa.find_cache("api_plain") is plain and set(made) <= set(sa.caches)
    # single objects, kmalloc
    for c in made:
        sa.kmem_cache_free(c, sa.kmem_cache_alloc(c))
        sa.kmem_cache_free(c, sa.kmem_cache_alloc_node(c, GFP_KERNEL, 1), cpu=1)
    small, large, zero = sa.kmalloc(100), sa.kmalloc(20000), sa.kzalloc(10)
    assert sa.ksize(small) == 128 and sa.ksize(large) >= 20000 and sa.ksize(zero) == 16
    for x in (small, large, zero):
        sa.kfree(x)
    # bulk and the array modes
    out = np.zeros(40, np.int64)
    for c in (plain, shv):
        n = sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, len(out), out)
        sa.kmem_cache_free_bulk(c, n, out)
        for flags in (0, SLAB_ARRAY_ALLOC_LOCAL, SLAB_ARRAY_ALLOC_PARTIAL, SLAB_ARRAY_ALLOC_NEW,
                      SLAB_ARRAY_ALLOC_LOCAL | SLAB_ARRAY_ALLOC_FULL_COUNT):
            n = sa.kmem_cache_alloc_array(c, GFP_KERNEL, len(out), out, flags)
            sa.kmem_cache_free_array(c, n, out)
    for i in range(len(out)):
        out[i] = sa.kmalloc(8 << (i % 11))
    sa.kfree_bulk(len(out), out)
    # the KmemCache conveniences, records and store
    plain.free(plain.alloc())
    plain.free_bulk(plain.alloc_bulk(20))
    addrs = rec.alloc_bulk(8)
    vals = np.zeros(8, API_RECORD)
    vals["key"] = np.arange(8)
    rec.store(addrs, vals)
    rec.store(addrs[:1], vals[3])
    assert rec.records(addrs)["key"][0] == 3 and rec.view[int(addrs[1])]["key"] == 1
    rec.free_bulk(addrs)
    # prefilled sheaves
    sheaf = sa.kmem_cache_prefill_sheaf(shv, GFP_KERNEL, 8)
    assert sa.kmem_cache_sheaf_size(sheaf) >= 8 and sa.sheaf_capacity_of(sheaf) >= 8
    obj = sa.kmem_cache_alloc_from_sheaf(shv, GFP_KERNEL, sheaf)
    sheaf = sa.kmem_cache_refill_sheaf(shv, GFP_KERNEL, sheaf, 40)     # grows: oversize
    sa.kmem_cache_return_sheaf(shv, GFP_KERNEL, sheaf)
    sa.kmem_cache_free(shv, obj)
    # numslab.jit, from inside one @njit function
    h = sa.handle
    for c in (plain, shv):
        assert jit_api_round(h, c.id, out[:16]) == 7
    # pages and the reports
    p = sa.alloc_pages(2)
    sa.free_pages(p, 2)
    sa.buddyinfo()
    sa.zoneinfo()
    sa.free_pages_count()
    sa.pcp_pages_count()
    sa.slabinfo()
    for c in made:
        repr(c)
        c.sysfs()
        c.stats
        c.stats_per_cpu()
        c.partial_list(0)
        c.total_objects_per_node()
        c.slabs_cpu_partial
        c.remote_node_defrag_ratio = c.remote_node_defrag_ratio
        assert c.live_objects == 0
        c.shrink()
        sa.kmem_cache_shrink(c)
        sa.validate(c)
    sa.drain_all_pages()
    sa.check_invariants()
    for c in made:
        sa.kmem_cache_destroy(c)
    sa.validate()
    return sa


# A user's small simulation, in three variants (single objects, bulk, kmalloc), each written
# on numslab.jit and on free-index stacks: the subjects of the compile-time benchmark
# (asv ``timeraw_user_compile``). They are plain functions: the benchmark compiles them with
# ``numba.njit(cache=False)`` in a fresh interpreter, so they never come from a cache. The
# numslab variants take the allocator's memory as int64 words (``sa.memory.view(np.int64)``)
# rather than view ``numslab.jit.arena(h)`` inside: Numba lowers ``ndarray.view`` by compiling
# a helper of its own, ~0.4 s of the first compile in a process, which is Numba's, not
# numslab's.
def user_sim_single(h, cid, mem, live, rounds):
    """Keep ``len(live)`` objects; each step replaces one and reads its neighbour's word
    (``mem``: the allocator's memory as int64 words)."""
    n = live.shape[0]
    for k in range(n):
        live[k] = sjit.kmem_cache_alloc(h, cid)
        mem[live[k] >> 3] = k
    acc = 0
    for r in range(rounds):
        j = (r * 7919) % n
        sjit.kmem_cache_free(h, cid, live[j])
        obj = sjit.kmem_cache_alloc(h, cid)
        mem[obj >> 3] = r
        live[j] = obj
        acc += mem[live[(j + 1) % n] >> 3]
    for k in range(n):
        sjit.kmem_cache_free(h, cid, live[k])
    return acc


def user_sim_single_stack(stack, top, records, live, rounds):
    """:func:`user_sim_single` on a free-index stack of ``records`` rows."""
    t = top[0]
    n = live.shape[0]
    for k in range(n):
        t -= 1
        live[k] = stack[t]
        records[live[k], 0] = k
    acc = 0
    for r in range(rounds):
        j = (r * 7919) % n
        stack[t] = live[j]                     # free, then alloc: LIFO, the same index
        obj = stack[t]
        records[obj, 0] = r
        live[j] = obj
        acc += records[live[(j + 1) % n], 0]
    for k in range(n):
        stack[t] = live[k]
        t += 1
    top[0] = t
    return acc


def user_sim_bulk(h, cid, mem, batch, rounds):
    """Each step allocates a batch, writes and reads a word of every object, frees it."""
    n = batch.shape[0]
    acc = 0
    for r in range(rounds):
        got = sjit.kmem_cache_alloc_bulk(h, cid, n, batch)
        for i in range(got):
            mem[batch[i] >> 3] = r + i
        for i in range(got):
            acc += mem[batch[i] >> 3]
        sjit.kmem_cache_free_bulk(h, cid, got, batch)
    return acc


def user_sim_bulk_stack(stack, top, records, batch, rounds):
    """:func:`user_sim_bulk` on a free-index stack of ``records`` rows."""
    t = top[0]
    n = batch.shape[0]
    acc = 0
    for r in range(rounds):
        got = 0
        if t >= n:
            t -= n
            for i in range(n):
                batch[i] = stack[t + i]
            got = n
        for i in range(got):
            records[batch[i], 0] = r + i
        for i in range(got):
            acc += records[batch[i], 0]
        for i in range(got):
            stack[t + i] = batch[i]
        t += got
    top[0] = t
    return acc


def user_sim_kmalloc(h, mem, sizes, addrs, rounds):
    """Each step kmallocs one object of every size, writes a word, reads it back, kfrees."""
    acc = 0
    for r in range(rounds):
        for i in range(sizes.shape[0]):
            a = sjit.kmalloc(h, sizes[i])
            mem[a >> 3] = r + i
            addrs[i] = a
        for i in range(sizes.shape[0]):
            acc += mem[addrs[i] >> 3]
            sjit.kfree(h, addrs[i])
    return acc


def user_sim_kmalloc_stack(stacks, tops, records, sizes, addrs, rounds):
    """:func:`user_sim_kmalloc` on one free-index stack per power-of-two size class
    (``stacks[c]`` for ``8 << c`` bytes; an address is ``c * capacity + index``)."""
    cap = stacks.shape[1]
    acc = 0
    for r in range(rounds):
        for i in range(sizes.shape[0]):
            c = 0
            while (8 << c) < sizes[i]:
                c += 1
            tops[c] -= 1
            idx = stacks[c, tops[c]]
            records[c, idx] = r + i
            addrs[i] = c * cap + idx
        for i in range(sizes.shape[0]):
            c, idx = addrs[i] // cap, addrs[i] % cap
            acc += records[c, idx]
            stacks[c, tops[c]] = idx
            tops[c] += 1
    return acc


USER_SIM_VARIANTS = ("single", "bulk", "kmalloc")
USER_SIM_IMPLS = ("numslab", "stack")
USER_SIMS = {("single", "numslab"): user_sim_single, ("single", "stack"): user_sim_single_stack,
             ("bulk", "numslab"): user_sim_bulk, ("bulk", "stack"): user_sim_bulk_stack,
             ("kmalloc", "numslab"): user_sim_kmalloc, ("kmalloc", "stack"): user_sim_kmalloc_stack}
#: Sizes of the kmalloc simulation (one of every kmalloc class up to 8 KiB).
USER_SIM_SIZES = (8, 16, 24, 60, 100, 200, 256, 500, 1000, 2048, 4000, 8192)


def user_sim(variant: str, impl: str) -> tuple[Callable, tuple]:
    """The plain Python function of a simulation and example arguments for it (a fresh
    allocator for numslab: its handle keeps it alive)."""
    fn = USER_SIMS[variant, impl]
    cap = 1 << 10
    if impl == "numslab":
        sa, c = new_bench_cache(memory="16M")
        h, mem = sa.handle, sa.memory.view(np.int64)
        if variant == "single":
            return fn, (h, c.id, mem, np.zeros(64, np.int64), 1)
        if variant == "bulk":
            return fn, (h, c.id, mem, np.zeros(16, np.int64), 1)
        sizes = np.array(USER_SIM_SIZES, np.int64)
        return fn, (h, mem, sizes, np.zeros(len(sizes), np.int64), 1)
    stack, top = np.arange(cap, dtype=np.int64), np.array([cap], np.int64)
    records = np.zeros((cap, OBJECT_SIZE // 8), np.int64)
    if variant == "single":
        return fn, (stack, top, records, np.zeros(64, np.int64), 1)
    if variant == "bulk":
        return fn, (stack, top, records, np.zeros(16, np.int64), 1)
    classes = 11                                   # 8 B .. 8 KiB
    stacks = np.tile(np.arange(cap, dtype=np.int64), (classes, 1))
    sizes = np.array(USER_SIM_SIZES, np.int64)
    return fn, (stacks, np.full(classes, cap, np.int64), np.zeros((classes, cap), np.int64),
                sizes, np.zeros(len(sizes), np.int64), 1)


# ---- the LLVM IR of a loop: reference counts and slow paths ------------------------------------
_IR_DEFINE = re.compile(r'^define\b[^@]*@("?)([^"(\s]+)\1\(')
_IR_LABEL = re.compile(r'^("?)([-\w$.]+)\1:')
_IR_TARGET = re.compile(r'label %("?)([-\w$.]+)\1')
_IR_CALL = re.compile(r'\b(?:call|invoke)\b[^@%]*?([@%])("?)([-\w$.]+)\2\(')


def fresh_llvm(func: Any, *args: Any) -> tuple[str, str]:
    """``(ir, name)``: the optimised LLVM IR of ``func`` compiled afresh for the types of
    ``args`` (Numba does not show the IR of code loaded from its cache) and the symbol of its
    native function. ``func`` is an @njit dispatcher (recompiled from its Python function with
    its options) or a plain function (compiled as ``@njit`` would)."""
    if isinstance(func, nb.core.registry.CPUDispatcher):
        py, opts = func.py_func, dict(func.targetoptions)
    else:
        py, opts = func, {"nopython": True}
    d = nb.core.registry.CPUDispatcher(py, targetoptions=opts)
    sig = tuple(nb.typeof(a) for a in args)
    d.compile(sig)
    cres = d.overloads[sig]
    return d.inspect_llvm(sig), cres.fndesc.llvm_func_name


def ir_functions(ir: str) -> dict[str, list[tuple[str, list[str]]]]:
    """The functions defined in an LLVM module's text: name -> its basic blocks, each
    ``(label, instructions)`` (the entry block, when unlabelled, is ``"<entry>"``)."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    cur = None
    for line in ir.splitlines():
        m = _IR_DEFINE.match(line)
        if m:
            cur = m.group(2)
            out[cur] = [("<entry>", [])]
        elif cur is not None and line.startswith("}"):
            cur = None
        elif cur is not None:
            m = _IR_LABEL.match(line)
            if m:
                out[cur].append((m.group(2), []))
            elif line.strip():
                out[cur][-1][1].append(line.strip())
    return out


def loop_blocks(blocks: list[tuple[str, list[str]]]) -> set[str]:
    """Labels of the blocks that lie on a cycle of the control-flow graph (in a loop)."""
    succ = {label: [m.group(2) for ins in body for m in _IR_TARGET.finditer(ins)]
            for label, body in blocks}
    inside = set()
    for start in succ:
        seen, todo = set(), list(succ[start])
        while todo:
            b = todo.pop()
            if b == start:
                inside.add(start)
                break
            if b not in seen and b in succ:
                seen.add(b)
                todo += succ[b]
    return inside


def _callees(body: list[str]) -> list[str]:
    """Functions called by these instructions (``"<indirect>"`` for a call through a
    pointer: the engine's units are called through the ``numslab_units`` table)."""
    out = []
    for ins in body:
        m = _IR_CALL.search(ins)
        if m:
            out.append(m.group(3) if m.group(1) == "@" else "<indirect>")
    return out


def loop_calls(ir: str, name: str) -> list[str]:
    """Every call made in the loops of function ``name`` of module ``ir``, including the
    calls made, at any depth, by the module's functions called there."""
    funcs = ir_functions(ir)
    blocks = funcs[name]
    inside = loop_blocks(blocks)
    calls = [c for label, body in blocks if label in inside for c in _callees(body)]
    seen: set[str] = set()
    todo = [c for c in calls if c in funcs]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        more = [c for _, body in funcs[f] for c in _callees(body)]
        calls += more
        todo += [c for c in more if c in funcs]
    return calls


def refcount_calls_in_loops(func: Any, *args: Any) -> list[str]:
    """The Numba runtime calls (``NRT_incref``, ``NRT_decref``, ...) that the loops of
    ``func`` compiled for ``args`` make: [] for a loop with no reference-count traffic."""
    ir, name = fresh_llvm(func, *args)
    return [c for c in loop_calls(ir, name) if c.startswith("NRT_")]


_ENGINE_SYMBOL = re.compile(r"7numslab6engine(\d+)")


def engine_symbol(symbol: str) -> tuple[str, str] | None:
    """``(module, function)`` of a mangled symbol of ``numslab.engine.<module>.<function>``,
    else None."""
    m = _ENGINE_SYMBOL.search(symbol)
    if not m:
        return None
    i = m.end()
    module = symbol[i:i + int(m.group(1))]
    i += int(m.group(1))
    n = re.match(r"\d+", symbol[i:])
    if not n:
        return None
    i += n.end()
    return module, symbol[i:i + int(n.group())]


def units_defined(ir: str) -> list[str]:
    """The engine's units (its compiled-once operations and slow paths, such as
    ``slab_alloc_slow``, ``alloc_bulk_slab``, ``free_bulk_raw``, ``replace_empty_main``)
    whose code a module holds: a user's function must reach them through the ``numslab_units``
    table only, so this is [] for it."""
    from numslab.engine.native import UNITS
    names = {(u.__module__.rsplit(".", 1)[1], u.__name__) for u in UNITS}
    return [f for f in ir_functions(ir) if engine_symbol(f) in names]


# ---- fresh interpreters: cold start and a user's compile (shared with asv's timeraw) -----------
#: Set-up that gives a fresh interpreter (and its children) an empty Numba cache of its own,
#: removed when it exits; it runs before anything imports Numba.
FRESH_CACHE_SETUP = """
import atexit, os, shutil, sys, tempfile
_cache = tempfile.mkdtemp(prefix="numslab-cold-")
atexit.register(shutil.rmtree, _cache, True)
os.environ["NUMBA_CACHE_DIR"] = _cache
assert "numba" not in sys.modules
"""
#: The README's main job, and the packets of its cold run (the README's command makes 200000).
MAIN_JOB = Path(__file__).resolve().parents[2] / "examples" / "packet_pipeline.py"
MAIN_JOB_PACKETS = 2000
#: The cold cases of issue 11: name -> (timed statement, set-up after FRESH_CACHE_SETUP).
#: ``numba-floor`` is the reference: what importing Numba and compiling one trivial function
#: costs any Numba package.
COLD_CASES = {
    "numba-floor": ("import numba, numpy\n"
                    "numba.njit(lambda a: a[0])(numpy.zeros(1))\n", ""),
    "first-kmalloc": ("import numslab\na = numslab.kmalloc(64)\nnumslab.kfree(a)\n", ""),
    "public-api": ("from numslab.tools import bench\nbench.exercise_public_api()\n", ""),
    "main-job": (f"subprocess.run([sys.executable, {str(MAIN_JOB)!r}, '--packets', "
                 f"'{MAIN_JOB_PACKETS}'], check=True, stdout=subprocess.DEVNULL, "
                 f"stderr=subprocess.DEVNULL)\n", "import subprocess\n"),
}
#: Issue 11's limits in seconds (the main job's is for its whole command).
COLD_LIMITS = {"first-kmalloc": 10.0, "public-api": 60.0, "main-job": 60.0}
_TIMED_CHILD = '''
from timeit import timeit, default_timer
print(repr(timeit(stmt={stmt!r}, setup={setup!r}, number=1, timer=default_timer)))
'''


def cold_case_code(case: str) -> tuple[str, str]:
    """``(statement, set-up)`` of cold case ``case`` (see :data:`COLD_CASES`), the set-up
    starting with :data:`FRESH_CACHE_SETUP`."""
    stmt, setup = COLD_CASES[case]
    return stmt, FRESH_CACHE_SETUP + setup


def time_in_fresh_interpreter(stmt: str, setup: str = "", timeout: float = 900) -> float:
    """Seconds that ``stmt`` takes once in a fresh interpreter, after ``setup`` (untimed),
    as asv's ``timeraw`` benchmarks measure."""
    code = _TIMED_CHILD.format(stmt=stmt, setup=setup)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"the timed interpreter failed:\n{p.stderr}")
    return float(p.stdout.strip().splitlines()[-1])


def cold_start(case: str) -> float:
    """Seconds of cold case ``case`` in a fresh interpreter with an empty Numba cache."""
    return time_in_fresh_interpreter(*cold_case_code(case))


_RUN_ALL_SIMS = """
import numba
from numslab.tools import bench
for (variant, impl) in bench.USER_SIMS:
    fn, args = bench.user_sim(variant, impl)
    numba.njit(cache=False)(fn)(*args)
"""


def warm_user_sims() -> None:
    """Run every user simulation once in a fresh interpreter sharing this process's Numba
    cache, so that numslab's kernels (its units and ``numslab.jit``'s inlined paths for these
    argument types) are in the cache."""
    subprocess.run([sys.executable, "-c", _RUN_ALL_SIMS], check=True, capture_output=True)


def user_compile_code(variant: str, impl: str) -> tuple[str, str]:
    """``(statement, set-up)`` compiling (not running) the user's simulation ``variant`` on
    ``impl`` with ``cache=False``. The set-up is the same for both impls: numslab imported, an
    allocator made (kernels loaded from the cache), one trivial function compiled."""
    setup = f"""
import numba
from numslab.tools import bench
bench.user_sim("single", "numslab")
numba.njit(cache=False)(lambda x: x + 1)(1)
fn, args = bench.user_sim({variant!r}, {impl!r})
f = numba.njit(cache=False)(fn)
sig = tuple(numba.typeof(a) for a in args)
"""
    return "f.compile(sig)\n", setup


def user_compile_table(repeat: int = 3) -> dict[str, dict[str, float]]:
    """Seconds to compile each user simulation on numslab and on stacks (best of
    ``repeat`` fresh interpreters, numslab's cache warmed first)."""
    warm_user_sims()
    best = {v: {i: float("inf") for i in USER_SIM_IMPLS} for v in USER_SIM_VARIANTS}
    for _ in range(repeat):
        for v in USER_SIM_VARIANTS:
            for i in USER_SIM_IMPLS:
                best[v][i] = min(best[v][i],
                                 time_in_fresh_interpreter(*user_compile_code(v, i)))
    return best
