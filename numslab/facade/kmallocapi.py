"""The kmalloc API beyond kmalloc and kfree, on ``SlabAllocator``: krealloc, arrays, kfree_rcu.

The array forms (``kmalloc_array``, ``kcalloc``, ``krealloc_array``), ``krealloc`` (in place when
the object's size class allows, as ``__do_krealloc``), ``kmalloc_size_roundup`` and ``kfree_rcu``
with the grace period the caller ends (``synchronize_rcu``, ``rcu_barrier``,
``kvfree_rcu_barrier``): through the CPU's ``rcu_free`` sheaf when the object's cache has sheaves
(``engine/rcusheaves.py``), else on a list of addresses freed at the end of the grace period."""
from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from ..drivers.calls import bound
from ..engine import checks
from ..engine.checks import E_DOUBLE_FREE
from ..engine.layout import (CA_DEBUG, CA_OBJECT_SIZE, CA_ORIG, C_RCU_FREE, G_ERR0, G_ERR1,
                             G_NRCU, G_RCU_HEAD, NIL, SH_NEXT, SH_OBJECTS,
                             SH_SIZE, ZERO_SIZE_PTR)
from ..engine.ops import kfree_rcu_list, kfree_rcu_release
from ..engine.rcusheaves import flush_rcu_sheaves, kfree_rcu_sheaf, rcu_run_callbacks
from ..errors import (BadAddressError, DoubleFreeError, InvalidSizeError, SlabCorruptionError,
                      SlabError)
from ..flags import GFP_KERNEL, SLAB_RED_ZONE, __GFP_ZERO
from ..geometry import KMALLOC_MAX_SIZE, PAGE_SIZE, kmalloc_size_roundup
from .args import as_int, check_gfp, size_error

if TYPE_CHECKING:
    from .allocator import SlabAllocator

_ZERO = __GFP_ZERO

#: Serialises the list of ``kfree_rcu`` objects across Python threads, which interleave
#: between the facade's statements: a ``kfree_rcu``'s checks and queueing, and a grace
#: period's taking of the list and its frees (a ``kfree_rcu`` appended to a list that
#: ``synchronize_rcu`` had taken away was never freed). One for every allocator: it is held
#: briefly, and no unit waits on it.
_RCU_LOCK = threading.RLock()
#: Why a double free's object is not free: it waits for its grace period on the
#: ``kfree_rcu`` list, or in an RCU sheaf (a CPU's ``rcu_free`` one or one handed to
#: ``call_rcu``).
RCU_LISTED = "the object is waiting for an RCU grace period (kfree_rcu)"
RCU_SHEAVED = "the object is waiting for an RCU grace period (kfree_rcu, in an rcu_free sheaf)"
#: ... or in a CPU's ``rcu_free`` sheaf not yet full, handed to no grace period (a new user's
#: trial read the text above after ``synchronize_rcu()`` as the grace period not ending).
RCU_ON_CPU = ("the object is waiting for an RCU grace period (kfree_rcu), in CPU {cpu}'s "
              "rcu_free sheaf: the sheaf's begins once it is full, or at kvfree_rcu_barrier() "
              "or kmem_cache_shrink(), not at synchronize_rcu()")
#: ``SIZE_MAX``: an array's byte count past it is ``check_mul_overflow``'s overflow.
SIZE_MAX = (1 << 64) - 1


def _size_t(value: object, what: str, fn: str) -> int:
    """``value`` as a ``size_t`` argument of ``fn``: an int or NumPy integer (not a bool).

    In 0..SIZE_MAX, else InvalidSizeError naming it ``what``."""
    value = as_int(value)
    if type(value) is not int or not 0 <= value <= SIZE_MAX:
        raise size_error(value)(f"{fn}: {what} {value!r} is not a size (an int in "
                               f"0..2**64-1)")
    return value


def size_roundup(size: object) -> int:
    """``kmalloc_size_roundup`` of a checked ``size_t``.

    ``numslab.kmalloc_size_roundup``, and the allocator's method: it reads no allocator."""
    return kmalloc_size_roundup(_size_t(size, "size", "kmalloc_size_roundup"))


def array_bytes(n: object, size: object, fn: str) -> int:
    """``n * size`` for ``fn`` (``kmalloc_array``, ``kcalloc``, ``krealloc_array``), both checked.

    Both checked as ``size_t``. Where the kernel's ``check_mul_overflow`` overflows, the call
    returns NULL; numslab refuses it, as it refuses any size past KMALLOC_MAX_SIZE
    (InvalidSizeError): an impossible size is a bug to report, not a full memory."""
    n, size = _size_t(n, "element count", fn), _size_t(size, "element size", fn)
    nbytes = n * size
    what = f"{n} element{'s' * (n != 1)} of {size} byte{'s' * (size != 1)}"
    if nbytes > SIZE_MAX:
        raise InvalidSizeError(f"{fn}: {what} overflow size_t (the kernel's "
                               "check_mul_overflow returns NULL)")
    if nbytes > KMALLOC_MAX_SIZE:
        raise InvalidSizeError(f"{fn}: {what} ({nbytes} bytes) is not in "
                               f"0..{KMALLOC_MAX_SIZE}")
    return nbytes


class KmallocAPI:
    """``krealloc`` and RCU-deferred frees, mixed into ``SlabAllocator``."""

    #: ``address: cpu`` of each ``kfree_rcu`` waiting for its grace period, in call order
    #: (an instance dict once there is one: a membership test per ``kfree_rcu`` and per
    #: refused free, where a list made a run of n calls cost n**2 / 2 comparisons). The
    #: engine refuses a free of one (``checks.rcu_list_mark``); the dict only names the
    #: reason in the error (``raising._raise``).
    _rcu_pending: "Mapping[int, int | None]" = MappingProxyType({})

    def kmalloc_array(self: "SlabAllocator", n: int, size: int, gfp: int = GFP_KERNEL,
                      cpu: int | None = None, node: int = -1) -> int:
        """``kmalloc_array``: ``kmalloc`` of ``n`` elements of ``size`` bytes.

        ``kmalloc_array_node`` with ``node``. Returns the address, ``ZERO_SIZE_PTR`` when the
        product is 0, or 0 when memory is exhausted. Raises InvalidSizeError when the product
        overflows ``size_t`` (the kernel returns NULL) or exceeds KMALLOC_MAX_SIZE."""
        return self._kmalloc_array(n, size, gfp, cpu, node, "kmalloc_array")

    def kcalloc(self: "SlabAllocator", n: int, size: int, gfp: int = GFP_KERNEL,
                cpu: int | None = None, node: int = -1) -> int:
        """``kcalloc`` (``kcalloc_node`` with ``node``): ``kmalloc_array`` with ``__GFP_ZERO``."""
        return self._kmalloc_array(n, size, check_gfp(gfp, "kcalloc") | _ZERO, cpu, node,
                                   "kcalloc")

    def _kmalloc_array(self: "SlabAllocator", n: int, size: int, gfp: int, cpu: int | None,
                       node: int, fn: str) -> int:
        """:meth:`kmalloc` of ``n * size`` bytes, every argument checked first, naming ``fn``.

        kmalloc's own checks would name kmalloc."""
        nbytes = array_bytes(n, size, fn)
        gfp = check_gfp(gfp, fn)
        cpu = None if cpu is None else self._check_cpu(cpu)
        node = self._check_node(node)
        return self.kmalloc(nbytes, gfp, cpu, node)

    def krealloc_array(self: "SlabAllocator", addr: int, new_n: int, new_size: int,
                       gfp: int = GFP_KERNEL, cpu: int | None = None) -> int:
        """``krealloc_array``: :meth:`krealloc` of ``addr`` to ``new_n * new_size`` bytes.

        ``new_n`` elements of ``new_size`` bytes; the product is checked as by kmalloc_array."""
        return self._krealloc(addr, array_bytes(new_n, new_size, "krealloc_array"), gfp, cpu,
                              "krealloc_array")

    def kmalloc_size_roundup(self: "SlabAllocator", size: int) -> int:
        """``kmalloc_size_roundup``: the usable size a ``kmalloc(size)`` would give.

        Its kmalloc cache's object size, or whole pages above 8 KiB; ``size`` itself for 0 and past
        KMALLOC_MAX_SIZE; so a caller can ask for it all at once. Every allocator gives the same
        (``numslab.geometry.kmalloc_size_roundup``)."""
        return size_roundup(size)

    def krealloc(self: "SlabAllocator", addr: int, new_size: int, gfp: int = GFP_KERNEL,
                 cpu: int | None = None) -> int:
        """``krealloc``: ``addr`` resized to ``new_size`` bytes; the address, or 0 without memory.

        In place while the size fits what ``ksize`` reports (with ``__GFP_ZERO`` the bytes from
        ``new_size`` up to it are zeroed on a shrink, and a grow keeps them zero); else a new
        allocation with the contents copied (up to the smaller size) and the old one freed.
        ``addr`` NULL: ``kmalloc``; ``new_size`` 0: ``kfree`` and ``ZERO_SIZE_PTR``. Returns the
        address, or 0 (the old object untouched) when memory is exhausted."""
        return self._krealloc(addr, new_size, gfp, cpu, "krealloc")

    def _krealloc(self: "SlabAllocator", addr: int, new_size: int, gfp: int,
                  cpu: int | None, fn: str) -> int:
        """:meth:`krealloc`, its errors naming ``fn``."""
        new_size = as_int(new_size)             # (np.int64(10) was refused as out of range)
        if type(new_size) is not int or not 0 <= new_size <= KMALLOC_MAX_SIZE:
            raise size_error(new_size)(f"{fn}: size {new_size!r} is not in "
                                   f"0..{KMALLOC_MAX_SIZE}")
        gfp = check_gfp(gfp, fn)                # checked before anything changes: an in-place
        if cpu is not None:                     # resize took any gfp and cpu, and zeroed the
            cpu = self._check_cpu(cpu)          # object's tail for gfp=-1
        addr = self._as_addr(addr, fn)
        where = f"{fn}: {addr:#x}"
        self._rcu_refuse(addr, where)
        self._rcu_refuse_sheaved(addr, where)
        if new_size == 0:
            if not 0 <= addr <= ZERO_SIZE_PTR:
                self._kfree_for(addr, cpu, fn)
            return ZERO_SIZE_PTR
        if 0 <= addr <= ZERO_SIZE_PTR:          # ZERO_OR_NULL_PTR: __do_krealloc allocates
            return self.kmalloc(new_size, gfp, cpu)
        ks = self._ksize(addr, fn)              # raises on a bad address, nothing changed
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
        try:
            self._kfree_for(addr, cpu, fn)
        except SlabError:                       # a slab_debug check refused it: no new one
            self.kfree(new, cpu)
            raise
        return new

    def _kfree_for(self: "SlabAllocator", addr: int, cpu: int | None, fn: str) -> None:
        """``kfree(addr)`` for ``fn``, whose name its errors give.

        krealloc(p, 0) of a bad or freed address raised "kfree: ..."."""
        err = self._k_kfree(self._cpu() if cpu is None else cpu, addr)
        if err:
            self._raise(err, fn, addr, None)

    def ksize(self: "SlabAllocator", addr: int) -> int:
        """Usable size of the allocation at ``addr``, in bytes.

        Its cache's ``slab_ksize`` (the stride, padding included, unless slab_debug or RCU keeps
        it), the whole block of a large kmalloc, 0 for NULL, ZERO_SIZE_PTR and the addresses
        between them. The caller may use all of it, so a kmalloc cache with slab_debug U stops
        red-zoning past the size asked (``skip_orig_size_check``: the object size)."""
        if isinstance(addr, (int, np.integer)) and not isinstance(addr, bool) and \
                0 <= addr <= ZERO_SIZE_PTR:     # ZERO_OR_NULL_PTR
            return 0
        size = self._ksize(addr)
        addr = int(addr)
        cid = self._cache_of(addr)
        if self._orig_size(cid, addr) and self._locate(addr)[0] != checks.E_ALLOCATORS:
            self._set_orig_size(cid, addr, size)    # (not the allocator's own: its red zone)
        cache = self._caches.get(cid)          # (another thread may destroy it meanwhile)
        return size if cache is None else cache.slab_ksize

    def _own_block(self: "SlabAllocator", block: int) -> bool:
        """Whether the large block at ``block`` is the allocator's own (an oversize sheaf).

        Marked as a kmalloc object of its own is: the live bit of its second 8-byte granule."""
        mark = block + 8
        return bool(int(self.state.live[mark >> 9]) >> ((mark >> 3) & 63) & 1)

    def _ksize(self: "SlabAllocator", addr: int, fn: str = "ksize") -> int:
        """``ksize`` without touching the object (checks naming the call ``fn``).

        A sheaf only for ``ksize`` (``krealloc``, ``kfree_rcu``: refused as their ``kfree``)."""
        addr = self._as_addr(addr, fn)
        if 0 <= addr <= ZERO_SIZE_PTR:          # ZERO_OR_NULL_PTR
            return 0
        for _ in range(3):
            err, slab = self._locate(addr)
            if err != checks.E_LARGE or not (fn == "ksize" or not self._own_block(addr)):
                break
            order = int(self.state.pg_order[addr >> 12])
            if order >= 0:
                return PAGE_SIZE << order
            # freed by another thread's kfree since the engine located it (a freed block's
            # order is -1): located again, it is refused as what it is now
        if err == checks.E_LARGE:               # (krealloc returned it resized in place)
            err = checks.E_ALLOCATORS
        if err == checks.E_ALLOCATORS and fn == "ksize":
            return self._slab_owner(self._slab_head(addr), f"{fn}: {addr:#x}").object_size
        if err == checks.E_DOUBLE_FREE:
            owner = self._caches.get(int(self.state.sl_cache[self._slab_head(addr)]))
            if owner is None:               # a large kmalloc waiting on the kfree_rcu list
                raise BadAddressError(f"{fn}: {addr:#x} is waiting for an RCU grace period "
                                      f"(kfree_rcu), not an allocation")
            if self._rcu_note(addr):        # not free: its grace period has not ended
                raise BadAddressError(f"{fn}: {addr:#x} is an object of {owner.name} waiting "
                                      f"for an RCU grace period (kfree_rcu), not an "
                                      f"allocation")
            raise BadAddressError(f"{fn}: {addr:#x} is a free object of {owner.name}, not an "
                                  f"allocation")
        if err:
            self._raise(err, fn, addr, None)
        return self._slab_owner(slab, f"{fn}: {addr:#x}").object_size

    def _orig_size(self: "SlabAllocator", cid: int, addr: int) -> int:
        """``get_orig_size`` of a live object of cache ``cid`` whose size is stored, else 0.

        The size is stored by a kmalloc cache with slab_debug U."""
        if cid < 0 or not self.state.ca[cid, CA_ORIG]:
            return 0
        size = int(self._mem[(addr + int(self.state.ca[cid, CA_ORIG])) >> 3])
        osz = int(self.state.ca[cid, CA_OBJECT_SIZE])
        return size if 0 <= size <= osz else osz    # a stray write: never past the object

    def _set_orig_size(self: "SlabAllocator", cid: int, addr: int, size: int) -> None:
        """``set_orig_size`` (an ``unsigned long`` after the tracks)."""
        self._mem[(addr + int(self.state.ca[cid, CA_ORIG])) >> 3] = size

    def kfree_rcu(self: "SlabAllocator", addr: int, cpu: int | None = None) -> None:
        """Free ``addr`` after the current RCU grace period (``kvfree_call_rcu``), checked now.

        A bad address raises at once, nothing changed. A slab object of a cache with sheaves whose
        slab is on ``cpu``'s node goes into the CPU's ``rcu_free`` sheaf (``kfree_rcu_sheaf``): no
        longer the caller's, not handed out again before its sheaf's grace period ends, and a full
        sheaf then goes to the barn (or, past its limit, to the slabs); a part-full one waits on
        the CPU until ``kmem_cache_shrink``, ``kvfree_rcu_barrier`` or the cache's destroy hands it
        over. Any other object waits on a list until ``synchronize_rcu`` or ``rcu_barrier`` frees
        it. Until then a free of it (``kfree``, ``kmem_cache_free``, the bulk frees, ``krealloc``,
        ``kfree_rcu``, ``numslab.jit``'s) raises ``DoubleFreeError``: the grace period's free would
        free whatever was allocated there meanwhile."""
        with _RCU_LOCK:
            addr = self._as_addr(addr, "kfree_rcu")
            if 0 <= addr <= ZERO_SIZE_PTR:      # ZERO_OR_NULL_PTR, as kfree takes it
                if cpu is not None:             # checked as for any address
                    self._check_cpu(cpu)
                return
            if addr in self._rcu_pending or self._locate(addr)[0] == E_DOUBLE_FREE:
                self._kfree_rcu_double(addr)
            try:
                self._ksize(addr, "kfree_rcu")      # the checks of kfree, nothing changed yet
            except BadAddressError:
                # another thread's kfree of it since the check above (frees take no lock:
                # the C gate's neither): a double free, as that check would have said
                if self._locate(addr)[0] == E_DOUBLE_FREE:
                    self._kfree_rcu_double(addr)
                raise
            if kfree_rcu_sheaf(self._st, self._cpu() if cpu is None else self._check_cpu(cpu),
                               addr):           # (checked again inside: 0 if freed since)
                return
            self._rcu_list_add(addr, cpu, "kfree_rcu")

    def _kfree_rcu_double(self: "SlabAllocator", addr: int) -> None:
        """Refuse ``kfree_rcu`` of ``addr``, already free or waiting (``DoubleFreeError``)."""
        where = f"kfree_rcu: {addr:#x}{self._page_cache(addr)}"
        if addr in self._rcu_pending:
            raise DoubleFreeError(f"{where} is already waiting for a grace period (double free)")
        self._rcu_refuse_sheaved(addr, where)
        raise DoubleFreeError(f"{where}: double free, the object is already free")

    def _rcu_list_add(self: "SlabAllocator", addr: int, cpu: int | None, fn: str) -> None:
        """Put a live object on the list of ``kfree_rcu`` frees, out of every free's reach.

        The ordinary ``kvfree_call_rcu`` path. Checked and marked in one engine call
        (``ops.kfree_rcu_list``: another thread's free between the facade's checks and the mark was
        accepted, and the list then freed the object again), so that the engine calls any free of
        it, numslab.jit's too, a double free (the grace period's end lifts the mark as it frees it:
        ``ops.kfree_rcu_release``). Raises as ``kfree`` would, nothing changed, if it is no longer
        a live object."""
        err = kfree_rcu_list(self._st, addr)
        if err:
            self._raise(err, fn, addr, None)
        self.__dict__.setdefault("_rcu_pending", {})[addr] = cpu

    def _rcu_listed(self: "SlabAllocator") -> np.ndarray:
        """The addresses on the ``kfree_rcu`` list, int64[n], for the engine's checks.

        Read under the list's lock: another thread's ``kfree_rcu`` changed its size mid-read."""
        with _RCU_LOCK:
            pending = self._rcu_pending
            return np.fromiter(pending, np.int64, len(pending))

    def _rcu_listed_objects(self: "SlabAllocator", cid: int) -> int:
        """How many objects of cache ``cid`` wait on the ``kfree_rcu`` list.

        They are still allocated in the state (``live_objects`` counts them) until their grace
        period ends. Those in ``rcu_free`` sheaves are counted free already."""
        cache = self.state.sl_cache
        with _RCU_LOCK:                 # (a RuntimeError: the dict changed size mid-read)
            return sum(int(cache[self._slab_head(a)]) == cid for a in self._rcu_pending)

    def _rcu_refuse(self: "SlabAllocator", addr: int, where: str) -> None:
        """Raise ``DoubleFreeError`` if ``addr`` waits on the ``kfree_rcu`` list.

        ``krealloc`` asks before it allocates; the frees once the engine refused them, in
        ``_raise``. ``where`` names the call and the address (and, for ``_raise``, the cache)."""
        if addr in self._rcu_pending:
            raise DoubleFreeError(f"{where}: double free, {RCU_LISTED}")

    def _rcu_note(self: "SlabAllocator", addr: int) -> str | None:
        """Why an object the engine found free at ``addr`` is not; None if it is.

        It waits for an RCU grace period on the ``kfree_rcu`` list or in an RCU sheaf (a double
        free's text, from Python and from ``numslab.jit``)."""
        if addr in self._rcu_pending:
            return RCU_LISTED
        if self._g[G_RCU_HEAD] or self.state.cpu[:, :, C_RCU_FREE].any():
            return self._rcu_sheaf_objects().get(addr)
        return None

    def _rcu_sheaf_objects(self: "SlabAllocator") -> dict[int, str]:
        """The objects in the RCU sheaves, each with why it is not free.

        The CPUs' ``rcu_free`` sheaves (:data:`RCU_ON_CPU`) and the sheaves waiting for their
        grace period (:data:`RCU_SHEAVED`)."""
        words = self._mem
        heads = self.state.cpu[:, :, C_RCU_FREE]
        sheaves = [(s, RCU_ON_CPU.format(cpu=cpu)) for cpu, s in
                   zip(np.nonzero(heads)[1].tolist(), heads[heads != 0].tolist())]
        s = int(self._g[G_RCU_HEAD])
        for _ in range(int(self._g[G_NRCU])):  # (a link outside the shadow half, as
            if not self.memory.size < s < len(words) * 8 - 8 * SH_OBJECTS or s & 7:  # _rcu_next)
                break
            sheaves.append((s, RCU_SHEAVED))
            s = int(words[(s >> 3) + SH_NEXT])
        out: dict[int, str] = {}
        for s, why in sheaves:
            o = (s >> 3) + SH_OBJECTS
            out.update(dict.fromkeys(
                words[o:o + max(0, min(int(words[(s >> 3) + SH_SIZE]), 4096))].tolist(), why))
        return out

    def _rcu_refuse_sheaved(self: "SlabAllocator", addr: int, where: str) -> None:
        """Raise ``DoubleFreeError`` if ``addr`` waits for its grace period in an RCU sheaf.

        An object the engine finds free; ``kfree_rcu`` and ``krealloc`` would otherwise call it a
        free object. ``where`` names the call and the address."""
        why = self._rcu_sheaf_objects().get(addr) \
            if self._locate(addr)[0] == E_DOUBLE_FREE else None
        if why is not None:
            raise DoubleFreeError(f"{where}: double free, {why}")

    def synchronize_rcu(self: "SlabAllocator") -> int:
        """End the grace period: run the sheaves' RCU callbacks and free the ``kfree_rcu`` list.

        The callback of every sheaf handed to ``call_rcu`` runs (``rcu_free_sheaf``: to the barn,
        or to the slabs; oldest first), then every ``kfree_rcu`` on the list is freed. Returns how
        many objects had their grace period end (those of a CPU's part-full ``rcu_free`` sheaf wait
        on). Should a free of the list refuse an object, the others are freed all the same, then
        that error is raised, naming it."""
        with _RCU_LOCK:
            n = int(rcu_run_callbacks(self._st))
            overwritten = None
            if n < 0:                               # a waiting sheaf overwritten: reported
                n = -1 - n                          # once the list is freed too
                g = self._g
                overwritten = SlabCorruptionError(
                    f"synchronize_rcu: the sheaf at {int(g[G_ERR0]):#x} waiting for its grace "
                    f"period was overwritten (its words set wrong): "
                    f"{int(g[G_ERR1])} sheaves whose words no longer describe one were left "
                    f"alone with their objects (leaked), the others' callbacks ran")
            pending = self.__dict__.pop("_rcu_pending", {})
            failed: list[tuple[int, SlabError]] = []
            for addr, cpu in pending.items():       # mark lifted and kfree: one engine call
                err = self._k_kfree_rcu(self._cpu() if cpu is None else cpu, addr)
                if err:
                    try:
                        self._raise(err, "kfree", addr, None)
                    except SlabError as e:
                        failed.append((addr, e))
            if overwritten is not None:
                raise overwritten
            if failed:
                addr, e = failed[0]
                raise type(e)(f"synchronize_rcu: the kfree_rcu of {addr:#x}: {e}; the other "
                              f"{len(pending) - len(failed)} objects waiting were freed")
            return n + len(pending)

    def _k_kfree_rcu(self: "SlabAllocator", cpu: int, addr: int) -> int:
        """``ops.kfree_rcu_release`` on this allocator.

        Bound on first use, as the ``_k_*`` calls are; slab_debug routes it through ``_debug_call``
        as ``_k_kfree``."""
        fn = bound(kfree_rcu_release, self._st, False)
        self._k_kfree_rcu = fn                              # type: ignore[method-assign]
        return fn(cpu, addr)

    def rcu_barrier(self: "SlabAllocator") -> int:
        """Wait for every pending RCU callback (``rcu_barrier``): here as ``synchronize_rcu``.

        The CPUs' part-full ``rcu_free`` sheaves stay."""
        return self.synchronize_rcu()

    def kvfree_rcu_barrier(self: "SlabAllocator") -> int:
        """Wait for every ``kfree_rcu`` so far (``kvfree_rcu_barrier``); the objects freed.

        Every cache's ``rcu_free`` sheaves go to ``call_rcu`` (``flush_all_rcu_sheaves``), then
        ``rcu_barrier``."""
        flush_rcu_sheaves(self._st, NIL)
        return self.rcu_barrier()

    def _kvfree_rcu_barrier_on_cache(self: "SlabAllocator", cid: int) -> None:
        """What ``kmem_cache_destroy`` waits for first: then no object of the cache waits for RCU.

        7.0's ``kvfree_rcu_barrier_on_cache`` (this cache's ``rcu_free`` sheaves, then the
        barrier), 6.18's ``kvfree_rcu_barrier`` (every cache's)."""
        flush_rcu_sheaves(self._st, cid if self._gen7 else NIL)
        if self._rcu_pending or self._g[G_RCU_HEAD]:
            self.rcu_barrier()
