"""The second process that compiles engine units on an empty cache (``drivers/prewarm.py``, and
the commands' lists in ``tools/prewarm.py``)."""
from __future__ import annotations

import fcntl
import gc
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import numslab
from numslab.drivers import prewarm as dprewarm
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


@pytest.fixture
def no_child(monkeypatch):
    """This process with no child and nothing asked for yet (both put back after the test)."""
    monkeypatch.setattr(dprewarm, "_child", None)
    monkeypatch.setattr(dprewarm, "_asked", set())


def test_every_listed_unit_is_one_of_the_engines():
    units = prewarm.units_by_name()
    for listed in (prewarm.MAIN_JOB_UNITS, prewarm.REPLAY_UNITS, *dprewarm.BOOT_UNITS.values(),
                   dprewarm.FIRST_CALLS, *dprewarm.FOLLOWERS.values(), tuple(dprewarm.FOLLOWERS)):
        assert set(listed) <= set(units)
        assert len(set(listed)) == len(listed)
    assert all(isinstance(u, native.Unit) for u in units.values())
    assert set(dprewarm.BOOT_UNITS) == set(numslab.KERNELS)


#: Boots an allocator of generation ``argv[1]`` and prints the units its boot and first kmalloc
#: and kfree called first, in order, then what it asked the child for (``request``, recorded: the
#: boot's list, then a first bulk allocation's followers, asked at its unit's first load).
_BOOT_ORDER = """
import sys
import numpy as np
from numslab.drivers import prewarm
from numslab.engine import native
order, asked = [], []
compile = native.Unit.compile
def first(self):
    if self._ctypes is None:
        order.append(prewarm.short_name(self))
    return compile(self)
native.Unit.compile = first
prewarm.request = lambda names: asked.append(list(names))
import numslab
sa = numslab.SlabAllocator(memory="16M", kernel=sys.argv[1])
sa.kfree(sa.kmalloc(64))
print("ORDER", *order)
c = sa.kmem_cache_create("c", 64)
out = np.zeros(8, np.int64)
sa.kmem_cache_free_bulk(c, sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, 8, out), out)
for a in asked:
    print("ASKED", *a)
"""


def test_the_boot_lists_are_each_generations_units_in_the_order_it_calls_them():
    """A fresh interpreter's allocator of each generation calls these units first, in this
    order (a stale list makes the child compile what the allocator needs last, or nothing it
    needs), and asks for them once, then for a first bulk allocation's free (the hooks in
    ``native``: a unit's first load, on a warm cache)."""
    procs = {k: subprocess.Popen([sys.executable, "-c", _BOOT_ORDER, k], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
             for k in sorted(dprewarm.BOOT_UNITS)}
    for kernel, p in procs.items():
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        lines = [ln.split() for ln in out.splitlines()]
        boot = dprewarm.BOOT_UNITS[kernel]
        assert tuple(next(ln for ln in lines if ln[0] == "ORDER")[1:]) == \
            (*boot, *dprewarm.FIRST_CALLS), kernel
        assert [ln[1:] for ln in lines if ln[0] == "ASKED"] == [
            [*reversed(boot), *reversed(dprewarm.FIRST_CALLS)],    # (from the end)
            [*dprewarm.FOLLOWERS["ops.alloc_bulk"]]], kernel


def test_an_allocator_asks_for_its_boot_units_once_a_process(monkeypatch, no_child):
    asked = []
    monkeypatch.setattr(dprewarm, "request", lambda names: asked.append(tuple(names)))
    numslab.SlabAllocator(memory="8M", kernel="6.18")
    numslab.SlabAllocator(memory="8M", kernel="6.18")          # (once)
    numslab.SlabAllocator(memory="8M", slab_debug="FZ")         # (a debug boot: other units)
    numslab.SlabAllocator(memory="8M")
    assert asked == [(*reversed(dprewarm.BOOT_UNITS[k]), *reversed(dprewarm.FIRST_CALLS))
                     for k in ("6.18", "7.0")]


def test_a_unit_the_child_is_compiling_is_waited_for(no_child):
    """The hook before this process compiles a unit waits while the child says it compiles that
    unit (its ``+NAME`` line, until ``-NAME``), so the unit is then loaded, not compiled twice; a
    call of it compiled into a caller, or another unit, does not wait."""
    talk = ("import sys, time; print('+stats.live_objects', flush=True); "
            "sys.stdin.readline(); time.sleep(0.5); print('-stats.live_objects', flush=True)")
    popen = subprocess.Popen([sys.executable, "-c", talk], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    child = dprewarm._child = dprewarm.Child(popen, ["stats.live_objects"])
    deadline = time.monotonic() + 60
    while child.busy is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    units = dprewarm.units_by_name()
    t0 = time.monotonic()
    dprewarm._before_compile(units["stats.live_objects"], True)         # a call: no wait
    dprewarm._before_compile(units["stats.partial_counts"], False)      # another unit
    assert time.monotonic() - t0 < 0.4 and child.busy == "stats.live_objects"
    dprewarm.stop(popen)                                                # (it ends in 0.5 s)
    dprewarm._before_compile(units["stats.live_objects"], False)
    assert time.monotonic() - t0 >= 0.45 and child.busy is None
    assert child.started == ["stats.live_objects"]
    assert popen.wait(timeout=60) == 0
    assert native.COMPILE_HOOK is dprewarm._before_compile


def test_a_first_bulk_allocation_asks_for_its_free_once(monkeypatch, no_child):
    asked = []
    monkeypatch.setattr(dprewarm, "request", lambda names: asked.append(tuple(names)))
    units = dprewarm.units_by_name()
    dprewarm._before_compile(units["ops.alloc_bulk"], True)    # a user's @njit function's call
    dprewarm._before_compile(units["ops.alloc_bulk"], False)   # its first call
    dprewarm._before_compile(units["ops.free_bulk"], False)
    dprewarm._before_compile(units["ops.kmem_cache_alloc_node"], False)
    assert asked == [dprewarm.FOLLOWERS["ops.alloc_bulk"],
                     dprewarm.FOLLOWERS["ops.kmem_cache_alloc_node"]]


def test_a_forked_process_forgets_its_parents_child(monkeypatch, no_child):
    """No thread of a forked process reads the child's lines: its hook must not wait on it;
    and its copy of the child's input is closed, so the parent's end still stops the child."""
    talk = "import sys; sys.stdin.read(); print('-stats.live_objects', flush=True)"
    popen = subprocess.Popen([sys.executable, "-c", talk], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    dprewarm._child = dprewarm.Child(popen, ["stats.live_objects"])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                        # (the forked process: alive until told, then its verdict)
        forgot = dprewarm._child is None
        os.close(w)
        os.read(r, 1)
        os._exit(0 if forgot else 1)
    os.close(r)
    try:
        dprewarm.stop(popen)                        # (the parent's end, the fork still alive)
        assert popen.wait(timeout=30) == 0          # its input's last copy closed: it ends
    finally:
        os.close(w)
        assert os.waitpid(pid, 0)[1] == 0


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


@pytest.mark.parametrize("how", ["python", "command"])
def test_a_replay_from_python_or_the_command_starts_one_child_on_its_units(monkeypatch, how):
    """``numslab.replay`` from Python compiled the replay's units on one core (47 s cold in a
    kernel engineer's trial, the command 28-40 s): it starts the child itself now, once, and
    the command, which calls it, starts none of its own."""
    seen: list = []
    monkeypatch.setattr(dprewarm, "start", lambda names, last_first=True: seen.append(
        tuple(names)))
    monkeypatch.setattr(dprewarm, "stop", lambda child: seen.append("stop"))
    trace = ROOT / "tests" / "data" / "kmem_git_tar.txt.xz"
    if how == "python":
        assert numslab.replay(trace, kernel="7.0", progress=False).replayed > 0
    else:
        from numslab.tools.cli import main
        assert main(["replay", str(trace), "--no-progress"]) == 0
    assert seen == [prewarm.REPLAY_UNITS, "stop"]


@pytest.mark.parametrize("bad", [{"kernel": "8.0"}, {"policy": "no-such-policy"},
                                 {"samples": 0}, {"warm": True}])
def test_a_replay_refused_for_its_arguments_starts_no_child(monkeypatch, bad):
    """The arguments are checked before the child is started (it compiled for nothing)."""
    seen: list = []
    monkeypatch.setattr(dprewarm, "start", lambda names, last_first=True: seen.append(
        tuple(names)))
    with pytest.raises(numslab.InvalidArgumentError):
        numslab.replay(ROOT / "tests" / "data" / "kmem_git_tar.txt.xz", progress=False, **bad)
    assert seen == []


PASS_OVER = r"""
import fcntl, json, os
from numslab.drivers import prewarm
from numslab.engine.compilelock import lock_path
u = prewarm.units_by_name()["pages.alloc_block"]
fd = os.open(lock_path(prewarm._index_of(u).parent, u.name), os.O_CREAT | os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)          # as another process compiling it would
prewarm.main(["pages.alloc_block"])
held = u.address
os.close(fd)
prewarm.main(["pages.alloc_block"])
print(json.dumps([held, u.address != 0]))
"""


def test_the_child_passes_over_a_unit_another_process_is_compiling(tmp_path):
    """It waited for the other process's lock (``compilelock.compile_lock``), its core idle; that
    process caches the unit, so the child goes on to its next one."""
    p = subprocess.Popen([sys.executable, "-c", PASS_OVER], env=_env(tmp_path),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)                 # (its stdin open: the parent is there)
    assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
    lines = p.stdout.read().strip().splitlines()
    p.stdin.close()
    assert json.loads(lines[-1]) == [0, True]           # passed over, then compiled
    assert lines[:-1] == ["+pages.alloc_block", "-pages.alloc_block"]


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
    monkeypatch.setattr(dprewarm, "pending", lambda names: list(names))
    monkeypatch.setenv("NUMSLAB_PREWARM", "1")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})   # taskset -c 0
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert dprewarm.start(prewarm.MAIN_JOB_UNITS) is None             # one CPU to run on
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(dprewarm, "pending", lambda names: list(names)[:1])
    assert dprewarm.start(prewarm.MAIN_JOB_UNITS) is None             # one unit to compile
    monkeypatch.setattr(dprewarm, "pending", lambda names: [])
    with dprewarm.prewarm(prewarm.MAIN_JOB_UNITS) as child:           # all cached
        assert child is None
    monkeypatch.setattr(dprewarm, "pending", lambda names: list(names))
    monkeypatch.setenv("NUMSLAB_PREWARM", "0")
    assert dprewarm.start(prewarm.MAIN_JOB_UNITS) is None             # turned off


def test_start_makes_a_child_that_compiles_what_it_is_sent_first(monkeypatch, tmp_path,
                                                                 no_child):
    """On an empty cache the command's child starts and compiles from the end of its list; a
    request while it runs is sent to it (not a second child) and compiled first; with nothing
    left it waits ``LINGER`` seconds for more, then ends (told to stop, it ends between two
    units: the test above)."""
    monkeypatch.setenv("NUMSLAB_PREWARM", "1")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dprewarm, "_cpus", lambda: 2)
    monkeypatch.setattr(dprewarm, "pending", lambda names: list(names))
    monkeypatch.setattr(dprewarm, "LINGER", 1.0)
    popen = dprewarm.start(["stats.live_objects", "stats.partial_counts"])
    assert popen is not None and popen.poll() is None
    dprewarm.request(["stats.lost_objects"])                   # (while it imports numslab)
    child = dprewarm._child
    assert child.popen is popen
    deadline = time.monotonic() + 300
    while len(child.started) < 3 or child.busy is not None:      # all three compiled
        assert time.monotonic() < deadline and popen.poll() is None
        time.sleep(0.02)
    dprewarm.request(["sheaves.init_barns"])                   # (within its LINGER)
    assert popen.wait(timeout=300) == 0
    assert child.started == ["stats.lost_objects", "stats.partial_counts", "stats.live_objects",
                             "sheaves.init_barns"]
    for name in child.started:
        assert any(tmp_path.rglob(f"{name}-*.nbi"))
    assert dprewarm._child is child                             # (no second child)
    names = [*child.started, "stats.lost_slabs"]             # (one it did not compile)
    check = f"from numslab.drivers import prewarm; print(prewarm.pending({names!r}))"
    after = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                           env=_env(tmp_path), timeout=300)
    assert after.stdout.strip() == repr(names[-1:])            # the cache seen as it is


def test_one_child_at_a_time_on_a_cache(monkeypatch, tmp_path, no_child):
    """A child finding the cache's lock held (another process's child) past ``LOCK_WAIT`` ends
    with nothing compiled; once it is free, the next one compiles."""
    monkeypatch.setenv("NUMSLAB_PREWARM", "1")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dprewarm, "_cpus", lambda: 2)
    monkeypatch.setattr(dprewarm, "pending", lambda names: list(names))
    monkeypatch.setattr(dprewarm, "LOCK_WAIT", 0.3)
    monkeypatch.setattr(dprewarm, "LINGER", 0.0)
    path = dprewarm.lock_path("sheaves.init_barns")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        popen = dprewarm.start(["sheaves.init_barns"], last_first=False)
        assert popen.wait(timeout=60) == 0
        assert dprewarm._child.started == []
    popen = dprewarm.start(["sheaves.init_barns"], last_first=False)
    assert popen.wait(timeout=300) == 0
    assert dprewarm._child.started == ["sheaves.init_barns"]


def test_a_child_still_running_when_the_command_ends_is_dropped_without_a_warning(
        monkeypatch, tmp_path):
    """The command does not wait for the child; dropping its ``Popen`` while the child runs
    printed "subprocess N is still running" (a ResourceWarning) wherever warnings show."""
    monkeypatch.setenv("NUMSLAB_PREWARM", "1")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dprewarm, "pending", lambda names: list(names))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dprewarm.prewarm(prewarm.MAIN_JOB_UNITS) as child:
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


@pytest.mark.parametrize("wait", [True, False], ids=["child-ended", "child-running"])
def test_a_process_ending_after_or_before_its_child_warns_of_nothing(tmp_path, wait):
    """A child's pipes are closed when it ends, or at this process's end (a script whose child
    ended before it warned "unclosed file" twice under ``-X dev``: a new user's trial); a child
    outliving its process stops by itself."""
    script = ("import time; from numslab.drivers import prewarm; prewarm.LINGER = 0; "
              "p = prewarm.start(['sheaves.init_barns', 'slablists.allocate_slab']); "
              f"print(p.pid, flush=True); {wait} and (p.wait(), time.sleep(0.5))")
    p = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True,
                       text=True, env=dict(_env(tmp_path), NUMSLAB_PREWARM="1"), timeout=300)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    pid = int(p.stdout)
    deadline = time.monotonic() + 120
    while _running_prewarm(pid):                   # (a zombie left to init has no cmdline)
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _running_prewarm(pid: int) -> bool:
    try:
        return b"prewarm" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_pending_leaves_out_unknown_names_and_units_compiled_here():
    u = prewarm.units_by_name()["stats.live_objects"]
    u.compile()
    assert prewarm.pending(["no.such_unit", "stats.live_objects"]) == []


#: Runs the child's loop on one small unit in a fresh interpreter (its input a pipe held open),
#: around it printing whether the unit is pending and whether its index is current; ``age``
#: then dates the index a minute before the engine's newest source.
_STALE = """
import os, sys
from numslab.drivers import prewarm as p
name = "stats.lost_slabs"
index = p._index_of(p.units_by_name()[name])
print("PENDING", p.pending([name]))
sys.stdin = os.fdopen(os.pipe()[0])
p.main([name])
print("CURRENT", p._current(index))
if sys.argv[1] == "age":
    old = p._sources_time() - 60
    os.utime(index, (old, old))
    print("CURRENT", p._current(index))
"""


def test_an_index_older_than_the_engines_sources_is_pending_until_the_child_dates_it():
    """An index another numslab wrote (older than the engine's sources: an upgrade, an edit)
    counts as not cached, so a child is started for it; the child, loading the unit from the
    cache, dates it, and the next process counts it as cached."""
    def run(mode):
        out = subprocess.run([sys.executable, "-c", _STALE, mode], capture_output=True,
                             text=True, env=_env(), timeout=300)
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if line.split()[0] in
                ("PENDING", "CURRENT")]

    first = run("age")                          # (compiled or loaded, then dated back)
    assert first[1:] == ["CURRENT True", "CURRENT False"]
    assert run("keep") == ["PENDING ['stats.lost_slabs']", "CURRENT True"]
    assert run("keep")[0] == "PENDING []"


def test_the_context_manager_closes_the_childs_stdin(monkeypatch):
    started = []

    class Child:
        poll = staticmethod(lambda: 0)               # (ended)

        class stdin:
            closed = False

            @classmethod
            def close(cls):
                cls.closed = True

    monkeypatch.setattr(dprewarm, "start", lambda names: started.append(names) or Child)
    with pytest.raises(RuntimeError):
        with dprewarm.prewarm(("a.b",)) as child:
            assert child is Child
            raise RuntimeError("the command failed")
    assert started == [("a.b",)] and Child.stdin.closed
