"""The trace scanner's byte-level reads: 8-byte scans and tracefs lines read at fixed places.

It reads 8 bytes at a time (SWAR), a tracefs line's header at its fixed columns, and each kmem
event's fields in their fixed tracefs order (the fast path).

Used by :func:`~numslab.lab.parse.scan_chunk`: :func:`tracefs_header` and
:func:`fixed_fields` read a line only when every byte is where tracefs puts it, and refuse
it otherwise, so that the scan's general token walk reads it (both give the same fields).
The helpers take the text by address (``bp``, from :func:`data_address`) and offsets into
it; every load reads 8 bytes, so the buffer keeps slack after the chunk's last newline.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros
from numba.extending import intrinsic
from .compiled import lab_jit

# ---- event kinds (one per parsed line) ---------------------------------------------------------
EV_CACHE_ALLOC = 0   #: kmem_cache_alloc (and the old kmem_cache_alloc_node)
EV_KMALLOC = 1       #: kmalloc (and the old kmalloc_node)
EV_KFREE = 2         #: kfree
EV_CACHE_FREE = 3    #: kmem_cache_free
#: a kmalloc the slab allocator made for itself (``call_site`` ``alloc_slab_obj_exts``: a
#: memcg vector for an accounted cache's new slab; ``alloc_empty_sheaf`` or
#: ``__alloc_empty_sheaf``: a sheaf): the replay's allocator makes its own, so it is skipped
EV_OWN = 4
EV_OTHER = 5         #: a tracepoint line of another event
EV_LOST = 6          #: "CPU:n [LOST m EVENTS]": the ring buffer overflowed
EV_BAD = 7           #: a malformed line (kept only with ``skip_bad``)


def _item_pointer(context, builder, sig, args):
    """In an intrinsic's codegen: the pointer to ``arr[idx]`` (its first two arguments).

    No wraparound and no bounds check."""
    ary = context.make_array(sig.args[0])(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]],
                                    wraparound=False, boundscheck=False)


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to load the cache line of ``arr[idx]``; no effect on results.

    ``llvm.prefetch``, for reading, high locality. ``arr`` a 1-d C-contiguous array."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig, args)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.none(arr, idx), codegen


@intrinsic
def data_address(typingctx, arr):
    """The address of a C-contiguous array's first element, as an int64.

    The fast path's helpers take the text by address: an array argument of an inlined helper costs
    a reference count increment and decrement, atomic, at every call."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, ir.IntType(64))
    return types.int64(arr), codegen


@intrinsic
def load8p(typingctx, addr):
    """The 8 bytes at address ``addr`` (an int64) as one little-endian uint64 (unaligned)."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        return builder.load(builder.inttoptr(args[0], i64.as_pointer()), align=1)
    return types.uint64(addr), codegen


@intrinsic
def load1p(typingctx, addr):
    """The byte at address ``addr`` (an int64)."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i8 = ir.IntType(8)
        return builder.load(builder.inttoptr(args[0], i8.as_pointer()))
    return types.uint8(addr), codegen


_LO = np.uint64(0x0101010101010101)
_HI = np.uint64(0x8080808080808080)
_CR = np.uint64(0x0D0D0D0D0D0D0D0D)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_CTL = np.uint64(0x2121212121212121)
#: slots of a chunk's cache of whole symbolic ``gfp_flags`` values
GFP_CACHE = 256


@lab_jit(nogil=True, inline=True)
def _mix(h, w):
    """One 8-byte step of the token hash."""
    h = (h ^ w) * _MIX
    return h ^ (h >> np.uint64(29))


@lab_jit(nogil=True, inline=True)
def _finish(h, n):
    """The token hash after its words, given its length ``n``.

    Never 0: 0 marks an empty table slot."""
    h = (h ^ np.uint64(n)) * _MIX
    h ^= h >> np.uint64(32)
    if h == 0:
        h = np.uint64(1)
    return h


@lab_jit(nogil=True, inline=True)
def word_hash(bp, a, b):
    """A 64-bit hash of bytes ``a:b``, 8 bytes at a time, and whether they hold a carriage return.

    The hash is never 0; the bytes of the last word past ``b`` are taken as 0. With a carriage
    return in the span the caller takes the bytes one by one."""
    h = _MIX
    cr = np.uint64(0)
    i = a
    while i < b:
        w = load8p(bp + i)
        if b - i < 8:
            w &= (np.uint64(1) << np.uint64(8 * (b - i))) - np.uint64(1)
            x = w ^ _CR
            x |= ~((np.uint64(1) << np.uint64(8 * (b - i))) - np.uint64(1)) & _LO
        else:
            x = w ^ _CR
        cr |= (x - _LO) & ~x & _HI
        h = _mix(h, w)
        i += 8
    return _finish(h, b - a), cr != 0


@lab_jit(nogil=True, inline=True)
def token_hash(bp, q):
    """``(end, hash)`` of the token at offset ``q``, found in one pass.

    It ends at the first byte that is a space or below (see :func:`ctl_end`), and its hash is
    :func:`word_hash`'s of bytes ``q:end``."""
    h = _MIX
    i = q
    while True:
        w = load8p(bp + i)
        m = (w - _CTL) & ~w & _HI
        if m:
            k = np.int64(trailing_zeros(m)) >> 3
            if k:
                h = _mix(h, w & ((np.uint64(1) << np.uint64(8 * k)) - np.uint64(1)))
            return i + k, _finish(h, i + k - q)
        h = _mix(h, w)
        i += 8


@lab_jit(nogil=True, inline=True)
def fnv(bp, a, b):
    """FNV-1a 64 of bytes ``a:b`` (never 0: 0 marks an empty table slot)."""
    h = np.uint64(0xcbf29ce484222325)
    for i in range(a, b):
        h = (h ^ np.uint64(load1p(bp + i))) * np.uint64(0x100000001b3)
    if h == 0:
        h = np.uint64(1)
    return h


@lab_jit(nogil=True, inline=True)
def gfp_lookup(keys, values, h):
    """``values[k]`` where ``keys[k] == h`` (``keys`` sorted), or -1 (no such name)."""
    k = np.searchsorted(keys, h)
    if k < keys.shape[0] and keys[k] == h:
        return values[k]
    return -1


#: hex digit values by byte (-1: not a hex digit)
HEX = np.full(256, -1, np.int8)
HEX[48:58] = np.arange(10)
HEX[97:103] = np.arange(10, 16)
HEX[65:71] = np.arange(10, 16)


@lab_jit(nogil=True, inline=True)
def gfp_hex(bp, s0, q):
    """The bits of a ``0x...`` flag of a symbolic value at bytes ``s0:q``, or -1.

    The kernel's ``__print_flags`` ends a list with the bits it names none of; -1 unless 1 to 8
    hex digits follow the ``0x``."""
    if q - s0 < 3 or q - s0 > 10 or load1p(bp + s0) != 48 or load1p(bp + s0 + 1) != 120:
        return -1
    v = 0
    for k in range(s0 + 2, q):
        d = HEX[load1p(bp + k)]
        if d < 0:
            return -1
        v = v * 16 + d
    return v

_M7F = np.uint64(0x7F7F7F7F7F7F7F7F)
_COLONS = np.uint64(0x3A3A3A3A3A3A3A3A)
_BRACKETS = np.uint64(0x5B5B5B5B5B5B5B5B)
_NEWLINES = np.uint64(0x0A0A0A0A0A0A0A0A)


@lab_jit(nogil=True, inline=True)
def _zero_bytes(x):
    """0x80 in each byte of ``x`` (uint64) that is zero, 0 elsewhere (exact: no borrow)."""
    return ~(((x & _M7F) + _M7F) | x | _M7F)


@lab_jit(nogil=True, inline=True)
def after_last_colon(bp, a, b):
    """One past the last ``:`` in bytes ``a:b``, or ``a`` if there is none.

    8 bytes at a time; the buffer's slack covers the last load."""
    res = a
    i = a
    while i < b:
        w = load8p(bp + i)
        if b - i < 8:                                 # bytes past b: never a colon
            w |= ~((np.uint64(1) << np.uint64(8 * (b - i))) - np.uint64(1))
        z = _zero_bytes(w ^ _COLONS)
        if z:
            res = i + (63 - np.int64(leading_zeros(z))) // 8 + 1
        i += 8
    return res


_SPACES = np.uint64(0x2020202020202020)
_NIB = np.uint64(0x0F0F0F0F0F0F0F0F)


def _word(text: bytes) -> np.uint64:
    """``text`` (at most 8 bytes) as the little-endian word :func:`load8p` reads."""
    return np.uint64(int.from_bytes(text, "little"))


def _mask(nbytes: int) -> np.uint64:
    """The low ``nbytes`` bytes of a word set."""
    return np.uint64((1 << (8 * nbytes)) - 1)


@lab_jit(nogil=True, inline=True)
def skip_spaces(bp, q):
    """The first byte at or after ``q`` that is not a space (the chunk ends in a newline)."""
    while True:
        m = ~_zero_bytes(load8p(bp + q) ^ _SPACES) & _HI
        if m:
            return q + (np.int64(trailing_zeros(m)) >> 3)
        q += 8


@lab_jit(nogil=True, inline=True)
def delim(bp, q):
    """The first space or newline at or after ``q`` (where a token ends)."""
    while True:
        w = load8p(bp + q)
        m = _zero_bytes(w ^ _SPACES) | _zero_bytes(w ^ _NEWLINES)
        if m:
            return q + (np.int64(trailing_zeros(m)) >> 3)
        q += 8


@lab_jit(nogil=True, inline=True)
def ctl_end(bp, q):
    """The first byte at or after ``q`` that is a space or below it.

    A newline, a carriage return, a tab: the fast path refuses all but the separator it expects.
    The lowest flagged byte of the word is exact (a borrow only flags bytes above it)."""
    while True:
        w = load8p(bp + q)
        m = (w - _CTL) & ~w & _HI
        if m:
            return q + (np.int64(trailing_zeros(m)) >> 3)
        q += 8


@lab_jit(nogil=True, inline=True)
def _in_range(x, lo, hi):
    """0x80 in each byte of ``x`` (bytes below 0x80) within ``lo..hi``, 0 elsewhere.

    ``lo`` and ``hi`` are words of the bound repeated; no byte's sum carries into the next."""
    return (x + (_HI - lo)) & ~(x + (_HI - _LO - hi)) & _HI


_W0 = np.uint64(0x3030303030303030)
_W9 = np.uint64(0x3939393939393939)
_WA = np.uint64(0x6161616161616161)
_WF = np.uint64(0x6666666666666666)
_CASE = np.uint64(0x2020202020202020)


@lab_jit(nogil=True, inline=True)
def hex8(w):
    """``(ok, value)`` of 8 hex digits held in ``w``; ``ok`` False if a byte is not a hex digit.

    The first digit is the lowest byte, either case."""
    ok = (w & _HI) == 0 and (_in_range(w, _W0, _W9) | _in_range(w | _CASE, _WA, _WF)) == _HI
    v = (w & _NIB) + np.uint64(9) * ((w >> np.uint64(6)) & _LO)
    v = ((v << np.uint64(4)) | (v >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    v = ((v << np.uint64(8)) | (v >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    v = ((v << np.uint64(16)) | (v >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    return ok, v


@lab_jit(nogil=True, inline=True)
def dec8(bp, i):
    """``(digits, value)`` of the decimal number at offset ``i``.

    0 digits when offset ``i`` is not a digit, 8 (value meaningless) when 8 or more digits follow
    (callers refuse both)."""
    w = load8p(bp + i)
    nd = ~(_in_range(w & _M7F, _W0, _W9) & ~w) & _HI
    if nd == 0:
        return 8, 0
    k = np.int64(trailing_zeros(nd)) >> 3
    if k == 0:
        return 0, 0
    x = (w & _NIB) << np.uint64(64 - 8 * k)
    x = ((x * np.uint64(2561)) >> np.uint64(8)) & np.uint64(0x00FF00FF00FF00FF)
    x = ((x * np.uint64(6553601)) >> np.uint64(16)) & np.uint64(0x0000FFFF0000FFFF)
    x = (x * np.uint64(42949672960001)) >> np.uint64(32)
    return k, np.int64(x)


@lab_jit(nogil=True, inline=True)
def gfp_slot(gh):
    """The slot of a gfp value's hash in a chunk's cache of whole values."""
    return np.int64(gh >> np.uint64(56)) & (GFP_CACHE - 1)


@lab_jit(nogil=True)
def gfp_symbolic(bp, q, ge, gh, cr, gkeys, gvals, gc_keys, gc_vals):
    """``(bits, end)`` of the symbolic ``gfp_flags`` value at ``bp + q`` up to ``ge``.

    ``ge`` is the token's end; ``gh``, ``cr``: its :func:`word_hash`. The whole value comes from
    the chunk's cache ``gc_keys``, ``gc_vals`` (by its hash; slot ``gfp_slot(gh)``), else flag by
    flag (``|``-separated, up to a space, newline or carriage return) from the sorted FNV hashes
    ``gkeys`` and bits ``gvals``, or a ``0x`` number (the bits no name covers, as the kernel's
    ``__print_flags`` ends the list), then cached. Bits -1 if a flag is neither (a name
    numslab does not know, or an empty one: ``GFP_KER``, ``GFP_KERNEL|``), which callers refuse
    as the line's bad ``gfp_flags``. Not inlined: callers look the cache up themselves first."""
    gs = gfp_slot(gh)
    if not cr and gc_keys[gs] == gh:                  # seen in this chunk
        return gc_vals[gs], ge
    v2 = 0
    bad = False
    s0 = q
    while True:
        t = load1p(bp + q)
        if t == 124 or t == 32 or t == 10 or t == 13:
            f = gfp_hex(bp, s0, q) if q - s0 > 2 and load1p(bp + s0) == 48 else \
                gfp_lookup(gkeys, gvals, fnv(bp, s0, q)) if q > s0 else -1
            if f < 0:
                bad = True
            v2 |= f
            if t != 124:
                break
            s0 = q + 1
        q += 1
    if bad:
        v2 = -1
    if not cr:
        gc_keys[gs] = gh
        gc_vals[gs] = v2
    return v2, q


_W_OPEN = _word(b" [\0\0\0] ")            # columns 24..30 around the CPU
_M_OPEN = _word(b"\xff\xff\0\0\0\xff\xff")
_M_CPU = np.uint64(0x000000FFFFFF0000)
_M_FLAGS = np.uint64(0x0000008080808080)
_M_SECS = np.uint64(0x8080808080000000)
_M_MICROS = np.uint64(0x0000808080808080)


@lab_jit(nogil=True, inline=True)
def _digits(x, mask):
    """0x80 in each byte of word ``x`` that is a decimal digit, within ``mask`` (0x80s)."""
    return _in_range(x & _M7F, _W0, _W9) & ~x & mask


@lab_jit(nogil=True, inline=True)
def _value8(x):
    """The decimal value of word ``x``'s 8 bytes, each a digit or 0 (first byte highest)."""
    x = ((x & _NIB) * np.uint64(2561)) >> np.uint64(8)
    x = ((x & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(6553601)) >> np.uint64(16)
    x = ((x & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(42949672960001)) >> np.uint64(32)
    return np.int64(x)


@lab_jit(nogil=True, inline=True)
def header_columns(bp, b0):
    """The CPU and seconds of a line at offset ``b0`` in tracefs's own layout: ``(cpu, seconds)``.

    The layout is ``%16s-%-7d [%03d] <5 flags> %5lu.%06lu: `` (the task and pid end at column 24),
    read at fixed columns 8 bytes at a time; cpu -1 when a byte is not where that layout puts it
    (then the general token walk reads the line). Every check the walk makes is made here, so both
    give the same fields."""
    w = load8p(bp + b0 + 24)                          # " [ddd] f"
    if (w & _M_OPEN) != _W_OPEN or _digits(w, _M_CPU & _HI) != (_M_CPU & _HI):
        return -1, 0.0
    c = _value8((w & _M_CPU) << np.uint64(24))
    if load1p(bp + b0 + 36) != 32 or load1p(bp + b0 + 42) != 46 \
            or load1p(bp + b0 + 49) != 58 or load1p(bp + b0 + 50) != 32:
        return -1, 0.0
    # columns 0..23 (the task): no '[' (no token there may look like the CPU) and no newline
    z = np.uint64(0)
    for k in range(3):
        w = load8p(bp + b0 + 8 * k)
        z |= _zero_bytes(w ^ _BRACKETS) | _zero_bytes(w ^ _NEWLINES)
    if z:
        return -1, 0.0
    # the flags (31..35): one token of five bytes that is not a timestamp
    w = load8p(bp + b0 + 31)
    if ((_zero_bytes(w ^ _SPACES) | _zero_bytes(w ^ _NEWLINES)) & _M_FLAGS) or (
            48 <= load1p(bp + b0 + 31) <= 57 and load1p(bp + b0 + 35) == 58):
        return -1, 0.0
    # seconds (37..41): spaces, then at least one digit; micros (43..48): six digits
    w = load8p(bp + b0 + 34)
    sp = _zero_bytes(w ^ _SPACES) & _M_SECS
    dg = _digits(w, _M_SECS)
    if (sp | dg) != _M_SECS or dg == 0 or sp >= (dg & (~dg + np.uint64(1))):
        return -1, 0.0
    whole = _value8((w | (sp >> np.uint64(3))) & ~np.uint64(0xFFFFFF))
    w = load8p(bp + b0 + 43)
    if _digits(w, _M_MICROS) != _M_MICROS:
        return -1, 0.0
    frac = _value8((w & np.uint64(0x0000FFFFFFFFFFFF)) << np.uint64(16))
    return c, whole + frac / 1000000.0


@lab_jit(nogil=True, inline=True)
def tracefs_header(bp, b0):
    """:func:`header_columns` and the event token after them.

    ``(cpu, seconds, event start, event end)`` (the token bytes ``start:end`` ends in ``:``), or
    cpu -1 when the line is not in tracefs's layout."""
    c, ts = header_columns(bp, b0)
    if c < 0:
        return -1, 0.0, 0, 0
    q = skip_spaces(bp, b0 + 50)
    if load1p(bp + q) == 10:
        return -1, 0.0, 0, 0
    e = delim(bp, q)
    if e - q < 2 or load1p(bp + e - 1) != 58:
        return -1, 0.0, 0, 0
    return c, ts, q, e


_E_KFREE = _word(b"kfree: ")
_E_KMALLOC = _word(b"kmalloc:")
_E_CACHE = _word(b"kmem_cac")
_E_FREE = _word(b"he_free:")
_E_ALLOC = _word(b"he_alloc")
_M7 = np.uint64((1 << 56) - 1)


@lab_jit(nogil=True, inline=True)
def tracefs_event(bp, b0):
    """A tracefs line's kmem event at fixed columns: ``(cpu, seconds, EV_*, end of event name)``.

    For ``kmem_cache_alloc``, ``kmalloc``, ``kfree``, ``kmem_cache_free`` named right after the
    header (one space); cpu -1 for any other line."""
    c, ts = header_columns(bp, b0)
    if c < 0:
        return -1, 0.0, EV_OTHER, 0
    w = load8p(bp + b0 + 51)
    if (w & _M7) == _E_KFREE:
        return c, ts, EV_KFREE, b0 + 57
    if w == _E_KMALLOC and load1p(bp + b0 + 59) == 32:
        return c, ts, EV_KMALLOC, b0 + 59
    if w == _E_CACHE:
        w = load8p(bp + b0 + 59)
        if w == _E_FREE and load1p(bp + b0 + 67) == 32:
            return c, ts, EV_CACHE_FREE, b0 + 67
        if w == _E_ALLOC and load1p(bp + b0 + 67) == 58 and load1p(bp + b0 + 68) == 32:
            return c, ts, EV_CACHE_ALLOC, b0 + 68
    return -1, 0.0, EV_OTHER, 0


_K_CALL = _word(b" call_si")
_K_CALL2 = _word(b"te=")
_K_PTR = _word(b" ptr=")
_K_NAME = _word(b" name=")
_K_REQ = _word(b" bytes_r")
_K_REQ2 = _word(b"eq=")
_K_ALLOC = _word(b" bytes_a")
_K_ALLOC2 = _word(b"lloc=")
_K_GFP = _word(b" gfp_fla")
_K_GFP2 = _word(b"gs=")
_K_NODE = _word(b" node=")
_K_NODE_ANY = _word(b"-1")
_K_ACCT = _word(b" account")
_K_ACCT2 = _word(b"ed=")
_V_TRUE = _word(b"true\n")
_V_FALSE = _word(b"false\n")
_M2, _M3, _M5, _M6 = _mask(2), _mask(3), _mask(5), _mask(6)


@lab_jit(nogil=True, inline=True)
def _decimal_field(bp, q):
    """``(value, end)`` of a decimal field value at offset ``q`` followed by a space, or end -1.

    The value has 1 to 7 digits."""
    k, v = dec8(bp, q)
    if k == 0 or k == 8 or load1p(bp + q + k) != 32:
        return 0, -1
    return v, q + k


@lab_jit(nogil=True, inline=True)
def fixed_fields(bp, q, has_name, has_sizes):
    """A kmem event's fields read in tracefs's order from ``bp + q``, the space after its name.

    `` call_site=S ptr=<16 hex digits>``, then `` name=N`` if ``has_name``, then if ``has_sizes``
    `` bytes_req=D bytes_alloc=D gfp_flags=G node=D`` and optionally `` accounted=W``, then the
    newline (S, N, G, W: no byte below ``!``, G not starting with a digit; D: 1 to 7 digits,
    ``node`` also ``-1``; bytes_req at most bytes_alloc). Returns ``(ok, newline, ptr,
    bytes_req, bytes_alloc, gfp start, gfp end, gfp hash, node, name start, name end, name
    hash)`` (gfp start -1: none; the caller turns the gfp token into bits); ``ok`` False (the
    rest meaningless) when the line deviates in any byte, and then the general walk reads the
    fields."""
    bad = (False, q, np.uint64(0), -1, -1, -1, -1, np.uint64(0), -1, -1, -1, np.uint64(0))
    if load8p(bp + q) != _K_CALL or (load8p(bp + q + 8) & _M3) != _K_CALL2:
        return bad
    q = ctl_end(bp, q + 11)
    if (load8p(bp + q) & _M5) != _K_PTR:
        return bad
    ok0, hi = hex8(load8p(bp + q + 5))
    ok1, lo = hex8(load8p(bp + q + 13))
    t = load1p(bp + q + 21)
    if not (ok0 and ok1) or not (t == 32 or t == 10):
        return bad
    p = (hi << np.uint64(32)) | lo
    q += 21
    nm0 = -1
    nm1 = -1
    nh = np.uint64(0)
    if has_name:
        if t != 32 or (load8p(bp + q) & _M6) != _K_NAME:
            return bad
        nm0 = q + 6
        q, nh = token_hash(bp, nm0)
        t = load1p(bp + q)
        if not (t == 32 or t == 10) or q == nm0:        # (an empty name: the general walk's)
            return bad
        nm1 = q
    if not has_sizes:
        if t != 10:
            return bad
        return True, q, p, -1, -1, -1, -1, np.uint64(0), -1, nm0, nm1, nh
    if t != 32 or load8p(bp + q) != _K_REQ or (load8p(bp + q + 8) & _M3) != _K_REQ2:
        return bad
    req, q = _decimal_field(bp, q + 11)
    if q < 0 or load8p(bp + q) != _K_ALLOC or (load8p(bp + q + 8) & _M5) != _K_ALLOC2:
        return bad
    alloc, q = _decimal_field(bp, q + 13)
    if q < 0 or req > alloc or load8p(bp + q) != _K_GFP or (load8p(bp + q + 8) & _M3) != _K_GFP2:
        return bad
    g0 = q + 11
    if 48 <= load1p(bp + g0) <= 57:                           # a number: the walk reads it
        return bad
    ge, gh = token_hash(bp, g0)
    if load1p(bp + ge) != 32:
        return bad
    q = ge
    if (load8p(bp + q) & _M6) != _K_NODE:
        return bad
    q += 6
    if (load8p(bp + q) & _M2) == _K_NODE_ANY:
        node = -1
        q += 2
    else:
        k, node = dec8(bp, q)
        if k == 0 or k == 8:
            return bad
        q += k
    t = load1p(bp + q)
    if t == 32:                                        # accounted=W, the last field
        if load8p(bp + q) != _K_ACCT or (load8p(bp + q + 8) & _M3) != _K_ACCT2:
            return bad
        w = load8p(bp + q + 11)
        if (w & _M5) == _V_TRUE:
            q += 15
        elif (w & _M6) == _V_FALSE:
            q += 16
        else:
            q = ctl_end(bp, q + 11)
        t = load1p(bp + q)
    if t != 10:
        return bad
    return True, q, p, req, alloc, g0, ge, gh, node, nm0, nm1, nh
