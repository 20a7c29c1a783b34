"""The batches of slab_debug caches.

``kmem_cache_free_bulk``/``kfree_bulk`` while debug caches exist, and the prefilled sheaves of
debug caches (a debug cache has no sheaves of its own, so every sheaf ``kmem_cache_prefill_sheaf``
gives it is oversize, filled and flushed through its checks).

``__kmem_cache_alloc_bulk`` and ``__kmem_cache_free_bulk`` as they run for a debug cache
(``kmem_cache_debug(s)``): one ``___slab_alloc`` per object (``alloc_debug_processing``, the
alloc track), and per detached freelist ``free_to_partial_list`` (``free_debug_processing``
on the chain, the free track: :func:`debug.free_chain_debug`). Units of their own, so that no
other allocator compiles them.
"""
from __future__ import annotations

from ..flags import __GFP_ZERO, FREE_SLOWPATH
from .bulk import _check_batch, _detach_run, _free_run
from .live import _live_clear, _live_set
from .checks import E_AT, E_DOUBLE_FREE
from .debug import E_DEBUG, free_chain_debug, report_double_free, slab_alloc_debug
from .layout import CA_DEBUG, CA_OBJECT_SIZE, KERNEL_7_0, NIL, _ca, _head_frame, _stat
from .native import unit, words_at


@unit
def free_bulk_checked(st, cache, cpu, nr, paddr):
    """``kmem_cache_free_bulk`` of a debug cache, or ``kfree_bulk`` while debug caches exist.

    ``kfree_bulk`` is ``cache`` NIL. Every element is checked first as a single free would be (a
    bad address, double free, wrong cache, an object an earlier element names (``E_TWICE``, not
    free: no report): its error code with its index, ``err - i * E_AT``, nothing freed; a double
    free in a cache with F reported as the kernel's "Object already free"); then
    ``build_detached_freelist``'s chains in the kernel's order, a debug cache's through
    ``free_to_partial_list`` (:func:`debug.free_chain_debug`), any other cache's as ``__slab_free``
    frees them. A chain a slab_debug check refuses stays allocated and the rest go on, as in the
    kernel; the call then returns E_DEBUG with the index of the first refused object (in the order
    the chains were freed). FREE_SLOWPATH: 7.0's ``slab_free_bulk`` counts each chain's objects,
    6.18's ``__slab_free`` one per chain. The array is permuted as the kernel permutes it."""
    p = words_at(paddr)
    err = _check_batch(st, cache, nr, paddr)
    if err:
        i = -err // E_AT
        if err + i * E_AT == E_DOUBLE_FREE:
            a = p[i]
            report_double_free(st, st.sl_cache[_head_frame(st, a >> 12)], a)
        return err
    first = -1
    size = nr
    while size:
        same, slab, owner = _detach_run(st, cache, cpu, size, p)
        if slab != NIL:
            if _ca(st, owner, CA_DEBUG):
                _stat(st, owner, cpu, FREE_SLOWPATH,
                      size - same if st.kernel >= KERNEL_7_0 else 1)
                k = free_chain_debug(st, owner, cpu, slab, p, same, size)
                if k >= 0 and first < 0:
                    first = k
            else:
                if st.kernel >= KERNEL_7_0:
                    _stat(st, owner, cpu, FREE_SLOWPATH, size - same)
                _free_run(st, owner, cpu, slab, p, same, size, False)
        size = same
    if first >= 0:
        return E_DEBUG - first * E_AT
    return 0


@unit
def free_bulk_debug(st, cache, cpu, size, paddr):
    """``__kmem_cache_free_bulk`` of ``size`` objects of debug cache ``cache`` at ``paddr``. 0.

    ``paddr`` holds int64 words, permuted as ``build_detached_freelist`` permutes them, objects
    marked allocated: per detached freelist ``free_to_partial_list``
    (:func:`debug.free_chain_debug`; FREE_SLOWPATH: none under 7.0, whose
    ``__kmem_cache_free_bulk`` counts none, one per chain under 6.18, whose ``__slab_free`` counts
    it). A chain a check refuses stays allocated (the kernel's "Object at .. not freed")."""
    p = words_at(paddr)
    while size:
        same, slab, owner = _detach_run(st, cache, cpu, size, p)
        if st.kernel < KERNEL_7_0:
            _stat(st, cache, cpu, FREE_SLOWPATH, 1)
        for k in range(same, size):
            _live_clear(st, p[k])
        free_chain_debug(st, cache, cpu, slab, p, same, size)
        size = same
    return 0


@unit
def fill_debug(st, cache, cpu, gfp, n, paddr):
    """``__kmem_cache_alloc_bulk`` of a debug cache into the ``n`` words at ``paddr``.

    One ``___slab_alloc`` per object with its checks and track (ALLOC_SLOWPATH each; no zeroing:
    that is the later ``slab_post_alloc_hook``'s), the objects left unmarked for a sheaf. ``n``, or
    0 having given back (:func:`free_bulk_debug`) what it took."""
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
    """``sheaf_flush_unused``'s ``__kmem_cache_free_bulk`` for a debug cache's sheaf.

    Its ``size`` objects at ``paddr`` (not marked allocated in a sheaf) marked, then freed through
    :func:`free_bulk_debug`. 0."""
    p = words_at(paddr)
    for i in range(size):
        _live_set(st, p[i])
    return free_bulk_debug(st, cache, cpu, size, paddr)
