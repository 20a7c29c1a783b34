"""The ``-lag`` bulk rounds (``numslab.tools.lagbench``): each round frees the oldest of the
batches in flight and allocates a new one in its place, numslab's and the jitted stack's alike,
checked against a plain-Python model of the batches."""
import numpy as np
import pytest

import numslab
from numslab.tools import bench
from numslab.tools import lagbench as L

KERNELS = ("7.0", "6.18")


def test_the_stack_round_frees_the_oldest_batch_and_pops_it_back():
    """A LIFO stack hands the batch it was just given back: every round leaves the batches in
    flight and the free indices as they were, each index in exactly one place."""
    st = bench.JitStack(100)
    run = L.make_lag_round("jit-stack-lag", 5, st)
    outs = run.outs
    before = outs.copy()
    assert int(st.top[0]) == 100 - L.LAG * 5
    run(3)
    assert np.array_equal(outs, before)
    free = st.stack[:int(st.top[0])].tolist()
    assert sorted(free + outs.ravel().tolist()) == list(range(100))


@pytest.mark.parametrize("bulk", [1, 16, 250])
def test_the_slab_round_frees_the_oldest_batch_and_allocates_one_there(kernel, bulk):
    """Round ``r`` frees row ``r % LAG`` of the batches in flight and allocates into it: with one
    address of row ``j`` made misaligned, rounds ``0..j-1`` run and round ``j``'s free is
    refused, changing nothing; the rows always hold exactly the cache's live objects."""
    for j in (0, 3, L.LAG - 1):
        sa, c = bench.new_bench_cache(memory="16M", kernel=kernel)
        outs = np.zeros((L.LAG, bulk), np.int64)
        assert L.fill_lag(sa, c, bulk, outs) == L.LAG * bulk
        L.slab_loop_lag(sa.handle, c.id, bulk, 2 * L.LAG, outs)     # every row round twice
        assert sorted(c.live_addresses().tolist()) == sorted(outs.ravel().tolist())
        assert len(np.unique(outs)) == L.LAG * bulk
        outs[j, -1] += 8
        L.slab_loop_lag(sa.handle, c.id, bulk, j, outs)              # rows 0..j-1
        with pytest.raises(numslab.SlabError, match="aligned|grid|not the start"):
            L.slab_loop_lag(sa.handle, c.id, bulk, j + 1, outs)      # row j at round j
        outs[j, -1] -= 8
        assert sorted(c.live_addresses().tolist()) == sorted(outs.ravel().tolist())
        sa.validate()


def test_make_round_builds_both_inside_jit_only_and_sizes_the_arena():
    """Both are inside-@njit workloads of ``numslab bench`` (and of the ratio table); a batch
    whose eight copies pass the bench cache's 64 MiB gets an arena that holds them twice."""
    assert set(L.LAG_IMPLS) <= set(bench.JIT_IMPLS) and set(L.LAG_IMPLS) <= set(bench.RATIO_JIT)
    assert not set(L.LAG_IMPLS) & set(bench.PY_IMPLS)
    assert L.lag_memory(16, 256) == "64M"
    assert L.lag_memory(1 << 15, 256) == "128M"
    for impl in L.LAG_IMPLS:
        run = bench.make_round(impl, 64, inside_jit=True)
        assert run(L.LAG) is None
