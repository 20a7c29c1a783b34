"""Checks: address validation for every free (against ``live``'s bitmap), and ``validate``.

``validate`` walks every slab and list and checks the invariants written in ARCHITECTURE.md."""
from __future__ import annotations

from .layout import (AT_CACHE, AT_CPU, AT_NODE, AT_OBJECT, AT_SHEAF, AT_SLAB, PG_ISOLATED,
                     C_FREELIST, C_MAIN, C_PARTIAL, C_RCU_FREE, C_SLAB, C_SPARE, CA_SHEAF_CAPACITY,
                     G_RCU_HEAD, CA_ACTIVE, CA_FLAGS, CA_FP_KEY, CA_OFFSET, CA_RECIP,
                     CA_OBJECT_SIZE, CA_RED_LEFT, CA_SIZE, CA_USER_SHEAVES, G_ERR0, G_ERR1, G_ERR2,
                     KERNEL_7_0, KERNEL_NEXT, N_BARN_EMPTY, N_BARN_FULL, N_NR_FULL, N_NR_PARTIAL,
                     N_NR_SLABS, N_PARTIAL_HEAD, N_PARTIAL_TAIL, N_TOTAL_OBJECTS, NIL, NR_ORDERS,
                     PG_CPU_PARTIAL, PG_FROZEN, PG_BUDDY, PG_HEAD, PG_LARGE, PG_NODE_PARTIAL,
                     PG_PCP, PG_RCU, PG_SLAB, PG_TAIL, SH_CACHE, SH_CAPACITY, SH_NEXT, SH_OBJECTS,
                     SH_SIZE, _ca, _cpu_row, _geo, _node_index, _node_row, _slab_nid, _rcu_next,
                     _sheaf_in_reach, G_PEND, PD_COUNT, PD_NPEND, PD_OBJS, PD_ROW, PD_STAMP,
                     PEND_MAX, REC_MAX, C_NCOLS)
from ..flags import SLAB_KMALLOC
from .partialorder import _check_order
from .native import address, jit, unit, words_at
from .pages import _page_block, _validate_pages
from .freelist import _get_fp
from .live import (_NOT_SIGN, _free_stamp, _live_clear, _live_set, _live_test, _own_test,
                   _pending, _repend, _settled)
from .machinecheck import (E_CORRUPT, _corrupt, _held_free_list, _held_slab_bad, _rcu_clear,
                           _rcu_set, _validate_held_frames, _validate_lost,
                           _validate_owners, _validate_rcu_list, _validate_rcu_marks,
                           _validate_sheaves_once)
from .stats import live_objects

# ---- error codes returned by kernels (negative; 0 is success / NULL) -----------------------
E_OUTSIDE = -1        #: address outside the arena
E_NOT_SLAB = -2       #: address on a page that is free, reserved or not a slab
E_WRONG_CACHE = -3    #: object of another cache (G_ERR0 = its cache id)
E_MISALIGNED = -4     #: not on the object grid of its slab (G_ERR0 = slab frame)
E_DOUBLE_FREE = -5    #: object already free
E_LARGE = -6          #: start of a large kmalloc block (G_ERR0 = head frame, G_ERR1 = order)
E_NOT_HEAD = -7       #: inside an allocated block but not at its start
#: E_CORRUPT = -8 (``machinecheck``): ``validate`` found a broken invariant
E_ALLOCATORS = -9     #: a live object the allocator holds for itself (a sheaf), not the user's
E_HOLDS_ARRAY = -11   #: a batch free's element whose object holds the batch's own address array
E_ARRAY_PLACE = -12   #: a batch's address array in the arena but not in one live block of yours
E_TWICE = -13         #: a batch free's element naming the object an earlier element names

# A batch call that fails returns its error code and the index of the bad element in one
# word: ``err - index * E_AT`` (the facade decodes it with :func:`batch_error`). Error details
# travel in return values, never in shared registers alone: another thread may run a kernel
# between a kernel's return and the facade's read of a register. The G_ERR* words still hold
# them for kernels that chain (and for ``validate``, a whole-machine report).
E_AT = 1 << 8         #: the unit of the element index in a batch error

#: What ``validate`` reports in G_ERR0 with E_CORRUPT (bits below ``layout.AT_SHIFT``; the
#: kind of place G_ERR1 names above them).
CORRUPTION = (
    "cpu slab is not a frozen slab of this cache (or a CPU has one under 7.x)",
    "free list leaves its slab or the object grid",
    "free list holds a live object",
    "free list is longer than the slab",
    "cpu partial slab is not marked or not of this cache",
    "node partial list link or mark is broken",
    "node partial list count or tail is wrong",
    "inuse + free objects != objects",
    "frozen slab is no CPU's cpu slab",
    "slab with free objects is on no list",
    "node slab or object count is wrong",
    "live objects differ from the live bitmap's count",
    "buddy free list is broken",
    "full slab on a node partial list",
    "sheaf holds a live object, a foreign object or too many objects, or a CPU's or barn's "
    "sheaf has a capacity other than its cache's",
    "sorted node partial list is out of order or its bucket heads are wrong",
    "RCU sheaf list (link, count, tail or callback word) or a CPU's rcu_free sheaf is broken",
    "an object marked as waiting for kfree_rcu is not on the kfree_rcu list nor in an RCU "
    "sheaf",
    "an object on the kfree_rcu list or in an RCU sheaf has no RCU mark",
    "a frame's compound head is wrong (pg_head: itself for a block's head, the head for its "
    "later frames, NIL for a frame in no allocated block)",
    "a barn's partial sheaf is linked, empty or full, or kept by a generation before next",
    "a barn's count of full or empty sheaves is not the length of its list",
    "lost objects (sl_lost) out of range, on an isolated slab or not a slab, or their sum "
    "is not G_NLOST",
    "the list of SLAB_TYPESAFE_BY_RCU slabs waiting for their grace period (link, mark, "
    "CPU, count or tail) is broken, or a frame so marked is not on it",
    "a CPU of a cache with sheaves has no main sheaf",
    "a frame's owner (sl_cache) is wrong: a cache named by a frame that is no slab's head, or "
    "no active cache named by a slab's head",
    "a sheaf is reached twice (from two places, or twice on one list) or is no object the "
    "allocator holds for itself",
    "a held bit is wrong: set on a free object (on a free list), on no object's start, on a slab "
    "of a cache that keeps none or outside the slabs, or missing on an object off the free lists",
    "the record of the last bulk allocation (field pend) is broken: its count is not G_PEND or "
    "past its limit, its pending part neither all nor none, its CPU row no active cache's, a "
    "pending object marked live or not held, or an object of a checked record (its stamp "
    "unmoved) no live object of the cache or there twice",
)


@jit(inline=True)
def _locate(st, addr, cache):
    """Check that ``addr`` is a live object (of ``cache`` unless it is NIL), changing nothing.

    Returns (0, slab head frame) or (error code, NIL) with details in G_ERR*."""
    g = st.g
    if addr <= 0 or addr >= st.npages << 12:
        return E_OUTSIDE, NIL
    pfn = addr >> 12
    flags = st.pg_flags
    f = flags[pfn]
    if f & PG_TAIL:
        head = st.pg_head[pfn]
        f = flags[head]
    elif f & PG_HEAD:
        head = pfn
    else:
        return E_NOT_SLAB, NIL
    if not f & PG_SLAB:
        g[G_ERR0] = head
        g[G_ERR1] = st.pg_order[head]
        if f & PG_LARGE:
            if f & PG_RCU and addr == head << 12:     # waiting for its grace period
                return E_DOUBLE_FREE, NIL
            return (E_LARGE if addr == head << 12 else E_NOT_HEAD), NIL
        return E_NOT_SLAB, NIL
    owner = st.sl_cache[head]
    if cache != NIL and owner != cache:
        g[G_ERR0] = owner
        return E_WRONG_CACHE, NIL
    off = addr - (head << 12) - _ca(st, owner, CA_RED_LEFT)
    idx = (off * _ca(st, owner, CA_RECIP)) >> 32        # off // size, exact for off < 2**22
    if off < 0 or idx * _ca(st, owner, CA_SIZE) != off or idx >= st.sl_objects[head]:
        g[G_ERR0] = head
        return E_MISALIGNED, NIL
    if not _live_test(st, addr):
        return E_DOUBLE_FREE, NIL
    if _own_test(st, addr, _ca(st, owner, CA_SIZE)):
        g[G_ERR0] = owner
        return E_ALLOCATORS, NIL
    return 0, head


@jit(inline=True)
def _slab_of(st, addr, cache):
    """The fast form of ``_locate(st, addr, cache)`` for a cache (not NIL).

    The head frame of ``addr``'s slab if ``addr`` is a live object of ``cache``, else NIL
    (``_locate`` then says why). A slab's head frame is the only frame whose ``sl_cache`` is its
    cache (every other frame holds NIL), so one load replaces the page-flag tests of the common
    case.

    No grid or bound test is needed: a live bit is set only at the start of an object
    handed out (on the grid, ``CA_RED_LEFT`` included), and in a kmalloc cache also as a
    sheaf's own mark, on the granule after the sheaf's start. In a cache of objects of 16
    bytes and more neither granule next to an object's start is ever set, while a sheaf's
    start has its mark after it and the mark has the start before it; so ``addr`` is a
    user's live object exactly when its bit is set and, in a kmalloc cache, both
    neighbours' bits are clear (kmalloc-8 holds no sheaf)."""
    if addr <= 0 or addr >= st.npages << 12 or addr & 7:
        return NIL                  # (an unaligned address shares its granule's bit)
    head = addr >> 12
    owner = st.sl_cache
    if owner[head] != cache:
        if not st.pg_flags[head] & PG_TAIL:
            return NIL
        head = st.pg_head[head]
        if owner[head] != cache:
            return NIL
    word = st.live[addr >> 9]
    sh = (addr >> 3) & 63
    if not (word >> sh) & 1:
        return NIL                  # free, or never an object's start
    if _geo(st, cache, CA_FLAGS) & SLAB_KMALLOC and _geo(st, cache, CA_SIZE) >= 16:
        # the granules after and before addr's (2 << 63 is 0; the mask before granule 63 is
        # bit 62 alone, before granule 0 nothing: an own mark never starts a bitmap word)
        if word & ((2 << sh) | (((1 << sh) >> 1) & _NOT_SIGN)):
            return NIL              # a sheaf, or its mark
    return head


@jit
def _array_home(st, nr, off):
    """Where a batch call's address array of ``nr`` words lies, at arena byte ``off``.

    0 if inside one live allocation of the user's (the ``object_size`` bytes of a slab object, a
    large kmalloc block, a block from ``alloc_pages``), else ``E_ARRAY_PLACE``. A batch call writes
    its array (an allocation the addresses, a free its reordering, a failed allocation the free
    pointers of what it gives back) while it reads the allocator's own words: over a free object, a
    sheaf, an object waiting for its grace period, a free page or the pages of a slab waiting for
    its grace period (RCU readers may still read them) those writes change what the call is reading
    (a free list it walks, the entries of a sheaf), so such an array is refused before anything
    changes."""
    end = off + 8 * nr
    if nr <= 0 or end <= 0 or off >= st.mem_size:
        return 0                                # (none of it in the arena)
    if off < 0:
        return E_ARRAY_PLACE
    pfn = off >> 12
    flags = st.pg_flags
    head = st.pg_head[pfn] if flags[pfn] & PG_TAIL else pfn
    f = flags[head]
    if f & PG_SLAB:
        owner = st.sl_cache[head]
        rel = off - (head << 12) - _ca(st, owner, CA_RED_LEFT)
        lo = off - rel % _ca(st, owner, CA_SIZE)
        hi = lo + _ca(st, owner, CA_OBJECT_SIZE)
        err, _ = _locate(st, lo, owner)         # live, the user's, on the grid, in the slab
        ok = rel >= 0 and err == 0
    else:
        lo = head << 12
        hi = lo + (4096 << st.pg_order[head])
        err, _ = _locate(st, lo, NIL)           # E_LARGE: a live large kmalloc block
        ok = (f & PG_HEAD) != 0 and ((err == E_LARGE and not _own_test(st, lo, 16)) or
                                     (err == E_NOT_SLAB and not f & (PG_BUDDY | PG_PCP
                                                                     | PG_RCU)))
    return 0 if ok and end <= hi else E_ARRAY_PLACE


@jit(inline=True)
def _in_arena(st, nr, paddr):
    """Whether any of the ``nr``-word array at byte address ``paddr`` lies in the arena."""
    off = paddr - address(st.mem)
    return (off + 8 * nr > 0) & (off < st.mem_size)


@jit(inline=True)
def _array_misplaced(st, nr, paddr):
    """:func:`_array_home` of the ``nr``-word array at byte address ``paddr`` in the arena, else 0.

    0 when none of the array lies in the arena (out of line: an array outside it costs one test
    here)."""
    if _in_arena(st, nr, paddr):
        _settled(st)
        return _array_home(st, nr, paddr - address(st.mem))
    return 0


@unit
def locate(st, addr, cache):
    """:func:`_locate` for the facade; read with the pending record settled.

    :func:`_locate_body`, the record put back after (``live._repend``)."""
    pend = _pending(st)
    _settled(st)
    r = _locate_body(st, addr, cache)
    _repend(st, pend)
    return r


@jit
def _locate_body(st, addr, cache):
    """:func:`_locate` for the facade.

    The slab's head frame (>= 0) if ``addr`` is a live object (of ``cache`` unless NIL), else the
    error code (negative)."""
    err, slab = _locate(st, addr, cache)
    return err if err else slab


@jit
def _twin(p, i):
    """The first index ``j < i`` with ``p[j] == p[i]``.

    The earlier element of a batch that names the object element ``i`` names (-1: none). Only error
    paths scan for it: an element that fails the batch check with such a twin, whose check passed,
    is refused with ``E_TWICE``, not as the double free its cleared live bit reads as."""
    a = p[i]
    for j in range(i):
        if p[j] == a:
            return j
    return -1


def batch_error(ret: int) -> tuple[int, int]:
    """(error code, index of the bad element) of a batch call's failed return ``ret``."""
    return -(-ret % E_AT), -ret // E_AT


# ---- validate ----------------------------------------------------------------------------------


@jit
def _walk_freelist(st, cache, slab, obj):
    """Length of the free list from ``obj`` inside ``slab``, or a negative code."""
    size = _ca(st, cache, CA_SIZE)
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    mem = st.mem
    base = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
    nobj = st.sl_objects[slab]
    n = 0
    while obj != 0:
        off = obj - base
        if off < 0 or off % size or off // size >= nobj:
            return -2
        if _live_test(st, obj):
            return -3
        n += 1
        if n > nobj:
            return -4
        obj = _get_fp(mem, offset, key, obj)
    return n


#: In validate's scratch (one word per page frame), the bit marking a CPU slab; the low bits
#: count the objects the sheaves hold of each slab, the bits from ``_CPU_FREE`` up those on its
#: CPU's freelist.
_CPU_SLAB = 1 << 40
_CPU_FREE = 20


@jit
def _count_sheaf(st, cache, sheaf):
    """Add the objects of ``sheaf`` (0: none) to the scratch counts per slab.

    1 if one is live, not an object of ``cache``, or the sheaf is over capacity."""
    if sheaf == 0:
        return 0
    if not _sheaf_in_reach(st, sheaf, 0):
        return 1
    return _count_objects(st, cache, sheaf, st.mem[(sheaf >> 3) + SH_CAPACITY])


@jit
def _count_objects(st, cache, sheaf, cap):
    """:func:`_count_sheaf` of a sheaf of capacity ``cap``.

    A sheaf waiting for its grace period has its ``rcu_head`` in the capacity word."""
    mem = st.mem
    cached = st.scratch
    w = sheaf >> 3
    size = mem[w + SH_SIZE]
    if size < 0 or size > cap or mem[w + SH_CACHE] != cache or \
            not _sheaf_in_reach(st, sheaf, size):
        return 1
    for i in range(size):
        obj = mem[w + SH_OBJECTS + i]
        if obj <= 0 or obj >= st.npages << 12:
            return 1
        head, order, f = _page_block(st, obj >> 12)
        if head == NIL or not f & PG_SLAB or st.sl_cache[head] != cache or _live_test(st, obj):
            return 1
        if (obj - (head << 12) - _ca(st, cache, CA_RED_LEFT)) % _ca(st, cache, CA_SIZE):
            return 1
        cached[head] += 1
    return 0


@jit(inline=True)
def _not_of_cache(st, cache, sheaf):
    """Whether ``sheaf`` (0: none; its words in reach) has a capacity other than its cache's.

    A CPU's and a barn's sheaves are of the cache's capacity: ``numslab.jit``'s inlined free
    pushes onto the main sheaf up to the cache's ``CA_SHEAF_CAPACITY``, not its word."""
    return sheaf != 0 and st.mem[(sheaf >> 3) + SH_CAPACITY] != _ca(st, cache, CA_SHEAF_CAPACITY)


@jit
def _slab_fits(st, cache, slab):
    """Whether the objects of ``slab`` lie in its block and its block in the machine.

    The objects are placed by its cache's geometry and its count; ``validate`` walks a slab only
    then."""
    order = st.pg_order[slab]
    n = st.sl_objects[slab]
    size = _ca(st, cache, CA_SIZE)
    red = _ca(st, cache, CA_RED_LEFT)
    return 0 <= order < NR_ORDERS and slab + (1 << order) <= st.npages and 0 <= n < 1 << 15 \
        and 8 <= size <= 4096 << (NR_ORDERS - 1) and 0 <= _ca(st, cache, CA_OFFSET) <= size - 8 \
        and 0 <= red < size and n * size <= 4096 << order     # (s->size holds the red_left_pad)


@jit
def _validate_cache(st, cache):
    """Check every invariant of one cache; 0 or E_CORRUPT (details in G_ERR0/G_ERR1)."""
    mem = st.mem
    flags = st.pg_flags
    nxt = st.pg_next
    prv = st.pg_prev
    owner = st.sl_cache
    inuse = st.sl_inuse
    objects = st.sl_objects
    sfl = st.sl_freelist
    cpt = st.cpu
    nd = st.node
    npages = st.npages
    scratch = st.scratch        # per slab: objects held by CPUs, | _CPU_SLAB for a CPU slab
    for i in range(npages):
        scratch[i] = 0
    on_cpu_lists = 0
    for cpu in range(st.ncpus):
        c = _cpu_row(st, cache, cpu)
        slab = cpt[c + C_SLAB]
        if slab != NIL and st.kernel >= KERNEL_7_0:     # (7.x has no kmem_cache_cpu)
            return _corrupt(st, 0, AT_CPU, cpu)
        if slab != NIL:
            if not 0 <= slab < npages or not _slab_fits(st, cache, slab) \
                    or (flags[slab] & (PG_SLAB | PG_FROZEN)) != (PG_SLAB | PG_FROZEN) \
                    or owner[slab] != cache or flags[slab] & (PG_NODE_PARTIAL | PG_CPU_PARTIAL):
                return _corrupt(st, 0, AT_SLAB, slab)
            n = _walk_freelist(st, cache, slab, cpt[c + C_FREELIST])
            if n < 0:
                return _corrupt(st, -n - 1, AT_SLAB, slab)
            if _held_free_list(st, cache, cpt[c + C_FREELIST], n):
                return _corrupt(st, 27, AT_SLAB, slab)
            scratch[slab] = (n << _CPU_FREE) | _CPU_SLAB
        elif cpt[c + C_FREELIST] != 0:
            return _corrupt(st, 0, AT_CPU, cpu)
        slab = cpt[c + C_PARTIAL]
        k = 0
        while slab != NIL:
            if not 0 <= slab < npages \
                    or flags[slab] & (PG_SLAB | PG_CPU_PARTIAL | PG_FROZEN | PG_NODE_PARTIAL) \
                    != (PG_SLAB | PG_CPU_PARTIAL) or owner[slab] != cache:
                return _corrupt(st, 4, AT_SLAB, slab)
            k += 1
            if k > npages:
                return _corrupt(st, 4, AT_SLAB, slab)
            slab = nxt[slab]
        on_cpu_lists += k
    for cpu in range(st.ncpus):
        c = _cpu_row(st, cache, cpu)
        if cpt[c + C_MAIN] == 0 and _ca(st, cache, CA_SHEAF_CAPACITY):   # (numslab.jit's
            return _corrupt(st, 24, AT_CPU, cpu)        # inlined pops take it unchecked)
        for col in (C_MAIN, C_SPARE, C_RCU_FREE):
            if _count_sheaf(st, cache, cpt[c + col]) or _not_of_cache(st, cache, cpt[c + col]):
                return _corrupt(st, 14, AT_SHEAF, cpt[c + col])
        rcu = cpt[c + C_RCU_FREE]       # never full: a full one went to call_rcu
        if rcu and mem[(rcu >> 3) + SH_SIZE] >= _ca(st, cache, CA_SHEAF_CAPACITY):
            return _corrupt(st, 16, AT_SHEAF, rcu)
    sheaf = st.g[G_RCU_HEAD]            # waiting for their grace period
    k = 0
    while sheaf:
        k += 1
        if not _sheaf_in_reach(st, sheaf, 0):
            return _corrupt(st, 16, AT_SHEAF, sheaf)
        if mem[(sheaf >> 3) + SH_CACHE] == cache and _count_objects(
                st, cache, sheaf, _ca(st, cache, CA_SHEAF_CAPACITY)):
            return _corrupt(st, 14, AT_SHEAF, sheaf)
        sheaf = _rcu_next(st, sheaf, k)  # (a bad link: _validate_rcu_list reports it)
    for node in range(st.nnodes):
        r = _node_row(st, cache, node)
        for col in (N_BARN_FULL, N_BARN_EMPTY):     # (each list's count two columns on)
            sheaf = nd[r + col]
            k = 0
            while sheaf:
                k += 1
                if k > nd[r + col + N_NR_FULL - N_BARN_FULL]:
                    return _corrupt(st, 21, AT_NODE, node)
                if _count_sheaf(st, cache, sheaf) or _not_of_cache(st, cache, sheaf):
                    return _corrupt(st, 14, AT_SHEAF, sheaf)
                sheaf = mem[(sheaf >> 3) + SH_NEXT]
            if k != nd[r + col + N_NR_FULL - N_BARN_FULL]:
                return _corrupt(st, 21, AT_NODE, node)
        sheaf = st.barn_partial[_node_index(st, cache, node)]
        if sheaf and (st.kernel < KERNEL_NEXT or not _sheaf_in_reach(st, sheaf, 0)
                      or mem[(sheaf >> 3) + SH_NEXT] or not 0 < mem[(sheaf >> 3) + SH_SIZE]
                      < _ca(st, cache, CA_SHEAF_CAPACITY)):
            return _corrupt(st, 20, AT_SHEAF, sheaf)
        if _count_sheaf(st, cache, sheaf) or _not_of_cache(st, cache, sheaf):
            return _corrupt(st, 14, AT_SHEAF, sheaf)
    sheaf = _ca(st, cache, CA_USER_SHEAVES)
    k = 0
    while sheaf:
        k += 1                          # (a sheaf is 64 bytes at least: a loop stops)
        if k > npages << 6 or _count_sheaf(st, cache, sheaf):
            return _corrupt(st, 14, AT_SHEAF, sheaf)
        sheaf = mem[(sheaf >> 3) + SH_NEXT]
    size = _ca(st, cache, CA_SIZE)
    ppn = st.pages_per_node
    live_total = 0
    for node in range(st.nnodes):
        r = _node_row(st, cache, node)
        slab = nd[r + N_PARTIAL_HEAD]
        prev = NIL
        on_list = 0
        while slab != NIL:
            if not 0 <= slab < npages \
                    or flags[slab] & (PG_SLAB | PG_NODE_PARTIAL | PG_FROZEN | PG_CPU_PARTIAL) \
                    != (PG_SLAB | PG_NODE_PARTIAL) or owner[slab] != cache \
                    or prv[slab] != prev or _slab_nid(st, slab) != node:
                return _corrupt(st, 5, AT_SLAB, slab)
            if inuse[slab] >= objects[slab]:
                return _corrupt(st, 13, AT_SLAB, slab)
            on_list += 1
            if on_list > npages:
                return _corrupt(st, 5, AT_SLAB, slab)
            prev = slab
            slab = nxt[slab]
        if on_list != nd[r + N_NR_PARTIAL] or nd[r + N_PARTIAL_TAIL] != prev:
            return _corrupt(st, 6, AT_NODE, node)
        nslabs = 0
        nobjs = 0
        for slab in range(node * ppn, (node + 1) * ppn):
            f = flags[slab]
            if not (f & PG_HEAD and f & PG_SLAB and owner[slab] == cache):
                continue
            if not _slab_fits(st, cache, slab):
                return _corrupt(st, 7, AT_SLAB, slab)
            if f & PG_NODE_PARTIAL:
                on_list -= 1
            if f & PG_CPU_PARTIAL:
                on_cpu_lists -= 1
            nslabs += 1
            nobjs += objects[slab]
            n = _walk_freelist(st, cache, slab, sfl[slab])
            if n < 0:
                return _corrupt(st, -n - 1, AT_SLAB, slab)
            if inuse[slab] + n != objects[slab]:
                return _corrupt(st, 7, AT_SLAB, slab)
            if f & PG_FROZEN and not scratch[slab] & _CPU_SLAB:
                return _corrupt(st, 8, AT_SLAB, slab)
            if n > 0 and not f & (PG_FROZEN | PG_NODE_PARTIAL | PG_CPU_PARTIAL):
                return _corrupt(st, 9, AT_SLAB, slab)
            live = 0
            base = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
            for i in range(objects[slab]):
                live += _live_test(st, base + i * size)
            lost = st.sl_lost[slab]         # (cut off by a repair: in use, no one's)
            if lost < 0 or lost > inuse[slab] or lost and f & PG_ISOLATED:
                return _corrupt(st, 22, AT_SLAB, slab)
            cpu_free = (scratch[slab] & (_CPU_SLAB - 1)) >> _CPU_FREE
            cached = scratch[slab] & ((1 << _CPU_FREE) - 1)
            if live != objects[slab] - n - cpu_free - cached - lost \
                    and not f & PG_ISOLATED:        # an isolated slab's free list leaked
                return _corrupt(st, 7, AT_SLAB, slab)
            if _held_slab_bad(st, cache, slab, objects[slab] - n - cpu_free - lost):
                return _corrupt(st, 27, AT_SLAB, slab)
            live_total += live
        if nslabs != nd[r + N_NR_SLABS] or nobjs != nd[r + N_TOTAL_OBJECTS]:
            return _corrupt(st, 10, AT_NODE, node)
        if on_list != 0:
            return _corrupt(st, 5, AT_NODE, node)
    if on_cpu_lists != 0:
        return _corrupt(st, 4, AT_CACHE, cache)
    if live_total != live_objects(st, cache):
        return _corrupt(st, 11, AT_CACHE, cache)
    return 0


@jit
def _validate_cache_and_order(st, cache):
    """:func:`_validate_cache`, then the order of a sorted cache's partial lists."""
    err = _validate_cache(st, cache)
    if err:
        return err
    bad = _check_order(st, cache)
    return _corrupt(st, 15, AT_SLAB, bad) if bad != NIL else 0


@jit
def _rcu_list_marks(st, n, p, on):
    """Put out of every free's reach (``on``), or back, the ``n`` objects waiting on ``kfree_rcu``.

    They are at Words ``p``, on the facade's ``kfree_rcu`` list: a slab object's live bit cleared
    (it stays allocated from its slab) and its bit in field ``rcu`` set (a free pointer rewritten
    to name it is refused: ``slablists._fp_next``), a large kmalloc's head page marked PG_RCU;
    :func:`_locate` then calls any free of one a double free."""
    for i in range(n):
        _rcu_list_mark(st, p[i], on)


@jit(inline=True)
def _rcu_list_mark(st, a, on):
    """:func:`_rcu_list_marks` of the one object at ``a``."""
    flags = st.pg_flags
    pfn = a >> 12
    if not flags[pfn] & PG_TAIL and flags[pfn] & PG_LARGE:
        flags[pfn] = flags[pfn] | PG_RCU if on else flags[pfn] & ~PG_RCU
    elif on:
        _live_clear(st, a)
        _rcu_set(st, a)
    else:
        _rcu_clear(st, a)
        _live_set(st, a)


@unit
def rcu_list_mark(st, n, paddr, on):
    """:func:`_rcu_list_marks` of the ``n`` objects at ``paddr``. 0."""
    _settled(st)
    _rcu_list_marks(st, n, words_at(paddr), on)
    return 0


@jit
def _rcu_list_unmarked(st, n, p):
    """The first of the ``n`` objects at Words ``p`` without the ``kfree_rcu`` list's mark, or -1.

    The objects are on the ``kfree_rcu`` list; the mark of a slab object is its ``rcu`` bit set and
    its live bit clear, that of a large kmalloc PG_RCU on its head."""
    for i in range(n):
        a = p[i]
        f = st.pg_flags[a >> 12]
        if not f & PG_TAIL and f & PG_LARGE:
            if not f & PG_RCU:
                return a
        elif not (st.rcu[a >> 9] >> ((a >> 3) & 63)) & 1 or _live_test(st, a):
            return a
    return -1


@unit
def validate(st, cache, n, paddr):
    """Validate one cache, or every cache and the page allocator (NIL), read settled.

    :func:`_validate_body`, the record put back after (``live._repend``)."""
    bad = _record_bad(st)
    if bad != -1:
        st.g[G_ERR2] = NIL
        return _corrupt(st, 28, AT_OBJECT, bad)
    pend = _pending(st)
    _settled(st)
    r = _validate_body(st, cache, n, paddr)
    _repend(st, pend)
    return r


@jit
def _record_bad(st):
    """-1 if the record of the last bulk allocation (field ``pend``) is sound, else a where.

    The count is ``G_PEND`` (0: none) and at most ``REC_MAX``; the pending part (at most
    ``PEND_MAX``, each object (live, held) (0, 1) in a cache keeping held bits) all of it, or
    the head of a checked record (none, or its sheaves' part); its CPU row an active
    cache's. A checked record whose stamp has not moved (no object of the cache freed by a
    user's inlined code since) names past its pending part distinct live objects of that cache
    (each bit cleared as it is tested, then all put back). The where: the first bad object,
    else the count."""
    pd = st.pend
    n = st.g[G_PEND]
    if n == 0:
        return -1
    row = pd[PD_ROW]
    npend = pd[PD_NPEND]
    per = st.ncpus * C_NCOLS
    if (pd[PD_COUNT] != n) | (n < 0) | (n > REC_MAX) | (row < 0) | (row % C_NCOLS != 0) | \
            (row >= st.max_caches * per) | (npend < 0) | (npend > n) | (npend > PEND_MAX):
        return n
    cache = row // per
    if _ca(st, cache, CA_ACTIVE) == 0:
        return n
    aux = (_ca(st, cache, CA_ACTIVE) & 2) >> 1
    limit = st.npages << 12
    for k in range(npend):
        a = pd[PD_OBJS + k]
        if (a <= 0) | (a >= limit) | (a & 7 != 0):
            return a
        sh = (a >> 3) & 63
        if (st.live[a >> 9] >> sh) & 1 or ((st.held[a >> 9] >> sh) & 1) != aux:
            return a
    if npend == n or _free_stamp(st, cache) != pd[PD_STAMP]:
        return -1
    bad = -1
    k = npend
    while k < n:
        a = pd[PD_OBJS + k]
        if (a <= 0) | (a >= limit) or _slab_of(st, a, cache) == NIL:
            bad = a
            break
        _live_clear(st, a)              # (a second copy of it then fails _slab_of)
        k += 1
    for j in range(npend, k):
        _live_set(st, pd[PD_OBJS + j])
    return bad


@jit
def _validate_body(st, cache, n, paddr):
    """Validate one cache, or every active cache and the page allocator if ``cache`` is NIL.

    0 or E_CORRUPT (what in G_ERR0, where in G_ERR1, the cache in G_ERR2). The ``n`` objects at
    ``paddr`` wait on the ``kfree_rcu`` list: counted as allocated (their marks lifted for the
    check and put back, in this one engine call); for the whole machine their marks are checked
    first (invariant 9)."""
    p = words_at(paddr)
    bad = _rcu_list_unmarked(st, n, p) if cache == NIL else -1
    if bad != -1:
        st.g[G_ERR2] = NIL
        return _corrupt(st, 18, AT_OBJECT, bad)
    _rcu_list_marks(st, n, p, False)
    err = _validate(st, cache)
    if not err and cache == NIL:
        err = _validate_rcu_marks(st)
    _rcu_list_marks(st, n, p, True)
    return err


@jit
def _validate(st, cache):
    """:func:`validate` of the state as it stands."""
    st.g[G_ERR2] = cache                # (NIL while no cache's invariant is checked)
    if cache != NIL:
        return _validate_cache_and_order(st, cache)
    err = _validate_rcu_list(st)
    if err:
        return err
    for c in range(st.max_caches):
        if _ca(st, c, CA_ACTIVE):
            err = _validate_cache_and_order(st, c)
            if err:
                st.g[G_ERR2] = c
                return err
    st.g[G_ERR2] = NIL
    what = _validate_pages(st)          # (its kind of place with it: pages._bad)
    if what:
        st.g[G_ERR0] = what
        return E_CORRUPT
    err = _validate_owners(st)
    if err:
        return err
    err = _validate_sheaves_once(st)
    if err:
        return err
    err = _validate_held_frames(st)
    if err:
        return err
    return _validate_lost(st)


