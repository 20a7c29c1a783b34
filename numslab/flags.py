"""Kernel flag values: GFP flags, SLAB_* cache flags, array-allocation modes, SLUB statistics.

Numbered as in ``include/linux/gfp_types.h``, ``include/linux/slab.h`` and ``mm/slub.c`` (Linux
6.18); the statistics are SLUB's statistics items."""
from __future__ import annotations

# --- GFP flags (include/linux/gfp_types.h; bit numbers as in 6.18 without lockdep) ---------
__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
__GFP_DMA32 = 0x04
__GFP_MOVABLE = 0x08
__GFP_RECLAIMABLE = 0x10
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_ZERO = 0x100
__GFP_DIRECT_RECLAIM = 0x400
__GFP_KSWAPD_RECLAIM = 0x800
__GFP_WRITE = 0x1000
__GFP_NOWARN = 0x2000
__GFP_RETRY_MAYFAIL = 0x4000
__GFP_NOFAIL = 0x8000
__GFP_NORETRY = 0x10000
__GFP_MEMALLOC = 0x20000
__GFP_COMP = 0x40000
__GFP_NOMEMALLOC = 0x80000
__GFP_HARDWALL = 0x100000
__GFP_THISNODE = 0x200000
__GFP_ACCOUNT = 0x400000
__GFP_NO_OBJ_EXT = 0x8000000     #: 7.0: no sheaf may be allocated for this allocation

__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM
GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM | __GFP_NOWARN     #: (6.18 on: never warns)
GFP_NOIO = __GFP_RECLAIM
GFP_NOFS = __GFP_RECLAIM | __GFP_IO
GFP_KERNEL_ACCOUNT = GFP_KERNEL | __GFP_ACCOUNT
GFP_USER = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE
GFP_TRANSHUGE_LIGHT = (GFP_HIGHUSER_MOVABLE | __GFP_COMP | __GFP_NOMEMALLOC
                       | __GFP_NOWARN) & ~__GFP_RECLAIM
GFP_TRANSHUGE = GFP_TRANSHUGE_LIGHT | __GFP_DIRECT_RECLAIM

#: ``gfpflag_names`` (``include/trace/events/mmflags.h``): what ``%pGg`` prints, composites
#: with the most bits first, then each flag in bit order.
GFP_NAMES = tuple((v, n) for n, v in (
    ("GFP_TRANSHUGE", GFP_TRANSHUGE), ("GFP_TRANSHUGE_LIGHT", GFP_TRANSHUGE_LIGHT),
    ("GFP_HIGHUSER_MOVABLE", GFP_HIGHUSER_MOVABLE), ("GFP_HIGHUSER", GFP_HIGHUSER),
    ("GFP_USER", GFP_USER), ("GFP_KERNEL_ACCOUNT", GFP_KERNEL_ACCOUNT),
    ("GFP_KERNEL", GFP_KERNEL), ("GFP_NOFS", GFP_NOFS), ("GFP_ATOMIC", GFP_ATOMIC),
    ("GFP_NOIO", GFP_NOIO), ("GFP_NOWAIT", GFP_NOWAIT), ("GFP_DMA", __GFP_DMA),
    ("GFP_DMA32", __GFP_DMA32), ("__GFP_RECLAIM", __GFP_RECLAIM),
    ("__GFP_DMA", __GFP_DMA), ("__GFP_HIGHMEM", __GFP_HIGHMEM), ("__GFP_DMA32", __GFP_DMA32),
    ("__GFP_MOVABLE", __GFP_MOVABLE), ("__GFP_RECLAIMABLE", __GFP_RECLAIMABLE),
    ("__GFP_HIGH", __GFP_HIGH), ("__GFP_IO", __GFP_IO), ("__GFP_FS", __GFP_FS),
    ("__GFP_ZERO", __GFP_ZERO), ("__GFP_DIRECT_RECLAIM", __GFP_DIRECT_RECLAIM),
    ("__GFP_KSWAPD_RECLAIM", __GFP_KSWAPD_RECLAIM), ("__GFP_WRITE", __GFP_WRITE),
    ("__GFP_NOWARN", __GFP_NOWARN), ("__GFP_RETRY_MAYFAIL", __GFP_RETRY_MAYFAIL),
    ("__GFP_NOFAIL", __GFP_NOFAIL), ("__GFP_NORETRY", __GFP_NORETRY),
    ("__GFP_MEMALLOC", __GFP_MEMALLOC), ("__GFP_COMP", __GFP_COMP),
    ("__GFP_NOMEMALLOC", __GFP_NOMEMALLOC), ("__GFP_HARDWALL", __GFP_HARDWALL),
    ("__GFP_THISNODE", __GFP_THISNODE), ("__GFP_ACCOUNT", __GFP_ACCOUNT),
    ("__GFP_NO_OBJ_EXT", __GFP_NO_OBJ_EXT)))


def gfp_names(gfp: int) -> str:
    """``gfp`` as the kernel's ``%pGg`` prints it (``format_flags``).

    The names of :data:`GFP_NAMES` whose bits are all set, each taking its bits, joined by ``|``,
    and what is left in hex (``GFP_KERNEL|__GFP_NOWARN``, ``GFP_ATOMIC|0x10000000``)."""
    out = []
    for mask, name in GFP_NAMES:
        if not gfp:
            break
        if gfp & mask == mask:
            out.append(name)
            gfp &= ~mask
    if gfp:
        out.append(f"{gfp:#x}")
    return "|".join(out)

# --- SLAB_* cache flags (include/linux/slab.h) ---------------------------------------------
SLAB_CONSISTENCY_CHECKS = 1 << 8
SLAB_RED_ZONE = 1 << 10
SLAB_POISON = 1 << 11
SLAB_KMALLOC = 1 << 12
SLAB_HWCACHE_ALIGN = 1 << 13
SLAB_CACHE_DMA = 1 << 14
SLAB_CACHE_DMA32 = 1 << 15
SLAB_STORE_USER = 1 << 16
SLAB_PANIC = 1 << 18
SLAB_TYPESAFE_BY_RCU = 1 << 19
SLAB_TRACE = 1 << 21
SLAB_NOLEAKTRACE = 1 << 23
SLAB_NO_MERGE = 1 << 24
SLAB_ACCOUNT = 1 << 26
SLAB_RECLAIM_ACCOUNT = 1 << 28
#: ``create_boot_cache``'s flag of the bootstrap caches, ``kmem_cache`` and ``kmem_cache_node``:
#: under 7.x they get no sheaves (``calculate_sheaf_capacity``: "bootstrap caches can't have
#: sheaves for now"). The replay gives it to the caches of those names.
SLAB_NO_OBJ_EXT = 1 << 29

#: Flags that turn on SLUB debugging (``kmem_cache_debug``): no cpu partial lists then.
SLAB_DEBUG_FLAGS = (SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER
                    | SLAB_TRACE)
#: The flags under which 7.x's ``calculate_sheaf_capacity`` gives a cache no sheaves, whatever
#: ``sheaf_capacity`` asks (besides the debug flags).
SLAB_NO_SHEAVES = SLAB_NOLEAKTRACE | SLAB_NO_OBJ_EXT
#: Every flag ``kmem_cache_create`` accepts.
SLAB_VALID_FLAGS = (SLAB_DEBUG_FLAGS | SLAB_KMALLOC | SLAB_HWCACHE_ALIGN | SLAB_CACHE_DMA
                    | SLAB_CACHE_DMA32 | SLAB_PANIC | SLAB_TYPESAFE_BY_RCU | SLAB_NOLEAKTRACE
                    | SLAB_NO_MERGE | SLAB_ACCOUNT | SLAB_RECLAIM_ACCOUNT | SLAB_NO_OBJ_EXT)

# --- The seed's array-allocation modes (Lameter's RFC "Slab allocator array operations",
# January 2015, where they were the gfp bits GFP_SLAB_ARRAY_*; values as in the RFC) ------
SLAB_ARRAY_ALLOC_LOCAL = 0x40000000       #: objects the CPU already holds
SLAB_ARRAY_ALLOC_PARTIAL = 0x20000000     #: whole partial slabs
SLAB_ARRAY_ALLOC_NEW = 0x10000000         #: whole fresh slabs, no free list ever built
SLAB_ARRAY_ALLOC_FULL_COUNT = 0x08000000  #: top up one by one until the count is reached
SLAB_ARRAY_ALLOC_ALL = (SLAB_ARRAY_ALLOC_LOCAL | SLAB_ARRAY_ALLOC_PARTIAL | SLAB_ARRAY_ALLOC_NEW
                        | SLAB_ARRAY_ALLOC_FULL_COUNT)
GFP_SLAB_ARRAY_LOCAL = SLAB_ARRAY_ALLOC_LOCAL
GFP_SLAB_ARRAY_PARTIAL = SLAB_ARRAY_ALLOC_PARTIAL
GFP_SLAB_ARRAY_NEW = SLAB_ARRAY_ALLOC_NEW
GFP_SLAB_ARRAY_FULL_COUNT = SLAB_ARRAY_ALLOC_FULL_COUNT

# --- SLUB statistics (enum stat_item, mm/slub.c, Linux 6.18 order) ----------------------------
STAT_NAMES = (
    "alloc_cpu_sheaf", "alloc_fastpath", "alloc_slowpath", "free_cpu_sheaf", "free_rcu_sheaf",
    "free_rcu_sheaf_fail", "free_fastpath", "free_slowpath", "free_frozen", "free_add_partial",
    "free_remove_partial", "alloc_from_partial", "alloc_slab", "alloc_refill",
    "alloc_node_mismatch", "free_slab", "cpuslab_flush", "deactivate_full", "deactivate_empty",
    "deactivate_to_head", "deactivate_to_tail", "deactivate_remote_frees", "deactivate_bypass",
    "order_fallback", "cmpxchg_double_cpu_fail", "cmpxchg_double_fail", "cpu_partial_alloc",
    "cpu_partial_free", "cpu_partial_node", "cpu_partial_drain", "sheaf_flush", "sheaf_refill",
    "sheaf_alloc", "sheaf_free", "barn_get", "barn_get_fail", "barn_put", "barn_put_fail",
    "sheaf_prefill_fast", "sheaf_prefill_slow", "sheaf_prefill_oversize", "sheaf_return_fast",
    "sheaf_return_slow",
    # numslab's own items: remote-node partial hits and objects served by each array mode.
    "alloc_remote_partial", "alloc_array_local", "alloc_array_partial", "alloc_array_new",
    "alloc_array_full_count",
)
(ALLOC_PCS, ALLOC_FASTPATH, ALLOC_SLOWPATH, FREE_PCS, FREE_RCU_SHEAF, FREE_RCU_SHEAF_FAIL,
 FREE_FASTPATH, FREE_SLOWPATH, FREE_FROZEN, FREE_ADD_PARTIAL, FREE_REMOVE_PARTIAL,
 ALLOC_FROM_PARTIAL, ALLOC_SLAB, ALLOC_REFILL, ALLOC_NODE_MISMATCH, FREE_SLAB, CPUSLAB_FLUSH,
 DEACTIVATE_FULL, DEACTIVATE_EMPTY, DEACTIVATE_TO_HEAD, DEACTIVATE_TO_TAIL,
 DEACTIVATE_REMOTE_FREES, DEACTIVATE_BYPASS, ORDER_FALLBACK, CMPXCHG_DOUBLE_CPU_FAIL,
 CMPXCHG_DOUBLE_FAIL, CPU_PARTIAL_ALLOC, CPU_PARTIAL_FREE, CPU_PARTIAL_NODE, CPU_PARTIAL_DRAIN,
 SHEAF_FLUSH, SHEAF_REFILL, SHEAF_ALLOC, SHEAF_FREE, BARN_GET, BARN_GET_FAIL, BARN_PUT,
 BARN_PUT_FAIL, SHEAF_PREFILL_FAST, SHEAF_PREFILL_SLOW, SHEAF_PREFILL_OVERSIZE,
 SHEAF_RETURN_FAST, SHEAF_RETURN_SLOW, ALLOC_REMOTE_PARTIAL, ALLOC_ARRAY_LOCAL,
 ALLOC_ARRAY_PARTIAL, ALLOC_ARRAY_NEW, ALLOC_ARRAY_FULL_COUNT) = range(len(STAT_NAMES))
NR_STATS = len(STAT_NAMES)

#: The counters a 6.18 kernel shows (its enum stat_item, in order): the engine's items less
#: numslab's own.
STAT_NAMES_6_18 = STAT_NAMES[:ALLOC_REMOTE_PARTIAL]
#: Linux 7.0's enum stat_item, in order (26 items: no CPU slab, CPU freelist or CPU partial
#: list to count), each with the engine items it sums. Under 7.0 the engine counts an
#: allocation or free served by the sheaves as ALLOC_PCS/FREE_PCS, which 7.0 calls the fast
#: path; ALLOC_FASTPATH/FREE_FASTPATH (the CPU freelist) never move there.
STAT_ITEMS_7_0 = (
    ("alloc_fastpath", (ALLOC_PCS, ALLOC_FASTPATH)), ("alloc_slowpath", (ALLOC_SLOWPATH,)),
    ("free_rcu_sheaf", (FREE_RCU_SHEAF,)), ("free_rcu_sheaf_fail", (FREE_RCU_SHEAF_FAIL,)),
    ("free_fastpath", (FREE_PCS, FREE_FASTPATH)), ("free_slowpath", (FREE_SLOWPATH,)),
    ("free_add_partial", (FREE_ADD_PARTIAL,)), ("free_remove_partial", (FREE_REMOVE_PARTIAL,)),
    ("alloc_slab", (ALLOC_SLAB,)), ("alloc_node_mismatch", (ALLOC_NODE_MISMATCH,)),
    ("free_slab", (FREE_SLAB,)), ("order_fallback", (ORDER_FALLBACK,)),
    ("cmpxchg_double_fail", (CMPXCHG_DOUBLE_FAIL,)), ("sheaf_flush", (SHEAF_FLUSH,)),
    ("sheaf_refill", (SHEAF_REFILL,)), ("sheaf_alloc", (SHEAF_ALLOC,)),
    ("sheaf_free", (SHEAF_FREE,)), ("barn_get", (BARN_GET,)), ("barn_get_fail", (BARN_GET_FAIL,)),
    ("barn_put", (BARN_PUT,)), ("barn_put_fail", (BARN_PUT_FAIL,)),
    ("sheaf_prefill_fast", (SHEAF_PREFILL_FAST,)), ("sheaf_prefill_slow", (SHEAF_PREFILL_SLOW,)),
    ("sheaf_prefill_oversize", (SHEAF_PREFILL_OVERSIZE,)),
    ("sheaf_return_fast", (SHEAF_RETURN_FAST,)), ("sheaf_return_slow", (SHEAF_RETURN_SLOW,)),
)
STAT_NAMES_7_0 = tuple(name for name, _ in STAT_ITEMS_7_0)
#: numslab's own counters, after the kernel's in ``KmemCache.stats`` on both generations.
STAT_NAMES_NUMSLAB = STAT_NAMES[ALLOC_REMOTE_PARTIAL:]

#: Everything above, ``__GFP_*`` included (``import *`` would skip the underscored names).
__all__ = [n for n in dir() if n.isupper() and (n[0].isalpha() or n.startswith("__GFP_"))]
