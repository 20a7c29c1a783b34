"""Compile engine units in a second process while this one works.

On an empty Numba cache a first run (an allocator's boot and first kmalloc, a first bulk
round, the main job, a first replay) spends most of its time compiling, one core at a time.

Code that knows which units it will need starts a child process (:data:`_CHILD`, fed the unit
names) that compiles the ones not yet in Numba's cache into the same cache while this process
compiles its own functions and the first units; a unit this process reaches after the child
compiled it is loaded from the cache, and one the child is compiling at that moment is waited
for (:func:`_before_compile`) instead of compiled twice. Three users:

* ``SlabAllocator()`` (:func:`boot`): its boot and first ``kmalloc`` and ``kfree``
  (:data:`BOOT_UNITS`), the child taking the list from its end;
* a unit's first compile, or a first compiled call of it (a user's ``@njit`` function on
  ``numslab.jit``), through ``native.COMPILE_HOOK`` (:data:`FOLLOWERS`): the units that surely
  come next, in order (the first bulk allocation's free);
* the commands (``numslab.tools.prewarm``: the main job, ``numslab replay``): their own lists,
  from the end, through :func:`prewarm`.

One child at a time: a request while it runs is sent on its standard input; and one per cache
across processes (a lock file beside the cache's files). Nothing is started for a process that
may run on one CPU only (``taskset``), with the JIT off, off POSIX, with ``NUMSLAB_PREWARM=0``,
or when every unit asked for is cached. The child ends when it has nothing left to compile and
no more came within :data:`LINGER`, or between two units once its standard input closes (the
command's end, or this process's); a unit both compile is compiled twice, which Numba's cache,
writing each file whole through a rename, allows.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

import numba as nb

from ..engine import native
from ..engine.compilelock import held_elsewhere

#: The units a ``SlabAllocator`` of each generation calls first in its boot, in order: the buddy
#: allocator, the kmalloc caches' barns and sheaves (which under 7.x refill kmalloc-64's sheaves
#: from new slabs); then, whatever the generation, its first ``kmalloc`` and ``kfree`` call
#: :data:`FIRST_CALLS` (tests/test_prewarm.py checks both against a run). 7.3 and ``next``
#: refill a node's partial slabs in order; 6.18 boots through the CPU slab.
BOOT_7_0 = (
    "pages.init_buddy", "sheaves.init_barns", "sheaves.kmalloc_internal", "kmalloc.kmalloc",
    "nocpu.slab_alloc_single", "slablists.new_slab", "slablists.allocate_slab",
    "pages.alloc_pages", "sheaves.init_percpu_sheaves", "sheaves.replace_empty_main",
    "sheaves.refill_sheaf", "nocpu.refill_objects", "nocpu.refill_new_slabs")
BOOT_UNITS = {
    "6.18": ("pages.init_buddy", "sheaves.kmalloc_internal", "kmalloc.kmalloc",
             "cpucache.slab_alloc_slow", "slablists.get_partial", "slablists.new_slab",
             "slablists.allocate_slab", "pages.alloc_pages"),
    "7.0": BOOT_7_0,
    "7.1": BOOT_7_0,
    "7.3": (*BOOT_7_0[:12], "nocpu.refill_node_in_order", *BOOT_7_0[12:]),
}
BOOT_UNITS["next"] = BOOT_UNITS["7.3"]
FIRST_CALLS = ("ops.kmalloc", "ops.kfree")

#: The units whose first compile (on an empty cache) starts the child on those that surely come
#: next, in the order it compiles them: a first bulk allocation's free (the batch just taken, then
#: the carve of whole new slabs, then any other batch's), a first single allocation's free.
FOLLOWERS = {
    "ops.alloc_bulk": ("ops.free_bulk", "nocpu.carve_whole_slabs", "ops.free_bulk_general"),
    "ops.kmem_cache_alloc_node": ("ops.kmem_cache_free",),
}

#: How long this process waits for the child to finish the unit it needs (s): past it, it
#: compiles the unit itself.
WAIT_MAX = 60.0

#: How long the child waits for more names once it has compiled everything (s).
LINGER = 3.0

#: How long a new child waits for the cache's lock (s): a child told to stop ends its unit.
LOCK_WAIT = 10.0

#: The child's program, given the lock file: one child at a time on one cache (another
#: process's, a test suite's other worker's, holding it past :data:`LOCK_WAIT`, this one ends),
#: and not ``-m`` this module, which the package has imported already (runpy would warn).
_CHILD = """\
import fcntl, os, sys, time
try:
    os.makedirs(os.path.dirname({lock!r}), exist_ok=True)
    fd = os.open({lock!r}, os.O_CREAT | os.O_RDWR, 0o644)
    for _ in range({tries}):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.1)
    else:
        sys.exit(0)
except OSError:
    sys.exit(0)
from numslab.drivers.prewarm import main
sys.exit(main(linger={linger}))
"""


class Child:
    """The child process and the unit it compiles now.

    Its protocol: the names to compile come as arguments and, later, as lines on its standard
    input (each batch compiled before what is left of the earlier ones); it writes ``+NAME`` on
    its standard output before compiling a unit and ``-NAME`` after. A daemon thread reads those
    lines (:attr:`busy`) and reaps the child when it ends; names sent as the child was ending,
    with its queue empty (it reads its input only between units), go to a new child."""

    def __init__(self, popen: subprocess.Popen, names: Sequence[str]) -> None:
        self.popen = popen
        #: Every name it was given (a request sends only the others), and those sent later.
        self.names = set(names)
        self.sent: list[str] = []
        #: The unit it is compiling (None between units), and those it began, in order.
        self.busy: str | None = None
        self.started: list[str] = []
        self.ended = False
        self._cond = threading.Condition()
        self._out = os.dup(popen.stdout.fileno())
        popen.stdout.close()
        threading.Thread(target=self._read, name="numslab-prewarm", daemon=True).start()

    def _read(self) -> None:
        """Follow the child's lines until it ends, then reap it and close its pipes.

        Its output is read from a file descriptor of this thread's own (a file object left open
        by a process ending meanwhile warned "unclosed file" under ``-X dev``)."""
        buf = b""
        try:
            while data := os.read(self._out, 4096):
                *lines, buf = (buf + data).split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace").strip()
                    with self._cond:
                        self.busy = text[1:] if text.startswith("+") else None
                        if self.busy:
                            self.started.append(self.busy)
                        self._cond.notify_all()
        except OSError:
            pass
        finally:
            os.close(self._out)
        self.popen.wait()
        with self._cond:
            self.busy, self.ended = None, True
            self._cond.notify_all()
        told = self.popen.stdin.closed
        with contextlib.suppress(OSError, ValueError):
            self.popen.stdin.close()
        missed = [n for n in self.sent if n not in self.started]
        if missed and self.started and not told:    # (names sent as it ended; a child that
            with contextlib.suppress(Exception):    # ran and was not told to stop)
                request(missed)

    def send(self, names: Sequence[str]) -> bool:
        """Queue ``names`` (those not given before) in the running child: whether it took them."""
        if self.ended or self.popen.poll() is not None or self.popen.stdin is None:
            return False
        new = [n for n in names if n not in self.names]
        if not new:
            return True
        try:
            self.popen.stdin.write("".join(n + "\n" for n in new).encode())
            self.popen.stdin.flush()
        except (OSError, ValueError):           # (it ended meanwhile, or the command closed it)
            return False
        self.names.update(new)
        self.sent += new
        return True

    def wait_for(self, name: str, timeout: float = WAIT_MAX) -> None:
        """Return once the child is not compiling ``name`` (at most ``timeout`` seconds)."""
        with self._cond:
            self._cond.wait_for(lambda: self.busy != name, timeout)


#: The running child, if any (:func:`start`).
_child: Child | None = None
#: The boot lists and followers' keys this process asked for (each once).
_asked: set[object] = set()
_lock = threading.Lock()


def boot(kernel: str) -> None:
    """The child on the boot units of generation ``kernel`` (:data:`BOOT_UNITS`), once.

    ``SlabAllocator()`` calls it first: on an empty cache its boot and first ``kmalloc`` and
    ``kfree`` compile about fifteen units (9.5-11 s on this project's machine, one core). The
    child takes the boot's list from its end while the allocator takes it from its start; where
    they meet, the child goes on to :data:`FIRST_CALLS`, also from the end (``kfree``, the
    longer, while the allocator compiles ``kmalloc``)."""
    names = BOOT_UNITS.get(kernel, ())
    if names and _ask_once(names):
        request([*reversed(names), *reversed(FIRST_CALLS)])


def _ask_once(key: object) -> bool:
    """Whether ``key`` is asked for the first time in this process."""
    with _lock:
        if key in _asked:
            return False
        _asked.add(key)
        return True


def request(names: Sequence[str]) -> None:
    """Have the child compile the units of ``names`` not yet cached, in this order.

    Sent to the running child, else a new one is started (where :func:`start` starts one)."""
    todo = pending(names)
    child = _child
    if child is not None and child.send(todo):
        return
    if todo:
        start(todo, last_first=False)


def _before_compile(unit: native.Unit, lowered: bool) -> None:
    """``native.COMPILE_HOOK``: before this process compiles ``unit`` (``lowered``: a call of it).

    If the child is compiling it, wait for it (the unit is then loaded from the cache); if it is
    one of :data:`FOLLOWERS`, have the child compile what comes next (from a compiled call of it,
    as a user's ``@njit`` function on ``numslab.jit`` compiles: before its first call). Its index
    older than the engine's sources is dated now (loaded or compiled here, it is current: no
    later process starts a child for it). Never raises."""
    try:
        name = short_name(unit)
        child = _child
        if not lowered and child is not None and child.busy == name:
            child.wait_for(name)
        if not lowered and not _current(index := _index_of(unit)):
            _date(index)
        follow = FOLLOWERS.get(name)
        if follow and _ask_once(name):
            request(follow)
    except Exception:                           # noqa: BLE001 - a helper: never in the way
        pass


def _at_exit() -> None:
    """At this process's end: tell the child to stop.

    Its standard input closed here, not left to the garbage collector (which warned "unclosed
    file" under ``-X dev``)."""
    child = _child
    if child is not None:
        stop(child.popen)


def _forget_child() -> None:
    """In a forked process: the child is its parent's (no thread here reads its lines).

    Its pipes' copies are closed here, so that the parent's end still tells it to stop (a
    forked process outliving its parent kept the child compiling its whole list)."""
    global _child
    child, _child = _child, None
    if isinstance(child, Child):
        with contextlib.suppress(OSError, ValueError):
            child.popen.stdin.close()
        with contextlib.suppress(OSError):
            os.close(child._out)


native.COMPILE_HOOK = _before_compile
atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_child)


def lock_path(name: str) -> Path:
    """The lock file of the cache that unit ``name`` is compiled into (one child at a time)."""
    return Path(native.EngineCache(units_by_name()[name].py_func)._cache_path) / \
        "numslab-prewarm.lock"


def short_name(unit: native.Unit) -> str:
    """A unit's short name, ``module.function``."""
    return ".".join(unit.name.rsplit(".", 2)[-2:])


def units_by_name() -> dict[str, native.Unit]:
    """Every unit of the engine by its short name (``module.function``)."""
    return {short_name(u): u for u in native.UNITS}


def pending(names: Sequence[str]) -> list[str]:
    """The units of ``names`` (short names, unknown ones left out) not in Numba's cache.

    Not cached: no index file of theirs, or one older than the newest of the sources the
    engine's ABI hashes (:func:`_current`: written by another numslab, as after an upgrade or an
    edit of the engine). A stat each, not a read of the index (which would cost every warm
    start): an index a source's new date alone made older is taken as stale, once (the child
    loads that unit from the cache and dates the index anew, :func:`main`)."""
    units = units_by_name()
    out = []
    for name in names:
        u = units.get(name)
        if u is None or u.address:              # unknown, or compiled in this process
            continue
        if not _current(_index_of(u)):
            out.append(name)
    return out


def _index_of(unit: native.Unit) -> Path:
    """The path of ``unit``'s index file in Numba's cache.

    Found once a process (Numba's locator tests the folder with a temporary file, about 0.3 ms:
    the hook's second look at each unit a warm start loads cost 5 ms)."""
    path = _INDEX.get(unit.name)
    if path is None:
        path = _INDEX[unit.name] = Path(native.EngineCache(unit.py_func)._cache_file._index_path)
    return path


#: Each unit's index path by its full name (:func:`_index_of`).
_INDEX: dict[str, Path] = {}


#: The newest modification time of ``native.abi_sources()`` (:func:`_sources_time`), read once.
_newest: float | None = None


def _sources_time() -> float:
    """The newest modification time of the sources the engine's ABI hashes (read once)."""
    global _newest
    if _newest is None:
        _newest = max((f.stat().st_mtime for f in native.abi_sources()), default=0.0)
    return _newest


def _current(index: Path) -> bool:
    """Whether the index file ``index`` exists and is not older than the engine's sources."""
    try:
        return index.stat().st_mtime >= _sources_time()
    except OSError:
        return False


def _date(index: Path) -> None:
    """Date the index file ``index`` now (or at the sources' date, if later): it is current.

    After the child compiled or loaded its unit: an index that only a source's new date made
    stale (a file touched, the ABI the same) counts as cached again."""
    t = max(time.time(), _sources_time())
    with contextlib.suppress(OSError):
        os.utime(index, (t, t))


def start(names: Sequence[str], last_first: bool = True) -> subprocess.Popen | None:
    """Start the child compiling the units of ``names`` not yet cached (the last first).

    None where it would not help (one CPU to run on, the JIT off, not POSIX, nothing to compile,
    or one unit to compile from the end of a list: this process is about to) or when the
    environment says ``NUMSLAB_PREWARM=0`` (the test suite does: its two workers keep both cores
    busy); the child before it, if still running, is told to stop."""
    global _child
    if os.name != "posix" or _cpus() < 2 or nb.config.DISABLE_JIT or \
            os.environ.get("NUMSLAB_PREWARM", "1") == "0":
        return None
    todo = pending(names)
    if len(todo) < (2 if last_first else 1):
        return None
    if last_first:
        todo.reverse()
    env = dict(os.environ)                      # this numslab, whatever the caller's folder
    root = str(Path(native.__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["NUMSLAB_PREWARM"] = "0"                # (no grandchild)
    try:
        program = _CHILD.format(lock=str(lock_path(todo[0])), linger=LINGER,
                                tries=max(1, int(LOCK_WAIT * 10)))
        popen = subprocess.Popen([sys.executable, "-c", program, *todo], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                 cwd=root, start_new_session=True)
    except OSError:                             # (no process to spare: compile alone)
        return None
    with _lock:
        old, _child = _child, Child(popen, todo)
    stop(old.popen if old is not None else None)
    return popen


def _cpus() -> int:
    """The CPUs this process may run on (``taskset``'s mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def stop(child: subprocess.Popen | None) -> None:
    """Tell the child to stop after the unit it is compiling (its standard input closed).

    No wait: its reader thread reaps it when it ends (a ``Popen`` dropped while its process runs
    warns "subprocess ... is still running")."""
    if child is not None and child.stdin is not None:
        with contextlib.suppress(OSError):
            child.stdin.close()


@contextlib.contextmanager
def prewarm(names: Sequence[str]) -> Iterator[subprocess.Popen | None]:
    """:func:`start` on entry, :func:`stop` on exit."""
    child = start(names)
    try:
        yield child
    finally:
        stop(child)


# ---- the child ----------------------------------------------------------------------------------
def _read_names(buf: bytearray, wait: float = 0.0) -> tuple[list[str], bool]:
    """The names the parent sent since (complete lines), and whether its pipe closed.

    ``wait``: seconds to wait for a first line when none has come."""
    names: list[str] = []
    while True:
        try:
            ready, _, _ = select.select([sys.stdin], [], [], 0 if names else wait)
            if not ready:
                return names, False
            data = os.read(sys.stdin.fileno(), 65536)
        except (OSError, ValueError):
            return names, True
        if not data:
            return names, True
        buf += data
        *lines, rest = buf.split(b"\n")
        buf[:] = rest
        names += [ln.decode(errors="replace").strip() for ln in lines if ln.strip()]


def _say(line: str) -> bool:
    """Write ``line`` for the parent: False if it is gone."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        return False
    return True


def main(argv: Sequence[str] | None = None, linger: float = 0.0) -> int:
    """The child: compile the named units and those sent later, in order, until done or told; 0.

    ``linger``: seconds to wait for more names once none is left (:data:`_CHILD`'s: a program's
    next step, a first bulk round after the allocator's boot, often follows within them)."""
    units = units_by_name()
    queue = deque(sys.argv[1:] if argv is None else argv)
    buf = bytearray()
    while True:
        sent, gone = _read_names(buf, 0.0 if queue else linger)
        if gone:
            break
        queue.extendleft(reversed(sent))        # the newest request first
        if not queue:
            break
        name = queue.popleft()
        if name not in units or not pending([name]):   # (the parent compiled it meanwhile:
            continue                                    # not even loaded)
        u = units[name]
        if held_elsewhere(_index_of(u).parent, u.name):  # (another process compiles it and
            continue                                    # caches it: no wait for its lock)
        if not _say("+" + name):
            break
        u.compile()
        _date(_index_of(u))
        if not _say("-" + name):
            break
    return 0
