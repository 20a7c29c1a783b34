"""The kmalloc API beyond kmalloc and kfree, on ``SlabAllocator``: ``krealloc`` (in place when
the object's size class allows, as ``__do_krealloc``) and ``kfree_rcu`` with the grace period
the caller ends (``synchronize_rcu``, ``rcu_barrier``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..engine.layout import CA_DEBUG, CA_ORIG, ZERO_SIZE_PTR
from ..errors import DoubleFreeError, InvalidSizeError
from ..flags import GFP_KERNEL, SLAB_RED_ZONE, __GFP_ZERO
from ..geometry import KMALLOC_MAX_SIZE

if TYPE_CHECKING:
    from .allocator import SlabAllocator

_ZERO = __GFP_ZERO


#: The calls that free, which the C gate serves when it is installed: while objects wait for
#: their grace period these go through the Python methods, which refuse to free them.
_RCU_ROUTED = ("kmem_cache_free", "kfree", "kmem_cache_free_bulk", "kfree_bulk",
               "kmem_cache_free_array")


class KmallocAPI:
    """``krealloc`` and RCU-deferred frees, mixed into ``SlabAllocator``."""

    #: ``(address, cpu)`` of each ``kfree_rcu`` waiting for its grace period (an instance
    #: list once there is one; empty: no free pays for the check).
    _rcu_pending: "list[tuple[int, int | None]] | tuple[()]" = ()

    def krealloc(self: "SlabAllocator", addr: int, new_size: int, gfp: int = GFP_KERNEL,
                 cpu: int | None = None) -> int:
        """``krealloc``: ``addr`` resized to ``new_size`` bytes. In place while the size fits
        what ``ksize`` reports (with ``__GFP_ZERO`` the bytes from ``new_size`` up to it are
        zeroed on a shrink, and a grow keeps them zero); else a new allocation with the
        contents copied (up to the smaller size) and the old one freed. ``addr`` NULL:
        ``kmalloc``; ``new_size`` 0: ``kfree`` and ``ZERO_SIZE_PTR``. Returns the address,
        or 0 (the old object untouched) when memory is exhausted."""
        if type(new_size) is not int or not 0 <= new_size <= KMALLOC_MAX_SIZE:
            raise InvalidSizeError(f"krealloc: size {new_size!r} is not in "
                                   f"0..{KMALLOC_MAX_SIZE}")
        addr = self._as_addr(addr, "krealloc")
        if self._rcu_pending:
            self._rcu_refuse((addr,), "krealloc", False)
        if new_size == 0:
            self.kfree(addr, cpu)
            return ZERO_SIZE_PTR
        if addr in (0, ZERO_SIZE_PTR):
            return self.kmalloc(new_size, gfp, cpu)
        ks = self._ksize(addr, "krealloc")      # raises on a bad address, nothing changed
        cid = self._cache_of(addr)
        orig = self._orig_size(cid, addr)       # 0: not stored (not a kmalloc cache with U)
        if new_size <= ks:
            if gfp & _ZERO:
                if orig and orig < new_size:
                    self.memory[addr + orig:addr + new_size] = 0
                else:
                    self.memory[addr + new_size:addr + ks] = 0
            if orig:                            # slub_debug_orig_size: the new size and,
                self._set_orig_size(cid, addr, new_size)       # with Z, its red zone
                if self.state.ca[cid, CA_DEBUG] & SLAB_RED_ZONE and new_size < ks:
                    self.memory[addr + new_size:addr + ks] = 0xcc
            return addr
        new = self.kmalloc(new_size, gfp, cpu)
        if not new:
            return 0
        keep = orig or ks
        self.memory[new:new + keep] = self.memory[addr:addr + keep]
        self.kfree(addr, cpu)
        return new

    def _orig_size(self: "SlabAllocator", cid: int, addr: int) -> int:
        """``get_orig_size`` of a live object of cache ``cid`` whose size is stored (a
        kmalloc cache with slab_debug U), else 0."""
        if cid < 0 or not self.state.ca[cid, CA_ORIG]:
            return 0
        return int(self._mem[(addr + int(self.state.ca[cid, CA_ORIG])) >> 3])

    def _set_orig_size(self: "SlabAllocator", cid: int, addr: int, size: int) -> None:
        """``set_orig_size`` (an ``unsigned long`` after the tracks)."""
        self._mem[(addr + int(self.state.ca[cid, CA_ORIG])) >> 3] = size

    def kfree_rcu(self: "SlabAllocator", addr: int, cpu: int | None = None) -> None:
        """Free ``addr`` after the current RCU grace period: checked now (a bad address
        raises at once), freed by the next ``synchronize_rcu`` or ``rcu_barrier``. Until
        then a free of it from Python (``kfree``, ``kmem_cache_free``, the bulk frees,
        ``krealloc``) raises ``DoubleFreeError``: the grace period's free would free
        whatever was allocated there meanwhile. ``numslab.jit`` cannot see the list."""
        addr = self._as_addr(addr, "kfree_rcu")
        if addr in (0, ZERO_SIZE_PTR):
            return
        self._ksize(addr, "kfree_rcu")          # the checks of kfree, nothing changed yet
        pending: list[Any] = self.__dict__.setdefault("_rcu_pending", [])
        if any(a == addr for a, _ in pending):
            raise DoubleFreeError(f"kfree_rcu: {addr:#x} is already waiting for a grace "
                                  f"period (double free)")
        if not pending:                         # the frees through the checking methods
            self.__dict__["_rcu_gated"] = {n: self.__dict__.pop(n) for n in _RCU_ROUTED
                                           if n in self.__dict__}
        pending.append((addr, cpu))

    def _rcu_refuse(self: "SlabAllocator", addrs: Any, fn: str, batch: bool) -> None:
        """Raise ``DoubleFreeError`` if one of ``addrs`` waits for its grace period."""
        waiting = {a for a, _ in self._rcu_pending}
        for i, a in enumerate(addrs):
            if int(a) in waiting:
                raise DoubleFreeError(f"{fn}: {f'element {i}: ' if batch else ''}{int(a):#x}: "
                                      f"double free, the object is waiting for an RCU grace "
                                      f"period (kfree_rcu)")

    def synchronize_rcu(self: "SlabAllocator") -> int:
        """End the grace period: every ``kfree_rcu`` so far is freed. How many."""
        pending = self.__dict__.pop("_rcu_pending", [])
        gated = self.__dict__.pop("_rcu_gated", {})
        if self._gate is not None:              # (slab_debug may have routed them since)
            self.__dict__.update(gated)
        for addr, cpu in pending:
            self.kfree(addr, cpu)
        return len(pending)

    def rcu_barrier(self: "SlabAllocator") -> int:
        """Wait for every pending RCU callback: here as ``synchronize_rcu``."""
        return self.synchronize_rcu()
