"""The compile options (numslab._jit): kernels without the Numba runtime, the runtime
where arrays are made, and the guard against stale cached kernels."""
import os
import time

import numba
import numpy as np
import pytest

from numslab._jit import drop_stale_cache, jit, jit_rt


def test_kernels_run_without_the_numba_runtime():
    @jit(cache=False)
    def fill(a, v):
        for i in range(a.shape[0]):
            a[i] = v
        return a[1:].sum()

    a = np.zeros(5, np.int64)
    assert fill(a, 3) == 12 and (a == 3).all()
    assert fill.targetoptions["_nrt"] is False


def test_making_an_array_needs_jit_rt():
    @jit(cache=False)
    def make(n):
        return np.zeros(n, np.int64)

    @jit_rt(cache=False)
    def make_rt(n):
        return np.zeros(n, np.int64)

    with pytest.raises(numba.core.errors.NumbaError):     # no runtime: no new arrays
        make(3)
    assert make_rt(3).tolist() == [0, 0, 0]


def test_stale_cached_kernels_are_dropped_when_a_source_changes(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("x = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    index, data = cache / "mod.f-1.py311.nbi", cache / "mod.f-1.py311.1.nbc"
    index.write_bytes(b"i")
    data.write_bytes(b"d")
    assert drop_stale_cache(tmp_path)            # no stamp yet: start clean
    assert not index.exists() and not data.exists()
    index.write_bytes(b"i")
    assert not drop_stale_cache(tmp_path)        # nothing changed: the cache stays
    assert index.exists()
    src.write_text("x = 22\n")                   # an edit (size and time change)
    t = time.time() + 5
    os.utime(src, (t, t))
    assert drop_stale_cache(tmp_path)
    assert not index.exists()
