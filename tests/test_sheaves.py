"""Per-CPU sheaves (Linux 6.18) and the prefilled-sheaf API, against kernel_bulk_sheaves.md
part 2: main/spare/barn transitions with their stat items, the barn limit of 10 full
sheaves, bulk paths through the sheaves, remote-node objects, shrink and destroy."""
from __future__ import annotations

import numba
import numpy as np
import pytest

import numslab
from numslab import GFP_ATOMIC, GFP_KERNEL, SLAB_ARRAY_ALLOC_LOCAL, SLAB_HWCACHE_ALIGN
from numslab.engine.layout import (C_MAIN, C_SPARE, CA_USER_SHEAVES, N_BARN_FULL, N_NR_EMPTY,
                             N_NR_FULL, SH_NEXT, SH_OBJECTS, SH_SIZE)

from numslab.lab.warm import counts
from conftest import assert_unchanged, free_total, new_slab_order, snapshot

CAP = 4
OBJS = 16


# ---- helpers ------------------------------------------------------------------------------
@pytest.fixture
def sc(sa):
    """A 256-byte cache with 4-object sheaves on the 2-CPU allocator."""
    c = sa.kmem_cache_create("sh", 256, flags=SLAB_HWCACHE_ALIGN, sheaf_capacity=CAP)
    assert c.objs_per_slab == OBJS
    return c


def words(sa):
    return sa._mem              # the arena and the shadow half where sheaves live


def sheaf_size(sa, sheaf):
    return int(words(sa)[(sheaf >> 3) + SH_SIZE])


def sheaf_objs(sa, sheaf):
    w = (sheaf >> 3) + SH_OBJECTS
    return words(sa)[w:w + sheaf_size(sa, sheaf)].tolist()


def pcs(sa, c, cpu=0):
    """(main size, spare size or None) of ``cpu``."""
    row = sa.state.cpu[c.id, cpu]
    spare = int(row[C_SPARE])
    return sheaf_size(sa, int(row[C_MAIN])), (sheaf_size(sa, spare) if spare else None)


def main_of(sa, c, cpu=0):
    return int(sa.state.cpu[c.id, cpu, C_MAIN])


def object_of(sa, sheaf):
    """The kmalloc object of the sheaf with handle ``sheaf`` (its words are the arena's size
    further on, in the shadow half)."""
    return sheaf - sa.memory.size


def spare_of(sa, c, cpu=0):
    return int(sa.state.cpu[c.id, cpu, C_SPARE])


def barn(sa, c, node=0):
    """(full sheaves, empty sheaves) in the node's barn."""
    return int(sa.state.node[c.id, node, N_NR_FULL]), int(sa.state.node[c.id, node, N_NR_EMPTY])


def barn_full_sheaves(sa, c, node=0):
    out, s = [], int(sa.state.node[c.id, node, N_BARN_FULL])
    while s:
        out.append(s)
        s = int(words(sa)[(s >> 3) + SH_NEXT])
    return out


def delta(cache, before):
    return {k: v - before[k] for k, v in cache.stats.items() if v != before[k]}


def bulk(sa, c, n, cpu=0):
    out = np.empty(n, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, n, out, cpu=cpu) == n
    return out


def node_of(sa, addr):
    return int(addr) // 4096 // sa.pages_per_node


def km(sa, name):
    return sa.find_cache(name)


def fill_barn(sa, c):
    """Free 60 objects one by one on CPU 0 of a fresh cache: main and spare end full and
    the barn holds MAX_FULL_SHEAVES = 10 full sheaves; returns the stat delta."""
    objs = bulk(sa, c, 60)                         # fresh: from the slabs
    st = c.stats
    for a in objs:
        sa.kmem_cache_free(c, int(a), cpu=0)
        assert barn(sa, c)[0] <= 10
    assert pcs(sa, c) == (4, 4) and barn(sa, c) == (10, 0)
    return delta(c, st)


# ---- sheaves are kmalloc objects ----------------------------------------------------------
@pytest.mark.parametrize("cap, kmalloc, nbytes", [
    (4, "kmalloc-64", 64), (12, "kmalloc-128", 128), (13, "kmalloc-192", 192),
    (32, "kmalloc-512", 512), (1000, "kmalloc-8k", 8192)])
def test_sheaves_are_kmalloc_objects(sa, cap, kmalloc, nbytes):
    k = km(sa, kmalloc)
    base = k.live_objects
    c = sa.kmem_cache_create("s", 256, sheaf_capacity=cap)   # 32 + 8 * cap bytes each
    barns = sa.nr_nodes if kmalloc == "kmalloc-64" else 0     # 48 bytes each, one per node
    seq = kmalloc == "kmalloc-64"           # its random sequence: 16 objects, 64 bytes
    assert k.live_objects == base + sa.nr_cpus + barns + seq  # an empty main per CPU
    assert k.barn_objects == barns and sa.find(int(sa.state.random_seq[c.id]))["kind"] == \
        "random_seq"
    assert c.stats["sheaf_alloc"] == sa.nr_cpus
    for cpu in range(sa.nr_cpus):
        assert sa.ksize(object_of(sa, main_of(sa, c, cpu))) == nbytes
        assert pcs(sa, c, cpu) == (0, None)
    assert barn(sa, c) == (0, 0)
    a = sa.kmem_cache_alloc(c, cpu=0)                         # a full sheaf is made
    assert k.live_objects == base + sa.nr_cpus + barns + seq + 1
    assert pcs(sa, c) == (cap - 1, None)                      # refilled to capacity
    sa.validate()
    sa.kmem_cache_free(c, a, cpu=0)
    sa.kmem_cache_destroy(c)
    assert k.live_objects == base
    sa.validate()


def test_large_sheaves_are_large_kmallocs(sa):
    pages = free_total(sa)
    c = sa.kmem_cache_create("big", 64, sheaf_capacity=2000)  # 16032 bytes: order 2
    assert sa.ksize(object_of(sa, main_of(sa, c))) == 16384
    # and its barn, in kmalloc-64's CPU slab, and its random sequence (64 objects, 256
    # bytes) in kmalloc-256's, both slabs of boot's random sequences: no new page
    assert free_total(sa) == pages - 2 * 4 and km(sa, "kmalloc-64").barn_objects == 1
    assert km(sa, "kmalloc-256").random_seq_objects == 2      # kmalloc-64's and its own
    sa.kmem_cache_destroy(c)
    assert free_total(sa) == pages and len(km(sa, "kmalloc-64")) == 0
    assert km(sa, "kmalloc-64").live_objects == 4             # boot's: 256, 512, 1k, 2k's
    sa.validate()


# ---- allocation through the main sheaf ------------------------------------------------------
def test_validate_names_a_cpu_of_a_cache_with_sheaves_without_a_main_sheaf(sa, sc):
    # numslab.jit's inlined pop reads C_MAIN unchecked; load refuses a file without one, and
    # validate passed it
    a = sc.alloc()
    sc.free(a)
    sa.validate()
    main = int(sa.state.cpu[sc.id, 1, C_MAIN])
    sa.state.cpu[sc.id, 1, C_MAIN] = 0
    with pytest.raises(numslab.SlabCorruptionError,
                       match=r"has no main sheaf \(cache sh, cpu 1\)"):
        sa.validate()
    sa.state.cpu[sc.id, 1, C_MAIN] = main
    sa.validate()


def test_first_alloc_refills_a_new_sheaf_from_the_slabs(sa, sc):
    st = sc.stats
    a = sa.kmem_cache_alloc(sc, cpu=0)
    assert delta(sc, st) == {"alloc_cpu_sheaf": 1, "sheaf_refill": CAP, "sheaf_alloc": 1,
                             "barn_get_fail": 1, "alloc_slowpath": 1, "alloc_fastpath": 3,
                             "alloc_slab": 1}
    assert pcs(sa, sc) == (3, None)
    assert barn(sa, sc) == (0, 1)                  # the empty main went to the barn
    rest = [sa.kmem_cache_alloc(sc, cpu=0) for _ in range(3)]
    order = new_slab_order(sc, rest[-1])           # the refill took a new slab's first 4
    assert [a] + rest == order[3::-1].tolist()     # LIFO: top of the sheaf first
    st = sc.stats
    b = sa.kmem_cache_alloc(sc, cpu=0)             # empty main: the barn's empty is refilled
    assert delta(sc, st) == {"alloc_cpu_sheaf": 1, "sheaf_refill": CAP, "barn_get_fail": 1,
                             "alloc_fastpath": 4}
    assert b == order[7]
    assert pcs(sa, sc) == (3, None) and barn(sa, sc) == (0, 1)
    assert sc.live_objects == 5
    sa.validate()


def test_free_fills_main_then_spare_then_the_barn_up_to_ten(sa, sc):
    k = km(sa, "kmalloc-64")
    base = k.live_objects
    d = fill_barn(sa, sc)
    # frees 1-4 fill main; 5: a new empty sheaf, main becomes spare; 9, 13, ..., 45: main
    # (full) goes to the barn for a new empty one; 49, 53, 57: the barn is full, so the
    # spare is flushed to the slabs and becomes main
    assert d["free_cpu_sheaf"] == 60
    assert d["sheaf_alloc"] == 11 and d["barn_put"] == 10
    assert d["barn_put_fail"] == 3 and d["sheaf_flush"] == 12
    assert d.get("sheaf_free", 0) == 0
    assert k.live_objects == base + 11
    assert sc.live_objects == 0
    sa.validate()


def test_alloc_uses_main_then_spare_then_full_barn_sheaves(sa, sc):
    fill_barn(sa, sc)
    main, spare = sheaf_objs(sa, main_of(sa, sc)), sheaf_objs(sa, spare_of(sa, sc))
    head = barn_full_sheaves(sa, sc)[0]
    from_barn = sheaf_objs(sa, head)
    st = sc.stats
    got = [sa.kmem_cache_alloc(sc, cpu=0) for _ in range(8)]
    assert got == main[::-1] + spare[::-1]
    assert delta(sc, st) == {"alloc_cpu_sheaf": 8}
    assert barn(sa, sc) == (10, 0)
    st = sc.stats
    assert sa.kmem_cache_alloc(sc, cpu=0) == from_barn[-1]
    assert delta(sc, st) == {"alloc_cpu_sheaf": 1, "barn_get": 1}
    assert main_of(sa, sc) == head
    assert barn(sa, sc) == (9, 1)
    sa.validate()


def test_gfp_atomic_never_refills_a_sheaf(sa, sc):
    st = sc.stats
    a = sa.kmem_cache_alloc(sc, GFP_ATOMIC, cpu=0)
    d = delta(sc, st)
    assert d == {"barn_get_fail": 1, "alloc_slowpath": 1, "alloc_slab": 1}
    assert pcs(sa, sc) == (0, None) and barn(sa, sc) == (0, 0)
    sa.kmem_cache_free(sc, a, cpu=0)
    assert pcs(sa, sc) == (1, None)
    st = sc.stats
    assert sa.kmem_cache_alloc(sc, GFP_ATOMIC, cpu=0) == a
    assert delta(sc, st) == {"alloc_cpu_sheaf": 1}
    sa.validate()


def test_alloc_node_for_another_node_bypasses_the_sheaves(sa2):
    c = sa2.kmem_cache_create("n", 256, flags=SLAB_HWCACHE_ALIGN, sheaf_capacity=CAP)
    assert sa2.cpu_to_node(0) == 0 and sa2.cpu_to_node(2) == 1
    sa2.kmem_cache_alloc(c, cpu=0)                 # CPU 0's main now holds 3 objects
    st = c.stats
    a = sa2.kmem_cache_alloc_node(c, GFP_KERNEL, node=1, cpu=0)
    assert node_of(sa2, a) == 1
    d = delta(c, st)
    assert "alloc_cpu_sheaf" not in d and d["alloc_node_mismatch"] == 1
    assert pcs(sa2, c) == (3, None)
    st = c.stats
    b = sa2.kmem_cache_alloc_node(c, GFP_KERNEL, node=0, cpu=0)
    assert node_of(sa2, b) == 0 and delta(c, st) == {"alloc_cpu_sheaf": 1}
    sa2.validate()


# ---- bulk paths ---------------------------------------------------------------------------
def test_bulk_alloc_drains_main_spare_and_barn_then_the_slabs(sa, sc):
    fill_barn(sa, sc)
    expect = (sheaf_objs(sa, main_of(sa, sc)) + sheaf_objs(sa, spare_of(sa, sc))
              + sum((sheaf_objs(sa, s) for s in barn_full_sheaves(sa, sc)), []))
    st = sc.stats
    out = bulk(sa, sc, 20)
    assert out.tolist() == expect[:20]             # each sheaf's top block, in array order
    assert delta(sc, st) == {"alloc_cpu_sheaf": 20, "barn_get": 3}
    assert pcs(sa, sc) == (0, 0) and barn(sa, sc) == (7, 3)
    st = sc.stats
    out2 = bulk(sa, sc, 40)                        # 28 from the barn, 12 from the slabs
    assert out2[:28].tolist() == expect[20:48]
    d = delta(sc, st)
    assert d["alloc_cpu_sheaf"] == 28 and d["barn_get"] == 7 and d["barn_get_fail"] == 1
    assert d.get("alloc_fastpath", 0) + d["alloc_slowpath"] == 12
    assert "sheaf_refill" not in d and "sheaf_alloc" not in d   # bulk never makes sheaves
    assert barn(sa, sc) == (0, 10)
    assert sc.live_objects == 60 and len(set(out.tolist() + out2.tolist())) == 60
    sa.validate()


def test_bulk_free_fills_sheaves_but_never_allocates_one(sa, sc):
    objs = bulk(sa, sc, 10)
    arr = objs.copy()
    st = sc.stats
    sa.kmem_cache_free_bulk(sc, 10, arr, cpu=0)
    d = delta(sc, st)
    # main takes 4; it is full, there is no spare and the barn has no empty sheaf: the
    # other 6 go to the slabs (the CPU slab: one detached freelist, fast path)
    assert d == {"free_cpu_sheaf": 4, "free_fastpath": 6}
    assert sheaf_objs(sa, main_of(sa, sc)) == objs[:4].tolist()
    assert pcs(sa, sc) == (4, None) and barn(sa, sc) == (0, 0)
    assert sc.live_objects == 0
    sa.validate()


def test_bulk_free_swaps_spare_and_trades_with_the_barn(sa, sc):
    fill_barn(sa, sc)
    objs = bulk(sa, sc, 20)                        # pcs (0, 0), barn (7 full, 3 empty)
    st = sc.stats
    sa.kmem_cache_free_bulk(sc, 12, objs[:12].copy(), cpu=0)
    # main 0 -> 4; full, spare empty: swap, 4 more; both full: main to the barn for an
    # empty one, 4 more
    assert delta(sc, st) == {"free_cpu_sheaf": 12, "barn_put": 1}
    assert pcs(sa, sc) == (4, 4) and barn(sa, sc) == (8, 2)
    st = sc.stats
    sa.kmem_cache_free_bulk(sc, 8, objs[12:].copy(), cpu=0)
    assert delta(sc, st) == {"free_cpu_sheaf": 8, "barn_put": 2}
    assert barn(sa, sc) == (10, 0)
    more = bulk(sa, sc, 8)                         # main and spare again
    st = sc.stats
    sa.kmem_cache_free_bulk(sc, 8, more.copy(), cpu=0)
    assert pcs(sa, sc) == (4, 4)
    st = sc.stats
    last = sa.kmem_cache_alloc(sc, cpu=0)          # main 3
    sa.kmem_cache_free_bulk(sc, 1, np.array([last]), cpu=0)
    assert delta(sc, st)["free_cpu_sheaf"] == 1
    extra = np.empty(17, np.int64)                 # a fresh slab, not through sheaves
    assert sa.kmem_cache_alloc_array(sc, GFP_KERNEL, 17, extra,
                                     flags=numslab.SLAB_ARRAY_ALLOC_NEW, cpu=1) == 16
    st = sc.stats
    sa.kmem_cache_free_bulk(sc, 16, extra, cpu=0)
    # both full and the barn holds 10: BARN_PUT_FAIL, everything to the slabs
    d = delta(sc, st)
    assert d["barn_put_fail"] == 1 and "free_cpu_sheaf" not in d
    assert barn(sa, sc) == (10, 0) and pcs(sa, sc) == (4, 4)
    assert sc.live_objects == 0
    sa.validate()


@numba.njit
def _jit_bulk_round(h, cid, out, nr):
    """numslab.jit's bulk allocation of ``nr`` objects into ``out``, then their free."""
    got = numslab.jit.kmem_cache_alloc_bulk(h, cid, nr, out, 0, GFP_KERNEL)
    numslab.jit.kmem_cache_free_bulk(h, cid, got, out, 0)
    return got


@pytest.mark.parametrize("gen", ["6.18", "7.0"])
@pytest.mark.parametrize("via", ["facade", "jit"])
def test_bulk_batches_the_main_sheaf_begins_and_the_spare_ends(gen, via):
    """A batch the main sheaf holds part of and the spare the rest (numslab.jit's inline
    case and the units' common case): the main's objects, then the spare's top, the
    sheaves swapped; its free fills the main, swaps, and puts the rest on the new main, as
    alloc_from_pcs_bulk and free_to_pcs_bulk do batch by batch."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel=gen)
    c = sa.kmem_cache_create("ms", 256, flags=SLAB_HWCACHE_ALIGN, sheaf_capacity=CAP)
    cap = c.sheaf_capacity
    for a in bulk(sa, c, cap + 1):
        sa.kmem_cache_free(c, int(a), cpu=0)
    assert pcs(sa, c) == (1, cap)
    m, s = main_of(sa, c), spare_of(sa, c)
    mo, so = sheaf_objs(sa, m), sheaf_objs(sa, s)
    fast = ("alloc_cpu_sheaf", "free_cpu_sheaf") if gen == "6.18" else \
        ("alloc_fastpath", "free_fastpath")
    st = c.stats
    out = np.zeros(3, np.int64)
    if via == "jit":
        assert _jit_bulk_round(sa.handle, c.id, out, 3) == 3
    else:
        assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 3, out, cpu=0) == 3
        assert (main_of(sa, c), spare_of(sa, c)) == (s, m) and pcs(sa, c) == (cap - 2, 0)
        assert delta(c, st) == {fast[0]: 3}
        sa.kmem_cache_free_bulk(c, 3, out.copy(), cpu=0)
    assert out.tolist() == mo + so[-2:]
    assert delta(c, st) == {fast[0]: 3, fast[1]: 3}
    assert (main_of(sa, c), spare_of(sa, c)) == (m, s)
    assert sheaf_objs(sa, m) == [out[2]] and sheaf_objs(sa, s) == so[:-2] + out[:2].tolist()
    assert c.live_objects == 0 and barn(sa, c) == (0, 0)
    sa.validate()


def test_bulk_alloc_failure_gives_sheaf_objects_to_the_slabs():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("x", 256, flags=SLAB_HWCACHE_ALIGN, sheaf_capacity=8)
    held = []
    out = np.empty(160, np.int64)
    while sa.kmem_cache_alloc_bulk(c, GFP_KERNEL | numslab.__GFP_NOWARN, 160, out):
        held += out.tolist()
    for a in held[:8]:
        sa.kmem_cache_free(c, a, cpu=0)
    held = held[8:]
    assert pcs(sa, c) == (8, None)
    st = c.stats
    live = c.live_objects
    big = np.empty(300, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL | numslab.__GFP_NOWARN, 300, big) == 0
    d = delta(c, st)
    assert d["alloc_cpu_sheaf"] == 8                 # taken from main first...
    assert pcs(sa, c) == (0, None)                   # ...and given to slabs, not sheaves
    assert "free_cpu_sheaf" not in d
    assert c.live_objects == live
    sa.validate()
    spare = c.total_objects - live                   # all of them can still be had
    out = np.empty(spare, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, spare, out) == spare
    sa.validate()


def test_kfree_bulk_never_uses_sheaves(sa, sc):
    objs = bulk(sa, sc, 10)
    st = sc.stats
    sa.kfree_bulk(10, objs.copy(), cpu=0)
    d = delta(sc, st)
    assert "free_cpu_sheaf" not in d and d == {"free_fastpath": 10}
    assert pcs(sa, sc) == (0, None)
    sa.validate()


def test_free_bulk_misuse_on_a_sheaf_cache_changes_nothing(sa, sc):
    objs = bulk(sa, sc, 12)
    sa.kmem_cache_free(sc, int(objs[3]), cpu=0)      # now in CPU 0's main sheaf
    for arr, at in ((objs.copy(), 3), (np.append(objs[4:], objs[5]), 8)):
        snap = snapshot(sa)
        with pytest.raises(numslab.DoubleFreeError, match=rf"element {at}\b"):
            sa.kmem_cache_free_bulk(sc, len(arr), arr, cpu=0)
        assert_unchanged(sa, snap)


def test_array_local_takes_main_and_spare_then_the_cpu_freelist(sa, sc):
    fill_barn(sa, sc)
    main, spare = sheaf_objs(sa, main_of(sa, sc)), sheaf_objs(sa, spare_of(sa, sc))
    a = sa.kmem_cache_alloc(sc, GFP_ATOMIC, cpu=0)   # from main: 3 left
    out = np.empty(20, np.int64)
    st = sc.stats
    got = sa.kmem_cache_alloc_array(sc, GFP_KERNEL, 20, out, flags=SLAB_ARRAY_ALLOC_LOCAL,
                                    cpu=0)
    assert a == main[-1]
    assert out[:7].tolist() == main[:3] + spare and got >= 7
    assert delta(sc, st) == {"alloc_array_local": got}
    assert pcs(sa, sc) == (0, 0) and barn(sa, sc) == (10, 0)   # the barn is not LOCAL
    assert sc.live_objects == 1 + got
    sa.validate()


# ---- remote-node objects ----------------------------------------------------------------------
def test_remote_node_objects_bypass_the_sheaves(sa2):
    c = sa2.kmem_cache_create("r", 256, flags=SLAB_HWCACHE_ALIGN, sheaf_capacity=8)
    remote = bulk(sa2, c, 9, cpu=2)                  # CPU 2 is on node 1
    local = bulk(sa2, c, 6, cpu=0)
    assert {node_of(sa2, a) for a in remote} == {1} and {node_of(sa2, a) for a in local} == {0}
    before = c.stats_per_cpu()[0]
    sa2.kmem_cache_free(c, int(remote[0]), cpu=0)
    names = numslab.flags.STAT_NAMES
    d0 = dict(zip(names, c.stats_per_cpu()[0] - before))
    assert d0["free_cpu_sheaf"] == 0 and d0["free_slowpath"] == 1
    assert pcs(sa2, c) == (0, None)
    arr = np.empty(14, np.int64)
    arr[0:12:2], arr[1:12:2], arr[12:] = remote[1:7], local, remote[7:9]
    local_set = set(local.tolist())
    before = c.stats_per_cpu()[0]
    sa2.kmem_cache_free_bulk(c, 14, arr, cpu=0)
    d0 = dict(zip(names, c.stats_per_cpu()[0] - before))
    assert d0["free_cpu_sheaf"] == 6
    assert set(sheaf_objs(sa2, main_of(sa2, c))) == local_set
    assert set(arr[:6].tolist()) == local_set        # remote objects were moved out
    # the 8 remote objects share CPU 2's frozen slab: one detached freelist, one slow path
    assert d0["free_slowpath"] == 1 and d0["free_frozen"] == 1 and d0["free_fastpath"] == 0
    assert c.live_objects == 0
    # for CPU 2 those are local objects: its own sheaves, and node 1's barn
    a = sa2.kmem_cache_alloc(c, cpu=2)
    assert node_of(sa2, a) == 1 and pcs(sa2, c, 2) == (7, None)
    assert barn(sa2, c, 1) == (0, 1) and barn(sa2, c, 0) == (0, 0)
    before = c.stats_per_cpu()[2]
    sa2.kmem_cache_free(c, a, cpu=2)
    d2 = dict(zip(names, c.stats_per_cpu()[2] - before))
    assert d2["free_cpu_sheaf"] == 1 and pcs(sa2, c, 2) == (8, None)
    sa2.validate()


# ---- shrink and destroy -------------------------------------------------------------------------
def test_shrink_flushes_main_and_spare_and_frees_the_spare(sa, sc):
    k = km(sa, "kmalloc-64")
    objs = [sa.kmem_cache_alloc(sc, cpu=0) for _ in range(8)]
    for a in objs:
        sa.kmem_cache_free(sc, a, cpu=0)
    assert pcs(sa, sc) == (4, 4) and barn(sa, sc) == (0, 0)
    base = k.live_objects
    st = sc.stats
    sa.kmem_cache_shrink(sc)
    d = delta(sc, st)
    assert d["sheaf_flush"] == 8 and d["sheaf_free"] == 1
    assert pcs(sa, sc) == (0, None) and barn(sa, sc) == (0, 0)
    assert sc.slabs == 0 and sc.live_objects == 0
    assert k.live_objects == base - 1                # only the spare was freed
    sa.validate()


def test_shrink_empties_the_barn(sa, sc):
    k = km(sa, "kmalloc-64")
    base = k.live_objects                            # the two mains
    fill_barn(sa, sc)
    st = sc.stats
    sa.kmem_cache_shrink(sc)
    d = delta(sc, st)
    assert d["sheaf_flush"] == 48 and d["sheaf_free"] == 11   # spare + 10 from the barn
    assert pcs(sa, sc) == (0, None) and barn(sa, sc) == (0, 0)
    assert k.live_objects == base
    assert sc.live_objects == 0
    # 6.18 flushes the barn's sheaves after flushing the CPUs: slabs that were full get
    # put on the shrinking CPU's partial list (put_cpu_partial), where they stay, empty
    assert sc.partial == 0 and sc.slabs == sc.cpu_slabs
    sa.validate()
    sa.kmem_cache_shrink(sc)
    assert sc.slabs == 0
    sa.validate()


def test_destroy_frees_every_sheaf(sa):
    k = km(sa, "kmalloc-64")
    base = k.live_objects
    c = sa.kmem_cache_create("d", 256, flags=SLAB_HWCACHE_ALIGN, sheaf_capacity=CAP)
    fill_barn(sa, c)
    assert k.live_objects == base + 2 + 11 + 1 + 1     # the barn (one node), random_seq
    sa.kmem_cache_destroy(c)
    assert k.live_objects == base
    sa.kmem_cache_create("d", 256, sheaf_capacity=CAP)   # the name is free again
    sa.validate()


# ---- the prefill API -----------------------------------------------------------------------------
def test_prefill_refill_and_return(sa, sc):
    k128 = km(sa, "kmalloc-128")
    st = sc.stats
    s = sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 3)
    assert s and delta(sc, st) == {"sheaf_prefill_slow": 1, "barn_get_fail": 1,
                                   "sheaf_alloc": 1, "sheaf_refill": CAP,
                                   "alloc_slowpath": 1, "alloc_fastpath": 3,
                                   "alloc_slab": 1}
    assert sa.kmem_cache_sheaf_size(s) == CAP >= 3   # refilled to the full capacity
    assert sa.sheaf_capacity_of(s) == CAP
    assert sc.live_objects == 0                      # objects in a sheaf are not handed out
    sa.validate()
    inside = sheaf_objs(sa, s)
    got = [sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL, s) for _ in range(CAP)]
    assert got == inside[::-1]
    assert sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL, s) == 0   # empty: no fallback
    assert sa.kmem_cache_sheaf_size(s) == 0 and sc.live_objects == CAP
    sa.validate()

    st = sc.stats
    assert sa.kmem_cache_refill_sheaf(sc, GFP_KERNEL, s, 2) == s
    assert sa.kmem_cache_sheaf_size(s) == CAP and delta(sc, st)["sheaf_refill"] == CAP
    assert sa.kmem_cache_refill_sheaf(sc, GFP_KERNEL, s, CAP) == s  # already enough

    k_base = k128.live_objects
    st = sc.stats
    big = sa.kmem_cache_refill_sheaf(sc, GFP_KERNEL, s, 10)         # needs a bigger one
    assert big and big != s
    assert sa.sheaf_capacity_of(big) == 10 and sa.kmem_cache_sheaf_size(big) == 10
    d = delta(sc, st)
    assert d["sheaf_prefill_oversize"] == 1 and d["sheaf_return_fast"] == 1
    assert "sheaf_alloc" not in d and "sheaf_refill" not in d
    assert spare_of(sa, sc) == s and pcs(sa, sc) == (0, CAP)         # old one: the spare
    assert k128.live_objects == k_base + 1            # 32 + 8 * 10 bytes
    with pytest.raises(numslab.BadAddressError):
        sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL, s)             # no longer the user's
    sa.validate()

    st = sc.stats
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, big)   # oversize: flushed and kfree'd
    d = delta(sc, st)
    assert d["sheaf_flush"] == 10
    assert not {"sheaf_free", "sheaf_return_fast", "sheaf_return_slow", "barn_put"} & set(d)
    assert k128.live_objects == k_base
    with pytest.raises(numslab.BadAddressError):
        sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, big)
    sa.validate()

    st = sc.stats
    s2 = sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 2)   # the spare, as it is
    assert s2 == s and delta(sc, st) == {"sheaf_prefill_fast": 1}
    s3 = sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, CAP)
    assert s3 not in (0, s)
    st = sc.stats
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, s2)        # no spare: becomes it
    assert delta(sc, st) == {"sheaf_return_fast": 1}
    sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL, s3)     # 3 left
    st = sc.stats
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, s3)        # topped up into the barn
    d = delta(sc, st)
    assert d["sheaf_return_slow"] == 1 and d["barn_put"] == 1 and d["sheaf_refill"] == 1
    assert barn(sa, sc) == (1, 0) and barn_full_sheaves(sa, sc) == [s3]
    st = sc.stats
    assert sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 1) == s2      # spare first
    assert sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 1) == s3      # then the barn
    assert delta(sc, st) == {"sheaf_prefill_fast": 1, "sheaf_prefill_slow": 1,
                             "barn_get": 1}
    for h in (s2, s3):
        sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, h)
    sa.validate()


def test_return_to_a_full_barn_flushes_and_frees(sa, sc):
    handles = [sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, CAP) for _ in range(12)]
    assert len(set(handles)) == 12 and all(handles)
    st = sc.stats
    for h in handles[:11]:
        sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, h)
    assert barn(sa, sc) == (10, 0) and spare_of(sa, sc) == handles[0]
    d = delta(sc, st)
    assert d == {"sheaf_return_fast": 1, "sheaf_return_slow": 10, "barn_put": 10}
    st = sc.stats
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, handles[11])
    d = delta(sc, st)
    assert d["sheaf_return_slow"] == 1 and d["sheaf_flush"] == CAP and d["sheaf_free"] == 1
    assert "barn_put" not in d and barn(sa, sc) == (10, 0)
    sa.validate()


def test_prefill_oversize_sheaf(sa, sc):
    st = sc.stats
    s = sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 6)
    d = delta(sc, st)
    assert d["sheaf_prefill_oversize"] == 1
    assert not {"sheaf_alloc", "sheaf_refill", "sheaf_prefill_slow"} & set(d)
    assert sa.sheaf_capacity_of(s) == 6 and sa.kmem_cache_sheaf_size(s) == 6
    a, b = (sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL, s) for _ in range(2))
    assert sa.kmem_cache_refill_sheaf(sc, GFP_KERNEL, s, 5) == s   # fits: filled to 6
    assert sa.kmem_cache_sheaf_size(s) == 6
    sa.validate()
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, s)
    assert spare_of(sa, sc) == 0                      # oversize never becomes the spare
    sa.kmem_cache_free(sc, a)
    sa.kmem_cache_free(sc, b)
    sa.validate()


def test_a_6_18_debug_cache_s_prefilled_sheaf_of_size_0_is_freed_when_returned():
    # A debug cache has no sheaves (capacity 0), so 6.18's size 0 was not "oversize": the
    # prefill took the per-CPU path and the return made the sheaf the CPU's spare, which
    # nothing frees for a cache without sheaves; its kmalloc-32 object leaked (a
    # kmalloc-32 object no user held; after a destroy, lost for good). Every prefilled sheaf
    # of a debug cache is oversize, freed when it comes back.
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=1, memory="4M", slab_debug="F")
    c = sa.kmem_cache_create("dbg", 100, sheaf_capacity=CAP)
    k32 = sa.find_cache("kmalloc-32")
    live = k32.live_objects
    s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 0)
    assert s and sa.kmem_cache_sheaf_size(s) == 0 and sa.sheaf_capacity_of(s) == 0
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s)
    assert spare_of(sa, c) == 0
    assert k32.live_objects == live and len(k32) == 0
    sa.kmem_cache_destroy(c)
    sa.kmem_cache_create("next", 100)
    assert k32.live_objects == live and len(k32) == 0
    sa.validate()


def test_sheaf_capacity_of_refuses_what_is_no_prefilled_sheaf(sa, sc):
    s = sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 4)
    arena = sa.memory.size
    # before: read any word of the state (-8: the last), or raised IndexError past it
    for bad in (-8, 0, 4096, s - arena, s + 8, 2 * arena + 8, 4 * arena):
        with pytest.raises(numslab.BadAddressError, match="sheaf_capacity_of"):
            sa.sheaf_capacity_of(bad)
    assert sa.sheaf_capacity_of(s) >= 4
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, s)
    with pytest.raises(numslab.BadAddressError):
        sa.sheaf_capacity_of(s)
    sa.validate()


def test_prefill_sheaf_objects_can_be_zeroed(sa, sc):
    s = sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, CAP)
    for a in sheaf_objs(sa, s):
        sa.memory[a:a + 256] = 0x5A
    a = sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL | numslab.__GFP_ZERO, s)
    assert not sa.memory[a:a + 256].any()
    sa.kmem_cache_free(sc, a)
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, s)


def test_destroy_with_an_outstanding_prefilled_sheaf(sa, sc):
    k = km(sa, "kmalloc-64")
    before_cache = k.live_objects - sa.nr_cpus - 2   # two mains, a barn, a random_seq
    s = sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 2)
    with pytest.raises(numslab.CacheLeakError, match="prefilled"):
        sa.kmem_cache_destroy(sc)
    a = sa.kmem_cache_alloc(sc)                       # the cache still works
    sa.kmem_cache_free(sc, a)
    sa.validate()
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, s)
    assert spare_of(sa, sc) == s and barn(sa, sc) == (0, 1)
    sa.kmem_cache_destroy(sc)                         # mains, spare and barn all freed
    assert k.live_objects == before_cache
    sa.validate()


def test_a_forced_destroy_returns_the_outstanding_prefilled_sheaves(sa, sc):
    """``force=True`` frees what users still hold first, as the README says: prefilled
    sheaves too (it refused them as it refused without ``force``); their handles are then
    no sheaf's."""
    k = km(sa, "kmalloc-64")
    before_cache = k.live_objects - sa.nr_cpus - 2   # two mains, a barn, a random_seq
    sheaves = [sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, n) for n in (2, 3)]
    a = sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL, sheaves[0])
    sa.kmem_cache_destroy(sc, force=True)
    assert k.live_objects == before_cache and sa.find(a)["kind"] == "free page"
    with pytest.raises(numslab.BadAddressError):
        sa.kmem_cache_sheaf_size(sheaves[1])
    sa.validate()


def test_bad_sheaf_handles_are_refused(sa, sc):
    other = sa.kmem_cache_create("other", 64, sheaf_capacity=CAP)
    theirs = sa.kmem_cache_prefill_sheaf(other, GFP_KERNEL, 1)
    mine = sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 1)
    returned = sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 1)
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, returned)
    obj = sa.kmalloc(64)
    snap = snapshot(sa)
    for call, *args in ((sa.kmem_cache_alloc_from_sheaf, ), (sa.kmem_cache_refill_sheaf, 3),
                        (sa.kmem_cache_return_sheaf, )):
        with pytest.raises(numslab.WrongCacheError, match="of cache 'other', not of"):
            call(sc, GFP_KERNEL, theirs, *args)     # another cache's: named
    for bad in (0, 8, 12345 * 8, obj, main_of(sa, sc), returned, -8, 1 << 40):
        with pytest.raises(numslab.BadAddressError):
            sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL, bad)
        with pytest.raises(numslab.BadAddressError):
            sa.kmem_cache_refill_sheaf(sc, GFP_KERNEL, bad, 3)
        with pytest.raises(numslab.BadAddressError):
            sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, bad)
    for bad in ("0x1000", 1.5, None, True):
        with pytest.raises(numslab.BadAddressError):
            sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL, bad)
    assert_unchanged(sa, snap)
    for c, h in ((sc, mine), (other, theirs)):
        sa.kmem_cache_return_sheaf(c, GFP_KERNEL, h)
    assert sa.state.ca[sc.id, CA_USER_SHEAVES] == 0
    sa.validate()


def test_the_prefill_api_refuses_a_bad_cpu_with_nothing_changed(sa, sc):
    """A bad ``cpu`` is refused before anything changes: ``kmem_cache_return_sheaf`` took
    the sheaf off the cache's list first, so a refused return lost it and its objects."""
    held = sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 4)
    snap = snapshot(sa)
    for cpu in (sa.nr_cpus, -1, 1.0, "0"):
        with pytest.raises(numslab.InvalidArgumentError, match="cpu"):
            sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, held, cpu=cpu)
        with pytest.raises(numslab.InvalidArgumentError, match="cpu"):
            sa.kmem_cache_refill_sheaf(sc, GFP_KERNEL, held, 8, cpu=cpu)
        with pytest.raises(numslab.InvalidArgumentError, match="cpu"):
            sa.kmem_cache_prefill_sheaf(sc, GFP_KERNEL, 2, cpu=cpu)
    assert_unchanged(sa, snap)
    sa.validate()
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, held, cpu=sa.nr_cpus - 1)
    sa.kmem_cache_destroy(sc)


def test_caches_without_sheaves_refuse_the_prefill_api(sa):
    plain = sa.kmem_cache_create("plain", 64)
    snap = snapshot(sa)
    for c in (plain, sa.kmalloc_caches[3]):     # (a SlabError subclass: it was the base class)
        with pytest.raises(numslab.InvalidArgumentError, match="no sheaves"):
            sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 1)
        with pytest.raises(numslab.InvalidArgumentError, match="no sheaves"):
            sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, 4096)
        with pytest.raises(numslab.InvalidArgumentError, match="no sheaves"):
            sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, 4096, 1)
        with pytest.raises(numslab.InvalidArgumentError, match="no sheaves"):
            sa.kmem_cache_return_sheaf(c, GFP_KERNEL, 4096)
    with pytest.raises(numslab.InvalidSizeError):
        sa.kmem_cache_create("neg", 64, sheaf_capacity=-1)
    assert_unchanged(sa, snap)


def exhaust(sa, c):
    """Allocate every object the cache can get; returns them."""
    held = []
    nowarn = GFP_KERNEL | numslab.__GFP_NOWARN
    for n in (64, 1):
        out = np.empty(n, np.int64)
        while sa.kmem_cache_alloc_bulk(c, nowarn, n, out):
            held += out.tolist()
    return held


def test_prefill_and_refill_when_memory_runs_out():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("x", 256, flags=SLAB_HWCACHE_ALIGN, sheaf_capacity=CAP)
    s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, CAP)
    sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s)
    sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s)
    held = exhaust(sa, c)
    assert held and free_total(sa) == 0
    km64 = km(sa, "kmalloc-64").live_objects
    snap_live = c.live_objects
    assert sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, CAP) == 0
    assert sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 50) == 0      # oversize too
    assert sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, CAP) == 0   # -ENOMEM...
    assert sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, 50) == 0
    assert sa.kmem_cache_sheaf_size(s) == 2                         # ...sheaf untouched
    assert sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s)         # and still usable
    assert km(sa, "kmalloc-64").live_objects == km64 and c.live_objects == snap_live + 1
    sa.validate()
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s)
    sa.validate()


# ---- the inlined fast paths: the batch is served by, or fits in, the main sheaf ----------------
@pytest.fixture
def wide(sa):
    """A 256-byte cache whose 64-object sheaves take a whole batch (the fast paths)."""
    return sa.kmem_cache_create("wide", 256, flags=SLAB_HWCACHE_ALIGN, sheaf_capacity=64)


def test_fast_free_then_alloc_go_through_the_main_sheaf_in_array_order(sa, wide):
    objs = bulk(sa, wide, 20)
    st = wide.stats
    sa.kmem_cache_free_bulk(wide, 20, objs.copy(), cpu=0)
    assert sheaf_objs(sa, main_of(sa, wide)) == objs.tolist()   # one batch, order kept
    assert wide.stats["free_cpu_sheaf"] - st["free_cpu_sheaf"] == 20
    assert wide.live_objects == 0
    out = bulk(sa, wide, 12)
    assert out.tolist() == objs[8:].tolist()                      # the top 12, in order
    assert sheaf_objs(sa, main_of(sa, wide)) == objs[:8].tolist()
    assert wide.stats["alloc_cpu_sheaf"] - st["alloc_cpu_sheaf"] == 12
    assert wide.live_objects == 12
    sa.validate()


def test_fast_free_misuse_changes_nothing(sa, wide):
    objs = bulk(sa, wide, 24)
    other = sa.kmem_cache_create("other", 256, flags=SLAB_HWCACHE_ALIGN)
    foreign = sa.kmem_cache_alloc(other, GFP_KERNEL, cpu=0)
    big = sa.kmalloc(64 << 10)
    cases = {          # bad element at index 5 of 10 (every other one is a live object)
        "double free in the batch": (objs[1], numslab.DoubleFreeError),
        "another cache": (foreign, numslab.WrongCacheError),
        "off the object grid": (objs[2] + 8, numslab.BadAddressError),
        "outside the arena": (sa.nr_pages * 4096 + 256, numslab.BadAddressError),
        "a free page": (sa.nr_pages * 4096 - 4096, numslab.BadAddressError),
        "a large kmalloc": (big, numslab.BadAddressError),
        "a tail page of a large kmalloc": (big + 4096, numslab.BadAddressError),
    }
    for bad, exc in cases.values():
        arr = objs[:10].copy()
        arr[5] = bad
        snap = snapshot(sa)
        with pytest.raises(exc, match=r"element 5\b"):
            sa.kmem_cache_free_bulk(wide, 10, arr, cpu=0)
        assert_unchanged(sa, snap)
    sa.kmem_cache_free_bulk(wide, 24, objs, cpu=0)                # all still live
    sa.validate()


def test_jit_fast_paths_match_the_facade_and_raise_on_misuse(sa, wide):
    h, cid = sa.handle, wide.id

    @numba.njit
    def cycle(h, cid, n, out):
        numslab.jit.kmem_cache_alloc_bulk(h, cid, n, out)
        numslab.jit.kmem_cache_free_bulk(h, cid, n, out)
        return numslab.jit.kmem_cache_alloc_bulk(h, cid, n, out)

    @numba.njit
    def free(h, cid, n, objs):
        numslab.jit.kmem_cache_free_bulk(h, cid, n, objs)

    out = np.empty(16, np.int64)
    st = wide.stats
    assert cycle(h, cid, 16, out) == 16
    assert wide.live_objects == 16 and len(set(out.tolist())) == 16
    assert wide.stats["free_cpu_sheaf"] - st["free_cpu_sheaf"] == 16
    bad = out.copy()
    bad[7] = bad[3]
    snap = snapshot(sa)
    with pytest.raises(numslab.DoubleFreeError):
        free(h, cid, 16, bad)
    assert_unchanged(sa, snap)
    free(h, cid, 16, out)
    assert wide.live_objects == 0
    sa.validate()


@pytest.mark.parametrize("size", [-1, 1.5, 2 ** 61, True, (1 << 20) + 1])
def test_refill_and_prefill_refuse_an_impossible_size(sa, size):
    c = sa.kmem_cache_create("s", 64, sheaf_capacity=8)
    sheaf = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 4)
    snap = snapshot(sa)
    with pytest.raises(numslab.InvalidSizeError, match="size"):
        sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, sheaf, size)
    with pytest.raises(numslab.InvalidSizeError, match="size"):
        sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, size)
    assert_unchanged(sa, snap)
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, sheaf)


def test_sheaf_size_of_something_that_is_not_a_sheaf_is_refused(sa):
    c = sa.kmem_cache_create("s", 64, sheaf_capacity=8)
    sheaf = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 4)
    assert sa.kmem_cache_sheaf_size(sheaf) >= 4
    for bad in (sheaf + 8, c.alloc(), 4096, -8, 2 ** 40):
        with pytest.raises(numslab.BadAddressError, match="not a prefilled sheaf"):
            sa.kmem_cache_sheaf_size(bad)
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, sheaf)


@pytest.mark.parametrize("kernel_name", ["7.0", "6.18"])
def test_single_allocations_until_memory_runs_out_lose_no_object(kernel_name):
    # 7.0: the last refills of a new sheaf fail part-way (refill_objects gets a few objects,
    # not the capacity); the objects it got go back to their slabs before the sheaf is freed
    sa = numslab.SlabAllocator(kernel=kernel_name, nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("big", 4000)
    held = []
    while (p := sa.kmem_cache_alloc(c)) != 0:
        held.append(p)
        assert len(held) < 4096
    sa.validate()
    assert c.live_objects == len(held) == len(c)
    assert sa.kmem_cache_alloc(c) == 0                  # failing again takes nothing
    sa.validate()
    assert c.live_objects == len(held)
    for p in held:
        sa.kmem_cache_free(c, p)
    sa.kmem_cache_shrink(c)
    sa.validate()
    assert c.live_objects == 0 and c.objects == 0       # nothing stays in use
    sa.kmem_cache_destroy(c)


# ---- a free pointer rewritten to name an object a sheaf holds --------------------------------
def _half_freed_on_cpu1(gen, seed):
    """A 2-CPU allocator of generation ``gen`` (free lists plain and in address order) with
    a 64-byte cache of 8-object sheaves: 400 objects allocated on CPU 1, a random half of
    them (drawn from ``seed``) freed there. (allocator, cache)"""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=gen, seed=seed,
                               freelist_hardened=False, freelist_random=False)
    c = sa.kmem_cache_create("x", 64, sheaf_capacity=8)
    objs = np.zeros(400, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 400, objs, cpu=1) == 400
    for x in objs[np.random.default_rng(seed).permutation(400)][200:].tolist():
        sa.kmem_cache_free(c, x, cpu=1)
    return sa, c


def _point_a_free_list_at(sa, c, held):
    """Rewrite one free list of ``c`` so that it names an object of ``held`` (a sheaf's) in
    the same slab, in the place of the free object it led to, keeping its length: two
    stray writes, plain pointers. The named object, or None when no slab fits."""
    w, st = words(sa), sa.state
    for slab in np.flatnonzero(st.sl_freelist).tolist():
        f = int(st.sl_freelist[slab])
        g = int(w[(f + c.offset) >> 3])
        ys = [y for y in held if y >> 12 == slab]
        if st.sl_cache[slab] == c.id and g and ys:
            w[(f + c.offset) >> 3] = ys[0]
            w[(ys[0] + c.offset) >> 3] = w[(g + c.offset) >> 3]
            return ys[0]
    return None


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
@pytest.mark.parametrize("how", ["single", "bulk", "jit", "jit-bulk", "prefilled"])
def test_an_object_a_sheaf_holds_is_never_handed_out_twice(gen, how):
    """The slab layer may hand out an object a sheaf holds (CPU 1's main sheaf, or a
    prefilled one) when a free pointer is rewritten to name it: it passes the pointer
    checks. CPU 0 then allocates through the slab layer (single, bulk, inside @njit), and
    the sheaf is emptied after (``jit-bulk``: by ``numslab.jit``'s bulk allocation, whose
    main-sheaf case is inline in the user's function): no address may come out twice; the
    sheaf drops the entry, a SlabCorruptionError reports it, its slab is isolated and the
    machine stays valid."""
    for seed in range(40):                  # the first seed whose state has such a slab
        sa, c = _half_freed_on_cpu1(gen, seed)
        if how == "prefilled":
            sheaf = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 8, cpu=1)
        else:
            sheaf = int(sa.state.cpu[c.id, 1, C_MAIN])
        held = sheaf_objs(sa, sheaf)
        if held and _point_a_free_list_at(sa, c, held) is not None:
            break
    else:
        raise AssertionError("no seed gave a slab to rewrite")

    @numba.njit
    def jit_alloc(h, cid, res):
        for i in range(res.shape[0]):
            res[i] = numslab.jit.kmem_cache_alloc(h, cid, 0)

    @numba.njit
    def jit_bulk(h, cid, res, cpu):
        return numslab.jit.kmem_cache_alloc_bulk(h, cid, res.shape[0], res, cpu)

    out, errors = [], 0
    for step in range(400):
        try:
            if step >= 200:                 # then the sheaf is emptied
                if how == "jit-bulk":
                    res = np.zeros(3, np.int64)
                    out += res[:jit_bulk(sa.handle, c.id, res, 1)].tolist()
                elif how != "prefilled":
                    out.append(sa.kmem_cache_alloc(c, cpu=1))
                elif sheaf_size(sa, sheaf):
                    out.append(sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, sheaf, cpu=1))
            elif how == "bulk":
                res = np.zeros(12, np.int64)
                out += res[:sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 12, res, cpu=0)].tolist()
            elif how == "jit":
                res = np.zeros(7, np.int64)
                try:
                    jit_alloc(sa.handle, c.id, res)
                finally:
                    out += [int(x) for x in res if x]
            else:
                out.append(sa.kmem_cache_alloc(c, cpu=0))
        except numslab.SlabCorruptionError:
            errors += 1
        if len(out) > 5000:
            break
    assert len(out) == len(set(out)), "an address was handed out twice"
    assert errors >= 1 and sa.isolated_slabs()
    sa.validate()


def _drain_distinct(sa, c, out):
    """Allocate every object ``c`` can still give, on both CPUs, its slabs' corruption
    reports skipped, into ``out``: no address may come out twice."""
    for i in range(3000):
        try:
            a = sa.kmem_cache_alloc(c, cpu=i % 2)
        except numslab.SlabCorruptionError:
            continue
        if a == 0:
            break
        out.append(a)
    assert len(out) == len(set(out)), "an address was handed out twice"


def _held_named(gen, seed):
    """CPU 1's main sheaf holds X when a free pointer is rewritten to name it; CPU 0 then
    allocates until its slabs run dry. (allocator, cache, X, the CPU 0 objects, how many
    allocations raised), or None when the seed gives no such pointer."""
    sa, c = _half_freed_on_cpu1(gen, seed)
    held = sheaf_objs(sa, int(sa.state.cpu[c.id, 1, C_MAIN]))
    x = _point_a_free_list_at(sa, c, held[:-1])
    if x is None:
        return None
    out, errors = [], 0
    for _ in range(3000):
        try:
            a = sa.kmem_cache_alloc(c, cpu=0)
        except numslab.SlabCorruptionError:
            errors += 1
            continue
        if a == 0:
            break
        out.append(a)
    return sa, c, x, out, errors


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_a_free_pointer_naming_a_sheaf_held_object_is_refused(gen):
    """A free pointer rewritten to name an object a sheaf holds (its held bit set, field
    ``held``) is refused by the slab layer as corrupted (``SlabCorruptionError``, the slab
    isolated): the object is never handed out while the sheaf holds it, so no sheaf ever
    names an object twice or a live one (the stale entries ``_sheaf_purge`` dropped)."""
    tried = 0
    for seed in range(40):
        got = _held_named(gen, seed)
        if got is None:
            continue
        sa, c, x, out, errors = got
        tried += 1
        assert x not in out, "the slab layer handed out an object a sheaf holds"
        assert errors >= 1 and sa.isolated_slabs()
        assert sheaf_objs(sa, int(sa.state.cpu[c.id, 1, C_MAIN])).count(x) == 1
        sa.validate()
        _drain_distinct(sa, c, out)
        sa.validate()
        if tried >= 3:
            break
    assert tried, "no seed let a free pointer name a sheaf's object"


@pytest.mark.parametrize("gen", numslab.KERNELS)
def test_a_sheaf_kmalloc_that_meets_a_corrupted_free_pointer_leaves_no_fault_behind(gen):
    """The allocator's own kmalloc of a sheaf (a free filling sheaves) that met a corrupted free
    pointer isolated the slab but left the fault register set: the next call that checks it,
    another cache's prefill, raised that kmalloc slab's corruption as its own (6.18: after
    handing its sheaf back). Now the sheaf's kmalloc takes another slab, and nothing is
    raised later: the slab is in ``isolated_slabs()``, as a flush's is."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel=gen, freelist_random=False)
    c = sa.kmem_cache_create("s", 96, sheaf_capacity=4)
    first = [c.alloc() for _ in range(4)]
    km = sa.find(int(sa.sheaf_addresses()[0]))["cache"]       # the sheaves' kmalloc cache
    held = [sa.kmalloc(km.object_size) for _ in range(3 * km.objs_per_slab)]
    sa.kmem_cache_shrink(km)
    slab = held[km.objs_per_slab] >> 12
    mine = [a for a in held if a >> 12 == slab]
    for a in mine[1:4]:
        sa.kfree(a)
    sa.kmem_cache_shrink(km)                # on the slab's free list, not in a sheaf
    sa.memory[mine[2] + km.offset:mine[2] + km.offset + 8] = 0x77  # a write into freed memory
    more = [c.alloc() for _ in range(200)]
    for a in more:                          # the frees fill sheaves: new ones are kmalloc'ed
        c.free(a)
    d = sa.kmem_cache_create("t", 64, sheaf_capacity=4)
    sheaf = sa.kmem_cache_prefill_sheaf(d, GFP_KERNEL, 2)       # raised kmalloc-64's fault
    assert sa.kmem_cache_sheaf_size(sheaf) >= 2
    sa.kmem_cache_return_sheaf(d, GFP_KERNEL, sheaf)
    assert slab << 12 in sa.isolated_slabs().tolist()
    for a in first + [a for a in held if a not in mine[1:4]]:
        sa.kfree(a)
    sa.validate()


# ---- barns are kmalloc objects ------------------------------------------------------------
def _sysfs_counts(k):
    """kmalloc cache ``k``'s sysfs ``objects`` and ``slabs`` per node."""
    return tuple(counts(k.sysfs()[a]) for a in ("objects", "slabs"))


@pytest.mark.parametrize("gen", ["7.0", "7.1", "7.3", "next"])
def test_a_cache_with_sheaves_kmallocs_a_barn_per_node(gen):
    """init_kmem_cache_nodes: ``barn = kmalloc_node(sizeof(*barn), GFP_KERNEL, node)`` on every
    node for a cache with sheaves (``struct node_barn``, 48 bytes on x86-64: kmalloc-64);
    free_kmem_cache_nodes: ``kfree(barn)``. numslab made none: a 7.x machine's kmalloc-64 held
    one object per cache and node fewer than a kernel's."""
    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=2, memory="8M", kernel=gen)
    k = km(sa, "kmalloc-64")
    barns = sa.barn_addresses()
    # bootstrap_kmalloc_sheaves: each kmalloc cache's barns (kmalloc_caches[] order: 96 and
    # 192, then 8 .. 8k); those of 96, 192, 8, 16, 32 and 64 from kmalloc-64's slabs (it has
    # no sheaves yet), kmalloc-128's node-0 barn refills a sheaf of 60 (__pcs_replace_empty_main)
    # that serves the node-0 barns after it and the 64-byte sheaves of kmalloc-4k and -8k;
    # node 1's barns from its slabs (alloc_from_pcs: node != numa_mem_id(), ___slab_alloc)
    assert k.barn_objects == len(barns) == 13 * 2
    assert [sa.page_to_nid(int(a)) for a in barns] == [0, 1] * 13
    assert _sysfs_counts(k) == ({0: 6 + 60, 1: 13}, {0: 2, 1: 1})
    boot, mismatch = _sysfs_counts(k), k.stats["alloc_node_mismatch"]
    c = sa.kmem_cache_create("b", 100)
    found = sa.find(int(sa.barn_addresses()[-1]))
    assert k.barn_objects == 28 and found["cache"] is k and found["kind"] == "barn"
    # node 0's from the CPU's sheaf (counted in use already), node 1's from its slabs
    assert _sysfs_counts(k) == ({0: 66, 1: 14}, {0: 2, 1: 1})
    assert k.stats["alloc_node_mismatch"] == mismatch + 1
    sa.kmem_cache_destroy(c)                        # node 0's to the sheaf, node 1's to its slab
    assert k.barn_objects == 26 and _sysfs_counts(k) == boot
    d = sa.kmem_cache_create("d", 100, flags=numslab.SLAB_RED_ZONE)    # no sheaves: no barn
    assert k.barn_objects == 26 and len(k) == 0
    sa.kmem_cache_destroy(d)
    sa.validate()


def test_618_barns_only_for_caches_with_sheaves(sa2):
    """6.18's init_kmem_cache_nodes: a barn per node only ``if (s->cpu_sheaves)``, a cache
    created with ``sheaf_capacity``; its kmalloc caches have none (so neither barns)."""
    assert sa2.kernel == "6.18"         # (the module's kernels: conftest's default)
    k = km(sa2, "kmalloc-64")
    boot = 4                            # random sequences: kmalloc-256, -512, -1k, -2k's
    assert k.barn_objects == 0 and k.live_objects == boot
    plain = sa2.kmem_cache_create("plain", 100)     # (39 objects: its sequence in -192)
    assert k.barn_objects == 0 and k.live_objects == boot
    c = sa2.kmem_cache_create("sh", 100, sheaf_capacity=8)
    assert k.barn_objects == 2 and len(k) == 0
    assert sorted(sa2.page_to_nid(int(a)) for a in sa2.barn_addresses()) == [0, 1]
    sa2.kmem_cache_destroy(c)
    sa2.kmem_cache_destroy(plain)
    assert k.barn_objects == 0 and k.live_objects == boot
