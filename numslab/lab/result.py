"""The replay's result: per-cache tables and time series as NumPy arrays, and their outputs.

The ``tools/mm/slabinfo``-style table, the JSON object and the plot of a replay.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import flags as F
from ..errors import InvalidArgumentError, WrongTypeError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .config import Config

__all__ = ["Series", "ReplayResult", "store_size", "format_compare", "plot_results"]

PAGE_SIZE = 4096


def _percent(used: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``used`` over ``total`` in percent, float64[n]; 100 where ``total`` is 0 (nothing wasted).

    As the figure at the end reads a machine with no slab memory: a sample with none counted 0
    in the means (``%Ef mean`` 0.0 beside ``%Ef at the end`` 100.0)."""
    return np.where(total > 0, used * 100.0 / np.maximum(total, 1), 100.0)


@dataclass
class Series:
    """The replay sampled at ``S`` points over the trace, for each of ``K`` caches.

    Attributes
    ----------
    t : numpy.ndarray
        float64[S], the trace's timestamp (seconds) of the last event before each point.
    line : numpy.ndarray
        int64[S], the line number of that event in the text.
    event : numpy.ndarray
        int64[S], events (parsed lines) replayed before each point.
    live_objects, slabs, partial, cpu_slabs : numpy.ndarray
        int64[S, K]: objects users hold (the engine's exact count less the allocator's own
        sheaves), slabs, partial slabs on the node lists, CPU slabs (6.18's CPU slab and CPU
        partial slabs).
    live_bytes, slab_bytes : numpy.ndarray
        int64[S, K]: live objects times the object size; slabs times the slab's bytes.
    large_bytes : numpy.ndarray
        int64[S], bytes of live kmallocs above the largest kmalloc cache (whole pages).
    dt : numpy.ndarray
        float64[S], the trace seconds each sample stands for: from the previous point's
        timestamp to this one's (the first from the trace's first event); the weights of
        the time-averaged figures. The points are evenly spaced in events, not in time.
    sheaf_structs : numpy.ndarray
        int64[S, K]: the allocator's own sheaf structs (7.0's, and 6.18's opt-in ones)
        each cache's slabs hold: kmalloc objects in use that are not users' live objects.
    """

    t: np.ndarray
    line: np.ndarray
    event: np.ndarray
    live_objects: np.ndarray
    slabs: np.ndarray
    partial: np.ndarray
    cpu_slabs: np.ndarray
    large_bytes: np.ndarray
    live_bytes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    slab_bytes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    dt: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sheaf_structs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    def time_mean(self, values: np.ndarray) -> float:
        """The mean of ``values`` (float64[S], one per sample) over trace time.

        Each sample is weighted by the seconds it stands for (``dt``); the plain mean over the
        samples when the trace has no time span."""
        w = self.dt if len(self.dt) == len(values) else np.zeros(len(values))
        total = float(w.sum())
        if total <= 0:
            return float(np.mean(values)) if len(values) else 0.0
        return float((values * w).sum() / total)

    @property
    def total_live_bytes(self) -> np.ndarray:
        """int64[S]: live bytes of every cache."""
        return self.live_bytes.sum(axis=1)

    @property
    def total_slab_bytes(self) -> np.ndarray:
        """int64[S]: slab bytes of every cache."""
        return self.slab_bytes.sum(axis=1)


class Configs(dict):
    """``ReplayResult.configs``: each configuration's result by its name (as ``--compare`` has it).

    E.g. ``"7.0:cpus=2"``. The generation alone (``"7.0"``) finds the one configuration of that
    generation; a key that names none, or several, raises ``KeyError`` listing the names (a bare
    ``KeyError: '6.18'`` left the user to guess them)."""

    def __missing__(self, key: Any) -> "ReplayResult":
        found = [k for k in self if isinstance(key, str) and k.split(":", 1)[0] == key]
        if len(found) == 1:
            return self[found[0]]
        raise KeyError(f"{key!r} is {'more than one' if found else 'none'} of the "
                       f"configurations: {', '.join(self) or 'none were compared'}")


@dataclass
class ReplayResult:
    """One configuration's replay of a trace: per-cache tables, time series, accounting, counters.

    ``caches`` (final values and peaks per cache, arrays in the order of ``names``), ``series``
    (the time series), the accounting of every line, SLUB's counters per cache (``stats``), the
    ``allocator`` replayed on (its end state, e.g. for ``allocator.validate()``) and, after
    ``--compare``, every configuration's result in ``configs``. ``object_size``, ``order``,
    ``objs_per_slab``, ``slab_size`` and ``flags`` are int64[K], one per cache row of ``names``;
    ``series`` holds the float64[S], int64[S] and int64[S, K] time series (:class:`Series`)."""

    config: "Config"
    names: list[str]
    object_size: np.ndarray
    order: np.ndarray
    objs_per_slab: np.ndarray
    slab_size: np.ndarray
    geometry: list[str]
    series: Series
    lines: int
    replayed: int
    skipped: dict[str, int]
    untraced_frees: int
    seconds: float
    stats: list[dict[str, int]]
    memory_per_node: int
    flags: np.ndarray | None = None
    #: per cache at the last sample (beside ``series``' last row, before the remedy's work
    #: there), int64[K]: objects in use as sysfs ``objects`` counts them (all
    #: objects of the cache's slabs less the free ones on node partial lists: objects cached
    #: in sheaves and CPU slabs count as in use), the column ``tools/mm/slabinfo`` prints
    objects: np.ndarray | None = None
    #: per cache at the last sample, int64[K]: sysfs ``cpu_slabs`` (a CPU's slab and, if it
    #: has one, its CPU partial slabs; ``series.cpu_slabs`` counts every CPU partial list),
    #: what ``tools/mm/slabinfo``'s ``Slabs/Part/Cpu`` prints
    sysfs_cpu_slabs: np.ndarray | None = None
    #: per cache, int64[K]: the untraced frees of its objects (a traced allocation returned
    #: a pointer still live there; large kmallocs' in ``untraced_frees`` only)
    untraced_per_cache: np.ndarray | None = None
    #: per cache, int64[K]: the snapshot's ``aliases`` of the kernel cache the row replays
    #: (other caches merged into it; 0 without a snapshot), slabinfo's ``*`` flag
    aliases: np.ndarray | None = None
    allocator: Any = None
    parse_seconds: float = 0.0
    #: events the trace's ring buffer overwrote before it was read (its tracefs header's
    #: entries-written less entries-in-buffer; 0: none, or no such header): the replay
    #: started that far into the recording
    overwritten_events: int = 0
    #: times the policy's work (a shrink or compaction of one cache) ran: per cache at each
    #: work point, or after the frees that triggered it (``every=free``)
    work_runs: int = 0
    #: objects the policy's compactions moved
    objects_moved: int = 0
    #: seconds Numba spent compiling or loading code during the replay (and, for the first
    #: configuration of ``numslab.replay``, the parse), left out of ``seconds`` and
    #: ``parse_seconds``
    compile_seconds: float = 0.0
    #: frees of pointers the trace never allocated that took a seeded object (a warm
    #: start's; in ``replayed``, no longer in ``skipped["untraced_alloc"]``)
    seeded_frees: int = 0
    #: what a warm start seeded (``numslab.lab.warm.WarmStart``), None for a cold start
    warm: Any = None
    #: per cache, int64[K]: the most objects users held, and the most slabs, at any event
    #: (and before the first), kept as the replay ran (``kernels.Peaks``); None: the
    #: series' maxima stand in
    peak_live: np.ndarray | None = None
    peak_slabs: np.ndarray | None = None
    #: the machine's most live bytes and most slab bytes at any event (None: the series')
    peak_bytes: tuple[int, int] | None = None
    configs: dict[str, "ReplayResult"] = field(default_factory=Configs)

    @property
    def kernel(self) -> str:
        """The SLUB generation replayed (``config.kernel``)."""
        return self.config.kernel

    def __post_init__(self) -> None:
        s = self.series
        s.live_bytes = s.live_objects * self.object_size[None, :]
        s.slab_bytes = s.slabs * (PAGE_SIZE << self.order)[None, :]

    # ---- the table ------------------------------------------------------------------------
    @property
    def caches(self) -> dict[str, np.ndarray]:
        """Per cache, at the end of the trace: counts, bytes, percentages, peaks at any event.

        Arrays over ``names``: ``live_objects``, ``live_bytes``, ``slabs``, ``slab_bytes``,
        ``partial``, ``cpu_slabs``, ``frac_partial`` (``%Fr``), ``efficiency`` (``%Ef``), ``loss``
        (slab bytes less live bytes), the peaks (``peak_live_objects``, ``peak_live_bytes``,
        ``peak_slabs``, ``peak_slab_bytes``: the most at any event, or before the first, kept
        as the replay ran; the series' maxima for a result made without them),
        ``slabs_allocated``,
        ``slabs_freed`` (the kernel's FREE_SLAB counter, which ``kmem_cache_shrink`` and a
        compaction's shrink do not count) and ``untraced_frees`` (its objects freed where the trace
        shows no free); int64[K] except the two percentages (float64[K])."""
        s = self.series
        peak_live = s.live_objects.max(axis=0) if self.peak_live is None else self.peak_live
        peak_slabs = s.slabs.max(axis=0) if self.peak_slabs is None else self.peak_slabs
        slabs = s.slabs[-1]
        slab_bytes = s.slab_bytes[-1]
        live_bytes = s.live_bytes[-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            fr = np.where(slabs > 0, s.partial[-1] * 100.0 / np.maximum(slabs, 1), 100.0)
            ef = np.where(slab_bytes > 0, live_bytes * 100.0 / np.maximum(slab_bytes, 1),
                          100.0)
        return {
            "live_objects": s.live_objects[-1], "live_bytes": live_bytes, "slabs": slabs,
            "slab_bytes": slab_bytes, "partial": s.partial[-1], "cpu_slabs": s.cpu_slabs[-1],
            "frac_partial": fr, "efficiency": ef, "loss": slab_bytes - live_bytes,
            "peak_live_objects": peak_live, "peak_live_bytes": peak_live * self.object_size,
            "peak_slabs": peak_slabs,
            "peak_slab_bytes": peak_slabs * (PAGE_SIZE << self.order),
            "slabs_allocated": np.array([st.get("alloc_slab", 0) for st in self.stats],
                                        np.int64),
            "slabs_freed": np.array([st.get("free_slab", 0) for st in self.stats], np.int64),
            "untraced_frees": self.untraced_per_cache if self.untraced_per_cache is not None
            else np.zeros(len(self.names), np.int64),
        }

    @property
    def counters(self) -> dict[str, int]:
        """The generation's SLUB counters summed over every cache."""
        out: dict[str, int] = {}
        for st in self.stats:
            for k, v in st.items():
                out[k] = out.get(k, 0) + int(v)
        return out

    @property
    def totals(self) -> dict[str, int | float]:
        """The whole machine at the end and at its peak, and its utilisation's means.

        Live and slab bytes, slabs, partial slabs, ``%Ef``, and the large kmallocs' pages; the
        peaks of live and of slab bytes (``peak_live_bytes``, ``peak_slab_bytes``) at any event,
        kept as the replay ran; the
        utilisation (``%Ef``, live bytes over slab bytes) averaged over the samples
        (``mean_efficiency``: each sample alike, so weighted by events) and over trace time
        (``time_mean_efficiency``: each sample weighted by the seconds it stands for); and both
        means of the utilisation the same live objects would give packed into the fewest slabs of
        their caches (``packed_mean_efficiency``, ``packed_time_mean_efficiency``: nothing in
        sheaves or CPU slabs, no partial slab but one per cache; what no remedy run at the sample
        points can beat). A second, labelled figure counts the allocator's own sheaf structs as in
        use with the live bytes (``with_sheaves_mean_efficiency``,
        ``with_sheaves_time_mean_efficiency``): they are kmalloc objects no remedy can free while
        their caches exist."""
        s = self.series
        lb, sb = s.total_live_bytes, s.total_slab_bytes
        ef = _percent(lb, sb)
        fewest = -(-s.live_objects // np.maximum(self.objs_per_slab, 1)[None, :])
        packed = _percent(lb, (fewest * (PAGE_SIZE << self.order)[None, :]).sum(axis=1))
        own = lb * 0
        if s.sheaf_structs.shape == s.live_objects.shape:
            own = (s.sheaf_structs * self.object_size[None, :]).sum(axis=1)
        ef_own = _percent(lb + own, sb)
        peak = self.peak_bytes or (int(lb.max()), int(sb.max()))
        return {"live_bytes": int(lb[-1]), "slab_bytes": int(sb[-1]),
                "slabs": int(s.slabs[-1].sum()), "partial": int(s.partial[-1].sum()),
                "efficiency": float(lb[-1] * 100.0 / sb[-1]) if sb[-1] else 100.0,
                "loss": int(sb[-1] - lb[-1]),
                "peak_live_bytes": peak[0], "peak_slab_bytes": peak[1],
                "mean_efficiency": float(np.mean(ef)),
                "time_mean_efficiency": s.time_mean(ef),
                "packed_mean_efficiency": float(np.mean(packed)),
                "packed_time_mean_efficiency": s.time_mean(packed),
                "with_sheaves_mean_efficiency": float(np.mean(ef_own)),
                "with_sheaves_time_mean_efficiency": s.time_mean(ef_own),
                "large_bytes": int(s.large_bytes[-1])}

    @property
    def events_per_second(self) -> float:
        """Lines read per second of parsing and replay."""
        t = self.parse_seconds + self.seconds
        return self.lines / t if t > 0 else 0.0

    def to_json(self, configs: bool = True) -> dict[str, Any]:
        """The result as one JSON-ready object.

        With ``configs`` after a compare, unless ``configs`` is false."""
        c = self.caches
        cfg = self.config
        out: dict[str, Any] = {
            "config": cfg.name, "kernel": cfg.kernel, "cpus": cfg.cpus, "nodes": cfg.nodes,
            "policy": cfg.policy, "lines": self.lines, "replayed": self.replayed,
            "skipped": dict(self.skipped), "untraced_frees": self.untraced_frees,
            "seeded_frees": self.seeded_frees,
            "warm": self.warm.to_json() if self.warm is not None else None,
            "events_per_second": round(self.events_per_second, 1),
            "seconds": round(self.seconds, 4), "parse_seconds": round(self.parse_seconds, 4),
            "compile_seconds": round(self.compile_seconds, 4),
            "overwritten_events": self.overwritten_events,
            "memory_per_node": self.memory_per_node, "samples": int(len(self.series.t)),
            "work_runs": self.work_runs, "objects_moved": self.objects_moved,
            "totals": self.totals, "counters": self.counters,
            "caches": {nm: {"live_objects": int(c["live_objects"][k]),
                            "live_bytes": int(c["live_bytes"][k]),
                            "objects": int(self.objects[k]) if self.objects is not None
                            else int(c["live_objects"][k]),
                            "aliases": int(self.aliases[k]) if self.aliases is not None else 0,
                            "slabs": int(c["slabs"][k]), "slab_bytes": int(c["slab_bytes"][k]),
                            "partial": int(c["partial"][k]),
                            "cpu_slabs": int(c["cpu_slabs"][k]),
                            "sysfs_cpu_slabs": int(self.sysfs_cpu_slabs[k])
                            if self.sysfs_cpu_slabs is not None else int(c["cpu_slabs"][k]),
                            "flags": self._flags(k),
                            "object_size": int(self.object_size[k]),
                            "slab_size": int(self.slab_size[k]),
                            "order": int(self.order[k]),
                            "objs_per_slab": int(self.objs_per_slab[k]),
                            "frac_partial": round(float(c["frac_partial"][k]), 2),
                            "efficiency": round(float(c["efficiency"][k]), 2),
                            "loss": int(c["loss"][k]),
                            "peak_live_objects": int(c["peak_live_objects"][k]),
                            "peak_slab_bytes": int(c["peak_slab_bytes"][k]),
                            "slabs_allocated": int(c["slabs_allocated"][k]),
                            "slabs_freed": int(c["slabs_freed"][k]),
                            "untraced_frees": int(c["untraced_frees"][k]),
                            "geometry": self.geometry[k],
                            "counters": {n: int(v) for n, v in self.stats[k].items() if v}}
                       for k, nm in enumerate(self.names)},
        }
        if self.configs and configs:
            out["configs"] = {name: r.to_json(False) for name, r in self.configs.items()}
        return out

    def table(self, all_caches: bool = False, sort: str = "slab_bytes") -> str:
        """``tools/mm/slabinfo``'s table of the end state, largest ``sort`` first.

        Name, Objects, Objsize, Space, Slabs/Part/Cpu, O/S, O, %Fr, %Ef, Flg; caches with no slab
        left out unless ``all_caches``.

        As slabinfo prints it: ``Objects`` is sysfs ``objects`` (:attr:`objects`: objects in
        sheaves and CPU slabs count as in use), ``Cpu`` sysfs ``cpu_slabs``
        (:attr:`sysfs_cpu_slabs`) and ``%Ef`` is that many objects' bytes over the slab bytes,
        truncated. The live objects the trace holds, and the ``%Ef`` of
        :attr:`caches` and :meth:`compare_table`, leave the cached ones out. Ties come in
        case-blind name order, as slabinfo's ``sort_slabs`` breaks them (``-S``, ``-P``)."""
        c = self.caches
        if not isinstance(sort, str) or sort not in c:      # (a KeyError before)
            raise InvalidArgumentError(f"table: sort {sort!r} is not one of {', '.join(c)}")
        # slabinfo.c's sort_slabs: ties fall to strcasecmp of the names (ASCII, case-blind)
        keys = sorted(range(len(self.names)),
                      key=lambda k: (-c[sort][k], self.names[k].encode().lower()))
        objects = self.objects if self.objects is not None else c["live_objects"]
        cpus = self.sysfs_cpu_slabs if self.sysfs_cpu_slabs is not None else c["cpu_slabs"]
        lines = ["Name                   Objects Objsize           Space Slabs/Part/Cpu  O/S O "
                 "%Fr %Ef Flg"]
        for k in keys:
            if not all_caches and c["slabs"][k] == 0 and c["live_objects"][k] == 0:
                continue
            slabs, cpu = int(c["slabs"][k]), int(cpus[k])
            dist = f"{max(slabs - cpu, 0)}/{int(c['partial'][k])}/{cpu}"
            fr = int(c["partial"][k] * 100 // slabs) if slabs else 100
            slab_bytes = int(c["slab_bytes"][k])
            n = int(objects[k])
            ef = n * int(self.object_size[k]) * 100 // slab_bytes if slab_bytes else 100
            space = store_size(slab_bytes)
            lines.append(f"{self.names[k]:<21s} {n:8d} "    # slabinfo's %-21s: no cut
                         f"{int(self.object_size[k]):7d} {space:>15s} "
                         f"{dist:>14s} {int(self.objs_per_slab[k]):4d} {int(self.order[k]):1d} "
                         f"{fr:3d} {ef:3d} {self._flags(k)}")
        return "\n".join(lines)

    def compare_table(self, top: int = 12) -> str:
        """Every configuration of the run side by side; one column without ``compare``.

        ``numslab replay --compare``'s table: :func:`format_compare`."""
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0:
            raise WrongTypeError(f"compare_table: top {top!r} is not a number of caches")
        return format_compare(list(self.configs.values()) if self.configs else [self], top)

    def _flags(self, k: int) -> str:
        """slabinfo's Flg column for cache row ``k``, in its order.

        ``*`` aliases, ``d`` DMA, ``A`` hardware-cache aligned, ``P`` poison, ``a`` reclaim
        accounted, ``Z`` red zone, ``F`` consistency checks, ``U`` store user, ``T`` trace."""
        f = int(self.flags[k]) if self.flags is not None else 0
        out = "*" if self.aliases is not None and self.aliases[k] > 0 else ""
        for bit, ch in ((F.SLAB_CACHE_DMA, "d"), (F.SLAB_HWCACHE_ALIGN, "A"),
                        (F.SLAB_POISON, "P"), (F.SLAB_RECLAIM_ACCOUNT, "a"),
                        (F.SLAB_RED_ZONE, "Z"), (F.SLAB_CONSISTENCY_CHECKS, "F"),
                        (F.SLAB_STORE_USER, "U"), (F.SLAB_TRACE, "T")):
            if f & bit:
                out += ch
        return out

    def summary(self) -> str:
        """The accounting of the lines and the whole machine's figures, as text."""
        t = self.totals
        sk = ", ".join(f"{k} {v}" for k, v in self.skipped.items() if v) or "none"
        most = ""
        per = self.untraced_per_cache
        if per is not None and len(per) and per.max() > 0:
            k = int(np.argmax(per))
            most = f"; most in {self.names[k]}: {int(per[k])}"
        return (f"{self.config.name}: {self.lines} lines, {self.replayed} replayed, skipped: "
                f"{sk}; {self.untraced_frees} untraced frees (a pointer allocated again while "
                f"live{most})"
                + (f"; warm start: {self._warm_text()}" if self.warm is not None else "")
                + "\n"
                f"end: live {store_size(t['live_bytes'])}B in {store_size(t['slab_bytes'])}B of "
                f"slabs (%Ef {t['efficiency']:.1f}, loss {store_size(t['loss'])}B, "
                f"{t['slabs']} slabs, {t['partial']} partial); peaks: live "
                f"{store_size(t['peak_live_bytes'])}B, slabs {store_size(t['peak_slab_bytes'])}B; "
                f"{self.events_per_second:,.0f} lines/s"
                + (f" (+ {self.compile_seconds:.1f} s compiling, not counted)"
                   if self.compile_seconds >= 0.5 else "")
                + (f"; policy work run {self.work_runs} times, {self.objects_moved} objects "
                   f"moved" if self.work_runs else ""))

    def _warm_text(self) -> str:
        """The warm start's seeding and seeded frees, for :meth:`summary`."""
        t = self.warm.total
        unmet = f" (not met exactly: {', '.join(self.warm.unmet)})" if self.warm.unmet else ""
        return (f"{t['objects']} objects in {t['slabs']} slabs ({t['partial']} partial) of "
                f"{t['caches']} caches seeded from the snapshot{unmet}; {self.seeded_frees} "
                f"untraced frees took a seeded object")


def store_size(value: int) -> str:
    """A byte count as ``tools/mm/slabinfo``'s ``store_size`` prints it.

    ``24.8M``, ``286.7K``, ``1.2G`` (one decimal, truncated), plain below 1000."""
    divisor, trailer = 1, ""
    if value > 1_000_000_000:
        divisor, trailer = 100_000_000, "G"
    elif value > 1_000_000:
        divisor, trailer = 100_000, "M"
    elif value > 1000:
        divisor, trailer = 100, "K"
    s = str(value // divisor)
    if trailer:
        s = s[:-1] + "." + s[-1] + trailer
    return s


#: the widest line :func:`format_compare` prints with the configurations' names as column
#: heads; past it the columns are numbered and a legend names them first
COMPARE_WIDTH = 160


def format_compare(results: list[ReplayResult], top: int = 12) -> str:
    """The configurations side by side: the machine's totals, then the caches with most slab bytes.

    Slab bytes and %Ef per configuration; ``-`` for a cache with no slab there. Names too long for
    :data:`COMPARE_WIDTH` become ``[1]``, ``[2]``... with a legend."""
    names = [r.config.name for r in results]
    w = max(14, *(len(n) for n in names))
    out = []
    if 22 + len(names) * (w + 1) > COMPARE_WIDTH:   # long names: numbered, with a legend
        out = [f"[{i}] {n}" for i, n in enumerate(names, 1)] + [""]
        names = [f"[{i}]" for i in range(1, len(names) + 1)]
        w = 14
    rows = [("live bytes", "live_bytes"), ("slab bytes", "slab_bytes"), ("loss", "loss"),
            ("slabs", "slabs"), ("partial slabs", "partial"),
            ("peak slab bytes", "peak_slab_bytes"), ("peak live bytes", "peak_live_bytes")]
    out.append(f"{'machine':<22}" + "".join(f"{n:>{w + 1}}" for n in names))
    for label, key in rows:         # bytes as slabinfo's store_size, counts exactly
        cells = [r.totals[key] if key in ("slabs", "partial") else store_size(r.totals[key])
                 for r in results]
        out.append(f"{label:<22}" + "".join(f"{c:>{w + 1}}" for c in cells))
    # objects sysfs counts in use that no user holds: cached in sheaves and barns (7.x), on
    # 6.18's CPU slabs, and the allocator's own structs (the last sample's, as ``objects``)
    out.append(f"{'cached objects':<22}" + "".join(
        f"{_cached(r):>{w + 1}}" for r in results))
    out.append(f"{'%Ef at the end':<22}" + "".join(f"{r.totals['efficiency']:>{w + 1}.1f}"
                                                   for r in results))
    out.append(f"{'%Ef mean, per sample':<22}" + "".join(
        f"{r.totals['mean_efficiency']:>{w + 1}.1f}" for r in results))
    out.append(f"{'%Ef mean, trace time':<22}" + "".join(
        f"{r.totals['time_mean_efficiency']:>{w + 1}.1f}" for r in results))
    out.append(f"{'  with sheaf structs':<22}" + "".join(
        f"{r.totals['with_sheaves_time_mean_efficiency']:>{w + 1}.1f}" for r in results))
    out.append(f"{'  packed (bound)':<22}" + "".join(
        f"{r.totals['packed_time_mean_efficiency']:>{w + 1}.1f}" for r in results))
    out.append(f"{'slabs allocated':<22}" + "".join(
        f"{int(r.caches['slabs_allocated'].sum()):>{w + 1}d}" for r in results))
    out.append(f"{'replay seconds':<22}" + "".join(f"{r.seconds:>{w + 1}.2f}" for r in results))
    if any(r.compile_seconds >= 0.005 for r in results):
        out.append(f"{'  + compiling':<22}" + "".join(
            f"{r.compile_seconds:>{w + 1}.2f}" for r in results))
    out.append("")
    first = results[0]
    big = np.argsort(-np.max([r.caches["slab_bytes"] for r in results], axis=0))[:top]
    out.append(f"{'cache (slab bytes %Ef)':<22}" + "".join(f"{n:>{w + 1}}" for n in names))
    for k in big.tolist():
        cells = [f"{store_size(int(r.caches['slab_bytes'][k]))} {_ef(r.caches, k):3d}%"
                 if r.caches["slab_bytes"][k] else "0    -" for r in results]
        out.append(f"{first.names[k][:22]:<22}" + "".join(f"{c:>{w + 1}}" for c in cells))
    return "\n".join(out)


def _cached(r: ReplayResult) -> str:
    """Sysfs ``objects`` less the live objects over every cache, at the last sample.

    ``-`` for a result made without ``objects``."""
    if r.objects is None:
        return "-"
    return str(int(np.sum(r.objects - r.series.live_objects[-1])))


def _ef(caches: dict, k: int) -> int:
    """Cache ``k``'s ``%Ef`` as ``tools/mm/slabinfo`` prints it.

    Live bytes over slab bytes in whole percent, truncated (100 with no slab)."""
    slab = int(caches["slab_bytes"][k])
    return int(caches["live_bytes"][k]) * 100 // slab if slab else 100


def plot_results(results: list[ReplayResult], path: str, top: int = 15) -> "Figure":
    """Draw each configuration's slab memory and per-cache %Ef into ``path`` (needs matplotlib).

    For each configuration, slab memory against live bytes over the trace (left), and the
    utilisation (%Ef) per cache at the end for the caches with the most slab memory (right), one
    colour per configuration named in one legend below both."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    fig = Figure(figsize=(13, 5))
    ax1, ax2 = fig.subplots(1, 2)
    n = len(results)        # a colour per configuration: tab10's, tab20's past 10, then a ramp
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]

    def colours(i: int) -> tuple:
        """Configuration ``i``'s colour."""
        return cmap(i) if n <= 20 else cmap(i / (n - 1))
    # 0 at the trace's first event: the first point's time less the seconds it stands for
    first = results[0].series
    t0 = first.t[0] - (first.dt[0] if len(first.dt) else 0.0) if len(first.t) else 0.0
    for i, r in enumerate(results):
        s = r.series
        col = colours(i)
        ax1.plot(s.t - t0, s.total_slab_bytes / 2**20, color=col)
        ax1.plot(s.t - t0, s.total_live_bytes / 2**20, color=col, ls="--")
    ax1.set_xlabel("seconds into the trace")
    ax1.set_ylabel("MiB")
    ax1.set_title("slab memory (solid) against live bytes (dashed)")
    ax1.grid(True, alpha=0.3)
    big = np.argsort(-np.max([r.caches["slab_bytes"] for r in results], axis=0))[:top]
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        ax2.barh(np.arange(len(big)) + i * width, r.caches["efficiency"][big], height=width,
                 color=colours(i), label=r.config.name)
    ax2.set_yticks(np.arange(len(big)) + 0.4 - width / 2)
    ax2.set_yticklabels([results[0].names[k] for k in big.tolist()], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("%Ef at the end (live bytes * 100 / slab bytes)")
    ax2.set_title("utilisation of the caches with the most slab memory")
    ax2.grid(True, axis="x", alpha=0.3)
    rows = -(-len(results) // 4)               # one legend for both, below them: a colour
    fig.legend(*ax2.get_legend_handles_labels(), fontsize=7, loc="lower center",  # per config
               ncol=min(4, len(results)))
    fig.tight_layout(rect=(0, 0.045 * rows + 0.01, 1, 1))
    fig.savefig(path, dpi=110)
    return fig
