"""A slab_debug cache's batches as the kernel runs them: ``kmem_cache_free_bulk`` and
``kfree_bulk`` by ``build_detached_freelist``'s chains through ``free_debug_processing``
(each slab's free list in the kernel's chain order; a refused chain stays allocated and the
rest go on), and SLAB_TRACE's ``trace()`` line for every object of every batch path."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import numslab
from numslab import SLAB_TRACE as T
from numslab.engine.layout import CA_FP_KEY, CA_OFFSET, G_NREPORTS

KERNELS = ("7.0", "7.1", "6.18")
GFP = numslab.GFP_KERNEL


def slab_of(sa, a):
    return int(a) >> 12         # order-0 slabs in these caches


def walk(sa, c, slab):
    """``slab``'s free list, head first (free pointers read from the arena)."""
    key = int(sa.state.ca[c.id, CA_FP_KEY]) & (1 << 64) - 1
    off = int(sa.state.ca[c.id, CA_OFFSET])
    out, a = [], int(sa.state.sl_freelist[slab])
    while a:
        out.append(a)
        w = a + off
        raw = int.from_bytes(bytes(sa.memory[w:w + 8]), "little")
        if key:                     # CONFIG_SLAB_FREELIST_HARDENED: key ^ swab(address)
            raw ^= key ^ int.from_bytes(w.to_bytes(8, "little"), "big")
        a = raw
        assert len(out) <= 64
    return out


def kernel_chains(sa, objs):
    """A Python oracle of ``__kmem_cache_free_bulk``: ``build_detached_freelist`` rounds over
    ``objs`` (last element first, lookahead of three mismatches, matches swapped down), as
    (slab, chain from head to tail), and the array as the kernel leaves it."""
    p, size, chains = [int(a) for a in objs], len(objs), []
    while size:
        size -= 1
        target, end, same, look = slab_of(sa, p[size]), size + 1, size, 3
        while size:
            size -= 1
            if slab_of(sa, p[size]) == target:
                same -= 1
                p[size], p[same] = p[same], p[size]
                continue
            look -= 1
            if not look:
                break
        chains.append((target, p[same:end]))   # freelist = the last match ... tail
        size = same
    return chains, p


def setup(kernel, flags="FZP", n=120):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, slab_debug=flags)
    c = sa.kmem_cache_create("dbg", 200)
    out = np.zeros(n, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP, n, out) == n
    return sa, c, out


def batch(out, rng):
    """Most objects, mixed across slabs; every slab keeps a few (no slab is discarded)."""
    keep = np.append(out[::5], out[-1])
    return rng.permutation(np.setdiff1d(out, keep)).astype(np.int64)


@pytest.mark.parametrize("call", ["kmem_cache_free_bulk", "kfree_bulk"])
def test_free_lists_end_in_the_kernels_chain_order(kernel, call):
    sa, c, out = setup(kernel)
    arr = batch(out, np.random.default_rng(3))
    slabs = {slab_of(sa, a) for a in out}
    expect = {s: walk(sa, c, s) for s in slabs}
    chains, permuted = kernel_chains(sa, arr)
    assert any(len(ch) > 1 for _, ch in chains)
    for s, ch in chains:                   # free_to_partial_list: head ... tail -> prior
        expect[s] = ch + expect[s]
    if call == "kfree_bulk":
        sa.kfree_bulk(len(arr), arr)
    else:
        sa.kmem_cache_free_bulk(c, len(arr), arr)
    assert arr.tolist() == permuted
    assert {s: walk(sa, c, s) for s in slabs} == expect
    assert c.live_objects == len(out) - len(arr)
    sa.validate()
    assert sa.kmem_cache_validate(c) == 0


def test_a_refused_chain_stays_allocated_and_the_others_are_freed(kernel):
    sa, c, out = setup(kernel)
    arr = batch(out, np.random.default_rng(5))
    chains, _ = kernel_chains(sa, arr)
    slab, chain = next((s, ch) for s, ch in chains[1:] if len(ch) >= 3)
    bad = chain[1]                              # its head passes, its second fails
    sa.memory[bad + 200] = 7                    # overflow into the right red zone
    with pytest.raises(numslab.SlabDebugError, match="Right Redzone") as e:
        sa.kmem_cache_free_bulk(c, len(arr), arr)
    assert any(f"Object at {bad:#x} not freed" in r for r in e.value.reports)
    live = {int(a) for a in c.live_addresses()}
    assert set(chain) <= live                               # the whole chain refused
    assert live - set(chain) == set(np.setdiff1d(out, arr).tolist())   # the rest freed
    # free_debug_processing's init_object ran on the objects before the failing one
    assert (sa.memory[chain[0] + 200:chain[0] + 208] == 0xbb).all()
    assert (sa.memory[bad + 200:bad + 208] == 0xcc).all()   # restored, still active
    assert (sa.memory[chain[2] + 200:chain[2] + 208] == 0xcc).all()
    sa.validate()


@pytest.mark.parametrize("call", ["kmem_cache_free_bulk", "kfree_bulk"])
def test_a_batch_with_refused_chains_names_every_object_left_allocated(kernel, call):
    """Two chains refused (a red zone overwritten in each): the error named only the first
    refused object, though both chains stay allocated, held by no one. Its ``objects`` now
    lists them all, and freeing them as its text says (one by one, again where a check
    refuses the first free: the objects marked free ahead of the failing ones) frees every
    one."""
    sa, c, out = setup(kernel)
    arr = batch(out, np.random.default_rng(11))
    chains, _ = kernel_chains(sa, arr)
    picked = [ch for _, ch in chains if len(ch) >= 3][:2]
    assert len(picked) == 2
    for ch in picked:
        sa.memory[ch[1] + 200] = 7              # past the chain's second object
    with pytest.raises(numslab.SlabDebugError, match=r"2 objects stay allocated|"
                       rf"{sum(map(len, picked))} of the batch's {len(arr)} objects") as e:
        if call == "kfree_bulk":
            sa.kfree_bulk(len(arr), arr)
        else:
            sa.kmem_cache_free_bulk(c, len(arr), arr)
    held = e.value.objects.tolist()
    assert sorted(held) == sorted(a for ch in picked for a in ch)
    live = set(c.live_addresses().tolist())
    assert live == set(held) | set(np.setdiff1d(out, arr).tolist())
    twice = []
    for a in held:
        try:
            sa.kmem_cache_free(c, a)
        except numslab.SlabDebugError:
            twice.append(a)
            sa.kmem_cache_free(c, a)
    assert sorted(twice) == sorted(ch[0] for ch in picked)
    assert set(c.live_addresses().tolist()) == set(np.setdiff1d(out, arr).tolist())
    sa.validate()


def test_a_bad_address_refuses_the_whole_batch(kernel):
    from conftest import assert_unchanged, snapshot
    sa, c, out = setup(kernel)
    arr = batch(out, np.random.default_rng(7))
    sa.kmem_cache_free(c, int(arr[10]))
    snap = snapshot(sa)
    with pytest.raises(numslab.DoubleFreeError, match="element 10"):
        sa.kmem_cache_free_bulk(c, len(arr), arr.copy())
    assert_unchanged(sa, snap)


def test_an_object_twice_in_a_debug_batch_is_named_so(kernel):
    """A debug cache's batch (``free_bulk_checked``, which ``kfree_bulk`` takes too while
    debug caches exist) naming one live object twice is refused by its check with the
    engine's own code, from Python and inside ``@njit`` alike, with no "Object already free"
    report (the object is not free) and nothing changed; an object free before the call is
    still refused as already free, with the kernel's report."""
    from conftest import assert_unchanged, snapshot
    from test_bulk import jit_free, jit_kfree, twice_text
    sa, c, out = setup(kernel)
    arr = batch(out, np.random.default_rng(7))
    arr[40] = addr = int(arr[10])
    snap = snapshot(sa)
    seen = int(sa.state.g[G_NREPORTS])
    n = len(arr)
    for call, head in ((lambda a: sa.kmem_cache_free_bulk(c, n, a),
                        r"^kmem_cache_free_bulk\(dbg\)"),
                       (lambda a: sa.kfree_bulk(n, a), "^kfree_bulk"),
                       (lambda a: jit_free(sa.handle, c.id, n, a), "jit"),
                       (lambda a: jit_kfree(sa.handle, n, a), "jit")):
        a = arr.copy()
        with pytest.raises(numslab.DoubleFreeError, match=twice_text(head, 40, 10, addr, c)):
            call(a)
        assert (a == arr).all()
        assert_unchanged(sa, snap)
        assert int(sa.state.g[G_NREPORTS]) == seen
    sa.kmem_cache_free(c, addr)
    with pytest.raises(numslab.DoubleFreeError, match=r"element 10 of the batch\)$"):
        jit_free(sa.handle, c.id, n, arr.copy())
    assert any("Object already free" in r for r in sa.slab_reports()[-2:])


# ---- SLAB_TRACE ------------------------------------------------------------------------------
def traces(caplog):
    out = [r.getMessage() for r in caplog.records if r.getMessage().startswith("TRACE")]
    caplog.clear()
    return out


def twins(kernel):
    """Two identical allocators with a T cache (one for the batch, one for single calls)."""
    out = []
    for _ in range(2):
        sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, seed=1,
                                  freelist_random=False)
        out.append((sa, sa.kmem_cache_create("tr", 200, flags=T)))
    return out


@pytest.mark.parametrize("how", ["bulk", "array", "prefill"])
def test_batch_allocations_trace_each_object_as_single_allocations_do(kernel, how, caplog):
    (sa, c), (sb, d) = twins(kernel)
    pre = np.zeros(7, np.int64)              # a partial slab to start from
    with caplog.at_level(logging.INFO, logger="numslab"):
        for s, x in ((sa, c), (sb, d)):
            assert s.kmem_cache_alloc_bulk(x, GFP, 7, pre) == 7
            s.kmem_cache_free(x, int(pre[3]))
        traces(caplog)
        out = np.zeros(30, np.int64)
        if how == "bulk":
            assert sa.kmem_cache_alloc_bulk(c, GFP, 30, out) == 30
        elif how == "array":
            assert sa.kmem_cache_alloc_array(c, GFP, 30, out) == 30
        else:
            sheaf = sa.kmem_cache_prefill_sheaf(c, GFP, 30)
            out[:] = [sa.kmem_cache_alloc_from_sheaf(c, GFP, sheaf) for _ in range(30)][::-1]
        batch_lines = traces(caplog)
        if how == "prefill":                # the twin kmallocs the sheaf's struct too
            sb.kmalloc(32 + 8 * 30)
        single = [sb.kmem_cache_alloc(d) for _ in range(30)]
        single_lines = traces(caplog)
    assert out.tolist() == single
    assert len(batch_lines) == 30
    assert batch_lines == single_lines


def free_oracle(sa, chains, name="tr"):
    """``trace()``'s lines for chains freed by ``free_to_partial_list``: each chain's objects
    from its head, with the slab's inuse and freelist before the chain."""
    st = sa.state
    slab = {s: (int(st.sl_inuse[s]), int(st.sl_freelist[s])) for s, _ in chains}
    lines = []
    for s, ch in chains:
        inuse, fp = slab[s]
        lines += [f"TRACE {name} free {a:#x} inuse={inuse} fp={fp:#x}" for a in ch]
        slab[s] = (inuse - len(ch), ch[0])
    return lines


@pytest.mark.parametrize("call", ["kmem_cache_free_bulk", "kfree_bulk",
                                  "kmem_cache_free_array", "return_sheaf"])
def test_batch_frees_trace_each_chain_as_free_debug_processing_does(kernel, call, caplog):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("tr", 200, flags=T)
    out = np.zeros(60, np.int64)
    with caplog.at_level(logging.INFO, logger="numslab"):
        if call == "return_sheaf":
            sheaf = sa.kmem_cache_prefill_sheaf(c, GFP, 60)
            arr = np.array(sa._sheaf_objects(sheaf, 0), np.int64)
            keep = [sa.kmem_cache_alloc_from_sheaf(c, GFP, sheaf) for _ in range(9)]
            arr = arr[:len(arr) - len(keep)]
        else:
            assert sa.kmem_cache_alloc_bulk(c, GFP, 60, out) == 60
            arr = batch(out, np.random.default_rng(11))
        chains, _ = kernel_chains(sa, arr)
        expect = free_oracle(sa, chains)
        traces(caplog)
        if call == "return_sheaf":
            sa.kmem_cache_return_sheaf(c, GFP, sheaf)
        elif call == "kfree_bulk":
            sa.kfree_bulk(len(arr), arr)
        else:
            getattr(sa, call)(c, len(arr), arr)
        lines = traces(caplog)
    assert any(len(ch) > 1 for _, ch in chains)
    assert len(lines) == len(arr)
    assert lines == expect


def test_a_refused_chain_is_traced_up_to_its_failing_object(kernel, caplog):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, slab_debug="FZT")
    c = sa.kmem_cache_create("tr", 200)
    out = np.zeros(60, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, GFP, 60, out) == 60
    arr = batch(out, np.random.default_rng(13))
    chains, _ = kernel_chains(sa, arr)
    k = next(i for i, (_, ch) in enumerate(chains) if i and len(ch) >= 3)
    bad = chains[k][1][1]
    sa.memory[bad + 200] = 7
    expect = free_oracle(sa, chains[:k])
    inuse, fp = (int(sa.state.sl_inuse[chains[k][0]]), int(sa.state.sl_freelist[chains[k][0]]))
    if any(s == chains[k][0] for s, _ in chains[:k]):
        pytest.skip("the refused chain's slab was freed to before")   # pragma: no cover
    expect.append(f"TRACE tr free {chains[k][1][0]:#x} inuse={inuse} fp={fp:#x}")
    rest = [(s, ch) for s, ch in chains[k + 1:]]
    with caplog.at_level(logging.INFO, logger="numslab"):
        traces(caplog)
        with pytest.raises(numslab.SlabDebugError):
            sa.kmem_cache_free_bulk(c, len(arr), arr)
        lines = traces(caplog)
    assert lines[:len(expect)] == expect
    assert len(lines) == len(expect) + sum(len(ch) for _, ch in rest)


def test_a_growing_refill_traces_the_new_sheaf_then_the_old_ones_flush(kernel, caplog):
    (sa, c), (sb, d) = twins(kernel)
    with caplog.at_level(logging.INFO, logger="numslab"):
        sheaf = sa.kmem_cache_prefill_sheaf(c, GFP, 10)
        sa.kmem_cache_alloc_from_sheaf(c, GFP, sheaf)
        old = sa._sheaf_objects(sheaf, 0)
        other = sb.kmem_cache_prefill_sheaf(d, GFP, 10)
        sb.kmem_cache_alloc_from_sheaf(d, GFP, other)
        traces(caplog)
        new = sa.kmem_cache_refill_sheaf(c, GFP, sheaf, 30)
        lines = traces(caplog)
        grown = sb.kmem_cache_prefill_sheaf(d, GFP, 30)     # the twin, in two calls
        sb.kmem_cache_return_sheaf(d, GFP, other)
        twin = traces(caplog)
    assert new and new != sheaf
    assert len(lines) == 30 + len(old)
    assert lines == twin
    assert sa._sheaf_objects(new, 0) == sb._sheaf_objects(grown, 0)


@pytest.mark.parametrize("call", ["kmem_cache_free_bulk", "return_sheaf"])
def test_free_slowpath_counts_as_each_generation_does(kernel, call):
    """7.0: ``slab_free_bulk`` counts each chain's objects, ``__kmem_cache_free_bulk`` (a
    sheaf's flush) none; 6.18: ``__slab_free`` counts one per chain either way."""
    sa, c, out = setup(kernel, "F", n=60)
    if call == "return_sheaf":
        sa.kmem_cache_free_bulk(c, len(out), out)
        sheaf = sa.kmem_cache_prefill_sheaf(c, GFP, 40)
        arr = sa._sheaf_objects(sheaf, 0)
    else:
        arr = batch(out, np.random.default_rng(17))
    chains, _ = kernel_chains(sa, arr)
    before = c.stats.get("free_slowpath", 0)
    if call == "return_sheaf":
        sa.kmem_cache_return_sheaf(c, GFP, sheaf)
    else:
        sa.kmem_cache_free_bulk(c, len(arr), arr)
    got = c.stats.get("free_slowpath", 0) - before
    if kernel == "6.18":
        assert got == len(chains)
    else:
        assert got == (len(arr) if call == "kmem_cache_free_bulk" else 0)


@pytest.mark.parametrize("debug", ["FZPU", "FZPUT"])
@pytest.mark.parametrize("how", ["return", "refill"])
def test_a_sheaf_whose_flush_a_check_refuses_says_which_objects_stay_held(kernel, how, debug):
    """A prefilled sheaf of a debug cache given back (or replaced by a larger one in a refill)
    with a red zone overwritten: the refused chain stays allocated, and the call says so
    (``SlabDebugError`` with those objects) instead of leaking them silently, held by no
    user (a later destroy then refused with ``CacheLeakError``)."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M", kernel=kernel, slab_debug=debug)
    c = sa.kmem_cache_create("d", 96)
    sheaf = sa.kmem_cache_prefill_sheaf(c, GFP, 5)
    objs = sa._sheaf_objects(sheaf, 0)
    sa.memory[objs[2] + 96] = 1             # a write past an object the sheaf holds
    with pytest.raises(numslab.SlabDebugError, match=rf"{objs[2]:#x}") as e:
        if how == "return":
            sa.kmem_cache_return_sheaf(c, GFP, sheaf)
        else:
            sa.kmem_cache_refill_sheaf(c, GFP, sheaf, 300)
    held = e.value.objects.tolist()
    assert objs[2] in held and set(held) <= set(objs)
    assert sorted(held) == sorted(c.live_addresses().tolist())
    assert not sa.state.ca[c.id, numslab.engine.layout.CA_USER_SHEAVES]   # no sheaf left
    for a in held:                          # the first free restores, the second frees
        for _ in range(2):
            try:
                sa.kmem_cache_free(c, a)
                break
            except numslab.SlabDebugError:
                pass
    assert len(c) == 0
    sa.kmem_cache_destroy(c)
    sa.validate()


def test_a_refill_that_meets_a_corrupted_free_pointer_and_a_refused_flush_leaks_nothing(
        kernel):
    """A refill that grew a debug cache's sheaf met a corrupted free pointer filling the new
    one (the fault: the new sheaf goes back, the call raises) after the old one's flush had
    a chain refused (a red zone overwritten): the error did not name the refused objects,
    left allocated and held by no sheaf. It names them now (its ``objects``)."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=kernel, slab_debug="FZ",
                               freelist_random=False)
    c = sa.kmem_cache_create("d", 96)
    sheaf = sa.kmem_cache_prefill_sheaf(c, GFP, 3)
    held = sa._sheaf_objects(sheaf, 0)
    objs = [c.alloc() for _ in range(60)]
    slab = objs[-20] >> 12
    mine = [a for a in objs if a >> 12 == slab]
    for a in mine[1:4]:
        c.free(a)
    sa.memory[mine[2] + c.offset:mine[2] + c.offset + 8] = 0x77    # into freed memory
    sa.memory[held[1] + 96] = 1             # past an object the sheaf holds
    with pytest.raises(numslab.SlabDebugError, match="Freepointer corrupt") as e:
        sa.kmem_cache_refill_sheaf(c, GFP, sheaf, 40)
    left = e.value.objects.tolist()
    assert sorted(left) == sorted(held)
    assert sorted(c.live_addresses().tolist()) == sorted(set(objs) - set(mine[1:4]) | set(left))
    assert not sa.state.ca[c.id, numslab.engine.layout.CA_USER_SHEAVES]
