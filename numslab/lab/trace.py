"""The lab's trace reader: text of the kernel's ``kmem`` tracepoints (tracefs ``trace`` and
``trace_pipe``, ``trace-cmd report``, ``perf script``; plain, gz or xz) to NumPy arrays.

The whole text is read as bytes into a ``uint8`` array and parsed by one compiled kernel
(:func:`_parse`) into a struct of arrays, one row per event line; no Python runs per line.
"""
from __future__ import annotations

import gzip
import lzma
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numba
import numpy as np

from .. import flags as F
from ..errors import SlabError

__all__ = ["TraceFormatError", "Trace", "read_trace", "parse_bytes", "load_bytes",
           "EV_CACHE_ALLOC", "EV_KMALLOC", "EV_KFREE", "EV_CACHE_FREE", "EV_OTHER", "EV_LOST",
           "EV_BAD", "GFP_NAMES"]


class TraceFormatError(SlabError, ValueError):
    """A line of a trace is not a tracepoint line the reader understands (names the line)."""


# ---- event kinds (one per parsed line) ---------------------------------------------------------
EV_CACHE_ALLOC = 0   #: kmem_cache_alloc (and the old kmem_cache_alloc_node)
EV_KMALLOC = 1       #: kmalloc (and the old kmalloc_node)
EV_KFREE = 2         #: kfree
EV_CACHE_FREE = 3    #: kmem_cache_free
EV_OTHER = 4         #: a tracepoint line of another event
EV_LOST = 5          #: "CPU:n [LOST m EVENTS]": the ring buffer overflowed
EV_BAD = 6           #: a malformed line (kept only with ``skip_bad``)

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
}

FNV_OFFSET = np.uint64(0xcbf29ce484222325)
FNV_PRIME = np.uint64(0x100000001b3)


def _fnv(text: str) -> int:
    """FNV-1a 64 of ``text``'s ASCII bytes (as :func:`_hash` computes it in compiled code)."""
    h = int(FNV_OFFSET)
    for b in text.encode():
        h = ((h ^ b) * int(FNV_PRIME)) & 0xFFFFFFFFFFFFFFFF
    return h


_GFP_ITEMS = sorted((_fnv(k), v) for k, v in GFP_NAMES.items())
#: sorted FNV hashes of the gfp names, uint64[n], and their bits, int64[n]
GFP_HASH = np.array([h for h, _ in _GFP_ITEMS], np.uint64)
GFP_VALUE = np.array([v for _, v in _GFP_ITEMS], np.int64)

_EVENTS = {"kmem_cache_alloc": EV_CACHE_ALLOC, "kmem_cache_alloc_node": EV_CACHE_ALLOC,
           "kmalloc": EV_KMALLOC, "kmalloc_node": EV_KMALLOC, "kfree": EV_KFREE,
           "kmem_cache_free": EV_CACHE_FREE}
_EV_ITEMS = sorted((_fnv(k), v) for k, v in _EVENTS.items())
EV_HASH = np.array([h for h, _ in _EV_ITEMS], np.uint64)
EV_VALUE = np.array([v for _, v in _EV_ITEMS], np.int64)

# error codes of _parse
ERR_NONE, ERR_NO_TIMESTAMP, ERR_NO_CPU, ERR_FIELD, ERR_MISSING = 0, 1, 2, 3, 4
ERR_TEXT = {ERR_NO_TIMESTAMP: "no 'seconds.micros:' timestamp followed by an event name",
            ERR_NO_CPU: "no '[cpu]' field", ERR_FIELD: "a field's value does not parse",
            ERR_MISSING: "a kmem event without its ptr, name or bytes_alloc field"}


@numba.njit(cache=True, nogil=True)
def _hash(buf, a, b):
    """FNV-1a 64 of ``buf[a:b]``."""
    h = np.uint64(0xcbf29ce484222325)
    for i in range(a, b):
        h = (h ^ np.uint64(buf[i])) * np.uint64(0x100000001b3)
    return h


@numba.njit(cache=True, nogil=True)
def _lookup(keys, values, h):
    """``values[k]`` where ``keys[k] == h`` (``keys`` sorted), or -1."""
    k = np.searchsorted(keys, h)
    if k < keys.shape[0] and keys[k] == h:
        return values[k]
    return -1


@numba.njit(cache=True, nogil=True)
def _int(buf, a, b):
    """The integer in ``buf[a:b]`` (decimal, ``-`` allowed, or ``0x`` hex); (value, ok)."""
    neg = False
    if a < b and buf[a] == 45:
        neg = True
        a += 1
    if a >= b:
        return 0, False
    if b - a > 2 and buf[a] == 48 and (buf[a + 1] == 120 or buf[a + 1] == 88):
        v, ok = _hex(buf, a + 2, b)
        return (-v if neg else v), ok
    v = 0
    for i in range(a, b):
        c = buf[i]
        if c < 48 or c > 57:
            return 0, False
        v = v * 10 + (c - 48)
    return (-v if neg else v), True


@numba.njit(cache=True, nogil=True)
def _hex(buf, a, b):
    """The hexadecimal number in ``buf[a:b]`` (an optional ``0x``); (value, ok)."""
    if b - a > 2 and buf[a] == 48 and (buf[a + 1] == 120 or buf[a + 1] == 88):
        a += 2
    if a >= b or b - a > 16:
        return 0, False
    v = np.uint64(0)
    for i in range(a, b):
        c = buf[i]
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= c <= 102:
            d = c - 87
        elif 65 <= c <= 70:
            d = c - 55
        else:
            return 0, False
        v = (v << np.uint64(4)) | np.uint64(d)
    return np.int64(v), True


@numba.njit(cache=True, nogil=True)
def _gfp(buf, a, b, gkeys, gvals):
    """The gfp bits of ``buf[a:b]``: a number, or names joined by ``|``; (bits, ok)."""
    if a < b and 48 <= buf[a] <= 57:
        return _int(buf, a, b)
    bits = 0
    s = a
    for i in range(a, b + 1):
        if i == b or buf[i] == 124:
            if i > s:
                v = _lookup(gkeys, gvals, _hash(buf, s, i))
                if v >= 0:
                    bits |= v
            s = i + 1
    return bits, True


@numba.njit(cache=True, nogil=True)
def _parse(buf, skip_bad, gkeys, gvals, ekeys, evals, kind, lineno, cpu, ts, ptr, name_hash,
           name_off, name_len, req, alloc, gfp, node):
    """Parse the trace text ``buf`` (uint8[n]) into the output arrays, one row per event
    line (comments, blank lines and a ``cpus=`` header are not rows).

    Returns ``(rows, bad_line, err)``: ``bad_line`` is the 1-based number of the first
    malformed line and ``err`` its ``ERR_*`` code when ``skip_bad`` is false (0, 0
    otherwise; malformed lines are then rows of kind ``EV_BAD``).
    """
    n = buf.shape[0]
    pos = 0
    line = 0
    row = 0
    while pos < n:
        line += 1
        end = pos
        while end < n and buf[end] != 10:
            end += 1
        nxt = end + 1
        p = pos
        while p < end and (buf[p] == 32 or buf[p] == 9):
            p += 1
        e2 = end
        while e2 > p and (buf[e2 - 1] == 13 or buf[e2 - 1] == 32):
            e2 -= 1
        if p >= e2 or buf[p] == 35:                     # blank or '#' comment
            pos = nxt
            continue
        if e2 - p >= 5 and buf[p] == 99 and buf[p + 1] == 112 and buf[p + 2] == 117 \
                and buf[p + 3] == 115 and buf[p + 4] == 61:       # "cpus=" (trace-cmd)
            pos = nxt
            continue
        lineno[row] = line
        cpu[row] = -1
        ts[row] = 0.0
        ptr[row] = 0
        name_hash[row] = 0
        name_off[row] = 0
        name_len[row] = 0
        req[row] = -1
        alloc[row] = -1
        gfp[row] = 0
        node[row] = -1
        if e2 - p >= 4 and buf[p] == 67 and buf[p + 1] == 80 and buf[p + 2] == 85 \
                and buf[p + 3] == 58:                    # "CPU:n [LOST m EVENTS]"
            kind[row] = EV_LOST
            row += 1
            pos = nxt
            continue
        err = ERR_NONE
        # tokens: find "[cpu]", then "secs.frac:" then the event name "...:"
        ev = -2
        c = -1
        q = p
        evs = 0
        eve = 0
        while q < e2:
            while q < e2 and buf[q] == 32:
                q += 1
            t0 = q
            while q < e2 and buf[q] != 32:
                q += 1
            t1 = q
            if t1 - t0 >= 3 and buf[t0] == 91 and buf[t1 - 1] == 93 and c < 0:
                v, ok = _int(buf, t0 + 1, t1 - 1)
                if ok:
                    c = v
                    continue
            if t1 - t0 >= 4 and buf[t1 - 1] == 58 and 48 <= buf[t0] <= 57:
                dot = -1
                good = True
                for i in range(t0, t1 - 1):
                    if buf[i] == 46 and dot < 0:
                        dot = i
                    elif buf[i] < 48 or buf[i] > 57:
                        good = False
                        break
                if good and dot > 0:
                    whole, _ = _int(buf, t0, dot)
                    frac = 0.0
                    scale = 1.0
                    for i in range(dot + 1, t1 - 1):
                        frac = frac * 10.0 + (buf[i] - 48)
                        scale *= 10.0
                    ts[row] = whole + frac / scale
                    # the event name: the next token ending in ':' (perf may put a
                    # numeric period first)
                    while q < e2:
                        while q < e2 and buf[q] == 32:
                            q += 1
                        t0 = q
                        while q < e2 and buf[q] != 32:
                            q += 1
                        if q - t0 >= 2 and buf[q - 1] == 58:
                            evs = t0
                            eve = q - 1
                            for i in range(t0, q - 1):      # "kmem:kfree" -> "kfree"
                                if buf[i] == 58:
                                    evs = i + 1
                            ev = _lookup(ekeys, evals, _hash(buf, evs, eve))
                            break
                    break
        if ev == -2:
            err = ERR_NO_TIMESTAMP
        elif c < 0:
            err = ERR_NO_CPU
        elif ev < 0:
            kind[row] = EV_OTHER
            cpu[row] = c
            row += 1
            pos = nxt
            continue
        if err == ERR_NONE:
            cpu[row] = c
            kind[row] = ev
            have_ptr = False
            have_name = False
            while q < e2 and err == ERR_NONE:
                while q < e2 and buf[q] == 32:
                    q += 1
                k0 = q
                while q < e2 and buf[q] != 61 and buf[q] != 32:
                    q += 1
                if q >= e2 or buf[q] != 61:
                    continue
                k1 = q
                q += 1
                v0 = q
                while q < e2 and buf[q] != 32:
                    q += 1
                v1 = q
                kl = k1 - k0
                c0 = buf[k0]
                if kl == 3 and c0 == 112:                             # ptr
                    v, ok = _hex(buf, v0, v1)
                    if not ok and 5 <= v1 - v0 <= 6 and buf[v0] == 40:  # (null), (nil)
                        v, ok = 0, True
                    ptr[row] = v
                    have_ptr = True
                    if not ok:
                        err = ERR_FIELD
                elif kl == 4 and c0 == 110 and buf[k0 + 1] == 97:     # name
                    name_hash[row] = _hash(buf, v0, v1)
                    name_off[row] = v0
                    name_len[row] = v1 - v0
                    have_name = v1 > v0
                elif kl == 4 and c0 == 110:                           # node
                    v, ok = _int(buf, v0, v1)
                    node[row] = v
                    if not ok:
                        err = ERR_FIELD
                elif kl == 9 and c0 == 98:                            # bytes_req
                    v, ok = _int(buf, v0, v1)
                    req[row] = v
                    if not ok:
                        err = ERR_FIELD
                elif kl == 11 and c0 == 98:                           # bytes_alloc
                    v, ok = _int(buf, v0, v1)
                    alloc[row] = v
                    if not ok:
                        err = ERR_FIELD
                elif kl == 9 and c0 == 103:                           # gfp_flags
                    v, ok = _gfp(buf, v0, v1, gkeys, gvals)
                    gfp[row] = v
                    if not ok:
                        err = ERR_FIELD
            if err == ERR_NONE:
                if not have_ptr:
                    err = ERR_MISSING
                elif (ev == EV_CACHE_ALLOC or ev == EV_CACHE_FREE) and not have_name:
                    err = ERR_MISSING
                elif (ev == EV_CACHE_ALLOC or ev == EV_KMALLOC) and alloc[row] < 0:
                    err = ERR_MISSING
        if err != ERR_NONE:
            if not skip_bad:
                return row, line, err
            kind[row] = EV_BAD
        row += 1
        pos = nxt
    return row, 0, 0


@dataclass
class Trace:
    """A parsed trace: one entry per event line, struct of arrays.

    Attributes
    ----------
    kind : numpy.ndarray
        int8[n], ``EV_*``.
    line : numpy.ndarray
        int64[n], the 1-based line number in the text.
    cpu, node : numpy.ndarray
        int32[n]: the traced CPU; the ``node`` field (-1: any).
    ts : numpy.ndarray
        float64[n], seconds.
    ptr : numpy.ndarray
        uint64[n], the (usually hashed) pointer.
    name : numpy.ndarray
        int32[n], index into ``names`` (-1: the event names no cache).
    bytes_req, bytes_alloc, gfp : numpy.ndarray
        int64[n] (-1 where absent; ``gfp`` as numslab's ``__GFP_*`` bits).
    names : list of str
        The cache names of the trace, in order of first appearance.
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
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.kind.shape[0])


def load_bytes(source: str | Path | BinaryIO | bytes) -> bytes:
    """The text of ``source``: a path (``.gz``/``.xz`` decompressed, by magic bytes), ``-``
    for standard input, a binary file object, or bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()                       # type: ignore[union-attr]
    elif str(source) == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise TraceFormatError(f"cannot read trace {source}: {e.strerror}") from None
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:6] == b"\xfd7zXZ\x00":
        data = lzma.decompress(data)
    return data


def parse_bytes(data: bytes, skip_bad: bool = False, where: str = "trace") -> Trace:
    """Parse trace text into a :class:`Trace`.

    Raises
    ------
    TraceFormatError
        Naming the first malformed line, unless ``skip_bad``.
    """
    buf = np.frombuffer(data, np.uint8)
    cap = int(np.count_nonzero(buf == 10)) + 1
    kind = np.empty(cap, np.int8)
    line = np.empty(cap, np.int64)
    cpu = np.empty(cap, np.int32)
    ts = np.empty(cap, np.float64)
    ptr = np.empty(cap, np.uint64)
    nh = np.empty(cap, np.uint64)
    noff = np.empty(cap, np.int64)
    nlen = np.empty(cap, np.int32)
    req = np.empty(cap, np.int64)
    alloc = np.empty(cap, np.int64)
    gfp = np.empty(cap, np.int64)
    node = np.empty(cap, np.int32)
    rows, bad, err = _parse(buf, skip_bad, GFP_HASH, GFP_VALUE, EV_HASH, EV_VALUE, kind, line,
                            cpu, ts, ptr, nh, noff, nlen, req, alloc, gfp, node)
    if bad:
        start = 0
        for _ in range(bad - 1):
            start = data.index(b"\n", start) + 1
        stop = data.find(b"\n", start)
        text = data[start:stop if stop >= 0 else len(data)].decode(errors="replace")
        raise TraceFormatError(f"{where}, line {bad}: {ERR_TEXT[err]}: {text[:200]!r}")
    sl = slice(0, rows)
    nh, noff, nlen = nh[sl], noff[sl], nlen[sl]
    named = nlen > 0
    uniq, first, inv = np.unique(nh[named], return_index=True, return_inverse=True)
    idx_named = np.flatnonzero(named)
    names_u = [data[noff[idx_named[f]]:noff[idx_named[f]] + nlen[idx_named[f]]].decode(
        errors="replace") for f in first]
    order = np.argsort(first, kind="stable")      # names in order of first appearance
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    name = np.full(rows, -1, np.int32)
    name[named] = rank[inv]
    names = [names_u[k] for k in order]
    return Trace(kind[sl], line[sl], cpu[sl], ts[sl], ptr[sl], name, req[sl], alloc[sl],
                 gfp[sl], node[sl], names)


def read_trace(source: str | Path | BinaryIO | bytes, skip_bad: bool = False) -> Trace:
    """Read and parse a trace (see :func:`load_bytes` for ``source``)."""
    where = "trace" if isinstance(source, (bytes, bytearray, memoryview)) or \
        hasattr(source, "read") else str(source)
    return parse_bytes(load_bytes(source), skip_bad, where)
