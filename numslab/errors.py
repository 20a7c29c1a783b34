"""Exceptions raised by numslab.

Every misuse of the allocator raises a subclass of :class:`SlabError`; the message names the
call, the cache and the address, in the spirit of the kernel's own reports.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np

#: Set by ``numslab.drivers.jitapi``: returns the address, cache id and batch element that
#: compiled code recorded as it raised (-1: not known), the argument it refused
#: (:data:`NO_VALUE`: none), the earlier batch element naming the same object (-1: none),
#: the cache's name and the allocator's note on the address, which its compiled code cannot
#: know, the call that raised (None: not known) and the bound the argument broke (an array's
#: entries, the machine's CPUs or nodes; :data:`NO_VALUE`: none).
_jit_error_detail: Callable[[], tuple[int, int, int, int, int, str | None, str | None,
                                      str | None, int]] | None = None
#: How an allocator's note on an address on no slab begins (a bad address's: what its page is).
PAGE_NOTE = "not on a slab page: "
#: "No refused argument" in the compiled error detail (an int64 no argument check refuses).
NO_VALUE = -(1 << 63)
#: The second argument ``numslab.jit``'s compiled raises give their exception ("numslabj" in
#: ASCII): only such an exception reads the thread's compiled error detail, and drops it from
#: its ``args`` (one a user makes with the same text reads nothing).
JIT_RAISE = 0x6E756D736C61626A


def _with_bound(text: str, bound: int | None) -> str:
    """A compiled raise's text with the bound its argument broke filled in.

    ``{bound}`` is the bound (an array's entries), ``{last}`` the last value in range (the last
    CPU or node); "?" where the thread's detail was taken by another thread's raise."""
    return text.replace("{bound}", "?" if bound is None else str(bound)) \
        .replace("{last}", "?" if bound is None else str(bound - 1))


def _rebuilt(cls: type, args: tuple, state: dict) -> "SlabError":
    """A copy (``copy``, ``pickle``) of an exception raised by compiled code, its detail as it was.

    The detail as it was, not the thread's latest raise's."""
    e = Exception.__new__(cls)
    Exception.__init__(e, *args)
    e.__dict__.update(state)
    return e


class SlabError(Exception):
    """Base class of all numslab errors.

    Raised from compiled code (``numslab.jit``, messages starting ``numslab.jit:``, the text
    naming the call, ``numslab.jit.kmem_cache_free:``), the
    address, the cache id and the batch element concerned are in ``detail`` (-1 where not
    known), the argument refused in ``value`` (None: none), and all of them named in the
    text (an address however wrong, negative ones too, -1 among them; the bound a refused
    argument broke: the array's entries, the machine's CPUs or nodes), with the cache's
    name when the cache is one of a live allocator and the earlier element of a batch that
    names the same object as the element refused. Where the allocator knows more of a double
    free than its compiled code (the object waits for an RCU grace period), that note takes
    the place of the text's reason (in brackets); a wrong cache's text names the cache the
    object is from, and a bad address's what its page is when it is on no slab (a free page:
    already freed?)."""

    def __init__(self, *args: object) -> None:
        compiled = len(args) == 2 and type(args[1]) is int and args[1] == JIT_RAISE \
            and isinstance(args[0], str) and args[0].startswith("numslab.jit:")
        super().__init__(*args[:1] if compiled else args)
        self.detail = (-1, -1, -1)
        self.value: int | None = None
        self._cache_name: str | None = None
        self._note: str | None = None
        self._earlier = -1
        self._call: str | None = None
        self._bound: int | None = None
        self._compiled = compiled
        if compiled and _jit_error_detail is not None:
            addr, cache, index, value, self._earlier, self._cache_name, self._note, \
                self._call, bound = _jit_error_detail()
            self._bound = None if bound == NO_VALUE else bound
            self._named = addr != NO_VALUE          # (an address of -1 is named too)
            self.detail = (-1 if addr == NO_VALUE else addr, cache, index)
            self.value = None if value == NO_VALUE else value

    def __reduce__(self) -> tuple:
        # a compiled raise keeps its exception's class and arguments, and makes it at the
        # raise (``__init__`` then reads the detail); a copy or pickle keeps its own detail
        # (made again, it read the thread's later raise, or another process's)
        return _rebuilt, (type(self), self.args, dict(self.__dict__))

    def __str__(self) -> str:
        addr, cache, index = getattr(self, "detail", (-1, -1, -1))
        value = getattr(self, "value", None)
        name = getattr(self, "_cache_name", None)
        fp = type(self) is SlabCorruptionError      # (a free pointer and its slab, in hex)
        where = [f"free pointer {value:#x}" if fp else f"got {value}"] \
            if value is not None else []
        where += [f"{'slab' if fp else 'address'} {addr:#x}"] \
            if getattr(self, "_named", False) else []
        where += [f"cache id {cache}" + (f" {name!r}" if name else "")] if cache >= 0 else []
        earlier = getattr(self, "_earlier", -1)
        twin = f" names the same object as element {earlier}" if earlier >= 0 else ""
        where += [f"element {index} of the batch{twin}"] if index >= 0 else []
        text = super().__str__()
        if getattr(self, "_compiled", False):
            text = _with_bound(text, getattr(self, "_bound", None))
        call = getattr(self, "_call", None)
        if call:                        # the numslab.jit call that raised
            text = text.replace("numslab.jit:", f"numslab.jit.{call}:", 1)
        note = getattr(self, "_note", None)
        page = note is not None and note.startswith(PAGE_NOTE)
        if note and not page and isinstance(self, DoubleFreeError):
            text = f"{text.split(' (', 1)[0]}, {note}"
        elif note and page == isinstance(self, BadAddressError) and \
                isinstance(self, (WrongCacheError, BadAddressError)):
            text = f"{text}: {note}"
        return text + (f" ({', '.join(where)})" if where else "")


class BadAddressError(SlabError, ValueError):
    """An address that is not an allocated object.

    Outside the arena, not on a slab page, or not on the object grid of its slab."""


class WrongCacheError(SlabError, ValueError):
    """An object freed to a cache other than the one it was allocated from."""


class DoubleFreeError(SlabError, ValueError):
    """An object freed while already free."""


class InvalidSizeError(SlabError, ValueError):
    """A size, alignment or order that no cache or page block can have."""


class InvalidArgumentError(SlabError, ValueError):
    """An argument outside what the call takes.

    A CPU or node out of range, a gfp outside 0..2**32-1, flags the call does not know, an unknown
    ``kernel`` or ``slab_debug`` option, a cache name in use, an object array that is not writable
    int64."""


class CacheLeakError(SlabError):
    """A cache destroyed while objects are still allocated from it."""


class LostObjectsError(CacheLeakError):
    """A cache destroyed while objects lost to a corrupted free list remain in its slabs.

    ``KmemCache.lost_objects``: cut off by slab_debug's repair, or left in a slab isolated after a
    stray write; none held by a user. The kernel's ``__kmem_cache_shutdown`` finds them in use and
    keeps the cache; ``kmem_cache_destroy(cache, force=True)`` discards them with their slabs."""


class OutOfMemoryError(SlabError, MemoryError):
    """The arena cannot give what a convenience call or the set-up of a cache's sheaves needs.

    The convenience calls are ``KmemCache.alloc`` and ``alloc_bulk``. The kernel's API returns 0
    (NULL) instead, as the kernel does; nothing is taken either way."""


class ConcurrentUseError(SlabError, RuntimeError):
    """``numslab.jit`` called from code that may run without the GIL.

    A ``nogil`` or ``parallel`` function: concurrent entry into an allocator from compiled threads
    is refused when the caller is compiled."""


class WrongTypeError(SlabError, TypeError):
    """An argument of the wrong kind for the call.

    Records asked of a cache created without a ``dtype``, values that are not records of the
    cache's ``dtype``."""


class SizeTypeError(WrongTypeError, InvalidSizeError):
    """A size, count, order or ratio that is not an integer (a str, a float, a bool, None).

    A ``WrongTypeError`` (a ``TypeError``), as ``numslab.jit`` refuses one in ``@njit`` code, and
    an ``InvalidSizeError`` (a ``ValueError``), which numslab raised for it from Python before."""


class AddressTypeError(WrongTypeError, BadAddressError):
    """An address that is not an integer (a float, a str, a bool, None), or addresses that are not.

    A ``WrongTypeError`` (a ``TypeError``), as ``numslab.jit`` refuses one in ``@njit`` code, and
    a ``BadAddressError`` (a ``ValueError``), which numslab raised for it from Python before."""


class FixedAttributeError(SlabError, AttributeError):
    """A write of what an allocator or a cache is made with: the state would no longer match it.

    ``SlabAllocator.kernel``, ``nr_cpus``, ``memory``, ``state``..., ``KmemCache.name``, ``ctor``,
    ``dtype``. The attributes the kernel lets sysfs write (``min_partial``, ``cpu_partial``, ...)
    are writable."""


class NotPicklableError(SlabError, TypeError):
    """An allocator, a cache or a handle pickled or copied.

    Each is this process's memory (the arena's anonymous mapping, the compiled code's table of
    allocators), so a copy would not be the machine. ``SlabAllocator.save`` and
    ``SlabAllocator.load`` store and restore a whole machine."""


class AllocatorGoneError(SlabError, ReferenceError):
    """A call through a method, handle or cache whose allocator no longer exists.

    A bound method, a ``numslab.jit`` handle kept where it does not keep its allocator alive (a
    jitclass, typed List or Dict hold it as an integer), or the allocator of a debug report:
    keep the ``SlabAllocator`` itself in a name for as long as these are used."""


class ConstructorError(SlabError):
    """A cache's constructor raised, or did what a constructor may not.

    It raised on an object (the exception is the ``__cause__``), destroyed its own cache, freed
    the object it was given, called an operation on its own cache that waits for it, or nested
    constructors too deep. Nothing the failed call took stays allocated."""


class MachineFileError(SlabError, ValueError):
    """A machine ``save`` cannot write, or a file ``load`` cannot read as a numslab machine.

    ``save`` refuses constructors (Python code) and dtypes JSON cannot hold; ``load`` refuses a
    file of another format, a damaged one (its digest), and a state whose links or counters
    break the machine's structure (``loadcheck``)."""


class SlabCorruptionError(SlabError):
    """``validate`` found a slab, list or counter that breaks an invariant.

    Or an allocation met a corrupted free pointer (a write into freed memory?). Raised from
    compiled code, its ``detail`` holds the slab's address and ``value`` the pointer found."""


class SlabDebugError(SlabCorruptionError):
    """A slab_debug check failed on an allocation or a free.

    ``alloc_debug_processing`` / ``free_debug_processing``: the message holds the kernel's report
    (cache, object, first bad byte), also kept in ``SlabAllocator.slab_reports()``. A refused free
    leaves the object allocated; a failed allocation isolated the slab and allocated nothing.
    ``objects`` (int64[n], or None): where a refusal leaves several objects allocated that no
    one holds (a batch free's refused detached freelists, a prefilled sheaf's refused flush),
    those objects, for the caller to free again."""

    def __init__(self, message: str, reports: list[str] | int | None = None) -> None:
        if type(reports) is int and reports == JIT_RAISE:       # a compiled raise
            super().__init__(message, reports)
            reports = None
        else:
            super().__init__(message)
        self.reports = list(reports or [])
        self.objects: np.ndarray | None = None
