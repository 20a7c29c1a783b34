"""Linux 7.0's rules (engine/nocpu.py and the 7.0 paths of the sheaves): every cache has
sheaves of ``calculate_sheaf_capacity``, no CPU slab, ``___slab_alloc`` and
``refill_objects`` straight from the slabs, remote objects freed to their slab, and the
counters 7.0 keeps. Each expectation is read from Linux 7.0 ``mm/slub.c``."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numslab
from numslab import GFP_ATOMIC, GFP_KERNEL, GFP_NOWAIT, SLAB_HWCACHE_ALIGN
from numslab.flags import __GFP_THISNODE
from numslab.geometry import calculate_sheaf_capacity

from conftest import assert_unchanged, snapshot

KERNELS = ("7.0", "7.1")


def fresh(kernel="7.0", **kw):
    kw.setdefault("nr_cpus", 2)
    kw.setdefault("memory", "16M")
    return numslab.SlabAllocator(kernel=kernel, **kw)


def fragment(sa, c, frees_per_slab):
    """Fill ``len(frees_per_slab)`` slabs, free ``frees_per_slab[i]`` objects of slab ``i``
    and shrink, so that the frees reach their slabs (7.0 holds them in sheaves). The slabs'
    addresses, in the order they were filled."""
    per = c.objs_per_slab
    objs = c.alloc_bulk(per * len(frees_per_slab))
    by_slab = {}
    for a in objs.tolist():
        by_slab.setdefault(a >> 12 << 12, []).append(a)
    slabs = sorted(by_slab)
    assert [len(by_slab[s]) for s in slabs] == [per] * len(slabs)
    kept = []
    for s, k in zip(slabs, frees_per_slab):
        c.free_bulk(np.array(by_slab[s][:k], np.int64))
        kept += by_slab[s][k:]
    sa.kmem_cache_shrink(c)
    return slabs, kept


# ---- which caches get sheaves, and how many objects ---------------------------------------
@pytest.mark.parametrize("size,cap", [(8, 60), (192, 60), (255, 60), (256, 28), (1000, 28),
                                      (1024, 12), (4000, 12), (4096, 4), (8192, 4)])
def test_calculate_sheaf_capacity_fills_a_kmalloc_size(size, cap):
    # 60/26/12/4 by s->size, rounded up so that 32 + 8 * cap is a kmalloc size class
    assert calculate_sheaf_capacity(size) == cap
    assert 32 + 8 * cap in numslab.geometry.KMALLOC_SIZES
    assert calculate_sheaf_capacity(size, 300) == 300        # a request is a minimum
    assert calculate_sheaf_capacity(size, 3) == cap


def test_every_cache_has_sheaves_and_sysfs_says_so():
    sa = fresh()
    assert sa.kernel == "7.0" and numslab.SlabAllocator(memory="4M").kernel == "7.0"
    assert numslab.KERNELS == ("6.18", "7.0", "7.1", "7.3", "next")
    c = sa.kmem_cache_create("c", 300)
    assert c.sheaf_capacity == 28 == calculate_sheaf_capacity(c.slab_size)
    assert all(k.sheaf_capacity == calculate_sheaf_capacity(k.slab_size)
               for k in sa.kmalloc_caches)
    # every CPU has a main sheaf from the start, kmalloc'ed from the kmalloc caches; the
    # boot's barns refilled a sheaf of kmalloc-64's own (one more sheaf), and the kcallocs of
    # the kmalloc caches' random sequences (GFP_KERNEL, on CPU 0, after the sheaves) one in
    # each other cache that holds one (nine more: 16 .. 2k but 64); c's (GFP_KERNEL) find
    # kmalloc-256's and kmalloc-64's refilled
    assert (sa.state.cpu[c.id, :, numslab.engine.layout.C_MAIN] != 0).all()
    assert sum(k.sheaf_objects for k in sa.kmalloc_caches) == \
        len(sa.sheaf_addresses()) == sa.nr_cpus * (len(sa.kmalloc_caches) + 1) + 1 + 9
    fs = c.sysfs()
    assert fs["sheaf_capacity"] == "28"
    assert (fs["cpu_partial"], fs["slabs_cpu_partial"], fs["cpu_slabs"]) == ("0", "0(0)", "0")
    # 6.18's sheaves added the file (a real 6.18's: tests/data/kernel_slab.csv)
    old = fresh("6.18")
    assert old.kmem_cache_create("d", 300).sysfs()["sheaf_capacity"] == "0"
    assert old.kmem_cache_create("e", 300, sheaf_capacity=32).sysfs()["sheaf_capacity"] == "32"


@pytest.mark.parametrize("gen", ["7.0", "7.1"])
def test_a_sheaf_kzalloc_may_refill_the_kmalloc_caches_sheaves(gen):
    """``__alloc_empty_sheaf`` adds __GFP_NO_OBJ_EXT only to the kzalloc of a kmalloc
    cache's own sheaf: a sheaf for any other cache is kzalloc'ed with the caller's gfp, so a
    GFP_KERNEL one (``init_percpu_sheaves``, on the creating CPU) finds kmalloc-256's sheaves
    empty and refills one of them (its own sheaf kmalloc'ed under the flag, from a slab), and
    pops the sheaves from it. Before, every kmalloc of a sheaf carried the flag: kmalloc
    caches' sheaves were filled by frees alone, each such kzalloc a slow-path allocation."""
    sa = fresh(gen)
    sa.set_cpu(1)
    k = sa.kmalloc_caches[[x.name for x in sa.kmalloc_caches].index("kmalloc-256")]
    before = dict(k.stats)
    c = sa.kmem_cache_create("c", 300)          # sheaves of 28: 32 + 8 * 28 bytes each
    assert c.sheaf_capacity == 28 and c.sysfs()["sheaf_alloc"] == "2 C1=2"
    moved = {s: k.stats[s] - before[s] for s in k.stats if k.stats[s] != before[s]}
    # outer alloc: BARN_GET_FAIL, refill: its own sheaf (SHEAF_ALLOC) kmalloc'ed from the
    # slabs (BARN_GET_FAIL again, ALLOC_SLOWPATH), 28 objects in (SHEAF_REFILL: the free
    # objects of the slabs CPU 0's refill at boot left partial, for kmalloc-64's random
    # sequence, then one new slab; before the sequences, two new slabs); two pops
    assert moved == {"alloc_fastpath": 2, "alloc_slowpath": 1, "barn_get_fail": 2,
                     "sheaf_alloc": 1, "sheaf_refill": 28, "alloc_slab": 1}, moved
    assert k.sysfs()["sheaf_refill"] == "56 C0=28 C1=28"      # (CPU 0's at boot)
    x = sa.kmalloc(200, GFP_KERNEL)                # served by that sheaf now
    assert k.stats["alloc_fastpath"] == before["alloc_fastpath"] + 3
    sa.kfree(x)
    sa.validate()


def _node1_partial(gen):
    """Two nodes; cache ``o`` with 8 partial slabs on node 1 (more than min_partial, 5)
    and none on node 0, whose CPU 0 has empty sheaves."""
    sa = fresh(gen, nr_nodes=2, memory="64M", seed=1, freelist_random=False)
    c = sa.kmem_cache_create("o", 64)                       # 64 objects a slab
    out = np.zeros(64 * 8, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, len(out), out, cpu=1) == len(out)
    back = np.concatenate([out[i * 64:i * 64 + 10] for i in range(8)])
    sa.kfree_bulk(len(back), back, cpu=1)
    assert c.sysfs()["partial"] == "8 N1=8"
    return sa, c


@pytest.mark.parametrize("gen", ["7.0", "7.1"])
def test_gfp_thisnode_keeps_every_refill_on_the_local_node(gen):
    """__GFP_THISNODE makes ``get_from_any_partial`` and ``__refill_objects_any`` walk the
    local node's NOFALLBACK zonelist (that node alone) and ``new_slab`` fall back to no other
    node: a request pinned so takes nothing of node 1's partial slabs (before: a sheaf refill
    drained them into CPU 0's sheaf, then the pop missed the node)."""
    sa, c = _node1_partial(gen)
    x = sa.kmem_cache_alloc_node(c, GFP_KERNEL | __GFP_THISNODE, node=0, cpu=0)
    assert sa.page_to_nid(x) == 0 and c.sysfs()["partial"] == "9 N0=1 N1=8"
    assert c.stats["alloc_node_mismatch"] == 0 and c.stats["alloc_fastpath"] == 1
    sa, c = _node1_partial(gen)
    x = sa.kmem_cache_alloc_node(c, GFP_NOWAIT | __GFP_THISNODE, node=-1, cpu=0)
    assert sa.page_to_nid(x) == 0
    sa, c = _node1_partial(gen)
    y = np.zeros(30, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL | __GFP_THISNODE, 30, y, cpu=0) == 30
    assert {sa.page_to_nid(int(a)) for a in y} == {0}
    sa.validate()
    sa, c = _node1_partial(gen)         # the same bulk without the flag: node 1's first
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 30, y, cpu=0) == 30
    assert {sa.page_to_nid(int(a)) for a in y} == {1}


@pytest.mark.parametrize("gen", ["7.0", "7.1", "6.18"])
def test_a_bulk_allocation_without_reclaim_bits_takes_only_what_the_sheaves_hold(gen):
    """7.x's ``refill_objects`` refuses a gfp with no reclaim bit (``WARN_ON_ONCE(
    !gfpflags_allow_spinning(gfp))``, 0): a bulk allocation the sheaves cannot serve fails
    (what it took from them going back to the slabs), a prefill too; one they can serve
    succeeds. 6.18's bulk allocation has no such rule."""
    sa = fresh(gen)
    c = sa.kmem_cache_create("o", 64, sheaf_capacity=32)
    out = np.zeros(20, np.int64)
    if gen == "6.18":
        assert sa.kmem_cache_alloc_bulk(c, 0, 20, out) == 20
        return
    assert sa.kmem_cache_alloc_bulk(c, 0, 20, out) == 0     # empty sheaves: nothing at all
    assert c.slabs == 0 and c.stats["barn_get_fail"] == 1
    objs = c.alloc_bulk(10)
    c.free_bulk(objs)                                          # 10 in the main sheaf
    assert sa.kmem_cache_alloc_bulk(c, 0, 10, out) == 10
    c.free_bulk(out[:10])
    assert sa.kmem_cache_alloc_bulk(c, 0, 11, out) == 0
    assert c.live_objects == 0 and c.objects == 0   # the 10 went back to the slabs
    assert sa.kmem_cache_alloc_bulk(c, GFP_NOWAIT, 11, out) == 11
    sa.validate()


def test_a_noleaktrace_cache_gets_no_sheaves_under_7_0_only():
    """``calculate_sheaf_capacity`` returns 0 for SLAB_NOLEAKTRACE (kmemleak's own caches,
    which a sheaf's kzalloc would recurse into), whatever ``sheaf_capacity`` asks; the cache
    works from its slabs (FREE_RCU_SHEAF_FAIL for ``kfree_rcu``). 6.18 has no such rule."""
    from numslab.flags import SLAB_NOLEAKTRACE
    sa = fresh()
    c = sa.kmem_cache_create("kmemleak_object", 300, flags=SLAB_NOLEAKTRACE, sheaf_capacity=8)
    assert c.sheaf_capacity == 0 and c.sysfs()["sheaf_capacity"] == "0"
    assert (sa.state.cpu[c.id, :, numslab.engine.layout.C_MAIN] == 0).all()
    objs = c.alloc_bulk(40)
    a = c.alloc()
    c.free_bulk(objs[:20])
    for x in objs[20:].tolist():
        sa.kfree_rcu(x)
    assert c.stats["free_rcu_sheaf_fail"] == 20 and c.stats["alloc_fastpath"] == 0
    assert c.stats["free_fastpath"] == 0 and c.stats["alloc_slowpath"] == 41
    with pytest.raises(numslab.SlabError, match="no sheaves .SLAB_NOLEAKTRACE"):
        sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 4)
    sa.synchronize_rcu()
    c.free(a)
    assert len(c) == 0
    sa.check_invariants()
    assert fresh("6.18").kmem_cache_create("k", 300, flags=SLAB_NOLEAKTRACE,
                                           sheaf_capacity=8).sheaf_capacity == 8


@pytest.mark.parametrize("gen", ["7.0", "7.1", "7.3", "next", "6.18"])
def test_a_bootstrap_cache_gets_no_sheaves_from_7_0_on(gen):
    """``calculate_sheaf_capacity`` returns 0 for SLAB_NO_OBJ_EXT (``create_boot_cache``'s caches,
    ``kmem_cache`` and ``kmem_cache_node``) from 7.0 on, before it reads ``sheaf_capacity``; the
    cache works from its slabs, and the prefilled-sheaf API refuses it naming the flag. 6.18
    gives it the sheaves it asks for."""
    from numslab.flags import SLAB_NO_OBJ_EXT
    sa = fresh(gen)
    c = sa.kmem_cache_create("kmem_cache_node", 64, flags=SLAB_NO_OBJ_EXT | SLAB_HWCACHE_ALIGN,
                             sheaf_capacity=8)
    if gen == "6.18":
        assert c.sheaf_capacity == 8
        return
    assert c.sheaf_capacity == 0 and c.sysfs()["sheaf_capacity"] == "0"
    assert (sa.state.cpu[c.id, :, numslab.engine.layout.C_MAIN] == 0).all()
    objs = c.alloc_bulk(40)
    a = c.alloc()
    c.free_bulk(objs)
    c.free(a)
    assert c.stats["alloc_fastpath"] == 0 and c.stats["free_fastpath"] == 0
    with pytest.raises(numslab.SlabError, match="no sheaves .SLAB_NOLEAKTRACE or SLAB_NO_OBJ_EXT"):
        sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 4)
    assert sa.kmem_cache_create("kmem_cache", 256).sheaf_capacity == 28   # (no flag: sheaves)
    assert len(c) == 0
    sa.validate()
    sa.check_invariants()


def test_a_remote_node_request_counts_a_mismatch_on_caches_without_sheaves_too():
    """7.0's ``slab_alloc_node`` calls ``alloc_from_pcs`` for every cache, and its node
    check (ALLOC_NODE_MISMATCH) comes before the debug/bootstrap back-off: a debug cache,
    a SLAB_NOLEAKTRACE cache and a debug kmalloc cache count it as a cache with sheaves
    does. A request for the CPU's own node counts nothing."""
    from numslab.flags import SLAB_CONSISTENCY_CHECKS, SLAB_NOLEAKTRACE
    sa = fresh(nr_nodes=2, slab_debug="F,kmalloc-128")
    caches = [sa.kmem_cache_create("dbg", 64, flags=SLAB_CONSISTENCY_CHECKS),
              sa.kmem_cache_create("nlt", 64, flags=SLAB_NOLEAKTRACE),
              sa.kmem_cache_create("plain", 64)]
    assert [c.sheaf_capacity for c in caches] == [0, 0, 60]
    assert sa.state.cpu_node[0] == 0
    for c in caches:
        a = sa.kmem_cache_alloc_node(c, GFP_KERNEL, 1, cpu=0)
        b = sa.kmem_cache_alloc_node(c, GFP_KERNEL, 0, cpu=0)
        assert c.stats["alloc_node_mismatch"] == 1, c.name
        assert sa.page_to_nid(a) == 1 and sa.page_to_nid(b) == 0
        sa.kmem_cache_free(c, a, cpu=0)
        sa.kmem_cache_free(c, b, cpu=0)
    k = next(k for k in sa.kmalloc_caches if k.name == "kmalloc-128")
    assert k.sheaf_capacity == 0
    x = sa.kmalloc(100, GFP_KERNEL, cpu=0, node=1)
    assert k.stats["alloc_node_mismatch"] == 1
    sa.kfree(x)
    sa.check_invariants()


def test_a_6_18_cache_keeps_its_cpu_slab_layer():
    sa = fresh("6.18")
    c = sa.kmem_cache_create("c", 64)
    a = c.alloc()
    assert c.sheaf_capacity == 0 and c.cpu_slabs == 1 and c.stats["alloc_slowpath"] == 1
    c.free(a)
    assert c.stats["free_fastpath"] == 1
    with pytest.raises(numslab.SlabError, match="kernel '5.4'"):
        numslab.SlabAllocator(memory="4M", kernel="5.4")


# ---- one object ----------------------------------------------------------------------------
def test_atomic_alloc_with_empty_sheaves_takes_one_object_from_a_new_slab():
    sa = fresh()
    c = sa.kmem_cache_create("c", 64)
    a = sa.kmem_cache_alloc(c, GFP_ATOMIC)      # cannot refill a sheaf: ___slab_alloc
    st = c.stats
    assert (st["alloc_fastpath"], st["alloc_slowpath"], st["alloc_slab"]) == (0, 1, 1)
    assert st["barn_get_fail"] == 1 and st["sheaf_refill"] == 0
    part = c.partial_list(0)                    # the rest of the new slab: partial, at head
    assert part.tolist() == [[a >> 12 << 12, 1, c.objs_per_slab]]
    b = sa.kmem_cache_alloc(c, GFP_ATOMIC)      # get_from_partial_node: one object
    assert b >> 12 == a >> 12 and c.stats["alloc_slab"] == 1
    assert c.partial_list(0)[0, 1] == 2 and c.live_objects == 2


def test_alloc_that_may_block_refills_the_main_sheaf():
    sa = fresh()
    c = sa.kmem_cache_create("c", 64)
    a = sa.kmem_cache_alloc(c, GFP_KERNEL)
    st = c.stats
    assert st["sheaf_refill"] == 60 and st["alloc_fastpath"] == 1
    assert st["alloc_slowpath"] == 0 and st["barn_get_fail"] == 1
    assert c.live_objects == 1 and c.slabs == 1          # 64 objects per slab, 60 taken
    main = sa.state.cpu[c.id, 0, numslab.engine.layout.C_MAIN]
    assert sa._mem[(main >> 3) + numslab.engine.layout.SH_SIZE] == 59
    c.free(a)
    assert c.stats["free_fastpath"] == 1 and c.stats["free_slowpath"] == 0


def test_a_node_request_off_the_cpus_node_is_a_mismatch_served_by_the_slabs(sa2):
    c = sa2.kmem_cache_create("c", 64)
    a = sa2.kmem_cache_alloc_node(c, GFP_KERNEL, 1, cpu=0)     # CPU 0 is on node 0
    assert sa2.page_to_nid(a) == 1
    st = c.stats
    assert st["alloc_node_mismatch"] == 1 and st["alloc_slowpath"] == 1
    sa2.kmem_cache_free(c, a, cpu=0)                # a remote object: straight to its slab
    st = c.stats
    assert st["free_slowpath"] == 1 and st["free_fastpath"] == 0
    b = sa2.kmem_cache_alloc_node(c, GFP_KERNEL | __GFP_THISNODE, 1, cpu=0)
    assert sa2.page_to_nid(b) == 1
    sa2.kmem_cache_free(c, b, cpu=3)                # CPU 3 is on node 1: its sheaf
    assert c.stats["free_fastpath"] == 1


# ---- many objects: refill_objects ----------------------------------------------------------
def refill_oracle(partial, lo, hi, min_partial, in_order=False):
    """``__refill_objects_node`` on a partial list of (slab, free) pairs, head first: the
    slabs taken (in the order their objects are copied), how many objects, and the partial
    list after (slab, free) with put-backs. ``in_order``: 7.3's (the slabs drained in list
    order, the rest of the last back with it to the tail, uncounted)."""
    taken, total = [], 0
    rest = list(partial)
    while rest:
        slab, free = rest[0]
        if total >= lo and total + free > hi:
            break
        rest.pop(0)
        if in_order:
            taken.append((slab, free))         # list_bulk_move_tail: list order
        else:
            taken.insert(0, (slab, free))      # list_add: the last taken comes first
        total += free
        if total >= hi:
            break
    got, used, leftover = 0, [], []
    for k, (slab, free) in enumerate(taken):
        n = min(free, hi - got)
        used.append((slab, n))
        got += n
        if n < free:                           # back to the slab: __slab_free, to the tail
            leftover.append((slab, free - n))
        if got >= hi:
            unreached = taken[k + 1:]
            break
    else:
        unreached = []
    after = rest + leftover
    for slab, free in unreached:
        if in_order:                           # list_splice_tail
            after.append((slab, free))
        else:                                  # add_partial(ADD_TO_HEAD), in list order
            after.insert(0, (slab, free))
    return used, got, after


@pytest.mark.parametrize("gen", ["7.0", "7.3"])
@settings(max_examples=40, deadline=None)
@given(frees=st.lists(st.integers(1, 15), min_size=1, max_size=8),    # shrink frees empty ones
       want=st.integers(1, 150))
def test_bulk_alloc_takes_whole_partial_slabs_as_refill_objects_does(gen, frees, want):
    sa = fresh(gen, nr_cpus=1)
    c = sa.kmem_cache_create("c", 256)          # 16 per slab, sheaf capacity 28
    slabs, kept = fragment(sa, c, frees)
    partial = [(int(s), int(o - u)) for s, u, o in c.partial_list(0)]
    assert sorted(f for _, f in partial) == sorted(frees)
    used, got, after = refill_oracle(partial, want, want, c.min_partial, gen == "7.3")
    out = np.zeros(want, np.int64)
    before = c.stats
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, want, out) == want
    st = c.stats
    assert st["alloc_slowpath"] - before["alloc_slowpath"] == want     # stat_add(.., i)
    assert st["alloc_fastpath"] == before["alloc_fastpath"]             # sheaves were empty
    new_slabs = st["alloc_slab"] - before["alloc_slab"]
    assert new_slabs == -(-(want - got) // c.objs_per_slab)
    # the objects came slab by slab as the oracle took them, then from new slabs
    assert [a >> 12 << 12 for a in out[:got].tolist()] == \
        [s for s, n in used for _ in range(n)]
    if not new_slabs:
        assert [(int(s), int(o - u)) for s, u, o in c.partial_list(0)] == after
    assert len(set(out.tolist()) | set(kept)) == want + len(kept)
    sa.validate()


def test_leftover_objects_go_back_and_their_slab_to_the_tail():
    sa = fresh(nr_cpus=1)
    c = sa.kmem_cache_create("c", 256)
    fragment(sa, c, [5, 7, 9])
    head = [int(s) for s in c.partial_list(0)[:, 0]]
    before = c.stats["free_add_partial"]
    out = np.zeros(3, np.int64)
    sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 3, out)     # 3 of the head slab's 5
    part = c.partial_list(0)
    assert [int(s) for s in part[:, 0]] == head[1:] + head[:1]
    assert part[-1, 2] - part[-1, 1] == 2
    assert c.stats["free_add_partial"] == before + 1


def test_sheaf_flushes_are_not_slow_path_frees():
    sa = fresh(nr_cpus=1)
    c = sa.kmem_cache_create("c", 64)
    objs = c.alloc_bulk(100)
    c.free_bulk(objs)                         # into the sheaves (60 fit, then a barn trade)
    st = c.stats
    sa.kmem_cache_shrink(c)                    # flushes them to the slabs
    after = c.stats
    assert after["free_slowpath"] == st["free_slowpath"]
    assert after["sheaf_flush"] > st["sheaf_flush"]
    assert c.live_objects == 0 and c.slabs <= c.min_partial


def test_bulk_free_of_remote_objects_counts_them_as_slow_path(sa2):
    c = sa2.kmem_cache_create("c", 64)
    remote = np.array([sa2.kmem_cache_alloc_node(c, GFP_KERNEL, 1, cpu=0)
                       for _ in range(5)], np.int64)
    local = c.alloc_bulk(7) if sa2.cpu_to_node(sa2._cpu()) == 0 else None
    before = c.stats
    sa2.kmem_cache_free_bulk(c, 5, remote.copy(), cpu=0)
    st = c.stats
    assert st["free_slowpath"] - before["free_slowpath"] == 5
    assert st["free_fastpath"] == before["free_fastpath"]
    if local is not None:
        c.free_bulk(local)


def test_a_failed_bulk_alloc_takes_nothing():
    sa = fresh(nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("big", 4096)
    out = np.zeros(5000, np.int64)              # more than 4 MiB of 4 KiB objects
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 5000, out) == 0
    assert c.live_objects == 0                  # (the array may hold what was given back)
    sa.validate()
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 10, out) == 10    # and it still serves


# ---- the kmalloc caches' own sheaves ---------------------------------------------------------
@pytest.mark.parametrize("gen", ["7.0", "7.3"])
def test_a_kmalloc_cache_has_no_sheaves_until_bootstrap_gave_every_cpu_one(gen):
    """bootstrap_cache_sheaves sets ``s->sheaf_capacity = capacity`` after every CPU's main
    sheaf: until then ``__pcs_replace_empty_main`` backs off uncounted ("Bootstrap or debug
    cache, back off"). kmalloc-256's own sheaves are kmalloc-256 objects (28 pointers: 256
    bytes); the second CPU's on counted BARN_GET_FAIL, as if it had sheaves. Its only
    BARN_GET_FAILs are kmalloc-512's sheaves', one a CPU (kmalloc'ed __GFP_NO_OBJ_EXT: no
    sheaf made on the way, one object from the slabs). After them, the kcalloc of
    kmalloc-64's random sequence (``init_freelist_randomization``, 256 bytes, on CPU 0) finds
    CPU 0's main sheaf empty: BARN_GET_FAIL, and the refill's own sheaf (SHEAF_ALLOC, one
    object from the slabs) BARN_GET_FAIL again."""
    sa = fresh(gen, nr_cpus=4)
    k = next(c for c in sa.kmalloc_caches if c.name == "kmalloc-256")
    assert k.sheaf_capacity == 28
    assert k.stats["barn_get_fail"] == sa.nr_cpus + 2
    assert k.stats["alloc_slowpath"] == 2 * sa.nr_cpus + 1
    assert k.stats["sheaf_alloc"] == sa.nr_cpus + 1 and k.stats["sheaf_refill"] == 28


def test_kmalloc_caches_sheaves_do_not_recurse_and_are_accounted():
    sa = fresh(nr_cpus=1)
    held = {k.name: k.live_objects - k.sheaf_objects - k.barn_objects - k.random_seq_objects
            for k in sa.kmalloc_caches}
    assert all(v == 0 for v in held.values())
    addrs = [sa.kmalloc(s) for s in (8, 100, 500, 1000, 3000, 8000) for _ in range(200)]
    assert all(addrs) and len(set(addrs)) == len(addrs)
    sa.validate()
    for a in addrs:
        sa.kfree(a)
    assert all(k.live_objects == k.sheaf_objects + k.barn_objects + k.random_seq_objects
               for k in sa.kmalloc_caches)
    for k in sa.kmalloc_caches:
        k.shrink()
    # after shrinking only the main sheaves remain, one per CPU and cache
    assert len(sa.sheaf_addresses()) == sa.nr_cpus * len(sa.kmalloc_caches)
    sa.validate()


def test_misuse_on_7_0_changes_nothing(sa):
    c = sa.kmem_cache_create("c", 64)
    a = c.alloc()
    c.free(a)
    snap = snapshot(sa)
    with pytest.raises(numslab.DoubleFreeError):
        c.free(a)
    assert_unchanged(sa, snap)


# ---- 7.1: the two rules that changed (ARCHITECTURE's table) ------------------------------
@pytest.mark.parametrize("gen", ["7.0", "7.1"])
def test_from_7_1_a_request_that_may_spin_refills_the_main_sheaf(gen):
    # __pcs_replace_empty_main: 7.0 refills only for gfpflags_allow_blocking, 7.1 for
    # gfpflags_allow_spinning (any reclaim bit: GFP_ATOMIC, GFP_NOWAIT); a request with no
    # reclaim bit goes to ___slab_alloc on both
    sa = fresh(gen)
    for gfp in (GFP_ATOMIC, GFP_NOWAIT):
        c = sa.kmem_cache_create(f"c{gfp}", 64)
        a = sa.kmem_cache_alloc(c, gfp)
        st = c.stats
        if gen == "7.1":
            assert (st["sheaf_refill"], st["alloc_fastpath"], st["alloc_slowpath"]) == (60, 1, 0)
            assert c.partial_list(0).shape[0] == 1          # the new slab's other 4 objects
        else:
            assert (st["sheaf_refill"], st["alloc_fastpath"], st["alloc_slowpath"]) == (0, 0, 1)
        assert st["barn_get_fail"] == 1 and st["alloc_slab"] == 1
        c.free(a)
    c = sa.kmem_cache_create("nolock", 64)
    a = sa.kmem_cache_alloc(c, GFP_ATOMIC & ~numslab.flags.__GFP_RECLAIM)
    assert (c.stats["sheaf_refill"], c.stats["alloc_slowpath"]) == (0, 1)
    c.free(a)
    sa.check_invariants()


@pytest.mark.parametrize("gen", ["7.0", "7.1"])
def test_from_7_1_a_shrink_empties_every_barn_before_any_partial_list(gen):
    # __kmem_cache_do_shrink: a full barn sheaf of node 1 holding a node-0 slab's objects
    # (a prefilled sheaf filled from node 0's partial slabs, given back while the CPU has a
    # spare). Its flush empties that slab; 7.0 has shrunk node 0 already (the slab stays on
    # the list, node 0 keeping fewer than min_partial), 7.1 shrinks it after every barn
    sa = fresh(gen, nr_cpus=2, nr_nodes=2, memory="32M")
    c = sa.kmem_cache_create("c", 64)
    cap, per = c.sheaf_capacity, c.objs_per_slab
    assert sa.state.cpu_node.tolist() == [0, 1] and (cap, per) == (60, 64)
    objs = [sa.kmem_cache_alloc_node(c, GFP_KERNEL, 0, cpu=1) for _ in range(6 * per)]
    slabs = sorted({a >> 12 for a in objs})
    assert len(slabs) == 6 and all(sa.page_to_nid(a) == 0 for a in objs)
    held = {s: [a for a in objs if a >> 12 == s] for s in slabs}
    a0 = slabs[0]
    for a in held[a0][2:]:                       # the list's head: 62 free
        sa.kmem_cache_free(c, a, cpu=1)
    for s in slabs[1:]:                          # five more: 6 partial (> min_partial)
        sa.kmem_cache_free(c, held[s][0], cpu=1)
    sheaf = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, cap, cpu=1)
    # CPU 1's refill took the head slab whole (60 into the sheaf, 2 back, the slab to the
    # tail); one object each from the five before it fills them (off the list)
    refill = [sa.kmem_cache_alloc_node(c, GFP_KERNEL, 0, cpu=1) for _ in slabs[1:]]
    assert sorted(a >> 12 for a in refill) == slabs[1:]
    assert c.partial_list(0).tolist() == [[a0 << 12, per - 2, per]]
    x = sa.kmem_cache_alloc(c, GFP_KERNEL, cpu=1)  # the empty main becomes the spare
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, sheaf, cpu=1)
    assert c.stats["barn_put"] == 1               # the sheaf waits in node 1's barn, full
    for a in held[a0][:2]:                        # the slab keeps only the barn's objects
        sa.kmem_cache_free(c, a, cpu=1)
    assert c.partial_list(0).tolist() == [[a0 << 12, cap, per]]
    sa.kmem_cache_shrink(c)
    if gen == "7.1":
        assert c.partial_list(0).tolist() == []   # emptied, then freed by the same shrink
    else:
        assert c.partial_list(0).tolist() == [[a0 << 12, 0, per]]   # emptied too late
        sa.kmem_cache_shrink(c)                   # the next shrink frees it
        assert c.partial_list(0).tolist() == []
    for a in [x] + refill + [a for s in slabs[1:] for a in held[s][1:]]:
        sa.kmem_cache_free(c, a, cpu=1)
    assert c.live_objects == 0
    sa.check_invariants()


def test_the_two_refill_rules_have_names_of_their_own():
    """``_refill_node_rule`` makes 7.0's and 7.3's ``__refill_objects_node`` from one source.
    Numba names a function's code by its qualified name and a per-process count, so the two
    variants, compiled in two processes, could get one symbol: with ``refill_objects`` (7.0's
    variant) and the unit ``refill_node_in_order`` (7.3's) both loaded from the cache, the
    unit ran 7.0's code and 7.3 handed out objects last slab first (a warm cache failed
    ``test_bulk_alloc_takes_whole_partial_slabs_as_refill_objects_does[7.3]``)."""
    from numslab.engine import nocpu
    names = {f.py_func.__qualname__ for f in (nocpu._refill_objects_node,
                                               nocpu._refill_objects_node_in_order)}
    assert len(names) == 2
