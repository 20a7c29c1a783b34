"""Typed caches: a NumPy record dtype gives the object size, ``store``/``records`` move
records in and out of allocated objects (checked), and ``view[addr]`` is a zero-copy record
usable from ``@njit`` code."""
from __future__ import annotations

import numba
import numpy as np
import pytest

import numslab
from numslab import GFP_KERNEL, __GFP_ZERO

from conftest import assert_unchanged, snapshot

KERNELS = ("7.0", "6.18")       #: the behaviour tested here is both generations

PKT = np.dtype([("src", np.uint32), ("dst", np.uint32), ("len", np.uint16),
                ("proto", np.uint8), ("ts", np.float64), ("tag", "S6")])
PKT_ALIGNED = np.dtype(PKT.descr, align=True)
assert PKT.itemsize == 25 and PKT_ALIGNED.itemsize == 32


@pytest.fixture
def pc(sa):
    return sa.kmem_cache_create("pkt", 0, dtype=PKT)


def sample(n, seed=0):
    rng = np.random.default_rng(seed)
    v = np.zeros(n, PKT)
    v["src"] = rng.integers(0, 2 ** 32, n, dtype=np.uint32)
    v["dst"] = rng.integers(0, 2 ** 32, n, dtype=np.uint32)
    v["len"] = rng.integers(0, 2 ** 16, n, dtype=np.uint16)
    v["proto"] = rng.integers(0, 256, n, dtype=np.uint8)
    v["ts"] = rng.random(n) * 1e9
    v["tag"] = [b"tag%03d" % (i % 1000) for i in range(n)]
    return v


# ---- the dtype sets the size -------------------------------------------------------------------
@pytest.mark.parametrize("dtype, size, object_size", [
    (PKT, 0, PKT.itemsize), (PKT_ALIGNED, 0, PKT_ALIGNED.itemsize), (PKT, 64, 64),
    (np.dtype(np.float64), 0, 8), (np.dtype((np.int32, 5)), 0, 20),
])
def test_dtype_sets_the_object_size(sa, dtype, size, object_size):
    c = sa.kmem_cache_create("t", size, dtype=dtype)
    assert c.object_size == object_size and c.dtype == dtype
    assert c.slab_size >= object_size and c.slab_size % 8 == 0
    sa.validate()


def test_size_smaller_than_the_dtype_is_refused(sa):
    snap = snapshot(sa)
    with pytest.raises(numslab.InvalidSizeError, match="smaller than the 25-byte dtype"):
        sa.kmem_cache_create("small", 24, dtype=PKT)
    with pytest.raises(numslab.WrongTypeError, match="'not a dtype' is not a NumPy dtype"):
        sa.kmem_cache_create("bad", 0, dtype="not a dtype")
    assert_unchanged(sa, snap)
    sa.kmem_cache_create("small", 25, dtype=PKT)     # the name was not taken


def test_untyped_cache_has_no_view(sa):
    c = sa.kmem_cache_create("raw", 64)
    assert c.dtype is None
    for fn, what in (("view", lambda: c.view), ("records", lambda: c.records([c.alloc()])),
                     ("store", lambda: c.store([c.alloc()], (1,)))):
        with pytest.raises(numslab.WrongTypeError, match=f"raw.{fn}: cache raw has no dtype"
                           ) as e:                     # (the call named: a new user's report)
            what()
        assert isinstance(e.value, TypeError)         # still what NumPy users catch


# ---- store / records --------------------------------------------------------------------------
def test_store_records_round_trip(sa, pc):
    addrs = pc.alloc_bulk(300)
    vals = sample(300)
    pc.store(addrs, vals)
    back = pc.records(addrs)
    assert back.dtype == PKT and np.array_equal(back, vals)
    for a, v in zip(addrs[:20], vals[:20]):             # the bytes really are in the arena
        assert sa.memory[a:a + PKT.itemsize].tobytes() == v.tobytes()
    perm = np.random.default_rng(1).permutation(300)
    assert np.array_equal(pc.records(addrs[perm]), vals[perm])
    assert np.array_equal(pc.records(list(addrs[:3])), vals[:3])   # any sequence
    one = np.zeros((), PKT)
    one["proto"], one["tag"] = 17, b"udp"
    pc.store(addrs[:5], one)                             # a scalar record is broadcast
    assert (pc.records(addrs[:5])["proto"] == 17).all()
    assert (pc.records(addrs[:5])["tag"] == b"udp").all()
    assert np.array_equal(pc.records(addrs[5:]), vals[5:])   # neighbours untouched
    sa.validate()


def test_records_is_a_copy_and_store_accepts_any_record_sequence(sa, pc):
    addrs = pc.alloc_bulk(3)
    pc.store(addrs, [(1, 2, 3, 4, 5.0, b"a"), (6, 7, 8, 9, 10.0, b"bb"),
                     (11, 12, 13, 14, 15.0, b"ccc")])
    r = pc.records(addrs)
    assert r["src"].tolist() == [1, 6, 11] and r["tag"].tolist() == [b"a", b"bb", b"ccc"]
    r["src"] = 99                                        # a copy: the arena is untouched
    assert pc.records(addrs)["src"].tolist() == [1, 6, 11]
    pc.store(addrs[1], (0, 0, 0, 0, 0.5, b"one"))       # one address, one record
    assert pc.records(addrs)["ts"].tolist() == [5.0, 0.5, 15.0]
    empty = pc.records(np.empty(0, np.int64))
    assert empty.dtype == PKT and empty.shape == (0,)
    pc.store([], np.empty(0, PKT))
    snap = snapshot(sa)
    with pytest.raises(numslab.InvalidSizeError, match="2 values for 3 addresses"):
        pc.store(addrs, sample(2))
    assert_unchanged(sa, snap)


def test_records_survive_cache_churn(sa, pc):
    keep = pc.alloc_bulk(100)
    vals = sample(100, seed=2)
    pc.store(keep, vals)
    for _ in range(5):                                   # others come and go around them
        tmp = pc.alloc_bulk(150)
        pc.store(tmp, sample(150, seed=3))
        pc.free_bulk(tmp[::-1])
    assert np.array_equal(pc.records(keep), vals)
    sa.validate()


def test_zeroed_typed_allocation(sa, pc):
    addrs = pc.alloc_bulk(40)
    pc.store(addrs, sample(40))
    pc.free_bulk(addrs)
    out = np.empty(40, np.int64)
    assert sa.kmem_cache_alloc_bulk(pc, GFP_KERNEL | __GFP_ZERO, 40, out) == 40
    assert not pc.records(out).tobytes().strip(b"\0")


def test_records_and_store_refuse_objects_that_are_not_live(sa, pc):
    other = sa.kmem_cache_create("other", 0, dtype=PKT)
    addrs = pc.alloc_bulk(10)
    pc.store(addrs, sample(10))
    freed = pc.alloc()
    pc.free(freed)
    theirs = other.alloc()
    cases = {
        "freed": freed,
        "other cache": theirs,
        "misaligned": int(addrs[4]) + 1,
        "outside": 1 << 40,
        "null": 0,
        "kmalloc": sa.kmalloc(32),
        "large": sa.kmalloc(20000),
    }
    for what, bad in cases.items():
        arr = addrs.copy()
        arr[6] = bad
        snap = snapshot(sa)
        with pytest.raises(numslab.BadAddressError, match=r"element 6 .*not an allocated"):
            pc.records(arr)
        with pytest.raises(numslab.BadAddressError, match=r"element 6 "):
            pc.store(arr, sample(10, seed=9))
        assert_unchanged(sa, snap)                       # nothing written, not even 0..5
    assert np.array_equal(pc.records(addrs), sample(10))


def test_free_bulk_convenience_leaves_its_argument_alone(sa, pc):
    addrs = pc.alloc_bulk(50)
    shuffled = np.random.default_rng(4).permutation(addrs)
    keep = shuffled.copy()
    pc.free_bulk(shuffled)
    assert np.array_equal(shuffled, keep)
    assert pc.live_objects == 0
    with pytest.raises(numslab.DoubleFreeError):
        pc.free_bulk(keep[:3])
    assert len(pc.alloc_bulk(0)) == 0
    sa.validate()


@pytest.mark.parametrize("bad", [lambda a: a + 0.5, lambda a: a.astype(np.float64),
                                 lambda a: a.astype(str), lambda a: [str(x) for x in a]])
def test_free_bulk_convenience_refuses_addresses_that_are_not_integers(sa, pc, bad):
    addrs = pc.alloc_bulk(4)
    snap = snapshot(sa)
    with pytest.raises(numslab.AddressTypeError, match="free_bulk: addresses must be integers"):
        pc.free_bulk(bad(addrs))                     # never truncated to another object
    assert_unchanged(sa, snap)
    pc.free_bulk(addrs.astype(np.uint32))            # unsigned integers are addresses
    assert pc.live_objects == 0


@pytest.mark.parametrize("make", [set, lambda a: (x for x in a), lambda a: dict.fromkeys(a)])
def test_free_bulk_convenience_names_a_container_that_is_no_sequence(sa, pc, make):
    """A set of addresses was refused as "addresses must be integers, not object"."""
    addrs = pc.alloc_bulk(4)
    snap = snapshot(sa)
    with pytest.raises(numslab.WrongTypeError, match=r"free_bulk: addresses must be an array or "
                       r"a sequence of integers, not a (set|generator|dict)"):
        pc.free_bulk(make(addrs.tolist()))
    assert_unchanged(sa, snap)
    pc.free_bulk(sorted(set(addrs.tolist())))
    assert pc.live_objects == 0


def test_alloc_bulk_convenience_is_all_or_nothing():
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("big", 0, dtype=np.dtype((np.uint8, 2000)))
    with pytest.raises(numslab.OutOfMemoryError) as e:     # a SlabError and a MemoryError
        c.alloc_bulk(10_000)
    assert isinstance(e.value, MemoryError) and isinstance(e.value, numslab.SlabError)
    assert c.live_objects == 0
    got = []
    with pytest.raises(numslab.OutOfMemoryError, match="big: out of memory"):
        while True:
            got.append(c.alloc())
    assert c.live_objects == len(got) > 0
    c.free_bulk(np.array(got))
    sa.validate()


# ---- view[addr] --------------------------------------------------------------------------------
@numba.njit
def tally(view, addrs):
    """Sum a field, then rewrite two fields of every record in place."""
    total = 0
    for a in addrs:
        total += view[a].len
        view[a].proto = 6
        view[a].ts = view[a].ts * 2.0
    return total


def test_view_is_a_zero_copy_record_array(sa, pc):
    addrs = pc.alloc_bulk(64)
    vals = sample(64)
    pc.store(addrs, vals)
    v = pc.view
    assert v.dtype == PKT and v.base is not None
    a = int(addrs[7])
    assert v[a] == vals[7] and v[a]["src"] == vals[7]["src"]
    v[a]["len"] = 1234                                   # writes reach the arena
    assert pc.records([a])["len"][0] == 1234
    assert np.shares_memory(v, sa.memory)


def test_view_field_access_in_njit(sa, pc):
    addrs = pc.alloc_bulk(200)
    vals = sample(200)
    pc.store(addrs, vals)
    total = tally(pc.view, addrs)
    assert total == int(vals["len"].astype(np.int64).sum())
    back = pc.records(addrs)
    assert (back["proto"] == 6).all()
    assert np.array_equal(back["ts"], vals["ts"] * 2.0)
    assert np.array_equal(back["src"], vals["src"]) and np.array_equal(back["tag"],
                                                                       vals["tag"])
    sa.validate()


def test_view_field_access_as_plain_python_under_numba_disable_jit(sa, pc, monkeypatch):
    """Under ``NUMBA_DISABLE_JIT=1`` (README: how a user debugs their ``@njit`` function as
    plain Python) a function's ``view[a].len`` raised AttributeError ("'numpy.void' object
    has no attribute 'len'"): the view's records were NumPy voids, which have no field
    attributes. Now they are ``np.record``s there, as Numba's records behave."""
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    addrs = pc.alloc_bulk(20)
    vals = sample(20)
    pc.store(addrs, vals)
    v = pc.view
    assert type(v) is np.ndarray and v.dtype == PKT and np.shares_memory(v, sa.memory)
    with np.errstate(over="ignore"):      # (as Python, 0 + a uint16 field is a uint16)
        total = tally.py_func(v, addrs)
    assert total == int(vals["len"].sum(dtype=np.uint16))
    back = pc.records(addrs)
    assert (back["proto"] == 6).all() and np.array_equal(back["ts"], vals["ts"] * 2.0)
    assert v[int(addrs[3])]["src"] == vals[3]["src"]           # indexing by name still works
    monkeypatch.setattr(numba.config, "DISABLE_JIT", False)   # compiled: the plain dtype
    assert pc.view.dtype.type is np.void and numba.typeof(pc.view) == numba.typeof(v)


@pytest.mark.parametrize("dtype", [np.dtype(np.float64), np.dtype((np.int32, 5))])
def test_view_of_a_cache_of_plain_values_under_numba_disable_jit(sa, dtype, monkeypatch):
    """A cache whose dtype has no fields (a float64, a subarray) keeps its plain view under
    ``NUMBA_DISABLE_JIT=1``: made of ``np.record`` it was a view of bare 8- or 20-byte
    voids, which Numba's own compiled functions refused ("Unsupported array dtype: |V8")."""
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    c = sa.kmem_cache_create("plain", 0, dtype=dtype)
    a = c.alloc()
    plain = np.ndarray(shape=(sa.memory.size - dtype.itemsize + 1,), dtype=dtype,
                       buffer=sa.memory, strides=(1,))
    assert c.view.dtype == plain.dtype and c.view.shape == plain.shape
    assert numba.typeof(c.view) == numba.typeof(plain)
    c.view[a] = 3
    assert (plain[a] == 3).all()
    c.free(a)


def test_view_with_njit_allocation(sa):
    from numslab import jit as nj

    rec = np.dtype([("key", np.int64), ("val", np.float64)])
    c = sa.kmem_cache_create("kv", 0, dtype=rec)

    @numba.njit
    def build(h, cid, view, n):
        out = np.empty(n, np.int64)
        nj.kmem_cache_alloc_bulk(h, cid, n, out)
        for i in range(n):
            view[out[i]].key = i
            view[out[i]].val = i * 0.5
        return out

    addrs = build(sa.handle, c.id, c.view, 100)
    r = c.records(addrs)
    assert np.array_equal(r["key"], np.arange(100))
    assert np.array_equal(r["val"], np.arange(100) * 0.5)
    assert c.live_objects == 100
    sa.validate()


# ---- misuse (issue 13, item 10) ------------------------------------------------------------
def test_records_and_store_refuse_float_addresses_and_foreign_values(sa):
    c = sa.kmem_cache_create("t", 0, dtype=np.dtype([("a", np.int64), ("b", np.float64)]))
    a = c.alloc()
    rec = np.zeros(1, c.dtype)
    rec["a"] = 7
    c.store(np.array([a]), rec)
    snap = snapshot(sa)
    with pytest.raises(numslab.BadAddressError, match="integers"):
        c.records(np.array([a + 0.5]))
    with pytest.raises(numslab.BadAddressError, match="integers"):
        c.store(np.array([float(a)]), rec)
    with pytest.raises(numslab.WrongTypeError, match="records of"):
        c.store(np.array([a]), np.array([1.5]))          # not copied into every field
    with pytest.raises(numslab.WrongTypeError, match="records of"):
        c.store(np.array([a]), [1.5, 2.5])
    for bad in ((1, 2, 3), [(1,)], (2 ** 70, 1.0), ("x", 1.0), [(1, 2.0), 5]):
        with pytest.raises(numslab.WrongTypeError, match="records of"):
            c.store(np.array([a]), bad)                   # NumPy's ValueError, TypeError and
    assert_unchanged(sa, snap)                            # OverflowError are not let through
    assert c.records([a])["a"].tolist() == [7]
    c.store(np.array([a], np.uint32), rec[0])             # one record for all, unsigned ok
    c.free(a)


def test_a_scalar_dtype_stores_numbers(sa):
    # a cache of a plain dtype: its records are numbers, as a list, a Python number or a
    # NumPy scalar of the dtype; a NumPy array must still be of the dtype
    c = sa.kmem_cache_create("f8", 0, dtype=np.float64)
    addrs = c.alloc_bulk(3)
    c.store(addrs, [1.0, 2.0, 3.0])
    assert c.records(addrs).tolist() == [1.0, 2.0, 3.0]
    c.store(addrs, 5)
    c.store(addrs[:1], np.float64(0.5))
    assert c.records(addrs).tolist() == [0.5, 5.0, 5.0]
    snap = snapshot(sa)
    for bad in (np.arange(3), np.float32(1.0), "1.0", None, True, [1.0, "x", 2.0], [1.0, 2.0]):
        with pytest.raises((numslab.WrongTypeError, numslab.InvalidSizeError)):
            c.store(addrs, bad)
    assert_unchanged(sa, snap)
    c.free_bulk(addrs)


@pytest.mark.parametrize("n", [-1, 1.5, True, 10 ** 12, "3"])
def test_alloc_bulk_refuses_an_impossible_count(sa, n):
    c = sa.kmem_cache_create("t", 64)
    if n == 10 ** 12:                   # more than the arena holds: no 7 TiB array is tried
        with pytest.raises(numslab.OutOfMemoryError, match="the arena holds at most"):
            c.alloc_bulk(n)
    else:
        with pytest.raises(numslab.InvalidSizeError, match="count of objects"):
            c.alloc_bulk(n)
    assert c.live_objects == 0


def test_store_through_an_address_array_inside_the_objects_it_writes(sa):
    """``store`` read its addresses while it wrote the records: with the array inside the
    first object, that record's bytes became the next addresses, written through at once
    (a segfault). An address array in the arena is copied first: every object gets the
    record, the array included, as it would from any array."""
    c = sa.kmem_cache_create("wide", 64, dtype=np.dtype([("a", np.int64, 8)]))
    objs = np.array([c.alloc() for _ in range(8)], np.int64)
    addrs = sa.memory[int(objs[0]):int(objs[0]) + 64].view(np.int64)
    addrs[:] = objs
    record = np.array([(np.arange(8) + (1 << 40),)], c.dtype)
    c.store(addrs, record)
    assert (c.records(objs)["a"] == record["a"]).all()
    assert (addrs == np.arange(8) + (1 << 40)).all()       # the first object's record
    addrs[:] = objs
    got = c.records(addrs)                                  # (a copy in: nothing written)
    assert (got["a"][1:] == record["a"]).all() and (got["a"][0] == objs).all()
    sa.validate()


def test_a_subarray_dtype_stores_whole_records(sa):
    """A subarray dtype (``(np.int32, 5)``) has no arrays of its own: ``store`` ravelled
    NumPy's expansion of the values (a scalar became 5 numbers, a record 25), and with that
    count equal to the addresses' scatter read 20 bytes per address from 4: garbage in the
    objects, and a segfault for many addresses. Its records are arrays of the base whose
    last axis is the shape, as ``records`` returns them."""
    c = sa.kmem_cache_create("sub", 0, dtype=np.dtype((np.int32, 5)))
    a = c.alloc_bulk(5)
    c.store(a, 7)                                   # one number for every element
    assert c.records(a).tolist() == [[7] * 5] * 5
    c.store(a, [1, 2, 3, 4, 5])                     # one record for all
    assert c.records(a).tolist() == [[1, 2, 3, 4, 5]] * 5
    recs = np.arange(25, dtype=np.int32).reshape(5, 5)
    c.store(a, recs)                                # records() gives back what store takes
    assert (c.records(a) == recs).all()
    c.store(a[::-1], c.records(a))
    assert (c.records(a) == recs[::-1]).all()
    snap = snapshot(sa)
    for bad in ([1, 2, 3], recs.astype(np.int64), [[1, 2, 3, 4, 5]] * 2):
        with pytest.raises((numslab.WrongTypeError, numslab.InvalidSizeError)):
            c.store(a, bad)
    assert_unchanged(sa, snap)
    c.free_bulk(a)


def test_a_float_is_not_cut_into_an_integer_record(sa):
    """A plain integer dtype took a Python float and cut it (``store(a, 1.5)`` stored 1),
    while ``np.float64(1.5)`` was refused; both are refused now, nothing written."""
    c = sa.kmem_cache_create("i8", 0, dtype=np.int64)
    addrs = c.alloc_bulk(3)
    c.store(addrs, [1, 2, 3])
    snap = snapshot(sa)
    for bad in (1.5, [1.5, 2.0, 3.0], 2j, np.float64(1.5)):
        with pytest.raises(numslab.WrongTypeError):
            c.store(addrs, bad)
    assert_unchanged(sa, snap)
    assert c.records(addrs).tolist() == [1, 2, 3]
    c.free_bulk(addrs)


def test_a_float_is_not_cut_into_an_integer_field_of_a_record(sa):
    """A record tuple with a float for an integer field had NumPy cut it (``(1.7, 2.0)``
    stored key 1); refused as a plain integer dtype refuses it, nothing written. Floats for
    float fields, and integers anywhere, are taken."""
    rec = np.dtype([("key", np.int64), ("pos", np.float64, (2,)),
                    ("inner", [("id", np.int32), ("w", np.float32)])])
    c = sa.kmem_cache_create("recs", 0, dtype=rec)
    addrs = c.alloc_bulk(2)
    c.store(addrs, (7, [0.5, 1], (3, 2)))
    snap = snapshot(sa)
    for bad in ((1.7, [0.5, 1.0], (3, 2.0)), [(1, [0.5, 1.0], (3.5, 2.0))] * 2,
                (np.float64(2.0), [0, 0], (1, 1)), [(1, [0, 0], (1, 1)), (2j, [0, 0], (1, 1))]):
        with pytest.raises(numslab.WrongTypeError, match="cut"):
            c.store(addrs, bad)
    assert_unchanged(sa, snap)
    got = c.records(addrs)
    assert got["key"].tolist() == [7, 7] and got["inner"]["id"].tolist() == [3, 3]
    c.store(addrs, [(1, [2, 3], (4, 5.5)), (6, [7.5, 8], (9, 10))])
    assert c.records(addrs)["inner"]["w"].tolist() == [5.5, 10.0]
    c.free_bulk(addrs)


def test_store_takes_numbers_only_of_the_kinds_their_fields_take(sa):
    """Values NumPy would cut, parse or cast by position are refused, nothing written: a
    float in an array-of-records field, a record (``np.void``) of another dtype in a list,
    a Fraction, a Decimal or a str for a number, an int for a bool; each was stored
    (1.5 as 1, '12' as 12, "False" as True). What fits is stored as given."""
    from decimal import Decimal
    from fractions import Fraction
    rec = np.dtype([("a", np.int32), ("f", np.float64), ("ok", np.bool_),
                    ("s", [("x", np.int32)], (2,))])
    c = sa.kmem_cache_create("kinds", 0, dtype=rec)
    addrs = c.alloc_bulk(2)
    c.store(addrs, (1, 2, True, [(3,), (4,)]))                  # an int for a float: taken
    snap = snapshot(sa)
    other = np.zeros((), [("zz", np.float32), ("yy", np.float32), ("k", np.bool_),
                          ("w", [("x", np.int32)], (2,))])[()]
    for bad in ((1, 2.0, True, [(1.5,), (2,)]), [other], (Fraction(3, 2), 2.0, True, [(1,)] * 2),
                (Decimal("1.7"), 2.0, True, [(1,)] * 2), ("7", 2.0, True, [(1,)] * 2),
                (1, 2.0, "False", [(1,)] * 2), (1, 2.0, 1, [(1,)] * 2),
                (1, "2.5", True, [(1,)] * 2)):
        with pytest.raises(numslab.WrongTypeError, match="NumPy would cut or parse"):
            c.store(addrs, bad)
    assert_unchanged(sa, snap)
    same = np.array([(5, 6.5, False, [(7,), (8,)])], rec)[0]      # a record of this dtype
    c.store(addrs, [same, (9, np.float32(1.5), np.bool_(True), [(np.int8(1),), (2,)])])
    got = c.records(addrs)
    assert got["a"].tolist() == [5, 9] and got["f"].tolist() == [6.5, 1.5]
    assert got["ok"].tolist() == [False, True] and got["s"]["x"].tolist() == [[7, 8], [1, 2]]
    plain = sa.kmem_cache_create("plain", 0, dtype=np.int64)
    p = plain.alloc_bulk(2)
    for bad in (["12", "13"], [Fraction(3, 2), 1], [1, None]):
        with pytest.raises(numslab.WrongTypeError):
            plain.store(p, bad)
    plain.store(p, [np.uint8(3), 4])
    assert plain.records(p).tolist() == [3, 4]
    c.free_bulk(addrs)
    plain.free_bulk(p)
