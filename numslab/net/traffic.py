"""Seeded synthetic Ethernet traffic (TCP/UDP over IPv4/IPv6) as a packet table.

Per-packet header fields are drawn with NumPy; one Numba kernel writes the frames.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import InvalidArgumentError
from .capture import Packets, _integer, _real, jit
from .headers import _memcpy

__all__ = ["TrafficTruth", "count_flow_sessions", "generate_traffic",
           "generate_traffic_with_truth"]

_ETH_MIN = 60            # minimum Ethernet frame without FCS
_MTU = 1500              # IP MTU of an untagged frame; tagged frames lose 4 bytes to it
_N_PORTS = 28232         # Linux ephemeral range 32768..60999
_PATTERN = 65536 + 2048  # pseudo-random payload source; payloads start at even offsets
#: Frames written per compiled call: a Ctrl-C is seen between two (one call for 3 million
#: frames took 12 s on a busy machine, deaf to it).
_EMIT_CHUNK = 1 << 16

_SYN, _FIN, _RST, _PSH, _ACK = 0x02, 0x01, 0x04, 0x08, 0x10
_TCP_PORTS = np.array([443, 80, 8080, 22, 25, 993, 3306, 5432, 6379, 8443])
_TCP_PORT_P = np.array([0.55, 0.15, 0.05, 0.05, 0.03, 0.04, 0.04, 0.03, 0.03, 0.03])
_SERVER_TTLS = np.array([50, 52, 56, 57, 58, 60, 113, 116, 118, 242, 245])
_UDP_DNS, _UDP_QUIC, _UDP_NTP, _UDP_MEDIA = 0, 1, 2, 3
_UDP_KIND_P = np.array([0.30, 0.45, 0.05, 0.20])


class FrameColumns(NamedTuple):
    """The header fields of ``n`` frames that :func:`_emit_frames` writes, in time order.

    Every column is int64[n] unless said; a client is the flow's initiator, its server the far
    side.

    Attributes
    ----------
    offset : numpy.ndarray
        Where each frame starts in the output bytes.
    vlan : numpy.ndarray
        The 802.1Q VLAN id (-1: untagged).
    v6, udp, c2s : numpy.ndarray
        bool[n]: IPv6 (else IPv4), UDP (else TCP), client to server (else server to client).
    ckey, skey : numpy.ndarray
        The client's and the server's address number (the client's MAC is derived from its number).
    cport, sport : numpy.ndarray
        The client's and the server's port.
    seq, ack : numpy.ndarray
        TCP sequence and acknowledgement numbers, 0..2**32-1 (``ack`` 0 without ACK).
    flags : numpy.ndarray
        TCP flags (0 for UDP).
    thl : numpy.ndarray
        TCP header bytes: 32 with a SYN's options, else 20 (unread for UDP).
    win, ttl, ipid, label : numpy.ndarray
        The sender's TCP window, IP TTL or hop limit, IPv4 identification (0..65535) and IPv6
        flow label (0..2**20-1).
    plen, poff : numpy.ndarray
        The payload's bytes and its even start in the payload pattern.
    """

    offset: np.ndarray
    vlan: np.ndarray
    v6: np.ndarray
    udp: np.ndarray
    c2s: np.ndarray
    ckey: np.ndarray
    skey: np.ndarray
    cport: np.ndarray
    sport: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray
    thl: np.ndarray
    win: np.ndarray
    ttl: np.ndarray
    ipid: np.ndarray
    label: np.ndarray
    plen: np.ndarray
    poff: np.ndarray


class TrafficTruth(NamedTuple):
    """Ground truth of generated traffic, for checking parsers and flow meters.

    Attributes
    ----------
    n_flows : int
        Number of distinct bidirectional 5-tuples (every requested flow gets a packet).
    flow_id : numpy.ndarray
        ``int64[n]``, flow of each packet, numbered ``0..n_flows-1`` by first packet.
    from_client : numpy.ndarray
        ``bool[n]``, True for packets sent by the flow's initiator.
    ip_version : numpy.ndarray
        ``uint8[n]``, 4 or 6.
    l4_proto : numpy.ndarray
        ``uint8[n]``, 6 (TCP) or 17 (UDP).
    vlan : numpy.ndarray
        ``bool[n]``, True for 802.1Q-tagged frames.
    tcp_flags : numpy.ndarray
        ``uint8[n]``, TCP flags byte (0 for UDP).
    payload_len : numpy.ndarray
        ``int64[n]``, bytes of TCP/UDP payload.
    """

    n_flows: int
    flow_id: np.ndarray
    from_client: np.ndarray
    ip_version: np.ndarray
    l4_proto: np.ndarray
    vlan: np.ndarray
    tcp_flags: np.ndarray
    payload_len: np.ndarray


# --------------------------------------------------------------------------- kernel
@jit
def _put16(out, p, v):
    out[p] = (v >> 8) & 0xFF
    out[p + 1] = v & 0xFF


@jit
def _put32(out, p, v):
    out[p] = (v >> 24) & 0xFF
    out[p + 1] = (v >> 16) & 0xFF
    out[p + 2] = (v >> 8) & 0xFF
    out[p + 3] = v & 0xFF


@jit
def _sum16(buf, p, n):
    """Sum of the big-endian 16-bit words of ``buf[p:p+n]`` (``n`` even)."""
    s = 0
    for i in range(p, p + n, 2):
        s += (np.int64(buf[i]) << 8) | np.int64(buf[i + 1])
    return s


@jit
def _fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


@jit
def _put_addr(out, p, v6, server, key):
    """Write a client or server address numbered ``key``; return its length.

    Client: 10.0.0.0/8, fd00:0:0:1::/64; server: 198.18.0.0/15, 2001:db8::/64."""
    if not v6:
        _put32(out, p, (0xC6120001 if server else 0x0A000001) + key)
        return 4
    for i in range(16):
        out[p + i] = 0
    if server:
        _put32(out, p, 0x20010DB8)
    else:
        _put16(out, p, 0xFD00)
        out[p + 7] = 1
    _put32(out, p + 12, key + 1)
    return 16


@jit
def _emit_frames(out, fr, pattern, pattern_sum):
    """Write every frame of ``fr`` (:class:`FrameColumns`) into ``out`` (uint8, pre-zeroed).

    Ethernet padding is left zero. Payloads are copied from ``pattern`` (uint8), their checksum
    taken from ``pattern_sum`` (int64, prefix sums of its big-endian 16-bit words)."""
    (offset, vlan, v6, udp, c2s, ckey, skey, cport, sport, seq, ack, flags, thl, win, ttl, ipid,
     label, plen, poff) = fr
    for i in range(offset.size):
        p = offset[i]
        # Ethernet: the client MAC is derived from its address key, the far side is a gateway
        cmac = p + 6 if c2s[i] else p
        gmac = p if c2s[i] else p + 6
        _put16(out, cmac, 0x0200)
        _put32(out, cmac + 2, ckey[i])
        _put16(out, gmac, 0x021B)
        _put32(out, gmac + 2, 0x213A4F5E)
        q = p + 12
        if vlan[i] >= 0:
            _put16(out, q, 0x8100)
            _put16(out, q + 2, vlan[i])
            q += 4
        _put16(out, q, 0x86DD if v6[i] else 0x0800)
        q += 2
        l4hdr = 8 if udp[i] else thl[i]
        l4len = l4hdr + plen[i]
        proto = 17 if udp[i] else 6
        ip = q
        if v6[i]:
            fl = label[i]
            out[q] = 0x60  # version 6, traffic class 0, 20-bit flow label
            out[q + 1] = (fl >> 16) & 0x0F
            _put16(out, q + 2, fl & 0xFFFF)
            _put16(out, q + 4, l4len)
            out[q + 6] = proto
            out[q + 7] = ttl[i]
            src, dst = q + 8, q + 24
            q += 40
        else:
            out[q] = 0x45
            _put16(out, q + 2, 20 + l4len)
            _put16(out, q + 4, ipid[i])
            _put16(out, q + 6, 0x4000)
            out[q + 8] = ttl[i]
            out[q + 9] = proto
            src, dst = q + 12, q + 16
            q += 20
        a = _put_addr(out, src if c2s[i] else dst, v6[i], False, ckey[i])
        _put_addr(out, dst if c2s[i] else src, v6[i], True, skey[i])
        if not v6[i]:
            _put16(out, ip + 10, _fold(_sum16(out, ip, 20)))
        l4 = q
        _put16(out, l4, cport[i] if c2s[i] else sport[i])
        _put16(out, l4 + 2, sport[i] if c2s[i] else cport[i])
        if udp[i]:
            _put16(out, l4 + 4, l4len)
        else:
            _put32(out, l4 + 4, seq[i])
            _put32(out, l4 + 8, ack[i])
            out[l4 + 12] = (thl[i] // 4) << 4
            out[l4 + 13] = flags[i]
            _put16(out, l4 + 14, win[i])
            if thl[i] == 32:  # SYN options: MSS, NOP + window scale, NOP NOP + SACK-permitted
                _put16(out, l4 + 20, 0x0204)
                _put16(out, l4 + 22, _MTU - (4 if vlan[i] >= 0 else 0) - (q - ip) - 20)
                _put32(out, l4 + 24, 0x01030307)
                _put32(out, l4 + 28, 0x01010402)
        # payload from the pattern, and the L4 checksum via the pattern's word prefix sums
        n = plen[i]
        o = poff[i]
        _memcpy(out, l4 + l4hdr, pattern, o, n)     # (a byte loop: 5x slower; a slice copy
                                                    # compiles a broadcast check, 2 s)
        s = pattern_sum[(o + n) // 2] - pattern_sum[o // 2]
        if n & 1:
            s += np.int64(pattern[o + n - 1]) << 8
        s += _sum16(out, l4, l4hdr) + _sum16(out, src, 2 * a) + proto + l4len
        c = _fold(s)
        if udp[i] and c == 0:
            c = 0xFFFF
        _put16(out, l4 + (6 if udp[i] else 16), c)


# --------------------------------------------------------------------------- helpers
def _zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf probabilities ``~ 1/rank**s`` over ``n`` items in random order."""
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return (w / w.sum())[rng.permutation(n)]


def _sample(rng: np.random.Generator, n_items: int, size: int, s: float) -> np.ndarray:
    cdf = np.cumsum(_zipf_weights(n_items, s, rng))
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"),
                      n_items - 1)


def _excl_cumsum(x: np.ndarray, start: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per-group exclusive cumulative sum of ``x``.

    Groups are contiguous, ``f`` maps each element to its group and ``start`` gives each group's
    first index."""
    cs = np.cumsum(x) - x
    return cs - cs[start][f]


def count_flow_sessions(flow_id: np.ndarray, ts_ns: np.ndarray, idle_timeout_ns: int) -> int:
    """Count flow records an idle-timeout flow meter would emit.

    A flow's packets form one session until a gap longer than ``idle_timeout_ns``
    between consecutive packets of that flow starts a new one.

    Parameters
    ----------
    flow_id : numpy.ndarray
        ``int64[n]``, flow of each packet (e.g. :attr:`TrafficTruth.flow_id`).
    ts_ns : numpy.ndarray
        ``int64[n]``, packet timestamps.
    idle_timeout_ns : int
        Idle timeout in nanoseconds.

    Returns
    -------
    int
        Number of sessions (at least the number of distinct flows).
    """
    if flow_id.size == 0:
        return 0
    order = np.lexsort((ts_ns, flow_id))
    f, t = flow_id[order], ts_ns[order]
    new = np.empty(f.size, np.bool_)
    new[0] = True
    new[1:] = (f[1:] != f[:-1]) | (np.diff(t) > idle_timeout_ns)
    return int(new.sum())


def generate_traffic(n_packets: int, seed: int = 0, **kwargs: Any) -> Packets:
    """Generate seeded synthetic Ethernet traffic; see :func:`generate_traffic_with_truth`.

    Returns
    -------
    Packets
        ``data`` is ``uint8[total_bytes]`` with frames back to back; ``offset``, ``caplen``,
        ``wirelen`` (equal to ``caplen``) and ``ts_ns`` are ``int64[n_packets]``;
        ``linktype`` is 1.
    """
    return generate_traffic_with_truth(n_packets, seed, **kwargs)[0]


def generate_traffic_with_truth(
        n_packets: int, seed: int = 0, *, n_flows: int | None = None,
        ipv6_fraction: float = 0.3, udp_fraction: float = 0.3, vlan_fraction: float = 0.1,
        zipf_s: float = 1.1, rate_pps: float = 100_000.0, idle_fraction: float = 0.05,
        idle_gap_s: float = 30.0, start_ns: int = 1_700_000_000 * 10**9,
) -> tuple[Packets, TrafficTruth]:
    """Generate seeded synthetic Ethernet traffic and its ground truth.

    Flows are TCP or UDP over IPv4 or IPv6, some 802.1Q-tagged, between clients in
    10.0.0.0/8 / fd00:0:0:1::/64 and servers in 198.18.0.0/15 / 2001:db8::/64. Flow sizes
    follow a Zipf law. TCP flows open with a handshake (lone SYN, refused SYN/RST-ACK for
    the tiniest) and close with FIN/FIN/ACK or RST, or stay open; sequence and
    acknowledgement numbers follow the payload. Frames are 60 to 1514 bytes: pure ACKs,
    requests, DNS, and bulk data at the MSS. All header lengths and checksums are valid.

    Parameters
    ----------
    n_packets : int
        Number of frames.
    seed : int, default 0
        Seed; equal arguments give identical output.
    n_flows : int, optional
        Number of flows (each gets at least one packet), default ``max(1, n_packets // 20)``.
    ipv6_fraction, udp_fraction, vlan_fraction : float
        Fraction of flows over IPv6, over UDP, and VLAN-tagged.
    zipf_s : float, default 1.1
        Zipf exponent of flow sizes (in packets).
    rate_pps : float, default 100000
        Average packet rate; the capture spans about ``n_packets / rate_pps`` seconds.
    idle_fraction : float, default 0.05
        Fraction of flows (of 3 or more packets) that pause once for ``idle_gap_s``,
        so an idle-timeout flow meter splits them (see :func:`count_flow_sessions`).
    idle_gap_s : float, default 30
        Length of those pauses in seconds.
    start_ns : int
        Timestamp of the start of the capture.

    Returns
    -------
    packets : Packets
        As returned by :func:`generate_traffic`; ``ts_ns`` is strictly increasing.
    truth : TrafficTruth
        Flow and header ground truth.
    """
    n = _integer("n_packets", n_packets)
    if n < 0:
        raise InvalidArgumentError(f"n_packets must be >= 0, not {n}")
    if _integer("seed", seed) < 0:
        raise InvalidArgumentError(f"seed must be an integer >= 0, not {seed}")
    F = max(1, n // 20) if n_flows is None else _integer("n_flows", n_flows)
    if n > 0 and not 1 <= F <= n:
        raise InvalidArgumentError(f"need 1 <= n_flows <= n_packets, got n_flows={F}, "
                                   f"n_packets={n}")
    for name, v in (("ipv6_fraction", ipv6_fraction), ("udp_fraction", udp_fraction),
                    ("vlan_fraction", vlan_fraction), ("idle_fraction", idle_fraction)):
        if not 0 <= _real(name, v) <= 1:
            raise InvalidArgumentError(f"{name} must be a fraction 0..1, not {v!r}")
    if not np.isfinite(_real("zipf_s", zipf_s)):
        raise InvalidArgumentError(f"zipf_s must be finite, not {zipf_s!r}")
    if not 0 < _real("rate_pps", rate_pps) < np.inf:
        raise InvalidArgumentError(f"rate_pps must be a finite rate > 0, not {rate_pps!r}")
    if not 0 <= _real("idle_gap_s", idle_gap_s) < np.inf:
        raise InvalidArgumentError(f"idle_gap_s must be finite and >= 0, not {idle_gap_s!r}")
    start_ns = _integer("start_ns", start_ns)
    # the last timestamp: start, the span, one pause and the ramp keeping them increasing
    end = start_ns + n / rate_pps * 1e9 + idle_gap_s * 1e9 + n
    if not (-2**63 <= start_ns and end < 2.0**63 - 2.0**20):
        raise InvalidArgumentError(
            f"timestamps from start_ns={start_ns} over {n} packets at rate_pps={rate_pps!r} "
            f"with idle_gap_s={idle_gap_s!r} pass int64 nanoseconds (year 2262)")
    if n == 0:
        e = np.empty(0, np.int64)
        empty = Packets(np.empty(0, np.uint8), e, e.copy(), e.copy(), e.copy(), 1)
        return empty, TrafficTruth(0, e.copy(), np.empty(0, bool), np.empty(0, np.uint8),
                                   np.empty(0, np.uint8), np.empty(0, bool),
                                   np.empty(0, np.uint8), e.copy())
    rng = np.random.default_rng(seed)

    # ---- per flow
    v6 = rng.random(F) < ipv6_fraction
    udp = rng.random(F) < udp_fraction
    vid = np.where(rng.random(F) < vlan_fraction, rng.integers(1, 4095, F), -1)
    m = 1 + rng.multinomial(n - F, _zipf_weights(F, zipf_s, rng))
    n_hosts = max(4, F // 8)
    host = _sample(rng, n_hosts, F, 1.0)
    by_host = np.argsort(host, kind="stable")
    hcount = np.bincount(host, minlength=n_hosts)
    rank = np.empty(F, np.int64)
    rank[by_host] = np.arange(F) - (np.cumsum(hcount) - hcount)[host[by_host]]
    ckey = host + n_hosts * (rank // _N_PORTS)  # (client address, port) is unique per flow
    hshift = rng.integers(0, _N_PORTS, n_hosts)
    cport = 32768 + ((rank % _N_PORTS) * 7919 + hshift[host]) % _N_PORTS
    skey = _sample(rng, min(100_000, max(4, F // 64)), F, 1.0)
    kind = rng.choice(4, F, p=_UDP_KIND_P)
    udp_port = np.array([53, 443, 123, 3478])[kind]
    rtp = (kind == _UDP_MEDIA) & (rng.random(F) < 0.5)  # RTP on a random even port
    udp_port[rtp] = 2 * rng.integers(5000, 30000, F)[rtp]
    sport = np.where(udp, udp_port, rng.choice(_TCP_PORTS, F, p=_TCP_PORT_P))
    u = rng.random(F)
    close_fin = (m >= 6) & (u < 0.75)
    close_rst = ((m >= 6) & (u >= 0.75) & (u < 0.87)) | ((m >= 4) & (m < 6) & (u < 0.3))
    refused = (m == 2) & (u < 0.5)
    closer_c = rng.random(F) < 0.6
    isn_c = rng.integers(0, 2**32, F)
    isn_s = rng.integers(0, 2**32, F)
    win_c = rng.integers(1024, 65536, F)
    win_s = rng.integers(1024, 65536, F)
    ttl_c = np.where(rng.random(F) < 0.7, 64, 128)
    ttl_s = rng.choice(_SERVER_TTLS, F)
    id_c = rng.integers(0, 65536, F)
    id_s = rng.integers(0, 65536, F)
    lab_c = rng.integers(0, 1 << 20, F)
    lab_s = rng.integers(0, 1 << 20, F)
    media_size = rng.integers(160, 1200, F)
    span = n / rate_pps * 1e9
    dur = np.minimum(m * np.exp(rng.uniform(np.log(2e4), np.log(2e8), F)),
                     span * rng.uniform(0.5, 1.0, F))  # long flows get 50-100% of the span
    t0 = rng.random(F) * (span - dur)
    idle = (rng.random(F) < idle_fraction) & (m >= 3)
    brk = 1 + (rng.random(F) * (m - 1)).astype(np.int64)

    # ---- per packet, grouped by flow
    f = np.repeat(np.arange(F), m)
    fstart = np.cumsum(m) - m
    k = np.arange(n) - fstart[f]
    M = m[f]
    tcp = ~udp[f]
    vl = vid[f] >= 0
    is6 = v6[f]
    r1, r2, r3 = rng.random(n), rng.random(n), rng.random(n)
    maxpay = _MTU - 4 * vl - np.where(is6, 40, 20) - np.where(tcp, 20, 8)

    # TCP: handshake, close, and data in between
    c2s = r1 >= 0.55
    fl = np.full(n, _ACK, np.int64)
    pay = np.where(c2s, np.where(r2 < 0.65, 0, 1 + (r3 * 700).astype(np.int64)),
                   np.where(r2 < 0.7, maxpay, 1 + (r3 * maxpay).astype(np.int64)))
    c2s[k == 3] = True
    pay[k == 3] = 100 + (r3[k == 3] * 600).astype(np.int64)
    ctl = k <= 2
    c2s[k == 0], fl[k == 0] = True, _SYN
    c2s[k == 1], fl[k == 1] = False, np.where(refused[f], _RST | _ACK, _SYN | _ACK)[k == 1]
    c2s[k == 2] = True
    closer = closer_c[f]
    for mask, cflag, from_closer in (
            (close_fin[f] & (k == M - 3), _FIN | _ACK, True),
            (close_fin[f] & (k == M - 2), _FIN | _ACK, False),
            (close_fin[f] & (k == M - 1), _ACK, True),
            (close_rst[f] & (k == M - 1), _RST | _ACK, True)):
        fl[mask] = cflag
        c2s[mask] = closer[mask] if from_closer else ~closer[mask]
        ctl |= mask
    pay[ctl] = 0

    # UDP: request/response by kind
    ukind = kind[f]
    alt = (k % 2) == 0
    u_c2s = np.where((ukind == _UDP_DNS) | (ukind == _UDP_NTP), alt, r1 < 0.45)
    u_c2s[k == 0] = True
    u_pay = np.select(
        [ukind == _UDP_DNS, ukind == _UDP_NTP, ukind == _UDP_MEDIA],
        [np.where(u_c2s, 28 + (r2 * 32).astype(np.int64), 60 + (r2 * 452).astype(np.int64)),
         np.full(n, 48), media_size[f] - 20 + (r2 * 40).astype(np.int64)],
        # QUIC: 1200+ byte Initials, near-MTU server data, small client ACKs
        np.where((k <= 1) | (~u_c2s & (r3 < 0.8)), 1200 + (r2 * 150).astype(np.int64),
                 30 + (r2 * 70).astype(np.int64)))
    u_c2s[(ukind == _UDP_QUIC) & (k == 1)] = False
    c2s = np.where(tcp, c2s, u_c2s)
    pay = np.minimum(np.where(tcp, pay, u_pay), maxpay)
    fl = np.where(tcp, fl | np.where(pay > 0, _PSH, 0), 0)
    thl = np.where(tcp & ((fl & _SYN) != 0), 32, 20)
    pay = np.minimum(pay, maxpay - (thl - 20))

    # sequence numbers: each side's bytes so far (SYN and FIN count one)
    cons = pay + ((fl & _SYN) != 0) + ((fl & _FIN) != 0)
    sent_c = _excl_cumsum(np.where(c2s, cons, 0), fstart, f)
    sent_s = _excl_cumsum(np.where(c2s, 0, cons), fstart, f)
    seq = np.where(c2s, isn_c[f] + sent_c, isn_s[f] + sent_s) & 0xFFFFFFFF
    ack = np.where(c2s, isn_s[f] + sent_s, isn_c[f] + sent_c) & 0xFFFFFFFF
    ack[(fl & _ACK) == 0] = 0

    # timestamps: exponential gaps spread over each flow's lifetime, plus idle pauses
    g = rng.exponential(size=n)
    gs = _excl_cumsum(g, fstart, f)
    gtot = gs[fstart + m - 1] + g[fstart + m - 1]
    t = t0[f] + dur[f] * gs / gtot[f] + (idle[f] & (k >= brk[f])) * (idle_gap_s * 1e9)
    order = np.argsort(t, kind="stable")
    ts = t[order].astype(np.int64)
    ramp = np.arange(n, dtype=np.int64)
    ts = np.maximum.accumulate(ts - ramp) + ramp + int(start_ns)  # strictly increasing

    # ---- frames, in time order
    l2 = 14 + 4 * vl
    iplen = np.where(is6, 40, 20) + np.where(tcp, thl, 8) + pay
    flen = np.maximum(l2 + iplen, _ETH_MIN)[order]
    offset = np.cumsum(flen) - flen
    data = np.zeros(int(flen.sum()), np.uint8)
    pattern = rng.integers(0, 256, _PATTERN, dtype=np.uint8)
    words = (pattern[0::2].astype(np.int64) << 8) | pattern[1::2]
    pattern_sum = np.concatenate(([0], np.cumsum(words)))
    poff = 2 * rng.integers(0, (_PATTERN - _MTU) // 2, n)
    c2s_o = c2s[order]
    fo = f[order]
    cols = FrameColumns(offset, vid[fo], is6[order], ~tcp[order], c2s_o, ckey[fo], skey[fo],
            cport[fo], sport[fo], seq[order], ack[order], fl[order], thl[order],
            np.where(c2s_o, win_c[fo], win_s[fo]), np.where(c2s_o, ttl_c[fo], ttl_s[fo]),
            (np.where(c2s_o, id_c[fo], id_s[fo]) + k[order]) & 0xFFFF,
            np.where(c2s_o, lab_c[fo], lab_s[fo]), pay[order], poff)
    for a in range(0, n, _EMIT_CHUNK):
        _emit_frames(data, FrameColumns(*(c[a:a + _EMIT_CHUNK] for c in cols)), pattern,
                     pattern_sum)

    pos = np.empty(n, np.int64)
    pos[order] = ramp
    first = pos[fstart]
    dense = np.empty(F, np.int64)
    dense[np.argsort(first)] = np.arange(F)
    packets = Packets(data, offset, flen, flen.copy(), ts, 1)
    truth = TrafficTruth(
        F, dense[fo], c2s_o, np.where(is6, 6, 4).astype(np.uint8)[order],
        np.where(tcp, 6, 17).astype(np.uint8)[order], vl[order], fl[order].astype(np.uint8),
        pay[order])
    return packets, truth
