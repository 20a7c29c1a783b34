"""``numslab.engine.compilelock``: the lock file a function compiles holding, and whether
another process holds it. Another open file of the lock stands in for another process here
(``flock`` locks of two open files conflict within one process too); the two-process runs
are in ``test_native.py`` and ``test_prewarm.py``."""
from __future__ import annotations

import fcntl
import os
import time

from numslab.engine import compilelock
from numslab.engine.compilelock import compile_lock, held_elsewhere, lock_path


def test_a_compile_holds_the_lock_and_releases_it(tmp_path):
    assert not held_elsewhere(tmp_path, "m.f")
    with compile_lock(tmp_path, "m.f"):
        assert held_elsewhere(tmp_path, "m.f")
        assert not held_elsewhere(tmp_path, "m.g")         # one lock a function
    assert not held_elsewhere(tmp_path, "m.f")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.f.lock", "m.g.lock"]


def test_a_compile_reaching_its_own_function_again_takes_no_second_lock(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(compilelock, "LOCK_WAIT", 30.0)
    t = time.monotonic()
    with compile_lock(tmp_path, "m.f"):
        with compile_lock(tmp_path, "m.f"):               # (it would wait for itself)
            assert held_elsewhere(tmp_path, "m.f")
        assert held_elsewhere(tmp_path, "m.f")            # the outer one still holds it
    assert time.monotonic() - t < 5 and not compilelock._HELD


def test_the_wait_for_another_holder_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(compilelock, "LOCK_WAIT", 0.3)
    fd = os.open(lock_path(tmp_path, "m.f"), os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        t = time.monotonic()
        with compile_lock(tmp_path, "m.f"):
            waited = time.monotonic() - t
    finally:
        os.close(fd)
    assert 0.3 <= waited < 5                              # then it compiles all the same


def test_no_lock_where_the_folder_cannot_hold_one(tmp_path):
    with compile_lock(tmp_path / "missing", "m.f"):
        pass
    assert not held_elsewhere(tmp_path / "missing", "m.f") and not compilelock._HELD
