"""The pending record: a bulk allocation taken whole from a CPU's main sheaf leaves its
objects' marks unwritten (field ``pend``, ``G_PEND``) until a free of exactly that batch puts
them back, or another call settles them (ARCHITECTURE.md: fields ``held`` and ``pend``)."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab.engine.layout import C_MAIN, G_PEND, PD_COUNT, PD_NPEND, PD_OBJS, PD_ROW, SH_SIZE

from conftest import jit_alloc_bulk, jit_free, jit_free_bulk, jit_is_live, snapshot

N = 16


def _pending_batch(kernel, other=False):
    """A machine, a 64-byte cache and a batch of ``N`` taken whole from its main sheaf inside
    ``@njit``, pending (``other``: first a second 64-byte cache and an object of it)."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=kernel)
    if other:
        sa.other = sa.kmem_cache_create("other", 64)
        sa.other_obj = sa.other.alloc()
    c = sa.kmem_cache_create("p64", 64)
    warm = c.alloc_bulk(N)                  # the main sheaf filled, then given back
    c.free_bulk(warm)
    out = np.zeros(N, np.int64)
    assert jit_alloc_bulk(sa.handle, c.id, N, out) == N
    assert sa.state.g[G_PEND] == N, "the batch is not pending"
    return sa, c, out


@pytest.mark.parametrize("gen", ["7.0", "7.1", "7.3", "next"])
def test_a_pending_batch_reads_as_allocated_and_frees_back_in_one_compare(gen):
    """While pending, every read sees the objects allocated (``is_live``, ``len``, validate)
    and the raw state comes back as it was; the free of exactly the batch clears the record."""
    sa, c, out = _pending_batch(gen)
    snap = snapshot(sa)
    assert all(jit_is_live(sa.handle, c.id, int(a)) for a in out)
    assert len(c) == N
    sa.validate()
    after = snapshot(sa)
    assert np.array_equal(after[0], snap[0]), "a read left the record settled"
    assert all(sa.find(int(a))["kind"] == "object" for a in out)        # (settles)
    jit_free_bulk(sa.handle, c.id, N, out.copy())
    assert sa.state.g[G_PEND] == 0 and len(c) == 0
    sa.validate()
    sa.check_invariants()


@pytest.mark.parametrize("how", ["jit", "python"])
def test_a_single_free_of_one_pending_object_settles_the_batch(how):
    """A free of one object of a pending batch takes the slow path, which settles the batch
    first: that object is freed, the rest stay allocated, and a later batch free of the rest
    checks them as any batch."""
    sa, c, out = _pending_batch("7.0")
    x = int(out[3])
    if how == "jit":
        jit_free(sa.handle, c.id, x)
    else:
        sa.kmem_cache_free(c, x)
    assert sa.state.g[G_PEND] == 0
    assert sa.find(x)["kind"] == "free object"
    rest = np.array([a for a in out if a != x], np.int64)
    assert all(sa.find(int(a))["kind"] == "object" for a in rest) and len(c) == N - 1
    with pytest.raises(numslab.DoubleFreeError):
        jit_free(sa.handle, c.id, x)
    jit_free_bulk(sa.handle, c.id, len(rest), rest.copy())
    assert len(c) == 0
    sa.validate()


def _bad(kind, out, other):
    bad = out.copy()
    if kind == "duplicate":
        bad[5] = bad[2]
    elif kind == "swapped":
        bad[[0, 1]] = bad[[1, 0]]
        bad[7] = bad[6]
    elif kind == "foreign":
        bad[9] = other
    elif kind == "inside":
        bad[4] += 8
    return bad


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
@pytest.mark.parametrize("where", ["python", "jit"])
def test_a_batch_as_large_as_a_large_main_sheaf_is_taken_pending(gen, where):
    """A cache asking for sheaves of 256 objects: a batch of 250 that its main sheaf holds is
    taken pending, no mark written (until December 2026 only a batch of at most 64 was: a larger
    one wrote and cleared a mark per object, 5-8x the round's time), reads as allocated, a bad
    free of it changes no word, and the free of exactly it puts it back."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=gen)
    c = sa.kmem_cache_create("big", 64, sheaf_capacity=256)
    c.free_bulk(c.alloc_bulk(250))          # the main sheaf holds them
    st = sa.state
    if where == "jit":
        out = np.zeros(250, np.int64)
        assert jit_alloc_bulk(sa.handle, c.id, 250, out) == 250
    else:
        out = c.alloc_bulk(250)
    assert st.g[G_PEND] == 250 and st.pend[PD_NPEND] == 250, "the batch is not pending"
    live = st.live.view(np.uint64)
    assert not any(int(live[a >> 9]) >> ((a >> 3) & 63) & 1 for a in out.tolist())
    assert len(c) == 250 and all(jit_is_live(sa.handle, c.id, int(a)) for a in out[::50])
    snap = snapshot(sa)
    bad = out.copy()
    bad[[0, 249]] = bad[[249, 0]]
    bad[100] = bad[99]
    with pytest.raises(numslab.DoubleFreeError):
        jit_free_bulk(sa.handle, c.id, 250, bad.copy())
    after = snapshot(sa)
    assert np.array_equal(after[0], snap[0]) and np.array_equal(after[1], snap[1])
    assert st.g[G_PEND] == 250
    if where == "jit":
        jit_free_bulk(sa.handle, c.id, 250, out.copy())
    else:
        c.free_bulk(out)
    assert st.g[G_PEND] == 0 and len(c) == 0
    assert not any(int(live[a >> 9]) >> ((a >> 3) & 63) & 1 for a in out.tolist())
    sa.validate()
    sa.check_invariants()


@pytest.mark.parametrize("kind", ["duplicate", "swapped", "foreign", "inside"])
def test_a_bad_free_of_a_pending_batch_changes_nothing(kind):
    """A batch free that is not exactly the pending batch is refused as it is without the
    record (the same error), and leaves every word as it was, the record pending."""
    sa, c, out = _pending_batch("7.0", True)
    d, other = sa.other, sa.other_obj
    snap = snapshot(sa)
    bad = _bad(kind, out, other)
    with pytest.raises(numslab.SlabError) as e:
        jit_free_bulk(sa.handle, c.id, N, bad.copy())
    want = {"duplicate": numslab.DoubleFreeError, "swapped": numslab.DoubleFreeError,
            "foreign": numslab.WrongCacheError, "inside": numslab.BadAddressError}[kind]
    assert isinstance(e.value, want), e.value
    after = snapshot(sa)
    assert np.array_equal(after[0], snap[0]) and np.array_equal(after[1], snap[1])
    assert sa.state.g[G_PEND] == N
    jit_free_bulk(sa.handle, c.id, N, out.copy())
    d.free(other)
    assert len(c) == 0
    sa.validate()


def test_a_freed_object_in_a_batch_free_of_a_pending_batch_is_a_double_free():
    """One object of the pending batch freed alone, then the whole batch: the double free is
    found (the single free settled the batch)."""
    sa, c, out = _pending_batch("7.0")
    jit_free(sa.handle, c.id, int(out[0]))
    snap = snapshot(sa)
    with pytest.raises(numslab.DoubleFreeError):
        jit_free_bulk(sa.handle, c.id, N, out.copy())
    after = snapshot(sa)
    assert np.array_equal(after[0], snap[0])
    jit_free_bulk(sa.handle, c.id, N - 1, out[1:].copy())
    sa.validate()


def test_save_settles_a_pending_batch(tmp_path):
    """``save`` writes the batch's marks: the loaded machine holds the objects allocated."""
    sa, c, out = _pending_batch("7.0")
    sa.save(tmp_path / "m.npz")
    back = numslab.SlabAllocator.load(tmp_path / "m.npz")
    bc = back.find_cache("p64")
    assert all(back.find(int(a))["kind"] == "object" for a in out) and len(bc) == N
    back.kmem_cache_free_bulk(bc, N, out.copy())
    back.validate()


def _prefill(sa, c):
    sa.kmem_cache_return_sheaf(c, numslab.GFP_KERNEL,
                               sa.kmem_cache_prefill_sheaf(c, numslab.GFP_KERNEL, 1, cpu=0))


def _refill(sa, c):
    s = sa.kmem_cache_prefill_sheaf(c, numslab.GFP_KERNEL, 2, cpu=0)
    s = sa.kmem_cache_refill_sheaf(c, numslab.GFP_KERNEL, s, 20)
    sa.kmem_cache_return_sheaf(c, numslab.GFP_KERNEL, s)


def _rcu(sa, c):
    sa.kfree_rcu(sa.kmem_cache_alloc(c, cpu=0), cpu=0)
    sa.rcu_barrier()


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
@pytest.mark.parametrize("call", [_prefill, _refill, _rcu,
                                  lambda sa, c: c.compact(100),
                                  lambda sa, c: sa.kmem_cache_shrink(c)],
                         ids=["prefill", "refill", "kfree_rcu", "compact", "shrink"])
def test_every_call_that_reaches_the_objects_settles_first(gen, call):
    """The units of the prefilled sheaves, the RCU sheaves, compaction and the lab's lean
    sheaves did not settle a pending batch: a prefill after a pending bulk allocation of one
    object left the cache counting one live object too few and its slab corrupt (``inuse +
    free objects != objects``; found by test_bulk's state machine). Each settles now."""
    sa = numslab.SlabAllocator(kernel=gen, nr_cpus=1, memory="8M", seed=5)
    c = sa.kmem_cache_create("m", 192, sheaf_capacity=13)
    one = sa.kmem_cache_alloc(c, cpu=0)
    out = np.zeros(3, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, 3, out, cpu=0) == 3
    assert sa.state.g[G_PEND] == 3
    call(sa, c)
    sa.validate()
    assert c.live_objects == 4
    assert sorted(c.live_addresses()) == sorted([one, *map(int, out)])
    sa.kmem_cache_free_bulk(c, 3, out, cpu=0)
    sa.kmem_cache_free(c, one, cpu=0)
    sa.validate()
    assert c.live_objects == 0


#: Units the facade, drivers, lab or tools call that neither settle a pending batch nor need to:
#: they reach no object's state (pages, lists, counts of slabs, a new cache's empty sheaves, the
#: engine's hold), or only a slab_debug cache's, whose objects are never pending, or they call a
#: unit that settles.
NO_OBJECT_STATE = {
    ("debug", "validate_slab_cache"), ("defrag", "set_partial_order"), ("ops", "engine_hold"),
    ("ops", "free_bulk_unchecked"), ("pages", "alloc_block"), ("pages", "drain_all_pages"),
    ("pages", "free_block_checked"), ("pages", "init_buddy"), ("pages", "release_free_blocks"),
    ("sheaves", "init_barns"), ("sheaves", "init_percpu_sheaves"), ("slablists", "pending_put"),
    ("slablists", "pending_take"), ("stats", "cpu_partial_slabs"), ("stats", "partial_counts"),
    ("stats", "partial_list")}
_SETTLES = {"_settled", "_settle", "settle_pending", "_unsettled", "G_PEND", "_pending"}


def _engine_units() -> dict:
    """(module, name) of every engine unit -> the names its body uses."""
    import ast
    from pathlib import Path
    units = {}
    for p in (Path(numslab.__file__).parent / "engine").glob("*.py"):
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                    getattr(d, "id", None) == "unit" or getattr(getattr(d, "func", None), "id",
                                                               None) == "unit"
                    for d in node.decorator_list):
                units[p.stem, node.name] = {n.id for n in ast.walk(node)
                                            if isinstance(n, ast.Name)} | \
                    {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    return units


def _units_called_from_outside(units: dict) -> set:
    """(module, name) of the engine units the other tiers import or call as ``module.name``."""
    import ast
    from pathlib import Path
    out = set()
    for p in Path(numslab.__file__).parent.rglob("*.py"):
        if p.parent.name == "engine":
            continue
        tree = ast.parse(p.read_text())
        mods = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    "engine" in node.module.split("."):
                last = node.module.split(".")[-1]
                for a in node.names:
                    if last == "engine":
                        mods[a.asname or a.name] = a.name
                    else:
                        out.add((last, a.name))
        out |= {(mods[n.value.id], n.attr) for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                and n.value.id in mods}
    return out & set(units)


def test_every_unit_the_other_tiers_call_settles_or_reaches_no_object():
    """A unit the facade calls that reaches object states without settling a pending batch
    corrupted a slab (the prefilled sheaves' units did: test above). Each unit the other tiers
    import or call settles (or delegates to what settles), or is listed here as reaching no
    object's state, so that a new one cannot slip by."""
    units = _engine_units()
    called = _units_called_from_outside(units)
    assert len(called) > 40 and ("prefill", "prefill_sheaf") in called
    unsettled = {k for k in called if not units[k] & _SETTLES}
    assert unsettled == NO_OBJECT_STATE


RECORD_BROKEN = "the record of the last bulk allocation"


@pytest.mark.parametrize("gen", ["7.0", "next"])
def test_validate_checks_the_record_of_the_last_bulk_allocation(gen):
    """A bulk allocation of 250 objects (through the slabs) leaves a checked record (its marks
    written, ``PD_NPEND`` 0) that a free of exactly its array takes without the batch check;
    ``validate`` passes it and refuses it broken: its count, its pending part, its row, an
    object freed behind its back or named twice. The record put right, it passes again."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=gen)
    c = sa.kmem_cache_create("r", 64)
    out = c.alloc_bulk(250)
    st = sa.state
    assert st.g[G_PEND] == 250 and st.pend[PD_NPEND] == 0 and st.pend[PD_COUNT] == 250
    assert np.array_equal(st.pend[PD_OBJS:PD_OBJS + 250], out)
    sa.validate()
    live = st.live.view(np.uint64)
    a = int(out[100])
    bit = np.uint64(1) << np.uint64((a >> 3) & 63)
    breaks = [(st.pend, PD_COUNT, 249), (st.pend, PD_NPEND, 3), (st.pend, PD_ROW, 1),
              (st.pend, PD_OBJS + 7, int(out[8])), (st.pend, PD_OBJS + 9, a + 8)]
    for arr, i, v in breaks:
        was = int(arr[i])
        arr[i] = v
        with pytest.raises(numslab.SlabCorruptionError, match=RECORD_BROKEN):
            sa.validate()
        arr[i] = was
        sa.validate()
    live[a >> 9] &= ~bit                    # one of its objects no longer live
    with pytest.raises(numslab.SlabCorruptionError, match=RECORD_BROKEN):
        sa.validate()
    live[a >> 9] |= bit
    sa.validate()
    c.free_bulk(out)
    assert st.g[G_PEND] == 0 and len(c) == 0
    sa.validate()
    sa.check_invariants()
    # The round again: the main sheaf's whole content begins the batch, left pending (no mark:
    # PD_NPEND says how many), the rest through the slabs marked; each kind of break refused.
    m = int(sa._mem[(int(st.cpu[c._id, 0, C_MAIN]) >> 3) + SH_SIZE])
    assert 0 < m < 250
    out = c.alloc_bulk(250)
    assert st.g[G_PEND] == 250 and st.pend[PD_NPEND] == m and len(c) == 250
    sa.validate()
    for k in (0, m - 1, m):                 # a pending object marked, a slab object unmarked
        a = int(out[k])
        bit = np.uint64(1) << np.uint64((a >> 3) & 63)
        assert bool(live[a >> 9] & bit) == (k >= m)
        live[a >> 9] ^= bit
        with pytest.raises(numslab.SlabCorruptionError, match=RECORD_BROKEN):
            sa.validate()
        live[a >> 9] ^= bit
    sa.validate()
    c.free_bulk(out)
    assert st.g[G_PEND] == 0 and len(c) == 0
    sa.validate()
    sa.check_invariants()
