"""The replay's compiled loops: a parsed trace's events through ``numslab.jit`` on one allocator.

A policy's compactions after frees are among them; every cache's slabs and live objects are
sampled.

Compiled once per process (module-level ``@njit``, cached); no per-event Python.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import jit as nj
from ..drivers.handles import state_of
from ..engine.layout import (C_MAIN, C_PARTIAL, C_RCU_FREE, C_SLAB, C_SPARE, CA_ACTIVE,
                             CA_NCOLS, CA_SHEAF_CAPACITY, G_RCU_HEAD, G_SLAB_GEN, N_BARN_EMPTY,
                             N_BARN_FULL, N_NCOLS, N_NR_PARTIAL, N_NR_SLABS, NIL, PG_TAIL,
                             SH_NEXT, SHEAF_HEADER, _cpu_row, _node_index, _node_row,
                             _rcu_next, _shadow)
from ..engine.leansheaves import flush_main_lean, refill_main_lean
from ..engine.sheaves import KMALLOC_CLASS
from ..engine.stats import live_objects
from ..flags import __GFP_NO_OBJ_EXT
from .compiled import lab_jit
from .parse import (EV_CACHE_FREE, EV_KFREE, EV_KMALLOC, EV_OTHER, ROW_FAILED, ROW_LARGE,
                    ROW_NULL, ROW_ZERO, ROW_ZERO_PTR)

#: ``replay_chunk``'s ``ratio`` when no work follows a free (-1: the cache's own ratio)
NO_TRIGGER = -2
#: gfp bit the replay leaves out (only the allocator's own sheaves are allocated with it)
NO_OBJ_EXT = __GFP_NO_OBJ_EXT

# ---- why an event is skipped (``counts`` slots) -----------------------------------------------
(K_REPLAYED, K_UNTRACED_ALLOC, K_NULL, K_ZERO_PTR, K_ZERO_ALLOC, K_FAILED, K_UNTRACED_FREE,
 K_LARGE_BYTES, K_OOM_AT, K_WORK, K_MOVED, K_SEEDED_FREE, K_NCOUNTS) = range(13)
#: skip reasons, by ``counts`` slot
SKIP_REASONS = {K_UNTRACED_ALLOC: "untraced_alloc", K_NULL: "null_free",
                K_ZERO_PTR: "zero_size_ptr_free", K_ZERO_ALLOC: "zero_size_alloc",
                K_FAILED: "failed_alloc"}


class Events(NamedTuple):
    """The columns of a parsed trace that :func:`replay_chunk` reads, one entry per event line.

    Views of a :class:`~numslab.lab.trace.Trace`'s own arrays (:meth:`of`), length ``n``.

    Attributes
    ----------
    kind : numpy.ndarray
        int8[n], ``EV_*``: allocations and frees are replayed, other lines skipped.
    cpu : numpy.ndarray
        int32[n], the traced CPU (-1: none; the replay runs on CPU ``cpu % ncpus``, 0 for none).
    row : numpy.ndarray
        int32[n], the cache row, or ``ROW_*``.
    pid : numpy.ndarray
        int32[n], the dense pointer id (-1: none).
    gfp : numpy.ndarray
        int32[n], the gfp bits (a ``gfp_t``: read as unsigned 32 bits).
    node : numpy.ndarray
        int32[n], the node asked for (-1: any; else node ``node % nnodes``).
    nbytes : numpy.ndarray
        int32[n], ``bytes_alloc`` (-1: absent): the size of a large kmalloc.
    """

    kind: np.ndarray
    cpu: np.ndarray
    row: np.ndarray
    pid: np.ndarray
    gfp: np.ndarray
    node: np.ndarray
    nbytes: np.ndarray

    @classmethod
    def of(cls, tr: Any) -> Events:
        """The columns of the trace ``tr`` the replay reads (no copies)."""
        return cls(tr.kind, tr.cpu, tr.row, tr.pid, tr.gfp, tr.node, tr.bytes_alloc)


class Pointers(NamedTuple):
    """The replay's live pointers, by dense pointer id (``npid``: the trace's and any seeded).

    Attributes
    ----------
    addr : numpy.ndarray
        int64[npid], the numslab address the pointer holds (0: not live).
    owner : numpy.ndarray
        int32[npid], the cache row of the object it holds last (``ROW_LARGE``: a large
        kmalloc); meaningful while ``addr`` is not 0.
    lbytes : numpy.ndarray
        int64[npid], the bytes of the large kmalloc it holds last (``owner == ROW_LARGE``).
    """

    addr: np.ndarray
    owner: np.ndarray
    lbytes: np.ndarray


@lab_jit(nogil=True)
def peak_live_bytes(kind, row, pid, sizes, nbytes, npid):
    """The replay's peak of live bytes, with the replay's rules; ``kind`` is the trace's ``EV_*``.

    ``sizes[row]`` per slab object, ``nbytes`` rounded up to pages per large kmalloc; the rules: a
    pointer allocated while live frees it first; frees of unknown pointers ignored."""
    live = np.zeros(npid, np.int64)
    cur = 0
    peak = 0
    for i in range(kind.shape[0]):
        k = kind[i]
        p = pid[i]
        r = row[i]
        if k <= EV_KMALLOC and r >= ROW_LARGE:
            b = sizes[r] if r >= 0 else (nbytes[i] + 4095) // 4096 * 4096
            cur += b - live[p]
            live[p] = b
            if cur > peak:
                peak = cur
        elif (k == EV_KFREE or k == EV_CACHE_FREE) and p >= 0:
            cur -= live[p]
            live[p] = 0
    return peak


@lab_jit(nogil=True)
def alloc_cpu_rows(kind, row, cpu, nrows, ncpus):
    """Which cache rows allocate on which of ``ncpus`` simulated CPUs; ``kind`` is ``EV_*``.

    uint8[nrows * ncpus], 1 at ``r * ncpus + c`` where an allocation of row ``r`` runs on CPU
    ``c`` (the event's ``max(cpu, 0) % ncpus``, as the replay runs it)."""
    seen = np.zeros(nrows * ncpus, np.uint8)
    for i in range(kind.shape[0]):
        r = row[i]
        if kind[i] <= EV_KMALLOC and r >= 0:
            seen[r * ncpus + max(cpu[i], 0) % ncpus] = 1
    return seen


@lab_jit(nogil=True)
def time_steps_back(kind, ts):
    """The first timed line (``kind`` at most ``EV_OTHER``) whose ``ts`` is below an earlier one's.

    Returns ``(i, before, n)``: its index (-1: none), the largest ``ts`` before it and how many
    timed lines do so; the running maximum as ``numpy.maximum.accumulate`` takes it (a NaN
    holds it at NaN, below which nothing is)."""
    first = -1
    before = 0.0
    n = 0
    top = 0.0
    started = False
    for i in range(kind.shape[0]):
        if kind[i] > EV_OTHER:
            continue
        t = ts[i]
        if not started:
            started = True
            top = t
            continue
        if t < top:
            if first < 0:
                first = i
                before = top
            n += 1
        elif top == top and (t != t or t > top):
            top = t
    return first, before, n


# ---- the peaks' table (``replay_chunk``'s ``peaks``): a row per numslab cache -------------
#: the objects users hold (the replay's allocations less its frees, a warm start's seeded ones
#: included; the allocator's own sheaf structs are not theirs) and the most; the slabs (all
#: nodes) as last counted and the most; the bytes one more object, or slab, of the cache adds
#: to the machine's figures (the trace's rows' sizes, a cache two rows share counted for each,
#: as the sampled series sum them); then ``PK_CHAIN`` on, the caches (rows of the trace)
#: counted again after each of its events besides its own, -1 after the last: the kmalloc
#: cache its sheaf structs come from (``_alloc_empty_sheaf``), that cache's own, and so on.
#: The last row is the machine's: live bytes now, the most; slab bytes now, the most; then
#: (``PK_GEN``) the engine's ``G_SLAB_GEN`` when the slabs were counted: while it stays, no
#: slab count moved, and the replay counts none again.
PK_LIVE, PK_PEAK_LIVE, PK_SLABS, PK_PEAK_SLABS, PK_BYTES, PK_SLAB_BYTES, PK_CHAIN = range(7)
PK_GEN = 4


def new_peaks(sa: Any, cids: np.ndarray, row_bytes: np.ndarray, row_slab_bytes: np.ndarray,
              live: np.ndarray) -> np.ndarray:
    """The peaks' table of allocator ``sa`` before the first event (``PK_*``), slabs counted.

    Parameters
    ----------
    sa : SlabAllocator
        The allocator replayed on.
    cids : numpy.ndarray
        int64[K], each cache row's numslab cache id.
    row_bytes, row_slab_bytes : numpy.ndarray
        int64[K], each row's object size and slab bytes.
    live : numpy.ndarray
        int64[K], each row's objects users hold now (a warm start's seeded ones).

    Returns
    -------
    numpy.ndarray
        int64[max_caches + 1, PK_CHAIN + M], a row per numslab cache and the machine's.
    """
    n = sa.state.ca.shape[0]
    ca = sa.state.ca
    cap = np.where(ca[:, CA_ACTIVE] != 0, ca[:, CA_SHEAF_CAPACITY], 0)
    home = np.full(n + 1, -1, np.int64)         # the kmalloc cache of each cache's sheaf
    size = SHEAF_HEADER + 8 * cap               # structs (_alloc_empty_sheaf; -1: none)
    ok = (cap > 0) & (size <= KMALLOC_CLASS[-1])
    home[:n][ok] = sa.state.kmalloc[np.searchsorted(KMALLOC_CLASS, size[ok])]
    rows = set(cids.tolist())
    chain = []
    for c in range(n):
        seen, x = [], int(home[c])
        while x >= 0 and x != c and x not in seen:
            seen.append(x)
            x = int(home[x])
        chain.append([x for x in seen if x in rows])
    pk = np.zeros((n + 1, PK_CHAIN + max([len(w) for w in chain] + [1])), np.int64)
    pk[:, PK_CHAIN:] = -1
    for c, w in enumerate(chain):
        pk[c, PK_CHAIN:PK_CHAIN + len(w)] = w
    np.add.at(pk[:, PK_BYTES], cids, row_bytes)
    np.add.at(pk[:, PK_SLAB_BYTES], cids, row_slab_bytes)
    pk[cids, PK_LIVE] = live
    pk[:, PK_PEAK_LIVE] = pk[:, PK_LIVE]
    pk[n, :2] = int((live * row_bytes).sum())
    recount_peaks(sa.handle, pk)
    return pk


@lab_jit()
def recount_peaks(h, pk):
    """Count every cache's slabs again into the peaks' table ``pk`` (``PK_*``), peaks included.

    After what the replay runs between events (a policy's work, a warm start's seeding)."""
    st = state_of(h)
    m = pk.shape[0] - 1
    for cache in range(st.max_caches):
        if st.ca[cache * CA_NCOLS + CA_ACTIVE]:
            s = 0
            for node in range(st.nnodes):
                s += st.node[_node_row(st, cache, node) + N_NR_SLABS]
            pk[m, 2] += (s - pk[cache, PK_SLABS]) * pk[cache, PK_SLAB_BYTES]
            pk[cache, PK_SLABS] = s
            pk[cache, PK_PEAK_SLABS] = max(pk[cache, PK_PEAK_SLABS], s)
    pk[m, 3] = max(pk[m, 3], pk[m, 2])
    pk[m, PK_GEN] = st.g[G_SLAB_GEN]


@lab_jit()        # holds the GIL: numslab.jit refuses nogil callers
def replay_chunk(h, start, stop, ev, ncpus, nnodes, cids, ptrs, counts, work, seed=None,
                 peaks=None):
    """Replay events ``start:stop`` of ``ev`` (:class:`Events`) on the allocator of handle ``h``.

    Each event as the trace holds it, on ``ncpus`` CPUs and ``nnodes`` nodes, its gfp without
    ``__GFP_NO_OBJ_EXT`` (the replay's caller is no sheaf). ``cids`` (int64[K]) maps a cache
    row to its numslab cache id; ``ptrs`` (:class:`Pointers`) holds each live pointer's numslab
    address, cache row and large kmalloc's bytes, kept here. ``ev`` and ``ptrs`` come as plain
    tuples of their fields (``tuple(Events.of(tr))``): called at every sample point, the kernel
    would otherwise have Numba's dispatcher type a named tuple in Python at each call (1.3 µs
    more a call than the separate arrays; a plain tuple is typed in C, 0.1 µs).

    ``work`` is None (no policy work in the loop: then it compiles to the bare replay) or
    a policy's tuple ``(mem, nlive, floor, per_slab, old, new, ratio, lean)``: ``nlive``
    (int64[max_caches]) the live objects of each numslab cache, kept here; when ``mem``
    (the arena's int64 words) is not empty, each object allocated gets its pointer id in
    its first word, the owner's back-reference a move reads (:func:`compact_remap`); with
    ``ratio`` above ``NO_TRIGGER`` (``every=free``: 0 shrinks, -1 is each cache's own
    ratio, 1..100) a free is followed by :func:`_free_trigger`, with ``floor`` and
    ``per_slab`` (int64[max_caches]) and the moves' room ``old``/``new`` (int64);
    ``counts[K_WORK]`` and ``counts[K_MOVED]`` count the compactions run and the objects
    moved; ``lean`` 1 (``leansheaves``) runs ``engine.leansheaves.refill_main_lean`` before an
    allocation that names no node and ``flush_main_lean`` before a free (:func:`_free`).
    ``counts`` (int64) has the ``K_*`` slots, then, if it is longer, one per cache row:
    the untraced frees of that row's objects (a large kmalloc's are in the total only).

    ``seed`` is None (a cold start: it compiles to the loop without it) or a warm start's
    ``(name, pool_of, lo, left, pids)`` (:mod:`numslab.lab.warm`): a free of a pointer the
    trace never allocated, whose event names cache row ``name[i]`` with a pool
    (``pool_of[name[i]] >= 0``) holding seeded objects (``left`` of them, at
    ``pids[lo:lo + left]``, shuffled), frees the last of them (pointer id ``pids[...]``,
    beyond the trace's) as a replayed free, counted in ``counts[K_SEEDED_FREE]``.

    ``peaks`` is None or the peaks' table (``PK_*``, :func:`new_peaks`), kept after every
    replayed event: the live counts at each, the slabs only when the engine's ``G_SLAB_GEN``
    moved (all of them counted again first if it moved before the chunk); the machine's row
    kept in registers and written back on return.
    Returns 0, or 1 when the arena ran out (``counts[K_OOM_AT]`` is the event).
    """
    kind, cpu, row, pid, gfp, node, nbytes = ev           # (by position: plain tuples)
    addr, owner, lbytes = ptrs
    if peaks is not None:
        stnode = state_of(h).node
        sg = state_of(h).g
        mc = peaks.shape[0] - 1                 # the machine's row
        width = peaks.shape[1]
        if sg[G_SLAB_GEN] != peaks[mc, PK_GEN]:     # slabs made or discarded between chunks
            recount_peaks(h, peaks)
        seen = peaks[mc, PK_GEN]
        lb, lbp, sb, sbp = peaks[mc, 0], peaks[mc, 1], peaks[mc, 2], peaks[mc, 3]
    for i in range(start, stop):
        o = kind[i]
        if o > EV_CACHE_FREE:
            continue
        touched = -1            # the peaks' bookkeeping after the event: the cache whose
        other = -1              # objects changed (by grow), one an untraced free gave back
        grow = 0
        r = row[i]
        c = cpu[i]
        if c < 0:
            c = 0
        elif c >= ncpus:
            c %= ncpus
        p = pid[i]
        if o <= EV_KMALLOC:
            if r == ROW_ZERO:
                counts[K_ZERO_ALLOC] += 1
                continue
            if r == ROW_FAILED:
                counts[K_FAILED] += 1
                continue
            if addr[p] != 0:                    # its free was never traced (bulk free)
                w = owner[p]                    # (in line: an inlined helper taking the
                if w == ROW_LARGE:              # arrays would count references per event)
                    nj.kfree(h, addr[p], c)
                    counts[K_LARGE_BYTES] -= lbytes[p]
                else:
                    _free(h, work, cids[w], addr[p], c)
                if work is not None:
                    _count_free(work, cids, owner[p])
                counts[K_UNTRACED_FREE] += 1
                if w >= 0 and K_NCOUNTS + w < len(counts):     # per cache row, if asked
                    counts[K_NCOUNTS + w] += 1
                if peaks is not None and w != ROW_LARGE:
                    other = cids[w]
                    peaks[other, PK_LIVE] -= 1
                    lb -= peaks[other, PK_BYTES]
            g = (np.int64(gfp[i]) & 0xFFFFFFFF) & ~NO_OBJ_EXT   # the column's int32 is a gfp_t
            nd = node[i]
            if r == ROW_LARGE:
                nb = np.int64(nbytes[i])
                a = nj.kmalloc(h, nb, c, g)
                lbytes[p] = nb
                counts[K_LARGE_BYTES] += nb
            elif nd >= 0:
                if nd >= nnodes:
                    nd %= nnodes
                a = nj.kmem_cache_alloc_node(h, cids[r], node=nd, cpu=c, gfp=g)
            else:
                if work is not None:
                    if work[7]:
                        refill_main_lean(state_of(h), cids[r], c, g)
                a = nj.kmem_cache_alloc(h, cids[r], c, g)
            if a == 0:
                addr[p] = 0
                counts[K_OOM_AT] = i
                if peaks is not None:
                    peaks[mc, 0], peaks[mc, 1], peaks[mc, 2], peaks[mc, 3] = lb, lbp, sb, sbp
                return 1
            if work is not None:
                _count_alloc(work, cids, r, a, p)
            addr[p] = a
            owner[p] = r
            counts[K_REPLAYED] += 1
            if r != ROW_LARGE:
                touched = cids[r]
                grow = 1
            elif other >= 0:
                touched = other
                other = -1
        else:
            if r == ROW_NULL:
                counts[K_NULL] += 1
                continue
            if r == ROW_ZERO_PTR:
                counts[K_ZERO_PTR] += 1
                continue
            if addr[p] == 0:
                if seed is None:
                    counts[K_UNTRACED_ALLOC] += 1
                    continue
                p = _seeded(seed, i)            # allocated before the trace: a seeded object
                if p < 0:
                    counts[K_UNTRACED_ALLOC] += 1
                    continue
                counts[K_SEEDED_FREE] += 1
            w = owner[p]                        # free the object p holds, on CPU c
            if w == ROW_LARGE:                  # a large kmalloc: kfree, bytes uncounted
                nj.kfree(h, addr[p], c)
                counts[K_LARGE_BYTES] -= lbytes[p]
            else:
                _free(h, work, cids[w], addr[p], c)
            addr[p] = 0
            counts[K_REPLAYED] += 1
            if work is not None:
                _count_free(work, cids, owner[p])
                _free_trigger(h, work, cids, owner[p], c, addr, counts)
            if w != ROW_LARGE:
                touched = cids[w]
                grow = -1
        if peaks is None:
            continue
        if touched >= 0:                            # (in line, as the frees above)
            if grow > 0:
                n = peaks[touched, PK_LIVE] + 1
                peaks[touched, PK_LIVE] = n
                if n > peaks[touched, PK_PEAK_LIVE]:
                    peaks[touched, PK_PEAK_LIVE] = n
                lb += peaks[touched, PK_BYTES]
                if lb > lbp:
                    lbp = lb
            elif grow < 0:
                peaks[touched, PK_LIVE] -= 1
                lb -= peaks[touched, PK_BYTES]
        if sg[G_SLAB_GEN] == seen:                  # no slab made or discarded: none to count
            continue
        seen = sg[G_SLAB_GEN]
        if touched < 0:                 # (no event that names no slab cache moves slabs:
            peaks[mc, 2], peaks[mc, 3] = sb, sbp    # every cache counted, all the same)
            recount_peaks(h, peaks)
            sb, sbp = peaks[mc, 2], peaks[mc, 3]
            continue
        y = touched                     # its slabs, and those of the caches its sheaf
        for _ in range(2):              # structs come from (then other's, if any)
            for j in range(PK_CHAIN - 1, width):
                x = y if j < PK_CHAIN else peaks[y, j]
                if x < 0:
                    break
                ns = 0
                for nd in range(nnodes):
                    ns += stnode[(x * nnodes + nd) * N_NCOLS + N_NR_SLABS]
                d = ns - peaks[x, PK_SLABS]
                if d:
                    peaks[x, PK_SLABS] = ns
                    sb += d * peaks[x, PK_SLAB_BYTES]
                    if ns > peaks[x, PK_PEAK_SLABS]:
                        peaks[x, PK_PEAK_SLABS] = ns
            y = other
            if y < 0:
                break
        if sb > sbp:
            sbp = sb
    if peaks is not None:
        peaks[mc, 0], peaks[mc, 1], peaks[mc, 2], peaks[mc, 3] = lb, lbp, sb, sbp
        peaks[mc, PK_GEN] = seen
    return 0


@lab_jit(inline=True)
def _seeded(seed, i):
    """The pointer id of the seeded object event ``i``'s untraced free takes, taken from its pool.

    ``seed`` as :func:`replay_chunk` takes it; -1 when the event names no cache (a ``kfree``), or
    one with no seeded object left."""
    name, pool_of, lo, left, pids = seed
    r = name[i]
    if r < 0 or pool_of[r] < 0:
        return -1
    q = pool_of[r]
    if left[q] == 0:
        return -1
    left[q] -= 1
    return pids[lo[q] + left[q]]


@lab_jit(inline=True)
def _free(h, work, cache, a, cpu):
    """Free the object at ``a`` of numslab cache ``cache`` on ``cpu``.

    By ``numslab.jit.kmem_cache_free``; under lean sheaves (``work[7]``), after
    ``engine.leansheaves.flush_main_lean``."""
    if work is not None:
        if work[7]:
            flush_main_lean(state_of(h), cache, cpu)
    nj.kmem_cache_free(h, cache, a, cpu)


@lab_jit(inline=True)
def _count_alloc(work, cids, r, a, p):
    """A policy's bookkeeping of an allocation of row ``r`` at ``a`` for pointer ``p``.

    The cache's live count and (when ``work``'s words of the arena are given) the owner's
    back-reference in the object's first word, as a movable object's owner is found."""
    if r != ROW_LARGE:
        work[1][cids[r]] += 1
        mem = work[0]
        if mem.shape[0]:
            mem[a >> 3] = p


@lab_jit(inline=True)
def _count_free(work, cids, w):
    """A policy's bookkeeping of a free of an object of row ``w``: the cache's live count."""
    if w != ROW_LARGE:
        work[1][cids[w]] -= 1


@lab_jit()
def compact_remap(h, cache, ratio, cpu, mem, addr, old, new):
    """Compact ``cache`` at ``ratio`` on ``cpu``, remapping owners; return the objects moved.

    Through ``numslab.jit``; ``ratio`` 0: shrink only. Each moved object's owner (the pointer id
    its first word holds) is pointed at its new address."""
    n = nj.kmem_cache_compact(h, cache, ratio, old, new, cpu)
    if n < 0:
        n = -1 - n
    for i in range(n):
        a = new[i]
        addr[mem[a >> 3]] = a
    return n


@lab_jit()
def excess_slabs(st, cache, live, per_slab):
    """Slabs of ``cache`` (all nodes) beyond the fewest that hold its ``live`` objects.

    At ``per_slab`` objects a slab: the slabs a compaction could free at best."""
    n = 0
    for node in range(st.nnodes):
        n += st.node[_node_row(st, cache, node) + N_NR_SLABS]
    return n - (live + per_slab - 1) // per_slab


@lab_jit()
def _free_trigger(h, work, cids, w, cpu, addr, counts):
    """After a free of an object of row ``w`` on ``cpu``, compact its cache if it has spare slabs.

    ``work`` as :func:`replay_chunk` takes it; nothing when its ratio is ``NO_TRIGGER`` or the
    object was a large kmalloc. The cache is compacted at the ratio when it holds more slabs than
    its live objects need (:func:`excess_slabs`) by one more than ``floor[cache]``, the fewest
    excess slabs seen since its last compaction (at first the excess that compaction left: slabs
    pinned by the allocator's own sheaves, a partial slab per node)."""
    mem, nlive, floor, per_slab, old, new, ratio, _ = work
    if ratio == NO_TRIGGER or w == ROW_LARGE:
        return
    cache = cids[w]
    st = state_of(h)
    e = excess_slabs(st, cache, nlive[cache], per_slab[cache])
    floor[cache] = min(floor[cache], e)
    if e > floor[cache]:
        counts[K_MOVED] += compact_remap(h, cache, ratio, cpu, mem, addr, old, new)
        counts[K_WORK] += 1
        floor[cache] = excess_slabs(st, cache, nlive[cache], per_slab[cache])


@lab_jit()
def _sheaf_owner(st, sheaf, sheaves):
    """Count the sheaf with handle ``sheaf`` for the cache whose slab holds its kmalloc object.

    Handle 0: none."""
    if sheaf:
        pfn = (sheaf - _shadow(st)) >> 12
        if st.pg_flags[pfn] & PG_TAIL:
            pfn = st.pg_head[pfn]
        sheaves[st.sl_cache[pfn]] += 1


@lab_jit()
def sample(h, cids, live, slabs, partial, cpu_slabs, sheaves):
    """Per cache row ``k`` (numslab id ``cids[k]``): live objects, slabs, partial and CPU slabs.

    The live objects users hold (the engine's exact count less the allocator's own sheaves,
    barns and random sequences), slabs, partial slabs (node lists) and CPU slabs (CPU slab and
    CPU partial slabs), into the int64[K] outputs; ``sheaves`` is int64[max_caches] scratch
    (the own structs)."""
    st = state_of(h)
    sheaves[:] = 0
    for cache in range(st.max_caches):
        if st.ca[cache * CA_NCOLS + CA_ACTIVE] == 0:
            continue
        for cpu in range(st.ncpus):
            r = _cpu_row(st, cache, cpu)
            _sheaf_owner(st, st.cpu[r + C_MAIN], sheaves)
            _sheaf_owner(st, st.cpu[r + C_SPARE], sheaves)
            _sheaf_owner(st, st.cpu[r + C_RCU_FREE], sheaves)
        for node in range(st.nnodes):
            r = _node_row(st, cache, node)
            for col in (N_BARN_FULL, N_BARN_EMPTY):
                sh = st.node[r + col]
                while sh:
                    _sheaf_owner(st, sh, sheaves)
                    sh = st.mem[(sh >> 3) + SH_NEXT]
            _sheaf_owner(st, st.barn_partial[_node_index(st, cache, node)], sheaves)
            barn = st.barn[_node_index(st, cache, node)]        # its struct node_barn
            if barn:
                _sheaf_owner(st, barn + _shadow(st), sheaves)
        if st.random_seq[cache]:                                # its s->random_seq
            _sheaf_owner(st, st.random_seq[cache] + _shadow(st), sheaves)
    sh = st.g[G_RCU_HEAD]                       # waiting for their grace period
    k = 0
    while sh:
        _sheaf_owner(st, sh, sheaves)
        k += 1
        sh = _rcu_next(st, sh, k)
    for k in range(cids.shape[0]):
        cache = cids[k]
        live[k] = live_objects(st, cache) - sheaves[cache]
        s = 0
        p = 0
        for node in range(st.nnodes):
            r = _node_row(st, cache, node)
            s += st.node[r + N_NR_SLABS]
            p += st.node[r + N_NR_PARTIAL]
        slabs[k] = s
        partial[k] = p
        u = 0
        for cpu in range(st.ncpus):
            r = _cpu_row(st, cache, cpu)
            if st.cpu[r + C_SLAB] != NIL:
                u += 1
            head = st.cpu[r + C_PARTIAL]
            if head != NIL:
                u += st.sl_slabs[head]
        cpu_slabs[k] = u
