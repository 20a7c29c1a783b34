"""Tests of numslab.net.traffic: determinism, header validity (via scapy), ground truth."""
from __future__ import annotations

import dpkt
import numpy as np
import pytest
from scapy.all import IP, TCP, UDP, Dot1Q, Ether, IPv6, raw

from numslab.net.capture import read_capture, write_pcap
from numslab.net.traffic import (count_flow_sessions, generate_traffic,
                                 generate_traffic_with_truth)


@pytest.fixture(scope="module")
def small():
    return generate_traffic_with_truth(3000, seed=4, n_flows=120)


def frame(p, i: int) -> bytes:
    return bytes(p.packet(i))


def flow_key(e) -> tuple:
    """Direction-free 5-tuple of a dissected frame."""
    l3 = e[IP] if IP in e else e[IPv6]
    l4 = e[TCP] if TCP in e else e[UDP]
    return (l4.__class__.__name__, frozenset([(l3.src, l4.sport), (l3.dst, l4.dport)]))


def test_deterministic_for_a_seed():
    a = generate_traffic(2000, seed=9)
    b = generate_traffic(2000, seed=9)
    c = generate_traffic(2000, seed=10)
    for x, y in zip(a[:5], b[:5]):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.caplen, c.caplen)


def test_table_shape_sizes_and_times(small):
    p, truth = small
    n = 3000
    assert p.linktype == 1 and p.data.dtype == np.uint8
    for col in (p.offset, p.caplen, p.wirelen, p.ts_ns):
        assert col.dtype == np.int64 and col.shape == (n,)
    assert p.caplen.min() >= 60 and p.caplen.max() <= 1514
    assert np.array_equal(p.caplen, p.wirelen)
    assert np.array_equal(p.offset[1:], p.offset[:-1] + p.caplen[:-1])
    assert p.offset[-1] + p.caplen[-1] == p.data.size
    assert (np.diff(p.ts_ns) > 0).all()
    # a bimodal mix: many ACK-sized frames, many near the MTU
    assert (p.caplen <= 100).mean() > 0.25 and (p.caplen >= 1400).mean() > 0.15
    assert truth.flow_id.shape == (n,) and truth.n_flows == 120


def test_protocol_mix(small):
    _, t = small
    assert set(t.ip_version.tolist()) == {4, 6}
    assert set(t.l4_proto.tolist()) == {6, 17}
    assert t.vlan.any() and not t.vlan.all()
    flags = t.tcp_flags[t.l4_proto == 6]
    assert (flags == 0x02).any() and (flags == 0x12).any()          # SYN, SYN-ACK
    assert (flags & 0x01).any() and (flags & 0x04).any()            # FIN, RST
    none = generate_traffic_with_truth(500, seed=1, ipv6_fraction=0, udp_fraction=0,
                                       vlan_fraction=0)[1]
    assert set(none.ip_version.tolist()) == {4} and set(none.l4_proto.tolist()) == {6}
    assert not none.vlan.any()


def test_sampled_frames_parse_with_consistent_headers(small):
    p, t = small
    for i in range(0, 3000, 10):
        b = frame(p, i)
        e = Ether(b)
        l2 = 14
        if t.vlan[i]:
            assert Dot1Q in e and 1 <= e[Dot1Q].vlan <= 4094
            l2 = 18
        else:
            assert Dot1Q not in e
        l4cls = TCP if t.l4_proto[i] == 6 else UDP
        assert l4cls in e
        l4 = e[l4cls]
        if t.ip_version[i] == 4:
            ip = e[IP]
            assert ip.version == 4 and ip.ihl == 5 and ip.proto == t.l4_proto[i]
            ip_len, l4_len = ip.len, ip.len - 20
        else:
            ip = e[IPv6]
            assert ip.version == 6 and ip.nh == t.l4_proto[i]
            ip_len, l4_len = 40 + ip.plen, ip.plen
        # the IP length covers the frame, except Ethernet padding up to 60 bytes
        assert l2 + ip_len == len(b) or (len(b) == 60 and l2 + ip_len < 60)
        if l4cls is UDP:
            assert l4.len == l4_len == 8 + t.payload_len[i]
        else:
            assert l4.dataofs * 4 + t.payload_len[i] == l4_len
            assert int(l4.flags) == t.tcp_flags[i]
            if l4.flags.S:
                assert dict(l4.options)["MSS"] == 1500 - (l2 - 14) - (ip_len - l4_len) - 20
        # checksums: rebuilding with scapy's own checksums gives the same bytes
        c = e.copy()
        for layer in (IP, TCP, UDP):
            if layer in c:
                del c[layer].chksum
        assert raw(c) == b, f"frame {i}: checksum mismatch"


def test_flow_truth_matches_scapy(small):
    p, t = small
    keys = [flow_key(Ether(frame(p, i))) for i in range(len(p.offset))]
    assert len(set(keys)) == t.n_flows == len(np.unique(t.flow_id))
    pairs = set(zip(t.flow_id.tolist(), keys))
    assert len(pairs) == t.n_flows  # flow_id <-> 5-tuple is a bijection
    first = {}
    for i, f in enumerate(t.flow_id.tolist()):
        first.setdefault(f, i)
    assert sorted(first) == list(range(t.n_flows))
    assert list(first.values()) == sorted(first.values())  # numbered by first packet


def test_tcp_connections_open_and_close(small):
    p, t = small
    tcp_flows = np.unique(t.flow_id[t.l4_proto == 6])
    closed = 0
    for f in tcp_flows:
        idx = np.flatnonzero(t.flow_id == f)
        fl = t.tcp_flags[idx]
        assert fl[0] == 0x02 and t.from_client[idx[0]]          # opens with a client SYN
        assert ((fl & 0x02) != 0).sum() <= 2
        closed += bool((fl[-3:] & 0x05).any())
        if len(idx) >= 2 and fl[1] == 0x12:                    # SYN-ACK acknowledges SYN+1
            syn, synack = Ether(frame(p, idx[0]))[TCP], Ether(frame(p, idx[1]))[TCP]
            assert synack.ack == (syn.seq + 1) % 2**32
            if len(idx) >= 3:
                third = Ether(frame(p, idx[2]))[TCP]
                assert (third.seq, third.ack) == (synack.ack, (synack.seq + 1) % 2**32)
    assert closed > len(tcp_flows) // 4


def test_idle_gaps_split_sessions():
    p, t = generate_traffic_with_truth(4000, seed=2, n_flows=100, idle_fraction=0.3,
                                       idle_gap_s=30.0)
    assert count_flow_sessions(t.flow_id, p.ts_ns, 60 * 10**9) == 100
    split = count_flow_sessions(t.flow_id, p.ts_ns, 10 * 10**9)
    assert 100 + 10 <= split <= 100 + 50  # about 30 of the 100 flows pause once
    q, u = generate_traffic_with_truth(4000, seed=2, n_flows=100, idle_fraction=0.0)
    assert count_flow_sessions(u.flow_id, q.ts_ns, 10 * 10**9) == 100


def test_count_flow_sessions_by_hand():
    fid = np.array([0, 1, 0, 1, 0, 2])
    ts = np.array([0, 1, 5, 20, 30, 31])
    assert count_flow_sessions(fid, ts, 10) == 5   # flow 0 splits before 30, flow 1 before 20
    assert count_flow_sessions(fid, ts, 100) == 3
    assert count_flow_sessions(fid[:0], ts[:0], 1) == 0


def test_write_read_round_trip(tmp_path, small):
    p, _ = small
    write_pcap(tmp_path / "g.pcap", p, nanosecond=True)
    r = read_capture(tmp_path / "g.pcap")
    assert r.linktype == 1
    for a, b in ((r.caplen, p.caplen), (r.wirelen, p.wirelen), (r.ts_ns, p.ts_ns)):
        assert np.array_equal(a, b)
    assert all(frame(r, i) == frame(p, i) for i in range(len(p.offset)))
    with open(tmp_path / "g.pcap", "rb") as f:
        assert sum(1 for _ in dpkt.pcap.Reader(f)) == len(p.offset)
    write_pcap(tmp_path / "u.pcap", p)
    assert np.array_equal(read_capture(tmp_path / "u.pcap").ts_ns, p.ts_ns // 1000 * 1000)


def test_bad_arguments_and_empty():
    with pytest.raises(ValueError):
        generate_traffic(10, n_flows=11)
    with pytest.raises(ValueError):
        generate_traffic(10, n_flows=0)
    p, t = generate_traffic_with_truth(0)
    assert len(p.offset) == 0 and p.data.size == 0 and t.n_flows == 0
    p, t = generate_traffic_with_truth(1)
    assert len(p.offset) == 1 and t.n_flows == 1 and t.tcp_flags[0] in (0, 0x02)


def test_frames_are_written_a_chunk_per_compiled_call(monkeypatch):
    # one compiled call wrote every frame: with --packets 3000000 a Ctrl-C waited 12 s
    import numslab.net.traffic as traffic
    whole = generate_traffic(3000, 5)
    sizes, emit = [], traffic._emit_frames
    monkeypatch.setattr(traffic, "_EMIT_CHUNK", 1000)
    monkeypatch.setattr(traffic, "_emit_frames",
                        lambda out, fr, *a: sizes.append(fr.offset.size) or emit(out, fr, *a))
    part = generate_traffic(3000, 5)
    assert sizes == [1000, 1000, 1000]
    assert np.array_equal(part.data, whole.data) and np.array_equal(part.offset, whole.offset)
