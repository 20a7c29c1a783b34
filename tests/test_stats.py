"""Counters and /proc/slabinfo text, against the kernel's formats and meanings."""
from __future__ import annotations

import re
from pathlib import Path

import numslab

REAL = (Path(__file__).parent / "data" / "proc_slabinfo.txt").read_text().splitlines()


def test_slabinfo_header_is_the_kernels():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="4M")
    ours = sa.slabinfo().splitlines()
    assert ours[:2] == REAL[:2]


def test_slabinfo_lines_parse_like_the_kernels():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("bio-312", 312, flags=numslab.SLAB_HWCACHE_ALIGN)
    objs = [sa.kmem_cache_alloc(c) for _ in range(30)]
    line = next(l for l in sa.slabinfo().splitlines() if l.startswith("bio-312"))
    real = next(l for l in REAL if l.startswith("bio-312 "))
    shape = lambda l: re.sub(r"\d+", "N", re.sub(r"^\S+\s+", "", l))  # noqa: E731
    assert shape(line) == shape(real)
    f = line.split()
    assert f[3:6] == real.split()[3:6]                  # objsize, objperslab, pagesperslab
    assert int(f[1]) == c.objects == 36 and int(f[2]) == c.total_objects == 36
    assert int(f[13]) == c.slabs == 3
    assert sa.slabinfo().index("bio-312") < sa.slabinfo().index("kmalloc-8 ")  # newest first
    for a in objs:
        sa.kmem_cache_free(c, a)


def test_counters_follow_sysfs_semantics():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("k", 64, flags=numslab.SLAB_KMALLOC)
    per = c.objs_per_slab
    objs = [sa.kmem_cache_alloc(c) for _ in range(per * 4)]
    for a in objs[: per * 3: 2]:                       # half of the first three slabs
        sa.kmem_cache_free(c, a)
    sa.kmem_cache_shrink(c)
    assert c.partial == 3 and c.slabs == 4 and c.cpu_slabs == 0
    assert c.objects_partial == 3 * per // 2
    assert c.objects == c.total_objects - 3 * per // 2 == c.live_objects
    fs = c.sysfs()
    assert fs["slabs"] == "4 N0=4" and fs["partial"] == "3 N0=3"
    assert fs["objects"] == f"{c.objects} N0={c.objects}"
    assert fs["slabs_cpu_partial"] == "0(0)"


def test_objects_counts_cpu_cached_objects_as_in_use_like_the_kernel():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("k", 64)
    a = sa.kmem_cache_alloc(c)
    assert c.live_objects == 1
    assert c.objects == c.total_objects == c.objs_per_slab   # the cpu slab counts as in use
    sa.kmem_cache_free(c, a)
    assert c.live_objects == 0


def test_stat_names_follow_the_kernel_enum():
    st = numslab.SlabAllocator(kernel="6.18", nr_cpus=1, memory="4M").kmalloc_caches[0].stats
    names = list(st)
    assert names[:4] == ["alloc_cpu_sheaf", "alloc_fastpath", "alloc_slowpath", "free_cpu_sheaf"]
    assert names.index("cpu_partial_drain") == 29 and names.index("sheaf_return_slow") == 42


def test_stat_names_of_7_0_are_its_26_items_in_order():
    # enum stat_item of Linux 7.0 (mm/slub.c), then numslab's own counters
    names = list(numslab.SlabAllocator(nr_cpus=1, memory="4M").kmalloc_caches[0].stats)
    kernel = names[:26]
    assert kernel[:6] == ["alloc_fastpath", "alloc_slowpath", "free_rcu_sheaf",
                          "free_rcu_sheaf_fail", "free_fastpath", "free_slowpath"]
    assert kernel[-1] == "sheaf_return_slow" and kernel.index("barn_get") == 17
    assert not {"alloc_cpu_sheaf", "cpuslab_flush", "cpu_partial_alloc", "free_frozen",
                "deactivate_full", "alloc_refill"} & set(names)
    assert names[26:] == list(numslab.flags.STAT_NAMES_NUMSLAB)


def test_a_cycle_in_the_cpu_freelist_counts_each_object_once():
    """6.18, unhardened: a stray write points the head of the CPU's lockless freelist at
    itself. Before, ``live_objects`` walked the cycle up to the slab's object count, so with
    objects in the sheaves it went negative and ``len(cache)`` (and ``compact``) raised
    ValueError."""
    from numslab.engine.layout import C_FREELIST
    sa = numslab.SlabAllocator(memory="16M", nr_cpus=1, kernel="6.18", freelist_hardened=False)
    c = sa.kmem_cache_create("cycle", 24, sheaf_capacity=4)
    objs = [c.alloc() for _ in range(8)]
    for a in objs[:3]:
        c.free(a)
    head = int(sa.state.cpu[c.id, 0, C_FREELIST])
    sa.memory[head + c.offset:head + c.offset + 8] = list(head.to_bytes(8, "little"))
    live = sa.state.live.copy()
    assert c.live_objects >= len(c) >= len(c.live_addresses()) == 5
    assert (sa.state.live == live).all()        # the walk's marks are gone
    try:
        c.compact(100)
    except numslab.SlabCorruptionError:
        pass


def test_objects_lost_before_a_slab_is_a_cpu_slab_again_are_counted_once():
    """6.18, unhardened: a stray write makes the CPU's lockless freelist skip objects 7..9,
    a flush records them lost (the slab's ``sl_lost``), and the slab becomes a CPU slab
    again. The count of the CPU's list took them for lost a second time (in use by the
    slab's count, reached by no list, held by nobody): lost_objects 6, live_objects and
    len(c) 3 short of what users hold (a fuzzer's run went negative: len() raised
    ValueError) and validate reported "live objects differ from the live bitmap's count"."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel="6.18", freelist_random=False,
                               freelist_hardened=False)
    c = sa.kmem_cache_create("c", 192)
    a = [c.alloc() for _ in range(6)]
    for x in a[3:]:
        c.free(x)                                   # CPU list 5 4 3 6 .. 20
    slab = a[0] & ~4095
    src, dst = slab + 6 * c.slab_size, slab + 10 * c.slab_size
    sa.memory[src + c.offset:src + c.offset + 8] = list(dst.to_bytes(8, "little"))
    c.shrink()                                      # the flush records 7, 8 and 9 lost
    assert c.lost_slabs().tolist() == [[slab, 3]] and c.cpu_slabs == 0
    b = c.alloc()                                   # the slab is the CPU's slab again
    assert b & ~4095 == slab and c.cpu_slabs == 1
    assert len(c) == c.live_objects == len(c.live_addresses()) == 4
    assert c.lost_objects == 3 and c.lost_slabs().tolist() == [[slab, 3]]
    sa.validate()


def test_slabinfo_lists_the_kmalloc_caches_in_the_kernels_order():
    """``create_kmalloc_caches`` makes kmalloc-96 and kmalloc-192 before the powers of two, and
    /proc/slabinfo lists the newest first: ... kmalloc-16, kmalloc-8, kmalloc-192, kmalloc-96
    (this machine's file). numslab listed them by size (kmalloc-256, kmalloc-192, kmalloc-128,
    kmalloc-96, kmalloc-64, ...)."""
    kmalloc = re.compile(r"kmalloc-\d+k? ")
    real = [l.split()[0] for l in REAL if kmalloc.match(l)]
    for kernel in ("6.18", "7.0"):
        sa = numslab.SlabAllocator(kernel=kernel, nr_cpus=2, memory="8M")
        sa.kmem_cache_create("mine", 100)
        names = [l.split()[0] for l in sa.slabinfo().splitlines()[2:]]
        assert names[0] == "mine"                       # newest first
        assert [n for n in names if kmalloc.match(n + " ")] == real


#: The static attributes a /sys/kernel/slab/<cache>/ directory shows, as numslab's ``sysfs()``
#: must print them for a cache made with the same arguments (``aliases`` apart: numslab
#: merges no cache; ``ctor`` apart: the kernel prints ``%pS``, numslab the callable's name).
STATIC = ("object_size", "slab_size", "align", "order", "objs_per_slab", "min_partial",
          "cpu_partial", "hwcache_align", "destroy_by_rcu", "reclaim_account", "sheaf_capacity")
#: caches passing ``kmem_cache_args.freeptr_offset`` in 6.18 (fs/file_table.c, mm/vma_init.c)
FREEPTR_OFFSET = {"filp": 8, "bfilp": 8, "vm_area_struct": 8}


def _snapshot() -> dict:
    import json
    import lzma
    # the same file as the shared /work/shared/data/sys_kernel_slab_snapshot.json
    return json.loads(lzma.decompress(
        (Path(__file__).parent / "data" / "kmem_snapshot_git_tar.json.xz").read_bytes()))


def _like(sa, c: dict):
    """numslab's cache made as the snapshot's cache ``c`` was: size, align, flags, ctor."""
    flags = {"hwcache_align": numslab.SLAB_HWCACHE_ALIGN,
             "reclaim_account": numslab.SLAB_RECLAIM_ACCOUNT,
             "destroy_by_rcu": numslab.SLAB_TYPESAFE_BY_RCU}
    ctor = None
    if c["ctor"]:
        def ctor(mem, addr):
            pass
        ctor.__name__ = c["ctor"].split("+")[0]
    return sa.kmem_cache_create(c["name"], int(c["object_size"]),
                                0 if c["hwcache_align"] == "1" else int(c["align"]),
                                flags=sum(f for k, f in flags.items() if c[k] == "1"),
                                ctor=ctor, freeptr_offset=FREEPTR_OFFSET.get(c["name"]),
                                sheaf_capacity=int(c["sheaf_capacity"]))


def test_sysfs_prints_a_6_18_kernels_files_for_each_cache_of_the_shared_snapshot():
    """Every real cache of the shared 6.18 snapshot (2 CPUs, 235 caches), made with its
    arguments on a 2-CPU 6.18 allocator: each static file prints what the kernel's does
    (``slab_size_show`` .. ``sheaf_capacity_show``: ``"%u\\n"``/``"%lu\\n"``, the flags
    ``"%d\\n"`` of ``!!(s->flags & ...)``), ``ctor`` names the same symbol (the kernel's
    ``"%pS"`` adds ``+0x0/<size>``), and the per-node files print as ``show_slab_objects``
    does: the total, then `` N<node>=<count>`` for each node whose count is not 0."""
    import warnings
    snap = _snapshot()
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=snap["nr_cpus"], memory="64M",
                               max_caches=512)
    ours = {k.name: k for k in sa.kmalloc_caches}
    caches = [c for c in snap["caches"] if "alias_of" not in c]
    per_node = re.compile(r"^\d+( N0=[1-9]\d*)?$")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = [(c, ours.get(c["name"]) or _like(sa, c)) for c in caches]
    assert len(made) == 235
    for c, k in made:
        fs = k.sysfs()
        assert {a: fs[a] for a in STATIC} == {a: c[a] for a in STATIC}, c["name"]
        assert fs["ctor"] == c["ctor"].split("+")[0], c["name"]
        assert fs["aliases"] == "0" and fs["ctor"] == (k.ctor.__name__ if k.ctor else "")
        for a in ("objects", "slabs", "partial", "cpu_slabs"):
            assert per_node.match(c[a]) and per_node.match(fs[a]), (c["name"], a)
    objs = [sa.kmem_cache_alloc(ours["kmalloc-64"]) for _ in range(100)]
    fs = ours["kmalloc-64"].sysfs()
    assert fs["objects"] == f"{ours['kmalloc-64'].objects} N0={ours['kmalloc-64'].objects}"
    for a in objs:
        sa.kmem_cache_free(ours["kmalloc-64"], a)


def test_sysfs_has_the_files_of_the_running_kernel_when_it_is_6_18():
    """The files of a 6.18 kmalloc cache (``slab_attrs[]``: 30 without CONFIG_SLUB_STATS, a
    ``show_stat`` file per ``enum stat_item`` with it; ``failslab`` and ``skip_kfence`` are
    CONFIG_FAILSLAB's and CONFIG_KFENCE's, which numslab does not model), and their values for
    the geometry this machine's present CPUs give. Checked against the live
    /sys/kernel/slab only on a 6.18 kernel; elsewhere against the shared snapshot's file."""
    import os
    import platform
    root = Path("/sys/kernel/slab/kmalloc-256")
    shown = STATIC + ("usersize", "cache_dma")
    live = platform.release().startswith("6.18.") and (root / "order").is_file() and all(
        (root / f).read_text().strip() == "0" for f in ("red_zone", "poison", "store_user"))
    if live:                        # (a kernel booted with slab_debug lays it out otherwise)
        present = Path("/sys/devices/system/cpu/present").read_text().strip()
        ncpu = sum(int(b) - int(a) + 1 if "-" in r else 1
                   for r in present.split(",") for a, _, b in [r.partition("-")])
        files = set(os.listdir(root))
        real = {f: (root / f).read_text().rstrip("\n") for f in shown if f in files}
    else:
        snap = _snapshot()
        ncpu = snap["nr_cpus"]
        real = next(c for c in snap["caches"] if c["name"] == "kmalloc-256")
        files = None
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=ncpu, memory="16M")
    fs = next(k for k in sa.kmalloc_caches if k.name == "kmalloc-256").sysfs()
    stats = set(numslab.flags.STAT_NAMES_6_18)
    assert len(set(fs) - stats) == 30 and stats <= set(fs)
    if files is not None:           # CONFIG_HARDENED_USERCOPY, _ZONE_DMA, _NUMA's may be off
        assert set(fs) - stats - {"usersize", "cache_dma", "remote_node_defrag_ratio"} <= files
        assert files - set(fs) <= {"failslab", "skip_kfence"}
        assert not files & stats or stats <= files      # CONFIG_SLUB_STATS: all or none
    assert {a: fs[a] for a in shown if a in real} == {a: real[a] for a in shown if a in real}
    assert set(STATIC) <= set(real)


#: 7.3's ``slab_attrs[]`` (linux-mm ``mm/slub.c`` 0349fd01, SLAB_SUPPORTS_SYSFS), with
#: CONFIG_SLUB_DEBUG, CONFIG_ZONE_DMA, CONFIG_NUMA and CONFIG_HARDENED_USERCOPY (``usersize``);
#: not CONFIG_FAILSLAB's ``failslab`` nor CONFIG_KFENCE's ``skip_kfence``
SLAB_ATTRS_7_3 = (
    "slab_size", "object_size", "objs_per_slab", "order", "sheaf_capacity", "min_partial",
    "cpu_partial", "objects_partial", "partial", "cpu_slabs", "ctor", "aliases", "align",
    "hwcache_align", "reclaim_account", "destroy_by_rcu", "shrink", "slabs_cpu_partial",
    "total_objects", "objects", "slabs", "sanity_checks", "trace", "red_zone", "poison",
    "store_user", "validate", "cache_dma", "remote_node_defrag_ratio", "usersize")
#: its CONFIG_SLUB_STATS files, ``STAT_ATTR(ALLOC_FASTPATH, alloc_fastpath)`` ..
#: ``STAT_ATTR(SHEAF_RETURN_SLOW, sheaf_return_slow)``, in ``enum stat_item`` order
STAT_ATTRS_7_3 = (
    "alloc_fastpath", "alloc_slowpath", "free_rcu_sheaf", "free_rcu_sheaf_fail",
    "free_fastpath", "free_slowpath", "free_add_partial", "free_remove_partial", "alloc_slab",
    "alloc_node_mismatch", "free_slab", "order_fallback", "cmpxchg_double_fail", "sheaf_flush",
    "sheaf_refill", "sheaf_alloc", "sheaf_free", "barn_get", "barn_get_fail", "barn_put",
    "barn_put_fail", "sheaf_prefill_fast", "sheaf_prefill_slow", "sheaf_prefill_oversize",
    "sheaf_return_fast", "sheaf_return_slow")


def test_the_7_x_sysfs_files_are_7_3s_slab_attrs():
    """Every 7.x generation prints 7.3's files, the counters last in ``enum stat_item``
    order, and its constant files as 7.3's shows print them: ``cpu_partial_show`` "0",
    ``cpu_slabs_show`` "0", ``slabs_cpu_partial_show`` "0(0)", ``remote_node_defrag_ratio``
    the 1000 ``do_kmem_cache_create`` sets, shown ``/ 10``."""
    for kernel in ("7.0", "7.1", "7.3", "next"):
        sa = numslab.SlabAllocator(kernel=kernel, nr_cpus=2, memory="8M")
        fs = sa.kmem_cache_create("x", 100).sysfs()
        assert set(fs) == set(SLAB_ATTRS_7_3 + STAT_ATTRS_7_3), kernel
        assert tuple(fs)[-len(STAT_ATTRS_7_3):] == STAT_ATTRS_7_3
        assert (fs["cpu_partial"], fs["cpu_slabs"], fs["slabs_cpu_partial"],
                fs["remote_node_defrag_ratio"]) == ("0", "0", "0(0)", "100")
