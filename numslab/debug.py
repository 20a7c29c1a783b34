"""Checks: the live-object bitmap, address validation for every free, and ``validate``,
which walks every slab and list and checks the invariants written in ARCHITECTURE.md."""
from __future__ import annotations

import numpy as np

from ._jit import jit
from ._layout import (B_COUNT, B_HEAD, B_NCOLS, C_FREELIST, C_LIVE, C_MAIN, C_PARTIAL, C_SLAB,
                      C_SPARE, CA_NCOLS, CA_RECIP, CA_USER_SHEAVES, F_CA, F_PG_HEAD, PG_TAIL, N_BARN_EMPTY, N_BARN_FULL,
                      SH_CACHE, SH_CAPACITY, SH_NEXT, SH_OBJECTS, SH_SIZE, CA_ACTIVE, CA_OFFSET, CA_SIZE, F_BUDDY, F_CPU, F_LIVE,
                      F_NODE, F_PG_FLAGS, F_PG_NEXT, F_PG_ORDER, F_PG_PREV, F_SL_CACHE,
                      F_SL_FREELIST, F_SL_INUSE, F_SL_OBJECTS, G_ERR0, G_ERR1, G_ERR2, G_MAX_CACHES,
                      G_NCPUS, G_NNODES, G_NPAGES, N_NR_PARTIAL, N_NR_SLABS, N_PARTIAL_HEAD,
                      N_PARTIAL_TAIL, N_TOTAL_OBJECTS, NIL, NR_ORDERS, PG_BUDDY,
                      PG_CPU_PARTIAL, PG_FROZEN, PG_HEAD, PG_LARGE, PG_NODE_PARTIAL, PG_SLAB,
                      P_COUNT, P_LISTS, PCP_MAX_ORDER, PG_PCP, _g, _o, _set_g)
from .pages import _page_block, _pcp_row
from .slablists import _ca, _cpu_row, _get_fp, _node_row, _slab_nid

# ---- error codes returned by kernels (negative; 0 is success / NULL) -----------------------
E_OUTSIDE = -1        #: address outside the arena
E_NOT_SLAB = -2       #: address on a page that is free, reserved or not a slab
E_WRONG_CACHE = -3    #: object of another cache (G_ERR0 = its cache id)
E_MISALIGNED = -4     #: not on the object grid of its slab (G_ERR0 = slab frame)
E_DOUBLE_FREE = -5    #: object already free
E_LARGE = -6          #: start of a large kmalloc block (G_ERR0 = head frame, G_ERR1 = order)
E_NOT_HEAD = -7       #: inside an allocated block but not at its start
E_CORRUPT = -8        #: ``validate`` found a broken invariant (G_ERR0 = what, G_ERR1 = where)

#: What ``validate`` reports in G_ERR0 with E_CORRUPT.
CORRUPTION = (
    "cpu slab is not a frozen slab of this cache",
    "free list leaves its slab or the object grid",
    "free list holds a live object",
    "free list is longer than the slab",
    "cpu partial slab is not marked or not of this cache",
    "node partial list link or mark is broken",
    "node partial list count or tail is wrong",
    "inuse + free objects != objects",
    "frozen slab is no CPU's cpu slab",
    "slab with free objects is on no list",
    "node slab or object count is wrong",
    "live objects differ from the per-CPU live counters",
    "buddy free list is broken",
    "full slab on a node partial list",
    "sheaf holds a live object, a foreign object or too many objects",
)


@jit(inline="always")
def _live_test(state, addr):
    """1 if the object at ``addr`` is allocated (its bit in the live bitmap is set). The
    three bitmap helpers index with an unsigned word number (``addr`` > 0 is checked by
    the callers), so Numba emits no negative-index wraparound code in batch loops."""
    return (state[np.uint64(_o(state, F_LIVE) + (addr >> 9))] >> ((addr >> 3) & 63)) & 1


@jit(inline="always")
def _live_set(state, addr):
    """Mark the object at ``addr`` allocated."""
    state[np.uint64(_o(state, F_LIVE) + (addr >> 9))] |= np.int64(1) << ((addr >> 3) & 63)


@jit(inline="always")
def _live_set_run(state, p, start, n):
    """Mark the objects ``p[start:start+n]`` allocated. Neighbouring objects share a bitmap
    word, so the word stays in a register while they do: a store and a reload of the same
    word in consecutive iterations would stall on store forwarding (or a memory-order
    misprediction) every time."""
    if n <= 0:
        return
    live = _o(state, F_LIVE)
    cw = np.uint64(live + (p[np.uint64(start)] >> 9))
    cval = state[cw]
    for k in range(start, start + n):
        a = p[np.uint64(k)]
        w = np.uint64(live + (a >> 9))
        if w != cw:
            state[cw] = cval
            cw = w
            cval = state[w]
        cval |= np.int64(1) << ((a >> 3) & 63)
    state[cw] = cval


@jit(inline="always")
def _live_clear(state, addr):
    """Mark the object at ``addr`` free."""
    state[np.uint64(_o(state, F_LIVE) + (addr >> 9))] &= ~(np.int64(1) << ((addr >> 3) & 63))


@jit(inline="always")
def _locate(state, addr, cache):
    """Check that ``addr`` is a live object (of ``cache`` unless it is NIL) without changing
    anything. Returns (0, slab head frame) or (error code, NIL) with details in G_ERR*."""
    if addr <= 0 or addr >= _g(state, G_NPAGES) << 12:
        return E_OUTSIDE, NIL
    pfn = addr >> 12
    flags = _o(state, F_PG_FLAGS)
    f = state[flags + pfn]
    if f & PG_TAIL:
        head = state[_o(state, F_PG_HEAD) + pfn]
        f = state[flags + head]
    elif f & PG_HEAD:
        head = pfn
    else:
        return E_NOT_SLAB, NIL
    if not f & PG_SLAB:
        _set_g(state, G_ERR0, head)
        _set_g(state, G_ERR1, state[_o(state, F_PG_ORDER) + head])
        if f & PG_LARGE:
            return (E_LARGE if addr == head << 12 else E_NOT_HEAD), NIL
        return E_NOT_SLAB, NIL
    owner = state[_o(state, F_SL_CACHE) + head]
    if cache != NIL and owner != cache:
        _set_g(state, G_ERR0, owner)
        return E_WRONG_CACHE, NIL
    off = addr - (head << 12)
    idx = (off * _ca(state, owner, CA_RECIP)) >> 32       # off // size, exact for off < 2**22
    if idx * _ca(state, owner, CA_SIZE) != off or idx >= state[_o(state, F_SL_OBJECTS) + head]:
        _set_g(state, G_ERR0, head)
        return E_MISALIGNED, NIL
    if not _live_test(state, addr):
        return E_DOUBLE_FREE, NIL
    return 0, head


@jit
def _corrupt(state, what, where):
    """Record a broken invariant and return E_CORRUPT."""
    _set_g(state, G_ERR0, what)
    _set_g(state, G_ERR1, where)
    return E_CORRUPT


@jit
def _walk_freelist(state, mem, cache, slab, obj):
    """Length of the free list from ``obj`` inside ``slab``, or a negative code."""
    size = _ca(state, cache, CA_SIZE)
    offset = _ca(state, cache, CA_OFFSET)
    base = slab << 12
    nobj = state[_o(state, F_SL_OBJECTS) + slab]
    n = 0
    while obj != 0:
        off = obj - base
        if off < 0 or off % size or off // size >= nobj:
            return -2
        if _live_test(state, obj):
            return -3
        n += 1
        if n > nobj:
            return -4
        obj = _get_fp(mem, offset, obj)
    return n


@jit
def _count_sheaf(state, mem, cache, sheaf, cached):
    """Add the objects of ``sheaf`` (0: none) to ``cached`` per slab; 1 if one is live, not
    an object of ``cache`` or the sheaf is over capacity."""
    if sheaf == 0:
        return 0
    w = sheaf >> 3
    size = mem[w + SH_SIZE]
    if size < 0 or size > mem[w + SH_CAPACITY] or mem[w + SH_CACHE] != cache:
        return 1
    for i in range(size):
        obj = mem[w + SH_OBJECTS + i]
        if obj <= 0 or obj >= _g(state, G_NPAGES) << 12:
            return 1
        head, order, f = _page_block(state, obj >> 12)
        if head == NIL or not f & PG_SLAB or state[_o(state, F_SL_CACHE) + head] != cache \
                or _live_test(state, obj):
            return 1
        off = obj - (head << 12)
        if off % _ca(state, cache, CA_SIZE):
            return 1
        cached[head] += 1
    return 0


@jit(nrt=True)
def _validate_cache(state, mem, cache):
    """Check every invariant of one cache; 0 or E_CORRUPT (details in G_ERR0/G_ERR1)."""
    flags = _o(state, F_PG_FLAGS)
    nxt = _o(state, F_PG_NEXT)
    prv = _o(state, F_PG_PREV)
    owner = _o(state, F_SL_CACHE)
    inuse = _o(state, F_SL_INUSE)
    objects = _o(state, F_SL_OBJECTS)
    sfl = _o(state, F_SL_FREELIST)
    cpt = _o(state, F_CPU)
    nd = _o(state, F_NODE)
    npages = _g(state, G_NPAGES)
    ncpus = _g(state, G_NCPUS)
    nnodes = _g(state, G_NNODES)
    cpu_free = np.zeros(npages, np.int64)     # objects on a cpu freelist or in sheaves, per slab
    is_cpu_slab = np.zeros(npages, np.bool_)
    live_counter = 0
    on_cpu_lists = 0
    on_node_lists = np.zeros(nnodes, np.int64)
    for cpu in range(ncpus):
        c = _cpu_row(state, cache, cpu)
        live_counter += state[cpt + c + C_LIVE]
        slab = state[cpt + c + C_SLAB]
        if slab != NIL:
            if (state[flags + slab] & (PG_SLAB | PG_FROZEN)) != (PG_SLAB | PG_FROZEN) \
                    or state[owner + slab] != cache or state[flags + slab] & (PG_NODE_PARTIAL | PG_CPU_PARTIAL):
                return _corrupt(state, 0, slab)
            n = _walk_freelist(state, mem, cache, slab, state[cpt + c + C_FREELIST])
            if n < 0:
                return _corrupt(state, -n - 1, slab)
            cpu_free[slab] = n
            is_cpu_slab[slab] = True
        elif state[cpt + c + C_FREELIST] != 0:
            return _corrupt(state, 0, cpu)
        slab = state[cpt + c + C_PARTIAL]
        k = 0
        while slab != NIL:
            if state[flags + slab] & (PG_SLAB | PG_CPU_PARTIAL | PG_FROZEN | PG_NODE_PARTIAL) \
                    != (PG_SLAB | PG_CPU_PARTIAL) or state[owner + slab] != cache:
                return _corrupt(state, 4, slab)
            k += 1
            if k > npages:
                return _corrupt(state, 4, slab)
            slab = state[nxt + slab]
        on_cpu_lists += k
    for cpu in range(ncpus):
        c = _cpu_row(state, cache, cpu)
        for col in (C_MAIN, C_SPARE):
            if _count_sheaf(state, mem, cache, state[cpt + c + col], cpu_free):
                return _corrupt(state, 14, state[cpt + c + col])
    for node in range(nnodes):
        r = _node_row(state, cache, node)
        for col in (N_BARN_FULL, N_BARN_EMPTY):
            sheaf = state[nd + r + col]
            while sheaf:
                if _count_sheaf(state, mem, cache, sheaf, cpu_free):
                    return _corrupt(state, 14, sheaf)
                sheaf = mem[(sheaf >> 3) + SH_NEXT]
    sheaf = state[_o(state, F_CA) + cache * CA_NCOLS + CA_USER_SHEAVES]
    while sheaf:
        if _count_sheaf(state, mem, cache, sheaf, cpu_free):
            return _corrupt(state, 14, sheaf)
        sheaf = mem[(sheaf >> 3) + SH_NEXT]
    for node in range(nnodes):
        r = _node_row(state, cache, node)
        slab = state[nd + r + N_PARTIAL_HEAD]
        prev = NIL
        k = 0
        while slab != NIL:
            if state[flags + slab] & (PG_SLAB | PG_NODE_PARTIAL | PG_FROZEN | PG_CPU_PARTIAL) \
                    != (PG_SLAB | PG_NODE_PARTIAL) or state[owner + slab] != cache \
                    or state[prv + slab] != prev or _slab_nid(state, slab) != node:
                return _corrupt(state, 5, slab)
            if state[inuse + slab] >= state[objects + slab]:
                return _corrupt(state, 13, slab)
            k += 1
            if k > npages:
                return _corrupt(state, 5, slab)
            prev = slab
            slab = state[nxt + slab]
        if k != state[nd + r + N_NR_PARTIAL] or state[nd + r + N_PARTIAL_TAIL] != prev:
            return _corrupt(state, 6, node)
        on_node_lists[node] = k
    nslabs = np.zeros(nnodes, np.int64)
    nobjs = np.zeros(nnodes, np.int64)
    live_total = 0
    size = _ca(state, cache, CA_SIZE)
    for slab in range(npages):
        if not (state[flags + slab] & PG_HEAD and state[flags + slab] & PG_SLAB and state[owner + slab] == cache):
            continue
        node = _slab_nid(state, slab)
        if state[flags + slab] & PG_NODE_PARTIAL:
            on_node_lists[node] -= 1
        if state[flags + slab] & PG_CPU_PARTIAL:
            on_cpu_lists -= 1
        nslabs[node] += 1
        nobjs[node] += state[objects + slab]
        n = _walk_freelist(state, mem, cache, slab, state[sfl + slab])
        if n < 0:
            return _corrupt(state, -n - 1, slab)
        if state[inuse + slab] + n != state[objects + slab]:
            return _corrupt(state, 7, slab)
        if state[flags + slab] & PG_FROZEN and not is_cpu_slab[slab]:
            return _corrupt(state, 8, slab)
        if n > 0 and not state[flags + slab] & (PG_FROZEN | PG_NODE_PARTIAL | PG_CPU_PARTIAL):
            return _corrupt(state, 9, slab)
        live = 0
        base = slab << 12
        for i in range(state[objects + slab]):
            live += _live_test(state, base + i * size)
        if live != state[objects + slab] - n - cpu_free[slab]:
            return _corrupt(state, 7, slab)
        live_total += live
    for node in range(nnodes):
        r = _node_row(state, cache, node)
        if nslabs[node] != state[nd + r + N_NR_SLABS] or nobjs[node] != state[nd + r + N_TOTAL_OBJECTS]:
            return _corrupt(state, 10, node)
    if on_cpu_lists != 0:
        return _corrupt(state, 4, cache)
    for node in range(nnodes):
        if on_node_lists[node] != 0:
            return _corrupt(state, 5, node)
    if live_total != live_counter:
        return _corrupt(state, 11, cache)
    return 0


@jit(nrt=True)
def _validate_pages(state):
    """Check the buddy free lists and the per-CPU page lists: links, marks, counts and that
    no free block overlaps an allocated one. 0 or E_CORRUPT."""
    flags = _o(state, F_PG_FLAGS)
    pord = _o(state, F_PG_ORDER)
    nxt = _o(state, F_PG_NEXT)
    prv = _o(state, F_PG_PREV)
    bd = _o(state, F_BUDDY)
    ppn = _g(state, G_NPAGES) // _g(state, G_NNODES)
    for node in range(_g(state, G_NNODES)):
        for order in range(NR_ORDERS):
            row = (node * NR_ORDERS + order) * B_NCOLS
            pfn = state[bd + row + B_HEAD]
            prev = NIL
            k = 0
            while pfn != NIL:
                if state[flags + pfn] != PG_BUDDY or state[pord + pfn] != order or state[prv + pfn] != prev \
                        or pfn // ppn != node or (pfn - node * ppn) & ((1 << order) - 1):
                    return _corrupt(state, 12, pfn)
                for t in range(pfn + 1, pfn + (1 << order)):
                    if state[flags + t] != 0:
                        return _corrupt(state, 12, t)
                k += 1
                prev = pfn
                pfn = state[nxt + pfn]
            if k != state[bd + row + B_COUNT]:
                return _corrupt(state, 12, node)
    ncpus = _g(state, G_NCPUS)
    nnodes = _g(state, G_NNODES)
    for cpu in range(ncpus):                    # the per-CPU page lists
        for node in range(nnodes):
            row = _pcp_row(state, cpu, node)
            pages = 0
            for order in range(PCP_MAX_ORDER + 1):
                pfn = state[row + P_LISTS + 2 * order]
                prev = NIL
                while pfn != NIL:
                    if state[flags + pfn] != PG_PCP or state[pord + pfn] != order \
                            or state[prv + pfn] != prev or pfn // ppn != node \
                            or (pfn - node * ppn) & ((1 << order) - 1):
                        return _corrupt(state, 12, pfn)
                    for t in range(pfn + 1, pfn + (1 << order)):
                        if state[flags + t] != 0:
                            return _corrupt(state, 12, t)
                    pages += 1 << order
                    prev = pfn
                    pfn = state[nxt + pfn]
                if prev != state[row + P_LISTS + 2 * order + 1]:
                    return _corrupt(state, 12, node)
            if pages != state[row + P_COUNT]:
                return _corrupt(state, 12, node)
    return 0


@jit(nrt=True)
def _validate_all(state, mem, cache):
    """Validate one cache, or every active cache and the page allocator if ``cache`` is NIL."""
    if cache != NIL:
        return _validate_cache(state, mem, cache)
    for c in range(_g(state, G_MAX_CACHES)):
        if _ca(state, c, CA_ACTIVE):
            err = _validate_cache(state, mem, c)
            if err:
                _set_g(state, G_ERR2, c)
                return err
    return _validate_pages(state)
