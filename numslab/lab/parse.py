"""The trace reader's compiled kernels: a parallel scan of chunks, then interning in trace order.

A scan of each chunk's lines into a struct of arrays (run in parallel), then in trace order the
interning of cache names and pointers (dense ids).

:func:`scan_chunk` reads one chunk of the text and touches nothing shared, so chunks are
scanned by worker threads; :func:`intern_rows` appends each chunk's events in order, giving
cache rows and pointer ids from open-addressing tables that persist from one chunk to the
next. The byte loops index a ``uint8`` array directly: no Python runs per line.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .compiled import lab_jit
from .fixed import (EV_BAD, EV_CACHE_ALLOC, EV_CACHE_FREE, EV_KFREE, EV_KMALLOC, EV_LOST, HEX,
                    EV_OTHER, EV_OWN, after_last_colon, data_address, delim, fixed_fields,
                    gfp_slot, gfp_symbolic, load1p, load8p, prefetch, skip_spaces,
                    tracefs_event, tracefs_header, word_hash)

# ---- rows that are not a cache (``row`` of an event) ------------------------------------------
ROW_LARGE = -1        #: a kmalloc above the largest kmalloc cache: whole pages
ROW_ZERO = -2         #: kmalloc(0): ZERO_SIZE_PTR, nothing allocated
ROW_FAILED = -3       #: the traced allocation returned NULL
ROW_NULL = -4         #: free of NULL
ROW_ZERO_PTR = -5     #: free of ZERO_SIZE_PTR
ROW_NONE = -6         #: not an allocation or free

# ---- the state vector ``sv`` -------------------------------------------------------------------
# (SV_FAST: the rows of a chunk read by the fast path)
(SV_ROWS, SV_LINE, SV_NNAMES, SV_NPIDS, SV_NAMEBYTES, SV_BADLINE, SV_ERR, SV_FAST,
 SV_NCOLS) = range(9)
# statuses of scan_chunk and intern_rows
ST_DONE, ST_ROWS, ST_PIDS, ST_NAMES, ST_ERROR = 0, 1, 2, 3, 4
# error codes (a field's own where one is to blame)
(ERR_NONE, ERR_NO_TIMESTAMP, ERR_NO_CPU, ERR_LONG, ERR_BAD_CPU, ERR_BAD_PTR, ERR_BAD_REQ,
 ERR_BAD_ALLOC, ERR_BAD_GFP, ERR_BAD_NODE, ERR_NO_PTR, ERR_NO_NAME, ERR_NO_ALLOC,
 ERR_REQ_PAST_ALLOC, ERR_NO_GFP) = range(15)
_UNSIGNED = "not a number, negative or past its int32 column"
ERR_TEXT = {ERR_NO_TIMESTAMP: "no 'seconds.micros:' timestamp followed by an event name",
            ERR_NO_CPU: "no '[cpu]' field",
            ERR_LONG: "a line longer than the read buffer",
            ERR_BAD_CPU: "its '[cpu]' has more than 9 digits (no CPU number has)",
            ERR_BAD_PTR: "its ptr= is not at most 16 hex digits or (null)",
            ERR_BAD_REQ: f"its bytes_req= is {_UNSIGNED}",
            ERR_BAD_ALLOC: f"its bytes_alloc= is {_UNSIGNED}",
            ERR_BAD_GFP: "its gfp_flags= is not a number of 32 bits or '|'-separated flag names "
                         "the kernel prints (numslab.lab.trace.GFP_NAMES)",
            ERR_BAD_NODE: "its node= is not a number of an int32",
            ERR_NO_PTR: "a kmem event without its ptr= field",
            ERR_NO_NAME: "a kmem_cache event without its name= field, or with an empty one",
            ERR_NO_ALLOC: "an allocation without its bytes_alloc= field",
            ERR_REQ_PAST_ALLOC: "its bytes_req= is larger than its bytes_alloc= (no kernel "
                                "allocates fewer bytes than were asked for)",
            ERR_NO_GFP: "an allocation without its gfp_flags= field (a line cut short?)"}

#: the kmalloc size classes (a kmalloc event's cache is the first that holds its bytes_req, as
#: the kernel's ``kmalloc_slab`` picks it; bytes_alloc is that class on a kernel without
#: slab_debug, the cache's larger ``s->size`` with it, or pages)
KM_SIZES = np.array([8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192], np.int64)
KM_MAX = 8192
#: the kmalloc class (index into KM_SIZES) of ``1 <= nbytes <= KM_MAX``, by ``(nbytes + 7) >> 3``
KM_CLASS = np.searchsorted(KM_SIZES, 8 * np.arange(KM_MAX // 8 + 1)).astype(np.int8)
# gfp bits deciding the kmalloc type (numslab's values, as include/linux/gfp_types.h)
_DMA, _RECLAIMABLE, _ACCOUNT = 0x01, 0x10, 0x400000
ZERO_SIZE_PTR = 16
NAME_MAX_ROWS = 4096
#: rows ahead whose pointer-table slot :func:`intern_rows` prefetches
PREFETCH = 8


class ChunkRows(NamedTuple):
    """The rows :func:`scan_chunk` makes of one chunk of text: a struct of arrays of ``cap`` rows.

    One row per line that is not blank, a ``#`` comment or trace-cmd's ``cpus=``; rows
    ``[:sv[SV_ROWS]]`` are filled, the rest is room (``trace._Chunk`` doubles every array when
    :func:`scan_chunk` returns ``ST_ROWS``). :func:`intern_rows` reads ``kind``, ``ptr``,
    ``req``, ``alloc``, ``gfp`` and the name's ``nm0``, ``nm1``, ``nh``.

    Attributes
    ----------
    kind : numpy.ndarray
        int8[cap], ``EV_*`` (``EV_BAD``: a malformed line kept under ``skip_bad``).
    line : numpy.ndarray
        int32[cap], the 1-based line number within the chunk.
    cpu : numpy.ndarray
        int32[cap], the traced CPU (-1: none, as on a lost-events line or a bad one).
    ts : numpy.ndarray
        float64[cap], the timestamp in seconds (0.0: none).
    ptr : numpy.ndarray
        uint64[cap], the ``ptr`` field (0: none, or NULL).
    req, alloc : numpy.ndarray
        int32[cap], ``bytes_req`` and ``bytes_alloc`` (-1: absent).
    gfp : numpy.ndarray
        int32[cap], ``gfp_flags`` as numslab's ``__GFP_*`` bits (0: absent).
    node : numpy.ndarray
        int32[cap], the ``node`` field (-1: any, or absent).
    nm0, nm1 : numpy.ndarray
        int32[cap], the ``name=`` value's span ``nm0:nm1`` in the chunk's text (-1: none).
    nh : numpy.ndarray
        uint64[cap], the name's hash (:func:`~numslab.lab.fixed.word_hash`; 0: none).
    """

    kind: np.ndarray
    line: np.ndarray
    cpu: np.ndarray
    ts: np.ndarray
    ptr: np.ndarray
    req: np.ndarray
    alloc: np.ndarray
    gfp: np.ndarray
    node: np.ndarray
    nm0: np.ndarray
    nm1: np.ndarray
    nh: np.ndarray


class GfpTables(NamedTuple):
    """How :func:`scan_chunk` turns a symbolic ``gfp_flags`` value into bits.

    Attributes
    ----------
    keys, bits : numpy.ndarray
        uint64[G] and int64[G]: the sorted FNV-1a hashes of the flag names and their
        ``__GFP_*`` bits (``trace.GFP_HASH``, ``trace.GFP_VALUE``; read only).
    cache_keys, cache_vals : numpy.ndarray
        uint64[GFP_CACHE] and int64[GFP_CACHE]: the chunk's own cache of whole values, by
        their hash in slot ``fixed.gfp_slot(hash)`` (0: an empty slot).
    """

    keys: np.ndarray
    bits: np.ndarray
    cache_keys: np.ndarray
    cache_vals: np.ndarray


class InternTables(NamedTuple):
    """The open-addressing tables of one parse that :func:`intern_rows` keeps from chunk to chunk.

    The name table gives each cache name or kmalloc class a row, in order of first appearance
    (``sv[SV_NNAMES]`` rows, ``sv[SV_NAMEBYTES]`` bytes of names); the pointer table a dense
    id to each pointer (``sv[SV_NPIDS]`` ids). ``trace._Reader`` owns them and doubles the
    pointer table when :func:`intern_rows` returns ``ST_PIDS``.

    Attributes
    ----------
    nt_keys, nt_vals : numpy.ndarray
        uint64[T] and int32[T], ``T`` a power of two: a name's hash and its row (key 0:
        an empty slot).
    name_bytes : numpy.ndarray
        uint8[B], the names' bytes one after another.
    name_off : numpy.ndarray
        int64[NAME_MAX_ROWS + 1]: row ``v``'s name is ``name_bytes[name_off[v]:name_off[v+1]]``.
    name_kind : numpy.ndarray
        int32[NAME_MAX_ROWS]: 0 for a named cache, ``1 + key`` for a kmalloc row
        (:func:`_kmalloc_key`).
    name_size : numpy.ndarray
        int64[NAME_MAX_ROWS], the largest ``bytes_alloc`` of a named cache's allocations (0:
        none yet).
    km_row : numpy.ndarray
        int32[64], the row of each kmalloc key (-1: not seen yet).
    ptab : numpy.ndarray
        uint64[2 * P], ``P`` a power of two: (pointer, id) pairs side by side (pointer 0:
        an empty slot), filled to at most 3/4.
    pid_zero : numpy.ndarray
        uint8[3 * P // 4 + 1], per pointer id: 1 if it was last a ``kmalloc(0)``'s
        ``ZERO_SIZE_PTR``, else 0.
    """

    nt_keys: np.ndarray
    nt_vals: np.ndarray
    name_bytes: np.ndarray
    name_off: np.ndarray
    name_kind: np.ndarray
    name_size: np.ndarray
    km_row: np.ndarray
    ptab: np.ndarray
    pid_zero: np.ndarray



@lab_jit(nogil=True, inline=True)
def _slot(key, mask):
    """Home slot of a 64-bit key in a power-of-two table."""
    return np.int64((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) & mask


@lab_jit()
def pid_rehash(old, new):
    """Move every pointer of the old table into the (larger, empty) new one."""
    mask = (new.shape[0] >> 1) - 1
    for i in range(old.shape[0] >> 1):
        key = old[2 * i]
        if key != 0:
            s = _slot(key, mask)
            while new[2 * s] != 0:
                s = (s + 1) & mask
            new[2 * s] = key
            new[2 * s + 1] = old[2 * i + 1]


@lab_jit(nogil=True)
def _name_add(buf, a, b, h, s, nt_keys, nt_vals, name_bytes, name_off, name_kind, sv):
    """Add the cache named ``buf[a:b]`` (hash ``h``) at the empty slot ``s`` of the name table.

    Returns its row, or -1 if the table is full (out of line: once per name)."""
    v = sv[SV_NNAMES]
    nb = sv[SV_NAMEBYTES]
    if v >= name_kind.shape[0] or nb + (b - a) > name_bytes.shape[0]:
        return -1
    for i in range(a, b):
        name_bytes[nb + i - a] = buf[i]
    name_off[v] = nb
    name_off[v + 1] = nb + (b - a)
    name_kind[v] = 0
    nt_keys[s] = h
    nt_vals[s] = v
    sv[SV_NNAMES] = v + 1
    sv[SV_NAMEBYTES] = nb + (b - a)
    return v


@lab_jit(nogil=True, inline=True)
def _kmalloc_key(nbytes, gfp):
    """``kmalloc_type * 16 + class`` of a ``nbytes``-byte kmalloc under ``gfp``.

    ``kmalloc_type``: DMA, then reclaimable, then accounted."""
    cls = 0
    if nbytes > 0:
        cls = KM_CLASS[(nbytes + 7) >> 3]
    t = 0
    if gfp & _DMA:
        t = 3
    elif gfp & _RECLAIMABLE:
        t = 2
    elif gfp & _ACCOUNT:
        t = 1
    return t * 16 + cls


@lab_jit(nogil=True)
def _kmalloc_add(key, km_row, name_off, name_kind, sv):
    """Add the kmalloc row of ``key`` (:func:`_kmalloc_key`): its row, or -1 if full."""
    r = sv[SV_NNAMES]
    if r >= name_kind.shape[0]:
        return -1
    name_off[r + 1] = name_off[r]
    name_kind[r] = 1 + key
    km_row[key] = r
    sv[SV_NNAMES] = r + 1
    return r


#: The kmem events' names, as byte tuples (the general walk compares every byte).
_N_KFREE = tuple(b"kfree")
_N_KMALLOC = tuple(b"kmalloc")
_N_KMALLOC_NODE = tuple(b"kmalloc_node")
_N_CACHE_FREE = tuple(b"kmem_cache_free")
_N_CACHE_ALLOC = tuple(b"kmem_cache_alloc")
_N_CACHE_ALLOC_NODE = tuple(b"kmem_cache_alloc_node")


@lab_jit(nogil=True, inline=True)
def _named(t, n, name):
    """Whether the ``n`` bytes at ``t`` are ``name`` (a tuple of byte values)."""
    if n != len(name):
        return False
    for k in range(n):
        if load1p(t + k) != name[k]:
            return False
    return True


@lab_jit(nogil=True, inline=True)
def _event(bp, a, b):
    """The kmem event named by bytes ``a:b`` of the text at ``bp`` (``EV_*``), or EV_OTHER.

    Every byte is compared: an event that shares a kmem event's length and a few of its letters,
    ``kmem_crazy_free``, was read as that event."""
    n = b - a
    t = bp + a
    if n < 5 or load1p(t) != 107:                                    # 'k'
        return EV_OTHER
    if _named(t, n, _N_KFREE):
        return EV_KFREE
    if _named(t, n, _N_KMALLOC) or _named(t, n, _N_KMALLOC_NODE):
        return EV_KMALLOC
    if _named(t, n, _N_CACHE_FREE):
        return EV_CACHE_FREE
    if _named(t, n, _N_CACHE_ALLOC) or _named(t, n, _N_CACHE_ALLOC_NODE):
        return EV_CACHE_ALLOC
    return EV_OTHER


def _word(text: bytes) -> np.uint64:
    """Eight bytes as :func:`~numslab.lab.fixed.load8p` reads them (little-endian)."""
    return np.uint64(int.from_bytes(text, "little"))


_W_ALLOC_SL, _W_AB_OBJ_E = _word(b"alloc_sl"), _word(b"ab_obj_e")      # alloc_slab_obj_exts
_W_ALLOC_EM, _W_PTY_SHEA = _word(b"alloc_em"), _word(b"pty_shea")      # alloc_empty_sheaf
_W___ALLOC, _W_EMPTY_SH = _word(b"__alloc_"), _word(b"empty_sh")       # __alloc_empty_sheaf
_W_INIT_KME, _W_M_CACHE_ = _word(b"init_kme"), _word(b"m_cache_")      # init_kmem_cache_nodes
_W_CACHE_RA, _W_NDOM_SEQ = _word(b"cache_ra"), _word(b"ndom_seq")      # cache_random_seq_create


@lab_jit(nogil=True, inline=True)
def _ident(c):
    """Whether byte ``c`` may continue a C identifier."""
    return (48 <= c <= 57) | (65 <= c <= 90) | (97 <= c <= 122) | (c == 95)


@lab_jit(nogil=True)
def _own_site(bp, v):
    """Whether the ``call_site`` value at ``bp + v`` names one of the slab allocator's kmallocs.

    Its own (:data:`~numslab.lab.fixed.EV_OWN`); the name whole (``+0x..`` or the end after it).
    The buffer's slack covers the 24 bytes read."""
    w0, w1 = load8p(bp + v), load8p(bp + v + 8)
    if w0 == _W_ALLOC_SL and w1 == _W_AB_OBJ_E:
        return load1p(bp + v + 16) == 120 and load1p(bp + v + 17) == 116 and \
            load1p(bp + v + 18) == 115 and not _ident(load1p(bp + v + 19))     # "xts"
    if w0 == _W_ALLOC_EM and w1 == _W_PTY_SHEA:
        return load1p(bp + v + 16) == 102 and not _ident(load1p(bp + v + 17))  # "f"
    if w0 == _W___ALLOC and w1 == _W_EMPTY_SH:
        return load1p(bp + v + 16) == 101 and load1p(bp + v + 17) == 97 and \
            load1p(bp + v + 18) == 102 and not _ident(load1p(bp + v + 19))     # "eaf"
    if w0 == _W_INIT_KME and w1 == _W_M_CACHE_:         # a new cache's barns (kmalloc_node)
        return load1p(bp + v + 16) == 110 and load1p(bp + v + 17) == 111 and \
            load1p(bp + v + 18) == 100 and load1p(bp + v + 19) == 101 and \
            load1p(bp + v + 20) == 115 and not _ident(load1p(bp + v + 21))     # "nodes"
    if w0 == _W_CACHE_RA and w1 == _W_NDOM_SEQ:         # a new cache's s->random_seq
        return load1p(bp + v + 16) == 95 and load1p(bp + v + 17) == 99 and \
            load1p(bp + v + 18) == 114 and load1p(bp + v + 19) == 101 and \
            load1p(bp + v + 20) == 97 and load1p(bp + v + 21) == 116 and \
            load1p(bp + v + 22) == 101 and not _ident(load1p(bp + v + 23))     # "_create"
    return False


@lab_jit(nogil=True)
def scan_chunk(buf, n, skip_bad, fast_path, gfpt, sv, rows):
    """Stage one: parse the lines of ``buf[:n]`` into the chunk's row arrays ``rows``.

    No shared state: chunks are scanned in parallel. ``buf[n - 1]`` must be a newline, so that no
    scan inside a line needs a bound; the buffer keeps 64 bytes of slack after it. ``rows``
    (:class:`ChunkRows`) is filled from row ``sv[SV_ROWS]``, line numbers counted from
    ``sv[SV_LINE]``; symbolic ``gfp_flags`` values are read and cached by ``gfpt``
    (:class:`GfpTables`); :func:`intern_rows` then gives the cache rows and pointer ids. With
    ``fast_path`` a kmem event line in tracefs's layout is read at fixed places
    (:func:`~numslab.lab.fixed.tracefs_event`, :func:`~numslab.lab.fixed.fixed_fields`), any
    other line by the general token walk (``sv[SV_FAST]`` counts the former); without it (tests)
    every line is walked: both give the same rows. Returns ``(consumed bytes, status)``:
    ``ST_DONE``, ``ST_ROWS`` (grow the arrays and call again on the rest), or ``ST_ERROR``
    (``sv[SV_BADLINE]``, ``sv[SV_ERR]``: the line and its ``ERR_*``)."""
    kind, line, cpu, ts, ptr, req, alloc, gfp, node, nm0s, nm1s, nhs = rows
    gkeys, gvals, gc_keys, gc_vals = gfpt
    bp = data_address(buf)
    pos = 0
    cap = kind.shape[0]
    nrows = sv[SV_ROWS]
    nline = sv[SV_LINE]
    nfast = 0
    while pos < n:
        if nrows >= cap:
            sv[SV_ROWS] = nrows
            sv[SV_LINE] = nline
            sv[SV_FAST] += nfast
            return pos, ST_ROWS
        r = nrows
        q = skip_spaces(bp, pos)
        c0 = buf[q]
        # blank, '#' comment, trace-cmd's "cpus=": no row
        if c0 == 10 or c0 == 13 or c0 == 35 or (
                c0 == 99 and buf[q + 1] == 112 and buf[q + 2] == 117
                and buf[q + 3] == 115 and buf[q + 4] == 61):
            while buf[q] != 10:
                q += 1
            nline += 1
            pos = q + 1
            continue
        ln = nline + 1
        lost = c0 == 67 and buf[q + 1] == 80 and buf[q + 2] == 85 and buf[q + 3] == 58
        if fast_path and not lost:
            # the fast path: a kmem event in tracefs's layout, every field at its place
            c, tsv, ev, e = tracefs_event(bp, pos)
            if c >= 0:
                fast, qf, pv, rq, al, g0, ge, gh, nd, n0, n1, h = fixed_fields(
                    bp, e, ev == EV_CACHE_ALLOC or ev == EV_CACHE_FREE, ev <= EV_KMALLOC)
                gf = 0
                if fast and g0 >= 0:                              # the chunk's gfp cache
                    gs = gfp_slot(gh)
                    if gc_keys[gs] == gh:
                        gf = gc_vals[gs]
                    else:
                        gf, _ = gfp_symbolic(bp, g0, ge, gh, False, gkeys, gvals, gc_keys,
                                             gc_vals)
                if fast and gf >= 0:                  # (a flag not known: the walk refuses it)
                    line[r] = ln
                    cpu[r] = c
                    ts[r] = tsv
                    kind[r] = EV_OWN if ev == EV_KMALLOC and _own_site(bp, e + 11) else ev
                    ptr[r] = pv
                    req[r] = rq
                    alloc[r] = al
                    gfp[r] = gf
                    node[r] = nd
                    nm0s[r] = n0
                    nm1s[r] = n1
                    nhs[r] = h
                    nrows = r + 1
                    nline = ln
                    nfast += 1
                    pos = qf + 1
                    continue
        line[r] = ln
        cpu[r] = -1
        ts[r] = 0.0
        ptr[r] = 0
        req[r] = -1
        alloc[r] = -1
        gfp[r] = 0
        node[r] = -1
        err = ERR_NONE
        ev = EV_OTHER
        own = False
        nm0 = -1
        nm1 = -1
        nh = np.uint64(0)
        if lost:
            ev = EV_LOST                                  # "CPU:n [LOST m EVENTS]"
            q = delim(bp, q)
            while buf[q] != 10:
                q = delim(bp, q + 1)
        else:
            c, tsv, evs, e = tracefs_header(bp, pos)
            found = c >= 0
            cbig = False                                  # a "[cpu]" of 10 digits +
            if found:                                     # tracefs's layout: no walk
                ts[r] = tsv
                evs = after_last_colon(bp, evs, e - 1)
                ev = _event(bp, evs, e - 1)
                q = e
            else:
                evs = -1
                while True:                                   # tokens up to the event name
                    e = delim(bp, q)                      # token buf[q:e]
                    t0 = buf[q]
                    if c < 0:
                        if t0 == 91 and e - q >= 3 and buf[e - 1] == 93:     # "[cpu]"
                            v = 0
                            ok = True
                            for i in range(q + 1, e - 1):
                                d = buf[i] - 48
                                if d < 0 or d > 9:
                                    ok = False
                                v = v * 10 + d
                            if ok and e - q - 2 > 9:      # 10 digits or more: no wrap
                                ok = False
                                cbig = True
                            if ok:
                                c = v
                    elif not found:
                        if 48 <= t0 <= 57 and buf[e - 1] == 58:              # "secs.frac:"
                            whole = 0
                            i = q
                            while buf[i] != 46 and i < e - 1:
                                whole = whole * 10 + (buf[i] - 48)
                                i += 1
                            if i < e - 1:
                                frac = 0
                                scale = 1.0
                                ok = q < i <= q + 18        # (more digits wrapped)
                                for j in range(i + 1, e - 1):
                                    d = buf[j] - 48
                                    if d < 0 or d > 9:
                                        ok = False
                                    if j <= i + 18:     # (past 18 digits, below a double's
                                        frac = frac * 10 + d        # precision: it wrapped)
                                        scale *= 10.0
                                for j in range(q, i):
                                    if buf[j] < 48 or buf[j] > 57:
                                        ok = False
                                if ok and e - 1 > i + 1:
                                    ts[r] = whole + frac / scale
                                    found = True
                    else:
                        if e - q >= 2 and buf[e - 1] == 58:                   # "event:"
                            evs = after_last_colon(bp, q, e - 1)            # kmem:kfree:
                            ev = _event(bp, evs, e - 1)
                            q = e
                            break
                    if buf[e] == 10:
                        q = e
                        break
                    q = skip_spaces(bp, e)
                    if buf[q] == 10:
                        break
            if c < 0:
                err = ERR_BAD_CPU if cbig else ERR_NO_CPU
            elif not found or evs < 0:
                err = ERR_NO_TIMESTAMP
            else:
                cpu[r] = c
        fast = False
        if fast_path and err == ERR_NONE and ev <= EV_CACHE_FREE:   # tracefs's field order
            fast, qf, pv, rq, al, g0, ge, gh, nd, n0, n1, h = fixed_fields(
                bp, q, ev == EV_CACHE_ALLOC or ev == EV_CACHE_FREE, ev <= EV_KMALLOC)
            if fast:
                own = ev == EV_KMALLOC and _own_site(bp, q + 11)
                gf = 0
                if g0 >= 0:
                    gf, _ = gfp_symbolic(bp, g0, ge, gh, False, gkeys, gvals, gc_keys, gc_vals)
                if gf < 0:
                    err = ERR_BAD_GFP
                    gf = 0
                ptr[r] = pv
                req[r] = rq
                alloc[r] = al
                gfp[r] = gf
                node[r] = nd
                nm0 = n0
                nm1 = n1
                nh = h
                q = qf
        if err == ERR_NONE and ev <= EV_CACHE_FREE and not fast:   # any other: the walk
            have_ptr = False
            have_gfp = False                # (read as no flag, a 7.x refill's decision)
            # fields "key=value", told by a few bytes of the key (the buffer has 64 bytes of
            # slack past n, so looking ahead of a short last token reads no foreign memory)
            while err == ERR_NONE:
                ch = buf[q]
                if ch == 32:
                    q = skip_spaces(bp, q)
                    ch = buf[q]
                if ch == 10 or (ch == 13 and buf[q + 1] == 10):
                    break
                if ch == 99 and buf[q + 4] == 95 and buf[q + 9] == 61:            # call_site=
                    own = ev == EV_KMALLOC and _own_site(bp, q + 10)
                    q = delim(bp, q + 10)
                elif ch == 112 and buf[q + 1] == 116 and buf[q + 3] == 61:        # ptr=
                    q += 4
                    v0 = q
                    if buf[q] == 48 and buf[q + 1] == 120:
                        q += 2
                    a0 = q
                    v = np.uint64(0)
                    while True:
                        d = HEX[buf[q]]
                        if d < 0:
                            break
                        v = (v << np.uint64(4)) | np.uint64(d)
                        q += 1
                    t = buf[q]
                    if q == a0 or q - a0 > 16 or not (t == 32 or t == 10 or t == 13):
                        v = np.uint64(0)
                        q = delim(bp, q)
                        if not (buf[v0] == 40 and 5 <= q - v0 <= 6):              # (nil)
                            err = ERR_BAD_PTR
                    ptr[r] = v
                    have_ptr = True
                elif ch == 110 and buf[q + 1] == 97 and buf[q + 4] == 61:         # name=
                    q += 5
                    nm0 = q
                    q = delim(bp, q)
                    nh, cr = word_hash(bp, nm0, q)
                    if cr:                                 # the name ends at a CR
                        q = nm0
                        while buf[q] != 13:
                            q += 1
                        nh, cr = word_hash(bp, nm0, q)
                    nm1 = q
                elif ch == 103 and buf[q + 3] == 95 and buf[q + 9] == 61 \
                        and not 48 <= buf[q + 10] <= 57:                          # gfp_flags=
                    q += 10
                    ge = delim(bp, q)
                    gh, cr = word_hash(bp, q, ge)
                    v2, q = gfp_symbolic(bp, q, ge, gh, cr, gkeys, gvals, gc_keys,
                                         gc_vals)
                    have_gfp = True
                    if v2 < 0:
                        err = ERR_BAD_GFP
                        v2 = 0
                    gfp[r] = v2
                else:
                    which = 0
                    if ch == 98 and buf[q + 6] == 114 and buf[q + 9] == 61:       # bytes_req=
                        which = 1
                        q += 10
                    elif ch == 98 and buf[q + 6] == 97 and buf[q + 11] == 61:     # bytes_alloc=
                        which = 2
                        q += 12
                    elif ch == 103 and buf[q + 3] == 95 and buf[q + 9] == 61:     # gfp_flags=0x
                        which = 3
                        have_gfp = True
                        q += 10
                    elif ch == 110 and buf[q + 1] == 111 and buf[q + 4] == 61:    # node=
                        which = 4
                        q += 5
                    if which == 0:                                                # other
                        q = delim(bp, q)
                        continue
                    neg = buf[q] == 45
                    if neg:
                        q += 1
                    v0 = q
                    a0 = q
                    v2 = 0
                    if buf[q] == 48 and buf[q + 1] == 120:
                        q += 2
                        a0 = q
                        while True:
                            d = HEX[buf[q]]
                            if d < 0:
                                break
                            v2 = v2 * 16 + d
                            q += 1
                    else:
                        while True:
                            t = buf[q]
                            if t < 48 or t > 57:
                                break
                            v2 = v2 * 10 + (t - 48)
                            q += 1
                    t = buf[q]
                    # a value past its int32 column (gfp_t: 32 bits) is refused, not wrapped
                    big = q - a0 > (8 if a0 > v0 + 1 else 10) or v2 > (
                        0xFFFFFFFF if which == 3 else 0x7FFFFFFF)
                    if big and which <= 2 and have_ptr and ptr[r] == 0 and q - a0 <= 20:
                        big = False             # a failed kvmalloc's size_t: never used
                        v2 = 0x7FFFFFFF
                    if q == a0 or big or not (t == 32 or t == 10 or t == 13) or \
                            (neg and which != 4):       # sizes and gfp are unsigned
                        err = ERR_BAD_REQ + which - 1
                        q = delim(bp, q)
                    if neg:
                        v2 = -v2
                    if which == 1:
                        req[r] = v2
                    elif which == 2:
                        alloc[r] = v2
                    elif which == 3:
                        gfp[r] = v2
                    else:
                        node[r] = v2
            if err == ERR_NONE:
                if not have_ptr:
                    err = ERR_NO_PTR
                elif (ev == EV_CACHE_ALLOC or ev == EV_CACHE_FREE) and nm1 <= nm0:
                    err = ERR_NO_NAME                   # (no name=, or an empty one)
                elif (ev == EV_CACHE_ALLOC or ev == EV_KMALLOC) and alloc[r] < 0:
                    err = ERR_NO_ALLOC
                elif (ev == EV_CACHE_ALLOC or ev == EV_KMALLOC) and not have_gfp:
                    err = ERR_NO_GFP
                elif req[r] > alloc[r] and ptr[r] != 0:     # (a failed one's: never used)
                    err = ERR_REQ_PAST_ALLOC
        # the rest of the line
        while buf[q] != 10:
            q = delim(bp, q + 1)
        if err != ERR_NONE:
            if not skip_bad:
                sv[SV_BADLINE] = ln
                sv[SV_ERR] = err
                sv[SV_ROWS] = nrows
                sv[SV_LINE] = nline
                sv[SV_FAST] += nfast
                return pos, ST_ERROR
            ev = EV_BAD
        kind[r] = EV_OWN if own and ev == EV_KMALLOC else ev
        nm0s[r] = nm0
        nm1s[r] = nm1
        nhs[r] = nh
        nrows = r + 1
        nline = ln
        pos = q + 1
    sv[SV_ROWS] = nrows
    sv[SV_LINE] = nline
    sv[SV_FAST] += nfast
    return pos, ST_DONE


@lab_jit(nogil=True)
def intern_rows(buf, i0, m, rows, sv, name, row, pid, tables):
    """Stage two (in trace order, one chunk after another): each row's cache row and pointer id.

    For rows ``i0:m`` of the :class:`ChunkRows` ``rows`` that :func:`scan_chunk` filled from
    ``buf`` (its other columns copied by the caller), the trace's ``name``, ``row`` and ``pid``
    (``Trace``'s columns, int32) from row ``sv[SV_ROWS]``: each event's cache row (names and
    kmalloc classes interned in order of first appearance: open addressing by the name's hash in
    ``tables``, :class:`InternTables`) and dense pointer id (its ``ptab``, (pointer, id) pairs
    side by side so that a probe touches one cache line; home slots prefetched a few rows
    ahead). The probes are plain loops in line; a new name or kmalloc
    class is added out of line. Returns ``(next chunk row, status)``: ``ST_DONE``, or
    ``ST_ROWS``/``ST_PIDS`` (grow that and call again from there), ``ST_NAMES`` (the name table is
    full)."""
    ckind, cptr, calloc, creq, cgfp = rows.kind, rows.ptr, rows.alloc, rows.req, rows.gfp
    nm0s, nm1s, nhs = rows.nm0, rows.nm1, rows.nh
    nt_keys, nt_vals, name_bytes, name_off, name_kind, name_size, km_row, ptab, pid_zero = tables
    cap = name.shape[0]
    ptcap = ptab.shape[0] >> 1
    pmask = ptcap - 1
    nmask = nt_keys.shape[0] - 1
    r = sv[SV_ROWS]
    npids = sv[SV_NPIDS]
    for i in range(i0, m):
        if r >= cap or 4 * (npids + 1) >= 3 * ptcap:
            sv[SV_ROWS] = r
            sv[SV_NPIDS] = npids
            return i, (ST_ROWS if r >= cap else ST_PIDS)
        if i + PREFETCH < m:
            pf = cptr[i + PREFETCH]
            if pf != 0:
                prefetch(ptab, 2 * _slot(pf, pmask))
        ev = ckind[i]
        nr = -1
        rw = ROW_NONE
        d = -1
        if ev <= EV_CACHE_FREE:
            nm0 = nm0s[i]
            if nm0 >= 0:
                h = nhs[i]
                s = _slot(h, nmask)
                while nt_keys[s] != h and nt_keys[s] != 0:
                    s = (s + 1) & nmask
                if nt_keys[s] == h:
                    nr = np.int64(nt_vals[s])
                else:
                    nr = _name_add(buf, nm0, nm1s[i], h, s, nt_keys, nt_vals, name_bytes,
                                   name_off, name_kind, sv)
                    if nr < 0:
                        sv[SV_ROWS] = r
                        sv[SV_NPIDS] = npids
                        return i, ST_NAMES
            p = cptr[i]
            if p != 0:
                s = _slot(p, pmask)
                while ptab[2 * s] != p and ptab[2 * s] != 0:
                    s = (s + 1) & pmask
                if ptab[2 * s] == p:
                    d = np.int64(ptab[2 * s + 1])
                else:
                    d = npids
                    ptab[2 * s] = p
                    ptab[2 * s + 1] = d
                    npids += 1
            if ev == EV_CACHE_ALLOC or ev == EV_KMALLOC:
                ba = calloc[i]
                if p == 0:
                    rw = ROW_FAILED
                elif ev == EV_KMALLOC:
                    rq = creq[i]        # the kernel's pick (kmalloc_slab): by bytes_req;
                    if rq < 0:          # bytes_alloc is the cache's s->size, past the
                        rq = ba         # class under slab_debug (red zones, tracking)
                    if ba == 0 or rq == 0:
                        rw = ROW_ZERO
                        pid_zero[d] = 1
                    elif rq > KM_MAX:
                        rw = ROW_LARGE
                    else:
                        key = _kmalloc_key(rq, cgfp[i])
                        rw = km_row[key]
                        if rw < 0:
                            rw = _kmalloc_add(key, km_row, name_off, name_kind, sv)
                            if rw < 0:
                                sv[SV_ROWS] = r
                                sv[SV_NPIDS] = npids
                                return i, ST_NAMES
                else:
                    rw = nr
                    if ba > name_size[nr]:
                        name_size[nr] = ba
            elif p == 0:
                rw = ROW_NULL
            elif p == ZERO_SIZE_PTR or pid_zero[d]:
                rw = ROW_ZERO_PTR
            else:
                rw = 0
        name[r] = nr
        row[r] = rw
        pid[r] = d
        r += 1
    sv[SV_ROWS] = r
    sv[SV_NPIDS] = npids
    return m, ST_DONE


@lab_jit(nogil=True)
def last_newline(buf, n):
    """One past the last newline in ``buf[:n]``, 0 if there is none."""
    for i in range(n - 1, -1, -1):
        if buf[i] == 10:
            return i + 1
    return 0
