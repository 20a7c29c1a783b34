"""Node partial lists and ``kmem_cache_shrink``'s re-ordering, against a naive oracle."""
from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import numslab
from numslab.engine import layout as L
from numslab.engine.layout import P_COUNT
from numslab.flags import GFP_KERNEL

from conftest import free_total


def shrink_oracle(partial: np.ndarray) -> list[int]:
    """The kernel's ``__kmem_cache_do_shrink`` on a list of (addr, inuse, objects): drop
    empty slabs; slabs with 1..32 free objects go first, fewest free first, each bucket in
    reverse list order (list_move inserts at the head); the rest keep their order."""
    buckets: list[list[int]] = [[] for _ in range(32)]
    rest = []
    for addr, inuse, objects in partial.tolist():
        free = objects - inuse
        if free == objects:
            continue
        if free <= 32:
            buckets[free - 1].insert(0, addr)
        else:
            rest.append(addr)
    return [a for b in buckets for a in b] + rest


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 127), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_shrink_orders_partial_list_like_the_kernel(frees, rnd):
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("s32", 32)                  # 128 objects per slab
    per = c.objs_per_slab
    slabs = [[sa.kmem_cache_alloc(c) for _ in range(per)] for _ in range(len(frees) + 1)]
    for s in slabs[:-1]:
        sa.kmem_cache_free(c, s[0])                      # every slab partial...
    sa.kmem_cache_shrink(c)                              # ...and on the node list
    for s, n in zip(slabs[:-1], frees):                  # now free n more of each
        for a in rnd.sample(s[1:], n):
            sa.kmem_cache_free(c, a, cpu=1)
    before = c.partial_list()
    expected = shrink_oracle(before)
    assert sa.kmem_cache_shrink(c) == 1                 # slabs remain: the kernel's 1
    after = c.partial_list()
    assert after[:, 0].tolist() == expected
    assert c.shrink_freed == int((before[:, 1] == 0).sum())
    sa.validate()


def test_shrink_frees_all_empty_slabs_regardless_of_min_partial():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("e", 512)
    objs = [sa.kmem_cache_alloc(c) for _ in range(c.objs_per_slab * 3)]
    for a in objs:
        sa.kmem_cache_free(c, a)
    assert c.slabs == 3                                  # parked on the CPU partial list
    assert sa.kmem_cache_shrink(c) == 0                  # no slab left: the kernel's 0
    assert c.shrink_freed >= 1
    assert c.slabs == 0 and c.partial == 0 and c.cpu_slabs == 0
    assert free_total(sa) == sa.nr_pages - 1 - sum(
        k.slabs << k.order for k in sa.caches)
    sa.validate()


def test_shrink_gives_pages_to_the_calling_cpus_page_lists():
    """``kmem_cache_shrink`` runs on the caller's CPU: the empty slabs it frees from the node
    list go to that CPU's pcp lists; a CPU's own flush uses its own; a third CPU that took
    no part gets nothing."""
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=3, memory="64M")  # pcp high far above what is freed
    c = sa.kmem_cache_create("home", 512)
    objs = [sa.kmem_cache_alloc(c, cpu=1) for _ in range(c.objs_per_slab * 12)]
    for a in objs:
        sa.kmem_cache_free(c, a, cpu=1)
    assert c.partial >= 1                               # empty slabs kept on the node list

    def pcp(cpu):
        return int(sa.state.pcp[cpu, 0, P_COUNT])
    before = [pcp(cpu) for cpu in range(3)]
    slabs, on_node = c.slabs, c.partial
    sa.set_cpu(0)
    assert sa.kmem_cache_shrink(c) == 0
    assert c.slabs == 0 and c.shrink_freed == slabs     # the flushes' and the lists' alike
    gained = [pcp(cpu) - before[cpu] for cpu in range(3)]
    assert sum(gained) == slabs << c.order              # every freed page on a pcp list
    assert gained[0] >= on_node << c.order >= 1         # the node lists': the caller's
    assert gained[1] >= 1 << c.order                    # CPU 1's partial list: its own flush
    assert gained[2] == 0                               # not the last CPU's
    sa.validate()


def test_partial_list_reports_fill():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("p", 256)
    objs = [sa.kmem_cache_alloc(c) for _ in range(40)]
    sa.kmem_cache_free(c, objs[0])
    sa.kmem_cache_shrink(c)
    pl = c.partial_list()
    assert pl.shape[1] == 3 and len(pl) == c.partial
    assert (pl[:, 1] < pl[:, 2]).all()
    assert int(pl[:, 1].sum()) == c.objects_partial


# ---- guarded free pointers (issue 13): a stray write into freed memory ---------------------
REC = np.dtype([("left", np.int64), ("right", np.int64), ("key", np.int64), ("val", np.int64)])


def fragmented(kernel="7.0", n=600, every=128):
    """A typed cache of 32-byte records whose slabs keep one live record each, with every
    other object free in its slab's free list (the sheaves flushed by a shrink)."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="16M", kernel=kernel)
    c = sa.kmem_cache_create("rec", 0, dtype=REC)
    objs = c.alloc_bulk(n)
    keep = objs[::every].copy()
    free = np.setdiff1d(objs, keep)
    c.free_bulk(free.copy())
    sa.kmem_cache_shrink(c)
    assert c.offset == 16                       # the free pointer is in the "key" field
    return sa, c, keep, free


def valid(sa, c, a):
    return 0 < a < sa.nr_pages * 4096 and sa.state.sl_cache[a >> 12] == c.id and \
        (a & 4095) % c.slab_size == 0


@pytest.mark.parametrize("bad", [123456789, -1, 8, 0x7FFF_FFFF_FFFF_FFF8, "live", "misaligned",
                                 "other slab"])
@pytest.mark.parametrize("gen", ["7.0", "7.3", "6.18"])
def test_a_corrupted_free_pointer_is_never_followed(bad, gen):
    sa, c, keep, free = fragmented(gen)
    victim = int(free[5])
    slab = victim >> 12 << 12
    value = {"live": int(keep[0]) if keep[0] >> 12 == victim >> 12 else
             int(next(k for k in keep if k >> 12 == victim >> 12)),
             "misaligned": victim + 8,
             "other slab": int(next(f for f in free if f >> 12 != victim >> 12))}.get(bad, bad)
    c.view[victim]["key"] = value
    got, errors = [], []
    for _ in range(len(free) + 50):
        try:
            got.append(c.alloc())
        except numslab.SlabCorruptionError as e:
            errors.append(str(e))
    assert len(errors) >= 1                 # (6.18 may meet it again in another list)
    assert "rec: Freepointer corrupt" in errors[0] and f"{slab:#x}" in errors[0] \
        and f"{value & (2 ** 64 - 1) if value < 0 else value:#x}" in errors[0] or value < 0
    assert slab in sa.isolated_slabs().tolist()
    assert all(valid(sa, c, a) for a in got) and len(set(got)) == len(got)
    assert not set(got) & set(keep.tolist())              # no live record handed out twice
    assert all(a >> 12 << 12 != slab for a in got[-40:])  # the isolated slab is not used
    sa.validate()
    for a in got + keep.tolist():
        c.free(a)                                          # an isolated slab's frees leak
    assert c.live_objects == 0
    sa.validate()


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_a_cache_with_an_isolated_slab_is_destroyed_whole(gen, force):
    # its isolated slab never empties: destroy raised SlabCorruptionError ("slabs left after
    # shrinking an empty cache") with the cache half gone, its slab counted in the slot, and
    # the next cache made in that slot failed validate. Its free objects are lost: with no
    # live object left the destroy is refused as the kernel's shutdown refuses (the slab
    # counts them in use), naming the slab, until force
    sa, c, keep, free = fragmented(gen)
    c.view[int(free[5])]["key"] = 123456789
    with pytest.raises(numslab.SlabCorruptionError):
        for _ in range(len(free) + 50):
            c.alloc()
    slab = int(sa.isolated_slabs()[0])
    pages = free_total(sa)
    if not force:
        for a in c.live_addresses():
            c.free(int(a))
        with pytest.raises(numslab.LostObjectsError, match=f"in the slab at {slab:#x}"):
            sa.kmem_cache_destroy(c)
        assert c in sa.caches and len(sa.isolated_slabs()) == 1
    sa.kmem_cache_destroy(c, force=True)
    assert len(sa.isolated_slabs()) == 0 and sa.find(slab)["kind"] == "free page"
    assert free_total(sa) > pages
    d = sa.kmem_cache_create("next", 64)
    assert (d.slabs, d.objects) == (0, 0)
    d.alloc_bulk(200)
    sa.validate()


def test_a_bulk_alloc_that_meets_corruption_takes_nothing_and_the_next_one_works():
    sa, c, keep, free = fragmented()
    c.view[int(free[3])]["key"] = 4096 * 3 + 1
    out = np.zeros(len(free), np.int64)
    live = c.live_objects
    with pytest.raises(numslab.SlabCorruptionError, match="Freepointer corrupt"):
        sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, len(free), out)
    assert c.live_objects == live
    assert sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, len(free), out) == len(free)
    assert all(valid(sa, c, int(a)) for a in out) and len(set(out.tolist())) == len(out)
    sa.validate()


@numba.njit
def _alloc_many(h, cid, n, out):
    for i in range(n):
        out[i] = numslab.jit.kmem_cache_alloc(h, cid)


def test_numslab_jit_raises_on_a_corrupted_free_pointer():
    sa, c, keep, free = fragmented()
    c.view[int(free[7])]["key"] = 0x4141414141414141
    out = np.zeros(len(free), np.int64)
    slab = int(free[7]) >> 12 << 12
    with pytest.raises(numslab.SlabCorruptionError, match="Freepointer corrupt") as e:
        _alloc_many(sa.handle, c.id, len(free), out)
    # the slab and the pointer named, as from Python (the text named neither)
    assert str(e.value).endswith(f"(free pointer 0x4141414141414141, slab {slab:#x}, "
                                 f"cache id {c.id} 'rec')"), str(e.value)
    assert e.value.detail == (slab, c.id, -1) and e.value.value == 0x4141414141414141
    assert sa.isolated_slabs().tolist() == [slab]
    _alloc_many(sa.handle, c.id, 100, out)                 # it goes on serving
    assert all(valid(sa, c, int(a)) for a in out[:100])
    sa.validate()


@settings(max_examples=25, deadline=None)
@given(writes=st.lists(st.tuples(st.integers(0, 499), st.integers(-2 ** 63, 2 ** 63 - 1)),
                       min_size=1, max_size=12), gen=st.sampled_from(["7.0", "7.3", "6.18"]))
def test_random_stray_writes_never_hand_out_a_bad_address(writes, gen):
    sa, c, keep, free = fragmented(gen)
    for i, value in writes:
        c.view[int(free[i % len(free)])]["key"] = value
    got = []
    for _ in range(len(free) + 100):
        try:
            got.append(c.alloc())
        except numslab.SlabCorruptionError:
            pass
    assert all(valid(sa, c, a) for a in got) and len(set(got)) == len(got)
    assert not set(got) & set(keep.tolist())
    sa.validate()


@pytest.mark.parametrize("loop", ["self", "back"])
@pytest.mark.parametrize("gen", ["7.0", "7.3", "6.18"])
def test_a_free_list_looped_by_a_stray_write_hands_nothing_out_twice(loop, gen):
    sa, c, keep, free = fragmented(gen)
    slab_free_objs = [int(f) for f in free if f >> 12 == free[0] >> 12]
    a, b = slab_free_objs[2], slab_free_objs[0]
    c.view[a]["key"] = a if loop == "self" else b          # a -> a, or a -> an earlier one
    got = []
    for _ in range(len(free) + 50):
        try:
            got.append(c.alloc())
        except numslab.SlabCorruptionError:
            pass
    assert len(set(got)) == len(got) and all(valid(sa, c, x) for x in got)
    out = np.zeros(64, np.int64)
    sa2, c2, keep2, free2 = fragmented(gen)
    objs2 = [int(f) for f in free2 if f >> 12 == free2[0] >> 12]
    c2.view[objs2[3]]["key"] = objs2[1]
    for _ in range(12):
        try:
            n = sa2.kmem_cache_alloc_bulk(c2, numslab.GFP_KERNEL, 64, out)
            assert n == 64 and len(set(out.tolist())) == 64
        except numslab.SlabCorruptionError:
            pass
    sa.validate()
    sa2.validate()


def _swab(x: int) -> int:
    return int.from_bytes((x & (2 ** 64 - 1)).to_bytes(8, "little"), "big")


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_free_pointers_are_stored_hardened_by_default(gen):
    # CONFIG_SLAB_FREELIST_HARDENED: ptr ^ s->random ^ swab(address of the pointer)
    from numslab.engine.layout import CA_FP_KEY
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel=gen)
    plain = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel=gen, freelist_hardened=False)
    assert sa.freelist_hardened and not plain.freelist_hardened
    for a in (sa, plain):
        c = a.kmem_cache_create("h", 64)
        objs = c.alloc_bulk(200)
        keep = objs[::64]                             # every slab keeps one: none is freed
        c.free_bulk(np.setdiff1d(objs, keep))
        a.kmem_cache_shrink(c)                        # the free lists are in the objects now
        key = int(a.state.ca[c.id, CA_FP_KEY])
        assert (key != 0) == a.freelist_hardened
        words = a.memory.view(np.int64)
        slab = int(keep[0]) >> 12
        head = int(a.state.sl_freelist[slab])
        where = head + c.offset
        stored = int(words[where >> 3]) & (2 ** 64 - 1)
        nxt = stored ^ ((key ^ _swab(where)) if key else 0)
        assert nxt == 0 or (nxt >> 12 == slab and (nxt - (slab << 12)) % c.slab_size == 0)
        if key:
            assert stored != nxt                      # not the plain pointer
        a.validate()
    k2 = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel=gen)
    k2.kmem_cache_create("h", 64)               # the same seed and order: the same key
    sa.kmem_cache_create("h2", 64)
    c1, c2 = sa.find_cache("h"), k2.find_cache("h")
    assert sa.state.ca[c1.id, CA_FP_KEY] == k2.state.ca[c2.id, CA_FP_KEY]   # seeded
    assert len({int(k) for k in sa.state.ca[:, CA_FP_KEY] if k}) == len(sa.caches)


@pytest.mark.parametrize("generation", ["7.0", "6.18"])
def test_shrink_freed_counts_the_slabs_the_flushes_free(generation):
    """Past ``min_partial`` partial slabs, a slab that the sheaves' (or the CPU's) flush
    empties goes straight back to the pages; ``shrink_freed`` counted only those the node
    lists' shrink freed (21 slabs gone, 4 counted)."""
    sa = numslab.SlabAllocator(kernel=generation, nr_cpus=2, memory="16M")
    c = sa.kmem_cache_create("rec", 96)
    objs = [sa.kmem_cache_alloc(c) for _ in range(1000)]
    for a in objs:
        sa.kmem_cache_free(c, a)
    slabs = c.slabs
    assert sa.kmem_cache_shrink(c) == 0 and c.slabs == 0 and c.shrink_freed == slabs > 10
    sa.validate()


@pytest.mark.parametrize("generation", ["7.0", "6.18"])
def test_kmem_cache_shrink_returns_whether_slabs_remain(generation):
    """``kmem_cache_shrink`` returns ``__kmem_cache_shrink``'s value: 1 if a node still has
    slabs of the cache (``node_nr_slabs``), else 0; the count of slabs freed is
    ``cache.shrink_freed``."""
    sa = numslab.SlabAllocator(kernel=generation, nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("ret", 512)
    assert c.shrink_freed == 0
    assert sa.kmem_cache_shrink(c) == 0                 # no slab at all
    objs = [sa.kmem_cache_alloc(c) for _ in range(c.objs_per_slab * 3)]
    assert sa.kmem_cache_shrink(c) == 1 and c.shrink_freed == 0     # all full: none freed
    for a in objs[1:]:
        sa.kmem_cache_free(c, a)
    slabs = c.slabs
    assert sa.kmem_cache_shrink(c) == 1                 # objs[0]'s slab remains
    # every slab freed counts, those the flushes free too (before: only the lists')
    assert c.slabs == 1 and c.shrink_freed == slabs - 1 >= 2
    sa.kmem_cache_free(c, objs[0])
    assert c.shrink() == 0 and c.slabs == 0 and c.shrink_freed == 1
    assert c.shrink() == 0 and c.shrink_freed == 0
    sa.validate()


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_a_constructor_cache_s_slabs_made_and_discarded_past_the_page_count_in_one_call(gen):
    # Under memory pressure every single allocation of a FULL_COUNT array tries to refill a
    # sheaf: it makes one-page slabs, runs out, gives them back (discarded: the node keeps
    # min_partial partial slabs) and takes one object. Each new slab of a cache with a
    # constructor went on `pending` and stayed there after its discard, so one call that
    # made more slabs than the machine has pages wrote past `pending` into the live bitmap
    # (validate: "inuse + free objects != objects" in a kmalloc cache; in the OOM fuzz a
    # "Freepointer corrupt" SlabCorruptionError). A discarded slab now leaves `pending`.
    sa = numslab.SlabAllocator(memory="4M", nr_cpus=1, kernel=gen)

    def ctor(mem, addr):
        mem[addr] = 0x5a

    c = sa.kmem_cache_create("ctor", 3000, ctor=ctor, sheaf_capacity=60)
    held = [sa.kmem_cache_alloc(c) for _ in range(80)]
    for a in held[::10]:
        sa.kmem_cache_free(c, a)
    sa.kmem_cache_shrink(c)
    assert c.partial >= c.min_partial
    pages = []
    while a := sa.alloc_pages(0, gfp=numslab.GFP_KERNEL | numslab.__GFP_NOWARN):
        pages.append(a)
    for a in sorted(pages)[::2][:50]:               # 50 lone free pages: one-page slabs
        sa.free_pages(a, 0)
    before = c.stats["alloc_slab"]
    out = np.zeros(1000, np.int64)
    got = sa.kmem_cache_alloc_array(c, numslab.GFP_KERNEL | numslab.__GFP_NOWARN, 1000, out,
                                    numslab.SLAB_ARRAY_ALLOC_FULL_COUNT)
    made = c.stats["alloc_slab"] - before
    assert made > sa.nr_pages                       # the case: more slabs than pages
    assert got > 0 and not len(sa.isolated_slabs())
    sa.validate()
    assert all(sa.memory[a] == 0x5a for a in out[:got].tolist())
    assert int(sa._g[numslab.engine.layout.G_NPENDING]) == 0
    sa.kmem_cache_free_bulk(c, got, out)
    sa.validate()


@pytest.mark.parametrize("gen", ["6.18", "7.0"])
def test_min_partial_may_be_set_as_through_sysfs(gen):
    """``min_partial_store``: a cache's ``min_partial`` may be written (any unsigned
    integer), and ``__slab_free`` then keeps that many partial slabs before an emptied one
    goes back to the pages (it was read-only: the rule could not be varied)."""
    runs = {}
    for keep in (None, 0):
        sa = numslab.SlabAllocator(nr_cpus=1, memory="16M", kernel=gen)
        c = sa.kmem_cache_create("c", 64)
        assert c.min_partial == 5
        if keep is not None:
            c.min_partial = keep
            assert c.min_partial == keep and c.sysfs()["min_partial"] == str(keep)
        objs = c.alloc_bulk(8 * c.objs_per_slab)
        c.free_bulk(objs[::-1].copy())
        empty = [a for a, inuse, _ in c.partial_list(0).tolist() if inuse == 0]
        runs[keep] = len(empty)
        sa.validate()
    assert 4 <= runs[None] <= 5 and runs[0] == 0      # (6.18: one is the CPU slab)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(numslab.InvalidArgumentError, match="min_partial"):
            c.min_partial = bad


# ---- SLAB_TYPESAFE_BY_RCU: a discarded slab's pages wait for the grace period (free_slab) ------
def _typesafe(gen: str) -> tuple[numslab.SlabAllocator, numslab.KmemCache, numslab.KmemCache]:
    """A machine with a SLAB_TYPESAFE_BY_RCU cache and a plain one of the same geometry."""
    sa = numslab.SlabAllocator(kernel=gen, nr_cpus=2, memory="16M")
    return (sa, sa.kmem_cache_create("tsafe", 256, flags=numslab.SLAB_TYPESAFE_BY_RCU),
            sa.kmem_cache_create("plain", 256))


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
@pytest.mark.parametrize("how", ["shrink", "bulk"])
def test_a_typesafe_by_rcu_slab_keeps_its_pages_until_the_grace_period_ends(gen, how):
    """``free_slab``: ``call_rcu(&slab->rcu_head, rcu_free_slab)`` for a SLAB_TYPESAFE_BY_RCU
    cache, so its discarded slabs' pages stay out of the page allocator (the slab already
    uncounted, ``discard_slab``'s ``dec_slabs_node``) until ``synchronize_rcu``; a plain
    cache's go back at once."""
    sa, ts, plain = _typesafe(gen)
    for c in (plain, ts):
        n = 20 * c.objs_per_slab
        objs = np.zeros(n, np.int64)
        assert sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, n, objs) == n
        before = free_total(sa)
        slabs = c.slabs
        if how == "shrink":
            for a in objs.tolist():
                sa.kmem_cache_free(c, a)
            sa.kmem_cache_shrink(c)
        else:
            sa.kmem_cache_free_bulk(c, n, objs)
        gone = slabs - c.slabs
        assert gone >= 8, gone                      # slabs discarded, uncounted at once
        back = free_total(sa) - before
        pfn = int(objs[-1]) >> 12
        if c is plain:
            assert back >= gone                     # the pages went back with the slabs
            continue
        assert back <= 0                            # the typesafe ones wait for the GP
        waiting = [a for a in objs.tolist() if sa.find(a)["kind"] == "rcu slab"]
        assert len(waiting) >= gone * c.objs_per_slab
        with pytest.raises(numslab.BadAddressError, match="waiting for an RCU grace period"):
            sa.kmem_cache_free(c, waiting[0])
        sa.validate()
        sa.synchronize_rcu()                        # rcu_free_slab: the pages come back
        assert free_total(sa) - before >= gone
        assert not any(sa.find(a)["kind"] == "rcu slab" for a in objs.tolist())
        assert sa.state.pg_flags[pfn] != (L.PG_HEAD | L.PG_RCU)
        sa.validate()


def test_destroying_a_typesafe_by_rcu_cache_waits_for_its_slabs_as_rcu_barrier_does():
    """``kmem_cache_destroy`` runs ``rcu_barrier`` after the shutdown of a
    SLAB_TYPESAFE_BY_RCU cache (its slabs' ``rcu_free_slab`` callbacks)."""
    sa, ts, plain = _typesafe("7.0")
    start = free_total(sa)
    objs = [sa.kmem_cache_alloc(ts) for _ in range(8 * ts.objs_per_slab)]
    for a in objs:
        sa.kmem_cache_free(ts, a)
    sa.kmem_cache_destroy(ts)
    assert sa.state.g[L.G_NRCU_SLABS] == 0
    assert free_total(sa) >= start - 2              # (the allocator's own sheaf pages)
    sa.validate()


def test_save_and_load_keep_the_slabs_waiting_for_their_grace_period(tmp_path):
    from test_allocator import _save_signed
    sa, ts, plain = _typesafe("7.0")
    n = 20 * ts.objs_per_slab
    objs = np.zeros(n, np.int64)
    sa.kmem_cache_alloc_bulk(ts, numslab.GFP_KERNEL, n, objs)
    sa.kmem_cache_free_bulk(ts, n, objs)
    waiting = int(sa.state.g[L.G_NRCU_SLABS])
    assert waiting >= 4
    sa.save(tmp_path / "m.npz")
    sb = numslab.SlabAllocator.load(tmp_path / "m.npz")
    assert sb.state.g[L.G_NRCU_SLABS] == waiting
    sb.validate()
    before = free_total(sb)
    sb.synchronize_rcu()
    assert free_total(sb) - before >= waiting and sb.state.g[L.G_NRCU_SLABS] == 0
    sb.validate()
    # an edited count or link, signed again, is refused at load, not followed later
    z = dict(np.load(tmp_path / "m.npz"))
    state = z["state"]
    g0 = int(state[L.H_FIELDS + 2 * L.F_G])
    first = int(sa.state.g[L.G_RCU_SLABS])
    for i, value, what in ((g0 + L.G_NRCU_SLABS, waiting + 1, "G_NRCU_SLABS"),
                           (g0 + L.G_RCU_SLABS, first + 1, "G_RCU_SLABS")):
        bad = state.copy()
        bad[i] = value
        _save_signed(tmp_path / "bad.npz", {**z, "state": bad})
        with pytest.raises(numslab.SlabError, match=f"its state is corrupt: .*{what}"):
            numslab.SlabAllocator.load(tmp_path / "bad.npz")


def test_validate_finds_a_broken_list_of_slabs_waiting_for_their_grace_period():
    sa, ts, plain = _typesafe("7.0")
    n = 20 * ts.objs_per_slab
    objs = np.zeros(n, np.int64)
    sa.kmem_cache_alloc_bulk(ts, numslab.GFP_KERNEL, n, objs)
    sa.kmem_cache_free_bulk(ts, n, objs)
    sa.validate()
    sa.state.g[L.G_NRCU_SLABS] -= 1
    with pytest.raises(numslab.SlabCorruptionError, match="waiting for their grace period"):
        sa.validate()


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_an_allocation_that_finds_no_pages_waits_for_the_typesafe_slabs_grace_period(gen):
    """Rounds of bulk allocation and free of a SLAB_TYPESAFE_BY_RCU cache and nothing ending
    a grace period: the discarded slabs' pages piled up until an allocation failed at round
    21 (16 MiB), and every later one, of any cache, with nothing saying why. The page
    allocator's reclaim now ends their grace period, as the kernel's grace periods end on
    their own."""
    sa, ts, plain = _typesafe(gen)
    objs = np.zeros(3000, np.int64)
    for _ in range(60):
        assert sa.kmem_cache_alloc_bulk(ts, numslab.GFP_KERNEL, 3000, objs) == 3000
        sa.kmem_cache_free_bulk(ts, 3000, objs)
    assert 0 < sa.state.g[L.G_NRCU_SLABS] < sa.nr_pages
    assert plain.alloc() and sa.alloc_pages(0)
    sa.validate()


def test_an_array_in_the_pages_of_a_slab_waiting_for_its_grace_period_is_refused():
    """Those pages are no allocation of the user's (RCU readers may still read them): a batch
    call writing its addresses there was accepted, from Python and inside ``@njit``."""
    sa, ts, plain = _typesafe("7.0")
    n = 20 * ts.objs_per_slab
    objs = np.zeros(n, np.int64)
    sa.kmem_cache_alloc_bulk(ts, numslab.GFP_KERNEL, n, objs)
    sa.kmem_cache_free_bulk(ts, n, objs)
    page = int(sa.state.g[L.G_RCU_SLABS]) << 12
    arr = sa.memory[page:page + 32].view(np.int64)
    before = sa.memory[page:page + 32].copy()
    with pytest.raises(numslab.InvalidArgumentError, match="lies in the arena"):
        sa.kmem_cache_alloc_bulk(plain, numslab.GFP_KERNEL, 4, arr)
    assert np.array_equal(sa.memory[page:page + 32], before)

    @numba.njit
    def alloc_into(h, cid, out):
        return numslab.jit.kmem_cache_alloc_bulk(h, cid, 4, out)
    with pytest.raises(numslab.InvalidArgumentError, match="lies in the arena"):
        alloc_into(sa.handle, plain.id, arr)
    assert np.array_equal(sa.memory[page:page + 32], before)
    sa.validate()


def test_the_waiting_slabs_pages_serve_an_allocation_of_another_order_at_once():
    """The reclaim drained the pcp lists before ending the waiting slabs' grace period, so
    their pages went to the discarding CPU's pcp lists, where an order-3 allocation could
    not see them: it failed, and the same call right after succeeded."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    t = sa.kmem_cache_create("t", 256, flags=numslab.SLAB_TYPESAFE_BY_RCU)
    fill = sa.kmem_cache_create("fill", 4096)
    nw = numslab.GFP_KERNEL | numslab.__GFP_NOWARN
    tobjs = [sa.kmem_cache_alloc(t, nw, cpu=0) for _ in range(200)]
    held = []
    while a := sa.kmem_cache_alloc(fill, nw, cpu=0):
        held.append(a)
    while p := sa.alloc_pages(0, gfp=nw):
        held.append(p)
    for a in tobjs:
        sa.kmem_cache_free(t, a, cpu=0)
    sa.kmem_cache_shrink(t)
    assert sa.state.g[L.G_NRCU_SLABS] >= 8 and sa.free_pages_count() == 0
    assert sa.alloc_pages(3, gfp=nw)
    sa.validate()


def test_get_partial_node_moves_half_the_cpu_partial_slabs_not_half_the_objects():
    """6.18's ``get_partial_node`` takes the first node partial slab for the CPU and moves
    more to the CPU's partial list until ``++partial_slabs > slub_get_cpu_partial(s) / 2``,
    where ``slub_get_cpu_partial`` is ``s->cpu_partial_slabs`` (a count of slabs). Bounded
    by ``cpu_partial / 2`` (objects: 60 for a 32-byte cache) it moved every node partial
    slab: a warm replay's kmalloc-32 had 21 CPU partial slabs after its first slow
    allocation on a CPU (``slabs_cpu_partial`` 1344(21)), the kernel keeps 2."""
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("s32", 32)                  # 128 objects per slab
    per = c.objs_per_slab
    assert (c.cpu_partial, per) == (120, 128)
    limit = -(-2 * c.cpu_partial // per)                 # cpu_partial_slabs: 2
    slabs = [[sa.kmem_cache_alloc(c) for _ in range(per)] for _ in range(23)]
    sa.kmem_cache_shrink(c)
    for s in slabs[:-1]:                                 # 22 slabs with a free object each,
        sa.kmem_cache_free(c, s[0], cpu=0)               # CPU 0's list draining to the node
    sa.kmem_cache_shrink(c)                              # all of them on the node list
    assert c.partial == 22 and c.cpu_slabs == 0
    before = c.stats["cpu_partial_node"]
    sa.kmem_cache_alloc(c, cpu=1)                        # CPU 1: the node partial list
    moved = c.stats["cpu_partial_node"] - before
    assert moved == limit // 2 + 1 == 2
    assert c.partial == 22 - 1 - moved and c.cpu_slabs == 1 + moved
    sa.validate()


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_g_slab_gen_moves_whenever_a_cache_s_slab_count_does(gen):
    """``G_SLAB_GEN`` counts every slab made and discarded: after each call, of single and
    bulk allocations and frees of two caches (one's sheaf structs kmalloc'd from the other's
    class), kmalloc and ``kmem_cache_shrink``, it moved by at least the slabs any cache
    gained or lost, and by nothing when none did (the replay's peaks count slabs only when
    it moved)."""
    sa = numslab.SlabAllocator(kernel=gen, nr_cpus=2, memory="16M")
    a, b = sa.kmem_cache_create("ga", 192), sa.kmem_cache_create("gb", 512)
    rng = np.random.default_rng(7)
    live: dict = {a: [], b: []}
    made = discarded = 0

    def counts() -> np.ndarray:
        return sa.state.node[:, :, L.N_NR_SLABS].sum(axis=1).copy()

    for step in range(600):
        before, g0 = counts(), int(sa.state.g[L.G_SLAB_GEN])
        c = a if rng.random() < 0.6 else b
        op = rng.integers(5)
        cpu = int(rng.integers(2))
        if op == 0 or not live[c]:
            live[c].append(sa.kmem_cache_alloc(c, cpu=cpu))
        elif op == 1:
            out = np.zeros(int(rng.integers(1, 40)), np.int64)
            assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, len(out), out, cpu=cpu) == len(out)
            live[c] += out.tolist()
        elif op == 2:
            k = int(rng.integers(1, 60))
            for x in live[c][:k]:
                sa.kmem_cache_free(c, x, cpu=cpu)
            del live[c][:k]
        elif op == 3:
            k = int(rng.integers(1, len(live[c]) + 1))
            sa.kmem_cache_free_bulk(c, k, np.array(live[c][:k], np.int64), cpu=cpu)
            del live[c][:k]
        else:
            sa.kfree(sa.kmalloc(int(rng.integers(8, 1024)), cpu=cpu), cpu=cpu)
            if step % 20 == 0:
                sa.kmem_cache_shrink(c)
        d = counts() - before
        moved = int(sa.state.g[L.G_SLAB_GEN]) - g0
        made += int(d[d > 0].sum())
        discarded -= int(d[d < 0].sum())
        assert moved >= int(np.abs(d).sum()), (step, op)
        if not d.any():                 # (or as many made as discarded in the call)
            assert moved % 2 == 0, (step, op)
    assert made > 20 and discarded > 10
    sa.validate()
