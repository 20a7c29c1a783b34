"""The prefilled-sheaf API's refill from the barn ("mm/slub: refill prefilled sheaves from the
barn", generation ``next``) against 7.3 (the tree it was applied to), which refills from the
slabs: the barn's partial sheaf, what takes it and what gives it back, and the kfree_rcu
sheaves it makes room for."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numslab
from numslab import GFP_KERNEL, SLAB_HWCACHE_ALIGN
from numslab.engine.layout import (C_MAIN, C_SPARE, MAX_FULL_SHEAVES, N_BARN_EMPTY,
                                   N_BARN_FULL, N_NR_EMPTY, N_NR_FULL, SH_NEXT,
                                   SH_OBJECTS, SH_SIZE)

KERNELS = ("7.3", "next")


@pytest.fixture
def sn():
    """A 2-CPU allocator of generation next (the rules only it has), validated at the end."""
    a = numslab.SlabAllocator(nr_cpus=2, nr_nodes=1, memory="64M", kernel="next")
    yield a
    a.validate()


@pytest.fixture
def cn(sn):
    """The cache of :func:`sc` on :func:`sn`."""
    return sn.kmem_cache_create("pre", 256, flags=SLAB_HWCACHE_ALIGN)


@pytest.fixture
def sc(sa):
    """A 256-byte cache (sheaves of 28 objects, ``calculate_sheaf_capacity``'s) on the 2-CPU
    allocator."""
    return sa.kmem_cache_create("pre", 256, flags=SLAB_HWCACHE_ALIGN)


def size_of(sa, sheaf: int) -> int:
    return int(sa._mem[(sheaf >> 3) + SH_SIZE])


def objects_of(sa, sheaf: int) -> list[int]:
    w = (sheaf >> 3) + SH_OBJECTS
    return sa._mem[w:w + size_of(sa, sheaf)].tolist()


def barn(sa, c) -> tuple[int, int, int]:
    """(full sheaves, empty sheaves, the partial sheaf or 0) of node 0's barn."""
    row = sa.state.node[c.id, 0]
    return int(row[N_NR_FULL]), int(row[N_NR_EMPTY]), int(sa.state.barn_partial[c.id, 0])


def full_sheaves(sa, c) -> list[int]:
    out, s = [], int(sa.state.node[c.id, 0, N_BARN_FULL])
    while s:
        out.append(s)
        s = int(sa._mem[(s >> 3) + SH_NEXT])
    return out


def delta(c, before: dict) -> dict:
    now = c.stats
    return {k: now[k] - before[k] for k in now if now[k] != before[k]}


def stock_the_barn(sa, c, n: int) -> list[int]:
    """Give ``n`` full prefilled sheaves back to the barn (the first becomes the CPU's
    spare); the user sheaves left are none. The barn's full sheaves, first on the list
    first."""
    handles = [sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, c.sheaf_capacity)
               for _ in range(n + 1)]
    for h in handles:
        sa.kmem_cache_return_sheaf(c, GFP_KERNEL, h)
    assert barn(sa, c) == (n, 0, 0)
    return full_sheaves(sa, c)


def drained_user_sheaf(sa, c, left: int) -> tuple[int, list[int]]:
    """A prefilled sheaf (the CPU's spare, taken as it is) with ``left`` objects, and the
    objects allocated from it."""
    s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 1)
    got = [sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s)
           for _ in range(c.sheaf_capacity - left)]
    assert size_of(sa, s) == left
    return s, got


def refilled_from_the_barn(sa, c, n: int, left: int) -> tuple[list[int], int, list[int]]:
    """:func:`stock_the_barn` with ``n`` sheaves, then a user's sheaf drained to ``left``
    objects refilled to the capacity (under next: from the barn, leaving ``left`` objects of
    its first full sheaf as the partial one). The barn's full sheaves as they were, the user's
    sheaf and the objects allocated from it."""
    full = stock_the_barn(sa, c, n)
    s, got = drained_user_sheaf(sa, c, left)
    sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, c.sheaf_capacity)
    return full, s, got


def give_all_back(sa, c, sheaves: list[int], got: list[int]) -> None:
    """Take what ``sheaves`` hold, check no object came out twice, free every object taken
    (``got`` too) and give the sheaves back."""
    got = got + [sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, h) for h in sheaves
                 for _ in range(size_of(sa, h))]
    assert len(set(got)) == len(got) and 0 not in got
    c.free_bulk(np.array(got, np.int64))
    for h in sheaves:
        sa.kmem_cache_return_sheaf(c, GFP_KERNEL, h)
    sa.validate()


def test_a_refill_takes_the_barn_before_the_slabs(sa, sc):
    cap = sc.sheaf_capacity
    full = stock_the_barn(sa, sc, 3)
    s, got = drained_user_sheaf(sa, sc, 1)
    first = objects_of(sa, full[0])
    mine = objects_of(sa, s)
    st = sc.stats
    assert sa.kmem_cache_refill_sheaf(sc, GFP_KERNEL, s, cap) == s
    assert size_of(sa, s) == cap
    d = delta(sc, st)
    sa.validate()
    if sa.kernel == "7.3":                      # from the slabs; the barn as it was
        assert d["sheaf_refill"] == cap - 1 and "barn_get" not in d
        assert barn(sa, sc) == (3, 0, 0) and full_sheaves(sa, sc) == full
    else:                                       # the top of the barn's first full sheaf
        assert d == {"barn_get": 1}
        assert objects_of(sa, s) == mine + first[1:]
        assert barn(sa, sc) == (2, 0, full[0]) and full_sheaves(sa, sc) == full[1:]
        assert objects_of(sa, full[0]) == first[:1]
        assert full[0] - sa.memory.size in sa.sheaf_addresses().tolist()
        assert sa.find(full[0] - sa.memory.size)["kind"] == "sheaf"
    assert sc.live_objects == len(got)          # nothing handed out by the refill
    give_all_back(sa, sc, [s], got)


def test_the_partial_sheaf_goes_first_and_an_emptied_one_to_the_empty_list(sn, cn):
    cap = cn.sheaf_capacity
    full, s, got = refilled_from_the_barn(sn, cn, 2, 1)  # leaves 1 in full[0]
    assert barn(sn, cn) == (1, 0, full[0])
    left = objects_of(sn, full[0])
    second = objects_of(sn, full[1])
    got += [sn.kmem_cache_alloc_from_sheaf(cn, GFP_KERNEL, s) for _ in range(cap - 1)]
    st = cn.stats
    sn.kmem_cache_refill_sheaf(cn, GFP_KERNEL, s, 2)            # 1 of full[0], 26 of full[1]
    assert delta(cn, st) == {"barn_get": 1}
    assert objects_of(sn, s)[1:] == left + second[2:]
    assert barn(sn, cn) == (0, 1, full[1])                      # full[0] emptied
    assert objects_of(sn, full[1]) == second[:2]
    sn.validate()
    give_all_back(sn, cn, [s], got)


def test_what_the_barn_cannot_give_comes_from_the_slabs(sn, cn):
    cap = cn.sheaf_capacity
    full, s, got = refilled_from_the_barn(sn, cn, 1, 1)  # cap - 1 of full[0]
    got += [sn.kmem_cache_alloc_from_sheaf(cn, GFP_KERNEL, s) for _ in range(cap)]
    st = cn.stats
    assert sn.kmem_cache_refill_sheaf(cn, GFP_KERNEL, s, 1) == s
    d = delta(cn, st)                           # 1 from the barn, the rest from the slabs
    assert d["sheaf_refill"] == cap - 1 and "barn_get" not in d
    assert barn(sn, cn) == (0, 1, 0) and size_of(sn, s) == cap
    assert full_sheaves(sn, cn) == [] and sn.state.node[cn.id, 0, N_BARN_EMPTY] == full[0]
    sn.validate()
    give_all_back(sn, cn, [s], got)


def test_a_prefill_takes_the_partial_sheaf_into_a_new_sheaf(sn, cn):
    """``kmem_cache_prefill_sheaf`` with no spare and no full or empty barn sheaf allocates an
    empty sheaf, which ``__prefill_sheaf_pfmemalloc`` fills: the barn's partial sheaf first,
    then the slabs for the rest."""
    cap = cn.sheaf_capacity
    full, s, got = refilled_from_the_barn(sn, cn, 1, 2)  # cap - 2 of full[0]: 2 left
    assert barn(sn, cn) == (0, 0, full[0])
    left = objects_of(sn, full[0])
    st = cn.stats
    s2 = sn.kmem_cache_prefill_sheaf(cn, GFP_KERNEL, cap)
    d = delta(cn, st)
    d.pop("alloc_slab", None)                   # (as the slabs' refill needs)
    assert d == {"sheaf_prefill_slow": 1, "barn_get_fail": 1, "sheaf_alloc": 1,
                 "sheaf_refill": cap - len(left)}
    assert objects_of(sn, s2)[:len(left)] == left and size_of(sn, s2) == cap
    assert barn(sn, cn) == (0, 1, 0)                            # full[0], emptied
    assert s2 not in full
    sn.validate()
    give_all_back(sn, cn, [s, s2], got)


def test_a_partial_sheaf_that_gives_part_of_its_objects_stays_partial(sn, cn):
    cap = cn.sheaf_capacity
    full, s, got = refilled_from_the_barn(sn, cn, 1, 3)  # cap - 3 of full[0]: 3 left
    left = objects_of(sn, full[0])
    got.append(sn.kmem_cache_alloc_from_sheaf(cn, GFP_KERNEL, s))
    st = cn.stats
    sn.kmem_cache_refill_sheaf(cn, GFP_KERNEL, s, cap)          # 1 of the 3
    assert delta(cn, st) == {"barn_get": 1}
    assert objects_of(sn, s)[-1] == left[-1] and size_of(sn, s) == cap
    assert barn(sn, cn) == (0, 0, full[0]) and objects_of(sn, full[0]) == left[:-1]
    sn.validate()
    give_all_back(sn, cn, [s], got)


def exhausted_with_a_partial_sheaf():
    """A machine whose memory another cache took, and a cache whose barn holds an empty
    sheaf and a partial one of 4 objects; the user's sheaf (4 objects), the objects
    allocated from it, and the partial sheaf."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel="next")
    c = sa.kmem_cache_create("pre", 256, flags=SLAB_HWCACHE_ALIGN)
    cap = c.sheaf_capacity
    full, s, got = refilled_from_the_barn(sa, c, 2, 0)  # full[0] emptied
    got += [sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s) for _ in range(cap - 4)]
    sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, cap)           # cap - 4 of full[1]
    got += [sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s) for _ in range(cap - 4)]
    assert barn(sa, c) == (0, 1, full[1]) and size_of(sa, full[1]) == size_of(sa, s) == 4
    hog = sa.kmem_cache_create("hog", 256)
    out = np.zeros(64, np.int64)
    while sa.kmem_cache_alloc_bulk(hog, GFP_KERNEL, 64, out):   # every free page
        pass
    while n := sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 1, out):    # c's partial slabs (the
        got += out[:n].tolist()                                 # bulk path: not the barn)
    assert barn(sa, c) == (0, 1, full[1])
    return sa, c, s, got, full[1]


def test_a_refill_the_slabs_cannot_finish_keeps_what_the_barn_gave():
    sa, c, s, got, partial = exhausted_with_a_partial_sheaf()
    mine, left = objects_of(sa, s), objects_of(sa, partial)
    st = c.stats
    assert sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, c.sheaf_capacity) == 0   # -ENOMEM
    assert "barn_get" not in delta(c, st)
    assert objects_of(sa, s) == mine + left and barn(sa, c) == (0, 2, 0)  # partial emptied
    sa.validate()
    give_all_back(sa, c, [s], got)


def test_a_prefill_the_slabs_cannot_finish_flushes_what_the_barn_gave():
    sa, c, s, got, partial = exhausted_with_a_partial_sheaf()
    left = objects_of(sa, partial)
    st = c.stats
    assert sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, c.sheaf_capacity) == 0    # -ENOMEM
    d = delta(c, st)                            # the empty barn sheaf, 4 from the partial one
    assert d["sheaf_prefill_slow"] == 1 and d["barn_get_fail"] == 1
    assert d["sheaf_flush"] == len(left) == 4 and d["sheaf_free"] == 1
    assert barn(sa, c) == (0, 1, 0)             # the partial one, emptied, on the empty list
    assert all(sa.find(a)["kind"] == "free object" for a in left)
    sa.validate()
    give_all_back(sa, c, [s], got)


def test_the_barn_is_the_cpu_s_node_s(kernel):
    """A CPU refills from its own node's barn: a sheaf refilled on node 1 finds node 0's
    sheaves out of reach."""
    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=2, memory="16M", kernel=kernel)
    c = sa.kmem_cache_create("pre", 256, flags=SLAB_HWCACHE_ALIGN)
    cap = c.sheaf_capacity
    assert list(sa.state.cpu_node) == [0, 1]
    full = stock_the_barn(sa, c, 2)             # node 0's barn, from CPU 0
    s, got = drained_user_sheaf(sa, c, 1)
    st = c.stats
    sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, cap, cpu=1)
    d = delta(c, st)
    assert "barn_get" not in d and d["sheaf_refill"] == cap - 1
    assert full_sheaves(sa, c) == full and barn(sa, c) == (2, 0, 0)
    sa.validate()
    give_all_back(sa, c, [s], got)


def test_shrink_and_destroy_give_the_partial_sheaf_back(sa, sc):
    cap = sc.sheaf_capacity
    full, s, got = refilled_from_the_barn(sa, sc, 2, 1)
    partial = barn(sa, sc)[2]
    assert partial == (full[0] if sa.kernel == "next" else 0)
    got += [sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL, s) for _ in range(cap)]
    sc.free_bulk(np.array(got, np.int64))
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, s)
    sa.validate()
    cpus = [int(h) for h in sa.state.cpu[sc.id, :, [C_MAIN, C_SPARE]].ravel() if h]
    held = sum(size_of(sa, h) for h in cpus + full_sheaves(sa, sc) + [partial] if h)
    st = sc.stats
    sa.kmem_cache_shrink(sc)
    d = delta(sc, st)
    assert barn(sa, sc) == (0, 0, 0)
    assert d["sheaf_flush"] == held             # the partial sheaf's objects too
    if partial:                                 # its kmalloc object kfree'd
        assert sa.find(partial - sa.memory.size)["kind"] != "sheaf"
    assert sc.slabs == 0 and len(sc) == 0
    sa.validate()
    stock_the_barn(sa, sc, 1)
    s, got = drained_user_sheaf(sa, sc, 1)
    sa.kmem_cache_refill_sheaf(sc, GFP_KERNEL, s, cap)
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, s)
    sc.free_bulk(np.array(got, np.int64))
    sa.kmem_cache_destroy(sc)                   # with a partial sheaf under next
    sa.validate()
    assert all(c.name != "pre" for c in sa.caches)


def test_save_and_load_keep_the_partial_sheaf(sa, sc, tmp_path):
    cap = sc.sheaf_capacity
    full, s, got = refilled_from_the_barn(sa, sc, 2, 1)
    got += [sa.kmem_cache_alloc_from_sheaf(sc, GFP_KERNEL, s) for _ in range(cap)]
    sa.kmem_cache_return_sheaf(sc, GFP_KERNEL, s)
    sa.save(tmp_path / "m.npz")
    sb = numslab.SlabAllocator.load(tmp_path / "m.npz")
    cb = sb.caches[[c.name for c in sb.caches].index("pre")]
    assert sb.kernel == sa.kernel and barn(sb, cb) == barn(sa, sc)
    if sa.kernel == "next":
        assert barn(sb, cb)[2] == full[0]
        assert objects_of(sb, full[0]) == objects_of(sa, full[0])
    sb.validate()
    cb.free_bulk(np.array(got, np.int64))
    sb.kmem_cache_shrink(cb)
    assert barn(sb, cb) == (0, 0, 0) and len(cb) == 0
    sb.validate()
    sc.free_bulk(np.array(got, np.int64))


def test_rcu_sheaves_find_room_in_a_barn_a_prefill_refill_drew_from(kernel):
    """The patch's case: the barn's full list is at its limit, so a full ``kfree_rcu`` sheaf
    whose grace period ends is flushed to its slabs (BARN_PUT_FAIL). Under next a prefilled
    sheaf's refill first takes a full sheaf out of the barn, and the RCU sheaf goes in."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="64M", kernel=kernel)
    c = sa.kmem_cache_create("maple", 256, flags=SLAB_HWCACHE_ALIGN)
    cap = c.sheaf_capacity
    rcu = [c.alloc() for _ in range(cap)]      # (before the barn is stocked: not from it)
    stock_the_barn(sa, c, MAX_FULL_SHEAVES)
    s, got = drained_user_sheaf(sa, c, 0)
    for a in rcu:
        sa.kfree_rcu(a, 0)                      # a full rcu_free sheaf: to call_rcu
    assert barn(sa, c) == (MAX_FULL_SHEAVES, 0, 0)
    st = c.stats
    sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, cap)
    d = delta(c, st)
    if kernel == "next":                        # a whole barn sheaf: emptied
        assert d == {"barn_get": 1} and barn(sa, c) == (MAX_FULL_SHEAVES - 1, 1, 0)
    else:
        assert d["sheaf_refill"] == cap and barn(sa, c) == (MAX_FULL_SHEAVES, 0, 0)
    st = c.stats
    assert sa.synchronize_rcu() == cap
    d = delta(c, st)
    if kernel == "next":                        # room for the RCU sheaf
        assert d.get("barn_put") == 1 and "barn_put_fail" not in d and "sheaf_flush" not in d
    else:                                       # none: flushed to its slabs
        assert d.get("barn_put_fail") == 1 and d["sheaf_flush"] == cap
    assert barn(sa, c) == (MAX_FULL_SHEAVES, 1, 0)
    sa.validate()
    give_all_back(sa, c, [s], got)


def test_validate_finds_a_broken_partial_sheaf(kernel):
    """A partial sheaf linked to another, empty, full, or kept by 7.3 is reported."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="32M", kernel=kernel)
    c = sa.kmem_cache_create("pre", 256, flags=SLAB_HWCACHE_ALIGN)
    cap = c.sheaf_capacity
    full = stock_the_barn(sa, c, 2)
    row = sa.state.node[c.id, 0]
    if kernel == "7.3":                         # a barn sheaf moved to the partial column
        row[N_BARN_FULL] = full[1]
        row[N_NR_FULL] = 1
        sa.state.barn_partial[c.id, 0] = full[0]
        sa._mem[(full[0] >> 3) + SH_NEXT] = 0
        sa._mem[(full[0] >> 3) + SH_SIZE] = 2   # as a partial sheaf would hold
        with pytest.raises(numslab.SlabCorruptionError, match="barn's partial sheaf"):
            sa.validate()
        return
    s, got = drained_user_sheaf(sa, c, 1)
    sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, cap)
    assert sa.state.barn_partial[c.id, 0] == full[0]
    sa.validate()
    w = full[0] >> 3
    for word, value in ((w + SH_NEXT, full[1]), (w + SH_SIZE, 0), (w + SH_SIZE, cap)):
        old = int(sa._mem[word])
        sa._mem[word] = value
        with pytest.raises(numslab.SlabCorruptionError, match="barn's partial sheaf"):
            sa.validate()
        sa._mem[word] = old
        sa.validate()
    give_all_back(sa, c, [s], got)


#: Calls of the property test: (call, a number that picks the sheaf, object or size).
CALLS = st.lists(st.tuples(st.sampled_from(2 * ["prefill", "take", "refill", "return"] +
                                           ["rcu", "grace", "free"]),
                           st.integers(0, 1 << 30)),
                 min_size=20, max_size=60)


@settings(max_examples=30, deadline=None)
@given(calls=CALLS)
def test_random_prefill_calls_under_next_keep_every_invariant(calls):
    """Prefills, takes, refills and returns of sheaves of at most the capacity, with
    ``kfree_rcu`` filling the barn: the refills meet the barn's full and partial sheaves.
    The allocator agrees with a model of the sheaves held and the objects handed out, and
    every invariant holds after every call."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel="next")
    c = sa.kmem_cache_create("pre", 256, flags=SLAB_HWCACHE_ALIGN)
    cap = c.sheaf_capacity
    held: dict[int, int] = {}                   # sheaf -> objects it holds
    live: list[int] = []
    for call, n in calls:
        n = n * 2654435761 % (1 << 32)         # (spread hypothesis's small numbers out)
        mine = sorted(held)
        if call == "prefill":
            s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 1 + n % cap)
            assert s not in held and size_of(sa, s) >= 1 + n % cap
            held[s] = size_of(sa, s)
        elif call == "take" and mine:
            s = mine[n % len(mine)]
            for _ in range(min(held[s], 1 + n % cap)):
                a = sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s)
                assert a and a not in live
                live.append(a)
                held[s] -= 1
        elif call == "refill" and mine:
            s = mine[n % len(mine)]
            want = cap if n & 1 else 1 + n % cap
            assert sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, want) == s
            assert size_of(sa, s) >= max(held[s], want)
            held[s] = size_of(sa, s)
        elif call == "return" and mine:
            s = mine[n % len(mine)]
            sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s)
            del held[s]
        elif call in ("rcu", "free") and live:
            for _ in range(1 + n % cap):
                if not live:
                    break
                a = live.pop(n % len(live))
                if call == "rcu":
                    sa.kfree_rcu(a)
                else:
                    c.free(a)
        elif call == "grace":
            sa.synchronize_rcu()
        sa.validate()
        assert {s: size_of(sa, s) for s in held} == held
        assert set(c.live_addresses().tolist()) == set(live)
    for s in held:
        sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s)
    c.free_bulk(np.array(live, np.int64))
    sa.synchronize_rcu()
    sa.kmem_cache_shrink(c)
    assert len(c) == 0 and barn(sa, c) == (0, 0, 0)
    sa.validate()


@pytest.mark.parametrize("how", ["return", "prefill"])
def test_a_sheaf_refilled_on_its_way_back_or_out_keeps_its_objects_held_618(how):
    """6.18: ``kmem_cache_return_sheaf``'s slow path refills the sheaf (the spare taken)
    before the barn gets it, and ``kmem_cache_prefill_sheaf`` refills a spare too small for
    the request. A refill that exhausts the CPU slab gives it back (``deactivate_slab``),
    which records as lost the objects of the slab held by no sheaf: the sheaf being
    refilled, no longer (or not yet) the user's, held 11 of them, which went on counting in
    use for nobody (``live_objects`` -10, ``validate`` failing: the hypothesis model of
    tests/test_bulk.py found it)."""
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=1, nr_nodes=1, memory="8M", seed=5)
    c = sa.kmem_cache_create("m", 192, sheaf_capacity=13)      # 21 objects a slab
    s1 = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 1)
    live = [sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s1) for _ in range(2)]
    s2 = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 1)
    sa.kmem_cache_free(c, live.pop())
    sa.kmem_cache_shrink(c)             # no CPU slab; the slab of s1's objects partial
    if how == "return":
        sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s2)          # the spare
        sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s1)          # slow: refilled, to the barn
        held = []
    else:
        sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s1)          # the spare, 11 objects
        s3 = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 13)    # takes it, refills it
        assert s3 == s1 and sa.kmem_cache_sheaf_size(s3) == 13
        held = [s2, s3]
    assert c.lost_objects == 0
    assert c.live_objects == len(live)
    sa.validate()
    for s in held:
        sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s)
    sa.kmem_cache_free(c, live.pop())
    assert c.live_objects == 0 and c.lost_objects == 0
    sa.validate()
