"""The packet-batch pipeline engine: an RX loop of @njit code over batches of packets.

It gives each packet an ``sk_buff``-like slab record and a kmalloc buffer, parses its headers in
@njit code and meters its flow.

All per-batch work runs in one jitted call per chunk of batches (:func:`_rx_chunk`);
the mode picks the numslab calls that allocate and free. Flows are bidirectional 5-tuples
(IP version, L4 protocol, both (address, port) endpoints; VLAN tags are not in the key).
Only TCP/UDP packets with a whole TCP/UDP header make flows; non-IP frames, other IP
protocols, non-first fragments, truncated headers and bad IP headers (the kernel's header
errors: a version not the link's, an IPv4 header below 20 bytes; and a header starting past
the record's 16-bit offsets, 64 KiB in) count but make none. An entry is
freed after a TCP packet with FIN or RST, or when idle for longer than the timeout (the
clock is the running maximum of packet timestamps; idle flows expire before each lookup).
A packet arriving after its flow was freed (the peer's FIN, the last ACK, a packet after a
pause) creates a new entry, and ``flows`` counts every entry ever created.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

import numslab.jit as nsj
from ..engine.layout import PG_LARGE
from ..engine.kmalloc import kmalloc_cache_name
from ..facade.allocator import SlabAllocator
from ..errors import CacheLeakError, InvalidArgumentError, OutOfMemoryError
from ..flags import (GFP_ATOMIC, SLAB_ARRAY_ALLOC_FULL_COUNT, SLAB_ARRAY_ALLOC_LOCAL,
                     SLAB_ARRAY_ALLOC_NEW, SLAB_ARRAY_ALLOC_PARTIAL)
from ..geometry import KMALLOC_MAX_CACHE_SIZE, KMALLOC_SIZES, kmalloc_cache_size
from .capture import Packets, _integer, jit
from .headers import (_FIN, _LINK_NONE, _LINKS, _RST, SKB_DTYPE, ST_FLOW, ST_NONIP, ST_OTHER,
                      ST_TRUNC, _memcpy, _parse)
from .rxrun import PacketColumns, RxRun
from .tablecheck import _check_run, _columns, _timeout_ns

__all__ = ["FLOW_DTYPE", "MODES", "SKB_DTYPE", "LeakError", "PipelineResult", "run_pipeline"]

#: The allocation modes, in the order ``--compare`` prints them.
MODES: tuple[str, ...] = ("single", "bulk", "local", "partial", "new")
_SINGLE, _BULK = 0, 1
_ARRAY_FLAGS = {"local": SLAB_ARRAY_ALLOC_LOCAL, "partial": SLAB_ARRAY_ALLOC_PARTIAL,
                "new": SLAB_ARRAY_ALLOC_NEW}

#: A flow table entry, from the ``flow_cache`` cache. Endpoint ``a`` is the smaller
#: (address, port) pair; IPv4 addresses are stored IPv4-mapped in ``*_lo``.
FLOW_DTYPE = np.dtype([
    ("a_hi", "<i8"), ("a_lo", "<i8"), ("b_hi", "<i8"), ("b_lo", "<i8"),
    ("first_ts", "<i8"), ("last_ts", "<i8"),   # clock at the first / latest packet
    ("packets", "<i8"), ("bytes", "<i8"),       # totals, both directions, wire bytes
    ("lru_prev", "<i8"), ("lru_next", "<i8"),   # idle list, least recently seen first
    ("id", "<i8"),                              # creation number, 0-based
    ("hash", "<u4"), ("a_port", "<u2"), ("b_port", "<u2"),
    ("vlan", "<u2"), ("proto", "u1"), ("ip_version", "u1"), ("tcp_flags", "u1"),
], align=True)

_CPU = 0
#: The RX path runs in softirq (NAPI), where nothing may sleep: every allocation of a packet's
#: record, buffer and flow entry is GFP_ATOMIC, as ``napi_alloc_skb`` and conntrack's are.
#: Under 7.0 such a request that finds the CPU's sheaves empty takes one object from the
#: slab layer; from 7.1 it refills a sheaf (``sheaves._may_refill``).
_GFP = GFP_ATOMIC

# counters and registers of one run (int64 array ``st``)
(S_PACKETS, S_BYTES, S_CAPBYTES, S_FLOWS, S_ACTIVE, S_MAX_ACTIVE, S_CLOSED, S_EXPIRED,
 S_IPV4, S_IPV6, S_TCP, S_UDP, S_VLAN, S_NONIP, S_OTHER, S_TRUNC, S_BADHDR, S_LARGE,
 S_BATCHES, S_HEAD, S_TAIL, S_NOW, S_STASH, S_ERR, S_NCOUNTERS) = range(25)
_COUNTER_NAMES = ("packets", "bytes", "captured_bytes", "flows", "active_flows",
                  "max_active_flows", "closed_flows", "expired_flows", "ipv4", "ipv6", "tcp",
                  "udp", "vlan", "non_ip", "other_ip", "truncated", "bad_header",
                  "large_buffers", "batches")
# workspace rows (int64 array ``ws[_W_ROWS, batch]``)
_W_SKB, _W_BUF, _W_GRP, _W_PERM, _W_CLS, _W_STASH, _W_DEAD, _W_ROWS = range(8)
_NCLS = len(KMALLOC_SIZES)
_C_LARGE, _C_NONE = _NCLS, _NCLS + 1          # extra size classes: > 8192 bytes, caplen 0
_E_OOM_SKB, _E_OOM_BUF, _E_OOM_FLOW = 1, 2, 3
_ERRORS = {_E_OOM_SKB: "packet records", _E_OOM_BUF: "packet buffers",
           _E_OOM_FLOW: "flow entries"}
_K1 = -7046029254386353131                     # 0x9E3779B97F4A7C15 as int64

@jit(inline="always")
def _mix(x, v):
    x = (x ^ v) * _K1
    return x ^ ((x >> 29) & 0x7FFFFFFFF)


# --------------------------------------------------------------------------- flow table
@jit
def _table_find(table, fv, h, ver, proto, ahi, alo, bhi, blo, ap, bp):
    """Slot of the flow with this key, or ``-1 - slot`` of the empty slot ending the probe.

    Open addressing, linear probing; ``table`` holds entry addresses, 0 = empty."""
    mask = table.size - 1
    i = h & mask
    while True:
        e = table[i]
        if e == 0:
            return -1 - i
        r = fv[e]
        if (r.hash == h and r.a_lo == alo and r.b_lo == blo and r.a_port == ap
                and r.b_port == bp and r.proto == proto and r.ip_version == ver
                and r.a_hi == ahi and r.b_hi == bhi):
            return i
        i = (i + 1) & mask


@jit
def _table_delete(table, fv, e):
    """Remove entry ``e`` with backward-shift deletion (no tombstones)."""
    mask = table.size - 1
    i = fv[e].hash & mask
    while table[i] != e:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        f = table[j]
        if f == 0:
            break
        k = fv[f].hash & mask
        if (k <= i or k > j) if i <= j else (k <= i and k > j):
            table[i] = f
            i = j
    table[i] = 0


@jit
def _table_rehash(new, table, fv):
    """Put the entries of ``table`` into the empty, larger table ``new``."""
    mask = new.size - 1
    for e in table:
        if e:
            i = fv[e].hash & mask
            while new[i]:
                i = (i + 1) & mask
            new[i] = e


def _with_room(table: np.ndarray, fv: np.ndarray, flows: int) -> np.ndarray:
    """``table``, or a larger one with its entries, at most half full with ``flows``."""
    if 2 * flows <= table.size:
        return table
    new = np.zeros(1 << (2 * flows - 1).bit_length(), np.int64)
    _table_rehash(new, table, fv)
    return new


@jit(inline="always")
def _lru_unlink(fv, st, e):
    p, n = fv[e].lru_prev, fv[e].lru_next
    if p:
        fv[p].lru_next = n
    else:
        st[S_HEAD] = n
    if n:
        fv[n].lru_prev = p
    else:
        st[S_TAIL] = p


@jit(inline="always")
def _lru_append(fv, st, e):
    t = st[S_TAIL]
    fv[e].lru_prev, fv[e].lru_next = t, 0
    if t:
        fv[t].lru_next = e
    else:
        st[S_HEAD] = e
    st[S_TAIL] = e


# --------------------------------------------------------------------------- allocation
@jit
def _alloc_objs(h, mode, aflags, cid, nr, out):
    """``nr`` objects of cache ``cid`` into ``out`` by ``mode``; the count allocated."""
    if nr <= 0:
        return 0
    if mode == _SINGLE:
        for j in range(nr):
            x = nsj.kmem_cache_alloc(h, cid, _CPU, _GFP)
            if x == 0:
                return j
            out[j] = x
        return nr
    if mode == _BULK:
        return nsj.kmem_cache_alloc_bulk(h, cid, nr, out, _CPU, _GFP)
    return nsj.kmem_cache_alloc_array(h, cid, nr, out, aflags, _CPU, _GFP)


@jit
def _free_objs(h, mode, cid, nr, objs):
    """Free ``objs[:nr]`` of cache ``cid`` by ``mode`` (``objs`` may be reordered)."""
    if nr <= 0:
        return
    if mode == _SINGLE:
        for j in range(nr):
            nsj.kmem_cache_free(h, cid, objs[j], _CPU)
    elif mode == _BULK:
        nsj.kmem_cache_free_bulk(h, cid, nr, objs, _CPU)
    else:
        nsj.kmem_cache_free_array(h, cid, nr, objs, _CPU)


@jit
def _alloc_buffers(h, run, caplen, i0, nb, bufs, grp, perm, kcls, cnt):
    """A kmalloc buffer of ``caplen`` bytes for packets ``i0..i0+nb`` into ``bufs[:nb]``.

    0 for an empty packet. By ``run``'s mode (:class:`~.rxrun.RxRun`); beyond ``single``,
    packets are grouped by kmalloc size class (``perm``, ``kcls``, ``cnt``: scratch) and each
    class is allocated with one batch call into ``grp``. Returns the buffers allocated (all in
    ``grp[:n]`` for a batch free), or ``-1 - n`` when memory ran out after ``n`` buffers (in
    ``grp[:n]``, to be freed)."""
    mode, aflags, km, cls_of = run.mode, run.aflags, run.km, run.cls_of
    if mode == _SINGLE:
        n = 0
        for k in range(nb):
            b = bufs[k] = nsj.kmalloc(h, caplen[i0 + k], _CPU, _GFP) if caplen[i0 + k] else 0
            if b:
                grp[n], n = b, n + 1
            elif caplen[i0 + k]:
                return -1 - n
        return n
    cnt[:] = 0
    for k in range(nb):
        c = kcls[k] = cls_of[min(caplen[i0 + k], KMALLOC_MAX_CACHE_SIZE + 1)]
        cnt[c] += 1
    s = 0
    for c in range(_C_NONE + 1):                       # counts -> start of each class
        s, cnt[c] = s + cnt[c], s
    for k in range(nb):
        c = kcls[k]
        perm[cnt[c]] = k
        cnt[c] += 1
    s = 0
    for c in range(_NCLS):                             # cnt[c] is now the end of class c
        nr = cnt[c] - s
        if nr:
            if mode == _BULK:
                got = nsj.kmem_cache_alloc_bulk(h, km[c], nr, grp[s:cnt[c]], _CPU, _GFP)
            else:
                got = nsj.kmem_cache_alloc_array(h, km[c], nr, grp[s:cnt[c]], aflags,
                                                  _CPU, _GFP)
            if got != nr:
                return -1 - (s + max(got, 0))
        s = cnt[c]
    for j in range(s, cnt[_C_LARGE]):                  # > 8192 bytes: whole pages
        b = nsj.kmalloc(h, caplen[i0 + perm[j]], _CPU, _GFP)
        if b == 0:
            return -1 - j
        grp[j] = b
    n = cnt[_C_LARGE]
    for j in range(nb):
        bufs[perm[j]] = grp[j] if j < n else 0
    return n


@jit
def _free_buffers(h, mode, n, grp):
    """Free the batch's ``n`` buffers ``grp[:n]``: one ``kfree`` each, or ``kfree_bulk``."""
    if mode == _SINGLE:
        for j in range(n):
            nsj.kfree(h, grp[j], _CPU)
    elif n:
        nsj.kfree_bulk(h, n, grp, _CPU)


@jit
def _drop_flow(h, mode, flow_cid, fv, table, st, e, dead, nd):
    """Take flow ``e`` out of the table and :func:`_retire_flow` it; return the new ``nd``."""
    _table_delete(table, fv, e)
    return _retire_flow(h, mode, flow_cid, fv, st, e, dead, nd)


@jit
def _retire_flow(h, mode, flow_cid, fv, st, e, dead, nd):
    """Take flow ``e`` off the idle list and free or queue it; return the new ``nd``.

    Freed at once (``single``) or queued in ``dead`` (freed in a batch when full or at the end of
    the batch)."""
    _lru_unlink(fv, st, e)
    st[S_ACTIVE] -= 1
    if mode == _SINGLE:
        nsj.kmem_cache_free(h, flow_cid, e, _CPU)
        return nd
    dead[nd], nd = e, nd + 1
    if nd == dead.size:
        _free_objs(h, mode, flow_cid, nd, dead)
        nd = 0
    return nd


# --------------------------------------------------------------------------- the RX loop
@jit
def _rx_chunk(h, run, pk, start, stop, table):
    """Run the RX loop of ``run`` (:class:`~.rxrun.RxRun`) over packets ``start..stop`` of ``pk``.

    ``pk`` (:class:`~.rxrun.PacketColumns`) in batches of ``run.batch``. Per batch: allocate the
    records and buffers, copy each packet into its buffer, fill its record from the parsed
    headers, meter its flow (expiring idle flows first), then free the buffers, records and
    dropped flows; on running out of memory stops with an error code in ``run.st[S_ERR]``.
    ``table`` (int64[2**k], flow entry addresses, 0: empty) must hold ``stop - start`` more
    flows at most half full (:func:`_with_room`, between two calls): a returned array is boxed
    through a call into Python, where a Ctrl-C raised SystemError ("returned a result with an
    exception set").
    """
    mode, aflags, skb_cid, flow_cid = run.mode, run.aflags, run.skb_cid, run.flow_cid
    skv, fv, batch, link, timeout, st, ws = run.skv, run.fv, run.batch, run.link, \
        run.timeout, run.st, run.ws
    data, offset, caplen, wirelen, ts = pk
    m8 = nsj.arena(h)
    skbs, bufs, grp, perm = ws[_W_SKB], ws[_W_BUF], ws[_W_GRP], ws[_W_PERM]
    kcls, stash, dead = ws[_W_CLS], ws[_W_STASH], ws[_W_DEAD]
    cnt = np.zeros(_C_NONE + 1, np.int64)
    i0 = start
    while i0 < stop:
        nb = min(batch, stop - i0)
        # out of memory: what this batch holds is freed (the flows at the end of the run)
        got = _alloc_objs(h, mode, aflags, skb_cid, nb, skbs)
        if got != nb:
            _free_objs(h, mode, skb_cid, got, skbs)
            st[S_ERR] = _E_OOM_SKB
            return 0
        nbuf = _alloc_buffers(h, run, caplen, i0, nb, bufs, grp, perm, kcls, cnt)
        if nbuf < 0:
            _free_buffers(h, mode, -1 - nbuf, grp)
            _free_objs(h, mode, skb_cid, nb, skbs)
            st[S_ERR] = _E_OOM_BUF
            return 0
        if mode != _SINGLE:              # top the flow stash up to one entry per packet
            ns = st[S_STASH]             # of this batch (not ``batch``: 3e6 of 3000 packets)
            if ns < nb:
                got = _alloc_objs(h, mode, aflags, flow_cid, nb - ns, stash[ns:])
                st[S_STASH] = ns + max(got, 0)
                if got != nb - ns:
                    _free_buffers(h, mode, nbuf, grp)
                    _free_objs(h, mode, skb_cid, nb, skbs)
                    st[S_ERR] = _E_OOM_FLOW
                    return 0
        nd = 0
        for k in range(nb):
            i = i0 + k
            s, b, cl, wl = skbs[k], bufs[k], caplen[i], wirelen[i]
            _memcpy(m8, b, data, offset[i], cl)
            now = st[S_NOW] = max(st[S_NOW], ts[i])
            while st[S_HEAD] and now - fv[st[S_HEAD]].last_ts > timeout:   # idle flows
                st[S_EXPIRED] += 1
                nd = _drop_flow(h, mode, flow_cid, fv, table, st, st[S_HEAD], dead, nd)
            (status, eth, tci, tagged, l3, l4, ver, proto, shi, slo, dhi, dlo, sport, dport,
             flags) = _parse(m8, b, cl, link)
            st[S_PACKETS] += 1
            st[S_BYTES] += wl
            st[S_CAPBYTES] += cl
            st[S_LARGE] += cl > KMALLOC_MAX_CACHE_SIZE
            st[S_VLAN] += tagged
            st[S_IPV4 if ver == 4 else S_IPV6] += ver != 0
            r = skv[s]
            r.data, r.tstamp, r.len, r.caplen = b, ts[i], wl, cl
            r.protocol, r.vlan_tci, r.network_header, r.transport_header = eth, tci, l3, l4
            r.ip_version, r.ip_proto, r.tcp_flags, r.status = ver, proto, flags, status
            r.sport, r.dport, r.flow, r.hash = sport, dport, 0, 0
            if status != ST_FLOW:
                st[S_NONIP if status == ST_NONIP else (S_OTHER if status == ST_OTHER else
                   (S_TRUNC if status == ST_TRUNC else S_BADHDR))] += 1
                continue
            st[S_TCP] += proto == 6
            st[S_UDP] += proto == 17
            if shi > dhi or (shi == dhi and (slo > dlo or (slo == dlo and sport > dport))):
                shi, slo, sport, dhi, dlo, dport = dhi, dlo, dport, shi, slo, sport
            x = _mix(_mix(_mix(_mix(_mix(0, shi), slo), dhi), dlo),
                     (sport << 24) | (dport << 8) | (proto << 3) | ver)
            hh = (x >> 32) & 0xFFFFFFFF
            slot = _table_find(table, fv, hh, ver, proto, shi, slo, dhi, dlo, sport, dport)
            if slot >= 0:
                e = table[slot]
                if e != st[S_TAIL]:
                    _lru_unlink(fv, st, e)
                    _lru_append(fv, st, e)
            else:
                if mode == _SINGLE:
                    e = nsj.kmem_cache_alloc(h, flow_cid, _CPU, _GFP)
                    if e == 0:
                        _free_buffers(h, mode, nbuf, grp)
                        _free_objs(h, mode, skb_cid, nb, skbs)
                        st[S_ERR] = _E_OOM_FLOW
                        return 0
                else:
                    st[S_STASH] -= 1
                    e = stash[st[S_STASH]]
                f = fv[e]
                f.a_hi, f.a_lo, f.b_hi, f.b_lo, f.a_port, f.b_port = shi, slo, dhi, dlo, \
                    sport, dport
                f.hash, f.proto, f.ip_version, f.vlan = hh, proto, ver, tci & 0xFFF
                f.first_ts, f.packets, f.bytes, f.tcp_flags = now, 0, 0, 0
                f.id = st[S_FLOWS]
                st[S_FLOWS] += 1
                st[S_ACTIVE] += 1
                st[S_MAX_ACTIVE] = max(st[S_MAX_ACTIVE], st[S_ACTIVE])
                table[-1 - slot] = e
                _lru_append(fv, st, e)
            f = fv[e]
            f.last_ts, f.tcp_flags = now, f.tcp_flags | flags
            f.packets += 1
            f.bytes += wl
            r.flow, r.hash = e, hh
            if proto == 6 and flags & (_FIN | _RST):
                st[S_CLOSED] += 1
                nd = _drop_flow(h, mode, flow_cid, fv, table, st, e, dead, nd)
        _free_buffers(h, mode, nbuf, grp)
        _free_objs(h, mode, skb_cid, nb, skbs)
        _free_objs(h, mode, flow_cid, nd, dead)
        st[S_BATCHES] += 1
        i0 += nb
    return 0


@jit
def _release_stash(h, mode, flow_cid, st, ws):
    """Free the stash of spare flow entries (end of run, before the report).

    Spares are no flows, and ``single`` has none."""
    _free_objs(h, mode, flow_cid, st[S_STASH], ws[_W_STASH])
    st[S_STASH] = 0


@jit
def _release_flows(h, mode, flow_cid, fv, st, ws):
    """Free every flow still on the idle list and the stash of spare entries.

    At the end of a run, or after an error. The flow table, dropped with the run, is not read:
    after a Ctrl-C it may be older than the flows (a chunk grew it and the interrupt came before
    the new one was kept), and deleting a newer flow from it probed for ever."""
    dead = ws[_W_DEAD]
    nd = 0
    while st[S_HEAD]:
        nd = _retire_flow(h, mode, flow_cid, fv, st, st[S_HEAD], dead, nd)
    _free_objs(h, mode, flow_cid, nd, dead)
    _release_stash(h, mode, flow_cid, st, ws)


# --------------------------------------------------------------------------- Python API
class LeakError(CacheLeakError):
    """Objects allocated by the pipeline were still live at the end of a run."""


@dataclass
class PipelineResult:
    """What one run counted and how fast it ran.

    ``bytes`` sums on-the-wire lengths; ``flows`` counts every flow entry ever created and
    ``active_flows`` those alive after the last packet. ``ns_per_packet``, ``pps`` and
    ``elapsed_s`` time the RX loop only (not setup, not the final release of the flows).
    ``counters`` holds every counter of the run (per protocol, VLAN, non-IP, other IP,
    truncated, flows closed by FIN/RST and expired, ...); ``caches`` gives, per cache used,
    its geometry, object counts after the last batch and its non-zero SLUB event counters
    of this run; ``slabinfo`` is the allocator's ``/proc/slabinfo`` text at that moment.
    """

    mode: str
    batch: int
    kernel: str
    packets: int
    bytes: int
    flows: int
    active_flows: int
    ns_per_packet: float
    pps: float
    batches: int
    elapsed_s: float
    counters: dict = field(default_factory=dict)
    caches: dict = field(default_factory=dict)
    slabinfo: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (without the slabinfo text)."""
        d = asdict(self)
        del d["slabinfo"]
        return d


def _class_table() -> np.ndarray:
    """kmalloc size class index of every captured length 0..8193 (8193: any larger)."""
    t = np.empty(KMALLOC_MAX_CACHE_SIZE + 2, np.int64)
    t[0], t[-1] = _C_NONE, _C_LARGE
    for s in range(1, KMALLOC_MAX_CACHE_SIZE + 1):
        t[s] = KMALLOC_SIZES.index(kmalloc_cache_size(s))
    return t


_CLS_OF = _class_table()
_MODE_NUM = {name: i for i, name in enumerate(MODES)}   # single 0, bulk 1, arrays 2..4


def _unique_name(sa: SlabAllocator, name: str) -> str:
    names, k, out = {c.name for c in sa.caches}, 1, name
    while out in names:
        k += 1
        out = f"{name}-{k}"
    return out


def _large_blocks(sa: SlabAllocator) -> int:
    """Large kmalloc blocks (> 8 KiB) currently allocated."""
    return int(np.count_nonzero(sa.state.pg_flags & PG_LARGE))


def _check_leaks(sa: SlabAllocator, ours: Sequence, kmalloc_before: dict[str, int],
                 large_before: int) -> None:
    """Raise :class:`LeakError` naming every cache whose live objects did not come back.

    A kmalloc cache's own sheaves are the allocator's, not the run's."""
    bad = [f"{c.name}: {c.live_objects} live object(s)" for c in ours if c.live_objects]
    held = {c.name: c.live_objects - c.sheaf_objects for c in sa.kmalloc_caches}
    bad += [f"{name}: {n - kmalloc_before[name]:+d} live object(s)"
            for name, n in held.items() if n != kmalloc_before[name]]
    if _large_blocks(sa) != large_before:
        bad.append(f"large kmalloc: {_large_blocks(sa) - large_before:+d} block(s)")
    if bad:
        raise LeakError("memory leak at the end of the run: " + "; ".join(bad))


def _cache_report(cache: Any, before: dict[str, int]) -> dict[str, Any]:
    stats = {k: v - before.get(k, 0) for k, v in cache.stats.items() if v != before.get(k, 0)}
    return {"object_size": cache.object_size, "slab_size": cache.slab_size,
            "objs_per_slab": cache.objs_per_slab, "order": cache.order,
            "objects": cache.objects, "total_objects": cache.total_objects,
            "slabs": cache.slabs, "live_objects": cache.live_objects, "stats": stats}


def run_pipeline(packets: Packets, mode: str = "bulk", batch: int = 64,
                 idle_timeout: float = 30.0, *, sa: SlabAllocator | None = None,
                 nr_cpus: int = 4, memory: int | str = "256M", kernel: str = "7.0",
                 progress: Callable[[int], Any] | None = None, chunk: int = 16384,
                 check_leaks: bool = True) -> PipelineResult:
    """Run the RX loop over ``packets`` in one allocation mode.

    Parameters
    ----------
    packets : Packets
        From :func:`numslab.net.read_capture` or :func:`numslab.net.generate_traffic`.
        Linktypes Ethernet (1), raw IP (12, 14, 101, 228, 229), Linux cooked (113, 276; VLAN
        tags after its header read as Ethernet's) and BSD loopback (0, 108) are parsed; with
        any other every packet is non-IP.
    mode : {'single', 'bulk', 'local', 'partial', 'new'}
        ``single``: one ``kmem_cache_alloc``/``kmalloc``/``kmem_cache_free``/``kfree``
        per object. ``bulk``: ``kmem_cache_alloc_bulk``/``kmem_cache_free_bulk`` for
        records and flow entries; buffers grouped by kmalloc class, allocated per class,
        freed with ``kfree_bulk``. ``local``/``partial``/``new``: as bulk, allocating with
        ``kmem_cache_alloc_array`` and SLAB_ARRAY_ALLOC_LOCAL/_PARTIAL/_NEW, each OR'ed
        with _FULL_COUNT, and freeing with ``kmem_cache_free_array``.
    batch : int
        Packets per batch.
    idle_timeout : float
        Seconds without a packet after which a flow entry is freed (``inf``: never).
    sa : SlabAllocator, optional
        Default: a fresh one with ``nr_cpus`` CPUs and ``memory`` per node, modelling SLUB
        generation ``kernel`` (``numslab.KERNELS``; a given ``sa`` keeps its own). The
        run makes its two caches in it and, with ``check_leaks``, destroys them at the end.
    progress : callable, optional
        Called after every ``chunk`` packets (one jitted call) with the packets processed.
    chunk : int
        Packets per jitted call (at least one batch), a positive integer.
    check_leaks : bool
        Raise :class:`LeakError` if a cache is not back to its live objects before the run.

    Raises
    ------
    LeakError, MemoryError (the arena ran out; the run is abandoned), ValueError
    numslab.WrongTypeError
        No packet table, a non-integer column, an ``sa`` or ``progress`` of a wrong type.
    """
    if mode not in MODES:
        raise InvalidArgumentError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise InvalidArgumentError(f"batch must be a positive integer, not {batch!r}")
    batch, timeout = int(batch), _timeout_ns(idle_timeout)
    _check_run(sa, progress, chunk)
    pk = _columns(packets)
    n = pk.offset.size
    _integer("the packet table's linktype", packets.linktype)
    link = _LINKS.get(int(packets.linktype), _LINK_NONE)
    if link == _LINK_NONE and n:
        warnings.warn(f"linktype {packets.linktype} is not parsed: every packet counts as "
                      "non-IP and no flows are made", stacklevel=2)
    sa = SlabAllocator(nr_cpus=nr_cpus, memory=memory, kernel=kernel) if sa is None else sa
    m = _MODE_NUM[mode]
    st = np.zeros(S_NCOUNTERS, np.int64)
    st[S_NOW] = np.iinfo(np.int64).min
    ws = np.zeros((_W_ROWS, max(1, min(batch, n))), np.int64)   # no batch holds more
    skb = sa.kmem_cache_create(_unique_name(sa, "skbuff_head_cache"), 0, dtype=SKB_DTYPE)
    flow = None
    try:
        flow = sa.kmem_cache_create(_unique_name(sa, "flow_cache"), 0, dtype=FLOW_DTYPE)
        km = np.array([sa.find_cache(kmalloc_cache_name(s)).id for s in KMALLOC_SIZES], np.int64)
        # no batch holds more than the input's packets: a ``batch`` past int64 (2**63, which
        # Python accepts) reached the compiled loop as an OverflowError / a Numba typing error
        run = RxRun(m, _ARRAY_FLAGS.get(mode, 0) | SLAB_ARRAY_ALLOC_FULL_COUNT, skb.id,
                    flow.id, km, _CLS_OF, skb.view, flow.view, min(batch, max(1, n)), link,
                    timeout, st, ws)
        return _run(sa, skb, flow, mode, batch, run, pk, progress, chunk, check_leaks)
    except BaseException:
        # out of memory, an error of ``progress`` (Ctrl-C): the caller's allocator gets
        # back what the run holds (each batch freed its own; the flows and spares here)
        if flow is not None:
            _release_flows(sa.handle, m, flow.id, flow.view, st, ws)
        for c in (skb, flow):
            if c is not None and not c.live_objects:
                sa.kmem_cache_destroy(c)
        raise


def _run(sa: SlabAllocator, skb: Any, flow: Any, mode: str, batch: int, run: RxRun,
         pk: PacketColumns, progress: Callable[[int], Any] | None, chunk: int,
         check_leaks: bool) -> PipelineResult:
    """:func:`run_pipeline` once its caches are made and its ``run`` set up."""
    n = pk.offset.size
    kmalloc_before = {c.name: c.live_objects - c.sheaf_objects for c in sa.kmalloc_caches}
    stats_before = {c.name: c.stats for c in sa.kmalloc_caches}
    large_before = _large_blocks(sa)
    h, fv, st, ws, m = sa.handle, run.fv, run.st, run.ws, run.mode
    table = np.zeros(1024, np.int64)        # the flow table, grown by the run
    _rx_chunk(h, run, pk, 0, 0, table)      # compile
    step = max(1, chunk // run.batch) * run.batch
    t0 = time.perf_counter()
    for start in range(0, n, step):
        stop = min(n, start + step)
        table = _with_room(table, fv, int(st[S_ACTIVE]) + stop - start)
        _rx_chunk(h, run, pk, start, stop, table)
        if st[S_ERR]:
            raise OutOfMemoryError(f"the allocator ran out of memory for "
                                   f"{_ERRORS[int(st[S_ERR])]} after {int(st[S_PACKETS])} "
                                   f"packets; give it more memory")
        if progress is not None:
            progress(stop - start)
    elapsed = time.perf_counter() - t0
    _release_stash(h, m, flow.id, st, ws)
    slabinfo = sa.slabinfo()
    caches = {c.name: _cache_report(c, stats_before.get(c.name, {}))
              for c in (skb, flow, *sa.kmalloc_caches)}
    caches = {k: v for k, v in caches.items() if v["stats"] or k in (skb.name, flow.name)}
    counters = {name: int(st[i]) for i, name in enumerate(_COUNTER_NAMES)}
    _release_flows(h, m, flow.id, fv, st, ws)
    if check_leaks:
        _check_leaks(sa, (skb, flow), kmalloc_before, large_before)
        sa.kmem_cache_destroy(skb)
        sa.kmem_cache_destroy(flow)
    return PipelineResult(
        mode=mode, batch=batch, kernel=sa.kernel, packets=n, bytes=counters["bytes"],
        flows=counters["flows"],
        active_flows=counters["active_flows"],
        ns_per_packet=elapsed * 1e9 / n if n else 0.0, pps=n / elapsed if elapsed else 0.0,
        batches=counters["batches"], elapsed_s=elapsed, counters=counters, caches=caches,
        slabinfo=slabinfo)
