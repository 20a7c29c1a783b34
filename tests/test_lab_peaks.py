"""The replay's peaks are exact: taken at every event, not at the sample points.

Checked against two oracles: a plain-Python walk of the trace's lines (``lab_oracle``: the
live objects per cache after every line) and the replay itself sampled after every event
(the slabs per cache, as ``kernels.sample`` counts them)."""
from __future__ import annotations

import functools
import lzma
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import numslab
from numslab.engine.layout import N_NR_SLABS
from lab_oracle import Oracle

KERNELS = ("7.0", "6.18", "next")
SHARED = Path("/work/shared/data/kmem_trace_git_tar.txt.xz")


def _line(ev: str, ptr: int, t: int, **f: object) -> str:
    fields = " ".join(f"{k}={v}" for k, v in f.items())
    return (f"  t-1 [{t % 2:03d}] ..... 1.{t:06d}: {ev}: call_site=x+0x1/0x2 "
            f"ptr={ptr:016x} {fields}\n")


def _burst_trace() -> str:
    """500 objects of ``burst`` allocated and freed in the first half of the events, then
    500 allocation and free pairs of one ``calm`` object: the 2 sample points (the half and
    the end) both see no ``burst`` object live."""
    lines, t = [], 0
    for i in range(500):
        lines.append(_line("kmem_cache_alloc", 0x10000 + 0x100 * i, t, name="burst",
                           bytes_req=256, bytes_alloc=256, gfp_flags="GFP_KERNEL", node=-1))
        t += 1
    for i in range(500):
        lines.append(_line("kmem_cache_free", 0x10000 + 0x100 * i, t, name="burst"))
        t += 1
    for i in range(500):
        lines.append(_line("kmem_cache_alloc", 0x900000, t, name="calm", bytes_req=64,
                           bytes_alloc=64, gfp_flags="GFP_KERNEL", node=-1))
        lines.append(_line("kmem_cache_free", 0x900000, t + 1, name="calm"))
        t += 2
    return "".join(lines)


class _Counted(Counter):
    """The oracle's live counts, each change also added to a running byte total and a peak.

    (Summing every cache after every line, the oracle's peaks were most of this file's time.)"""

    def __init__(self, size: dict[str, int]) -> None:
        super().__init__()
        self.size, self.bytes, self.top, self.peak = size, 0, 0, Counter()

    def __setitem__(self, cache: str, v: int) -> None:
        self.bytes += (v - self.get(cache, 0)) * self.size.get(cache, 0)
        super().__setitem__(cache, v)
        self.top = max(self.top, self.bytes)
        if v > self.peak[cache]:
            self.peak[cache] = v


def _oracle_peaks(text: str, size: dict[str, int]) -> tuple[Counter, int]:
    """Per cache the most live objects after any line, and the most live bytes of the slab
    caches (objects times ``size``) after any line, by the plain-Python oracle."""
    o = Oracle()
    o.live = live = _Counted(size)
    for ln in text.split("\n"):
        o.line(ln)
    return live.peak, live.top


@functools.lru_cache(maxsize=4)
def _oracle_peaks_of(path: Path, size: tuple[tuple[str, int], ...]) -> tuple[Counter, int]:
    """:func:`_oracle_peaks` of the xz trace at ``path``, walked once for every generation's
    test (the walk is the generation's oracle alike: 2 s of each shared-trace test)."""
    return _oracle_peaks(lzma.decompress(path.read_bytes()).decode(), dict(size))


def _every_event(r: numslab.ReplayResult, trace, **kw) -> numslab.ReplayResult:
    """The same replay sampled after every event."""
    return numslab.replay(trace, kernel=r.kernel, cpus=r.config.cpus,
                          samples=max(int(r.series.event[-1]), 1), **kw)


def test_a_burst_between_two_samples_is_the_peak(kernel):
    text = _burst_trace()
    r = numslab.replay(text.encode(), kernel=kernel, cpus=2, samples=2)
    assert r.series.event.tolist() == [1000, 2000]
    k = r.names.index("burst")
    assert r.series.live_objects[:, k].tolist() == [0, 0]       # the samples miss it
    size = dict(zip(r.names, r.object_size.tolist()))
    peak, top = _oracle_peaks(text, size)
    c = r.caches
    assert int(c["peak_live_objects"][k]) == peak["burst"] == 500
    assert int(c["peak_live_bytes"][k]) == 500 * 256
    assert r.totals["peak_live_bytes"] == top == 500 * 256
    full = _every_event(r, text.encode())
    assert len(full.series.event) == 2000
    assert c["peak_slabs"].tolist() == full.series.slabs.max(axis=0).tolist()
    assert int(c["peak_slabs"][k]) > int(r.series.slabs[:, k].max())
    assert c["peak_slab_bytes"].tolist() == full.series.slab_bytes.max(axis=0).tolist()
    assert r.totals["peak_slab_bytes"] == int(full.series.total_slab_bytes.max())
    assert r.to_json()["caches"]["burst"]["peak_live_objects"] == 500
    # the sampled series are as they were
    assert r.series.slabs.tolist() == full.series.slabs[[999, 1999]].tolist()


def test_slabs_a_free_discards_are_not_counted_in_a_later_peak(kernel):
    """600 objects of ``first`` allocated and freed (its slabs discarded past min_partial),
    then 600 of ``second``: the machine's peak of slab bytes is the most held at any one
    event, as a replay sampled at every event sees it, not the two bursts' slabs summed."""
    lines, t = [], 0
    for name, base in (("first", 0x10000), ("second", 0x800000)):
        for op in ("kmem_cache_alloc", "kmem_cache_free"):
            for i in range(600):
                f = dict(name=name)
                if op == "kmem_cache_alloc":
                    f.update(bytes_req=256, bytes_alloc=256, gfp_flags="GFP_KERNEL", node=-1)
                lines.append(_line(op, base + 0x100 * i, t, **f))
                t += 1
    text = "".join(lines).encode()
    r = numslab.replay(text, kernel=kernel, cpus=2, samples=2)
    full = _every_event(r, text)
    k = r.names.index("first")
    held = full.series.slabs[:, k]
    assert held[1199] < held[599]                       # first's frees discarded slabs
    assert r.caches["peak_slabs"].tolist() == full.series.slabs.max(axis=0).tolist()
    assert r.totals["peak_slab_bytes"] == int(full.series.total_slab_bytes.max())
    assert r.totals["peak_slab_bytes"] < int(full.series.slab_bytes.max(axis=0).sum())


def test_slabs_moved_between_two_chunks_are_counted_by_the_next(kernel):
    """A shrink between two chunks of the replay's loop (no event of the shrunk cache in the
    second) discards slabs: the second chunk counts every cache again first, so its table
    holds the slabs as the nodes count them, and the machine's slab bytes their sum."""
    from numslab.lab import kernels as K
    from numslab.lab import replay as R
    from numslab.lab.trace import read_trace
    text = _burst_trace().encode()
    p = R.prepare(read_trace(text))
    sa, cids, osize, _ = R._build(p, R.Config(kernel, 2, 1, "default", 0), None, 64 << 20)
    node = sa.state.node
    slab_bytes = 4096 << np.array([sa.find_cache(n).order for n in p.names], np.int64)
    npid = max(p.npid, 1)
    ptrs = (np.zeros(npid, np.int64), np.zeros(npid, np.int32), np.zeros(npid, np.int64))
    counts = np.zeros(K.K_NCOUNTS, np.int64)
    ev = tuple(K.Events.of(p.trace))
    pk = K.new_peaks(sa, cids, osize, slab_bytes, np.zeros(len(cids), np.int64))
    k = p.names.index("burst")
    assert K.replay_chunk(sa.handle, 0, 1000, ev, 2, 1, cids, ptrs, counts, None, None,
                          pk) == 0
    held = int(node[cids[k], :, N_NR_SLABS].sum())
    most = pk[cids, K.PK_PEAK_SLABS].copy()
    sa.kmem_cache_shrink(sa.find_cache("burst"))
    assert int(node[cids[k], :, N_NR_SLABS].sum()) < held
    assert K.replay_chunk(sa.handle, 1000, 2000, ev, 2, 1, cids, ptrs, counts, None, None,
                          pk) == 0
    now = node[cids, :, N_NR_SLABS].sum(axis=1)
    assert pk[cids, K.PK_SLABS].tolist() == now.tolist()
    assert pk[-1, 2] == int((now * slab_bytes).sum())
    assert pk[cids[k], K.PK_PEAK_SLABS] == most[k]      # (the shrink raised no peak)


@pytest.mark.parametrize("policy, warm", [("default", False), ("mobility=100", False),
                                          ("default", True)])
def test_peaks_on_the_committed_trace_match_a_replay_sampled_at_every_event(kernel, policy,
                                                                            warm):
    from lab_oracle import DATA, SNAPSHOTS, TRACES
    trace, snap = DATA / TRACES["git_tar"], DATA / SNAPSHOTS["git_tar"]
    kw = dict(kernel=kernel, cpus=2, snapshot=snap, policy=policy, warm=warm,
              every="free" if policy != "default" else 0)     # (work after frees, not at
    r = numslab.replay(trace, **kw)                             # the sample points)
    full = numslab.replay(trace, samples=int(r.series.event[-1]), **kw)
    c = r.caches
    for key, s in (("peak_live_objects", full.series.live_objects),
                   ("peak_slabs", full.series.slabs)):
        assert c[key].tolist() == s.max(axis=0).tolist(), key
    assert r.totals["peak_live_bytes"] == int(full.series.total_live_bytes.max())
    assert r.totals["peak_slab_bytes"] == int(full.series.total_slab_bytes.max())
    if warm:                    # (the oracle knows no objects from before the trace)
        return
    size = dict(zip(r.names, r.object_size.tolist()))
    peak, top = _oracle_peaks_of(trace, tuple(sorted(size.items())))
    assert {n: int(v) for n, v in zip(r.names, c["peak_live_objects"]) if v} == \
        {n: v for n, v in peak.items() if v}
    assert r.totals["peak_live_bytes"] == top


@pytest.mark.skipif(not SHARED.exists(), reason="the shared trace is not on this machine")
def test_peaks_on_the_shared_trace_match_an_oracle_walking_every_event(kernel):
    from numslab.lab import kernels as K
    from numslab.lab import replay as R
    from numslab.lab.trace import read_trace
    from numslab.engine.layout import N_NR_SLABS
    r = numslab.replay(SHARED, kernel=kernel, cpus=2)
    # the slabs: the replay's own loop driven one event at a time, every cache counted after
    # each event
    p = R.prepare(read_trace(SHARED))
    cfg = R.Config(kernel, 2, 1, "default", 0)
    sa, cids, osize, _ = R._build(p, cfg, None, R._memory(p, cfg))
    tr = p.trace
    npid = max(p.npid, 1)
    ptrs = (np.zeros(npid, np.int64), np.zeros(npid, np.int32), np.zeros(npid, np.int64))
    counts = np.zeros(K.K_NCOUNTS, np.int64)
    ev = tuple(K.Events.of(tr))
    node = sa.state.node
    slab_bytes = 4096 << np.array([sa.find_cache(n).order for n in p.names], np.int64)
    most = node[cids, :, N_NR_SLABS].sum(axis=1)
    top = int((most * slab_bytes).sum())
    for i in range(len(tr)):
        assert K.replay_chunk(sa.handle, i, i + 1, ev, 2, 1, cids, ptrs, counts, None) == 0
        now = node[cids, :, N_NR_SLABS].sum(axis=1)
        np.maximum(most, now, out=most)
        top = max(top, int((now * slab_bytes).sum()))
    assert r.caches["peak_slabs"].tolist() == most.tolist()
    assert r.totals["peak_slab_bytes"] == top
    size = dict(zip(r.names, r.object_size.tolist()))
    peak, top = _oracle_peaks_of(SHARED, tuple(sorted(size.items())))
    assert {n: int(v) for n, v in zip(r.names, r.caches["peak_live_objects"]) if v} == \
        {n: v for n, v in peak.items() if v}
    assert r.totals["peak_live_bytes"] == top
