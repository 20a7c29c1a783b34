"""First contact and compile time (issue 11), shared by ``numslab bench --compile`` and asv.

The whole public API in one go, users' own simulations on numslab and on free-index stacks, cold
starts and a user's compile in fresh interpreters, and the LLVM IR checks of users' loops (no
reference counts moved, no engine slow path embedded)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numba as nb
import numpy as np

import numslab
from numslab import jit as sjit
from numslab.flags import (GFP_KERNEL, SLAB_ARRAY_ALLOC_FULL_COUNT, SLAB_ARRAY_ALLOC_LOCAL,
                           SLAB_ARRAY_ALLOC_NEW, SLAB_ARRAY_ALLOC_PARTIAL, SLAB_HWCACHE_ALIGN)
from numslab.tools.bench import OBJECT_SIZE, new_bench_cache


# ---- the whole public API, and a user's own function ------------------
#: Records of the typed cache of :func:`exercise_public_api`.
API_RECORD = np.dtype([("key", np.int64), ("value", np.float64)])


def _api_py_ctor(memory: np.ndarray, addr: int) -> None:
    """A Python constructor (for :func:`exercise_public_api`)."""
    memory[addr] = 0x5A


@nb.njit(cache=True)
def _api_jit_ctor(memory, addr):
    """A jitted constructor (for :func:`exercise_public_api`)."""
    memory[addr] = 0xA5


@nb.njit(cache=True)
def jit_api_round(h, cid, out):
    """Every ``numslab.jit`` function once, on cache ``cid`` (no constructor) and kmalloc.

    Everything allocated is freed. Returns the number of checks that held (7)."""
    ok = 0
    a = sjit.kmem_cache_alloc(h, cid)
    b = sjit.kmem_cache_alloc_node(h, cid, node=-1)
    mem = sjit.arena(h)
    mem[a] = 1
    if sjit.is_live(h, cid, a) and sjit.is_live(h, cid, b) and mem[a] == 1:
        ok += 1
    sjit.kmem_cache_free(h, cid, a)
    sjit.kmem_cache_free(h, cid, b)
    if not sjit.is_live(h, cid, a):
        ok += 1
    n = out.shape[0]
    if sjit.kmem_cache_alloc_bulk(h, cid, n, out) == n:
        ok += 1
    sjit.kmem_cache_free_bulk(h, cid, n, out)
    got = sjit.kmem_cache_alloc_array(h, cid, n, out, 0)
    if got > 0:
        ok += 1
    sjit.kmem_cache_free_array(h, cid, got, out)
    small = sjit.kmalloc(h, 100)
    large = sjit.kmalloc(h, 10000)
    if small != 0 and large != 0 and sjit.kmalloc(h, 0) == 16:
        ok += 1
    sjit.kfree(h, small)
    sjit.kfree(h, large)
    for i in range(n):
        out[i] = sjit.kmalloc(h, 8 << (i % 8))
    if sjit.is_live(h, -1, out[0]):
        ok += 1
    sjit.kfree_bulk(h, n, out)
    if not sjit.is_live(h, -1, out[0]):
        ok += 1
    return ok


def exercise_public_api() -> numslab.SlabAllocator:
    """Call every public operation once, and every ``numslab.jit`` function from @njit.

    The module-level API, every ``SlabAllocator`` and ``KmemCache`` method (caches plain, with
    sheaves, typed, with a Python and a jitted constructor; single, kmalloc, bulk, every array
    mode, the prefilled-sheaf API, records and store, pages, shrink, validate, slabinfo and the
    other reports) and every ``numslab.jit`` function from inside one @njit function. In a fresh
    interpreter with an empty Numba cache this is what compiling the whole public API costs (asv
    ``timeraw_cold_public_api``).

    Returns the allocator, every cache but kmalloc's destroyed, nothing live."""
    a = numslab.kmalloc(64)                              # the module-level API
    z = numslab.kzalloc(24)
    assert numslab.ksize(z) >= 24
    numslab.kfree(a)
    numslab.kfree(z)
    c = numslab.kmem_cache_create("api_module_level", 32)
    numslab.kmem_cache_free(c, numslab.kmem_cache_alloc(c))
    numslab.kmem_cache_free(c, numslab.kmem_cache_alloc_node(c, GFP_KERNEL, 0))
    numslab.kmem_cache_shrink(c)
    numslab.kmem_cache_destroy(c)
    numslab.free_pages(numslab.alloc_pages(0), 0)
    numslab.slabinfo()
    numslab.buddyinfo()
    numslab.validate()

    sa = numslab.SlabAllocator(nr_cpus=2, nr_nodes=2, memory="16M")
    sa.populate()
    sa.set_cpu(0)
    sa.cpu_to_node(1)
    plain = sa.kmem_cache_create("api_plain", 200, flags=SLAB_HWCACHE_ALIGN)
    shv = sa.kmem_cache_create("api_sheaves", 64, sheaf_capacity=16)
    rec = sa.kmem_cache_create("api_records", 0, dtype=API_RECORD)
    pyc = sa.kmem_cache_create("api_py_ctor", 48, ctor=_api_py_ctor)
    jtc = sa.kmem_cache_create("api_jit_ctor", 48, ctor=_api_jit_ctor)
    made = [plain, shv, rec, pyc, jtc]
    assert sa.find_cache("api_plain") is plain and set(made) <= set(sa.caches)
    # single objects, kmalloc
    for c in made:
        sa.kmem_cache_free(c, sa.kmem_cache_alloc(c))
        sa.kmem_cache_free(c, sa.kmem_cache_alloc_node(c, GFP_KERNEL, 1), cpu=1)
    small, large, zero = sa.kmalloc(100), sa.kmalloc(20000), sa.kzalloc(10)
    assert sa.ksize(small) == 128 and sa.ksize(large) >= 20000 and sa.ksize(zero) == 16
    for x in (small, large, zero):
        sa.kfree(x)
    # bulk and the array modes
    out = np.zeros(40, np.int64)
    for c in (plain, shv):
        n = sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, len(out), out)
        sa.kmem_cache_free_bulk(c, n, out)
        for flags in (0, SLAB_ARRAY_ALLOC_LOCAL, SLAB_ARRAY_ALLOC_PARTIAL, SLAB_ARRAY_ALLOC_NEW,
                      SLAB_ARRAY_ALLOC_LOCAL | SLAB_ARRAY_ALLOC_FULL_COUNT):
            n = sa.kmem_cache_alloc_array(c, GFP_KERNEL, len(out), out, flags)
            sa.kmem_cache_free_array(c, n, out)
    for i in range(len(out)):
        out[i] = sa.kmalloc(8 << (i % 11))
    sa.kfree_bulk(len(out), out)
    # the KmemCache conveniences, records and store
    plain.free(plain.alloc())
    plain.free_bulk(plain.alloc_bulk(20))
    addrs = rec.alloc_bulk(8)
    vals = np.zeros(8, API_RECORD)
    vals["key"] = np.arange(8)
    rec.store(addrs, vals)
    rec.store(addrs[:1], vals[3])
    assert rec.records(addrs)["key"][0] == 3 and rec.view[int(addrs[1])]["key"] == 1
    rec.free_bulk(addrs)
    # prefilled sheaves
    sheaf = sa.kmem_cache_prefill_sheaf(shv, GFP_KERNEL, 8)
    assert sa.kmem_cache_sheaf_size(sheaf) >= 8 and sa.sheaf_capacity_of(sheaf) >= 8
    obj = sa.kmem_cache_alloc_from_sheaf(shv, GFP_KERNEL, sheaf)
    sheaf = sa.kmem_cache_refill_sheaf(shv, GFP_KERNEL, sheaf, 40)     # grows: oversize
    sa.kmem_cache_return_sheaf(shv, GFP_KERNEL, sheaf)
    sa.kmem_cache_free(shv, obj)
    # numslab.jit, from inside one @njit function
    h = sa.handle
    for c in (plain, shv):
        assert jit_api_round(h, c.id, out[:16]) == 7
    # pages and the reports
    p = sa.alloc_pages(2)
    sa.free_pages(p, 2)
    sa.buddyinfo()
    sa.zoneinfo()
    sa.free_pages_count()
    sa.pcp_pages_count()
    sa.slabinfo()
    for c in made:
        repr(c)
        c.sysfs()
        c.stats
        c.stats_per_cpu()
        c.partial_list(0)
        c.total_objects_per_node()
        c.slabs_cpu_partial
        c.remote_node_defrag_ratio = c.remote_node_defrag_ratio
        assert c.live_objects == 0
        c.shrink()
        sa.kmem_cache_shrink(c)
        sa.validate(c)
    sa.drain_all_pages()
    sa.check_invariants()
    _exercise_later_api(sa, plain, rec)
    for c in made:
        sa.kmem_cache_destroy(c)
    sa.validate()
    return sa


@nb.njit
def _api_jit_compact(h, cid, old, new):
    return sjit.kmem_cache_compact(h, cid, 100, old, new)


def _exercise_later_api(sa: numslab.SlabAllocator, plain: numslab.KmemCache,
                        rec: numslab.KmemCache) -> None:
    """The later operations once each: slab_debug, krealloc/kfree_rcu, lookups, defragmentation.

    The operations added with slab_debug, krealloc/kfree_rcu, the lookups, and the remedies against
    fragmentation; part of :func:`exercise_public_api`."""
    a = sa.kmalloc(40)
    a = sa.krealloc(a, 300)
    sa.kfree_rcu(a)
    sa.synchronize_rcu()
    sa.rcu_barrier()
    sa.kvfree_rcu_barrier()                             # the rcu_free sheaves' hand-over
    objs = plain.alloc_bulk(3 * plain.objs_per_slab)
    assert sa.find(int(objs[0]))["kind"] == "object" and len(plain.live_addresses()) == len(plain)
    sa.isolated_slabs()
    plain.free_bulk(objs[::2])
    old, new = plain.compact(100)                       # movable objects
    keep = numslab.remap(objs[1::2], old, new)
    sa.kmem_cache_setup_mobility(plain, None, lambda o, n, private: None)
    sa.kmem_cache_compact(plain)
    out = np.zeros(len(keep), np.int64)
    _api_jit_compact(sa.handle, plain.id, out, out.copy())
    plain.free_bulk(plain.live_addresses())
    srt = sa.kmem_cache_create("api_sorted", 96, partial_order="sorted")
    ev = sa.kmem_cache_create("api_evict", 96)
    for c in (srt, ev):
        held = c.alloc_bulk(2 * c.objs_per_slab)
        c.free_bulk(held[::3])
    sa.kmem_cache_setup_defrag(ev, lambda objs: None, lambda objs, private: None)
    sa.kmem_cache_defrag(ev, 90)
    sa.defrag_stats(ev)
    for c in (srt, ev):
        c.free_bulk(c.live_addresses())
        sa.kmem_cache_destroy(c)
    sa.release_memory()
    dbg = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="FZPU,api_debug")
    d = dbg.kmem_cache_create("api_debug", 64)
    x = dbg.kmem_cache_alloc(d)
    dbg.kmem_cache_free(d, x)
    assert dbg.kmem_cache_validate(d) == 0 and dbg.slab_reports() == []
    dbg.kmem_cache_destroy(d)
    rec.free_bulk(rec.alloc_bulk(4))


# A user's small simulation, in three variants (single objects, bulk, kmalloc), each written
# on numslab.jit and on free-index stacks: the subjects of the compile-time benchmark
# (asv ``timeraw_user_compile``). They are plain functions: the benchmark compiles them with
# ``numba.njit(cache=False)`` in a fresh interpreter, so they never come from a cache. The
# numslab variants take the allocator's memory as int64 words (``sa.memory.view(np.int64)``)
# rather than view ``numslab.jit.arena(h)`` inside: Numba lowers ``ndarray.view`` by compiling
# a helper of its own, ~0.4 s of the first compile in a process, which is Numba's, not
# numslab's.
def user_sim_single(h, cid, mem, live, rounds):
    """Keep ``len(live)`` objects; each step replaces one and reads its neighbour's word.

    ``mem``: the allocator's memory as int64 words."""
    n = live.shape[0]
    for k in range(n):
        live[k] = sjit.kmem_cache_alloc(h, cid)
        mem[live[k] >> 3] = k
    acc = 0
    for r in range(rounds):
        j = (r * 7919) % n
        sjit.kmem_cache_free(h, cid, live[j])
        obj = sjit.kmem_cache_alloc(h, cid)
        mem[obj >> 3] = r
        live[j] = obj
        acc += mem[live[(j + 1) % n] >> 3]
    for k in range(n):
        sjit.kmem_cache_free(h, cid, live[k])
    return acc


def user_sim_single_stack(stack, top, records, live, rounds):
    """:func:`user_sim_single` on a free-index stack of ``records`` rows."""
    t = top[0]
    n = live.shape[0]
    for k in range(n):
        t -= 1
        live[k] = stack[t]
        records[live[k], 0] = k
    acc = 0
    for r in range(rounds):
        j = (r * 7919) % n
        stack[t] = live[j]                     # free, then alloc: LIFO, the same index
        obj = stack[t]
        records[obj, 0] = r
        live[j] = obj
        acc += records[live[(j + 1) % n], 0]
    for k in range(n):
        stack[t] = live[k]
        t += 1
    top[0] = t
    return acc


def user_sim_bulk(h, cid, mem, batch, rounds):
    """Each step allocates a batch, writes and reads a word of every object, frees it."""
    n = batch.shape[0]
    acc = 0
    for r in range(rounds):
        got = sjit.kmem_cache_alloc_bulk(h, cid, n, batch)
        for i in range(got):
            mem[batch[i] >> 3] = r + i
        for i in range(got):
            acc += mem[batch[i] >> 3]
        sjit.kmem_cache_free_bulk(h, cid, got, batch)
    return acc


def user_sim_bulk_stack(stack, top, records, batch, rounds):
    """:func:`user_sim_bulk` on a free-index stack of ``records`` rows."""
    t = top[0]
    n = batch.shape[0]
    acc = 0
    for r in range(rounds):
        got = 0
        if t >= n:
            t -= n
            for i in range(n):
                batch[i] = stack[t + i]
            got = n
        for i in range(got):
            records[batch[i], 0] = r + i
        for i in range(got):
            acc += records[batch[i], 0]
        for i in range(got):
            stack[t + i] = batch[i]
        t += got
    top[0] = t
    return acc


def user_sim_kmalloc(h, mem, sizes, addrs, rounds):
    """Each step kmallocs one object of every size, writes a word, reads it back, kfrees."""
    acc = 0
    for r in range(rounds):
        for i in range(sizes.shape[0]):
            a = sjit.kmalloc(h, sizes[i])
            mem[a >> 3] = r + i
            addrs[i] = a
        for i in range(sizes.shape[0]):
            acc += mem[addrs[i] >> 3]
            sjit.kfree(h, addrs[i])
    return acc


def user_sim_kmalloc_stack(stacks, tops, records, sizes, addrs, rounds):
    """:func:`user_sim_kmalloc` on one free-index stack per power-of-two size class.

    ``stacks[c]`` for ``8 << c`` bytes; an address is ``c * capacity + index``."""
    cap = stacks.shape[1]
    acc = 0
    for r in range(rounds):
        for i in range(sizes.shape[0]):
            c = 0
            while (8 << c) < sizes[i]:
                c += 1
            tops[c] -= 1
            idx = stacks[c, tops[c]]
            records[c, idx] = r + i
            addrs[i] = c * cap + idx
        for i in range(sizes.shape[0]):
            c, idx = addrs[i] // cap, addrs[i] % cap
            acc += records[c, idx]
            stacks[c, tops[c]] = idx
            tops[c] += 1
    return acc


USER_SIM_VARIANTS = ("single", "bulk", "kmalloc")
USER_SIM_IMPLS = ("numslab", "stack")
USER_SIMS = {("single", "numslab"): user_sim_single, ("single", "stack"): user_sim_single_stack,
             ("bulk", "numslab"): user_sim_bulk, ("bulk", "stack"): user_sim_bulk_stack,
             ("kmalloc", "numslab"): user_sim_kmalloc,
             ("kmalloc", "stack"): user_sim_kmalloc_stack}
#: Sizes of the kmalloc simulation (one of every kmalloc class up to 8 KiB).
USER_SIM_SIZES = (8, 16, 24, 60, 100, 200, 256, 500, 1000, 2048, 4000, 8192)


def user_sim(variant: str, impl: str) -> tuple[Callable, tuple]:
    """The plain Python function of a simulation and example arguments for it.

    A fresh allocator for numslab: its handle keeps it alive."""
    fn = USER_SIMS[variant, impl]
    cap = 1 << 10
    if impl == "numslab":
        sa, c = new_bench_cache(memory="16M")
        h, mem = sa.handle, sa.memory.view(np.int64)
        if variant == "single":
            return fn, (h, c.id, mem, np.zeros(64, np.int64), 1)
        if variant == "bulk":
            return fn, (h, c.id, mem, np.zeros(16, np.int64), 1)
        sizes = np.array(USER_SIM_SIZES, np.int64)
        return fn, (h, mem, sizes, np.zeros(len(sizes), np.int64), 1)
    stack, top = np.arange(cap, dtype=np.int64), np.array([cap], np.int64)
    records = np.zeros((cap, OBJECT_SIZE // 8), np.int64)
    if variant == "single":
        return fn, (stack, top, records, np.zeros(64, np.int64), 1)
    if variant == "bulk":
        return fn, (stack, top, records, np.zeros(16, np.int64), 1)
    classes = 11                                   # 8 B .. 8 KiB
    stacks = np.tile(np.arange(cap, dtype=np.int64), (classes, 1))
    sizes = np.array(USER_SIM_SIZES, np.int64)
    return fn, (stacks, np.full(classes, cap, np.int64), np.zeros((classes, cap), np.int64),
                sizes, np.zeros(len(sizes), np.int64), 1)


# ---- the LLVM IR of a loop: reference counts and slow paths ------------------------------------
_IR_DEFINE = re.compile(r'^define\b[^@]*@("?)([^"(\s]+)\1\(')
_IR_LABEL = re.compile(r'^("?)([-\w$.]+)\1:')
_IR_TARGET = re.compile(r'label %("?)([-\w$.]+)\1')
_IR_CALL = re.compile(r'\b(?:call|invoke)\b[^@%]*?([@%])("?)([-\w$.]+)\2\(')


def fresh_llvm(func: Any, *args: Any) -> tuple[str, str]:
    """``(ir, name)``: the optimised LLVM IR of ``func`` compiled afresh, and its native symbol.

    Compiled for the types of ``args`` (Numba does not show the IR of code loaded from its cache);
    the symbol is that of its native function. ``func`` is an @njit dispatcher (recompiled from its
    Python function with its options) or a plain function (compiled as ``@njit`` would)."""
    if isinstance(func, nb.core.registry.CPUDispatcher):
        py, opts = func.py_func, dict(func.targetoptions)
    else:
        py, opts = func, {"nopython": True}
    d = nb.core.registry.CPUDispatcher(py, targetoptions=opts)
    sig = tuple(nb.typeof(a) for a in args)
    d.compile(sig)
    cres = d.overloads[sig]
    return d.inspect_llvm(sig), cres.fndesc.llvm_func_name


def ir_functions(ir: str) -> dict[str, list[tuple[str, list[str]]]]:
    """The functions defined in an LLVM module's text: name -> its basic blocks.

    Each block is ``(label, instructions)`` (the entry block, when unlabelled, is
    ``"<entry>"``)."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    cur = None
    for line in ir.splitlines():
        m = _IR_DEFINE.match(line)
        if m:
            cur = m.group(2)
            out[cur] = [("<entry>", [])]
        elif cur is not None and line.startswith("}"):
            cur = None
        elif cur is not None:
            m = _IR_LABEL.match(line)
            if m:
                out[cur].append((m.group(2), []))
            elif line.strip():
                out[cur][-1][1].append(line.strip())
    return out


def loop_blocks(blocks: list[tuple[str, list[str]]]) -> set[str]:
    """Labels of the blocks that lie on a cycle of the control-flow graph (in a loop)."""
    succ = {label: [m.group(2) for ins in body for m in _IR_TARGET.finditer(ins)]
            for label, body in blocks}
    inside = set()
    for start in succ:
        seen, todo = set(), list(succ[start])
        while todo:
            b = todo.pop()
            if b == start:
                inside.add(start)
                break
            if b not in seen and b in succ:
                seen.add(b)
                todo += succ[b]
    return inside


def _callees(body: list[str]) -> list[str]:
    """Functions called by these instructions.

    ``"<indirect>"`` for a call through a pointer: the engine's units are called through the
    ``numslab_units`` table."""
    out = []
    for ins in body:
        m = _IR_CALL.search(ins)
        if m:
            out.append(m.group(3) if m.group(1) == "@" else "<indirect>")
    return out


def loop_calls(ir: str, name: str) -> list[str]:
    """Every call made in the loops of function ``name`` of module ``ir``, at any depth.

    Including the calls made, at any depth, by the module's functions called there."""
    funcs = ir_functions(ir)
    blocks = funcs[name]
    inside = loop_blocks(blocks)
    calls = [c for label, body in blocks if label in inside for c in _callees(body)]
    seen: set[str] = set()
    todo = [c for c in calls if c in funcs]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        more = [c for _, body in funcs[f] for c in _callees(body)]
        calls += more
        todo += [c for c in more if c in funcs]
    return calls


def refcount_calls_in_loops(func: Any, *args: Any) -> list[str]:
    """The Numba runtime calls (``NRT_incref``, ``NRT_decref``, ...) in the loops of ``func``.

    ``func`` compiled for ``args``: [] for a loop with no reference-count traffic."""
    ir, name = fresh_llvm(func, *args)
    return [c for c in loop_calls(ir, name) if c.startswith("NRT_")]


_ENGINE_SYMBOL = re.compile(r"7numslab6engine(\d+)")


def engine_symbol(symbol: str) -> tuple[str, str] | None:
    """``(module, function)`` of a mangled symbol of ``numslab.engine.<module>.<function>``.

    Else None."""
    m = _ENGINE_SYMBOL.search(symbol)
    if not m:
        return None
    i = m.end()
    module = symbol[i:i + int(m.group(1))]
    i += int(m.group(1))
    n = re.match(r"\d+", symbol[i:])
    if not n:
        return None
    i += n.end()
    return module, symbol[i:i + int(n.group())]


def units_defined(ir: str) -> list[str]:
    """The engine's units whose code a module holds: [] for a user's function.

    The units are its compiled-once operations and slow paths, such as ``slab_alloc_slow``,
    ``alloc_bulk_slab``, ``free_bulk_raw``, ``replace_empty_main``: a user's function must reach
    them through the ``numslab_units`` table only, so this is [] for it."""
    from numslab.engine.native import UNITS
    names = {(u.__module__.rsplit(".", 1)[1], u.__name__) for u in UNITS}
    return [f for f in ir_functions(ir) if engine_symbol(f) in names]


# ---- fresh interpreters: cold start and a user's compile (shared with asv's timeraw) -----------
#: Set-up that gives a fresh interpreter (and its children) an empty Numba cache of its own,
#: removed when it exits; it runs before anything imports Numba.
FRESH_CACHE_SETUP = """
import atexit, os, shutil, sys, tempfile
_cache = tempfile.mkdtemp(prefix="numslab-cold-")
atexit.register(shutil.rmtree, _cache, True)
os.environ["NUMBA_CACHE_DIR"] = _cache
assert "numba" not in sys.modules
"""
#: The README's main job, and the packets of its cold run (the README's command makes 200000).
MAIN_JOB = Path(__file__).resolve().parents[2] / "examples" / "packet_pipeline.py"
MAIN_JOB_PACKETS = 2000
#: The cold cases of issue 11: name -> (timed statement, set-up after FRESH_CACHE_SETUP).
#: ``numba-floor`` is the reference: what importing Numba and compiling one trivial function
#: costs any Numba package.
COLD_CASES = {
    "numba-floor": ("import numba, numpy\n"
                    "numba.njit(lambda a: a[0])(numpy.zeros(1))\n", ""),
    "first-kmalloc": ("import numslab\na = numslab.kmalloc(64)\nnumslab.kfree(a)\n", ""),
    "public-api": ("from numslab.tools import coldstart\ncoldstart.exercise_public_api()\n",
                   ""),
    "main-job": (f"subprocess.run([sys.executable, {str(MAIN_JOB)!r}, '--packets', "
                 f"'{MAIN_JOB_PACKETS}'], check=True, stdout=subprocess.DEVNULL, "
                 f"stderr=subprocess.DEVNULL)\n", "import subprocess\n"),
}
#: Issue 11's limits in seconds (the main job's is for its whole command).
COLD_LIMITS = {"first-kmalloc": 10.0, "public-api": 60.0, "main-job": 60.0}
_TIMED_CHILD = '''
from timeit import timeit, default_timer
print(repr(timeit(stmt={stmt!r}, setup={setup!r}, number=1, timer=default_timer)))
'''


def cold_case_code(case: str) -> tuple[str, str]:
    """``(statement, set-up)`` of cold case ``case`` (see :data:`COLD_CASES`).

    The set-up starts with :data:`FRESH_CACHE_SETUP`."""
    stmt, setup = COLD_CASES[case]
    return stmt, FRESH_CACHE_SETUP + setup


def time_in_fresh_interpreter(stmt: str, setup: str = "", timeout: float = 900) -> float:
    """Seconds that ``stmt`` takes once in a fresh interpreter, after ``setup`` (untimed).

    As asv's ``timeraw`` benchmarks measure."""
    code = _TIMED_CHILD.format(stmt=stmt, setup=setup)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"the timed interpreter failed:\n{p.stderr}")
    return float(p.stdout.strip().splitlines()[-1])


def cold_start(case: str) -> float:
    """Seconds of cold case ``case`` in a fresh interpreter with an empty Numba cache."""
    return time_in_fresh_interpreter(*cold_case_code(case))


_RUN_ALL_SIMS = """
import numba
from numslab.tools import coldstart
for (variant, impl) in coldstart.USER_SIMS:
    fn, args = coldstart.user_sim(variant, impl)
    numba.njit(cache=False)(fn)(*args)
"""


def warm_user_sims() -> None:
    """Run every user simulation once in a fresh interpreter sharing this process's Numba cache.

    So that numslab's kernels (its units and ``numslab.jit``'s inlined paths for these argument
    types) are in the cache."""
    subprocess.run([sys.executable, "-c", _RUN_ALL_SIMS], check=True, capture_output=True)


def user_compile_code(variant: str, impl: str) -> tuple[str, str]:
    """``(statement, set-up)`` compiling (not running) user simulation ``variant`` on ``impl``.

    Compiled with ``cache=False``. The set-up is the same for both impls: numslab imported, an
    allocator made (kernels loaded from the cache), one trivial function compiled."""
    setup = f"""
import numba
from numslab.tools import coldstart
coldstart.user_sim("single", "numslab")
numba.njit(cache=False)(lambda x: x + 1)(1)
fn, args = coldstart.user_sim({variant!r}, {impl!r})
f = numba.njit(cache=False)(fn)
sig = tuple(numba.typeof(a) for a in args)
"""
    return "f.compile(sig)\n", setup


def user_compile_table(repeat: int = 3) -> dict[str, dict[str, float]]:
    """Seconds to compile each user simulation on numslab and on stacks.

    Best of ``repeat`` fresh interpreters, numslab's cache warmed first."""
    warm_user_sims()
    best = {v: {i: float("inf") for i in USER_SIM_IMPLS} for v in USER_SIM_VARIANTS}
    for _ in range(repeat):
        for v in USER_SIM_VARIANTS:
            for i in USER_SIM_IMPLS:
                best[v][i] = min(best[v][i],
                                 time_in_fresh_interpreter(*user_compile_code(v, i)))
    return best
