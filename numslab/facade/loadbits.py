"""What ``load`` checks of a loaded state's bitmaps: the live bits, the held bits, the RCU marks.

They run behind :class:`loadcheck.Structure`'s walks and read what those met (every sheaf, barn
and random sequence, each sheaf's entries): each live bit an object's start or the mark of an
own object (:func:`check_live_bits`), no free object marked live (:func:`check_free_not_live`),
field ``held`` marking exactly the objects live or in sheaves of the caches that keep it and no
pending record (:func:`check_held_bits`), and field ``rcu`` marking exactly the objects waiting
for a grace period (:func:`check_rcu_marks`). The first that fails raises ``MachineFileError``
naming the word."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.layout import (CA_ACTIVE, CA_RED_LEFT, CA_SIZE, G_PEND, PD_COUNT, PG_FROZEN,
                             PG_ISOLATED, PG_SLAB, PG_TAIL)
from ..errors import MachineFileError

if TYPE_CHECKING:
    from .allocator import SlabAllocator


def _set_bits(words: np.ndarray) -> np.ndarray:
    """The addresses (int64, ascending) whose bit is set in bitmap ``words`` (a bit a granule)."""
    words = np.ascontiguousarray(words).view(np.uint64)
    nz = np.flatnonzero(words)
    bits = np.unpackbits(words[nz].view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    k, b = np.nonzero(bits)
    return (nz[k].astype(np.int64) << 9) | (b.astype(np.int64) << 3)


def _objects_of(s: Any, addr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each address: whether it is an object's start in a slab, its slab's head, its cache.

    (ok: bool[n], head: int64[n], cache: int64[n]; head and cache meaningful where ok.)"""
    st = s.st
    frames = np.arange(s.npages)            # per frame first (the bits are millions)
    head = np.where(st.pg_flags & PG_TAIL, st.pg_head, frames)
    slab = (st.pg_flags[head] & PG_SLAB) != 0
    c = np.where(slab, st.sl_cache[head], 0)
    base = (head << 12) + st.ca[c, CA_RED_LEFT]
    size = np.maximum(st.ca[c, CA_SIZE], 1)
    end = np.where(slab, st.sl_objects[head] * size, 0)
    pfn = addr >> 12
    off = addr - base[pfn]
    return (off >= 0) & (off < end[pfn]) & (off % size[pfn] == 0), head[pfn], c[pfn]


def check_live_bits(s: Any) -> None:
    """Every bit of the live bitmap at an object's start or as the mark of an own object met.

    A bit is set where a slab's object starts, and on the granule after an allocator's own
    kmalloc object (``live._own_set``) that a sheaf, barn or ``random_seq`` word reached: a
    mark on a user's or a free object made its free refused ever after ("a sheaf the
    allocator itself uses"), a mark no word reaches an object no one frees, and neither
    ``validate`` saw. Then :func:`check_free_not_live` of the objects' bits.

    Parameters
    ----------
    s : loadcheck.Structure
        The structure checks, every sheaf walked (``s.sheaves``, ``s.entries``).
    """
    st = s.st
    addr = _set_bits(st.live)
    ok, heads, _ = _objects_of(s, addr)
    own = np.fromiter(s.sheaves, np.int64, len(s.sheaves)) - s.shadow + 8
    bad = np.flatnonzero(~ok)               # (the few: marks, and any bit set wrong)
    bad = bad[~np.isin(addr[bad], own)]
    if len(bad):
        a = int(addr[bad[0]])
        s.fail(f"live[{a >> 9}]", st.live[a >> 9], f"its bit {(a >> 3) & 63} (address {a}) "
               f"neither an object's start in a slab nor the mark of a sheaf, barn or random "
               f"sequence the allocator holds")
    check_free_not_live(s, addr[ok], heads[ok])


def check_free_not_live(s: Any, objs: np.ndarray, slabs: np.ndarray) -> None:
    """Refuse a free object marked live: a slab's objects in use are those live, in sheaves, lost.

    A slab counts in use (``sl_inuse``) each object a user holds (live; the ``kfree_rcu``
    list's too, which ``save`` writes as allocated), each entry of a sheaf naming one of its
    objects and each object a repair cut off (``sl_lost``). Every path keeps that sum (no stray
    write makes an object live and in a sheaf: the held bits refuse a free pointer naming a
    sheaf's object, and :func:`check_held_bits` refuses such a file). A live
    bit set on a free object (on its slab's free list, or in a sheaf or a barn's) broke it:
    a kfree of that object, which no one held, was taken (it was then free twice: ``validate``
    failed), and a sheaf's entry was dropped as stale, its slab isolated. Left out:
    isolated slabs (their free objects leaked) and 6.18's CPU slabs (their free objects on the
    CPU's freelist are counted in use).

    Parameters
    ----------
    s : loadcheck.Structure
        The structure checks, every sheaf walked (``s.entries``: each sheaf's name and objects).
    objs : numpy.ndarray
        int64[n]: the slab objects whose live bit is set.
    slabs : numpy.ndarray
        int64[n]: the head frame of each one's slab.
    """
    st, npages = s.st, s.npages
    entries = [e for _, e in s.entries]
    held = np.concatenate([np.zeros(0, np.int64), *entries])
    live = np.bincount(slabs, minlength=npages)
    in_sheaves = np.bincount(st.heads(held), minlength=npages) if len(held) else 0
    counted = live + in_sheaves + st.sl_lost
    checked = (st.pg_flags & (PG_SLAB | PG_ISOLATED | PG_FROZEN)) == PG_SLAB
    wrong = np.flatnonzero(checked & (counted != st.sl_inuse))
    if not len(wrong):
        return
    slab = int(wrong[0])
    inuse = int(st.sl_inuse[slab])
    count = (f"its slab at {slab << 12} counts {inuse} objects in use, not the "
             f"{int(counted[slab])} live, in sheaves or lost")
    if counted[slab] > inuse:                   # a free object marked live: which, and where
        mine = objs[slabs == slab]
        for at, e in s.entries:
            got = e[np.isin(e, mine)]
            if len(got):
                _free_live(s, int(got[0]), f"in {at}", count)
        for a in _free_list(s, slab):
            if np.isin(a, mine):
                _free_live(s, a, "on its slab's free list", count)
    s.fail(f"sl_inuse[{slab}]", inuse, f"not {int(counted[slab])}, the objects of its slab live, "
           f"in sheaves or lost")


def _free_live(s: Any, a: int, where: str, count: str) -> None:
    """Refuse the live bit of the free object at ``a``, ``where`` it is."""
    s.fail(f"live[{a >> 9}]", s.st.live[a >> 9], f"its bit {(a >> 3) & 63} marks the free object "
           f"at {a} ({where}) live: {count}")


def _free_list(s: Any, slab: int) -> list[int]:
    """The objects of ``slab``'s free list, as far as it is a list of the slab's objects."""
    st = s.st
    c = int(st.sl_cache[slab])
    size, red = int(st.ca[c, CA_SIZE]), int(st.ca[c, CA_RED_LEFT])
    lo, n = (slab << 12) + red, int(st.sl_objects[slab])
    out: list[int] = []
    a = int(st.sl_freelist[slab])
    while a and len(out) < n and 0 <= a - lo < n * size and (a - lo) % size == 0:
        out.append(a)
        a = s.sa._get_freepointer(c, a)
    return out


def check_rcu_marks(sa: "SlabAllocator", path: str | Path, waiting: np.ndarray) -> None:
    """Refuse a loaded machine whose RCU marks are not exactly the objects waiting for one.

    Field ``rcu`` marks each object waiting for a grace period: those on the ``kfree_rcu`` list
    (listed again by ``load``; a large kmalloc waits by its page flag) and those in RCU sheaves
    (``waiting``, int64[n], from :meth:`loadcheck.Structure.sheaf`). The checks behind the digest
    leave the marks, and a mark on a free object made ``validate`` fail and its later free a
    refusal.

    Parameters
    ----------
    sa : SlabAllocator
        The loaded machine, its ``kfree_rcu`` list listed again.
    path : str or Path
        The file, for the refusal.
    waiting : numpy.ndarray
        int64[n]: the objects of the CPUs' ``rcu_free`` sheaves and of the RCU list's sheaves.
    """
    marked = np.unique(_set_bits(sa.state.rcu))
    listed, st = sa._rcu_listed(), sa.state     # (a large kmalloc waits by PG_RCU, unmarked)
    listed = listed[(st.pg_flags[st.heads(listed)] & PG_SLAB) != 0]
    want = np.unique(np.concatenate([waiting.astype(np.int64), listed]))
    if np.array_equal(marked, want):
        return
    extra, missing = np.setdiff1d(marked, want), np.setdiff1d(want, marked)
    what = (f"marks the object at {int(extra[0]):#x} as waiting for kfree_rcu, on no "
            f"kfree_rcu list nor RCU sheaf" if len(extra) else
            f"has no mark for the object at {int(missing[0]):#x}, which waits for kfree_rcu")
    raise MachineFileError(f"load: {path}: its state is corrupt: its field rcu {what}")


def check_held_bits(s: Any) -> None:
    """Refuse a held bitmap that is not the objects live or in sheaves, or a pending record.

    Field ``held`` marks, in the slabs of the caches that keep it (``CA_ACTIVE``'s bit 1), each
    object off its slab's free list: live (the ``kfree_rcu`` list's too, written allocated) or
    named by a sheaf, no other (a lost object, ``sl_lost``, is free and unmarked); an isolated
    slab's marks may also be on objects its leaked free list held. ``save`` settles the pending
    record, so a file has none (``G_PEND`` and its count 0). A free object marked held was
    never handed out again (a free pointer naming it was refused as corrupted); an object in a
    sheaf not marked let a free pointer name it, and the slab layer hand it out while the sheaf
    held it.

    Parameters
    ----------
    s : loadcheck.Structure
        The structure checks, every sheaf walked, the live bits checked.
    """
    st = s.st
    g = s.sa._g
    if g[G_PEND] or st.pend[PD_COUNT]:
        s.fail("g[G_PEND]" if g[G_PEND] else "pend[PD_COUNT]",
               g[G_PEND] if g[G_PEND] else st.pend[PD_COUNT],
               "not 0: save settles the pending bulk allocation, so no file holds one")
    keeps = (st.ca[:, CA_ACTIVE] & 2) != 0
    held = _set_bits(st.held)
    ok, heads, c = _objects_of(s, held)
    bad = np.flatnonzero(~(ok & keeps[c]))
    if len(bad):
        a = int(held[bad[0]])
        s.fail(f"held[{a >> 9}]", st.held[a >> 9], f"its bit {(a >> 3) & 63} (address {a}) is "
               f"no object's start in a slab of a cache that keeps held bits")
    live = _set_bits(st.live)
    lok, _, lc = _objects_of(s, live)
    named = np.concatenate([np.zeros(0, np.int64), *(e for _, e in s.entries)])
    nok, _, nc = _objects_of(s, named)
    named = named[nok & keeps[nc]]
    twice = np.intersect1d(live, named)         # (a sheaf's object is cached, not live)
    if not len(twice):
        u, k = np.unique(named, return_counts=True)
        twice = u[k > 1]
    if len(twice):
        a = int(twice[0])
        where = next(at for at, e in s.entries if a in e)
        s.fail(f"held[{a >> 9}]", st.held[a >> 9], f"the object at {a} is in {where} and live "
               f"or in a sheaf again: a sheaf of a cache that keeps held bits holds only cached "
               f"objects, each once")
    want = np.union1d(live[lok & keeps[lc]], named)
    missing = np.setdiff1d(want, held)
    if len(missing):
        a = int(missing[0])
        where = next((at for at, e in s.entries if a in e), None)
        s.fail(f"held[{a >> 9}]", st.held[a >> 9], f"its bit {(a >> 3) & 63} is clear, but the "
               f"object at {a} is {'in ' + where if where else 'live'}: off its slab's free list")
    extra = np.setdiff1d(held, want)
    isolated = (st.pg_flags[heads_of(s, extra)] & PG_ISOLATED) != 0
    extra = extra[~isolated]
    if len(extra):
        a = int(extra[0])
        s.fail(f"held[{a >> 9}]", st.held[a >> 9], f"its bit {(a >> 3) & 63} marks the free "
               f"object at {a} held: it is neither live nor in a sheaf")


def heads_of(s: Any, addr: np.ndarray) -> np.ndarray:
    """The head frame of the block holding each address (int64[n])."""
    st = s.st
    pfn = addr >> 12
    return np.where(st.pg_flags[pfn] & PG_TAIL, st.pg_head[pfn], pfn)
