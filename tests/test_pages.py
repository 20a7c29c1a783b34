"""The buddy page allocator: splitting, merging, nodes, exhaustion and misuse."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

import numslab
from numslab.geometry import PAGE_SIZE

from conftest import assert_unchanged, snapshot


def test_fresh_machine_has_all_pages_but_frame_zero():
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M")
    assert sa.nr_pages == 2048
    assert sa.free_pages_count() == 2047
    assert sa.buddyinfo().splitlines()[0].split()[4:] == ["1"] * 10 + ["1"]


def test_split_and_merge_restore_the_free_lists():
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M")
    before = sa.buddyinfo()
    a = sa.alloc_pages(0)
    b = sa.alloc_pages(3)
    assert a == PAGE_SIZE               # frame 1: the lowest free frame
    assert b % (PAGE_SIZE << 3) == 0    # blocks are aligned to their size
    assert sa.free_pages_count() == 2047 - 1 - 8
    sa.free_pages(b, 3)
    sa.free_pages(a, 0)
    assert sa.buddyinfo() == before
    sa.validate()


def test_exhaustion_returns_null_and_nothing_is_lost():
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    blocks = []
    while (addr := sa.alloc_pages(0)):
        blocks.append(addr)
    assert len(blocks) == 1023 and len(set(blocks)) == 1023
    assert sa.alloc_pages(0) == 0
    for addr in blocks:
        sa.free_pages(addr, 0)
    assert sa.free_pages_count() == 1023
    assert sa.alloc_pages(9) != 0
    sa.validate()


def test_nodes_own_contiguous_frames_and_fall_back():
    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=2, memory="4M")
    a = sa.alloc_pages(10, node=1)
    assert a // PAGE_SIZE // sa.pages_per_node == 1
    assert sa.alloc_pages(10, node=1, gfp=numslab.GFP_KERNEL | numslab.__GFP_THISNODE) == 0
    b = sa.alloc_pages(9, node=1)        # falls back to node 0
    assert b and b // PAGE_SIZE // sa.pages_per_node == 0
    sa.free_pages(a, 10)
    sa.free_pages(b, 9)
    sa.validate()


@pytest.mark.parametrize("call", [
    lambda sa, a: sa.free_pages(a + 8, 0),           # not page aligned
    lambda sa, a: sa.free_pages(a, 1),               # wrong order
    lambda sa, a: sa.free_pages(a + PAGE_SIZE, 0),   # a free frame
    lambda sa, a: sa.free_pages(0, 0),               # NULL
    lambda sa, a: sa.free_pages(1 << 40, 0),         # outside the arena
    lambda sa, a: sa.free_pages(sa._obj & ~4095, 0),          # a slab page
    lambda sa, a: sa.alloc_pages(11),
    lambda sa, a: sa.alloc_pages(0, node=3),
])
def test_misuse_raises_and_changes_nothing(call):
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    a = sa.alloc_pages(0)
    sa._obj = sa.kmalloc(64)
    snap = snapshot(sa)
    with pytest.raises(numslab.SlabError):
        call(sa, a)
    assert_unchanged(sa, snap)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6), st.integers(0, 10 ** 6)),
                max_size=60))
def test_random_alloc_free_keeps_blocks_disjoint(ops):
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    live: dict[int, int] = {}
    for is_alloc, order, pick in ops:
        if is_alloc or not live:
            addr = sa.alloc_pages(order)
            if addr:
                live[addr] = order
        else:
            addr = sorted(live)[pick % len(live)]
            sa.free_pages(addr, live.pop(addr))
        spans = sorted((a, a + (PAGE_SIZE << o)) for a, o in live.items())
        assert all(e <= s for (_, e), (s, _) in zip(spans, spans[1:]))
        assert sa.free_pages_count() == 1023 - sum(1 << o for o in live.values())
    sa.validate()
