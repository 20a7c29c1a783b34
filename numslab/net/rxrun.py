"""What the pipeline's compiled RX loop works on, bundled: the packet columns and the run.

:class:`PacketColumns` is the packet table as the loop reads it (:func:`.tablecheck._columns`
makes it), :class:`RxRun` what stays the same for a whole run of
:func:`~numslab.net.run_pipeline`. Numba passes a named tuple of arrays and scalars by its
fields: unpacking one in compiled code costs nothing at run time.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class PacketColumns(NamedTuple):
    """The packet table of ``n`` packets as the compiled RX loop reads it (checked, no copies).

    Attributes
    ----------
    data : numpy.ndarray
        uint8[B], read-only: every packet's captured bytes; packet ``i`` is
        ``data[offset[i]:offset[i] + caplen[i]]``, inside ``data``.
    offset : numpy.ndarray
        int64[n], where each packet's bytes start in ``data``.
    caplen : numpy.ndarray
        int64[n], captured bytes (0: an empty packet, no buffer; at most 4 MiB).
    wirelen : numpy.ndarray
        int64[n], the length on the wire, 0..2**32-1.
    ts : numpy.ndarray
        int64[n], the timestamp in ns (at most 2**63-1 ns apart).
    """

    data: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts: np.ndarray


class RxRun(NamedTuple):
    """What one run of the RX loop keeps from its first chunk to its last.

    The allocator's handle is passed beside it. ``st`` and ``ws`` are written by every chunk;
    the flow table is not here: a chunk may need a larger one (``pipeline._with_room``).

    Attributes
    ----------
    mode : int
        The allocation mode's number: 0 ``single``, 1 ``bulk``, 2..4 the array modes
        (``pipeline.MODES``' order).
    aflags : int
        The array modes' ``SLAB_ARRAY_ALLOC_*`` flags with ``_FULL_COUNT`` (``_FULL_COUNT``
        alone for ``single`` and ``bulk``, which do not read it).
    skb_cid, flow_cid : int
        The numslab cache ids of the packet records and of the flow entries.
    km : numpy.ndarray
        int64[13], the cache id of each kmalloc size class (``geometry.KMALLOC_SIZES``' order).
    cls_of : numpy.ndarray
        int64[8194], the kmalloc class of each captured length 0..8193 (index 8193: any
        longer): 0..12, 13 above 8 KiB (whole pages), 14 for length 0 (no buffer).
    skv, fv : numpy.ndarray
        ``SKB_DTYPE`` and ``FLOW_DTYPE`` views of the arena: the record or flow entry at
        address ``a`` is ``skv[a]`` or ``fv[a]`` (0: no object).
    batch : int
        Packets per batch, 1 to ``n`` (the caller's ``batch`` capped at the packets).
    link : int
        How a frame's headers begin (``headers._LINK_*``; ``_LINK_NONE``: not parsed).
    timeout : int
        Idle nanoseconds after which a flow is freed (int64's maximum: never).
    st : numpy.ndarray
        int64[S_NCOUNTERS], the run's counters and registers (``pipeline.S_*``; ``S_NOW``
        starts at int64's minimum, the others at 0; ``S_ERR`` 0: no error).
    ws : numpy.ndarray
        int64[_W_ROWS, batch], the batch's workspace, one row each for the records, the
        buffers, buffers grouped by class, their order, their classes, the stash of spare
        flow entries and the flows to free (``pipeline._W_*``).
    """

    mode: int
    aflags: int
    skb_cid: int
    flow_cid: int
    km: np.ndarray
    cls_of: np.ndarray
    skv: np.ndarray
    fv: np.ndarray
    batch: int
    link: int
    timeout: int
    st: np.ndarray
    ws: np.ndarray
