"""Benchmark workloads shared by ``numslab bench`` and the asv suite.

The peers numslab is measured against and the ``slab_bulk_test01`` shape (alloc N, free N,
per-object cost).

The peers are what a Python programmer would otherwise use to hand out fixed-size records;
each allocates indices of a preallocated record array:

* ``DequePool`` — a pure-Python pool: a ``collections.deque`` of free indices.
* ``NumpyStack`` — a NumPy free stack: slices of an index array and a top counter.
* ``JitStack`` — a minimal ``@njit`` free-index stack (state: the stack array and a
  one-element top array), callable from Python and from inside ``@njit`` code; inside @njit
  the benchmark loops write its operations in the loop, as a competent Numba user would, so
  that they pay no reference-count traffic.

Issue 11's other speed measures (the single alloc+free pair and the cost of one call) are in
``numslab.tools.singlebench``; compile time and first contact are in
``numslab.tools.coldstart``.
"""
from __future__ import annotations

import timeit
from collections import deque
from itertools import islice, repeat, starmap
from pathlib import Path
from typing import Callable

import numpy as np

import numslab
from numslab import jit as sjit
from numslab.drivers.calls import fastcall
from numslab.engine.native import words_at
from numslab.tools.checkfloor import CheckedStack, checked_alloc_bulk, checked_free_bulk
from numslab.tools.floor import FloorRound
from numslab.tools.floor import addr as floor_addr
from numslab.tools.floor import alloc_bulk as floor_alloc_bulk
from numslab.tools.floor import free_bulk as floor_free_bulk
from numslab.tools.lagbench import LAG, LAG_IMPLS, lag_memory, make_lag_round
from numslab.flags import (GFP_ATOMIC, SLAB_ARRAY_ALLOC_FULL_COUNT, SLAB_ARRAY_ALLOC_LOCAL,
                           SLAB_ARRAY_ALLOC_NEW, SLAB_ARRAY_ALLOC_PARTIAL, SLAB_HWCACHE_ALIGN)
from numslab.tools.toolsjit import tools_jit


class DequePool:
    """Pure Python: ``alloc`` pops free indices from a deque, ``free`` pushes them back.

    The bulk calls are written as a competent Python user writes them: no Python-level loop (the
    pops run in C through ``itertools.starmap``, the pushes through ``deque.extend``; a ``for``
    loop of ``out[i] = pop()`` was 1.1-3.3x slower at bulk 16 to 4096)."""

    def __init__(self, capacity: int) -> None:
        self.free_list = deque(range(capacity))

    def alloc_bulk(self, n: int, out: list) -> int:
        fl = self.free_list
        if len(fl) < n:
            return 0
        out[:n] = starmap(fl.pop, repeat((), n))
        return n

    def free_bulk(self, n: int, objs: list) -> None:
        self.free_list.extend(objs if n == len(objs) else islice(objs, n))

    def alloc(self) -> int:
        return self.free_list.pop()

    def free(self, i: int) -> None:
        self.free_list.append(i)


class ListStack:
    """Pure Python: free indices in a list used as a stack, a batch one slice each way.

    The pool a competent Python user writes when nothing asks for a deque: ``alloc_bulk``
    copies the top ``n`` (in stack order, as the array stacks) with one slice and deletes
    them, ``free_bulk`` extends; 4-5x faster than :class:`DequePool` per object from bulk 250
    on (h22's trial: the deque pops one object at a time)."""

    def __init__(self, capacity: int) -> None:
        self.free_list = list(range(capacity))

    def alloc_bulk(self, n: int, out: list) -> int:
        fl = self.free_list
        if len(fl) < n or n <= 0:               # (fl[-0:] is the whole list)
            return 0
        out[:n] = fl[-n:]
        del fl[-n:]
        return n

    def free_bulk(self, n: int, objs: list) -> None:
        self.free_list.extend(objs if n == len(objs) else objs[:n])

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
        """``n`` indices into ``out`` (int64[>= n]): ``n``, or 0 when fewer are free."""
        t = self.top - n
        if t < 0:
            return 0
        self.top = t
        out[:n] = self.stack[t:t + n]
        return n

    def free_bulk(self, n: int, objs: np.ndarray) -> None:
        """Push ``objs[:n]`` (int64[>= n]) back, unchecked."""
        t = self.top
        self.stack[t:t + n] = objs[:n]
        self.top = t + n

    def alloc(self) -> int:
        if self.top == 0:
            return -1
        self.top -= 1
        return int(self.stack[self.top])

    def free(self, i: int) -> None:
        self.stack[self.top] = i
        self.top += 1


# Unsigned indices: ``stack[t + i]`` with a signed index carries Numba's negative-index
# wraparound (a compare and a select per element) and does not vectorise; with ``np.uint64``
# indices the copy loops vectorise. Measured against a slice assignment (which allocates a
# temporary: NRT calls in the loop) and a loop over a view (an incref/decref per view) at bulk
# 16, 64, 250 and 4096, inside @njit: old 0.90-1.06 ns per pair, slice 0.63-1.33, view
# 0.20-0.44, unsigned 0.15-0.38 (best or tied-best at every size but 64, where the view's 0.20
# vs 0.23 is within the noise), so the unsigned form is used everywhere. At bulk 16 its time
# differs between processes running the same cached code (0.36-0.39 ns in some, 1.07-1.10 in
# others, whatever the arrays' addresses), never above the signed form's 0.99-1.06.
# ``range`` stays signed (a negative count is an empty loop, as before).
@tools_jit()
def jit_stack_alloc_bulk(stack, top, n, out):
    """Pop ``n`` indices into ``out``; all or nothing."""
    t = top[0]
    if t < n:
        return 0
    b = np.uint64(t - n)
    for i in range(n):
        out[np.uint64(i)] = stack[b + np.uint64(i)]
    top[0] = t - n
    return n


@tools_jit()
def jit_stack_free_bulk(stack, top, n, objs):
    """Push ``objs[:n]`` back."""
    t = top[0]
    b = np.uint64(t)
    for i in range(n):
        stack[b + np.uint64(i)] = objs[np.uint64(i)]
    top[0] = t + n


@tools_jit()
def jit_stack_alloc(stack, top):
    """Pop one index (-1 if empty)."""
    t = top[0]
    if t == 0:
        return -1
    top[0] = t - 1
    return stack[t - 1]


@tools_jit()
def jit_stack_free(stack, top, i):
    """Push one index."""
    stack[top[0]] = i
    top[0] += 1


class JitStack:
    """A minimal jitted free-index stack.

    Its methods are a convenience (the tests' common interface); the benchmarks call the jitted
    functions on ``stack`` and ``top`` directly, as a user would, not through these wrappers."""

    def __init__(self, capacity: int) -> None:
        self.stack = np.arange(capacity, dtype=np.int64)
        self.top = np.array([capacity], dtype=np.int64)

    def alloc_bulk(self, n: int, out: np.ndarray) -> int:
        """``n`` indices into ``out`` (int64[>= n]): ``n``, or 0 when fewer are free."""
        return jit_stack_alloc_bulk(self.stack, self.top, n, out)

    def free_bulk(self, n: int, objs: np.ndarray) -> None:
        """Push ``objs[:n]`` (int64[>= n]) back, unchecked."""
        jit_stack_free_bulk(self.stack, self.top, n, objs)

    def alloc(self) -> int:
        return jit_stack_alloc(self.stack, self.top)

    def free(self, i: int) -> None:
        jit_stack_free(self.stack, self.top, i)


# ---- the jitted stack inside @njit: what a competent Numba user writes --------------------------
# The stack's operations are written in the loop, its top kept in a local: the loop passes no
# array to another function, so Numba adds no reference-count traffic (a call of
# ``jit_stack_alloc(stack, top)`` from a loop increfs and decrefs both arrays, ~20 ns a pair).
# ``tests/test_bench.py`` checks in the LLVM IR that these loops call no NRT_incref/decref.
@tools_jit()
def jit_stack_loop_bulk(stack, top, bulk, rounds, out):
    """Inside @njit: ``rounds`` times, alloc ``bulk`` then free them (slab_bulk_test01).

    The bulk pop is all or nothing, as :func:`jit_stack_alloc_bulk` (unsigned indices, as
    there)."""
    t = np.uint64(top[0])
    b = np.uint64(bulk)
    for _ in range(rounds):
        if t >= b:                  # (a short stack: nothing taken, nothing given back)
            t -= b
            for i in range(bulk):
                out[np.uint64(i)] = stack[t + np.uint64(i)]
            for i in range(bulk):
                stack[t + np.uint64(i)] = out[np.uint64(i)]
            t += b
    top[0] = np.int64(t)


@tools_jit()
def jit_stack_loop_single(stack, top, bulk, rounds, out):
    """Inside @njit: ``rounds`` times, ``bulk`` single allocs then ``bulk`` single frees.

    An alloc from an empty stack gives -1, as :func:`jit_stack_alloc`; the top an unsigned local
    (0.36-0.56 ns per pair against 0.91-1.16 signed, bulk 16 to 4096)."""
    t = np.uint64(top[0])
    one = np.uint64(1)
    for _ in range(rounds):
        for i in range(bulk):
            if t == 0:
                out[np.uint64(i)] = -1
            else:
                t -= one
                out[np.uint64(i)] = stack[t]
        for i in range(bulk):
            stack[t] = out[np.uint64(i)]
            t += one
    top[0] = np.int64(t)


# ---- numslab inside @njit (users' code) ------------------------------------------------------
@tools_jit()
def slab_loop_bulk(h, cid, bulk, rounds, out):
    """Inside @njit: ``rounds`` times ``kmem_cache_alloc_bulk`` + ``kmem_cache_free_bulk``."""
    for _ in range(rounds):
        sjit.kmem_cache_alloc_bulk(h, cid, bulk, out, 0, GFP_ATOMIC)
        sjit.kmem_cache_free_bulk(h, cid, bulk, out, 0)


@tools_jit()
def slab_loop_single(h, cid, bulk, rounds, out):
    """Inside @njit: ``rounds`` times ``bulk`` single allocations, then ``bulk`` frees."""
    for _ in range(rounds):
        for i in range(bulk):
            out[i] = sjit.kmem_cache_alloc(h, cid, 0, GFP_ATOMIC)
        for i in range(bulk):
            sjit.kmem_cache_free(h, cid, out[i], 0)


@tools_jit()
def slab_warm_up(h, cid, n, tmp):
    """Inside @njit: ``n`` single allocations, then their frees, in order.

    ``slab-warm``'s start: sheaves in the barn, the CPU's main and spare part full."""
    for i in range(n):
        tmp[i] = sjit.kmem_cache_alloc(h, cid, 0, GFP_ATOMIC)
    for i in range(n):
        sjit.kmem_cache_free(h, cid, tmp[i], 0)


@tools_jit()
def slab_loop_array(h, cid, bulk, rounds, out, flags):
    """Inside @njit: ``rounds`` times ``kmem_cache_alloc_array`` + ``kmem_cache_free_array``."""
    for _ in range(rounds):
        n = sjit.kmem_cache_alloc_array(h, cid, bulk, out, flags, 0, GFP_ATOMIC)
        sjit.kmem_cache_free_array(h, cid, n, out, 0)


# ---- the slab_bulk_test01 table -----------------------------------------------------------------
#: Bulk sizes of the kernel's slab_bulk_test01.
BULK_SIZES = (1, 2, 3, 4, 8, 16, 30, 32, 34, 48, 64, 128, 158, 250)
#: The largest bulk size a round takes: the peers' pools hold this many objects.
MAX_BULK = 1 << 16
#: Brouer 2015, kernel SLUB on an i7-4790K at 4 GHz: ns per alloc+free pair (REFERENCE.md).
KERNEL_NS = {1: 11.25, 2: 7.5, 4: 5.0, 8: 4.7, 16: 4.5, 32: 4.7, 64: 5.1, 128: 6.8, 250: 9.3}
#: sk_buff-sized objects on a HWCACHE_ALIGN cache, as the kernel test; 256 bytes here.
OBJECT_SIZE = 256
#: The SLUB generation benchmarked unless told (numslab's default); ``KERNELS`` both.
KERNEL = "7.0"
KERNELS = ("7.0", "6.18")
#: Every generation ``numslab bench --kernel`` takes (7.1 and 7.3: 7.0's rules with the
#: changes ARCHITECTURE's tables name; next: 7.3 with the barn's partial sheaf, which no bulk
#: path takes; the asv suite runs ``KERNELS``).
ALL_KERNELS = ("7.0", "7.1", "7.3", "next", "6.18")
#: Sheaf capacity of the ``slab-sheaves`` cache: the largest bulk size of the table, so that
#: in steady state a batch is served from the CPU's sheaves (6.18's per-CPU object arrays).
SHEAF_CAPACITY = 256
ARRAY_MODES = {"local": SLAB_ARRAY_ALLOC_LOCAL, "partial": SLAB_ARRAY_ALLOC_PARTIAL,
               "new": SLAB_ARRAY_ALLOC_NEW}
#: Implementations called from Python and from inside @njit.
#: ``slab-jit-round`` is a floor, not an API: from Python, one call per round into an @njit
#: function that allocates and frees the batch through ``numslab.jit`` on the sheaves cache
#: (half the crossings of any alloc-then-free API, and no facade).
#: ``floor-7.0`` is a floor too: :mod:`numslab.tools.floor`'s fused prototype of the 7.0 round
#: on the default cache (from Python, one call per round, as ``slab-jit-round``, through
#: :func:`floor_round_at`: an int state address and one array, the facade's kind of entry).
#: ``floor-checks`` is the floor of any allocator that refuses a double free
#: (:mod:`numslab.tools.checkfloor`: the jitted stack made a sparse set; from Python its
#: two functions are called as the jitted stack's are).
#: ``slab-warm`` is ``slab-bulk`` on a cache first warmed by :data:`WARM_OBJECTS` single
#: allocations and frees (:func:`slab_warm_up`), as a cache a program also uses one object at
#: a time: sheaves in the barn, the CPU's main and spare sheaves part full, so a batch
#: spans both (``slab-bulk``'s fresh cache has no spare: its main sheaf goes from empty to
#: the batch and back at 16, and the rest of a larger batch goes to and from the slabs).
PY_IMPLS = ("deque", "list-stack", "numpy-stack", "jit-stack", "slab-single", "slab-bulk",
            "slab-warm", "slab-sheaves", "slab-local", "slab-partial", "slab-new",
            "slab-jit-round", "floor-7.0", "floor-checks")
JIT_IMPLS = ("jit-stack", "jit-stack-single", "slab-single", "slab-bulk", "slab-warm",
             "slab-sheaves", "slab-local", "slab-partial", "slab-new", "floor-7.0",
             "floor-checks") + LAG_IMPLS
#: Objects ``slab-warm``'s cache is warmed with (on 7.0's 28-object sheaves: the main
#: sheaf keeps 8, the spare 28, the barn the rest).
WARM_OBJECTS = 400


# ---- the floor from Python: numslab's kind of entry ------------------------------------------
# From Python the floor gets the entry numslab's facade has: ints (the address of its state)
# and one int64 array (the batch), through the native entry point. Called with its twelve
# arrays (``rounds_floor``), it paid the unboxing of twelve arrays a call, which numslab does
# not pay (20.2 ns per pair at bulk 16, 8.5 at 64, against 8.7 and 5.3 this way, same run). It
# makes one call per round (alloc and free fused, as ``slab-jit-round``), where the API takes
# two. Numba's native entry still unboxes its arguments in Python's C API where numslab's C gate
# reads them directly (at bulk 16 this entry's one call cost more than numslab's two), so
# :func:`bulk_ratio_table` reports the floor from Python as the floor inside @njit plus
# numslab's own per-pair call cost measured in the same run: the floor of an implementation
# with numslab's entry.
@tools_jit()
def floor_round_at(st, bulk, out):
    """One round of :mod:`numslab.tools.floor`'s prototype: ``bulk`` objects allocated and freed.

    The objects are allocated into ``out`` and freed; ``st`` is the address of
    :func:`floor_state`'s words. 0, or -1/-2 when a round failed (as ``rounds_floor``)."""
    w = words_at(st)
    o = floor_addr(out)
    if floor_alloc_bulk(w[0], w[1], w[2], w[3], w[4], w[5], w[6], bulk, o) != bulk:
        return -1
    if floor_free_bulk(w[0], w[1], w[2], w[3], w[4], w[5], bulk, o, w[7], w[8]) != 0:
        return -2
    return 0


def floor_state(fr: FloorRound) -> np.ndarray:
    """The words :func:`floor_round_at` reads: ``fr``'s array addresses, arena limit, scratch.

    ``fr`` must outlive them.

    Returns
    -------
    numpy.ndarray
        int64[9]: the addresses of ``fr``'s arrays (sd, mem, live, g, sheaf, pool, rseq), its
        arena limit and its scratch's (``runs``) address.
    """
    return np.array([fr.sd.ctypes.data, fr.mem.ctypes.data, fr.live.ctypes.data,
                     fr.g.ctypes.data, fr.sheaf.ctypes.data, fr.pool.ctypes.data,
                     fr.rseq.ctypes.data, fr.limit, fr.runs.ctypes.data], np.int64)


def new_bench_cache(nr_cpus: int = 1, memory: str = "64M", sheaves: bool = False,
                    sheaf_capacity: int | None = None, kernel: str = KERNEL,
                    hardened: bool = True, random: bool = True) -> tuple:
    """A fresh allocator of SLUB generation ``kernel`` and a 256-byte HWCACHE_ALIGN cache.

    The kernel test's shape, with per-CPU sheaves of :data:`SHEAF_CAPACITY` objects if ``sheaves``,
    or of ``sheaf_capacity`` objects if that is given (0: the generation's default: none under
    6.18, ``calculate_sheaf_capacity``'s 28 under 7.0); ``hardened``:
    CONFIG_SLAB_FREELIST_HARDENED; ``random``: CONFIG_SLAB_FREELIST_RANDOM."""
    sa = numslab.SlabAllocator(nr_cpus=nr_cpus, memory=memory, kernel=kernel,
                               freelist_hardened=hardened, freelist_random=random)
    sa.populate()
    if sheaf_capacity is None:
        sheaf_capacity = SHEAF_CAPACITY if sheaves else 0
    cap = {"sheaf_capacity": sheaf_capacity} if sheaf_capacity else {}
    return sa, sa.kmem_cache_create("slab_bench_test", OBJECT_SIZE, flags=SLAB_HWCACHE_ALIGN,
                                    **cap)


def make_round(impl: str, bulk: int, inside_jit: bool = False,
               kernel: str = KERNEL) -> Callable[[int], None]:
    """A function ``run(rounds)``: ``rounds`` times, allocate ``bulk`` objects and free them.

    The objects are allocated with ``impl`` (``slab_bulk_test01``'s loop); warmed up once.

    The array modes run with FULL_COUNT, so that every round has ``bulk`` objects: NEW only
    acts on more than a slab's worth (16 objects here), so up to 16 ``slab-new`` is all
    FULL_COUNT top-up, one object at a time."""
    if impl not in PY_IMPLS + JIT_IMPLS:
        raise ValueError(f"unknown implementation {impl!r}: one of {PY_IMPLS + JIT_IMPLS}")
    if not 1 <= bulk <= MAX_BULK:
        raise ValueError(f"bulk {bulk} is not in 1..{MAX_BULK} (the peers' pools)")
    cap = MAX_BULK
    if impl in LAG_IMPLS:               # (an older batch freed: inside @njit only)
        pool = JitStack(max(cap, LAG * bulk)) if impl == "jit-stack-lag" else \
            new_bench_cache(memory=lag_memory(bulk, OBJECT_SIZE), kernel=kernel)
        return make_lag_round(impl, bulk, pool)
    if impl == "floor-7.0":
        fr = FloorRound(bulk)
        if inside_jit:
            run = fr.run
        else:
            packed = floor_state(fr)
            st, out = int(packed.ctypes.data), fr.out
            one = fastcall(floor_round_at, st, bulk, out)

            def run(rounds: int) -> None:
                for _ in range(rounds):
                    one(st, bulk, out)
            run.floor = (fr, packed)    # the arrays at ``st``'s addresses live as long as run
    elif impl == "floor-checks":
        cs, out = CheckedStack(cap), np.zeros(bulk, np.int64)
        if inside_jit:
            def run(rounds: int) -> None:
                cs.run(bulk, rounds, out)
        else:                           # called as the jitted stack's functions are
            a, f = checked_alloc_bulk, checked_free_bulk
            stack, pos, top = cs.stack, cs.pos, cs.top

            def run(rounds: int) -> None:
                for _ in range(rounds):
                    a(stack, pos, top, bulk, out)
                    f(stack, pos, top, bulk, out)
    elif impl in ("deque", "list-stack"):
        pool = (DequePool if impl == "deque" else ListStack)(cap)
        buf = [0] * bulk

        def run(rounds: int) -> None:
            a, f = pool.alloc_bulk, pool.free_bulk
            for _ in range(rounds):
                a(bulk, buf)
                f(bulk, buf)
    elif impl in ("numpy-stack", "jit-stack", "jit-stack-single"):
        st = (NumpyStack if impl == "numpy-stack" else JitStack)(cap)
        out = np.zeros(bulk, np.int64)
        if impl == "jit-stack-single":
            def run(rounds: int) -> None:
                jit_stack_loop_single(st.stack, st.top, bulk, rounds, out)
        elif inside_jit:
            def run(rounds: int) -> None:
                jit_stack_loop_bulk(st.stack, st.top, bulk, rounds, out)
        elif impl == "numpy-stack":
            def run(rounds: int) -> None:
                a, f = st.alloc_bulk, st.free_bulk
                for _ in range(rounds):
                    a(bulk, out)
                    f(bulk, out)
        else:                           # the jitted functions called directly, as a user
            a, f = jit_stack_alloc_bulk, jit_stack_free_bulk    # would (not JitStack's
            stack, top = st.stack, st.top                       # wrapper methods)

            def run(rounds: int) -> None:
                for _ in range(rounds):
                    a(stack, top, bulk, out)
                    f(stack, top, bulk, out)
    else:
        sa, c = new_bench_cache(sheaves=impl in ("slab-sheaves", "slab-jit-round"),
                                kernel=kernel)
        out = np.zeros(bulk, np.int64)
        h, cid = sa.handle, c.id
        mode = impl.split("-", 1)[1]
        if mode == "warm":
            slab_warm_up(h, cid, WARM_OBJECTS, np.zeros(WARM_OBJECTS, np.int64))
        mode = "bulk" if mode in ("sheaves", "warm") or (mode == "jit-round" and inside_jit) \
            else mode
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
        elif mode == "single":          # (the objects in a list, as a user keeps them: a
            def run(rounds: int) -> None:   # NumPy store and an int() each cost 2x: h22's trial)
                alloc, free = sa.kmem_cache_alloc, sa.kmem_cache_free
                objs: list[int] = []
                for _ in range(rounds):
                    objs = [alloc(c, GFP_ATOMIC) for _ in range(bulk)]
                    for a in objs:
                        free(c, a)
                out[:len(objs)] = objs      # (the last round's, once a run: for the tests)
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


def bulk_table(sizes: tuple[int, ...] = BULK_SIZES, impls: tuple[str, ...] = PY_IMPLS,
               inside_jit: bool = False,
               objects: int = 1 << 15, repeat: int = 5,
               kernel: str = KERNEL) -> dict[str, dict[int, float]]:
    """ns per alloc+free pair for every implementation and bulk size.

    numslab's on SLUB generation ``kernel``."""
    return {impl: {b: time_per_object(make_round(impl, b, inside_jit, kernel), b, objects,
                                      repeat)
                   for b in sizes} for impl in impls}


# ---- the same-run ratio table ------------------------------------------------------------------
#: Bulk sizes, samples per cell and pairs per sample of :func:`bulk_ratio_table`.
RATIO_SIZES = (16, 64, 250, 4096)
RATIO_REPEAT = 7
RATIO_PAIRS = 1 << 16
#: Its rows inside @njit (``slab-bulk-6.18``: slab-bulk on 6.18; the reference: the jitted
#: stack) and from Python (the reference: the fastest of :data:`RATIO_PEERS` in the row).
RATIO_JIT = ("slab-bulk", "slab-warm", "slab-bulk-6.18", "floor-7.0", "floor-checks",
             "slab-sheaves", "jit-stack") + LAG_IMPLS
RATIO_PY = ("slab-bulk", "slab-warm", "floor-7.0", "floor-checks", "deque", "list-stack",
            "numpy-stack", "jit-stack")
def ratio_jit(generations: tuple[str, ...]) -> tuple[str, ...]:
    """:data:`RATIO_JIT` with ``slab-bulk-<g>`` for each of ``generations`` (not 7.0)."""
    extra = tuple(f"slab-bulk-{g}" for g in generations if g != KERNEL)
    at = RATIO_JIT.index("slab-bulk-6.18")      # (the default's place, taken by the others)
    return RATIO_JIT[:at] + extra + RATIO_JIT[at + 1:]


#: The floors, which :func:`bulk_ratio_table` reports from Python as the floor inside @njit
#: plus numslab's own call cost.
RATIO_FLOORS = ("floor-7.0", "floor-checks")
RATIO_PEERS = ("deque", "list-stack", "numpy-stack", "jit-stack")


def bulk_ratio_table(sizes: tuple[int, ...] = RATIO_SIZES, repeat: int = RATIO_REPEAT,
                     pairs: int = RATIO_PAIRS, where: tuple[str, ...] = ("jit", "python"),
                     generations: tuple[str, ...] = ("6.18",)) -> dict[str, dict[int, dict]]:
    """The bulk figures as ratios a user can reproduce, timed in this one process.

    For each bulk size, every implementation of :data:`RATIO_JIT` (inside @njit) and
    :data:`RATIO_PY` (from Python) built and timed in this one process, interleaved, best of
    ``repeat`` samples of ``ceil(pairs / bulk)`` rounds (at least ``pairs`` alloc+free pairs).
    numslab runs on 7.0, its default, but for ``slab-bulk-<g>``: ``slab-bulk`` inside @njit
    under each of ``generations`` (default 6.18: :data:`RATIO_JIT`), in the same process.

    From Python, each of :data:`RATIO_FLOORS` is the floor inside @njit plus numslab's own
    call cost per pair in the same run (``slab-bulk`` from Python minus inside @njit): the
    floor behind numslab's entry (Numba's own native entry costs more per call than numslab's
    C gate, so timing a prototype through it is no floor; see :func:`floor_round_at`).

    Returns ``{where: {bulk: {"ns": {impl: ns per pair}, "ref": name, "ratio": {impl: x}}}}``
    for ``where`` in ``"jit"`` (``ref``: ``jit-stack``) and ``"python"`` (``ref``: the
    fastest peer of the row); :func:`format_ratio_table` prints it."""
    out: dict[str, dict[int, dict]] = {w: {} for w in where}
    for bulk in sizes:
        runs: dict[tuple[str, str], Callable[[int], None]] = {}
        jit_impls = ratio_jit(generations) if "jit" in where else ("slab-bulk",) + RATIO_FLOORS
        for impl in jit_impls:
            base, _, kernel = impl.partition("-bulk-")
            runs["jit", impl] = make_round(f"{base}-bulk" if kernel else impl, bulk, True,
                                           kernel or "7.0")
        if "python" in where:
            for impl in RATIO_PY:
                if impl not in RATIO_FLOORS:
                    runs["python", impl] = make_round(impl, bulk, False, "7.0")
        rounds = -(-pairs // bulk)
        best = dict.fromkeys(runs, float("inf"))
        clock = timeit.default_timer
        for _ in range(repeat):                 # interleaved: noise hits every cell alike
            for key, run in runs.items():
                t0 = clock()
                run(rounds)
                best[key] = min(best[key], clock() - t0)
        ns = {key: t / (rounds * bulk) * 1e9 for key, t in best.items()}
        if "jit" in where:
            row = {impl: ns["jit", impl] for impl in jit_impls}
            out["jit"][bulk] = {"ns": row, "ref": "jit-stack",
                                "ratio": {k: v / row["jit-stack"] for k, v in row.items()}}
        if "python" in where:
            call = max(0.0, ns["python", "slab-bulk"] - ns["jit", "slab-bulk"])
            row = {impl: ns["jit", impl] + call if impl in RATIO_FLOORS
                   else ns["python", impl] for impl in RATIO_PY}
            ref = min(RATIO_PEERS, key=row.__getitem__)
            out["python"][bulk] = {"ns": row, "ref": ref,
                                   "ratio": {k: v / row[ref] for k, v in row.items()}}
    return out


def format_ratio_table(table: dict[str, dict[int, dict]]) -> str:
    """A text table of :func:`bulk_ratio_table`: ns per pair and ratios, per bulk size.

    Per bulk size, ns per pair and the ratio to the row's reference of every implementation."""
    titles = {"jit": "inside @njit: ns per alloc+free pair (x the jitted stack)",
              "python": "from Python: ns per alloc+free pair (x the best peer of the row; "
                        "the floors: the @njit floor + numslab's call cost)"}
    lines: list[str] = []
    for where, rows in table.items():
        if not rows:
            continue
        impls = list(next(iter(rows.values()))["ns"])
        if lines:
            lines.append("")
        lines.append(titles[where])
        head = f"{'bulk':>5} " + (f"{'best peer':<12} " if where == "python" else "")
        lines.append(head + " ".join(f"{i:>17}" for i in impls))
        lines.append("-" * len(lines[-1]))
        for bulk, r in rows.items():
            cells = " ".join(f"{r['ns'][i]:8.2f} ({r['ratio'][i]:5.2f}x)" for i in impls)
            lines.append(f"{bulk:>5} " + (f"{r['ref']:<12} " if where == "python" else "")
                         + cells)
    return "\n".join(lines)


# ---- a stream of large batches: NEW against PARTIAL (the seed's claim) -----------------------
@tools_jit()
def slab_stream_array(h, cid, n, outs, flags):
    """Inside @njit: one ``kmem_cache_alloc_array`` of ``n`` objects into each row of ``outs``.

    The total allocated."""
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
    """Write a buffer of twice the last-level cache, so that what came before is cold.

    At least 64 MiB, kept for the next call."""
    if not _EVICT:
        _EVICT.append(np.zeros(max(2 * llc_bytes(), 64 << 20) // 8, np.int64))
    _EVICT[0][::8] += 1                        # one store per 64-byte line


def array_stream(mode: str, slabs: int, batches: int, inside_jit: bool = False,
                 memory: str = "64M", cold: bool = False,
                 kernel: str = KERNEL) -> Callable[[], float]:
    """A function timing a stream of ``batches`` array allocations of ``slabs`` slabs' worth each.

    Through the facade (or inside @njit through ``numslab.jit``); it returns ns per object of the
    allocations alone.

    Each batch takes slabs no earlier batch touched, as a stream of requests would: NEW
    carves fresh slabs, PARTIAL takes whole partial slabs of a fragmented cache (every slab
    of it has one object in use, so a batch of ``slabs`` slabs gets ``slabs * (per - 1)``
    objects and walks their free lists). Between streams everything is freed and the cache
    is made fragmented again (untimed).

    ``cold`` sweeps the caches after that set-up, as a stream would find slabs freed long
    before: the seed's case for NEW, whose fresh slabs need no free list, against PARTIAL,
    whose free-list walk then misses the cache on every object. Without it the partial slabs
    were written just before, and their free lists are warm."""
    sa, c = new_bench_cache(memory=memory, kernel=kernel)
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
            sa.kmem_cache_shrink(c)            # frees held by the CPU (7.0: its sheaves)
                                               # go back to their slabs
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
