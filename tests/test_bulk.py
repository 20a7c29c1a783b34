"""The bulk API (``kmem_cache_alloc_bulk``/``kmem_cache_free_bulk``/``kfree_bulk``) and the
RFC's array API, against the kernel rules written down in kernel_bulk_sheaves.md (parts 1
and 3): all-or-nothing allocation, detached freelists with a lookahead of 3 built from the
end of the array, and the PARTIAL / NEW / LOCAL / FULL_COUNT array modes."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

import numslab
from numslab import (GFP_KERNEL, SLAB_ARRAY_ALLOC_FULL_COUNT,
                     SLAB_ARRAY_ALLOC_LOCAL, SLAB_ARRAY_ALLOC_NEW, SLAB_ARRAY_ALLOC_PARTIAL,
                     SLAB_HWCACHE_ALIGN, __GFP_NOWARN, __GFP_ZERO)
from numslab.engine.layout import (C_FREELIST, C_PARTIAL, C_SLAB, NIL, PG_CPU_PARTIAL,
                             PG_FROZEN, PG_HEAD, PG_NODE_PARTIAL, PG_SLAB)

from conftest import assert_unchanged, free_total, new_slab_order, snapshot

OBJS = 16            # 256-byte HWCACHE_ALIGN objects per order-0 slab (2 CPUs)
PARTIAL, NEW, LOCAL, FULL = (SLAB_ARRAY_ALLOC_PARTIAL, SLAB_ARRAY_ALLOC_NEW,
                             SLAB_ARRAY_ALLOC_LOCAL, SLAB_ARRAY_ALLOC_FULL_COUNT)
ZERO, NOWARN = __GFP_ZERO, __GFP_NOWARN
SENTINEL = -7


# ---- helpers ------------------------------------------------------------------------------
@pytest.fixture
def cache(sa):
    c = sa.kmem_cache_create("b256", 256, flags=SLAB_HWCACHE_ALIGN)
    assert (c.objs_per_slab, c.slab_size, c.order) == (OBJS, 256, 0)
    return c


def delta(cache, before):
    """Stat items that changed since ``before`` (a ``cache.stats`` dict)."""
    return {k: v - before[k] for k, v in cache.stats.items() if v != before[k]}


def slab_of(addr):
    return int(addr) >> 12           # order-0 slabs: the page frame is the slab


def bulk(sa, c, n, cpu=0, gfp=GFP_KERNEL):
    out = np.full(n, SENTINEL, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, gfp, n, out, cpu=cpu) == n
    return out


def cpu_row(sa, c, cpu=0):
    return sa.state.cpu[c.id, cpu]


def cpu_partial_chain(sa, c, cpu=0):
    """The CPU partial list of ``cpu``, head first, as slab frames."""
    out, s = [], int(sa.state.cpu[c.id, cpu, C_PARTIAL])
    while s != NIL:
        out.append(s)
        s = int(sa.state.pg_next[s])
    return out


def node_partial(c, node=0):
    return [int(a) >> 12 for a in c.partial_list(node)[:, 0]]


def free_count(sa, slab):
    return int(sa.state.sl_objects[slab] - sa.state.sl_inuse[slab])


def is_live(sa, addr):
    """True if ``addr`` is an allocated object (ksize refuses a free one)."""
    try:
        sa.ksize(int(addr))
    except numslab.SlabError:
        return False
    return True


# ---- a Python oracle of build_detached_freelist (kernel_bulk_sheaves.md 1.4) -------------
def build_detached_freelist(p, size, slab):
    """One round on ``p[:size]`` (a list, permuted in place). Returns (same, slab, cnt)."""
    size -= 1
    target, cnt, lookahead, same = slab(p[size]), 1, 3, size
    while size:
        size -= 1
        if slab(p[size]) == target:
            cnt += 1
            same -= 1
            if size != same:
                p[size], p[same] = p[same], p[size]
            continue
        lookahead -= 1
        if lookahead == 0:
            break
    return same, target, cnt


def detached_rounds(arr, slab=slab_of):
    """Every round of ``kmem_cache_free_bulk`` over ``arr``: (final array, [(slab, cnt)])."""
    p, size, rounds = [int(a) for a in arr], len(arr), []
    while size:
        size, s, cnt = build_detached_freelist(p, size, slab)
        rounds.append((s, cnt))
    return p, rounds


def test_oracle_matches_the_notes_by_hand():
    # slabs A B A B: from the end B, then A (1st mismatch), B (match), A (2nd mismatch)
    p, rounds = detached_rounds([10, 20, 11, 21], slab=lambda a: a // 10)
    assert rounds == [(2, 2), (1, 2)]
    assert p == [10, 11, 20, 21]
    # the 3rd mismatch stops the scan: the last B is never reached in round one
    _, rounds = detached_rounds([20, 10, 11, 12, 21], slab=lambda a: a // 10)
    assert rounds == [(2, 1), (1, 3), (2, 1)]


# ---- kmem_cache_alloc_bulk ---------------------------------------------------------------
def test_alloc_bulk_fills_out_with_distinct_live_objects(sa, cache):
    out = np.full(50, SENTINEL, np.int64)
    assert sa.kmem_cache_alloc_bulk(cache, GFP_KERNEL, 40, out, cpu=0) == 40
    assert (out[40:] == SENTINEL).all()                     # nothing written past nr
    objs = out[:40]
    assert len(set(objs.tolist())) == 40
    assert all(is_live(sa, a) for a in objs)
    assert cache.live_objects == 40
    # three fresh slabs, each handed out in its allocation order (the cache's random
    # sequence from a random start; address order with CONFIG_SLAB_FREELIST_RANDOM off)
    for k in range(0, 40, OBJS):
        chunk = objs[k:k + OBJS]
        assert (chunk == new_slab_order(cache, chunk[0])[:len(chunk)]).all()
    st = cache.stats
    # one ___slab_alloc per refill (3 new slabs), every other object popped from the freelist
    assert st["alloc_slowpath"] == 3 and st["alloc_slab"] == 3
    assert st["alloc_fastpath"] == 37
    assert st["deactivate_bypass"] == 2
    sa.validate()


def test_alloc_bulk_counts_fastpath_per_object_and_slowpath_per_refill(sa, cache):
    first = bulk(sa, cache, 8)                     # CPU freelist keeps 8 objects
    st = cache.stats
    more = bulk(sa, cache, 5)
    assert delta(cache, st) == {"alloc_fastpath": 5}
    assert (more == new_slab_order(cache, first[0])[8:13]).all()     # the same slab, on
    st = cache.stats
    bulk(sa, cache, 10)                            # 3 left, one refill, then 6 more
    d = delta(cache, st)
    assert d["alloc_fastpath"] == 9 and d["alloc_slowpath"] == 1 and d["alloc_slab"] == 1
    assert cache.live_objects == 23
    sa.validate()


def test_alloc_bulk_of_zero_objects_changes_nothing(sa, cache):
    bulk(sa, cache, 3)
    snap = snapshot(sa)
    assert sa.kmem_cache_alloc_bulk(cache, GFP_KERNEL, 0, np.empty(0, np.int64)) == 0
    assert sa.kmem_cache_alloc_bulk(cache, GFP_KERNEL, 0, np.empty(4, np.int64)) == 0
    assert_unchanged(sa, snap)


def test_alloc_bulk_gfp_zero_zeroes_every_object(sa):
    c = sa.kmem_cache_create("z100", 100)          # object_size 100, slab_size 104
    objs = bulk(sa, c, 60)
    for a in objs:
        sa.memory[a:a + c.object_size] = 0xAB
    c.free_bulk(objs)
    again = bulk(sa, c, 60, gfp=GFP_KERNEL | ZERO)
    assert len(set(again.tolist()) & set(objs.tolist())) >= 40   # dirty ones come back
    for a in again:
        assert not sa.memory[a:a + c.object_size].any()
    sa.validate()


def test_alloc_bulk_rejects_short_or_bad_arrays(sa, cache):
    snap = snapshot(sa)
    with pytest.raises(numslab.InvalidSizeError, match=r"^kmem_cache_alloc_bulk: count 5 is "
                                                       r"larger than the array \(4 entries\)$"):
        sa.kmem_cache_alloc_bulk(cache, GFP_KERNEL, 5, np.empty(4, np.int64))
    # the count and the gfp swapped (a new user's slip): the message says so
    with pytest.raises(numslab.InvalidSizeError, match=r"count 3264 is larger than the "
                                                       r"array \(4 entries\) \(it is GFP_KERNEL: "
                                                       r"the arguments are cache, gfp, count, "
                                                       r"array\)"):
        sa.kmem_cache_alloc_bulk(cache, 4, GFP_KERNEL, np.empty(4, np.int64))
    with pytest.raises(numslab.SlabError, match="int64"):
        sa.kmem_cache_alloc_bulk(cache, GFP_KERNEL, 4, np.empty(4, np.int32))
    with pytest.raises(numslab.SlabError, match="contiguous"):
        sa.kmem_cache_alloc_bulk(cache, GFP_KERNEL, 4, np.empty(8, np.int64)[::2])
    with pytest.raises(numslab.InvalidSizeError):
        sa.kmem_cache_alloc_bulk(cache, GFP_KERNEL, -1, np.empty(4, np.int64))
    with pytest.raises(numslab.WrongCacheError):
        sa.kmem_cache_alloc_bulk("b256", GFP_KERNEL, 1, np.empty(4, np.int64))
    assert_unchanged(sa, snap)


def test_alloc_bulk_negative_count_on_the_cached_array_is_refused(sa, cache):
    """The facade skips its Python-side checks when the array is the one it checked last;
    the kernel's own array check must still refuse a negative count."""
    out = bulk(sa, cache, 4)
    with pytest.raises(numslab.InvalidSizeError):
        sa.kmem_cache_alloc_bulk(cache, GFP_KERNEL, -1, out)
    assert cache.live_objects == 4


def test_free_bulk_negative_count_on_the_cached_array_is_refused():
    """Same check on the free side; run in a child process because an unchecked call
    walks ``p[-2], p[-3], ...`` out of bounds and crashed the interpreter (fixed in
    244f9ae: ``entry._bad_array`` refuses nr < 0)."""
    code = textwrap.dedent("""
        import numpy as np, numslab
        sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
        c = sa.kmem_cache_create("x", 256)
        out = np.empty(10, np.int64)
        sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, 10, out)
        sa.kmem_cache_free_bulk(c, 2, out)          # ``out`` is now the checked array
        try:
            sa.kmem_cache_free_bulk(c, -1, out)
        except numslab.InvalidSizeError:
            print("REFUSED", c.live_objects)
        sa.validate()
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"child died with {r.returncode}: {r.stderr[-500:]}"
    assert r.stdout.split() == ["REFUSED", "8"]


def test_alloc_bulk_refuses_an_array_made_read_only_after_first_use(sa, cache):
    out = bulk(sa, cache, 4)
    out.flags.writeable = False
    with pytest.raises(numslab.SlabError, match="writable"):
        sa.kmem_cache_alloc_bulk(cache, GFP_KERNEL, 4, out)
    assert cache.live_objects == 4


# ---- all or nothing -----------------------------------------------------------------------
def fill_memory(sa, c, step=160):
    """Bulk-allocate until the page allocator is nearly dry; each object holds its address."""
    got = []
    out = np.empty(step, np.int64)
    while free_total(sa) > 5:           # (the last batch no more than the pages left hold)
        n = min(step, (free_total(sa) - 5) * c.objs_per_slab)
        assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, n, out) == n
        got.extend(out[:n].tolist())
    for a in got:
        sa.memory[a:a + 8] = np.frombuffer(int(a).to_bytes(8, "little"), np.uint8)
        sa.memory[a + 8:a + c.object_size] = a & 0xFF
    return got


def intact(sa, c, objs):
    return all(int.from_bytes(sa.memory[a:a + 8].tobytes(), "little") == a
               and (sa.memory[a + 8:a + c.object_size] == (a & 0xFF)).all() for a in objs)


def test_alloc_bulk_is_all_or_nothing_when_memory_runs_out(caplog):
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("x", 256, flags=SLAB_HWCACHE_ALIGN)
    held = fill_memory(sa, c)
    live, pages = c.live_objects, free_total(sa)
    assert live == len(held) and 0 < pages <= 5
    st = c.stats
    big = np.full(200, SENTINEL, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 200, big) == 0
    assert "Unable to allocate memory" in caplog.text
    assert c.live_objects == live
    assert not any(is_live(sa, a) for a in big if a > 0 and int(a) not in set(held))
    sa.validate()
    assert intact(sa, c, held)
    d = delta(c, st)
    # every free page became a slab; the objects taken were handed back to those slabs
    assert d["alloc_slab"] == pages and free_total(sa) == 0
    assert d["alloc_slowpath"] == pages + 1            # the last refill failed
    # nothing leaked: exactly the objects of those slabs can still be had, one more cannot
    spare = c.total_objects - live
    assert spare == pages * c.objs_per_slab
    caplog.clear()
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL | NOWARN, spare + 1,
                                    np.empty(spare + 1, np.int64)) == 0
    assert "Unable" not in caplog.text                 # __GFP_NOWARN
    out = np.empty(spare, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, spare, out) == spare
    assert c.live_objects == live + spare
    sa.validate()
    assert intact(sa, c, held)


def test_a_7_0_bulk_allocation_that_runs_out_gives_partial_slab_objects_back_free():
    """7.0's ``refill_objects`` takes the partial slabs' objects first (marked as its walk
    goes), then new slabs; when memory runs out the batch goes back to the slabs. The objects
    taken from partial slabs must go back unmarked: they stayed marked allocated while on
    their free lists, so ``validate`` reported a corrupted list and the next allocation to
    walk one isolated the slab (its objects lost)."""
    sa = numslab.SlabAllocator(kernel="7.0", nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("x", 256, flags=SLAB_HWCACHE_ALIGN)
    held, out = [], np.empty(OBJS, np.int64)
    while sa.kmem_cache_alloc_bulk(c, GFP_KERNEL | NOWARN, OBJS, out) == OBJS:
        held.extend(out.tolist())                       # until the page allocator is dry
    for a in held:
        sa.memory[a:a + 8] = np.frombuffer(int(a).to_bytes(8, "little"), np.uint8)
        sa.memory[a + 8:a + c.object_size] = a & 0xFF
    for a in held[::2]:                                 # every slab half free, on the list
        sa.kmem_cache_free(c, a)
    sa.kmem_cache_shrink(c)
    kept = held[1::2]
    free_objs = c.total_objects - c.live_objects
    assert c.sysfs()["partial"].startswith(f"{len(held) // OBJS} ")
    st = c.stats
    big = np.full(free_objs + 200, SENTINEL, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL | NOWARN, len(big), big) == 0
    assert "alloc_slab" not in delta(c, st)             # no page to make a slab of
    sa.validate()
    assert len(sa.isolated_slabs()) == 0 and intact(sa, c, kept)
    out = np.empty(c.total_objects - c.live_objects, np.int64)   # every free object
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, len(out), out) == len(out)
    assert len(sa.isolated_slabs()) == 0
    assert len(set(out.tolist()) | set(kept)) == len(out) + len(kept)
    sa.validate()


# ---- kmem_cache_free_bulk: detached freelists -------------------------------------------
def interleave(objs, nslabs):
    """Objects of ``nslabs`` consecutive slabs, round-robin: s0[0], s1[0], ..., s0[1], ..."""
    return objs.reshape(nslabs, -1).T.ravel().copy()


@pytest.mark.parametrize("nslabs, order", [
    (2, "interleaved"), (3, "interleaved"), (4, "interleaved"), (5, "interleaved"),
    (5, "sequential"), (5, "reversed"), (5, "random"), (1, "random")])
def test_free_bulk_builds_detached_freelists_like_the_kernel(sa, cache, nslabs, order):
    objs = bulk(sa, cache, nslabs * OBJS)              # the last slab is the CPU slab
    cpu_slab = int(cpu_row(sa, cache)[C_SLAB])
    assert cpu_slab == slab_of(objs[-1])
    arr = {"interleaved": lambda: interleave(objs, nslabs),
           "sequential": lambda: objs.copy(),
           "reversed": lambda: objs[::-1].copy(),
           "random": lambda: np.random.default_rng(nslabs).permutation(objs)}[order]()
    expect_p, rounds = detached_rounds(arr)
    assert sum(cnt for _, cnt in rounds) == len(arr)
    st = cache.stats
    sa.kmem_cache_free_bulk(cache, len(arr), arr, cpu=0)
    assert arr.tolist() == expect_p                    # permuted in place like the kernel
    d = delta(cache, st)
    fast = sum(cnt for s, cnt in rounds if s == cpu_slab)
    slow = sum(1 for s, _ in rounds if s != cpu_slab)
    assert d.get("free_fastpath", 0) == fast == OBJS
    assert d.get("free_slowpath", 0) == slow
    # each other slab was full: its first chain puts it on the CPU partial list
    assert d.get("cpu_partial_free", 0) == nslabs - 1
    assert cache.live_objects == 0
    assert sorted(cpu_partial_chain(sa, cache)) == sorted({slab_of(a) for a in objs}
                                                          - {cpu_slab})
    sa.validate()


def test_free_bulk_chain_counts_for_two_and_five_slabs(sa, cache):
    """Spelled out: 2 slabs alternating give chains of 3 then 5 (two mismatches skipped);
    5 slabs round-robin give 80 single-object chains (the 3rd mismatch comes first)."""
    two = interleave(bulk(sa, cache, 2 * OBJS), 2)
    assert [c for _, c in detached_rounds(two)[1]] == [3, 5, 5, 5, 5, 5, 3, 1]
    st = cache.stats
    sa.kmem_cache_free_bulk(cache, len(two), two)
    assert delta(cache, st) == {"free_fastpath": 16, "free_slowpath": 4,
                                "cpu_partial_free": 1}
    sa.kmem_cache_shrink(cache)
    assert cache.slabs == 0
    five = interleave(bulk(sa, cache, 5 * OBJS), 5)
    assert [c for _, c in detached_rounds(five)[1]] == [1] * 80
    st = cache.stats
    sa.kmem_cache_free_bulk(cache, len(five), five)
    assert delta(cache, st) == {"free_fastpath": 16, "free_slowpath": 64,
                                "cpu_partial_free": 4}
    sa.validate()


def test_free_bulk_splices_the_chain_in_array_order(sa, cache):
    """One slab, any order: one chain from p[0] (head) to p[-1] (tail) goes in front of
    the CPU freelist, so the next allocations return the array in order."""
    objs = bulk(sa, cache, 10)                     # CPU freelist still holds 6 objects
    rest_head = int(cpu_row(sa, cache)[C_FREELIST])
    arr = np.random.default_rng(1).permutation(objs)
    before = arr.copy()
    st = cache.stats
    sa.kmem_cache_free_bulk(cache, 10, arr)
    assert (arr == before).all()                   # one slab: no swaps
    assert delta(cache, st) == {"free_fastpath": 10}
    again = [sa.kmem_cache_alloc(cache, cpu=0) for _ in range(11)]
    assert again[:10] == before.tolist() and again[10] == rest_head
    sa.validate()


def test_free_bulk_of_zero_objects_changes_nothing(sa, cache):
    objs = bulk(sa, cache, 3)
    snap = snapshot(sa)
    sa.kmem_cache_free_bulk(cache, 0, objs)
    sa.kfree_bulk(0, objs)
    assert_unchanged(sa, snap)


def test_free_bulk_on_another_cpu_frees_into_frozen_and_partial_slabs(sa, cache):
    objs = bulk(sa, cache, 2 * OBJS, cpu=0)          # slab 2 is CPU 0's frozen slab
    st = cache.stats
    sa.kmem_cache_free_bulk(cache, len(objs), objs.copy(), cpu=1)
    d = delta(cache, st)
    # two chains, both through __slab_free on CPU 1: the frozen slab, and the full one
    assert d == {"free_slowpath": 2, "free_frozen": 1, "cpu_partial_free": 1}
    assert cpu_partial_chain(sa, cache, cpu=1) == [slab_of(objs[0])]
    assert cache.stats_per_cpu()[1].sum() == sum(d.values())
    sa.validate()


# ---- misuse: checked before anything changes ----------------------------------------------
@pytest.fixture
def world(sa, cache):
    other = sa.kmem_cache_create("other", 256, flags=SLAB_HWCACHE_ALIGN)
    objs = bulk(sa, cache, 40)
    gone = sa.kmem_cache_alloc(cache, cpu=0)
    sa.kmem_cache_free(cache, gone, cpu=0)
    free_page = sa.nr_pages - 100
    bad = {
        "free page": (free_page * 4096 + 64, numslab.BadAddressError, "not on a slab page"),
        "outside": (1 << 40, numslab.BadAddressError, "outside the arena"),
        "null": (0, numslab.BadAddressError, "outside the arena"),
        "misaligned": (int(objs[5]) + 8, numslab.BadAddressError, "not the start"),
        "other cache": (sa.kmem_cache_alloc(other), numslab.WrongCacheError,
                        "from other"),
        "kmalloc": (sa.kmalloc(200), numslab.WrongCacheError, "kmalloc-256"),
        "large kmalloc": (sa.kmalloc(20000), numslab.BadAddressError, "large kmalloc"),
        "inside large": (sa.kmalloc(20000) + 4096, numslab.BadAddressError,
                         "inside a large"),
        "already free": (gone, numslab.DoubleFreeError, "double free"),
    }
    assert sa.state.pg_flags[free_page] & (PG_SLAB | PG_HEAD) == 0
    return objs, bad


@pytest.mark.parametrize("kind", ["free page", "outside", "null", "misaligned", "other cache",
                                  "kmalloc", "large kmalloc", "inside large",
                                  "already free"])
@pytest.mark.parametrize("at", [0, 17, 39])
def test_free_bulk_misuse_names_the_element_and_changes_nothing(sa, cache, world, kind, at):
    objs, bad = world
    addr, exc, text = bad[kind]
    arr = objs.copy()
    arr[at] = addr
    snap = snapshot(sa)
    with pytest.raises(exc, match=rf"element {at}\b.*{text}"):
        sa.kmem_cache_free_bulk(cache, len(arr), arr)
    assert_unchanged(sa, snap)
    arr_copy = arr.copy()
    with pytest.raises(exc, match=rf"element {at}\b"):
        sa.kmem_cache_free_array(cache, len(arr), arr)
    assert (arr == arr_copy).all()                  # not permuted either
    assert_unchanged(sa, snap)


@pytest.mark.parametrize("size", [8, 24, 100, 192, 700, 1000, 3000, 5000, 12345, 100_000,
                                  999_999, 3_000_000])
def test_free_bulk_checks_the_object_grid_for_any_size(sa, size):
    """Every offset that is not a multiple of slab_size, or lies past the last object of
    the slab, is refused; every real object is accepted (large, odd slab sizes too)."""
    c = sa.kmem_cache_create(f"g{size}", size)
    per, stride = c.objs_per_slab, c.slab_size
    objs = bulk(sa, c, min(per, 40))
    base = int(objs[0]) & ~((4096 << c.order) - 1)
    assert (int(objs[0]) - base) % stride == 0
    bad = {int(objs[-1]) + d for d in (1, 8, stride // 2 & ~7, stride - 8) if 0 < d < stride}
    if per * stride + 8 <= 4096 << c.order:
        bad.add(base + per * stride)                      # the unused tail of the slab
    snap = snapshot(sa)
    for addr in sorted(bad):
        arr = objs.copy()
        arr[-1] = addr
        with pytest.raises(numslab.BadAddressError, match=rf"element {len(arr) - 1}\b"):
            sa.kmem_cache_free_bulk(c, len(arr), arr)
        with pytest.raises(numslab.BadAddressError, match="not the start of an object"):
            sa.kmem_cache_free(c, addr)
    assert_unchanged(sa, snap)
    sa.kmem_cache_free_bulk(c, len(objs), objs.copy())
    assert c.live_objects == 0
    sa.validate()


@pytest.mark.parametrize("first, second", [(0, 1), (3, 30), (38, 39), (0, 39)])
def test_free_bulk_duplicate_in_batch_is_a_double_free_at_the_second(sa, cache, world,
                                                                       first, second):
    objs, _ = world
    arr = objs.copy()
    arr[second] = arr[first]
    snap = snapshot(sa)
    with pytest.raises(numslab.DoubleFreeError, match=rf"element {second}\b"):
        sa.kmem_cache_free_bulk(cache, len(arr), arr)
    assert_unchanged(sa, snap)
    with pytest.raises(numslab.DoubleFreeError, match=rf"element {second}\b"):
        sa.kfree_bulk(len(arr), arr)
    assert_unchanged(sa, snap)


def test_free_bulk_array_checks(sa, cache, world):
    objs, _ = world
    snap = snapshot(sa)
    with pytest.raises(numslab.InvalidSizeError, match=r"count 41 is larger than the array "
                                                       r"\(40 entries\)$"):
        sa.kmem_cache_free_bulk(cache, 41, objs)
    with pytest.raises(numslab.InvalidSizeError, match="count 41 is larger than the array"):
        sa.kfree_bulk(41, objs)
    # the message says what is wrong (before: "not ndarray int64 (40,)" for a read-only one)
    for arr, fault in ((objs.astype(np.int32), "not an int32 ndarray of shape (40,)"),
                       (objs.astype(np.uint64), "not a uint64 ndarray"),
                       (objs.tolist(), "not a list"),
                       (5, "not an int"),          # (was "not a int")
                       (None, "not None"),         # (was "not a NoneType")
                       (np.repeat(objs, 2)[::2], "not a non-contiguous ndarray"),
                       (objs.reshape(5, 8), "not a 2-D ndarray of shape (5, 8)"),
                       (objs.astype(np.float64), "not a float64 ndarray")):
        with pytest.raises(numslab.SlabError, match="writable contiguous 1-D int64") as e:
            sa.kmem_cache_free_bulk(cache, 5, arr)
        assert fault in str(e.value)
        with pytest.raises(numslab.SlabError, match="writable contiguous 1-D int64"):
            sa.kfree_bulk(5, arr)
    ro = objs.copy()
    ro.flags.writeable = False
    with pytest.raises(numslab.SlabError, match="not a read-only ndarray of shape"):
        sa.kmem_cache_free_bulk(cache, 5, ro)
    with pytest.raises(numslab.InvalidSizeError):
        sa.kmem_cache_free_bulk(cache, -1, objs.copy())
    with pytest.raises(numslab.InvalidSizeError):
        sa.kmem_cache_free_bulk(cache, 2.0, objs)
    with pytest.raises(numslab.WrongCacheError):
        sa.kmem_cache_free_bulk(None, 1, objs)
    assert_unchanged(sa, snap)


def test_free_bulk_with_a_destroyed_or_foreign_cache_is_refused(sa, cache):
    objs = bulk(sa, cache, 4)
    gone = sa.kmem_cache_create("gone", 64)
    sa.kmem_cache_destroy(gone)
    other_sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=1, memory="4M")
    foreign = other_sa.kmem_cache_create("b256", 256, flags=SLAB_HWCACHE_ALIGN)
    snap = snapshot(sa)
    for c in (gone, foreign):
        with pytest.raises(numslab.WrongCacheError):
            sa.kmem_cache_free_bulk(c, 4, objs)
    assert_unchanged(sa, snap)


# ---- kfree_bulk -----------------------------------------------------------------------------
KSIZES = [8, 24, 64, 100, 200, 500, 1000, 3000, 5000, 8192, 8193, 20000, 70000]


def large_pages(size):
    return 1 << max(0, (size - 1).bit_length() - 12)


def test_kfree_bulk_frees_objects_of_many_caches_and_large_kmallocs(sa):
    base = {c.name: c.live_objects for c in sa.kmalloc_caches}
    rng = np.random.default_rng(3)
    sizes = [int(s) for s in rng.choice(KSIZES, 120)]
    addrs = np.array([sa.kmalloc(s) for s in sizes], np.int64)
    assert addrs.all()
    large = sum(large_pages(s) for s in sizes if s > 8192)
    assert large > 0
    pages = free_total(sa)
    arr = addrs.copy()
    sa.kfree_bulk(len(arr), arr)
    assert sorted(arr.tolist()) == sorted(addrs.tolist())   # a permutation of the input
    assert {c.name: c.live_objects for c in sa.kmalloc_caches} == base
    assert free_total(sa) == pages + large           # large blocks went back whole
    sa.validate()           # (never through the sheaves: test_fidelity70's kfree_bulk test)


def test_kfree_bulk_duplicate_large_kmalloc_is_a_double_free(sa):
    k64, big, k700, big2 = sa.kmalloc(64), sa.kmalloc(20000), sa.kmalloc(700), \
        sa.kmalloc(9000)
    for arr, dup_at in (([k64, big, k700, big2, big], 4),
                        ([big, k64, big, k700, big2], 2),
                        ([big2, big2], 1)):
        arr = np.array(arr, np.int64)
        snap = snapshot(sa)
        with pytest.raises(numslab.DoubleFreeError, match=rf"element {dup_at}\b"):
            sa.kfree_bulk(len(arr), arr)
        assert_unchanged(sa, snap)                     # nothing freed, large flags back
    for a in (k64, big, k700, big2):                   # and all of them still free fine
        sa.kfree(a)
    sa.validate()


def test_kfree_bulk_rejects_a_freed_large_kmalloc_and_zero_size_ptr(sa):
    a, b = sa.kmalloc(20000), sa.kmalloc(64)
    sa.kfree(a)
    snap = snapshot(sa)
    with pytest.raises(numslab.BadAddressError, match="element 1"):
        sa.kfree_bulk(2, np.array([b, a], np.int64))
    with pytest.raises(numslab.BadAddressError, match="element 0"):
        sa.kfree_bulk(2, np.array([numslab.ZERO_SIZE_PTR, b], np.int64))
    assert_unchanged(sa, snap)


# ---- the array API (Lameter's RFC, January 2015) ------------------------------------------
def array(sa, c, nr, flags, cpu=0, length=None, gfp=GFP_KERNEL):
    out = np.full(length or nr, SENTINEL, np.int64)
    got = sa.kmem_cache_alloc_array(c, gfp, nr, out, flags=flags, cpu=cpu)
    assert (out[got:] == SENTINEL).all()
    return got, out[:got].copy()


def make_partials(sa, c):
    """CPU 0 partial list S3(10 free) -> S2(5) -> S1(3); node list S6(2), S4(4), S5(6)
    (``kmem_cache_shrink`` puts the slab with the fewest free objects first)."""
    objs = bulk(sa, c, 7 * OBJS).reshape(7, OBJS)
    slabs = [slab_of(row[0]) for row in objs]
    freed = {}
    for s, k in ((3, 4), (4, 6), (5, 2)):              # S4, S5, S6 through CPU 1
        freed[s] = objs[s, :k].tolist()
        for a in freed[s]:
            sa.kmem_cache_free(c, a, cpu=1)
    sa.kmem_cache_shrink(c)
    for s, k in ((0, 3), (1, 5), (2, 10)):             # S1, S2, S3 through CPU 0
        freed[s] = objs[s, :k].tolist()
        for a in freed[s]:
            sa.kmem_cache_free(c, a, cpu=0)
    assert cpu_partial_chain(sa, c) == [slabs[2], slabs[1], slabs[0]]
    assert node_partial(c) == [slabs[5], slabs[3], slabs[4]]
    assert [free_count(sa, s) for s in slabs] == [3, 5, 10, 4, 6, 2, 0]
    assert c.partial == 3 and c.cpu_slabs == 3
    assert c.slabs_cpu_partial == "24(3) C0=24(3)"
    assert int(cpu_row(sa, c)[C_SLAB]) == NIL
    return slabs, freed


@pytest.mark.parametrize("nr, taken", [
    (25, [2, 1, 0, 5, 3]),        # all three CPU partials, then S6 and S4; S5 (6) > 1
    (100, [2, 1, 0, 5, 3, 4]),    # everything
    (18, [2, 1, 0]),              # CPU list only; S6 (2) > 0 left
    (20, [2, 1, 0, 5]),
    (8, [5, 3]),                  # S3 (10) does not fit: straight to the node list
    (12, [2, 5]),                 # S3, then S2 (5) > 2: the node list: S6 (2) fits
    (1, []),
])
def test_array_partial_takes_whole_slabs_while_they_fit(sa, cache, nr, taken):
    slabs, freed = make_partials(sa, cache)
    st = cache.stats
    got, out = array(sa, cache, nr, PARTIAL)
    want = []
    for i in taken:                                    # each slab's free list: LIFO of frees
        want += freed[i][::-1]
    assert out.tolist() == want and got == len(want)
    assert delta(cache, st) == ({"alloc_array_partial": got} if got else {})
    flags = sa.state.pg_flags
    for i in taken:                                    # now full and on no list
        s = slabs[i]
        assert free_count(sa, s) == 0 and sa.state.sl_freelist[s] == 0
        assert not flags[s] & (PG_CPU_PARTIAL | PG_NODE_PARTIAL | PG_FROZEN)
    left_cpu = [slabs[i] for i in (2, 1, 0) if i not in taken]
    left_node = [slabs[i] for i in (5, 3, 4) if i not in taken]
    assert cpu_partial_chain(sa, cache) == left_cpu
    assert node_partial(cache) == left_node
    assert cache.partial == len(left_node) and cache.cpu_slabs == len(left_cpu)
    n = len(left_cpu)
    assert cache.slabs_cpu_partial == (f"{n * 8}({n}) C0={n * 8}({n})" if n else "0(0)")
    assert cache.live_objects == 7 * OBJS - 30 + got
    sa.validate()
    sa.kmem_cache_free_array(cache, got, out.copy())
    assert cache.live_objects == 7 * OBJS - 30
    sa.validate()


def test_array_partial_ignores_other_cpus_and_other_nodes(sa2):
    c = sa2.kmem_cache_create("p", 256, flags=SLAB_HWCACHE_ALIGN)
    per = c.objs_per_slab
    objs = bulk(sa2, c, 3 * per, cpu=2)                # node 1 slabs
    sa2.kmem_cache_free(c, int(objs[0]), cpu=2)        # CPU 2's partial list
    sa2.kmem_cache_free(c, int(objs[per]), cpu=3)      # CPU 3's partial list
    got, _ = array(sa2, c, 50, PARTIAL, cpu=0)         # CPU 0, node 0: nothing there
    assert got == 0
    got, out = array(sa2, c, 50, PARTIAL, cpu=2)
    assert out.tolist() == [objs[0]]
    sa2.validate()


def test_array_new_carves_whole_fresh_slabs_in_address_order(sa, cache):
    st = cache.stats
    got, out = array(sa, cache, 100, NEW, length=110)
    assert got == 96                                   # 6 whole slabs; 4 short
    assert delta(cache, st) == {"alloc_array_new": 96, "alloc_slab": 6}
    groups = out.reshape(6, OBJS)
    for g in groups:                                   # each slab in its allocation order
        assert (g == new_slab_order(cache, g[0])).all()
    slabs = [slab_of(g[0]) for g in groups]
    assert len(set(slabs)) == 6
    for s in slabs:                                    # born full, no free list, no list
        assert sa.state.sl_inuse[s] == OBJS and sa.state.sl_freelist[s] == 0
        assert not sa.state.pg_flags[s] & (PG_CPU_PARTIAL | PG_NODE_PARTIAL | PG_FROZEN)
    assert cache.slabs == 6 and cache.partial == 0 and cache.cpu_slabs == 0
    assert cache.live_objects == 96 and all(is_live(sa, a) for a in out)
    sa.validate()
    sa.kmem_cache_free_array(cache, got, out.copy())
    assert cache.live_objects == 0
    sa.validate()


@pytest.mark.parametrize("nr, got", [(15, 0), (16, 0), (17, 16), (31, 16), (32, 32),
                                     (33, 32), (100, 96)])
def test_array_new_only_takes_whole_slabs(sa, cache, nr, got):
    """Only more than a slab's worth calls NEW (even when asked for it alone), and NEW
    only takes whole slabs."""
    n, out = array(sa, cache, nr, NEW)
    assert n == got and cache.stats["alloc_array_new"] == got
    assert cache.slabs == got // OBJS
    sa.validate()


def test_array_new_runs_the_constructor_on_every_object(sa):
    def ctor(mem, addr):
        mem[addr:addr + 4] = (0xC0, 0xFF, 0xEE, 0x11)
    c = sa.kmem_cache_create("ctor", 128, ctor=ctor)
    got, out = array(sa, c, 3 * c.objs_per_slab, NEW)
    assert got == 3 * c.objs_per_slab
    assert all(bytes(sa.memory[a:a + 4]) == b"\xc0\xff\xee\x11" for a in out)
    sa.validate()


def test_array_flags_zero_uses_new_only_beyond_one_slab(sa, cache):
    st = cache.stats
    got, out = array(sa, cache, 16, 0)                 # exactly one slab's worth: no NEW
    assert got == 16
    d = delta(cache, st)
    assert d.get("alloc_array_new", 0) == 0 and d["alloc_array_full_count"] == 16
    assert d.get("alloc_array_partial", 0) == 0 and d.get("alloc_array_local", 0) == 0
    sa.kmem_cache_free_array(cache, got, out)
    sa.kmem_cache_shrink(cache)
    assert cache.slabs == 0

    c = sa.kmem_cache_create("fresh", 256, flags=SLAB_HWCACHE_ALIGN)
    st = c.stats
    got, out = array(sa, c, 17, 0)                     # one NEW slab, then one object
    assert got == 17
    d = delta(c, st)
    assert (d["alloc_array_new"], d.get("alloc_array_local", 0),
            d["alloc_array_full_count"]) == (16, 0, 1)
    assert (out[:16] == new_slab_order(c, out[0])).all()
    cpu_slab = new_slab_order(c, out[16])              # the object came from a new CPU slab
    st = c.stats
    got, out = array(sa, c, 40, 0)                     # NEW 32, then LOCAL 8 of 15
    assert got == 40
    d = delta(c, st)
    assert (d.get("alloc_array_partial", 0), d["alloc_array_new"], d["alloc_array_local"],
            d.get("alloc_array_full_count", 0)) == (0, 32, 8, 0)
    free = int(cpu_row(sa, c)[C_FREELIST])
    assert (out[-8:] == cpu_slab[1:9]).all() and free == cpu_slab[9]   # LOCAL walked it
    sa.validate()


def test_array_local_takes_the_cpu_freelist(sa, cache):
    first = sa.kmem_cache_alloc(cache, cpu=0)          # CPU freelist: 15 objects
    st = cache.stats
    order = new_slab_order(cache, first)
    got, out = array(sa, cache, 10, LOCAL)
    assert got == 10 and (out == order[1:11]).all()
    got2, out2 = array(sa, cache, 10, LOCAL)
    assert got2 == 5 and (out2 == order[11:16]).all()
    assert array(sa, cache, 10, LOCAL)[0] == 0
    assert array(sa, cache, 10, LOCAL, cpu=1)[0] == 0  # another CPU holds nothing
    assert delta(cache, st) == {"alloc_array_local": 15}
    assert int(cpu_row(sa, cache)[C_FREELIST]) == 0
    assert cache.live_objects == 16
    sa.validate()


def test_array_full_count_tops_up_one_by_one(sa, cache):
    st = cache.stats
    got, out = array(sa, cache, 20, FULL)
    assert got == 20 and len(set(out.tolist())) == 20
    assert delta(cache, st) == {"alloc_array_full_count": 20, "alloc_fastpath": 18,
                                "alloc_slowpath": 2, "alloc_slab": 2,
                                "deactivate_bypass": 1}
    sa.validate()


def test_array_partial_then_full_count(sa, cache):
    make_partials(sa, cache)
    st = cache.stats
    got, out = array(sa, cache, 40, PARTIAL | FULL)
    assert got == 40
    d = delta(cache, st)
    assert d["alloc_array_partial"] == 30 and d["alloc_array_full_count"] == 10
    assert cache.partial == 0 and cache.cpu_slabs == 1  # a new CPU slab for the top-up
    sa.validate()


@pytest.mark.parametrize("nr", [1, 7, 16, 17, 50, 100, 333])
def test_array_flags_zero_gives_exactly_nr(sa, cache, nr):
    bulk(sa, cache, 5)                                 # something on the CPU freelist
    got, out = array(sa, cache, nr, 0)
    assert got == nr and len(set(out.tolist())) == nr
    st = cache.stats
    assert sum(st[k] for k in ("alloc_array_partial", "alloc_array_new",
                               "alloc_array_local", "alloc_array_full_count")) == nr
    assert cache.live_objects == 5 + nr
    sa.validate()
    sa.kmem_cache_free_array(cache, nr, out)
    assert cache.live_objects == 5
    sa.validate()


def test_array_without_full_count_may_come_back_short(sa, cache):
    got, out = array(sa, cache, 40, PARTIAL | LOCAL)    # fresh cache: nothing to take
    assert got == 0 and cache.slabs == 0


def test_array_errors(sa, cache):
    out = np.empty(8, np.int64)
    snap = snapshot(sa)
    for flags in (1, 0x80000000, -1, 1 << 40, "new", None, PARTIAL | 4):
        with pytest.raises(numslab.SlabError, match="unknown flags"):
            sa.kmem_cache_alloc_array(cache, GFP_KERNEL, 4, out, flags=flags)
    with pytest.raises(numslab.InvalidSizeError, match="count 9 is larger than the array"):
        sa.kmem_cache_alloc_array(cache, GFP_KERNEL, 9, out)
    with pytest.raises(numslab.SlabError, match="int64"):
        sa.kmem_cache_alloc_array(cache, GFP_KERNEL, 4, out.astype(np.int32))
    assert_unchanged(sa, snap)


def test_array_flags_may_be_numpy_integers(sa, cache):
    """A NumPy integer is a flag as every other argument's integer is (it was "unknown flags")."""
    out = np.empty(8, np.int64)
    for t in (np.int64, np.uint64, np.int32, np.uint32):
        got = sa.kmem_cache_alloc_array(cache, GFP_KERNEL, 8, out, t(NEW | FULL))
        assert got == 8 and cache.live_objects == 8
        sa.kmem_cache_free_array(cache, got, out)
    snap = snapshot(sa)
    for flags in (np.int64(1), np.uint64(1 << 40), np.bool_(True), True):
        with pytest.raises(numslab.InvalidArgumentError, match="unknown flags"):
            sa.kmem_cache_alloc_array(cache, GFP_KERNEL, 4, out, flags)
    assert_unchanged(sa, snap)


def test_array_new_when_memory_runs_out_returns_what_it_got():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("x", 256, flags=SLAB_HWCACHE_ALIGN)
    pages = free_total(sa)
    out = np.empty(pages * 16 + 64, np.int64)
    got = sa.kmem_cache_alloc_array(c, GFP_KERNEL | NOWARN, len(out), out, flags=NEW)
    assert got == pages * c.objs_per_slab and free_total(sa) == 0
    assert sa.kmem_cache_alloc_array(c, GFP_KERNEL | NOWARN, 10, out, flags=FULL) == 0
    sa.validate()
    sa.kmem_cache_free_array(c, got, out)
    assert c.live_objects == 0
    sa.validate()


# ---- a random mix against a reference model -----------------------------------------------
MODES = [0, PARTIAL, NEW, LOCAL, FULL, PARTIAL | NEW, PARTIAL | FULL, NEW | LOCAL | FULL,
         LOCAL | FULL]


class BatchModel(RuleBasedStateMachine):
    """One cache (with or without sheaves) driven by bulk, array and single operations;
    the model is the set of live objects and the byte each one was filled with."""

    @initialize(size=st.sampled_from([64, 192, 256, 700]),
                sheaves=st.sampled_from([0, 0, 4, 13]), cpus=st.integers(1, 3),
                nodes=st.integers(1, 2))
    def setup(self, size, sheaves, cpus, nodes):
        self.sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=max(cpus, nodes), nr_nodes=nodes,
                                        memory="8M", seed=5)
        self.c = self.sa.kmem_cache_create("m", size, sheaf_capacity=sheaves)
        self.cap = sheaves
        self.per = self.c.objs_per_slab
        self.live: dict[int, int] = {}
        self.sheaves: dict[int, int] = {}      # prefilled sheaf -> objects left in it
        self.fill = 0

    def _take(self, objs, zero=False):
        for a in objs:
            a = int(a)
            assert a not in self.live and a > 0
            if zero:
                assert not self.sa.memory[a:a + self.c.object_size].any()
            self.fill = self.fill % 255 + 1
            self.sa.memory[a:a + self.c.object_size] = self.fill
            self.live[a] = self.fill

    def _pick(self, seed, frac):
        rng = np.random.default_rng(seed)
        addrs = np.array(sorted(self.live), np.int64)
        k = max(1, int(len(addrs) * frac))
        return rng.permutation(addrs)[:k]

    @precondition(lambda self: len(getattr(self, "live", ())) < 600)
    @rule(n=st.integers(0, 70), cpu=st.integers(0, 2), zero=st.booleans())
    def alloc_bulk(self, n, cpu, zero):
        out = np.full(n + 2, SENTINEL, np.int64)
        got = self.sa.kmem_cache_alloc_bulk(self.c, GFP_KERNEL | (ZERO if zero else 0), n,
                                            out, cpu=cpu % self.sa.nr_cpus)
        assert got == n and (out[n:] == SENTINEL).all()
        assert len(set(out[:n].tolist())) == n
        self._take(out[:n], zero)

    @precondition(lambda self: len(getattr(self, "live", ())) < 600)
    @rule(n=st.integers(0, 70), mode=st.sampled_from(MODES), cpu=st.integers(0, 2))
    def alloc_array(self, n, mode, cpu):
        out = np.full(n + 2, SENTINEL, np.int64)
        got = self.sa.kmem_cache_alloc_array(self.c, GFP_KERNEL, n, out, flags=mode,
                                             cpu=cpu % self.sa.nr_cpus)
        assert 0 <= got <= n and (out[got:] == SENTINEL).all()
        if mode == 0 or mode & FULL:
            assert got == n
        if mode == NEW:
            assert got == (n // self.per * self.per if n > self.per else 0)
        self._take(out[:got])

    @precondition(lambda self: len(getattr(self, "live", ())) < 600)
    @rule(n=st.integers(1, 10), cpu=st.integers(0, 2))
    def alloc_single(self, n, cpu):
        self._take([self.sa.kmem_cache_alloc(self.c, cpu=cpu % self.sa.nr_cpus)
                    for _ in range(n)])

    @precondition(lambda self: getattr(self, "live", None))
    @rule(seed=st.integers(0, 2 ** 32), frac=st.floats(0.01, 1.0), cpu=st.integers(0, 2),
          how=st.sampled_from(["bulk", "array", "kfree_bulk", "single"]))
    def free_some(self, seed, frac, cpu, how):
        arr = self._pick(seed, frac)
        cpu %= self.sa.nr_cpus
        expect = sorted(arr.tolist())
        if how == "bulk":
            self.sa.kmem_cache_free_bulk(self.c, len(arr), arr, cpu=cpu)
        elif how == "array":
            self.sa.kmem_cache_free_array(self.c, len(arr), arr, cpu=cpu)
        elif how == "kfree_bulk":
            self.sa.kfree_bulk(len(arr), arr, cpu=cpu)
        else:
            for a in arr:
                self.sa.kmem_cache_free(self.c, int(a), cpu=cpu)
        assert sorted(arr.tolist()) == expect          # permuted, never rewritten
        for a in expect:
            del self.live[a]

    @precondition(lambda self: getattr(self, "live", None))
    @rule(seed=st.integers(0, 2 ** 32), frac=st.floats(0.01, 1.0))
    def bad_batch_changes_nothing(self, seed, frac):
        arr = self._pick(seed, frac)
        arr = np.append(arr, arr[len(arr) // 2])       # a duplicate at the end
        snap = snapshot(self.sa)
        with pytest.raises(numslab.DoubleFreeError, match=rf"element {len(arr) - 1}\b"):
            self.sa.kmem_cache_free_bulk(self.c, len(arr), arr)
        assert_unchanged(self.sa, snap)

    @rule()
    def shrink(self):
        self.sa.kmem_cache_shrink(self.c)

    @precondition(lambda self: getattr(self, "cap", 0) and len(self.sheaves) < 4)
    @rule(size=st.integers(0, 20), cpu=st.integers(0, 2))
    def prefill(self, size, cpu):
        s = self.sa.kmem_cache_prefill_sheaf(self.c, GFP_KERNEL, size,
                                             cpu=cpu % self.sa.nr_cpus)
        assert s and s not in self.sheaves
        n = self.sa.kmem_cache_sheaf_size(s)
        assert n >= size and self.sa.sheaf_capacity_of(s) == max(size, self.cap)
        self.sheaves[s] = n

    @precondition(lambda self: getattr(self, "sheaves", None))
    @rule(pick=st.integers(0, 10), n=st.integers(1, 8), zero=st.booleans())
    def alloc_from_sheaf(self, pick, n, zero):
        s = sorted(self.sheaves)[pick % len(self.sheaves)]
        for _ in range(n):
            a = self.sa.kmem_cache_alloc_from_sheaf(self.c, GFP_KERNEL | (ZERO if zero else 0),
                                                    s)
            if not self.sheaves[s]:
                assert a == 0
                break
            self.sheaves[s] -= 1
            self._take([a], zero)
        assert self.sa.kmem_cache_sheaf_size(s) == self.sheaves[s]

    @precondition(lambda self: getattr(self, "sheaves", None))
    @rule(pick=st.integers(0, 10), size=st.integers(0, 20), cpu=st.integers(0, 2))
    def refill_sheaf(self, pick, size, cpu):
        s = sorted(self.sheaves)[pick % len(self.sheaves)]
        new = self.sa.kmem_cache_refill_sheaf(self.c, GFP_KERNEL, s, size,
                                              cpu=cpu % self.sa.nr_cpus)
        assert new
        del self.sheaves[s]
        self.sheaves[new] = self.sa.kmem_cache_sheaf_size(new)
        assert self.sheaves[new] >= size

    @precondition(lambda self: getattr(self, "sheaves", None))
    @rule(pick=st.integers(0, 10), cpu=st.integers(0, 2))
    def return_sheaf(self, pick, cpu):
        s = sorted(self.sheaves)[pick % len(self.sheaves)]
        self.sa.kmem_cache_return_sheaf(self.c, GFP_KERNEL, s, cpu=cpu % self.sa.nr_cpus)
        del self.sheaves[s]

    @invariant()
    def matches_the_model(self):
        if not hasattr(self, "sa"):
            return
        assert self.c.live_objects == len(self.live)
        mem = self.sa.memory
        size = self.c.object_size
        for a, fill in self.live.items():
            assert (mem[a:a + size] == fill).all()
        self.sa.validate()

    def teardown(self):
        if not hasattr(self, "sa"):
            return
        for s in list(self.sheaves):
            self.sa.kmem_cache_return_sheaf(self.c, GFP_KERNEL, s)
        arr = np.array(sorted(self.live), np.int64)
        self.sa.kmem_cache_free_bulk(self.c, len(arr), arr)
        assert self.c.live_objects == 0
        self.sa.kmem_cache_shrink(self.c)
        self.sa.kmem_cache_shrink(self.c)
        assert self.c.slabs == 0
        self.sa.kmem_cache_destroy(self.c)
        self.sa.validate()


BatchModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30,
                                        deadline=None)
TestBatchModel = BatchModel.TestCase


# ---- numslab.jit's batch calls, as a user's @njit code makes them ----------------------------
@numba.njit
def jit_alloc(h, cid, nr, a):
    return numslab.jit.kmem_cache_alloc_bulk(h, cid, nr, a)


@numba.njit
def jit_array(h, cid, nr, a):
    return numslab.jit.kmem_cache_alloc_array(h, cid, nr, a)


@numba.njit
def jit_free(h, cid, nr, a):
    numslab.jit.kmem_cache_free_bulk(h, cid, nr, a)


@numba.njit
def jit_kfree(h, nr, a):
    numslab.jit.kfree_bulk(h, nr, a)


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("gen", ["6.18", "7.0", "7.1"])
def test_a_batch_free_refuses_an_array_inside_an_object_it_frees(gen, debug):
    """A batch free's address array may lie in the arena (a view of ``sa.memory``, or of
    ``numslab.jit.arena``); if one of the objects freed holds part of it, freeing that
    object writes into the array (its free pointer; poison on a debug cache) while the free
    still reads it, and the free then followed those words as addresses: a segfault, or a
    corrupted free list. Every path now refuses the batch first, naming that element, with
    nothing changed; an array inside a live object that the batch does not free is fine."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=gen, seed=0)
    flags = numslab.SLAB_CONSISTENCY_CHECKS | numslab.SLAB_POISON if debug else 0
    c = sa.kmem_cache_create("c", 128, flags=flags)
    out = np.zeros(200, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 200, out) == 200
    sel = out[::17][:11].tolist()
    holder, other = sel[10], int(out[1])
    objs = sa.memory[holder:holder + 8 * 11].view(np.int64)

    objs[:] = sel
    snap = snapshot(sa)
    for call in (lambda: sa.kmem_cache_free_bulk(c, 11, objs), lambda: sa.kfree_bulk(11, objs),
                 lambda: sa.kmem_cache_free_array(c, 11, objs),
                 lambda: jit_free(sa.handle, c.id, 11, objs),
                 lambda: jit_kfree(sa.handle, 11, objs)):
        with pytest.raises(numslab.InvalidArgumentError,
                           match=f"(element 10: {holder:#x} holds the array|element 10 of the)"):
            call()
        assert (objs == sel).all()
        assert_unchanged(sa, snap)
    objs = sa.memory[other:other + 8 * 10].view(np.int64)   # a live object not freed
    objs[:] = sel[:10]
    sa.kfree_bulk(10, objs)
    assert c.live_objects == 190
    sa.validate()


@pytest.mark.parametrize("gen", numslab.KERNELS)
def test_a_batch_array_over_memory_not_the_users_is_refused(gen):
    """A batch call writes its address array (an allocation the addresses, a free their new
    order, a failed allocation the free pointers of what it gives back) while it reads the
    allocator's words. An array over free objects of the cache made an allocation's own
    writes corrupt the free list it was walking, and the give-back then followed what it had
    written (6.18 with sheaves: a segfault). Every batch call, from Python and from
    ``numslab.jit``, now refuses an array in the arena that is not inside one live
    allocation of the user's, with nothing changed; one inside an object, a large kmalloc or
    pages the user holds is used as before."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=gen)
    c = sa.kmem_cache_create("x", 64, sheaf_capacity=8)
    sheaf = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 4)
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, sheaf)
    objs = np.zeros(64, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 64, objs) == 64
    keep = int(objs[0])
    sa.kmem_cache_free_bulk(c, 63, objs[1:].copy())        # all free but the first
    free_at = int(objs[10])

    def calls(a, n):
        return (lambda: sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, n, a),
                lambda: sa.kmem_cache_alloc_array(c, GFP_KERNEL, n, a),
                lambda: sa.kmem_cache_free_bulk(c, n, a), lambda: sa.kfree_bulk(n, a),
                lambda: jit_alloc(sa.handle, c.id, n, a), lambda: jit_array(sa.handle, c.id, n, a),
                lambda: jit_free(sa.handle, c.id, n, a), lambda: jit_kfree(sa.handle, n, a))

    big = sa.kmalloc(3 * 4096)
    pages = sa.alloc_pages(1)
    over_free = sa.memory[free_at:free_at + 8 * 60].view(np.int64)
    past_keep = sa.memory[keep:keep + 8 * 9].view(np.int64)  # 72 bytes from a 64-byte object
    page_zero = sa.memory[8:8 * 9].view(np.int64)            # the reserved frame 0
    for a in (over_free, past_keep, page_zero):
        a[0] = keep                     # what the frees would free (refused before)
    snap = snapshot(sa)
    for a, n in ((over_free, 60), (past_keep, 9), (page_zero, 8)):
        before = a.copy()
        for call in calls(a, n):
            with pytest.raises(numslab.InvalidArgumentError,
                               match="lies in the arena but not inside one live allocation"):
                call()
            assert (a == before).all()
            assert_unchanged(sa, snap)
    sa.validate()
    for home, n in ((keep, 8), (big, 3 * 512), (pages, 1024)):   # the user's own: used
        a = sa.memory[home:home + 8 * n].view(np.int64)
        assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, n, a) == n
        assert len(set(a.tolist())) == n and home not in a
        sa.kmem_cache_free_bulk(c, n, a)
        assert jit_alloc(sa.handle, c.id, n, a) == n
        jit_free(sa.handle, c.id, n, a)
    sa.kfree(big)
    sa.free_pages(pages, 1)
    sa.kmem_cache_free(c, keep)
    sa.validate()
    assert c.live_objects == 0


@numba.njit
def jit_free_array(h, cid, nr, a):
    numslab.jit.kmem_cache_free_array(h, cid, nr, a)


def twice_calls(sa, c, nr):
    """Every batch free of ``nr`` elements, from Python and from a user's ``@njit`` code, with
    the start of the message each gives for element ``i`` naming the object at ``addr``
    (the rest of the message is :func:`twice_text`'s)."""
    h, cid = sa.handle, c.id
    return [(lambda a: sa.kmem_cache_free_bulk(c, nr, a), rf"^kmem_cache_free_bulk\({c.name}\)"),
            (lambda a: sa.kmem_cache_free_array(c, nr, a), rf"^kmem_cache_free_bulk\({c.name}\)"),
            (lambda a: sa.kfree_bulk(nr, a), "^kfree_bulk"),
            (lambda a: jit_free(h, cid, nr, a), "jit"), (lambda a: jit_free_array(h, cid, nr, a),
                                                        "jit"),
            (lambda a: jit_kfree(h, nr, a), "jit")]


def twice_text(head, i, j, addr, owner=None):
    """The message of a batch free refused because element ``i`` names the object (at
    ``addr``, of cache ``owner``; None: a large kmalloc block) element ``j`` names."""
    if head == "jit":
        cache = f"cache id {owner.id} '{owner.name}', " if owner is not None else ""
        return (rf"^numslab\.jit\.k\w+_(bulk|array): double free within the batch \(two "
                rf"elements name one object; "
                rf"nothing freed\) \(address {addr:#x}, {cache}element {i} of the batch names "
                rf"the same object as element {j}\)$")
    page = rf" \({owner.name}\)" if head == "^kfree_bulk" and owner is not None else ""
    return (rf"{head}: element {i}: {addr:#x}{page}: double free within the batch: element {i} "
            rf"names the same object as element {j}; nothing freed$")


@pytest.mark.parametrize("gen", numslab.KERNELS)
@pytest.mark.parametrize("nr, j, i", [(6, 1, 5), (6, 4, 5), (200, 3, 190), (200, 150, 151)])
def test_an_object_twice_in_one_batch_is_named_so(gen, nr, j, i):
    """A batch free naming one live object twice is refused by the engine's batch check
    with a code of its own (``E_TWICE``), for every caller: from Python and inside ``@njit``
    (``numslab.jit`` said "double free (the object is already free)" of an object the user
    holds, and the facade told it apart in Python), in a batch the CPU's main sheaf takes
    whole or not, the two elements in one run of a page or not; nothing changes, the array
    is not reordered. An object already free before the call still says so."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=gen, seed=1)
    c = sa.kmem_cache_create("b", 256)
    objs = np.zeros(nr, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, nr, objs) == nr
    arr = objs.copy()
    arr[i] = addr = int(objs[j])
    snap = snapshot(sa)
    for call, head in twice_calls(sa, c, nr):
        a = arr.copy()
        with pytest.raises(numslab.DoubleFreeError, match=twice_text(head, i, j, addr, c)):
            call(a)
        assert (a == arr).all()
        assert_unchanged(sa, snap)
    gone = int(objs[i])                 # the object element i named: freed before the call
    sa.kmem_cache_free(c, gone)
    arr = np.delete(objs, i)
    arr[j] = gone                       # an object already free, named twice: at the first
    arr[min(i, nr - 2)] = gone
    snap = snapshot(sa)
    for call, head in twice_calls(sa, c, nr - 1):
        a = arr.copy()
        text = (r"^numslab\.jit\.k\w+_(bulk|array): double free \(the object is already free\)"
                if head == "jit"
                else rf"{head}: element {j}: {gone:#x}.*: double free, the object is already "
                     r"free$")
        with pytest.raises(numslab.DoubleFreeError, match=text) as e:
            call(a)
        assert "within the batch" not in str(e.value)
        assert_unchanged(sa, snap)
    sa.kmem_cache_free_bulk(c, nr - 1, np.delete(objs, i))
    assert c.live_objects == 0
    sa.validate()


@pytest.mark.parametrize("gen", numslab.KERNELS)
def test_a_large_block_twice_in_kfree_bulk_is_named_so(gen):
    """A large kmalloc block named twice in one ``kfree_bulk`` gets the same code as a slab
    object named twice (the check took its first element's block back, so the second read
    as no slab page), from Python and inside ``@njit``; nothing changes."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=gen)
    c = sa.kmem_cache_create("b", 256)
    objs = c.alloc_bulk(3)
    big, other = sa.kmalloc(20000), sa.kmalloc(3 * 4096)
    arr = np.array([objs[0], big, objs[1], other, big, objs[2]], np.int64)
    snap = snapshot(sa)
    for call, head in ((lambda a: sa.kfree_bulk(6, a), "^kfree_bulk"),
                       (lambda a: jit_kfree(sa.handle, 6, a), "jit")):
        a = arr.copy()
        with pytest.raises(numslab.DoubleFreeError, match=twice_text(head, 4, 1, big)):
            call(a)
        assert (a == arr).all()
        assert_unchanged(sa, snap)
    sa.kfree_bulk(4, arr[:4].copy())
    sa.kfree(int(objs[2]))
    assert c.live_objects == 0
    sa.validate()


@pytest.mark.parametrize("gen", numslab.KERNELS)
def test_an_address_inside_a_large_block_taken_earlier_in_the_batch_is_named_so(gen):
    """``kfree_bulk([L, L + 4096])``: the second address is inside the large block the first
    names, as ``kfree_bulk([L + 4096])`` says; it was diagnosed on the state the first
    element's check had changed ("not on a slab page ... free it with free_pages"), from
    Python and inside ``@njit``; nothing changes."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=gen)
    big = sa.kmalloc(20000)
    snap = snapshot(sa)
    for tail in (big + 4096, big + 8):
        arr = np.array([big, tail], np.int64)
        with pytest.raises(numslab.BadAddressError,
                           match=f"element 1: {tail:#x} is inside a large kmalloc block at "
                                 f"{big:#x}, not at its start"):
            sa.kfree_bulk(2, arr.copy())
        with pytest.raises(numslab.SlabError, match=f"{tail:#x}"):
            jit_kfree(sa.handle, 2, arr.copy())
        assert_unchanged(sa, snap)
    sa.kfree(big)
    sa.validate()
