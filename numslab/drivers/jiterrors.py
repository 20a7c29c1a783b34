"""``numslab.jit``'s errors: their codes, the detail compiled code records per thread, the raises.

Compiled code raises constant exceptions (Numba's exceptions with runtime arguments need its
runtime), so the detail (address, cache, batch element, refused argument, call) goes to a
per-thread row of :data:`ERROR_DETAIL`, which ``SlabError`` reads when Python makes the
exception. ``jitapi`` (the API) raises through :func:`_raise`, :func:`_raise_batch`,
:func:`_raise_kfree` and :func:`_fault`."""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .. import errors
from ..engine import ops
from ..engine.checks import (E_ALLOCATORS, E_ARRAY_PLACE, E_AT, E_DOUBLE_FREE, E_HOLDS_ARRAY,
                             E_LARGE, E_MISALIGNED, E_NOT_HEAD, E_NOT_SLAB, E_OUTSIDE, E_TWICE,
                             E_WRONG_CACHE, _twin)
from ..engine.debug import E_DEBUG
from ..engine.layout import (G_FAULT_CACHE, G_FAULT_SLAB, G_FAULT_VALUE, G_NREPORTS, NIL,
                             R_MAX, R_NCOLS, R_SLAB)
from ..engine.native import _MACHINE, address, jit, table_address, thread_pointer, words_at
from ..errors import (AllocatorGoneError, BadAddressError, ConstructorError, DoubleFreeError,
                      InvalidArgumentError, SlabCorruptionError,
                      SlabDebugError, WrongCacheError)
from . import handles
from .handles import GONE

E_DEAD_CACHE = -20    #: not the id of a live cache
E_BAD_CPU = -21       #: CPU out of range
E_CTOR = -22          #: the cache has a Python constructor
E_GONE = -23          #: the handle's allocator is gone
E_BAD_NODE = -24      #: node out of range
E_BAD_GFP = -25       #: gfp not in 0..2**32-1 (gfp_t is a 32-bit unsigned int)
E_BAD_FLAGS = -26     #: array flags other than SLAB_ARRAY_ALLOC_*
E_BUILDING = -27      #: a compaction from the cache's constructor while it builds a slab



#: The address (:data:`NO_ADDR`: not known), cache id and batch element (-1: not known) of
#: the error being raised by compiled code, the argument refused (:data:`NO_VALUE`: none)
#: the earlier batch element naming the same object (-1: none) and the bound the argument
#: broke (:data:`NO_VALUE`: none; an array's entries, the machine's CPUs or nodes), read by
#: ``SlabError``
#: when Python makes the exception: Numba's exceptions with
#: runtime arguments need its runtime (an allocation in every user's loop that could raise),
#: so the arguments go here and the exceptions stay constant. One row of :data:`ERROR_WORDS`
#: per thread (hashed from the thread's pointer, its first word): two threads raising at once
#: named each other's address when there was one record for the process.
ERROR_ROWS, ERROR_WORDS = 256, 16
#: "No address" in the error detail: an address of -1 is the user's, and is named.
NO_ADDR = errors.NO_VALUE
#: The second argument of every exception compiled code raises (``errors.JIT_RAISE``): how
#: an exception tells a compiled raise, whose detail it reads, from one a user makes.
JIT_RAISE = errors.JIT_RAISE
ERROR_DETAIL = np.tile(np.array([0, 0, errors.NO_VALUE, -1, -1, errors.NO_VALUE, -1, 0,
                                 errors.NO_VALUE, 0, 0, 0, 0, 0, 0, 0], np.int64), ERROR_ROWS)
#: The calls an error names (``numslab.jit.kmem_cache_free: ...``), by the code each passes
#: down to its raise (0: none known).
JIT_CALLS = ("", "kmem_cache_alloc", "kmem_cache_alloc_node", "kmem_cache_free",
             "kmem_cache_alloc_bulk", "kmem_cache_free_bulk", "kmem_cache_alloc_array",
             "kmem_cache_free_array", "kmalloc", "kfree", "kfree_bulk", "is_live",
             "kmem_cache_compact", "arena")
(J_ALLOC, J_ALLOC_NODE, J_FREE, J_ALLOC_BULK, J_FREE_BULK, J_ALLOC_ARRAY, J_FREE_ARRAY,
 J_KMALLOC, J_KFREE, J_KFREE_BULK, J_IS_LIVE, J_COMPACT, J_ARENA) = range(1, len(JIT_CALLS))
ERROR_SYMBOL = "numslab_jit_error"
ll.add_symbol(ERROR_SYMBOL, ERROR_DETAIL.ctypes.data)
_HASH = 0x9E3779B97F4A7C15          # Fibonacci hashing: the top 8 bits pick the row


def _error_row(tid: int) -> int:
    """The row of :data:`ERROR_DETAIL` for the thread whose pointer is ``tid``.

    Its page number hashed (the pointers themselves, 0x801000 apart in glibc, put every third
    thread in one row, and the second to raise there took the first's detail away)."""
    return ((((tid & ((1 << 64) - 1)) >> 12) * _HASH) & ((1 << 64) - 1)) >> 56


def _read_error_detail() -> tuple[int, int, int, int, int, str | None, str | None,
                                  str | None, int]:
    """The detail of this thread's last compiled raise, or nothing if another thread took the row.

    Address, cache id, batch element, refused argument, the earlier batch element naming the same
    object, the cache's name and the allocator's note on the address (None: not known;
    :func:`handles.describe`; every raise of ``numslab.jit`` records its own first; Python makes
    the exception more than once, so it is not reset here), and the call that raised (None: not
    known); nothing known if another thread's raise took the row since."""
    tid = threading.get_ident() if _MACHINE == "x86_64" else -1     # (thread_pointer's)
    row = ERROR_DETAIL[_error_row(tid) * ERROR_WORDS:][:ERROR_WORDS].copy()    # (at once:
    if int(row[0]) != tid:      # a thread sharing the row wrote it between a test and a read)
        return NO_ADDR, -1, -1, errors.NO_VALUE, -1, None, None, None, errors.NO_VALUE
    where, addr, cache, index, value, earlier, call, bound = (int(x) for x in row[1:9])
    return (addr, cache, index, value, earlier, *handles.describe(where, cache, addr),
            JIT_CALLS[call] if 0 < call < len(JIT_CALLS) else None, bound)


errors._jit_error_detail = _read_error_detail



@intrinsic
def _record_error(typingctx: Any, where: Any, addr: Any, cache: Any, index: Any,
                  value: Any, earlier: Any, call: Any, bound: Any) -> Any:
    """Store the calling thread's pointer and an error's detail in its row of :data:`ERROR_DETAIL`.

    After the pointer: ``where`` (the allocator's state address, 0: not known), ``addr``,
    ``cache``, ``index``, ``value``, ``earlier``, ``call`` (its :data:`JIT_CALLS` code) and
    ``bound``."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i64 = ir.IntType(64)
        tid = thread_pointer(builder)
        row = builder.lshr(builder.mul(builder.lshr(tid, ir.Constant(i64, 12)),
                                       ir.Constant(i64, _HASH - (1 << 64))),
                           ir.Constant(i64, 56))           # (_error_row's)
        base = builder.gep(table_address(builder, ERROR_SYMBOL),
                           [builder.mul(row, ir.Constant(i64, ERROR_WORDS))])
        for k, v in enumerate([tid, *args]):
            builder.store(v, builder.gep(base, [ir.Constant(i64, k)]))
        return context.get_dummy_value()
    return types.none(types.int64, types.int64, types.int64, types.int64, types.int64,
                      types.int64, types.int64, types.int64), codegen


@jit(inline=False, helper=True)
def _raise(err, addr=NO_ADDR, cache=-1, index=-1, value=errors.NO_VALUE, where=0, earlier=-1,
           call=0, bound=errors.NO_VALUE):
    """Raise the numslab exception for error code ``err``, its detail in :data:`ERROR_DETAIL`.

    Out of line: the hot paths only test and branch here; a batch call's code carries the bad
    element's index too. The address, cache id and batch element (-1: not known), the refused
    argument ``value``, the allocator's state address ``where`` (0: not known; the cache's name is
    looked up from it), for ``E_TWICE`` the ``earlier`` element naming the same object, and the
    ``call`` raising (:data:`JIT_CALLS`) and the ``bound`` the argument broke (the number of CPUs
    or nodes) go to :data:`ERROR_DETAIL`, which the exception's text names."""
    err = -(-err % E_AT)
    _record_error(where, addr, cache, index, value, earlier, call, bound)
    if err == E_GONE:
        raise AllocatorGoneError(GONE, JIT_RAISE)
    if err == E_DEAD_CACHE:
        raise WrongCacheError("numslab.jit: not the id of a live cache", JIT_RAISE)
    if err == E_BAD_CPU:
        raise InvalidArgumentError("numslab.jit: cpu not in 0..{last}", JIT_RAISE)
    if err == E_BAD_NODE:
        raise InvalidArgumentError("numslab.jit: node is neither -1 nor one of this machine's "
                                   "nodes 0..{last}", JIT_RAISE)
    if err == E_CTOR:
        raise InvalidArgumentError("numslab.jit: caches with a constructor are allocated from "
                                   "Python", JIT_RAISE)
    if err == E_BUILDING:
        raise ConstructorError("numslab.jit: called by the cache's own constructor while it "
                               "constructs a new slab, whose objects not constructed yet a move "
                               "would fill: nothing was done", JIT_RAISE)
    if err == E_BAD_GFP:
        raise InvalidArgumentError("numslab.jit: gfp is not a set of GFP flags (an int in "
                                   "0..2**32-1)", JIT_RAISE)
    if err == E_BAD_FLAGS:
        raise InvalidArgumentError("numslab.jit: kmem_cache_alloc_array flags other than "
                                   "SLAB_ARRAY_ALLOC_LOCAL, _PARTIAL, _NEW and _FULL_COUNT",
                                   JIT_RAISE)
    if err == E_DOUBLE_FREE:
        raise DoubleFreeError("numslab.jit: double free (the object is already free)", JIT_RAISE)
    if err == E_TWICE:
        raise DoubleFreeError("numslab.jit: double free within the batch (two elements name "
                              "one object; nothing freed)", JIT_RAISE)
    if err == E_WRONG_CACHE:
        raise WrongCacheError("numslab.jit: the object belongs to another cache than the one "
                              "passed, named last", JIT_RAISE)
    if err == E_MISALIGNED or err == E_NOT_HEAD:
        raise BadAddressError("numslab.jit: address is not the start of an object", JIT_RAISE)
    if err == E_OUTSIDE:
        raise BadAddressError("numslab.jit: address is outside the arena, not an allocated slab "
                              "object", JIT_RAISE)
    if err == E_NOT_SLAB or err == E_LARGE:
        raise BadAddressError("numslab.jit: address is not an allocated slab object", JIT_RAISE)
    if err == E_DEBUG and (call == J_FREE_BULK or call == J_FREE_ARRAY or call == J_KFREE_BULK):
        raise SlabDebugError("numslab.jit: a slab_debug check refused a detached freelist of "
                             "the batch: its objects stay allocated, the others were freed "
                             "(this error's objects is None: those of objs[:nr] that is_live "
                             "finds are yours to free one by one, twice for each whose first "
                             "free a check refuses); see SlabAllocator.slab_reports()",
                             JIT_RAISE)
    if err == E_DEBUG:
        raise SlabDebugError("numslab.jit: a slab_debug check refused the free (the object "
                             "stays allocated); see SlabAllocator.slab_reports()", JIT_RAISE)
    if err == E_ARRAY_PLACE:
        raise InvalidArgumentError("numslab.jit: the object array lies in the arena but not "
                                   "inside one live allocation of yours (it covers a free "
                                   "object or the allocator's memory; for kmem_cache_compact, "
                                   "an object of the cache it moves): nothing was done", JIT_RAISE)
    if err == E_HOLDS_ARRAY:
        raise InvalidArgumentError("numslab.jit: the object array lies inside an object it "
                                   "frees (freeing it would write into the array): nothing "
                                   "was freed", JIT_RAISE)
    if err == E_ALLOCATORS:
        raise BadAddressError("numslab.jit: address is a sheaf, a node barn or a random "
                              "sequence (s->random_seq) the allocator uses, not an object of "
                              "yours", JIT_RAISE)
    raise InvalidArgumentError("numslab.jit: invalid argument", JIT_RAISE)


@jit(inline=False, helper=True)
def _fault(st, call):
    """Clear the fault of a corrupted free pointer or failed slab_debug check, and raise.

    A corrupted free pointer was found, or a slab_debug check failed if the call wrote reports (the
    facade's test; here: the newest report names the isolated slab, which only a slab_debug check
    reports); either way the engine isolated the slab and gave back what the call took."""
    g = st.g
    n = g[G_NREPORTS]
    reported = n > 0 and \
        st.reports[((n - 1) % R_MAX) * R_NCOLS + R_SLAB] == g[G_FAULT_SLAB]
    cache = g[G_FAULT_CACHE] - 1
    slab, bad = g[G_FAULT_SLAB], g[G_FAULT_VALUE]
    g[G_FAULT_CACHE] = 0
    g[G_FAULT_SLAB] = 0
    g[G_FAULT_VALUE] = 0
    if reported:
        _record_error(address(st), NO_ADDR, cache, -1, errors.NO_VALUE, -1, call,
                      errors.NO_VALUE)
        raise SlabDebugError("numslab.jit: a slab_debug check failed on allocation: the slab "
                             "is isolated, nothing was allocated; see "
                             "SlabAllocator.slab_reports()", JIT_RAISE)
    _record_error(address(st), slab << 12, cache, -1, bad, -1, call, errors.NO_VALUE)
    raise SlabCorruptionError("numslab.jit: Freepointer corrupt (a write into freed memory?): "
                              "a free object of the slab named holds the free pointer named, "
                              "which does not lead to a free object of that slab; the slab is "
                              "isolated (and any other the call found corrupt: "
                              "SlabAllocator.isolated_slabs() lists them), nothing was "
                              "allocated", JIT_RAISE)


@jit(inline=False, helper=True)
def _raise_kfree(st, err, addr, call):
    """Raise for a ``kfree`` the engine refused, naming the cache of the address's slab if any.

    The call names no cache: the cache its page belongs to is named when the address lies in a
    slab."""
    cache = ops._slab_owner(st, addr) if (addr > 0) & (addr < st.npages << 12) else NIL
    _raise(err, addr, cache, -1, errors.NO_VALUE, address(st), -1, call)


@jit(inline=False, helper=True)
def _raise_batch(st, err, cache, pa, call):
    """Raise for the element of the batch at ``pa`` that a batch free refused.

    The element is ``err - i * E_AT``; the array is as the caller passed it. The error names the
    element and, for ``kfree_bulk`` (``cache`` NIL), the cache its page belongs to; for ``E_TWICE``
    the earlier element naming the same object too (the engine's :func:`checks._twin`)."""
    i = -err // E_AT
    p = words_at(pa)
    addr = p[i]
    earlier = _twin(p, i) if err + i * E_AT == E_TWICE else -1
    if cache == NIL:
        cache = ops._slab_owner(st, addr) if (addr > 0) & (addr < st.npages << 12) else NIL
    _raise(err, addr, cache, i, errors.NO_VALUE, address(st), earlier, call)
