"""The per-CPU layer (``kmem_cache_cpu``): fast paths, the slow path, deactivation and flushing.

The lockless fast paths, the ``___slab_alloc`` slow path, ``deactivate_slab`` and flushing, as in
Linux 6.18 ``mm/slub.c``; under 7.0 the single-object path goes to ``nocpu`` and every free to the
slab."""
from __future__ import annotations

from ..flags import (__GFP_THISNODE, __GFP_ZERO, ALLOC_FASTPATH, ALLOC_NODE_MISMATCH,
                     ALLOC_REFILL, ALLOC_SLAB, ALLOC_SLOWPATH, CPU_PARTIAL_ALLOC,
                     CPUSLAB_FLUSH, DEACTIVATE_BYPASS, DEACTIVATE_EMPTY, DEACTIVATE_FULL,
                     DEACTIVATE_REMOTE_FREES, DEACTIVATE_TO_HEAD, DEACTIVATE_TO_TAIL,
                     FREE_FASTPATH, FREE_SLAB, FREE_SLOWPATH)
from .live import _aux, _held_run, _live_clear, _live_set, _live_set_run
from .layout import (C_FREELIST, C_PARTIAL, C_SLAB, CA_FP_KEY, CA_MIN_PARTIAL, CA_OBJECT_SIZE,
                     CA_OFFSET, G_NLOST, KERNEL_7_0, N_NR_PARTIAL, NIL, PG_CPU_PARTIAL,
                     PG_FROZEN, _ca,
                     CA_DEBUG, _geo,
                     _cpu_row, _node_row, _slab_nid, _stat)
from .native import jit, unit, zero_bytes
from .stats import _slab_held
from .debug import slab_alloc_debug
from .nocpu import slab_alloc_single
from .freelist import _set_fp
from .slablists import (_add_partial, _chain_tail_checked, _cpu_pop, _freeze_slab, _isolate,
                        _slab_free_fast, discard_slab, get_partial, new_slab, put_partials,
                        slab_free)


@jit(inline=True)
def _note_lost(st, cache, slab):
    """Record as lost (``sl_lost``) the objects of ``slab`` a stray write made a free list skip.

    ``slab`` is leaving its CPU; those objects are counted in use, reached by no list, held by
    nobody (as a repair's cut-off ones). Else, counted in use on no CPU, they would count as
    live."""
    extra = st.sl_inuse[slab] - _slab_held(st, cache, slab) - st.sl_lost[slab]
    if extra > 0:
        st.sl_lost[slab] += extra
        st.g[G_NLOST] += extra


@unit
def deactivate_slab(st, cache, cpu, slab, freelist):
    """``deactivate_slab``: give a CPU slab back to its node, or free it. 0.

    Splice the CPU's free list in front of the slab's own, unfreeze it and put it on the node list
    (head, or tail if it had remote frees), or free it if empty and the node has ``min_partial``
    partial slabs."""
    mem = st.mem
    sfl = st.sl_freelist
    inuse = st.sl_inuse
    offset = _ca(st, cache, CA_OFFSET)
    tail = False
    if sfl[slab] != 0:
        _stat(st, cache, cpu, DEACTIVATE_REMOTE_FREES, 1)
        tail = True
    last, n = _chain_tail_checked(st, cache, slab, freelist, st.sl_objects[slab])
    if last > 0 and sfl[slab] != 0:     # the slab's own list (its remote frees), checked
        own = _chain_tail_checked(st, cache, slab, sfl[slab], st.sl_objects[slab])[0]
        if own == last:                 # the CPU's list runs into it (a stray write):
            _isolate(st, cache, slab, last)     # spliced, the two would make a cycle
        if own == last or own < 0:
            last = -1
    if last < 0:                        # corrupted: the slab was isolated
        st.pg_flags[slab] &= ~PG_FROZEN
        return 0
    if last != 0:
        _set_fp(mem, offset, _ca(st, cache, CA_FP_KEY), last, sfl[slab])
        sfl[slab] = freelist
        inuse[slab] -= n
    _note_lost(st, cache, slab)
    st.pg_flags[slab] &= ~PG_FROZEN
    r = _node_row(st, cache, _slab_nid(st, slab))
    if inuse[slab] == 0 and st.node[r + N_NR_PARTIAL] >= _ca(st, cache, CA_MIN_PARTIAL):
        _stat(st, cache, cpu, DEACTIVATE_EMPTY, 1)
        discard_slab(st, cache, cpu, slab)
        _stat(st, cache, cpu, FREE_SLAB, 1)
    elif sfl[slab] != 0:
        _add_partial(st, cache, slab, tail)
        _stat(st, cache, cpu, DEACTIVATE_TO_TAIL if tail else DEACTIVATE_TO_HEAD, 1)
    else:
        _stat(st, cache, cpu, DEACTIVATE_FULL, 1)
    return 0


@jit(inline=True)
def _load_freelist(st, cache, c, slab, freelist):
    """``load_freelist``: make ``slab`` the CPU slab and return the first object of ``freelist``.

    The rest of ``freelist`` is kept on the CPU."""
    cpt = st.cpu
    cpt[c + C_SLAB] = slab
    cpt[c + C_FREELIST] = freelist
    return _cpu_pop(st, cache, c)       # checked: 0 if the free list is corrupted


@unit
def slab_alloc_slow(st, cache, cpu, node, gfp):
    """``___slab_alloc``: refill the CPU and return an object address, or 0 (out of memory).

    The CPU is refilled from its slab, its partial list, the node partial lists, other nodes, then
    a new slab. The object is not yet handed out."""
    _stat(st, cache, cpu, ALLOC_SLOWPATH, 1)
    cpt = st.cpu
    nxt = st.pg_next
    c = _cpu_row(st, cache, cpu)
    slab = cpt[c + C_SLAB]
    if slab != NIL:
        if node >= 0 and _slab_nid(st, slab) != node:
            _stat(st, cache, cpu, ALLOC_NODE_MISMATCH, 1)
            freelist = cpt[c + C_FREELIST]
            cpt[c + C_SLAB] = NIL
            cpt[c + C_FREELIST] = 0
            deactivate_slab(st, cache, cpu, slab, freelist)
        else:
            freelist = cpt[c + C_FREELIST]
            if freelist == 0:
                freelist = _freeze_slab(st, slab)
                if freelist == 0:               # full, on no list: it leaves the CPU
                    cpt[c + C_SLAB] = NIL
                    _note_lost(st, cache, slab)
                    _stat(st, cache, cpu, DEACTIVATE_BYPASS, 1)
                else:
                    _stat(st, cache, cpu, ALLOC_REFILL, 1)
            if freelist != 0:
                return _load_freelist(st, cache, c, slab, freelist)
    while cpt[c + C_PARTIAL] != NIL:                      # the CPU's partial slabs
        slab = cpt[c + C_PARTIAL]
        cpt[c + C_PARTIAL] = nxt[slab]
        nxt[slab] = NIL
        st.pg_flags[slab] &= ~PG_CPU_PARTIAL
        if node < 0 or _slab_nid(st, slab) == node:
            freelist = _freeze_slab(st, slab)
            _stat(st, cache, cpu, CPU_PARTIAL_ALLOC, 1)
            return _load_freelist(st, cache, c, slab, freelist)
        put_partials(st, cache, cpu, slab)
    try_thisnode = True
    page_node = node if node >= 0 else st.cpu_node[cpu]
    while True:                                           # new_objects
        pinned = (gfp & __GFP_THISNODE) != 0 or (node >= 0 and try_thisnode)
        slab = get_partial(st, cache, cpu, node, pinned)
        if slab != NIL:
            return _load_freelist(st, cache, c, slab, _freeze_slab(st, slab))
        slab = new_slab(st, cache, cpu, page_node, pinned)
        if slab != NIL:
            _stat(st, cache, cpu, ALLOC_SLAB, 1)
            return _load_freelist(st, cache, c, slab, _freeze_slab(st, slab))
        if node >= 0 and not gfp & __GFP_THISNODE and try_thisnode:
            try_thisnode = False
            continue
        return 0


@jit(inline=True)
def _slab_alloc_obj(st, cache, cpu, node, gfp):
    """``__slab_alloc_node`` without hooks: pop the CPU freelist (fast path) or take the slow path.

    Under 7.0 (no CPU freelist) ``___slab_alloc`` straight from the slabs. The object is not marked
    allocated. Returns its address or 0."""
    if st.kernel >= KERNEL_7_0:
        return slab_alloc_single(st, cache, cpu, node, gfp)
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    if cpt[c + C_FREELIST] != 0 and (node < 0 or _slab_nid(st, cpt[c + C_SLAB]) == node):
        obj = _cpu_pop(st, cache, c)
        if obj == 0:                    # corrupted: the CPU slab is isolated, the call fails
            return 0
        _stat(st, cache, cpu, ALLOC_FASTPATH, 1)
        return obj
    return slab_alloc_slow(st, cache, cpu, node, gfp)


@jit(inline=True)
def _hand_out(st, cache, cpu, obj, gfp):
    """``slab_post_alloc_hook``: zero on __GFP_ZERO, mark the object allocated."""
    if gfp & __GFP_ZERO:
        zero_bytes(st.mem, obj, _ca(st, cache, CA_OBJECT_SIZE))
    _live_set(st, obj)
    if _aux(st, cache):                 # (off its slab)
        st.held[obj >> 9] |= 1 << ((obj >> 3) & 63)


@jit(inline=True)
def _hand_out_run(st, cache, cpu, gfp, p, start, n):
    """:func:`_hand_out` for the ``n`` objects ``p[start:start+n]`` (Words)."""
    if gfp & __GFP_ZERO:
        nbytes = _ca(st, cache, CA_OBJECT_SIZE)
        mem = st.mem
        for k in range(start, start + n):
            zero_bytes(mem, p[k], nbytes)
    _live_set_run(st, p, start, n)
    _held_run(st, _aux(st, cache), p, start, start + n)


@jit(inline=True)
def _slab_alloc(st, cache, cpu, node, gfp):
    """``slab_alloc_node`` through the CPU slab (no sheaves).

    One object for ``cache`` on ``cpu`` (``node`` -1 for any). Returns its address, or 0 when
    memory is exhausted."""
    if _geo(st, cache, CA_DEBUG):           # slab_debug: the slow path, checked
        return slab_alloc_debug(st, cache, cpu, node, gfp, _geo(st, cache, CA_OBJECT_SIZE))
    obj = _slab_alloc_obj(st, cache, cpu, node, gfp)
    if obj == 0:
        return 0
    _hand_out(st, cache, cpu, obj, gfp)
    return obj


@jit(inline=True)
def _take_back(st, cache, cpu, addr):
    """``slab_free_hook``: mark the object free."""
    _live_clear(st, addr)


@jit(inline=True)
def _do_slab_free_chain(st, cache, cpu, slab, head, tail, cnt):
    """``do_slab_free``: free a chain ``head..tail`` of ``cnt`` objects of ``slab``.

    The chain is linked through their free pointers; it goes in front of the CPU freelist if
    ``slab`` is the CPU slab (``FREE_FASTPATH`` += cnt), else to the slab (``__slab_free``, one
    slow path; 7.0 has no CPU slab, so every chain takes this way, and FREE_SLOWPATH is its
    callers' to count: ``slab_free`` and bulk frees count their objects, sheaf flushes nothing)."""
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    if cpt[c + C_SLAB] == slab:
        _set_fp(st.mem, _ca(st, cache, CA_OFFSET), _ca(st, cache, CA_FP_KEY), tail,
                cpt[c + C_FREELIST])
        cpt[c + C_FREELIST] = head
        _stat(st, cache, cpu, FREE_FASTPATH, cnt)
    else:
        if not _slab_free_fast(st, cache, cpu, slab, head, tail, cnt):
            slab_free(st, cache, cpu, slab, head, tail, cnt)
        if st.kernel < KERNEL_7_0:     # 7.0's callers count (a sheaf flush does not)
            _stat(st, cache, cpu, FREE_SLOWPATH, 1)


@unit
def flush_cpu(st, cache, cpu):
    """``__flush_cpu_slab``: deactivate the CPU slab and unfreeze the CPU partial list. 0."""
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    slab = cpt[c + C_SLAB]
    freelist = cpt[c + C_FREELIST]
    cpt[c + C_SLAB] = NIL
    cpt[c + C_FREELIST] = 0
    if slab != NIL:
        deactivate_slab(st, cache, cpu, slab, freelist)
        _stat(st, cache, cpu, CPUSLAB_FLUSH, 1)
    chain = cpt[c + C_PARTIAL]
    cpt[c + C_PARTIAL] = NIL
    if chain != NIL:
        put_partials(st, cache, cpu, chain)
    return 0
