"""The lab's compiled kernels (``numslab.lab.compiled``): cached under a key that changes with
every source compiled into them, so that no edit or upgrade runs stale code."""
import shutil
from pathlib import Path

from numslab.engine import native
from numslab.lab import compiled, fixed, kernels, parse


def test_every_lab_kernel_is_cached_under_the_lab_key_and_its_helpers_link_only():
    kinds = set()
    for mod in (fixed, parse, kernels):
        for name in dir(mod):
            f = getattr(mod, name)
            if hasattr(f, "py_func") and f.py_func.__module__ == mod.__name__:
                inline = f.targetoptions.get("forceinline", False)
                # an inline helper is compiled link-only into the kernels (engine.linkonly):
                # never cached, never callable from Python; a kernel is cached
                assert isinstance(f, native.HelperDispatcher) == inline, f"{mod.__name__}.{name}"
                assert isinstance(f._cache, compiled.LabCache) != inline, f"{mod.__name__}.{name}"
                kinds.add(inline)
    assert kinds == {True, False}


def test_the_key_changes_with_any_lab_source_and_with_the_engine(tmp_path, monkeypatch):
    lab = Path(compiled.__file__).parent
    copy = tmp_path / "lab"
    shutil.copytree(lab, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert compiled._lab_hash(copy) == compiled.LAB_HASH
    helper = copy / "fixed.py"                     # a helper inlined into parse's scan
    helper.write_text(helper.read_text() + "\n# an edit\n")
    assert compiled._lab_hash(copy) != compiled.LAB_HASH
    monkeypatch.setattr(compiled, "ABI", native.ABI + "x")   # another engine
    assert compiled._lab_hash(lab) != compiled.LAB_HASH


def test_inline_helpers_are_inlined_by_llvm_not_by_numba():
    """``inline=True`` is LLVM's always-inline (``forceinline``): the helper is compiled
    once and its callers get its body; Numba's IR inliner (``inline="always"``) typed it
    again at every call site and doubled the scan's compile. What the helpers compute is
    ``test_lab_fixed``'s (against plain Python, and the fast path against the general walk)."""
    assert fixed.word_hash.targetoptions.get("forceinline") is True
    assert fixed.word_hash.targetoptions.get("inline", "never") == "never"
    assert not parse.scan_chunk.targetoptions.get("forceinline")


def test_a_replay_runs_under_numba_disable_jit():
    """``NUMBA_DISABLE_JIT=1`` (how a user debugs their own ``@njit`` code) made the lab's
    kernels plain Python functions, and ``numslab.replay`` failed on the engine's intrinsics
    ("<intrinsic data_address> is not usable in pure-python"): they compile all the same."""
    import json
    import os
    import subprocess
    import sys

    import numslab
    trace = Path(__file__).parent / "data" / "kmem_net.txt.xz"
    code = ("import json, numslab\n"
            f"r = numslab.replay({str(trace)!r}, kernel='7.0', cpus=2, samples=8)\n"
            "print(json.dumps([r.replayed, r.lines, r.untraced_frees]))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "NUMBA_DISABLE_JIT": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    r = numslab.replay(trace, kernel="7.0", cpus=2, samples=8)
    assert json.loads(p.stdout) == [r.replayed, r.lines, r.untraced_frees]
