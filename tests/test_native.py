"""``numslab.engine.native``: units compiled once on first use and reached through the process
table, the engine's cache keyed on the ABI, the dispatcher that ignores constants, LLVM
inlining, and the ``Words``/``State`` pointer intrinsics.

Checks that need a fresh interpreter run in subprocesses (sharing the tests' warm Numba cache,
except where the point is a cache of their own)."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import numslab
from numslab.engine import native, stats
from numslab.engine.layout import (F_CA, F_G, F_PG_FLAGS, F_PG_HEAD, F_SCRATCH, F_SL_CACHE,
                                   F_SL_INUSE, FIELDS, G_NCPUS, H_FIELDS, PG_SLAB, ROW,
                                   ROW_COLS, view)
from numslab.engine.native import (ABI, UNITS, EngineCache, EngineDispatcher,
                                   address, byte_array, copy_bytes, fill_bytes, jit, shift,
                                   state_at, words_at, zero_bytes)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "numslab"


def run_python(code: str, env: dict | None = None, timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter (in the repository, so that it imports this
    numslab); the JSON object it prints last."""
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"subprocess failed ({p.returncode}):\n{p.stderr[-4000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def start_python(code: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"subprocess failed ({p.returncode}):\n{err[-4000:]}"
    return json.loads(out.strip().splitlines()[-1])


# ---- units: compiled lazily, once, in one fixed table order -------------------------------------
LAZY = r"""
import ctypes, json
import numpy as np
import numslab
from numslab.engine import native, ops
from numslab.engine.native import UNIT_TABLE

def state(u):
    stub = ctypes.cast(u._stub, ctypes.c_void_p).value
    return {"address": u.address, "table": int(UNIT_TABLE[u.slot]), "stub": stub}

watched = {"free": ops.kmem_cache_free, "kfree": ops.kfree,
           "free_bulk_unit": ops.free_bulk, "scatter": ops.scatter}
out = {"before": {k: state(u) for k, u in watched.items()}}
sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="4M")
c = sa.kmem_cache_create("c", 64)
a, b = sa.kmem_cache_alloc(c), sa.kmem_cache_alloc(c)
p = sa.kmalloc(100)
out["after_alloc"] = {k: state(u) for k, u in watched.items()}
sa.kmem_cache_free(c, a)                 # through the gate: its table slot, the stub
out["after_free"] = {k: state(u) for k, u in watched.items()}
type(sa).kfree(sa, p)                    # the class's Python method
objs = np.array([b], np.int64)
sa.kmem_cache_free_bulk(c, 1, objs)      # the gate calls ops.free_bulk
out["after_all"] = {k: state(u) for k, u in watched.items()}
out["compiled"] = sorted(u.name for u in native.UNITS if u.address)
print(json.dumps(out))
"""


def test_units_compile_lazily_on_their_first_call():
    r = run_python(LAZY)
    for name, s in r["before"].items():        # nothing compiled at import
        assert s["address"] == 0 and s["table"] == s["stub"], name
    for name, s in r["after_alloc"].items():   # allocating compiles no free
        assert s["address"] == 0 and s["table"] == s["stub"], name
    free = r["after_free"]["free"]
    assert free["address"] != 0 and free["table"] == free["address"] != free["stub"]
    assert r["after_free"]["kfree"]["address"] == 0
    for name in ("free", "kfree", "free_bulk_unit"):
        s = r["after_all"][name]
        assert s["address"] != 0 and s["table"] == s["address"], name
    # a unit no call reached is still its stub
    s = r["after_all"]["scatter"]
    assert s["address"] == 0 and s["table"] == s["stub"]
    assert "numslab.engine.ops.scatter" not in r["compiled"]
    # the first allocation's slow path is a unit called from a unit: compiled by its stub
    assert "numslab.engine.cpucache.slab_alloc_slow" in r["compiled"]
    assert "numslab.engine.prefill.prefill_sheaf" not in r["compiled"]


ONCE = r"""
import json, threading
import numba
import numpy as np
import numslab
from numslab import GFP_KERNEL
from numslab import jit as nj
from numslab.engine import native, ops, stats
from numslab.engine.native import UNIT_TABLE

made = {}
Orig = native._UnitCFunc
class Counting(Orig):
    def __init__(self, pyfunc, *args, **kwargs):
        key = pyfunc.__module__ + "." + pyfunc.__qualname__
        made[key] = made.get(key, 0) + 1
        super().__init__(pyfunc, *args, **kwargs)
native._UnitCFunc = Counting

@numba.njit
def jit_round(h, cid, n):
    out = np.empty(n, np.int64)
    nj.kmem_cache_alloc_bulk(h, cid, n, out)
    nj.kmem_cache_free_bulk(h, cid, n, out)
    a = nj.kmem_cache_alloc(h, cid)
    nj.kmem_cache_free(h, cid, a)
    return n

def work(sa, c, d):
    out = np.zeros(16, np.int64)
    for _ in range(3):
        a = sa.kmem_cache_alloc(c)
        sa.kmem_cache_free(c, a)
        a = type(sa).kmem_cache_alloc(sa, d)
        type(sa).kmem_cache_free(sa, d, a)
        sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 16, out)
        sa.kmem_cache_free_bulk(c, 16, out)
        sa.kmem_cache_alloc_array(d, GFP_KERNEL, 16, out)
        sa.kfree_bulk(16, out)
        p = sa.kmalloc(300)
        sa.kfree(p)
        p = sa.kmalloc(20000)
        sa.kfree(p)
        stats.live_objects(sa._st, c.id)
        jit_round(sa.handle, c.id, 8)

sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")
c = sa.kmem_cache_create("c", 64)
d = sa.kmem_cache_create("d", 96, sheaf_capacity=8)
work(sa, c, d)
first = {u.name: (u.address, id(u._cfunc)) for u in native.UNITS if u.address}
sb = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="8M")     # a second allocator, a thread
t = threading.Thread(target=work, args=(sb, sb.kmem_cache_create("c", 64),
                                        sb.kmem_cache_create("d", 96, sheaf_capacity=8)))
t.start(); t.join()
work(sa, c, d)
for u in native.UNITS:
    if u.address:
        u.compile(); u.compile()
again = {u.name: (u.address, id(u._cfunc)) for u in native.UNITS if u.address}
table_ok = all(int(UNIT_TABLE[u.slot]) == u.address for u in native.UNITS if u.address)
print(json.dumps({"made": made, "first": first, "again": again, "table_ok": table_ok}))
"""


def test_units_are_compiled_once_per_process():
    r = run_python(ONCE)
    assert r["made"], "no unit was compiled"
    twice = {k: n for k, n in r["made"].items() if n != 1}
    assert not twice, f"compiled more than once: {twice}"
    for name, (addr, _) in r["first"].items():
        assert r["again"][name][0] == addr, f"{name} moved"
        assert r["again"][name][1] == r["first"][name][1], f"{name} was replaced"
    assert set(r["made"]) == set(r["again"])
    assert r["table_ok"]


SLOTS = r"""
import json
{first_import}
from numslab.engine import native
print(json.dumps([[u.name, u.slot, u.nargs] for u in native.UNITS]))
"""


def test_unit_slots_are_assigned_in_one_fixed_order():
    here = [[u.name, u.slot, u.nargs] for u in UNITS]
    imports = ("import numslab", "from numslab.drivers import handles",
               "from numslab.engine import stats, native")
    procs = [start_python(SLOTS.format(first_import=i)) for i in imports]
    results = [finish(p) for p in procs]
    for imp, r in zip(imports, results):
        assert r == here, f"another unit table after {imp!r}"
    assert [s for _, s, _ in here] == list(range(len(here)))
    assert len({n for n, _, _ in here}) == len(here)


def test_a_unit_cannot_be_added_once_the_table_is_fixed():
    native.unit_table_hash()                   # fixed from here on (it is part of every key)
    n = len(UNITS)
    with pytest.raises(RuntimeError, match="after the table was fixed"):
        native.unit(lambda st, a: a)
    assert len(UNITS) == n


def test_units_are_callable_from_python_and_from_jitted_code(sa):
    c = sa.kmem_cache_create("c", 64)
    objs = [c.alloc() for _ in range(5)]
    assert stats.live_objects(sa._st, c.id) == 5 == c.live_objects
    with pytest.raises(TypeError, match="takes 2 arguments"):
        stats.live_objects(sa._st)
    assert _live_from_jit(sa._st, c.id) == 5
    for a in objs:
        c.free(a)
    assert _live_from_jit(sa._st, c.id) == 0


@jit(cache=False)
def _live_from_jit(st, cid):
    return stats.live_objects(state_at(st), cid)


@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaWarning")
def test_a_unit_call_from_jitted_code_needs_a_state():
    @jit(cache=False)
    def bad(st, cid):
        return stats.live_objects(st, cid)      # an int, not a State

    with pytest.raises(numba.core.errors.TypingError):
        bad(1, 2)


# ---- the cache: keyed on the ABI and on the unit table -------------------------------------------
def test_net_s_kernels_are_keyed_on_net_s_sources(tmp_path):
    """net's kernels are compiled with the engine's cache, keyed on the ABI, which leaves net
    out (below), and one calls another module's (``traffic`` and ``pipeline`` call
    ``headers._memcpy``): an edit of net left them loading stale code. Their key has net's
    sources too now."""
    import shutil
    from numslab.net import capture, headers, pipeline, traffic
    src = tmp_path / "net"
    shutil.copytree(Path(capture.__file__).parent, src,
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert native.source_hash(src) == capture.NET_HASH
    (src / "headers.py").write_text((src / "headers.py").read_text() + "\n# an edit\n")
    assert native.source_hash(src) != capture.NET_HASH
    kernels = [f for m in (capture, headers, pipeline, traffic) for f in vars(m).values()
               if getattr(f, "_cache", None).__class__ is EngineCache
               and f.py_func.__module__ == m.__name__]
    assert len(kernels) >= 10
    for f in kernels:
        key = f._cache._index_key((), f.targetctx.codegen())
        assert key[-1] == capture.NET_HASH, f.py_func.__qualname__


COMPILE_UNIT = r"""
import json, re
from numba import types
from numslab.engine import native, pages
from numslab.drivers import calls
{patch}
u = pages.alloc_block
u.compile()
calls._call1.compile((types.int64,) * 3)      # a cached function that is not a unit
out = {{"hits": u.cache_hits, "jit_hits": sum(calls._call1._cache_hits.values()),
       "abi": native.ABI, "callee_compiled": pages.alloc_pages.address != 0}}
if not u.cache_hits:
    ir = u.inspect_llvm()
    out["table_refs"] = "@" + native.UNIT_SYMBOL in ir
    out["defines"] = re.findall(r'^define [^@]*@"?([\w.$]+)', ir, re.M)
    slot = pages.alloc_pages.slot
    out["loads_slot"] = any(int(i) in (slot, 8 * slot) for i in re.findall(
        r"@numslab_units, i64 (\d+)\)", ir))
print(json.dumps(out))
"""


def test_the_engine_cache_is_keyed_on_the_abi_and_the_unit_table(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first = run_python(COMPILE_UNIT.format(patch=""), env)
    assert first["hits"] == 0 and first["jit_hits"] == 0       # a fresh cache: compiled
    # compiling a unit compiles none of the units it calls: it reaches them by table slot
    assert not first["callee_compiled"]
    assert first["table_refs"] and first["loads_slot"]
    # (and the out-of-line guard of unit calls, native._guarded_call, one per arity, with
    # the park of the fast paths it makes on a first call)
    assert all("alloc_block" in name or name.startswith("numslab_guarded_call_") or
               name in ("numslab_park_rows", "numslab_unpark_rows")
               for name in first["defines"]), first["defines"]
    assert "numslab_park_rows" in first["defines"]
    procs = {
        "same": start_python(COMPILE_UNIT.format(patch=""), env),
        "abi": start_python(COMPILE_UNIT.format(
            patch="native.ABI = 'f' * 16    # another numslab's sources"), env),
        "table": start_python(COMPILE_UNIT.format(
            patch="native._table_hash[:] = ['0' * 16]   # another unit table"), env),
    }
    r = {k: finish(p) for k, p in procs.items()}
    assert r["same"]["hits"] == 1 and r["same"]["jit_hits"] == 1   # loaded
    assert r["same"]["abi"] == first["abi"]
    assert r["abi"]["hits"] == 0 and r["abi"]["jit_hits"] == 0      # compiled again
    assert r["table"]["hits"] == 0 and r["table"]["jit_hits"] == 0


TOGETHER = r"""
import json, sys
import numba
from numslab.engine import sheaves
from numslab.lab import kernels
numba.njit(lambda x: x + 1)(1)          # (Numba's own first compile, before the race)
print("ready", flush=True)
sys.stdin.readline()                     # released with the other process
u = sheaves.kmalloc_internal             # (about 2 s to compile: the two surely meet)
u.compile()
sig = "int64(int8[::1], int32[::1], int32[::1], int64[::1], int64[::1], int64)"
kernels.peak_live_bytes.compile(sig)     # (the first to finish the unit takes it first)
print(json.dumps([u.cache_hits, sum(kernels.peak_live_bytes.stats.cache_hits.values())]))
"""


def test_two_processes_on_an_empty_cache_compile_a_function_once(tmp_path):
    """A unit and a lab kernel: the second process waits on the lock file for the first's
    compile, then loads what it cached (each compiled both before)."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", TOGETHER], cwd=ROOT,
                              env={**os.environ, **env}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        assert p.stdout.readline() == "ready\n", p.stderr.read()
    for p in procs:                      # both at once: neither finds them cached
        p.stdin.write("go\n")
        p.stdin.flush()
    unit, lab = zip(*(finish(p) for p in procs))
    assert sorted(unit) == [0, 1] and sorted(lab) == [0, 1]  # one compiled, one loaded
    assert sorted(f.name for f in (tmp_path / "cache").rglob("*.lock")) == [
        "numslab.engine.sheaves.kmalloc_internal.lock", "numslab.lab.kernels.peak_live_bytes.lock"]


def _plain(x):
    return x + 1


def test_engine_cache_index_key_ends_with_abi_and_table_hash(monkeypatch):
    d = jit(_plain)
    assert isinstance(d, EngineDispatcher) and isinstance(d._cache, EngineCache)
    codegen = d.targetctx.codegen()
    sig = (numba.types.int64,)
    key = d._cache._index_key(sig, codegen)
    assert key[-2:] == (ABI, native.unit_table_hash())
    monkeypatch.setattr(native, "ABI", "0123456789abcdef")
    other = d._cache._index_key(sig, codegen)
    assert other[-2] == "0123456789abcdef" and other[:-2] == key[:-2] and other != key


def _hash_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "pkg"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return copy


def _abi_changes_with(monkeypatch, copy: Path, rel: str) -> bool:
    monkeypatch.setattr(native, "_PACKAGE", copy)
    before = native._source_hash()
    f = copy / rel
    text = f.read_bytes()
    f.write_bytes(text + b"\nCHANGED = 1\n")
    try:
        return native._source_hash() != before
    finally:
        f.write_bytes(text)


def test_the_abi_is_the_real_hash_of_the_sources():
    assert re.fullmatch(r"[0-9a-f]{16}", ABI)
    assert native._source_hash() == ABI


def test_the_abi_changes_with_every_engine_and_driver_source(tmp_path, monkeypatch):
    copy = _hash_copy(tmp_path)
    files = [f"engine/{p.name}" for p in (PACKAGE / "engine").glob("*.py")] + \
            [f"drivers/{p.name}" for p in (PACKAGE / "drivers").glob("*.py")] + \
            ["flags.py", "errors.py"]
    unchanged = [rel for rel in files if not _abi_changes_with(monkeypatch, copy, rel)]
    assert not unchanged, f"the ABI ignores {unchanged}"
    # sources compiled into no engine function do not touch it
    for rel in ("tools/cli.py", "facade/allocator.py", "net/pipeline.py"):
        assert not _abi_changes_with(monkeypatch, copy, rel), rel


def _module_level_imports(tree: ast.Module):
    """The ImportFrom nodes run when a module is imported: its top-level statements and the
    blocks of its top-level ``try``/``if`` (less ``if TYPE_CHECKING:``)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + \
                [s for h in node.handlers for s in h.body]


def _engine_dependencies() -> set[str]:
    """Every numslab source (a path under the package) that an engine or driver module
    imports when it is imported."""
    deps: set[str] = set()
    for sub in ("engine", "drivers"):
        for f in (PACKAGE / sub).glob("*.py"):
            for node in _module_level_imports(ast.parse(f.read_text())):
                if not node.level:
                    continue
                mod = ["numslab", sub][:3 - node.level] + (node.module or "").split(".")
                mod = [m for m in mod if m]
                for parts in [mod + [a.name] for a in node.names] + [mod]:
                    rel = Path(*parts[1:]) if parts[1:] else None
                    for cand in ((rel.with_suffix(".py"), rel / "__init__.py") if rel else ()):
                        if (PACKAGE / cand).is_file():
                            deps.add(str(cand))
                            break
    return deps


def test_the_abi_covers_every_module_the_engine_imports(tmp_path, monkeypatch):
    copy = _hash_copy(tmp_path)
    deps = sorted(_engine_dependencies())
    assert "flags.py" in deps and "engine/layout.py" in deps
    unchanged = [rel for rel in deps if not _abi_changes_with(monkeypatch, copy, rel)]
    assert not unchanged, f"the ABI ignores {unchanged}"


# ---- the dispatcher and its options ------------------------------------------------------------
@jit(cache=False)
def _helper(x, k):
    return x * k + 1


@jit(cache=False)
def _calls_with_constants(x):
    return _helper(x, 1) + _helper(x, 2) + _helper(x, k=3) + _helper(x, 4)


@numba.njit
def _plain_helper(x, k):
    return x * k + 1


@numba.njit
def _plain_calls_with_constants(x):
    return _plain_helper(x, 1) + _plain_helper(x, 2)


def test_engine_dispatcher_compiles_one_overload_for_constant_arguments():
    assert _calls_with_constants(3) == 4 + 7 + 10 + 13
    assert len(_helper.overloads) == 1
    (sig,) = _helper.overloads
    assert tuple(sig) == (numba.types.int64, numba.types.int64)
    # what it avoids: plain Numba compiles one function per constant
    assert _plain_calls_with_constants(3) == 11
    assert len(_plain_helper.overloads) == 2


def test_jit_options():
    d = jit(cache=False)(_plain)
    assert isinstance(d, EngineDispatcher)
    assert d.targetoptions["_nrt"] is False and d.targetoptions["boundscheck"] is False
    assert d._cache.__class__.__name__ == "NullCache"
    assert not d.targetoptions["forceinline"]
    assert jit(cache=False, inline=True)(_plain).targetoptions["forceinline"]
    assert jit(cache=False, nrt=True)(_plain).targetoptions["_nrt"] is True
    assert native.jit_rt(cache=False)(_plain).targetoptions["_nrt"] is True


def _busy(a, k):
    """Big enough that LLVM's own heuristics do not inline it three times."""
    s = 0
    for i in range(a.shape[0]):
        v = a[i]
        if v % 3 == 0:
            s += v * k
        elif v % 5 == 1:
            s -= v // (k + 1)
        elif v % 7 == 2:
            s ^= v << 3
        else:
            s += (v * 2654435761) >> 7
        if s > 1000000:
            s = s % 999983
    for i in range(a.shape[0]):
        a[i] = (a[i] * 31 + s) % 1000003
    for i in range(a.shape[0] - 1, 0, -1):
        a[i] ^= a[i - 1]
    return s


_inlined = jit(cache=False, inline=True)(_busy)
_called = jit(cache=False)(_busy)


@jit(cache=False)
def _inline_user(a):
    return _inlined(a, 3) + _inlined(a, 5) + _inlined(a, 7) + _called(a, 3) + \
        _called(a, 5) + _called(a, 7)


def _calls_to(ir: str, d) -> int:
    name = d.overloads[d.signatures[0]].fndesc.llvm_func_name
    return sum(1 for line in ir.splitlines() if "call " in line and name in line)


def test_inline_functions_are_inlined_into_their_callers():
    a = np.arange(10, dtype=np.int64)
    b = a.copy()
    expect = sum(_busy(b, k) for k in (3, 5, 7)) + sum(_busy(b, k) for k in (3, 5, 7))
    assert _inline_user(a) == expect and np.array_equal(a, b)
    ir = _inline_user.inspect_llvm(_inline_user.signatures[0])
    assert _calls_to(ir, _inlined) == 0
    assert _calls_to(ir, _called) == 3          # without inline=True: three calls


# ---- Words and State ----------------------------------------------------------------------------
@jit(cache=False)
def _load_store(addr, i, v):
    w = words_at(addr)
    old = w[i]
    w[i] = v
    return old


@jit(cache=False)
def _store_bool(addr, i, b):
    words_at(addr)[i] = b


@jit(cache=False)
def _addresses(addr, i):
    w = words_at(addr)
    s = shift(w, i)
    return address(w), address(s), s[0], shift(s, -i)[1], s[-1]


@jit(cache=False)
def _zero(addr, off, n):
    zero_bytes(words_at(addr), off, n)


@jit(cache=False)
def _copy(daddr, doff, saddr, soff, n):
    copy_bytes(words_at(daddr), doff, words_at(saddr), soff, n)


@jit(cache=False)
def _bytes(addr, n, v):
    b = byte_array(words_at(addr), n)
    s = 0
    for i in range(b.shape[0]):
        s += b[i]
    b[n - 1] = v
    return s, b.shape[0], b.ctypes.data


def test_words_load_and_store_int64_words_at_an_address():
    buf = np.arange(8, dtype=np.int64) * 11
    p = buf.ctypes.data
    assert _load_store(p, 3, -7) == 33 and buf[3] == -7
    assert _load_store(p, np.int32(7), 1 << 62) == 77 and buf[7] == 1 << 62
    _store_bool(p, 0, True)
    _store_bool(p, 1, False)
    assert buf[:2].tolist() == [1, 0]
    # a raw pointer: index -1 is the word before it, not the last one
    assert _load_store(p + 8, -1, 5) == 1 and buf[0] == 5


def test_address_and_shift():
    buf = np.arange(10, dtype=np.int64)
    p = buf.ctypes.data
    base, shifted, first, back, before = _addresses(p, 4)
    assert (base, shifted) == (p, p + 32)
    assert (first, back, before) == (4, 1, 3)


def test_zero_bytes_clears_exactly_the_bytes_asked():
    buf = np.full(32, 0xAB, np.uint8)
    _zero(buf.ctypes.data, 3, 10)
    expect = np.full(32, 0xAB, np.uint8)
    expect[3:13] = 0
    assert np.array_equal(buf, expect)
    _zero(buf.ctypes.data, 0, 0)
    assert np.array_equal(buf, expect)


@pytest.mark.parametrize("doff, soff, n", [(0, 40, 16), (4, 0, 16), (0, 4, 16), (7, 7, 0),
                                           (33, 1, 30)])
def test_copy_bytes_is_a_memmove(doff, soff, n):
    buf = np.arange(64, dtype=np.uint8)
    expect = buf.copy()
    expect[doff:doff + n] = expect[soff:soff + n].copy()
    _copy(buf.ctypes.data, doff, buf.ctypes.data, soff, n)
    assert np.array_equal(buf, expect)
    other = np.zeros(64, np.uint8)                    # between two buffers
    _copy(other.ctypes.data, doff, buf.ctypes.data, soff, n)
    assert np.array_equal(other[doff:doff + n], buf[soff:soff + n])
    assert not other[:doff].any() and not other[doff + n:].any()


def test_byte_array_is_a_view_of_the_bytes():
    buf = np.arange(24, dtype=np.uint8)
    total, n, data = _bytes(buf.ctypes.data, 24, 200)
    assert (total, n, data) == (sum(range(24)), 24, buf.ctypes.data)
    assert buf[23] == 200                    # written through


@jit(cache=False)
def _state_scalars(st_addr):
    st = state_at(st_addr)
    return (address(st), st.npages, st.nnodes, st.ncpus, st.pages_per_node, st.max_caches,
            address(st.mem), st.mem_size, address(st.g), address(st.ca), st.g[G_NCPUS])


@jit(cache=False)
def _state_writes(st_addr, v):
    st = state_at(st_addr)
    sc = st.scratch
    sc[0] = v
    before = sc[1]
    words_at(address(sc))[1] = before + v       # an untyped alias of the same word
    b = byte_array(st.mem, st.mem_size)
    b[4096 + 5] = 77                            # the arena, through its bytes
    mem = st.mem
    return sc[1], mem[(4096 + 5) >> 3]


def test_state_attributes_read_the_state_buffer():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=3, nr_nodes=1, memory="4M", max_caches=20)
    r = _state_scalars(sa._st)
    assert r == (sa._st, sa.nr_pages, 1, 3, sa.pages_per_node, 20, sa.memory.ctypes.data,
                 sa.memory.size, view(sa._buf, F_G).ctypes.data,
                 view(sa._buf, F_CA).ctypes.data, 3)


def test_state_stores_are_seen_through_aliases_and_by_python():
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="4M")
    sc = view(sa._buf, F_SCRATCH)
    sc[1] = 10
    last, word = _state_writes(sa._st, 5)
    assert sc[0] == 5 and sc[1] == 15 and last == 15
    assert sa.memory[4096 + 5] == 77
    assert word == int(sa.memory[4096:4096 + 8].view(np.int64)[0])


@jit(cache=False)
def _row_fields(st_addr, pfn, v):
    st = state_at(st_addr)
    before = (st.pg_flags[pfn], st.sl_inuse[pfn], st.sl_cache[pfn])
    st.sl_inuse[pfn] = v                        # a column of the row table
    st.sl_cache[pfn] = v + 1                    # a field of its own
    return before, address(st.sl_cache)


def test_row_table_columns_are_one_cache_line_per_frame_for_kernels_and_python():
    sa = numslab.SlabAllocator(memory="4M")
    c = sa.kmem_cache_create("rows", 256)
    a = sa.kmem_cache_alloc(c)
    pfn = a >> 12
    buf = sa._buf
    table = int(buf[H_FIELDS + 2 * F_PG_FLAGS])
    assert (buf.ctypes.data + table * 8) % 64 == 0          # on a cache line
    row = buf[table + pfn * ROW:table + (pfn + 1) * ROW]     # the slab's metadata, one line
    for f, col in ROW_COLS.items():
        v = view(buf, f)
        assert v.shape == (sa.nr_pages,) and v.strides == (ROW * 8,)
        assert row[col] == v[pfn], FIELDS[f][0]
    assert row[ROW_COLS[F_PG_FLAGS]] & PG_SLAB and row[ROW_COLS[F_PG_HEAD]] == pfn
    assert F_SL_CACHE not in ROW_COLS and sa.state.sl_cache[pfn] == c.id
    inuse = int(row[ROW_COLS[F_SL_INUSE]])
    assert inuse >= 1
    seen, cache_at = _row_fields(sa._st, pfn, 12345)
    assert seen == (sa.state.pg_flags[pfn], inuse, c.id)
    assert sa.state.sl_inuse[pfn] == 12345 == row[ROW_COLS[F_SL_INUSE]]    # seen by Python
    assert sa.state.sl_cache[pfn] == 12346 and cache_at == view(buf, F_SL_CACHE).ctypes.data
    sa.state.sl_inuse[pfn], sa.state.sl_cache[pfn] = inuse, c.id
    sa.kmem_cache_free(c, a)
    sa.check_invariants()


def _address_of_column(st_addr):
    return address(state_at(st_addr).sl_inuse)


def _shift_of_column(st_addr):
    return shift(state_at(st_addr).pg_next, 1)[0]


def _bytes_of_column(st_addr):
    return byte_array(state_at(st_addr).sl_freelist, 8)[0]


def _zero_column(st_addr):
    zero_bytes(state_at(st_addr).pg_flags, 0, 8)
    return 0


def _fill_column(st_addr):
    fill_bytes(state_at(st_addr).pg_order, 0, 255, 8)
    return 0


def _copy_from_column(st_addr):
    st = state_at(st_addr)
    copy_bytes(st.scratch, 0, st.sl_inuse, 0, 8)
    return 0


def _copy_to_column(st_addr):
    st = state_at(st_addr)
    copy_bytes(st.pg_prev, 0, st.scratch, 0, 8)
    return 0


@pytest.mark.parametrize("use", [_address_of_column, _shift_of_column, _bytes_of_column,
                                 _zero_column, _fill_column, _copy_from_column,
                                 _copy_to_column])
def test_a_column_of_the_row_table_has_no_address(use):
    sa = numslab.SlabAllocator(memory="4M")
    with pytest.raises(numba.TypingError):
        jit(cache=False, helper=False)(use)(sa._st)


def test_units_called_from_python_keep_the_gil():
    # ctypes' CFUNCTYPE releases the GIL around a call: another thread could then enter the
    # same allocator's state; a unit's Python-side caller must hold it (PYFUNCTYPE)
    import ctypes as _ct
    from numslab.engine import stats
    fn = stats.live_objects.compile()
    assert fn._flags_ & _ct._FUNCFLAG_PYTHONAPI


def test_a_cfunc_that_reaches_the_engine_is_refused_as_it_compiles():
    """A ``@cfunc`` has a C entry that ctypes and cffi call with the GIL released: four
    threads calling one that allocates and frees through ``numslab.jit`` corrupted the
    allocator (``validate``: "inuse + free objects != objects", objects live that nobody
    held, double frees). It is refused as nogil and parallel callers are, directly or
    through a helper; a cfunc that only reads the arena (no unit) still compiles."""
    from numba import cfunc, types
    from conftest import assert_unchanged, snapshot
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M")
    sa.kmem_cache_create("cf", 64)
    snap = snapshot(sa)
    handle = numba.typeof(sa.handle)
    sig = types.int64(handle, types.int64)

    def direct(h, cid):
        return numslab.jit.kmem_cache_alloc(h, cid)
    helper = numba.njit(cache=False)(direct)

    def outer(h, cid):
        return helper(h, cid)
    for f in (direct, outer):
        with pytest.raises(numslab.ConcurrentUseError, match="called from a @cfunc"):
            cfunc(sig)(f)
    assert_unchanged(sa, snap)
    reader = cfunc(sig)(lambda h, cid: numslab.jit.arena(h)[cid])
    import ctypes
    call = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)(reader.address)
    assert call(int(sa.handle), 0) == 0


def test_an_overload_or_register_jitable_helper_is_not_taken_for_a_cfunc():
    """Numba compiles @overload and register_jitable implementations without a CPython
    wrapper, as a @cfunc: one that calls numslab.jit, called from a GIL-holding function,
    was refused "called from a @cfunc". It runs now; a nogil caller is still refused, and
    named as such."""
    from numba.extending import register_jitable
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M")
    c = sa.kmem_cache_create("rj", 64)

    @register_jitable
    def take(h, cid):
        return numslab.jit.kmem_cache_alloc(h, cid)

    def outer(h, cid):
        return take(h, cid)
    a = numba.njit(cache=False)(outer)(sa.handle, c.id)
    assert a and c.live_addresses().tolist() == [a]
    with pytest.raises(numslab.ConcurrentUseError, match=r"called from a nogil=True function "
                                                         r"\(.*take at test_native.py:\d+\):"):
        numba.njit(cache=False, nogil=True)(outer)(sa.handle, c.id)     # (and where: it
                                                                        # named no function)
    c.free(a)
    sa.validate()


def test_numslab_runs_under_numba_disable_jit():
    # NUMBA_DISABLE_JIT made every engine function a plain Python function: in a user's
    # @njit function run as Python, numslab.jit raised NotImplementedError ("<intrinsic
    # _cache_arg> is not usable in pure-python"), and on a cold cache the first unit failed
    # to compile ("'function' object has no attribute 'get_call_template'": Numba's own
    # overloads are made through numba.jit) and the process exited
    out = run_python("""if True:
        import json, numba, numpy as np, numslab
        sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
        c = sa.kmem_cache_create("c", 64)

        @numba.njit
        def f(h, cid):
            out = np.empty(4, np.int64)
            numslab.jit.kmem_cache_alloc_bulk(h, cid, 4, out)
            numslab.jit.kmem_cache_free_bulk(h, cid, 4, out)
            return numslab.jit.kmem_cache_alloc(h, cid)

        a = f(sa.handle, c.id)
        try:
            numslab.jit.kmem_cache_free(sa.handle, c.id, a + 8)
            refused = False
        except numslab.BadAddressError:
            refused = True
        numslab.jit.kmem_cache_free(sa.handle, c.id, a)
        sa.validate()
        print(json.dumps({"plain": not hasattr(f, "py_func"), "refused": refused,
                          "live": len(c)}))
    """, env={"NUMBA_DISABLE_JIT": "1"})
    assert out == {"plain": True, "refused": True, "live": 0}
