"""The trace reader's compiled kernel: one pass over each line's bytes, into a struct of
arrays, interning cache names and pointers (dense ids) in open-addressing tables as it goes.

Called on chunks of the text (:func:`parse_chunk`); the tables and counters persist from one
chunk to the next, so a trace is read in a few MiB at a time. The byte loops index a
``uint8`` array directly: no Python runs per line.
"""
from __future__ import annotations

import numba
import numpy as np

# ---- event kinds (one per parsed line) ---------------------------------------------------------
EV_CACHE_ALLOC = 0   #: kmem_cache_alloc (and the old kmem_cache_alloc_node)
EV_KMALLOC = 1       #: kmalloc (and the old kmalloc_node)
EV_KFREE = 2         #: kfree
EV_CACHE_FREE = 3    #: kmem_cache_free
EV_OTHER = 4         #: a tracepoint line of another event
EV_LOST = 5          #: "CPU:n [LOST m EVENTS]": the ring buffer overflowed
EV_BAD = 6           #: a malformed line (kept only with ``skip_bad``)

# ---- rows that are not a cache (``row`` of an event) ------------------------------------------
ROW_LARGE = -1        #: a kmalloc above the largest kmalloc cache: whole pages
ROW_ZERO = -2         #: kmalloc(0): ZERO_SIZE_PTR, nothing allocated
ROW_FAILED = -3       #: the traced allocation returned NULL
ROW_NULL = -4         #: free of NULL
ROW_ZERO_PTR = -5     #: free of ZERO_SIZE_PTR
ROW_NONE = -6         #: not an allocation or free

# ---- the state vector ``sv`` -------------------------------------------------------------------
(SV_ROWS, SV_LINE, SV_NNAMES, SV_NPIDS, SV_NAMEBYTES, SV_BADLINE, SV_ERR, SV_NCOLS) = range(8)
# statuses of parse_chunk
ST_DONE, ST_ROWS, ST_PIDS, ST_NAMES, ST_ERROR = 0, 1, 2, 3, 4
# error codes
ERR_NONE, ERR_NO_TIMESTAMP, ERR_NO_CPU, ERR_FIELD, ERR_MISSING, ERR_LONG = 0, 1, 2, 3, 4, 5
ERR_TEXT = {ERR_NO_TIMESTAMP: "no 'seconds.micros:' timestamp followed by an event name",
            ERR_NO_CPU: "no '[cpu]' field", ERR_FIELD: "a field's value does not parse",
            ERR_MISSING: "a kmem event without its ptr, name or bytes_alloc field",
            ERR_LONG: "a line longer than the read buffer"}

#: the kmalloc size classes (bytes_alloc of a kmalloc event is one of them, or pages)
KM_SIZES = np.array([8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192], np.int64)
KM_MAX = 8192
# gfp bits deciding the kmalloc type (numslab's values, as include/linux/gfp_types.h)
_DMA, _RECLAIMABLE, _ACCOUNT = 0x01, 0x10, 0x400000
ZERO_SIZE_PTR = 16
NAME_MAX_ROWS = 4096


@numba.njit(cache=True, nogil=True)
def _fnv(buf, a, b):
    """FNV-1a 64 of ``buf[a:b]`` (never 0: 0 marks an empty table slot)."""
    h = np.uint64(0xcbf29ce484222325)
    for i in range(a, b):
        h = (h ^ np.uint64(buf[i])) * np.uint64(0x100000001b3)
    if h == 0:
        h = np.uint64(1)
    return h


@numba.njit(cache=True, nogil=True)
def _gfp_lookup(keys, values, h):
    """``values[k]`` where ``keys[k] == h`` (``keys`` sorted), or 0."""
    k = np.searchsorted(keys, h)
    if k < keys.shape[0] and keys[k] == h:
        return values[k]
    return 0


@numba.njit(cache=True, nogil=True)
def _slot(key, mask):
    """Home slot of a 64-bit key in a power-of-two table."""
    return np.int64((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) & mask


@numba.njit(cache=True, nogil=True)
def pid_insert(pt_keys, pt_vals, key, sv):
    """The dense id of pointer ``key`` (a new one if unseen)."""
    mask = pt_keys.shape[0] - 1
    s = _slot(key, mask)
    while True:
        k = pt_keys[s]
        if k == key:
            return pt_vals[s]
        if k == 0:
            v = sv[SV_NPIDS]
            pt_keys[s] = key
            pt_vals[s] = v
            sv[SV_NPIDS] = v + 1
            return v
        s = (s + 1) & mask


@numba.njit(cache=True)
def pid_rehash(old_keys, old_vals, new_keys, new_vals):
    """Move every pointer of the old table into the (larger, empty) new one."""
    mask = new_keys.shape[0] - 1
    for i in range(old_keys.shape[0]):
        key = old_keys[i]
        if key != 0:
            s = _slot(key, mask)
            while new_keys[s] != 0:
                s = (s + 1) & mask
            new_keys[s] = key
            new_vals[s] = old_vals[i]


@numba.njit(cache=True, nogil=True)
def _name_row(buf, a, b, h, nt_keys, nt_vals, name_bytes, name_off, name_kind, sv):
    """The row of the cache named ``buf[a:b]`` (hash ``h``), added if new; -1 if the name
    table is full."""
    mask = nt_keys.shape[0] - 1
    s = _slot(h, mask)
    while True:
        k = nt_keys[s]
        if k == h:
            return nt_vals[s]
        if k == 0:
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
        s = (s + 1) & mask


@numba.njit(cache=True, nogil=True)
def _kmalloc_row(nbytes, gfp, km_row, name_off, name_kind, sv):
    """The row of the kmalloc cache serving a ``nbytes``-byte class under ``gfp``
    (``kmalloc_type``: DMA, then reclaimable, then accounted), added if new; -1 if full."""
    cls = 0
    while cls < 12 and KM_SIZES[cls] < nbytes:
        cls += 1
    t = 0
    if gfp & _DMA:
        t = 3
    elif gfp & _RECLAIMABLE:
        t = 2
    elif gfp & _ACCOUNT:
        t = 1
    key = t * 16 + cls
    r = km_row[key]
    if r < 0:
        r = sv[SV_NNAMES]
        if r >= name_kind.shape[0]:
            return -1
        name_off[r + 1] = name_off[r]
        name_kind[r] = 1 + key
        km_row[key] = r
        sv[SV_NNAMES] = r + 1
    return r


@numba.njit(cache=True, nogil=True)
def _event(buf, a, b):
    """The kmem event named ``buf[a:b]`` (``EV_*``), or EV_OTHER."""
    n = b - a
    if n < 5 or buf[a] != 107:                       # 'k'
        return EV_OTHER
    if n == 5 and buf[a + 1] == 102 and buf[a + 2] == 114 and buf[a + 3] == 101 \
            and buf[a + 4] == 101:
        return EV_KFREE
    if (n == 7 or n == 12) and buf[a + 1] == 109 and buf[a + 2] == 97 and buf[a + 3] == 108 \
            and buf[a + 4] == 108 and buf[a + 5] == 111 and buf[a + 6] == 99:
        if n == 7 or buf[a + 7] == 95:              # kmalloc, kmalloc_node
            return EV_KMALLOC
        return EV_OTHER
    if n >= 15 and buf[a + 1] == 109 and buf[a + 2] == 101 and buf[a + 3] == 109 \
            and buf[a + 4] == 95 and buf[a + 5] == 99 and buf[a + 10] == 95:   # kmem_cache_
        if n == 15 and buf[a + 11] == 102 and buf[a + 14] == 101:         # kmem_cache_free
            return EV_CACHE_FREE
        if (n == 16 or n == 21) and buf[a + 11] == 97 and buf[a + 15] == 99:  # _alloc(_node)
            return EV_CACHE_ALLOC
    return EV_OTHER


@numba.njit(cache=True, nogil=True)
def parse_chunk(buf, n, skip_bad, gkeys, gvals, sv, kind, line, cpu, ts, ptr, name, req,
                alloc, gfp, node, row, pid, nt_keys, nt_vals, name_bytes, name_off, name_kind,
                name_size, km_row, pt_keys, pt_vals, pid_zero):
    """Parse the lines of ``buf[:n]`` (``buf[n - 1]`` must be a newline, so that no scan
    inside a line needs a bound) into the row arrays from row ``sv[SV_ROWS]``; returns ``(consumed bytes, status)``: ``ST_DONE``, or
    ``ST_ROWS``/``ST_PIDS``/``ST_NAMES`` (grow that and call again on the rest), or
    ``ST_ERROR`` (``sv[SV_BADLINE]``, ``sv[SV_ERR]``: the line and its ``ERR_*``)."""
    pos = 0
    cap = kind.shape[0]
    ptcap = pt_keys.shape[0]
    while pos < n:
        if sv[SV_ROWS] >= cap:
            return pos, ST_ROWS
        if 2 * (sv[SV_NPIDS] + 1) >= ptcap:
            return pos, ST_PIDS
        r = sv[SV_ROWS]
        q = pos
        while (buf[q] == 32 or buf[q] == 9):
            q += 1
        # blank, '#' comment, trace-cmd's "cpus=": no row
        if (buf[q] == 10 or buf[q] == 13 or buf[q] == 35 or (
                buf[q] == 99 and buf[q + 1] == 112 and buf[q + 2] == 117
                and buf[q + 3] == 115 and buf[q + 4] == 61)):
            while buf[q] != 10:
                q += 1
            sv[SV_LINE] += 1
            pos = q + 1
            continue
        ln = sv[SV_LINE] + 1
        line[r] = ln
        cpu[r] = -1
        ts[r] = 0.0
        ptr[r] = 0
        name[r] = -1
        req[r] = -1
        alloc[r] = -1
        gfp[r] = 0
        node[r] = -1
        row[r] = ROW_NONE
        pid[r] = -1
        err = ERR_NONE
        ev = EV_OTHER
        if buf[q] == 67 and buf[q + 1] == 80 and buf[q + 2] == 85 \
                and buf[q + 3] == 58:                     # "CPU:n [LOST m EVENTS]"
            ev = EV_LOST
        else:
            # "[cpu]": the first '[' followed by digits and ']'
            c = -1
            while buf[q] != 10 and c < 0:
                if buf[q] == 91:
                    v = 0
                    k = q + 1
                    while 48 <= buf[k] <= 57:
                        v = v * 10 + (buf[k] - 48)
                        k += 1
                    if k > q + 1 and buf[k] == 93:
                        c = v
                        q = k
                q += 1
            # the timestamp: a token "digits.digits:"
            found = False
            while buf[q] != 10 and not found:
                while buf[q] == 32:
                    q += 1
                t0 = q
                if 48 <= buf[q] <= 57:
                    whole = 0
                    while 48 <= buf[q] <= 57:
                        whole = whole * 10 + (buf[q] - 48)
                        q += 1
                    if buf[q] == 46:
                        q += 1
                        f0 = q
                        frac = 0
                        while 48 <= buf[q] <= 57:
                            frac = frac * 10 + (buf[q] - 48)
                            q += 1
                        if buf[q] == 58 and q > f0:
                            scale = 1.0
                            for _ in range(q - f0):
                                scale *= 10.0
                            ts[r] = whole + frac / scale
                            found = True
                            q += 1
                if not found:
                    while buf[q] != 32 and buf[q] != 10:
                        q += 1
                    if q == t0:
                        break
            if not found:
                err = ERR_NO_TIMESTAMP
            elif c < 0:
                err = ERR_NO_CPU
            else:
                cpu[r] = c
                # the event: the next token ending in ':' ("kmem:kfree:" -> kfree)
                evs = -1
                while buf[q] != 10:
                    while buf[q] == 32:
                        q += 1
                    t0 = q
                    while buf[q] != 32 and buf[q] != 10:
                        q += 1
                    if q - t0 >= 2 and buf[q - 1] == 58:
                        evs = t0
                        for i in range(t0, q - 1):
                            if buf[i] == 58:
                                evs = i + 1
                        ev = _event(buf, evs, q - 1)
                        break
                if evs < 0:
                    err = ERR_NO_TIMESTAMP
        if err == ERR_NONE and ev <= EV_CACHE_FREE:
            have_ptr = False
            nm0 = -1
            nm1 = -1
            nh = np.uint64(0)
            while buf[q] != 10 and err == ERR_NONE:
                while buf[q] == 32:
                    q += 1
                k0 = q
                while buf[q] != 61 and buf[q] != 32 and buf[q] != 10:
                    q += 1
                if buf[q] != 61:
                    continue
                kl = q - k0
                c0 = buf[k0]
                q += 1
                v0 = q
                if kl == 9 and c0 == 99:                                  # call_site
                    while buf[q] != 32 and buf[q] != 10:
                        q += 1
                elif kl == 3 and c0 == 112:                               # ptr
                    if buf[q] == 48 and buf[q + 1] == 120:
                        q += 2
                    v = np.uint64(0)
                    d0 = q
                    while True:
                        ch = buf[q]
                        if 48 <= ch <= 57:
                            v = (v << np.uint64(4)) | np.uint64(ch - 48)
                        elif 97 <= ch <= 102:
                            v = (v << np.uint64(4)) | np.uint64(ch - 87)
                        elif 65 <= ch <= 70:
                            v = (v << np.uint64(4)) | np.uint64(ch - 55)
                        else:
                            break
                        q += 1
                    if q - d0 > 16 or (q == d0 and not (buf[q] == 40)):
                        err = ERR_FIELD
                    elif q == d0:                                         # (null), (nil)
                        while buf[q] != 32 and buf[q] != 10:
                            q += 1
                        if q - v0 < 5 or q - v0 > 6:
                            err = ERR_FIELD
                    elif buf[q] != 32 and buf[q] != 10 and buf[q] != 13:
                        err = ERR_FIELD
                    ptr[r] = v
                    have_ptr = True
                elif kl == 4 and c0 == 110 and buf[k0 + 1] == 97:         # name
                    h = np.uint64(0xcbf29ce484222325)
                    while buf[q] != 32 and buf[q] != 10 and buf[q] != 13:
                        h = (h ^ np.uint64(buf[q])) * np.uint64(0x100000001b3)
                        q += 1
                    nm0 = v0
                    nm1 = q
                    nh = h if h != 0 else np.uint64(1)
                else:
                    neg = False
                    if buf[q] == 45:
                        neg = True
                        q += 1
                    d0 = q
                    v2 = 0
                    hexa = False
                    if kl == 9 and c0 == 103 and not (48 <= buf[q] <= 57):
                        # gfp_flags names joined by '|'
                        s0 = q
                        while True:
                            if buf[q] == 124 or buf[q] == 32 or buf[q] == 10 \
                                    or buf[q] == 13:
                                if q > s0:
                                    v2 |= _gfp_lookup(gkeys, gvals, _fnv(buf, s0, q))
                                if buf[q] != 124:
                                    break
                                s0 = q + 1
                            q += 1
                        d0 = -1
                    else:
                        if buf[q] == 48 and buf[q + 1] == 120:
                            q += 2
                            d0 = q
                            hexa = True
                        while True:
                            ch = buf[q]
                            if 48 <= ch <= 57:
                                v2 = v2 * (16 if hexa else 10) + (ch - 48)
                            elif hexa and 97 <= ch <= 102:
                                v2 = v2 * 16 + (ch - 87)
                            else:
                                break
                            q += 1
                    known = (kl == 9 and (c0 == 98 or c0 == 103)) or (kl == 11 and c0 == 98) \
                        or (kl == 4 and c0 == 110)
                    if d0 >= 0 and (q == d0 or (buf[q] != 32 and buf[q] != 10
                                                and buf[q] != 13)):
                        if known:
                            err = ERR_FIELD
                        while buf[q] != 32 and buf[q] != 10:
                            q += 1
                    if neg:
                        v2 = -v2
                    if kl == 9 and c0 == 98:                              # bytes_req
                        req[r] = v2
                    elif kl == 11 and c0 == 98:                           # bytes_alloc
                        alloc[r] = v2
                    elif kl == 9 and c0 == 103:                           # gfp_flags
                        gfp[r] = v2
                    elif kl == 4 and c0 == 110:                           # node
                        node[r] = v2
            if err == ERR_NONE:
                if not have_ptr:
                    err = ERR_MISSING
                elif (ev == EV_CACHE_ALLOC or ev == EV_CACHE_FREE) and nm0 < 0:
                    err = ERR_MISSING
                elif (ev == EV_CACHE_ALLOC or ev == EV_KMALLOC) and alloc[r] < 0:
                    err = ERR_MISSING
        # the rest of the line
        while buf[q] != 10:
            q += 1
        if err != ERR_NONE:
            if not skip_bad:
                sv[SV_BADLINE] = ln
                sv[SV_ERR] = err
                return pos, ST_ERROR
            ev = EV_BAD
        kind[r] = ev
        if ev <= EV_CACHE_FREE:
            nr = -1
            if nm0 >= 0:
                nr = _name_row(buf, nm0, nm1, nh, nt_keys, nt_vals, name_bytes, name_off,
                               name_kind, sv)
                if nr < 0:
                    return pos, ST_NAMES
                name[r] = nr
            p = ptr[r]
            if p != 0:
                pid[r] = pid_insert(pt_keys, pt_vals, p, sv)
            ba = alloc[r]
            if ev == EV_CACHE_ALLOC or ev == EV_KMALLOC:
                if p == 0:
                    row[r] = ROW_FAILED
                elif ev == EV_KMALLOC:
                    if ba == 0:
                        row[r] = ROW_ZERO
                        pid_zero[pid[r]] = 1
                    elif ba > KM_MAX:
                        row[r] = ROW_LARGE
                    else:
                        kr = _kmalloc_row(ba, gfp[r], km_row, name_off, name_kind, sv)
                        if kr < 0:
                            return pos, ST_NAMES
                        row[r] = kr
                else:
                    row[r] = nr
                    if ba > name_size[nr]:
                        name_size[nr] = ba
            else:
                if p == 0:
                    row[r] = ROW_NULL
                elif p == ZERO_SIZE_PTR or pid_zero[pid[r]]:
                    row[r] = ROW_ZERO_PTR
                else:
                    row[r] = 0
        sv[SV_ROWS] = r + 1
        sv[SV_LINE] = ln
        pos = q + 1
    return pos, ST_DONE


@numba.njit(cache=True, nogil=True)
def last_newline(buf, n):
    """One past the last newline in ``buf[:n]``, 0 if there is none."""
    for i in range(n - 1, -1, -1):
        if buf[i] == 10:
            return i + 1
    return 0
