"""Saving a whole simulated machine to a file and loading it back exactly.

The state buffer, the arena's bytes and the caches' Python side (names, dtypes, usercopy
regions), as ``SlabAllocator.save`` and ``SlabAllocator.load`` offer them, with a digest of the
content that ``load`` checks first."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import ops
from ..engine.checks import rcu_list_mark
from ..engine.layout import (C_MAIN, C_NCOLS, C_PARKED, CA_ACTIVE, CA_DEBUG, CA_OBJECT_SIZE, F_CPU,
                             F_G, G_KERNEL, G_MAX_CACHES, G_NCPUS, G_NNODES, G_NPAGES, G_NPENDING,
                             G_NREPORTS, G_PAGES_PER_NODE, H_FIELDS, H_MAGIC, H_MEM,
                             H_MEMSIZE, HEADER, view)
from ..errors import MachineFileError, SlabError, WrongTypeError
from . import threads
from .args import check_cache_name, check_dtype, check_usercopy
from .cache import KmemCache
from .kmallocapi import _RCU_LOCK
from .loadbits import check_rcu_marks
from .loadcheck import Structure, check_links, made_with

if TYPE_CHECKING:
    from .allocator import SlabAllocator

#: The file's layout version (2: the rcu_free column and the RCU sheaf list; 3: the sheaves'
#: words in the shadow half, saved as its pages that are not all zero; 4: the content's
#: digest in the meta, see :func:`digest`; 5: the state's field ``rcu``, the marks of the
#: objects on the ``kfree_rcu`` list; 6: the per-frame fields as the row table's columns; 7:
#: field ``barn_partial``, the barns' partial sheaves; 8: field ``sl_lost`` and scalar
#: ``G_NLOST``, the objects a repaired free list cut off; 9: a CPU row's eighth column,
#: ``C_PARKED``; 10: scalars ``G_RCU_SLABS``, ``G_RCU_SLABS_TAIL`` and ``G_NRCU_SLABS``, the
#: SLAB_TYPESAFE_BY_RCU slabs waiting for their grace period; 11: scalar ``G_SLAB_GEN``, the
#: slabs ever made and discarded, and field ``barn``, the barns' kmalloc objects; 12: field
#: ``random_seq``, the caches' ``s->random_seq`` kmalloc objects; 13: fields ``held``, the objects
#: off their slabs' free lists, and ``pend``, the pending bulk allocation (none in a file: save
#: settles it), scalar ``G_PEND``, ``CA_ACTIVE`` the cache's state mask (7, 3 or 1) and the
#: meta's ``pending_takes``); 14: field ``pend`` holds the record of any bulk allocation of up
#: to ``REC_MAX`` objects (``REC_MAX + PD_OBJS`` words: its pending part's count and the free
#: stamp added; still none in a file); 15: the arena saved as the shadow half is, its pages that
#: are not all zero (``arena_pages``, ``arena``): a machine's file and its save and load took
#: time in proportion to the memory it was given, not to the memory it used (a file of format
#: 14 still loads: :data:`ARRAYS_14`).
FORMAT = 15
#: The saved arrays, in the digest's order: see ARCHITECTURE.md ("A saved machine").
ARRAYS = ("state", "arena_pages", "arena", "shadow_pages", "shadow")
#: Format 14's arrays (the whole arena), which :func:`load` still reads: its state's layout is
#: format 15's.
ARRAYS_14 = ("state", "arena", "shadow_pages", "shadow")
#: The words of field ``g`` fixed when a machine is made (``layout.new_state``).
_FIXED = (G_NPAGES, G_NNODES, G_NCPUS, G_PAGES_PER_NODE, G_MAX_CACHES, G_KERNEL)


def _check_path(path: Any, fn: str) -> None:
    """Refuse a ``path`` that is no file name (``WrongTypeError``).

    ``open`` takes an int for a file descriptor, which it then closes, and ``save(2)`` wrote the
    machine to stderr."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise WrongTypeError(f"{fn}: path {path!r} is not a file name (str or os.PathLike)")


def dtype_json(dt: np.dtype, where: str = "save") -> dict[str, Any]:
    """``dt`` as JSON that :func:`dtype_from_json` makes into an equal dtype.

    A plain dtype's ``str`` (byte order, unit and size kept), a subarray's base and shape, a
    record's names, formats, offsets, string titles, item size, alignment and the base type its
    fields may lie over (``descr`` lost all but records, and its nested tuples came back from JSON
    as lists ``np.dtype`` refuses), and at every level its ``metadata``. A title that is not a
    string, or metadata that JSON cannot hold, is refused (``SlabError``)."""
    out = _dtype_json(dt, where)
    if dt.metadata:
        try:
            out["metadata"] = json.loads(json.dumps(dict(dt.metadata)))
        except (TypeError, ValueError):
            raise MachineFileError(f"{where}: its dtype {dt} has metadata that JSON cannot hold "
                                   f"({dict(dt.metadata)!r:.60})") from None
    return out


def _dtype_json(dt: np.dtype, where: str) -> dict[str, Any]:
    """:func:`dtype_json` but the metadata of ``dt`` itself."""
    if dt.names is None:
        if dt.subdtype is not None:
            return {"base": dtype_json(dt.subdtype[0], where), "shape": list(dt.subdtype[1])}
        return {"str": dt.str}
    fields = [dt.fields[n] for n in dt.names]
    titles = [f[2] if len(f) > 2 else None for f in fields]
    if any(t is not None and type(t) is not str for t in titles):
        raise MachineFileError(f"{where}: its dtype {dt} has a field title that is not a string")
    rec = {"names": list(dt.names), "formats": [dtype_json(f[0], where) for f in fields],
           "offsets": [f[1] for f in fields], "titles": titles, "itemsize": dt.itemsize,
           "aligned": dt.isalignedstruct}
    if dt.kind != "V":                  # fields over a base type: (np.uint32, [("lo", ...)])
        rec["over"] = dt.str
    return rec


def dtype_from_json(j: Any) -> np.dtype:
    """The dtype :func:`dtype_json` wrote; ``TypeError``/``ValueError``/``KeyError`` if not one.

    A list is the ``descr`` of a file saved before (records only)."""
    if isinstance(j, list):
        return np.dtype([tuple(f) for f in j])
    if isinstance(j, dict) and "metadata" in j:
        meta = j["metadata"]
        if not isinstance(meta, dict):
            raise TypeError(f"dtype metadata {meta!r:.40} is not a dict")
        return np.dtype(dtype_from_json({k: v for k, v in j.items() if k != "metadata"}),
                        metadata=meta)
    if "str" in j:
        return np.dtype(str(j["str"]))
    if "base" in j:
        return np.dtype((dtype_from_json(j["base"]), tuple(int(n) for n in j["shape"])))
    rec = np.dtype({"names": [str(n) for n in j["names"]],
                    "formats": [dtype_from_json(f) for f in j["formats"]],
                    "offsets": [int(o) for o in j["offsets"]], "titles": j["titles"],
                    "itemsize": int(j["itemsize"])}, align=bool(j["aligned"]))
    return np.dtype((np.dtype(str(j["over"])), rec)) if "over" in j else rec


def save(sa: "SlabAllocator", path: str | Path) -> None:
    """Write ``sa`` to ``path`` (a compressed ``.npz``).

    Its state words, its arena, the caches' names and dtypes and the ``kfree_rcu`` objects still
    waiting for their grace period on the list (still allocated in the state: the loaded machine
    frees them at its own ``synchronize_rcu`` and refuses other frees of them meanwhile; those in
    ``rcu_free`` sheaves and in sheaves handed to ``call_rcu`` are in the state),
    ``release_order``. Constructors are Python code and are not saved: a machine with a cache that
    has one is refused, as is one with constructors still pending. Mobility and eviction callbacks
    are not saved either: a warning names their caches."""
    _check_path(path, "save")
    with sa._slab_mutex, _RCU_LOCK:     # no cache made, unmade or changed; no grace period
        ops.engine_hold(sa._st, 1)      # and no engine call in another thread (they wait):
        try:                            # the file is one moment of the machine
            ops.settle_pending(sa._st)  # (a pending bulk allocation's marks written)
            _save_held(sa, path)
        finally:
            ops.engine_hold(sa._st, 0)


def _save_held(sa: "SlabAllocator", path: str | Path) -> None:
    """:func:`save`'s work, while the machine is held."""
    withctor = [c.name for c in sa.caches if c.ctor is not None]
    if withctor:
        raise MachineFileError(f"save: caches {withctor} have constructors, which cannot be saved")
    calls = sorted({c.name for kind in ("_mobility", "_evict_callbacks") for c in sa.caches
                    if c.id in sa._per_cache(kind)})
    if calls:           # (a loaded machine's shrink neither moved nor evicted, silently)
        warnings.warn(f"save: the callbacks of caches {calls} (kmem_cache_setup_mobility, "
                      f"kmem_cache_setup_defrag) are Python code and are not saved: set them "
                      f"up again on the loaded machine", stacklevel=4)
    if sa._g[G_NPENDING]:                       # pragma: no cover - only mid-allocation
        raise MachineFileError("save: constructors are still pending")
    meta = {"format": FORMAT, "nr_cpus": sa.nr_cpus, "nr_nodes": sa.nr_nodes,
            "memory": sa.pages_per_node * 4096, "max_caches": int(sa.state.ca.shape[0]),
            "seed": sa._seed, "kernel": sa.kernel, "freelist_hardened": sa.freelist_hardened,
            "freelist_random": sa.freelist_random, "pending_takes": sa.pending_takes,
            "slab_orders": list(dataclasses.astuple(sa.slab_orders)),
            "slab_debug": sa._slab_debug_spec, "sites": sa._site_names,
            "partial_order": sa.partial_order, "release_order": sa.release_order,
            "rcu_pending": [[int(a), cpu] for a, cpu in sa._rcu_pending.items()],
            "caches": [{"id": c.id, "name": c.name,
                        "dtype": None if c.dtype is None else      # (refused before the
                        dtype_json(c.dtype, f"save: cache {c.name}"),  # file is opened)
                        "usercopy": list(c._usercopy)}
                       for c in sa.caches]}
    pages = _shadow_pages(sa)
    used = _written(pages)
    frames = _arena_frames(sa)
    written = _written(frames)
    state = sa._buf.copy()
    rows = view(state, F_CPU).reshape(-1, C_NCOLS)     # the rows as they are when not held
    held = rows[:, C_PARKED] != 0
    rows[held, C_MAIN], rows[held, C_PARKED] = rows[held, C_PARKED], 0
    listed = sa._rcu_listed()           # the kfree_rcu list as allocated objects (load marks
    #                                     it again): lifted in the copy, not in the machine
    rcu_list_mark(state.ctypes.data, len(listed), listed.ctypes.data, 0)
    arrays = {"state": state, "arena_pages": written, "arena": frames[written],
              "shadow_pages": used, "shadow": pages[used]}
    meta["digest"] = digest(meta, arrays)
    with open(path, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)


def digest(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """The BLAKE2b digest (hex) of a saved machine's ``meta`` and ``arrays``.

    ``meta`` less its ``"digest"`` as sorted JSON, then each array by name: its name, dtype,
    shape and bytes. A guard against damaged files (one changed word in a link that the
    kernels follow without bounds checks can crash the interpreter), not an authentication:
    whoever edits a file on purpose can recompute it."""
    h = hashlib.blake2b(digest_size=32)
    text = json.dumps({k: v for k, v in meta.items() if k != "digest"}, sort_keys=True)
    h.update(f"meta {len(text)}\n{text}\n".encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name} {a.dtype.str} {a.shape} {a.nbytes}\n".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _shadow_pages(sa: "SlabAllocator") -> np.ndarray:
    """The shadow half of ``sa``'s mapping (the sheaves' words), uint8[pages, 4096]."""
    return sa._mem.view(np.uint8)[sa.memory.size:].reshape(-1, 4096)


def _arena_frames(sa: "SlabAllocator") -> np.ndarray:
    """``sa``'s arena as its 4 KiB frames, uint8[frames, 4096] (a view)."""
    return sa.memory.reshape(-1, 4096)


def _written(pages: np.ndarray) -> np.ndarray:
    """The pages of ``pages`` (uint8[n, 4096]) that are not all zero, int64[k] ascending."""
    return np.flatnonzero(pages.any(axis=1))


def _fit(which: np.ndarray, content: np.ndarray, pages: np.ndarray) -> bool:
    """Whether ``which`` and ``content`` are pages of ``pages`` as :func:`save` writes them.

    ``which`` (int[k]) names k distinct pages of ``pages`` (uint8[n, 4096]) in ascending order
    and ``content`` (uint8[k, 4096]) holds their bytes."""
    return which.ndim == 1 and which.dtype.kind in "iu" and content.dtype == pages.dtype and \
        content.shape == (len(which), 4096) and \
        (not len(which) or 0 <= which[0] and which[-1] < len(pages) and
         bool(np.all(np.diff(which) > 0)))


def _orders(value: Any, path: str | Path) -> list[int]:
    """A saved ``slab_orders``: three ints (a file without them: the defaults)."""
    if type(value) is not list or len(value) != 3 or not all(type(v) is int for v in value):
        raise MachineFileError(f"load: {path}: its slab_orders {value!r} are not three counts")
    return value


def load(cls: type, path: str | Path) -> "SlabAllocator":
    """A new machine of class ``cls`` exactly as :func:`save` wrote it.

    The same state, bytes and caches, so that it then behaves as the saved one would have (its
    handle is new). A file it cannot make into that machine raises ``MachineFileError``, the
    refusals of the checks behind the digest too (a ``BadAddressError`` of its ``kfree_rcu``
    list, a dtype ``kmem_cache_create`` would refuse)."""
    _check_path(path, "load")
    try:
        return _load(cls, path)
    except SlabError as e:
        if isinstance(e, MachineFileError):
            raise
        text = str(e) if str(e).startswith("load: ") else f"load: {path}: {e}"
        raise MachineFileError(text) from e


def _load(cls: type, path: str | Path) -> "SlabAllocator":
    """:func:`load`'s work, its path checked."""
    with open(path, "rb") as f:         # a missing or unreadable file stays its OSError
        try:
            with np.load(f, allow_pickle=False) as z:
                meta: dict[str, Any] = json.loads(str(z["meta"]))
                was = meta.get("format") if isinstance(meta, dict) else None
                ours = was in (FORMAT, 14)
                if ours:            # (an older format may lack an array: said below)
                    arrays = {name: z[name] for name in (ARRAYS if was == FORMAT else ARRAYS_14)}
        except Exception as e:
            # not an .npz of ours (NumPy takes a text file for pickled data, says so, and
            # asks for allow_pickle), or a damaged one: a flipped bit in a member raises
            # zlib.error, in an array's header tokenize.TokenError, SyntaxError or
            # NotImplementedError, in the zip directory's offsets OSError (a seek before
            # the file's start) once the file is open
            why = ("not a NumPy .npz file: NumPy reads such a file only as pickled data, "
                   "which load never unpickles"
                   if "allow_pickle" in str(e) else f"{type(e).__name__}: {str(e)[:80]}")
            raise MachineFileError(f"load: {path} is not a numslab machine ({why})") from None
    if not ours:
        older = (f" (it is format {was}, written by an older numslab: run the version that "
                 f"wrote it, or make the machine again)") if isinstance(was, int) and \
            0 < was < FORMAT else ""
        raise MachineFileError(f"load: {path} is not a numslab machine of format {FORMAT}{older}")
    if meta.get("digest") != digest(meta, arrays):      # before anything trusts a word
        raise MachineFileError(f"load: {path} is damaged: its content does not match its digest")
    whole = None
    if was != FORMAT:                                   # 14: the whole arena, made its frames
        whole = arrays["arena"]
        if whole.ndim != 1 or whole.dtype != np.uint8 or whole.size % 4096:
            raise MachineFileError(f"load: {path} does not fit the machine it describes")
        pages_14 = whole.reshape(-1, 4096)
        arrays["arena_pages"] = _written(pages_14)
        arrays["arena"] = pages_14[arrays["arena_pages"]]
    state, written, arena = arrays["state"], arrays["arena_pages"], arrays["arena"]
    used, shadow = arrays["shadow_pages"], arrays["shadow"]
    try:
        sa = cls(nr_cpus=meta["nr_cpus"], nr_nodes=meta["nr_nodes"], memory=meta["memory"],
                 max_caches=meta["max_caches"], seed=meta["seed"], kernel=meta["kernel"],
                 freelist_hardened=meta["freelist_hardened"],
                 freelist_random=meta.get("freelist_random", False),
                 slab_debug=meta["slab_debug"], partial_order=meta.get("partial_order", "kernel"),
                 pending_takes=meta.get("pending_takes", True),
                 **dict(zip(("slab_min_order", "slab_max_order", "slab_min_objects"),
                            _orders(meta.get("slab_orders", [0, 3, 0]), path))))
    except KeyError as e:
        raise MachineFileError(f"load: {path} lacks the machine's {e}") from None
    except SlabError as e:          # a value the constructor refuses (a digest recomputed)
        if isinstance(e, MachineFileError):
            raise
        raise MachineFileError(f"load: {path}: its meta makes no machine: {e}") from None
    pages = _shadow_pages(sa)
    frames = _arena_frames(sa)
    if state.shape != sa._buf.shape or state.dtype != sa._buf.dtype or \
            (whole is not None and whole.size != sa.memory.size) or \
            not _fit(written, arena, frames) or not _fit(used, shadow, pages):
        raise MachineFileError(f"load: {path} does not fit the machine it describes")
    g0 = int(sa._buf[H_FIELDS + 2 * F_G])          # the header and fixed scalars: the kernels'
    fixed = np.r_[H_MAGIC, H_MEMSIZE:HEADER, g0 + np.array(_FIXED)]     # offsets and bounds
    if not np.array_equal(state[fixed], sa._buf[fixed]):
        raise MachineFileError(f"load: {path}: its state's header does not fit the machine it "
                               f"describes")
    address = int(sa._buf[H_MEM])
    made = made_with(sa)                        # (before the loaded state overwrites it)
    sa._buf[:] = state                          # in place: the gate and units hold pointers
    sa._buf[H_MEM] = address
    frames[_written(frames)] = 0                # (what the new machine's boot wrote: its
    frames[written] = arena                     # sheaves, barns and sequences)
    pages[_written(pages)] = 0
    pages[used] = shadow
    check_links(sa, path)
    structure = Structure(sa, made, path)
    structure.run()
    threads.register(sa)                        # NO_SHEAF's size word, whatever was saved
    kmalloc = {c.id for c in sa.kmalloc_caches}
    try:
        for c in meta["caches"]:
            if c["id"] in kmalloc:
                continue
            if type(c["id"]) is not int or not 0 <= c["id"] < len(sa.state.ca):
                raise ValueError(f"cache id {c['id']!r}")
            name = check_cache_name(c["name"], sa._caches.names)     # (a str, unique)
            dtype = None if c["dtype"] is None else check_dtype(   # (as kmem_cache_create:
                dtype_from_json(c["dtype"]), int(sa.state.ca[c["id"], CA_OBJECT_SIZE]),
                f"load: {path}: cache {name}")[0]                  # no Python objects)
            usercopy = check_usercopy(f"load: {path}: cache {name}",           # (none in
                                      int(sa.state.ca[c["id"], CA_OBJECT_SIZE]),  # files of
                                      *c.get("usercopy", (0, 0)))                 # before)
            sa._caches.add(KmemCache(sa, c["id"], name, None, dtype, usercopy))
        sa._site_names = [str(site) for site in meta["sites"]]  # slab_debug U's call sites
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, SlabError) and str(e).startswith("load: "):    # (check_dtype's)
            raise
        raise MachineFileError(f"load: {path}: its caches or sites are not readable "
                               f"({type(e).__name__}: {str(e)[:80]})") from None
    sa._sites = {site: i + 1 for i, site in enumerate(sa._site_names)}
    sa._reports_seen = int(sa._g[G_NREPORTS])     # reports already seen before the save
    if sa.state.ca[:, CA_DEBUG].any():
        sa._debug_calls()
        for cid in sa._caches:
            if sa.state.ca[cid, CA_DEBUG]:
                sa._debug_flags_seen(cid)
    if sorted(sa._caches) != sorted(int(i) for i in np.flatnonzero(sa.state.ca[:, CA_ACTIVE])):
        raise MachineFileError(f"load: {path}: its caches do not match its state")
    sa.release_order = meta.get("release_order", sa.release_order)
    pending = meta.get("rcu_pending", [])
    if type(pending) is not list or not all(
            type(p) is list and len(p) == 2 and type(p[0]) is int and
            (p[1] is None or type(p[1]) is int and 0 <= p[1] < sa.nr_cpus) for p in pending):
        raise MachineFileError(f"load: {path}: its kfree_rcu list is not a list of [address, cpu] "
                               f"(None or 0..{sa.nr_cpus - 1})")
    for addr, cpu in pending:                   # (checked again: live objects)
        sa._ksize(addr, "load")                 # on the list again, not into a sheaf: the
        sa._rcu_list_add(addr, cpu, "load")     # rcu_free sheaves are in the state
    check_rcu_marks(sa, path, np.concatenate([np.zeros(0, np.int64), *structure.waiting]))
    return sa

