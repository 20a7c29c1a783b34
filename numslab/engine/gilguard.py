"""Threads and the engine: refusing compiled code that may run without the GIL, and turn-taking.

The refusal of compiled code that may run without the GIL reaching ``numslab.jit`` (two wraps of
Numba's ``Dispatcher``, installed when the engine is imported: ``ConcurrentUseError``), and the
intrinsics by which units see and take turns in the engine.

numslab's structures are not safe for concurrent entry: Python threads and GIL-holding compiled
code take turns, and compiled code that may run without the GIL (``nogil=True``,
``parallel=True``, a ``@cfunc``) is refused when it is compiled, or when a function reaching the
engine is taken as a first-class function (ARCHITECTURE.md, "Threads").
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from typing import Any, Callable

from llvmlite import ir
from numba import types
from numba.core import typeinfer
from numba.core.dispatcher import Dispatcher
from numba.core.targetconfig import _FlagsStack
from numba.extending import intrinsic

from ..errors import ConcurrentUseError
from . import interrupts
from .native import (_I64, ENGINE_BUSY, ENGINE_OWNER, ENGINE_WAIT, ENGINE_WAITERS, UNIT_SYMBOL,
                     UNIT_TABLE, HelperDispatcher, State, _wait_while_busy, table_load,
                     take_engine)


def _threaded_callers() -> str:
    """What may run without the GIL among the functions being compiled in this thread, or ``""``.

    The functions are the caller and every function whose compile led to it; ``""`` if nothing."""
    for flags in reversed(_FlagsStack()._stack):
        if getattr(flags, "release_gil", False):
            return "a nogil=True function"
        # a @cfunc (ctypes, cffi): Numba's C-callback compiler alone asks for the C wrapper
        # without the CPython one and compiles later (an @overload or register_jitable
        # implementation also has no CPython wrapper: it was refused as a @cfunc)
        if flags.no_cpython_wrapper and not flags.no_cfunc_wrapper and flags.no_compile:
            return "a @cfunc (called from C, it may run without the GIL)"
        par = getattr(flags, "auto_parallel", None)
        if par is not None and getattr(par, "enabled", False):
            return "a parallel=True function (prange)"
    return ""


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def typing_frames() -> tuple[str | None, str | None, str]:
    """The call Numba is typing, from its type inference frames on the stack.

    The outermost numslab function being typed below the user's (a ``numslab.jit`` function), the
    user's function, and ``" at FILE:LINE"`` of its call (``""`` unknown); ``None`` where unknown.
    (For error messages: a compile-time refusal otherwise named neither.)"""
    api = user = loc = None
    f = sys._getframe(1)
    while f is not None and (user is None or loc is None):
        s = f.f_locals.get("self")
        if isinstance(s, typeinfer.TypeInferer) and user is None:
            if os.path.abspath(s.func_id.filename).startswith(_PACKAGE):
                api = s.func_id.func_name
            else:               # (its frame resolving the callee comes before its call's)
                user = s.func_id.func_qualname
        elif isinstance(s, typeinfer.CallConstraint) and loc is None and \
                not os.path.abspath(str(s.loc.filename)).startswith(_PACKAGE):
            loc = s.loc
        f = f.f_back
    where = f" at {os.path.basename(str(loc.filename))}:{loc.line}" if loc else ""
    return api, user, where


def _calls_units(cres: Any) -> bool:
    """Whether compiled code reaches numslab's engine: its module refers to the unit table.

    Its module, with every function it links in, compiled now or loaded from a cache."""
    try:
        mod = cres.library._get_module_for_linking()
    except RuntimeError:                        # a library with no function to link
        return False
    return any(g.name == UNIT_SYMBOL for g in mod.global_variables)


def _refusal(d: Dispatcher, how: str, advice: str) -> ConcurrentUseError:
    """The error refusing ``d``, ``how`` it was reached, and ``advice``.

    ``d`` is a ``numslab.jit`` function, or a user's function that calls one."""
    name = d.py_func.__name__
    what = f"numslab.jit.{name}" if getattr(d, "numslab_api", False) else \
        f"{name} (which calls numslab.jit)"
    return ConcurrentUseError(f"{what} {how}{'' if how.endswith('and') else ':'} numslab "
                              f"does not support concurrent entry into an allocator from "
                              f"compiled threads yet; {advice}")


_NUMBA_CALL_TEMPLATE = Dispatcher.get_call_template


def _call_template_refusing_threads(self: Dispatcher, args: tuple, kws: dict) -> Any:
    """Numba's ``Dispatcher.get_call_template``, refusing engine calls from code without the GIL.

    How a jitted caller types a call of a jitted function. The call is refused when the caller, or
    any function whose compile led to it, may run without the GIL (``nogil=True``,
    ``parallel=True``, a ``@cfunc``, which ctypes calls without it) and the callee's compiled code
    reaches numslab's engine: a ``numslab.jit`` function, or a user's helper that calls one,
    whether compiled for this caller, compiled before for one holding the GIL, or loaded from
    Numba's cache (Numba reuses those without typing their body again, so the test is on the
    compiled code). numslab's structures are not safe for concurrent entry (Python threads and
    GIL-holding compiled code take turns). Compile time only; the scan runs only for those
    callers."""
    found = _NUMBA_CALL_TEMPLATE(self, args, kws)
    where = _threaded_callers()
    if where and not isinstance(self, HelperDispatcher):   # (a numslab.jit function's helper:
        # its caller, linking it in, is refused under its own name)
        cres = self.overloads.get(tuple(found[2]))
        if any(_calls_units(c) for c in ([cres] if cres is not None else
                                         self.overloads.values())):
            _, user, at = typing_frames()
            raise _refusal(self, f"called from {where}" + (f" ({user}{at})" if user else ""),
                           "call it from functions that hold the GIL (no nogil, no "
                           "parallel, no cfunc)")
    return found

_NUMBA_COMPILE_RESULT = Dispatcher.get_compile_result


def _compile_result_refusing_pointers(self: Dispatcher, sig: Any) -> Any:
    """Numba's ``Dispatcher.get_compile_result``, refusing the address of engine-reaching code.

    Every use of a jitted function as a first-class function (``numba.types.FunctionType``: an
    argument, a cast, a tuple of functions) goes through it to take its address; it refuses a
    function whose compiled code reaches numslab's engine. A call through such an address is typed
    from the declared signature alone, so :func:`_call_template_refusing_threads` never sees it: a
    ``nogil=True`` or ``parallel=True`` function given ``churn`` as an argument ran numslab.jit
    without the GIL, and four threads handed one address out twice. Whether the code that will call
    the address holds the GIL is not known here, so it is refused always; the verdict is kept per
    signature (the call-time path asks on every call)."""
    cres = _NUMBA_COMPILE_RESULT(self, sig)
    seen = self.__dict__.setdefault("_numslab_pointer_ok", {})
    key = tuple(cres.signature.args)
    if key not in seen:
        seen[key] = not _calls_units(cres)
    if not seen[key]:
        raise _refusal(self, f"taken as a first-class function ({sig}): numslab cannot "
                             f"tell whether the code calling it holds the GIL, and",
                       "call it directly from functions that hold the GIL")
    return cres


def _install(attr: str, wrapper: Callable) -> None:
    """Put ``wrapper`` in the place of Numba's ``Dispatcher.<attr>``, once."""
    if not getattr(getattr(Dispatcher, attr), "numslab", False):
        wrapper.numslab = True                              # type: ignore[attr-defined]
        setattr(Dispatcher, attr, wrapper)


_install("get_call_template", _call_template_refusing_threads)
_install("get_compile_result", _compile_result_refusing_pointers)


def wait_for_engine() -> int:
    """Block (the GIL released) while another thread compiles a unit inside the engine. 0.

    The thread is counted in ``ENGINE_WAITERS`` meanwhile. (No point where the interpreter may
    switch threads lies between the last test of ``ENGINE_BUSY`` and the return to the caller.)"""
    me = threading.get_ident()
    if UNIT_TABLE[ENGINE_BUSY] and UNIT_TABLE[ENGINE_OWNER] != me:
        UNIT_TABLE[ENGINE_WAITERS] += 1
        try:
            while UNIT_TABLE[ENGINE_BUSY] and UNIT_TABLE[ENGINE_OWNER] != me:
                time.sleep(0.0002)
        finally:
            UNIT_TABLE[ENGINE_WAITERS] -= 1
    return 0


interrupts.CALLBACKS.add(wait_for_engine.__code__)      # (a deferred Ctrl-C waits there)
_WAIT = ctypes.CFUNCTYPE(ctypes.c_int64)(wait_for_engine)      # kept alive: the table has it
UNIT_TABLE[ENGINE_WAIT] = ctypes.cast(_WAIT, ctypes.c_void_p).value


# ---- turns in the engine, as units see them ----------------------------------------------
@intrinsic
def hold_engine(typingctx: Any, st: Any, on: Any) -> Any:
    """In a unit: take the engine for this thread (``on``), or give it back (0).

    As a first call's guard does (:func:`native.take_engine`). Other threads' units wait meanwhile;
    their inlined fast paths find ``NO_SHEAF`` and take the units."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        state, take = args
        with builder.if_else(builder.icmp_signed("!=", take, ir.Constant(_I64, 0))) as (
                then, otherwise):
            with then:
                take_engine(builder, state, True)
            with otherwise:
                take_engine(builder, state, False)
        return context.get_dummy_value()
    if st is State and isinstance(on, types.Integer):
        return types.none(st, on), codegen


@intrinsic
def wait_for_turn(typingctx: Any) -> Any:
    """Wait while another thread is in the middle of an engine operation.

    Its compile parked the fast paths (:func:`native._wait_while_busy`, as every unit's entry
    does). ``numslab.jit.is_live`` reads the state so, with no unit of its own: it read a state
    another thread was changing, and, using no unit, ran in nogil and parallel functions, which the
    refusal (:func:`_calls_units`) now sees."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        _wait_while_busy(builder)
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def engine_waiters(typingctx: Any) -> Any:
    """The number of threads waiting to enter the engine (``ENGINE_WAITERS``), in a unit.

    Each may hold a cache id it checked before it waited."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return table_load(builder, UNIT_SYMBOL, ir.Constant(_I64, ENGINE_WAITERS))
    return types.int64(), codegen
