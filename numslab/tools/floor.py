"""The floor of SLUB 7.0's bulk round: a fused prototype of ``kmem_cache_alloc_bulk`` plus
``kmem_cache_free_bulk`` on the benchmarks' default cache, to measure what the kernel's rules cost.

Issue 12 asks whether numslab's bulk figures inside ``@njit`` are bounded by its structure or
by the rules it follows. This module answers with a measured prototype, not a sum of parts: one
compiled round doing, in fused passes over a compact layout, exactly what 7.0 does in the
steady state of ``slab_bulk_test01`` on a 256-byte HWCACHE_ALIGN cache (order-0 slabs of 16
objects, sheaves of 28, ``min_partial`` 5, CONFIG_SLAB_FREELIST_HARDENED and _RANDOM):

* alloc: ``alloc_from_pcs_bulk`` takes the main sheaf (the bulk paths never make a spare or
  find a full barn sheaf here); ``refill_objects`` takes partial slabs as
  ``get_partial_node_bulk`` does, walks their free lists with every free pointer decoded and
  checked (inside the slab, on its grid, not live), gives what does not fit back
  (``__slab_free`` of the rest of the list), then carves new slabs (a whole slab with no free
  list, the rest of a part slab linked in its random sequence);
* free: the batch check (in the arena, a slab, aligned, live; the live bits cleared),
  ``free_to_pcs_bulk`` into the main sheaf, then detached runs to their slabs, each
  chained through encoded free pointers and spliced, or given back to the page pool whole
  when it empties a slab and the node keeps ``min_partial`` partial slabs.

What it leaves out, each in the floor's favour: the SLUB statistics counters, NUMA nodes, the
per-CPU page lists and buddy merging (a stack of free pages), sorted lists and isolation of a
corrupted slab (a corrupted pointer stops the round), and the lookahead of
``build_detached_freelist`` (runs are taken as they lie in the array, which is how
``refill_objects`` hands them out). State is one row of 8 words per slab (freelist, inuse, list
links, flags) and no array is passed to a compiled call (raw ``Words``), so no reference count
moves. ``numslab bench`` and ``asv_bench/benchmarks/bench_bulk.py`` time it as ``floor-7.0``
beside the jitted stack and numslab.
"""
from __future__ import annotations

from typing import Callable

import numba as nb
import numpy as np

from numslab.engine.native import words_at

#: The cache: object size, objects per order-0 slab, free-pointer offset (the middle of the
#: object, as the kernel puts it), sheaf capacity (``calculate_sheaf_capacity``), min_partial.
SIZE, OBJS, OFF, CAP, MINP = 256, 16, 128, 28, 5
#: The live bits of a whole slab in each of its 8 bitmap words (one bit per 8 bytes).
LIVEMASK = 1 | (1 << 32)
#: ``reciprocal_value(size)``: ``((off * RECIP) >> 32) * SIZE == off`` iff ``off`` is on the grid.
RECIP = ((1 << 32) + SIZE - 1) // SIZE
#: Columns of a slab's row in ``sd`` (int64, shape (pages * 8,)): first free object (0: none),
#: objects in use, next and previous slab on the partial list (NIL: none; the head's
#: previous is the tail), flags.
FREELIST, INUSE, NEXT, PREV, FLAGS = 0, 1, 2, 3, 4
F_SLAB, F_PARTIAL = 1, 2
NIL = -1
#: Words of ``g`` (int64, shape (8,)): partial list head, its length, objects in the main
#: sheaf, free pages on the pool stack, the free-pointer key, the random state.
HEAD, NRP, SS, PTOP, KEY, RND = 0, 1, 2, 3, 4, 5


@nb.njit(inline="always", cache=True)
def swab(x):
    """``swab64``: the bytes of ``x`` reversed (the hardened pointer's address term)."""
    x = ((x & 0x00FF00FF00FF00FF) << 8) | ((x >> 8) & 0x00FF00FF00FF00FF)
    x = ((x & 0x0000FFFF0000FFFF) << 16) | ((x >> 16) & 0x0000FFFF0000FFFF)
    return (x << 32) | ((x >> 32) & 0xFFFFFFFF)


@nb.njit(inline="always", cache=True)
def add_partial_tail(sd, g, s):
    """``add_partial(n, slab, DEACTIVATE_TO_TAIL)``."""
    h = g[HEAD]
    sd[s * 8 + FLAGS] |= F_PARTIAL
    if h == NIL:
        sd[s * 8 + NEXT] = NIL
        g[HEAD] = s
        sd[s * 8 + PREV] = s       # the head's previous is the tail
    else:
        t = sd[h * 8 + PREV]
        sd[t * 8 + NEXT] = s
        sd[s * 8 + PREV] = t
        sd[s * 8 + NEXT] = NIL
        sd[h * 8 + PREV] = s
    g[NRP] += 1


@nb.njit(inline="always", cache=True)
def remove_partial(sd, g, s):
    """``remove_partial``."""
    h = g[HEAD]
    nx = sd[s * 8 + NEXT]
    pv = sd[s * 8 + PREV]
    if s == h:
        g[HEAD] = nx
        if nx != NIL:
            sd[nx * 8 + PREV] = pv
    else:
        sd[pv * 8 + NEXT] = nx
        if nx != NIL:
            sd[nx * 8 + PREV] = pv
        else:
            sd[h * 8 + PREV] = pv
    sd[s * 8 + FLAGS] &= ~F_PARTIAL
    g[NRP] -= 1


@nb.njit(cache=True)
def alloc_bulk(a_sd, a_mem, a_live, a_g, a_sheaf, a_pool, a_rseq, n, a_out):
    """``kmem_cache_alloc_bulk`` of ``n`` objects into the words at ``a_out`` (every argument
    an address or an int): ``n``, -1 on a corrupted free pointer, -2 with no free page."""
    sd, mem, live, g = words_at(a_sd), words_at(a_mem), words_at(a_live), words_at(a_g)
    sheaf, pool, rseq, out = words_at(a_sheaf), words_at(a_pool), words_at(a_rseq), words_at(a_out)
    ss = g[SS]
    take = min(n, ss)
    for k in range(take):
        a = sheaf[ss - take + k]
        out[k] = a
        live[a >> 9] |= 1 << ((a >> 3) & 63)
    g[SS] = ss - take
    i = take
    if i == n:
        return n
    key = g[KEY]
    lo = n - i
    # get_partial_node_bulk
    total = 0
    taken = NIL
    s = g[HEAD]
    while s != NIL:
        nxs = sd[s * 8 + NEXT]
        free = OBJS - sd[s * 8 + INUSE]
        if total >= lo and total + free > lo:
            break
        remove_partial(sd, g, s)
        sd[s * 8 + NEXT] = taken
        taken = s
        total += free
        if total >= lo:
            break
        s = nxs
    while taken != NIL and i < n:
        s = taken
        taken = sd[s * 8 + NEXT]
        obj = sd[s * 8 + FREELIST]
        sd[s * 8 + FREELIST] = 0
        sd[s * 8 + INUSE] = OBJS
        base = s << 12
        while obj > 0 and i < n:
            out[i] = obj
            live[obj >> 9] |= 1 << ((obj >> 3) & 63)
            i += 1
            where = obj + OFF
            nxt = mem[where >> 3] ^ (key ^ swab(where))
            if nxt == 0:
                obj = 0
                break
            off = nxt - base
            if off < 0 or off >= OBJS * SIZE or ((off * RECIP) >> 32) * SIZE != off or \
                    (live[nxt >> 9] >> ((nxt >> 3) & 63)) & 1:
                return -1                           # corrupted (the prototype stops)
            obj = nxt
        if obj > 0:                                 # the rest back: __slab_free
            head = obj
            cnt = 0
            while obj > 0:
                cnt += 1
                where = obj + OFF
                nxt = mem[where >> 3] ^ (key ^ swab(where))
                if nxt != 0:
                    off = nxt - base
                    if off < 0 or off >= OBJS * SIZE or ((off * RECIP) >> 32) * SIZE != off or \
                            (live[nxt >> 9] >> ((nxt >> 3) & 63)) & 1 or cnt > OBJS:
                        return -1
                obj = nxt
            sd[s * 8 + FREELIST] = head
            sd[s * 8 + INUSE] -= cnt
            add_partial_tail(sd, g, s)
    while taken != NIL:                              # not reached: back to the list
        s = taken
        taken = sd[s * 8 + NEXT]
        add_partial_tail(sd, g, s)
    while i < n:                                     # new slabs
        top = g[PTOP]
        if top == 0:
            return -2
        g[PTOP] = top - 1
        s = pool[top - 1]
        sd[s * 8 + FLAGS] = F_SLAB
        base = s << 12
        g[RND] = (g[RND] * 6364136223846793005 + 1442695040888963407) & 0x7FFFFFFFFFFFFFFF
        pos = (g[RND] >> 33) % OBJS
        if n - i >= OBJS:                            # whole: no free list
            for j in range(OBJS - pos):
                out[i + j] = base + rseq[pos + j]
            for j in range(pos):
                out[i + OBJS - pos + j] = base + rseq[j]
            for w in range(base >> 9, (base >> 9) + 8):
                live[w] |= LIVEMASK
            sd[s * 8 + INUSE] = OBJS
            sd[s * 8 + FREELIST] = 0
            i += OBJS
        else:
            m = n - i
            for j in range(m):
                a = base + rseq[(pos + j) % OBJS]
                out[i + j] = a
                live[a >> 9] |= 1 << ((a >> 3) & 63)
            prev = 0
            for j in range(OBJS - 1, m - 1, -1):     # the rest linked, in order
                a = base + rseq[(pos + j) % OBJS]
                where = a + OFF
                mem[where >> 3] = prev ^ (key ^ swab(where))
                prev = a
            sd[s * 8 + FREELIST] = prev
            sd[s * 8 + INUSE] = m
            i = n
            add_partial_tail(sd, g, s)
    return n


@nb.njit(cache=True)
def free_bulk(a_sd, a_mem, a_live, a_g, a_sheaf, a_pool, n, a_p, limit):
    """``kmem_cache_free_bulk`` of the ``n`` objects at ``a_p`` (``limit``: the arena's end):
    0, or a positive number when an object is not a live object of the cache: 1 + its index
    if its page is not a slab's (or it lies outside the arena), else 1 (the round stops; the
    batch's live bits stay as the check left them: the prototype does not restore them).
    Each object's live bit is cleared by a read-modify-write of its word with the tests or-ed
    into one flag: a branch on the word (kept in a register while neighbours share it)
    mispredicts, as objects come in no order within a slab (8-22% of the round here)."""
    sd, mem, live, g = words_at(a_sd), words_at(a_mem), words_at(a_live), words_at(a_g)
    sheaf, pool, p = words_at(a_sheaf), words_at(a_pool), words_at(a_p)
    # the batch check: in the arena, a slab of this cache, aligned, live -> cleared
    bad = False
    cp = -1
    for k in range(n):
        a = p[k]
        pg = a >> 12
        if pg != cp:
            if a <= 0 or a >= limit or not sd[pg * 8 + FLAGS] & F_SLAB:
                return k + 1
            cp = pg
        w = a >> 9
        v = live[w]
        bit = 1 << ((a >> 3) & 63)
        bad |= ((a & 7) != 0) | ((v & bit) == 0)
        live[w] = v & ~bit
    if bad:
        return 1
    ss = g[SS]
    take = min(n, CAP - ss)
    for k in range(take):
        sheaf[ss + k] = p[k]
    g[SS] = ss + take
    key = g[KEY]
    size = n
    while size > take:                               # detached runs from the end
        last = p[size - 1]
        s = last >> 12
        lo = size - 1
        while lo > take and p[lo - 1] >> 12 == s:
            lo -= 1
        cnt = size - lo
        inuse = sd[s * 8 + INUSE]
        if inuse == cnt and g[NRP] >= MINP:          # empties: straight back to the pages
            if sd[s * 8 + FLAGS] & F_PARTIAL:
                remove_partial(sd, g, s)
            sd[s * 8 + FLAGS] = 0
            pool[g[PTOP]] = s
            g[PTOP] += 1
        else:
            prior = sd[s * 8 + FREELIST]
            obj = p[lo]
            for k in range(lo + 1, size):
                nxt = p[k]
                where = obj + OFF
                mem[where >> 3] = nxt ^ (key ^ swab(where))
                obj = nxt
            where = obj + OFF
            mem[where >> 3] = prior ^ (key ^ swab(where))
            sd[s * 8 + FREELIST] = p[lo]
            sd[s * 8 + INUSE] = inuse - cnt
            if prior == 0:
                add_partial_tail(sd, g, s)
        size = lo
    return 0


@nb.njit(cache=True)
def rounds_floor(sd, mem, live, g, sheaf, pool, rseq, bulk, rounds, out, limit):
    """``rounds`` times :func:`alloc_bulk` then :func:`free_bulk` of ``bulk`` objects (the
    arrays as :class:`FloorRound` holds them): 0, or -1/-2 when a round failed."""
    sd, mem, live, g = sd.ctypes.data, mem.ctypes.data, live.ctypes.data, g.ctypes.data
    sheaf, pool, rseq, out = sheaf.ctypes.data, pool.ctypes.data, rseq.ctypes.data, out.ctypes.data
    for _ in range(rounds):
        if alloc_bulk(sd, mem, live, g, sheaf, pool, rseq, bulk, out) != bulk:
            return -1
        if free_bulk(sd, mem, live, g, sheaf, pool, bulk, out, limit) != 0:
            return -2
    return 0


class FloorRound:
    """The prototype's state (a fresh cache in an arena of ``pages`` 4 KiB frames, frame 0
    reserved) and ``run(rounds)``: ``rounds`` times, allocate ``bulk`` objects into ``out``
    and free them."""

    def __init__(self, bulk: int, pages: int = 16384, seed: int = 1) -> None:
        self.bulk = bulk
        self.sd = np.zeros(pages * 8, np.int64)
        self.sd[NEXT::8] = NIL
        self.mem = np.zeros(pages * 512, np.int64)
        self.live = np.zeros(pages * 8, np.int64)
        self.g = np.zeros(8, np.int64)
        self.g[HEAD] = NIL
        rng = np.random.default_rng(seed)
        self.g[KEY] = int(rng.integers(1, 1 << 62))
        self.g[RND] = int(rng.integers(1, 1 << 62))
        self.sheaf = np.zeros(CAP, np.int64)
        self.pool = np.arange(pages - 1, 0, -1, dtype=np.int64)
        self.g[PTOP] = pages - 1
        self.rseq = (rng.permutation(OBJS) * SIZE).astype(np.int64)
        self.out = np.zeros(bulk, np.int64)
        self.limit = pages << 12

    def alloc(self) -> int:
        """One ``kmem_cache_alloc_bulk`` of ``bulk`` objects into ``out``: ``bulk``, or -1 (a
        corrupted free pointer) or -2 (no free page)."""
        return alloc_bulk(self.sd.ctypes.data, self.mem.ctypes.data, self.live.ctypes.data,
                          self.g.ctypes.data, self.sheaf.ctypes.data, self.pool.ctypes.data,
                          self.rseq.ctypes.data, self.bulk, self.out.ctypes.data)

    def free(self) -> int:
        """One ``kmem_cache_free_bulk`` of ``out``: 0, or 1 + the index of a bad object."""
        return free_bulk(self.sd.ctypes.data, self.mem.ctypes.data, self.live.ctypes.data,
                         self.g.ctypes.data, self.sheaf.ctypes.data, self.pool.ctypes.data,
                         self.bulk, self.out.ctypes.data, self.limit)

    def run(self, rounds: int) -> None:
        """``rounds`` alloc+free rounds in one compiled loop."""
        r = rounds_floor(self.sd, self.mem, self.live, self.g, self.sheaf, self.pool,
                         self.rseq, self.bulk, rounds, self.out, self.limit)
        if r:
            raise RuntimeError(f"floor round failed: {r}")


def make_floor_round(bulk: int) -> Callable[[int], None]:
    """``run(rounds)`` of a fresh :class:`FloorRound`, warmed up once (as ``make_round``)."""
    fr = FloorRound(bulk)
    fr.run(2)
    return fr.run
