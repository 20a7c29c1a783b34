"""numslab: the Linux kernel's SLUB slab allocator in NumPy arrays and Numba kernels.

``SlabAllocator`` is one simulated machine; the kernel-named functions at module level act
on a default allocator (created on first use) so that ``numslab.kfree(numslab.kmalloc(64))``
just works. ``numslab.jit`` is the same API for your own ``@njit`` code (``help(numslab.jit)``);
``numslab.replay`` replays a kernel's ``kmem`` trace through any SLUB generation (the
laboratory; ``python -m numslab --help`` for its command line). Errors are subclasses of
``SlabError``. The README has the guide, ARCHITECTURE.md how it is built.
"""
from __future__ import annotations

import inspect
import threading
from typing import Any

from . import engine, flags, jit  # noqa: F401  (engine first: it fixes the unit table)
from .engine.layout import KERNELS as _KERNEL_IDS, NIL, NULL, ZERO_SIZE_PTR
from .facade.allocator import SlabAllocator, parse_size
from .facade.cache import KmemCache
from .facade.defragapi import remap
from .facade.kmallocapi import size_roundup as kmalloc_size_roundup
from .errors import (AddressTypeError, AllocatorGoneError, BadAddressError, CacheLeakError,
                     ConcurrentUseError,
                     ConstructorError, DoubleFreeError, MachineFileError,
                     FixedAttributeError, InvalidArgumentError, InvalidSizeError,
                     LostObjectsError, NotPicklableError, OutOfMemoryError, SizeTypeError,
                     SlabCorruptionError, SlabDebugError, SlabError, WrongCacheError,
                     WrongTypeError)
from .flags import *  # noqa: F401,F403  (GFP_*, SLAB_*, stat names)
from .geometry import Geometry, calculate_geometry

__version__ = "0.1.0"
#: The SLUB generations a ``SlabAllocator`` models (its ``kernel`` argument).
KERNELS = tuple(_KERNEL_IDS)


def __getattr__(name: str) -> Any:
    """``numslab.replay``: ``numslab.lab.replay.replay`` itself, imported on first use.

    Itself for its signature and docstring for ``help`` (a wrapper taking ``**kwargs`` hid them);
    imported on first use so that ``import numslab`` does not load the lab."""
    if name == "replay":
        from .lab.replay import replay
        return replay
    raise AttributeError(f"module 'numslab' has no attribute {name!r}")


_default: SlabAllocator | None = None
_default_lock = threading.Lock()


def default_allocator() -> SlabAllocator:
    """The module-level allocator (``os.cpu_count()`` CPUs, one node, 256 MiB), made once.

    Made on first use, once: threads that ask at the same time get the same one."""
    global _default
    sa = _default
    if sa is None:
        with _default_lock:
            if _default is None:
                _default = SlabAllocator()
            sa = _default
    return sa


def set_default_allocator(sa: SlabAllocator | None) -> None:
    """Replace the module-level allocator (``None``: make a fresh one on next use).

    Raises
    ------
    WrongTypeError
        If ``sa`` is neither a ``SlabAllocator`` nor None.
    """
    global _default
    if sa is not None and not isinstance(sa, SlabAllocator):
        raise WrongTypeError(f"set_default_allocator: {sa!r} is not a SlabAllocator or None")
    _default = sa


def _forward(name: str):
    """The module-level ``name``: ``SlabAllocator.name`` on the default allocator.

    It shows the method's parameters (less ``self``) and documentation to ``help()``."""
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(default_allocator(), name)(*args, **kwargs)
        except (BadAddressError, WrongCacheError, DoubleFreeError) as e:   # (an address of
            e.add_note(f"numslab.{name} acts on the default allocator "   # another allocator
                       f"(numslab.default_allocator()); an address of another SlabAllocator "
                       f"goes to its own sa.{name}")          # read as one of the default's)
            raise
    method = getattr(SlabAllocator, name)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``SlabAllocator.{name}`` on the default allocator.\n\n" + \
        (inspect.getdoc(method) or "")
    try:
        sig = inspect.signature(method)
        call.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
    except (TypeError, ValueError):     # pragma: no cover - a method with no signature
        pass
    return call


_API = ("kmem_cache_create", "kmem_cache_destroy", "kmem_cache_alloc", "kmem_cache_alloc_node",
        "kmem_cache_free", "kmem_cache_shrink", "kmalloc", "kzalloc", "kmalloc_array", "kcalloc",
        "krealloc", "krealloc_array", "kfree", "ksize",
        "alloc_pages", "free_pages", "slabinfo", "buddyinfo", "validate")
for _name in _API:
    globals()[_name] = _forward(_name)
del _name

__all__ = ["SlabAllocator", "KmemCache", "remap", "SlabError", "BadAddressError",
           "WrongCacheError",
           "DoubleFreeError", "InvalidSizeError", "InvalidArgumentError", "CacheLeakError",
           "LostObjectsError", "SlabCorruptionError", "SlabDebugError", "ConcurrentUseError",
           "NotPicklableError", "WrongTypeError", "SizeTypeError", "AddressTypeError",
           "FixedAttributeError",
           "OutOfMemoryError",
           "AllocatorGoneError", "ConstructorError", "MachineFileError", "Geometry",
           "calculate_geometry", "default_allocator", "set_default_allocator",
           "parse_size", "kmalloc_size_roundup", "flags", "jit", "KERNELS", "NIL", "NULL",
           "ZERO_SIZE_PTR",
           *_API, *flags.__all__]
__all__.append("replay")                # (made on first use: the module's __getattr__)
