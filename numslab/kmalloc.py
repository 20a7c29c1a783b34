"""kmalloc: the generic size classes (kmalloc-8 to kmalloc-8k, with 96 and 192) served by
SLUB caches, and large requests served straight from the page allocator, as in the kernel."""
from __future__ import annotations

from ._jit import jit
from ._layout import F_CPU_NODE, PG_LARGE, _o
from .cpucache import _slab_alloc, _zero
from .flags import __GFP_THISNODE, __GFP_ZERO
from .geometry import KMALLOC_SIZES, PAGE_SIZE, kmalloc_cache_size
from .pages import _alloc_block

NIL = -1


@jit
def _kmalloc(state, mem, cache, cpu, node, gfp, size, order):
    """One kmalloc: from ``cache`` when it is a kmalloc cache, else (``cache`` NIL) a large
    block of ``order`` pages. Returns the address or 0."""
    if cache != NIL:
        return _slab_alloc(state, mem, cache, cpu, node, gfp)
    page_node = node if node >= 0 else state[_o(state, F_CPU_NODE) + cpu]
    addr = _alloc_block(state, cpu, page_node, order, (gfp & __GFP_THISNODE) != 0, PG_LARGE)
    if addr and gfp & __GFP_ZERO:
        _zero(mem, addr, size)
    return addr


def kmalloc_index_table() -> list[int]:
    """For every request size 0..8192, the index into KMALLOC_SIZES serving it (0 maps to
    the 8-byte class but kmalloc(0) never reaches it)."""
    table = [0] * (2 * PAGE_SIZE + 1)
    for size in range(1, 2 * PAGE_SIZE + 1):
        table[size] = KMALLOC_SIZES.index(kmalloc_cache_size(size))
    return table


def kmalloc_cache_name(size: int) -> str:
    """``kmalloc-64``, ``kmalloc-1k``, ``kmalloc-8k``: the kernel's names."""
    return f"kmalloc-{size // 1024}k" if size >= 1024 else f"kmalloc-{size}"

