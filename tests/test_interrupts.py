"""A Ctrl-C during a unit's compile (``numslab.engine.interrupts``), in child processes."""
from __future__ import annotations

import subprocess
import sys

import pytest

_CHILD = """
import os, signal, sys, time, numslab
# Ctrl-C as a program on a terminal has it: a job started in the background (nohup, `&`,
# a CI runner) inherits SIGINT ignored, where Python installs no handler of its own
signal.signal(signal.SIGINT, signal.default_int_handler)
from numslab.engine import native
sa = numslab.SlabAllocator(nr_cpus=1, memory="16M")
real, hit, compiled = native.Unit.compile, [], [time.monotonic()]
def compile_interrupted(self):
    mid = sys._getframe(1).f_code is native.Unit._first_call.__code__
    if self._ctypes is None and not hit and mid == (sys.argv[1] == "mid"):
        hit.append(self.name)       # the first unit compiled in (or before) an operation
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
    run = real(self)
    compiled.append(time.monotonic())
    return run
native.Unit.compile = compile_interrupted
try:
    sa.kmalloc(100)                 # its first: units compile before and in the operation
    time.sleep(5)                   # (the KeyboardInterrupt comes here at the latest)
    outcome = "finished"
except KeyboardInterrupt:
    outcome = "interrupted"
late = time.monotonic() - compiled[-1] > 1
native.Unit.compile = real
sa.validate()
b = sa.kmalloc(100)                 # a later call compiles what it still needs, and runs
sa.kfree(b)
sa.validate()
print(outcome, late, len(hit), signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""


@pytest.mark.parametrize("where", ["mid", "before"])
def test_a_ctrl_c_during_a_first_kmalloc_raises_keyboard_interrupt(where):
    """A Ctrl-C while a first ``kmalloc`` compiles raises KeyboardInterrupt: at once while the
    gate compiles the operation's unit before it starts, and as soon as the operation returns
    while a unit it calls compiles in its middle (it was ignored there for good: the call
    returned and nothing was raised). The allocator validates, a later call compiles and runs,
    and the program's handler is back."""
    p = subprocess.run([sys.executable, "-c", _CHILD, where], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["interrupted", "False", "1", "True"], (p.stdout, p.stderr)
    assert ("KeyboardInterrupt deferred" in p.stderr) == (where == "mid"), p.stderr
    assert "Exception ignored" not in p.stderr
