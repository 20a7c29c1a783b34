"""Lean sheaves: sheaf-aware mobility, numslab's remedy for issue 15 (in no kernel).

Under 7.0 a CPU's main sheaf holds at most a slab's objects shared among the CPUs, and no spare or
barn sheaf.

Off unless a caller asks: the lab's ``leansheaves`` policy calls these units around its
allocations and frees; nothing of the kernel's own paths calls them.
"""
from __future__ import annotations

from ..flags import SHEAF_REFILL
from .layout import (C_MAIN, C_SPARE, CA_OBJECTS, CA_SHEAF_CAPACITY, KERNEL_7_0, N_NR_FULL,
                     N_NR_PARTIAL, SH_OBJECTS, SH_SIZE, _ca, _cpu_row, _stat)
from .live import _aux, _to_cached, _settled
from .native import jit, unit
from .nocpu import refill_objects, slab_alloc_single
from .sheaves import _barn, _may_refill, _objs_at, _w, sheaf_flush_main


@jit(inline=True)
def lean_limit(st, cache):
    """The most objects a CPU's main sheaf of ``cache`` holds under lean sheaves.

    A slab's objects shared among the CPUs (at least 1, at most the capacity), so that the sheaves
    of all CPUs together hold at most one slab of free objects."""
    return max(1, min(_ca(st, cache, CA_SHEAF_CAPACITY), _ca(st, cache, CA_OBJECTS) // st.ncpus))


@unit
def refill_main_lean(st, cache, cpu, gfp):
    """Lean sheaves' allocation side: fill the CPU's empty main sheaf in place with a few objects.

    For an allocation about to find the CPU's sheaves empty under 7.x (main and spare empty, no
    full sheaf in the barn, ``gfp`` lets the kernel refill: ``sheaves._may_refill``): where
    ``__pcs_replace_empty_main`` fills a sheaf to capacity, taking new slabs for what the partial
    slabs lack, fill the main sheaf in place with at most :func:`lean_limit` objects of the partial
    slabs (``refill_objects``, at least one: the first slabs of the list, the fullest under a
    sorted order), or, with no partial slab on the CPU's node, with one object as ``___slab_alloc``
    gives it when sheaves cannot serve (a new slab's other objects stay free in it). No sheaf
    struct is made and free objects never fill a slab of their own. Objects put in main (the
    caller's allocation pops one), 0 when it did nothing."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    if st.kernel < KERNEL_7_0 or not _may_refill(st, gfp):
        return 0
    mem = st.mem
    c = _cpu_row(st, cache, cpu)
    main = st.cpu[c + C_MAIN]
    spare = st.cpu[c + C_SPARE]
    r = _barn(st, cache, cpu)
    if main == 0 or mem[_w(main, SH_SIZE)] or (spare and mem[_w(spare, SH_SIZE)]) or \
            st.node[r + N_NR_FULL]:
        return 0
    if st.node[r + N_NR_PARTIAL] == 0:
        obj = slab_alloc_single(st, cache, cpu, -1, gfp)
        mem[_w(main, SH_OBJECTS)] = obj
        filled = 1 if obj else 0
        if obj:                         # off its slab, into a sheaf: held
            _to_cached(st, obj, _aux(st, cache))
    else:
        filled = refill_objects(st, cache, cpu, gfp, 1, lean_limit(st, cache),
                                _objs_at(st, main), 0)
        _stat(st, cache, cpu, SHEAF_REFILL, filled)
    mem[_w(main, SH_SIZE)] = filled
    return filled


@unit
def flush_main_lean(st, cache, cpu):
    """Lean sheaves' free side, before a free to the CPU's sheaves under 7.0.

    When the main sheaf holds :func:`lean_limit` objects, give them back to their slabs
    (:func:`sheaf_flush_main`), where the kernel fills it to capacity and then takes a spare or
    barn sheaf (a new sheaf struct, more free objects held out of their slabs). 1 if it flushed,
    else 0."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    if st.kernel < KERNEL_7_0:
        return 0
    main = st.cpu[_cpu_row(st, cache, cpu) + C_MAIN]
    if main == 0 or st.mem[_w(main, SH_SIZE)] < lean_limit(st, cache):
        return 0
    sheaf_flush_main(st, cache, cpu)
    return 1
