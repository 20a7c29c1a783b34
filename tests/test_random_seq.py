"""CONFIG_SLAB_FREELIST_RANDOM's ``s->random_seq`` as a kmalloc object, as the kernel has it.

``cache_random_seq_create`` (mm/slab_common.c) ``kcalloc``s ``count`` unsigned ints,
``count = oo_objects(s->oo)``, for a cache of two or more objects per slab: from
``do_kmem_cache_create`` for a cache made once slab_state is UP (before its barns and
sheaves), from ``init_freelist_randomization`` at the end of ``kmem_cache_init`` for the
kmalloc caches; ``cache_random_seq_destroy`` kfrees it first in ``__kmem_cache_release``.
numslab kept the sequence in field ``rseq`` only: every kmalloc cache held one object per
cache fewer than a kernel's."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import numslab
from numslab import GFP_KERNEL, __GFP_NOWARN
from numslab.engine.kmalloc import kmalloc_cache_name
from numslab.engine.layout import (CA_RSEQ_LEN, F_CA, F_CPU, F_G, F_NODE, F_RSEQ, F_STATS, G_RNG,
                                   view)
from numslab.geometry import KMALLOC_SIZES

from conftest import snapshot

KERNELS = ("7.0", "7.1", "7.3", "next", "6.18")


def seq_home(objects: int) -> str | None:
    """The kmalloc cache of a sequence of ``objects`` entries (4 bytes each); None: none.

    The kernel's ``kcalloc`` size class; an 8-byte one (two objects per slab) takes kmalloc-16
    in numslab, whose own objects need a second granule (``hardening.MIN_OWN_KMALLOC``)."""
    if objects < 2:
        return None
    return kmalloc_cache_name(next(k for k in KMALLOC_SIZES if k >= max(4 * objects, 16)))


def counts(sa: numslab.SlabAllocator) -> dict[str, tuple[int, int, int]]:
    """Per kmalloc cache: (random sequences, live objects, objects users hold).

    Live objects under 6.18 only: a 7.x kmalloc cache's own sheaves move with every kfree
    (a full main sheaf traded for an empty one kmalloc'ed), the sequences' or not."""
    six = sa.kernel == "6.18"
    return {k.name: (k.random_seq_objects, k.live_objects if six else -1, len(k))
            for k in sa.kmalloc_caches}


def expected_homes(caches) -> dict[str, int]:
    """How many sequences each kmalloc cache holds for ``caches``."""
    out = {k: 0 for k in map(kmalloc_cache_name, KMALLOC_SIZES)}
    for c in caches:
        home = seq_home(c.objs_per_slab)
        if home:
            out[home] += 1
    return out


def check_sequence(sa: numslab.SlabAllocator, c: numslab.KmemCache) -> None:
    """Cache ``c``'s sequence object: its entries as unsigned ints, ``find`` naming it."""
    addr = int(sa.state.random_seq[c.id])
    home = seq_home(c.objs_per_slab)
    if home is None:
        assert addr == 0 and c.random_seq is None
        return
    n = c.objs_per_slab
    assert sa.memory[addr:addr + 4 * n].view(np.uint32).tolist() == c.random_seq.tolist()
    found = sa.find(addr)
    assert found["kind"] == "random_seq" and found["cache"].name == home
    assert found["offset"] == 0


@pytest.mark.parametrize("nodes", [1, 2])
def test_boot_kcallocs_every_kmalloc_caches_sequence(kernel, nodes):
    """``init_freelist_randomization``: each kmalloc cache's sequence, 13 kmalloc objects
    (kmalloc-8's 512 entries in kmalloc-2k .. kmalloc-8k's 4 in kmalloc-16); none is a
    user's object."""
    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=nodes, memory="8M", kernel=kernel)
    want = expected_homes(sa.kmalloc_caches)
    assert want == {"kmalloc-8": 0, "kmalloc-16": 1, "kmalloc-32": 1, "kmalloc-64": 4,
                    "kmalloc-96": 1, "kmalloc-128": 1, "kmalloc-192": 1, "kmalloc-256": 1,
                    "kmalloc-512": 1, "kmalloc-1k": 1, "kmalloc-2k": 1, "kmalloc-4k": 0,
                    "kmalloc-8k": 0}
    assert {k: v[0] for k, v in counts(sa).items()} == want
    assert len(sa.random_seq_addresses()) == 13
    assert all(len(k) == 0 for k in sa.kmalloc_caches)
    for k in sa.kmalloc_caches:
        check_sequence(sa, k)
    # every sequence comes from node 0, the booting CPU's (kmalloc on any node)
    assert {sa.page_to_nid(int(a)) for a in sa.random_seq_addresses()} == {0}
    sa.validate()


def test_a_boot_kcalloc_that_fails_leaves_that_kmalloc_cache_unrandomised(kernel,
                                                                         monkeypatch):
    """``init_freelist_randomization`` ignores ``init_cache_random_seq``'s failure: that
    cache keeps no sequence (``shuffle_freelist`` then lays its slabs out in address order);
    the boot goes on. Here every kcalloc but kmalloc-64's fails."""
    from numslab.facade import hardening
    real, calls = hardening.kmalloc_internal, []

    def failing(st, cpu, size, gfp, node):
        calls.append(size)
        return real(st, cpu, size, gfp, node) if size == 256 else 0
    monkeypatch.setattr(hardening, "kmalloc_internal", failing)
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    monkeypatch.undo()
    # slab_caches' order: the last made first (8k .. 8, 192, 96): kmalloc-8k's 16 bytes first
    assert calls == [16, 32, 64, 64, 64, 64, 128, 256, 512, 1024, 2048, 84, 168]
    k64 = sa.find_cache("kmalloc-64")
    assert [k.name for k in sa.kmalloc_caches if k.random_seq is not None] == ["kmalloc-64"]
    assert sa.state.ca[k64.id, CA_RSEQ_LEN] == 64 and len(sa.random_seq_addresses()) == 1
    check_sequence(sa, k64)
    a = [sa.kmalloc(8) for _ in range(4)]
    d = np.diff(a)                  # address order, no sequence (7.x: popped off a sheaf)
    assert (d == 8).all() or (d == -8).all()
    sa.validate()


def test_no_sequences_without_freelist_random(kernel):
    """``freelist_random=False``: no CONFIG_SLAB_FREELIST_RANDOM, no ``s->random_seq``."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, freelist_random=False)
    before = counts(sa)
    c = sa.kmem_cache_create("plain", 100)          # (its sheaves and barn: 7.x)
    assert not sa.random_seq_addresses().size and not sa.state.random_seq.any()
    assert all(k.random_seq_objects == 0 for k in sa.kmalloc_caches)
    sa.kmem_cache_destroy(c)
    assert counts(sa) == before
    sa.validate()


@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.parametrize("size, objects, home", [
    (100, 39, "kmalloc-192"),       # 156 bytes
    (8, 512, "kmalloc-2k"),         # 2048 bytes: the largest numslab allows
    (4000, 8, "kmalloc-32"),        # order 3
    (700, 23, "kmalloc-96"),        # 92 bytes
    (16384, 2, "kmalloc-16"),       # 8 bytes: kmalloc-8 in the kernel (see seq_home)
    (3 << 20, 1, None),             # one object per slab: no sequence (count < 2)
])
def test_create_kcallocs_the_sequence_and_destroy_kfrees_it(kernel, nodes, size, objects,
                                                            home):
    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=nodes, memory="16M", kernel=kernel)
    before = counts(sa)
    c = sa.kmem_cache_create("x", size)
    assert c.objs_per_slab == objects and seq_home(objects) == home
    after = counts(sa)
    for name, (seqs, _, held) in after.items():
        assert seqs == before[name][0] + (name == home), name
        assert held == 0, name                      # (barns and sheaves are the allocator's)
    check_sequence(sa, c)
    sa.validate()
    cid = c.id
    sa.kmem_cache_destroy(c)
    assert counts(sa) == before                     # every count restored
    assert sa.state.random_seq[cid] == 0
    sa.validate()
    again = sa.kmem_cache_create("x", size)         # the slot again: a sequence again
    check_sequence(sa, again)


def test_users_cannot_free_a_sequence(kernel):
    """The object is the allocator's own: a user's kfree is refused, naming it."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("x", 100)
    addr = int(sa.state.random_seq[c.id])
    snap = snapshot(sa)
    with pytest.raises(numslab.BadAddressError, match=r"random free-list sequence "
                                                      r"\(s->random_seq\) the allocator"):
        sa.kfree(addr)
    assert np.array_equal(snapshot(sa)[0], snap[0])


def _exhaust(sa: numslab.SlabAllocator, size: int) -> list[int]:
    """Every page, then every object kmalloc(size) can still get; returns the objects."""
    pages = []
    while (p := sa.alloc_pages(0, -1, GFP_KERNEL | __GFP_NOWARN)):
        pages.append(p)
    held = []
    while (a := sa.kmalloc(size, GFP_KERNEL | __GFP_NOWARN)):
        held.append(a)
    return held


def _same_but_stats(sa: numslab.SlabAllocator, snap: tuple[np.ndarray, np.ndarray],
                    cid: int) -> None:
    """Everything as in ``snap`` but the counters, the remote-node generator (the failed
    kcalloc's search of the partial lists draws from it) and the rows of the dead slot
    ``cid``; the arena's bytes too."""
    now = snapshot(sa)[0]
    was = snap[0].copy()
    view(was, F_STATS)[:] = view(now, F_STATS)
    view(was, F_G)[G_RNG] = view(now, F_G)[G_RNG]
    for f, n in ((F_CA, sa.state.ca.shape[1]), (F_CPU, sa.state.cpu[0].size),
                 (F_NODE, sa.state.node[0].size), (F_RSEQ, sa.state.rseq.shape[1])):
        view(was, f)[cid * n:(cid + 1) * n] = view(now, f)[cid * n:(cid + 1) * n]
    assert np.array_equal(now, was), np.flatnonzero(now != was)[:10]
    assert np.array_equal(sa.memory, snap[1])


@pytest.mark.parametrize("nodes", [1, 2])
def test_no_memory_for_the_sequence_leaves_everything_as_it_was(kernel, nodes, caplog):
    """``init_cache_random_seq`` failing: ``do_kmem_cache_create`` releases the cache and
    fails; nothing else was allocated, every structure stays as it was."""
    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=nodes, memory="8M", kernel=kernel)
    held = _exhaust(sa, 2048)
    names, before, snap = [c.name for c in sa.caches], counts(sa), snapshot(sa)
    free_slot = int(np.flatnonzero(sa.state.ca[:, 0] == 0)[0])
    with caplog.at_level(logging.WARNING):
        with pytest.raises(numslab.OutOfMemoryError,
                           match=r"kmem_cache_create\(x\): no memory for its random free-list "
                                 r"sequence \(s->random_seq: kcalloc of 512 x 4 bytes, "
                                 r"kmalloc-2k\); no cache made"):
            sa.kmem_cache_create("x", 8)
    assert isinstance(numslab.OutOfMemoryError("x"), numslab.SlabError)
    assert [c.name for c in sa.caches] == names and counts(sa) == before
    assert sa.state.random_seq[free_slot] == 0 and sa.state.ca[free_slot, CA_RSEQ_LEN] == 0
    _same_but_stats(sa, snap, free_slot)
    sa.validate()
    sa.kfree(held[0])                               # room again: the same call succeeds
    c = sa.kmem_cache_create("x", 8)
    check_sequence(sa, c)
    sa.validate()


@pytest.mark.parametrize("gen", ["7.0", "7.3", "6.18"])
def test_no_memory_after_the_sequence_frees_it_again(gen):
    """The sequence made, the barns (a 6.18 cache's with sheaf_capacity too) find no memory:
    ``__kmem_cache_release`` kfrees the sequence first; the kmalloc caches' counts are as
    before."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=gen)
    held = _exhaust(sa, 2048)
    sa.kfree(held.pop())                            # one kmalloc-2k object: the sequence's
    held += [a for a in iter(lambda: sa.kmalloc(64, GFP_KERNEL | __GFP_NOWARN), 0)]
    held += [a for a in iter(lambda: sa.kmalloc(128, GFP_KERNEL | __GFP_NOWARN), 0)]
    names, before = [c.name for c in sa.caches], counts(sa)
    with pytest.raises(numslab.OutOfMemoryError, match=r"no memory for its node barns \(struct "
                                                       r"node_barn, kmalloc-64\)"):
        sa.kmem_cache_create("x", 8, sheaf_capacity=4)
    assert [c.name for c in sa.caches] == names and counts(sa) == before
    assert not sa.state.random_seq[sa.state.ca[:, 0] == 0].any()
    sa.validate()


def test_the_caches_of_a_real_snapshot_kcalloc_their_sequences_where_its_geometry_says():
    """The shared /sys/kernel/slab snapshot (a 6.18 kernel, 2 CPUs, 222 caches besides the
    kmalloc caches once aliases are merged), its caches made on a like machine: each kmalloc
    class holds the sequences the snapshot's own objects per slab put there (``4 * count``
    bytes), but for the 5 caches numslab lays out otherwise (a constructor or flags sysfs
    does not show), and fewer than the objects the snapshot shows in use there. sysfs cannot
    tell a sequence from other objects, so this bounds and cannot say whether that kernel had
    CONFIG_SLAB_FREELIST_RANDOM."""
    import json
    import lzma
    import warnings
    from collections import Counter
    from pathlib import Path
    snap = json.loads(lzma.decompress(
        (Path(__file__).parent / "data" / "kmem_snapshot_git_tar.json.xz").read_bytes()))
    caches = [c for c in snap["caches"] if not c.get("alias_of")]
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="64M", max_caches=512)
    ours = {k.name: k for k in sa.kmalloc_caches}
    flags = {"hwcache_align": numslab.SLAB_HWCACHE_ALIGN,
             "reclaim_account": numslab.SLAB_RECLAIM_ACCOUNT,
             "destroy_by_rcu": numslab.SLAB_TYPESAFE_BY_RCU}
    want, other = Counter(), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in caches:
            made = ours.get(c["name"]) or sa.kmem_cache_create(
                c["name"], int(c["object_size"]),
                0 if c["hwcache_align"] == "1" else int(c["align"]),
                flags=sum(f for k, f in flags.items() if c[k] == "1"))
            n = int(c["objs_per_slab"])
            if made.objs_per_slab != n:
                other, n = other + 1, made.objs_per_slab
            want[seq_home(n)] += 1
    assert len(caches) == 13 + 222 and other == 5
    got = {k.name: k.random_seq_objects for k in sa.kmalloc_caches}
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if k}
    assert got["kmalloc-64"] == 81 and got["kmalloc-96"] == 56 and got["kmalloc-2k"] == 6
    shown = {c["name"]: int(c["objects"].split()[0]) for c in caches}
    assert all(n < shown[k] for k, n in got.items() if n), (got, shown)
    sa.validate()


@pytest.mark.parametrize("gen", ["7.0", "next"])
def test_no_memory_for_the_sheaves_frees_the_sequence_and_the_barn(gen):
    """The sequence and the barn made, ``init_percpu_sheaves`` finds no memory for a 7.x
    cache's 60-object sheaves (512 bytes each): ``__kmem_cache_release`` kfrees the
    sequence, then the barn; every kmalloc cache's counts are as before."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=gen)
    held = _exhaust(sa, 2048)
    sa.kfree(held.pop())                            # one kmalloc-2k object: the sequence's
    held += [a for a in iter(lambda: sa.kmalloc(512, GFP_KERNEL | __GFP_NOWARN), 0)]
    small = [a for a in iter(lambda: sa.kmalloc(64, GFP_KERNEL | __GFP_NOWARN), 0)]
    sa.kfree(small.pop())                           # one kmalloc-64 object: the barn's
    names, before, barns = [c.name for c in sa.caches], counts(sa), len(sa.barn_addresses())
    with pytest.raises(numslab.OutOfMemoryError, match=r"kmem_cache_create\(x\): no memory "
                                                       r"for the per-CPU sheaves; no cache"):
        sa.kmem_cache_create("x", 8)
    assert [c.name for c in sa.caches] == names and counts(sa) == before
    assert len(sa.barn_addresses()) == barns and len(sa.random_seq_addresses()) == 13
    sa.validate()
