"""Node partial lists and ``kmem_cache_shrink``'s re-ordering, against a naive oracle."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

import numslab
from numslab.engine.layout import P_COUNT

from conftest import free_total


def shrink_oracle(partial: np.ndarray) -> list[int]:
    """The kernel's ``__kmem_cache_do_shrink`` on a list of (addr, inuse, objects): drop
    empty slabs; slabs with 1..32 free objects go first, fewest free first, each bucket in
    reverse list order (list_move inserts at the head); the rest keep their order."""
    buckets: list[list[int]] = [[] for _ in range(32)]
    rest = []
    for addr, inuse, objects in partial.tolist():
        free = objects - inuse
        if free == objects:
            continue
        if free <= 32:
            buckets[free - 1].insert(0, addr)
        else:
            rest.append(addr)
    return [a for b in buckets for a in b] + rest


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 127), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_shrink_orders_partial_list_like_the_kernel(frees, rnd):
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("s32", 32)                  # 128 objects per slab
    per = c.objs_per_slab
    slabs = [[sa.kmem_cache_alloc(c) for _ in range(per)] for _ in range(len(frees) + 1)]
    for s in slabs[:-1]:
        sa.kmem_cache_free(c, s[0])                      # every slab partial...
    sa.kmem_cache_shrink(c)                              # ...and on the node list
    for s, n in zip(slabs[:-1], frees):                  # now free n more of each
        for a in rnd.sample(s[1:], n):
            sa.kmem_cache_free(c, a, cpu=1)
    before = c.partial_list()
    expected = shrink_oracle(before)
    freed = sa.kmem_cache_shrink(c)
    after = c.partial_list()
    assert after[:, 0].tolist() == expected
    assert freed == int((before[:, 1] == 0).sum())
    sa.validate()


def test_shrink_frees_all_empty_slabs_regardless_of_min_partial():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("e", 512)
    objs = [sa.kmem_cache_alloc(c) for _ in range(c.objs_per_slab * 3)]
    for a in objs:
        sa.kmem_cache_free(c, a)
    assert c.slabs == 3                                  # parked on the CPU partial list
    assert sa.kmem_cache_shrink(c) >= 1
    assert c.slabs == 0 and c.partial == 0 and c.cpu_slabs == 0
    assert free_total(sa) == sa.nr_pages - 1 - sum(
        k.slabs << k.order for k in sa.caches)
    sa.validate()


def test_shrink_gives_pages_to_the_calling_cpus_page_lists():
    """``kmem_cache_shrink`` runs on the caller's CPU: the empty slabs it frees from the node
    list go to that CPU's pcp lists; a CPU's own flush uses its own; a third CPU that took
    no part gets nothing."""
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=3, memory="64M")  # pcp high far above what is freed
    c = sa.kmem_cache_create("home", 512)
    objs = [sa.kmem_cache_alloc(c, cpu=1) for _ in range(c.objs_per_slab * 12)]
    for a in objs:
        sa.kmem_cache_free(c, a, cpu=1)
    assert c.partial >= 1                               # empty slabs kept on the node list

    def pcp(cpu):
        return int(sa.state.pcp[cpu, 0, P_COUNT])
    before = [pcp(cpu) for cpu in range(3)]
    slabs = c.slabs
    sa.set_cpu(0)
    freed = sa.kmem_cache_shrink(c)                     # counts the node lists' slabs
    assert c.slabs == 0 and freed >= 1
    gained = [pcp(cpu) - before[cpu] for cpu in range(3)]
    assert sum(gained) == slabs << c.order              # every freed page on a pcp list
    assert gained[0] == freed << c.order                # the node lists': the caller's
    assert gained[1] == (slabs - freed) << c.order      # CPU 1's partial list: its own flush
    assert gained[2] == 0                               # not the last CPU's
    sa.validate()


def test_partial_list_reports_fill():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("p", 256)
    objs = [sa.kmem_cache_alloc(c) for _ in range(40)]
    sa.kmem_cache_free(c, objs[0])
    sa.kmem_cache_shrink(c)
    pl = c.partial_list()
    assert pl.shape[1] == 3 and len(pl) == c.partial
    assert (pl[:, 1] < pl[:, 2]).all()
    assert int(pl[:, 1].sum()) == c.objects_partial
