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
# (6.18 without CONFIG_SLAB_FREELIST_RANDOM: its boot kmallocs nothing, so a first kmalloc
# compiles units in its middle; a 7.x boot's sheaves and barns, and every boot's kmalloc
# caches' random sequences, compile every unit a kmalloc calls)
sa = numslab.SlabAllocator(nr_cpus=1, memory="16M", kernel="6.18", freelist_random=False)
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


_BEFORE_CHILD = """
import ctypes, signal, time, numba, numslab
signal.signal(signal.SIGINT, signal.default_int_handler)
from numslab import jit as nj
from numslab.engine import ops
libc = ctypes.CDLL(None)
kill, getpid = libc.kill, libc.getpid
kill.argtypes, kill.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
getpid.argtypes, getpid.restype = [], ctypes.c_int
sa = numslab.SlabAllocator(nr_cpus=1, memory="16M")
c = sa.kmem_cache_create("c", 64)
assert ops.kmem_cache_alloc_node.address == 0   # its first call: from compiled code

@numba.njit
def ctrl_c_then_alloc(h, cid):
    kill(getpid(), 2)           # a Ctrl-C while the user's code runs, before its first unit
    return nj.kmem_cache_alloc(h, cid)

try:
    ctrl_c_then_alloc(sa.handle, c.id)
    time.sleep(5)               # (the KeyboardInterrupt comes here at the latest)
    outcome = "finished"
except KeyboardInterrupt:
    outcome = "interrupted"
sa.validate()
print(outcome, c.live_objects, signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""


def test_a_ctrl_c_before_a_stub_raises_once_the_operation_returns():
    """A Ctrl-C that came while a user's compiled code ran, before its call reached a unit not
    yet compiled: Python handles it on the stub's first line, where the program's handler raised
    KeyboardInterrupt inside a ctypes callback, which printed "Exception ignored" and dropped
    it (the call went on as if nothing had happened). It is now raised once the operation
    returns."""
    p = subprocess.run([sys.executable, "-c", _BEFORE_CHILD], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["interrupted", "1", "True"], (p.stdout, p.stderr)
    assert "KeyboardInterrupt deferred: compiling numslab.engine.ops.kmem_cache_alloc_node" \
        in p.stderr
    assert "Exception ignored" not in p.stderr



_OWN_HANDLER_CHILD = _BEFORE_CHILD.replace("""sa = numslab""", """calls = []
def own(signum, frame):             # the program's own handler: counts, raises (argv[1])
    calls.append(signum)
    raise {"ValueError": ValueError("stop"), "KeyboardInterrupt": KeyboardInterrupt}[sys.argv[1]]
signal.signal(signal.SIGINT, own)
sa = numslab""").replace("except KeyboardInterrupt:", "except (ValueError, KeyboardInterrupt):")
_OWN_HANDLER_CHILD = _OWN_HANDLER_CHILD.replace("is signal.default_int_handler)",
                                                "is own, len(calls))")
_OWN_HANDLER_CHILD = _OWN_HANDLER_CHILD.replace("import ctypes,", "import sys, ctypes,")


@pytest.mark.parametrize("error", ["ValueError", "KeyboardInterrupt"])
def test_a_program_handler_raising_before_a_stub_runs_once_and_its_error_is_raised(error):
    """The program's own SIGINT handler raising on a stub's first line: an error of its own was
    printed as "Exception ignored" and dropped (only a KeyboardInterrupt was deferred), and a
    KeyboardInterrupt was deferred by calling the handler again (twice for one Ctrl-C). What it
    raised is now raised once the operation returns, the handler called once."""
    p = subprocess.run([sys.executable, "-c", _OWN_HANDLER_CHILD, error], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["interrupted", "1", "True", "1"], (p.stdout, p.stderr)
    assert f"{error} deferred: compiling numslab.engine.ops.kmem_cache_alloc_node" in p.stderr
    assert "Exception ignored" not in p.stderr


_ALARM_CHILD = _CHILD.replace("from numslab.engine import native\n", """\
from numslab.engine import native
def too_slow(signum, frame):        # a program's time limit: SIGALRM's handler raises
    raise TimeoutError("too slow")
signal.signal(signal.SIGALRM, too_slow)
""").replace(
    "os.kill(os.getpid(), signal.SIGINT)", "os.kill(os.getpid(), signal.SIGALRM)").replace(
    "except KeyboardInterrupt:", "except TimeoutError:")


def test_an_alarm_handler_raising_during_a_compile_mid_operation_is_deferred():
    """SIGALRM's handler raising (a program's time limit) while a unit compiles in the middle
    of an operation: the compile failed and the process exited (status 70). What it raised is
    now deferred as a Ctrl-C is, the compile started again, and raised once the operation
    returns."""
    p = subprocess.run([sys.executable, "-c", _ALARM_CHILD, "mid"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["interrupted", "False", "1", "True"], (p.stdout, p.stderr)
    assert "TimeoutError deferred: compiling numslab.engine." in p.stderr, p.stderr
    assert "Exception ignored" not in p.stderr and "Traceback" not in p.stderr
