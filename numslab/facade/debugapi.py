"""slab_debug on ``SlabAllocator``: the option, the reports in the kernel's text, validation.

The ``slab_debug=`` option parsed as the kernel's boot parameter, the engine's reports turned into
the kernel's text, ``kmem_cache_validate``, and the Python-side part of SLAB_STORE_USER (call
sites) and SLAB_TRACE (a log line)."""
from __future__ import annotations

import logging
import sys
import weakref
from bisect import bisect_left
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..drivers import gate
from ..drivers.calls import bound
from ..engine import checks, debug, ops
from ..engine.layout import (C_FREELIST, C_MAIN, C_PARKED, C_RCU_FREE, C_SLAB, C_SPARE,
                             CA_DEBUG, CA_FP_KEY, CA_OFFSET, CA_TRACK, CA_USER_SHEAVES,
                             G_NDEBUG, G_NREPORTS, G_RCU_HEAD, G_SITE, G_TICKS, N_BARN_EMPTY,
                             N_BARN_FULL, NIL, PG_HEAD, PG_LARGE, PG_RCU, PG_RESERVED, PG_SLAB,
                             PG_TAIL, R_A, R_B, R_C, R_CACHE, R_D, R_KIND, R_MAX, R_OBJECT,
                             R_SLAB, SH_NEXT, SH_OBJECTS, SH_SIZE)
from ..engine import redzone as rz
from ..errors import (AllocatorGoneError, CacheLeakError, InvalidArgumentError,
                      LostObjectsError, SlabDebugError)
from ..geometry import KMALLOC_MAX_CACHE_SIZE, KMALLOC_SIZES, PAGE_SIZE, get_order
from ..flags import (SLAB_CONSISTENCY_CHECKS, SLAB_POISON, SLAB_RED_ZONE, SLAB_STORE_USER,
                     SLAB_TRACE, gfp_names)
from . import threads
from .args import cache_op, check_bool
from .kmallocapi import _RCU_LOCK
from .raising import free_again, held_by_no_one

if TYPE_CHECKING:
    from .allocator import SlabAllocator
    from .cache import KmemCache

log = logging.getLogger("numslab")

#: ``DEBUG_DEFAULT_FLAGS``: what ``slab_debug`` with no letters turns on (F, Z, P, U).
DEBUG_DEFAULT_FLAGS = SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER
_LETTERS = {"f": SLAB_CONSISTENCY_CHECKS, "z": SLAB_RED_ZONE, "p": SLAB_POISON,
            "u": SLAB_STORE_USER, "t": SLAB_TRACE}

#: What each byte check names (``check_bytes_and_report``'s ``what``), by report kind.
_U64 = (1 << 64) - 1
_WHAT = ("Left Redzone", "Right Redzone", "kmalloc Redzone", "Poison", "End Poison",
         "Alignment padding", "Object padding", "Padding")
#: The message of the other error reports (``object_err``/``slab_err``), by kind.
_ERRORS = {rz.K_FREEPOINTER: "Freepointer corrupt", rz.K_FREECHAIN: "Freechain corrupt",
           rz.K_FREELIST: "Freepointer corrupt", rz.K_CYCLE: "Freelist cycle detected",
           rz.K_ALREADY_FREE: "Object already free",
           rz.K_REMAINING: "Objects remaining on __kmem_cache_shutdown()"}
#: The engine units behind the facade's ``_k_*`` calls, and what each does (for T).
_K_UNITS = (("_k_alloc", ops.kmem_cache_alloc_node, False, "alloc"),
            ("_k_free", ops.kmem_cache_free, False, "free"),
            ("_k_kmalloc", ops.kmalloc, False, "alloc"), ("_k_kfree", ops.kfree, False, "kfree"),
            ("_k_kfree_rcu", ops.kfree_rcu_release, False, "kfree"),
            ("_k_alloc_bulk", ops.alloc_bulk, True, "alloc_bulk"),
            ("_k_free_bulk", ops.free_bulk, True, "free_bulk"),
            ("_k_alloc_array", ops.kmem_cache_alloc_array, True, "alloc_array"))
#: Where each batch kind's object array is among its ``_k_*`` call's arguments.
_BATCH_ARRAY = {"alloc_bulk": 4, "alloc_array": 5, "free_bulk": 3}

Blocks = list[tuple[int, list[str]]]


def parse_slab_debug(spec: str | None) -> tuple[int, Blocks]:
    """Read a ``slab_debug`` boot parameter as ``setup_slub_debug`` does.

    Parameters
    ----------
    spec : str or None
        ``None``: no debugging. ``""``: full debugging (``DEBUG_DEFAULT_FLAGS``, as a bare
        ``slab_debug``). Otherwise blocks separated by ``;`` (empty blocks are skipped, as
        ``parse_slub_debug_flags`` skips them), each ``<letters>[,<cache>...]``: letters
        ``F Z P U T`` (any case; ``-`` switches off what came before it; none at all, as in
        ``",dentry"``, means F, Z, P and U), then cache names, where a ``*`` ends a prefix
        (``kmalloc-*``). A block without a comma sets the flags of every cache not named in
        a block; one with a comma (its list, even empty, is a slab list) names caches only.

    Returns
    -------
    tuple
        The flags for every cache not named in a block, and the blocks that name caches as
        ``(flags, [names])``.

    Raises
    ------
    SlabError
        For a letter the kernel does not know or numslab does not model (``A``, ``O``).
    """
    if spec is None:
        return 0, []
    if not isinstance(spec, str):
        raise InvalidArgumentError(f"slab_debug {spec!r} is not a string")
    if not spec.strip():
        return DEBUG_DEFAULT_FLAGS, []
    global_flags, blocks = 0, []
    for block in spec.split(";"):
        if not block:                           # "Skip any completely empty blocks"
            continue
        letters, comma, names = block.partition(",")
        if block.startswith(","):
            flags = DEBUG_DEFAULT_FLAGS
        else:
            flags = 0
            for ch in letters.strip():
                if ch == "-":
                    flags = 0
                elif ch.lower() in _LETTERS:
                    flags |= _LETTERS[ch.lower()]
                else:
                    raise InvalidArgumentError(f"slab_debug option {ch!r} unknown or not modelled "
                                    f"(numslab has F, Z, P, U, T and -)")
        if comma:                               # a slab list (setup_slub_debug's test is
            blocks.append((flags, [n.strip() for n in names.split(",") if n.strip()]))
        else:                                   # on the list pointer, not its text)
            global_flags = flags
    return global_flags, blocks


def slab_debug_flags(parsed: tuple[int, Blocks], name: str, flags: int) -> int:
    """``kmem_cache_flags``: ``flags`` with the debug flags ``slab_debug`` gives cache ``name``.

    Those of the first block naming it, by exact name or ``prefix*``, else the global flags."""
    global_flags, blocks = parsed
    for block_flags, patterns in blocks:
        for pat in patterns:
            star = pat.find("*")
            if (name.startswith(pat[:star]) if star >= 0 else name == pat):
                return flags | block_flags
    return flags | global_flags


class DebugAPI:
    """slab_debug's facade and the exhaustion warning, mixed into ``SlabAllocator``."""

    # ---- exhaustion ----------------------------------------------------------------------------
    def _warn_no_memory(self: "SlabAllocator", cache: "KmemCache | None", gfp: int, node: int,
                        cpu: int | None, size: int) -> None:
        """Log what the kernel prints when an allocation finds no memory.

        A slab cache's ``slab_out_of_memory`` (a small kmalloc's too, for its kmalloc cache), or
        for a large kmalloc the page allocator's ``warn_alloc`` line."""
        cpu = self._cpu() if cpu is None else cpu
        if cache is None and 0 < size <= KMALLOC_MAX_CACHE_SIZE:     # its kmalloc class
            cache = self._caches[self._kmalloc_ids[bisect_left(KMALLOC_SIZES, size)]]
        if cache is not None:
            log.warning("%s", cache._out_of_memory(cpu, node, gfp))
        else:
            log.warning("python: page allocation failure: order:%d, mode:%#x(%s), "
                        "nodemask=(null)", get_order(size), gfp,
                        gfp_names(gfp))

    # ---- set-up ------------------------------------------------------------------------------
    def _debug_init(self: "SlabAllocator", slab_debug: str | None) -> None:
        """Parse ``slab_debug`` and reset the report bookkeeping (before any cache)."""
        self._slab_debug = parse_slab_debug(slab_debug)
        self._slab_debug_spec = slab_debug
        self._debug_on = False
        self._reports: list[str] = []
        self._last_reports: list[str] = []
        self._reports_seen = 0
        self._sites: dict[str, int] = {}       #: site text -> number (track ``addr``)
        self._site_keys: dict[tuple, int] = {}  #: (file, line) -> number, the fast lookup
        self._site_names: list[str] = []
        self._debug_user = False                #: a cache with U exists: record call sites
        self._trace_ids: set[int] = set()       #: the caches with T

    def _debug_cache_created(self: "SlabAllocator", cid: int) -> None:
        """A debug cache exists: count it, and route the calls through the Python methods.

        The C gate calls units directly, with no call site or report."""
        self._g[G_NDEBUG] += 1
        self._debug_calls()
        self._debug_flags_seen(cid)

    def _debug_flags_seen(self: "SlabAllocator", cid: int) -> None:
        """Note what the Python side must do for debug cache ``cid`` (U: call sites; T)."""
        flags = int(self.state.ca[cid, CA_DEBUG])
        self._debug_user |= bool(flags & SLAB_STORE_USER)
        if flags & SLAB_TRACE:
            self._trace_ids.add(cid)

    def _debug_calls(self: "SlabAllocator") -> None:
        """Route this allocator's calls through the Python methods and ``_debug_call``."""
        if self._debug_on:
            return
        self._debug_on = True
        for name in gate.GATED:
            self.__dict__.pop(name, None)
        self._gate = None
        for attr, u, array, kind in _K_UNITS:
            setattr(self, attr, self._debug_call(u, array, kind))

    def _debug_call(self: "SlabAllocator", u: Any, array: bool,
                    kind: str) -> Callable[..., int]:
        """A ``_k_*`` call that records U's call site before the unit, logs and collects after it.

        It records the caller's site for U caches before the unit, and after it logs T lines and
        collects the reports it wrote. It holds the allocator weakly (the allocator holds it: no
        reference cycle)."""
        fn: list[Callable[..., int]] = []
        ref = weakref.ref(self)

        def call(*args: Any) -> int:
            sa = ref()
            if sa is None:
                raise AllocatorGoneError("the allocator of this call is gone")
            if not fn:
                fn.append(bound(u, sa._st, array))
            g = sa._g
            user, traced = sa._debug_user, sa._trace_ids
            before = None
            if traced:
                cid = sa._cache_of(args[1]) if kind == "kfree" else args[0]
                if kind in ("free", "kfree") and cid in traced:     # trace() runs in
                    before = sa._slab_words(args[2 if kind == "free" else 1])   # the checks
                elif kind == "free_bulk" and (cid in traced or cid == NIL):
                    before = sa._free_plan(cid, args[3][:args[2]].tolist())
                    seen = int(g[G_NREPORTS])
            if user:
                g[G_SITE] = sa._site_id()
                try:
                    r = fn[0](*args)
                finally:
                    g[G_SITE] = 0
            else:
                r = fn[0](*args)
            if traced and kind in _BATCH_ARRAY:
                if kind != "free_bulk":
                    if r > 0 and cid in traced:
                        sa._trace_allocs(cid, args[_BATCH_ARRAY[kind]][:r].tolist())
                elif before is not None and (r == 0 or
                                             checks.batch_error(r)[0] == debug.E_DEBUG):
                    sa._trace_frees(before, sa._not_freed_since(seen))
            elif traced and kind and cid in traced:
                addr = args[2] if kind == "free" else args[1] if kind == "kfree" else r
                if (r > 0) if kind == "alloc" else (r == 0):
                    sa._trace(cid, "alloc" if kind == "alloc" else "free", addr, before)
            if g[G_NREPORTS] != sa._reports_seen:
                sa._last_reports = sa._drain_reports()
            elif sa._last_reports:
                sa._last_reports = []
            return r
        return call

    def _cache_of(self: "SlabAllocator", addr: Any) -> int:
        """The cache id of the slab holding ``addr``, or NIL."""
        if not isinstance(addr, int) or not 0 < addr < self.nr_pages << 12:
            return NIL
        head = self._slab_head(addr)
        return int(self.state.sl_cache[head]) if self.state.pg_flags[head] & PG_SLAB else NIL

    def _site_id(self: "SlabAllocator") -> int:
        """The caller outside numslab as a site number for ``struct track``'s ``addr``."""
        f = sys._getframe(2)
        while f is not None and (f.f_globals.get("__name__", "") + ".").startswith("numslab."):
            f = f.f_back
        if f is None:
            return 0
        key = (f.f_code.co_filename, f.f_lineno)      # strings cache their hash
        sid = self._site_keys.get(key)
        if sid is None:
            site = f"{f.f_code.co_name} {f.f_code.co_filename}:{f.f_lineno}"
            sid = self._sites.get(site)
            if sid is None:
                self._site_names.append(site)
                sid = self._sites[site] = len(self._site_names)
            self._site_keys[key] = sid
        return sid

    def _slab_words(self: "SlabAllocator", addr: int) -> tuple[int, int]:
        """``slab->inuse`` and ``slab->freelist`` of the slab holding ``addr``."""
        head = self._slab_head(addr)
        return int(self.state.sl_inuse[head]), int(self.state.sl_freelist[head])

    def _trace(self: "SlabAllocator", cid: int, op: str, addr: int,
               words: tuple[int, int] | None = None) -> None:
        """SLAB_TRACE: ``trace()``'s line for one alloc or free.

        With the slab's ``inuse`` and ``freelist`` as ``trace()`` sees them: after the object left
        the free list (``alloc_single_from_partial`` pops before ``alloc_debug_processing``),
        before it joins it (``free_debug_processing`` runs before ``free_to_partial_list`` links
        it: ``words``, read before the free)."""
        inuse, fp = self._slab_words(addr) if words is None else words
        log.info("TRACE %s %s %#x inuse=%d fp=%#x", self._caches[cid].name, op, addr, inuse, fp)

    def _trace_allocs(self: "SlabAllocator", cid: int, objs: list[int]) -> None:
        """SLAB_TRACE of a batch allocation of debug cache ``cid``.

        Each of ``objs`` came from its own ``___slab_alloc`` (``alloc_debug_processing``) in this
        order, and the batch freed nothing, so the slab as ``trace()`` saw each object's allocation
        is found from the slab now: ``inuse`` less the batch's later objects on it, and ``fp`` the
        next of them it handed out (else its free list now)."""
        st = self.state
        later: dict[int, tuple[int, int]] = {}
        lines = []
        for a in reversed(objs):
            s = self._slab_head(a)
            n, nxt = later.get(s, (0, -1))
            lines.append((a, int(st.sl_inuse[s]) - n, int(st.sl_freelist[s]) if n == 0 else nxt))
            later[s] = (n + 1, a)
        for a, inuse, fp in reversed(lines):
            self._trace(cid, "alloc", a, (inuse, fp))

    def _free_plan(self: "SlabAllocator", cid: int,
                   objs: list[int]) -> tuple[list, dict] | None:
        """The detached freelists a batch free of ``objs`` will make, found before it.

        ``cid`` NIL: ``kfree_bulk``. The freelists ``build_detached_freelist`` will make, in the
        order ``__kmem_cache_free_bulk`` frees them, as (cache id, slab, chain from head to tail),
        and each slab's ``inuse`` and ``freelist`` now (for :meth:`_trace_frees`). None if an
        address is outside the arena (the call refuses the batch)."""
        st = self.state
        limit = self.nr_pages << 12
        if not all(0 < a < limit for a in objs):
            return None
        p = list(objs)
        size = len(p)
        chains = []
        pre: dict[int, tuple[int, int]] = {}
        while size:
            size -= 1
            slab = self._slab_head(p[size])
            if cid == NIL and not st.pg_flags[slab] & PG_SLAB:
                continue                                    # a large kmalloc
            end, same, lookahead = size + 1, size, 3
            while size:
                size -= 1
                if self._slab_head(p[size]) == slab:
                    same -= 1
                    p[size], p[same] = p[same], p[size]
                    continue
                lookahead -= 1
                if not lookahead:
                    break
            owner = int(st.sl_cache[slab]) if cid == NIL else cid
            chains.append((owner, slab, p[same:end]))
            pre.setdefault(slab, (int(st.sl_inuse[slab]), int(st.sl_freelist[slab])))
            size = same
        return chains, pre

    def _not_freed_since(self: "SlabAllocator", seen: int) -> set[int]:
        """The objects of the "Object at .. not freed" reports written since report ``seen``.

        Each is a refused chain's failing object."""
        rep = self.state.reports
        return {int(rep[i % R_MAX, R_OBJECT])
                for i in range(max(seen, int(self._g[G_NREPORTS]) - R_MAX),
                               int(self._g[G_NREPORTS]))
                if rep[i % R_MAX, R_KIND] == rz.K_FIX_NOT_FREED}

    def _trace_frees(self: "SlabAllocator", plan: tuple[list, dict], refused: set[int]) -> None:
        """SLAB_TRACE of a batch free (a plan from :meth:`_free_plan`).

        Per chain, ``free_debug_processing`` traces each object from the head with the slab as it
        was before the chain (the chain is spliced after the loop), up to the object a check
        refused (the chain then stays allocated); the next chain sees the slab after."""
        chains, sim = plan
        traced = self._trace_ids
        for owner, slab, chain in chains:
            inuse, fp = sim[slab]
            for a in chain:
                if a in refused:
                    break
                if owner in traced:
                    self._trace(owner, "free", a, (inuse, fp))
            else:
                sim[slab] = (inuse - len(chain), chain[0])

    # ---- what an address is ----------------------------------------------------------------
    def find(self: "SlabAllocator", addr: int) -> dict[str, Any]:
        """What ``addr`` is, as a dict: its ``kind`` and, where it applies, where it is.

        ``kind``: "object", "free object", "kfree_rcu" (waiting for its grace period), "lost"
        (:attr:`KmemCache.lost_objects`), "sheaf", "barn" or "random_seq" (the allocator's own:
        a ``struct node_barn``, a cache's ``s->random_seq``; an oversize prefilled sheaf, a
        large block, is a "sheaf" too), "large kmalloc", "rcu slab" (a
        SLAB_TYPESAFE_BY_RCU slab discarded, its pages waiting for their grace period),
        "pages", "free page", "reserved", "slab padding" (a slab's bytes past its last object)
        or "outside". Where it applies, ``cache`` (a KmemCache), ``slab`` (its
        address), ``index`` and ``offset`` inside the object (negative in its left red zone);
        for a "free object", ``cached``: whether it waits in a sheaf (a CPU's, a barn's, a
        prefilled one) rather than on its slab's free list (a write into it clobbers nothing the
        allocator reads, and a flush of the sheaf writes its free pointer over it)."""
        if isinstance(addr, (int, np.integer)) and not isinstance(addr, bool) \
                and not 0 <= addr < self.nr_pages * PAGE_SIZE:
            return {"kind": "outside"}          # (any integer: -5 and 2**70 alike)
        addr = self._as_addr(addr, "find")      # in the arena here, or not an integer: raises
        ops.settle_pending(self._st)            # (a pending bulk allocation's marks written)
        st = self.state
        pfn = addr >> 12
        head = self._slab_head(addr)
        f = int(st.pg_flags[head])
        if not f & (PG_HEAD | PG_TAIL) and not st.pg_flags[pfn] & (PG_HEAD | PG_TAIL):
            return {"kind": "reserved" if f & PG_RESERVED else "free page"}
        if not f & PG_SLAB:
            kind = ("kfree_rcu" if f & PG_LARGE and f & PG_RCU else "large kmalloc"
                    if f & PG_LARGE else "rcu slab" if f & PG_RCU else "pages")
            if kind == "large kmalloc" and self._own_block(head << 12):
                kind = "sheaf"                  # an oversize sheaf
            return {"kind": kind, "block": head << 12, "order": int(st.pg_order[head])}
        cache = self._caches.get(int(st.sl_cache[head]))
        if cache is None:               # its cache destroyed by another thread meanwhile (a
            return {"kind": "pages", "block": head << 12,   # bare KeyError)
                    "order": int(st.pg_order[head])}
        # its slot, the object's left red zone first (as the kernel lays it out): the first
        # one's was object -1, an address on the page before the slab, and the tail an object
        # past the last
        index = (addr - (head << 12)) // cache.slab_size
        if index >= int(st.sl_objects[head]):
            return {"kind": "slab padding", "cache": cache, "slab": head << 12}
        obj = (head << 12) + cache.red_left_pad + index * cache.slab_size
        inside = addr - obj
        err, _ = self._locate(obj)
        kind = {0: "object", checks.E_ALLOCATORS: "sheaf"}.get(err, "free object")
        if kind == "sheaf" and (st.barn == obj).any():      # the allocator's own, not a sheaf
            kind = "barn"
        elif kind == "sheaf" and (st.random_seq == obj).any():
            kind = "random_seq"
        elif kind == "free object" and self._rcu_note(obj):
            kind = "kfree_rcu"
        elif kind == "free object" and self._is_lost(cache, head, obj):
            kind = "lost"
        found = {"kind": kind, "cache": cache, "slab": head << 12, "index": index,
                 "object": obj, "offset": inside}
        if kind == "free object":
            found["cached"] = self._in_a_sheaf(obj)
        return found

    def sheaf_addresses(self: "SlabAllocator") -> np.ndarray:
        """Addresses of every sheaf the allocator holds, int64[n].

        The CPUs' main, spare and rcu_free sheaves of every cache, the barns' full, empty and
        partial sheaves, the prefilled sheaves handed to users and those waiting for a grace period
        (their kmalloc objects in the arena; a sheaf's handle is that address plus the arena's
        size)."""
        st = self.state
        cpu = st.cpu[:, :, [C_MAIN, C_PARKED, C_SPARE, C_RCU_FREE]]
        # (while a unit compiles mid-operation the main sheaves are parked: kept in C_PARKED,
        # the rows pointing at NO_SHEAF, the allocator's placeholder in frame 0)
        out = [cpu[(cpu != 0) & (cpu != threads.no_sheaf(self))]]
        words = self._mem
        heads = np.concatenate([st.node[:, :, [N_BARN_FULL, N_BARN_EMPTY]].ravel(),
                                st.barn_partial.ravel(),
                                st.ca[:, CA_USER_SHEAVES], self._g[G_RCU_HEAD:G_RCU_HEAD + 1]])
        for sheaf in heads[heads != 0].tolist():
            chain = []                  # (a link a stray write left is not followed)
            while self.memory.size < sheaf < 8 * words.size and not sheaf & 7 \
                    and len(chain) < words.size:
                chain.append(sheaf)
                sheaf = int(words[(sheaf >> 3) + SH_NEXT])
            out.append(np.array(chain, np.int64))
        return np.concatenate(out).astype(np.int64) - self.memory.size

    def barn_addresses(self: "SlabAllocator") -> np.ndarray:
        """Addresses of every cache's barns, int64[n], in (cache, node) order.

        A cache with sheaves has a ``struct node_barn`` per node, a kmalloc object of the
        allocator's own (``init_kmem_cache_nodes``), freed when the cache is destroyed."""
        b = self.state.barn.ravel()
        return b[b != 0].astype(np.int64)

    def random_seq_addresses(self: "SlabAllocator") -> np.ndarray:
        """Addresses of every cache's ``s->random_seq`` array, int64[n], in slot order.

        CONFIG_SLAB_FREELIST_RANDOM: a cache of two or more objects per slab kcallocs its
        sequence (``cache_random_seq_create``: ``4 * objs_per_slab`` bytes, the allocator's
        own kmalloc object) when it is created, freed when it is destroyed."""
        r = self.state.random_seq
        return r[r != 0].astype(np.int64)

    def _in_a_sheaf(self: "SlabAllocator", obj: int) -> bool:
        """Whether a sheaf of the allocator (:meth:`sheaf_addresses`) names the object ``obj``."""
        words = self._mem
        for sheaf in (self.sheaf_addresses() + self.memory.size).tolist():
            n = min(max(int(words[(sheaf >> 3) + SH_SIZE]), 0), words.size)
            o = (sheaf >> 3) + SH_OBJECTS
            if obj in words[o:o + n]:
                return True
        return False

    def _is_lost(self: "SlabAllocator", cache: KmemCache, head: int, obj: int) -> bool:
        """Whether ``obj``, an object nobody holds of ``cache``'s slab at frame ``head``, is lost.

        Lost (:attr:`KmemCache.lost_objects`): its slab holds lost objects and neither the slab's
        free list, a CPU's freelist (6.18) nor a sheaf of the allocator holds it."""
        rows = cache.lost_slabs()
        if not (rows[:, 0] == head << 12).any():
            return False
        if self._in_a_sheaf(obj):
            return False
        st = self.state
        cpus = st.cpu[cache.id]
        starts = [int(st.sl_freelist[head])] + cpus[cpus[:, C_SLAB] == head, C_FREELIST].tolist()
        frames = range(1 << max(int(st.pg_order[head]), 0))    # (-1: freed by another thread
        for a in starts:                                        # since: 1 << -1 raised)
            for _ in range(int(st.sl_objects[head])):   # (a list a stray write looped: bounded)
                if a == obj:
                    return False
                if a <= 0 or (a >> 12) - head not in frames:
                    break
                a = self._get_freepointer(cache.id, a)
        return True

    # ---- reports -----------------------------------------------------------------------------
    def _drain_reports(self: "SlabAllocator") -> list[str]:
        """Turn the reports the engine wrote since the last call into text.

        Kept for ``slab_reports``, logged on the ``numslab`` logger, and returned."""
        n = int(self._g[G_NREPORTS])
        seen = self._reports_seen
        out = []
        first = max(seen, n - R_MAX)
        if first > seen:
            out.append(f"numslab: {first - seen} slab_debug report(s) lost (the ring holds "
                       f"{R_MAX})")
        rep = self.state.reports
        self._last_object = 0                   # the object of the first report naming one
        checked = -1        # the object whose check_object is reporting bad bytes, if any
        # a slab fixed later in this drain ("Marking all objects used", "Freelist cleared"):
        # its reports print its inuse and freelist from before the fix, as the kernel does
        fixed: dict[int, tuple[int, int, int]] = {}     # slab -> (inuse, freelist, record)
        for k in range(n - 1, first - 1, -1):
            r = rep[k % R_MAX]
            if r[R_KIND] in (rz.K_FIX_ALL_USED, rz.K_FIX_CLEARED) and r[R_C] == 1:
                fixed[int(r[R_SLAB])] = (int(r[R_A]), int(r[R_B]), k)
        for k in range(first, n):
            r = rep[k % R_MAX]
            kind, obj = int(r[R_KIND]), int(r[R_OBJECT])
            before = fixed.get(int(r[R_SLAB]))
            if before is not None and before[2] < k:
                before = None                   # a report after the fix: the slab as it is
            # check_bytes_and_report calls object_err only for the first failing check of a
            # check_object (its slab_obj_print is check_object's ret, still 1 until then);
            # list_slab_objects prints its slab's line after the slab's last object
            last = kind == rz.K_REMAINING_OBJECT and not (
                k + 1 < n and rep[(k + 1) % R_MAX, R_KIND] == rz.K_REMAINING_OBJECT
                and rep[(k + 1) % R_MAX, R_SLAB] == r[R_SLAB])
            out.append(self._format_report(r, kind >= rz.K_SLAB_PAD or obj != checked
                                           if kind != rz.K_REMAINING_OBJECT else last,
                                           None if before is None else before[:2]))
            if kind < rz.K_SLAB_PAD:
                checked = obj
            elif kind != rz.K_FIX_RESTORE:
                checked = -1
            if not self._last_object:
                self._last_object = obj
        self._reports_seen = n
        self._reports.extend(out)
        for text in out:
            log.error("%s", text)
        return out

    def slab_reports(self: "SlabAllocator", clear: bool = False) -> list[str]:
        """Every slab_debug report so far, in the kernel's words, oldest first.

        One string per report: a ``BUG`` with its details, or a ``FIX``. ``clear`` empties the
        list."""
        clear = check_bool(clear, "slab_reports: clear")    # (bool() took 'no' as True)
        self._drain_reports()
        out = list(self._reports)
        if clear:
            self._reports.clear()
        return out

    def _format_report(self: "SlabAllocator", r: np.ndarray, first: bool = True,
                       slab_words: tuple[int, int] | None = None) -> str:
        """One report record in the kernel's words (6.18's and 7.0's ``mm/slub.c``).

        A bad byte range as ``check_bytes_and_report`` prints it (``[<what> overwritten] ...``),
        followed, for the ``first`` failing check of an object, by ``object_err``'s ``BUG <cache>
        (Not tainted): Object corrupt`` and the trailer; ``slab_pad_check``'s, ``slab_err``'s and
        ``object_err``'s reports; ``list_slab_objects``' (its ``BUG``, then each object with its
        tracks, the slab's line after the ``first`` = last one); a ``slab_fix`` line."""
        kind, cid, slab, obj = int(r[R_KIND]), int(r[R_CACHE]), int(r[R_SLAB]), int(r[R_OBJECT])
        a, b, c, d = int(r[R_A]), int(r[R_B]), int(r[R_C]), int(r[R_D])
        trailer = partial(self._trailer, cid, slab, words=slab_words)
        cache = self._caches.get(cid)
        name = cache.name if cache is not None else f"cache {cid}"
        base = slab << 12
        if kind == rz.K_FIX_RESTORE:
            what = "slab padding" if c == rz.K_SLAB_PAD else _WHAT[c]
            return f"FIX {name}: Restoring {what} {a:#x}-{b:#x}={d:#x}"
        fixes = {rz.K_FIX_COUNT: "Object count adjusted", rz.K_FIX_CLEARED: "Freelist cleared",
                 rz.K_FIX_ALL_USED: "Marking all objects used",
                 rz.K_FIX_NOT_FREED: f"Object at {obj:#x} not freed"}
        if kind in fixes:
            return f"FIX {name}: {fixes[kind]}"
        if kind < rz.K_SLAB_PAD:
            bad = (f"[{_WHAT[kind]} overwritten] {a:#x}-{b:#x} @offset={a - base}. First "
                   f"byte {c:#x} instead of {d:#x}")
            if not first:
                return bad
            return "\n".join([bad, f"BUG {name} (Not tainted): Object corrupt"] +
                             trailer(obj))
        if kind == rz.K_SLAB_PAD:               # slab_bug, then __slab_err's slab line
            return "\n".join([f"BUG {name} (Not tainted): Padding overwritten. {a:#x}-{b:#x} "
                              f"@offset={a - base}"] + trailer(0))
        if kind == rz.K_WRONG_COUNT:
            head = [f"BUG {name} (Not tainted): Wrong object count. Counter is {a} but "
                    f"counted were {b}"]
        elif kind == rz.K_REMAINING_OBJECT:     # list_slab_objects: the object, its tracks,
            return "\n".join([f"Object {obj:#x} @offset={obj - base}"] +   # after the last
                             self._tracking(cid, obj) +                   # one __slab_err's
                             (trailer(0) if first else []))   # slab line
        else:
            head = [f"BUG {name} (Not tainted): {_ERRORS[kind]}"]
            if kind == rz.K_REMAINING:          # slab_bug; its objects follow
                return head[0]
            if kind == rz.K_FREELIST:           # printed before the list was cleared
                return "\n".join(head + trailer(0, slab_fp=a))
            if kind in (rz.K_FREEPOINTER, rz.K_FREECHAIN):
                if obj:                         # printed before the pointer was zapped
                    return "\n".join(head + trailer(obj, fp=a))
                head.append(f"Free pointer read {a:#x}")   # numslab's free-pointer guard
        return "\n".join(head + trailer(obj))

    def _tracking(self: "SlabAllocator", cid: int, obj: int) -> list[str]:
        """``print_tracking``'s lines: where object ``obj`` was allocated and freed (U)."""
        st = self.state
        out = []
        if obj and cid in self._caches and st.ca[cid, CA_DEBUG] & SLAB_STORE_USER:
            now = int(self._g[G_TICKS])
            for i, what in enumerate(("Allocated", "Freed")):
                w = (obj + int(st.ca[cid, CA_TRACK]) + i * rz.TRACK_SIZE) >> 3
                site, cpu_word, pid, when = (int(x) for x in self._mem[w:w + 4])
                if when:
                    where = (self._site_names[site - 1] if 0 < site <= len(self._site_names)
                             else "an @njit function")
                    out.append(f"{what} in {where} age={now - when} cpu={cpu_word >> 32} "
                               f"pid={pid}")
        return out

    def _trailer(self: "SlabAllocator", cid: int, slab: int, obj: int,
                 fp: int | None = None, slab_fp: int | None = None,
                 words: tuple[int, int] | None = None) -> list[str]:
        """``print_trailer``'s lines: the object's tracks, its slab, the object, its free pointer.

        The tracks: :meth:`_tracking`. The slab: ``print_slab_info``, its inuse and free list as
        ``words`` gives them when a fix changed them after the report, the free list ``slab_fp`` if
        given. The free pointer: ``fp`` if given, else decoded from the arena. Not printed: the hex
        dumps of ``print_section`` (the bad bytes are restored by the time a report is read) and
        the page flags (``%pGp``: no page flags of this model's are the kernel's)."""
        st = self.state
        out = self._tracking(cid, obj)
        if slab > 0 and st.pg_flags[slab] & PG_SLAB:
            inuse, sfp = int(st.sl_inuse[slab]), int(st.sl_freelist[slab])
            if words is not None:               # the slab was fixed after this report
                inuse, sfp = words
            sfp = sfp if slab_fp is None else slab_fp
            out.append(f"Slab {slab << 12:#x} objects={int(st.sl_objects[slab])} "
                       f"used={inuse} fp={sfp:#x}")
        if obj:
            if fp is None:
                fp = self._get_freepointer(cid, obj)
            out.append(f"Object {obj:#x} @offset={obj - (slab << 12)} fp={fp:#x}")
        return out

    def _get_freepointer(self: "SlabAllocator", cid: int, obj: int) -> int:
        """``get_freepointer(s, obj)``: the word at the cache's free-pointer offset, decoded.

        Decoded as the engine stores it (CONFIG_SLAB_FREELIST_HARDENED: ``ptr ^ s->random ^
        swab(address)``)."""
        where = obj + int(self.state.ca[cid, CA_OFFSET])
        raw = int(self._mem[where >> 3]) & _U64
        key = int(self.state.ca[cid, CA_FP_KEY]) & _U64
        if key:
            raw ^= key ^ int.from_bytes(where.to_bytes(8, "little"), "big")
        return raw - (1 << 64) if raw >> 63 else raw

    def _refused_flush(self: "SlabAllocator", cache: "KmemCache", fn: str, sheaf: int,
                       objs: list[int], new: int = 0, gfp: int = 0) -> None:
        """Raise ``SlabDebugError`` if a check refused objects of the flushed ``sheaf``.

        ``objs``: what the prefilled sheaf held before ``fn`` flushed it (given back, or replaced
        by the larger sheaf ``new`` in a refill). A refused chain stays allocated, as in the
        kernel, but no user holds it: the error names those objects (its ``objects``) so that
        the caller frees them. A refill's new sheaf goes back to the cache first (the caller
        holds no sheaf then, as after a constructor's error)."""
        if not objs:
            return
        taken = set(self._sheaf_objects(new, 0)) if new else set()
        kept = [o for o in objs if o not in taken and self._locate(o, cache._id)[0] == 0]
        if not kept:
            return
        refused = sorted(self._not_freed_since(0) & set(kept)) or kept
        e = self._debug_error(fn, refused[0])   # (its reports, before the next call's)
        if new:
            self.kmem_cache_return_sheaf(cache, gfp, new)
        grown = (f"; the sheaf had been replaced by a larger one at {new:#x}, given back "
                 f"to the cache: neither handle is a sheaf any more" if new else "")
        raise held_by_no_one(e, f"{fn}: the flush of the sheaf at {sheaf:#x} left {len(kept)} "
                             f"object(s) allocated", kept,
                             f", held by no sheaf: {free_again()}{grown}")

    def _debug_error(self: "SlabAllocator", fn: str, addr: int,
                     slab: int = 0) -> SlabDebugError:
        """The exception for a call a slab_debug check refused, with its reports.

        An allocation that took nothing names the isolated ``slab`` (a head frame) instead of an
        object (it named "object 0x0")."""
        reports = self._last_reports
        bug = reports[0].splitlines()[:2] if reports else ["slab_debug check failed"]
        obj = max(addr, 0) or getattr(self, "_last_object", 0)      # (a batch's -1: none)
        cid = self._cache_of(obj) if obj or not slab else int(self.state.sl_cache[slab])
        if fn == "allocation" and cid in self._caches:      # the cache that refused it
            fn = f"allocation from {self._caches[cid].name}"
        what = f"object {obj:#x}" if obj or not slab else f"the slab at {slab << 12:#x}"
        return SlabDebugError(f"{fn}: {what}: " + "\n".join(bug), reports)

    # ---- validate ----------------------------------------------------------------------------
    @cache_op
    def kmem_cache_validate(self: "SlabAllocator", cache: "KmemCache") -> int:
        """``validate_slab_cache``: check a debug cache's objects; the errors found.

        Every object of every partial slab of a debug cache (and every full slab with U), as
        ``/sys/kernel/slab/<cache>/validate`` does. Returns the errors found, counted as the
        kernel's KUnit tests count them (each report and each fix); their text is in
        ``slab_reports()`` and on the ``numslab`` logger. Bad bytes are restored, so a second call
        finds 0. A cache without debug flags: 0.

        ``validate()`` remains the check of numslab's structural invariants."""
        cid = self._own(cache, "kmem_cache_validate")
        self._drain_reports()
        with _RCU_LOCK:     # the list as the unit sees it (it lifts and restores their marks:
            listed = self._rcu_listed()         # a grace period ending in between left a
            n = int(debug.validate_slab_cache(  # freed object marked as waiting)
                self._st, cid, len(listed), listed.ctypes.data))
        self._last_reports = self._drain_reports()
        return n

    def _report_leaks(self: "SlabAllocator", cid: int) -> list[str]:
        """``list_slab_objects``' reports for a cache destroyed with objects."""
        self._drain_reports()
        debug.report_leaks(self._st, cid)
        return self._drain_reports()

    def _refuse_leaky_destroy(self: "SlabAllocator", cache: "KmemCache", live: int,
                              force: bool = False) -> None:
        """Raise ``CacheLeakError`` if destroying ``cache`` would leave objects or sheaves behind.

        ``live`` objects or (unless ``force``) lost ones, ``LostObjectsError`` when only lost ones
        (both reported as ``list_slab_objects`` does), or prefilled sheaves outstanding."""
        lost = 0 if force else cache.lost_objects
        if live or lost:
            self._report_leaks(cache._id)       # list_slab_objects
        head = f"kmem_cache_destroy {cache.name}: Slab cache still has objects: "
        if live:
            raise CacheLeakError(head + f"{live} live object(s) of {cache.object_size} bytes"
                                 + (f", and {lost} lost to a corrupted free list" * bool(lost)))
        if lost:
            where = [f"{n} in the slab at {a:#x}" for a, n in cache.lost_slabs()]
            where[4:] = [f"more in {len(where) - 4} other slab(s)"] * (len(where) > 4)
            raise LostObjectsError(head + f"{lost} object(s) lost to a corrupted free list "
                                   f"({', '.join(where)}), held by no user; "
                                   f"kmem_cache_destroy(..., force=True) discards them")
        if self.state.ca[cache._id, CA_USER_SHEAVES]:
            raise CacheLeakError(f"kmem_cache_destroy {cache.name}: prefilled sheaves are "
                                 f"still outstanding; return them first")

    def _slab_debug_of(self: "SlabAllocator", name: str, flags: int) -> int:
        """The flags of a new cache called ``name`` with the ``slab_debug`` option applied."""
        return slab_debug_flags(self._slab_debug, name, flags)
