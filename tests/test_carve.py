"""Whole new slabs carved for a bulk allocation (``nocpu.carve_whole_slabs``): the pages in
the pcp list's order (and on from the buddy lists once it runs dry), each slab's objects a
rotation of the cache's random sequence (or in address order), and the counters the kernel
moves once a slab (the node's slabs and objects, ``alloc_slab``, the pcp count, the slab
generation, the free-list generator) moved by exactly the slabs made. 6.18's ``new_slab`` (its
bulk allocation's every slab) takes the pcp list's head inline too (``_allocate_slab``)."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab.engine.layout import (CA_RSEQ, CA_RSEQ_LEN, G_FRNG, G_SLAB_GEN, N_NR_SLABS,
                                   N_TOTAL_OBJECTS, NIL, P_COUNT, P_FREE_FACTOR, P_LISTS,
                                   PG_HEAD, PG_SLAB, PG_TAIL)

OBJS = 16


def pcp_list(sa, cpu, node):
    """The order-0 pcp list of (``cpu``, ``node``), head first."""
    out, pfn = [], int(sa.state.pcp[cpu, node, P_LISTS])
    while pfn != NIL:
        out.append(pfn)
        pfn = int(sa.state.pg_next[pfn])
    return out


@pytest.mark.parametrize("gen", ["7.0", "7.3", "6.18"])
@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.parametrize("random", [True, False])
def test_whole_slabs_follow_the_pcp_list_and_move_each_counter_once_a_slab(gen, nodes,
                                                                          random):
    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=nodes, memory="16M", kernel=gen,
                               freelist_random=random)
    c = sa.kmem_cache_create("t", 256)
    st = sa.state
    node = int(st.cpu_node[0])
    c.free_bulk(c.alloc_bulk(48 * OBJS))         # the pcp list now holds slabs given back
    pcp = pcp_list(sa, 0, node)
    nslabs = len(pcp) + 6                       # past its end: a refill from the buddy lists
    before_nd = st.node[c.id, node].copy()
    before = (int(st.g[G_SLAB_GEN]), int(st.pcp[0, node, P_COUNT]),
              int(st.pcp[0, node, P_FREE_FACTOR]), c.stats["alloc_slab"], int(st.g[G_FRNG]))
    old = set(np.flatnonzero(st.sl_cache == c.id).tolist())     # the partial slabs kept
    got = c.alloc_bulk(len(old) * OBJS + nslabs * OBJS)          # (and the main sheaf's)
    runs = []                                                    # (slab, its objects)
    for a in got.tolist():
        if not runs or runs[-1][0] != a >> 12:
            runs.append((a >> 12, []))
        runs[-1][1].append(a - ((a >> 12) << 12))
    runs = [r for r in runs if r[0] not in old]
    slabs = [s for s, _ in runs]
    assert len(slabs) == len(set(slabs)) == nslabs
    assert slabs[:len(pcp)] == pcp                    # head first, the list taken whole
    n = int(st.ca[c.id, CA_RSEQ_LEN])
    seq = st.rseq.ravel()[int(st.ca[c.id, CA_RSEQ]):][:n].tolist()
    assert n == (OBJS if random else 0)
    frng = before[4]
    for s, offs in runs:
        if random:                                    # _below's draw from the generator
            frng ^= frng >> 12
            frng ^= (frng << 25) & 0x7FFFFFFFFFFFFFFF
            frng ^= frng >> 27
            frng &= 0x7FFFFFFFFFFFFFFF
            pos = ((frng >> 31) * n) >> 32
            assert offs == (seq + seq)[pos:pos + OBJS]
        else:
            assert offs == [256 * j for j in range(OBJS)]
        assert st.pg_flags[s] & (PG_HEAD | PG_SLAB | PG_TAIL) == PG_HEAD | PG_SLAB    # (6.18's
        assert st.pg_head[s] == s                     # last one is the CPU's, frozen)
        assert st.pg_next[s] == NIL and st.pg_prev[s] == NIL and st.pg_order[s] == 0
        assert st.sl_cache[s] == c.id and st.sl_inuse[s] == OBJS == st.sl_objects[s]
        assert st.sl_freelist[s] == 0
    assert set(got.tolist()) <= set(c.live_addresses().tolist())
    assert int(st.g[G_FRNG]) == frng
    assert int(st.g[G_SLAB_GEN]) == before[0] + nslabs
    assert c.stats["alloc_slab"] == before[3] + nslabs
    d = st.node[c.id, node] - before_nd
    assert d[N_NR_SLABS] == nslabs and d[N_TOTAL_OBJECTS] == nslabs * OBJS
    assert pcp_list(sa, 0, node) == [] or int(st.pcp[0, node, P_COUNT]) == \
        len(pcp_list(sa, 0, node))
    assert int(st.pcp[0, node, P_FREE_FACTOR]) <= before[2] >> len(pcp)
    sa.validate()
    c.free_bulk(got)
    sa.validate()


def test_a_slab_short_of_room_is_carved_in_part():
    """A bulk allocation of whole slabs and 5 objects more: the last slab is carved in part
    and goes to the node's partial list, the 11 others its free list."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="16M")
    c = sa.kmem_cache_create("t", 256)
    got = c.alloc_bulk(3 * OBJS + 5)
    last = int(got[-1]) >> 12
    assert [int(a) >> 12 for a in got[3 * OBJS:]] == [last] * 5
    assert sa.state.sl_inuse[last] == 5 and c.stats["alloc_slab"] == 4
    assert np.unique(np.asarray(got) >> 12).size == 4
    sa.validate()
