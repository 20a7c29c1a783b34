"""Packet capture files (classic pcap and pcapng) read into a flat packet table.

The file is memory-mapped and scanned by Numba kernels; packet bytes are never copied.
"""
from __future__ import annotations

import os
import stat
import sys
import warnings
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from ..engine.native import jit_rt, source_hash
from ..errors import InvalidArgumentError, SlabError, WrongTypeError

#: net's sources, a key of its kernels' cache beside the ABI: a kernel calls another module's
#: (``traffic`` and ``pipeline`` call ``headers._memcpy``), which Numba's check of the loaded
#: function's file missed
NET_HASH = source_hash(Path(__file__).parent)


def jit(func: Any = None, **overrides: Any) -> Any:
    """``native.jit_rt`` (this code creates arrays: Numba runtime on), cached under NET_HASH."""
    return jit_rt(func, cache_key=NET_HASH, **overrides)


__all__ = ["CaptureError", "Packets", "read_capture", "write_pcap"]


class CaptureError(SlabError, ValueError):
    """A capture file that is truncated, corrupt or not a capture file at all.

    A :class:`numslab.SlabError`; a ValueError, as it always was."""


class CaptureTruncatedWarning(UserWarning):
    """The capture ends inside a record (as a killed tcpdump leaves it).

    The packets before the cut are read, as tcpdump reads them."""


#: Errors that mean "the file ends inside a record": the packets before it are kept.
_CUT = frozenset({1, 3, 5, 13})      # _E_TRUNC_RECORD, _E_TRUNC_DATA, _E_TRUNC_BLOCK(_HDR)


class Packets(NamedTuple):
    """A packet table: every packet's bytes back to back plus per-packet columns.

    Attributes
    ----------
    data : numpy.ndarray
        ``uint8[m]``, the captured bytes; packet ``i`` is
        ``data[offset[i]:offset[i] + caplen[i]]``. For a file read by :func:`read_capture`
        this is the whole file (read-only, possibly memory-mapped) and the gaps between
        packets hold the record headers.
    offset : numpy.ndarray
        ``int64[n]``, start of each packet in ``data``.
    caplen : numpy.ndarray
        ``int64[n]``, captured length of each packet.
    wirelen : numpy.ndarray
        ``int64[n]``, original length of each packet on the wire.
    ts_ns : numpy.ndarray
        ``int64[n]``, timestamp in nanoseconds since the Unix epoch.
    linktype : int
        LINKTYPE number of every packet (1 = Ethernet); -1 for a pcapng file with no
        interface at all.
    """

    data: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray
    linktype: int

    def packet(self, i: int) -> np.ndarray:
        """Return the captured bytes of packet ``i`` as a ``uint8`` view.

        Parameters
        ----------
        i : int
            The packet's index, ``0 <= i < len(offset)``.

        Returns
        -------
        numpy.ndarray
            uint8[caplen[i]], a view of ``data`` from ``offset[i]``.
        """
        o = int(self.offset[i])
        return self.data[o:o + int(self.caplen[i])]


# --------------------------------------------------------------------------- constants
_PCAP_MAGICS = {  # first four file bytes -> (big_endian, nanosecond, record header length)
    b"\xd4\xc3\xb2\xa1": (False, False, 16), b"\xa1\xb2\xc3\xd4": (True, False, 16),
    b"\x4d\x3c\xb2\xa1": (False, True, 16), b"\xa1\xb2\x3c\x4d": (True, True, 16),
    # Alexey Kuznetzov's patched libpcap: 8 extra bytes (ifindex, protocol, type) per record
    b"\x34\xcd\xb2\xa1": (False, False, 24), b"\xa1\xb2\xcd\x34": (True, False, 24),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_MAX_SNAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN, the limit when a file header says 0
_LINKTYPE_MASK = 0x03FFFFFF  # upper bits of the pcap header's network field are FCS info

_E_OK = 0
_E_TRUNC_RECORD = 1
_E_CAPLEN_SNAPLEN = 2
_E_TRUNC_DATA = 3
_E_BLOCK_LEN = 4
_E_TRUNC_BLOCK = 5
_E_TRAILER = 6
_E_BOM = 7
_E_VERSION = 8
_E_IFACE = 9
_E_SHORT_BODY = 10
_E_BLOCK_CAPLEN = 11
_E_OPTION = 12
_E_TRUNC_BLOCK_HDR = 13
_E_BLOCK_HUGE = 14
_E_TS_RANGE = 15
#: The largest pcapng block tshark reads (wiretap's MAX_BLOCK_SIZE); longer is corrupt.
_MAX_BLOCK = 134348832

_MESSAGES = {
    _E_TRUNC_RECORD: "truncated record header at byte {pos}: {a} of {b} bytes present",
    _E_CAPLEN_SNAPLEN: "record at byte {pos} claims caplen {a} > snaplen {b}",
    _E_TRUNC_DATA: ("truncated packet data at byte {pos}: record claims caplen {a} but "
                    "only {b} bytes follow its header"),
    _E_BLOCK_LEN: "bad pcapng block length {a} at byte {pos} (block type 0x{b:08x})",
    _E_TRUNC_BLOCK: ("truncated pcapng block at byte {pos}: block length {a} but only "
                     "{b} bytes remain"),
    _E_TRAILER: ("pcapng block at byte {pos}: trailing block length {a} does not match "
                 "leading block length {b}"),
    _E_BOM: "bad pcapng byte-order magic 0x{a:08x} at byte {pos}",
    _E_VERSION: "unsupported pcapng version {a}.{b} in section header at byte {pos}",
    _E_IFACE: ("pcapng packet block at byte {pos} refers to interface {a} but its "
               "section defines {b} interface(s)"),
    _E_SHORT_BODY: "pcapng block at byte {pos} of type {b} is too short ({a} bytes)",
    _E_BLOCK_CAPLEN: ("pcapng packet block at byte {pos} claims caplen {a} but the block "
                      "has room for {b} bytes of data"),
    _E_OPTION: "bad pcapng option length {a} at byte {pos} (option code {b})",
    _E_TRUNC_BLOCK_HDR: ("truncated pcapng block header at byte {pos}: {a} of {b} bytes "
                         "present"),
    _E_BLOCK_HUGE: ("pcapng block length {a} at byte {pos} is too large (block type "
                    "0x{b:08x}; tshark reads blocks of up to 134348832 bytes): corrupt file"),
    _E_TS_RANGE: ("pcapng packet block at byte {pos}: its timestamp (interface {b}) is past "
                  "int64 nanoseconds since 1970 (year 2262)"),
}

_BT_SHB = 0x0A0D0D0A
_BT_IDB = 1
_BT_PB = 2
_BT_SPB = 3
_BT_EPB = 6
_OPT_TSRESOL = 9
_OPT_TSOFFSET = 14
_NS = 1_000_000_000


# --------------------------------------------------------------------------- kernels
@jit
def _rd16(buf: np.ndarray, p: int, be: bool) -> int:
    if be:
        return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])
    return (np.int64(buf[p + 1]) << 8) | np.int64(buf[p])


@jit
def _rd32(buf: np.ndarray, p: int, be: bool) -> int:
    if be:
        return ((np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16)
                | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3]))
    return ((np.int64(buf[p + 3]) << 24) | (np.int64(buf[p + 2]) << 16)
            | (np.int64(buf[p + 1]) << 8) | np.int64(buf[p]))


@jit
def _scan_pcap(buf, start, be, nano, hdrlen, limit, fill, off, cap, wire, ts):
    """Walk classic pcap records from ``start``; fill the columns when ``fill``.

    Returns ``(n_records, error_code, error_byte, a, b)``.
    """
    size = buf.size
    mult = 1 if nano else 1000
    n = 0
    p = start
    while p < size:
        if size - p < hdrlen:
            return n, _E_TRUNC_RECORD, p, size - p, hdrlen
        incl = _rd32(buf, p + 8, be)
        if incl > limit:
            return n, _E_CAPLEN_SNAPLEN, p, incl, limit
        if incl > size - p - hdrlen:
            return n, _E_TRUNC_DATA, p, incl, size - p - hdrlen
        if fill:
            off[n] = p + hdrlen
            cap[n] = incl
            wire[n] = _rd32(buf, p + 12, be)
            ts[n] = _rd32(buf, p, be) * 1_000_000_000 + _rd32(buf, p + 4, be) * mult
        n += 1
        p += hdrlen + incl
    return n, _E_OK, 0, 0, 0


@jit
def _units_to_ns(units, pow2, mul, div, exp, tsoff_s):
    """Convert a pcapng timestamp in interface units (``uint64``) to ``int64`` ns: ``(ns, ok)``.

    ``ok`` is False when the time is past int64 nanoseconds (it wrapped)."""
    billion = np.uint64(1_000_000_000)
    top = np.uint64(0x7FFFFFFFFFFFFFFF)
    if tsoff_s > 9_223_372_036 or tsoff_s < -9_223_372_036:
        return np.int64(0), False
    off = tsoff_s * 1_000_000_000
    if not pow2:
        if units > np.uint64(0xFFFFFFFFFFFFFFFF) // mul:
            return np.int64(0), False
        ns = units * mul // div
    elif exp == 0:
        if units > top // billion:
            return np.int64(0), False
        ns = units * billion
    else:
        whole = units >> np.uint64(exp) if exp < 64 else np.uint64(0)
        if whole > top // billion:
            return np.int64(0), False
        frac = units & ((np.uint64(1) << np.uint64(exp)) - np.uint64(1)) if exp < 64 else units
        if exp <= 34:
            frac_ns = (frac * billion) >> np.uint64(exp)
        else:
            drop = exp - 34
            f = frac >> np.uint64(drop) if drop < 64 else np.uint64(0)
            frac_ns = (f * billion) >> np.uint64(34)
        ns = whole * billion + frac_ns
    if ns > top or (off > 0 and np.int64(ns) > 0x7FFFFFFFFFFFFFFF - off):
        return np.int64(0), False
    return np.int64(ns) + off, True


@jit
def _pow10(k):
    """``10**k`` as ``uint64``, saturated for ``k > 19`` (ticks below a nanosecond)."""
    if k > 19:
        return np.uint64(0xFFFFFFFFFFFFFFFF)
    r = np.uint64(1)
    for _ in range(k):
        r *= np.uint64(10)
    return r


@jit
def _grow(a, n):
    b = np.empty(max(2 * a.size, n), a.dtype)
    b[:a.size] = a
    return b


@jit
def _scan_pcapng(buf, fill, off, cap, wire, ts, ifc):
    """Walk pcapng blocks; fill the columns (and interface index ``ifc``) when ``fill``.

    Returns ``(n_packets, error_code, error_byte, a, b, n_interfaces, if_linktype)``.
    """
    size = buf.size
    if_link = np.zeros(8, np.int64)
    if_snap = np.zeros(8, np.int64)
    if_pow2 = np.zeros(8, np.bool_)
    if_mul = np.ones(8, np.uint64)
    if_div = np.ones(8, np.uint64)
    if_exp = np.zeros(8, np.int64)
    if_off = np.zeros(8, np.int64)
    n_if = 0
    base = 0  # index of the current section's first interface
    be = False
    n = 0
    p = 0
    while p < size:
        if size - p < 12:
            return n, _E_TRUNC_BLOCK_HDR, p, size - p, 12, n_if, if_link
        btype = _rd32(buf, p, be)
        if btype == _BT_SHB:  # palindromic type; the byte-order magic fixes the order
            bom = _rd32(buf, p + 8, False)
            if bom == 0x1A2B3C4D:
                be = False
            elif bom == 0x4D3C2B1A:
                be = True
            else:
                return n, _E_BOM, p + 8, bom, 0, n_if, if_link
        blen = _rd32(buf, p + 4, be)
        if blen < 12 or blen % 4 != 0 or (btype == _BT_SHB and blen < 28):
            return n, _E_BLOCK_LEN, p, blen, btype, n_if, if_link
        if blen > _MAX_BLOCK:           # not a cut file: a corrupt length (tshark's limit)
            return n, _E_BLOCK_HUGE, p, blen, btype, n_if, if_link
        if blen > size - p:
            return n, _E_TRUNC_BLOCK, p, blen, size - p, n_if, if_link
        trail = _rd32(buf, p + blen - 4, be)
        if trail != blen:
            return n, _E_TRAILER, p, trail, blen, n_if, if_link
        body = p + 8
        blen_body = blen - 12
        if btype == _BT_SHB:
            major = _rd16(buf, p + 12, be)
            if major != 1:
                return n, _E_VERSION, p, major, _rd16(buf, p + 14, be), n_if, if_link
            base = n_if
        elif btype == _BT_IDB:
            if blen_body < 8:
                return n, _E_SHORT_BODY, p, blen, btype, n_if, if_link
            if n_if == if_link.size:
                if_link = _grow(if_link, 0)
                if_snap = _grow(if_snap, 0)
                if_pow2 = _grow(if_pow2, 0)
                if_mul = _grow(if_mul, 0)
                if_div = _grow(if_div, 0)
                if_exp = _grow(if_exp, 0)
                if_off = _grow(if_off, 0)
            if_link[n_if] = _rd16(buf, body, be)
            if_snap[n_if] = _rd32(buf, body + 4, be)
            if_pow2[n_if] = False
            if_mul[n_if] = np.uint64(1000)  # default resolution: microseconds
            if_div[n_if] = np.uint64(1)
            if_exp[n_if] = 6
            if_off[n_if] = 0
            q = body + 8
            end = body + blen_body
            while q + 4 <= end:
                code = _rd16(buf, q, be)
                olen = _rd16(buf, q + 2, be)
                if code == 0:
                    break
                if q + 4 + olen > end:
                    return n, _E_OPTION, q, olen, code, n_if, if_link
                if code == _OPT_TSRESOL and olen >= 1:
                    v = np.int64(buf[q + 4])
                    e = v & 0x7F
                    if_exp[n_if] = e
                    if v & 0x80:
                        if_pow2[n_if] = True
                    elif e <= 9:
                        if_mul[n_if] = _pow10(9 - e)
                    else:
                        if_mul[n_if] = np.uint64(1)
                        if_div[n_if] = _pow10(e - 9)
                elif code == _OPT_TSOFFSET and olen >= 8:
                    lo = _rd32(buf, q + 4, be)
                    hi = _rd32(buf, q + 8, be)
                    if be:
                        lo, hi = hi, lo
                    if_off[n_if] = np.int64((np.uint64(hi) << np.uint64(32)) | np.uint64(lo))
                q += 4 + ((olen + 3) & ~3)
            n_if += 1
        elif btype == _BT_EPB or btype == _BT_PB or btype == _BT_SPB:
            if btype == _BT_SPB:
                hdr = 4
                iface = 0
            else:
                hdr = 20
                iface = (_rd32(buf, body, be) if btype == _BT_EPB
                         else _rd16(buf, body, be))
            if blen_body < hdr:
                return n, _E_SHORT_BODY, p, blen, btype, n_if, if_link
            if iface >= n_if - base:
                return n, _E_IFACE, p, iface, n_if - base, n_if, if_link
            k = base + iface
            if btype == _BT_SPB:
                orig = _rd32(buf, body, be)
                incl = min(orig, blen_body - hdr)
                if if_snap[k] > 0:
                    incl = min(incl, if_snap[k])
            else:
                incl = _rd32(buf, body + 12, be)
                orig = _rd32(buf, body + 16, be)
                if incl > blen_body - hdr:
                    return n, _E_BLOCK_CAPLEN, p, incl, blen_body - hdr, n_if, if_link
            t = np.int64(0)       # simple packet blocks carry no timestamp
            if btype != _BT_SPB:
                units = ((np.uint64(_rd32(buf, body + 4, be)) << np.uint64(32))
                         | np.uint64(_rd32(buf, body + 8, be)))
                t, ok = _units_to_ns(units, if_pow2[k], if_mul[k], if_div[k], if_exp[k],
                                     if_off[k])
                if not ok:
                    return n, _E_TS_RANGE, p, 0, iface, n_if, if_link
            if fill:
                off[n] = body + hdr
                cap[n] = incl
                wire[n] = orig
                ifc[n] = k
                ts[n] = t
            n += 1
        p += blen
    return n, _E_OK, 0, 0, 0, n_if, if_link


@jit
def _pack_pcap(out, pos, data, offset, caplen, wirelen, sec, frac):
    """Write little-endian pcap records (16-byte headers + data) into ``out`` at ``pos``."""
    for i in range(offset.size):
        c = caplen[i]
        vals = (sec[i], frac[i], c, wirelen[i])
        for j in range(4):
            v = vals[j]
            for b in range(4):
                out[pos + 4 * j + b] = (v >> (8 * b)) & 0xFF
        pos += 16
        o = offset[i]
        out[pos:pos + c] = data[o:o + c]
        pos += c
    return pos


# --------------------------------------------------------------------------- Python API
def _fail(code: int, pos: int, a: int, b: int) -> CaptureError:
    return CaptureError(_MESSAGES[code].format(pos=pos, a=a, b=b))


def _warn_cut(code: int, pos: int, a: int, b: int, n: int) -> None:
    warnings.warn(f"capture cut at byte {pos} ({_MESSAGES[code].format(pos=pos, a=a, b=b)}); "
                  f"the {n} packets before it are read", CaptureTruncatedWarning, stacklevel=4)


def _empty_columns(n: int) -> tuple[np.ndarray, ...]:
    return tuple(np.empty(n, np.int64) for _ in range(4))


def _read_pcap(buf: np.ndarray, be: bool, nano: bool, hdrlen: int) -> Packets:
    if buf.size < 24:
        raise CaptureError(f"truncated pcap file header at byte 0: {buf.size} of 24 "
                           "bytes present")
    order = ">" if be else "<"
    major, minor = struct.unpack(order + "HH", bytes(buf[4:8]))
    if not (major == 2 and minor <= 4 or major == 543 and minor == 0):
        # libpcap's sf-pcap.c: "archaic" below 2; 2.0 to 2.4, and 543.0 (DG/UX tcpdump)
        raise CaptureError(f"unsupported pcap version {major}.{minor} in the file header at "
                           "byte 4 (versions 2.0 to 2.4 and 543.0 are read, as tcpdump "
                           "reads them)")
    snaplen, network = struct.unpack(order + "II", bytes(buf[16:24]))
    limit = snaplen if snaplen > 0 else _MAX_SNAPLEN
    dummy = _empty_columns(0)
    scan = _read_only(buf)
    n, err, pos, a, b = _scan_pcap(scan, 24, be, nano, hdrlen, limit, False, *dummy)
    if err == _E_CAPLEN_SNAPLEN and snaplen == 0:
        raise CaptureError(f"record at byte {pos} claims caplen {a} > maximum {b} "
                           "(file header snaplen is 0)")
    if err in _CUT:
        _warn_cut(err, pos, a, b, n)
    elif err != _E_OK:
        raise _fail(err, pos, a, b)
    cols = _empty_columns(n)
    _scan_pcap(scan, 24, be, nano, hdrlen, limit, True, *cols)
    return Packets(buf, *cols, int(network & _LINKTYPE_MASK))


def _read_pcapng(buf: np.ndarray) -> Packets:
    dummy = _empty_columns(0)
    ifc = np.empty(0, np.int32)
    scan = _read_only(buf)
    n, err, pos, a, b, n_if, if_link = _scan_pcapng(scan, False, *dummy, ifc)
    if err in _CUT and pos == 0:        # no section header at all: not a cut capture
        raise CaptureError("the file ends inside its pcapng section header: "
                           + _MESSAGES[err].format(pos=pos, a=a, b=b))
    if err in _CUT:
        _warn_cut(err, pos, a, b, n)
    elif err != _E_OK:
        raise _fail(err, pos, a, b)
    cols = _empty_columns(n)
    ifc = np.empty(n, np.int32)
    _scan_pcapng(scan, True, *cols, ifc)
    if_link = if_link[:n_if]
    used = np.unique(ifc)
    links = np.unique(if_link[used])
    if links.size > 1:
        raise CaptureError(
            f"packets come from interfaces with different linktypes {links.tolist()} "
            f"(interfaces {used.tolist()}); a packet table holds one linktype")
    linktype = int(links[0]) if links.size else (int(if_link[0]) if n_if else -1)
    return Packets(buf, *cols, linktype)


def read_capture(path: str | os.PathLike, *, mmap: bool = True) -> Packets:
    """Read a classic pcap or pcapng file into a :class:`Packets` table.

    The format is detected from the first four bytes: classic pcap in microsecond or
    nanosecond resolution (either byte order, also the "Kuznetzov" variant) or pcapng
    (any number of sections of either byte order; enhanced, simple and obsolete packet
    blocks; ``if_tsresol`` and ``if_tsoffset``; other blocks are skipped).

    Parameters
    ----------
    path : str or os.PathLike
        The capture file; ``"-"`` reads standard input.
    mmap : bool, default True
        Memory-map the file (read-only, no copy); otherwise read it into memory. A mapped
        file must not shrink while the table is in use: if another process truncates or
        rotates it in place, touching the lost pages kills the interpreter with SIGBUS
        (``run_pipeline`` too). Pass ``mmap=False`` for a file that may change (the
        command line does). Pipes, devices and standard input are always read.

    Returns
    -------
    Packets
        ``data`` is the whole file as ``uint8[file_size]``; ``offset``, ``caplen``,
        ``wirelen`` and ``ts_ns`` are ``int64[n]``. Packets of pcapng simple packet blocks
        have no timestamp and get ``ts_ns == 0``.

    Raises
    ------
    CaptureError
        The file is empty, not a capture, truncated or corrupt (the message names the byte
        offset), a pcap record's caplen exceeds the file's snaplen, or pcapng packets come
        from interfaces with different linktypes.
    numslab.WrongTypeError
        ``path`` is no file name (an int was taken as a file descriptor, read and closed).

    Notes
    -----
    Every returned packet lies inside ``data``. A pcap record with caplen above the file
    header's snaplen (262144 when that is 0) is an error, stricter than libpcap, which
    reads such records up to 262144 bytes. pcapng packets are bounded by their block
    length instead, and an interface's snaplen only truncates simple packet blocks.
    ``caplen > wirelen`` is passed through unchecked.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):  # (3 read and closed descriptor 3)
        raise WrongTypeError(f"path must be a file name (str or os.PathLike), not {path!r}")
    if str(path) == "-":                # standard input, read whole
        if sys.stdin is None or sys.stdin.closed:
            raise CaptureError("standard input is closed: no capture to read")
        buf = _read_stream(sys.stdin.buffer)
    elif not stat.S_ISREG(os.stat(path).st_mode):   # a pipe (<(cat x.pcap)), read whole: its
        with open(path, "rb") as f:                 # size 0 read as an empty file
            buf = _read_stream(f)
    elif os.path.getsize(path) == 0:
        buf = np.zeros(0, np.uint8)
    elif mmap:
        buf = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
    else:
        buf = np.fromfile(path, dtype=np.uint8)
    head = _check_magic(bytes(buf[:4]))
    if head == _PCAPNG_SHB:
        return _read_pcapng(buf)
    return _read_pcap(buf, *_PCAP_MAGICS[head])


def _read_only(buf: np.ndarray) -> np.ndarray:
    """A read-only view of ``buf``, as the scans take every file: one compiled version each.

    A mapped file and a stream's bytes are read-only, a file read into memory is not; each kind
    compiled a scan of its own (about 2 s of a first read)."""
    if not buf.flags.writeable:
        return buf
    view = buf.view()
    view.flags.writeable = False
    return view


def _check_magic(head: bytes) -> bytes:
    """``head`` (a file's first four bytes) if it is a pcap or pcapng magic number."""
    if not head:
        raise CaptureError("empty capture file: no magic number at byte 0")
    if head != _PCAPNG_SHB and head not in _PCAP_MAGICS:
        raise CaptureError(f"unknown magic 0x{head.hex()} at byte 0 (not a pcap or pcapng "
                           "file)")
    return head


def _read_stream(f) -> np.ndarray:
    """A pipe or device read whole, its magic number checked first.

    An endless stream that is no capture (``/dev/zero``) is refused at once, as tcpdump refuses
    it."""
    head = _check_magic(f.read(4))
    return np.frombuffer(head + f.read(), dtype=np.uint8)


def write_pcap(path: str | os.PathLike, packets: Packets, nanosecond: bool = False, *,
               snaplen: int | None = None) -> None:
    """Write a packet table as a little-endian classic pcap file.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, overwritten.
    packets : Packets
        The table; ``offset``, ``caplen``, ``wirelen`` and ``ts_ns`` are integer ``[n]``
        arrays, ``data`` is ``uint8[m]``.
    nanosecond : bool, default False
        Write the nanosecond-resolution format (magic ``0xa1b23c4d``); otherwise
        timestamps are truncated to microseconds.
    snaplen : int, optional
        The file header's snaplen; default ``max(65535, caplen.max())``.

    Raises
    ------
    numslab.InvalidArgumentError
        (A ValueError.) Columns of different lengths, a packet outside ``data``, a length
        that does not fit 32 bits or exceeds ``snaplen``, a ``snaplen`` or ``linktype``
        outside 0..2**32-1, a timestamp before 1970 or after 2106, ``data`` not 1-D or holding
        a value outside 0..255.
    numslab.WrongTypeError
        ``packets`` is no packet table, its ``data`` not integers, a ``snaplen`` or
        ``linktype`` is not an integer.
    """
    _check_table(packets)
    data = _byte_column(packets.data)   # (floats and values past a byte converted silently)
    cols = [np.ascontiguousarray(c, dtype=np.int64)
            for c in (packets.offset, packets.caplen, packets.wirelen, packets.ts_ns)]
    offset, caplen, wirelen, ts_ns = cols
    n = offset.size
    if any(c.ndim != 1 or c.size != n for c in cols):
        raise InvalidArgumentError("offset, caplen, wirelen and ts_ns must be 1-D of equal length")
    bad = _outside_data(data.size, offset, caplen)
    if bad >= 0:
        raise InvalidArgumentError(f"packet {bad} lies outside data ({data.size} bytes): offset "
                                   f"{int(offset[bad])}, caplen {int(caplen[bad])}")
    if n and (caplen.max() > 0xFFFFFFFF or wirelen.min() < 0 or wirelen.max() > 0xFFFFFFFF):
        raise InvalidArgumentError("caplen and wirelen must fit an unsigned 32-bit field")
    max_cap = int(caplen.max()) if n else 0
    if snaplen is None:
        snaplen = max(65535, max_cap)
    for name, v in (("snaplen", snaplen), ("linktype", packets.linktype)):
        _integer(name, v)
    if not 0 <= snaplen <= 0xFFFFFFFF:
        raise InvalidArgumentError(f"snaplen {snaplen} does not fit the file header's "
                                   "32-bit field")
    if not 0 <= packets.linktype <= 0xFFFFFFFF:  # (was masked: 2**32 + 1 written as 1)
        raise InvalidArgumentError(f"linktype {packets.linktype} does not fit the file "
                                   "header's 32-bit field")
    if max_cap > snaplen:
        raise InvalidArgumentError(f"caplen {max_cap} exceeds snaplen {snaplen}")
    sec, rem = np.divmod(ts_ns, _NS)
    frac = rem if nanosecond else rem // 1000
    if n and (sec.min() < 0 or sec.max() > 0xFFFFFFFF):
        raise InvalidArgumentError("timestamps must lie between 1970 and 2106")
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    header = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, packets.linktype)
    out = np.empty(24 + 16 * n + int(caplen.sum()), np.uint8)
    out[:24] = np.frombuffer(header, np.uint8)
    _pack_pcap(out, 24, data, offset, caplen, wirelen, sec, frac)
    with open(path, "wb") as f:
        f.write(memoryview(out))


# ---- argument checks shared with the pipeline and the traffic generator ----------------------
def _byte_column(column: Any) -> np.ndarray:
    """The packet bytes as a read-only C ``uint8[m]``, refusing what would convert wrongly.

    ``None`` was a TypeError from NumPy; floats (3.7 read as byte 3) and values past a byte
    (256 read as 0) were converted silently, a 2-D array compiled the loop once more."""
    a = np.asarray(column)
    if a.dtype == np.int8:              # bytes read as signed (np.frombuffer(b, np.int8))
        a = a.view(np.uint8)
    if a.dtype.kind not in "iu":
        raise WrongTypeError(f"data must be a uint8 array of the packets' bytes, not {a.dtype}")
    if a.ndim != 1:
        raise InvalidArgumentError(f"data must be 1-D (uint8[m]), not {a.ndim}-D")
    if a.dtype != np.uint8 and a.size and (a.min() < 0 or a.max() > 255):
        i = int(np.argmax((a < 0) | (a > 255)))
        raise InvalidArgumentError(f"data[{i}] is {int(a[i])}: not a byte (0..255)")
    data = np.require(a, np.uint8, ["C"]).view()
    data.flags.writeable = False
    return data


def _check_table(packets: object) -> None:
    """Raise ``WrongTypeError`` unless ``packets`` has a packet table's fields.

    None or a list was an AttributeError on ``data``."""
    missing = [a for a in Packets._fields if not hasattr(packets, a)]
    if missing:
        raise WrongTypeError(f"packets must be a numslab.net.Packets table, not "
                             f"{type(packets).__name__} (it has no {missing[0]!r})")


def _integer(name: str, v: object) -> int:
    """``v`` as an int, or ``WrongTypeError`` naming ``name`` (a bool is no integer)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise WrongTypeError(f"{name} must be an integer, not {v!r}")
    return int(v)


def _real(name: str, v: object, what: str = "a number") -> float:
    """``v`` as a float, or ``WrongTypeError`` naming ``name`` (a bool is no number)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                             np.floating)):
        raise WrongTypeError(f"{name} must be {what}, not {v!r}")
    return float(v)


def _outside_data(size: int, offset: np.ndarray, caplen: np.ndarray) -> int:
    """The first packet whose record does not lie inside ``size`` bytes of data, or -1.

    The record is ``offset``, ``caplen`` (int64); compared without ``offset + caplen``, which
    overflows int64 for an offset near 2**63 (such a packet passed, and the reader read wild
    memory)."""
    bad = (offset < 0) | (caplen < 0) | (offset > size - caplen)
    return int(np.argmax(bad)) if bad.any() else -1
