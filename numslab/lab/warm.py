"""The replay's warm start: caches seeded from a ``/sys/kernel/slab`` snapshot before the trace.

Before the first event, each cache the trace uses gets the live objects, slabs and partial slabs of
the snapshot, through the allocator's API.

:func:`seed` allocates every object of the snapshot's slabs in bulk (all slabs full), frees a
chosen part of some of them (the partial slabs) and flushes the CPUs (:func:`_seed_cache`); the
objects left are each cache's *pool*, pointer ids past the trace's, which the trace's frees of
pointers it never allocated take (``kernels.replay_chunk``'s ``seed``). Where the snapshot is
silent: the partial slabs' in-use objects are spread evenly over them (a node keeps up to
``min_partial`` empty ones listed); the slabs made partial, the objects freed in each and the
pool's order are seeded pseudo-random choices (``SEED``): slab by slab (``slab``, the default)
or uniform (``random``); 6.18's CPU slabs (sysfs counts all their objects in use and does not
say whose they are) are seeded as full slabs off every list, as after a ``flush_all``.
Where numslab's slabs hold another number of objects than the snapshot's (another CPU count),
the objects and partial slabs are kept and the slabs refitted (:func:`_refit`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.ops import flush_all
from ..errors import InvalidArgumentError
from ..flags import GFP_KERNEL
from .kernels import sample

__all__ = ["SEED", "ORDERS", "WarmStart", "counts", "seed", "seed_bytes"]

#: the seed of every pseudo-random choice of the warm start (per cache: ``(SEED, row)``)
SEED = 0x5EED
#: the orders a warm start's pool is taken in (:func:`_pool`), the default first
ORDERS = ("slab", "random")


def counts(text: Any) -> dict[int, int]:
    """A sysfs count as ``show_slab_objects`` prints it (``'896 N0=896'``) as node -> count.

    The total is on node 0 where no node is printed (``'0'``: no entry)."""
    words = str(text or "").split()
    if not words or not words[0].isdecimal():
        return {}
    out = {int(w[1:].split("=")[0]): int(w.split("=")[1]) for w in words[1:]
           if w.startswith("N") and "=" in w and w.split("=")[1].isdecimal()
           and w[1:].split("=")[0].isdecimal()}
    if not out and int(words[0]):
        out[0] = int(words[0])
    return out


@dataclass
class WarmStart:
    """What a warm start seeded, per cache row of the trace (int64[K]; 0 for a row not seeded).

    The slabs, partial slabs and objects (sysfs ``objects``) the caches held after the seeding,
    before the first event (not counted as replayed events; the counters a cache's ``stats`` show
    leave the seeding out), the snapshot's figures they were seeded from (``want_*``), the seeded
    objects the trace's untraced frees took (``frees``, filled by the replay), ``unmet`` (caches
    whose seeded state differs from those figures, in row order: another ``objs_per_slab``, or
    empty slabs past ``min_partial`` that the seeding's frees discarded) and the seeding's wall
    ``seconds``."""

    names: list[str]
    seeded: np.ndarray
    slabs: np.ndarray
    partial: np.ndarray
    objects: np.ndarray
    want_slabs: np.ndarray
    want_partial: np.ndarray
    want_objects: np.ndarray
    frees: np.ndarray
    unmet: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: the pools: each row's pool (-1: none), int64[K]; each pool's start in ``pids``, its
    #: objects and those left (the replay kernel takes them from the end), int64[pools];
    #: pointer id, address and owner row of each seeded object, int64[n]
    pool_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    left: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    addrs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: each cache's counters after the seeding (subtracted from the result's ``stats``)
    stats: list[dict[str, int]] = field(default_factory=list)
    #: per row, int64[K]: the allocator's own structs among ``objects`` after the seeding (a
    #: kmalloc cache's: numslab's sheaves of every cache, and in kmalloc-64 the barns, a
    #: node's each, kmalloc'd there, as a kernel's ``/sys/kernel/slab/kmalloc-*/objects``
    #: counts its own; the seeding fills the cache to the snapshot's objects with them, so its
    #: users' objects are the rest)
    structs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def total(self) -> dict[str, int]:
        """Seeded slabs, partial slabs and objects, and seeded frees, over every cache."""
        return {"caches": int(self.seeded.sum()), "slabs": int(self.slabs.sum()),
                "partial": int(self.partial.sum()), "objects": int(self.objects.sum()),
                "frees": int(self.frees.sum())}

    def to_json(self) -> dict[str, Any]:
        """The seeding as a JSON-ready object: the totals, then per seeded cache."""
        return dict(self.total, seconds=round(self.seconds, 4), unmet=list(self.unmet),
                    caches={nm: {"slabs": int(self.slabs[k]),
                                 "partial": int(self.partial[k]),
                                 "objects": int(self.objects[k]),
                                 "structs": int(self.structs[k]) if len(self.structs) else 0,
                                 "seeded_frees": int(self.frees[k])}
                            for k, nm in enumerate(self.names) if self.seeded[k]})

    def kernel_seed(self, name: np.ndarray) -> tuple:
        """``replay_chunk``'s ``seed`` for a trace whose events name cache rows ``name``.

        Parameters
        ----------
        name : numpy.ndarray
            int32[events]: the trace's ``name`` column.

        Returns
        -------
        tuple of numpy.ndarray
            ``(name, pool_of, lo, left, pids)``: ``name`` as given, ``pool_of`` int64[K],
            ``lo`` and ``left`` int64[pools], ``pids`` int64[n] (the fields of that name).
        """
        return (name, self.pool_of, self.lo, self.left, self.pids)

    def count_frees(self) -> None:
        """Fill ``frees`` from the pools the replay took from."""
        taken = self.size - self.left
        for k in np.flatnonzero(self.seeded).tolist():
            self.frees[k] = taken[self.pool_of[k]]

    def less_seeding(self, stats: list[dict[str, int]]) -> list[dict[str, int]]:
        """``stats`` (each row's counters at the end) less what the seeding counted."""
        return [{n: int(v) - int(base.get(n, 0)) for n, v in st.items()}
                for st, base in zip(stats, self.stats)]


def _plan(snap: dict[str, Any], nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The snapshot cache's ``slabs``, ``partial``, ``objects`` per replayed node (int64[nodes]).

    Three int64[nodes] arrays; the snapshot's node ``n`` goes on node ``n % nodes``."""
    out = np.zeros((3, nodes), np.int64)
    for j, attr in enumerate(("slabs", "partial", "objects")):
        for n, v in counts(snap.get(attr)).items():
            out[j, n % nodes] += v
    return out[0], out[1], out[2]


def _refit(want: tuple[np.ndarray, np.ndarray, np.ndarray], theirs: int,
           ours: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``want`` refitted for slabs holding ``ours`` objects.

    ``want`` is a snapshot's slabs, partial slabs and objects per node. The snapshot's slabs hold
    ``theirs`` objects. Kept: the same objects (the workload's live data, whatever the geometry)
    and partial slabs with the same objects in use, as far as they hold them; the full slabs as
    many as the rest fills, one partial slab more for a remainder. (Kept as the snapshot's, the
    slabs filled with another number of objects made 4 CPUs' replay of a 2-CPU kernel's caches hold
    twice its live objects.) Slabs of one object are never partial with one in use: one slab per
    object, none partial (the seeding frees nothing in them, so the partial slabs kept were seeded
    full: a live object each that no trace event holds)."""
    slabs, partial, objects = (np.array(x, np.int64) for x in want)
    if ours == 1:
        return objects.copy(), np.zeros_like(partial), objects
    if ours == theirs or ours < 1:
        return slabs, partial, objects
    for n in range(len(slabs)):
        p, o = int(partial[n]), int(objects[n])
        busy = min(max(o - (int(slabs[n]) - p) * theirs, 0), p * (ours - 1), o)
        full, rest = divmod(o - busy, ours)
        if rest:                        # (into the partial slabs, or one more of them)
            busy += rest
            if busy > p * (ours - 1):
                p += 1
        partial[n], slabs[n] = p, full + p
    return slabs, partial, objects


def seed_bytes(names: list[str], snap: dict[str, dict[str, Any]]) -> int:
    """Bytes of the slabs a warm start seeds, for the arena's size.

    The snapshot's ``slabs`` at its ``order``."""
    return sum(b for b, _, _, _ in _seeds(names, snap))


def largest_seed(names: list[str], snap: dict[str, dict[str, Any]]) -> tuple[int, str, int, int]:
    """The cache whose seeded slabs take the most bytes: ``(bytes, name, slabs, order)``."""
    return max(_seeds(names, snap), default=(0, "", 0, 0))


def _seeds(names: list[str], snap: dict[str, dict[str, Any]]) -> list[tuple[int, str, int, int]]:
    """``(bytes, name, slabs, order)`` of each trace cache the snapshot lists."""
    out = []
    for nm in dict.fromkeys(names):
        s = snap.get(nm)
        if s is not None:
            o = str(s.get("order", "0")).strip()
            order = int(o) if o.isdecimal() else 0
            slabs = sum(counts(s.get("slabs")).values())
            out.append((slabs * (4096 << order), nm, slabs, order))
    return out


def _apart(c: Any, plan: tuple[np.ndarray, np.ndarray, np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``plan`` less what ``c`` holds already (its CPUs flushed) on the nodes it does not seed.

    A cache with sheaves has a barn on every node (``init_kmem_cache_nodes``' ``kmalloc_node``),
    so kmalloc-64 holds objects on each node of the machine, where a snapshot of fewer nodes
    lists none. Those slabs stay as they are; the first node the plan seeds takes that many
    slabs, partial slabs and objects less, so that the totals are the snapshot's."""
    slabs, partial, objects = (np.array(x, np.int64) for x in plan)
    seeded = np.flatnonzero(slabs)
    if not len(seeded):
        return slabs, partial, objects
    fs, empty = c.sysfs(), slabs == 0
    for arr, attr in ((slabs, "slabs"), (partial, "partial"), (objects, "objects")):
        held = sum(v for n, v in counts(fs[attr]).items() if n < len(empty) and empty[n])
        arr[seeded[0]] = max(int(arr[seeded[0]]) - held, 0)
    return slabs, partial, objects


def _in_use(c: Any, node: int) -> int:
    """Objects of cache ``c`` in use on ``node`` as sysfs counts them."""
    return int(c.total_objects_per_node()[node] - c.partial_free_approx()[node])


def _seed_cache(sa: Any, c: Any, want: tuple[np.ndarray, np.ndarray, np.ndarray],
                rng: np.random.Generator) -> np.ndarray:
    """Give cache ``c`` the slabs, partial slabs and objects ``want`` per node.

    Allocate in bulk every object its slabs hold but those it holds already (the allocator's own
    sheaves, in a kmalloc cache), on a CPU of the node, so every slab is full; make ``partial`` of
    the slabs holding only seeded objects (chosen at random) partial by freeing, in bulk, random
    objects of them, the in-use objects spread evenly; flush the CPUs (sheaves, CPU slabs), so that
    the freed objects are on the slabs. Returns the seeded objects still live (where the figures
    cannot be met, the nearest state: :func:`seed` compares it with them)."""
    ops = c.objs_per_slab
    flush_all(sa._st, c.id)             # (a CPU slab's free objects sysfs counts in use)
    slabs, partial, objects = _apart(c, want)
    got = []
    for node in np.flatnonzero(slabs).tolist():
        n = int(slabs[node]) * ops - _in_use(c, node)
        if n < 0:
            continue
        cpu = next(u for u in range(sa.nr_cpus) if sa.cpu_to_node(u) == node)
        out = np.empty(n, np.int64)
        if n and not sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, n, out, cpu=cpu):
            raise InvalidArgumentError(f"warm start: cache {c.name}: {n} objects do not fit "
                                       f"the arena")
        got.append((node, cpu, out))
    freed = []
    for node, cpu, out in got:
        p = int(partial[node]) if ops > 1 else 0
        free = int(slabs[node]) * ops - int(objects[node])     # on the partial slabs
        lo, hi = p, p * ops             # (a node keeps min_partial slabs, empty ones too)
        free = min(max(free, lo), hi)
        head = sa.state.heads(out)
        slab, inv, per = np.unique(head, return_inverse=True, return_counts=True)
        whole = np.flatnonzero(per == ops)          # slabs of seeded objects only
        if len(whole) < p:
            p = len(whole)
            free = min(free, p * ops)
        if not p:                       # (a node with no partial slab: all its objects
            freed.append(out)           # stay seeded)
            continue
        chosen = np.full(len(slab), -1, np.int64)
        chosen[rng.choice(whole, p, replace=False)] = np.arange(p)
        nfree = np.full(p, free // p, np.int64)             # the in-use evenly spread
        nfree[:free % p] += 1
        pick = chosen[inv]
        mine = np.flatnonzero(pick >= 0)
        mine = rng.permutation(mine)
        order = mine[np.argsort(pick[mine], kind="stable")]     # by slab, each shuffled
        start = np.searchsorted(pick[order], np.arange(p))
        rank = np.arange(len(order)) - start[pick[order]]
        gone = order[rank < nfree[pick[order]]]
        # the slabs to be emptied first, flushed to them before the others turn partial: an
        # emptied slab stays listed only while its node has fewer than min_partial partial
        # slabs (7.x's sheaves flushed the others' objects first and discarded one)
        whole_gone = nfree[pick[gone]] == ops
        for part in (gone[whole_gone], gone[~whole_gone]):
            if len(part):
                objs = out[part].copy()
                sa.kmem_cache_free_bulk(c, len(objs), objs, cpu=cpu)
                flush_all(sa._st, c.id)
        keep = np.ones(len(out), bool)
        keep[gone] = False
        freed.append(out[keep])
    flush_all(sa._st, c.id)
    return np.concatenate(freed) if freed else np.zeros(0, np.int64)


def _pool(sa: Any, left: np.ndarray, rng: np.random.Generator, order: str) -> np.ndarray:
    """The seeded objects ``left`` in the order the replay's untraced frees take them.

    They take them from the end. ``random``, a uniform shuffle; ``slab``, slab by slab (the slabs
    in a random order, each one's objects shuffled), so that they empty one slab after another."""
    if order == "random":
        return rng.permutation(left)
    slab, inv = np.unique(sa.state.heads(left), return_inverse=True)
    key = rng.permutation(len(slab))[inv]
    shuffled = rng.permutation(len(left))
    return left[shuffled[np.argsort(key[shuffled], kind="stable")]]


def seed(sa: Any, names: list[str], cids: np.ndarray, objs: list[Any],
         snap: dict[str, dict[str, Any]] | None, nodes: int, npid: int,
         order: str = "slab") -> WarmStart:
    """Seed each cache row the snapshot has with its objects, slabs and partial slabs.

    Rows: ``names``, numslab ids ``cids`` (int64[K]), KmemCache ``objs``; seeded by
    :func:`_seed_cache`; its pools' pointer ids start at ``npid``. Raises
    ``InvalidArgumentError`` without a snapshot."""
    if not snap:
        raise InvalidArgumentError("a warm start needs the snapshot taken before the "
                                   "recording (--snapshot)")
    t0 = time.perf_counter()
    K = len(names)
    w = WarmStart(names=list(names), seeded=np.zeros(K, bool),
                  **{f: np.zeros(K, np.int64) for f in (
                      "slabs", "partial", "objects", "want_slabs", "want_partial",
                      "want_objects", "frees")})
    pool_of = np.full(K, -1, np.int64)
    first: dict[int, int] = {}
    pools: list[np.ndarray] = []
    rows: list[int] = []
    kmalloc_last = sorted(range(K), key=lambda k: names[k].startswith(("kmalloc-", "dma-")))
    for k in kmalloc_last:              # (the sheaves other caches' seeding makes come first)
        s = snap.get(names[k])
        cid = int(cids[k])
        if cid in first:                # a second row of one cache: the first's pool
            pool_of[k] = pool_of[first[cid]]
            continue
        if s is None or not counts(s.get("slabs")):
            continue
        first[cid] = k
        want = _plan(s, nodes)
        theirs = str(s.get("objs_per_slab", "")).strip()
        plan = _refit(want, int(theirs), objs[k].objs_per_slab) if theirs.isdecimal() \
            else want
        left = _seed_cache(sa, objs[k], plan, np.random.default_rng([SEED, k]))
        w.seeded[k] = True
        w.want_slabs[k], w.want_partial[k], w.want_objects[k] = (int(x.sum()) for x in want)
        pool_of[k] = len(pools)
        pools.append(_pool(sa, left, np.random.default_rng([SEED, k, 1]), order))
        rows.append(k)
    for k in range(K):                  # the state every cache was left in
        if w.seeded[k]:
            c = objs[k]
            w.slabs[k], w.partial[k], w.objects[k] = c.slabs, c.partial, c.objects
            if (w.slabs[k], w.partial[k], w.objects[k]) != \
                    (w.want_slabs[k], w.want_partial[k], w.want_objects[k]):
                w.unmet.append(names[k])    # (a plan that cannot fit numslab's slabs, or
                                            # empty slabs past min_partial its frees discarded)
    sizes = np.array([len(q) for q in pools], np.int64)
    lo = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    w.pool_of, w.lo, w.size, w.left = pool_of, lo, sizes, sizes.copy()
    w.pids = np.arange(npid, npid + int(sizes.sum()), dtype=np.int64)
    w.addrs = np.concatenate(pools) if pools else np.zeros(0, np.int64)
    w.rows = np.repeat(np.array(rows, np.int64), sizes)
    w.stats = [c.stats for c in objs]
    own = np.zeros(sa.state.ca.shape[0], np.int64)
    scratch = [np.zeros(K, np.int64) for _ in range(4)]
    sample(sa.handle, np.asarray(cids, np.int64), *scratch, own)
    w.structs = np.where(w.seeded, own[cids], 0).astype(np.int64)
    w.seconds = time.perf_counter() - t0
    return w
