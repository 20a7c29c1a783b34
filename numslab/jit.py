"""Allocation from users' own ``@njit`` code: pass ``sa.handle`` and ``cache.id`` into your
jitted function and call these, with no return to Python.

Example::

    h, cid = sa.handle, cache.id

    @numba.njit
    def build(h, cid, n):
        out = np.empty(n, np.int64)
        numslab.jit.kmem_cache_alloc_bulk(h, cid, n, out)
        return out

Errors raise numslab exceptions with a fixed message (Numba cannot format them); call the
Python facade for a message with the address. Caches with a constructor, whose objects
must be built by Python-side code, are refused here.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._jit import jit
from ._layout import (CA_ACTIVE, CA_CTOR, G_MAX_CACHES, G_NCPUS, NIL, ZERO_SIZE_PTR,
                      _g)
from .debug import (E_DOUBLE_FREE, E_LARGE, E_MISALIGNED, E_NOT_HEAD, E_NOT_SLAB,
                    E_OUTSIDE, E_WRONG_CACHE, _locate)
from .entry import (_alloc_bulk_fast, _free_bulk_fast, _kfree, _kmem_cache_alloc,
                    _kmem_cache_alloc_array, _kmem_cache_alloc_bulk, _kmem_cache_free,
                    _kmem_cache_free_bulk)
from .errors import (BadAddressError, DoubleFreeError, InvalidSizeError, SlabError,
                     WrongCacheError)
from .flags import GFP_KERNEL
from .sheaves import _kmalloc_internal
from .slablists import _ca

__all__ = ["SlabHandle", "kmem_cache_alloc", "kmem_cache_alloc_node", "kmem_cache_free",
           "kmem_cache_alloc_bulk", "kmem_cache_free_bulk", "kmem_cache_alloc_array",
           "kmem_cache_free_array", "kmalloc", "kfree", "kfree_bulk", "is_live"]


class SlabHandle(NamedTuple):
    """What a jitted function needs to reach one allocator (``SlabAllocator.handle``)."""

    state: np.ndarray   #: int64[:], the state buffer
    mem: np.ndarray     #: int64[:], the arena as words


E_DEAD_CACHE = -20    #: not the id of a live cache
E_BAD_CPU = -21       #: CPU out of range
E_CTOR = -22          #: the cache has a Python constructor


@jit
def _raise(err):
    """Raise the numslab exception for error code ``err`` (kept out of line: the hot
    paths only test and branch here)."""
    if err == E_DEAD_CACHE:
        raise WrongCacheError("numslab.jit: not the id of a live cache")
    if err == E_BAD_CPU:
        raise SlabError("numslab.jit: cpu out of range")
    if err == E_CTOR:
        raise SlabError("numslab.jit: caches with a constructor are allocated from Python")
    if err == E_DOUBLE_FREE:
        raise DoubleFreeError("numslab.jit: double free (the object is already free)")
    if err == E_WRONG_CACHE:
        raise WrongCacheError("numslab.jit: the object belongs to another cache")
    if err == E_MISALIGNED or err == E_NOT_HEAD:
        raise BadAddressError("numslab.jit: address is not the start of an object")
    if err == E_OUTSIDE or err == E_NOT_SLAB or err == E_LARGE:
        raise BadAddressError("numslab.jit: address is not an allocated slab object")
    raise SlabError("numslab.jit: invalid argument")


@jit(inline="always")
def _check(h, cache, cpu):
    """Refuse a cache id that is not a live cache, or a CPU out of range."""
    st = h.state
    if cache < 0 or cache >= _g(st, G_MAX_CACHES) or not _ca(st, cache, CA_ACTIVE):
        _raise(E_DEAD_CACHE)
    if cpu < 0 or cpu >= _g(st, G_NCPUS):
        _raise(E_BAD_CPU)


@jit(inline="always")
def _no_ctor(h, cache, cpu):
    """:func:`_check`, and refuse caches with a constructor (allocation only)."""
    _check(h, cache, cpu)
    if _ca(h.state, cache, CA_CTOR):
        _raise(E_CTOR)


@jit
def kmem_cache_alloc(h, cache, cpu=0, gfp=GFP_KERNEL):
    """One object of cache id ``cache`` on ``cpu``; its address or 0 (out of memory)."""
    _no_ctor(h, cache, cpu)
    return _kmem_cache_alloc(h.state, h.mem, cache, cpu, -1, gfp)


@jit
def kmem_cache_alloc_node(h, cache, node, cpu=0, gfp=GFP_KERNEL):
    """One object from NUMA ``node``; its address or 0."""
    _no_ctor(h, cache, cpu)
    return _kmem_cache_alloc(h.state, h.mem, cache, cpu, node, gfp)


@jit
def kmem_cache_free(h, cache, addr, cpu=0):
    """Free one object; raises on a bad address, wrong cache or double free."""
    _check(h, cache, cpu)
    err = _kmem_cache_free(h.state, h.mem, cache, cpu, addr)
    if err:
        _raise(err)


@jit
def kmem_cache_alloc_bulk(h, cache, nr, out, cpu=0, gfp=GFP_KERNEL):
    """``out[:nr]`` filled, returning ``nr``; or 0 with nothing taken."""
    _no_ctor(h, cache, cpu)
    if nr > out.shape[0] or nr < 0:
        raise InvalidSizeError("numslab.jit: count larger than the array")
    n = _alloc_bulk_fast(h.state, h.mem, cache, cpu, gfp, nr, out)
    if n >= 0:
        return n
    return _kmem_cache_alloc_bulk(h.state, h.mem, cache, cpu, gfp, nr, out)


@jit
def kmem_cache_free_bulk(h, cache, nr, objs, cpu=0):
    """Free ``objs[:nr]`` (reordered in place); on a bad element nothing is freed."""
    _check(h, cache, cpu)
    if nr > objs.shape[0] or nr < 0:
        raise InvalidSizeError("numslab.jit: count larger than the array")
    err = _free_bulk_fast(h.state, h.mem, cache, cpu, nr, objs)
    if err > 0:
        err = _kmem_cache_free_bulk(h.state, h.mem, cache, cpu, nr, objs)
    if err:
        _raise(err)


@jit
def kmem_cache_alloc_array(h, cache, nr, out, flags=0, cpu=0, gfp=GFP_KERNEL):
    """The seed's array allocation (SLAB_ARRAY_ALLOC_* ``flags``); the count allocated."""
    _no_ctor(h, cache, cpu)
    if nr > out.shape[0] or nr < 0:
        raise InvalidSizeError("numslab.jit: count larger than the array")
    return _kmem_cache_alloc_array(h.state, h.mem, cache, cpu, gfp, nr, out, flags)


@jit
def kmem_cache_free_array(h, cache, nr, objs, cpu=0):
    """Free an array of objects (as ``kmem_cache_free_bulk``)."""
    kmem_cache_free_bulk(h, cache, nr, objs, cpu)


@jit
def kmalloc(h, size, cpu=0, gfp=GFP_KERNEL):
    """``size`` bytes from the kmalloc caches (or whole pages); address, 16 for 0, or 0."""
    if cpu < 0 or cpu >= _g(h.state, G_NCPUS):
        _raise(E_BAD_CPU)
    if size == 0:
        return ZERO_SIZE_PTR
    if size < 0 or size > 4 << 20:
        raise InvalidSizeError("numslab.jit: kmalloc size not in 0..4 MiB")
    return _kmalloc_internal(h.state, h.mem, cpu, size, gfp)


@jit
def kfree(h, addr, cpu=0):
    """Free a kmalloc allocation (NULL and ZERO_SIZE_PTR are ignored)."""
    if cpu < 0 or cpu >= _g(h.state, G_NCPUS):
        _raise(E_BAD_CPU)
    if addr == 0 or addr == ZERO_SIZE_PTR:
        return
    err = _kfree(h.state, h.mem, cpu, addr)
    if err:
        _raise(err)


@jit
def kfree_bulk(h, nr, objs, cpu=0):
    """``kfree`` of ``objs[:nr]`` of any caches."""
    if cpu < 0 or cpu >= _g(h.state, G_NCPUS):
        _raise(E_BAD_CPU)
    if nr > objs.shape[0] or nr < 0:
        raise InvalidSizeError("numslab.jit: count larger than the array")
    err = _kmem_cache_free_bulk(h.state, h.mem, NIL, cpu, nr, objs)
    if err:
        _raise(err)


@jit
def is_live(h, cache, addr):
    """True if ``addr`` is an allocated object of ``cache`` (NIL: of any cache)."""
    err, _ = _locate(h.state, addr, cache)
    return err == 0


@jit
def _gather(state, mem, cache, addrs, out):
    """Copy the record at each of ``addrs`` into row i of ``out`` (uint8[n, itemsize]);
    -1, or the index of the first address that is not a live object of ``cache`` (then
    nothing useful was copied)."""
    m8 = mem.view(np.uint8)
    n = out.shape[1]
    for i in range(addrs.shape[0]):
        err, _ = _locate(state, addrs[i], cache)
        if err:
            return i
        a = addrs[i]
        for j in range(n):
            out[i, j] = m8[a + j]
    return -1


@jit
def _scatter(state, mem, cache, addrs, rows):
    """Copy row i of ``rows`` (uint8[n, itemsize], or one row for all) into the object at
    ``addrs[i]``, after checking every address; -1 or the first bad index."""
    for i in range(addrs.shape[0]):
        err, _ = _locate(state, addrs[i], cache)
        if err:
            return i
    m8 = mem.view(np.uint8)
    n = rows.shape[1]
    one = rows.shape[0] == 1
    for i in range(addrs.shape[0]):
        a = addrs[i]
        r = 0 if one else i
        for j in range(n):
            m8[a + j] = rows[r, j]
    return -1
