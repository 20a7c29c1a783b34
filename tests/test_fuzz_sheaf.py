"""A fuzzer of the prefilled-sheaf API (issue 13) with a shadow model: random sequences of
``kmem_cache_prefill_sheaf``, ``_alloc_from_sheaf``, ``_refill_sheaf``, ``_return_sheaf`` and
``kmem_cache_sheaf_size`` calls, good and bad (handles that are no sheaf, a returned sheaf, a
CPU's own sheaf, another cache's sheaf, impossible sizes, wrong types), on every generation
(``tests/test_prefill.py`` has one for ``next``'s barn refill, whose partial sheaf the calls
here seldom reach).
Every refusal is a ``SlabError`` that changes nothing; the allocator agrees with the model
about every held sheaf's size and every live object; every invariant holds after every step."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numslab
from numslab import GFP_KERNEL
from numslab.engine.layout import CA_USER_SHEAVES

from conftest import assert_unchanged, snapshot

KERNELS = ("7.0", "7.1", "7.3", "next", "6.18")
BAD_SIZES = [-1, 2 ** 21, 2 ** 61, 1.5, True, "3", None]

OPS = st.lists(st.tuples(st.sampled_from(["prefill", "alloc", "refill", "return", "free",
                                           "size", "bad_handle", "bad_size", "foreign",
                                           "cpu_sheaf", "stale"]),
                         st.integers(0, 10 ** 6), st.sampled_from(BAD_SIZES)),
               min_size=5, max_size=40)


@settings(max_examples=30, deadline=None)
@given(ops=OPS, kernel=st.sampled_from(KERNELS))
def test_random_sheaf_calls_agree_with_a_model(ops, kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("s", 96, sheaf_capacity=8)
    d = sa.kmem_cache_create("t", 96, sheaf_capacity=8)
    held: dict[int, int] = {}            # the model: sheaf -> objects it holds
    live: set[int] = set()               # objects the user holds
    stale: list[int] = []                # sheaves given back or replaced
    dsheaf = sa.kmem_cache_prefill_sheaf(d, GFP_KERNEL, 3)
    for op, n, bad in ops:
        snap = snapshot(sa)
        mine = sorted(held)
        if op == "prefill":
            s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, n % 20)
            if n % 20 == 0 and kernel != "6.18":     # 7.0: a prefill of 0 objects is NULL
                assert s == 0
                assert_unchanged(sa, snap)
                continue
            assert s and s not in held and sa.kmem_cache_sheaf_size(s) >= n % 20
            held[s] = sa.kmem_cache_sheaf_size(s)
        elif op == "alloc" and mine:
            s = mine[n % len(mine)]
            a = sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s)
            if held[s]:
                assert a and a not in live
                live.add(a)
                held[s] -= 1
            else:
                assert a == 0
                assert_unchanged(sa, snap)
        elif op == "refill" and mine:
            s = mine[n % len(mine)]
            new = sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, n % 24)
            assert new and sa.kmem_cache_sheaf_size(new) >= max(n % 24, held[s])
            del held[s]
            if new != s:
                stale.append(s)
            held[new] = sa.kmem_cache_sheaf_size(new)
        elif op == "return" and mine:
            s = mine[n % len(mine)]
            sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s)
            del held[s]
            stale.append(s)
        elif op == "free" and live:
            a = sorted(live)[n % len(live)]
            c.free(a)
            live.remove(a)
        elif op == "size":
            for s, k in held.items():
                assert sa.kmem_cache_sheaf_size(s) == k
        elif op in ("bad_handle", "foreign", "cpu_sheaf", "stale"):
            # the sheaves the allocator holds for its CPUs and barns (not the user's)
            own = [x for x in sa.sheaf_addresses().tolist() if x not in held and x != dsheaf]
            s = {"bad_handle": 8 * (n % 500000) + 8 if n % 3 else bad,
                 "foreign": dsheaf,
                 "cpu_sheaf": own[n % len(own)] if own else 24,
                 "stale": stale[n % len(stale)] if stale else 40}[op]
            if s in held:
                continue
            call = [lambda: sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s),
                    lambda: sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, s, 4),
                    lambda: sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s),
                    lambda: sa.kmem_cache_sheaf_size(s)][n % 4]
            if op == "foreign" and n % 4 == 3:
                continue                 # the size of d's own sheaf is a fair question
            with pytest.raises((numslab.SlabError, TypeError)):
                call()
            assert_unchanged(sa, snap)
        elif op == "bad_size":
            call = [lambda: sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, bad),
                    lambda: sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, mine[0], bad)
                    if mine else sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, bad)][n % 2]
            with pytest.raises((numslab.SlabError, TypeError)):
                call()
            assert_unchanged(sa, snap)
        sa.validate()
        assert set(c.live_addresses().tolist()) == live
        assert {s: sa.kmem_cache_sheaf_size(s) for s in held} == held
    for s in list(held):
        sa.kmem_cache_return_sheaf(c, GFP_KERNEL, s)
    sa.kmem_cache_return_sheaf(d, GFP_KERNEL, dsheaf)
    for a in live:
        c.free(a)
    assert len(c) == 0 and len(d) == 0
    sa.validate()



@pytest.mark.parametrize("debug", [None, "F"])
@pytest.mark.parametrize("how", ["prefill", "refill", "grow"])
def test_a_sheaf_filled_past_a_corrupted_free_pointer_raises_and_hands_out_nothing(
        kernel, how, debug):
    """A prefill (or a refill) that met a corrupted free pointer isolated the slab, went on
    with other slabs and returned the sheaf without a word, leaving the fault register set:
    a later call then raised it (an empty prefilled sheaf's ``alloc_from_sheaf`` raised a
    SlabCorruptionError instead of returning 0). Now the call raises it, having handed out
    nothing: a new sheaf goes back, one refilled in place stays the caller's."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=kernel, slab_debug=debug,
                               freelist_random=False)
    c = sa.kmem_cache_create("s", 96, sheaf_capacity=8)
    # (a slab_debug cache's prefilled sheaves are oversize, as large as asked: prefilled with 6,
    # a refill to 6 is in place; a grow asks for more than the sheaf holds, whatever its size)
    held = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 6 if how == "refill" else 1) \
        if how != "prefill" else 0
    while held and sa.kmem_cache_sheaf_size(held):      # (emptied: a refill in place)
        sa.kmem_cache_free(c, sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, held))
    target = sa.sheaf_capacity_of(held) + 8 if how == "grow" else 6
    assert how != "refill" or sa.sheaf_capacity_of(held) >= target
    objs = [sa.kmem_cache_alloc(c) for _ in range(6)]
    sa.kmem_cache_shrink(c)
    slab = objs[0] >> 12
    mine = [a for a in objs if a >> 12 == slab]
    for a in mine[1:4]:
        sa.kmem_cache_free(c, a)
    sa.kmem_cache_shrink(c)                 # on the slab's free list, not in a sheaf
    bad = mine[2]
    sa.memory[bad + c.offset:bad + c.offset + 8] = 0x77     # a write into freed memory
    before = len(c)
    with pytest.raises(numslab.SlabCorruptionError, match="Freepointer corrupt") as e:
        if how == "prefill":
            sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 6)
        else:
            sa.kmem_cache_refill_sheaf(c, GFP_KERNEL, held, target)
    assert sa.isolated_slabs().tolist() == [slab << 12]
    assert len(c) == before
    if how == "refill" or "stays yours" in str(e.value):   # (a grow that got no new one)
        assert f"the sheaf at {held:#x} stays yours" in str(e.value)
        sa.kmem_cache_return_sheaf(c, GFP_KERNEL, held)
    assert not sa.state.ca[c.id, CA_USER_SHEAVES]   # a new sheaf went back
    s = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 1)  # no stale fault raised later
    while sa.kmem_cache_sheaf_size(s):
        assert sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s)
    assert sa.kmem_cache_alloc_from_sheaf(c, GFP_KERNEL, s) == 0
    sa.validate()
