"""Memory back to the OS: free buddy blocks ``madvise(MADV_DONTNEED)``ed after a shrink and by
``sa.release_memory()``, so the process's resident memory (``/proc/self/statm``) falls."""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import numslab
from numslab.errors import InvalidSizeError

KERNELS = ("7.0", "7.1", "6.18")


def rss() -> int:
    """The process's resident set size in bytes, from ``/proc/self/statm``."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _warm(sa: numslab.SlabAllocator, *caches: numslab.KmemCache) -> None:
    """Run the workload's paths once at a small size, so that the units they reach are
    compiled (or loaded) before RSS is measured: compiling takes tens of MB, which a fresh
    Numba cache made this file's first test count as the arena's. Then collect the garbage:
    an earlier test's machine (its touched arena) freed by the collector while this test
    measures made the RSS grow by 30 MB where the test wrote 75 MB (a CI failure)."""
    from numslab.engine.pages import release_free_blocks
    for c in caches:
        c.free_bulk(c.alloc_bulk(3 * c.objs_per_slab))
        c.shrink()
    release_free_blocks.compile()
    gc.collect()


def _touch_and_free_everything(sa: numslab.SlabAllocator) -> tuple[int, int]:
    """Fill most of the arena with objects of two caches (every object written), free them
    all and shrink both caches: RSS before the arena was touched, and at the peak."""
    c = sa.kmem_cache_create("o512", 512)
    d = sa.kmem_cache_create("o96", 96)
    _warm(sa, c, d)
    before = rss()
    objs, small = c.alloc_bulk(300_000), d.alloc_bulk(150_000)
    for a in (objs, small):
        sa._mem[a >> 3] = np.arange(len(a))
    peak = rss()
    c.free_bulk(objs)
    d.free_bulk(small)
    c.shrink()
    d.shrink()
    return before, peak


def test_rss_falls_back_after_everything_is_freed_and_shrunk(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="256M", kernel=kernel)
    before, peak = _touch_and_free_everything(sa)
    assert peak > before + (150 << 20)              # the workload really was resident
    assert rss() <= 1.1 * before + (8 << 20)
    assert sa.released_bytes >= 150 << 20
    sa.validate()
    c = sa.find_cache("o512")                       # released memory is usable again
    objs = c.alloc_bulk(1000)
    sa._mem[objs >> 3] = 7
    c.free_bulk(objs)
    sa.validate()


def test_release_order_none_keeps_the_memory_until_release_memory(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="128M", kernel=kernel)
    sa.release_order = None
    c = sa.kmem_cache_create("o512", 512)
    _warm(sa, c)
    before = rss()
    objs = c.alloc_bulk(150_000)
    sa._mem[objs >> 3] = 1
    c.free_bulk(objs)
    c.shrink()
    assert sa.released_bytes == 0 and rss() > before + (50 << 20)
    got = sa.release_memory()
    assert got == sa.free_pages_count() * 4096 and sa.pcp_pages_count() == 0
    assert rss() <= 1.1 * before + (8 << 20)
    sa.validate()


@pytest.mark.parametrize("order", [-1, 11, 2.0, True, None])
def test_release_memory_refuses_a_bad_order(order):
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    with pytest.raises(InvalidSizeError):
        sa.release_memory(order)


@pytest.mark.parametrize("order", [-1, 11, 2.0, True, "4"])
def test_release_order_refuses_a_bad_order_when_set(order, tmp_path):
    # it was taken as set and failed inside the next kmem_cache_shrink, after its work
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("o64", 64)
    c.free_bulk(c.alloc_bulk(500))
    with pytest.raises(InvalidSizeError, match="release_order"):
        sa.release_order = order
    assert sa.release_order == 4
    assert c.shrink() >= 0 and sa.released_bytes > 0
    sa.release_order = None                         # None and 0..10 are taken, and saved
    sa.save(tmp_path / "m.npz")
    assert numslab.SlabAllocator.load(tmp_path / "m.npz").release_order is None
    sa.release_order = 10
    sa.save(tmp_path / "m.npz")
    assert numslab.SlabAllocator.load(tmp_path / "m.npz").release_order == 10


def _free_block_ranges(sa: numslab.SlabAllocator, min_order: int) -> list[tuple[int, int]]:
    """Naive oracle: the page ranges of free buddy blocks (not on pcp lists) of order
    ``min_order`` and above, adjacent blocks merged (the facade's NumPy scan until December
    2026)."""
    from numslab.engine.layout import PG_BUDDY, PG_PCP
    st = sa.state
    out: list[list[int]] = []
    for pfn in np.flatnonzero((st.pg_flags & (PG_BUDDY | PG_PCP)) == PG_BUDDY).tolist():
        order = int(st.pg_order[pfn])
        if order < min_order:
            continue
        if out and out[-1][1] == pfn:
            out[-1][1] = pfn + (1 << order)
        else:
            out.append([pfn, pfn + (1 << order)])
    return [(a, b) for a, b in out]


@pytest.mark.parametrize("min_order", [0, 3, 10])
def test_release_memory_advises_exactly_the_free_blocks(min_order):
    """The scan and its madvise calls are one engine call (``pages.release_free_blocks``): a
    Python loop of madvise calls let another thread be handed a block of the list, which
    the next call then zeroed. It releases what the naive scan finds."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel="6.18")
    sa.release_order = None
    held = [sa.kmalloc(s) for s in (64, 5000, 20000, 100000, 300000) * 8]
    for a in held[::3]:
        sa.kfree(a)
    from numslab.engine.pages import drain_all_pages
    drain_all_pages(sa._st)
    want = sum(b - a for a, b in _free_block_ranges(sa, min_order)) * 4096
    for a in held[1::3] + held[2::3]:
        sa.memory[a:a + 64] = 7                 # live objects' bytes: never advised
    assert sa.release_memory(min_order) == want > 0
    assert all((sa.memory[a:a + 64] == 7).all() for a in held[1::3] + held[2::3])
    sa.validate()
