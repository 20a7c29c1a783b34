"""Suites 1 and 2: alloc+free pairs in ``slab_bulk_test01``'s shape and in large batches.

The kernel's ``slab_bulk_test01`` shape is alloc N, free N; one timed call is 4096 alloc+free
pairs, so time / 4096 is the cost per pair. Large batches are timed per mode. The peers (deque
pool, NumPy free stack, jitted free stack) run in the same run; numslab runs on each SLUB
generation (``kernel``: 7.0, the default, and 6.18; the peers ignore it)."""
import time

import numba as nb
import numpy as np

from numslab.tools import bench
from numslab.flags import (SLAB_ARRAY_ALLOC_LOCAL, SLAB_ARRAY_ALLOC_NEW,
                           SLAB_ARRAY_ALLOC_PARTIAL, GFP_KERNEL)

PAIRS = 4096


def _floor_is_7_0(impl, kernel):
    """Refuse the two floors under any kernel but 7.0: asv runs both under 7.0 only.

    ``floor-7.0`` (``numslab.tools.floor``, the fused prototype of 7.0's round) has no 6.18 form,
    and ``floor-checks`` (``numslab.tools.checkfloor``) no generation."""
    if impl in ("floor-7.0", "floor-checks") and kernel != "7.0":
        raise NotImplementedError(f"{impl} runs under 7.0 only")


class SlabBulkTest01Python:
    """Called from Python, one call per batch (numslab single: one call per object)."""

    params = (list(bench.BULK_SIZES), list(bench.PY_IMPLS), list(bench.KERNELS))
    param_names = ["bulk", "impl", "kernel"]
    timeout = 300

    def setup(self, bulk, impl, kernel):
        _floor_is_7_0(impl, kernel)
        self.run = bench.make_round(impl, bulk, kernel=kernel)
        self.rounds = max(1, PAIRS // bulk)

    def time_pairs(self, bulk, impl, kernel):
        self.run(self.rounds)


class SlabBulkTest01Jit:
    """The same loop inside one @njit function (numslab through ``numslab.jit``).

    The jitted stack's operations are written in the loop, as a competent Numba user writes them,
    so that no array's reference count is touched per operation."""

    params = (list(bench.BULK_SIZES) + [4096], list(bench.JIT_IMPLS), list(bench.KERNELS))
    param_names = ["bulk", "impl", "kernel"]
    timeout = 300

    def setup(self, bulk, impl, kernel):
        _floor_is_7_0(impl, kernel)
        self.run = bench.make_round(impl, bulk, inside_jit=True, kernel=kernel)
        self.rounds = max(1, PAIRS // bulk)

    def time_pairs(self, bulk, impl, kernel):
        self.run(self.rounds)


class Bulk4096Python:
    """Batches of 4096 from Python: slabs go back to the page allocator and come again."""

    params = (["jit-stack", "deque", "numpy-stack", "slab-bulk", "slab-sheaves", "slab-new",
               "slab-jit-round", "floor-7.0", "floor-checks"], list(bench.KERNELS))
    param_names = ["impl", "kernel"]

    def setup(self, impl, kernel):
        _floor_is_7_0(impl, kernel)
        self.run = bench.make_round(impl, 4096, kernel=kernel)

    def time_pairs(self, impl, kernel):
        self.run(1)


class LargeBatches:
    """1..64 slabs' worth in one call, per mode: LOCAL, PARTIAL, NEW and the bulk API.

    LOCAL takes objects the CPU holds (at most its freelist), PARTIAL a cache whose slabs are all
    partial (one object in use each), NEW fresh slabs (no free list built). ``time_round`` is one
    round (allocate, then free the same objects) on the cache as described, one call per sample
    (the set-up puts the cache back before each: under 7.0 a round's frees stay in the sheaves, so
    a second PARTIAL round found 2 of 15 objects at 1 slab, 47 of 60 at 4);
    ``track_alloc_ns_per_object`` is the allocation alone, best of 20 shots, each after the cache
    is put back as it was."""

    params = ([1, 4, 16, 64], ["local", "partial", "new", "bulk"], list(bench.KERNELS))
    param_names = ["slabs", "mode", "kernel"]
    timeout = 300
    number = 1                  # asv runs the set-up before each sample: one round on the
    repeat = (10, 50, 10.0)     # cache as described, never on what the last round left
    warmup_time = 0

    def setup(self, slabs, mode, kernel):
        self.sa, self.c = bench.new_bench_cache(memory="64M", kernel=kernel)
        per = self.c.objs_per_slab
        self.flags = {"local": SLAB_ARRAY_ALLOC_LOCAL, "partial": SLAB_ARRAY_ALLOC_PARTIAL,
                      "new": SLAB_ARRAY_ALLOC_NEW}.get(mode, 0)
        self.n = {"local": per, "partial": slabs * (per - 1)}.get(mode, slabs * per)
        if mode == "new":               # NEW acts on more than a slab's worth (the RFC):
            self.n += 1                 # asked one more, it takes the slabs whole
        self.out = np.zeros(self.n, np.int64)
        self.keep = []
        if mode == "partial":                  # slabs + 1 slabs with one object in use
            objs = self.c.alloc_bulk((slabs + 1) * per)
            self.keep = objs[::per].copy()
            self.c.free_bulk(np.delete(objs, np.arange(0, len(objs), per)))
        self.reset()
        for _ in range(3):      # compile and warm every path: the first rounds of NEW meet
            self.got = self.alloc()     # units not yet loaded (freeing whole slabs, pages);
            self.release()              # asv --quick times a single call, and took 3 ms
            self.reset()
        self.warm()

    def alloc(self):
        if self.flags:
            return self.sa.kmem_cache_alloc_array(self.c, GFP_KERNEL, self.n, self.out,
                                                  self.flags)
        return self.sa.kmem_cache_alloc_bulk(self.c, GFP_KERNEL, self.n, self.out)

    def warm(self):
        """A call for no objects, so the timed call finds the call path in the caches."""
        if self.flags:
            self.sa.kmem_cache_alloc_array(self.c, GFP_KERNEL, 0, self.out, self.flags)
        else:
            self.sa.kmem_cache_alloc_bulk(self.c, GFP_KERNEL, 0, self.out)

    def release(self):
        self.sa.kmem_cache_free_bulk(self.c, self.got, self.out) if self.got else None

    def reset(self):
        """Put the cache back: partial slabs on the node list, or the CPU freelist full."""
        self.sa.kmem_cache_shrink(self.c)
        if self.flags == SLAB_ARRAY_ALLOC_LOCAL:
            objs = self.c.alloc_bulk(self.n)
            self.c.free_bulk(objs)
        self.got = 0

    def time_round(self, slabs, mode, kernel):
        self.got = self.alloc()
        self.release()

    def track_alloc_ns_per_object(self, slabs, mode, kernel):
        best = float("inf")
        for _ in range(20):
            self.reset()
            self.warm()
            t0 = time.perf_counter()
            self.got = self.alloc()
            best = min(best, (time.perf_counter() - t0) / max(self.got, 1) * 1e9)
            self.release()
        return best
    track_alloc_ns_per_object.unit = "ns"


class ArrayStream:
    """NEW against PARTIAL on a stream of batches of 4 to 64 slabs' worth: ns per object.

    The figure is the allocation alone, per object, best of 5 streams (``bench.array_stream``),
    from Python (one facade call per batch) and inside @njit (``numslab.jit``, no call overhead).
    Each batch takes slabs no earlier one touched: fresh ones for NEW, the partial slabs of a
    fragmented cache (one object in use each) for PARTIAL, whose free lists it walks. ``cold``
    sweeps the caches after the set-up (slabs freed long before, the seed's case); ``warm`` leaves
    the partial slabs' free lists in cache, as written just before."""

    params = ([4, 16, 64], ["partial", "new"], ["python", "jit"], ["warm", "cold"],
              list(bench.KERNELS))
    param_names = ["slabs", "mode", "caller", "caches", "kernel"]
    timeout = 300

    def setup(self, slabs, mode, caller, caches, kernel):
        self.stream = bench.array_stream(mode, slabs, batches=max(8, 512 // slabs),
                                         inside_jit=caller == "jit", cold=caches == "cold",
                                         kernel=kernel)

    def track_ns_per_object(self, slabs, mode, caller, caches, kernel):
        return min(self.stream() for _ in range(5))
    track_ns_per_object.unit = "ns"


class BulkRatio:
    """The bulk figures as same-run ratios (``bench.bulk_ratio_table``).

    The ratios, as ``numslab bench --ratios`` gives them: numslab and the floor over the jitted
    stack inside @njit, and over the fastest peer of the row (deque, list stack, NumPy stack,
    jitted stack) from Python; every cell of a bulk size built and timed in one process,
    interleaved, best of 7 samples of at least 65536 pairs (cells timed apart swing with the
    machine). ``slab-bulk-6.18`` and ``slab-sheaves`` are inside @njit only; each floor from
    Python (``floor-7.0``, 7.0's rules; ``floor-checks``, any allocator that refuses a double
    free) is the floor inside @njit plus numslab's own call cost per pair, measured in the same
    run. The whole table is timed once, in one process (``setup_cache``), and each figure read
    from it: a table per figure timed every row's cells again for each of its numbers, in
    processes of their own (h22's trial)."""

    params = (list(bench.RATIO_SIZES), ["jit", "python"],
              ["slab-bulk", "slab-warm", "slab-bulk-6.18", "slab-sheaves", "floor-7.0",
               "floor-checks"])
    param_names = ["bulk", "caller", "impl"]
    timeout = 600

    def setup_cache(self):
        return bench.bulk_ratio_table()

    def setup(self, table, bulk, caller, impl):
        if impl not in (bench.RATIO_JIT if caller == "jit" else bench.RATIO_PY):
            raise NotImplementedError(f"{impl} is not in the {caller} ratio table")

    def track_ratio(self, table, bulk, caller, impl):
        """ns per pair of ``impl`` over the reference's, same process, interleaved."""
        return table[caller][bulk]["ratio"][impl]
    track_ratio.unit = "x the reference"


@nb.njit(cache=True)
def _empty(a):
    """The reference: an empty jitted function taking one array."""
    return 0


class CallOverhead:
    """From Python: 2000 allocator calls against 2000 calls of an empty @njit function.

    The allocator's are 1000 ``kmem_cache_alloc`` + 1000 ``kmem_cache_free`` calls (so 2000 calls);
    the empty @njit function takes one array; the jitted free stack's single calls are timed too.
    Divide by 2000 for the cost of one call. (Issue 11's bulk call against the @njit function a
    user would write: ``bench_calls.CallCost``.)"""

    params = (["empty-njit", "slab-alloc+free", "kmalloc+kfree", "jit-stack-alloc+free"],)
    param_names = ["impl"]

    def setup(self, impl):
        self.sa, self.c = bench.new_bench_cache()
        self.arr = np.zeros(1, np.int64)
        self.stack = bench.JitStack(1 << 12)
        _empty(self.arr)
        self.time_calls(impl)

    def time_calls(self, impl):
        if impl == "empty-njit":
            e, a = _empty, self.arr
            for _ in range(2000):
                e(a)
        elif impl == "slab-alloc+free":
            al, fr, c = self.sa.kmem_cache_alloc, self.sa.kmem_cache_free, self.c
            for _ in range(1000):
                fr(c, al(c))
        elif impl == "kmalloc+kfree":
            km, kf = self.sa.kmalloc, self.sa.kfree
            for _ in range(1000):
                kf(km(200))
        else:                           # the jitted functions, called as a user would
            al, fr = bench.jit_stack_alloc, bench.jit_stack_free
            stack, top = self.stack.stack, self.stack.top
            for _ in range(1000):
                fr(stack, top, al(stack, top))


class FreelistHardening:
    """What CONFIG_SLAB_FREELIST_HARDENED (on by default) costs the bulk API inside @njit.

    The bulk API runs on the default cache, whose batches above a sheaf run on the slab layer's
    free lists, with the hardening on and off (compare the two ``hardened`` values of one run)."""

    params = ([16, 250, 4096], [True, False], list(bench.KERNELS))
    param_names = ["bulk", "hardened", "kernel"]
    timeout = 300

    def setup(self, bulk, hardened, kernel):
        sa, c = bench.new_bench_cache(kernel=kernel, hardened=hardened)
        self.keep = sa
        self.out = np.zeros(bulk, np.int64)
        self.h, self.cid = sa.handle, c.id
        self.rounds = max(1, PAIRS // bulk)
        bench.slab_loop_bulk(self.h, self.cid, bulk, 2, self.out)

    def time_pairs(self, bulk, hardened, kernel):
        bench.slab_loop_bulk(self.h, self.cid, bulk, self.rounds, self.out)
