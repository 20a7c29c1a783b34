"""slab_debug's bytes: poison and red zones, ``init_object``, new-slab set-up, the byte check.

Poison and red-zone values, ``init_object``, new-slab set-up and the byte check that reports and
restores (``check_bytes_and_report``), as in ``mm/slub.c``.

The checks that walk free lists and the debug alloc/free paths are in ``debug.py``; this
module is the part the slab layer (``slablists.new_slab``) needs, so it imports no other
engine module but the layout.
"""
from __future__ import annotations

import numpy as np

from ..flags import SLAB_POISON, SLAB_RED_ZONE, SLAB_STORE_USER
from .layout import (CA_DEBUG, CA_INUSE, CA_OBJECT_SIZE, CA_ORIG, CA_RED_LEFT,
                     CA_SIZE, CA_TRACK, D_OBJECT_POISON, G_NREPORTS, G_SITE, G_TICKS, R_A,
                     R_B, R_C, R_CACHE, R_D, R_KIND, R_MAX, R_NCOLS, R_OBJECT, R_SLAB, _ca)
from .native import byte_array, fill_bytes, jit, unit

POISON_INUSE = 0x5a     #: padding and never-allocated bytes (``POISON_INUSE``)
POISON_FREE = 0x6b      #: a free object's bytes (``POISON_FREE``)
POISON_END = 0xa5       #: a free object's last byte (``POISON_END``)
RED_INACTIVE = 0xbb     #: red zones of a free object (``SLUB_RED_INACTIVE``)
RED_ACTIVE = 0xcc       #: red zones of an allocated object (``SLUB_RED_ACTIVE``)
TRACK_SIZE = 32         #: ``sizeof(struct track)`` (see ``geometry.TRACK_SIZE``)
TRACK_ALLOC, TRACK_FREE = 0, 1

# ---- report kinds (R_KIND). 0..7 are byte checks: R_A..R_D = first and last bad byte,
# byte found, byte expected. Every report is one error as the kernel's KUnit counts them
# (``slab_add_kunit_errors``: each ``slab_err``, ``object_err``, byte check and ``slab_fix``).
(K_LEFT_REDZONE, K_RIGHT_REDZONE, K_KMALLOC_REDZONE, K_POISON, K_END_POISON, K_ALIGN_PAD,
 K_OBJECT_PAD, K_SLAB_PAD,
 K_FREEPOINTER,         # object_err "Freepointer corrupt" (R_A: the value read)
 K_FREECHAIN,           # object_err "Freechain corrupt"
 K_FREELIST,            # slab_err "Freepointer corrupt" (the slab's first pointer)
 K_CYCLE,               # slab_err "Freelist cycle detected"
 K_WRONG_COUNT,         # slab_err "Wrong object count" (R_A counter, R_B counted)
 K_ALREADY_FREE,        # object_err "Object already free"
 K_REMAINING,           # slab_err "Objects remaining ... on __kmem_cache_shutdown()"
 K_REMAINING_OBJECT,    # one leaked object of that slab
 K_FIX_RESTORE,         # slab_fix "Restoring <what> ..." (R_A..R_B bytes, R_C what, R_D value)
 K_FIX_COUNT,           # slab_fix "Object count adjusted"
 K_FIX_CLEARED,         # slab_fix "Freelist cleared" (R_A, R_B: the slab's inuse and
                        # freelist before, R_C = 1 when they are recorded)
 K_FIX_ALL_USED,        # slab_fix "Marking all objects used" (a failed alloc check; R_A..R_C
                        # as K_FIX_CLEARED's)
 K_FIX_NOT_FREED,       # slab_fix "Object at 0x.. not freed" (a failed free check)
 ) = range(21)


@jit
def _report(st, kind, cache, slab, obj, a, b, c, d):
    """Append a report to the ring (field ``reports``), counted in G_NREPORTS."""
    g = st.g
    n = g[G_NREPORTS]
    r = (n % R_MAX) * R_NCOLS
    rep = st.reports
    rep[r + R_KIND] = kind
    rep[r + R_CACHE] = cache
    rep[r + R_SLAB] = slab
    rep[r + R_OBJECT] = obj
    rep[r + R_A] = a
    rep[r + R_B] = b
    rep[r + R_C] = c
    rep[r + R_D] = d
    g[G_NREPORTS] = n + 1


@jit(inline=True)
def _fill(st, start, value, n):
    """``memset(start, value, n)`` on the arena."""
    if n > 0:
        fill_bytes(st.mem, start, value, n)


@jit
def check_bytes(st, m8, cache, slab, obj, what, start, value, n):
    """``check_bytes_and_report``: 1 if the ``n`` bytes at ``start`` all hold ``value``.

    Else report the first bad byte and the run up to the last, restore that run (``restore_bytes``,
    a ``slab_fix``: a second report) and return 0."""
    end = start + n
    i = start
    pattern = value * 0x0101010101010101        # the byte in every lane of a word
    mem = st.mem
    while i < end and m8[i] == value:
        i += 1
        if i & 7 == 0:                          # aligned: a word at a time
            while i + 8 <= end and mem[i >> 3] == pattern:
                i += 8
    if i >= end:
        return 1
    e = end
    while e > i and m8[e - 1] == value:
        e -= 1
    _report(st, what, cache, slab, obj, i, e - 1, np.int64(m8[i]), value)
    _report(st, K_FIX_RESTORE, cache, slab, obj, i, e - 1, what, value)
    _fill(st, i, value, e - i)
    return 0


@jit(inline=True)
def get_orig_size(st, m8, cache, obj):
    """``get_orig_size``: the size a kmalloc asked for (the object size if not stored).

    Stored as an ``unsigned long`` after the tracks."""
    off = _ca(st, cache, CA_ORIG)
    osz = _ca(st, cache, CA_OBJECT_SIZE)
    if off == 0:
        return osz
    size = st.mem[(obj + off) >> 3]
    return size if 0 <= size <= osz else osz    # a stray write: never past the object


@jit
def set_orig_size(st, m8, cache, obj, size):
    """``set_orig_size``: store the size a kmalloc asked for (kmalloc caches with U)."""
    off = _ca(st, cache, CA_ORIG)
    if off:
        st.mem[(obj + off) >> 3] = size


@jit
def init_object(st, m8, cache, obj, val):
    """``init_object``: fill the left red zone, the poison and the right red zone with ``val``.

    The poison is ``POISON_FREE``, the last byte ``POISON_END`` (up to ``orig_size`` for an
    allocated kmalloc object); the right red zone runs from the poison's end to ``inuse``."""
    flags = _ca(st, cache, CA_DEBUG)
    poison_size = _ca(st, cache, CA_OBJECT_SIZE)
    if flags & SLAB_RED_ZONE:
        red = _ca(st, cache, CA_RED_LEFT)
        _fill(st, obj - red, val, red)
        if _ca(st, cache, CA_ORIG) and val == RED_ACTIVE:
            poison_size = get_orig_size(st, m8, cache, obj)
    if flags & D_OBJECT_POISON:
        _fill(st, obj, POISON_FREE, poison_size - 1)
        m8[obj + poison_size - 1] = POISON_END
    if flags & SLAB_RED_ZONE:
        _fill(st, obj + poison_size, val, _ca(st, cache, CA_INUSE) - poison_size)


@jit
def set_track(st, cache, obj, which, cpu):
    """``set_track``: the ``struct track`` ``which`` (TRACK_ALLOC or TRACK_FREE) of ``obj``.

    ``addr`` the call site the facade set in G_SITE (0: an ``@njit`` caller), ``cpu``, ``pid`` 0,
    ``when`` the debug clock G_TICKS."""
    w = (obj + _ca(st, cache, CA_TRACK) + which * TRACK_SIZE) >> 3
    mem = st.mem
    g = st.g
    mem[w] = g[G_SITE]
    mem[w + 1] = cpu << 32          # depot handle 0 (low half), cpu (high half)
    mem[w + 2] = 0                  # pid
    mem[w + 3] = g[G_TICKS]


@jit
def setup_slab_debug(st, cache, slab):
    """``setup_slab_debug`` and ``setup_object_debug`` for a new slab of a debug cache.

    With P the whole slab is ``POISON_INUSE`` first; every object then gets
    ``init_object(RED_INACTIVE)`` and zeroed tracks (with U)."""
    flags = _ca(st, cache, CA_DEBUG)
    m8 = byte_array(st.mem, st.mem_size)
    base = slab << 12
    size = _ca(st, cache, CA_SIZE)
    n = st.sl_objects[slab]
    if flags & SLAB_POISON:
        nbytes = 4096 << st.pg_order[slab]
        _fill(st, base, POISON_INUSE, nbytes)
    if not flags & (SLAB_STORE_USER | SLAB_RED_ZONE | D_OBJECT_POISON):
        return
    obj = base + _ca(st, cache, CA_RED_LEFT)
    track = _ca(st, cache, CA_TRACK)
    for _ in range(n):
        init_object(st, m8, cache, obj, RED_INACTIVE)
        if flags & SLAB_STORE_USER:
            _fill(st, obj + track, 0, 2 * TRACK_SIZE)
        obj += size


@unit
def slab_debug_setup(st, cache, slab):
    """:func:`setup_slab_debug` as a unit, for ``new_slab``.

    Compiled when a debug cache first makes a slab, so an allocator without one never compiles it.
    0."""
    setup_slab_debug(st, cache, slab)
    return 0
