"""The cases of the kernel's ``lib/tests/slub_kunit.c`` that apply to numslab, mirrored step
by step with the kernel's expected error counts. The kernel counts ``slab_errors``: one per
report (``slab_err``, ``object_err``, a failed byte check) and per repair (``slab_fix``,
``restore_bytes``); numslab returns that count from ``kmem_cache_validate`` and keeps one
report per error in ``slab_reports()``."""
from __future__ import annotations

import pytest

import numslab
from numslab import GFP_KERNEL, SLAB_NO_MERGE, SLAB_POISON, SLAB_RED_ZONE, __GFP_ZERO

KERNELS = ("7.0", "7.1", "6.18")


@pytest.fixture
def sa(kernel):
    return numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)


def errors_of(sa, call, *args):
    """The reports (kernel errors) ``call(*args)`` added."""
    before = len(sa.slab_reports())
    try:
        call(*args)
    except numslab.SlabError:
        pass
    return len(sa.slab_reports()) - before


def test_clobber_zone(sa):
    s = sa.kmem_cache_create("TestSlub_RZ_alloc", 64, flags=SLAB_RED_ZONE)
    p = sa.kmem_cache_alloc(s)
    sa.memory[p + 64] = 0x12
    assert sa.kmem_cache_validate(s) == 2
    sa.kmem_cache_free(s, p)
    sa.kmem_cache_destroy(s)


def test_next_pointer(sa):
    s = sa.kmem_cache_create("TestSlub_next_ptr_free", 64, flags=SLAB_POISON)
    p = sa.kmem_cache_alloc(s)
    sa.kmem_cache_free(s, p)
    ptr_addr = p + s.offset
    tmp = sa.memory[ptr_addr:ptr_addr + 8].copy()
    sa.memory[ptr_addr] = ~sa.memory[ptr_addr]
    # the corrupted freechain, the wrong count of objects in use, fixing the count
    assert sa.kmem_cache_validate(s) == 3
    sa.memory[ptr_addr:ptr_addr + 8] = tmp         # repair the free pointer
    # the wrong count of objects in use (now all free again), fixing it
    assert sa.kmem_cache_validate(s) == 2
    assert sa.kmem_cache_validate(s) == 0
    sa.validate()
    sa.kmem_cache_destroy(s)


def test_first_word(sa):
    s = sa.kmem_cache_create("TestSlub_1th_word_free", 64, flags=SLAB_POISON)
    p = sa.kmem_cache_alloc(s)
    sa.kmem_cache_free(s, p)
    sa.memory[p] = 0x78
    assert sa.kmem_cache_validate(s) == 2
    sa.kmem_cache_destroy(s)


def test_clobber_50th_byte(sa):
    s = sa.kmem_cache_create("TestSlub_50th_word_free", 64, flags=SLAB_POISON)
    p = sa.kmem_cache_alloc(s)
    sa.kmem_cache_free(s, p)
    sa.memory[p + 50] = 0x9a
    assert sa.kmem_cache_validate(s) == 2
    sa.kmem_cache_destroy(s)


def test_clobber_redzone_free(sa):
    s = sa.kmem_cache_create("TestSlub_RZ_free", 64, flags=SLAB_RED_ZONE)
    p = sa.kmem_cache_alloc(s)
    sa.kmem_cache_free(s, p)
    sa.memory[p + 64] = 0xab
    assert sa.kmem_cache_validate(s) == 2
    sa.kmem_cache_destroy(s)


def test_kmalloc_redzone_access(kernel):
    # the kernel's cache is SLAB_KMALLOC|SLAB_STORE_USER|SLAB_RED_ZONE of 32 bytes and
    # __kmalloc_cache_noprof(s, GFP_KERNEL, 18): here kmalloc-32 with slab_debug ZU
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel,
                               slab_debug="ZU,kmalloc-32")
    s = sa.find_cache("kmalloc-32")
    p = sa.kmalloc(18)
    assert sa._cache_of(p) == s.id
    sa.memory[p + 18] = 0xab
    sa.memory[p + 19] = 0xab
    assert sa.kmem_cache_validate(s) == 2
    sa.kfree(p)


def test_kfree_rcu(sa):
    s = sa.kmem_cache_create("TestSlub_kfree_rcu", 16, flags=SLAB_NO_MERGE)  # rcu_head
    p = sa.kmem_cache_alloc(s)
    sa.kfree_rcu(p)
    assert errors_of(sa, sa.kmem_cache_destroy, s) == 0
    assert s not in sa.caches


def test_leak_destroy(sa):
    s = sa.kmem_cache_create("TestSlub_leak_destroy", 64, flags=SLAB_NO_MERGE)
    sa.kmem_cache_alloc(s)
    # list_slab_objects: the slab ("Objects remaining ...") and its one object
    assert errors_of(sa, sa.kmem_cache_destroy, s) == 2
    assert sa.slab_reports()[-2] == ("BUG TestSlub_leak_destroy (Not tainted): Objects "
                                     "remaining on __kmem_cache_shutdown()")
    # the object as list_slab_objects prints it: its line (and tracks), once, then
    # __slab_err's slab line
    obj = sa.slab_reports()[-1].splitlines()
    assert obj[0].startswith("Object 0x") and obj[-1].startswith("Slab 0x")
    assert len(obj) == 2


def test_krealloc_redzone_zeroing(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel,
                               slab_debug="ZU,kmalloc-64")
    s = sa.find_cache("kmalloc-64")
    p = sa.kmalloc(48)
    sa.memory[p:p + 48] = 0xff
    p = sa.krealloc(p, 40, GFP_KERNEL | __GFP_ZERO)         # shrink
    assert (sa.memory[p + 40:p + 64] == 0xcc).all()         # SLUB_RED_ACTIVE
    p = sa.krealloc(p, 56, GFP_KERNEL | __GFP_ZERO)         # grow inside the object
    assert (sa.memory[p + 40:p + 56] == 0).all()
    assert (sa.memory[p + 56:p + 64] == 0xcc).all()
    assert sa.kmem_cache_validate(s) == 0
    sa.memory[p:p + 56] = 0xff
    p = sa.krealloc(p, 112, GFP_KERNEL | __GFP_ZERO)        # grow into kmalloc-128
    assert (sa.memory[p:p + 56] == 0xff).all()
    assert (sa.memory[p + 56:p + 112] == 0).all()
    sa.kfree(p)
    sa.validate()
