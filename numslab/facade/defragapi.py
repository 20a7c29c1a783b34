"""The facade's remedies against fragmentation: movable objects, and memory back to the OS.

Movable objects (``kmem_cache_setup_mobility``, ``compact``) around the units of
``engine/defrag.py``, and memory given back to the OS.

Mixed into :class:`SlabAllocator` (``DefragAPI``) and :class:`KmemCache` (``MovableCache``).
"""
from __future__ import annotations

import contextlib
import mmap
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from ..engine import ops
from ..engine.defrag import DEFRAG_USED_RATIO, compact, set_partial_order
from ..engine.layout import (CA_MOVE_FREED, CA_MOVED, CA_PARTIAL_ORDER, CA_USED_RATIO,
                             N_NR_SLABS)
from ..engine.pages import drain_all_pages, release_free_blocks
from ..errors import (ConstructorError, InvalidArgumentError, InvalidSizeError, SlabError,
                      WrongTypeError)
from .args import cache_op, is_integer, size_error

if TYPE_CHECKING:
    from .allocator import SlabAllocator
    from .cache import KmemCache

#: ``isolate(objs) -> private``: pins the objects about to move (int64[n] addresses).
IsolateFn = Callable[[np.ndarray], Any]
#: ``migrate(old, new, private)``: the objects at ``old[i]`` now live at ``new[i]``.
MigrateFn = Callable[[np.ndarray, np.ndarray, Any], Any]


PARTIAL_ORDERS = ("kernel", "sorted")      #: the orders a node partial list can keep


def check_partial_order(order: Any, fn: str) -> str:
    """``order`` if it is one of :data:`PARTIAL_ORDERS`, else ``SlabError``."""
    if not isinstance(order, str) or order not in PARTIAL_ORDERS:
        raise InvalidArgumentError(f"{fn}: partial_order {order!r} is not one of {PARTIAL_ORDERS}")
    return order


def _check_ratio(ratio: Any, fn: str) -> int:
    """``ratio`` as a percentage 0..100 (``None``: -1, the cache's own ratio)."""
    if ratio is None:
        return -1
    if not is_integer(ratio) or not 0 <= ratio <= 100:
        raise size_error(ratio)(f"{fn}: ratio {ratio!r} is not a percentage 0..100")
    return int(ratio)


def remap(addrs: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """A table of references after a compaction, in one vectorised step.

    Parameters
    ----------
    addrs : numpy.ndarray
        integers, any shape: object addresses (other values pass through unchanged).
    old, new : numpy.ndarray
        int64[n] each, as ``compact`` returns them.

    Returns
    -------
    numpy.ndarray
        The shape of ``addrs``: ``new[i]`` where ``addrs`` held ``old[i]``; uint64 when
        ``addrs`` is uint64 (its values from 2**63 up pass through unchanged), else int64.

    Raises
    ------
    WrongTypeError
        If an input is not integers (a float address was truncated before), or ``old``
        and ``new`` are not 1-D of one length.
    """
    arrays = [np.asarray(x) for x in (addrs, old, new)]
    for what, x in zip(("addrs", "old", "new"), arrays):
        if x.dtype.kind not in "iu" and x.size:
            raise WrongTypeError(f"remap: {what} must be integers, not {x.dtype}")
    keep = arrays[0].dtype if arrays[0].dtype == np.uint64 else np.dtype(np.int64)
    a, old, new = arrays[0].astype(keep), arrays[1].astype(np.int64), arrays[2].astype(np.int64)
    if old.ndim != 1 or old.shape != new.shape:
        raise WrongTypeError(f"remap: old and new must be 1-D of one length, not of shapes "
                             f"{old.shape} and {new.shape}")
    if not len(old):
        return a.copy()
    order = np.argsort(old, kind="stable")
    so = old[order].astype(keep)
    i = np.minimum(np.searchsorted(so, a), len(so) - 1)
    return np.where(so[i] == a, new[order][i].astype(keep), a)


def _run_compact(cache: "KmemCache", ratio: int, cpu: int, plan: bool
                 ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Call the ``compact`` unit; ``(old, new, fault)``, int64[n] arrays and a bool.

    With arrays as long as the objects users hold (no move can exceed them); with ``plan`` nothing
    moves and ``new`` is empty. ``fault`` when a corrupted free pointer stopped the moves (the
    pairs are those made)."""
    sa = cache._sa
    room = len(cache)
    old = np.empty(room, np.int64)
    new = np.empty(0 if plan else room, np.int64)
    got = int(compact(sa._st, cache._id, cpu, ratio, room, old.ctypes.data,
                      0 if plan else new.ctypes.data))
    fault = got < 0
    if fault:
        got = -1 - got
    if not plan and got and sa.__dict__.get("_evict_depth", 0):   # an eviction's kick moved
        sa._evict_moved.update(zip(old[:got].tolist(), new[:got].tolist()))   # them: not kicked
    return old[:got].copy(), new[:got].copy(), fault


def _building(sa: "SlabAllocator", cid: int) -> bool:
    """True if a constructor of cache ``cid`` is running on one of its new slabs.

    numslab runs constructors after the slab is listed (the kernel's, before): its objects not
    constructed yet are free objects a compaction fills, and the constructor loop then wrote over
    the moved objects; and the objects being allocated, live, moved away."""
    return any(b[4] == cid for b in sa._building.values())


def _refuse_building(sa: "SlabAllocator", cache: "KmemCache", fn: str) -> None:
    """Raise ``ConstructorError`` for a compaction of a cache its own constructor is building."""
    if _building(sa, cache._id):
        raise ConstructorError(f"{fn}({cache.name}): called by the cache's own constructor while "
                               f"it constructs a new slab, whose objects not constructed yet a "
                               f"move would fill (and then construct over), and whose objects "
                               f"being allocated it would move: nothing was done")


def _fault(sa: "SlabAllocator", old: np.ndarray, new: np.ndarray) -> None:
    """Raise the ``SlabCorruptionError`` of a compaction that met a corrupted free pointer.

    It carries the moves made as ``moved = (old, new)``."""
    try:
        sa._raise_fault()
    except SlabError as e:
        e.moved = (old, new)
        e.args = (f"{e.args[0]}; compaction stopped after {len(old)} moves (in .moved)",)
        raise


class MovableCache:
    """Methods of :class:`KmemCache` for movable objects (kept in their own module)."""

    __slots__ = ()

    @contextlib.contextmanager
    def _locked(self: "KmemCache", fn: str) -> Iterator[int]:
        """The cache's id, checked and kept under its allocator's ``slab_mutex`` (``cache_op``).

        For the cache's own methods that change it through the engine: another thread's
        ``kmem_cache_destroy`` can then neither end it nor give its slot to another cache before
        their engine call (``compact`` read the id after such a destroy, -1, and the engine
        wrote before the state's fields: a segmentation fault)."""
        sa = self._sa                   # (a destroyed cache's: refuses the mutex)
        with sa._slab_mutex:
            yield sa._own(self, fn)

    @property
    def partial_order(self: "KmemCache") -> str:
        """The order of the node partial lists: ``"kernel"`` or ``"sorted"``; settable.

        ``"kernel"``: the node partial lists keep the kernel's order (new partial slabs at the head
        or tail as the source does, sorted only by ``kmem_cache_shrink``); ``"sorted"``: they are
        kept sorted by free objects, fewest first, as slabs move. Setting it re-files the slabs
        listed now."""
        return PARTIAL_ORDERS[int(self._row[CA_PARTIAL_ORDER] != 0)]

    @partial_order.setter
    def partial_order(self: "KmemCache", order: str) -> None:
        order = check_partial_order(order, f"{self.name}.partial_order")
        with self._locked(f"{self.name}.partial_order") as cid:
            set_partial_order(self._sa._st, cid, int(order == "sorted"))

    @property
    def defrag_used_ratio(self: "KmemCache") -> int:
        """Slabs with at most this percentage of their objects in use are emptied by compaction.

        Their objects are moved (Harding's sysfs ``defrag_used_ratio``; 30 unless set; 0: none)."""
        r = int(self._row[CA_USED_RATIO])
        return DEFRAG_USED_RATIO if r == 0 else max(r, 0)

    @defrag_used_ratio.setter
    def defrag_used_ratio(self: "KmemCache", ratio: int) -> None:
        r = _check_ratio(ratio, f"{self.name}.defrag_used_ratio")
        if r < 0:
            raise InvalidSizeError(f"{self.name}.defrag_used_ratio: None is not a percentage")
        self._row[CA_USED_RATIO] = r if r > 0 else -1     # -1: 0 asked for (0 = default)

    @property
    def objects_moved(self: "KmemCache") -> int:
        """Objects moved to another slab by compaction since the cache was created."""
        return int(self._row[CA_MOVED])

    @property
    def slabs_freed_by_moving(self: "KmemCache") -> int:
        """Slabs that compaction emptied and gave back to the page allocator."""
        return int(self._row[CA_MOVE_FREED])

    def compact(self: "KmemCache", ratio: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Move the objects of sparse slabs into the fullest slabs and free the emptied ones.

        The caller remaps its references with the result; a cache given ``isolate`` and
        ``migrate`` (:meth:`SlabAllocator.kmem_cache_setup_mobility`) has them called too, as
        :meth:`SlabAllocator.kmem_cache_compact` calls them.

        Parameters
        ----------
        ratio : int, optional
            Slabs with at most this percentage of their objects in use give up their objects
            (default ``defrag_used_ratio``); ``100`` packs the cache as tightly as its slabs
            allow.

        Returns
        -------
        old, new : numpy.ndarray
            int64[n] each: the object at ``old[i]`` now lives at ``new[i]``, its bytes copied
            (every moved object once, nothing else).
        """
        r = _check_ratio(ratio, f"{self.name}.compact")
        with self._locked(f"{self.name}.compact") as cid:
            _refuse_building(self._sa, self, "compact")
            return self._sa._move_objects(cid, r)     # (the callbacks, if the cache has them)


#: Free blocks of at least this order (64 KiB) are returned to the OS after a shrink: the
#: pcp lists keep orders 0..3 for reuse, and a whole free arena merges into order-10 blocks,
#: so a handful of ``madvise`` calls covers it (README "Fighting fragmentation").
RELEASE_ORDER = 4


class DefragAPI:
    """Methods of :class:`SlabAllocator` for movable objects and giving memory back to the OS.

    Kept in their own module.

    Attributes
    ----------
    release_order : int or None
        After every ``kmem_cache_shrink``, free buddy blocks of this order and above are
        returned to the OS (``madvise(MADV_DONTNEED)``); ``None`` turns that off.
    released_bytes : int
        Bytes handed to ``madvise(MADV_DONTNEED)`` so far (a block released twice counts
        twice).
    partial_order : {"kernel", "sorted"}
        The node partial lists' order of caches created later without ``partial_order``.
    """

    _release_order: int | None = RELEASE_ORDER
    _partial_order: str = "kernel"
    released_bytes: int = 0

    @property
    def partial_order(self: "SlabAllocator") -> str:
        """The partial order of caches created later without their own."""
        return self._partial_order

    @partial_order.setter
    def partial_order(self: "SlabAllocator", order: str) -> None:
        # checked here: any value was taken, then refused by the next kmem_cache_create, and
        # written by save into a file load refuses (or failed json's TypeError)
        self._partial_order = check_partial_order(order, "SlabAllocator.partial_order")

    @property
    def release_order(self: "SlabAllocator") -> int | None:
        """Order from which free buddy blocks go back to the OS after a shrink (None: never)."""
        return self._release_order

    @release_order.setter
    def release_order(self: "SlabAllocator", order: int | None) -> None:
        # checked here: a bad value set for later failed inside a shrink, after its work
        if order is not None and (isinstance(order, bool) or not isinstance(
                order, (int, np.integer)) or not 0 <= order <= 10):
            raise size_error(order)(f"release_order {order!r} is not None or an order 0..10")
        self._release_order = None if order is None else int(order)

    def release_memory(self: "SlabAllocator", min_order: int = 0) -> int:
        """Give the free memory of the arena back to the operating system; the bytes released.

        Drain the pcp lists to the buddy lists, then ``madvise(MADV_DONTNEED)`` every free block of
        order ``min_order`` and above (its pages read as zeros when next touched, and stop counting
        in the process's resident memory)."""
        if not is_integer(min_order) or not 0 <= min_order <= 10:
            raise size_error(min_order)(f"release_memory: min_order {min_order!r} is not in "
                                        f"0..10")
        drain_all_pages(self._st)
        return self._release_free_blocks(int(min_order))

    def _release_free_blocks(self: "SlabAllocator", min_order: int) -> int:
        """``madvise(MADV_DONTNEED)`` the free buddy blocks of order ``min_order`` and above.

        Not those on pcp lists; adjacent blocks as one range. Returns the bytes released."""
        total = int(release_free_blocks(self._st, min_order, mmap.MADV_DONTNEED))
        if total < 0:                           # pragma: no cover - madvise's EINVAL
            raise OSError("release_free_blocks: madvise failed on the arena")
        self.released_bytes += total
        return total

    def kmem_cache_setup_mobility(self: "SlabAllocator", cache: "KmemCache",
                                  isolate: IsolateFn | None, migrate: MigrateFn) -> None:
        """Make the objects of ``cache`` movable (Harding's ``kmem_cache_setup_mobility``).

        Parameters
        ----------
        cache : KmemCache
        isolate : callable or None
            ``isolate(objs) -> private``, called with the int64[n] addresses about to move
            before any moves: the owner pins them (it must not free them) and returns
            anything, passed on to ``migrate``.
        migrate : callable
            ``migrate(old, new, private)`` after the moves (int64[n] each; the bytes are
            already at ``new``): the owner updates its references. A Python callable or an
            ``@njit`` function. If it raises, the moves stand and the exception carries
            them as ``moved = (old, new)``. It follows every ``isolate`` call, with empty
            arrays if nothing moved (``isolate`` itself may change what can move): the
            isolated objects not in ``old`` stayed where they were, and the owner unpins
            them. Only isolated objects move: if ``isolate`` frees other objects so that
            the compaction would move ones it was not given, nothing moves this time.

        Afterwards ``kmem_cache_shrink`` moves the objects of every partial slab it can, and
        ``kmem_cache_compact`` those of slabs used at most ``cache.defrag_used_ratio``
        percent.
        """
        self._own(cache, "kmem_cache_setup_mobility")
        if isolate is not None and not callable(isolate) or not callable(migrate):
            raise WrongTypeError("kmem_cache_setup_mobility: isolate must be callable or None "
                                 "and migrate callable")
        self._per_cache("_mobility")[cache._id] = (self._caches.token(cache._id), isolate,
                                                   migrate)

    def _per_cache(self: "SlabAllocator", name: str) -> dict[int, tuple[Any, ...]]:
        """The allocator's table ``name`` of per-cache entries ``(token, ...)`` by cache id.

        Keyed by ``CacheTable.token`` (not the cache, which holds the allocator), less the entries
        of destroyed caches (whose slot a new cache may hold)."""
        table = self.__dict__.setdefault(name, {})
        for cid, v in list(table.items()):      # (a copy: another thread may prune too)
            if self._caches.token(cid) is not v[0]:
                table.pop(cid, None)
        return table

    @cache_op
    def kmem_cache_compact(self: "SlabAllocator", cache: "KmemCache",
                           ratio: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Move the objects of slabs used at most ``ratio`` percent into fuller slabs.

        ``ratio`` defaults to the cache's ``defrag_used_ratio``. The cache's ``isolate`` and
        ``migrate`` are called if it has them (:meth:`kmem_cache_setup_mobility`). Returns ``(old,
        new)``, int64[n] each, as :meth:`KmemCache.compact`."""
        cid = self._own(cache, "kmem_cache_compact")
        r = _check_ratio(ratio, "kmem_cache_compact")
        _refuse_building(self, cache, "kmem_cache_compact")
        return self._move_objects(cid, r)

    def _move_objects(self: "SlabAllocator", cid: int, ratio: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Compaction with the cache's callbacks (none: a plain ``compact``)."""
        cache = self._caches[cid]
        cpu = self._cpu()
        _, isolate, migrate = self._per_cache("_mobility").get(cid, (None, None, None))
        private, stay = None, False
        if isolate is not None:
            planned = _run_compact(cache, ratio, cpu, True)[0]
            if not len(planned):
                return planned, planned.copy()
            private = isolate(planned.copy())
            # only isolated objects move: an isolate that freed others made new sources
            again = _run_compact(cache, ratio, cpu, True)[0]
            stay = not np.isin(again, planned).all()    # (migrate still follows)
        if stay:
            old, new, fault = np.zeros(0, np.int64), np.zeros(0, np.int64), False
        else:
            old, new, fault = _run_compact(cache, ratio, cpu, False)
        # after an isolate always (it pinned objects that may no longer move: the kernel's
        # __move calls migrate after isolate, whatever moved); else only when objects moved
        if migrate is not None and (len(old) or isolate is not None):
            try:
                migrate(old, new, private)
            except Exception as e:      # the moves stand: the owner still needs them
                try:
                    e.moved = (old, new)
                except AttributeError:
                    pass
                raise
        if fault:
            _fault(self, old, new)
        return old, new

    @cache_op
    def kmem_cache_shrink(self: "SlabAllocator", cache: "KmemCache") -> int:
        """Flush the CPU caches, free every empty slab, reorder the partial lists fullest first.

        The kernel's ``kmem_cache_shrink``: the fullest partial slabs go to the head of each node's
        list. For a cache with evictable objects (``kmem_cache_setup_defrag``), ask the owners of
        every partial slab's objects to free them; for one with movable objects
        (``kmem_cache_setup_mobility``), move the objects of every partial slab it can (ratio 100,
        as Harding's ``__kmem_cache_shrink``) and free the emptied slabs; last, free blocks of
        ``release_order`` pages and more go back to the OS (``madvise``).

        Returns the kernel's ``kmem_cache_shrink`` value (``__kmem_cache_do_shrink``'s): 1 if
        any node still has slabs of the cache afterwards (``node_nr_slabs``), else 0. The
        slabs it freed are ``cache.shrink_freed``. A slab whose free list the flush found
        corrupted is isolated, and said on the ``numslab`` logger (nothing raised)."""
        cid = self._own(cache, "kmem_cache_shrink")
        before = self._isolations()
        freed = int(ops.kmem_cache_shrink(self._st, cid, self._cpu())) + self._after_shrink(cid)
        self._log_isolated("kmem_cache_shrink", cache, before)
        self._per_cache("_shrink_freed")[cid] = (self._caches.token(cid), freed)
        return int(bool(self.state.node[cid, :, N_NR_SLABS].any()))

    def _after_shrink(self: "SlabAllocator", cid: int) -> int:
        """The end of ``kmem_cache_shrink``: eviction, compaction, release; the slabs freed.

        For a cache with ``get``/``kick`` callbacks, the eviction of every partial slab; for a
        cache with mobility, compaction of every partial slab (ratio 100) with its callbacks; then
        free blocks of ``release_order`` and above go back to the OS. Returns the slabs eviction
        and compaction freed."""
        freed = 0
        if cid in self._per_cache("_evict_callbacks"):      # every partial slab (2007)
            freed += self._evict(cid, 100)
        if cid in self._per_cache("_mobility") and not _building(self, cid):  # ratio 100, as
            # Harding's shrink (not from the cache's constructor: see _refuse_building)
            before = int(self.state.ca[cid, CA_MOVE_FREED])
            self._move_objects(cid, 100)
            freed += int(self.state.ca[cid, CA_MOVE_FREED]) - before
        if self.release_order is not None:
            self._release_free_blocks(self.release_order)
        return freed
