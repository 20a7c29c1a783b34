"""The facade: ``SlabAllocator``, one simulated machine with the kernel's slab API.

The machine: CPUs, NUMA nodes, an arena of page frames; it validates, converts and calls the
kernels."""
from __future__ import annotations

import logging
import mmap
import os
import re
import threading
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..drivers import gate, handles, prewarm
from ..drivers.calls import bind_lazily
from ..engine import checks, ops
from ..engine.gilguard import wait_for_engine
from ..engine.kmalloc import kmalloc_cache_name, kmalloc_index_table
from ..engine.layout import (C_PARTIAL, C_SLAB, N_NR_SLABS, CA_ACTIVE, CA_ALIGN, CA_CPU_PARTIAL,
                             CA_CPU_PARTIAL_SLABS,
                             CA_CTOR, CA_DEFRAG_RATIO, CA_FLAGS, CA_FP_KEY, CA_HAS_CPU_PARTIAL,
                             CA_INUSE, CA_MIN_OBJECTS, CA_MIN_ORDER, CA_MIN_PARTIAL, CA_NCOLS,
                             CA_OBJECT_SIZE, CA_OBJECTS, CA_OFFSET, CA_ORDER, CA_PARTIAL_ORDER,
                             CA_RECIP, CA_RSEQ_LEN, RANDOM_SEQ_ENTRY,
                             CA_SHEAF_CAPACITY, CA_SIZE, CA_USER_SHEAVES, F_G, G_ERR0, G_ERR1,
                             CA_DEBUG, CA_ORIG, CA_RED_LEFT, CA_TRACK, D_OBJECT_POISON,
                             G_NDEBUG,
                             G_ERR2, G_FAULT_CACHE, G_NPENDING,
                             KERNEL_7_0, KERNELS, NIL, PG_ISOLATED, PG_TAIL, PG_SLAB, RSEQ_MAX,
                             ZERO_SIZE_PTR, SlabState, new_state, view)
from ..engine.pages import init_buddy
from ..engine.sheaves import init_barns, init_percpu_sheaves
from ..errors import (AddressTypeError, BadAddressError, CacheLeakError,
                      InvalidArgumentError as BadArg,
                      InvalidSizeError, NotPicklableError, OutOfMemoryError,
                      SizeTypeError, SlabCorruptionError, WrongTypeError)
from ..flags import (GFP_KERNEL, SLAB_DEBUG_FLAGS, SLAB_KMALLOC, SLAB_NO_SHEAVES,
                     SLAB_TYPESAFE_BY_RCU, SLAB_VALID_FLAGS, __GFP_NOWARN, __GFP_THISNODE,
                     __GFP_ZERO)
from ..geometry import (KMALLOC_MAX_CACHE_SIZE, KMALLOC_MAX_SIZE, KMALLOC_SIZES,
                        MAX_PAGE_ORDER, PAGE_SIZE, boot_orders, calculate_geometry,
                        calculate_sheaf_capacity, get_order, kmalloc_size_roundup)
from . import persist, threads
from .args import (cache_op, as_int, check_bool, check_cache_name, check_dtype, check_gfp,
                   check_max_caches, check_usercopy, fixed, is_integer, public_caller)
from .batchapi import BatchAPI
from .cache import NO_ALLOCATOR, CacheTable, DestroyedCache, KmemCache
from .debugapi import DebugAPI
from .defragapi import DefragAPI, check_partial_order
from .evictapi import EvictAPI
from .pagesapi import PagesAPI
from .hardening import MIN_OWN_KMALLOC, cache_random_seq_create, init_cache_random_seq
from .raising import RaiseAPI
from .sheafapi import SheafAPI
from .kmallocapi import _RCU_LOCK, KmallocAPI
from ..engine.stats import SLABINFO_HEADER, slabinfo_line

if TYPE_CHECKING:
    from ..drivers.handles import SlabHandle

log = logging.getLogger("numslab")
log.addHandler(logging.NullHandler())     # a library: the application decides what is shown
# Module-level aliases: a ``__GFP_*`` name inside a class body would be name-mangled.
_NOWARN, _THISNODE, _ZERO = __GFP_NOWARN, __GFP_THISNODE, __GFP_ZERO
_KMALLOC_INDEX = kmalloc_index_table()
DEFAULT_KERNEL = "7.0"      #: the SLUB generation of a SlabAllocator made without ``kernel``
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(memory: int | str) -> int:
    """Bytes from an int or a string such as ``"256M"``, ``"1G"``, ``"64KiB"``."""
    if is_integer(memory):
        return int(memory)
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B)?\s*", str(memory), re.IGNORECASE)
    if not m:
        raise InvalidSizeError(f"cannot read a memory size from {memory!r}")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


class SlabAllocator(BatchAPI, SheafAPI, KmallocAPI, DebugAPI, RaiseAPI, DefragAPI, EvictAPI,
                    PagesAPI):
    """A simulated machine running SLUB: CPUs, NUMA nodes, page frames and slab caches.

    Parameters
    ----------
    nr_cpus : int, optional
        Simulated CPUs (default ``os.cpu_count()``); drives the geometry as in the kernel.
    nr_nodes : int
        NUMA nodes; CPUs are spread over them in contiguous blocks.
    memory : int or str
        Memory per node, e.g. ``"256M"`` (rounded up to 4 MiB). The arena is an anonymous
        mapping, so untouched pages cost no RAM.
    max_caches : int
        Room for caches (the kmalloc caches take 13).
    seed : int
        Seed of the allocator's own random generator (remote-node draws).
    freelist_hardened : bool
        CONFIG_SLAB_FREELIST_HARDENED (on, as distribution kernels build it): every free
        pointer is stored as ``ptr ^ s->random ^ swab(its address)`` with a random per cache.
    freelist_random : bool
        CONFIG_SLAB_FREELIST_RANDOM (on, as distribution kernels build it): each new slab
        hands out its objects in the order of a per-cache random permutation, from a random
        start (``facade/hardening.py``; the draws come from ``seed``).
    kernel : {"7.0", "7.1", "7.3", "next", "6.18"}
        The SLUB generation (``numslab.KERNELS``). ``"7.0"`` (the default): per-CPU sheaves
        for every cache, of ``calculate_sheaf_capacity`` objects; no CPU slab or CPU partial
        list. ``"7.1"``: 7.0 with the two rules 7.1 changed (GFP_ATOMIC and GFP_NOWAIT refill
        an empty sheaf; a shrink empties every barn first). ``"7.3"``: the mm tree on
        7.3-rc5 (any request refills a sheaf; partial slabs drained in list order and given
        back to the tail; a multi-node bulk free's remote objects freed at once, after the
        local ones; oversize prefilled sheaves counted). ``"next"``: 7.3 with the slab
        tree's later change numslab follows (a prefilled sheaf is refilled from the barn,
        which keeps a partial sheaf: "mm/slub: refill prefilled sheaves from the barn").
        ``"6.18"``: sheaves only where ``sheaf_capacity`` asks, in front of the CPU slab layer
        (``kmem_cache_cpu``).
    slab_debug : str, optional
        The kernel's ``slab_debug`` boot parameter: ``"FZPU"`` for every cache (the kmalloc
        caches too), ``"FZ,kmalloc-*"`` for chosen caches, ``""`` for F, Z, P and U
        everywhere (``debugapi.parse_slab_debug``). An allocator with a debug cache runs
        its calls through the Python methods (no C gate).
    partial_order : {"kernel", "sorted"}
        Default order of the node partial lists (``KmemCache.partial_order``).
    pending_takes : bool
        numslab's pending bulk takes (on; in no kernel): a bulk allocation of at most 4096
        objects taken whole from a CPU's main sheaf (or begun by the main and ended by the
        spare) writes no mark until another call needs it, and a free of exactly that batch
        puts it back with one compare; any other bulk allocation of at most 4096 objects keeps
        a checked record, whose free skips the batch check (ARCHITECTURE.md, field ``pend``).
        Off, the take marks its objects at once and no record is kept: every call returns the
        same and leaves the same state (``tests/test_fuzz_pending.py``); for tests and
        benchmarks.
    slab_min_order, slab_max_order, slab_min_objects : int, optional
        The kernel's boot parameters of the slab order (``calculate_order``; defaults 0, 3
        and the CPUs' own), as ``geometry.boot_orders`` applies them (``slab_orders``).

    Attributes
    ----------
    memory : numpy.ndarray
        uint8[nr_nodes * memory], the arena. Object ``addr`` is ``memory[addr:addr+size]``.
    state : SlabState
        Named views of every state array (see ARCHITECTURE.md).
    kernel : str
        The generation modelled: ``"7.0"``, ``"7.1"``, ``"7.3"``, ``"next"`` or ``"6.18"``.

    These, and ``nr_cpus``, ``nr_nodes``, ``pages_per_node``, ``nr_pages``,
    ``freelist_hardened``, ``freelist_random``, ``pending_takes``, ``slab_orders`` and
    ``kmalloc_caches``, are fixed when the machine is made: a write raises
    ``FixedAttributeError``.
    """

    kernel = fixed("kernel", "The generation modelled: ``\"7.0\"``, ``\"7.1\"``, "
                   "``\"next\"`` or ``\"6.18\"``.")
    nr_cpus = fixed("nr_cpus", "Simulated CPUs.")
    nr_nodes = fixed("nr_nodes", "NUMA nodes.")
    pages_per_node = fixed("pages_per_node", "4 KiB page frames of each node.")
    nr_pages = fixed("nr_pages", "4 KiB page frames of the machine.")
    memory = fixed("memory", "uint8[nr_pages * 4096], the arena.")
    state = fixed("state", "Named views of every state array (``SlabState``).")
    freelist_hardened = fixed("freelist_hardened", "CONFIG_SLAB_FREELIST_HARDENED.")
    freelist_random = fixed("freelist_random", "CONFIG_SLAB_FREELIST_RANDOM.")
    pending_takes = fixed("pending_takes", "numslab's pending bulk takes (field ``pend``).")
    slab_orders = fixed("slab_orders", "The slab order's boot parameters (``SlabOrders``).")
    kmalloc_caches = fixed("kmalloc_caches", "The kmalloc caches, smallest first (a new list).",
                           read=lambda sa: [sa._caches[cid] for cid in sa._kmalloc_ids])

    def __init__(self, nr_cpus: int | None = None, nr_nodes: int = 1, memory: int | str = "256M",
                 *, max_caches: int = 256, seed: int = 0, kernel: str = DEFAULT_KERNEL,
                 freelist_hardened: bool = True, freelist_random: bool = True,
                 slab_debug: str | None = None, partial_order: str = "kernel",
                 slab_min_order: int | None = None, slab_max_order: int | None = None,
                 slab_min_objects: int | None = None, pending_takes: bool = True) -> None:
        nr_cpus = (os.cpu_count() or 1) if nr_cpus is None else nr_cpus
        nr_cpus, nr_nodes, max_caches = as_int(nr_cpus), as_int(nr_nodes), as_int(max_caches)
        if not (isinstance(nr_cpus, int) and not isinstance(nr_cpus, bool)    # (True: a
                and 1 <= nr_cpus <= 4096):                                  # TypeError)
            raise BadArg(f"nr_cpus {nr_cpus!r} is not in 1..4096")
        if not (isinstance(nr_nodes, int) and not isinstance(nr_nodes, bool)
                and 1 <= nr_nodes <= min(nr_cpus, 64)):
            raise BadArg(f"nr_nodes {nr_nodes!r} must be in 1..min(nr_cpus, 64)")
        if not isinstance(kernel, str) or kernel not in KERNELS:    # ({}: unhashable)
            raise BadArg(f"kernel {kernel!r} is not one of {sorted(KERNELS)}"   # (7.0: a str)
                         f"{'' if isinstance(kernel, str) else ', each a str'}")
        check_max_caches(max_caches, len(KMALLOC_SIZES))
        self._kernel = kernel
        self._gen7 = KERNELS[kernel] >= KERNEL_7_0     # the 7.x rules (7.0 on)
        self._debug_init(slab_debug)
        self.partial_order = check_partial_order(partial_order, "SlabAllocator")
        try:
            self._slab_orders = boot_orders(*map(as_int, (slab_min_order, slab_max_order,
                                                          slab_min_objects)))
        except (InvalidSizeError, WrongTypeError) as e:
            raise type(e)(f"SlabAllocator: {e}") from None
        self._freelist_hardened = check_bool(freelist_hardened, "SlabAllocator: freelist_hardened")
        self._freelist_random = check_bool(freelist_random, "SlabAllocator: freelist_random")
        self._pending_takes = check_bool(pending_takes, "SlabAllocator: pending_takes")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise BadArg(f"seed {seed!r} is not an integer")
        self._seed = int(seed) % (1 << 64)      # the generators take unsigned seeds
        try:
            per_node = parse_size(memory)
        except InvalidSizeError as e:                   # (the call and argument named)
            raise InvalidSizeError(f"SlabAllocator: memory: {e}") from None
        block = PAGE_SIZE << MAX_PAGE_ORDER
        if per_node <= 0:
            raise InvalidSizeError(f"memory per node must be positive, not {memory!r}")
        if per_node % block:
            warnings.warn(f"SlabAllocator: memory {memory!r} per node rounded up to "
                          f"{-(-per_node // block) * block >> 20} MiB (whole "
                          f"{block >> 20} MiB blocks of the largest page order)", stacklevel=2)
        per_node = -(-per_node // block) * block
        self._nr_cpus, self._nr_nodes = nr_cpus, nr_nodes
        self._pages_per_node = per_node // PAGE_SIZE
        self._nr_pages = self.pages_per_node * nr_nodes
        try:
            arena = self.nr_pages * PAGE_SIZE   # and the sheaves' shadow half (sheaves.py)
            self._mmap = mmap.mmap(-1, 2 * arena, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                                   | getattr(mmap, "MAP_NORESERVE", 0))
            self._mem = np.frombuffer(self._mmap, dtype=np.int64)
            self._memory = self._mem.view(np.uint8)[:arena]
            self._buf = new_state(self.nr_pages, nr_nodes, nr_cpus, max_caches, self._seed,
                                  self.memory.ctypes.data, self.memory.size, KERNELS[kernel])
        except (OSError, MemoryError, OverflowError) as e:     # (past ssize_t: Overflow)
            raise InvalidSizeError(f"SlabAllocator: memory {memory!r} x {nr_nodes} node(s): "
                                   f"cannot reserve {self.nr_pages * PAGE_SIZE:,} bytes of "
                                   f"arena and its page arrays here ({e!r})") from None
        self._st = self._buf.ctypes.data          #: the state's address: units take it
        threads.register(self)
        self._state = SlabState(self._buf)
        if not self._debug_on:                  # an empty cache: a second compiler
            prewarm.boot(kernel)
        init_buddy(self._st, 1)
        self._g = view(self._buf, F_G)
        self._handle = handles.register(self._st, self.memory, self._describe)
        weakref.finalize(self, handles.unregister, self._handle)
        self._caches = CacheTable(self)
        self._next_thread_cpu = threads.RoundRobin(self.nr_cpus)
        #: Held from an allocation on a cache with a constructor until its new slabs are
        #: constructed (no thread is handed an unconstructed object); the slab a raising
        #: constructor left part-way stays pending with its resume point (``PENDING_SHIFT``).
        self._ctor_lock = threading.RLock()
        #: Constructors running (nested: a constructor may allocate) and the objects handed
        #: out meanwhile (``BatchAPI._construct``, ``_lost_to_ctor``).
        self._ctor_depth, self._ctor_runs, self._ctor_out = 0, 0, set[int]()
        self._ctor_slabs = 0            # slabs constructed (a __GFP_ZERO call's warning)
        self._inobj_building = set[int]()      # caches constructing an in-object-pointer slab
        self._building: dict[int, list] = {}   # slabs a Python constructor loop is on
        self._constructing: dict[int, bool] = {}   # objects it builds: handed out meanwhile?
        #: ``slab_mutex``: cache creation and destruction, one at a time.
        self._slab_mutex = threading.RLock()
        self._tls = threads.ThreadCpu(self._next_thread_cpu)
        for attr, u, array in (("_k_alloc", ops.kmem_cache_alloc_node, False),
                               ("_k_free", ops.kmem_cache_free, False),
                               ("_k_kmalloc", ops.kmalloc, False), ("_k_kfree", ops.kfree, False),
                               ("_k_alloc_bulk", ops.alloc_bulk, True),
                               ("_k_free_bulk", ops.free_bulk, True),
                               ("_k_alloc_array", ops.kmem_cache_alloc_array, True)):
            bind_lazily(self, attr, u, array)
        self._kmalloc_ids = [self.kmem_cache_create(kmalloc_cache_name(s), s,
                                                    flags=SLAB_KMALLOC)._id
                             for s in KMALLOC_SIZES]
        self.state.kmalloc[:] = self._kmalloc_ids
        # bootstrap_kmalloc_sheaves: kmalloc works now. In the order of kmalloc_caches[] (96
        # and 192 at indices 1 and 2, then 8 .. 8k), each cache's barns, then its sheaves
        # (bootstrap_cache_sheaves); the barns of those before kmalloc-64 come from its slabs
        bootstrap = [self._kmalloc_ids[KMALLOC_SIZES.index(s)] for s in (96, 192)]
        in_order = bootstrap + [c for c in self._kmalloc_ids if c not in bootstrap]
        for cid in in_order:
            if self.state.ca[cid, CA_SHEAF_CAPACITY] and (
                    init_barns(self._st, cid, self._cpu()) or
                    init_percpu_sheaves(self._st, cid, self._cpu(), 1)):
                raise OutOfMemoryError("SlabAllocator: no memory for the kmalloc caches' sheaves")
        # init_freelist_randomization: the caches made while slab_state < UP get their
        # s->random_seq now, in slab_caches' order (list_add: the last made first, 8k .. 8, 192,
        # 96); a kcalloc that fails leaves its cache unrandomised (its return is not checked)
        for cid in reversed(in_order):
            if cache_random_seq_create(self, cid):
                self.state.ca[cid, CA_RSEQ_LEN] = 0
        self._gate = None
        if not self._debug_on:
            gate.install(self, SlabAllocator, KmemCache)    # hot calls through the C gate

    # ---- CPUs ---------------------------------------------------------------------------------
    def _cpu(self) -> int:
        """The simulated CPU of the calling thread.

        Threads are bound round-robin on first use; the thread that made the allocator gets CPU 0.
        """
        return self._tls.cpu

    def set_cpu(self, cpu: int) -> None:
        """Bind the calling thread to simulated CPU ``cpu``."""
        self._tls.cpu = self._check_cpu(cpu)
        if self._gate is not None:
            self._gate.forget_thread()

    def _check_cpu(self, cpu: Any) -> int:
        """``cpu`` as an int after checking it is one of this machine's CPUs.

        None: the calling thread's; the error names the public call that was given it."""
        if cpu is None:
            return self._cpu()
        if not isinstance(cpu, (int, np.integer)) or isinstance(cpu, bool) \
                or not 0 <= cpu < self.nr_cpus:
            raise BadArg(f"{public_caller()}: cpu {cpu!r} is not in 0..{self.nr_cpus - 1}")
        return int(cpu)

    @property
    def handle(self) -> "SlabHandle":
        """What ``numslab.jit`` functions take to reach this allocator from @njit code."""
        return handles.SlabHandle(self._handle, self)

    def populate(self) -> None:
        """Touch every page of the arena once, so that later first uses do not pay a page fault.

        The operating system's page fault; a kernel's memory is already present. Benchmarks call
        it; ordinary use does not need it."""
        self.memory[::PAGE_SIZE] = self.memory[::PAGE_SIZE]

    def page_to_nid(self, addr: int) -> int:
        """NUMA node of the page frame holding byte address ``addr`` (``page_to_nid``)."""
        if not isinstance(addr, (int, np.integer)) or not 0 <= addr < self.nr_pages * PAGE_SIZE:
            raise BadAddressError(f"page_to_nid: {addr!r} is not an address of the arena")
        return int(addr) // PAGE_SIZE // self.pages_per_node

    def cpu_to_node(self, cpu: int) -> int:
        """NUMA node of simulated CPU ``cpu``."""
        return int(self.state.cpu_node[self._check_cpu(cpu)])

    # ---- caches -------------------------------------------------------------------------------
    def kmem_cache_create(self, name: str, size: int, align: int = 0, flags: int = 0,
                          ctor: Callable[[np.ndarray, int], Any] | None = None,
                          freeptr_offset: int | None = None, sheaf_capacity: int = 0,
                          dtype: Any = None, partial_order: str | None = None,
                          useroffset: int = 0, usersize: int = 0, **kwargs: Any) -> KmemCache:
        """Create a slab cache with SLUB's geometry for this machine.

        Parameters
        ----------
        name : str
            Unique cache name.
        size : int
            Object size in bytes (1 to 4 MiB).
        align : int
            Required alignment (0 or a power of two).
        flags : int
            SLAB_* flags.
        ctor : callable, optional
            ``ctor(memory, addr)``, run once on every object when its slab is created; a
            Numba ``@njit`` ctor runs from jitted code.
        freeptr_offset : int, optional
            Free-pointer offset for SLAB_TYPESAFE_BY_RCU caches (kernel 6.13+) and, under
            7.x, caches with a constructor (the word must be one the ctor's state can lose
            while the object is free; without it the pointer goes after the object): 8-aligned
            and below ``size``, as ``create_cache`` checks, so the word may reach into the
            slot's padding; with SLAB_RED_ZONE (and no poisoning) it must end inside the
            object, since past it lies the right red zone (the kernel takes it, then reports
            its own free pointer as the zone overwritten and restores the zone over it).
        sheaf_capacity : int
            Per-CPU sheaves of this many objects. Under ``kernel="6.18"`` only caches asking
            for them have sheaves (0: none); under ``"7.0"`` every cache but a debug,
            SLAB_NOLEAKTRACE or SLAB_NO_OBJ_EXT (bootstrap) one has them and this is the
            minimum capacity.
        partial_order : {"kernel", "sorted"}, optional
            Order of its node partial lists (default: the allocator's).
        dtype : numpy.dtype, optional
            A record type; ``size`` may then be omitted (pass 0) and is ``dtype.itemsize``.
        useroffset, usersize : int
            The usercopy region (``kmem_cache_create_usercopy``): sysfs ``usersize``.
        """
        with self._slab_mutex:         # slab_mutex: a name and a slot, taken once
            wait_for_engine()           # not while another thread's compile parks the rows
            if kwargs:
                raise TypeError(f"kmem_cache_create() got unexpected arguments {sorted(kwargs)}")
            check_cache_name(name, self._caches.names)
            size, align, flags, sheaf_capacity, freeptr_offset = map(
                as_int, (size, align, flags, sheaf_capacity, freeptr_offset))
            for what, v in (("size", size), ("align", align), ("sheaf_capacity", sheaf_capacity),
                            ("freeptr_offset", 0 if freeptr_offset is None else freeptr_offset)):
                if type(v) is not int:          # (True was a size of 1; 64.0 "not in 1..")
                    raise SizeTypeError(f"kmem_cache_create({name}): {what} {v!r} is not an int")
            if not isinstance(flags, int) or flags & ~SLAB_VALID_FLAGS:
                raise BadArg(f"kmem_cache_create({name}): unknown flags {flags!r:}")
            flags = self._slab_debug_of(name, flags)
            if dtype is not None:
                dtype, size = check_dtype(dtype, size, f"kmem_cache_create({name})")
            if not isinstance(sheaf_capacity, int) or not 0 <= sheaf_capacity <= 4096:
                raise InvalidSizeError(f"kmem_cache_create({name}): sheaf_capacity "
                                       f"{sheaf_capacity!r} is not in 0..4096")
            order = check_partial_order(self.partial_order if partial_order is None
                                        else partial_order, f"kmem_cache_create({name})")
            if ctor is not None and not callable(ctor):
                raise BadArg(f"kmem_cache_create({name}): ctor {ctor!r} is not callable")
            try:
                geo = calculate_geometry(size, align, flags, ctor is not None, self.nr_cpus,
                                         freeptr_offset, self._gen7, self._slab_orders)
                if self.freelist_random and geo.objs_per_slab > RSEQ_MAX:
                    raise InvalidSizeError(
                        f"slabs of order {geo.order} hold {geo.objs_per_slab} objects, past "
                        f"the {RSEQ_MAX} of numslab's random sequences (freelist_random=False "
                        f"lifts it)")
            except InvalidSizeError as e:       # the call and the cache named, as above
                raise InvalidSizeError(f"kmem_cache_create({name}): {e}") from None
            usercopy = check_usercopy(f"kmem_cache_create({name})", size, useroffset, usersize)
            debug = flags & SLAB_DEBUG_FLAGS
            if debug or (self._gen7 and flags & SLAB_NO_SHEAVES):    # calculate_sheaf_capacity: 0
                sheaf_capacity = 0
            elif self._gen7:
                sheaf_capacity = calculate_sheaf_capacity(geo.slab_size, sheaf_capacity)
            free = np.flatnonzero((ca := self.state.ca)[:, CA_ACTIVE] == 0)
            if not len(free):
                raise OutOfMemoryError(f"kmem_cache_create({name}): all {len(ca)} cache "
                                       f"slots in use")
            cid = int(free[0])
            row = np.zeros(CA_NCOLS, np.int64)
            row[[CA_ACTIVE, CA_SIZE, CA_OBJECT_SIZE, CA_INUSE, CA_OFFSET, CA_ALIGN, CA_FLAGS,
                 CA_ORDER, CA_OBJECTS, CA_MIN_ORDER, CA_MIN_OBJECTS, CA_MIN_PARTIAL,
                 CA_CPU_PARTIAL, CA_CPU_PARTIAL_SLABS, CA_HAS_CPU_PARTIAL, CA_DEFRAG_RATIO,
                 CA_CTOR, CA_SHEAF_CAPACITY, CA_RECIP]] = [
                1, geo.slab_size, geo.object_size, geo.inuse, geo.offset, geo.align, flags,
                geo.order, geo.objs_per_slab, geo.min_order, geo.min_objects, geo.min_partial,
                0 if self._gen7 else geo.cpu_partial, 0 if self._gen7 else geo.cpu_partial_slabs,
                int(not self._gen7 and not flags & SLAB_DEBUG_FLAGS), 1000,
                int(ctor is not None), sheaf_capacity, -(-(1 << 32) // geo.slab_size)]
            if debug:
                row[[CA_DEBUG, CA_RED_LEFT, CA_TRACK, CA_ORIG]] = [
                    flags & (SLAB_DEBUG_FLAGS | SLAB_KMALLOC)
                    | (D_OBJECT_POISON if geo.object_poison else 0),
                    geo.red_left_pad, geo.track_offset, geo.orig_size_offset]
            self.state.node[cid] = 0
            self.state.node[cid, :, 0:2] = NIL
            self.state.barn_partial[cid] = 0
            self.state.barn[cid] = 0
            self.state.random_seq[cid] = 0
            self.state.cpu[cid] = 0
            self.state.cpu[cid, :, C_SLAB] = NIL
            self.state.cpu[cid, :, C_PARTIAL] = NIL
            self.state.stats[cid] = 0
            ncaches = len(self._caches)        # live caches: part of the seeds
            if self.freelist_hardened:         # s->random: get_random_long(), seeded here
                row[CA_FP_KEY] = int(np.random.default_rng([self._seed, cid, ncaches])
                                     .integers(1, 1 << 62))
            if self.freelist_random:           # s->random_seq: init_cache_random_seq
                init_cache_random_seq(self.state.rseq, row, cid, geo.objs_per_slab, geo.slab_size,
                                      [self._seed, cid, ncaches, 1])
            row[CA_PARTIAL_ORDER] = order == "sorted"
            opening = hasattr(self, "_kmalloc_ids")     # slab_state >= UP (see __init__)
            # CA_ACTIVE is the cache's state mask (live.py): bit 0 active, bit 1 the held
            # bitmap kept (every cache with sheaves but slab_debug's: what it guards is a
            # sheaf's entries; a cache without them keeps the takes' per-object tests, and its
            # slab layer does not pay for the bitmap: 6.18's default cache's bulk 16 was 25%
            # slower with it), bit 2 pending bulk takes (those, unless pending_takes is off)
            mask = 1 if debug or not sheaf_capacity else 3 | (4 if self._pending_takes else 0)
            row[CA_ACTIVE] = 0 if opening else mask     # (live once its sheaves are:
            ca[cid] = row                   # numslab.jit's fast paths took a missing main
            #                                 sheaf for frame 0)
            cache = KmemCache(self, cid, name, ctor, dtype, usercopy)
            self._caches.add(cache)
            if debug:
                self._debug_cache_created(cid)
            if opening:
                self._open_cache(cid, name, sheaf_capacity)
                ca[cid, CA_ACTIVE] = mask
            return cache

    def _open_cache(self, cid: int, name: str, sheaf_capacity: int) -> None:
        """What ``do_kmem_cache_create`` kmallocs for a new cache, in its order.

        ``init_cache_random_seq`` (``s->random_seq``), then ``init_kmem_cache_nodes``' barns,
        then ``init_percpu_sheaves``; on a failure ``__kmem_cache_release`` (the sequence
        first) and ``OutOfMemoryError``, the slot and the name free again."""
        what = None
        if cache_random_seq_create(self, cid):
            n = int(self.state.ca[cid, CA_RSEQ_LEN])
            km = kmalloc_cache_name(kmalloc_size_roundup(max(RANDOM_SEQ_ENTRY * n,
                                                             MIN_OWN_KMALLOC)))
            what = (f"its random free-list sequence (s->random_seq: kcalloc of {n} x "
                    f"{RANDOM_SEQ_ENTRY} bytes, {km})")
        elif sheaf_capacity and init_barns(self._st, cid, self._cpu()) < 0:
            what = "its node barns (struct node_barn, kmalloc-64)"
        elif sheaf_capacity and init_percpu_sheaves(self._st, cid, self._cpu(), 0) < 0:
            what = "the per-CPU sheaves"
        if what is None:
            return
        self._cache_release(cid, False)
        if self.state.ca[cid, CA_DEBUG]:       # as a destroy: a debug cache no longer
            self._g[G_NDEBUG] -= 1             # (load refused the machine's saved file; the
            self._trace_ids.discard(cid)       # slot's next cache was traced)
        self.state.ca[cid] = 0
        del self._caches[cid]
        raise OutOfMemoryError(f"kmem_cache_create({name}): no memory for {what}; no cache "
                               f"made")

    def save(self, path: str) -> None:
        """Write the whole machine to ``path`` (``SlabAllocator.load`` restores it exactly)."""
        persist.save(self, path)

    @classmethod
    def load(cls, path: str) -> "SlabAllocator":
        """The machine ``save`` wrote to ``path``, exactly (with a new handle)."""
        return persist.load(cls, path)

    def __reduce__(self) -> tuple:
        """Refuse pickling and copying (``NotPicklableError``): use ``save``/``load``."""
        raise NotPicklableError(f"{self!r} cannot be pickled or copied: its arena is this "
                                "process's memory; store the machine with sa.save(path) and "
                                "numslab.SlabAllocator.load(path)")

    def __repr__(self) -> str:
        hardening = "+".join(n for n, on in (("hardened", self.freelist_hardened),
                                              ("random", self.freelist_random)) if on)
        return (f"<SlabAllocator kernel={self.kernel} cpus={self.nr_cpus} "
                f"nodes={self.nr_nodes} memory={self.nr_pages * PAGE_SIZE >> 20} MiB "
                f"caches={len(self._caches)} freelist={hardening or 'plain'} "
                f"free pages={self.free_pages_count() + self.pcp_pages_count()}>")

    def kmem_cache_destroy(self, cache: KmemCache, force: bool = False) -> None:
        """Destroy an empty cache, releasing all its slabs; ``force`` empties it first.

        With ``force``: free every object users still hold, return every prefilled sheaf and
        discard the lost objects first.

        Raises
        ------
        CacheLeakError
            If objects are still allocated, reporting them as ``list_slab_objects`` does,
            with nothing changed (bad input changes nothing here): the kernel ends the
            cache's ``kfree_rcu`` grace periods, flushes the CPUs' caches, the barn and the
            empty slabs first, then unlinks the cache and leaks it; numslab keeps it usable,
            so its objects can be freed and the destroy retried. The refusal comes before
            the grace periods end (leaving out the objects waiting for one, which they would
            free), so those objects still wait. ``LostObjectsError`` (a ``CacheLeakError``)
            when the only objects left are lost to a corrupted free list (``lost_objects``):
            in use to the kernel, which refuses as for any object; ``force`` discards them.
        """
        with self._slab_mutex, _RCU_LOCK:      # (no grace period ends half-way through)
            wait_for_engine()           # not while another thread's compile parks the rows
            self._own(cache, "kmem_cache_destroy")
            if cache._id in self._kmalloc_ids:
                raise BadArg(f"kmem_cache_destroy: {cache.name} is a kmalloc cache")
            force = check_bool(force, "kmem_cache_destroy: force")
            if not force:                       # refused: before the barrier changes anything
                self._refuse_leaky_destroy(cache, cache.live_objects
                                           - self._rcu_listed_objects(cache._id))
            self._kvfree_rcu_barrier_on_cache(cache._id)     # nothing may wait: see kmallocapi
            if force:
                while sheaf := int(self.state.ca[cache._id, CA_USER_SHEAVES]):
                    self.kmem_cache_return_sheaf(cache, GFP_KERNEL, sheaf)
                self._free_every_object(cache)
            self._refuse_leaky_destroy(cache, cache.live_objects, force)
            cache.__class__ = DestroyedCache    # other threads' calls now refuse it...
            if not self._cache_release(cache._id, force):   # ...and one took an object since
                cache.__class__ = KmemCache
                raise CacheLeakError(f"kmem_cache_destroy {cache.name}: Slab cache still has "
                                     f"objects: another thread allocated from it meanwhile")
            if self.state.node[cache._id, :, N_NR_SLABS].any():   # pragma: no cover - shrink
                # frees every empty slab
                raise SlabCorruptionError(f"{cache.name}: slabs left after shrinking an "
                                          f"empty cache")
            if self.state.ca[cache._id, CA_DEBUG]:
                self._g[G_NDEBUG] -= 1
                self._trace_ids.discard(cache._id)
            typesafe = self.state.ca[cache._id, CA_FLAGS] & SLAB_TYPESAFE_BY_RCU
            self.state.ca[cache._id] = 0
            del self._caches[cache._id]
            cache._sa, cache._id = NO_ALLOCATOR, -1     # it belongs to no allocator
            cache.__class__ = DestroyedCache
            if typesafe:        # its discarded slabs' rcu_free_slab callbacks: rcu_barrier
                self.rcu_barrier()

    def find_cache(self, name: str) -> KmemCache:
        """The cache called ``name``."""
        try:
            return self._caches.by_name(name)
        except (KeyError, TypeError):   # (TypeError: an unhashable name, a list or array)
            raise BadArg(f"no cache named {name!r}") from None

    @property
    def caches(self) -> list[KmemCache]:
        """Every live cache, oldest first."""
        return self._caches.values()

    # ---- allocation -------------------------------------------------------------------------
    @cache_op
    def kmem_cache_alloc(self, cache: KmemCache, gfp: int = GFP_KERNEL,
                         cpu: int | None = None) -> int:
        """Allocate one object; its address, or 0 (NULL) when memory is exhausted."""
        if type(cache) is not KmemCache or cache._sa is not self:
            self._own(cache, "kmem_cache_alloc")
        cpu = self._tls.cpu if cpu is None else self._check_cpu(cpu)
        if cache.ctor is not None:
            with self._ctor_lock:
                addr = self._k_alloc(cache._id, cpu, -1, check_gfp(gfp, "kmem_cache_alloc"))
                return self._after_alloc(cache, addr, gfp, -1, cpu)
        addr = self._k_alloc(cache._id, cpu, -1, check_gfp(gfp, "kmem_cache_alloc"))
        if not addr:
            return self._after_alloc(cache, addr, gfp, -1, cpu)
        return addr

    @cache_op
    def kmem_cache_alloc_node(self, cache: KmemCache, gfp: int = GFP_KERNEL, node: int = -1,
                              cpu: int | None = None) -> int:
        """Allocate one object from ``node`` (-1: any); 0 when memory is exhausted."""
        cid = self._own(cache, "kmem_cache_alloc_node")
        node = self._check_node(node)
        cpu, gfp = self._check_cpu(cpu), check_gfp(gfp, "kmem_cache_alloc_node")
        with self._ctor_lock:
            return self._after_alloc(cache, self._k_alloc(cid, cpu, node, gfp), gfp, node, cpu)

    def _check_node(self, node: Any) -> int:
        if not isinstance(node, (int, np.integer)) or isinstance(node, bool) \
                or not -1 <= node < self.nr_nodes:
            raise BadArg(f"{public_caller()}: node {node!r} is not -1 or in "
                         f"0..{self.nr_nodes - 1}")
        return int(node)

    def _after_kmalloc(self, addr: int, gfp: int, cpu: int, size: int) -> int:
        """:meth:`_after_alloc` of the C gate's ``kmalloc(size)`` on ``cpu``."""
        return self._after_alloc(None, addr, gfp, -1, cpu, size)

    def _after_alloc(self, cache: KmemCache | None, addr: int, gfp: int, node: int,
                     cpu: int | None = None, size: int = 0, cid: int = -1) -> int:
        """Run an allocation's due constructors; report a corrupted free pointer, exhaustion.

        The constructors due on the slabs of the cache allocated from (``cache``, else ``cid``: a
        batch's); a corrupted free pointer (the engine gave back what it took and returned ``addr``
        0, or -1 for a batch) and exhaustion are reported as the kernel does. A call that got
        memory never takes up a fault: another thread's call may have met it since (two calls that
        fail at once may swap their reports)."""
        if addr <= 0 and self._g[G_FAULT_CACHE]:
            if self._last_reports:              # a slab_debug check failed
                raise self._debug_error("allocation", addr, self._take_fault()[1])
            self._raise_fault()
        made = self._ctor_slabs
        if self._g[G_NPENDING]:
            self._construct_for(cache, addr, cid)
        if self._ctor_depth and addr > 0 and cache is not None:
            addr = self._construct_early(cache, [addr], gfp, node, cpu)[0]
        if addr > 0 and gfp & _ZERO and cache is not None and cache.ctor is not None:
            self._zero_after_ctor(cache, [addr], gfp, self._ctor_slabs != made, public_caller())
        if not addr and not gfp & _NOWARN:
            self._warn_no_memory(cache, gfp, node, cpu, size)
        return addr

    def isolated_slabs(self) -> np.ndarray:
        """Addresses of the slabs isolated after a corrupted free pointer, int64[n]."""
        f = self.state.pg_flags
        return (np.flatnonzero(((f & PG_ISOLATED) != 0) & ((f & PG_SLAB) != 0)) << 12
                ).astype(np.int64)

    @cache_op
    def kmem_cache_free(self, cache: KmemCache, addr: int, cpu: int | None = None) -> None:
        """Free object ``addr`` of ``cache``.

        Raises
        ------
        BadAddressError, WrongCacheError, DoubleFreeError
            If ``addr`` is not a live object of ``cache``; nothing is changed then.
        """
        if type(cache) is not KmemCache or cache._sa is not self:
            self._own(cache, "kmem_cache_free")
        if type(addr) is not int or not -(1 << 63) <= addr < 1 << 63:
            addr = self._as_addr(addr, "kmem_cache_free")
        cpu = self._tls.cpu if cpu is None else self._check_cpu(cpu)
        err = self._k_free(cache._id, cpu, addr)
        if err:
            self._raise(err, f"kmem_cache_free({cache.name})", addr, cache)

    def _as_addr(self, addr: Any, fn: str) -> int:
        if isinstance(addr, (int, np.integer)) and not isinstance(addr, bool):
            if -(1 << 63) <= addr < 1 << 63:
                return int(addr)
            raise BadAddressError(f"{fn}: {int(addr):#x} is outside the arena [0x1000, "
                                  f"{self.nr_pages * PAGE_SIZE:#x})")
        raise AddressTypeError(f"{fn}: address {addr!r} is not an integer")

    # ---- kmalloc ------------------------------------------------------------------------------
    def kmalloc(self, size: int, gfp: int = GFP_KERNEL, cpu: int | None = None,
                node: int = -1) -> int:
        """Allocate ``size`` bytes from the kmalloc caches, or whole pages above 8 KiB.

        Returns the address, ``ZERO_SIZE_PTR`` (16) for size 0, or 0 when memory is
        exhausted. Raises InvalidSizeError above KMALLOC_MAX_SIZE (4 MiB).
        """
        if type(size) is not int or not 0 < size <= KMALLOC_MAX_CACHE_SIZE:
            return self._kmalloc_other(size, gfp, cpu, node)
        cpu = self._cpu() if cpu is None else self._check_cpu(cpu)
        if type(node) is not int or node != -1:
            node = self._check_node(node)
        addr = self._k_kmalloc(self._kmalloc_ids[_KMALLOC_INDEX[size]], cpu, node,
                               check_gfp(gfp, "kmalloc"), size, 0)
        if not addr:
            return self._after_alloc(None, addr, gfp, node, cpu, size)
        return addr

    def _kmalloc_other(self, size: Any, gfp: int, cpu: int | None, node: int) -> int:
        if not is_integer(size):
            raise SizeTypeError(f"kmalloc: size {size!r} is not an integer")
        size = int(size)
        if size == 0:                           # the arguments checked as for any size
            check_gfp(gfp, "kmalloc")
            if cpu is not None:
                self._check_cpu(cpu)
            if type(node) is not int or node != -1:     # (node=5 was taken)
                self._check_node(node)
            return ZERO_SIZE_PTR
        if size < 0 or size > KMALLOC_MAX_SIZE:
            raise InvalidSizeError(f"kmalloc: size {size} is not in 0..{KMALLOC_MAX_SIZE}")
        cpu = self._check_cpu(cpu)
        node = self._check_node(node)
        if size <= KMALLOC_MAX_CACHE_SIZE:
            cid = self._kmalloc_ids[_KMALLOC_INDEX[size]]
            order = 0
        else:
            cid, order = NIL, get_order(size)
        addr = self._k_kmalloc(cid, cpu, node, check_gfp(gfp, "kmalloc"), size, order)
        return self._after_alloc(None, addr, gfp, node, cpu, size)

    def kzalloc(self, size: int, gfp: int = GFP_KERNEL, cpu: int | None = None) -> int:
        """``kmalloc`` with ``__GFP_ZERO``: the bytes come zeroed.

        ``gfp`` is checked as ``kmalloc`` checks it before ``__GFP_ZERO`` is added."""
        return self.kmalloc(size, check_gfp(gfp, "kzalloc") | _ZERO, cpu)

    def kfree(self, addr: int, cpu: int | None = None) -> None:
        """Free memory from ``kmalloc``, or any slab object, its cache found from its page.

        As in the kernel; NULL, ZERO_SIZE_PTR and the addresses between them are ignored
        (``ZERO_OR_NULL_PTR``)."""
        if type(addr) is not int or not -(1 << 63) <= addr < 1 << 63:
            addr = self._as_addr(addr, "kfree")
        if 0 <= addr <= ZERO_SIZE_PTR:         # ZERO_OR_NULL_PTR: 0 to 16, 16 included
            if cpu is not None:                 # checked as for any address (cpu=9 was taken)
                self._check_cpu(cpu)
            return
        err = self._k_kfree(self._cpu() if cpu is None else self._check_cpu(cpu), addr)
        if err:
            self._raise(err, "kfree", addr, None)

    def _slab_head(self, addr: int) -> int:
        """The head frame of the block holding ``addr``."""
        pfn = addr >> 12
        return int(self.state.pg_head[pfn]) if self.state.pg_flags[pfn] & PG_TAIL else pfn

    def _locate(self, addr: int, cache: int = NIL) -> tuple[int, int]:
        """(0, slab head frame) if ``addr`` is a live object (of ``cache`` unless NIL).

        Else (error code, NIL)."""
        r = checks.locate(self._st, addr, cache)
        return (0, r) if r >= 0 else (r, NIL)

    # ---- shrink, statistics, validation -----------------------------------------------------
    def slabinfo(self) -> str:
        """``/proc/slabinfo`` (version 2.1) for every cache, newest first as the kernel lists."""
        lines = [SLABINFO_HEADER]
        with self._slab_mutex:                  # slab_start: no cache created or destroyed
            # create_kmalloc_caches makes kmalloc-96 and -192 first, then 8 .. 8k
            first = [self._kmalloc_ids[i] for i, s in enumerate(KMALLOC_SIZES) if s in (96, 192)]
            kernel_order = [self._caches[cid] for cid in first] \
                + [c for c in self.caches if c._id not in first]
            for c in reversed(kernel_order):    # get_slabinfo: count_partial_free_approx
                total = c.total_objects
                active = total - int(c.partial_free_approx().sum())
                lines.append(slabinfo_line(c.name, active, total, c.slab_size,
                                           c.objs_per_slab, c.order, c.slabs))
        return "".join(lines)

    def validate(self, cache: KmemCache | None = None) -> None:
        """Check every invariant of one cache, or of every cache and the whole machine.

        The whole machine's: the page allocator's lists, the RCU lists and marks, the lost
        objects' counts and the frames' owners (ARCHITECTURE.md, "Invariants").

        Raises
        ------
        SlabCorruptionError
            Naming the first broken invariant and where.
        """
        cid = NIL if cache is None else self._own(cache, "validate")
        with _RCU_LOCK:     # the list as the unit sees it (it lifts and restores their marks)
            listed = self._rcu_listed()         # kfree_rcu's list: allocated, not live
            err = checks.validate(self._st, cid, len(listed), listed.ctypes.data)
            what, where, at = (int(x) for x in self._g[[G_ERR0, G_ERR1, G_ERR2]])
        if err:
            raise self._corruption(cid if cid != NIL else at, what, where)

    check_invariants = validate


handles.type_allocator_objects(SlabAllocator)     # (inside @njit: refused, naming sa.handle)
