"""The tools' compiled loops are cached under a key of every tool's source (``toolsjit``)."""
import shutil

import numpy as np
from numba.core.dispatcher import Dispatcher

from numslab.engine import native
from numslab.tools import bench, checkfloor, floor, toolsjit


def test_every_compiled_function_of_the_floors_and_benchmarks_is_keyed_on_the_tools():
    """A cached ``bench.floor_round_at`` kept running ``floor.py`` as it was before an edit
    (Numba's own cache checks only the file of the function it loads): every compiled function
    of these modules now takes its cache from ``tools_jit``."""
    found = 0
    for mod in (bench, checkfloor, floor):
        for name, f in vars(mod).items():
            if isinstance(f, Dispatcher) and f.py_func.__module__ == mod.__name__:
                assert isinstance(f._cache, toolsjit.ToolsCache), f"{mod.__name__}.{name}"
                found += 1
    assert found >= 25


def test_the_key_changes_with_any_tool_s_source(tmp_path):
    """An edit of one tool (``floor.py``) changes the key of every tool function's cache."""
    src = tmp_path / "tools"
    shutil.copytree(toolsjit.__file__.rsplit("/", 1)[0], src,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = toolsjit._tools_hash(src)
    assert before == toolsjit.TOOLS_HASH
    (src / "floor.py").write_text((src / "floor.py").read_text() + "\n# an edit\n")
    assert toolsjit._tools_hash(src) != before
    cache = toolsjit.ToolsCache(floor.rounds_floor.py_func)
    sig = floor.rounds_floor.nopython_signatures
    key = cache._index_key(sig[0] if sig else (), floor.rounds_floor.targetctx.codegen())
    assert key[-1] == toolsjit.TOOLS_HASH and native.ABI in key


def test_a_tool_function_still_runs_and_caches():
    """The cached function computes what it did (a checked stack's round)."""
    cs = checkfloor.CheckedStack(64)
    out = np.empty(16, np.int64)
    cs.run(16, 5, out)
    assert sorted(cs.free_set()) == list(range(64))
