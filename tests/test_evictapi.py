"""Defragmentation by eviction (Lameter's ``get``/``kick``, 2007-2009): the owners of a sparse
slab's objects are asked to free them; one refusal keeps the slab."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from conftest import assert_unchanged, snapshot
from numslab.errors import InvalidSizeError, SlabError, WrongCacheError

KERNELS = ("7.0", "6.18")


class Owner:
    """A cache's user: holds objects, refuses to free the ``busy`` ones, logs the calls."""

    def __init__(self, sa: numslab.SlabAllocator, c: numslab.KmemCache, objs) -> None:
        self.sa, self.c = sa, c
        self.held = set(int(a) for a in objs)
        self.busy: set[int] = set()
        self.gets: list[list[int]] = []

    def get(self, objs: np.ndarray):
        assert set(objs.tolist()) <= self.held
        self.gets.append(sorted(objs.tolist()))
        return len(self.gets)

    def kick(self, objs: np.ndarray, private) -> None:
        assert private == len(self.gets)
        for a in objs.tolist():
            if a not in self.busy:
                self.sa.kmem_cache_free(self.c, a)
                self.held.discard(a)


def _sparse_cache(sa: numslab.SlabAllocator, name: str):
    """A cache with 12 slabs used 1, 2, 3, k/4, k/2, ..., k objects."""
    c = sa.kmem_cache_create(name, 128)
    k = c.objs_per_slab
    objs = c.alloc_bulk(k * 12)
    frames = objs >> 12
    uses = [1, 2, 3, 30 * k // 100, 30 * k // 100 + 1, k // 2, k // 2, k - 3, k - 2, k - 1, k, k]
    keep = np.zeros(len(objs), bool)
    for f, u in zip(np.unique(frames), uses):
        keep[np.flatnonzero(frames == f)[:u]] = True
    c.free_bulk(objs[~keep])
    c.shrink()
    return c, objs[keep]


def _usage(c: numslab.KmemCache) -> dict[int, list[int]]:
    live = c.live_addresses()
    return {int(f): sorted(live[(live >> 12) == f].tolist()) for f in np.unique(live >> 12)}


def test_defrag_evicts_the_slabs_up_to_the_ratio_and_a_refusal_keeps_one(sa, kernel):
    c, objs = _sparse_cache(sa, "obj128")
    k = c.objs_per_slab
    owner = Owner(sa, c, objs)
    before = _usage(c)
    sparse = {f for f, o in before.items() if len(o) <= 30 * k // 100}
    assert len(sparse) == 4
    stubborn = min(sparse)
    owner.busy.add(before[stubborn][0])
    sa.kmem_cache_setup_defrag(c, owner.get, owner.kick)
    slabs = c.slabs
    assert sa.kmem_cache_defrag(c, 30) == 3
    assert sorted(owner.gets) == sorted(before[f] for f in sparse)    # one get per slab
    after = _usage(c)
    assert set(after) == set(before) - sparse | {stubborn}
    assert after[stubborn] == [before[stubborn][0]]
    assert c.slabs == slabs - 3
    kicked = sum(len(before[f]) for f in sparse) - 1
    assert sa.defrag_stats(c) == {"slabs_freed": 3, "objects_kicked": kicked, "refusals": 1}
    assert sorted(owner.held) == c.live_addresses().tolist()


def test_shrink_evicts_every_partial_slab_and_defrag_none_every_cache(sa, kernel):
    c, objs = _sparse_cache(sa, "a")
    d, dobjs = _sparse_cache(sa, "b")
    oc, od = Owner(sa, c, objs), Owner(sa, d, dobjs)
    sa.kmem_cache_setup_defrag(c, oc.get, oc.kick)
    sa.kmem_cache_setup_defrag(d, od.get, od.kick)
    sa.kmem_cache_shrink(c)
    assert len(c.partial_list()) == 0 and len(oc.gets) == 10        # every partial slab
    assert c.slabs == 2 and len(c) == 2 * c.objs_per_slab           # the full ones stay
    assert sa.kmem_cache_defrag(None, 30) == 4 and len(od.gets) == 4
    assert sa.defrag_stats(d)["refusals"] == 0


def test_eviction_refuses_bad_arguments_with_nothing_changed(sa, kernel):
    c, objs = _sparse_cache(sa, "obj128")
    snap = snapshot(sa)
    with pytest.raises(SlabError):
        sa.kmem_cache_setup_defrag(c, None, lambda o, p: None)
    with pytest.raises(SlabError):
        sa.kmem_cache_defrag(c, 30)                 # no callbacks
    owner = Owner(sa, c, objs)
    sa.kmem_cache_setup_defrag(c, owner.get, owner.kick)
    for ratio in (101, -5, 2.5, True):
        with pytest.raises(InvalidSizeError):
            sa.kmem_cache_defrag(c, ratio)
    assert_unchanged(sa, snap)
    assert owner.gets == []


def test_a_destroyed_cache_takes_its_callbacks_and_counters_along(sa, kernel):
    c, objs = _sparse_cache(sa, "old")
    owner = Owner(sa, c, objs)
    sa.kmem_cache_setup_defrag(c, owner.get, owner.kick)
    sa.kmem_cache_setup_mobility(c, None, lambda o, n, p: None)
    assert sa.kmem_cache_defrag(c) > 0
    cid = c.id
    c.free_bulk(np.array(sorted(owner.held), np.int64))
    sa.kmem_cache_destroy(c)
    d, dobjs = _sparse_cache(sa, "new")
    assert d.id == cid                                # the same slot
    assert sa.defrag_stats(d) == {"slabs_freed": 0, "objects_kicked": 0, "refusals": 0}
    with pytest.raises(SlabError):
        sa.kmem_cache_defrag(d)
    gets = len(owner.gets)
    sa.kmem_cache_shrink(d)
    assert len(owner.gets) == gets and d.objects_moved == 0


def test_get_is_given_the_objects_a_slab_holds_when_its_turn_comes(sa, kernel):
    # an owner whose kick frees objects of other slabs too (objects owned in pairs across
    # slabs) and allocates one: each later get is called with the live objects of its slab
    # as they are then (the kernel reads them under the slab's lock), never with an address
    # an earlier kick freed
    c, objs = _sparse_cache(sa, "pairs")
    k = c.objs_per_slab
    owner = Owner(sa, c, objs)
    before = _usage(c)
    sparse = sorted(f for f, o in before.items() if len(o) <= 30 * k // 100)
    assert len(sparse) == 4
    seen = []

    def get(o):
        assert np.isin(o, c.live_addresses()).all() and (o >> 12 == o[0] >> 12).all()
        seen.append(int(o[0]) >> 12)
        return owner.get(o)

    def kick(o, private):
        owner.kick(o, private)
        if len(seen) == 1:                  # the first slab's owner lets the pairs go
            for f in sparse:
                if f != seen[0]:
                    owner.kick(np.array(before[f][:1], np.int64), private)
            a = sa.kmem_cache_alloc(c)
            owner.held.add(a)
            owner.busy.add(a)

    sa.kmem_cache_setup_defrag(c, get, kick)
    sa.kmem_cache_defrag(c, 30)
    assert len(seen) == 4 - sum(len(before[f]) == 1 for f in sparse if f != seen[0])
    assert sorted(owner.held) == c.live_addresses().tolist()
    sa.validate()


@pytest.mark.parametrize("which", ["get", "kick"])
def test_a_callback_that_destroys_its_own_cache_stops_the_eviction_and_says_so(sa, kernel,
                                                                             which):
    c, objs = _sparse_cache(sa, "selfdestruct")
    owner = Owner(sa, c, objs)

    def end(o, private=None):
        c.free_bulk(np.array(sorted(owner.held), np.int64))
        owner.held.clear()
        sa.kmem_cache_destroy(c)
        return 0

    get, kick = (end, owner.kick) if which == "get" else (owner.get, end)
    sa.kmem_cache_setup_defrag(c, get, kick)
    with pytest.raises(WrongCacheError, match=f"the {which} callback of cache 'selfdestruct' "
                                              "destroyed the cache"):
        sa.kmem_cache_defrag(c)
    d = sa.kmem_cache_create("next", 128)           # the slot is usable again
    d.free_bulk(d.alloc_bulk(3 * d.objs_per_slab))
    sa.validate()


@pytest.mark.parametrize("size", [1024, 2048])
def test_eviction_offers_the_slabs_of_an_order_above_0(kernel, size):
    """A slab's objects were matched to it by their own page: those in its later pages
    made an order-1 or -2 slab look held in a prefilled sheaf, so it was never offered."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="32M", kernel=kernel)
    c = sa.kmem_cache_create("big", size)
    assert c.order >= 1
    refs = c.alloc_bulk(20 * c.objs_per_slab)
    keep = np.zeros(len(refs), bool)
    keep[::7] = True
    c.free_bulk(refs[~keep].copy())
    offered = []

    def kick(objs, private):
        for a in objs.tolist():
            c.free(a)
    sa.kmem_cache_setup_defrag(c, lambda objs: offered.append(len(objs)), kick)
    partial = sum(len(c.partial_list(n)) for n in range(sa.nr_nodes))
    assert partial >= 10 and sa.kmem_cache_defrag(c, 100) == len(offered) >= partial
    assert len(c) == 0 and sum(offered) == keep.sum()
    sa.validate()


@pytest.mark.parametrize("again", ["shrink", "defrag"])
def test_a_kick_that_evicts_again_counts_each_freed_slab_once(sa, kernel, again):
    """A ``kick`` that re-enters eviction (``kmem_cache_shrink`` or ``kmem_cache_defrag`` of
    the same cache) made every level count every slab of its list gone, the nested calls'
    too: ``slabs_freed`` 7875 (125 + 124 + ... + 1) for a cache that had 125 slabs."""
    c = sa.kmem_cache_create("again", 256)
    a = c.alloc_bulk(2000)
    c.free_bulk(a[np.arange(len(a)) % 8 != 0])          # 2 objects left in each slab
    slabs = len(np.unique(c.live_addresses() >> 12))

    def kick(objs, private):
        for x in objs.tolist():
            c.free(x)
        if again == "shrink":
            sa.kmem_cache_shrink(c)
        else:
            sa.kmem_cache_defrag(c, 50)
    sa.kmem_cache_setup_defrag(c, lambda objs: None, kick)
    assert sa.kmem_cache_defrag(c, 50) == slabs          # every slab freed by the call
    assert sa.defrag_stats(c) == {"slabs_freed": slabs, "objects_kicked": 2 * slabs,
                                  "refusals": 0}
    assert len(c) == 0 and c.stats["alloc_slab"] >= slabs
    sa.validate()


def test_a_slab_a_nested_eviction_kept_and_the_outer_freed_counts_as_freed(sa, kernel):
    """The first kick evicts again while its owner still refuses (every slab kept), then
    frees: the outer eviction frees every slab. The first fix of the nested count let the
    level that counted a slab first decide: 0 slabs freed and every slab a refusal."""
    c = sa.kmem_cache_create("nested", 64)
    a = c.alloc_bulk(64 * 10)
    owned = set(a[::8].tolist())                        # one object in 8 kept
    c.free_bulk(a[np.arange(len(a)) % 8 != 0])
    sa.kmem_cache_shrink(c)
    busy, nested = [False], []

    def kick(objs, private):
        if busy[0]:
            return                                      # the owner cannot free now
        if not nested:
            busy[0] = True
            nested.append(sa.kmem_cache_defrag(c, 100))
            busy[0] = False
        for x in objs.tolist():
            if x in owned:
                owned.discard(x)
                c.free(x)
    sa.kmem_cache_setup_defrag(c, lambda objs: None, kick)
    before = c.slabs
    assert sa.kmem_cache_defrag(c, 100) == before and nested == [0] and c.slabs == 0
    assert sa.defrag_stats(c) == {"slabs_freed": before, "objects_kicked": 64 * 10 // 8,
                                  "refusals": 0}
    sa.validate()


def test_a_cache_made_in_an_evicted_cache_s_slot_gets_none_of_its_counts(sa, kernel):
    """A kick that evicts cache X, destroys it and makes X2 in its slot: the outer eviction
    credited X's freed slabs to X2 (``slabs_freed`` 17, X2 had never allocated a slab)."""
    def sparse(name):
        c = sa.kmem_cache_create(name, 256)
        objs = c.alloc_bulk(c.objs_per_slab * 20)
        c.free_bulk(objs[np.arange(len(objs)) % c.objs_per_slab != 0])
        return c
    x, y = sparse("X"), sparse("Y")
    sa.kmem_cache_setup_defrag(x, lambda objs: None, lambda objs, p: x.free_bulk(objs))
    made = []

    def kick_y(objs, private):
        if not made:
            sa.kmem_cache_defrag(x, 100)
            sa.kmem_cache_destroy(x)
            made.append(sa.kmem_cache_create("X2", 256))
        y.free_bulk(objs)
    sa.kmem_cache_setup_defrag(y, lambda objs: None, kick_y)
    sa.kmem_cache_defrag(y, 100)
    assert sa.defrag_stats(made[0]) == {"slabs_freed": 0, "objects_kicked": 0, "refusals": 0}
    assert sa.defrag_stats(y)["slabs_freed"] == 20
    sa.validate()


def test_a_kick_that_raises_midway_counts_what_it_tried_and_frees_the_emptied_slabs(sa, kernel):
    """The third kick raises after two slabs were emptied: the error reaches the caller, and
    the two emptied slabs are freed and counted (they stayed on the partial list, counted
    nowhere), the slab whose kick raised counted as kept."""
    c = sa.kmem_cache_create("raising", 256)
    a = c.alloc_bulk(c.objs_per_slab * 6)
    c.free_bulk(a[np.arange(len(a)) % 8 != 0])          # a few objects left in each slab
    sa.kmem_cache_shrink(c)
    slabs = c.slabs
    calls = []

    def kick(objs, private):
        calls.append(len(objs))
        if len(calls) == 3:
            raise RuntimeError("the owner failed")
        for x in objs.tolist():
            c.free(x)
    sa.kmem_cache_setup_defrag(c, lambda objs: None, kick)
    with pytest.raises(RuntimeError, match="the owner failed"):
        sa.kmem_cache_defrag(c, 100)
    assert c.slabs == slabs - 2                         # the emptied ones went back
    assert sa.defrag_stats(c) == {"slabs_freed": 2, "objects_kicked": calls[0] + calls[1],
                                  "refusals": 1}
    sa.validate()


def test_a_kick_that_compacts_counts_the_moved_objects_as_moved_not_kicked(sa, kernel):
    """An owner's ``kick`` may free some objects and make the cache compact the rest
    (``KmemCache.compact``): the moved objects are live elsewhere, not kicked (they were all
    counted as kicked: ``objects_kicked`` was every object of the slabs tried)."""
    c, objs = _sparse_cache(sa, "moving")
    held = set(objs.tolist())
    frees = []

    def kick(objs, private):
        first = int(objs[0])                    # the owner frees one object a slab,
        c.free(first)
        held.discard(first)
        frees.append(first)
        old, new = c.compact(100)               # and lets the cache move the others
        for o, n in zip(old.tolist(), new.tolist()):
            held.discard(o)
            held.add(n)
    sa.kmem_cache_setup_defrag(c, lambda objs: None, kick)
    sa.kmem_cache_defrag(c, 30)
    assert c.objects_moved > 0
    assert sa.defrag_stats(c)["objects_kicked"] == len(frees)
    assert sorted(held) == c.live_addresses().tolist()
    sa.validate()



@pytest.mark.parametrize("remake", [False, True])
def test_defrag_of_every_cache_skips_one_a_kick_destroyed(sa, kernel, remake):
    """``kmem_cache_defrag(None)``: the kick of the first cache destroys the second, which has
    callbacks too. The second is skipped (its turn raised KeyError from the table of callbacks),
    and so is a cache the kick made in its slot with callbacks of its own (it was evicted as if
    listed)."""
    def sparse(name):
        c = sa.kmem_cache_create(name, 256)
        objs = c.alloc_bulk(c.objs_per_slab * 8)
        keep = np.arange(len(objs)) % c.objs_per_slab == 0
        c.free_bulk(objs[~keep])
        return c, objs[keep]
    (x, _), (y, ys) = sparse("X"), sparse("Y")
    yid, made, evicted = y.id, [], []

    def kick_x(objs, private):
        x.free_bulk(objs)
        if not made:
            y.free_bulk(ys)
            sa.kmem_cache_destroy(y)
            made.append(None)
            if remake:
                z, _ = sparse("Z")
                sa.kmem_cache_setup_defrag(z, evicted.append, lambda o, p: None)
                made[0] = z
    sa.kmem_cache_setup_defrag(x, lambda objs: None, kick_x)
    sa.kmem_cache_setup_defrag(y, evicted.append, lambda o, p: None)
    assert sa.kmem_cache_defrag(None, 100) == 8
    assert not evicted
    assert sa.defrag_stats(x)["slabs_freed"] == 8
    if remake:
        assert made[0].id == yid and made[0].slabs == 8     # Z took Y's slot, untouched
    sa.validate()


def test_an_eviction_from_the_cache_s_constructor_offers_none_of_its_new_slab(sa, kernel):
    """A constructor (the third object of a bulk's new slab) frees most of the owner's objects
    and evicts its cache: ``get`` was offered the new slab's objects, those the bulk was
    allocating (48, held by no owner yet; the kernel constructs a slab before listing it). They
    are left out; the owner's sparse slab is still evicted."""
    calls, user, offered = [-10 ** 9], set(), []

    def ctor(mem, addr):
        calls[0] += 1
        if calls[0] == 3:
            for a in sorted(user)[:-4]:
                sa.kmem_cache_free(c, a)
                user.discard(a)
            sa.kmem_cache_defrag(c, 100)

    def kick(objs, private):
        for a in objs.tolist():
            sa.kmem_cache_free(c, a)
            user.discard(a)
    c = sa.kmem_cache_create("k", 64, ctor=ctor)
    sa.kmem_cache_setup_defrag(c, lambda objs: offered.append(objs.tolist()), kick)
    k = c.objs_per_slab
    user.update(c.alloc_bulk(2 * k).tolist())
    calls[0] = 0
    out = np.zeros(k, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, k - 8, out) == k - 8
    assert offered and all(len(o) == 4 for o in offered)        # the owner's 4, kicked
    assert not user and set(c.live_addresses().tolist()) == set(out[:k - 8].tolist())
    sa.validate()
