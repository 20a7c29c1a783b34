"""Compile engine units in a second process while this one works.

On an empty Numba cache a first run (the main job, a first replay) spends most of its time
compiling, one core at a time.

A command that knows which units it will need (in the order it first calls them) starts
:func:`prewarm` with them: a child process (``python -m numslab.tools.prewarm NAME...``)
compiles the ones not yet in Numba's cache, the last-needed first, into the same cache, while
the command compiles its own functions and the first units; each unit the command reaches
after the child compiled it is loaded from the cache. The first run of the main job took
18.6-21.6 s this way against 30.3-33.9 s alone (two runs each, 2 cores). Nothing is started
for a process that may run on one CPU only (``taskset``), with the JIT off, off POSIX, with
``NUMSLAB_PREWARM=0``, or when every unit is cached. The child
stops between two units once its parent closes the pipe on its standard input (the context
manager's exit, or the parent's end); a unit both compile is compiled twice, which Numba's
cache, writing each file whole through a rename, allows.
"""
from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numba as nb

from ..engine import native

#: The main job's units (``examples/packet_pipeline.py``, bulk mode on 7.0, its default), in
#: the order it first calls them (tests/test_prewarm.py checks the list against a run).
MAIN_JOB_UNITS = (
    "pages.init_buddy", "sheaves.init_barns", "sheaves.kmalloc_internal", "kmalloc.kmalloc",
    "nocpu.slab_alloc_single", "slablists.new_slab", "slablists.allocate_slab",
    "pages.alloc_pages", "sheaves.init_percpu_sheaves", "sheaves.replace_empty_main",
    "sheaves.refill_sheaf", "nocpu.refill_objects", "nocpu.refill_new_slabs",
    "stats.live_objects", "ops.alloc_bulk", "ops.settle_pending", "slablists.slab_free",
    "nocpu.carve_whole_slabs", "ops.free_bulk", "ops.free_bulk_general", "bulk.free_bulk_raw",
    "stats.partial_counts",
    "stats.lost_objects",
    "rcusheaves.flush_rcu_sheaves", "ops.cache_release", "ops.kmem_cache_shrink",
    "sheaves.pcs_flush_all", "sheaves.sheaf_flush_main", "cpucache.flush_cpu",
    "sheaves.barn_shrink", "slablists.shrink_node", "slablists.discard_slab",
    "sheaves.kfree_internal", "sheaves.free_barns", "pages.free_pages")

#: ``numslab replay``'s units (7.0, its default; a trace of ``kmem_cache_*`` and ``kmalloc``
#: events), in the order it first calls them.
REPLAY_UNITS = (
    "pages.init_buddy", "sheaves.init_barns", "sheaves.kmalloc_internal", "kmalloc.kmalloc",
    "nocpu.slab_alloc_single", "slablists.new_slab", "slablists.allocate_slab",
    "pages.alloc_pages", "sheaves.init_percpu_sheaves", "sheaves.replace_empty_main",
    "sheaves.refill_sheaf", "nocpu.refill_objects", "nocpu.refill_new_slabs",
    "stats.live_objects", "stats.lost_objects", "rcusheaves.flush_rcu_sheaves",
    "ops.cache_release", "ops.kmem_cache_shrink", "sheaves.pcs_flush_all",
    "sheaves.sheaf_flush_main", "cpucache.flush_cpu", "sheaves.barn_shrink",
    "slablists.shrink_node", "sheaves.kfree_internal", "sheaves.free_barns",
    "rcusheaves.rcu_run_callbacks", "slablists.slab_free",
    "ops.kmem_cache_alloc_node", "ops.kmem_cache_free",
    "sheaves.replace_full_main", "slablists.build_freelist", "stats.partial_counts")


def units_by_name() -> dict[str, native.Unit]:
    """Every unit of the engine by its short name (``module.function``)."""
    return {".".join(u.name.rsplit(".", 2)[-2:]): u for u in native.UNITS}


def pending(names: Sequence[str]) -> list[str]:
    """The units of ``names`` (short names, unknown ones left out) not in Numba's cache.

    Not cached: no index file of theirs (a unit whose index exists but holds no entry for this
    numslab is taken as cached; the child would load or compile it anyway)."""
    units = units_by_name()
    out = []
    for name in names:
        u = units.get(name)
        if u is None or u.address:              # unknown, or compiled in this process
            continue
        cache = native.EngineCache(u.py_func)
        if not Path(cache._cache_file._index_path).exists():
            out.append(name)
    return out


def start(names: Sequence[str]) -> subprocess.Popen | None:
    """Start the child compiling the units of ``names`` not yet cached, the last first.

    None where it would not help (one CPU to run on, the JIT off, not POSIX, fewer than two to
    compile) or when the environment says ``NUMSLAB_PREWARM=0`` (the test suite does: its two
    workers keep both cores busy)."""
    if os.name != "posix" or _cpus() < 2 or nb.config.DISABLE_JIT or \
            os.environ.get("NUMSLAB_PREWARM", "1") == "0":
        return None
    todo = pending(names)
    if len(todo) < 2:
        return None
    env = dict(os.environ)                      # this numslab, whatever the caller's folder
    root = str(Path(native.__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        return subprocess.Popen([sys.executable, "-m", "numslab.tools.prewarm",
                                 *reversed(todo)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, cwd=root, start_new_session=True)
    except OSError:                             # (no process to spare: compile alone)
        return None


def _cpus() -> int:
    """The CPUs this process may run on (``taskset``'s mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def stop(child: subprocess.Popen | None) -> None:
    """Tell the child to stop after the unit it is compiling (its stdin closed).

    The command does not wait: a daemon thread reaps the child when it ends (a ``Popen`` dropped
    while its process runs warns "subprocess ... is still running")."""
    if child is None:
        return
    if child.stdin is not None:
        with contextlib.suppress(OSError):
            child.stdin.close()
    if child.poll() is None:
        threading.Thread(target=child.wait, name="numslab-prewarm-reaper", daemon=True).start()


@contextlib.contextmanager
def prewarm(names: Sequence[str]) -> Iterator[subprocess.Popen | None]:
    """:func:`start` on entry, :func:`stop` on exit."""
    child = start(names)
    try:
        yield child
    finally:
        stop(child)


def _parent_gone() -> bool:
    """Whether the parent closed the pipe on our standard input (or ended)."""
    try:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready) and not os.read(sys.stdin.fileno(), 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Compile the named units in order, stopping early when the parent is gone; 0."""
    units = units_by_name()
    for name in sys.argv[1:] if argv is None else argv:
        if _parent_gone():
            break
        u = units.get(name)
        if u is not None:
            u.compile()
    return 0


if __name__ == "__main__":
    sys.exit(main())
