"""The public operations as units (sheaves first, then the CPU slab).

They are shared by the facade (its Python methods through the trampolines of ``drivers.calls``,
and the C call gate) and by ``numslab.jit`` in users' own @njit code.
Each takes a checked cache id and CPU; addresses are checked here, arrays arrive as byte
addresses."""
from __future__ import annotations

from ..flags import (__GFP_ZERO, ALLOC_PCS, ALLOC_ARRAY_FULL_COUNT, ALLOC_ARRAY_LOCAL,
                     FREE_SLOWPATH,
                     SLAB_ARRAY_ALLOC_ALL, SLAB_ARRAY_ALLOC_FULL_COUNT, SLAB_ARRAY_ALLOC_LOCAL,
                     SLAB_ARRAY_ALLOC_NEW, SLAB_ARRAY_ALLOC_PARTIAL)
from .bulk import (_alloc_bulk_slab, _batch_fail, _check_batch, _check_objects,
                   _free_bulk_raw, alloc_new_slabs, alloc_partial_slabs, free_bulk_raw)
from .live import (_aux, _live_clear, _pends, _live_set, _live_set_run, _live_test, _own_test,
                   _record_checked, _record_take, _repend, _settle, _settled, _uncache)
from .checks import (E_ALLOCATORS, E_ARRAY_PLACE, E_AT, E_DOUBLE_FREE, E_HOLDS_ARRAY, E_LARGE,
                     _array_home, _array_misplaced, _in_arena, _locate, _rcu_list_mark)
from .debug import report_double_free, slab_alloc_debug, slab_free_debug
from .sheafdebug import free_bulk_checked, free_bulk_debug
from .cpucache import (_do_slab_free_chain, _hand_out, _hand_out_run, _slab_alloc,
                       _take_back, flush_cpu)
from .layout import (CA_ACTIVE, CA_DEBUG, CA_NCOLS, CA_RED_LEFT, CA_SIZE, CA_USER_SHEAVES,
                     G_NDEBUG, C_MAIN, C_SPARE, CA_OBJECT_SIZE, CA_OBJECTS, CA_SHEAF_CAPACITY,
                     G_FAULT_CACHE, G_NISOLATED, G_NLOST, G_PEND, KERNEL_7_0, KERNEL_7_1, NIL,
                     PEND_MAX, REC_MAX,
                     PG_HEAD, PG_ISOLATED, PG_LARGE, PG_NODE_PARTIAL, PG_SLAB, SH_OBJECTS,
                     SH_SIZE, N_NR_SLABS, _ca, _cpu_row, _head_frame, _node_row, _slab_nid,
                     _stat)
from .gilguard import engine_waiters, hold_engine
from .native import address, copy_bytes, jit, unit, words_at, zero_bytes
from .kmalloc import kmalloc as kmalloc_large
from .pages import free_block_checked
from .stats import live_objects, lost_objects
from .pcsbulk import (_alloc_from_pcs_bulk, _free_pending, _free_pending_two, _free_recorded,
                      _free_to_pcs_bulk, _put_main_spare,
                      _sheaf_put, _sheaf_take, _take_main_spare)
from .sheaves import (_alloc_from_pcs, _any_stale, _free_empty_sheaf, _free_to_pcs,
                      _node_requested_off, _sheaf_purge, _w, barn_shrink, free_barns,
                      kfree_internal, pcs_flush_all)
from .slablists import _cpu_pop, _discard_slab, _remove_partial, shrink_node


# ---- single objects -----------------------------------------------------------------------------
@jit(inline=True)
def _kmem_cache_alloc_node(st, cache, cpu, node, gfp):
    """``kmem_cache_alloc_node``: from the CPU's sheaves, else the CPU slab; address or 0.

    The sheaves serve when the cache has them; else (or if they cannot serve) the object comes
    through the CPU slab."""
    if _ca(st, cache, CA_SHEAF_CAPACITY):
        obj = _alloc_from_pcs(st, cache, cpu, gfp, node)
        if obj:
            _hand_out(st, cache, cpu, obj, gfp)
            return obj
    else:                                   # alloc_from_pcs's node test, then its back-off
        _node_requested_off(st, cache, cpu, node)
    return _slab_alloc(st, cache, cpu, node, gfp)


@unit
def kmalloc(st, cache, cpu, node, gfp, size, order):
    """``kmalloc`` from kmalloc cache ``cache``, or a large block of ``order`` pages; address or 0.

    From the cache as ``kmem_cache_alloc_node`` (its sheaves first under 7.0); the large block when
    ``cache`` is NIL."""
    _settled(st)
    if cache != NIL:
        if _ca(st, cache, CA_DEBUG):        # slab_debug keeps the size asked for
            _node_requested_off(st, cache, cpu, node)     # alloc_from_pcs's test, back-off
            return _give_back_on_fault(st, cache, cpu, slab_alloc_debug(st, cache, cpu, node,
                                                                        gfp, size))
        return _give_back_on_fault(st, cache, cpu, _kmem_cache_alloc_node(st, cache, cpu,
                                                                          node, gfp))
    return kmalloc_large(st, NIL, cpu, node, gfp, size, order)


@unit
def kmem_cache_alloc_node(st, cache, cpu, node, gfp):
    """``kmem_cache_alloc_node`` (:func:`_kmem_cache_alloc_node`).

    Address or 0 (also when a corrupted free pointer was met: G_FAULT_* say so and the caller
    raises)."""
    _settled(st)
    return _give_back_on_fault(st, cache, cpu, _kmem_cache_alloc_node(st, cache, cpu, node,
                                                                      gfp))


@jit(inline=True)
def _give_back_on_fault(st, cache, cpu, obj):
    """``obj`` if no corrupted free pointer was met, else 0 after freeing ``obj`` again.

    No corrupted free pointer: G_FAULT_CACHE clear. Else the call then raises, and must have taken
    nothing. The free is the unit :func:`give_back_on_fault`: inline, every allocation unit
    carried the whole free path for a fault (a first ``kmalloc`` compiled it twice)."""
    if st.g[G_FAULT_CACHE] == 0 or obj == 0:
        return obj
    return give_back_on_fault(st, cache, cpu, obj)


@unit
def give_back_on_fault(st, cache, cpu, obj):
    """Free ``obj`` again after a fault (:func:`_give_back_on_fault`). 0."""
    _slab_free_one(st, cache, cpu, _head_frame(st, obj >> 12), obj)
    return 0


@jit(inline=True)
def _give_back_many_on_fault(st, cache, cpu, n, paddr):
    """The bulk form of :func:`_give_back_on_fault`: ``n``, or -1 after freeing them.

    The frees are the unit :func:`give_back_many_on_fault`."""
    if st.g[G_FAULT_CACHE] == 0 or n <= 0:
        return n
    return give_back_many_on_fault(st, cache, cpu, n, paddr)


@unit
def give_back_many_on_fault(st, cache, cpu, n, paddr):
    """Free the ``n`` objects at ``paddr`` again after a fault (:func:`_give_back_many_on_fault`).

    -1. A bulk allocation's pending head (``pcsbulk._takes_pending``: its first objects, not
    marked; all the others are) is marked first, for the checks."""
    p = words_at(paddr)
    k = 0
    while k < n and not _live_test(st, p[k]):
        _live_set(st, p[k])
        k += 1
    if _ca(st, cache, CA_DEBUG):            # checked frees, per detached freelist
        free_bulk_debug(st, cache, cpu, n, paddr)
    else:
        _kmem_cache_free_bulk(st, cache, cpu, n, paddr)
    return -1


@jit(inline=True)
def _slab_free_one(st, cache, cpu, slab, addr, sheaves=True):
    """``slab_free`` of a checked object.

    A local-node object goes to the sheaves if the cache has them (and ``sheaves``:
    ``kfree_bulk``'s detached lists never use them), else (or if they are full) to the CPU slab
    layer; a debug cache's to ``slab_free_debug``. 0, or E_DEBUG when a slab_debug check refused
    the free."""
    if _ca(st, cache, CA_DEBUG):
        return slab_free_debug(st, cache, cpu, slab, addr)
    _take_back(st, cache, cpu, addr)
    if sheaves and _ca(st, cache, CA_SHEAF_CAPACITY) and \
            _slab_nid(st, slab) == st.cpu_node[cpu]:
        if _free_to_pcs(st, cache, cpu, addr):
            return 0
    _uncache(st, addr, _aux(st, cache))
    _do_slab_free_chain(st, cache, cpu, slab, addr, addr, 1)
    if st.kernel >= KERNEL_7_0:
        _stat(st, cache, cpu, FREE_SLOWPATH, 1)
    return 0


@unit
def kmem_cache_free(st, cache, cpu, addr):
    """``kmem_cache_free``: 0, or a negative error code with nothing changed.

    A double free in a cache with slab_debug F is also reported; E_DEBUG: a check refused it."""
    pend = st.g[G_PEND]
    _settled(st)
    return _unsettled(st, pend, _kmem_cache_free(st, cache, cpu, addr))


@jit(inline=True)
def _kmem_cache_free(st, cache, cpu, addr):
    """:func:`kmem_cache_free`'s work, the pending record settled."""
    err, slab = _locate(st, addr, cache)
    if err == E_DOUBLE_FREE:
        return report_double_free(st, cache, addr)
    if err:
        return err
    return _slab_free_one(st, cache, cpu, slab, addr)


@unit
def kfree(st, cpu, addr):
    """``kfree``: find the slab (or large block) from the address alone and free it.

    0, or a negative code with nothing changed."""
    pend = st.g[G_PEND]
    _settled(st)
    return _unsettled(st, pend, _kfree(st, cpu, addr))


@jit(inline=True)
def _kfree(st, cpu, addr):
    """:func:`kfree`'s work, the pending record settled."""
    err, slab = _kfree_target(st, addr)
    if err == E_DOUBLE_FREE:
        return report_double_free(st, _slab_owner(st, addr), addr)
    if err:
        return err
    if slab == NIL:
        return free_block_checked(st, cpu, addr, -1, PG_LARGE)
    return _slab_free_one(st, st.sl_cache[slab], cpu, slab, addr)


@unit
def kfree_rcu_list(st, addr):
    """The start of an ordinary ``kfree_rcu`` (the facade's list): checks, then the mark.

    :func:`kfree`'s checks of ``addr`` and its mark set (``checks._rcu_list_mark``) are one engine
    call, so that no other thread frees it between the check and the mark (the list would then free
    it again, or free its next owner). 0, or :func:`kfree`'s error code with nothing changed."""
    _settled(st)
    err, _ = _kfree_target(st, addr)
    if err:
        return err
    _rcu_list_mark(st, addr, True)
    return 0


@jit(inline=True)
def _kfree_target(st, addr):
    """``_locate(st, addr, NIL)`` as ``kfree`` takes it.

    (0, slab head frame) for a live slab object, (0, NIL) for a large kmalloc block at its start,
    else (error code, NIL), an oversize sheaf the allocator holds (a large block) being
    ``E_ALLOCATORS``."""
    err, slab = _locate(st, addr, NIL)
    if err == E_LARGE:
        return (E_ALLOCATORS if _own_test(st, addr, 16) else 0), NIL
    return err, slab


@unit
def kfree_rcu_release(st, cpu, addr):
    """End the grace period of an object on the facade's ``kfree_rcu`` list: unmark, kfree it.

    The mark is lifted (``checks._rcu_list_mark``) and :func:`kfree` run in one engine call, so
    that no other thread's free (``numslab.jit``'s does not go through the facade) finds it
    unmarked before this kfree. 0 or :func:`kfree`'s error code (the mark stays lifted)."""
    _settled(st)
    _rcu_list_mark(st, addr, False)
    return kfree(st, cpu, addr)


@jit
def _slab_owner(st, addr):
    """The cache of the slab holding ``addr``.

    NIL: a large kmalloc waiting for its grace period, which ``_locate`` calls a double free
    too."""
    head = _head_frame(st, addr >> 12)
    return st.sl_cache[head] if st.pg_flags[head] & PG_SLAB else NIL


@unit
def alloc_one_by_one(st, cache, cpu, gfp, nr, paddr):
    """A debug cache's bulk allocation: ``nr`` single allocations (each checked), all or nothing.

    ``nr`` or 0. A unit: only a slab_debug cache's bulk allocation compiles it."""
    _settled(st)
    p = words_at(paddr)
    got = 0
    while got < nr:
        obj = _kmem_cache_alloc_node(st, cache, cpu, -1, gfp)
        if obj:
            p[got] = obj
            got += 1
        if obj == 0 or st.g[G_FAULT_CACHE]:
            free_bulk_debug(st, cache, cpu, got, paddr)     # __kmem_cache_free_bulk
            return 0
    return nr


# ---- bulk ---------------------------------------------------------------------------------------
@jit(inline=True)
def _kmem_cache_alloc_bulk(st, cache, cpu, gfp, nr, paddr):
    """``kmem_cache_alloc_bulk``: the ``nr`` words at ``paddr``, from sheaves, then the CPU slab.

    Returns ``nr``, or 0 with nothing taken (all or nothing)."""
    p = words_at(paddr)
    i = 0
    if _ca(st, cache, CA_SHEAF_CAPACITY):
        i = _alloc_from_pcs_bulk(st, cache, cpu, nr, p, 0)
    # The sheaves' objects come marked live, or held (a pending head: pcsbulk._takes_pending),
    # so while the slab layer walks, a free pointer naming one of them is refused.
    if i < nr and _alloc_bulk_slab(st, cache, cpu, gfp, nr - i, paddr + 8 * i) == 0:
        for j in range(i):
            _live_clear(st, p[j])
        if i:
            free_bulk_raw(st, cache, cpu, i, paddr)     # (the unit: a failure's path)
        return 0
    if gfp & __GFP_ZERO:
        size = _ca(st, cache, CA_OBJECT_SIZE)
        mem = st.mem
        for j in range(nr):
            zero_bytes(mem, p[j], size)
    return nr


@jit(inline=True)
def _kmem_cache_free_bulk(st, cache, cpu, nr, paddr):
    """``kmem_cache_free_bulk`` (``cache`` NIL: ``kfree_bulk``): check every element, then free.

    Every element is checked as a single free would, then freed through the sheaves or detached
    freelists. 0, or the first bad element's error code with its index (``err - i * E_AT``),
    nothing freed. The array is permuted."""
    err = _check_batch(st, cache, nr, paddr)
    if err:
        return err
    if cache != NIL and _ca(st, cache, CA_SHEAF_CAPACITY):
        _free_to_pcs_bulk(st, cache, cpu, nr, words_at(paddr))
    else:
        if st.kernel >= KERNEL_7_0:                 # slab_free_bulk: its objects, on the
            if cache != NIL:                        # cache of each detached list
                _stat(st, cache, cpu, FREE_SLOWPATH, nr)
            else:
                _count_slowpath_owners(st, cpu, nr, words_at(paddr))
        _free_bulk_raw(st, cache, cpu, nr, paddr)
    return 0


@jit
def _count_slowpath_owners(st, cpu, nr, p):
    """7.0's ``kfree_bulk``: FREE_SLOWPATH += 1 on the cache of each slab object of ``p[:nr]``.

    ``p[:nr]`` is checked; ``slab_free_bulk`` counts each detached list's objects on its cache;
    large kmalloc blocks are no cache's."""
    for i in range(nr):
        slab = _head_frame(st, p[i] >> 12)
        if st.pg_flags[slab] & PG_SLAB:
            _stat(st, st.sl_cache[slab], cpu, FREE_SLOWPATH, 1)


@jit(inline=True)
def _alloc_bulk_fast(st, cache, cpu, gfp, nr, p):
    """``kmem_cache_alloc_bulk``'s common cases on a cache with sheaves.

    The CPU's main sheaf holds ``nr`` objects, or the main and the spare together
    (``alloc_from_pcs_bulk`` in one batch, or in two with the sheaves swapped). Take them and hand
    them out. Returns ``nr``, or -1 if the case does not apply."""
    c = _cpu_row(st, cache, cpu)
    main = st.cpu[c + C_MAIN]
    if main == 0:
        return -1
    size = st.mem[_w(main, SH_SIZE)] - nr
    if size >= 0 and 0 < nr <= PEND_MAX and not gfp & __GFP_ZERO and \
            _pends(st, cache):     # pending: copied, no mark written
        _settled(st)
        _record_take(st, c, st.mem, _w(main, SH_OBJECTS) + size, nr, p)
        st.mem[_w(main, SH_SIZE)] = size
        _stat(st, cache, cpu, ALLOC_PCS, nr)
        return nr
    _settled(st)
    if size >= 0:
        if not _sheaf_take(st, cache, cpu, main, nr, p, 0):
            return -1
    elif not _take_main_spare(st, cache, cpu, nr, p, nr <= PEND_MAX and not gfp & __GFP_ZERO
                              and _pends(st, cache) != 0):
        return -1
    if gfp & __GFP_ZERO:                    # (marked live by the take)
        nbytes = _ca(st, cache, CA_OBJECT_SIZE)
        for k in range(nr):
            zero_bytes(st.mem, p[k], nbytes)
    return nr


@jit(inline=True)
def _free_bulk_fast(st, cache, cpu, nr, p):
    """``kmem_cache_free_bulk``'s common cases on a cache with sheaves on one node.

    ``nr`` objects fit in the CPU's main sheaf (what ``free_to_pcs_bulk`` does in one batch), or in
    the main and its spare (:func:`_free_bulk_two`). Check them all, then put them in. Returns 0
    when done, 1 if the case does not apply, or a negative error code with the bad index (``err - i
    * E_AT``), nothing freed."""
    c = _cpu_row(st, cache, cpu)
    main = st.cpu[c + C_MAIN]
    cap = _ca(st, cache, CA_SHEAF_CAPACITY)
    if st.g[G_PEND]:
        if st.g[G_PEND] == nr and (_free_pending(st, cache, cpu, nr, p) or
                                   _free_pending_two(st, cache, cpu, nr, p) or
                                   _free_recorded(st, cache, cpu, nr, p)):
            return 0                    # the pending batch back, still cached; or the checked
                                        # record freed without the batch check
        _settle(st)
    if main == 0 or st.nnodes != 1:
        return 1
    over = st.mem[_w(main, SH_SIZE)] + nr - cap
    if over > 0:
        spare = st.cpu[c + C_SPARE]
        if spare == 0 or st.mem[_w(spare, SH_SIZE)] + over > cap:
            return 1
        return _free_bulk_two(st, cache, cpu, nr, p)
    bad = _check_objects(st, cache, nr, p)
    if bad >= 0:                    # nothing written yet: the sheaf's bytes stay as they were
        return _batch_fail(st, cache, bad, p)
    _sheaf_put(st, cache, cpu, main, nr, p, 0)
    return 0


@jit
def _free_bulk_two(st, cache, cpu, nr, p):
    """:func:`_free_bulk_fast` when the main sheaf takes part of the batch and the spare the rest.

    ``free_to_pcs_bulk``'s two batches, the sheaves swapped between them: check, then put. 0, or
    the error code with the bad index, nothing freed."""
    bad = _check_objects(st, cache, nr, p)
    if bad >= 0:
        return _batch_fail(st, cache, bad, p)
    _put_main_spare(st, cache, cpu, nr, p)
    return 0


@unit
def alloc_bulk(st, cache, cpu, gfp, nr, paddr):
    """The facade's ``kmem_cache_alloc_bulk``.

    The common sheaf case inline, else the unit (a debug cache: one by one). ``nr``, 0, -1 after a
    fault, or ``E_ARRAY_PLACE`` (:func:`checks._array_home`: nothing taken)."""
    if _array_misplaced(st, nr, paddr):
        return E_ARRAY_PLACE
    if _ca(st, cache, CA_DEBUG):
        return alloc_one_by_one(st, cache, cpu, gfp, nr, paddr)
    n = _alloc_bulk_fast(st, cache, cpu, gfp, nr, words_at(paddr))
    if n < 0:
        _settled(st)
        n = _give_back_many_on_fault(st, cache, cpu,
                                     _kmem_cache_alloc_bulk(st, cache, cpu, gfp, nr, paddr),
                                     paddr)
    if n == nr and 0 < nr <= REC_MAX and st.g[G_PEND] == 0 and _pends(st, cache):
        _record_checked(st, cache, _cpu_row(st, cache, cpu), nr, words_at(paddr))
    return n


@unit
def free_bulk(st, cache, cpu, nr, paddr):
    """The facade's ``kmem_cache_free_bulk``/``kfree_bulk`` (``cache`` NIL).

    :func:`_free_bulk`; a refusal leaves the pending record as it was (:func:`_unsettled`)."""
    pend = st.g[G_PEND]
    return _unsettled(st, pend, _free_bulk(st, cache, cpu, nr, paddr))


@jit(inline=True)
def _unsettled(st, pend, err):
    """``err``; a refusal (``err`` < 0) puts back the pending record it settled (``_repend``)."""
    if err < 0:
        _repend(st, pend)
    return err


@jit(inline=True)
def _free_bulk(st, cache, cpu, nr, paddr):
    """The facade's ``kmem_cache_free_bulk``/``kfree_bulk`` (``cache`` NIL).

    The common sheaf case inline, else the unit. 0 or an error code. While debug caches exist a
    ``kfree_bulk``, and always a debug cache's batch, go to ``sheafdebug.free_bulk_checked``
    (detached freelists, a debug cache's through ``free_debug_processing``). An array that lies in
    the arena is first checked by :func:`checks._array_home` and :func:`_holder_of_array`."""
    if _in_arena(st, nr, paddr):
        _settled(st)
        off = paddr - address(st.mem)
        err = _array_home(st, nr, off) or _holder_of_array(st, nr, paddr, off)
        if err:
            return err
    if (cache == NIL and st.g[G_NDEBUG]) or (cache != NIL and _ca(st, cache, CA_DEBUG)):
        _settled(st)
        return free_bulk_checked(st, cache, cpu, nr, paddr)
    if cache != NIL:
        err = _free_bulk_fast(st, cache, cpu, nr, words_at(paddr))     # (it settles)
        if err <= 0:
            return err
    return free_bulk_general(st, cache, cpu, nr, paddr)


@unit
def free_bulk_general(st, cache, cpu, nr, paddr):
    """:func:`free_bulk`'s general case: every element checked, then freed.

    ``_kmem_cache_free_bulk``, the pending record settled first. A unit of its own, so that a
    first free of exactly the batch just allocated (the pending batch, the checked record), or
    of one the CPU's sheaves take whole, does not compile the batch check: ``free_bulk`` then
    compiles in 4.0 s, not 6.5 s (a user's first bulk round, December 7)."""
    _settled(st)
    return _kmem_cache_free_bulk(st, cache, cpu, nr, paddr)


@unit
def free_bulk_unchecked(st, cache, cpu, nr, paddr):
    """A forced destroy's last resort: :func:`free_bulk` with ``cache``'s slab_debug checks off.

    Called by ``batchapi._free_every_object``: :func:`free_bulk` of ``cache``'s objects with its
    slab_debug checks off for this call alone, ``CA_DEBUG`` cleared and put back inside the engine,
    where no other thread's call can run in between (cleared from Python, another thread's
    allocation could skip the checks). 0 or an error code."""
    row = cache * CA_NCOLS + CA_DEBUG
    debug = st.ca[row]
    st.ca[row] = 0
    err = free_bulk(st, cache, cpu, nr, paddr)
    st.ca[row] = debug
    return err


@jit
def _holder_of_array(st, nr, paddr, off):
    """Refuse a batch free whose address array, at arena byte ``off``, lies in an object it frees.

    ``E_HOLDS_ARRAY`` with the index of the first element whose object (or large block) holds part
    of the array, else 0. Freeing that object writes into it (a free pointer, poison) while the
    free still reads the array, and then follows what it wrote as addresses, so the batch is
    refused before anything changes. Elements that are no live object are left to the batch
    check."""
    p = words_at(paddr)
    end = off + 8 * nr
    for i in range(nr):
        a = p[i]
        err, slab = _locate(st, a, NIL)
        if err == 0:
            owner = st.sl_cache[slab]
            lo = a - _ca(st, owner, CA_RED_LEFT)
            hi = lo + _ca(st, owner, CA_SIZE)
        elif err == E_LARGE:
            lo = a
            hi = a + (4096 << st.pg_order[a >> 12])
        else:
            continue
        if (lo < end) & (hi > off):
            return E_HOLDS_ARRAY - i * E_AT
    return 0


# ---- the seed's array API -----------------------------------------------------------------------
@unit
def alloc_local(st, cache, cpu, gfp, nr, paddr):
    """SLAB_ARRAY_ALLOC_LOCAL: objects the CPU holds, into the words at ``paddr``; how many.

    Its main and spare sheaves, then its lockless freelist."""
    p = words_at(paddr)
    mem = st.mem
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    got = 0
    if _ca(st, cache, CA_SHEAF_CAPACITY):
        for col in (C_MAIN, C_SPARE):
            sheaf = cpt[c + col]
            if not sheaf:
                continue
            if _any_stale(st, mem, _w(sheaf, SH_OBJECTS), mem[_w(sheaf, SH_SIZE)]):
                _sheaf_purge(st, cache, sheaf)      # stale entries: the call gives back
            size = mem[_w(sheaf, SH_SIZE)]
            take = min(size, nr - got)
            o = _w(sheaf, SH_OBJECTS) + size - take
            for k in range(take):
                p[got + k] = mem[o + k]
            mem[_w(sheaf, SH_SIZE)] = size - take
            _live_set_run(st, p, got, take)     # now: the spare's check and the freelist
            got += take                         # pops below must find them taken
    while got < nr:                         # checked pops, each marked at once (loops)
        obj = _cpu_pop(st, cache, c)
        if obj == 0:
            break
        _live_set(st, obj)
        p[got] = obj
        got += 1
    _hand_out_run(st, cache, cpu, gfp, p, 0, got)
    _stat(st, cache, cpu, ALLOC_ARRAY_LOCAL, got)
    return got


@unit
def kmem_cache_alloc_array(st, cache, cpu, gfp, flags, nr, paddr):
    """``kmem_cache_alloc_array`` (RFC, January 2015): objects into the words at ``paddr``.

    PARTIAL, then NEW while more than a slab's worth is wanted, then LOCAL, then FULL_COUNT one by
    one; no flags means all. Returns the objects allocated (may be short without FULL_COUNT), -1
    after a fault, or ``E_ARRAY_PLACE`` (:func:`checks._array_home`)."""
    _settled(st)
    if _array_misplaced(st, nr, paddr):
        return E_ARRAY_PLACE
    if flags & SLAB_ARRAY_ALLOC_ALL == 0:
        flags |= SLAB_ARRAY_ALLOC_ALL
    if _ca(st, cache, CA_DEBUG):        # a debug cache takes the checked path: FULL_COUNT
        flags = SLAB_ARRAY_ALLOC_FULL_COUNT
    i = 0
    if flags & SLAB_ARRAY_ALLOC_PARTIAL and i < nr:
        i += alloc_partial_slabs(st, cache, cpu, gfp, nr - i, paddr + 8 * i)
    if flags & SLAB_ARRAY_ALLOC_NEW and nr - i > _ca(st, cache, CA_OBJECTS):
        i += alloc_new_slabs(st, cache, cpu, gfp, nr - i, paddr + 8 * i)
    if flags & SLAB_ARRAY_ALLOC_LOCAL and i < nr:
        i += alloc_local(st, cache, cpu, gfp, nr - i, paddr + 8 * i)
    if flags & SLAB_ARRAY_ALLOC_FULL_COUNT:
        p = words_at(paddr)
        start = i
        while i < nr:
            obj = _kmem_cache_alloc_node(st, cache, cpu, -1, gfp)
            if obj == 0:
                break
            p[i] = obj
            i += 1
        _stat(st, cache, cpu, ALLOC_ARRAY_FULL_COUNT, i - start)
    return _give_back_many_on_fault(st, cache, cpu, i, paddr)


@unit
def alloc_from_sheaf(st, cache, cpu, gfp, sheaf):
    """``kmem_cache_alloc_from_sheaf``: pop the user's prefilled sheaf; 0 if it is empty."""
    _settled(st)
    mem = st.mem
    size = mem[_w(sheaf, SH_SIZE)]
    if size == 0:
        return 0
    obj = mem[_w(sheaf, SH_OBJECTS) + size - 1]
    if _live_test(st, obj):
        _sheaf_purge(st, cache, sheaf)          # a stale entry: dropped, reported, none taken
        return 0
    mem[_w(sheaf, SH_SIZE)] = size - 1
    _hand_out(st, cache, cpu, obj, gfp)
    return obj


@unit
def settle_pending(st):
    """Write the pending record's marks (``live._settle``), for callers reading states. 0."""
    _settled(st)
    return 0


# ---- whole-cache operations ---------------------------------------------------------------------
@unit
def kmem_cache_shrink(st, cache, cpu):
    """``__kmem_cache_shrink`` run on ``cpu``: flush every CPU, then shrink each node; slabs freed.

    It flushes every CPU (sheaves, then CPU slab and partials, each on its own CPU as ``flush_all``
    does), then per node empties the barn, frees empty slabs (their pages to ``cpu``'s pcp lists)
    and re-orders the partial list; from 7.1 every node's barn is emptied before any list
    (``__kmem_cache_do_shrink``: a barn sheaf holding another node's objects then empties its slabs
    before that node's list is shrunk). Slabs freed: by the flushes (slabs they empty past
    ``min_partial`` go at once) as well as by the list shrinks."""
    _settled(st)
    sheaves = _ca(st, cache, CA_SHEAF_CAPACITY) != 0
    before = _nr_slabs(st, cache)
    _flush_all(st, cache)
    barns_first = sheaves and st.kernel >= KERNEL_7_1
    if barns_first:
        for node in range(st.nnodes):
            barn_shrink(st, cache, node, cpu)
    for node in range(st.nnodes):
        if sheaves and not barns_first:
            barn_shrink(st, cache, node, cpu)
        shrink_node(st, cache, cpu, node)
    return before - _nr_slabs(st, cache)


@jit
def _flush_all(st, cache):
    """``flush_all``: every CPU's sheaves, then its CPU slab and CPU partial list.

    Each as on its own CPU: the sheaves if the cache has them (``pcs_flush_all``), the CPU slab and
    partial list by ``__flush_cpu_slab``."""
    sheaves = _ca(st, cache, CA_SHEAF_CAPACITY) != 0
    for other in range(st.ncpus):
        if sheaves:
            pcs_flush_all(st, cache, other)
        flush_cpu(st, cache, other)
    if st.g[G_FAULT_CACHE] == cache + 1:    # a CPU's list a stray write cut isolated its
        st.g[G_FAULT_CACHE] = 0             # slab: no call raises that (isolated_slabs()),
                                            # and the next allocation took it for its own


@unit
def flush_all(st, cache):
    """:func:`_flush_all` for the facade (a sysfs write that flushes: ``cpu_partial``). 0."""
    _settled(st)
    _flush_all(st, cache)
    return 0


@jit(inline=True)
def _nr_slabs(st, cache):
    """The slabs of ``cache`` on every node (``node_nr_slabs`` summed)."""
    n = 0
    for node in range(st.nnodes):
        n += st.node[_node_row(st, cache, node) + N_NR_SLABS]
    return n


@unit
def engine_hold(st, on):
    """Take the engine for the calling thread (``on``), or give it back (0).

    Between the two, other threads wait at every unit's entry (``save`` writes a machine no thread
    changes meanwhile). 0."""
    hold_engine(st, on)
    return 0


#: :func:`cache_release`'s answer while other threads wait to enter the engine: call again.
RELEASE_LATER = 2


@unit
def cache_release(st, cache, cpu, force):
    """Last step of destroy: shrink, free ``s->random_seq``, the main sheaves, barns, lost slabs.

    Lost objects: :func:`stats.lost_objects`, a corrupted free list's, which no shrink frees; a
    flush's checked walk may isolate a 6.18 CPU slab here. 1 with nothing changed if an object or a
    prefilled sheaf of the cache is outstanding, or lost objects remain and not ``force`` (the
    caller checked, but another thread may have changed that since: the check and the release are
    one engine call); ``RELEASE_LATER`` with nothing changed while threads wait to enter the engine
    (:func:`gilguard.engine_waiters`: each may hold this cache's id, checked before it waited);
    else the cache is marked dead first (``numslab.jit`` refuses it: ``CA_ACTIVE``'s bit 0 off,
    its held bit kept while the release frees its sheaves' objects to their slabs, so that they
    leave the held bitmap as every free to the slabs makes them; 0 at the end), 0."""
    _settled(st)
    if engine_waiters():
        return RELEASE_LATER
    if live_objects(st, cache) or _ca(st, cache, CA_USER_SHEAVES) or \
            not force and lost_objects(st, cache):
        return 1
    st.ca[cache * CA_NCOLS + CA_ACTIVE] &= ~1     # dead; _aux still reads its held bit
    kmem_cache_shrink(st, cache, cpu)
    if st.random_seq[cache]:            # __kmem_cache_release: cache_random_seq_destroy first
        kfree_internal(st, cpu, st.random_seq[cache])
        st.random_seq[cache] = 0
    cpt = st.cpu
    if _ca(st, cache, CA_SHEAF_CAPACITY):
        for other in range(st.ncpus):
            c = _cpu_row(st, cache, other)
            if cpt[c + C_MAIN]:
                _free_empty_sheaf(st, cache, cpu, cpt[c + C_MAIN])
                cpt[c + C_MAIN] = 0
    free_barns(st, cache, cpu)          # __kmem_cache_release: pcs_destroy, then the barns
    for other in range(st.ncpus):       # barn flushes may have refilled CPU lists
        flush_cpu(st, cache, other)
    for node in range(st.nnodes):
        shrink_node(st, cache, cpu, node)
    g = st.g
    if g[G_NISOLATED] or g[G_NLOST]:    # slabs with lost objects never empty: no object of
        flags = st.pg_flags             # theirs is live now, nothing else names them, so
        for pfn in range(st.npages):    # they go too (left, they stayed counted in the slot)
            f = flags[pfn]
            if f & PG_SLAB and f & PG_HEAD and st.sl_cache[pfn] == cache and \
                    (f & PG_ISOLATED or st.sl_lost[pfn]):
                if f & PG_NODE_PARTIAL:
                    _remove_partial(st, cache, pfn)
                g[G_NLOST] -= st.sl_lost[pfn]
                st.sl_lost[pfn] = 0
                flags[pfn] &= ~PG_ISOLATED
                _discard_slab(st, cache, cpu, pfn)
    if g[G_FAULT_CACHE] == cache + 1:   # (a flush that isolated: no call to raise it)
        g[G_FAULT_CACHE] = 0
    st.ca[cache * CA_NCOLS + CA_ACTIVE] = 0
    return 0


# ---- typed records ------------------------------------------------------------------------------
@jit
def _first_not_live(st, cache, n, a):
    """Index of the first of ``n`` addresses (Words ``a``) not live in ``cache``, or -1."""
    for i in range(n):
        err, _ = _locate(st, a[i], cache)
        if err:
            return i
    return -1


@unit
def gather(st, cache, n, itemsize, outaddr, addrs):
    """Copy the record at each of the ``n`` addresses at ``addrs`` into the rows at ``outaddr``.

    Each record is ``itemsize`` bytes, address i to row i. Returns -1, or the index of the first
    address that is not a live object of ``cache`` (nothing is copied then)."""
    _settled(st)
    a = words_at(addrs)
    bad = _first_not_live(st, cache, n, a)
    if bad >= 0:
        return bad
    out = words_at(outaddr)
    mem = st.mem
    for i in range(n):
        copy_bytes(out, i * itemsize, mem, a[i], itemsize)
    return -1


@unit
def scatter(st, cache, n, itemsize, one, rowsaddr, addrs):
    """Copy rows of the records at ``rowsaddr`` into the objects at the ``n`` ``addrs``.

    Row i goes to the i-th address (row 0 for all if ``one``), after checking every address; -1 or
    the first bad index."""
    _settled(st)
    a = words_at(addrs)
    bad = _first_not_live(st, cache, n, a)
    if bad >= 0:
        return bad
    rows = words_at(rowsaddr)
    mem = st.mem
    for i in range(n):
        copy_bytes(mem, a[i], rows, 0 if one else i * itemsize, itemsize)
    return -1
