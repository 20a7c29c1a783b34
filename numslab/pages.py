"""The page allocator: a binary buddy allocator per NUMA node, orders 0 to 10, over the
page frames of the arena, with per-CPU page lists (pcp) in front for orders 0 to 3, as
``mm/page_alloc.c`` hands out pages to SLUB and kmalloc (pcp rules of 5.14 to 6.6)."""
from __future__ import annotations

from ._jit import jit
from ._layout import (B_COUNT, B_HEAD, B_NCOLS, F_BUDDY, F_PCP, F_PG_FLAGS, F_PG_HEAD,
                      F_PG_NEXT, F_PG_ORDER, F_PG_PREV, G_NCPUS, G_NNODES, G_NPAGES,
                      G_PAGES_PER_NODE, NIL, NR_ORDERS, P_BATCH, P_COUNT, P_FREE_FACTOR,
                      P_HIGH, P_LISTS, P_NCOLS, PCP_MAX_ORDER, PG_BUDDY, PG_HEAD, PG_PCP,
                      PG_RESERVED, PG_TAIL, _g, _o)


@jit(inline="always")
def _area_push(state, node, order, pfn):
    """Put the free block at ``pfn`` at the head of free area (node, order)."""
    bd = _o(state, F_BUDDY)
    nxt = _o(state, F_PG_NEXT)
    prv = _o(state, F_PG_PREV)
    row = (node * NR_ORDERS + order) * B_NCOLS
    head = state[bd + row + B_HEAD]
    state[nxt + pfn] = head
    state[prv + pfn] = NIL
    if head != NIL:
        state[prv + head] = pfn
    state[bd + row + B_HEAD] = pfn
    state[bd + row + B_COUNT] += 1
    state[_o(state, F_PG_FLAGS) + pfn] = PG_BUDDY
    state[_o(state, F_PG_ORDER) + pfn] = order


@jit(inline="always")
def _area_del(state, node, order, pfn):
    """Take the free block at ``pfn`` out of free area (node, order)."""
    bd = _o(state, F_BUDDY)
    nxt = _o(state, F_PG_NEXT)
    prv = _o(state, F_PG_PREV)
    row = (node * NR_ORDERS + order) * B_NCOLS
    n, p = state[nxt + pfn], state[prv + pfn]
    if p != NIL:
        state[nxt + p] = n
    else:
        state[bd + row + B_HEAD] = n
    if n != NIL:
        state[prv + n] = p
    state[nxt + pfn] = NIL
    state[prv + pfn] = NIL
    state[bd + row + B_COUNT] -= 1
    state[_o(state, F_PG_FLAGS) + pfn] = 0
    state[_o(state, F_PG_ORDER) + pfn] = NIL


@jit(nrt=True)
def _init_buddy(state, reserved):
    """Free every page frame of every node into the buddy lists, except ``reserved`` frames
    at the start of node 0 (frame 0 makes address 0 NULL)."""
    ppn = _g(state, G_PAGES_PER_NODE)
    flags = _o(state, F_PG_FLAGS)
    for pfn in range(reserved):
        state[flags + pfn] = PG_RESERVED
    for node in range(_g(state, G_NNODES)):
        pfn = node * ppn + (reserved if node == 0 else 0)
        end = (node + 1) * ppn
        blocks = []
        while pfn < end:
            order = NR_ORDERS - 1
            while order > 0 and ((pfn & ((1 << order) - 1)) or pfn + (1 << order) > end):
                order -= 1
            blocks.append((pfn, order))
            pfn += 1 << order
        for i in range(len(blocks) - 1, -1, -1):   # lowest address ends up at the head
            _area_push(state, node, blocks[i][1], blocks[i][0])


@jit(inline="always")
def _mark_allocated(state, pfn, order):
    """Make the block at ``pfn`` an allocated compound block: head and tail pages."""
    flags = _o(state, F_PG_FLAGS)
    head = _o(state, F_PG_HEAD)
    state[_o(state, F_PG_ORDER) + pfn] = order
    state[flags + pfn] = PG_HEAD
    state[head + pfn] = pfn
    for t in range(pfn + 1, pfn + (1 << order)):
        state[flags + t] = PG_TAIL
        state[head + t] = pfn


@jit(inline="always")
def _rmqueue_smallest(state, node, order):
    """``__rmqueue_smallest``: take a free block of ``order`` out of the buddy lists of
    ``node`` (splitting a larger one), unmarked; NIL if none."""
    bd = _o(state, F_BUDDY)
    for cur in range(order, NR_ORDERS):
        pfn = state[bd + (node * NR_ORDERS + cur) * B_NCOLS + B_HEAD]
        if pfn == NIL:
            continue
        _area_del(state, node, cur, pfn)
        while cur > order:                      # expand(): give back the upper halves
            cur -= 1
            _area_push(state, node, cur, pfn + (1 << cur))
        return pfn
    return NIL


# ---- per-CPU page lists (struct per_cpu_pages) ------------------------------------------------
# A pcp list holds free blocks of one order for one CPU and one node, most recently freed at
# the head. Its blocks are free for the system but not in the buddy lists (so not counted by
# buddyinfo, as in the kernel): the head page is marked PG_PCP with its order and linked
# through pg_next/pg_prev. Allocation pops the head and, when the list is empty, first moves
# ``batch`` blocks (fewer for higher orders) from the buddy lists to its tail; a free pushes
# the head and, once the CPU holds ``high`` pages, gives the oldest back to the buddy lists.
@jit(inline="always")
def _pcp_row(state, cpu, node):
    """Index of the first word of the pcp row of (``cpu``, ``node``)."""
    return _o(state, F_PCP) + (cpu * _g(state, G_NNODES) + node) * P_NCOLS


@jit(inline="always")
def _pcp_add(state, row, order, pfn, at_head):
    """Link the free block at ``pfn`` into pcp list ``order`` of ``row`` (head or tail)."""
    nxt = _o(state, F_PG_NEXT)
    prv = _o(state, F_PG_PREV)
    h = row + P_LISTS + 2 * order
    if at_head:
        first = state[h]
        state[nxt + pfn] = first
        state[prv + pfn] = NIL
        if first != NIL:
            state[prv + first] = pfn
        else:
            state[h + 1] = pfn
        state[h] = pfn
    else:
        last = state[h + 1]
        state[prv + pfn] = last
        state[nxt + pfn] = NIL
        if last != NIL:
            state[nxt + last] = pfn
        else:
            state[h] = pfn
        state[h + 1] = pfn
    state[_o(state, F_PG_FLAGS) + pfn] = PG_PCP
    state[_o(state, F_PG_ORDER) + pfn] = order
    state[row + P_COUNT] += 1 << order


@jit(inline="always")
def _pcp_del(state, row, order, pfn):
    """Unlink the block at ``pfn`` from pcp list ``order`` of ``row`` (marks cleared)."""
    nxt = _o(state, F_PG_NEXT)
    prv = _o(state, F_PG_PREV)
    h = row + P_LISTS + 2 * order
    n, p = state[nxt + pfn], state[prv + pfn]
    if p != NIL:
        state[nxt + p] = n
    else:
        state[h] = n
    if n != NIL:
        state[prv + n] = p
    else:
        state[h + 1] = p
    state[nxt + pfn] = NIL
    state[prv + pfn] = NIL
    state[_o(state, F_PG_FLAGS) + pfn] = 0
    state[_o(state, F_PG_ORDER) + pfn] = NIL
    state[row + P_COUNT] -= 1 << order


@jit(inline="always")
def _rmqueue_pcplist(state, cpu, node, order):
    """``rmqueue_pcplist``: a block of ``order`` (at most PCP_MAX_ORDER) from the pcp list
    of (``cpu``, ``node``), refilled from the buddy lists (``rmqueue_bulk``) with ``batch``
    blocks (``batch >> order``, at least 2, for higher orders) when empty; NIL if none."""
    row = _pcp_row(state, cpu, node)
    state[row + P_FREE_FACTOR] >>= 1            # allocations shrink the next bulk free
    h = row + P_LISTS + 2 * order
    if state[h] == NIL:
        batch = state[row + P_BATCH]
        if batch > 1:
            batch = max(batch >> order, 2)
        for _ in range(batch):
            pfn = _rmqueue_smallest(state, node, order)
            if pfn == NIL:
                break
            _pcp_add(state, row, order, pfn, False)
        if state[h] == NIL:
            return NIL
    pfn = state[h]
    _pcp_del(state, row, order, pfn)
    return pfn


@jit(inline="always")
def _rmqueue(state, cpu, node, order):
    """``rmqueue``: a block of ``order`` from ``node``, through the CPU's pcp list for
    orders up to PCP_MAX_ORDER, marked allocated; NIL if none."""
    if order <= PCP_MAX_ORDER:
        pfn = _rmqueue_pcplist(state, cpu, node, order)
    else:
        pfn = _rmqueue_smallest(state, node, order)
    if pfn != NIL:
        _mark_allocated(state, pfn, order)
    return pfn


@jit
def _alloc_pages(state, cpu, node, order, thisnode):
    """Allocate ``2**order`` pages on ``cpu``, preferring ``node``; fall back to the other
    nodes in distance order unless ``thisnode``. When nothing is free, drain every CPU's pcp
    lists and try once more (``__alloc_pages_direct_reclaim``). Head page frame or NIL."""
    nnodes = _g(state, G_NNODES)
    for attempt in range(2):
        pfn = _rmqueue(state, cpu, node, order)
        if pfn != NIL:
            return pfn
        if not thisnode:
            for i in range(1, nnodes):
                pfn = _rmqueue(state, cpu, (node + i) % nnodes, order)
                if pfn != NIL:
                    return pfn
        if attempt == 0 and _drain_all_pages(state) == 0:
            break
    return NIL


@jit
def _free_one_page(state, pfn, order):
    """``__free_one_page``: put the block at ``pfn`` into the buddy lists, merging it with
    free buddies."""
    flags = _o(state, F_PG_FLAGS)
    pord = _o(state, F_PG_ORDER)
    ppn = _g(state, G_PAGES_PER_NODE)
    node = pfn // ppn
    base = node * ppn
    while order < NR_ORDERS - 1:
        buddy = base + ((pfn - base) ^ (1 << order))
        if buddy >= base + ppn or state[flags + buddy] != PG_BUDDY or state[pord + buddy] != order:
            break
        _area_del(state, node, order, buddy)
        pfn = min(pfn, buddy)
        order += 1
    _area_push(state, node, order, pfn)


@jit
def _free_pcppages_bulk(state, row, count, order):
    """``free_pcppages_bulk``: give at least ``count`` pages from the tails (the oldest
    blocks) of the pcp lists of ``row`` back to the buddy lists, taking the lists round
    robin from the one after ``order``. Returns the pages freed."""
    freed = 0
    cur = order
    while freed < count and state[row + P_COUNT] > 0:
        cur = (cur + 1) % (PCP_MAX_ORDER + 1)
        t = state[row + P_LISTS + 2 * cur + 1]
        while t != NIL and freed < count:
            prev = state[_o(state, F_PG_PREV) + t]
            _pcp_del(state, row, cur, t)
            _free_one_page(state, t, cur)
            freed += 1 << cur
            t = prev
    return freed


@jit
def _drain_all_pages(state):
    """``drain_all_pages``: give every block on every pcp list back to the buddy lists.
    Returns the pages drained."""
    drained = 0
    for cpu in range(_g(state, G_NCPUS)):
        for node in range(_g(state, G_NNODES)):
            row = _pcp_row(state, cpu, node)
            n = state[row + P_COUNT]
            if n:
                drained += _free_pcppages_bulk(state, row, n, 0)
    return drained


@jit
def _free_pages(state, cpu, pfn, order):
    """Return the allocated block at ``pfn`` of ``order`` from ``cpu``: to the CPU's pcp list
    of the block's node for orders up to PCP_MAX_ORDER (``free_unref_page``; past ``high``
    pages the list gives ``nr_pcp_free`` back), else straight to the buddy lists."""
    flags = _o(state, F_PG_FLAGS)
    head = _o(state, F_PG_HEAD)
    for t in range(pfn, pfn + (1 << order)):
        state[flags + t] = 0
        state[head + t] = NIL
    state[_o(state, F_PG_ORDER) + pfn] = NIL
    if order > PCP_MAX_ORDER:
        _free_one_page(state, pfn, order)
        return
    row = _pcp_row(state, cpu, pfn // _g(state, G_PAGES_PER_NODE))
    _pcp_add(state, row, order, pfn, True)
    high = state[row + P_HIGH]
    if state[row + P_COUNT] >= high:
        batch = state[row + P_BATCH]            # nr_pcp_free: batch << free_factor, kept in
        if high < batch:                        # [batch, high - batch]; it doubles while
            n = 1                               # frees follow frees
        else:
            n = batch << state[row + P_FREE_FACTOR]
            if n < high - batch:
                state[row + P_FREE_FACTOR] += 1
            n = min(max(n, batch), high - batch)
        _free_pcppages_bulk(state, row, n, order)


@jit
def _page_block(state, pfn):
    """(head frame, order, head flags) of the allocated block holding ``pfn``; NIL head if
    the frame is free, reserved or out of range."""
    if pfn < 0 or pfn >= _g(state, G_NPAGES):
        return NIL, NIL, 0
    flags = _o(state, F_PG_FLAGS)
    f = state[flags + pfn]
    if f & PG_HEAD:
        return pfn, state[_o(state, F_PG_ORDER) + pfn], f
    if f & PG_TAIL:
        h = state[_o(state, F_PG_HEAD) + pfn]
        return h, state[_o(state, F_PG_ORDER) + h], state[flags + h]
    return NIL, NIL, f


@jit
def _alloc_block(state, cpu, node, order, thisnode, kind):
    """Allocate a block for a caller outside SLUB (raw pages, or ``kind`` PG_LARGE for a
    large kmalloc); its address, or 0 when no block of ``order`` is free."""
    pfn = _alloc_pages(state, cpu, node, order, thisnode)
    if pfn == NIL:
        return 0
    state[_o(state, F_PG_FLAGS) + pfn] |= kind
    return pfn << 12


@jit
def _free_block_checked(state, cpu, addr, order, kind):
    """Free a block from :func:`_alloc_block` after checking that ``addr`` starts an
    allocated block of ``kind`` and ``order`` (order -1: any). 0, or -1 (not such a block)
    / -2 (wrong order) with nothing changed."""
    if addr <= 0 or addr & 4095 or addr >= _g(state, G_NPAGES) << 12:
        return -1
    pfn = addr >> 12
    f = state[_o(state, F_PG_FLAGS) + pfn]
    if not f & PG_HEAD or (f & ~PG_HEAD) != kind:
        return -1
    real = state[_o(state, F_PG_ORDER) + pfn]
    if order >= 0 and real != order:
        return -2
    _free_pages(state, cpu, pfn, real)
    return 0
