"""The facade's batch operations, each one checked Python call around one kernel.

The bulk API as merged (4.3/4.4), the seed's array API and the constructors' runs (the
6.18 prefilled-sheaf API is ``sheafapi``'s)."""
from __future__ import annotations

import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

import numba as nb
import numpy as np

from ..drivers.calls import bound
from ..engine import checks, ops
from ..engine.layout import CA_CTOR, G_NPENDING, NIL, PENDING_FRAME, PENDING_SHIFT
from ..engine.native import jit
from ..engine.slablists import pending_put, pending_take
from ..errors import (BadAddressError, CacheLeakError, ConstructorError, DoubleFreeError,
                      InvalidArgumentError, InvalidSizeError, SlabDebugError, SlabError)
from ..flags import GFP_NAMES, SLAB_ARRAY_ALLOC_ALL, __GFP_NOWARN, __GFP_ZERO
from .args import as_int, cache_op, check_gfp, size_error
from .cache import KmemCache

if TYPE_CHECKING:
    from .allocator import SlabAllocator

_I64 = np.dtype(np.int64)
_NOWARN, _ZERO = __GFP_NOWARN, __GFP_ZERO     # a __GFP name in a class body is name-mangled
#: numslab's folder: warnings point at the first frame outside it
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep



def _warn_zero_ctor(cache: KmemCache, fn: str) -> None:
    """``new_slab``'s ``WARN_ON_ONCE(s->ctor && (flags & __GFP_ZERO))`` as a RuntimeWarning.

    Pointing at the user's line (the first frame outside numslab)."""
    f, level = sys._getframe(1), 2
    while f is not None and f.f_code.co_filename.startswith(_PACKAGE):
        f, level = f.f_back, level + 1
    warnings.warn(f"{fn}({cache.name}): __GFP_ZERO on a cache with a constructor (the "
                  f"kernel's WARN_ON_ONCE in new_slab): the objects are zeroed after it",
                  RuntimeWarning, stacklevel=level)


@jit(cache=False)
def _run_ctor(ctor, mem8, base, size, n):
    """Call a jitted constructor on the ``n`` objects of a new slab at ``base``."""
    for i in range(n):
        ctor(mem8, base + i * size)


def _array_faults(arr: Any) -> str:
    """What is wrong with ``arr`` as an object array, in words ("a read-only ndarray")."""
    if arr is None or type(arr) is not np.ndarray:
        name = type(arr).__name__
        return "None" if arr is None else f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"
    faults = [w for w, bad in (("read-only", not arr.flags.writeable),
                               ("non-contiguous", not arr.flags.c_contiguous),
                               (f"{arr.ndim}-D", arr.ndim != 1),
                               (str(arr.dtype), arr.dtype != _I64)) if bad]
    words = " ".join(faults)
    return f"{'an' if words[:1] in set('aeio8') else 'a'} {words} ndarray of shape {arr.shape}"


#: How deep constructors may nest (a constructor allocating from a cache with a constructor).
MAX_CTOR_DEPTH = 32


def _nested_too_deep(name: str) -> ConstructorError:
    """The refusal of constructors nested :data:`MAX_CTOR_DEPTH` deep in cache ``name``."""
    return ConstructorError(f"{name}: constructors nested {MAX_CTOR_DEPTH} deep (a constructor "
                            f"allocating from its own cache?)")


class BatchAPI:
    """Batch methods of :class:`SlabAllocator`, and the constructors of new slabs.

    Kept in their own module."""

    def _run_ctors(self: "SlabAllocator", cid: int) -> None:
        """Construct the objects of cache ``cid``'s slabs whose constructors are due.

        The slabs created or left part-way since its last allocation; other caches' stay due until
        theirs (a constructor's failure is reported by an allocation from its own cache, not by
        whatever call comes next). The due list is read and written under the constructor lock, by
        caches with a constructor only: a cache without one has nothing due, and its rewrite of the
        list could drop what another thread's new slab had just added."""
        if getattr(self._caches.get(cid), "ctor", None) is None:
            return
        with self._slab_mutex, self._ctor_lock:     # in the operations' order (cache_op)
            self._run_ctors_locked(cid)

    def _run_ctors_locked(self: "SlabAllocator", cid: int) -> None:
        """:meth:`_run_ctors` under the constructor lock.

        The due entries are taken off the list, and a failure's put back, by the engine
        (``slablists.pending_take``, ``pending_put``): its discards change it in any thread."""
        room, cache = int(self._g[G_NPENDING]), self._caches[cid]
        name, buf = cache.name, np.full(max(room, 1), -1, np.int64)   # (-1: not taken)
        python = not isinstance(cache.ctor, nb.core.registry.CPUDispatcher)
        n, due, marked = 0, [], False
        try:            # (a Ctrl-C before the loop puts what was taken back on the list)
            n = pending_take(self._st, cid, room, buf.ctypes.data)
            due = buf[:n].tolist()
            if python:                  # every slab due (a constructor's allocation may take
                for entry in due:       # from any); CA_CTOR > 1 meanwhile: numslab.jit's
                    slab = entry & PENDING_FRAME    # compaction refuses it (_refuse_building)
                    self._building[slab] = [(slab << 12) + cache.red_left_pad,
                                            cache.slab_size, entry >> PENDING_SHIFT, set(), cid]
                marked = n > 0
                self.state.ca[cid, CA_CTOR] += marked
        except BaseException:       # (n is 0 if it came as the engine's call returned)
            n = n or int(np.count_nonzero(buf >= 0))
            if n:
                pending_put(self._st, cid, n, buf.ctypes.data)
            if marked:
                self.state.ca[cid, CA_CTOR] -= 1
            for entry in due:
                self._building.pop(entry & PENDING_FRAME, None)
            raise
        self._ctor_slabs += len(due)
        try:
            for k, entry in enumerate(due):
                if type(cache) is not KmemCache:    # a constructor destroyed it (force): what
                    raise ConstructorError(     # was due went with its slabs
                        f"{name}: a constructor destroyed the cache; nothing was allocated")
                slab, i = entry & PENDING_FRAME, entry >> PENDING_SHIFT
                base, size = (slab << 12) + cache.red_left_pad, cache.slab_size
                nobj = int(self.state.sl_objects[slab])
                inside = cache.offset < cache.object_size      # (7.x: ctor and freeptr_offset)
                kept = {}
                try:
                    if isinstance(cache.ctor, nb.core.registry.CPUDispatcher):  # (no allocation
                        kept = self._free_pointers(cache, base, size, i, nobj)  # in it: nopython)
                        _run_ctor(cache.ctor, self.memory, base + i * size, size, nobj - i)
                        i = nobj
                    else:
                        if inside:
                            self._inobj_building.add(cid)
                        building = self._building[slab]
                        while i < nobj and type(cache) is KmemCache:    # (unless destroyed)
                            if i not in building[3]:    # (not constructed early: _construct_early)
                                building[2] = i + 1
                                kept = self._free_pointers(cache, base, size, i, i + 1)
                                self._construct_one(cache, base + i * size)
                                self._put_back_free_pointers(cache, kept)
                                kept = {}
                            i += 1
                except BaseException as e:     # (a Ctrl-C too: what was due, taken off the
                    self._put_back_free_pointers(cache, kept)   # list, was never constructed)
                    # resume there at the next allocation of the cache, unless the constructor
                    # destroyed it (its slabs went with it, and may be another cache's by now)
                    if type(cache) is KmemCache:
                        rest = np.array([slab | i << PENDING_SHIFT] + due[k + 1:], np.int64)
                        pending_put(self._st, cid, len(rest), rest.ctypes.data)
                    if not isinstance(e, Exception):
                        raise
                    inner = str(e)
                    inner = inner if len(inner) <= 300 else inner[:300] + " ..."
                    raise ConstructorError(f"{name}: the constructor raised {type(e).__name__} "
                                           f"on the object at {base + i * size:#x}; nothing was "
                                           f"allocated ({inner})") from e
                self._put_back_free_pointers(cache, kept)
        finally:                        # (the loop ended, or a constructor raised)
            self._inobj_building.discard(cid)
            if python and due and self._caches.get(cid) is cache:   # (not a new cache's slot)
                self.state.ca[cid, CA_CTOR] -= 1
            for entry in due:
                self._building.pop(entry & PENDING_FRAME, None)

    def _free_pointers(self: "SlabAllocator", cache: KmemCache, base: int, size: int,
                       first: int, nobj: int) -> dict[int, np.ndarray]:
        """The free-pointer words of objects ``first..nobj-1`` of the slab at ``base``, by address.

        Those that lie inside the object (a constructor's cache given ``freeptr_offset``, 7.x),
        else none: the kernel runs a new slab's constructors before it writes the free pointers
        (``allocate_slab``: ``setup_object``, then ``set_freepointer``), numslab after, so the
        words are put back afterwards (:meth:`_put_back_free_pointers`). A Python constructor's
        object's word is kept and put back around its own call, and allocations from the cache are
        refused meanwhile (``args.cache_op``): they would walk the slab's free list through the
        object under construction."""
        if cache.offset >= cache.object_size:
            return {}
        return {a: self.memory[a:a + 8].copy()
                for a in range(base + first * size + cache.offset, base + nobj * size, size)}

    def _put_back_free_pointers(self: "SlabAllocator", cache: KmemCache,
                                kept: dict[int, np.ndarray]) -> None:
        """Write back the words :meth:`_free_pointers` kept, of the objects still free.

        An object already handed out keeps what its constructor wrote."""
        for a, word in kept.items():
            if self._locate(a - cache.offset, cache.id)[0]:     # not live: a free object
                self.memory[a:a + 8] = word

    def _array(self, arr: Any, nr: Any, fn: str) -> int:
        """``nr`` as an int, once ``arr`` is checked: a writable int64[n] array, ``n >= nr``.

        ``arr`` must be a writable C-contiguous 1-D int64 ndarray holding at least ``nr`` entries,
        ``nr`` a count, an int or a NumPy integer as addresses may be (on every call: an array can
        be reshaped, retyped or made read-only in place between calls)."""
        if type(arr) is not np.ndarray or arr.dtype != _I64 or arr.ndim != 1 \
                or not (flags := arr.flags).c_contiguous or not flags.writeable:
            raise InvalidArgumentError(f"{fn}: the object array must be a writable contiguous 1-D "
                                       f"int64 ndarray, not {_array_faults(arr)}")
        if type(nr) is not int and (isinstance(nr, bool) or not isinstance(nr, np.integer)) \
                or nr < 0:
            raise size_error(nr)(f"{fn}: count {nr!r} is not a non-negative int")
        if nr > arr.shape[0]:
            named = [n for v, n in GFP_NAMES if v == nr and n.startswith("GFP_")]
            swap = f" (it is {named[0]}: the arguments are cache, gfp, count, array)" \
                if named and "alloc" in fn else ""
            raise InvalidSizeError(f"{fn}: count {nr} is larger than the array "
                                   f"({arr.shape[0]} entries){swap}")
        return int(nr)

    def _cpu_of(self: "SlabAllocator", cpu: int | None) -> int:
        return self._tls.cpu if cpu is None else self._check_cpu(cpu)

    # ---- the bulk API ---------------------------------------------------------------------
    @cache_op
    def kmem_cache_alloc_bulk(self: "SlabAllocator", cache: KmemCache, gfp: int, nr: int,
                              out: np.ndarray, cpu: int | None = None) -> int:
        """Allocate ``nr`` objects into ``out[:nr]``; ``nr``, or 0 with nothing taken.

        Parameters
        ----------
        cache : KmemCache
        gfp : int
        nr : int
        out : numpy.ndarray
            int64[n], ``n >= nr``, 1-D, C-contiguous and writable: the addresses go to
            ``out[:nr]``.
        cpu : int, optional
            The simulated CPU (default: the calling thread's).

        Returns
        -------
        int
            ``nr``, or 0 with nothing taken (all or nothing, as the kernel's
            ``kmem_cache_alloc_bulk``).
        """
        if type(cache) is not KmemCache or cache._sa is not self:
            self._own(cache, "kmem_cache_alloc_bulk")
        cpu = self._tls.cpu if cpu is None else self._check_cpu(cpu)   # numslab.jit's order:
        gfp = check_gfp(gfp, "kmem_cache_alloc_bulk")       # cache, cpu, gfp, flags, array
        nr = self._array(out, nr, "kmem_cache_alloc_bulk")
        if cache.ctor is not None:
            with self._ctor_lock:
                return self._bulk_ctor(cache, self._k_alloc_bulk(cache._id, cpu, gfp, nr, out),
                                       nr, gfp, out, "kmem_cache_alloc_bulk")
        got = self._k_alloc_bulk(cache._id, cpu, gfp, nr, out)
        if got <= 0:
            return self._bulk_done(cache, got, nr, gfp, "kmem_cache_alloc_bulk")
        return got

    def _bulk_ctor(self: "SlabAllocator", cache: KmemCache, got: int, nr: int, gfp: int,
                   out: np.ndarray, fn: str) -> int:
        """:meth:`_bulk_done` for a cache with a constructor.

        A constructor that raises, or that freed an object of the batch, gives the batch back (what
        is still its own)."""
        runs, made = self._ctor_runs, self._ctor_slabs
        addrs = out[:got].tolist() if got > 0 else []   # before the constructors: they may
        try:                                            # write where ``out`` lies
            got = self._bulk_done(cache, got, nr, gfp, fn)
        except BaseException:                           # (a Ctrl-C in a constructor too)
            if addrs:
                self._give_back_batch(cache, addrs)
            raise
        if got > 0 and self._ctor_runs != runs:
            lost = self._lost_to_ctor(cache, addrs)
            if lost:
                self._give_back_batch(cache, addrs, lost)
                raise self._ctor_took(cache, lost)
        if got > 0 and self._ctor_depth:    # (whether or not this call ran constructors: a
            if not self._construct_early(cache, addrs, gfp, -1, None, out):  # running loop's
                return 0                                            # slab is not due)
        if got > 0:
            self._zero_after_ctor(cache, out[:got].tolist(), gfp, self._ctor_slabs != made, fn)
        return got

    def _zero_after_ctor(self: "SlabAllocator", cache: KmemCache | None, addrs: list[int],
                         gfp: int, ran: bool, fn: str) -> None:
        """``__GFP_ZERO`` on a cache with a constructor: zero the objects again after it ran.

        ``slab_post_alloc_hook`` zeroes every object after ``new_slab`` ran the constructors
        (init_on_alloc off). The engine zeroed the objects as it handed them out; when this call
        constructed slabs of the cache (``ran``) their constructors wrote after that, so the
        objects are zeroed again, and the kernel's ``WARN_ON_ONCE(s->ctor && (flags &
        __GFP_ZERO))`` in ``new_slab`` is a RuntimeWarning."""
        if not ran or not gfp & _ZERO or cache is None or cache.ctor is None or not addrs:
            return
        _warn_zero_ctor(cache, fn)
        mem, n = self.memory, cache.object_size
        for a in addrs:
            mem[a:a + n] = 0

    def _construct_one(self: "SlabAllocator", cache: KmemCache, addr: int) -> None:
        """Run ``cache``'s constructor on the object at ``addr``.

        If an allocation the constructor made from its own cache was handed this very object
        (:meth:`_construct_early`), it is held until now and then freed."""
        outer = self._constructing.get(addr)   # (a constructor that destroyed its cache
        self._constructing[addr] = False        # may have a new cache's build this address)
        try:
            cache.ctor(self.memory, addr)
        finally:
            held = self._constructing.pop(addr, False)
            if outer is not None:
                self._constructing[addr] = outer
            if held and type(cache) is KmemCache and not self._locate(addr, cache._id)[0]:
                self._k_free(cache._id, self._cpu(), addr)

    def _construct_early(self: "SlabAllocator", cache: KmemCache, addrs: list[int], gfp: int,
                         node: int, cpu: int | None, out: np.ndarray | None = None
                         ) -> list[int]:
        """``addrs``, handed to an allocation a constructor made from ``cache``, made fit to use.

        The allocation: a batch's, ``out``. The kernel hands out no object of a new slab before its
        constructors ran, numslab runs them once the slab is in use. An object a constructor is
        building is held (:meth:`_construct_one` frees it) and replaced by another allocation; an
        object of a slab whose constructors are running and have not reached it is constructed now
        (the loop then skips it: it overwrote what the caller had written). Returns the objects to
        hand out (recorded for :meth:`_lost_to_ctor`), written into ``out``; or [] (0 for a single
        object) with the batch given back when memory ran out. If a constructor raises, the objects
        go back and the allocation raises."""
        for j, addr in enumerate(addrs):
            if addr in self._constructing:
                self._constructing[addr] = True
                try:
                    addrs[j] = addr = self.kmem_cache_alloc_node(cache, gfp, node, cpu)
                except SlabError:
                    self._give_back_batch(cache, addrs[:j] + addrs[j + 1:])
                    raise
                self._ctor_out.discard(addr)        # (the caller's, not lost: recorded below)
                if out is not None:
                    out[j] = addr
                if not addr:
                    if out is None:
                        return [0]
                    self._give_back_batch(cache, [a for a in addrs if a])
                    return []
        for addr in addrs:
            b = self._building.get(self._slab_head(addr))
            if b is None or b[4] != cache._id or (i := (addr - b[0]) // b[1]) < b[2] or \
                    i in b[3]:
                continue
            b[3].add(i)
            if self._ctor_depth >= MAX_CTOR_DEPTH:
                self._give_back_batch(cache, addrs)
                raise _nested_too_deep(cache.name)
            self._ctor_depth += 1
            was_out = addr in self._ctor_out
            try:
                cache.ctor(self.memory, addr)
            except BaseException as e:
                self._give_back_batch(cache, addrs)
                if not isinstance(e, Exception):    # (a Ctrl-C: the batch given back too)
                    raise
                raise ConstructorError(f"{cache.name}: the constructor raised "
                                       f"{type(e).__name__} on the object at {addr:#x}; nothing "
                                       f"was allocated") from e
            finally:
                self._ctor_depth -= 1
            # the constructor freed it (and an allocation it made may have been handed it)
            if self._locate(addr, cache._id)[0] or (not was_out and addr in self._ctor_out):
                self._give_back_batch(cache, addrs, lost=[addr])
                raise self._ctor_took(cache, [addr])
        self._ctor_out.update(addrs)
        return addrs

    def _construct_for(self: "SlabAllocator", cache: KmemCache | None, addr: int,
                       cid: int) -> None:
        """Run the constructors due for an allocation that got ``addr``, or give it back and raise.

        Those due on the slabs of the cache allocated from (``cache``, else ``cid``: a batch's); if
        one raises, or freed ``addr`` (:meth:`_lost_to_ctor`), the allocation gives back what is
        still its own and raises: nothing is handed out unconstructed, or twice. An allocation from
        a cache without a constructor has none to run (another thread's are due), and leaves the
        constructors' bookkeeping, which the lock holder's run keeps, alone: it counted its own
        object as one a running constructor had taken."""
        owner = self._caches.get(cid) if cache is None else cache
        if type(owner) is KmemCache and owner.ctor is None:
            return
        try:
            self._construct(cid if cache is None else cache._id)
        except BaseException:                   # (a Ctrl-C in a constructor too)
            if addr > 0 and cache is not None and not self._lost_to_ctor(cache, [addr]):
                self.kmem_cache_free(cache, addr)
            raise
        if addr > 0 and cache is not None and self._lost_to_ctor(cache, [addr]):
            raise self._ctor_took(cache, [addr])

    def _construct(self: "SlabAllocator", cid: int) -> None:
        """:meth:`_run_ctors`, counting the runs and their nesting (up to :data:`MAX_CTOR_DEPTH`).

        The allocations a constructor makes record what they hand out in ``_ctor_out`` (cleared
        when the outermost run starts) for :meth:`_lost_to_ctor`. Nesting stops at
        :data:`MAX_CTOR_DEPTH` with a ``SlabError``, before the constructors run (they stay due): a
        constructor allocating from its own cache recursed until Python's recursion limit struck
        somewhere in the facade's bookkeeping, which left a sheaf naming a live object, or crashed
        the interpreter."""
        if self._ctor_depth >= MAX_CTOR_DEPTH:
            raise _nested_too_deep(self._caches[cid].name)
        if not self._ctor_depth:
            self._ctor_out.clear()
        self._ctor_depth += 1
        self._ctor_runs += 1
        try:
            self._run_ctors(cid)
        finally:
            self._ctor_depth -= 1

    def _lost_to_ctor(self: "SlabAllocator", cache: KmemCache, addrs: list[int]) -> list[int]:
        """Those of ``addrs`` that are no longer the caller's after ``cache``'s constructors ran.

        ``addrs`` were just handed out by an allocation from ``cache``: a constructor freed them
        (and may have had them allocated again), or destroyed the cache."""
        if type(cache) is not KmemCache:                # destroyed meanwhile
            return list(addrs)
        return [a for a in addrs if a in self._ctor_out or self._locate(a, cache._id)[0]]

    def _give_back_batch(self: "SlabAllocator", cache: KmemCache, addrs: list[int],
                         lost: list[int] | None = None) -> None:
        """Free those of a batch's ``addrs`` that are still the caller's, all but ``lost``.

        ``lost`` is by default :meth:`_lost_to_ctor`'s: the batch's allocation failed after the
        engine handed them out."""
        gone = set(self._lost_to_ctor(cache, addrs) if lost is None else lost)
        keep = np.array([a for a in addrs if a not in gone], np.int64)
        if len(keep):
            self.kmem_cache_free_bulk(cache, len(keep), keep)

    def _ctor_took(self: "SlabAllocator", cache: KmemCache, lost: list[int]
                   ) -> ConstructorError:
        """The error of an allocation whose constructors freed what it was handing out."""
        return ConstructorError(f"{cache.name}: a constructor freed the object being allocated "
                                f"at {lost[0]:#x}{' (and others)' if len(lost) > 1 else ''}, "
                                f"or destroyed the cache; nothing was allocated")

    def _cache_release(self: "SlabAllocator", cid: int, force: bool) -> bool:
        """Release the slabs of cache ``cid`` (being destroyed), with those of its lost objects.

        False with nothing changed if another thread took an object since the caller's check (or,
        not ``force``, lost objects appeared). The constructors still due on them are forgotten by
        the engine as it discards each slab (``slablists._pending_forget``): a rewrite of the due
        list here, outside the constructor lock, met another thread's reading it. It waits for the
        threads that wait to enter the engine: each may hold ``cid``, checked before it waited
        (``numslab.jit`` callers and the call gate; the facade's cache operations hold the
        slab_mutex)."""
        while (r := ops.cache_release(self._st, cid, self._cpu(), int(force))) == \
                ops.RELEASE_LATER:      # threads wait to enter the engine, maybe with cid:
            time.sleep(0.0002)          # they go first (the GIL released)
        return not r

    def _free_every_object(self: "SlabAllocator", cache: KmemCache) -> None:
        """Free every live object of ``cache`` (a forced destroy).

        The objects are read, then freed in a later engine call: another thread's free in between
        (its racing user's) made the batch a double free, refused whole; they are read again then.
        On a slab_debug cache, objects whose free a check refused (a red zone or poison
        overwritten: the kernel's "Object at .. not freed", which also leaves the objects checked
        before it on the detached freelist with their free-state bytes, so that every later attempt
        refused another) are freed without the checks, with a warning: the reports are in
        :meth:`slab_reports`. (Each attempt refused one more, and a destroy took 17 calls for one
        stray byte.)"""
        unchecked = None
        for _ in range(100):
            held = cache.live_addresses()
            if not len(held):
                return
            if unchecked is not None:   # the checks off inside the engine, for this call
                err = unchecked(cache._id, self._cpu(), len(held), held)
                if not err:
                    return
                err, i = checks.batch_error(err)
                if err in (checks.E_DOUBLE_FREE, checks.E_TWICE, checks.E_NOT_SLAB,
                           checks.E_OUTSIDE):
                    continue            # (another thread's free in between: read again)
                self._raise(err, f"kmem_cache_destroy({cache.name}, force=True): element "
                            f"{i}", int(held[i]), cache, held[:i + 1])
            try:
                self.kmem_cache_free_bulk(cache, len(held), held)
                return
            except (DoubleFreeError, BadAddressError):
                continue                # (the batch refused: nothing freed)
            except SlabDebugError as e:
                warnings.warn(f"kmem_cache_destroy({cache.name}, force=True): {e}; the "
                              f"objects slab_debug refused are freed without its checks "
                              f"(see slab_reports())", RuntimeWarning, stacklevel=4)
                unchecked = bound(ops.free_bulk_unchecked, self._st, True)
        raise CacheLeakError(f"kmem_cache_destroy {cache.name}: other threads kept freeing its "
                             f"objects as it tried to free them")

    def _bulk_done(self: "SlabAllocator", cache: KmemCache, got: int, nr: int, gfp: int,
                   fn: str) -> int:
        if got == checks.E_ARRAY_PLACE:
            self._refuse_array(fn, None)
        if nr:          # (a count, not an address: no cache for the single free of a ctor's)
            self._after_alloc(cache if got <= 0 else None, got, gfp, -1, cid=cache._id)
        return max(got, 0)

    @cache_op
    def kmem_cache_free_bulk(self: "SlabAllocator", cache: KmemCache, nr: int,
                             objs: np.ndarray, cpu: int | None = None) -> None:
        """Free ``objs[:nr]`` of ``cache`` through detached freelists (or the sheaves).

        Every address is checked as a single free would be; on a bad one nothing is freed
        and the error names the element. As in the kernel, ``objs[:nr]`` is reordered. On a
        slab_debug cache a failed debug check refuses only that object's detached freelist
        (it stays allocated, as the kernel's "Object at .. not freed"), the others are
        freed, and then ``SlabDebugError`` names the first refused object (its ``objects``:
        every object of the batch left allocated).

        Parameters
        ----------
        cache : KmemCache
        nr : int
        objs : numpy.ndarray
            int64[n], ``n >= nr``, 1-D, C-contiguous and writable.
        cpu : int, optional
            The simulated CPU (default: the calling thread's).
        """
        if type(cache) is not KmemCache or cache._sa is not self:
            self._own(cache, "kmem_cache_free_bulk")
        cpu = self._tls.cpu if cpu is None else self._check_cpu(cpu)
        nr = self._array(objs, nr, "kmem_cache_free_bulk")
        err = self._k_free_bulk(cache._id, cpu, nr, objs)
        if err:
            self._batch_error(err, f"kmem_cache_free_bulk({cache.name})", nr, objs, cache)

    def kfree_bulk(self: "SlabAllocator", nr: int, objs: np.ndarray,
                   cpu: int | None = None) -> None:
        """``kfree`` of ``objs[:nr]``, objects of any caches or large kmallocs, in batches.

        ``objs``: int64[n], ``n >= nr``, 1-D, C-contiguous and writable, as
        :meth:`kmem_cache_free_bulk`'s."""
        cpu = self._cpu_of(cpu)
        nr = self._array(objs, nr, "kfree_bulk")
        err = self._k_free_bulk(NIL, cpu, nr, objs)
        if err:
            self._batch_error(err, "kfree_bulk", nr, objs, None)

    # ---- the seed's array API ---------------------------------------------------------------
    @cache_op
    def kmem_cache_alloc_array(self: "SlabAllocator", cache: KmemCache, gfp: int, nr: int,
                               out: np.ndarray, flags: int = 0,
                               cpu: int | None = None) -> int:
        """Allocate up to ``nr`` objects into ``out`` with the RFC's modes.

        ``flags`` combines SLAB_ARRAY_ALLOC_PARTIAL (whole partial slabs, CPU then node),
        _NEW (whole fresh slabs, no free list built), _LOCAL (objects the CPU holds) and
        _FULL_COUNT (top up one by one); 0 means all, tried in that order. Returns the count
        allocated, which may be short of ``nr`` without FULL_COUNT. ``out``: int64[n],
        ``n >= nr``, 1-D, C-contiguous and writable, as :meth:`kmem_cache_alloc_bulk`'s.
        """
        if type(cache) is not KmemCache or cache._sa is not self:
            self._own(cache, "kmem_cache_alloc_array")
        cpu = self._cpu_of(cpu)
        gfp = check_gfp(gfp, "kmem_cache_alloc_array")
        if type(flags := as_int(flags)) is not int or flags & ~SLAB_ARRAY_ALLOC_ALL:
            raise InvalidArgumentError(f"kmem_cache_alloc_array: unknown flags {flags!r}")
        nr = self._array(out, nr, "kmem_cache_alloc_array")
        if cache.ctor is not None:
            with self._ctor_lock:
                return self._bulk_ctor(cache, self._k_alloc_array(
                    cache._id, cpu, gfp, flags, nr, out), nr, gfp | _NOWARN,
                    out, "kmem_cache_alloc_array")
        got = self._k_alloc_array(cache._id, cpu, gfp, flags, nr, out)
        if got <= 0:                            # a short count is normal here: no warning
            return self._bulk_done(cache, got, nr, gfp | _NOWARN, "kmem_cache_alloc_array")
        return got

    @cache_op
    def kmem_cache_free_array(self: "SlabAllocator", cache: KmemCache, nr: int,
                              objs: np.ndarray, cpu: int | None = None) -> None:
        """Free an array of objects (the RFC's counterpart; detached freelists as bulk).

        ``objs``: int64[n], ``n >= nr``, 1-D, C-contiguous and writable, as
        :meth:`kmem_cache_free_bulk`'s (reordered as there)."""
        self.kmem_cache_free_bulk(cache, nr, objs, cpu)
