"""The engine's compile machinery: pointer types, the options factory ``jit``, and ``unit``.

The ``State`` and ``Words`` pointer types the kernels work on, the one options factory for helpers
(``jit``) and ``unit``, an operation compiled once as a C function, reached through a process-wide
table and compiled on its first call.

Why it is built this way (measured in ARCHITECTURE.md, "What is compiled when"):

* Numba compiles each ``@njit`` function into its own library and links the libraries of the
  functions it calls into its own, so a slow path called from ten entry points is optimised and
  stored ten times. A unit is compiled once; every caller (other units, the facade's call gate,
  users' ``@njit`` code through ``numslab.jit``) calls it through ``numslab_units[slot]``, a
  symbol of this process, so no caller embeds it and a cached caller never holds a stale copy.
* Kernels index raw pointers (``Words``), not NumPy arrays: a pointer has no reference count to
  update when it crosses a call, no bounds or wraparound code, and is several times cheaper for
  Numba to type and lower than an array subscript.
* Every unit's cache key carries :data:`ABI`, a hash of the sources compiled into the engine
  and of the unit table's layout, so a cache written by another version of numslab is never
  loaded (Numba alone keys a function on its own file only).
"""
from __future__ import annotations

import ctypes
import hashlib
import inspect
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils, sigutils
from numba.core.caching import FunctionCache
from numba.core.ccallback import CFunc, _CFuncCompiler
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import CPUDispatcher
from numba.core.typing.templates import (AbstractTemplate, AttributeTemplate, infer_getattr,
                                         infer_global)
from numba.extending import (
    intrinsic,
    lower_builtin,
    lower_getattr_generic,
    models,
    register_model,
)

from ..errors import WrongTypeError
from . import interrupts, linkonly
from .compilelock import compile_lock
from .words import (_I64, _P64, Words, WordsType, address, byte_array,  # noqa: F401 - the
                    copy_bytes, fill_bytes, fixed, invariant_load, shift,  # engine's kernels
                    swab, words_at, words_of, zero_bytes)                # import them here

_PACKAGE = Path(__file__).resolve().parent.parent
_MACHINE = __import__("platform").machine()
if _MACHINE == "x86_64":
    ll.initialize_native_asmparser()    # Numba's LLVM reads no inline assembly without it


def abi_sources() -> list[Path]:
    """Every source whose code is compiled into engine or driver functions (:data:`ABI`'s)."""
    return sorted([*_PACKAGE.glob("engine/*.py"), *_PACKAGE.glob("drivers/*.py"),
                   *(_PACKAGE / name for name in ("flags.py", "errors.py", "geometry.py"))])


def _source_hash() -> str:
    """Hash of Numba's version and of :func:`abi_sources`."""
    h = hashlib.sha256(nb.__version__.encode())
    for f in abi_sources():
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


#: The engine's ABI: changes whenever a source compiled into the engine changes.
ABI = _source_hash()

#: Options of every compiled function: no bounds checks, no Numba runtime (kernels create no
#: arrays, so they need no reference counts: see ARCHITECTURE.md), and NumPy's error model
#: (an integer division by zero gives 0 instead of raising: the engine never divides by
#: zero, and without the raising branches a unit has no exception path at all). nopython, as
#: numba.jit's default: the dispatchers made here without it fell back to object mode when
#: typing failed (numslab.jit.kmalloc(h, 1.5) from Python: a NumbaWarning before the TypeError).
OPTIONS: dict[str, Any] = {"nopython": True, "boundscheck": False, "_nrt": False,
                           "error_model": "numpy"}


class EngineCache(FunctionCache):
    """Numba's on-disk function cache, keyed also on :data:`ABI` and the unit table's layout.

    So a function is never loaded from a cache that another numslab wrote. ``key``: more to key
    on (a hash of the caller's own sources: ``numslab.net``'s, :func:`source_hash`)."""

    def __init__(self, py_func: Callable, key: str = "") -> None:
        super().__init__(py_func)
        self._key = key

    def _index_key(self, sig: Any, codegen: Any) -> tuple:
        key = (*super()._index_key(sig, codegen), ABI, unit_table_hash())
        return (*key, self._key) if self._key else key


def source_hash(folder: Path, salt: str = "") -> str:
    """Hash of ``salt`` and the ``.py`` sources of ``folder``: a key of a disk cache.

    :class:`EngineCache`'s ``key`` (net's), and the lab's and the tools' caches' with the
    :data:`ABI` as ``salt``."""
    h = hashlib.sha256(salt.encode())
    for f in sorted(folder.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class JitOn:
    """``NUMBA_DISABLE_JIT`` lifted while numslab compiles.

    Its functions only run compiled (intrinsics), and Numba's own ``@overload`` implementations,
    made through ``numba.jit``, were plain functions then ("'function' object has no attribute
    'get_call_template'")."""

    def __enter__(self) -> None:
        global_compiler_lock.acquire()      # (another thread's compile may not restore it
        self.was, nb.config.DISABLE_JIT = nb.config.DISABLE_JIT, False     # meanwhile)

    def __exit__(self, *exc: Any) -> None:
        nb.config.DISABLE_JIT = self.was
        global_compiler_lock.release()


class CompiledDispatcher(CPUDispatcher):
    """Numba's CPU dispatcher, compiled under ``NUMBA_DISABLE_JIT`` too (:class:`JitOn`).

    The engine's and the lab's functions call intrinsics, which cannot run as Python."""

    def compile(self, sig: Any) -> Any:
        with JitOn():
            path = getattr(self._cache, "_cache_path", None)    # (a disk cache: its folder)
            args, _ = sigutils.normalize_signature(sig)
            if path is None or tuple(args) in self.overloads:
                return super().compile(sig)
            with compile_lock(path, f"{self.py_func.__module__}.{self.py_func.__qualname__}"):
                return super().compile(sig)


class EngineDispatcher(CompiledDispatcher):
    """:class:`CompiledDispatcher` that compiles constant arguments as their plain types.

    A call from jitted code with constant arguments compiles the function for their plain types,
    not once per constant: Numba would otherwise compile ``_stat(st, c, cpu, 6, n)`` and
    ``_stat(st, c, cpu, 7, n)`` as two functions, and the engine passes constants everywhere."""

    #: Arguments every call must name (``node=n``), each with why (``jit(keywords=...)``).
    numslab_keywords: dict[str, str] = {}

    def get_call_template(self, args: tuple, kws: dict) -> Any:
        if self.numslab_keywords:
            self._refuse_in_place(args, kws)
        return super().get_call_template(tuple(types.unliteral(a) for a in args),
                                         {k: types.unliteral(v) for k, v in kws.items()})

    def _refuse_in_place(self, args: tuple, kws: dict) -> None:
        """Refuse a call leaving out a keyword of :attr:`numslab_keywords` (``WrongTypeError``).

        As a jitted caller compiles, or as Python calls (:class:`KeywordDispatcher`). A call
        that passes no such argument at all is told it is missing, not that it is in place."""
        params = list(inspect.signature(self.py_func).parameters)
        for k, why in self.numslab_keywords.items():
            if k not in kws:
                from .gilguard import typing_frames        # (it imports this module)
                _, user, at = typing_frames()
                name = self.py_func.__name__
                site = f", called in {user}{at}" if user else ""
                if len(args) <= params.index(k):        # (it said "a node in place was taken")
                    raise WrongTypeError(f"numslab.jit.{name}: {k} is missing: pass it by "
                                         f"keyword ({name}(h, cache, {k}=...)){site}")
                raise WrongTypeError(f"numslab.jit.{name}: pass {k} by keyword ({name}(h, "
                                     f"cache, {k}=...)){site}: {why}")


class KeywordDispatcher(EngineDispatcher):
    """:class:`EngineDispatcher` of a function some of whose arguments must be named.

    Checked as a jitted caller compiles and on every call from Python
    (:attr:`numslab_keywords`)."""

    def __call__(self, *args: Any, **kws: Any) -> Any:
        self._refuse_in_place(args, kws)
        return super().__call__(*args, **kws)


class HelperDispatcher(EngineDispatcher):
    """The dispatcher of an engine helper, compiled link-only (:mod:`.linkonly`).

    So Python cannot call it; units and ``numslab.jit`` functions link it in."""

    def __init__(self, py_func: Callable, locals: dict | None = None,
                 targetoptions: dict | None = None, pipeline_class: Any = None) -> None:
        super().__init__(py_func, locals=locals or {},
                         targetoptions={**(targetoptions or {}), **linkonly.NO_WRAPPERS},
                         pipeline_class=linkonly.LinkOnlyCompiler)

    def __call__(self, *args: Any, **kws: Any) -> Any:
        raise TypeError(f"{self.py_func.__module__}.{self.py_func.__qualname__} is an engine "
                        f"helper, compiled only into the engine's units and numslab.jit "
                        f"functions; it cannot be called from Python")


def jit(func: Callable | None = None, *, cache: bool = True, inline: bool = False,
        api: bool = False, helper: bool | None = None, keywords: dict[str, str] | None = None,
        cache_key: str = "", **overrides: Any) -> Any:
    """Compile ``func`` with the engine's options (a decorator, usable with arguments).

    ``inline=True`` makes LLVM inline the function into every jitted caller (Numba's
    ``forceinline``): the helpers of the fast paths are marked so, since a call between Numba
    functions costs a status word, an exception check and spilled registers (a bulk call of
    one object cost 280 instructions with its helpers called). The others are left to
    LLVM's judgement: inlining every helper everywhere made a first ``kmalloc`` compile 50%
    longer. ``nrt=True`` turns the Numba runtime on, for code that creates arrays
    (``numslab.net``). ``api=True`` marks a function of ``numslab.jit`` (named so when
    :func:`_call_template_refusing_threads` refuses a call). ``helper=True`` makes a function
    that only compiled code calls (units, ``numslab.jit`` functions) a helper: compiled
    link-only (:class:`HelperDispatcher`) and not cached, since no caller loaded from the
    cache needs it again; every function of the engine tier (``numslab/engine``, not a unit)
    is one unless it says ``helper=False``. ``keywords`` names the arguments every call must pass
    by keyword, each with why (:class:`KeywordDispatcher`). ``cache_key``: more for the cache to
    key on than the ABI (:class:`EngineCache`). Every jitted function of numslab is made here."""
    if "nrt" in overrides:
        overrides["_nrt"] = overrides.pop("nrt")
    options = {**OPTIONS, "forceinline": bool(inline), **overrides}

    def wrap(f: Callable) -> Any:
        # compiled under NUMBA_DISABLE_JIT too: the engine's intrinsics cannot run as Python
        # (returned as plain functions, a cold cache's first unit failed to type them, "Untyped
        # global name", and numslab.jit in a user's plain-Python @njit function raised
        # "<intrinsic _cache_arg> is not usable in pure-python")
        link_only = f.__module__.startswith(__package__ + ".") if helper is None else helper
        d = (HelperDispatcher if link_only else KeywordDispatcher if keywords else
             EngineDispatcher)(f, targetoptions=options)
        d.numslab_api = api
        if keywords:
            d.numslab_keywords = dict(keywords)
        if cache and not link_only:
            d._cache = EngineCache(f, cache_key)
        return d
    return wrap if func is None else wrap(func)


def jit_rt(func: Callable | None = None, **overrides: Any) -> Any:
    """:func:`jit` with the Numba runtime on, for code that creates arrays.

    Not inlined unless asked."""
    overrides.setdefault("inline", False)
    return jit(func, nrt=True, **overrides)


# ---- State: the state buffer, its fields as attributes ------------------------------------------
class StateType(types.Type):
    """A pointer to an allocator's state buffer.

    ``st.<field>`` is the Words of a field (the header word holding its offset is read once and may
    be hoisted: it never changes), ``st.<scalar>`` a fixed scalar such as ``st.npages``, ``st.mem``
    the arena's words."""

    addressable = True          #: ``words.address`` takes it

    def __init__(self) -> None:
        super().__init__(name="numslab.State")


State = StateType()

#: Filled by ``layout``: attribute name -> header word holding the field's offset.
FIELD_ATTRS: dict[str, int] = {}
#: Filled by ``layout``: attribute name -> words between consecutive elements (1 unless the
#: field is a column of a row table).
FIELD_STRIDES: dict[str, int] = {}
#: Filled by ``layout``: attribute name -> (header word of field ``g``'s offset, item): fixed
#: scalars (they never change once the state is made).
SCALAR_ATTRS: dict[str, tuple[int, int]] = {}
#: Filled by ``layout``: attribute name -> header word holding an address (the arena).
ADDRESS_ATTRS: dict[str, int] = {}
#: Filled by ``layout``: attribute name -> header word holding a fixed int (the arena's size).
HEADER_ATTRS: dict[str, int] = {}


@register_model(StateType)
class _StateModel(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: Any) -> None:
        super().__init__(dmm, fe_type, _P64)


@infer_getattr
class _StateAttributes(AttributeTemplate):
    key = State

    def generic_resolve(self, typ: Any, attr: str) -> Any:
        if attr in FIELD_ATTRS or attr in ADDRESS_ATTRS:
            return words_of(attr, FIELD_STRIDES.get(attr, 1))
        if attr in SCALAR_ATTRS or attr in HEADER_ATTRS:
            return types.int64


@lower_getattr_generic(StateType)
def _state_getattr(context: Any, builder: Any, typ: Any, st: Any, attr: str) -> Any:
    if attr in FIELD_ATTRS:
        off = invariant_load(builder, builder.gep(st, [ir.Constant(_I64, FIELD_ATTRS[attr])]))
        return builder.gep(st, [off])
    if attr in ADDRESS_ATTRS:
        addr = invariant_load(builder, builder.gep(st, [ir.Constant(_I64, ADDRESS_ATTRS[attr])]))
        return builder.inttoptr(addr, _P64)
    if attr in HEADER_ATTRS:
        return invariant_load(builder, builder.gep(st, [ir.Constant(_I64, HEADER_ATTRS[attr])]))
    hdr, item = SCALAR_ATTRS[attr]
    off = invariant_load(builder, builder.gep(st, [ir.Constant(_I64, hdr)]))
    return invariant_load(builder, builder.gep(st, [builder.add(off, ir.Constant(_I64, item))]))


@intrinsic
def state_at(typingctx: Any, addr: Any) -> Any:
    """The State whose buffer starts at byte address ``addr``."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], _P64)
    return State(types.int64), codegen


# ---- units: operations compiled once, called through a table --------------------------------
MAX_UNITS = 510
#: Entry addresses of the units, by slot: a unit's compiled C function once it is compiled,
#: until then a stub that compiles it. Never freed or moved: compiled code finds it by the
#: process symbol ``numslab_units``.
UNIT_TABLE = np.zeros(MAX_UNITS + 4, np.int64)
#: Slots of :data:`UNIT_TABLE` after the units'. A unit compiled on its first call may be
#: called in the middle of an engine operation, and compiling lets other threads run. So
#: the compiled caller of a unit still in its stub takes the engine (:func:`take_engine`:
#: ``ENGINE_BUSY`` raised, its thread's ``pthread_self()`` in ``ENGINE_OWNER``, the state's
#: fast paths parked at ``layout.NO_SHEAF``) in compiled code while the stub compiles.
#: Meanwhile every unit's entry (and the gate) makes other threads wait, in the function in
#: ``ENGINE_WAIT``, counted in ``ENGINE_WAITERS`` (each holds arguments it checked before:
#: a destroy's release lets them in first), and their inlined fast paths take the units.
ENGINE_BUSY, ENGINE_WAIT, ENGINE_OWNER, ENGINE_WAITERS = range(MAX_UNITS, MAX_UNITS + 4)
#: Filled by ``layout``: the header words of the CPU rows' field (``cpu_field``: offset, then
#: length) and of the arena's size, ``NO_SHEAF``'s offset past the arena, the row's columns.
PARK_LAYOUT: dict[str, int] = {}
UNITS: list[Unit] = []
UNIT_SYMBOL = "numslab_units"
ll.add_symbol(UNIT_SYMBOL, UNIT_TABLE.ctypes.data)
#: Each unit's stub, by slot: ``UNIT_TABLE`` holds it until the unit is compiled.
STUB_TABLE = np.zeros(MAX_UNITS, np.int64)
STUB_SYMBOL = "numslab_stubs"
ll.add_symbol(STUB_SYMBOL, STUB_TABLE.ctypes.data)
_table_hash: list[str] = []


def unit_table_hash() -> str:
    """Hash of the unit table's layout (every unit's slot and arity), fixed once first asked.

    Part of every cache key, since compiled callers reach units by slot."""
    if not _table_hash:
        _table_hash.append(hashlib.sha256(repr([(u.name, u.slot, u.nargs) for u in UNITS])
                                          .encode()).hexdigest()[:16])
    return _table_hash[0]


def table_address(builder: Any, symbol: str) -> Any:
    """An i64 pointer to the process table ``symbol`` (resolved when the code is loaded)."""
    mod = builder.module
    try:
        table = mod.get_global(symbol)
    except KeyError:
        table = ir.GlobalVariable(mod, _I64, symbol)
        table.linkage = "external"
    return builder.bitcast(table, _P64)


def table_load(builder: Any, symbol: str, index: Any) -> Any:
    """Load word ``index`` (an LLVM i64 value) of the process table ``symbol``."""
    return builder.load(builder.gep(table_address(builder, symbol), [index]))


#: Called as ``hook(unit, False)`` before this process first compiles or loads a unit, and as
#: ``hook(unit, True)`` when a call of it is compiled into a caller (``drivers.prewarm``: a second
#: process compiling units); None: nothing.
COMPILE_HOOK: Callable[["Unit", bool], None] | None = None


class Unit:
    """An engine operation ``f(st, a, b, ...) -> int``, compiled once as a C function.

    ``st`` is a State, the rest int64; compiled on its first call and reached through
    :data:`UNIT_TABLE`.

    Jitted code calls it like a function; Python calls ``unit(state_address, a, b, ...)``
    (through ctypes: slow, for set-up and tests; the facade's hot paths go through
    ``drivers.calls``)."""

    def __init__(self, func: Callable) -> None:
        if _table_hash:
            raise RuntimeError(f"unit {func.__qualname__} defined after the table was fixed")
        if len(UNITS) >= MAX_UNITS:
            raise RuntimeError("too many units")
        self.py_func = func
        self.name = f"{func.__module__}.{func.__qualname__}"
        for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
            setattr(self, attr, getattr(func, attr))
        self.nargs = func.__code__.co_argcount
        self.sig = types.int64(State, *[types.int64] * (self.nargs - 1))
        self.slot = len(UNITS)
        self.address = 0                        #: the compiled C function, once compiled
        self._cfunc: CFunc | None = None
        self._ctypes: Any = None
        self._proto = proto = ctypes.CFUNCTYPE(ctypes.c_int64, *[ctypes.c_int64] * self.nargs)
        self._stub = proto(self._first_call)    # kept alive: the table points at it
        UNITS.append(self)
        UNIT_TABLE[self.slot] = STUB_TABLE[self.slot] = ctypes.cast(self._stub,
                                                                    ctypes.c_void_p).value
        _register_unit_call(self)

    def __repr__(self) -> str:
        return f"<unit {self.name} slot {self.slot}{' compiled' if self.address else ''}>"

    def _first_call(self, *args: int) -> int:
        """The table's stub: compile, then run this call (only compile, 0, for a compiled caller).

        A compiled caller is :func:`_guarded_call`, which owns the engine and calls the unit
        itself. Nothing can raise here (a ctypes callback's exception is dropped, its result
        undefined) and the operation it interrupted must finish: on the main thread a Ctrl-C is
        deferred (:mod:`.interrupts`: said at once, raised as ``KeyboardInterrupt`` once the
        operation has returned to Python; it had been ignored, and a KeyboardInterrupt raised
        inside llvmlite's own callbacks was dropped there and failed the compile), as is what
        another signal's Python handler raised (it exited); elsewhere a KeyboardInterrupt
        restarts the compile; any other failure exits with its traceback (the operation can
        neither finish nor be undone)."""
        swap = interrupts.defer_sigint()
        try:
            while True:
                try:
                    run = self.compile()
                    break
                except KeyboardInterrupt:       # (raised, not signalled: noted all the same)
                    if swap:
                        interrupts.note_interrupt(self.name)
                except BaseException as e:      # noqa: BLE001 - reported, then the exit
                    if swap and interrupts.from_signal_handler(e):
                        interrupts.defer_raised(e, f"compiling {self.name}")  # (an alarm)
                        continue
                    traceback.print_exc()
                    sys.stderr.write(f"numslab: {self.name} failed to compile in the middle "
                                     f"of an engine operation, which cannot go on: exiting\n")
                    sys.stderr.flush()
                    os._exit(70)
        finally:
            if swap:
                interrupts.end_defer()
        if UNIT_TABLE[ENGINE_BUSY] != 0 and UNIT_TABLE[ENGINE_OWNER] == threading.get_ident():
            return 0
        return run(*args)

    def compile(self) -> Callable[..., int]:
        """Compile (or load from the cache) and install in the table; the ctypes function.

        :data:`COMPILE_HOOK` is told first (``drivers.prewarm``: the second process)."""
        if self._ctypes is None:
            hook = COMPILE_HOOK
            if hook is not None:
                hook(self, False)
            with JitOn():
                self._compile()
        return self._ctypes

    def _compile(self) -> None:
        """:meth:`compile`'s work."""
        cf = _UnitCFunc(self.py_func, (self.sig.args, self.sig.return_type), {},
                        dict(OPTIONS))
        cf._cache = EngineCache(self.py_func)
        with compile_lock(cf._cache._cache_path, self.name):
            cf.compile()
        self._cfunc = cf
        self.address = cf.address
        UNIT_TABLE[self.slot] = cf.address
        # Called from Python with the GIL held (PYFUNCTYPE): ctypes would otherwise
        # release it, and two threads could be inside one allocator's state at once.
        self._ctypes = ctypes.PYFUNCTYPE(ctypes.c_int64,
                                         *[ctypes.c_int64] * self.nargs)(cf.address)

    @property
    def cache_hits(self) -> int:
        """1 if the compiled code came from Numba's cache (0 if compiled or not yet loaded)."""
        return self._cfunc._cache_hits if self._cfunc is not None else 0

    def inspect_llvm(self) -> str:
        """The optimised LLVM IR of the compiled unit."""
        self.compile()
        return self._cfunc.inspect_llvm()

    def __call__(self, *args: int) -> int:
        if len(args) != self.nargs:
            raise TypeError(f"{self.name} takes {self.nargs} arguments, not {len(args)}")
        return self.compile()(*args)


interrupts.CALLBACKS.add(Unit._first_call.__code__)

class _UnitCompiler(_CFuncCompiler):
    """Numba's C-callback compiler, the function marked ``alwaysinline`` and no C wrapper made.

    ``_UnitCFunc`` adds its own wrapper."""

    def _customize_flags(self, flags: Any) -> Any:
        flags = super()._customize_flags(flags)
        flags.no_cfunc_wrapper = True
        flags.forceinline = True
        return flags


class _UnitCFunc(CFunc):
    """A unit's C function.

    Numba's own C wrapper calls the compiled function through a call marked ``noinline``: a second
    call (status word, return slot, spilled registers) inside every unit call. This wrapper is the
    same C function with the call inlined."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c = self._compiler
        self._compiler = _UnitCompiler(c.py_func, c.targetdescr, c.targetoptions, c.locals,
                                       pipeline_class=c.pipeline_class)

    def _compile_uncached(self) -> Any:
        cres = super()._compile_uncached()
        context, fndesc = cres.target_context, cres.fndesc
        module = context.create_module("unit_wrapper")
        callee = ir.Function(module, context.call_conv.get_function_type(
            fndesc.restype, fndesc.argtypes), fndesc.llvm_func_name)
        wrapper = ir.Function(module, ir.FunctionType(
            context.get_value_type(fndesc.restype),
            [context.get_value_type(t) for t in fndesc.argtypes]),
            fndesc.llvm_cfunc_wrapper_name)
        builder = ir.IRBuilder(wrapper.append_basic_block("entry"))
        _wait_while_busy(builder)   # every way in (gate, ctypes, a compiled caller) waits
        status, out = context.call_conv.call_function(builder, callee, fndesc.restype,
                                                      fndesc.argtypes, wrapper.args)
        with builder.if_then(status.is_error, likely=False):   # engine code never raises
            builder.ret(context.get_constant(fndesc.restype, 0))
        builder.ret(out)
        cres.library.add_ir_module(module)
        return cres


def _wait_while_busy(builder: Any) -> None:
    """Emit: wait while another thread compiles in the middle of an engine operation.

    While :data:`ENGINE_BUSY` is raised and ``ENGINE_OWNER`` is not this thread, call
    :func:`wait_for_engine`, and test again after it returns (a Ctrl-C in its sleep ends it early:
    a ctypes callback cannot raise, and the unit then ran half-way through the other thread's
    operation). Every unit's C entry starts so."""
    base = table_address(builder, UNIT_SYMBOL)
    busy_at = builder.gep(base, [ir.Constant(_I64, ENGINE_BUSY)])
    owner_at = builder.gep(base, [ir.Constant(_I64, ENGINE_OWNER)])
    check, other, wait, done = (builder.append_basic_block(f"busy.{n}")
                                for n in ("check", "other", "wait", "done"))
    builder.branch(check)
    builder.position_at_end(check)
    builder.cbranch(builder.icmp_signed("!=", builder.load(busy_at), ir.Constant(_I64, 0)),
                    other, done)
    builder.position_at_end(other)
    builder.cbranch(builder.icmp_signed("!=", builder.load(owner_at), thread_pointer(builder)),
                    wait, done)
    builder.position_at_end(wait)
    builder.call(builder.inttoptr(builder.load(builder.gep(base, [
        ir.Constant(_I64, ENGINE_WAIT)])), ir.FunctionType(_I64, []).as_pointer()), [])
    builder.branch(check)
    builder.position_at_end(done)


def _call_unit(builder: Any, slot: Any, args: list) -> Any:
    """Emit a call of the unit in table slot ``slot`` (an LLVM i64) with ``args``.

    ``args`` are the state pointer, then i64s, as every compiled caller makes the call: straight to
    the unit when it is compiled and no thread owns the engine, else through :func:`_guarded_call`
    (out of line, so that a user's loop carries three loads and a branch per call site, not the
    guard)."""
    base = table_address(builder, UNIT_SYMBOL)
    addr = builder.load(builder.gep(base, [slot]))
    busy = builder.load(builder.gep(base, [ir.Constant(_I64, ENGINE_BUSY)]))
    plain = builder.and_(builder.icmp_signed("!=", addr, table_load(builder, STUB_SYMBOL, slot)),
                         builder.icmp_signed("==", busy, ir.Constant(_I64, 0)))
    fnty = ir.FunctionType(_I64, [_P64] + [_I64] * (len(args) - 1))
    with builder.if_else(plain, likely=True) as (then, otherwise):
        with then:
            direct = builder.call(builder.inttoptr(addr, fnty.as_pointer()), args)
            direct_bb = builder.basic_block
        with otherwise:
            guarded = builder.call(_guarded_call(builder.module, len(args) - 1), [slot, *args])
            guarded_bb = builder.basic_block
    result = builder.phi(_I64)
    result.add_incoming(direct, direct_bb)
    result.add_incoming(guarded, guarded_bb)
    return result


def _guarded_call(module: Any, n: int) -> Any:
    """The out-of-line call of a unit of ``n`` arguments after the state, in ``module``.

    It waits while another thread owns the engine; if the unit is still its Python stub, takes the
    engine (:func:`take_engine`) while the stub compiles it, then calls the unit. All in compiled
    code: done in the stub's Python, other threads' inlined fast paths ran on the rows before the
    park and after the restore, this thread's operation half-way."""
    name = f"numslab_guarded_call_{n}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(_I64, [_I64, _P64] + [_I64] * n), name)
    fn.linkage = "linkonce_odr"
    fn.attributes.add("noinline")
    fn.attributes.add("optnone")    # (cold; optimised, it and park_rows took a user's single
    builder = ir.IRBuilder(fn.append_basic_block("entry"))  # loop to 1.8x a stack's compile)
    slot, *args = fn.args
    _wait_while_busy(builder)
    slot_at = builder.gep(table_address(builder, UNIT_SYMBOL), [slot])
    fnty = ir.FunctionType(_I64, [_P64] + [_I64] * n)
    first = builder.icmp_signed("==", builder.load(slot_at), table_load(builder, STUB_SYMBOL,
                                                                        slot))
    with builder.if_then(first, likely=False):
        take_engine(builder, args[0], True)
        builder.call(builder.inttoptr(builder.load(slot_at), fnty.as_pointer()), args)
        take_engine(builder, args[0], False)
    # the unit, compiled now
    builder.ret(builder.call(builder.inttoptr(builder.load(slot_at), fnty.as_pointer()), args))
    return fn


def take_engine(builder: Any, state: Any, take: bool) -> None:
    """Emit: take the engine for this thread (``take``), or give it back.

    Taking raises :data:`ENGINE_BUSY`, names it ``ENGINE_OWNER`` and, the first time, parks the
    fast paths of ``state``; giving back lowers it and, the last time, puts the rows back and
    clears the owner."""
    base = table_address(builder, UNIT_SYMBOL)
    busy_at = builder.gep(base, [ir.Constant(_I64, ENGINE_BUSY)])
    one, zero = ir.Constant(_I64, 1), ir.Constant(_I64, 0)
    busy = builder.load(busy_at)
    builder.store(builder.add(busy, one) if take else builder.sub(busy, one), busy_at)
    owner_at = builder.gep(base, [ir.Constant(_I64, ENGINE_OWNER)])
    if take:
        builder.store(thread_pointer(builder), owner_at)
    with builder.if_then(builder.icmp_signed("==", busy if take else builder.sub(busy, one),
                                             zero)):
        builder.call(park_rows(builder.module, take), [state])
        if not take:
            builder.store(zero, owner_at)


def park_rows(module: Any, park: bool) -> Any:
    """``numslabpark_rows(st)`` (``park``) or ``numslab_unpark_rows(st)`` in ``module``.

    ``park`` points every CPU row's main sheaf of state ``st`` at its ``NO_SHEAF`` (empty to an
    allocation, full to a free), keeping the handle in the row's ``parked`` column;
    ``numslab_unpark_rows(st)`` puts each parked handle back, where the row still points at
    ``NO_SHEAF`` (a row that Python wrote meanwhile, a new cache's, stays as written), and clears
    the column."""
    name = "numslab_park_rows" if park else "numslab_unpark_rows"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_P64]), name)
    fn.linkage = "linkonce_odr"
    fn.attributes.add("noinline"), fn.attributes.add("optnone")   # (cold: as _guarded_call)
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    st, = fn.args
    lay = PARK_LAYOUT
    const = lambda v: ir.Constant(_I64, v)      # noqa: E731
    zero = const(0)
    words = builder.gep(st, [builder.load(builder.gep(st, [const(lay["cpu_field"])]))])
    nrows = builder.sdiv(builder.load(builder.gep(st, [const(lay["cpu_field"] + 1)])),
                         const(lay["ncols"]))
    no_sheaf = builder.add(builder.load(builder.gep(st, [const(lay["mem_size"])])),
                           const(lay["no_sheaf"]))
    with cgutils.for_range(builder, nrows) as loop:
        row = builder.mul(loop.index, const(lay["ncols"]))
        main_at = builder.gep(words, [builder.add(row, const(lay["main"]))])
        kept_at = builder.gep(words, [builder.add(row, const(lay["parked"]))])
        main = builder.load(main_at)
        if park:
            with builder.if_then(builder.icmp_signed("!=", main, zero)):
                builder.store(main, kept_at)
                builder.store(no_sheaf, main_at)
        else:
            kept = builder.load(kept_at)
            with builder.if_then(builder.icmp_signed("!=", kept, zero)):
                with builder.if_then(builder.icmp_signed("==", main, no_sheaf)):
                    builder.store(kept, main_at)
                builder.store(zero, kept_at)
    builder.ret_void()
    return fn


def thread_pointer(builder: Any) -> Any:
    """The calling thread's pointer, glibc's ``pthread_self()`` on x86-64 (``%fs:0``).

    -1 elsewhere (no thread is then taken for the engine's owner)."""
    if _MACHINE != "x86_64":
        return ir.Constant(_I64, -1)
    return builder.asm(ir.FunctionType(_I64, []), "movq %fs:0, $0", "=r", [], False)


def _register_unit_call(u: Unit) -> None:
    """Type and lower calls of unit ``u`` from jitted code: an indirect call through its slot."""
    key = f"numslab.unit.{u.name}"

    @infer_global(u, typing_key=key)
    class _Call(AbstractTemplate):
        def generic(self, args: tuple, kws: dict) -> Any:
            if kws or len(args) != u.nargs or args[0] is not State:
                return None
            if all(isinstance(a, (types.Integer, types.Boolean)) for a in args[1:]):
                return u.sig

    @lower_builtin(key, *u.sig.args)
    def _lower(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        hook = COMPILE_HOOK
        if hook is not None:                    # (a first call of it may follow soon)
            hook(u, True)
        return _call_unit(builder, ir.Constant(_I64, u.slot), list(args))


def unit(func: Callable) -> Unit:
    """Decorator: make ``func(st, ...)`` a :class:`Unit`."""
    return Unit(func)


@intrinsic
def call_slot(typingctx: Any, slot: Any, st: Any, args: Any) -> Any:
    """Call the unit in table slot ``slot`` (a run-time int) with ``st`` and the ints ``args``.

    ``args`` is a tuple. It waits first while :data:`ENGINE_BUSY`; the drivers' trampolines use
    it."""
    if not isinstance(args, types.BaseTuple) or not all(
            isinstance(a, types.Integer) for a in args):
        return None

    def codegen(context: Any, builder: Any, sig: Any, llargs: Any) -> Any:
        n = len(sig.args[2])
        vals = [context.cast(builder, builder.extract_value(llargs[2], i), sig.args[2][i],
                             types.int64) for i in range(n)]
        return _call_unit(builder, llargs[0], [llargs[1], *vals])
    return types.int64(slot, st, args), codegen
