"""Batches: bulk allocation and free, batch validation, and the seed's array modes.

``__kmem_cache_alloc_bulk``, the kernel's detached-freelist bulk free, batch validation, and the
seed's array modes (LOCAL, PARTIAL, NEW) from Lameter's 2015 RFC.

Object arrays reach units as byte addresses (``words_at`` makes them Words); ``p`` below is
always the Words of an int64 array of object addresses."""
from __future__ import annotations

from ..flags import (ALLOC_ARRAY_NEW, ALLOC_ARRAY_PARTIAL, ALLOC_FASTPATH, ALLOC_SLAB,
                     ALLOC_SLOWPATH, FREE_REMOVE_PARTIAL, FREE_SLAB, SLAB_KMALLOC)
from .live import _aux, _held_run, _live_clear, _live_set, _own_test, _to_cached
from .checks import E_ALLOCATORS, E_AT, E_DOUBLE_FREE, E_LARGE, E_TWICE, _locate, _twin
from .cpucache import _do_slab_free_chain, _hand_out_run, slab_alloc_slow
from .layout import (C_FREELIST, C_PARTIAL, C_SLAB, CA_FLAGS, CA_FP_KEY, CA_MIN_PARTIAL,
                     CA_OBJECTS, CA_OFFSET, CA_ORDER, CA_SIZE, KERNEL_7_0, N_NR_PARTIAL,
                     N_PARTIAL_HEAD, NIL,
                     PG_CPU_PARTIAL, PG_FROZEN, PG_ISOLATED, PG_LARGE, PG_NODE_PARTIAL,
                     PG_SLAB, PG_SORTED, PG_TAIL, _ca, _cpu_row, _head_frame, _node_row,
                     _slab_nid, _stat)
from .native import jit, unit, words_at
from .nocpu import refill_objects
from .pages import free_pages
from .freelist import _new_slab_objects, _set_fp
from .slablists import (_allocate_slab, _discard_slab, _fp_next, _isolate, _isolate_cpu_slab,
                        _remove_partial, _slab_free_fast)


# ---- allocation ------------------------------------------------------------------------------
@jit(inline=True)
def _alloc_bulk_slab(st, cache, cpu, gfp, nr, paddr):
    """``__kmem_cache_alloc_bulk``: fill the ``nr`` words at ``paddr`` with objects; ``nr`` or 0.

    Objects are popped from the CPU freelist, taking the slow path once whenever it runs dry. The
    objects come back marked allocated (live bits set: a refill marks what it pops, so a loop in a
    free list shows). Returns ``nr``, or 0 after giving back what it took. Under 7.0 (no CPU
    freelist): ``refill_objects`` for exactly ``nr`` (ALLOC_SLOWPATH += nr)."""
    if st.kernel >= KERNEL_7_0:
        got = refill_objects(st, cache, cpu, gfp, nr, nr, paddr, 1)     # marked live
        if got < nr:                    # out of memory: back to their slabs, unmarked
            p = words_at(paddr)
            for j in range(got):
                _live_clear(st, p[j])
            free_bulk_raw(st, cache, cpu, got, paddr)     # (the unit: a failure's path)
            return 0
        _stat(st, cache, cpu, ALLOC_SLOWPATH, nr)
        return nr
    p = words_at(paddr)
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    live = st.live
    fast = 0
    slab = cpt[c + C_SLAB]
    obj = cpt[c + C_FREELIST]       # the CPU freelist head, kept in a register meanwhile
    for i in range(nr):
        if obj == 0:
            cpt[c + C_FREELIST] = 0
            obj = slab_alloc_slow(st, cache, cpu, -1, gfp)
            if obj == 0:                           # out of memory, or a corrupted list
                return _alloc_bulk_fail(st, cache, cpu, i, paddr, fast)
            p[i] = obj
            live[obj >> 9] |= 1 << ((obj >> 3) & 63)
            obj = cpt[c + C_FREELIST]
            slab = cpt[c + C_SLAB]
            continue
        # checked pop: the head not live (a loop: popped objects are marked while the loop
        # runs), its pointer 0 or a free object of the CPU slab
        nxt = -1
        if not (live[obj >> 9] >> ((obj >> 3) & 63)) & 1:
            nxt = _fp_next(st, cache, slab, obj)
        if nxt < 0:
            _isolate_cpu_slab(st, cache, c, slab, obj)
            return _alloc_bulk_fail(st, cache, cpu, i, paddr, fast)
        live[obj >> 9] |= 1 << ((obj >> 3) & 63)
        p[i] = obj
        obj = nxt
        fast += 1
    _held_run(st, _aux(st, cache), p, 0, nr)   # off their slabs
    cpt[c + C_FREELIST] = obj
    _stat(st, cache, cpu, ALLOC_FASTPATH, fast)
    return nr


@jit
def _alloc_bulk_fail(st, cache, cpu, i, paddr, fast):
    """Give back the ``i`` objects a failed :func:`_alloc_bulk_slab` took (unmarked first); 0."""
    p = words_at(paddr)
    for j in range(i):
        _live_clear(st, p[j])
    _stat(st, cache, cpu, ALLOC_FASTPATH, fast)
    free_bulk_raw(st, cache, cpu, i, paddr)
    return 0


@unit
def alloc_bulk_slab(st, cache, cpu, gfp, nr, paddr):
    """:func:`_alloc_bulk_slab` for callers outside a bulk call (sheaf refills).

    The objects go into a sheaf, so they come back cached (not marked allocated)."""
    got = _alloc_bulk_slab(st, cache, cpu, gfp, nr, paddr)
    p = words_at(paddr)
    aux = _aux(st, cache)
    for i in range(got):
        _to_cached(st, p[i], aux)
    return got


# ---- freeing -----------------------------------------------------------------------------------
@jit(inline=True)
def _detach_run(st, cache, cpu, size, p):
    """``build_detached_freelist``'s scan (6.x): gather the slab of ``p[:size]``'s last object.

    Take the last object of ``p[:size]``, find every other object of its slab scanning down
    (stopping at the third object of another slab) and swap them to ``p[same:size]``, so that the
    kernel's chain (head first, the last element of the batch its tail) is exactly ``p[same:size]``
    in array order; no free pointer is written here (:func:`_free_run` writes the chain, or nothing
    at all).

    Returns (same, slab, owner cache); slab is NIL when the object was a large kmalloc, which
    is freed here (``kfree_bulk`` only, ``cache`` NIL).

    For a cache whose slabs are all order 0 an object's own frame is its slab, so the scan
    skips ``compound_head``'s load (the same answer, one dependent load fewer per object)."""
    size -= 1
    obj = p[size]
    slab = _head_frame(st, obj >> 12)
    if cache == NIL and not st.pg_flags[slab] & PG_SLAB:
        free_pages(st, cpu, slab, st.pg_order[slab])
        return size, NIL, NIL
    owner = st.sl_cache[slab] if cache == NIL else cache
    order0 = cache != NIL and _ca(st, cache, CA_ORDER) == 0
    lookahead = 3
    same = size
    if order0:                  # the run below the last object, four at a time: no swaps
        while size >= 4 and ((p[size - 1] >> 12) == slab) & ((p[size - 2] >> 12) == slab) \
                & ((p[size - 3] >> 12) == slab) & ((p[size - 4] >> 12) == slab):
            size -= 4
        while size and (p[size - 1] >> 12) == slab:
            size -= 1
        same = size
        # the common end: the three below are of other slabs, the lookahead's three
        # mismatches, so the scan below would stop there having moved nothing
        if size >= 3 and ((p[size - 2] >> 12) != slab) & ((p[size - 3] >> 12) != slab):
            return same, slab, owner
    while size:
        size -= 1
        obj = p[size]
        pfn = obj >> 12
        if (pfn if order0 else _head_frame(st, pfn)) == slab:
            same -= 1
            if size != same:
                p[size] = p[same]
                p[same] = obj
            continue
        lookahead -= 1
        if lookahead == 0:
            break
    return same, slab, owner


@jit(inline=True)
def _discards(st, cache, slab, cnt):
    """Whether ``__slab_free`` of ``cnt`` objects empties ``slab`` and discards it at once.

    It goes straight back to the page allocator under 7.0 (no CPU slab or partial list), when the
    node keeps ``min_partial`` partial slabs already and the slab is full or on its node list,
    neither isolated nor on a sorted list: then nobody reads the chain's free pointers."""
    if st.kernel < KERNEL_7_0 or st.sl_inuse[slab] != cnt:
        return False
    f = st.pg_flags[slab]
    if f & (PG_ISOLATED | PG_SORTED | PG_FROZEN | PG_CPU_PARTIAL):
        return False
    if st.sl_freelist[slab] != 0 and not f & PG_NODE_PARTIAL:
        return False
    r = _node_row(st, cache, _slab_nid(st, slab))
    return st.node[r + N_NR_PARTIAL] >= _ca(st, cache, CA_MIN_PARTIAL)


@jit(inline=True)
def _zero_slab_words(bitmap, w0, order):
    """Zero the bitmap words of a slab of ``order`` whose first word is ``w0``.

    An order-0 slab's eight words with a constant count: eight stores, not a memset call (2% of
    bulk 4096's samples)."""
    if order == 0:
        for j in range(8):
            bitmap[w0 + j] = 0
    else:
        for w in range(w0, w0 + (8 << order)):
            bitmap[w] = 0


@jit(inline=True)
def _free_run(st, cache, cpu, slab, p, lo, hi, clear):
    """``do_slab_free`` of the detached chain ``p[lo:hi]`` (all of ``slab``).

    If it empties a slab that goes back to the page allocator, ``__slab_free``'s discard (its
    counters, its list change) without writing the chain; else the chain is linked through the
    objects' free pointers in one pass and spliced (:func:`_do_slab_free_chain`). With ``clear``
    (a constant: the free of a checked record, ``pcsbulk._free_recorded``) the objects' live
    bits are cleared here too, in the linking loop, or for a discarded slab by zeroing its
    live words (every object it still counts is in the chain)."""
    cnt = hi - lo
    if _discards(st, cache, slab, cnt):
        # its objects all free: no live bit (a checked record's) and no held bit left (the
        # chain is not linked, so the loop below does not clear them); its order, as a slab of
        # the fallback order is smaller
        w0, order = slab << 3, st.pg_order[slab]
        if clear:
            _zero_slab_words(st.live, w0, order)
        if _aux(st, cache):
            _zero_slab_words(st.held, w0, order)
        if st.sl_freelist[slab] != 0:
            _remove_partial(st, cache, slab)
            _stat(st, cache, cpu, FREE_REMOVE_PARTIAL, 1)
        _stat(st, cache, cpu, FREE_SLAB, 1)
        _discard_slab(st, cache, cpu, slab)
        return
    mem = st.mem
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    # back on a slab: no longer held, each held bit cleared in the loop that links the chain
    # (a read-modify-write per object with no branch: a randomised free list gives the chain
    # in no order, so a branch on whether the next object shares the word mispredicts; a
    # cache without the held bitmap has a loop of its own: with a masked clear, a load and a
    # store an object for nothing, 6.18's default cache's bulk rounds were 4-20% slower)
    held = st.held
    obj = p[lo]
    if clear:                           # (a checked record's objects: live, held)
        live = st.live
        w, bit = obj >> 9, ~(1 << ((obj >> 3) & 63))
        live[w] &= bit
        held[w] &= bit
        for k in range(lo + 1, hi):
            nxt = p[k]
            _set_fp(mem, offset, key, obj, nxt)
            w, bit = nxt >> 9, ~(1 << ((nxt >> 3) & 63))
            live[w] &= bit
            held[w] &= bit
            obj = nxt
    elif _aux(st, cache):
        held[obj >> 9] &= ~(1 << ((obj >> 3) & 63))
        for k in range(lo + 1, hi):
            nxt = p[k]
            _set_fp(mem, offset, key, obj, nxt)
            held[nxt >> 9] &= ~(1 << ((nxt >> 3) & 63))
            obj = nxt
    else:                               # (no bitmap: 6.18's caches without sheaves, slab_debug's)
        for k in range(lo + 1, hi):
            nxt = p[k]
            _set_fp(mem, offset, key, obj, nxt)
            obj = nxt
    if st.kernel >= KERNEL_7_0 and _slab_free_fast(st, cache, cpu, slab, p[lo], obj, cnt, True):
        return                          # (the slab stays, even emptied: _discards said so)
    _do_slab_free_chain(st, cache, cpu, slab, p[lo], obj, cnt)


@jit(inline=True)
def _free_bulk_raw(st, cache, cpu, size, paddr, clear=False):
    """``__kmem_cache_free_bulk``: give the ``size`` objects at ``paddr`` back to their slabs. 0.

    One detached freelist at a time (no checks, no live-bit changes but with ``clear``, a
    constant: :func:`_free_run`'s; the array is permuted)."""
    p = words_at(paddr)
    while size:
        same, slab, owner = _detach_run(st, cache, cpu, size, p)
        if slab != NIL:
            _free_run(st, owner, cpu, slab, p, same, size, clear)
        size = same
    return 0


@unit
def free_bulk_raw(st, cache, cpu, size, paddr):
    """:func:`_free_bulk_raw` for callers outside a bulk call (sheaf flushes). 0."""
    return _free_bulk_raw(st, cache, cpu, size, paddr)


@jit
def free_bulk_raw_cleared(st, cache, cpu, size, paddr):
    """:func:`_free_bulk_raw` of a checked record's objects, their live bits cleared on the way.

    One cache's objects on one node (``pcsbulk._free_recorded``). 0."""
    return _free_bulk_raw(st, cache, cpu, size, paddr, True)


@jit(inline=True)
def _check_objects(st, cache, nr, p):
    """:func:`_check_runs`, specialised for kmalloc caches or not.

    Only kmalloc caches can hold the allocator's own sheaves, so only their batches pay for that
    test (inlined with a constant, LLVM drops it from the loop of every other cache)."""
    if _ca(st, cache, CA_FLAGS) & SLAB_KMALLOC:
        return _check_runs(st, cache, nr, p, True)
    return _check_runs(st, cache, nr, p, False)


@jit(inline=True)
def _check_runs(st, cache, nr, p, kmalloc):
    """-1 if ``p[:nr]`` are distinct live objects of ``cache`` (not NIL), now marked free.

    Else the index of the first that is not, with the ones before it not yet given back.

    Objects of one batch mostly come in runs on one page, so the outer loop looks a page up
    once and an inner loop takes the run: per object, one load of the address, a page
    compare, and a read-modify-write of its live-bitmap word that clears its bit. The tests
    (alignment, live bit and, in kmalloc caches, the allocator's own mark on the granule after
    a sheaf's start, through ``ownm``) are or-ed into a flag, with no branch: objects come in
    no order within a slab, so a branch on them, or on whether the next object shares the
    word, is mispredicted often. A run that fails gets the page's 8 bitmap words back (read
    before it: objects starting on a page have their bits there) and
    :func:`_check_run_exact` then finds the first bad object. As for a single free
    (``checks._slab_of``), the live bit decides: it is set only at the start of an object
    handed out, so an 8-byte aligned address of this cache's slab with its bit set is on the
    object grid and inside the slab."""
    flags = st.pg_flags
    heads = st.pg_head
    owners = st.sl_cache
    live = st.live
    size = _ca(st, cache, CA_SIZE)
    ownm = -(size >= 16) if kmalloc else 0      # the allocator's own: second granule's bit
    limit = st.npages << 12
    i = 0
    while i < nr:
        a = p[i]
        if a <= 0 or a >= limit:
            break
        pfn = a >> 12
        head = pfn
        f = flags[pfn]
        if f & PG_TAIL:
            head = heads[pfn]
            f = flags[head]
        if not f & PG_SLAB or owners[head] != cache:
            break
        bw = pfn << 3                   # the page's bitmap words, kept to undo a bad run
        s0, s1, s2, s3 = live[bw], live[bw + 1], live[bw + 2], live[bw + 3]
        s4, s5, s6, s7 = live[bw + 4], live[bw + 5], live[bw + 6], live[bw + 7]
        start = i
        bad = False
        while True:                     # the run of objects on page pfn, from p[i] == a
            w = a >> 9
            v = live[w]
            bit = 1 << ((a >> 3) & 63)
            bad |= ((a & 7) != 0) | ((v & bit) == 0) | ((v & (bit << 1) & ownm) != 0)
            live[w] = v & ~bit
            i += 1
            if i >= nr:
                break
            a = p[i]
            if a >> 12 != pfn:
                break
        if bad:
            live[bw], live[bw + 1], live[bw + 2], live[bw + 3] = s0, s1, s2, s3
            live[bw + 4], live[bw + 5], live[bw + 6], live[bw + 7] = s4, s5, s6, s7
            return _check_run_exact(st, p, start, i, ownm)
    return -1 if i >= nr else i


@jit
def _check_run_exact(st, p, start, end, ownm):
    """The run ``p[start:end]`` (one page of a slab of the cache) holds a bad object.

    Clear the live bits of the objects before the first bad one, one at a time, and return its
    index."""
    live = st.live
    for i in range(start, end):
        a = p[i]
        w = a >> 9
        bit = 1 << ((a >> 3) & 63)
        v = live[w]
        if ((a & 7) != 0) | ((v & bit) == 0) | ((v & (bit << 1) & ownm) != 0):
            return i
        live[w] = v & ~bit
    return end                          # pragma: no cover - the run had a bad object


@jit
def _batch_fail(st, cache, i, p):
    """Element ``i`` of ``p`` failed the batch check: restore ``p[:i]``, return code and ``i``.

    Give ``p[:i]`` their live bits back, then find its error code on the state as it was before the
    call (``E_TWICE`` when it passes on its own: an earlier element names the same object, whose
    check cleared the bit) and return the code with ``i`` (``err - i * E_AT``)."""
    for j in range(i):
        _live_set(st, p[j])
    err, _ = _locate(st, p[i], cache)
    if err == 0:
        err = E_TWICE if _twin(p, i) >= 0 else E_DOUBLE_FREE
    return err - i * E_AT


@jit(inline=True)
def _locate_any(st, a):
    """``kfree_bulk``'s view of ``a``: :func:`checks._locate`'s code for any cache.

    An oversize sheaf of the allocator (a large block with its mark) is ``E_ALLOCATORS``."""
    err, _ = _locate(st, a, NIL)
    if err == E_LARGE and _own_test(st, a, 16):
        err = E_ALLOCATORS
    return err


@jit
def _check_batch_any(st, nr, p):
    """The batch check of ``kfree_bulk``: take back ``p[:nr]``, or return the first bad one's code.

    ``p[:nr]`` are distinct live objects of any cache, or large kmalloc blocks; take them back
    (live bits cleared, per-CPU live counts fixed by the caller). On the first bad element restore
    everything and return its error code, found on the state as it was before the call, with its
    index (``err - i * E_AT``; ``E_TWICE`` when it passes on its own: an earlier element names the
    same object or block, which its check took back); else 0."""
    flags = st.pg_flags
    for i in range(nr):
        a = p[i]
        err = _locate_any(st, a)
        if err == E_LARGE:
            flags[a >> 12] &= ~PG_LARGE                 # a duplicate will now look freed
            continue
        if err:
            for j in range(i):                      # undo: nothing in the batch is freed
                pf = _head_frame(st, p[j] >> 12)
                if flags[pf] & PG_SLAB:
                    _live_set(st, p[j])
                else:
                    flags[pf] |= PG_LARGE
            # diagnosed again as it was: an address inside a large block an earlier element
            # took read as "not on a slab page" on the half-changed state
            err = _locate_any(st, a)
            if err == 0 or err == E_LARGE:
                err = E_TWICE if _twin(p, i) >= 0 else E_DOUBLE_FREE
            return err - i * E_AT
        _live_clear(st, a)
    return 0


@jit(inline=True)
def _check_batch(st, cache, nr, paddr):
    """Check the ``nr`` objects at ``paddr`` and take them back; 0 or an error code with its index.

    They must be distinct live objects of ``cache`` (NIL: of any cache, or large kmalloc blocks);
    taken back, their live bits are cleared (the caller fixes the live counts). On the first bad
    element restore everything and return its error code with its index (``err - i * E_AT``); else
    0."""
    p = words_at(paddr)
    if cache == NIL:
        return _check_batch_any(st, nr, p)
    bad = _check_objects(st, cache, nr, p)
    if bad >= 0:
        return _batch_fail(st, cache, bad, p)
    return 0


# ---- the seed's array modes ------------------------------------------------------------------
@jit
def _take_slab(st, cache, cpu, gfp, slab, p, at):
    """Hand out every free object of a partial ``slab`` into ``p[at:]``; how many.

    The slab is then full, on no list; its free list is walked."""
    free = st.sl_objects[slab] - st.sl_inuse[slab]
    obj = st.sl_freelist[slab]
    st.sl_freelist[slab] = 0
    st.sl_inuse[slab] = st.sl_objects[slab]
    n = 0
    while obj > 0 and n < free:
        p[at + n] = obj
        n += 1
        obj = _fp_next(st, cache, slab, obj)   # -1: corrupted, the slab isolated
    if obj != 0 or n < free:                   # a bad pointer, a loop or a list cut short:
        if obj >= 0:                           # nothing from this slab
            _isolate(st, cache, slab, obj)
        return 0
    _hand_out_run(st, cache, cpu, gfp, p, at, n)
    return n


@unit
def alloc_partial_slabs(st, cache, cpu, gfp, nr, paddr):
    """SLAB_ARRAY_ALLOC_PARTIAL: take whole partial slabs into the words at ``paddr``; how many.

    First from the CPU partial list, then from the local node's, while each one's free objects fit
    in what is still wanted. Returns the objects allocated."""
    p = words_at(paddr)
    cpt = st.cpu
    nxt = st.pg_next
    inuse = st.sl_inuse
    objects = st.sl_objects
    c = _cpu_row(st, cache, cpu)
    got = 0
    slab = cpt[c + C_PARTIAL]
    while slab != NIL and objects[slab] - inuse[slab] <= nr - got:
        cpt[c + C_PARTIAL] = nxt[slab]
        nxt[slab] = NIL
        st.pg_flags[slab] &= ~PG_CPU_PARTIAL
        got += _take_slab(st, cache, cpu, gfp, slab, p, got)
        slab = cpt[c + C_PARTIAL]
    nd = st.node
    r = _node_row(st, cache, st.cpu_node[cpu])
    slab = nd[r + N_PARTIAL_HEAD]
    while slab != NIL and objects[slab] - inuse[slab] <= nr - got:
        _remove_partial(st, cache, slab)
        got += _take_slab(st, cache, cpu, gfp, slab, p, got)
        slab = nd[r + N_PARTIAL_HEAD]
    _stat(st, cache, cpu, ALLOC_ARRAY_PARTIAL, got)
    return got


@unit
def alloc_new_slabs(st, cache, cpu, gfp, nr, paddr):
    """SLAB_ARRAY_ALLOC_NEW: carve whole fresh slabs straight into the words at ``paddr``.

    No free list is ever built; slabs are carved while a whole slab's worth is still wanted (so the
    count may come back short). Returns the objects allocated."""
    p = words_at(paddr)
    per = _ca(st, cache, CA_OBJECTS)
    node = st.cpu_node[cpu]
    got = 0
    while nr - got >= per:
        slab = _allocate_slab(st, cache, cpu, node, False)
        if slab == NIL:
            break
        objs = _new_slab_objects(st, cache, slab, p, got)   # in allocation order
        st.sl_inuse[slab] = objs
        _stat(st, cache, cpu, ALLOC_SLAB, 1)
        _hand_out_run(st, cache, cpu, gfp, p, got, objs)
        got += objs
    _stat(st, cache, cpu, ALLOC_ARRAY_NEW, got)
    return got

