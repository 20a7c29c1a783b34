"""Allocation from users' own ``@njit`` code (``numslab.jit``), with no return to Python.

Pass ``sa.handle`` and ``cache.id`` into your jitted function and call these.

Example::

    h, cid = sa.handle, cache.id

    @numba.njit
    def build(h, cid, n):
        out = np.empty(n, np.int64)
        numslab.jit.kmem_cache_alloc_bulk(h, cid, n, out)
        return out

Each function checks its arguments, does the common case in a few instructions that Numba
inlines into your loop (the CPU's main sheaf, every check of a free), and calls the
engine's compiled slow paths through the unit table otherwise: your function's
machine code holds no slow path and your loop touches no reference count. Errors raise
numslab exceptions whose message names the address, the cache id and the batch element
(recorded per thread as the exception is raised in compiled code, read when Python makes it).
Caches with a constructor, whose objects must be built by Python-side code, are refused
here.

Threads: call these from functions that hold the GIL (Numba's default). A ``nogil=True``,
``parallel=True`` (``prange``) or ``@cfunc`` function that reaches them, directly or through a
helper, is refused as it compiles with ``numslab.ConcurrentUseError`` (``arena`` excepted: it
only hands out a view of the memory); Python threads that each run such a function take turns.
A handle keeps its allocator alive only while Python holds it: in a jitclass, typed List or
Dict it is an integer, and a call through it after the allocator is gone raises
``numslab.AllocatorGoneError``.
"""
from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..engine import checks, defrag, ops
from ..engine.gilguard import wait_for_turn
from ..engine.checks import (E_ARRAY_PLACE, _array_misplaced, _in_arena, _live_clear, _live_set,
                             _live_test, _locate, _slab_of)
from ..engine.layout import (C_MAIN, CA_ACTIVE, CA_CTOR, CA_DEBUG, CA_OBJECT_SIZE,
                             CA_SHEAF_CAPACITY, G_FAULT_CACHE, G_FAULT_SLAB, G_FAULT_VALUE,
                             G_PEND, NIL, NR_KMALLOC, PEND_MAX, SH_OBJECTS, SH_SIZE,
                             ZERO_SIZE_PTR, _ca, _cpu_row, _geo, _slab_nid, _stat)
from ..engine.native import address, jit, words_at, zero_bytes
from ..engine.live import _record_take
from ..engine.pcsbulk import _free_pending
from ..engine.sheaves import KMALLOC_CLASS
from .. import errors
from ..errors import AddressTypeError, InvalidSizeError, SizeTypeError, WrongTypeError
from ..flags import __GFP_ZERO, ALLOC_PCS, FREE_PCS, GFP_KERNEL, SLAB_ARRAY_ALLOC_ALL
from .handles import (CacheObjectType, SlabHandle, SlabHandleType, handle_live,
                      owned_arena, state_of, typing_site)
from .jiterrors import (E_BAD_CPU, E_BAD_FLAGS, E_BAD_GFP, E_BAD_NODE, E_BUILDING, E_CTOR,
                        E_DEAD_CACHE, E_GONE, J_ALLOC, J_ALLOC_ARRAY, J_ALLOC_BULK,
                        J_ALLOC_NODE, J_ARENA, J_COMPACT, J_FREE, J_FREE_ARRAY, J_FREE_BULK,
                        J_IS_LIVE, J_KFREE, J_KFREE_BULK, J_KMALLOC, JIT_RAISE, NO_ADDR, _fault,
                        _raise, _raise_batch, _raise_kfree, _record_error)

__all__ = ["SlabHandle", "kmem_cache_alloc", "kmem_cache_alloc_node", "kmem_cache_free",
           "kmem_cache_alloc_bulk", "kmem_cache_free_bulk", "kmem_cache_alloc_array",
           "kmem_cache_free_array", "kmalloc", "kfree", "kfree_bulk", "is_live", "arena",
           "kmem_cache_compact"]

#: Why ``kmem_cache_alloc_node`` takes ``node`` by keyword only.
NODE_BY_KEYWORD = ("the kernel (s, gfp, node), the Python API (cache, gfp, node, cpu) and "
                   "numslab.jit's other allocations (h, cache, cpu, gfp) each put it elsewhere, "
                   "and a node in place was silently taken for a cpu or a gfp (or they for it)")
#: The largest ``gfp``: the Python API's ``check_gfp`` takes 0..2**32-1, and so does this.
GFP_MAX = (1 << 32) - 1




@jit(inline=True, helper=True)
def _checked(st, got, call):
    """``got`` from an allocation's slow path, or raise if it met a fault or a refused array.

    It raises if the slow path met a corrupted free pointer or a failed slab_debug check (it then
    took nothing and returned 0 or -1), or refused a batch's array (``E_ARRAY_PLACE``)."""
    if got <= 0:
        if got == E_ARRAY_PLACE:
            _raise(got, NO_ADDR, -1, -1, errors.NO_VALUE, address(st), -1, call)
        if st.g[G_FAULT_CACHE]:
            _fault(st, call)
    return got


@jit(inline=True, helper=True)
def _state(h, cpu, call):
    """The State of handle ``h`` after checking the handle and the CPU."""
    st = state_of(h)
    if not handle_live(h) or address(st) == 0:
        _raise(E_GONE, NO_ADDR, -1, -1, errors.NO_VALUE, 0, -1, call)
    if cpu < 0 or cpu >= st.ncpus:
        _raise(E_BAD_CPU, NO_ADDR, -1, -1, cpu, 0, -1, call, st.ncpus)
    return st


@jit(inline=False, helper=True)
def _refuse_args(st, cache, cpu, gfp, call):
    """Raise for the argument of :func:`_cache_state` out of range, naming it.

    Out of line: which one it is, worked out in the hot path, cost the single pair 3-5%."""
    if cpu < 0 or cpu >= st.ncpus:
        _raise(E_BAD_CPU, NO_ADDR, cache, -1, cpu, address(st), -1, call, st.ncpus)
    if gfp < 0 or gfp > GFP_MAX:
        _raise(E_BAD_GFP, NO_ADDR, cache, -1, gfp, address(st), -1, call)
    _raise(E_DEAD_CACHE, NO_ADDR, -1, -1, cache, address(st), -1, call)  # (-1: the id refused)


@jit(inline=True, helper=True)
def _cache_state(h, cache, cpu, allocating, gfp, call):
    """:func:`_state`'s checks, plus the refusal of a dead cache id or a ``gfp`` out of range.

    It refuses a cache id that is not a live cache (and, when ``allocating``, a cache with a
    constructor) or a ``gfp`` outside 0..2**32-1 (frees pass 0), in three predictable branches:
    every call of a user's single-object loop pays them (two branches fewer took the single pair
    from 3.1x the FIFO ring to 2.7-2.9x)."""
    st = state_of(h)
    if not handle_live(h) or address(st) == 0:
        _raise(E_GONE, NO_ADDR, -1, -1, errors.NO_VALUE, 0, -1, call)
    # one branch for the three ranges (x in 0..n-1 exactly when x | (n - 1 - x) >= 0), one
    # for the cache's two words
    cpu_bad = cpu | (st.ncpus - 1 - cpu)
    gfp_bad = gfp | (GFP_MAX - gfp)
    if (cpu_bad | gfp_bad | cache | (st.max_caches - 1 - cache)) < 0:
        _refuse_args(st, cache, cpu, gfp, call)
    # (CA_ACTIVE is 0 for a dead cache whenever this runs: the release's dead-but-held 2 or 6
    # lives inside one engine call. Testing bit 0 here made the inlined single pair 4% slower)
    if (_geo(st, cache, CA_ACTIVE) == 0) | (allocating & (_geo(st, cache, CA_CTOR) != 0)):
        _raise(E_DEAD_CACHE if _geo(st, cache, CA_ACTIVE) == 0 else E_CTOR, NO_ADDR, cache,
               -1, errors.NO_VALUE, address(st), -1, call)
    return st


def _as_array(arr: Any, what: str) -> Any:
    """Typing guard of an object array argument: 1-D int64, contiguous and writable.

    An int32 array would truncate addresses; every call writes or reorders the array, as the
    facade's do. The array's address otherwise. Anything else is refused at compile time with a
    ``TypeError`` naming the argument ``what``."""
    if isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1 \
            and arr.layout == "C" and arr.mutable:
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            ary = context.make_array(sig.args[0])(context, builder, args[0])
            return builder.ptrtoint(ary.data, ir.IntType(64))
        return types.int64(arr), codegen
    hint = ""
    if isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1 \
            and arr.layout == "A":
        # what a jitclass field or an explicit signature typed ``int64[:]`` gives, slices of
        # it included: Numba cannot know it is contiguous
        hint = (": an array Numba does not know to be contiguous (a jitclass field or a "
                "signature typed int64[:] is one: type it int64[::1])")
    raise WrongTypeError(f"numslab.jit: {what} must be a writable contiguous 1-D int64 array "
                         f"(an object array), not {arr}{hint}{typing_site()}")


@intrinsic
def _out_array(typingctx: Any, arr: Any) -> Any:
    """The address of ``out``, the array an allocation fills (:func:`_as_array`)."""
    return _as_array(arr, "out, the array the call fills,")


@intrinsic
def _objs_array(typingctx: Any, arr: Any) -> Any:
    """The address of ``objs``, the array a free takes (:func:`_as_array`)."""
    return _as_array(arr, "objs, the array of objects to free,")


@intrinsic
def _old_array(typingctx: Any, arr: Any) -> Any:
    """The address of ``old``, compaction's array of moved objects (:func:`_as_array`)."""
    return _as_array(arr, "old, the array of the objects moved,")


@intrinsic
def _new_array(typingctx: Any, arr: Any) -> Any:
    """The address of ``new``, compaction's array of new places (:func:`_as_array`)."""
    return _as_array(arr, "new, the array of their new places,")


@jit(inline=True, helper=True)
def _checked_count(st, cache, nr, length, call):
    """Raise unless ``nr`` is in ``0..length`` (the array's entries), naming ``cache`` (or NIL)."""
    if nr < 0 or nr > length:
        _record_error(address(st), NO_ADDR, cache, -1, nr, -1, call, length)
        raise InvalidSizeError("numslab.jit: count negative or larger than the array's {bound} "
                               "entries", JIT_RAISE)


def _as_int64(x: Any, what: str, refusal: type = WrongTypeError) -> Any:
    """Typing guard of a scalar argument: an integer type becomes int64, anything else is refused.

    No instruction for an int64; a uint64 address above 2**63 - 1 turns negative and is refused as
    an address. Anything else is refused at compile time with ``refusal`` (a ``WrongTypeError``,
    a ``TypeError`` too) naming the argument (a float address otherwise failed deep in the typing
    of numslab's helpers, or a uint64 one, which Numba mixes with int64 into float64; a bool,
    which the Python API refuses too, allocated ``kmalloc(True)`` bytes from cache id
    ``True``)."""
    if isinstance(x, types.Integer):
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return context.cast(builder, args[0], sig.args[0], types.int64)
        return types.int64(x), codegen
    swapped = " (sa.handle is the first argument)" if isinstance(x, SlabHandleType) else \
        ": pass its id, c.id" if isinstance(x, CacheObjectType) else ""
    raise refusal(f"numslab.jit: {what} must be an integer, not {x}{swapped}{typing_site()}")


@intrinsic
def _addr_arg(typingctx: Any, x: Any) -> Any:
    """An address argument as int64 (:func:`_as_int64`)."""
    return _as_int64(x, "an address", AddressTypeError)


@intrinsic
def _cache_arg(typingctx: Any, x: Any) -> Any:
    """A cache id argument as int64 (:func:`_as_int64`)."""
    return _as_int64(x, "a cache id")


@intrinsic
def _count_arg(typingctx: Any, x: Any) -> Any:
    """A count or size argument as int64 (:func:`_as_int64`; ``SizeTypeError``, as Python's)."""
    return _as_int64(x, "a count or size", SizeTypeError)


@intrinsic
def _int_arg(typingctx: Any, x: Any) -> Any:
    """A cpu, node, gfp, flags or ratio argument as int64 (:func:`_as_int64`)."""
    return _as_int64(x, "each of cpu, node, gfp, flags and ratio")


# ---- the inlined fast paths --------------------------------------------------------------------
@jit(inline=True, helper=True)
def _alloc_fast(st, cache, cpu, gfp):
    """The common case of an allocation, inline: pop the CPU's main sheaf and hand the object out.

    0 with nothing changed if the cache has no sheaves or the sheaf is empty (the engine's
    allocation then takes the slow path)."""
    cap = _geo(st, cache, CA_SHEAF_CAPACITY)
    if cap == 0:
        return 0
    mem = st.mem
    main = st.cpu[_cpu_row(st, cache, cpu) + C_MAIN]
    size = mem[(main >> 3) + SH_SIZE] - 1
    if size < 0:
        return 0
    obj = mem[(main >> 3) + SH_OBJECTS + size]
    if _live_test(st, obj):
        return 0                    # a stale entry: the engine's pop purges and reports
    mem[(main >> 3) + SH_SIZE] = size
    _stat(st, cache, cpu, ALLOC_PCS, 1)
    if gfp & __GFP_ZERO:
        zero_bytes(mem, obj, _geo(st, cache, CA_OBJECT_SIZE))
    _live_set(st, obj)
    return obj


@jit(inline=True, helper=True)
def _alloc_bulk_sheaf(st, cache, cpu, gfp, nr, p):
    """The common case of a bulk allocation: take the whole batch from the CPU's main sheaf.

    The case: the CPU's main sheaf holds the whole batch and no zeroing is asked. Take its top
    ``nr`` objects into the Words ``p`` (their order kept, as ``alloc_from_pcs_bulk``): up to
    ``PEND_MAX`` of a cache taking them pending (``live._pends``), the record (no mark); else
    marked live. ``nr``; or -1 when the case does not apply (a debug cache, no sheaves, too few
    objects, ``__GFP_ZERO``, an array in the arena) or an entry is live already (the engine's
    take purges it). Inline in users' functions. Main and spare: the unit
    (``_take_main_spare``: inline, it took a user's bulk loop to 1.63-1.69x the free stack's
    compile time, past issue 11's 1.5x); the free's batch check too (inline 1.7x)."""
    if (gfp & __GFP_ZERO) | (_ca(st, cache, CA_DEBUG) != 0) | \
            (_geo(st, cache, CA_SHEAF_CAPACITY) == 0) | _in_arena(st, nr, address(p)):
        return -1                       # (an array in the arena: the unit checks where)
    mem = st.mem
    main = st.cpu[_cpu_row(st, cache, cpu) + C_MAIN]
    if main == 0:
        return -1
    size = mem[(main >> 3) + SH_SIZE] - nr
    if size < 0:
        return -1                       # (main and spare: the unit, one step there)
    if nr == 0:
        return 0
    if not ((_geo(st, cache, CA_ACTIVE) & 4) and nr <= PEND_MAX):
        return -1                       # (marks to write: the unit, a larger batch's cost)
    if st.g[G_PEND]:                    # pending: copied, no mark written
        ops.settle_pending(st)
    _record_take(st, _cpu_row(st, cache, cpu), mem, (main >> 3) + SH_OBJECTS + size, nr, p)
    mem[(main >> 3) + SH_SIZE] = size
    _stat(st, cache, cpu, ALLOC_PCS, nr)
    return nr


@jit(inline=True, helper=True)
def _free_fast(st, cache, cpu, addr):
    """The common case of a free, inline: a live local object goes to the CPU's main sheaf.

    A live object of ``cache`` (every check of a single free: ``checks._slab_of``) from a slab of
    the CPU's node goes to the CPU's main sheaf, which has room. True; False with nothing changed
    in every other case: no sheaves (6.18's CPU slab, a debug cache), a full sheaf, another node,
    or a bad address, whose error the engine's free then finds."""
    cap = _geo(st, cache, CA_SHEAF_CAPACITY)
    if cap == 0:
        return False
    slab = _slab_of(st, addr, cache)
    if slab == NIL or (st.nnodes != 1 and _slab_nid(st, slab) != st.cpu_node[cpu]):
        return False
    mem = st.mem
    main = st.cpu[_cpu_row(st, cache, cpu) + C_MAIN]
    size = mem[(main >> 3) + SH_SIZE]
    if (size < 0) | (size >= cap):
        return False
    _live_clear(st, addr)
    mem[(main >> 3) + SH_OBJECTS + size] = addr
    mem[(main >> 3) + SH_SIZE] = size + 1
    _stat(st, cache, cpu, FREE_PCS, 1)
    return True


# ---- the API ------------------------------------------------------------------------------------
@jit(inline=True, api=True)
def kmem_cache_alloc(h, cache, cpu=0, gfp=GFP_KERNEL):
    """One object of cache id ``cache`` on ``cpu``; its address or 0 (out of memory)."""
    cache, cpu, gfp = _cache_arg(cache), _int_arg(cpu), _int_arg(gfp)
    st = _cache_state(h, cache, cpu, True, gfp, J_ALLOC)
    obj = _alloc_fast(st, cache, cpu, gfp)
    if obj:
        return obj
    return _checked(st, ops.kmem_cache_alloc_node(st, cache, cpu, -1, gfp), J_ALLOC)


@jit(inline=True, api=True, keywords={"node": NODE_BY_KEYWORD})
def kmem_cache_alloc_node(h, cache, node, cpu=0, gfp=GFP_KERNEL):
    """One object from NUMA ``node`` (-1: any), passed by keyword; its address or 0.

    ``kmem_cache_alloc_node(h, cache, node=n)``, with ``cpu=`` and ``gfp=`` by keyword too if
    given: a call that passes ``node`` in place is refused (``numslab.WrongTypeError``), since
    the kernel (``s, gfp, node``), the Python API (``cache, gfp, node, cpu``) and the siblings
    here (``cache, cpu, gfp``) put it in different places."""
    cache, node, cpu, gfp = _cache_arg(cache), _int_arg(node), _int_arg(cpu), _int_arg(gfp)
    st = _cache_state(h, cache, cpu, True, gfp, J_ALLOC_NODE)
    if node < -1 or node >= st.nnodes:
        _raise(E_BAD_NODE, NO_ADDR, cache, -1, node, address(st), -1, J_ALLOC_NODE, st.nnodes)
    return _checked(st, ops.kmem_cache_alloc_node(st, cache, cpu, node, gfp), J_ALLOC_NODE)


@jit(inline=True, api=True)
def kmem_cache_free(h, cache, addr, cpu=0):
    """Free one object; raises on a bad address, wrong cache or double free."""
    cache, addr, cpu = _cache_arg(cache), _addr_arg(addr), _int_arg(cpu)
    st = _cache_state(h, cache, cpu, False, 0, J_FREE)
    if not _free_fast(st, cache, cpu, addr):
        err = ops.kmem_cache_free(st, cache, cpu, addr)
        if err:
            _raise(err, addr, cache, -1, errors.NO_VALUE, address(st), -1, J_FREE)


@jit(inline=True, api=True)
def kmem_cache_alloc_bulk(h, cache, nr, out, cpu=0, gfp=GFP_KERNEL):
    """``out[:nr]`` filled, returning ``nr``; or 0 with nothing taken.

    ``out``: int64[n], ``n >= nr``, 1-D, C-contiguous and writable."""
    cache, nr, cpu, gfp = _cache_arg(cache), _count_arg(nr), _int_arg(cpu), _int_arg(gfp)
    st = _cache_state(h, cache, cpu, True, gfp, J_ALLOC_BULK)
    _checked_count(st, cache, nr, out.shape[0], J_ALLOC_BULK)
    pa = _out_array(out)
    n = _alloc_bulk_sheaf(st, cache, cpu, gfp, nr, words_at(pa))
    if n >= 0:
        return n
    return _checked(st, ops.alloc_bulk(st, cache, cpu, gfp, nr, pa), J_ALLOC_BULK)


@jit(inline=True, api=True)
def kmem_cache_free_bulk(h, cache, nr, objs, cpu=0):
    """Free ``objs[:nr]`` (reordered in place); on a bad element nothing is freed.

    ``objs``: int64[n], ``n >= nr``, 1-D, C-contiguous and writable."""
    _free_bulk(h, cache, nr, objs, cpu, J_FREE_BULK)


@jit(inline=True, helper=True)
def _free_bulk(h, cache, nr, objs, cpu, call):
    """``kmem_cache_free_bulk`` or ``kmem_cache_free_array`` (``call``: which raises)."""
    cache, nr, cpu = _cache_arg(cache), _count_arg(nr), _int_arg(cpu)
    st = _cache_state(h, cache, cpu, False, 0, call)
    _checked_count(st, cache, nr, objs.shape[0], call)
    pa = _objs_array(objs)
    if st.g[G_PEND] == nr and not _in_arena(st, nr, pa) and \
            _free_pending(st, cache, cpu, nr, words_at(pa)):
        return
    err = ops.free_bulk(st, cache, cpu, nr, pa)
    if err == E_ARRAY_PLACE:                    # the array, not an element
        _raise(err, NO_ADDR, cache, -1, errors.NO_VALUE, address(st), -1, call)
    if err:
        _raise_batch(st, err, cache, pa, call)  # the bad element (nothing was reordered)


@jit(inline=True, api=True)
def kmem_cache_alloc_array(h, cache, nr, out, flags=0, cpu=0, gfp=GFP_KERNEL):
    """The seed's array allocation (SLAB_ARRAY_ALLOC_* ``flags``); the count allocated.

    ``out``: int64[n], ``n >= nr``, 1-D, C-contiguous and writable."""
    cache, nr, flags = _cache_arg(cache), _count_arg(nr), _int_arg(flags)
    cpu, gfp = _int_arg(cpu), _int_arg(gfp)
    st = _cache_state(h, cache, cpu, True, gfp, J_ALLOC_ARRAY)
    if flags & ~SLAB_ARRAY_ALLOC_ALL:
        _raise(E_BAD_FLAGS, NO_ADDR, cache, -1, flags, address(st), -1, J_ALLOC_ARRAY)
    _checked_count(st, cache, nr, out.shape[0], J_ALLOC_ARRAY)
    pa = _out_array(out)
    return _checked(st, ops.kmem_cache_alloc_array(st, cache, cpu, gfp, flags, nr, pa),
                    J_ALLOC_ARRAY)


@jit(inline=True, api=True)
def kmem_cache_free_array(h, cache, nr, objs, cpu=0):
    """Free an array of objects (as ``kmem_cache_free_bulk``).

    ``objs``: int64[n], ``n >= nr``, 1-D, C-contiguous and writable."""
    _free_bulk(h, cache, nr, objs, cpu, J_FREE_ARRAY)


@jit(inline=True, api=True)
def kmalloc(h, size, cpu=0, gfp=GFP_KERNEL):
    """``size`` bytes from the kmalloc caches (or whole pages); address, 16 for 0, or 0."""
    size, cpu, gfp = _count_arg(size), _int_arg(cpu), _int_arg(gfp)
    st = _state(h, cpu, J_KMALLOC)
    if (gfp | (GFP_MAX - gfp)) < 0:
        _raise(E_BAD_GFP, NO_ADDR, -1, -1, gfp, 0, -1, J_KMALLOC)
    if size == 0:
        return ZERO_SIZE_PTR
    if size < 0 or size > 4 << 20:
        _record_error(0, NO_ADDR, -1, -1, size, -1, J_KMALLOC, errors.NO_VALUE)
        raise InvalidSizeError("numslab.jit: kmalloc size not in 0..4 MiB", JIT_RAISE)
    if size <= 8192:
        for i in range(NR_KMALLOC):
            if size <= KMALLOC_CLASS[i]:
                cache = st.kmalloc[i]
                obj = _alloc_fast(st, cache, cpu, gfp)
                if obj:
                    return obj
                return _checked(st, ops.kmalloc(st, cache, cpu, -1, gfp, size, 0), J_KMALLOC)
    order = 0
    while (4096 << order) < size:
        order += 1
    return ops.kmalloc(st, NIL, cpu, -1, gfp, size, order)


@jit(inline=True, api=True)
def kfree(h, addr, cpu=0):
    """Free a kmalloc allocation, or any slab object, its cache found from its page.

    As in the kernel; NULL, ZERO_SIZE_PTR and the addresses between them are ignored."""
    addr, cpu = _addr_arg(addr), _int_arg(cpu)
    st = _state(h, cpu, J_KFREE)
    if (addr >= 0) & (addr <= ZERO_SIZE_PTR):      # ZERO_OR_NULL_PTR: 0 to 16
        return
    if (addr > 0) & (addr < st.npages << 12):
        cache = st.sl_cache[addr >> 12]         # NIL unless addr is in a slab's head frame
        if cache >= 0 and _free_fast(st, cache, cpu, addr):
            return
    err = ops.kfree(st, cpu, addr)
    if err:
        _raise_kfree(st, err, addr, J_KFREE)


@jit(inline=True, api=True)
def kfree_bulk(h, nr, objs, cpu=0):
    """``kfree`` of ``objs[:nr]`` of any caches.

    ``objs``: int64[n], ``n >= nr``, 1-D, C-contiguous and writable."""
    nr, cpu = _count_arg(nr), _int_arg(cpu)
    st = _state(h, cpu, J_KFREE_BULK)
    _checked_count(st, NIL, nr, objs.shape[0], J_KFREE_BULK)
    pa = _objs_array(objs)
    err = ops.free_bulk(st, NIL, cpu, nr, pa)
    if err == E_ARRAY_PLACE:
        _raise(err, NO_ADDR, -1, -1, errors.NO_VALUE, address(st), -1, J_KFREE_BULK)
    if err:
        _raise_batch(st, err, NIL, pa, J_KFREE_BULK)


@jit(inline=True, api=True)
def is_live(h, cache, addr):
    """True if ``addr`` is an allocated object of ``cache`` (NIL: of any cache).

    A ``cache`` that is neither NIL nor a live cache's id raises ``WrongCacheError``, as every
    call does."""
    cache, addr = _cache_arg(cache), _addr_arg(addr)
    st = _state(h, 0, J_IS_LIVE)
    wait_for_turn()             # (not in the middle of another thread's operation)
    if cache != NIL and ((cache < 0) | (cache >= st.max_caches)
                         or _geo(st, cache, CA_ACTIVE) & 1 == 0):     # (in range first)
        _raise(E_DEAD_CACHE, NO_ADDR, -1, -1, cache, address(st), -1, J_IS_LIVE)
    if st.g[G_PEND]:            # (read with the pending record settled, then put back)
        return checks.locate(st, addr, cache) >= 0
    err, _ = _locate(st, addr, cache)
    return err == 0


@jit(inline=True, api=True)
def kmem_cache_compact(h, cache, ratio, old, new, cpu=0):
    """``cache.compact(ratio)``: move the objects of sparse slabs into the fullest slabs.

    Parameters
    ----------
    h : handle
        ``sa.handle``.
    cache : int
        The cache's id.
    ratio : int
        The objects of slabs used at most ``ratio`` percent (0..100) are moved; -1: the
        cache's ``defrag_used_ratio``.
    old, new : numpy.ndarray
        int64[n], 1-D: the moves' pairs are written to them, at most
        ``min(len(old), len(new))`` moves. Whole slabs are emptied, each only while the arrays
        have room for all its objects, so arrays shorter than the sparsest slab's objects in use
        move nothing (pass arrays as long as the live objects to move them all). In the arena,
        only inside an allocation of yours, as every batch call's array, and not in an object
        of ``cache``.
    cpu : int
        The simulated CPU calling.

    Returns
    -------
    int
        The number of moves; ``-1 - moves`` if a corrupted free pointer stopped them (the slab
        is isolated; the moves made are in the arrays).
    """
    cache, ratio, cpu = _cache_arg(cache), _int_arg(ratio), _int_arg(cpu)
    st = _cache_state(h, cache, cpu, False, 0, J_COMPACT)
    if _geo(st, cache, CA_CTOR) > 1:        # (the facade's count of slabs it constructs)
        _raise(E_BUILDING, NO_ADDR, cache, -1, errors.NO_VALUE, address(st), -1, J_COMPACT)
    if ratio > 100 or ratio < -1:
        _record_error(address(st), NO_ADDR, cache, -1, ratio, -1, J_COMPACT, errors.NO_VALUE)
        raise InvalidSizeError("numslab.jit: ratio not in 0..100 (or -1: the cache's "
                               "defrag_used_ratio)", JIT_RAISE)
    room = min(old.shape[0], new.shape[0])
    po, pn = _old_array(old), _new_array(new)
    if _compact_array_bad(st, cache, room, po) or _compact_array_bad(st, cache, room, pn):
        _raise(E_ARRAY_PLACE, NO_ADDR, cache, -1, errors.NO_VALUE, address(st), -1, J_COMPACT)
    got = defrag.compact(st, cache, cpu, ratio, room, po, pn)
    if got < 0:
        g = st.g
        g[G_FAULT_CACHE] = 0
        g[G_FAULT_SLAB] = 0
        g[G_FAULT_VALUE] = 0
    return got


@jit(inline=False, helper=True)
def _compact_array_bad(st, cache, room, pa):
    """Whether a compaction's pair array of ``room`` words at ``pa`` is misplaced.

    Misplaced: in the arena other than inside an allocation of the caller's
    (:func:`checks._array_home`), or on a slab of the cache compacted, whose objects the call moves
    and whose slabs it frees while it writes the pairs."""
    off = pa - address(st.mem)
    return _array_misplaced(st, room, pa) != 0 or \
        ((room > 0) & (off >= 0) & (off < st.mem_size) and ops._slab_owner(st, off) == cache)


@jit(nrt=True, api=True)
def arena(h):
    """The allocator's arena as a uint8 array (zero-copy), ``uint8[nr_nodes * memory]``.

    The object at address ``a`` is ``arena(h)[a:a + size]``. Like ``sa.memory``, it keeps the
    arena's memory (not the allocator) alive: once the allocator is gone its bytes belong to
    nobody."""
    st = _state(h, 0, J_ARENA)
    view = owned_arena(h, st.mem, st.mem_size)
    if view.size != st.mem_size:                # the allocator went in between
        _raise(E_GONE, NO_ADDR, -1, -1, errors.NO_VALUE, 0, -1, J_ARENA)
    return view
