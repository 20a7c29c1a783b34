"""The allocator's whole state: one int64 buffer carved into named fields, mostly arrays.

Kernels take a ``State`` pointer to the buffer and reach each field as ``st.<name>`` through a
small header (which also holds the arena's address), so every call passes one pointer however
many fields there are. The eight per-frame fields that a slab's life touches are columns of
one row table (``ROW_COLS``: a slab's metadata is one cache line). ARCHITECTURE.md lists every
field with its shape, meaning and sentinel; this module is the single definition.
"""
from __future__ import annotations

import math

import numpy as np

from ..flags import NR_STATS
from ..geometry import MAX_PAGE_ORDER
from . import native

NIL = -1            #: "no page / no slab / no cache" in every index field
NULL = 0            #: the null object address; page frame 0 is reserved so it is never handed out
ZERO_SIZE_PTR = 16  #: what ``kmalloc(0)`` returns, as in the kernel; ``kfree`` ignores it
#: A sheaf in the shadow half's frame 0 (handle ``_shadow + NO_SHEAF``, as frame 0 of the arena
#: is reserved) whose size word is -1: empty to an allocation, full to a free. While a thread
#: compiles a unit in the middle of an engine operation, every CPU's main sheaf points here,
#: so that other threads' inlined fast paths (``numslab.jit``) take the units, which wait
#: (``native.ENGINE_BUSY``).
NO_SHEAF = 2048

# ---- page flags (pg_flags) ----------------------------------------------------------------
PG_HEAD = 1            #: first page of an allocated block (slab, large kmalloc or raw pages)
PG_TAIL = 2            #: a later page of an allocated block; ``pg_head`` names its head
PG_BUDDY = 4           #: first page of a free buddy block of order ``pg_order``
PG_SLAB = 8            #: (head) the block is a slab; the ``sl_*`` fields are valid
PG_LARGE = 16          #: (head) the block is a large kmalloc (> 8 KiB)
PG_RESERVED = 32       #: never allocated (page frame 0, so that address 0 is NULL)
PG_FROZEN = 64         #: (slab) owned by a CPU as its cpu slab
PG_NODE_PARTIAL = 128  #: (slab) on its node's partial list
PG_CPU_PARTIAL = 256   #: (slab) on some CPU's partial list
PG_PCP = 512           #: first page of a free block of order ``pg_order`` on a CPU's pcp list
PG_ISOLATED = 1024     #: (slab) a corrupted free pointer was found: no longer allocated from
PG_SORTED = 2048       #: (slab) on a node partial list kept sorted (``engine/partialorder.py``)
PG_RCU = 4096          #: (large kmalloc head) waiting on the ``kfree_rcu`` list: no free takes it;
#: (a head with neither PG_SLAB nor PG_LARGE) a SLAB_TYPESAFE_BY_RCU slab ``discard_slab``
#: gave up, its pages held until the grace period ends (``free_slab``'s ``call_rcu``:
#: ``G_RCU_SLABS``)

# ---- scalars (field G) --------------------------------------------------------------------
#: ``G_KERNEL`` is the SLUB generation modelled: KERNEL_6_18 (sheaves opt-in, CPU slabs and
#: CPU partial lists), KERNEL_7_0 (sheaves for every cache, no ``kmem_cache_cpu``) or
#: KERNEL_7_1 (7.0 with a sheaf refill for any request that may spin and a shrink that
#: empties every barn first), KERNEL_7_3 (the mm tree on 7.3-rc5: six more rules) or
#: KERNEL_NEXT (7.3 with the slab tree's later change that numslab follows: a prefilled sheaf
#: refilled from the barn, which keeps a partial sheaf); kernels test ``st.kernel >= KERNEL_x``.
#: ``G_FAULT_CACHE`` (cache id + 1, 0: none), ``G_FAULT_SLAB`` and ``G_FAULT_VALUE`` report the
#: last corrupted free pointer found (the slab is isolated; the caller raises and clears them).
#: ``G_NISOLATED`` counts the slabs ever isolated (live counts then look at them).
#: ``G_NLOST`` is the sum of field ``sl_lost`` over every slab: the objects a repaired free
#: list cut off (live and lost counts look at the slabs only while it is not 0).
#: slab_debug: ``G_SITE`` is the call site the facade sets for the next track record (0: an
#: ``@njit`` caller), ``G_TICKS`` the clock of track records (one tick per debug alloc or
#: free), ``G_NREPORTS`` the reports ever written to field ``reports`` (a ring).
#: ``G_NDEBUG`` counts the live debug caches (a batch free then frees one by one).
#: ``G_FRNG`` is the state of CONFIG_SLAB_FREELIST_RANDOM's generator (each new slab's start
#: position in its cache's sequence), apart from ``G_RNG`` so that switching the option does
#: not move the remote-node draws.
#: ``G_RCU_HEAD``/``G_RCU_TAIL`` (sheaf addresses, 0: none) and ``G_NRCU`` are the sheaves
#: handed to ``call_rcu`` and waiting for their grace period (``engine/rcusheaves.py``), of
#: every cache, oldest first, linked through ``SH_NEXT``.
#: ``G_RCU_SLABS``/``G_RCU_SLABS_TAIL`` (head frames, 0: none) and ``G_NRCU_SLABS`` are the
#: slabs of SLAB_TYPESAFE_BY_RCU caches discarded and waiting for their grace period
#: (``rcu_free_slab``), oldest first, linked through ``pg_next`` (NIL ends it); each head
#: PG_HEAD | PG_RCU, ``sl_freelist`` the CPU that discarded it (whose pcp lists get the
#: pages).
#: ``G_PEND`` is the number of objects of the pending record (field ``pend``), 0: none.
#: ``G_SLAB_GEN`` counts the slabs ever made and discarded, of every cache (``_init_slab``,
#: ``_discard_slab``: where ``N_NR_SLABS`` moves): while it stays the same, no cache's slab
#: count changed (the lab's replay recounts its peaks only then).
(G_NPAGES, G_NNODES, G_NCPUS, G_PAGES_PER_NODE, G_MAX_CACHES, G_KERNEL, G_RNG, G_NPENDING,
 G_ERR0, G_ERR1, G_ERR2, G_FAULT_CACHE, G_FAULT_SLAB, G_FAULT_VALUE, G_NISOLATED,
 G_SITE, G_TICKS, G_NREPORTS, G_NDEBUG, G_FRNG, G_RCU_HEAD, G_RCU_TAIL, G_NRCU,
 G_NLOST, G_RCU_SLABS, G_RCU_SLABS_TAIL, G_NRCU_SLABS, G_SLAB_GEN, G_PEND,
 G_NSCALARS) = range(30)
KERNEL_6_18, KERNEL_7_0, KERNEL_7_1, KERNEL_7_3, KERNEL_NEXT = 618, 700, 710, 730, 790
#: the generations, by release name ("7.3": the mm tree on 7.3-rc5; "next": 7.3 with the slab
#: tree's barn refill of prefilled sheaves; ARCHITECTURE.md, "The generations")
KERNELS = {"6.18": KERNEL_6_18, "7.0": KERNEL_7_0, "7.1": KERNEL_7_1, "7.3": KERNEL_7_3,
           "next": KERNEL_NEXT}

# ---- validate's report: what broke (``checks.CORRUPTION``) and where ------------------------
#: What ``validate``'s ``where`` (G_ERR1) is, in G_ERR0's bits from ``AT_SHIFT`` up: a slab
#: (its head frame), a page frame, a node, a CPU, a sheaf (its handle), an object's address,
#: the cache itself (nothing more), a count of what was found.
AT_SLAB, AT_FRAME, AT_NODE, AT_CPU, AT_SHEAF, AT_OBJECT, AT_CACHE, AT_COUNT = range(1, 9)
AT_SHIFT = 8

# ---- cache table columns (field CA, shape [max_caches, CA_NCOLS]) -------------------------
#: ``CA_FP_KEY`` is ``s->random`` of CONFIG_SLAB_FREELIST_HARDENED: a free pointer is stored as
#: ``ptr ^ key ^ swab(its own address)``; 0 when the cache's pointers are stored plain.
#: slab_debug (all 0 for other caches): ``CA_DEBUG`` the debug flags (``SLAB_*`` bits, with
#: ``SLAB_KMALLOC`` and ``D_OBJECT_POISON``; nonzero means ``kmem_cache_debug``),
#: ``CA_RED_LEFT`` ``s->red_left_pad`` (objects start at ``slab + i * size + CA_RED_LEFT``),
#: ``CA_TRACK`` the offset of the two ``struct track`` from the object, ``CA_ORIG`` that of
#: the ``orig_size`` word of a kmalloc cache with U (0: none).
#: ``CA_RSEQ``/``CA_RSEQ_LEN`` are ``s->random_seq`` of CONFIG_SLAB_FREELIST_RANDOM: the
#: cache's sequence is ``rseq[CA_RSEQ:CA_RSEQ + CA_RSEQ_LEN]`` (a permutation of the object
#: indices of a slab of ``s->oo``, each times ``CA_SIZE``); ``CA_RSEQ_LEN`` 0: no sequence.
#: Where it fits (``2 * CA_RSEQ_LEN <= RSEQ_MAX``) the sequence is stored twice in a row, so
#: that a slab carved whole from any start is one copy with no wrap.
(CA_ACTIVE, CA_SIZE, CA_OBJECT_SIZE, CA_INUSE, CA_OFFSET, CA_ALIGN, CA_FLAGS, CA_ORDER,
 CA_OBJECTS, CA_MIN_ORDER, CA_MIN_OBJECTS, CA_MIN_PARTIAL, CA_CPU_PARTIAL,
 CA_CPU_PARTIAL_SLABS, CA_HAS_CPU_PARTIAL, CA_DEFRAG_RATIO, CA_CTOR, CA_SHEAF_CAPACITY,
 CA_USER_SHEAVES, CA_RECIP, CA_FP_KEY, CA_DEBUG, CA_RED_LEFT, CA_TRACK, CA_ORIG,
 CA_USED_RATIO, CA_MOVED, CA_MOVE_FREED, CA_PARTIAL_ORDER, CA_RSEQ, CA_RSEQ_LEN,
 CA_NCOLS) = range(32)
D_OBJECT_POISON = 1 << 40      #: ``__OBJECT_POISON`` in ``CA_DEBUG``: poison the object
#: ``CA_USED_RATIO`` is the movable-objects ``defrag_used_ratio`` (0: the default, 30; -1: 0);
#: ``CA_MOVED``/``CA_MOVE_FREED`` count objects moved and slabs freed by compaction
#: (``engine/defrag.py``); ``CA_PARTIAL_ORDER`` is 1 when the node partial lists are kept
#: sorted by free objects (``engine/partialorder.py``), 0 for the kernel's order.

# ---- slab_debug reports (field REPORTS, a ring of R_MAX records of R_NCOLS words) ----------
#: kind, cache, slab (head frame), object, then four words whose meaning depends on the kind
#: (``debug.py``: first and last bad byte, byte found, byte expected for a byte check).
R_KIND, R_CACHE, R_SLAB, R_OBJECT, R_A, R_B, R_C, R_D, R_NCOLS = range(9)
R_MAX = 256

# ---- kmem_cache_cpu columns (field CPU, shape [max_caches * ncpus, C_NCOLS]) --------------
#: ``C_RCU_FREE`` is ``pcs->rcu_free``: the sheaf ``kfree_rcu`` fills on this CPU (0: none).
#: ``C_PARKED`` holds ``C_MAIN`` while the row is parked at ``NO_SHEAF`` (a thread compiling
#: a unit mid-operation: ``native._guarded_call``), else 0.
C_FREELIST, C_SLAB, C_PARTIAL, C_MAIN, C_SPARE, C_RCU_FREE, C_PARKED, C_NCOLS = range(8)

# ---- kmem_cache_node columns (field NODE, shape [max_caches * nnodes, N_NCOLS]) -----------
#: The barn: ``N_BARN_FULL``/``N_BARN_EMPTY`` head lists of sheaves linked through ``SH_NEXT``
#: (0: empty), ``N_NR_FULL``/``N_NR_EMPTY`` their lengths. Its partial sheaf (KERNEL_NEXT) is
#: field ``barn_partial``, not a column: an eleventh column made bulk 4096 2-3% slower.
(N_PARTIAL_HEAD, N_PARTIAL_TAIL, N_NR_PARTIAL, N_NR_SLABS, N_TOTAL_OBJECTS, N_BARN_FULL,
 N_BARN_EMPTY, N_NR_FULL, N_NR_EMPTY, N_NCOLS) = range(10)

# ---- a sheaf (struct slab_sheaf), kmalloc'ed in the arena: int64 words at its address -----
SH_NEXT, SH_CAPACITY, SH_CACHE, SH_SIZE, SH_OBJECTS = range(5)   #: objects[] from word 4
#: While a sheaf waits for its grace period its ``SH_NEXT``/``SH_CAPACITY`` words are its
#: ``rcu_head`` (a union with ``capacity`` in the kernel): the next waiting sheaf, and
#: ``-1 - (callback | cpu << 1)`` with callback RCU_CB_BARN (``rcu_free_sheaf``) or
#: RCU_CB_NOBARN (``rcu_free_sheaf_nobarn``) and the CPU that called ``call_rcu``.
RCU_CB_BARN, RCU_CB_NOBARN = 0, 1
SHEAF_HEADER = 32                                                 #: bytes before objects[]
MAX_FULL_SHEAVES = 10
MAX_EMPTY_SHEAVES = 10
NR_KMALLOC = 13
#: ``sizeof(struct node_barn)`` on x86-64 (no lock debugging): ``spinlock_t lock`` (4, then 4
#: of padding), ``struct list_head sheaves_full, sheaves_empty`` (16 each), ``unsigned int
#: nr_full, nr_empty`` (4 each): 48 bytes, a kmalloc-64 object.
BARN_SIZE = 48
#: ``sizeof(unsigned int)``: bytes of an entry of ``s->random_seq``, kcalloc'ed per cache.
RANDOM_SEQ_ENTRY = 4

# ---- buddy free-area columns (field BUDDY, shape [nnodes * (MAX_ORDER+1), B_NCOLS]) -------
B_HEAD, B_COUNT, B_NCOLS = range(3)
NR_ORDERS = MAX_PAGE_ORDER + 1

# ---- per-CPU page lists (field PCP, shape [ncpus * nnodes, P_NCOLS]): struct per_cpu_pages
#: count (pages on the lists), high, batch, free_factor, then (head, tail) for orders 0..3.
P_COUNT, P_HIGH, P_BATCH, P_FREE_FACTOR, P_LISTS = range(5)
PCP_MAX_ORDER = 3                       #: PAGE_ALLOC_COSTLY_ORDER: higher orders skip the pcp
P_NCOLS = P_LISTS + 2 * (PCP_MAX_ORDER + 1)

# ---- the fields, in buffer order ----------------------------------------------------------
(F_G, F_PG_FLAGS, F_PG_ORDER, F_PG_HEAD, F_PG_NEXT, F_PG_PREV, F_SL_CACHE, F_SL_FREELIST,
 F_SL_INUSE, F_SL_OBJECTS, F_SL_SLABS, F_CA, F_CPU, F_NODE, F_STATS, F_BUDDY, F_CPU_NODE,
 F_PENDING, F_LIVE, F_KMALLOC, F_PCP, F_SCRATCH, F_REPORTS, F_SL_BUCKET, F_PBUCKETS,
 F_RSEQ, F_RCU, F_BARN_PARTIAL, F_SL_LOST, F_BARN, F_RANDOM_SEQ, F_HELD, F_PEND,
 NFIELDS) = range(34)
#: Field ``held`` (a bitmap as ``live``: one bit per 8-byte granule, at an object's start) marks
#: the objects of a cache that keeps it (``CA_ACTIVE``'s bit 1: every cache with sheaves but
#: slab_debug's) that are off their slab's free list: handed to a user, the allocator's own, or
#: cached (in a sheaf, or pending: live bit clear). A free pointer naming a held object is
#: refused as corrupted.
#: Field ``pend`` (int64, ``REC_MAX + PD_OBJS`` words) is the record of the last bulk
#: allocation: word ``PD_ROW`` the CPU row (``_cpu_row``: cache and CPU), ``PD_COUNT`` the
#: count (``G_PEND`` too), ``PD_NPEND`` how many of its first objects are pending (their marks
#: not written: a batch of at most ``PEND_MAX`` taken whole from a CPU's main sheaf, or from
#: the main and the spare; 0: a checked record, every object marked live), ``PD_STAMP`` the
#: cache's FREE_PCS summed over its CPUs when a checked record was written, then a copy of the
#: objects' addresses. A pending take is bounded by the record alone (``PEND_MAX`` is
#: ``REC_MAX``): its marks cost the same written at the take or by the settle that another
#: call makes, once. (Until December 7, 2026 it was 64: a batch of 65 to 4096 taken from a
#: cache asking for sheaves that large wrote a mark per object at the take and cleared it at
#: the free: 5-8x the pending round's time, by medians.)
REC_MAX = 4096
PEND_MAX = REC_MAX
PD_ROW, PD_COUNT, PD_NPEND, PD_STAMP, PD_OBJS = range(5)
#: Field ``barn_partial`` (int64, shape [max_caches * nnodes], 0: none) is
#: ``barn->sheaf_partial`` of (cache, node), element ``cache * nnodes + node``
#: (:func:`_node_index`), KERNEL_NEXT only: a sheaf holding what a prefilled sheaf's refill left
#: of the barn sheaf it took from (1 to capacity - 1 objects, ``SH_NEXT`` 0).
#: Field ``barn`` (int64, shape [max_caches * nnodes], 0: none) is the address of the
#: ``struct node_barn`` of (cache, node) (element :func:`_node_index`): a cache with sheaves
#: has one per node, ``kmalloc_node(sizeof(*barn), GFP_KERNEL, node)`` in
#: ``init_kmem_cache_nodes`` (``bootstrap_cache_sheaves`` for a kmalloc cache), an
#: allocator's own kmalloc object of ``BARN_SIZE`` bytes, ``kfree``d by
#: ``free_kmem_cache_nodes`` at the cache's release. Its words stay unused (the barn's lists
#: are the node row's columns).
#: Field ``random_seq`` (int64, shape [max_caches], 0: none) is the address of the cache's
#: ``s->random_seq`` array (CONFIG_SLAB_FREELIST_RANDOM): ``kcalloc(count, sizeof(unsigned
#: int), GFP_KERNEL)`` in ``cache_random_seq_create``, ``count`` its ``CA_RSEQ_LEN`` (2 or more;
#: a cache of fewer objects per slab has none), an allocator's own kmalloc object holding the
#: sequence as ``unsigned int`` entries, ``kfree``d by ``cache_random_seq_destroy`` at the
#: cache's release. The engine reads the sequence from field ``rseq``.
#: Field ``sl_lost`` (int64, shape [npages], 0 but at a slab head) counts the objects of a
#: slab that slab_debug's repair of its free list cut off (``debug.on_freelist``: "Freechain
#: corrupt", "Wrong object count"): counted in ``sl_inuse`` as the kernel counts them, never
#: handed out again, held by no user; 0 for an isolated slab, whose leak is derived
#: (``stats._isolated_leak``). ``G_NLOST`` is its sum.
NR_PBUCKETS = 48    #: buckets of a sorted partial list (``engine/partialorder.py``)
#: Words of field ``rseq`` per cache slot: the most objects a slab of ``s->oo`` holds (8-byte
#: objects in one page; under the default boot parameters ``calculate_order`` never gives a
#: small cache a higher order; a cache whose slabs would hold more needs
#: ``freelist_random=False``, as ``kmem_cache_create`` says).
RSEQ_MAX = 512
#: An entry of field ``pending`` is a slab's head frame plus, shifted by ``PENDING_SHIFT``,
#: the index of its first object still to construct (not 0 only after a constructor raised
#: there): the resume point lives and dies with the entry, so a slab discarded before its
#: objects were constructed takes it along (``slablists._pending_forget``).
PENDING_SHIFT = 40
PENDING_FRAME = (1 << PENDING_SHIFT) - 1    #: the frame bits of a ``pending`` entry

# ---- the header: words before the fields ----------------------------------------------------
#: ``H_MAGIC`` identifies a state buffer; ``H_MEM``/``H_MEMSIZE`` are the arena's address and
#: size in bytes; ``H_WORDS`` the buffer's length; then (offset, length) of every field.
H_MAGIC, H_MEM, H_MEMSIZE, H_WORDS, H_FIELDS = range(5)
MAGIC = 0x534C554230373030       #: "SLUB0700"
HEADER = H_FIELDS + 2 * NFIELDS

#: name, fill value (the sentinel of a fresh buffer) for each field, in F_* order.
FIELDS = (
    ("g", 0), ("pg_flags", 0), ("pg_order", NIL), ("pg_head", NIL), ("pg_next", NIL),
    ("pg_prev", NIL), ("sl_cache", NIL), ("sl_freelist", NULL), ("sl_inuse", 0),
    ("sl_objects", 0), ("sl_slabs", 0), ("ca", 0), ("cpu", 0), ("node", 0), ("stats", 0),
    ("buddy", 0), ("cpu_node", 0), ("pending", NIL), ("live", 0), ("kmalloc", NIL),
    ("pcp", 0), ("scratch", 0), ("reports", 0), ("sl_bucket", NIL), ("pbuckets", NIL),
    ("rseq", 0), ("rcu", 0), ("barn_partial", 0), ("sl_lost", 0), ("barn", 0),
    ("random_seq", 0), ("held", 0), ("pend", 0),
)


#: The fields kept as columns of one row table of ``ROW`` words (one 64-byte cache line) per
#: page frame, field -> column: what taking a page off a pcp list, making it a slab, freeing
#: to it and discarding it touch, so that one line holds a slab's metadata (separate arrays
#: put it on eight lines: bulk 4096 was 8-9% slower, 64 and 250 3-5%). ``sl_cache`` stays an
#: array: a single free's check reads it alone, and x86 folds ``i * 8`` into an address but
#: not ``i * 64`` (two more instructions in every inlined free). Element ``i`` of such a
#: field is word ``table + column + i * ROW``; kernels index it as any field (its ``Words``
#: have the stride), Python gets a strided view. ``new_state`` puts the table on a line.
ROW = 8
ROW_COLS = {F_PG_FLAGS: 0, F_PG_ORDER: 1, F_PG_HEAD: 2, F_PG_NEXT: 3, F_PG_PREV: 4,
            F_SL_FREELIST: 5, F_SL_INUSE: 6, F_SL_OBJECTS: 7}


def field_lengths(npages: int, nnodes: int, ncpus: int, max_caches: int) -> list[int]:
    """Length in int64 words of every field, in F_* order."""
    return [G_NSCALARS] + [npages] * 10 + [
        max_caches * CA_NCOLS, max_caches * ncpus * C_NCOLS, max_caches * nnodes * N_NCOLS,
        max_caches * ncpus * NR_STATS, nnodes * NR_ORDERS * B_NCOLS, ncpus, npages,
        npages * 4096 // 512, NR_KMALLOC, ncpus * nnodes * P_NCOLS, max(npages, 64),
        R_MAX * R_NCOLS, npages, max_caches * nnodes * NR_PBUCKETS, max_caches * RSEQ_MAX,
        npages * 4096 // 512, max_caches * nnodes, npages, max_caches * nnodes, max_caches,
        npages * 4096 // 512, REC_MAX + PD_OBJS]


# Kernels read the fields as ``st.<name>``, the fixed scalars as ``st.npages`` and so on, and
# the arena as ``st.mem`` (see ``native.State``).
native.FIELD_ATTRS.update({name: H_FIELDS + 2 * f for f, (name, _) in enumerate(FIELDS)})
native.FIELD_STRIDES.update({FIELDS[f][0]: ROW for f in ROW_COLS})
native.SCALAR_ATTRS.update({name: (H_FIELDS + 2 * F_G, item) for name, item in (
    ("npages", G_NPAGES), ("nnodes", G_NNODES), ("ncpus", G_NCPUS),
    ("pages_per_node", G_PAGES_PER_NODE), ("max_caches", G_MAX_CACHES),
    ("kernel", G_KERNEL))})
native.ADDRESS_ATTRS["mem"] = H_MEM
native.PARK_LAYOUT.update(cpu_field=H_FIELDS + 2 * F_CPU, mem_size=H_MEMSIZE, no_sheaf=NO_SHEAF,
                          main=C_MAIN, parked=C_PARKED, ncols=C_NCOLS)
native.HEADER_ATTRS["mem_size"] = H_MEMSIZE


def view(buf: np.ndarray, field: int) -> np.ndarray:
    """The 1-D view of one field of a state buffer (Python side).

    Parameters
    ----------
    buf : numpy.ndarray
        int64[H_WORDS], 1-D: a state buffer made by :func:`new_state`.
    field : int
        The field's number, ``F_*``.

    Returns
    -------
    numpy.ndarray
        int64[length], a view into ``buf`` (the length is the header's): strided by ``ROW``
        words for a column of the row table (``ROW_COLS``), contiguous for any other field.
    """
    off, n = buf[H_FIELDS + 2 * field], buf[H_FIELDS + 2 * field + 1]
    if field in ROW_COLS:
        return buf[off:off + n * ROW:ROW]
    return buf[off:off + n]


def new_state(npages: int, nnodes: int, ncpus: int, max_caches: int, seed: int,
              mem_address: int, mem_size: int, kernel: int = KERNEL_7_0) -> np.ndarray:
    """Allocate and initialise the state buffer (int64, 1-D) for a fresh machine.

    Parameters
    ----------
    npages, nnodes, ncpus, max_caches : int
        Page frames (``P``), NUMA nodes (``N``), CPUs (``U``) and cache slots (``C``).
    seed : int
        Seeds the generators ``G_RNG`` and ``G_FRNG``.
    mem_address, mem_size : int
        The arena's address in this process and its size in bytes (``H_MEM``, ``H_MEMSIZE``).
    kernel : int, optional
        The SLUB generation modelled, one of :data:`KERNELS`' values.

    Returns
    -------
    numpy.ndarray
        int64[HEADER + sum(field_lengths(...))], 1-D, its row table on a 64-byte line: the
        header, then every field at its fresh value (``FIELDS``; ARCHITECTURE.md, "The state").
    """
    lengths = field_lengths(npages, nnodes, ncpus, max_caches)
    total = HEADER + sum(lengths)
    first = min(ROW_COLS)                           # the table sits where its first field
    table = HEADER + sum(lengths[:first])           # would: its first word on a cache line
    raw = np.zeros(total + ROW, dtype=np.int64)
    skip = (-(raw.ctypes.data + table * 8) % 64) // 8
    buf = raw[skip:skip + total]
    buf[H_MAGIC], buf[H_MEM], buf[H_MEMSIZE], buf[H_WORDS] = (MAGIC, mem_address, mem_size,
                                                             len(buf))
    off = HEADER
    for f, n in enumerate(lengths):
        if f in ROW_COLS:           # the table takes the place of its fields' words
            if f == first:
                off += n * ROW
            buf[H_FIELDS + 2 * f], buf[H_FIELDS + 2 * f + 1] = table + ROW_COLS[f], n
            buf[table + ROW_COLS[f]:table + n * ROW:ROW] = FIELDS[f][1]
            continue
        buf[H_FIELDS + 2 * f], buf[H_FIELDS + 2 * f + 1] = off, n
        fill = FIELDS[f][1]
        if fill:
            buf[off:off + n] = fill
        off += n
    g = view(buf, F_G)
    g[G_NPAGES], g[G_NNODES], g[G_NCPUS] = npages, nnodes, ncpus
    g[G_PAGES_PER_NODE], g[G_MAX_CACHES], g[G_KERNEL] = npages // nnodes, max_caches, kernel
    g[G_RNG] = (seed * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) & 0x7FFFFFFFFFFFFFFF or 1
    g[G_FRNG] = (seed * 0xD1B54A32D192ED03 + 0x8CB92BA72F3D8DD7) & 0x7FFFFFFFFFFFFFFF or 1
    view(buf, F_BUDDY)[B_HEAD::B_NCOLS] = NIL          # every free area starts empty
    cpu_node = view(buf, F_CPU_NODE)
    cpu_node[:] = np.arange(ncpus) * nnodes // ncpus
    pcp = view(buf, F_PCP).reshape(ncpus, nnodes, P_NCOLS)
    pcp[:, :, P_LISTS:] = NIL                          # every pcp list starts empty
    batch = zone_batchsize(npages // nnodes)
    low = zone_watermarks(npages // nnodes, npages)[1]
    for node in range(nnodes):                         # zone_set_pageset_high_and_batch
        pcp[:, node, P_BATCH] = batch
        pcp[:, node, P_HIGH] = zone_highsize(low, batch, int((cpu_node == node).sum()))
    return buf


def zone_batchsize(managed_pages: int) -> int:
    """``zone_batchsize``: pages a CPU's pcp list takes from, or gives to, the buddy lists at once.

    A quarter of managed/1024 (at most 1 MiB), times 1.5, rounded down to a power of two, minus one
    (63 for zones of 1 GiB and more); at least 1, as ``zone_set_pageset_high_and_batch`` takes
    it."""
    batch = min(managed_pages >> 10, (1 << 20) // 4096) // 4
    batch = max(batch, 1)
    return max(1, (1 << ((batch + batch // 2).bit_length() - 1)) - 1)


def min_free_kbytes(lowmem_pages: int) -> int:
    """``calculate_min_free_kbytes``: sqrt(lowmem KiB * 16), clamped to [128, 262144]."""
    return min(max(math.isqrt(lowmem_pages * 4 * 16), 128), 262144)


def zone_watermarks(managed_pages: int, lowmem_pages: int, min_kbytes: int | None = None,
                    scale_factor: int = 10) -> tuple[int, int, int]:
    """The zone's (min, low, high) watermarks in pages (``__setup_per_zone_wmarks``).

    Its share of ``min_free_kbytes`` (by default ``calculate_min_free_kbytes``), then steps of the
    larger of a quarter of that and ``watermark_scale_factor`` / 10000 of the zone."""
    kbytes = min_free_kbytes(lowmem_pages) if min_kbytes is None else min_kbytes
    wmin = (kbytes >> 2) * managed_pages // lowmem_pages
    step = max(wmin >> 2, managed_pages * scale_factor // 10000)
    return wmin, wmin + step, wmin + 2 * step


def zone_highsize(low_wmark: int, batch: int, cpus_on_node: int) -> int:
    """``zone_highsize`` (5.14 to 6.6): the pages past which a pcp list frees some.

    The low watermark split over the node's CPUs, at least four batches; a pcp list holding this
    many pages frees some back to the buddy lists."""
    return max(low_wmark // max(cpus_on_node, 1), batch << 2)


class SlabState:
    """Named NumPy views of a state buffer, for inspection, tests and the facade.

    Every attribute is a view into ``buf``: writing through it changes the allocator.
    See ARCHITECTURE.md for the meaning, shape and sentinel of each field.
    """

    def __init__(self, buf: np.ndarray) -> None:
        self.buf = buf
        g = view(buf, F_G)
        ncaches, ncpus, nnodes = int(g[G_MAX_CACHES]), int(g[G_NCPUS]), int(g[G_NNODES])
        for f, (name, _) in enumerate(FIELDS):
            setattr(self, name, view(buf, f))
        self.ca = self.ca.reshape(ncaches, CA_NCOLS)
        self.cpu = self.cpu.reshape(ncaches, ncpus, C_NCOLS)
        self.node = self.node.reshape(ncaches, nnodes, N_NCOLS)
        self.stats = self.stats.reshape(ncaches, ncpus, NR_STATS)
        self.buddy = self.buddy.reshape(nnodes, NR_ORDERS, B_NCOLS)
        self.pcp = self.pcp.reshape(ncpus, nnodes, P_NCOLS)
        self.reports = self.reports.reshape(R_MAX, R_NCOLS)
        self.pbuckets = self.pbuckets.reshape(ncaches, nnodes, NR_PBUCKETS)
        self.barn_partial = self.barn_partial.reshape(ncaches, nnodes)
        self.barn = self.barn.reshape(ncaches, nnodes)
        self.rseq = self.rseq.reshape(ncaches, RSEQ_MAX)

    def heads(self, addrs: np.ndarray) -> np.ndarray:
        """The head frame of the block holding each address (``compound_head``), int64[n].

        ``addrs``: int64[n], addresses in the arena; :func:`_head_frame`'s Python twin."""
        pfn = addrs >> 12
        return np.where(self.pg_flags[pfn] & PG_TAIL, self.pg_head[pfn], pfn)


# ---- kernel-side helpers ------------------------------------------------------------------
@native.jit(inline=True)
def _xorshift_next(x):
    """The xorshift64 state after ``x``, in 1..2**63-1 (a loop keeps it in a register)."""
    x ^= x >> 12
    x ^= (x << 25) & 0x7FFFFFFFFFFFFFFF
    x ^= x >> 27
    x &= 0x7FFFFFFFFFFFFFFF
    if x == 0:
        x = 1
    return x


@native.jit(inline=True)
def _xorshift(g, item):
    """Step the xorshift64 generator whose state is word ``item`` of ``g``.

    The new state, in 1..2**63-1."""
    x = _xorshift_next(g[item])
    g[item] = x
    return x


@native.jit
def _rand(st):
    """Next value of the allocator's xorshift64* generator (deterministic per seed)."""
    return (_xorshift(st.g, G_RNG) * 2685821657736338717) & 0x7FFFFFFFFFFFFFFF


@native.jit
def _frand(st):
    """Next value of CONFIG_SLAB_FREELIST_RANDOM's generator (``G_FRNG``, from the seed).

    The xorshift64 state itself, never negative. (Not scrambled by a multiply as ``_rand`` is:
    Numba marks an int64 multiply ``nsw``, so LLVM takes the product of two positives for positive
    and drops the mask that follows; a negative draw then breaks ``% n``.)"""
    return _xorshift(st.g, G_FRNG)


@native.jit(inline=True)
def _stat(st, cache, cpu, item, n):
    """Add ``n`` to SLUB statistic ``item`` of ``cache`` on ``cpu``."""
    st.stats[(cache * st.ncpus + cpu) * NR_STATS + item] += n


@native.jit(inline=True)
def _ca(st, cache, col):
    """Column ``col`` of cache ``cache`` (``struct kmem_cache``)."""
    return st.ca[cache * CA_NCOLS + col]


@native.jit(inline=True)
def _geo(st, cache, col):
    """Column ``col`` of cache ``cache`` as an invariant load, for columns fixed while code runs.

    Fixed while compiled code runs: its geometry, ``CA_ACTIVE``, ``CA_CTOR``, ``CA_SHEAF_CAPACITY``
    (set by Python at create and destroy; ``CA_CTOR`` also counts up and back down around the
    facade's constructor loops, Python between compiled calls). The invariant load is for the
    fast paths users' loops inline."""
    return native.fixed(st.ca, cache * CA_NCOLS + col)


@native.jit(inline=True)
def _cpu_row(st, cache, cpu):
    """Index of the first column of ``kmem_cache_cpu`` (cache, cpu) in field ``cpu``."""
    return (cache * st.ncpus + cpu) * C_NCOLS


@native.jit(inline=True)
def _node_index(st, cache, node):
    """Index of (cache, node) in the per-node fields of one word (``barn_partial``, ``barn``)."""
    return cache * st.nnodes + node


@native.jit(inline=True)
def _node_row(st, cache, node):
    """Index of the first column of ``kmem_cache_node`` (cache, node) in field ``node``."""
    return _node_index(st, cache, node) * N_NCOLS


@native.jit(inline=True)
def _head_frame(st, pfn):
    """``compound_head``: the head frame of the block holding frame ``pfn``."""
    if st.pg_flags[pfn] & PG_TAIL:
        return st.pg_head[pfn]
    return pfn


@native.jit(inline=True)
def _shadow(st):
    """The sheaves' words sit this many bytes past their kmalloc objects: the arena's size.

    A sheaf is known by its handle (its object's address plus this), so ``st.mem`` read at a handle
    reads the shadow half of the mapping, which no user's address reaches."""
    return st.npages << 12


@native.jit(inline=True)
def _rcu_next(st, sheaf, k):
    """The sheaf after ``sheaf`` on the list of sheaves waiting for their grace period, or 0.

    ``sheaf`` is the ``k``-th (from 1) on the list. 0 at its end (``G_NRCU`` sheaves), or where a
    link no sheaf can be at (outside the shadow half, unaligned) was written: such a link is not
    followed."""
    if k >= st.g[G_NRCU]:
        return 0
    nxt = st.mem[(sheaf >> 3) + SH_NEXT]
    if nxt <= _shadow(st) or nxt & 7 or nxt >= 2 * _shadow(st) - 8 * SH_OBJECTS:
        return 0
    return nxt


@native.jit(inline=True)
def _sheaf_in_reach(st, sheaf, n):
    """Whether the words of the sheaf at handle ``sheaf`` to ``objects[n]`` lie in the shadow half.

    ``validate`` reads a sheaf only then (it meets words set wrong by other means; a loaded file's
    sheaves were checked by ``load``)."""
    shadow = _shadow(st)
    return shadow < sheaf < 2 * shadow and not sheaf & 7 and \
        0 <= n <= ((2 * shadow - sheaf) >> 3) - SH_OBJECTS


@native.jit(inline=True)
def _slab_nid(st, slab):
    """NUMA node of the slab whose head frame is ``slab``.

    No division on one node: a 64-bit divide costs more than the rest of a fast path."""
    if st.nnodes == 1:
        return 0
    return slab // st.pages_per_node
