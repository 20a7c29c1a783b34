"""A differential fuzzer of pending bulk takes: one random sequence of single and bulk
allocations and frees (from Python and inside ``@njit``), good and refused (double, foreign,
misaligned and wrong-cache frees, a batch with one bad element), run on two machines made
alike but for ``pending_takes``. Every call must return the same addresses or raise the same
error, and after every call the machine with the takes on, its pending record settled (in a
copy: the record is not disturbed), must be word for word the machine without them."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numslab
from numslab.engine.layout import (C_MAIN, C_NCOLS, C_SPARE, CA_ACTIVE, CA_NCOLS, F_CA,
                                   F_CPU, F_G, F_LIVE, F_PEND, G_PEND, PD_NPEND, PD_OBJS, SH_SIZE,
                                   view)

from conftest import (jit_alloc, jit_alloc_bulk, jit_free, jit_free_bulk, jit_is_live,
                      snapshot_state)

KERNELS = ("7.0", "7.1", "7.3", "next", "6.18")


OPS = st.lists(st.tuples(st.sampled_from(["alloc", "jalloc", "bulk", "jbulk", "bulk", "jbulk",
                                           "free_last", "free_last", "jfree_last", "reversed",
                                           "part", "one", "jone", "double", "foreign",
                                           "misaligned", "wrong_cache", "bad_batch", "is_live",
                                           "validate", "shrink", "find", "big", "jbig",
                                           "free_prev", "jfree_prev", "reordered",
                                           "other_in"]),
                         st.integers(0, 10 ** 6)),
               min_size=10, max_size=60)


#: the calls that must be refused (and change nothing)
BAD = ("double", "foreign", "misaligned", "wrong_cache", "bad_batch")


def _state_and_arena(sa):
    """A copy of the state words of ``sa`` (as :func:`conftest.snapshot` takes them) and its
    arena itself as 8-byte words: compare them before the next call.

    (The arena copied and compared byte by byte, a 16 MiB machine's was half the time of
    ``test_pending_nodes``.)"""
    return snapshot_state(sa), sa.memory.view(np.int64)


def _settled(sa):
    """The state words of ``sa`` as they are with its pending record settled (each object's live
    bit set), the record itself (field ``pend``, ``G_PEND``) left out, a copy, and its arena
    (:func:`_state_and_arena`); the machine is not touched."""
    buf, mem = _state_and_arena(sa)
    g, pend = view(buf, F_G), view(buf, F_PEND)
    live = view(buf, F_LIVE).view(np.uint64)
    n = int(pend[PD_NPEND]) if g[G_PEND] else 0        # (a checked record's rest are marked)
    for a in pend[PD_OBJS:PD_OBJS + n].tolist():
        live[a >> 9] |= np.uint64(1) << np.uint64((a >> 3) & 63)
    g[G_PEND] = 0
    pend[:] = 0
    return _masks_alike(buf), mem


def _masks_alike(buf):
    """``buf`` with each cache's pending-take bit (``CA_ACTIVE``'s bit 2) cleared."""
    view(buf, F_CA).reshape(-1, CA_NCOLS)[:, CA_ACTIVE] &= ~4
    return buf


class _Run:
    """One machine of the pair and what its calls returned."""

    def __init__(self, kernel, seed, pending, cap=32):
        self.sa = numslab.SlabAllocator(nr_cpus=2, memory="4M", kernel=kernel, seed=seed,
                                        pending_takes=pending)
        self.c = self.sa.kmem_cache_create("f", 64, sheaf_capacity=cap)   # (6.18: asked)
        self.d = self.sa.kmem_cache_create("g", 64, sheaf_capacity=32)
        self.other = self.d.alloc()

    def call(self, f):
        """``f(self)``'s value, or the class and text of the SlabError it raised."""
        try:
            v = f(self)
        except numslab.SlabError as e:
            return ("raised", type(e).__name__, str(e))
        return ("returned", v.tolist() if isinstance(v, np.ndarray) else v)


#: the sizes of the ``big`` batches: past the pending take (64) and the sheaf (32), one slab
#: (64 objects of 64 bytes), many, and the checked record's limit (4096)
BIG = (16, 33, 65, 250, 1000, 4096, 4097)


def _others(n, live, freed, last):
    """What ``other_in`` puts in the batch: freed objects (every third ``n``), else the live
    objects not in it (or the freed, or no object at all)."""
    if n % 3 == 0 and freed:
        return freed
    out = set(last)
    return [x for x in live if x not in out] or freed or [64]


def _step(op, n, live, freed, last, prev=()):
    """The call of ``op`` as a function of a run, from the shared model (``live``: addresses
    held, in allocation order; ``freed``: addresses freed; ``last``: the last bulk batch while
    none of it was freed; ``prev``: the last bulk batch, whatever was freed since)."""
    k = 1 + n % 70                      # (above 64: no pending take)
    if op in ("big", "jbig"):
        k = BIG[n % len(BIG)]
        op = op[:-3] + "bulk"
    pick = live[n % len(live)] if live else None
    if op == "alloc":
        return lambda r: r.c.alloc()
    if op == "jalloc":
        return lambda r: jit_alloc(r.sa.handle, r.c.id)
    if op == "bulk":
        return lambda r: r.c.alloc_bulk(k)
    if op == "jbulk":
        def f(r):
            out = np.zeros(k, np.int64)
            jit_alloc_bulk(r.sa.handle, r.c.id, k, out)
            return out
        return f
    if op in ("free_last", "jfree_last", "reversed") and last:
        b = np.array(last[::-1] if op == "reversed" else last, np.int64)
        if op == "jfree_last":
            return lambda r: jit_free_bulk(r.sa.handle, r.c.id, len(b), b.copy())
        return lambda r: r.c.free_bulk(b)
    if op in ("free_prev", "jfree_prev") and prev:
        b = np.array(prev, np.int64)    # (some freed since, some handed out again: refused,
        if op == "jfree_prev":          # or freed as any batch)
            return lambda r: jit_free_bulk(r.sa.handle, r.c.id, len(b), b.copy())
        return lambda r: r.c.free_bulk(b)
    if op == "reordered" and last and len(last) > 1:
        b = np.array(last, np.int64)    # the record's objects, two of them swapped
        i, j = n % len(b), (n // 7) % len(b)
        b[[i, j]] = b[[j, i]]
        return lambda r: jit_free_bulk(r.sa.handle, r.c.id, len(b), b.copy())
    if op == "other_in" and last:
        b = np.array(last, np.int64)    # one element another live object (or a freed one)
        rest = _others(n, live, freed, last)
        b[n % len(b)] = rest[n % len(rest)]
        return lambda r: r.c.free_bulk(b) if n % 2 else \
            jit_free_bulk(r.sa.handle, r.c.id, len(b), b.copy())
    if op == "part" and live:
        b = np.array(live[n % len(live):][:1 + n % 20], np.int64)
        return lambda r: r.c.free_bulk(b)
    if op in ("one", "jone") and pick is not None:
        if op == "jone":
            return lambda r: jit_free(r.sa.handle, r.c.id, pick)
        return lambda r: r.c.free(pick)
    held = set(live)
    gone = [x for x in freed if x not in held]      # (not handed out again since)
    if op == "double" and gone:
        x = gone[n % len(gone)]
        b = np.array((last or [])[:3] + [x], np.int64)
        if n % 2:
            return lambda r: jit_free_bulk(r.sa.handle, r.c.id, len(b), b.copy())
        return lambda r: r.c.free(x)
    if op == "foreign":
        b = np.array((last or [])[:5] + [-1], np.int64)

        def f(r):
            b[-1] = r.other
            return jit_free_bulk(r.sa.handle, r.c.id, len(b), b.copy()) if n % 2 \
                else r.c.free(r.other)
        return f
    if op == "misaligned" and pick is not None:
        b = np.array((last or [])[:2] + [pick + 8], np.int64)
        if n % 2:
            return lambda r: r.c.free_bulk(b)
        return lambda r: jit_free(r.sa.handle, r.c.id, pick + 8)
    if op == "wrong_cache" and pick is not None:
        b = np.array([pick], np.int64)
        return lambda r: r.d.free_bulk(b) if n % 2 else jit_free(r.sa.handle, r.d.id, pick)
    if op == "bad_batch" and last and len(last) > 1:
        b = np.array(last, np.int64)
        b[n % len(b)] = b[(n + 1) % len(b)]         # one element twice
        return lambda r: jit_free_bulk(r.sa.handle, r.c.id, len(b), b.copy())
    if op == "is_live":
        a = pick if pick is not None and n % 3 else (freed[n % len(freed)] if freed else 64)
        return lambda r: jit_is_live(r.sa.handle, r.c.id, a)
    if op == "validate":
        return lambda r: r.sa.validate()
    if op == "shrink":
        return lambda r: r.c.shrink()
    if op == "find" and pick is not None:
        return lambda r: r.sa.find(pick)["kind"]
    return None


def _differential(ops, gen, seed, cap=32):
    """Run ``ops`` on the pair (cache ``f`` asking for sheaves of ``cap`` objects); (batches
    taken pending, pending batches freed back whole, batches recorded checked (their marks
    written past their sheaves' part), checked records freed back whole, batches of more than
    the main and spare sheaves hold taken pending: the barn's full sheaves gave the rest)."""
    on, off = _Run(gen, seed, True, cap), _Run(gen, seed, False, cap)
    live: list[int] = []
    freed: list[int] = []
    last: list[int] = []
    prev: list[int] = []
    pended = back = checked = unchecked = wide = 0
    for op, n in ops:
        f = _step(op, n, live, freed, last, prev)
        if f is None:
            continue
        before = int(on.sa.state.g[G_PEND])
        kind = int(on.sa.state.pend[PD_NPEND])
        got = on.call(f)
        assert got == off.call(f), (op, got)
        after = int(on.sa.state.g[G_PEND])
        bulk = op in ("bulk", "jbulk", "big", "jbig")
        pended += bulk and after > 0 and on.sa.state.pend[PD_NPEND] == after
        wide += bulk and after > 2 * on.c.sheaf_capacity and \
            on.sa.state.pend[PD_NPEND] == after
        checked += bulk and after > 0 and on.sa.state.pend[PD_NPEND] < after
        whole = op in ("free_last", "jfree_last") and before > 0 and after == 0 and \
            got[0] == "returned"
        back += whole and kind == before
        unchecked += whole and kind < before
        assert off.sa.state.g[G_PEND] == 0
        a, b = _settled(on.sa), _state_and_arena(off.sa)
        b = (_masks_alike(b[0]), b[1])
        assert np.array_equal(a[0], b[0]), f"{op}: the settled states differ"
        assert np.array_equal(a[1], b[1]), f"{op}: the arenas differ"
        if op in BAD:
            assert got[0] == "raised", (op, got)
        if got[0] == "raised":
            continue
        v = got[1]
        if op in ("alloc", "jalloc"):
            live.append(v)
        elif op in ("bulk", "jbulk", "big", "jbig"):
            live.extend(v)
            last = list(v)
            prev = list(v)
        elif op in ("free_last", "jfree_last", "reversed", "part", "one", "jone", "free_prev",
                    "jfree_prev", "reordered", "other_in"):
            if op == "other_in":
                gone = list(last)
                rest = _others(n, live, freed, last)
                gone[n % len(gone)] = rest[n % len(rest)]
            else:
                gone = last if op in ("free_last", "jfree_last", "reversed", "reordered") \
                    else prev if op in ("free_prev", "jfree_prev") else \
                    live[n % len(live):][:1 + n % 20] if op == "part" else \
                    [live[n % len(live)]]
            gone = list(gone)
            drop = set(gone)            # (each object is in live once)
            live[:] = [x for x in live if x not in drop]
            freed.extend(gone)
            if set(gone) & set(last):
                last = []
    for r in (on, off):
        r.sa.validate()
        assert sorted(r.c.live_addresses().tolist()) == sorted(live)
    assert on.sa.slabinfo() == off.sa.slabinfo()
    return pended, back, checked, unchecked, wide


@settings(max_examples=40, deadline=None)
@given(ops=OPS, gen=st.sampled_from(KERNELS), seed=st.integers(0, 3))
def test_pending_takes_change_no_result_and_no_settled_word(ops, gen, seed):
    _differential(ops, gen, seed)


@pytest.mark.parametrize("gen", KERNELS)
def test_a_long_seeded_sequence_with_many_pending_batches(gen):
    """400 calls drawn from one seed, weighted to bulk rounds: the pending take and the free
    of exactly the pending batch are met many times, and the machines stay alike."""
    rng = np.random.default_rng(12)
    names = ["bulk", "jbulk", "free_last", "jfree_last", "reversed", "part", "one", "jone",
             "alloc", "jalloc", "double", "foreign", "misaligned", "wrong_cache", "bad_batch",
             "is_live", "find", "shrink", "validate"]
    ops: list[tuple[str, int]] = []
    while len(ops) < 400:
        op, n = names[int(rng.integers(len(names)))], int(rng.integers(10 ** 6))
        if op in ("bulk", "jbulk") and rng.random() < 0.8:
            n = int(rng.integers(16))                           # (a batch of 1 to 16)
        ops.append((op, n))
        if op in ("bulk", "jbulk") and rng.random() < 0.6:      # the round's free at once
            ops.append((("free_last", "jfree_last")[int(rng.integers(2))], 0))
    pended, back, _, _, _ = _differential(ops, gen, 1)
    assert pended >= 10 and back >= 5, (pended, back)


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_a_long_seeded_sequence_of_large_batches_in_large_sheaves(gen):
    """About 200 calls drawn from one seed on a cache asking for sheaves of 512 objects, weighted
    to bulk rounds of 65 to 1000 objects that its main sheaf holds whole: batches larger than
    a default sheaf are taken pending and freed back whole many times (until December 2026 a
    take of more than 64 objects wrote every mark), and the machines stay alike through the
    same bad, reordered, partial and single frees as the smaller rounds."""
    rng = np.random.default_rng(14)
    names = ["big", "jbig", "big", "jbig", "jone", "alloc", "one", "double", "is_live",
             "validate", "part", "foreign", "reversed", "bad_batch", "other_in"]
    ops: list[tuple[str, int]] = []
    while len(ops) < 200:
        op, n = names[int(rng.integers(len(names)))], int(rng.integers(10 ** 6))
        if op in ("big", "jbig"):
            n = int(rng.choice([2, 3, 4]))                  # BIG[n]: 65, 250 or 1000 objects
        ops.append((op, n))
        if op in ("big", "jbig") and rng.random() < 0.7:    # the round's free at once
            ops.append((("free_last", "jfree_last")[int(rng.integers(2))], 0))
    pended, back, _, _, _ = _differential(ops, gen, 3, cap=512)
    assert pended >= 15 and back >= 10, (pended, back)


@pytest.mark.parametrize("gen", ["7.0", "7.3", "6.18"])
def test_a_long_seeded_sequence_of_batches_through_the_slabs(gen):
    """About 150 calls drawn from one seed, weighted to bulk rounds of 16 to 4097 objects, each
    followed by its free whole (the checked record), or a free of the batch with the array
    changed (two elements swapped, one another object's, a freed one's or one element twice),
    or a single free of one of its objects from ``@njit`` (inline: the record's stamp moves)
    with the batch's free after it: the machines stay alike, and each kind of record is met and
    freed whole many times."""
    rng = np.random.default_rng(13)
    names = ["big", "jbig", "big", "jbig", "jone", "jalloc", "alloc", "one", "double",
             "is_live", "shrink", "validate", "bulk", "foreign"]
    after = [("free_last",), ("jfree_last",), ("reordered",), ("other_in",), ("other_in",),
             ("bad_batch",), ("bad_batch",), ("jone", "jfree_prev"), ("jone", "jalloc",
             "free_prev"), ("is_live", "free_last"), ("double", "jfree_last"), ("misaligned",
             "free_last"), ("foreign", "jfree_last"), ()]
    ops: list[tuple[str, int]] = []
    while len(ops) < 150:
        op, n = names[int(rng.integers(len(names)))], int(rng.integers(10 ** 6))
        ops.append((op, n))
        if op in ("big", "jbig", "bulk"):
            for o in after[int(rng.integers(len(after)))]:
                ops.append((o, int(rng.integers(10 ** 6)) if o != "jone" else -1))  # -1: its last
    pended, back, checked, unchecked, _ = _differential(ops, gen, 2)
    assert checked >= 12 and unchecked >= 5, (checked, unchecked)


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_a_long_seeded_sequence_of_batches_the_barn_s_sheaves_give_whole(gen):
    """A cache also used one object at a time (350 single allocations, then their frees: its
    barn holds full sheaves), then about 150 calls drawn from one seed, weighted to bulk rounds
    of 65 and 250 objects; 250 is more than the CPU's main and spare sheaves hold (60 each),
    and the barn's full sheaves complete it. From 7.0 on the whole batch is taken pending (until December 8,
    2026 only the main sheaf's part was: every other object's mark written at the take and
    cleared at the free) and freed back whole; 6.18 marks them. The machines stay alike through
    the same bad, reordered, partial and single frees as the other sequences."""
    rng = np.random.default_rng(15)
    ops: list[tuple[str, int]] = [("alloc", 0)] * 350 + [("one", 0)] * 350
    names = ["big", "jbig", "big", "jbig", "jone", "alloc", "one", "double", "is_live",
             "validate", "part", "foreign", "reversed", "bad_batch", "other_in", "reordered"]
    while len(ops) < 850:
        op, n = names[int(rng.integers(len(names)))], int(rng.integers(10 ** 6))
        if op in ("big", "jbig"):
            n = int(rng.choice([2, 3]))                     # BIG[n]: 65 or 250 objects
        ops.append((op, n))
        if op in ("big", "jbig") and rng.random() < 0.7:    # the round's free at once
            ops.append((("free_last", "jfree_last")[int(rng.integers(2))], 0))
    pended, back, _, _, wide = _differential(ops, gen, 4)
    if gen == "6.18":
        assert wide == 0, wide
    else:
        assert wide >= 10 and back >= 10, (wide, back)


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_the_switch_turns_the_pending_take_off(gen):
    """``pending_takes=False``: a bulk allocation taken whole from the main sheaf writes its
    marks at once (no record); with it on (the default) the same call leaves a record."""
    for pending in (True, False):
        sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=gen,
                                   pending_takes=pending)
        c = sa.kmem_cache_create("p", 64, sheaf_capacity=32)
        c.free_bulk(c.alloc_bulk(16))
        out = np.zeros(16, np.int64)
        assert jit_alloc_bulk(sa.handle, c.id, 16, out) == 16
        assert sa.state.g[G_PEND] == (16 if pending else 0)
        c.free_bulk(out)
        got = c.alloc_bulk(8)
        assert sa.state.g[G_PEND] == (8 if pending else 0)
        c.free_bulk(got)
        sa.validate()
        assert len(c) == 0


def _main_spare(sa, c):
    """The sizes of CPU 0's main and spare sheaves of cache ``c``."""
    cpu, mem = view(sa.state.buf, F_CPU), sa._mem.view(np.int64)
    r = c.id * sa.nr_cpus * C_NCOLS
    return tuple(int(mem[(int(cpu[r + k]) >> 3) + SH_SIZE]) for k in (C_MAIN, C_SPARE))


@pytest.mark.parametrize("gen", ["7.0", "7.3", "6.18"])
@pytest.mark.parametrize("free", ["python", "jit"])
def test_a_batch_the_main_sheaf_begins_and_the_spare_ends_is_taken_pending(gen, free):
    """The main sheaf holds 8 objects, the spare is full: a bulk allocation of 16 takes the
    main's 8 and the spare's top 8 (the sheaves swapped) and leaves them pending; its free
    fills the main (the old spare), swaps, and puts the rest in the old main. Every word,
    the SLUB counters among them, is as with the pending takes off, after each step."""
    runs = []
    for pending in (True, False):
        sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=gen, pending_takes=pending)
        c = sa.kmem_cache_create("w", 64, sheaf_capacity=32)
        xs = [c.alloc() for _ in range(128)]
        for x in xs:
            c.free(x)                       # main and spare full
        main, spare = _main_spare(sa, c)
        assert spare >= 16
        for _ in range(main - 8):
            c.alloc()                       # the main at 8
        assert _main_spare(sa, c)[0] == 8
        runs.append((sa, c))
    (on, c_on), (off, c_off) = runs
    outs = []
    for sa, c in runs:
        out = np.zeros(16, np.int64)
        assert jit_alloc_bulk(sa.handle, c.id, 16, out) == 16
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])
    assert on.state.g[G_PEND] == 16, "the main-and-spare batch is not pending"
    a, b = _settled(on), _state_and_arena(off)
    assert np.array_equal(a[0], _masks_alike(b[0])) and np.array_equal(a[1], b[1])
    for (sa, c), out in zip(runs, outs):
        if free == "jit":
            jit_free_bulk(sa.handle, c.id, 16, out.copy())
        else:
            c.free_bulk(out)
    assert on.state.g[G_PEND] == 0
    a, b = _settled(on), _settled(off)      # (the record's stale copy left out)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert c_on.stats == c_off.stats and c_on.stats["alloc_fastpath"] >= 40
    on.validate()
    on.check_invariants()
    assert len(c_on) == len(c_off) > 0


@pytest.mark.parametrize("gen", ["7.0", "7.3"])
def test_a_fault_in_the_slab_walk_gives_back_the_pending_head(gen):
    """A bulk allocation that the main sheaf begins (its 40 objects taken pending, unmarked)
    and that meets a corrupted free pointer in the slab walk gives back what it took, the
    pending head marked first for the give-back's checks: the same error, state and arena as
    a machine marking at once, and a valid machine."""
    res = []
    runs = (_Run(gen, 0, True), _Run(gen, 0, False))
    for r in runs:
        sa, c = r.sa, r.c
        a = c.alloc_bulk(200)
        c.free_bulk(a[:150].copy())                 # the sheaves full, the rest on slabs
        c.alloc_bulk(20)
        main = int(sa.state.cpu[c.id, 0, C_MAIN])
        assert sa._mem[(main >> 3) + SH_SIZE] == 40
        held = sa.state.held.view(np.uint64)
        on_slabs = [int(x) for x in a[:150] if not int(held[x >> 9]) >> ((x >> 3) & 63) & 1]
        for v in on_slabs[-40:]:                    # stray writes over free objects
            sa.memory[v:v + 64] = 0xAB
        res.append((r.call(lambda q: q.c.alloc_bulk(300)), len(c)))
    assert res[0] == res[1] and res[0][0][0] == "raised" and res[0][1] == 70, res
    a, b = _settled(runs[0].sa), _state_and_arena(runs[1].sa)
    assert np.array_equal(a[0], _masks_alike(b[0])) and np.array_equal(a[1], b[1])
    runs[0].sa.validate()
