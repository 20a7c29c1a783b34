"""Shared fixtures: small allocators whose invariants are checked after every test."""
from __future__ import annotations

import importlib
import math
import os
import shutil
import sys
import weakref
from pathlib import Path

#: Bytecode is written, whatever PYTHONDONTWRITEBYTECODE says, for this process and the
#: interpreters the tests start: without it each of them compiled numslab's sources again,
#: and each worker rewrote every test module's asserts (pytest keeps the rewritten code as
#: bytecode only), 10 s of each worker's start on a fresh clone.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import numslab  # noqa: E402
from numslab.engine.layout import (F_G, F_REPORTS, F_SCRATCH, G_ERR0,  # noqa: E402
                                   G_ERR2, G_NREPORTS, H_MEM, PG_TAIL, view)


#: The order ``--dist loadfile`` hands the test files out in (``pytest_configure`` turns off
#: xdist's own, by test count; a worker takes the next file when its last is about done).
#: Compiling is most of a cold suite's time, and two workers compiling the same unit at once
#: do the work twice, so the run begins with the engine's units compiled on one worker
#: (``test_allocator.py``) while the other parses traces and captures, which need no unit
#: (:data:`FIRST`); the files that follow find most units in the cache. Then the files of
#: 30 tests and more, largest first, and the files of fewer tests that take long
#: (:data:`SLOW`); then the files whose tests start fresh interpreters (:data:`FRESH`), which
#: load the engine's units from the cache the other tests filled instead of compiling them
#: again (the README's blocks took 49 s of a cold suite, 10 s once the units are cached; the
#: packet pipeline's command-line tests, next to ``test_net_pipeline.py`` in the order, had
#: both workers compile the pipeline's kernels at once, 11 s of CPU);
#: last the small files, so that neither worker is left alone with a long one at the end.
FIRST = ("test_allocator.py", "test_lab_trace.py", "test_package.py", "test_net_capture.py",
         "test_net_headers.py", "test_fuzz_capture.py", "test_architecture.py",
         "test_lab_fixed.py", "test_flags.py", "test_toolsjit.py")
SLOW = ("test_lab_peaks.py", "test_fuzz_pending.py", "test_pending_nodes.py")
FRESH = ("test_net_hardening.py", "test_readme.py", "test_prewarm.py", "test_linkonly.py",
         "test_coldstart.py", "test_interrupts.py", "test_ops.py")

#: No second compiling process (``numslab.tools.prewarm``) for the commands the tests run:
#: the suite's two workers keep both cores busy (``test_prewarm.py`` turns it on where it
#: tests it).
os.environ["NUMSLAB_PREWARM"] = "0"


def pytest_configure(config: pytest.Config) -> None:
    """Hand the files out in the collection's order (:data:`FIRST`), not xdist's."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection(session: pytest.Session) -> None:
    """On xdist's second worker, import the later half of the test modules, last first, before
    the session collects them all in order.

    On a fresh clone the two workers collect at once, and each rewrote every module's asserts;
    this way each rewrites about half and loads the other half's bytecode (pytest writes it
    whole, through a rename) as it meets it."""
    here = Path(__file__).parent
    if os.environ.get("PYTEST_XDIST_WORKER") != "gw1" or sys.path[0] != str(here):
        return
    files = sorted(here.glob("test_*.py"))
    for path in reversed(files[len(files) // 2:]):
        importlib.import_module(path.stem)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the files as :data:`FIRST` says (each file's tests keep their order)."""
    count: dict[str, int] = {}
    for item in items:
        count[item.path.name] = count.get(item.path.name, 0) + 1

    def rank(name: str) -> tuple[int, int, str]:
        if name in FIRST:
            return 0, FIRST.index(name), name
        if name in FRESH:
            return 2, FRESH.index(name), name
        return (1 if count[name] >= 30 or name in SLOW else 3), -count[name], name
    items.sort(key=lambda item: rank(item.path.name))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test using the ``kernel`` fixture on every SLUB generation of its module's
    ``KERNELS``: ``("7.0", "6.18")`` where the behaviour is shared, the default ``("6.18",)``
    for the 6.18 rules (CPU slabs, CPU partial lists, opt-in sheaves) and ``("7.0",)`` for
    7.0's own."""
    if "kernel" in metafunc.fixturenames:
        metafunc.parametrize("kernel", getattr(metafunc.module, "KERNELS", ("6.18",)))


@pytest.fixture
def sa(kernel):
    """A 2-CPU, 1-node allocator with 64 MiB; validated when the test ends."""
    a = numslab.SlabAllocator(nr_cpus=2, nr_nodes=1, memory="64M", kernel=kernel)
    yield a
    a.validate()


@pytest.fixture
def sa2(kernel):
    """A 4-CPU, 2-node allocator with 16 MiB per node; validated when the test ends."""
    a = numslab.SlabAllocator(nr_cpus=4, nr_nodes=2, memory="16M", kernel=kernel)
    yield a
    a.validate()


def sheaf_counts(c: numslab.KmemCache) -> tuple[int, int]:
    """(allocations, frees) the CPUs' sheaves served for cache ``c``: 7.0 counts them as its
    fast paths, 6.18 as ``alloc_cpu_sheaf``/``free_cpu_sheaf``."""
    st = c.stats
    if c._sa.kernel != "6.18":
        return st["alloc_fastpath"], st["free_fastpath"]
    return st["alloc_cpu_sheaf"], st["free_cpu_sheaf"]


#: Arena copies no snapshot holds any more, by size (:func:`snapshot`).
_SPARE: dict[int, list[np.ndarray]] = {}


def snapshot(a: numslab.SlabAllocator) -> tuple[np.ndarray, np.ndarray]:
    """Copy of every state word (less the arena's address, the error registers, the
    kernels' scratch words and the slab_debug reports, which a refused call may add: the
    kernel prints them) and of the arena.

    The arena is copied into a buffer an earlier snapshot no longer holds: a fresh 64 MiB
    copy took 20 ms, most of it the new pages' faults, 5 ms into a buffer used before
    (snapshots were 12 s of a quarter of the suite). Keep no view of the copy past the
    snapshot: the buffer is reused once the copy is gone."""
    n = a.memory.nbytes
    spare = _SPARE.setdefault(n, [])
    buf = spare.pop() if spare else np.empty(n, np.uint8)
    np.copyto(buf, a.memory.view(np.uint8).reshape(-1))
    copy = buf[:]                       # (a view: when it goes, the buffer is spare again)
    weakref.finalize(copy, spare.append, buf)
    return snapshot_state(a), copy


def snapshot_state(a: numslab.SlabAllocator) -> np.ndarray:
    """:func:`snapshot`'s copy of the state words alone."""
    buf = a.state.buf.copy()
    buf[H_MEM] = 0
    view(buf, F_G)[G_ERR0:G_ERR2 + 1] = 0
    view(buf, F_G)[G_NREPORTS] = 0
    view(buf, F_SCRATCH)[:] = 0
    view(buf, F_REPORTS)[:] = 0
    return buf


def assert_unchanged(a: numslab.SlabAllocator, snap: tuple[np.ndarray, np.ndarray]) -> None:
    """Assert that nothing in the allocator changed since ``snap``.

    The arena is compared in place, as 8-byte words (a copy and a byte compare of a 64 MiB
    arena took 80 ms)."""
    assert np.array_equal(snapshot_state(a), snap[0]), "state arrays changed"
    assert np.array_equal(a.memory.view(np.uint64), snap[1].view(np.uint64)), \
        "arena bytes changed"
    a.validate()


def free_total(a: numslab.SlabAllocator) -> int:
    """Free pages of the machine: in the buddy lists plus on the per-CPU page lists."""
    return a.free_pages_count() + a.pcp_pages_count()


def require_tool(name: str) -> None:
    """Fail (not skip: CI must run every test) when an external oracle is not installed."""
    if shutil.which(name) is None:
        pytest.fail(f"{name} is not installed: install Debian's {name} (.ci/run does)")


def new_slab_order(c: numslab.KmemCache, first: int, objects: int | None = None) -> np.ndarray:
    """The objects of the new slab of cache ``c`` whose first handed-out object is ``first``,
    in the order the slab hands them out (int64[objects], ``objects`` defaulting to
    ``c.objs_per_slab``): CONFIG_SLAB_FREELIST_RANDOM's sequence ``c.random_seq`` read on
    from ``first``'s entry, wrapping round and skipping entries past the slab's end; address
    order from the slab's first object when the cache has no sequence."""
    n = c.objs_per_slab if objects is None else objects
    seq = c.random_seq
    if seq is None or n < 2:
        return first + c.slab_size * np.arange(n, dtype=np.int64)
    st = c._sa.state
    pfn = int(first) >> 12
    if st.pg_flags[pfn] & PG_TAIL:
        pfn = int(st.pg_head[pfn])
    base = (pfn << 12) + c.red_left_pad
    entries = seq[seq < n * c.slab_size]                # a fallback slab skips the rest
    at = int(np.flatnonzero(entries == int(first) - base)[0])
    return base + np.roll(entries, -at)


def is_finite_positive(x) -> bool:
    """A timing: a finite float above zero."""
    return isinstance(x, float) and math.isfinite(x) and x > 0


def cell(fn, name: str):
    """The value ``fn`` closes over under ``name`` (the allocator hidden in a closure)."""
    return fn.__closure__[fn.__code__.co_freevars.index(name)].cell_contents


# ---- numslab.jit from users' functions (tests of the pending takes) ----
@numba.njit
def jit_alloc_bulk(h, cid, n, out):
    """``numslab.jit.kmem_cache_alloc_bulk`` from a user's function."""
    return numslab.jit.kmem_cache_alloc_bulk(h, cid, n, out)


@numba.njit
def jit_free_bulk(h, cid, n, objs):
    """``numslab.jit.kmem_cache_free_bulk`` from a user's function."""
    numslab.jit.kmem_cache_free_bulk(h, cid, n, objs)


@numba.njit
def jit_free(h, cid, addr):
    """``numslab.jit.kmem_cache_free`` from a user's function."""
    numslab.jit.kmem_cache_free(h, cid, addr)


@numba.njit
def jit_is_live(h, cid, addr):
    """``numslab.jit.is_live`` from a user's function."""
    return numslab.jit.is_live(h, cid, addr)

@numba.njit
def jit_alloc(h, cid):
    """``numslab.jit.kmem_cache_alloc`` from a user's function."""
    return numslab.jit.kmem_cache_alloc(h, cid)
