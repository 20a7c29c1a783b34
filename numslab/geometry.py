"""SLUB cache geometry: object layout, alignment, slab order and list limits.

Computed exactly as ``calculate_sizes``/``calculate_order`` in Linux 6.18 ``mm/slub.c`` do."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidSizeError, SizeTypeError
from .flags import (SLAB_DEBUG_FLAGS, SLAB_HWCACHE_ALIGN, SLAB_KMALLOC, SLAB_POISON,
                    SLAB_RED_ZONE, SLAB_STORE_USER, SLAB_TYPESAFE_BY_RCU)

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_PAGE_ORDER = 10
SLUB_MAX_ORDER = 3            # PAGE_ALLOC_COSTLY_ORDER
SLUB_MIN_ORDER = 0
MAX_OBJS_PER_PAGE = 32767
MIN_PARTIAL = 5
MAX_PARTIAL = 10
CACHE_LINE_SIZE = 64
ARCH_SLAB_MINALIGN = 8
ARCH_KMALLOC_MINALIGN = 8
KMALLOC_MAX_CACHE_SIZE = 2 * PAGE_SIZE           # 8192: larger kmallocs take whole pages
KMALLOC_MAX_SIZE = PAGE_SIZE << MAX_PAGE_ORDER   # 4 MiB
#: kmalloc cache sizes, kmalloc-8 to kmalloc-8k with the two odd sizes 96 and 192.
KMALLOC_SIZES = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)
#: ``sizeof(struct track)`` on 64-bit with CONFIG_STACKDEPOT (which CONFIG_SLUB_DEBUG selects):
#: ``addr`` (8), ``handle`` (4), ``cpu`` (4), ``pid`` (4, then 4 of padding), ``when`` (8).
TRACK_SIZE = 32


def align_up(x: int, a: int) -> int:
    """Round ``x`` up to a multiple of the power of two ``a`` (the kernel's ``ALIGN``)."""
    return (x + a - 1) & ~(a - 1)


def fls(x: int) -> int:
    """Find last set bit, 1-based (``fls(0) == 0``), as the kernel's ``fls``."""
    return x.bit_length()


def get_order(size: int) -> int:
    """Smallest page order whose block holds ``size`` bytes (the kernel's ``get_order``)."""
    return max(0, (size - 1) >> PAGE_SHIFT).bit_length() if size > 0 else 0


def order_objects(order: int, size: int) -> int:
    """Objects of ``size`` bytes that fit in a slab of ``order``."""
    return (PAGE_SIZE << order) // size


def calculate_alignment(flags: int, align: int, size: int) -> int:
    """Object alignment: cache-line for HWCACHE_ALIGN (halved for small objects), at least 8."""
    if flags & SLAB_HWCACHE_ALIGN:
        ralign = CACHE_LINE_SIZE
        while size <= ralign // 2:
            ralign //= 2
        align = max(align, ralign)
    align = max(align, ARCH_SLAB_MINALIGN)
    return align_up(align, 8)


def calc_slab_order(size: int, min_order: int, max_order: int, fract_leftover: int) -> int:
    """First order in ``[min_order, max_order]`` wasting at most ``1/fract_leftover``."""
    order = min_order
    while order <= max_order:
        slab_size = PAGE_SIZE << order
        if slab_size % size <= slab_size // fract_leftover:
            break
        order += 1
    return order


@dataclass(frozen=True)
class SlabOrders:
    """The boot parameters ``slab_min_order=``, ``slab_max_order=`` and ``slab_min_objects=``.

    0: ``calculate_order``'s own, from the CPUs; as :func:`boot_orders` leaves them."""

    min_order: int = SLUB_MIN_ORDER
    max_order: int = SLUB_MAX_ORDER
    min_objects: int = 0


def boot_orders(min_order: int | None = None, max_order: int | None = None,
                min_objects: int | None = None) -> SlabOrders:
    """The kernel's ``setup_slub_min_order``, then ``setup_slub_max_order``.

    Each only when given, as on a command line naming the minimum first: a minimum above the
    maximum raises it, a maximum is cut to ``MAX_PAGE_ORDER`` and lowers a minimum above it.

    Raises
    ------
    SizeTypeError
        A value that is not an int (a ``WrongTypeError`` and an ``InvalidSizeError``).
    InvalidSizeError
        A negative value (the kernel reads an unsigned int), or a minimum order above
        ``MAX_PAGE_ORDER`` (no slab could be allocated: the kernel fails at boot).
    """
    lo, hi, objs = SLUB_MIN_ORDER, SLUB_MAX_ORDER, 0
    for name, v in (("slab_min_order", min_order), ("slab_max_order", max_order),
                    ("slab_min_objects", min_objects)):
        if v is not None and type(v) is not int:
            raise SizeTypeError(f"{name}={v!r} is not an int")
        if v is not None and v < 0:
            raise InvalidSizeError(f"{name}={v} is not a count (an int >= 0)")
    if min_order is not None:
        if min_order > MAX_PAGE_ORDER:
            raise InvalidSizeError(f"slab_min_order={min_order}: no slab is larger than "
                                   f"order {MAX_PAGE_ORDER} (MAX_PAGE_ORDER)")
        lo, hi = min_order, max(hi, min_order)
    if max_order is not None:
        hi = min(max_order, MAX_PAGE_ORDER)
        lo = min(lo, hi)
    if min_objects is not None:
        objs = min(min_objects, 1 << 31)
    return SlabOrders(lo, hi, objs)


def calculate_order(size: int, nr_cpus: int, orders: SlabOrders = SlabOrders()) -> int:
    """Slab order for objects of ``size`` bytes on a machine of ``nr_cpus`` present CPUs.

    Under the boot parameters ``orders``. (The kernel takes ``nr_cpu_ids`` when at most one CPU
    is present: a simulated machine's CPUs are all present and possible, and a snapshot
    records that count as its ``nr_cpus``.)"""
    min_objects = orders.min_objects or 4 * (fls(nr_cpus) + 1)
    max_objects = max(order_objects(orders.max_order, size), 1)
    min_objects = min(min_objects, max_objects)
    min_order = max(orders.min_order, get_order(min_objects * size))
    if order_objects(min_order, size) > MAX_OBJS_PER_PAGE:
        return get_order(size * MAX_OBJS_PER_PAGE) - 1
    for fraction in (16, 8, 4, 2):
        order = calc_slab_order(size, min_order, orders.max_order, fraction)
        if order <= orders.max_order:
            return order
    order = get_order(size)
    if order <= MAX_PAGE_ORDER:
        return order
    raise InvalidSizeError(f"object size {size} does not fit in a slab of order {MAX_PAGE_ORDER}")


def cpu_partial_objects(size: int, debug: bool) -> int:
    """``set_cpu_partial``: objects kept on a CPU's partial list (0 for debug caches)."""
    if debug:
        return 0
    if size >= PAGE_SIZE:
        return 6
    if size >= 1024:
        return 24
    if size >= 256:
        return 52
    return 120


@dataclass(frozen=True)
class Geometry:
    """The layout SLUB computes for one cache (names as in ``/sys/kernel/slab/<name>/``)."""

    object_size: int        #: bytes the user asked for
    inuse: int              #: ``s->inuse``: bytes of the object proper, aligned to 8
    slab_size: int          #: ``s->size``: stride between objects
    align: int              #: object alignment
    offset: int             #: free-pointer offset inside each free object
    order: int              #: preferred slab order (``oo``)
    objs_per_slab: int      #: objects in a slab of ``order``
    min_order: int          #: fallback order (``s->min``) when ``order`` is not available
    min_objects: int        #: objects in a slab of ``min_order``
    min_partial: int        #: empty slabs a node keeps on its partial list
    cpu_partial: int        #: objects (approximate) on a CPU's partial list
    cpu_partial_slabs: int  #: slabs allowed on a CPU's partial list
    red_left_pad: int = 0   #: ``s->red_left_pad``: left red zone before each object (Z)
    object_poison: bool = False  #: ``__OBJECT_POISON``: P without RCU or a constructor
    track_offset: int = 0   #: ``get_info_end``: the two ``struct track`` (U), from the object
    orig_size_offset: int = 0  #: the ``orig_size`` word of a kmalloc U cache (0: none)


def kmalloc_align(size: int) -> int:
    """kmalloc caches align to the largest power-of-two divisor of their size."""
    return max(ARCH_KMALLOC_MINALIGN, size & -size)


def calculate_geometry(object_size: int, align: int, flags: int, has_ctor: bool,
                       nr_cpus: int, freeptr_offset: int | None = None,
                       ctor_freeptr: bool = False,
                       orders: SlabOrders = SlabOrders()) -> Geometry:
    """Compute a cache's geometry as ``do_kmem_cache_create``/``calculate_sizes`` do.

    ``ctor_freeptr``: a cache with a constructor may take ``freeptr_offset`` (Linux 7.0,
    "mm/slab: allow specifying free pointer offset when using constructor"; 6.18 refuses it
    as it refuses any cache without SLAB_TYPESAFE_BY_RCU). ``orders``: the boot parameters
    of the slab order (:func:`boot_orders`).

    Raises
    ------
    InvalidSizeError
        For a size, alignment or free-pointer offset the kernel refuses.
    """
    if type(object_size) is not int or object_size <= 0 or object_size > KMALLOC_MAX_SIZE:
        raise (InvalidSizeError if type(object_size) is int else SizeTypeError)(
            f"object size {object_size!r} is not in 1..{KMALLOC_MAX_SIZE}")
    if type(align) is not int or align < 0 or (align & (align - 1)):
        raise (InvalidSizeError if type(align) is int else SizeTypeError)(
            f"align {align!r} is not zero or a power of two")
    if flags & SLAB_KMALLOC:
        align = max(align, kmalloc_align(object_size))
    size = align_up(object_size, 8)
    object_poison = bool(flags & SLAB_POISON and not flags & SLAB_TYPESAFE_BY_RCU
                         and not has_ctor)
    if flags & SLAB_RED_ZONE and size == object_size:
        size += 8                # a right red zone of a word when there is no slack
    inuse = size
    align = calculate_alignment(flags, align, object_size)
    if freeptr_offset is not None and (
            not (flags & SLAB_TYPESAFE_BY_RCU or has_ctor and ctor_freeptr)
            or freeptr_offset < 0 or freeptr_offset % 8 or freeptr_offset >= object_size):
        needs = "SLAB_TYPESAFE_BY_RCU or a constructor" if ctor_freeptr else \
            "SLAB_TYPESAFE_BY_RCU (a constructor too from Linux 7.0)"
        raise InvalidSizeError(
            f"freeptr_offset {freeptr_offset} needs {needs} and an 8-aligned offset inside "
            f"the {object_size}-byte object")
    orig_size = bool(flags & SLAB_STORE_USER and flags & SLAB_KMALLOC)   # slub_debug_orig_size
    if ((flags & SLAB_TYPESAFE_BY_RCU and freeptr_offset is None) or flags & SLAB_POISON
            or (has_ctor and not (ctor_freeptr and freeptr_offset is not None))
            or (flags & SLAB_RED_ZONE and (object_size < 8 or orig_size))):
        offset = size            # free pointer after the object
        size += 8
    elif freeptr_offset is not None:
        offset = freeptr_offset
        if flags & SLAB_RED_ZONE and offset + 8 > object_size:
            # the kernel takes it, then reports its own free pointer as the right red zone
            # overwritten and restores the zone over the pointer, cutting the free list
            raise InvalidSizeError(
                f"freeptr_offset {offset}: with SLAB_RED_ZONE the free pointer must end "
                f"inside the {object_size}-byte object (past it lies the right red zone)")
    else:
        offset = (object_size // 2) & ~7
    track_offset = orig_size_offset = 0
    if flags & SLAB_STORE_USER:
        track_offset = size      # get_info_end: after the moved free pointer, else inuse
        size += 2 * TRACK_SIZE
        if flags & SLAB_KMALLOC:
            orig_size_offset = size
            size += 8            # sizeof(unsigned long) since 6.18 (word-aligned metadata)
    red_left_pad = 0
    if flags & SLAB_RED_ZONE:
        size += 8                # padding catching overwrites from the object before
        red_left_pad = align_up(8, align)
        size += red_left_pad
    size = align_up(size, align)
    if size > PAGE_SIZE << MAX_PAGE_ORDER and align > object_size:    # (it named the stride
        raise InvalidSizeError(f"align {align} makes each object take {size} bytes, more "  # as
                               f"than a slab of order {MAX_PAGE_ORDER} holds")  # the object size)
    order = calculate_order(size, nr_cpus, orders)
    objs = order_objects(order, size)
    min_order = get_order(size)
    min_partial = min(MAX_PARTIAL, max(MIN_PARTIAL, (size.bit_length() - 1) // 2))
    cpu_partial = cpu_partial_objects(size, bool(flags & SLAB_DEBUG_FLAGS))
    cpu_partial_slabs = -(-cpu_partial * 2 // objs) if cpu_partial else 0
    return Geometry(object_size=object_size, inuse=inuse, slab_size=size, align=align,
                    offset=offset, order=order, objs_per_slab=objs, min_order=min_order,
                    min_objects=order_objects(min_order, size), min_partial=min_partial,
                    cpu_partial=cpu_partial, cpu_partial_slabs=cpu_partial_slabs,
                    red_left_pad=red_left_pad, object_poison=object_poison,
                    track_offset=track_offset, orig_size_offset=orig_size_offset)


def kmalloc_cache_size(size: int) -> int:
    """The kmalloc cache size serving a request of ``size`` bytes (1..8192)."""
    if size <= 192:
        for s in KMALLOC_SIZES:
            if size <= s:
                return s
    return 1 << (size - 1).bit_length()


def kmalloc_size_roundup(size: int) -> int:
    """``kmalloc_size_roundup``: the usable size ``kmalloc(size)`` would give.

    The object size of the kmalloc cache serving ``size`` up to 8 KiB; whole pages (``PAGE_SIZE <<
    get_order(size)``) up to KMALLOC_MAX_SIZE; ``size`` itself for 0 (kmalloc gives ZERO_SIZE_PTR)
    and above KMALLOC_MAX_SIZE (kmalloc fails)."""
    if 0 < size <= KMALLOC_MAX_CACHE_SIZE:
        return kmalloc_cache_size(size)
    if 0 < size <= KMALLOC_MAX_SIZE:
        return PAGE_SIZE << get_order(size)
    return size


SHEAF_HEADER_BYTES = 32        #: sizeof(struct slab_sheaf) before objects[] on 64-bit


def calculate_sheaf_capacity(size: int, wanted: int = 0) -> int:
    """``calculate_sheaf_capacity`` (Linux 7.0): objects per sheaf for ``size``-byte objects.

    Per-CPU sheaves; ``size`` is ``s->size``: 4 from a page up, 12 from 1 KiB, 26 from 256 bytes,
    else 60, rounded up so that the sheaf fills the kmalloc size class it is allocated from, then
    at least ``wanted`` (the cache's ``sheaf_capacity`` argument, taken as given). (Debug caches
    get no sheaves; the caller decides that.)"""
    if size >= PAGE_SIZE:
        capacity = 4
    elif size >= 1024:
        capacity = 12
    elif size >= 256:
        capacity = 26
    else:
        capacity = 60
    nbytes = kmalloc_cache_size(SHEAF_HEADER_BYTES + 8 * capacity)   # kmalloc_size_roundup
    return max((nbytes - SHEAF_HEADER_BYTES) // 8, wanted)
