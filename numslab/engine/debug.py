"""slab_debug's slow paths around the single-object slab layer, and ``validate_slab_cache``.

``alloc_debug_processing``/``free_debug_processing`` around the single-object slab layer, and
``validate_slab_cache`` (``on_freelist``, ``check_object``, ``check_pad_bytes``,
``slab_pad_check``) with the kernel's reports and repairs.

Debug caches have no sheaves and no CPU slab: every allocation is ``___slab_alloc`` of one
object from a partial or new slab (``nocpu.slab_alloc_single``, both generations) and every
free goes to the slab (``__slab_free``), as in the kernel. Reports go to the ring of
``redzone._report``; the facade turns them into the kernel's text.
"""
from __future__ import annotations

from ..flags import (__GFP_ZERO, FREE_SLOWPATH, SLAB_CONSISTENCY_CHECKS, SLAB_POISON,
                     SLAB_RED_ZONE, SLAB_STORE_USER)
from .live import _live_clear, _live_set, _live_test, _settled
from .checks import E_DOUBLE_FREE, _rcu_list_marks
from .layout import (CA_DEBUG, CA_FP_KEY, CA_INUSE, CA_OBJECT_SIZE, CA_OFFSET, CA_ORIG,
                     CA_RED_LEFT, CA_SIZE, CA_USER_SHEAVES, D_OBJECT_POISON, G_FAULT_CACHE,
                     G_FAULT_SLAB, G_FAULT_VALUE, G_NLOST, G_NREPORTS, G_TICKS, NIL,
                     N_PARTIAL_HEAD, PG_HEAD, PG_ISOLATED, PG_NODE_PARTIAL, PG_SLAB, PG_SORTED,
                     SH_NEXT, SH_OBJECTS, SH_SIZE, _ca,
                     _head_frame, _node_row, _stat)
from .native import byte_array, jit, unit, words_at, zero_bytes
from .nocpu import slab_alloc_single
from .partialorder import sorted_refile
from .redzone import (K_ALIGN_PAD, K_ALREADY_FREE, K_CYCLE, K_END_POISON, K_FIX_ALL_USED,
                      K_FIX_CLEARED, K_FIX_COUNT, K_FIX_NOT_FREED, K_FREECHAIN, K_FREELIST,
                      K_FREEPOINTER, K_KMALLOC_REDZONE, K_LEFT_REDZONE, K_OBJECT_PAD,
                      K_POISON, K_REMAINING, K_REMAINING_OBJECT, K_RIGHT_REDZONE, K_SLAB_PAD,
                      K_WRONG_COUNT, POISON_END, POISON_FREE, POISON_INUSE, RED_ACTIVE,
                      RED_INACTIVE, TRACK_ALLOC, TRACK_FREE, TRACK_SIZE, _report,
                      check_bytes, get_orig_size, init_object, set_orig_size, set_track)
from .freelist import _get_fp, _set_fp
from .slablists import _isolate, slab_free

E_DEBUG = -10          #: a slab_debug check refused a free (reported; the object stays allocated)


@jit(inline=True)
def _obj_base(st, cache, slab):
    """Address of the first object of ``slab`` (after the left red zone)."""
    return (slab << 12) + _ca(st, cache, CA_RED_LEFT)


@jit
def check_valid_pointer(st, cache, slab, obj):
    """``check_valid_pointer``: 1 if ``obj`` is NULL or on ``slab``'s object grid."""
    if obj == 0:
        return 1
    off = obj - _obj_base(st, cache, slab)
    size = _ca(st, cache, CA_SIZE)
    if off < 0 or off >= st.sl_objects[slab] * size or off % size:
        return 0
    return 1


@jit
def _info_end(st, cache):
    """``get_info_end``: past the free pointer when it is outside the object, else ``inuse``."""
    offset = _ca(st, cache, CA_OFFSET)
    inuse = _ca(st, cache, CA_INUSE)
    return offset + 8 if offset >= inuse else inuse


@jit
def check_pad_bytes(st, m8, cache, slab, obj):
    """``check_pad_bytes``: the bytes after the free pointer hold ``POISON_INUSE``.

    The bytes after the free pointer, tracks and ``orig_size``, up to the next object's left red
    zone."""
    flags = _ca(st, cache, CA_DEBUG)
    off = _info_end(st, cache)
    if flags & SLAB_STORE_USER:
        off += 2 * TRACK_SIZE
        if _ca(st, cache, CA_ORIG):
            off += 8                    # orig_size: an unsigned long
    end = _ca(st, cache, CA_SIZE)
    if flags & SLAB_RED_ZONE:
        end -= _ca(st, cache, CA_RED_LEFT)
    if end == off:
        return 1
    return check_bytes(st, m8, cache, slab, obj, K_OBJECT_PAD, obj + off, POISON_INUSE,
                       end - off)


@jit
def check_object(st, m8, cache, slab, obj, val):
    """``check_object``: an object's red zones, poison, padding, free pointer; 1 if all hold.

    The red zones are the left, the right, and a kmalloc object's bytes past ``orig_size``; the
    poison that of a free object; the free pointer when it can be read. Else 0 after reporting and
    restoring each bad run."""
    flags = _ca(st, cache, CA_DEBUG)
    osz = _ca(st, cache, CA_OBJECT_SIZE)
    inuse = _ca(st, cache, CA_INUSE)
    ret = 1
    if flags & SLAB_RED_ZONE:
        red = _ca(st, cache, CA_RED_LEFT)
        if not check_bytes(st, m8, cache, slab, obj, K_LEFT_REDZONE, obj - red, val, red):
            ret = 0
        if not check_bytes(st, m8, cache, slab, obj, K_RIGHT_REDZONE, obj + osz, val,
                           inuse - osz):
            ret = 0
        if _ca(st, cache, CA_ORIG) and val == RED_ACTIVE:
            orig = get_orig_size(st, m8, cache, obj)
            if osz > orig and not check_bytes(st, m8, cache, slab, obj, K_KMALLOC_REDZONE,
                                              obj + orig, val, osz - orig):
                ret = 0
    elif flags & SLAB_POISON and osz < inuse:
        if not check_bytes(st, m8, cache, slab, obj, K_ALIGN_PAD, obj + osz, POISON_INUSE,
                           inuse - osz):
            ret = 0
    if flags & SLAB_POISON:
        if val != RED_ACTIVE and flags & D_OBJECT_POISON:
            if not check_bytes(st, m8, cache, slab, obj, K_POISON, obj, POISON_FREE, osz - 1):
                ret = 0
            if not check_bytes(st, m8, cache, slab, obj, K_END_POISON, obj + osz - 1,
                               POISON_END, 1):
                ret = 0
        if not check_pad_bytes(st, m8, cache, slab, obj):
            ret = 0
    offset = _ca(st, cache, CA_OFFSET)
    if offset >= inuse or val != RED_ACTIVE:
        key = _ca(st, cache, CA_FP_KEY)
        fp = _get_fp(st.mem, offset, key, obj)
        if not check_valid_pointer(st, cache, slab, fp):
            _report(st, K_FREEPOINTER, cache, slab, obj, fp, 0, 0, 0)
            _set_fp(st.mem, offset, key, obj, 0)
            ret = 0
    return ret


# ---- the debug slow paths ---------------------------------------------------------------------
@unit
def slab_alloc_debug(st, cache, cpu, node, gfp, orig_size):
    """``___slab_alloc`` of a debug cache, with ``alloc_debug_processing``; the object, or 0.

    One object from a partial or new slab, then ``alloc_debug_processing`` (F: ``check_object`` of
    the free object; a failure marks the slab's objects all used, which numslab does by isolating
    it, and the call returns 0 with G_FAULT_* set); ``orig_size`` stored,
    ``init_object(RED_ACTIVE)``, the alloc track (U), then ``slab_post_alloc_hook``'s zeroing (up
    to ``orig_size`` when it is stored). The object is handed out."""
    obj = slab_alloc_single(st, cache, cpu, node, gfp)
    g = st.g
    if obj == 0:
        if g[G_FAULT_CACHE] == cache + 1:    # the free-pointer guard isolated a slab
            _report(st, K_FREEPOINTER, cache, g[G_FAULT_SLAB], 0, g[G_FAULT_VALUE], 0, 0, 0)
            _report(st, K_FIX_ALL_USED, cache, g[G_FAULT_SLAB], 0, 0, 0, 0, 0)
        return 0
    flags = _ca(st, cache, CA_DEBUG)
    m8 = byte_array(st.mem, st.mem_size)
    slab = _head_frame(st, obj >> 12)
    if flags & SLAB_CONSISTENCY_CHECKS:
        slab_pad_check(st, m8, cache, slab)         # check_slab (reports, never refuses)
        if not check_object(st, m8, cache, slab, obj, RED_INACTIVE):
            # (with the slab's inuse and freelist before the fix, which the reports above
            # print: R_A, R_B, and R_C = 1 marking them)
            _report(st, K_FIX_ALL_USED, cache, slab, obj, st.sl_inuse[slab],
                    st.sl_freelist[slab], 1, 0)
            _isolate(st, cache, slab, obj)
            return 0
    if g[G_FAULT_CACHE] == cache + 1:        # the guard isolated a slab on the way
        _report(st, K_FREEPOINTER, cache, g[G_FAULT_SLAB], 0, g[G_FAULT_VALUE], 0, 0, 0)
        _report(st, K_FIX_ALL_USED, cache, g[G_FAULT_SLAB], 0, 0, 0, 0, 0)
    g[G_TICKS] += 1
    set_orig_size(st, m8, cache, obj, orig_size)
    init_object(st, m8, cache, obj, RED_ACTIVE)
    if flags & SLAB_STORE_USER:
        set_track(st, cache, obj, TRACK_ALLOC, cpu)
    if gfp & __GFP_ZERO:
        zero_bytes(st.mem, obj, orig_size if _ca(st, cache, CA_ORIG) else
                   _ca(st, cache, CA_OBJECT_SIZE))
    _live_set(st, obj)
    return obj


@unit
def slab_free_debug(st, cache, cpu, slab, addr):
    """``free_to_partial_list`` with ``free_debug_processing`` for a live object of a debug cache.

    F checks it (``check_object(RED_ACTIVE)``) and refuses the free on a failure (reported; the
    object stays allocated: E_DEBUG); then the free track (U), ``init_object(RED_INACTIVE)`` and
    ``__slab_free``. 0 or E_DEBUG."""
    flags = _ca(st, cache, CA_DEBUG)
    m8 = byte_array(st.mem, st.mem_size)
    if flags & SLAB_CONSISTENCY_CHECKS:
        slab_pad_check(st, m8, cache, slab)         # check_slab
        if not check_object(st, m8, cache, slab, addr, RED_ACTIVE):
            _report(st, K_FIX_NOT_FREED, cache, slab, addr, 0, 0, 0, 0)
            return E_DEBUG
    st.g[G_TICKS] += 1
    if flags & SLAB_STORE_USER:
        set_track(st, cache, addr, TRACK_FREE, cpu)
    init_object(st, m8, cache, addr, RED_INACTIVE)
    _live_clear(st, addr)
    slab_free(st, cache, cpu, slab, addr, addr, 1)
    _stat(st, cache, cpu, FREE_SLOWPATH, 1)
    return 0


@jit
def free_chain_debug(st, cache, cpu, slab, p, lo, hi):
    """``free_to_partial_list`` of the detached freelist ``p[lo:hi]`` of debug cache ``cache``.

    Head ``p[lo]``, tail ``p[hi - 1]``, all on ``slab``, their live bits already cleared.
    ``free_debug_processing`` walks the chain from its head, with F ``check_slab``'s pad check
    once, then per object ``check_object(RED_ACTIVE)``; each object that passes gets its free track
    (U) and ``init_object(RED_INACTIVE)`` before the next one is checked (``trace()`` runs there:
    the facade prints it). A failed check refuses the whole chain ("Object at .. not freed"): every
    object of it stays allocated (live bits set again), the ones before the failing one keeping
    their inactive bytes, as in the kernel; returns the failing object's index. Else the chain is
    linked through its free pointers and spliced by ``__slab_free`` (no FREE_SLOWPATH: the callers
    count) and -1 is returned."""
    flags = _ca(st, cache, CA_DEBUG)
    m8 = byte_array(st.mem, st.mem_size)
    if flags & SLAB_CONSISTENCY_CHECKS:
        slab_pad_check(st, m8, cache, slab)         # check_slab
    for k in range(lo, hi):
        obj = p[k]
        if flags & SLAB_CONSISTENCY_CHECKS and \
                not check_object(st, m8, cache, slab, obj, RED_ACTIVE):
            _report(st, K_FIX_NOT_FREED, cache, slab, obj, 0, 0, 0, 0)
            for j in range(lo, hi):
                _live_set(st, p[j])
            return k
        st.g[G_TICKS] += 1
        if flags & SLAB_STORE_USER:
            set_track(st, cache, obj, TRACK_FREE, cpu)
        init_object(st, m8, cache, obj, RED_INACTIVE)
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    for k in range(lo, hi - 1):
        _set_fp(st.mem, offset, key, p[k], p[k + 1])
    slab_free(st, cache, cpu, slab, p[lo], p[hi - 1], hi - lo)
    return -1


@unit
def report_double_free(st, cache, addr):
    """A free of an object that is already free, in a cache with F.

    ``object_err("Object already free")`` and ``slab_fix("Object at .. not freed")`` when the
    object is on its slab's free list, as ``free_consistency_checks`` finds it (``on_freelist``);
    an object waiting for ``kfree_rcu`` is not, and makes no report (the kernel would free it).
    Returns E_DOUBLE_FREE."""
    if cache >= 0 and _ca(st, cache, CA_DEBUG) & SLAB_CONSISTENCY_CHECKS:
        slab = _head_frame(st, addr >> 12)
        if _on_slab_freelist(st, cache, slab, addr):
            _report(st, K_ALREADY_FREE, cache, slab, addr, 0, 0, 0, 0)
            _report(st, K_FIX_NOT_FREED, cache, slab, addr, 0, 0, 0, 0)
    return E_DOUBLE_FREE


@jit
def _on_slab_freelist(st, cache, slab, addr):
    """``on_freelist(s, slab, addr)``'s answer: whether ``addr`` is on ``slab``'s free list.

    The list is walked no further than the slab's objects and no pointer followed off its grid (a
    bad one ends the walk: ``validate`` is what reports and mends it)."""
    fp = st.sl_freelist[slab]
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    for _ in range(st.sl_objects[slab]):
        if fp == 0 or not check_valid_pointer(st, cache, slab, fp):
            return False
        if fp == addr:
            return True
        fp = _get_fp(st.mem, offset, key, fp)
    return False


# ---- validate_slab_cache --------------------------------------------------------------------
@jit
def _in_user_sheaf(st, cache, obj):
    """Whether one of ``cache``'s prefilled sheaves holds ``obj``.

    The repair's walk: a debug cache has no other sheaves; the list's length is bounded by the
    arena's words."""
    mem = st.mem
    sheaf = _ca(st, cache, CA_USER_SHEAVES)
    for _ in range(st.npages << 9):
        if sheaf == 0:
            break
        w = sheaf >> 3
        for k in range(mem[w + SH_SIZE]):
            if mem[w + SH_OBJECTS + k] == obj:
                return True
        sheaf = mem[w + SH_NEXT]
    return False


@jit
def on_freelist(st, cache, slab):
    """``on_freelist(s, slab, NULL)``: walk the slab's free list.

    A bad pointer cuts the chain at the object holding it ("Freechain corrupt") or, at the head,
    clears the list ("Freepointer corrupt"); a walk longer than the slab is a cycle (cleared too);
    a wrong ``inuse`` is set right. 1, or 0 when the list was cleared (numslab then isolates the
    slab, whose free objects leak as in the kernel).

    A pointer is bad off the grid (``check_valid_pointer``) and also, numslab's guard as in
    ``slablists._fp_next``, when it names an object that is live, waits for ``kfree_rcu`` or
    is held by a prefilled sheaf
    (the kernel cannot tell: it would follow the user's bytes as a free pointer and write
    NULL into them). The objects a cut leaves off the list stay counted in ``inuse``, as the
    kernel leaks them: the change of ``inuse`` is the change of the slab's lost objects
    (``sl_lost``, ``G_NLOST``; a list made whole again gives them back)."""
    fp = st.sl_freelist[slab]
    nobj = st.sl_objects[slab]
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    nr = 0
    obj = 0
    while fp != 0 and nr <= nobj:
        if not check_valid_pointer(st, cache, slab, fp) or _live_test(st, fp) or \
                (st.rcu[fp >> 9] >> ((fp >> 3) & 63)) & 1 or _in_user_sheaf(st, cache, fp):
            if obj != 0:
                _report(st, K_FREECHAIN, cache, slab, obj, fp, 0, 0, 0)
                _set_fp(st.mem, offset, key, obj, 0)
                break
            _report(st, K_FREELIST, cache, slab, 0, fp, 0, 0, 0)
            _report(st, K_FIX_CLEARED, cache, slab, 0, st.sl_inuse[slab],
                    st.sl_freelist[slab], 1, 0)         # (as K_FIX_ALL_USED's)
            return 0
        obj = fp
        fp = _get_fp(st.mem, offset, key, obj)
        nr += 1
    if nr > nobj:
        _report(st, K_CYCLE, cache, slab, 0, 0, 0, 0, 0)
        _report(st, K_FIX_CLEARED, cache, slab, 0, st.sl_inuse[slab], st.sl_freelist[slab],
                1, 0)
        return 0
    if st.sl_inuse[slab] != nobj - nr:
        _report(st, K_WRONG_COUNT, cache, slab, 0, st.sl_inuse[slab], nobj - nr, 0, 0)
        lost = max(st.sl_lost[slab] + nobj - nr - st.sl_inuse[slab], 0)
        st.g[G_NLOST] += lost - st.sl_lost[slab]
        st.sl_lost[slab] = lost
        st.sl_inuse[slab] = nobj - nr
        if st.pg_flags[slab] & PG_SORTED:       # its free count changed: to its new place
            sorted_refile(st, cache, slab)
        _report(st, K_FIX_COUNT, cache, slab, 0, 0, 0, 0, 0)
    return 1


@jit
def slab_pad_check(st, m8, cache, slab):
    """``slab_pad_check`` (P): the slab's bytes after its last object hold ``POISON_INUSE``.

    "Padding overwritten" otherwise. 1 or 0 (reported, restored)."""
    if not _ca(st, cache, CA_DEBUG) & SLAB_POISON:
        return 1
    length = 4096 << st.pg_order[slab]
    remainder = length % _ca(st, cache, CA_SIZE)
    if remainder == 0:
        return 1
    start = (slab << 12) + length - remainder
    return check_bytes(st, m8, cache, slab, 0, K_SLAB_PAD, start, POISON_INUSE, remainder)


@jit
def validate_slab(st, m8, cache, slab):
    """``validate_slab``: check a slab's padding, free list, then each object until one fails.

    ``slab_pad_check``, ``on_freelist``, then ``check_object`` of every object (free ones as
    RED_INACTIVE, the rest RED_ACTIVE) until one fails."""
    slab_pad_check(st, m8, cache, slab)
    if not on_freelist(st, cache, slab):
        st.sl_freelist[slab] = 0
        st.sl_inuse[slab] = st.sl_objects[slab]
        if not st.pg_flags[slab] & PG_ISOLATED:
            _isolate(st, cache, slab, 0)
            g = st.g                        # validate raises nothing: the report says it
            g[G_FAULT_CACHE] = 0
            g[G_FAULT_SLAB] = 0
            g[G_FAULT_VALUE] = 0
        return
    n = st.sl_objects[slab]
    free = st.scratch                   # one word per object: 1 if on the free list
    base = _obj_base(st, cache, slab)
    size = _ca(st, cache, CA_SIZE)
    mapped = n <= st.npages             # the scratch holds max(npages, 64) words
    if mapped:
        for i in range(n):
            free[i] = 0
        offset = _ca(st, cache, CA_OFFSET)
        key = _ca(st, cache, CA_FP_KEY)
        fp = st.sl_freelist[slab]
        while fp != 0:
            free[(fp - base) // size] = 1
            fp = _get_fp(st.mem, offset, key, fp)
    for i in range(n):
        if mapped:
            val = RED_INACTIVE if free[i] else RED_ACTIVE
        else:                           # (tiny arenas) the live bitmap says it
            val = RED_ACTIVE if _live_test(st, base + i * size) else RED_INACTIVE
        if not check_object(st, m8, cache, slab, base + i * size, val):
            break


@unit
def validate_slab_cache(st, cache, n, paddr):
    """``validate_slab_cache``: ``validate_slab`` on every partial and, with U, every full slab.

    The partial slabs of every node's partial list; the full slabs with U (the kernel keeps a full
    list then). Returns the reports written (the errors the kernel's KUnit tests count); bad bytes
    are restored. The ``n`` objects at ``paddr`` (the ``kfree_rcu`` list) are checked as the
    allocated objects they are (``checks.validate``)."""
    if not _ca(st, cache, CA_DEBUG):
        return 0
    p = words_at(paddr)
    _rcu_list_marks(st, n, p, False)
    r = _validate_slab_cache(st, cache)
    _rcu_list_marks(st, n, p, True)
    return r


@jit
def _validate_slab_cache(st, cache):
    """:func:`validate_slab_cache` of the state as it stands."""
    m8 = byte_array(st.mem, st.mem_size)
    before = st.g[G_NREPORTS]
    nxt = st.pg_next
    for node in range(st.nnodes):
        slab = st.node[_node_row(st, cache, node) + N_PARTIAL_HEAD]
        while slab != NIL:
            following = nxt[slab]           # a cleared slab leaves the list
            validate_slab(st, m8, cache, slab)
            slab = following
    if _ca(st, cache, CA_DEBUG) & SLAB_STORE_USER:
        flags = st.pg_flags
        for pfn in range(st.npages):
            f = flags[pfn]
            if f & PG_HEAD and f & PG_SLAB and st.sl_cache[pfn] == cache \
                    and not f & (PG_NODE_PARTIAL | PG_ISOLATED):
                validate_slab(st, m8, cache, pfn)
    return st.g[G_NREPORTS] - before


@unit
def report_leaks(st, cache):
    """What ``__kmem_cache_shutdown`` prints for a cache destroyed with objects.

    After ``flush_all`` (nothing is flushed here: numslab refuses the destroy with the cache as it
    was) each node's ``free_partial`` calls ``list_slab_objects`` for the partial slabs holding
    objects, i.e. the slabs with live or lost objects (``sl_lost``: cut off a free list, in use to
    the kernel) and objects the flush would leave free (full slabs are on no list, an isolated one
    is off the lists): one report for the slab and one per object not free, live or lost, in
    address order. The kernel returns at the first node that still has slabs, so the later nodes
    are not listed. Returns the reports written."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    before = st.g[G_NREPORTS]
    flags = st.pg_flags
    size = _ca(st, cache, CA_SIZE)
    for node in range(st.nnodes):
        left = 0
        for pfn in range(node * st.pages_per_node, (node + 1) * st.pages_per_node):
            f = flags[pfn]
            if not (f & PG_HEAD and f & PG_SLAB and st.sl_cache[pfn] == cache):
                continue
            base = _obj_base(st, cache, pfn)
            live = 0
            for i in range(st.sl_objects[pfn]):
                live += _live_test(st, base + i * size)
            lost = st.sl_lost[pfn]
            if live + lost == 0 and not f & PG_ISOLATED:
                continue                        # empty: free_partial discards it
            left += 1
            if live + lost >= st.sl_objects[pfn] or f & PG_ISOLATED:
                continue                        # on no partial list
            kept = st.scratch                   # per object: 1 if free or held, not lost
            if lost and st.sl_objects[pfn] <= st.npages:
                _not_lost_map(st, cache, pfn, kept)
            _report(st, K_REMAINING, cache, pfn, 0, 0, 0, 0, 0)
            for i in range(st.sl_objects[pfn]):
                a = base + i * size
                if _live_test(st, a) or lost and st.sl_objects[pfn] <= st.npages \
                        and not kept[i]:
                    _report(st, K_REMAINING_OBJECT, cache, pfn, a, 0, 0, 0, 0)
        if left:
            break
    return st.g[G_NREPORTS] - before


@jit
def _not_lost_map(st, cache, slab, kept):
    """Words ``kept[i]`` for the objects of ``slab``: 1 for one that is kept, 0 for one lost.

    1 for one that is free (on the slab's free list), live, waiting for ``kfree_rcu`` or in a
    user's prefilled sheaf (a debug cache's only sheaves), 0 for one a repaired free list cut off
    (lost)."""
    n = st.sl_objects[slab]
    base = _obj_base(st, cache, slab)
    size = _ca(st, cache, CA_SIZE)
    for i in range(n):
        a = base + i * size
        kept[i] = ((st.live[a >> 9] | st.rcu[a >> 9]) >> ((a >> 3) & 63)) & 1
    fp = st.sl_freelist[slab]
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    for _ in range(n):
        if fp == 0 or not check_valid_pointer(st, cache, slab, fp):
            break
        kept[(fp - base) // size] = 1
        fp = _get_fp(st.mem, offset, key, fp)
    mem = st.mem
    sheaf = _ca(st, cache, CA_USER_SHEAVES)
    while sheaf:
        w = sheaf >> 3
        for k in range(mem[w + SH_SIZE]):
            a = mem[w + SH_OBJECTS + k]
            if base <= a < base + n * size:
                kept[(a - base) // size] = 1
        sheaf = mem[w + SH_NEXT]
