"""Exceptions raised by numslab.

Every misuse of the allocator raises a subclass of :class:`SlabError`; the message names the
call, the cache and the address, in the spirit of the kernel's own reports.
"""


class SlabError(Exception):
    """Base class of all numslab errors.

    Raised from compiled code (``numslab.jit``), the arguments are the message, the address,
    the cache id and the batch element concerned (-1 where it does not apply), and the text
    names those that apply."""

    def __str__(self) -> str:
        a = self.args
        if len(a) == 4 and isinstance(a[0], str) and all(isinstance(x, int) for x in a[1:]):
            msg, addr, cache, index = a
            where = [f"address {addr:#x}"] if addr >= 0 else []
            where += [f"cache id {cache}"] if cache >= 0 else []
            where += [f"element {index} of the batch"] if index >= 0 else []
            return msg + (f" ({', '.join(where)})" if where else "")
        return super().__str__()


class BadAddressError(SlabError, ValueError):
    """An address that is not an allocated object: outside the arena, not on a slab page,
    or not on the object grid of its slab."""


class WrongCacheError(SlabError, ValueError):
    """An object freed to a cache other than the one it was allocated from."""


class DoubleFreeError(SlabError, ValueError):
    """An object freed while already free."""


class InvalidSizeError(SlabError, ValueError):
    """A size, alignment or order that no cache or page block can have."""


class CacheLeakError(SlabError):
    """A cache destroyed while objects are still allocated from it."""


class ConcurrentUseError(SlabError, RuntimeError):
    """``numslab.jit`` called from code that may run without the GIL (a ``nogil`` or
    ``parallel`` function): concurrent entry into an allocator from compiled threads is
    refused when the caller is compiled."""


class SlabCorruptionError(SlabError):
    """``validate`` found a slab, list or counter that breaks an invariant."""


class SlabDebugError(SlabCorruptionError):
    """A slab_debug check failed on an allocation or a free (``alloc_debug_processing`` /
    ``free_debug_processing``): the message holds the kernel's report (cache, object, first
    bad byte), also kept in ``SlabAllocator.slab_reports()``. A refused free leaves the
    object allocated; a failed allocation isolated the slab and allocated nothing."""

    def __init__(self, message: str, reports: list[str] | None = None, *where: int) -> None:
        super().__init__(message, *where)
        self.reports = list(reports or [])
