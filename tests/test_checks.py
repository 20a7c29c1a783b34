"""``validate`` catches every kind of broken invariant it claims to check."""
from __future__ import annotations

import re

import numpy as np
import pytest

import numslab
from numslab.engine import layout as L
from numslab.engine.layout import view

KERNELS = ("7.0", "6.18")       #: the behaviour tested here is both generations


@pytest.fixture
def world():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("v", 128)
    objs = [sa.kmem_cache_alloc(c) for _ in range(c.objs_per_slab * 3)]
    for a in objs[::4]:
        sa.kmem_cache_free(c, a)
    sa.kmem_cache_shrink(c)
    sa.validate()
    return sa, c, objs


def corrupt_freepointer(sa, c, objs):
    head = int(sa.state.node[c._id, 0, L.N_PARTIAL_HEAD])
    first = int(sa.state.sl_freelist[head])
    sa._mem[(first + c.offset) >> 3] = first + 8           # points off the grid


def corrupt_inuse(sa, c, objs):
    head = int(sa.state.node[c._id, 0, L.N_PARTIAL_HEAD])
    sa.state.sl_inuse[head] += 1


def corrupt_partial_count(sa, c, objs):
    sa.state.node[c._id, 0, L.N_NR_PARTIAL] += 1


def corrupt_live_bit(sa, c, objs):
    a = objs[1]
    sa.state.live[a >> 9] &= ~(1 << ((a >> 3) & 63))


def corrupt_total(sa, c, objs):
    sa.state.node[c._id, 0, L.N_TOTAL_OBJECTS] -= 1


def corrupt_buddy(sa, c, objs):
    sa.state.buddy[0, 0, L.B_COUNT] += 1


def corrupt_pcp_count(sa, c, objs):
    sa.state.pcp[0, 0, L.P_COUNT] += 1


def corrupt_pcp_mark(sa, c, objs):
    addr = sa.alloc_pages(0)
    sa.free_pages(addr, 0)                                # now first on the CPU's list
    assert sa.state.pcp[sa._cpu(), 0, L.P_LISTS] == addr >> 12
    sa.state.pg_flags[addr >> 12] = L.PG_BUDDY            # looks like a buddy block


def corrupt_head_of_slab(sa, c, objs):
    sa.state.pg_head[objs[0] >> 12] = (objs[0] >> 12) + 1


def corrupt_head_of_free_frame(sa, c, objs):
    st = sa.state                                         # a free buddy block of 2+ frames
    free = int(np.flatnonzero((st.pg_flags & L.PG_BUDDY != 0) & (st.pg_order >= 1))[-1])
    st.pg_head[free + 1] = objs[0] >> 12                  # one of its later frames


def corrupt_head_of_tail(sa, c, objs):
    a = sa.kmalloc(20000)                                 # a large kmalloc: 8 pages
    sa.state.pg_head[(a >> 12) + 3] = (a >> 12) + 1


def lose_a_slab(sa, c, objs):
    head = int(sa.state.node[c._id, 0, L.N_PARTIAL_HEAD])
    nxt = int(sa.state.pg_next[head])
    sa.state.node[c._id, 0, L.N_PARTIAL_HEAD] = nxt
    sa.state.pg_prev[nxt] = L.NIL
    sa.state.node[c._id, 0, L.N_NR_PARTIAL] -= 1


def corrupt_lost_frame(sa, c, objs):
    free = int(np.flatnonzero(sa.state.pg_flags & L.PG_BUDDY)[-1])
    sa.state.sl_lost[free] = 1                            # lost objects on no slab


def corrupt_lost_count(sa, c, objs):
    view(sa.state.buf, L.F_G)[L.G_NLOST] += 1


def lose_a_free_block(sa, c, objs):
    st = sa.state                                         # off its buddy list, still marked
    order = int(np.flatnonzero(st.buddy[0, :, L.B_COUNT])[-1])
    head = int(st.buddy[0, order, L.B_HEAD])
    nxt = int(st.pg_next[head])
    st.buddy[0, order, L.B_HEAD] = nxt
    if nxt != L.NIL:
        st.pg_prev[nxt] = L.NIL
    st.pg_next[head] = L.NIL
    st.buddy[0, order, L.B_COUNT] -= 1


def lose_a_pcp_block(sa, c, objs):
    addr = sa.alloc_pages(0)
    sa.free_pages(addr, 0)                                # first on the CPU's list
    st, cpu = sa.state, sa._cpu()
    pfn = addr >> 12
    nxt = int(st.pg_next[pfn])
    st.pcp[cpu, 0, L.P_LISTS] = nxt
    if nxt == L.NIL:
        st.pcp[cpu, 0, L.P_LISTS + 1] = L.NIL
    else:
        st.pg_prev[nxt] = L.NIL
    st.pg_next[pfn] = L.NIL
    st.pcp[cpu, 0, L.P_COUNT] -= 1


def name_a_cache_on_a_free_frame(sa, c, objs):
    st = sa.state                                         # a free block's frame names the cache
    free = int(np.flatnonzero(st.pg_flags & L.PG_BUDDY)[-1])
    st.sl_cache[free] = c._id


def name_a_cache_on_a_tail(sa, c, objs):
    a = sa.kmalloc(20000)                                 # a large kmalloc: 8 pages, no slab
    sa.state.sl_cache[(a >> 12) + 2] = c._id


def grow_a_main_sheaf(sa, c, objs):
    main = int(sa.state.cpu[c._id, 0, L.C_MAIN])          # its capacity word past the cache's
    sa._mem[(main >> 3) + L.SH_CAPACITY] += 1


def share_a_main_sheaf(sa, c, objs):
    st = sa.state                                         # CPU 0's (empty) main, CPU 1's spare too
    assert sa._mem[(int(st.cpu[c._id, 0, L.C_MAIN]) >> 3) + L.SH_SIZE] == 0
    st.cpu[c._id, 1, L.C_SPARE] = st.cpu[c._id, 0, L.C_MAIN]


def give_a_7x_cpu_a_cpu_slab(sa, c, objs):
    st = sa.state                                         # a full slab, on no list, frozen
    for _ in range(2 * c.objs_per_slab):
        sa.kmem_cache_alloc(c)
    full = np.flatnonzero((st.sl_cache == c._id) & (st.pg_flags & L.PG_SLAB != 0)
                          & (st.sl_inuse == st.sl_objects)
                          & (st.pg_flags & L.PG_NODE_PARTIAL == 0))
    st.pg_flags[full[0]] |= L.PG_FROZEN
    st.cpu[c._id, 0, L.C_SLAB] = full[0]


@pytest.mark.parametrize("damage,what", [
    (corrupt_freepointer, "free list leaves its slab or the object grid"),
    (corrupt_inuse, "inuse + free objects != objects"),
    (corrupt_partial_count, "node partial list count or tail is wrong"),
    (corrupt_live_bit, "inuse + free objects != objects"),
    (corrupt_total, "node slab or object count is wrong"),
    (corrupt_buddy, "buddy free list is broken"),
    (corrupt_pcp_count, "buddy free list is broken"),
    (corrupt_pcp_mark, "buddy free list is broken"),
    (lose_a_slab, "partial list link or mark is broken|slab with free objects is on no list"),
    (corrupt_head_of_slab, "compound head is wrong"),
    (corrupt_head_of_free_frame, "compound head is wrong"),
    (corrupt_head_of_tail, "compound head is wrong"),
    (corrupt_lost_frame, "lost objects (sl_lost) out of range"),
    (corrupt_lost_count, "their sum is not G_NLOST"),
    (lose_a_free_block, "buddy free list is broken"),
    (lose_a_pcp_block, "buddy free list is broken"),
    (give_a_7x_cpu_a_cpu_slab, "or a CPU has one under 7.x"),
    (name_a_cache_on_a_free_frame, "a frame's owner (sl_cache) is wrong"),
    (name_a_cache_on_a_tail, "a frame's owner (sl_cache) is wrong"),
    (grow_a_main_sheaf, "a capacity other than its cache's"),
    (share_a_main_sheaf, "a sheaf is reached twice"),
])
def test_validate_finds_corruption(world, damage, what):
    sa, c, objs = world
    damage(sa, c, objs)
    pattern = "|".join(re.escape(w) for w in what.split("|"))
    with pytest.raises(numslab.SlabCorruptionError, match=pattern):
        sa.validate()



@pytest.mark.parametrize("damage,place", [
    (corrupt_inuse, "cache v, slab at {slab:#x}"),
    (corrupt_partial_count, "cache v, node 0"),
    (corrupt_buddy, "node 0"),
    (corrupt_head_of_slab, "page frame {frame} at {frame_addr:#x}"),
    (corrupt_lost_frame, "page frame {free} at {free_addr:#x}"),
    (name_a_cache_on_a_free_frame, "page frame {free} at {free_addr:#x}"),
])
def test_validate_names_the_place_by_its_kind(world, damage, place):
    """validate named every place as a bare number ("(cache v, at 1)" for a slab's frame,
    as for a node, a CPU, a sheaf's handle or an object's address) and named a cache for the
    page allocator's invariants (the last one it had checked): now a slab by its address, a
    page frame with its address, a node by its number, the cache only for a cache's."""
    sa, c, objs = world
    slab = int(sa.state.node[c._id, 0, L.N_PARTIAL_HEAD]) << 12
    free = int(np.flatnonzero(sa.state.pg_flags & L.PG_BUDDY)[-1])
    frame = objs[0] >> 12
    damage(sa, c, objs)
    text = place.format(slab=slab, frame=frame, frame_addr=frame << 12, free=free,
                        free_addr=free << 12)
    with pytest.raises(numslab.SlabCorruptionError, match=rf"^validate: .* \({text}\)$"):
        sa.validate()


def test_validate_puts_back_the_sheaves_marks_it_lifts(world):
    """The check that each sheaf is reached once lifts each sheaf's own mark as it meets it: every
    mark is back after a validate that passes and after one that fails, so no user free takes a
    sheaf and the next validate passes."""
    sa, c, objs = world
    st = sa.state
    main = int(st.cpu[c._id, 0, L.C_MAIN]) - sa.memory.size
    marks = st.live.copy()
    sa.validate()
    assert (st.live == marks).all()
    spare = int(st.cpu[c._id, 1, L.C_SPARE])
    share_a_main_sheaf(sa, c, objs)
    with pytest.raises(numslab.SlabCorruptionError, match="a sheaf is reached twice"):
        sa.validate()
    assert (st.live == marks).all()
    st.cpu[c._id, 1, L.C_SPARE] = spare
    sa.validate()
    with pytest.raises(numslab.SlabError, match="allocator"):
        sa.kfree(main)
