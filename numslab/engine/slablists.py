"""The slab layer: slabs carved from pages, the free list inside free objects, the partial lists.

The partial lists are per node and per CPU; the module follows Linux 6.18 ``mm/slub.c`` function by
function.

Free pointers live in the arena (``st.mem``, int64 words) at ``CA_OFFSET`` inside each free
object; a slab's fields live in the ``sl_*`` page arrays at the slab's head page frame.
"""
from __future__ import annotations

from ..flags import (ALLOC_FROM_PARTIAL, ALLOC_REMOTE_PARTIAL, CPU_PARTIAL_DRAIN,
                     CPU_PARTIAL_FREE, CPU_PARTIAL_NODE, DEACTIVATE_EMPTY, FREE_ADD_PARTIAL,
                     FREE_FROZEN, FREE_REMOVE_PARTIAL, FREE_SLAB, ORDER_FALLBACK,
                     SLAB_TYPESAFE_BY_RCU)
from .layout import (C_FREELIST, C_PARTIAL, C_SLAB, CA_CPU_PARTIAL_SLABS, CA_CTOR,
                     CA_DEFRAG_RATIO, CA_FP_KEY, CA_HAS_CPU_PARTIAL, CA_MIN_OBJECTS, CA_MIN_ORDER,
                     CA_MIN_PARTIAL, CA_OBJECTS, CA_OFFSET, CA_ORDER, CA_RECIP, CA_SIZE, CA_FLAGS,
                     CA_RED_LEFT, G_FAULT_CACHE, G_FAULT_SLAB, G_FAULT_VALUE, G_NISOLATED, G_NLOST,
                     G_NPENDING, G_SLAB_GEN, N_NR_PARTIAL, N_NR_SLABS, N_PARTIAL_HEAD,
                     N_PARTIAL_TAIL, N_TOTAL_OBJECTS, NIL, PG_CPU_PARTIAL, PG_FROZEN, PG_HEAD,
                     PG_ISOLATED, PG_NODE_PARTIAL, PG_SLAB, PG_SORTED, CA_PARTIAL_ORDER,
                     PENDING_FRAME, _ca, _cpu_row, _node_row, _rand, _slab_nid, _stat)
from .freelist import _build_freelist, _fp_mask, _set_fp
from .freelist import _get_fp  # noqa: F401 (slablists._get_fp: the helper tests name)
from .native import jit, unit, words_at
from .partialorder import _unlink_partial, sorted_add, sorted_refile, sorted_unfile
from .pages import _free_pages_pcp, _pcp_take, _rcu_slab_wait, alloc_pages

SHRINK_PROMOTE_MAX = 32


# ---- node partial list ---------------------------------------------------------------------
# ---- guarded free pointers: nothing is followed unless it is a free object of the slab -------
@jit(inline=True)
def _fault_report(st, cache, slab, bad):
    """Report a corrupted free pointer of ``slab`` that read ``bad`` (G_FAULT_*).

    The next allocation that checks raises ``SlabCorruptionError`` naming them."""
    g = st.g
    g[G_FAULT_CACHE] = cache + 1
    g[G_FAULT_SLAB] = slab
    g[G_FAULT_VALUE] = bad


@jit
def _isolate(st, cache, slab, bad):
    """Report a free pointer of ``slab`` that read ``bad`` (G_FAULT_*) and stop using the slab.

    The slab is dropped as the kernel does after a failed consistency check: its free list is
    dropped (those objects leak), it counts as full, leaves its list and is never allocated from
    again; its live objects stay valid, and their frees are leaked. Objects a repaired free list
    cut off before (``sl_lost``) leak with the rest: derived from then on
    (``stats._isolated_leak``), so the count leaves ``sl_lost``."""
    _fault_report(st, cache, slab, bad)
    st.g[G_NISOLATED] += 1
    if st.sl_lost[slab]:
        st.g[G_NLOST] -= st.sl_lost[slab]
        st.sl_lost[slab] = 0
    st.sl_freelist[slab] = 0
    st.sl_inuse[slab] = st.sl_objects[slab]
    if st.pg_flags[slab] & PG_NODE_PARTIAL:
        _remove_partial(st, cache, slab)
    st.pg_flags[slab] |= PG_ISOLATED


@jit(inline=True)
def _fp_next(st, cache, slab, obj):
    """The free pointer of free object ``obj`` of ``slab``, checked.

    0 (end), a free object of the same slab on its grid (not live, nor waiting on the ``kfree_rcu``
    list: field ``rcu``), or -1 after :func:`_isolate` (the pointer is not followed)."""
    where = obj + _ca(st, cache, CA_OFFSET)
    raw = st.mem[where >> 3]                    # what is stored (reported if it is bad)
    nxt = raw ^ _fp_mask(_ca(st, cache, CA_FP_KEY), where)
    if nxt == 0:
        return 0
    off = nxt - (slab << 12) - _ca(st, cache, CA_RED_LEFT)
    size = _ca(st, cache, CA_SIZE)
    if 0 <= off < st.sl_objects[slab] * size:
        w = nxt >> 9
        if ((off * _ca(st, cache, CA_RECIP)) >> 32) * size == off and nxt != obj and \
                not ((st.live[w] | st.rcu[w] | st.held[w]) >> ((nxt >> 3) & 63)) & 1:
            return nxt
    _isolate(st, cache, slab, raw)
    return -1


@jit(inline=True)
def _count_disagrees(st, slab, nxt):
    """Whether a pop that leaves the slab's free list at ``nxt`` disagrees with its count.

    The list ends (0) while the count says objects stay free, or goes on when the pop takes the
    last free one by the count (a stray write cut it short or relinked objects counted in use, lost
    ones included). The pops then isolate the slab."""
    return (nxt != 0) == (st.sl_inuse[slab] + 1 >= st.sl_objects[slab])


@jit
def _isolate_cpu_slab(st, cache, c, slab, bad):
    """:func:`_isolate` for a CPU's slab (6.18).

    The CPU lets it go (unfrozen, on no list) with its lockless freelist, whose objects leak with
    the slab's."""
    if not st.pg_flags[slab] & PG_ISOLATED:
        _isolate(st, cache, slab, bad)
    st.pg_flags[slab] &= ~PG_FROZEN
    cpt = st.cpu
    cpt[c + C_SLAB] = NIL
    cpt[c + C_FREELIST] = 0


@jit(inline=True)
def _cpu_pop(st, cache, c):
    """Pop the CPU's lockless freelist (6.18), checked.

    Its head must not be live and its free pointer must be 0 or a free object of the CPU slab; else
    the CPU slab is isolated. The object (not yet marked allocated), or 0 if the list is empty or
    corrupted."""
    cpt = st.cpu
    obj = cpt[c + C_FREELIST]
    if obj == 0:
        return 0
    slab = cpt[c + C_SLAB]
    nxt = -1
    if not (st.live[obj >> 9] >> ((obj >> 3) & 63)) & 1:     # a loop back to a live object
        nxt = _fp_next(st, cache, slab, obj)
    if nxt < 0:                 # (a bad pointer was reported by _fp_next; a loop, here)
        _isolate_cpu_slab(st, cache, c, slab, obj)
        return 0
    cpt[c + C_FREELIST] = nxt
    return obj


@jit
def _chain_tail_checked(st, cache, slab, head, limit):
    """:func:`_chain_tail` through checked free pointers, at most ``limit`` objects.

    The tail and the length, or (-1, 0) after isolating the slab (a bad pointer or a loop)."""
    tail = 0
    n = 0
    obj = head
    while obj > 0:
        tail = obj
        n += 1
        if n > limit:
            _isolate(st, cache, slab, obj)
            return -1, 0
        obj = _fp_next(st, cache, slab, obj)
    if obj < 0:
        return -1, 0
    return tail, n


@jit(inline=True)
def _list_add(st, cache, slab, tail):
    """``add_partial`` on an unsorted list.

    ``slab`` at its node list's tail if ``tail``, else at its head (inline: :func:`_add_partial`
    and the bulk paths' loops)."""
    nd = st.node
    nxt = st.pg_next
    prv = st.pg_prev
    r = _node_row(st, cache, _slab_nid(st, slab))
    if nd[r + N_PARTIAL_HEAD] == NIL:
        nxt[slab] = NIL
        prv[slab] = NIL
        nd[r + N_PARTIAL_HEAD] = slab
        nd[r + N_PARTIAL_TAIL] = slab
    elif tail:
        t = nd[r + N_PARTIAL_TAIL]
        nxt[t] = slab
        prv[slab] = t
        nxt[slab] = NIL
        nd[r + N_PARTIAL_TAIL] = slab
    else:
        h = nd[r + N_PARTIAL_HEAD]
        prv[h] = slab
        nxt[slab] = h
        prv[slab] = NIL
        nd[r + N_PARTIAL_HEAD] = slab
    nd[r + N_NR_PARTIAL] += 1
    st.pg_flags[slab] |= PG_NODE_PARTIAL


@jit
def _add_partial(st, cache, slab, tail):
    """``add_partial``: put ``slab`` on its node's partial list, at the tail if ``tail``.

    A cache whose lists are sorted files it by its free objects instead."""
    if _ca(st, cache, CA_PARTIAL_ORDER):
        sorted_add(st, cache, slab)
        return
    _list_add(st, cache, slab, tail)


@jit(inline=True)
def _add_partial_inline(st, cache, slab, tail):
    """:func:`_add_partial` inline for the free and bulk paths (a sorted list: the call)."""
    if _ca(st, cache, CA_PARTIAL_ORDER):
        _add_partial(st, cache, slab, tail)
        return
    _list_add(st, cache, slab, tail)


@jit(inline=True)
def _list_remove(st, cache, slab):
    """``remove_partial``'s unlink, a sorted list's bucket left to the caller.

    Inline: :func:`_remove_partial` and the bulk paths' loops."""
    _unlink_partial(st, cache, slab)
    st.pg_next[slab] = NIL
    st.pg_prev[slab] = NIL
    st.pg_flags[slab] &= ~PG_NODE_PARTIAL


@jit
def _remove_partial(st, cache, slab):
    """``remove_partial``: take ``slab`` off its node's partial list."""
    if st.pg_flags[slab] & PG_SORTED:
        sorted_unfile(st, cache, slab)
    _list_remove(st, cache, slab)


# ---- slab creation and release ---------------------------------------------------------------
@jit
def _init_slab(st, cache, slab, objects):
    """Turn the allocated block at ``slab`` into an empty slab of ``cache`` and count it.

    There is no free list yet: the caller builds one or hands out every object at once. A slab of a
    cache with a constructor joins ``pending``, whose objects the facade constructs after the call
    (:func:`_pending_forget` takes it off when it is discarded first)."""
    st.pg_flags[slab] = PG_HEAD | PG_SLAB
    st.sl_cache[slab] = cache
    st.sl_objects[slab] = objects
    st.sl_inuse[slab] = 0
    st.sl_freelist[slab] = 0
    st.sl_slabs[slab] = 0
    nd = st.node
    r = _node_row(st, cache, _slab_nid(st, slab))
    nd[r + N_NR_SLABS] += 1
    nd[r + N_TOTAL_OBJECTS] += objects
    st.g[G_SLAB_GEN] += 1
    if _ca(st, cache, CA_CTOR):
        g = st.g
        n = g[G_NPENDING]
        st.pending[n] = slab
        g[G_NPENDING] = n + 1


@unit
def allocate_slab(st, cache, cpu, node, thisnode):
    """A new slab's pages for ``cache``, an empty slab with no free list; its head frame, or NIL.

    ``allocate_slab``, falling back to the minimum order."""
    order = _ca(st, cache, CA_ORDER)
    objects = _ca(st, cache, CA_OBJECTS)
    slab = alloc_pages(st, cpu, node, order, thisnode)
    if slab == NIL and _ca(st, cache, CA_MIN_ORDER) < order:
        order = _ca(st, cache, CA_MIN_ORDER)
        objects = _ca(st, cache, CA_MIN_OBJECTS)
        slab = alloc_pages(st, cpu, node, order, thisnode)
        if slab != NIL:
            _stat(st, cache, cpu, ORDER_FALLBACK, 1)
    if slab != NIL:
        _init_slab(st, cache, slab, objects)
    return slab


@jit(inline=True)
def _allocate_slab(st, cache, cpu, node, thisnode):
    """:func:`allocate_slab` with the page allocator's common case inline.

    The common case is a block on the CPU's pcp list (the same state as the unit would leave);
    anything else is the unit."""
    slab = _pcp_take(st, cpu, node, _ca(st, cache, CA_ORDER))
    if slab == NIL:
        return allocate_slab(st, cache, cpu, node, thisnode)
    _init_slab(st, cache, slab, _ca(st, cache, CA_OBJECTS))
    return slab


@unit
def new_slab(st, cache, cpu, node, thisnode):
    """``new_slab``: a new slab, its free list through every object; its head frame, or NIL.

    The free list is in the order of :func:`_next_obj` (``shuffle_freelist`` when the cache's free
    lists are randomised); the slab is accounted to its node. NIL when out of memory. The pages
    come inline on a pcp hit (:func:`_allocate_slab`: no unit calls, 6.18's bulk rounds made
    every slab through here)."""
    slab = _allocate_slab(st, cache, cpu, node, thisnode)
    if slab == NIL:
        return NIL
    _build_freelist(st, cache, slab)
    return slab


@unit
def build_freelist(st, cache, slab):
    """The second half of :func:`new_slab` for a slab just allocated (``allocate_slab``).

    slab_debug's set-up and the free list through every object. 0."""
    _build_freelist(st, cache, slab)
    return 0


@jit
def _pending_forget(st, slab):
    """Take a discarded slab off ``pending`` (its objects no longer need a constructor).

    ``pending`` then holds only slabs that exist, at most one entry per page. Before, a call that
    made and discarded more slabs than the machine has pages (an allocation loop under memory
    pressure: each refill makes slabs, fails and gives them back) wrote past ``pending`` into the
    live bitmap."""
    g = st.g
    n = g[G_NPENDING]
    pending = st.pending
    for i in range(n - 1, -1, -1):
        if pending[i] & PENDING_FRAME == slab:      # (its resume point goes with it)
            pending[i] = pending[n - 1]
            pending[n - 1] = NIL
            g[G_NPENDING] = n - 1
            return


@unit
def pending_take(st, cache, room, paddr):
    """Take up to ``room`` of ``cache``'s ``pending`` entries into ``paddr``'s words; how many.

    The others are kept in their order. One engine call: the facade's read of the list and its
    write back let a discard in another thread (:func:`_pending_forget`) fall between them."""
    g = st.g
    n = g[G_NPENDING]
    pending = st.pending
    out = words_at(paddr)
    got = 0
    kept = 0
    for i in range(n):
        e = pending[i]
        if st.sl_cache[e & PENDING_FRAME] == cache and got < room:
            out[got] = e
            got += 1
        else:
            pending[kept] = e
            kept += 1
    for i in range(kept, n):
        pending[i] = NIL
    g[G_NPENDING] = kept
    return got


@unit
def pending_put(st, cache, n, paddr):
    """Put back the ``n`` entries at ``paddr`` taken by :func:`pending_take`; how many.

    A constructor raised: its slab resumes there. Only those whose slab is still one of ``cache``'s
    (a head frame's ``sl_cache``) are put back."""
    g = st.g
    p = words_at(paddr)
    put = 0
    for i in range(n):
        e = p[i]
        if st.sl_cache[e & PENDING_FRAME] == cache and st.pg_flags[e & PENDING_FRAME] & PG_SLAB:
            st.pending[g[G_NPENDING]] = e
            g[G_NPENDING] += 1
            put += 1
    return put


@jit(inline=True)
def _discard_slab(st, cache, cpu, slab):
    """``discard_slab``: uncount the slab and give its pages back to the page allocator. 0.

    Small orders go to the pcp lists of ``cpu`` (the common case inline). A SLAB_TYPESAFE_BY_RCU
    cache's slab keeps its pages until the grace period ends (``free_slab``'s ``call_rcu``:
    :func:`_rcu_slab_wait`)."""
    if _ca(st, cache, CA_CTOR):
        _pending_forget(st, slab)
    nd = st.node
    r = _node_row(st, cache, _slab_nid(st, slab))
    nd[r + N_NR_SLABS] -= 1
    nd[r + N_TOTAL_OBJECTS] -= st.sl_objects[slab]
    st.g[G_SLAB_GEN] += 1
    st.sl_cache[slab] = NIL
    st.sl_objects[slab] = 0
    st.sl_inuse[slab] = 0
    st.sl_freelist[slab] = 0
    if _ca(st, cache, CA_FLAGS) & SLAB_TYPESAFE_BY_RCU:
        return _rcu_slab_wait(st, cpu, slab)
    return _free_pages_pcp(st, cpu, slab, st.pg_order[slab])


@unit
def discard_slab(st, cache, cpu, slab):
    """:func:`_discard_slab` as a unit. 0."""
    return _discard_slab(st, cache, cpu, slab)


# ---- taking a slab for a CPU ---------------------------------------------------------------
@jit
def _freeze_slab(st, slab):
    """``freeze_slab``/``get_freelist``: take the slab's whole free list for a CPU.

    The slab counts every object as in use and is frozen while the free list is non-empty."""
    freelist = st.sl_freelist[slab]
    st.sl_freelist[slab] = 0
    st.sl_inuse[slab] = st.sl_objects[slab]
    if freelist != 0:
        st.pg_flags[slab] |= PG_FROZEN
    else:
        st.pg_flags[slab] &= ~PG_FROZEN
    return freelist


@unit
def put_partials(st, cache, cpu, chain):
    """``__put_partials``: move a chain of CPU-partial slabs to their node lists. 0.

    Empty ones are freed once the node already keeps ``min_partial`` partial slabs."""
    nxt = st.pg_next
    flags = st.pg_flags
    inuse = st.sl_inuse
    nd = st.node
    min_partial = _ca(st, cache, CA_MIN_PARTIAL)
    discard = NIL
    slab = chain
    while slab != NIL:
        following = nxt[slab]
        flags[slab] &= ~PG_CPU_PARTIAL
        nxt[slab] = NIL
        r = _node_row(st, cache, _slab_nid(st, slab))
        if inuse[slab] == 0 and nd[r + N_NR_PARTIAL] >= min_partial:
            nxt[slab] = discard
            discard = slab
        else:
            _add_partial(st, cache, slab, True)
            _stat(st, cache, cpu, FREE_ADD_PARTIAL, 1)
        slab = following
    while discard != NIL:
        following = nxt[discard]
        nxt[discard] = NIL
        _stat(st, cache, cpu, DEACTIVATE_EMPTY, 1)
        discard_slab(st, cache, cpu, discard)
        _stat(st, cache, cpu, FREE_SLAB, 1)
        discard = following
    return 0


@jit
def _put_cpu_partial(st, cache, cpu, slab, drain):
    """``put_cpu_partial``: push ``slab`` on ``cpu``'s partial list.

    When ``drain`` and the list already holds ``cpu_partial_slabs``, first move the whole list to
    the node."""
    cpt = st.cpu
    nxt = st.pg_next
    nslabs = st.sl_slabs
    c = _cpu_row(st, cache, cpu)
    old = cpt[c + C_PARTIAL]
    slabs = 0
    to_put = NIL
    if old != NIL:
        if drain and nslabs[old] >= _ca(st, cache, CA_CPU_PARTIAL_SLABS):
            to_put = old
            old = NIL
        else:
            slabs = nslabs[old]
    nslabs[slab] = slabs + 1
    nxt[slab] = old
    st.pg_flags[slab] |= PG_CPU_PARTIAL
    cpt[c + C_PARTIAL] = slab
    if to_put != NIL:
        put_partials(st, cache, cpu, to_put)
        _stat(st, cache, cpu, CPU_PARTIAL_DRAIN, 1)


@jit
def _get_partial_node(st, cache, cpu, node):
    """``get_partial_node``: take the first slab of ``node``'s partial list for the CPU, or NIL.

    The slab is frozen by the caller; ``cpu_partial_slabs / 2 + 1`` more at most move to the
    CPU's partial list (``slub_get_cpu_partial``: slabs, not objects)."""
    nd = st.node
    nxt = st.pg_next
    r = _node_row(st, cache, node)
    cpu_partial = _ca(st, cache, CA_CPU_PARTIAL_SLABS)
    partial = NIL
    partial_slabs = 0
    slab = nd[r + N_PARTIAL_HEAD]
    while slab != NIL:
        following = nxt[slab]
        _remove_partial(st, cache, slab)
        if partial == NIL:
            partial = slab
            _stat(st, cache, cpu, ALLOC_FROM_PARTIAL, 1)
            if cpu_partial == 0:
                break
        else:
            _put_cpu_partial(st, cache, cpu, slab, False)
            _stat(st, cache, cpu, CPU_PARTIAL_NODE, 1)
            partial_slabs += 1
            if partial_slabs > cpu_partial // 2:
                break
        slab = following
    return partial


@unit
def get_partial(st, cache, cpu, node, thisnode):
    """``get_partial``: the local (or requested) node first, then ``get_any_partial``.

    Other nodes holding more than ``min_partial`` partial slabs, if the random draw passes
    ``remote_node_defrag_ratio`` and the request did not pin a node. The slab or NIL."""
    cpu_node = st.cpu_node[cpu]
    search = cpu_node if node < 0 else node
    slab = _get_partial_node(st, cache, cpu, search)
    if slab != NIL or (node >= 0 and thisnode):
        return slab
    ratio = _ca(st, cache, CA_DEFRAG_RATIO)
    if ratio == 0 or _rand(st) % 1024 > ratio:
        return NIL
    nnodes = st.nnodes
    nd = st.node
    min_partial = _ca(st, cache, CA_MIN_PARTIAL)
    for i in range(nnodes):
        n = (cpu_node + i) % nnodes
        if nd[_node_row(st, cache, n) + N_NR_PARTIAL] > min_partial:
            slab = _get_partial_node(st, cache, cpu, n)
            if slab != NIL:
                if n != cpu_node:
                    _stat(st, cache, cpu, ALLOC_REMOTE_PARTIAL, 1)
                return slab
    return NIL


# ---- freeing to a slab that is not the CPU's -----------------------------------------------
@jit(inline=True)
def _slab_free_fast(st, cache, cpu, slab, head, tail, cnt, kept=False):
    """``__slab_free``'s common cases, inline.

    The slab keeps free objects before and after and is not frozen, so no list changes; or, in a
    cache without CPU partial lists (all of 7.0's), a full slab that keeps objects in use goes to
    the tail of its node's list (FREE_ADD_PARTIAL). Splice the chain, lower ``inuse``. ``kept``: a
    chain that may empty the slab, which the caller knows stays (7.0's bulk free, after
    ``bulk._discards``: its node keeps fewer than ``min_partial`` partial slabs), handled the same
    way. False (nothing done) when :func:`slab_free` must handle it."""
    fl = st.sl_freelist
    prior = fl[slab]
    inuse = st.sl_inuse[slab] - cnt
    if inuse == 0 and not kept or st.pg_flags[slab] & (PG_FROZEN | PG_ISOLATED | PG_SORTED):
        return False
    if prior == 0 and _ca(st, cache, CA_HAS_CPU_PARTIAL):      # to a CPU partial list
        return False
    _set_fp(st.mem, _ca(st, cache, CA_OFFSET), _ca(st, cache, CA_FP_KEY), tail, prior)
    fl[slab] = head
    st.sl_inuse[slab] = inuse
    if prior == 0:                      # was full: add_partial(n, slab, ADD_TO_TAIL)
        _add_partial_inline(st, cache, slab, True)
        _stat(st, cache, cpu, FREE_ADD_PARTIAL, 1)
    return True


@unit
def slab_free(st, cache, cpu, slab, head, tail, cnt):
    """``__slab_free``: put the chain ``head..tail`` of ``cnt`` objects on ``slab``'s free list. 0.

    The objects are already linked through their free pointers; the slab's list place is fixed."""
    fl = st.sl_freelist
    flags = st.pg_flags
    if flags[slab] & PG_ISOLATED:       # never trusted again: its frees are leaked
        return 0
    prior = fl[slab]
    _set_fp(st.mem, _ca(st, cache, CA_OFFSET), _ca(st, cache, CA_FP_KEY), tail, prior)
    fl[slab] = head
    inuse = st.sl_inuse[slab] - cnt
    st.sl_inuse[slab] = inuse
    if flags[slab] & PG_SORTED:         # a sorted list: to its new place
        sorted_refile(st, cache, slab)
    if flags[slab] & PG_FROZEN:
        _stat(st, cache, cpu, FREE_FROZEN, 1)
        return 0
    has_cpu_partial = _ca(st, cache, CA_HAS_CPU_PARTIAL)
    if prior == 0 and has_cpu_partial:
        _put_cpu_partial(st, cache, cpu, slab, True)
        _stat(st, cache, cpu, CPU_PARTIAL_FREE, 1)
        return 0
    if inuse != 0 and prior != 0:
        return 0
    if prior != 0 and not flags[slab] & PG_NODE_PARTIAL:
        return 0                    # on a CPU's partial list: it stays there
    r = _node_row(st, cache, _slab_nid(st, slab))
    if inuse == 0 and st.node[r + N_NR_PARTIAL] >= _ca(st, cache, CA_MIN_PARTIAL):
        if prior != 0:
            _remove_partial(st, cache, slab)
            _stat(st, cache, cpu, FREE_REMOVE_PARTIAL, 1)
        _stat(st, cache, cpu, FREE_SLAB, 1)
        discard_slab(st, cache, cpu, slab)
        return 0
    if not has_cpu_partial and prior == 0:
        _add_partial(st, cache, slab, True)
        _stat(st, cache, cpu, FREE_ADD_PARTIAL, 1)
    return 0


# ---- shrinking -------------------------------------------------------------------------------
@unit
def shrink_node(st, cache, cpu, node):
    """``__kmem_cache_do_shrink`` for one node: free empty partial slabs, re-order the others.

    It frees every empty partial slab and moves the slabs with 1..32 free objects to the head,
    fewest free first. Returns slabs freed."""
    nd = st.node
    nxt = st.pg_next
    prv = st.pg_prev
    inuse = st.sl_inuse
    objects = st.sl_objects
    r = _node_row(st, cache, node)
    bucket = st.scratch             # bucket[i]: slabs with i + 1 free objects (list_move)
    for i in range(SHRINK_PROMOTE_MAX):
        bucket[i] = NIL
    discard = NIL
    freed = 0
    slab = nd[r + N_PARTIAL_HEAD]
    while slab != NIL:
        following = nxt[slab]
        free = objects[slab] - inuse[slab]
        if free == objects[slab]:
            _remove_partial(st, cache, slab)
            nxt[slab] = discard
            discard = slab
        elif free <= SHRINK_PROMOTE_MAX:
            _remove_partial(st, cache, slab)
            nxt[slab] = bucket[free - 1]
            bucket[free - 1] = slab
        slab = following
    for i in range(SHRINK_PROMOTE_MAX - 1, -1, -1):     # list_splice each bucket to the head
        s = bucket[i]                   # the bucket is a stack: reverse it, then push each,
        rev = NIL                       # so that its first member ends up first
        while s != NIL:
            following = nxt[s]
            nxt[s] = rev
            rev = s
            s = following
        while rev != NIL:
            following = nxt[rev]
            _add_partial(st, cache, rev, False)
            rev = following
    while discard != NIL:
        following = nxt[discard]
        nxt[discard] = NIL
        prv[discard] = NIL
        discard_slab(st, cache, cpu, discard)
        freed += 1
        discard = following
    return freed
