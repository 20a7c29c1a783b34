"""Every allocation and free path of the CPU layer, asserted through SLUB's own counters."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab import GFP_KERNEL, SLAB_HWCACHE_ALIGN, __GFP_THISNODE, __GFP_ZERO

from conftest import new_slab_order

OBJS = 16   # 256-byte HWCACHE_ALIGN objects per order-0 slab


@pytest.fixture
def cache(sa):
    return sa.kmem_cache_create("t256", 256, flags=SLAB_HWCACHE_ALIGN)


def alloc(sa, cache, n, cpu=0):
    out = [sa.kmem_cache_alloc(cache, cpu=cpu) for _ in range(n)]
    assert all(out)
    return out


def slab_of(addr):
    return addr >> 12


def test_fast_and_slow_alloc(sa, cache):
    objs = alloc(sa, cache, OBJS + 1)
    st = cache.stats
    assert st["alloc_slowpath"] == 2 and st["alloc_slab"] == 2
    assert st["alloc_fastpath"] == OBJS - 1
    assert st["deactivate_bypass"] == 1          # the exhausted cpu slab is dropped, full
    assert len({slab_of(a) for a in objs}) == 2
    assert cache.slabs == 2 and cache.cpu_slabs == 1
    sa.validate(cache)


def test_objects_come_in_allocation_order_from_a_fresh_slab(sa, cache):
    # CONFIG_SLAB_FREELIST_RANDOM (on by default): the cache's sequence from a random start
    objs = alloc(sa, cache, OBJS)
    assert sorted(objs) == [(objs[0] >> 12 << 12) + 256 * i for i in range(OBJS)]
    assert objs == new_slab_order(cache, objs[0]).tolist()
    plain = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=sa.kernel,
                                  freelist_random=False)     # off: address order
    c = plain.kmem_cache_create("t256", 256, flags=SLAB_HWCACHE_ALIGN)
    objs = alloc(plain, c, OBJS)
    assert np.all(np.diff(objs) == 256)
    assert objs[0] % 4096 == 0


def test_fast_free_to_the_cpu_slab_is_reused_lifo(sa, cache):
    a, b = alloc(sa, cache, 2)
    sa.kmem_cache_free(cache, b)
    sa.kmem_cache_free(cache, a)
    assert cache.stats["free_fastpath"] == 2
    assert sa.kmem_cache_alloc(cache) == a
    assert sa.kmem_cache_alloc(cache) == b


def test_free_to_a_full_slab_puts_it_on_the_cpu_partial_list(sa, cache):
    first = alloc(sa, cache, OBJS)
    alloc(sa, cache, 1)                          # a new cpu slab; the first is full
    sa.kmem_cache_free(cache, first[3])
    st = cache.stats
    assert st["free_slowpath"] == 1 and st["cpu_partial_free"] == 1
    assert cache.slabs_cpu_partial == f"{OBJS // 2}(1) C0={OBJS // 2}(1)"
    alloc(sa, cache, OBJS - 1)                   # exhaust the cpu slab
    assert sa.kmem_cache_alloc(cache) == first[3]
    assert cache.stats["cpu_partial_alloc"] == 1


def test_remote_free_to_a_frozen_slab_then_refill(sa, cache):
    objs = alloc(sa, cache, OBJS)                # the whole cpu slab of CPU 0
    sa.kmem_cache_free(cache, objs[5], cpu=1)    # CPU 1 frees into CPU 0's frozen slab
    assert cache.stats["free_frozen"] == 1
    assert sa.kmem_cache_alloc(cache, cpu=0) == objs[5]
    assert cache.stats["alloc_refill"] == 1


def test_cpu_partial_drain_and_alloc_from_node_partial(sa, cache):
    slabs = [alloc(sa, cache, OBJS) for _ in range(10)]
    for s in slabs[:9]:                          # 9 full slabs get their first free object
        sa.kmem_cache_free(cache, s[0])
    st = cache.stats
    assert st["cpu_partial_free"] == 9
    assert st["cpu_partial_drain"] == 1          # cpu_partial_slabs = ceil(52*2/16) = 7
    assert st["free_add_partial"] == 7 and cache.partial == 7
    sa.kmem_cache_alloc(cache, cpu=1)            # CPU 1 has nothing: node partial list,
    st = cache.stats                             # one slab and 7 // 2 + 1 to its partials
    assert st["alloc_from_partial"] == 1 and st["cpu_partial_node"] == 4
    assert cache.partial == 2
    sa.validate()


def test_cpu_partial_may_be_set_as_through_sysfs(sa, cache):
    """``cpu_partial_store`` (6.18): the objects a CPU's partial list keeps may be written;
    ``slub_set_cpu_partial`` allows ``ceil(2 * objects / objs_per_slab)`` slabs and
    ``flush_all`` empties every CPU's slab and partial list at once. 0 drains the list at
    every put (a slab at most stays); a debug cache takes 0 only; 7.x keeps the file: 0 is
    accepted and changes nothing, anything else is -EINVAL (it was read-only: the rule could
    not be varied)."""
    slabs = [alloc(sa, cache, OBJS) for _ in range(10)]      # 10 full slabs ...
    alloc(sa, cache, 1)                                      # ... and CPU 0's slab
    assert cache.cpu_partial == 52 and cache.sysfs()["cpu_partial"] == "52"
    for s in slabs[:4]:
        sa.kmem_cache_free(cache, s[0], cpu=1)   # CPU 1's partial list: 4 slabs (7 allowed)
    assert cache.slabs_cpu_partial.endswith("C1=32(4)")
    cache.cpu_partial = 8                        # ceil(16 / 16): one slab
    assert cache.cpu_partial == 8 and cache.sysfs()["cpu_partial"] == "8"
    assert cache.slabs_cpu_partial == "0(0)" and cache.cpu_slabs == 0      # flush_all
    assert cache.stats["cpuslab_flush"] == 1     # CPU 0's slab, one object in it
    assert cache.partial == 5                    # it and the 4 on their node's list
    for s in slabs[4:8]:
        sa.kmem_cache_free(cache, s[0], cpu=1)
    assert cache.stats["cpu_partial_drain"] == 3       # each put after the first drains
    assert cache.slabs_cpu_partial.endswith("C1=8(1)") and cache.partial == 8
    cache.cpu_partial = 0
    for s in slabs[8:]:
        sa.kmem_cache_free(cache, s[0], cpu=1)
    assert cache.stats["cpu_partial_drain"] == 4       # (the write flushed slab 7 first)
    assert cache.slabs_cpu_partial.endswith("C1=8(1)") and cache.partial == 10
    sa.validate()
    debug = sa.kmem_cache_create("dbg", 256, flags=numslab.SLAB_RED_ZONE)
    debug.cpu_partial = 0
    with pytest.raises(numslab.InvalidArgumentError, match="debug cache"):
        debug.cpu_partial = 1
    for bad in (-1, 1.5, True, "3", 1 << 32):
        with pytest.raises(numslab.InvalidArgumentError, match="cpu_partial"):
            cache.cpu_partial = bad
    assert cache.cpu_partial == 0
    gen7 = numslab.SlabAllocator(nr_cpus=1, memory="16M")
    c7 = gen7.kmem_cache_create("t256", 256, flags=SLAB_HWCACHE_ALIGN)
    c7.cpu_partial = 0
    with pytest.raises(numslab.InvalidArgumentError, match="no CPU partial lists"):
        c7.cpu_partial = 30
    assert c7.cpu_partial == 0 and c7.sysfs()["cpu_partial"] == "0"


def test_empty_slab_freed_only_beyond_min_partial(sa, cache):
    slabs = [alloc(sa, cache, OBJS) for _ in range(10)]
    for s in slabs[:8]:
        sa.kmem_cache_free(cache, s[0])          # 7 slabs drained to the node list
    assert cache.partial == 7 >= cache.min_partial
    victim = slabs[0]
    for a in victim[1:]:                         # empty a node-partial slab
        sa.kmem_cache_free(cache, a, cpu=1)
    st = cache.stats
    assert st["free_remove_partial"] == 1 and st["free_slab"] == 1
    assert cache.partial == 6 and cache.slabs == 9


def test_empty_slab_kept_while_node_has_few_partials(sa, cache):
    cache2 = sa.kmem_cache_create("few", 256, flags=SLAB_HWCACHE_ALIGN)
    objs = alloc(sa, cache2, OBJS)
    alloc(sa, cache2, 1)
    sa.kmem_cache_shrink(cache2)                 # both slabs to the node list
    assert cache2.partial == 1                   # the one-object slab; the full one: none
    for a in objs:
        sa.kmem_cache_free(cache2, a)
    assert cache2.stats["free_slab"] == 0        # partial count 1 < min_partial 5
    assert cache2.slabs == 2


def test_deactivate_kinds(sa, cache):
    alloc(sa, cache, 3)
    sa.kmem_cache_shrink(cache)                  # cpu slab with free objects: to head
    assert cache.stats["deactivate_to_head"] == 1 and cache.stats["cpuslab_flush"] == 1
    objs = alloc(sa, cache, OBJS + 3)            # refill, then full cpu slab...
    sa.kmem_cache_free(cache, objs[-1], cpu=1)   # ...with a remote free
    sa.kmem_cache_shrink(cache)
    st = cache.stats
    assert st["deactivate_remote_frees"] >= 1 and st["deactivate_to_tail"] >= 1


def test_deactivate_full(sa, cache):
    alloc(sa, cache, OBJS)
    sa.kmem_cache_shrink(cache)
    assert cache.stats["deactivate_full"] == 1
    assert cache.partial == 0 and cache.slabs == 1


def test_zeroed_allocation(sa, cache):
    a = sa.kmem_cache_alloc(cache)
    sa.memory[a:a + 256] = 0xAB
    sa.kmem_cache_free(cache, a)
    b = sa.kmem_cache_alloc(cache, GFP_KERNEL | __GFP_ZERO)
    assert b == a and not sa.memory[b:b + 256].any()


def test_node_mismatch_switches_cpu_slab(sa2):
    c = sa2.kmem_cache_create("n", 128)
    a = sa2.kmem_cache_alloc(c, cpu=0)
    assert a // 4096 // sa2.pages_per_node == 0
    b = sa2.kmem_cache_alloc_node(c, GFP_KERNEL, node=1, cpu=0)
    assert b // 4096 // sa2.pages_per_node == 1
    assert c.stats["alloc_node_mismatch"] == 1
    assert sa2.cpu_to_node(3) == 1 and sa2.cpu_to_node(1) == 0


def make_remote_partials(sa2, c, nslabs=11):
    """Leave more than min_partial partial slabs on node 1 (CPU 2 lives there)."""
    per = c.objs_per_slab
    slabs = [[sa2.kmem_cache_alloc(c, cpu=2) for _ in range(per)] for _ in range(nslabs + 1)]
    for s in slabs[:nslabs]:
        sa2.kmem_cache_free(c, s[0], cpu=2)
    sa2.kmem_cache_shrink(c)
    return slabs


def test_get_any_partial_takes_remote_node_slabs(sa2):
    c = sa2.kmem_cache_create("r", 256, flags=SLAB_HWCACHE_ALIGN)
    make_remote_partials(sa2, c)
    assert c.partial > c.min_partial
    hits = 0
    for _ in range(4):
        a = sa2.kmem_cache_alloc(c, cpu=0)
        hits += a // 4096 // sa2.pages_per_node == 1
        sa2.kmem_cache_shrink(c)
    assert hits >= 3                             # ratio 100 -> a draw passes 1001 of 1024
    assert c.stats["alloc_remote_partial"] == hits


def test_remote_node_defrag_ratio_zero_keeps_allocations_local(sa2):
    c = sa2.kmem_cache_create("r0", 256, flags=SLAB_HWCACHE_ALIGN)
    make_remote_partials(sa2, c)
    c.remote_node_defrag_ratio = 0
    a = sa2.kmem_cache_alloc(c, cpu=0)
    assert a // 4096 // sa2.pages_per_node == 0
    assert c.stats["alloc_remote_partial"] == 0
    for bad in (101, -1, 50.5, "50", True, None):  # 50.5 was stored as 50, "50" TypeError
        with pytest.raises(numslab.SlabError, match="remote_node_defrag_ratio"):
            c.remote_node_defrag_ratio = bad
        assert c.remote_node_defrag_ratio == 0
    c.remote_node_defrag_ratio = np.int64(40)
    assert c.remote_node_defrag_ratio == 40


def test_thisnode_allocations_never_go_remote(sa2):
    c = sa2.kmem_cache_create("tn", 256, flags=SLAB_HWCACHE_ALIGN)
    make_remote_partials(sa2, c)
    a = sa2.kmem_cache_alloc_node(c, GFP_KERNEL | __GFP_THISNODE, node=0, cpu=0)
    assert a // 4096 // sa2.pages_per_node == 0


def test_order_fallback_when_high_orders_are_fragmented():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("big", 2048)
    assert c.order == 3
    pages = []
    while (p := sa.alloc_pages(0)):
        pages.append(p)
    for p in pages[::2]:
        sa.free_pages(p, 0)                      # only isolated single pages are free
    a = sa.kmem_cache_alloc(c)
    assert a and c.stats["order_fallback"] == 1
    assert c.total_objects == 2                  # an order-0 slab holds two 2048-byte objects
    sa.validate()


def test_exhaustion_returns_null_and_keeps_everything(caplog):
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("x", 4096)
    got = []
    while (a := sa.kmem_cache_alloc(c)):
        got.append(a)
        sa.memory[a:a + 8] = np.frombuffer(a.to_bytes(8, "little"), np.uint8)
    assert "Unable to allocate memory" in caplog.text
    assert len(got) == c.live_objects > 0
    assert sa.kmem_cache_alloc(c, numslab.GFP_KERNEL | numslab.__GFP_NOWARN) == 0
    for a in got:
        assert int.from_bytes(sa.memory[a:a + 8].tobytes(), "little") == a
    sa.validate()
    for a in got:
        sa.kmem_cache_free(c, a)
    sa.kmem_cache_shrink(c)
    assert c.slabs == 0
    sa.validate()


def test_flush_moves_everything_off_the_cpus(sa, cache):
    slabs = [alloc(sa, cache, OBJS) for _ in range(4)]
    for s in slabs:
        sa.kmem_cache_free(cache, s[1])
    sa.kmem_cache_shrink(cache)
    assert cache.cpu_slabs == 0
    assert cache.stats["cpuslab_flush"] == 1


@pytest.mark.parametrize("finder", ["pop", "flush"])
def test_free_objects_behind_a_cut_cpu_freelist_are_lost_not_live(finder):
    """A stray write over a free pointer on the CPU's lockless freelist: the count walked
    the list and took every free object behind the cut for one a user holds (len(c) 18 with
    one held) until the CPU popped there or a flush walked it. They are lost from the cut
    on (no pop or flush reaches them: the one that finds it isolates the slab), so len(c)
    and live_objects are what users hold all along; validate reports the cut meanwhile."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel="6.18", freelist_random=False)
    c = sa.kmem_cache_create("c", 192)
    a = c.alloc()                                   # object 0; 1..20 on the CPU's freelist
    slab = a & ~4095
    v = a + 3 * c.slab_size
    sa.memory[v + c.offset:v + c.offset + 8] = 0x41
    assert len(c) == c.live_objects == len(c.live_addresses()) == 1
    assert c.lost_objects == c.objs_per_slab - 4 == 17      # behind object 3
    assert c.lost_slabs().tolist() == [[slab, 17]]
    with pytest.raises(numslab.SlabCorruptionError, match=r"free list leaves its slab or the "
                       rf"object grid \(cache c, slab at {slab:#x}\)$"):
        sa.validate()
    if finder == "flush":                           # deactivate_slab's checked walk finds
        c.shrink()                                  # it: 1..3 leak with the isolated slab
        assert len(c) == c.live_objects == 1 and c.lost_objects == 20
        sa.validate()
        b = c.alloc()                               # from a new slab (the shrink's fault,
        assert b & ~4095 != slab                    # left behind, refused it as its own)
        c.free(b)
        c.free(a)
        assert len(c) == 0 and c.lost_objects == c.objs_per_slab
        return
    got = [c.alloc(), c.alloc()]                    # objects 1 and 2
    assert len(c) == c.live_objects == 3 and c.lost_objects == 17
    with pytest.raises(numslab.SlabCorruptionError, match="Freepointer corrupt"):
        c.alloc()                                   # the pop of object 3 finds the cut
    assert len(c) == c.live_objects == 3            # object 3 leaks with the slab's rest
    assert c.lost_objects == 18 and c.lost_slabs().tolist() == [[slab, 18]]
    sa.validate()
    for x in got + [a]:
        c.free(x)                                   # frees into the isolated slab leak too
    assert len(c) == c.live_objects == 0 and c.lost_objects == c.objs_per_slab
    sa.validate()


def test_a_cpu_freelist_written_to_run_into_the_slabs_own_list_is_cut_there():
    """CPU 1 frees an object of CPU 0's slab remotely (onto the slab's own free list); a
    stray write points a free pointer on CPU 0's lockless freelist at it. The count walked
    on into the slab's list (len(c) 16 with 2 held, no object lost), and a flush spliced
    the two lists into a cycle ("free list is longer than the slab"). The walk stops where
    the lists meet; the flush finds it and isolates the slab, whose free objects are lost."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel="6.18", freelist_random=False,
                               freelist_hardened=False)
    c = sa.kmem_cache_create("c", 192)
    a = [sa.kmem_cache_alloc(c, cpu=0) for _ in range(3)]   # 3..20 on CPU 0's list
    sa.kmem_cache_free(c, a[1], cpu=1)                      # remote: onto the slab's list
    slab = a[0] & ~4095
    v = a[0] + 5 * c.slab_size
    sa.memory[v + c.offset:v + c.offset + 8] = list(a[1].to_bytes(8, "little"))
    assert len(c) == c.live_objects == len(c.live_addresses()) == 2
    assert c.lost_slabs().tolist() == [[slab, c.objs_per_slab - 3 - 2 - 1]]   # 6..20
    sa.kmem_cache_shrink(c)                         # the flush: deactivate_slab
    assert sa.isolated_slabs().tolist() == [slab]
    assert len(c) == 2 and c.lost_objects == c.objs_per_slab - 2
    sa.validate()
    more = [sa.kmem_cache_alloc(c, cpu=0) for _ in range(30)]
    assert all(x & ~4095 != slab for x in more) and len(set(more)) == 30
    sa.validate()


def test_objects_a_stray_write_makes_the_cpu_freelist_skip_are_lost_not_live():
    """Object 6's free pointer on CPU 0's lockless freelist is written to name object 10:
    7, 8 and 9 drop off a list that still ends in NULL. The count took them for held ones
    (len(c) 6 with 3 held) and a flush kept them counted in use for good (destroy: "3 live
    object(s)"). They are lost from the write on, and the flush records them so."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel="6.18", freelist_random=False,
                               freelist_hardened=False)
    c = sa.kmem_cache_create("c", 192)
    a = [sa.kmem_cache_alloc(c, cpu=0) for _ in range(6)]
    for x in a[3:]:
        sa.kmem_cache_free(c, x, cpu=0)             # CPU list 5 4 3 6 .. 20
    held = a[:3]
    slab = a[0] & ~4095
    src, dst = slab + 6 * c.slab_size, slab + 10 * c.slab_size
    sa.memory[src + c.offset:src + c.offset + 8] = list(dst.to_bytes(8, "little"))
    assert len(c) == c.live_objects == len(c.live_addresses()) == 3
    assert c.lost_slabs().tolist() == [[slab, 3]]
    held += [sa.kmem_cache_alloc(c, cpu=0) for _ in range(10)]
    assert len(set(held)) == 13 and not {slab + k * c.slab_size for k in (7, 8, 9)} & set(held)
    assert len(c) == 13 and c.lost_objects == 3
    c.shrink()                                      # the flush records them lost
    assert len(c) == 13 and c.lost_slabs().tolist() == [[slab, 3]]
    sa.validate()
    for x in held:
        c.free(x)
    c.shrink()
    assert len(c) == 0 and c.lost_objects == 3
    sa.validate()
    with pytest.raises(numslab.LostObjectsError, match=r"3 object\(s\) lost"):
        sa.kmem_cache_destroy(c)
    sa.kmem_cache_destroy(c, force=True)
    sa.validate()


def test_objects_a_stray_write_makes_a_cpu_slab_skip_stay_lost_when_it_runs_out():
    """6.18, unhardened: object 6's free pointer on the CPU's lockless freelist names object
    10, so 7, 8 and 9 are lost. The CPU then allocates the list to its end and its next
    allocation leaves the full slab (``deactivate_bypass``: on no list). The lost objects
    were counted live from then on: len(c) 22 with 19 held, lost_objects 0, validate
    "inuse + free objects != objects", and once every object was freed len(c) 3 and a
    destroy refused with "3 live object(s)"."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel="6.18", freelist_random=False,
                               freelist_hardened=False)
    c = sa.kmem_cache_create("c", 192)
    a = c.alloc()                                   # object 0; 1..20 on the CPU's freelist
    slab = a & ~4095
    src, dst = slab + 6 * c.slab_size, slab + 10 * c.slab_size
    sa.memory[src + c.offset:src + c.offset + 8] = list(dst.to_bytes(8, "little"))
    held = [a] + [c.alloc() for _ in range(17)]     # 1..6 and 10..20: the list's end
    assert {x & ~4095 for x in held} == {slab} and c.lost_slabs().tolist() == [[slab, 3]]
    held.append(c.alloc())                          # from a new slab
    assert held[-1] & ~4095 != slab and c.stats["deactivate_bypass"] == 1
    assert len(c) == c.live_objects == len(held) == 19
    assert c.lost_objects == 3 and c.lost_slabs().tolist() == [[slab, 3]]
    sa.validate()
    for x in held:
        c.free(x)
    assert len(c) == 0 and c.lost_objects == 3
    sa.validate()
    with pytest.raises(numslab.LostObjectsError, match=r"3 object\(s\) lost"):
        sa.kmem_cache_destroy(c)
