"""The page allocator: buddy splitting and merging, per-CPU page lists, nodes, exhaustion
and misuse."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

import threading
from pathlib import Path

import numslab
from numslab.engine import layout as L
from numslab.geometry import PAGE_SIZE

from conftest import assert_unchanged, snapshot

#: A machine whose boot takes no page: 6.18 (no sheaves, no barns) without
#: CONFIG_SLAB_FREELIST_RANDOM (the kmalloc caches' random sequences take ten slabs).
BARE = {"kernel": "6.18", "freelist_random": False}


def test_fresh_machine_has_all_pages_but_frame_zero():
    sa = numslab.SlabAllocator(**BARE, nr_cpus=1, memory="8M")
    assert sa.nr_pages == 2048
    assert sa.free_pages_count() == 2047
    assert sa.buddyinfo().splitlines()[0].split()[4:] == ["1"] * 10 + ["1"]


def test_split_and_merge_restore_the_free_lists():
    sa = numslab.SlabAllocator(**BARE, nr_cpus=1, memory="8M")
    before = sa.buddyinfo()
    a = sa.alloc_pages(0)
    b = sa.alloc_pages(3)
    assert a == PAGE_SIZE               # frame 1: the lowest free frame
    assert b % (PAGE_SIZE << 3) == 0    # blocks are aligned to their size
    assert sa.free_pages_count() == 2047 - 1 - 8
    sa.free_pages(b, 3)
    sa.free_pages(a, 0)
    assert sa.pcp_pages_count() == 9        # orders 0..3 wait on the CPU's pcp lists
    assert sa.free_pages_count() == 2047 - 9
    sa.validate()
    assert sa.drain_all_pages() == 9
    assert sa.buddyinfo() == before
    sa.validate()


def test_exhaustion_returns_null_and_nothing_is_lost():
    sa = numslab.SlabAllocator(**BARE, nr_cpus=1, memory="4M")
    blocks = []
    while (addr := sa.alloc_pages(0)):
        blocks.append(addr)
    assert len(blocks) == 1023 and len(set(blocks)) == 1023
    assert sa.alloc_pages(0) == 0
    for addr in blocks:
        sa.free_pages(addr, 0)
    assert sa.free_pages_count() + sa.pcp_pages_count() == 1023
    assert 0 < sa.pcp_pages_count() < sa.state.pcp[0, 0, L.P_HIGH]
    assert sa.alloc_pages(9) != 0            # found after draining the pcp lists
    sa.validate()


def test_nodes_own_contiguous_frames_and_fall_back():
    sa = numslab.SlabAllocator(**BARE, nr_cpus=2, nr_nodes=2, memory="4M")
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
    lambda sa, a: sa.free_pages(1 << 40, 0),         # outside the arena
    lambda sa, a: sa.free_pages(sa._obj & ~4095, 0),          # a slab page
    lambda sa, a: sa.alloc_pages(11),
    lambda sa, a: sa.alloc_pages(0, node=3),
])
def test_misuse_raises_and_changes_nothing(call):
    sa = numslab.SlabAllocator(**BARE, nr_cpus=1, memory="4M")
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
    sa = numslab.SlabAllocator(**BARE, nr_cpus=1, memory="4M")
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
        assert sa.free_pages_count() + sa.pcp_pages_count() == \
            1023 - sum(1 << o for o in live.values())
    sa.validate()


# ---- per-CPU page lists ------------------------------------------------------------------------
def pcp_row(sa, cpu=0, node=0):
    return sa.state.pcp[cpu, node]


def test_pcp_geometry_follows_the_kernel_formulas():
    sa = numslab.SlabAllocator(**BARE, nr_cpus=2, memory="256M")     # 65536 pages, one zone
    row = pcp_row(sa)
    assert row[L.P_BATCH] == 15                              # (65536 >> 10) / 4 -> 24 -> 16 - 1
    # min_free_kbytes = sqrt(262144 * 16) = 2048 KiB = 512 pages; low = 512 + 512 / 4 = 640
    assert row[L.P_HIGH] == 640 // 2 and pcp_row(sa, 1)[L.P_HIGH] == 320
    assert L.zone_batchsize(1 << 18) == 63 and L.zone_batchsize(3840) == 1


def zoneinfo_batches():
    text = Path("/proc/zoneinfo").read_text()
    out = []
    for zone in text.split("\nNode ")[0:]:
        managed = [int(line.split()[1]) for line in zone.splitlines()
                   if line.strip().startswith("managed")]
        batches = {int(line.split()[1]) for line in zone.splitlines()
                   if line.strip().startswith("batch:")}
        if managed and managed[0] and len(batches) == 1:
            out.append((managed[0], batches.pop()))
    return out


@pytest.mark.skipif(not Path("/proc/zoneinfo").exists(), reason="no /proc/zoneinfo")
def test_pcp_batch_matches_this_machines_kernel():
    zones = zoneinfo_batches()
    assert zones, "no zone with managed pages in /proc/zoneinfo"
    for managed, batch in zones:
        assert L.zone_batchsize(managed) == batch, (managed, batch)


def test_a_freed_page_is_the_next_one_handed_out():
    sa = numslab.SlabAllocator(**BARE, nr_cpus=1, memory="64M")      # batch 3
    a = sa.alloc_pages(0)
    assert sa.pcp_pages_count() == 2                         # a batch of 3 came, 1 went
    b = sa.alloc_pages(0)
    sa.free_pages(a, 0)
    assert sa.alloc_pages(0) == a                            # hot page first (list head)
    sa.free_pages(b, 0)
    sa.free_pages(a, 0)
    sa.validate()


def test_higher_orders_refill_smaller_batches_and_skip_the_pcp_above_order_3():
    sa = numslab.SlabAllocator(**BARE, nr_cpus=1, memory="64M")
    a = sa.alloc_pages(1)                                    # max(3 >> 1, 2) = 2 blocks
    assert sa.pcp_pages_count() == 2
    free = sa.free_pages_count()
    b = sa.alloc_pages(4)
    sa.free_pages(b, 4)                                      # straight back to the buddy
    assert sa.free_pages_count() == free and sa.pcp_pages_count() == 2
    sa.free_pages(a, 1)
    assert sa.pcp_pages_count() == 4
    sa.validate()


def test_a_full_pcp_list_gives_its_oldest_pages_back():
    sa = numslab.SlabAllocator(**BARE, nr_cpus=1, memory="64M")
    high, batch = pcp_row(sa)[L.P_HIGH], pcp_row(sa)[L.P_BATCH]
    pages = [sa.alloc_pages(0) for _ in range(high + 10)]
    sa.drain_all_pages()
    total = sa.free_pages_count()
    counts = []
    for p in pages:
        sa.free_pages(p, 0)
        counts.append(sa.pcp_pages_count())
        assert sa.pcp_pages_count() < high
        assert sa.free_pages_count() + sa.pcp_pages_count() == total + len(counts)
    drop = next(i for i in range(1, len(counts)) if counts[i] < counts[i - 1])
    assert counts[drop - 1] == high - 1 and counts[drop] == high - batch
    assert pages[0] >> 12 != 0 and (pages[0] >> 12) not in pcp_frames(sa)   # oldest went
    sa.validate()


def pcp_frames(sa, cpu=0, node=0, order=0):
    row = pcp_row(sa, cpu, node)
    out, pfn = [], int(row[L.P_LISTS + 2 * order])
    while pfn != L.NIL:
        out.append(pfn)
        pfn = int(sa.state.pg_next[pfn])
    return out


def test_exhaustion_drains_the_other_cpus_lists():
    sa = numslab.SlabAllocator(**BARE, nr_cpus=2, memory="4M")
    mine = []
    while (addr := sa.alloc_pages(0)):
        mine.append(addr)
    theirs = mine[:100]

    def other_cpu():
        assert sa._cpu() == 1
        for p in theirs:
            sa.free_pages(p, 0)
    t = threading.Thread(target=other_cpu)
    t.start()
    t.join()
    assert sa.state.pcp[1, 0, L.P_COUNT] > 0
    again = [sa.alloc_pages(0) for _ in range(100)]          # CPU 0 finds them all
    assert sorted(again) == sorted(theirs) and sa.alloc_pages(0) == 0
    sa.validate()


def zoneinfo_fields(text):
    """{(node, zone): {"managed": .., "min": .., "low": .., "high": ..}} from zoneinfo text."""
    out, key = {}, None
    for line in text.splitlines():
        if line.startswith("Node "):
            parts = line.replace(",", "").split()
            key = (int(parts[1]), parts[3])
            out[key] = {}
        elif key and line.startswith("        ") and len(line.split()) == 2 \
                and line.split()[0] in ("min", "low", "high", "managed"):
            out[key][line.split()[0]] = int(line.split()[1])
    return out


@pytest.mark.skipif(not Path("/proc/zoneinfo").exists() or
                    not Path("/proc/sys/vm/min_free_kbytes").exists(), reason="no procfs")
def test_watermarks_match_this_machines_kernel():
    zones = zoneinfo_fields(Path("/proc/zoneinfo").read_text())
    kbytes = int(Path("/proc/sys/vm/min_free_kbytes").read_text())
    wsf = Path("/proc/sys/vm/watermark_scale_factor")
    scale = int(wsf.read_text()) if wsf.exists() else 10
    lowmem = sum(z.get("managed", 0) for z in zones.values())
    checked = 0
    for key, z in zones.items():
        if z.get("managed") and {"min", "low", "high"} <= z.keys():
            assert L.zone_watermarks(z["managed"], lowmem, kbytes, scale) == \
                (z["min"], z["low"], z["high"]), key
            checked += 1
    assert checked


def test_zoneinfo_shows_watermarks_and_every_cpus_pcp():
    sa = numslab.SlabAllocator(**BARE, nr_cpus=2, memory="64M")
    a = sa.alloc_pages(0)
    text = sa.zoneinfo()
    z = zoneinfo_fields(text)[(0, "Normal")]
    assert z == {"min": 256, "low": 320, "high": 384, "managed": 16384}
    counts = [int(line.split()[1]) for line in text.splitlines() if "count:" in line]
    assert counts == [2, 0] and sum(counts) == sa.pcp_pages_count()
    assert text.count("batch:    3") == 2 and text.count("high:     160") == 2
    sa.free_pages(a, 0)
