"""Packet headers in @njit code: the link types, the ``sk_buff``-like record, the parse.

:func:`_parse` reads a frame's link, IP and TCP/UDP headers as the kernel's RX path checks them
and says what it found (an ``ST_*`` status); the pipeline's RX loop (``pipeline``) calls it.
"""
from __future__ import annotations

import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

from .capture import jit

__all__ = ["SKB_DTYPE"]

#: The ``sk_buff``-like packet record (cache ``skbuff_head_cache``): buffer address (0 for
#: an empty packet), timestamp (ns), flow entry address (0: none), wire and captured
#: length, flow hash, ethertype after VLAN tags, outer VLAN TCI, offsets of the IP and
#: TCP/UDP headers in the buffer, ports, IP version and protocol, TCP flags, ST_* status.
SKB_DTYPE = np.dtype([
    ("data", "<i8"), ("tstamp", "<i8"), ("flow", "<i8"),
    ("len", "<u4"), ("caplen", "<u4"), ("hash", "<u4"), ("protocol", "<u2"),
    ("vlan_tci", "<u2"), ("network_header", "<u2"), ("transport_header", "<u2"),
    ("sport", "<u2"), ("dport", "<u2"),
    ("ip_version", "u1"), ("ip_proto", "u1"), ("tcp_flags", "u1"), ("status", "u1"),
], align=True)

#: What :func:`_parse` found: not IP, an IP protocol without flows (or a non-first
#: fragment), a TCP/UDP flow, a header cut short, a bad IP header (``ip_rcv``'s drop; also a
#: header starting past :data:`HEADER_MAX`, which the record's 16-bit offsets cannot name).
ST_NONIP, ST_OTHER, ST_FLOW, ST_TRUNC, ST_BADHDR = 0, 1, 2, 3, 4
_LINK_ETH, _LINK_RAW, _LINK_SLL, _LINK_SLL2, _LINK_NULL, _LINK_NONE = range(6)
_LINKS = {1: _LINK_ETH, 12: _LINK_RAW, 14: _LINK_RAW, 101: _LINK_RAW, 228: _LINK_RAW,
          229: _LINK_RAW, 113: _LINK_SLL, 276: _LINK_SLL2, 0: _LINK_NULL,
          108: _LINK_NULL}
_FIN, _RST = 0x01, 0x04
#: The last offset ``network_header`` and ``transport_header`` hold (``sk_buff``'s are u16 too).
HEADER_MAX = 0xFFFF


@intrinsic
def _memcpy(typingctx, dst, doff, src, soff, n):
    """``dst[doff:doff + n] = src[soff:soff + n]`` as one ``llvm.memcpy``.

    On uint8 arrays, bounds not checked: Numba's slice assignment is an element loop, ~4x
    slower here."""
    def codegen(context, builder, sig, args):
        d, do, s, so, nn = args
        da = context.make_array(sig.args[0])(context, builder, d)
        sa = context.make_array(sig.args[2])(context, builder, s)
        cgutils.raw_memcpy(builder, builder.gep(da.data, [do]), builder.gep(sa.data, [so]),
                           nn, 1)
        return context.get_dummy_value()
    return types.void(dst, types.int64, src, types.int64, types.int64), codegen


@jit(inline="always")
def _be16(m, p):
    return (np.int64(m[p]) << 8) | np.int64(m[p + 1])


@jit(inline="always")
def _be32(m, p):
    return (_be16(m, p) << 16) | _be16(m, p + 2)


@jit(inline="always")
def _be64(m, p):
    return (_be32(m, p) << 32) | _be32(m, p + 4)


@jit
def _parse(m, p, n, link):
    """Parse the frame of ``n`` bytes at ``m[p:]`` (link layer ``link``).

    Returns ``(status, ethertype, vlan_tci, tagged, l3, l4, version, proto, src_hi,
    src_lo, dst_hi, dst_lo, sport, dport, tcp_flags)``; offsets are relative to ``p``.
    """
    eth = tci = tagged = l3 = l4 = ver = proto = 0
    shi = slo = dhi = dlo = sport = dport = flags = 0
    trunc = (ST_TRUNC, eth, tci, tagged, l3, l4, ver, proto, shi, slo, dhi, dlo, sport,
             dport, flags)
    if link == _LINK_ETH or link == _LINK_SLL or link == _LINK_SLL2:   # type at 12 / 14 / 0;
        l3 = 14 if link == _LINK_ETH else (16 if link == _LINK_SLL else 20)  # a cooked frame's
        if n < l3:                      # VLAN tags follow it as Ethernet's (libpcap puts them
            return trunc                # back in Linux cooked captures; tshark reads them)
        eth = _be16(m, p + (12 if link == _LINK_ETH else (14 if link == _LINK_SLL else 0)))
        while eth == 0x8100 or eth == 0x88A8 or eth == 0x9100:   # 802.1Q / QinQ tags
            if not tagged:              # a tagged frame, however short (tcpdump's "vlan")
                tagged = 1
                tci = _be16(m, p + l3) if n >= l3 + 2 else 0
            if n < l3 + 4:
                return (ST_TRUNC, eth, tci, tagged, l3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            eth, l3 = _be16(m, p + l3 + 2), l3 + 4
        # a frame cut further on keeps its tag (it lost it: 1 of 3 cut tagged frames counted)
        trunc = (ST_TRUNC, eth, tci, tagged, l3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    elif link == _LINK_RAW:
        if n < 1:
            return trunc
        v = m[p] >> 4
        eth = 0x0800 if v == 4 else (0x86DD if v == 6 else 0)
    elif link == _LINK_NULL:
        if n < 4:
            return trunc
        fam, l3 = np.int64(m[p]) | np.int64(m[p + 3]), 4   # host byte order: one end is 0
        eth = 0x0800 if fam == 2 else (0x86DD if fam == 24 or fam == 28 or fam == 30 else 0)
    if l3 > HEADER_MAX:                 # (a stack of some 16,000 VLAN tags)
        return (ST_BADHDR, eth, tci, tagged, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    q = p + l3
    # no cut: a version not the link's (IPv6 under 0x0800), an IPv4 header below 20 bytes
    bad = (ST_BADHDR, eth, tci, tagged, l3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # (ip_rcv's drop)
    if eth == 0x0800:
        if n < l3 + 20:
            return trunc
        ihl = (m[q] & 15) * 4
        if m[q] >> 4 != 4 or ihl < 20 or n < l3 + ihl:
            return bad if m[q] >> 4 != 4 or ihl < 20 else trunc
        ver, proto = 4, np.int64(m[q + 9])
        shi, slo = 0, 0xFFFF00000000 | _be32(m, q + 12)
        dhi, dlo = 0, 0xFFFF00000000 | _be32(m, q + 16)
        l4 = l3 + ihl
        if _be16(m, q + 6) & 0x1FFF:                 # a non-first fragment: no L4 header
            proto = -1
    elif eth == 0x86DD:
        if n < l3 + 40 or m[q] >> 4 != 6:
            return trunc if n < l3 + 40 else bad
        ver, proto = 6, np.int64(m[q + 6])
        shi, slo, dhi, dlo = _be64(m, q + 8), _be64(m, q + 16), _be64(m, q + 24), \
            _be64(m, q + 32)
        l4 = l3 + 40
        while True:     # extension headers, all (RFC 8200: no limit; 8 bytes each at least)
            if proto == 0 or proto == 43 or proto == 60 or proto == 51:
                if n < l4 + 2:          # (the IPv6 header is whole: an IPv6 packet, cut)
                    proto = -2
                    break
                hl = (m[p + l4 + 1] + 2) * 4 if proto == 51 else (m[p + l4 + 1] + 1) * 8
                proto = np.int64(m[p + l4])
                l4 += hl
            elif proto == 44:                        # fragment header
                if n < l4 + 8:
                    proto = -2
                    break
                frag = _be16(m, p + l4 + 2) & 0xFFF8
                proto = np.int64(m[p + l4])
                l4 += 8
                if frag:
                    proto = -1
                    break
            else:
                break
    else:
        return (ST_NONIP, eth, tci, tagged, l3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    r, status = p + l4, ST_FLOW
    if l4 > HEADER_MAX:                             # (thousands of extension headers)
        status, proto, l4 = ST_BADHDR, 0, 0
    elif proto == -2:                               # cut in an IPv6 extension header
        status, proto, l4 = ST_TRUNC, 0, 0
    elif proto != 6 and proto != 17:
        status, proto, l4 = ST_OTHER, max(proto, 0), 0
    elif n < l4 + (20 if proto == 6 else 8):
        status, l4 = ST_TRUNC, 0
    else:
        sport, dport = _be16(m, r), _be16(m, r + 2)
        flags = np.int64(m[r + 13]) if proto == 6 else 0
    return (status, eth, tci, tagged, l3, l4, ver, proto, shi, slo, dhi, dlo, sport, dport,
            flags)
