"""Statistics: sysfs-style counters, SLUB event counters and ``/proc/slabinfo`` text.

The sysfs-style counters of ``/sys/kernel/slab/<cache>/``, the SLUB event counters of
``CONFIG_SLUB_STATS`` and ``/proc/slabinfo`` version 2.1 text."""
from __future__ import annotations

import numpy as np

from .layout import (C_FREELIST, C_MAIN, C_PARKED, C_PARTIAL, C_RCU_FREE, C_SLAB, C_SPARE,
                     CA_FP_KEY, CA_OFFSET, CA_SIZE, CA_RED_LEFT, SH_CACHE, CA_USER_SHEAVES,
                     G_NISOLATED, G_NLOST, G_RCU_HEAD, N_BARN_EMPTY, N_BARN_FULL,
                     N_PARTIAL_HEAD, N_TOTAL_OBJECTS, NIL, NO_SHEAF, PG_FROZEN, PG_HEAD,
                     PG_ISOLATED, PG_SLAB, PG_TAIL, SH_NEXT, SH_OBJECTS, SH_SIZE, _ca, _cpu_row,
                     _node_index, _node_row, _rcu_next, _shadow)
from .native import jit, unit, words_at
from .live import _pending, _repend, _settled
from .freelist import _get_fp


@unit
def live_objects(st, cache):
    """Objects of ``cache`` handed out and not yet freed; read with the pending record settled.

    :func:`_live_objects_body`, the record put back after (``live._repend``)."""
    pend = _pending(st)
    _settled(st)
    r = _live_objects_body(st, cache)
    _repend(st, pend)
    return r


@jit
def _live_objects_body(st, cache):
    """Objects of ``cache`` handed out and not yet freed.

    As the kernel counts ``objects`` (all objects less the free ones on partial slabs), less also
    what the CPUs hold: the free objects of their slabs and freelists and of every sheaf, those
    waiting for their grace period included (a slab with a free object is always on a partial list
    or a CPU's, so these are all of them); less the lost objects (:func:`lost_objects`), which the
    slabs count in use and no user holds."""
    nd = st.node
    nxt = st.pg_next
    inuse = st.sl_inuse
    objects = st.sl_objects
    cpt = st.cpu
    mem = st.mem
    live = 0
    parked = _shadow(st) + NO_SHEAF
    for node in range(st.nnodes):
        r = _node_row(st, cache, node)
        live += nd[r + N_TOTAL_OBJECTS]
        slab = nd[r + N_PARTIAL_HEAD]
        k = 0
        while slab != NIL and k < st.npages:    # (a loop set by a stray write stops)
            live -= objects[slab] - inuse[slab]
            slab = nxt[slab]
            k += 1
        sheaf = nd[r + N_BARN_FULL]
        while sheaf:
            live -= mem[(sheaf >> 3) + SH_SIZE]
            sheaf = mem[(sheaf >> 3) + SH_NEXT]
        sheaf = st.barn_partial[_node_index(st, cache, node)]
        if sheaf:
            live -= mem[(sheaf >> 3) + SH_SIZE]
    for cpu in range(st.ncpus):
        c = _cpu_row(st, cache, cpu)
        slab = cpt[c + C_SLAB]
        if slab != NIL:
            free, lost = _cpu_freelist(st, cache, slab, cpt[c + C_FREELIST])
            live -= objects[slab] - inuse[slab] + free + lost
        slab = cpt[c + C_PARTIAL]
        while slab != NIL:
            live -= objects[slab] - inuse[slab]
            slab = nxt[slab]
        # (a row parked while this thread holds the engine points at NO_SHEAF, size -1, and
        # keeps its main sheaf in C_PARKED)
        for col in (C_MAIN, C_PARKED, C_SPARE, C_RCU_FREE):
            if cpt[c + col] and cpt[c + col] != parked:
                live -= mem[(cpt[c + col] >> 3) + SH_SIZE]
    sheaf = _ca(st, cache, CA_USER_SHEAVES)
    while sheaf:
        live -= mem[(sheaf >> 3) + SH_SIZE]
        sheaf = mem[(sheaf >> 3) + SH_NEXT]
    sheaf = st.g[G_RCU_HEAD]                # sheaves waiting for their grace period
    k = 0
    while sheaf:
        if mem[(sheaf >> 3) + SH_CACHE] == cache:
            live -= mem[(sheaf >> 3) + SH_SIZE]
        k += 1
        sheaf = _rcu_next(st, sheaf, k)
    if st.g[G_NISOLATED]:
        live -= _isolated_leak(st, cache)
    if st.g[G_NLOST]:
        live -= _cut_lost(st, cache)
    return live


@unit
def lost_objects(st, cache):
    """Objects of ``cache`` lost to a corrupted free list; read with the pending record settled.

    :func:`_lost_objects_body`, the record put back after (``live._repend``)."""
    pend = _pending(st)
    _settled(st)
    r = _lost_objects_body(st, cache)
    _repend(st, pend)
    return r


@jit
def _lost_objects_body(st, cache):
    """Objects of ``cache`` lost to a corrupted free list.

    Counted in use by their slabs (``inuse``, as the kernel leaks them), held by no user, never
    handed out again. Those a repaired free list cut off (``sl_lost``: ``debug.on_freelist``'s
    "Freechain corrupt"), the free objects and later frees of the isolated slabs (the guards' and
    slab_debug's "Marking all objects used", "Freelist cleared"), and under 6.18 the free objects a
    stray write cut or skipped off a CPU's lockless freelist, which no pop reaches (a flush records
    them in ``sl_lost``, or isolates the slab when it finds a cut)."""
    lost = 0
    cpt = st.cpu
    for cpu in range(st.ncpus):
        c = _cpu_row(st, cache, cpu)
        slab = cpt[c + C_SLAB]
        if slab != NIL:
            lost += _cpu_freelist(st, cache, slab, cpt[c + C_FREELIST])[1]
    if st.g[G_NISOLATED]:
        lost += _isolated_leak(st, cache)
    if st.g[G_NLOST]:
        lost += _cut_lost(st, cache)
    return lost


@unit
def lost_slabs(st, cache, rows, outaddr):
    """The slabs that lost objects and how many (int64[rows, 2] at ``outaddr``), read settled.

    :func:`_lost_slabs_body`, the record put back after (``live._repend``)."""
    pend = _pending(st)
    _settled(st)
    r = _lost_slabs_body(st, cache, rows, outaddr)
    _repend(st, pend)
    return r


@jit
def _lost_slabs_body(st, cache, rows, outaddr):
    """Fill the int64[rows, 2] at ``outaddr`` with (slab address, objects lost); how many slabs.

    One row for each slab of ``cache`` holding lost objects (:func:`lost_objects`), in address
    order; returns how many there are (rows beyond ``rows`` are not written)."""
    out = words_at(outaddr)
    flags = st.pg_flags
    cpt = st.cpu
    n = 0
    for pfn in range(st.npages):
        if not (flags[pfn] & PG_HEAD and flags[pfn] & PG_SLAB and st.sl_cache[pfn] == cache):
            continue
        lost = st.sl_lost[pfn]
        if flags[pfn] & PG_ISOLATED:
            lost = st.sl_objects[pfn] - _slab_held(st, cache, pfn)
        elif flags[pfn] & PG_FROZEN:
            for cpu in range(st.ncpus):
                c = _cpu_row(st, cache, cpu)
                if cpt[c + C_SLAB] == pfn:
                    lost += _cpu_freelist(st, cache, pfn, cpt[c + C_FREELIST])[1]
        if lost > 0:
            if n < rows:
                out[2 * n] = pfn << 12
                out[2 * n + 1] = lost
            n += 1
    return n


@jit
def _mark_chain(st, cache, slab, head, n, on):
    """Mark live (``on``) the free chain from ``head`` on ``slab``, or clear the marks.

    With ``on``: each once, up to a pointer off the slab's grid or to a live object; returns how
    many. Else clear the marks of its first ``n`` objects (the same walk, undone)."""
    mem = st.mem
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    size = _ca(st, cache, CA_SIZE)
    base = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
    end = base + st.sl_objects[slab] * size
    obj = head
    if not on:
        for _ in range(n):
            st.live[obj >> 9] &= ~(1 << ((obj >> 3) & 63))
            obj = _get_fp(mem, offset, key, obj)
        return n
    k = 0
    while base <= obj < end and (obj - base) % size == 0 and k < st.sl_objects[slab] and \
            not (st.live[obj >> 9] >> ((obj >> 3) & 63)) & 1:
        st.live[obj >> 9] |= 1 << ((obj >> 3) & 63)
        k += 1
        obj = _get_fp(mem, offset, key, obj)
    return k


@jit
def _cpu_freelist(st, cache, slab, head):
    """(free, lost) of a CPU's lockless freelist from ``head`` on its ``slab`` (6.18).

    The objects reached along it, each once, no pointer followed off the slab's grid, to a live
    object or into the slab's own free list (its remote frees; all marked live while the walk runs,
    so a stray write's cycle, or its pointer into that list, ends it), and the objects it lost: in
    use by the slab's count, neither reached nor held (live, waiting for ``kfree_rcu``, in a
    sheaf), behind a cut or skipped by a pointer a stray write made jump ahead, less those a flush
    recorded lost before (``sl_lost``: counted apart)."""
    own = _mark_chain(st, cache, slab, st.sl_freelist[slab], 0, True)
    k = _mark_chain(st, cache, slab, head, 0, True)
    _mark_chain(st, cache, slab, head, k, False)
    _mark_chain(st, cache, slab, st.sl_freelist[slab], own, False)
    # a list cut, or ending in NULL after a pointer a stray write made skip ahead: either
    # way the objects the slab counts in use that neither it reaches nor anyone holds
    return k, max(st.sl_inuse[slab] - k - _slab_held(st, cache, slab) - st.sl_lost[slab], 0)


@jit
def _slab_held(st, cache, slab):
    """Objects of ``slab`` someone holds: live, waiting for ``kfree_rcu``, or in another sheaf.

    Live, waiting for ``kfree_rcu`` (field ``rcu``: on the list or in an RCU sheaf) or in one of
    the cache's other sheaves."""
    size = _ca(st, cache, CA_SIZE)
    a = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
    n = 0
    for _ in range(st.sl_objects[slab]):
        n += ((st.live[a >> 9] | st.rcu[a >> 9]) >> ((a >> 3) & 63)) & 1
        a += size
    return n + _in_sheaves(st, cache, slab)


@jit
def _cut_lost(st, cache):
    """The objects of ``cache`` a repaired free list cut off: ``sl_lost`` of its slabs."""
    flags = st.pg_flags
    lost = 0
    for pfn in range(st.npages):
        if st.sl_lost[pfn] and flags[pfn] & PG_SLAB and st.sl_cache[pfn] == cache:
            lost += st.sl_lost[pfn]
    return lost


@jit
def _sheaf_on(st, sheaf, slab):
    """Objects of ``sheaf`` (0: none) that belong to ``slab``.

    Or to isolated slabs when ``slab`` is NIL."""
    if not sheaf:
        return 0
    mem = st.mem
    flags = st.pg_flags
    n = 0
    o = (sheaf >> 3) + SH_OBJECTS
    for k in range(min(mem[(sheaf >> 3) + SH_SIZE], (st.npages << 10) - o)):
        pfn = mem[o + k] >> 12
        if not 0 <= pfn < st.npages:        # (words set wrong: not followed)
            continue
        head = st.pg_head[pfn] if flags[pfn] & PG_TAIL else pfn
        if slab == NIL:
            n += (flags[head] & PG_ISOLATED) != 0
        else:
            n += head == slab
    return n


@jit
def _in_sheaves(st, cache, slab):
    """Objects of ``slab`` (NIL: every isolated slab) in ``cache``'s sheaves but the RCU ones.

    The RCU ones' objects carry the ``rcu`` mark. The sheaves are the CPUs' main (parked
    too: ``NO_SHEAF``'s size is -1) and spare, the barns' and the user's."""
    mem = st.mem
    cpt = st.cpu
    n = 0
    for cpu in range(st.ncpus):
        c = _cpu_row(st, cache, cpu)
        n += _sheaf_on(st, cpt[c + C_MAIN], slab) + _sheaf_on(st, cpt[c + C_SPARE], slab) \
            + _sheaf_on(st, cpt[c + C_PARKED], slab)    # (main, while this thread holds)
    nd = st.node
    for node in range(st.nnodes):
        r = _node_row(st, cache, node)
        for col in (N_BARN_FULL, N_BARN_EMPTY):
            sheaf = nd[r + col]
            while sheaf:
                n += _sheaf_on(st, sheaf, slab)
                sheaf = mem[(sheaf >> 3) + SH_NEXT]
        n += _sheaf_on(st, st.barn_partial[_node_index(st, cache, node)], slab)
    sheaf = _ca(st, cache, CA_USER_SHEAVES)
    while sheaf:
        n += _sheaf_on(st, sheaf, slab)
        sheaf = mem[(sheaf >> 3) + SH_NEXT]
    return n


@jit
def _isolated_leak(st, cache):
    """What the isolated slabs of ``cache`` count as in use but nobody holds.

    Their objects less the live ones, those waiting for ``kfree_rcu`` and those still in sheaves
    (they leaked with the free list)."""
    flags = st.pg_flags
    size = _ca(st, cache, CA_SIZE)
    leak = 0
    for pfn in range(st.npages):
        if flags[pfn] & PG_ISOLATED and flags[pfn] & PG_SLAB and st.sl_cache[pfn] == cache:
            base = (pfn << 12) + _ca(st, cache, CA_RED_LEFT)
            n = st.sl_objects[pfn]
            leak += n
            for i in range(n):
                a = base + i * size
                leak -= ((st.live[a >> 9] | st.rcu[a >> 9]) >> ((a >> 3) & 63)) & 1
    return leak - _in_sheaves(st, cache, NIL)


@unit
def partial_counts(st, cache, outaddr):
    """Per node, (inuse, free) summed over the node's partial slabs (``count_partial``). 0.

    ``out[2 * node: 2 * node + 2] = (inuse, free)``, ``out`` the int64[nnodes, 2] at
    ``outaddr``."""
    out = words_at(outaddr)
    nxt = st.pg_next
    inuse = st.sl_inuse
    objects = st.sl_objects
    for node in range(st.nnodes):
        used = 0
        free = 0
        slab = st.node[_node_row(st, cache, node) + N_PARTIAL_HEAD]
        k = 0
        while slab != NIL and k < st.npages:    # (a loop set by a stray write stops)
            k += 1
            used += inuse[slab]
            free += objects[slab] - inuse[slab]
            slab = nxt[slab]
        out[2 * node] = used
        out[2 * node + 1] = free
    return 0


@unit
def cpu_partial_slabs(st, cache, outaddr):
    """Per CPU, (has cpu slab, cpu partial slabs) into the int64[ncpus, 2] at ``outaddr``.

    The slabs on its cpu partial list as the head's ``slabs`` field says. 0."""
    out = words_at(outaddr)
    cpt = st.cpu
    for cpu in range(st.ncpus):
        c = _cpu_row(st, cache, cpu)
        out[2 * cpu] = 1 if cpt[c + C_SLAB] != NIL else 0
        head = cpt[c + C_PARTIAL]
        out[2 * cpu + 1] = st.sl_slabs[head] if head != NIL else 0
    return 0


def per_node(values: np.ndarray) -> str:
    """Format a per-node counter as sysfs does: ``"total N0=a N1=b"``.

    Parameters
    ----------
    values : numpy.ndarray
        int64[N]: the counter on each node.

    Returns
    -------
    str
        The total, then ``N<i>=<value>`` for each node whose value is not 0.
    """
    parts = [str(int(values.sum()))]
    parts += [f"N{i}={int(v)}" for i, v in enumerate(values) if v]
    return " ".join(parts)


SLABINFO_HEADER = (
    "slabinfo - version: 2.1\n"
    "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
    " : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs>"
    " <num_slabs> <sharedavail>\n")


def slabinfo_line(name: str, active_objs: int, num_objs: int, size: int, objperslab: int,
                  order: int, nr_slabs: int) -> str:
    """One ``/proc/slabinfo`` line, formatted as ``slabinfo_show`` does."""
    return (f"{name:<17s} {active_objs:6d} {num_objs:6d} {size:6d} {objperslab:4d} "
            f"{1 << order:4d} : tunables {0:4d} {0:4d} {0:4d} : slabdata {nr_slabs:6d} "
            f"{nr_slabs:6d} {0:6d}\n")


@unit
def partial_list(st, cache, node, rows, outaddr):
    """Fill the int64[rows, 3] at ``outaddr`` with (slab address, inuse, objects); the length.

    One row per slab along ``node``'s partial list, head first; returns the list length (rows
    beyond ``rows`` are not written)."""
    out = words_at(outaddr)
    nxt = st.pg_next
    slab = st.node[_node_row(st, cache, node) + N_PARTIAL_HEAD]
    k = 0
    while slab != NIL and k < st.npages:        # (a loop set by a stray write stops)
        if k < rows:
            out[3 * k] = slab << 12
            out[3 * k + 1] = st.sl_inuse[slab]
            out[3 * k + 2] = st.sl_objects[slab]
        k += 1
        slab = nxt[slab]
    return k
