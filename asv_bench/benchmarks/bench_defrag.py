"""Suite: the remedies against fragmentation (issue 15), their time and what they leave.

The time of ``cache.compact`` and of eviction against a plain shrink of the same fragmented cache,
a churn under each policy (partial-list order, compaction), and the resident memory left after a
workload frees everything, with the memory release after shrink on and off."""
import os

import numpy as np

import numslab


def _fragmented(kernel: str, n: int = 100_000, size: int = 256, freed: float = 0.7):
    """An allocator whose cache holds ``n`` objects of ``size`` bytes, ``freed`` of them freed.

    The objects are freed at random (the issue's synthetic check)."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="64M", kernel=kernel)
    c = sa.kmem_cache_create("obj", size)
    objs = c.alloc_bulk(n)
    c.free_bulk(objs[np.random.default_rng(1).random(n) < freed])
    return sa, c


class _OneShotPerKernel:
    """Timing options shared by the fragmented-cache benchmarks.

    Each kernel generation, one call per sample, five samples, no warm-up (the set-up compiles
    first)."""

    params = ["7.0", "6.18"]
    param_names = ["kernel"]
    number = 1
    repeat = 5
    warmup_time = 0


class Compact(_OneShotPerKernel):
    """Seconds to compact 100,000 256-byte objects with 70% freed at random, against a shrink.

    The calls: ``compact(100)`` (pack tightly), ``compact()`` (slabs used below 30%) and, as the
    same-run reference, the plain ``kmem_cache_shrink`` every compaction starts with."""

    def setup(self, kernel):
        _fragmented(kernel, 2000)[1].compact(100)   # compiled (or loaded) before timing
        self.sa, self.c = _fragmented(kernel)

    def time_shrink(self, kernel):
        self.c.shrink()

    def time_compact_100(self, kernel):
        self.c.compact(100)

    def time_compact_default(self, kernel):
        self.c.compact()

    def track_slabs_after_compact_100(self, kernel):
        self.c.compact(100)
        return self.c.slabs

    def track_slabs_after_shrink(self, kernel):
        self.c.shrink()
        return self.c.slabs


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ResidentAfterFree:
    """MiB of resident memory the process keeps after 150 MB of objects are written and freed.

    The figure is above what the process had before the arena was touched, taken once the objects
    are all freed and the caches shrunk, for each ``release_order`` (None: nothing given back to
    the OS)."""

    params = [None, 4, 10]
    param_names = ["release_order"]
    unit = "MiB"

    def setup(self, order):
        numslab.SlabAllocator(nr_cpus=2, memory="4M").kmem_cache_create("w", 512).alloc_bulk(8)

    def track_rss_kept_mib(self, order):
        sa = numslab.SlabAllocator(nr_cpus=2, memory="256M")
        sa.release_order = order
        c = sa.kmem_cache_create("o512", 512)
        before = _rss()
        objs = c.alloc_bulk(300_000)
        sa._mem[objs >> 3] = 1
        c.free_bulk(objs)
        c.shrink()
        return (_rss() - before) / (1 << 20)


def _churn(sa, c, rounds: int = 30, seed: int = 1, ratio: int | None = None) -> float:
    """A churn's time-averaged utilisation, live bytes over slab bytes, sampled after each round.

    30,000 live objects; each round frees 3,000 of them at random one by one and allocates 3,000
    one by one, and every tenth round half of them die at once (a bulk free and a shrink) and 5,000
    are born; with ``ratio``, each round ends with ``c.compact(ratio)`` and the table of references
    remapped."""
    rng = np.random.default_rng(seed)
    held = c.alloc_bulk(30_000)
    per_slab = 4096 << c.order
    util = 0.0
    for r in range(rounds):
        rng.shuffle(held)
        for a in held[:3000].tolist():
            sa.kmem_cache_free(c, a)
        held = np.concatenate([held[3000:], [sa.kmem_cache_alloc(c) for _ in range(3000)]])
        if r % 10 == 9:
            rng.shuffle(held)
            c.free_bulk(held[:len(held) // 2])
            held = held[len(held) // 2:]
            c.shrink()
            held = np.concatenate([held, [sa.kmem_cache_alloc(c) for _ in range(5000)]])
        held = held.astype(np.int64)
        if ratio is not None:
            held = numslab.remap(held, *c.compact(ratio))
        util += len(c) * c.slab_size / (c.slabs * per_slab)
    return util / rounds


#: The churn's policies: the partial-list order and compaction after every round.
POLICIES = {"kernel": ("kernel", None), "sorted": ("sorted", None),
            "mobility": ("kernel", 30), "mobility100": ("kernel", 100)}


class Policies:
    """The same churn under each policy: its time, time-averaged utilisation and final slabs.

    The policies: the kernel's partial-list order, the lists kept sorted by free objects, and
    compaction after every round (slabs below 30%, or all). The time is what each costs; the
    utilisation and final slabs are what each buys."""

    params = (["7.0", "6.18"], list(POLICIES))
    param_names = ["kernel", "policy"]
    number = 1
    repeat = 5
    warmup_time = 0

    def setup(self, kernel, policy):
        order, self.ratio = POLICIES[policy]
        self.sa = numslab.SlabAllocator(nr_cpus=2, memory="64M", kernel=kernel,
                                        partial_order=order)
        self.c = self.sa.kmem_cache_create("obj", 192)
        _churn(self.sa, self.sa.kmem_cache_create("warm", 192), 1, ratio=self.ratio)

    def time_churn(self, kernel, policy):
        _churn(self.sa, self.c, ratio=self.ratio)

    def track_utilisation_percent(self, kernel, policy):
        return 100 * _churn(self.sa, self.c, ratio=self.ratio)

    def track_slabs_after_churn(self, kernel, policy):
        _churn(self.sa, self.c, ratio=self.ratio)
        return self.c.slabs


class Evict(_OneShotPerKernel):
    """Seconds to evict the slabs used below 30% of ``Compact``'s fragmented cache, and slabs left.

    The owner frees every object it is kicked for (one Python call per slab and object). The
    reference is ``Compact.time_compact_default`` on the same workload."""

    def setup(self, kernel):
        self.sa, self.c = _fragmented(kernel)
        sa, c = self.sa, self.c
        sa.kmem_cache_setup_defrag(c, lambda objs: None,
                                   lambda objs, private: c.free_bulk(objs))

    def time_defrag_30(self, kernel):
        self.sa.kmem_cache_defrag(self.c, 30)

    def track_slabs_after_defrag_30(self, kernel):
        self.sa.kmem_cache_defrag(self.c, 30)
        return self.c.slabs
