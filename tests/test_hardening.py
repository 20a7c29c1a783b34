"""CONFIG_SLAB_FREELIST_RANDOM (issue 13): each cache's random sequence, and the order in
which every path that makes a new slab hands its objects out, checked against a plain-Python
reading of ``init_cache_random_seq``/``shuffle_freelist``/``next_slab_obj``."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab import (GFP_KERNEL, SLAB_ARRAY_ALLOC_FULL_COUNT, SLAB_ARRAY_ALLOC_LOCAL,
                     SLAB_ARRAY_ALLOC_NEW, SLAB_ARRAY_ALLOC_PARTIAL, SLAB_CONSISTENCY_CHECKS,
                     SLAB_POISON, SLAB_RED_ZONE, SLAB_STORE_USER)
from numslab.engine import slablists
from numslab.engine.layout import (C_FREELIST, CA_FP_KEY, CA_MIN_OBJECTS, CA_RSEQ_LEN, G_FRNG,
                                   G_RNG, NIL, RSEQ_MAX)

from conftest import new_slab_order

KERNELS = ("7.0", "7.1", "6.18")


# ---- naive oracles ----------------------------------------------------------------------------
def allowed_orders(c: numslab.KmemCache, objects: int) -> list[list[int]]:
    """Every order a new slab of ``objects`` objects may hand its object indices out in: the
    cache's sequence started at each of its entries, entries past the slab's end skipped
    (``next_freelist_entry``'s ``page_limit``)."""
    seq = [int(x) // c.slab_size for x in c.random_seq]
    return [[i for i in seq[k:] + seq[:k] if i < objects] for k in range(len(seq))]


def indices(c: numslab.KmemCache, slab: int, objs) -> list[int]:
    """Object indices of addresses ``objs`` in the slab at head frame ``slab``."""
    base = (slab << 12) + c.red_left_pad
    return [(int(a) - base) // c.slab_size for a in objs]


def _xorshift(x: int) -> int:
    """One step of the engine's xorshift64 (``layout._xorshift``) from state ``x``."""
    x ^= x >> 12
    x ^= (x << 25) & 0x7FFFFFFFFFFFFFFF
    x ^= x >> 27
    return (x & 0x7FFFFFFFFFFFFFFF) or 1


def _swab(x: int) -> int:
    return int.from_bytes((x & (2 ** 64 - 1)).to_bytes(8, "little"), "big")


def free_chain(sa: numslab.SlabAllocator, c: numslab.KmemCache, slab: int,
               head: int | None = None) -> list[int]:
    """The slab's free list (or the chain from ``head``) read from the arena, hardened
    pointers decoded, as addresses."""
    key = int(sa.state.ca[c.id, CA_FP_KEY])
    words = sa.memory.view(np.int64)
    out, obj = [], int(sa.state.sl_freelist[slab]) if head is None else head
    while obj and len(out) <= c.objs_per_slab:
        out.append(obj)
        where = obj + c.offset
        stored = int(words[where >> 3]) & (2 ** 64 - 1)
        obj = stored ^ ((key ^ _swab(where)) if key else 0)
    return out


def fragment(sa: numslab.SlabAllocator) -> None:
    """Leave only isolated single pages free, so that every new slab of an order above 0
    falls back to its cache's minimum order."""
    pages = []
    while (p := sa.alloc_pages(0)):
        pages.append(p)
    for p in pages[::2]:
        sa.free_pages(p, 0)


# ---- the sequence -------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [8, 64, 192, 512, 1000, 2048, 4096])
def test_each_cache_has_a_random_permutation_of_its_slab_times_its_size(kernel, size):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("r", size)
    seq = c.random_seq
    assert seq is not None and len(seq) == c.objs_per_slab <= RSEQ_MAX
    assert (seq % c.slab_size == 0).all()                    # pre-multiplied by s->size
    assert sorted((seq // c.slab_size).tolist()) == list(range(c.objs_per_slab))
    assert (seq != c.slab_size * np.arange(len(seq))).any()  # not the identity
    for k in sa.kmalloc_caches:                              # kmalloc caches have one too
        assert sorted((k.random_seq // k.slab_size).tolist()) == list(range(k.objs_per_slab))
    assert "freelist=hardened+random" in repr(sa)


def test_a_cache_of_one_object_per_slab_has_no_sequence(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="64M", kernel=kernel)
    c = sa.kmem_cache_create("one", 4 << 20)                 # an order-10 slab, one object
    assert c.objs_per_slab == 1 and c.random_seq is None
    assert sa.state.ca[c.id, CA_RSEQ_LEN] == 0
    a = c.alloc()
    assert a % (4 << 20) == 0
    c.free(a)


def test_the_same_seed_lays_slabs_out_alike_and_another_seed_differently(kernel):
    def run(seed):
        sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, seed=seed)
        c = sa.kmem_cache_create("s", 64)
        objs = c.alloc_bulk(300)
        return c.random_seq, objs, [k.random_seq for k in sa.kmalloc_caches]

    s0, o0, k0 = run(0)
    s0b, o0b, k0b = run(0)
    s1, o1, _ = run(1)
    assert (s0 == s0b).all() and (o0 == o0b).all()
    assert all((a == b).all() for a, b in zip(k0, k0b))
    assert (s0 != s1).any() and (o0 != o1).any()


def test_any_integer_seed_works_and_anything_else_is_refused():
    def layout(seed):
        sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", seed=seed)
        c = sa.kmem_cache_create("n", 64)
        return c.random_seq, c.alloc_bulk(100), int(sa.state.ca[c.id, CA_FP_KEY])

    a, b = layout(-1), layout(-1)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all() and a[2] == b[2]
    assert (layout(2 ** 70)[0] != a[0]).any()
    for bad in (1.5, "7", None, True):
        with pytest.raises(numslab.SlabError, match="seed"):
            numslab.SlabAllocator(nr_cpus=1, memory="8M", seed=bad)


def test_switched_off_every_new_slab_goes_out_in_address_order(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, freelist_random=False)
    assert not sa.freelist_random and "freelist=hardened " in repr(sa)
    c = sa.kmem_cache_create("plain", 256)
    assert c.random_seq is None and not sa.state.ca[:, CA_RSEQ_LEN].any()
    frng = int(sa.state.g[G_FRNG])
    objs = c.alloc_bulk(3 * c.objs_per_slab)                 # whole new slabs
    for row in objs.reshape(3, c.objs_per_slab):
        assert (np.diff(row) == 256).all() and row[0] % 4096 == 0
    slab = slablists.new_slab(sa._st, c.id, 0, 0, 0)         # its free list, in the arena
    assert indices(c, slab, free_chain(sa, c, slab)) == list(range(c.objs_per_slab))
    assert sa.state.g[G_FRNG] == frng                        # no draw was made
    slablists.discard_slab(sa._st, c.id, 0, slab)
    sa.validate()


# ---- the order of a new slab ------------------------------------------------------------------
def test_a_new_slabs_free_list_visits_every_object_once_in_sequence_order(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("f", 192)
    orders = allowed_orders(c, c.objs_per_slab)
    starts = set()
    for _ in range(12):
        rng = int(sa.state.g[G_RNG])
        slab = slablists.new_slab(sa._st, c.id, 0, 0, 0)
        got = indices(c, slab, free_chain(sa, c, slab))
        assert sorted(got) == list(range(c.objs_per_slab))  # each object once
        assert got in orders                                 # the sequence from some start
        starts.add(got[0])
        assert sa.state.g[G_RNG] == rng                      # the remote draws are not used
        slablists.discard_slab(sa._st, c.id, 0, slab)
    assert len(starts) > 1                                   # the start is drawn per slab
    sa.validate()


@pytest.mark.parametrize("size", [8, 16, 256])
def test_a_slab_carved_whole_goes_out_as_its_sequence_from_a_drawn_start(size):
    """7.0's ``refill_objects`` hands a new slab it takes whole out in allocation order with
    no free list built: the cache's sequence from a drawn start, wrapping once (kmalloc-8's
    512 objects fill the sequence's room, 16 bytes' 256 are stored twice for a plain copy)."""
    starts = set()
    for seed in range(3):
        sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel="7.0", seed=seed)
        c = sa.kmem_cache_create("whole", size)
        n = c.objs_per_slab
        assert n == 4096 // size
        seq = [int(x) // c.slab_size for x in c.random_seq]
        frng = int(sa.state.g[G_FRNG])
        objs = c.alloc_bulk(4 * n)          # empty sheaves, no partial slab: four new slabs
        assert c.stats["alloc_slab"] == 4
        for k in range(4):
            frng = _xorshift(frng)          # get_random_u32_below(n): the start
            pos = ((frng >> 31) * n) >> 32
            run = objs[k * n:(k + 1) * n]
            assert indices(c, int(run[0]) >> 12, run) == seq[pos:] + seq[:pos]
            starts.add(pos)
        c.free_bulk(objs)
        sa.validate()
    assert len(starts) > 4


def test_single_allocations_follow_the_sequence(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("single", 256, sheaf_capacity=0)
    n = c.objs_per_slab
    if kernel == "6.18":            # no sheaves: the CPU slab's freelist, popped in order
        taken = [c.alloc() for _ in range(n)]
    else:                           # the first alloc refilled the main sheaf in slab order
        cap = c.sheaf_capacity     # and allocations pop its top first
        taken = [c.alloc() for _ in range(cap)][::-1]
    by_slab: dict[int, list[int]] = {}
    for a in taken:
        by_slab.setdefault(a >> 12, []).append(a)
    assert len(by_slab) == (1 if kernel == "6.18" else 2)
    orders = allowed_orders(c, n)
    for slab, members in by_slab.items():         # each slab's objects: its order's start
        got = indices(c, slab, members)
        assert any(o[:len(got)] == got for o in orders)
    assert len(by_slab[taken[0] >> 12]) == n      # the first slab went out whole
    sa.validate()


def test_bulk_of_whole_and_part_slabs_follows_the_sequence(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("b", 512)
    n = c.objs_per_slab
    objs = c.alloc_bulk(3 * n)                              # 7.0: whole slabs, no free list
    for row in objs.reshape(3, n):
        assert indices(c, int(row[0]) >> 12 & ~((1 << c.order) - 1), row) in \
            allowed_orders(c, n)
        assert (row == new_slab_order(c, row[0])).all()
    part = c.alloc_bulk(n // 2)                             # a new slab, half taken
    head = int(part[0]) >> 12 & ~((1 << c.order) - 1)
    cpu_list = int(sa.state.cpu[c.id, 0, C_FREELIST])      # 6.18: the CPU slab's freelist
    rest = free_chain(sa, c, head, cpu_list if kernel == "6.18" else None)
    assert indices(c, head, list(part) + rest) in allowed_orders(c, n)
    sa.validate()


@pytest.mark.parametrize("size", [512, 2048])
def test_fallback_order_slabs_skip_entries_past_their_end(kernel, size):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M", kernel=kernel)
    c = sa.kmem_cache_create("fb", size)
    assert c.order > 0
    small = int(sa.state.ca[c.id, CA_MIN_OBJECTS])          # objects of a fallback slab
    fragment(sa)
    # new_slab: a free list through the small slab's objects only, in sequence order
    slab = slablists.new_slab(sa._st, c.id, 0, 0, 0)
    assert slab != NIL and sa.state.sl_objects[slab] == small
    got = indices(c, slab, free_chain(sa, c, slab))
    assert sorted(got) == list(range(small)) and got in allowed_orders(c, small)
    slablists.discard_slab(sa._st, c.id, 0, slab)
    # whole slabs carved without a free list: 7.0's refill_objects and the NEW mode
    objs = c.alloc_bulk(2 * c.objs_per_slab)
    out = np.full(2 * c.objs_per_slab, -1, np.int64)
    got_new = sa.kmem_cache_alloc_array(c, GFP_KERNEL, len(out), out,
                                        flags=SLAB_ARRAY_ALLOC_NEW)
    assert c.stats["order_fallback"] >= 2
    for run in (objs, out[:got_new]):
        slabs: dict[int, list[int]] = {}
        for a in run.tolist():
            slabs.setdefault(a >> 12, []).append(a)
        whole = 0
        for slab, members in slabs.items():
            assert sa.state.sl_objects[slab] == small
            if len(members) == small:                   # a whole fallback slab
                assert indices(c, slab, members) in allowed_orders(c, small)
                whole += 1
        assert whole >= 2
    assert len(set(objs.tolist()) | set(out[:got_new].tolist())) == len(objs) + got_new
    c.free_bulk(objs)
    sa.kmem_cache_free_array(c, got_new, out[:got_new].copy())
    sa.validate()


@pytest.mark.parametrize("flags", [SLAB_ARRAY_ALLOC_NEW, SLAB_ARRAY_ALLOC_PARTIAL,
                                   SLAB_ARRAY_ALLOC_LOCAL, SLAB_ARRAY_ALLOC_FULL_COUNT, 0,
                                   SLAB_ARRAY_ALLOC_PARTIAL | SLAB_ARRAY_ALLOC_NEW
                                   | SLAB_ARRAY_ALLOC_LOCAL])
def test_array_modes_hand_out_each_object_once(kernel, flags):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel)
    c = sa.kmem_cache_create("a", 128)
    n = c.objs_per_slab
    keep = c.alloc_bulk(4 * n + 5)
    c.free_bulk(keep[::3].copy())                           # partial slabs, random holes
    held = set(keep.tolist()) - set(keep[::3].tolist())
    seen: set[int] = set()
    for nr in (3 * n + 7, n + 1, 2 * n):
        out = np.full(nr, -1, np.int64)
        got = sa.kmem_cache_alloc_array(c, GFP_KERNEL, nr, out, flags=flags)
        objs = out[:got].tolist()
        assert len(set(objs)) == got and not (set(objs) & (held | seen))
        assert all(sa.find(a)["kind"] == "object" for a in objs)
        seen |= set(objs)
        sa.validate()
    assert c.live_objects == len(held) + len(seen)
    sa.kmem_cache_free_array(c, len(seen), np.array(sorted(seen), np.int64))
    sa.validate()


# ---- what must keep working with shuffled lists ------------------------------------------------
def test_debug_caches_keep_their_checks_with_shuffled_free_lists(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("dbg", 64, flags=SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE
                             | SLAB_POISON | SLAB_STORE_USER)
    n = c.objs_per_slab
    objs = [c.alloc() for _ in range(n)]
    head = objs[0] >> 12 & ~((1 << c.order) - 1)
    assert indices(c, head, objs) in allowed_orders(c, n)
    assert objs != sorted(objs)
    assert sa.kmem_cache_validate(c) == 0
    for a in objs[::2]:
        c.free(a)
    assert sa.kmem_cache_validate(c) == 0
    victim = objs[2]                                        # freed: poisoned
    sa.memory[victim + 5] = 0
    assert sa.kmem_cache_validate(c) > 0                    # the poison check finds it
    assert sa.memory[victim + 5] == 0x6b                    # and restores it
    live = objs[1]
    sa.memory[live + c.object_size] = 0                     # right red zone of a live one
    with pytest.raises(numslab.SlabDebugError, match="Redzone"):
        c.free(live)
    sa.slab_reports()
    sa.validate()


def test_save_and_load_keep_the_sequences_and_the_generator(tmp_path, kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, seed=7)
    c = sa.kmem_cache_create("p", 96)
    c.alloc_bulk(50)
    sa.save(tmp_path / "m.npz")
    sb = numslab.SlabAllocator.load(tmp_path / "m.npz")
    cb = sb.find_cache("p")
    assert sb.freelist_random and (cb.random_seq == c.random_seq).all()
    assert sb.state.g[G_FRNG] == sa.state.g[G_FRNG]
    # the loaded machine goes on exactly as the saved one does (new slabs, new starts)
    assert (c.alloc_bulk(400) == cb.alloc_bulk(400)).all()
    off = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, freelist_random=False)
    off.save(tmp_path / "off.npz")
    assert not numslab.SlabAllocator.load(tmp_path / "off.npz").freelist_random


def test_a_slot_reused_after_destroy_gets_a_fresh_sequence(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    a = sa.kmem_cache_create("first", 8)                   # 512 objects: the whole window
    slot = a.id
    sa.kmem_cache_destroy(a)
    b = sa.kmem_cache_create("second", 512)
    assert b.id == slot and len(b.random_seq) == b.objs_per_slab < 512
    assert sorted((b.random_seq // 512).tolist()) == list(range(b.objs_per_slab))
    n = b.objs_per_slab                                     # stored twice (no wrap when
    assert (sa.state.rseq[slot, n:2 * n] == b.random_seq).all()  # a whole slab is carved)
    assert not sa.state.rseq[slot, 2 * n:].any()            # nothing of the old one left
    objs = b.alloc_bulk(5 * b.objs_per_slab)
    assert len(set(objs.tolist())) == len(objs)
    b.free_bulk(objs)
    sa.validate()
