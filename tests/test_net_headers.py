"""Tests of numslab.net.headers: the frame parse on frames built byte by byte."""
import struct

import numpy as np
import pytest

from numslab.net import headers as h


def eth(ethertype: int, payload: bytes, tags: tuple = ()) -> bytes:
    """An Ethernet frame: two MACs, 802.1Q/802.1ad tags ``(tpid, tci)``, the type, the payload."""
    out = bytes(range(12))
    for tpid, tci in tags:
        out += struct.pack(">HH", tpid, tci)
    return out + struct.pack(">H", ethertype) + payload


def ipv4(proto: int, l4: bytes, ihl: int = 5, frag: int = 0, version: int = 4) -> bytes:
    """An IPv4 header of ``ihl`` words (options zero) and its payload."""
    head = struct.pack(">BBHHHBBH4s4s", version << 4 | ihl, 0, 20 + len(l4), 1, frag, 64,
                       proto, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return head + bytes(max(4 * ihl - 20, 0)) + l4


def ipv6(nxt: int, payload: bytes) -> bytes:
    """An IPv6 header (source ::1, destination ::2) and its payload (over 64 KiB: length 0)."""
    size = len(payload) if len(payload) <= 0xFFFF else 0
    return struct.pack(">IHBB16s16s", 6 << 28, size, nxt, 64,
                       bytes(15) + b"\x01", bytes(15) + b"\x02") + payload


def tcp(sport: int, dport: int, flags: int) -> bytes:
    """A 20-byte TCP header."""
    return struct.pack(">HHIIBBHHH", sport, dport, 0, 0, 5 << 4, flags, 1024, 0, 0)


def udp(sport: int, dport: int) -> bytes:
    """An 8-byte UDP header."""
    return struct.pack(">HHHH", sport, dport, 8, 0)


def parse(frame: bytes, link: int = h._LINK_ETH, pad: int = 3) -> tuple:
    """``_parse`` of ``frame`` placed ``pad`` bytes into a larger buffer (offsets relative)."""
    m = np.frombuffer(b"\xee" * pad + frame + b"\xee" * 5, np.uint8)
    return h._parse(m, pad, len(frame), link)


def test_an_ipv4_tcp_frame_is_a_flow_with_its_ports_offsets_and_flags():
    r = parse(eth(0x0800, ipv4(6, tcp(1234, 80, 0x11))))
    status, etype, tci, tagged, l3, l4, ver, proto, shi, slo, dhi, dlo, sp, dp, fl = r
    assert (status, etype, tagged, l3, l4, ver, proto) == (h.ST_FLOW, 0x0800, 0, 14, 34, 4, 6)
    assert (shi, slo, dhi, dlo) == (0, 0xFFFF0A000001, 0, 0xFFFF0A000002)    # IPv4-mapped
    assert (sp, dp, fl) == (1234, 80, 0x11)


def test_vlan_tags_are_skipped_and_the_outer_tci_kept():
    frame = eth(0x0800, ipv4(17, udp(53, 5353)), tags=((0x88A8, 0x0123), (0x8100, 0x0456)))
    r = parse(frame)
    assert (r[0], r[1], r[2], r[3], r[4], r[5]) == (h.ST_FLOW, 0x0800, 0x0123, 1, 22, 42)
    assert (r[12], r[13]) == (53, 5353)


def test_ipv6_extension_headers_are_walked_however_many():
    udp_part = udp(7, 9)
    payload, nxt = udp_part, 17
    for _ in range(12):              # 12 destination-options headers of 8 bytes, one chain
        payload, nxt = bytes([nxt, 0]) + bytes(6) + payload, 60
    r = parse(eth(0x86DD, ipv6(nxt, payload)))
    assert (r[0], r[6], r[7], r[5]) == (h.ST_FLOW, 6, 17, 14 + 40 + 12 * 8)
    assert (r[12], r[13]) == (7, 9)
    assert (r[9], r[11]) == (1, 2)


def ext_chain(count: int, last: bytes, last_proto: int) -> tuple:
    """``count`` destination-options headers of 2048 bytes (the most one can say) before
    ``last``: (payload, first next-header)."""
    payload, nxt = last, last_proto
    for _ in range(count):
        payload, nxt = bytes([nxt, 255]) + bytes(2046) + payload, 60
    return payload, nxt


@pytest.mark.parametrize("count", [31, 32])
def test_headers_past_the_records_16_bit_offsets_are_a_bad_header(count):
    # 31 headers end at 14 + 40 + 31 * 2048 = 63542: a flow whose offset fits the record;
    # 32 at 65590, which network/transport_header (u16, as sk_buff's) cannot hold
    assert h.HEADER_MAX == np.iinfo(h.SKB_DTYPE["transport_header"]).max
    payload, nxt = ext_chain(count, tcp(5, 6, 0x02), 6)
    r = parse(eth(0x86DD, ipv6(nxt, payload)))
    end = 14 + 40 + count * 2048
    if count == 31:
        assert (r[0], r[5], r[7], r[12], r[13]) == (h.ST_FLOW, end, 6, 5, 6)
    else:
        assert (r[0], r[5], r[7], r[12], r[13]) == (h.ST_BADHDR, 0, 0, 0, 0)


@pytest.mark.parametrize("tags, l3, l4", [(16370, 65494, 65514), (16380, 65534, 0),
                                          (16381, 0, 0)])
def test_a_vlan_stack_past_the_records_offsets_is_a_bad_header(tags, l3, l4):
    # 16370 tags: the IPv4 header at 14 + 4 * 16370 = 65494, UDP at 65514, both fit; 16380:
    # UDP at 65554 does not; 16381: the IPv4 header at 65538 does not either
    frame = eth(0x0800, ipv4(17, udp(1, 2)), tags=((0x8100, 7),) * tags)
    r = parse(frame)
    assert (r[2], r[3], r[4], r[5]) == (7, 1, l3, l4)
    assert r[0] == (h.ST_FLOW if l4 else h.ST_BADHDR)


@pytest.mark.parametrize("frame, why", [
    (eth(0x0800, ipv6(17, udp(1, 2))), "an IPv6 header under ethertype 0x0800"),
    (eth(0x0800, ipv4(6, tcp(1, 2, 0), ihl=4)), "an IPv4 header of 16 bytes"),
    (eth(0x86DD, ipv4(6, tcp(1, 2, 0)) + bytes(40)), "an IPv4 header under 0x86DD"),
], ids=["ipv6-as-ipv4", "ipv4-of-16-bytes", "ipv4-as-ipv6"])
def test_a_bad_ip_header_is_its_own_status(frame, why):
    assert parse(frame)[0] == h.ST_BADHDR, why


@pytest.mark.parametrize("cut", [13, 14 + 19, 14 + 24 + 19, 14 + 20 + 19])
def test_a_frame_cut_in_a_header_is_truncated(cut):
    frame = eth(0x0800, ipv4(6, tcp(1, 2, 0), ihl=6))
    assert parse(frame[:cut])[0] == h.ST_TRUNC
    assert parse(frame)[0] == h.ST_FLOW


def test_a_non_first_fragment_and_other_protocols_make_no_flow():
    frag = parse(eth(0x0800, ipv4(6, tcp(1, 2, 0), frag=0x0010)))
    icmp = parse(eth(0x0800, ipv4(1, bytes(8))))
    assert (frag[0], frag[5], frag[12]) == (h.ST_OTHER, 0, 0)
    assert (icmp[0], icmp[7]) == (h.ST_OTHER, 1)
    assert parse(eth(0x0806, bytes(28)))[0] == h.ST_NONIP


@pytest.mark.parametrize("link, prefix", [
    (h._LINK_RAW, b""),
    (h._LINK_NULL, struct.pack("<I", 2)),
    (h._LINK_SLL, bytes(14) + struct.pack(">H", 0x0800)),
    (h._LINK_SLL2, struct.pack(">H", 0x0800) + bytes(18)),
])
def test_every_link_type_finds_the_ip_header(link, prefix):
    r = parse(prefix + ipv4(6, tcp(443, 5555, 0x02)), link=link)
    assert (r[0], r[4], r[5], r[12], r[13], r[14]) == (
        h.ST_FLOW, len(prefix), len(prefix) + 20, 443, 5555, 0x02)
