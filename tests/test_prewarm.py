"""The second process that compiles engine units on an empty cache (``tools/prewarm.py``)."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from numslab.engine import native
from numslab.tools import prewarm

ROOT = Path(__file__).resolve().parents[1]

#: Runs the main job (its default traffic) and prints the units it called first, in order.
_ORDER = """
import runpy, sys
from numslab.engine import native
order = []
compile = native.Unit.compile
def first(self):
    if self._ctypes is None:
        order.append(".".join(self.name.rsplit(".", 2)[-2:]))
    return compile(self)
native.Unit.compile = first
sys.argv = ["packet_pipeline", "--quiet"]
try:
    runpy.run_path(sys.argv_path, run_name="__main__")
except SystemExit:
    pass
print("ORDER", *order)
""".replace("sys.argv_path", repr(str(ROOT / "examples" / "packet_pipeline.py")))


def _env(cache: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = str(cache)
    return env


def test_every_listed_unit_is_one_of_the_engines():
    units = prewarm.units_by_name()
    for listed in (prewarm.MAIN_JOB_UNITS, prewarm.REPLAY_UNITS):
        assert set(listed) <= set(units)
        assert len(set(listed)) == len(listed)
    assert all(isinstance(u, native.Unit) for u in units.values())


def test_the_list_is_the_main_jobs_units_in_the_order_it_calls_them():
    """A run of the main job (its default mode and generation) calls these units first, in
    this order: the child compiles the last-needed first, so a stale list slows the first
    run (the parent compiles what the child has not reached)."""
    p = subprocess.run([sys.executable, "-c", _ORDER], capture_output=True, text=True,
                       env=_env(), timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    order = next(ln for ln in p.stdout.splitlines() if ln.startswith("ORDER")).split()[1:]
    assert tuple(order) == prewarm.MAIN_JOB_UNITS


#: Runs ``numslab replay`` on the repository's git/tar excerpt and prints the units it called
#: first, in order.
_REPLAY_ORDER = _ORDER.split("sys.argv =")[0] + """
from numslab.tools.cli import main
main(["replay", {trace!r}, "--snapshot", {snap!r}, "--no-progress"])
print("ORDER", *order)
""".format(trace=str(ROOT / "tests" / "data" / "kmem_git_tar.txt.xz"),
           snap=str(ROOT / "tests" / "data" / "kmem_snapshot_git_tar.json.xz"))


def test_the_replay_list_is_the_replays_units_in_the_order_it_calls_them():
    p = subprocess.run([sys.executable, "-W", "ignore", "-c", _REPLAY_ORDER],
                       capture_output=True, text=True, env=_env(), timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    order = next(ln for ln in p.stdout.splitlines() if ln.startswith("ORDER")).split()[1:]
    assert tuple(order) == prewarm.REPLAY_UNITS


def test_the_child_compiles_into_the_cache_and_pending_sees_it(tmp_path):
    names = ["stats.partial_counts", "stats.live_objects"]
    check = ("from numslab.tools import prewarm; "
             f"print(prewarm.pending({names!r}))")
    before = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            env=_env(tmp_path), timeout=300)
    assert before.stdout.strip() == repr(names)          # an empty cache: both to compile
    child = subprocess.Popen([sys.executable, "-m", "numslab.tools.prewarm", names[1]],
                             stdin=subprocess.PIPE, env=_env(tmp_path))
    assert child.wait(timeout=600) == 0                   # stdin open: it compiles, then ends
    child.stdin.close()
    after = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                           env=_env(tmp_path), timeout=300)
    assert after.stdout.strip() == repr(names[:1])
    assert any(tmp_path.rglob("stats.live_objects-*.nbi"))


def test_a_closed_stdin_stops_the_child_before_its_next_unit(tmp_path):
    child = subprocess.Popen([sys.executable, "-m", "numslab.tools.prewarm",
                              *prewarm.MAIN_JOB_UNITS], stdin=subprocess.PIPE,
                             env=_env(tmp_path))
    t0 = time.monotonic()
    child.stdin.close()                                  # the parent is done
    assert child.wait(timeout=120) == 0
    assert time.monotonic() - t0 < 60                    # thirty units take minutes
    assert not any(tmp_path.rglob("*.nbi"))              # (closed before the first)


def test_start_makes_no_child_where_it_cannot_help(monkeypatch):
    monkeypatch.setattr(prewarm, "pending", lambda names: list(names))
    monkeypatch.setenv("NUMSLAB_PREWARM", "1")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})   # taskset -c 0
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert prewarm.start(prewarm.MAIN_JOB_UNITS) is None             # one CPU to run on
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(prewarm, "pending", lambda names: list(names)[:1])
    assert prewarm.start(prewarm.MAIN_JOB_UNITS) is None             # one unit to compile
    monkeypatch.setattr(prewarm, "pending", lambda names: [])
    with prewarm.prewarm(prewarm.MAIN_JOB_UNITS) as child:           # all cached
        assert child is None
    monkeypatch.setattr(prewarm, "pending", lambda names: list(names))
    monkeypatch.setenv("NUMSLAB_PREWARM", "0")
    assert prewarm.start(prewarm.MAIN_JOB_UNITS) is None             # turned off


def test_start_makes_a_child_that_the_context_stops(monkeypatch, tmp_path):
    """On an empty cache the command's child starts, compiles from the end of the list, and
    ends once the command is done (between two units: the test above)."""
    monkeypatch.setenv("NUMSLAB_PREWARM", "1")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(prewarm, "pending", lambda names: list(names))
    with prewarm.prewarm(["stats.live_objects", "stats.partial_counts"]) as child:
        assert child is not None and child.poll() is None
        deadline = time.monotonic() + 300
        while not any(tmp_path.rglob("stats.partial_counts-*.nbi")):     # the last first
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.1)
    assert child.wait(timeout=300) == 0


def test_a_child_still_running_when_the_command_ends_is_dropped_without_a_warning(
        monkeypatch, tmp_path):
    """The command does not wait for the child; dropping its ``Popen`` while the child runs
    printed "subprocess N is still running" (a ResourceWarning) wherever warnings show."""
    monkeypatch.setenv("NUMSLAB_PREWARM", "1")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(prewarm, "pending", lambda names: list(names))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with prewarm.prewarm(prewarm.MAIN_JOB_UNITS) as child:
            assert child is not None
            pid = child.pid
        assert child.poll() is None                 # (still importing numslab)
        del child
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    deadline = time.monotonic() + 120
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)                             # reaped: no zombie left either
    assert not Path(f"/proc/{pid}").exists()


def test_pending_leaves_out_unknown_names_and_units_compiled_here():
    u = prewarm.units_by_name()["stats.live_objects"]
    u.compile()
    assert prewarm.pending(["no.such_unit", "stats.live_objects"]) == []


def test_the_context_manager_closes_the_childs_stdin(monkeypatch):
    started = []

    class Child:
        poll = staticmethod(lambda: 0)               # (ended)

        class stdin:
            closed = False

            @classmethod
            def close(cls):
                cls.closed = True

    monkeypatch.setattr(prewarm, "start", lambda names: started.append(names) or Child)
    with pytest.raises(RuntimeError):
        with prewarm.prewarm(("a.b",)) as child:
            assert child is Child
            raise RuntimeError("the command failed")
    assert started == [("a.b",)] and Child.stdin.closed
