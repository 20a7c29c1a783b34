"""The facade's defragmentation by eviction (Christoph Lameter's slab defragmentation, 2007-2009).

The owners of a sparse slab's objects are asked to free them, so the slab empties.

Mixed into :class:`SlabAllocator` (``EvictAPI``). ``get(objs) -> private`` pins the objects of
one slab (int64[n] addresses) for the owner; ``kick(objs, private)`` asks the owner to free
them (with ``kmem_cache_free``); an object it does not free keeps its slab (a refusal).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..engine import ops
from ..engine.layout import PG_SLAB
from ..errors import InvalidArgumentError, WrongCacheError, WrongTypeError
from .defragapi import _check_ratio
from .args import cache_op

if TYPE_CHECKING:
    from .allocator import SlabAllocator
    from .cache import KmemCache

#: ``get(objs) -> private``: pin the objects of one sparse slab (int64[n] addresses).
GetFn = Callable[[np.ndarray], Any]
#: ``kick(objs, private)``: ask their owners to free them (``kmem_cache_free``).
KickFn = Callable[[np.ndarray, Any], Any]

#: Slabs used at most this percentage are evicted by ``kmem_cache_defrag`` unless told
#: otherwise (the 2007 series' ``defrag_ratio`` default).
DEFRAG_RATIO = 30


class EvictAPI:
    """Methods of :class:`SlabAllocator` for defragmentation by eviction."""

    def kmem_cache_setup_defrag(self: "SlabAllocator", cache: "KmemCache", get: GetFn,
                                kick: KickFn) -> None:
        """Make the objects of ``cache`` evictable (Lameter's ``kmem_cache_setup_defrag``).

        ``kmem_cache_shrink`` then evicts every partial slab it can, and ``kmem_cache_defrag`` the
        slabs used at most a ratio.

        Parameters
        ----------
        cache : KmemCache
        get : callable
            ``get(objs) -> private``: called with the int64[n] addresses of the live objects
            of one sparse slab; the owner pins them (they stay valid until ``kick``) and
            returns anything, passed on to ``kick``.
        kick : callable
            ``kick(objs, private)``: the owner frees the objects it can with
            ``kmem_cache_free``; one it keeps makes the slab stay (a refusal).
        """
        self._own(cache, "kmem_cache_setup_defrag")
        if not callable(get) or not callable(kick):
            raise WrongTypeError("kmem_cache_setup_defrag: get and kick must be callable")
        self._per_cache("_evict_callbacks")[cache._id] = (self._caches.token(cache._id), get,
                                                          kick)

    def defrag_stats(self: "SlabAllocator", cache: "KmemCache") -> dict[str, int]:
        """Eviction counters of ``cache``: ``slabs_freed``, ``objects_kicked`` and ``refusals``.

        ``objects_kicked``: objects the owners freed when kicked; ``refusals``: slabs kept because
        an object was not freed."""
        cid = self._own(cache, "defrag_stats")
        _, freed, kicked, refused = self._per_cache("_evict_counts").get(cid, (0, 0, 0, 0))
        return {"slabs_freed": freed, "objects_kicked": kicked, "refusals": refused}

    @cache_op
    def kmem_cache_defrag(self: "SlabAllocator", cache: "KmemCache | None" = None,
                          ratio: int | None = None) -> int:
        """Evict the objects of the partial slabs used at most ``ratio`` percent; the slabs freed.

        ``ratio`` defaults to 30. The slabs of ``cache``, or of every cache with
        ``kmem_cache_setup_defrag`` callbacks if ``cache`` is None (Lameter's
        ``kmem_cache_defrag``)."""
        r = _check_ratio(ratio, "kmem_cache_defrag")
        r = DEFRAG_RATIO if r < 0 else r
        table = self._per_cache("_evict_callbacks")
        if cache is None:       # each cache listed now, unless a callback destroyed it
            listed = {cid: v[0] for cid, v in table.items()}    # (its slot: its token)
            return sum(self._evict(cid, r) for cid, token in listed.items()
                       if self._per_cache("_evict_callbacks").get(cid, (None,))[0] is token)
        cid = self._own(cache, "kmem_cache_defrag")
        if cid not in table:
            raise InvalidArgumentError(f"kmem_cache_defrag: {cache.name} has no get/kick "
                                       f"callbacks "
                            f"(kmem_cache_setup_defrag)")
        return self._evict(cid, r)

    def _still_there(self: "SlabAllocator", cache: "KmemCache", cid: int, fn: str) -> None:
        """Raise ``WrongCacheError`` if the owner's ``fn`` callback destroyed ``cache``.

        Its slot ``cid`` is then empty or another cache's: the eviction stops there."""
        if self._caches.get(cid) is not cache:
            raise WrongCacheError(f"kmem_cache_defrag: the {fn} callback of cache "
                                  f"{cache.name!r} destroyed the cache; its eviction stopped")

    def _evict(self: "SlabAllocator", cid: int, ratio: int) -> int:
        """Evict the partial slabs of cache ``cid`` used at most ``ratio`` percent; slabs freed.

        Flush the cache, ask the owners of each such slab to free its objects, flush again so that
        the emptied slabs are freed.

        A ``kick`` may evict again (``kmem_cache_shrink``, ``kmem_cache_defrag``, of this
        cache or another): every level lists the slabs it tried, and the outermost counts
        each slab once when all are done, freed or kept as it is then (each level counted
        its own list, the slabs nested calls freed too: ``slabs_freed`` grew as n(n+1)/2;
        and a slab a nested call kept stays counted as kept if an outer one frees it)."""
        depth = self.__dict__.get("_evict_depth", 0)
        if not depth:
            self._evict_tried: dict[tuple[int, int], set[int]] = {}
            self._evict_tokens: dict[int, Any] = {}     # each cache's, as it was tried
            self._evict_moved: dict[int, int] = {}      # old -> new of what a kick compacted
        self._evict_depth = depth + 1
        try:
            return self._evict_level(cid, ratio)
        finally:                        # (a callback that raised stops it: what it had
            self._evict_depth = depth   # tried is counted all the same)
            if not depth:
                self._count_evictions(self._evict_tried)

    def _evict_level(self: "SlabAllocator", cid: int, ratio: int) -> int:
        """:meth:`_evict` at one level of nesting: the slabs it freed."""
        _, get, kick = self._per_cache("_evict_callbacks")[cid]
        cache = self._caches[cid]
        cpu = self._cpu()
        ops.kmem_cache_shrink(self._st, cid, cpu)
        sparse = [(int(a) >> 12, int(used)) for node in range(self.nr_nodes)
                  for a, used, objs in cache.partial_list(node).tolist()
                  if 0 < used <= ratio * objs // 100]
        if not sparse:
            return 0
        live = cache.live_addresses()
        st = self.state
        frames = st.heads(live)             # each object's slab: its head frame (an object in
        # a later page of an order >= 1 slab made the slab look held in a prefilled sheaf:
        # never evicted); objects held in prefilled sheaves: not evictable
        tried = []
        sparse = [slab for slab, used in sparse if np.count_nonzero(frames == slab) == used
                  and slab not in self._building]   # (its constructor's call: its objects are
        # being allocated, no owner's yet; numslab constructs listed slabs, the kernel unlisted)
        try:
            for slab in sparse:
                # the slab's objects as they are now, as the kernel reads them under the
                # slab's lock: an earlier kick may have freed some (or the whole slab) or
                # allocated more
                objs = live[:0]
                if st.pg_flags[slab] & PG_SLAB and st.sl_cache[slab] == cid:
                    objs = cache._live_in(np.array([slab], np.int64))
                tried.append(slab)
                self._evict_tried.setdefault((cid, slab), set()).update(objs.tolist())
                self._evict_tokens[cid] = self._caches.token(cid)
                if len(objs):
                    private = get(objs.copy())
                    self._still_there(cache, cid, "get")
                    kick(objs.copy(), private)
                    self._still_there(cache, cid, "kick")
        finally:            # the slabs emptied so far are freed, a callback raising or not
            if self._caches.get(cid) is cache:      # (unless one destroyed the cache)
                ops.kmem_cache_shrink(self._st, cid, cpu)
        return sum(not (st.sl_cache[slab] == cid and st.pg_flags[slab] & PG_SLAB)
                   for slab in tried)

    def _count_evictions(self: "SlabAllocator", tried: dict[tuple[int, int], set[int]]
                         ) -> None:
        """Add the slabs an eviction tried to each cache's ``defrag_stats``.

        The slabs by cache and head frame, with the objects it asked to be freed: freed or kept (a
        refusal), and the objects kicked (those no longer live, where a kick's compaction moved
        them or not: a moved object is not kicked)."""
        st = self.state
        counts = self._per_cache("_evict_counts")
        moved = self._evict_moved

        def now(a: int) -> int:
            """Where the object at ``a`` lives now, following the moves.

            A move's target may be moved again; bounded, as an address may come round again."""
            for _ in range(len(moved)):
                if a not in moved:
                    break
                a = moved[a]
            return a

        for c in {c for c, _ in tried}:
            cache = self._caches.get(c)
            if cache is None or self._caches.token(c) is not self._evict_tokens.get(c):
                continue                        # destroyed by a callback (a new one there)
            live_after = cache.live_addresses()
            freed = kicked = refused = 0
            for (cid, slab), objs in tried.items():
                if cid != c:
                    continue
                if st.sl_cache[slab] == c and st.pg_flags[slab] & PG_SLAB:       # kept
                    kicked += len(objs) - int(np.isin([now(a) for a in objs],
                                                      live_after).sum())
                    refused += 1
                else:                   # (its frame may hold a new slab's objects by now)
                    there = [now(a) for a in objs if a in moved]
                    kicked += len(objs) - int(np.isin(there, live_after).sum())
                    freed += 1
            _, f0, k0, r0 = counts.get(c, (None, 0, 0, 0))
            counts[c] = (self._caches.token(c), f0 + freed, k0 + kicked, r0 + refused)
