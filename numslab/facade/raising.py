"""Errors on ``SlabAllocator``: the engine's error codes and faults as numslab exceptions.

The engine's negative error codes and fault registers, turned into exceptions whose messages name
the call, the cache and the address."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import checks, debug
from ..engine.prefill import return_user_sheaf
from ..engine.layout import (AT_CACHE, AT_COUNT, AT_CPU, AT_FRAME, AT_NODE, AT_OBJECT,
                             AT_SHEAF, AT_SHIFT, AT_SLAB, G_FAULT_CACHE, G_FAULT_SLAB,
                             G_FAULT_VALUE, G_NISOLATED, NIL, PG_HEAD, PG_LARGE, PG_RCU,
                             PG_RESERVED, PG_SLAB, PG_TAIL, SH_SIZE, ZERO_SIZE_PTR)
from ..errors import (PAGE_NOTE, BadAddressError, DoubleFreeError, InvalidArgumentError,
                      SlabCorruptionError, SlabDebugError, SlabError, WrongCacheError)
from ..geometry import PAGE_SIZE
from .cache import KmemCache

if TYPE_CHECKING:
    from .allocator import SlabAllocator

log = logging.getLogger("numslab")


def held_by_no_one(e: SlabDebugError, what: str, held: list[int], how: str) -> SlabDebugError:
    """``e`` with the objects a refused flush or batch free left allocated, held by no one.

    Named in the text after ``what`` (the first eight) and in the error's ``objects``
    (int64[n]), ``how`` closing the text."""
    shown = ", ".join(f"{a:#x}" for a in held[:8]) + ", ..." * (len(held) > 8)
    err = SlabDebugError(f"{e}\n{what} ({shown}; this error's .objects){how}", e.reports)
    err.objects = np.array(held, np.int64)
    return err


def free_again(call: str = "kmem_cache_free") -> str:
    """How to free what a refused detached freelist left allocated, with ``call``.

    ``free_debug_processing`` had already marked the chain's objects before the failing one
    free (``init_object``: red zones inactive, poisoned), so a check refuses, and repairs, their
    next free (the failing one's bytes were restored: its next free goes through)."""
    return (f"yours to free one by one with {call}, twice for each whose first free a check "
            f"refuses (those the check had marked free ahead of the failing one: that free "
            f"repairs them)")


class RaiseAPI:
    """The facade's error reporting, mixed into ``SlabAllocator``."""

    def _own(self: "SlabAllocator", cache: Any, fn: str) -> int:
        """The id of ``cache`` after checking it is a live cache of this allocator."""
        if type(cache) is not KmemCache or cache._sa is not self:
            if isinstance(cache, (int, np.integer)) and not isinstance(cache, bool):
                raise WrongCacheError(f"{fn}: {cache!r} is a number, not a cache: pass the "
                                      f"KmemCache (cache ids are numslab.jit's)")
            if type(cache) is KmemCache:
                raise WrongCacheError(f"{fn}: {cache!r} is a cache of another allocator")
            if isinstance(cache, str):          # (it read "'pkt' is not a live cache")
                raise WrongCacheError(f"{fn}: {cache!r} is a name, not a cache: pass the "
                                      f"KmemCache (sa.find_cache({cache!r}))")
            raise WrongCacheError(f"{fn}: {cache!r} is not a live cache of this allocator")
        return cache._id

    def _describe(self: "SlabAllocator", cid: int, addr: int) -> tuple[str | None, str | None]:
        """The name of cache id ``cid`` and a note on ``addr`` (None: none).

        The cache the object is from when its slab is another's (a wrong cache, named as the
        kernel's "Wrong slab cache" names both), else, for an object waiting for an RCU grace
        period, a note saying so, and for an address on no slab and no large kmalloc block what
        its page is (a free page: already freed?). numslab.jit's errors name the cache, and the
        note tells what compiled code cannot know."""
        cache = self._caches.get(cid)
        owner = self._caches.get(self._cache_of(addr))
        if cache is not None and owner is not None and owner is not cache:
            return cache.name, f"it is from {owner.name!r}"
        note = self._rcu_note(addr)
        if note is None and 0 <= addr < self.nr_pages * PAGE_SIZE and \
                not self.state.pg_flags[self._slab_head(addr)] & (PG_SLAB | PG_LARGE):
            note = PAGE_NOTE + self._page_state(addr)         # (a bad address's)
        return None if cache is None else cache.name, note

    def _page_state(self: "SlabAllocator", addr: int) -> str:
        """What the page frame holding ``addr`` (in the arena, on no slab) is: an error's text."""
        if addr == ZERO_SIZE_PTR:
            return (f"page frame 0 is reserved: {ZERO_SIZE_PTR:#x} is ZERO_SIZE_PTR, what "
                    "kmalloc(0) returns, which kfree alone ignores, as the kernel's does")
        pfn = addr >> 12
        f = int(self.state.pg_flags[pfn])
        if f & PG_TAIL:
            f = int(self.state.pg_flags[self.state.pg_head[pfn]])
        state = ("is reserved" if f & PG_RESERVED else
                 "is a SLAB_TYPESAFE_BY_RCU slab discarded with every object free, its "
                 "pages waiting for an RCU grace period: already freed?"
                 if f == PG_HEAD | PG_RCU else
                 "is part of a block from alloc_pages: free it with free_pages"
                 if f & (PG_HEAD | PG_TAIL) else "is free: already freed, or an "
                 "address of another allocator?")
        return f"page frame {pfn} {state}"

    def _corruption(self: "SlabAllocator", cid: int, word: int,
                    where: int) -> SlabCorruptionError:
        """``validate``'s error: the broken invariant ``word`` of cache id ``cid`` and where.

        ``word`` is G_ERR0: its index in ``checks.CORRUPTION``, the kind of place above
        ``AT_SHIFT``; ``cid`` NIL: the page allocator's or the whole machine's; where: G_ERR1."""
        what, kind = word & ((1 << AT_SHIFT) - 1), word >> AT_SHIFT
        text = checks.CORRUPTION[what] if 0 <= what < len(checks.CORRUPTION) else \
            "an invariant (its detail overwritten by another thread's refused call)"
        cache = self._caches.get(cid)
        places = [] if cid == NIL else [f"cache {cache.name if cache is not None else '-'}"]
        frame = 0 <= where < self.nr_pages              # (else a link set wrong: its value)
        place = {AT_SLAB: f"slab at {where << 12:#x}" if frame else f"slab frame {where}",
                 AT_FRAME: f"page frame {where} at {where << 12:#x}", AT_NODE: f"node {where}",
                 AT_CPU: f"cpu {where}", AT_SHEAF: f"sheaf at {where - self.memory.size:#x}",
                 AT_OBJECT: f"object at {where:#x}", AT_CACHE: "",
                 AT_COUNT: f"{where} found"}.get(kind, f"at {where}")
        places += [place] * bool(place)
        return SlabCorruptionError(f"validate: {text}" +
                                   (f" ({', '.join(places)})" if places else ""))

    def _take_fault(self: "SlabAllocator") -> tuple[int, int, int]:
        """The fault register, cleared: (cache id + 1, slab frame, the bad free pointer)."""
        g = self._g
        fault = int(g[G_FAULT_CACHE]), int(g[G_FAULT_SLAB]), int(g[G_FAULT_VALUE])
        g[G_FAULT_CACHE] = g[G_FAULT_SLAB] = g[G_FAULT_VALUE] = 0
        return fault

    def _isolations(self: "SlabAllocator") -> int:
        """The slabs ever isolated on this machine (``G_NISOLATED``): before a flushing call."""
        return int(self._g[G_NISOLATED])

    def _log_isolated(self: "SlabAllocator", call: str, cache: KmemCache, before: int) -> None:
        """Warn on the ``numslab`` logger of the slabs ``call`` isolated, raising nothing.

        A flush (6.18's CPU slab leaving, a CPU partial list unfrozen) that meets a corrupted free
        list isolates the slab and goes on: it raises nothing (it is no allocation that took
        nothing), but a slab that ``validate()`` refused before the call no longer fails it
        after, so the call says so (``before``: :meth:`_isolations` before it)."""
        n = self._isolations() - before
        if n > 0:
            log.warning("%s(%s): a corrupted free list (a write into freed memory?): %d slab(s) "
                        "isolated, their free objects lost (isolated_slabs(), lost_objects)",
                        call, cache.name, n)

    def _raise_fault(self: "SlabAllocator") -> None:
        """Raise ``SlabCorruptionError`` for the corrupted free pointer the engine found.

        Its report is cleared. The slab it was in is isolated: never allocated from again."""
        cache1, slab, bad = self._take_fault()
        cid = cache1 - 1
        cache = self._caches.get(cid)
        name = cache.name if cache is not None else f"cache {cid}"
        raise SlabCorruptionError(
            f"{name}: Freepointer corrupt: a free object of the slab at {slab << 12:#x} holds "
            f"{bad:#x} where its free pointer belongs, which does not lead to a free object of "
            f"that slab, or leads to one a sheaf holds (a write into freed memory?); the slab "
            f"is isolated and no longer allocated from (and any other the call found corrupt: "
            f"isolated_slabs() lists them), nothing was allocated")

    def _sheaf_fault(self: "SlabAllocator", fn: str, r: int, cid: int, cpu: int, gfp: int,
                     sheaf: int = 0, size: int = 0) -> None:
        """Raise the corrupted free pointer that prefilled-sheaf call ``fn`` met (unit's ``r``).

        The slab is isolated and the call went on with other slabs; as an allocation, it then
        raises having handed out nothing new: a prefill's sheaf, or the larger one a refill
        replaced ``sheaf`` with (the old one already flushed), goes back to the cache; a sheaf
        refilled in place stays the caller's with what it holds. A return's top-up that met one
        raises nothing (it allocated nothing for the caller: the rule of the engine's flushes)
        unless a slab_debug check reported it."""
        g = self._g
        sheaf = 0 if fn == "kmem_cache_prefill_sheaf" else sheaf     # (its args: size)
        if fn == "kmem_cache_return_sheaf" and not self._last_reports:
            self._take_fault()
            return
        note = ""
        if r and r != sheaf and fn != "kmem_cache_return_sheaf":     # a new sheaf: back
            # (with the fault still set, as the unit met it: kmalloc_internal keeps a set one)
            saved = (int(g[G_FAULT_CACHE]), int(g[G_FAULT_SLAB]), int(g[G_FAULT_VALUE]))
            return_user_sheaf(self._st, cid, cpu, gfp, r)
            g[G_FAULT_CACHE], g[G_FAULT_SLAB], g[G_FAULT_VALUE] = saved
            note = f"; the sheaf it filled ({r:#x}) went back to the cache" + (
                f", and the one it replaced ({sheaf:#x}) is no sheaf any more" * bool(sheaf))
        elif sheaf and fn != "kmem_cache_return_sheaf":
            note = (f"; the sheaf at {sheaf:#x} stays yours, holding "
                    f"{int(self._mem[(sheaf >> 3) + SH_SIZE])} objects")
        if self._last_reports:                  # a slab_debug check failed on the way
            e = self._debug_error(fn, 0, self._take_fault()[1])
            e.args = (f"{e.args[0]}{note}",)
            raise e
        try:
            self._raise_fault()
        except SlabCorruptionError as e:
            e.args = (f"{fn}: {e.args[0]}{note}",)
            raise

    def _batch_error(self: "SlabAllocator", err: int, fn: str, nr: int, objs: np.ndarray,
                     cache: KmemCache | None) -> None:
        """Raise for a batch free's error code ``err`` (element encoded), batch ``objs[:nr]``.

        A slab_debug check's refusal leaves the refused detached freelists allocated (the
        kernel's "Object at .. not freed"), the others freed: the error's ``objects`` lists
        what of the batch stays allocated, held by no one now, for the caller to free."""
        if err == checks.E_ARRAY_PLACE:         # the array, not an element
            self._refuse_array(fn, objs)
        err, i = checks.batch_error(err)
        if err != debug.E_DEBUG:
            self._raise(err, f"{fn}: element {i}", int(objs[i]), cache, objs[:i + 1])
        held = [a for a in objs[:nr].tolist() if self._locate(a)[0] == 0]
        e = self._debug_error(f"{fn}: element {i}", int(objs[i]))
        raise held_by_no_one(e, f"{fn}: {len(held)} of the batch's {nr} objects stay allocated",
                             held, f": the detached freelists a check refused, "
                             f"{free_again('kfree' if cache is None else 'kmem_cache_free')}")

    def _refuse_array(self: "SlabAllocator", fn: str, array: np.ndarray | None) -> None:
        """Raise for a batch call whose address array lies in the arena outside a live allocation.

        Over memory that is not one live allocation of the user's (``checks.E_ARRAY_PLACE``;
        ``array``: None when the caller no longer has it)."""
        at = "" if array is None else f" at {array.ctypes.data - self.memory.ctypes.data:#x}"
        raise InvalidArgumentError(f"{fn}: the array of addresses{at} lies in the arena but "
                                   f"not inside one live allocation of yours (it covers a "
                                   f"free object or the allocator's memory): the call writes "
                                   f"the array while it reads that memory; pass an array "
                                   f"outside the arena or inside an object you hold; nothing "
                                   f"was done")

    def _page_cache(self: "SlabAllocator", addr: int) -> str:
        """`` (name)`` of the cache whose slab holds ``addr``; empty if none does.

        The calls that name no cache, ``kfree`` and its kin, name it so in their errors."""
        cid = self._cache_of(addr)
        cache = self._caches.get(cid)          # (another thread may destroy it meanwhile)
        return "" if cache is None else f" ({cache.name})"

    def _slab_owner(self: "SlabAllocator", head: int, where: str) -> "KmemCache":
        """The cache of the slab at frame ``head``, read after an engine call found it.

        A SlabError if another thread freed that slab or destroyed its cache meanwhile (a bare
        KeyError before)."""
        cache = self._caches.get(int(self.state.sl_cache[head]))
        if cache is None:
            raise BadAddressError(f"{where}: the slab at {head << 12:#x} was freed or its "
                                  f"cache destroyed by another thread meanwhile")
        return cache

    def _raise(self: "SlabAllocator", err: int, fn: str, addr: int,
               cache: "KmemCache | None", batch: np.ndarray | None = None) -> None:
        """Turn a kernel error code into the matching exception.

        Its details are read from the state at ``addr`` (another thread may have run a kernel since
        this one failed, so no error register is trusted here); a batch's, of its last element
        ``addr`` and the elements before it in ``batch``."""
        where = f"{fn}: {addr:#x}"
        head = self._slab_head(addr) if 0 <= addr < self.nr_pages * PAGE_SIZE else -1
        if err == checks.E_OUTSIDE:
            raise BadAddressError(f"{where} is outside the arena [0x1000, "
                                  f"{self.nr_pages * PAGE_SIZE:#x})")
        if err == checks.E_NOT_SLAB:
            raise BadAddressError(f"{where} is not on a slab page ({self._page_state(addr)})")
        if err == checks.E_WRONG_CACHE:
            name = cache.name if cache is not None else "?"     # (a cache has a len)
            raise WrongCacheError(f"{where}: Wrong slab cache. {name} but object is from "
                                  f"{self._slab_owner(head, where).name}")
        if err == checks.E_MISALIGNED:
            c = self._slab_owner(head, where)
            off = addr - (head << 12) - c.red_left_pad
            raise BadAddressError(f"{where} is not the start of an object of {c.name}: the "
                                  f"slab at {head << 12:#x} has objects every {c.slab_size} "
                                  f"bytes (offset {off} is {off % c.slab_size} past one)")
        if err == checks.E_DOUBLE_FREE:
            if cache is None:       # kfree and kfree_bulk name no cache: the page does
                where += self._page_cache(addr)
            note = self._rcu_note(addr)             # one waiting for kfree_rcu: named so
            if note:
                raise DoubleFreeError(f"{where}: double free, {note}")
            detail = "".join("\n" + r for r in self._last_reports[:1])   # F: "Object already free"
            raise DoubleFreeError(f"{where}: double free, the object is already free{detail}")
        if err == checks.E_TWICE:           # a batch's (the engine's verdict): name both
            if cache is None:
                where += self._page_cache(addr)
            batch = np.array([addr], np.int64) if batch is None else batch
            j = np.flatnonzero(batch[:-1] == addr)          # as the engine's _twin finds it
            earlier = f"element {int(j[0])}" if len(j) else "an earlier element"
            raise DoubleFreeError(f"{where}: double free within the batch: element "
                                  f"{len(batch) - 1} names the same object as {earlier}; "
                                  f"nothing freed")
        if err in (checks.E_LARGE, checks.E_NOT_HEAD):
            raise BadAddressError(f"{where} is inside a large kmalloc block at {head << 12:#x}, "
                                  f"not at its start" if err == checks.E_NOT_HEAD else
                                  f"{where} is a large kmalloc block, not a slab object")
        if err == debug.E_DEBUG:
            raise self._debug_error(fn, addr)
        if err == checks.E_ALLOCATORS:     # a sheaf, a struct node_barn or an s->random_seq
            what = ("a node barn (struct node_barn)" if (self.state.barn == addr).any()
                    else "a cache's random free-list sequence (s->random_seq)"
                    if (self.state.random_seq == addr).any() else "a sheaf")
            raise BadAddressError(f"{where} is {what} the allocator itself uses (a kmalloc "
                                  f"object it holds), not an object of yours")
        if err == checks.E_HOLDS_ARRAY:
            raise InvalidArgumentError(f"{where} holds the array of addresses being freed (the "
                                       f"array lies in this object, and freeing it writes into "
                                       f"it while the call still reads the array): pass an "
                                       f"array outside the objects it frees; nothing was freed")
        raise SlabError(f"{where}: error {err}")  # pragma: no cover
