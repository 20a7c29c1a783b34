"""Allocators as compiled code sees them: a table of live allocators' state buffers, and handles.

The table is process-wide; ``SlabHandle`` (``sa.handle``) is a slot of it passed into @njit code as
one integer, with no reference count.

A handle is ``(generation << 16) | slot``. Compiled code looks the slot up on every call and
refuses a handle whose allocator is gone (its slot cleared or reused under a new generation),
so a handle kept past its allocator raises instead of touching freed memory. The handle's
Numba type is named after the engine's ABI: a user's function cached against another numslab
has another signature and is compiled again rather than loaded.
"""
from __future__ import annotations

import inspect
import operator
import os
import sys
import threading
import weakref
from typing import Any, Callable

import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils, typeinfer
from numba.core.typing.typeof import Purpose
from numba.extending import (NativeValue, box, intrinsic, models, register_model,
                             typeof_impl, unbox)

from ..engine.gilguard import _PACKAGE, typing_frames
from ..engine.layout import HEADER
from ..engine.native import ABI, State, invariant_load, table_address
from ..errors import AllocatorGoneError, NotPicklableError, WrongTypeError

#: An allocator's describer for error texts: ``(cache id, address) -> (cache name, note)``.
Describer = Callable[[int, int], "tuple[str | None, str | None]"]

MAX_ALLOCATORS = 1 << 16
#: (state address, generation) per slot; never freed or moved (symbol ``numslab_allocators``).
ALLOCATOR_TABLE = np.zeros(2 * MAX_ALLOCATORS, np.int64)
ALLOCATOR_SYMBOL = "numslab_allocators"
ll.add_symbol(ALLOCATOR_SYMBOL, ALLOCATOR_TABLE.ctypes.data)
#: Per slot, the address of the Python object owning its allocator's arena (0: none), read by
#: :func:`owned_arena` under the GIL; :data:`_owners` keeps each object alive meanwhile.
OWNER_TABLE = np.zeros(MAX_ALLOCATORS, np.int64)
OWNER_SYMBOL = "numslab_arena_owners"
ll.add_symbol(OWNER_SYMBOL, OWNER_TABLE.ctypes.data)
_owners: dict[int, Any] = {}
#: Per state address, its allocator's describer (a weak method: it does not keep the
#: allocator alive): ``(cache id, address) -> (cache name, note)``, for the text of
#: numslab.jit's errors (:func:`describe`).
_namers: dict[int, Callable[[], Describer | None]] = {}
#: Re-entrant: an allocation under it may run the garbage collector, whose finalizer of a dead
#: allocator calls :func:`unregister` in the same thread.
_lock = threading.RLock()
_free_slots = list(range(MAX_ALLOCATORS - 1, 0, -1))     # slot 0 is never used
_generation = [0]


def register(state_address: int, owner: Any = None, namer: Describer | None = None) -> int:
    """Enter a state buffer in the table; its handle value.

    With it, the object owning its arena (an array over it: :func:`owned_arena` views keep it
    alive) and the bound method describing its caches and addresses (held weakly:
    :func:`describe`)."""
    ref = None if namer is None else weakref.WeakMethod(namer)     # type: ignore[arg-type]
    with _lock:
        if not _free_slots:
            raise RuntimeError(f"more than {MAX_ALLOCATORS - 1} live allocators")
        slot = _free_slots.pop()
        _generation[0] = _generation[0] % ((1 << 47) - 1) + 1
        gen = _generation[0]
        ALLOCATOR_TABLE[2 * slot + 1] = gen
        ALLOCATOR_TABLE[2 * slot] = state_address
        if owner is not None:
            _owners[slot] = owner
            OWNER_TABLE[slot] = id(owner)
        if ref is not None:
            _namers[state_address] = ref
    return (gen << 16) | slot


def unregister(handle: int) -> None:
    """Clear a handle's slot (its allocator is gone): compiled code then refuses it."""
    slot = handle & 0xFFFF
    with _lock:
        if ALLOCATOR_TABLE[2 * slot + 1] == handle >> 16:
            _namers.pop(int(ALLOCATOR_TABLE[2 * slot]), None)
            ALLOCATOR_TABLE[2 * slot] = 0
            ALLOCATOR_TABLE[2 * slot + 1] = 0
            OWNER_TABLE[slot] = 0
            _owners.pop(slot, None)
            _free_slots.append(slot)


def describe(state_address: int, cache: int, addr: int) -> tuple[str | None, str | None]:
    """The name of cache ``cache`` and a note on ``addr`` from the allocator at ``state_address``.

    The note is what that live allocator knows of ``addr`` that its engine does not (an object
    waiting for an RCU grace period); None where nothing is known (no such allocator or cache; an
    error path's lookup)."""
    ref = _namers.get(state_address) if state_address else None
    namer = ref() if ref is not None else None
    return (None, None) if namer is None else namer(cache, addr)


class _HandleClass(type):
    """The class of :class:`SlabHandle`: ``dir()`` and so ``help()`` name its own attributes.

    Not ``int``'s sixty-odd methods, which ``help(numslab.jit)`` listed for pages after the few
    lines saying what a handle is. Its instances, their ``dir()`` and their Numba type are an
    ``int``'s as before."""

    def __dir__(cls) -> list[str]:
        return sorted(k for c in cls.__mro__ if c not in (int, object) for k in vars(c)
                      if k not in ("__new__", "__dict__"))

    @property
    def __signature__(cls) -> inspect.Signature:
        """None shown (``help`` showed ``SlabHandle(value, owner)``): a handle is ``sa.handle``."""
        return inspect.Signature()


class SlabHandle(int, metaclass=_HandleClass):
    """An allocator's handle: what your ``@njit`` function takes to reach that allocator.

    What it is: an ``int`` naming the allocator's slot in numslab's process-wide table and the
    slot's generation (:attr:`value`). Inside compiled code it is that integer, one machine word
    with no reference count (Numba types it ``numslab.SlabHandle[...]``, named after numslab's
    build), so passing it costs nothing.

    How to get one: ``sa.handle`` of a ``numslab.SlabAllocator``; you never make one. Pass it as
    an argument of your function, with ``cache.id`` (a handle in a global or closure variable is
    refused as the function compiles), and call ``numslab.jit``'s functions with it. A handle
    that compiled code returns (alone, in a tuple, a jitclass or a typed List) comes back to
    Python as its allocator's ``sa.handle``.

    Lifetime: this object keeps its allocator alive while Python holds it. Kept inside compiled
    values (a jitclass field, a typed List or Dict) it is only the integer and keeps nothing
    alive: a call through it once the allocator is gone raises ``numslab.AllocatorGoneError``
    (never touches freed memory), so keep ``sa`` or ``sa.handle`` in a Python name while they
    use it. It names an allocator of this process only: pickling or copying it raises
    ``numslab.NotPicklableError``."""

    def __new__(cls, value: int, owner: Any) -> "SlabHandle":
        self = super().__new__(cls, operator.index(value))     # an integer, not a float
        self._owner = owner
        return self

    @property
    def value(self) -> int:
        """The handle as a plain int: ``(generation << 16) | slot``."""
        return int(self)

    def __reduce__(self) -> tuple:
        """Refuse pickling and copying (``NotPicklableError``)."""
        raise NotPicklableError(f"{self!r} cannot be pickled or copied: it names an allocator "
                                "of this process (pass sa.handle to compiled code here)")

    def __repr__(self) -> str:
        """``<SlabHandle slot N>``: its slot in the table of allocators."""
        return f"<SlabHandle slot {int(self) & 0xFFFF}>"


class SlabHandleType(types.Type):
    """Numba type of :class:`SlabHandle`: an int64, named after the engine's ABI."""

    def __init__(self) -> None:
        super().__init__(name=f"numslab.SlabHandle[{ABI}]")


slab_handle = SlabHandleType()
# Numba's dispatcher types an argument with a ``_numba_type_`` attribute from that attribute,
# in C, instead of calling back into Python's typeof() (about 2.5 µs per call).
SlabHandle._numba_type_ = slab_handle


@typeof_impl.register(SlabHandle)
def _typeof_handle(val: SlabHandle, c: Any) -> SlabHandleType:
    if c.purpose == Purpose.constant:
        # a global or closure variable of compiled code is frozen into its machine code (and
        # into Numba's cache): it would not keep its allocator alive, and in another process
        # would name whichever allocator holds its slot and generation there
        raise WrongTypeError(f"numslab.jit: {val!r} is a global or closure variable of "
                             f"compiled code; pass sa.handle to the function as an argument"
                             f"{_reading_function()}")
    return slab_handle


def _reading_function() -> str:
    """Where a global or closure variable Numba is typing is read: ``" (in FUNC at FILE:LINE)"``.

    From Numba's type inference frames on the stack; ``""`` when they do not say."""
    f = sys._getframe(2)
    while f is not None:
        s, inst = f.f_locals.get("self"), f.f_locals.get("inst")
        if isinstance(s, typeinfer.TypeInferer) and inst is not None:
            loc = inst.loc
            return (f" (in {s.func_id.func_qualname} at {os.path.basename(str(loc.filename))}"
                    f":{loc.line})")
        f = f.f_back
    return ""


@register_model(SlabHandleType)
class _HandleModel(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: Any) -> None:
        super().__init__(dmm, fe_type, ir.IntType(64))


@unbox(SlabHandleType)
def _unbox_handle(typ: Any, obj: Any, c: Any) -> NativeValue:
    native = c.pyapi.long_as_longlong(obj)             # a SlabHandle is an int
    return NativeValue(native, is_error=cgutils.is_not_null(c.builder, c.pyapi.err_occurred()))


#: The refusal of a handle whose allocator is gone, from compiled code and from Python.
GONE = ("numslab.jit: the handle's allocator no longer exists (a handle kept in compiled "
        "code's values, a jitclass, typed List or Dict, keeps no allocator alive: keep the "
        "allocator in a Python name while they use it)")


def handle_of(value: int) -> SlabHandle:
    """The ``sa.handle`` of the live allocator whose handle value is ``value``, else ``SlabError``.

    The value of a handle that compiled code gives back to Python: returned, in a tuple, a jitclass
    or a typed list."""
    slot = value & 0xFFFF
    with _lock:
        ref = _namers.get(int(ALLOCATOR_TABLE[2 * slot])) \
            if ALLOCATOR_TABLE[2 * slot + 1] == value >> 16 else None
    namer = ref() if ref is not None else None
    if namer is None:
        raise AllocatorGoneError(GONE)
    return namer.__self__.handle


@box(SlabHandleType)
def _box_handle(typ: Any, val: Any, c: Any) -> Any:
    # (Numba's default raised "cannot convert native numslab.SlabHandle to Python object",
    # and a tuple holding a handle raised SystemError, "a result with an exception set")
    fn = c.pyapi.unserialize(c.pyapi.serialize_object(handle_of))
    arg = c.pyapi.long_from_longlong(val)
    obj = c.pyapi.call_function_objargs(fn, [arg])
    c.pyapi.decref(arg)
    c.pyapi.decref(fn)
    return obj


class FacadeObjectType(types.Opaque):
    """Numba type of a facade object passed to compiled code, where ``numslab.jit`` takes a number.

    A ``KmemCache`` (pass its id, ``c.id``) or a ``SlabAllocator`` (its handle, ``sa.handle``).
    Typed, so that a call passing one is refused naming the argument and what to pass (``hint``),
    not with Numba's "Cannot determine Numba type" (a ``TypingError``, no ``TypeError``) before any
    numslab code is reached."""

    def __init__(self, what: str, hint: str) -> None:
        self.what, self.hint = what, hint
        super().__init__(name=f"numslab.{what}")


class CacheObjectType(FacadeObjectType):
    """:class:`FacadeObjectType` of a ``KmemCache``."""

    def __init__(self) -> None:
        super().__init__("KmemCache", "pass its id, c.id")


cache_object = CacheObjectType()
allocator_object = FacadeObjectType("SlabAllocator", "pass its handle, sa.handle")
register_model(FacadeObjectType)(models.OpaqueModel)
register_model(CacheObjectType)(models.OpaqueModel)


def type_cache_objects(cls: type) -> None:
    """Give ``cls`` (the facade's ``KmemCache``) the Numba type :data:`cache_object`.

    A function that would take one as an argument (not through ``numslab.jit``, which refuses it as
    it compiles) raises ``TypeError`` when called."""
    typeof_impl.register(cls)(lambda val, c: cache_object)


def type_allocator_objects(cls: type) -> None:
    """Give ``cls`` (``SlabAllocator``) the Numba type :data:`allocator_object`.

    As :func:`type_cache_objects` does for caches."""
    typeof_impl.register(cls)(lambda val, c: allocator_object)


def _unbox_facade_object(typ: Any, obj: Any, c: Any) -> NativeValue:
    c.pyapi.err_set_string("PyExc_TypeError", f"numslab: a {typ.what} cannot be passed to "
                           f"compiled code: {typ.hint}")
    return NativeValue(c.context.get_dummy_value(), is_error=cgutils.true_bit)


unbox(FacadeObjectType)(_unbox_facade_object)     # (its subclass's too: looked up by MRO)


def _entry(builder: Any, value: Any) -> Any:
    """Pointer to the table entry (state address, generation) of handle value ``value``."""
    i64 = ir.IntType(64)
    slot = builder.and_(value, ir.Constant(i64, 0xFFFF))
    return builder.gep(table_address(builder, ALLOCATOR_SYMBOL),
                       [builder.shl(slot, ir.Constant(i64, 1))])


def typing_site() -> str:
    """Where the ``numslab.jit`` call being typed is, for a typing guard's ``TypeError``.

    ``" (numslab.jit.NAME, called in FUNC at FILE:LINE)"`` (:func:`gilguard.typing_frames`); ``""``
    when Numba's type inference frames do not say."""
    api, user, where = typing_frames()
    if api and user:
        return f" (numslab.jit.{api}, called in {user}{where})"
    if api:                         # called from Python (a user's function under
        return f" (numslab.jit.{api}{_python_caller()})"      # NUMBA_DISABLE_JIT, or direct)
    return ""


def _python_caller() -> str:
    """The user's line calling into numslab from Python: ``", called at FILE:LINE"``.

    The innermost Python frame on the stack outside numslab and Numba; ``""`` if none."""
    import numba
    skip = (_PACKAGE, os.path.dirname(os.path.abspath(numba.__file__)))
    f = sys._getframe(2)
    while f is not None:
        name = os.path.abspath(f.f_code.co_filename)
        if not name.startswith(skip) and not f.f_code.co_filename.startswith("<"):
            return f", called at {os.path.basename(name)}:{f.f_lineno}"
        f = f.f_back
    return ""


def _check_handle(h: Any) -> None:
    """Typing guard: refuse anything but a :class:`SlabHandle` where ``numslab.jit`` wants one.

    The refusal says what to pass (``sa.handle``); an integer such as ``int(sa.handle)`` or a cache
    id in its place would otherwise fail in Numba's typing of numslab's own helpers, far from the
    user's call."""
    if not isinstance(h, SlabHandleType):
        raise WrongTypeError(f"numslab.jit: the first argument must be an allocator's "
                             f"handle (pass sa.handle itself, a SlabHandle), not "
                             f"{'the allocator' if h is allocator_object else h}"
                             f"{typing_site()}")


# The slot cannot change while a caller runs (the SlabHandle passed in keeps its allocator
# alive), so its loads are invariant: they may be hoisted out of the caller's loops.
@intrinsic
def state_of(typingctx: Any, h: Any) -> Any:
    """The State in handle ``h``'s slot: null if the slot is free, another allocator's if reused.

    :func:`handle_live` tells whether the slot was reused. Loaded as a pointer known to reach over
    the whole header (or null), so that header words may be loaded ahead of the checks and out of
    the caller's loops."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i64 = ir.IntType(64)
        ptr = invariant_load(builder, builder.bitcast(_entry(builder, args[0]),
                                                      i64.as_pointer().as_pointer()))
        ptr.set_metadata("dereferenceable_or_null", builder.module.add_metadata(
            [ir.Constant(i64, 8 * HEADER)]))
        return ptr
    _check_handle(h)
    return State(h), codegen


@intrinsic
def handle_live(typingctx: Any, h: Any) -> Any:
    """True if handle ``h``'s allocator still holds its slot (the generations match)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i64 = ir.IntType(64)
        gen = invariant_load(builder, builder.gep(_entry(builder, args[0]),
                                                  [ir.Constant(i64, 1)]))
        return builder.icmp_unsigned("==", gen, builder.lshr(args[0], ir.Constant(i64, 16)))
    _check_handle(h)
    return types.boolean(h), codegen


@intrinsic
def owned_arena(typingctx: Any, h: Any, mem: Any, n: Any) -> Any:
    """The ``n`` bytes at ``mem`` (handle ``h``'s arena) as a uint8 array, ``uint8[n]``.

    The array holds a reference to the arena's owner (:data:`OWNER_TABLE`), so that it stays valid
    after the allocator is gone, as ``sa.memory`` does. Taken under the GIL, which the allocator's
    release also holds; an empty array if the handle's allocator is gone."""
    arrty = types.Array(types.uint8, 1, "C")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i64, i32, i8p = ir.IntType(64), ir.IntType(32), ir.IntType(8).as_pointer()
        hv, data, size = args[0], builder.bitcast(args[1], i8p), args[2]
        mod = builder.module
        ensure = cgutils.get_or_insert_function(mod, ir.FunctionType(i32, []),
                                                "PyGILState_Ensure")
        release = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), [i32]),
                                                 "PyGILState_Release")
        new_mi = cgutils.get_or_insert_function(mod, ir.FunctionType(i8p, [i8p, i8p]),
                                                "NRT_meminfo_new_from_pyobject")
        gil = builder.call(ensure, [])
        gen = builder.load(builder.gep(_entry(builder, hv), [ir.Constant(i64, 1)]))
        slot = builder.and_(hv, ir.Constant(i64, 0xFFFF))
        owner = builder.load(builder.gep(table_address(builder, OWNER_SYMBOL), [slot]))
        ok = builder.and_(builder.icmp_unsigned("==", gen, builder.lshr(hv, ir.Constant(i64,
                                                                                    16))),
                          builder.icmp_unsigned("!=", owner, ir.Constant(i64, 0)))
        mi_slot = cgutils.alloca_once_value(builder, ir.Constant(i8p, None))
        with builder.if_then(ok, likely=True):
            builder.store(builder.call(new_mi, [data, builder.inttoptr(owner, i8p)]), mi_slot)
        builder.call(release, [gil])
        ary = context.make_array(arrty)(context, builder)
        one = ir.Constant(i64, 1)
        context.populate_array(ary, data=data, shape=[builder.select(ok, size,
                                                                     ir.Constant(i64, 0))],
                               strides=[one], itemsize=one,
                               meminfo=builder.load(mi_slot))
        return ary._getvalue()
    _check_handle(h)
    return arrty(h, mem, types.int64), codegen
