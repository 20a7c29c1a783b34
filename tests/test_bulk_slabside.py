"""7.0's bulk free past the sheaves, against a Python model of the kernel: detached freelists
(``build_detached_freelist``), then ``__slab_free`` per chain (full slabs to the partial tail
until ``min_partial``, emptied ones back to the CPU's pcp list), so the counters, the partial
list, every kept slab's free list and the pcp list come out as the model says."""
from __future__ import annotations

import numba
import numpy as np
import pytest

import numslab
from numslab import GFP_KERNEL, SLAB_ARRAY_ALLOC_PARTIAL, SLAB_HWCACHE_ALIGN
from numslab.engine.layout import NIL, P_COUNT, P_LISTS

from conftest import assert_unchanged, snapshot
from test_bulk import detached_rounds, slab_of

KERNELS = ("7.0", "7.1")
OBJS = 16
MIN_PARTIAL = 5


def model_slab_frees(rounds_chains, inuse):
    """``__slab_free`` (7.0, no CPU partial list) for each (slab, chain) in order, from
    ``inuse`` (slab -> objects in use; every slab starts full). Returns the counters, the
    partial list (head first), each listed slab's free list and the discarded slabs in the
    order they went back."""
    free = {s: [] for s in inuse}
    partial, discarded = [], []
    stats = {"free_slab": 0, "free_add_partial": 0, "free_remove_partial": 0}
    for s, chain in rounds_chains:
        prior = bool(free[s])
        free[s] = list(chain) + free[s]
        inuse[s] -= len(chain)
        if inuse[s] == 0 and len(partial) >= MIN_PARTIAL:
            if prior:
                partial.remove(s)
                stats["free_remove_partial"] += 1
            stats["free_slab"] += 1
            discarded.append(s)
        elif not prior:
            partial.append(s)
            stats["free_add_partial"] += 1
    return stats, partial, {s: free[s] for s in partial}, discarded


def pcp_list(sa, cpu=0, order=0):
    """The CPU's pcp list of ``order`` (node 0), head first."""
    out, pfn = [], int(sa.state.pcp[cpu, 0, P_LISTS + 2 * order])
    while pfn != NIL:
        out.append(pfn)
        pfn = int(sa.state.pg_next[pfn])
    return out


@pytest.mark.parametrize("order", ["sequential", "reversed", "random", "pairs", "partly"])
def test_bulk_free_past_the_sheaves_follows_the_kernel(sa, order):
    c = sa.kmem_cache_create("b256", 256, flags=SLAB_HWCACHE_ALIGN)
    assert c.objs_per_slab == OBJS
    nslabs = 24
    keep = np.zeros(0, np.int64)
    sa.kmem_cache_shrink(c)                 # no sheaf objects, no partial slab
    objs = np.empty(nslabs * OBJS, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, len(objs), objs) == len(objs)
    slabs = sorted({slab_of(a) for a in objs})
    assert len(slabs) == nslabs             # whole new slabs, none partial
    rng = np.random.default_rng(len(order))
    if order == "reversed":
        objs = objs[::-1].copy()
    elif order == "random":
        objs = rng.permutation(objs)
    elif order == "pairs":                  # two slabs interleaved at a time: swaps
        objs = objs.reshape(-1, 2, OBJS).transpose(0, 2, 1).ravel().copy()
    elif order == "partly":                 # a few objects of each slab stay allocated
        keep = objs[::7].copy()
        objs = rng.permutation(np.setdiff1d(objs, keep))
    before = c.stats
    pcp_before = pcp_list(sa)
    count_before = int(sa.state.pcp[0, 0, P_COUNT])
    arr = objs.copy()
    sa.kmem_cache_free_bulk(c, len(arr), arr, cpu=0)
    d = {k: v - before[k] for k, v in c.stats.items() if v != before[k]}
    done = d.pop("free_fastpath")           # 7.0: the main sheaf takes the first ones
    assert 0 < done < len(arr)
    assert (arr[:done] == objs[:done]).all()
    rest = objs[done:]
    expect_p, rounds = detached_rounds(rest)
    assert arr[done:].tolist() == expect_p  # permuted in place like the kernel
    chains, at = [], len(rest)
    for s, cnt in rounds:
        chains.append((s, expect_p[at - cnt:at]))
        at -= cnt
    inuse = {s: OBJS for s in slabs}
    stats, partial, freelists, discarded = model_slab_frees(chains, inuse)
    stats["free_slowpath"] = len(rest)
    d.pop("barn_put_fail", None)            # no empty sheaf for a full main: the rest to slabs
    assert d == {k: v for k, v in stats.items() if v}
    assert discarded or order == "partly"
    assert [slab_of(a) for a in c.partial_list()[:, 0]] == partial
    # the pcp list: every discarded slab pushed at its head, in the order they went back
    assert pcp_list(sa) == discarded[::-1] + pcp_before
    assert int(sa.state.pcp[0, 0, P_COUNT]) == count_before + len(discarded)
    for s in discarded:
        assert sa.state.sl_cache[s] == NIL
    # every kept slab's free list, walked by taking the partial slabs whole
    want = [a for s in partial for a in freelists[s]]
    out = np.empty(len(want), np.int64)
    got = sa.kmem_cache_alloc_array(c, GFP_KERNEL, len(want), out, SLAB_ARRAY_ALLOC_PARTIAL)
    assert got == len(want)
    assert out.tolist() == want
    sa.validate()
    sa.kmem_cache_free_bulk(c, got, out)
    if len(keep):
        sa.kmem_cache_free_bulk(c, len(keep), keep.copy())
    sa.validate()


@numba.njit(cache=True)
def jit_free_bulk(h, cid, n, arr):
    """``numslab.jit.kmem_cache_free_bulk`` from a user's function."""
    numslab.jit.kmem_cache_free_bulk(h, cid, n, arr)


@pytest.mark.parametrize("generation", ["7.0", "6.18"])
@pytest.mark.parametrize("cache_kind", ["b256", "kmalloc-64"])
def test_batch_check_refuses_every_address_inside_an_object(generation, cache_kind):
    """The batch check lets the live bit decide (no grid or bound test): byte offsets inside
    a live object other than its start (unaligned ones too), from Python and inside @njit,
    are refused with the element named and nothing changed."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=generation)
    if cache_kind == "b256":
        c = sa.kmem_cache_create("b256", 256, flags=SLAB_HWCACHE_ALIGN)
    else:
        c = next(k for k in sa.kmalloc_caches if k.name == "kmalloc-64")
    objs = c.alloc_bulk(3 * OBJS)
    size = c.slab_size
    for off in list(range(1, 9)) + [16, size // 2, size - 8, size - 1]:
        for where in (0, len(objs) - 1):
            bad = objs.copy()
            bad[where] += off
            snap = snapshot(sa)
            with pytest.raises(numslab.BadAddressError, match=f"element {where}"):
                sa.kmem_cache_free_bulk(c, len(bad), bad.copy())
            assert_unchanged(sa, snap)
            with pytest.raises(numslab.SlabError):
                jit_free_bulk(sa.handle, c.id, len(bad), bad.copy())
            assert_unchanged(sa, snap)
    sa.kmem_cache_free_bulk(c, len(objs), objs)
    sa.validate()
