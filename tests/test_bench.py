"""``numslab.tools.bench``: the peers numslab is measured against (DequePool, ListStack, NumpyStack,
JitStack, the jitted stack loops, the FIFO ring) checked against plain-Python oracles, the
numslab kernels of the benchmark loops checked for leaks, the loops' LLVM IR checked for
reference-count traffic and for the engine's slow paths, and the timing helpers checked for
shape only (never for speed: timings are only required to be finite and positive)."""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numslab
from numslab.engine.layout import C_SPARE
from numslab.tools import bench, coldstart, singlebench
from numslab.flags import GFP_ATOMIC, SLAB_ARRAY_ALLOC_FULL_COUNT

from conftest import cell, is_finite_positive, sheaf_counts

KERNELS = ("7.0", "6.18")       #: the benchmark loops run on both generations
SENTINEL = -7
PEERS = (bench.DequePool, bench.ListStack, bench.NumpyStack, bench.JitStack)
LISTS = (bench.DequePool, bench.ListStack)     #: the pure-Python peers: lists in, lists out


# ---- helpers ------------------------------------------------------------------------------
def free_indices(peer) -> list[int]:
    """The peer's free indices, bottom of its stack first (the next to go is last)."""
    if isinstance(peer, LISTS):
        return [int(i) for i in peer.free_list]
    top = int(peer.top[0]) if isinstance(peer, bench.JitStack) else peer.top
    return [int(i) for i in peer.stack[:top]]


def buffer(peer, n: int):
    """An output buffer of ``n`` sentinels of the kind the peer takes (a list for the
    pure-Python ones)."""
    if isinstance(peer, LISTS):
        return [SENTINEL] * n
    return np.full(n, SENTINEL, np.int64)


def bulk_reversed(peer) -> bool:
    """True if the peer's ``alloc_bulk`` hands out the top of its stack first (the deque pops
    one by one); the array stacks copy the top ``n`` in stack order."""
    return isinstance(peer, bench.DequePool)


# ---- the peers ------------------------------------------------------------------------------
@pytest.mark.parametrize("Peer", PEERS)
def test_peer_hands_out_every_index_once(Peer):
    p = Peer(10)
    out = buffer(p, 7)
    assert p.alloc_bulk(7, out) == 7
    singles = [p.alloc() for _ in range(3)]
    got = [int(i) for i in out] + [int(i) for i in singles]
    assert sorted(got) == list(range(10))
    assert free_indices(p) == []


@pytest.mark.parametrize("Peer", PEERS)
def test_peer_alloc_bulk_is_all_or_nothing(Peer):
    p = Peer(8)
    taken = buffer(p, 5)
    assert p.alloc_bulk(5, taken) == 5
    before = free_indices(p)
    out = buffer(p, 4)
    assert p.alloc_bulk(4, out) == 0
    assert list(out) == [SENTINEL] * 4
    assert free_indices(p) == before
    assert p.alloc_bulk(3, out) == 3                 # exactly what is left is fine
    assert sorted([int(i) for i in out[:3]] + [int(i) for i in taken]) == list(range(8))
    assert p.alloc_bulk(1, out) == 0


@pytest.mark.parametrize("Peer", PEERS)
def test_peer_free_bulk_then_alloc_bulk_gives_them_back(Peer):
    p = Peer(32)
    first = buffer(p, 12)
    assert p.alloc_bulk(12, first) == 12
    objs = [int(i) for i in first]
    ordered = objs[::-1] if bulk_reversed(p) else objs
    p.free_bulk(12, first)
    again = buffer(p, 12)
    assert p.alloc_bulk(12, again) == 12
    assert [int(i) for i in again] == ordered
    # freed in a scrambled order, they come back as that order (LIFO)
    scrambled = [objs[i] for i in (3, 0, 11, 7, 1, 2, 10, 4, 9, 5, 8, 6)]
    src = buffer(p, 12)
    src[:] = scrambled
    p.free_bulk(12, src)
    back = buffer(p, 12)
    assert p.alloc_bulk(12, back) == 12
    assert [int(i) for i in back] == (scrambled[::-1] if bulk_reversed(p) else scrambled)


@pytest.mark.parametrize("Peer", PEERS)
def test_peer_single_alloc_free_is_lifo(Peer):
    p = Peer(6)
    a, b = p.alloc(), p.alloc()
    assert a != b and {a, b} <= set(range(6))
    p.free(a)
    p.free(b)
    assert p.alloc() == b
    assert p.alloc() == a


@pytest.mark.parametrize("Peer", PEERS)
def test_peer_single_and_bulk_agree(Peer):
    one, many = Peer(20), Peer(20)
    singles = [one.alloc() for _ in range(9)]
    out = buffer(many, 9)
    assert many.alloc_bulk(9, out) == 9
    bulk = [int(i) for i in out]
    # the same objects either way; the same order for the deque, the reverse for the stacks
    assert bulk == (singles if bulk_reversed(many) else singles[::-1])
    assert free_indices(one) == free_indices(many)
    for i in singles:
        one.free(i)
    many.free_bulk(9, singles if isinstance(many, LISTS) else np.array(singles, np.int64))
    assert free_indices(one) == free_indices(many) == free_indices(Peer(20))[:11] + singles


def test_make_round_refuses_an_unknown_impl():
    with pytest.raises(ValueError, match="unknown implementation 'slab-magic'"):
        bench.make_round("slab-magic", 4)


def test_numpy_stack_alloc_on_empty_returns_minus_one():
    s = bench.NumpyStack(2)
    assert [s.alloc(), s.alloc(), s.alloc(), s.alloc()] == [1, 0, -1, -1]
    assert s.top == 0
    s.free(0)
    assert s.alloc() == 0


def test_deque_alloc_on_empty_raises_and_jit_stack_returns_minus_one():
    for d in (bench.DequePool(1), bench.ListStack(1)):
        d.alloc()
        with pytest.raises(IndexError):
            d.alloc()
    j = bench.JitStack(1)
    assert j.alloc() == 0
    assert j.alloc() == -1
    assert int(j.top[0]) == 0


@pytest.mark.parametrize("Peer", PEERS)
def test_peer_zero_sized_bulk(Peer):
    p = Peer(4)
    before = free_indices(p)
    assert p.alloc_bulk(0, buffer(p, 0)) == 0
    p.free_bulk(0, buffer(p, 0))
    assert free_indices(p) == before


ops = st.lists(st.one_of(st.tuples(st.just("alloc_bulk"), st.integers(0, 12)),
                         st.tuples(st.just("free_bulk"), st.integers(0, 12)),
                         st.tuples(st.just("alloc"), st.just(1)),
                         st.tuples(st.just("free"), st.integers(0, 11))),
               max_size=40)


@settings(max_examples=60, deadline=None)
@given(which=st.sampled_from(range(len(PEERS))), cap=st.integers(1, 10), ops=ops,
       rnd=st.randoms(use_true_random=False))
def test_peer_matches_a_free_list_oracle(which, cap, ops, rnd):
    p = PEERS[which](cap)
    free = list(range(cap))                         # the oracle: a stack, next to go last
    live: set[int] = set()
    for op, k in ops:
        if op == "alloc_bulk":
            out = buffer(p, k)
            got = p.alloc_bulk(k, out)
            if k > len(free):
                assert got == 0 and list(out) == [SENTINEL] * k
            else:
                assert got == k
                want = free[len(free) - k:]
                del free[len(free) - k:]
                objs = [int(i) for i in out]
                assert objs == (want[::-1] if bulk_reversed(p) else want)
                assert not live & set(objs)
                live |= set(objs)
        elif op == "alloc":
            if not free:                            # the peers differ when empty
                continue
            i = int(p.alloc())
            assert i == free.pop() and i not in live
            live.add(i)
        elif op == "free_bulk":
            objs = rnd.sample(sorted(live), min(k, len(live)))
            src = buffer(p, len(objs))
            src[:] = objs
            p.free_bulk(len(objs), src)
            free += objs
            live -= set(objs)
        elif live:
            i = rnd.choice(sorted(live))
            p.free(i)
            free.append(i)
            live.discard(i)
        assert free_indices(p) == free
        assert live | set(free) == set(range(cap)) and not live & set(free)


# ---- JitStack from inside @njit ---------------------------------------------------------------
@numba.njit
def jit_stack_user(stack, top, n, out):
    """User code: bulk alloc n, free them, single alloc two, free one; what it saw."""
    got = bench.jit_stack_alloc_bulk(stack, top, n, out)
    bench.jit_stack_free_bulk(stack, top, got, out)
    a = bench.jit_stack_alloc(stack, top)
    b = bench.jit_stack_alloc(stack, top)
    bench.jit_stack_free(stack, top, b)
    too_many = bench.jit_stack_alloc_bulk(stack, top, stack.shape[0] + 1, out)
    return got, a, b, too_many


def test_jit_stack_functions_work_inside_njit():
    inside, outside = bench.JitStack(16), bench.JitStack(16)
    out_in, out_py = np.full(5, SENTINEL, np.int64), np.full(5, SENTINEL, np.int64)
    got, a, b, too_many = jit_stack_user(inside.stack, inside.top, 5, out_in)
    assert outside.alloc_bulk(5, out_py) == got == 5
    outside.free_bulk(5, out_py)
    assert (outside.alloc(), outside.alloc()) == (a, b)
    outside.free(b)
    assert outside.alloc_bulk(17, np.zeros(17, np.int64)) == too_many == 0
    assert np.array_equal(out_in, out_py)
    assert free_indices(inside) == free_indices(outside) == list(range(15))
    assert a == 15 and b == 14


@pytest.mark.parametrize("loop", [bench.jit_stack_loop_bulk, bench.jit_stack_loop_single],
                         ids=["bulk", "single"])
@pytest.mark.parametrize("bulk", [1, 5])
def test_jit_stack_loops_leave_every_index_free(loop, bulk):
    st_ = bench.JitStack(8)
    out = np.full(bulk, SENTINEL, np.int64)
    loop(st_.stack, st_.top, bulk, 3, out)
    assert int(st_.top[0]) == 8
    assert sorted(free_indices(st_)) == list(range(8))
    assert sorted(out.tolist()) == list(range(8 - bulk, 8))   # the top ``bulk`` went round


# ---- numslab's benchmark kernels: nothing leaks ------------------------------------------------
LOOPS = [("bulk", False), ("sheaves", True), ("single", False)] + \
        [(m, False) for m in bench.ARRAY_MODES]


@pytest.mark.parametrize("loop,sheaves", LOOPS, ids=[k for k, _ in LOOPS])
@pytest.mark.parametrize("bulk", [1, 16, 250])
def test_slab_kernel_frees_everything_it_allocates(loop, sheaves, bulk, kernel):
    sa, c = bench.new_bench_cache(memory="16M", sheaves=sheaves, kernel=kernel)
    assert (c.object_size, c.objs_per_slab) == (bench.OBJECT_SIZE, 16)
    out = np.zeros(bulk, np.int64)
    h, cid = sa.handle, c.id
    if loop in ("bulk", "sheaves"):
        bench.slab_loop_bulk(h, cid, bulk, 3, out)
    elif loop == "single":
        bench.slab_loop_single(h, cid, bulk, 3, out)
    else:
        flags = bench.ARRAY_MODES[loop] | SLAB_ARRAY_ALLOC_FULL_COUNT
        bench.slab_loop_array(h, cid, bulk, 3, out, flags)
    # the last round's objects were real, distinct and aligned to the 256-byte slots
    assert len(set(out.tolist())) == bulk and (out > 0).all()
    assert (out % bench.OBJECT_SIZE == 0).all()
    assert c.live_objects == 0
    if loop in ("bulk", "sheaves", "single"):       # the array modes count their own items
        assert (sheaf_counts(c)[0] > 0) == (sheaves or kernel == "7.0")   # 7.0: every cache
    sa.check_invariants()
    sa.validate(c)


@pytest.mark.parametrize("mode", list(bench.ARRAY_MODES))
@pytest.mark.parametrize("bulk", [1, 16, 250])
def test_array_modes_with_full_count_fill_the_batch(mode, bulk):
    sa, c = bench.new_bench_cache(memory="16M")
    out = np.zeros(bulk, np.int64)
    flags = bench.ARRAY_MODES[mode] | SLAB_ARRAY_ALLOC_FULL_COUNT
    for _ in range(3):                              # what make_round's Python loop relies on
        n = sa.kmem_cache_alloc_array(c, GFP_ATOMIC, bulk, out, flags)
        assert n == bulk and c.live_objects == bulk
        sa.kmem_cache_free_array(c, n, out)
        assert c.live_objects == 0
    sa.validate()


def test_new_bench_cache_sheaves_serve_the_largest_bulk(kernel):
    sa, c = bench.new_bench_cache(nr_cpus=2, memory="16M", sheaves=True, kernel=kernel)
    assert sa.nr_cpus == 2 and c.name == "slab_bench_test"
    assert bench.SHEAF_CAPACITY >= max(bench.BULK_SIZES)
    out = np.zeros(max(bench.BULK_SIZES), np.int64)
    bench.slab_loop_bulk(sa.handle, c.id, len(out), 2, out)
    # the second round is served from the CPU's sheaf and freed back into it
    assert sheaf_counts(c)[0] >= len(out)
    assert sheaf_counts(c)[1] == 2 * len(out)
    assert c.live_objects == 0
    sa.validate()


# ---- make_round ----------------------------------------------------------------------------
@pytest.mark.parametrize("bulk", [1, 16, 250])
@pytest.mark.parametrize("impl", bench.PY_IMPLS)
def test_make_round_from_python(impl, bulk):
    run = bench.make_round(impl, bulk, inside_jit=False)
    assert run(3) is None
    if impl.startswith("slab-"):                    # Python loops close over the cache
        c, out = cell(run, "c"), cell(run, "out")
        assert c.live_objects == 0
        assert (out > 0).all() and len(np.unique(out)) == bulk   # real, distinct objects
        cell(run, "sa").validate()


@pytest.mark.parametrize("bulk", [1, 16, 250])
@pytest.mark.parametrize("impl", bench.JIT_IMPLS)
def test_make_round_inside_jit(impl, bulk):
    run = bench.make_round(impl, bulk, inside_jit=True)
    assert run(3) is None
    if impl == "jit-stack-lag":                     # every index free or in a batch in flight
        st_ = cell(run, "pool")
        assert sorted(free_indices(st_) + run.outs.ravel().tolist()) == list(range(1 << 16))
    elif impl.startswith("jit-stack"):
        st_ = cell(run, "st")
        assert int(st_.top[0]) == 1 << 16
        assert sorted(free_indices(st_)) == list(range(1 << 16))


def test_slab_warm_runs_on_a_warmed_cache_a_batch_spans_main_and_spare():
    """``slab-warm``'s cache starts with sheaves in the barn and the CPU's main and spare part
    full, so a batch of 16 spans both (which ``slab-bulk``'s fresh cache never does); its
    rounds then give every object back, and take none from the slabs (from Python: the
    jitted rounds close over the handle alone, and share the warm-up)."""
    run = bench.make_round("slab-warm", 16)
    sa, c = cell(run, "sa"), cell(run, "c")
    fresh = bench.make_round("slab-bulk", 16)
    assert c.stats["barn_get"] + c.stats["barn_put"] > 0    # the warm-up moved sheaves
    assert sa.state.cpu[c.id, 0, C_SPARE] != 0              # and left a spare
    assert cell(fresh, "c").stats["barn_get"] + cell(fresh, "c").stats["barn_put"] == 0
    before = dict(c.stats)
    run(50)
    assert c.live_objects == 0
    assert c.stats["alloc_slab"] == before["alloc_slab"]    # all from sheaves
    assert c.stats["alloc_fastpath"] - before["alloc_fastpath"] == 50 * 16
    sa.validate()


@pytest.mark.parametrize("bulk", [16, 250, 4096])
def test_make_round_stack_peers_give_everything_back(bulk):
    for impl in ("deque", "list-stack", "numpy-stack", "jit-stack"):
        run = bench.make_round(impl, bulk)
        run(3)
        if impl == "jit-stack":                     # the jitted functions, called directly
            stack, top = cell(run, "stack"), cell(run, "top")
            assert (cell(run, "a"), cell(run, "f")) == (bench.jit_stack_alloc_bulk,
                                                         bench.jit_stack_free_bulk)
            assert int(top[0]) == 1 << 16
            assert sorted(stack.tolist()) == list(range(1 << 16))
            # the last round took the top ``bulk`` in stack order, and gave them back
            assert cell(run, "out").tolist() == stack[(1 << 16) - bulk:].tolist()
        else:
            pool = cell(run, "st" if impl == "numpy-stack" else "pool")
            assert sorted(free_indices(pool)) == list(range(1 << 16)), impl


def test_impl_lists():
    assert len(set(bench.PY_IMPLS)) == len(bench.PY_IMPLS)
    assert len(set(bench.JIT_IMPLS)) == len(bench.JIT_IMPLS)
    for mode in bench.ARRAY_MODES:
        assert f"slab-{mode}" in bench.PY_IMPLS and f"slab-{mode}" in bench.JIT_IMPLS
    assert set(bench.KERNEL_NS) <= set(bench.BULK_SIZES)
    assert list(bench.BULK_SIZES) == sorted(bench.BULK_SIZES)


# ---- time_per_object and bulk_table -------------------------------------------------------------
@pytest.mark.parametrize("bulk,objects,rounds", [(4, 256, 64), (250, 256, 1), (300, 256, 1)])
def test_time_per_object_runs_objects_over_bulk_rounds(bulk, objects, rounds):
    calls = []

    def run(r: int) -> None:
        calls.append(r)
        sum(range(1000))

    t = bench.time_per_object(run, bulk, objects=objects, repeat=3)
    assert calls == [rounds] * 3
    assert is_finite_positive(t)


def test_time_per_object_of_a_real_round():
    assert is_finite_positive(bench.time_per_object(bench.make_round("jit-stack", 8), 8,
                                                    objects=256, repeat=1))


@pytest.mark.parametrize("impls,inside_jit", [(("deque", "slab-bulk"), False),
                                               (("jit-stack-single", "slab-new"), True)])
def test_bulk_table_shape(impls, inside_jit):
    table = bench.bulk_table((1, 16), impls, inside_jit, objects=256, repeat=1)
    assert list(table) == list(impls)
    for impl, row in table.items():
        assert list(row) == [1, 16], impl
        assert all(is_finite_positive(v) for v in row.values()), row


# ---- the same-run ratio table -------------------------------------------------------------------
def test_bulk_ratio_table_shape_and_ratios():
    table = bench.bulk_ratio_table(sizes=(16, 250), repeat=1, pairs=512)
    assert list(table) == ["jit", "python"]
    for where, impls in (("jit", bench.RATIO_JIT), ("python", bench.RATIO_PY)):
        assert list(table[where]) == [16, 250]
        for bulk, row in table[where].items():
            assert list(row["ns"]) == list(impls) == list(row["ratio"])
            assert all(is_finite_positive(v) for v in row["ns"].values())
            ref = row["ref"]
            if where == "jit":
                assert ref == "jit-stack"
            else:                                   # the fastest peer of the row
                assert ref in bench.RATIO_PEERS
                assert row["ns"][ref] == min(row["ns"][p] for p in bench.RATIO_PEERS)
            assert row["ratio"][ref] == 1.0
            for impl in impls:
                assert math.isclose(row["ratio"][impl], row["ns"][impl] / row["ns"][ref])
            # the floor from Python: the floor inside @njit plus numslab's call cost
            if where == "python":
                jit_row = table["jit"][bulk]["ns"]
                call = max(0.0, row["ns"]["slab-bulk"] - jit_row["slab-bulk"])
                for floor in bench.RATIO_FLOORS:
                    assert math.isclose(row["ns"][floor], jit_row[floor] + call)
    text = bench.format_ratio_table(table)
    assert text.startswith("inside @njit") and "from Python" in text
    assert text.count("x)") == 2 * (len(bench.RATIO_JIT) + len(bench.RATIO_PY))


def test_bulk_ratio_table_times_every_cell_interleaved(monkeypatch):
    """Every cell of a size is built once and sampled ``repeat`` times in turn, each sample
    ``ceil(pairs / bulk)`` rounds; the floor and slab-bulk run inside @njit for the
    Python-only table too (the floor's figure from Python needs them)."""
    made, calls = [], []

    def fake_make_round(impl, bulk, inside_jit=False, kernel=bench.KERNEL):
        key = ("jit" if inside_jit else "python", impl, kernel)
        made.append(key)
        return lambda rounds: calls.append((key, bulk, rounds))

    monkeypatch.setattr(bench, "make_round", fake_make_round)
    table = bench.bulk_ratio_table(sizes=(250,), repeat=3, pairs=1000, where=("python",))
    assert list(table) == ["python"] and list(table["python"][250]["ns"]) == list(bench.RATIO_PY)
    assert made == [("jit", "slab-bulk", "7.0"), ("jit", "floor-7.0", "7.0"),
                    ("jit", "floor-checks", "7.0")] + \
        [("python", i, "7.0") for i in bench.RATIO_PY if i not in bench.RATIO_FLOORS]
    assert [c[0] for c in calls] == made * 3
    assert {(b, r) for _, b, r in calls} == {(250, 4)}
    made.clear()
    bench.bulk_ratio_table(sizes=(16,), repeat=1, pairs=16, where=("jit",))
    assert made == [("jit", "slab-bulk", "7.0"), ("jit", "slab-warm", "7.0"),
                    ("jit", "slab-bulk", "6.18"), ("jit", "floor-7.0", "7.0"),
                    ("jit", "floor-checks", "7.0"), ("jit", "slab-sheaves", "7.0"),
                    ("jit", "jit-stack", "7.0"), ("jit", "slab-lag", "7.0"),
                    ("jit", "jit-stack-lag", "7.0")]
    # other generations beside 7.0's, in the same run (h22's trial: --ratios had 6.18 only)
    made.clear()
    table = bench.bulk_ratio_table(sizes=(16,), repeat=1, pairs=16, where=("jit",),
                                   generations=("7.1", "next", "7.0"))
    assert made[2:4] == [("jit", "slab-bulk", "7.1"), ("jit", "slab-bulk", "next")]
    assert tuple(table["jit"][16]["ns"]) == bench.ratio_jit(("7.1", "next")) == \
        ("slab-bulk", "slab-warm", "slab-bulk-7.1", "slab-bulk-next", "floor-7.0",
         "floor-checks", "slab-sheaves", "jit-stack", "slab-lag", "jit-stack-lag")
    assert bench.ratio_jit(("6.18",)) == bench.RATIO_JIT


def test_cli_bench_ratios_prints_the_ratio_table(capsys, monkeypatch):
    from numslab.tools import cli
    small = bench.bulk_ratio_table(sizes=(16,), repeat=1, pairs=64)
    asked = []
    monkeypatch.setattr(bench, "bulk_ratio_table", lambda *a, **k: asked.append((a, k)) or small)
    assert cli.main(["bench", "--where", "none", "--ratios"]) == 0
    assert asked == [((), {"generations": ("6.18",)})]     # its own sizes, repeat and pairs
    out = capsys.readouterr().out
    assert bench.format_ratio_table(small) in out
    assert cli.main(["bench", "--where", "none", "--ratios", "--kernel", "7.0,7.1,6.18"]) == 0
    assert asked[-1] == ((), {"generations": ("7.1", "6.18")})


# ---- the array stream ---------------------------------------------------------------------------
@pytest.mark.parametrize("inside_jit", [False, True], ids=["python", "jit"])
@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
@pytest.mark.parametrize("mode,slabs", [("new", 1), ("new", 2), ("partial", 1), ("partial", 2)])
def test_array_stream(mode, slabs, cold, inside_jit, kernel):
    stream = bench.array_stream(mode, slabs, 2, inside_jit=inside_jit, memory="8M", cold=cold,
                                kernel=kernel)
    sa, c = cell(stream, "sa"), cell(stream, "c")
    per = c.objs_per_slab
    assert cell(stream, "n") == (slabs * per if mode == "new" else slabs * (per - 1))
    for _ in range(2):
        assert is_finite_positive(stream())
        n = cell(stream, "n")
        rows = cell(stream, "rows")                 # the batches were real and distinct
        taken = rows[:, :n]
        assert (taken > 0).all() and len(np.unique(taken)) == taken.size
        assert (rows[:, n:] == 0).all()             # NEW, asked n + 1, took n: whole slabs
        assert c.live_objects == 0                  # everything is given back ...
        assert c.slabs == 0                         # ... and shrunk away
        sa.validate()


def test_array_stream_unknown_mode():
    with pytest.raises(KeyError):
        bench.array_stream("local", 1, 1, memory="8M")


# ---- cache sizes and the eviction buffer -------------------------------------------------------
def test_llc_bytes_is_a_positive_int():
    n = bench.llc_bytes()
    assert type(n) is int and n > 0 and n % 1024 == 0


def test_llc_bytes_parses_sysfs(tmp_path, monkeypatch):
    for idx, txt in (("index0", "32K\n"), ("index2", "512K"), ("index3", "8m"),
                     ("index4", "n/a"), ("index5", "")):
        (tmp_path / idx).mkdir()
        (tmp_path / idx / "size").write_text(txt)
    monkeypatch.setattr(bench, "Path", lambda _: tmp_path)
    assert bench.llc_bytes() == 8 << 20
    (tmp_path / "index6").mkdir()
    (tmp_path / "index6" / "size").write_text("1G")
    assert bench.llc_bytes() == 1 << 30


def test_llc_bytes_falls_back_to_32m(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "Path", lambda _: tmp_path)
    assert bench.llc_bytes() == 32 << 20


def test_evict_caches_writes_one_word_per_line_of_a_big_buffer():
    bench.evict_caches()
    assert len(bench._EVICT) == 1
    buf = bench._EVICT[0]
    assert buf.nbytes >= 2 * bench.llc_bytes()
    before = buf[:16].copy()
    bench.evict_caches()
    assert len(bench._EVICT) == 1 and bench._EVICT[0] is buf   # made once, reused
    assert np.array_equal(buf[:16] - before, [1] + [0] * 7 + [1] + [0] * 7)


# ---- the jitted stack loops: the helpers' semantics, written in the loop -----------------------
def python_stack_rounds(st_, bulk: int, rounds: int, out: np.ndarray, single: bool) -> None:
    """The loops' oracle: the same rounds through JitStack's helpers, called from Python."""
    for _ in range(rounds):
        if single:
            for i in range(bulk):
                out[i] = st_.alloc()
            for i in range(bulk):
                st_.free(int(out[i]))
        elif st_.alloc_bulk(bulk, out):         # (a short stack's round gives nothing)
            st_.free_bulk(bulk, out)


@pytest.mark.parametrize("single", [False, True], ids=["bulk", "single"])
@pytest.mark.parametrize("cap,bulk,rounds", [(8, 1, 3), (8, 5, 4), (16, 16, 2), (4, 6, 2),
                                             (0, 2, 1)])
def test_jit_stack_loops_match_the_helpers(single, cap, bulk, rounds):
    """The loops write the stack's operations inline; they do what the helpers do, empty or
    short stacks included (-1 from an empty single pop, nothing from a short bulk pop)."""
    loop = bench.jit_stack_loop_single if single else bench.jit_stack_loop_bulk
    fast, slow = bench.JitStack(cap), bench.JitStack(cap)
    fast.stack = np.concatenate([fast.stack, np.full(2 * bulk, SENTINEL, np.int64)])
    slow.stack = fast.stack.copy()                  # room above: the single form's -1s
    out_f = np.arange(100, 100 + bulk, dtype=np.int64)
    out_s = out_f.copy()
    loop(fast.stack, fast.top, bulk, rounds, out_f)
    python_stack_rounds(slow, bulk, rounds, out_s, single)
    assert int(fast.top[0]) == int(slow.top[0])
    assert np.array_equal(fast.stack, slow.stack)
    assert np.array_equal(out_f, out_s)


# ---- the peers against the forms they replaced ----------------------------------------------
class LoopDequePool(bench.DequePool):
    """DequePool's bulk calls as they were: one pop or push per ``for`` iteration."""

    def alloc_bulk(self, n, out):
        if len(self.free_list) < n:
            return 0
        pop = self.free_list.pop
        for i in range(n):
            out[i] = pop()
        return n

    def free_bulk(self, n, objs):
        push = self.free_list.append
        for i in range(n):
            push(objs[i])


@pytest.mark.parametrize("cap,sizes", [(64, [5, 0, 64, 3, 65, 12]), (5000, [4096, 250, 16, 4096])])
def test_deque_pool_bulk_matches_the_loop_form(cap, sizes):
    """starmap/extend give what the per-object loops gave: the same objects in the same
    order, the same free list, the buffer beyond ``n`` untouched, a short pool refused."""
    new, old = bench.DequePool(cap), LoopDequePool(cap)
    rng = np.random.default_rng(3)
    for n in sizes:
        bn, bo = [SENTINEL] * (n + 2), [SENTINEL] * (n + 2)
        assert new.alloc_bulk(n, bn) == old.alloc_bulk(n, bo)
        assert bn == bo and list(new.free_list) == list(old.free_list)
        got = [i for i in bn[:n] if i != SENTINEL]
        back = [got[i] for i in rng.permutation(len(got))] + [SENTINEL, SENTINEL]
        k = len(got)
        new.free_bulk(k, list(back))
        old.free_bulk(k, list(back))
        assert list(new.free_list) == list(old.free_list)
    # the whole buffer (n == len(objs)) and an array buffer push the same
    new.free_bulk(2, np.array([7000, 7001], np.int64))
    old.free_bulk(2, np.array([7000, 7001], np.int64))
    new.free_bulk(2, [7002, 7003])
    old.free_bulk(2, [7002, 7003])
    assert list(new.free_list) == list(old.free_list)


@numba.njit
def signed_alloc_bulk(stack, top, n, out):
    """jit_stack_alloc_bulk as it was (signed indices)."""
    t = top[0]
    if t < n:
        return 0
    for i in range(n):
        out[i] = stack[t - n + i]
    top[0] = t - n
    return n


@numba.njit
def signed_free_bulk(stack, top, n, objs):
    """jit_stack_free_bulk as it was."""
    t = top[0]
    for i in range(n):
        stack[t + i] = objs[i]
    top[0] = t + n


@numba.njit
def signed_loop_bulk(stack, top, bulk, rounds, out):
    """jit_stack_loop_bulk as it was, with signed indices (and a short stack's round
    giving nothing back, as it gives back now)."""
    t = top[0]
    for _ in range(rounds):
        if t >= bulk:
            t -= bulk
            for i in range(bulk):
                out[i] = stack[t + i]
            for i in range(bulk):
                stack[t + i] = out[i]
            t += bulk
    top[0] = t


@numba.njit
def signed_loop_single(stack, top, bulk, rounds, out):
    """jit_stack_loop_single as it was."""
    t = top[0]
    for _ in range(rounds):
        for i in range(bulk):
            if t == 0:
                out[i] = -1
            else:
                t -= 1
                out[i] = stack[t]
        for i in range(bulk):
            stack[t] = out[i]
            t += 1
    top[0] = t


def scrambled_stack(cap: int, room: int) -> np.ndarray:
    """A permuted stack of ``cap`` indices and ``room`` sentinels above it."""
    return np.concatenate([np.random.default_rng(cap).permutation(cap),
                           np.full(room, SENTINEL)]).astype(np.int64)


@pytest.mark.parametrize("cap,bulk,rounds", [(8, 5, 4), (4, 6, 2), (0, 2, 1), (300, 250, 3),
                                             (1 << 13, 4096, 3), (4100, 4096, 2),
                                             (1 << 16, 16, 5), (1 << 16, 67, 7)])
@pytest.mark.parametrize("which", ["loop_bulk", "loop_single"])
def test_unsigned_stack_loops_match_the_signed_form(which, cap, bulk, rounds):
    """The unsigned-index loops leave the same stack, top and output as the signed forms
    they replaced, at sizes where the vectorised code and its remainder loops run."""
    new = getattr(bench, "jit_stack_" + which)
    old = signed_loop_bulk if which == "loop_bulk" else signed_loop_single
    a = scrambled_stack(cap, 2 * bulk)
    b = a.copy()
    ta, tb = np.array([cap], np.int64), np.array([cap], np.int64)
    oa = np.arange(100, 100 + bulk, dtype=np.int64)
    ob = oa.copy()
    new(a, ta, bulk, rounds, oa)
    old(b, tb, bulk, rounds, ob)
    assert int(ta[0]) == int(tb[0])
    assert np.array_equal(a, b) and np.array_equal(oa, ob)


@pytest.mark.parametrize("cap,ns", [(10, [3, 0, 7, 1]), (5000, [4096, 250, 16, 300, 4096]),
                                    (64, [65, 64, 64, 13])])
def test_unsigned_stack_bulk_calls_match_the_signed_form(cap, ns):
    a, b = scrambled_stack(cap, 5000), scrambled_stack(cap, 5000)
    ta, tb = np.array([cap], np.int64), np.array([cap], np.int64)
    for n in ns:
        oa, ob = np.full(n + 3, SENTINEL, np.int64), np.full(n + 3, SENTINEL, np.int64)
        assert bench.jit_stack_alloc_bulk(a, ta, n, oa) == signed_alloc_bulk(b, tb, n, ob)
        assert np.array_equal(oa, ob) and int(ta[0]) == int(tb[0])
        back = oa[np.random.default_rng(n).permutation(n + 3)]
        bench.jit_stack_free_bulk(a, ta, n, back)
        signed_free_bulk(b, tb, n, back)
        assert np.array_equal(a, b) and int(ta[0]) == int(tb[0])


# ---- the floor from Python -------------------------------------------------------------------
@pytest.mark.parametrize("bulk", [1, 16, 250, 4096])
def test_floor_round_at_does_what_rounds_floor_does(bulk):
    """The from-Python entry (an int state address and the batch) leaves the prototype's
    state and batch as its twelve-array loop does, round by round."""
    from numslab.tools import floor as F
    from numslab.tools.floor import FloorRound, rounds_floor
    a, b = FloorRound(bulk, pages=2048), FloorRound(bulk, pages=2048)
    packed = bench.floor_state(a)
    for _ in range(3):
        assert bench.floor_round_at(int(packed.ctypes.data), bulk, a.out) == 0
        assert rounds_floor(b.sd, b.mem, b.live, b.g, b.sheaf, b.pool, b.rseq, bulk, 1, b.out,
                            b.limit, b.runs) == 0
        for name in ("sd", "mem", "live", "sheaf", "pool", "out", "runs", "rec"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert np.array_equal(a.g[:F.REC], b.g[:F.REC])         # (g[REC]: rec's address)
    assert (a.out > 0).all() and len(np.unique(a.out)) == bulk


def test_floor_round_at_reports_a_failed_round():
    from numslab.tools.floor import FloorRound
    fr = FloorRound(64, pages=3)                  # two free pages: 32 objects at most
    assert bench.floor_round_at(int(bench.floor_state(fr).ctypes.data), 64, fr.out) == -1


def test_make_round_floor_from_python_keeps_its_state():
    run = bench.make_round("floor-7.0", 16)
    fr, packed = run.floor
    assert cell(run, "st") == int(packed.ctypes.data)
    assert packed.tolist()[:2] == [fr.sd.ctypes.data, fr.mem.ctypes.data]
    before = fr.g.copy()
    run(5)
    assert np.array_equal(fr.g, before)           # steady state: the round puts it back
    assert (fr.out > 0).all() and len(np.unique(fr.out)) == 16


# ---- reference counts in the loops' LLVM IR ----------------------------------------------------
def _loop_cases():
    st_ = bench.JitStack(64)
    out = np.zeros(4, np.int64)
    sa, c = bench.new_bench_cache(memory="8M")
    h, cid = sa.handle, c.id
    return {
        "jit_stack_loop_bulk": (bench.jit_stack_loop_bulk, (st_.stack, st_.top, 4, 2, out)),
        "jit_stack_loop_single": (bench.jit_stack_loop_single,
                                  (st_.stack, st_.top, 4, 2, out)),
        "ring_single_pair": (singlebench.ring_single_pair, (np.zeros((16, 2), np.int64), 16, 4, 2, 1)),
        "slab_loop_bulk": (bench.slab_loop_bulk, (h, cid, 4, 2, out)),
        "slab_loop_single": (bench.slab_loop_single, (h, cid, 4, 2, out)),
        "slab_loop_array": (bench.slab_loop_array, (h, cid, 4, 2, out, 0)),
        "slab_single_pair": (singlebench.slab_single_pair, (h, cid, 4, 2, 1)),
    }


#: :func:`_loop_cases`' names, written out: collecting them from it made an allocator when the
#: module was imported, so each worker of a cold suite compiled an allocator's boot at once
#: before its first test (9 s of CPU twice).
LOOPS = ("jit_stack_loop_bulk", "jit_stack_loop_single", "ring_single_pair", "slab_loop_bulk",
         "slab_loop_single", "slab_loop_array", "slab_single_pair")


@pytest.mark.parametrize("name", LOOPS)
def test_benchmark_loops_make_no_refcount_calls(name):
    """Every peer's and every numslab loop calls no NRT_incref/decref (or any other Numba
    runtime function) in its loops; the numslab loops reach the engine only through the
    unit table (indirect calls) and define none of its units."""
    cases = _loop_cases()
    assert tuple(cases) == LOOPS
    func, args = cases[name]
    ir, fname = coldstart.fresh_llvm(func, *args)
    calls = coldstart.loop_calls(ir, fname)
    assert [c for c in calls if c.startswith("NRT_")] == []
    assert coldstart.units_defined(ir) == []
    if name.startswith("slab"):
        assert "<indirect>" in calls and "numslab_units" in ir


# ---- the public API and a user's simulation ---------------------------------------------------


# ---- fresh interpreters -----------------------------------------------------------------------


@pytest.mark.parametrize("random", [True, False])
def test_new_bench_cache_switches_freelist_randomisation(random):
    sa, c = bench.new_bench_cache(memory="8M", random=random)
    assert sa.freelist_random is random and (c.random_seq is not None) == random
    out = np.zeros(64, np.int64)
    bench.slab_loop_array(sa.handle, c.id, 64, 1, out, numslab.SLAB_ARRAY_ALLOC_NEW)
    assert c.stats["alloc_array_new"] == 64 and c.live_objects == 0
    assert sorted(out.tolist()) != out.tolist() if random else (np.diff(out) > 0).all()
    sa.validate()


@pytest.mark.parametrize("hardened", [True, False])
def test_new_bench_cache_switches_freelist_hardening(hardened):
    from numslab.engine.layout import CA_FP_KEY
    sa, c = bench.new_bench_cache(memory="8M", hardened=hardened)
    assert sa.freelist_hardened is hardened
    assert (sa.state.ca[c.id, CA_FP_KEY] != 0) == hardened
    out = np.zeros(64, np.int64)
    bench.slab_loop_bulk(sa.handle, c.id, 64, 3, out)       # the loop runs either way
    assert c.live_objects == 0
    sa.validate()


def test_the_jitted_stack_peer_gives_back_only_what_it_took():
    # a stack shorter than the batch: nothing taken, so nothing pushed (it pushed the out
    # array's words and moved the top past the stack's end)
    stack, out = np.arange(100, 108, dtype=np.int64), np.full(16, -5, np.int64)
    top = np.array([8], np.int64)
    bench.jit_stack_loop_bulk(stack, top, 16, 3, out)
    assert top[0] == 8 and (stack == np.arange(100, 108)).all() and (out == -5).all()
    bench.jit_stack_loop_bulk(stack, top, 4, 3, out)      # a round that fits: a no-op pair
    assert top[0] == 8 and (stack == np.arange(100, 108)).all()
    assert (out[:4] == np.arange(104, 108)).all()
