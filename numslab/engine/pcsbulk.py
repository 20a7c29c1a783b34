"""The CPU sheaves' bulk paths: ``alloc_from_pcs_bulk`` and ``free_to_pcs_bulk``.

Whole batches between an object array and the CPU's main and spare sheaves and the barn.

Split from ``sheaves.py`` (the single-object paths, the barn and the flushes), whose helpers
these use. 7.3's ``free_to_pcs_bulk`` on a machine of several nodes is a unit of its own
(:func:`free_to_pcs_bulk_split`), so that the code of the 7.0 default's path is as it was.
"""
from __future__ import annotations

from ..flags import (ALLOC_PCS, BARN_GET, BARN_GET_FAIL, BARN_PUT, BARN_PUT_FAIL, FREE_PCS,
                     FREE_SLOWPATH)
from .bulk import free_bulk_raw, free_bulk_raw_cleared
from .live import (_free_stamp, _live_set_run, _pends, _record_drop, _record_equals,
                   _record_take)
from .layout import (C_MAIN, C_SPARE, CA_SHEAF_CAPACITY, KERNEL_7_0, KERNEL_7_3, PD_NPEND,
                     PD_OBJS, PD_ROW, PD_STAMP, REC_MAX,
                     MAX_FULL_SHEAVES, N_BARN_EMPTY, N_NR_EMPTY, N_NR_FULL, SH_OBJECTS,
                     SH_SIZE, _ca, _cpu_row, _slab_nid, _stat)
from .native import address, jit, unit, words_at
from .sheaves import PCS_BATCH_MAX, _barn, _barn_pop, _barn_trade, _sheaf_purge, _w


# ---- allocation ------------------------------------------------------------------------------
@jit(inline=True)
def _mark_taken(st, p, at, n):
    """Mark the objects ``p[at:at+n]`` live, as handed out (cached -> live: held stays).

    True; or False with the marks taken back when one of them was live already (a stale entry,
    whose mark is not ours: it stays)."""
    if _live_set_run(st, p, at, n, True):           # a stale one noted
        live = st.live
        for k in range(n):
            a = p[at + k]
            if not a & 1:
                live[a >> 9] &= ~(1 << ((a >> 3) & 63))
        return False
    return True


@jit(inline=True)
def _sheaf_copy_top(st, sheaf, n, p, at):
    """Copy the top ``n`` objects of ``sheaf`` into ``p[at:at+n]``, marked live; True or False.

    Their order kept (``alloc_from_pcs_bulk``'s memcpy); the sheaf's size is the caller's to lower.
    True; or False with the marks taken back when one of them was live already (a stale entry,
    whose mark is not ours: it stays)."""
    mem = st.mem
    o = _w(sheaf, SH_OBJECTS) + mem[_w(sheaf, SH_SIZE)] - n
    for k in range(n):                              # the memcpy
        p[at + k] = mem[o + k]
    return _mark_taken(st, p, at, n)                # then the marks


@jit(inline=True)
def _take_main_spare(st, cache, cpu, nr, p, pend):
    """``alloc_from_pcs_bulk`` when the main sheaf holds part of the batch and the spare the rest.

    The main's ``m`` objects into ``p[:m]``, main and spare swapped (the main now empty), the new
    main's top ``nr - m`` into ``p[m:nr]``, all marked live, or with ``pend`` (a batch the cache
    may take pending, the record settled) left cached and recorded as the main sheaf's pending
    take is (``live._record_take``: no mark written); ALLOC_PCS += nr. True; or False with
    nothing changed when the case does not apply (a parked main sheaf too) or an entry is stale
    (the engine's loop then takes them)."""
    mem = st.mem
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    main = cpt[c + C_MAIN]
    spare = cpt[c + C_SPARE]
    if main == 0 or spare == 0:
        return False
    m = mem[_w(main, SH_SIZE)]
    rest = nr - m
    s = mem[_w(spare, SH_SIZE)]
    if m < 0 or rest <= 0 or s < rest:
        return False
    o = _w(main, SH_OBJECTS)
    for k in range(m):
        p[k] = mem[o + k]
    o = _w(spare, SH_OBJECTS) + s - rest
    for k in range(rest):
        p[m + k] = mem[o + k]
    if pend:
        _record_take(st, c, p, 0, nr, p)
    elif not _mark_taken(st, p, 0, nr):
        return False
    mem[_w(main, SH_SIZE)] = 0
    mem[_w(spare, SH_SIZE)] = s - rest
    cpt[c + C_MAIN] = spare
    cpt[c + C_SPARE] = main
    _stat(st, cache, cpu, ALLOC_PCS, nr)
    return True


@jit(inline=True)
def _takes_pending(st, cache, nr):
    """Whether a bulk allocation of ``nr`` that the fast cases left takes its sheaf part pending.

    On a cache taking batches pending, ``nr`` at most ``REC_MAX`` (the checked record then keeps
    them: ``live._record_checked`` finds them unmarked at the head of the batch), from 7.0 on
    (6.18's CPU slab leaving counts the objects of its slab that no one holds as lost,
    ``cpucache._note_lost``: the live marks say who holds them). Every object the main, the spare
    and the barn's full sheaves give is then copied out unmarked (:func:`_sheaf_take_pending`);
    else each is marked at its take."""
    return st.kernel >= KERNEL_7_0 and _pends(st, cache) != 0 and nr <= REC_MAX


@jit(inline=True)
def _sheaf_take_pending(st, cache, cpu, sheaf, n, p, at):
    """Pop the top ``n`` objects of ``sheaf`` into ``p[at:at+n]``, no mark written.

    :func:`_takes_pending`'s take (``alloc_from_pcs_bulk``'s memcpy, their order kept): the
    objects stay cached (held: a free pointer naming one is refused while the slab walk takes
    the rest of the batch; a cache keeping held bits has no stale entry); ALLOC_PCS += n."""
    mem = st.mem
    size = mem[_w(sheaf, SH_SIZE)] - n
    o = _w(sheaf, SH_OBJECTS) + size
    for k in range(n):
        p[at + k] = mem[o + k]
    mem[_w(sheaf, SH_SIZE)] = size
    _stat(st, cache, cpu, ALLOC_PCS, n)


@jit(inline=True)
def _sheaf_take(st, cache, cpu, sheaf, n, p, at):
    """Pop the top ``n`` objects of ``sheaf`` into ``p[at:at+n]``; True, or False if one was stale.

    :func:`_sheaf_copy_top`: handed out, marked live; ALLOC_PCS += n. False with nothing taken when
    one of them was live already (a stale entry: the sheaf purged by :func:`_sheaf_purge`; take
    again)."""
    if not _sheaf_copy_top(st, sheaf, n, p, at):
        _sheaf_purge(st, cache, sheaf)
        return False
    st.mem[_w(sheaf, SH_SIZE)] -= n
    _stat(st, cache, cpu, ALLOC_PCS, n)
    return True


@jit(inline=True)
def _free_pending(st, cache, cpu, nr, p):
    """The free of exactly the pending batch: back on the CPU's main sheaf, still cached.

    ``p[:nr]`` equal to the pending record of this CPU row (one compare), the main sheaf with
    room: the words pushed, FREE_PCS += nr, the record cleared. True; False otherwise (the caller
    settles and frees), nothing changed but the sheaf's words above its size, which it does not
    hold. Inline in users' functions too."""
    c = _cpu_row(st, cache, cpu)
    pd = st.pend
    main = st.cpu[c + C_MAIN]
    mem = st.mem
    size = mem[(main >> 3) + SH_SIZE]
    if (pd[PD_ROW] != c) | (main == 0) | (size + nr > _ca(st, cache, CA_SHEAF_CAPACITY)) | \
            (pd[PD_NPEND] != nr):
        return False
    o = (main >> 3) + SH_OBJECTS + size
    d = 0
    for k in range(nr):                 # compared and pushed in one pass: the words above the
        a = p[k]                        # sheaf's size are its to overwrite until it grows
        d |= a ^ pd[PD_OBJS + k]
        mem[o + k] = a
    if d:
        return False
    mem[(main >> 3) + SH_SIZE] = size + nr
    _stat(st, cache, cpu, FREE_PCS, nr)
    _record_drop(st)
    return True


@jit
def _free_pending_two(st, cache, cpu, nr, p):
    """The free of exactly the pending batch when the main sheaf has room for part of it only.

    ``p[:nr]`` equal to the pending record of this CPU row and the spare with room for the
    rest: :func:`_put_main_spare` (``free_to_pcs_bulk``'s two batches, the sheaves swapped
    between them), the record cleared. True; False with nothing changed otherwise (the caller
    settles and frees)."""
    c = _cpu_row(st, cache, cpu)
    pd = st.pend
    mem = st.mem
    main = st.cpu[c + C_MAIN]
    spare = st.cpu[c + C_SPARE]
    if (pd[PD_ROW] != c) | (main == 0) | (spare == 0) | (pd[PD_NPEND] != nr):
        return False
    cap = _ca(st, cache, CA_SHEAF_CAPACITY)
    over = mem[(main >> 3) + SH_SIZE] + nr - cap
    if (over <= 0) | (mem[(spare >> 3) + SH_SIZE] + over > cap):
        return False
    if not _record_equals(pd, nr, p):
        return False
    _put_main_spare(st, cache, cpu, nr, p)
    _record_drop(st)
    return True


@jit
def _free_recorded(st, cache, cpu, nr, p):
    """The free of exactly the checked record (the last bulk allocation, its marks written).

    ``p[:nr]`` equal to the record of this cache and CPU, on a machine of one node, no object of
    the cache freed by a user's inlined code since (``live._free_stamp`` unmoved): the objects
    are distinct live objects of the cache, so the batch check is skipped and the free is
    ``kmem_cache_free_bulk``'s after it (``free_to_pcs_bulk``, or ``__kmem_cache_free_bulk``
    without sheaves), each object's live bit cleared where the free touches it (those of its
    pending part, ``PD_NPEND``, are clear: they go back still cached; all of it for a batch the
    sheaves gave whole, :func:`_takes_pending`); the record cleared. True; False with nothing
    changed otherwise (the caller settles and frees)."""
    pd = st.pend
    npend = pd[PD_NPEND]
    if (pd[PD_ROW] != _cpu_row(st, cache, cpu)) | (npend > nr) | (st.nnodes != 1):
        return False
    if not _record_equals(pd, nr, p) or _free_stamp(st, cache) != pd[PD_STAMP]:
        return False
    _record_drop(st)
    if _ca(st, cache, CA_SHEAF_CAPACITY):
        _free_to_pcs_batches(st, cache, cpu, nr, p, True, npend)
    else:
        if st.kernel >= KERNEL_7_0:
            _stat(st, cache, cpu, FREE_SLOWPATH, nr)
        free_bulk_raw_cleared(st, cache, cpu, nr, address(p))
    return True


@jit(inline=True)
def _sheaf_put(st, cache, cpu, sheaf, n, p, at):
    """Push ``p[at:at+n]`` on top of ``sheaf``, their order kept (``free_to_pcs_bulk``'s memcpy).

    The objects (taken back: live bit clear) stay held (cached). FREE_PCS += n."""
    _sheaf_push(st, sheaf, n, p, at)
    _stat(st, cache, cpu, FREE_PCS, n)


@jit(inline=True)
def _sheaf_push(st, sheaf, n, p, at):
    """Copy ``p[at:at+n]`` on top of ``sheaf`` and raise its size; nothing else."""
    mem = st.mem
    size = mem[_w(sheaf, SH_SIZE)]
    o = _w(sheaf, SH_OBJECTS) + size
    for k in range(n):
        mem[o + k] = p[at + k]
    mem[_w(sheaf, SH_SIZE)] = size + n



@jit(inline=True)
def _put_main_spare(st, cache, cpu, nr, p):
    """``free_to_pcs_bulk`` when the main sheaf has room for part of the batch, the spare the rest.

    The objects are checked, local; the case is the caller's to know. ``p[:room]`` fill the main,
    main and spare are swapped, the rest go on the new main; FREE_PCS += nr."""
    mem = st.mem
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    main = cpt[c + C_MAIN]
    spare = cpt[c + C_SPARE]
    cap = _ca(st, cache, CA_SHEAF_CAPACITY)
    m = mem[_w(main, SH_SIZE)]
    room = cap - m
    o = _w(main, SH_OBJECTS) + m
    for k in range(room):
        mem[o + k] = p[k]
    mem[_w(main, SH_SIZE)] = cap
    s = mem[_w(spare, SH_SIZE)]
    o = _w(spare, SH_OBJECTS) + s
    for k in range(nr - room):
        mem[o + k] = p[room + k]
    mem[_w(spare, SH_SIZE)] = s + nr - room
    cpt[c + C_MAIN] = spare
    cpt[c + C_SPARE] = main
    _stat(st, cache, cpu, FREE_PCS, nr)


@jit
def _alloc_from_pcs_bulk(st, cache, cpu, nr, p, start):
    """``alloc_from_pcs_bulk``: objects from the sheaves into ``p[start:start+nr]``, marked live.

    From main, spare and full barn sheaves (array order kept); stops when the barn has no full
    sheaf. Taken without marks when :func:`_takes_pending` says so (``kmem_cache_alloc_bulk``'s
    call, ``start`` 0: the record is settled)."""
    mem = st.mem
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    got = 0
    pend = _takes_pending(st, cache, nr)
    stale = 0
    while got < nr:
        main = cpt[c + C_MAIN]
        if mem[_w(main, SH_SIZE)] == 0:
            spare = cpt[c + C_SPARE]
            if spare and mem[_w(spare, SH_SIZE)] > 0:
                cpt[c + C_SPARE] = main
                cpt[c + C_MAIN] = spare
            else:
                r = _barn(st, cache, cpu)
                if not st.node[r + N_NR_FULL]:
                    _stat(st, cache, cpu, BARN_GET_FAIL, 1)
                    break
                _barn_trade(st, cache, cpu, r, True)
                _stat(st, cache, cpu, BARN_GET, 1)
            main = cpt[c + C_MAIN]
        batch = min(nr - got, mem[_w(main, SH_SIZE)])
        if pend:
            _sheaf_take_pending(st, cache, cpu, main, batch, p, start + got)
            got += batch
        elif _sheaf_take(st, cache, cpu, main, batch, p, start + got):
            got += batch
            stale = 0
        else:                               # purged: the retake finds no live or repeated
            stale += 1                      # entry; a second failure would be a bug: give
            if stale > 1:                   # up rather than loop
                break
    return got


# ---- free ---------------------------------------------------------------------------------------
@jit(inline=True)
def _flush_remote(st, cache, cpu, p, at, n):
    """``free_to_pcs_bulk``'s ``flush_remote``: free one batch of remote objects to their slabs.

    The batch is kept newest first at ``p[at:at+n]``, freed as ``__kmem_cache_free_bulk`` of the
    kernel's ``remote_objects[]`` (oldest first: the slice is reversed in place first)."""
    lo = at
    hi = at + n - 1
    while lo < hi:
        t = p[lo]
        p[lo] = p[hi]
        p[hi] = t
        lo += 1
        hi -= 1
    if st.kernel >= KERNEL_7_0:
        _stat(st, cache, cpu, FREE_SLOWPATH, n)
    free_bulk_raw(st, cache, cpu, n, address(p) + 8 * at)


@jit(inline=True)
def _free_to_pcs_bulk(st, cache, cpu, nr, p):
    """``free_to_pcs_bulk``: :func:`_free_to_pcs_batches`, or 7.3's :func:`free_to_pcs_bulk_split`.

    The unit :func:`free_to_pcs_bulk_split` from 7.3 on a machine of several nodes (apart, so the
    7.0 default's code is as it was: 7.3's rule in this function made its bulk frees slower by code
    layout alone)."""
    if st.kernel >= KERNEL_7_3 and st.nnodes > 1:
        free_to_pcs_bulk_split(st, cache, cpu, nr, address(p))
    else:
        _free_to_pcs_batches(st, cache, cpu, nr, p, False, 0)


@unit
def free_to_pcs_bulk_split(st, cache, cpu, nr, paddr):
    """7.3's ``free_to_pcs_bulk``: local objects to the sheaves, remote ones to their slabs. 0.

    Each remote object of ``p[:nr]`` swapped to the front (``swap(remote_objects[remote_nr],
    p[i])``), the local ones to the sheaves, then every remote one to its slab in one
    ``__kmem_cache_free_bulk`` (FREE_SLOWPATH)."""
    p = words_at(paddr)
    local = st.cpu_node[cpu]
    base = 0
    for i in range(nr):
        if _slab_nid(st, p[i] >> 12) != local:
            p[i], p[base] = p[base], p[i]
            base += 1
    _free_to_pcs_batches(st, cache, cpu, nr - base, words_at(paddr + 8 * base), False, 0)
    if base:
        _stat(st, cache, cpu, FREE_SLOWPATH, base)
        free_bulk_raw(st, cache, cpu, base, paddr)
    return 0


@jit
def _free_to_pcs_batches(st, cache, cpu, nr, p, clear, lo):
    """``free_to_pcs_bulk`` before 7.3: local objects into sheaves, remote ones to the slabs.

    The local-node objects of ``p[:nr]`` into sheaves (swapping with the spare or trading a full
    main for an empty barn sheaf), the rest to the slabs when no sheaf has room; remote ones to
    their slabs in batches of ``PCS_BATCH_MAX`` in scan order, a full one at once, the last after
    the local objects. The scan removes an object as the kernel does (``p[i] = p[--size]``, a
    removed one kept in the slot that frees: ``p`` is permuted). Where the kernel, its 32nd remote
    object the last scanned, returns without freeing the local objects (a leak), numslab frees them
    (ARCHITECTURE: deliberate deviations). With ``clear`` (the free of a checked record, on one
    node: no remote object) the objects' live bits from ``p[lo]`` on are cleared where they go,
    unchecked (``p[:lo]``: the record's pending part, not marked)."""
    mem = st.mem
    cpt = st.cpu
    c = _cpu_row(st, cache, cpu)
    cap = _ca(st, cache, CA_SHEAF_CAPACITY)
    local = st.cpu_node[cpu]
    size = nr
    i = 0
    remote = 0
    while i < size and st.nnodes > 1:           # next_remote_batch
        if _slab_nid(st, p[i] >> 12) != local:
            size -= 1
            t = p[i]
            p[i] = p[size]
            p[size] = t
            remote += 1
            if remote >= PCS_BATCH_MAX:
                _flush_remote(st, cache, cpu, p, size, remote)
                remote = 0
        else:
            i += 1
    done = 0
    r = _barn(st, cache, cpu)
    nd = st.node
    while done < size:                          # next_batch
        main = cpt[c + C_MAIN]
        if mem[_w(main, SH_SIZE)] == cap:
            spare = cpt[c + C_SPARE]
            if not spare:
                empty = _barn_pop(st, r, N_BARN_EMPTY, N_NR_EMPTY)
                if not empty:
                    break
                cpt[c + C_SPARE] = main
                cpt[c + C_MAIN] = empty
            elif mem[_w(spare, SH_SIZE)] < cap:
                cpt[c + C_SPARE] = main
                cpt[c + C_MAIN] = spare
            elif nd[r + N_NR_FULL] < MAX_FULL_SHEAVES and nd[r + N_NR_EMPTY]:
                _barn_trade(st, cache, cpu, r, False)
                _stat(st, cache, cpu, BARN_PUT, 1)
            else:
                _stat(st, cache, cpu, BARN_PUT_FAIL, 1)
                break
            main = cpt[c + C_MAIN]
        batch = min(size - done, cap - mem[_w(main, SH_SIZE)])
        if clear:
            live = st.live
            for k in range(max(done, lo), done + batch):
                a = p[k]
                live[a >> 9] &= ~(1 << ((a >> 3) & 63))
        _sheaf_put(st, cache, cpu, main, batch, p, done)
        done += batch
    if done < size:                             # no_empty / fallback
        if st.kernel >= KERNEL_7_0:
            _stat(st, cache, cpu, FREE_SLOWPATH, size - done)
        if clear:
            free_bulk_raw_cleared(st, cache, cpu, size - done, address(p) + 8 * done)
        else:
            free_bulk_raw(st, cache, cpu, size - done, address(p) + 8 * done)
    if remote:                                  # flush_remote: the last batch
        _flush_remote(st, cache, cpu, p, size, remote)
