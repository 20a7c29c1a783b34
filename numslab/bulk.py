"""Batches: ``__kmem_cache_alloc_bulk``, the kernel's detached-freelist bulk free, batch
validation, and the seed's array modes (LOCAL, PARTIAL, NEW) from Lameter's 2015 RFC."""
from __future__ import annotations

import numpy as np

from ._jit import jit
from ._layout import (C_FREELIST, C_LIVE, C_PARTIAL, CA_MIN_OBJECTS, CA_RECIP, CA_MIN_ORDER,
                      CA_OBJECTS, CA_OFFSET, CA_ORDER, CA_SIZE, F_CPU, F_CPU_NODE, F_NODE,
                      F_PG_FLAGS, F_PG_HEAD, F_PG_NEXT, F_PG_ORDER, F_SL_CACHE,
                      F_SL_FREELIST, F_SL_INUSE, F_SL_OBJECTS, F_LIVE, G_ERR2, G_NPAGES,
                      N_PARTIAL_HEAD, NIL, PG_CPU_PARTIAL, PG_LARGE, PG_SLAB, PG_TAIL, _o,
                      _g, _set_g, _stat)
from .cpucache import _do_slab_free_chain, _hand_out_run, _slab_alloc_slow
from .debug import E_DOUBLE_FREE, E_LARGE, _live_clear, _live_set, _live_test, _locate
from .flags import (ALLOC_ARRAY_NEW, ALLOC_ARRAY_PARTIAL, ALLOC_FASTPATH, ALLOC_SLAB,
                    ORDER_FALLBACK)
from .pages import _alloc_pages, _free_pages
from .slablists import (_ca, _cpu_row, _get_fp, _init_slab, _node_row, _remove_partial,
                        _set_fp)


@jit(inline="always")
def _head_frame(state, pfn):
    """``compound_head``: the head frame of the block holding ``pfn``."""
    if state[_o(state, F_PG_FLAGS) + pfn] & PG_TAIL:
        return state[_o(state, F_PG_HEAD) + pfn]
    return pfn


# ---- allocation ------------------------------------------------------------------------------
@jit
def _alloc_bulk_slab(state, mem, cache, cpu, gfp, nr, p, start):
    """``__kmem_cache_alloc_bulk``: fill ``p[start:start+nr]`` (int64) with objects popped
    from the CPU freelist, taking the slow path once whenever it runs dry. Objects are not
    marked allocated. Returns ``nr``, or 0 after giving back what it took."""
    fl = _o(state, F_CPU) + _cpu_row(state, cache, cpu) + C_FREELIST
    offset = _ca(state, cache, CA_OFFSET)
    fast = 0
    obj = state[fl]                  # the CPU freelist head, kept in a register meanwhile
    for i in range(nr):
        if obj == 0:
            state[fl] = 0
            obj = _slab_alloc_slow(state, mem, cache, cpu, -1, gfp)
            if obj == 0:
                _stat(state, cache, cpu, ALLOC_FASTPATH, fast)
                _free_bulk_raw(state, mem, cache, cpu, i, p[start:start + i])
                return 0
            p[np.uint64(start + i)] = obj
            obj = state[fl]
            continue
        p[np.uint64(start + i)] = obj          # unsigned: no wraparound code
        obj = _get_fp(mem, offset, obj)
        fast += 1
    state[fl] = obj
    _stat(state, cache, cpu, ALLOC_FASTPATH, fast)
    return nr


# ---- freeing -----------------------------------------------------------------------------------
@jit
def _build_detached_freelist(state, mem, cache, cpu, size, p):
    """``build_detached_freelist`` (6.x): take the last object of ``p[:size]``, link every
    other object of its slab found scanning down (stopping at the third object of another
    slab) into a chain through their free pointers, and swap them to ``p[same:size]``.

    Returns (same, slab, owner cache, head, tail, cnt); slab is NIL when the object was a
    large kmalloc, which is freed here (``kfree_bulk`` only, ``cache`` NIL).

    For a cache whose slabs are all order 0 an object's own frame is its slab, so the scan
    skips ``compound_head``'s load (the same answer, one dependent load fewer per object).
    Indices are unsigned: no wraparound code."""
    flags = _o(state, F_PG_FLAGS)
    size -= 1
    obj = p[np.uint64(size)]
    slab = _head_frame(state, obj >> 12)
    if cache == NIL and not state[flags + slab] & PG_SLAB:
        _free_pages(state, cpu, slab, state[_o(state, F_PG_ORDER) + slab])
        return size, NIL, NIL, 0, 0, 0
    owner = state[_o(state, F_SL_CACHE) + slab] if cache == NIL else cache
    offset = _ca(state, owner, CA_OFFSET)
    order0 = cache != NIL and _ca(state, cache, CA_ORDER) == 0
    _set_fp(mem, offset, obj, 0)
    head = obj
    tail = obj
    cnt = 1
    lookahead = 3
    same = size
    while size:
        size -= 1
        obj = p[np.uint64(size)]
        pfn = obj >> 12
        if (pfn if order0 else _head_frame(state, pfn)) == slab:
            _set_fp(mem, offset, obj, head)
            head = obj
            cnt += 1
            same -= 1
            if size != same:
                p[np.uint64(size)], p[np.uint64(same)] = p[np.uint64(same)], p[np.uint64(size)]
            continue
        lookahead -= 1
        if lookahead == 0:
            break
    return same, slab, owner, head, tail, cnt


@jit
def _free_bulk_raw(state, mem, cache, cpu, size, p):
    """``__kmem_cache_free_bulk``: give ``p[:size]`` back to their slabs one detached
    freelist at a time (no checks, no live-bit changes; ``p`` is permuted)."""
    while size:
        size, slab, owner, head, tail, cnt = _build_detached_freelist(state, mem, cache, cpu,
                                                                      size, p)
        if slab != NIL:
            _do_slab_free_chain(state, mem, owner, cpu, slab, head, tail, cnt)


@jit(inline="always")
def _check_objects(state, cache, nr, p):
    """The loop of :func:`_check_batch` for one cache (not NIL), inlined into the bulk fast
    paths: -1 if ``p[:nr]`` are distinct live objects of ``cache``, now marked free; else
    the index of the first that is not, with the ones before it not yet given back.

    Objects of one batch mostly come in runs on one page, so the outer loop looks a page up
    once and an inner loop takes the run: per object, one load of the address, a page
    compare, a grid test (a mask for a power-of-two size), a bound and the live bit, kept
    in a register while neighbours share its word (see ``_live_set_run``). Indices are
    unsigned so that Numba emits no wraparound code."""
    flags = _o(state, F_PG_FLAGS)
    heads = _o(state, F_PG_HEAD)
    owners = _o(state, F_SL_CACHE)
    nobjs = _o(state, F_SL_OBJECTS)
    live = _o(state, F_LIVE)
    size = _ca(state, cache, CA_SIZE)
    recip = _ca(state, cache, CA_RECIP)
    pow2 = size & (size - 1) == 0
    mask = size - 1
    top = np.uint64((_g(state, G_NPAGES) << 12) - 1)
    cw = np.uint64(live)
    cval = state[cw]
    i = 0
    while i < nr:
        a = p[np.uint64(i)]
        if np.uint64(a - 1) >= top:     # a <= 0 or a >= limit, in one unsigned compare
            break
        pfn = a >> 12
        head = pfn
        f = state[np.uint64(flags + pfn)]
        if f & PG_TAIL:
            head = state[np.uint64(heads + pfn)]
            f = state[np.uint64(flags + head)]
        if not f & PG_SLAB or state[np.uint64(owners + head)] != cache:
            break
        base = head << 12
        end = base + state[np.uint64(nobjs + head)] * size
        while True:                     # the run of objects on page pfn, from p[i] == a
            off = a - base
            if pow2:
                bad = (off & mask) != 0
            else:
                bad = ((off * recip) >> 32) * size != off
            w = np.uint64(live + (a >> 9))
            if w != cw:
                state[cw] = cval
                cw = w
                cval = state[w]
            bit = np.int64(1) << ((a >> 3) & 63)
            if bad | (a >= end) | ((cval & bit) == 0):   # one branch, not three
                state[cw] = cval
                return i
            cval &= ~bit
            i += 1
            if i >= nr:
                break
            a = p[np.uint64(i)]
            if a >> 12 != pfn:
                break
    state[cw] = cval
    return -1 if i >= nr else i


@jit
def _check_batch(state, cache, nr, p):
    """Check that ``p[:nr]`` are distinct live objects of ``cache`` (NIL: any cache, or large
    kmalloc blocks) and take them back (live bits cleared; the caller fixes the per-CPU live
    counts). On the first bad element restore everything and return its error code, with
    its index in G_ERR2; else 0."""
    if cache == NIL:
        return _check_batch_any(state, cache, nr, p)
    bad = _check_objects(state, cache, nr, p)
    if bad >= 0:
        return _batch_fail(state, cache, bad, p)
    return 0


@jit
def _batch_fail(state, cache, i, p):
    """Element ``i`` of ``p`` failed :func:`_check_batch`: find its error code (a duplicate
    of an earlier element now reads as a double free), give ``p[:i]`` their live bits back
    and record ``i`` in G_ERR2."""
    err, _ = _locate(state, p[i], cache)
    if err == 0:                                      # pragma: no cover - cannot happen
        err = E_DOUBLE_FREE
    for j in range(i):
        _live_set(state, p[j])
    _set_g(state, G_ERR2, i)
    return err


@jit
def _check_batch_any(state, cache, nr, p):
    """The general :func:`_check_batch`: ``p[:nr]`` are distinct live objects (of ``cache``
    unless NIL, when large kmalloc blocks are allowed too); take them back (live bits cleared, per-CPU
    live counts fixed by the caller). On the first bad element restore everything and
    return its error code, with its index in G_ERR2; else 0."""
    flags = _o(state, F_PG_FLAGS)
    last_pfn = -1
    base = 0
    nobj = 0
    size = 0
    recip = 0
    for i in range(nr):
        a = p[i]
        if cache != NIL and a > 0 and a >> 12 == last_pfn and _live_test(state, a):
            off = a - base                       # same page as the previous object
            idx = (off * recip) >> 32
            if idx * size == off and idx < nobj:
                _live_clear(state, a)
                continue
        err, slab = _locate(state, a, cache)
        if err == E_LARGE and cache == NIL:
            state[flags + (a >> 12)] &= ~PG_LARGE   # a duplicate will now look freed
            continue
        if err:
            if err < 0 and cache == NIL and err != E_DOUBLE_FREE:
                for j in range(i):                  # was it a large block seen earlier?
                    if p[j] == a:
                        err = E_DOUBLE_FREE
            for j in range(i):                      # undo: nothing in the batch is freed
                pf = _head_frame(state, p[j] >> 12)
                if state[flags + pf] & PG_SLAB:
                    _live_set(state, p[j])
                else:
                    state[flags + pf] |= PG_LARGE
            _set_g(state, G_ERR2, i)
            return err
        _live_clear(state, a)
        if cache != NIL:
            last_pfn = a >> 12
            base = slab << 12
            nobj = state[_o(state, F_SL_OBJECTS) + slab]
            size = _ca(state, cache, CA_SIZE)
            recip = _ca(state, cache, CA_RECIP)
    return 0


@jit
def _uncount(state, cpu, nr, p):
    """Subtract the slab objects of ``p[:nr]`` from their caches' live counts on ``cpu``."""
    flags = _o(state, F_PG_FLAGS)
    owner = _o(state, F_SL_CACHE)
    cpt = _o(state, F_CPU)
    for i in range(nr):
        pf = _head_frame(state, p[i] >> 12)
        if state[flags + pf] & PG_SLAB:
            state[cpt + _cpu_row(state, state[owner + pf], cpu) + C_LIVE] -= 1


# ---- the seed's array modes ------------------------------------------------------------------
@jit(inline="always")
def _take_slab(state, mem, cache, cpu, gfp, slab, p, at):
    """Hand out every free object of a partial ``slab`` (now full, on no list) into
    ``p[at:]``, walking its free list; returns how many."""
    fl = _o(state, F_SL_FREELIST)
    offset = _ca(state, cache, CA_OFFSET)
    obj = state[fl + slab]
    state[fl + slab] = 0
    state[_o(state, F_SL_INUSE) + slab] = state[_o(state, F_SL_OBJECTS) + slab]
    n = 0
    while obj != 0:
        p[np.uint64(at + n)] = obj
        n += 1
        obj = _get_fp(mem, offset, obj)
    _hand_out_run(state, mem, cache, cpu, gfp, p, at, n)
    return n


@jit
def _alloc_partial_slabs(state, mem, cache, cpu, gfp, nr, p, start):
    """SLAB_ARRAY_ALLOC_PARTIAL: take whole partial slabs, first from the CPU partial list,
    then from the local node's, while each one's free objects fit in what is still wanted.
    Returns the objects allocated into ``p[start:]``."""
    cpt = _o(state, F_CPU)
    nxt = _o(state, F_PG_NEXT)
    inuse = _o(state, F_SL_INUSE)
    objects = _o(state, F_SL_OBJECTS)
    flags = _o(state, F_PG_FLAGS)
    c = _cpu_row(state, cache, cpu)
    got = 0
    slab = state[cpt + c + C_PARTIAL]
    while slab != NIL and state[objects + slab] - state[inuse + slab] <= nr - got:
        state[cpt + c + C_PARTIAL] = state[nxt + slab]
        state[nxt + slab] = NIL
        state[flags + slab] &= ~PG_CPU_PARTIAL
        got += _take_slab(state, mem, cache, cpu, gfp, slab, p, start + got)
        slab = state[cpt + c + C_PARTIAL]
    nd = _o(state, F_NODE)
    r = _node_row(state, cache, state[_o(state, F_CPU_NODE) + cpu])
    slab = state[nd + r + N_PARTIAL_HEAD]
    while slab != NIL and state[objects + slab] - state[inuse + slab] <= nr - got:
        _remove_partial(state, cache, slab)
        got += _take_slab(state, mem, cache, cpu, gfp, slab, p, start + got)
        slab = state[nd + r + N_PARTIAL_HEAD]
    _stat(state, cache, cpu, ALLOC_ARRAY_PARTIAL, got)
    return got


@jit
def _alloc_new_slabs(state, mem, cache, cpu, gfp, nr, p, start):
    """SLAB_ARRAY_ALLOC_NEW: carve whole fresh slabs straight into ``p[start:]`` with no
    free list ever built, while a whole slab's worth is still wanted (so the count may come
    back short). Returns the objects allocated."""
    per = _ca(state, cache, CA_OBJECTS)
    size = _ca(state, cache, CA_SIZE)
    order = _ca(state, cache, CA_ORDER)
    node = state[_o(state, F_CPU_NODE) + cpu]
    got = 0
    while nr - got >= per:
        objs = per
        slab = _alloc_pages(state, cpu, node, order, False)
        if slab == NIL and _ca(state, cache, CA_MIN_ORDER) < order:
            slab = _alloc_pages(state, cpu, node, _ca(state, cache, CA_MIN_ORDER), False)
            objs = _ca(state, cache, CA_MIN_OBJECTS)
            if slab != NIL:
                _stat(state, cache, cpu, ORDER_FALLBACK, 1)
        if slab == NIL:
            break
        _init_slab(state, cache, slab, objs)
        state[_o(state, F_SL_INUSE) + slab] = objs
        _stat(state, cache, cpu, ALLOC_SLAB, 1)
        obj = slab << 12
        for i in range(start + got, start + got + objs):
            p[np.uint64(i)] = obj
            obj += size
        _hand_out_run(state, mem, cache, cpu, gfp, p, start + got, objs)
        got += objs
    _stat(state, cache, cpu, ALLOC_ARRAY_NEW, got)
    return got

