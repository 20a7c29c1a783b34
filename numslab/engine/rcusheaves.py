"""kfree_rcu through sheaves: the CPU's ``rcu_free`` sheaf, its grace period, then the barn.

``kfree_rcu_sheaf`` fills the CPU's ``rcu_free`` sheaf, a full one waits for its grace period
(``call_rcu``), and ``rcu_free_sheaf`` then puts it in the barn.

A ``kfree_rcu``'d object of a cache with sheaves goes into the CPU's ``rcu_free`` sheaf
(``C_RCU_FREE``), its live bit cleared at once (the kernel's ``slab_free_hook`` runs after the
grace period; numslab clears the mark now so that a second free of it is refused as a double
free) and its RCU mark set (field ``rcu``: no free list may name it, so no allocation can hand
it out while it waits; :func:`rcu_run_callbacks` lifts it). A full ``rcu_free`` sheaf is
detached and handed to ``call_rcu`` (``sheaves._call_rcu``: the list
``G_RCU_HEAD``..``G_RCU_TAIL``); so is a part-full
one by ``pcs_flush_all`` or ``flush_rcu_sheaf``, with the callback ``rcu_free_sheaf_nobarn``.
The grace period is the caller's: :func:`rcu_run_callbacks` (``synchronize_rcu``,
``rcu_barrier``) runs every waiting sheaf's callback, oldest first, after giving back the
pages of the SLAB_TYPESAFE_BY_RCU slabs discarded before it.
"""
from __future__ import annotations

from ..flags import BARN_PUT, BARN_PUT_FAIL, FREE_RCU_SHEAF, FREE_RCU_SHEAF_FAIL, SLAB_KMALLOC
from .checks import E_ALLOCATORS, E_DOUBLE_FREE, _locate, _rcu_clear, _rcu_set
from .cpucache import _take_back
from .layout import (C_RCU_FREE, C_SPARE, CA_ACTIVE, CA_FLAGS, CA_OBJECT_SIZE, CA_RED_LEFT,
                     CA_SHEAF_CAPACITY, CA_SIZE, G_ERR0, G_ERR1, G_NRCU, G_NRCU_SLABS,
                     G_RCU_HEAD,
                     G_RCU_TAIL, PG_SLAB, KERNEL_7_0, MAX_EMPTY_SHEAVES, MAX_FULL_SHEAVES,
                     N_BARN_EMPTY, N_BARN_FULL, N_NR_EMPTY, N_NR_FULL, NIL, RCU_CB_BARN,
                     RCU_CB_NOBARN, SH_CACHE, SH_CAPACITY, SH_NEXT, SH_OBJECTS, SH_SIZE, _ca,
                     _cpu_row, _head_frame, _shadow, _slab_nid, _stat)
from .native import jit, unit
from .live import _settled
from .pages import rcu_free_slabs
from .sheaves import (_alloc_empty_sheaf, _any_stale, _barn, _barn_pop, _barn_push, _call_rcu,
                      _free_empty_sheaf, _free_path_gfp, _rcu_append, _sheaf_purge, _w,
                      sheaf_flush_unused)


@unit
def kfree_rcu_sheaf(st, cpu, addr):
    """``kfree_rcu_sheaf`` and ``__kfree_rcu_sheaf`` on ``cpu`` for the live ``addr``; 1 or 0.

    The caller checked it; a large kmalloc is never taken. 1 if it went into the CPU's ``rcu_free``
    sheaf (FREE_RCU_SHEAF), 0 if the ordinary ``kfree_rcu`` must take it: no sheaves (6.18:
    ``s->cpu_sheaves`` NULL, nothing counted), a remote-node slab (nothing counted), or
    (FREE_RCU_SHEAF_FAIL) a 7.0 cache without sheaves (debug) or no empty sheaf to be had (spare,
    barn, ``alloc_empty_sheaf(GFP_NOWAIT)``, from 7.3 with ``__GFP_NOWARN``)."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    err, slab = _locate(st, addr, NIL)
    if err:
        return 0
    cache = st.sl_cache[slab]
    cap = _ca(st, cache, CA_SHEAF_CAPACITY)
    if st.kernel < KERNEL_7_0 and not cap:         # kfree_rcu_sheaf: no s->cpu_sheaves
        return 0
    if _slab_nid(st, slab) != st.cpu_node[cpu]:     # not numa_mem_id(): the list's
        return 0
    mem = st.mem
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    rcu = cpt[c + C_RCU_FREE]
    if rcu and not 0 <= mem[_w(rcu, SH_SIZE)] < cap:   # its size overwritten (a stray write):
        cpt[c + C_RCU_FREE] = 0                     # to call_rcu, whose run leaves it alone
        _call_rcu(st, rcu, RCU_CB_NOBARN, cpu)      # and reports it; a new one here
        rcu = 0
    if not rcu:
        if not cap:                                 # 7.0: a debug cache, no sheaves
            _stat(st, cache, cpu, FREE_RCU_SHEAF_FAIL, 1)
            return 0
        spare = cpt[c + C_SPARE]
        if spare and mem[_w(spare, SH_SIZE)] == 0:
            rcu = spare
            cpt[c + C_SPARE] = 0
        else:
            rcu = _barn_pop(st, _barn(st, cache, cpu), N_BARN_EMPTY, N_NR_EMPTY)
            if not rcu:
                rcu = _alloc_empty_sheaf(st, cache, cpu, cap, _free_path_gfp(st))
                if not rcu:
                    _stat(st, cache, cpu, FREE_RCU_SHEAF_FAIL, 1)
                    return 0
        cpt[c + C_RCU_FREE] = rcu
    _take_back(st, cache, cpu, addr)                # no longer the user's (see the module)
    _rcu_set(st, addr)                              # nor free: no free list may name it
    size = mem[_w(rcu, SH_SIZE)]
    mem[_w(rcu, SH_OBJECTS) + size] = addr
    mem[_w(rcu, SH_SIZE)] = size + 1
    if size + 1 >= cap:                             # full: detached, to call_rcu
        cpt[c + C_RCU_FREE] = 0
        _call_rcu(st, rcu, RCU_CB_BARN, cpu)
    _stat(st, cache, cpu, FREE_RCU_SHEAF, 1)
    return 1


@unit
def flush_rcu_sheaves(st, cache):
    """Hand every CPU's ``rcu_free`` sheaf of ``cache`` (NIL: all) to ``call_rcu``; how many.

    ``flush_rcu_sheaves_on_cache`` (``cache``), or ``flush_all_rcu_sheaves``'s walk of every cache
    with sheaves (``cache`` NIL): ``flush_rcu_sheaf`` on every CPU hands its ``rcu_free`` sheaf, if
    any, to ``call_rcu`` with ``rcu_free_sheaf_nobarn``. Returns the sheaves handed over."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    n = 0
    for s in range(st.max_caches):
        if cache != NIL and s != cache:
            continue
        if not (_ca(st, s, CA_ACTIVE) & 1 and _ca(st, s, CA_SHEAF_CAPACITY)):
            continue
        for cpu in range(st.ncpus):
            c = _cpu_row(st, s, cpu)
            rcu = st.cpu[c + C_RCU_FREE]
            if rcu:
                st.cpu[c + C_RCU_FREE] = 0
                _call_rcu(st, rcu, RCU_CB_NOBARN, cpu)
                n += 1
    return n


@jit
def _rcu_free_sheaf(st, cache, cpu, sheaf):
    """``rcu_free_sheaf``: after the grace period, put a sheaf in the barn, or flush it.

    A sheaf that still has objects goes to the full list of the barn of its node (``sheaf->node``,
    that of ``cpu``) while it has fewer than MAX_FULL_SHEAVES (BARN_PUT); else it is flushed to the
    slabs (BARN_PUT_FAIL, ``sheaf_flush_unused``) and kept as an empty barn sheaf while there are
    fewer than MAX_EMPTY_SHEAVES, else freed. Entries found live are dropped first (the guard of
    ``sheaves._sheaf_purge``; the kernel's ``slab_free_hook`` may drop objects here too)."""
    mem = st.mem
    if _any_stale(st, mem, _w(sheaf, SH_OBJECTS), mem[_w(sheaf, SH_SIZE)]):
        _sheaf_purge(st, cache, sheaf)
    r = _barn(st, cache, cpu)
    nd = st.node
    if mem[_w(sheaf, SH_SIZE)]:
        if nd[r + N_NR_FULL] < MAX_FULL_SHEAVES:
            _stat(st, cache, cpu, BARN_PUT, 1)
            _barn_push(st, r, N_BARN_FULL, N_NR_FULL, sheaf)
            return
        _stat(st, cache, cpu, BARN_PUT_FAIL, 1)
        sheaf_flush_unused(st, cache, cpu, sheaf)
    if nd[r + N_NR_EMPTY] < MAX_EMPTY_SHEAVES:
        _barn_push(st, r, N_BARN_EMPTY, N_NR_EMPTY, sheaf)
    else:
        _free_empty_sheaf(st, cache, cpu, sheaf)


@jit
def _rcu_sheaf_ok(st, sheaf):
    """Whether ``sheaf``, met on the list of sheaves waiting for their grace period, is still one.

    An object the allocator kmalloced for itself whose ``rcu_head`` names a CPU, whose cache is
    active with sheaves, whose size fits its capacity and its object, and whose entries are objects
    of that cache (free, or live: stale entries, which the callback drops). A sheaf's words are in
    the shadow half, out of a user's reach; this guards the list against a state written wrong by
    other means (a word set through ``sa._mem``)."""
    obj = sheaf - _shadow(st)
    if obj <= 0 or obj >= _shadow(st) or sheaf & 7 or _locate(st, obj, NIL)[0] != E_ALLOCATORS:
        return False
    mem = st.mem
    w = sheaf >> 3
    info = -1 - mem[w + SH_CAPACITY]
    cache = mem[w + SH_CACHE]
    if info < 0 or info >> 1 >= st.ncpus or cache < 0 or cache >= st.max_caches:
        return False
    cap = _ca(st, cache, CA_SHEAF_CAPACITY)
    size = mem[w + SH_SIZE]
    room = _ca(st, st.sl_cache[_head_frame(st, obj >> 12)], CA_OBJECT_SIZE) // 8
    if not _ca(st, cache, CA_ACTIVE) & 1 or not 0 <= size <= cap or SH_OBJECTS + size > room:
        return False
    for i in range(size):
        err = _locate(st, mem[w + SH_OBJECTS + i], cache)[0]
        if err != 0 and err != E_DOUBLE_FREE:
            return False
    return True


@jit
def _rcu_find_waiting(st):
    """Put every sheaf still waiting back on the waiting list (a link overwritten); how many.

    Called after a link of the waiting list was found overwritten: the sheaves are put back in
    address order, found by their ``rcu_head`` (a callback word where a sheaf's capacity is; the
    callbacks that ran wrote the capacity back) among the allocator's own objects of the kmalloc
    caches."""
    g = st.g
    mem = st.mem
    g[G_RCU_HEAD] = 0
    g[G_RCU_TAIL] = 0
    g[G_NRCU] = 0
    for pfn in range(st.npages):
        if not st.pg_flags[pfn] & PG_SLAB:
            continue
        cache = st.sl_cache[pfn]
        if not _ca(st, cache, CA_FLAGS) & SLAB_KMALLOC:
            continue
        size = _ca(st, cache, CA_SIZE)
        base = (pfn << 12) + _ca(st, cache, CA_RED_LEFT)
        for i in range(st.sl_objects[pfn]):
            sheaf = base + i * size + _shadow(st)
            if mem[_w(sheaf, SH_CAPACITY)] < 0 and _rcu_sheaf_ok(st, sheaf):
                _rcu_append(st, sheaf)
    return g[G_NRCU]


@unit
def rcu_run_callbacks(st):
    """The end of a grace period: run the callback of every sheaf waiting for it; the objects held.

    Oldest first, on the CPU that called ``call_rcu`` (:func:`_rcu_free_sheaf`, or
    ``rcu_free_sheaf_nobarn``: flush to the slabs and free the sheaf). Returns the objects they
    held (stale entries dropped on the way included); or ``-1 -`` that count when a stray write had
    overwritten a waiting sheaf (G_ERR0 its address, G_ERR1 the sheaves left alone): one whose
    words no longer describe a sheaf (:func:`_rcu_sheaf_ok`) is left alone with its objects
    (leaked, as an isolated slab's), and past an overwritten link the sheaves still waiting are
    found again (:func:`_rcu_find_waiting`).

    First the SLAB_TYPESAFE_BY_RCU slabs discarded before it give their pages back
    (``rcu_free_slab``, :func:`pages.rcu_free_slabs`); those the callbacks discard wait
    for the next grace period, as a ``call_rcu`` from a callback does."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    mem = st.mem
    g = st.g
    if g[G_NRCU_SLABS]:
        rcu_free_slabs(st)
    n = 0
    bad = 0
    left = 0
    while True:
        sheaf = g[G_RCU_HEAD]
        if sheaf and not _rcu_sheaf_ok(st, sheaf):
            if not bad:
                bad = sheaf
            left += 1
            sheaf = 0
        if not sheaf:
            if g[G_NRCU] <= 1 or not _rcu_find_waiting(st):
                break
            continue
        g[G_NRCU] -= 1
        nxt = mem[_w(sheaf, SH_NEXT)]
        info = -1 - mem[_w(sheaf, SH_CAPACITY)]
        cpu = info >> 1
        cache = mem[_w(sheaf, SH_CACHE)]
        mem[_w(sheaf, SH_NEXT)] = 0                 # the rcu_head is capacity again (so
        mem[_w(sheaf, SH_CAPACITY)] = _ca(st, cache, CA_SHEAF_CAPACITY)   # no search finds it)
        if g[G_NRCU] == 0:
            g[G_RCU_HEAD] = 0                       # the last: its link is not followed
            g[G_RCU_TAIL] = 0
        elif _rcu_sheaf_ok(st, nxt):
            g[G_RCU_HEAD] = nxt
        else:                                       # its link overwritten: the others are
            if not bad:                             # found again
                bad = sheaf
            _rcu_find_waiting(st)
        n += mem[_w(sheaf, SH_SIZE)]
        for i in range(mem[_w(sheaf, SH_SIZE)]):    # the grace period is over (its objects:
            _rcu_clear(st, mem[_w(sheaf, SH_OBJECTS) + i])      # _rcu_sheaf_ok's checks)
        if info & 1 == RCU_CB_NOBARN:
            sheaf_flush_unused(st, cache, cpu, sheaf)
            _free_empty_sheaf(st, cache, cpu, sheaf)
        else:
            _rcu_free_sheaf(st, cache, cpu, sheaf)
    g[G_RCU_HEAD] = 0
    g[G_RCU_TAIL] = 0
    g[G_NRCU] = 0
    if bad:
        g[G_ERR0] = bad
        g[G_ERR1] = left
        return -1 - n
    return n
