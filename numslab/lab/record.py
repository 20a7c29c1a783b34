"""Recording on the live kernel: ``kmem`` tracepoints and ``/sys/kernel/slab`` snapshots.

The ``kmem`` tracepoints through tracefs (``numslab record``) and ``/sys/kernel/slab`` as JSON
(``numslab snapshot``).

A recording traces in an instance of its own (``instances/numslab-<pid>``, removed after),
where tracefs has instances, so the top-level ring buffer's other users keep their events.
Every change to the tracefs it uses is undone in a ``finally``: the events' enables,
``tracing_on``, the buffer size, and the output options and trace clock a recording sets to
what the reader reads (:data:`FORMAT`, :data:`SECONDS_CLOCKS`) are put back as they were,
however the recording ends.
"""
from __future__ import annotations

import gzip
import json
import lzma
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from ..errors import SlabError

__all__ = ["RecordError", "EVENTS", "TRACEFS", "record", "snapshot", "ensure_tracefs"]

TRACEFS = "/sys/kernel/tracing"
SLAB_ROOT = "/sys/kernel/slab"
#: the CPUs present (``cpu_present_mask`` as a list, ``0-3,6``): ``num_present_cpus()``, the
#: count SLUB's ``calculate_order`` sizes slabs by
CPU_PRESENT = "/sys/devices/system/cpu/present"
#: the CPUs possible (a list as ``CPU_PRESENT``): ``nr_cpu_ids``, the last one's number plus
#: one, is what ``calculate_order`` takes when at most one CPU is present
CPU_POSSIBLE = "/sys/devices/system/cpu/possible"
#: the CPUs online (a list as ``CPU_PRESENT``): those whose events a recording needs, so
#: ``tracing_cpumask`` must take them all
CPU_ONLINE = "/sys/devices/system/cpu/online"
#: the kmem events a replay reads
EVENTS = ("kmalloc", "kfree", "kmem_cache_alloc", "kmem_cache_free")
#: the attributes of each /sys/kernel/slab/<cache>/ a snapshot keeps
SLAB_ATTRS = ("object_size", "slab_size", "align", "order", "objs_per_slab", "min_partial",
              "cpu_partial", "hwcache_align", "destroy_by_rcu", "reclaim_account",
              "sheaf_capacity", "ctor", "aliases", "objects", "slabs", "partial", "cpu_slabs",
              "total_objects", "objects_partial", "slabs_cpu_partial", "usersize")

#: the output options of tracefs the reader needs as the kernel's defaults, set for a recording
#: where tracefs has them (a trace printed otherwise was refused by ``numslab replay``: no
#: '[cpu]' field without context-info, in the latency format, raw, hex or bin; fields= too)
FORMAT = (("options/context-info", "1"), ("options/latency-format", "0"),
          ("options/fields", "0"), ("options/raw", "0"), ("options/hex", "0"),
          ("options/bin", "0"))
#: the trace clocks that print seconds.microseconds (counter, uptime and x86-tsc print counts,
#: which the reader refuses: the recording then takes ``local``, the kernel's default)
SECONDS_CLOCKS = ("local", "global", "perf", "mono", "mono_raw", "boot", "tai")


class RecordError(SlabError, OSError):
    """Tracing or the slab directory is not available here (not root, no tracefs, ...)."""


def _write(path: Path, text: str) -> None:
    """Write ``text`` and a newline to a tracefs file, as ``echo`` would."""
    with open(path, "w") as f:
        f.write(text + "\n")


def check_writable(path: str | Path) -> None:
    """Raise the ``OSError`` opening ``path`` for writing raises, writing nothing.

    It is opened to append, and removed again if it did not exist (what an output is checked with
    before any work, where ``os.access`` says yes to root for ``/sys`` and ``/proc``)."""
    existed = os.path.lexists(path)
    with open(path, "ab"):
        pass
    if not existed:
        try:
            os.unlink(path)
        except OSError:
            pass


def ensure_tracefs(root: str | Path = TRACEFS) -> Path:
    """``root`` as a usable tracefs (mounted if it is the kernel's empty mount point).

    Only ``/sys/kernel/tracing`` is mounted: another empty folder named by ``--tracefs`` was
    mounted over and left so.

    Raises
    ------
    RecordError
        When it is absent, cannot be mounted, or its kmem events are missing.
    """
    root = Path(root)
    if not (root / "events").is_dir():
        if root == Path(TRACEFS) and root.is_dir() and os.geteuid() == 0 and \
                not any(root.iterdir()):    # (a folder with files in it was mounted over)
            r = subprocess.run(["mount", "-t", "tracefs", "nodev", str(root)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RecordError(f"record: {root} has no tracefs and mounting it failed: "
                                  f"{r.stderr.strip() or r.returncode}")
        if not (root / "events").is_dir():
            raise RecordError(f"record: no tracefs at {root} (as root: mount -t tracefs "
                              f"nodev {root})")
    missing = [e for e in EVENTS if not (root / "events" / "kmem" / e / "enable").exists()]
    if missing:
        raise RecordError(f"record: this kernel's tracefs at {root} lacks the kmem events "
                          f"{', '.join(missing)}")
    return root


def _read(path: Path) -> str:
    """A tracefs file's text, stripped."""
    return path.read_text().strip()


def _buffer_sizes(root: Path) -> list[tuple[Path, str]]:
    """The ring buffer's size as tracefs takes it back.

    ``buffer_size_kb`` reads ``N (expanded: M)`` before the buffer was first used (kept as M, the
    size the kernel expands it to: N would shrink it, and the text itself is refused) and ``X``
    when the CPUs' sizes differ (each ``per_cpu/cpuK/buffer_size_kb`` kept)."""
    text = _read(root / "buffer_size_kb")
    m = re.fullmatch(r"\d+ \(expanded: (\d+)\)", text)
    if m:
        return [(root / "buffer_size_kb", m.group(1))]
    if text == "X":
        return [(p, _read(p)) for p in sorted((root / "per_cpu").glob("cpu*/buffer_size_kb"))]
    return [(root / "buffer_size_kb", text)]


#: Suffixes of compressions ``record`` does not write (the replay reads none of them either).
_OTHER_COMPRESSION = (".zst", ".zstd", ".bz2", ".lz4", ".lzma", ".z", ".zip", ".7z")


def record(out: str | Path, command: Sequence[str] | None = None, seconds: float | None = None,
           root: str | Path = TRACEFS, buffer_kb: int = 65536) -> dict[str, Any]:
    """Record the kmem events while ``command`` runs (or for ``seconds``) and write them out.

    The tracefs ``trace`` text is written to ``out`` (xz or gz by its suffix).

    Returns
    -------
    dict
        ``lines`` written, ``lost`` (lines reporting lost events), ``overwritten`` (the
        oldest events a full ring buffer overwrote, which no line reports), the command's
        ``returncode`` (None without a command), ``seconds``, and ``interrupted``: a
        Ctrl-C ended the wait (the command or the sleep), and what was recorded until
        then was written.

    Raises
    ------
    RecordError
        When tracing is not permitted or available, or ``seconds``, ``buffer_kb`` or the
        output's directory is unusable (checked before tracefs is touched); tracefs is
        left as it was.
    """
    if command is not None and seconds is not None:     # (the seconds were ignored)
        raise RecordError(f"record: {seconds!r} seconds and a command: the recording lasts "
                          f"as long as the command runs; give one of the two")
    if command is None and seconds is None:
        seconds = 1.0
    if seconds is not None and not (isinstance(seconds, (int, float)) and 0 <= seconds < 1e9):
        raise RecordError(f"record: {seconds!r} is not a number of seconds (0 or more)")
    if type(buffer_kb) is not int or buffer_kb < 1:
        raise RecordError(f"record: buffer size {buffer_kb!r} KiB is not a positive int")
    out = Path(out)
    if out.suffix.lower() in _OTHER_COMPRESSION:    # (written as plain text under that name)
        raise RecordError(f"record: {out}: numslab writes a trace plain, .xz or .gz, not "
                          f"{out.suffix}; nothing was recorded")
    where = out.parent if str(out.parent) else Path(".")
    try:                        # (os.access passed root for a read-only place such as
        check_writable(out)     # /sys: the recording was then lost)
    except OSError as e:
        raise RecordError(f"record: cannot write {out} ({e.strerror or e}: no such writable "
                          f"directory {where}, or it is a directory); nothing was "
                          f"recorded") from None
    root = ensure_tracefs(root)
    inst = _instance(root)          # its own ring buffer, where the kernel has instances
    t0 = time.monotonic()
    try:
        text, rc, interrupted = _trace(inst or root, command, seconds, buffer_kb)
    finally:
        if inst is not None:
            try:
                inst.rmdir()
            except OSError:
                pass
    data = text.encode()
    if out.suffix == ".xz":
        data = lzma.compress(data)
    elif out.suffix == ".gz":
        data = gzip.compress(data)
    try:
        out.write_bytes(data)
    except OSError as e:
        raise RecordError(f"record: cannot write {out}: {e.strerror or e}") from None
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    # a full ring buffer overwrites its oldest events (options/overwrite, the default) and
    # no line marks them: the header's "entries-in-buffer/entries-written: A/B" counts them
    kept = re.search(r"^# entries-in-buffer/entries-written: (\d+)/(\d+)", text, re.M)
    return {"lines": len(lines), "lost": sum("LOST" in ln for ln in lines
                                             if ln.startswith("CPU:")),
            "overwritten": int(kept.group(2)) - int(kept.group(1)) if kept else 0,
            "returncode": rc, "seconds": time.monotonic() - t0, "interrupted": interrupted}


def _trace(root: Path, command: Sequence[str] | None, seconds: float | None,
           buffer_kb: int) -> tuple[str, int | None, bool]:
    """Set ``root`` (tracefs or an instance of it) up, trace, read the text, restore ``root``.

    Returns the ``trace`` text, the command's return code and whether a Ctrl-C ended the
    wait."""
    _warn_partial(root)
    ev = [root / "events" / "kmem" / e / "enable" for e in EVENTS]
    try:
        saved = {"on": _read(root / "tracing_on"), "buf": _buffer_sizes(root),
                 "ev": [_read(p) for p in ev]}
        fmt = [(root / f, v) for f, v in FORMAT if (root / f).exists()]
        saved["fmt"] = [(p, _read(p)) for p, _ in fmt]
        clock = _clock(root)
    except OSError as e:
        raise RecordError(f"record: cannot read {root}: {e.strerror}") from None
    if clock and clock not in SECONDS_CLOCKS:
        fmt.append((root / "trace_clock", "local"))
        saved["fmt"].append((root / "trace_clock", clock))
    rc = None
    interrupted = False
    try:
        writing = root / "tracing_on"   # the file named in an error (e.filename is None
        try:                            # when the write, not the open, fails: ERANGE for a
            for writing, text in ((root / "tracing_on", "0"),          # --buffer-kb too big)
                                  *fmt, (root / "buffer_size_kb", str(int(buffer_kb))),
                                  (root / "trace", ""), *((p, "1") for p in ev),
                                  (root / "tracing_on", "1")):
                _write(writing, text)
        except PermissionError:
            raise RecordError(f"record: not permitted to change tracing ({writing}); "
                              "run as root") from None
        except OSError as e:
            raise RecordError(f"record: cannot set up tracing ({writing}: "
                              f"{e.strerror})") from None
        try:
            if command:
                try:
                    rc = subprocess.run(list(command)).returncode
                except OSError as e:                # not found, not executable
                    raise RecordError(f"record: cannot run {command[0]!r}: "
                                      f"{e.strerror or e}") from None
            else:
                time.sleep(float(seconds or 0))
        except KeyboardInterrupt:   # Ctrl-C (the command had the same SIGINT): what was
            interrupted = True      # recorded is written (it was thrown away, a traceback)
        _write(root / "tracing_on", "0")
        text = (root / "trace").read_text(errors="replace")
    finally:
        for p, v in zip(ev, saved["ev"]):
            _try_write(p, v)
        _try_write(root / "trace", "")
        for p, v in saved["buf"]:
            _try_write(p, v)
        for p, v in saved["fmt"]:
            _try_write(p, v)
        _try_write(root / "tracing_on", saved["on"])
    return text, rc, interrupted


def _instance(root: Path) -> Path | None:
    """A tracing instance of numslab's own, ``instances/numslab-<pid>``, made under ``root``.

    Its ring buffer, event enables and settings are its own, so a recording neither empties
    nor mixes with the top-level buffer another user traces into (a second ``numslab
    record``, ``trace-cmd record``). None where ``root`` has no ``instances`` (a kernel
    without them, a folder named by ``--tracefs``) or the new one lacks the kmem events:
    the recording then uses ``root`` itself, and leaves its buffer empty."""
    if not (root / "instances").is_dir():
        return None
    inst = root / "instances" / f"numslab-{os.getpid()}"
    try:
        inst.mkdir()
    except OSError:
        return None
    if (inst / "trace").exists() and all(
            (inst / "events" / "kmem" / e / "enable").exists() for e in EVENTS):
        return inst
    try:
        inst.rmdir()
    except OSError:
        pass
    return None


def _clock(root: Path) -> str:
    """The trace clock in use (``trace_clock`` lists them all, the one in use in brackets)."""
    if not (root / "trace_clock").exists():
        return ""
    text = _read(root / "trace_clock")
    m = re.search(r"\[(\S+)\]", text)
    return m.group(1) if m else text


def _warn_partial(root: Path) -> None:
    """Warn of the tracefs settings that leave events out of a recording, naming each.

    An event's ``filter``, ``set_event_pid`` or ``set_event_notrace_pid``, a ``tracing_cpumask``
    without every CPU: a kernel engineer's, left from other work, made a recording of some of the
    events only, with no word said (frees of objects whose allocation was left out, objects
    whose free was)."""
    found = []
    for name in [f"events/kmem/{e}/filter" for e in EVENTS] + ["set_event_pid",
                                                                "set_event_notrace_pid"]:
        try:
            text = _read(root / name)
        except OSError:
            continue
        if text not in ("", "none"):
            found.append(f"{name} {' '.join(text.split())[:60]!r}")
    try:
        mask = int(_read(root / "tracing_cpumask").replace(",", ""), 16)
    except (OSError, ValueError):
        mask = -1
    every = sum(1 << c for c in cpu_list(CPU_ONLINE)) or (1 << (os.cpu_count() or 1)) - 1
    if mask & every != every:
        found.append(f"tracing_cpumask {mask:x} (of CPUs {every:x})")
    if found:
        warnings.warn(f"record: {'; '.join(found)}: the recording holds only the events these "
                      f"let through (the replay needs every allocation and free)", UserWarning,
                      stacklevel=4)


def _try_write(path: Path, text: str) -> None:
    """Restore one tracefs file, ignoring a failure (the others are still restored)."""
    try:
        _write(path, text)
    except OSError:
        pass


def cpu_list(path: str | Path) -> list[int]:
    """The CPUs of a sysfs CPU list (``0-3,6``) at ``path``; [] when it cannot be read."""
    try:
        cpus: list[int] = []
        for r in Path(path).read_text().strip().split(","):
            first, _, last = r.partition("-")
            cpus += range(int(first), int(last or first) + 1)
        return cpus
    except (OSError, ValueError):
        return []


def present_cpus(path: str | Path = CPU_PRESENT, possible: str | Path = CPU_POSSIBLE) -> int:
    """The CPU count SLUB's ``calculate_order`` sizes slabs by, from the sysfs CPU lists.

    ``num_present_cpus()`` (the list at ``path``), or ``nr_cpu_ids`` (the last possible CPU's
    number plus one, from ``possible``) when at most one is present, as ``calculate_order``
    takes it. Not ``os.cpu_count()``, the CPUs online, fewer when some are offline: that only
    when the list cannot be read."""
    n = len(cpu_list(path)) or os.cpu_count() or 1
    return max(n, max(cpu_list(possible), default=0) + 1) if n <= 1 else n


def snapshot(root: str | Path = SLAB_ROOT) -> dict[str, Any]:
    """The live kernel's ``/sys/kernel/slab`` as a JSON-ready dict.

    ``kernel`` release, ``nr_cpus`` (the CPUs present, or ``nr_cpu_ids`` when one is,
    :func:`present_cpus`: what the kernel's
    slab orders follow, so ``cpus=`` for a replay with the snapshot's geometry), ``nr_nodes``
    and ``caches`` (each cache's attributes as text, an alias as ``{"name", "alias_of"}``), the
    format :func:`~numslab.lab.replay.load_snapshot` reads.

    Raises
    ------
    RecordError
        When the slab directory is missing, unreadable or holds no cache.
    """
    root = Path(root)
    try:
        names = sorted(os.listdir(root))
    except OSError as e:
        raise RecordError(f"snapshot: cannot list {root}: {e.strerror}") from None
    caches = []
    for name in names:
        p = root / name
        if p.is_symlink():
            caches.append({"name": name, "alias_of": os.path.basename(os.readlink(p))})
            continue
        entry = {"name": name}
        for a in SLAB_ATTRS:
            try:
                entry[a] = (p / a).read_text().strip()
            except OSError:
                pass
        caches.append(entry)
    if not any("object_size" in c for c in caches):   # (an empty or other folder: 0 cache
        raise RecordError(f"snapshot: {root} holds no slab cache (no {root}/<cache>/"
                          f"object_size): not a /sys/kernel/slab")     # entries, status 0)
    nodes = len([d for d in Path("/sys/devices/system/node").glob("node[0-9]*")]) or 1
    return {"kernel": platform.release(), "nr_cpus": present_cpus(CPU_PRESENT, CPU_POSSIBLE),
            "nr_nodes": nodes, "caches": caches}


def write_snapshot(out: str | Path, root: str | Path = SLAB_ROOT) -> int:
    """Write :func:`snapshot` as JSON to ``out`` (``-``: standard output); the cache entries."""
    snap = snapshot(root)
    try:
        if str(out) == "-":                 # (it wrote a file named '-')
            sys.stdout.write(json.dumps(snap, indent=1) + "\n")
            sys.stdout.flush()
        else:
            Path(out).write_text(json.dumps(snap, indent=1))
    except OSError as e:
        raise RecordError(f"snapshot: cannot write {out}: {e.strerror or e}") from None
    return len(snap["caches"])
