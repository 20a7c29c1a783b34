"""What the replay measures over time and which caches it keeps apart: the utilisation
averaged over trace time against a naive reading of the timestamps, the snapshot's cache
aliases (one kernel cache, one set of slabs), and a remedy's work at its own interval."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab.errors import SlabError
from numslab.lab.config import Config, parse_config

from lab_oracle import DATA, SNAPSHOTS, TRACES, live_at, text

KERNELS = ("7.0", "6.18")


def _line(ev: str, ptr: int, secs: float, cpu: int = 0, **f: object) -> str:
    fields = " ".join(f"{k}={v}" for k, v in f.items())
    return (f"  t-1 [{cpu:03d}] ..... {secs:.6f}: {ev}: call_site=x+0x1/0x2 "
            f"ptr={ptr:016x} {fields}\n")


def _alloc(name: str, ptr: int, secs: float) -> str:
    return _line("kmem_cache_alloc", ptr, secs, name=name, bytes_req=256, bytes_alloc=256,
                 gfp_flags="GFP_KERNEL", node=-1)


def _naive_time_mean(trace_text: str, lines: list[int], util: list[float]) -> float:
    """The utilisation weighted by the seconds between sample points, read by str.split."""
    stamp = {}
    first = None
    for k, ln in enumerate(trace_text.split("\n"), 1):
        toks = ln.split()
        t = next((float(x[:-1]) for x in toks if x[-1:] == ":" and x[:1].isdigit()), None)
        if t is not None:
            stamp[k] = t
            first = t if first is None else first
    prev, num, den = first, 0.0, 0.0
    for ln, u in zip(lines, util):
        t = max(prev, stamp[ln])
        num += u * (t - prev)
        den += t - prev
        prev = t
    return num / den


def test_the_time_mean_weights_each_sample_by_the_seconds_it_stands_for(kernel):
    # 200 single objects of a 256-byte cache over 100 s (each freed before the next: one
    # object in one slab, low utilisation), then 2,000 objects kept in 0.2 s (full slabs)
    out, t = [], 0.0
    for i in range(200):
        out.append(_alloc("obj", 0x1000 + i, t))
        out.append(_line("kmem_cache_free", 0x1000 + i, t + 0.1, name="obj"))
        t += 0.5
    for i in range(2000):
        t += 0.0001
        out.append(_alloc("obj", 0x100000 + i, t))
    trace = "".join(out)
    r = numslab.replay(trace.encode(), kernel=kernel, cpus=1, samples=100)
    s = r.series
    ef = s.total_live_bytes * 100.0 / np.maximum(s.total_slab_bytes, 1)
    want = _naive_time_mean(trace, s.line.tolist(), ef.tolist())
    got = r.totals["time_mean_efficiency"]
    assert got == pytest.approx(want, rel=1e-12)
    assert r.totals["mean_efficiency"] == pytest.approx(float(ef.mean()), rel=1e-12)
    # the slow, sparse first part is most of the time and a third of the events
    assert got < r.totals["mean_efficiency"] - 20
    assert s.dt.sum() == pytest.approx(t, rel=1e-9)
    assert r.to_json()["totals"]["time_mean_efficiency"] == got


def test_the_time_mean_of_a_real_trace_against_the_naive_reading():
    name = "net"
    r = numslab.replay(DATA / TRACES[name], kernel="7.0", snapshot=DATA / SNAPSHOTS[name])
    s = r.series
    ef = s.total_live_bytes * 100.0 / np.maximum(s.total_slab_bytes, 1)
    want = _naive_time_mean(text(name), s.line.tolist(), ef.tolist())
    assert r.totals["time_mean_efficiency"] == pytest.approx(want, rel=1e-9)
    assert np.all(s.dt >= 0)


def test_a_trace_with_no_time_span_averages_over_the_samples():
    trace = "".join(_alloc("obj", 0x1000 + i, 5.0) for i in range(300))
    r = numslab.replay(trace.encode(), kernel="7.0", cpus=1, samples=50)
    assert r.series.dt.sum() == 0
    assert r.totals["time_mean_efficiency"] == r.totals["mean_efficiency"]


def _snapshot(*groups: tuple[str, list[str]]) -> dict:
    caches = []
    for root, names in groups:
        caches.append({"name": root, "object_size": "256", "slab_size": "256", "align": "8",
                       "order": "0", "objs_per_slab": "16", "hwcache_align": "0",
                       "reclaim_account": "0", "destroy_by_rcu": "0", "ctor": ""})
        caches += [{"name": nm, "alias_of": root} for nm in names]
    return {"kernel": "6.18", "nr_cpus": 1, "caches": caches}


def test_aliases_of_one_kernel_cache_share_its_slabs(kernel):
    # "udp" and "ping" are one kernel cache in the snapshot: one row, one set of slabs,
    # exactly as if the trace had named that cache alone
    lines = [_alloc("udp" if i % 3 else "ping", 0x1000 + i, 1.0 + i * 1e-4) for i in range(90)]
    trace = "".join(lines)
    merged = _snapshot((":0000256", ["udp", "ping"]))
    r = numslab.replay(trace.encode(), kernel=kernel, cpus=1, snapshot=merged, samples=30)
    one = numslab.replay(trace.replace("name=ping", "name=udp").encode(), kernel=kernel,
                         cpus=1, snapshot=merged, samples=30)
    assert r.names == ["ping"] and one.names == ["udp"]        # the first name the trace gives
    assert r.series.live_objects[-1, 0] == 90
    assert np.array_equal(r.series.slabs, one.series.slabs)
    assert np.array_equal(r.series.live_objects, one.series.live_objects)
    assert len([c for c in r.allocator.caches if c.name in ("udp", "ping")]) == 1
    # the same names as two kernel caches keep two rows with their own slabs
    apart = numslab.replay(trace.encode(), kernel=kernel, cpus=1, samples=30,
                           snapshot=_snapshot((":0000256", ["udp"]), (":A-0000256", ["ping"])))
    assert sorted(apart.names) == ["ping", "udp"]
    assert (apart.series.slabs[-1] > 0).all()
    assert len({apart.allocator.find_cache(nm).id for nm in ("udp", "ping")}) == 2


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_the_recorded_traces_name_each_merged_kernel_cache_once(name):
    # the kmem events print the merged cache's own name: a trace and its snapshot never
    # name two aliases of one cache, so no row is merged
    from numslab.lab.replay import load_snapshot, merge_aliases
    from numslab.lab.trace import read_trace
    tr = read_trace(DATA / TRACES[name])
    snap = load_snapshot(DATA / SNAPSHOTS[name])
    assert merge_aliases(tr, snap) is tr
    assert sum(nm in snap and snap[nm]["name"] != nm for nm in tr.names) >= 3   # aliases


def test_every_parses_and_refuses():
    base = Config("7.0", 2, 1, "default")
    c = parse_config("7.0:mobility=100:every=500", base)
    assert (c.policy, c.every, c.name) == ("mobility=100", 500, "7.0:cpus=2:mobility=100:every=500")
    for bad in ("7.0:every=x", "every=-3"):
        with pytest.raises(SlabError, match=r"every=N needs a whole N >= 0, or every=free"):
            parse_config(bad, base)
    # a word of a known kind out of its range says the range (it said "is not a kernel ...
    # or a policy")
    for bad, why in (("7.0:cpus=0", "cpus=N needs a whole N >= 1"),
                     ("7.0:nodes=0", "nodes=N needs a whole N >= 1"),
                     ("7.0:mobility=101", "mobility=R needs R in 0..100"),
                     ("7.0:drain=500", "drain=R needs R in 0..100")):
        with pytest.raises(SlabError, match=f"^configuration '{bad}': .*{why}$"):
            parse_config(bad, base)
    # every=0 is the sample points, as --every 0: a configuration sets it over the base's
    assert parse_config("7.0:every=0", parse_config("7.0:shrink:every=500", base)).every == 0


def test_a_remedy_every_n_events_keeps_the_replay_exact_and_runs_there(kernel):
    name = "net"
    r = numslab.replay(DATA / TRACES[name], kernel=kernel, snapshot=DATA / SNAPSHOTS[name],
                       compare=["mobility=100", "mobility=100:every=300", "shrink:every=10000000"])
    at_points, fine, never = r.configs.values()
    want = live_at(text(name), fine.series.line.tolist())
    for k, counts in enumerate(want):
        got = {nm: int(v) for nm, v in zip(fine.names, fine.series.live_objects[k]) if v}
        assert got == {nm: v for nm, v in counts.items() if v}, f"sample {k}"
    fine.allocator.validate()
    assert np.array_equal(fine.series.event, at_points.series.event)     # the same samples
    moved = [sum(c.objects_moved for c in x.allocator.caches) for x in (at_points, fine)]
    assert moved[1] != moved[0] and min(moved) > 0
    # a shrink interval longer than the trace never runs: the kernel policy's figures
    base = numslab.replay(DATA / TRACES[name], kernel=kernel, snapshot=DATA / SNAPSHOTS[name])
    assert np.array_equal(never.series.slabs, base.series.slabs)
    assert fine.series.slabs[-1].sum() <= base.series.slabs[-1].sum()


def test_the_packed_bound_against_a_naive_count_of_the_fewest_slabs():
    name = "net"
    r = numslab.replay(DATA / TRACES[name], kernel="7.0", snapshot=DATA / SNAPSHOTS[name],
                       compare=["7.0", "7.0:mobility=100"])
    base, moved = r.configs.values()
    s = base.series
    per_sample = []
    for k in range(len(s.t)):
        live = slab = 0
        for j in range(len(base.names)):
            n = int(s.live_objects[k, j])
            live += n * int(base.object_size[j])
            per = int(base.objs_per_slab[j])
            slab += (n + per - 1) // per * (4096 << int(base.order[j]))
        per_sample.append(live * 100.0 / max(slab, 1))
    t = base.totals
    assert t["packed_mean_efficiency"] == pytest.approx(sum(per_sample) / len(per_sample))
    assert t["packed_time_mean_efficiency"] == pytest.approx(
        _naive_time_mean(text(name), s.line.tolist(), per_sample), rel=1e-9)
    # the same live objects whatever the policy: the same bound, above what each achieves
    assert moved.totals["packed_mean_efficiency"] == t["packed_mean_efficiency"]
    for x in (base, moved):
        assert x.totals["mean_efficiency"] <= x.totals["packed_mean_efficiency"]


def test_every_from_the_function_and_the_command(capsys):
    name = "net"
    r = numslab.replay(DATA / TRACES[name], kernel="7.0", policy="mobility=100", every=700)
    assert r.config.every == 700 and r.config.name.endswith(":mobility=100:every=700")
    for bad in (-1, 1.5, "10", True):
        with pytest.raises(SlabError):
            numslab.replay(DATA / TRACES[name], kernel="7.0", every=bad)
    import json

    from numslab.tools import cli
    assert cli.main(["replay", str(DATA / TRACES[name]), "--policy", "shrink", "--every",
                     "5000", "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["config"].endswith(":shrink:every=5000")
    assert j["totals"]["time_mean_efficiency"] <= j["totals"]["packed_time_mean_efficiency"]


def test_the_plot_legend_hides_no_curve_and_no_bar(tmp_path):
    """One legend, a colour per configuration, below both axes: it covers neither the
    curves nor the bars, and the axes keep their height (9 configurations: 3 rows)."""
    from numslab.lab.result import plot_results
    configs = ["6.18", "7.0", "7.0:sorted", "7.0:shrink", "7.0:mobility", "7.0:mobility=100",
               "6.18:shrink", "6.18:mobility", "7.0:leansheaves"]
    r = numslab.replay(DATA / TRACES["git_tar"], compare=configs)
    png = tmp_path / "p.png"
    fig = plot_results(list(r.configs.values()), str(png))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()
    assert [ax.get_legend() for ax in fig.axes] == [None, None]
    (legend,) = fig.legends
    names = [c.config.name for c in r.configs.values()]
    assert [t.get_text() for t in legend.get_texts()] == names
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        inside = ax.get_window_extent(renderer)
        assert not box.overlaps(inside)      # below the axes: nothing drawn under it
        assert inside.height > 100           # and the axes were not squeezed away


def test_a_sample_with_no_slab_memory_counts_as_the_end_figure_does():
    # the means counted a sample with no slab bytes as 0% (%Ef mean 0.0 beside %Ef at the
    # end 100.0): frees of pointers the trace never allocated leave every sample empty, then
    # one cache's objects fill the last samples
    text = "".join(_line("kfree", 0x1000 + 64 * i, i * 0.001) for i in range(60))
    empty = numslab.replay(text.encode(), kernel="7.0", cpus=1, samples=8)
    assert not empty.series.total_slab_bytes.any()
    effs = {k: v for k, v in empty.totals.items() if "efficiency" in k}
    assert len(effs) == 7 and effs == pytest.approx({k: 100.0 for k in effs}, rel=1e-12)
    text += "".join(_alloc("obj", 0x100000 + i, 1 + i * 0.001) for i in range(60))
    r = numslab.replay(text.encode(), kernel="7.0", cpus=1, samples=8)
    lb, sb = r.series.total_live_bytes, r.series.total_slab_bytes
    assert (sb == 0).any() and (sb > 0).any()
    want = [100.0 if s == 0 else 100.0 * b / s for b, s in zip(lb.tolist(), sb.tolist())]
    assert r.totals["mean_efficiency"] == pytest.approx(sum(want) / len(want), rel=1e-12)


def test_the_plot_gives_each_of_more_than_ten_configurations_its_own_colour(tmp_path):
    """The colours came from ``tab10`` by ``i % 10``: the 11th and 12th configurations of a
    comparison of remedies (``--compare`` of 12 on a recorded trace) were drawn in the 1st's
    and 2nd's colours, so neither the legend nor the curves told them apart."""
    from matplotlib.colors import to_hex

    from numslab.lab.result import plot_results
    text = "".join(_alloc("obj", 0x100000 + 64 * i, 1 + i * 0.001) for i in range(100))
    configs = [f"7.0:cpus={n}" for n in range(1, 13)]
    r = numslab.replay(text.encode(), compare=configs, samples=8)
    fig = plot_results(list(r.configs.values()), str(tmp_path / "p.png"))
    lines, bars = fig.axes[0].get_lines(), fig.axes[1].containers
    assert len(lines) == 24 and len(bars) == 12
    curve = [to_hex(ln.get_color()) for ln in lines[::2]]          # (slab, live) per config
    assert curve == [to_hex(ln.get_color()) for ln in lines[1::2]]
    assert len(set(curve)) == 12
    assert [to_hex(b.patches[0].get_facecolor()) for b in bars] == curve


def test_the_plot_counts_its_seconds_from_the_trace_s_first_event(tmp_path):
    """The x axis, "seconds into the trace", started at the first sample (0 there), one
    sample's seconds after the trace's first event: every point sat ``dt[0]`` too early
    (23 ms of a 2.2 s recording at 256 samples; half the trace at 2). A point now sits at
    its timestamp less the first event's, the sum of the ``dt`` up to it."""
    from numslab.lab.result import plot_results
    text = "".join(_alloc("obj", 0x100000 + 64 * i, 1 + i * 0.01) for i in range(100))
    r = numslab.replay(text.encode(), kernel="7.0", samples=2)
    s = r.series
    assert s.dt[0] > 0.4
    fig = plot_results([r], str(tmp_path / "p.png"))
    x = fig.axes[0].get_lines()[0].get_xdata()
    assert np.allclose(x, np.cumsum(s.dt)) and np.allclose(x, s.t - 1.0)
