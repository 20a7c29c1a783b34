"""The floor of any checked allocator (``numslab.tools.checkfloor``): it must make the brief's
double-free check, or its figure is no floor. Checked against a plain-Python oracle of a free
pool over random batches, good and bad, with both forms of its free."""
import numpy as np
import pytest

from numslab.tools import bench
from numslab.tools import checkfloor as C


def _bad_batch(rng, live: set, cap: int, n: int) -> tuple[list, int]:
    """A batch of ``n`` live objects with one bad one at a random index: out of the pool,
    free (a double free) or a second copy of an earlier object; the batch and that index."""
    good = rng.choice(sorted(live), size=n, replace=False).tolist()
    at = int(rng.integers(n))
    kind = rng.integers(3) if at else rng.integers(2)
    free = sorted(set(range(cap)) - live)
    good[at] = [int(rng.choice([-1, cap, cap + 7, -(1 << 40)])),
                int(rng.choice(free)) if free else cap, good[int(rng.integers(at or 1))]][kind]
    return good, at


def _check_state(cs: C.CheckedStack, live: set, cap: int) -> None:
    """The module's invariant: the stack's free indices are the oracle's, each at the
    position it remembers; the run above the top live, no index twice, each at the position
    it remembers."""
    free = cs.free_set()
    assert sorted(free) == sorted(set(range(cap)) - live)
    assert all(cs.pos[x] == i for i, x in enumerate(free))
    t, hi = int(cs.top[0]), int(cs.top[1])
    assert t <= hi <= cap
    run = cs.stack[t:hi].tolist()
    assert set(run) <= live and len(set(run)) == len(run)
    assert all(cs.pos[x] == t + i for i, x in enumerate(run))


def _run_made_bad(rng, run: list, live: set, cap: int) -> tuple[list, int]:
    """The batch the last allocations took, in its order, one index made bad: out of the pool,
    free, or a copy of an earlier one; the batch and that index."""
    at = int(rng.integers(len(run)))
    kind = rng.integers(3) if at else rng.integers(2)
    free = sorted(set(range(cap)) - live)
    run = list(run)
    run[at] = [int(rng.choice([-1, cap, cap + 7, -(1 << 40)])),
               int(rng.choice(free)) if free else cap, run[int(rng.integers(at or 1))]][kind]
    return run, at


@pytest.mark.parametrize("seed", range(6))
def test_batches_against_a_plain_python_pool(seed):
    """Every allocation hands out free indices only (all or nothing); every free takes back
    exactly the live ones and refuses, at the first bad index and with the free set and its
    order as they were, an index out of the pool, a free one or one twice in the batch."""
    rng = np.random.default_rng(seed)
    cap = 64
    cs = C.CheckedStack(cap)
    live: set[int] = set()
    for _ in range(400):
        n = int(rng.integers(1, 20))
        if rng.random() < 0.45:
            out = np.full(n, -5, np.int64)
            got = cs.alloc_bulk(n, out)
            if cap - len(live) < n:
                assert got == 0 and (out == -5).all()
            else:
                assert got == n and not live & set(out.tolist())
                assert len(set(out.tolist())) == n
                live |= set(out.tolist())
        elif live and rng.random() < 0.5:
            objs, at = _bad_batch(rng, live, cap, min(n, len(live)))
            before = cs.free_set()
            assert cs.free_bulk(len(objs), np.array(objs, np.int64)) == at
            assert cs.free_set() == before
        elif live:
            objs = rng.choice(sorted(live), size=min(n, len(live)), replace=False)
            assert cs.free_bulk(len(objs), objs.astype(np.int64)) == -1
            live -= set(objs.tolist())
        _check_state(cs, live, cap)


@pytest.mark.parametrize("seed", range(6))
def test_frees_of_the_run_against_a_plain_python_pool(seed):
    """Frees of the run's start (the indices the last allocations took, in their order: one
    vector compare, no check an index at a time), good or with one bad index, among other
    frees and allocations: each refused at its first bad index with the free set and its
    order as they were, each good one taken whole."""
    rng = np.random.default_rng(100 + seed)
    cap = 64
    cs = C.CheckedStack(cap)
    live: set[int] = set()
    for _ in range(600):
        t, hi = int(cs.top[0]), int(cs.top[1])
        run = cs.stack[t:hi].tolist()
        r = rng.random()
        if r < 0.35 or not live:
            n = int(rng.integers(1, 12))
            out = np.zeros(n, np.int64)
            if cs.alloc_bulk(n, out) == n:
                live |= set(out.tolist())
        elif run and r < 0.8:
            k = int(rng.integers(1, len(run) + 1))
            good = rng.random() < 0.5
            objs, at = (run[:k], -1) if good else _run_made_bad(rng, run[:k], live, cap)
            if rng.random() < 0.1:                  # one past the run: a free or out of pool
                objs, at = run[:k] + [int(cs.stack[t - 1]) if t else cap], k
            before = cs.free_set()
            assert cs.free_bulk(len(objs), np.array(objs, np.int64)) == at
            if at < 0:
                live -= set(objs)
                assert cs.free_set() == before + objs
            else:
                assert cs.free_set() == before
        else:
            objs = rng.choice(sorted(live), size=min(int(rng.integers(1, 12)), len(live)),
                              replace=False).tolist()
            before = cs.free_set()
            assert cs.free_bulk(len(objs), np.array(objs, np.int64)) == -1
            live -= set(objs)
            assert cs.free_set() == before + objs
        _check_state(cs, live, cap)


def test_a_stale_index_above_the_top_is_no_run():
    """An index freed since it was allocated, its old place above the top still holding it, is
    refused: a free that is not the run's start ends the run."""
    cs = C.CheckedStack(8)
    a, b = np.zeros(1, np.int64), np.zeros(1, np.int64)
    assert cs.alloc_bulk(1, b) == 1 and cs.alloc_bulk(1, a) == 1      # b = 7, a = 6
    assert cs.free_bulk(1, b) == -1                     # not the run's start: pushed at 6
    assert cs.stack[7] == b[0]                          # b's old place still holds it
    before = cs.free_set()
    assert cs.free_bulk(1, b) == 0 and cs.free_set() == before        # b again: double free
    assert cs.free_bulk(2, np.array([a[0], b[0]])) == 1 and cs.free_set() == before
    assert cs.free_bulk(1, a) == -1 and cs.free_set() == before + [int(a[0])]
    _check_state(cs, set(), 8)


def test_the_run_stops_at_the_pool_end():
    """A batch that matches the stack past the run's end (the word after the pool's stack
    holding the index asked for) is checked an index at a time: refused there."""
    cs = C.CheckedStack(8)
    past = np.arange(9, dtype=np.int64)                 # the word past the pool holds 8
    cs.stack = past[:8]
    out = np.zeros(2, np.int64)
    assert cs.alloc_bulk(2, out) == 2 and out.tolist() == [6, 7]
    assert cs.free_bulk(3, np.array([6, 7, 8])) == 2 and cs.free_set() == list(range(6))
    assert cs.free_bulk(2, np.array([6, 7])) == -1
    _check_state(cs, set(), 8)


@pytest.mark.parametrize("form", ["push", "copy"])
def test_both_forms_of_the_free_refuse_what_the_oracle_refuses(form):
    """The loop's two forms of the free (``_free_push`` from ``PUSH_FROM`` objects,
    ``_free_copy`` below) take a good batch whole and refuse each kind of bad one at its
    index, the free set and its order as they were."""
    free = C._free_push if form == "push" else C._free_copy
    rng = np.random.default_rng(7)
    cap = 96
    for trial in range(60):
        cs = C.CheckedStack(cap)
        n = int(rng.integers(1, 40))
        out = np.zeros(n, np.int64)
        cs.alloc_bulk(n, out)
        live = set(out.tolist())
        objs, at = _bad_batch(rng, live, cap, n) if trial % 3 else (out.tolist(), -1)
        before = cs.free_set()
        t = int(cs.top[0])
        r = free(cs.stack, cs.pos, np.uint64(t), n, np.array(objs, np.int64))
        if at < 0:
            assert r == t + n
            cs.top[0] = r
            _check_state(cs, set(), cap)
        else:
            assert r == -1 - at and cs.free_set() == before


@pytest.mark.parametrize("bulk", [1, 16, 250])
def test_the_loop_does_what_the_calls_do(bulk):
    """The round written in the loop (what the benchmarks time) leaves the free set and the
    batch as the two calls do, round by round."""
    a, b = C.CheckedStack(512), C.CheckedStack(512)
    perm = np.random.default_rng(bulk).permutation(512)
    for cs in (a, b):
        cs.stack[:] = perm
        cs.pos[perm] = np.arange(512)
    oa, ob = np.zeros(bulk, np.int64), np.zeros(bulk, np.int64)
    for _ in range(3):
        a.run(bulk, 1, oa)
        assert b.alloc_bulk(bulk, ob) == bulk and b.free_bulk(bulk, ob) == -1
        assert a.free_set() == b.free_set() and np.array_equal(oa, ob)
    assert len(set(oa.tolist())) == bulk
    _check_state(a, set(), 512)


def test_the_loop_reports_a_refused_round():
    """A round with a bulk above the pool pops nothing and gives back its batch (free
    indices): refused at the round's free, the free set as it was."""
    cs = C.CheckedStack(8)
    with pytest.raises(RuntimeError, match="refused"):
        cs.run(9, 1, np.zeros(9, np.int64))
    assert cs.free_set() == list(range(8))


def test_a_refused_round_ends_the_run():
    """A refused round's check may have written the positions of the run's indices: the run
    ends there, and the indices are freed by the check an index at a time."""
    cs = C.CheckedStack(8)
    out = np.zeros(6, np.int64)
    assert cs.alloc_bulk(6, out) == 6                   # the run: 2..7, the top at 2
    batch = np.array([3, 2, 0, 0], np.int64)            # 0 is free: refused at index 2
    with pytest.raises(RuntimeError, match="refused"):
        cs.run(4, 1, batch)
    assert cs.free_set() == [0, 1]
    _check_state(cs, set(range(2, 8)), 8)
    assert cs.free_bulk(2, np.array([2, 3])) == -1 and cs.free_set() == [0, 1, 2, 3]
    _check_state(cs, set(range(4, 8)), 8)


@pytest.mark.parametrize("inside_jit", [False, True])
def test_make_round_times_the_checked_stack(inside_jit):
    run = bench.make_round("floor-checks", 16, inside_jit)
    run(3)                                      # steady state: every round gives all back
