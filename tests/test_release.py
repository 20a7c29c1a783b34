"""Memory back to the OS: free buddy blocks ``madvise(MADV_DONTNEED)``ed after a shrink and by
``sa.release_memory()``, so the process's resident memory (``/proc/self/statm``) falls."""
from __future__ import annotations

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


def _touch_and_free_everything(sa: numslab.SlabAllocator) -> tuple[int, int]:
    """Fill most of the arena with objects of two caches (every object written), free them
    all and shrink both caches: RSS before the arena was touched, and at the peak."""
    c = sa.kmem_cache_create("o512", 512)
    d = sa.kmem_cache_create("o96", 96)
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
