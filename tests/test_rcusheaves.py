"""kfree_rcu through the CPUs' rcu_free sheaves (``kfree_rcu_sheaf``, ``rcu_free_sheaf``,
``pcs_flush_all``, ``flush_all_rcu_sheaves``), on both generations: 7.0's default caches,
6.18's caches created with ``sheaf_capacity`` (and 6.18's others, which take the list)."""
from __future__ import annotations

import numba
import numpy as np
import pytest

import numslab
from numslab import jit as nj
from numslab.engine.layout import (C_RCU_FREE, F_G, G_NRCU, G_RCU_HEAD, MAX_EMPTY_SHEAVES,
                                   MAX_FULL_SHEAVES, N_NR_EMPTY, N_NR_FULL, SH_OBJECTS, SH_SIZE,
                                   view)

from conftest import assert_unchanged, snapshot

KERNELS = ("7.0", "7.1", "6.18")


def machine(kernel: str, **kw) -> numslab.SlabAllocator:
    """A 2-CPU allocator (1 node unless ``nr_nodes`` says otherwise)."""
    kw.setdefault("nr_cpus", 2)
    kw.setdefault("memory", "32M")
    return numslab.SlabAllocator(kernel=kernel, **kw)


def sheafed(sa: numslab.SlabAllocator, name: str = "rcu") -> numslab.KmemCache:
    """A cache with sheaves: 7.0's default, 6.18's opt-in with sheaf_capacity 4."""
    if sa.kernel != "6.18":
        return sa.kmem_cache_create(name, 64)
    return sa.kmem_cache_create(name, 64, sheaf_capacity=4)


def rcu_free(sa: numslab.SlabAllocator, c: numslab.KmemCache, cpu: int = 0) -> int:
    """Address of ``cpu``'s rcu_free sheaf of ``c`` (0: none)."""
    return int(sa.state.cpu[c.id, cpu, C_RCU_FREE])


def rcu_size(sa: numslab.SlabAllocator, c: numslab.KmemCache, cpu: int = 0) -> int:
    """Objects in ``cpu``'s rcu_free sheaf of ``c``."""
    s = rcu_free(sa, c, cpu)
    return int(sa._mem[(s >> 3) + SH_SIZE]) if s else 0


def waiting(sa: numslab.SlabAllocator) -> int:
    """Sheaves handed to call_rcu and waiting for their grace period."""
    return int(view(sa.state.buf, F_G)[G_NRCU])


def counters(c: numslab.KmemCache, *names: str) -> tuple[int, ...]:
    st = c.stats
    return tuple(st[n] for n in names)


def test_kfree_rcu_fills_the_rcu_free_sheaf_and_a_full_one_reaches_the_barn(kernel):
    sa = machine(kernel)
    c = sheafed(sa)
    cap = c.sheaf_capacity
    objs = [c.alloc() for _ in range(cap + 2)]
    for a in objs[:cap - 1]:
        sa.kfree_rcu(a, 0)
        sa.validate()
    assert counters(c, "free_rcu_sheaf", "free_rcu_sheaf_fail") == (cap - 1, 0)
    assert rcu_size(sa, c) == cap - 1 and waiting(sa) == 0
    assert not sa._rcu_pending                              # not on the list
    assert all(sa.find(a)["kind"] == "kfree_rcu" for a in objs[:cap - 1])
    assert len(c) == 3                                      # no longer the user's
    assert c.live_objects - c.sheaf_objects == 3            # held by the allocator
    got = [sa.kmem_cache_alloc(c, cpu=cpu) for cpu in (0, 1) for _ in range(2 * cap)]
    assert not set(got) & set(objs[:cap - 1])               # not handed out
    sa.validate()
    assert sa.synchronize_rcu() == 0                        # a part-full sheaf stays
    assert rcu_size(sa, c) == cap - 1
    sa.kfree_rcu(objs[cap - 1], 0)                          # full: to call_rcu
    assert rcu_free(sa, c) == 0 and waiting(sa) == 1
    head = int(view(sa.state.buf, F_G)[G_RCU_HEAD])         # a handle: object + arena size
    assert head - sa.memory.size in sa.sheaf_addresses().tolist()
    sa.validate()
    more = [c.alloc() for _ in range(2 * cap)]              # still not handed out
    assert not set(more) & set(objs[:cap])
    sa.validate()
    full, puts = int(sa.state.node[c.id, 0, N_NR_FULL]), c.stats["barn_put"]
    assert sa.synchronize_rcu() == cap                      # rcu_free_sheaf: to the barn
    assert waiting(sa) == 0
    assert sa.state.node[c.id, 0, N_NR_FULL] == full + 1
    assert c.stats["barn_put"] == puts + 1
    sa.validate()
    again = [c.alloc() for _ in range(3 * cap)]             # the barn's full sheaf serves
    assert set(objs[:cap]) <= set(again)
    sa.validate()


def test_a_part_full_rcu_free_sheaf_goes_at_shrink_or_kvfree_rcu_barrier(kernel):
    for end in ("shrink", "barrier"):
        sa = machine(kernel)
        c = sheafed(sa)
        objs = [c.alloc() for _ in range(3)]
        sa.kfree_rcu(objs[0], 0)
        sa.kfree_rcu(objs[1], 1)
        assert rcu_size(sa, c, 0) == rcu_size(sa, c, 1) == 1
        if end == "shrink":                 # pcs_flush_all: to call_rcu, not yet freed
            c.shrink()
            assert rcu_free(sa, c, 0) == rcu_free(sa, c, 1) == 0 and waiting(sa) == 2
            assert sa.state.sl_inuse[objs[0] >> 12] >= 1
            sa.validate()
        flushed, freed = counters(c, "sheaf_flush", "sheaf_free")
        if end == "shrink":
            assert sa.synchronize_rcu() == 2            # rcu_free_sheaf_nobarn
        else:
            assert sa.kvfree_rcu_barrier() == 2         # flush_all_rcu_sheaves + barrier
        assert waiting(sa) == 0 and rcu_free(sa, c, 0) == 0
        st = c.stats
        assert st["sheaf_flush"] - flushed == 2 and st["sheaf_free"] - freed == 2
        assert len(c) == 1
        sa.validate()
        c.free(objs[2])
        sa.kmem_cache_destroy(c)
        sa.validate()


def test_past_max_full_sheaves_the_rcu_sheaf_is_flushed_to_the_slabs(kernel):
    sa = machine(kernel, memory="64M")
    c = sheafed(sa)
    cap = c.sheaf_capacity
    n = MAX_FULL_SHEAVES + 2
    objs = [c.alloc() for _ in range(n * cap)]
    full = int(sa.state.node[c.id, 0, N_NR_FULL])
    for a in objs:
        sa.kfree_rcu(a, 0)
    assert waiting(sa) == n and rcu_free(sa, c) == 0
    sa.validate()
    before = counters(c, "barn_put", "barn_put_fail", "sheaf_flush")
    empty = int(sa.state.node[c.id, 0, N_NR_EMPTY])
    assert sa.synchronize_rcu() == n * cap
    puts = MAX_FULL_SHEAVES - full
    after = counters(c, "barn_put", "barn_put_fail", "sheaf_flush")
    assert after[0] - before[0] == puts
    assert after[1] - before[1] == n - puts
    assert after[2] - before[2] == (n - puts) * cap
    assert sa.state.node[c.id, 0, N_NR_FULL] == MAX_FULL_SHEAVES
    assert sa.state.node[c.id, 0, N_NR_EMPTY] == min(empty + n - puts, MAX_EMPTY_SHEAVES)
    assert len(c) == 0
    sa.validate()


def test_a_free_of_an_object_in_an_rcu_sheaf_is_a_double_free(kernel):
    sa = machine(kernel)
    c = sheafed(sa)
    cap = c.sheaf_capacity
    km = sa.find_cache("kmalloc-64")
    objs = [c.alloc() for _ in range(cap + 1)]
    for a in objs[:cap]:                        # one full sheaf waiting for call_rcu
        sa.kfree_rcu(a, 0)
    sa.kfree_rcu(objs[cap], 0)                  # one in the CPU's rcu_free sheaf
    assert waiting(sa) == 1 and rcu_size(sa, c) == 1
    k = sa.kmalloc(64)
    if km.sheaf_capacity:                       # kmalloc-64 has sheaves: its rcu_free too
        sa.kfree_rcu(k, 1)
        assert rcu_size(sa, km, 1) == 1
    keep = c.alloc()
    snap = snapshot(sa)
    msg = "double free, the object is waiting for an RCU grace period"
    for a in (objs[0], objs[cap]):
        for call in (lambda: c.free(a), lambda: sa.kfree(a), lambda: sa.kfree_rcu(a),
                     lambda: c.free_bulk(np.array([keep, a])),
                     lambda: sa.kfree_bulk(2, np.array([a, keep]))):
            with pytest.raises(numslab.DoubleFreeError, match=msg):
                call()
            assert_unchanged(sa, snap)
    for call in (lambda: sa.krealloc(k, 500), lambda: sa.kfree(k), lambda: sa.kfree_rcu(k)):
        if km.sheaf_capacity:
            with pytest.raises(numslab.DoubleFreeError, match=msg):
                call()
            assert_unchanged(sa, snap)
    c.free(keep)
    if not km.sheaf_capacity:
        sa.kfree(k)
    assert sa.kvfree_rcu_barrier() == cap + 1 + (km.sheaf_capacity > 0)
    assert len(c) == 0
    sa.validate()


def test_remote_node_objects_and_caches_without_sheaves_take_the_list(kernel):
    sa = machine(kernel, nr_cpus=4, nr_nodes=2)
    c = sheafed(sa)
    a = sa.kmem_cache_alloc_node(c, node=1)
    local = sa.kmem_cache_alloc_node(c, node=0)
    assert sa.cpu_to_node(0) == 0
    sa.kfree_rcu(a, 0)                          # kfree_rcu_sheaf: slab_nid != numa_mem_id
    assert counters(c, "free_rcu_sheaf", "free_rcu_sheaf_fail") == (0, 0)
    assert list(sa._rcu_pending) == [a] and sa.find(a)["kind"] == "kfree_rcu"
    sa.kfree_rcu(local, 0)
    assert counters(c, "free_rcu_sheaf", "free_rcu_sheaf_fail") == (1, 0)
    sa.validate()
    if kernel == "6.18":                        # no s->cpu_sheaves: no stat at all
        plain = sa.kmem_cache_create("plain", 64)
        fail = 0
    else:                                       # 7.0: a debug cache has no sheaves
        plain = sa.kmem_cache_create("plain", 64, flags=numslab.SLAB_CONSISTENCY_CHECKS)
        fail = 1
    assert plain.sheaf_capacity == 0
    p = plain.alloc()
    sa.kfree_rcu(p, 0)
    assert counters(plain, "free_rcu_sheaf", "free_rcu_sheaf_fail") == (0, fail)
    assert sa.find(p)["kind"] == "kfree_rcu"
    with pytest.raises(numslab.DoubleFreeError, match="waiting for an RCU grace period"):
        plain.free(p)
    assert sa.synchronize_rcu() == 2            # the list; the rcu_free sheaf stays
    assert sa.find(a)["kind"] == sa.find(p)["kind"] == "free object"
    assert rcu_size(sa, c, 0) == 1
    assert sa.kvfree_rcu_barrier() == 1
    sa.validate()


def test_a_double_free_says_which_rcu_sheaf_holds_the_object(kernel):
    """An object in a CPU's part-full rcu_free sheaf was "waiting for an RCU grace period, in
    an rcu_free sheaf" even after ``synchronize_rcu()``, which reads as a grace period that did
    not end (a new user's trial): it names the CPU's sheaf and what hands it to RCU; an object
    of a sheaf handed to ``call_rcu`` keeps the plain text."""
    sa = machine(kernel)
    c = sheafed(sa)
    cap = c.sheaf_capacity
    objs = [c.alloc() for _ in range(cap + 1)]
    for a in objs:
        sa.kfree_rcu(a, 1)                      # one full sheaf handed over, one on CPU 1
    assert waiting(sa) == 1 and rcu_size(sa, c, 1) == 1
    on_cpu = r"in CPU 1's rcu_free sheaf: .* kvfree_rcu_barrier\(\) .* not at synchronize_rcu"
    for free in (c.free, sa.kfree, sa.kfree_rcu):
        with pytest.raises(numslab.DoubleFreeError, match=on_cpu):
            free(objs[cap])
        with pytest.raises(numslab.DoubleFreeError, match=r"grace period \(kfree_rcu, in an "
                                                            r"rcu_free sheaf\)$"):
            free(objs[0])
    assert sa.synchronize_rcu() == cap          # the handed sheaf's objects: free again
    with pytest.raises(numslab.DoubleFreeError, match=on_cpu):
        sa.kfree(objs[cap])                     # still on its CPU
    assert sa.kvfree_rcu_barrier() == 1
    sa.validate()


def test_save_and_load_keep_the_rcu_sheaves(kernel, tmp_path):
    sa = machine(kernel)
    c = sheafed(sa)
    cap = c.sheaf_capacity
    objs = [c.alloc() for _ in range(cap + 3)]
    for a in objs[:cap + 2]:
        sa.kfree_rcu(a, 1)                      # one full sheaf waiting, two on CPU 1
    listed = sa.kmalloc(20000)                  # large: on the list
    sa.kfree_rcu(listed)
    path = tmp_path / "m.npz"
    sa.save(path)
    back = numslab.SlabAllocator.load(path)
    bc = back.find_cache("rcu")
    assert waiting(back) == 1 and rcu_size(back, bc, 1) == 2
    assert back._rcu_pending == sa._rcu_pending
    back.validate()
    snap = snapshot(back)
    for x, xc in ((back, bc), (sa, c)):
        with pytest.raises(numslab.DoubleFreeError, match="waiting for an RCU grace period"):
            xc.free(objs[0])
        with pytest.raises(numslab.DoubleFreeError, match="waiting for an RCU grace period"):
            x.kfree(objs[cap])
    assert_unchanged(back, snap)
    assert back.synchronize_rcu() == sa.synchronize_rcu() == cap + 1
    assert back.kvfree_rcu_barrier() == sa.kvfree_rcu_barrier() == 2
    assert snapshot(back)[1].tobytes() == snapshot(sa)[1].tobytes()
    assert len(bc) == len(c) == 1
    back.validate()
    sa.validate()


def test_destroy_waits_for_the_rcu_sheaves_in_flight(kernel):
    sa = machine(kernel)
    c = sheafed(sa)
    other = sheafed(sa, "other")
    cap = c.sheaf_capacity
    objs = [c.alloc() for _ in range(cap + 2)]
    o = other.alloc()
    for a in objs:
        sa.kfree_rcu(a, 0)
    sa.kfree_rcu(o, 1)
    assert waiting(sa) == 1 and rcu_size(sa, c) == 2
    sa.kmem_cache_destroy(c)                    # no leak: nothing of it waits any more
    assert c not in sa.caches and waiting(sa) == 0
    assert rcu_size(sa, other, 1) == (1 if kernel != "6.18" else 0)
    sa.validate()
    sa.kvfree_rcu_barrier()
    sa.kmem_cache_destroy(other)
    sa.validate()


def test_a_refused_destroy_leaves_the_objects_waiting_for_their_grace_period(kernel):
    """A destroy refused for a leak changes nothing: it ended the cache's grace periods first
    (the kernel's order), so the objects given to ``kfree_rcu`` were freed by a refused call."""
    sa = machine(kernel)
    for c in (sheafed(sa), sa.kmem_cache_create("plain", 64)):     # 6.18: the list's objects
        objs = [c.alloc() for _ in range(40)]                   # are allocated till then
        for a in objs[:-1]:
            sa.kfree_rcu(a, 0)
        snap = snapshot(sa)
        with pytest.raises(numslab.CacheLeakError, match="1 live object"):
            sa.kmem_cache_destroy(c)
        assert_unchanged(sa, snap)
        assert {sa.find(a)["kind"] for a in objs[:-1]} == {"kfree_rcu"}
        sa.validate()
        c.free(objs[-1])
        sa.kmem_cache_destroy(c)                # the grace periods end now, as in the kernel
        assert c not in sa.caches and waiting(sa) == 0
        sa.validate()


@numba.njit
def _jit_free(h, cid, addr):
    nj.kmem_cache_free(h, cid, addr)


def test_numslab_jit_refuses_an_object_in_an_rcu_sheaf(kernel):
    sa = machine(kernel)
    c = sheafed(sa)
    a, b = c.alloc(), c.alloc()
    sa.kfree_rcu(a, 0)
    snap = snapshot(sa)
    with pytest.raises(numslab.DoubleFreeError):
        _jit_free(sa.handle, c.id, a)
    assert_unchanged(sa, snap)
    _jit_free(sa.handle, c.id, b)
    assert sa.kvfree_rcu_barrier() == 1 and len(c) == 0
    sa.validate()


def _point_a_free_list_at(sa: numslab.SlabAllocator, c: numslab.KmemCache,
                          held: set[int]) -> int | None:
    """Rewrite one free list of ``c`` to name an object of ``held`` in the same slab, in the
    place of the free object it led to (two stray writes, plain pointers, as in
    test_sheaves); the named object, or None when no slab fits."""
    w, st = sa.memory.view(np.int64), sa.state
    for slab in np.flatnonzero(st.sl_freelist).tolist():
        f = int(st.sl_freelist[slab])
        g = int(w[(f + c.offset) >> 3])
        ys = [y for y in sorted(held) if y >> 12 == slab]
        if st.sl_cache[slab] == c.id and g and ys:
            w[(f + c.offset) >> 3] = ys[0]
            w[(ys[0] + c.offset) >> 3] = w[(g + c.offset) >> 3]
            return ys[0]
    return None


def test_an_object_an_rcu_sheaf_holds_is_never_handed_out_while_it_waits(kernel):
    """A free pointer rewritten to name an object waiting in an rcu sheaf: the walk refuses
    it (its RCU mark, field ``rcu``) and isolates the slab. Before, the slab layer handed it
    out while it waited (it is not live), and the sheaf's guard (``_sheaf_purge``) only
    kept it from going out a second time when the grace period ended."""
    for seed in range(40):                  # the first seed whose state has such a slab
        sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel, seed=seed,
                                   freelist_hardened=False, freelist_random=False)
        c = sa.kmem_cache_create("x", 64, sheaf_capacity=8)
        objs = np.zeros(400, np.int64)
        assert sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, 400, objs, cpu=1) == 400
        order = objs[np.random.default_rng(seed).permutation(400)].tolist()
        for x in order[200:]:
            sa.kmem_cache_free(c, x, cpu=1)
        for x in order[:c.sheaf_capacity + 3]:  # a full sheaf waiting, a part-full one
            sa.kfree_rcu(x, 1)
        assert waiting(sa) == 1 and rcu_size(sa, c, 1) == 3
        waits = set(sa._rcu_sheaf_objects())
        named = _point_a_free_list_at(sa, c, waits)
        if named is not None:
            break
    else:
        raise AssertionError("no seed gave a slab to rewrite")
    out, errors = [], 0
    for step in range(600):
        if step == 300:                     # the grace period ends: the sheaves give out
            sa.kvfree_rcu_barrier()
            sa.validate()                   # no sheaf in the barn holds a live object
        try:
            out.append(sa.kmem_cache_alloc(c, cpu=0 if step < 300 else 1))
        except numslab.SlabCorruptionError:
            errors += 1
        if step < 300:
            assert not set(out) & waits, f"{named:#x} handed out while it waited"
    assert len(out) == len(set(out)), "an address was handed out twice"
    assert errors >= 1 and len(sa.isolated_slabs())
    sa.validate()


def test_no_sheaf_to_be_had_counts_free_rcu_sheaf_fail_and_takes_the_list(kernel):
    sa = machine(kernel, nr_cpus=1, memory="4M")
    c = sheafed(sa)
    cap = c.sheaf_capacity
    objs = [c.alloc() for _ in range(4 * cap)]
    size = 32 + 8 * cap                         # a sheaf: the header, then objects[]
    while sa.alloc_pages(0):                    # memory exhausted: no new sheaf
        pass
    while sa.kmalloc(size):
        pass
    sa.validate()
    taken = 0
    for a in objs:                              # the spare and the barn's empties go first
        sa.kfree_rcu(a, 0)
        if c.stats["free_rcu_sheaf_fail"]:
            break
        taken += 1
    assert counters(c, "free_rcu_sheaf", "free_rcu_sheaf_fail") == (taken, 1)
    assert taken < len(objs)
    assert list(sa._rcu_pending) == [a] and sa.find(a)["kind"] == "kfree_rcu"
    sa.validate()
    assert sa.synchronize_rcu() == 1 + (taken // cap) * cap
    assert sa.find(a)["kind"] == "free object"
    sa.validate()


def test_a_stray_write_over_every_sheafs_object_changes_nothing(kernel):
    """A sheaf is a kmalloc object among the user's, but its words live in the shadow half:
    an overflow of the object before it (here: every byte of every sheaf's object, the
    CPUs', the barn's, a prefilled one and those waiting for their grace period) reaches
    none of them. Before, such a write into a main sheaf's size word or entries made the
    next allocation read outside the arena (a segfault); the waiting ones were caught."""
    sa = machine(kernel)
    c = sheafed(sa)
    cap = c.sheaf_capacity
    objs = [c.alloc() for _ in range(5 * cap)]
    for a in objs[:3 * cap]:
        sa.kfree_rcu(a, 0)                      # three full sheaves waiting
    for a in objs[3 * cap:]:
        c.free(a)                               # main, spare (and the barn) full
    pre = sa.kmem_cache_prefill_sheaf(c, numslab.GFP_KERNEL, cap)
    assert waiting(sa) == 3
    sheaves = sa.sheaf_addresses()
    assert len(sheaves) >= sa.nr_cpus + 4
    for obj in sheaves.tolist():
        assert sa.find(obj)["kind"] == "sheaf"
        sa.memory[obj:obj + sa.ksize(obj)] = 0x41
    sa.memory[:4096] = 0x41                     # and reserved frame 0 (NO_SHEAF is not there)
    got = [c.alloc() for _ in range(8 * cap)]
    assert len(set(got)) == len(got)
    assert all(sa.find(a)["kind"] == "object" and sa.find(a)["cache"] is c for a in got)
    assert sa.synchronize_rcu() == 3 * cap      # every callback ran, nothing reported
    got += [sa.kmem_cache_alloc_from_sheaf(c, numslab.GFP_KERNEL, pre) for _ in range(cap)]
    assert 0 not in got and len(set(got)) == len(got)
    sa.validate()
    c.free_bulk(np.array(got, np.int64))
    sa.kmem_cache_return_sheaf(c, numslab.GFP_KERNEL, pre)
    sa.validate()
    assert len(c) == 0


@pytest.mark.parametrize("words", [1, 4])
def test_a_waiting_sheaf_set_wrong_is_reported_not_followed(kernel, words):
    """The waiting list is still checked before it is followed, against words set wrong by
    other means than a user's write (here through ``sa._mem``, the shadow half): its link
    (1 word: the sheaves after it are found again) or its whole header (4 words: it is
    left alone with its objects). The grace period raises SlabCorruptionError after running
    every callback it can."""
    sa = machine(kernel)
    c = sheafed(sa)
    cap = c.sheaf_capacity
    objs = [c.alloc() for _ in range(3 * cap)]
    for a in objs:
        sa.kfree_rcu(a, 0)                      # three full sheaves waiting
    assert waiting(sa) == 3
    first = int(view(sa.state.buf, F_G)[G_RCU_HEAD])
    held = set(sa._mem[(first >> 3) + SH_OBJECTS:(first >> 3) + SH_OBJECTS + cap].tolist())
    assert sa.find(first - sa.memory.size)["kind"] == "sheaf"
    sa._mem[first >> 3:(first >> 3) + words] = 0x4141414141414141
    puts = c.stats["barn_put"]
    with pytest.raises(numslab.SlabCorruptionError,
                       match=rf"^synchronize_rcu: the sheaf at {first:#x} waiting for its "
                             rf"grace period was overwritten .*: {words // 4} sheaves"):
        sa.synchronize_rcu()
    assert waiting(sa) == 0
    assert c.stats["barn_put"] - puts == (3 if words == 1 else 2)     # the others' ran
    got = [c.alloc() for _ in range(4 * cap)]   # nothing left alone is handed out
    assert len(set(got)) == len(got) and (words == 1 or not set(got) & held)
    assert sa.synchronize_rcu() == 0
    if words == 1:                              # nothing lost: every invariant holds
        sa.validate()


def test_a_stray_write_into_the_rcu_free_sheafs_size_is_not_followed(kernel):
    """The CPU's part-full rcu_free sheaf's size word overwritten: kfree_rcu wrote the object
    wherever it pointed. It now hands that sheaf to call_rcu (its run leaves it alone and
    reports it) and takes another."""
    sa = machine(kernel)
    c = sheafed(sa)
    objs = [c.alloc() for _ in range(3)]
    sa.kfree_rcu(objs[0], 0)
    rcu = rcu_free(sa, c)
    sa._mem[(rcu >> 3) + SH_SIZE] = 1 << 40
    sa.kfree_rcu(objs[1], 0)                    # into a new rcu_free sheaf
    assert rcu_free(sa, c) not in (0, rcu) and rcu_size(sa, c) == 1 and waiting(sa) == 1
    with pytest.raises(numslab.SlabCorruptionError, match="1 sheaves whose words"):
        sa.kvfree_rcu_barrier()
    assert sa.find(objs[1])["kind"] == "free object" and waiting(sa) == 0
    c.free(objs[2])


@pytest.mark.parametrize("where", ["link", "rcu_free size"])
def test_the_lookups_survive_a_stray_write_into_an_rcu_sheaf(kernel, where):
    """The counters, validate and sheaf_addresses walk the waiting list through the
    sheaves' own links: one overwritten crashed validate and live_objects (a segfault) and
    sheaf_addresses (IndexError); and validate named no cache for a cache its users hold
    nothing of (``bad.name if bad``: the cache's length), or raised ValueError when that
    length came out negative from an overwritten size word."""
    sa = machine(kernel)
    c = sheafed(sa)
    objs = [c.alloc() for _ in range(3 * c.sheaf_capacity + 2)]
    for a in objs:
        sa.kfree_rcu(a, 0)                      # three sheaves waiting, two on CPU 0
    if where == "link":
        first = int(view(sa.state.buf, F_G)[G_RCU_HEAD])
        sa._mem[first >> 3] = 0x4141414141414141        # its link, set wrong
    else:
        sa._mem[(rcu_free(sa, c) >> 3) + SH_SIZE] = 0x7f7f7f7f7f7f7f7f
    with pytest.raises(numslab.SlabCorruptionError,
                       match=r"^validate: .* \((cache (x|rcu|kmalloc-\d+), )?sheaf at "):
        sa.validate()
    assert isinstance(c.live_objects, int) and isinstance(c.objects, int)
    assert len(sa.sheaf_addresses()) and sa.slabinfo()
    sa.kmem_cache_validate(c)
    with pytest.raises(numslab.SlabCorruptionError, match="^synchronize_rcu: the sheaf at"):
        sa.kvfree_rcu_barrier()
    if where == "link":                         # every sheaf was found again
        assert len(c) == 0
        sa.validate()


def test_a_free_pointer_rewritten_to_name_an_object_on_the_kfree_rcu_list_is_refused(kernel):
    """A stray write into a freed object that points its free pointer at an object waiting
    on the ``kfree_rcu`` list: that object was handed out while it waited (a listed object
    is no longer live, and the walk took "not live" for free), and the grace period's end
    then freed it under its new owner. Now the walk refuses it (field ``rcu``), the slab is
    isolated, and the grace period frees the object as it should. On every path that takes
    the list: 6.18's caches without sheaves, 7.x's caches without sheaves
    (SLAB_NOLEAKTRACE), and debug caches of both."""
    kinds = [numslab.SLAB_CONSISTENCY_CHECKS]
    kinds += [0] if kernel == "6.18" else [numslab.SLAB_NOLEAKTRACE]
    for flags in kinds:
        sa = machine(kernel, nr_cpus=1, memory="4M", freelist_hardened=False,
                     freelist_random=False)
        c = sa.kmem_cache_create("c", 64, flags=flags)
        objs = [c.alloc() for _ in range(c.objs_per_slab)]     # one full slab
        x, y = objs[10], objs[20]
        sa.kfree_rcu(x)
        assert list(sa._rcu_pending) == [x]           # on the list, no sheaf
        c.free(y)
        sa.memory[y + c.offset:y + c.offset + 8] = np.frombuffer(x.to_bytes(8, "little"),
                                                                 np.uint8)
        sa.memory[x + c.offset:x + c.offset + 8] = 0            # and x's: the list's end
        got, refused = [], 0
        for _ in range(6):
            try:
                got.append(c.alloc())
            except (numslab.SlabCorruptionError, numslab.SlabDebugError) as e:
                refused += 1                        # (a debug cache's names the slab it
                if isinstance(e, numslab.SlabDebugError):       # isolated: "object 0x0")
                    assert str(e).startswith(f"allocation from c: the slab at "
                                             f"{x >> 12 << 12:#x}: "), str(e)
        assert x not in got and len(set(got)) == len(got), (flags, [hex(a) for a in got])
        assert refused >= 1 and len(sa.isolated_slabs()) == 1
        assert sa.synchronize_rcu() == 1
        with pytest.raises(numslab.DoubleFreeError):     # the grace period freed it
            sa.kfree(x)
        sa.validate()


def test_validate_finds_a_kfree_rcu_mark_on_an_object_not_on_the_list(kernel):
    """Field ``rcu`` marks exactly the slab objects on the ``kfree_rcu`` list: validate
    lifts the marks of the listed ones while it runs and finds any other."""
    from numslab.engine.layout import F_RCU
    sa = machine(kernel, nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("c", 64, flags=numslab.SLAB_CONSISTENCY_CHECKS)
    listed, other = c.alloc(), c.alloc()
    sa.kfree_rcu(listed)
    sa.validate()                               # its mark is the list's
    rcu = view(sa._buf, F_RCU)
    assert rcu[listed >> 9] >> ((listed >> 3) & 63) & 1
    rcu[other >> 9] |= 1 << ((other >> 3) & 63)
    with pytest.raises(numslab.SlabCorruptionError, match="waiting for kfree_rcu is not on the "
                       f"kfree_rcu list nor in an RCU sheaf \\(object at {other:#x}\\)"):
        sa.validate()
    rcu[other >> 9] &= ~(1 << ((other >> 3) & 63))
    assert sa.synchronize_rcu() == 1
    assert not rcu.any()                        # the grace period lifted the list's mark
    sa.validate()


def test_validate_finds_an_object_on_the_kfree_rcu_list_without_its_mark(kernel):
    """The other way round: each object on the list carries its mark (a slab object's RCU
    bit with its live bit clear, a large kmalloc's PG_RCU); validate lifted the marks without
    looking, and a listed object the user could free again passed."""
    from numslab.engine.layout import F_LIVE, F_RCU, PG_RCU
    sa = machine(kernel, nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("c", 64, flags=numslab.SLAB_CONSISTENCY_CHECKS)
    obj, big = c.alloc(), sa.kmalloc(20000)
    sa.kfree_rcu(obj)
    sa.kfree_rcu(big)
    sa.validate()
    rcu, live = view(sa._buf, F_RCU), view(sa._buf, F_LIVE)
    bit = 1 << ((obj >> 3) & 63)
    rcu[obj >> 9] &= ~bit                       # unmarked, as if live again
    live[obj >> 9] |= bit
    with pytest.raises(numslab.SlabCorruptionError, match="on the kfree_rcu list or in an RCU "
                       f"sheaf has no RCU mark \\(object at {obj:#x}\\)"):
        sa.validate()
    rcu[obj >> 9] |= bit
    live[obj >> 9] &= ~bit
    sa.validate()
    sa.state.pg_flags[big >> 12] &= ~PG_RCU
    with pytest.raises(numslab.SlabCorruptionError,
                       match=f"has no RCU mark \\(object at {big:#x}\\)"):
        sa.validate()
    sa.state.pg_flags[big >> 12] |= PG_RCU
    assert sa.synchronize_rcu() == 2
    sa.validate()


def test_validate_finds_an_rcu_sheaf_object_without_its_mark(kernel):
    """The objects of the RCU sheaves (a CPU's rcu_free sheaf, those waiting for their grace
    period) carry the RCU mark too, and lose it when their grace period ends."""
    from numslab.engine.layout import F_RCU
    sa = machine(kernel, nr_cpus=1, memory="4M")
    c = sheafed(sa)
    objs = [c.alloc() for _ in range(c.sheaf_capacity + 2)]
    for a in objs:
        sa.kfree_rcu(a)                         # a full sheaf waiting, a part-full one
    assert waiting(sa) == 1 and rcu_size(sa, c) == 2
    sa.validate()
    rcu = view(sa._buf, F_RCU)
    bit = lambda a: 1 << ((a >> 3) & 63)        # noqa: E731
    assert all(rcu[a >> 9] & bit(a) for a in objs)
    # (under 6.18 the count of a CPU slab's objects reads the RCU marks too, to tell the
    # objects a stray write made its freelist skip: the count's check may come first)
    for a in (objs[0], objs[-1]):               # one waiting, one on the CPU
        rcu[a >> 9] &= ~bit(a)
        with pytest.raises(numslab.SlabCorruptionError,
                           match=f"in an RCU sheaf has no RCU mark \\(object at {a:#x}\\)" +
                                 ("|live objects differ from the live bitmap.s count"
                                  if kernel == "6.18" else "")):
            sa.validate()
        rcu[a >> 9] |= bit(a)
    stray = c.alloc()
    rcu[stray >> 9] |= bit(stray)
    with pytest.raises(numslab.SlabCorruptionError,
                       match=f"nor in an RCU sheaf \\(object at {stray:#x}\\)"):
        sa.validate()
    rcu[stray >> 9] &= ~bit(stray)
    c.free(stray)
    assert sa.kvfree_rcu_barrier() == len(objs)
    assert not rcu.any()
    sa.validate()
