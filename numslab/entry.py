"""Kernel entry points: the public operations as single jitted calls (sheaves first, then the
CPU slab), shared by the Python facade and by ``numslab.jit`` for users' own @njit code."""
from __future__ import annotations


from ._jit import jit
from ._layout import (C_FREELIST, C_LIVE, C_MAIN, C_SPARE, CA_OBJECT_SIZE, CA_OBJECTS, CA_OFFSET,
                      CA_SHEAF_CAPACITY, F_CPU, F_CPU_NODE, F_SL_CACHE, G_NCPUS,
                      G_NNODES, NIL, PG_LARGE, SH_OBJECTS, SH_SIZE, _g, _o, _stat)
from .bulk import (_alloc_bulk_slab, _alloc_new_slabs, _alloc_partial_slabs, _batch_fail,
                   _check_batch, _check_objects, _free_bulk_raw, _uncount)
from .cpucache import (_do_slab_free_chain, _flush_cpu, _hand_out, _hand_out_run, _slab_alloc,
                       _take_back, _zero)
from .debug import E_LARGE, _live_set, _locate
from .flags import (__GFP_ZERO, ALLOC_ARRAY_FULL_COUNT, ALLOC_ARRAY_LOCAL, SLAB_ARRAY_ALLOC_ALL, SLAB_ARRAY_ALLOC_FULL_COUNT, SLAB_ARRAY_ALLOC_LOCAL,
                    SLAB_ARRAY_ALLOC_NEW, SLAB_ARRAY_ALLOC_PARTIAL)
from .pages import _free_block_checked
from .sheaves import (_alloc_from_pcs, _alloc_from_pcs_bulk, _barn_shrink, _free_empty_sheaf,
                      _free_to_pcs, _free_to_pcs_bulk, _pcs_flush_all, _sheaf_put, _sheaf_take,
                      _w)
from .slablists import _ca, _cpu_row, _get_fp, _shrink_node, _slab_nid


@jit(inline="always")
def _kmem_cache_alloc(state, mem, cache, cpu, node, gfp):
    """``kmem_cache_alloc_node``: from the CPU's sheaves when the cache has them, else (or
    if they cannot serve) through the CPU slab. Address or 0."""
    if _ca(state, cache, CA_SHEAF_CAPACITY):
        obj = _alloc_from_pcs(state, mem, cache, cpu, gfp, node)
        if obj:
            _hand_out(state, mem, cache, cpu, obj, gfp)
            return obj
    return _slab_alloc(state, mem, cache, cpu, node, gfp)


@jit
def _kmem_cache_alloc_any(state, mem, cache, cpu, gfp):
    """``kmem_cache_alloc``: any node (one argument fewer to unbox from Python)."""
    return _kmem_cache_alloc(state, mem, cache, cpu, -1, gfp)


@jit(inline="always")
def _slab_free_one(state, mem, cache, cpu, slab, addr):
    """``slab_free`` of a checked object: a local-node object goes to the sheaves if the
    cache has them, else (or if they are full) to the CPU slab layer."""
    _take_back(state, cache, cpu, addr)
    if _ca(state, cache, CA_SHEAF_CAPACITY) and \
            _slab_nid(state, slab) == state[_o(state, F_CPU_NODE) + cpu]:
        if _free_to_pcs(state, mem, cache, cpu, addr):
            return
    _do_slab_free_chain(state, mem, cache, cpu, slab, addr, addr, 1)


@jit(inline="always")
def _kmem_cache_free(state, mem, cache, cpu, addr):
    """``kmem_cache_free``: 0, or a negative error code with nothing changed."""
    err, slab = _locate(state, addr, cache)
    if err:
        return err
    _slab_free_one(state, mem, cache, cpu, slab, addr)
    return 0


@jit(inline="always")
def _kfree(state, mem, cpu, addr):
    """``kfree``: find the slab (or large block) from the address alone and free it.
    0, or a negative code with nothing changed."""
    err, slab = _locate(state, addr, NIL)
    if err == E_LARGE:
        return _free_block_checked(state, cpu, addr, -1, PG_LARGE)
    if err:
        return err
    _slab_free_one(state, mem, state[_o(state, F_SL_CACHE) + slab], cpu, slab, addr)
    return 0


# ---- bulk ---------------------------------------------------------------------------------------
@jit
def _kmem_cache_alloc_bulk(state, mem, cache, cpu, gfp, nr, p):
    """``kmem_cache_alloc_bulk``: ``p[:nr]`` from the sheaves, then the CPU slab. Returns
    ``nr``, or 0 with nothing taken (all or nothing)."""
    i = 0
    if _ca(state, cache, CA_SHEAF_CAPACITY):
        i = _alloc_from_pcs_bulk(state, mem, cache, cpu, nr, p, 0)
    if i < nr and _alloc_bulk_slab(state, mem, cache, cpu, gfp, nr - i, p, i) == 0:
        if i:
            _free_bulk_raw(state, mem, cache, cpu, i, p)
        return 0
    if gfp & __GFP_ZERO:
        size = _ca(state, cache, CA_OBJECT_SIZE)
        for j in range(nr):
            _zero(mem, p[j], size)
    for j in range(nr):
        _live_set(state, p[j])
    state[_o(state, F_CPU) + _cpu_row(state, cache, cpu) + C_LIVE] += nr
    return nr


@jit
def _kmem_cache_free_bulk(state, mem, cache, cpu, nr, p):
    """``kmem_cache_free_bulk`` (``cache`` NIL: ``kfree_bulk``): check every element as a
    single free would, then free through the sheaves or detached freelists. 0, or the first
    bad element's error code (index in G_ERR2) with nothing freed. ``p`` is permuted."""
    err = _check_batch(state, cache, nr, p)
    if err:
        return err
    if cache == NIL:
        _uncount(state, cpu, nr, p)
    else:
        state[_o(state, F_CPU) + _cpu_row(state, cache, cpu) + C_LIVE] -= nr
    if cache != NIL and _ca(state, cache, CA_SHEAF_CAPACITY):
        _free_to_pcs_bulk(state, mem, cache, cpu, nr, p)
    else:
        _free_bulk_raw(state, mem, cache, cpu, nr, p)
    return 0


# ---- bulk fast paths, inlined into the entry points ---------------------------------------------
@jit(inline="always")
def _alloc_bulk_fast(state, mem, cache, cpu, gfp, nr, p):
    """``kmem_cache_alloc_bulk``'s common case on a cache with sheaves: the CPU's main sheaf
    holds ``nr`` objects. Take them (``alloc_from_pcs_bulk`` in one batch) and hand them
    out. Returns ``nr``, or -1 if the case does not apply."""
    main = state[_o(state, F_CPU) + _cpu_row(state, cache, cpu) + C_MAIN]
    if main == 0 or mem[_w(main, SH_SIZE)] < nr:
        return -1
    _sheaf_take(state, mem, cache, cpu, main, nr, p, 0)
    _hand_out_run(state, mem, cache, cpu, gfp, p, 0, nr)
    return nr


@jit(inline="always")
def _free_bulk_fast(state, mem, cache, cpu, nr, p):
    """``kmem_cache_free_bulk``'s common case on a cache with sheaves on one node: ``nr``
    objects fit in the CPU's main sheaf. Check them all, then put them in (what
    ``free_to_pcs_bulk`` does in one batch). Returns 0 when done, 1 if the case does not
    apply, or a negative error code with nothing freed (index in G_ERR2)."""
    c = _o(state, F_CPU) + _cpu_row(state, cache, cpu)
    main = state[c + C_MAIN]
    if main == 0 or _g(state, G_NNODES) != 1 or \
            mem[_w(main, SH_SIZE)] + nr > _ca(state, cache, CA_SHEAF_CAPACITY):
        return 1
    bad = _check_objects(state, cache, nr, p)
    if bad >= 0:                    # nothing written yet: the sheaf's bytes stay as they were
        return _batch_fail(state, cache, bad, p)
    _sheaf_put(state, mem, cache, cpu, main, nr, p, 0)
    state[c + C_LIVE] -= nr
    return 0


# ---- the seed's array API -------------------------------------------------------------------------
@jit
def _alloc_local(state, mem, cache, cpu, gfp, nr, p, start):
    """SLAB_ARRAY_ALLOC_LOCAL: objects the CPU already holds: its main and spare sheaves,
    then its lockless freelist. Returns how many went into ``p[start:]``."""
    got = 0
    if _ca(state, cache, CA_SHEAF_CAPACITY):
        cpt = _o(state, F_CPU)
        c = _cpu_row(state, cache, cpu)
        for col in (C_MAIN, C_SPARE):
            sheaf = state[cpt + c + col]
            if not sheaf:
                continue
            size = mem[_w(sheaf, SH_SIZE)]
            take = min(size, nr - got)
            o = _w(sheaf, SH_OBJECTS) + size - take
            for k in range(take):
                p[start + got + k] = mem[o + k]
            mem[_w(sheaf, SH_SIZE)] = size - take
            got += take
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    offset = _ca(state, cache, CA_OFFSET)
    obj = state[cpt + c + C_FREELIST]
    while obj != 0 and got < nr:
        p[start + got] = obj
        got += 1
        obj = _get_fp(mem, offset, obj)
    state[cpt + c + C_FREELIST] = obj
    _hand_out_run(state, mem, cache, cpu, gfp, p, start, got)
    _stat(state, cache, cpu, ALLOC_ARRAY_LOCAL, got)
    return got


@jit
def _kmem_cache_alloc_array(state, mem, cache, cpu, gfp, nr, p, flags):
    """``kmem_cache_alloc_array`` (RFC, January 2015): PARTIAL, then NEW while more than a
    slab's worth is wanted, then LOCAL, then FULL_COUNT one by one; no flags means all.
    Returns the objects allocated into ``p`` (may be short without FULL_COUNT)."""
    if flags & SLAB_ARRAY_ALLOC_ALL == 0:
        flags |= SLAB_ARRAY_ALLOC_ALL
    i = 0
    if flags & SLAB_ARRAY_ALLOC_PARTIAL and i < nr:
        i += _alloc_partial_slabs(state, mem, cache, cpu, gfp, nr - i, p, i)
    if flags & SLAB_ARRAY_ALLOC_NEW and nr - i > _ca(state, cache, CA_OBJECTS):
        i += _alloc_new_slabs(state, mem, cache, cpu, gfp, nr - i, p, i)
    if flags & SLAB_ARRAY_ALLOC_LOCAL and i < nr:
        i += _alloc_local(state, mem, cache, cpu, gfp, nr - i, p, i)
    if flags & SLAB_ARRAY_ALLOC_FULL_COUNT:
        start = i
        while i < nr:
            obj = _kmem_cache_alloc(state, mem, cache, cpu, -1, gfp)
            if obj == 0:
                break
            p[i] = obj
            i += 1
        _stat(state, cache, cpu, ALLOC_ARRAY_FULL_COUNT, i - start)
    return i


# ---- whole-cache operations -------------------------------------------------------------------------
@jit
def _cache_shrink(state, mem, cache, cpu):
    """``__kmem_cache_shrink`` run on ``cpu``: flush every CPU (sheaves, then CPU slab and
    partials, each on its own CPU as ``flush_all`` does), then per node empty the barn, free
    empty slabs (their pages to ``cpu``'s pcp lists) and re-order the partial list. Slabs
    freed."""
    sheaves = _ca(state, cache, CA_SHEAF_CAPACITY) != 0
    for other in range(_g(state, G_NCPUS)):
        if sheaves:
            _pcs_flush_all(state, mem, cache, other)
        _flush_cpu(state, mem, cache, other)
    freed = 0
    for node in range(_g(state, G_NNODES)):
        if sheaves:
            _barn_shrink(state, mem, cache, node, cpu)
        freed += _shrink_node(state, cache, cpu, node)
    return freed


@jit
def _cache_release(state, mem, cache, cpu):
    """Last step of destroy: shrink, then free every CPU's main sheaf. The caller checked
    that no object and no prefilled sheaf is outstanding."""
    _cache_shrink(state, mem, cache, cpu)
    if _ca(state, cache, CA_SHEAF_CAPACITY):
        cpt = _o(state, F_CPU)
        for other in range(_g(state, G_NCPUS)):
            c = _cpu_row(state, cache, other)
            if state[cpt + c + C_MAIN]:
                _free_empty_sheaf(state, mem, cache, cpu, state[cpt + c + C_MAIN])
                state[cpt + c + C_MAIN] = 0
    for other in range(_g(state, G_NCPUS)):       # barn flushes may have refilled CPU lists
        _flush_cpu(state, mem, cache, other)
    for node in range(_g(state, G_NNODES)):
        _shrink_node(state, cache, cpu, node)


# ---- checked wrappers for the facade (arrays re-checked at run time) --------------------------
E_BAD_ARRAY = -9      #: ``nr`` < 0, or the array is shorter than ``nr`` or not contiguous int64


@jit(inline="always")
def _bad_array(p, nr):
    """True when ``p`` cannot hold ``nr`` int64 entries contiguously."""
    return nr < 0 or nr > p.shape[0] or (p.shape[0] > 1 and p.strides[0] != 8)


@jit
def _alloc_bulk_entry(state, mem, cache, cpu, gfp, nr, p):
    """``kmem_cache_alloc_bulk`` for the facade: ``nr``, 0, or E_BAD_ARRAY."""
    if _bad_array(p, nr):
        return E_BAD_ARRAY
    n = _alloc_bulk_fast(state, mem, cache, cpu, gfp, nr, p)
    if n >= 0:
        return n
    return _kmem_cache_alloc_bulk(state, mem, cache, cpu, gfp, nr, p)


@jit
def _free_bulk_entry(state, mem, cache, cpu, nr, p):
    """``kmem_cache_free_bulk``/``kfree_bulk`` for the facade: 0 or an error code."""
    if _bad_array(p, nr):
        return E_BAD_ARRAY
    if cache != NIL:
        err = _free_bulk_fast(state, mem, cache, cpu, nr, p)
        if err <= 0:
            return err
    return _kmem_cache_free_bulk(state, mem, cache, cpu, nr, p)


@jit
def _alloc_array_entry(state, mem, cache, cpu, gfp, nr, p, flags):
    """``kmem_cache_alloc_array`` for the facade: the count, or E_BAD_ARRAY."""
    if _bad_array(p, nr):
        return E_BAD_ARRAY
    return _kmem_cache_alloc_array(state, mem, cache, cpu, gfp, nr, p, flags)


@jit
def _alloc_from_sheaf(state, mem, cache, cpu, gfp, sheaf):
    """``kmem_cache_alloc_from_sheaf``: pop the user's prefilled sheaf; 0 if it is empty."""
    size = mem[_w(sheaf, SH_SIZE)]
    if size == 0:
        return 0
    size -= 1
    mem[_w(sheaf, SH_SIZE)] = size
    obj = mem[_w(sheaf, SH_OBJECTS) + size]
    _hand_out(state, mem, cache, cpu, obj, gfp)
    return obj
