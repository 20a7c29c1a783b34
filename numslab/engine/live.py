"""The live-object bitmap: one bit per 8-byte granule, set where an object handed out starts.

Below ``checks`` (which checks every free against it) and the layers that hand objects out and take
them back; the allocator's own objects (sheaves) carry a second bit.
"""
from __future__ import annotations

from ..flags import FREE_PCS, NR_STATS
from .layout import (CA_ACTIVE, CA_RED_LEFT, CA_SIZE, G_PEND, PD_COUNT, PD_NPEND, PD_OBJS, PD_ROW,
                     PD_STAMP, _ca)
from .native import jit


# ---- the live-object bitmap: one bit per 8-byte granule, set at the start of each object
# handed to the user (word addr >> 9, bit (addr >> 3) & 63) --------------------------------
_NOT_SIGN = (1 << 63) - 1      #: every bit of an int64 but the sign


@jit(inline=True)
def _live_test(st, addr):
    """1 if the object at ``addr`` is allocated (its bit in the live bitmap is set)."""
    return (st.live[addr >> 9] >> ((addr >> 3) & 63)) & 1


@jit(inline=True)
def _live_set(st, addr):
    """Mark the object at ``addr`` allocated."""
    st.live[addr >> 9] |= 1 << ((addr >> 3) & 63)


@jit(inline=True)
def _live_clear(st, addr):
    """Mark the object at ``addr`` free."""
    st.live[addr >> 9] &= ~(1 << ((addr >> 3) & 63))


# An object the allocator kmallocs for itself (a sheaf) also has the bit of its second granule
# set: no object starts there in a cache of objects of 16 bytes and more, and sheaves (64
# bytes and more, aligned to their size) never have their second granule in the next word.
@jit(inline=True)
def _own_set(st, addr):
    """Mark the (live, >= 16-byte) object at ``addr`` as the allocator's own."""
    st.live[addr >> 9] |= 2 << ((addr >> 3) & 63)


@jit(inline=True)
def _own_clear(st, addr):
    """Unmark the allocator's own object at ``addr``."""
    st.live[addr >> 9] &= ~(2 << ((addr >> 3) & 63))


@jit(inline=True)
def _own_test(st, addr, size):
    """1 if the live object at ``addr`` of a cache of ``size``-byte objects is the allocator's own.

    0 for caches of 8-byte objects, which never hold one."""
    return (st.live[addr >> 9] & (2 << ((addr >> 3) & 63))) != 0 and size >= 16


@jit(inline=True)
def _live_set_slab(st, cache, slab):
    """Mark every object of ``slab`` allocated (a new slab carved whole), in address order.

    Neighbours share a bitmap word, which stays in a register while they do (fewer word changes
    than the slab's random allocation order makes)."""
    _grid_set_slab(st.live, st, cache, slab)


@jit(inline=True)
def _grid_set_slab(live, st, cache, slab):
    """:func:`_live_set_slab` on the bitmap ``live`` (``st.live`` or ``st.held``)."""
    size = _ca(st, cache, CA_SIZE)
    a = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
    cw = a >> 9
    cval = live[cw]
    for _ in range(st.sl_objects[slab]):
        w = a >> 9
        if w != cw:
            live[cw] = cval
            cw = w
            cval = live[w]
        cval |= 1 << ((a >> 3) & 63)
        a += size
    live[cw] = cval


@jit(inline=True)
def _live_set_run(st, p, start, n, note=False):
    """Mark the objects ``p[start:start+n]`` (Words) allocated (:func:`_grid_set_run`)."""
    return _grid_set_run(st.live, p, start, n, note)


@jit(inline=True)
def _grid_set_run(live, p, start, n, note):
    """Set the bits of the objects ``p[start:start+n]`` (Words) in bitmap ``live`` (or ``held``).

    Neighbouring objects share a bitmap word, so the word stays in a register while they do: a
    store and a reload of the same word in consecutive iterations would stall on store forwarding
    every time. With ``note`` (a constant: ``pcsbulk._sheaf_copy_top``), an object found marked
    already (a stale sheaf entry) gets bit 0 of its ``p`` entry set (objects are 8-aligned), and
    the result says whether there was one; without, objects may be marked already (a slab walk
    marks what it takes) and the result is False."""
    if n <= 0:
        return False
    cw = p[start] >> 9
    cval = live[cw]
    bad = False
    for k in range(start, start + n):
        a = p[k]
        w = a >> 9
        if w != cw:
            live[cw] = cval
            cw = w
            cval = live[w]
        bit = 1 << ((a >> 3) & 63)
        if note and cval & bit:
            p[k] = a | 1
            bad = True
        cval |= bit
    live[cw] = cval
    return bad


# ---- object states: the live bit, and the held bit (field ``held``) -----------------------------
# In a cache that keeps the held bitmap (``_aux``: every cache with sheaves but slab_debug's),
# (live, held) is (1, 1) handed to a user or the allocator's own, (0, 1) cached (held by a sheaf
# or by the pending record: no free list may name it), (0, 0) free on a slab. The single alloc
# and free between a sheaf and a user flip the live bit alone, as before; held changes where
# objects leave and enter the slabs. slab_debug's caches and caches without sheaves keep the
# live bit alone (held stays 0).
@jit(inline=True)
def _aux(st, cache):
    """2 if ``cache`` keeps the held bitmap, else 0.

    Bit 1 of ``CA_ACTIVE``, the cache's state mask (7, 3 or 1 while it is active; bit 0 off
    while ``ops.cache_release`` frees what it holds), set by ``kmem_cache_create``."""
    return _ca(st, cache, CA_ACTIVE) & 2


@jit(inline=True)
def _pends(st, cache):
    """4 if ``cache`` takes bulk batches pending (the record, field ``pend``), else 0.

    Bit 2 of ``CA_ACTIVE``: set with bit 1 unless the machine was made with
    ``pending_takes=False`` (tests and benchmarks compare the two)."""
    return _ca(st, cache, CA_ACTIVE) & 4


@jit(inline=True)
def _to_cached(st, addr, aux):
    """(live, held) -> (0, 1): the object at ``addr`` goes into a sheaf (``aux`` from _aux)."""
    sh = (addr >> 3) & 63
    st.live[addr >> 9] &= ~(1 << sh)
    st.held[addr >> 9] |= (aux >> 1) << sh


@jit(inline=True)
def _uncache(st, addr, aux):
    """held -> 0: the (free) object at ``addr`` goes back to its slab."""
    st.held[addr >> 9] &= ~((aux >> 1) << ((addr >> 3) & 63))


@jit(inline=True)
def _held_run(st, aux, p, lo, hi):
    """Mark the objects ``p[lo:hi]`` (Words) held: off their slabs (``aux`` from _aux)."""
    if aux:
        _grid_set_run(st.held, p, lo, hi - lo, False)


# ---- the pending record: a bulk allocation's objects left cached, their marks not written ------
@jit
def _settle(st):
    """Write the pending record's marks: each of its objects (0, 1) -> (1, 1); the record cleared.

    Every path that reads or changes object states other than the bulk round's calls this first
    while ``G_PEND`` is not 0. A checked record's marks past its pending part (``PD_NPEND``: 0,
    or its sheaves' part) were written at the allocation: it is only dropped then."""
    pd = st.pend
    live = st.live
    n = pd[PD_NPEND]
    for k in range(n):
        a = pd[PD_OBJS + k]
        live[a >> 9] |= 1 << ((a >> 3) & 63)
    _record_drop(st)


@jit(inline=True)
def _record_drop(st):
    """Drop the pending record: its count and ``G_PEND`` cleared together.

    The row and the copy stay (``ops._unsettled`` puts a refused call's record back)."""
    st.pend[PD_COUNT] = 0
    st.g[G_PEND] = 0


@jit(inline=True)
def _settled(st):
    """:func:`_settle` if a record is pending (one load and a branch otherwise)."""
    if st.g[G_PEND]:
        _settle(st)


@jit(inline=True)
def _pending(st):
    """The objects of the pending record (``G_PEND``), 0: none."""
    return st.g[G_PEND]


@jit(inline=True)
def _repend(st, pend):
    """Put back a pending record of ``pend`` objects that this call settled (``pend`` 0: none).

    For a call that only reads, or that refused and changed nothing: the record's objects are
    (1, 1) again after :func:`_settle`, and back to pending (0, 1) here."""
    if pend and st.g[G_PEND] == 0:
        pd = st.pend
        live = st.live
        for k in range(pd[PD_NPEND]):          # (a checked record's pending part alone)
            a = pd[PD_OBJS + k]
            live[a >> 9] &= ~(1 << ((a >> 3) & 63))
        pd[PD_COUNT] = pend
        st.g[G_PEND] = pend


@jit(inline=True)
def _record_take(st, row, src, o, nr, p):
    """The pending take: copy ``src[o:o+nr]`` into ``p[:nr]`` and into the record of ``row``.

    Any earlier record is the caller's to settle first. No mark is written: the objects stay
    cached."""
    pd = st.pend
    for k in range(nr):
        a = src[o + k]
        p[k] = a
        pd[PD_OBJS + k] = a
    pd[PD_ROW] = row
    pd[PD_COUNT] = nr
    pd[PD_NPEND] = nr
    st.g[G_PEND] = nr


@jit(inline=True)
def _record_equals(pd, nr, p):
    """Whether ``p[:nr]`` is the record's copy of the addresses, in its order (one pass)."""
    d = 0
    for k in range(nr):
        d |= p[k] ^ pd[PD_OBJS + k]
    return d == 0


@jit(inline=True)
def _free_stamp(st, cache):
    """``cache``'s FREE_PCS summed over the CPUs: every free a user's inlined code makes counts.

    ``numslab.jit``'s inline single free (``jitapi._free_fast``) is the one path that frees an
    object without an engine unit (which settles or drops the record first), and it counts
    FREE_PCS on its CPU: while the sum is unmoved, no object of a checked record was freed."""
    base = cache * st.ncpus * NR_STATS + FREE_PCS
    s = 0
    for c in range(st.ncpus):
        s += st.stats[base + c * NR_STATS]
    return s


@jit
def _record_checked(st, cache, row, nr, p):
    """The checked record of a bulk allocation: ``p[:nr]`` copied, its pending head counted.

    The objects before the first one marked live (none, or what the CPU's sheaves gave at the
    start of the batch, ``pcsbulk._takes_pending``: all of it when they gave it whole) are left
    cached as a pending take is (no mark written: ``PD_NPEND`` says how many, and
    :func:`_settle` writes their marks); the rest were marked live by their take. Any
    earlier record is the caller's to settle first. A free of exactly ``p[:nr]`` by the same
    cache and CPU, nothing else done in between (the settle rule; the stamp for users' inlined
    single frees), skips the batch check (``pcsbulk._free_recorded``)."""
    pd = st.pend
    live = st.live
    npend = 0
    while npend < nr and not (live[p[npend] >> 9] >> ((p[npend] >> 3) & 63)) & 1:
        npend += 1
    for k in range(nr):
        pd[PD_OBJS + k] = p[k]
    pd[PD_ROW] = row
    pd[PD_COUNT] = nr
    pd[PD_NPEND] = npend
    pd[PD_STAMP] = _free_stamp(st, cache)
    st.g[G_PEND] = nr
