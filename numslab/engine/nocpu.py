"""The slab layer of Linux 7.0 and later (7.1, 7.3, ``next``), with no ``kmem_cache_cpu``.

Single objects straight from partial or new slabs (``___slab_alloc``) and ``refill_objects`` for
sheaf refills and bulk allocation. The single-object path also serves every generation's debug
caches, 6.18's too (``debug.slab_alloc_debug``), and the lab's lean sheaves.

Under 7.0 nothing is frozen and no CPU owns a slab: a slab is on its node's partial list (it
has free objects), or full and on no list, or taken off the list for the moment of a refill.
Objects taken here are not handed out: the caller does that. ``refill_objects`` marks live
those it takes from partial slabs while it walks (the mark refuses a pointer back to one),
and at the end either marks the rest too (a bulk allocation) or takes the marks off (a sheaf
refill).
"""
from __future__ import annotations

from ..flags import __GFP_RECLAIM, __GFP_THISNODE, ALLOC_SLAB, ALLOC_SLOWPATH
from .layout import (CA_CTOR, CA_DEBUG, CA_DEFRAG_RATIO, CA_FP_KEY, CA_MIN_PARTIAL,
                     CA_OBJECTS, CA_OFFSET, CA_ORDER, CA_RECIP, CA_RED_LEFT, CA_RSEQ,
                     CA_RSEQ_LEN, CA_SIZE, G_FRNG, G_SLAB_GEN, KERNEL_7_3, N_NR_PARTIAL,
                     N_NR_SLABS, N_PARTIAL_HEAD, N_TOTAL_OBJECTS, NIL, P_COUNT, P_FREE_FACTOR,
                     P_LISTS, PCP_MAX_ORDER, PG_HEAD, PG_SLAB, PG_SORTED, PG_TAIL, RSEQ_MAX, _ca,
                     _node_row, _rand, _stat, _xorshift_next)
from .live import (_aux, _grid_set_slab, _held_run, _live_set_run, _live_set_slab)
from .native import address, jit, unit, words_at
from .pages import _pcp_row, _unlink
from .partialorder import sorted_refile
from .freelist import _below, _fp_mask, _get_fp, _link_in_address_order, _new_slab_objects, _set_fp
from .slablists import (_add_partial, _add_partial_inline, _allocate_slab, _count_disagrees,
                        _fp_next, _isolate, _list_remove, _remove_partial, build_freelist,
                        discard_slab, new_slab, slab_free)


# ---- the node partial list, inline for the bulk paths' loops --------------------------------
@jit(inline=True)
def _remove_partial_inline(st, cache, slab):
    """:func:`_remove_partial` inline for the bulk paths' loops (a sorted slab: the call)."""
    if st.pg_flags[slab] & PG_SORTED:
        _remove_partial(st, cache, slab)
        return
    _list_remove(st, cache, slab)


# ---- one object -------------------------------------------------------------------------------
@jit
def _get_from_partial_node(st, cache, node):
    """``get_from_partial_node``: an object from ``node``'s first partial slab; 0 if none.

    The slab leaves the list when that was its last free object."""
    slab = st.node[_node_row(st, cache, node) + N_PARTIAL_HEAD]
    if slab == NIL:
        return 0
    obj = st.sl_freelist[slab]
    # a loop back to a live object, or to a held one (a sheaf's)
    if ((st.live[obj >> 9] | st.held[obj >> 9]) >> ((obj >> 3) & 63)) & 1:
        _isolate(st, cache, slab, obj)
        return 0
    nxt = _fp_next(st, cache, slab, obj)
    if nxt < 0:                     # corrupted: the slab is isolated, obj not handed out
        return 0
    if _count_disagrees(st, slab, nxt):     # the list ends before the slab's free objects
        _isolate(st, cache, slab, nxt)      # do, or goes on past them
        return 0
    st.sl_freelist[slab] = nxt
    st.sl_inuse[slab] += 1
    if nxt == 0:
        _remove_partial(st, cache, slab)
    elif st.pg_flags[slab] & PG_SORTED:         # a sorted list: to its new place
        sorted_refile(st, cache, slab)
    return obj


@jit
def _remote_allowed(st, cache):
    """The ``remote_node_defrag_ratio`` draw of ``get_from_any_partial``.

    A ratio of 0 never allows another node; 1000, sysfs's 100, almost always does."""
    ratio = _ca(st, cache, CA_DEFRAG_RATIO)
    return ratio != 0 and _rand(st) % 1024 <= ratio


@jit
def _get_from_partial(st, cache, cpu, node, thisnode):
    """``get_from_partial``: an object from the requested (or local) node, then others.

    The requested (or local) node's partial list, then, unless the request pins its node,
    ``get_from_any_partial``: nodes in distance order (the local one first) holding more than
    ``min_partial`` partial slabs. An object or 0."""
    local = st.cpu_node[cpu]
    obj = _get_from_partial_node(st, cache, local if node < 0 else node)
    if obj or (node >= 0 and thisnode):
        return obj
    if not _remote_allowed(st, cache):
        return 0
    nnodes = st.nnodes
    min_partial = _ca(st, cache, CA_MIN_PARTIAL)
    # the zonelist of the local node: with __GFP_THISNODE its NOFALLBACK list (that node alone)
    for i in range(1 if thisnode else nnodes):
        n = (local + i) % nnodes
        if st.node[_node_row(st, cache, n) + N_NR_PARTIAL] > min_partial:
            obj = _get_from_partial_node(st, cache, n)
            if obj:
                return obj
    return 0


@jit
def _alloc_from_new_slab(st, cache, slab, p, at, count):
    """``alloc_from_new_slab``: up to ``count`` objects of a new slab into ``p[at:]``.

    The slab goes to the head of its node's partial list if objects remain. How many."""
    mem = st.mem
    offset = _ca(st, cache, CA_OFFSET)
    needs_add_partial = st.sl_objects[slab] > count
    obj = st.sl_freelist[slab]
    got = 0
    while obj != 0 and got < count:
        p[at + got] = obj
        obj = _get_fp(mem, offset, _ca(st, cache, CA_FP_KEY), obj)
        got += 1
    st.sl_freelist[slab] = obj
    st.sl_inuse[slab] += got
    if needs_add_partial:
        _add_partial(st, cache, slab, False)
    return got


@unit
def slab_alloc_single(st, cache, cpu, node, gfp):
    """``___slab_alloc`` (7.0): one object from a partial slab, else from a new slab.

    With a preferred node (not pinned by __GFP_THISNODE) the node is tried alone first, then any.
    The object's address (not yet handed out), or 0 when memory is exhausted."""
    _stat(st, cache, cpu, ALLOC_SLOWPATH, 1)
    try_thisnode = True
    pinned_by_gfp = (gfp & __GFP_THISNODE) != 0
    page_node = node if node >= 0 else st.cpu_node[cpu]
    while True:
        thisnode = pinned_by_gfp or (node >= 0 and try_thisnode)
        obj = _get_from_partial(st, cache, cpu, node, thisnode)
        if obj:
            return obj
        slab = new_slab(st, cache, cpu, page_node, thisnode)
        if slab != NIL:
            _stat(st, cache, cpu, ALLOC_SLAB, 1)
            obj = st.sl_freelist[slab]              # alloc_from_new_slab of one object
            st.sl_freelist[slab] = _get_fp(st.mem, _ca(st, cache, CA_OFFSET),
                                           _ca(st, cache, CA_FP_KEY), obj)
            st.sl_inuse[slab] = 1
            if st.sl_objects[slab] > 1:
                _add_partial(st, cache, slab, False)
            return obj
        if node >= 0 and not pinned_by_gfp and try_thisnode:
            try_thisnode = False
            continue
        return 0


# ---- many objects -------------------------------------------------------------------------------
@jit(inline=True)
def _walk_geometry(st, cache, slab):
    """What a walk of ``slab``'s free list reads once: arena, bitmaps, geometry, first object.

    The arena, the live and RCU bitmaps, the cache's free-pointer offset and key, object stride and
    its reciprocal, and the slab's first object."""
    return (st.mem, st.live, st.rcu, _ca(st, cache, CA_OFFSET), _ca(st, cache, CA_FP_KEY),
            _ca(st, cache, CA_SIZE), _ca(st, cache, CA_RECIP),
            (slab << 12) + _ca(st, cache, CA_RED_LEFT))


@jit
def _walk_taken_any(st, cache, slab, obj, p, at, got, hi):
    """:func:`_walk_taken` for a geometry (or a head) not 8-byte aligned.

    No cache created or loaded has one: the free pointer read from its aligned word, the grid
    tested with the reciprocal, as :func:`_fp_next` does."""
    mem, live, rcu, offset, key, size, recip, base = _walk_geometry(st, cache, slab)
    limit = st.sl_objects[slab] * size
    held = st.held                      # a held object (a sheaf's) is no free one; each
    hm = -(_aux(st, cache) >> 1)        # taken is held (a cache that keeps the bitmap)
    live[obj >> 9] |= 1 << ((obj >> 3) & 63)
    held[obj >> 9] |= (1 << ((obj >> 3) & 63)) & hm
    while True:
        p[at + got] = obj
        got += 1
        where = obj + offset
        raw = mem[where >> 3]
        nxt = raw ^ _fp_mask(key, where)
        if nxt == 0:
            return got, 0
        off = nxt - base
        if not 0 <= off < limit:
            break
        w = nxt >> 9
        bit = 1 << ((nxt >> 3) & 63)
        v = live[w]
        h = held[w]
        if ((off * recip) >> 32) * size != off or nxt == obj or (v | rcu[w] | h) & bit:
            break
        obj = nxt
        if got >= hi:
            return got, obj
        live[w] = v | bit
        held[w] = h | (bit & hm)
    _isolate(st, cache, slab, raw)
    return got, -1


@jit(inline=True)
def _walk_taken(st, cache, slab, obj, p, at, got, hi):
    """The walk of a taken slab's free list from its head ``obj`` (> 0).

    Objects into ``p[at + got:]`` up to ``hi``, each marked live before its free pointer is
    followed (so a pointer back to one is refused), every pointer checked as :func:`_fp_next`
    checks it (-1: corrupted, the slab isolated). Returns (got, the object the walk stopped at: 0
    at the list's end, the next free one when ``hi`` is reached, or -1).

    The hop from an object to the next is the walk's critical path, so it is kept short: the
    cache's geometry is read once, the free pointer is loaded at its byte address (the head,
    the slab's first object, the size and the offset all 8-byte aligned, as every cache's
    are, every object the check accepts is too; else :func:`_walk_taken_any`), a cache whose
    reciprocal is exact (a power-of-two size) tests the grid with a mask, not two multiplies
    (the same answer), and the next object's mark is stored from the live word its check
    loaded."""
    mem, live, rcu, offset, key, size, recip, base = _walk_geometry(st, cache, slab)
    if (offset | size | base | obj) & 7:
        return _walk_taken_any(st, cache, slab, obj, p, at, got, hi)
    limit = st.sl_objects[slab] * size
    fpb = address(mem) + offset         # object a's free pointer: the word at fpb + a
    smask = size - 1
    exact = recip * size == 1 << 32     # then ((off * recip) >> 32) * size == off iff
    held = st.held                      # a held object (a sheaf's) is no free one; each
    hm = -(_aux(st, cache) >> 1)        # taken is held (a cache that keeps the bitmap)
    live[obj >> 9] |= 1 << ((obj >> 3) & 63)        # off & smask == 0
    held[obj >> 9] |= (1 << ((obj >> 3) & 63)) & hm
    while True:
        p[at + got] = obj
        got += 1
        raw = words_at(fpb + obj)[0]
        nxt = raw ^ _fp_mask(key, obj + offset)
        if nxt == 0:
            return got, 0
        off = nxt - base
        if not 0 <= off < limit:
            break
        if exact:
            if off & smask:
                break
        elif ((off * recip) >> 32) * size != off:
            break
        w = nxt >> 9
        bit = 1 << ((nxt >> 3) & 63)
        v = live[w]
        h = held[w]
        if nxt == obj or (v | rcu[w] | h) & bit:
            break
        obj = nxt
        if got >= hi:
            return got, obj
        live[w] = v | bit
        held[w] = h | (bit & hm)
    _isolate(st, cache, slab, raw)
    return got, -1


def _refill_node_rule(in_order: bool):
    """``__refill_objects_node`` before 7.3 (``in_order`` False) or from 7.3 (True).

    Made once each at import: ``in_order`` is a constant of the compiled code, so each variant is
    the loop of its rule alone and compiles only when used (a run-time test of the generation in
    the loop made the 7.0 default's bulk rounds 3-7% slower, and a shared body behind two wrappers
    cost its first ``kmalloc`` two more compiles). Each variant has a name of its own: Numba names
    a function's code by its qualified name and a per-process count, so two variants of one name
    compiled in two processes could get one symbol, and a unit loaded from the cache then called
    the other variant's code."""

    def refill_node(st, cache, cpu, p, at, lo, hi, node):
        """``__refill_objects_node``: objects of ``node``'s partial slabs into ``p[at:]``.

        Take partial slabs off ``node``'s list until their free objects reach ``lo`` (not passing
        ``hi`` once ``lo`` is reached: ``get_partial_node_bulk``), then empty their free lists into
        ``p[at:]`` up to ``hi`` objects, each marked live as it is taken (so that a free pointer
        naming one already taken, or one the caller took from a sheaf just before, is refused; a
        sheaf refill takes the marks off). Before 7.3: the last slab taken is drained first
        (``pc.slabs`` filled by ``list_add``), what a slab has beyond goes back to it
        (``__slab_free``: FREE_ADD_PARTIAL), slabs not reached go back to the head of the list (or
        to the page allocator if empty and the node keeps ``min_partial``). From 7.3: the slabs are
        drained in list order (``list_bulk_move_tail``), what a slab has beyond goes back with its
        slab to the tail of the list, uncounted (``__slab_try_return_freelist``), and slabs not
        reached to the tail too (``list_splice_tail``). Returns how many taken."""
        nd = st.node
        nxt = st.pg_next
        r = _node_row(st, cache, node)
        total = 0
        taken = NIL                         # pc.slabs: list_add, so the last taken comes first
        last = NIL                          # (7.3: appended, in list order)
        slab = nd[r + N_PARTIAL_HEAD]
        while slab != NIL:
            following = nxt[slab]
            free = st.sl_objects[slab] - st.sl_inuse[slab]
            if total >= lo and total + free > hi:
                break
            _remove_partial_inline(st, cache, slab)
            if not in_order:
                nxt[slab] = taken
                taken = slab
            elif last == NIL:
                nxt[slab] = NIL
                taken = last = slab
            else:
                nxt[slab] = NIL
                nxt[last] = slab
                last = slab
            total += free
            if total >= hi:
                break
            slab = following
        if total == 0:
            return 0
        got = 0
        while taken != NIL:
            slab = taken
            taken = nxt[slab]
            nxt[slab] = NIL
            free = st.sl_objects[slab] - st.sl_inuse[slab]
            obj = st.sl_freelist[slab]                     # get_freelist_nofreeze
            st.sl_freelist[slab] = 0
            st.sl_inuse[slab] = st.sl_objects[slab]
            start = got
            live = st.live
            if obj > 0:
                got, obj = _walk_taken(st, cache, slab, obj, p, at, got, hi)
            # The whole list is walked (what does not fit goes back), and a list longer than the
            # slab's free objects has a loop: then nothing of this slab is handed out.
            head = obj
            tail = obj
            cnt = 0
            while obj > 0 and got - start + cnt <= free:
                tail = obj
                cnt += 1
                obj = _fp_next(st, cache, slab, obj)
            if got - start + cnt > free or obj == 0 and got - start + cnt < free or obj < 0:
                for k in range(at + start, at + got):       # this slab gives none: unmarked
                    a = p[k]
                    live[a >> 9] &= ~(1 << ((a >> 3) & 63))
                    st.held[a >> 9] &= ~(1 << ((a >> 3) & 63))
                if obj >= 0:
                    _isolate(st, cache, slab, obj)         # a loop, or a list cut short
                got = start                                # (a bad pointer: isolated already)
            elif obj == 0 and cnt and in_order:            # more than fits: the rest stays
                st.sl_freelist[slab] = head                # the slab's, which goes to the tail
                st.sl_inuse[slab] -= cnt
                _add_partial(st, cache, slab, True)
            elif obj == 0 and cnt:                         # more than fits: back to the slab
                slab_free(st, cache, cpu, slab, head, tail, cnt)
            if got >= hi:
                break
        min_partial = _ca(st, cache, CA_MIN_PARTIAL)
        while taken != NIL:                                # slabs not reached
            slab = taken
            taken = nxt[slab]
            nxt[slab] = NIL
            if in_order:
                _add_partial(st, cache, slab, True)
            elif st.sl_inuse[slab] == 0 and nd[r + N_NR_PARTIAL] >= min_partial:
                discard_slab(st, cache, cpu, slab)
            else:
                _add_partial(st, cache, slab, False)
        return got
    name = "refill_node_in_order" if in_order else "refill_node"
    refill_node.__name__ = name
    refill_node.__qualname__ = f"_refill_node_rule.<locals>.{name}"
    return jit(refill_node)


_refill_objects_node = _refill_node_rule(False)
_refill_objects_node_in_order = _refill_node_rule(True)


@unit
def refill_node_in_order(st, cache, cpu, paddr, at, lo, hi, node):
    """The 7.3 variant of ``__refill_objects_node`` on the words at ``paddr``.

    A unit, compiled on a 7.3 machine's first bulk refill, never by the 7.0 default's."""
    return _refill_objects_node_in_order(st, cache, cpu, words_at(paddr), at, lo, hi, node)


@unit
def refill_objects(st, cache, cpu, gfp, lo, hi, paddr, mark):
    """``refill_objects``: at least ``lo`` and at most ``hi`` objects into the words at ``paddr``.

    The local node's partial slabs, then other nodes' (``__refill_objects_any``: the
    ``remote_node_defrag_ratio`` draw, nodes with more than ``min_partial`` partial slabs; under
    __GFP_THISNODE the local node alone), then new slabs on the local node (under __GFP_THISNODE no
    other). Before 7.3, no object at all (0) for a ``gfp`` with no reclaim bit (the kernel's
    ``WARN_ON_ONCE``: such requests never refill); 7.3 dropped the test (the callers'
    ``alloc_flags`` decide). Returns how many (fewer than ``lo`` only when memory is exhausted);
    the objects are not handed out. ``mark`` 1: all come back marked live (a bulk allocation's, so
    those of partial slabs keep the mark their walk set and those of new slabs get it as they are
    carved); 0: none does (a sheaf's refill: the walk's marks are taken off at the end)."""
    if st.kernel < KERNEL_7_3 and not gfp & __GFP_RECLAIM:     # WARN_ON_ONCE(!gfpflags_
        return 0                                                # allow_spinning(gfp))
    p = words_at(paddr)
    local = st.cpu_node[cpu]
    in_order = st.kernel >= KERNEL_7_3
    got = (refill_node_in_order(st, cache, cpu, paddr, 0, lo, hi, local) if in_order
           else _refill_objects_node(st, cache, cpu, p, 0, lo, hi, local))
    if got < lo and _remote_allowed(st, cache):
        nnodes = st.nnodes
        min_partial = _ca(st, cache, CA_MIN_PARTIAL)
        # __GFP_THISNODE: the local node's NOFALLBACK zonelist, that node alone
        for i in range(1 if gfp & __GFP_THISNODE else nnodes):
            n = (local + i) % nnodes
            if st.node[_node_row(st, cache, n) + N_NR_PARTIAL] <= min_partial:
                continue
            got += (refill_node_in_order(st, cache, cpu, paddr, got, lo - got, hi - got, n)
                    if in_order else
                    _refill_objects_node(st, cache, cpu, p, got, lo - got, hi - got, n))
            if got >= lo:
                break
    if not mark:                        # the walks' live marks off: into a sheaf, held (the
        live = st.live                  # walk marked them so)
        for k in range(got):
            a = p[k]
            live[a >> 9] &= ~(1 << ((a >> 3) & 63))
    if got < lo:                        # (new slabs' objects come held)
        got = refill_new_slabs(st, cache, cpu, lo, hi, paddr, got, mark,
                               (gfp & __GFP_THISNODE) != 0)
    return got


@unit
def refill_new_slabs(st, cache, cpu, lo, hi, paddr, got, mark, thisnode):
    """The end of ``refill_objects``: new slabs until the words at ``paddr`` hold ``lo`` objects.

    New slabs on the local node (only there if ``thisnode``, the request's __GFP_THISNODE; else
    preferred) until the words at ``paddr`` hold ``lo`` objects (at most ``hi``), from ``got``; a
    slab wholly taken is carved with no free list (``alloc_from_new_slab`` with ``count >=
    objects``). With ``mark`` the objects are marked live. The new count (below ``lo`` when memory
    is exhausted). A unit of its own, so that the partial-slab walk before it compiles alone; a
    whole slab's pages come inline on a pcp hit (``_allocate_slab``: no unit call per slab)."""
    p = words_at(paddr)
    local = st.cpu_node[cpu]
    objects = _ca(st, cache, CA_OBJECTS)
    nw = 8 << _ca(st, cache, CA_ORDER)
    live = st.live
    aux = _aux(st, cache)
    first = -1                  # the first whole slab's live words, copied to every later
    n = _ca(st, cache, CA_RSEQ_LEN)
    fast = mark and _ca(st, cache, CA_ORDER) <= PCP_MAX_ORDER and not _ca(st, cache, CA_CTOR) \
        and (n == 0 or objects < 2 or n == objects and 2 * n <= RSEQ_MAX)
    while got < lo:
        if fast and hi - got >= objects:
            got = carve_whole_slabs(st, cache, cpu, local, paddr, got, lo, hi)
            if got >= lo:
                break
        start = got
        if hi - got >= objects:
            # every object of the slab goes out: no free list is built only to be walked
            # (alloc_from_new_slab with count >= objects), in allocation order (random or not)
            slab = _allocate_slab(st, cache, cpu, local, thisnode)
            if slab == NIL:
                break
            _stat(st, cache, cpu, ALLOC_SLAB, 1)
            n = _new_slab_objects(st, cache, slab, p, got)
            st.sl_inuse[slab] = n
            got += n
            held = st.held              # every object off the slab: held, if aux (a whole
            if mark and n == objects:   # slab's held words are its live ones when marked;
                first = _mark_whole_slab(st, cache, slab, live, held, first, nw, aux)
            else:                       # a slab of the fallback order has fewer objects)
                if mark:
                    _live_set_slab(st, cache, slab)
                if aux:
                    _grid_set_slab(held, st, cache, slab)
        else:
            slab = _allocate_slab(st, cache, cpu, local, thisnode)     # new_slab: the
            if slab == NIL:                                             # pages, then the
                break                                                   # free list
            _stat(st, cache, cpu, ALLOC_SLAB, 1)
            n = _ca(st, cache, CA_RSEQ_LEN)
            if st.sl_objects[slab] == objects and objects >= 2 and \
                    not _ca(st, cache, CA_DEBUG) and (n == 0 or n == objects and
                                                      2 * n <= RSEQ_MAX):
                got += _new_slab_part(st, cache, slab, p, got, hi - got)
            else:
                build_freelist(st, cache, slab)
                got += _alloc_from_new_slab(st, cache, slab, p, got, hi - got)
            if mark:
                _live_set_run(st, p, start, got - start)
            _held_run(st, aux, p, start, got)
    return got


@unit
def carve_whole_slabs(st, cache, cpu, node, paddr, got, lo, hi):
    """Whole new slabs off the CPU's pcp list, marked, into the words at ``paddr``; the count.

    The objects go from ``p[got]`` on, and the count returned includes the ``got`` before.

    ``refill_new_slabs``' common case (a cache of a pcp order, no constructor, its objects in
    address order or in a random sequence stored twice, ``mark``), leaving the state each slab's
    ``_pcp_take``, ``_init_slab``, ``ALLOC_SLAB``, ``_new_slab_objects`` and marks leave: every
    array's address held in a register across the loop (each call of those re-reads them after
    every store), each page's row written once, the counters of the pcp row, ``G_SLAB_GEN``, the
    generator and the statistic summed and stored at the end. Stops below ``lo`` only when the
    pcp list is empty or fewer than a slab's objects fit (the caller's loop goes on). A unit of
    its own: inline, it made ``refill_new_slabs``, which a first ``kmalloc`` compiles, take
    a third longer to compile (2.65 to 3.55 s)."""
    p = words_at(paddr)
    first = -1                  # the first slab's live words, copied to every later one
    objects = _ca(st, cache, CA_OBJECTS)
    order = _ca(st, cache, CA_ORDER)
    nw = 8 << order
    rlen = _ca(st, cache, CA_RSEQ_LEN)
    seq = _ca(st, cache, CA_RSEQ)
    red = _ca(st, cache, CA_RED_LEFT)
    size = _ca(st, cache, CA_SIZE)
    aux = _aux(st, cache)
    pcp = st.pcp
    nxt = st.pg_next
    prv = st.pg_prev
    flags = st.pg_flags
    head = st.pg_head
    pord = st.pg_order
    sl_cache = st.sl_cache
    sl_objects = st.sl_objects
    sl_inuse = st.sl_inuse
    sl_freelist = st.sl_freelist
    sl_slabs = st.sl_slabs
    nd = st.node
    live = st.live
    held = st.held
    rseq = st.rseq
    g = st.g
    one = st.nnodes == 1
    ppn = st.pages_per_node
    r = _node_row(st, cache, 0)
    row = _pcp_row(st, cpu, node)
    h = row + P_LISTS + 2 * order
    frng = g[G_FRNG]
    took = 0
    pfn = pcp[h]
    while got < lo and hi - got >= objects and pfn != NIL:
        nx, pv = _unlink(nxt, prv, pcp, h, pfn)     # _pcp_del
        pord[pfn] = order               # _mark_allocated, _init_slab
        flags[pfn] = PG_HEAD | PG_SLAB
        head[pfn] = pfn
        for t in range(pfn + 1, pfn + (1 << order)):
            flags[t] = PG_TAIL
            head[t] = pfn
        sl_cache[pfn] = cache
        sl_objects[pfn] = objects
        sl_inuse[pfn] = objects         # (every object goes out)
        sl_freelist[pfn] = 0
        sl_slabs[pfn] = 0
        if not one:
            r = _node_row(st, cache, pfn // ppn)
        nd[r + N_NR_SLABS] += 1
        nd[r + N_TOTAL_OBJECTS] += objects
        base = (pfn << 12) + red
        if rlen == objects and objects >= 2:    # _new_slab_objects: from _below's position
            frng = _xorshift_next(frng)
            o = seq + (((frng >> 31) * rlen) >> 32)
            for j in range(objects):
                p[got + j] = base + rseq[o + j]
        else:
            for j in range(objects):
                p[got + j] = base + j * size
        first = _mark_whole_slab(st, cache, pfn, live, held, first, nw, aux)
        got += objects
        took += 1
        pfn = pcp[h] if pv != NIL else nx
    if took:
        pcp[row + P_FREE_FACTOR] >>= min(took, 63)
        pcp[row + P_COUNT] -= took << order
        g[G_SLAB_GEN] += took
        if rlen == objects and objects >= 2:
            g[G_FRNG] = frng
        _stat(st, cache, cpu, ALLOC_SLAB, took)
    return got


@jit(inline=True)
def _mark_whole_slab(st, cache, slab, live, held, first, nw, aux):
    """Mark every object of a new ``slab`` handed out: live, and held too with ``aux``.

    ``nw`` bitmap words a slab; ``first``, the words of a refill's first such slab (-1: this is
    it, its grid written), which every later one copies (both bitmaps from them in one pass, not
    the held words loaded back from the live just stored). Returns ``first``."""
    w0 = slab << 3
    if first < 0:
        for j in range(nw):
            live[w0 + j] = 0
        _grid_set_slab(live, st, cache, slab)
        if aux:
            for j in range(nw):
                held[w0 + j] = live[w0 + j]
        return w0
    if aux:
        for j in range(nw):
            v = live[first + j]
            live[w0 + j] = v
            held[w0 + j] = v
    else:
        for j in range(nw):
            live[w0 + j] = live[first + j]
    return first


@jit(inline=True)
def _new_slab_part(st, cache, slab, p, at, count):
    """``new_slab`` and ``alloc_from_new_slab`` of ``count`` objects of a new slab; ``count``.

    ``count`` is fewer than the slab holds; the slab, of ``s->oo``, comes from ``_allocate_slab``
    and its objects go out in address order or in the order of a random sequence stored twice: the
    free list ``new_slab`` would build, its every pointer written as it writes them, and its first
    ``count`` objects into ``p[at:]`` read from the order itself rather than by walking the
    pointers just written; the rest stays the slab's, which goes to the head of its node's partial
    list."""
    mem = st.mem
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    objects = st.sl_objects[slab]
    base = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
    if _ca(st, cache, CA_RSEQ_LEN):
        rseq = st.rseq
        o = _ca(st, cache, CA_RSEQ) + _below(st, objects)
        for j in range(count):
            p[at + j] = base + rseq[o + j]
        obj = base + rseq[o]
        for j in range(1, objects):
            nxt = base + rseq[o + j]
            _set_fp(mem, offset, key, obj, nxt)
            obj = nxt
        _set_fp(mem, offset, key, obj, 0)
        st.sl_freelist[slab] = base + rseq[o + count]
    else:
        size = _ca(st, cache, CA_SIZE)
        for j in range(count):
            p[at + j] = base + j * size
        _link_in_address_order(mem, offset, key, base, size, objects)
        st.sl_freelist[slab] = base + count * size
    st.sl_inuse[slab] += count
    _add_partial_inline(st, cache, slab, False)
    return count
