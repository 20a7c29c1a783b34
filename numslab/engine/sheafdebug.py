"""Prefilled sheaves of slab_debug caches: a debug cache has no sheaves of its own, so every
sheaf ``kmem_cache_prefill_sheaf`` gives it is oversize, filled and flushed through its checks.

``__kmem_cache_alloc_bulk`` and ``__kmem_cache_free_bulk`` as they run for a debug cache
(``kmem_cache_debug(s)``): one ``___slab_alloc`` per object (``alloc_debug_processing``, the
alloc track), and per detached freelist ``free_to_partial_list`` (``free_debug_processing``,
the free track). Units of their own, so that no other allocator compiles them.
"""
from __future__ import annotations

from ..flags import __GFP_ZERO, FREE_SLOWPATH
from .bulk import _detach_run
from .checks import _live_clear, _live_set
from .debug import slab_alloc_debug, slab_free_debug
from .layout import CA_OBJECT_SIZE, _ca, _stat
from .native import unit, words_at


@unit
def free_bulk_debug(st, cache, cpu, size, paddr):
    """``__kmem_cache_free_bulk`` of ``size`` objects of debug cache ``cache`` at ``paddr``
    (int64 words, permuted as ``build_detached_freelist`` permutes them), objects marked
    allocated: per detached freelist, its objects through ``slab_free_debug`` one at a time
    from the chain's tail to its head, so that the slab's free list ends as the spliced
    chain would (head first); ``__kmem_cache_free_bulk`` counts no FREE_SLOWPATH, so the
    single frees' counts are taken back. An object a check refuses stays allocated (the
    kernel's "Object at .. not freed"). 0."""
    p = words_at(paddr)
    while size:
        same, slab, owner = _detach_run(st, cache, cpu, size, p)
        for k in range(size - 1, same - 1, -1):
            if slab_free_debug(st, cache, cpu, slab, p[k]) == 0:
                _stat(st, cache, cpu, FREE_SLOWPATH, -1)
        size = same
    return 0


@unit
def fill_debug(st, cache, cpu, gfp, n, paddr):
    """``__kmem_cache_alloc_bulk`` of a debug cache into the ``n`` words at ``paddr``: one
    ``___slab_alloc`` per object with its checks and track (ALLOC_SLOWPATH each; no zeroing:
    that is the later ``slab_post_alloc_hook``'s), the objects left unmarked for a sheaf.
    ``n``, or 0 having given back (:func:`free_bulk_debug`) what it took."""
    p = words_at(paddr)
    size = _ca(st, cache, CA_OBJECT_SIZE)
    for i in range(n):
        obj = slab_alloc_debug(st, cache, cpu, -1, gfp & ~__GFP_ZERO, size)
        if obj == 0:
            free_bulk_debug(st, cache, cpu, i, paddr)
            return 0
        p[i] = obj
    for i in range(n):
        _live_clear(st, p[i])
    return n


@unit
def flush_debug(st, cache, cpu, size, paddr):
    """``sheaf_flush_unused``'s ``__kmem_cache_free_bulk`` for a debug cache's sheaf: its
    ``size`` objects at ``paddr`` (not marked allocated in a sheaf) marked, then freed
    through :func:`free_bulk_debug`. 0."""
    p = words_at(paddr)
    for i in range(size):
        _live_set(st, p[i])
    return free_bulk_debug(st, cache, cpu, size, paddr)
