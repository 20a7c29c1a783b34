"""Suite 3: kmalloc/kfree of mixed sizes and typed record gather/scatter, with peers."""
import numpy as np

import numslab
from numslab.tools import bench
from numslab.geometry import KMALLOC_SIZES, kmalloc_cache_size

N = 4096
RNG = np.random.default_rng(1)
SIZES = RNG.choice([16, 40, 64, 100, 200, 500, 1000, 1500, 3000, 6000], N)


class KmallocMixed:
    """4096 mixed-size allocations then 4096 frees, from Python."""

    params = (["slab-single", "slab-kfree_bulk", "deque-per-class", "jit-stack-per-class"],)
    param_names = ["impl"]

    def setup(self, impl):
        self.sa = numslab.SlabAllocator(nr_cpus=1, memory="64M")
        self.sizes = [int(s) for s in SIZES]
        self.out = np.zeros(N, np.int64)
        classes = [KMALLOC_SIZES.index(kmalloc_cache_size(s)) for s in self.sizes]
        self.classes = classes
        self.pools = [bench.DequePool(N) for _ in KMALLOC_SIZES]
        self.stacks = [bench.JitStack(N) for _ in KMALLOC_SIZES]
        # the peers as a user calls them: each class's deque.pop/append bound, and the
        # jitted functions called on each class's (stack, top), no wrapper methods
        self.pops = [p.free_list.pop for p in self.pools]
        self.pushes = [p.free_list.append for p in self.pools]
        self.stack_args = [(st.stack, st.top) for st in self.stacks]
        self.time_pairs(impl)

    def time_pairs(self, impl):
        if impl == "slab-single":
            km, kf = self.sa.kmalloc, self.sa.kfree
            addrs = [km(s) for s in self.sizes]
            for a in addrs:
                kf(a)
        elif impl == "slab-kfree_bulk":
            km, out = self.sa.kmalloc, self.out
            for i, s in enumerate(self.sizes):
                out[i] = km(s)
            self.sa.kfree_bulk(N, out)
        elif impl == "deque-per-class":
            pops, pushes = self.pops, self.pushes
            got = [pops[c]() for c in self.classes]
            for c, a in zip(self.classes, got):
                pushes[c](a)
        else:
            alloc, free, args = bench.jit_stack_alloc, bench.jit_stack_free, self.stack_args
            got = [alloc(*args[c]) for c in self.classes]
            for c, a in zip(self.classes, got):
                stack, top = args[c]
                free(stack, top, a)


class TypedRecords:
    """Gather and scatter 4096 records by address (numslab) or index (NumPy peer).

    The peer uses ``np.take``/``np.put``, as a competent NumPy user does for records: fancy
    indexing of a structured array (``table[idx]``) takes NumPy's generic field-by-field path, 12x
    slower here (273 us against 23 us), and made numslab look 5x faster than NumPy when it was 2.3x
    slower."""

    params = (["slab", "numpy-structured"],)
    param_names = ["impl"]
    DT = np.dtype([("length", np.int32), ("ts", np.int64), ("sport", np.uint16),
                   ("dport", np.uint16), ("proto", np.uint8)])

    def setup(self, impl):
        self.sa = numslab.SlabAllocator(nr_cpus=1, memory="64M")
        self.c = self.sa.kmem_cache_create("rec", 0, dtype=self.DT)
        self.addrs = self.c.alloc_bulk(N)
        RNG.shuffle(self.addrs)
        self.table = np.zeros(N, self.DT)
        self.idx = RNG.permutation(N)
        self.vals = np.zeros(N, self.DT)
        self.time_gather_scatter(impl)          # compile before timing

    def time_gather_scatter(self, impl):
        if impl == "slab":
            r = self.c.records(self.addrs)
            self.c.store(self.addrs, r)
        else:
            r = np.take(self.table, self.idx)
            np.put(self.table, self.idx, r)


class KfreeRcuList:
    """``kfree_rcu`` of ``n`` kmalloc-64 objects, one call each, from Python under 6.18.

    Under 6.18 there are no sheaves: every object waits on the facade's list. The time per call
    should not grow with ``n`` (a list scanned per call made a run quadratic: 800 us per call at
    32,000 waiting)."""

    params = ([1000, 16000],)
    param_names = ["n"]
    number = 1
    repeat = 5
    warmup_time = 0

    def setup(self, n):
        self.sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=1, memory="64M")
        a = self.sa.kmalloc(64)                 # compile before timing
        self.sa.kfree_rcu(a)
        self.sa.synchronize_rcu()
        self.addrs = [self.sa.kmalloc(64) for _ in range(n)]

    def time_kfree_rcu(self, n):
        kfree_rcu = self.sa.kfree_rcu
        for a in self.addrs:
            kfree_rcu(a)
