"""The facade's page allocator: ``alloc_pages``/``free_pages`` on the buddy allocator per node.

Mixed into :class:`SlabAllocator` (``PagesAPI``), with its ``/proc`` views and counters.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..engine.layout import P_BATCH, P_COUNT, P_HIGH, zone_watermarks
from ..engine.pages import alloc_block, drain_all_pages, free_block_checked
from ..errors import BadAddressError, InvalidSizeError
from ..flags import GFP_KERNEL, __GFP_NOWARN, __GFP_THISNODE, __GFP_ZERO
from ..geometry import PAGE_SIZE
from .args import check_gfp, check_order

if TYPE_CHECKING:
    from .allocator import SlabAllocator

# Module-level aliases: a ``__GFP_*`` name inside a class body would be name-mangled.
_NOWARN, _THISNODE, _ZERO = __GFP_NOWARN, __GFP_THISNODE, __GFP_ZERO


class PagesAPI:
    """Methods of :class:`SlabAllocator` for whole pages (kept in their own module)."""

    def alloc_pages(self: "SlabAllocator", order: int, node: int = -1,
                    gfp: int = GFP_KERNEL) -> int:
        """Allocate ``2**order`` contiguous pages from the buddy allocator; address or 0."""
        order = check_order(order, "alloc_pages")
        node = self._check_node(node)
        cpu = self._cpu()
        pnode = node if node >= 0 else self.cpu_to_node(cpu)
        gfp = check_gfp(gfp, "alloc_pages")
        addr = alloc_block(self._st, cpu, pnode, order, int(bool(gfp & _THISNODE)), 0)
        if addr and gfp & _ZERO:
            self.memory[addr:addr + (PAGE_SIZE << order)] = 0
        return self._after_alloc(None, addr, gfp | _NOWARN, node)

    def free_pages(self: "SlabAllocator", addr: int, order: int) -> None:
        """Free a block from ``alloc_pages``; raises if ``addr``/``order`` do not match one.

        Address 0 is ignored, as by the kernel's ``free_pages``."""
        addr = self._as_addr(addr, "free_pages")
        order = check_order(order, "free_pages")
        if addr == 0:
            return
        err = free_block_checked(self._st, self._cpu(), addr, order, 0)
        if err == -2:
            raise InvalidSizeError(f"free_pages: block at {addr:#x} is not of order {order}")
        if err:
            raise BadAddressError(f"free_pages: {addr:#x} is not the start of a block "
                                  f"from alloc_pages")

    def buddyinfo(self: "SlabAllocator") -> str:
        """Free blocks per order and node, formatted as ``/proc/buddyinfo``."""
        counts = self.state.buddy[:, :, 1]
        return "".join(f"Node {n}, zone   Normal " + "".join(f"{int(c):7d}" for c in row) + "\n"
                       for n, row in enumerate(counts))

    def _buddy_free_per_node(self: "SlabAllocator") -> np.ndarray:
        """Pages free in each node's buddy lists (int64, shape (nr_nodes,))."""
        counts = self.state.buddy[:, :, 1]
        return (counts * (1 << np.arange(counts.shape[1]))).sum(axis=1)

    def free_pages_count(self: "SlabAllocator") -> int:
        """Pages free in the buddy lists (as the kernel's NR_FREE_PAGES).

        Not counting the pages held on the per-CPU page lists, see :meth:`pcp_pages_count`."""
        return int(self._buddy_free_per_node().sum())

    def zoneinfo(self: "SlabAllocator") -> str:
        """Each node's zone as ``/proc/zoneinfo`` shows it, in part.

        Free pages, watermarks, managed pages and every CPU's pcp ``count``, ``high`` and
        ``batch``."""
        wmin, low, high = zone_watermarks(self.pages_per_node, self.nr_pages)
        free = self._buddy_free_per_node()
        out = []
        for node in range(self.nr_nodes):
            out += [f"Node {node}, zone   Normal", f"  pages free     {int(free[node])}",
                    f"        min      {wmin}", f"        low      {low}",
                    f"        high     {high}", f"        managed  {self.pages_per_node}",
                    "  pagesets"]
            for cpu in range(self.nr_cpus):
                row = self.state.pcp[cpu, node]
                out += [f"    cpu: {cpu}", f"              count:    {int(row[P_COUNT])}",
                        f"              high:     {int(row[P_HIGH])}",
                        f"              batch:    {int(row[P_BATCH])}"]
        return "\n".join(out) + "\n"

    def pcp_pages_count(self: "SlabAllocator") -> int:
        """Free pages held on the per-CPU page lists (orders 0 to 3), every CPU and node."""
        return int(self.state.pcp[:, :, P_COUNT].sum())

    def drain_all_pages(self: "SlabAllocator") -> int:
        """Give every page on every per-CPU page list back to the buddy lists; the pages drained.

        The kernel's ``drain_all_pages``."""
        return int(drain_all_pages(self._st))
