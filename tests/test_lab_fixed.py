"""The trace scanner's fast path (numslab/lab/fixed.py): its 8-byte primitives against plain
Python, and every line it reads against the general token walk (on the real traces and on
lines with one byte changed, where it must refuse what it cannot read the same)."""
from __future__ import annotations

import random
import re

import numba
import numpy as np
import pytest

from numslab.lab import fixed as X
from numslab.lab import parse as P
from numslab.lab import trace as T
from numslab.lab.trace import TraceFormatError, parse_bytes

from lab_oracle import TRACES, text

COLS = ("kind", "line", "cpu", "ts", "ptr", "name", "bytes_req", "bytes_alloc", "gfp", "node",
        "row", "pid", "sizes", "kmalloc")


def _buf(data: bytes) -> np.ndarray:
    """``data`` as the scanner's buffer: uint8, with 64 bytes of slack (spaces and a newline,
    so that scans stop inside it)."""
    return np.frombuffer(data + b" " * 63 + b"\n", np.uint8).copy()


@numba.njit(cache=True)
def _prims(buf, i):
    """Every primitive at ``buf[i]``, for the tests."""
    bp = X.data_address(buf)
    ok0, v0 = X.hex8(X.load8p(bp + i))
    k, d = X.dec8(bp, i)
    e, h = X.token_hash(bp, i)
    h2, _ = X.word_hash(bp, i, e)
    return (ok0, v0, k, d, X.ctl_end(bp, i), X.skip_spaces(bp, i), X.delim(bp, i), e, h,
            h2)


ALPHABET = b"0123456789abcdefABCDEFxyz-_:|.[] \t\r\n\x80\xff"


def test_the_8_byte_primitives_match_plain_python():
    rng = random.Random(14)
    for _ in range(3000):
        n = rng.randrange(0, 20)
        data = bytes(rng.choice(ALPHABET) for _ in range(n))
        b = _buf(data)
        ok, v, k, d, ctl, sp, dl, e, h, h2 = _prims(b, 0)
        raw = bytes(b)
        word = raw[:8]
        hexok = all(c in b"0123456789abcdefABCDEF" for c in word)
        assert ok == hexok, word
        if hexok:
            assert v == int(word, 16)
        digits = len(raw) - len(raw.lstrip(b"0123456789"))
        assert k == min(digits, 8)
        if 0 < digits < 8:
            assert d == int(raw[:digits])
        assert ctl == next(i for i, c in enumerate(raw) if c <= 32)
        assert sp == next(i for i, c in enumerate(raw) if c != 32)
        assert dl == next(i for i, c in enumerate(raw) if c in b" \n")
        assert e == ctl and h == h2 != 0
    # equal spans hash equal wherever they are; different ones (almost surely) differ
    a = _prims(_buf(b"kmalloc-cg-1k x"), 0)
    b_ = _prims(_buf(b"zz kmalloc-cg-1k\n"), 3)
    c = _prims(_buf(b"kmalloc-cg-1k0 x"), 0)
    assert a[8] == b_[8] != c[8]


def _walked(monkeypatch, data: bytes, **kw):
    """``parse_bytes(data)`` with the fast path off: every line by the general walk."""
    monkeypatch.setattr(T._Chunk, "fast", False)
    try:
        return parse_bytes(data, **kw)
    finally:
        monkeypatch.setattr(T._Chunk, "fast", True)


def _same(a, b) -> None:
    for k in COLS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert a.names == b.names and a.npid == b.npid


def _fast_rows(data: bytes) -> tuple[int, int]:
    """(rows, rows the fast path read) of one chunk of ``data``."""
    if not data.endswith(b"\n"):
        data += b"\n"
    ch = T._Chunk(len(data) + 1)
    ch.buf[:len(data)] = np.frombuffer(data, np.uint8)
    ch.end = len(data)
    ch.scan(True)
    return int(ch.sv[P.SV_ROWS]), int(ch.sv[P.SV_FAST])


@pytest.mark.parametrize("name", sorted(TRACES))
def test_the_fast_path_reads_each_real_trace_as_the_walk_does(monkeypatch, name):
    data = text(name).encode()
    _same(parse_bytes(data), _walked(monkeypatch, data))
    rows, fast = _fast_rows(data)
    kmem = sum(1 for ln in data.split(b"\n")
               if any(f" {e}: ".encode() in ln for e in ("kmalloc", "kfree", "kmem_cache_alloc",
                                                          "kmem_cache_free")))
    if name in ("perf", "trace_cmd"):                  # not tracefs's layout: all walked
        assert fast == 0 and rows > 700
    else:                                               # every kmem line at fixed places
        assert fast == kmem == rows > 3000


def test_a_line_off_the_layout_is_walked_and_reads_the_same(monkeypatch):
    base = text("git_tar").encode().split(b"\n")
    body = [ln for ln in base if ln.strip() and not ln.startswith(b"#")][:400]
    gfp = re.compile(rb"gfp_flags=\S+")
    req = re.compile(rb"bytes_req=(\d+)")             # the same value in hex
    variants = [                                  # (lines, how many the fast path reads)
        ([ln + b" extra=1" for ln in body], "none"),                  # a field after the last
        ([ln.replace(b" ptr=", b"  ptr=") for ln in body], "none"),    # two spaces
        ([ln.replace(b"ptr=0000", b"ptr=0x00") for ln in body], "none"),  # 0x, 14 digits
        ([ln + b"\r" for ln in body], "none"),                         # CRLF
        ([ln.replace(b"2626.", b"12626.") for ln in body], "none"),    # wider seconds
        ([req.sub(lambda m: b"bytes_req=0x%x" % int(m[1]), ln) for ln in body], "some"),
        ([gfp.sub(b"gfp_flags=0x400cc0", ln) for ln in body], "some"),
        ([ln.replace(b"node=-1", b"node=3") for ln in body], "all"),   # read in place too
        ([ln.replace(b"accounted=true", b"accounted=1") for ln in body], "all"),
    ]
    for lines, expect in variants:
        data = b"\n".join(lines) + b"\n"
        _same(parse_bytes(data), _walked(monkeypatch, data))
        rows, nfast = _fast_rows(data)
        assert rows == len(body)
        assert {"none": nfast == 0, "some": 0 < nfast < rows, "all": nfast == rows}[expect]


def test_one_changed_byte_anywhere_reads_as_the_walk_reads_it(monkeypatch):
    # every tracefs line of a real trace with one byte changed (to a byte that matters to
    # some check: a space, a digit, a colon, a bracket, a newline...): the fast path either
    # reads it exactly as the walk does or leaves it to the walk, errors included
    rng = random.Random(7)
    lines = [ln for ln in text("net").encode().split(b"\n") if ln.strip()
             and not ln.startswith(b"#")][:1500]
    out = []
    for ln in lines:
        i = rng.randrange(len(ln))
        out.append(ln[:i] + bytes([rng.choice(ALPHABET)]) + ln[i + 1:])
    data = b"\n".join(out) + b"\n"
    _same(parse_bytes(data, skip_bad=True), _walked(monkeypatch, data, skip_bad=True))
    for k in range(0, len(out), 50):                   # the first bad line, named the same
        part = b"\n".join(out[k:k + 50]) + b"\n"
        errs = []
        for walk in (False, True):
            try:
                _walked(monkeypatch, part) if walk else parse_bytes(part)
                errs.append(None)
            except TraceFormatError as e:
                errs.append(str(e))
        assert errs[0] == errs[1]
