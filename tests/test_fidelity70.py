"""Linux 7.0's sheaf rules where numslab once differed, each test citing the kernel function
it follows (7.0 ``mm/slub.c``): the empty main kept as the spare, the remote batches of a
bulk free, a prefill of no objects, and the sysfs files 7.0 shows."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab import GFP_KERNEL
from numslab.engine.layout import (C_MAIN, C_SPARE, N_NR_EMPTY, N_NR_FULL, SH_SIZE,
                                   SHEAF_HEADER)
from numslab.flags import STAT_ITEMS_7_0

from conftest import assert_unchanged, snapshot

KERNELS = ("7.0", "7.1")


def sheaf_size(sa, sheaf):
    return int(sa._mem[(sheaf >> 3) + SH_SIZE])


def delta(c, before):
    return {k: v - before.get(k, 0) for k, v in c.stats.items() if v != before.get(k, 0)}


def node_of(sa, addr):
    return int(addr) // 4096 // sa.pages_per_node


# ---- __pcs_replace_empty_main ------------------------------------------------------------------
def test_a_refilled_sheaf_keeps_the_empty_main_as_the_spare(sa):
    """``__pcs_replace_empty_main`` (7.0): once a full sheaf is had, ``if
    (pcs->main->size == 0) { if (!pcs->spare) pcs->spare = pcs->main; else
    barn_put_empty_sheaf(barn, pcs->main); pcs->main = full; }`` -- the empty main becomes
    the spare, and the next refill takes that spare (``empty = pcs->spare``), so a CPU
    alternates its two sheaves and the barn gets none."""
    c = sa.kmem_cache_create("alt", 256)
    cap = c.sheaf_capacity
    row = sa.state.cpu[c.id, 0]
    first_main = int(row[C_MAIN])
    st = c.stats
    sa.kmem_cache_alloc(c, cpu=0)                       # main empty, no spare, empty barn
    slabs = -(-cap // c.objs_per_slab)                  # refill_objects: new slabs only
    assert delta(c, st) == {"alloc_fastpath": 1, "alloc_slab": slabs, "sheaf_alloc": 1,
                            "sheaf_refill": cap, "barn_get_fail": 1}
    assert int(row[C_SPARE]) == first_main and sheaf_size(sa, first_main) == 0
    second = int(row[C_MAIN])
    assert sheaf_size(sa, second) == cap - 1
    assert (int(sa.state.node[c.id, 0, N_NR_FULL]), int(sa.state.node[c.id, 0, N_NR_EMPTY])) \
        == (0, 0)
    for _ in range(cap - 1):
        sa.kmem_cache_alloc(c, cpu=0)
    st = c.stats
    sa.kmem_cache_alloc(c, cpu=0)           # main empty again: the empty spare is refilled
    d = delta(c, st)
    assert d["sheaf_refill"] == cap and d["barn_get_fail"] == 1 and "sheaf_alloc" not in d
    assert (int(row[C_MAIN]), int(row[C_SPARE])) == (first_main, second)
    assert sheaf_size(sa, first_main) == cap - 1 and sheaf_size(sa, second) == 0
    assert int(sa.state.node[c.id, 0, N_NR_EMPTY]) == 0
    assert c.live_objects == cap + 1
    sa.validate()


# ---- free_to_pcs_bulk ---------------------------------------------------------------------------
def kernel_scan(p, remote):
    """The scan of ``free_to_pcs_bulk``, naively: ``p[i] = p[--size]`` removes each remote
    object; returns (the local objects left in ``p[:size]``, the remote ones in the order
    the scan meets them, which is ``remote_objects[]``'s order)."""
    p = list(p)
    size, i, met = len(p), 0, []
    while i < size:
        if remote(p[i]):
            met.append(p[i])
            size -= 1
            p[i] = p[size]
        else:
            i += 1
    return p[:size], met


def test_bulk_free_gives_remote_objects_back_in_batches_of_32_in_scan_order(sa2):
    """``free_to_pcs_bulk``: remote objects are gathered in ``remote_objects[PCS_BATCH_MAX]``
    in scan order; a full batch is freed at once (``goto flush_remote``), the last one
    after the local objects, each by ``__kmem_cache_free_bulk`` (whose detached freelist,
    built from the batch's last element down, links one slab's objects in array order and
    ``__slab_free`` splices it before the slab's list). So for one remote slab the free list
    reads the second batch, then the first, each in scan order."""
    c = sa2.kmem_cache_create("r64", 64)
    assert c.objs_per_slab == 64 and sa2.cpu_to_node(0) == 0
    remote = [sa2.kmem_cache_alloc_node(c, GFP_KERNEL, node=1, cpu=0) for _ in range(64)]
    assert {node_of(sa2, a) for a in remote} == {1} and c.partial == 0   # one full slab
    local = [sa2.kmem_cache_alloc(c, cpu=0) for _ in range(5)]
    rng = np.random.default_rng(7)
    arr = np.array(local + remote[:40], np.int64)
    rng.shuffle(arr)
    left, met = kernel_scan(arr.tolist(), lambda a: node_of(sa2, a) == 1)
    assert sorted(left) == sorted(local) and len(met) == 40
    st = c.stats
    sa2.kmem_cache_free_bulk(c, len(arr), arr, cpu=0)
    d = delta(c, st)
    assert d["free_slowpath"] == 40 and d["free_fastpath"] == 5
    assert d["free_add_partial"] == 1                   # the full slab's first free
    main = int(sa2.state.cpu[c.id, 0, C_MAIN])
    w = (main >> 3) + numslab.engine.layout.SH_OBJECTS
    assert sa2._mem[w + sheaf_size(sa2, main) - 5:
                                     w + sheaf_size(sa2, main)].tolist() == left
    # node 1's only partial slab gives its free list back from the head, to CPU 0's
    # node-1 requests (the sheaves are skipped for another node)
    got = [sa2.kmem_cache_alloc_node(c, GFP_KERNEL, node=1, cpu=0) for _ in range(40)]
    assert got == met[32:] + met[:32]
    for a in remote:
        sa2.kmem_cache_free(c, a, cpu=0)
    sa2.validate()


def test_a_last_full_remote_batch_does_not_leak_the_local_objects(sa2):
    """``free_to_pcs_bulk``'s ``flush_remote`` returns when the 32nd remote object was the
    last scanned (``i == size``), never freeing the local objects still in ``p[:size]``: a
    leak, which numslab does not copy (ARCHITECTURE: deliberate deviations). The local
    objects go to the sheaves; the 32 remote ones to their slab."""
    c = sa2.kmem_cache_create("leak", 64)
    remote = [sa2.kmem_cache_alloc_node(c, GFP_KERNEL, node=1, cpu=0) for _ in range(32)]
    local = [sa2.kmem_cache_alloc(c, cpu=0) for _ in range(3)]
    arr = np.array(local + remote, np.int64)            # the 32nd remote is the last scanned
    left, met = kernel_scan(arr.tolist(), lambda a: node_of(sa2, a) == 1)
    assert left == local and len(met) == 32
    st = c.stats
    sa2.kmem_cache_free_bulk(c, len(arr), arr, cpu=0)
    d = delta(c, st)
    assert d["free_slowpath"] == 32 and d["free_fastpath"] == 3
    assert c.live_objects == 0
    sa2.validate()


# ---- kmem_cache_prefill_sheaf ------------------------------------------------------------------
def test_another_cache_s_prefilled_sheaf_is_a_wrong_cache_error_naming_both(sa):
    """A prefilled sheaf used with another cache was a ``BadAddressError``, "not a prefilled
    sheaf of this cache" (a new user's trial): it is a ``WrongCacheError`` naming the cache it
    belongs to, and changes nothing; a sheaf returned already stays a ``BadAddressError``."""
    c, d = sa.kmem_cache_create("mine", 64), sa.kmem_cache_create("other", 64)
    s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 10, cpu=0)
    snap = snapshot(sa)
    says = rf"{s:#x} is a prefilled sheaf of cache 'mine', not of 'other'"
    with pytest.raises(numslab.WrongCacheError, match=says):
        sa.kmem_cache_alloc_from_sheaf(d, GFP_KERNEL, s)
    with pytest.raises(numslab.WrongCacheError, match=says):
        sa.kmem_cache_return_sheaf(d, GFP_KERNEL, s)
    with pytest.raises(numslab.WrongCacheError, match=says):
        sa.kmem_cache_refill_sheaf(d, GFP_KERNEL, s, 20)
    assert_unchanged(sa, snap)
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s, cpu=0)
    for other in (c, d):
        with pytest.raises(numslab.BadAddressError, match="returned already") as e:
            sa.kmem_cache_alloc_from_sheaf(other, GFP_KERNEL, s)
        assert not isinstance(e.value, numslab.WrongCacheError)


def test_a_prefill_of_no_objects_returns_null_and_changes_nothing(sa):
    """``kmem_cache_prefill_sheaf`` (7.0): ``if (unlikely(!size)) return NULL;`` before
    anything else (no stat counted, no sheaf taken or made)."""
    c = sa.kmem_cache_create("p0", 128)
    sa.kmem_cache_alloc(c, cpu=0)
    snap = snapshot(sa)
    assert sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 0, cpu=0) == 0
    assert_unchanged(sa, snap)
    s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 1, cpu=0)
    assert s and sa.kmem_cache_sheaf_size(s) >= 1
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s, cpu=0)


# ---- sysfs ----------------------------------------------------------------------------------------
def test_sysfs_shows_7_0s_files_and_stat_files_in_show_stat_format(sa):
    """``slab_attrs[]`` of 7.0: ``aliases`` (``refcount - 1``: 0, numslab merges no cache),
    ``shrink`` and ``validate`` (their show prints nothing), and with CONFIG_SLUB_STATS one
    file per ``enum stat_item`` printed by ``show_stat``: the sum, then `` C<cpu>=<n>`` for
    each CPU whose count is not 0."""
    c = sa.kmem_cache_create("fs", 128)
    for cpu in (0, 1, 1):
        sa.kmem_cache_alloc(c, cpu=cpu)
    fs = c.sysfs()
    assert (fs["aliases"], fs["shrink"], fs["validate"]) == ("0", "", "")
    per_cpu = c.stats_per_cpu()
    for name, items in STAT_ITEMS_7_0:
        counts = [int(sum(per_cpu[cpu, i] for i in items)) for cpu in range(sa.nr_cpus)]
        expect = str(sum(counts)) + "".join(f" C{cpu}={n}" for cpu, n in enumerate(counts)
                                            if n)
        assert fs[name] == expect, name
    assert fs["alloc_fastpath"] == "3 C0=1 C1=2"
    # init_percpu_sheaves ran on CPU 0 (each CPU's main), then a full sheaf per CPU
    assert fs["sheaf_alloc"] == "4 C0=3 C1=1"
    assert "alloc_cpu_sheaf" not in fs and "cpuslab_flush" not in fs
    old = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel="6.18")    # its 43 items
    o = old.kmem_cache_create("fs", 128)
    old.kmem_cache_alloc(o, cpu=1)
    ofs = o.sysfs()
    assert ofs["alloc_slowpath"] == "1 C1=1" and ofs["cpuslab_flush"] == "0"
    assert all(name in ofs for name in numslab.flags.STAT_NAMES_6_18)


# ---- /proc/slabinfo ----------------------------------------------------------------------------
def naive_free_approx(rows, total, limit=10000):
    """``count_partial_free_approx`` read straight from its C: every slab's free objects
    while the list has at most ``limit``; else half ``limit`` from the head, half from the
    tail, ``mult_frac(x, nr_partial, scanned)``, at most the node's objects."""
    free = [objects - inuse for _, inuse, objects in rows.tolist()]
    if len(free) <= limit:
        return sum(free)
    x = sum(free[:limit // 2]) + sum(free[::-1][:limit // 2])
    q, r = divmod(x, limit)
    return min(q * len(free) + r * len(free) // limit, total)


def test_slabinfo_approximates_free_objects_past_10000_partial_slabs():
    """``get_slabinfo``: ``nr_free += count_partial_free_approx(n)``, which past
    ``MAX_PARTIAL_TO_SCAN`` (10000) partial slabs scans 5000 from the head and 5000 from the
    tail and scales (``mult_frac``); sysfs ``objects`` still counts them all
    (``count_partial(n, count_free)``)."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="128M")
    c = sa.kmem_cache_create("many", 512)
    per = c.objs_per_slab
    assert per == 8 and c.order == 0
    n_slabs = 12000
    objs = np.empty(n_slabs * per, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, len(objs), objs) == len(objs)
    by_slab = objs.reshape(-1, per)          # refill_objects took whole new slabs
    assert (np.unique(by_slab >> 12, axis=1).shape[1] == 1)
    free = np.concatenate([by_slab[:10000, :1].ravel(), by_slab[10000:, :5].ravel()])
    sa.kmem_cache_free_bulk(c, len(free), free.copy())
    sa.kmem_cache_shrink(c)                  # the sheaves flushed, the fullest slabs first
    rows = c.partial_list(0)
    assert len(rows) == n_slabs
    exact = int((rows[:, 2] - rows[:, 1]).sum())
    assert exact == 10000 + 2000 * 5
    approx = naive_free_approx(rows, c.total_objects)
    assert approx != exact                   # the tail's slabs hold more free objects
    line = next(l for l in sa.slabinfo().splitlines() if l.startswith("many "))
    assert int(line.split()[1]) == c.total_objects - approx
    assert c.objects == c.total_objects - exact
    assert int(c.sysfs()["objects"].split()[0]) == c.total_objects - exact


def test_6_18_cpu_slabs_counts_per_node_and_only_cpus_with_a_slab():
    """6.18's ``show_slab_objects(SO_CPU)``: per CPU, ``if (!slab) continue;`` then 1 for
    the CPU slab on its node and the CPU partial list's ``slabs`` on its first slab's node,
    printed as ``total N<node>=<n>``; 7.0 prints ``0`` (no CPU slabs)."""
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=4, nr_nodes=2, memory="16M")
    c = sa.kmem_cache_create("cs", 64)
    objs = [sa.kmem_cache_alloc(c, cpu=0) for _ in range(c.objs_per_slab + 1)]
    assert c.sysfs()["cpu_slabs"] == "1 N0=1"
    sa.kmem_cache_free(c, objs[0], cpu=1)      # a full slab's first free: CPU 1's partial
    assert sa.state.cpu[c.id, 1, numslab.engine.layout.C_SLAB] == -1
    assert c.slabs_cpu_partial == f"{c.objs_per_slab // 2}(1) C1={c.objs_per_slab // 2}(1)"
    assert c.sysfs()["cpu_slabs"] == "1 N0=1"  # CPU 1 has no CPU slab: its list not counted
    b = sa.kmem_cache_alloc(c, cpu=2)          # CPU 2 is on node 1
    assert c.sysfs()["cpu_slabs"] == "2 N0=1 N1=1"
    for a in objs[1:] + [b]:
        sa.kmem_cache_free(c, a)
    sa.validate()


# ---- a debug cache's prefilled sheaves ----------------------------------------------------------
@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_a_debug_cache_gets_oversize_prefilled_sheaves_through_its_checks(gen):
    """``kmem_cache_prefill_sheaf`` (7.0, and 6.18's alike) on a debug cache (``calculate_sheaf_capacity``: 0
    for ``SLAB_DEBUG_FLAGS``): ``size > s->sheaf_capacity``, so an oversize sheaf
    (SHEAF_PREFILL_OVERSIZE, kzalloc'ed, no SHEAF_ALLOC) filled by
    ``__kmem_cache_alloc_bulk``, which for ``kmem_cache_debug(s)`` calls ``___slab_alloc``
    once per object (ALLOC_SLOWPATH each, alloc_debug_processing); ``kmem_cache_return_sheaf``
    flushes it (``sheaf_flush_unused``: SHEAF_FLUSH, ``__kmem_cache_free_bulk``: per
    detached freelist ``free_to_partial_list``; no FREE_SLOWPATH under 7.0, one per chain
    under 6.18, whose ``__slab_free`` counts it before its debug branch) and kfrees it."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=gen)
    c = sa.kmem_cache_create("dbg", 96, flags=numslab.SLAB_CONSISTENCY_CHECKS
                             | numslab.SLAB_RED_ZONE | numslab.SLAB_STORE_USER)
    assert c.sheaf_capacity == 0
    st = c.stats
    s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 5, cpu=0)
    assert s and sa.sheaf_capacity_of(s) == 5 and sa.kmem_cache_sheaf_size(s) == 5
    assert delta(c, st) == {"sheaf_prefill_oversize": 1, "alloc_slowpath": 5, "alloc_slab": 1}
    w = (s >> 3) + numslab.engine.layout.SH_OBJECTS
    held = sa._mem[w:w + 5].tolist()
    assert c.live_objects == 0 and sa.kmem_cache_validate(c) == 0    # active red zones
    sa.validate()
    a = sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s, cpu=0)
    assert a == held[-1] and c.live_objects == 1
    st = c.stats
    assert sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, 5, cpu=0) == s       # capacity 5
    assert delta(c, st) == {"alloc_slowpath": 1}
    held = sa._mem[w:w + 5].tolist()
    st = c.stats
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s, cpu=0)
    slow = {} if gen == "7.0" else {"free_slowpath": 1}     # 6.18's __slab_free: per chain
    assert delta(c, st) == {"sheaf_flush": 5, **slow}
    assert c.live_objects == 1 and sa.kmem_cache_validate(c) == 0 and not sa.slab_reports()
    sa.validate()
    # one detached freelist: spliced head first, so the slab hands them out in array order
    assert [sa.kmem_cache_alloc(c, cpu=0) for _ in range(5)] == held
    if gen == "7.0":
        assert sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 0) == 0
        return
    plain = sa.kmem_cache_create("plain", 96)          # 6.18: no sheaf_capacity, no debug:
    with pytest.raises(numslab.SlabError, match="no sheaves"):  # the kernel's WARN_ON_ONCE
        sa.kmem_cache_prefill_sheaf(plain, GFP_KERNEL, 2)


def test_a_debug_prefill_that_a_check_stops_raises_and_keeps_nothing():
    """A failed ``alloc_debug_processing`` while ``__kmem_cache_alloc_bulk`` fills a debug
    cache's prefilled sheaf: numslab isolates the slab and the call raises
    ``SlabDebugError`` (ARCHITECTURE, slab_debug failures), the objects taken before given
    back (``goto error: __kmem_cache_free_bulk``) and the sheaf kfreed."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M")
    c = sa.kmem_cache_create("dbgf", 96, flags=numslab.SLAB_CONSISTENCY_CHECKS
                             | numslab.SLAB_RED_ZONE)
    objs = [sa.kmem_cache_alloc(c) for _ in range(4)]
    sa.kmem_cache_free(c, objs[1])
    sa.kmem_cache_free(c, objs[2])              # the free list: objs[2], objs[1], ...
    sa.memory[objs[1] + 96] = 0x11              # objs[1]'s right red zone
    sa.kfree(sa.kmalloc(SHEAF_HEADER + 8 * 3))  # the sheaf's kmalloc cache refills its own
    sheaves = len(sa.sheaf_addresses())         # sheaves first (a GFP_KERNEL kzalloc)
    try:
        sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 3)
        raise AssertionError("the check must stop the prefill")
    except numslab.SlabDebugError as e:
        assert "Redzone" in str(e) or e.reports
    assert c.live_objects == 2 and len(sa.sheaf_addresses()) == sheaves
    sa.validate()


def test_returning_a_sheaf_with_bad_gfp_changes_nothing(sa):
    """Bad input raises and changes nothing: the gfp of ``kmem_cache_return_sheaf`` is
    checked before the sheaf leaves the user's list."""
    c = sa.kmem_cache_create("rg", 128)
    s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 3, cpu=0)
    snap = snapshot(sa)
    for bad in (-1, 1 << 40, "GFP_KERNEL", True):
        try:
            sa.kmem_cache_return_sheaf(c, bad, s, cpu=0)
            raise AssertionError("a bad gfp must be refused")
        except numslab.SlabError:
            pass
        assert_unchanged(sa, snap)
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s, cpu=0)


# ---- kfree_bulk: kmem_cache_free_bulk(NULL, ...) -------------------------------------------------
@pytest.mark.parametrize("debug_cache", [False, True])
def test_kfree_bulk_frees_to_the_slabs_and_counts_free_slowpath_per_cache(sa, debug_cache):
    """``kfree_bulk`` is ``kmem_cache_free_bulk(NULL, ...)``: with no cache it never takes the
    sheaves (``free_to_pcs_bulk`` needs ``s``); each detached list goes to its slab through
    ``slab_free_bulk``, which counts FREE_SLOWPATH for its objects on its own cache. The same
    while a slab_debug cache exists (numslab then checks and frees one object at a time)."""
    if debug_cache:
        sa.kmem_cache_create("debugged", 40, flags=numslab.SLAB_RED_ZONE)
    caches = {c.name: c for c in sa.kmalloc_caches}
    sizes = [64] * 10 + [200] * 7 + [20000] + [64] * 3
    addrs = np.array([sa.kmalloc(s, cpu=0) for s in sizes], np.int64)
    want = {"kmalloc-64": 13, "kmalloc-256": 7}
    live = {name: caches[name].live_objects - n for name, n in want.items()}
    before = {name: dict(caches[name].stats) for name in want}
    mains = {name: sheaf_size(sa, sa.state.cpu[caches[name].id, 0, C_MAIN]) for name in want}
    sa.kfree_bulk(len(addrs), addrs, cpu=0)
    for name, n in want.items():
        d = delta(caches[name], before[name])
        assert d.get("free_slowpath", 0) == n, (name, d)
        assert d.get("free_fastpath", 0) == 0, (name, d)          # no sheaf took one
        assert sheaf_size(sa, sa.state.cpu[caches[name].id, 0, C_MAIN]) == mains[name]
    assert {name: caches[name].live_objects for name in want} == live
