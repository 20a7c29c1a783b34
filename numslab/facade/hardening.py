"""CONFIG_SLAB_FREELIST_RANDOM's per-cache set-up at ``kmem_cache_create``.

The random sequence (``init_cache_random_seq``) that the engine reads when it makes a new slab.

The kernel (``mm/slab_common.c`` ``cache_random_seq_create``, ``mm/slub.c``
``init_cache_random_seq``) shuffles ``0..count-1`` with Fisher-Yates, ``count`` being
``oo_objects(s->oo)``, skips caches of fewer than two objects per slab, and multiplies each
entry by ``s->size``. Here the draws come from a generator seeded by the allocator's seed and
the cache's slot, so that two allocators built alike lay out their slabs alike.
"""
from __future__ import annotations

import numpy as np

from ..engine.layout import CA_RSEQ, CA_RSEQ_LEN, RSEQ_MAX
from ..errors import InvalidSizeError


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
