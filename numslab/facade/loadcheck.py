"""What ``load`` checks of a loaded state: the range of its links, then the structure.

The range of its links (:func:`check_links`), then the structure that compiled code follows without
a bound (:class:`Structure`: blocks, slab rows, page and partial lists, CPU slabs, cache geometry,
every reachable sheaf). A file edited on purpose, its digest recomputed, crashed or hung the
interpreter through one such word; now ``load`` refuses it with a ``SlabError`` naming the word,
its value and what it should be."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import layout
from ..engine.layout import (BARN_SIZE, B_COUNT, B_HEAD, C_FREELIST, C_MAIN, C_PARKED,
                             C_PARTIAL, C_RCU_FREE, C_SLAB, C_SPARE, CA_ACTIVE, CA_ALIGN, CA_CTOR,
                             CA_DEBUG, CA_FLAGS,
                             CA_INUSE, CA_MIN_OBJECTS, CA_MIN_ORDER, CA_OBJECT_SIZE, CA_OBJECTS,
                             CA_OFFSET, CA_ORDER, CA_ORIG, CA_PARTIAL_ORDER, CA_RECIP, CA_RED_LEFT,
                             CA_RSEQ, CA_RSEQ_LEN, CA_SHEAF_CAPACITY, CA_SIZE, CA_TRACK,
                             CA_USED_RATIO, CA_USER_SHEAVES, D_OBJECT_POISON, G_NDEBUG,
                             G_NLOST, G_NPENDING,
                             PENDING_FRAME, G_NRCU, G_NRCU_SLABS, G_RCU_HEAD, G_RCU_SLABS,
                             G_RCU_SLABS_TAIL, G_RCU_TAIL, N_BARN_EMPTY,
                             N_BARN_FULL, N_NR_EMPTY, N_NR_FULL, N_NR_PARTIAL, N_NR_SLABS,
                             N_PARTIAL_HEAD, N_PARTIAL_TAIL, N_TOTAL_OBJECTS, NIL, NR_ORDERS,
                             NR_PBUCKETS, P_BATCH, P_COUNT,
                             P_FREE_FACTOR, P_HIGH, P_LISTS, PCP_MAX_ORDER, PG_BUDDY,
                             PG_CPU_PARTIAL, PG_FROZEN, PG_HEAD, PG_ISOLATED, PG_LARGE,
                             PG_NODE_PARTIAL, PG_PCP, PG_RCU, PG_RESERVED, PG_SLAB, PG_SORTED,
                             PG_TAIL, RANDOM_SEQ_ENTRY, RSEQ_MAX, SH_CACHE, SH_CAPACITY,
                             SH_NEXT, SH_OBJECTS, SH_SIZE, SHEAF_HEADER)
from ..errors import MachineFileError, SlabError
from ..flags import SLAB_DEBUG_FLAGS, SLAB_KMALLOC, SLAB_NO_SHEAVES, SLAB_TYPESAFE_BY_RCU
from ..geometry import MAX_OBJS_PER_PAGE, calculate_geometry, calculate_sheaf_capacity
from .loadbits import check_held_bits, check_live_bits

if TYPE_CHECKING:
    from .allocator import SlabAllocator


#: The flags a slab's head frame may carry, a large kmalloc's, and the column names of the
#: per-cache rows (for the messages of :class:`Structure`).
_SLAB_FLAGS = (PG_HEAD | PG_SLAB | PG_FROZEN | PG_NODE_PARTIAL | PG_CPU_PARTIAL | PG_ISOLATED
               | PG_SORTED)
_LARGE_FLAGS = PG_HEAD | PG_LARGE | PG_RCU
_COLS = {p: {getattr(layout, k): k for k in dir(layout) if k.startswith(p) and k[-5:] != "NCOLS"}
         for p in ("CA_", "C_", "N_")}


def made_with(sa: "SlabAllocator") -> dict[str, np.ndarray]:
    """What a new machine ``sa`` is made with that its state never changes, for :class:`Structure`.

    Copies, taken before a loaded state overwrites it: the kmalloc table, the CPUs' nodes, the pcp
    sizes and the reserved frames.

    Parameters
    ----------
    sa : SlabAllocator
        The machine just made, before the loaded state is copied into it.

    Returns
    -------
    dict of str to numpy.ndarray
        ``kmalloc`` int64[13]; ``cpu_node`` int64[U]; ``pcp[..., P_HIGH]`` and
        ``pcp[..., P_BATCH]`` int64[U * N] (CPU-major); ``reserved`` bool[P].
    """
    st = sa.state
    return {"kmalloc": st.kmalloc.copy(), "cpu_node": st.cpu_node.copy(),
            "pcp[..., P_HIGH]": st.pcp[:, :, P_HIGH].flatten(),
            "pcp[..., P_BATCH]": st.pcp[:, :, P_BATCH].flatten(),
            "reserved": (st.pg_flags & PG_RESERVED) != 0}


def check_links(sa: "SlabAllocator", path: str | Path) -> None:
    """Refuse a loaded state whose links name a frame, an order or a cache the machine lacks.

    The per-frame links, slab counts, kmalloc table, page lists or constructor list: compiled code
    follows them without a bounds check. The digest does not stop a file edited on purpose (its
    digest recomputed), and one such word crashed the interpreter."""
    st, npages, ncaches = sa.state, sa.nr_pages, len(sa.state.ca)

    def bad(name: str, values: np.ndarray, lo: int, hi: int, nil: bool = True) -> None:
        wrong = (values < lo) | (values >= hi)
        if nil:
            wrong &= values != NIL
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise MachineFileError(f"load: {path}: its state is corrupt: {name}[{i}] is "
                                   f"{int(values[i])}, not in {lo}..{hi - 1}")
    for name in ("pg_head", "pg_next", "pg_prev"):
        bad(name, getattr(st, name), 0, npages)
    bad("pg_order", st.pg_order, 0, NR_ORDERS)
    bad("sl_cache", st.sl_cache, 0, ncaches)
    bad("kmalloc", st.kmalloc, 0, ncaches)
    bad("sl_objects", st.sl_objects, 0, MAX_OBJS_PER_PAGE + 1, nil=False)
    bad("sl_inuse", st.sl_inuse, 0, MAX_OBJS_PER_PAGE + 1, nil=False)
    over = np.flatnonzero(st.sl_inuse > st.sl_objects)
    if len(over):
        i = int(over[0])
        raise MachineFileError(f"load: {path}: its state is corrupt: sl_inuse[{i}] is "
                               f"{int(st.sl_inuse[i])}, more than sl_objects[{i}], "
                               f"{int(st.sl_objects[i])}")
    lost = st.sl_lost               # (a count; a wrong one made the live counts wrong)
    head = (st.pg_flags & (PG_HEAD | PG_SLAB | PG_ISOLATED)) == PG_HEAD | PG_SLAB
    wrong = np.flatnonzero((lost < 0) | (lost > st.sl_inuse) | (lost != 0) & ~head)
    if len(wrong):
        i = int(wrong[0])
        raise MachineFileError(f"load: {path}: its state is corrupt: sl_lost[{i}] is "
                               f"{int(lost[i])}, not 0 nor at most the objects in use of a slab "
                               f"that is not isolated")
    if int(lost.sum()) != int(sa._g[G_NLOST]):
        raise MachineFileError(f"load: {path}: its state is corrupt: g[G_NLOST] is "
                               f"{int(sa._g[G_NLOST])}, not the sum of sl_lost, {int(lost.sum())}")
    bad("pg_head of a tail page", st.pg_head[(st.pg_flags & PG_TAIL) != 0], 0, npages,
        nil=False)
    bad("a pcp list's end", st.pcp[:, :, P_LISTS:].ravel(), 0, npages)
    bad("a free area's head", st.buddy[:, :, B_HEAD].ravel(), 0, npages)
    n = int(sa._g[G_NPENDING])
    bad("g[G_NPENDING]", np.array([n]), 0, len(st.pending) + 1, nil=False)
    bad("pending", st.pending[:n] & PENDING_FRAME, 0, npages, nil=False)


class Structure:
    """The checks of a loaded state's structure, which compiled code follows without a bound.

    They run behind the range checks of :func:`check_links` (a file edited on purpose, its digest
    recomputed, crashed or hung the interpreter through one such word): every frame in one block or
    free block, the slabs' rows and first free objects, the page lists, the node and CPU partial
    lists and CPU slabs, each cache's geometry, and every sheaf reachable (CPUs, barns, the user's,
    the RCU list): an allocator's own kmalloc object, reached once, its words and objects those of
    its cache. A state ``save`` writes passes; the first word that does not raises ``SlabError``
    naming it, its value and what it should be."""

    def __init__(self, sa: "SlabAllocator", made: dict[str, np.ndarray],
                 path: str | Path) -> None:
        self.sa, self.path, self.st, self.made = sa, path, sa.state, made
        self.npages, self.ppn, self.shadow = sa.nr_pages, sa.pages_per_node, sa.memory.size
        self.words = sa._mem
        self.on_list = np.zeros(self.npages, bool)      # frames met on a page or slab list
        self.frozen = np.zeros(self.npages, bool)       # CPU slabs met
        self.sheaves: set[int] = set()
        self.waiting: list[np.ndarray] = []             # objects of the RCU sheaves met
        self.entries: list[tuple[str, np.ndarray]] = []     # every sheaf met: its objects
        self.flags, self.nxt, self.prv = (a.tolist() for a in (self.st.pg_flags,
                                                                 self.st.pg_next,
                                                                 self.st.pg_prev))

    def fail(self, name: str, value: Any, expect: str) -> None:
        """Raise the refusal of word ``name`` holding ``value``."""
        raise MachineFileError(f"load: {self.path}: its state is corrupt: {name} is {int(value)}, "
                               f"{expect}")

    def first(self, name: str, values: np.ndarray, ok: np.ndarray, expect: str,
              index: np.ndarray | None = None) -> None:
        """:meth:`fail` at the first of ``values`` that is not ``ok``.

        Parameters
        ----------
        name : str
            The field, named ``name[i]`` in the refusal.
        values : numpy.ndarray
            1-D, any dtype: the words checked.
        ok : numpy.ndarray
            bool[len(values)] (or anything ``np.asarray`` makes one of): which pass.
        expect : str
            What the failing word should be, for the message.
        index : numpy.ndarray, optional
            int64[len(values)]: the ``i`` to name for each element (default: its position).
        """
        bad = np.flatnonzero(~np.asarray(ok, bool))
        if len(bad):
            i = int(bad[0])
            self.fail(f"{name}[{i if index is None else int(index[i])}]", values[i], expect)

    def run(self) -> None:
        """Every check, each before anything that relies on it."""
        self.caches()
        self.blocks()
        self.slabs()
        self.page_lists()
        self.partial_lists()
        self.cpu_slabs()
        self.all_sheaves()
        check_live_bits(self)
        check_held_bits(self)
        st, g = self.st, self.sa._g
        for mark, seen, what in ((PG_NODE_PARTIAL | PG_CPU_PARTIAL | PG_SORTED, self.on_list,
                                  "on no partial list"), (PG_FROZEN, self.frozen,
                                                          "no CPU's slab")):
            marked = (st.pg_flags & mark) != 0
            self.first("pg_flags", st.pg_flags, ~marked | seen, f"but the slab is {what}")
        ndebug = int(np.count_nonzero(st.ca[:, CA_ACTIVE] & (st.ca[:, CA_DEBUG] != 0)))
        if g[G_NDEBUG] != ndebug:
            self.fail("g[G_NDEBUG]", g[G_NDEBUG], f"not {ndebug}, the debug caches")

    # ---- caches ---------------------------------------------------------------------------
    def caches(self) -> None:
        """Each active cache's geometry, sheaf capacity and random sequence; the machine's tables.

        The geometry as ``kmem_cache_create`` makes it; the kmalloc table, the CPUs' nodes and the
        pcp sizes as the machine was made; no bucket head on a cache whose lists are not sorted."""
        st, made = self.st, self.made
        ca = st.ca
        act = ca[:, CA_ACTIVE]          # the state mask: 1 a slab_debug cache or one without
        mask = 7 if self.sa.pending_takes else 3        # sheaves, else 7 (3 with pending takes
        plain = (ca[:, CA_DEBUG] != 0) | (ca[:, CA_SHEAF_CAPACITY] == 0)         # off)
        self.first("ca[:, CA_ACTIVE]", act, (act == 0) | (act == np.where(plain, 1, mask)),
                   f"not 0, nor 1 for a slab_debug cache or one without sheaves, {mask} for "
                   f"any other")
        for name, a in (("kmalloc", st.kmalloc), ("cpu_node", st.cpu_node),
                        ("pcp[..., P_HIGH]", st.pcp[:, :, P_HIGH].ravel()),
                        ("pcp[..., P_BATCH]", st.pcp[:, :, P_BATCH].ravel())):
            self.first(name, a, a == made[name], "not what the machine was made with")
        ff = st.pcp[:, :, P_FREE_FACTOR].ravel()
        self.first("pcp[..., P_FREE_FACTOR]", ff, (ff >= 0) & (ff < 63), "not in 0..62")
        sorted_ = ca[:, CA_ACTIVE].astype(bool) & (ca[:, CA_PARTIAL_ORDER] == 1)
        self.first("ca[:, CA_PARTIAL_ORDER]", ca[:, CA_PARTIAL_ORDER],
                   (ca[:, CA_PARTIAL_ORDER] == 0) | (ca[:, CA_PARTIAL_ORDER] == 1),
                   "not 0 nor 1")
        pb = st.pbuckets.reshape(len(ca), -1)
        stale = (pb != NIL).any(axis=1) & ~sorted_
        self.first("pbuckets", pb.max(axis=1), ~stale, "a bucket head of a cache whose "
                   "partial lists are not sorted (or of no cache)")
        for c in np.flatnonzero(ca[:, CA_ACTIVE]).tolist():
            self.cache(c)

    def cache(self, c: int) -> None:
        """Cache ``c``'s row: its geometry, sheaf capacity and random sequence.

        The geometry recomputed from its object size, alignment and flags."""
        row = self.st.ca[c]
        flags, osize, offset = int(row[CA_FLAGS]), int(row[CA_OBJECT_SIZE]), int(row[CA_OFFSET])
        rcu_ptr = flags & SLAB_TYPESAFE_BY_RCU and 0 <= offset < osize
        try:
            geo = calculate_geometry(osize, int(row[CA_ALIGN]), flags, False, self.sa.nr_cpus,
                                     offset if rcu_ptr else None, orders=self.sa.slab_orders)
        except (SlabError, ValueError, OverflowError) as e:
            raise MachineFileError(f"load: {self.path}: its state is corrupt: cache {c}'s "
                                   f"geometry (ca[{c}]) is not one kmem_cache_create makes "
                                   f"({e})") from None
        debug = flags & SLAB_DEBUG_FLAGS
        want = {CA_SIZE: geo.slab_size, CA_INUSE: geo.inuse, CA_OFFSET: geo.offset,
                CA_ALIGN: geo.align, CA_ORDER: geo.order, CA_OBJECTS: geo.objs_per_slab,
                CA_MIN_ORDER: geo.min_order, CA_MIN_OBJECTS: geo.min_objects, CA_CTOR: 0,
                CA_RECIP: -(-(1 << 32) // geo.slab_size), CA_RSEQ: c * RSEQ_MAX,
                CA_DEBUG: (flags & (SLAB_DEBUG_FLAGS | SLAB_KMALLOC)
                           | (D_OBJECT_POISON if geo.object_poison else 0)) if debug else 0,
                CA_RED_LEFT: geo.red_left_pad if debug else 0,
                CA_TRACK: geo.track_offset if debug else 0,
                CA_ORIG: geo.orig_size_offset if debug else 0}
        if not row[CA_RSEQ_LEN]:
            want[CA_RSEQ] = row[CA_RSEQ]            # (0 when made with no sequence)
        for col, value in want.items():
            if row[col] != value:
                self.fail(f"ca[{c}, {_COLS['CA_'][col]}]", row[col], f"not {value}, what "
                          f"kmem_cache_create gives cache {c}'s geometry")
        cap = int(row[CA_SHEAF_CAPACITY])
        gen7 = self.sa._gen7
        if debug or (gen7 and flags & SLAB_NO_SHEAVES):
            ok = cap == 0
        else:
            ok = 0 <= cap <= 4096 and (not gen7 or calculate_sheaf_capacity(geo.slab_size,
                                                                              cap) == cap)
        if not ok:
            self.fail(f"ca[{c}, CA_SHEAF_CAPACITY]", cap, "not a sheaf capacity of its cache")
        if not -1 <= row[CA_USED_RATIO] <= 100:    # (defrag_used_ratio then read 5000)
            self.fail(f"ca[{c}, CA_USED_RATIO]", row[CA_USED_RATIO], "not a defrag_used_ratio "
                      "(-1: 0 set, 0: the default, 1..100)")
        n = int(row[CA_RSEQ_LEN])
        if n not in (0, geo.objs_per_slab) or n == 1:
            self.fail(f"ca[{c}, CA_RSEQ_LEN]", n, f"not 0 nor {geo.objs_per_slab}, its objects")
        seq = self.st.rseq[c]
        if n and not np.array_equal(np.sort(seq[:n]), np.arange(n) * geo.slab_size) or \
                2 * n <= RSEQ_MAX and not np.array_equal(seq[n:2 * n], seq[:n]):
            self.fail(f"rseq[{c}] (its first word)", seq[0], "not a random sequence of its "
                      "cache's objects (each object's offset once, twice in a row)")

    # ---- page frames ----------------------------------------------------------------------
    def blocks(self) -> None:
        """Every frame in one block: allocated, free or reserved; nothing else.

        An allocated block's head (its kind's flags, its order, aligned inside its node) and tails
        naming it, a free block's head (PG_BUDDY or PG_PCP alone) and frames of no flag, the
        reserved frames."""
        st, npages, ppn = self.st, self.npages, self.ppn
        flags, order, head = st.pg_flags, st.pg_order, st.pg_head
        alloc = (flags & PG_HEAD) != 0
        free = (flags & (PG_BUDDY | PG_PCP)) != 0
        start = alloc | free
        kind_ok = np.where((flags & PG_SLAB) != 0, (flags & ~_SLAB_FLAGS) == 0,
                           np.where((flags & PG_LARGE) != 0, (flags & ~_LARGE_FLAGS) == 0,
                                    (flags == PG_HEAD) | (flags == PG_HEAD | PG_RCU)))
        kind_ok = np.where(free, (flags == PG_BUDDY) | ((flags == PG_PCP) & (order <= 3)),
                           kind_ok)
        self.first("pg_flags", flags, ~start | kind_ok, "not the flags of a block's head")
        self.first("pg_order", order, ~start | (order >= 0), "not the order of the block "
                   "headed there")
        self.first("pg_head", head, np.where(alloc, head == np.arange(npages),
                                             ~free | (head == NIL)),
                   "not the frame itself (a block's head) nor NIL (a free block's)")
        starts = np.flatnonzero(start)
        sizes = np.ones(len(starts), np.int64) << np.maximum(order[starts], 0)
        rel = starts % ppn
        self.first("pg_order", order[starts], (rel % sizes == 0) & (rel + sizes <= ppn),
                   "an order whose block is not aligned in its node", starts)
        ends = starts + sizes
        self.first("pg_flags", flags[starts[1:]], ends[:-1] <= starts[1:],
                   "a block's head inside the block before it", starts[1:])
        offs = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        frames = np.repeat(starts, sizes) + offs
        inner = offs > 0
        owner = np.repeat(starts, sizes)[inner]
        frames = frames[inner]
        alloc_inner = alloc[owner]
        self.first("pg_flags", flags[frames], flags[frames] == np.where(alloc_inner, PG_TAIL, 0),
                   "not PG_TAIL in an allocated block nor 0 in a free one", frames)
        self.first("pg_head", head[frames], head[frames] == np.where(alloc_inner, owner, NIL),
                   "not the block's head (a tail) nor NIL (in a free block)", frames)
        outside = ~start
        outside[frames] = False
        reserved = self.made["reserved"]
        self.first("pg_flags", flags, ~outside | (flags == np.where(reserved, PG_RESERVED, 0)),
                   "not 0 (a frame in no block) nor PG_RESERVED (as the machine was made)")
        self.first("pg_head", head, ~outside | (head == NIL), "not NIL (a frame in no block)")

    def slabs(self) -> None:
        """Each slab's row: its cache, objects and first free object; no other frame names a cache.

        Its cache active, its objects those of its cache's order or minimum order, its first free
        object 0 or an object of the slab."""
        st = self.st
        slab = (st.pg_flags & PG_SLAB) != 0
        cache = st.sl_cache
        active = st.ca[:, CA_ACTIVE][np.maximum(cache, 0)] != 0
        self.first("sl_cache", cache, np.where(slab, (cache != NIL) & active, cache == NIL),
                   "not NIL (no slab) nor an active cache (a slab's)")
        heads = np.flatnonzero(slab)
        ca = st.ca[cache[heads]]
        order, objs = st.pg_order[heads], st.sl_objects[heads]
        fits = ((order == ca[:, CA_ORDER]) & (objs == ca[:, CA_OBJECTS])) | \
            ((order == ca[:, CA_MIN_ORDER]) & (objs == ca[:, CA_MIN_OBJECTS]))
        self.first("sl_objects", objs, fits, "not the objects of a slab of its cache and "
                   "order", heads)
        fl = st.sl_freelist[heads]
        off = np.where((fl > 0) & (fl < self.shadow), fl - (heads << 12) - ca[:, CA_RED_LEFT],
                       -1)
        ok = (fl == 0) | ((off >= 0) & (off % ca[:, CA_SIZE] == 0) &
                          (off // ca[:, CA_SIZE] < objs))
        self.first("sl_freelist", fl, ok, "not 0 nor an object of its slab", heads)
        inuse = st.sl_inuse[heads]
        self.first("sl_freelist", fl, (fl != 0) | (inuse == objs), "but its slab has objects "
                   "not in use (sl_inuse below sl_objects)", heads)
        # each node's count of a cache's slabs and objects (sysfs reads them; a destroy that
        # found slabs left after releasing every one raised with the cache half-destroyed)
        shape = st.node.shape[:2]
        nslabs, nobjs = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        np.add.at(nslabs, (cache[heads], heads // self.ppn), 1)
        np.add.at(nobjs, (cache[heads], heads // self.ppn), objs)
        active = st.ca[:, CA_ACTIVE] != 0
        for col, want, what in ((N_NR_SLABS, nslabs, "slabs of its cache"),
                                (N_TOTAL_OBJECTS, nobjs, "objects its cache's slabs hold")):
            bad = np.argwhere(active[:, None] & (st.node[:, :, col] != want))
            if len(bad):
                c, n = (int(x) for x in bad[0])
                self.fail(f"node[{c}, {n}, {col}]", st.node[c, n, col], f"not {want[c, n]}, "
                          f"the {what} on node {n}")

    def walk(self, word: str, pfn: int, member: Any, back: bool = True) -> list[int]:
        """The frames of the list whose first frame ``pfn`` is word ``word``, each checked.

        Linked through ``pg_next`` (and back through ``pg_prev`` if ``back``), each on no list
        before and passing ``member(frame)`` (None, or what the frame's flags should be)."""
        out: list[int] = []
        prev = NIL
        while pfn != NIL:
            if not 0 <= pfn < self.npages or self.on_list[pfn]:
                self.fail(word, pfn, "not a frame on no list before (a loop, or a frame "
                          "on two lists)")
            why = member(pfn)
            if why:
                self.fail(f"pg_flags[{pfn}]", self.flags[pfn], f"not those of {why} "
                          f"({word} leads there)")
            if back and self.prv[pfn] != prev:
                self.fail(f"pg_prev[{pfn}]", self.prv[pfn], f"not {prev}, the frame before "
                          f"it on its list")
            self.on_list[pfn] = True
            out.append(pfn)
            prev = pfn
            word = f"pg_next[{pfn}]"
            pfn = self.nxt[pfn]
        return out

    def page_lists(self) -> None:
        """The buddy free areas and the pcp lists, every free block on one of them.

        Each block on the list of its kind, order and node, their counts and ends right."""
        st, ppn, order = self.st, self.ppn, self.st.pg_order.tolist()

        def free(kind: int, o: int, node: int) -> Any:
            return lambda p: None if self.flags[p] == kind and order[p] == o and \
                p // ppn == node else f"a free block of order {o} on node {node}"
        for node in range(self.sa.nr_nodes):
            for o in range(NR_ORDERS):
                word = f"buddy[{node}, {o}, B_HEAD]"
                n = len(self.walk(word, int(st.buddy[node, o, B_HEAD]), free(PG_BUDDY, o, node)))
                if st.buddy[node, o, B_COUNT] != n:
                    self.fail(f"buddy[{node}, {o}, B_COUNT]", st.buddy[node, o, B_COUNT],
                              f"not {n}, the blocks on its list")
        for cpu in range(self.sa.nr_cpus):
            for node in range(self.sa.nr_nodes):
                pages = 0
                for o in range(PCP_MAX_ORDER + 1):
                    col = P_LISTS + 2 * o
                    got = self.walk(f"pcp[{cpu}, {node}, {col}]", int(st.pcp[cpu, node, col]),
                                    free(PG_PCP, o, node))
                    if st.pcp[cpu, node, col + 1] != (got[-1] if got else NIL):
                        self.fail(f"pcp[{cpu}, {node}, {col + 1}]", st.pcp[cpu, node, col + 1],
                                  "not the last block of its list")
                    pages += len(got) << o
                if st.pcp[cpu, node, P_COUNT] != pages:
                    self.fail(f"pcp[{cpu}, {node}, P_COUNT]", st.pcp[cpu, node, P_COUNT],
                              f"not {pages}, the pages on its lists")
        free_heads = (st.pg_flags & (PG_BUDDY | PG_PCP)) != 0
        self.first("pg_flags", st.pg_flags, ~free_heads | self.on_list,
                   "a free block on no free list")
        g = self.sa._g              # SLAB_TYPESAFE_BY_RCU slabs waiting for their grace period
        got = self.walk("g[G_RCU_SLABS]", int(g[G_RCU_SLABS]) or NIL, lambda p: None if
                        self.flags[p] == PG_HEAD | PG_RCU else "a slab waiting for its grace "
                        "period", back=False)
        if g[G_NRCU_SLABS] != len(got) or g[G_RCU_SLABS_TAIL] != (got[-1] if got else 0):
            self.fail("g[G_NRCU_SLABS]", g[G_NRCU_SLABS], f"not the {len(got)} slabs of the "
                      f"list of slabs waiting for their grace period, or its tail wrong")
        cpus = st.sl_freelist[got] if got else np.zeros(0, np.int64)
        self.first("sl_freelist", cpus, (cpus >= 0) & (cpus < self.sa.nr_cpus),
                   "not a CPU (of a slab waiting for its grace period)", np.array(got, np.int64))
        waiting = st.pg_flags == PG_HEAD | PG_RCU
        self.first("pg_flags", st.pg_flags, ~waiting | self.on_list,
                   "a slab waiting for its grace period on no list")

    def partial_lists(self) -> None:
        """Each node partial list of each active cache, linked both ways and in order.

        Slabs of the cache on that node, marked and linked both ways, its count and tail right; on
        a sorted cache, in bucket order with the right bucket heads, and nowhere else marked
        sorted."""
        st, ppn, cache = self.st, self.ppn, self.st.sl_cache.tolist()
        inuse, objects = st.sl_inuse.tolist(), st.sl_objects.tolist()
        for c in np.flatnonzero(st.ca[:, CA_ACTIVE]).tolist():
            srt = bool(st.ca[c, CA_PARTIAL_ORDER])
            for node in range(self.sa.nr_nodes):
                need = PG_HEAD | PG_SLAB | PG_NODE_PARTIAL | (PG_SORTED if srt else 0)
                why = f"a slab of cache {c} on node {node}'s partial list"

                def member(p: int, need: int = need, why: str = why, node: int = node) -> Any:
                    f = self.flags[p]
                    return None if f & ~PG_ISOLATED == need and cache[p] == c and \
                        p // ppn == node else why
                row = st.node[c, node]
                got = self.walk(f"node[{c}, {node}, N_PARTIAL_HEAD]",
                                int(row[N_PARTIAL_HEAD]), member)
                for p in got:
                    if inuse[p] >= objects[p]:
                        self.fail(f"sl_inuse[{p}]", inuse[p], f"not below its {objects[p]} "
                                  f"objects: a full slab on a node partial list")
                if row[N_PARTIAL_TAIL] != (got[-1] if got else NIL):
                    self.fail(f"node[{c}, {node}, N_PARTIAL_TAIL]", row[N_PARTIAL_TAIL],
                              f"not {got[-1] if got else NIL}, the last slab of its list")
                if row[N_NR_PARTIAL] != len(got):
                    self.fail(f"node[{c}, {node}, N_NR_PARTIAL]", row[N_NR_PARTIAL],
                              f"not {len(got)}, the slabs on its list")
                if srt:
                    self.buckets(c, node, got)

    def buckets(self, c: int, node: int, slabs: list[int]) -> None:
        """A sorted list's order, before anything follows ``sl_bucket`` or ``pbuckets``.

        ``partialorder._check_order``'s test: each slab filed under the bucket of its free objects,
        the buckets never decreasing, each run's first slab its bucket's head."""
        st = self.st
        have = st.sl_bucket[slabs].tolist()
        heads = [NIL] * NR_PBUCKETS
        for k, s in enumerate(slabs):
            want = _bucket(int(st.sl_objects[s] - st.sl_inuse[s]))
            if have[k] != want or k and want < have[k - 1]:
                self.fail(f"sl_bucket[{s}]", have[k], f"not {want}, the bucket of its free "
                          f"objects, in order on its list")
            if not k or want != have[k - 1]:
                heads[want] = s
        for b in range(NR_PBUCKETS):
            if st.pbuckets[c, node, b] != heads[b]:
                self.fail(f"pbuckets[{c}, {node}, {b}]", st.pbuckets[c, node, b],
                          f"not {heads[b]}, the first slab of its bucket's run")

    def cpu_slabs(self) -> None:
        """Each CPU's slab (6.18): a frozen slab of its cache on no list; none under 7.x.

        Its free list 0 or an object of it, its partial chain slabs of the cache marked so."""
        st, sl = self.st, self.st.sl_cache.tolist()
        gen7 = self.sa._gen7
        parked = st.cpu[..., C_PARKED].reshape(-1)      # (only while a unit compiles)
        self.first("cpu[:, :, C_PARKED]", parked, parked == 0, "not 0: no row is parked")
        for c in np.flatnonzero(st.ca[:, CA_ACTIVE]).tolist():
            for cpu in range(self.sa.nr_cpus):
                row = st.cpu[c, cpu]
                slab, fl = int(row[C_SLAB]), int(row[C_FREELIST])
                if slab != NIL and (gen7 or not 0 <= slab < self.npages or self.frozen[slab]
                                    or self.flags[slab] & ~PG_ISOLATED != PG_HEAD | PG_SLAB |
                                    PG_FROZEN or sl[slab] != c):
                    self.fail(f"cpu[{c}, {cpu}, C_SLAB]", slab, "not NIL nor a frozen slab "
                              "of its cache on no list (and no other CPU's)")
                if slab != NIL:
                    self.frozen[slab] = True
                size, red = st.ca[c, CA_SIZE], st.ca[c, CA_RED_LEFT]
                off = fl - (slab << 12) - red if 0 < fl < self.shadow else -1
                if fl and (slab == NIL or not 0 <= off < st.sl_objects[slab] * size or
                           off % size):
                    self.fail(f"cpu[{c}, {cpu}, C_FREELIST]", fl, "not 0 nor an object of the "
                              "CPU's slab")
                why = f"a slab of cache {c} on a CPU partial list"
                mark = PG_HEAD | PG_SLAB | PG_CPU_PARTIAL
                if gen7 and row[C_PARTIAL] != NIL:
                    self.fail(f"cpu[{c}, {cpu}, C_PARTIAL]", row[C_PARTIAL], "not NIL (7.x)")
                self.walk(f"cpu[{c}, {cpu}, C_PARTIAL]", int(row[C_PARTIAL]), lambda p: None
                          if self.flags[p] & ~PG_ISOLATED == mark and sl[p] == c else why,
                          back=False)

    # ---- sheaves --------------------------------------------------------------------------
    def all_sheaves(self) -> None:
        """Every sheaf reachable: the CPUs', the barns', the user's, the RCU list.

        The CPUs' main, spare and ``rcu_free`` sheaves, the barns' lists (their counts right) and
        partial sheaves, the user's sheaves, the RCU list (its count, tail and callback words
        right)."""
        st, words = self.st, self.words
        for c in np.flatnonzero(st.ca[:, CA_ACTIVE]).tolist():
            cap = int(st.ca[c, CA_SHEAF_CAPACITY])
            for cpu in range(self.sa.nr_cpus):
                for col in (C_MAIN, C_SPARE, C_RCU_FREE):
                    h = int(st.cpu[c, cpu, col])
                    if h and not cap:
                        self.fail(f"cpu[{c}, {cpu}, {_COLS['C_'][col]}]", h, "not 0: its "
                                  "cache has no sheaves")
                    # (no main sheaf: numslab.jit's inlined fast paths took handle 0 for
                    # a sheaf in the arena's frame 0, which a user's view can write)
                    if not h and cap and col == C_MAIN:
                        self.fail(f"cpu[{c}, {cpu}, C_MAIN]", h, "not a sheaf: every CPU "
                                  "of a cache with sheaves has a main sheaf")
                    if h:
                        self.sheaf(f"cpu[{c}, {cpu}, {_COLS['C_'][col]}]", h, c, cap,
                                   waits=col == C_RCU_FREE)
            for node in range(self.sa.nr_nodes):
                for col, count in ((N_BARN_FULL, N_NR_FULL), (N_BARN_EMPTY, N_NR_EMPTY)):
                    word, h, n = f"node[{c}, {node}, {_COLS['N_'][col]}]", \
                        int(st.node[c, node, col]), 0
                    while h:
                        if not cap:
                            self.fail(word, h, "not 0: its cache has no sheaves")
                        self.sheaf(word, h, c, cap)
                        n += 1
                        word, h = f"the link of the sheaf at {h - self.shadow}", \
                            int(words[(h >> 3) + SH_NEXT])
                    if st.node[c, node, count] != n:
                        self.fail(f"node[{c}, {node}, {_COLS['N_'][count]}]",
                                  st.node[c, node, count], f"not {n}, the sheaves on its list")
                h = int(st.barn_partial[c, node])
                if h:
                    if self.sa.kernel != "next":
                        self.fail(f"barn_partial[{c}, {node}]", h, "not 0 (a generation "
                                  "before next)")
                    self.sheaf(f"barn_partial[{c}, {node}]", h, c, cap)
                self.barn(f"barn[{c}, {node}]", int(st.barn[c, node]), cap)
            self.random_seq(c)
            word, h = f"ca[{c}, CA_USER_SHEAVES]", int(st.ca[c, CA_USER_SHEAVES])
            while h:
                self.sheaf(word, h, c, None)
                word, h = f"the link of the sheaf at {h - self.shadow}", \
                    int(words[(h >> 3) + SH_NEXT])
        idle = st.ca[:, CA_ACTIVE] == 0
        self.first("barn", st.barn.ravel(), ~np.repeat(idle, self.sa.nr_nodes)
                   | (st.barn.ravel() == 0), "not 0: no cache is in that slot")
        self.first("random_seq", st.random_seq, ~idle | (st.random_seq == 0),
                   "not 0: no cache is in that slot")
        self.rcu_list()

    def barn(self, word: str, b: int, cap: int) -> None:
        """A cache's barn ``b`` (word ``word``'s value): one for a cache with sheaves, else 0.

        An allocator's own kmalloc object of at least ``BARN_SIZE`` bytes, met once (no sheaf
        nor other barn at it)."""
        if not cap:
            if b:
                self.fail(word, b, "not 0: its cache has no sheaves")
            return
        room = self.kmalloc_room(b) if 0 < b <= self.shadow - 64 and not b & 7 else 0
        if room < BARN_SIZE or b + self.shadow in self.sheaves:
            self.fail(word, b, "not a barn (a kmalloc object the allocator holds for itself, "
                      "met once)")
        self.sheaves.add(b + self.shadow)

    def random_seq(self, c: int) -> None:
        """Cache ``c``'s ``s->random_seq`` object: one for a cache with a sequence, else 0.

        An allocator's own kmalloc object of at least ``4 * CA_RSEQ_LEN`` bytes, met once."""
        n, r = int(self.st.ca[c, CA_RSEQ_LEN]), int(self.st.random_seq[c])
        word = f"random_seq[{c}]"
        if not n:
            if r:
                self.fail(word, r, "not 0: its cache has no random sequence")
            return
        room = self.kmalloc_room(r) if 0 < r <= self.shadow - 64 and not r & 7 else 0
        if room < RANDOM_SEQ_ENTRY * n or r + self.shadow in self.sheaves:
            self.fail(word, r, f"not the cache's random sequence (a kmalloc object of {n} "
                      f"entries the allocator holds for itself, met once)")
        self.sheaves.add(r + self.shadow)

    def rcu_list(self) -> None:
        """The sheaves waiting for their grace period: ``G_NRCU`` of them, each well-formed.

        From ``G_RCU_HEAD`` to ``G_RCU_TAIL``, each with a callback word naming a CPU, of an active
        cache with sheaves."""
        g, words, st = self.sa._g, self.words, self.st
        word, h, last, n = "g[G_RCU_HEAD]", int(g[G_RCU_HEAD]), 0, 0
        while h and n < max(int(g[G_NRCU]), 0):
            self.room(word, h)
            w = h >> 3
            c = int(words[w + SH_CACHE])
            if not 0 <= c < len(st.ca) or not st.ca[c, CA_ACTIVE] or \
                    not st.ca[c, CA_SHEAF_CAPACITY]:
                self.fail(word, h, "not a sheaf of a cache with sheaves")
            info = -1 - int(words[w + SH_CAPACITY])
            if not 0 <= info >> 1 < self.sa.nr_cpus:
                self.fail(f"the callback word of the sheaf at {h - self.shadow}",
                          words[w + SH_CAPACITY], "not a callback on a CPU")
            self.sheaf(word, h, c, int(st.ca[c, CA_SHEAF_CAPACITY]), rcu=True)
            last, n = h, n + 1
            word, h = f"the link of the sheaf at {h - self.shadow}", int(words[w + SH_NEXT])
        if h or n != g[G_NRCU] or g[G_RCU_TAIL] != last:
            self.fail("g[G_NRCU]", g[G_NRCU], f"not the {n} sheaves of the RCU list ending at "
                      f"{last} (g[G_RCU_TAIL] {int(g[G_RCU_TAIL])}, the last link {h})")

    def sheaf(self, word: str, h: int, c: int, cap: int | None, rcu: bool = False,
              waits: bool = False) -> None:
        """The sheaf ``h`` named by ``word``, of cache ``c``, reached once.

        An allocator's own kmalloc object with room for ``cap`` objects (None: its own capacity
        word, a user's sheaf); its cache word ``c``, its size within its capacity, its objects
        those of cache ``c``. The objects of a sheaf waiting for a grace period (``rcu``: on the
        RCU list; ``waits``: a CPU's ``rcu_free``) are kept in :attr:`waiting`."""
        obj = h - self.shadow
        room = self.room(word, h)
        self.sheaves.add(h)
        w, at = h >> 3, f"the sheaf at {obj} ({word} leads there)"
        capw = int(self.words[w + SH_CAPACITY])
        if cap is None:
            cap = capw
        elif capw != cap and not rcu:
            self.fail(f"the capacity word of {at}", capw, f"not {cap}, its cache's")
        size = int(self.words[w + SH_SIZE])
        if not 0 <= cap <= (room - SHEAF_HEADER) // 8:
            self.fail(f"the capacity word of {at}", cap, f"more than its {room}-byte object "
                      f"holds")
        if self.words[w + SH_CACHE] != c:
            self.fail(f"the cache word of {at}", self.words[w + SH_CACHE], f"not {c}")
        if not 0 <= size <= cap:
            self.fail(f"the size word of {at}", size, f"not in 0..{cap}")
        objs = self.words[w + SH_OBJECTS:w + SH_OBJECTS + size]
        ok = (objs > 0) & (objs < self.shadow)
        if ok.all():
            st = self.st
            head = st.heads(objs)
            ca = st.ca[c]
            off = objs - (head << 12) - ca[CA_RED_LEFT]
            ok = ((st.pg_flags[head] & PG_SLAB) != 0) & (st.sl_cache[head] == c) & \
                (off >= 0) & (off % ca[CA_SIZE] == 0) & (off // ca[CA_SIZE] < st.sl_objects[head])
        bad = np.flatnonzero(~ok)
        if len(bad):
            self.fail(f"objects[{int(bad[0])}] of {at}", objs[bad[0]],
                      f"not an object of cache {c}")
        self.entries.append((at, objs.astype(np.int64)))
        if rcu or waits:
            self.waiting.append(objs.astype(np.int64))

    def room(self, word: str, h: int) -> int:
        """The bytes of the kmalloc object of sheaf handle ``h`` (word ``word``'s value).

        After checking that it is one the allocator holds for itself, not met before."""
        obj = h - self.shadow
        room = self.kmalloc_room(obj) if 0 < obj <= self.shadow - 64 and not h & 7 else 0
        if h in self.sheaves:
            self.fail(word, h, "a sheaf met before (a loop, or one sheaf in two places)")
        if not room:
            self.fail(word, h, "not a sheaf (the handle of a kmalloc object the allocator "
                      "holds for itself: its address plus the arena's size)")
        return room

    def kmalloc_room(self, obj: int) -> int:
        """The bytes of ``obj`` if it is a kmalloc object the allocator holds for itself, else 0.

        Live, and marked so in the live bitmap."""
        st = self.st
        live = st.live
        pfn = obj >> 12
        head = int(st.pg_head[pfn]) if self.flags[pfn] & PG_TAIL else pfn
        f = self.flags[head]
        if not (live[(obj + 8) >> 9] >> (((obj + 8) >> 3) & 63)) & 1:
            return 0
        if f & PG_LARGE and not f & PG_SLAB:
            return 4096 << int(st.pg_order[head]) if obj == head << 12 else 0
        if not f & PG_SLAB:
            return 0
        c = int(st.sl_cache[head])
        off = obj - (head << 12) - int(st.ca[c, CA_RED_LEFT])
        size = int(st.ca[c, CA_SIZE])
        if not st.ca[c, CA_FLAGS] & SLAB_KMALLOC or off < 0 or off % size or \
                off // size >= st.sl_objects[head] or \
                not (live[obj >> 9] >> ((obj >> 3) & 63)) & 1:
            return 0
        return int(st.ca[c, CA_OBJECT_SIZE])


def _bucket(free: int) -> int:
    """``partialorder._bucket``: the bucket of a listed slab with ``free`` free objects."""
    if free <= 32:
        return max(free - 1, 0)
    return min(32 + (free >> 6).bit_length(), NR_PBUCKETS - 1)
