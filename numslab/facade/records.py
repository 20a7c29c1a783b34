"""Typed access to a cache's objects: ``KmemCache.view``, ``records`` and ``store``.

Mixed into :class:`KmemCache` (``RecordAccess``), with the checks of addresses and values.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from ..engine.ops import gather, scatter
from ..errors import AddressTypeError, BadAddressError, InvalidSizeError, WrongTypeError

if TYPE_CHECKING:
    from .cache import KmemCache


class RecordAccess:
    """Methods of :class:`KmemCache` for records of its ``dtype`` (kept in their own module)."""

    __slots__ = ()

    def _need_dtype(self: "KmemCache", fn: str) -> None:
        """Refuse typed access ``fn`` on a cache made without a dtype."""
        if self.dtype is None:
            raise WrongTypeError(f"{self.name}.{fn}: cache {self.name} has no dtype (create it "
                                 f"with dtype=...)")

    @property
    def view(self: "KmemCache") -> np.ndarray:
        """The arena as records of ``dtype`` starting at every byte (a zero-copy view).

        ``view[addr]`` is the record at ``addr``, in Python and inside ``@njit`` code. Under
        ``NUMBA_DISABLE_JIT`` the records of a dtype with fields are ``np.record``s, whose
        fields are attributes as in compiled code (``view[a].len``); else NumPy's plain
        records, which Numba's dispatcher types faster."""
        self._need_dtype("view")
        mem = self._sa.memory
        dt = np.dtype((np.record, self.dtype)) \
            if numba.config.DISABLE_JIT and self.dtype.names else self.dtype
        return np.ndarray(shape=(mem.size - self.dtype.itemsize + 1,), dtype=dt,
                          buffer=mem, offset=0, strides=(1,))

    def records(self: "KmemCache", addrs: Any) -> np.ndarray:
        """Gather the records at ``addrs`` into a new array of ``dtype``, ``dtype[n]``.

        One jitted copy; every address is checked.

        Parameters
        ----------
        addrs : array_like of int
            Allocated objects of this cache, int64[n] once flattened (integers only).

        Returns
        -------
        numpy.ndarray
            ``dtype[n]``: the record of each address, in order.
        """
        self._need_dtype("records")
        a = self._addresses(addrs, "records")
        out = np.empty(len(a), self.dtype)
        bad = int(gather(self._sa._st, self._id, len(a), self.dtype.itemsize, out.ctypes.data,
                         a.ctypes.data))
        if bad >= 0:
            self._bad(a, bad, "records")
        return out

    def store(self: "KmemCache", addrs: Any, values: Any) -> None:
        """Scatter ``values`` into the objects at ``addrs``.

        Every address is checked before anything is written.

        Parameters
        ----------
        addrs : array_like of int
            Allocated objects of this cache, int64[n] once flattened (integers only).
        values : numpy.ndarray, tuple or list
            Records of ``dtype``, ``n`` of them or one record for all.
        """
        self._need_dtype("store")
        a = self._addresses(addrs, "store")
        # a subarray dtype ((np.int32, 5)) has no arrays of its own: its records are arrays
        # of its base whose last axes are its shape (what records() returns)
        base, shape = self.dtype.base, self.dtype.shape
        plain = base.names is None          # a scalar dtype: its records are numbers
        if isinstance(values, (np.ndarray, np.generic)):
            ok = values.dtype == base and values.shape[values.ndim - len(shape):] == shape
        elif plain:
            ok = isinstance(values, (int, float, complex, list, tuple)) \
                and not isinstance(values, bool)
        else:       # a record as a tuple, or a list of them (not bare numbers for every field)
            ok = isinstance(values, tuple) or isinstance(values, list) and all(
                isinstance(v, (tuple, np.void)) for v in values)
        what = getattr(values, "dtype", type(values).__name__)
        if ok:
            try:
                if not isinstance(values, (np.ndarray, np.generic)) and \
                        not _exact_values(base, values):    # NumPy would cut 1.7 to 1,
                    raise ValueError("a value of another type than its field's: NumPy "
                                     "would cut or parse it")      # parse '12', cast voids
                vals = np.asarray(values, dtype=base)
                if shape and vals.ndim == 0:        # one number for every element
                    vals = np.broadcast_to(vals, shape)
                if vals.shape[vals.ndim - len(shape):] != shape:
                    raise ValueError(f"not records of shape {shape}")
                vals = np.ascontiguousarray(vals).reshape((-1,) + shape)
            except (ValueError, TypeError, OverflowError) as e:
                ok, what = False, f"{what} ({e})"       # a field's value, or a tuple's length
        if not ok:
            raise WrongTypeError(f"{self.name}.store: values must be records of {self.dtype}, "
                                 f"not {what}")
        if len(vals) not in (1, len(a)):
            raise InvalidSizeError(f"{self.name}.store: {len(vals)} values for {len(a)} "
                                   f"addresses")
        bad = int(scatter(self._sa._st, self._id, len(a), self.dtype.itemsize,
                          len(vals) == 1, vals.ctypes.data, a.ctypes.data))
        if bad >= 0:
            self._bad(a, bad, "store")

    def _addresses(self: "KmemCache", addrs: Any, fn: str) -> np.ndarray:
        """``addrs`` as a contiguous int64 array; integers only (a float address is refused).

        Not truncated. An array in the arena is copied: ``store`` writes the objects while it reads
        the addresses, and one written over the array was then followed."""
        a = np.asarray(addrs)
        if a.dtype == object and a.ndim == 0:       # a set, a generator, a dict: one object
            raise WrongTypeError(f"{self.name}.{fn}: addresses must be an array or a sequence "
                                 f"of integers, not a {type(addrs).__name__}")
        if a.size and (a.dtype.kind not in "iu" or a.dtype == np.uint64 and a.max() >= 1 << 63):
            raise AddressTypeError(f"{self.name}.{fn}: addresses must be integers, not "
                                  f"{a.dtype}")
        out = np.ascontiguousarray(a, dtype=np.int64).ravel()
        return out.copy() if np.may_share_memory(out, self._sa.memory) else out

    def _bad(self: "KmemCache", a: np.ndarray, i: int, fn: str) -> None:
        raise BadAddressError(f"{self.name}.{fn}: element {i} ({int(a[i]):#x}) is not an "
                              f"allocated object of this cache")


#: The kinds of Python or NumPy number each kind of numeric field takes without NumPy
#: cutting or parsing it ("i": an integer, "f": a float, "c": a complex, "b": a bool).


_TAKES = {"b": "b", "i": "i", "u": "i", "f": "if", "c": "ifc"}


def _number_kind(v: Any) -> str:
    """"b", "i", "f" or "c" for a bool, integer, float or complex, else "".

    Python's or NumPy's; "" for a str, a Fraction, a Decimal, None ..."""
    if isinstance(v, (bool, np.bool_)):
        return "b"
    if isinstance(v, (int, np.integer)):
        return "i"
    if isinstance(v, (float, np.floating)):
        return "f"
    if isinstance(v, (complex, np.complexfloating)):
        return "c"
    return ""


def _exact_values(dt: np.dtype, v: Any) -> bool:
    """Whether ``v`` (one value of dtype ``dt``, or nested lists of them) fits ``dt`` as it is.

    A record is a tuple of its fields (or an ``np.void`` of exactly ``dt``), a subarray nested
    lists, and every number of a numeric field of a kind the field takes (NumPy would cut 1.7 to 1,
    parse '12', take a Fraction's integer part, cast a void of another dtype by position). Strings,
    bytes, dates and raw fields follow NumPy's rules."""
    if dt.subdtype is not None:                 # a subarray: one value for every element,
        return _exact_values(dt.subdtype[0], v)     # or nested lists of them (below)
    if dt.names is None and isinstance(v, (list, tuple)):
        a = np.asarray(v)                   # numbers only: NumPy's kind says it at C speed
        if a.dtype.kind != "O":
            v = a
    if isinstance(v, list) or isinstance(v, tuple) and dt.names is None:
        return all(_exact_values(dt, x) for x in v)
    if isinstance(v, np.ndarray):
        if dt.names is not None or v.dtype.names is not None:
            return v.dtype == dt
        takes = _TAKES.get(dt.kind)
        return takes is None or v.dtype.kind.replace("u", "i") in takes
    if dt.names is not None:
        if isinstance(v, np.void):
            return v.dtype == dt
        return isinstance(v, tuple) and len(v) == len(dt.names) and all(
            _exact_values(dt.fields[n][0], x) for n, x in zip(dt.names, v))
    takes = _TAKES.get(dt.kind)
    kind = _number_kind(v)
    return takes is None or kind != "" and kind in takes
