"""The fused 7.0 round prototype (``numslab.tools.floor``): it must do the kernel's work, or its
figure is no floor. Checked against a plain-Python walk of its state after every round, and
against numslab itself: the same SLUB counts of slabs taken and given back."""
import numpy as np
import pytest

from numslab.tools import bench
from numslab.tools import floor as F


def walk_state(fr: F.FloorRound) -> dict:
    """Plain Python over the prototype's arrays: every slab's free list decoded and counted,
    the partial list in order, the live bits."""
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
    return {"slabs": [int(s) for s in slabs], "free_of": free_of, "partial": partial,
            "live": int(np.unpackbits(fr.live.view(np.uint8)).sum())}


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
    before = [a.copy() for a in (fr.sd, fr.mem, fr.live, fr.g, fr.sheaf, fr.pool)]
    r = fr.free()
    assert r > 0 and (bad != "page" or r == 6)
    for a, b in zip(before, (fr.sd, fr.mem, fr.live, fr.g, fr.sheaf, fr.pool)):
        assert np.array_equal(a, b)                                 # nothing changed


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
    live = fr.live.copy()
    assert fr.free() > 0
    assert np.array_equal(live, fr.live)


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
