"""Where the trace reader's text comes from: a path, standard input, a pipe, a file object, bytes.

Plain, gz or xz, told by the first bytes (:func:`open_source`); binary files a trace is
mistaken for are named by their magic (:func:`check_text`). A stream that cannot be mapped
(standard input, a FIFO, a file object) is read as it comes (:class:`_Stream`), never whole.
"""
from __future__ import annotations

import gzip
import io
import lzma
import os
import sys
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import SlabError, WrongTypeError


class TraceFormatError(SlabError, ValueError):
    """A line of a trace is not a tracepoint line the reader understands (names the line)."""


#: binary files a trace is mistaken for, by their first bytes (``?``: any one, bzip2's block
#: size): what to give instead
_NOT_TEXT = ((b"PERFILE2", "perf's binary perf.data: give its text, perf script -i FILE"),
             (b"PERFFILE", "perf's binary perf.data: give its text, perf script -i FILE"),
             (b"\x17\x08\x44tracing", "trace-cmd's binary trace.dat: give its text, "
                                     "trace-cmd report -i FILE"),
             (b"\x28\xb5\x2f\xfd", "zstd-compressed: plain, gz or xz are read (zstdcat FILE "
                                 "| numslab replay -)"),
             (b"BZh?1AY&SY", "bzip2-compressed: plain, gz or xz are read (bzcat FILE | "
                             "numslab replay -)"),
             (b"\x04\x22\x4d\x18", "lz4-compressed: plain, gz or xz are read (lz4cat FILE | "
                                 "numslab replay -)"),
             *((m, "a packet capture (pcap): the packet pipeline reads it "
                   "(examples/packet_pipeline.py --pcap FILE); a trace is kmem event text")
               for m in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                         b"\xa1\xb2\x3c\x4d")),
             (b"\x0a\x0d\x0d\x0a", "a packet capture (pcapng): the packet pipeline reads it "
                                 "(examples/packet_pipeline.py --pcap FILE); a trace is kmem "
                                 "event text"),
             (b"\x7fELF", "an ELF executable or object: a trace is kmem event text"))


def check_text(head: bytes, name: str) -> None:
    """Refuse a binary file a trace is mistaken for, by its first bytes ``head``.

    perf.data, trace.dat, zstd, bzip2, lz4, pcap, pcapng, ELF (their first line was named
    malformed, bytes shown)."""
    for magic, what in _NOT_TEXT:
        if len(head) >= len(magic) and all(m in (63, h) for m, h in zip(magic, head)):
            raise TraceFormatError(f"{name}: {what}")


#: bytes no text line holds: C0 controls but tab, line feed, vertical tab, form feed and
#: carriage return, and DEL
_CONTROL = bytes([*range(0, 9), *range(14, 32), 127])


def binary_bytes(line: bytes) -> str:
    """What makes a malformed ``line`` binary data rather than text, or ``''`` if it is text.

    NUL bytes, other control bytes, or bytes that are not UTF-8, a quarter of them or more
    past ASCII (a Latin-1 line is text); its bytes were shown in the error: ~200 of garbage
    for a binary file no magic of :func:`check_text` names."""
    if b"\0" in line:
        return "NUL bytes"
    if line.translate(None, _CONTROL) != line:
        return "control bytes"
    try:
        line.decode()
    except UnicodeDecodeError:
        high = len(line) - len(line.translate(None, bytes(range(128, 256))))
        if 4 * high >= len(line):
            return "bytes that are not UTF-8"
    return ""


def open_source(source: str | Path | BinaryIO | bytes,
                name: str = "trace") -> tuple[BinaryIO, int, str]:
    """A binary stream of the decompressed text, a row-count guess, and a name for errors.

    The name is ``name`` for bytes and file objects. A UTF-8 byte order mark at the start of
    the text is passed over (an editor's: line 1 was "no '[cpu]' field: '\\ufeff# tracer")."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        elif data[:6] == b"\xfd7zXZ\x00":
            data = lzma.decompress(data)
        data = data[3:] if data[:3] == BOM else data
        check_text(data[:16], name)
        return io.BytesIO(data), len(data) // 150, name
    if hasattr(source, "read"):                 # read as it comes, not whole
        if getattr(source, "closed", False) is True:    # (its read's ValueError, bare)
            raise TraceFormatError(f"cannot read trace {_name(source, name)}: the file "
                                   f"object is closed")
        return _stream(source, _name(source, name), False)
    if not isinstance(source, (str, os.PathLike)):     # (5 was a plain TypeError)
        raise WrongTypeError(f"trace {source!r} is not a path, bytes or a binary file")
    if isinstance(source, str) and "\n" in source:    # (taken for a path, the whole text
        # was named in "cannot read trace ...: File name too long": 890 kB for 5,000 lines)
        raise WrongTypeError(f"trace {source[:40]!r}...: a str is a path, and this one holds "
                             f"line breaks: pass trace text as bytes (text.encode())")
    if isinstance(source, str) and not source:   # (Path('') is the current folder: "Is a
        raise TraceFormatError("cannot read trace '': an empty file name")     # directory")
    if str(source) == "-":
        stdin = sys.stdin if sys.stdin is not None and not sys.stdin.closed else None
        if getattr(stdin, "buffer", None) is None:      # (`<&-`: an AttributeError traceback)
            raise TraceFormatError("cannot read trace -: standard input is closed")
        return _stream(stdin.buffer, "standard input", False)  # type: ignore[union-attr]
    path = Path(source)
    try:
        f = open(path, "rb")
        size = path.stat().st_size
    except OSError as e:
        raise TraceFormatError(f"cannot read trace {source}: {e.strerror}") from None
    if not f.seekable():            # a pipe (<(xzcat t.xz), /dev/stdin): read as stdin is
        try:
            return _stream(f, str(source), True)
        except BaseException:
            f.close()
            raise
    magic = f.read(16)
    f.seek(3 if magic[:3] == BOM else 0)        # (the reader maps the file from here)
    if magic[:2] == b"\x1f\x8b":       # opened by name: closing the reader closes the file
        f.close()
        return _past_bom(gzip.GzipFile(path, "rb")), size // 20, str(source)
    if magic[:6] == b"\xfd7zXZ\x00":
        f.close()
        return _past_bom(lzma.LZMAFile(path, "rb")), size // 15, str(source)
    try:
        check_text(magic.removeprefix(BOM), str(source))
    except TraceFormatError:
        f.close()
        raise
    return f, size // 150, str(source)


class _Stream(io.RawIOBase):
    """A stream read as it comes (standard input, a pipe, a file object), its first bytes first.

    The first bytes (``head``) were read to tell the format; :meth:`readinto` fills the whole
    buffer it is given unless the stream ends, so that the reader's chunks are whole. Closing
    it closes the objects of ``closes`` (a FIFO the reader opened, a decompressor), not
    standard input or the caller's file object.
    """

    def __init__(self, head: bytes, src: Any, closes: tuple[Any, ...] = ()) -> None:
        super().__init__()
        self.head, self.src, self.closes = head, src, closes
        self._into = getattr(src, "readinto", None)

    def readable(self) -> bool:
        """Yes."""
        return True

    def readinto(self, b: Any) -> int:
        """Fill ``b`` from the head, then from the source, until it is full or the source ends."""
        mv = memoryview(b).cast("B")
        n = min(len(mv), len(self.head))
        mv[:n] = self.head[:n]
        self.head = self.head[n:]
        while n < len(mv):
            if self._into is not None:
                got = self._into(mv[n:]) or 0
            else:
                data = self.src.read(len(mv) - n)
                got = len(data) if data else 0
                mv[n:n + got] = data
            if got == 0:
                break
            n += got
        return n

    def close(self) -> None:
        """Close what the stream owns."""
        if not self.closed:
            for c in self.closes:
                c.close()
        super().close()


def _head(src: Any, where: str) -> bytes:
    """The first 16 bytes of a stream (fewer at its end): enough to tell its format."""
    head = b""
    while len(head) < 16:
        data = src.read(16 - len(head))
        if isinstance(data, str):       # (a text file's str was then taken for a path)
            raise WrongTypeError(f"trace {where}: a file object in text mode; open it in "
                                 f"binary mode ('rb')")
        if not data:
            break
        head += bytes(data)
    return head


def _stream(src: Any, where: str, owns: bool) -> tuple[BinaryIO, int, str]:
    """:func:`open_source` of a stream that cannot be mapped or sought: read a chunk at a time.

    Standard input, a FIFO, a file object (plain, gz or xz, told by its first bytes). Its text
    was read whole before the parse (a trace piped in took its size in memory, and more);
    ``owns``: close ``src`` with the reader (a FIFO opened here)."""
    head = _head(src, where)
    raw = _Stream(head, src, (src,) if owns else ())
    if head[:2] == b"\x1f\x8b":
        dec: Any = gzip.GzipFile(fileobj=raw, mode="rb")
    elif head[:6] == b"\xfd7zXZ\x00":
        dec = lzma.LZMAFile(raw, "rb")
    else:
        raw.head = head.removeprefix(BOM)
        check_text(raw.head, where)
        return raw, 0, where                            # type: ignore[return-value]
    # (the first bytes of the text: read as the decompressor gives them)
    inner = dec.read(16).removeprefix(BOM)
    check_text(inner, where)
    return _Stream(inner, dec, (dec, raw)), 0, where    # type: ignore[return-value]


#: a UTF-8 byte order mark: some editors write one at the start of a text they save
BOM = b"\xef\xbb\xbf"


def _past_bom(f: Any) -> Any:
    """A decompressing reader ``f`` past a byte order mark at the start of its text."""
    if f.peek(3)[:3] == BOM:
        f.read(3)
    return f


def _name(source: Any, name: str) -> str:
    """What errors call ``source``: a path, a file object's path (``name`` for bytes)."""
    if isinstance(source, (str, Path)):
        return str(source)
    got = getattr(source, "name", None)
    return got if isinstance(got, str) and got else name


#: what gzip and lzma raise on a cut or corrupt stream (gzip's BadGzipFile is an OSError)
BROKEN = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


def _shown(source: Any) -> str:
    """What an error of reading ``source`` calls it (``-``: standard input)."""
    return "standard input" if str(source) == "-" else _name(source, "trace")


def unreadable(source: Any, e: OSError | ValueError) -> TraceFormatError:
    """The error of a ``source`` whose reading failed part-way (EIO, a file object's error).

    It reached ``numslab``'s handler of output errors: "cannot write the output". A file object
    closed part-way (by another thread) raises ValueError: "the file object is closed"."""
    name = _shown(source)
    why = (getattr(e, "strerror", None) or str(e)) if isinstance(e, OSError) else \
        "the file object is closed"
    return TraceFormatError(f"cannot read trace {name}: {why}")


def broken(source: Any, e: Exception) -> TraceFormatError:
    """The error of a compressed ``source`` that is cut short or corrupt."""
    name = _shown(source)
    return TraceFormatError(f"{name}: the compressed text is cut short or corrupt "
                            f"({type(e).__name__}: {e})")
