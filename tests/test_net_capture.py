"""Tests of numslab.net.capture: pcap/pcapng reading against scapy, dpkt and by-hand files."""
from __future__ import annotations

import re
import warnings
import struct
import subprocess
from decimal import Decimal

import dpkt
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw
from scapy.utils import PcapNgWriter, wrpcap

from numslab.net.capture import (CaptureError, CaptureTruncatedWarning, Packets, read_capture,
                                 write_pcap)
from conftest import require_tool

T0 = 1_700_000_000


# --------------------------------------------------------------------------- builders
def scapy_packets(n: int = 12, seed: int = 0) -> list:
    """Varied Ethernet frames with distinct microsecond timestamps."""
    rng = np.random.default_rng(seed)
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookups
    pkts = []
    for i in range(n):
        payload = rng.integers(0, 256, int(rng.integers(0, 1400))).astype(np.uint8).tobytes()
        if i % 3 == 0:
            p = eth.copy() / IPv6(src="fd00::1", dst="2001:db8::2") / UDP(sport=1000 + i) / payload
        else:
            p = eth.copy() / IP(src="10.0.0.1", dst="198.18.0.1") / TCP(sport=2000 + i) / payload
        p.time = Decimal(T0 + i) + Decimal(int(rng.integers(0, 10**6))) / 10**6
        pkts.append(p)
    return pkts


def pcap_bytes(records: list[tuple[int, int, bytes, int]], *, be: bool = False,
               nano: bool = False, snaplen: int = 65535, linktype: int = 1) -> bytes:
    """A classic pcap file from ``(sec, frac, data, wirelen)`` records."""
    o = ">" if be else "<"
    out = struct.pack(o + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0,
                      snaplen, linktype)
    for sec, frac, data, wire in records:
        out += struct.pack(o + "IIII", sec, frac, len(data), wire) + data
    return out


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def block(btype: int, body: bytes, be: bool = False) -> bytes:
    o = ">" if be else "<"
    body = pad4(body)
    n = 12 + len(body)
    return struct.pack(o + "II", btype, n) + body + struct.pack(o + "I", n)


def shb(be: bool = False, major: int = 1) -> bytes:
    o = ">" if be else "<"
    return block(0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, major, 0, -1), be)


def opt(code: int, value: bytes, be: bool = False) -> bytes:
    return struct.pack((">" if be else "<") + "HH", code, len(value)) + pad4(value)


def idb(linktype: int = 1, snaplen: int = 0, opts: bytes = b"", be: bool = False) -> bytes:
    o = ">" if be else "<"
    if opts:
        opts += opt(0, b"", be)
    return block(1, struct.pack(o + "HHI", linktype, 0, snaplen) + opts, be)


def epb(iface: int, units: int, data: bytes, wire: int | None = None, be: bool = False) -> bytes:
    o = ">" if be else "<"
    wire = len(data) if wire is None else wire
    return block(6, struct.pack(o + "IIIII", iface, units >> 32, units & 0xFFFFFFFF,
                                len(data), wire) + data, be)


def pb(iface: int, units: int, data: bytes, be: bool = False) -> bytes:
    o = ">" if be else "<"
    return block(2, struct.pack(o + "HHIIII", iface, 0, units >> 32, units & 0xFFFFFFFF,
                                len(data), len(data)) + data, be)


def spb(data: bytes, be: bool = False) -> bytes:
    return block(3, struct.pack((">" if be else "<") + "I", len(data)) + data, be)


def frames(n: int, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, int(rng.integers(14, 200))).astype(np.uint8).tobytes()
            for _ in range(n)]


def patch(content: bytes, pos: int, value: int) -> bytes:
    """``content`` with the little-endian 32-bit word at ``pos`` replaced by ``value``."""
    return content[:pos] + struct.pack("<I", value) + content[pos + 4:]


def as_bytes(p: Packets) -> list[bytes]:
    return [bytes(p.packet(i)) for i in range(len(p.offset))]


def write(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------- pcap
def test_scapy_pcap_matches_dpkt(tmp_path):
    pkts = scapy_packets()
    path = tmp_path / "a.pcap"
    wrpcap(str(path), pkts)
    p = read_capture(path)
    assert p.linktype == 1 and len(p.offset) == len(pkts)
    assert as_bytes(p) == [bytes(x) for x in pkts]
    assert p.caplen.tolist() == p.wirelen.tolist() == [len(x) for x in pkts]
    assert int(p.wirelen.sum()) == sum(len(x) for x in pkts)
    assert p.ts_ns.tolist() == [int(x.time * 10**9) for x in pkts]
    for dtype in (p.offset, p.caplen, p.wirelen, p.ts_ns):
        assert dtype.dtype == np.int64
    assert p.data.dtype == np.uint8
    with open(path, "rb") as f:
        ref = list(dpkt.pcap.Reader(f))
    assert [bytes(b) for _, b in ref] == as_bytes(p)
    assert [round(ts * 1e6) * 1000 for ts, _ in ref] == p.ts_ns.tolist()
    q = read_capture(path, mmap=False)
    assert all(np.array_equal(a, b) for a, b in zip(p[1:5], q[1:5])) and q.linktype == 1


@pytest.mark.parametrize("suffix", ["pcap", "pcapng"])
def test_a_mapped_file_and_one_read_into_memory_take_one_compiled_scan(tmp_path, suffix):
    """The scans see every file as read-only bytes: a mapping is, a file read is not, and each
    kind compiled a scan of its own (about 2 s of a first read)."""
    from numslab.net import capture
    pkts = scapy_packets(5, seed=3)
    path = tmp_path / f"a.{suffix}"
    if suffix == "pcap":
        wrpcap(str(path), pkts)
    else:
        with PcapNgWriter(str(path)) as w:
            for x in pkts:
                w.write(x)
    p, q = read_capture(path), read_capture(path, mmap=False)
    assert as_bytes(p) == as_bytes(q) == [bytes(x) for x in pkts]
    assert q.data.flags.writeable                   # the table's bytes are as they were read
    scan = capture._scan_pcap if suffix == "pcap" else capture._scan_pcapng
    assert len(scan.signatures) == 1, scan.signatures


def test_snaplen_truncation(tmp_path):
    pkts = scapy_packets(8, seed=3)
    snap = 96
    cut = []
    for x in pkts:
        r = Raw(bytes(x)[:snap])
        r.time, r.wirelen = x.time, len(x)
        cut.append(r)
    path = tmp_path / "snap.pcap"
    wrpcap(str(path), cut, linktype=1, snaplen=snap)
    p = read_capture(path)
    assert p.caplen.tolist() == [min(len(x), snap) for x in pkts]
    assert p.wirelen.tolist() == [len(x) for x in pkts]
    assert (p.caplen <= p.wirelen).all() and (p.caplen < p.wirelen).any()
    assert as_bytes(p) == [bytes(x)[:snap] for x in pkts]
    with open(path, "rb") as f:
        r = dpkt.pcap.Reader(f)
        assert r.snaplen == snap
        assert [bytes(b) for _, b in r] == as_bytes(p)


@pytest.mark.parametrize("be", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_by_hand_pcap_byte_orders_and_resolutions(tmp_path, be, nano):
    data = frames(9)
    frac = [0, 1, 999_999, 123_456, 5, 500_000, 42, 7, 999]
    if nano:
        frac = [f * 1000 + i for i, f in enumerate(frac)]  # use all nine digits
    recs = [(T0 + i, frac[i], d, len(d) + i) for i, d in enumerate(data)]
    path = write(tmp_path, "h.pcap", pcap_bytes(recs, be=be, nano=nano, linktype=113))
    p = read_capture(path)
    assert p.linktype == 113
    assert as_bytes(p) == data
    assert p.wirelen.tolist() == [len(d) + i for i, d in enumerate(data)]
    unit = 1 if nano else 1000
    assert p.ts_ns.tolist() == [(T0 + i) * 10**9 + frac[i] * unit for i in range(9)]
    with open(path, "rb") as f:
        ref = list(dpkt.pcap.Reader(f))
    assert [bytes(b) for _, b in ref] == data
    assert [int(Decimal(ts) * 10**9) if nano else round(ts * 1e6) * 1000 for ts, _ in ref] \
        == p.ts_ns.tolist()


def test_kuznetzov_pcap(tmp_path):
    data = frames(3)
    out = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    for i, d in enumerate(data):
        out += struct.pack("<IIII", T0, i, len(d), len(d)) + b"\x01" * 8 + d
    p = read_capture(write(tmp_path, "k.pcap", out))
    assert as_bytes(p) == data and p.ts_ns.tolist() == [T0 * 10**9 + i * 1000 for i in range(3)]


def test_empty_capture_and_write_round_trip(tmp_path):
    path = write(tmp_path, "e.pcap", pcap_bytes([]))
    p = read_capture(path)
    assert len(p.offset) == 0 and p.linktype == 1
    write_pcap(tmp_path / "e2.pcap", p)
    assert len(read_capture(tmp_path / "e2.pcap").offset) == 0


def test_a_capture_from_a_named_pipe_is_read_whole(tmp_path):
    # a pipe's size is 0: "empty capture file" with 500 packets in it (--pcap <(cat x))
    import os
    import threading
    pkts = scapy_packets(20, seed=3)
    wrpcap(str(tmp_path / "s.pcap"), pkts)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes((tmp_path / "s.pcap")
                                                              .read_bytes()))
    writer.start()
    p = read_capture(fifo)
    writer.join()
    assert as_bytes(p) == as_bytes(read_capture(tmp_path / "s.pcap")) and len(p.offset) == 20


@pytest.mark.parametrize("nano", [False, True])
def test_write_pcap_round_trip(tmp_path, nano):
    pkts = scapy_packets(20, seed=5)
    wrpcap(str(tmp_path / "s.pcap"), pkts, nano=True)
    src = read_capture(tmp_path / "s.pcap")
    write_pcap(tmp_path / "w.pcap", src, nanosecond=nano)
    back = read_capture(tmp_path / "w.pcap")
    assert as_bytes(back) == as_bytes(src)
    assert np.array_equal(back.wirelen, src.wirelen)
    assert np.array_equal(back.ts_ns, src.ts_ns if nano else src.ts_ns // 1000 * 1000)
    with open(tmp_path / "w.pcap", "rb") as f:
        assert [bytes(b) for _, b in dpkt.pcap.Reader(f)] == as_bytes(src)


def test_write_pcap_rejects_bad_tables(tmp_path):
    good = Packets(np.zeros(10, np.uint8), np.array([0]), np.array([10]), np.array([10]),
                   np.array([T0 * 10**9]), 1)
    for bad in (good._replace(caplen=np.array([11])),
                good._replace(ts_ns=np.array([-1])),
                good._replace(offset=np.array([0, 1]))):
        with pytest.raises(ValueError):
            write_pcap(tmp_path / "x.pcap", bad)
    with pytest.raises(ValueError):
        write_pcap(tmp_path / "x.pcap", good, snaplen=5)


# --------------------------------------------------------------------------- pcapng
def test_scapy_pcapng_matches_dpkt(tmp_path):
    pkts = scapy_packets(15, seed=7)
    path = tmp_path / "a.pcapng"
    with PcapNgWriter(str(path)) as w:
        for x in pkts:
            w.write(x)
    p = read_capture(path)
    assert p.linktype == 1
    assert as_bytes(p) == [bytes(x) for x in pkts]
    assert int(p.wirelen.sum()) == sum(len(x) for x in pkts)
    assert p.ts_ns.tolist() == [int(float(x.time) * 10**6) * 1000 for x in pkts]
    with open(path, "rb") as f:
        ref = list(dpkt.pcapng.Reader(f))
    assert [bytes(b) for _, b in ref] == as_bytes(p)
    assert [round(ts * 1e6) * 1000 for ts, _ in ref] == p.ts_ns.tolist()


def test_scapy_pcapng_two_interfaces(tmp_path):
    pkts = scapy_packets(6, seed=8)
    for i, x in enumerate(pkts):
        x.sniffed_on = f"eth{i % 2}"
    path = tmp_path / "two.pcapng"
    with PcapNgWriter(str(path)) as w:
        for x in pkts:
            w.write(x)
    p = read_capture(path)
    assert as_bytes(p) == [bytes(x) for x in pkts] and p.linktype == 1


@pytest.mark.parametrize("be", [False, True])
def test_by_hand_pcapng(tmp_path, be):
    d = frames(8, seed=be)
    b = 7  # units of the first interface: nanoseconds
    q8 = ">q" if be else "<q"
    content = (
        shb(be)
        + idb(1, 0, opt(2, b"eth0", be) + opt(9, bytes([9]), be), be)
        + idb(1, 256, opt(9, bytes([3]), be) + opt(14, struct.pack(q8, 100), be), be)  # ms, +100 s
        + idb(1, 0, opt(9, bytes([0x80 | 20]), be), be)  # 2**-20 s
        + block(0x00000BAD, b"custom", be) + block(4, b"\0" * 8, be)  # custom block, NRB
        + epb(0, T0 * 10**9 + 123_456_789, d[0], be=be)
        + epb(1, T0 * 1000 + 5, d[1], wire=len(d[1]) + 10, be=be)
        + epb(2, (T0 << 20) + 3, d[2], be=be)
        + pb(0, T0 * 10**9 + b, d[3], be=be)
        + spb(d[4], be)
        + block(0x12345678, b"unknown block type", be) + block(5, b"\0" * 20, be)
        # second section in the other byte order: interfaces restart at 0
        + shb(not be) + idb(1, 0, opt(9, bytes([6]), not be), not be)
        + epb(0, T0 * 10**6 + 999_999, d[5], be=not be)
        + epb(0, T0 * 10**6, d[6], be=not be)
        + spb(d[7], not be)
    )
    p = read_capture(write(tmp_path, "h.pcapng", content))
    assert as_bytes(p) == d and p.linktype == 1
    assert p.wirelen.tolist() == [len(x) + 10 * (i == 1) for i, x in enumerate(d)]
    ns = 10**9
    assert p.ts_ns.tolist() == [
        T0 * ns + 123_456_789, (T0 + 100) * ns + 5_000_000, T0 * ns + (3 * ns >> 20),
        T0 * ns + b, 0, T0 * ns + 999_999_000, T0 * ns, 0]


def test_pcapng_tsresol_matches_dpkt(tmp_path):
    d = frames(4, seed=9)
    for resol, unit in ((bytes([9]), 1.0), (bytes([0x80 | 10]), 2**-10), (bytes([2]), 0.01)):
        content = shb() + idb(1, 0, opt(9, resol)) + b"".join(
            epb(0, int(T0 / unit) + 37 * i, x) for i, x in enumerate(d))
        p = read_capture(write(tmp_path, "r.pcapng", content))
        with open(tmp_path / "r.pcapng", "rb") as f:
            ref = list(dpkt.pcapng.Reader(f))
        assert [bytes(x) for _, x in ref] == as_bytes(p) == d
        assert np.allclose([ts for ts, _ in ref], p.ts_ns / 1e9, rtol=0, atol=1e-6)


def test_pcapng_spb_truncated_by_snaplen(tmp_path):
    d = bytes(range(100))
    content = shb() + idb(1, 40) + block(3, struct.pack("<I", 100) + d[:40])
    p = read_capture(write(tmp_path, "s.pcapng", content))
    assert p.caplen.tolist() == [40] and p.wirelen.tolist() == [100]
    assert bytes(p.packet(0)) == d[:40]


def test_pcapng_linktype_conflict(tmp_path):
    d = frames(2)
    both = shb() + idb(1) + idb(113) + epb(0, 1, d[0]) + epb(1, 2, d[1])
    with pytest.raises(CaptureError, match=r"different linktypes \[1, 113\]"):
        read_capture(write(tmp_path, "c.pcapng", both))
    unused = shb() + idb(1) + idb(113) + epb(0, 1, d[0]) + epb(0, 2, d[1])
    assert read_capture(write(tmp_path, "u.pcapng", unused)).linktype == 1
    assert read_capture(write(tmp_path, "n.pcapng", shb() + idb(113))).linktype == 113
    assert read_capture(write(tmp_path, "z.pcapng", shb())).linktype == -1


# --------------------------------------------------------------------------- errors
def good_pcap() -> tuple[bytes, list[int]]:
    data = frames(4, seed=11)
    content = pcap_bytes([(T0, i, x, len(x)) for i, x in enumerate(data)])
    ends = list(np.cumsum([24] + [16 + len(x) for x in data]))
    return content, ends


def good_pcapng() -> tuple[bytes, list[int]]:
    data = frames(4, seed=12)
    head = shb() + idb(1, 0, opt(9, bytes([9])))
    blocks = [epb(0, T0 * 10**9 + i, x) for i, x in enumerate(data)]
    ends = list(np.cumsum([len(head)] + [len(b) for b in blocks]))
    return head + b"".join(blocks), ends


@pytest.mark.parametrize("make", [good_pcap, good_pcapng])
def test_every_truncation_raises_or_stops_at_a_record(tmp_path, make):
    content, ends = make()
    valid = {e: i for i, e in enumerate(ends)}
    if make is good_pcapng:
        valid[28] = 0  # a section header alone is a valid empty capture
    before = sorted(ends)
    for cut in range(1, len(content)):
        path = write(tmp_path, "t.cap", content[:cut])
        if cut in valid:
            assert len(read_capture(path).offset) == valid[cut]
            continue
        whole = [e for e in before if e <= cut]       # the records that ended before the cut
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                p = read_capture(path)
            except CaptureError as e:                 # cut inside a file or section header
                assert re.search(r"at byte \d+", str(e)) and len(whole) <= 1
                continue
        assert [w.category for w in seen] == [CaptureTruncatedWarning]
        assert re.search(r"cut at byte \d+", str(seen[0].message))
        # read up to the cut, as tcpdump (a cut first section header: no packet yet)
        assert len(p.offset) == (valid.get(whole[-1], 0) if whole else 0)


def test_truncation_messages(tmp_path):
    content, ends = good_pcap()
    with pytest.warns(CaptureTruncatedWarning, match=f"truncated record header at byte {ends[1]}"):
        assert len(read_capture(write(tmp_path, "a", content[:ends[1] + 10])).offset) == 1
    with pytest.warns(CaptureTruncatedWarning, match=f"truncated packet data at byte {ends[1]}"):
        assert len(read_capture(write(tmp_path, "b", content[:ends[1] + 20])).offset) == 1
    with pytest.raises(CaptureError, match="truncated pcap file header at byte 0"):
        read_capture(write(tmp_path, "c", content[:10]))
    ng, ends = good_pcapng()
    with pytest.warns(CaptureTruncatedWarning, match=f"truncated pcapng block at byte {ends[2]}"):
        read_capture(write(tmp_path, "d", ng[:ends[2] + 40]))
    with pytest.warns(CaptureTruncatedWarning,
                      match=f"truncated pcapng block header at byte {ends[2]}"):
        read_capture(write(tmp_path, "e", ng[:ends[2] + 4]))


def test_corrupt_files(tmp_path):
    def fails(content: bytes, pattern: str) -> None:
        with pytest.raises(CaptureError, match=pattern):
            read_capture(write(tmp_path, "x", content))

    content, ends = good_pcap()
    fails(b"\xde\xad\xbe\xef" + content[4:], "unknown magic 0xdeadbeef at byte 0")
    fails(b"", "empty capture file")
    big = pcap_bytes([(T0, 0, b"\0" * 60, 60), (T0, 0, b"\0" * 40, 70000)])
    fails(patch(big, 100 + 8, 70000), "record at byte 100 claims caplen 70000 > snaplen 65535")
    zero = pcap_bytes([(T0, 0, b"\0" * 60, 60)], snaplen=0)
    fails(patch(zero, 32, 300000), "record at byte 24 claims caplen 300000 > maximum 262144")

    ng, ends = good_pcapng()
    at = ends[1]
    fails(patch(ng, at + 4, 7), f"bad pcapng block length 7 at byte {at}")
    fails(patch(ng, at + 4, 30), f"bad pcapng block length 30 at byte {at}")
    blen = ends[2] - ends[1]
    fails(patch(ng, ends[2] - 4, blen + 4), f"block at byte {at}: trailing block length {blen + 4}")
    fails(patch(ng, at + 20, 9999), f"packet block at byte {at} claims caplen 9999")
    fails(patch(ng, at + 8, 3), f"block at byte {at} refers to interface 3 but its section "
          "defines 1")
    fails(patch(ng, 8, 0x04030201), "bad pcapng byte-order magic 0x04030201 at byte 8")
    fails(shb(major=2), "unsupported pcapng version 2.0 in section header at byte 0")
    fails(shb() + epb(0, 0, b"abcd"), "refers to interface 0 but its section defines 0")
    fails(shb() + block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 2, 200)),
          "bad pcapng option length 200 at byte 44")
    fails(shb() + idb(1) + block(6, b"\0" * 8), "of type 6 is too short")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["pcap", "pcapng"]), cut=st.integers(0, 2000),
       flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4))
def test_fuzzed_files_never_crash(tmp_path_factory, which, cut, flips):
    content, _ = good_pcap() if which == "pcap" else good_pcapng()
    buf = bytearray(content[:max(1, len(content) - cut % len(content))])
    for pos, val in flips:
        buf[pos % len(buf)] = val
    path = tmp_path_factory.mktemp("fuzz") / "f.cap"
    path.write_bytes(bytes(buf))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CaptureTruncatedWarning)
            p = read_capture(path)
    except CaptureError as e:
        assert re.search(r"byte \d+|different linktypes", str(e))
        return
    n = len(p.offset)
    assert len(p.caplen) == len(p.wirelen) == len(p.ts_ns) == n
    assert (p.offset >= 0).all() and (p.caplen >= 0).all()
    assert (p.offset + p.caplen <= p.data.size).all()


# --------------------------------------------------------------------------- external tools
def _tool_totals(tool: str, path) -> tuple[int, int | None, int]:
    """Packet count, captured and wire byte totals by tshark, or count and wire bytes by
    tcpdump (captured total then None)."""
    require_tool(tool)
    if tool == "tshark":
        out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.cap_len",
                              "-e", "frame.len"], capture_output=True, text=True, check=True)
        rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
        return len(rows), sum(int(r[0]) for r in rows), sum(int(r[1]) for r in rows)
    out = subprocess.run(["tcpdump", "-r", str(path), "-nn", "-e", "-K"],
                         capture_output=True, text=True, check=True)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    wire = sum(int(re.search(r"length (\d+)", line).group(1)) for line in lines)
    return len(lines), None, wire


@pytest.mark.parametrize("tool", ["tshark", "tcpdump"])
def test_against_tshark_and_tcpdump(tmp_path, tool):
    pkts = scapy_packets(30, seed=13)
    wrpcap(str(tmp_path / "a.pcap"), pkts)
    with PcapNgWriter(str(tmp_path / "a.pcapng")) as w:
        for x in pkts:
            w.write(x)
    for name in ("a.pcap", "a.pcapng"):
        p = read_capture(tmp_path / name)
        count, cap, wire = _tool_totals(tool, tmp_path / name)
        assert count == len(p.offset)
        assert wire == int(p.wirelen.sum())
        if cap is not None:
            assert cap == int(p.caplen.sum())
