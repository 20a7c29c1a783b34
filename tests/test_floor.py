"""The fused 7.0 round prototype (``numslab.tools.floor``): it must do the kernel's work, or its
figure is no floor. Checked against a plain-Python walk of its state after every round, and
against numslab itself: the same SLUB counts of slabs taken and given back."""
import numba
import numpy as np
import pytest

from numslab.tools import bench
from numslab.tools import floor as F


def live_set(fr: F.FloorRound) -> set:
    """The live objects: the written live bits and the pending run (the record's sheaf part
    while its bits are not written; those bits must be clear)."""
    live = set()
    for w in np.flatnonzero(fr.live):
        assert w % 8 == 0, "a live bit outside a page's first word"
        word = int(fr.live[w])
        live |= {(w // 8 << 12) | (b << F.LSHIFT) for b in range(64) if word >> b & 1}
    if fr.g[F.RN] and not fr.g[F.RMK]:
        ss = int(fr.g[F.SS])
        pending = set(fr.sheaf[ss:ss + int(fr.g[F.RT])].tolist())
        assert not pending & live and len(pending) == fr.g[F.RT]
        live |= pending
    return live


def walk_state(fr: F.FloorRound) -> dict:
    """Plain Python over the prototype's arrays: every slab's free list decoded and counted,
    the partial list in order, the live objects."""
    sd = fr.sd.reshape(-1, 8)
    slabs = np.flatnonzero(sd[:, F.FLAGS] & F.F_SLAB)
    key = int(fr.g[F.KEY])
    mem = fr.mem.view(np.uint64)
    free_of = {}
    for s in slabs:
        obj, seen = int(sd[s, F.FREELIST]), []
        while obj:
            assert obj >> 12 == s and (obj - (s << 12)) % F.SIZE == 0, (s, obj)
            assert obj not in seen, "a loop"
            seen.append(obj)
            where = obj + F.OFF
            swab = int.from_bytes(where.to_bytes(8, "little"), "big")
            obj = int(mem[where >> 3]) ^ key ^ swab
        free_of[int(s)] = seen
    partial, s = [], int(fr.g[F.HEAD])
    while s != F.NIL:
        partial.append(s)
        s = int(sd[s, F.NEXT])
    live = live_set(fr)
    return {"slabs": [int(s) for s in slabs], "free_of": free_of, "partial": partial,
            "live": len(live), "live_set": live}


def arrays(fr: F.FloorRound) -> list:
    """Copies of every array of the prototype's state, the record's included."""
    return [a.copy() for a in (fr.sd, fr.mem, fr.live, fr.g, fr.sheaf, fr.pool, fr.rec)]


def unchanged(fr: F.FloorRound, before: list) -> bool:
    """Whether every array is as in ``before`` (:func:`arrays`)."""
    return all(np.array_equal(a, b) for a, b in zip(before, arrays(fr)))


@pytest.mark.parametrize("bulk", [1, 16, 29, 64, 250, 4096])
def test_rounds_hand_out_distinct_objects_and_take_them_back(bulk):
    fr = F.FloorRound(bulk, pages=2048)
    for r in range(4):
        assert fr.alloc() == bulk
        out = fr.out.copy()
        assert len(set(out.tolist())) == bulk                      # distinct
        st = walk_state(fr)
        assert st["live"] == bulk                                   # exactly these are live
        for a in out:                                               # objects of slabs, on the grid
            assert int(a) >> 12 in st["slabs"] and (int(a) & 4095) % F.SIZE == 0
            assert int(a) not in st["free_of"][int(a) >> 12]        # not on a free list
        assert fr.free() == 0
        st = walk_state(fr)
        assert st["live"] == 0
        sheaf = set(fr.sheaf[:fr.g[F.SS]].tolist())
        sd = fr.sd.reshape(-1, 8)
        for s in st["slabs"]:                                       # every object accounted for
            inuse = int(sd[s, F.INUSE])
            assert len(st["free_of"][s]) == F.OBJS - inuse
            in_sheaf = sum(1 for a in sheaf if a >> 12 == s)
            assert in_sheaf == inuse                                # the rest sit in the sheaf
            assert (s in st["partial"]) == (0 < len(st["free_of"][s]))
        assert len(st["partial"]) == fr.g[F.NRP]
        pages = set(fr.pool[:fr.g[F.PTOP]].tolist())
        assert not pages & set(st["slabs"]) and len(pages) + len(st["slabs"]) == 2047


def test_a_corrupted_free_pointer_stops_the_round():
    fr = F.FloorRound(64, pages=256)
    fr.run(3)
    s = int(fr.g[F.HEAD])
    obj = int(fr.sd[s * 8 + F.FREELIST])
    fr.mem[(obj + F.OFF) >> 3] ^= 0x1000                           # points into another page
    with pytest.raises(RuntimeError, match="failed"):
        fr.run(1)


@pytest.mark.parametrize("bad", ["inside", "unaligned", "twice", "free", "page"])
def test_a_bad_address_is_refused_at_free(bad):
    """Every kind of bad address stops the free (an address off any slab's page with its
    index): the batch check is the kernel's, only its error report is coarse."""
    fr = F.FloorRound(8, pages=256)
    fr.run(1)                               # 8 objects in the sheaf, 8 on the slab's free list
    assert fr.alloc() == 8
    slab = int(fr.out[0]) >> 12
    if bad == "inside":
        fr.out[5] += 8                                              # not an object start
    elif bad == "unaligned":
        fr.out[5] += 3
    elif bad == "twice":
        fr.out[6] = fr.out[2]                                       # a double free
    elif bad == "free":
        fr.out[5] = fr.sd[slab * 8 + F.FREELIST]                    # a free object
        assert fr.out[5] > 0
    else:
        fr.out[5] = 4096 * 200                                      # a page with no slab
    before = arrays(fr)
    r = fr.free()
    assert r > 0 and (bad != "page" or r == 6)
    assert unchanged(fr, before)                                    # nothing changed


@pytest.mark.parametrize("where", ["same run", "two runs", "sheaf and run"])
def test_an_object_given_twice_is_refused(where):
    """A double free within one slab's run (the run's register mask), across two runs of one
    slab (the first run's bits already cleared), and across the sheaf's part and a run."""
    fr = F.FloorRound(48, pages=256)
    fr.run(2)
    assert fr.alloc() == 48
    take = F.CAP - int(fr.g[F.SS])
    slab_of = fr.out >> 12
    if where == "same run":
        k = 47
        j = next(j for j in range(46, take, -1) if slab_of[j] == slab_of[k])
    elif where == "two runs":
        k = 47
        j = next(j for j in range(take, 47) if slab_of[j] != slab_of[k] and
                 any(slab_of[i] != slab_of[k] for i in range(j + 1, 47)))
    else:
        k, j = 0, 47
    fr.out[j] = fr.out[k]
    before = arrays(fr)
    assert fr.free() > 0
    assert unchanged(fr, before)


@pytest.mark.parametrize("bulk", [64, 250])
def test_the_same_slab_traffic_as_numslab(bulk):
    """The prototype takes and gives back as many slabs per round as numslab's 7.0 engine on
    the benchmark cache (``FREE_SLAB``/``ALLOC_SLAB``), and the same number stay partial."""
    from numslab.flags import GFP_ATOMIC
    sa, c = bench.new_bench_cache(kernel="7.0")
    out = np.zeros(bulk, np.int64)
    fr = F.FloorRound(bulk, pages=4096)
    for _ in range(3):
        sa.kmem_cache_alloc_bulk(c, GFP_ATOMIC, bulk, out)
        sa.kmem_cache_free_bulk(c, bulk, out)
        fr.run(1)
    s0, pool0 = dict(c.stats), int(fr.g[F.PTOP])
    sa.kmem_cache_alloc_bulk(c, GFP_ATOMIC, bulk, out)
    fr.alloc()
    assert pool0 - int(fr.g[F.PTOP]) == c.stats["alloc_slab"] - s0["alloc_slab"]
    sa.kmem_cache_free_bulk(c, bulk, out)
    fr.free()
    assert int(fr.g[F.PTOP]) == pool0
    assert c.stats["free_slab"] - s0["free_slab"] == c.stats["alloc_slab"] - s0["alloc_slab"]
    assert int(fr.g[F.NRP]) == c.partial


# ---- the recorded batch: a free of the last allocation's batch, checked by one compare ------
def settled_view(fr: F.FloorRound) -> tuple:
    """The prototype's state as the checked path sees it: everything but where the live bits
    of the pending run are written and the record (which :meth:`FloorRound.settle` drops)."""
    ss = int(fr.g[F.SS])
    return (fr.sd, fr.mem, fr.pool[:int(fr.g[F.PTOP])], fr.g[:8], fr.sheaf[:ss],
            np.array(sorted(live_set(fr)), np.int64))


def same_settled(a: F.FloorRound, b: F.FloorRound) -> bool:
    """Whether two prototypes' :func:`settled_view` are equal, array by array (a list of the
    2 MiB arena's words each step made the test 20 times slower)."""
    return all(np.array_equal(x, y) for x, y in zip(settled_view(a), settled_view(b)))


@pytest.mark.parametrize("seed", range(6))
def test_the_recorded_batch_frees_as_the_checked_path(seed):
    """A random sequence of bulk allocations and frees (the last batch as it was, reordered,
    one element swapped for another live object, any live objects, and bad batches: a double
    free, a free object, an address inside an object) on two prototypes of one seed: one as it
    is, one settled before every call (every free then takes the per-object check, as the
    prototype did before the record). Same results, same state after every call, and a refused
    batch leaves every array as it was."""
    rng = np.random.default_rng(seed)
    a, b = F.FloorRound(64, pages=512, seed=seed), F.FloorRound(64, pages=512, seed=seed)
    live: list[int] = []
    last: list[int] = []
    fast = 0
    for step in range(400):
        if not live or rng.random() < 0.45:
            n = int(rng.choice([1, 5, 16, 28, 29, 40, 64]))
            oa, ob = np.zeros(64, np.int64), np.zeros(64, np.int64)
            b.settle()
            assert a.alloc(n, oa) == b.alloc(n, ob) == n
            assert oa[:n].tolist() == ob[:n].tolist()
            last = oa[:n].tolist()
            live += last
        else:
            kind = rng.integers(8)
            if kind <= 2 and last:                                  # the last batch
                batch = list(last)
            elif kind == 3 and len(last) > 1:                       # reordered
                batch = list(last)
                batch[0], batch[-1] = batch[-1], batch[0]
            elif kind == 4 and last and len(live) > len(last):      # one swapped
                batch = list(last)
                batch[int(rng.integers(len(batch)))] = next(x for x in live if x not in last)
            elif kind == 5 and last:                                # a double free
                batch = list(last) + [last[0]] if len(last) < 64 else last[:-1] + [last[0]]
            elif kind == 6 and last:                                # a free object, inside
                batch = list(last)
                batch[-1] = batch[-1] + 8 if rng.random() < 0.5 else \
                    next(x for x in a.sheaf[:int(a.g[F.SS])].tolist() + [4096 * 300]
                         if x not in live)
            else:                                                   # any live objects
                k = int(rng.integers(1, min(64, len(live)) + 1))
                batch = [live[i] for i in rng.permutation(len(live))[:k]]
            p = np.array(batch, np.int64)
            before = arrays(a)
            was_fast = int(a.g[F.RN]) == len(batch) and batch == last
            b.settle()
            ra, rb = a.free(len(batch), p.copy()), b.free(len(batch), p.copy())
            assert ra == rb, (step, kind)
            if ra:
                assert unchanged(a, before)
            else:
                fast += was_fast
                gone = set(batch)
                live = [x for x in live if x not in gone]
                last = []
        assert same_settled(a, b), step
        assert len(live_set(a)) == len(live)
    assert fast > 20                                                # the recorded path ran


def test_a_free_after_another_call_is_checked():
    """The record is the last call's: a batch freed after another allocation, or freed twice,
    goes through the per-object check (a second free of a batch is refused, nothing changed)."""
    fr = F.FloorRound(16, pages=256)
    fr.run(2)                                         # 16 objects in the sheaf
    x, y = np.zeros(16, np.int64), np.zeros(16, np.int64)
    assert fr.alloc(8, x) == 8 and fr.g[F.RN] == 8 and fr.g[F.RMK] == 0
    assert fr.alloc(8, y) == 8 and fr.g[F.RN] == 8      # x's marks written, y's pending
    assert set(x[:8].tolist()) <= live_set(fr) and not fr.g[F.RMK]
    assert fr.free(8, x) == 0                            # checked, y still recorded
    assert fr.g[F.RN] == 0 and len(live_set(fr)) == 8
    before = arrays(fr)
    assert fr.free(8, x) > 0 and unchanged(fr, before)   # twice: refused
    assert fr.free(8, y) == 0 and not live_set(fr)
    assert fr.alloc(8, x) == 8 and fr.free(8, x) == 0
    before = arrays(fr)
    assert fr.free(8, x) > 0 and unchanged(fr, before)   # the recorded batch, twice


@pytest.mark.parametrize("bulk", [16, 64])
@pytest.mark.parametrize("change", ["one element", "reordered", "a free one"])
def test_a_batch_near_the_record(bulk, change):
    """A batch that is the recorded one but for one element, or reordered: checked object by
    object (a live batch freed, a bad one refused with every array as it was, the pending run's
    bits unwritten)."""
    fr = F.FloorRound(bulk, pages=512)
    fr.run(3)
    other = np.zeros(bulk, np.int64)
    assert fr.alloc(1, other) == 1                       # one more live object
    assert fr.alloc() == bulk
    p = fr.out.copy()
    if change == "one element":
        p[bulk // 2] = other[0]                          # live, but not the record's
    elif change == "reordered":
        p[[1, bulk - 2]] = p[[bulk - 2, 1]]
    else:
        p[bulk // 2] = fr.sheaf[0] if fr.g[F.SS] else other[0] + 4096 * 8
    before = arrays(fr)
    r = fr.free(bulk, p)
    if change == "a free one":
        assert r > 0 and unchanged(fr, before)
    else:
        assert r == 0
        left = {int(fr.out[bulk // 2])} if change == "one element" else {int(other[0])}
        assert live_set(fr) == left


def test_a_whole_slab_is_handed_out_in_a_rotation_of_its_random_sequence():
    """A new slab carved whole gives its objects in the random sequence from a random start,
    wrapping (``shuffle_freelist``): the sequence is kept twice, so the carve reads no further
    than its second copy. A fresh prototype's first 64 objects are four new slabs."""
    starts = set()
    for seed in range(4):
        fr = F.FloorRound(64, pages=256, seed=seed)
        assert fr.rseq.size == 2 * F.OBJS and (fr.rseq[:F.OBJS] == fr.rseq[F.OBJS:]).all()
        seq = fr.rseq[:F.OBJS].tolist()
        rotations = {tuple(seq[k:] + seq[:k]) for k in range(F.OBJS)}
        assert fr.alloc() == 64
        out = fr.out.tolist()
        for k in range(0, 64, F.OBJS):
            run = out[k:k + F.OBJS]
            base = run[0] >> 12 << 12
            offs = tuple(a - base for a in run)
            assert offs in rotations and len({a >> 12 for a in run}) == 1
            starts.add(seq.index(offs[0]))
        assert fr.free() == 0
    assert len(starts) > 1                           # the start is drawn


def test_the_kernels_are_compiled_once_whoever_calls_them():
    """From Python, from the compiled rounds and from the bench's one-call entry the kernels get
    int64 addresses: one compiled version each (three, about 6 s of a cold start each, when the
    rounds passed ``ctypes.data``'s uint64)."""
    fr = F.FloorRound(20)
    fr.run(3)
    assert fr.alloc() == 20 and fr.free() == 0
    bench.make_round("floor-7.0", 20)(3)
    # the compiled callers typed again (loaded from the cache, they compiled no callee here)
    for caller in (F.rounds_floor, bench.floor_round_at):
        numba.njit(caller.py_func).compile(caller.signatures[0])
    for kernel in (F.alloc_bulk, F.free_bulk):
        assert len(kernel.signatures) == 1, kernel.signatures
