"""The kmalloc API's array forms and size roundup (``facade/kmallocapi.py``), against the
kernel's ``include/linux/slab.h`` and ``mm/slab_common.c``."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab.flags import GFP_KERNEL
from numslab.geometry import KMALLOC_MAX_SIZE, KMALLOC_SIZES, PAGE_SIZE

from conftest import assert_unchanged, snapshot

KERNELS = ("7.0", "6.18")


def _naive_roundup(size: int) -> int:
    """``kmalloc_size_roundup`` written from the kernel's rule, as a test oracle: the smallest
    kmalloc class holding ``size``; above 8 KiB the smallest power-of-two number of pages;
    0 and sizes past KMALLOC_MAX_SIZE unchanged."""
    if size == 0 or size > KMALLOC_MAX_SIZE:
        return size
    for s in KMALLOC_SIZES:
        if size <= s:
            return s
    pages = 1
    while pages * PAGE_SIZE < size:
        pages *= 2
    return pages * PAGE_SIZE


@pytest.mark.parametrize("size", [0, 1, 8, 9, 64, 65, 96, 97, 128, 129, 192, 193, 256, 257,
                                  4096, 8191, 8192, 8193, 12288, 16385, KMALLOC_MAX_SIZE,
                                  KMALLOC_MAX_SIZE + 1, 1 << 40])
def test_kmalloc_size_roundup_is_the_kernels_rule(size):
    assert numslab.kmalloc_size_roundup(size) == _naive_roundup(size)
    assert numslab.kmalloc_size_roundup(np.int64(size)) == _naive_roundup(size)


def test_kmalloc_size_roundup_is_what_kmalloc_gives(sa):
    for size in (1, 24, 72, 100, 200, 700, 3000, 5000, 8192, 8193, 20000, 70000):
        a = sa.kmalloc(size)
        assert sa.ksize(a) == sa.kmalloc_size_roundup(size) == _naive_roundup(size), size
        sa.kfree(a)


@pytest.mark.parametrize("bad", [-1, 1 << 64, 2.0, "8", True, None])
def test_kmalloc_size_roundup_refuses_what_is_not_a_size(bad):
    with pytest.raises(numslab.InvalidSizeError, match="kmalloc_size_roundup: size"):
        numslab.kmalloc_size_roundup(bad)


def test_kmalloc_array_allocates_the_product(sa):
    a = sa.kmalloc_array(10, 12)                    # 120 bytes: kmalloc-128
    assert sa.ksize(a) == 128
    b = sa.kmalloc_array(np.int64(3), np.uint32(4096))     # 12 KiB: whole pages
    assert sa.ksize(b) == 4 * PAGE_SIZE
    assert sa.kmalloc_array(0, 100) == numslab.ZERO_SIZE_PTR == sa.kmalloc_array(7, 0)
    sa.kfree(a)
    sa.kfree(b)


def test_kcalloc_zeroes_what_the_memory_held_before(sa):
    a = sa.kmalloc(120)
    sa.memory[a:a + 128] = 0xAB
    sa.kfree(a)
    b = sa.kcalloc(15, 8)                           # the same kmalloc-128 object again
    assert b == a
    assert not sa.memory[b:b + 120].any()
    sa.kfree(b)


def test_kcalloc_on_a_node(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=2, memory="32M", kernel=kernel)
    a = sa.kcalloc(4, 16, node=1)
    assert sa.page_to_nid(a) == 1
    sa.kfree(a)
    sa.validate()


def test_krealloc_array_keeps_the_contents(sa):
    a = sa.kmalloc_array(4, 8)
    sa.memory[a:a + 32] = np.arange(32)
    b = sa.krealloc_array(a, 40, 8)                 # 320 bytes: moves to kmalloc-512
    assert b != a and sa.ksize(b) == 512
    assert list(sa.memory[b:b + 32]) == list(range(32))
    assert sa.krealloc_array(b, 0, 8) == numslab.ZERO_SIZE_PTR     # 0 bytes: kfree
    with pytest.raises(numslab.DoubleFreeError):
        sa.kfree(b)


@pytest.mark.parametrize("fn", ["kmalloc_array", "kcalloc"])
@pytest.mark.parametrize("n, size, match", [
    (-1, 8, "element count -1 is not a size"),
    (8, -1, "element size -1 is not a size"),
    (True, 8, "element count True is not a size"),
    (4, 2.0, "element size 2.0 is not a size"),
    (1 << 63, 2, "overflow size_t"),                # the kernel's check_mul_overflow: NULL
    (1 << 32, 1 << 32, "overflow size_t"),
    (1 << 20, 5, "5242880 bytes"),                  # past KMALLOC_MAX_SIZE
])
def test_an_impossible_array_is_refused_with_nothing_changed(sa, fn, n, size, match):
    keep = sa.kmalloc(64)
    before = snapshot(sa)
    with pytest.raises(numslab.InvalidSizeError, match=f"{fn}: .*{match}"):
        getattr(sa, fn)(n, size)
    assert_unchanged(sa, before)
    sa.kfree(keep)


def test_krealloc_array_refuses_an_overflow_before_anything_changes(sa):
    a = sa.kmalloc(64)
    before = snapshot(sa)
    with pytest.raises(numslab.InvalidSizeError, match="krealloc_array: .*overflow size_t"):
        sa.krealloc_array(a, 1 << 62, 8)
    assert_unchanged(sa, before)
    sa.kfree(a)


@pytest.mark.parametrize("fn", ["krealloc", "krealloc_array"])
def test_a_krealloc_to_nothing_of_a_bad_address_names_the_call(sa, fn):
    # a size of 0 frees, through kfree, whose name its errors gave ("kfree: 0x3039 ...")
    a = sa.kmalloc(64)
    sa.kfree(a)
    before = snapshot(sa)
    call = (lambda p: sa.krealloc(p, 0)) if fn == "krealloc" else \
        (lambda p: sa.krealloc_array(p, 0, 64))
    with pytest.raises(numslab.DoubleFreeError, match=f"^{fn}: {a:#x}"):
        call(a)
    with pytest.raises(numslab.BadAddressError, match=f"^{fn}: 0x3039"):
        call(0x3039)
    assert_unchanged(sa, before)
    assert call(sa.kmalloc(64)) == numslab.ZERO_SIZE_PTR and call(0) == numslab.ZERO_SIZE_PTR


def test_kcalloc_checks_its_gfp(sa):
    with pytest.raises(numslab.InvalidArgumentError, match="kcalloc: gfp"):
        sa.kcalloc(2, 8, gfp=-1)


def test_the_module_level_forms_use_the_default_allocator():
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M")
    numslab.set_default_allocator(sa)
    try:
        a = numslab.kcalloc(3, 10, GFP_KERNEL)
        assert sa.ksize(a) == 32
        b = numslab.krealloc_array(a, 3, 20)
        assert sa.ksize(b) == 64
        numslab.kfree(b)
        assert numslab.kfree(numslab.kmalloc_array(2, 2)) is None
    finally:
        numslab.set_default_allocator(None)
    sa.validate()


@pytest.mark.parametrize("fn", ["kmalloc_array", "kcalloc"])
@pytest.mark.parametrize("kw, match", [({"cpu": 2}, "cpu 2 is not in 0..1"),
                                       ({"node": 1}, "node 1 is not -1 or in 0..0"),
                                       ({"node": True}, "node True"),
                                       ({"gfp": -1}, "gfp -1 is not a set of GFP flags")])
def test_an_array_calls_errors_name_it(sa, fn, kw, match):
    before = snapshot(sa)
    with pytest.raises(numslab.InvalidArgumentError, match=f"^{fn}: {match}"):
        getattr(sa, fn)(4, 16, **kw)
    assert_unchanged(sa, before)


def test_krealloc_arrays_errors_name_it(sa):
    a = sa.kmalloc(64)
    before = snapshot(sa)
    with pytest.raises(numslab.InvalidArgumentError, match="^krealloc_array: cpu 5"):
        sa.krealloc_array(a, 2, 64, cpu=5)
    with pytest.raises(numslab.BadAddressError, match="^krealloc_array: 0x3039"):
        sa.krealloc_array(0x3039, 2, 64)
    with pytest.raises(numslab.InvalidSizeError, match="^krealloc_array: 1 element of 4194305 "
                                                       "bytes"):
        sa.krealloc_array(a, 1, (4 << 20) + 1)
    assert_unchanged(sa, before)
    sa.kfree(a)


def test_krealloc_of_an_oversize_sheaf_is_refused_as_its_kfree(kernel):
    """A prefilled sheaf past the largest kmalloc class is a large kmalloc block of the
    allocator's own: ``kfree``, ``kfree_rcu`` and a growing ``krealloc`` refuse it, but a
    ``krealloc`` within its ``ksize`` returned it to the user as resized (with ``__GFP_ZERO``
    zeroing its bytes): ``ksize``'s large-block answer did not look at the mark. Refused now,
    nothing changed; ``ksize`` still answers."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel)
    c = sa.kmem_cache_create("p", 64, sheaf_capacity=8)
    sheaf = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 3000)
    addr = sheaf - sa.memory.size
    assert sa.find(addr)["kind"] == "sheaf"         # (find called it "large kmalloc")
    a = sa.kmalloc(3 << 20)                             # a user's large block is one
    assert sa.find(a)["kind"] == "large kmalloc"
    sa.kfree(a)
    snap = snapshot(sa)
    for size, gfp in ((100, GFP_KERNEL), (8, GFP_KERNEL | numslab.__GFP_ZERO), (1 << 20, 0)):
        with pytest.raises(numslab.BadAddressError, match=rf"krealloc: {addr:#x} is a sheaf "
                                                          rf"the allocator itself uses"):
            sa.krealloc(addr, size, gfp)
        assert_unchanged(sa, snap)
    assert sa.ksize(addr) == 4096 << int(sa.state.pg_order[addr >> 12])
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, sheaf)
    sa.validate()


def test_ksize_of_the_allocators_own_object_changes_nothing(kernel):
    """``ksize`` answers for a random sequence, a barn or a sheaf (the allocator's own kmalloc
    objects), but under slab_debug U it also stored their size as the whole object
    (``set_orig_size``): a user's call unguarded the red zone past the sequence's bytes.
    Nothing changes now; a user's object still has its size stored."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel, slab_debug="FZPU")
    c = sa.kmem_cache_create("x", 100)
    seq = int(sa.state.random_seq[c.id])
    snap = snapshot(sa)
    assert sa.ksize(seq) == sa.find(seq)["cache"].slab_ksize
    assert_unchanged(sa, snap)
    a = sa.kmalloc(100)
    k = sa.find(a)["cache"]
    assert sa._orig_size(k.id, a) == 100
    sa.ksize(a)
    assert sa._orig_size(k.id, a) == k.object_size
    sa.kfree(a)
    sa.validate()
