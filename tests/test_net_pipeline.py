"""Tests of numslab.net.pipeline and examples/packet_pipeline.py: exact counts on captures
with known answers in every mode, flow semantics against reference meters, leak checks, CLI."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, IPv6,
                       IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, Raw, raw)
from scapy.utils import PcapNgWriter, RawPcapNgReader, RawPcapReader, wrpcap

import numslab.jit as nsj
from numslab import OutOfMemoryError, SlabAllocator
from numslab.net.capture import CaptureTruncatedWarning
from numslab.net import (MODES, LeakError, Packets, count_flow_sessions,
                         generate_traffic_with_truth, read_capture, run_pipeline, write_pcap)
from numslab.net import pipeline as pl
from conftest import require_tool

ROOT = Path(__file__).absolute().parent.parent
CLI = ROOT / "examples" / "packet_pipeline.py"
sys.path.insert(0, str(CLI.parent))
import packet_pipeline as cli  # noqa: E402

T0 = 1_700_000_000
FIN, RST = 0x01, 0x04
TIMEOUT = 30.0
COUNTS = ("packets", "bytes", "flows", "active_flows")


# --------------------------------------------------------------------------- known answers
def known_frames() -> tuple[list, dict]:
    """Frames (scapy packets with ``time``) whose counts are worked out by hand."""
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    a_c = IP(src="10.0.0.1", dst="10.0.0.2")
    a_s = IP(src="10.0.0.2", dst="10.0.0.1")
    b_c = IPv6(src="fd00::1", dst="2001:db8::2")
    b_s = IPv6(src="2001:db8::2", dst="fd00::1")
    g = eth / IP(src="10.4.0.1", dst="10.4.0.2") / UDP(sport=100, dport=200) / b"g"
    g2 = g.copy()
    full = eth / IP(src="10.9.0.1", dst="10.9.0.2") / TCP(sport=9, dport=9) / (b"x" * 20)
    trunc = Raw(raw(full)[:30])
    trunc.wirelen = len(full)
    frames = [                                             # time (s), flow made
        (0.0, eth / a_c / TCP(sport=1000, dport=80, flags="S")),        # A      #1
        (0.1, eth / a_s / TCP(sport=80, dport=1000, flags="SA")),       # A
        (0.2, eth / a_c / TCP(sport=1000, dport=80, flags="PA") / (b"p" * 100)),
        (0.3, eth / b_c / UDP(sport=5353, dport=53) / b"q"),            # B      #2
        (0.4, eth / b_s / UDP(sport=53, dport=5353) / (b"r" * 40)),     # B
        (0.5, Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP()),  # non-IP
        (0.6, eth / a_c / ICMP()),                                      # other IP
        (0.7, eth / Dot1Q(vlan=10) / IP(src="10.1.0.1", dst="10.1.0.2")
         / TCP(sport=2000, dport=443, flags="S")),                      # C      #3
        (0.8, eth / Dot1AD(vlan=100) / Dot1Q(vlan=200) / IP(src="10.2.0.1", dst="10.2.0.2")
         / UDP(sport=3000, dport=4000)),                                # D      #4
        (0.9, eth / IPv6(src="fd00::5", dst="fd00::6") / IPv6ExtHdrHopByHop()
         / UDP(sport=6000, dport=7000)),                                # E      #5
        (1.0, eth / IP(src="10.0.0.1", dst="10.0.0.2", proto=17, frag=185) / (b"f" * 30)),
        (1.1, eth / a_c / TCP(sport=1000, dport=80, flags="FA")),       # A closed
        (1.2, eth / a_s / TCP(sport=80, dport=1000, flags="FA")),       # A'     #6 closed
        (1.3, eth / a_c / TCP(sport=1000, dport=80, flags="A")),        # A''    #7
        (1.4, eth / IP(src="10.3.0.1", dst="10.3.0.2")
         / TCP(sport=5000, dport=22, flags="R")),                       # F      #8 closed
        (1.5, trunc),                                                   # truncated
        (31.0, eth / b_s / UDP(sport=53, dport=5353)),     # B idle 30.6 s: B' #9; C D E idle
        (31.0, g),                                                      # G      #10
        (61.0, g2),                 # G again after exactly 30 s: same flow; A'' idle
        (61.0, eth / IPv6(src="fd00::7", dst="2001:db8::8")
         / TCP(sport=8000, dport=443, flags="S")),                      # H      #11
    ]
    pkts = []
    for t, p in frames:
        p.time = Decimal(T0) + Decimal(str(t))
        pkts.append(p)
    answer = {"packets": 20, "bytes": sum(p.wirelen or len(raw(p)) for p in pkts),
              "flows": 11, "active_flows": 3}              # B', G, H
    counters = {"non_ip": 1, "other_ip": 2, "truncated": 1, "vlan": 2, "closed_flows": 3,
                "expired_flows": 5, "ipv4": 13, "ipv6": 5, "tcp": 9, "udp": 7}
    return pkts, {**answer, "counters": counters}


@pytest.fixture(scope="module", params=["pcap-us", "pcap-ns", "pcapng"])
def known_capture(request, tmp_path_factory):
    pkts, answer = known_frames()
    path = tmp_path_factory.mktemp("cap") / f"known.{request.param}"
    if request.param == "pcapng":
        with PcapNgWriter(str(path)) as w:
            for p in pkts:
                w.write(p)
    else:
        wrpcap(str(path), pkts, linktype=1, nano=request.param == "pcap-ns")
    return path, answer


def wire_totals(path: Path) -> tuple[int, int]:
    """Packets and wire bytes as an independent reader (scapy's) counts them."""
    reader = RawPcapNgReader if path.suffix == ".pcapng" else RawPcapReader
    n = b = 0
    with reader(str(path)) as r:
        for _, meta in r:
            n += 1
            b += meta.wirelen
    return n, b


@pytest.mark.parametrize("mode", MODES)
def test_known_capture_every_mode(known_capture, mode):
    path, answer = known_capture
    assert wire_totals(path) == (answer["packets"], answer["bytes"])
    r = run_pipeline(read_capture(path), mode, batch=4, idle_timeout=TIMEOUT)
    assert {k: getattr(r, k) for k in COUNTS} == {k: answer[k] for k in COUNTS}
    for k, v in answer["counters"].items():
        assert r.counters[k] == v, k
    assert r.counters["captured_bytes"] == answer["bytes"] - 44   # the truncated frame


def write_cut(path: Path, whole: list, cuts: list[int]) -> Path:
    """An Ethernet pcap at ``path`` of the frames ``whole``, each cut to its ``cuts`` bytes
    (its wire length the whole frame's)."""
    pkts = []
    for p, cut in zip(whole, cuts):
        q = Raw(raw(p)[:cut])
        q.time, q.wirelen = 1.0, len(raw(p))
        pkts.append(q)
    wrpcap(str(path), pkts, linktype=1)
    return path


def test_a_tagged_frame_cut_short_is_counted_as_tagged(tmp_path):
    """Only a tagged frame cut in its TCP header counted as VLAN; one cut in its IP header,
    in a second tag or in its first tag's TCI did not, where tcpdump's "vlan" takes all."""
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    whole = [eth / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(),
             eth / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(),
             eth / Dot1AD(vlan=7) / Dot1Q(vlan=5) / IP() / UDP(),
             eth / Dot1Q(vlan=5) / IP() / UDP()]
    cuts = [18 + 10, 18 + 20 + 5, 18 + 2, 15]       # in IP, in TCP, in the second tag, TCI
    path = write_cut(tmp_path / "cut.pcap", whole, cuts)
    r = run_pipeline(read_capture(path), "bulk")
    assert (r.packets, r.counters["truncated"], r.counters["vlan"]) == (4, 4, 4)
    require_tool("tcpdump")
    out = subprocess.run(["tcpdump", "-r", str(path), "-nn", "vlan"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert len(out) == r.counters["vlan"]


def test_packets_and_bytes_match_tcpdump(known_capture, tmp_path):
    require_tool("tcpdump")
    gen = tmp_path / "gen.pcap"
    write_pcap(gen, generate_traffic_with_truth(3000, seed=11)[0])
    for path in (known_capture[0], gen):
        out = subprocess.run(["tcpdump", "-r", str(path), "-nn", "-e"], capture_output=True,
                             text=True, check=True).stdout.splitlines()
        lengths = [int(re.search(r", length (\d+):", ln).group(1)) for ln in out]
        r = run_pipeline(read_capture(path), "bulk")
        assert (r.packets, r.bytes) == (len(lengths), sum(lengths))


# --------------------------------------------------------------------------- generated traffic
def reference_meter(flow_id, ts_ns, tcp_flags, is_tcp, timeout_ns) -> tuple[int, int]:
    """The pipeline's flow semantics in plain Python: (flows created, active at the end)."""
    last: dict[int, int] = {}
    active: set[int] = set()
    created = 0
    for f, t, fl, tcp in zip(flow_id.tolist(), ts_ns.tolist(), tcp_flags.tolist(),
                             is_tcp.tolist()):
        if f in active and t - last[f] > timeout_ns:
            active.discard(f)
        if f not in active:
            created += 1
            active.add(f)
        last[f] = t
        if tcp and fl & (FIN | RST):
            active.discard(f)
    end = int(ts_ns[-1]) if len(ts_ns) else 0
    return created, sum(end - last[f] <= timeout_ns for f in active)


@pytest.fixture(scope="module")
def traffic():
    return generate_traffic_with_truth(20_000, seed=3, idle_fraction=0.2, idle_gap_s=40.0)


def all_modes(packets, **kw):
    res = {m: run_pipeline(packets, m, **kw) for m in MODES}
    first = res["single"]
    for r in res.values():
        assert {k: getattr(r, k) for k in COUNTS} == {k: getattr(first, k) for k in COUNTS}
        assert r.counters == first.counters
    return first


def test_an_ipv6_packet_cut_in_an_extension_header_is_ipv6_and_truncated(tmp_path):
    """Its 40-byte header whole, an IPv6 packet cut in a hop-by-hop or fragment header counts
    as IPv6 (and truncated), as one cut in its UDP header does and as tshark dissects them
    (its ``ipv6.dst``); it was not counted as IPv6. One cut in the IPv6 header itself is not
    (as an IPv4 packet cut in its header is not IPv4)."""
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    ip6 = IPv6(src="fd00::1", dst="fd00::2")
    whole = [eth / ip6 / IPv6ExtHdrHopByHop() / UDP(),
             eth / ip6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=0, m=1) / UDP(),
             eth / ip6 / IPv6ExtHdrHopByHop() / UDP(),
             eth / ip6 / UDP()]
    cuts = [14 + 40 + 1, 14 + 40 + 8 + 5, 14 + 40 + 8 + 3, 14 + 30]
    path = write_cut(tmp_path / "cut6.pcap", whole, cuts)
    r = all_modes(read_capture(path))
    c = r.counters
    assert (r.packets, c["truncated"], c["ipv6"], r.flows) == (4, 4, 3, 0)
    require_tool("tshark")
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "ipv6.dst", "-T", "fields", "-e",
                          "frame.number"], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "2", "3"]        # (its "ipv6" takes the 4th's 30 bytes)


def _tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    """Each frame's ``fields`` as tshark dissects the capture at ``path``."""
    require_tool("tshark")
    args = ["tshark", "-r", str(path), "-T", "fields"] + [x for f in fields for x in ("-e", f)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_an_ip_header_of_the_wrong_version_is_a_bad_header_not_truncated(tmp_path):
    """An IPv6 header under ethertype 0x0800 (whole, its UDP too) was counted as a truncated
    packet, as were an IPv4 header of length 16 and an IPv4 header under 0x86DD; none is cut.
    The kernel drops each as a header error (``ip_rcv``: ``iph->ihl < 5 || iph->version !=
    4``; ``ipv6_rcv``: ``hdr->version != 6``; ``IpInHdrErrors``, not ``InTruncatedPkts``),
    tshark flags each "Bogus" (tcpdump: "IP6, wrong link-layer encapsulation"): counted as
    ``bad_header`` now, not IPv4 nor IPv6, no flow. A frame cut in its IPv4 header stays
    truncated."""
    ip4, ip6 = IP(src="10.0.0.1", dst="10.0.0.2"), IPv6(src="fd00::1", dst="fd00::2")
    mac = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    whole = [Ether(type=0x0800, **mac) / ip6 / UDP(sport=1, dport=2) / b"x",
             Ether(**mac) / IP(src="10.0.0.1", dst="10.0.0.2", ihl=4) / UDP(sport=1, dport=2),
             Ether(type=0x86DD, **mac) / ip4 / UDP(sport=1, dport=2) / (b"x" * 30),
             Ether(**mac) / ip4 / UDP(sport=1, dport=2)]
    cuts = [len(raw(p)) for p in whole[:3]] + [14 + 12]
    path = write_cut(tmp_path / "bad.pcap", whole, cuts)
    r = all_modes(read_capture(path))
    c = r.counters
    assert (r.packets, c["bad_header"], c["truncated"], c["ipv4"], c["ipv6"], r.flows) == \
        (4, 3, 1, 0, 0, 0)
    assert c["other_ip"] == c["non_ip"] == 0
    seen = _tshark_fields(path, "frame.number", "_ws.expert.message")
    assert [f[0] for f in seen if "Bogus" in f[1]] == ["1", "2", "3"]


def test_ipv6_extension_headers_are_walked_however_many(tmp_path):
    """A UDP or TCP packet behind more than 8 IPv6 extension headers was counted as other IP
    (the walk stopped after 8 and took the ninth header's number for the L4 protocol): it
    makes its flow now, as tshark dissects its UDP or TCP header and as Linux walks them
    (RFC 8200 sets no limit); one cut in its tenth extension header is truncated, as one cut
    in its first is."""
    ip6 = IPv6(src="fd00::1", dst="fd00::2")
    mac = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

    def chain(k: int):                  # a hop-by-hop header, then k - 1 destination options
        p = Ether(**mac) / ip6 / IPv6ExtHdrHopByHop()
        for _ in range(k - 1):
            p = p / IPv6ExtHdrDestOpt()
        return p
    whole = [chain(8) / UDP(sport=3, dport=4), chain(9) / UDP(sport=5, dport=6),
             chain(12) / TCP(sport=7, dport=8, flags="S"), chain(12) / UDP(sport=9, dport=9)]
    cuts = [len(raw(p)) for p in whole[:3]] + [14 + 40 + 9 * 8 + 1]
    path = write_cut(tmp_path / "ext.pcap", whole, cuts)
    r = all_modes(read_capture(path))
    c = r.counters
    assert (r.packets, r.flows, c["ipv6"], c["udp"], c["tcp"], c["other_ip"], c["truncated"]) \
        == (4, 3, 4, 2, 1, 0, 1)
    seen = _tshark_fields(path, "frame.number", "udp.srcport", "tcp.srcport")
    assert [f[1] or f[2] for f in seen] == ["3", "5", "7", ""]


@pytest.mark.parametrize("timeout", [30.0, 0.002, float("inf")])
def test_generated_traffic_matches_reference(traffic, timeout):
    p, t = traffic
    r = all_modes(p, idle_timeout=timeout)
    tns = pl._timeout_ns(timeout)
    assert r.packets == len(p.offset) and r.bytes == int(p.wirelen.sum())
    assert (r.flows, r.active_flows) == reference_meter(t.flow_id, p.ts_ns, t.tcp_flags,
                                                       t.l4_proto == 6, tns)
    c = r.counters
    assert c["ipv4"] == (t.ip_version == 4).sum() and c["ipv6"] == (t.ip_version == 6).sum()
    assert c["tcp"] == (t.l4_proto == 6).sum() and c["udp"] == (t.l4_proto == 17).sum()
    assert c["vlan"] == t.vlan.sum()
    assert c["non_ip"] == c["other_ip"] == c["truncated"] == 0
    assert c["closed_flows"] + c["expired_flows"] + r.active_flows == r.flows


def test_udp_flows_are_idle_sessions():
    """Without FIN/RST the flow count is exactly count_flow_sessions."""
    p, t = generate_traffic_with_truth(8000, seed=5, udp_fraction=1.0, idle_fraction=0.3,
                                       idle_gap_s=31.0)
    r = all_modes(p, idle_timeout=30.0)
    assert r.flows == count_flow_sessions(t.flow_id, p.ts_ns, 30 * 10**9) > t.n_flows
    r = run_pipeline(p, "bulk", idle_timeout=float("inf"))
    assert r.flows == r.active_flows == t.n_flows


def test_flows_agree_with_scapy_dissection(tmp_path):
    """Flow keys from an independent dissector (scapy) through the reference meter."""
    p, _ = generate_traffic_with_truth(1500, seed=8, n_flows=80, idle_fraction=0.3)
    path = tmp_path / "g.pcap"
    write_pcap(path, p, nanosecond=True)
    keys, flags, tcp = [], [], []
    for i in range(len(p.offset)):
        e = Ether(bytes(p.packet(i)))
        l3 = e[IP] if IP in e else e[IPv6]
        l4 = e[TCP] if TCP in e else e[UDP]
        keys.append((type(l4).__name__, frozenset([(l3.src, l4.sport), (l3.dst, l4.dport)])))
        tcp.append(TCP in e)
        flags.append(int(l4.flags) if TCP in e else 0)
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    want = reference_meter(np.array([ids[k] for k in keys]), p.ts_ns, np.array(flags),
                           np.array(tcp), 30 * 10**9)
    r = all_modes(read_capture(path))
    assert (r.flows, r.active_flows) == want
    assert (r.packets, r.bytes) == wire_totals(path)


def test_buffer_sizes_jumbo_empty_and_raw_ip(tmp_path):
    """Jumbo frames (large kmalloc), empty captures (no buffer) and linktype 101 (raw IP)."""
    frames = [raw(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"j" * n))
              for n in (9000, 20, 8165, 8164, 0, 60000)]
    frames += [raw(IPv6(src="::1", dst="::2") / TCP(sport=5, dport=6, flags="R")), b""]
    data = np.frombuffer(b"".join(frames), np.uint8)
    cap = np.array([len(f) for f in frames])
    n = len(frames)
    pk = Packets(data, np.cumsum(cap) - cap, cap, np.maximum(cap, 60),
                 (T0 + np.arange(n)) * 10**9, 101)
    r = all_modes(pk)
    assert (r.packets, r.flows, r.active_flows) == (n, 2, 1)
    assert r.counters["large_buffers"] == 3 and r.counters["truncated"] == 1
    path = tmp_path / "raw.pcap"
    write_pcap(path, pk, snaplen=100_000)
    assert run_pipeline(read_capture(path), "new").flows == 2


def test_unknown_linktype_counts_packets_without_flows():
    p, _ = generate_traffic_with_truth(300, seed=1)
    with pytest.warns(UserWarning, match="linktype 147"):
        r = run_pipeline(p._replace(linktype=147), "bulk")
    assert (r.packets, r.flows, r.counters["non_ip"]) == (300, 0, 300)
    with pytest.warns(UserWarning, match="linktype 147") as got:    # once, not for the
        cli.compare_modes(p._replace(linktype=147), ["bulk"], warmup=100)   # untimed run
    assert len([w for w in got if "linktype" in str(w.message)]) == 1


def test_batch_sizes_and_chunks_do_not_change_counts(traffic):
    p, _ = traffic
    base = run_pipeline(p, "single")
    for mode, batch, chunk in (("bulk", 1, 100), ("local", 7, 1000), ("partial", 300, 64),
                               ("new", 1024, 5000)):
        r = run_pipeline(p, mode, batch=batch, chunk=chunk)
        assert r.counters == {**base.counters, "batches": -(-len(p.offset) // batch)}


# --------------------------------------------------------------------------- leaks, errors
def test_allocator_left_clean(traffic):
    sa = SlabAllocator(nr_cpus=2, memory="64M")
    def held():                 # what users hold: not the kmalloc caches' own sheaves
        return {c.name: c.live_objects - c.sheaf_objects for c in sa.caches}
    before = held()
    for mode in MODES:
        run_pipeline(traffic[0], mode, sa=sa)
    assert held() == before                                         # own caches destroyed
    sa.validate()


def test_leaked_flows_are_detected(traffic, monkeypatch):
    monkeypatch.setattr(pl, "_release_flows", lambda *a: None)
    with pytest.raises(LeakError, match=r"flow_cache: \d+ live object"):
        run_pipeline(traffic[0], "bulk")


def test_leaked_kmalloc_is_detected(traffic, monkeypatch):
    release = pl._release_flows

    def leaky(h, *args):
        release(h, *args)
        nsj.kmalloc(h, 300)
    monkeypatch.setattr(pl, "_release_flows", leaky)
    with pytest.raises(LeakError, match=r"kmalloc-512: \+1 live object"):
        run_pipeline(traffic[0], "single")


_GROWN_THEN_INTERRUPTED = """
import numslab.net.pipeline as pl
from numslab import SlabAllocator
from numslab.net import generate_traffic
real = pl._with_room

def room(table, *a):            # a Ctrl-C as the flow table grows
    new = real(table, *a)
    if new is not table:
        raise KeyboardInterrupt
    return new
pl._with_room = room
sa = SlabAllocator()
held = lambda: {c.name: c.live_objects - c.sheaf_objects for c in sa.caches}
before = held()
try:
    pl.run_pipeline(generate_traffic(20_000, 0), MODE, sa=sa, chunk=256)
except KeyboardInterrupt:
    print("interrupted", held() == before)
"""


@pytest.mark.parametrize("mode", ["bulk", "single"])
def test_a_ctrl_c_as_a_chunk_grows_the_flow_table_does_not_hang(mode):
    # the interrupt came before the grown table was kept for the clean-up, which then
    # deleted the newer flows from the older table: a probe loop that never ended
    code = _GROWN_THEN_INTERRUPTED.replace("MODE", repr(mode))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.split() == ["interrupted", "True"], p.stderr


def test_the_compiled_rx_loop_returns_no_array(traffic, monkeypatch):
    # it returned the flow table (grown when needed): boxing an array calls back into
    # Python (numba's _numba_unpickle), where a Ctrl-C raised, and the run ended in
    # "SystemError: EngineDispatcher(_rx_chunk) returned a result with an exception set"
    rx, returned = pl._rx_chunk, []
    monkeypatch.setattr(pl, "_rx_chunk", lambda *a: returned.append(rx(*a)) or returned[-1])
    r = run_pipeline(traffic[0], "bulk", idle_timeout=float("inf"), chunk=512)
    assert r.counters["max_active_flows"] > 512       # the table (1024 slots) grew meanwhile
    assert returned and not any(isinstance(x, np.ndarray) for x in returned)


def test_out_of_memory_is_reported():
    p, _ = generate_traffic_with_truth(50_000, seed=2, n_flows=50_000, idle_fraction=0)
    with pytest.raises(OutOfMemoryError, match="flow entries"):    # a MemoryError too
        run_pipeline(p, "single", memory="4M", idle_timeout=float("inf"))


@pytest.mark.parametrize("timeout", [1e308, 1e10])
def test_an_idle_timeout_past_int64_nanoseconds_is_never(timeout):
    # 1e308 s raised OverflowError (inf ns to int); 1e10 s made an int past int64
    p, _ = generate_traffic_with_truth(300, seed=1)
    assert pl._timeout_ns(timeout) == pl._timeout_ns(float("inf"))
    r = run_pipeline(p, "bulk", idle_timeout=timeout)
    assert r.active_flows == run_pipeline(p, "bulk", idle_timeout=float("inf")).active_flows


def test_bad_arguments():
    p, _ = generate_traffic_with_truth(100, seed=1)
    for kw in ({"mode": "fast"}, {"batch": 0}, {"idle_timeout": -1}):
        with pytest.raises(ValueError):
            run_pipeline(p, **kw)
    with pytest.raises(ValueError, match="outside"):
        run_pipeline(p._replace(caplen=p.caplen + 10_000))
    big = np.zeros(5 << 20, np.uint8)                       # one 5 MiB packet, at byte 64
    huge = p._replace(data=big, offset=np.array([0, 64]), caplen=np.array([60, (5 << 20) - 64]),
                      wirelen=np.array([60, 5 << 20]), ts_ns=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"packet 1 \(record data at byte 64\) .* 4 MiB"):
        run_pipeline(huge)


@pytest.mark.parametrize("bad", [["--cpus", "0"], ["--cpus", "5000"], ["--memory", "abc"],
                                 ["--memory", "0"], ["--seed", "-1"], ["--batch", "0"],
                                 ["--kernel", "7.0,7.0", "--compare"],
                                 ["--memory", "100000T"]])     # past any address space
def test_cli_bad_cpus_or_memory_exit_2_before_any_work(bad, capsys):
    # they exited 1 (a SlabError from the allocator) after the traffic was generated; the
    # epilog promises 2 for bad arguments
    with pytest.raises(SystemExit) as e:
        cli.main(bad)
    assert e.value.code == 2 and bad[0] in capsys.readouterr().err


def test_cli_a_memory_no_run_can_map_is_a_usage_error(capsys, monkeypatch):
    """``--memory 1T`` on a machine that cannot map it was refused by the allocator of the
    run, after the traffic was made: 'error: InvalidSizeError: ...', status 1. A usage error
    now, status 2, as argparse's; a memory it can map runs."""
    import mmap

    class Refused:
        def __init__(self, fd, size, **kw):
            if size >= 1 << 40:
                raise OSError(12, "Cannot allocate memory")

        def close(self):
            pass
    monkeypatch.setattr(mmap, "mmap", Refused)
    with pytest.raises(SystemExit) as e:
        cli.main(["--memory", "1T", "--packets", "10", "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.splitlines()[-1] == (
        "packet_pipeline: error: --memory 1T: cannot reserve 1,099,511,627,776 bytes of "
        "arena here (Cannot allocate memory)")
    assert err.startswith("usage: ")
    assert cli.parse_args(["--memory", "64M"]).memory == "64M"


def test_cli_a_ctrl_c_is_one_line_and_status_130(capsys, monkeypatch):
    # it ended in a traceback of Numba's compiler (170-260 lines in a first run)
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["--packets", "10"]) == 130
    assert capsys.readouterr().err == "packet_pipeline: interrupted\n"


def test_compare_modes_runs_all_and_agrees(traffic):
    res = cli.compare_modes(cli.head(traffic[0], 5000), warmup=500, repeat=2)
    assert list(res) == list(MODES)
    assert {r.kernel for r in res.values()} == {"7.0"}               # the default
    assert len({(r.flows, r.bytes, r.active_flows) for r in res.values()}) == 1


def test_rx_allocations_are_atomic_so_7_1_refills_sheaves_where_7_0_takes_single_objects(
        traffic):
    # every RX allocation is GFP_ATOMIC (softirq): a record that finds the CPU's sheaves
    # empty is one ___slab_alloc object under 7.0 (no refill: it may not block) and a sheaf
    # refill from 7.1 (it may spin); the work is the same
    res = cli.compare_modes(cli.head(traffic[0], 3000), ("single",), warmup=300,
                            kernels=("7.0", "7.1"))
    r70, r71 = res["single@7.0"], res["single@7.1"]
    assert (r70.flows, r70.bytes, r70.counters) == (r71.flows, r71.bytes, r71.counters)
    skb70, skb71 = [next(v["stats"] for k, v in r.caches.items() if k.startswith("skbuff"))
                    for r in (r70, r71)]
    assert skb70.get("sheaf_refill", 0) == 0 < skb70["alloc_slowpath"]   # (zeros left out)
    assert skb71["sheaf_refill"] > 0 == skb71.get("alloc_slowpath", 0)


def test_compare_puts_generations_side_by_side(traffic, capsys):
    res = cli.compare_modes(cli.head(traffic[0], 3000), ("single", "bulk"), warmup=300,
                            kernels=("6.18", "7.0"))
    assert list(res) == ["single@6.18", "bulk@6.18", "single@7.0", "bulk@7.0"]
    assert [(r.mode, r.kernel) for r in res.values()] == [
        ("single", "6.18"), ("bulk", "6.18"), ("single", "7.0"), ("bulk", "7.0")]
    assert len({(r.flows, r.bytes, r.active_flows, str(r.counters))
                for r in res.values()}) == 1                     # the same work on both
    # SLUB's own counters differ: 6.18 serves the records' cache from its CPU slab
    skb = [next(v for k, v in r.caches.items() if k.startswith("skbuff"))
           for r in res.values()]
    assert "alloc_cpu_sheaf" not in skb[2]["stats"] and "cpuslab_flush" not in skb[2]["stats"]
    table = cli.compare_table(res, "t").splitlines()
    assert table[1].split()[-3:] == ["speed-up", "time", "x"] or "time x 6.18" in table[1]
    assert [ln.split()[:2] for ln in table[2:]] == [["single", "6.18"], ["bulk", "6.18"],
                                                    ["single", "7.0"], ["bulk", "7.0"]]
    assert all(ln.split()[-1] == "1.00" for ln in table[2:4])      # against themselves
    assert cli.main(["--packets", "1500", "--compare", "--repeat", "1", "--quiet",
                     "--kernel", "7.0,6.18"]) == 0
    out = capsys.readouterr().out
    assert out.count(" 6.18 ") == 5 and out.count(" 7.0 ") == 5
    assert cli.main(["--packets", "1500", "--quiet", "--kernel", "6.18"]) == 0
    assert "kernel 6.18" in capsys.readouterr().out
    for bad in (["--kernel", "2.6"], ["--kernel", "6.18,7.0"], ["--top", "-1"]):
        with pytest.raises(SystemExit):             # usage errors, before any work
            cli.main(["--packets", "1500", "--quiet", *bad])
    err = capsys.readouterr().err
    assert "--kernel 6.18,7.0: several generations need --compare" in err
    # traffic whose timestamps would pass int64 nanoseconds: one line, not a traceback
    assert cli.main(["--packets", str(10 ** 15), "--quiet"]) == 2
    assert "error: --packets 1000000000000000: timestamps" in capsys.readouterr().err
    assert "--top -1: must be >= 0" in err      # the bad one (it listed every rule)
    # no packets: no speed figures (0.0 ns/packet, 0.00x; a ZeroDivisionError with two
    # generations), but the run and its leak check go through
    assert cli.main(["--packets", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "speed      none measured (no packets)" in out and "ns/packet" not in out
    assert cli.main(["--packets", "0", "--compare", "--repeat", "1", "--quiet",
                     "--kernel", "6.18,7.0"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1:] == ["no packets: no mode was timed"]


# --------------------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_json_on_a_capture(known_capture):
    path, answer = known_capture
    out = run_cli("--pcap", str(path), "--mode", "partial", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert {k: d[k] for k in COUNTS} == {k: answer[k] for k in COUNTS}
    assert d["mode"] == "partial" and d["ns_per_packet"] > 0 and d["pps"] > 0


def test_cli_reads_a_cut_capture_up_to_the_cut_and_stdin(tmp_path):
    pkts, _ = known_frames()
    path = tmp_path / "cut.pcap"
    wrpcap(str(path), pkts)
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])                     # a killed tcpdump leaves such files
    with pytest.warns(CaptureTruncatedWarning, match=r"truncated packet data at byte \d+"):
        assert len(read_capture(path).offset) == len(pkts) - 1
    out = run_cli("--pcap", str(path), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["packets"] == len(pkts) - 1
    assert "cut at byte" in out.stderr and "Traceback" not in out.stderr
    # one line, as the CLI's errors (Python's format echoed "p = read_capture(args.pcap)")
    assert [ln for ln in out.stderr.splitlines() if "cut at byte" in ln][0].startswith(
        "packet_pipeline: warning: capture cut at byte") and "read_capture(" not in out.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    piped = subprocess.run([sys.executable, str(CLI), "--pcap", "-", "--json"], input=whole,
                           capture_output=True, env=env, timeout=300)
    assert piped.returncode == 0 and json.loads(piped.stdout)["packets"] == len(pkts)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\xde\xad\xbe\xef" + whole[4:])
    out = run_cli("--pcap", str(bad))
    assert out.returncode == 2 and out.stdout == "" and "unknown magic" in out.stderr


def test_cli_in_process(tmp_path, capsys, monkeypatch):
    assert cli.main(["--packets", "3000", "--compare", "--repeat", "1"]) == 0
    text = capsys.readouterr().out
    for mode in MODES:
        assert f"\n{mode} " in text
    assert "speed-up" in text and "1.00x" in text
    assert cli.main(["--packets", "2000", "--json", "--compare", "--repeat", "1"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["modes"]) == set(MODES) and d["packets"] == 2000
    assert cli.main(["--packets", "2000", "--mode", "local", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "packets    2,000" in text and "ns/packet" in text and "slabinfo" in text
    assert "leaks      none" in text
    assert cli.main(["--pcap", str(tmp_path / "missing.pcap")]) == 2
    assert "error" in capsys.readouterr().err
    monkeypatch.setattr(pl, "_release_flows", lambda *a: None)
    assert cli.main(["--packets", "2000", "--quiet"]) == 1
    assert "memory leak" in capsys.readouterr().err


@pytest.mark.parametrize("tty, quiet, slow, says", [(True, False, True, True),
                                                     (True, False, False, False),
                                                     (True, True, True, False),
                                                     (False, False, True, False)])
def test_a_slow_first_run_says_it_is_compiling(monkeypatch, capsys, tty, quiet, slow, says):
    """On a terminal, an untimed first run that takes over a second says Numba is compiling
    (a fresh machine's first run printed nothing for half a minute); never with --quiet,
    off a terminal, or when the engine is cached."""
    import argparse
    import time
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    with cli.compiling_notice(argparse.Namespace(quiet=quiet)):
        time.sleep(1.3 if slow else 0.01)
    time.sleep(0.1)
    err = capsys.readouterr().err
    assert ("compiling numslab's engine" in err) == says


def test_cli_out_of_memory_names_the_option(capsys, monkeypatch):
    # "the allocator ran out of memory ...; give it more memory" named no option to do it
    many, _ = generate_traffic_with_truth(50_000, seed=2, n_flows=50_000, idle_fraction=0)
    monkeypatch.setattr(cli, "generate_traffic", lambda n, seed: many)
    assert cli.main(["--memory", "4M", "--idle-timeout", "inf", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("packet_pipeline: error: OutOfMemoryError: the allocator ran out of "
                          "memory for flow entries") and err.endswith("(--memory, now 4M)\n")


def test_cli_names_standard_input_and_top_0_prints_no_cache_header(tmp_path, monkeypatch):
    # the summary said "input - (linktype 1)" where errors say "standard input"; --top 0
    # printed the caches' header over nothing
    pkts, _ = known_frames()
    wrpcap(str(tmp_path / "k.pcap"), pkts, linktype=1)
    data = (tmp_path / "k.pcap").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    p, source = cli.load(cli.parse_args(["--pcap", "-"]))
    assert source == "standard input (linktype 1)"
    r = run_pipeline(p, "bulk")
    assert "caches" not in cli.summary(r, source, 0)
    assert "caches     (slabinfo" in cli.summary(r, source, 2)
    # nor slabinfo's own two header lines (they were still printed over nothing)
    assert cli.summary(r, source, 0).splitlines()[-1].startswith("leaks ")


@pytest.mark.parametrize("linktype", [113, 276])
def test_vlan_tags_in_linux_cooked_captures_are_read(tmp_path, linktype):
    # libpcap puts a frame's VLAN tag back into a Linux cooked (SLL) capture after the
    # header's protocol field, 0x8100; tshark reads on to IP and UDP, the pipeline counted
    # the frame non-IP and made no flow
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2
    cooked = CookedLinux if linktype == 113 else CookedLinuxV2
    frames = [cooked(proto=0x8100) / Dot1Q(vlan=7) / IP(src="10.0.0.1", dst="10.0.0.2")
              / UDP(sport=1, dport=2) / (b"x" * 10),
              cooked(proto=0x8100) / Dot1AD(vlan=3) / Dot1Q(vlan=7)
              / IPv6(src="::1", dst="::2") / TCP(sport=3, dport=4, flags="S"),
              cooked(proto=0x8100) / Dot1Q(vlan=7) / ARP()]
    path = tmp_path / "sll.pcap"
    wrpcap(str(path), frames, linktype=linktype)
    c = run_pipeline(read_capture(path), "bulk").counters
    assert {k: c[k] for k in ("ipv4", "ipv6", "udp", "tcp", "vlan", "non_ip", "flows")} == \
        {"ipv4": 1, "ipv6": 1, "udp": 1, "tcp": 1, "vlan": 3, "non_ip": 1, "flows": 2}
