"""The page allocator: a binary buddy allocator per NUMA node, orders 0 to 10, over the
page frames of the arena, as ``mm/page_alloc.c`` hands out pages to SLUB and kmalloc."""
from __future__ import annotations

from ._jit import jit
from ._layout import (B_COUNT, B_HEAD, B_NCOLS, F_BUDDY, F_PG_FLAGS, F_PG_HEAD, F_PG_NEXT,
                      F_PG_ORDER, F_PG_PREV, G_NNODES, G_NPAGES, G_PAGES_PER_NODE, NIL,
                      NR_ORDERS, PG_BUDDY, PG_HEAD, PG_RESERVED, PG_TAIL, _g, _o)


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
def _rmqueue(state, node, order):
    """Take a block of ``order`` from ``node`` (splitting larger ones); NIL if none."""
    bd = _o(state, F_BUDDY)
    for cur in range(order, NR_ORDERS):
        pfn = state[bd + (node * NR_ORDERS + cur) * B_NCOLS + B_HEAD]
        if pfn == NIL:
            continue
        _area_del(state, node, cur, pfn)
        while cur > order:                      # expand(): give back the upper halves
            cur -= 1
            _area_push(state, node, cur, pfn + (1 << cur))
        _mark_allocated(state, pfn, order)
        return pfn
    return NIL


@jit
def _alloc_pages(state, node, order, thisnode):
    """Allocate ``2**order`` pages, preferring ``node``; fall back to the other nodes in
    distance order unless ``thisnode``. Returns the head page frame or NIL."""
    pfn = _rmqueue(state, node, order)
    if pfn != NIL or thisnode:
        return pfn
    nnodes = _g(state, G_NNODES)
    for i in range(1, nnodes):
        pfn = _rmqueue(state, (node + i) % nnodes, order)
        if pfn != NIL:
            return pfn
    return NIL


@jit
def _free_pages(state, pfn, order):
    """Return the allocated block at ``pfn`` of ``order``, merging it with free buddies."""
    flags = _o(state, F_PG_FLAGS)
    pord = _o(state, F_PG_ORDER)
    head = _o(state, F_PG_HEAD)
    for t in range(pfn, pfn + (1 << order)):
        state[flags + t] = 0
        state[head + t] = NIL
    state[pord + pfn] = NIL
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
def _alloc_block(state, node, order, thisnode, kind):
    """Allocate a block for a caller outside SLUB (raw pages, or ``kind`` PG_LARGE for a
    large kmalloc); its address, or 0 when no block of ``order`` is free."""
    pfn = _alloc_pages(state, node, order, thisnode)
    if pfn == NIL:
        return 0
    state[_o(state, F_PG_FLAGS) + pfn] |= kind
    return pfn << 12


@jit
def _free_block_checked(state, addr, order, kind):
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
    _free_pages(state, pfn, real)
    return 0
