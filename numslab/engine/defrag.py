"""Fighting fragmentation in the engine: compaction of a cache by moving its objects.

Tobin Harding's Slab Movable Objects, 2019, as units over a checked cache id and CPU.

``compact`` first flushes the cache as ``kmem_cache_shrink`` does, then on each node sorts the
partial slabs by free objects (fewest first), takes the emptiest slabs used at most the ratio
(percent of their objects) as sources and moves each of their live objects into a free object
of the fullest slabs (never into a source), copying its bytes; emptied sources go back to the
page allocator.
"""
from __future__ import annotations

from ..flags import SLAB_STORE_USER
from .live import _aux, _live_clear, _live_set, _own_test, _settled
from .layout import (CA_DEBUG, CA_FP_KEY, CA_INUSE, CA_MOVE_FREED, CA_MOVED, CA_NCOLS,
                     CA_OFFSET, CA_PARTIAL_ORDER, CA_RED_LEFT, CA_SIZE, CA_USED_RATIO,
                     N_PARTIAL_HEAD, NIL, PG_ISOLATED, _ca, _node_row)
from .native import byte_array, copy_bytes, jit, unit, words_at
from .redzone import RED_INACTIVE, TRACK_FREE, init_object, set_track
from .cpucache import flush_cpu
from .ops import kmem_cache_shrink
from .freelist import _set_fp
from .slablists import (_add_partial, _count_disagrees, _fp_next, _isolate, _remove_partial,
                        discard_slab)

DEFRAG_USED_RATIO = 30      #: Harding's default ``defrag_used_ratio`` (percent)


@jit(inline=True)
def _used_ratio(st, cache, ratio):
    """``ratio`` if it is 0..100, else the cache's ``defrag_used_ratio``.

    ``CA_USED_RATIO``: 0 means the default 30, -1 a ratio of 0."""
    if 0 <= ratio <= 100:
        return ratio
    r = _ca(st, cache, CA_USED_RATIO)
    if r == 0:
        return DEFRAG_USED_RATIO
    return r if r > 0 else 0


@jit(inline=True)
def _sort_key(st, slab):
    """Order of the partial slabs: fewest free objects first, then by frame (deterministic)."""
    return (st.sl_objects[slab] - st.sl_inuse[slab]) * st.npages + slab


@jit
def _sift_down(st, a, root, end):
    """Heap sift of ``a[root]`` within ``a[0..end]`` (a max-heap by :func:`_sort_key`)."""
    while True:
        child = 2 * root + 1
        if child > end:
            return
        if child + 1 <= end and _sort_key(st, a[child]) < _sort_key(st, a[child + 1]):
            child += 1
        if _sort_key(st, a[root]) >= _sort_key(st, a[child]):
            return
        a[root], a[child] = a[child], a[root]
        root = child


@jit
def _sort_by_free(st, a, n):
    """Heapsort the ``n`` slab frames in Words ``a`` by :func:`_sort_key`, in place.

    No memory beyond ``a``: the state's scratch field holds it."""
    for start in range((n - 2) // 2, -1, -1):
        _sift_down(st, a, start, n - 1)
    for end in range(n - 1, 0, -1):
        a[0], a[end] = a[end], a[0]
        _sift_down(st, a, 0, end - 1)


@jit
def _movable(st, cache, slab):
    """True if every object ``slab`` counts in use is a live object of a user.

    None is held in a user's prefilled sheaf (in use, not live) or is a sheaf the allocator
    kmalloc'ed for itself (its references are the allocator's, which no callback updates)."""
    size = _ca(st, cache, CA_SIZE)
    addr = (slab << 12) + _ca(st, cache, CA_RED_LEFT)
    live = 0
    for _ in range(st.sl_objects[slab]):
        if (st.live[addr >> 9] >> ((addr >> 3) & 63)) & 1:
            if _own_test(st, addr, size):
                return False
            live += 1
        addr += size
    return live == st.sl_inuse[slab]


@jit
def _plan_node(st, cache, a, n, ratio, room):
    """Choose the sources among the ``n`` sorted partial slabs ``a`` (fewest free first).

    From the emptiest, each slab with at most ``ratio * objects / 100`` objects in use (the test of
    Harding's ``kmem_cache_defrag``) whose objects all fit in the free objects of the slabs before
    it (less those already promised) and in ``room`` map entries; a source is marked ``-slab - 2``.
    Objects to move."""
    avail = 0
    for k in range(n - 1):
        avail += st.sl_objects[a[k]] - st.sl_inuse[a[k]]
    moved = 0
    i = n - 1
    while i > 0:
        s = a[i]
        used = st.sl_inuse[s]
        if used <= ratio * st.sl_objects[s] // 100 and _movable(st, cache, s):
            if used > avail - moved or moved + used > room:
                break
            a[i] = -s - 2
            moved += used
        i -= 1
        avail -= st.sl_objects[a[i]] - st.sl_inuse[a[i]]
    return moved


@jit
def _move_node(st, cache, a, n, old, new, done):
    """Move every live object of the sources marked in ``a`` to free objects of other slabs.

    The targets are the slabs from ``a[0]`` on; the pairs are written to Words ``old``/``new`` from
    entry ``done`` (both 0: the plan only, old addresses only when ``old`` is). Entries written, or
    ``-1 - entries`` after a corrupted free pointer (the target slab is isolated)."""
    mem = st.mem
    size = _ca(st, cache, CA_SIZE)
    offset = _ca(st, cache, CA_OFFSET)
    key = _ca(st, cache, CA_FP_KEY)
    fl = st.sl_freelist
    inuse = st.sl_inuse
    red = _ca(st, cache, CA_RED_LEFT)
    debug = _ca(st, cache, CA_DEBUG)
    # a free pointer outside the object (``freeptr_outside_object``: slab_debug P, or Z
    # with a small object) keeps the target's own; inside, the object's bytes overwrite it
    keep_fp = debug != 0 and offset >= _ca(st, cache, CA_INUSE)
    m8 = byte_array(mem, st.mem_size)
    j = 0
    for k in range(n - 1, -1, -1):
        if a[k] >= 0:
            continue
        src = -a[k] - 2
        addr = (src << 12) + red
        for _ in range(st.sl_objects[src]):
            if (st.live[addr >> 9] >> ((addr >> 3) & 63)) & 1:
                if new == 0:
                    if old != 0:
                        words_at(old)[done] = addr
                    done += 1
                    addr += size
                    continue
                while j < n and (a[j] < 0 or fl[a[j]] == 0 or st.pg_flags[a[j]] & PG_ISOLATED):
                    j += 1
                if j == n:              # a free list cut short (a free pointer set to 0)
                    for i in range(n):
                        t = a[i]
                        if t >= 0 and fl[t] == 0 and inuse[t] < st.sl_objects[t] and \
                                not st.pg_flags[t] & PG_ISOLATED:
                            _isolate(st, cache, t, 0)
                            break
                    return -1 - done
                t = a[j]
                obj = fl[t]
                nxt = _fp_next(st, cache, t, obj)
                if nxt < 0:
                    return -1 - done
                if _count_disagrees(st, t, nxt):    # as the single pop refuses it
                    _isolate(st, cache, t, nxt)
                    return -1 - done
                fl[t] = nxt
                inuse[t] += 1
                # the whole slot moves: with slab_debug its red zones, tracks and orig_size
                # too (the object's slot starts ``red`` bytes before it); a free pointer
                # outside the object keeps the target's own (a valid pointer of the
                # target's slab, stored for the target's address)
                fpw = mem[(obj + offset) >> 3]
                copy_bytes(mem, obj - red, mem, addr - red, size)
                if keep_fp:
                    mem[(obj + offset) >> 3] = fpw
                _live_set(st, obj)
                _live_clear(st, addr)
                h = _aux(st, cache) >> 1    # held: the new slot off its slab, the old on it
                st.held[obj >> 9] |= h << ((obj >> 3) & 63)
                st.held[addr >> 9] &= ~(h << ((addr >> 3) & 63))
                if debug:               # the old slot becomes a free object, as a free makes it
                    if debug & SLAB_STORE_USER:
                        set_track(st, cache, addr, TRACK_FREE, 0)
                    init_object(st, m8, cache, addr, RED_INACTIVE)
                _set_fp(mem, offset, key, addr, fl[src])
                fl[src] = addr
                inuse[src] -= 1
                words_at(old)[done] = addr
                words_at(new)[done] = obj
                done += 1
            addr += size
    return done


@jit
def _relist_node(st, cache, cpu, a, n):
    """Put the node's partial slabs back in sorted order and free the emptied ones; slabs freed.

    The partial slabs were taken off the list for the moves; the full ones are left off the lists
    and the emptied ones given to the page allocator."""
    freed = 0
    for k in range(n):
        if a[k] < 0:
            a[k] = -a[k] - 2
    for k in range(n):
        s = a[k]
        if st.pg_flags[s] & PG_ISOLATED:
            continue
        if st.sl_inuse[s] == 0:
            discard_slab(st, cache, cpu, s)
            freed += 1
        elif st.sl_inuse[s] < st.sl_objects[s]:
            _add_partial(st, cache, s, True)
    return freed


@unit
def compact(st, cache, cpu, ratio, room, old, new):
    """Compact ``cache`` on ``cpu`` (the movable objects' ``kmem_cache_defrag``).

    Flush and shrink it, flush the CPU slabs again (the barn's flush may have refilled them), then
    on each node move the objects of partial slabs used at most ``ratio`` percent (outside 0..100:
    the cache's ``defrag_used_ratio``) into the fullest partial slabs, writing at most ``room``
    (old, new) address pairs to the int64 arrays at byte addresses ``old`` and ``new``. With
    ``new`` 0 nothing moves: the old addresses that would move are written (if ``old`` is not 0)
    and counted. Entries written, or ``-1 - entries`` if a corrupted free pointer stopped the moves
    (G_FAULT_* say where)."""
    _settled(st)                        # (a pending bulk allocation's marks written)
    kmem_cache_shrink(st, cache, cpu)
    # 6.18: the shrink's barn_shrink flushes full sheaves after flush_all, and __slab_free
    # puts a full slab that gets a free object on the running CPU's partial list, out of
    # the node lists the moves work on: flush the CPUs once more (7.0: nothing to flush)
    for other in range(st.ncpus):
        flush_cpu(st, cache, other)
    ratio = _used_ratio(st, cache, ratio)
    a = st.scratch
    done = 0
    ca = st.ca
    for node in range(st.nnodes):
        n = 0
        s = st.node[_node_row(st, cache, node) + N_PARTIAL_HEAD]
        while s != NIL:
            a[n] = s
            n += 1
            s = st.pg_next[s]
        if n < 2:
            continue
        _sort_by_free(st, a, n)
        if _plan_node(st, cache, a, n, ratio, room - done) == 0:
            continue
        start = done
        if new != 0:                    # off the list while the free counts change
            for k in range(n):
                _remove_partial(st, cache, a[k] if a[k] >= 0 else -a[k] - 2)
        done = _move_node(st, cache, a, n, old, new, done)
        if new == 0:
            for k in range(n):
                if a[k] < 0:
                    a[k] = -a[k] - 2
            continue
        fault = done < 0
        if fault:
            done = -1 - done
        ca[cache * CA_NCOLS + CA_MOVED] += done - start
        ca[cache * CA_NCOLS + CA_MOVE_FREED] += _relist_node(st, cache, cpu, a, n)
        if fault:
            return -1 - done
    return done


@unit
def set_partial_order(st, cache, on):
    """Keep ``cache``'s node partial lists sorted by free objects (``on`` 1) or not (0). 0.

    Not sorted: in the kernel's order. Every listed slab leaves its list and joins it again in list
    order, under the new rule."""
    if (_ca(st, cache, CA_PARTIAL_ORDER) != 0) == (on != 0):
        return 0
    a = st.scratch
    counts = 0
    for node in range(st.nnodes):
        s = st.node[_node_row(st, cache, node) + N_PARTIAL_HEAD]
        while s != NIL:
            a[counts] = s
            counts += 1
            s = st.pg_next[s]
    for k in range(counts):
        _remove_partial(st, cache, a[k])
    st.ca[cache * CA_NCOLS + CA_PARTIAL_ORDER] = 1 if on != 0 else 0
    for k in range(counts):
        _add_partial(st, cache, a[k], True)
    return 0
