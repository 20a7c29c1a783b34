"""The floor of any checked allocator (``numslab.tools.checkfloor``): it must make the brief's
double-free check, or its figure is no floor. Checked against a plain-Python oracle of a free
pool over random batches, good and bad."""
import numpy as np
import pytest

from numslab.tools import bench
from numslab.tools import checkfloor as C


def _bad_batch(rng, live: set, cap: int, n: int) -> tuple[list, int]:
    """A batch of ``n`` objects with one bad one at a random index: out of the pool, free
    (a double free) or a second copy of an earlier object; the batch and that index."""
    good = rng.choice(sorted(live), size=n, replace=False).tolist()
    at = int(rng.integers(n))
    kind = rng.integers(3) if at else rng.integers(2)
    free = sorted(set(range(cap)) - live)
    good[at] = [int(rng.choice([-1, cap, cap + 7, -(1 << 40)])),
                int(rng.choice(free)) if free else cap, good[0]][kind]
    return good, at


@pytest.mark.parametrize("seed", range(6))
def test_batches_against_a_plain_python_pool(seed):
    """Every allocation hands out free indices only (all or nothing); every free takes back
    exactly the live ones and refuses, at the first bad index and with every array as it
    was, an index out of the pool, a free one or one twice in the batch."""
    rng = np.random.default_rng(seed)
    cap = 64
    cs = C.CheckedStack(cap)
    live: set[int] = set()
    for _ in range(300):
        n = int(rng.integers(1, 20))
        if rng.random() < 0.5:
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
            before = [a.copy() for a in (cs.stack, cs.top, cs.live)]
            assert cs.free_bulk(len(objs), np.array(objs, np.int64)) == at
            for a, b in zip((cs.stack, cs.top, cs.live), before):
                assert np.array_equal(a, b)
        elif live:
            objs = rng.choice(sorted(live), size=min(n, len(live)), replace=False)
            assert cs.free_bulk(len(objs), objs.astype(np.int64)) == -1
            live -= set(objs.tolist())
        top = int(cs.top[0])                    # the partition: free stack and live marks
        assert sorted(cs.stack[:top].tolist()) == sorted(set(range(cap)) - live)
        assert set(np.flatnonzero(cs.live).tolist()) == live


@pytest.mark.parametrize("bulk", [1, 16, 250])
def test_the_loop_does_what_the_calls_do(bulk):
    """The round written in the loop (what the benchmarks time) leaves the state and the
    batch as the two calls do, round by round."""
    a, b = C.CheckedStack(512), C.CheckedStack(512)
    b.stack[:] = a.stack[:] = np.random.default_rng(bulk).permutation(512)
    oa, ob = np.zeros(bulk, np.int64), np.zeros(bulk, np.int64)
    for _ in range(3):
        a.run(bulk, 1, oa)
        assert b.alloc_bulk(bulk, ob) == bulk and b.free_bulk(bulk, ob) == -1
        for x, y in ((a.stack, b.stack), (a.top, b.top), (a.live, b.live), (oa, ob)):
            assert np.array_equal(x, y)
    assert not a.live.any() and len(set(oa.tolist())) == bulk


def test_the_loop_reports_a_refused_round():
    """A broken pool (an index free twice on the stack) is caught at the round's free."""
    cs = C.CheckedStack(8)
    cs.stack[:] = 3
    with pytest.raises(RuntimeError, match="refused"):
        cs.run(2, 1, np.zeros(2, np.int64))


@pytest.mark.parametrize("inside_jit", [False, True])
def test_make_round_times_the_checked_stack(inside_jit):
    run = bench.make_round("floor-checks", 16, inside_jit)
    run(3)                                      # steady state: every round gives all back
