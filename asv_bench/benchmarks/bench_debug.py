"""slab_debug's cost (issue 13): one alloc+free pair, plain and with debug flags F and FZPU.

The pair runs on the benchmark cache (256 bytes), from Python (the facade: a plain allocator's C
gate against a debug allocator's Python methods) and from @njit (``singlebench.slab_single_pair``
through ``numslab.jit``: the sheaves, or under 6.18 the CPU freelist, against the checked slow
path). Compare the impls of one run: the ratio to ``plain`` is the cost of debugging."""
import numslab
from numslab.tools import bench, singlebench

IMPLS = ("plain", "F", "FZPU")
PY_PAIRS = 4096
JIT_ROUNDS = 1 << 14


def make(impl, kernel):
    """An allocator and its ``bench`` cache, with ``impl``'s slab_debug letters on it."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="64M", kernel=kernel,
                               slab_debug=None if impl == "plain" else f"{impl},bench")
    return sa, sa.kmem_cache_create("bench", bench.OBJECT_SIZE)


class DebugPairPython:
    """ns per ``kmem_cache_alloc`` + ``kmem_cache_free`` pair from Python."""

    params = (list(IMPLS), list(bench.KERNELS))
    param_names = ["impl", "kernel"]
    timeout = 300

    def setup(self, impl, kernel):
        self.sa, self.c = make(impl, kernel)
        self.run(16)                            # compile and warm outside the measurement

    def run(self, n):
        alloc, free, c = self.sa.kmem_cache_alloc, self.sa.kmem_cache_free, self.c
        for _ in range(n):
            free(c, alloc(c))

    def time_pairs(self, impl, kernel):
        self.run(PY_PAIRS)

    def track_ns_per_pair(self, impl, kernel):
        return min(bench.time_per_object(self.run, 1, PY_PAIRS, 1) for _ in range(5))
    track_ns_per_pair.unit = "ns"


class DebugPairJit:
    """ns per round of ``singlebench.slab_single_pair`` through ``numslab.jit``.

    256 live objects, one freed and one allocated per round."""

    params = (list(IMPLS), list(bench.KERNELS))
    param_names = ["impl", "kernel"]
    timeout = 300

    def setup(self, impl, kernel):
        self.sa, c = make(impl, kernel)
        h, cid = self.sa.handle, c.id
        self.run = lambda rounds: singlebench.slab_single_pair(h, cid, singlebench.SINGLE_LIVE, rounds,
                                                         singlebench.SINGLE_SEED)
        self.run(2)

    def time_rounds(self, impl, kernel):
        self.run(JIT_ROUNDS)

    def track_ns_per_round(self, impl, kernel):
        return min(bench.time_per_object(self.run, 1, JIT_ROUNDS, 1) for _ in range(5))
    track_ns_per_round.unit = "ns"
