"""The floor of SLUB 7.0's bulk round.

A fused prototype of ``kmem_cache_alloc_bulk`` plus ``kmem_cache_free_bulk`` on the benchmarks'
default cache, to measure what the kernel's rules cost.

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
* free: the batch check (in the arena, a slab, on the grid, live, each object once), with
  nothing freed unless every object passes; then ``free_to_pcs_bulk`` into the main sheaf,
  and detached runs to their slabs, each chained through encoded free pointers and spliced,
  or given back to the page pool whole when it empties a slab and the node keeps
  ``min_partial`` partial slabs.

The live bits (the brief's double-free check, which the kernel does not make) use the cache's
own granule: one bit per ``1 << LSHIFT`` bytes of a page (the largest power of two dividing
the object stride, 256 here), in the first of the page's 8 bitmap words, so a slab's objects
share one word. The batch check takes the batch in runs of one slab, as the detached free
lists do: each run's objects are tested against a mask kept in a register (on the grid, not
twice) and the run's bits cleared in one store; a failed run puts back the bits the runs
before it cleared. (The first floor, until December 2026, used numslab's 8-byte granule, two
objects to a word, and a read-modify-write of the word per object: 3.4x the stack at 4096
where this layout takes 2.3-2.8x, and 4.3-4.6x against 3.3-3.8x at 64 and 250.)

The round's batch is recorded (December 7, 2026), as :mod:`numslab.tools.checkfloor`'s run: a
bulk allocation keeps its size, its sheaf part and, for its slab part, a copy of the objects and
each slab run's end and live mask (``g[RN:REC]``, ``rec``); an allocation taken whole from the
main sheaf writes no live bit (its objects stay in the sheaf's words above its size, the pending
run). A free whose batch is the recorded one in its order, the main sheaf taking exactly its
sheaf part, with nothing done in between, is checked by one vector compare (its objects are
then live objects of the cache, none twice): the sheaf part is freed by raising the sheaf's
size, the slab runs by the slab layer's work as before (detached free lists spliced, emptied
slabs back to the pages), each run's recorded live bits cleared in one store. Any other call
writes the pending bits first and drops the record (:func:`settle`); a batch not the record's
takes the per-object check (:func:`free_checked`), and if it is refused the bits written are
taken back and the record kept, every array as it was (``tests/test_floor.py`` runs random
sequences against a prototype settled before every call: same results and state). An
allocation with a slab part writes its sheaf part's bits at once, as the free-list walk's
check (a free pointer naming a live object) needs them.

A whole slab is carved from the random sequence kept twice (``rseq``, 2 * OBJS offsets), as
numslab keeps it: one copy loop from ``pos``, no wrap (the two loops of a wrapped copy cost
the round 14-16% at 250 and 18-30% at 4096).

Measured (December 7, 2026; ns a pair inside @njit at 16, 64, 250 and 4096, best of 7 samples
of 65,536 pairs): five ``numslab bench --where none --ratios`` runs 0.82-0.95, 2.72-2.79,
2.01-2.17, 1.39-1.55 (2.20-2.52x, 6.7-17.8x, 10.1-13.6x, 3.9-4.6x the jitted stack, at 0.37-0.40,
0.16-0.42, 0.15-0.20, 0.31-0.36 ns); from Python (the floor plus numslab's call cost) 1.02-1.19x
the best peer at 250, 2.95-3.63x the jitted stack and 8.9-10.7x faster than the deque at 4096.
Same processes, interleaved with the stack: the prototype before the record 2.28-2.43,
3.34-3.55, 3.09-3.11, 2.46-2.57 (five processes); with the record 0.74-0.75, 2.68-2.91,
2.27-2.33, 1.68-1.73 (the same five); with the sequence kept twice too 0.73-0.88, 2.71-2.90,
1.95-2.05, 1.16-1.41 (five more, against 0.74-0.90, 2.68-2.83, 2.29-2.38, 1.64-1.72 for the
record alone). At 16 against the stack's fast mode, eleven more processes 2.05-2.72x, once
3.98x (0.75 ns in most processes, 0.90-1.44 in others). At 16 the round is the sheaf alone;
from 64 on the slab layer's traffic (free pointers read and written, slabs carved and given
back) is most of it.

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

import numpy as np

from numslab.engine.native import words_at
from numslab.tools.toolsjit import tools_jit

#: The cache: object size, objects per order-0 slab, free-pointer offset (the middle of the
#: object, as the kernel puts it), sheaf capacity (``calculate_sheaf_capacity``), min_partial.
SIZE, OBJS, OFF, CAP, MINP = 256, 16, 128, 28, 5
#: The live granule: ``1 << LSHIFT`` bytes, the largest power of two dividing ``SIZE``. An
#: object at ``a`` has bit ``(a & 4095) >> LSHIFT`` of its page's first bitmap word,
#: ``live[(a >> 12) << 3]``; an offset in a slab is on the grid iff its low LSHIFT bits are 0.
LSHIFT = 8
#: The live bits of a whole slab.
LIVEMASK = (1 << OBJS) - 1
#: Columns of a slab's row in ``sd`` (int64, shape (pages * 8,)): first free object (0: none),
#: objects in use, next and previous slab on the partial list (NIL: none; the head's
#: previous is the tail), flags.
FREELIST, INUSE, NEXT, PREV, FLAGS = 0, 1, 2, 3, 4
F_SLAB, F_PARTIAL = 1, 2
NIL = -1
#: Words of ``g`` (int64, shape (16,)): partial list head, its length, objects in the main
#: sheaf, free pages on the pool stack, the free-pointer key, the random state; the record of
#: the last allocation while none of its objects was freed and nothing else was done (the
#: round's pending batch): its size (0: no record), how many of its objects came from the main
#: sheaf (the pending run, ``sheaf[ss:ss + RT]``), whether their live bits are written (1) or
#: pending (0), how many slab runs it recorded, and the address of ``rec`` (int64[>= 3n + 2]:
#: the batch's slab part at its own indices, then per slab run its end and live mask).
HEAD, NRP, SS, PTOP, KEY, RND = 0, 1, 2, 3, 4, 5
RN, RT, RMK, RNR, REC = 8, 9, 10, 11, 12


@tools_jit(inline="always")
def swab(x):
    """``swab64``: the bytes of ``x`` reversed (the hardened pointer's address term)."""
    x = ((x & 0x00FF00FF00FF00FF) << 8) | ((x >> 8) & 0x00FF00FF00FF00FF)
    x = ((x & 0x0000FFFF0000FFFF) << 16) | ((x >> 16) & 0x0000FFFF0000FFFF)
    return (x << 32) | ((x >> 32) & 0xFFFFFFFF)


@tools_jit(inline="always")
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


@tools_jit(inline="always")
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


@tools_jit(inline="always")
def mark_run(live, words, lo, hi, on):
    """Set (``on``) or clear the live bits of ``words[lo:hi]``'s objects, one store a page run."""
    cp = 0
    m = 0
    for k in range(lo, hi):
        a = words[k]
        pg = a >> 12
        if pg != cp:
            if on:
                live[cp << 3] |= m                   # (page 0 is reserved: m is 0 there)
            else:
                live[cp << 3] &= ~m
            cp = pg
            m = 0
        m |= 1 << ((a & 4095) >> LSHIFT)
    if on:
        live[cp << 3] |= m
    else:
        live[cp << 3] &= ~m


@tools_jit()
def alloc_bulk(a_sd, a_mem, a_live, a_g, a_sheaf, a_pool, a_rseq, n, a_out):
    """``kmem_cache_alloc_bulk`` of ``n`` objects into the words at ``a_out``: ``n``, -1 or -2.

    Every argument is an address or an int. -1 on a corrupted free pointer, -2 with no free
    page. A batch taken whole from the main sheaf writes no live bit (the pending run); one
    with a slab part marks the sheaf's objects first, as the free-list walk's checks need. A
    successful allocation records its batch (``g[RN:REC]``, ``rec``); a record left by the
    allocation before (its batch not freed) is dropped first, its pending bits written."""
    sd, mem, live, g = words_at(a_sd), words_at(a_mem), words_at(a_live), words_at(a_g)
    sheaf, pool, rseq, out = words_at(a_sheaf), words_at(a_pool), words_at(a_rseq), words_at(a_out)
    ss = g[SS]
    if g[RN] != 0:                                   # the last batch is live: its marks now
        if g[RMK] == 0:
            mark_run(live, sheaf, ss, ss + g[RT], True)
        g[RN] = 0
    take = min(n, ss)
    for k in range(take):                            # the sheaf's top
        out[k] = sheaf[ss - take + k]
    g[SS] = ss - take
    i = take
    if i == n:                                       # the pending run: no mark written
        g[RN] = n
        g[RT] = take
        g[RMK] = 0
        g[RNR] = 0
        return n
    mark_run(live, out, 0, take, True)
    rec = words_at(g[REC])
    rr = n                                           # the record's runs: rec[n + 2r], end, mask
    nr = 0
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
        lm = live[s << 3]
        seg = 0
        while obj > 0 and i < n:
            out[i] = obj
            rec[i] = obj
            bit = 1 << ((obj - base) >> LSHIFT)
            lm |= bit
            seg |= bit
            i += 1
            where = obj + OFF
            nxt = mem[where >> 3] ^ (key ^ swab(where))
            if nxt == 0:
                obj = 0
                break
            off = nxt - base
            if off < 0 or off >= OBJS * SIZE or off & (SIZE - 1) or (lm >> (off >> LSHIFT)) & 1:
                return -1                           # corrupted (the prototype stops)
            obj = nxt
        live[s << 3] = lm
        if seg:
            rec[rr + 2 * nr] = i
            rec[rr + 2 * nr + 1] = seg
            nr += 1
        if obj > 0:                                 # the rest back: __slab_free
            head = obj
            cnt = 0
            while obj > 0:
                cnt += 1
                where = obj + OFF
                nxt = mem[where >> 3] ^ (key ^ swab(where))
                if nxt != 0:
                    off = nxt - base
                    if off < 0 or off >= OBJS * SIZE or off & (SIZE - 1) or \
                            (lm >> (off >> LSHIFT)) & 1 or cnt > OBJS:
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
            for j in range(OBJS):                    # (the sequence twice: no wrap)
                a = base + rseq[pos + j]
                out[i + j] = a
                rec[i + j] = a
            live[s << 3] = LIVEMASK
            sd[s * 8 + INUSE] = OBJS
            sd[s * 8 + FREELIST] = 0
            i += OBJS
            rec[rr + 2 * nr] = i
            rec[rr + 2 * nr + 1] = LIVEMASK
            nr += 1
        else:
            m = n - i
            lm = 0
            for j in range(m):
                r = rseq[pos + j]
                out[i + j] = base + r
                rec[i + j] = base + r
                lm |= 1 << (r >> LSHIFT)
            live[s << 3] = lm
            prev = 0
            for j in range(OBJS - 1, m - 1, -1):     # the rest linked, in order
                a = base + rseq[pos + j]
                where = a + OFF
                mem[where >> 3] = prev ^ (key ^ swab(where))
                prev = a
            sd[s * 8 + FREELIST] = prev
            sd[s * 8 + INUSE] = m
            i = n
            rec[rr + 2 * nr] = i
            rec[rr + 2 * nr + 1] = lm
            nr += 1
            add_partial_tail(sd, g, s)
    g[RN] = n
    g[RT] = take
    g[RMK] = 1
    g[RNR] = nr
    return n


@tools_jit(inline="always")
def free_slab_run(sd, mem, g, pool, p, lo, size, key):
    """Free ``p[lo:size]``, the objects of one slab, to it.

    A detached free list spliced, or the slab back to the page pool when they empty it and the
    node keeps ``min_partial``."""
    s = p[size - 1] >> 12
    cnt = size - lo
    inuse = sd[s * 8 + INUSE]
    if inuse == cnt and g[NRP] >= MINP:              # empties: straight back to the pages
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


@tools_jit()
def free_checked(a_sd, a_mem, a_live, a_g, a_sheaf, a_pool, n, a_p, limit, a_runs):
    """:func:`free_bulk` of any batch, each object checked: 0, or 1 + a bad run's index.

    ``limit``: the arena's end; ``a_runs``: scratch of ``2 * n`` words. Else 1 + the index of the
    last object of the first run (from the end) that is not live objects of the cache, with nothing
    changed.

    The check goes through the batch once, from the end, in runs of one slab (the sheaf's
    part, ``p[:take]``, in runs of its own): per object a page compare, the grid test and a
    register mask that catches an object given twice in the run; per run one load of the
    slab's live word (every object live) and one store clearing the run's bits, so a later
    run of the same slab finds an object given twice. Branch-free within a run: objects come
    in no order within a slab. Then the commit takes the recorded runs."""
    sd, mem, live, g = words_at(a_sd), words_at(a_mem), words_at(a_live), words_at(a_g)
    sheaf, pool, p, runs = words_at(a_sheaf), words_at(a_pool), words_at(a_p), words_at(a_runs)
    ss = g[SS]
    take = min(n, CAP - ss)
    nr = 0
    size = n
    fail = 0
    while size > 0:                                  # the check: runs from the end
        last = p[size - 1]
        s = last >> 12
        if last <= 0 or last >= limit or not sd[s * 8 + FLAGS] & F_SLAB:
            fail = size
            break
        base = s << 12
        stop = take if size > take else 0
        mask = 0
        bad = False
        lo = size
        while lo > stop:
            off = p[lo - 1] - base
            if off >> 12 != 0:
                break
            bit = 1 << (off >> LSHIFT)
            bad |= ((off & (SIZE - 1)) != 0) | ((mask & bit) != 0)
            mask |= bit
            lo -= 1
        lm = live[s << 3]
        if bad or (mask & ~lm) != 0:
            fail = size
            break
        live[s << 3] = lm & ~mask
        runs[2 * nr] = size
        runs[2 * nr + 1] = mask
        nr += 1
        size = lo
    if fail:
        for r in range(nr):                          # the bits the check cleared, back
            live[(p[runs[2 * r] - 1] >> 12) << 3] |= runs[2 * r + 1]
        return fail
    for k in range(take):
        sheaf[ss + k] = p[k]
    g[SS] = ss + take
    key = g[KEY]
    for r in range(nr):                              # detached runs, from the end
        size = runs[2 * r]
        if size <= take:
            break
        lo = max(runs[2 * r + 2] if r + 1 < nr else 0, take)
        free_slab_run(sd, mem, g, pool, p, lo, size, key)
    return 0


@tools_jit()
def free_bulk(a_sd, a_mem, a_live, a_g, a_sheaf, a_pool, n, a_p, limit, a_runs):
    """``kmem_cache_free_bulk`` of the ``n`` objects at ``a_p``: 0, or 1 + a bad run's index.

    ``limit``: the arena's end; ``a_runs``: scratch of ``2 * n`` words. Else 1 + the index of the
    last object of the first run (from the end) that is not live objects of the cache, with nothing
    changed.

    The recorded batch (``g[RN]``: the last allocation's, nothing done since), given back in
    its order with the main sheaf taking exactly its sheaf part, is checked by one vector
    compare (the sheaf part with the sheaf's words above its size, the rest with ``rec``): its
    objects are live, none twice. Its sheaf part is freed by raising the sheaf's size (live bits
    cleared only if written), its slab runs as :func:`free_checked` frees them, the recorded
    live masks cleared. Any other batch writes the pending marks and goes to
    :func:`free_checked`; if refused, the marks are taken back and the record kept."""
    g = words_at(a_g)
    ss = g[SS]
    rn = g[RN]
    take = min(n, CAP - ss)
    if rn == n and g[RT] == take:
        sheaf, p, rec = words_at(a_sheaf), words_at(a_p), words_at(g[REC])
        d = 0
        for k in range(take):
            d |= p[k] ^ sheaf[ss + k]
        for k in range(take, n):
            d |= p[k] ^ rec[k]
        if d == 0:
            g[RN] = 0
            if g[RMK]:
                mark_run(words_at(a_live), p, 0, take, False)
            g[SS] = ss + take
            nr = g[RNR]
            if nr:
                sd, mem, live = words_at(a_sd), words_at(a_mem), words_at(a_live)
                pool = words_at(a_pool)
                key = g[KEY]
                for r in range(nr - 1, -1, -1):     # from the end, as the check's runs
                    size = rec[n + 2 * r]
                    lo = rec[n + 2 * r - 2] if r else take
                    s = p[size - 1] >> 12
                    live[s << 3] &= ~rec[n + 2 * r + 1]
                    free_slab_run(sd, mem, g, pool, p, lo, size, key)
            return 0
    mat = rn != 0 and g[RMK] == 0
    rt = g[RT]
    if mat:
        mark_run(words_at(a_live), words_at(a_sheaf), ss, ss + rt, True)
    g[RN] = 0
    r = free_checked(a_sd, a_mem, a_live, a_g, a_sheaf, a_pool, n, a_p, limit, a_runs)
    if r:
        if mat:
            mark_run(words_at(a_live), words_at(a_sheaf), ss, ss + rt, False)
        g[RN] = rn
    return r


@tools_jit()
def settle(a_live, a_g, a_sheaf):
    """Drop the record, its pending live bits written: what any other entry point does first.

    After it every live object's bit is set and the next free takes :func:`free_checked`."""
    g = words_at(a_g)
    if g[RN] != 0 and g[RMK] == 0:
        mark_run(words_at(a_live), words_at(a_sheaf), g[SS], g[SS] + g[RT], True)
    g[RN] = 0


@tools_jit(inline="always")
def addr(a):
    """The address of array ``a``'s data as an int64 (``ctypes.data`` is a ``uint64``)."""
    return np.int64(a.ctypes.data)


@tools_jit()
def rounds_floor(sd, mem, live, g, sheaf, pool, rseq, bulk, rounds, out, limit, runs):
    """``rounds`` times :func:`alloc_bulk` then :func:`free_bulk` of ``bulk`` objects: 0, -1 or -2.

    The arrays as :class:`FloorRound` holds them; -1/-2 when a round failed. The addresses go
    to the kernels as int64, as from Python and :func:`numslab.tools.bench.floor_round_at`:
    one compiled version of each (as ``uint64`` here they were compiled a second and third
    time, about 6 s of a cold start each)."""
    sd, mem, live, g = addr(sd), addr(mem), addr(live), addr(g)
    sheaf, pool, rseq, out = addr(sheaf), addr(pool), addr(rseq), addr(out)
    runs = addr(runs)
    for _ in range(rounds):
        if alloc_bulk(sd, mem, live, g, sheaf, pool, rseq, bulk, out) != bulk:
            return -1
        if free_bulk(sd, mem, live, g, sheaf, pool, bulk, out, limit, runs) != 0:
            return -2
    return 0


class FloorRound:
    """The prototype's state and ``run(rounds)``: allocate ``bulk`` objects and free them.

    A fresh cache in an arena of ``pages`` 4 KiB frames, frame 0 reserved; ``run(rounds)``
    ``rounds`` times allocates ``bulk`` objects into ``out`` and frees them."""

    def __init__(self, bulk: int, pages: int = 16384, seed: int = 1) -> None:
        self.bulk = bulk
        self.sd = np.zeros(pages * 8, np.int64)
        self.sd[NEXT::8] = NIL
        self.mem = np.zeros(pages * 512, np.int64)
        self.live = np.zeros(pages * 8, np.int64)
        self.g = np.zeros(16, np.int64)
        self.g[HEAD] = NIL
        rng = np.random.default_rng(seed)
        self.g[KEY] = int(rng.integers(1, 1 << 62))
        self.g[RND] = int(rng.integers(1, 1 << 62))
        self.sheaf = np.zeros(CAP, np.int64)
        self.pool = np.arange(pages - 1, 0, -1, dtype=np.int64)
        self.g[PTOP] = pages - 1
        seq = (rng.permutation(OBJS) * SIZE).astype(np.int64)
        self.rseq = np.concatenate([seq, seq])      # twice, as numslab keeps it: no wrap
        self.out = np.zeros(bulk, np.int64)
        self.runs = np.zeros(2 * bulk + 2, np.int64)
        self.rec = np.zeros(3 * bulk + 2, np.int64)
        self.g[REC] = self.rec.ctypes.data
        self.limit = pages << 12

    def alloc(self, n: int | None = None, out: np.ndarray | None = None) -> int:
        """One ``kmem_cache_alloc_bulk`` of ``n`` (default ``bulk``) objects into ``out``.

        ``out``: int64[>= n], default ``self.out``; ``n`` at most ``bulk``. ``n``, or -1 (a
        corrupted free pointer) or -2 (no free page)."""
        n, out = self._batch(n, out)
        return alloc_bulk(self.sd.ctypes.data, self.mem.ctypes.data, self.live.ctypes.data,
                          self.g.ctypes.data, self.sheaf.ctypes.data, self.pool.ctypes.data,
                          self.rseq.ctypes.data, n, out.ctypes.data)

    def free(self, n: int | None = None, objs: np.ndarray | None = None) -> int:
        """One ``kmem_cache_free_bulk`` of ``objs[:n]`` (default ``out``, ``bulk``).

        0, or 1 + the index of a bad object."""
        n, objs = self._batch(n, objs)
        return free_bulk(self.sd.ctypes.data, self.mem.ctypes.data, self.live.ctypes.data,
                         self.g.ctypes.data, self.sheaf.ctypes.data, self.pool.ctypes.data,
                         n, objs.ctypes.data, self.limit, self.runs.ctypes.data)

    def _batch(self, n: int | None, a: np.ndarray | None) -> tuple[int, np.ndarray]:
        """``n`` and the array, defaults filled in and checked (the scratch is for ``bulk``)."""
        n = self.bulk if n is None else int(n)
        a = self.out if a is None else a
        if not 1 <= n <= self.bulk or a.dtype != np.int64 or a.size < n or \
                not a.flags.c_contiguous:
            raise ValueError("a batch of 1..bulk objects in a contiguous int64 array")
        return n, a

    def settle(self) -> None:
        """:func:`settle`: the pending live bits written, the record dropped."""
        settle(self.live.ctypes.data, self.g.ctypes.data, self.sheaf.ctypes.data)

    def run(self, rounds: int) -> None:
        """``rounds`` alloc+free rounds in one compiled loop."""
        r = rounds_floor(self.sd, self.mem, self.live, self.g, self.sheaf, self.pool,
                         self.rseq, self.bulk, rounds, self.out, self.limit, self.runs)
        if r:
            raise RuntimeError(f"floor round failed: {r}")
