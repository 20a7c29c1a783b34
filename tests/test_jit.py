"""``numslab.jit``: the allocator called from users' own ``@njit`` code. Every call goes
through the same kernels as the Python facade, so the same sequence of operations must
leave a twin allocator driven from Python in exactly the same state."""
from __future__ import annotations

import gc
import sys
import warnings

import numba
import numpy as np
import pytest

import numslab
from numslab import GFP_KERNEL, SLAB_HWCACHE_ALIGN, SlabError
from numslab.errors import PAGE_NOTE
from numslab import jit as nj
from numslab.geometry import get_order, kmalloc_cache_size

from conftest import assert_unchanged, snapshot

#: numslab.jit behaves the same on both generations (7.1's two rules of its own: test_nocpu.py).
KERNELS = ("7.0", "6.18")
#: The place a typing guard's TypeError names: the numslab.jit call and the user's line.
SITE = r" \(numslab\.jit\.\w+, called in \w+ at test_jit\.py:\d+\)$"


def named(c):
    """How numslab.jit's errors name cache ``c``: its id and name."""
    return f"cache id {c.id} '{c.name}'"


# ---- user code --------------------------------------------------------------------------------
@numba.njit
def scenario(h, cid, other, n):
    """A bit of everything, in a fixed order (mirrored by ``scenario_py``)."""
    out = np.empty(n, np.int64)
    got = nj.kmem_cache_alloc_bulk(h, cid, n, out)
    singles = np.empty(3, np.int64)
    for i in range(3):
        singles[i] = nj.kmem_cache_alloc(h, cid)
    arr = np.empty(40, np.int64)
    na = nj.kmem_cache_alloc_array(h, cid, 40, arr, 0)
    nd = nj.kmem_cache_alloc_node(h, cid, node=0)
    k = np.empty(4, np.int64)
    k[0] = nj.kmalloc(h, 24)
    k[1] = nj.kmalloc(h, 700)
    k[2] = nj.kmalloc(h, 20000)
    k[3] = nj.kmem_cache_alloc(h, other)
    live = nj.is_live(h, cid, singles[0])
    nj.kmem_cache_free(h, cid, singles[0])
    dead = not nj.is_live(h, cid, singles[0])
    nj.kfree_bulk(h, 4, k)
    nj.kmem_cache_free_bulk(h, cid, n, out)
    nj.kmem_cache_free_array(h, cid, 10, arr)
    z = nj.kmalloc(h, 0)
    nj.kfree(h, z)
    nj.kfree(h, 0)
    return got, na, live, dead, z, singles, arr, nd


def scenario_py(sa, c, other, n):
    out = np.empty(n, np.int64)
    got = sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, n, out, cpu=0)
    singles = np.array([sa.kmem_cache_alloc(c, cpu=0) for _ in range(3)], np.int64)
    arr = np.empty(40, np.int64)
    na = sa.kmem_cache_alloc_array(c, GFP_KERNEL, 40, arr, flags=0, cpu=0)
    nd = sa.kmem_cache_alloc_node(c, GFP_KERNEL, 0, cpu=0)
    k = np.array([sa.kmalloc(24, cpu=0), sa.kmalloc(700, cpu=0), sa.kmalloc(20000, cpu=0),
                  sa.kmem_cache_alloc(other, cpu=0)], np.int64)
    sa.kmem_cache_free(c, int(singles[0]), cpu=0)
    sa.kfree_bulk(4, k, cpu=0)
    sa.kmem_cache_free_bulk(c, n, out, cpu=0)
    sa.kmem_cache_free_array(c, 10, arr, cpu=0)
    return got, na, singles, arr, nd


@numba.njit
def free_one(h, cid, addr):
    nj.kmem_cache_free(h, cid, addr)


@numba.njit
def kfree_one(h, addr):
    nj.kfree(h, addr)


@numba.njit
def free_many(h, cid, nr, objs):
    nj.kmem_cache_free_bulk(h, cid, nr, objs)


@numba.njit
def kfree_many(h, nr, objs):
    nj.kfree_bulk(h, nr, objs)


@numba.njit
def live_one(h, cid, addr):
    return nj.is_live(h, cid, addr)


@numba.njit
def alloc_one(h, cid):
    return nj.kmem_cache_alloc(h, cid)


@numba.njit
def alloc_many(h, cid, nr, out):
    return nj.kmem_cache_alloc_bulk(h, cid, nr, out)


@numba.njit
def alloc_arr(h, cid, nr, out, flags):
    return nj.kmem_cache_alloc_array(h, cid, nr, out, flags)


@numba.njit
def kmalloc_many(h, sizes):
    out = np.empty(sizes.shape[0], np.int64)
    for i in range(sizes.shape[0]):
        out[i] = nj.kmalloc(h, sizes[i])
    return out


def pair(kernel):
    return [numslab.SlabAllocator(nr_cpus=2, memory="64M", kernel=kernel) for _ in range(2)]


# ---- the same state as the facade ------------------------------------------------------------
@pytest.mark.parametrize("sheaves", [0, 8])
def test_njit_code_leaves_the_same_state_as_python(sheaves, kernel):
    (a, b) = pair(kernel)
    ca = a.kmem_cache_create("c", 192, sheaf_capacity=sheaves)
    oa = a.kmem_cache_create("o", 64, flags=SLAB_HWCACHE_ALIGN)
    cb = b.kmem_cache_create("c", 192, sheaf_capacity=sheaves)
    ob = b.kmem_cache_create("o", 64, flags=SLAB_HWCACHE_ALIGN)
    got, na, live, dead, z, singles, arr, nd = scenario(a.handle, ca.id, oa.id, 50)
    assert (got, na, live, dead, z) == (50, 40, True, True, numslab.ZERO_SIZE_PTR)
    pgot, pna, psingles, parr, pnd = scenario_py(b, cb, ob, 50)
    assert (pgot, pna) == (got, na)
    assert psingles.tolist() == singles.tolist() and parr.tolist() == arr.tolist()
    assert pnd == nd
    sa_, sb_ = snapshot(a), snapshot(b)
    assert np.array_equal(sa_[0], sb_[0]), "state differs from the Python twin"
    assert np.array_equal(sa_[1], sb_[1]), "arena differs from the Python twin"
    # and Python reads the njit side's work
    assert ca.live_objects == 2 + 30 + 1
    assert ca.stats == cb.stats and ca.stats["alloc_array_full_count"] >= 0
    if sheaves:
        fast = ("alloc_fastpath", "free_fastpath") if kernel != "6.18" else \
            ("alloc_cpu_sheaf", "free_cpu_sheaf")
        assert ca.stats[fast[0]] > 0 and ca.stats[fast[1]] > 0
    assert all(a.ksize(int(x)) == 192 for x in list(singles[1:]) + list(arr[10:]) + [nd])
    for k in a.kmalloc_caches:
        assert k.live_objects == b.find_cache(k.name).live_objects
    a.validate()
    b.validate()
    # the Python side can free what njit code allocated, and the other way round
    for x in list(singles[1:]) + [nd]:
        a.kmem_cache_free(ca, int(x))
    free_many(a.handle, ca.id, 30, arr[10:].copy())
    assert ca.live_objects == 0
    a.validate()


@numba.njit
def sheaf_batches(h, cid, sizes, gfps, out):
    """For each size: a bulk allocation with that gfp into ``out`` (row i), then the free of
    every other batch (most batches fit the CPU's main sheaf: numslab.jit's inline case)."""
    got = np.zeros(sizes.shape[0], np.int64)
    for i in range(sizes.shape[0]):
        got[i] = nj.kmem_cache_alloc_bulk(h, cid, sizes[i], out[i], 0, gfps[i])
        if i % 2:
            nj.kmem_cache_free_bulk(h, cid, got[i], out[i])
    return got


def test_njit_bulk_from_the_main_sheaf_matches_python(kernel):
    """Batches the main sheaf holds are taken inline in the user's function: the same
    objects in the same order, the same counters and the same state as the facade's calls,
    __GFP_ZERO (which the inline case leaves to the engine) included."""
    from numslab import __GFP_ZERO
    (a, b) = pair(kernel)
    ca, cb = (x.kmem_cache_create("s", 64, sheaf_capacity=32) for x in (a, b))
    sizes = np.array([1, 5, 16, 3, 32, 7, 40, 2, 9, 9, 1, 30], np.int64)
    gfps = np.array([GFP_KERNEL | (__GFP_ZERO if i % 5 == 4 else 0)
                     for i in range(len(sizes))], np.int64)
    for x in (a, b):                            # stale bytes for __GFP_ZERO to clear
        c = x.find_cache("s")
        objs = c.alloc_bulk(64)
        x.memory.view(np.int64)[objs >> 3] = -1
        c.free_bulk(objs)
    out_a = np.zeros((len(sizes), 40), np.int64)
    got = sheaf_batches(a.handle, ca.id, sizes, gfps, out_a)
    out_b = np.zeros((len(sizes), 40), np.int64)
    for i, (n, g) in enumerate(zip(sizes.tolist(), gfps.tolist())):
        assert b.kmem_cache_alloc_bulk(cb, g, n, out_b[i]) == got[i] == n
        if i % 2:
            b.kmem_cache_free_bulk(cb, n, out_b[i])
    assert np.array_equal(out_a, out_b)
    for i in np.flatnonzero(gfps & __GFP_ZERO):
        objs = out_a[i, :sizes[i]]
        assert not a.memory.view(np.int64)[objs >> 3].any()     # zeroed
    pcs = "alloc_fastpath" if kernel != "6.18" else "alloc_cpu_sheaf"    # ALLOC_PCS
    assert ca.stats == cb.stats and ca.stats[pcs] > 0
    sa_, sb_ = snapshot(a), snapshot(b)
    assert np.array_equal(sa_[0], sb_[0]) and np.array_equal(sa_[1], sb_[1])
    a.validate()
    b.validate()


def test_njit_kmalloc_uses_the_same_size_classes(sa):
    sizes = np.array(list(range(1, 300)) + [500, 511, 512, 513, 1000, 1024, 1025, 4096,
                                            5000, 8191, 8192, 8193, 12288, 20000, 65536,
                                            4 << 20], np.int64)
    for k in sa.kmalloc_caches:     # (7.x: kmalloc-64's spare sheaf, made when the boot's
        k.shrink()                  # barns refilled its main, is flushed and freed)
    before = [k.live_objects for k in sa.kmalloc_caches]    # 7.0: the main sheaves, barns
    addrs = kmalloc_many(sa.handle, sizes)
    assert addrs.all()
    for s, a in zip(sizes.tolist(), addrs.tolist()):
        want = kmalloc_cache_size(s) if s <= 8192 else 4096 << get_order(s)
        assert sa.ksize(a) == want, s
    sa.validate()
    kfree_many(sa.handle, len(addrs), addrs)
    for k in sa.kmalloc_caches:             # frees the spare and barn sheaves made meanwhile
        k.shrink()
    assert [k.live_objects for k in sa.kmalloc_caches] == before
    sa.validate()


def test_njit_bulk_alloc_is_all_or_nothing(kernel):
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=kernel)
    c = sa.kmem_cache_create("x", 1024)
    out = np.empty(5000, np.int64)
    assert alloc_many(sa.handle, c.id, 5000, out) == 0
    assert c.live_objects == 0
    sa.validate()
    n = c.total_objects                                 # every slab the attempt made
    assert alloc_many(sa.handle, c.id, n, out) == n
    assert c.live_objects == n
    sa.validate()


# ---- errors raised inside njit code -----------------------------------------------------------
@pytest.fixture
def world(sa):
    c = sa.kmem_cache_create("j", 128)
    other = sa.kmem_cache_create("other", 128)
    objs = c.alloc_bulk(20)
    gone = c.alloc()
    c.free(gone)
    return sa, c, other, objs, gone


def test_njit_double_free_raises_and_changes_nothing(world):
    sa, c, other, objs, gone = world
    snap = snapshot(sa)
    # the message names the address, the cache and, in a batch, the element
    with pytest.raises(numslab.DoubleFreeError,
                       match=f"double free .*\\(address {gone:#x}, {named(c)}\\)$"):
        free_one(sa.handle, c.id, gone)
    with pytest.raises(numslab.DoubleFreeError, match=f"\\(address {gone:#x}, {named(c)}\\)$"):
        kfree_one(sa.handle, gone)
    kfree_one(sa.handle, 8)             # ZERO_OR_NULL_PTR (0 to 16): ignored, as the kernel
    for bad in (-1, 24):                # -1 too (it was the "not known" mark: left unnamed)
        with pytest.raises(numslab.BadAddressError, match=f"\\(address {bad:#x}\\)$") as e:
            kfree_one(sa.handle, bad)
        assert e.value.detail[0] == bad
    arr = objs.copy()
    arr[7] = arr[2]
    with pytest.raises(numslab.DoubleFreeError,
                       match=f"address {int(objs[2]):#x}, {named(c)}, element 7 of"):
        free_many(sa.handle, c.id, 20, arr)
    assert (arr[:7] == objs[:7]).all()                  # not permuted
    with pytest.raises(numslab.DoubleFreeError,
                       match=f"{int(objs[2]):#x}, {named(c)}, element 7 of"):
        kfree_many(sa.handle, 20, arr)
    assert_unchanged(sa, snap)


def test_njit_double_free_in_a_consistency_checked_cache_is_reported_as_the_facades(kernel):
    # numslab.jit's free takes the engine's checked free for whatever its inline sheaf case
    # does not take, so a debug cache's double free makes the kernel's report there too
    reports = []
    for via_jit in (False, True):
        sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel=kernel)
        c = sa.kmem_cache_create("df", 64, flags=numslab.SLAB_CONSISTENCY_CHECKS)
        a = sa.kmem_cache_alloc(c)
        sa.kmem_cache_free(c, a)
        with pytest.raises(numslab.DoubleFreeError):
            if via_jit:
                free_one(sa.handle, c.id, a)
            else:
                sa.kmem_cache_free(c, a)
        reps = sa.slab_reports()
        assert any("Object already free" in r for r in reps)
        assert any(r.startswith(f"FIX df: Object at {a:#x} not freed") for r in reps)
        reports.append([r.split("\n")[0] for r in reps])
        # an object waiting for kfree_rcu is refused too, but it is not on its slab's free
        # list, where free_consistency_checks looks: no "Object already free" for it
        b = sa.kmem_cache_alloc(c)
        sa.kfree_rcu(b)
        before = len(sa.slab_reports())
        with pytest.raises(numslab.DoubleFreeError):
            if via_jit:
                free_one(sa.handle, c.id, b)
            else:
                sa.kmem_cache_free(c, b)
        with pytest.raises(numslab.DoubleFreeError):
            if via_jit:
                kfree_one(sa.handle, b)
            else:
                sa.kfree(b)
        assert len(sa.slab_reports()) == before
        assert sa.synchronize_rcu() == 1
        sa.validate()
    assert reports[0] == reports[1]


def test_njit_refusal_of_an_object_waiting_for_rcu_says_so(kernel):
    """Compiled code sees an object waiting for ``kfree_rcu`` as a free one; numslab.jit's
    refusal said "already free", where the Python API says what waits: now its text does
    too (the allocator's note, looked up only as the exception is made), for the object on
    the ``kfree_rcu`` list or in an RCU sheaf, a large block on the list, and a batch."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("r", 64)
    a, b, x = c.alloc(), c.alloc(), c.alloc()
    big = sa.kmalloc(3 * 4096)
    c.free(x)
    sa.kfree_rcu(a)
    sa.kfree_rcu(big)
    objs = np.array([b, a], np.int64)
    snap = snapshot(sa)
    waiting = r"^numslab\.jit\.{}: double free, the object is waiting for an RCU grace period "
    for call, args, addr, index, name in (
            (free_one, (sa.handle, c.id, a), a, -1, "kmem_cache_free"),
            (kfree_one, (sa.handle, a), a, -1, "kfree"),
            (kfree_one, (sa.handle, big), big, -1, "kfree"),
            (free_many, (sa.handle, c.id, 2, objs), a, 1, "kmem_cache_free_bulk"),
            (kfree_many, (sa.handle, 2, objs), a, 1, "kfree_bulk")):
        # the message names the call (a new user's trial: "numslab.jit: double free" said
        # neither which call nor where)
        with pytest.raises(numslab.DoubleFreeError, match=waiting.format(name)) as e:
            call(*args)
        assert e.value.detail[0] == addr and e.value.detail[2] == index
        with pytest.raises(numslab.DoubleFreeError) as py:      # the facade's own words
            sa.kfree(addr)
        note = str(py.value).split("double free, ", 1)[1]
        assert f"double free, {note} (address {addr:#x}" in str(e.value)
    with pytest.raises(numslab.DoubleFreeError,        # a free object: no note
                       match=r"^numslab\.jit\.kmem_cache_free: double free \(the object is "
                             r"already free\) "):
        free_one(sa.handle, c.id, x)
    assert_unchanged(sa, snap)
    sa.kvfree_rcu_barrier()                     # every grace period over: a is free
    with pytest.raises(numslab.DoubleFreeError, match=r"double free \(the object is already"):
        free_one(sa.handle, c.id, a)
    free_one(sa.handle, c.id, b)
    sa.validate()


def test_njit_wrong_cache_and_bad_addresses_raise(world):
    sa, c, other, objs, gone = world
    theirs = other.alloc()
    large = sa.kmalloc(20000)
    snap = snapshot(sa)
    with pytest.raises(numslab.WrongCacheError,
                       match=f"another cache than the one passed, named last: it is from "
                             f"'{other.name}' "
                             f"\\(address {theirs:#x}, {named(c)}\\)"):
        free_one(sa.handle, c.id, theirs)       # (the owner was not named: issue 12 trial)
    with pytest.raises(numslab.WrongCacheError, match=f"it is from '{other.name}' .*element 1"):
        free_many(sa.handle, c.id, 2, np.array([objs[0], theirs]))
    for bad in (int(objs[3]) + 8, int(objs[3]) + 3, int(objs[3]) + 1, 1 << 40, 0, -8, large,
                large + 4096):
        with pytest.raises(numslab.BadAddressError,        # the address named, however bad
                           match=f"\\(address {bad:#x}, {named(c)}\\)$"):
            free_one(sa.handle, c.id, bad)
    with pytest.raises(numslab.BadAddressError, match="\\(address -0x40\\)$"):
        kfree_one(sa.handle, -64)
    with pytest.raises(numslab.BadAddressError):
        kfree_one(sa.handle, large + 4096)
    with pytest.raises(numslab.DoubleFreeError):
        kfree_many(sa.handle, 2, np.array([large, large]))
    assert_unchanged(sa, snap)
    kfree_one(sa.handle, large)
    with pytest.raises(numslab.BadAddressError,        # its pages are free now, as Python says
                       match=f"not an allocated slab object: not on a slab page: page frame "
                             f"{large >> 12} is free: already freed, .*\\(address {large:#x}\\)$"):
        kfree_one(sa.handle, large)
    with pytest.raises(numslab.BadAddressError, match=f"page frame {large >> 12} is free"):
        sa.kfree(large)
    sa.validate()


@numba.njit
def _catch_scanning_in_the_try(h, cid, objs, n, addr):
    """Numba's limitation (README, "Catching them"): a ``return`` in a loop in the try."""
    try:
        for j in range(n):
            if objs[j] == addr:
                return -1
        nj.kmem_cache_free(h, cid, addr)
    except Exception:
        return 1
    return 0


@numba.njit
def _catch_scanning_with_a_break(h, cid, objs, n, addr):
    """The README's first workaround: the loop ``break``s, the ``return`` is after the try."""
    held = False
    try:
        for j in range(n):
            if objs[j] == addr:
                held = True
                break
        if not held:
            nj.kmem_cache_free(h, cid, addr)
    except Exception:
        return 1
    return -1 if held else 0


@numba.njit
def _held(objs, n, addr):
    """True if ``addr`` is among the first ``n`` of ``objs``."""
    for j in range(n):
        if objs[j] == addr:
            return True
    return False


@numba.njit
def _catch_scanning_in_a_function(h, cid, objs, n, addr):
    """The README's second workaround: the loop that returns is a function of its own."""
    try:
        if _held(objs, n, addr):
            return -1
        nj.kmem_cache_free(h, cid, addr)
    except Exception:
        return 1
    return 0


def test_njit_code_catches_numslab_errors_with_no_return_in_a_loop_in_the_try(world):
    """The README's way of catching numslab.jit's errors in a user's ``@njit`` function.

    A ``return`` in a loop in a ``try`` body makes Numba (0.68, Python >= 3.11) leave the try
    at every turn of the loop that does not return, without entering it again, so its count
    of open trys (the ``try_state`` of its call convention) falls below the truth: at 0 the
    error escapes the ``except`` (a fuzzer's ``except Exception`` let a double free through),
    below 0 an error after the try is lost. Here the double free of ``gone`` escapes after one
    turn; the workarounds catch it after any number."""
    sa, c, other, objs, gone = world
    snap = snapshot(sa)
    for n in range(4):
        assert _catch_scanning_with_a_break(sa.handle, c.id, objs, n, gone) == 1
        assert _catch_scanning_in_a_function(sa.handle, c.id, objs, n, gone) == 1
    assert _catch_scanning_with_a_break(sa.handle, c.id, objs, 20, objs[5]) == -1
    assert _catch_scanning_in_a_function(sa.handle, c.id, objs, 20, objs[5]) == -1
    assert_unchanged(sa, snap)
    if sys.version_info >= (3, 11) and numba.version_info[:2] <= (0, 68):
        with pytest.raises(numslab.DoubleFreeError):       # Numba's limitation, still here
            _catch_scanning_in_the_try(sa.handle, c.id, objs, 1, gone)
    assert_unchanged(sa, snap)


def test_njit_errors_name_the_cache_of_their_own_allocator(kernel):
    """numslab.jit's errors name the cache as the facade's do, by its name beside its id
    (before: the id alone); two allocators whose caches share an id each name their own; a
    destroyed cache's id is named by id alone; the name's lookup does not keep an allocator
    alive."""
    from numslab.drivers import handles
    one = numslab.SlabAllocator(memory="4M", kernel=kernel)
    two = numslab.SlabAllocator(memory="4M", kernel=kernel)
    a, b = one.kmem_cache_create("flows", 64), two.kmem_cache_create("packets", 64)
    assert a.id == b.id
    for sa, c in ((one, a), (two, b)):
        x = c.alloc()
        c.free(x)
        with pytest.raises(numslab.DoubleFreeError,
                           match=f"\\(address {x:#x}, cache id {c.id} '{c.name}'\\)$") as e:
            free_one(sa.handle, c.id, x)
        assert e.value.detail == (x, c.id, -1)
    h, cid, x = two.handle, b.id, b.alloc()
    two.kmem_cache_destroy(b, force=True)
    with pytest.raises(numslab.WrongCacheError, match=f"\\(cache id {cid}\\)$"):
        free_one(h, cid, x)
    for bad in (-1, 1 << 20):           # out of range: the id refused (-1 was not named)
        with pytest.raises(numslab.WrongCacheError, match=f"live cache \\(got {bad}\\)$") as e:
            free_one(one.handle, bad, x)
        assert e.value.value == bad
    # is_live too (it answered False for any id): NIL asks of any cache
    y = a.alloc()
    assert live_one(one.handle, a.id, y) and live_one(one.handle, numslab.NIL, y)
    for bad in (-5, 1 << 20, cid):      # (cid: destroyed, in the other machine)
        with pytest.raises(numslab.WrongCacheError, match=f"live cache \\(got {bad}\\)$"):
            live_one(h, bad, x)
    a.free(y)
    assert not live_one(one.handle, a.id, y)
    state = two._st
    assert handles.describe(state, a.id, x) == \
        (None, f"{PAGE_NOTE}page frame {x >> 12} is free: already freed, or an address of "
               f"another allocator?")                # a name of its, no longer; its page free
    assert handles.describe(one._st, a.id, x) == ("flows", None)
    del two, h, sa          # (the loop's last allocator)
    gc.collect()
    assert state not in handles._namers


def test_kfree_errors_name_the_cache_the_page_belongs_to(kernel):
    """kfree and kfree_bulk name no cache, so their errors name the one the address's page
    belongs to, from numslab.jit as from the facade (before: the address alone); an address
    on no slab names none."""
    sa = numslab.SlabAllocator(memory="4M", kernel=kernel)
    x, y = sa.kmalloc(100), sa.kmalloc(100)
    sa.kfree(x)
    snap = snapshot(sa)
    with pytest.raises(numslab.DoubleFreeError, match=f"^kfree: {x:#x} \\(kmalloc-128\\): "):
        sa.kfree(x)
    with pytest.raises(numslab.DoubleFreeError,
                       match=f"^kfree_bulk: element 1: {x:#x} \\(kmalloc-128\\): "):
        sa.kfree_bulk(2, np.array([y, x], np.int64))
    with pytest.raises(numslab.DoubleFreeError,
                       match="\\(address 0x[0-9a-f]+, cache id \\d+ 'kmalloc-128'\\)$") as e:
        kfree_one(sa.handle, x)
    assert e.value.detail[0] == x and e.value.detail[1] >= 0
    with pytest.raises(numslab.DoubleFreeError,
                       match="cache id \\d+ 'kmalloc-128', element 1 of the batch\\)$"):
        kfree_many(sa.handle, 2, np.array([y, x], np.int64))
    assert_unchanged(sa, snap)
    page = sa.alloc_pages(0)
    with pytest.raises(numslab.BadAddressError, match=f"is part of a block from alloc_pages: "
                                                      f"free it with free_pages \\(address "
                                                      f"{page:#x}\\)$"):
        kfree_one(sa.handle, page)
    sa.validate()


def test_njit_count_checks(world):
    sa, c, other, objs, gone = world
    snap = snapshot(sa)
    named = f", cache id {c.id} '{c.name}'"              # (a cache's call names it too)
    for nr in (21, -1):                                 # the message names the count
        with pytest.raises(numslab.InvalidSizeError, match=f"\\(got {nr}{named}\\)$"):
            free_many(sa.handle, c.id, nr, objs.copy())
        with pytest.raises(numslab.InvalidSizeError, match=f"\\(got {nr}\\)$"):
            kfree_many(sa.handle, nr, objs.copy())
        with pytest.raises(numslab.InvalidSizeError, match=f"\\(got {nr}{named}\\)$"):
            alloc_many(sa.handle, c.id, nr, np.empty(20, np.int64))
        with pytest.raises(numslab.InvalidSizeError, match=f"\\(got {nr}{named}\\)$"):
            alloc_arr(sa.handle, c.id, nr, np.empty(20, np.int64), 0)
    for size in (-1, (4 << 20) + 1):
        with pytest.raises(numslab.InvalidSizeError, match=f"\\(got {size}\\)$"):
            kmalloc_many(sa.handle, np.array([size], np.int64))
    assert_unchanged(sa, snap)
    assert alloc_many(sa.handle, c.id, 0, np.empty(0, np.int64)) == 0
    assert_unchanged(sa, snap)


def test_njit_refuses_read_only_object_arrays(world):
    # every batch call writes or reorders its array (the facade refuses read-only ones too):
    # a read-only buffer, here an immutable bytes object's, is never written
    sa, c, other, objs, gone = world
    frozen = np.frombuffer(objs.tobytes(), np.int64)
    assert not frozen.flags.writeable
    snap = snapshot(sa)
    for call, arg in (
            (lambda: alloc_many(sa.handle, c.id, 4, np.frombuffer(bytes(32), np.int64)), "out"),
            (lambda: free_many(sa.handle, c.id, 20, frozen), "objs"),
            (lambda: kfree_many(sa.handle, 20, frozen), "objs"),
            (lambda: alloc_arr(sa.handle, c.id, 4, np.frombuffer(bytes(32), np.int64), 0),
             "out"),
            (lambda: alloc_many(sa.handle, c.id, 4, np.empty(8, np.int32)), "out")):
        with pytest.raises(TypeError, match=f"numslab.jit: {arg}, the array .* must be a "
                                            f"writable contiguous 1-D int64"):
            call()                      # (the argument named: it said "object arrays")
    assert_unchanged(sa, snap)
    assert np.array_equal(frozen, objs)
    free_many(sa.handle, c.id, 20, objs.copy())       # a writable copy goes through
    assert len(c) == 0



def test_njit_object_array_typed_layout_a_says_how_to_type_it(world):
    """A jitclass field (or a signature) typed ``int64[:]`` is layout 'A', which the calls
    refuse: the refusal said only "not array(int64, 1d, A)", which does not tell a user what
    to change. It now says to type the array ``int64[::1]``, and that one goes through."""
    from numba.experimental import jitclass
    sa, c, other, objs, gone = world

    def pool_class(array_type):
        @jitclass([("h", numba.typeof(sa.handle)), ("cid", numba.int64),
                   ("live", array_type)])
        class Pool:
            def __init__(self, h, cid, n):
                self.h, self.cid = h, cid
                self.live = np.empty(n, np.int64)

            def fill(self):
                return nj.kmem_cache_alloc_bulk(self.h, self.cid, self.live.size, self.live)

            def drain(self):
                nj.kmem_cache_free_bulk(self.h, self.cid, self.live.size, self.live)
        return Pool

    snap = snapshot(sa)
    loose = pool_class(numba.int64[:])(sa.handle, c.id, 4)
    with pytest.raises(numslab.WrongTypeError,
                       match=r"^numslab.jit: out, the array the call fills, must be a writable "
                             r"contiguous 1-D int64 array \(an object array\), not "
                             r"array\(int64, 1d, A\): an array Numba does not know to be "
                             r"contiguous \(a jitclass field or a signature typed int64\[:\] is "
                             r"one: type it int64\[::1\]\) \(numslab.jit.kmem_cache_alloc_bulk, "
                             r"called in \S*Pool.fill at test_jit.py:\d+\)$"):
        loose.fill()
    assert_unchanged(sa, snap)
    pool = pool_class(numba.int64[::1])(sa.handle, c.id, 4)
    assert pool.fill() == 4
    assert len(c) == len(objs) + 4
    pool.drain()
    assert len(c) == len(objs)
    sa.validate()


def test_njit_scalar_arguments_must_be_integers(world):
    # a float address, count, cache id or cpu failed deep in Numba's typing of numslab's
    # helpers (after object-mode fallback warnings); a uint64 address, which Numba mixes with
    # int64 into float64, failed the same way instead of being taken
    sa, c, other, objs, gone = world
    snap = snapshot(sa)
    a = int(objs[0])
    for what, call in (("an address", lambda: free_one(sa.handle, c.id, float(a))),
                       ("an address", lambda: kfree_one(sa.handle, a + 0.0)),
                       ("a cache id", lambda: free_one(sa.handle, float(c.id), a)),
                       ("a count or size", lambda: alloc_many(sa.handle, c.id, 2.0,
                                                              np.zeros(4, np.int64))),
                       ("a count or size", lambda: kmalloc_many(sa.handle,
                                                                np.array([64.0]))),
                       ("each of cpu, node, gfp, flags and ratio",
                        lambda: alloc_arr(sa.handle, c.id, 2, np.zeros(4, np.int64), 0.5))):
        with pytest.raises(TypeError, match=f"^numslab.jit: {what} must be an integer, not "
                                            f"float64{SITE}") as e:   # (the call, its place)
            call()
        # an address is refused as the Python API refuses it: a TypeError and a BadAddressError
        assert isinstance(e.value, numslab.AddressTypeError) == (what == "an address")
    assert_unchanged(sa, snap)
    free_one(sa.handle, c.id, np.uint64(a))         # other integer types are taken
    free_one(sa.handle, np.int32(c.id), np.int64(objs[1]))
    assert len(c) == len(objs) - 2
    with pytest.raises(numslab.BadAddressError, match="address -0x40\\)"):
        kfree_one(sa.handle, np.uint64(2**64 - 64))  # above 2**63 - 1: negative, refused
    sa.validate()


def test_a_numslab_jit_call_from_python_of_a_wrong_type_tries_no_object_mode(sa):
    # numslab.jit's dispatchers were made without nopython: called from Python with a float
    # (or None, a str, a list), Numba first tried object mode, with a NumbaWarning "falling
    # back to object mode WITH looplifting enabled" before the TypeError
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for call in (lambda: nj.kmalloc(sa.handle, 1.5), lambda: nj.kfree(sa.handle, None),
                     lambda: nj.kmem_cache_alloc_bulk(sa.handle, 1, 2, [0, 0])):
            with pytest.raises(TypeError, match="^numslab.jit: .* must be "):
                call()


def test_njit_refuses_the_cache_object_in_place_of_its_id(world):
    """A new user's slip: the KmemCache itself where ``numslab.jit`` takes ``c.id``. Numba
    refused it with its own TypingError ("Cannot determine Numba type of KmemCache") before
    any numslab code ran; a TypeError now says to pass ``c.id``, and a function that merely
    takes one raises TypeError when called."""
    sa, c, other, objs, gone = world
    snap = snapshot(sa)
    with pytest.raises(TypeError, match="^numslab.jit: a cache id must be an integer, not "
                                        r"numslab.KmemCache: pass its id, c.id \(numslab.jit"
                                        r".kmem_cache_free, called in free_one at "
                                        r"test_jit.py:\d+\)$"):
        free_one(sa.handle, c, int(objs[0]))
    with pytest.raises(TypeError, match="a KmemCache cannot be passed to compiled code: "
                                        "pass its id, c.id"):
        numba.njit(lambda cache: 0)(c)
    assert_unchanged(sa, snap)


def test_njit_refuses_the_allocator_in_place_of_its_handle(world):
    """The commonest slip of all, ``sa`` where ``numslab.jit`` takes ``sa.handle``, was
    Numba's ``TypingError`` ("Cannot determine Numba type of SlabAllocator": no TypeError,
    and no word of ``sa.handle``), where the README promises a TypeError naming the
    argument."""
    sa, c, other, objs, gone = world
    snap = snapshot(sa)
    with pytest.raises(TypeError, match=r"^numslab.jit: the first argument must be an "
                                        r"allocator's handle \(pass sa.handle itself, a "
                                        r"SlabHandle\), not the allocator" + SITE):
        free_one(sa, c.id, int(objs[0]))
    with pytest.raises(TypeError, match="a SlabAllocator cannot be passed to compiled code: "
                                        "pass its handle, sa.handle"):
        numba.njit(lambda allocator: 0)(sa)
    assert_unchanged(sa, snap)

@numba.njit
def alloc_cpu_node(h, cid, cpu, node):
    """A sibling's order, ``kmem_cache_alloc(h, cid, cpu)``, with the node put after."""
    return nj.kmem_cache_alloc_node(h, cid, cpu, node)


@numba.njit
def alloc_gfp_node(h, cid, gfp, node):
    """The kernel's and the Python API's order: the gfp, then the node."""
    return nj.kmem_cache_alloc_node(h, cid, gfp, node)


@numba.njit
def alloc_named(h, cid, cpu, node):
    return nj.kmem_cache_alloc_node(h, cid, cpu=cpu, node=node)


def test_kmem_cache_alloc_node_takes_its_node_by_keyword_only(sa2):
    """``numslab.jit.kmem_cache_alloc_node(h, cache, node, cpu, gfp)`` put the node where its
    siblings put the cpu and where the kernel and the Python API put the gfp: a call in a
    sibling's order, ``(h, cid, cpu, node)``, allocated on node ``cpu`` from CPU ``node``
    without a word, and ``(h, cid, 0, 1)`` in the kernel's order (gfp 0, node 1) allocated
    from node 0 on CPU 1. A node in place is now refused as the caller compiles, and from
    Python; named, it cannot be misplaced."""
    c = sa2.kmem_cache_create("nodes", 64)
    before = sa2.kmem_cache_alloc(c)            # (the cache's first slab: no count below moves)
    for f in (alloc_cpu_node, alloc_gfp_node):
        with pytest.raises(numslab.WrongTypeError,
                           match=r"^numslab.jit.kmem_cache_alloc_node: pass node by keyword "
                                 rf"\(kmem_cache_alloc_node\(h, cache, node=...\)\), called "
                                 rf"in {f.__name__} at test_jit.py:\d+: the kernel \(s, gfp, "
                                 r"node\)"):
            f(sa2.handle, c.id, 0, 1)
    for args in ((sa2.handle, c.id, 1), (sa2.handle, c.id, 1, 0, numslab.GFP_KERNEL)):
        with pytest.raises(numslab.WrongTypeError, match="pass node by keyword"):
            nj.kmem_cache_alloc_node(*args)
    assert c.live_objects == 1
    for node in (2, -2):                            # the machine's nodes named
        with pytest.raises(numslab.InvalidArgumentError,
                           match=rf"kmem_cache_alloc_node: node is neither -1 nor one of this "
                                 rf"machine's nodes 0..1 \(got {node}, cache id"):
            alloc_named(sa2.handle, c.id, 0, node)
    for cpu, node in ((0, 1), (3, 0), (2, 1)):      # CPUs 0-1 on node 0, 2-3 on node 1
        a = alloc_named(sa2.handle, c.id, cpu, node)
        assert sa2.page_to_nid(a) == node
        sa2.kmem_cache_free(c, a)
        b = nj.kmem_cache_alloc_node(sa2.handle, c.id, node=node, cpu=cpu)
        assert sa2.page_to_nid(b) == node
        sa2.kmem_cache_free(c, b)
    sa2.kmem_cache_free(c, before)


@numba.njit
def alloc_no_node(h, cid, cpu):
    return nj.kmem_cache_alloc_node(h, cid, cpu=cpu)


def test_kmem_cache_alloc_node_with_no_node_says_it_is_missing(sa2):
    """With no node at all it said "pass node by keyword ...: a node in place was silently
    taken for a cpu or a gfp", of a call that passed none in place."""
    c = sa2.kmem_cache_create("nonode", 64)
    with pytest.raises(numslab.WrongTypeError,
                       match=r"^numslab.jit.kmem_cache_alloc_node: node is missing: pass it by "
                             r"keyword \(kmem_cache_alloc_node\(h, cache, node=...\)\), called "
                             r"in alloc_no_node at test_jit.py:\d+$"):
        alloc_no_node(sa2.handle, c.id, 1)
    for args, kws in (((sa2.handle, c.id), {}), ((sa2.handle, c.id), {"cpu": 1})):
        with pytest.raises(numslab.WrongTypeError, match="node is missing"):
            nj.kmem_cache_alloc_node(*args, **kws)
    assert c.live_objects == 0


def test_njit_refuses_caches_with_a_constructor(sa):
    @numba.njit
    def ctor(mem, addr):
        mem[addr] = 0x42

    c = sa.kmem_cache_create("ctor", 64, ctor=ctor)
    snap = snapshot(sa)
    # an argument refused, as every other refusal (it was the base SlabError)
    with pytest.raises(numslab.InvalidArgumentError, match=r"constructor.*cache id \d+ 'ctor'"):
        alloc_one(sa.handle, c.id)
    with pytest.raises(numslab.InvalidArgumentError, match="constructor"):
        alloc_many(sa.handle, c.id, 4, np.empty(4, np.int64))
    with pytest.raises(numslab.InvalidArgumentError, match="constructor"):
        alloc_arr(sa.handle, c.id, 4, np.empty(4, np.int64), 0)
    assert_unchanged(sa, snap)
    a = c.alloc()                                       # built from Python...
    assert sa.memory[a] == 0x42
    free_one(sa.handle, c.id, a)                        # ...freed from njit code
    assert c.live_objects == 0
    sa.validate()


def test_njit_allocations_are_seen_by_python(sa):
    c = sa.kmem_cache_create("seen", 256, sheaf_capacity=4)
    out = np.empty(30, np.int64)
    assert alloc_many(sa.handle, c.id, 30, out) == 30
    assert c.live_objects == 30
    assert c.stats["alloc_slowpath"] >= 1
    x = alloc_one(sa.handle, c.id)
    # 6.18 takes the capacity asked for; 7.0's calculate_sheaf_capacity gives 256-byte
    # objects 26 rounded up to fill a kmalloc-256 sheaf: 28
    fast, cap = ("alloc_fastpath", 28) if sa.kernel != "6.18" else ("alloc_cpu_sheaf", 4)
    assert c.stats[fast] == 1 and c.stats["sheaf_refill"] == cap
    c.free_bulk(out)                                    # Python frees njit's objects
    sa.kmem_cache_free(c, x)
    assert c.live_objects == 0
    sa.validate()


@numba.njit
def alloc_on(h, cid, cpu):
    return nj.kmem_cache_alloc(h, cid, cpu)


@numba.njit
def free_on(h, cid, addr, cpu):
    nj.kmem_cache_free(h, cid, addr, cpu)


@numba.njit
def kmalloc_on(h, size, cpu):
    return nj.kmalloc(h, size, cpu)


@numba.njit
def kfree_on(h, addr, cpu):
    nj.kfree(h, addr, cpu)


def test_njit_refuses_a_destroyed_or_unknown_cache_id(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("c", 64)
    a = c.alloc()
    d = sa.kmem_cache_create("d", 64)
    dead = d.id
    sa.kmem_cache_destroy(d)
    h = sa.handle
    snap = snapshot(sa)
    for cid in (dead, -1, 10_000, sa.state.ca.shape[0]):
        with pytest.raises(numslab.WrongCacheError, match="live cache"):
            alloc_on(h, cid, 0)
        with pytest.raises(numslab.WrongCacheError):
            alloc_many(h, cid, 2, np.empty(2, np.int64))
        with pytest.raises(numslab.WrongCacheError):
            alloc_arr(h, cid, 2, np.empty(2, np.int64), 0)
        with pytest.raises(numslab.WrongCacheError):
            free_one(h, cid, a)
        with pytest.raises(numslab.WrongCacheError):
            free_many(h, cid, 1, np.array([a]))
    assert_unchanged(sa, snap)
    e = sa.kmem_cache_create("e", 64)                   # reuses the slot
    assert e.id == dead
    x = alloc_on(h, e.id, 1)                            # and the id is live again
    assert e.live_objects == 1
    free_on(h, e.id, x, 0)
    sa.validate()


def test_njit_refuses_a_cpu_out_of_range(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("c", 64)
    a = c.alloc()
    k = sa.kmalloc(100)
    h = sa.handle
    snap = snapshot(sa)
    for cpu in (2, -1, 1000):                           # the range named, as from Python
        with pytest.raises(numslab.InvalidArgumentError,
                           match=f": cpu not in 0..1 \\(got {cpu}, {named(c)}\\)$"):
            alloc_on(h, c.id, cpu)
        alone = f": cpu not in 0..1 \\(got {cpu}\\)$"       # kmalloc and kfree: no cache
        with pytest.raises(numslab.InvalidArgumentError, match=f"cpu not in 0..1 \\(got {cpu}"):
            free_on(h, c.id, a, cpu)
        with pytest.raises(numslab.InvalidArgumentError, match=alone):
            kmalloc_on(h, 64, cpu)
        with pytest.raises(numslab.InvalidArgumentError, match=alone):
            kfree_on(h, k, cpu)
    assert_unchanged(sa, snap)
    free_on(h, c.id, a, 1)                              # the last CPU is fine
    kfree_on(h, k, 1)
    assert c.live_objects == 0
    sa.validate()


@numba.njit
def alloc_gfp(h, cid, gfp):
    return nj.kmem_cache_alloc(h, cid, 0, gfp)


@numba.njit
def alloc_node_gfp(h, cid, gfp):
    return nj.kmem_cache_alloc_node(h, cid, node=-1, cpu=0, gfp=gfp)


@numba.njit
def alloc_many_gfp(h, cid, out, gfp):
    return nj.kmem_cache_alloc_bulk(h, cid, out.shape[0], out, 0, gfp)


@numba.njit
def alloc_arr_gfp(h, cid, out, flags, gfp):
    return nj.kmem_cache_alloc_array(h, cid, out.shape[0], out, flags, 0, gfp)


@numba.njit
def kmalloc_gfp(h, size, gfp):
    return nj.kmalloc(h, size, 0, gfp)


def test_njit_refuses_what_the_python_api_refuses_as_gfp_and_array_flags(kernel):
    # gfp_t is a 32-bit unsigned int: the Python API's check_gfp refuses anything outside
    # 0..2**32-1, and kmem_cache_alloc_array any flag it does not know; numslab.jit the same,
    # before anything is taken (once these were ignored)
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("c", 64)
    keep = c.alloc()
    h = sa.handle
    out = np.zeros(4, np.int64)
    for gfp in (-1, 1 << 32, -(1 << 40), 1 << 62):
        with pytest.raises(numslab.InvalidArgumentError):
            sa.kmem_cache_alloc(c, gfp=gfp)             # the Python API's answer
        snap = snapshot(sa)
        for call in (lambda: alloc_gfp(h, c.id, gfp), lambda: alloc_node_gfp(h, c.id, gfp),
                     lambda: alloc_many_gfp(h, c.id, out, gfp),
                     lambda: alloc_arr_gfp(h, c.id, out, 0, gfp),
                     lambda: kmalloc_gfp(h, 64, gfp), lambda: kmalloc_gfp(h, 0, gfp),
                     lambda: kmalloc_gfp(h, 100_000, gfp)):
            with pytest.raises(numslab.InvalidArgumentError,
                               match=f"not a set of GFP flags.*\\(got {gfp}[,)]") as e:
                call()
            assert e.value.value == gfp                 # the refused argument, named
        assert_unchanged(sa, snap)
        assert not out.any()
    bad_flags = numslab.SLAB_ARRAY_ALLOC_ALL + 1
    assert bad_flags & ~numslab.SLAB_ARRAY_ALLOC_ALL
    with pytest.raises(numslab.InvalidArgumentError, match="unknown flags"):
        sa.kmem_cache_alloc_array(c, GFP_KERNEL, 4, out, flags=bad_flags)
    snap = snapshot(sa)
    for flags in (bad_flags, -1, 1 << 40):
        with pytest.raises(numslab.InvalidArgumentError,
                           match=f"SLAB_ARRAY.*\\(got {flags}, {named(c)}\\)"):
            alloc_arr_gfp(h, c.id, out, flags, GFP_KERNEL)
    assert_unchanged(sa, snap)
    assert not out.any()
    # the range's top bit and 0 are taken, as every array flag the API knows
    a = alloc_gfp(h, c.id, 1 << 31 | GFP_KERNEL)
    b = kmalloc_gfp(h, 64, 0)
    assert a and b and c.live_objects == 2
    assert alloc_arr_gfp(h, c.id, out, numslab.SLAB_ARRAY_ALLOC_ALL, 0) == 4
    sa.kmem_cache_free_bulk(c, 4, out)
    c.free(a)
    sa.kfree(b)
    c.free(keep)
    assert c.live_objects == 0
    sa.validate()


@numba.njit
def alloc_many_on(h, cid, nr, out, cpu, gfp):
    return nj.kmem_cache_alloc_bulk(h, cid, nr, out, cpu, gfp)


@numba.njit
def alloc_arr_on(h, cid, nr, out, flags, cpu, gfp):
    return nj.kmem_cache_alloc_array(h, cid, nr, out, flags, cpu, gfp)


@numba.njit
def free_many_on(h, cid, nr, objs, cpu):
    nj.kmem_cache_free_bulk(h, cid, nr, objs, cpu)


@numba.njit
def kfree_many_on(h, nr, objs, cpu):
    nj.kfree_bulk(h, nr, objs, cpu)


def test_njit_and_python_name_the_same_of_two_bad_bulk_arguments(kernel):
    """A bulk call with two bad arguments at once (a count longer than the array, and a bad
    cpu, gfp or array flags) raises the same error from the Python API as from numslab.jit:
    both check the cache, the cpu, the gfp, the flags, then the array (before: the Python
    API named the short array first, an InvalidSizeError, where numslab.jit named the
    gfp, an InvalidArgumentError)."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("c", 64)
    h = sa.handle
    out = np.zeros(4, np.int64)
    bad_flags = numslab.SLAB_ARRAY_ALLOC_ALL + 1
    snap = snapshot(sa)
    for cpu, gfp, flags, what in ((0, -1, 0, "GFP"), (5, GFP_KERNEL, 0, "cpu"),
                                  (0, GFP_KERNEL, bad_flags, "flags"),
                                  (0, GFP_KERNEL, 0, "count|shorter")):
        calls = [(lambda: sa.kmem_cache_alloc_array(c, gfp, 9, out, flags, cpu=cpu),
                  lambda: alloc_arr_on(h, c.id, 9, out, flags, cpu, gfp))]
        if flags == 0:                              # the bulk calls take no array flags
            calls += [(lambda: sa.kmem_cache_alloc_bulk(c, gfp, 9, out, cpu=cpu),
                       lambda: alloc_many_on(h, c.id, 9, out, cpu, gfp))]
        if gfp == GFP_KERNEL and flags == 0:        # the frees no gfp either
            calls += [(lambda: sa.kmem_cache_free_bulk(c, 9, out, cpu=cpu),
                       lambda: free_many_on(h, c.id, 9, out, cpu)),
                      (lambda: sa.kfree_bulk(9, out, cpu=cpu),
                       lambda: kfree_many_on(h, 9, out, cpu))]
        for py, jitted in calls:
            with pytest.raises(SlabError, match=what) as e_py:
                py()
            with pytest.raises(SlabError, match=what) as e_jit:
                jitted()
            assert type(e_py.value) is type(e_jit.value)
    assert_unchanged(sa, snap)
    assert not out.any()


@numba.njit
def _free_one(h, cid, addr):
    nj.kmem_cache_free(h, cid, addr)


def test_an_object_on_the_last_granule_of_a_bitmap_word_frees(sa):
    # 72-byte objects: the 8th of a page starts at offset 504, the last granule of the live
    # bitmap's first word, whose sign bit is then set (the allocator-own test must not read
    # a sign-extended shift as its own mark)
    c = sa.kmem_cache_create("g63", 72)
    objs = c.alloc_bulk(2 * c.objs_per_slab)
    last = [a for a in objs.tolist() if (a & 511) == 504]
    assert last
    for a in last:
        _free_one(sa.handle, c.id, a)
        assert not nj.is_live(sa.handle, c.id, a)
    c.free_bulk(np.array([a for a in objs.tolist() if a not in last], np.int64))
    assert c.live_objects == 0


@pytest.mark.parametrize("size", [8, 16, 96, 512])
def test_njit_free_takes_exactly_the_live_objects_at_every_granule(size, kernel):
    # Every 8-byte address of a kmalloc cache's slabs (which under 7.0 hold the allocator's
    # own sheaves among the user's objects) is offered to numslab.jit's free: the oracle is
    # sa.find, which walks the slab's grid in Python. Each address that is not a live
    # object of the user's is refused with nothing changed; each that is, is freed.
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel)
    c = sa.find_cache(f"kmalloc-{size}")
    held = [sa.kmalloc(size) for _ in range(3 * c.objs_per_slab)]
    for a in held[1::3]:
        sa.kfree(a)
    pages = sorted({a & ~4095 for a in held} | {int(s) & ~4095 for s in sa.sheaf_addresses()
                                               if sa.find(int(s))["cache"] is c})
    offered = [p + off for p in pages for off in range(0, 4096, 8)]
    live = {a for a in offered if sa.find(a)["kind"] == "object" and sa.find(a)["object"] == a}
    assert live and live <= set(held)
    snap = snapshot(sa)
    for a in offered:
        if a not in live:
            with pytest.raises(SlabError):
                _free_one(sa.handle, c.id, a)
    assert_unchanged(sa, snap)
    for a in sorted(live):
        _free_one(sa.handle, c.id, a)
    assert c.live_objects - c.sheaf_objects - c.random_seq_objects == 0 == len(c)
    sa.validate()


# ---- compiled threads (issue 13 item 8) --------------------------------------------------------
def _alloc_free(h, cid):
    a = nj.kmem_cache_alloc(h, cid)
    nj.kmem_cache_free(h, cid, a)
    return a


def _alloc_in_prange(h, cid, out):
    for i in numba.prange(out.shape[0]):
        out[i] = nj.kmem_cache_alloc(h, cid)


def _helper_alloc(h, cid):
    return nj.kmem_cache_alloc(h, cid)


def _is_live_in_prange(h, cid, out):
    for i in numba.prange(out.shape[0]):
        out[i] = nj.is_live(h, cid, out[i])


def _is_live_one(h, cid, a):
    return nj.is_live(h, cid, a)


def _arena_byte(h, a):
    return nj.arena(h)[a]


@pytest.mark.parametrize("options, where", [({"nogil": True}, "nogil=True"),
                                            ({"parallel": True}, "parallel=True")])
def test_njit_refuses_is_live_from_threads_too(sa, options, where):
    """``is_live`` reached no unit of the engine (the refusal looks for the unit table), and
    ran in nogil and parallel functions, reading a state another thread changed; it now
    waits its turn as a unit's entry does, and is refused, naming it (not the helper it
    links in). ``arena`` (the memory, no state) stays allowed."""
    c = sa.kmem_cache_create("reading", 64)
    a = sa.kmem_cache_alloc(c)
    out = np.full(8, a, np.int64)
    fn = _is_live_in_prange if "parallel" in options else _is_live_one
    args = (sa.handle, c.id, out) if "parallel" in options else (sa.handle, c.id, a)
    with pytest.raises(numslab.ConcurrentUseError,
                       match=rf"^numslab\.jit\.is_live called from a {where}"):
        numba.njit(**options)(fn)(*args)
    assert (out == a).all() and numba.njit(_is_live_one)(sa.handle, c.id, a)
    assert numba.njit(nogil=True)(_arena_byte)(sa.handle, a) == sa.memory[a]
    sa.kmem_cache_free(c, a)


@pytest.mark.parametrize("options, where", [({"nogil": True}, "nogil=True"),
                                            ({"parallel": True}, "parallel=True")])
def test_njit_refuses_callers_that_may_run_without_the_gil(sa, options, where):
    """A nogil or parallel caller is refused when it is compiled, before anything runs,
    directly or through a helper compiled for it."""
    c = sa.kmem_cache_create("threads", 64)
    snap = snapshot(sa)
    out = np.zeros(64, np.int64)
    direct = numba.njit(**options)(_alloc_in_prange if "parallel" in options else _alloc_free)
    args = (sa.handle, c.id, out) if "parallel" in options else (sa.handle, c.id)
    with pytest.raises(numslab.ConcurrentUseError, match=f"kmem_cache_alloc called from a {where}"):
        direct(*args)
    helper = numba.njit(cache=False)(_helper_alloc)

    def outer(h, cid):
        return helper(h, cid)
    with pytest.raises(numslab.ConcurrentUseError, match="compiled threads"):
        numba.njit(**options)(outer)(sa.handle, c.id)
    assert (out == 0).all()
    assert_unchanged(sa, snap)
    # the same functions holding the GIL run, from any Python thread
    assert numba.njit(_alloc_free)(sa.handle, c.id) > 0
    assert numba.njit(outer)(sa.handle, c.id) > 0


@pytest.mark.parametrize("options, where", [({"nogil": True}, "nogil=True"),
                                            ({"parallel": True}, "parallel=True")])
@pytest.mark.filterwarnings("ignore::numba.NumbaPerformanceWarning")   # no prange in it
def test_njit_refuses_threaded_callers_of_a_helper_compiled_before(sa, options, where):
    """A helper first compiled for a caller holding the GIL, and then called from a nogil or
    parallel function: Numba reuses its code without typing it again, and the caller is
    still refused as it is compiled; a helper that does not reach numslab is not."""
    c = sa.kmem_cache_create("threads2", 64)
    helper = numba.njit(cache=False)(_helper_alloc)
    a = helper(sa.handle, c.id)                     # compiled now, for Python
    nj_free = numba.njit(lambda h, cid, x: nj.kmem_cache_free(h, cid, x))
    nj_free(sa.handle, c.id, a)
    snap = snapshot(sa)
    out = np.zeros(64, np.int64)
    if "parallel" in options:
        def outer(h, cid, out):
            for i in numba.prange(out.shape[0]):
                out[i] = helper(h, cid)
        args = (sa.handle, c.id, out)
    else:
        def outer(h, cid):
            return helper(h, cid)
        args = (sa.handle, c.id)
    with pytest.raises(numslab.ConcurrentUseError,
                       match=f"_helper_alloc \\(which calls numslab.jit\\) called from a {where}"):
        numba.njit(**options)(outer)(*args)
    assert (out == 0).all()
    assert_unchanged(sa, snap)
    plain = numba.njit(lambda x: x + 1)
    plain(1)
    assert numba.njit(**options)(lambda x: plain(x))(1) == 2


HELPER_MODULE = """
import numba, numslab
from numslab import jit as nj

@numba.njit(cache=True)
def helper(h, cid):
    return nj.kmem_cache_alloc(h, cid)

sa = numslab.SlabAllocator(memory="4M")
c = sa.kmem_cache_create("cached", 64)
a = helper(sa.handle, c.id)
print("hits", sum(helper.stats.cache_hits.values()))

@numba.njit(nogil=True)
def outer(h, cid):
    return helper(h, cid)

try:
    outer(sa.handle, c.id)
    print("ran")
except numslab.ConcurrentUseError as e:
    print("refused", e)
sa.validate()
"""


@pytest.mark.parametrize("options", [{"nogil": True}, {"parallel": True}, {}], ids=str)
def test_a_function_reaching_numslab_jit_is_refused_as_a_first_class_function(sa, options):
    """A call through numba.types.FunctionType is typed from the declared signature, so the
    compile-time refusal never saw it: a nogil or parallel function given such a function
    as an argument ran numslab.jit without the GIL (four threads handed an address out
    twice). Its address is refused now, whoever would call it, with nothing run; a
    function that does not reach numslab.jit still passes."""
    import warnings
    from numba import types
    from numslab.drivers.handles import slab_handle
    c = sa.kmem_cache_create("fcf", 64)
    snap = snapshot(sa)
    fty = types.FunctionType(types.int64(slab_handle, types.int64))
    with warnings.catch_warnings():                 # "first-class function type is
        warnings.simplefilter("ignore")             # experimental"
        outer = numba.njit(types.int64(fty, slab_handle, types.int64), **options)(
            lambda f, h, cid: f(h, cid))
        with pytest.raises(numslab.ConcurrentUseError,
                           match=r"^_helper_alloc \(which calls numslab.jit\) taken as a "
                                 r"first-class function "):
            outer(numba.njit(cache=False)(_helper_alloc), sa.handle, c.id)
        assert_unchanged(sa, snap)
        assert outer(numba.njit(lambda h, cid: cid + 1), sa.handle, c.id) == c.id + 1
    sa.validate()


def test_njit_refuses_threaded_callers_of_a_helper_loaded_from_the_cache(tmp_path):
    """The same with the helper's code loaded from Numba's cache in a fresh process."""
    import subprocess
    import sys
    (tmp_path / "helpermod.py").write_text(HELPER_MODULE)
    runs = [subprocess.run([sys.executable, "helpermod.py"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
        assert "refused helper (which calls numslab.jit) called from a nogil=True" in r.stdout
    assert "hits 0" in runs[0].stdout and "hits 1" in runs[1].stdout


def test_njit_from_python_threads_is_serialised(sa):
    """Python threads, each running a GIL-holding compiled loop against the same cache (and
    the facade between), take turns: every object is handed out once."""
    import threading
    c = sa.kmem_cache_create("turns", 64)
    h, cid = sa.handle, c.id

    @numba.njit
    def churn(h, cid, out):
        for i in range(out.shape[0]):
            out[i] = nj.kmem_cache_alloc(h, cid)
        for i in range(0, out.shape[0], 2):
            nj.kmem_cache_free(h, cid, out[i])
            out[i] = 0

    outs = [np.zeros(4000, np.int64) for _ in range(4)]
    churn(h, cid, np.zeros(2, np.int64))
    threads = [threading.Thread(target=churn, args=(h, cid, o)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = np.concatenate([o[o != 0] for o in outs])
    assert len(held) == 4 * 2000 and len(np.unique(held)) == len(held)
    assert len(c) == len(held) + 1
    sa.validate()


def test_each_thread_reads_its_own_raise_s_detail(sa):
    """The detail of a compiled raise (address, cache, element, argument) was one record for
    the process: a raise in another thread between this thread's raise and Python making
    its exception named the other thread's address (0.05-0.2% of errors in a stress run).
    Each thread has its own row now."""
    import threading
    from numslab.drivers import jiterrors
    c = sa.kmem_cache_create("mine", 64)
    mine, theirs = 0x1000 + 8, 0x2000 + 8           # not objects: each free raises
    with pytest.raises(SlabError):
        free_one(sa.handle, c.id, mine)
    me = jiterrors._error_row(threading.get_ident())

    go, chosen = threading.Event(), []

    def other():
        go.wait()
        if chosen and chosen[0] == threading.get_ident():
            try:
                free_one(sa.handle, c.id, theirs)
            except SlabError:
                pass
    # another thread on another row: alive together, so that their idents differ (a thread
    # started after another's join may take its ident, and so its row: 1 run in about 256
    # failed when that row was this thread's)
    threads = [threading.Thread(target=other) for _ in range(20)]
    for t in threads:
        t.start()
    chosen += [t.ident for t in threads if jiterrors._error_row(t.ident) != me][:1]
    go.set()
    for t in threads:
        t.join()
    assert chosen
    again = SlabError("numslab.jit: as Python makes this thread's exception again",
                      numslab.errors.JIT_RAISE)
    assert again.detail[0] == mine and f"address {mine:#x}" in str(again)
    assert again.args == ("numslab.jit: as Python makes this thread's exception again",)


def test_an_error_made_by_hand_reads_no_compiled_detail(sa):
    """A ``SlabError`` a user makes with a text starting ``numslab.jit:`` took the detail of
    the thread's last compiled raise (its address, cache, call); only compiled raises, which
    pass ``errors.JIT_RAISE``, read it now, and their ``args`` are the text alone."""
    c = sa.kmem_cache_create("byhand", 64)
    bad = (1 << 44) + 8                                 # outside the arena
    with pytest.raises(numslab.BadAddressError) as raised:
        free_one(sa.handle, c.id, bad)
    assert raised.value.args == (raised.value.args[0],) and len(raised.value.args) == 1
    assert raised.value.detail[0] == bad and f"{bad:#x}" in str(raised.value)
    for cls in (SlabError, numslab.BadAddressError, numslab.SlabDebugError):
        mine = cls("numslab.jit: my own message")
        assert mine.detail == (-1, -1, -1) and str(mine) == "numslab.jit: my own message"
        assert mine.args == ("numslab.jit: my own message",)
    text = "numslab.jit: count larger than the array's {bound} entries"   # a compiled raise's
    assert str(numslab.InvalidSizeError(text)) == text      # placeholder, in a user's: kept
    assert numslab.SlabDebugError("x", ["r1"]).reports == ["r1"]


def test_threads_a_page_apart_get_rows_of_their_own():
    """glibc puts threads 0x801000 apart; the row was hashed from the pointer itself, and
    every third thread shared a row: the second to raise there took the first's detail away
    (0.3% of errors bare in a helper's stress run). The page number is hashed now."""
    from numslab.drivers import jiterrors
    for base in (0x7F0000000640, 0x7F1234567640, 0x7FFFF7D8A640):
        rows = {jiterrors._error_row(base + k * 0x801000) for k in range(16)}
        assert len(rows) == 16


def test_a_copy_or_pickle_of_an_error_keeps_its_own_detail(sa):
    """Numba pickles a raise's exception when it compiles it, so the exception reads its
    detail when it is made again at the raise; a copy or pickle of one raised read it again
    too, and named the thread's later raise instead (its call, its refused value)."""
    import copy
    import pickle
    c = sa.kmem_cache_create("copied", 64)
    a = sa.kmem_cache_alloc(c)
    sa.kmem_cache_free(c, a)
    with pytest.raises(numslab.DoubleFreeError) as first:
        free_one(sa.handle, c.id, a)
    with pytest.raises(numslab.SlabError):
        free_one(sa.handle, c.id, a + 8)                # a later raise in this thread
    text = str(first.value)
    assert text.startswith("numslab.jit.kmem_cache_free: double free") and f"{a:#x}" in text
    for dup in (copy.copy(first.value), copy.deepcopy(first.value),
                pickle.loads(pickle.dumps(first.value))):
        assert type(dup) is numslab.DoubleFreeError and str(dup) == text
        assert dup.detail == first.value.detail


def test_kmem_cache_free_array_s_errors_name_it(sa):
    """``kmem_cache_free_array`` is ``kmem_cache_free_bulk``'s, and its errors named that
    call, which the user's function does not make."""
    c = sa.kmem_cache_create("arrays", 64)
    arr = np.array([sa.kmem_cache_alloc(c)] * 2, np.int64)
    with pytest.raises(numslab.DoubleFreeError, match=r"^numslab\.jit\.kmem_cache_free_array: "
                                                      r"double free within the batch"):
        _free_array(sa.handle, c.id, 2, arr)
    with pytest.raises(numslab.InvalidSizeError, match=r"^numslab\.jit\.kmem_cache_free_array: "
                                                       r"count negative or larger than the "
                                                       r"array's 2 entries \(got 5, cache id "
                                                       rf"{c.id} 'arrays'\)$"):
        _free_array(sa.handle, c.id, 5, arr)      # (the cache named: h21's trial)
    sa.kmem_cache_free(c, int(arr[0]))
    sa.validate()


@numba.njit
def _free_array(h, cid, nr, objs):
    nj.kmem_cache_free_array(h, cid, nr, objs)


def test_a_bool_argument_is_refused_as_the_python_api_refuses_it(sa):
    """``numslab.jit.kmalloc(h, True)`` allocated one byte and a cache id of ``True`` was
    cache 1 (kmalloc-16); the Python API refuses bools as sizes and ids."""
    @numba.njit
    def km(h, size):
        return numslab.jit.kmalloc(h, size)

    @numba.njit
    def alloc(h, cid):
        return numslab.jit.kmem_cache_alloc(h, cid)
    with pytest.raises(TypeError, match="must be an integer, not bool"):
        km(sa.handle, True)
    with pytest.raises(TypeError, match="must be an integer, not bool"):
        alloc(sa.handle, True)
    assert km(sa.handle, 8) > 0


def test_help_of_numslab_jit_says_how_to_call_it_threads_and_handles():
    """``help(numslab.jit)`` showed one line pointing at a private module; what a user needs
    (the usage, the GIL rule, what keeps a handle's allocator alive) is in it now."""
    doc = numslab.jit.__doc__
    for said in ("sa.handle", "ConcurrentUseError", "nogil=True", "AllocatorGoneError"):
        assert said in doc, said


@numba.njit
def _jit_free_bulk(h, cid, n, objs):
    nj.kmem_cache_free_bulk(h, cid, n, objs)


def test_a_debug_refusal_of_a_batch_free_says_a_chain_stays_and_how_to_free_it():
    # it said "the object stays allocated" while a whole detached freelist (34 objects) stayed,
    # and its objects is None: the text must say which stay and how to free them
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="FZ")
    c = sa.kmem_cache_create("flow", 96)
    out = c.alloc_bulk(40)
    sa.memory[out[3] + 96] = 1                          # a right red zone overwritten
    with pytest.raises(numslab.SlabDebugError, match="refused a detached freelist of the "
                       "batch: its objects stay allocated") as e:
        _jit_free_bulk(sa.handle, c.id, 40, out)
    assert e.value.objects is None and "is_live" in str(e.value)
    assert "element" in str(e.value) and 1 < len(c) < 40
    for a in [int(a) for a in out if nj.is_live(sa.handle, c.id, a)]:
        try:
            sa.kmem_cache_free(c, a)
        except numslab.SlabDebugError:                  # marked free ahead of the failing one
            sa.kmem_cache_free(c, a)
    assert len(c) == 0
    sa.validate()


def test_help_shows_gfp_by_name_and_the_node_keyword_only():
    """``help(numslab.jit)`` showed ``gfp=3264`` and ``kmem_cache_alloc_node(h, cache, node,
    cpu=0, gfp=3264)``, a node in place that the call refuses."""
    import inspect
    assert str(inspect.signature(nj.kmem_cache_alloc_node)) == \
        "(h, cache, *, node, cpu=0, gfp=GFP_KERNEL)"
    assert str(inspect.signature(nj.kmalloc)) == "(h, size, cpu=0, gfp=GFP_KERNEL)"
    assert str(inspect.signature(nj.kfree)) == "(h, addr, cpu=0)"
    import pydoc
    assert "3264" not in pydoc.render_doc(numslab.jit, renderer=pydoc.plaintext)


def test_a_wrong_type_refused_as_the_caller_compiles_is_a_slab_error(sa):
    """An int32 array, a float count, a handle in a global and an int for the handle were
    refused with a bare TypeError, which ``except numslab.SlabError`` missed (the node in
    place was already ``WrongTypeError``)."""
    c = sa.kmem_cache_create("types", 64)
    h = sa.handle

    @numba.njit
    def int32_out(h, cid):
        out = np.empty(4, np.int32)
        return nj.kmem_cache_alloc_bulk(h, cid, 4, out)

    @numba.njit
    def float_count(h, cid):
        out = np.empty(4, np.int64)
        return nj.kmem_cache_alloc_bulk(h, cid, 4.0, out)

    @numba.njit
    def frozen(cid):
        return nj.kmem_cache_alloc(h, cid)

    for f, args, said in ((int32_out, (h, c.id), "must be a writable contiguous"),
                          (float_count, (h, c.id), "must be an integer"),
                          (frozen, (c.id,), "global or closure variable"),
                          (int32_out, (int(h), c.id), "the first argument must be")):
        with pytest.raises(numslab.WrongTypeError, match=said) as e:
            f(*args)
        assert isinstance(e.value, SlabError) and isinstance(e.value, TypeError)
    assert len(c) == 0


def test_njit_frees_of_a_barn_are_refused_naming_a_barn():
    """A 7.x cache's struct node_barn is a kmalloc-64 object the allocator holds: each
    ``numslab.jit`` free refuses it with nothing changed, saying it may be a barn (the text
    said "a sheaf" only)."""
    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=2, memory="8M", kernel="7.0")
    k = sa.find_cache("kmalloc-64")
    b = int(sa.barn_addresses()[3])
    snap = snapshot(sa)
    for call, args in ((kfree_one, (sa.handle, b)),
                       (kfree_many, (sa.handle, 1, np.array([b], np.int64))),
                       (free_one, (sa.handle, k.id, b))):
        with pytest.raises(numslab.BadAddressError, match=f"a sheaf, a node barn or a random "
                                                          f"sequence.*the allocator uses.*"
                                                          f"{b:#x}"):
            call(*args)
        assert_unchanged(sa, snap)
