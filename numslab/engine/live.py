"""The live-object bitmap: one bit per 8-byte granule, set where an object handed out starts.

Below ``checks`` (which checks every free against it) and the layers that hand objects out and take
them back; the allocator's own objects (sheaves) carry a second bit.
"""
from __future__ import annotations

from .layout import CA_RED_LEFT, CA_SIZE, _ca
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
    live = st.live
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
    """Mark the objects ``p[start:start+n]`` (Words) allocated.

    Neighbouring objects share a bitmap word, so the word stays in a register while they do: a
    store and a reload of the same word in consecutive iterations would stall on store forwarding
    every time. With ``note`` (a constant: ``pcsbulk._sheaf_copy_top``), an object found marked
    already (a stale sheaf entry) gets bit 0 of its ``p`` entry set (objects are 8-aligned), and
    the result says whether there was one; without, objects may be marked already (a slab walk
    marks what it takes) and the result is False."""
    if n <= 0:
        return False
    live = st.live
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
