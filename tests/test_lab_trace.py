"""The kmem trace reader: every format (tracefs trace/trace_pipe, trace-cmd report, perf
script) on real samples, plain/gz/xz/stdin, malformed lines, and the fields of each event."""
from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import numslab

from numslab import flags as F
from numslab.lab.trace import (EV_BAD, EV_CACHE_ALLOC, EV_CACHE_FREE, EV_KFREE, EV_KMALLOC,
                               EV_LOST, EV_OTHER, EV_OWN, TraceFormatError, parse_bytes,
                               read_trace)

from lab_oracle import _OWN_SITE, DATA, TRACES, text

KINDS = {"kmem_cache_alloc": EV_CACHE_ALLOC, "kmalloc": EV_KMALLOC, "kfree": EV_KFREE,
         "kmem_cache_free": EV_CACHE_FREE}


def _naive(trace_text: str) -> list[dict]:
    """Each event line as a dict, by ``str.split`` (the test's own reading)."""
    out = []
    for k, ln in enumerate(trace_text.split("\n"), 1):
        s = ln.strip()
        if not s or s[0] == "#" or s.startswith("cpus="):
            continue
        toks = s.split()
        cpu = next(int(t[1:-1]) for t in toks if t[0] == "[" and t[-1] == "]")
        i = next(i for i, t in enumerate(toks) if t[-1] == ":" and "." in t
                 and t[:-1].replace(".", "").isdigit())
        ev = next(t for t in toks[i + 1:] if t.endswith(":"))[:-1].split(":")[-1]
        f = dict(t.split("=", 1) for t in toks if "=" in t)
        out.append({"line": k, "cpu": cpu, "ts": float(toks[i][:-1]), "ev": ev, **f})
    return out


@pytest.mark.parametrize("name", sorted(TRACES))
def test_every_field_of_every_event_matches_a_naive_reading(name):
    t = text(name)
    tr = parse_bytes(t.encode())
    want = _naive(t)
    assert len(tr) == len(want) > 700
    for k, w in enumerate(want):
        assert tr.line[k] == w["line"]
        own = w["ev"] == "kmalloc" and _OWN_SITE.match(w.get("call_site", ""))
        assert tr.kind[k] == (EV_OWN if own else KINDS.get(w["ev"], EV_OTHER))
        assert tr.cpu[k] == w["cpu"]
        assert tr.ts[k] == pytest.approx(w["ts"], abs=1e-7)
        p = w["ptr"]
        assert int(tr.ptr[k]) == (0 if p in ("(nil)", "(null)") else int(p, 16))
        if "name" in w:
            assert tr.names[tr.name[k]] == w["name"]
        else:
            assert tr.name[k] == -1
        assert tr.bytes_alloc[k] == int(w.get("bytes_alloc", -1))
        assert tr.bytes_req[k] == int(w.get("bytes_req", -1))
        assert tr.node[k] == int(w.get("node", -1))
        bits = 0
        for g in w.get("gfp_flags", "").split("|"):
            if g:
                bits |= {"GFP_KERNEL": F.GFP_KERNEL, "GFP_NOFS": F.GFP_NOFS,
                         "GFP_ATOMIC": F.GFP_ATOMIC, "GFP_NOWAIT": F.GFP_NOWAIT,
                         "GFP_KERNEL_ACCOUNT": F.GFP_KERNEL | F.__GFP_ACCOUNT,
                         "GFP_NOIO": F.GFP_NOIO, "GFP_USER": F.GFP_KERNEL | F.__GFP_HARDWALL,
                         }.get(g) or getattr(F, g)
        assert tr.gfp[k] == bits, w.get("gfp_flags")


def test_formats_and_compression_read_the_same(tmp_path):
    raw = text("git_tar").encode()
    ref = parse_bytes(raw)
    (tmp_path / "t.txt").write_bytes(raw)
    (tmp_path / "t.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "t.xz").write_bytes(lzma.compress(raw))
    for f in ("t.txt", "t.gz", "t.xz"):
        tr = read_trace(tmp_path / f)
        assert np.array_equal(tr.ptr, ref.ptr) and tr.names == ref.names
    tr = read_trace(io.BytesIO(gzip.compress(raw)))
    assert np.array_equal(tr.kind, ref.kind)
    # trace_pipe text is the trace's lines with no header
    body = b"\n".join(ln for ln in raw.split(b"\n") if not ln.startswith(b"#"))
    tp = parse_bytes(body)
    assert np.array_equal(tp.ptr, ref.ptr) and np.array_equal(tp.kind, ref.kind)


def test_a_named_pipe_reads_as_a_file_and_a_text_file_object_is_refused(tmp_path):
    # a FIFO (<(xzcat t.xz), /dev/stdin on a pipe) raised io.UnsupportedOperation from a
    # seek; a text-mode file's str was taken for a path (a 700,000-character message)
    import threading
    import numslab
    raw = text("git_tar").encode()
    ref = parse_bytes(raw)
    for payload in (raw, lzma.compress(raw)):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        writer = threading.Thread(target=lambda: fifo.write_bytes(payload))
        writer.start()
        tr = read_trace(fifo)
        writer.join()
        fifo.unlink()
        assert np.array_equal(tr.ptr, ref.ptr) and tr.names == ref.names
    (tmp_path / "t.txt").write_bytes(raw)
    with open(tmp_path / "t.txt") as f, \
            pytest.raises(numslab.WrongTypeError, match=r"text mode; open it in binary mode"):
        read_trace(f)


def test_trace_text_passed_as_a_str_is_refused_without_naming_all_of_it():
    # the str was taken for a path: "cannot read trace <the whole text>: File name too
    # long", an 890 kB message for 5,000 lines
    import numslab
    raw = text("git_tar")
    with pytest.raises(numslab.WrongTypeError, match=r"a str is a path, and this one holds "
                                                     r"line breaks: pass trace text as bytes") as e:
        read_trace(raw)
    assert len(str(e.value)) < 200
    with pytest.raises(numslab.SlabError, match=r"pass the snapshot's JSON as a dict") as e:
        numslab.replay(raw.encode(), snapshot='{\n"caches": []}')
    assert len(str(e.value)) < 200


LINE = ("  bash-1 [001] ..... 10.000001: kmalloc: call_site=f+0x1/0x2 ptr=00000000deadbeef "
        "bytes_req=72 bytes_alloc=96 gfp_flags=GFP_KERNEL|__GFP_ZERO node=-1 accounted=false")


def test_one_line_of_each_kind():
    lines = [LINE,
             "  bash-1 [000] d.... 10.000002: kfree: call_site=f+0x1/0x2 ptr=00000000deadbeef",
             "CPU:1 [LOST 42 EVENTS]",
             "  bash-1 [000] ..... 10.000003: sched_switch: prev_comm=bash prev_pid=1",
             "  my task-7 [000] ..... 10.000004: kmem_cache_alloc: call_site=g ptr=0x10 "
             "name=dentry bytes_req=192 bytes_alloc=192 gfp_flags=0x500cc0 node=1",
             "  a-1 [000] ..... 10.000005: kmem_cache_free: call_site=g ptr=0x10 name=dentry"]
    tr = parse_bytes("\n".join(lines).encode())
    assert tr.kind.tolist() == [EV_KMALLOC, EV_KFREE, EV_LOST, EV_OTHER, EV_CACHE_ALLOC,
                                EV_CACHE_FREE]
    assert tr.gfp[0] == F.GFP_KERNEL | F.__GFP_ZERO
    assert tr.gfp[4] == 0x500cc0 and tr.node[4] == 1 and tr.cpu[0] == 1
    assert tr.names == ["kmalloc-96", "dentry"] and tr.ptr[0] == 0xdeadbeef
    assert tr.row[0] == 0 and tr.row[4] == 1 and tr.name[4] == tr.name[5] == 1
    assert tr.name[0] == -1 and tr.row[3] == tr.row[2] < -5
    assert tr.pid[0] == tr.pid[1] != tr.pid[4] == tr.pid[5] and tr.npid == 2
    assert tr.line.tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("event", ["kmem_crazy_free", "kmem_cache_aXXXc", "kmalloc_huge",
                                   "kfrex", "kmem_cache_alloc_nodX", "kmalloc_nodf"])
def test_an_event_is_a_kmem_event_only_by_its_whole_name(event):
    """Names were told by a few of their bytes: ``kmem_crazy_free`` (its length, and 'c',
    '_', 'f', 'e' where kmem_cache_free has them) was read as a kmem_cache_free."""
    line = (f"  bash-1 [000] ..... 10.000002: {event}: call_site=f+0x1/0x9 "
            f"ptr=0000000000001000 name=dentry bytes_req=192 bytes_alloc=192 "
            f"gfp_flags=GFP_KERNEL node=-1 accounted=false")
    assert parse_bytes(f"{LINE}\n{line}\n".encode()).kind.tolist() == [EV_KMALLOC, EV_OTHER]


@pytest.mark.parametrize("bad", [
    "garbage without a timestamp",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=xyz bytes_alloc=8",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=00000000deadbeef",
    "  bash-1 [001] ..... 10.000001: kmem_cache_free: call_site=f ptr=0000000000000001",
    "  bash-1 ..... 10.000001: kfree: call_site=f ptr=0000000000000001",
    "  bash-1 [001] ..... 10.000001: kmalloc: ptr=1 bytes_alloc=9x",
    # values past their column: refused, not wrapped (4294967360 was read as 64, a CPU of
    # 4294967296 as CPU 0, 2147483648 bytes as a field missing)
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=4294967360 gfp_flags=GFP_KERNEL node=-1",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=2147483648 gfp_flags=GFP_KERNEL node=-1",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=00000000064 gfp_flags=GFP_KERNEL node=-1",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=0x100000040 gfp_flags=GFP_KERNEL node=-1",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=64 gfp_flags=0x1000000cc0 node=-1",
    "  bash-1 [001] ..... 10.000001: kmem_cache_alloc: call_site=f ptr=1 name=x "
    "bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL node=99999999999999999999",
    "  bash-1 [4294967296] ..... 10.000001: kfree: call_site=f ptr=0000000000000001",
    # a size below 0 (the kernel prints sizes unsigned: only node may be -1)
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=-5 "
    "bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=-64 gfp_flags=GFP_KERNEL node=-1",
    # an empty cache name (the kernel prints s->name, never empty), in tracefs's layout (the
    # fast path) and at a line's end (the walk): replayed as a cache named '', which
    # kmem_cache_create refused even with skip_bad
    "  bash-1 [001] ..... 10.000001: kmem_cache_alloc: call_site=f+0x1/0x2 "
    "ptr=00000000deadbeef name= bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1 "
    "accounted=false",
    "  bash-1 [001] ..... 10.000001: kmem_cache_free: call_site=f ptr=1 name=",
    # more bytes asked for than allocated (the kernel's bytes_alloc is s->size or the pages,
    # never less), in tracefs's layout (the fast path) and the walk's
    "  bash-1 [001] ..... 10.000001: kmem_cache_alloc: call_site=f+0x1/0x2 "
    "ptr=00000000deadbeef name=x bytes_req=4096 bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1 "
    "accounted=false",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=65 "
    "bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1",
    # a gfp flag name no kernel prints (a typo, a cut line, an empty name): read as no bit
    # until a kernel engineer's trial, so a typo changed whether 7.x refills a sheaf; in
    # tracefs's layout (the fast path) and the walk's
    "  bash-1 [001] ..... 10.000001: kmem_cache_alloc: call_site=f+0x1/0x2 "
    "ptr=00000000deadbeef name=x bytes_req=64 bytes_alloc=64 gfp_flags=GFP_ATOMC node=-1 "
    "accounted=false",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=64 gfp_flags=GFP_KERNEL|__GFP_BOGUS node=-1",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=64 gfp_flags=GFP_KERNEL| node=-1",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=64 gfp_flags=GFP_KER",
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=64 gfp_flags=GFP_KERNEL|0x12345678z node=-1",
    # an allocation without its gfp_flags (every kernel prints it): a line cut before it, or
    # the field removed by hand, was replayed as no flag (the same trial)
    "  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
    "bytes_alloc=64 gfp_",
    "  bash-1 [001] ..... 10.000001: kmem_cache_alloc: call_site=f+0x1/0x2 "
    "ptr=00000000deadbeef name=x bytes_req=64 bytes_alloc=64 node=-1 accounted=false",
])
def test_a_malformed_line_is_an_error_naming_it_unless_skipped(bad):
    text_ = "# header\n" + LINE + "\n\n" + bad + "\n" + LINE + "\n"
    with pytest.raises(TraceFormatError, match=r"line 4\b"):
        parse_bytes(text_.encode())
    tr = parse_bytes(text_.encode(), skip_bad=True)
    assert tr.kind.tolist() == [EV_KMALLOC, EV_BAD, EV_KMALLOC]
    import numslab
    r = numslab.replay(text_.encode(), skip_bad=True, kernel="7.0")
    assert r.skipped["bad_line"] == 1 and r.lines == 3
    assert r.replayed + sum(r.skipped.values()) == r.lines


@pytest.mark.parametrize("tail", [" node=-1 accounted=false", ""])
def test_symbolic_gfp_flags_read_as_the_kernel_prints_them(tail):
    """The kernel's ``__print_flags`` names the bits it knows and ends with a ``0x`` number of the
    rest (``GFP_KERNEL|0x4000000``), and prints ``none`` for no bit; those bits were dropped
    (read 0xcc0), and names of bits no SLUB rule reads (``__GFP_NOLOCKDEP``, KASAN's) are known.
    In tracefs's layout (the fast path) and at a line's end (the walk)."""
    want = {"GFP_KERNEL|0x4000000": F.GFP_KERNEL | 0x4000000, "0x4000000": 0x4000000,
            "none": 0, "GFP_KERNEL|__GFP_NOLOCKDEP": F.GFP_KERNEL,
            "GFP_ATOMIC|__GFP_SKIP_KASAN|0xAb0000": F.GFP_ATOMIC | 0xAB0000,
            "GFP_NOWAIT|__GFP_ZERO": F.GFP_NOWAIT | F.__GFP_ZERO}
    lines = [f"  t-1 [000] ..... 1.{i + 1:06d}: kmem_cache_alloc: call_site=f+0x1/0x2 "
             f"ptr=00000000000{i + 1:05x} name=x bytes_req=64 bytes_alloc=64 gfp_flags={g}{tail}"
             for i, g in enumerate(want)]
    tr = parse_bytes(("\n".join(lines) + "\n").encode())
    assert [int(x) for x in tr.gfp] == list(want.values())


def test_a_malformed_line_of_an_open_file_or_standard_input_names_it(tmp_path):
    """A file object's malformed line was named "trace", standard input's too."""
    path = tmp_path / "rec.txt"
    path.write_text(LINE + "\ngarbage\n")
    with open(path, "rb") as f, pytest.raises(TraceFormatError,
                                              match=rf"^{re.escape(str(path))}, line 2: "):
        numslab.replay(f, kernel="7.0")
    with pytest.raises(TraceFormatError, match=r"^trace, line 2: "):      # bytes: no name
        numslab.replay(path.read_bytes(), kernel="7.0")
    r = subprocess.run([sys.executable, "-m", "numslab.tools.cli", "replay", "-"],
                       input=path.read_bytes(), capture_output=True, timeout=300)
    assert r.returncode == 2 and b"standard input, line 2: " in r.stderr, r.stderr.decode()


@pytest.mark.parametrize("head, says", [
    (b"PERFILE2h\x00\x00\x00", "perf's binary perf.data: give its text, perf script"),
    (b"\x17\x08\x44tracing6\x00", "trace-cmd's binary trace.dat: give its text, trace-cmd"),
    (b"\x28\xb5\x2f\xfd\x24\x00", "zstd-compressed: plain, gz or xz are read"),
    (b"BZh91AY&SY\x00", "bzip2-compressed"), (b"\x04\x22\x4d\x18\x64", "lz4-compressed"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "a packet capture (pcap): the packet pipeline reads it"),
    (b"\xa1\xb2\x3c\x4d\x00\x02", "a packet capture (pcap)"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00", "a packet capture (pcapng)"),
    (b"\x7fELF\x02\x01", "an ELF executable or object")])
def test_a_binary_file_taken_for_a_trace_is_named(tmp_path, head, says):
    """``numslab replay perf.data`` (or trace.dat, or a zstd, bzip2, lz4 file) said "line 1:
    no '[cpu]' field: 'PERFILE2h\\x00...'" (200 bytes of binary); what it is, now, and what
    to give instead."""
    path = tmp_path / "rec"
    path.write_bytes(head + bytes(range(256)))
    for src, name in ((path, str(path)), (path.read_bytes(), "trace"),
                      (gzip.compress(path.read_bytes()), "trace")):
        with pytest.raises(TraceFormatError, match=f"^{re.escape(name)}: {re.escape(says)}"):
            read_trace(src)
    # a task named like the start of a magic is still a line
    tr = read_trace(("BZh9-1 " + LINE[9:] + "\nPERF-1 " + LINE[9:] + "\n").encode())
    assert tr.kind.tolist() == [EV_KMALLOC, EV_KMALLOC]


def test_a_text_with_no_line_break_is_refused_at_the_longest_line(tmp_path, monkeypatch):
    """``numslab replay /dev/zero`` doubled its buffer until the memory ran out (a
    MemoryError traceback under a limit, the machine's memory without one)."""
    from numslab.lab import trace as T
    monkeypatch.setattr(T, "MAX_LINE", 1 << 16, raising=False)
    path = tmp_path / "zeros"
    path.write_bytes(bytes(1 << 17))
    for src, name in ((path, str(path)), (path.read_bytes(), "trace")):
        with pytest.raises(TraceFormatError, match=f"^{re.escape(name)}: a line of more than"):
            read_trace(src, chunk=4096)
    line = LINE.replace("f+0x1/0x2", "f" * 40_000) + "\n"     # longer than the chunk: read
    assert read_trace(line.encode(), chunk=4096).kind.tolist() == [EV_KMALLOC]


def test_a_closed_standard_input_is_refused(monkeypatch, capsys):
    """``numslab replay - <&-`` (sys.stdin None) ended in an AttributeError traceback, the
    trace's and the snapshot's ``-`` alike."""
    from numslab.tools.cli import main
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(TraceFormatError, match="^cannot read trace -: standard input is closed$"):
        numslab.replay("-", kernel="7.0")
    with pytest.raises(numslab.SlabError,
                       match=r"^snapshot -: cannot read it \(standard input is closed\)$"):
        numslab.replay(LINE.encode(), kernel="7.0", snapshot="-")
    assert main(["replay", "-", "--no-progress"]) == 2
    assert capsys.readouterr().err == \
        "numslab replay: cannot read trace -: standard input is closed\n"


@pytest.mark.parametrize("bad, field", [
    ("  bash-1 [001] ..... 10.000001: kfree: call_site=f ptr=zz00000000000001", "ptr="),
    ("  bash-1 [4294967296] ..... 10.000001: kfree: call_site=f ptr=0000000000000001",
     "'[cpu]' has more than 9 digits"),
    ("  bash-1 [1000000000] ..... 10.000001: kfree: call_site=f ptr=0000000000000001",
     "'[cpu]' has more than 9 digits"),     # (it fits an int32: "past an int32" it said)
    ("  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=-5 "
     "bytes_alloc=64 gfp_flags=GFP_KERNEL node=-1", "bytes_req="),
    ("  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
     "bytes_alloc=4294967360 gfp_flags=GFP_KERNEL node=-1", "bytes_alloc="),
    ("  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 bytes_req=64 "
     "bytes_alloc=64 gfp_flags=0x1000000cc0 node=-1", "gfp_flags="),
    ("  bash-1 [001] ..... 10.000001: kmem_cache_alloc: call_site=f ptr=1 name=x "
     "bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL node=99999999999999999999", "node="),
    ("  bash-1 [001] ..... 10.000001: kfree: call_site=f", "without its ptr="),
    ("  bash-1 [001] ..... 10.000001: kmem_cache_free: call_site=f ptr=1 name=",
     "without its name="),
    ("  bash-1 [001] ..... 10.000001: kmalloc: call_site=f ptr=1 gfp_flags=GFP_KERNEL",
     "without its bytes_alloc="),
    ("  bash-1 [001] ..... 10.000001: kmalloc: call_site=f+0x1/0x2 ptr=00000000deadbeef "
     "bytes_req=9000 bytes_alloc=8192 gfp_flags=GFP_KERNEL node=-1 accounted=false",
     "bytes_req= is larger than its bytes_alloc="),
])
def test_a_malformed_line_s_error_names_the_field_to_blame(bad, field):
    """The error said "a field's value does not parse" (or "without its ptr, name or
    bytes_alloc field") of every bad value, leaving the reader to find which: it names it."""
    with pytest.raises(TraceFormatError, match=rf"line 2: [^:]*{re.escape(field)}"):
        parse_bytes((LINE + "\n" + bad + "\n").encode())


def test_the_replay_s_errors_and_warnings_name_the_file_read(tmp_path):
    """A replay's own refusals of a trace read from a file named it "trace": the file's
    path now, as the parser's errors name it."""
    big = ("  bash-1 [001] ..... 10.000002: kmalloc: call_site=f+0x1/0x2 ptr=00000000deadbeee "
           "bytes_req=9000000 bytes_alloc=9000000 gfp_flags=GFP_KERNEL node=-1 accounted=false")
    path = tmp_path / "rec.txt"
    path.write_text(LINE + "\n" + big + "\n")
    with pytest.raises(TraceFormatError, match=rf"^{re.escape(str(path))}, line 2: a kmalloc"):
        numslab.replay(path, kernel="7.0")
    with pytest.raises(TraceFormatError, match=r"^trace, line 2: a kmalloc"):
        numslab.replay(path.read_bytes(), kernel="7.0")
    assert read_trace(path).source == str(path)
    back = tmp_path / "back.txt"
    back.write_text(LINE + "\n" + LINE.replace("10.000001", "9.000001").replace("ef ", "ee ")
                    + "\n")
    with pytest.warns(UserWarning, match=rf"^{re.escape(str(back))}, line 2: its timestamp"):
        numslab.replay(back, kernel="7.0")


def test_values_up_to_their_columns_are_read():
    text_ = ("  bash-1 [999999999] ..... 10.000001: kmalloc: call_site=f ptr=1 "
             "bytes_req=2147483647 bytes_alloc=2147483647 gfp_flags=0xffffffff "
             "node=2147483647\n")
    tr = parse_bytes(text_.encode())
    assert tr.cpu[0] == 999999999 and tr.bytes_alloc[0] == tr.bytes_req[0] == 2 ** 31 - 1
    assert tr.node[0] == 2 ** 31 - 1 and tr.gfp[0] == -1        # the 32 bits, in int32
    # a failed kmalloc of a size_t past int32 (kvmalloc's first try): a failed allocation
    failed = ("  bash-1 [000] ..... 10.000001: kmalloc: call_site=f ptr=0000000000000000 "
              "bytes_req=3221225472 bytes_alloc=4294967296 gfp_flags=GFP_KERNEL node=-1\n")
    tr = parse_bytes(failed.encode())
    assert tr.kind[0] == EV_KMALLOC and tr.row[0] == -3          # parse.ROW_FAILED


@pytest.mark.parametrize("how", ["gz", "xz"])
def test_a_compressed_trace_cut_short_or_corrupt_is_a_clear_error(tmp_path, how):
    # EOFError, zlib.error and LZMAError came through as tracebacks
    import gzip
    import lzma
    raw = text("git_tar").encode()
    packed = gzip.compress(raw) if how == "gz" else lzma.compress(raw)
    cut = tmp_path / f"cut.{how}"
    cut.write_bytes(packed[:len(packed) // 2])
    bad = tmp_path / f"bad.{how}"
    bad.write_bytes(packed[:200] + bytes(range(256)) * 8 + packed[2248:])
    for source in (cut, bad, cut.read_bytes()):
        with pytest.raises(TraceFormatError, match="cut short or corrupt"):
            read_trace(source)
    import numslab
    from numslab.lab.replay import load_snapshot
    with pytest.raises(numslab.SlabError, match="cut short or corrupt"):
        load_snapshot(cut)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TraceFormatError, match="cannot read trace"):
        read_trace(tmp_path / "nope.txt")


@pytest.mark.parametrize("source", [5, None, 1.5, ["a"]])
def test_a_source_of_no_readable_type_is_a_wrong_type_error(source):
    # Path(5) raised a plain TypeError
    import numslab
    with pytest.raises(numslab.WrongTypeError, match="not a path, bytes or a binary file"):
        read_trace(source)


def _same(a, b) -> None:
    """Two parses are identical, column by column."""
    for k in ("kind", "line", "cpu", "ts", "ptr", "name", "bytes_req", "bytes_alloc", "gfp",
              "node", "row", "pid", "sizes", "kmalloc"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert a.names == b.names and a.npid == b.npid


@pytest.mark.parametrize("chunk", [4096, 65536])
def test_small_chunks_through_the_threads_read_the_same(tmp_path, chunk):
    # many chunks: scanned by the worker threads, from a file's mapping or from a stream
    raw = text("git_tar").encode()
    ref = parse_bytes(raw)
    assert len(raw) > 8 * chunk
    (tmp_path / "t.txt").write_bytes(raw)
    (tmp_path / "t.gz").write_bytes(gzip.compress(raw))
    _same(read_trace(tmp_path / "t.txt", chunk=chunk), ref)
    _same(read_trace(tmp_path / "t.gz", chunk=chunk), ref)
    _same(read_trace(io.BytesIO(raw), chunk=chunk), ref)
    # a mapping's text and a stream's buffers take the same compiled kernels
    from numslab.lab import parse as P
    for kernel in (P.last_newline, P.intern_rows):
        assert len(kernel.signatures) == 1, (kernel, kernel.signatures)


@pytest.mark.parametrize("chunk", [0, -1, 4095, 1.5, True, "4096"])
def test_a_chunk_that_is_not_a_size_is_refused(tmp_path, chunk):
    """chunk=0 read a well-formed trace as no rows, and a negative one blamed its first
    line."""
    from numslab.errors import SlabError
    raw = text("git_tar").encode()[:20000]
    (tmp_path / "t.txt").write_bytes(raw)
    for src in (raw, tmp_path / "t.txt"):
        with pytest.raises(SlabError, match="chunk .* is not a number of bytes"):
            read_trace(src, chunk=chunk)


def test_a_line_longer_than_a_chunk_in_a_mapped_file(tmp_path):
    lines = text("net").split("\n")
    lines.insert(len(lines) // 2, "# " + "x" * 20000)
    raw = "\n".join(lines).encode()
    (tmp_path / "t.txt").write_bytes(raw)
    _same(read_trace(tmp_path / "t.txt", chunk=4096), parse_bytes(raw))


def test_a_malformed_line_in_a_later_chunk_is_named_by_its_line(tmp_path):
    lines = ["# header"] + [LINE] * 3000
    lines[2500] = "  bash-1 [001] ..... 10.000001: kmalloc: ptr=1 bytes_alloc=9x"
    raw = "\n".join(lines).encode()
    (tmp_path / "t.txt").write_bytes(raw)
    for src in (tmp_path / "t.txt", io.BytesIO(raw)):
        with pytest.raises(TraceFormatError, match=r"line 2501\b"):
            read_trace(src, chunk=4096)
    tr = read_trace(tmp_path / "t.txt", chunk=4096, skip_bad=True)
    assert tr.line[2499] == 2501 and tr.kind[2499] == EV_BAD
    assert (np.delete(tr.kind, 2499) == EV_KMALLOC).all() and tr.line[-1] == 3001


def test_crlf_lines_and_carriage_returns_inside_a_value():
    rows = [LINE,
            "  a-1 [000] ..... 10.000005: kmem_cache_alloc: call_site=g ptr=0x20 "
            "name=dentry bytes_req=192 bytes_alloc=192 gfp_flags=GFP_NOFS|__GFP_ZERO",
            "  a-1 [000] ..... 10.000006: kmem_cache_free: call_site=g ptr=0x20 name=dentry"]
    lf = parse_bytes("\n".join(rows * 50).encode())
    _same(parse_bytes("\r\n".join(rows * 50).encode()), lf)
    # a value ends at a carriage return, as at a space
    odd = [r.replace("GFP_NOFS|__GFP_ZERO", "GFP_NOFS\r|__GFP_ZERO").replace(
        "name=dentry", "name=dentry\rxyz") for r in rows]
    tr = parse_bytes("\n".join(odd).encode())
    assert tr.names == ["kmalloc-96", "dentry"] and tr.gfp[1] == F.GFP_NOFS
    assert tr.gfp[0] == F.GFP_KERNEL | F.__GFP_ZERO


def test_the_gfp_cache_gives_each_value_its_own_bits():
    vals = {"GFP_KERNEL": F.GFP_KERNEL, "GFP_KERNEL|__GFP_ZERO": F.GFP_KERNEL | F.__GFP_ZERO,
            "GFP_NOWAIT|__GFP_NOWARN": F.GFP_NOWAIT | F.__GFP_NOWARN,
            "__GFP_ZERO|GFP_KERNEL": F.GFP_KERNEL | F.__GFP_ZERO, "GFP_ATOMIC": F.GFP_ATOMIC,
            "GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_NOWARN":
                F.GFP_KERNEL | F.__GFP_ACCOUNT | F.__GFP_ZERO | F.__GFP_NOWARN}
    order = [list(vals)[i % len(vals)] for i in range(0, 7 * 300, 7)]
    lines = [LINE.replace("GFP_KERNEL|__GFP_ZERO", g) for g in order]
    tr = parse_bytes("\n".join(lines).encode())
    assert tr.gfp.tolist() == [vals[g] for g in order]


def test_a_kmalloc_of_any_size_goes_to_the_smallest_class_that_holds_it():
    sizes = [1, 7, 8, 9, 16, 17, 95, 96, 97, 129, 192, 193, 257, 1000, 4096, 4097, 8192, 8193]
    lines = [LINE.replace("bytes_req=72", f"bytes_req={n}").replace(
        "bytes_alloc=96", f"bytes_alloc={n if n <= 8192 else 12288}").replace(
        "deadbeef", f"{0x1000 + i:08x}") for i, n in enumerate(sizes)]
    tr = parse_bytes("\n".join(lines).encode())
    classes = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)
    for k, n in enumerate(sizes):
        if n > 8192:
            assert tr.row[k] < 0
            continue
        c = next(s for s in classes if s >= n)
        assert tr.names[tr.row[k]] == (f"kmalloc-{c // 1024}k" if c >= 1024 else f"kmalloc-{c}")


def _columns(tr) -> dict:
    return {k: getattr(tr, k) for k in ("kind", "line", "cpu", "ts", "ptr", "name", "bytes_req",
                                        "bytes_alloc", "gfp", "node", "row", "pid")}


def test_tracefs_columns_read_at_fixed_places_give_what_the_token_walk_gives():
    # the tracefs layout is read at fixed columns; one more leading space puts every line
    # off those columns, so the general token walk reads it: the same fields must come out
    body = text("git_tar").encode()
    fixed = read_trace(body)
    walked = read_trace(b"\n".join(b" " + ln if ln.strip() and not ln.lstrip().startswith(b"#")
                                   else ln for ln in body.split(b"\n")))
    assert len(fixed) > 3000
    for k, a in _columns(fixed).items():
        np.testing.assert_array_equal(a, _columns(walked)[k], err_msg=k)
    assert fixed.names == walked.names


@pytest.mark.parametrize("task, cpu", [
    ("          a [7] b-1234", 7),      # a token of the task's that looks like a CPU: the walk
    ("  bash[x]-99          ", 3),      # a '[' in the task that is no CPU token
    ("  kworker/u8:2-1234   ", 3),      # colons in the task
])
def test_a_task_field_with_brackets_or_colons_is_read_as_the_walk_reads_it(task, cpu):
    line = (f"{task:<23}  [003] d..1.  2626.406108: kmalloc: call_site=f+0x1/0x9 ptr=0000000012345678 "
            f"bytes_req=72 bytes_alloc=96 gfp_flags=GFP_KERNEL node=-1 accounted=false\n")
    tr = parse_bytes(line.encode())
    assert (int(tr.cpu[0]), int(tr.kind[0]), int(tr.ptr[0]), float(tr.ts[0])) == \
        (cpu, EV_KMALLOC, 0x12345678, 2626.406108)
    # the same line with every column shifted by one (walked) reads the same
    tr2 = parse_bytes(b" " + line.encode())
    for k, a in _columns(tr).items():
        np.testing.assert_array_equal(a, _columns(tr2)[k], err_msg=k)


@pytest.mark.parametrize("head", [
    "            bash-11801   [000] .....  2626.406108: ",     # tracefs: fixed columns
    "            bash-11801   [000] ..... 123456.406108: ",    # seconds wider than 5 digits
    "            bash-11801   [000] .....  2626.4061089: ",    # more than 6 decimals
    "            bash-11801   [000]  2626.406108: ",           # no irq-info flags
    "            bash-11801   [000] .....  2626.406108:  ",    # two spaces before the event
])
def test_each_header_shape_gives_the_naive_fields(head):
    line = head + ("kmem_cache_alloc: call_site=f+0x1/0x9 ptr=00000000fff502a2 name=filp "
                   "bytes_req=256 bytes_alloc=256 gfp_flags=GFP_KERNEL node=-1 accounted=true")
    tr = parse_bytes((line + "\n").encode())
    want = _naive(line)[0]
    assert int(tr.kind[0]) == EV_CACHE_ALLOC and int(tr.cpu[0]) == want["cpu"]
    assert float(tr.ts[0]) == want["ts"] and int(tr.ptr[0]) == int(want["ptr"], 16)
    assert tr.names == ["filp"] and int(tr.bytes_alloc[0]) == 256


def test_cache_names_that_are_not_utf8_stay_apart():
    # both read "dentry\ufffd" and were merged into one cache
    line = ("  bash-1 [000] ..... 10.000001: kmem_cache_alloc: call_site=f+0x1/0x9 "
            "ptr=00000000000000{p} name=dentry{b} bytes_req=192 bytes_alloc=192 "
            "gfp_flags=GFP_KERNEL node=-1 accounted=false\n")
    raw = b"".join(line.format(p=p, b="@").encode().replace(b"@", b)
                   for p, b in (("a0", b"\xff"), ("b0", b"\xfe")))
    tr = parse_bytes(raw)
    assert sorted(tr.names) == ["dentry\\xfe", "dentry\\xff"]
    assert len(set(tr.name[tr.kind == EV_CACHE_ALLOC].tolist())) == 2


def test_a_timestamp_of_more_seconds_than_an_int64_holds_is_a_bad_line():
    # 23 digits of seconds wrapped round to a small number
    line = LINE.replace("10.000001", "{}") + "\n"
    assert read_trace(line.format("123456789012345678.000001").encode()).ts[0] == \
        pytest.approx(123456789012345678.000001)
    with pytest.raises(TraceFormatError, match="line 1: no .seconds.micros:. "):
        read_trace(line.format("12345678901234567890123.000001").encode())
    # and fraction digits past a double's precision are dropped (10.99...9 read 10.000186)
    for frac in ("9" * 22, "9" * 35, "5" + "0" * 30):
        want = float(f"10.{frac}")
        assert read_trace(line.format(f"10.{frac}").encode()).ts[0] == pytest.approx(want)


@pytest.mark.parametrize("name", ["kmem_net.txt.xz", "kmem_snapshot_git_tar.json.xz"])
def test_a_compressed_file_is_closed_with_its_reader(name, tmp_path):
    """``lzma.LZMAFile(f)``/``gzip.GzipFile(fileobj=f)`` do not close ``f``: every replay of
    an .xz or .gz path left its file open (a ResourceWarning each)."""
    import gc
    import gzip
    import warnings
    from numslab.lab import trace as T
    paths = [DATA / name, tmp_path / "t.gz"]
    paths[1].write_bytes(gzip.compress(b"# nothing\n"))
    for path in paths:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            T.load_bytes(path)
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], path


@pytest.mark.parametrize("fast", [True, False])
def test_the_slab_allocator_s_own_kmallocs_are_their_own_kind(fast, monkeypatch):
    """The memcg vectors ``alloc_slab_obj_exts`` makes for an accounted cache's new slab and
    the sheaves of ``alloc_empty_sheaf`` were replayed as user objects of their kmalloc
    caches (on a trace of this machine, 333 of kmalloc-512's 368 objects), beside the
    sheaves numslab makes itself. They are ``EV_OWN`` now, the name read whole, on the
    fast path and the walk alike."""
    from numslab.lab import trace as T
    monkeypatch.setattr(T._Chunk, "fast", fast)     # (False: every line by the walk)
    # (and a 7.x cache's barns, kmalloc_node'd in init_kmem_cache_nodes, and every cache's
    # s->random_seq, kcalloc'ed in cache_random_seq_create, which numslab makes itself too:
    # a trace taken while a cache was created holds them)
    sites = ["alloc_slab_obj_exts+0x58/0x110", "alloc_empty_sheaf+0x2a/0x80",
             "__alloc_empty_sheaf+0x1/0x2", "alloc_slab_obj_exts",
             "init_kmem_cache_nodes+0x9c/0x1a0", "cache_random_seq_create+0x3f/0x120",
             "cache_random_seq_create", "alloc_slab_obj_exts_x+0x1",
             "alloc_empty_sheafs+0x1", "init_kmem_cache_nodes_x+0x1",
             "cache_random_seq_create_x+0x1", "cache_random_seq_creat+0x1", "f+0x1/0x2"]
    lines = [LINE.replace("call_site=f+0x1/0x2", f"call_site={s}") for s in sites]
    lines.append(LINE.replace("kmalloc:", "kmem_cache_alloc:").replace(
        "call_site=f+0x1/0x2", "call_site=alloc_empty_sheaf+0x2a/0x80")
        .replace(" bytes_req", " name=dentry bytes_req"))
    tr = parse_bytes(("\n".join(lines) + "\n").encode())
    assert tr.kind.tolist() == [EV_OWN] * 7 + [EV_KMALLOC] * 6 + [EV_CACHE_ALLOC]


def test_a_replay_skips_the_slab_allocator_s_own_kmallocs():
    own = LINE.replace("call_site=f+0x1/0x2", "call_site=alloc_slab_obj_exts+0x58/0x110")
    free = ("  bash-1 [001] ..... 10.000002: kfree: call_site=__free_slab+0x87/0xf0 "
            "ptr=00000000deadbeef")
    r = numslab.replay(f"{own}\n{LINE.replace('deadbeef', 'cafef00d')}\n{free}\n".encode())
    assert r.skipped["kernel_own"] == 1 and r.skipped["untraced_alloc"] == 1
    assert r.replayed == 1 and int(r.series.live_objects[-1].sum()) == 1


#: kmalloc events as a kernel with slab_debug (red zones, user tracking) traces them: the
#: kernel picks the cache by ``bytes_req`` (``kmalloc_slab``: ``kmalloc_size_index`` up to 192
#: bytes, ``fls`` above) and prints its ``s->size`` as ``bytes_alloc``, which the debug
#: metadata makes larger than the class (an 8-byte kmalloc's cache of 104 bytes, a 5,000-byte
#: kmalloc's kmalloc-8k of 8,392); a normal kernel prints the class itself
KMALLOC_FORMS = [(8, 8, 104), (72, 96, 232), (100, 128, 264), (150, 192, 328),
                 (5000, 8192, 8392)]


@pytest.mark.parametrize("debug", [False, True])
def test_the_kmalloc_class_is_the_kernel_s_pick_from_bytes_req(debug):
    lines = [LINE.replace("bytes_req=72", f"bytes_req={req}").replace(
        "bytes_alloc=96", f"bytes_alloc={dbg if debug else cls}").replace(
        "deadbeef", f"{0x1000 + i:08x}") for i, (req, cls, dbg) in enumerate(KMALLOC_FORMS)]
    text = "\n".join(lines) + "\n"
    tr = parse_bytes(text.encode())
    want = [f"kmalloc-{c // 1024}k" if c >= 1024 else f"kmalloc-{c}" for _, c, _ in
            KMALLOC_FORMS]
    assert [tr.names[r] if r >= 0 else r for r in tr.row.tolist()] == want
    r = numslab.replay(text.encode(), kernel="7.0", cpus=2)
    live = {nm: int(v) for nm, v in zip(r.names, r.series.live_objects[-1]) if v}
    assert live == dict.fromkeys(want, 1) and int(r.series.large_bytes[-1]) == 0
    from lab_oracle import Oracle          # the test's own reading: the same classes
    o = Oracle()
    for ln in lines:
        o.line(ln)
    assert dict(o.live) == dict.fromkeys(want, 1)



def test_standard_input_and_a_fifo_are_parsed_as_they_come(tmp_path, monkeypatch):
    """``numslab replay -`` and a FIFO read the whole stream into memory before parsing (a
    trace piped in held its text, then a copy); now a chunk at a time.

    The writer writes the second half of the stream only once the reader has parsed a chunk
    of the first (or 60 s have passed): a reader that takes the whole stream first waits."""
    import threading
    from numslab.lab import trace as T
    data = text("git_tar").encode() * 40          # ~14 MB: more than a pipe and chunks hold
    ref = parse_bytes(data)
    parsed = threading.Event()
    take = T._Reader.take

    def spy(self, ch, where):
        take(self, ch, where)
        parsed.set()
    monkeypatch.setattr(T._Reader, "take", spy)
    for kind in ("stdin", "fifo", "stdin-xz", "file object"):
        parsed.clear()
        half = len(data) // 2                   # (xz: two streams, as xz -c a b > t.xz)
        parts = (data[:half], data[half:])
        if kind == "stdin-xz":
            parts = tuple(map(lzma.compress, parts))
        waited = []
        if kind == "fifo":
            src = fifo = tmp_path / "fifo"
            os.mkfifo(fifo)

            def out(fifo=fifo):
                return open(fifo, "wb")
        else:
            r, w = os.pipe()
            src = "-" if kind != "file object" else os.fdopen(r, "rb")
            if src == "-":
                monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(os.fdopen(r, "rb")))

            def out(w=w):
                return os.fdopen(w, "wb")

        def writer(parts=parts, out=out, waited=waited):
            with out() as f:
                f.write(parts[0])
                f.flush()
                waited.append(not parsed.wait(60))
                f.write(parts[1])
        t = threading.Thread(target=writer)
        t.start()
        tr = read_trace(src, chunk=1 << 20)
        t.join()
        assert waited == [False], f"{kind}: the reader took the whole stream before parsing"
        assert np.array_equal(tr.ptr, ref.ptr) and tr.names == ref.names
        if kind == "fifo":
            fifo.unlink()
        elif kind == "stdin":
            assert tr.source == "standard input"
            sys.stdin.close()
        else:
            (sys.stdin if src == "-" else src).close()


@pytest.mark.parametrize("blob, line, what", [
    (b"SQLite format 3\x00\x00\x00\x01\x02", 1, "NUL bytes"),
    (bytes(np.random.default_rng(5).integers(0, 256, 4000, np.uint8)), 1, "control bytes"),
    (b"\xff\xfe\xa0\xc3\x28\xa0\xa1\xe2\x28\xa1 \xf0\x28\x8c\xbc\n", 1,
     "bytes that are not UTF-8"),
    ((LINE + "\n") * 2 + "\0" * 5000, 3, "NUL bytes")])     # a file cut short, zero-filled
def test_a_binary_file_of_no_known_format_is_named_binary_without_its_bytes(
        tmp_path, blob, line, what):
    """A binary file no magic names (a database, random bytes, a log zero-filled after a
    crash) was refused with ~200 bytes of it in the message ('SQLite format 3\\x00...')."""
    path = tmp_path / "blob"
    path.write_bytes(blob.encode() if isinstance(blob, str) else blob)
    want = (rf"^{re.escape(str(path))}, line {line}: binary data, not trace text \({what}\); "
            rf"a trace is the kmem events' text$")
    with pytest.raises(TraceFormatError, match=want) as e:
        read_trace(path)
    assert "\\x" not in str(e.value) and "SQLite" not in str(e.value)
    r = subprocess.run([sys.executable, "-m", "numslab", "replay", "-", "--no-progress"],
                       input=path.read_bytes(), capture_output=True, timeout=300)
    assert r.returncode == 2 and r.stderr.decode() == (
        f"numslab replay: standard input, line {line}: binary data, not trace text ({what}); "
        f"a trace is the kmem events' text\n")
    with pytest.raises(TraceFormatError, match=r"line 1: no '\[cpu\]' field: 'caf. au lait' "
                                               r"\(skip_bad=True, --skip-bad: count malformed "
                                               r"lines and go on\)$"):
        read_trace("café au lait\n".encode("latin-1"))       # (a Latin-1 line is shown)


def test_a_byte_order_mark_before_the_text_is_passed_over(tmp_path):
    """A trace saved by an editor that writes a UTF-8 byte order mark was refused at line 1:
    "no '[cpu]' field: '\\ufeff# tracer: nop'"; plain, gz, xz, bytes, standard input."""
    raw = text("git_tar").encode()
    ref = parse_bytes(raw)
    marked = b"\xef\xbb\xbf" + raw
    (tmp_path / "t.txt").write_bytes(marked)
    (tmp_path / "t.gz").write_bytes(gzip.compress(marked))
    (tmp_path / "t.xz").write_bytes(lzma.compress(marked))
    srcs = [tmp_path / "t.txt", tmp_path / "t.gz", tmp_path / "t.xz", marked,
            gzip.compress(marked), io.BytesIO(marked), io.BytesIO(lzma.compress(marked))]
    for src in srcs:
        for chunk in (4096, 1 << 22):             # (mapped in chunks, or read whole)
            if isinstance(src, io.BytesIO):
                src.seek(0)
            tr = read_trace(src, chunk=chunk)
            assert np.array_equal(tr.ptr, ref.ptr) and np.array_equal(tr.line, ref.line)
            assert tr.names == ref.names
    r = subprocess.run([sys.executable, "-m", "numslab", "replay", "-", "--no-progress",
                        "--json"], input=marked, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()


def test_a_read_error_part_way_names_the_trace_not_the_output(monkeypatch, capsys):
    """A read that failed part-way (EIO on standard input or a file object) reached the
    ``numslab`` command's handler of output errors: "numslab: error: cannot write the
    output: Input/output error", status 1."""
    from numslab.tools.cli import main

    class Failing(io.RawIOBase):
        name = "disk.txt"

        def __init__(self):
            self.left = (LINE + "\n").encode() * 3

        def readable(self):
            return True

        def readinto(self, b):
            if not self.left:
                raise OSError(5, "Input/output error")
            n = min(len(b), len(self.left))
            b[:n] = self.left[:n]
            self.left = self.left[n:]
            return n
    with pytest.raises(TraceFormatError, match="^cannot read trace disk.txt: Input/output "
                                               "error$"):
        read_trace(Failing())
    stdin = io.TextIOWrapper(io.BufferedReader(Failing()))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["replay", "-", "--no-progress"]) == 2
    assert capsys.readouterr().err == ("numslab replay: cannot read trace standard input: "
                                       "Input/output error\n")


def test_a_closed_file_object_is_refused_naming_the_trace():
    """A file object closed before or while the trace is read raised its read's bare
    ``ValueError`` ("read of closed file", "I/O operation on closed file.")."""
    class Closing(io.RawIOBase):
        name = "closing.txt"

        def __init__(self):
            self.left = (LINE + "\n").encode() * 3000

        def readable(self):
            return True

        def readinto(self, b):
            if len(self.left) < 100000:     # part-way: another thread closes it
                self.close()
                raise ValueError("I/O operation on closed file.")
            n = min(len(b), len(self.left))
            b[:n] = self.left[:n]
            self.left = self.left[n:]
            return n
    done = io.BytesIO((LINE + "\n").encode())
    done.close()
    with pytest.raises(TraceFormatError, match="^cannot read trace trace: the file object is "
                                               "closed$"):
        read_trace(done)
    with pytest.raises(TraceFormatError, match="^cannot read trace closing.txt: the file "
                                               "object is closed$"):
        read_trace(Closing(), chunk=4096)
