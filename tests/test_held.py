"""The held bitmap (field ``held``): set exactly on the objects of a cache that keeps it that
are off their slab's free list (a user's, the allocator's own, cached in a sheaf or the
pending record), clear everywhere else, and ``validate`` (``check_invariants``) checks it
(ARCHITECTURE.md, invariant 13)."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab import GFP_KERNEL
from numslab.engine import layout as L

HELD_WRONG = "a held bit is wrong"


def _bit(sa, a):
    """The held bit of the object at ``a``."""
    return (int(sa.state.held[a >> 9]) >> ((a >> 3) & 63)) & 1


def _flip(sa, a):
    """Flip the held bit of the granule at ``a`` (a stray write into the state)."""
    held = sa.state.held.view(np.uint64)
    held[a >> 9] ^= np.uint64(1) << np.uint64((a >> 3) & 63)


def _busy(gen, debug=None):
    """A 2-CPU machine with a 96-byte cache of 8-object sheaves: objects a user holds, objects
    in sheaves and a barn, objects waiting for kfree_rcu, and free objects on slabs."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=gen, slab_debug=debug)
    c = sa.kmem_cache_create("r", 96, sheaf_capacity=8)
    objs = [sa.kmem_cache_alloc(c, cpu=k % 2) for k in range(120)]
    for k, a in enumerate(objs[:40]):
        sa.kfree_rcu(a, cpu=k % 2)
    for k, a in enumerate(objs[40:100]):
        sa.kmem_cache_free(c, a, cpu=k % 2)
    return sa, c, objs[100:]


@pytest.mark.parametrize("gen", numslab.KERNELS)
def test_a_destroyed_cache_leaves_no_held_bit(gen):
    """``kmem_cache_destroy`` marked the cache dead (``CA_ACTIVE`` 0) before it flushed its
    sheaves and barns, so every free to the slabs in the release read the cache as one that
    keeps no held bitmap and left the bits of the objects it gave back set: its slabs went back
    to the page allocator with held bits on (a new slab of those pages had them zeroed, which
    hid it). Now the release keeps the held bit of the mask while it frees (bit 0 off: dead to
    ``numslab.jit``) and ``validate`` finds no held bit outside a slab."""
    sa, c, kept = _busy(gen)
    sa.validate()
    for a in kept:
        c.free(a)
    sa.rcu_barrier()
    sa.validate()
    st = sa.state
    heads = np.flatnonzero(((st.pg_flags & L.PG_SLAB) != 0) & (st.sl_cache == c.id))
    frames = np.concatenate([h + np.arange(1 << int(st.pg_order[h])) for h in heads])
    assert st.held.reshape(-1, 8)[frames].any()
    sa.kmem_cache_destroy(c)
    sa.validate()
    assert not st.held.reshape(-1, 8)[frames].any(), "held bits left on the cache's pages"


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_validate_checks_the_held_bitmap(gen):
    """Each way a held bit can be wrong is found: one set on a free object of a slab's free
    list, one missing on an object a user holds, on an object a sheaf holds, one set between
    two objects' starts, on a free page, and on a slab_debug cache's slab (which keeps none)."""
    sa, c, kept = _busy(gen)
    st = sa.state
    main = int(st.cpu[c.id, 0, L.C_MAIN])
    cached = int(sa._mem[(main >> 3) + L.SH_OBJECTS])
    free = ([int(st.sl_freelist[s]) for s in np.flatnonzero(st.sl_freelist).tolist()
                 if st.sl_cache[s] == c.id] + [int(f) for f in st.cpu[c.id, :, L.C_FREELIST]
                                               if f])[0]
    page = int(np.flatnonzero(st.pg_flags & L.PG_BUDDY)[-1])
    assert _bit(sa, kept[0]) and _bit(sa, cached) and not _bit(sa, free)
    for a in (free, kept[0], cached, kept[0] + 8, page << 12):
        sa.validate()
        _flip(sa, a)
        with pytest.raises(numslab.SlabCorruptionError, match=HELD_WRONG):
            sa.validate()
        _flip(sa, a)
    sa.validate()
    d = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=gen, slab_debug="F")
    k = d.kmem_cache_create("d", 64)
    x = k.alloc()
    assert d.state.ca[k.id, L.CA_ACTIVE] == 1 and not d.state.held.any()
    _flip(d, x)
    with pytest.raises(numslab.SlabCorruptionError, match=HELD_WRONG):
        d.validate()


@pytest.mark.parametrize("gen", numslab.KERNELS)
def test_held_marks_exactly_the_objects_off_the_free_lists(gen):
    """After a mixed run (single and bulk, sheaves and slabs, kfree_rcu, a shrink) the held
    bits of the cache are its objects that are live or in a sheaf, as ``find`` says."""
    sa, c, kept = _busy(gen)
    sa.kmem_cache_shrink(c)
    more = c.alloc_bulk(50)
    c.free_bulk(more[::2].copy())       # (into the sheaves)
    sa.validate()
    st = sa.state
    cached = 0
    for s in np.flatnonzero(((st.pg_flags & L.PG_SLAB) != 0) & (st.sl_cache == c.id)).tolist():
        for i in range(int(st.sl_objects[s])):
            a = (s << 12) + i * c.slab_size
            kind = sa.find(a)["kind"]
            inside = kind == "free object" and _in_sheaf(sa, a)
            cached += inside
            assert sa.find(a).get("cached") == (inside if kind == "free object" else None)
            assert _bit(sa, a) == (kind != "free object" or inside), (a, kind)
    assert cached


def _in_sheaf(sa, a):
    """Whether a sheaf (a CPU's, a barn's or an RCU one) names the object at ``a``.

    A sheaf's words are in the shadow half, ``len(sa.memory)`` past its object's address."""
    w = [(h + len(sa.memory)) >> 3 for h in sa.sheaf_addresses().tolist()]
    return any(a in sa._mem[k + L.SH_OBJECTS:k + L.SH_OBJECTS + sa._mem[k + L.SH_SIZE]]
               for k in w)


def test_a_prefilled_sheaf_returned_to_a_destroyed_cache_leaves_no_held_bit():
    """A prefilled sheaf's objects are held; its return and the cache's destroy free them."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel="7.0")
    c = sa.kmem_cache_create("s", 64, sheaf_capacity=8)
    s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 20)
    sa.validate()
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s)
    sa.kmem_cache_destroy(c)
    sa.validate()


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_a_fallback_order_slab_emptied_by_a_bulk_free_clears_its_own_held_words(gen):
    """A bulk free that empties a slab and discards it clears the slab's held words: it cleared
    as many words as a slab of the cache's order has, so for a slab of the fallback order (one
    page where the cache's order is 3) it also cleared the next pages', slabs whose objects a
    sheaf holds: their held bits were lost (a free pointer naming one would pass)."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M", kernel=gen)
    c = sa.kmem_cache_create("fb", 2048)
    assert c.order > 0
    pages = []
    while (p := sa.alloc_pages(0)):         # only single pages left free: every new slab
        pages.append(p)                     # falls back to order 0
    for p in pages[::2]:
        sa.free_pages(p, 0)
    objs = c.alloc_bulk(2 * c.objs_per_slab)
    assert (sa.state.sl_objects[objs >> 12] < c.objs_per_slab).all()
    sa.validate()
    c.free_bulk(objs)
    sa.validate()
    sa.kmem_cache_shrink(c)
    sa.validate()


@pytest.mark.parametrize("gen", ["7.0", "7.3"])
def test_a_lean_refill_of_one_object_marks_it_held(gen):
    """The lab's lean sheaves (``leansheaves.refill_main_lean``) fill an empty main sheaf with
    one object of ``___slab_alloc`` when no partial slab is there: that object went into the
    sheaf without its held bit (every other path into a sheaf marks it), so a free pointer
    naming it would pass; ``validate`` found it (the lab's leansheaves replays failed)."""
    from numslab.engine import leansheaves
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=gen)
    c = sa.kmem_cache_create("lean", 128)
    assert leansheaves.refill_main_lean(sa._st, c.id, 0, GFP_KERNEL) == 1
    main = int(sa.state.cpu[c.id, 0, L.C_MAIN])
    x = int(sa._mem[(main >> 3) + L.SH_OBJECTS])
    assert _bit(sa, x) and sa.find(x)["kind"] == "free object"
    sa.validate()
    assert c.alloc() == x
    sa.validate()


@pytest.mark.parametrize("gen", ["6.18", "7.0"])
def test_only_a_cache_with_sheaves_keeps_held_bits(gen):
    """What the held bits guard is a sheaf's entries, so a cache without sheaves (6.18's
    default, 7.x's slab_debug caches) keeps none and its slab layer does not pay for them (6.18's
    default cache's bulk rounds were 9-25% slower with them); its takes keep their per-object
    tests. Under 7.x every other cache has sheaves and keeps them."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M", kernel=gen)
    plain = sa.kmem_cache_create("plain", 96)
    sheafy = sa.kmem_cache_create("sheafy", 96, sheaf_capacity=8)
    a, b = np.zeros(20, np.int64), np.zeros(20, np.int64)
    assert sa.kmem_cache_alloc_bulk(plain, GFP_KERNEL, 20, a) == 20
    assert sa.kmem_cache_alloc_bulk(sheafy, GFP_KERNEL, 20, b) == 20
    mask = {c.id: int(sa.state.ca[c.id, L.CA_ACTIVE]) for c in (plain, sheafy)}
    assert mask == {plain.id: 1 if gen == "6.18" else 7, sheafy.id: 7}
    assert [_bit(sa, int(x)) for x in a] == [0 if gen == "6.18" else 1] * 20
    assert [_bit(sa, int(x)) for x in b] == [1] * 20
    sa.validate()
    sa.kmem_cache_free_bulk(plain, 20, a)
    sa.kmem_cache_free_bulk(sheafy, 20, b)
    sa.validate()
