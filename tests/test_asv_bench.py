"""The asv suite's benchmark classes (``asv_bench/benchmarks``), called directly as asv calls
them: each timed call does the work its docstring names, and the peers are written as a
competent user writes them (never for speed: no timing is asserted)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "asv_bench" / "benchmarks"))

import bench_bulk  # noqa: E402
import bench_kmalloc  # noqa: E402

KERNELS = ("7.0", "6.18")       #: the suite runs both generations


@pytest.mark.parametrize("slabs,mode", [(1, "partial"), (4, "partial"), (1, "local"),
                                        (4, "new"), (4, "bulk")])
def test_large_batches_round_allocates_the_batch_it_names(slabs, mode, kernel):
    # asv runs the set-up before each sample of ``number`` calls: with one call a sample,
    # every timed round meets the cache as described (under 7.0 a round's frees stay in the
    # sheaves, and a second PARTIAL round found 2 of the 15 objects of a partial slab)
    assert bench_bulk.LargeBatches.number == 1
    b = bench_bulk.LargeBatches()
    for _ in range(2):
        b.setup(slabs, mode, kernel)
        b.time_round(slabs, mode, kernel)
        assert b.got == b.n - (mode == "new")       # NEW: asked one more, takes slabs whole
        assert b.c.live_objects == len(b.keep)


class _NoFancyIndexing(np.ndarray):
    """A table that refuses ``table[idx]`` and ``table[idx] = r`` for an index array."""

    def __getitem__(self, key):
        if isinstance(key, np.ndarray):
            raise AssertionError("fancy indexing of a structured array")
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        if isinstance(key, np.ndarray):
            raise AssertionError("fancy indexing of a structured array")
        super().__setitem__(key, value)


def test_typed_records_numpy_peer_gathers_and_scatters_as_a_competent_user():
    # ``table[idx]`` on a structured array takes NumPy's generic path (12x slower than
    # np.take/np.put, which do the same work): the peer must not pay it
    b = bench_kmalloc.TypedRecords()
    b.setup("numpy-structured")
    rng = np.random.default_rng(3)
    table = np.zeros(len(b.table), b.DT)
    for name in b.DT.names:
        table[name] = rng.integers(0, 100, len(table))
    want = table.copy()
    b.table = table.view(_NoFancyIndexing)
    b.time_gather_scatter("numpy-structured")
    assert (np.asarray(b.table) == want).all()      # gathered and written back unchanged
    b2 = bench_kmalloc.TypedRecords()
    b2.setup("slab")
    r = b2.c.records(b2.addrs)
    b2.time_gather_scatter("slab")
    assert (b2.c.records(b2.addrs) == r).all()


def test_maple_churn_times_the_writes_alone(monkeypatch):
    # a ``time_churn`` that called ``maple_churn`` whole timed the allocator's creation and
    # the trees' allocations with the writes; the writes' own time is tracked from setup's run
    import bench_maple
    assert not [m for m in dir(bench_maple.MapleChurn) if m.startswith("time_")]
    monkeypatch.setattr(bench_maple, "OPS", 64)
    b = bench_maple.MapleChurn()
    b.setup("7.3")
    assert b.track_ns_per_write("7.3") == b.run["ns_per_op"] > 0
    assert bench_maple.MapleChurn.track_ns_per_write.unit == "ns"
    assert b.track_slabs("7.3") == b.run["slabs"] > 0
