"""The facade's prefilled-sheaf API (6.18): objects taken ahead for allocations that cannot fail.

Each call checks its arguments and calls one unit of ``engine/prefill.py``; constructors of
the new slabs run as an allocation's (``batchapi``)."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.layout import (CA_DEBUG, CA_SHEAF_CAPACITY, CA_USER_SHEAVES, G_FAULT_CACHE,
                             G_NPENDING, G_NREPORTS, G_SITE, SH_CAPACITY, SH_OBJECTS, SH_SIZE)
from ..engine.ops import alloc_from_sheaf
from ..engine.prefill import prefill_sheaf, refill_user_sheaf, return_user_sheaf
from ..errors import (BadAddressError, InvalidArgumentError, SlabCorruptionError,
                      SlabDebugError, SlabError, WrongCacheError)
from ..flags import GFP_KERNEL, __GFP_ZERO
from .args import cache_op, check_gfp, size_error
from .batchapi import _warn_zero_ctor
from .cache import KmemCache

if TYPE_CHECKING:
    from .allocator import SlabAllocator

_ZERO = __GFP_ZERO     # a __GFP name in a class body is name-mangled
#: No lock: the ``with`` of a call on a cache without a constructor.
_NO_LOCK = contextlib.nullcontext()


def _check_sheaf_size(size: Any, fn: str) -> None:
    """A sheaf's object count must be an int (not a bool) in 0..2**20."""
    if type(size) is not int and not (isinstance(size, np.integer) and
                                      not isinstance(size, np.bool_)) or not 0 <= size <= 1 << 20:
        raise size_error(size)(f"{fn}: size {size!r} is not an object count in 0..{1 << 20}")


class SheafAPI:
    """The prefilled-sheaf calls of :class:`SlabAllocator` (mixed in)."""

    def _sheaf_cache(self: "SlabAllocator", cache: KmemCache, fn: str) -> int:
        """The id of ``cache`` for the prefilled-sheaf API: a cache with sheaves, or a debug cache.

        A debug cache has none and gets oversize ones (``kmem_cache_prefill_sheaf`` of both
        generations). Any other cache without sheaves (6.18, no ``sheaf_capacity``; 7.0, a
        SLAB_NOLEAKTRACE or bootstrap cache) is refused: the kernel gives it oversize sheaves
        too, but after a WARN_ON_ONCE, as a caller's bug."""
        cid = self._own(cache, fn)
        if not self.state.ca[cid, CA_SHEAF_CAPACITY] and not self.state.ca[cid, CA_DEBUG]:
            why = "SLAB_NOLEAKTRACE or SLAB_NO_OBJ_EXT" if self._gen7 else \
                "create it with sheaf_capacity"
            raise InvalidArgumentError(f"{fn}({cache.name}): the cache has no sheaves ({why})")
        return cid

    def _sheaf_unit(self: "SlabAllocator", fn: str, u: Any, *args: int) -> int:
        """Call a prefilled-sheaf unit; while debug caches exist, as their other calls go.

        The caller's site recorded for U's tracks, the reports the unit wrote collected, and a
        refill that a slab_debug check stopped raised as ``SlabDebugError``."""
        g = self._g
        if not self._debug_on:
            r = int(u(self._st, *args))
            if g[G_FAULT_CACHE] == args[0] + 1:     # (its cache's: not another thread's)
                self._sheaf_fault(fn, r, *args)
            return r
        if self._debug_user:
            g[G_SITE] = self._site_id()
        try:
            r = int(u(self._st, *args))
        finally:
            g[G_SITE] = 0
        if g[G_NREPORTS] != self._reports_seen:
            self._last_reports = self._drain_reports()
        elif self._last_reports:
            self._last_reports = []
        if g[G_FAULT_CACHE] == args[0] + 1:
            self._sheaf_fault(fn, r, *args)
        return r

    def _is_user_sheaf(self: "SlabAllocator", cid: int, sheaf: int) -> bool:
        """True if ``sheaf`` is on cache ``cid``'s list of prefilled sheaves."""
        s = int(self.state.ca[cid, CA_USER_SHEAVES])
        while s and s != sheaf:
            s = int(self._mem[s >> 3])
        return s != 0

    def _user_sheaf(self: "SlabAllocator", cid: int, sheaf: Any, fn: str) -> int:
        """``sheaf`` after checking it is one of cache ``cid``'s prefilled sheaves.

        Another cache's is a ``WrongCacheError`` naming both (it was a ``BadAddressError``,
        "not a prefilled sheaf of this cache", a new user's trial); an address that is no
        prefilled sheaf, one returned already among them, a ``BadAddressError``."""
        sheaf = self._as_addr(sheaf, fn)
        if not self._is_user_sheaf(cid, sheaf):
            other = self._sheaf_owner(sheaf)
            if other is not None:
                raise WrongCacheError(f"{fn}: {sheaf:#x} is a prefilled sheaf of cache "
                                      f"{self._caches[other].name!r}, not of "
                                      f"{self._caches[cid].name!r}")
            raise BadAddressError(f"{fn}: {sheaf:#x} is not a prefilled sheaf of this cache "
                                  f"(never prefilled, or returned already)")
        return sheaf

    def _sheaf_owner(self: "SlabAllocator", sheaf: int) -> int | None:
        """The cache whose list of prefilled sheaves holds ``sheaf``; None if none does."""
        for c in np.flatnonzero(self.state.ca[:, CA_USER_SHEAVES]).tolist():
            if self._is_user_sheaf(c, sheaf):
                return c
        return None

    @cache_op
    def kmem_cache_prefill_sheaf(self: "SlabAllocator", cache: KmemCache, gfp: int,
                                 size: int, cpu: int | None = None) -> int:
        """A prefilled sheaf (an opaque handle) holding at least ``size`` objects, or 0.

        For later allocations that must not fail; 0 when memory is exhausted, or under 7.0 for a
        ``size`` of 0 (its ``kmem_cache_prefill_sheaf`` returns NULL at once)."""
        cid = self._sheaf_cache(cache, "kmem_cache_prefill_sheaf")
        _check_sheaf_size(size, "kmem_cache_prefill_sheaf")
        gfp = check_gfp(gfp, "kmem_cache_prefill_sheaf")
        with self._ctor_lock if cache.ctor is not None else _NO_LOCK:  # (as an allocation)
            sheaf = self._sheaf_unit("kmem_cache_prefill_sheaf", prefill_sheaf, cid,
                                     self._cpu_of(cpu), gfp, size)
            if sheaf and cid in self._trace_ids:     # T: each object's ___slab_alloc
                self._trace_allocs(cid, self._sheaf_objects(sheaf, 0))
            if self._g[G_NPENDING]:          # constructors of new slabs
                self._construct_for_sheaf(cache, sheaf, cpu, gfp, "kmem_cache_prefill_sheaf")
        return sheaf

    def _construct_for_sheaf(self: "SlabAllocator", cache: KmemCache, sheaf: int,
                             cpu: int | None, gfp: int = 0, fn: str = "") -> None:
        """Run the constructors a prefilled sheaf's new slabs need, as an allocation's.

        As :meth:`_construct`: nested at most :data:`MAX_CTOR_DEPTH` deep, which a constructor
        prefilling its own cache passed until Python's recursion limit struck; if one raises, the
        sheaf goes back before the error does (it was the caller's only through the return value).
        With ``__GFP_ZERO`` in ``gfp``, ``new_slab``'s warning (the objects are zeroed when taken
        from the sheaf)."""
        made = self._ctor_slabs
        try:
            self._construct(cache._id)
            if gfp & _ZERO and self._ctor_slabs != made:
                _warn_zero_ctor(cache, fn)
        except BaseException:                   # (a Ctrl-C in a constructor too)
            if sheaf and type(cache) is KmemCache and self._is_user_sheaf(cache._id, sheaf):
                self.kmem_cache_return_sheaf(cache, GFP_KERNEL, sheaf, cpu)
            raise

    def _sheaf_objects(self: "SlabAllocator", sheaf: int, start: int) -> list[int]:
        """The objects a sheaf holds from ``objects[start]`` to its top."""
        o = (sheaf >> 3) + SH_OBJECTS
        return self._mem[o + start:o + int(self._mem[(sheaf >> 3) + SH_SIZE])].tolist()

    @cache_op
    def kmem_cache_alloc_from_sheaf(self: "SlabAllocator", cache: KmemCache, gfp: int,
                                    sheaf: int, cpu: int | None = None) -> int:
        """Take one object from a prefilled sheaf; 0 if it is empty (no fallback)."""
        cid = self._sheaf_cache(cache, "kmem_cache_alloc_from_sheaf")
        sheaf = self._user_sheaf(cid, sheaf, "kmem_cache_alloc_from_sheaf")
        gfp = check_gfp(gfp, "kmem_cache_alloc_from_sheaf")
        obj = int(alloc_from_sheaf(self._st, cid, self._cpu_of(cpu), gfp, sheaf))
        if obj == 0 and self._g[G_FAULT_CACHE]:     # it held an object handed out already
            self._raise_fault()
        made = self._ctor_slabs
        if obj and cache.ctor is not None and self._g[G_NPENDING]:   # (a refill whose
            self._construct_for(cache, obj, cid)    # constructors raised: at any depth)
        if obj and self._ctor_depth and cache.ctor is not None:    # a constructor's: the
            obj = self._construct_early(cache, [obj], gfp, -1, cpu)[0]  # object it builds is
        if obj:         # swapped for an allocation, the sheaf's others kept for the caller
            self._zero_after_ctor(cache, [obj], gfp, self._ctor_slabs != made,
                                  "kmem_cache_alloc_from_sheaf")
        return obj

    @cache_op
    def kmem_cache_refill_sheaf(self: "SlabAllocator", cache: KmemCache, gfp: int, sheaf: int,
                                size: int, cpu: int | None = None) -> int:
        """Make ``sheaf`` hold at least ``size`` objects; the sheaf to use from now on, or 0.

        The sheaf returned is a new one if it had to grow. On -ENOMEM the old one is still the
        user's: untouched, except that under 7.x a sheaf of the cache's capacity keeps the objects
        ``refill_sheaf`` got before memory ran out, and under ``next`` those the barn gave before
        it (as the kernel's does). If the constructors of its new slabs raise, the error is raised:
        a sheaf that had to grow was replaced by a larger one, which goes back to the cache (the
        old handle is no sheaf any more, as the error says); one that did not keeps its objects,
        constructed as they are taken."""
        cid = self._sheaf_cache(cache, "kmem_cache_refill_sheaf")
        sheaf = self._user_sheaf(cid, sheaf, "kmem_cache_refill_sheaf")
        _check_sheaf_size(size, "kmem_cache_refill_sheaf")
        gfp = check_gfp(gfp, "kmem_cache_refill_sheaf")
        have = int(self._mem[(sheaf >> 3) + SH_SIZE])
        if cid in self._trace_ids and size > self.sheaf_capacity_of(sheaf):
            # T: the unit's growth, in two calls so that each traces what it did: a new
            # sheaf (kmem_cache_prefill_sheaf), then the old one given back
            new = self.kmem_cache_prefill_sheaf(cache, gfp, size, cpu)
            try:
                if new:
                    self.kmem_cache_return_sheaf(cache, gfp, sheaf, cpu)
            except SlabDebugError as e:     # a refused flush: the new sheaf goes back too
                if getattr(e, "objects", None) is not None:
                    self.kmem_cache_return_sheaf(cache, gfp, new, cpu)
                raise
            return new
        objs = self._sheaf_objects(sheaf, 0) if self._debug_on else []
        with self._ctor_lock if cache.ctor is not None else _NO_LOCK:
            try:
                new = self._sheaf_unit("kmem_cache_refill_sheaf", refill_user_sheaf, cid,
                                       self._cpu_of(cpu), gfp, sheaf, size)
            except SlabCorruptionError:     # a fault: the old sheaf flushed on the way too?
                if objs and not self._is_user_sheaf(cid, sheaf):
                    self._refused_flush(cache, "kmem_cache_refill_sheaf", sheaf, objs)
                raise
            if new and new != sheaf:        # grown: the old one was flushed
                self._refused_flush(cache, "kmem_cache_refill_sheaf", sheaf, objs, new, gfp)
            if new and cid in self._trace_ids and have < size:
                self._trace_allocs(cid, self._sheaf_objects(new, have))
            if self._g[G_NPENDING]:
                made = self._ctor_slabs
                if new and new != sheaf:    # grown: the caller's handle is gone, and the
                    try:                    # new one goes back if the constructors raise
                        self._construct_for_sheaf(cache, new, cpu)
                    except SlabError as e:
                        raise type(e)(f"{e}; the refill had replaced the sheaf at "
                                      f"{sheaf:#x} with a larger one, given back to the "
                                      f"cache: that handle is no sheaf any more") from e
                else:                       # else the caller keeps the sheaf (what it takes
                    self._construct(cid)    # is constructed as it goes)
                if gfp & _ZERO and cache.ctor is not None and self._ctor_slabs != made:
                    _warn_zero_ctor(cache, "kmem_cache_refill_sheaf")
        return new

    @cache_op
    def kmem_cache_return_sheaf(self: "SlabAllocator", cache: KmemCache, gfp: int,
                                sheaf: int, cpu: int | None = None) -> None:
        """Give a prefilled sheaf back (as the CPU's spare, to the barn, or flushed)."""
        cid = self._sheaf_cache(cache, "kmem_cache_return_sheaf")
        sheaf = self._user_sheaf(cid, sheaf, "kmem_cache_return_sheaf")
        gfp = check_gfp(gfp, "kmem_cache_return_sheaf")
        cpu = self._cpu_of(cpu)             # every argument checked before anything changes
        objs = self._sheaf_objects(sheaf, 0) if self._debug_on else []     # (T: a debug flag)
        plan = None
        if cid in self._trace_ids:          # T: the flush's detached freelists
            plan = self._free_plan(cid, objs)
            seen = int(self._g[G_NREPORTS])
        try:
            self._sheaf_unit("kmem_cache_return_sheaf", return_user_sheaf, cid, cpu, gfp, sheaf)
        except SlabCorruptionError:         # (a fault the flush met: what it left held too)
            self._refused_flush(cache, "kmem_cache_return_sheaf", sheaf, objs)
            raise
        if plan is not None:
            self._trace_frees(plan, self._not_freed_since(seen))
        self._refused_flush(cache, "kmem_cache_return_sheaf", sheaf, objs)

    def _any_user_sheaf(self: "SlabAllocator", sheaf: Any, fn: str) -> int:
        """``sheaf`` after checking it is a prefilled sheaf of some cache."""
        sheaf = self._as_addr(sheaf, fn)
        if self._sheaf_owner(sheaf) is None:
            raise BadAddressError(f"{fn}: {sheaf:#x} is not a prefilled sheaf")
        return sheaf

    def kmem_cache_sheaf_size(self: "SlabAllocator", sheaf: int) -> int:
        """Objects left in a prefilled sheaf."""
        sheaf = self._any_user_sheaf(sheaf, "kmem_cache_sheaf_size")
        return int(self._mem[(sheaf >> 3) + SH_SIZE])

    def sheaf_capacity_of(self: "SlabAllocator", sheaf: int) -> int:
        """Capacity of a prefilled sheaf (larger than the cache's for an oversize one)."""
        sheaf = self._any_user_sheaf(sheaf, "sheaf_capacity_of")
        return int(self._mem[(sheaf >> 3) + SH_CAPACITY])

