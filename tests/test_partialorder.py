"""Node partial lists kept sorted by free objects (``partial_order="sorted"``): the order holds
through every path that moves a slab (single and bulk allocation and free, remote frees,
array modes, shrink, compaction, destroy), on both generations, and ``validate`` checks it."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from conftest import assert_unchanged, snapshot
from numslab.engine.layout import C_SLAB, NIL, PG_SORTED
from numslab.errors import SlabCorruptionError, SlabError

KERNELS = ("7.0", "7.3", "6.18")


def _bucket(free: int) -> int:
    """The oracle's bucket: exact up to 32 free objects, then one per power of two."""
    return free - 1 if free <= 32 else min(32 + (free >> 6).bit_length(), 47)


def _assert_sorted(c: numslab.KmemCache) -> None:
    for node in range(c._sa.nr_nodes):
        pl = c.partial_list(node)
        buckets = [_bucket(int(o - i)) for _, i, o in pl]
        assert buckets == sorted(buckets), buckets


def _churn(sa: numslab.SlabAllocator, c: numslab.KmemCache, rounds: int, seed: int) -> list:
    """Random allocations and frees through every entry point; the order is checked after
    every round. Returns the objects still held."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for r in range(rounds):
        op = rng.integers(6)
        if op == 0:
            held += c.alloc_bulk(int(rng.integers(1, 300))).tolist()
        elif op == 1:
            for _ in range(int(rng.integers(1, 100))):
                held.append(sa.kmem_cache_alloc_node(
                    c, node=int(rng.integers(-1, sa.nr_nodes)), cpu=int(rng.integers(sa.nr_cpus))))
        elif op == 2:
            out = np.zeros(200, np.int64)
            n = sa.kmem_cache_alloc_array(c, numslab.GFP_KERNEL, 200, out)
            held += out[:n].tolist()
        elif op in (3, 4) and held:
            rng.shuffle(held)
            k = int(rng.integers(1, len(held) + 1))
            gone, held = held[:k], held[k:]
            if op == 3:
                c.free_bulk(np.array(gone, np.int64))
            else:
                for a in gone:
                    sa.kmem_cache_free(c, a, cpu=int(rng.integers(sa.nr_cpus)))
        elif op == 5:
            if rng.integers(2):
                c.shrink()
            else:
                old, new = c.compact(int(rng.integers(0, 101)))
                where = dict(zip(old.tolist(), new.tolist()))
                held = [where.get(a, a) for a in held]
        _assert_sorted(c)
        if r % 10 == 9:
            sa.validate(c)
    return held


def test_sorted_lists_stay_sorted_under_churn(sa, kernel):
    c = sa.kmem_cache_create("obj64", 64, partial_order="sorted")
    assert c.partial_order == "sorted"
    held = _churn(sa, c, 80, 1)
    assert sorted(held) == c.live_addresses().tolist()
    c.free_bulk(np.array(held, np.int64))
    c.shrink()
    assert not (sa.state.pg_flags & PG_SORTED).any() and (sa.state.pbuckets[c.id] == NIL).all()


def test_sorted_lists_on_two_nodes_with_remote_frees(sa2, kernel):
    c = sa2.kmem_cache_create("obj192", 192, partial_order="sorted")
    c.remote_node_defrag_ratio = 100
    held = _churn(sa2, c, 60, 2)
    assert sorted(held) == c.live_addresses().tolist()
    c.free_bulk(np.array(held, np.int64))
    sa2.kmem_cache_destroy(c)


def test_the_allocator_default_applies_to_every_cache(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel, partial_order="sorted")
    assert all(c.partial_order == "sorted" for c in sa.caches)
    c = sa.kmem_cache_create("k", 32, partial_order="kernel")
    assert c.partial_order == "kernel"
    held = [sa.kmalloc(int(s)) for s in np.random.default_rng(3).integers(1, 2048, 3000)]
    for a in held[::2]:
        sa.kfree(a)
    for k in sa.kmalloc_caches:
        _assert_sorted(k)
    sa.validate()


def test_switching_order_refiles_the_listed_slabs(sa, kernel):
    c = sa.kmem_cache_create("obj128", 128)
    objs = c.alloc_bulk(4000)
    rng = np.random.default_rng(4)
    c.free_bulk(objs[rng.random(len(objs)) < rng.random(len(objs))])
    assert c.partial_order == "kernel"
    c.partial_order = "sorted"
    _assert_sorted(c)
    sa.validate()
    listed = set(c.partial_list()[:, 0].tolist())
    c.partial_order = "kernel"
    assert set(c.partial_list()[:, 0].tolist()) == listed
    assert not (sa.state.pg_flags & PG_SORTED).any() and (sa.state.pbuckets[c.id] == NIL).all()
    sa.validate()


@pytest.mark.parametrize("order", ["Sorted", 1, None, ""])
def test_a_bad_order_is_refused_with_nothing_changed(sa, kernel, order):
    c = sa.kmem_cache_create("obj64", 64)
    snap = snapshot(sa)
    with pytest.raises(SlabError):
        c.partial_order = order
    if order is not None:                           # None: kmem_cache_create's default
        with pytest.raises(SlabError):
            sa.kmem_cache_create("other", 64, partial_order=order)
    assert_unchanged(sa, snap)
    with pytest.raises(SlabError):
        numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=kernel, partial_order=order)


@pytest.mark.parametrize("order", ["Sorted", 1, None, {"sorted"}])
def test_a_bad_default_order_is_refused_when_set(sa, tmp_path, order):
    # it was taken, then refused by the next kmem_cache_create; save wrote it into a file
    # that load refused ('bogus'), or failed with json's TypeError (a set)
    with pytest.raises(SlabError, match="SlabAllocator.partial_order"):
        sa.partial_order = order
    assert sa.partial_order == "kernel"
    sa.partial_order = "sorted"
    assert sa.kmem_cache_create("obj64", 64).partial_order == "sorted"
    sa.save(tmp_path / "m.npz")
    assert numslab.SlabAllocator.load(tmp_path / "m.npz").partial_order == "sorted"


def test_validate_catches_an_unsorted_list(sa, kernel):
    c = sa.kmem_cache_create("obj64", 64, partial_order="sorted")
    objs = c.alloc_bulk(3000)
    c.free_bulk(objs[np.random.default_rng(5).random(len(objs)) < 0.5])
    c.shrink()
    pl = c.partial_list()
    assert len(pl) > 3 and len({int(o - i) for _, i, o in pl}) > 1
    st = sa.state
    first, last = int(pl[0, 0]) >> 12, int(pl[-1, 0]) >> 12
    for words, i in ((st.sl_bucket, last), (st.pbuckets[c.id, 0], int(st.sl_bucket[first]))):
        saved = int(words[i])
        words[i] = int(st.sl_bucket[first]) if words is st.sl_bucket else NIL
        with pytest.raises(SlabCorruptionError, match="sorted"):
            sa.validate(c)
        words[i] = saved
        sa.validate(c)


def test_allocation_finishes_the_fullest_slabs_first(sa, kernel):
    """With the lists sorted, the slab layer takes partial slabs from the head (6.18: the CPU
    slab and CPU partial list; 7.0: sheaf refills of whole slabs), so the ones with the
    fewest free objects go first: what stays listed is a tail of the sorted list."""
    c = sa.kmem_cache_create("obj256", 256, partial_order="sorted")
    k = c.objs_per_slab
    m = min(k - 1, 30)
    objs = c.alloc_bulk(k * m)
    frames = objs >> 12
    for i, f in enumerate(np.unique(frames)):        # slab i keeps m - i free objects
        c.free_bulk(objs[frames == f][: m - i])
    c.shrink()
    pl = c.partial_list()
    assert [int(o - u) for _, u, o in pl] == list(range(1, m + 1))
    sa.kmem_cache_free(c, sa.kmem_cache_alloc(c))
    rest = c.partial_list()[:, 0].tolist()
    if kernel != "6.18":
        assert 0 < len(rest) < m and rest == pl[m - len(rest):, 0].tolist()
    else:                       # get_partial_node moved them all; the CPU slab is the fullest
        assert sa.state.cpu[c.id, 0, C_SLAB] == pl[0, 0] >> 12
