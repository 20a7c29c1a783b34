"""The maple tree's use of prefilled sheaves as a workload (will-it-scale ``mmap1``).

The workload runs on the ``maple_node`` cache: what a change to the prefill path does to speed and
to slab memory.

Every ``mmap`` or ``munmap`` of ``mmap1`` writes the VMA tree: ``mas_preallocate`` takes a
prefilled sheaf of the worst case's nodes (``kmem_cache_prefill_sheaf``), the write takes the
few it needs (``kmem_cache_alloc_from_sheaf``), ``mas_destroy`` gives the sheaf back
(``kmem_cache_return_sheaf``) and the nodes the write replaced are freed after a grace period
(``ma_free_rcu``: ``kfree_rcu``). That is the case of "mm/slub: refill prefilled sheaves from
the barn" (generation ``next``): under 7.3 a prefilled sheaf run low is refilled from the
slabs while the barn's full list, filled by the ``kfree_rcu`` sheaves, stays at its limit and
every later RCU sheaf is flushed to its slabs; under ``next`` the refill takes the barn's
sheaves first. :func:`maple_churn` runs it on one machine of one generation and reports the
SLUB counters the patch's own table reports, the slabs held, and the time per operation.
"""
from __future__ import annotations

import random
import time

import numslab

from ..engine.layout import SH_OBJECTS
from ..flags import GFP_KERNEL, SLAB_HWCACHE_ALIGN
from ..geometry import KMALLOC_MAX_SIZE

#: ``sizeof(struct maple_node)``, the cache's size and alignment; its ``sheaf_capacity``.
NODE_SIZE, NODE_SHEAF = 256, 32
#: The most objects a prefilled sheaf can hold: the oversize sheaf is one kmalloc of its
#: header words and its objects' pointers, at most KMALLOC_MAX_SIZE (4 MiB: 524,284 objects;
#: ``kmem_cache_prefill_sheaf`` returns NULL past it, as the kernel's, so a ``need`` between
#: this and the 2**20 once allowed failed every run, "give more memory").
MAX_NEED = (KMALLOC_MAX_SIZE - 8 * SH_OBJECTS) // 8
#: Bytes a CPU may keep besides the trees: its main, spare and RCU sheaves of nodes and a slab
#: of order 3 (the default memory counted the trees only: 2,048 CPUs ran out at write 1,247,
#: "give more memory", which ``numslab maple`` has no option for).
PER_CPU = 3 * NODE_SHEAF * NODE_SIZE + (32 << 10)
#: The counters reported (the patch's table, but for the list_lock and cmpxchg ones).
COUNTERS = ("alloc_slab", "free_slab", "barn_get", "barn_get_fail", "barn_put",
            "barn_put_fail", "free_add_partial", "sheaf_flush", "sheaf_refill",
            "sheaf_prefill_fast", "sheaf_prefill_slow", "free_rcu_sheaf")


def maple_churn(kernel: str = "next", ops: int = 20000, cpus: int = 4, live: int = 4096,
                need: int = 7, used: tuple[int, int] = (1, 4), grace: int = 32,
                seed: int = 1, memory: str | None = None) -> dict:
    """Run ``ops`` tree writes on a ``maple_node`` cache of SLUB generation ``kernel``.

    Parameters
    ----------
    kernel : str
        The generation (``numslab.KERNELS``; the rule in question is ``next``'s).
    ops : int
        Tree writes (``mmap`` or ``munmap`` calls), the CPUs taking turns.
    cpus : int
        Simulated CPUs, one process on each (``mmap1``'s one per CPU).
    live : int
        Nodes the trees hold: allocated before the run, and each write replaces as many
        nodes as it takes.
    need : int
        Nodes a write preallocates (``mas_preallocate``'s worst case).
    used : tuple of int
        The least and most nodes a write takes, uniform between them.
    grace : int
        Writes per RCU grace period (``synchronize_rcu``).
    seed : int
        Seed of the writes' node counts and of which nodes they replace.
    memory : str, optional
        Memory per node of the machine (default: three times the bytes of the trees and of
        a write's prefilled sheaf, and :data:`PER_CPU` per CPU, at least 64 MiB). A machine
        that runs out raises ``InvalidSizeError``; a default one that cannot be reserved
        here, ``InvalidArgumentError`` naming ``live`` and ``cpus``.

    Returns
    -------
    dict
        ``kernel``; ``ns_per_op`` (wall time per write: mostly the Python calls, five to ten
        a write, so it shows little of the allocator's own time);
        ``counters`` (each of :data:`COUNTERS`, their change over the run); ``slabs`` and
        ``objects`` (the cache's slabs and the objects handed out, ``live_objects``, at the
        end); ``slabs_after_shrink`` (after ``kmem_cache_shrink``, as the patch's
        ``echo 1 > shrink``); ``live`` (nodes in the trees, the same in every run).
    """
    for name, n in (("ops", ops), ("cpus", cpus), ("live", live), ("need", need),
                    ("grace", grace)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise numslab.InvalidArgumentError(f"maple_churn: {name} {n!r} is not an integer "
                                               f"of at least 1")
    if need > MAX_NEED:
        raise numslab.InvalidArgumentError(f"maple_churn: need {need} is more than a prefilled "
                                           f"sheaf holds ({MAX_NEED})")
    lo, hi = used
    if not 1 <= lo <= hi <= need:
        raise numslab.InvalidArgumentError(f"maple_churn: used {used!r} must lie in 1..need")
    sized = memory is None
    if memory is None:
        # the trees and a write's sheaf (with the trees' only, a need of 2**18 ran out at
        # once, "give more memory", which ``numslab maple`` has no option for), in whole
        # 4 MiB blocks (another size was rounded up with a warning)
        need_bytes = 3 * (live + need) * NODE_SIZE + cpus * PER_CPU
        memory = f"{max(64, -(-need_bytes // (4 << 20)) * 4)}M"
    try:
        sa = numslab.SlabAllocator(nr_cpus=cpus, memory=memory, kernel=kernel, seed=seed)
    except numslab.InvalidSizeError as e:
        if not sized:
            raise
        # (the allocator's "memory '732422100M' ... cannot reserve": no option of that name)
        raise numslab.InvalidArgumentError(
            f"maple_churn: live {live:,} nodes on {cpus} CPUs need {memory} of machine, "
            f"more than can be reserved here {str(e).rpartition(' here ')[2]}"
        ) from None
    c = sa.kmem_cache_create("maple_node", NODE_SIZE, align=NODE_SIZE,
                             flags=SLAB_HWCACHE_ALIGN, sheaf_capacity=NODE_SHEAF)
    rng = random.Random(seed)
    nodes = [sa.kmem_cache_alloc(c, GFP_KERNEL, cpu=i % cpus) for i in range(live)]
    if not all(nodes):
        raise numslab.InvalidSizeError(f"maple_churn: {live} nodes do not fit in {memory} "
                                       f"(give more memory)")
    sa.synchronize_rcu()
    before = c.stats
    prefill, take, give = (sa.kmem_cache_prefill_sheaf, sa.kmem_cache_alloc_from_sheaf,
                           sa.kmem_cache_return_sheaf)
    t0 = time.perf_counter()
    for op in range(ops):
        cpu = op % cpus
        sheaf = prefill(c, GFP_KERNEL, need, cpu)
        if not sheaf:
            raise numslab.InvalidSizeError(f"maple_churn: {memory} ran out at write {op} "
                                           f"(give more memory)")
        k = rng.randint(lo, hi)
        new = [take(c, GFP_KERNEL, sheaf, cpu) for _ in range(k)]
        give(c, GFP_KERNEL, sheaf, cpu)
        for a in new:                           # each replaces a node of the trees
            i = rng.randrange(len(nodes))
            old, nodes[i] = nodes[i], a
            sa.kfree_rcu(old, cpu)
        if op % grace == grace - 1:
            sa.synchronize_rcu()
    sa.synchronize_rcu()
    seconds = time.perf_counter() - t0
    after = c.stats
    out = {"kernel": kernel, "ns_per_op": seconds / ops * 1e9,
           "counters": {k: after[k] - before[k] for k in COUNTERS},
           "slabs": c.slabs, "objects": c.live_objects, "live": len(nodes)}
    sa.kmem_cache_shrink(c)
    out["slabs_after_shrink"] = c.slabs
    sa.validate()
    return out


def format_maple(runs: list[dict]) -> str:
    """The runs of :func:`maple_churn` side by side: a row per counter, a column per run.

    With the change from the first run to each other one."""
    head = f"{'':<22}" + "".join(f"{r['kernel']:>14}" for r in runs)
    if len(runs) > 1:
        head += "".join(f"{'change ' + r['kernel']:>16}" for r in runs[1:])
    rows = [*((k, [r["counters"][k] for r in runs]) for k in COUNTERS),
            ("slabs", [r["slabs"] for r in runs]),
            ("slabs after shrink", [r["slabs_after_shrink"] for r in runs])]
    lines = [head]
    for name, vals in rows:
        line = f"{name:<22}" + "".join(f"{v:>14,.0f}" for v in vals)
        for v in vals[1:]:
            line += f"{(v - vals[0]) / vals[0]:>+15.1%} " if vals[0] else f"{'':>16}"
        lines.append(line)
    return "\n".join(lines)
