"""Geometry against a real kernel: every cache of /sys/kernel/slab on a 6.18 2-CPU machine."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

import numslab
from numslab import flags as F
from numslab.geometry import (calculate_geometry, calculate_order, get_order,
                              KMALLOC_SIZES, kmalloc_cache_size)

DATA = Path(__file__).parent / "data" / "kernel_slab.csv"
# Caches that pass kmem_cache_args.freeptr_offset in 6.18 (fs/file_table.c, mm/vma_init.c);
# the value only has to be a word inside the object for the geometry.
FREEPTR_OFFSET = {"filp": 8, "bfilp": 8, "vm_area_struct": 8}


def kernel_rows() -> list[dict[str, str]]:
    with DATA.open() as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def cache_flags(row: dict[str, str]) -> int:
    fl = 0
    fl |= F.SLAB_HWCACHE_ALIGN if row["hwcache_align"] == "1" else 0
    fl |= F.SLAB_TYPESAFE_BY_RCU if row["destroy_by_rcu"] == "1" else 0
    fl |= F.SLAB_RECLAIM_ACCOUNT if row["reclaim_account"] == "1" else 0
    fl |= F.SLAB_KMALLOC if "kmalloc-" in row["name"] else 0
    return fl


ROWS = kernel_rows()


@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_geometry_matches_real_kernel(row):
    geo = calculate_geometry(int(row["object_size"]), int(row["align"]), cache_flags(row),
                             row["ctor"] == "1", int(row["nr_cpus"]),
                             FREEPTR_OFFSET.get(row["name"]))
    got = (geo.slab_size, geo.order, geo.objs_per_slab, geo.min_partial, geo.cpu_partial,
           geo.align)
    want = tuple(int(row[k]) for k in ("slab_size", "order", "objs_per_slab", "min_partial",
                                       "cpu_partial", "align"))
    assert got == want


def test_table_covers_the_interesting_cases():
    names = {r["name"] for r in ROWS}
    assert {"kmalloc-8", "kmalloc-96", "kmalloc-192", "kmalloc-8k", "anon_vma"} <= names
    assert any(r["ctor"] == "1" for r in ROWS) and any(r["destroy_by_rcu"] == "1" for r in ROWS)
    assert {"0", "1", "2", "3"} <= {r["order"] for r in ROWS}


def test_allocator_caches_match_real_kernel_kmalloc():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=int(ROWS[0]["nr_cpus"]), memory="4M")
    real = {r["name"]: r for r in ROWS}
    for c in sa.kmalloc_caches:
        r = real[c.name]
        assert (c.slab_size, c.order, c.objs_per_slab, c.min_partial, c.cpu_partial,
                c.align) == tuple(int(r[k]) for k in ("slab_size", "order", "objs_per_slab",
                                                       "min_partial", "cpu_partial", "align"))


@pytest.mark.skipif(not os.path.isdir("/sys/kernel/slab/kmalloc-64"),
                    reason="needs a Linux /sys/kernel/slab")
def test_live_kernel_of_this_machine():
    """Whatever kernel runs the tests: its kmalloc caches for its own present CPU count."""
    present = open("/sys/devices/system/cpu/present").read().strip()
    ncpu = sum(int(b) - int(a) + 1 if "-" in r else 1
               for r in present.split(",") for a, _, b in [r.partition("-")])
    root = Path("/sys/kernel/slab")
    for size in (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192):
        name = f"kmalloc-{size // 1024}k" if size >= 1024 else f"kmalloc-{size}"
        d = root / name
        if not d.is_dir() or (d / "red_zone").read_text().strip() != "0":
            continue
        geo = calculate_geometry(size, 0, F.SLAB_KMALLOC, False, ncpu)
        assert geo.order == int((d / "order").read_text())
        assert geo.objs_per_slab == int((d / "objs_per_slab").read_text())
        assert geo.slab_size == int((d / "slab_size").read_text())


def test_reference_examples():
    """The examples of REFERENCE.md, read off a 2-CPU kernel."""
    assert calculate_geometry(64, 0, F.SLAB_KMALLOC, False, 2).objs_per_slab == 64
    assert calculate_geometry(192, 0, F.SLAB_KMALLOC, False, 2).objs_per_slab == 21
    g = calculate_geometry(344, 0, 0, False, 2)
    assert (g.order, g.objs_per_slab) == (1, 23)
    g = calculate_geometry(4096, 0, F.SLAB_KMALLOC, False, 2)
    assert (g.order, g.objs_per_slab, g.min_partial, g.cpu_partial) == (3, 8, 6, 6)
    g = calculate_geometry(96, 0, F.SLAB_TYPESAFE_BY_RCU, True, 2)
    assert (g.slab_size, g.offset) == (104, 96)


def test_free_pointer_placement():
    assert calculate_geometry(100, 0, 0, False, 2).offset == 48          # mid-object
    assert calculate_geometry(100, 0, 0, True, 2).offset == 104          # after, ctor
    g = calculate_geometry(192, 0, F.SLAB_TYPESAFE_BY_RCU | F.SLAB_HWCACHE_ALIGN, False, 2,
                           freeptr_offset=40)
    assert (g.offset, g.slab_size) == (40, 192)
    with pytest.raises(numslab.InvalidSizeError):
        calculate_geometry(192, 0, 0, False, 2, freeptr_offset=40)       # needs RCU
    for bad in (190, 192, 200, -8):         # unaligned, at or past the end, negative
        with pytest.raises(numslab.InvalidSizeError):
            calculate_geometry(192, 0, F.SLAB_TYPESAFE_BY_RCU, False, 2, freeptr_offset=bad)
    # create_cache refuses only an offset at or past object_size: the word may reach into
    # the slot's padding (it refused 56 for 60 bytes, 8 for 12, 0 for 4)
    for size, off, slot in ((60, 56, 64), (12, 8, 16), (4, 0, 8), (184, 176, 184)):
        g = calculate_geometry(size, 0, F.SLAB_TYPESAFE_BY_RCU, False, 2, freeptr_offset=off)
        assert (g.offset, g.slab_size) == (off, slot) and g.offset + 8 <= g.slab_size
    # with a right red zone past the object, a pointer reaching into it is refused (the
    # repair of the zone cut the free list: validate() then found the state corrupt);
    # poisoning moves the pointer after the object, so it is taken there
    for size, off in ((60, 56), (12, 8)):
        with pytest.raises(numslab.InvalidSizeError, match="right red zone"):
            calculate_geometry(size, 0, F.SLAB_TYPESAFE_BY_RCU | F.SLAB_RED_ZONE, False, 2,
                               freeptr_offset=off)
        g = calculate_geometry(size, 0, F.SLAB_TYPESAFE_BY_RCU | F.SLAB_RED_ZONE
                               | F.SLAB_POISON, False, 2, freeptr_offset=off)
        assert g.offset >= size
    g = calculate_geometry(60, 0, F.SLAB_TYPESAFE_BY_RCU | F.SLAB_RED_ZONE, False, 2,
                           freeptr_offset=48)
    assert g.offset == 48


def test_a_constructor_cache_takes_a_free_pointer_offset_from_7_0():
    """Linux 7.0 (Harry Yoo, "mm/slab: allow specifying free pointer offset when using
    constructor"): ``create_cache`` refuses the offset only without SLAB_TYPESAFE_BY_RCU
    *and* without a constructor, and ``calculate_sizes`` moves the pointer after the object
    for a constructor only when no offset is given. 6.18 refuses it."""
    g = calculate_geometry(64, 0, 0, True, 2, freeptr_offset=8, ctor_freeptr=True)
    assert (g.offset, g.slab_size) == (8, 64)               # no word after the object
    assert calculate_geometry(64, 0, 0, True, 2, ctor_freeptr=True).offset == 64
    with pytest.raises(numslab.InvalidSizeError, match="a constructor too from Linux 7.0"):
        calculate_geometry(64, 0, 0, True, 2, freeptr_offset=8)
    with pytest.raises(numslab.InvalidSizeError, match="needs SLAB_TYPESAFE_BY_RCU or a"):
        calculate_geometry(64, 0, 0, False, 2, freeptr_offset=8, ctor_freeptr=True)
    # 6.18 takes the offset with SLAB_TYPESAFE_BY_RCU, but a constructor still puts the
    # pointer after the object there (it was put inside: a whole-object constructor then cut
    # the free list)
    g = calculate_geometry(40, 0, F.SLAB_TYPESAFE_BY_RCU, True, 2, freeptr_offset=32)
    assert (g.offset, g.slab_size) == (40, 48)
    g = calculate_geometry(40, 0, F.SLAB_TYPESAFE_BY_RCU, True, 2, freeptr_offset=32,
                           ctor_freeptr=True)
    assert (g.offset, g.slab_size) == (32, 40)

    def ctor(mem, addr):                    # a constructor that writes every byte
        mem[addr:addr + 64] = 0xAB
    for gen, expect in (("7.0", (8, 64)), ("6.18", None)):
        sa = numslab.SlabAllocator(memory="4M", kernel=gen)
        make = lambda: sa.kmem_cache_create("c", 64, ctor=ctor,  # noqa: E731
                                            freeptr_offset=8)
        if expect is None:
            with pytest.raises(numslab.InvalidSizeError, match="kmem_cache_create\\(c\\)"):
                make()
            continue
        c = make()
        assert (c.offset, c.slab_size, c.objs_per_slab) == (*expect, 64)
        # the kernel constructs a new slab's objects before it writes their free pointers
        # (allocate_slab); numslab constructs after and puts the free objects' words back:
        # a whole-object constructor cut the free list (SlabCorruptionError at once)
        held = [c.alloc() for _ in range(70)]               # a second slab constructed
        assert len(set(held)) == 70
        mem = sa.memory
        for a in held:
            assert (mem[a:a + 8] == 0xAB).all() and (mem[a + 16:a + 64] == 0xAB).all()
        sa.validate()
        for a in held:
            c.free(a)
        sa.validate()


@pytest.mark.parametrize("ncpu,min_objects", [(1, 8), (2, 12), (3, 12), (4, 16), (7, 16),
                                              (8, 20), (64, 32)])
def test_min_objects_scales_with_cpus(ncpu, min_objects):
    # 4 * (fls(ncpu) + 1) objects at least, unless the order would pass slub_max_order
    size = 256
    order = calculate_order(size, ncpu)
    assert order == min(get_order(min_objects * size), 3)


def test_kmalloc_size_classes():
    assert [kmalloc_cache_size(s) for s in (1, 8, 9, 64, 65, 96, 97, 128, 129, 192, 193,
                                            257, 4097, 8192)] == \
        [8, 8, 16, 64, 96, 96, 128, 128, 192, 192, 256, 512, 8192, 8192]


def test_kmalloc_index_table_follows_the_size_rule():
    # the facade's and the gate's lookup table: every size 1..8192 to its class
    from numslab.engine.kmalloc import kmalloc_index_table
    table = kmalloc_index_table()
    assert len(table) == 8193
    assert all(KMALLOC_SIZES[table[s]] == kmalloc_cache_size(s) for s in range(1, 8193))


@pytest.mark.parametrize("bad", [0, -8, 5 << 20, 3.5, "64"])
def test_impossible_sizes_raise(bad):
    with pytest.raises(numslab.InvalidSizeError):
        calculate_geometry(bad, 0, 0, False, 2)


def test_bad_alignment_raises():
    with pytest.raises(numslab.InvalidSizeError, match="align 24 is not zero or a power of two"):
        calculate_geometry(64, 24, 0, False, 2)
    # too large for any slab: the message named the stride as the object size ("object size
    # 1099511627776 does not fit"), the object being 192 bytes
    with pytest.raises(numslab.InvalidSizeError, match=r"^align 1099511627776 makes each "
                                                       r"object take 1099511627776 bytes, more "
                                                       r"than a slab of order 10 holds$"):
        calculate_geometry(192, 1 << 40, 0, False, 2)
    assert calculate_geometry(192, 1 << 22, 0, False, 2).slab_size == 1 << 22   # one fits


def test_a_constructor_allocating_from_its_own_in_object_pointer_cache_is_refused():
    """numslab runs a new slab's constructors after its free list is written; with the free
    pointer inside the object (7.x), an allocation the constructor makes from its own cache
    walked that list through the object under construction (SlabCorruptionError, the slab
    isolated). It is refused with a SlabError naming the call, nothing done; the slab's
    constructors stay due and run at the next allocation."""
    sa = numslab.SlabAllocator(memory="4M", kernel="7.0")
    nested = [True]

    def ctor(mem, addr):
        mem[addr:addr + 64] = 0xAB
        if nested[0]:
            sa.kmem_cache_alloc(c)
    c = sa.kmem_cache_create("c", 64, ctor=ctor, freeptr_offset=8)
    with pytest.raises(numslab.SlabError, match="kmem_cache_alloc\\(c\\): called by the "
                                                "cache's own constructor"):
        c.alloc()
    sa.validate()
    assert c.live_objects == 0 and not sa.isolated_slabs().size
    nested[0] = False
    held = [c.alloc() for _ in range(70)]
    assert len(set(held)) == 70
    assert all((sa.memory[a:a + 8] == 0xAB).all() for a in held)
    for a in held:
        c.free(a)
    sa.validate()


# ---- the slab order's boot parameters ----------------------------------------------------------
def naive_order(size: int, cpus: int, lo: int, hi: int, objs: int) -> int:
    """``calculate_order`` read straight from mm/slub.c with ``slub_min_order`` ``lo``,
    ``slub_max_order`` ``hi`` and ``slub_min_objects`` ``objs``: the smallest order from the
    minimum that wastes at most 1/16, 1/8, 1/4, 1/2 of the slab, within the maximum, else
    the order of one object."""
    def per(o: int) -> int:
        return (4096 << o) // size
    m = min(objs or 4 * (cpus.bit_length() + 1), max(per(hi), 1))
    start = max(lo, get_order(m * size))
    if per(start) > 32767:
        return get_order(size * 32767) - 1
    for frac in (16, 8, 4, 2):
        for o in range(start, hi + 1):
            if (4096 << o) % size <= (4096 << o) // frac:
                return o
    return get_order(size)


@pytest.mark.parametrize("lo,hi,objs", [(0, 3, 0), (0, 0, 0), (1, 3, 0), (2, 5, 0), (0, 1, 0),
                                        (0, 3, 64), (0, 10, 4), (3, 3, 1), (10, 10, 0)])
def test_calculate_order_under_the_boot_parameters(lo, hi, objs):
    """``slab_min_order``, ``slab_max_order`` and ``slab_min_objects`` as ``calculate_order``
    takes them, against a naive reading of it, for sizes 8 to 64 KiB on 1 to 64 CPUs."""
    from numslab.geometry import SlabOrders
    orders = SlabOrders(lo, hi, objs)
    for size in list(range(8, 4200, 40)) + [5840, 8192, 12288, 40000, 65536]:
        for cpus in (1, 2, 8, 64):
            assert calculate_order(size, cpus, orders) == naive_order(size, cpus, lo, hi,
                                                                      objs), (size, cpus)


def test_boot_orders_follow_the_kernels_setup_functions():
    """``setup_slub_min_order`` raises a lower maximum to the minimum; ``setup_slub_max_order``
    cuts the maximum to MAX_PAGE_ORDER and lowers a higher minimum (min given first)."""
    from numslab.geometry import SlabOrders, boot_orders
    assert boot_orders() == SlabOrders(0, 3, 0)
    assert boot_orders(5) == SlabOrders(5, 5, 0)
    assert boot_orders(5, 2) == SlabOrders(2, 2, 0)
    assert boot_orders(None, 20) == SlabOrders(0, 10, 0)
    assert boot_orders(None, 0, 7) == SlabOrders(0, 0, 7)
    with pytest.raises(numslab.InvalidSizeError, match="slab_min_order=11"):
        boot_orders(11)
    with pytest.raises(numslab.InvalidSizeError, match="slab_max_order=-1"):
        boot_orders(None, -1)
    for bad in ("1", 1.0, True):
        with pytest.raises(numslab.WrongTypeError, match="slab_min_objects"):
            boot_orders(None, None, bad)


def test_an_allocator_under_the_boot_parameters():
    """``SlabAllocator(slab_max_order=0)``: every cache of objects up to a page on order 0
    (larger ones on the order of one object), kept by save and load; ``slab_min_order=1``
    makes slabs of 1024 8-byte objects, past numslab's random sequences (refused, naming
    the way round), and works without them."""
    import tempfile
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", slab_max_order=0)
    assert sa.slab_orders.max_order == 0
    assert {c.order for c in sa.kmalloc_caches} == {0, 1}
    assert sa.kmem_cache_create("t", 5840).order == 1
    with tempfile.TemporaryDirectory() as d:
        sa.save(d + "/m.npz")
        assert numslab.SlabAllocator.load(d + "/m.npz").slab_orders == sa.slab_orders
    with pytest.raises(numslab.InvalidSizeError, match="1024 objects.*freelist_random=False"):
        numslab.SlabAllocator(nr_cpus=2, memory="16M", slab_min_order=1)
    big = numslab.SlabAllocator(nr_cpus=2, memory="16M", slab_min_order=1,
                                freelist_random=False)
    c = big.kmalloc_caches[0]
    assert (c.order, c.objs_per_slab) == (1, 1024)
    got = c.alloc_bulk(3000)
    c.free_bulk(got[::2])
    big.kmem_cache_shrink(c)
    big.validate()
    c.free_bulk(got[1::2])
    big.validate()
    with pytest.raises(numslab.FixedAttributeError):
        big.slab_orders = sa.slab_orders
