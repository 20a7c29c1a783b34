"""slab_debug (F, Z, P, U, T): the debug layout, the ``slab_debug=`` option, the checked slow
paths with their reports and refusals, and ``kmem_cache_validate``'s repairs."""
from __future__ import annotations

import logging

import numba
import numpy as np
import pytest

from conftest import assert_unchanged, snapshot

import numslab
from numslab import (SLAB_CONSISTENCY_CHECKS as F, SLAB_KMALLOC, SLAB_POISON as P,
                     SLAB_RED_ZONE as Z, SLAB_STORE_USER as U, SLAB_TRACE as T)
from numslab.facade.debugapi import DEBUG_DEFAULT_FLAGS, parse_slab_debug
from numslab.geometry import calculate_geometry

KERNELS = ("7.0", "6.18")


# ---- geometry --------------------------------------------------------------------------------
#: (object size, flags, kmalloc align) -> (s->size, inuse, offset, red_left_pad), worked out by
#: hand from calculate_sizes (mm/slub.c) with sizeof(struct track) = 32:
#: * 64 Z: 64 == object_size so inuse 72; pointer stays at 32; +8 pad, +8 left = 88.
#: * 64 P: inuse 64; pointer moved to 64, size 72 (test_next_pointer's s->offset 64).
#: * 64 FZPU: inuse 72; pointer at 72, 80; tracks 144; +8 pad 152, +8 left 160.
#: * kmalloc-32 FZPU (align 32): inuse 40; pointer 40 -> 48; tracks 112; orig_size (an
#:   unsigned long since 6.18) 120; +8 pad 128; left pad ALIGN(8, 32) = 32 -> 160.
#: * kmalloc-64 ZU (align 64): inuse 72; orig_size moves the pointer: 72 -> 80; tracks 144;
#:   orig 152; +8 160; left 64 -> 224 -> ALIGN(224, 64) = 256.
#: * kmalloc-16 FZPU (align 16): inuse 24; pointer 32; tracks 96; orig 104; +8 112; left 16
#:   -> 128.
#: * 1 Z: size 8 != 1 (no extra word), inuse 8; pointer moved (object < a word): 16; +8 +8 = 32.
GEOMETRY = [
    (64, Z, 0, (88, 72, 32, 8)),
    (64, P, 0, (72, 64, 64, 0)),
    (64, F | Z | P | U, 0, (160, 72, 72, 8)),
    (32, F | Z | P | U | SLAB_KMALLOC, 0, (160, 40, 40, 32)),
    (64, Z | U | SLAB_KMALLOC, 0, (256, 72, 72, 64)),
    (1, Z, 0, (32, 8, 8, 8)),
    (16, F | Z | P | U | SLAB_KMALLOC, 0, (128, 24, 24, 16)),
    (24, U, 0, (88, 24, 8, 0)),        # pointer at ALIGN_DOWN(12, 8); 24 + 64 tracks
]


@pytest.mark.parametrize("size,flags,align,want", GEOMETRY)
def test_debug_geometry_follows_calculate_sizes(size, flags, align, want):
    g = calculate_geometry(size, align, flags, False, 2)
    assert (g.slab_size, g.inuse, g.offset, g.red_left_pad) == want
    assert g.objs_per_slab == (4096 << g.order) // g.slab_size
    assert g.cpu_partial == 0                           # debug caches keep no CPU partials


def test_non_debug_geometry_is_unchanged():
    for size in (8, 24, 64, 100, 4096):
        g = calculate_geometry(size, 0, 0, False, 2)
        assert g.red_left_pad == 0 and g.track_offset == 0 and g.orig_size_offset == 0


def test_allocator_cache_reports_the_debug_layout():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="FZPU")
    c = sa.find_cache("kmalloc-32")
    assert (c.slab_size, c.red_left_pad, c.offset, c.inuse) == (160, 32, 40, 40)
    assert c.debug_flags == DEBUG_DEFAULT_FLAGS and c.sheaf_capacity == 0
    files = c.sysfs()
    assert [files[k] for k in ("sanity_checks", "red_zone", "poison", "store_user",
                               "trace")] == ["1", "1", "1", "1", "0"]
    assert files["slab_size"] == "160" and files["cpu_partial"] == "0"


# ---- the slab_debug option -------------------------------------------------------------------
def test_parse_slab_debug_as_the_boot_parameter():
    assert parse_slab_debug(None) == (0, [])
    assert parse_slab_debug("") == (DEBUG_DEFAULT_FLAGS, [])
    assert parse_slab_debug("fzpu") == (F | Z | P | U, [])
    assert parse_slab_debug("FZ,kmalloc-*,dentry") == (0, [(F | Z, ["kmalloc-*", "dentry"])])
    assert parse_slab_debug(",dentry") == (0, [(DEBUG_DEFAULT_FLAGS, ["dentry"])])
    assert parse_slab_debug("P;Z,a") == (P, [(Z, ["a"])])
    assert parse_slab_debug("FZ-P") == (P, [])           # '-' drops what came before
    # parse_slub_debug_flags skips empty blocks: a trailing or doubled ';' left the global
    # flags at 0; a comma makes a slab list even with no name (setup_slub_debug tests the
    # list pointer), so the global flags stay as they were
    assert parse_slab_debug("F;") == (F, [])
    assert parse_slab_debug("F;;Z,a") == (F, [(Z, ["a"])])
    assert parse_slab_debug(";;P;") == (P, [])
    assert parse_slab_debug("F,") == (0, [(F, [])])
    assert parse_slab_debug("U;F,") == (U, [(F, [])])
    with pytest.raises(numslab.SlabError, match="'x'"):
        parse_slab_debug("Fx")


def test_slab_debug_picks_caches_by_name_and_prefix():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="FZ,kmalloc-*;U,dentry;P")
    assert all(c.debug_flags == F | Z for c in sa.kmalloc_caches)
    assert sa.kmem_cache_create("dentry", 192).debug_flags == U
    assert sa.kmem_cache_create("dentry2", 192).debug_flags == P      # exact names only
    assert sa.kmem_cache_create("other", 64, flags=T).debug_flags == P | T
    plain = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="-")
    assert plain.find_cache("kmalloc-64").debug_flags == 0


# ---- bytes -----------------------------------------------------------------------------------
def expected_bytes(c, active: bool) -> np.ndarray:
    """Naive oracle: the bytes of an object slot [object - red_left, object + inuse) of an
    F/Z/P cache as init_object writes them."""
    rz = 0xcc if active else 0xbb
    out = [rz] * c.red_left_pad + [0x6b] * (c.object_size - 1) + [0xa5]
    out += [rz] * (c.inuse - c.object_size)
    return np.array(out, np.uint8)


def test_poison_and_red_zones_around_live_and_free_objects(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("c", 100, flags=F | Z | P)
    a = sa.kmem_cache_alloc(c)
    b = sa.kmem_cache_alloc(c)
    lo = c.red_left_pad
    assert (a - lo - (a & ~4095)) % c.slab_size == 0    # slot start on the grid
    assert np.array_equal(sa.memory[a - lo:a + c.inuse], expected_bytes(c, True))
    sa.kmem_cache_free(c, a)
    assert np.array_equal(sa.memory[a - lo:a + c.inuse], expected_bytes(c, False))
    end = a + c.offset + 8                              # after the moved free pointer
    assert (sa.memory[end:a - lo + c.slab_size] == 0x5a).all()     # padding
    assert sa.kmem_cache_validate(c) == 0
    stats = c.stats
    assert stats.get("alloc_fastpath", 0) == 0 and stats["alloc_slowpath"] == 2
    sa.kmem_cache_free(c, b)
    sa.validate()


def test_zeroed_kmalloc_keeps_the_red_zone_past_the_size_asked():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="ZU,kmalloc-64")
    p = sa.kzalloc(40)
    assert (sa.memory[p:p + 40] == 0).all() and (sa.memory[p + 40:p + 72] == 0xcc).all()
    sa.kfree(p)


# ---- checked allocation and free -------------------------------------------------------------
def test_write_after_free_is_caught_at_the_next_allocation(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("uaf", 64, flags=F | P)
    keep = sa.kmem_cache_alloc(c)
    a = sa.kmem_cache_alloc(c)
    sa.kmem_cache_free(c, a)
    sa.memory[a + 10] = 0x42
    with pytest.raises(numslab.SlabDebugError, match="Poison overwritten") as e:
        sa.kmem_cache_alloc(c)
    assert str(e.value).startswith(f"allocation from uaf: object {a:#x}: [Poison overwritten] ")
    assert str(e.value).endswith("\nBUG uaf (Not tainted): Object corrupt")
    text = "\n".join(e.value.reports)
    assert "First byte 0x42 instead of 0x6b" in text
    assert f"{a + 10:#x}-{a + 10:#x}" in text and "FIX uaf: Marking all objects used" in text
    # the slab as the report saw it, before the fix marked its objects used (the object
    # popped, keep's and a's of its objects in use, its free list past a): not as it is now
    slab_line = next(ln for ln in text.splitlines() if ln.startswith("Slab "))
    assert slab_line.startswith(f"Slab {a & ~4095:#x} objects={c.objs_per_slab} used=2 fp=0x")
    assert int(slab_line.split("fp=")[1], 16) != 0
    assert sa.state.sl_inuse[a >> 12] == c.objs_per_slab   # what the fix left
    assert len(sa.isolated_slabs()) == 1                # slab_fix: no longer allocated from
    b = sa.kmem_cache_alloc(c)                          # a new slab serves
    assert b >> 12 != a >> 12
    sa.kmem_cache_free(c, b)
    sa.kmem_cache_free(c, keep)
    sa.validate()


def test_overflow_refuses_the_free_and_names_the_first_bad_byte(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("ovf", 64, flags=F | Z | U)
    a = sa.kmem_cache_alloc(c)
    sa.memory[a + 64:a + 67] = (1, 2, 3)
    with pytest.raises(numslab.SlabDebugError) as e:
        sa.kmem_cache_free(c, a)
    msg = str(e.value)
    assert "[Right Redzone overwritten]" in msg and "BUG ovf (Not tainted): Object corrupt" in msg
    assert f"{a + 64:#x}-{a + 66:#x}" in msg and "First byte 0x1 instead of 0xcc" in msg
    assert "Allocated in test_overflow_refuses_the_free" in "\n".join(e.value.reports)
    assert sa.find(a)["kind"] == "object"               # refused: still allocated
    assert (sa.memory[a + 64:a + 72] == 0xcc).all()     # restore_bytes repaired it
    sa.kmem_cache_free(c, a)                            # so a second free goes through
    assert sa.find(a)["kind"] == "free object"
    sa.validate()


def test_a_krealloc_whose_free_is_refused_keeps_no_new_object(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, slab_debug="FZ")
    a = sa.kmalloc(64)
    sa.memory[a + 64] = 1                               # into the right red zone
    live = sum(c.live_objects for c in sa.kmalloc_caches)
    with pytest.raises(numslab.SlabDebugError, match="Right Redzone"):
        sa.krealloc(a, 500)             # grows: kmalloc(500), copy, then kfree(a) refused
    # before: the kmalloc(500) object stayed allocated, its address never handed out
    assert sum(c.live_objects for c in sa.kmalloc_caches) == live
    assert sa.find(a)["kind"] == "object"
    assert sa.krealloc(a, 500) != a                     # the zone restored: now it moves
    sa.validate()


@pytest.mark.parametrize("fill", [0x81, 0x41])
def test_an_overflow_over_the_stored_orig_size_is_reported_not_followed(kernel, fill):
    """A kmalloc object's ``orig_size`` (after its tracks, in the arena) overwritten by a
    user's overflow: the checks never reach past the object. Before, a negative one made
    ``check_object`` read and restore bytes far outside the arena (a segfault)."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, slab_debug="FZPU")
    a = sa.kmalloc(100)
    c = sa.find(a)["cache"]
    sa.memory[a + 128:a + c.slab_size - c.red_left_pad] = fill
    with pytest.raises(numslab.SlabDebugError):
        sa.kfree(a)
    assert sa.find(a)["kind"] == "object"
    sa.kfree(a)
    assert sa.find(a)["kind"] == "free object"
    sa.validate()



@pytest.mark.parametrize("hardened", [True, False])
def test_reports_read_as_6_18_and_7_0_print_them(kernel, hardened):
    # check_bytes_and_report since 6.15: "[<what> overwritten] ..." for every bad range,
    # object_err's "Object corrupt" with the trailer only for the object's first failing
    # check; print_trailer's Object line names the free pointer (decoded as stored)
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel,
                               freelist_hardened=hardened)
    c = sa.kmem_cache_create("rep", 64, flags=Z | P | U)
    keep, a = sa.kmem_cache_alloc(c), sa.kmem_cache_alloc(c)
    sa.kmem_cache_free(c, a)
    off = c.offset                      # outside the object (P): a free object's fp
    word = int(sa.memory[a + off:a + off + 8].view(np.int64)[0])
    sa.memory[a - 3] = 1                                # left red zone, then poison
    sa.memory[a + 5:a + 7] = 2
    sa.slab_reports(clear=True)
    assert sa.kmem_cache_validate(c) == 4
    first, fix1, second, fix2 = sa.slab_reports()
    base = a & ~4095
    lines = first.splitlines()
    assert lines[0] == (f"[Left Redzone overwritten] {a - 3:#x}-{a - 3:#x} "
                        f"@offset={a - 3 - base}. First byte 0x1 instead of 0xbb")
    assert lines[1] == "BUG rep (Not tainted): Object corrupt"
    assert lines[2].startswith("Allocated in test_reports_read_as") and \
        lines[3].startswith("Freed in test_reports_read_as")
    assert lines[4].startswith(f"Slab {base:#x} objects={c.objs_per_slab} used=")
    # the free pointer: the next free object (or NULL), whatever the hardening stored
    fp = int(lines[5].split("fp=")[1], 16)
    assert lines[5] == f"Object {a:#x} @offset={a - base} fp={fp:#x}"
    assert fp == 0 or sa.find(fp)["kind"] == "free object"
    assert (word == fp) != hardened or fp == 0
    assert second == (f"[Poison overwritten] {a + 5:#x}-{a + 6:#x} @offset={a + 5 - base}. "
                      f"First byte 0x2 instead of 0x6b")     # no second object_err
    assert fix1 == f"FIX rep: Restoring Left Redzone {a - 3:#x}-{a - 3:#x}=0xbb"
    assert fix2 == f"FIX rep: Restoring Poison {a + 5:#x}-{a + 6:#x}=0x6b"
    assert sa.kmem_cache_validate(c) == 0
    sa.kmem_cache_free(c, keep)
    sa.validate()


def test_a_leaky_destroy_lists_what_free_partial_lists(kernel):
    # __kmem_cache_shutdown: flush_all, then per node free_partial's list_slab_objects for
    # the partial slabs holding objects, returning at the first node with slabs left: full
    # slabs and the later nodes were listed too
    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=2, memory="8M", kernel=kernel,
                               slab_debug="U,leak", freelist_random=False)
    c = sa.kmem_cache_create("leak", 1024)
    per = c.objs_per_slab
    full = [sa.kmem_cache_alloc_node(c, node=0) for _ in range(2 * per)]
    part = [sa.kmem_cache_alloc_node(c, node=0) for _ in range(3)]
    other = [sa.kmem_cache_alloc_node(c, node=1) for _ in range(2)]
    assert {sa.page_to_nid(a) for a in full + part} == {0} and \
        {sa.page_to_nid(a) for a in other} == {1}
    sa.kmem_cache_free(c, part[1])                  # the partial slab: objects 0 and 2 left
    sa.slab_reports(clear=True)
    with pytest.raises(numslab.CacheLeakError):
        sa.kmem_cache_destroy(c)
    reps = sa.slab_reports()
    assert reps[0] == "BUG leak (Not tainted): Objects remaining on __kmem_cache_shutdown()"
    listed = [int(r.split()[1], 16) for r in reps[1:]]
    assert listed == [part[0], part[2]] and len(reps) == 3
    assert reps[-1].splitlines()[-1].startswith(f"Slab {part[0] & ~4095:#x} ")
    for a in full + [part[0], part[2]] + other:     # the cache was left as it was
        sa.kmem_cache_free(c, a)
    sa.kmem_cache_destroy(c)
    sa.validate()

def test_a_forced_destroy_frees_what_slab_debug_refuses_with_a_warning(kernel):
    """One stray byte in a live object's red zone made ``kmem_cache_destroy(force=True)``
    raise ``SlabDebugError`` with nothing freed, and each retry refused another object: the
    refused detached freelist leaves the objects checked before the bad one with their
    free-state bytes (``free_debug_processing``'s ``init_object`` before "Object at .. not
    freed"), which the next check then reports (17 calls here before the destroy went
    through). Force now frees what the checks refuse without them, and warns."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="32M", kernel=kernel, slab_debug="FZPU")
    c = sa.kmem_cache_create("d", 96)
    objs = [sa.kmem_cache_alloc(c) for _ in range(40)]
    sa.memory[objs[3] - 1] = 1                          # object 3's left red zone
    sa.slab_reports(clear=True)
    with pytest.warns(RuntimeWarning, match=r"kmem_cache_destroy\(d, force=True\): "
                                            r"kmem_cache_free_bulk\(d\): element \d+: object "
                                            rf"{objs[3]:#x}: \[Left Redzone overwritten\]"):
        sa.kmem_cache_destroy(c, force=True)
    assert type(c) is not numslab.KmemCache and "d" not in [x.name for x in sa.caches]
    assert any("Left Redzone overwritten" in r for r in sa.slab_reports())
    sa.validate()
    e = sa.kmem_cache_create("e", 96)                   # the slabs went back whole
    assert sa.kmem_cache_validate(e) == 0
    again = [e.alloc() for _ in range(60)]
    for a in again:
        e.free(a)
    sa.validate()


def test_a_forced_destroy_never_leaves_the_checks_off_where_another_thread_could_run(
        kernel, monkeypatch):
    """The forced destroy turned the cache's checks off from Python (``CA_DEBUG`` 0) for its
    next attempt, and another thread's allocation in between skipped them (1 in 20 racing
    trials). The checks are now off only inside one engine call: whenever Python code runs
    during the destroy (here: each time it reads the objects left), they are on."""
    from numslab.engine.layout import CA_DEBUG
    sa = numslab.SlabAllocator(nr_cpus=2, memory="32M", kernel=kernel, slab_debug="FZPU")
    c = sa.kmem_cache_create("d", 96)
    objs = [sa.kmem_cache_alloc(c) for _ in range(40)]
    sa.memory[objs[3] - 1] = 1                          # object 3's left red zone
    seen = []
    real = numslab.KmemCache.live_addresses

    def reading(self):
        seen.append(int(sa.state.ca[c.id, CA_DEBUG]))
        return real(self)
    monkeypatch.setattr(numslab.KmemCache, "live_addresses", reading)
    with pytest.warns(RuntimeWarning, match="freed without its checks"):
        sa.kmem_cache_destroy(c, force=True)
    assert len(seen) >= 2 and all(seen)
    sa.validate()


def test_double_free_is_reported_as_object_already_free():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("df", 64, flags=F)
    a = sa.kmem_cache_alloc(c)
    sa.kmem_cache_free(c, a)
    with pytest.raises(numslab.DoubleFreeError, match="Object already free"):
        sa.kmem_cache_free(c, a)
    assert any("FIX df: Object at" in r and "not freed" in r for r in sa.slab_reports())


def test_free_track_names_the_freeing_line():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("trk", 64, flags=Z | P | U)
    keep = sa.kmem_cache_alloc(c)
    a = sa.kmem_cache_alloc(c)
    sa.kmem_cache_free(c, a)                            # the line the report must name
    line = test_free_track_names_the_freeing_line.__code__.co_firstlineno + 5
    sa.memory[a] = 0
    assert sa.kmem_cache_validate(c) == 2
    text = "\n".join(sa.slab_reports())
    assert f"Freed in test_free_track_names_the_freeing_line {__file__}:{line}" in text
    assert "Poison overwritten" in text
    sa.kmem_cache_free(c, keep)


def test_trace_logs_each_alloc_and_free(caplog):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="T,tr")
    c = sa.kmem_cache_create("tr", 64)
    # trace() prints the slab as the debug paths see it: an allocation after the object
    # left the free list, a free before it joins it (free_debug_processing runs first)
    with caplog.at_level(logging.INFO, logger="numslab"):
        a = sa.kmem_cache_alloc(c)
        after_a = int(sa.state.sl_freelist[a >> 12])
        b = sa.kmem_cache_alloc(c)
        head = int(sa.state.sl_freelist[a >> 12])
        sa.kmem_cache_free(c, a)
        sa.kmem_cache_free(c, b)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("TRACE")]
    assert lines == [f"TRACE tr alloc {a:#x} inuse=1 fp={after_a:#x}",
                     f"TRACE tr alloc {b:#x} inuse=2 fp={head:#x}",
                     f"TRACE tr free {a:#x} inuse=2 fp={head:#x}",
                     f"TRACE tr free {b:#x} inuse=1 fp={a:#x}"]


def test_batches_and_arrays_take_the_checked_path(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, slab_debug="FZP")
    c = sa.kmem_cache_create("b", 200)
    out = np.zeros(100, np.int64)
    assert sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, 100, out) == 100
    assert all(sa.memory[a + 199] == 0xa5 for a in out)         # init_object ran on each
    arr = np.zeros(40, np.int64)
    assert sa.kmem_cache_alloc_array(c, numslab.GFP_KERNEL, 40, arr) == 40
    sa.validate()
    sa.memory[out[50] + 200] = 7                       # overflow into one red zone
    bad = int(out[50])
    with pytest.raises(numslab.SlabDebugError, match="Right Redzone"):
        sa.kmem_cache_free_bulk(c, 100, out)
    sa.kfree_bulk(40, arr)

    def live():
        return np.array([a for a in out if sa.find(int(a))["kind"] == "object"], np.int64)
    # the kernel refuses the bad object's whole detached freelist and frees the others
    assert bad in live() and 1 < len(live()) < 100
    # the chain's objects before the bad one had passed free_debug_processing, which
    # init_object'ed them inactive: the next free of each finds it so, restores and
    # refuses it (as a batch, such a chain is refused at its first object every time)
    refused = 0
    for a in live().tolist():
        try:
            sa.kmem_cache_free(c, a)
        except numslab.SlabDebugError as e:
            assert "First byte 0xbb instead of 0xcc" in "\n".join(e.reports)
            refused += 1
            sa.kmem_cache_free(c, a)
    assert refused >= 1
    assert c.live_objects == 0
    sa.validate()


def test_a_refused_kfree_bulk_says_to_free_the_rest_with_kfree():
    """A refused kfree_bulk said to free what it left "with kmem_cache_free": kmalloc
    objects, of caches the caller never named, go back with kfree."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="FZU")
    objs = np.array([sa.kmalloc(100) for _ in range(10)], np.int64)
    sa.memory[objs[2] + 100] = 1                    # past the size asked for: red-zoned
    with pytest.raises(numslab.SlabDebugError, match="one by one with kfree, twice") as e:
        sa.kfree_bulk(10, objs)
    for a in e.value.objects.tolist():
        try:
            sa.kfree(a)
        except numslab.SlabDebugError:
            sa.kfree(a)
    assert not any(sa.find(int(a))["kind"] == "object" for a in objs)
    sa.validate()


def test_njit_calls_on_a_debug_cache_are_checked(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("j", 64, flags=F | Z | U)
    h, cid = sa.handle, c.id

    @numba.njit
    def alloc(h, cid):
        return numslab.jit.kmem_cache_alloc(h, cid)

    @numba.njit
    def free(h, cid, a):
        numslab.jit.kmem_cache_free(h, cid, a)

    a = alloc(h, cid)
    assert (sa.memory[a + 64:a + 72] == 0xcc).all()
    sa.memory[a + 70] = 0
    with pytest.raises(numslab.SlabDebugError):
        free(h, cid, a)
    assert "Allocated in an @njit function" in "\n".join(sa.slab_reports())
    free(h, cid, a)
    sa.validate()


@numba.njit
def _jit_alloc_bulk(h, cid, out):
    return numslab.jit.kmem_cache_alloc_bulk(h, cid, out.shape[0], out)


def test_an_allocation_a_debug_check_refuses_is_a_slab_debug_error_from_njit_too(kernel):
    # the facade tells a failed slab_debug check (it wrote reports) from a corrupted free
    # pointer; numslab.jit raised SlabCorruptionError for both
    for via_jit in (False, True):
        sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", kernel=kernel)
        c = sa.kmem_cache_create("rz", 40, flags=F | Z | P | U)
        objs = [c.alloc() for _ in range(3)]
        for a in objs:
            c.free(a)
            sa.memory[a + 40] ^= 0x5a               # a free object's red zone overwritten
        out = np.zeros(8, np.int64)
        with pytest.raises(numslab.SlabDebugError,
                           match="slab_debug check failed" if via_jit else "Redzone"):
            if via_jit:
                _jit_alloc_bulk(sa.handle, c.id, out)
            else:
                sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, 8, out)
        assert not out.any() and len(c) == 0       # nothing allocated
        assert any("Redzone" in r for r in sa.slab_reports())
        assert sa.isolated_slabs()


def test_debug_allocator_runs_the_python_methods():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="F")
    assert "kmem_cache_alloc" not in sa.__dict__        # no C gate in front
    assert type(sa).kmem_cache_alloc is numslab.SlabAllocator.kmem_cache_alloc


# ---- validate --------------------------------------------------------------------------------
def test_validate_repairs_so_a_second_pass_finds_nothing():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("v", 64, flags=Z | P)
    objs = [sa.kmem_cache_alloc(c) for _ in range(10)]
    for a in objs[::2]:
        sa.kmem_cache_free(c, a)
    assert objs[0] >> 12 == objs[1] >> 12               # one slab
    sa.memory[objs[0] + 3] = 1                          # a free object's poison
    sa.memory[objs[1] - 1] = 2                          # a live object's left red zone
    before = sa.memory.copy()
    # validate_slab stops at the first bad object of a slab (in address order, whatever
    # order the free list has), so each pass reports and repairs one: 1 error + 1 fix
    # (restore_bytes) each
    (lo, lo_good, _), (hi, _, hi_bad) = sorted([(objs[0] + 3, 0x6b, 1),
                                                (objs[1] - 1, 0xcc, 2)])
    assert sa.kmem_cache_validate(c) == 2 and sa.memory[lo] == lo_good
    assert sa.memory[hi] == hi_bad
    assert sa.kmem_cache_validate(c) == 2 and sa.memory[hi] != hi_bad
    assert sa.memory[objs[0] + 3] == 0x6b and sa.memory[objs[1] - 1] == 0xcc
    assert sa.kmem_cache_validate(c) == 0
    assert int((sa.memory != before).sum()) == 2       # nothing else touched
    sa.validate()


def test_save_and_load_keep_debug_caches_and_call_sites(tmp_path):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="ZPU,kmalloc-*")
    c = sa.kmem_cache_create("s", 64, flags=F | Z | U)
    a = sa.kmem_cache_alloc(c)
    p = sa.kmalloc(20)
    sa.save(tmp_path / "m.npz")
    sb = numslab.SlabAllocator.load(tmp_path / "m.npz")
    assert sb.find_cache("kmalloc-32").debug_flags == Z | P | U
    assert "kmem_cache_alloc" not in sb.__dict__ and sb.slab_reports() == []
    sb.memory[a + 64] = 0
    with pytest.raises(numslab.SlabDebugError, match="Right Redzone"):
        sb.kmem_cache_free(sb.find_cache("s"), a)
    assert "Allocated in test_save_and_load_keep_debug" in "\n".join(sb.slab_reports())
    sb.kfree(p)
    sb.validate()


def test_slab_padding_is_checked_and_restored():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("pad", 64, flags=P)         # 4096 % 72 = 64 bytes of padding
    a = sa.kmem_cache_alloc(c)
    end = (a & ~4095) + 4096
    assert (sa.memory[end - 64:end] == 0x5a).all()
    sa.memory[end - 10] = 0
    assert sa.kmem_cache_validate(c) == 2
    bug, fix = sa.slab_reports()[-2:]
    bad = f"{end - 10:#x}-{end - 10:#x}"
    assert bug.splitlines()[0] == (f"BUG pad (Not tainted): Padding overwritten. {bad} "
                                   f"@offset={4096 - 10}")        # slab_pad_check's slab_bug
    assert bug.splitlines()[1].startswith(f"Slab {a & ~4095:#x} objects=56 ")
    assert fix == f"FIX pad: Restoring slab padding {bad}=0x5a"
    assert sa.memory[end - 10] == 0x5a and sa.kmem_cache_validate(c) == 0
    sa.kmem_cache_free(c, a)


def test_sheaves_of_plain_caches_come_from_debug_kmalloc_caches(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=kernel,
                               slab_debug="FZPU,kmalloc-*")
    c = sa.kmem_cache_create("plain", 64, sheaf_capacity=8)
    assert c.debug_flags == 0 and c.sheaf_capacity >= 8
    for cpu in (0, 1):
        objs = [sa.kmem_cache_alloc(c, cpu=cpu) for _ in range(500)]
        for a in objs:
            sa.kmem_cache_free(c, a, cpu=cpu)
    sa.kmem_cache_shrink(c)
    sa.validate()
    assert sum(sa.kmem_cache_validate(k) for k in sa.kmalloc_caches) == 0
    sa.kmem_cache_destroy(c)
    sa.validate()
    assert sa.slab_reports() == []


def test_misuse_and_refused_frees_change_nothing_else(kernel):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel, slab_debug="FZPU")
    c = sa.kmem_cache_create("m", 64)
    other = sa.kmem_cache_create("o", 64)
    a = sa.kmem_cache_alloc(c)
    b = sa.kmem_cache_alloc(other)
    snap = snapshot(sa)
    for bad in (lambda: sa.kmem_cache_free(other, a), lambda: sa.kmem_cache_free(c, a + 8),
                lambda: sa.kfree(a - c.red_left_pad)):
        with pytest.raises(numslab.SlabError):
            bad()
        assert_unchanged(sa, snap)
    sa.memory[a - 3] = 9                                # into the left red zone
    buf, mem = snapshot(sa)
    with pytest.raises(numslab.SlabDebugError, match="Left Redzone"):
        sa.kmem_cache_free(c, a)
    after_buf, after_mem = snapshot(sa)
    assert np.array_equal(after_buf, buf)               # no count, list or bit moved
    assert np.flatnonzero(after_mem != mem).tolist() == [a - 3]     # only the repair
    sa.kmem_cache_free(c, a)
    sa.kmem_cache_free(other, b)
    sa.validate()


def test_a_batch_allocation_refused_by_a_check_names_the_slab_not_an_object():
    """A batch allocation that a slab_debug check refuses (a corrupted free pointer) took
    nothing: its error names the slab it isolated, as a single allocation's does; the seed's
    array allocation named "object -0x1" (the batch's failure count taken for an address)."""
    for kernel in ("6.18", "7.0"):
        for call in ("bulk", 0, numslab.SLAB_ARRAY_ALLOC_PARTIAL):
            sa = numslab.SlabAllocator(nr_cpus=1, memory="4M", kernel=kernel,
                                       freelist_hardened=False, freelist_random=False)
            c = sa.kmem_cache_create("c", 64, flags=numslab.SLAB_CONSISTENCY_CHECKS)
            objs = [c.alloc() for _ in range(c.objs_per_slab)]
            for x in objs[10:30]:
                c.free(x)
            sa.memory[objs[20] + c.offset:objs[20] + c.offset + 8] = 0x33  # not an object
            out = np.zeros(20, np.int64)
            with pytest.raises(numslab.SlabDebugError,
                               match=f"^allocation from c: the slab at "
                                     f"{objs[0] >> 12 << 12:#x}: "):
                if call == "bulk":
                    sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, 20, out)
                else:
                    sa.kmem_cache_alloc_array(c, numslab.GFP_KERNEL, 20, out, call)
            assert len(sa.isolated_slabs()) == 1
            sa.validate()


def _cut_free_list(kernel):
    """A debug cache (F) whose slab's free list ``kmem_cache_validate`` cut at a clobbered
    free pointer: the machine, the cache, the slab's objects held, those left on the cut
    list and those cut off."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", slab_debug="F", kernel=kernel,
                               freelist_hardened=False, freelist_random=False)
    c = sa.kmem_cache_create("c0", 24)
    objs = [sa.kmem_cache_alloc(c) for _ in range(10)]
    for a in objs[2:8]:
        sa.kmem_cache_free(c, a)                    # free list: 7 6 5 4 3 2, then 10 on
    a = objs[5]
    sa.memory[a + c.offset:a + c.offset + 8] = list((0x1010).to_bytes(8, "little"))
    assert sa.kmem_cache_validate(c) == 3           # Freechain corrupt, Wrong object count,
    slab = objs[0] & ~4095                          # Object count adjusted
    every = slab + c.slab_size * np.arange(c.objs_per_slab)
    held, kept = objs[:2] + objs[8:], objs[7:4:-1]
    cut = sorted(set(every.tolist()) - set(held) - set(kept))
    return sa, c, held, kept, cut


@pytest.mark.parametrize("gen", sorted(numslab.KERNELS))
def test_find_names_lost_objects_apart_from_free_ones(gen):
    """find() called an object a repaired free list cut off "a free object", though nothing
    hands it out again; it is "lost" now, while the objects left on the cut list, those of
    a slab with no loss and those held stay as they were."""
    sa, c, held, kept, cut = _cut_free_list(gen)
    assert {sa.find(a)["kind"] for a in cut} == {"lost"}
    assert {sa.find(a)["kind"] for a in kept} == {"free object"}
    assert {sa.find(a)["kind"] for a in held} == {"object"}
    other = [sa.kmem_cache_alloc(c) for _ in range(c.objs_per_slab + 2)][-1]
    sa.kmem_cache_free(c, other)
    assert other >> 12 != held[0] >> 12 and sa.find(other)["kind"] == "free object"


@pytest.mark.parametrize("gen", sorted(numslab.KERNELS))
def test_objects_a_repaired_free_list_cut_off_are_lost_not_live(gen):
    """on_freelist's "Freechain corrupt" cuts the chain and counts the objects after the cut
    in use (the kernel leaks them). They were counted as objects users hold: len(c) and
    live_objects 163 with live_addresses() empty, validate() raising "inuse + free objects
    != objects (cache c0, at 1)" on every call, the destroy "163 live object(s)". Now they
    are lost objects, reported once at the repair: never handed out again, counted apart,
    the slab's books balanced, and the destroy refused as the kernel's shutdown refuses,
    naming them and their slab, until force."""
    sa, c, held, kept, cut = _cut_free_list(gen)
    slab = held[0] & ~4095
    assert len(c) == c.live_objects == len(c.live_addresses()) == 4    # (it said 167)
    sa.validate()                                   # the books balance: no report forever
    assert len(cut) == 163 and c.lost_objects == 163
    assert c.lost_slabs().tolist() == [[slab, 163]]
    sa.validate(c)
    assert sa.kmem_cache_validate(c) == 0           # reported once, at the repair
    got = [sa.kmem_cache_alloc(c) for _ in range(2 * c.objs_per_slab)]
    assert sorted(got[:3]) == sorted(kept)          # the rest of the cut list, then new slabs
    assert not set(got) & set(cut)                  # a cut-off object is never handed out
    for a in got + held:
        sa.kmem_cache_free(c, a)
    assert len(c) == c.live_objects == len(c.live_addresses()) == 0
    assert c.lost_objects == 163 and int(sa.state.sl_inuse[slab >> 12]) == 163
    sa.validate()
    sa.slab_reports(clear=True)
    with pytest.raises(numslab.LostObjectsError,
                       match=rf"^kmem_cache_destroy c0: Slab cache still has objects: 163 "
                             rf"object\(s\) lost to a corrupted free list \(163 in the slab "
                             rf"at {slab:#x}\), held by no user; .*force=True"):
        sa.kmem_cache_destroy(c)
    reps = sa.slab_reports()                        # list_slab_objects: the objects not free
    assert reps[0] == "BUG c0 (Not tainted): Objects remaining on __kmem_cache_shutdown()"
    assert [int(r.split()[1], 16) for r in reps[1:]] == cut
    assert c in sa.caches and c.lost_objects == 163
    sa.kmem_cache_free(c, sa.kmem_cache_alloc(c))   # still usable
    sa.kmem_cache_destroy(c, force=True)
    assert c not in sa.caches and not sa.state.sl_lost.any()
    sa.validate()


@pytest.mark.parametrize("gen", ["6.18", "7.0", "7.3"])
def test_a_stray_write_relinking_lost_objects_does_not_get_them_handed_out(gen):
    """After the cut, a stray write points the last kept object at the cut-off chain: the
    pops handed out 161 lost objects, the slab's inuse climbing to 331 of 170 objects and
    validate() failing ever after. A pop that would empty the slab's count while its list
    goes on is refused as a list that ends early is: the slab isolated, nothing taken; the
    next allocations come from new slabs."""
    sa, c, held, kept, cut = _cut_free_list(gen)
    slab = held[0] & ~4095
    last = kept[-1]
    sa.memory[last + c.offset:last + c.offset + 8] = list(cut[0].to_bytes(8, "little"))
    got = [sa.kmem_cache_alloc(c) for _ in range(2)]    # the first two kept objects
    assert got == kept[:2]
    with pytest.raises(numslab.SlabDebugError, match="Freepointer corrupt"):
        sa.kmem_cache_alloc(c)                      # the third would leave a list behind
    assert sa.isolated_slabs().tolist() == [slab]
    more = [sa.kmem_cache_alloc(c) for _ in range(3 * c.objs_per_slab)]
    assert not (set(more) & (set(cut) | set(kept) | set(held) | set(got)))
    assert all(a & ~4095 != slab for a in more)
    assert int(sa.state.sl_inuse[slab >> 12]) <= int(sa.state.sl_objects[slab >> 12])
    assert len(c) == len(c.live_addresses()) == len(held) + len(got) + len(more)
    sa.validate()
    for a in held + got + more:
        sa.kmem_cache_free(c, a)
    assert len(c) == 0
    sa.validate()
    sa.kmem_cache_destroy(c, force=True)
    sa.validate()


def test_a_leak_names_lost_objects_apart_and_a_relinked_list_gives_them_back():
    """A destroy refused for live objects names the lost ones apart (it said 167 live); a
    free pointer written back over the cut relinks cut-off objects: the next repair counts
    them free again (``on_freelist``'s "Wrong object count"), so they are no longer lost."""
    sa, c, held, kept, cut = _cut_free_list("7.0")
    with pytest.raises(numslab.CacheLeakError, match=r"objects: 4 live object\(s\) of 24 bytes, "
                       r"and 163 lost to a corrupted free list$") as e:
        sa.kmem_cache_destroy(c)
    assert type(e.value) is numslab.CacheLeakError
    a = kept[-1]                                    # the object the cut ended the list at
    sa.memory[a + c.offset:a + c.offset + 8] = list(cut[-1].to_bytes(8, "little"))
    with pytest.raises(numslab.SlabCorruptionError, match=r"^validate: inuse \+ free objects "
                       rf"!= objects \(cache c0, slab at {a & ~4095:#x}\)$"):
        sa.validate()                               # a list longer than the count says
    assert sa.kmem_cache_validate(c) == 2           # Wrong object count, adjusted:
    assert c.lost_objects == 163 - 1 and c.lost_slabs()[0, 1] == 162    # one given back
    sa.validate()
    assert sa.kmem_cache_alloc(c) in kept


@pytest.mark.parametrize("gen", ["6.18", "7.0"])
def test_a_repair_refiles_its_slab_on_a_sorted_partial_list(gen):
    """on_freelist's repair lowers a listed slab's free count; on a sorted partial list the
    slab kept its old place, and validate() reported the list out of order on every call
    (invariant 7: every change of a listed slab's free count re-files it)."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="16M", kernel=gen, slab_debug="F",
                               freelist_hardened=False, freelist_random=False)
    c = sa.kmem_cache_create("d0", 48, partial_order="sorted")
    objs = [sa.kmem_cache_alloc(c) for _ in range(3 * c.objs_per_slab)]
    for a in objs[::3]:
        sa.kmem_cache_free(c, a)                    # three partial slabs, each a third free
    slab = objs[0] & ~4095
    free = {int(a): n - used for a, used, n in c.partial_list(0).tolist()}
    head = int(sa.state.sl_freelist[slab >> 12])    # cut the first slab's list after two
    nxt = int.from_bytes(bytes(sa.memory[head + c.offset:head + c.offset + 8]), "little")
    sa.memory[nxt + c.offset:nxt + c.offset + 8] = list((0x4141).to_bytes(8, "little"))
    assert sa.kmem_cache_validate(c) == 3
    assert c.lost_slabs().tolist() == [[slab, free[slab] - 2]]
    sa.validate()
    assert c.partial_list(0)[0, 0] == slab          # the fewest free objects now: first


@pytest.mark.parametrize("gen", ["6.18", "7.0"])
def test_a_repair_cuts_before_an_object_a_prefilled_sheaf_holds(gen):
    """A stray write points a free object's pointer at an object a prefilled sheaf holds:
    the repair walked on through the sheaf's objects as free ("Counter is 8 but counted
    were 7"), lost none of the three it cut off, and the slab then handed out the sheaf's
    object. It cuts before it now, as before a live one."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="8M", slab_debug="F", kernel=gen,
                               freelist_hardened=False, freelist_random=False)
    c = sa.kmem_cache_create("c0", 24)
    objs = [sa.kmem_cache_alloc(c) for _ in range(10)]
    sh = sa.kmem_cache_prefill_sheaf(c, numslab.GFP_KERNEL, 4)
    for a in objs[2:8]:
        sa.kmem_cache_free(c, a)                    # free list: 7 6 5 4 3 2, then on
    held = objs[:2] + objs[8:]
    chain, fp = [], int(sa.state.sl_freelist[objs[0] >> 12])
    while fp and len(chain) <= c.objs_per_slab:
        chain.append(fp)
        fp = int.from_bytes(bytes(sa.memory[fp + c.offset:fp + c.offset + 8]), "little")
    every = (objs[0] & ~4095) + c.slab_size * np.arange(c.objs_per_slab)
    in_sheaf = sorted(set(every.tolist()) - set(held) - set(chain))
    assert len(in_sheaf) == 4                       # the sheaf's, by elimination
    a = objs[5]
    sa.memory[a + c.offset:a + c.offset + 8] = list(in_sheaf[0].to_bytes(8, "little"))
    sa.kmem_cache_validate(c)
    assert c.lost_objects == len(chain) - 3         # all after object 5 (7 6 5 kept)
    assert len(c) == len(c.live_addresses()) == len(held)
    sa.validate()
    got = [sa.kmem_cache_alloc(c) for _ in range(5)]
    assert not set(got) & set(in_sheaf)
    assert sorted(sa.kmem_cache_alloc_from_sheaf(c, numslab.GFP_KERNEL, sh)
                  for _ in range(4)) == in_sheaf
    sa.validate()
