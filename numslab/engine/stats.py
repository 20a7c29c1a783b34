"""Statistics: the sysfs-style counters of ``/sys/kernel/slab/<cache>/``, the SLUB event
counters of ``CONFIG_SLUB_STATS`` and ``/proc/slabinfo`` version 2.1 text."""
from __future__ import annotations

import numpy as np

from .layout import (C_FREELIST, C_MAIN, C_PARTIAL, C_RCU_FREE, C_SLAB, C_SPARE, CA_FP_KEY,
                     CA_OFFSET, CA_SIZE, CA_RED_LEFT, SH_CACHE, CA_USER_SHEAVES, G_NISOLATED,
                     G_RCU_HEAD, N_BARN_EMPTY, N_BARN_FULL, N_PARTIAL_HEAD, N_TOTAL_OBJECTS,
                     NIL, PG_ISOLATED, PG_SLAB, PG_TAIL, SH_NEXT, SH_OBJECTS, SH_SIZE, _ca,
                     _cpu_row, _node_index, _node_row, _rcu_next)
from .native import jit, unit, words_at
from .slablists import _get_fp


@unit
def live_objects(st, cache):
    """Objects of ``cache`` handed out and not yet freed. As the kernel counts ``objects``
    (all objects less the free ones on partial slabs), less also what the CPUs hold: the
    free objects of their slabs and freelists and of every sheaf, those waiting for their
    grace period included (a slab with a free object is always on a partial list or a
    CPU's, so these are all of them)."""
    nd = st.node
    nxt = st.pg_next
    inuse = st.sl_inuse
    objects = st.sl_objects
    cpt = st.cpu
    mem = st.mem
    live = 0
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
    offset = _ca(st, cache, CA_OFFSET)
    for cpu in range(st.ncpus):
        c = _cpu_row(st, cache, cpu)
        slab = cpt[c + C_SLAB]
        if slab != NIL:
            live -= objects[slab] - inuse[slab]
            obj = cpt[c + C_FREELIST]       # counted without following a pointer that
            base = slab << 12               # leaves the slab, at most its objects, each
            end = base + objects[slab] * _ca(st, cache, CA_SIZE)    # once: marked live
            k = 0                           # while the walk runs (a stray write's cycle)
            while base <= obj < end and k < objects[slab] and \
                    not (st.live[obj >> 9] >> ((obj >> 3) & 63)) & 1:
                st.live[obj >> 9] |= 1 << ((obj >> 3) & 63)
                live -= 1
                k += 1
                obj = _get_fp(mem, offset, _ca(st, cache, CA_FP_KEY), obj)
            obj = cpt[c + C_FREELIST]
            for _ in range(k):
                st.live[obj >> 9] &= ~(1 << ((obj >> 3) & 63))
                obj = _get_fp(mem, offset, _ca(st, cache, CA_FP_KEY), obj)
        slab = cpt[c + C_PARTIAL]
        while slab != NIL:
            live -= objects[slab] - inuse[slab]
            slab = nxt[slab]
        for col in (C_MAIN, C_SPARE, C_RCU_FREE):
            if cpt[c + col]:
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
    return live


@jit
def _sheaf_isolated(st, sheaf):
    """Objects of ``sheaf`` (0: none) that belong to isolated slabs."""
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
        n += (flags[head] & PG_ISOLATED) != 0
    return n


@jit
def _isolated_leak(st, cache):
    """What the isolated slabs of ``cache`` count as in use but nobody holds: their objects
    less the live ones and less those still in sheaves (they leaked with the free list)."""
    flags = st.pg_flags
    mem = st.mem
    size = _ca(st, cache, CA_SIZE)
    leak = 0
    for pfn in range(st.npages):
        if flags[pfn] & PG_ISOLATED and flags[pfn] & PG_SLAB and st.sl_cache[pfn] == cache:
            base = (pfn << 12) + _ca(st, cache, CA_RED_LEFT)
            n = st.sl_objects[pfn]
            leak += n
            for i in range(n):
                a = base + i * size
                leak -= (st.live[a >> 9] >> ((a >> 3) & 63)) & 1
    cpt = st.cpu
    for cpu in range(st.ncpus):
        c = _cpu_row(st, cache, cpu)
        leak -= _sheaf_isolated(st, cpt[c + C_MAIN]) + _sheaf_isolated(st, cpt[c + C_SPARE])
        leak -= _sheaf_isolated(st, cpt[c + C_RCU_FREE])
    nd = st.node
    for node in range(st.nnodes):
        r = _node_row(st, cache, node)
        for col in (N_BARN_FULL, N_BARN_EMPTY):
            sheaf = nd[r + col]
            while sheaf:
                leak -= _sheaf_isolated(st, sheaf)
                sheaf = mem[(sheaf >> 3) + SH_NEXT]
        leak -= _sheaf_isolated(st, st.barn_partial[_node_index(st, cache, node)])
    sheaf = _ca(st, cache, CA_USER_SHEAVES)
    while sheaf:
        leak -= _sheaf_isolated(st, sheaf)
        sheaf = mem[(sheaf >> 3) + SH_NEXT]
    sheaf = st.g[G_RCU_HEAD]
    k = 0
    while sheaf:
        if mem[(sheaf >> 3) + SH_CACHE] == cache:
            leak -= _sheaf_isolated(st, sheaf)
        k += 1
        sheaf = _rcu_next(st, sheaf, k)
    return leak


@unit
def partial_counts(st, cache, outaddr):
    """Per node: ``out[2 * node: 2 * node + 2] = (inuse, free)`` summed over the node's
    partial slabs (``count_partial``), ``out`` the int64[nnodes, 2] at ``outaddr``. 0."""
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
    """Per CPU: ``(has cpu slab, slabs on cpu partial list as the head's ``slabs`` field
    says)`` into the int64[ncpus, 2] at ``outaddr``. 0."""
    out = words_at(outaddr)
    cpt = st.cpu
    for cpu in range(st.ncpus):
        c = _cpu_row(st, cache, cpu)
        out[2 * cpu] = 1 if cpt[c + C_SLAB] != NIL else 0
        head = cpt[c + C_PARTIAL]
        out[2 * cpu + 1] = st.sl_slabs[head] if head != NIL else 0
    return 0


def per_node(values: np.ndarray) -> str:
    """Format a per-node counter as sysfs does: ``"total N0=a N1=b"``."""
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
    """Fill the int64[rows, 3] at ``outaddr`` with (slab address, inuse, objects) along
    ``node``'s partial list, head first; returns the list length (rows beyond ``rows`` are
    not written)."""
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
