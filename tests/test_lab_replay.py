"""The trace replay against a plain-Python oracle on real traces: live objects of every cache
at every sampled point, every line accounted for, the snapshot's geometry, JSON, compare."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

import numslab
from numslab.engine import layout as L
from numslab.errors import SlabError
from numslab.lab.config import Config, parse_config
from numslab.lab.trace import TraceFormatError
from numslab.lab import kernels as K

from lab_oracle import DATA, SNAPSHOTS, TRACES, live_at, text

KERNELS = ("7.0", "7.1", "6.18")


@pytest.mark.parametrize("name", sorted(TRACES))
def test_live_objects_of_every_cache_at_every_sample_match_the_oracle(name, kernel):
    snap = DATA / SNAPSHOTS[name] if name in SNAPSHOTS else None
    r = numslab.replay(DATA / TRACES[name], kernel=kernel, snapshot=snap)
    s = r.series
    assert len(s.t) >= 200
    want = live_at(text(name), s.line.tolist())
    assert len(want) == len(s.line)
    for k, counts in enumerate(want):
        got = {nm: int(v) for nm, v in zip(r.names, s.live_objects[k]) if v}
        assert got == {nm: v for nm, v in counts.items() if v}, f"sample {k}, line {s.line[k]}"
    o = live_at.oracle
    assert r.lines == o.lines
    assert r.replayed == o.replayed
    assert r.untraced_frees == o.untraced_frees
    per = {nm: int(v) for nm, v in zip(r.names, r.caches["untraced_frees"]) if v}
    assert per == {nm: v for nm, v in o.untraced_by_cache.items() if v}
    assert r.to_json()["caches"][r.names[0]]["untraced_frees"] == r.caches["untraced_frees"][0]
    assert {k: v for k, v in r.skipped.items() if v} == dict(o.skipped)
    assert r.replayed + sum(r.skipped.values()) == r.lines        # every line accounted for
    r.allocator.validate()


def test_the_shared_trace_shape_is_replayed_with_untraced_frees():
    # the git/tar trace has bulk allocations: pointers allocated again while live
    r = numslab.replay(DATA / TRACES["git_tar"], kernel="7.0")
    assert r.untraced_frees > 0
    assert r.skipped["null_free"] > 0


def test_the_snapshot_gives_the_kernel_geometry():
    snap = json.loads(__import__("lzma").decompress((DATA / SNAPSHOTS["git_tar"]).read_bytes()))
    by = {c["name"]: c for c in snap["caches"]}
    r = numslab.replay(DATA / TRACES["git_tar"], kernel="6.18", cpus=2,
                       snapshot=DATA / SNAPSHOTS["git_tar"])
    checked = 0
    for k, nm in enumerate(r.names):
        c = by.get(nm)
        if c is None or r.geometry[k] != "snapshot":
            continue
        c = by.get(c.get("alias_of"), c)
        assert r.object_size[k] == int(c["object_size"]), nm
        assert r.slab_size[k] == int(c["slab_size"]), nm
        assert r.objs_per_slab[k] == int(c["objs_per_slab"]), nm
        assert r.order[k] == int(c["order"]), nm
        checked += 1
    assert checked >= 20
    assert r.geometry[r.names.index("kmalloc-64")] == "kmalloc"


def test_without_a_snapshot_bytes_alloc_is_the_object_size():
    r = numslab.replay(DATA / TRACES["git_tar"], kernel="7.0")
    from numslab.lab.trace import read_trace
    tr = read_trace(DATA / TRACES["git_tar"])
    for k, nm in enumerate(r.names):
        if r.geometry[k] == "trace":
            rows = tr.name == tr.names.index(nm)
            assert r.object_size[k] == max(8, int(tr.bytes_alloc[rows].max()))


def test_json_has_the_documented_fields():
    r = numslab.replay(DATA / TRACES["git_tar"], kernel="6.18")
    j = json.loads(json.dumps(r.to_json()))
    for key in ("lines", "replayed", "skipped", "events_per_second", "caches"):
        assert key in j
    assert j["lines"] == r.lines and j["replayed"] == r.replayed
    for nm, c in j["caches"].items():
        assert set(c) >= {"live_objects", "live_bytes", "slabs", "slab_bytes", "partial"}
        k = r.names.index(nm)
        assert c["live_objects"] == r.series.live_objects[-1, k]
        assert c["slab_bytes"] == r.series.slabs[-1, k] * (4096 << int(r.order[k]))
        assert c["live_bytes"] == c["live_objects"] * r.object_size[k]
    assert any(nm.startswith("kmalloc-cg-") for nm in j["caches"])


def test_compare_runs_every_configuration_on_the_same_trace():
    r = numslab.replay(DATA / TRACES["file"], compare=["6.18", "7.0", "7.0:cpus=4",
                                                       "6.18:sheaves=32"])
    j = r.to_json()
    assert list(j["configs"]) == ["6.18:cpus=2", "7.0:cpus=2", "7.0:cpus=4",
                                  "6.18:cpus=2:sheaves=32"]
    lives = [np.asarray(c.series.live_objects) for c in r.configs.values()]
    for other in lives[1:]:                    # the same live objects, whatever the machine
        assert np.array_equal(other, lives[0])
    c4 = r.configs["7.0:cpus=4"]
    assert c4.allocator.nr_cpus == 4 and c4.allocator.kernel == "7.0"
    sh = r.configs["6.18:cpus=2:sheaves=32"]
    assert all(c.sheaf_capacity >= 32 for c in sh.allocator.caches
               if c.name in sh.names and not c.name.startswith("kmalloc-"))
    assert j["configs"]["6.18:cpus=2"]["counters"]["alloc_cpu_sheaf"] == 0
    assert j["configs"]["6.18:cpus=2:sheaves=32"]["counters"]["alloc_cpu_sheaf"] > 0
    # the result is the first listed, and compare_table() puts them all side by side
    assert r.config.name == "6.18:cpus=2"
    head = r.compare_table().splitlines()[0].split()
    assert head == ["machine", *j["configs"]]
    # each cache's %Ef of the live bytes over its slab bytes, per configuration, truncated
    # as tools/mm/slabinfo does (the side-by-side table rounded: dentry 96% there, 97% here)
    rows = r.compare_table().split("cache (slab bytes %Ef)")[1].splitlines()[1:]
    assert rows
    for row in rows:
        name, cells = row.split()[0], row.split()[2::2]
        want = []
        for res in r.configs.values():
            k = next(i for i, nm in enumerate(res.names) if nm[:22] == name)
            slab = res.caches['slab_bytes'][k]
            want.append(f"{res.caches['live_bytes'][k] * 100 // slab}%" if slab else "-")
        assert cells == want, (name, cells)


def test_a_comparison_of_long_configuration_names_numbers_its_columns():
    """``--compare`` of remedies made every column as wide as the longest name (lines of
    some 500 characters); past 160 the columns are numbered and a legend names them."""
    trace = "".join(_line("kmem_cache_alloc", 0x100 + 64 * i, name="obj", bytes_req=64,
                          bytes_alloc=64, gfp_flags="GFP_KERNEL", node=-1)
                    for i in range(50)).encode()
    short = numslab.replay(trace, compare="7.0,6.18").compare_table().splitlines()
    assert short[0].split() == ["machine", "7.0:cpus=1", "6.18:cpus=1"]
    names = ["7.0:cpus=2:mobility=100:every=free", "7.0:cpus=2:shrink:every=free",
             "7.0:cpus=2:sorted", "7.0:cpus=2:drain=50", "6.18:cpus=2:mobility=100:every=free"]
    table = numslab.replay(trace, compare=",".join(names)).compare_table().splitlines()
    assert table[:len(names)] == [f"[{i}] {n}" for i, n in enumerate(names, 1)]
    assert max(len(line) for line in table) <= 160
    head = next(line for line in table if line.startswith("machine"))
    assert head.split() == ["machine", *(f"[{i}]" for i in range(1, len(names) + 1))]


def test_next_replays_a_trace_as_7_3_does():
    """A kmem trace never prefills a sheaf, so the one rule ``next`` adds to 7.3 never runs:
    every series and counter of the two replays is the same. 7.3's own rules do run: a
    refill that takes more of a partial slab than it needs gives the rest back with the slab
    to the tail of the list, uncounted, where 7.1 frees it to the slab (FREE_ADD_PARTIAL)."""
    r = numslab.replay(DATA / TRACES["file"], compare=["7.1", "7.3", "next"])
    old, a, b = (r.configs[f"{k}:cpus=2"] for k in ("7.1", "7.3", "next"))
    assert b.allocator.kernel == "next" and a.allocator.kernel == "7.3"
    for field in ("live_objects", "slabs", "partial"):
        assert np.array_equal(getattr(a.series, field), getattr(b.series, field)), field
    j = r.to_json()["configs"]
    assert j["7.3:cpus=2"]["counters"] == j["next:cpus=2"]["counters"]
    assert j["7.3:cpus=2"]["counters"]["sheaf_refill"] > 0
    assert j["7.1:cpus=2"]["counters"]["free_add_partial"] > \
        j["7.3:cpus=2"]["counters"]["free_add_partial"] == 0
    for field in ("slabs", "partial"):              # the slabs held: the same on this trace
        assert np.array_equal(getattr(old.series, field), getattr(a.series, field)), field


def test_a_configuration_given_twice_is_refused():
    # refused before the trace is read (its CPU count unknown yet: the names leave it out)
    with pytest.raises(numslab.InvalidArgumentError, match=r"compare: 7\.0 given twice"):
        numslab.replay(DATA / TRACES["git_tar"], compare="7.0,6.18,7.0")
    with pytest.raises(numslab.InvalidArgumentError, match=r"7\.0:cpus=2 given twice"):
        numslab.replay(DATA / TRACES["git_tar"], compare="7.0,7.0:cpus=2", cpus=2)
    for empty in (",", " , "):                  # was the default configuration alone
        with pytest.raises(SlabError, match="no configuration"):
            numslab.replay(DATA / TRACES["git_tar"], compare=empty)


COMPILE_SECONDS = r"""
import json, numslab
from lab_oracle import DATA, TRACES
first = numslab.replay(DATA / TRACES["git_tar"], compare="7.0")
again = numslab.replay(DATA / TRACES["git_tar"], compare="7.0")
print(json.dumps({"first": first.compile_seconds, "again": again.compile_seconds,
                  "json": first.to_json()["compile_seconds"],
                  "table": first.compare_table()}))
"""


def test_compile_time_is_counted_apart_from_the_replay_seconds():
    """A fresh interpreter compiles (or loads from Numba's cache) the parse, the replay loop
    and the engine's units on its first replay: that time is ``compile_seconds``, not
    ``seconds`` (a comparison must not charge it to whichever configuration ran first);
    the same replay again compiles nothing."""
    from test_gate import run_python
    r = run_python(COMPILE_SECONDS)
    assert r["first"] > 0 and r["again"] == 0.0
    assert r["json"] == round(r["first"], 4)
    assert "+ compiling" in r["table"]


def test_samples_must_be_at_least_one():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(numslab.SlabError, match="samples="):
            numslab.replay(DATA / TRACES["file"], samples=bad)


@pytest.mark.parametrize("arg, bad", [("cpus", 2.5), ("cpus", "2"), ("cpus", True),
                                      ("nodes", 1.5), ("nodes", None)])
def test_cpus_and_nodes_must_be_whole_numbers_checked_before_the_parse(arg, bad,
                                                                       monkeypatch):
    # cpus=2.5 was replayed on 2 CPUs; and a bad argument was found after the whole parse
    import numslab.lab.replay as R
    monkeypatch.setattr(R, "read_trace", lambda *a: pytest.fail("parsed"))
    with pytest.raises(numslab.SlabError, match=f"{arg}="):
        numslab.replay(DATA / TRACES["file"], **{arg: bad})
    with pytest.raises(numslab.SlabError, match="samples="):
        numslab.replay(DATA / TRACES["file"], samples=0)


def test_more_cpus_and_nodes_spread_the_events():
    r = numslab.replay(DATA / TRACES["net"], kernel="7.0", cpus=4, nodes=2)
    assert r.allocator.nr_nodes == 2
    r.allocator.validate()


def test_series_bytes_and_table():
    r = numslab.replay(DATA / TRACES["file"], kernel="7.0",
                       snapshot=DATA / SNAPSHOTS["net"])
    s = r.series
    assert s.live_bytes.shape == s.slabs.shape == (len(s.t), len(r.names))
    assert np.all(s.slab_bytes >= s.live_bytes)        # objects live inside slabs
    assert np.all(np.diff(s.t) >= 0) and np.all(np.diff(s.line) > 0)
    tab = r.table().splitlines()
    assert tab[0].split() == ["Name", "Objects", "Objsize", "Space", "Slabs/Part/Cpu", "O/S",
                              "O", "%Fr", "%Ef", "Flg"]
    c = r.caches
    k = int(np.argmax(c["slab_bytes"]))
    row = next(ln for ln in tab[1:] if ln.split()[0] == r.names[k])
    # slabinfo's Objects and %Ef: sysfs objects (the sheaves' objects counted in use)
    cache = r.allocator.find_cache(r.names[k])
    assert int(row.split()[1]) == r.objects[k] == cache.objects
    assert int(row.split()[8]) == cache.objects * cache.object_size * 100 // c["slab_bytes"][k]
    assert np.all(r.objects >= c["live_objects"])
    assert np.any(r.objects > c["live_objects"])        # 7.0's sheaves hold objects
    assert r.to_json()["caches"][r.names[k]]["objects"] == r.objects[k]


@pytest.mark.parametrize("gen", ["6.18", "7.0"])
def test_a_snapshots_usersize_is_the_replayed_caches(gen):
    """``numslab snapshot`` keeps each cache's ``usersize`` and the replay makes its caches with
    that usercopy region, so their sysfs prints the kernel's (dentry's 40 read 0: h21's trial);
    a cache with a constructor (made at its slab size) keeps it too, and a snapshot without the
    file (the shared ones) makes none."""
    line = ("  cat-1 [000] ..... 1.{:06d}: kmem_cache_alloc: call_site=f+0x1/0x9 "
            "ptr=00000000{:08x} name={} bytes_req=192 bytes_alloc=192 gfp_flags=GFP_KERNEL "
            "node=-1 accounted=false\n")
    names = ["dentry", "inode_cache", "plain"]
    trace = "".join(line.format(i, 0x1000 + 1024 * i, names[i % 3]) for i in range(9)).encode()
    snap = {"caches": [
        {"name": "dentry", "object_size": "192", "slab_size": "192", "usersize": "40"},
        {"name": "inode_cache", "object_size": "616", "slab_size": "624", "ctor": "init_once",
         "usersize": "24"},
        {"name": "plain", "object_size": "192", "slab_size": "192"}]}
    r = numslab.replay(trace, kernel=gen, snapshot=snap)
    got = {nm: r.allocator.find_cache(nm).sysfs()["usersize"] for nm in names}
    assert got == {"dentry": "40", "inode_cache": "24", "plain": "0"}
    from numslab.lab.record import SLAB_ATTRS
    assert "usersize" in SLAB_ATTRS


def test_table_flags_as_slabinfo_prints_them():
    """slabinfo's Flg: ``*`` for a kernel cache with aliases (the snapshot's ``aliases``),
    then ``d``, ``A``, ``P``, ``a``, ``Z``, ``F``, ``U``, ``T`` in that order."""
    line = ("  cat-1 [000] ..... 1.{:06d}: kmem_cache_alloc: call_site=f+0x1/0x9 "
            "ptr=00000000{:08x} name={} bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL "
            "node=-1 accounted=false\n")
    trace = "".join(line.format(i, 0x1000 + 64 * i, nm) for i, nm in
                    enumerate(["merged", "plain", "merged", "plain"])).encode()
    snap = {"caches": [
        {"name": ":a-0000064", "object_size": "64", "slab_size": "64", "align": "64",
         "hwcache_align": "1", "reclaim_account": "1", "aliases": "2"},
        {"name": "merged", "alias_of": ":a-0000064"},
        {"name": "plain", "object_size": "64", "slab_size": "64", "aliases": "0"}]}
    r = numslab.replay(trace, kernel="7.0", snapshot=snap)
    flg = {ln.split()[0]: ln.split()[9:] for ln in r.table().splitlines()[1:]}
    assert flg == {"merged": ["*Aa"], "plain": []}
    assert r.to_json()["caches"]["merged"]["aliases"] == 2
    r.flags[r.names.index("plain")] |= (numslab.SLAB_POISON | numslab.SLAB_RED_ZONE
                                        | numslab.SLAB_CONSISTENCY_CHECKS
                                        | numslab.SLAB_STORE_USER | numslab.SLAB_TRACE)
    flg = {ln.split()[0]: ln.split()[9:] for ln in r.table().splitlines()[1:]}
    assert flg["plain"] == ["PZFUT"]


def test_configurations_parse_and_refuse():
    base = Config("7.0", 2, 1, "default")
    assert parse_config("6.18:cpus=8:sheaves=16", base) == Config("6.18", 8, 1, "sheaves=16")
    assert parse_config("nosheaves", base).policy == "nosheaves"
    for bad in ("5.4", "7.0:cpus=x", "7.0:nodes=4", "7.0:sheaves=0"):
        with pytest.raises(SlabError):
            parse_config(bad, base)
    with pytest.raises(SlabError):
        numslab.replay(DATA / TRACES["net"], kernel="9.9")


@pytest.mark.parametrize("kwargs, says", [
    ({"kernel": 7.0}, r"kernel 7\.0 is not one of 6\.18, 7\.0, .*, each a str"),
    ({"kernel": "7"}, r"kernel '7' is not one of 6\.18, 7\.0, [^,]*, [^,]*, next$"),
    ({"skip_bad": "no"}, r"skip_bad='no': True or False"),
    ({"progress": 1}, r"progress=1: True or False")])
def test_a_replay_names_an_argument_of_the_wrong_type(kwargs, says):
    """A kernel engineer's trial: ``kernel=7.0`` (a float) was refused as "kernel 7.0 is not one
    of 6.18, 7.0, ...", and ``skip_bad="no"`` was taken as true (737 lines skipped)."""
    with pytest.raises(numslab.InvalidArgumentError, match=says):
        numslab.replay(b"", **kwargs)


def _line(ev: str, ptr: int, cpu: int = 0, **f: object) -> str:
    fields = " ".join(f"{k}={v}" for k, v in f.items())
    return (f"  t-1 [{cpu:03d}] ..... 1.{ptr % 999999:06d}: {ev}: call_site=x+0x1/0x2 "
            f"ptr={ptr:016x} {fields}\n")


def test_node_and_thisnode_are_honoured():
    lines = [_line("kmem_cache_alloc", 0x100 + i, cpu=0, name="obj", bytes_req=64,
                   bytes_alloc=64, gfp_flags="GFP_KERNEL|__GFP_THISNODE", node=1)
             for i in range(200)]
    r = numslab.replay("".join(lines).encode(), kernel="6.18", cpus=2, nodes=2)
    sa = r.allocator
    c = sa.find_cache("obj")
    assert c.live_objects == 200
    assert c.total_objects_per_node()[0] == 0 and c.total_objects_per_node()[1] >= 200


@pytest.mark.parametrize("gen", ["7.0", "7.3", "6.18"])
@pytest.mark.parametrize("policy", ["default", "sheaves=32"])
def test_the_bootstrap_caches_get_no_sheaves_from_7_0_on(gen, policy):
    """The kernel makes ``kmem_cache`` and ``kmem_cache_node`` with ``create_boot_cache``
    (SLAB_NO_OBJ_EXT), and 7.x's ``calculate_sheaf_capacity`` gives those no sheaves ("bootstrap
    caches can't have sheaves for now"), whatever is asked: a replay gave them 28 and 60 (a
    kernel engineer's trial; this 6.18 machine's sysfs shows 0 for both). Any other cache of
    the trace has them; under 6.18 only a policy asking for them gives any, to every cache."""
    sizes = {"kmem_cache": 256, "kmem_cache_node": 64, "dentry": 192}
    lines = [_line("kmem_cache_alloc", (k << 20) + 0x40 * i, name=nm, bytes_req=sz,
                   bytes_alloc=sz, gfp_flags="GFP_KERNEL", node=-1, accounted="false")
             for k, (nm, sz) in enumerate(sizes.items(), 1) for i in range(100)]
    lines = [ln.replace(ln.split()[3], f"1.{i:06d}:") for i, ln in enumerate(lines)]
    r = numslab.replay("".join(lines).encode(), kernel=gen, cpus=2, policy=policy)
    got = {nm: r.allocator.find_cache(nm).sheaf_capacity for nm in sizes}
    asked = 32 if policy != "default" else 0
    if gen == "6.18":
        assert got == {nm: asked for nm in sizes}, got
    else:
        assert got["kmem_cache"] == got["kmem_cache_node"] == 0, got
        assert got["dentry"] >= max(asked, 28), got
    for nm in sizes:
        c = r.allocator.find_cache(nm)
        assert c.live_objects == 100
        assert c.sysfs()["sheaf_capacity"] == str(got[nm])
    r.allocator.validate()


def test_large_kmallocs_take_pages_and_come_back():
    lines = [_line("kmalloc", 0x500, bytes_req=20000, bytes_alloc=20480, gfp_flags="GFP_KERNEL",
                   node=-1),
             _line("kmalloc", 0x600, bytes_req=0, bytes_alloc=0, gfp_flags="GFP_KERNEL",
                   node=-1),
             _line("kfree", 0x600), _line("kfree", 0x500), _line("kfree", 0x500)]
    lines = [ln.replace(ln.split()[3], f"1.{i:06d}:") for i, ln in enumerate(lines)]  # in order
    r = numslab.replay("".join(lines).encode(), kernel="7.0", cpus=1, samples=5)
    assert r.series.large_bytes.tolist() == [20480, 20480, 20480, 0, 0]
    assert r.skipped["zero_size_alloc"] == 1 and r.skipped["zero_size_ptr_free"] == 1
    assert r.skipped["untraced_alloc"] == 1 and r.replayed == 2
    assert r.allocator.buddyinfo() is not None
    r.allocator.validate()


#: lines of a real 6.18 trace (this project's machine, ``setxattr`` of 20,000 bytes): the
#: kernel's ``__do_kmalloc_node`` traces a kmalloc past KMALLOC_MAX_CACHE_SIZE twice,
#: ``__kmalloc_large_node_noprof``'s event (its call_site the kmalloc function) and then its
#: own (the caller's): one allocation, two events of one pointer and size, next to each
#: other on their CPU (``perf script`` of the same showed the second a microsecond later)
LARGE_TWICE = """\
 python3-21415 [000] ..... 49850.098529: kmalloc: call_site=__kvmalloc_node_noprof+0x542/0x820 ptr=000000003a0a0d03 bytes_req=20000 bytes_alloc=32768 gfp_flags=GFP_NOWAIT|__GFP_IO|__GFP_FS|__GFP_HARDWALL node=-1 accounted=false
 python3-21415 [000] ..... 49850.098529: kmalloc: call_site=vmemdup_user+0x2e/0xb0 ptr=000000003a0a0d03 bytes_req=20000 bytes_alloc=32768 gfp_flags=GFP_NOWAIT|__GFP_IO|__GFP_FS|__GFP_HARDWALL node=-1 accounted=false
 python3-21415 [000] ..... 49850.098578: kfree: call_site=path_setxattrat+0x177/0x250 ptr=000000003a0a0d03
 python3-21415 [000] ..... 49850.098619: kmalloc: call_site=__kvmalloc_node_noprof+0x542/0x820 ptr=000000003a0a0d03 bytes_req=20000 bytes_alloc=32768 gfp_flags=GFP_NOWAIT|__GFP_IO|__GFP_FS|__GFP_HARDWALL node=-1 accounted=false
 python3-21415 [000] ..... 49850.098620: kmalloc: call_site=vmemdup_user+0x2e/0xb0 ptr=000000003a0a0d03 bytes_req=20000 bytes_alloc=32768 gfp_flags=GFP_NOWAIT|__GFP_IO|__GFP_FS|__GFP_HARDWALL node=-1 accounted=false
"""


def test_a_large_kmalloc_traced_twice_is_one_allocation():
    # replayed as two, the second freeing the first: an untraced free for each large
    # kmalloc of a real trace (none was freed untraced), its pages freed and taken again
    for kernel in ("6.18", "7.0"):
        r = numslab.replay(LARGE_TWICE.encode(), kernel=kernel, cpus=1, samples=5)
        assert (r.untraced_frees, r.replayed, r.skipped.get("large_kmalloc_twice")) == (0, 3, 2)
        assert r.series.large_bytes[-1] == 32768
        assert r.replayed + sum(r.skipped.values()) == r.lines
    live_at(LARGE_TWICE, [5])
    o = live_at.oracle
    assert (o.untraced_frees, o.replayed, o.skipped.get("large_kmalloc_twice")) == (0, 3, 2)
    # the same pointer again after another event of the CPU, or on another CPU, is another
    # allocation whose earlier free was not traced
    lines = LARGE_TWICE.splitlines(keepends=True)
    other = lines[3].replace("kmalloc: call_site=__kvmalloc_node_noprof+0x542/0x820 ptr="
                             "000000003a0a0d03", "kmalloc: call_site=x+0x1/0x2 ptr=0000000000000400")
    for text_ in ("".join(lines[:4] + [other] + lines[4:]),
                  LARGE_TWICE.replace("[000] ..... 49850.098620", "[001] ..... 49850.098620")):
        r = numslab.replay(text_.encode(), kernel="7.0", cpus=2)
        assert (r.untraced_frees, r.skipped.get("large_kmalloc_twice")) == (1, 1)
        live_at(text_, [6])
        assert (live_at.oracle.untraced_frees,
                live_at.oracle.skipped.get("large_kmalloc_twice")) == (1, 1)


def test_a_repeated_trace_replays_each_copy_apart():
    from numslab.lab.trace import repeat_trace
    raw = text("net").encode()
    one = numslab.replay(raw, kernel="7.0")
    with warnings.catch_warnings():     # each copy's times follow the last: no step back
        warnings.simplefilter("error")
        three = numslab.replay(repeat_trace(raw, 3), kernel="7.0")
    assert three.lines == 3 * one.lines
    assert three.series.t[-1] - three.series.t[0] > 2 * (one.series.t[-1] - one.series.t[0])
    assert three.replayed == 3 * one.replayed
    assert three.series.live_objects[-1].sum() == 3 * one.series.live_objects[-1].sum()


def test_a_size_numslab_cannot_replay_is_an_error_naming_its_line():
    # a kmalloc past KMALLOC_MAX_SIZE (the kernel returns NULL) and a cache of 5 MiB objects
    # were refused from inside the replay, naming neither the line nor the cache
    ok = _line("kmalloc", 0x500, bytes_req=64, bytes_alloc=64, gfp_flags="GFP_KERNEL", node=-1)
    big = _line("kmalloc", 0x600, bytes_req=5 << 20, bytes_alloc=5 << 20,
                gfp_flags="GFP_KERNEL", node=-1)
    with pytest.raises(numslab.SlabError, match=r"line 2: a kmalloc of 5,242,880 bytes"):
        numslab.replay((ok + big).encode())
    assert numslab.replay((ok + big.replace("ptr=0000000000000600", "ptr=0000000000000000"))
                          .encode()).skipped["failed_alloc"] == 1     # NULL: no object
    huge = [_line("kmem_cache_alloc", 0x700 + 64 * j, name="vast", bytes_req=64 << i,
                  bytes_alloc=64 << i, gfp_flags="GFP_KERNEL", node=-1)
            for j, i in enumerate((0, 17, 16))]
    with pytest.raises(numslab.SlabError, match=r"line 3: cache 'vast' of 8,388,608 bytes"):
        numslab.replay((ok + "".join(huge)).encode())


def test_the_arena_grows_with_the_caches_each_cpu_uses_not_with_every_pair():
    # 1 MiB per cache and simulated CPU made a 2-CPU trace replayed on 512 CPUs ask for 28
    # GiB per node, which this machine could not reserve ("cannot reserve"); each CPU is
    # now charged for the caches it allocates from, and every cache for its sheaf structs
    with pytest.warns(UserWarning, match="differ from the snapshot"):   # 512 CPUs: orders
        r = numslab.replay(DATA / TRACES["git_tar"], snapshot=DATA / SNAPSHOTS["git_tar"],
                           cpus=512, compare=["6.18", "7.0"])
    for res in r.configs.values():
        assert res.memory_per_node <= 256 << 20
        res.allocator.validate()
    two = numslab.replay(DATA / TRACES["git_tar"], cpus=2)
    assert two.memory_per_node <= 128 << 20


@pytest.mark.parametrize("policy", ["default", "sheaves=4096"])
def test_the_arena_estimate_holds_the_replay_without_a_second_run(policy):
    # sheaves=4096 parks thousands of objects per cache and CPU: a 256-object estimate ran
    # out, and the whole replay ran again on twice the arena
    from numslab.lab import replay as R
    from numslab.lab.trace import read_trace
    p = R.prepare(read_trace(DATA / TRACES["git_tar"]))
    for kernel in KERNELS:
        cfg = R.Config(kernel, 2, 1, policy, 0)
        assert R.replay_prepared(p, cfg).memory_per_node == R._memory(p, cfg)


@pytest.mark.parametrize("snap, says", [
    ([], "a path or a dict"),
    ({"caches": ["dentry"]}, "is not a cache"),
    ({"caches": [{"object_size": "192"}]}, "is not a cache"),
    ({"caches": [{"name": "dentry", "object_size": "abc"}]}, "object_size 'abc' is not a whole"),
    ({"caches": [{"name": "dentry", "object_size": None}]}, "object_size None is not a whole"),
    ({"caches": [{"name": "dentry", "object_size": "192", "hwcache_align": "yes"}]},
     "hwcache_align 'yes'"),
    ({"caches": [{"name": "dentry", "object_size": "192", "ctor": "f"}]}, "no slab_size"),
    ({"caches": [{"name": "dentry", "object_size": "192", "slab_size": "8"}]},
     "slab_size 8 is below its object_size 192"),
    # one of the two sizes, out of range: a KeyError from the message of the test above
    ({"caches": [{"name": "dentry", "object_size": "99999999999999999999"}]},
     "object_size 99999999999999999999 is not a size"),
    ({"caches": [{"name": "dentry", "slab_size": "-1"}]}, "slab_size -1 is not a size"),
    # an entry with no geometry: replayed with the trace's sizes, silently (a kernel
    # engineer's trial)
    ({"caches": [{"name": "dentry"}]}, "cache 'dentry' has no object_size"),
    ({"caches": [{"name": "dentry", "slabs": "3 N0=3"}]}, "cache 'dentry' has no object_size"),
    # a superscript digit passed str.isdigit and int() raised ValueError (isdecimal now)
    ({"caches": [{"name": "dentry", "object_size": "19\u00b2"}]}, "is not a whole"),
    # two minus signs passed the check (every leading '-' stripped) and int() raised
    ({"caches": [{"name": "dentry", "object_size": "--5"}]}, "object_size '--5' is not a whole"),
    # an alias_of that is no name: TypeError unhashable type
    ({"caches": [{"name": "d", "object_size": "192"}, {"name": "dentry", "alias_of": ["d"]}]},
     "alias_of \\['d'\\] is not a cache name"),
    # a cache listed twice: the last entry was taken silently
    ({"caches": [{"name": "dentry", "object_size": "192"},
                 {"name": "dentry", "object_size": "64"}]}, "'dentry' is listed twice"),
    ({"caches": [{"name": "d", "object_size": "192"}, {"name": "d", "alias_of": "d"}]},
     "'d' is listed twice"),
    # a count past int64: an OverflowError of the warm start; a negative one or a list
    # seeded nothing, silently
    ({"caches": [{"name": "dentry", "object_size": "192",
                  "objects": "99999999999999999999 N0=99999999999999999999"}]},
     "objects '9+ N0=9+ is not a count as sysfs prints it"),
    ({"caches": [{"name": "dentry", "object_size": "192", "slabs": "-5 N0=-5"}]},
     "slabs '-5 N0=-5' is not a count"),
    ({"caches": [{"name": "dentry", "object_size": "192", "partial": [1]}]},
     r"partial \[1\] is not a count"),
    # an impossible order: a warm start's arena of 2**111 bytes, refused as memory (no
    # cache or field named); a negative or non-number one was taken silently
    ({"caches": [{"name": "dentry", "object_size": "192", "order": "99"}]},
     r"^snapshot \(a dict\): cache 'dentry': order '99' is not a slab order: 0\.\.10 "
     r"\(MAX_PAGE_ORDER\)$"),
    ({"caches": [{"name": "dentry", "object_size": "192", "order": "-1"}]},
     "cache 'dentry': order '-1' is not a slab order: 0..10"),
    ({"caches": [{"name": "dentry", "object_size": "192", "order": 11}]},
     "cache 'dentry': order 11 is not a slab order: 0..10"),
    ({"caches": [{"name": "dentry", "object_size": "192", "order": "2.5"}]},
     "cache 'dentry': order '2.5' is not a slab order"),
    # an alias of no cache (or of itself, or of another alias): the cache was left out,
    # silently, replayed with the trace's sizes and not seeded warm
    ({"caches": [{"name": "d", "object_size": "192"}, {"name": "dentry", "alias_of": "x"}]},
     "'dentry': alias_of 'x' is not a cache of the snapshot"),
    ({"caches": [{"name": "dentry", "alias_of": "dentry"}]}, "alias_of 'dentry' is not a"),
    ({"caches": [{"name": "d", "object_size": "192"}, {"name": "e", "alias_of": "d"},
                 {"name": "dentry", "alias_of": "e"}]}, "alias_of 'e' is not a cache"),
])
def test_a_snapshot_the_replay_cannot_read_is_refused_naming_the_cache(snap, says):
    # ValueError, KeyError and TypeError tracebacks from the geometry; a slab_size below
    # the object size was replayed as 8-byte objects holding 192 live bytes each
    trace = _line("kmem_cache_alloc", 0x100, name="dentry", bytes_req=192, bytes_alloc=192,
                  gfp_flags="GFP_KERNEL", node=-1).encode()
    with pytest.raises(numslab.SlabError, match=says):
        numslab.replay(trace, snapshot=snap)
    ok = {"caches": [{"name": "dentry", "object_size": 192, "align": "", "sheaf_capacity": None,
                      "slabs": 9, "partial": "", "objects": "21 N0=7 N1=14", "order": " 10"}]}
    assert numslab.replay(trace, snapshot=ok).geometry == ["snapshot"]


def test_a_snapshot_nested_too_deeply_is_refused_in_one_line(tmp_path, capsys):
    """JSON nested 200,000 deep (a file that is no snapshot) was a RecursionError traceback
    of the json module, status 1; a number past Python's digits told the user to call
    sys.set_int_max_str_digits()."""
    from numslab.tools.cli import main
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    trace = tmp_path / "t.txt"
    trace.write_bytes(_line("kfree", 0x100).encode())
    assert main(["replay", str(trace), "--snapshot", str(path), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"numslab replay: snapshot {path}: not numslab's snapshot JSON (its arrays or objects "
        f"nest too deeply to read)\n")
    # a number of 5,000 digits: "not JSON (Exceeds the limit (4300 digits) ...; use
    # sys.set_int_max_str_digits() to increase the limit)", Python's hint to a command's user
    path.write_text('{"caches": [{"name": "d", "object_size": ' + "9" * 5000 + "}]}")
    assert main(["replay", str(trace), "--snapshot", str(path), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"numslab replay: snapshot {path}: a number of more than 4300 digits: not numslab's "
        f"snapshot JSON\n")


def test_the_snapshot_is_read_before_the_trace(tmp_path):
    """A missing or malformed snapshot was found after the whole trace was read and parsed
    (2.4 s for a recorded 670,000-line trace; a first parse on an empty Numba cache
    compiles too); the trace and the snapshot both standard input: "not JSON"."""
    class Unread:
        def read(self) -> bytes:
            raise AssertionError("the trace was read before the snapshot")
    with pytest.raises(SlabError, match="cannot read it"):
        numslab.replay(Unread(), snapshot=tmp_path / "missing.json")
    with pytest.raises(numslab.InvalidArgumentError, match="both be standard input"):
        numslab.replay("-", snapshot="-")


CHANGED_TRACE = """
import sys, numpy as np, numslab
from numslab.lab.trace import read_trace
tr = read_trace(sys.argv[1])
i = int(np.flatnonzero((tr.kind == {kind}) & (tr.row >= 0))[0])
{change}
try:
    numslab.replay(tr)
except numslab.SlabError as e:
    print("refused:", e)
"""


@pytest.mark.parametrize("kind, change", [
    (0, "tr.row[i] = 10 ** 6"), (0, "tr.pid[i] = tr.npid + 5"), (2, "tr.pid[i] = -7"),
    (0, "tr.row[i] = -5"), (0, "tr.names.pop()"), (0, "tr.cpu = tr.cpu[:-1]"),
    (0, "tr.row = tr.row.astype(np.int64)"), (0, "tr.npid = 2 ** 40")])
def test_a_trace_changed_by_hand_is_refused_not_replayed_out_of_bounds(kind, change):
    # the compiled replay indexed its arrays by the Trace's rows and pointer ids: an id out
    # of range killed the interpreter (a child interpreter here, so that a crash shows)
    import subprocess
    import sys
    code = CHANGED_TRACE.format(kind=kind, change=change)
    r = subprocess.run([sys.executable, "-c", code, str(DATA / TRACES["git_tar"])],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "refused: Trace" in r.stdout, r.stderr[-2000:]


def test_a_cache_the_replay_cannot_make_named_only_by_frees_is_a_trace_error():
    """A cache name ``kmem_cache_create`` refuses (one with a '/'; an empty one is a malformed
    line) seen only in free events: the error's line came from its largest allocation, and
    with none NumPy's argmax of an empty sequence raised instead."""
    for ptr in (0x1000, 0):             # (a free of NULL carries no cache row)
        trace = _line("kmem_cache_free", ptr, name="a/b").encode()
        with pytest.raises(TraceFormatError, match="trace, line 1: cache 'a/b'"):
            numslab.replay(trace, progress=False)


def test_a_timestamp_before_the_first_gives_no_negative_sample():
    """A step back before the first event's time made the first sample's duration
    negative and the time-weighted utilisation leave 0..100%."""
    def alloc(ts, ptr):
        return (f"  t-1 [000] ..... {ts}: kmem_cache_alloc: call_site=x+0x1/0x2 "
                f"ptr={ptr:016x} name=dentry bytes_req=192 bytes_alloc=192 "
                f"gfp_flags=GFP_KERNEL node=-1\n")
    lines = [alloc("100.000000", 0x1000), alloc("10.000000", 0x2000)]
    lines += [alloc(f"100.{1 + i:06d}", 0x3000 + 256 * i) for i in range(80)]
    with pytest.warns(UserWarning, match="line 2: its timestamp 10.000000 is earlier"):
        r = numslab.replay("".join(lines).encode(), samples=41, progress=False)
    assert (r.series.dt >= 0).all()
    assert 0 <= r.totals["time_mean_efficiency"] <= 100


def test_a_gfp_with_bit_31_is_replayed_as_the_gfp_t_it_is():
    """gfp_flags up to 0xffffffff parse (a 32-bit gfp_t) into an int32 column; the replay
    passed 0x80000000 on as a negative gfp, which numslab.jit refused without naming the
    trace."""
    trace = _line("kmem_cache_alloc", 0x1000, name="dentry", bytes_req=192, bytes_alloc=192,
                  gfp_flags="0x80000cc0", node=-1).encode()
    r = numslab.replay(trace, progress=False)
    assert r.replayed == 1


def test_a_cpu_past_the_machine_s_limit_names_its_line():
    """With no ``cpus=`` the machine is sized from the trace's largest CPU: one line's CPU
    of 99999999 gave 'nr_cpus 100000000 is not in 1..4096', naming neither the trace nor
    the line; ``cpus=`` folds the trace's CPUs onto fewer."""
    trace = (_line("kmalloc", 0x1000, bytes_req=64, bytes_alloc=64, gfp_flags="GFP_KERNEL",
                   node=-1) + _line("kfree", 0x1000, cpu=99999999)).encode()
    with pytest.raises(TraceFormatError, match="trace, line 2: CPU 99999999 is past"):
        numslab.replay(trace, progress=False)
    assert numslab.replay(trace, cpus=2, progress=False).replayed == 2


def test_odd_arguments_are_numslab_errors_not_python_ones():
    """Each of these escaped as a plain TypeError, AttributeError, OverflowError, ValueError
    or KeyError, or (``policy=":"``) replayed a policy '' named ``7.0:cpus=1:``."""
    trace = "".join(_line("kmem_cache_alloc", 0x100 + i, name="obj", bytes_req=64,
                          bytes_alloc=64, gfp_flags="GFP_KERNEL", node=-1)
                    for i in range(20)).encode()
    for kw in (dict(policy=5), dict(policy=None), dict(compare=[5]), dict(policy=":"),
               dict(compare="7.0:cpus=99999999999"), dict(cpus=10 ** 11),
               dict(compare="7.0:shrink:every=\u00b2"), dict(policy="drain=\u00b2"),
               dict(policy="sheaves=\u00b2")):
        with pytest.raises(SlabError):
            numslab.replay(trace, **kw)
    r = numslab.replay(trace, compare="7.0,6.18")
    for call in (lambda: r.table(sort="nope"), lambda: r.table(sort=None),
                 lambda: r.compare_table(top=1.5), lambda: r.compare_table(top=-1)):
        with pytest.raises(SlabError):
            call()
    k = r.names.index("obj")
    assert r.caches["live_objects"][k] == 20
    assert r.table(sort="live_bytes").splitlines()[1].split()[:2] == \
        ["obj", str(r.allocator.find_cache("obj").objects)]
    assert numslab.replay(trace, compare="7.0:cpus=\u0661").config.cpus == 1   # Arabic 1


def test_configs_are_found_by_name_or_by_generation_alone():
    """``r.configs['6.18']`` raised a bare KeyError (the name is '6.18:cpus=2'), and a result
    had no ``kernel``: the generation alone finds its one configuration, and a key naming
    none or several lists the names."""
    r = numslab.replay(DATA / TRACES["net"], compare=["6.18", "7.0", "7.0:sorted"],
                       progress=False)
    assert r.kernel == "6.18" and r.configs["6.18"] is r.configs["6.18:cpus=2"] is r
    assert r.configs["7.0:cpus=2:sorted"].kernel == "7.0"
    for key, says in (("7.0", "more than one"), ("5.4", "none"), (7.0, "none")):
        with pytest.raises(KeyError, match=f"is {says} of the configurations: 6.18:cpus=2, "
                                           f"7.0:cpus=2, 7.0:cpus=2:sorted"):
            r.configs[key]
    assert "7.0" not in r.configs and json.loads(json.dumps(r.to_json()))["configs"]


def test_a_cache_named_like_kmalloc_with_a_superscript_size_is_an_ordinary_cache():
    # "kmalloc-²": str.isdigit took the superscript and int() raised ValueError mid-replay
    # (digits int() reads, as "١", are taken, as everywhere in the laboratory)
    t = _line("kmem_cache_alloc", 0x100, name="kmalloc-\u00b2", bytes_req=192, bytes_alloc=192,
              gfp_flags="GFP_KERNEL", node=-1)
    r = numslab.replay(t.encode())
    assert r.names == ["kmalloc-\u00b2"]
    assert r.allocator.find_cache("kmalloc-\u00b2").object_size == 192


def test_a_timestamp_stepping_back_is_named_in_a_warning():
    """A trace reordered by hand (its last events moved to the front) replayed with no word
    said, its trace-time means weighing the samples by a running maximum of the timestamps
    (63 fell to 23 on the shared trace)."""
    def alloc(ts, ptr):
        return (f"  t-1 [000] ..... {ts}: kmem_cache_alloc: call_site=x+0x1/0x2 "
                f"ptr={ptr:016x} name=dentry bytes_req=192 bytes_alloc=192 "
                f"gfp_flags=GFP_KERNEL node=-1\n")
    lines = [alloc(f"100.{1 + i:06d}", 0x3000 + 256 * i) for i in range(40)]
    lines.insert(30, alloc("99.000000", 0x1000))                        # line 31 steps back
    with pytest.warns(UserWarning, match=r"^trace, line 31: its timestamp 99\.000000 is "
                                         r"earlier than one before it \(100\.000030; 1 such"):
        numslab.replay("".join(lines).encode(), samples=20, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                  # in order: nothing
        numslab.replay("".join(lines[:30]).encode(), samples=20, progress=False)


def test_the_time_order_pass_finds_what_numpy_s_running_maximum_finds():
    """``kernels.time_steps_back`` (one pass; the warning's numpy passes took 10 ms of a
    1.1-million-line replay) against the numpy it replaced, on lines with untimed ones and
    NaN between them."""
    from numslab.lab import kernels as K
    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 5, 200, 2000):
        for nan in (False, True):
            kind = rng.integers(0, 8, n).astype(np.int8)
            ts = np.cumsum(rng.random(n)) - 3 * (rng.random(n) < 0.02)
            if nan and n:
                ts[rng.integers(n)] = np.nan
            timed = np.flatnonzero(kind <= 5)
            t = ts[timed]
            back = np.flatnonzero(t[1:] < np.maximum.accumulate(t)[:-1]) if len(t) > 1 \
                else np.zeros(0, np.int64)
            i, before, k = K.time_steps_back(kind, ts)
            assert k == len(back)
            if len(back):
                assert i == timed[back[0] + 1] and before == t[:back[0] + 1].max()
            else:
                assert i == -1


def test_the_arena_estimate_s_cpu_rows_are_numpy_s_unique_pairs():
    """``kernels.alloc_cpu_rows`` (one pass, where ``np.unique`` hashed a million pairs)
    gives the pairs of cache row and simulated CPU the replay allocates on, as before."""
    from numslab.lab import kernels as K
    from numslab.lab.trace import read_trace
    tr = read_trace(DATA / TRACES["git_tar"])
    for cpus in (1, 2, 3, 8):
        at = (tr.kind <= 1) & (tr.row >= 0)
        want = np.unique(tr.row[at].astype(np.int64) * cpus + np.maximum(tr.cpu[at], 0) % cpus)
        got = np.flatnonzero(K.alloc_cpu_rows(tr.kind, tr.row, tr.cpu, len(tr.names), cpus))
        assert got.tolist() == want.tolist() and len(got) > len(tr.names) // 2


def test_slabs_that_differ_from_the_snapshot_s_are_named_in_a_warning():
    """The snapshot's order and objects per slab are what the kernel made; numslab
    computes them (on the configuration's CPU count), and a header-less trace replayed on
    one CPU gave eight caches other orders than the snapshot's, silently. With the
    snapshot machine's CPU count they match and nothing is said."""
    with pytest.warns(UserWarning, match=r"^6\.18:cpus=1: \d+ cache\(s\) differ from the "
                                         r"snapshot: .*\(order \d, \d+ objects; the "
                                         r"snapshot's \d, \d+\)"):
        numslab.replay(DATA / TRACES["git_tar"], kernel="6.18", cpus=1,
                       snapshot=DATA / SNAPSHOTS["git_tar"], progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        numslab.replay(DATA / TRACES["git_tar"], kernel="6.18", cpus=2,
                       snapshot=DATA / SNAPSHOTS["git_tar"], progress=False)


def test_a_typesafe_by_rcu_caches_slabs_wait_for_a_grace_period_at_each_chunk_end():
    """A SLAB_TYPESAFE_BY_RCU cache (the snapshot's ``destroy_by_rcu``) keeps a discarded
    slab's pages until the grace period ends: the replay ends one at each chunk's end, so
    none is left waiting and the page allocator has them back."""
    n = 3000
    ev = [("kmem_cache_alloc", i, " bytes_req=256 bytes_alloc=256 gfp_flags=GFP_KERNEL node=-1")
          for i in range(n)] + [("kmem_cache_free", i, "") for i in range(n)]
    lines = [f"  t-1 [000] ..... 1.{t:06d}: {e}: call_site=x+0x1/0x2 ptr={0x1000 + 64 * i:016x} "
             f"name=tsafe{rest}\n" for t, (e, i, rest) in enumerate(ev)]
    size = numslab.SlabAllocator(nr_cpus=1, memory="4M").kmem_cache_create(
        "x", 256, flags=numslab.SLAB_TYPESAFE_BY_RCU).slab_size
    snap = {"caches": [{"name": "tsafe", "object_size": "256", "slab_size": str(size),
                        "destroy_by_rcu": "1"}]}
    r = numslab.replay("".join(lines).encode(), kernel="7.0", snapshot=snap)
    k = r.names.index("tsafe")
    assert r.allocator.find_cache("tsafe").flags & numslab.SLAB_TYPESAFE_BY_RCU
    assert r.caches["slabs_freed"][k] >= 100
    assert r.allocator.state.g[L.G_NRCU_SLABS] == 0
    r.allocator.validate()


@pytest.mark.parametrize("policy", ["default", "shrink"])
def test_the_table_s_objects_and_slabs_come_from_the_same_moment(policy):
    """Objects were read after the remedy's work at the last point and the slabs at the
    sample before it: under ``shrink``, ``vm_area_struct 0 objects in 10 slabs, 8 of them
    full``. Every row now has its full slabs' objects and at most its slabs' objects."""
    r = numslab.replay(DATA / TRACES["net"], kernel="7.0", snapshot=DATA / SNAPSHOTS["net"],
                       policy=policy)
    c = r.caches
    full = c["slabs"] - c["partial"] - c["cpu_slabs"]
    assert np.all(r.objects >= full * r.objs_per_slab)
    assert np.all(r.objects <= c["slabs"] * r.objs_per_slab)
    assert np.all(r.objects >= c["live_objects"])


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_the_snapshot_s_typesafe_caches_keep_their_flag_and_geometry(name):
    """``vm_area_struct`` (its free pointer inside the object, 6.13's ``freeptr_offset``),
    ``anon_vma`` and ``sighand_cache`` (constructors) lost SLAB_TYPESAFE_BY_RCU in the replay
    to keep their slab size, so their discarded slabs gave their pages back at once."""
    from numslab.lab.replay import load_snapshot
    snap = load_snapshot(DATA / SNAPSHOTS[name])
    r = numslab.replay(DATA / TRACES[name], kernel="7.0", snapshot=DATA / SNAPSHOTS[name])
    typesafe = [nm for nm in r.names if nm in snap and snap[nm].get("destroy_by_rcu") == "1"]
    assert typesafe
    for nm in typesafe:
        c = r.allocator.find_cache(nm)
        assert c.flags & numslab.SLAB_TYPESAFE_BY_RCU, nm
        assert c.slab_size == int(snap[nm]["slab_size"]), nm
    r.allocator.validate()


def test_the_table_prints_long_names_whole_and_the_summary_its_compile_time():
    """slabinfo prints a name with ``%-21s``, which cuts nothing ("ext4_allocation_conte"
    was cut at 21); the summary's lines per second leave the compile out, and say so."""
    lines = [_line("kmem_cache_alloc", 0x100 + 64 * i, name="ext4_allocation_context",
                   bytes_req=64, bytes_alloc=64, gfp_flags="GFP_KERNEL", node=-1)
             for i in range(20)]
    r = numslab.replay("".join(lines).encode(), kernel="7.0")
    assert r.table().splitlines()[1].split()[0] == "ext4_allocation_context"
    r.compile_seconds = 3.25
    assert "(+ 3.2 s compiling, not counted)" in r.summary()
    r.compile_seconds = 0.0
    assert "compiling" not in r.summary()


def test_a_configuration_saying_two_things_of_one_kind_is_refused():
    # '6.18:7.0' replayed 7.0, 'cpus=2:cpus=8' 8 CPUs, 'every=5:every=free' every=free: the
    # last word won, silently (two starts and two remedies of a kind were refused already)
    base = Config("7.0", 2, 1, "default")
    for bad in ("6.18:7.0", "7.0:cpus=2:cpus=8", "7.0:nodes=1:nodes=2:cpus=4",
                "7.0:mobility:every=5:every=free", "7.0:shrink:every=5:every=0"):
        with pytest.raises(SlabError, match="one "):
            parse_config(bad, base)
    assert parse_config("7.0:7.0:cpus=4:cpus=4", base) == Config("7.0", 4, 1, "default")
    # past SlabAllocator's 64 nodes: refused with the configuration, before the trace is read
    with pytest.raises(SlabError, match="65 nodes"):
        parse_config("7.0:nodes=65:cpus=100", base)
    with pytest.raises(SlabError, match="^65 nodes: past the 64 a machine may have$"):
        numslab.replay(b"", nodes=65, cpus=100)
    # without cpus (the trace's, not read yet) it said "99999 nodes and 4096 CPUs"
    with pytest.raises(SlabError, match="^99999 nodes: past the 64"):
        numslab.replay(b"", nodes=99999)


def test_configuration_words_of_the_slab_orders_boot_parameters():
    """``slab_min_order=N``, ``slab_max_order=N`` and ``slab_min_objects=N`` in a
    configuration: the kernel's setup rules, the name as ``--compare`` spells it, the words
    refused twice or malformed, and the replayed allocator built with them."""
    base = Config()
    c = parse_config("7.0:slab_max_order=0", base)
    assert c.orders == (0, 0, 0) and c.name == "7.0:cpus=2:slab_max_order=0"
    assert parse_config("slab_min_order=0:slab_max_order=1", base).orders == (0, 1, 0)
    assert parse_config("7.0", base).orders == (0, 3, 0)
    four = parse_config("7.0:slab_max_order=5:slab_min_objects=4", base)
    assert four.orders == (0, 5, 4) and four.name.endswith("slab_max_order=5:slab_min_objects=4")
    assert parse_config("cpus=2", Config(orders=(0, 0, 0))).orders == (0, 0, 0)   # the base's
    # slabs past the replay's random sequences (any minimum order makes kmalloc-8's):
    # refused before the trace is read; a minimum alone raises the maximum, as
    # SlabAllocator(slab_min_order=) does (it was cut to 3: a hunting helper's finding)
    for word, objs in (("slab_min_order=1", 1024), ("slab_min_order=5", 16384),
                       ("slab_min_objects=600", 1024)):
        with pytest.raises(SlabError, match=f"kmalloc-8's slabs would hold {objs} objects"):
            parse_config(f"7.0:{word}", base)
    for bad, says in (("7.0:slab_max_order=x", "a whole N >= 0"),
                      ("slab_max_order=1:slab_max_order=2", "one slab_max_order=N"),
                      ("slab_min_order=11", "MAX_PAGE_ORDER"),
                      ("7.0:slab_min_objects=", "a whole N >= 0")):
        with pytest.raises(SlabError, match=says):
            parse_config(bad, base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # (its geometry differs from the snapshot's)
        r = numslab.replay(DATA / TRACES["git_tar"], kernel="7.0", cpus=2, samples=8,
                           compare="7.0,7.0:slab_max_order=0")
    lean = r.configs["7.0:cpus=2:slab_max_order=0"].allocator
    assert lean.slab_orders.max_order == 0
    assert max(c.order for c in lean.caches if c.object_size <= 4096) == 0
    assert max(c.order for c in r.configs["7.0:cpus=2"].allocator.caches) > 0
    lean.validate()


@pytest.mark.parametrize("text", [b"", b"# tracer: nop\n#\n", b"  t-1 [000] ..... 1.000001: "
                                  b"mm_page_alloc: page=0x1 pfn=0x1 order=0 migratetype=0\n"])
def test_a_trace_with_no_kmem_event_says_there_is_nothing_to_replay(text, monkeypatch):
    """``perf script | numslab replay -`` with no perf.data replayed nothing and reported an
    empty machine (%Ef 100.0) with no word said. Nor is the replay's loop called for no event
    (on an empty Numba cache it compiled for 40 s to print an empty table)."""
    def no_chunk(*args):
        raise AssertionError("replay_chunk called with no event to replay")

    monkeypatch.setattr(K, "replay_chunk", no_chunk)
    with pytest.warns(UserWarning, match="is a kmem allocation or free .*: nothing to replay"):
        r = numslab.replay(text, progress=False)
    assert r.replayed == 0 and r.series.live_objects.shape == (1, 0)
    assert r.peak_bytes == (0, 0)


def test_a_trace_naming_few_cpus_with_a_high_number_says_how_many_the_machine_gets():
    """A kernel engineer's trial: one line edited to CPU 4095 made a replay on 4096 CPUs (57 MB
    of slabs for 335 KB live, %Ef 0.6) with no word said; ``cpus=`` given, nothing is said."""
    lines = [_line("kmem_cache_alloc", 0x1000 + 0x40 * i, cpu=0, name="obj", bytes_req=64,
                   bytes_alloc=64, gfp_flags="GFP_KERNEL", node=-1) for i in range(20)]
    lines[7] = lines[7].replace("[000]", "[095]")
    text = "".join(lines).encode()
    with pytest.warns(UserWarning, match=r"name 2 CPU\(s\), the highest CPU 95 \(line 8\): "
                                         r"the machine gets 96 CPUs"):
        r = numslab.replay(text, kernel="7.0", samples=5, progress=False)
    assert r.config.cpus == 96 and r.replayed == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert numslab.replay(text, kernel="7.0", cpus=2, samples=5,
                              progress=False).config.cpus == 2


def test_a_trace_whose_ring_buffer_lost_events_is_named_in_a_warning():
    """``trace_pipe``'s ``CPU:1 [LOST 37 EVENTS]`` lines were counted as skipped lines with no
    word said (a kernel engineer's trial), though the replay misses those events: a warning
    names how many such lines and the first; a trace with none warns of nothing."""
    lines = [_line("kmem_cache_alloc", 0x1000 + 0x40 * i, name="obj", bytes_req=64,
                   bytes_alloc=64, gfp_flags="GFP_KERNEL", node=-1) for i in range(20)]
    lines = [ln.replace(ln.split()[3], f"1.{i:06d}:") for i, ln in enumerate(lines)]
    lost = lines[:5] + ["CPU:1 [LOST 37 EVENTS]\n"] + lines[5:12] + ["CPU:0 [LOST 2 EVENTS]\n"] \
        + lines[12:]
    with pytest.warns(UserWarning, match=r"2 line\(s\) say the ring buffer lost events "
                                         r"\(first: line 6\)"):
        r = numslab.replay("".join(lost).encode(), kernel="7.0", samples=5, progress=False)
    assert r.skipped["lost_events_line"] == 2 and r.replayed == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        numslab.replay("".join(lines).encode(), kernel="7.0", samples=5, progress=False)


def test_a_trace_whose_ring_buffer_overwrote_events_is_named_in_a_warning(tmp_path):
    """A tracefs file recorded with too small a buffer (its header: 735 of 119,992 events kept)
    replayed with no word said, where ``numslab record`` had warned when it wrote it (h21's
    trial); ``read_trace`` reads the counts, and a file whose buffer kept every event, or with
    no header, warns of nothing."""
    from numslab.lab.trace import read_trace

    def alloc(k):
        return (f"  t-1 [000] ..... 10.{k + 1:06d}: kmem_cache_alloc: call_site=x+0x1/0x2 "
                f"ptr={0x3000 + 256 * k:016x} name=dentry bytes_req=192 bytes_alloc=192 "
                f"gfp_flags=GFP_KERNEL node=-1\n")
    head = ("# tracer: nop\n#\n# entries-in-buffer/entries-written: 735/119992   #P:2\n#\n"
            "##### CPU 0 buffer started ####\n")
    path = tmp_path / "small.txt"
    path.write_text(head + "".join(alloc(k) for k in range(40)))
    tr = read_trace(path)
    assert (tr.written, tr.overwritten, len(tr)) == (119992, 119257, 40)
    with pytest.warns(UserWarning, match=f"^{re.escape(str(path))}: its header says the ring "
                                         r"buffer overwrote the oldest 119257 of 119992 "
                                         r"events \(99%\)"):
        r = numslab.replay(path, samples=20, progress=False)
    assert r.overwritten_events == r.to_json()["overwritten_events"] == 119257
    for top in (head.replace("735/119992", "40/40"), ""):
        path.write_text(top + "".join(alloc(k) for k in range(40)))
        assert read_trace(path).overwritten == 0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert numslab.replay(path, samples=20, progress=False).overwritten_events == 0


def test_a_file_with_no_kmem_event_is_named_in_the_warning(tmp_path):
    """The warning named every trace "trace": ``numslab replay empty.txt`` said "numslab:
    warning: trace: none of its 0 event line(s) ...", the time-order warning the file."""
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.warns(UserWarning, match=f"^{re.escape(str(path))}: none of its 0 event"):
        numslab.replay(path, progress=False)


def test_the_table_s_cpu_slabs_are_sysfs_cpu_slabs():
    """slabinfo's ``Slabs/Part/Cpu`` reads sysfs ``cpu_slabs``, which counts a CPU's partial
    list only when the CPU has a CPU slab (``show_slab_objects``'s ``continue``). The table
    printed the series' count, every CPU partial list: warm 6.18 on the network excerpt,
    ``TCP 0/1/4`` where slabinfo prints ``1/1/3`` (and three other caches)."""
    r = numslab.replay(DATA / TRACES["net"], kernel="6.18", cpus=2,
                       snapshot=DATA / SNAPSHOTS["net"], warm=True)
    rows = {ln.split()[0]: ln.split()[4] for ln in r.table(all_caches=True).splitlines()[1:]}
    differ = 0
    for k, nm in enumerate(r.names):
        s = r.allocator.find_cache(nm).sysfs()
        slabs, cpu = int(s["slabs"].split()[0]), int(s["cpu_slabs"].split()[0])
        assert rows[nm] == f"{slabs - cpu}/{int(s['partial'].split()[0])}/{cpu}", nm
        differ += cpu != r.caches["cpu_slabs"][k]
    assert differ                   # the series count every CPU partial list


def test_table_breaks_ties_by_name_as_slabinfo_sorts():
    """``tools/mm/slabinfo.c``'s ``sort_slabs`` (linux-mm 09ce6b32): with ``-S``, equal
    ``slab_size(s)`` fall to ``strcasecmp(s1->name, s2->name)``, then ``result > 0`` swaps,
    so ties come in case-blind name order (``-P`` likewise on equal ``partial``). The table
    kept the caches' row order for ties: a cache first met in the trace came first, and the
    many caches of one 4 KiB slab were listed in trace order."""
    line = ("  cat-1 [000] ..... 1.{:06d}: kmem_cache_alloc: call_site=f+0x1/0x9 "
            "ptr=00000000{:08x} name={} bytes_req=64 bytes_alloc=64 gfp_flags=GFP_KERNEL "
            "node=-1 accounted=false\n")
    names = ["zeta", "Beta", "alpha", "Gamma"]
    trace = "".join(line.format(i, 0x1000 + 0x10000 * i, nm)
                    for i, nm in enumerate(names)).encode()
    r = numslab.replay(trace, kernel="7.0")
    assert [r.names.index(n) for n in names] == sorted(r.names.index(n) for n in names)
    c = r.caches
    assert len({int(c["slab_bytes"][r.names.index(n)]) for n in names}) == 1
    rows = [ln.split()[0] for ln in r.table().splitlines()[1:]]
    assert rows == ["alpha", "Beta", "Gamma", "zeta"]
    rows = [ln.split()[0] for ln in r.table(sort="partial").splitlines()[1:]]
    assert rows == ["alpha", "Beta", "Gamma", "zeta"]


def test_the_compare_table_prints_slab_counts_exactly():
    """``slabs`` and ``partial slabs`` are counts: the side-by-side table printed them with
    ``store_size``, the byte formatter, as ``3.7K`` for both 3,752 and 3,799 slabs (two
    generations on a recorded trace), so it could not tell apart what the summary lines did;
    they are now exact integers, as ``slabs allocated`` and the summary lines print them."""
    trace = "".join(f"  t-1 [000] ..... 1.{i:06d}: kmem_cache_alloc: call_site=x+0x1/0x2 "
                    f"ptr={0x100000 + 4096 * i:016x} name=obj bytes_req=4096 bytes_alloc=4096 "
                    "gfp_flags=GFP_KERNEL node=-1\n" for i in range(9000)).encode()
    r = numslab.replay(trace, compare="7.0,6.18")
    assert all(c.totals["slabs"] > 1000 for c in r.configs.values())
    rows = {line[:22].strip(): line[22:].split() for line in r.compare_table().splitlines()}
    for label, key in (("slabs", "slabs"), ("partial slabs", "partial")):
        assert rows[label] == [str(c.totals[key]) for c in r.configs.values()], label


def test_the_compare_table_counts_the_objects_caches_hold_for_no_user():
    """Lameter's question about sheaves (objects queued in them instead of going back to their
    slabs) had no figure in the side-by-side table; ``cached objects`` is sysfs ``objects``
    less the live objects over every cache: 6.18's CPU slabs' free objects, 7.0's sheaves'."""
    lines = []
    for i in range(2000):
        lines.append(f"  t-1 [000] ..... 1.{2 * i:06d}: kmem_cache_alloc: call_site=x+0x1/0x2 "
                     f"ptr={0x100000 + 64 * i:016x} name=obj bytes_req=64 bytes_alloc=64 "
                     "gfp_flags=GFP_KERNEL node=-1\n")
    for i in range(0, 2000, 3):                 # every third freed: sheaves fill, slabs stay
        lines.append(f"  t-1 [000] ..... 2.{i:06d}: kmem_cache_free: call_site=x+0x1/0x2 "
                     f"ptr={0x100000 + 64 * i:016x} name=obj\n")
    r = numslab.replay("".join(lines).encode(), compare="6.18,7.0")
    row = next(line for line in r.compare_table().splitlines()
               if line.startswith("cached objects"))
    want = [int(np.sum(c.objects - c.series.live_objects[-1])) for c in r.configs.values()]
    assert row.split()[2:] == [str(x) for x in want]
    assert want[1] > 0                          # 7.0's sheaves hold freed objects
