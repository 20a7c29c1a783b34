"""The per-CPU layer (``kmem_cache_cpu``): the lockless fast paths, the ``___slab_alloc``
slow path, ``deactivate_slab`` and flushing, as in Linux 6.18 ``mm/slub.c``."""
from __future__ import annotations

import numpy as np

from ._jit import jit
from ._layout import (C_FREELIST, C_LIVE, C_PARTIAL, C_SLAB, CA_MIN_PARTIAL, CA_OBJECT_SIZE, CA_OFFSET, F_CPU, F_CPU_NODE, F_NODE,
                      F_PG_FLAGS, F_PG_NEXT, F_SL_FREELIST, F_SL_INUSE, N_NR_PARTIAL, NIL, PG_CPU_PARTIAL, PG_FROZEN, _o, _stat,
                      _stat_at)
from .debug import _live_clear, _live_set, _live_set_run
from .flags import (__GFP_THISNODE, __GFP_ZERO, ALLOC_FASTPATH, ALLOC_NODE_MISMATCH,
                    ALLOC_REFILL, ALLOC_SLAB, ALLOC_SLOWPATH, CPU_PARTIAL_ALLOC,
                    CPUSLAB_FLUSH, DEACTIVATE_BYPASS, DEACTIVATE_EMPTY, DEACTIVATE_FULL,
                    DEACTIVATE_REMOTE_FREES, DEACTIVATE_TO_HEAD, DEACTIVATE_TO_TAIL,
                    FREE_FASTPATH, FREE_SLAB, FREE_SLOWPATH)
from .slablists import (_add_partial, _ca, _cpu_row, _discard_slab, _freeze_slab,
                        _get_fp, _get_partial, _new_slab, _node_row, _put_partials, _set_fp,
                        _slab_free, _slab_nid)


@jit
def _deactivate_slab(state, mem, cache, cpu, slab, freelist):
    """``deactivate_slab``: give a CPU slab back: splice the CPU's free list in front of the
    slab's own, unfreeze it and put it on the node list (head, or tail if it had remote
    frees), or free it if empty and the node has ``min_partial`` partial slabs."""
    sfl = _o(state, F_SL_FREELIST)
    inuse = _o(state, F_SL_INUSE)
    offset = _ca(state, cache, CA_OFFSET)
    tail = False
    if state[sfl + slab] != 0:
        _stat(state, cache, cpu, DEACTIVATE_REMOTE_FREES, 1)
        tail = True
    n = 0
    last = 0
    obj = freelist
    while obj != 0:
        last = obj
        n += 1
        obj = _get_fp(mem, offset, obj)
    if last != 0:
        _set_fp(mem, offset, last, state[sfl + slab])
        state[sfl + slab] = freelist
        state[inuse + slab] -= n
    state[_o(state, F_PG_FLAGS) + slab] &= ~PG_FROZEN
    nd = _o(state, F_NODE)
    if state[inuse + slab] == 0 and state[nd + _node_row(state, cache, _slab_nid(state, slab)) + N_NR_PARTIAL] \
            >= _ca(state, cache, CA_MIN_PARTIAL):
        _stat(state, cache, cpu, DEACTIVATE_EMPTY, 1)
        _discard_slab(state, cache, cpu, slab)
        _stat(state, cache, cpu, FREE_SLAB, 1)
    elif state[sfl + slab] != 0:
        _add_partial(state, cache, slab, tail)
        _stat(state, cache, cpu, DEACTIVATE_TO_TAIL if tail else DEACTIVATE_TO_HEAD, 1)
    else:
        _stat(state, cache, cpu, DEACTIVATE_FULL, 1)


@jit(inline="always")
def _load_freelist(state, mem, cache, c, slab, freelist):
    """``load_freelist``: make ``slab`` the CPU slab, keep the rest of ``freelist`` on the
    CPU and return its first object."""
    cpt = _o(state, F_CPU)
    state[cpt + c + C_SLAB] = slab
    state[cpt + c + C_FREELIST] = _get_fp(mem, _ca(state, cache, CA_OFFSET), freelist)
    return freelist


@jit
def _slab_alloc_slow(state, mem, cache, cpu, node, gfp):
    """``___slab_alloc``: refill the CPU from its slab, its partial list, the node partial
    lists, other nodes, then a new slab. Returns an object address or 0 (out of memory)."""
    _stat(state, cache, cpu, ALLOC_SLOWPATH, 1)
    cpt = _o(state, F_CPU)
    nxt = _o(state, F_PG_NEXT)
    c = _cpu_row(state, cache, cpu)
    slab = state[cpt + c + C_SLAB]
    if slab != NIL:
        if node >= 0 and _slab_nid(state, slab) != node:
            _stat(state, cache, cpu, ALLOC_NODE_MISMATCH, 1)
            freelist = state[cpt + c + C_FREELIST]
            state[cpt + c + C_SLAB] = NIL
            state[cpt + c + C_FREELIST] = 0
            _deactivate_slab(state, mem, cache, cpu, slab, freelist)
        else:
            freelist = state[cpt + c + C_FREELIST]
            if freelist == 0:
                freelist = _freeze_slab(state, slab)
                if freelist == 0:
                    state[cpt + c + C_SLAB] = NIL
                    _stat(state, cache, cpu, DEACTIVATE_BYPASS, 1)
                else:
                    _stat(state, cache, cpu, ALLOC_REFILL, 1)
            if freelist != 0:
                return _load_freelist(state, mem, cache, c, slab, freelist)
    while state[cpt + c + C_PARTIAL] != NIL:                      # the CPU's partial slabs
        slab = state[cpt + c + C_PARTIAL]
        state[cpt + c + C_PARTIAL] = state[nxt + slab]
        state[nxt + slab] = NIL
        state[_o(state, F_PG_FLAGS) + slab] &= ~PG_CPU_PARTIAL
        if node < 0 or _slab_nid(state, slab) == node:
            freelist = _freeze_slab(state, slab)
            _stat(state, cache, cpu, CPU_PARTIAL_ALLOC, 1)
            return _load_freelist(state, mem, cache, c, slab, freelist)
        _put_partials(state, cache, cpu, slab)
    try_thisnode = True
    page_node = node if node >= 0 else state[_o(state, F_CPU_NODE) + cpu]
    while True:                                           # new_objects
        pinned = (gfp & __GFP_THISNODE) != 0 or (node >= 0 and try_thisnode)
        slab = _get_partial(state, cache, cpu, node, pinned)
        if slab != NIL:
            return _load_freelist(state, mem, cache, c, slab, _freeze_slab(state, slab))
        slab = _new_slab(state, mem, cache, cpu, page_node, pinned)
        if slab != NIL:
            _stat(state, cache, cpu, ALLOC_SLAB, 1)
            return _load_freelist(state, mem, cache, c, slab, _freeze_slab(state, slab))
        if node >= 0 and not gfp & __GFP_THISNODE and try_thisnode:
            try_thisnode = False
            continue
        return 0


@jit(inline="always")
def _slab_alloc_obj(state, mem, cache, cpu, node, gfp):
    """``__slab_alloc_node`` without hooks: pop the CPU freelist (fast path) or take the
    slow path. The object is not marked allocated. Returns its address or 0."""
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    obj = state[cpt + c + C_FREELIST]
    if obj != 0 and (node < 0 or _slab_nid(state, state[cpt + c + C_SLAB]) == node):
        state[cpt + c + C_FREELIST] = _get_fp(mem, _ca(state, cache, CA_OFFSET), obj)
        _stat_at(state, c, ALLOC_FASTPATH, 1)
        return obj
    return _slab_alloc_slow(state, mem, cache, cpu, node, gfp)


@jit(inline="always")
def _hand_out(state, mem, cache, cpu, obj, gfp):
    """``slab_post_alloc_hook``: zero on __GFP_ZERO, mark the object allocated, count it."""
    if gfp & __GFP_ZERO:
        _zero(mem, obj, _ca(state, cache, CA_OBJECT_SIZE))
    _live_set(state, obj)
    state[_o(state, F_CPU) + _cpu_row(state, cache, cpu) + C_LIVE] += 1


@jit(inline="always")
def _hand_out_run(state, mem, cache, cpu, gfp, p, start, n):
    """:func:`_hand_out` for the ``n`` objects ``p[start:start+n]``, counted once."""
    if gfp & __GFP_ZERO:
        nbytes = _ca(state, cache, CA_OBJECT_SIZE)
        for k in range(start, start + n):
            _zero(mem, p[np.uint64(k)], nbytes)
    _live_set_run(state, p, start, n)
    state[_o(state, F_CPU) + _cpu_row(state, cache, cpu) + C_LIVE] += n


@jit(inline="always")
def _slab_alloc(state, mem, cache, cpu, node, gfp):
    """``slab_alloc_node`` through the CPU slab (no sheaves): one object for ``cache`` on
    ``cpu`` (``node`` -1 for any). Returns its address, or 0 when memory is exhausted."""
    obj = _slab_alloc_obj(state, mem, cache, cpu, node, gfp)
    if obj == 0:
        return 0
    _hand_out(state, mem, cache, cpu, obj, gfp)
    return obj


@jit(inline="always")
def _zero(mem, addr, nbytes):
    """Zero ``nbytes`` of the arena from ``addr`` (``__GFP_ZERO``)."""
    mem.view(np.uint8)[addr:addr + nbytes] = 0


@jit(inline="always")
def _take_back(state, cache, cpu, addr):
    """``slab_free_hook``: mark the object free and uncount it."""
    _live_clear(state, addr)
    state[_o(state, F_CPU) + _cpu_row(state, cache, cpu) + C_LIVE] -= 1


@jit(inline="always")
def _do_slab_free_chain(state, mem, cache, cpu, slab, head, tail, cnt):
    """``do_slab_free``: a chain ``head..tail`` of ``cnt`` objects of ``slab``, linked
    through their free pointers, goes in front of the CPU freelist if ``slab`` is the CPU
    slab (``FREE_FASTPATH`` += cnt), else to the slab (``__slab_free``, one slow path)."""
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    if state[cpt + c + C_SLAB] == slab:
        _set_fp(mem, _ca(state, cache, CA_OFFSET), tail, state[cpt + c + C_FREELIST])
        state[cpt + c + C_FREELIST] = head
        _stat_at(state, c, FREE_FASTPATH, cnt)
    else:
        _slab_free(state, mem, cache, cpu, slab, head, tail, cnt)
        _stat(state, cache, cpu, FREE_SLOWPATH, 1)


@jit(inline="always")
def _do_slab_free(state, mem, cache, cpu, slab, addr):
    """Free one allocated object through the CPU slab layer (no sheaves)."""
    _take_back(state, cache, cpu, addr)
    _do_slab_free_chain(state, mem, cache, cpu, slab, addr, addr, 1)


@jit
def _flush_cpu(state, mem, cache, cpu):
    """``__flush_cpu_slab``: deactivate the CPU slab and unfreeze the CPU partial list."""
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    slab = state[cpt + c + C_SLAB]
    freelist = state[cpt + c + C_FREELIST]
    state[cpt + c + C_SLAB] = NIL
    state[cpt + c + C_FREELIST] = 0
    if slab != NIL:
        _deactivate_slab(state, mem, cache, cpu, slab, freelist)
        _stat(state, cache, cpu, CPUSLAB_FLUSH, 1)
    chain = state[cpt + c + C_PARTIAL]
    state[cpt + c + C_PARTIAL] = NIL
    if chain != NIL:
        _put_partials(state, cache, cpu, chain)
