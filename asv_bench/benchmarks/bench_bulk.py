"""Suites 1 and 2: the kernel's ``slab_bulk_test01`` shape (alloc N, free N; one timed call
is 4096 alloc+free pairs, so time / 4096 is the cost per pair) and large batches per mode,
with the peers (deque pool, NumPy free stack, jitted free stack) in the same run."""
import numpy as np

from numslab import bench
from numslab.flags import (SLAB_ARRAY_ALLOC_LOCAL, SLAB_ARRAY_ALLOC_NEW,
                           SLAB_ARRAY_ALLOC_PARTIAL, GFP_KERNEL)

PAIRS = 4096


class SlabBulkTest01Python:
    """Called from Python, one call per batch (numslab single: one call per object)."""

    params = (list(bench.BULK_SIZES), list(bench.PY_IMPLS))
    param_names = ["bulk", "impl"]
    timeout = 300

    def setup(self, bulk, impl):
        self.run = bench.make_round(impl, bulk)
        self.rounds = max(1, PAIRS // bulk)

    def time_pairs(self, bulk, impl):
        self.run(self.rounds)


class SlabBulkTest01Jit:
    """The same loop inside one @njit function (numslab through ``numslab.jit``)."""

    params = (list(bench.BULK_SIZES) + [4096], list(bench.JIT_IMPLS))
    param_names = ["bulk", "impl"]
    timeout = 300

    def setup(self, bulk, impl):
        self.run = bench.make_round(impl, bulk, inside_jit=True)
        self.rounds = max(1, PAIRS // bulk)

    def time_pairs(self, bulk, impl):
        self.run(self.rounds)


class Bulk4096Python:
    """Batches of 4096 from Python: slabs go back to the page allocator and come again."""

    params = (["jit-stack", "deque", "numpy-stack", "slab-bulk", "slab-new"],)
    param_names = ["impl"]

    def setup(self, impl):
        self.run = bench.make_round(impl, 4096)

    def time_pairs(self, impl):
        self.run(1)


class LargeBatches:
    """Allocation alone of 1..64 slabs' worth in one call: LOCAL (objects the CPU holds:
    its freelist after freeing), PARTIAL (a cache fragmented in setup: every slab on the
    node partial list with one object in use), NEW (fresh slabs, no free list built), and
    the bulk API for comparison. Time per call; divide by slabs * 16 objects."""

    params = ([1, 4, 16, 64], ["local", "partial", "new", "bulk"])
    param_names = ["slabs", "mode"]
    number = 1
    repeat = 20
    warmup_time = 0

    def setup(self, slabs, mode):
        self.sa, self.c = bench.new_bench_cache(memory="64M")
        per = self.c.objs_per_slab
        self.n = slabs * per
        self.out = np.zeros(self.n, np.int64)
        self.flags = {"local": SLAB_ARRAY_ALLOC_LOCAL, "partial": SLAB_ARRAY_ALLOC_PARTIAL,
                      "new": SLAB_ARRAY_ALLOC_NEW}.get(mode, 0)
        if mode == "partial":                  # slabs + 1 partial slabs with 15 free each
            keep = []
            for _ in range(slabs + 1):
                objs = self.c.alloc_bulk(per)
                keep.append(objs[0])
                self.c.free_bulk(objs[1:])
            self.sa.kmem_cache_shrink(self.c)
            self.n = slabs * (per - 1)
        elif mode == "local":                  # the CPU freelist holds one slab's worth...
            self.n = min(self.n, per)
        warm = np.zeros(per * 2, np.int64)     # compile and warm every path once
        for f in (SLAB_ARRAY_ALLOC_LOCAL, SLAB_ARRAY_ALLOC_PARTIAL, SLAB_ARRAY_ALLOC_NEW):
            k = self.sa.kmem_cache_alloc_array(self.c, GFP_KERNEL, 0, warm, f)
        if mode == "local":
            got = self.c.alloc_bulk(self.n)
            self.c.free_bulk(got)

    def time_alloc(self, slabs, mode):
        if self.flags:
            self.sa.kmem_cache_alloc_array(self.c, GFP_KERNEL, self.n, self.out, self.flags)
        else:
            self.sa.kmem_cache_alloc_bulk(self.c, GFP_KERNEL, self.n, self.out)

    def track_objects(self, slabs, mode):
        """Objects one call allocates (divide the time by this)."""
        return self.n
