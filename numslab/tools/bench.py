"""Benchmark workloads shared by ``numslab bench`` and the asv suite: the peers numslab is
measured against and the ``slab_bulk_test01`` shape (alloc N, free N, per-object cost).

The peers are what a Python programmer would otherwise use to hand out fixed-size records;
each allocates indices of a preallocated record array:

* ``DequePool`` — a pure-Python pool: a ``collections.deque`` of free indices.
* ``NumpyStack`` — a NumPy free stack: slices of an index array and a top counter.
* ``JitStack`` — a minimal ``@njit`` free-index stack (state: the stack array and a
  one-element top array), callable from Python and from inside ``@njit`` code.
"""
from __future__ import annotations

from collections import deque

import timeit
from pathlib import Path
from typing import Callable

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


@nb.njit(cache=True)
def jit_stack_loop_bulk(stack, top, bulk, rounds, out):
    """Inside @njit: ``rounds`` times, alloc ``bulk`` then free them (slab_bulk_test01)."""
    for _ in range(rounds):
        jit_stack_alloc_bulk(stack, top, bulk, out)
        jit_stack_free_bulk(stack, top, bulk, out)


@nb.njit(cache=True)
def jit_stack_loop_single(stack, top, bulk, rounds, out):
    """Inside @njit: ``rounds`` times, ``bulk`` single allocs then ``bulk`` single frees."""
    for _ in range(rounds):
        for i in range(bulk):
            out[i] = jit_stack_alloc(stack, top)
        for i in range(bulk):
            jit_stack_free(stack, top, out[i])


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


def new_bench_cache(nr_cpus: int = 1, memory: str = "64M", sheaves: bool = False) -> tuple:
    """A fresh allocator and a 256-byte HWCACHE_ALIGN cache (the kernel test's shape), with
    per-CPU sheaves of :data:`SHEAF_CAPACITY` objects if ``sheaves``."""
    sa = numslab.SlabAllocator(nr_cpus=nr_cpus, memory=memory)
    sa.populate()
    cap = {"sheaf_capacity": SHEAF_CAPACITY} if sheaves else {}
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


