"""``validate``'s whole-machine invariants, and the error record every invariant check writes.

The RCU list and marks (invariants 9 and 8's waiting list), the lost objects' counts (10), the
frames' owners (12), each sheaf reached once as an object of the allocator's own (8) and the
held bits outside the slabs of active caches (13), which ``checks.validate`` checks after
every cache's (each slab's held bits, 13 too, are its cache's check: :func:`_held_slab_bad`);
``_corrupt`` records what broke and where for each (``checks.CORRUPTION``). ARCHITECTURE.md,
"Invariants"."""
from __future__ import annotations

from .layout import (AT_COUNT, AT_FRAME, AT_OBJECT, AT_SHEAF, AT_SHIFT, C_MAIN, C_RCU_FREE,
                     C_SPARE, CA_ACTIVE, CA_FP_KEY, CA_OFFSET, CA_RED_LEFT, CA_SHEAF_CAPACITY,
                     CA_SIZE, CA_USER_SHEAVES, G_ERR0, G_ERR1, G_NLOST, G_NRCU, G_RCU_HEAD,
                     G_RCU_TAIL, N_BARN_EMPTY, N_BARN_FULL, N_NR_FULL, NIL, PG_HEAD,
                     PG_ISOLATED, PG_SLAB, PG_TAIL, SH_CACHE, SH_CAPACITY, SH_NEXT, SH_OBJECTS,
                     SH_SIZE, _ca, _cpu_row, _node_index, _node_row, _shadow)
from .freelist import _get_fp
from .live import _aux, _own_clear, _own_set, _own_test
from .native import jit

E_CORRUPT = -8        #: ``validate`` found a broken invariant (G_ERR0 = what, G_ERR1 = where)


@jit
def _corrupt(st, what, kind, where):
    """Record a broken invariant and where it is; returns E_CORRUPT.

    ``what`` is an index of ``checks.CORRUPTION``, ``where`` of kind ``AT_*``."""
    st.g[G_ERR0] = what | kind << AT_SHIFT
    st.g[G_ERR1] = where
    return E_CORRUPT


@jit(inline=True)
def _rcu_set(st, a):
    """Mark the object at ``a`` as waiting for an RCU grace period (field ``rcu``)."""
    st.rcu[a >> 9] |= 1 << ((a >> 3) & 63)


@jit(inline=True)
def _rcu_clear(st, a):
    """Lift the RCU mark of the object at ``a``."""
    st.rcu[a >> 9] &= ~(1 << ((a >> 3) & 63))


@jit
def _rcu_marks_of(st, sheaf, mode):
    """:func:`_rcu_sheaf_marks` of one sheaf (0: none)."""
    if sheaf == 0:
        return -1
    mem = st.mem
    for i in range(mem[(sheaf >> 3) + SH_SIZE]):
        a = mem[(sheaf >> 3) + SH_OBJECTS + i]
        if mode == 0:
            if not (st.rcu[a >> 9] >> ((a >> 3) & 63)) & 1:
                return a
        elif mode == 1:
            _rcu_clear(st, a)
        else:
            _rcu_set(st, a)
    return -1


@jit
def _rcu_sheaf_marks(st, mode):
    """Visit the RCU sheaves' objects: find one without an RCU mark, lift or put back the marks.

    The RCU sheaves are the CPUs' ``rcu_free`` sheaves and those waiting for their grace period,
    whose words the other invariants checked. ``mode`` 0 finds the first without an RCU mark (-1:
    none), 1 lifts their marks, 2 puts them back (-1)."""
    for c in range(st.max_caches):
        if _ca(st, c, CA_ACTIVE) and _ca(st, c, CA_SHEAF_CAPACITY):
            for cpu in range(st.ncpus):
                a = _rcu_marks_of(st, st.cpu[_cpu_row(st, c, cpu) + C_RCU_FREE], mode)
                if a != -1:
                    return a
    sheaf = st.g[G_RCU_HEAD]
    for _ in range(st.g[G_NRCU]):
        a = _rcu_marks_of(st, sheaf, mode)
        if a != -1:
            return a
        sheaf = st.mem[(sheaf >> 3) + SH_NEXT]
    return -1


@jit
def _validate_rcu_marks(st):
    """Invariant 9, with the list's marks lifted: 0 or E_CORRUPT (G_ERR1: the object).

    Field ``rcu`` marks exactly the objects of the RCU sheaves."""
    missing = _rcu_sheaf_marks(st, 0)
    if missing != -1:
        return _corrupt(st, 18, AT_OBJECT, missing)
    _rcu_sheaf_marks(st, 1)                 # lifted for the scan, put back after it
    err = 0
    rcu = st.rcu
    for w in range(st.npages * 8):
        if rcu[w]:
            bit = 0
            while not (rcu[w] >> bit) & 1:
                bit += 1
            err = _corrupt(st, 17, AT_OBJECT, (w << 9) + bit * 8)
            break
    _rcu_sheaf_marks(st, 2)
    return err


@jit
def _sheaf_step(st, sheaf, mode, k, n):
    """:func:`_visit_sheaves`' step at the sheaf at handle ``sheaf`` (0: none), the ``k``-th met.

    Mode 0 lifts its object's own mark (``live._own_set``); a sheaf with none (no object of the
    allocator's own, or one met before in this visit) fails: -1 - k, G_ERR1 its handle. Mode 1 puts
    the mark back. ``k`` + 1 after a sheaf, ``k`` when there is none or ``n`` were met."""
    if sheaf == 0 or k >= n:
        return k
    a = sheaf - _shadow(st)
    if mode == 1:
        _own_set(st, a)
    elif _own_test(st, a, 16):
        _own_clear(st, a)
    else:
        st.g[G_ERR1] = sheaf
        return -1 - k
    return k + 1


@jit
def _visit_sheaves(st, mode, n):
    """Visit every sheaf reachable, in one fixed order, at most ``n``: how many, or -1 - k.

    Each active cache's CPUs' main, spare and ``rcu_free`` sheaves, its barns' full and empty lists
    and partial sheaves, its user's list, then the list of sheaves waiting for their grace period
    (the walks bounded as the invariants before checked them). Mode 0 stops at the ``k``-th that
    fails (:func:`_sheaf_step`): -1 - k; mode 1 puts back the marks of the first ``n``."""
    mem = st.mem
    nd = st.node
    k = 0
    for c in range(st.max_caches):
        if not _ca(st, c, CA_ACTIVE):
            continue
        for cpu in range(st.ncpus):
            r = _cpu_row(st, c, cpu)
            for col in (C_MAIN, C_SPARE, C_RCU_FREE):
                k = _sheaf_step(st, st.cpu[r + col], mode, k, n)
                if k < 0 or k >= n:
                    return k
        for node in range(st.nnodes):
            r = _node_row(st, c, node)
            for col in (N_BARN_FULL, N_BARN_EMPTY):     # (each list's count two columns on)
                sheaf = nd[r + col]
                for _ in range(nd[r + col + N_NR_FULL - N_BARN_FULL]):
                    k = _sheaf_step(st, sheaf, mode, k, n)
                    if k < 0 or k >= n:
                        return k
                    sheaf = mem[(sheaf >> 3) + SH_NEXT]
            k = _sheaf_step(st, st.barn_partial[_node_index(st, c, node)], mode, k, n)
            if k < 0 or k >= n:
                return k
        sheaf = _ca(st, c, CA_USER_SHEAVES)
        while sheaf:
            k = _sheaf_step(st, sheaf, mode, k, n)
            if k < 0 or k >= n:
                return k
            sheaf = mem[(sheaf >> 3) + SH_NEXT]
    sheaf = st.g[G_RCU_HEAD]
    for _ in range(st.g[G_NRCU]):
        k = _sheaf_step(st, sheaf, mode, k, n)
        if k < 0 or k >= n:
            return k
        sheaf = mem[(sheaf >> 3) + SH_NEXT]
    return k


@jit
def _validate_sheaves_once(st):
    """Each sheaf reachable is an object of the allocator's own, reached once: 0 or E_CORRUPT.

    Its own mark is lifted when it is met (so a second meeting finds none), and every mark lifted
    is put back before the call returns."""
    k = _visit_sheaves(st, 0, 1 << 62)
    if k >= 0:
        _visit_sheaves(st, 1, k)
        return 0
    bad = st.g[G_ERR1]
    _visit_sheaves(st, 1, -1 - k)
    return _corrupt(st, 26, AT_SHEAF, bad)


@jit
def _validate_owners(st):
    """Check field ``sl_cache``: 0 or E_CORRUPT (G_ERR1: the frame).

    It names an active cache at the head of a slab and is NIL on every other frame: a free's check
    (:func:`_slab_of`, inlined in users' loops) reads it alone, taking the frame that names the
    cache for the slab's head."""
    flags = st.pg_flags
    owner = st.sl_cache
    for pfn in range(st.npages):
        c = owner[pfn]
        f = flags[pfn]
        if f & PG_HEAD and f & PG_SLAB:
            if not 0 <= c < st.max_caches or not _ca(st, c, CA_ACTIVE):
                return _corrupt(st, 25, AT_FRAME, pfn)
        elif c != NIL:
            return _corrupt(st, 25, AT_FRAME, pfn)
    return 0


@jit
def _validate_lost(st):
    """Check field ``sl_lost``: 0 or E_CORRUPT.

    It is 0 but at the head of a slab that is not isolated, there at most the slab's objects in
    use; its sum is ``G_NLOST``."""
    flags = st.pg_flags
    total = 0
    for pfn in range(st.npages):
        n = st.sl_lost[pfn]
        if n:
            f = flags[pfn]
            if n < 0 or not (f & PG_HEAD and f & PG_SLAB) or f & PG_ISOLATED \
                    or n > st.sl_inuse[pfn]:
                return _corrupt(st, 22, AT_FRAME, pfn)
            total += n
    if total != st.g[G_NLOST]:
        return _corrupt(st, 22, AT_COUNT, total)
    return 0


@jit
def _validate_rcu_list(st):
    """Check the list of sheaves waiting for their grace period (``engine/rcusheaves.py``).

    It checks links, count and tail, and each sheaf's callback word (a CPU) and cache (active, with
    sheaves). 0 or E_CORRUPT (checked before any cache walks it)."""
    mem = st.mem
    g = st.g
    sheaf = g[G_RCU_HEAD]
    last = 0
    n = 0
    while sheaf:
        n += 1
        if n > g[G_NRCU] or sheaf <= _shadow(st) or sheaf >= 2 * _shadow(st) - 8 * SH_OBJECTS \
                or sheaf & 7:
            return _corrupt(st, 16, AT_SHEAF, sheaf)
        w = sheaf >> 3
        info = -1 - mem[w + SH_CAPACITY]
        cache = mem[w + SH_CACHE]
        if info < 0 or info >> 1 >= st.ncpus or cache < 0 or cache >= st.max_caches \
                or not _ca(st, cache, CA_ACTIVE) or not _ca(st, cache, CA_SHEAF_CAPACITY):
            return _corrupt(st, 16, AT_SHEAF, sheaf)
        last = sheaf
        sheaf = mem[w + SH_NEXT]
    if n != g[G_NRCU] or g[G_RCU_TAIL] != last:
        return _corrupt(st, 16, AT_COUNT, n)
    return 0


# ---- the held bitmap (invariant 13) -------------------------------------------------------------
@jit
def _held_free_list(st, cache, obj, nobj):
    """Whether an object of the free list from ``obj`` (at most ``nobj``, checked) is held."""
    held = st.held
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    k = 0
    while obj != 0 and k < nobj:
        if (held[obj >> 9] >> ((obj >> 3) & 63)) & 1:
            return True
        obj = _get_fp(st.mem, offset, key, obj)
        k += 1
    return False


@jit
def _held_slab_bad(st, cache, slab, off_lists):
    """Whether the held bits of ``slab`` (a checked slab of ``cache``) are wrong.

    A cache that keeps the bitmap (``live._aux``): set only at its objects' starts, on no object
    of its free list, and (the slab not isolated: its free list leaked) on exactly ``off_lists``
    objects: those on neither its free list nor a CPU's, less the lost ones (``sl_lost``: free
    objects a stray write made a list skip, never taken off it), so in use or cached. Any other
    cache: none set."""
    held = st.held
    total = 0
    for w in range(slab << 3, (slab + (1 << st.pg_order[slab])) << 3):
        v = held[w]
        while v:
            v &= v - 1
            total += 1
    if not _aux(st, cache):
        return total != 0
    size = _ca(st, cache, CA_SIZE)
    base = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
    nobj = st.sl_objects[slab]
    on = 0
    for i in range(nobj):
        a = base + i * size
        on += (held[a >> 9] >> ((a >> 3) & 63)) & 1
    if on != total or _held_free_list(st, cache, st.sl_freelist[slab], nobj):
        return True
    return on != off_lists and not st.pg_flags[slab] & PG_ISOLATED


@jit
def _validate_held_frames(st):
    """Check that no held bit is set outside the slabs of active caches: 0 or E_CORRUPT.

    Each slab's own bits are its cache's check (:func:`_held_slab_bad`); every other frame (free,
    a large kmalloc's, a discarded slab waiting for its grace period) has none."""
    flags = st.pg_flags
    held = st.held
    for pfn in range(st.npages):
        head = st.pg_head[pfn] if flags[pfn] & PG_TAIL else pfn
        f = flags[head] if 0 <= head < st.npages else 0
        c = st.sl_cache[head] if 0 <= head < st.npages else NIL
        if f & PG_HEAD and f & PG_SLAB and 0 <= c < st.max_caches and _ca(st, c, CA_ACTIVE):
            continue
        for w in range(pfn << 3, (pfn + 1) << 3):
            if held[w]:
                return _corrupt(st, 27, AT_FRAME, pfn)
    return 0
