"""Per-CPU sheaves: arrays of object pointers, a ``main`` and a ``spare`` per CPU, and node barns.

Each node has a barn of full and empty sheaves; the sheaves are in front of the CPU slab (6.18,
opt-in) or of the slabs themselves (7.0, every cache).

A sheaf is a kmalloc'ed object in the arena, as in the kernel, but its int64 words
``SH_NEXT`` (barn or user list link), ``SH_CAPACITY``, ``SH_CACHE``, ``SH_SIZE``, then
``objects[]`` live in the shadow half of the mapping (``layout._shadow`` bytes past the
object), and the sheaf is known by that address, its handle: a user's stray write into the
arena cannot reach a sheaf's words, so no sheaf path trusts anything a user could write.
Objects in sheaves are allocated from their slabs but not handed out (live bit clear) and held
(field ``held``, ``live.py``): a free pointer rewritten to name one is refused by the slab
layer's checks, so a sheaf never names a live object or one twice. slab_debug's caches keep no
``held`` bits: for their sheaves every path that gives objects out (to a caller, or back to the
slabs) still first makes sure none of them is live, dropping such an entry
(:func:`_sheaf_purge`) instead of handing the object out a second time.
"""
from __future__ import annotations

from ..flags import (__GFP_DIRECT_RECLAIM, __GFP_NO_OBJ_EXT, __GFP_NOWARN, __GFP_RECLAIM,
                     __GFP_ZERO, GFP_KERNEL, GFP_NOWAIT, ALLOC_NODE_MISMATCH, ALLOC_PCS,
                     FREE_SLOWPATH, SLAB_KMALLOC, BARN_GET, BARN_GET_FAIL, BARN_PUT,
                     BARN_PUT_FAIL, FREE_PCS, SHEAF_ALLOC, SHEAF_FLUSH, SHEAF_FREE, SHEAF_REFILL)
from .bulk import alloc_bulk_slab, free_bulk_raw
from .live import _aux, _live_test, _own_clear, _own_set, _uncache, _settled
from .checks import E_LARGE, _locate
from .cpucache import _do_slab_free_chain, _hand_out, _take_back
from .debug import slab_free_debug
from .kmalloc import kmalloc
from .layout import (BARN_SIZE, CA_DEBUG, C_MAIN, C_RCU_FREE, C_SLAB, C_SPARE, CA_FLAGS,
                     CA_SHEAF_CAPACITY, G_FAULT_CACHE, G_NRCU, G_RCU_HEAD, G_RCU_TAIL, KERNEL_7_0,
                     KERNEL_7_1,
                     KERNEL_7_3, RCU_CB_NOBARN, MAX_FULL_SHEAVES, N_BARN_EMPTY, N_BARN_FULL,
                     N_NR_EMPTY, N_NR_FULL, NR_KMALLOC, PG_FROZEN, PG_ISOLATED, PG_LARGE,
                     SH_CACHE, SH_CAPACITY, SH_NEXT, SH_OBJECTS, SH_SIZE, SHEAF_HEADER, _ca,
                     _cpu_row, _shadow, _head_frame, _node_index, _node_row, _slab_nid, _stat)
from .native import address, jit, unit
from .nocpu import refill_objects
from .pages import free_block_checked
from .slablists import _fault_report, _isolate, _isolate_cpu_slab
from .sheafdebug import fill_debug, flush_debug

PCS_BATCH_MAX = 32
KMALLOC_CLASS = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)


# ---- sheaf memory: kmalloc in the arena ------------------------------------------------------
@jit(inline=True)
def _w(sheaf, word):
    """Index of int64 ``word`` of the sheaf with handle ``sheaf`` in ``st.mem``."""
    return (sheaf >> 3) + word


@jit(inline=True)
def _objs_at(st, sheaf):
    """Byte address (in this process) of the sheaf's ``objects[]``.

    For units taking an object array."""
    return address(st.mem) + sheaf + SHEAF_HEADER


@unit
def kmalloc_internal(st, cpu, size, gfp, node):
    """kmalloc from inside a kernel (sizes up to 4 MiB), ``kmalloc_node`` when ``node`` >= 0.

    The address, or 0. A kmalloc cache with sheaves (7.0) serves it from them first, with
    ``gfp`` as given: a sheaf for a kmalloc cache comes with __GFP_NO_OBJ_EXT
    (``_alloc_empty_sheaf`` adds it), so that cache makes no new sheaf on the way; a sheaf for
    any other cache does not, so a request that may block refills the kmalloc cache's sheaves
    as any allocation would. A corrupted free pointer it meets isolates its slab and is no
    fault of the call that needed the object (it stayed set, and the next call that checks it
    raised it as its own): cleared, and another slab tried (a flush's rule:
    ``isolated_slabs()`` lists it)."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    fault = st.g[G_FAULT_CACHE]
    obj = 0
    for _ in range(8):                  # (each try isolates a slab: bounded all the same)
        obj = _kmalloc_internal(st, cpu, size, gfp, node)
        if fault or st.g[G_FAULT_CACHE] == 0:
            break
        st.g[G_FAULT_CACHE] = 0
        if obj:
            break
    return obj


@jit
def _kmalloc_internal(st, cpu, size, gfp, node):
    """:func:`kmalloc_internal`'s one try (``kmalloc_node`` when ``node`` >= 0)."""
    obj = 0
    if size <= 8192:
        km = st.kmalloc
        for i in range(NR_KMALLOC):
            if size <= KMALLOC_CLASS[i]:
                cache = km[i]
                if _ca(st, cache, CA_SHEAF_CAPACITY):
                    obj = _alloc_from_pcs(st, cache, cpu, gfp, node)
                    if obj:
                        _hand_out(st, cache, cpu, obj, gfp)
                if not obj:
                    obj = kmalloc(st, cache, cpu, node, gfp, size, 0)
                break
    else:
        order = 0
        while (4096 << order) < size:
            order += 1
        obj = kmalloc(st, -1, cpu, node, gfp, size, order)
    if obj:
        _own_set(st, obj)               # the allocator's own: no user free may take it
    return obj


@unit
def kfree_internal(st, cpu, addr):
    """kfree of a kmalloc object made by :func:`kmalloc_internal`. 0."""
    _own_clear(st, addr)
    err, slab = _locate(st, addr, -1)
    if err == E_LARGE:
        free_block_checked(st, cpu, addr, -1, PG_LARGE)
    elif err == 0:
        cache = st.sl_cache[slab]
        if _ca(st, cache, CA_DEBUG):          # a debug kmalloc cache: checked, no sheaves
            slab_free_debug(st, cache, cpu, slab, addr)
            return 0
        _take_back(st, cache, cpu, addr)
        if not (_ca(st, cache, CA_SHEAF_CAPACITY) and _slab_nid(st, slab) == st.cpu_node[cpu]
                and _free_to_pcs(st, cache, cpu, addr)):
            _uncache(st, addr, _aux(st, cache))
            _do_slab_free_chain(st, cache, cpu, slab, addr, addr, 1)
            if st.kernel >= KERNEL_7_0:
                _stat(st, cache, cpu, FREE_SLOWPATH, 1)
    return 0


@jit
def _alloc_empty_sheaf(st, cache, cpu, capacity, gfp):
    """``alloc_empty_sheaf``: kzalloc a sheaf for ``capacity`` objects; address or 0.

    Not under __GFP_NO_OBJ_EXT, and a kmalloc cache's own sheaf is kmalloc'ed with that flag (no
    recursion to the same cache)."""
    if gfp & __GFP_NO_OBJ_EXT:
        return 0
    if _ca(st, cache, CA_FLAGS) & SLAB_KMALLOC:
        gfp |= __GFP_NO_OBJ_EXT
    sheaf = _sheaf_kmalloc(st, cpu, capacity, gfp)
    if sheaf:
        mem = st.mem
        mem[_w(sheaf, SH_CAPACITY)] = capacity
        mem[_w(sheaf, SH_CACHE)] = cache
        _stat(st, cache, cpu, SHEAF_ALLOC, 1)
    return sheaf


@jit
def _sheaf_kmalloc(st, cpu, capacity, gfp):
    """kzalloc of a sheaf for ``capacity`` objects; its handle or 0.

    The sheaf is a kmalloc object in the arena, its words zeroed in the shadow half; the handle is
    the object's address plus ``_shadow``."""
    obj = kmalloc_internal(st, cpu, SHEAF_HEADER + 8 * capacity, gfp | __GFP_ZERO, -1)
    if not obj:
        return 0
    sheaf = obj + _shadow(st)
    mem = st.mem
    for i in range(_w(sheaf, 0), _w(sheaf, SH_OBJECTS) + capacity):
        mem[i] = 0
    return sheaf


@jit
def _sheaf_kfree(st, cpu, sheaf):
    """kfree of the sheaf with handle ``sheaf`` (its kmalloc object)."""
    kfree_internal(st, cpu, sheaf - _shadow(st))


@jit
def _free_empty_sheaf(st, cache, cpu, sheaf):
    """``free_empty_sheaf``: kfree the sheaf."""
    _sheaf_kfree(st, cpu, sheaf)
    _stat(st, cache, cpu, SHEAF_FREE, 1)


@unit
def refill_sheaf(st, cache, cpu, sheaf, gfp):
    """``refill_sheaf``: fill the sheaf to the cache's capacity (all or nothing); 0 or -1."""
    mem = st.mem
    size = mem[_w(sheaf, SH_SIZE)]
    to_fill = _ca(st, cache, CA_SHEAF_CAPACITY) - size
    if to_fill <= 0:
        return 0
    if st.kernel >= KERNEL_7_0:                # refill_objects: what it got stays
        filled = refill_objects(st, cache, cpu, gfp, to_fill, to_fill,
                                _objs_at(st, sheaf) + 8 * size, 0)
        mem[_w(sheaf, SH_SIZE)] = size + filled
        _stat(st, cache, cpu, SHEAF_REFILL, filled)
        return 0 if filled == to_fill else -1
    filled = alloc_bulk_slab(st, cache, cpu, gfp, to_fill, _objs_at(st, sheaf) + 8 * size)
    mem[_w(sheaf, SH_SIZE)] = size + filled
    _stat(st, cache, cpu, SHEAF_REFILL, filled)
    return 0 if filled == to_fill else -1


@jit
def _sheaf_purge(st, cache, sheaf):
    """Drop every entry of ``sheaf`` whose object is live or named by an entry below it; how many.

    The slab layer handed the object out while the sheaf held it (its slab's free list was
    rewritten to name it), and a free of it may have put it in the sheaf again. Its slab is
    isolated as for any corrupted free pointer (G_FAULT_* report it: the next allocation that
    checks raises ``SlabCorruptionError``). The other entries keep their order (marked live while
    the walk runs, so a repeat finds its bit). Returns how many were dropped."""
    mem = st.mem
    live = st.live
    o = _w(sheaf, SH_OBJECTS)
    size = mem[_w(sheaf, SH_SIZE)]
    kept = 0
    for i in range(size):
        a = mem[o + i]
        if _live_test(st, a):
            slab = _head_frame(st, a >> 12)
            if st.pg_flags[slab] & PG_ISOLATED:
                _fault_report(st, cache, slab, a)
            else:
                _isolate_slab_of(st, cache, slab, a)
        else:
            live[a >> 9] |= 1 << ((a >> 3) & 63)
            mem[o + kept] = a
            kept += 1
    _unmark(st, mem, o, kept)
    mem[_w(sheaf, SH_SIZE)] = kept
    return size - kept


@jit
def _isolate_slab_of(st, cache, slab, a):
    """Isolate ``slab`` for a stale sheaf entry ``a``.

    A CPU's slab (6.18, frozen: the slab-layer allocation that handed ``a`` out took it from there)
    through ``_isolate_cpu_slab`` on that CPU, which lets its lockless freelist go with it; any
    other through ``_isolate``."""
    if st.pg_flags[slab] & PG_FROZEN:
        for cpu in range(st.ncpus):
            c = _cpu_row(st, cache, cpu)
            if st.cpu[c + C_SLAB] == slab:
                _isolate_cpu_slab(st, cache, c, slab, a)
                return
    _isolate(st, cache, slab, a)


@jit(inline=True)
def _unmark(st, mem, o, n):
    """Clear the live bits of the ``n`` objects at ``mem[o:o+n]``.

    A refill's objects go into a sheaf, not out (``refill_objects`` marks those it walks)."""
    live = st.live
    for k in range(n):
        a = mem[o + k]
        live[a >> 9] &= ~(1 << ((a >> 3) & 63))


@jit(inline=True)
def _any_stale(st, mem, o, n):
    """Whether one of the ``n`` objects at ``mem[o:o+n]`` (sheaf entries) is live or named twice.

    Named twice: a stale entry, then the object freed into the sheaf again. Either must go through
    :func:`_sheaf_purge` before the entries are handed out or given back to their slabs (twice on a
    free list is a cycle). The entries are marked while the walk runs and unmarked after; a live
    one stops it."""
    live = st.live
    k = 0
    while k < n:
        a = mem[o + k]
        bit = 1 << ((a >> 3) & 63)
        if live[a >> 9] & bit:
            break
        live[a >> 9] |= bit
        k += 1
    _unmark(st, mem, o, k)
    return k < n


@unit
def sheaf_flush_unused(st, cache, cpu, sheaf):
    """``sheaf_flush_unused``: give every object of a detached sheaf back to its slab. 0.

    None that is live: :func:`_sheaf_purge`."""
    mem = st.mem
    if _any_stale(st, mem, _w(sheaf, SH_OBJECTS), mem[_w(sheaf, SH_SIZE)]):
        _sheaf_purge(st, cache, sheaf)
    size = mem[_w(sheaf, SH_SIZE)]
    if size:
        _stat(st, cache, cpu, SHEAF_FLUSH, size)
        if _ca(st, cache, CA_DEBUG):            # a debug cache's (oversize) prefilled sheaf
            flush_debug(st, cache, cpu, size, _objs_at(st, sheaf))
        else:
            free_bulk_raw(st, cache, cpu, size, _objs_at(st, sheaf))
        mem[_w(sheaf, SH_SIZE)] = 0
    return 0


@jit
def _fill_oversize(st, cache, cpu, gfp, n, paddr):
    """``__kmem_cache_alloc_bulk`` into an oversize sheaf.

    ``refill_objects``, or for a debug cache one checked ``___slab_alloc`` per object. ``n``, or 0
    with nothing taken."""
    if _ca(st, cache, CA_DEBUG):
        return fill_debug(st, cache, cpu, gfp, n, paddr)
    return alloc_bulk_slab(st, cache, cpu, gfp, n, paddr)


@unit
def sheaf_flush_main(st, cache, cpu):
    """``sheaf_flush_main``: empty the CPU's main sheaf in batches of 32 from the top. 0.

    None that is live: :func:`_sheaf_purge`."""
    mem = st.mem
    sheaf = st.cpu[_cpu_row(st, cache, cpu) + C_MAIN]
    objs = _objs_at(st, sheaf)
    if _any_stale(st, mem, _w(sheaf, SH_OBJECTS), mem[_w(sheaf, SH_SIZE)]):
        _sheaf_purge(st, cache, sheaf)
    size = mem[_w(sheaf, SH_SIZE)]
    while size:
        batch = min(PCS_BATCH_MAX, size)
        size -= batch
        mem[_w(sheaf, SH_SIZE)] = size
        free_bulk_raw(st, cache, cpu, batch, objs + 8 * size)
        _stat(st, cache, cpu, SHEAF_FLUSH, batch)
    return 0


# ---- the barn ---------------------------------------------------------------------------------
@jit(inline=True)
def _barn(st, cache, cpu):
    """Row of the barn of ``cpu``'s node (``get_barn``) in field ``node``."""
    return _node_row(st, cache, st.cpu_node[cpu])


@jit
def _barn_pop(st, r, head_col, count_col):
    """Take the first sheaf of a barn list; 0 if empty."""
    nd = st.node
    mem = st.mem
    sheaf = nd[r + head_col]
    if sheaf:
        nd[r + head_col] = mem[_w(sheaf, SH_NEXT)]
        mem[_w(sheaf, SH_NEXT)] = 0
        nd[r + count_col] -= 1
    return sheaf


@jit
def _barn_push(st, r, head_col, count_col, sheaf):
    """``list_add`` a sheaf to a barn list (limits are the caller's business)."""
    nd = st.node
    st.mem[_w(sheaf, SH_NEXT)] = nd[r + head_col]
    nd[r + head_col] = sheaf
    nd[r + count_col] += 1


@jit
def _barn_trade(st, cache, cpu, r, want_full):
    """``barn_replace_empty_sheaf`` (``want_full``) or ``barn_replace_full_sheaf``: trade the main.

    Give the CPU's main sheaf to the barn and take one of the other kind as the new main. The
    caller checked that the barn has one."""
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu) + C_MAIN
    if want_full:
        got = _barn_pop(st, r, N_BARN_FULL, N_NR_FULL)
        _barn_push(st, r, N_BARN_EMPTY, N_NR_EMPTY, cpt[c])
    else:
        got = _barn_pop(st, r, N_BARN_EMPTY, N_NR_EMPTY)
        _barn_push(st, r, N_BARN_FULL, N_NR_FULL, cpt[c])
    cpt[c] = got


# ---- allocation ------------------------------------------------------------------------------
@jit(inline=True)
def _may_refill(st, gfp):
    """``__pcs_replace_empty_main``'s test before it fills a sheaf from the slabs: may it refill?

    A request that may block (``gfpflags_allow_blocking``: 6.18 and 7.0) or, in 7.1, one that may
    spin (``gfpflags_allow_spinning``: any reclaim bit, so GFP_ATOMIC and GFP_NOWAIT too; only a
    request with none, as ``kmalloc_nolock`` makes, falls to the slab layer). 7.3 reads
    ``alloc_flags`` (not ``SLAB_ALLOC_NOLOCK``, only ``kmalloc_nolock``'s): any may."""
    if st.kernel >= KERNEL_7_3:
        return True
    if st.kernel >= KERNEL_7_1:
        return (gfp & __GFP_RECLAIM) != 0
    return (gfp & __GFP_DIRECT_RECLAIM) != 0


@jit(inline=True)
def _free_path_gfp(st):
    """The gfp of the empty sheaves a free allocates: GFP_NOWAIT; 7.3 ``__GFP_NOWARN``.

    The frees are ``__pcs_replace_full_main`` and ``__kfree_rcu_sheaf``; 7.3's is alike under its
    refill rule."""
    return __GFP_NOWARN if st.kernel >= KERNEL_7_3 else GFP_NOWAIT


@unit
def replace_empty_main(st, cache, cpu, gfp):
    """``__pcs_replace_empty_main``: give the CPU a main sheaf with objects; 1 if so, else 0.

    From the spare, the barn, or a newly filled one if ``gfp`` may block (from 7.1, may spin:
    :func:`_may_refill`). The empty main a filled sheaf replaces becomes the spare when there is
    none (7.x), else goes to the barn's empty list (6.18 always)."""
    mem = st.mem
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    spare = cpt[c + C_SPARE]
    if spare and mem[_w(spare, SH_SIZE)] > 0:
        cpt[c + C_SPARE] = cpt[c + C_MAIN]
        cpt[c + C_MAIN] = spare
        return 1
    r = _barn(st, cache, cpu)
    nd = st.node
    if nd[r + N_NR_FULL]:                                   # barn_replace_empty_sheaf
        _barn_trade(st, cache, cpu, r, True)
        _stat(st, cache, cpu, BARN_GET, 1)
        return 1
    _stat(st, cache, cpu, BARN_GET_FAIL, 1)
    if not _may_refill(st, gfp):
        return 0
    empty = spare
    if empty:
        cpt[c + C_SPARE] = 0
    else:
        empty = _barn_pop(st, r, N_BARN_EMPTY, N_NR_EMPTY)
    if empty:
        if refill_sheaf(st, cache, cpu, empty, gfp):
            sheaf_flush_unused(st, cache, cpu, empty)
            _free_empty_sheaf(st, cache, cpu, empty)
            return 0
        full = empty
    else:
        full = _alloc_empty_sheaf(st, cache, cpu, _ca(st, cache, CA_SHEAF_CAPACITY), gfp)
        if not full:
            return 0
        if refill_sheaf(st, cache, cpu, full, gfp):      # alloc_full_sheaf
            sheaf_flush_unused(st, cache, cpu, full)
            _free_empty_sheaf(st, cache, cpu, full)
            return 0
    main = cpt[c + C_MAIN]
    if mem[_w(main, SH_SIZE)] == 0:
        if st.kernel >= KERNEL_7_0 and not cpt[c + C_SPARE]:
            cpt[c + C_SPARE] = main             # 7.0: the empty main becomes the spare
        else:
            _barn_push(st, r, N_BARN_EMPTY, N_NR_EMPTY, main)
        cpt[c + C_MAIN] = full
    elif not cpt[c + C_SPARE]:
        cpt[c + C_SPARE] = full
    elif mem[_w(cpt[c + C_SPARE], SH_SIZE)] == 0:
        _barn_push(st, r, N_BARN_EMPTY, N_NR_EMPTY, cpt[c + C_SPARE])
        cpt[c + C_SPARE] = full
    else:
        _barn_push(st, r, N_BARN_FULL, N_NR_FULL, full)
        _stat(st, cache, cpu, BARN_PUT, 1)
    return 1


@jit(inline=True)
def _node_requested_off(st, cache, cpu, node):
    """``alloc_from_pcs``'s first test: whether the request names a node other than ``cpu``'s.

    The sheaves hold local objects; counted ALLOC_NODE_MISMATCH under 7.0. 7.0 makes it for every
    cache, before it backs off from one without sheaves (debug, SLAB_NOLEAKTRACE, bootstrap);
    6.18 only for a cache with sheaves."""
    if node >= 0 and node != st.cpu_node[cpu]:
        if st.kernel >= KERNEL_7_0:
            _stat(st, cache, cpu, ALLOC_NODE_MISMATCH, 1)
        return True
    return False


@jit(inline=True)
def _alloc_from_pcs(st, cache, cpu, gfp, node):
    """``alloc_from_pcs``: pop the CPU's main sheaf (replacing it if empty).

    0 if the request wants another node or no sheaf with objects can be had."""
    if _node_requested_off(st, cache, cpu, node):
        return 0
    mem = st.mem
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    main = cpt[c + C_MAIN]
    if main == 0:                       # a kmalloc cache whose sheaves are being made
        return 0
    if mem[_w(main, SH_SIZE)] == 0:
        if not replace_empty_main(st, cache, cpu, gfp):
            return 0
        main = cpt[c + C_MAIN]
    size = mem[_w(main, SH_SIZE)]
    obj = mem[_w(main, SH_OBJECTS) + size - 1]
    if _live_test(st, obj):                             # handed out already: a stale entry
        _sheaf_purge(st, cache, main)
        return 0
    if node >= 0 and _slab_nid(st, obj >> 12) != node:
        if st.kernel >= KERNEL_7_0:
            _stat(st, cache, cpu, ALLOC_NODE_MISMATCH, 1)
        return 0
    mem[_w(main, SH_SIZE)] = size - 1
    _stat(st, cache, cpu, ALLOC_PCS, 1)
    return obj


# ---- free ---------------------------------------------------------------------------------------
@unit
def replace_full_main(st, cache, cpu):
    """``__pcs_replace_full_main``: make room in the CPU's main sheaf. 1 (main now has room).

    Swap with spare, trade with the barn, or flush."""
    mem = st.mem
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    cap = _ca(st, cache, CA_SHEAF_CAPACITY)
    r = _barn(st, cache, cpu)
    nd = st.node
    spare = cpt[c + C_SPARE]
    if not spare:
        empty = _barn_pop(st, r, N_BARN_EMPTY, N_NR_EMPTY)
        if empty:
            cpt[c + C_SPARE] = cpt[c + C_MAIN]
            cpt[c + C_MAIN] = empty
            return 1
        empty = _alloc_empty_sheaf(st, cache, cpu, cap, _free_path_gfp(st))
        if empty:
            cpt[c + C_SPARE] = cpt[c + C_MAIN]
            cpt[c + C_MAIN] = empty
            return 1
        sheaf_flush_main(st, cache, cpu)
        return 1
    if mem[_w(spare, SH_SIZE)] < cap:
        cpt[c + C_SPARE] = cpt[c + C_MAIN]
        cpt[c + C_MAIN] = spare
        return 1
    if nd[r + N_NR_FULL] >= MAX_FULL_SHEAVES:               # -E2BIG: flush the spare
        _stat(st, cache, cpu, BARN_PUT_FAIL, 1)
        cpt[c + C_SPARE] = 0
        sheaf_flush_unused(st, cache, cpu, spare)
        cpt[c + C_SPARE] = cpt[c + C_MAIN]                  # install the emptied sheaf
        cpt[c + C_MAIN] = spare
        return 1
    if nd[r + N_NR_EMPTY]:                                  # barn_replace_full_sheaf
        _barn_trade(st, cache, cpu, r, False)
        _stat(st, cache, cpu, BARN_PUT, 1)
        return 1
    empty = _alloc_empty_sheaf(st, cache, cpu, cap, _free_path_gfp(st))     # -ENOMEM: a
    if empty:
        _barn_push(st, r, N_BARN_FULL, N_NR_FULL, cpt[c + C_MAIN])
        _stat(st, cache, cpu, BARN_PUT, 1)
        cpt[c + C_MAIN] = empty
        return 1
    _stat(st, cache, cpu, BARN_PUT_FAIL, 1)
    sheaf_flush_main(st, cache, cpu)
    return 1


@jit(inline=True)
def _free_to_pcs(st, cache, cpu, obj):
    """``free_to_pcs``: push a local-node object on the CPU's main sheaf. True if done."""
    mem = st.mem
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    main = cpt[c + C_MAIN]
    if main == 0:                       # a kmalloc cache whose sheaves are being made
        return False
    if mem[_w(main, SH_SIZE)] == _ca(st, cache, CA_SHEAF_CAPACITY):
        if not replace_full_main(st, cache, cpu):
            return False
        main = cpt[c + C_MAIN]
    size = mem[_w(main, SH_SIZE)]
    mem[_w(main, SH_OBJECTS) + size] = obj
    mem[_w(main, SH_SIZE)] = size + 1
    _stat(st, cache, cpu, FREE_PCS, 1)
    return True


# ---- flushing -----------------------------------------------------------------------------------
@jit
def _call_rcu(st, sheaf, callback, cpu):
    """``call_rcu(&sheaf->rcu_head, callback)`` on ``cpu``: the sheaf waits for its grace period.

    Append the sheaf to the list of sheaves waiting for their grace period
    (``G_RCU_HEAD``..``G_RCU_TAIL``, oldest first; ``engine/rcusheaves.py`` runs the callbacks),
    its ``rcu_head`` in ``SH_NEXT`` and ``SH_CAPACITY``."""
    st.mem[_w(sheaf, SH_CAPACITY)] = -1 - (callback | (cpu << 1))
    _rcu_append(st, sheaf)


@jit(inline=True)
def _rcu_append(st, sheaf):
    """Append ``sheaf``, its ``rcu_head`` set, to the list of sheaves waiting for a grace period.

    Sets the tail's ``SH_NEXT``, ``G_RCU_TAIL``, ``G_NRCU``."""
    mem = st.mem
    g = st.g
    mem[_w(sheaf, SH_NEXT)] = 0
    if g[G_RCU_TAIL]:
        mem[_w(g[G_RCU_TAIL], SH_NEXT)] = sheaf
    else:
        g[G_RCU_HEAD] = sheaf
    g[G_RCU_TAIL] = sheaf
    g[G_NRCU] += 1


@unit
def pcs_flush_all(st, cache, cpu):
    """``pcs_flush_all``: flush and free the spare, hand over ``rcu_free``, flush the main. 0.

    The ``rcu_free`` sheaf goes to ``call_rcu`` (``rcu_free_sheaf_nobarn``); the main stays."""
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    spare = cpt[c + C_SPARE]
    cpt[c + C_SPARE] = 0
    rcu_free = cpt[c + C_RCU_FREE]
    cpt[c + C_RCU_FREE] = 0
    if spare:
        sheaf_flush_unused(st, cache, cpu, spare)
        _free_empty_sheaf(st, cache, cpu, spare)
    if rcu_free:
        _call_rcu(st, rcu_free, RCU_CB_NOBARN, cpu)
    if cpt[c + C_MAIN]:
        sheaf_flush_main(st, cache, cpu)
    return 0


@unit
def barn_shrink(st, cache, node, cpu):
    """``barn_shrink``: flush every full sheaf of the node's barn and free all sheaves. 0.

    Its partial sheaf first, which the kernel puts at the head of the full list it flushes."""
    r = _node_row(st, cache, node)
    bp = _node_index(st, cache, node)
    sheaf = st.barn_partial[bp]
    if sheaf:
        st.barn_partial[bp] = 0
        sheaf_flush_unused(st, cache, cpu, sheaf)
        _free_empty_sheaf(st, cache, cpu, sheaf)
    while True:
        sheaf = _barn_pop(st, r, N_BARN_FULL, N_NR_FULL)
        if not sheaf:
            break
        sheaf_flush_unused(st, cache, cpu, sheaf)
        _free_empty_sheaf(st, cache, cpu, sheaf)
    while True:
        sheaf = _barn_pop(st, r, N_BARN_EMPTY, N_NR_EMPTY)
        if not sheaf:
            break
        _free_empty_sheaf(st, cache, cpu, sheaf)
    return 0


@unit
def init_barns(st, cache, cpu):
    """The cache's barns, as ``init_kmem_cache_nodes`` (``bootstrap_cache_sheaves``) makes them.

    ``barn = kmalloc_node(sizeof(*barn), GFP_KERNEL, node)`` for every node, on ``cpu``, the
    CPU creating the cache; a barn on another node than ``cpu``'s is a node request the
    sheaves do not serve (``alloc_from_pcs``: ALLOC_NODE_MISMATCH, then ``___slab_alloc``).
    0, or -1 out of memory (the barns made so far stay for :func:`free_barns`)."""
    barn = st.barn
    for node in range(st.nnodes):
        obj = kmalloc_internal(st, cpu, BARN_SIZE, GFP_KERNEL, node)   # (a unit call)
        if not obj:
            return -1
        barn[_node_index(st, cache, node)] = obj
    return 0


@unit
def free_barns(st, cache, cpu):
    """``free_kmem_cache_nodes``' ``kfree(barn)`` of every node's barn, on ``cpu``. 0."""
    barn = st.barn
    for node in range(st.nnodes):
        i = _node_index(st, cache, node)
        if barn[i]:
            kfree_internal(st, cpu, barn[i])
            barn[i] = 0
    return 0


@unit
def init_percpu_sheaves(st, cache, cpu, bootstrap):
    """``init_percpu_sheaves``: an empty main sheaf for every CPU; 0, or -1 out of memory.

    Each kzalloc'ed with GFP_KERNEL on ``cpu``, the CPU creating the cache (its kmalloc sheaves
    serve them and it counts SHEAF_ALLOC). A kmalloc cache's (``bootstrap``:
    ``bootstrap_cache_sheaves``) become its mains once every CPU has one: the kernel sets
    ``s->sheaf_capacity`` last, and until then the cache's own allocations (kmalloc-256's
    sheaves are its objects) back off from the sheaves uncounted (a main of 0 here); they are
    parked in the rows' ``C_SPARE`` meanwhile, which nothing reads while the main is 0."""
    cpt = st.cpu
    col = C_SPARE if bootstrap else C_MAIN
    for c in range(st.ncpus):
        sheaf = _alloc_empty_sheaf(st, cache, cpu, _ca(st, cache, CA_SHEAF_CAPACITY),
                                   GFP_KERNEL)
        if not sheaf:
            return -1
        cpt[_cpu_row(st, cache, c) + col] = sheaf
    if bootstrap:
        for c in range(st.ncpus):
            r = _cpu_row(st, cache, c)
            cpt[r + C_MAIN] = cpt[r + C_SPARE]
            cpt[r + C_SPARE] = 0
    return 0
