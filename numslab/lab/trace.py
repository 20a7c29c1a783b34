"""The lab's trace reader: text of the kernel's ``kmem`` tracepoints to NumPy arrays.

The text is tracefs ``trace`` and ``trace_pipe``, ``trace-cmd report`` or ``perf script``; plain,
gz or xz.

The text is taken a few MiB at a time (a plain file's as views of memory mappings, other
sources, standard input and pipes too, read as they come into reused ``uint8`` buffers: never
whole), each chunk scanned by compiled code
(:func:`~numslab.lab.parse.scan_chunk`, two worker threads) and appended in order
(:func:`~numslab.lab.parse.intern_rows`) to a struct of arrays, one row per
event line, cache names and pointers interned on the way; no Python runs per line.
"""
from __future__ import annotations

import io
import mmap
import os
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .. import flags as F
from ..errors import InvalidSizeError
from . import parse as P
from .fixed import GFP_CACHE
from .parse import (EV_BAD, EV_CACHE_ALLOC, EV_CACHE_FREE, EV_KFREE, EV_KMALLOC, EV_LOST,
                    EV_OTHER, EV_OWN)
from .source import (BROKEN, TraceFormatError, binary_bytes, broken, open_source,
                     unreadable)

__all__ = ["TraceFormatError", "Trace", "check_trace", "read_trace", "parse_bytes", "load_bytes",
           "repeat_trace", "large_kmalloc_twice", "EV_CACHE_ALLOC", "EV_KMALLOC", "EV_KFREE",
           "EV_CACHE_FREE",
           "EV_OWN", "EV_OTHER", "EV_LOST", "EV_BAD", "GFP_NAMES"]


#: symbolic gfp names as the kmem events print them (``show_gfp_flags``), to numslab's bits
GFP_NAMES: dict[str, int] = {
    "GFP_TRANSHUGE": F.GFP_KERNEL | F.__GFP_COMP | F.__GFP_NOMEMALLOC | F.__GFP_NOWARN,
    "GFP_TRANSHUGE_LIGHT": F.__GFP_COMP | F.__GFP_NOMEMALLOC | F.__GFP_NOWARN,
    "GFP_HIGHUSER_MOVABLE": F.GFP_KERNEL | F.__GFP_HARDWALL | F.__GFP_HIGHMEM | F.__GFP_MOVABLE,
    "GFP_HIGHUSER": F.GFP_KERNEL | F.__GFP_HARDWALL | F.__GFP_HIGHMEM,
    "GFP_USER": F.GFP_KERNEL | F.__GFP_HARDWALL,
    "GFP_KERNEL_ACCOUNT": F.GFP_KERNEL | F.__GFP_ACCOUNT,
    "GFP_KERNEL": F.GFP_KERNEL,
    "GFP_NOFS": F.GFP_NOFS,
    "GFP_ATOMIC": F.GFP_ATOMIC,
    "GFP_NOIO": F.GFP_NOIO,
    "GFP_NOWAIT": F.GFP_NOWAIT,
    "GFP_DMA": F.__GFP_DMA,
    "GFP_DMA32": F.__GFP_DMA32,
    "GFP_NOWAIT|__GFP_NOWARN": F.GFP_NOWAIT | F.__GFP_NOWARN,
    "__GFP_HIGH": F.__GFP_HIGH, "__GFP_IO": F.__GFP_IO, "__GFP_FS": F.__GFP_FS,
    "__GFP_NOWARN": F.__GFP_NOWARN, "__GFP_RETRY_MAYFAIL": F.__GFP_RETRY_MAYFAIL,
    "__GFP_NOFAIL": F.__GFP_NOFAIL, "__GFP_NORETRY": F.__GFP_NORETRY,
    "__GFP_COMP": F.__GFP_COMP, "__GFP_ZERO": F.__GFP_ZERO,
    "__GFP_NOMEMALLOC": F.__GFP_NOMEMALLOC, "__GFP_MEMALLOC": F.__GFP_MEMALLOC,
    "__GFP_HARDWALL": F.__GFP_HARDWALL, "__GFP_THISNODE": F.__GFP_THISNODE,
    "__GFP_RECLAIMABLE": F.__GFP_RECLAIMABLE, "__GFP_MOVABLE": F.__GFP_MOVABLE,
    "__GFP_ACCOUNT": F.__GFP_ACCOUNT, "__GFP_WRITE": F.__GFP_WRITE,
    "__GFP_RECLAIM": F.__GFP_RECLAIM, "__GFP_DIRECT_RECLAIM": F.__GFP_DIRECT_RECLAIM,
    "__GFP_KSWAPD_RECLAIM": F.__GFP_KSWAPD_RECLAIM, "__GFP_DMA": F.__GFP_DMA,
    "__GFP_HIGHMEM": F.__GFP_HIGHMEM, "__GFP_DMA32": F.__GFP_DMA32,
    "__GFP_NO_OBJ_EXT": F.__GFP_NO_OBJ_EXT,
    # what the kernel prints for no flag, and names of bits no SLUB rule reads (KASAN's and
    # lockdep's, and earlier kernels'): known, no bit (a name known to no table is a bad line)
    "none": 0, "__GFP_ZEROTAGS": 0, "__GFP_SKIP_ZERO": 0, "__GFP_SKIP_KASAN": 0,
    "__GFP_SKIP_KASAN_POISON": 0, "__GFP_SKIP_KASAN_UNPOISON": 0, "__GFP_KASAN_SAMPLE": 0,
    "__GFP_NOLOCKDEP": 0, "__GFP_ATOMIC": 0, "__GFP_NOTRACK": 0, "__GFP_OTHER_NODE": 0,
    "__GFP_COLD": 0, "__GFP_REPEAT": 0, "__GFP_NOACCOUNT": 0,
}

def _fnv(text: str) -> int:
    """FNV-1a 64 of ``text``'s ASCII bytes (as the compiled ``parse._fnv`` computes it)."""
    h = 0xcbf29ce484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h or 1


_GFP_ITEMS = sorted((_fnv(k), v) for k, v in GFP_NAMES.items())
#: sorted FNV hashes of the gfp names, uint64[n], and their bits, int64[n]
GFP_HASH = np.array([h for h, _ in _GFP_ITEMS], np.uint64)
GFP_VALUE = np.array([v for _, v in _GFP_ITEMS], np.int64)

@dataclass
class Trace:
    """A parsed trace: one entry per event line (struct of arrays, length ``n``), and cache rows.

    One cache *row* per cache the events name or kmalloc class they use.

    Attributes
    ----------
    kind : numpy.ndarray
        int8[n], ``EV_*``.
    line : numpy.ndarray
        int32[n], the 1-based line number in the text.
    cpu, node : numpy.ndarray
        int32[n]: the traced CPU (-1 on a lost-events line); the ``node`` field (-1: any).
    ts : numpy.ndarray
        float64[n], seconds.
    ptr : numpy.ndarray
        uint64[n], the (usually hashed) pointer.
    name : numpy.ndarray
        int32[n], the row of the cache the event names (-1: no ``name`` field).
    bytes_req, bytes_alloc, gfp : numpy.ndarray
        int32[n] (-1 where absent; ``gfp`` as numslab's ``__GFP_*`` bits).
    row : numpy.ndarray
        int32[n]: an allocation's cache row (a kmalloc one by ``kmalloc_type`` and size),
        or ``parse.ROW_*``; 0 for a free of a pointer; ``ROW_NONE`` for other lines.
    pid : numpy.ndarray
        int32[n], a dense id per distinct pointer (-1: none).
    names : list of str
        The cache rows' names, in order of first appearance (kmalloc rows named as the
        kernel names them: ``kmalloc-64``, ``kmalloc-cg-1k``, ``dma-kmalloc-8``).
    sizes : numpy.ndarray
        int64[K]: the largest ``bytes_alloc`` seen per row (a kmalloc row: its class).
    kmalloc : numpy.ndarray
        int64[K]: the class size of a kmalloc row, 0 for other caches.
    npid : int
        Distinct pointers.
    source : str
        What errors and warnings name: the path read, or ``trace`` (bytes, a file object).
    written : int
        Events the kernel wrote in all, from a tracefs ``trace`` file's header
        (``entries-in-buffer/entries-written``); 0 when the text has no such header.
    overwritten : int
        Of those, the oldest a full ring buffer overwrote before the file was read (no line
        marks them: the header's entries-written less entries-in-buffer).
    """

    kind: np.ndarray
    line: np.ndarray
    cpu: np.ndarray
    ts: np.ndarray
    ptr: np.ndarray
    name: np.ndarray
    bytes_req: np.ndarray
    bytes_alloc: np.ndarray
    gfp: np.ndarray
    node: np.ndarray
    row: np.ndarray
    pid: np.ndarray
    names: list[str] = field(default_factory=list)
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kmalloc: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    npid: int = 0
    source: str = "trace"
    written: int = 0
    overwritten: int = 0

    def __len__(self) -> int:
        return int(self.kind.shape[0])


#: A tracefs ``trace`` file's header line counting the events kept and written, and how far
#: into the text it is looked for (the header's dozen lines).
_ENTRIES = re.compile(rb"^# entries-in-buffer/entries-written: (\d+)/(\d+)", re.M)
HEADER_BYTES = 4096

#: the columns of a :class:`Trace` and their dtypes, as :func:`read_trace` makes them
_COLUMNS = (("kind", np.int8), ("line", np.int32), ("cpu", np.int32), ("ts", np.float64),
            ("ptr", np.uint64), ("name", np.int32), ("bytes_req", np.int32),
            ("bytes_alloc", np.int32), ("gfp", np.int32), ("node", np.int32),
            ("row", np.int32), ("pid", np.int32))


def _read_only(text: np.ndarray) -> np.ndarray:
    """A read-only view of ``text`` (uint8[n]), as a mapped file's is.

    The parser's kernels then compile for one array type, whether the text comes from a
    mapping or a buffer (each type was a compile of its own: 4-8 s for ``scan_chunk``)."""
    if not text.flags.writeable:
        return text
    view = text.view()
    view.flags.writeable = False
    return view


def check_trace(tr: Trace) -> None:
    """Refuse a :class:`Trace` the replay's compiled loops cannot read safely (TraceFormatError).

    One built or changed by hand: columns of other lengths or dtypes, cache rows and pointer ids
    out of range, per-row arrays not one per name."""
    if not isinstance(tr, Trace):
        raise TraceFormatError(f"{type(tr).__name__} is not a Trace")
    n = len(tr.kind) if isinstance(tr.kind, np.ndarray) else -1
    for col, dt in _COLUMNS:
        a = getattr(tr, col)
        if not isinstance(a, np.ndarray) or a.dtype != dt or a.shape != (n,):
            raise TraceFormatError(f"Trace.{col} is not {np.dtype(dt)}[{n}] as kind is")
    if isinstance(tr.npid, bool) or not isinstance(tr.npid, (int, np.integer)) \
            or not 0 <= tr.npid <= n:
        raise TraceFormatError(f"Trace.npid {tr.npid!r} is not a count of pointers 0..{n}")
    k = len(tr.names)
    for col in ("sizes", "kmalloc"):
        a = getattr(tr, col)
        if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.shape != (k,):
            raise TraceFormatError(f"Trace.{col} is not int64[{k}], one per name")
    ev = tr.kind <= EV_CACHE_FREE
    alloc = tr.kind <= EV_KMALLOC
    row, pid = tr.row, tr.pid
    bad = ev & ~(alloc & (row >= P.ROW_FAILED) & (row < k) | ~alloc & (row >= P.ROW_ZERO_PTR))
    skip = (alloc & ((row == P.ROW_ZERO) | (row == P.ROW_FAILED))) | (
        ~alloc & ((row == P.ROW_NULL) | (row == P.ROW_ZERO_PTR)))
    bad |= ev & ~skip & ((pid < 0) | (pid >= max(int(tr.npid), 0)))
    bad |= (tr.kind < 0) | (tr.kind > EV_BAD)
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceFormatError(f"Trace event {i} (line {int(tr.line[i])}): kind {tr.kind[i]}, "
                               f"cache row {row[i]} of {k}, pointer id {pid[i]} of {tr.npid} "
                               f"do not go together")


_KM_PREFIX = ("kmalloc-", "kmalloc-cg-", "kmalloc-rcl-", "dma-kmalloc-")
CHUNK = 4 << 20
#: the longest line read (a kmem event's is a few hundred bytes): past it the text is no trace
#: (/dev/zero doubled its buffer until the machine's memory ran out)
MAX_LINE = 64 << 20


def _km_name(key: int) -> tuple[str, int]:
    """Name and class size of the kmalloc row with ``name_kind`` ``1 + key``."""
    size = int(P.KM_SIZES[key % 16])
    s = f"{size // 1024}k" if size >= 1024 else str(size)
    return _KM_PREFIX[key // 16] + s, size


def _km_size(name: str) -> int:
    """The class size of a cache named like a kmalloc cache (``kmalloc-1k``), else 0."""
    if not name.startswith(_KM_PREFIX):
        return 0
    s = name.rsplit("-", 1)[1]
    v = int(s[:-1]) * 1024 if s.endswith("k") and s[:-1].isdecimal() else \
        (int(s) if s.isdecimal() else 0)
    return v if v in P.KM_SIZES else 0


class _Chunk:
    """One chunk of text in flight: its buffer (with 65 bytes of slack) and the rows made of it.

    The rows are those :func:`~numslab.lab.parse.scan_chunk` made of it (stage one, run by a worker
    thread)."""

    COLS = (("kind", np.int8), ("line", np.int32), ("cpu", np.int32), ("ts", np.float64),
            ("ptr", np.uint64), ("req", np.int32), ("alloc", np.int32), ("gfp", np.int32),
            ("node", np.int32), ("nm0", np.int32), ("nm1", np.int32), ("nh", np.uint64))
    #: read tracefs's kmem lines at fixed places (False: the general walk for every line; the
    #: tests compare the two)
    fast = True

    def __init__(self, size: int) -> None:
        self.buf = np.zeros(size + 65, np.uint8)
        self.text = self.buf                    # what is scanned: buf or a view of a mapping
        self.cols = {k: np.empty(size // 128 + 1024, t) for k, t in self.COLS}
        self.sv = np.zeros(P.SV_NCOLS, np.int64)
        self.gfpt = P.GfpTables(GFP_HASH, GFP_VALUE, np.zeros(GFP_CACHE, np.uint64),
                                np.zeros(GFP_CACHE, np.int64))
        self.end = self.used = self.status = 0

    def scan(self, skip_bad: bool) -> None:
        """Parse ``text[:end]``; touches nothing outside this chunk.

        Sets ``sv`` (rows, lines), ``used`` (bytes parsed) and ``status`` (``ST_DONE`` or
        ``ST_ERROR``)."""
        self.sv[:] = 0
        start = 0
        while True:
            n = self.end - start
            buf = _read_only(self.text[start:])
            r0 = int(self.sv[P.SV_ROWS])
            c = self.cols
            used, status = P.scan_chunk(buf, n, skip_bad, self.fast, self.gfpt, self.sv,
                                        P.ChunkRows(**c))
            if start:                           # name spans from the buffer's start
                r1 = int(self.sv[P.SV_ROWS])
                for k in ("nm0", "nm1"):
                    seg = c[k][r0:r1]
                    seg[seg >= 0] += start
            start += used
            if status != P.ST_ROWS:
                self.used, self.status = start, status
                return
            for k, a in c.items():
                b = np.empty(2 * len(a), a.dtype)
                b[:len(a)] = a
                c[k] = b


class _Reader:
    """The arrays and tables of one parse (stage two, in trace order), grown as needed."""

    COLS = (("kind", np.int8), ("line", np.int32), ("cpu", np.int32), ("ts", np.float64),
            ("ptr", np.uint64), ("name", np.int32), ("req", np.int32), ("alloc", np.int32),
            ("gfp", np.int32), ("node", np.int32), ("row", np.int32), ("pid", np.int32))

    def __init__(self, rows: int, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.cols = {k: np.empty(max(rows, 1024), t) for k, t in self.COLS}
        self.sv = np.zeros(P.SV_NCOLS, np.int64)
        self.nt_keys = np.zeros(16384, np.uint64)
        self.nt_vals = np.zeros(16384, np.int32)
        self.name_bytes = np.zeros(1 << 20, np.uint8)
        self.name_off = np.zeros(P.NAME_MAX_ROWS + 1, np.int64)
        self.name_kind = np.zeros(P.NAME_MAX_ROWS, np.int32)
        self.name_size = np.zeros(P.NAME_MAX_ROWS, np.int64)
        self.km_row = np.full(64, -1, np.int32)
        self.lines = 0
        self.written = self.overwritten = 0
        # more than rows/4 slots, filled to 3/4: no rehash below 3/16 as many pointers as rows
        self._pids(max(1 << 16, 1 << (max(rows, 1) // 4).bit_length()))

    def _pids(self, cap: int) -> None:
        """A pointer table of ``cap`` slots (the old one's pointers moved in)."""
        table = np.zeros(2 * cap, np.uint64)
        zero = np.zeros(cap * 3 // 4 + 1, np.uint8)
        if hasattr(self, "ptab"):
            P.pid_rehash(self.ptab, table)
            zero[:len(self.pid_zero)] = self.pid_zero
        self.ptab, self.pid_zero = table, zero

    def take(self, ch: _Chunk, where: str) -> None:
        """Append a scanned chunk's rows (interning names and pointers); raise its error."""
        if self.lines == 0:                     # (the first chunk: a tracefs file's header)
            head = bytes(ch.text[:min(ch.end, HEADER_BYTES)])
            got = _ENTRIES.search(head)
            if got:
                kept, self.written = int(got[1]), int(got[2])
                self.overwritten = max(self.written - kept, 0)
        i, m = 0, int(ch.sv[P.SV_ROWS])
        c, s = self.cols, ch.cols
        r0 = int(self.sv[P.SV_ROWS])
        while r0 + m > len(c["kind"]):
            for k, a in c.items():
                b = np.empty(2 * len(a), a.dtype)
                b[:len(a)] = a
                c[k] = b
        for k in ("kind", "cpu", "ts", "ptr", "req", "alloc", "gfp", "node"):
            c[k][r0:r0 + m] = s[k][:m]
        np.add(s["line"][:m], self.lines, out=c["line"][r0:r0 + m])
        while True:
            tables = P.InternTables(self.nt_keys, self.nt_vals, self.name_bytes, self.name_off,
                                    self.name_kind, self.name_size, self.km_row, self.ptab,
                                    self.pid_zero)
            i, status = P.intern_rows(_read_only(ch.text), i, m, P.ChunkRows(**s), self.sv,
                                      c["name"], c["row"], c["pid"], tables)
            if status == P.ST_DONE:
                break
            if status == P.ST_NAMES:
                raise TraceFormatError(f"{where}: more than {P.NAME_MAX_ROWS} caches or "
                                       f"1 MiB of cache names")
            self._pids(2 * len(self.ptab))
        if ch.status == P.ST_ERROR:
            stop = ch.used
            while ch.text[stop] != 10:
                stop += 1
            line = bytes(ch.text[ch.used:min(stop, ch.used + 4096)])
            at = f"{where}, line {self.lines + int(ch.sv[P.SV_BADLINE])}"
            what = binary_bytes(line)
            if what:                    # (its bytes were shown: 200 of garbage)
                raise TraceFormatError(f"{at}: binary data, not trace text ({what}); a trace "
                                       f"is the kmem events' text")
            text = line.decode(errors="replace")
            raise TraceFormatError(f"{at}: {P.ERR_TEXT[int(ch.sv[P.SV_ERR])]}: "
                                   f"{text[:200]!r} (skip_bad=True, --skip-bad: count "
                                   f"malformed lines and go on)")
        self.lines += int(ch.sv[P.SV_LINE])

    def trace(self) -> Trace:
        """The parsed :class:`Trace`."""
        n = int(self.sv[P.SV_ROWS])
        c = {k: a[:n] for k, a in self.cols.items()}
        k = int(self.sv[P.SV_NNAMES])
        names, kms = [], []
        for r in range(k):
            if self.name_kind[r]:
                nm, size = _km_name(int(self.name_kind[r]) - 1)
            else:
                nm = bytes(self.name_bytes[self.name_off[r]:self.name_off[r + 1]]).decode(
                    errors="backslashreplace")      # (two names differing in bytes that are
                #                                     not UTF-8 both read "\ufffd": merged)
                size = _km_size(nm)
            names.append(nm)
            kms.append(size)
        sizes = np.where(self.name_kind[:k] > 0, kms, self.name_size[:k]).astype(np.int64)
        kmalloc = np.asarray(kms, np.int64)
        row, name = c["row"], c["name"]
        if len(set(names)) < len(names):          # a trace cache named as a kmalloc row
            first: dict[str, int] = {}
            for nm in names:
                first.setdefault(nm, len(first))
            remap = np.array([first[nm] for nm in names], np.int32)
            sz = np.zeros(len(first), np.int64)
            km = np.zeros(len(first), np.int64)
            for r, t in enumerate(remap.tolist()):
                sz[t] = max(sz[t], sizes[r])
                km[t] = max(km[t], kmalloc[r])
            row = np.where(row >= 0, remap[np.maximum(row, 0)], row).astype(np.int32)
            name = np.where(name >= 0, remap[np.maximum(name, 0)], name).astype(np.int32)
            names, sizes, kmalloc = list(first), sz, km
        return Trace(c["kind"], c["line"], c["cpu"], c["ts"], c["ptr"], name, c["req"],
                     c["alloc"], c["gfp"], c["node"], row, c["pid"], names, sizes, kmalloc,
                     int(self.sv[P.SV_NPIDS]), written=self.written,
                     overwritten=self.overwritten)


def read_trace(source: str | Path | BinaryIO | bytes, skip_bad: bool = False,
               chunk: int = CHUNK) -> Trace:
    """Read and parse a trace, ``chunk`` bytes at a time.

    The trace is a path (plain, gz or xz, told by its first bytes), ``"-"`` for standard input, a
    binary file object or bytes.

    When the text is longer than one chunk, two worker threads scan chunks (stage one,
    :func:`~numslab.lab.parse.scan_chunk`, no shared state) while this thread reads the
    next and appends the scanned ones in order (stage two,
    :func:`~numslab.lab.parse.intern_rows`: names and pointers interned in order of first
    appearance); the compiled code releases the GIL. The result does not depend on it.

    Raises
    ------
    TraceFormatError
        Naming the first malformed line, unless ``skip_bad`` (such lines are then rows of
        kind ``EV_BAD``); or when the source cannot be read.
    SlabError
        If ``chunk`` is not a whole number of bytes of at least 4096 (0 read nothing, a
        negative one blamed a well-formed line).
    """
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 4096:
        raise InvalidSizeError(f"read_trace: chunk {chunk!r} is not a number of bytes >= 4096")
    try:
        f, guess, where = open_source(source)
        rd = _Reader(guess + 1024, skip_bad)
        pipe = _Pipeline(rd, skip_bad, where)
        try:
            with f:
                start = _mapped(f, chunk, pipe)
                if start:
                    f.seek(start)
                _buffered(f, chunk, pipe)
            pipe.drain(0)
        finally:
            pipe.close()
    except BROKEN as e:
        raise broken(source, e) from None
    except OSError as e:
        raise unreadable(source, e) from None
    except ValueError as e:             # a file object closed part-way ("read of closed file")
        if getattr(source, "closed", False) is not True:
            raise
        raise unreadable(source, e) from None
    tr = rd.trace()
    tr.source = where
    return tr


class _Pipeline:
    """Chunks in flight: scanned by worker threads, appended to the :class:`_Reader` in order.

    Worker threads scan once there is more than one chunk; the calling thread appends."""

    def __init__(self, rd: _Reader, skip_bad: bool, where: str) -> None:
        self.rd, self.skip_bad, self.where = rd, skip_bad, where
        self.free: list[_Chunk] = []
        self.pending: deque[tuple[_Chunk, Future | None]] = deque()
        self.pool: ThreadPoolExecutor | None = None

    def chunk(self, size: int) -> _Chunk:
        """A chunk no longer in flight, or a new one."""
        return self.free.pop() if self.free else _Chunk(size)

    def submit(self, ch: _Chunk, more: bool) -> None:
        """Scan ``ch`` (in a worker once ``more`` chunks follow); append the oldest ones.

        The oldest are appended while more than two are in flight."""
        if more and self.pool is None:
            self.pool = ThreadPoolExecutor(2, thread_name_prefix="numslab-trace")
        if self.pool is None:
            ch.scan(self.skip_bad)
            self.pending.append((ch, None))
        else:
            self.pending.append((ch, self.pool.submit(ch.scan, self.skip_bad)))
        self.drain(2)

    def drain(self, keep: int) -> None:
        """Append scanned chunks, oldest first, until ``keep`` are in flight."""
        while len(self.pending) > keep:
            ch, fut = self.pending.popleft()
            if fut is not None:
                fut.result()
            self.rd.take(ch, self.where)
            ch.text = ch.buf
            self.free.append(ch)

    def close(self) -> None:
        """Stop the workers (after their current chunk)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _mapped(f: BinaryIO, chunk: int, pipe: _Pipeline) -> int:
    """Submit the chunks of a plain file but the last as views of memory mappings of it (no copy).

    Each chunk is its own mapping, unmapped once appended, so that the mapped text does not add up;
    the last needs slack after it. Returns the offset where reading must go on (0: none)."""
    if not isinstance(f, io.BufferedReader):
        return 0
    try:
        fd = f.fileno()
        size = os.fstat(fd).st_size
    except (OSError, ValueError, io.UnsupportedOperation):
        return 0
    start = f.tell()                            # (past a byte order mark)
    while start + chunk + 65 <= size:
        base = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            m = mmap.mmap(fd, start + chunk + 65 - base, offset=base, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            break
        text = np.frombuffer(m, np.uint8)[start - base:]
        end = int(P.last_newline(text, chunk))
        if end == 0:                              # a line longer than a chunk: read on
            break
        ch = pipe.chunk(chunk)
        ch.text, ch.end = text, end
        pipe.submit(ch, True)
        start += end
    return start


def _buffered(f: BinaryIO, chunk: int, pipe: _Pipeline) -> None:
    """Submit the chunks of ``f`` read from where it is, each into a chunk's own buffer."""
    cur = pipe.chunk(chunk)
    rest = 0
    while True:
        buf = cur.buf
        got = f.readinto(memoryview(buf)[rest:len(buf) - 65]) or 0
        n = rest + got
        if got == 0:                         # the end: a last line without its newline
            if n == 0:
                return
            buf[n] = 10
            end = n + 1
        else:
            end = P.last_newline(_read_only(buf), n)
            if end == 0:                     # a line longer than the buffer
                if n >= MAX_LINE:
                    raise TraceFormatError(f"{pipe.where}: a line of more than "
                                           f"{MAX_LINE >> 20} MiB (no line break): not trace "
                                           f"text")
                nb = np.zeros(2 * len(buf), np.uint8)
                nb[:n] = buf[:n]
                cur.buf = cur.text = nb
                rest = n
                continue
        cur.end = end
        nxt = None
        if got:
            nxt = pipe.chunk(chunk)
            rest = n - end
            if len(nxt.buf) < len(buf):
                nxt.buf = nxt.text = np.zeros(len(buf), np.uint8)
            nxt.buf[:rest] = buf[end:n]
        pipe.submit(cur, pipe.pool is not None or n == len(buf) - 65)
        if nxt is None:
            return
        cur = nxt


def parse_bytes(data: bytes, skip_bad: bool = False, where: str = "trace") -> Trace:
    """Parse trace text held in memory (see :func:`read_trace`)."""
    try:
        tr = read_trace(data, skip_bad)
        tr.source = where
        return tr
    except TraceFormatError as e:
        if where != "trace":
            raise TraceFormatError(str(e).replace("trace,", f"{where},", 1)) from None
        raise


def load_bytes(source: str | Path | BinaryIO | bytes) -> bytes:
    """The whole decompressed text of ``source`` (as :func:`read_trace` takes it)."""
    try:
        f, _, _ = open_source(source)
        with f:
            return f.read()
    except BROKEN as e:
        raise broken(source, e) from None
    except OSError as e:
        raise unreadable(source, e) from None


_PTR = re.compile(rb"ptr=(0x)?([0-9a-fA-F]{1,16})")
#: an event line's timestamp, after its task, CPU and (if printed) flags fields
_STAMP = re.compile(rb"(?m)^([^\n]*?\[\d+\][^\n]*? )(\d+)\.(\d+)(: )")


def large_kmalloc_twice(tr: Trace) -> np.ndarray:
    """bool[n]: the events that repeat a large kmalloc's.

    The kernel's ``__do_kmalloc_node`` (mm/slub.c, 6.10 on) traces a kmalloc past
    KMALLOC_MAX_CACHE_SIZE twice: the event of ``__kmalloc_large_node_noprof``, which it calls,
    then its own, the next event of that CPU (a microsecond later at times). So the second of two
    large kmalloc events of one pointer and size, next to each other both among the pointer's
    events and among the CPU's, is no allocation of its own."""
    n = len(tr.kind)
    out = np.zeros(n, bool)
    big = (tr.kind == EV_KMALLOC) & (tr.row == P.ROW_LARGE)
    if np.count_nonzero(big) < 2:
        return out
    on = np.argsort(tr.cpu, kind="stable")                  # each CPU's events in order
    before = np.full(n, -1, np.int64)
    before[on[1:]] = np.where(tr.cpu[on[1:]] == tr.cpu[on[:-1]], on[:-1], -1)
    b = np.flatnonzero(big)
    a = before[b]                                           # the CPU's event before each
    b, a = b[a >= 0], a[a >= 0]
    same = big[a] & (tr.pid[a] == tr.pid[b]) & (tr.pid[b] >= 0) \
        & (tr.bytes_req[a] == tr.bytes_req[b]) \
        & (tr.bytes_alloc[a] == tr.bytes_alloc[b])
    for i, j in zip(a[same].tolist(), b[same].tolist()):    # (other CPUs' events between:
        out[j] = not (tr.pid[i + 1:j] == tr.pid[j]).any()   # none of this pointer's)
    return out


def repeat_trace(text: bytes, copies: int) -> bytes:
    """Make a longer trace of ``copies`` copies of ``text``'s event lines (comments dropped).

    Each copy's pointers are shifted into their own range (``copy << 40`` added; NULL stays
    NULL), so that every copy's objects are distinct, and its timestamps follow the copy
    before it (the trace's span and one tick added), so that the trace stays in time order:
    the benchmarks' million-event trace.
    """
    body = b"\n".join(ln for ln in text.split(b"\n") if ln.strip() and not ln.lstrip()
                      .startswith(b"#")) + b"\n"
    stamps = [(int(m.group(2)), m.group(3)) for m in _STAMP.finditer(body)]
    digits = len(stamps[0][1]) if stamps else 6
    ticks = [sec * 10 ** digits + int(frac.ljust(digits, b"0")[:digits]) for sec, frac in stamps]
    span = max(ticks) - min(ticks) + 1 if ticks else 0
    out = []
    for k in range(copies):
        shift, later = k << 40, k * span

        def ptr(m: re.Match, shift: int = shift) -> bytes:
            v = int(m.group(2), 16)
            return b"ptr=" + (m.group(1) or b"") + (b"%016x" % (v + shift) if v else m.group(2))

        def stamp(m: re.Match, later: int = later) -> bytes:
            t = int(m.group(2)) * 10 ** digits + int(m.group(3).ljust(digits, b"0")[:digits])
            sec, frac = divmod(t + later, 10 ** digits)
            return m.group(1) + b"%d.%0*d" % (sec, digits, frac) + m.group(4)
        out.append(_STAMP.sub(stamp, _PTR.sub(ptr, body)) if k else body)
    return b"".join(out)
