"""The ``/sys/kernel/slab`` snapshot a replay takes: read, checked, aliases merged, geometry.

Read and checked (:func:`load_snapshot`), aliases merged into one cache row
(:func:`merge_aliases`), each cache's geometry from it."""
from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import flags as F
from ..errors import SlabError, WrongTypeError
from ..geometry import MAX_PAGE_ORDER
from .trace import Trace, load_bytes


class SnapshotFormatError(SlabError, ValueError):
    """A snapshot not in numslab's ``/sys/kernel/slab`` JSON, or naming a cache it cannot make.

    The error names the file and the entry."""


class Snapshot(dict):
    """A snapshot :func:`load_snapshot` read and checked: cache name -> its attributes."""


def load_snapshot(source: str | Path | dict) -> Snapshot:
    """A ``/sys/kernel/slab`` snapshot (``numslab snapshot`` JSON) as cache name -> its attributes.

    Plain, gz or xz; an alias gets the attributes of the cache it is an alias of. A
    :class:`Snapshot` (read already) is returned as it is."""
    if isinstance(source, Snapshot):
        return source
    if isinstance(source, dict):
        data = source
    elif not isinstance(source, (str, Path)):
        raise WrongTypeError(f"snapshot {source!r:.60}: a path or a dict, not "
                             f"{type(source).__name__}")
    elif isinstance(source, str) and "\n" in source:      # (its whole text was named)
        raise WrongTypeError(f"snapshot {source[:40]!r}...: a str is a path, and this one holds "
                             f"line breaks: pass the snapshot's JSON as a dict (json.loads)")
    elif isinstance(source, str) and not source:      # (Path('') is the current folder)
        raise SnapshotFormatError("snapshot '': an empty file name")
    else:
        try:
            raw = load_bytes(source)
        except (OSError, SlabError) as e:       # (the reader's text names a trace)
            reason = str(e).replace(f"cannot read trace {source}: ", "")
            raise SnapshotFormatError(f"snapshot {source}: cannot read it ({reason})") from None
        try:
            data = json.loads(raw)
        except ValueError as e:
            if "integer string conversion" in str(e):   # (Python's hint: set_int_max_str_digits)
                raise SnapshotFormatError(f"snapshot {source}: a number of more than "
                                          f"{sys.get_int_max_str_digits()} digits: not "
                                          f"numslab's snapshot JSON") from None
            raise SnapshotFormatError(f"snapshot {source}: not JSON ({e})") from None
        except RecursionError:              # (a traceback: '[' * 200000)
            raise SnapshotFormatError(f"snapshot {source}: not numslab's snapshot JSON (its "
                                      f"arrays or objects nest too deeply to read)") from None
    caches = data.get("caches") if isinstance(data, dict) else None
    if not isinstance(caches, list):
        raise SnapshotFormatError(f"snapshot {source}: no 'caches' list")
    seen: set[str] = set()
    where = "(a dict)" if isinstance(source, dict) else source
    for c in caches:
        _check_snapshot_entry(c, where)
        if c["name"] in seen:           # (one directory a cache in /sys/kernel/slab)
            raise SnapshotFormatError(f"snapshot {where}: cache {c['name']!r} is listed twice")
        seen.add(c["name"])
    by_name = {c["name"]: c for c in caches if "alias_of" not in c}
    out = dict(by_name)
    for c in caches:
        if "alias_of" not in c:
            continue
        if c["alias_of"] not in by_name:    # (the cache was left out, silently: replayed
            #                                 with the trace's sizes, not seeded warm)
            raise SnapshotFormatError(f"snapshot {where}: cache {c['name']!r}: alias_of "
                                      f"{c['alias_of']!r:.40} is not a cache of the snapshot "
                                      f"(an alias is a link to one)")
        out[c["name"]] = by_name[c["alias_of"]]
    return Snapshot(out)


#: the attributes :func:`_geometry` reads as numbers
_NUMBERS = ("object_size", "slab_size", "align", "hwcache_align", "reclaim_account",
            "destroy_by_rcu", "sheaf_capacity", "usersize")


#: the sysfs counts a warm start seeds from, as ``show_slab_objects`` prints them
_COUNTS = ("slabs", "partial", "objects")
_COUNT = re.compile(r"[0-9]+( N[0-9]+=[0-9]+)*")


def _check_snapshot_entry(c: Any, source: Any) -> None:
    """Refuse a snapshot entry the replay cannot read.

    Not a dict named by a string, an ``alias_of`` that is not a string, a number attribute that is
    not a whole number, an ``order`` past ``MAX_PAGE_ORDER`` (or negative, or not a number), a
    constructor's cache without its ``slab_size``, a ``slab_size`` below the
    ``object_size``, a count (``slabs``, ``partial``, ``objects``) not as sysfs prints it
    (``'896 N0=896'``) or past 2**62 (an OverflowError of the warm start's arrays; a negative
    one seeded nothing, silently), a cache with no ``object_size`` (replayed with the trace's
    sizes, silently)."""
    if not isinstance(c, dict) or not isinstance(c.get("name"), str):
        raise SnapshotFormatError(f"snapshot {source}: entry {c!r:.60} is not a cache (a dict "
                                  f"with a 'name')")
    if "alias_of" in c and not isinstance(c["alias_of"], str):     # (a list: a TypeError)
        raise SnapshotFormatError(f"snapshot {source}: cache {c['name']!r}: alias_of "
                                  f"{c['alias_of']!r:.40} is not a cache name")
    num = {}
    for a in _NUMBERS:
        v = c.get(a)
        if a not in c or v in (None, "") and a in ("align", "sheaf_capacity", "usersize"):
            continue
        t = v.strip() if isinstance(v, str) else v
        ok = isinstance(t, str) and t.removeprefix("-").isdecimal() or \
            isinstance(t, int) and not isinstance(t, bool)
        if not ok:
            raise SnapshotFormatError(f"snapshot {source}: cache {c['name']!r}: {a} {v!r} is not "
                                      f"a whole number")
        num[a] = int(t)
    o = c.get("order")
    if o is not None and o != "":       # (99: a warm start's arena of 2**111 bytes, refused
        t = o.strip() if isinstance(o, str) else o      # as memory it cannot reserve)
        ok = isinstance(t, str) and t.isdecimal() and len(t) < 4 and int(t) <= MAX_PAGE_ORDER \
            or type(t) is int and 0 <= t <= MAX_PAGE_ORDER
        if not ok:
            raise SnapshotFormatError(f"snapshot {source}: cache {c['name']!r}: order {o!r:.40} "
                                      f"is not a slab order: 0..{MAX_PAGE_ORDER} "
                                      f"(MAX_PAGE_ORDER)")
    for a in _COUNTS:
        v = c.get(a)
        if v is None or v == "":
            continue
        t = str(v).strip() if isinstance(v, (str, int)) and not isinstance(v, bool) else ""
        if not _COUNT.fullmatch(t) or any(int(x) >= 1 << 62 for x in re.findall("[0-9]+", t)):
            raise SnapshotFormatError(f"snapshot {source}: cache {c['name']!r}: {a} {v!r:.40} "
                                      f"is not a count as sysfs prints it ('896 N0=896', "
                                      f"below 2**62)")
    if c.get("ctor") and "object_size" in num and "slab_size" not in num:
        raise SnapshotFormatError(f"snapshot {source}: cache {c['name']!r} has a constructor and "
                                  f"no slab_size")
    for a in ("object_size", "slab_size"):
        if not 0 < num.get(a, 1) < 1 << 31:
            raise SnapshotFormatError(f"snapshot {source}: cache {c['name']!r}: {a} {num[a]} is "
                                      f"not a size in 1..2**31-1")
    if num.get("slab_size", 1 << 62) < num.get("object_size", 0):
        raise SnapshotFormatError(f"snapshot {source}: cache {c['name']!r}: slab_size "
                                  f"{num['slab_size']} is below its object_size "
                                  f"{num['object_size']}")
    if "alias_of" not in c and "object_size" not in num:    # (replayed with the trace's
        raise SnapshotFormatError(f"snapshot {source}: cache {c['name']!r} has no "  # sizes)
                                  f"object_size (numslab snapshot writes one for every cache; "
                                  f"leave the cache out to take its geometry from the trace)")


def merge_aliases(tr: Trace, snap: dict[str, dict[str, Any]]) -> Trace:
    """``tr`` with the cache rows of one kernel cache's names (aliases) made one row.

    Aliases are names the snapshot shows as one kernel cache (``/sys/kernel/slab`` symlinks to the
    merged cache, as :func:`load_snapshot` reads them); the row is named by the first of them in
    the trace, as the kernel shares one ``kmem_cache`` and its slabs among them. A trace and a
    snapshot of the same boot never need it (the kmem events print the merged cache's own name);
    ``tr`` itself when no two rows merge."""
    group: dict[str, int] = {}
    remap = np.empty(len(tr.names), np.int32)
    names: list[str] = []
    for r, nm in enumerate(tr.names):
        attrs = snap.get(nm)
        key = attrs.get("name", nm) if attrs is not None else nm
        if key not in group:
            group[key] = len(names)
            names.append(nm)
        remap[r] = group[key]
    if len(names) == len(tr.names):
        return tr
    sizes = np.zeros(len(names), np.int64)
    kmalloc = np.zeros(len(names), np.int64)
    np.maximum.at(sizes, remap, tr.sizes)
    np.maximum.at(kmalloc, remap, tr.kmalloc)
    row = np.where(tr.row >= 0, remap[np.maximum(tr.row, 0)], tr.row).astype(np.int32)
    name = np.where(tr.name >= 0, remap[np.maximum(tr.name, 0)], tr.name).astype(np.int32)
    return replace(tr, row=row, name=name, names=names, sizes=sizes, kmalloc=kmalloc)


#: The caches the kernel makes with ``create_boot_cache``, and so with SLAB_NO_OBJ_EXT: under 7.x
#: they have no sheaves (``calculate_sheaf_capacity``), whatever the replay's policy asks.
BOOT_CACHES = ("kmem_cache", "kmem_cache_node")


def _geometry(name: str, size: int, snap: dict[str, dict[str, Any]] | None,
              policy: str, kernel: str) -> tuple[dict[str, Any], int, str]:
    """``kmem_cache_create`` arguments for a trace cache, its object size, its geometry's source.

    The object size is for live bytes. The geometry came from the snapshot (``snapshot``;
    ``snapshot-size`` when the cache has a constructor or a free pointer placement numslab cannot
    be told, so its slab size is used as the object size) or the trace's ``bytes_alloc``
    (``trace``)."""
    s = snap.get(name) if snap else None
    sheaf = 0
    if policy.startswith("sheaves="):
        sheaf = int(policy.split("=")[1])
    boot = F.SLAB_NO_OBJ_EXT if name in BOOT_CACHES else 0
    if s is None or "object_size" not in s:
        return {"size": max(8, size), "flags": boot, "sheaf_capacity": sheaf}, max(8, size), \
            "trace"
    flags = boot
    if int(s.get("hwcache_align", 0)):
        flags |= F.SLAB_HWCACHE_ALIGN
    if int(s.get("reclaim_account", 0)):
        flags |= F.SLAB_RECLAIM_ACCOUNT
    if int(s.get("destroy_by_rcu", 0)):
        flags |= F.SLAB_TYPESAFE_BY_RCU
    if not policy.startswith("sheaves="):          # the snapshot's own (7.0: a minimum)
        snap_sheaf = int(s.get("sheaf_capacity", 0) or 0)
        sheaf = 0 if policy == "nosheaves" else snap_sheaf
    args = {"size": int(s["object_size"]), "align": int(s.get("align", 0) or 0),
            "flags": flags, "sheaf_capacity": sheaf}
    user = int(s.get("usersize", 0) or 0)      # (the region's offset is in no sysfs file:
    if 0 < user <= args["size"]:                # 0, which sysfs cannot tell apart)
        args["usersize"] = user
    if s.get("ctor"):           # a typesafe one keeps its flag, its free pointer inside
        ctor = {"size": int(s["slab_size"]), "align": args["align"], "flags": flags,
                "sheaf_capacity": sheaf}
        if "usersize" in args:
            ctor["usersize"] = user
        if flags & F.SLAB_TYPESAFE_BY_RCU:
            ctor["freeptr_offset"] = 0
        return ctor, int(s["object_size"]), "snapshot-size"
    return args, int(s["object_size"]), "snapshot"


def _aliases(names: list[str], snap: dict[str, dict[str, Any]] | None) -> np.ndarray:
    """The snapshot's ``aliases`` of each row's kernel cache, int64[len(names)].

    0 where the snapshot has no cache of that name, or no whole number there."""
    out = np.zeros(len(names), np.int64)
    for k, nm in enumerate(names):
        v = str((snap or {}).get(nm, {}).get("aliases", "")).strip()
        out[k] = int(v) if v.isdecimal() and len(v) < 10 else 0
    return out


def _align_ok(align: int) -> int:
    """The snapshot's ``align`` as ``kmem_cache_create`` takes it (a power of two or 0)."""
    return align if align > 0 and align & (align - 1) == 0 else 0
