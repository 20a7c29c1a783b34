"""The replay driver: a parsed kmem trace through one numslab allocator per configuration.

Configurations differ in kernel generation, CPUs, nodes and policy; each replay is sampled into a
:class:`ReplayResult`.

Data flow: :func:`~numslab.lab.trace.read_trace` (text to arrays: cache rows, dense pointer
ids) → :func:`prepare` (the lines no replay needs, counted) → for each
configuration a ``SlabAllocator`` with the trace's caches, then
:func:`~numslab.lab.kernels.replay_chunk` between sample points and
:func:`~numslab.lab.kernels.sample` at each.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np
from numba.core import event as numba_event

from .. import flags as F
from ..drivers.prewarm import prewarm
from ..engine.layout import G_NRCU_SLABS, G_SLAB_GEN
from ..errors import InvalidArgumentError, InvalidSizeError, OutOfMemoryError, SlabError
from ..errors import InvalidArgumentError as BadArg
from ..facade.allocator import SlabAllocator
from ..geometry import KMALLOC_MAX_SIZE
from . import kernels as K
from . import policies
from . import warm as W
from .config import (BOOT_WORDS, EVERY_FREE, KERNELS, MAX_CPUS, MAX_NODES, POLICIES,
                     REPLAY_UNITS, Config, _check_every_free, _policy, _warm, parse_config)
from .parse import ROW_LARGE
from .result import PAGE_SIZE, Configs, ReplayResult, Series
from .snapshot import (SnapshotFormatError, _aliases, _align_ok, _geometry, load_snapshot,
                       merge_aliases)
from .trace import (EV_BAD, EV_CACHE_ALLOC, EV_CACHE_FREE, EV_KMALLOC, EV_LOST,
                    EV_OTHER, EV_OWN, Trace, TraceFormatError, check_trace, large_kmalloc_twice,
                    read_trace)

__all__ = ["Config", "parse_config", "load_snapshot", "merge_aliases", "prepare", "replay",
           "replay_trace", "sample_seconds",
           "Prepared", "KERNELS", "POLICIES"]

SAMPLES = 256


_KM_FLAGS = {"dma-": F.SLAB_CACHE_DMA, "kmalloc-rcl-": F.SLAB_RECLAIM_ACCOUNT,
             "kmalloc-cg-": F.SLAB_ACCOUNT}


@dataclass
class Prepared:
    """A trace ready to replay: the :class:`Trace`, its cache rows, the lines that need no replay.

    The replay kernel reads the trace's ``kind``, ``row``, ``pid``, ``cpu``, ``node``, ``gfp`` and
    ``bytes_alloc`` as they are; cache rows ``names`` with ``sizes`` (bytes_alloc seen) and
    ``kmalloc`` (the kmalloc class size, or 0); ``npid`` pointers; the counts of skipped lines by
    reason that need no replay; ``replays``: whether any line is an allocation or free (the
    replay loop skips every other kind)."""

    trace: Trace
    names: list[str]
    sizes: list[int]
    kmalloc: list[int]
    npid: int
    skipped: dict[str, int]
    replays: bool


def prepare(tr: Trace) -> Prepared:
    """Count the lines of ``tr`` no replay needs.

    The parser gave each event its cache row and pointer id; the replay kernel reads the trace's
    columns directly."""
    big = np.flatnonzero((tr.kind == EV_KMALLOC) & (tr.row == ROW_LARGE)
                         & (tr.bytes_alloc > KMALLOC_MAX_SIZE))
    if len(big):                # the kernel's kmalloc returns NULL past KMALLOC_MAX_SIZE
        i = int(big[0])
        raise TraceFormatError(f"{tr.source}, line {int(tr.line[i])}: a kmalloc of "
                               f"{int(tr.bytes_alloc[i]):,} bytes (bytes_alloc) returned an "
                               f"object, past KMALLOC_MAX_SIZE ({KMALLOC_MAX_SIZE >> 20} MiB, "
                               f"the largest block of the page allocator)")
    skipped = {reason: int(np.count_nonzero(tr.kind == ev)) for reason, ev in
               (("kernel_own", EV_OWN), ("other_event", EV_OTHER),
                ("lost_events_line", EV_LOST), ("bad_line", EV_BAD))}
    twice = large_kmalloc_twice(tr)             # one large kmalloc, two events: one replayed
    skipped["large_kmalloc_twice"] = int(np.count_nonzero(twice))
    if skipped["large_kmalloc_twice"]:
        tr = replace(tr, kind=np.where(twice, EV_OTHER, tr.kind).astype(np.int8))
    return Prepared(tr, list(tr.names), tr.sizes.tolist(), tr.kmalloc.tolist(), tr.npid,
                    skipped, bool((tr.kind <= EV_CACHE_FREE).any()))


def _build(p: Prepared, cfg: Config, snap: dict[str, dict[str, Any]] | None,
           memory: int) -> tuple[SlabAllocator, np.ndarray, np.ndarray, list[str]]:
    """The allocator for ``cfg`` with every cache row created, and each row's id, size, geometry.

    Returns (allocator, numslab id per row int64[K], object size per row int64[K], geometry source
    per row)."""
    sa = SlabAllocator(nr_cpus=cfg.cpus, nr_nodes=cfg.nodes, memory=memory,
                       max_caches=len(p.names) + 32, kernel=cfg.kernel,
                       **dict(zip(BOOT_WORDS, cfg.orders)),
                       **policies.allocator_options(cfg.policy))
    builtin = {c.name: c for c in sa.kmalloc_caches}
    cids = np.empty(len(p.names), np.int64)
    osize = np.empty(len(p.names), np.int64)
    source = []
    for k, nm in enumerate(p.names):
        if nm in builtin:
            c = builtin[nm]
            cids[k], osize[k] = c.id, c.object_size
            source.append("kmalloc")
            continue
        if p.kmalloc[k]:
            extra = next((v for pre, v in _KM_FLAGS.items() if nm.startswith(pre)), 0)
            sheaf = int(cfg.policy.split("=")[1]) if cfg.policy.startswith("sheaves=") else 0
            c = sa.kmem_cache_create(nm, p.kmalloc[k], flags=F.SLAB_KMALLOC | extra,
                                     sheaf_capacity=sheaf)
            cids[k], osize[k] = c.id, p.kmalloc[k]
            source.append("kmalloc")
            continue
        args, objsize, src = _geometry(nm, p.sizes[k], snap, cfg.policy, cfg.kernel)
        if "align" in args:
            args["align"] = _align_ok(args["align"])
        c = _create(sa, p.trace, k, nm, args, src)
        want = int(snap[nm].get("slab_size", c.slab_size)) if src == "snapshot" and snap \
            else c.slab_size
        if want != c.slab_size and args["flags"] & F.SLAB_TYPESAFE_BY_RCU:
            # the kernel's typesafe caches (vm_area_struct) mostly keep the free pointer
            # inside the object (6.13's freeptr_offset): placed there, the geometry matches
            sa.kmem_cache_destroy(c)
            c = sa.kmem_cache_create(nm, **dict(args, freeptr_offset=0))
        if want != c.slab_size:
            sa.kmem_cache_destroy(c)
            args = dict(args, size=want)
            args.pop("freeptr_offset", None)
            if args["flags"] & F.SLAB_TYPESAFE_BY_RCU:
                args["freeptr_offset"] = 0
            c = sa.kmem_cache_create(nm, **args)
            src = "snapshot-size"
        cids[k], osize[k] = c.id, objsize
        source.append(src)
    _warn_geometry(p, cfg, snap, sa, cids)
    return sa, cids, osize, source


def _warn_geometry(p: Prepared, cfg: Config, snap: dict[str, dict[str, Any]] | None,
                   sa: SlabAllocator, cids: np.ndarray) -> None:
    """Warn of caches whose slabs or objects differ from the snapshot's (each replayed anyway).

    Slabs: ``order``, ``objs_per_slab`` (numslab computes them, ``calculate_order`` on the
    configuration's CPU count, where the snapshot's machine may have had another count or
    ``slub_min_order``). Objects: the trace says they are larger than the snapshot's
    (``bytes_alloc`` is ``s->size`` for a cache's allocation). These replayed silently before (a
    new user's trial: a header-less trace replayed on one CPU, eight caches' orders off)."""
    if not snap:
        return
    differ = []
    for k, nm in enumerate(p.names):
        s = snap.get(nm)
        if s is None:
            continue
        c = sa._caches[int(cids[k])]
        want = {f: str(s.get(f, "")).strip() for f in ("order", "objs_per_slab", "slab_size")}
        if want["order"].isdigit() and want["objs_per_slab"].isdigit() and \
                (c.order, c.objs_per_slab) != (int(want["order"]), int(want["objs_per_slab"])):
            differ.append(f"{nm} (order {c.order}, {c.objs_per_slab} objects; the snapshot's "
                          f"{want['order']}, {want['objs_per_slab']})")
        elif not p.kmalloc[k] and want["slab_size"].isdigit() and \
                p.sizes[k] > int(want["slab_size"]):
            differ.append(f"{nm} (the trace's bytes_alloc {p.sizes[k]}, the snapshot's "
                          f"slab_size {want['slab_size']})")
    if differ:
        more = f", and {len(differ) - 4} more" if len(differ) > 4 else ""
        warnings.warn(f"{cfg.name}: {len(differ)} cache(s) differ from the snapshot: "
                      f"{'; '.join(differ[:4])}{more} (the order follows the CPU count: "
                      f"give the snapshot machine's CPU count: cpus=, --cpus"
                      f"{'; and the slab_*_order words' if cfg.orders != (0, 3, 0) else ''})",
                      UserWarning, stacklevel=2)


def _create(sa: SlabAllocator, tr: Trace, k: int, name: str, args: dict[str, Any],
            src: str) -> Any:
    """``kmem_cache_create`` of trace cache row ``k``.

    A geometry numslab cannot make is a ``TraceFormatError`` naming the line whose size gave it (or
    a ``SlabError`` naming the snapshot)."""
    try:
        return sa.kmem_cache_create(name, **args)
    except SlabError as e:
        if src != "trace":
            raise SnapshotFormatError(f"snapshot: cache {name!r}: {e}") from None
        at = np.flatnonzero((tr.kind == EV_CACHE_ALLOC) & (tr.row == k))
        if not len(at):                 # a cache only freed to: the line of its first event
            at = np.flatnonzero((tr.row == k) | (tr.name == k))     # (a NULL free: no row)
            where = f", line {int(tr.line[at[0]])}" if len(at) else ""
            raise TraceFormatError(f"{tr.source}{where}: cache {name!r}: {e}") from None
        i = int(at[np.argmax(tr.bytes_alloc[at])])      # the first of the largest
        raise TraceFormatError(f"{tr.source}, line {int(tr.line[i])}: cache {name!r} of "
                               f"{int(tr.bytes_alloc[i]):,} bytes (bytes_alloc): {e}") from None


def _memory(p: Prepared, cfg: Config, extra: int = 0) -> int:
    """Arena bytes per node for replaying ``p`` under ``cfg``.

    Four times the trace's peak of live bytes (a pre-pass with the replay's rules); for each cache
    and simulated CPU the trace allocates on, what that CPU may keep besides live objects (CPU and
    CPU partial slabs, sheaves: 256 objects, two sheaves of ``sheaves=N`` more, and a 32 KiB slab;
    at most 1 MiB and 64 KiB per sheaf object asked for); two sheaf structs per cache and CPU; plus
    64 MiB; rounded up to 4 MiB; plus twice ``extra`` (a warm start's seeded slabs). Too little,
    and :func:`replay_prepared` runs again on twice the arena."""
    tr = p.trace
    sizes = np.asarray(p.sizes + [0], np.int64)
    peak = int(K.peak_live_bytes(tr.kind, tr.row, tr.pid, sizes, tr.bytes_alloc,
                                 max(p.npid, 1)))
    pairs = np.flatnonzero(K.alloc_cpu_rows(tr.kind, tr.row, tr.cpu, len(p.names), cfg.cpus))
    cap = int(cfg.policy.split("=")[1]) if cfg.policy.startswith("sheaves=") else 0
    held = np.minimum((256 + 2 * cap) * np.maximum(sizes[pairs // cfg.cpus], 8) + (32 << 10),
                      (1 << 20) + 16 * cap * 4096)
    struct = 1 << int(8 * max(cap, 60) + 64).bit_length()     # its kmalloc class
    need = 4 * peak + int(held.sum()) + 2 * struct * (len(p.names) + 32) * cfg.cpus \
        + (64 << 20) + 2 * extra
    return -(-need // (4 << 20)) * (4 << 20)


def _sample_points(n: int, samples: int) -> np.ndarray:
    """Event indices (exclusive ends) at which to sample.

    ``samples`` evenly spaced, the last at ``n``; at most one per event."""
    if n == 0:
        return np.zeros(1, np.int64)
    k = min(samples, n)
    return np.unique(np.linspace(0, n, k + 1)[1:].round().astype(np.int64))


def _work_points(n: int, every: int, points: np.ndarray) -> np.ndarray:
    """Event indices after which a remedy's periodic work runs.

    Every ``every`` events (``every`` 0: the sample points)."""
    if not every:
        return points
    if every == EVERY_FREE:
        return np.zeros(0, np.int64)
    return np.arange(every, n + 1, every, dtype=np.int64)


def sample_seconds(tr: Trace, points: np.ndarray) -> np.ndarray:
    """float64[S]: the trace seconds each sample stands for.

    From the previous point's time to this point's (the first from the trace's first timestamp),
    where a point's time is the latest timestamp of the events before it (lines with no timestamp,
    lost-events and malformed ones, left out; 0 when the trace has none)."""
    dt = np.zeros(len(points))
    kind, ts = tr.kind, tr.ts
    first = 0
    while first < len(tr) and kind[first] > EV_OTHER:
        first += 1
    if first == len(tr):
        return dt
    t = np.empty(len(points))
    for s, stop in enumerate(points.tolist()):
        i = stop - 1
        while i > first and kind[i] > EV_OTHER:
            i -= 1
        t[s] = ts[max(i, first)]
    # the kernel prints timestamps in order; a running maximum from the first event's time
    # guards against a step back (one before that time made the first sample negative)
    t = np.maximum.accumulate(np.maximum(t, ts[first]))
    dt[:] = np.diff(np.concatenate([[ts[first]], t]))
    return dt


def _warn_time_order(tr: Trace) -> None:
    """Warn if a timestamp steps back, naming the first line that does.

    The kernel prints its events in time order: such a trace was merged or reordered by hand. The
    trace-time means weigh each sample by a running maximum of the timestamps
    (:func:`sample_seconds`), which such a trace makes meaningless (they fell from 63 to 23 for a
    trace whose last events were moved to the front, with no word said)."""
    i, before, n = K.time_steps_back(tr.kind, tr.ts)      # (one pass, in line order)
    if i >= 0:
        warnings.warn(f"{tr.source}, line {int(tr.line[i])}: its timestamp "
                      f"{float(tr.ts[i]):.6f} is "
                      f"earlier than one before it ({float(before):.6f}; "
                      f"{n} such line(s)): the kernel prints its events in time "
                      f"order, so the trace-time means are not to be trusted", UserWarning,
                      stacklevel=3)


def _warn_overwritten(tr: Trace) -> None:
    """Warn if the trace's header says a full ring buffer overwrote its oldest events.

    A tracefs ``trace`` file of a buffer too small for the recording starts mid-way, with no
    line marking it (``numslab record`` says so when it writes one; a file replayed later, or
    another's, said nothing): its frees of objects allocated before are skipped, and what was
    live then is missing from every figure."""
    if tr.overwritten:
        warnings.warn(f"{tr.source}: its header says the ring buffer overwrote the oldest "
                      f"{tr.overwritten} of {tr.written} events "
                      f"({100 * tr.overwritten / tr.written:.0f}%) before it was read: the "
                      f"replay starts mid-way (record with a larger --buffer-kb)", UserWarning,
                      stacklevel=3)


def _warn_lost(tr: Trace) -> None:
    """Warn if lines of the trace say the ring buffer lost events (``CPU:n [LOST m EVENTS]``).

    ``trace_pipe`` and ``trace-cmd`` print one where a full buffer dropped events: the replay
    misses them (a free of an object it never saw allocated is skipped, an object whose free
    was lost stays live), and said nothing but ``skipped["lost_events_line"]``."""
    at = np.flatnonzero(tr.kind == EV_LOST)
    if len(at):
        warnings.warn(f"{tr.source}: {len(at)} line(s) say the ring buffer lost events "
                      f"(first: line {int(tr.line[at[0]])}): the replay misses them (record "
                      f"with a larger --buffer-kb)", UserWarning, stacklevel=3)


def _warn_no_events(p: Prepared) -> None:
    """Warn if the trace holds no allocation or free event of the ``kmem`` tracepoints.

    An empty ``perf script`` (no perf.data), a file of other events: the replay then reports an
    empty machine as if it had replayed something."""
    tr = p.trace
    if not p.replays:
        warnings.warn(f"{tr.source}: none of its {len(tr)} event line(s) is a kmem allocation "
                      f"or free (kmem_cache_alloc, kmalloc, kmem_cache_free, kfree): nothing "
                      f"to replay", UserWarning, stacklevel=3)


def replay_prepared(p: Prepared, cfg: Config, snapshot: dict[str, dict[str, Any]] | None = None,
                    samples: int = SAMPLES, progress: bool | None = None,
                    memory: int | None = None) -> ReplayResult:
    """Replay a :class:`Prepared` trace on one configuration."""
    tr = p.trace
    seeded = W.seed_bytes(p.names, snapshot) if cfg.warm and snapshot else 0
    mem = memory or _memory(p, cfg, seeded)
    for _ in range(4):
        try:
            res = _run(p, cfg, snapshot, samples, progress, mem)
        except InvalidSizeError as e:
            if 4 * seeded < mem or memory:     # (the warm start's slabs not most of it)
                raise
            size, nm, slabs, order = W.largest_seed(p.names, snapshot or {})
            raise SnapshotFormatError(        # (it named the allocator's memory, no field)
                f"snapshot: a warm start ({cfg.name}) seeds {seeded:,} bytes of slabs, more "
                f"than can be reserved here; the most: cache {nm!r}, slabs {slabs:,} of order "
                f"{order} ({size:,} bytes)") from e
        if res is not None:
            return res
        mem *= 2                                    # the arena ran out: twice as large
    raise OutOfMemoryError(f"replay ({cfg.name}): out of memory with a {mem >> 21} MiB arena per "
                           f"node, {len(tr)} events")


class CompileClock(numba_event.Listener):
    """Wall seconds spent holding Numba's compiler lock (compiling, or loading from the cache).

    Counted once however deeply the lock is taken again inside."""

    def __init__(self) -> None:
        self.depth = 0
        self.seconds = 0.0
        self._since = 0.0

    def on_start(self, event: Any) -> None:
        if self.depth == 0:
            self._since = time.perf_counter()
        self.depth += 1

    def on_end(self, event: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.seconds += time.perf_counter() - self._since


def _run(p: Prepared, cfg: Config, snapshot: dict[str, dict[str, Any]] | None, samples: int,
         progress: bool | None, mem: int) -> ReplayResult | None:
    """One replay attempt; None if the arena ran out.

    Its ``seconds`` leave out what Numba spent compiling or loading code on the way
    (``compile_seconds``): the first replay of a configuration on a fresh machine compiles its
    kernels and units, and a comparison of generations must not count that against whichever ran
    first."""
    clock = CompileClock()
    with numba_event.install_listener("numba:compiler_lock", clock):
        return _run_timed(p, cfg, snapshot, samples, progress, mem, clock)


def _run_timed(p: Prepared, cfg: Config, snapshot: dict[str, dict[str, Any]] | None,
               samples: int, progress: bool | None, mem: int,
               clock: CompileClock) -> ReplayResult | None:
    """:func:`_run`'s body, with ``clock`` counting the compile."""
    t0 = time.perf_counter()
    tr = p.trace
    sa, cids, osize, source = _build(p, cfg, snapshot, mem)
    objs = [sa.find_cache(nm) for nm in p.names]       # per row (aliases share one)
    caches = list(dict.fromkeys(objs))
    policies.set_up(caches, cfg.policy)
    npid = max(p.npid, 1)
    warm = None
    if cfg.warm:                # before the first event, apart from the replay's seconds
        c0 = clock.seconds
        try:
            warm = W.seed(sa, p.names, cids, objs, snapshot, cfg.nodes, npid, cfg.warm)
        except MemoryError:
            return None
        warm.seconds -= clock.seconds - c0      # (its compiling: in compile_seconds)
        t0 += warm.seconds
    nseed = len(warm.pids) if warm is not None else 0
    addr = np.zeros(npid + nseed, np.int64)
    owner = np.zeros(npid + nseed, np.int32)
    lbytes = np.zeros(npid + nseed, np.int64)
    counts = np.zeros(K.K_NCOUNTS + len(p.names), np.int64)     # (then per cache row)
    points = _sample_points(len(tr), samples)
    S, Kn = len(points), len(p.names)
    live = np.zeros((S, Kn), np.int64)
    slabs = np.zeros((S, Kn), np.int64)
    partial = np.zeros((S, Kn), np.int64)
    cpus = np.zeros((S, Kn), np.int64)
    large = np.zeros(S, np.int64)
    structs = np.zeros((S, Kn), np.int64)
    sheaves = np.zeros(sa.state.ca.shape[0], np.int64)
    h = sa.handle
    g = sa.state.g
    work = policies.free_work(sa, caches, cfg.policy, cfg.every == EVERY_FREE, npid + nseed)
    seed = None
    if warm is not None:
        seed = warm.kernel_seed(tr.name)
        addr[npid:], owner[npid:] = warm.addrs, warm.rows
        if work is not None:                # the policy's live counts and back-references
            np.add.at(work[1], cids[warm.rows], 1)
            if work[0].shape[0]:
                work[0][warm.addrs >> 3] = warm.pids
    order = np.array([c.order for c in objs], np.int64)
    first = [np.zeros(Kn, np.int64) for _ in range(4)]      # the state the trace starts in
    K.sample(h, cids, *first, sheaves)
    pk = K.new_peaks(sa, cids, osize, PAGE_SIZE << order, first[0])
    nwork = 0
    bar = None
    if progress or (progress is None and len(tr) >= 2_000_000):
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(tr), unit="ev", desc=f"replay {cfg.name}", leave=False)
        except ImportError:                 # tqdm is optional (the examples extra)
            bar = None
    at = _work_points(len(tr), cfg.every, points)
    stops = np.union1d(points, at).tolist()
    is_sample = set(points.tolist())
    is_work = set(at.tolist())
    start = 0
    s = 0
    objects = np.zeros(Kn, np.int64)
    sys_cpu = np.zeros(Kn, np.int64)
    # plain tuples: replay_chunk's dispatch types them in C (named ones in Python: 1.3 µs a call)
    ev, ptrs = tuple(K.Events.of(tr)), tuple(K.Pointers(addr, owner, lbytes))
    try:
        for stop in stops:
            if stop == start or not p.replays:  # replay_chunk's prologue alone (a trace with
                if pk[-1, K.PK_GEN] != g[G_SLAB_GEN]:   # no kmem event compiled it, 40 s, to
                    K.recount_peaks(h, pk)              # print an empty table)
            elif K.replay_chunk(h, start, stop, ev, cfg.cpus, cfg.nodes, cids, ptrs, counts,
                                work, seed, pk):
                return None
            if g[G_NRCU_SLABS]:     # a grace period ends at each chunk's end: the pages of
                sa.synchronize_rcu()    # SLAB_TYPESAFE_BY_RCU slabs discarded in it go back
            if stop in is_sample:                   # before the remedy's work at this point
                K.sample(h, cids, live[s], slabs[s], partial[s], cpus[s], sheaves)
                if s == S - 1:                      # sysfs objects beside the last sample
                    objects = np.array([c.objects for c in objs], np.int64)
                    sys_cpu = np.array([c.sysfs_cpu_slabs for c in objs], np.int64)
                structs[s] = sheaves[cids]
                large[s] = counts[K.K_LARGE_BYTES]
                s += 1
            if stop in is_work:
                counts[K.K_MOVED] += policies.at_sample(caches, cfg.policy, addr, work)
                if policies.work_ratio(cfg.policy) != K.NO_TRIGGER:
                    nwork += len(caches)
                    K.recount_peaks(h, pk)          # (its slabs, counted again)
            if bar is not None:
                bar.update(stop - start)
            start = stop
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0 - clock.seconds
    stats = [c.stats for c in objs]
    if warm is not None:
        warm.count_frees()
        stats = warm.less_seeding(stats)
    skipped = dict(p.skipped)
    for k, reason in K.SKIP_REASONS.items():
        skipped[reason] = int(counts[k])
    last = np.maximum(points - 1, 0)
    line = tr.line[last] if len(tr) else np.zeros(1, np.int64)
    ts = tr.ts[last] if len(tr) else np.zeros(1)
    series = Series(t=ts, line=line, event=points, live_objects=live, slabs=slabs,
                    partial=partial, cpu_slabs=cpus, large_bytes=large,
                    dt=sample_seconds(tr, points), sheaf_structs=structs)
    return ReplayResult(config=cfg, names=list(p.names), object_size=osize,
                        order=order,
                        objs_per_slab=np.array([c.objs_per_slab for c in objs], np.int64),
                        slab_size=np.array([c.slab_size for c in objs], np.int64),
                        geometry=source, series=series, lines=len(tr),
                        replayed=int(counts[K.K_REPLAYED]), skipped=skipped,
                        untraced_frees=int(counts[K.K_UNTRACED_FREE]),
                        untraced_per_cache=counts[K.K_NCOUNTS:].copy(), seconds=seconds,
                        compile_seconds=clock.seconds,
                        stats=stats, memory_per_node=mem,
                        flags=np.array([c.flags for c in objs], np.int64),
                        objects=objects, sysfs_cpu_slabs=sys_cpu,
                        aliases=_aliases(p.names, snapshot), allocator=sa,
                        work_runs=nwork + int(counts[K.K_WORK]),
                        objects_moved=int(counts[K.K_MOVED]),
                        seeded_frees=int(counts[K.K_SEEDED_FREE]), warm=warm,
                        peak_live=pk[cids, K.PK_PEAK_LIVE], peak_slabs=pk[cids, K.PK_PEAK_SLABS],
                        peak_bytes=(int(pk[-1, 1]), int(pk[-1, 3])))


def replay_trace(tr: Trace, configs: Sequence[Config], snapshot: str | Path | dict | None = None,
                 samples: int = SAMPLES, progress: bool | None = None,
                 parse_seconds: float = 0.0) -> list[ReplayResult]:
    """Replay a parsed trace on each configuration (the same prepared events)."""
    t0 = time.perf_counter()
    snap = load_snapshot(snapshot) if snapshot is not None else None
    if snap is None and any(c.warm for c in configs):
        raise InvalidArgumentError("a warm start needs the snapshot taken before the "
                                   "recording (snapshot=, --snapshot)")
    p = prepare(merge_aliases(tr, snap) if snap else tr)
    _warn_time_order(tr)
    _warn_overwritten(tr)
    _warn_lost(tr)
    _warn_no_events(p)
    prep = time.perf_counter() - t0
    out = []
    for cfg in configs:
        r = replay_prepared(p, cfg, snap, samples, progress)
        r.parse_seconds = parse_seconds + prep
        r.overwritten_events = tr.overwritten
        out.append(r)
    return out


def _configs(kernel: str, cpus: int, nodes: int, policy: str, every: int | str,
             compare: Sequence[str] | str | None, warm: bool | str = False) -> list[Config]:
    """The configurations :func:`replay` runs (``compare``'s, or the one of the other arguments).

    ``InvalidArgumentError`` (a ``SlabError``) for any that cannot run."""
    try:
        if every == "free":
            every = EVERY_FREE
        elif isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 0:
            raise BadArg(f"every={every!r}: a number of events >= 0 (0: at the sample "
                         f"points) or 'free'")
        base = Config(kernel, int(cpus), int(nodes), _policy(policy), int(every),
                      _warm(bool(warm) if isinstance(warm, np.bool_) else warm))
        if not compare:             # (with --compare, a configuration's own policy counts)
            _check_every_free(base.policy, base.every, base.name, base.kernel)
        if base.nodes > MAX_NODES:      # (named alone: the CPUs may be the trace's, unread)
            raise BadArg(f"{base.nodes} nodes: past the {MAX_NODES} a machine may have")
        if base.nodes > base.cpus or not 1 <= base.cpus <= MAX_CPUS \
                or not 1 <= base.nodes:
            raise BadArg(f"{base.nodes} nodes and {base.cpus} CPUs: need 1 <= nodes <= "
                         f"cpus <= {MAX_CPUS}, nodes <= {MAX_NODES}")
        if isinstance(compare, str):
            compare = [c for c in compare.split(",") if c.strip()]
            if not compare:
                raise BadArg("compare: no configuration given (e.g. 6.18,7.0)")
        configs = [parse_config(c, base) for c in compare] if compare else [base]
    except InvalidArgumentError:
        raise
    except SlabError as e:
        raise InvalidArgumentError(str(e)) from None
    seen = [c.name for c in configs]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise InvalidArgumentError(f"compare: {', '.join(twice)} given twice (each "
                                   f"configuration is replayed once and named by its "
                                   f"configuration)")
    return configs


def replay(trace: str | Path | BinaryIO | bytes | Trace, *, snapshot: str | Path | dict | None
           = None, kernel: str = "7.0", cpus: int | None = None, nodes: int = 1,
           policy: str = "default", compare: Sequence[str] | str | None = None,
           skip_bad: bool = False, samples: int = SAMPLES, progress: bool | None = None,
           every: int | str = 0, warm: bool | str = False) -> ReplayResult:
    """Replay a kernel kmem trace through numslab's SLUB.

    Parameters
    ----------
    trace : path, ``"-"``, binary file, bytes or Trace
        ``/sys/kernel/tracing/trace`` or ``trace_pipe`` text, ``trace-cmd report`` or
        ``perf script`` text of the kmem events; plain, gz or xz.
    snapshot : path or dict, optional
        ``numslab snapshot`` JSON: the caches' geometry; else it comes from the events.
    kernel, cpus, nodes, policy
        The configuration (``cpus`` defaults to the trace's CPU count).
    compare : sequence of str, optional
        The configurations to run side by side, instead of the one above
        (``KERNEL[:cpus=N][:nodes=N][:POLICY][:every=N][:warm|:cold]``; what one leaves
        out is taken from ``kernel``, ``cpus``, ``nodes``, ``policy``, ``every`` and
        ``warm``). The result is the first
        listed; ``result.configs`` holds them all by name and ``result.compare_table()``
        prints them side by side.
    skip_bad : bool
        Count malformed lines (``skipped["bad_line"]``) instead of raising.
    samples : int
        Points of the time series (at least 200 unless the trace is shorter).
    every : int or ``"free"``
        Run the policy's work (``shrink``, ``mobility``) every this many events; 0 (the
        default): at the sample points; ``"free"``: on one cache, after each free that
        leaves it a slab more than its live objects need.
    warm : bool or ``"slab"`` or ``"random"``
        Start every configuration from the snapshot's state (it must be the snapshot taken
        just before the recording): each cache the trace uses that the snapshot has gets
        its ``slabs``, ``partial`` slabs and ``objects`` before the first event, and a
        ``kmem_cache_free`` of a pointer the trace never allocated frees one of them, slab
        by slab (True, ``"slab"``) or uniformly at random (``"random"``), seeded
        (:mod:`numslab.lab.warm`; a configuration's ``:warm``, ``:warm=random`` or
        ``:cold`` chooses for it).

    Returns
    -------
    ReplayResult
    """
    if not isinstance(kernel, str) or kernel not in KERNELS:   # (before the parse's work)
        each = "" if isinstance(kernel, str) else ", each a str"
        raise InvalidArgumentError(f"kernel {kernel!r} is not one of {', '.join(KERNELS)}"
                                   f"{each}")
    for what, v in (("skip_bad", skip_bad), ("progress", progress)):
        if v is not None and not isinstance(v, (bool, np.bool_)):
            raise InvalidArgumentError(f"{what}={v!r}: True or False")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise InvalidArgumentError(f"samples={samples!r}: the time series needs at least 1 "
                                   f"point")
    for what, v in (("cpus", 1 if cpus is None else cpus), ("nodes", nodes)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidArgumentError(f"{what}={v!r}: a whole number of "
                                       f"{what[:-1].upper()}s")
    # the configurations checked before the trace is read (a bad policy or compare was
    # refused only after minutes of parsing), with the trace's CPU count once it is known
    try:
        early = _configs(kernel, MAX_CPUS if cpus is None else cpus, nodes, policy, every,
                         compare, warm)
    except InvalidArgumentError as e:       # (not the stand-in CPU count, in the names)
        raise InvalidArgumentError(str(e).replace(f":cpus={MAX_CPUS}", "")) from None
    if snapshot is None and any(c.warm for c in early):
        raise InvalidArgumentError("a warm start needs the snapshot taken before the "
                                   "recording (snapshot=, --snapshot)")
    if all(isinstance(s, (str, Path)) and str(s) == "-" for s in (trace, snapshot)):
        raise InvalidArgumentError("the trace and the snapshot cannot both be standard input "
                                   "('-')")
    # read before the trace (a missing or malformed one was found after the whole parse)
    snapshot = load_snapshot(snapshot) if snapshot is not None else None
    # a second process compiles the replay's units on an empty Numba cache once the arguments
    # are known good (from Python they compiled on one core: 47 s cold in a kernel engineer's
    # trial, the command 28-40 s); nothing is started once they are cached
    with prewarm(REPLAY_UNITS):
        return _replay(trace, snapshot, kernel=kernel, cpus=cpus, nodes=nodes, policy=policy,
                       compare=compare, skip_bad=skip_bad, samples=samples, progress=progress,
                       every=every, warm=warm)


def _replay(trace: str | Path | BinaryIO | bytes | Trace, snapshot: dict | None, *, kernel: str,
            cpus: int | None, nodes: int, policy: str, compare: Sequence[str] | str | None,
            skip_bad: bool, samples: int, progress: bool | None, every: int | str,
            warm: bool | str) -> ReplayResult:
    """:func:`replay`'s work, its arguments checked: parse, then replay each configuration."""
    t0 = time.perf_counter()
    clock = CompileClock()
    with numba_event.install_listener("numba:compiler_lock", clock):
        tr = trace if isinstance(trace, Trace) else read_trace(trace, skip_bad)
    if isinstance(trace, Trace):
        check_trace(trace)                  # built or changed by hand: indexes compiled code
    parse = time.perf_counter() - t0 - clock.seconds
    if cpus is None:
        cpus = int(tr.cpu.max()) + 1 if len(tr) and tr.cpu.max() >= 0 else 1
        if cpus > MAX_CPUS:             # the machine is sized from the trace: name its line
            i = int(np.argmax(tr.cpu))
            raise TraceFormatError(f"{tr.source}, line {int(tr.line[i])}: CPU {cpus - 1} is "
                                   f"past the {MAX_CPUS} CPUs a machine may have (give cpus= to "
                                   f"fold the trace's CPUs onto fewer)")
        named = len(np.unique(tr.cpu[tr.cpu >= 0]))
        if cpus > max(8, 2 * named):    # (a kernel engineer's trial: one line's CPU 4095
            i = int(np.argmax(tr.cpu))  # made a machine of 4096 CPUs, %Ef 0.6, unsaid)
            warnings.warn(f"{tr.source}: its events name {named} CPU(s), the highest CPU "
                          f"{cpus - 1} (line {int(tr.line[i])}): the machine gets {cpus} CPUs, "
                          f"each with its own sheaves or CPU slabs (give cpus= to fold the "
                          f"trace's CPUs onto fewer)", UserWarning, stacklevel=3)
    configs = _configs(kernel, cpus, nodes, policy, every, compare, warm)
    results = replay_trace(tr, configs, snapshot, samples, progress, parse)
    first = results[0]
    first.compile_seconds += clock.seconds          # the parse's, with the first replay's
    if compare:
        first.configs = Configs((r.config.name, r) for r in results)
    return first
