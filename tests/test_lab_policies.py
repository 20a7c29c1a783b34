"""The remedies against fragmentation as replay policies (``numslab.lab.policies``): each one
switched on, the replay still exact against the plain-Python oracle (the pointer map follows
every move of ``mobility``), and the policies' effect on slab memory in the same run."""
from __future__ import annotations

import re

import numpy as np
import pytest

import numslab
from numslab.engine.layout import G_NRCU_SLABS
from numslab.errors import SlabError
from numslab.lab.config import Config, parse_config

from lab_oracle import DATA, SNAPSHOTS, TRACES, live_at, text

KERNELS = ("7.0", "6.18")


def test_policy_words_parse_and_refuse():
    base = Config("7.0", 2, 1, "default")
    for word in ("sorted", "shrink", "mobility", "mobility=100", "drain=0", "drain=100"):
        assert parse_config(f"6.18:{word}", base).policy == word
    assert parse_config("mobility=07", base).policy == "mobility=7"
    for bad in ("mobility=101", "drain=x", "drain=-1", "compact"):
        with pytest.raises(SlabError):
            parse_config(bad, base)


def assert_exact(r, name):
    """The live objects of every cache at every sample point are the oracle's, every line
    is accounted for, and the allocator's invariants hold."""
    want = live_at(text(name), r.series.line.tolist())
    for k, counts in enumerate(want):
        got = {nm: int(v) for nm, v in zip(r.names, r.series.live_objects[k]) if v}
        assert got == {nm: v for nm, v in counts.items() if v}, f"sample {k}"
    assert r.replayed + sum(r.skipped.values()) == r.lines
    assert r.allocator.validate() is None


@pytest.mark.parametrize("policy", ["mobility", "mobility=100", "shrink", "sorted"])
def test_a_remedy_keeps_the_replay_exact(policy, kernel):
    # compaction moves objects under the replay: the live objects of every cache at every
    # sample point must still be the oracle's, and every later free must find its object
    name = "net"
    r = numslab.replay(DATA / TRACES[name], kernel=kernel, snapshot=DATA / SNAPSHOTS[name],
                       policy=policy)
    assert_exact(r, name)
    if policy == "sorted":
        assert r.allocator.partial_order == "sorted"


def test_mobility_holds_fewer_slabs_than_the_kernel_policy(kernel):
    name = "net"
    base, moved = (numslab.replay(DATA / TRACES[name], kernel=kernel,
                                  snapshot=DATA / SNAPSHOTS[name], policy=p)
                   for p in ("default", "mobility=100"))
    assert moved.totals["slab_bytes"] < base.totals["slab_bytes"]
    assert moved.totals["mean_efficiency"] > base.totals["mean_efficiency"]
    assert sum(c.objects_moved for c in moved.allocator.caches) > 0
    assert sum(c.objects_moved for c in base.allocator.caches) == 0


def test_drain_sets_every_caches_remote_node_defrag_ratio():
    r = numslab.replay(DATA / TRACES["net"], kernel="7.0", cpus=2, nodes=2, policy="drain=100")
    caches = [r.allocator.find_cache(nm) for nm in r.names]
    assert caches and all(c.remote_node_defrag_ratio == 100 for c in caches)
    r0 = numslab.replay(DATA / TRACES["net"], kernel="7.0", cpus=2, nodes=2, policy="drain=0")
    assert all(r0.allocator.find_cache(nm).remote_node_defrag_ratio == 0 for nm in r0.names)
    assert np.array_equal(r.series.live_objects, r0.series.live_objects)


def test_every_free_parses_and_refuses():
    from numslab.lab.config import EVERY_FREE
    base = Config("7.0", 2, 1, "default")
    c = parse_config("6.18:mobility=100:every=free", base)
    assert (c.kernel, c.policy, c.every) == ("6.18", "mobility=100", EVERY_FREE)
    assert c.name == "6.18:cpus=2:mobility=100:every=free"
    assert parse_config("shrink:every=free", base).every == EVERY_FREE
    for bad in ("7.0:every=free", "sorted:every=free", "drain=10:every=free",
                "mobility:every=frees", "mobility:every=Free"):
        with pytest.raises(SlabError):
            parse_config(bad, base)
    with pytest.raises(SlabError, match="every=free"):
        numslab.replay(DATA / TRACES["net"], kernel="7.0", every="free")


def test_every_n_needs_a_policy_with_work_and_a_global_every_applies_where_there_is():
    """``7.0:sorted:every=5`` was accepted and ran nothing every 5 events; ``--every free
    --compare 7.0,7.0:mobility`` was refused for the base policy, which no configuration
    used. A configuration's own ``every`` needs work; a global one goes to those with work."""
    from numslab.lab.config import EVERY_FREE
    from numslab.lab.replay import _configs
    base = Config("7.0", 2, 1, "default")
    for bad in ("7.0:sorted:every=5", "7.0:every=7", "drain=10:every=3", "leansheaves:every=2"):
        with pytest.raises(SlabError, match=r"every=\d+ needs a policy with work"):
            parse_config(bad, base)
    assert parse_config("7.0:sorted:every=0", base).every == 0
    assert parse_config("7.0:shrink:every=5", base).every == 5
    with pytest.raises(SlabError, match="every=5 needs a policy with work"):
        _configs("7.0", 2, 1, "sorted", 5, None)
    cs = _configs("7.0", 2, 1, "default", "free", ["7.0", "7.0:mobility", "7.0:shrink"])
    assert [c.every for c in cs] == [0, EVERY_FREE, EVERY_FREE]
    assert [c.name for c in _configs("7.0", 2, 1, "default", 5, ["7.0:sorted", "shrink"])] \
        == ["7.0:cpus=2:sorted", "7.0:cpus=2:shrink:every=5"]


@pytest.mark.parametrize("policy,nodes", [("mobility=100", 1), ("mobility", 1), ("shrink", 1),
                                          ("mobility=100", 2)])
def test_work_after_frees_keeps_the_replay_exact(policy, nodes, kernel):
    # compactions run inside the compiled replay, the pointer map follows each move through
    # the objects' own back-references: the live objects at every sample are the oracle's
    name = "net"
    r = numslab.replay(DATA / TRACES[name], kernel=kernel, snapshot=DATA / SNAPSHOTS[name],
                       policy=policy, every="free", cpus=2, nodes=nodes)
    assert_exact(r, name)
    assert r.work_runs > 0
    moved = sum(c.objects_moved for c in r.allocator.caches)
    assert r.objects_moved == moved
    assert (moved > 0) == (policy != "shrink")
    assert r.to_json()["work_runs"] == r.work_runs


def _naive_every_free(kernel: str, ratio: int):
    """The trace replayed one event at a time with no work in the compiled loop, and the
    rule of ``every=free`` applied in plain Python through the facade after each replayed
    free of a slab object: the cache's slabs against the fewest that hold ``len(cache)``
    objects, the floor kept per cache in a dict, ``cache.compact(ratio)`` on the freeing
    CPU and ``numslab.remap`` of the whole pointer map. (allocator, compactions, moves,
    pointer map)."""
    from numslab.lab import kernels as K
    from numslab.lab import policies as P
    from numslab.lab import replay as R
    from numslab.lab.trace import read_trace
    snap = R.load_snapshot(DATA / SNAPSHOTS["net"])
    p = R.prepare(R.merge_aliases(read_trace(DATA / TRACES["net"]), snap))
    cfg = Config(kernel, 2, 1, f"mobility={ratio}", R.EVERY_FREE)
    sa, cids, _, _ = R._build(p, cfg, snap, R._memory(p, cfg))
    tr = p.trace
    npid = max(p.npid, 1)
    addr, owner = np.zeros(npid, np.int64), np.zeros(npid, np.int32)
    lbytes, counts = np.zeros(npid, np.int64), np.zeros(K.K_NCOUNTS, np.int64)
    caches = [sa.find_cache(nm) for nm in p.names]
    work = P.free_work(sa, caches, cfg.policy, False, npid)     # the bookkeeping, no trigger
    ev, ptrs = tuple(K.Events.of(tr)), tuple(K.Pointers(addr, owner, lbytes))   # as replay's
    floor: dict[int, int] = {}
    runs = moved = 0
    points = R._sample_points(len(tr), R.SAMPLES)     # where the replay's chunks end: a grace
    ends = set(np.union1d(points, R._work_points(len(tr), cfg.every, points)).tolist())
    for i in range(len(tr)):                          # period ends there (typesafe slabs)
        if i in ends and sa.state.g[G_NRCU_SLABS]:
            sa.synchronize_rcu()
        done = counts[K.K_REPLAYED]
        K.replay_chunk(sa.handle, i, i + 1, ev, 2, 1, cids, ptrs, counts, work)
        pid = int(tr.pid[i])
        if tr.kind[i] not in (K.EV_KFREE, K.EV_CACHE_FREE) or counts[K.K_REPLAYED] == done \
                or owner[pid] == K.ROW_LARGE:
            continue
        c = caches[owner[pid]]
        excess = c.slabs - -(-len(c) // c.objs_per_slab)
        f = min(floor.get(c.id, 0), excess)
        if excess > f:
            sa.set_cpu(max(int(tr.cpu[i]), 0) % 2)
            o, n = c.compact(ratio)
            sa.set_cpu(0)
            live = addr != 0
            addr[live] = numslab.remap(addr[live], o, n)
            runs += 1
            moved += len(o)
            f = c.slabs - -(-len(c) // c.objs_per_slab)
        floor[c.id] = f
    if len(tr) in ends and sa.state.g[G_NRCU_SLABS]:
        sa.synchronize_rcu()
    return sa, runs, moved, addr


def test_work_after_frees_against_a_naive_python_rendering_of_the_rule(kernel):
    # the compiled trigger (incremental live counts, the floor, compaction through
    # numslab.jit and the objects' back-references) against the rule spelt in Python over
    # the facade: the same compactions, the same moves, the same machine at the end
    sa, runs, moved, addr = _naive_every_free(kernel, 100)
    r = numslab.replay(DATA / TRACES["net"], kernel=kernel, snapshot=DATA / SNAPSHOTS["net"],
                       policy="mobility=100", every="free")
    assert runs > 20 and moved > 0
    assert (r.work_runs, r.objects_moved) == (runs, moved)
    got, want = r.allocator.state, sa.state
    for name in ("node", "ca", "sl_inuse", "sl_freelist", "pg_flags", "live"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    end = r.allocator.memory.view(np.int64)
    live = addr[addr != 0]
    assert np.array_equal(end[live >> 3], sa.memory.view(np.int64)[live >> 3])


def test_every_free_from_the_command(capsys):
    import json

    from numslab.tools import cli
    assert cli.main(["replay", str(DATA / TRACES["net"]), "--policy", "mobility=100",
                     "--every", "free", "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["config"].endswith(":mobility=100:every=free") and j["work_runs"] > 0
    with pytest.raises(SystemExit):
        cli.main(["replay", str(DATA / TRACES["net"]), "--every", "often"])


def test_compaction_under_618_also_packs_what_the_barns_flush_put_on_cpu_partial_lists():
    # 6.18's shrink flushes the barn's full sheaves after the CPUs: __slab_free puts the
    # full slabs that get a free object on the running CPU's partial list. The compaction
    # flushes the CPUs again, so it packs those too: the fewest slabs (naive count)
    from numslab.engine.layout import C_PARTIAL, N_BARN_FULL, NIL
    sa = numslab.SlabAllocator(nr_cpus=2, memory="64M", kernel="6.18")
    c = sa.kmem_cache_create("movable", 256, sheaf_capacity=32)
    refs = c.alloc_bulk(6000)
    rng = np.random.default_rng(7)
    for a in refs[rng.random(len(refs)) < 0.7].tolist():    # single frees: sheaves, barn
        c.free(a)
    assert sa.state.node[c.id, 0, N_BARN_FULL] != 0          # full sheaves in the barn
    c.compact(100)
    assert (sa.state.cpu[c.id, :, C_PARTIAL] == NIL).all()
    assert c.slabs == -(-len(c) // c.objs_per_slab)
    assert sa.validate() is None


# ---- remedies combined, and lean sheaves (sheaf-aware mobility) -------------------------------
def test_remedies_combine_one_word_of_each_kind():
    base = Config("7.0", 2, 1, "default")
    c = parse_config("7.0:mobility=100:leansheaves:sorted:every=free", base)
    assert c.policy == "sorted:leansheaves:mobility=100"        # canonical order
    assert c.name == "7.0:cpus=2:sorted:leansheaves:mobility=100:every=free"
    assert parse_config(c.name, base) == c                         # the name parses back
    assert parse_config("sorted:drain=50", base).policy == "sorted:drain=50"
    for bad in ("shrink:mobility", "mobility:mobility=100", "drain=1:drain=2",
                "sorted:nosheaves", "sheaves=8:sorted", "default:sorted",
                "6.18:leansheaves", "6.18:leansheaves:mobility=100:every=free",
                "leansheaves:every=free"):
        with pytest.raises(SlabError):
            parse_config(bad, base)
    with pytest.raises(SlabError, match="leansheaves"):
        numslab.replay(DATA / TRACES["net"], kernel="6.18", policy="leansheaves")
    r = numslab.replay(DATA / TRACES["net"], kernel="7.0", policy="mobility=100:sorted")
    assert r.config.policy == "sorted:mobility=100"
    assert r.allocator.partial_order == "sorted" and r.objects_moved > 0


@pytest.mark.parametrize("policy,every", [("leansheaves", 0),
                                          ("sorted:leansheaves:mobility=100", "free"),
                                          ("leansheaves:mobility", 0)])
def test_lean_sheaves_keep_the_replay_exact(policy, every):
    name = "net"
    r = numslab.replay(DATA / TRACES[name], kernel="7.0", snapshot=DATA / SNAPSHOTS[name],
                       policy=policy, every=every, cpus=2)
    assert_exact(r, name)


def _held(sa, cache):
    """Objects parked in the sheaves of ``cache`` (every CPU's main and spare, the barn's
    full ones), and the sheaf structs it has, read from the state in plain Python."""
    from numslab.engine.layout import SH_SIZE
    mem = sa._mem                       # sheaves' words: the shadow half
    sheaves = _sheaf_addresses(sa, cache)
    return sum(int(mem[(s >> 3) + SH_SIZE]) for s in sheaves), len(sheaves)


def _churn_trace(n: int = 3000) -> bytes:
    """``n`` dentries allocated on CPUs 0 and 1 in turn, then two thirds of them freed (runs
    of 60 freed, 30 kept), then a tenth of that allocated again: a free-heavy phase whose
    freed objects 7.0 parks in sheaves."""
    a = ("  bash-1 [{cpu:03d}] ..... 10.{t:06d}: kmem_cache_alloc: call_site=f+0x1/0x9 "
         "ptr=00000000{p:08x} name=dentry bytes_req=192 bytes_alloc=192 gfp_flags=GFP_KERNEL "
         "node=-1 accounted=false\n")
    f = ("  bash-1 [{cpu:03d}] ..... 11.{t:06d}: kmem_cache_free: call_site=f+0x1/0x9 "
         "ptr=00000000{p:08x} name=dentry\n")
    lines = [a.format(cpu=i % 2, t=i, p=0x1000 + 256 * i) for i in range(n)]
    lines += [f.format(cpu=i % 2, t=i, p=0x1000 + 256 * i) for i in range(n) if i % 90 >= 30]
    lines += [a.replace("10.", "12.").format(cpu=i % 2, t=i, p=0x1000 + 256 * (n + i))
              for i in range(n // 10)]
    return "".join(lines).encode()


def test_lean_sheaves_hold_at_most_a_slab_of_free_objects_per_cache():
    # the kernel's sheaves park the freed dentries (main, spare, full barn sheaves, each a
    # sheaf struct of its own); lean sheaves hold at most a slab's objects shared by the
    # CPUs, in the CPUs' main sheaves only, and leave fewer slabs for the same live objects
    trace = _churn_trace()
    r = numslab.replay(trace, kernel="7.0", cpus=2, compare=["7.0", "7.0:leansheaves"])
    kern, lean = r.configs["7.0:cpus=2"], r.configs["7.0:cpus=2:leansheaves"]
    assert np.array_equal(kern.series.live_objects, lean.series.live_objects)
    ck, cl = (x.allocator.find_cache("dentry") for x in (kern, lean))
    per_slab = cl.objs_per_slab
    held_k, structs_k = _held(kern.allocator, ck)
    held_l, structs_l = _held(lean.allocator, cl)
    limit = max(1, min(cl.sheaf_capacity, per_slab // 2))
    assert held_l <= 2 * limit <= per_slab
    assert structs_l == 2                                  # one main sheaf per CPU
    assert held_k > per_slab and structs_k > 2
    assert lean.totals["slab_bytes"] < kern.totals["slab_bytes"]
    assert lean.totals["time_mean_efficiency"] > kern.totals["time_mean_efficiency"]
    assert ck.stats["sheaf_alloc"] > cl.stats["sheaf_alloc"]
    for x in (kern, lean):
        assert x.allocator.validate() is None


def test_lean_sheaves_from_the_command(capsys):
    import json

    from numslab.tools import cli
    assert cli.main(["replay", str(DATA / TRACES["net"]), "--kernel", "7.0", "--compare",
                     "7.0,7.0:sorted:leansheaves:mobility=100:every=free", "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert any(k.endswith(":sorted:leansheaves:mobility=100:every=free") for k in j["configs"])


def test_the_figure_with_sheaf_structs_counts_the_allocators_own_kmallocs():
    # a second, labelled figure: the allocator's sheaf, barn and random-sequence structs
    # (kmalloc objects) as in use with the live bytes; the count per cache row at the last
    # sample against a plain-Python walk of every cache's sheaves, barns and s->random_seq to
    # the slab that holds each struct
    from numslab.engine.layout import PG_TAIL
    name = "git_tar"        # (its kmalloc-512 and -64 rows hold the structs; the network
    # trace's rows of their classes were the kernel's own kmallocs, now skipped)
    r = numslab.replay(DATA / TRACES[name], kernel="7.0", snapshot=DATA / SNAPSHOTS[name],
                       cpus=2)
    sa = r.allocator
    st = sa.state
    structs: dict[int, int] = {}
    for c in {c.id: c for c in list(sa.caches) + list(sa.kmalloc_caches)}.values():
        for s in _sheaf_addresses(sa, c):
            pfn = (s - sa.memory.size) >> 12        # the handle's kmalloc object
            if st.pg_flags[pfn] & PG_TAIL:
                pfn = int(st.pg_head[pfn])
            owner = int(st.sl_cache[pfn])
            structs[owner] = structs.get(owner, 0) + 1
    for b in sa.barn_addresses().tolist():          # and its barns, kmalloc-64 objects
        owner = int(st.sl_cache[b >> 12])
        structs[owner] = structs.get(owner, 0) + 1
    for q in sa.random_seq_addresses().tolist():    # and every cache's s->random_seq
        pfn = q >> 12                               # (in slabs of up to order 3)
        owner = int(st.sl_cache[st.pg_head[pfn] if st.pg_flags[pfn] & PG_TAIL else pfn])
        structs[owner] = structs.get(owner, 0) + 1
    ids = [sa.find_cache(nm).id for nm in r.names]
    want = [structs.get(i, 0) for i in ids]
    assert r.series.sheaf_structs[-1].tolist() == want and sum(want) > 0
    t = r.totals
    lb = r.series.live_bytes[-1].sum()
    own = (r.series.sheaf_structs[-1] * r.object_size).sum()
    assert own > 0 and t["with_sheaves_time_mean_efficiency"] > t["time_mean_efficiency"]
    sb = r.series.slab_bytes.sum(axis=1)
    ef_own = (r.series.live_bytes.sum(axis=1) + (r.series.sheaf_structs * r.object_size)
              .sum(axis=1)) * 100.0 / sb
    assert t["with_sheaves_mean_efficiency"] == pytest.approx(ef_own.mean())
    assert lb + own <= r.series.slab_bytes[-1].sum()
    # the line is a variant of the %Ef over trace time above it, and says so
    assert re.search(r"\n%Ef mean, trace time .*\n  with sheaf structs ", r.compare_table())


def _sheaf_addresses(sa, c):
    """Every sheaf of cache ``c``: each CPU's main and spare, the barn's full and empty."""
    from numslab.engine.layout import C_MAIN, C_SPARE, N_BARN_EMPTY, N_BARN_FULL, SH_NEXT
    mem = sa._mem
    out = [int(s) for col in (C_MAIN, C_SPARE) for s in sa.state.cpu[c.id, :, col] if s]
    for node in range(sa.nr_nodes):
        for col in (N_BARN_FULL, N_BARN_EMPTY):
            s = int(sa.state.node[c.id, node, col])
            while s:
                out.append(s)
                s = int(mem[(s >> 3) + SH_NEXT])
    return out
