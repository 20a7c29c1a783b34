"""Per-CPU sheaves (Linux 6.18): arrays of object pointers in front of the CPU slab, a
``main`` and a ``spare`` per CPU, and a barn of full and empty sheaves per node.

A sheaf is a kmalloc'ed object in the arena, as in the kernel: int64 words ``SH_NEXT``
(barn or user list link), ``SH_CAPACITY``, ``SH_CACHE``, ``SH_SIZE``, then ``objects[]``.
Objects in sheaves are allocated from their slabs but not handed out (live bit clear).
"""
from __future__ import annotations

import numpy as np

from ._jit import jit
from ._layout import (C_MAIN, C_SPARE, CA_SHEAF_CAPACITY, CA_USER_SHEAVES, F_CA, F_CPU,
                      F_CPU_NODE, F_KMALLOC, F_NODE, F_SL_CACHE, MAX_FULL_SHEAVES, N_BARN_EMPTY,
                      N_BARN_FULL, N_NR_EMPTY, N_NR_FULL, NR_KMALLOC, SH_CACHE, SH_CAPACITY,
                      SH_NEXT, SH_OBJECTS, SH_SIZE, SHEAF_HEADER, CA_NCOLS, G_NNODES, PG_LARGE,
                      _f, _g, _o, _stat)
from .bulk import _alloc_bulk_slab, _free_bulk_raw
from .cpucache import _do_slab_free
from .debug import E_LARGE, _locate
from .flags import (__GFP_DIRECT_RECLAIM, __GFP_ZERO, ALLOC_PCS, BARN_GET, BARN_GET_FAIL,
                    BARN_PUT, BARN_PUT_FAIL, FREE_PCS, SHEAF_ALLOC, SHEAF_FLUSH, SHEAF_FREE,
                    SHEAF_PREFILL_FAST, SHEAF_PREFILL_OVERSIZE, SHEAF_PREFILL_SLOW,
                    SHEAF_REFILL, SHEAF_RETURN_FAST, SHEAF_RETURN_SLOW)
from .kmalloc import _kmalloc
from .pages import _free_block_checked
from .slablists import _ca, _cpu_row, _node_row, _slab_nid

PCS_BATCH_MAX = 32
KMALLOC_CLASS = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)


# ---- sheaf memory: kmalloc in the arena ------------------------------------------------------
@jit(inline="always")
def _w(sheaf, word):
    """Index of int64 ``word`` of the sheaf at address ``sheaf`` in ``mem``."""
    return (sheaf >> 3) + word


@jit
def _kmalloc_internal(state, mem, cpu, size, gfp):
    """kmalloc from inside a kernel (sizes up to 4 MiB); address or 0."""
    if size <= 8192:
        km = _o(state, F_KMALLOC)
        for i in range(NR_KMALLOC):
            if size <= KMALLOC_CLASS[i]:
                return _kmalloc(state, mem, state[km + i], cpu, -1, gfp, size, 0)
    order = 0
    while (4096 << order) < size:
        order += 1
    return _kmalloc(state, mem, -1, cpu, -1, gfp, size, order)


@jit
def _kfree_internal(state, mem, cpu, addr):
    """kfree of a kmalloc object made by :func:`_kmalloc_internal`."""
    err, slab = _locate(state, addr, -1)
    if err == E_LARGE:
        _free_block_checked(state, cpu, addr, -1, PG_LARGE)
    elif err == 0:
        _do_slab_free(state, mem, state[_o(state, F_SL_CACHE) + slab], cpu, slab, addr)


@jit
def _alloc_empty_sheaf(state, mem, cache, cpu, capacity, gfp):
    """``alloc_empty_sheaf``: kzalloc a sheaf for ``capacity`` objects; address or 0."""
    sheaf = _kmalloc_internal(state, mem, cpu, SHEAF_HEADER + 8 * capacity, gfp | __GFP_ZERO)
    if sheaf:
        mem[_w(sheaf, SH_CAPACITY)] = capacity
        mem[_w(sheaf, SH_CACHE)] = cache
        _stat(state, cache, cpu, SHEAF_ALLOC, 1)
    return sheaf


@jit
def _free_empty_sheaf(state, mem, cache, cpu, sheaf):
    """``free_empty_sheaf``: kfree the sheaf."""
    _kfree_internal(state, mem, cpu, sheaf)
    _stat(state, cache, cpu, SHEAF_FREE, 1)


@jit(inline="always")
def _objs(mem, sheaf):
    """The sheaf's ``objects[]`` as an int64 view of the arena."""
    o = _w(sheaf, SH_OBJECTS)
    return mem[o:o + mem[_w(sheaf, SH_CAPACITY)]]


@jit
def _refill_sheaf(state, mem, cache, cpu, sheaf, gfp):
    """``refill_sheaf``: fill the sheaf to the cache's capacity (all or nothing); 0 or -1."""
    size = mem[_w(sheaf, SH_SIZE)]
    to_fill = _ca(state, cache, CA_SHEAF_CAPACITY) - size
    if to_fill <= 0:
        return 0
    filled = _alloc_bulk_slab(state, mem, cache, cpu, gfp, to_fill, _objs(mem, sheaf), size)
    mem[_w(sheaf, SH_SIZE)] = size + filled
    _stat(state, cache, cpu, SHEAF_REFILL, filled)
    return 0 if filled == to_fill else -1


@jit
def _sheaf_flush_unused(state, mem, cache, cpu, sheaf):
    """``sheaf_flush_unused``: give every object of a detached sheaf back to its slab."""
    size = mem[_w(sheaf, SH_SIZE)]
    if size:
        _stat(state, cache, cpu, SHEAF_FLUSH, size)
        _free_bulk_raw(state, mem, cache, cpu, size, _objs(mem, sheaf))
        mem[_w(sheaf, SH_SIZE)] = 0


@jit
def _sheaf_flush_main(state, mem, cache, cpu):
    """``sheaf_flush_main``: empty the CPU's main sheaf in batches of 32 from the top."""
    sheaf = state[_o(state, F_CPU) + _cpu_row(state, cache, cpu) + C_MAIN]
    objs = _objs(mem, sheaf)
    size = mem[_w(sheaf, SH_SIZE)]
    while size:
        batch = min(PCS_BATCH_MAX, size)
        size -= batch
        mem[_w(sheaf, SH_SIZE)] = size
        _free_bulk_raw(state, mem, cache, cpu, batch, objs[size:size + batch])
        _stat(state, cache, cpu, SHEAF_FLUSH, batch)


# ---- the barn ---------------------------------------------------------------------------------
@jit(inline="always")
def _barn(state, cache, cpu):
    """Row of the barn of ``cpu``'s node (``get_barn``) in field NODE."""
    return _node_row(state, cache, state[_o(state, F_CPU_NODE) + cpu])


@jit
def _barn_pop(state, mem, r, head_col, count_col):
    """Take the first sheaf of a barn list; 0 if empty."""
    nd = _o(state, F_NODE)
    sheaf = state[nd + r + head_col]
    if sheaf:
        state[nd + r + head_col] = mem[_w(sheaf, SH_NEXT)]
        mem[_w(sheaf, SH_NEXT)] = 0
        state[nd + r + count_col] -= 1
    return sheaf


@jit
def _barn_push(state, mem, r, head_col, count_col, sheaf):
    """``list_add`` a sheaf to a barn list (limits are the caller's business)."""
    nd = _o(state, F_NODE)
    mem[_w(sheaf, SH_NEXT)] = state[nd + r + head_col]
    state[nd + r + head_col] = sheaf
    state[nd + r + count_col] += 1


@jit
def _barn_trade(state, mem, cache, cpu, r, want_full):
    """``barn_replace_empty_sheaf`` (``want_full``) or ``barn_replace_full_sheaf``: give the
    CPU's main sheaf to the barn and take one of the other kind as the new main. The
    caller checked that the barn has one."""
    c = _o(state, F_CPU) + _cpu_row(state, cache, cpu) + C_MAIN
    if want_full:
        got = _barn_pop(state, mem, r, N_BARN_FULL, N_NR_FULL)
        _barn_push(state, mem, r, N_BARN_EMPTY, N_NR_EMPTY, state[c])
    else:
        got = _barn_pop(state, mem, r, N_BARN_EMPTY, N_NR_EMPTY)
        _barn_push(state, mem, r, N_BARN_FULL, N_NR_FULL, state[c])
    state[c] = got


# ---- allocation ------------------------------------------------------------------------------
@jit
def _replace_empty_main(state, mem, cache, cpu, gfp):
    """``__pcs_replace_empty_main``: give the CPU a main sheaf with objects (spare, barn,
    or a newly filled one if ``gfp`` may block). True if main now has objects."""
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    spare = state[cpt + c + C_SPARE]
    if spare and mem[_w(spare, SH_SIZE)] > 0:
        state[cpt + c + C_SPARE] = state[cpt + c + C_MAIN]
        state[cpt + c + C_MAIN] = spare
        return True
    r = _barn(state, cache, cpu)
    nd = _o(state, F_NODE)
    if state[nd + r + N_NR_FULL]:                                   # barn_replace_empty_sheaf
        _barn_trade(state, mem, cache, cpu, r, True)
        _stat(state, cache, cpu, BARN_GET, 1)
        return True
    _stat(state, cache, cpu, BARN_GET_FAIL, 1)
    if not gfp & __GFP_DIRECT_RECLAIM:
        return False
    empty = spare
    if empty:
        state[cpt + c + C_SPARE] = 0
    else:
        empty = _barn_pop(state, mem, r, N_BARN_EMPTY, N_NR_EMPTY)
    if empty:
        if _refill_sheaf(state, mem, cache, cpu, empty, gfp):
            _sheaf_flush_unused(state, mem, cache, cpu, empty)
            _free_empty_sheaf(state, mem, cache, cpu, empty)
            return False
        full = empty
    else:
        full = _alloc_empty_sheaf(state, mem, cache, cpu,
                                  _ca(state, cache, CA_SHEAF_CAPACITY), gfp)
        if not full:
            return False
        if _refill_sheaf(state, mem, cache, cpu, full, gfp):
            _free_empty_sheaf(state, mem, cache, cpu, full)
            return False
    main = state[cpt + c + C_MAIN]
    if mem[_w(main, SH_SIZE)] == 0:
        _barn_push(state, mem, r, N_BARN_EMPTY, N_NR_EMPTY, main)
        state[cpt + c + C_MAIN] = full
    elif not state[cpt + c + C_SPARE]:
        state[cpt + c + C_SPARE] = full
    elif mem[_w(state[cpt + c + C_SPARE], SH_SIZE)] == 0:
        _barn_push(state, mem, r, N_BARN_EMPTY, N_NR_EMPTY, state[cpt + c + C_SPARE])
        state[cpt + c + C_SPARE] = full
    else:
        _barn_push(state, mem, r, N_BARN_FULL, N_NR_FULL, full)
        _stat(state, cache, cpu, BARN_PUT, 1)
    return True


@jit
def _alloc_from_pcs(state, mem, cache, cpu, gfp, node):
    """``alloc_from_pcs``: pop the CPU's main sheaf (replacing it if empty); 0 if the
    request wants another node or no sheaf with objects can be had."""
    if node >= 0 and node != state[_o(state, F_CPU_NODE) + cpu]:
        return 0
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    main = state[cpt + c + C_MAIN]
    if mem[_w(main, SH_SIZE)] == 0:
        if not _replace_empty_main(state, mem, cache, cpu, gfp):
            return 0
        main = state[cpt + c + C_MAIN]
    size = mem[_w(main, SH_SIZE)]
    obj = mem[_w(main, SH_OBJECTS) + size - 1]
    if node >= 0 and _slab_nid(state, obj >> 12) != node:
        return 0
    mem[_w(main, SH_SIZE)] = size - 1
    _stat(state, cache, cpu, ALLOC_PCS, 1)
    return obj


@jit(inline="always")
def _sheaf_take(state, mem, cache, cpu, sheaf, n, p, at):
    """Pop the top ``n`` objects of ``sheaf`` into ``p[at:at+n]``, their order kept
    (``alloc_from_pcs_bulk``'s memcpy); ALLOC_PCS += n. Indices are unsigned: no
    wraparound code."""
    size = mem[_w(sheaf, SH_SIZE)] - n
    o = _w(sheaf, SH_OBJECTS) + size
    for k in range(n):
        p[np.uint64(at + k)] = mem[np.uint64(o + k)]
    mem[_w(sheaf, SH_SIZE)] = size
    _stat(state, cache, cpu, ALLOC_PCS, n)


@jit(inline="always")
def _sheaf_put(state, mem, cache, cpu, sheaf, n, p, at):
    """Push ``p[at:at+n]`` on top of ``sheaf``, their order kept (``free_to_pcs_bulk``'s
    memcpy); FREE_PCS += n."""
    size = mem[_w(sheaf, SH_SIZE)]
    o = _w(sheaf, SH_OBJECTS) + size
    for k in range(n):
        mem[np.uint64(o + k)] = p[np.uint64(at + k)]
    mem[_w(sheaf, SH_SIZE)] = size + n
    _stat(state, cache, cpu, FREE_PCS, n)


@jit
def _alloc_from_pcs_bulk(state, mem, cache, cpu, nr, p, start):
    """``alloc_from_pcs_bulk``: copy objects from main, spare and full barn sheaves into
    ``p[start:start+nr]`` (array order kept); stops when the barn has no full sheaf."""
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    got = 0
    while got < nr:
        main = state[cpt + c + C_MAIN]
        if mem[_w(main, SH_SIZE)] == 0:
            spare = state[cpt + c + C_SPARE]
            if spare and mem[_w(spare, SH_SIZE)] > 0:
                state[cpt + c + C_SPARE] = main
                state[cpt + c + C_MAIN] = spare
            else:
                r = _barn(state, cache, cpu)
                if not state[_o(state, F_NODE) + r + N_NR_FULL]:
                    _stat(state, cache, cpu, BARN_GET_FAIL, 1)
                    break
                _barn_trade(state, mem, cache, cpu, r, True)
                _stat(state, cache, cpu, BARN_GET, 1)
            main = state[cpt + c + C_MAIN]
        batch = min(nr - got, mem[_w(main, SH_SIZE)])
        _sheaf_take(state, mem, cache, cpu, main, batch, p, start + got)
        got += batch
    return got


# ---- free ----------------------------------------------------------------------------------------
@jit
def _replace_full_main(state, mem, cache, cpu):
    """``__pcs_replace_full_main``: make room in the CPU's main sheaf (swap with spare,
    trade with the barn, or flush); True if main now has room."""
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    cap = _ca(state, cache, CA_SHEAF_CAPACITY)
    r = _barn(state, cache, cpu)
    nd = _o(state, F_NODE)
    spare = state[cpt + c + C_SPARE]
    if not spare:
        empty = _barn_pop(state, mem, r, N_BARN_EMPTY, N_NR_EMPTY)
        if empty:
            state[cpt + c + C_SPARE] = state[cpt + c + C_MAIN]
            state[cpt + c + C_MAIN] = empty
            return True
        empty = _alloc_empty_sheaf(state, mem, cache, cpu, cap, 0)
        if empty:
            state[cpt + c + C_SPARE] = state[cpt + c + C_MAIN]
            state[cpt + c + C_MAIN] = empty
            return True
        _sheaf_flush_main(state, mem, cache, cpu)
        return True
    if mem[_w(spare, SH_SIZE)] < cap:
        state[cpt + c + C_SPARE] = state[cpt + c + C_MAIN]
        state[cpt + c + C_MAIN] = spare
        return True
    if state[nd + r + N_NR_FULL] >= MAX_FULL_SHEAVES:               # -E2BIG: flush the spare
        _stat(state, cache, cpu, BARN_PUT_FAIL, 1)
        state[cpt + c + C_SPARE] = 0
        _sheaf_flush_unused(state, mem, cache, cpu, spare)
        state[cpt + c + C_SPARE] = state[cpt + c + C_MAIN]                  # install the emptied sheaf
        state[cpt + c + C_MAIN] = spare
        return True
    if state[nd + r + N_NR_EMPTY]:                                  # barn_replace_full_sheaf
        _barn_trade(state, mem, cache, cpu, r, False)
        _stat(state, cache, cpu, BARN_PUT, 1)
        return True
    empty = _alloc_empty_sheaf(state, mem, cache, cpu, cap, 0)   # -ENOMEM: a new one
    if empty:
        _barn_push(state, mem, r, N_BARN_FULL, N_NR_FULL, state[cpt + c + C_MAIN])
        _stat(state, cache, cpu, BARN_PUT, 1)
        state[cpt + c + C_MAIN] = empty
        return True
    _stat(state, cache, cpu, BARN_PUT_FAIL, 1)
    _sheaf_flush_main(state, mem, cache, cpu)
    return True


@jit
def _free_to_pcs(state, mem, cache, cpu, obj):
    """``free_to_pcs``: push a local-node object on the CPU's main sheaf. True if done."""
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    main = state[cpt + c + C_MAIN]
    if mem[_w(main, SH_SIZE)] == _ca(state, cache, CA_SHEAF_CAPACITY):
        if not _replace_full_main(state, mem, cache, cpu):
            return False
        main = state[cpt + c + C_MAIN]
    size = mem[_w(main, SH_SIZE)]
    mem[_w(main, SH_OBJECTS) + size] = obj
    mem[_w(main, SH_SIZE)] = size + 1
    _stat(state, cache, cpu, FREE_PCS, 1)
    return True


@jit
def _free_to_pcs_bulk(state, mem, cache, cpu, nr, p):
    """``free_to_pcs_bulk``: copy local-node objects of ``p[:nr]`` into sheaves (swapping
    with the spare or trading a full main for an empty barn sheaf); remote objects and what
    does not fit go to the slabs. ``p`` is permuted."""
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    cap = _ca(state, cache, CA_SHEAF_CAPACITY)
    local = state[_o(state, F_CPU_NODE) + cpu]
    size = nr
    i = 0
    while i < size and _g(state, G_NNODES) > 1:      # remote objects to the tail
        if _slab_nid(state, p[i] >> 12) != local:
            size -= 1
            p[i], p[size] = p[size], p[i]
        else:
            i += 1
    done = 0
    r = _barn(state, cache, cpu)
    nd = _o(state, F_NODE)
    while done < size:
        main = state[cpt + c + C_MAIN]
        if mem[_w(main, SH_SIZE)] == cap:
            spare = state[cpt + c + C_SPARE]
            if not spare:
                empty = _barn_pop(state, mem, r, N_BARN_EMPTY, N_NR_EMPTY)
                if not empty:
                    break
                state[cpt + c + C_SPARE] = main
                state[cpt + c + C_MAIN] = empty
            elif mem[_w(spare, SH_SIZE)] < cap:
                state[cpt + c + C_SPARE] = main
                state[cpt + c + C_MAIN] = spare
            elif state[nd + r + N_NR_FULL] < MAX_FULL_SHEAVES and state[nd + r + N_NR_EMPTY]:
                _barn_trade(state, mem, cache, cpu, r, False)
                _stat(state, cache, cpu, BARN_PUT, 1)
            else:
                _stat(state, cache, cpu, BARN_PUT_FAIL, 1)
                break
            main = state[cpt + c + C_MAIN]
        batch = min(size - done, cap - mem[_w(main, SH_SIZE)])
        _sheaf_put(state, mem, cache, cpu, main, batch, p, done)
        done += batch
    if done < nr:
        _free_bulk_raw(state, mem, cache, cpu, nr - done, p[done:nr])


# ---- flushing --------------------------------------------------------------------------------------
@jit
def _pcs_flush_all(state, mem, cache, cpu):
    """``pcs_flush_all``: flush and free the spare, flush the main (which stays)."""
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    spare = state[cpt + c + C_SPARE]
    state[cpt + c + C_SPARE] = 0
    if spare:
        _sheaf_flush_unused(state, mem, cache, cpu, spare)
        _free_empty_sheaf(state, mem, cache, cpu, spare)
    if state[cpt + c + C_MAIN]:
        _sheaf_flush_main(state, mem, cache, cpu)


@jit
def _barn_shrink(state, mem, cache, node, cpu):
    """``barn_shrink``: flush every full sheaf of the node's barn and free all sheaves."""
    r = _node_row(state, cache, node)
    while True:
        sheaf = _barn_pop(state, mem, r, N_BARN_FULL, N_NR_FULL)
        if not sheaf:
            break
        _sheaf_flush_unused(state, mem, cache, cpu, sheaf)
        _free_empty_sheaf(state, mem, cache, cpu, sheaf)
    while True:
        sheaf = _barn_pop(state, mem, r, N_BARN_EMPTY, N_NR_EMPTY)
        if not sheaf:
            break
        _free_empty_sheaf(state, mem, cache, cpu, sheaf)


# ---- the prefill API ------------------------------------------------------------------------------
@jit
def _user_sheaf_link(state, mem, cache, sheaf):
    """Record a sheaf handed to the user (so ``validate`` and destroy can find it)."""
    ca = _o(state, F_CA)
    mem[_w(sheaf, SH_NEXT)] = state[ca + cache * CA_NCOLS + CA_USER_SHEAVES]
    state[ca + cache * CA_NCOLS + CA_USER_SHEAVES] = sheaf


@jit
def _user_sheaf_unlink(state, mem, cache, sheaf):
    """Forget a user sheaf; False if ``sheaf`` is not one of this cache's."""
    ca = _o(state, F_CA)
    i = cache * CA_NCOLS + CA_USER_SHEAVES
    prev = 0
    s = state[ca + i]
    while s and s != sheaf:
        prev = s
        s = mem[_w(s, SH_NEXT)]
    if not s:
        return False
    if prev:
        mem[_w(prev, SH_NEXT)] = mem[_w(s, SH_NEXT)]
    else:
        state[ca + i] = mem[_w(s, SH_NEXT)]
    mem[_w(s, SH_NEXT)] = 0
    return True


@jit
def _prefill_sheaf(state, mem, cache, cpu, gfp, size):
    """``kmem_cache_prefill_sheaf``: a sheaf holding at least ``size`` objects (an
    oversize one if ``size`` exceeds the capacity); its address or 0."""
    cap = _ca(state, cache, CA_SHEAF_CAPACITY)
    if size > cap:
        sheaf = _kmalloc_internal(state, mem, cpu, SHEAF_HEADER + 8 * size, gfp | __GFP_ZERO)
        if not sheaf:
            return 0
        _stat(state, cache, cpu, SHEAF_PREFILL_OVERSIZE, 1)
        mem[_w(sheaf, SH_CAPACITY)] = size
        mem[_w(sheaf, SH_CACHE)] = cache
        if _alloc_bulk_slab(state, mem, cache, cpu, gfp, size, _objs(mem, sheaf), 0) == 0:
            _kfree_internal(state, mem, cpu, sheaf)
            return 0
        mem[_w(sheaf, SH_SIZE)] = size
        _user_sheaf_link(state, mem, cache, sheaf)
        return sheaf
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    sheaf = state[cpt + c + C_SPARE]
    if sheaf:
        state[cpt + c + C_SPARE] = 0
        _stat(state, cache, cpu, SHEAF_PREFILL_FAST, 1)
    else:
        _stat(state, cache, cpu, SHEAF_PREFILL_SLOW, 1)
        r = _barn(state, cache, cpu)
        sheaf = _barn_pop(state, mem, r, N_BARN_FULL, N_NR_FULL)
        if not sheaf:
            sheaf = _barn_pop(state, mem, r, N_BARN_EMPTY, N_NR_EMPTY)
        if sheaf and mem[_w(sheaf, SH_SIZE)] > 0:
            _stat(state, cache, cpu, BARN_GET, 1)
        else:
            _stat(state, cache, cpu, BARN_GET_FAIL, 1)
    if not sheaf:
        sheaf = _alloc_empty_sheaf(state, mem, cache, cpu, cap, gfp)
        if not sheaf:
            return 0
    if mem[_w(sheaf, SH_SIZE)] < size:
        if _refill_sheaf(state, mem, cache, cpu, sheaf, gfp):
            _sheaf_flush_unused(state, mem, cache, cpu, sheaf)
            _free_empty_sheaf(state, mem, cache, cpu, sheaf)
            return 0
    _user_sheaf_link(state, mem, cache, sheaf)
    return sheaf


@jit
def _return_sheaf(state, mem, cache, cpu, gfp, sheaf):
    """``kmem_cache_return_sheaf``: an oversize sheaf is flushed and freed; a normal one
    becomes the CPU's spare, or is topped up into the barn, or flushed and freed."""
    cap = _ca(state, cache, CA_SHEAF_CAPACITY)
    if mem[_w(sheaf, SH_CAPACITY)] != cap:
        _sheaf_flush_unused(state, mem, cache, cpu, sheaf)
        _kfree_internal(state, mem, cpu, sheaf)
        return
    cpt = _o(state, F_CPU)
    c = _cpu_row(state, cache, cpu)
    if not state[cpt + c + C_SPARE]:
        state[cpt + c + C_SPARE] = sheaf
        _stat(state, cache, cpu, SHEAF_RETURN_FAST, 1)
        return
    _stat(state, cache, cpu, SHEAF_RETURN_SLOW, 1)
    r = _barn(state, cache, cpu)
    if state[_o(state, F_NODE) + r + N_NR_FULL] >= MAX_FULL_SHEAVES or \
            _refill_sheaf(state, mem, cache, cpu, sheaf, gfp):
        _sheaf_flush_unused(state, mem, cache, cpu, sheaf)
        _free_empty_sheaf(state, mem, cache, cpu, sheaf)
        return
    _barn_push(state, mem, r, N_BARN_FULL, N_NR_FULL, sheaf)
    _stat(state, cache, cpu, BARN_PUT, 1)


@jit
def _refill_user_sheaf(state, mem, cache, cpu, gfp, sheaf, size):
    """``kmem_cache_refill_sheaf``: make ``sheaf`` hold at least ``size`` objects. Returns
    the sheaf to use from now on (a new one if it had to grow), or 0 on -ENOMEM (the old
    sheaf is then left as it was)."""
    have = mem[_w(sheaf, SH_SIZE)]
    if have >= size:
        return sheaf
    capacity = mem[_w(sheaf, SH_CAPACITY)]
    if capacity >= size:
        if capacity == _ca(state, cache, CA_SHEAF_CAPACITY):
            if _refill_sheaf(state, mem, cache, cpu, sheaf, gfp):
                return 0
        else:
            if _alloc_bulk_slab(state, mem, cache, cpu, gfp, capacity - have,
                                _objs(mem, sheaf), have) == 0:
                return 0
            mem[_w(sheaf, SH_SIZE)] = capacity
        return sheaf
    new = _prefill_sheaf(state, mem, cache, cpu, gfp, size)
    if not new:
        return 0
    _user_sheaf_unlink(state, mem, cache, sheaf)
    _return_sheaf(state, mem, cache, cpu, gfp, sheaf)
    return new


@jit
def _init_percpu_sheaves(state, mem, cache):
    """``init_percpu_sheaves``: an empty main sheaf for every CPU; False if out of memory."""
    cpt = _o(state, F_CPU)
    for cpu in range(_f(state, F_CPU_NODE).shape[0]):
        sheaf = _alloc_empty_sheaf(state, mem, cache, 0,
                                   _ca(state, cache, CA_SHEAF_CAPACITY), 0)
        if not sheaf:
            return False
        state[cpt + _cpu_row(state, cache, cpu) + C_MAIN] = sheaf
    return True
