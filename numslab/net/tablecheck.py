"""Checks of :func:`numslab.net.run_pipeline`'s input: the packet table's columns and idle timeout.

Bad input is refused with :class:`numslab.SlabError` subclasses before any compiled code sees
it (that code trusts every packet to lie inside ``data``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, WrongTypeError
from ..facade.allocator import SlabAllocator
from .capture import Packets, _byte_column, _check_table, _outside_data, _real
from .rxrun import PacketColumns


def _timeout_ns(seconds: float) -> int:
    _real("idle timeout", seconds, "a number of seconds")
    if not seconds >= 0:
        raise InvalidArgumentError(f"idle timeout must be >= 0 seconds, not {seconds!r}")
    ns = seconds * 1e9                  # past int64's nanoseconds (1e308 s is inf ns): never
    return np.iinfo(np.int64).max if ns >= 2.0 ** 63 else int(round(ns))


def _check_run(sa: Any, progress: Any, chunk: Any) -> None:
    """Refuse :func:`~numslab.net.run_pipeline`'s ``sa``, ``progress`` or ``chunk`` if wrong.

    A wrong ``sa`` was an AttributeError, a ``progress`` that cannot be called a TypeError after
    the first chunk, a ``chunk`` of ``"x"`` a TypeError (``2.0`` and ``-5`` were taken)."""
    if sa is not None and not isinstance(sa, SlabAllocator):
        raise WrongTypeError(f"sa must be a SlabAllocator or None, not {sa!r}")
    if progress is not None and not callable(progress):
        raise WrongTypeError(f"progress must be callable or None, not {progress!r}")
    if isinstance(chunk, (bool, np.bool_)) or not isinstance(chunk, (int, np.integer)) \
            or chunk < 1:
        raise InvalidArgumentError(f"chunk must be a positive integer, not {chunk!r}")


_COLUMNS = ("offset", "caplen", "wirelen", "ts_ns")


def _int_column(name: str, column: Any) -> np.ndarray:
    """A packet table column as writable C int64, refusing what would convert wrongly.

    NaN or fractional floats, uint64 past int64, booleans, strings."""
    a = np.asarray(column)
    kind = a.dtype.kind
    if kind == "f":
        bad = ~np.isfinite(a) | (a != np.round(a)) | (a < -2.0**63) | (a >= 2.0**63)
        if bad.any():
            i = int(np.flatnonzero(bad.ravel())[0])
            raise InvalidArgumentError(f"{name}[{i}] is {float(a.ravel()[i])!r}: the column "
                                       "holds whole numbers within int64")
    elif kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise InvalidArgumentError(f"{name} holds {int(a.max())}, past int64")
    elif kind not in "iuf":
        raise WrongTypeError(f"{name} must be an integer array, not {a.dtype}")
    return np.require(a, np.int64, ["C", "W"])


def _columns(packets: Packets) -> PacketColumns:
    """The packet table as the kernel's types, checked so that the kernel stays inside ``data``.

    Read-only bytes, so pcap and generated input share one compiled signature; writable int64
    columns."""
    _check_table(packets)
    data = _byte_column(packets.data)
    cols = tuple(_int_column(name, getattr(packets, name)) for name in _COLUMNS)
    off, cap, wire, ts = cols
    if any(c.ndim != 1 or c.size != off.size for c in cols):
        raise InvalidArgumentError("offset, caplen, wirelen and ts_ns must be 1-D of equal "
                                   "length")
    if off.size and (wire.min() < 0 or wire.max() > 0xFFFFFFFF):
        i = int(np.argmax((wire < 0) | (wire > 0xFFFFFFFF)))
        raise InvalidArgumentError(f"packet {i} has wirelen {int(wire[i])}: a wire length is "
                                   "0..2**32-1 (pcap's 32-bit field)")
    if off.size and int(ts.max()) - int(ts.min()) > np.iinfo(np.int64).max:
        raise InvalidArgumentError(f"ts_ns spans {int(ts.min())}..{int(ts.max())}: more than "
                                   "2**63-1 ns between packets, which the idle clock cannot "
                                   "subtract")
    bad = _outside_data(data.size, off, cap)
    if bad >= 0:
        raise InvalidArgumentError(
            f"packet {bad} lies outside the packet table's data ({data.size} bytes): "
            f"offset {int(off[bad])}, caplen {int(cap[bad])}")
    if off.size and cap.max() > 4 << 20:
        i = int(np.argmax(cap > 4 << 20))
        raise InvalidArgumentError(f"packet {i} (record data at byte {int(off[i])}) has a "
                                   f"captured length of {int(cap[i])} bytes, above kmalloc's "
                                   f"4 MiB limit")
    return PacketColumns(data, *cols)


def check_packets(packets: Packets) -> None:
    """Refuse a packet table :func:`numslab.net.run_pipeline` would refuse, as it would.

    Raises
    ------
    numslab.InvalidArgumentError
        A packet outside ``data``, a wire length past 32 bits, timestamps more than
        2**63-1 ns apart, or a packet above kmalloc's 4 MiB.
    numslab.WrongTypeError
        ``packets`` is no packet table, or a column (``data`` too) is not an integer array.
    """
    _columns(packets)
