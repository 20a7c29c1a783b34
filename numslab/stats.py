"""Statistics: the sysfs-style counters of ``/sys/kernel/slab/<cache>/``, the SLUB event
counters of ``CONFIG_SLUB_STATS`` and ``/proc/slabinfo`` version 2.1 text."""
from __future__ import annotations

import numpy as np

from ._jit import jit
from ._layout import (C_PARTIAL, C_SLAB, F_CPU, F_NODE, F_PG_NEXT, F_SL_INUSE, F_SL_OBJECTS,
                      F_SL_SLABS, G_NNODES, G_NCPUS, N_PARTIAL_HEAD, NIL, _g, _o)
from .slablists import _cpu_row, _node_row


@jit
def _partial_counts(state, cache, out):
    """Per node: ``out[node] = (inuse, free)`` summed over the node's partial slabs
    (``count_partial``). ``out`` is int64[nnodes, 2]."""
    nd = _o(state, F_NODE)
    nxt = _o(state, F_PG_NEXT)
    inuse = _o(state, F_SL_INUSE)
    objects = _o(state, F_SL_OBJECTS)
    for node in range(_g(state, G_NNODES)):
        out[node, 0] = 0
        out[node, 1] = 0
        slab = state[nd + _node_row(state, cache, node) + N_PARTIAL_HEAD]
        while slab != NIL:
            out[node, 0] += state[inuse + slab]
            out[node, 1] += state[objects + slab] - state[inuse + slab]
            slab = state[nxt + slab]


@jit
def _cpu_partial_slabs(state, cache, out):
    """Per CPU: ``out[cpu] = (has cpu slab, slabs on cpu partial list as the head's
    ``slabs`` field says)``. ``out`` is int64[ncpus, 2]."""
    cpt = _o(state, F_CPU)
    nslabs = _o(state, F_SL_SLABS)
    for cpu in range(_g(state, G_NCPUS)):
        c = _cpu_row(state, cache, cpu)
        out[cpu, 0] = 1 if state[cpt + c + C_SLAB] != NIL else 0
        head = state[cpt + c + C_PARTIAL]
        out[cpu, 1] = state[nslabs + head] if head != NIL else 0


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


@jit
def _partial_list(state, cache, node, out):
    """Fill ``out`` (int64[n, 3]) with (slab address, inuse, objects) along ``node``'s
    partial list, head first; returns the list length (rows beyond ``n`` are not written)."""
    nxt = _o(state, F_PG_NEXT)
    inuse = _o(state, F_SL_INUSE)
    objects = _o(state, F_SL_OBJECTS)
    slab = state[_o(state, F_NODE) + _node_row(state, cache, node) + N_PARTIAL_HEAD]
    k = 0
    while slab != NIL:
        if k < out.shape[0]:
            out[k, 0] = slab << 12
            out[k, 1] = state[inuse + slab]
            out[k, 2] = state[objects + slab]
        k += 1
        slab = state[nxt + slab]
    return k
