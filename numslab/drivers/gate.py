"""From Python to the engine with no bytecode on the way: the C call gate (``_gate.c``).

Built with the package, it is put in front of an allocator's hot facade calls.

Each gated method checks in C that its arguments are those of the common case and calls the
unit; anything else, and every error, runs the allocator's Python method of the same name
(the reference implementation, and the whole path when the gate is not built or
``NUMSLAB_GATE=0``). See ARCHITECTURE.md, "How a call reaches the engine".
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..engine import native, ops
from ..engine.kmalloc import kmalloc_index_table
from ..engine.layout import CA_CTOR, CA_NCOLS, F_CA, F_G, G_NPENDING, view
from ..engine.native import STUB_TABLE, UNIT_TABLE
from ..errors import AllocatorGoneError
from ..flags import GFP_KERNEL, SLAB_ARRAY_ALLOC_ALL

try:
    from . import _gate
except ImportError:             # not built (no compiler): the facade's Python methods serve
    _gate = None

if TYPE_CHECKING:
    from ..facade.allocator import SlabAllocator

#: The facade methods the gate serves, as instance attributes of a gated allocator.
GATED = ("kmem_cache_alloc", "kmem_cache_free", "kmalloc", "kfree", "kmem_cache_alloc_bulk",
         "kmem_cache_free_bulk", "kfree_bulk", "kmem_cache_alloc_array",
         "kmem_cache_free_array")
#: The units behind them, in the gate's order.
UNITS = (ops.kmem_cache_alloc_node, ops.kmem_cache_free, ops.kmalloc, ops.kfree,
         ops.alloc_bulk, ops.free_bulk, ops.kmem_cache_alloc_array)


def _compile_slot(slot: int) -> None:
    """Compile the unit of table slot ``slot`` (the gate asks before it reads a cache id)."""
    native.UNITS[slot].compile()


@lru_cache(maxsize=1)
def available() -> bool:
    """True if the gate is built, enabled, and reads NumPy arrays as this NumPy lays them out.

    The layout is checked once on probe arrays."""
    if _gate is None or os.environ.get("NUMSLAB_GATE", "1") == "0":
        return False
    a = np.zeros(5, np.int64)
    ro = a[::2]
    ro.flags.writeable = False
    data, nd, n, flags, descr = _gate.probe(a)
    if (data, nd, n, descr) != (a.ctypes.data, 1, 5, a.dtype) or flags & 0x0401 != 0x0401:
        return False
    data, nd, n, flags, descr = _gate.probe(ro)
    return (data, nd, n) == (ro.ctypes.data, 1, 3) and flags & 0x0401 == 0


#: For every request size 0..8192, the kmalloc class serving it (an index into the allocator's
#: ``_kmalloc_ids``; made once: 8,193 lookups an allocator had been 1.5 ms of its 6.3).
_KMALLOC_INDEX = np.asarray(kmalloc_index_table(), np.intp)


def install(sa: "SlabAllocator", base: type, cache_type: type) -> bool:
    """Put the gate in front of ``sa``'s hot calls, for caches of ``cache_type``.

    The hot calls: those its class ``base`` defines and a subclass did not override. False (nothing
    changed) if the gate is unavailable."""
    if not available():
        return False
    kmalloc_cache = np.asarray(sa._kmalloc_ids, np.int64)[_KMALLOC_INDEX].tolist()
    gate = _gate.Gate(
        sa=sa, keep=(sa._buf, sa.memory), error_type=AllocatorGoneError, cache_type=cache_type,
        array_type=np.ndarray, int64_descr=np.dtype(np.int64),
        st=sa._st, table=UNIT_TABLE.ctypes.data, slots=[u.slot for u in UNITS],
        ca=view(sa._buf, F_CA).ctypes.data, ca_ncols=CA_NCOLS, ca_ctor=CA_CTOR,
        g=view(sa._buf, F_G).ctypes.data, g_npending=G_NPENDING, kmalloc_table=kmalloc_cache,
        gfp_kernel=GFP_KERNEL, array_flags_all=SLAB_ARRAY_ALLOC_ALL,
        stubs=STUB_TABLE.ctypes.data, compile=_compile_slot)
    sa._gate = gate
    for name in GATED:
        if getattr(type(sa), name) is getattr(base, name):
            setattr(sa, name, getattr(gate, name))
    return True
