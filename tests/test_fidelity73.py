"""The rules 7.3 changed from 7.1, each test citing the kernel code it follows (the mm tree's
``mm/slub.c`` on 7.3-rc5, ARCHITECTURE "The generations") and run on 7.1 beside it: who may
fill a sheaf, ``refill_objects`` without a gfp test, partial slabs drained in list order,
the remote objects of a bulk free, and oversize prefilled sheaves counted."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab import GFP_KERNEL
from numslab.engine.layout import C_MAIN, SH_OBJECTS, SH_SIZE

KERNELS = ("7.1", "7.3")


def delta(c, before):
    return {k: v - before.get(k, 0) for k, v in c.stats.items() if v != before.get(k, 0)}


def node_of(sa, addr):
    return int(addr) // 4096 // sa.pages_per_node


def main_objects(sa, c, cpu=0):
    """The objects in CPU ``cpu``'s main sheaf of ``c``, bottom first."""
    main = int(sa.state.cpu[c.id, cpu, C_MAIN])
    w = main >> 3
    return sa._mem[w + SH_OBJECTS:w + SH_OBJECTS + int(sa._mem[w + SH_SIZE])].tolist()


# ---- __pcs_replace_empty_main and refill_objects: alloc_flags, not gfp ------------------------
def test_a_request_without_reclaim_bits_fills_a_sheaf_from_7_3(sa, kernel):
    """7.3: ``allow_spin = alloc_flags_allow_spinning(alloc_flags)`` (only ``kmalloc_nolock``
    passes ``SLAB_ALLOC_NOLOCK``), so a gfp of 0 fills the empty main sheaf; 7.1 tested
    ``gfpflags_allow_spinning(gfp)`` and took one object from the slab layer."""
    c = sa.kmem_cache_create("nolock", 256)
    st = c.stats
    assert sa.kmem_cache_alloc(c, 0, cpu=0)
    d = delta(c, st)
    if kernel == "7.3":
        assert d["alloc_fastpath"] == 1 and d["sheaf_refill"] == c.sheaf_capacity
        assert "alloc_slowpath" not in d
    else:
        assert d["alloc_slowpath"] == 1 and "sheaf_refill" not in d


def test_a_bulk_allocation_without_reclaim_bits_reaches_the_slabs_from_7_3(sa, kernel):
    """7.3's ``refill_objects`` begins with ``__refill_objects_node``: the 7.1
    ``WARN_ON_ONCE(!gfpflags_allow_spinning(gfp))`` that returned 0 is gone, so a gfp-0 bulk
    allocation larger than the sheaves hold succeeds."""
    c = sa.kmem_cache_create("bulk0", 256)
    out = np.zeros(100, np.int64)
    got = sa.kmem_cache_alloc_bulk(c, 0, 100, out)
    if kernel == "7.3":
        assert got == 100 and len(set(out.tolist())) == 100 and c.live_objects == 100
        sa.kmem_cache_free_bulk(c, 100, out)
    else:
        assert got == 0 and c.live_objects == 0


# ---- __refill_objects_node ----------------------------------------------------------------------
def three_partial_slabs(sa, c):
    """Slabs A, B and C of ``c`` with 10, 30 and 40 free objects on node 0's partial list in
    that order, and the CPUs' sheaves and the barn empty; (A, B, C, the objects still held)."""
    objs = c.alloc_bulk(3 * c.objs_per_slab)
    by_slab = {}
    for a in objs.tolist():
        by_slab.setdefault(a >> 12, []).append(a)
    a_slab, b_slab, c_slab = sorted(by_slab)
    free = by_slab[a_slab][:10] + by_slab[b_slab][:30] + by_slab[c_slab][:40]
    c.free_bulk(np.array(free, np.int64))
    c.shrink()                                  # sheaves flushed; fullest partial first
    assert [int(r[0]) >> 12 for r in c.partial_list(0)] == [a_slab, b_slab, c_slab]
    held = [a for a in objs.tolist() if a not in set(free)]
    return a_slab, b_slab, c_slab, held


def test_a_refill_drains_partial_slabs_in_list_order_and_gives_the_rest_to_the_tail(sa, kernel):
    """7.3's ``get_partial_node_bulk`` moves the slabs it takes to ``pc.slabs`` in list order
    (``list_bulk_move_tail``) and ``__refill_objects_node`` drains them so; what the last one
    has beyond goes back with it to the tail (``__slab_try_return_freelist``:
    ``add_partial(n, slab, ADD_TO_TAIL)``, no counter). 7.1 filled ``pc.slabs`` by
    ``list_add`` (the last taken first) and gave the rest back by ``__slab_free``
    (FREE_ADD_PARTIAL), the slab not reached going back to the head."""
    c = sa.kmem_cache_create("order", 64)
    a_slab, b_slab, c_slab, held = three_partial_slabs(sa, c)
    st = c.stats
    out = np.zeros(20, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 20, out, cpu=0) == 20
    d = delta(c, st)
    slabs = [a >> 12 for a in out.tolist()]
    left = [(int(r[0]) >> 12, int(r[2]) - int(r[1])) for r in c.partial_list(0)]
    if kernel == "7.3":
        assert slabs.count(a_slab) == 10 and slabs.count(b_slab) == 10
        assert left == [(c_slab, 40), (b_slab, 20)]         # B's rest behind C, at the tail
        assert "free_add_partial" not in d
    else:
        assert slabs.count(b_slab) == 20                    # B drained first, its rest freed
        assert left == [(a_slab, 10), (c_slab, 40), (b_slab, 10)]   # to the tail, A to the head
        assert d["free_add_partial"] == 1
    c.free_bulk(out)
    c.free_bulk(np.array(held, np.int64))


# ---- free_to_pcs_bulk -------------------------------------------------------------------------
def kernel_partition(p, remote):
    """7.3's scan of ``free_to_pcs_bulk``, naively: each remote object is swapped with the
    first local one (``swap(remote_objects[remote_nr], p[i])``); (the remote objects, the local
    ones), each in the order the array is left in."""
    p = list(p)
    nr = 0
    for i in range(len(p)):
        if remote(p[i]):
            p[nr], p[i] = p[i], p[nr]
            nr += 1
    return p[:nr], p[nr:]


@pytest.fixture
def sa2(kernel):
    a = numslab.SlabAllocator(nr_cpus=4, nr_nodes=2, memory="16M", kernel=kernel)
    yield a
    a.validate()


def test_a_bulk_free_gives_every_remote_object_back_at_once_after_the_local_ones(sa2, kernel):
    """7.3's ``free_to_pcs_bulk``: one pass puts the remote objects at the front, the local
    ones go to the sheaves in the order left behind, then ``__kmem_cache_free_bulk(s,
    remote_nr, remote_objects)`` frees every remote object at once (7.1: batches of 32 in
    scan order, ``p[i] = p[--size]`` permuting the local ones). One remote slab's free list
    then reads the remote objects in array order."""
    c = sa2.kmem_cache_create("r64", 64)
    remote = [sa2.kmem_cache_alloc_node(c, GFP_KERNEL, node=1, cpu=0) for _ in range(64)]
    local = [sa2.kmem_cache_alloc(c, cpu=0) for _ in range(5)]
    arr = np.array(local + remote[:40], np.int64)
    np.random.default_rng(7).shuffle(arr)
    is_remote = lambda a: node_of(sa2, a) == 1                                  # noqa: E731
    rem, loc = kernel_partition(arr.tolist(), is_remote)
    before = main_objects(sa2, c)
    st = c.stats
    sa2.kmem_cache_free_bulk(c, len(arr), arr, cpu=0)
    d = delta(c, st)
    assert d["free_slowpath"] == 40 and d["free_fastpath"] == 5
    put = main_objects(sa2, c)[len(before):]
    got = [sa2.kmem_cache_alloc_node(c, GFP_KERNEL, node=1, cpu=0) for _ in range(40)]
    if kernel == "7.3":
        assert put == loc and got == rem
    else:
        assert sorted(put) == sorted(loc) and got != rem
    for a in remote:
        sa2.kmem_cache_free(c, a, cpu=0)


# ---- kmem_cache_prefill_sheaf and kmem_cache_return_sheaf: oversize sheaves ---------------------
def test_an_oversize_prefilled_sheaf_is_counted_from_7_3(sa, kernel):
    """7.3's oversize prefill takes its sheaf from ``__alloc_empty_sheaf`` (``stat(s,
    SHEAF_ALLOC)``) and ``kmem_cache_return_sheaf`` frees it by ``free_empty_sheaf``
    (``stat(s, SHEAF_FREE)``); 7.1 kmalloc'ed and kfree'd it uncounted."""
    c = sa.kmem_cache_create("big", 128)
    st = c.stats
    sheaf = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 3 * c.sheaf_capacity)
    d = delta(c, st)
    assert d["sheaf_prefill_oversize"] == 1
    assert d.get("sheaf_alloc", 0) == (1 if kernel == "7.3" else 0)
    st = c.stats
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, sheaf)
    assert delta(c, st).get("sheaf_free", 0) == (1 if kernel == "7.3" else 0)
    assert c.live_objects == 0


def test_an_oversize_prefill_that_runs_out_frees_its_sheaf_counted_from_7_3(kernel):
    """7.3: when ``__kmem_cache_alloc_bulk`` cannot fill the oversize sheaf, it goes back by
    ``free_empty_sheaf`` (``SHEAF_ALLOC`` and ``SHEAF_FREE`` both counted); nothing is held."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=kernel)
    c = sa.kmem_cache_create("huge", 128)
    st = c.stats
    assert not sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 100_000)
    d = delta(c, st)
    assert d["sheaf_prefill_oversize"] == 1
    assert (d.get("sheaf_alloc", 0), d.get("sheaf_free", 0)) == \
        ((1, 1) if kernel == "7.3" else (0, 0))
    assert c.live_objects == 0
    sa.validate()


def test_a_kmalloc_cache_s_oversize_sheaf_does_not_refill_its_own_sheaves_from_7_3(kernel):
    """7.3's ``__alloc_empty_sheaf`` marks a kmalloc cache's sheaf ``SLAB_ALLOC_NO_RECURSE``
    for an oversize prefill too: kmalloc-1k's own 100-object sheaf (an 832-byte kmalloc-1k
    object), met by an empty main sheaf, comes from the slab layer; 7.1 kmalloc'ed it as any
    request, which refilled kmalloc-1k's main sheaf first."""
    # (no random sequences: boot's kcalloc of kmalloc-16's, 1 KiB, refills that main sheaf)
    sa = numslab.SlabAllocator(nr_cpus=1, memory="16M", kernel=kernel, freelist_random=False)
    k = sa.find_cache("kmalloc-1k")
    st = k.stats
    sheaf = sa.kmem_cache_prefill_sheaf(k, GFP_KERNEL, 100)
    d = delta(k, st)
    if kernel == "7.3":
        assert "sheaf_refill" not in d and "alloc_fastpath" not in d
        assert d["alloc_slowpath"] == 101 and d["sheaf_alloc"] == 1    # the oversize sheaf
    else:
        assert d["sheaf_refill"] == k.sheaf_capacity and d["alloc_fastpath"] == 1
        assert d["alloc_slowpath"] == 100
    sa.kmem_cache_return_sheaf(k, GFP_KERNEL, sheaf)
    sa.validate()
