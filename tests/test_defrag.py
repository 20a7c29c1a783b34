"""Movable objects (Harding's Slab Movable Objects): ``cache.compact``, ``kmem_cache_compact``
with ``kmem_cache_setup_mobility`` callbacks, and ``numslab.jit.kmem_cache_compact``."""
from __future__ import annotations

import subprocess
import sys

import numba
import numpy as np
import pytest

import numslab
from conftest import assert_unchanged, snapshot
from numslab.engine.layout import C_MAIN
from numslab.errors import InvalidSizeError, SlabError

KERNELS = ("7.0", "7.1", "6.18")


def _fill(sa: numslab.SlabAllocator, objs: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Write random bytes into every object (objects on a ``size`` grid of the arena)."""
    data = np.random.default_rng(seed).integers(0, 256, (len(objs), size), dtype=np.uint8)
    sa.memory.reshape(-1, size)[objs // size] = data
    return data


def _slab_usage(c: numslab.KmemCache) -> dict[int, int]:
    """Live objects per slab frame (the oracle: from the live addresses)."""
    frames, counts = np.unique(c.live_addresses() >> 12, return_counts=True)
    return dict(zip(frames.tolist(), counts.tolist()))


def _check_map(sa, c, keep, data, old, new):
    """Every live object's bytes intact at its new address; the map covers each moved object
    once, moves only objects that were live, and lands on objects that were free."""
    assert len(np.unique(old)) == len(old) and len(np.unique(new)) == len(new)
    assert np.isin(old, keep).all()
    assert not np.isin(new, keep[~np.isin(keep, old)]).any()
    final = keep.copy()
    order = np.argsort(old)
    pos = np.searchsorted(old[order], keep)
    hit = (pos < len(old)) & (old[order][np.minimum(pos, len(old) - 1)] == keep)
    final[hit] = new[order][pos[hit]]
    assert np.array_equal(np.sort(final), c.live_addresses())
    size = c.slab_size
    assert np.array_equal(sa.memory.reshape(-1, size)[final // size], data)


def test_compact_100_packs_100k_objects_with_70_percent_freed(sa, kernel):
    c = sa.kmem_cache_create("obj256", 256)
    assert c.slab_size == 256
    objs = c.alloc_bulk(100_000)
    data = _fill(sa, objs, 256, 1)
    gone = np.random.default_rng(2).random(len(objs)) < 0.7
    c.free_bulk(objs[gone])
    keep, data = objs[~gone], data[~gone]
    slabs_before = c.slabs
    old, new = c.compact(100)
    c.shrink()
    need = -(-len(keep) // c.objs_per_slab)
    assert c.slabs <= 1.1 * need < slabs_before
    _check_map(sa, c, keep, data, old, new)
    assert c.objects_moved == len(old) > 0
    assert c.slabs_freed_by_moving > 0
    sa.validate()


def test_default_ratio_empties_exactly_the_slabs_used_at_most_30_percent(sa, kernel):
    c = sa.kmem_cache_create("obj128", 128)
    k = c.objs_per_slab
    objs = c.alloc_bulk(k * 12)
    data = _fill(sa, objs, 128, 3)
    frames = objs >> 12
    order = np.unique(frames)
    uses = [1, 2, k // 5, 30 * k // 100, 30 * k // 100 + 1, k // 2, k - 3, k - 2, k - 1, k - 1, k, k]
    keepmask = np.zeros(len(objs), bool)
    for f, u in zip(order, uses):
        idx = np.flatnonzero(frames == f)
        keepmask[idx[:u]] = True
    c.free_bulk(objs[~keepmask])
    c.shrink()
    before = _slab_usage(c)
    sparse = {f for f, u in before.items() if u <= 30 * k // 100}
    assert len(sparse) == 4
    old, new = c.compact()
    assert set((old >> 12).tolist()) == sparse                  # every sparse slab, only they
    after = _slab_usage(c)
    assert not sparse & set(after)                              # emptied and freed
    assert c.slabs_freed_by_moving == len(sparse)
    assert set((new >> 12).tolist()) <= set(before) - sparse
    # the fullest slabs are filled first (the kernel's shrink order: fewest free first)
    partial = {f for f in set(before) - sparse if before[f] < k}
    full_first = sorted(partial, key=lambda f: (k - before[f], f))
    filled = [f for f in full_first if after.get(f, 0) > before[f]]
    assert filled == full_first[:len(filled)]
    _check_map(sa, c, objs[keepmask], data[keepmask], old, new)


def test_ratio_zero_and_an_empty_cache_move_nothing(sa, kernel):
    c = sa.kmem_cache_create("obj64", 64)
    old, new = c.compact(100)
    assert len(old) == len(new) == 0
    objs = c.alloc_bulk(1000)
    c.free_bulk(objs[::3])
    old, new = c.compact(0)
    assert len(old) == 0 and c.objects_moved == 0


@pytest.mark.parametrize("ratio", [101, -1, 1.5, True, "30"])
def test_a_bad_ratio_is_refused_with_nothing_changed(sa, kernel, ratio):
    c = sa.kmem_cache_create("obj64", 64)
    objs = c.alloc_bulk(500)
    c.free_bulk(objs[::2])
    snap = snapshot(sa)
    with pytest.raises(InvalidSizeError):
        c.compact(ratio)
    with pytest.raises(InvalidSizeError):
        sa.kmem_cache_compact(c, ratio)
    with pytest.raises(InvalidSizeError):
        c.defrag_used_ratio = ratio
    assert_unchanged(sa, snap)


def test_defrag_used_ratio_defaults_to_30_and_can_be_set(sa, kernel):
    c = sa.kmem_cache_create("obj64", 64)
    assert c.defrag_used_ratio == 30
    c.defrag_used_ratio = 0
    assert c.defrag_used_ratio == 0
    objs = c.alloc_bulk(2000)
    c.free_bulk(objs[::2])
    assert len(c.compact()[0]) == 0                 # ratio 0: no slab is below it
    c.defrag_used_ratio = 100
    assert c.defrag_used_ratio == 100
    assert len(c.compact()[0]) > 0


def test_mobility_callbacks_keep_a_reference_table_valid(sa, kernel):
    c = sa.kmem_cache_create("node", 96)
    objs = c.alloc_bulk(3000)
    ids = np.arange(len(objs))
    for i, a in zip(ids.tolist(), objs.tolist()):
        sa.memory[a:a + 8] = np.frombuffer(np.int64(i).tobytes(), np.uint8)
    gone = np.random.default_rng(4).random(len(objs)) < 0.8
    c.free_bulk(objs[gone])
    table = {int(i): int(a) for i, a in zip(ids[~gone], objs[~gone])}
    calls = []

    def isolate(o):
        calls.append(("isolate", o.copy()))
        return "pinned"

    def migrate(old, new, private):
        calls.append(("migrate", old.copy(), new.copy(), private))
        where = dict(zip(old.tolist(), new.tolist()))
        for i, a in table.items():
            table[i] = where.get(a, a)

    sa.kmem_cache_setup_mobility(c, isolate, migrate)
    c.defrag_used_ratio = 50
    slabs = c.slabs
    sa.kmem_cache_shrink(c)                         # shrink runs the moves of a movable cache
    assert [k[0] for k in calls] == ["isolate", "migrate"]
    assert np.array_equal(calls[0][1], calls[1][1]) and calls[1][3] == "pinned"
    assert c.slabs < slabs
    for i, a in table.items():
        assert int(sa.memory[a:a + 8].view(np.int64)[0]) == i
    assert sorted(table.values()) == c.live_addresses().tolist()


def test_cache_compact_calls_the_mobility_callbacks_as_kmem_cache_compact_does(sa, kernel):
    # cache.compact moved a movable cache's objects without isolate or migrate: an owner
    # that registered them to keep its references right was never told, and its table
    # pointed at free objects
    c = sa.kmem_cache_create("node", 96)
    objs = c.alloc_bulk(1500)
    c.free_bulk(objs[np.random.default_rng(5).random(len(objs)) < 0.8])
    table = c.live_addresses().tolist()
    calls = []

    def migrate(old, new, private):
        calls.append((old.copy(), new.copy(), private))
        where = dict(zip(old.tolist(), new.tolist()))
        table[:] = [where.get(a, a) for a in table]

    sa.kmem_cache_setup_mobility(c, lambda o: len(o), migrate)
    old, new = c.compact(100)
    assert len(old) > 0 and len(calls) == 1
    assert np.array_equal(calls[0][0], old) and np.array_equal(calls[0][1], new)
    assert calls[0][2] == len(old)                  # isolate's private, of the planned moves
    assert sorted(table) == c.live_addresses().tolist()
    sa.validate()


def test_a_migrate_that_raises_leaves_the_moves_on_its_exception(sa, kernel):
    # the objects have moved when migrate runs: an owner whose callback failed had no way
    # to learn where they went
    c = sa.kmem_cache_create("node", 96)
    objs = c.alloc_bulk(2000)
    c.free_bulk(objs[np.random.default_rng(4).random(len(objs)) < 0.8])
    keep = c.live_addresses()

    def migrate(old, new, private):
        raise KeyError("owner lost")

    sa.kmem_cache_setup_mobility(c, None, migrate)
    with pytest.raises(KeyError) as e:
        sa.kmem_cache_compact(c, 100)
    old, new = e.value.moved
    assert len(old) > 0
    assert sorted(numslab.remap(keep, old, new).tolist()) == c.live_addresses().tolist()
    sa.validate()


def test_migrate_follows_every_isolate_even_when_nothing_moved(sa, kernel):
    # isolate may change what can move (here the owner allocates and fills the one free
    # object): migrate was called only when objects moved, so the owner never learnt that
    # the object it pinned stayed, and kept it pinned
    c = sa.kmem_cache_create("node", 256)
    per = c.objs_per_slab
    objs = c.alloc_bulk(4 * per)
    c.free_bulk(objs[3 * per + 1:])             # the last slab keeps one object
    c.free_bulk(objs[:1])                       # the others have one free object
    pinned, calls = set(), []

    def isolate(o):
        pinned.update(o.tolist())
        c.alloc_bulk(2 * per)
        return "pinned"

    def migrate(old, new, private):
        calls.append((len(old), private))
        pinned.clear()

    sa.kmem_cache_setup_mobility(c, isolate, migrate)
    old, new = sa.kmem_cache_compact(c, 100)
    assert len(old) == 0 and calls == [(0, "pinned")] and not pinned
    sa.validate()


def test_only_isolated_objects_move_when_isolate_frees_others(sa, kernel):
    # an isolate that frees objects it was not given makes other slabs sources: the real
    # compaction planned again and moved them, never isolated (14 isolated, 307 moved)
    c = sa.kmem_cache_create("node", 256)
    per = c.objs_per_slab
    objs = c.alloc_bulk(40 * per)
    slabs = [s for _, s in sorted(
        {k: [a for a in objs.tolist() if a >> (12 + c.order) == k]
         for k in {a >> (12 + c.order) for a in objs.tolist()}}.items())]
    c.free_bulk(np.array([a for s in slabs[:10] for a in s[per // 4:]], np.int64))
    c.free_bulk(np.array([a for s in slabs[20:30] for a in s[3 * per // 4:]], np.int64))
    isolated, moved = [], []

    def isolate(o):                 # it frees objects of ten full slabs it was not given
        isolated.extend(o.tolist())
        c.free_bulk(np.array([a for s in slabs[10:20] for a in s[per // 4:]], np.int64))
        return "p"

    def migrate(old, new, private):
        moved.extend(old.tolist())

    sa.kmem_cache_setup_mobility(c, isolate, migrate)
    old, new = sa.kmem_cache_compact(c, 30)
    assert isolated and set(moved) <= set(isolated) and set(old.tolist()) <= set(isolated)
    sa.validate()
    sa.kmem_cache_setup_mobility(c, None, migrate)      # without isolate, it goes ahead
    old, new = sa.kmem_cache_compact(c, 30)
    assert len(old) and moved[-len(old):] == old.tolist()
    sa.validate()


def test_release_order_and_release_memory_take_numpy_integers(sa, kernel):
    sa.release_order = np.int64(6)
    assert sa.release_order == 6 and type(sa.release_order) is int
    assert sa.release_memory(np.int32(10)) >= 0


def test_setup_mobility_refuses_what_is_not_callable(sa, kernel):
    c = sa.kmem_cache_create("obj64", 64)
    with pytest.raises(SlabError):
        sa.kmem_cache_setup_mobility(c, None, 3)
    with pytest.raises(SlabError):
        sa.kmem_cache_setup_mobility(c, "x", lambda o, n, p: None)
    other = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=kernel)
    with pytest.raises(SlabError):
        other.kmem_cache_setup_mobility(c, None, lambda o, n, p: None)


def test_njit_migrate_callback(sa, kernel):
    c = sa.kmem_cache_create("obj64", 64)
    objs = c.alloc_bulk(2000)
    c.free_bulk(objs[1::2])
    refs = objs[::2].copy()

    @numba.njit
    def migrate(old, new, refs):                    # private: isolate's table of references
        order = np.argsort(old)
        so = old[order]
        for i in range(refs.shape[0]):
            p = np.searchsorted(so, refs[i])
            if p < so.shape[0] and so[p] == refs[i]:
                refs[i] = new[order[p]]

    sa.kmem_cache_setup_mobility(c, lambda objs: refs, migrate)
    old, new = sa.kmem_cache_compact(c, 100)
    assert len(old) > 0
    assert np.array_equal(np.sort(refs), c.live_addresses())


def test_sheaves_of_kmalloc_caches_are_never_moved(sa, kernel):
    c = sa.find_cache("kmalloc-512")
    objs = np.array([sa.kmalloc(300) for _ in range(3000)], np.int64)
    c2 = sa.kmem_cache_create("sheafy", 64, sheaf_capacity=32)  # its sheaves in kmalloc-512
    held = c2.alloc_bulk(200)
    for a in objs[::2].tolist():
        sa.kfree(a)
    sheaves = sa.sheaf_addresses()
    mains = sa.state.cpu[c2.id, :, C_MAIN].copy()
    old, new = c.compact(100)
    assert len(old) > 0
    assert not np.isin(old, sheaves).any()
    assert np.array_equal(sa.state.cpu[c2.id, :, C_MAIN], mains)  # not moved (nor flushed)
    objs = mains[mains != 0] - sa.memory.size           # a handle: its object + the arena size
    assert np.isin(objs, sa.sheaf_addresses()).all() and mains.any()
    c2.free_bulk(held)


def test_typed_records_survive_compaction(sa, kernel):
    dt = np.dtype([("key", np.int64), ("x", np.float64), ("tag", "S12")])
    c = sa.kmem_cache_create("rec", dt.itemsize, dtype=dt)
    objs = c.alloc_bulk(4000)
    vals = np.zeros(len(objs), dt)
    vals["key"] = np.arange(len(objs))
    vals["x"] = np.arange(len(objs)) * 0.5
    vals["tag"] = [b"t%d" % i for i in range(len(objs))]
    c.store(objs, vals)
    gone = np.random.default_rng(5).random(len(objs)) < 0.75
    c.free_bulk(objs[gone])
    keep, vals = objs[~gone], vals[~gone]
    old, new = c.compact(100)
    where = dict(zip(old.tolist(), new.tolist()))
    now = np.array([where.get(a, a) for a in keep.tolist()], np.int64)
    assert np.array_equal(c.records(now), vals)


def test_moves_stay_on_their_node(sa2, kernel):
    c = sa2.kmem_cache_create("obj128", 128)
    objs = []
    for node in (0, 1):
        objs += [sa2.kmem_cache_alloc_node(c, node=node) for _ in range(1500)]
    objs = np.array(objs, np.int64)
    c.free_bulk(objs[np.random.default_rng(6).random(len(objs)) < 0.7])
    old, new = c.compact(100)
    assert len(old) > 0
    nid = np.vectorize(sa2.page_to_nid)
    assert np.array_equal(nid(old), nid(new))
    assert set(nid(old).tolist()) == {0, 1}


def _jit_compact_workload(kernel: str, use_jit: bool) -> tuple[np.ndarray, np.ndarray, int]:
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel)
    c = sa.kmem_cache_create("obj192", 192)
    objs = c.alloc_bulk(5000)
    c.free_bulk(objs[np.random.default_rng(7).random(len(objs)) < 0.6])
    if not use_jit:
        old, new = c.compact(100)
        sa.validate()
        return old, new, c.slabs
    old = np.zeros(len(c), np.int64)
    new = np.zeros(len(c), np.int64)
    n = _jit_compact(sa.handle, c.id, old, new)
    sa.validate()
    return old[:n], new[:n], c.slabs


@numba.njit
def _jit_compact(h, cid, old, new):
    return numslab.jit.kmem_cache_compact(h, cid, 100, old, new)


def test_numslab_jit_compact_refuses_pair_arrays_over_memory_not_the_callers(kernel):
    """``numslab.jit.kmem_cache_compact`` wrote its pairs into arrays wherever they lay: in
    a free object the compaction then filled with a moved object, the move overwrote the
    pairs already written (the caller lost where an object went). As every batch call's,
    an array in the arena must lie inside an allocation of the caller's."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="16M", kernel=kernel)
    c = sa.kmem_cache_create("x", 256)
    objs = c.alloc_bulk(4 * c.objs_per_slab)
    c.free_bulk(objs[1::2])
    free_at, keep = int(objs[1]), int(objs[0])
    mine = np.zeros(64, np.int64)
    snap = snapshot(sa)
    for where in (free_at, keep + 192):                 # a free object; past an object's end
        arr = sa.memory[where:where + 8 * 16].view(np.int64)
        for old, new in ((arr, mine[:16]), (mine[:16], arr)):
            with pytest.raises(numslab.InvalidArgumentError, match="lies in the arena"):
                _jit_compact(sa.handle, c.id, old, new)
            assert_unchanged(sa, snap)
    holder = keep                       # an object of the cache compacted: it may move,
    arr = sa.memory[holder:holder + 128].view(np.int64)     # and its slab be freed
    with pytest.raises(numslab.InvalidArgumentError, match="an object of the cache it moves"):
        _jit_compact(sa.handle, c.id, arr[:8], arr[8:])
    assert_unchanged(sa, snap)
    big = sa.kmalloc(3 * 4096)                          # the caller's own block: used
    arr = sa.memory[big:big + 8 * 2 * len(c)].view(np.int64)
    n = _jit_compact(sa.handle, c.id, arr[:len(c)], arr[len(c):])
    assert n > 0 and all(sa.find(int(a))["kind"] == "object" for a in arr[len(c):][:n])
    sa.validate()


def test_numslab_jit_compact_matches_the_facade(kernel):
    o1, n1, s1 = _jit_compact_workload(kernel, False)
    o2, n2, s2 = _jit_compact_workload(kernel, True)
    assert len(o1) > 0 and s1 == s2
    assert np.array_equal(o1, o2) and np.array_equal(n1, n2)



@numba.njit
def _jit_compact_at(h, cid, ratio, old, new):
    return numslab.jit.kmem_cache_compact(h, cid, ratio, old, new)


def test_numslab_jit_compact_refuses_a_ratio_outside_0_to_100_or_minus_1(sa, kernel):
    # -1 names the cache's defrag_used_ratio; -5 or -1000 were taken silently for it
    c = sa.kmem_cache_create("obj64", 64)
    objs = c.alloc_bulk(2000)
    c.free_bulk(objs[np.arange(len(objs)) % 5 != 0])          # slabs 20% used
    old, new = np.zeros(2000, np.int64), np.zeros(2000, np.int64)
    snap = snapshot(sa)
    for ratio in (101, -2, -5, -1000):
        with pytest.raises(InvalidSizeError, match=r"ratio not in 0\.\.100 \(or -1"):
            _jit_compact_at(sa.handle, c.id, ratio, old, new)
        assert_unchanged(sa, snap)
    assert not old.any() and not new.any()
    moved = _jit_compact_at(sa.handle, c.id, -1, old, new)        # the cache's: 30%
    assert moved == c.objects_moved and moved > 0
    sa.validate()

def test_numslab_jit_compact_stops_at_the_room_given(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel)
    c = sa.kmem_cache_create("obj192", 192)
    objs = c.alloc_bulk(21 * 238)                  # whole slabs of 21
    c.free_bulk(objs[::2])                          # each keeps 10 or 11 of its objects
    # whole slabs only: room for fewer objects than the sparsest slab holds moves none
    assert c.objs_per_slab == 21
    assert _jit_compact(sa.handle, c.id, np.zeros(9, np.int64), np.zeros(9, np.int64)) == 0
    assert c.objects_moved == 0
    old = np.zeros(10, np.int64)
    new = np.zeros(50, np.int64)
    n = _jit_compact(sa.handle, c.id, old, new)
    assert 0 < n <= 10 and c.objects_moved == n
    assert not new[n:].any()
    sa.validate()


def test_a_corrupted_free_pointer_stops_compaction_and_reports_the_moves(sa, kernel):
    c = sa.kmem_cache_create("obj128", 128)
    objs = c.alloc_bulk(3000)
    data = _fill(sa, objs, 128, 8)
    gone = np.random.default_rng(9).random(len(objs)) < 0.6
    c.free_bulk(objs[gone])
    keep, data = objs[~gone], data[~gone]
    c.shrink()
    plist = c.partial_list()
    slabs = plist[:, 0]
    assert len(slabs) > 4
    # the second-fullest slab: the moves start at the fullest and meet the bad pointer next
    target = int(slabs[1])
    head = int(sa.state.sl_freelist[target >> 12])
    sa._mem[(head + c.offset) >> 3] ^= 0x5A5A0000
    with pytest.raises(numslab.errors.SlabCorruptionError) as e:
        c.compact(100)
    old, new = e.value.moved
    free_in_first = int(plist[0, 2] - plist[0, 1])
    assert len(old) == free_in_first
    assert (new >> 12 == slabs[0] >> 12).all()
    assert (target >> 12) in (sa.isolated_slabs() >> 12).tolist()
    _check_map(sa, c, keep, data, old, new)
    sa.validate()


def _target_and_source(kernel):
    """An unhardened machine whose cache has a target slab (8 free objects) and a source
    slab (4 objects): (sa, cache, objects allocated, the mask of those kept, their frames)."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel, freelist_hardened=False)
    c = sa.kmem_cache_create("c", 64)
    per = c.objs_per_slab
    objs = c.alloc_bulk(4 * per)
    frames = np.unique(objs >> 12)
    rank = np.array([np.sum(objs[:i] >> 12 == objs[i] >> 12) for i in range(len(objs))])
    keep = (objs >> 12 == frames[0]) & (rank < per - 8)
    keep |= (objs >> 12 == frames[1]) & (rank < 4)
    c.free_bulk(objs[~keep])
    return sa, c, objs, keep, frames


def test_free_lists_cut_short_stop_compaction_inside_its_slabs(kernel):
    """Free pointers set to 0 by stray writes (unhardened) leave free lists shorter than the
    slabs' free counts: the moves stop at the last target slab. Before, they ran on past the
    table of target slabs (a segfault, or objects moved into another cache's slab)."""
    sa, c, objs, keep, _ = _target_and_source(kernel)
    for a in objs[~keep].tolist():
        sa.memory[a + c.offset:a + c.offset + 8] = 0    # every free list cut after its head
    try:
        old, new = c.compact(100)
    except numslab.errors.SlabCorruptionError as e:
        old, new = e.moved
    assert np.isin(old, objs[keep]).all()
    assert all(sa.find(a)["kind"] == "object" and sa.find(a)["cache"] is c for a in new.tolist())
    assert len(c.live_addresses()) == keep.sum()


def test_a_free_pointer_naming_its_own_object_stops_compaction(kernel):
    """A stray write made a target slab's first free object name itself (unhardened): the
    walk took it as the next free object, so every move landed on the same address, over
    the object moved there before (the fuzzer saw an address handed out twice). Like the
    kernel's hardened ``set_freepointer`` (``object == fp``), the walk now refuses it."""
    sa, c, objs, keep, frames = _target_and_source(kernel)
    sa.kmem_cache_shrink(c)                                  # sheaves flushed to the slabs
    head = int(sa.state.sl_freelist[frames[0]])
    assert head >> 12 == frames[0]
    sa.memory[head + c.offset:head + c.offset + 8] = np.frombuffer(
        np.int64(head).tobytes(), np.uint8)
    try:
        old, new = c.compact(100)
    except numslab.errors.SlabCorruptionError as e:
        old, new = e.moved
    assert len(set(new.tolist())) == len(new)                # no address reached twice
    held = set(objs[keep].tolist()) - set(old.tolist()) | set(new.tolist())
    assert set(c.live_addresses().tolist()) - set(sa.sheaf_addresses().tolist()) == held


def test_an_object_waiting_for_its_grace_period_does_not_move(sa, kernel, tmp_path):
    # an RCU reader may hold it until the grace period ends: its slab is no source, on the
    # kfree_rcu list (6.18: no sheaves; such objects used to move, the list following) or
    # in an rcu_free sheaf (7.0) alike
    c = sa.find_cache("kmalloc-256")
    objs = np.array([sa.kmalloc(200) for _ in range(2000)], np.int64)
    for a in objs[1::2].tolist():
        sa.kfree(a)
    sa.save(tmp_path / "m.npz")                         # which would move with none waiting
    would, _ = type(sa).load(tmp_path / "m.npz").find_cache("kmalloc-256").compact(100)
    assert len(would) > 8
    waiting = would[::4].tolist()
    for a in waiting:
        sa.kfree_rcu(a)
    old, new = c.compact(100)
    where = dict(zip(old.tolist(), new.tolist()))
    assert len(old) and not any(a in where for a in waiting)
    assert sa.synchronize_rcu() + sa.kvfree_rcu_barrier() == len(waiting)
    still = set(c.live_addresses().tolist()) - set(sa.sheaf_addresses().tolist())
    assert still == {where.get(a, a) for a in objs[::2].tolist()} - \
        {where.get(a, a) for a in waiting}


def test_remap_against_a_dictionary():
    rng = np.random.default_rng(10)
    old = rng.choice(1 << 20, 500, replace=False).astype(np.int64) * 8
    new = rng.choice(1 << 20, 500, replace=False).astype(np.int64) * 8 + (1 << 24)
    refs = np.concatenate([old[::2], rng.integers(0, 1 << 23, 300) * 8]).reshape(2, -1)
    where = dict(zip(old.tolist(), new.tolist()))
    want = np.array([where.get(a, a) for a in refs.ravel().tolist()]).reshape(refs.shape)
    assert np.array_equal(numslab.remap(refs, old, new), want)
    assert np.array_equal(numslab.remap(refs, old[:0], new[:0]), refs)


@pytest.mark.parametrize("debug", ["FZPU", "F", "Z", "U", "FZ"])
def test_a_slab_debug_cache_compacts_with_its_red_zones_poison_and_tracks(kernel, debug):
    # slab_debug FZPU: objects sit red_left_pad bytes into their slot; a moved object keeps
    # its red zones, tracks and bytes, and the slot it left is a free object again (poisoned,
    # inactive red zone), so the debug checks find no error before or after and every moved
    # object is freed through the checked path. Without P the free pointer stays inside the
    # object (at its middle, as calculate_sizes puts it): the moved object's bytes there are
    # its own, not the target slot's old free pointer
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel, slab_debug=debug)
    c = sa.kmem_cache_create("dbg", 64)
    assert (c.red_left_pad > 0) == ("Z" in debug)
    assert (c.offset < c.inuse) == ("P" not in debug)
    objs = np.array([sa.kmem_cache_alloc(c) for _ in range(6 * c.objs_per_slab)], np.int64)
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, (len(objs), 64), dtype=np.uint8)
    for a, d in zip(objs.tolist(), data):
        sa.memory[a:a + 64] = d
    gone = rng.random(len(objs)) < 0.7
    for a in objs[gone].tolist():
        sa.kmem_cache_free(c, a)
    keep, data = objs[~gone], data[~gone]
    assert sa.kmem_cache_validate(c) == 0
    old, new = c.compact(100)
    assert len(old) > 0
    where = dict(zip(keep.tolist(), keep.tolist()))
    where.update(zip(old.tolist(), new.tolist()))
    final = np.array([where[a] for a in keep.tolist()], np.int64)
    assert sorted(final.tolist()) == sorted(c.live_addresses().tolist())
    for a, d in zip(final.tolist(), data):
        assert (sa.memory[a:a + 64] == d).all()
    reports = len(sa.slab_reports())
    assert sa.kmem_cache_validate(c) == 0
    sa.validate()
    for a in final.tolist():
        sa.kmem_cache_free(c, a)
    assert len(sa.slab_reports()) == reports and c.live_objects == 0
    assert sa.kmem_cache_validate(c) == 0
    sa.validate()


@pytest.mark.parametrize("gen", ["7.0", "7.3"])
def test_compaction_refuses_a_target_whose_free_list_a_stray_write_shortened(gen):
    """A stray write makes a target slab's free pointer skip to its list's last object, so
    the list ends in NULL while the count says more objects are free. The moves popped it
    with the free-pointer check alone, left it with no list and free objects by its count,
    and relisted it; a later free then listed it twice (a cycle of slabs: len(c) raised
    ValueError). The moves check the count as the single pop does: the target is isolated
    and the compaction raises, carrying the moves it made; nothing else changes after."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel=gen, freelist_random=False,
                               freelist_hardened=False)
    c = sa.kmem_cache_create("c", 192)
    objs = [sa.kmem_cache_alloc(c) for _ in range(200)]
    slabs = sorted({x & ~4095 for x in objs})
    a_, b_, c_ = slabs[1], slabs[2], slabs[3]       # a sparse source, two targets
    held = []
    for x in objs:
        s, k = x & ~4095, (x - (x & ~4095)) // c.slab_size
        if (s == a_ and k >= 6) or (s == b_ and k % 4 == 0) or (s == c_ and k % 3 == 0) \
                or s not in (a_, b_, c_):
            sa.kmem_cache_free(c, x)
        else:
            held.append(x)
    sa.kmem_cache_shrink(c)
    sa.validate()

    def fp(o):
        return int.from_bytes(bytes(sa.memory[o + c.offset:o + c.offset + 8]), "little")
    chain = [int(sa.state.sl_freelist[b_ >> 12])]
    while fp(chain[-1]):
        chain.append(fp(chain[-1]))
    sa.memory[chain[0] + c.offset:chain[0] + c.offset + 8] = list(chain[-1].to_bytes(8,
                                                                                    "little"))
    with pytest.raises(numslab.SlabCorruptionError, match="compaction stopped") as e:
        c.compact(100)
    old, new = e.value.moved
    held = sorted(set(held) - set(old.tolist()) | set(new.tolist()))
    assert sa.isolated_slabs().tolist() == [b_]
    assert len(c) == len(c.live_addresses()) == len(held)
    sa.validate()
    for x in [h for h in held if h & ~4095 == b_][:3]:
        sa.kmem_cache_free(c, x)
        held.remove(x)
    got = [sa.kmem_cache_alloc(c) for _ in range(40)]
    assert not set(got) & set(held) and len(set(got)) == 40
    assert len(c) == len(c.live_addresses()) == len(held) + 40
    sa.validate()


def test_remap_passes_uint64_values_through():
    """A uint64 table (a pointer map kept unsigned) keeps its type: values from 2**63 up,
    which are no address, pass through unchanged instead of wrapping negative."""
    refs = np.array([2**63 + 5, 4096, 2**64 - 1, 8192], np.uint64)
    got = numslab.remap(refs, np.array([4096, 8192]), np.array([12288, 16384]))
    assert got.dtype == np.uint64
    assert got.tolist() == [2**63 + 5, 12288, 2**64 - 1, 16384]
    assert numslab.remap(refs, np.array([], np.int64), np.array([], np.int64)).tolist() \
        == refs.tolist()


_DESTROY_MIDWAY = r"""
import sys, threading
import numslab
sa = numslab.SlabAllocator(nr_cpus=1, memory="16M", kernel=sys.argv[1])
calls = {"compact": lambda c: c.compact(100),
         "partial_order": lambda c: setattr(c, "partial_order", "sorted"),
         "cpu_partial": lambda c: setattr(c, "cpu_partial", 0)}
done = {}
for name, call in calls.items():
    lines, at, refused = None, 0, 0
    while lines is None or at < lines:
        c = sa.kmem_cache_create("gone", 64)
        seen, killer = [0], []

        def destroy_at(frame, event, arg):
            if event == "call" and "numslab/facade/" not in frame.f_code.co_filename:
                return None             # (the facade's lines: where the check and call are)
            if event == "line":
                seen[0] += 1
                if lines is not None and seen[0] == at + 1:
                    killer.append(threading.Thread(target=sa.kmem_cache_destroy, args=(c,)))
                    killer[0].start()
                    if not sa._slab_mutex._is_owned():  # (held: the destroy waits for it)
                        killer[0].join(0.2)
            return destroy_at
        sys.settrace(destroy_at)
        try:
            call(c)
        except numslab.WrongCacheError:
            refused += 1
        finally:
            sys.settrace(None)
        if lines is None:
            lines = seen[0]
            sa.kmem_cache_destroy(c)
            continue
        if killer:
            killer[0].join()
        else:                           # (a call of fewer lines than the first)
            sa.kmem_cache_destroy(c)
        at += 1
    done[name] = (lines, refused)
sa.validate()
print(all(lines > 3 and refused < lines for lines, refused in done.values()), len(sa.caches))
"""


@pytest.mark.parametrize("gen", ["7.0"])
def test_a_destroy_in_another_thread_never_meets_the_cache_s_own_engine_calls(gen):
    """``cache.compact``, and the ``partial_order`` and ``cpu_partial`` setters, call the engine
    with the cache's id themselves: another thread's ``kmem_cache_destroy`` between their check
    and the call (here at each of their lines in turn) gave the engine the id -1, and it wrote
    before the state's fields (a segmentation fault), or a new cache's slot. They now hold the
    ``slab_mutex`` as every ``cache_op`` does: the destroy waits, or they refuse a destroyed
    cache."""
    p = subprocess.run([sys.executable, "-c", _DESTROY_MIDWAY, gen], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[0] == "True", p.stdout


def _ctor_compacting(gen, compact, mobility=False):
    """A cache of 64-byte objects whose constructor, at the third object of a bulk's new slab,
    frees all but four of the owner's objects and calls ``compact(sa, c)`` (``(old, new)``, or
    None: nothing to remap; a ``ConstructorError`` is recorded as a refusal).

    The owner first holds two slabs' objects, each filled with 0x55, then a bulk of ``k - 8``
    is allocated. Returns the allocator, the cache, the owner's objects (address: 1), the
    refusals' texts and the bulk's objects."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="16M", kernel=gen, freelist_random=False)
    calls, user, refused = [-10 ** 9], {}, []

    def ctor(mem, addr):
        calls[0] += 1
        mem[addr:addr + 64] = 0xAA
        if calls[0] == 3:
            for a in sorted(user)[:-4]:
                sa.kmem_cache_free(c, a)
                del user[a]
            try:
                moved = compact(sa, c)
            except numslab.ConstructorError as e:
                refused.append(str(e))
                return
            for o, n in zip(*(m.tolist() for m in moved)) if moved is not None else ():
                user[n] = user.pop(o)
    c = sa.kmem_cache_create("k", 64, ctor=ctor)
    if mobility:
        sa.kmem_cache_setup_mobility(c, None, lambda old, new, private: [
            user.__setitem__(n, user.pop(o)) for o, n in zip(old.tolist(), new.tolist())])
    k = c.objs_per_slab
    for a in c.alloc_bulk(2 * k).tolist():
        user[a] = 1
        sa.memory[a:a + 64] = 0x55
    calls[0] = 0
    out = np.zeros(k, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, k - 8, out) == k - 8
    assert [a for a in user if (sa.memory[a:a + 64] != 0x55).any()] == []
    return sa, c, user, refused, out[:k - 8]


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
@pytest.mark.parametrize("how", ["cache.compact", "kmem_cache_compact", "shrink"])
def test_a_constructor_compacting_its_own_cache_moves_nothing_into_its_new_slab(gen, how):
    """A constructor (the third object of a bulk's new slab) frees most of the owner's objects
    and compacts its cache: the moves filled the free objects of the slab being constructed,
    and the constructor loop then constructed over the moved objects (4 objects of the owner
    rewritten). The compaction is now refused while the cache's constructor builds a slab
    (a shrink's compaction pass is left out), and no object of the owner changes."""
    compact = {"cache.compact": lambda sa, c: c.compact(100),
               "kmem_cache_compact": lambda sa, c: sa.kmem_cache_compact(c, 100),
               "shrink": lambda sa, c: sa.kmem_cache_shrink(c) and None}[how]
    sa, c, user, refused, out = _ctor_compacting(gen, compact, mobility=how == "shrink")
    assert len(user) == 4
    assert set(user) | set(out.tolist()) == set(c.live_addresses().tolist())
    assert bool(refused) == (how != "shrink")
    assert all("called by the cache's own constructor" in r for r in refused)
    sa.validate()


@numba.njit
def _jit_compact_all(h, cid, old, new):
    return numslab.jit.kmem_cache_compact(h, cid, 100, old, new)


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_numslab_jit_compaction_from_the_cache_s_constructor_is_refused(gen):
    """The same constructor as above compacting through ``numslab.jit`` (an ``@njit`` function
    it calls): the engine's compaction filled the new slab's objects not constructed yet and the
    constructor loop rewrote them. It is refused (``ConstructorError``) while the facade
    constructs the cache's slabs (``CA_CTOR`` above 1), and allowed again afterwards."""
    old, new = np.zeros(200, np.int64), np.zeros(200, np.int64)

    def compact(sa, c):
        n = _jit_compact_all(sa.handle, c.id, old, new)
        return old[:n], new[:n]
    sa, c, user, refused, _ = _ctor_compacting(gen, compact)
    assert len(refused) == 1 and "called by the cache's own constructor" in refused[0]
    assert "kmem_cache_compact" in refused[0]
    assert int(sa.state.ca[c.id, numslab.engine.layout.CA_CTOR]) == 1
    n = _jit_compact_all(sa.handle, c.id, old, new)     # outside the constructor: moves
    assert n == 4
    sa.validate()
