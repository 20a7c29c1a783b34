"""``numslab.engine.ops``: what compiling the public operations' units compiles.

The operations themselves are tested through the facade (``test_allocator.py``, ``test_bulk.py``,
``test_hardening.py`` for the faults); here, on an empty Numba cache in a fresh interpreter, that
the allocation units leave the free path and a debug cache's bulk path to units of their own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMPILE_ALLOCATIONS = r"""
import json
from numslab.engine import bulk, ops
for u in (ops.alloc_bulk, ops.kmem_cache_alloc_node):
    u.compile()
helpers = {d.py_func.__name__: len(d.overloads) for d in (
    ops._slab_free_one, ops._kmem_cache_free_bulk, bulk._free_bulk_raw, bulk._check_batch)}
units = {n: getattr(getattr(ops, n, None), "address", None) != 0 for n in (
    "give_back_on_fault", "give_back_many_on_fault", "alloc_one_by_one", "free_bulk_raw")}
print(json.dumps({"helpers": helpers, "units": units}))
"""


def test_allocation_units_compile_no_free_path(tmp_path: Path) -> None:
    """An allocation unit reaches a fault's give-back and a debug cache's bulk through units.

    Inlined, ``alloc_bulk`` carried the whole checked batch free (for a fault and for an
    out-of-memory give-back) and the single allocation path (for a debug cache), and
    ``kmem_cache_alloc_node`` and ``kmalloc`` (the same give-back) the single free: a first bulk
    call compiled the free path twice (8.4-9.1 s of CPU, now 6.0-6.9 s in alternating runs)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMSLAB_PREWARM": "0"}
    p = subprocess.run([sys.executable, "-c", COMPILE_ALLOCATIONS], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["helpers"] == {"_slab_free_one": 0, "_kmem_cache_free_bulk": 0,
                              "_free_bulk_raw": 0, "_check_batch": 0}
    assert not any(out["units"].values()), out["units"]     # compiled when first called
