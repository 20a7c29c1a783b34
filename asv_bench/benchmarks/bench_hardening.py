"""What CONFIG_SLAB_FREELIST_RANDOM (on by default) costs work that keeps making new slabs.

The work makes a new slab for every slab's worth of objects, with the option on and off (compare
the two ``random`` values of one run: the permutation is read only when a slab is made, so the
sheaf and CPU-freelist fast paths do not change).

``new``: the RFC's NEW array mode (whole fresh slabs carved with no free list) and a free of
the array, inside @njit; ``bulk``: 4096-object ``kmem_cache_alloc_bulk`` + free, whose
slabs, freed empty beyond ``min_partial``, are made again each round (under 7.0 whole slabs
without a free list, under 6.18 CPU slabs with one); ``single``: as many single allocations
then frees inside @njit (the sheaves, or the CPU freelist, refilled from new slabs)."""
import numpy as np

import numslab
from numslab.tools import bench

OBJECTS = 4096          # 256 slabs of the 256-byte bench cache per round
ROUNDS = 8


class FreelistRandom:
    """ns per object allocated and freed, with new slabs made all the time."""

    params = (["new", "bulk", "single"], [True, False], list(bench.KERNELS))
    param_names = ["work", "random", "kernel"]
    timeout = 300

    def setup(self, work, random, kernel):
        sa, c = bench.new_bench_cache(kernel=kernel, random=random)
        self.keep = sa
        out = np.zeros(OBJECTS, np.int64)
        h, cid = sa.handle, c.id
        if work == "new":
            self.run = lambda rounds: bench.slab_loop_array(
                h, cid, OBJECTS, rounds, out, numslab.SLAB_ARRAY_ALLOC_NEW)
        elif work == "bulk":
            self.run = lambda rounds: bench.slab_loop_bulk(h, cid, OBJECTS, rounds, out)
        else:
            self.run = lambda rounds: bench.slab_loop_single(h, cid, OBJECTS, rounds, out)
        self.run(2)                             # compile and warm outside the measurement

    def time_rounds(self, work, random, kernel):
        self.run(ROUNDS)

    def track_ns_per_object(self, work, random, kernel):
        return min(bench.time_per_object(self.run, OBJECTS, OBJECTS * ROUNDS, 1)
                   for _ in range(5))
    track_ns_per_object.unit = "ns"
