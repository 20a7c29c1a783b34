"""``KmemCache``: the Python handle of one slab cache of an allocator.

Its attributes read the allocator's state arrays and are named as the files in
``/sys/kernel/slab/<name>/``."""
from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from ..engine.layout import (CA_ALIGN, CA_CPU_PARTIAL, CA_CPU_PARTIAL_SLABS, CA_DEFRAG_RATIO,
                             CA_FLAGS, CA_HAS_CPU_PARTIAL, CA_INUSE,
                             CA_MIN_PARTIAL, CA_OBJECTS, CA_OBJECT_SIZE, CA_OFFSET, CA_ORDER,
                             CA_RED_LEFT, CA_RSEQ, CA_RSEQ_LEN, CA_SHEAF_CAPACITY, CA_SIZE,
                             C_PARTIAL, C_SLAB, N_NR_PARTIAL, N_NR_SLABS,
                             N_TOTAL_OBJECTS, PG_SLAB)
from ..flags import (GFP_KERNEL, SLAB_CACHE_DMA, SLAB_CONSISTENCY_CHECKS, SLAB_DEBUG_FLAGS,
                    SLAB_POISON, SLAB_RED_ZONE, SLAB_STORE_USER, SLAB_TRACE, SLAB_HWCACHE_ALIGN,
                    SLAB_KMALLOC, SLAB_RECLAIM_ACCOUNT, SLAB_TYPESAFE_BY_RCU, STAT_ITEMS_7_0,
                    STAT_NAMES, STAT_NAMES_6_18, STAT_NAMES_NUMSLAB, gfp_names)
from ..engine.ops import engine_hold, flush_all, settle_pending
from ..engine.stats import (cpu_partial_slabs, live_objects, lost_objects, lost_slabs,
                            partial_counts, partial_list, per_node)
from ..drivers.handles import type_cache_objects
from ..geometry import get_order
from ..errors import (InvalidArgumentError, NotPicklableError, OutOfMemoryError,
                      WrongCacheError)
from .args import check_gfp, fixed, is_integer, size_error
from .kmallocapi import _RCU_LOCK
from .defragapi import MovableCache
from .records import RecordAccess

#: ``count_partial_free_approx`` scans at most this many partial slabs of a node.
MAX_PARTIAL_TO_SCAN = 10000

if TYPE_CHECKING:
    from .allocator import SlabAllocator


class KmemCache(MovableCache, RecordAccess):
    """A slab cache of one allocator; create it with ``SlabAllocator.kmem_cache_create``.

    Geometry attributes (``object_size``, ``slab_size``, ``align``, ``order``,
    ``objs_per_slab``, ``offset``) are fixed; ``min_partial``, ``cpu_partial`` (under 7.x, 0
    only, which changes nothing), ``remote_node_defrag_ratio``, ``partial_order`` and
    ``defrag_used_ratio`` may be set, as their sysfs files may be written (``name``,
    ``ctor`` and ``dtype`` are fixed: a write raises ``FixedAttributeError``); the counters
    (``objects``, ``total_objects``, ``slabs``, ``partial``, ``cpu_slabs``,
    ``objects_partial``) are read live with the kernel's meaning; ``live_objects`` is the
    exact number of allocated objects, ``lost_objects`` numslab's count of those a corrupted
    free list lost (counted in use by the kernel's ``objects``, held by no one).
    """

    # Slots: the call gate reads ``_sa`` and ``_id`` at their fixed offsets.
    __slots__ = ("_sa", "_id", "_name", "_ctor", "_dtype", "_usercopy", "_row", "__weakref__")

    name = fixed("name", "The cache's name (its ``/sys/kernel/slab`` directory).")
    ctor = fixed("ctor", "The constructor, ``ctor(memory, addr)``, or None.")
    dtype = fixed("dtype", "The records' NumPy dtype, or None.")

    useroffset = fixed("useroffset", "The usercopy region's offset in the object (bytes).",
                       read=lambda self: self._usercopy[0])
    usersize = fixed("usersize", "The usercopy region's size (bytes; 0: none): sysfs "
                     "``usersize``, the whole object for a kmalloc cache.",
                     read=lambda self: self.object_size if self.flags & SLAB_KMALLOC
                     else self._usercopy[1])

    def __init__(self, sa: "SlabAllocator", cid: int, name: str,
                 ctor: Callable[[np.ndarray, int], Any] | None,
                 dtype: np.dtype | None = None, usercopy: tuple[int, int] = (0, 0)) -> None:
        self._sa = sa
        self._id = cid
        self._name = name
        self._ctor = ctor
        self._dtype = dtype
        self._usercopy = usercopy
        self._row = sa.state.ca[cid]

    def __len__(self) -> int:
        """Objects of this cache that users hold.

        ``live_objects`` less the allocator's own sheaves, barns and random sequences, which
        only kmalloc caches hold, and less the objects given to ``kfree_rcu`` that wait on its
        list: allocated to the kernel until their grace period ends, as those in an
        ``rcu_free`` sheaf are not, but no user's. Read at one moment: no cache is made or
        destroyed, no grace period ends and no other thread's engine call runs meanwhile (a
        cache made between the reads counted its sequence, barns and sheaves as a user's
        objects, or made the count negative)."""
        sa = self._sa
        with sa._slab_mutex, _RCU_LOCK:         # (destroy's and save's order)
            engine_hold(sa._st, 1)
            try:
                return self._held()
            finally:
                engine_hold(sa._st, 0)

    def _held(self) -> int:
        """``len`` as the state reads now, taking no lock but ``_RCU_LOCK``.

        For ``repr``, which error messages make while holding that lock (``_own``: "a cache of
        another allocator"): taking the allocator's ``_slab_mutex`` after it inverts the order
        of ``kmem_cache_destroy``'s."""
        sa = self._sa
        with _RCU_LOCK:         # the count and the list at one moment: a grace period ending
            n = self.live_objects - self.sheaf_objects - self.barn_objects \
                - self.random_seq_objects                                   # in between
            return n - sa._rcu_listed_objects(self._id) if sa._rcu_pending else n

    def __bool__(self) -> bool:
        """True: a cache is a handle, whether or not users hold its objects (``len`` counts them).

        Without it an empty cache would be false, and ``if cache:`` would mean "holds objects"."""
        return True

    def __reduce__(self) -> tuple:
        """Refuse pickling and copying (``NotPicklableError``): use ``save``/``load``."""
        raise NotPicklableError(f"cache {self.name!r} cannot be pickled or copied: its objects "
                                "are in its allocator's arena, this process's memory (save the "
                                "whole machine with SlabAllocator.save)")

    def __repr__(self) -> str:
        return (f"<KmemCache {self.name!r} object_size={self.object_size} "
                f"slab_size={self.slab_size} order={self.order} objs={self.objs_per_slab} "
                f"slabs={self.slabs} held={self._held()}>")

    def live_addresses(self) -> np.ndarray:
        """Addresses of the objects users hold, int64[n], in address order.

        The allocator's own sheaves, barns and random sequences are left out."""
        st = self._sa.state
        f = st.pg_flags
        return self._live_in(np.flatnonzero(((f & PG_SLAB) != 0) & (st.sl_cache == self._id)))

    def _live_in(self, heads: np.ndarray) -> np.ndarray:
        """The objects users hold in the cache's slabs at page frames ``heads``, int64[n]."""
        settle_pending(self._sa._st)        # (a pending bulk allocation's marks written)
        st = self._sa.state
        if not len(heads):
            return np.zeros(0, np.int64)
        size = self.slab_size
        n = st.sl_objects[heads]
        red = self.red_left_pad
        objs = np.concatenate([(h << 12) + red + np.arange(k) * size
                               for h, k in zip(heads, n)])
        words = st.live.view(np.uint64)[objs >> 9]
        sh = ((objs >> 3) & 63).astype(np.uint64)
        live = (words >> sh) & np.uint64(1)
        own = (words >> np.minimum(sh + np.uint64(1), np.uint64(63))) & np.uint64(1)
        own &= (sh < np.uint64(63)) & np.bool_(size >= 16)
        return objs[(live == 1) & (own == 0)].astype(np.int64)

    # --- geometry ---------------------------------------------------------------------------
    object_size = fixed("object_size", "Bytes of the object the user asked for.",
                        read=lambda self: int(self._row[CA_OBJECT_SIZE]))
    slab_size = fixed("slab_size", "Stride between objects (``s->size``).",
                      read=lambda self: int(self._row[CA_SIZE]))
    size = slab_size
    align = fixed("align", "Object alignment.",
                  read=lambda self: int(self._row[CA_ALIGN]))
    order = fixed("order", "Slab page order.",
                  read=lambda self: int(self._row[CA_ORDER]))
    objs_per_slab = fixed("objs_per_slab", "Objects in a slab of ``order``.",
                          read=lambda self: int(self._row[CA_OBJECTS]))

    @property
    def min_partial(self) -> int:
        """Partial slabs each node keeps before an emptied slab goes back to the pages."""
        return int(self._row[CA_MIN_PARTIAL])

    @min_partial.setter
    def min_partial(self, n: int) -> None:
        # sysfs's min_partial_store: kstrtoul, any unsigned long (0: every emptied slab goes)
        if not is_integer(n) or not 0 <= n < 1 << 63:
            raise InvalidArgumentError(f"{self.name}: min_partial {n!r} is not an unsigned "
                                       f"integer")
        self._row[CA_MIN_PARTIAL] = n

    @property
    def cpu_partial(self) -> int:
        """Objects (approximately) kept on each CPU's partial list (0 under 7.x: it has none)."""
        return int(self._row[CA_CPU_PARTIAL])

    @cpu_partial.setter
    def cpu_partial(self, n: int) -> None:
        # sysfs's cpu_partial_store: kstrtouint; 6.18: nonzero only where the cache has CPU
        # partial lists (-EINVAL for a debug cache), then slub_set_cpu_partial and flush_all;
        # 7.x keeps the file for compatibility: 0 is accepted and changes nothing, any other
        # value is -EINVAL
        row = self._row                 # (a destroyed cache's refusal comes first)
        if not is_integer(n) or not 0 <= n < 1 << 32:
            raise InvalidArgumentError(f"{self.name}: cpu_partial {n!r} is not an unsigned "
                                       f"32-bit integer")
        sa = self._sa
        if n and (sa._gen7 or not row[CA_HAS_CPU_PARTIAL]):
            why = (f"Linux {sa.kernel} has no CPU partial lists" if sa._gen7
                   else "a debug cache has no CPU partial lists")
            raise InvalidArgumentError(f"{self.name}: cpu_partial {n}: {why} (-EINVAL)")
        if sa._gen7:
            return
        with self._locked(f"{self.name}.cpu_partial") as cid:     # (its row: this cache's)
            row[CA_CPU_PARTIAL] = n
            # slub_set_cpu_partial: the slabs allowed, taking them as half full, in unsigned
            # int arithmetic as the kernel's (DIV_ROUND_UP(nr_objects * 2,
            # oo_objects(s->oo)) wraps)
            objs = int(row[CA_OBJECTS])
            row[CA_CPU_PARTIAL_SLABS] = ((2 * int(n) & 0xFFFFFFFF) + objs - 1
                                         & 0xFFFFFFFF) // objs
            before = sa._isolations()
            flush_all(sa._st, cid)
            sa._log_isolated("cpu_partial", self, before)

    sheaf_capacity = fixed("sheaf_capacity", "Objects per per-CPU sheaf (0: the cache has none).",
                           read=lambda self: int(self._row[CA_SHEAF_CAPACITY]))
    offset = fixed("offset", "Byte offset of the free pointer inside a free object.",
                   read=lambda self: int(self._row[CA_OFFSET]))

    @property
    def random_seq(self) -> np.ndarray | None:
        """``s->random_seq`` of CONFIG_SLAB_FREELIST_RANDOM, or None.

        A copy, int64[objs_per_slab]: byte offsets from a slab's first object in the order
        a new slab hands its objects out (from a random start, wrapping round). None when
        the allocator's free lists are not randomised or a slab holds one object.
        """
        n = int(self._row[CA_RSEQ_LEN])
        if not n:
            return None
        off = int(self._row[CA_RSEQ])
        return self._sa.state.rseq.reshape(-1)[off:off + n].copy()

    red_left_pad = fixed("red_left_pad", "Left red zone before each object (``s->red_left_pad``, "
                         "slab_debug Z; 0 otherwise).",
                         read=lambda self: int(self._row[CA_RED_LEFT]))
    inuse = fixed("inuse", "``s->inuse``: the object with its right red zone (``/sys`` "
                  "``object_size`` + red zone).",
                  read=lambda self: int(self._row[CA_INUSE]))

    @property
    def slab_ksize(self) -> int:
        """What ``ksize`` gives for an object of this cache (``slab_ksize``).

        The stride, padding included, except the object size under slab_debug Z or P and ``inuse``
        (the space before the free pointer or the tracks) for RCU or U caches."""
        if self.flags & (SLAB_RED_ZONE | SLAB_POISON):
            return self.object_size
        if self.flags & (SLAB_TYPESAFE_BY_RCU | SLAB_STORE_USER):
            return self.inuse
        return self.slab_size

    debug_flags = fixed("debug_flags", "The slab_debug flags of the cache (``SLAB_*``; 0: none).",
                        read=lambda self: int(self._row[CA_FLAGS]) & SLAB_DEBUG_FLAGS)
    flags = fixed("flags", "SLAB_* flags.",
                  read=lambda self: int(self._row[CA_FLAGS]))
    hwcache_align = fixed("hwcache_align", "1 if the objects are aligned to cache lines "
                          "(SLAB_HWCACHE_ALIGN).",
                          read=lambda self: int(bool(self.flags & SLAB_HWCACHE_ALIGN)))
    destroy_by_rcu = fixed("destroy_by_rcu", "1 for a SLAB_TYPESAFE_BY_RCU cache.",
                           read=lambda self: int(bool(self.flags & SLAB_TYPESAFE_BY_RCU)))
    reclaim_account = fixed("reclaim_account", "1 for a SLAB_RECLAIM_ACCOUNT cache.",
                            read=lambda self: int(bool(self.flags & SLAB_RECLAIM_ACCOUNT)))

    @property
    def remote_node_defrag_ratio(self) -> int:
        """Percent chance to refill from another node's partial list (sysfs scale 0..100)."""
        return int(self._row[CA_DEFRAG_RATIO]) // 10

    @remote_node_defrag_ratio.setter
    def remote_node_defrag_ratio(self, ratio: int) -> None:
        # an integer, as sysfs's kstrtouint takes (50.5 was stored as 505 // 10, "50" raised
        # TypeError)
        if not is_integer(ratio) or not 0 <= ratio <= 100:
            raise InvalidArgumentError(f"{self.name}: remote_node_defrag_ratio {ratio!r} not in "
                                       "0..100")
        self._row[CA_DEFRAG_RATIO] = int(ratio) * 10     # (np.uint8(50) * 10 wrapped to 244)

    # --- live counters ----------------------------------------------------------------------
    def _node(self, col: int) -> np.ndarray:
        return self._sa.state.node[self._id, :, col]

    def _partial(self) -> np.ndarray:
        out = np.zeros((self._sa.nr_nodes, 2), np.int64)
        partial_counts(self._sa._st, self._id, out.ctypes.data)
        return out

    def _cpus(self) -> np.ndarray:
        """Per CPU, int64[nr_cpus, 2]: whether it has a CPU slab (0/1), its CPU partial slabs.

        Zeros under 7.x, which has neither, without compiling the unit that reads them."""
        out = np.zeros((self._sa.nr_cpus, 2), np.int64)
        if not self._sa._gen7:
            cpu_partial_slabs(self._sa._st, self._id, out.ctypes.data)
        return out

    @property
    def total_objects(self) -> int:
        """Objects in all slabs of the cache."""
        return int(self._node(N_TOTAL_OBJECTS).sum())

    @property
    def slabs(self) -> int:
        """Slabs of the cache."""
        return int(self._node(N_NR_SLABS).sum())

    @property
    def partial(self) -> int:
        """Slabs on the node partial lists."""
        return int(self._node(N_NR_PARTIAL).sum())

    @property
    def objects(self) -> int:
        """Objects in use as the kernel counts them: all less the free ones on node partial lists.

        Objects cached by CPUs count as in use."""
        return self.total_objects - int(self._partial()[:, 1].sum())

    def partial_free_approx(self) -> np.ndarray:
        """Free objects on each node's partial list, int64[nr_nodes], as the kernel estimates them.

        As ``count_partial_free_approx`` counts them for ``/proc/slabinfo`` and the exhaustion
        warning: exact up to ``MAX_PARTIAL_TO_SCAN`` (10000) partial slabs; past that, the free
        objects of the first and the last 5000 slabs scaled to the list (``mult_frac``), at most
        the node's objects. (sysfs ``objects`` counts them exactly.)"""
        out = self._partial()[:, 1]
        nr_partial = self._node(N_NR_PARTIAL)
        for node in np.flatnonzero(nr_partial > MAX_PARTIAL_TO_SCAN).tolist():
            rows = self.partial_list(node)
            free = rows[:, 2] - rows[:, 1]
            half = MAX_PARTIAL_TO_SCAN // 2
            x = int(free[:half].sum() + free[-half:].sum())
            n, d = int(nr_partial[node]), MAX_PARTIAL_TO_SCAN
            x = (x // d) * n + (x % d) * n // d                # mult_frac(x, n, d)
            out[node] = min(x, int(self._node(N_TOTAL_OBJECTS)[node]))
        return out

    @property
    def objects_partial(self) -> int:
        """Objects in use on slabs of the node partial lists."""
        return int(self._partial()[:, 0].sum())

    @property
    def cpu_slabs(self) -> int:
        """CPU slabs plus slabs on CPU partial lists (every CPU's).

        sysfs ``cpu_slabs`` (:attr:`sysfs_cpu_slabs`) counts a CPU's list only when the CPU has
        a slab, as the kernel does."""
        return int(self._cpus().sum())

    @property
    def sysfs_cpu_slabs(self) -> int:
        """sysfs ``cpu_slabs``: CPU slabs, and a CPU's partial slabs only if it has a CPU slab."""
        return int(self._cpu_slabs_per_node().sum())

    def _cpu_slabs_per_node(self) -> np.ndarray:
        """sysfs ``cpu_slabs`` per node, int64[nr_nodes], as ``show_slab_objects(SO_CPU)`` counts.

        Each CPU slab on its node and, only for a CPU that has a CPU slab, its CPU partial list's
        ``slabs`` on the node of the list's first slab (all 0 under 7.0)."""
        out = np.zeros(self._sa.nr_nodes, np.int64)
        rows = self._sa.state.cpu[self._id]
        per = self._sa.pages_per_node
        for cpu, (has_slab, slabs) in enumerate(self._cpus().tolist()):
            if not has_slab:
                continue
            out[int(rows[cpu, C_SLAB]) // per] += 1
            if slabs:
                out[int(rows[cpu, C_PARTIAL]) // per] += slabs
        return out

    @property
    def slabs_cpu_partial(self) -> str:
        """``objects(slabs) C0=objects(slabs) ...`` as sysfs prints it.

        Objects are estimated as half of each slab, as the kernel does."""
        per_cpu = self._cpus()[:, 1]
        half = lambda n: n * self.objs_per_slab // 2  # noqa: E731
        out = f"{half(int(per_cpu.sum()))}({int(per_cpu.sum())})"
        out += "".join(f" C{c}={half(int(n))}({int(n)})" for c, n in enumerate(per_cpu) if n)
        return out

    def partial_list(self, node: int = 0) -> np.ndarray:
        """The node's partial list, head first: int64[n, 3] of (slab address, inuse, objects)."""
        nodes = self._sa.nr_nodes               # (-1 was a plain ValueError, after the message
        if not isinstance(node, (int, np.integer)) or isinstance(node, bool) \
                or not 0 <= node < nodes:       # of node 5 had called it valid)
            raise InvalidArgumentError(f"partial_list: node {node!r} is not in 0..{nodes - 1} "
                                       f"(a partial list is one node's)")
        node = int(node)
        n = int(self._node(N_NR_PARTIAL)[node])
        out = np.zeros((n, 3), np.int64)
        partial_list(self._sa._st, self._id, node, n, out.ctypes.data)
        return out

    @property
    def live_objects(self) -> int:
        """Exact number of allocated objects (numslab's own counter), the lost ones left out.

        Those handed out and not freed, less ``lost_objects``. For a kmalloc cache this includes
        the sheaves the allocator kmallocs for itself (see ``sheaf_objects``)."""
        return int(live_objects(self._sa._st, self._id))

    @property
    def lost_objects(self) -> int:
        """Objects lost to a corrupted free list: counted in use, held by no one, never handed out.

        The slabs count them in use (``objects``, as the kernel leaks them), no user holds them and
        nothing hands them out again. Those slab_debug's repair cut off a free list
        (``kmem_cache_validate``'s "Freechain corrupt"), the free objects of slabs isolated after a
        stray write (and the later frees into them), and under 6.18 the free objects behind a cut
        of a CPU's lockless freelist. Every object a slab counts in use is live, lost or held by
        the allocator (a sheaf, a CPU's freelist); where the lost ones are: :meth:`lost_slabs`."""
        return int(lost_objects(self._sa._st, self._id))

    def lost_slabs(self) -> np.ndarray:
        """int64[n, 2]: (slab address, objects lost) for each slab holding lost objects.

        The slabs of the cache holding :attr:`lost_objects`, in address order."""
        out = np.zeros((max(self.slabs, 1), 2), np.int64)
        n = int(lost_slabs(self._sa._st, self._id, len(out), out.ctypes.data))
        return out[:min(n, len(out))].copy()

    def _in_slabs(self, addrs: np.ndarray) -> int:
        """How many of ``addrs`` (int64[n], objects of the arena) lie in this cache's slabs."""
        if not len(addrs):
            return 0
        st = self._sa.state
        return int(np.count_nonzero(st.sl_cache[st.heads(addrs)] == self._id))

    @property
    def sheaf_objects(self) -> int:
        """How many of this cache's live objects are the allocator's own sheaves.

        CPU, barn and prefilled sheaves: a sheaf is a kmalloc object, as in the kernel, and under
        7.0 every cache has them. ``live_objects - sheaf_objects`` is what users hold."""
        return self._in_slabs(self._sa.sheaf_addresses())

    @property
    def barn_objects(self) -> int:
        """How many of this cache's live objects are the allocator's own barns.

        Every cache with sheaves has a ``struct node_barn`` per node, kmalloc'ed (48 bytes:
        kmalloc-64) when it is created and freed when it is destroyed, as in the kernel."""
        return self._in_slabs(self._sa.barn_addresses())

    @property
    def random_seq_objects(self) -> int:
        """How many of this cache's live objects are the allocator's own random sequences.

        CONFIG_SLAB_FREELIST_RANDOM: every cache of two or more objects per slab has its
        ``s->random_seq``, kcalloc'ed (``4 * objs_per_slab`` bytes) when it is created (the
        kmalloc caches' at the end of boot) and freed when it is destroyed, as in the kernel."""
        return self._in_slabs(self._sa.random_seq_addresses())

    def sysfs(self) -> dict[str, str]:
        """The cache's attributes as ``/sys/kernel/slab/<name>/`` files would print them."""
        out = {k: str(getattr(self, k)) for k in (
            "object_size", "slab_size", "align", "order", "objs_per_slab", "min_partial",
            "cpu_partial", "hwcache_align", "destroy_by_rcu", "reclaim_account",
            "remote_node_defrag_ratio", "slabs_cpu_partial")}
        # 6.18's sheaves added it (0 for a cache without); 7.0's cpu_partial & co. print 0
        out["sheaf_capacity"] = str(self.sheaf_capacity)
        out["cpu_slabs"] = per_node(self._cpu_slabs_per_node())
        partial = self._partial()                   # one walk of every node's partial list
        total = self._node(N_TOTAL_OBJECTS)
        out["objects"] = per_node(total - partial[:, 1])
        out["total_objects"] = per_node(total)
        out["slabs"] = per_node(self._node(N_NR_SLABS))
        out["partial"] = per_node(self._node(N_NR_PARTIAL))
        out["objects_partial"] = per_node(partial[:, 0])
        out["ctor"] = getattr(self.ctor, "__name__", "") if self.ctor else ""
        for name, flag in (("sanity_checks", SLAB_CONSISTENCY_CHECKS),
                           ("red_zone", SLAB_RED_ZONE), ("poison", SLAB_POISON),
                           ("store_user", SLAB_STORE_USER), ("trace", SLAB_TRACE)):
            # CONFIG_SLUB_DEBUG's files
            out[name] = str(int(bool(self.flags & flag)))
        out["cache_dma"] = str(int(bool(self.flags & SLAB_CACHE_DMA)))    # CONFIG_ZONE_DMA's
        # CONFIG_HARDENED_USERCOPY's: the usercopy region's size. create_kmalloc_cache
        # whitelists the whole object; kmem_cache_create the region it was given
        out["usersize"] = str(self.usersize)
        out["aliases"] = "0"            # refcount - 1: numslab merges no cache
        out["shrink"] = out["validate"] = ""        # write-only: their show prints nothing
        out.update(self._stat_files())
        return out

    def _stat_files(self) -> dict[str, str]:
        """CONFIG_SLUB_STATS's files, one per item of the generation's ``enum stat_item``.

        As ``show_stat`` prints them: the sum over CPUs, then `` C<cpu>=<count>`` for each CPU
        whose count is not 0."""
        per_cpu = self._sa.state.stats[self._id]
        if self._sa._gen7:
            items = [(name, list(cols)) for name, cols in STAT_ITEMS_7_0]
        else:
            items = [(name, [i]) for i, name in enumerate(STAT_NAMES_6_18)]
        out = {}
        for name, cols in items:
            counts = per_cpu[:, cols].sum(axis=1)
            out[name] = str(int(counts.sum())) + "".join(
                f" C{cpu}={int(n)}" for cpu, n in enumerate(counts) if n)
        return out

    def _out_of_memory(self, cpu: int, node: int, gfp: int) -> str:
        """The warning ``slab_out_of_memory`` prints when an allocation finds no memory.

        For an allocation on ``cpu`` from ``node`` (-1: any) with ``gfp``: the CPU and node, the
        flags as ``%pGg`` names them, the cache's sizes and orders, each node's slabs, objects and
        free objects on its partial list."""
        min_order = get_order(self.slab_size)
        lines = [f"SLUB: Unable to allocate memory on CPU {cpu} (of node "
                 f"{int(self._sa.state.cpu_node[cpu])}) on node {node}, gfp={gfp:#x}"
                 f"({gfp_names(gfp)})",
                 f"  cache: {self.name}, object size: {self.object_size}, buffer size: "
                 f"{self.slab_size}, default order: {self.order}, min order: {min_order}"]
        if min_order > get_order(self.object_size):
            lines.append(f"  {self.name} debugging increased min order, use slab_debug=O "
                         f"to disable.")
        free = self.partial_free_approx()
        slabs, objs = self._node(N_NR_SLABS), self._node(N_TOTAL_OBJECTS)
        lines += [f"  node {n}: slabs: {slabs[n]}, objs: {objs[n]}, free: {free[n]}"
                  for n in range(self._sa.nr_nodes)]
        return "\n".join(lines)

    def total_objects_per_node(self) -> np.ndarray:
        """Objects per node, int64[nr_nodes]."""
        return self._node(N_TOTAL_OBJECTS).copy()

    @property
    def stats(self) -> dict[str, int]:
        """SLUB event counters (``CONFIG_SLUB_STATS``) summed over CPUs.

        The items of the allocator's kernel generation in its order (7.0: 26, 6.18: 43), then
        numslab's own (remote partial hits and the array modes)."""
        tot = [int(v) for v in self._sa.state.stats[self._id].sum(axis=0)]
        if self._sa._gen7:
            out = {name: sum(tot[i] for i in items) for name, items in STAT_ITEMS_7_0}
        else:
            out = dict(zip(STAT_NAMES_6_18, tot))
        base = len(STAT_NAMES) - len(STAT_NAMES_NUMSLAB)
        out.update(zip(STAT_NAMES_NUMSLAB, tot[base:]))
        return out

    def stats_per_cpu(self) -> np.ndarray:
        """Event counters per CPU, int64[nr_cpus, len(STAT_NAMES)] (a copy)."""
        return self._sa.state.stats[self._id].copy()

    # --- Pythonic conveniences -------------------------------------------------------------
    def alloc(self, gfp: int = GFP_KERNEL) -> int:
        """Allocate one object; ``OutOfMemoryError`` (a ``MemoryError``) when memory runs out."""
        addr = self._sa.kmem_cache_alloc(self, gfp)
        if not addr:
            raise OutOfMemoryError(f"{self.name}: out of memory")
        return addr

    def free(self, addr: int) -> None:
        """Free one object of this cache."""
        self._sa.kmem_cache_free(self, addr)

    def shrink(self) -> int:
        """``kmem_cache_shrink`` this cache: 1 if slabs remain, else 0 (the kernel's value).

        The slabs freed are :attr:`shrink_freed`."""
        return self._sa.kmem_cache_shrink(self)

    @property
    def shrink_freed(self) -> int:
        """Slabs the last ``kmem_cache_shrink`` of this cache freed; 0 before any.

        Empty slabs, and those its eviction or compaction emptied (not kept by ``save``)."""
        entry = self._sa._per_cache("_shrink_freed").get(self._id)
        return entry[1] if entry is not None else 0

    def alloc_bulk(self, n: int, gfp: int = GFP_KERNEL) -> np.ndarray:
        """``n`` objects as a new int64 array, ``int64[n]``.

        Returns
        -------
        numpy.ndarray
            int64[n], the objects' addresses.

        Raises
        ------
        OutOfMemoryError
            A ``MemoryError``, taking nothing, if they cannot all be had.
        """
        if type(n) is not int and not isinstance(n, np.integer) or isinstance(n, bool) \
                or n < 0:
            raise size_error(n)(f"{self.name}.alloc_bulk: {n!r} is not a count of objects")
        gfp = check_gfp(gfp, f"{self.name}.alloc_bulk")    # (n == 0 too, as the kernel's API)
        most = self._sa.nr_pages * 4096 // self.slab_size
        if n > most:
            raise OutOfMemoryError(f"{self.name}: cannot allocate {n} objects: the arena holds at "
                              f"most {most}")
        out = np.empty(n, np.int64)
        if n and not self._sa.kmem_cache_alloc_bulk(self, gfp, n, out):
            raise OutOfMemoryError(f"{self.name}: cannot allocate {n} objects")
        return out

    def free_bulk(self, addrs: np.ndarray) -> None:
        """Free every object of ``addrs`` (integers; left untouched: a copy is reordered).

        ``addrs``: integers of any shape, int64[n] once flattened."""
        objs = self._addresses(addrs, "free_bulk").copy()
        self._sa.kmem_cache_free_bulk(self, len(objs), objs)

    @property
    def id(self) -> int:
        """The cache's id, for ``numslab.jit`` functions."""
        return self._id


class _NoAllocator:
    """The allocator of a destroyed cache, which refuses every use.

    A call a thread began before the destroy (its method already looked up) is refused at its first
    use of the allocator."""

    __slots__ = ()

    def __getattr__(self, attr: str) -> Any:
        raise WrongCacheError(f"the cache was destroyed: {attr} is not available")


NO_ALLOCATOR = _NoAllocator()


class DestroyedCache(KmemCache):
    """What a ``KmemCache`` becomes when ``kmem_cache_destroy`` ends it.

    Its name and repr remain; anything else raises ``WrongCacheError`` (its slot may hold another
    cache)."""

    __slots__ = ()
    _KEPT = frozenset({"name", "_name", "__class__", "__repr__", "__dict__", "__slots__",
                       "_sa", "_id"})

    def __getattribute__(self, attr: str) -> Any:
        if attr in DestroyedCache._KEPT or attr.startswith("__"):
            return object.__getattribute__(self, attr)
        raise WrongCacheError(f"cache {object.__getattribute__(self, 'name')!r} was "
                              f"destroyed: {attr} is not available")

    def __setattr__(self, attr: str, value: Any) -> None:
        # (a property's setter would have named the first private field it read)
        if attr in ("_sa", "_id", "__class__"):     # (kmem_cache_destroy's own steps)
            object.__setattr__(self, attr, value)
            return
        raise WrongCacheError(f"cache {object.__getattribute__(self, 'name')!r} was "
                              f"destroyed: {attr} cannot be set")

    def __repr__(self) -> str:
        return f"<KmemCache {object.__getattribute__(self, 'name')!r} destroyed>"

    def __len__(self) -> int:
        raise WrongCacheError(f"cache {object.__getattribute__(self, 'name')!r} was destroyed")


class _Record:
    """What a cache's handle is made from: its name, constructor, dtype and usercopy region.

    One per cache made, so its identity tells a cache from a later one in the same slot
    (``CacheTable.token``)."""

    __slots__ = ("name", "ctor", "dtype", "usercopy")

    def __init__(self, name: str, ctor: Callable[[np.ndarray, int], Any] | None,
                 dtype: np.dtype | None, usercopy: tuple[int, int]) -> None:
        self.name, self.ctor, self.dtype, self.usercopy = name, ctor, dtype, usercopy


class CacheTable:
    """The live caches of one allocator by id, oldest first, and by name.

    It keeps each cache's :class:`_Record` and holds the ``KmemCache`` handles only weakly: a
    handle holds its allocator, so a table of handles would be a reference cycle, and a
    dropped allocator (its arena, its handle slot) would wait for Python's cyclic collector
    instead of going with its last reference. While a user holds a handle, the table gives
    that same object; else it makes a new one from the record, under a lock: two live
    handles of one cache would let one go on naming the slot after the other destroyed it.
    """

    __slots__ = ("_sa", "_records", "_handles", "_ids", "_lock")

    def __init__(self, sa: "SlabAllocator") -> None:
        self._sa = weakref.ref(sa)
        self._records: dict[int, _Record] = {}
        self._handles: weakref.WeakValueDictionary[int, KmemCache] = \
            weakref.WeakValueDictionary()
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, cache: KmemCache) -> None:
        """Enter a new cache (its id and name are free)."""
        cid = cache._id
        self._records[cid] = _Record(cache._name, cache._ctor, cache._dtype, cache._usercopy)
        self._handles[cid] = cache
        self._ids[cache._name] = cid

    def __getitem__(self, cid: int) -> KmemCache:
        cache = self._handles.get(cid)
        if cache is None:
            with self._lock:
                cache = self._handles.get(cid)
                if cache is None:
                    r = self._records[cid]
                    cache = KmemCache(self._sa(), cid, r.name, r.ctor, r.dtype, r.usercopy)
                    self._handles[cid] = cache
        return cache

    def get(self, cid: int, default: Any = None) -> Any:
        """The cache of id ``cid``, or ``default`` (also if another thread destroys it meanwhile).

        A test of the id, then a lookup, raised a bare KeyError."""
        try:
            return self[cid]
        except KeyError:
            return default

    def __delitem__(self, cid: int) -> None:
        del self._ids[self._records.pop(cid).name]
        self._handles.pop(cid, None)

    def __contains__(self, cid: object) -> bool:
        return cid in self._records

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)

    def keys(self) -> list[int]:
        """The ids, oldest cache first."""
        return list(self._records)

    def values(self) -> list[KmemCache]:
        """The caches, oldest first (those another thread destroys meanwhile left out).

        A bare KeyError from ``sa.caches`` and ``save`` otherwise."""
        return [c for cid in list(self._records) if (c := self.get(cid)) is not None]

    @property
    def names(self) -> dict[str, int]:
        """Cache ids by name (the table's own dict: read it, do not change it)."""
        return self._ids

    def by_name(self, name: str) -> KmemCache:
        """The cache called ``name`` (KeyError: none)."""
        return self[self._ids[name]]

    def token(self, cid: int) -> _Record | None:
        """What tells this cache from a later one in slot ``cid`` (None: no cache there)."""
        return self._records.get(cid)


type_cache_objects(KmemCache)     # (inside @njit, numslab.jit takes c.id: refused naming it)
