"""Suite 4: peak memory, start-up with a warm cache, and the cost per pair with many objects live.

Peak memory for one million live 64-byte objects, import plus first allocation with Numba's cache
warm, and the cost per pair with few and with 10 million live objects."""
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

import numslab
from numslab.tools import bench

MILLION = 1_000_000


def _slab_objects(n=MILLION):
    """``n`` live 64-byte objects on a fresh allocator, a byte written in each.

    The peer writes one in each of its records. Their addresses pass through a 64K-entry array (the
    benchmark measures the allocator, not an 8 MB list of addresses)."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="68M")
    c = sa.kmem_cache_create("obj64", 64)
    mem = sa.memory                             # the arena, bytes
    out = np.zeros(1 << 16, np.int64)
    for i in range(0, n, len(out)):
        k = min(len(out), n - i)
        assert sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, k, out) == k
        mem[out[:k]] = 1
    assert c.live_objects == n
    return sa


def _jit_stack_objects(n=MILLION):
    """The peer: ``n`` 64-byte records and a jitted free-index stack over them.

    ``n`` indices are taken through the jitted bulk call, a byte written in each record."""
    stack = np.arange(n, dtype=np.int64)          # its free-index stack: 8 MB
    top = np.array([n], np.int64)
    records = np.zeros((n, 64), np.uint8)         # the records themselves
    out = np.zeros(1 << 16, np.int64)
    alloc = bench.jit_stack_alloc_bulk
    for i in range(0, n, len(out)):
        k = min(len(out), n - i)
        assert alloc(stack, top, k, out) == k
        records[out[:k], 0] = 1
    return stack, records


class PeakMemory:
    """Process peak RSS for a million live 64-byte objects, numslab's against the jitted stack's.

    The figure is asv's peakmem: the largest RSS of the process, its setup included.
    ``slab_million_64B`` (a million live 64-byte objects) and ``jit_stack_million_64B`` (a million
    64-byte records and the jitted stack's 8 MB of indices) do the same work: a million objects
    taken in bulk calls of 64K, a byte written in each. ``baseline`` is the same process with an
    allocator holding nothing: the difference is the cost of a million objects, against their own
    64 MB. The setup compiles both on a thousand objects and keeps nothing, so the peak is the
    measured function's."""

    def setup(self):
        _slab_objects(1000)                      # compile (load from the cache) before
        _jit_stack_objects(1000)                 # measuring, on small sizes

    def peakmem_baseline(self):
        numslab.SlabAllocator(nr_cpus=1, memory="68M")

    def peakmem_slab_million_64B(self):
        _slab_objects()

    def peakmem_jit_stack_million_64B(self):
        _jit_stack_objects()


_FIRST_ALLOC = """
import numslab
sa = numslab.SlabAllocator(nr_cpus=2, memory="64M")
c = sa.kmem_cache_create("t", 256)
sa.kmem_cache_free(c, sa.kmem_cache_alloc(c))
sa.kfree(sa.kmalloc(64))
"""
#: Numba's own floor: import Numba and call one trivial function from its warm cache
#: (``numba_floor_probe.py`` beside this file). Numba sets up its CPU target on the first
#: cache load (LLVM, its registries, and SciPy's BLAS where SciPy is installed), which any
#: Numba package pays; what numslab adds is the difference.
_NUMBA_FLOOR = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import numpy, numba_floor_probe
numba_floor_probe.first(numpy.zeros(1))
"""


def _warm(code: str) -> Callable[[], None]:
    """A setup that runs ``code`` once in a fresh interpreter, so that Numba's cache is warm.

    It runs before the timed interpreters start (``--quick`` times a single one)."""
    def setup() -> None:
        subprocess.run([sys.executable, "-c", code], check=True)
    return setup


def timeraw_import_and_first_alloc():
    """A fresh interpreter: import numslab, make an allocator, kmalloc once (cache warm)."""
    return _FIRST_ALLOC


def timeraw_numba_floor():
    """The peer of ``timeraw_import_and_first_alloc``: Numba and one trivial cached function.

    A fresh interpreter that imports Numba and calls one trivial cached function, as every Numba
    package must."""
    return _NUMBA_FLOOR


timeraw_import_and_first_alloc.setup = _warm(_FIRST_ALLOC)
timeraw_numba_floor.setup = _warm(_NUMBA_FLOOR)


class Scale:
    """Cost of 4096 alloc+free pairs with 1 thousand or 10 million other objects live.

    The pairs run in bulk calls of 64, inside @njit."""

    params = ([1_000, 10_000_000],)
    param_names = ["live"]
    timeout = 600

    def setup(self, live):
        self.sa = numslab.SlabAllocator(nr_cpus=1, memory="1G")
        self.c = self.sa.kmem_cache_create("obj64", 64)
        self.keep = np.zeros(live, np.int64)
        for i in range(0, live, 1 << 20):
            n = min(1 << 20, live - i)
            chunk = self.keep[i:i + n].copy()
            assert self.sa.kmem_cache_alloc_bulk(self.c, numslab.GFP_KERNEL, n, chunk) == n
            self.keep[i:i + n] = chunk
        self.out = np.zeros(64, np.int64)
        self.h, self.cid = self.sa.handle, self.c.id
        bench.slab_loop_bulk(self.h, self.cid, 64, 2, self.out)

    def time_pairs(self, live):
        bench.slab_loop_bulk(self.h, self.cid, 64, 64, self.out)
