"""The page allocator: a binary buddy allocator per NUMA node, with per-CPU page lists in front.

Orders 0 to 10, over the page frames of the arena, with per-CPU page lists (pcp) in front for
orders 0 to 3, as ``mm/page_alloc.c`` hands out pages to SLUB and kmalloc (pcp rules of 5.14 to
6.6)."""
from __future__ import annotations

from numba import types

from .layout import (AT_COUNT, AT_FRAME, AT_NODE, AT_SHIFT, B_COUNT, B_HEAD, B_NCOLS, G_ERR1,
                     G_NRCU_SLABS, G_RCU_SLABS, G_RCU_SLABS_TAIL, NIL, NR_ORDERS, P_BATCH,
                     P_COUNT, P_FREE_FACTOR, P_HIGH, P_LISTS, P_NCOLS, PCP_MAX_ORDER, PG_BUDDY,
                     PG_HEAD, PG_PCP, PG_RCU, PG_RESERVED, PG_TAIL)
from .native import address, jit, unit

#: libc's ``madvise(addr, length, advice)``, resolved by name when the unit is linked (so
#: that the unit stays cacheable; x86-64 and AArch64 pass a pointer as a 64-bit integer).
_madvise = types.ExternalFunction("madvise", types.int32(types.int64, types.int64,
                                                         types.int32))


# ---- buddy free areas ------------------------------------------------------------------------
@jit
def _area_push(st, node, order, pfn):
    """Put the free block at ``pfn`` at the head of free area (node, order)."""
    bd = st.buddy
    nxt = st.pg_next
    prv = st.pg_prev
    row = (node * NR_ORDERS + order) * B_NCOLS
    head = bd[row + B_HEAD]
    nxt[pfn] = head
    prv[pfn] = NIL
    if head != NIL:
        prv[head] = pfn
    bd[row + B_HEAD] = pfn
    bd[row + B_COUNT] += 1
    st.pg_flags[pfn] = PG_BUDDY
    st.pg_order[pfn] = order


@jit
def _area_del(st, node, order, pfn):
    """Take the free block at ``pfn`` out of free area (node, order)."""
    bd = st.buddy
    nxt = st.pg_next
    prv = st.pg_prev
    row = (node * NR_ORDERS + order) * B_NCOLS
    n = nxt[pfn]
    p = prv[pfn]
    if p != NIL:
        nxt[p] = n
    else:
        bd[row + B_HEAD] = n
    if n != NIL:
        prv[n] = p
    nxt[pfn] = NIL
    prv[pfn] = NIL
    bd[row + B_COUNT] -= 1
    st.pg_flags[pfn] = 0
    st.pg_order[pfn] = NIL


@unit
def init_buddy(st, reserved):
    """Free every page frame of every node into the buddy lists but ``reserved`` ones. Returns 0.

    The ``reserved`` frames are at the start of node 0 (frame 0 makes address 0 NULL); the lowest
    block of each order ends up at the head of its list."""
    ppn = st.pages_per_node
    flags = st.pg_flags
    blocks = st.scratch                         # the node's blocks, in address order
    for pfn in range(reserved):
        flags[pfn] = PG_RESERVED
    for node in range(st.nnodes):
        pfn = node * ppn + (reserved if node == 0 else 0)
        end = (node + 1) * ppn
        n = 0
        while pfn < end:
            order = NR_ORDERS - 1
            while order > 0 and ((pfn & ((1 << order) - 1)) or pfn + (1 << order) > end):
                order -= 1
            blocks[n] = pfn | (order << 48)
            n += 1
            pfn += 1 << order
        for i in range(n - 1, -1, -1):
            _area_push(st, node, blocks[i] >> 48, blocks[i] & ((1 << 48) - 1))
    return 0


@jit
def _mark_allocated(st, pfn, order):
    """Make the block at ``pfn`` an allocated compound block: head and tail pages."""
    flags = st.pg_flags
    head = st.pg_head
    st.pg_order[pfn] = order
    flags[pfn] = PG_HEAD
    head[pfn] = pfn
    for t in range(pfn + 1, pfn + (1 << order)):
        flags[t] = PG_TAIL
        head[t] = pfn


@jit
def _rmqueue_smallest(st, node, order):
    """``__rmqueue_smallest``: a free block of ``order`` from ``node``'s buddy lists, or NIL.

    A larger block is split; the block is unmarked."""
    bd = st.buddy
    for cur in range(order, NR_ORDERS):
        pfn = bd[(node * NR_ORDERS + cur) * B_NCOLS + B_HEAD]
        if pfn == NIL:
            continue
        _area_del(st, node, cur, pfn)
        while cur > order:                      # expand(): give back the upper halves
            cur -= 1
            _area_push(st, node, cur, pfn + (1 << cur))
        return pfn
    return NIL


# ---- per-CPU page lists (struct per_cpu_pages) ------------------------------------------------
# A pcp list holds free blocks of one order for one CPU and one node, most recently freed at
# the head. Its blocks are free for the system but not in the buddy lists (so not counted by
# buddyinfo, as in the kernel): the head page is marked PG_PCP with its order and linked
# through pg_next/pg_prev. Allocation pops the head and, when the list is empty, first moves
# ``batch`` blocks (fewer for higher orders) from the buddy lists to its tail; a free pushes
# the head and, once the CPU holds ``high`` pages, gives the oldest back to the buddy lists.
@jit
def _pcp_row(st, cpu, node):
    """Index of the first word of the pcp row of (``cpu``, ``node``) in field ``pcp``."""
    return (cpu * st.nnodes + node) * P_NCOLS


@jit
def _pcp_add(st, row, order, pfn, at_head):
    """Link the free block at ``pfn`` into pcp list ``order`` of ``row`` (head or tail)."""
    pcp = st.pcp
    nxt = st.pg_next
    prv = st.pg_prev
    h = row + P_LISTS + 2 * order
    if at_head:
        first = pcp[h]
        nxt[pfn] = first
        prv[pfn] = NIL
        if first != NIL:
            prv[first] = pfn
        else:
            pcp[h + 1] = pfn
        pcp[h] = pfn
    else:
        last = pcp[h + 1]
        prv[pfn] = last
        nxt[pfn] = NIL
        if last != NIL:
            nxt[last] = pfn
        else:
            pcp[h] = pfn
        pcp[h + 1] = pfn
    st.pg_flags[pfn] = PG_PCP
    st.pg_order[pfn] = order
    pcp[row + P_COUNT] += 1 << order


@jit(inline=True)
def _unlink(nxt, prv, heads, h, pfn):
    """Unlink frame ``pfn`` from the list whose head and tail are ``heads[h]``, ``heads[h + 1]``.

    ``nxt``/``prv``: the frames' links (``pg_next``, ``pg_prev``), ``pfn``'s set to NIL. Returns
    its (next, previous) before."""
    n = nxt[pfn]
    p = prv[pfn]
    if p != NIL:
        nxt[p] = n
    else:
        heads[h] = n
    if n != NIL:
        prv[n] = p
    else:
        heads[h + 1] = p
    nxt[pfn] = NIL
    prv[pfn] = NIL
    return n, p


@jit
def _pcp_del(st, row, order, pfn):
    """Unlink the block at ``pfn`` from pcp list ``order`` of ``row`` (marks cleared)."""
    pcp = st.pcp
    _unlink(st.pg_next, st.pg_prev, pcp, row + P_LISTS + 2 * order, pfn)
    st.pg_flags[pfn] = 0
    st.pg_order[pfn] = NIL
    pcp[row + P_COUNT] -= 1 << order


@jit
def _rmqueue_pcplist(st, cpu, node, order):
    """``rmqueue_pcplist``: a block of ``order`` from the pcp list of (``cpu``, ``node``), or NIL.

    ``order`` is at most PCP_MAX_ORDER; an empty list is refilled from the buddy lists
    (``rmqueue_bulk``) with ``batch`` blocks (``batch >> order``, at least 2, for higher
    orders)."""
    pcp = st.pcp
    row = _pcp_row(st, cpu, node)
    pcp[row + P_FREE_FACTOR] >>= 1              # allocations shrink the next bulk free
    h = row + P_LISTS + 2 * order
    if pcp[h] == NIL:
        batch = pcp[row + P_BATCH]
        if batch > 1:
            batch = max(batch >> order, 2)
        for _ in range(batch):
            pfn = _rmqueue_smallest(st, node, order)
            if pfn == NIL:
                break
            _pcp_add(st, row, order, pfn, False)
        if pcp[h] == NIL:
            return NIL
    pfn = pcp[h]
    _pcp_del(st, row, order, pfn)
    return pfn


@jit
def _rmqueue(st, cpu, node, order):
    """``rmqueue``: a block of ``order`` from ``node``, marked allocated; NIL if none.

    Through the CPU's pcp list for orders up to PCP_MAX_ORDER."""
    if order <= PCP_MAX_ORDER:
        pfn = _rmqueue_pcplist(st, cpu, node, order)
    else:
        pfn = _rmqueue_smallest(st, node, order)
    if pfn != NIL:
        _mark_allocated(st, pfn, order)
    return pfn


# ---- SLAB_TYPESAFE_BY_RCU slabs waiting for their grace period ---------------------------------
@jit
def _rcu_slab_wait(st, cpu, slab):
    """``call_rcu(&slab->rcu_head, rcu_free_slab)``: a discarded slab's pages wait.

    The pages, no longer a slab, wait for the grace period at the tail of the ``G_RCU_SLABS`` list,
    marked PG_HEAD | PG_RCU, with ``cpu`` in ``sl_freelist``. 0."""
    g = st.g
    st.pg_flags[slab] = PG_HEAD | PG_RCU
    st.sl_freelist[slab] = cpu
    st.pg_next[slab] = NIL
    if g[G_RCU_SLABS_TAIL]:
        st.pg_next[g[G_RCU_SLABS_TAIL]] = slab
    else:
        g[G_RCU_SLABS] = slab
    g[G_RCU_SLABS_TAIL] = slab
    g[G_NRCU_SLABS] += 1
    return 0


@jit
def _rcu_free_slabs(st):
    """The end of a grace period for the slabs of ``G_RCU_SLABS``; the slabs freed.

    ``rcu_free_slab`` of each, oldest first, its pages to the pcp lists (or buddy) of the CPU that
    discarded it."""
    g = st.g
    n = 0
    slab = g[G_RCU_SLABS]
    g[G_RCU_SLABS] = 0
    g[G_RCU_SLABS_TAIL] = 0
    while slab > 0 and n < g[G_NRCU_SLABS]:
        nxt = st.pg_next[slab]
        cpu = st.sl_freelist[slab]
        st.sl_freelist[slab] = 0
        st.pg_next[slab] = NIL
        st.pg_flags[slab] = PG_HEAD
        _free_pages_pcp(st, cpu, slab, st.pg_order[slab])
        n += 1
        slab = nxt
    g[G_NRCU_SLABS] = 0
    return n


@unit
def rcu_free_slabs(st):
    """:func:`_rcu_free_slabs` as a unit (``rcusheaves.rcu_run_callbacks``).

    The slabs freed."""
    return _rcu_free_slabs(st)


@unit
def alloc_pages(st, cpu, node, order, thisnode):
    """Allocate ``2**order`` pages on ``cpu``, preferring ``node``.

    Fall back to the other nodes in distance order unless ``thisnode``. When nothing is free, drain
    every CPU's pcp lists and try once more (``__alloc_pages_direct_reclaim``); the reclaim also
    waits for the grace period of the SLAB_TYPESAFE_BY_RCU slabs waiting for one, whose pages then
    come back (in the kernel grace periods end on their own; here only ``synchronize_rcu`` ends
    one, so an allocation that would fail ends it for these slabs, whose callbacks may run before
    those of the sheaves waiting too). Head page frame or NIL."""
    nnodes = st.nnodes
    for attempt in range(2):
        pfn = _rmqueue(st, cpu, node, order)
        if pfn != NIL:
            return pfn
        if not thisnode:
            for i in range(1, nnodes):
                pfn = _rmqueue(st, cpu, (node + i) % nnodes, order)
                if pfn != NIL:
                    return pfn
        if attempt == 0:        # the waiting slabs' pages first, so that the drain merges
            got = _rcu_free_slabs(st) if st.g[G_NRCU_SLABS] else 0      # them in the buddy
            got += drain_all_pages(st)
            if got == 0:
                break
    return NIL


@jit
def _free_one_page(st, pfn, order):
    """``__free_one_page``: put the block at ``pfn`` into the buddy lists.

    It is merged with free buddies."""
    flags = st.pg_flags
    pord = st.pg_order
    ppn = st.pages_per_node
    node = pfn // ppn
    base = node * ppn
    while order < NR_ORDERS - 1:
        buddy = base + ((pfn - base) ^ (1 << order))
        if buddy >= base + ppn or flags[buddy] != PG_BUDDY or pord[buddy] != order:
            break
        _area_del(st, node, order, buddy)
        pfn = min(pfn, buddy)
        order += 1
    _area_push(st, node, order, pfn)


@jit
def _free_pcppages_bulk(st, row, count, order):
    """``free_pcppages_bulk``: give pages from the pcp lists of ``row`` back to the buddy lists.

    At least ``count`` pages, from the tails (the oldest blocks), taking the lists round robin from
    the one after ``order``. Returns the pages freed."""
    pcp = st.pcp
    prv = st.pg_prev
    freed = 0
    cur = order
    while freed < count and pcp[row + P_COUNT] > 0:
        cur = (cur + 1) % (PCP_MAX_ORDER + 1)
        t = pcp[row + P_LISTS + 2 * cur + 1]
        while t != NIL and freed < count:
            prev = prv[t]
            _pcp_del(st, row, cur, t)
            _free_one_page(st, t, cur)
            freed += 1 << cur
            t = prev
    return freed


@unit
def drain_all_pages(st):
    """``drain_all_pages``: give every block on every pcp list back to the buddy lists.

    Returns the pages drained."""
    pcp = st.pcp
    drained = 0
    for cpu in range(st.ncpus):
        for node in range(st.nnodes):
            row = _pcp_row(st, cpu, node)
            n = pcp[row + P_COUNT]
            if n:
                drained += _free_pcppages_bulk(st, row, n, 0)
    return drained


@unit
def free_pages(st, cpu, pfn, order):
    """Return the allocated block at ``pfn`` of ``order`` from ``cpu``. 0.

    To the CPU's pcp list of the block's node for orders up to PCP_MAX_ORDER (``free_unref_page``;
    past ``high`` pages the list gives ``nr_pcp_free`` back), else straight to the buddy lists."""
    flags = st.pg_flags
    head = st.pg_head
    for t in range(pfn, pfn + (1 << order)):
        flags[t] = 0
        head[t] = NIL
    st.pg_order[pfn] = NIL
    if order > PCP_MAX_ORDER:
        _free_one_page(st, pfn, order)
        return 0
    pcp = st.pcp
    row = _pcp_row(st, cpu, pfn // st.pages_per_node)
    _pcp_add(st, row, order, pfn, True)
    high = pcp[row + P_HIGH]
    if pcp[row + P_COUNT] >= high:
        batch = pcp[row + P_BATCH]              # nr_pcp_free: batch << free_factor, kept in
        if high < batch:                        # [batch, high - batch]; it doubles while
            n = 1                               # frees follow frees
        else:
            n = batch << pcp[row + P_FREE_FACTOR]
            if n < high - batch:
                pcp[row + P_FREE_FACTOR] += 1
            n = min(max(n, batch), high - batch)
        _free_pcppages_bulk(st, row, n, order)
    return 0


# ---- the pcp hits, inline in the slab layer's bulk units --------------------------------------
@jit(inline=True)
def _pcp_take(st, cpu, node, order):
    """:func:`alloc_pages`' common case, inline.

    The block at the head of the CPU's pcp list of ``order`` for ``node`` (``rmqueue_pcplist`` with
    no refill), marked allocated, leaving the state as the unit would; NIL (nothing changed) if the
    list is empty or the order has no pcp list, so that the caller calls the unit."""
    if order <= PCP_MAX_ORDER:
        pcp = st.pcp
        row = _pcp_row(st, cpu, node)
        pfn = pcp[row + P_LISTS + 2 * order]
        if pfn != NIL:
            pcp[row + P_FREE_FACTOR] >>= 1
            _pcp_del(st, row, order, pfn)
            _mark_allocated(st, pfn, order)
            return pfn
    return NIL


@jit(inline=True)
def _free_pages_pcp(st, cpu, pfn, order):
    """:func:`free_pages` with its common case inline.

    A block of a pcp order goes to the head of the CPU's list and leaves the CPU below ``high``
    pages (no bulk free); anything else is the unit. The same state either way. 0."""
    if order <= PCP_MAX_ORDER:
        pcp = st.pcp
        row = _pcp_row(st, cpu, 0 if st.nnodes == 1 else pfn // st.pages_per_node)
        if pcp[row + P_COUNT] + (1 << order) < pcp[row + P_HIGH]:
            flags = st.pg_flags
            head = st.pg_head
            for t in range(pfn, pfn + (1 << order)):
                flags[t] = 0
                head[t] = NIL
            _pcp_add(st, row, order, pfn, True)
            return 0
    return free_pages(st, cpu, pfn, order)


@jit
def _page_block(st, pfn):
    """(head frame, order, head flags) of the allocated block holding ``pfn``.

    NIL head if the frame is free, reserved or out of range."""
    if pfn < 0 or pfn >= st.npages:
        return NIL, NIL, 0
    flags = st.pg_flags
    f = flags[pfn]
    if f & PG_HEAD:
        return pfn, st.pg_order[pfn], f
    if f & PG_TAIL:
        h = st.pg_head[pfn]
        if 0 <= h < st.npages:          # (a head set wrong is not followed: NIL)
            return h, st.pg_order[h], flags[h]
    return NIL, NIL, f


@unit
def alloc_block(st, cpu, node, order, thisnode, kind):
    """A block for a caller outside SLUB: its address, or 0 if no block of ``order`` is free.

    Raw pages, or ``kind`` PG_LARGE for a large kmalloc."""
    pfn = alloc_pages(st, cpu, node, order, thisnode)
    if pfn == NIL:
        return 0
    st.pg_flags[pfn] |= kind
    return pfn << 12


@unit
def free_block_checked(st, cpu, addr, order, kind):
    """Free a block from :func:`alloc_block` after checking it; 0, -1 or -2.

    ``addr`` must start an allocated block of ``kind`` and ``order`` (order -1: any). 0, or -1 (not
    such a block) / -2 (wrong order) with nothing changed."""
    if addr <= 0 or addr & 4095 or addr >= st.npages << 12:
        return -1
    pfn = addr >> 12
    f = st.pg_flags[pfn]
    if not f & PG_HEAD or (f & ~PG_HEAD) != kind:
        return -1
    real = st.pg_order[pfn]
    if order >= 0 and real != order:
        return -2
    free_pages(st, cpu, pfn, real)
    return 0


@unit
def release_free_blocks(st, min_order, advice):
    """``madvise(advice)`` the free buddy blocks of order ``min_order`` and above; bytes advised.

    Not those on pcp lists; adjacent blocks as one range; -1: madvise failed. One engine call, so
    no thread can be handed a block between the scan and its advice (a Python loop of madvise calls
    zeroed a block another thread had just taken)."""
    flags, orders = st.pg_flags, st.pg_order
    base = address(st.mem)
    total = 0
    start = -1
    end = -1
    pfn = 0
    n = st.npages
    while pfn <= n:
        block = pfn < n and (flags[pfn] & (PG_BUDDY | PG_PCP)) == PG_BUDDY and \
            orders[pfn] >= min_order
        if block and pfn == end:                 # adjacent: one range
            end = pfn + (1 << orders[pfn])
            pfn = end
            continue
        if end > start >= 0:                     # the range so far, advised
            if _madvise(base + (start << 12), (end - start) << 12, advice) != 0:
                return -1
            total += (end - start) << 12
            start = end = -1
        if block:
            start = pfn
            end = pfn + (1 << orders[pfn])
            pfn = end
        else:
            pfn += 1
    return total


# ---- validate's part: the page allocator's invariants --------------------------------------
@jit
def _bad(st, what, kind, where):
    """Record where ``what`` (an index of ``checks.CORRUPTION``) broke; ``what`` with the kind.

    The place goes in G_ERR1, of kind ``kind`` (``AT_*``); the kind is returned above
    ``AT_SHIFT``."""
    st.g[G_ERR1] = where
    return what | kind << AT_SHIFT


@jit
def _validate_pages(st):
    """``validate``'s check of the page allocator's lists and marks: 0 or what broke.

    It checks the compound heads, the SLAB_TYPESAFE_BY_RCU slabs waiting for their grace period,
    the buddy free lists and the per-CPU page lists: links, marks, counts, that no free block
    overlaps an allocated one and that every frame marked as a free block's head is on a list; each
    link range-checked before it is followed. 0, or the index of what broke in
    ``checks.CORRUPTION`` (12 a page list, 19 a compound head, 23 the slabs waiting for their grace
    period) with the kind of place above ``AT_SHIFT``, where in G_ERR1. Uses ``scratch`` (one word
    per frame: 1 on a free list)."""
    flags = st.pg_flags
    pord = st.pg_order
    nxt = st.pg_next
    prv = st.pg_prev
    bd = st.buddy
    pcp = st.pcp
    ppn = st.pages_per_node
    heads = st.pg_head
    listed = st.scratch                         # 1: the head of a block on a free list
    for pfn in range(st.npages):
        listed[pfn] = 0
    pfn = 0
    waiting = 0
    while pfn < st.npages:                      # compound heads: every allocated block's
        if flags[pfn] & PG_HEAD:                # frames name its head, no other frame one
            waiting += flags[pfn] == PG_HEAD | PG_RCU
            order = pord[pfn]
            if heads[pfn] != pfn or not 0 <= order < NR_ORDERS or pfn + (1 << order) > st.npages:
                return _bad(st, 19, AT_FRAME, pfn)
            for t in range(pfn + 1, pfn + (1 << order)):
                if heads[t] != pfn or not flags[t] & PG_TAIL:
                    return _bad(st, 19, AT_FRAME, t)
            pfn += 1 << order
        else:
            if heads[pfn] != NIL or flags[pfn] & PG_TAIL:
                return _bad(st, 19, AT_FRAME, pfn)
            pfn += 1
    g = st.g                                    # the slabs waiting for their grace period
    pfn = g[G_RCU_SLABS] if g[G_RCU_SLABS] else NIL
    last = 0
    k = 0
    while pfn != NIL:
        if not 0 < pfn < st.npages or k >= waiting or flags[pfn] != PG_HEAD | PG_RCU \
                or not 0 <= st.sl_freelist[pfn] < st.ncpus:
            return _bad(st, 23, AT_FRAME, pfn)
        k += 1
        last = pfn
        pfn = nxt[pfn]
    if k != waiting or k != g[G_NRCU_SLABS] or last != g[G_RCU_SLABS_TAIL]:
        return _bad(st, 23, AT_COUNT, k)
    for node in range(st.nnodes):
        for order in range(NR_ORDERS):
            row = (node * NR_ORDERS + order) * B_NCOLS
            pfn = bd[row + B_HEAD]
            prev = NIL
            k = 0
            while pfn != NIL:
                if not 0 <= pfn < st.npages or k >= st.npages or flags[pfn] != PG_BUDDY \
                        or pord[pfn] != order or prv[pfn] != prev or pfn // ppn != node \
                        or (pfn - node * ppn) & ((1 << order) - 1) \
                        or pfn + (1 << order) > (node + 1) * ppn:
                    return _bad(st, 12, AT_FRAME, pfn)
                for t in range(pfn + 1, pfn + (1 << order)):
                    if flags[t] != 0:
                        return _bad(st, 12, AT_FRAME, t)
                listed[pfn] = 1
                k += 1
                prev = pfn
                pfn = nxt[pfn]
            if k != bd[row + B_COUNT]:
                return _bad(st, 12, AT_NODE, node)
    for cpu in range(st.ncpus):                 # the per-CPU page lists
        for node in range(st.nnodes):
            row = _pcp_row(st, cpu, node)
            pages = 0
            for order in range(PCP_MAX_ORDER + 1):
                pfn = pcp[row + P_LISTS + 2 * order]
                prev = NIL
                while pfn != NIL:
                    if not 0 <= pfn < st.npages or pages >= st.npages \
                            or flags[pfn] != PG_PCP or pord[pfn] != order or prv[pfn] != prev \
                            or pfn // ppn != node or (pfn - node * ppn) & ((1 << order) - 1) \
                            or pfn + (1 << order) > (node + 1) * ppn:
                        return _bad(st, 12, AT_FRAME, pfn)
                    for t in range(pfn + 1, pfn + (1 << order)):
                        if flags[t] != 0:
                            return _bad(st, 12, AT_FRAME, t)
                    listed[pfn] = 1
                    pages += 1 << order
                    prev = pfn
                    pfn = nxt[pfn]
                if prev != pcp[row + P_LISTS + 2 * order + 1]:
                    return _bad(st, 12, AT_NODE, node)
            if pages != pcp[row + P_COUNT]:
                return _bad(st, 12, AT_NODE, node)
    for pfn in range(st.npages):                # a free block on no list: its pages lost
        if flags[pfn] & (PG_BUDDY | PG_PCP) and not listed[pfn]:
            return _bad(st, 12, AT_FRAME, pfn)
    return 0
