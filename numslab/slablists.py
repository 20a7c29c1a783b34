"""The slab layer: slabs carved from pages, the free list inside free objects, and the
per-node and per-CPU partial lists, following Linux 6.18 ``mm/slub.c`` function by function.

Free pointers live in the arena (``mem``, int64 words) at ``CA_OFFSET`` inside each free
object; a slab's fields live in the ``sl_*`` page arrays at the slab's head page frame.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit
from ._layout import (C_NCOLS, C_PARTIAL, CA_CPU_PARTIAL, CA_CPU_PARTIAL_SLABS, CA_CTOR,
                      CA_DEFRAG_RATIO, CA_HAS_CPU_PARTIAL, CA_MIN_OBJECTS, CA_MIN_ORDER,
                      CA_MIN_PARTIAL, CA_NCOLS, CA_OBJECTS, CA_OFFSET, CA_ORDER, CA_SIZE,
                      F_CA, F_CPU, F_CPU_NODE, F_NODE, F_PENDING, F_PG_FLAGS, F_PG_NEXT,
                      F_PG_ORDER, F_PG_PREV, F_SL_CACHE, F_SL_FREELIST, F_SL_INUSE,
                      F_SL_OBJECTS, F_SL_SLABS, G_NCPUS, G_NNODES, G_NPENDING,
                      G_PAGES_PER_NODE, N_NCOLS, N_NR_PARTIAL, N_NR_SLABS, N_PARTIAL_HEAD,
                      N_PARTIAL_TAIL, N_TOTAL_OBJECTS, NIL, PG_CPU_PARTIAL, PG_FROZEN,
                      PG_HEAD, PG_NODE_PARTIAL, PG_SLAB, _g, _o, _rand, _set_g, _stat)
from .flags import (CPU_PARTIAL_DRAIN, CPU_PARTIAL_NODE, DEACTIVATE_EMPTY, FREE_ADD_PARTIAL,
                    FREE_FROZEN, FREE_REMOVE_PARTIAL, FREE_SLAB, ALLOC_FROM_PARTIAL,
                    ALLOC_REMOTE_PARTIAL, CPU_PARTIAL_FREE, ORDER_FALLBACK)
from .pages import _alloc_pages, _free_pages

SHRINK_PROMOTE_MAX = 32


# ---- free pointers and small accessors ----------------------------------------------------
@jit(inline="always")
def _get_fp(mem, offset, obj):
    """The next-free pointer stored in free object ``obj`` (``get_freepointer``)."""
    return mem[np.uint64((obj + offset) >> 3)]     # unsigned: no wraparound code


@jit(inline="always")
def _set_fp(mem, offset, obj, nxt):
    """Store ``nxt`` as the next-free pointer of free object ``obj``."""
    mem[np.uint64((obj + offset) >> 3)] = nxt


@jit(inline="always")
def _slab_nid(state, slab):
    """NUMA node of the slab whose head frame is ``slab``."""
    return slab // _g(state, G_PAGES_PER_NODE)


@jit(inline="always")
def _cpu_row(state, cache, cpu):
    """Index of the first column of ``kmem_cache_cpu`` (cache, cpu) in field CPU."""
    return (cache * _g(state, G_NCPUS) + cpu) * C_NCOLS


@jit(inline="always")
def _node_row(state, cache, node):
    """Index of the first column of ``kmem_cache_node`` (cache, node) in field NODE."""
    return (cache * _g(state, G_NNODES) + node) * N_NCOLS


@jit(inline="always")
def _ca(state, cache, col):
    """Column ``col`` of cache ``cache``."""
    return state[_o(state, F_CA) + cache * CA_NCOLS + col]


# ---- node partial list ---------------------------------------------------------------------
@jit
def _add_partial(state, cache, slab, tail):
    """``add_partial``: put ``slab`` on its node's partial list, at the tail if ``tail``."""
    nd = _o(state, F_NODE)
    nxt = _o(state, F_PG_NEXT)
    prv = _o(state, F_PG_PREV)
    r = _node_row(state, cache, _slab_nid(state, slab))
    if state[nd + r + N_PARTIAL_HEAD] == NIL:
        state[nxt + slab] = NIL
        state[prv + slab] = NIL
        state[nd + r + N_PARTIAL_HEAD] = slab
        state[nd + r + N_PARTIAL_TAIL] = slab
    elif tail:
        t = state[nd + r + N_PARTIAL_TAIL]
        state[nxt + t] = slab
        state[prv + slab] = t
        state[nxt + slab] = NIL
        state[nd + r + N_PARTIAL_TAIL] = slab
    else:
        h = state[nd + r + N_PARTIAL_HEAD]
        state[prv + h] = slab
        state[nxt + slab] = h
        state[prv + slab] = NIL
        state[nd + r + N_PARTIAL_HEAD] = slab
    state[nd + r + N_NR_PARTIAL] += 1
    state[_o(state, F_PG_FLAGS) + slab] |= PG_NODE_PARTIAL


@jit
def _remove_partial(state, cache, slab):
    """``remove_partial``: take ``slab`` off its node's partial list."""
    nd = _o(state, F_NODE)
    nxt = _o(state, F_PG_NEXT)
    prv = _o(state, F_PG_PREV)
    r = _node_row(state, cache, _slab_nid(state, slab))
    n, p = state[nxt + slab], state[prv + slab]
    if p != NIL:
        state[nxt + p] = n
    else:
        state[nd + r + N_PARTIAL_HEAD] = n
    if n != NIL:
        state[prv + n] = p
    else:
        state[nd + r + N_PARTIAL_TAIL] = p
    state[nxt + slab] = NIL
    state[prv + slab] = NIL
    state[nd + r + N_NR_PARTIAL] -= 1
    state[_o(state, F_PG_FLAGS) + slab] &= ~PG_NODE_PARTIAL


# ---- slab creation and release ---------------------------------------------------------------
@jit
def _new_slab(state, mem, cache, cpu, node, thisnode):
    """``new_slab``: allocate pages (falling back to the minimum order), build the free
    list through every object and account the slab to its node. NIL when out of memory."""
    order = _ca(state, cache, CA_ORDER)
    objects = _ca(state, cache, CA_OBJECTS)
    slab = _alloc_pages(state, cpu, node, order, thisnode)
    if slab == NIL and _ca(state, cache, CA_MIN_ORDER) < order:
        order = _ca(state, cache, CA_MIN_ORDER)
        objects = _ca(state, cache, CA_MIN_OBJECTS)
        slab = _alloc_pages(state, cpu, node, order, thisnode)
        if slab != NIL:
            _stat(state, cache, cpu, ORDER_FALLBACK, 1)
    if slab == NIL:
        return NIL
    _init_slab(state, cache, slab, objects)
    size = _ca(state, cache, CA_SIZE)
    offset = _ca(state, cache, CA_OFFSET)
    base = slab << 12
    obj = base
    for _ in range(objects - 1):
        _set_fp(mem, offset, obj, obj + size)
        obj += size
    _set_fp(mem, offset, obj, 0)
    state[_o(state, F_SL_FREELIST) + slab] = base
    return slab


@jit(inline="always")
def _init_slab(state, cache, slab, objects):
    """Turn the allocated block at ``slab`` into an empty slab of ``cache`` (no free list
    yet: the caller builds one or hands out every object at once) and count it."""
    state[_o(state, F_PG_FLAGS) + slab] = PG_HEAD | PG_SLAB
    state[_o(state, F_SL_CACHE) + slab] = cache
    state[_o(state, F_SL_OBJECTS) + slab] = objects
    state[_o(state, F_SL_INUSE) + slab] = 0
    state[_o(state, F_SL_FREELIST) + slab] = 0
    state[_o(state, F_SL_SLABS) + slab] = 0
    nd = _o(state, F_NODE)
    r = _node_row(state, cache, _slab_nid(state, slab))
    state[nd + r + N_NR_SLABS] += 1
    state[nd + r + N_TOTAL_OBJECTS] += objects
    if _ca(state, cache, CA_CTOR):
        pend = _o(state, F_PENDING)
        n = _g(state, G_NPENDING)
        state[pend + n] = slab
        _set_g(state, G_NPENDING, n + 1)


@jit
def _discard_slab(state, cache, cpu, slab):
    """``discard_slab``: uncount the slab and give its pages back to the page allocator
    (to the pcp lists of ``cpu`` for small orders)."""
    nd = _o(state, F_NODE)
    r = _node_row(state, cache, _slab_nid(state, slab))
    state[nd + r + N_NR_SLABS] -= 1
    state[nd + r + N_TOTAL_OBJECTS] -= state[_o(state, F_SL_OBJECTS) + slab]
    state[_o(state, F_SL_CACHE) + slab] = NIL
    state[_o(state, F_SL_OBJECTS) + slab] = 0
    state[_o(state, F_SL_INUSE) + slab] = 0
    state[_o(state, F_SL_FREELIST) + slab] = 0
    _free_pages(state, cpu, slab, state[_o(state, F_PG_ORDER) + slab])


# ---- taking a slab for a CPU ---------------------------------------------------------------
@jit(inline="always")
def _freeze_slab(state, slab):
    """``freeze_slab``/``get_freelist``: take the slab's whole free list for a CPU; the
    slab counts every object as in use and is frozen while the free list is non-empty."""
    fl = _o(state, F_SL_FREELIST)
    freelist = state[fl + slab]
    state[fl + slab] = 0
    state[_o(state, F_SL_INUSE) + slab] = state[_o(state, F_SL_OBJECTS) + slab]
    flags = _o(state, F_PG_FLAGS)
    if freelist != 0:
        state[flags + slab] |= PG_FROZEN
    else:
        state[flags + slab] &= ~PG_FROZEN
    return freelist


@jit
def _put_partials(state, cache, cpu, chain):
    """``__put_partials``: move a chain of CPU-partial slabs to their node lists, freeing
    empty ones once the node already keeps ``min_partial`` partial slabs."""
    nxt = _o(state, F_PG_NEXT)
    flags = _o(state, F_PG_FLAGS)
    inuse = _o(state, F_SL_INUSE)
    nd = _o(state, F_NODE)
    min_partial = _ca(state, cache, CA_MIN_PARTIAL)
    discard = NIL
    slab = chain
    while slab != NIL:
        following = state[nxt + slab]
        state[flags + slab] &= ~PG_CPU_PARTIAL
        state[nxt + slab] = NIL
        r = _node_row(state, cache, _slab_nid(state, slab))
        if state[inuse + slab] == 0 and state[nd + r + N_NR_PARTIAL] >= min_partial:
            state[nxt + slab] = discard
            discard = slab
        else:
            _add_partial(state, cache, slab, True)
            _stat(state, cache, cpu, FREE_ADD_PARTIAL, 1)
        slab = following
    while discard != NIL:
        following = state[nxt + discard]
        state[nxt + discard] = NIL
        _stat(state, cache, cpu, DEACTIVATE_EMPTY, 1)
        _discard_slab(state, cache, cpu, discard)
        _stat(state, cache, cpu, FREE_SLAB, 1)
        discard = following


@jit
def _put_cpu_partial(state, cache, cpu, slab, drain):
    """``put_cpu_partial``: push ``slab`` on ``cpu``'s partial list; when ``drain`` and the
    list already holds ``cpu_partial_slabs``, first move the whole list to the node."""
    cpt = _o(state, F_CPU)
    nxt = _o(state, F_PG_NEXT)
    nslabs = _o(state, F_SL_SLABS)
    c = _cpu_row(state, cache, cpu)
    old = state[cpt + c + C_PARTIAL]
    slabs = 0
    to_put = NIL
    if old != NIL:
        if drain and state[nslabs + old] >= _ca(state, cache, CA_CPU_PARTIAL_SLABS):
            to_put = old
            old = NIL
        else:
            slabs = state[nslabs + old]
    state[nslabs + slab] = slabs + 1
    state[nxt + slab] = old
    state[_o(state, F_PG_FLAGS) + slab] |= PG_CPU_PARTIAL
    state[cpt + c + C_PARTIAL] = slab
    if to_put != NIL:
        _put_partials(state, cache, cpu, to_put)
        _stat(state, cache, cpu, CPU_PARTIAL_DRAIN, 1)


@jit
def _get_partial_node(state, cache, cpu, node):
    """``get_partial_node``: take the first slab of ``node``'s partial list for the CPU
    (frozen by the caller) and move up to ``cpu_partial / 2`` more to the CPU's partial
    list. Returns the slab or NIL."""
    nd = _o(state, F_NODE)
    nxt = _o(state, F_PG_NEXT)
    r = _node_row(state, cache, node)
    cpu_partial = _ca(state, cache, CA_CPU_PARTIAL)
    partial = NIL
    partial_slabs = 0
    slab = state[nd + r + N_PARTIAL_HEAD]
    while slab != NIL:
        following = state[nxt + slab]
        _remove_partial(state, cache, slab)
        if partial == NIL:
            partial = slab
            _stat(state, cache, cpu, ALLOC_FROM_PARTIAL, 1)
            if cpu_partial == 0:
                break
        else:
            _put_cpu_partial(state, cache, cpu, slab, False)
            _stat(state, cache, cpu, CPU_PARTIAL_NODE, 1)
            partial_slabs += 1
            if partial_slabs > cpu_partial // 2:
                break
        slab = following
    return partial


@jit
def _get_partial(state, cache, cpu, node, thisnode):
    """``get_partial``: the local (or requested) node first, then ``get_any_partial``:
    other nodes holding more than ``min_partial`` partial slabs, if the random draw passes
    ``remote_node_defrag_ratio`` and the request did not pin a node."""
    cpu_node = state[_o(state, F_CPU_NODE) + cpu]
    search = cpu_node if node < 0 else node
    slab = _get_partial_node(state, cache, cpu, search)
    if slab != NIL or (node >= 0 and thisnode):
        return slab
    ratio = _ca(state, cache, CA_DEFRAG_RATIO)
    if ratio == 0 or _rand(state) % 1024 > ratio:
        return NIL
    nnodes = _g(state, G_NNODES)
    nd = _o(state, F_NODE)
    min_partial = _ca(state, cache, CA_MIN_PARTIAL)
    for i in range(nnodes):
        n = (cpu_node + i) % nnodes
        if state[nd + _node_row(state, cache, n) + N_NR_PARTIAL] > min_partial:
            slab = _get_partial_node(state, cache, cpu, n)
            if slab != NIL:
                if n != cpu_node:
                    _stat(state, cache, cpu, ALLOC_REMOTE_PARTIAL, 1)
                return slab
    return NIL


# ---- freeing to a slab that is not the CPU's -----------------------------------------------
@jit
def _slab_free(state, mem, cache, cpu, slab, head, tail, cnt):
    """``__slab_free``: put the chain ``head..tail`` of ``cnt`` objects (already linked
    through their free pointers) on ``slab``'s free list and fix the slab's list place."""
    fl = _o(state, F_SL_FREELIST)
    inuse_a = _o(state, F_SL_INUSE)
    flags = _o(state, F_PG_FLAGS)
    prior = state[fl + slab]
    _set_fp(mem, _ca(state, cache, CA_OFFSET), tail, prior)
    state[fl + slab] = head
    inuse = state[inuse_a + slab] - cnt
    state[inuse_a + slab] = inuse
    if state[flags + slab] & PG_FROZEN:
        _stat(state, cache, cpu, FREE_FROZEN, 1)
        return
    has_cpu_partial = _ca(state, cache, CA_HAS_CPU_PARTIAL)
    if prior == 0 and has_cpu_partial:
        _put_cpu_partial(state, cache, cpu, slab, True)
        _stat(state, cache, cpu, CPU_PARTIAL_FREE, 1)
        return
    if inuse != 0 and prior != 0:
        return
    if prior != 0 and not state[flags + slab] & PG_NODE_PARTIAL:
        return                      # on a CPU's partial list: it stays there
    nd = _o(state, F_NODE)
    r = _node_row(state, cache, _slab_nid(state, slab))
    if inuse == 0 and state[nd + r + N_NR_PARTIAL] >= _ca(state, cache, CA_MIN_PARTIAL):
        if prior != 0:
            _remove_partial(state, cache, slab)
            _stat(state, cache, cpu, FREE_REMOVE_PARTIAL, 1)
        _stat(state, cache, cpu, FREE_SLAB, 1)
        _discard_slab(state, cache, cpu, slab)
        return
    if not has_cpu_partial and prior == 0:
        _add_partial(state, cache, slab, True)
        _stat(state, cache, cpu, FREE_ADD_PARTIAL, 1)


# ---- shrinking -------------------------------------------------------------------------------
@jit(nrt=True)
def _shrink_node(state, cache, cpu, node):
    """``__kmem_cache_do_shrink`` for one node: free every empty partial slab and move the
    slabs with 1..32 free objects to the head, fewest free first. Returns slabs freed."""
    nd = _o(state, F_NODE)
    nxt = _o(state, F_PG_NEXT)
    prv = _o(state, F_PG_PREV)
    inuse = _o(state, F_SL_INUSE)
    objects = _o(state, F_SL_OBJECTS)
    r = _node_row(state, cache, node)
    bucket_head = np.full(SHRINK_PROMOTE_MAX, NIL, np.int64)   # list_move: head insert
    discard = NIL
    freed = 0
    slab = state[nd + r + N_PARTIAL_HEAD]
    while slab != NIL:
        following = state[nxt + slab]
        free = state[objects + slab] - state[inuse + slab]
        if free == state[objects + slab]:
            _remove_partial(state, cache, slab)
            state[nxt + slab] = discard
            discard = slab
        elif free <= SHRINK_PROMOTE_MAX:
            _remove_partial(state, cache, slab)
            state[nxt + slab] = bucket_head[free - 1]
            bucket_head[free - 1] = slab
        slab = following
    for i in range(SHRINK_PROMOTE_MAX - 1, -1, -1):    # list_splice each bucket to the head
        chain = []
        s = bucket_head[i]
        while s != NIL:
            chain.append(s)
            s = state[nxt + s]
        for j in range(len(chain) - 1, -1, -1):
            _add_partial(state, cache, chain[j], False)
    while discard != NIL:
        following = state[nxt + discard]
        state[nxt + discard] = NIL
        state[prv + discard] = NIL
        _discard_slab(state, cache, cpu, discard)
        freed += 1
        discard = following
    return freed
