"""kmalloc: the generic size classes served by SLUB caches, and large requests.

The size classes are kmalloc-8 to kmalloc-8k, with 96 and 192; large requests are served straight
from the page allocator, as in the kernel."""
from __future__ import annotations

import functools

import numpy as np

from ..flags import __GFP_THISNODE, __GFP_ZERO
from ..geometry import KMALLOC_SIZES, PAGE_SIZE
from .cpucache import _slab_alloc
from .debug import slab_alloc_debug
from .layout import CA_DEBUG, NIL, PG_LARGE, _ca
from .native import unit, zero_bytes
from .pages import alloc_block


@unit
def kmalloc(st, cache, cpu, node, gfp, size, order):
    """One kmalloc from ``cache``, or a large block of ``order`` pages; the address or 0.

    From ``cache`` when it is a kmalloc cache, else (``cache`` NIL) a large block."""
    if cache != NIL:
        if _ca(st, cache, CA_DEBUG):        # slab_debug keeps the size asked for
            return slab_alloc_debug(st, cache, cpu, node, gfp, size)
        return _slab_alloc(st, cache, cpu, node, gfp)
    page_node = node if node >= 0 else st.cpu_node[cpu]
    addr = alloc_block(st, cpu, page_node, order, (gfp & __GFP_THISNODE) != 0, PG_LARGE)
    if addr and gfp & __GFP_ZERO:              # the whole block, as ksize reports it
        zero_bytes(st.mem, addr, 4096 << order)
    return addr


@functools.cache
def kmalloc_index_table() -> tuple[int, ...]:
    """For every request size 0..8192, the index into KMALLOC_SIZES serving it.

    The smallest class at least that size, which is ``kmalloc_cache_size``'s rule (0 maps to the
    8-byte class but kmalloc(0) never reaches it). Computed once (it is read at import)."""
    sizes = np.arange(2 * PAGE_SIZE + 1)
    return tuple(np.searchsorted(np.asarray(KMALLOC_SIZES), sizes, side="left").tolist())


def kmalloc_cache_name(size: int) -> str:
    """``kmalloc-64``, ``kmalloc-1k``, ``kmalloc-8k``: the kernel's names."""
    return f"kmalloc-{size // 1024}k" if size >= 1024 else f"kmalloc-{size}"
