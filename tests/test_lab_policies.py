"""The remedies against fragmentation as replay policies (``numslab.lab.policies``): each one
switched on, the replay still exact against the plain-Python oracle (the pointer map follows
every move of ``mobility``), and the policies' effect on slab memory in the same run."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab.errors import SlabError
from numslab.lab.replay import Config, parse_config

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


@pytest.mark.parametrize("policy", ["mobility", "mobility=100", "shrink", "sorted"])
def test_a_remedy_keeps_the_replay_exact(policy, kernel):
    # compaction moves objects under the replay: the live objects of every cache at every
    # sample point must still be the oracle's, and every later free must find its object
    name = "net"
    r = numslab.replay(DATA / TRACES[name], kernel=kernel, snapshot=DATA / SNAPSHOTS[name],
                       policy=policy)
    want = live_at(text(name), r.series.line.tolist())
    for k, counts in enumerate(want):
        got = {nm: int(v) for nm, v in zip(r.names, r.series.live_objects[k]) if v}
        assert got == {nm: v for nm, v in counts.items() if v}, f"sample {k}"
    assert r.replayed + sum(r.skipped.values()) == r.lines
    assert r.allocator.validate() is None
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
