"""Free pointers and the free list of a new slab, in the order its objects go out.

The pointer encoding (CONFIG_SLAB_FREELIST_HARDENED) and that order (CONFIG_SLAB_FREELIST_RANDOM),
below ``slablists``, which builds its new slabs with them.
"""
from __future__ import annotations

from .layout import (CA_DEBUG, CA_FP_KEY, CA_OFFSET, CA_RED_LEFT, CA_RSEQ, CA_RSEQ_LEN, CA_SIZE,
                     RSEQ_MAX, _ca, _frand)
from .native import address, jit, swab, unit, words_at
from .redzone import slab_debug_setup


# ---- free pointers -------------------------------------------------------------------------
@jit(inline=True)
def _fp_mask(key, where):
    """What a free pointer stored at byte address ``where`` is XORed with.

    ``key ^ swab(where)`` when the cache's pointers are hardened (``key`` not 0), else 0."""
    return (key ^ swab(where)) & -(key != 0)


@jit(inline=True)
def _get_fp(mem, offset, key, obj):
    """The next-free pointer stored in free object ``obj`` (``get_freepointer``).

    It is decoded with the cache's ``key`` (CONFIG_SLAB_FREELIST_HARDENED)."""
    where = obj + offset
    return mem[where >> 3] ^ _fp_mask(key, where)


@jit(inline=True)
def _set_fp(mem, offset, key, obj, nxt):
    """Store ``nxt`` as the next-free pointer of free object ``obj`` (encoded with ``key``)."""
    where = obj + offset
    mem[where >> 3] = nxt ^ _fp_mask(key, where)


# ---- CONFIG_SLAB_FREELIST_RANDOM: the order in which a new slab's objects go out ------------
@jit(inline=True)
def _obj_iter_init(st, cache, slab):
    """``init_slab_obj_iter``: the position a new ``slab``'s objects are taken from.

    When the cache has a random sequence and the slab at least two objects, a draw below the
    sequence's length (``get_random_u32_below(freelist_count)``, from ``G_FRNG``); else 0, the
    first object in address order."""
    n = _ca(st, cache, CA_RSEQ_LEN)
    if n != 0 and st.sl_objects[slab] >= 2:
        return _below(st, n)
    return 0


@jit(inline=True)
def _below(st, n):
    """``get_random_u32_below(n)`` from ``G_FRNG``.

    32 random bits times ``n``, shifted down 32 (Lemire's multiply-shift, as the kernel's: no
    division)."""
    return ((_frand(st) >> 31) * n) >> 32


@jit(inline=True)
def _next_obj(st, cache, slab, pos):
    """``next_slab_obj``: a new ``slab``'s next object from ``pos``, and the position after it.

    With a random sequence: its entries read on from ``pos`` (wrapping round), skipping those at or
    past the end of the slab (a slab of the fallback order has fewer objects than the sequence);
    else the objects in address order. Every object of the slab comes out once in ``sl_objects``
    calls."""
    base = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
    size = _ca(st, cache, CA_SIZE)
    n = _ca(st, cache, CA_RSEQ_LEN)
    objects = st.sl_objects[slab]
    if n != 0 and objects >= 2:
        limit = objects * size
        seq = _ca(st, cache, CA_RSEQ)
        idx = st.rseq[seq + pos]
        pos += 1
        if pos >= n:
            pos = 0
        while idx >= limit:
            idx = st.rseq[seq + pos]
            pos += 1
            if pos >= n:
                pos = 0
        return base + idx, pos
    return base + pos * size, pos + 1


@jit(inline=True)
def _new_slab_objects(st, cache, slab, p, at):
    """Every object of a new ``slab``, in allocation order, into ``p[at:]`` (Words); how many.

    The order is :func:`_obj_iter_init` and :func:`_next_obj` (``alloc_from_new_slab`` taking them
    all), for the paths that carve a whole slab with no free list. The count is ``sl_objects``."""
    objects = st.sl_objects[slab]
    base = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
    n = _ca(st, cache, CA_RSEQ_LEN)
    if n == objects and n >= 2:         # a slab of s->oo: the sequence from pos, then to pos
        seq = _ca(st, cache, CA_RSEQ)
        pos = _below(st, n)
        rseq = st.rseq
        if 2 * n <= RSEQ_MAX:           # stored twice: no wrap, a plain vectorised copy
            o = seq + pos
            for j in range(n):
                p[at + j] = base + rseq[o + j]
        else:
            for j in range(n):          # one loop of the cache's constant length, the wrap a
                i = pos + j             # select: two loops whose lengths pos draws at random
                i = i - n if i >= n else i    # mispredicted both exits on every slab
                p[at + j] = base + rseq[seq + i]
    elif n == 0 or objects < 2:         # address order
        size = _ca(st, cache, CA_SIZE)
        for k in range(objects):
            p[at + k] = base + k * size
    else:                               # a fallback slab: rarely, so a unit apart
        carve_slab_iter(st, cache, slab, address(p) + 8 * at)
    return objects


@unit
def carve_slab_iter(st, cache, slab, paddr):
    """Every object of a new ``slab`` into the words at ``paddr``, in :func:`_next_obj`'s order.

    :func:`_new_slab_objects` for a slab of the fallback order (rarely run, so compiled apart from
    the refill and NEW paths). Returns how many."""
    p = words_at(paddr)
    objects = st.sl_objects[slab]
    pos = _obj_iter_init(st, cache, slab)
    for k in range(objects):
        obj, pos = _next_obj(st, cache, slab, pos)
        p[k] = obj
    return objects


@unit
def build_freelist_iter(st, cache, slab):
    """:func:`new_slab`'s free list through every object of ``slab``, in :func:`_next_obj`'s order.

    For a slab of the fallback order with a random sequence (rarely run, so compiled apart from
    ``new_slab``). 0."""
    mem = st.mem
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    pos = _obj_iter_init(st, cache, slab)
    obj, pos = _next_obj(st, cache, slab, pos)
    st.sl_freelist[slab] = obj
    for _ in range(st.sl_objects[slab] - 1):
        nxt, pos = _next_obj(st, cache, slab, pos)
        _set_fp(mem, offset, key, obj, nxt)
        obj = nxt
    _set_fp(mem, offset, key, obj, 0)
    return 0


@jit(inline=True)
def _link_in_address_order(mem, offset, key, base, size, objects):
    """Link ``objects`` objects of ``size`` bytes from ``base`` in address order, the last to 0.

    Each free pointer is written to name the next object."""
    obj = base
    for _ in range(objects - 1):
        _set_fp(mem, offset, key, obj, obj + size)
        obj += size
    _set_fp(mem, offset, key, obj, 0)


@jit(inline=True)
def _build_freelist(st, cache, slab):
    """:func:`new_slab`'s work on the allocated ``slab``.

    slab_debug's set-up, then the free list in the order of :func:`_next_obj`."""
    mem = st.mem
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    if _ca(st, cache, CA_DEBUG):
        slab_debug_setup(st, cache, slab)
    objects = st.sl_objects[slab]
    n = _ca(st, cache, CA_RSEQ_LEN)
    if n == objects and n >= 2:         # a slab of s->oo: the sequence from pos, then to pos
        base = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
        seq = _ca(st, cache, CA_RSEQ)
        pos = _below(st, n)
        rseq = st.rseq
        obj = base + rseq[seq + pos]
        st.sl_freelist[slab] = obj
        for j in range(seq + pos + 1, seq + n):
            nxt = base + rseq[j]
            _set_fp(mem, offset, key, obj, nxt)
            obj = nxt
        for j in range(seq, seq + pos):
            nxt = base + rseq[j]
            _set_fp(mem, offset, key, obj, nxt)
            obj = nxt
        _set_fp(mem, offset, key, obj, 0)
    elif n == 0 or objects < 2:         # address order
        base = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
        _link_in_address_order(mem, offset, key, base, _ca(st, cache, CA_SIZE), objects)
        st.sl_freelist[slab] = base
    else:                               # a fallback slab's entries: a unit apart
        build_freelist_iter(st, cache, slab)
