"""The prefilled-sheaf API: prefill, refill and return a sheaf.

``kmem_cache_prefill_sheaf``, ``kmem_cache_refill_sheaf`` and ``kmem_cache_return_sheaf``
(``kmem_cache_alloc_from_sheaf`` is ``ops.alloc_from_sheaf``).

A sheaf held by a caller is on its cache's ``CA_USER_SHEAVES`` list (linked through
``SH_NEXT``), so that ``validate`` and ``kmem_cache_destroy`` find it. Under KERNEL_NEXT a
prefilled sheaf is refilled from the barn before the slabs ("mm/slub: refill prefilled sheaves
from the barn"), and the barn keeps what is left of the sheaf it took from as its partial sheaf.
"""
from __future__ import annotations

from ..flags import (__GFP_NO_OBJ_EXT, BARN_GET, BARN_GET_FAIL, BARN_PUT, SHEAF_PREFILL_FAST,
                     SHEAF_PREFILL_OVERSIZE, SHEAF_PREFILL_SLOW, SHEAF_RETURN_FAST,
                     SHEAF_RETURN_SLOW)
from .layout import (C_SPARE, CA_NCOLS, CA_SHEAF_CAPACITY, CA_USER_SHEAVES, KERNEL_7_0,
                     KERNEL_7_3, KERNEL_NEXT, MAX_FULL_SHEAVES, N_BARN_EMPTY, N_BARN_FULL,
                     N_NR_EMPTY, N_NR_FULL, SH_CACHE, SH_CAPACITY, SH_NEXT, SH_OBJECTS, SH_SIZE,
                     _ca, _cpu_row, _node_index, _stat)
from .native import jit, unit
from .live import _settled
from .sheaves import (_alloc_empty_sheaf, _barn, _barn_pop, _barn_push, _fill_oversize,
                      _free_empty_sheaf, _objs_at, _sheaf_kfree, _sheaf_kmalloc, _w,
                      refill_sheaf, sheaf_flush_unused)


@jit
def _user_sheaf_link(st, cache, sheaf):
    """Record a sheaf handed to the user (so ``validate`` and destroy can find it)."""
    ca = st.ca
    st.mem[_w(sheaf, SH_NEXT)] = ca[cache * CA_NCOLS + CA_USER_SHEAVES]
    ca[cache * CA_NCOLS + CA_USER_SHEAVES] = sheaf


@unit
def user_sheaf_unlink(st, cache, sheaf):
    """Forget a user sheaf; 0 if ``sheaf`` is not one of this cache's, else 1."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    ca = st.ca
    mem = st.mem
    i = cache * CA_NCOLS + CA_USER_SHEAVES
    prev = 0
    s = ca[i]
    while s and s != sheaf:
        prev = s
        s = mem[_w(s, SH_NEXT)]
    if not s:
        return 0
    if prev:
        mem[_w(prev, SH_NEXT)] = mem[_w(s, SH_NEXT)]
    else:
        ca[i] = mem[_w(s, SH_NEXT)]
    mem[_w(s, SH_NEXT)] = 0
    return 1


@jit
def _refill_sheaf_from_barn(st, cache, cpu, sheaf):
    """``refill_sheaf_from_barn`` (KERNEL_NEXT): top ``sheaf`` up from the barn; 1 if full.

    Top ``sheaf`` up to the cache's capacity from the barn of ``cpu``'s node, its partial sheaf
    first, then its full sheaves from the head of the list, each giving the objects at its top; a
    sheaf left with objects becomes the barn's partial sheaf, an emptied one goes on the empty list
    (with no limit: it was in the barn already). 1 (counted BARN_GET) if ``sheaf`` is now full,
    else 0 (it keeps what it got)."""
    nd = st.node
    mem = st.mem
    r = _barn(st, cache, cpu)
    bp = _node_index(st, cache, st.cpu_node[cpu])      # the barn's partial sheaf
    partial = st.barn_partial
    if not nd[r + N_NR_FULL] and not partial[bp]:
        return 0
    cap = _ca(st, cache, CA_SHEAF_CAPACITY)
    size = mem[_w(sheaf, SH_SIZE)]
    dst = _w(sheaf, SH_OBJECTS)
    while size < cap:
        src = partial[bp]
        partial[bp] = 0
        if not src:
            if not nd[r + N_NR_FULL]:
                break
            src = _barn_pop(st, r, N_BARN_FULL, N_NR_FULL)
        left = mem[_w(src, SH_SIZE)]
        move = min(cap - size, left)
        left -= move
        top = _w(src, SH_OBJECTS) + left
        for k in range(move):
            mem[dst + size + k] = mem[top + k]
        size += move
        mem[_w(src, SH_SIZE)] = left
        if left:
            partial[bp] = src
        else:
            _barn_push(st, r, N_BARN_EMPTY, N_NR_EMPTY, src)
    mem[_w(sheaf, SH_SIZE)] = size
    if size < cap:
        return 0
    _stat(st, cache, cpu, BARN_GET, 1)
    return 1


@jit
def _prefill_refill(st, cache, cpu, sheaf, gfp):
    """``__prefill_sheaf_pfmemalloc`` (numslab has no pfmemalloc reserves).

    Under KERNEL_NEXT the barn first (:func:`_refill_sheaf_from_barn`), then ``refill_sheaf``; 0 or
    -1."""
    if st.kernel >= KERNEL_NEXT and _refill_sheaf_from_barn(st, cache, cpu, sheaf):
        return 0
    return refill_sheaf(st, cache, cpu, sheaf, gfp)


@jit
def _oversize_sheaf(st, cache, cpu, size, gfp):
    """An oversize prefilled sheaf for ``size`` objects, kmalloc'ed; its handle or 0.

    Before 7.3 a plain kmalloc; from 7.3 ``__alloc_empty_sheaf(s, gfp, SLAB_ALLOC_DEFAULT, size)``:
    :func:`_alloc_empty_sheaf` (counted ``SHEAF_ALLOC``, a kmalloc cache's marked
    ``SLAB_ALLOC_NO_RECURSE``, numslab's ``__GFP_NO_OBJ_EXT``) for a caller whose flags say nothing
    of recursion, so never refused for it."""
    if st.kernel < KERNEL_7_3:
        return _sheaf_kmalloc(st, cpu, size, gfp)
    return _alloc_empty_sheaf(st, cache, cpu, size, gfp & ~__GFP_NO_OBJ_EXT)


@jit
def _oversize_sheaf_free(st, cache, cpu, sheaf):
    """Free an oversize prefilled sheaf: a plain kfree before 7.3, ``free_empty_sheaf`` from 7.3.

    From 7.3 counted ``SHEAF_FREE``."""
    if st.kernel < KERNEL_7_3:
        _sheaf_kfree(st, cpu, sheaf)
    else:
        _free_empty_sheaf(st, cache, cpu, sheaf)


@unit
def prefill_sheaf(st, cache, cpu, gfp, size):
    """``kmem_cache_prefill_sheaf``: a sheaf holding at least ``size`` objects; its address, or 0.

    An oversize one if ``size`` exceeds the capacity, always for a debug cache, which has none:
    6.18's kernel would take the per-CPU path for a size of 0 there, through ``s->cpu_sheaves``
    that such a cache does not have. 0 when memory runs out or (7.0, which returns NULL for it)
    ``size`` is 0."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    if size == 0 and st.kernel >= KERNEL_7_0:
        return 0
    mem = st.mem
    cap = _ca(st, cache, CA_SHEAF_CAPACITY)
    if size > cap or cap == 0:
        sheaf = _oversize_sheaf(st, cache, cpu, size, gfp)
        if not sheaf:
            return 0
        _stat(st, cache, cpu, SHEAF_PREFILL_OVERSIZE, 1)
        mem[_w(sheaf, SH_CAPACITY)] = size
        mem[_w(sheaf, SH_CACHE)] = cache
        if size and _fill_oversize(st, cache, cpu, gfp, size, _objs_at(st, sheaf)) == 0:
            _oversize_sheaf_free(st, cache, cpu, sheaf)
            return 0
        mem[_w(sheaf, SH_SIZE)] = size
        _user_sheaf_link(st, cache, sheaf)
        return sheaf
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    sheaf = cpt[c + C_SPARE]
    if sheaf:
        cpt[c + C_SPARE] = 0
        _stat(st, cache, cpu, SHEAF_PREFILL_FAST, 1)
    else:
        _stat(st, cache, cpu, SHEAF_PREFILL_SLOW, 1)
        r = _barn(st, cache, cpu)
        sheaf = _barn_pop(st, r, N_BARN_FULL, N_NR_FULL)
        if not sheaf:
            sheaf = _barn_pop(st, r, N_BARN_EMPTY, N_NR_EMPTY)
        if sheaf and mem[_w(sheaf, SH_SIZE)] > 0:
            _stat(st, cache, cpu, BARN_GET, 1)
        else:
            _stat(st, cache, cpu, BARN_GET_FAIL, 1)
    if not sheaf:
        sheaf = _alloc_empty_sheaf(st, cache, cpu, cap, gfp)
        if not sheaf:
            return 0
    _user_sheaf_link(st, cache, sheaf)      # held while it refills (6.18: a CPU slab the
    if mem[_w(sheaf, SH_SIZE)] < size:      # refill gives back counts as lost the objects
        if _prefill_refill(st, cache, cpu, sheaf, gfp):         # no sheaf holds)
            user_sheaf_unlink(st, cache, sheaf)
            sheaf_flush_unused(st, cache, cpu, sheaf)
            _free_empty_sheaf(st, cache, cpu, sheaf)
            return 0
    return sheaf


@unit
def refill_user_sheaf(st, cache, cpu, gfp, sheaf, size):
    """``kmem_cache_refill_sheaf``: make ``sheaf`` hold at least ``size`` objects.

    Returns the sheaf to use from now on (a new one if it had to grow), or 0 on -ENOMEM (the old
    sheaf then stays the user's, as it was but for what a 7.x ``refill_sheaf``, and under ``next``
    the barn before it, put in)."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    mem = st.mem
    have = mem[_w(sheaf, SH_SIZE)]
    if have >= size:
        return sheaf
    capacity = mem[_w(sheaf, SH_CAPACITY)]
    if capacity >= size:
        if capacity == _ca(st, cache, CA_SHEAF_CAPACITY):
            if _prefill_refill(st, cache, cpu, sheaf, gfp):
                return 0
        else:
            if _fill_oversize(st, cache, cpu, gfp, capacity - have,
                              _objs_at(st, sheaf) + 8 * have) == 0:
                return 0
            mem[_w(sheaf, SH_SIZE)] = capacity
        return sheaf
    new = prefill_sheaf(st, cache, cpu, gfp, size)
    if not new:
        return 0
    return_user_sheaf(st, cache, cpu, gfp, sheaf)
    return new


@unit
def return_user_sheaf(st, cache, cpu, gfp, sheaf):
    """The user's ``kmem_cache_return_sheaf``: free an oversize sheaf, keep or flush others. 0.

    An oversize sheaf (every sheaf of a cache without sheaves, 6.18's of size 0 included: never its
    spare) is flushed and freed; a normal one becomes the CPU's spare, or is topped up into the
    barn, or flushed and freed. The sheaf is forgotten as the user's in the same call (two left its
    objects held by nothing a ``validate`` in another thread could see), and only after the slow
    path's refill: under 6.18 a CPU slab the refill gives back (``deactivate_slab``) counts as lost
    the objects no sheaf holds."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    mem = st.mem
    cap = _ca(st, cache, CA_SHEAF_CAPACITY)
    if mem[_w(sheaf, SH_CAPACITY)] != cap or cap == 0:
        user_sheaf_unlink(st, cache, sheaf)
        sheaf_flush_unused(st, cache, cpu, sheaf)
        _oversize_sheaf_free(st, cache, cpu, sheaf)
        return 0
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    if not cpt[c + C_SPARE]:
        user_sheaf_unlink(st, cache, sheaf)
        cpt[c + C_SPARE] = sheaf
        _stat(st, cache, cpu, SHEAF_RETURN_FAST, 1)
        return 0
    _stat(st, cache, cpu, SHEAF_RETURN_SLOW, 1)
    r = _barn(st, cache, cpu)
    failed = st.node[r + N_NR_FULL] >= MAX_FULL_SHEAVES or \
        refill_sheaf(st, cache, cpu, sheaf, gfp) != 0
    user_sheaf_unlink(st, cache, sheaf)
    if failed:
        sheaf_flush_unused(st, cache, cpu, sheaf)
        _free_empty_sheaf(st, cache, cpu, sheaf)
        return 0
    _barn_push(st, r, N_BARN_FULL, N_NR_FULL, sheaf)
    _stat(st, cache, cpu, BARN_PUT, 1)
    return 0
