"""The maple tree's prefilled-sheaf workload (``numslab.lab.maple``, ``numslab maple``): the
barn refill of generation ``next`` against 7.3, in the directions the patch's own
will-it-scale table reports."""
from __future__ import annotations

import json
import warnings

import pytest

import numslab
from numslab.lab.maple import COUNTERS, MAX_NEED, maple_churn
from numslab.tools import cli

SMALL = {"ops": 1200, "cpus": 4, "live": 1024, "grace": 16}


@pytest.fixture(scope="module")
def runs() -> dict[str, dict]:
    return {k: maple_churn(k, **SMALL) for k in ("7.3", "next")}


def test_the_barn_refill_takes_the_flushes_away(runs):
    old, new = runs["7.3"]["counters"], runs["next"]["counters"]
    # the same writes: as many prefills, every one from the spare, as many kfree_rcu'd nodes
    for k in ("sheaf_prefill_fast", "sheaf_prefill_slow", "free_rcu_sheaf"):
        assert old[k] == new[k]
    assert old["sheaf_prefill_fast"] == SMALL["ops"] and old["free_rcu_sheaf"] > SMALL["ops"]
    # 7.3: the barn's full list is at its limit at once and never drawn from, so RCU sheaves
    # are flushed and the prefilled sheaves refilled from the slabs
    assert old["barn_get"] == 0 and old["barn_put"] == numslab.engine.layout.MAX_FULL_SHEAVES
    assert old["barn_put_fail"] > 0 and old["sheaf_flush"] > 0
    # next: the refills draw from the barn, which takes the RCU sheaves in
    assert new["barn_get"] > 0 and new["barn_put"] > old["barn_put"]
    for k in ("barn_put_fail", "sheaf_flush", "sheaf_refill", "free_add_partial",
              "alloc_slab"):
        assert new[k] < old[k], k
    assert runs["7.3"]["live"] == runs["next"]["live"] == SMALL["live"]


def test_a_run_is_the_same_every_time(runs):
    again = maple_churn("next", **SMALL)
    assert {k: again[k] for k in ("counters", "slabs", "slabs_after_shrink", "objects")} == \
        {k: runs["next"][k] for k in ("counters", "slabs", "slabs_after_shrink", "objects")}


def test_bad_node_counts_are_refused():
    with pytest.raises(numslab.InvalidArgumentError, match="used"):
        maple_churn("7.3", ops=1, used=(2, 9), need=7)
    for bad in ({"ops": 0}, {"live": 0}, {"grace": 0}, {"need": 0}, {"ops": 2.5},
                {"grace": True}):
        with pytest.raises(numslab.InvalidArgumentError, match=next(iter(bad))):
            maple_churn("7.3", **{"ops": 1, **bad})
    with pytest.raises(numslab.SlabError, match="kernel"):
        maple_churn("7.9", ops=1)
    with pytest.raises(numslab.InvalidArgumentError, match="need 2000000"):
        maple_churn("7.3", ops=1, need=2_000_000)
    with pytest.raises(numslab.InvalidArgumentError, match="need 524285"):
        maple_churn("7.3", ops=1, need=524_285)     # (the sheaf past KMALLOC_MAX_SIZE)


def test_the_largest_need_runs_on_the_default_memory():
    """``need`` up to 2**20 was taken, but a prefilled sheaf of more than 524,284 objects is
    a kmalloc past 4 MiB (NULL), and the default memory counted the trees only: ``numslab
    maple --need 300000`` failed at its first write, "64M ran out (give more memory)",
    which the command has no option for."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # (no rounding of the memory either)
        for need in (300_000, MAX_NEED):
            r = maple_churn("next", ops=2, cpus=1, live=16, need=need, used=(1, 1))
            assert r["live"] == 16


def test_many_cpus_run_on_the_default_memory():
    """The default memory counted the trees and a write's sheaf, not what each CPU keeps (its
    sheaves and a slab): ``numslab maple --cpus 2048`` (the option takes up to 4096) failed at
    write 1,247, "64M ran out (give more memory)", which the command has no option for."""
    r = maple_churn("7.0", ops=2000, cpus=2048)
    assert r["live"] == 4096 and r["objects"] >= 4096
    with pytest.raises(numslab.InvalidArgumentError, match="cpus '4'"):
        maple_churn("7.0", ops=1, cpus="4")


def test_a_machine_too_small_for_the_trees_or_the_writes_is_refused():
    """With a fixed 64 MiB machine, more nodes than fit made the trees hold NULLs and then
    failed on "0x0 is not a prefilled sheaf"; the default memory now grows with ``live``."""
    with pytest.raises(numslab.InvalidSizeError, match="do not fit"):
        maple_churn("next", ops=1, live=20_000, memory="4M")
    with pytest.raises(numslab.InvalidSizeError, match="ran out at write"):
        maple_churn("next", ops=200, live=15_000, need=4096, used=(1, 1), memory="4M")
    r = maple_churn("next", ops=20, live=300_000, grace=4)
    assert r["live"] == 300_000 and r["objects"] >= 300_000


def test_the_command_prints_the_generations_side_by_side(capsys):
    assert cli.main(["maple", "--kernel", "7.3,next", "--ops", "200", "--live", "256"]) == 0
    out = capsys.readouterr().out
    head, *rows = out.splitlines()
    assert head.split() == ["7.3", "next", "change", "next"]
    assert [r.split()[0] for r in rows[:len(COUNTERS)]] == list(COUNTERS)
    assert cli.main(["maple", "--kernel", "next", "--ops", "50", "--live", "64",
                     "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["kernel"] == "next" and set(run["counters"]) == set(COUNTERS)
    with pytest.raises(SystemExit):
        cli.main(["maple", "--kernel", "7.9"])
    for bad in (["--ops", "0"], ["--cpus", "4097"]):
        with pytest.raises(SystemExit):
            cli.main(["maple", *bad])


def test_more_nodes_than_a_machine_can_map_are_a_usage_error(capsys):
    """``numslab maple --live 999999999999`` said the allocator's "memory '732422100M' x 1
    node(s): cannot reserve ..." (no option of that name), status 1; now it names --live's
    nodes, status 2; a memory given (the function's ``memory``) is still the allocator's
    error."""
    assert cli.main(["maple", "--live", str(10 ** 15), "--ops", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("numslab maple: error: maple_churn: live 1,000,000,000,000,000 "
                          "nodes on 4 CPUs need ") and "more than can be reserved here (" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(numslab.InvalidSizeError, match="cannot reserve"):
        maple_churn("next", ops=1, live=10 ** 15, memory="100000T")
