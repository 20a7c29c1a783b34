"""Node partial lists kept sorted by free objects, as helpers that ``slablists`` calls.

The seed article's proposal: fewest free first, so allocation finishes nearly-full slabs and
nearly-empty ones drain. ``slablists`` calls them wherever a slab joins, leaves or changes its
place on a node's list.

A cache with ``CA_PARTIAL_ORDER`` set keeps each node's one partial list ordered by bucket:
bucket ``f - 1`` for a slab with ``f <= 32`` free objects (exact, as the kernel's shrink
promotes ``SHRINK_PROMOTE_MAX``), then one bucket per power of two. ``pbuckets[cache, node,
b]`` is the first slab of bucket ``b``'s run (NIL: none) and ``sl_bucket[slab]`` the bucket a
listed slab is filed under, so that joining, leaving and moving cost O(1) plus a scan of at
most ``NR_PBUCKETS`` run heads. Members are marked ``PG_SORTED`` (the inlined free fast path
then leaves them to ``slab_free``, which re-files them).
"""
from __future__ import annotations

from .layout import (CA_PARTIAL_ORDER, N_NR_PARTIAL, N_PARTIAL_HEAD, N_PARTIAL_TAIL, NIL,
                     NR_PBUCKETS, PG_NODE_PARTIAL, PG_SORTED, _ca, _node_row, _slab_nid)
from .native import jit, unit

PROMOTE = 32        #: exact buckets (SHRINK_PROMOTE_MAX)


@jit(inline=True)
def _bucket(free):
    """The bucket of a slab with ``free`` free objects.

    ``free - 1`` up to 32, then 32 for 33..63, 33 for 64..127 and so on (0 for a full slab, which
    is never listed)."""
    if free <= PROMOTE:
        return free - 1 if free > 0 else 0
    b = PROMOTE
    f = free >> 6
    while f > 0 and b < NR_PBUCKETS - 1:
        b += 1
        f >>= 1
    return b


@jit(inline=True)
def _pb_row(st, cache, node):
    """Index of bucket 0 of (cache, node) in ``pbuckets``."""
    return (cache * st.nnodes + node) * NR_PBUCKETS


@jit
def _sorted_add(st, cache, slab):
    """Insert ``slab`` at the head of its bucket's run on its node's partial list.

    Before the first slab of the next non-empty bucket, or at the tail."""
    nd = st.node
    nxt = st.pg_next
    prv = st.pg_prev
    pb = st.pbuckets
    node = _slab_nid(st, slab)
    r = _node_row(st, cache, node)
    row = _pb_row(st, cache, node)
    b = _bucket(st.sl_objects[slab] - st.sl_inuse[slab])
    before = NIL
    for k in range(b, NR_PBUCKETS):
        if pb[row + k] != NIL:
            before = pb[row + k]
            break
    if before == NIL:                               # at the tail
        t = nd[r + N_PARTIAL_TAIL]
        prv[slab] = t
        nxt[slab] = NIL
        if t == NIL:
            nd[r + N_PARTIAL_HEAD] = slab
        else:
            nxt[t] = slab
        nd[r + N_PARTIAL_TAIL] = slab
    else:
        p = prv[before]
        prv[slab] = p
        nxt[slab] = before
        prv[before] = slab
        if p == NIL:
            nd[r + N_PARTIAL_HEAD] = slab
        else:
            nxt[p] = slab
    pb[row + b] = slab
    st.sl_bucket[slab] = b
    nd[r + N_NR_PARTIAL] += 1
    st.pg_flags[slab] |= PG_NODE_PARTIAL | PG_SORTED


@jit
def _sorted_unfile(st, cache, slab):
    """Take ``slab`` out of its bucket's run (the caller unlinks it from the list)."""
    row = _pb_row(st, cache, _slab_nid(st, slab))
    b = st.sl_bucket[slab]
    if st.pbuckets[row + b] == slab:
        n = st.pg_next[slab]
        st.pbuckets[row + b] = n if n != NIL and st.sl_bucket[n] == b else NIL
    st.sl_bucket[slab] = NIL
    st.pg_flags[slab] &= ~PG_SORTED


@jit(inline=True)
def _unlink_partial(st, cache, slab):
    """Take ``slab`` out of its node's partial list links and count.

    Its own links and marks are the caller's to set."""
    nd = st.node
    nxt = st.pg_next
    prv = st.pg_prev
    r = _node_row(st, cache, _slab_nid(st, slab))
    n = nxt[slab]
    p = prv[slab]
    if p != NIL:
        nxt[p] = n
    else:
        nd[r + N_PARTIAL_HEAD] = n
    if n != NIL:
        prv[n] = p
    else:
        nd[r + N_PARTIAL_TAIL] = p
    nd[r + N_NR_PARTIAL] -= 1


@jit
def _sorted_refile(st, cache, slab):
    """Move a listed ``slab`` whose free count changed to its new bucket's run.

    Nothing to do while it stays in the same bucket."""
    b = _bucket(st.sl_objects[slab] - st.sl_inuse[slab])
    if b == st.sl_bucket[slab]:
        return
    _sorted_unfile(st, cache, slab)
    _unlink_partial(st, cache, slab)
    _sorted_add(st, cache, slab)


# ---- the units slablists calls: compiled when a cache first keeps its lists sorted, so an
# allocator that never sorts compiles none of this (a first kmalloc stays as quick as before)
@unit
def sorted_add(st, cache, slab):
    """:func:`_sorted_add` as a unit. 0."""
    _sorted_add(st, cache, slab)
    return 0


@unit
def sorted_unfile(st, cache, slab):
    """:func:`_sorted_unfile` as a unit. 0."""
    _sorted_unfile(st, cache, slab)
    return 0


@unit
def sorted_refile(st, cache, slab):
    """:func:`_sorted_refile` as a unit. 0."""
    _sorted_refile(st, cache, slab)
    return 0


@jit
def _check_order(st, cache):
    """For a sorted cache: the slab of a node's partial list where the order is wrong, or NIL.

    The slab of each node's partial list where the order or a bucket head is wrong."""
    if not _ca(st, cache, CA_PARTIAL_ORDER):
        return NIL
    pb = st.pbuckets
    for node in range(st.nnodes):
        row = _pb_row(st, cache, node)
        slab = st.node[_node_row(st, cache, node) + N_PARTIAL_HEAD]
        last = -1
        seen = 0
        while slab != NIL:
            b = st.sl_bucket[slab]
            if b != _bucket(st.sl_objects[slab] - st.sl_inuse[slab]) or b < last \
                    or not st.pg_flags[slab] & PG_SORTED:
                return slab
            if b != last:
                if pb[row + b] != slab:
                    return slab
                seen += 1
            last = b
            slab = st.pg_next[slab]
        for k in range(NR_PBUCKETS):                # no stale run heads
            if pb[row + k] != NIL:
                seen -= 1
        if seen != 0:
            return st.node[_node_row(st, cache, node) + N_PARTIAL_HEAD]
    return NIL
