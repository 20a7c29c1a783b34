"""CONFIG_SLAB_FREELIST_RANDOM's per-cache set-up at ``kmem_cache_create``.

The random sequence (``init_cache_random_seq``) that the engine reads when it makes a new slab,
and the kmalloc object the kernel keeps it in (``cache_random_seq_create``'s ``kcalloc``).

The kernel (``mm/slab_common.c`` ``cache_random_seq_create``, ``mm/slub.c``
``init_cache_random_seq``) shuffles ``0..count-1`` with Fisher-Yates, ``count`` being
``oo_objects(s->oo)``, skips caches of fewer than two objects per slab, and multiplies each
entry by ``s->size``. Here the draws come from a generator seeded by the allocator's seed and
the cache's slot, so that two allocators built alike lay out their slabs alike.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..engine.layout import CA_RSEQ, CA_RSEQ_LEN, RANDOM_SEQ_ENTRY, RSEQ_MAX
from ..engine.sheaves import kmalloc_internal
from ..errors import InvalidSizeError
from ..flags import __GFP_ZERO, GFP_KERNEL

if TYPE_CHECKING:
    from .allocator import SlabAllocator

#: The smallest kmalloc the allocator can hold as its own (``live._own_set``: kmalloc-16).
MIN_OWN_KMALLOC = 16


def freelist_randomize(rng: np.random.Generator, count: int) -> np.ndarray:
    """``freelist_randomize``: ``0..count-1`` shuffled by Fisher-Yates.

    From the last entry down, each is swapped with one drawn below its index + 1.

    Parameters
    ----------
    rng : numpy.random.Generator
        The source of the draws (``get_random_u32_below`` in the kernel).
    count : int
        Entries, at least 2.

    Returns
    -------
    numpy.ndarray
        int64[count], a permutation of ``0..count-1``.
    """
    seq = list(range(count))
    draws = rng.integers(0, np.arange(count, 1, -1)).tolist()   # below i + 1, i = count-1..1
    for i, r in zip(range(count - 1, 0, -1), draws):
        seq[i], seq[r] = seq[r], seq[i]
    return np.array(seq, dtype=np.int64)


def init_cache_random_seq(rseq: np.ndarray, row: np.ndarray, cid: int, count: int,
                          size: int, seed: list[int]) -> None:
    """``init_cache_random_seq``: make cache slot ``cid``'s random sequence.

    Its entries (times ``size``) go to the slot's window of field ``rseq``, and ``row`` (the
    cache's ``ca`` row, not yet stored) points at them; a cache of fewer than two objects
    per slab gets none (``CA_RSEQ_LEN`` 0), as ``cache_random_seq_create`` returns early.

    Parameters
    ----------
    rseq : numpy.ndarray
        int64[max_caches, RSEQ_MAX], the state's field ``rseq`` (``SlabState.rseq``).
    row : numpy.ndarray
        int64[CA_NCOLS], the cache's new ``ca`` row.
    cid, count, size : int
        The cache slot, ``oo_objects(s->oo)`` and ``s->size``.
    seed : list of int
        Seed words of the generator (the allocator's seed first).
    """
    row[CA_RSEQ] = cid * RSEQ_MAX
    row[CA_RSEQ_LEN] = 0
    if count < 2:
        return
    if count > RSEQ_MAX:                # pragma: no cover - kmem_cache_create refuses it
        raise InvalidSizeError(f"{count} objects per slab exceed the sequence room ({RSEQ_MAX})")
    rseq[cid, :count] = freelist_randomize(np.random.default_rng(seed), count) * size
    rseq[cid, count:] = 0
    if 2 * count <= RSEQ_MAX:           # twice, so that a slab carved whole from any start
        rseq[cid, count:2 * count] = rseq[cid, :count]      # is one copy with no wrap
    row[CA_RSEQ_LEN] = count


def cache_random_seq_create(sa: "SlabAllocator", cid: int) -> int:
    """``cache_random_seq_create``'s ``kcalloc``: cache slot ``cid``'s sequence in the arena.

    ``kcalloc(count, sizeof(unsigned int), GFP_KERNEL)`` on the calling thread's CPU, ``count``
    the slot's ``CA_RSEQ_LEN``: a kmalloc object of ``4 * count`` bytes (kmalloc-16 to
    kmalloc-2k; 8 bytes take kmalloc-16, see below), the allocator's own; the sequence's
    entries (each times ``s->size``) are written into it as ``unsigned int`` and its address
    goes to field ``random_seq``, where ``cache_random_seq_destroy`` (``ops.cache_release``)
    finds it. A slot with no sequence
    (fewer than two objects per slab: ``count < 2`` returns early; ``freelist_random=False``)
    allocates nothing.

    Parameters
    ----------
    sa : SlabAllocator
        The allocator; its slot ``cid``'s ``ca`` row is stored.
    cid : int
        The cache slot.

    Returns
    -------
    int
        0, or -1 when the kcalloc found no memory (nothing allocated, the field left 0).
    """
    st = sa.state
    count = int(st.ca[cid, CA_RSEQ_LEN])
    if count < 2:
        return 0
    nbytes = count * RANDOM_SEQ_ENTRY
    # (two entries, 8 bytes, are a kmalloc-8 object in the kernel; numslab marks its own
    # objects by the live bitmap's bit of their second granule, which in kmalloc-8 is the
    # next object's: such a sequence takes kmalloc-16, the one size where numslab differs)
    obj = int(kmalloc_internal(sa._st, sa._cpu(), max(nbytes, MIN_OWN_KMALLOC),
                               GFP_KERNEL | __GFP_ZERO, -1))
    if not obj:
        return -1
    sa.memory[obj:obj + nbytes].view(np.uint32)[:] = st.rseq[cid, :count]
    st.random_seq[cid] = obj
    return 0
