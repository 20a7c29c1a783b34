"""The C call gate (``numslab.drivers.gate``, ``_gate.c``): an allocator's hot facade methods
are the gate's builtin methods, and each must give the same results, errors and final state
as the class's Python method, refuse every misuse with the same numslab exception and leave
nothing changed, check its arrays on every call (an array can be reshaped, retyped or made
read-only in place between two calls), use the calling thread's CPU, and fail cleanly once its
allocator is gone. ``NUMSLAB_GATE=0`` turns it off (checked in a subprocess).

``in_place_battery`` and ``run_trace`` are also run by the subprocess, with the gate off."""
from __future__ import annotations

import gc
import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
import threading
import types
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable

import numba
import numpy as np
import pytest

import numslab
from numslab import GFP_KERNEL
from numslab import jit as nj
from numslab.flags import __GFP_NOWARN as NOWARN, __GFP_ZERO as ZERO
from numslab.drivers import gate

from conftest import assert_unchanged, snapshot

KERNELS = ("7.0", "6.18")       #: the behaviour tested here is both generations

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
GATED = gate.GATED
NOT_AN_ARRAY = numslab.SlabError


def run_python(code: str, env: dict | None = None, timeout: float = 300) -> Any:
    """Run ``code`` in a fresh interpreter that imports these tests; the JSON it prints last."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS), full_env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"subprocess failed ({p.returncode}):\n{p.stderr[-4000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def outcome(call: Callable, *args: Any, **kwargs: Any) -> tuple:
    """("ok", result) or ("err", exception type, message)."""
    try:
        return ("ok", call(*args, **kwargs))
    except Exception as e:  # noqa: BLE001 - every exception is compared
        return ("err", type(e).__name__, str(e))


def changed_fields(buf: np.ndarray, other: np.ndarray) -> list[str]:
    """Names of the state fields whose words differ between two state buffers."""
    from numslab.engine.layout import FIELDS, view
    out = []
    for f, (name, _) in enumerate(FIELDS):      # (the row table's columns are strided views)
        diff = np.flatnonzero(view(buf, f) != view(other, f))
        if len(diff):
            out.append(f"{name}{diff[:6].tolist()}")
    return out


def assert_same_state(sa: numslab.SlabAllocator, snap: tuple, what: str) -> None:
    """``assert_unchanged`` naming the fields and arena bytes that changed."""
    buf, mem = snapshot(sa)
    fields = changed_fields(buf, snap[0])
    moved = np.flatnonzero(mem != snap[1])
    assert not fields and not len(moved), \
        f"{what} changed {fields} and arena bytes {moved[:8].tolist()}"
    sa.validate()


def via_class(sa: numslab.SlabAllocator, name: str) -> Callable:
    """The class's Python method ``name`` bound to ``sa`` (never the gate)."""
    method = getattr(type(sa), name)
    return lambda *args, **kwargs: method(sa, *args, **kwargs)


# ---- the gate is there --------------------------------------------------------------------------
def test_the_gate_is_installed_on_every_allocator(sa):
    assert gate.available()
    assert sa._gate is not None
    for name in GATED:
        m = getattr(sa, name)
        assert isinstance(m, types.BuiltinMethodType), name
        assert m.__self__ is sa._gate, name
        assert isinstance(getattr(type(sa), name), types.FunctionType), name
    # the rest stays Python
    assert isinstance(sa.kmem_cache_alloc_node, types.MethodType)
    assert isinstance(sa.kmem_cache_shrink, types.MethodType)


# ---- one seeded random driver, run on the gate and on the class's methods -----------------------
SIZES = {"small": (64, 0), "sheaf": (192, 8), "big": (3000, 0), "ctor": (40, 0)}


class World:
    """An allocator with the driver's caches (one with a Python constructor, one destroyed)
    and two arrays kept across calls (and changed in place between them)."""

    def __init__(self, seed: int) -> None:
        self.sa = numslab.SlabAllocator(nr_cpus=2, memory="4M", seed=seed)
        self.built: list[int] = []

        def ctor(mem: np.ndarray, addr: int) -> None:
            mem[addr] = 0x5A
            self.built.append(addr)

        self.caches = {name: self.sa.kmem_cache_create(name, size, sheaf_capacity=sh,
                                                        ctor=ctor if name == "ctor" else None)
                       for name, (size, sh) in SIZES.items()}
        dead = self.sa.kmem_cache_create("dead", 64)
        self.sa.kmem_cache_destroy(dead)
        self.caches["dead"] = dead
        self.other = numslab.SlabAllocator(nr_cpus=2, memory="4M")
        self.caches["foreign"] = self.other.kmem_cache_create("small", 64)
        self.kept = {"one": np.zeros(2, np.int64)[:1], "many": np.zeros(64, np.int64)[:32]}


class Per:
    """An argument resolved for each world (its cache, a fresh array of its own...)."""

    def __init__(self, make: Callable[[World], Any], label: str) -> None:
        self.make, self.label = make, label

    def __repr__(self) -> str:
        return self.label


def _array(kind: str, values: list[int]) -> Callable[[World], Any]:
    def make(w: World) -> Any:
        a = np.array(values + [0] * 2, np.int64)[:len(values)] if values else \
            np.zeros(0, np.int64)
        if kind == "ok":
            return a
        if kind == "list":
            return list(values)
        if kind == "float":
            return a.astype(np.float64)
        if kind == "int32":
            return a.astype(np.int32)
        if kind == "2d":
            return a.reshape(1, -1)
        if kind == "ro":
            a.flags.writeable = False
            return a
        if kind == "strided":
            b = np.zeros(2 * len(values) + 2, np.int64)
            b[::2][:len(values)] = values
            return b[::2][:len(values)]
        raise AssertionError(kind)
    return make


MUTATIONS: dict[str, tuple[Callable, Callable]] = {
    "2d": (lambda a: setattr(a, "shape", (1, a.size)),
           lambda a: setattr(a, "shape", (a.size,))),
    "float": (lambda a: setattr(a, "dtype", np.float64),
              lambda a: setattr(a, "dtype", np.int64)),
    "uint": (lambda a: setattr(a, "dtype", np.uint64),
             lambda a: setattr(a, "dtype", np.int64)),
    "int32": (lambda a: setattr(a, "dtype", np.int32),
              lambda a: setattr(a, "dtype", np.int64)),
    "swapped": (lambda a: setattr(a, "dtype", a.dtype.newbyteorder()),
                lambda a: setattr(a, "dtype", np.int64)),
    "ro": (lambda a: setattr(a.flags, "writeable", False),
           lambda a: setattr(a.flags, "writeable", True)),
}


class Driver:
    """Random calls of every gated method, good and bad, on one world or on two twins (the
    first through the instance's methods, the second through the class's)."""

    def __init__(self, seed: int, twin: bool) -> None:
        self.rng = random.Random(seed)
        self.worlds = [World(seed) for _ in range(2 if twin else 1)]
        self.twin = twin
        self.live: dict[str, list[int]] = {n: [] for n in SIZES}
        self.kmalloced: list[int] = []
        self.freed: list[int] = []
        self.mutated: dict[str, str | None] = {"one": None, "many": None}
        self.trace: list[str] = []

    # -- arguments -------------------------------------------------------------------------------
    def cache(self) -> Any:
        r = self.rng.random()
        if r < 0.9:
            name = self.rng.choice(list(SIZES))
            return name, Per(lambda w, n=name: w.caches[n], name)
        bad = self.rng.choice(["dead", "foreign", None, 3, "small-name"])
        if bad in ("dead", "foreign"):
            return None, Per(lambda w, n=bad: w.caches[n], bad)
        return None, bad

    def live_addr(self, name: str | None) -> int | None:
        pool = self.live.get(name) if name else None
        if not pool:
            pool = [a for v in self.live.values() for a in v] + self.kmalloced
        return self.rng.choice(pool) if pool else None

    def address(self, name: str | None, typed: bool = True) -> Any:
        """A live object (of cache ``name`` if it has one), else an odd or freed address.
        A freed address may since hold an object the allocator kmalloc'ed for itself (a
        sheaf), which ``kfree`` would free: only ``typed`` frees (which check the cache)
        get them."""
        r = self.rng.random()
        a = self.live_addr(name)
        if a is not None and r < 0.75:
            return a
        odd = [0, 16, 8, -8, 1 << 40, 4 << 20, 2 ** 63, 2 ** 70, True, 1.5, "0x1000", None]
        if a is not None:
            odd += [a + 8, a + 1, np.int64(a), np.uint32(a) if a < 2 ** 32 else a]
        if self.freed and typed:
            odd += [self.rng.choice(self.freed)] * 4
        return self.rng.choice(odd)

    def gfp(self) -> Any:
        # not a float: the facade takes one, allocates, then fails (see
        # test_a_gfp_that_is_not_an_int_is_refused_before_anything_is_allocated)
        return self.rng.choice([GFP_KERNEL] * 12 + [GFP_KERNEL | ZERO, NOWARN, 0, True,
                                                    2 ** 70, None, -1])

    def cpu(self) -> dict:
        r = self.rng.random()
        if r < 0.8:
            return {}
        cpu = self.rng.choice([None, 0, 1, 2, -1, np.int64(1), True, 1.0])
        return {"positional": cpu} if r < 0.9 else {"cpu": cpu}

    def count(self, n: int) -> Any:
        if self.rng.random() < 0.85:
            return n
        return self.rng.choice([-1, n + 1, np.int64(n), True, 2 ** 70, 1.5])

    def out_array(self, n: int) -> Any:
        r = self.rng.random()
        if r < 0.3:
            key = self.rng.choice(["one", "many"])
            size = 1 if key == "one" else 32
            return min(n, size), Per(lambda w, k=key: w.kept[k], f"kept[{key}]")
        if r < 0.9:
            return n, Per(_array("ok", [0] * n), f"zeros({n})")
        kind = self.rng.choice(["list", "float", "int32", "2d", "ro", "strided"])
        return n, Per(_array(kind, [0] * n), f"{kind}({n})")

    def objs_array(self, name: str | None, n: int) -> tuple[list, Any]:
        values: list[int] = []
        pool = list(self.live.get(name, [])) if name else []
        self.rng.shuffle(pool)
        for _ in range(n):
            if pool and self.rng.random() < 0.95:
                values.append(pool.pop())
            else:
                a = self.address(name, typed=name is not None)
                values.append(a if type(a) is int and -2 ** 63 <= a < 2 ** 63 else 8)
        if len(values) > 1 and self.rng.random() < 0.05:
            values[-1] = values[0]                     # a duplicate: a double free
        kind = "ok" if self.rng.random() < 0.9 else self.rng.choice(
            ["list", "float", "2d", "ro", "strided"])
        return values, Per(_array(kind, values), f"{kind}{values}")

    # -- steps -------------------------------------------------------------------------------------
    def step(self) -> None:
        rng = self.rng
        op = rng.choices(["alloc", "free", "kmalloc", "kfree", "alloc_bulk", "free_bulk",
                          "kfree_bulk", "alloc_array", "free_array", "mutate"],
                         [20, 20, 10, 10, 10, 10, 5, 7, 5, 3])[0]
        kw = self.cpu()
        if op == "mutate":
            self.mutate()
            return
        if op == "alloc":
            name, c = self.cache()
            args = [c] + ([self.gfp()] if rng.random() < 0.3 or "positional" in kw else [])
            self.call("kmem_cache_alloc", args, kw, alloc=name)
        elif op == "free":
            name, c = self.cache()
            self.call("kmem_cache_free", [c, self.address(name)], kw)
        elif op == "kmalloc":
            size = rng.choice([rng.randint(1, 8192), rng.randint(1, 256), 0, 8193,
                               rng.randint(8193, 3 << 20), 4 << 20, (4 << 20) + 1, -1, True,
                               1.5, np.int64(64), 2 ** 70, None])
            args = [size] + ([self.gfp()] if rng.random() < 0.3 or "positional" in kw else [])
            if rng.random() < 0.1:
                args += [None, rng.choice([-1, 0, 1, True])]      # node
                kw = {}
            self.call("kmalloc", args, kw, alloc="kmalloc")
        elif op == "kfree":
            self.call("kfree", [self.address(None, typed=False)], kw)
        elif op in ("alloc_bulk", "alloc_array"):
            name, c = self.cache()
            n, out = self.out_array(rng.randint(0, 24))
            args = [c, self.gfp(), self.count(n), out]
            if op == "alloc_array":
                args.append(rng.choice([0] * 6 + [0x20000000, 0x10000000, 0x40000000,
                                                  0x08000000, 0x48000000, 1, -1, 1.0]))
            self.call("kmem_cache_alloc_bulk" if op == "alloc_bulk" else
                      "kmem_cache_alloc_array", args, kw, alloc=name)
        elif op in ("free_bulk", "free_array"):
            name, c = self.cache()
            values, objs = self.objs_array(name, rng.randint(0, 12))
            self.call("kmem_cache_free_bulk" if op == "free_bulk" else
                      "kmem_cache_free_array", [c, self.count(len(values)), objs], kw,
                      freeing=values)
        else:
            pool = [a for v in self.live.values() for a in v] + self.kmalloced
            values = rng.sample(pool, min(len(pool), rng.randint(0, 8)))
            if rng.random() < 0.1:
                values.append(self.rng.choice([8, 16, 1 << 40, -8]))
            self.call("kfree_bulk", [self.count(len(values)),
                                     Per(_array("ok", values), f"ok{values}")], kw,
                      freeing=values)

    def mutate(self) -> None:
        key = self.rng.choice(["one", "many"])
        current = self.mutated[key]
        if current is None:
            m = self.rng.choice(list(MUTATIONS))
            for w in self.worlds:
                MUTATIONS[m][0](w.kept[key])
            self.mutated[key] = m
        else:
            for w in self.worlds:
                MUTATIONS[current][1](w.kept[key])
            self.mutated[key] = None
        self.trace.append(f"mutate {key} {self.mutated[key]}")

    def call(self, name: str, args: list, kw: dict, alloc: str | None = None,
             freeing: list | None = None) -> None:
        """Call ``name`` in every world, compare, and follow what was allocated or freed
        (``alloc``: the cache name, or "kmalloc"; ``freeing``: the addresses a batch frees)."""
        kw = dict(kw)
        if "positional" in kw:
            # a CPU by position: after the optional arguments before it
            cpu = kw.pop("positional")
            fill = {"kmem_cache_alloc": 2, "kmem_cache_free": 2, "kmalloc": 2, "kfree": 1,
                    "kmem_cache_alloc_bulk": 4, "kmem_cache_alloc_array": 5,
                    "kmem_cache_free_bulk": 3, "kmem_cache_free_array": 3, "kfree_bulk": 2}
            if len(args) == fill[name] - 1 and name in ("kmem_cache_alloc", "kmalloc"):
                args = args + [GFP_KERNEL]
            if name == "kmem_cache_alloc_array" and len(args) == 4:
                args = args + [0]
            if len(args) == fill[name]:
                args = args + [cpu]
        label = f"{name}({', '.join(map(repr, args))}, {kw})"
        results, arrays, first = [], [], None
        for i, w in enumerate(self.worlds):
            real = [a.make(w) if isinstance(a, Per) else a for a in args]
            method = getattr(w.sa, name) if i == 0 else via_class(w.sa, name)
            before = snapshot(w.sa) if i == 0 else None
            res = outcome(method, *real, **kw)
            if res[0] == "err" and i == 0:             # a refused call changes nothing
                assert_same_state(w.sa, before, f"{label} -> {res}")
            results.append(res)
            arrays.append([a.tobytes() if isinstance(a, np.ndarray) else None for a in real])
            first = first or real
        if self.twin:
            assert results[0] == results[1], f"{label}: gate {results[0]} class {results[1]}"
            assert arrays[0] == arrays[1], f"{label}: the arrays differ"
        res = results[0]
        digest = hashlib.sha256(repr(arrays[0]).encode()).hexdigest()[:12]
        self.trace.append(f"{label} -> {res!r} {digest}")
        if res[0] != "ok":
            return
        if alloc == "kmalloc":
            if res[1] not in (0, 16):
                self.kmalloced.append(res[1])
        elif alloc is not None and name == "kmem_cache_alloc":
            if res[1]:
                self.live[alloc].append(res[1])
        elif alloc is not None and res[1]:
            self.live[alloc].extend(int(x) for x in first[3][:res[1]])
        if name == "kmem_cache_free":
            self.forget([first[1]])
        elif name == "kfree":
            self.forget([first[0]])
        if freeing is not None:
            self.forget(freeing[:first[0 if name == "kfree_bulk" else 1]])

    def forget(self, addrs: list) -> None:
        for a in addrs:
            a = int(a)
            for pool in list(self.live.values()) + [self.kmalloced]:
                if a in pool:
                    pool.remove(a)
                    self.freed.append(a)
                    break


def run_trace(seed: int, steps: int, twin: bool) -> tuple[list[str], str]:
    """Drive ``steps`` random calls; the trace and a digest of the final state."""
    d = Driver(seed, twin)
    for _ in range(steps):
        d.step()
    for w in d.worlds:
        w.sa.validate()
    buf, mem = snapshot(d.worlds[0].sa)
    if twin:
        other = snapshot(d.worlds[1].sa)
        assert np.array_equal(buf, other[0]), "the state arrays differ"
        assert np.array_equal(mem, other[1]), "the arenas differ"
        assert d.worlds[0].built == d.worlds[1].built, "the constructors ran differently"
    digest = hashlib.sha256(buf.tobytes() + mem.tobytes()).hexdigest()
    return d.trace, digest


@pytest.mark.parametrize("seed", range(1, 7))
def test_the_gate_and_the_class_methods_agree_on_random_calls(seed):
    trace, _ = run_trace(seed, 300, twin=True)
    assert len(trace) == 300
    # the driver reached both the gate's fast paths and its fallbacks
    assert any("-> ('ok'" in t for t in trace) and any("-> ('err'" in t for t in trace)


def test_the_driver_exercises_every_gated_method():
    trace, _ = run_trace(7, 300, twin=False)
    for name in GATED:
        assert any(t.startswith(name + "(") and "-> ('ok'" in t for t in trace), name
        assert any(t.startswith(name + "(") and "-> ('err'" in t for t in trace), name


# ---- misuse: refused with the class's exception, nothing changed ---------------------------------
def _misuse_world():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    d = sa.kmem_cache_create("d", 64, sheaf_capacity=4)
    dead = sa.kmem_cache_create("dead", 64)
    sa.kmem_cache_destroy(dead)
    other = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    foreign = other.kmem_cache_create("c", 64)
    return sa, c, d, dead, other, foreign


def test_misuse_through_the_gate_raises_the_class_error_and_changes_nothing():
    sa, c, d, dead, other, foreign = _misuse_world()
    a = sa.kmem_cache_alloc(c)
    b = sa.kmem_cache_alloc(d)
    freed = sa.kmem_cache_alloc(c)
    sa.kmem_cache_free(c, freed)
    k = sa.kmalloc(100)
    big = sa.kmalloc(20000)
    f = foreign._sa.kmem_cache_alloc(foreign)
    G = GFP_KERNEL
    E = numslab
    cases = [
        (E.WrongCacheError, "kmem_cache_alloc", (dead,)),
        (E.WrongCacheError, "kmem_cache_alloc", (foreign,)),
        (E.WrongCacheError, "kmem_cache_alloc", (None,)),
        (E.WrongCacheError, "kmem_cache_alloc", (c.id,)),
        (E.WrongCacheError, "kmem_cache_alloc", ("c",)),
        (E.SlabError, "kmem_cache_alloc", (c, G, 2)),
        (E.SlabError, "kmem_cache_alloc", (c, G, -1)),
        (E.SlabError, "kmem_cache_alloc", (c, G, 1.0)),
        (E.DoubleFreeError, "kmem_cache_free", (c, freed)),
        (E.BadAddressError, "kmem_cache_free", (c, a + 8)),
        (E.BadAddressError, "kmem_cache_free", (c, a + 1)),
        (E.BadAddressError, "kmem_cache_free", (c, 8)),
        (E.BadAddressError, "kmem_cache_free", (c, 0)),
        (E.BadAddressError, "kmem_cache_free", (c, -8)),
        (E.BadAddressError, "kmem_cache_free", (c, 1 << 40)),
        (E.BadAddressError, "kmem_cache_free", (c, big)),
        (E.BadAddressError, "kmem_cache_free", (c, True)),
        (E.BadAddressError, "kmem_cache_free", (c, 1.5)),
        (E.BadAddressError, "kmem_cache_free", (c, "0x1000")),
        (E.BadAddressError, "kmem_cache_free", (c, None)),
        (E.WrongCacheError, "kmem_cache_free", (d, a)),
        (E.WrongCacheError, "kmem_cache_free", (c, k)),
        (E.WrongCacheError, "kmem_cache_free", (dead, a)),
        (E.WrongCacheError, "kmem_cache_free", (foreign, f)),
        (E.WrongCacheError, "kmem_cache_free", (None, a)),
        (E.SlabError, "kmem_cache_free", (c, a, 5)),
        (E.BadAddressError, "kfree", (a + 1,)),
        (E.BadAddressError, "kfree", (24,)),   # past ZERO_SIZE_PTR (8: ZERO_OR_NULL_PTR)
        (E.BadAddressError, "kfree", (big + 4096,)),
        (E.BadAddressError, "kfree", (True,)),
        (E.BadAddressError, "kfree", (1.5,)),
        (E.DoubleFreeError, "kfree", (freed,)),
        (E.SlabError, "kfree", (k, 2)),
        (E.InvalidSizeError, "kmalloc", (-1,)),
        (E.InvalidSizeError, "kmalloc", (True,)),
        (E.InvalidSizeError, "kmalloc", (1.5,)),
        (E.InvalidSizeError, "kmalloc", (None,)),
        (E.InvalidSizeError, "kmalloc", ((4 << 20) + 1,)),
        (E.InvalidSizeError, "kmalloc", (2 ** 70,)),
        (E.SlabError, "kmalloc", (64, G, 7)),
        (E.SlabError, "kmalloc", (64, G, None, 3)),
        (E.SlabError, "kmalloc", (64, G, None, True)),
    ]
    out = np.zeros(8, np.int64)
    objs = np.array([a, b, k, 8], np.int64)
    for name in ("kmem_cache_alloc_bulk", "kmem_cache_alloc_array"):
        extra = (0,) if name.endswith("array") else ()
        cases += [
            (E.WrongCacheError, name, (dead, G, 2, out) + extra),
            (E.WrongCacheError, name, (foreign, G, 2, out) + extra),
            (E.InvalidSizeError, name, (c, G, -1, out) + extra),
            (E.InvalidSizeError, name, (c, G, 9, out) + extra),
            (E.InvalidSizeError, name, (c, G, True, out) + extra),
            (E.InvalidSizeError, name, (c, G, 2 ** 70, out) + extra),
            (NOT_AN_ARRAY, name, (c, G, 2, [0, 0]) + extra),
            (NOT_AN_ARRAY, name, (c, G, 2, out.astype(np.float64)) + extra),
            (NOT_AN_ARRAY, name, (c, G, 2, out.astype(np.int32)) + extra),
            (NOT_AN_ARRAY, name, (c, G, 2, out.reshape(2, 4)) + extra),
            (NOT_AN_ARRAY, name, (c, G, 2, out[::2]) + extra),
            (NOT_AN_ARRAY, name, (c, G, 2, np.zeros(8, ">i8")) + extra),
            (NOT_AN_ARRAY, name, (c, G, 2, np.ones(8, np.int64).view(np.matrix)) + extra),
            (E.SlabError, name, (c, G, 2, out) + extra + (2,)),
        ]
    cases += [
        (E.SlabError, "kmem_cache_alloc_array", (c, G, 2, out, 1)),
        (E.SlabError, "kmem_cache_alloc_array", (c, G, 2, out, -1)),
        (E.SlabError, "kmem_cache_alloc_array", (c, G, 2, out, 1.0)),
    ]
    for name in ("kmem_cache_free_bulk", "kmem_cache_free_array"):
        cases += [
            (E.BadAddressError, name, (c, 2, np.array([a, a + 8]))),
            (E.DoubleFreeError, name, (c, 2, np.array([a, a]))),
            (E.DoubleFreeError, name, (c, 1, np.array([freed]))),
            (E.WrongCacheError, name, (d, 1, np.array([a]))),
            (E.WrongCacheError, name, (dead, 1, np.array([a]))),
            (E.WrongCacheError, name, (foreign, 1, np.array([f]))),
            (E.InvalidSizeError, name, (c, 2, np.array([a]))),
            (E.InvalidSizeError, name, (c, -1, np.array([a]))),
            (NOT_AN_ARRAY, name, (c, 1, [a])),
            (NOT_AN_ARRAY, name, (c, 1, np.array([a], np.uint64))),
            (NOT_AN_ARRAY, name, (c, 1, np.array([[a]]))),
            (E.SlabError, name, (c, 1, np.array([a]), 9)),
        ]
    cases += [
        (E.BadAddressError, "kfree_bulk", (4, objs)),
        (E.DoubleFreeError, "kfree_bulk", (2, np.array([a, a]))),
        (E.InvalidSizeError, "kfree_bulk", (5, objs)),
        (E.InvalidSizeError, "kfree_bulk", (-1, objs)),
        (NOT_AN_ARRAY, "kfree_bulk", (1, objs[::2])),
        (NOT_AN_ARRAY, "kfree_bulk", (1, (a,))),
        (E.SlabError, "kfree_bulk", (1, np.array([a]), -1)),
    ]
    for exc, name, args in cases:
        arrays = [x.copy() for x in args if isinstance(x, np.ndarray)]
        snap = snapshot(sa)
        with pytest.raises(exc) as info:
            getattr(sa, name)(*args)
        assert_same_state(sa, snap, f"{name}{args}")
        assert all(np.array_equal(x, y) for x, y in
                   zip(arrays, [x for x in args if isinstance(x, np.ndarray)])), name
        ref = outcome(via_class(sa, name), *args)
        assert ref == ("err", type(info.value).__name__, str(info.value)), (name, args)
    # and the same calls, well formed, still work
    sa.kmem_cache_free(c, a)
    sa.kmem_cache_free(d, b)
    sa.kfree(k)
    sa.kfree(big)
    assert c.live_objects == d.live_objects == 0
    sa.validate()
    other.validate()


# ---- arrays changed in place between two calls (issue 11) --------------------------------------
def _set_strides(a: np.ndarray, strides: tuple) -> bool:
    """Set ``a.strides`` in place (deprecated by NumPy 2.4); False if NumPy refuses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            a.strides = strides
        except (AttributeError, TypeError):    # pragma: no cover - a NumPy without it
            return False
    return True


IN_PLACE: dict[str, tuple[Callable, Callable]] = {
    "26-D": (lambda a: setattr(a, "shape", (1,) * 26), None),
    "0-D": (lambda a: setattr(a, "shape", ()), None),
    "2-D": (lambda a: setattr(a, "shape", (1, a.size)), None),
    "2-D square": (lambda a: setattr(a, "shape", (2, a.size // 2)), None),
    "float64": (lambda a: setattr(a, "dtype", np.float64), None),
    "uint64": (lambda a: setattr(a, "dtype", np.uint64), None),
    "int32": (lambda a: setattr(a, "dtype", np.int32), None),
    "byte-swapped": (lambda a: setattr(a, "dtype", a.dtype.newbyteorder()), None),
    "read-only": (lambda a: setattr(a.flags, "writeable", False),
                  lambda a: setattr(a.flags, "writeable", True)),
    "strided": (lambda a: _set_strides(a, (16,)), lambda a: _set_strides(a, (8,))),
}


def _restore(a: np.ndarray, n: int) -> None:
    a.dtype = np.int64
    a.shape = (n,)


def in_place_battery() -> list[list]:
    """Take an array in a call, change it in place, call again: every call must refuse it
    (a SlabError subclass, nothing changed, the array untouched), then take it again once
    restored. Also counts that do not fit. The refusals, as [method, n, case, error, text]."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("inplace", 64)
    G = GFP_KERNEL
    methods = {
        "kmem_cache_alloc_bulk": lambda a, nr: sa.kmem_cache_alloc_bulk(c, G, nr, a),
        "kmem_cache_alloc_array": lambda a, nr: sa.kmem_cache_alloc_array(c, G, nr, a, 0),
        "kmem_cache_free_bulk": lambda a, nr: sa.kmem_cache_free_bulk(c, nr, a),
        "kmem_cache_free_array": lambda a, nr: sa.kmem_cache_free_array(c, nr, a),
        "kfree_bulk": lambda a, nr: sa.kfree_bulk(nr, a),
    }
    frees = {"kmem_cache_free_bulk", "kmem_cache_free_array", "kfree_bulk"}

    def fill(a: np.ndarray, n: int) -> None:        # n live objects, through a itself
        assert sa.kmem_cache_alloc_bulk(c, G, n, a) == n

    def taken(name: str, a: np.ndarray, n: int) -> None:
        if name in frees:
            fill(a, n)
            assert methods[name](a, n) is None
        else:
            assert methods[name](a, n) == n
            sa.kfree_bulk(n, a.copy())
        assert c.live_objects == 0

    refusals = []

    def refused(name: str, n: int, case: str, a: Any, nr: Any) -> None:
        base = a.base if isinstance(a, np.ndarray) and a.base is not None else a
        raw = np.asarray(base).tobytes()
        snap = snapshot(sa)
        try:
            methods[name](a, nr)
        except numslab.SlabError as e:
            refusals.append([name, n, case, type(e).__name__, str(e)])
        else:
            raise AssertionError(f"{name}: {case} array taken")
        assert_same_state(sa, snap, f"{name} with a {case} array")
        assert np.asarray(base).tobytes() == raw, f"{name}: {case} array written"

    for name in methods:
        for n in (1, 4):
            for case, (change, undo) in IN_PLACE.items():
                if (case in ("26-D", "0-D") and n != 1) or \
                        (case in ("2-D square", "strided") and n == 1):
                    continue                    # (one element is contiguous at any stride)
                base = np.zeros(2 * n + 2, np.int64)
                a = base[:n]
                taken(name, a, n)                       # the array as it is: taken
                if name in frees:
                    fill(a, n)
                if change(a) is False:                  # pragma: no cover
                    continue
                refused(name, n, case, a, n)
                (undo or (lambda x: None))(a)
                _restore(a, n)
                if name in frees:
                    methods[name](a, n)                 # restored: taken again
                else:
                    taken(name, a, n)
                assert c.live_objects == 0
            # counts that do not fit, and views that are not the array
            base = np.zeros(2 * n + 2, np.int64)
            a = base[:n]
            taken(name, a, n)
            for case, nr, arr in (("count past the end", n + 1, a), ("negative count", -1, a),
                                  ("numpy count past the end", np.int64(n + 1), a),
                                  ("bool count", True, a),
                                  ("strided view", n, base[::2][:n]),
                                  ("reversed view", n, a[::-1]),
                                  ("2-D view", n, base[:2 * n].reshape(2, n)),
                                  ("list", n, a.tolist())):
                if case in ("reversed view", "strided view") and n == 1:
                    continue
                refused(name, n, case, arr, nr)
            taken(name, a, n)
            taken(name, a, np.int64(n))         # a NumPy count, as a NumPy address or cpu
    sa.validate()
    assert c.live_objects == 0
    return refusals


def test_arrays_changed_in_place_are_refused_on_every_call():
    """Issue 11 through the gate: no argument-type shortcut (an array taken because it was
    taken last time) skips a check that its shape, dtype, strides or writability could have
    changed since."""
    refusals = in_place_battery()
    kinds = {(r[2], r[3]) for r in refusals}
    assert ("26-D", "InvalidArgumentError") in kinds
    assert ("read-only", "InvalidArgumentError") in kinds
    assert ("count past the end", "InvalidSizeError") in kinds
    assert ("negative count", "InvalidSizeError") in kinds
    assert ("bool count", "SizeTypeError") in kinds      # (no integer: an InvalidSizeError too)
    # the class's methods refuse them with the same errors
    assert all(r[3] in ("InvalidArgumentError", "InvalidSizeError", "SizeTypeError")
               for r in refusals)


NO_GATE = r"""
import json, types
import numslab
from numslab.drivers import gate
import test_gate
sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
info = {"available": gate.available(), "gate": sa._gate is not None,
        "python": all(isinstance(getattr(sa, n), types.MethodType) for n in gate.GATED)}
refusals = test_gate.in_place_battery()
trace, digest = test_gate.run_trace(5, 200, twin=False)
print(json.dumps({"info": info, "refusals": refusals, "trace": trace, "digest": digest}))
"""


def test_without_the_gate_arrays_are_checked_on_every_call_and_results_are_the_same():
    """Issue 11 with the gate off (NUMSLAB_GATE=0, in a subprocess): the Python methods
    refuse every array changed in place since the call that took it, as the gate does; and
    the same random calls give the same results and the same final state."""
    r = run_python(NO_GATE, {"NUMSLAB_GATE": "0"})
    assert r["info"] == {"available": False, "gate": False, "python": True}
    # the facade validates arrays on every call with the gate off too (issue 11)
    assert r["refusals"] == in_place_battery()
    trace, digest = run_trace(5, 200, twin=False)
    assert r["trace"] == trace
    assert r["digest"] == digest


# ---- CPUs and threads --------------------------------------------------------------------------
def _cpus_touched(c: numslab.KmemCache, call: Callable) -> tuple[list[int], Any]:
    before = c.stats_per_cpu()
    r = call()
    return np.flatnonzero((c.stats_per_cpu() != before).any(axis=1)).tolist(), r


def _round_on(sa, c, cpu_arg: Any = None) -> list[list[int]]:
    """The CPUs whose counters a gated alloc, free, bulk alloc and bulk free touched."""
    extra = () if cpu_arg is None else (cpu_arg,)
    out = np.zeros(3, np.int64)
    t1, a = _cpus_touched(c, lambda: sa.kmem_cache_alloc(c, GFP_KERNEL, *extra))
    t2, _ = _cpus_touched(c, lambda: sa.kmem_cache_free(c, a, *extra))
    t3, _ = _cpus_touched(c, lambda: sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 3, out, *extra))
    t4, _ = _cpus_touched(c, lambda: sa.kmem_cache_free_bulk(c, 3, out, *extra))
    return [t1, t2, t3, t4]


def test_each_thread_allocates_on_its_cpu_and_set_cpu_moves_it():
    sa = numslab.SlabAllocator(nr_cpus=4, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    lock = threading.Lock()
    start, middle, end = (threading.Barrier(3) for _ in range(3))
    seen: dict = {}
    errors: list = []

    def record(tag: str, expect: int, cpu_arg: Any = None) -> None:
        with lock:
            seen[tag] = (_round_on(sa, c, cpu_arg), expect)

    def worker(k: int) -> None:
        try:
            start.wait()                     # all alive together: distinct threads
            record(f"t{k} first", sa._cpu())
            sa.set_cpu(k)                    # CPU 0 or 1
            record(f"t{k} set", k)
            middle.wait()
            record(f"t{k} cpu=3", 3, 3)
            end.wait()
            record(f"t{k} after main", k)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
            for b in (start, middle, end):
                b.abort()

    assert sa._cpu() == 0                    # the thread that made the allocator
    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    sa.set_cpu(2)
    record("main set", 2)
    start.wait()
    middle.wait()
    record("main still", 2)                  # the workers' set_cpu did not move it
    end.wait()
    for t in threads:
        t.join()
    assert not errors, errors
    record("main cpu=1", 1, 1)
    record("main numpy cpu", 3, np.int64(3))
    # round-robin after the allocator's own thread: CPUs 1 and 2
    assert {seen[f"t{k} first"][1] for k in (0, 1)} == {1, 2}
    for tag, (touched, expect) in seen.items():
        assert touched == [[expect]] * 4, f"{tag}: touched {touched}, expected CPU {expect}"
    with pytest.raises(numslab.SlabError):
        sa.set_cpu(4)
    record("main after refusal", 2)
    assert seen["main after refusal"][0] == [[2]] * 4
    sa.validate()


def test_a_new_thread_with_a_reused_thread_id_uses_its_own_cpu():
    sa = numslab.SlabAllocator(nr_cpus=4, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    seen = []

    def work() -> None:
        seen.append((threading.get_ident(), sa._cpu(), _round_on(sa, c)))

    for _ in range(4):
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert len({ident for ident, _, _ in seen}) < len(seen), "no thread id was reused"
    for ident, cpu, touched in seen:
        assert touched == [[cpu]] * 4, f"thread {ident} on CPU {cpu} touched {touched}"


# ---- a gated method kept after its allocator is gone -------------------------------------------
def _calls(out: np.ndarray) -> dict[str, tuple]:
    ghost = numslab.SlabAllocator(nr_cpus=2, memory="4M").kmem_cache_create("g", 64)
    return {"kmem_cache_alloc": (ghost,), "kmem_cache_free": (ghost, 4096),
            "kmalloc": (64,), "kfree": (4096,),
            "kmem_cache_alloc_bulk": (ghost, GFP_KERNEL, 1, out),
            "kmem_cache_free_bulk": (ghost, 0, out), "kfree_bulk": (1, out),
            "kmem_cache_alloc_array": (ghost, GFP_KERNEL, 1, out),
            "kmem_cache_free_array": (ghost, 0, out)}


def test_a_gated_method_kept_after_its_allocator_is_collected_raises():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    kept = {name: getattr(sa, name) for name in GATED}
    gone = weakref.ref(sa)
    del sa
    gc.collect()
    assert gone() is None
    out = np.zeros(2, np.int64)
    for name, args in _calls(out).items():
        with pytest.raises(numslab.AllocatorGoneError, match="no longer exists"):
            kept[name](*args)
        with pytest.raises(numslab.AllocatorGoneError, match="no longer exists"):
            kept[name](*args, cpu=None)          # the fallback path too
    assert not out.any()


def test_a_gated_method_used_before_its_allocator_is_collected_raises():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    p = sa.kmalloc(64)
    kmalloc, kfree = sa.kmalloc, sa.kfree
    gone = weakref.ref(sa)
    del sa
    gc.collect()
    assert gone() is None
    with pytest.raises(numslab.AllocatorGoneError, match="no longer exists"):
        kmalloc(64)
    with pytest.raises(numslab.AllocatorGoneError, match="no longer exists"):
        kfree(p)
    # the one-liner a REPL user writes: the message says what to do
    with pytest.raises(numslab.SlabError, match=r"keep the allocator in a name"):
        numslab.SlabAllocator(nr_cpus=1, memory="4M").kmalloc(64)


# ---- constructors -------------------------------------------------------------------------------
def test_python_constructors_run_when_the_gate_allocates():
    logs = []
    for gated in (True, False):
        sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
        built: list[int] = []

        def ctor(mem: np.ndarray, addr: int, built: list = built) -> None:
            mem[addr:addr + 8] = 0xC7
            built.append(addr)

        c = sa.kmem_cache_create("c", 40, ctor=ctor)
        call = (lambda n: getattr(sa, n)) if gated else (lambda n: via_class(sa, n))
        a = call("kmem_cache_alloc")(c)
        assert a in built and len(built) == c.objs_per_slab
        out = np.zeros(150, np.int64)
        assert call("kmem_cache_alloc_bulk")(c, GFP_KERNEL, 150, out) == 150
        arr = np.zeros(120, np.int64)
        got = call("kmem_cache_alloc_array")(c, GFP_KERNEL, 120, arr, 0)
        assert got > 0
        live = [a, *out.tolist(), *arr[:got].tolist()]
        assert set(live) <= set(built) and len(built) == len(set(built))
        assert all((sa.memory[x:x + 8] == 0xC7).all() for x in live)
        assert len(built) == c.total_objects            # every object once, no more
        call("kmem_cache_free")(c, a)
        call("kmem_cache_free_bulk")(c, 150, out)
        call("kmem_cache_free_array")(c, got, arr)
        assert c.live_objects == 0
        sa.validate()
        logs.append((built, snapshot(sa)))
    assert logs[0][0] == logs[1][0]
    assert np.array_equal(logs[0][1][0], logs[1][1][0])
    assert np.array_equal(logs[0][1][1], logs[1][1][1])


def test_keyword_and_odd_calls_take_the_python_path_with_the_same_result(sa):
    c = sa.kmem_cache_create("c", 64)
    out = np.zeros(4, np.int64)
    a = sa.kmem_cache_alloc(cache=c, gfp=GFP_KERNEL, cpu=1)
    sa.kmem_cache_free(addr=a, cache=c, cpu=1)
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, nr=4, out=out, cpu=0) == 4
    sa.kmem_cache_free_bulk(c, nr=4, objs=out)
    p = sa.kmalloc(size=24, node=0)
    sa.kfree(addr=p)
    assert c.live_objects == 0
    for args, kwargs in (((), {}), ((c,), {"bogus": 1}), ((c, GFP_KERNEL, None, 4), {})):
        assert outcome(sa.kmem_cache_alloc, *args, **kwargs) == \
            outcome(via_class(sa, "kmem_cache_alloc"), *args, **kwargs)
    assert outcome(sa.kfree) == outcome(via_class(sa, "kfree"))
    assert outcome(sa.kfree_bulk, 1) == outcome(via_class(sa, "kfree_bulk"), 1)


# ---- bugs and doubtful behaviour ----------------------------------------------------------------
def test_a_subclass_override_of_a_gated_method_is_called():
    class Counting(numslab.SlabAllocator):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.calls = 0
            super().__init__(*args, **kwargs)

        def kmem_cache_alloc(self, cache, gfp=GFP_KERNEL, cpu=None):
            self.calls += 1
            return super().kmem_cache_alloc(cache, gfp, cpu)

    sa = Counting(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    sa.kmem_cache_alloc(c)
    assert sa.calls == 1


def test_too_many_arguments_give_the_python_methods_error():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    args = (c, GFP_KERNEL, None, 1, 2, 3, 4, 5)
    assert outcome(sa.kmem_cache_alloc, *args) == \
        outcome(via_class(sa, "kmem_cache_alloc"), *args)


@pytest.mark.parametrize("call", ["free 2**64", "kfree -2**63-1", "free 2**63"])
def test_huge_int_addresses_are_refused_with_a_slab_error(call):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    snap = snapshot(sa)
    with pytest.raises(numslab.BadAddressError):
        if call == "free 2**64":
            sa.kmem_cache_free(c, 2 ** 64)
        elif call == "kfree -2**63-1":
            sa.kfree(-2 ** 63 - 1)
        else:
            sa.kmem_cache_free(c, 2 ** 63)
    assert_unchanged(sa, snap)


def test_a_gfp_that_is_not_an_int_is_refused_before_anything_is_allocated():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 40, ctor=lambda mem, addr: None)
    out = np.zeros(4, np.int64)
    snap = snapshot(sa)
    with pytest.raises(numslab.SlabError):
        sa.kmem_cache_alloc_array(c, 1.5, 4, out)
    assert c.live_objects == 0
    assert_unchanged(sa, snap)
    with pytest.raises(numslab.SlabError):
        sa.kmem_cache_alloc(c, 1.5)


@pytest.mark.parametrize("make", ["longlong", "unpickled"])
def test_every_int64_array_is_taken(make):
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    out = np.zeros(4, np.longlong) if make == "longlong" else \
        pickle.loads(pickle.dumps(np.zeros(4, np.int64)))
    assert out.dtype == np.int64
    assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, 4, out) == 4


def test_a_bool_is_not_a_cpu():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    with pytest.raises(numslab.SlabError):
        sa.kmem_cache_alloc(c, GFP_KERNEL, True)


def test_no_user_free_takes_the_allocators_own_sheaves(kernel):
    """A sheaf is a live kmalloc object the allocator holds (a CPU's main sheaf, a prefilled
    sheaf, an oversize one): kfree, kfree_bulk, kmem_cache_free on its kmalloc cache and
    numslab.jit's frees refuse it, change nothing, and the allocator goes on serving."""
    from numslab.engine.layout import C_MAIN
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    c = sa.kmem_cache_create("c", 192, sheaf_capacity=8)
    c.free(c.alloc())
    shadow = sa.memory.size                 # a sheaf's handle: its object's address + this
    main = int(sa.state.cpu[c.id, 0, C_MAIN]) - shadow
    big = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 2000)      # oversize: a large kmalloc
    small = sa.kmem_cache_prefill_sheaf(c, GFP_KERNEL, 4)
    head = int(sa.state.pg_head[main >> 12])        # the slab's head (order > 0: any page)
    head = main >> 12 if head < 0 else head
    owner = next(k for k in sa.kmalloc_caches if k.id == sa.state.sl_cache[head])
    user = sa.kmalloc(owner.object_size)                        # a user object beside them
    snap = snapshot(sa)
    for sheaf in (main, small - shadow, big - shadow):
        with pytest.raises(numslab.BadAddressError, match="sheaf the allocator"):
            sa.kfree(sheaf)
        with pytest.raises(numslab.BadAddressError, match="sheaf the allocator"):
            sa.kfree_bulk(2, np.array([user, sheaf], np.int64))
        with pytest.raises(numslab.BadAddressError):
            nj.kfree(sa.handle, sheaf)
    for handle in (small, big):             # a handle is no address of the arena
        with pytest.raises(numslab.BadAddressError, match="outside"):
            sa.kfree(handle)
    with pytest.raises(numslab.BadAddressError, match="sheaf the allocator"):
        sa.kmem_cache_free(owner, main)
    with pytest.raises(numslab.BadAddressError):
        _jit_free_on(sa.handle, owner.id, main)
    assert_unchanged(sa, snap)
    sa.kfree(user)
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, small)
    sa.kmem_cache_return_sheaf(c, GFP_KERNEL, big)
    sa.kmem_cache_shrink(c)
    sa.validate()


@numba.njit
def _jit_free_on(h, cid, addr):
    nj.kmem_cache_free(h, cid, addr)

GATED = ("kmem_cache_alloc", "kmem_cache_free", "kmalloc", "kfree", "kmem_cache_alloc_bulk",
         "kmem_cache_free_bulk", "kfree_bulk", "kmem_cache_alloc_array", "kmem_cache_free_array")


@pytest.mark.parametrize("name", GATED)
def test_a_gated_call_has_the_facades_signature(name):
    """The gate's calls are C methods set on the allocator: ``inspect.signature`` (and so
    ``help`` and editors) found none. Each now carries its text signature, the facade
    method's parameters and defaults."""
    import inspect
    sa = numslab.SlabAllocator(memory="4M")
    call = getattr(sa, name)
    assert type(call).__name__ == "builtin_function_or_method"      # the gate's, not Python
    gated = inspect.signature(call).parameters.values()
    facade = list(inspect.signature(getattr(numslab.SlabAllocator, name)).parameters.values())
    assert [(p.name, p.default) for p in gated] == [(p.name, p.default) for p in facade[1:]]
    assert f"SlabAllocator.{name}" in call.__doc__
