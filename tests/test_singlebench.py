"""Issue 11's speed measures (``tools.singlebench``): the single-pair loops against oracles,
the call-cost table's calls, the tables' shapes; no timing is asserted."""
from __future__ import annotations


import numba
import numpy as np
import pytest

import numslab
from numslab.tools import bench, singlebench
from numslab.flags import GFP_ATOMIC

from conftest import cell, is_finite_positive, sheaf_counts

KERNELS = ("7.0", "6.18")       #: the benchmark loops run on both generations
SENTINEL = -7
PEERS = (bench.DequePool, bench.NumpyStack, bench.JitStack)


# ---- the single alloc+free pair ---------------------------------------------------------------
def test_xorshift_victims_are_in_range_and_spread():
    v = singlebench.xorshift_victims(4096)
    assert all(0 <= j < singlebench.SINGLE_LIVE for j in v)
    assert len(set(v)) == singlebench.SINGLE_LIVE          # every slot gets hit
    assert singlebench.xorshift_victims(3, live=1) == [0, 0, 0]
    assert singlebench.xorshift_victims(8, seed=1) != singlebench.xorshift_victims(8)


@pytest.mark.parametrize("cap,live,rounds", [(16, 4, 50), (4096, 256, 1000), (8, 8, 3),
                                             (singlebench.RING_CAPACITY, singlebench.SINGLE_LIVE, 5000)])
def test_ring_single_pair_matches_a_fifo_oracle(cap, live, rounds):
    from collections import deque
    free = deque(range(cap))                                 # the ring starts 0..cap-1, head first
    records = np.full((cap, 3), SENTINEL, np.int64)
    want_rec = records.copy()
    got = singlebench.ring_single_pair(records, cap, live, rounds, singlebench.SINGLE_SEED)
    held = []
    for k in range(live):
        held.append(free.popleft())
        want_rec[held[k], 0] = k
    acc = 0
    for r, j in enumerate(singlebench.xorshift_victims(rounds, live)):
        free.append(held[j])                       # FIFO: the freed index goes last
        held[j] = free.popleft()
        want_rec[held[j], 0] = r
        acc += held[j]
    assert got == acc
    assert np.array_equal(records, want_rec)


@pytest.mark.parametrize("sheaf_capacity", [0, singlebench.SINGLE_SHEAF_CAPACITY])
def test_slab_single_pair_matches_the_facade_and_frees_everything(sheaf_capacity, kernel):
    """The jitted loop allocates exactly what the same rounds through the facade allocate
    (the same engine), writes its words, and leaves nothing live."""
    rounds = 400
    sa, c = bench.new_bench_cache(memory="8M", sheaf_capacity=sheaf_capacity, kernel=kernel)
    ref, rc = bench.new_bench_cache(memory="8M", sheaf_capacity=sheaf_capacity, kernel=kernel)
    got = singlebench.slab_single_pair(sa.handle, c.id, singlebench.SINGLE_LIVE, rounds, singlebench.SINGLE_SEED)
    held = [ref.kmem_cache_alloc(rc, GFP_ATOMIC) for _ in range(singlebench.SINGLE_LIVE)]
    word = list(range(singlebench.SINGLE_LIVE))           # the word each slot's object holds
    acc = 0
    for r, j in enumerate(singlebench.xorshift_victims(rounds)):
        ref.kmem_cache_free(rc, held[j])
        held[j] = ref.kmem_cache_alloc(rc, GFP_ATOMIC)
        word[j] = r
        acc += held[j]
    assert got == acc                                # the same addresses, round by round
    assert c.offset != 0                             # the free pointer leaves word 0 alone
    slots = np.array(held, np.int64)                 # the same engine: the same last objects
    assert sa.memory.view(np.int64)[slots >> 3].tolist() == word
    assert len(set(held)) == singlebench.SINGLE_LIVE
    assert c.live_objects == 0
    assert (sheaf_counts(c)[0] > 0) == (bool(sheaf_capacity) or kernel == "7.0")
    sa.validate()
    for a in held:
        ref.kmem_cache_free(rc, a)
    assert rc.live_objects == 0


@pytest.mark.parametrize("impl", singlebench.SINGLE_IMPLS)
def test_make_single_pair_runs_again_and_again(impl, kernel):
    run = singlebench.make_single_pair(impl, kernel=kernel)
    first, again = run(300), run(300)
    assert first == singlebench.make_single_pair(impl, kernel=kernel)(300) != 0   # same state
    assert again != 0
    if impl == "fifo-ring":
        assert first == again                        # the ring starts afresh on every run
        assert cell(run, "records").shape == (singlebench.RING_CAPACITY, bench.OBJECT_SIZE // 8)
    else:
        sa = cell(run, "h")._owner                   # the handle keeps its allocator
        c = sa.find_cache("slab_bench_test")
        assert c.id == cell(run, "cid") and c.live_objects == 0
        assert (c.object_size, c.align) == (bench.OBJECT_SIZE, 64)
        default = 28 if kernel == "7.0" else 0      # 7.0's calculate_sheaf_capacity(256)
        assert sa.state.ca[c.id, numslab.engine.layout.CA_SHEAF_CAPACITY] == (
            max(singlebench.SINGLE_SHEAF_CAPACITY, default) if impl == "slab-sheaves" else default)
        sa.validate()


def test_make_single_pair_refuses_an_unknown_impl():
    with pytest.raises(ValueError, match="unknown implementation 'lifo'"):
        singlebench.make_single_pair("lifo")


def test_single_pair_table_shape():
    table = singlebench.single_pair_table(rounds=256, repeat=1)
    assert list(table) == list(singlebench.SINGLE_IMPLS)
    assert all(is_finite_positive(v) for v in table.values())
    cap = singlebench.RING_CAPACITY
    assert cap >= 2 * singlebench.SINGLE_LIVE and cap & (cap - 1) == 0   # sized like the live set


# ---- the cost of one call from Python ---------------------------------------------------------
@pytest.mark.parametrize("impl", [i for i in singlebench.CALL_IMPLS if i != "empty-njit"])
def test_make_calls_serves_every_call_from_the_sheaf(impl, kernel):
    bulk, calls = 4, 6
    alloc_all, free_all, sa, c, rows = singlebench.make_calls(impl, bulk, calls, kernel)
    assert c.live_objects == 0
    before = c.stats
    fast_before = sheaf_counts(c)
    alloc_all()
    taken = np.concatenate(rows)
    assert (taken > 0).all() and len(np.unique(taken)) == bulk * calls
    assert c.live_objects == bulk * calls
    assert all(numslab.jit.is_live(sa.handle, c.id, int(a)) for a in taken)
    free_all()
    after = c.stats
    assert c.live_objects == 0
    fast = sheaf_counts(c)
    assert fast[0] - fast_before[0] == bulk * calls
    assert fast[1] - fast_before[1] == bulk * calls
    assert after["alloc_slowpath"] == before["alloc_slowpath"]
    sa.validate()


def test_make_calls_empty_reference_does_nothing_with_the_same_arguments():
    """``empty-njit`` calls empty functions with the peers' arguments, an int for the handle:
    nothing allocated, the rows untouched."""
    alloc_all, free_all, sa, c, rows = singlebench.make_calls("empty-njit", 4, 6)
    assert cell(alloc_all, "a") is singlebench.empty_alloc_bulk
    assert cell(free_all, "f") is singlebench.empty_free_bulk
    h = cell(alloc_all, "h")
    assert type(h) is int and h == sa._handle
    before = c.stats
    alloc_all()
    free_all()
    assert all((o == 0).all() for o in rows) and c.live_objects == 0
    assert c.stats == before
    assert singlebench.empty_alloc_bulk(h, c.id, GFP_ATOMIC, 4, rows[0]) == 0
    assert singlebench.empty_free_bulk(h, c.id, 4, rows[0]) is None
    # the argument types are the peers' but for the handle
    sig_e = [numba.typeof(x) for x in (h, c.id, GFP_ATOMIC, 4, rows[0])]
    sig_u = [numba.typeof(x) for x in (sa.handle, c.id, GFP_ATOMIC, 4, rows[0])]
    assert sig_e[1:] == sig_u[1:] and sig_e[0] == numba.int64


def test_make_calls_refuses_an_unknown_impl():
    with pytest.raises(ValueError, match="unknown implementation 'ctypes'"):
        singlebench.make_calls("ctypes")


def test_user_bulk_peers_raise_as_the_facade_does():
    sa, c = bench.new_bench_cache(memory="8M", sheaf_capacity=16)
    out = np.zeros(4, np.int64)
    assert singlebench.user_alloc_bulk(sa.handle, c.id, GFP_ATOMIC, 4, out) == 4
    singlebench.user_free_bulk(sa.handle, c.id, 4, out)
    with pytest.raises(numslab.DoubleFreeError):
        singlebench.user_free_bulk(sa.handle, c.id, 4, out)
    assert c.live_objects == 0
    sa.validate()


def test_call_cost_tables_shape():
    one = singlebench.call_cost("facade", bulk=2, calls=3, repeat=2)
    assert list(one) == list(singlebench.CALL_OPS) and all(map(is_finite_positive, one.values()))
    table = singlebench.call_cost_table(bulk=2, calls=3, repeat=2)
    assert list(table) == list(singlebench.CALL_IMPLS)
    for row in table.values():
        assert list(row) == list(singlebench.CALL_OPS)
        assert all(is_finite_positive(v) for v in row.values())
