"""From Python to the engine: trampolines that call a unit by slot with plain ints.

An int64 array is passed as its address. They are reached through their native entry points, which
skip Numba's per-call type dispatch. The facade checks every argument's type before it calls one.
"""
from __future__ import annotations

import weakref
from functools import lru_cache, partial
from typing import Any, Callable

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..engine.native import Unit, call_slot, jit, state_at
from ..errors import AllocatorGoneError


@intrinsic
def data_address(typingctx: Any, arr: Any) -> Any:
    """The address of an array's first element, with no reference count touched."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, ir.IntType(64))
    if isinstance(arr, types.Array):
        return types.int64(arr), codegen


@jit
def _call0(slot, st):
    return call_slot(slot, state_at(st), ())


@jit
def _call1(slot, st, a):
    return call_slot(slot, state_at(st), (a,))


@jit
def _call2(slot, st, a, b):
    return call_slot(slot, state_at(st), (a, b))


@jit
def _call3(slot, st, a, b, c):
    return call_slot(slot, state_at(st), (a, b, c))


@jit
def _call4(slot, st, a, b, c, d):
    return call_slot(slot, state_at(st), (a, b, c, d))


@jit
def _call5(slot, st, a, b, c, d, e):
    return call_slot(slot, state_at(st), (a, b, c, d, e))


@jit
def _call6(slot, st, a, b, c, d, e, f):
    return call_slot(slot, state_at(st), (a, b, c, d, e, f))


@jit
def _call2a(slot, st, a, b, arr):
    return call_slot(slot, state_at(st), (a, b, data_address(arr)))


@jit
def _call3a(slot, st, a, b, c, arr):
    return call_slot(slot, state_at(st), (a, b, c, data_address(arr)))


@jit
def _call4a(slot, st, a, b, c, d, arr):
    return call_slot(slot, state_at(st), (a, b, c, d, data_address(arr)))


@jit
def _call5a(slot, st, a, b, c, d, e, arr):
    return call_slot(slot, state_at(st), (a, b, c, d, e, data_address(arr)))


_PLAIN = (_call0, _call1, _call2, _call3, _call4, _call5, _call6)
_WITH_ARRAY = {2: _call2a, 3: _call3a, 4: _call4a, 5: _call5a}
_I64 = np.zeros(1, np.int64)


def fastcall(dispatcher: Any, *example_args: Any) -> Callable:
    """The native entry point of ``dispatcher`` for the types of ``example_args``.

    It unboxes arguments with fixed types and skips the dispatcher's per-call type resolution
    (about 100 ns of a call). Only callers that always pass exactly those types may use it."""
    if not hasattr(dispatcher, "compile"):      # NUMBA_DISABLE_JIT: plain Python function
        return dispatcher
    sig = tuple(nb.typeof(a) for a in example_args)
    dispatcher.compile(sig)
    for s, cres in dispatcher.overloads.items():
        if tuple(s) == sig:
            return cres.entry_point
    raise RuntimeError(f"no compiled overload of {dispatcher} for {sig}")  # pragma: no cover


@lru_cache(maxsize=None)
def trampoline(nargs: int, array: bool) -> Callable:
    """The native entry point calling a unit of ``nargs`` arguments after the state.

    ``t(slot, state_address, *args)``; the last argument is an int64 array's address if ``array``.
    """
    if array:
        return fastcall(_WITH_ARRAY[nargs - 1], *[0] * (nargs + 1), _I64)
    return fastcall(_PLAIN[nargs], *[0] * (nargs + 2))


def bound(u: Unit, st: int, array: bool = False) -> Callable:
    """``f(*args)`` calling unit ``u`` on the state at address ``st``.

    A ``functools.partial`` of the trampoline's entry point; its last argument an int64 array if
    ``array``."""
    return partial(trampoline(u.nargs - 1, array), u.slot, st)


def bind_lazily(obj: Any, attr: str, u: Unit, array: bool) -> None:
    """Make ``obj.<attr>(*args)`` call unit ``u`` on the allocator ``obj``, bound on first call.

    On its first call it binds the trampoline's native entry point (compiled or loaded then,
    :func:`bound`), and then is it, so that start-up loads only what is used. It holds ``obj``
    weakly (no reference cycle), so a copy kept past the allocator's end raises
    ``AllocatorGoneError``."""
    ref = weakref.ref(obj)

    def first_call(*args: Any) -> Any:
        sa = ref()
        if sa is None:
            raise AllocatorGoneError(f"{attr}: its allocator is gone")
        fn = bound(u, sa._st, array)
        setattr(sa, attr, fn)
        return fn(*args)
    setattr(obj, attr, first_call)
