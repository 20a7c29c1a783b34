"""``numslab.bench``: the peers numslab is measured against (DequePool, NumpyStack, JitStack)
checked against a plain-Python free-list oracle, the numslab kernels of the benchmark loops
checked for leaks, and the timing helpers checked for shape only (never for speed: timings
are only required to be finite and positive)."""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numslab
from numslab.tools import bench
from numslab.flags import GFP_ATOMIC, SLAB_ARRAY_ALLOC_FULL_COUNT

SENTINEL = -7
PEERS = (bench.DequePool, bench.NumpyStack, bench.JitStack)


# ---- helpers ------------------------------------------------------------------------------
def free_indices(peer) -> list[int]:
    """The peer's free indices, bottom of its stack first (the next to go is last)."""
    if isinstance(peer, bench.DequePool):
        return [int(i) for i in peer.free_list]
    top = int(peer.top[0]) if isinstance(peer, bench.JitStack) else peer.top
    return [int(i) for i in peer.stack[:top]]


def buffer(peer, n: int):
    """An output buffer of ``n`` sentinels of the kind the peer takes (a list for the deque)."""
    if isinstance(peer, bench.DequePool):
        return [SENTINEL] * n
    return np.full(n, SENTINEL, np.int64)


def bulk_reversed(peer) -> bool:
    """True if the peer's ``alloc_bulk`` hands out the top of its stack first (the deque pops
    one by one); the array stacks copy the top ``n`` in stack order."""
    return isinstance(peer, bench.DequePool)


def is_finite_positive(x) -> bool:
    """A timing: a finite float above zero."""
    return isinstance(x, float) and math.isfinite(x) and x > 0


def cell(fn, name: str):
    """The value ``fn`` closes over under ``name`` (the allocator hidden in a closure)."""
    return fn.__closure__[fn.__code__.co_freevars.index(name)].cell_contents


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
    many.free_bulk(9, singles if isinstance(many, bench.DequePool)
                   else np.array(singles, np.int64))
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
    d = bench.DequePool(1)
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
KERNELS = [("bulk", False), ("sheaves", True), ("single", False)] + \
          [(m, False) for m in bench.ARRAY_MODES]


@pytest.mark.parametrize("kernel,sheaves", KERNELS, ids=[k for k, _ in KERNELS])
@pytest.mark.parametrize("bulk", [1, 16, 250])
def test_slab_kernel_frees_everything_it_allocates(kernel, sheaves, bulk):
    sa, c = bench.new_bench_cache(memory="16M", sheaves=sheaves)
    assert (c.object_size, c.objs_per_slab) == (bench.OBJECT_SIZE, 16)
    out = np.zeros(bulk, np.int64)
    h, cid = sa.handle, c.id
    if kernel in ("bulk", "sheaves"):
        bench.slab_loop_bulk(h, cid, bulk, 3, out)
    elif kernel == "single":
        bench.slab_loop_single(h, cid, bulk, 3, out)
    else:
        flags = bench.ARRAY_MODES[kernel] | SLAB_ARRAY_ALLOC_FULL_COUNT
        bench.slab_loop_array(h, cid, bulk, 3, out, flags)
    # the last round's objects were real, distinct and aligned to the 256-byte slots
    assert len(set(out.tolist())) == bulk and (out > 0).all()
    assert (out % bench.OBJECT_SIZE == 0).all()
    assert c.live_objects == 0
    assert (c.stats["alloc_cpu_sheaf"] > 0) == sheaves
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


def test_new_bench_cache_sheaves_serve_the_largest_bulk():
    sa, c = bench.new_bench_cache(nr_cpus=2, memory="16M", sheaves=True)
    assert sa.nr_cpus == 2 and c.name == "slab_bench_test"
    assert bench.SHEAF_CAPACITY >= max(bench.BULK_SIZES)
    out = np.zeros(max(bench.BULK_SIZES), np.int64)
    bench.slab_loop_bulk(sa.handle, c.id, len(out), 2, out)
    # the second round is served from the CPU's sheaf and freed back into it
    assert c.stats["alloc_cpu_sheaf"] >= len(out)
    assert c.stats["free_cpu_sheaf"] == 2 * len(out)
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
    if impl.startswith("jit-stack"):
        st_ = cell(run, "st")
        assert int(st_.top[0]) == 1 << 16
        assert sorted(free_indices(st_)) == list(range(1 << 16))


def test_make_round_stack_peers_give_everything_back():
    for impl in ("deque", "numpy-stack", "jit-stack"):
        run = bench.make_round(impl, 16)
        run(3)
        pool = cell(run, "pool" if impl == "deque" else "st")
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


# ---- the array stream ---------------------------------------------------------------------------
@pytest.mark.parametrize("inside_jit", [False, True], ids=["python", "jit"])
@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
@pytest.mark.parametrize("mode,slabs", [("new", 1), ("new", 2), ("partial", 1), ("partial", 2)])
def test_array_stream(mode, slabs, cold, inside_jit):
    stream = bench.array_stream(mode, slabs, 2, inside_jit=inside_jit, memory="8M", cold=cold)
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


# ---- the parts of a 4096 round ----------------------------------------------------------------
def test_slab_path_parts_shape():
    parts = bench.slab_path_parts(nr=64, rounds=2, repeat=1)
    assert tuple(parts) == bench.PARTS
    assert all(is_finite_positive(parts[k]) for k in bench.PARTS if k != "check")
    assert math.isfinite(parts["check"])        # a difference of two timings
    assert parts["parts"] == pytest.approx(parts["check"] + parts["mark"] + parts["detached"]
                                           + parts["pages"])


def test_parts_kernels_leave_the_allocator_as_they_found_it():
    from numslab.flags import SLAB_ARRAY_ALLOC_NEW
    sa, c = bench.new_bench_cache(memory="8M")
    h = sa.handle
    p = np.zeros(4 * c.objs_per_slab + 1, np.int64)
    got = sa.kmem_cache_alloc_array(c, GFP_ATOMIC, len(p), p, SLAB_ARRAY_ALLOC_NEW)
    assert got == 4 * c.objs_per_slab
    objs = set(p[:got].tolist())
    free_before = sa.free_pages_count() + sa.pcp_pages_count()
    bench._part_mark(h.state, p, got, 3)
    assert bench._part_check_mark(h.state, c.id, p, got, 3) == 0
    bench._part_detached(h.state, h.mem, c.id, p, got, 3)
    assert set(p[:got].tolist()) == objs                # permuted within itself
    pages = np.zeros(4, np.int64)
    bench._part_pages(h.state, c.order, pages, 3)
    assert len(set(pages.tolist())) == 4 and (pages > 0).all()
    assert sa.free_pages_count() + sa.pcp_pages_count() == free_before
    assert c.live_objects == got
    assert all(numslab.jit.is_live(h, c.id, int(a)) for a in p[:got])
    sa.validate()
    sa.kmem_cache_free_bulk(c, got, p)
    assert c.live_objects == 0
    sa.validate()


def test_part_check_mark_counts_failures():
    sa, c = bench.new_bench_cache(memory="8M")
    p = c.alloc_bulk(3)
    c.free(int(p[1]))                                   # now a double free in the batch
    assert bench._part_check_mark(sa.handle.state, c.id, p, 3, 2) == 2
    sa.validate()                                       # p[0] given back its live bit
    c.free_bulk(p[[0, 2]])
    assert c.live_objects == 0
    sa.validate()
