"""Argument checks shared by the facade's modules, so that bad input raises a numslab error.

Every value a user passes is checked here (type and range) before it reaches a unit."""
from __future__ import annotations

import functools
import os
import re
import sys
from typing import Any, Callable

import numpy as np

from ..errors import (ConstructorError, FixedAttributeError, InvalidArgumentError,
                      InvalidSizeError, SizeTypeError, WrongTypeError)
from ..geometry import MAX_PAGE_ORDER


def check_gfp(gfp: Any, fn: str) -> int:
    """``gfp`` if it is a set of GFP flags: an int (not a bool) in 0..2**32-1."""
    if type(gfp) is int and 0 <= gfp < 1 << 32:
        return gfp
    if isinstance(gfp, np.integer) and not isinstance(gfp, np.bool_) and 0 <= gfp < 1 << 32:
        return int(gfp)
    raise InvalidArgumentError(f"{fn}: gfp {gfp!r} is not a set of GFP flags (an int in "
                               "0..2**32-1)")


def check_bool(value: Any, what: str) -> bool:
    """``value`` as a bool if it is one (Python's or NumPy's, or the int 0 or 1).

    Anything else raises naming ``what`` (bool() took the str 'no' as True: kmem_cache_destroy's
    force='no' freed every object users held)."""
    if isinstance(value, (bool, np.bool_)) or type(value) is int and value in (0, 1):
        return bool(value)
    raise InvalidArgumentError(f"{what} {value!r} is not a bool")


def as_int(value: Any) -> Any:
    """``value`` as a Python int if it is a NumPy integer; anything else unchanged.

    The checks after it then read it as any int, or refuse anything else."""
    return int(value) if isinstance(value, np.integer) else value


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer: an int or a NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def size_error(value: Any) -> type[InvalidSizeError]:
    """The class that refuses ``value`` where a size, count, order or ratio goes.

    :class:`SizeTypeError` (a ``WrongTypeError``, as ``numslab.jit`` refuses it in ``@njit``
    code) if it is no integer (:func:`is_integer`), else :class:`InvalidSizeError` (its value
    refused)."""
    return InvalidSizeError if is_integer(value) else SizeTypeError


def check_order(order: Any, fn: str) -> int:
    """``order`` if it is a page order, an int in 0..MAX_PAGE_ORDER.

    An int or a NumPy integer (not a bool): np.int64(0) was refused as "not in 0..10"."""
    if is_integer(order) and 0 <= order <= MAX_PAGE_ORDER:
        return int(order)
    raise size_error(order)(f"{fn}: order {order!r} is not an integer in 0..{MAX_PAGE_ORDER}")


def check_cache_name(name: Any, taken: Any) -> str:
    """``name`` if it can name a new cache, else raise.

    A str, not empty, not in ``taken``, with no space, '/' or control character (it names a
    ``/sys/kernel/slab`` directory and a ``slabinfo`` field, which such a name could forge)."""
    if not isinstance(name, str):
        raise WrongTypeError(f"kmem_cache_create: name {name!r} is not a str")
    chars = " (it names a /sys/kernel/slab directory and a slabinfo field)"
    why = ("is empty" if not name else
           "is already in use" if name in taken else
           "holds a control character" + chars if not name.isprintable() else
           "holds a space" + chars if re.search(r"\s", name) else
           "holds a '/'" + chars if "/" in name else None)
    if why:
        raise InvalidArgumentError(f"kmem_cache_create: name {name!r} {why}")
    return name


def check_usercopy(where: str, size: int, useroffset: Any, usersize: Any) -> tuple[int, int]:
    """``(useroffset, usersize)``, the usercopy region of a cache of ``size``-byte objects.

    CONFIG_HARDENED_USERCOPY's whitelist (``kmem_cache_create_usercopy``, ``struct
    kmem_cache_args``): ``usersize`` bytes from ``useroffset`` inside the object, ``0, 0`` for
    none. Refused as ``__kmem_cache_create_args`` refuses it (it warns and whitelists nothing):
    not whole numbers, an offset without a size, or a region past the object."""
    for what, v in (("useroffset", useroffset), ("usersize", usersize)):
        if type(v) is not int and not isinstance(v, np.integer):
            raise SizeTypeError(f"{where}: {what} {v!r} is not an int")
    useroffset, usersize = int(useroffset), int(usersize)
    if useroffset < 0 or usersize < 0 or (usersize == 0 and useroffset != 0) or \
            usersize > size or size - usersize < useroffset:
        raise InvalidSizeError(f"{where}: usercopy region of {usersize} bytes at offset "
                               f"{useroffset} is not inside the {size}-byte object (or an "
                               f"offset with no size)")
    return useroffset, usersize


def check_dtype(dtype: Any, size: int, where: str) -> tuple[np.dtype, int]:
    """``dtype`` as a NumPy dtype whose records fit a cache's objects, and the object size.

    The object size is ``size``, or the dtype's when 0. Refused if it holds Python objects (the
    arena's bytes would be read as pointers), has no bytes, or is larger than ``size``. ``where``
    names the call (``kmem_cache_create``, or ``load`` for a saved cache)."""
    try:
        dtype = np.dtype(dtype)
    except TypeError as e:
        raise WrongTypeError(f"{where}: dtype {dtype!r} is not a NumPy dtype ({e})") from None
    if dtype.hasobject:
        raise WrongTypeError(f"{where}: dtype {dtype} holds Python objects, which cannot live "
                             f"in slab memory")
    if dtype.itemsize == 0:                 # its records would all be the same no bytes
        raise WrongTypeError(f"{where}: dtype {dtype} has no bytes: a record needs at least "
                             f"one")
    size = size or dtype.itemsize
    if size < dtype.itemsize:
        raise InvalidSizeError(f"{where}: size {size} is smaller than the {dtype.itemsize}-byte "
                               f"dtype")
    return dtype, size


def check_max_caches(max_caches: Any, kmalloc_caches: int) -> int:
    """``max_caches`` if it is an int up to 65536 leaving room for the kmalloc caches.

    Room for the ``kmalloc_caches`` and one more."""
    if type(max_caches) is not int or not kmalloc_caches < max_caches <= 1 << 16:
        raise InvalidArgumentError(f"max_caches {max_caches!r} is not in "
                                   f"{kmalloc_caches + 1}..65536 (the {kmalloc_caches} kmalloc "
                                   f"caches take slots too)")
    return max_caches


def fixed(attr: str, doc: str, copy: Any = None,
          read: Callable[[Any], Any] | None = None) -> property:
    """A read-only attribute ``attr`` in ``_<attr>``: what an allocator or a cache is made with.

    Read through ``copy`` if given (a fresh list of a kept tuple), or made by ``read(self)``. A
    write raises :class:`~numslab.FixedAttributeError` (the state would no longer match it)."""
    private = "_" + attr

    def get(self: Any) -> Any:
        if read is not None:
            return read(self)
        value = getattr(self, private)
        return value if copy is None else copy(value)

    def refuse(self: Any, value: Any) -> None:
        raise FixedAttributeError(f"{type(self).__name__}.{attr} is fixed when it is made "
                                  f"(got {value!r})")
    return property(get, refuse, doc=doc)


#: The facade's folder: its public methods are the calls errors name.
_FACADE = os.path.dirname(os.path.abspath(__file__))


def public_caller() -> str:
    """The name of the nearest public method of the facade up the stack.

    The call an argument check's error names when it is not told."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_name.startswith("_")
                                 or not frame.f_code.co_filename.startswith(_FACADE)):
        frame = frame.f_back
    return frame.f_code.co_name if frame is not None else "cpu"


def cache_op(f: Callable) -> Callable:
    """A facade operation on a cache, run under the allocator's ``slab_mutex``.

    Another thread's ``kmem_cache_destroy`` (which takes it) can then neither end the cache nor let
    ``kmem_cache_create`` give its slot to another between the operation's check of the cache and
    its engine call (the id read in between went stale: -1 made the engine write before the state's
    fields and the interpreter abort, and a reused slot handed out another cache's objects). The C
    gate's calls read the id and call the engine in C."""
    @functools.wraps(f)
    def op(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._slab_mutex:
            if self._inobj_building and args and \
                    getattr(args[0], "_id", None) in self._inobj_building:
                raise ConstructorError(f"{f.__name__}({args[0].name}): called by the cache's "
                                       f"own constructor while it constructs a new slab whose "
                                       f"free pointers lie inside the objects (freeptr_offset):"
                                       f" numslab runs constructors after the free list is "
                                       f"written, so the slab cannot be used until they end; "
                                       f"nothing was done")
            return f(self, *args, **kwargs)
    return op
