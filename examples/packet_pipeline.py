"""The packet-batch pipeline from the command line.

A thin front end over :mod:`numslab.net.pipeline`: input, progress bar, summary, JSON and the
mode comparison.

Examples::

    python examples/packet_pipeline.py                       # 200000 generated packets
    python examples/packet_pipeline.py --pcap trace.pcapng --mode single --json
    python examples/packet_pipeline.py --compare --packets 200000
    python examples/packet_pipeline.py --compare --kernel 6.18,7.0   # generations side by side
"""
from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import sys
import threading
import warnings
from typing import Any, Callable, Iterator, Sequence

PROG = "packet_pipeline"
try:                    # (loading numslab takes 0.4-1.5 s: a Ctrl-C then was a traceback of it)
    import numslab
    from numslab import parse_size
    from numslab.errors import InvalidArgumentError, OutOfMemoryError, SlabError
    from numslab.geometry import MAX_PAGE_ORDER, PAGE_SIZE
    from numslab.tools.prewarm import MAIN_JOB_UNITS, prewarm
    from numslab.net import (MODES, CaptureError, LeakError, Packets, PipelineResult,
                             generate_traffic, read_capture, run_pipeline)
    from numslab.net.tablecheck import check_packets
except KeyboardInterrupt:
    print(f"{PROG}: interrupted", file=sys.stderr)
    sys.exit(130)
#: Packets of the untimed first run (compilation and loading).
WARMUP = 4096
EPILOG = """Flows are bidirectional TCP/UDP 5-tuples (VLAN tags are not part of the key).
Non-IP frames, other IP protocols, non-first fragments, truncated headers and bad IP
headers (a version that is not the link's, an IPv4 header length below 20) are counted in
packets and bytes but make no flow. A flow entry is freed on a TCP FIN or RST, or after
--idle-timeout seconds without a packet (by packet timestamps); a later packet of the same
5-tuple creates a new entry, and 'flows' counts every entry created. Exit status: 0 ok,
1 leak or failure, 2 unreadable input or bad arguments."""


def head(packets: Packets, n: int) -> Packets:
    """The first ``n`` packets of a table (sharing its data)."""
    return packets._replace(offset=packets.offset[:n], caplen=packets.caplen[:n],
                            wirelen=packets.wirelen[:n], ts_ns=packets.ts_ns[:n])


def compare_modes(packets: Packets, modes: Sequence[str] = MODES, *, repeat: int = 1,
                  warmup: int = WARMUP, kernels: Sequence[str] | None = None,
                  progress: Callable[[str], Callable[[int], Any] | None] | None = None,
                  **kwargs: Any) -> dict[str, PipelineResult]:
    """Run every mode on the same packets: mode name to its fastest result.

    With several ``kernels``, ``"mode@kernel"`` for each SLUB generation, generations in the
    order given.

    Each run first runs untimed on the first ``warmup`` packets (so JIT compilation and
    loading are not timed); then ``repeat`` rounds run every mode in turn (so noise hits
    all modes alike), each run on a fresh allocator. ``progress(name)`` gives the progress
    callback of a timed run, ``name`` as the result is keyed (with several generations the bars
    said "bulk" for each); ``kwargs`` go to :func:`run_pipeline`.

    Raises
    ------
    RuntimeError
        Two runs disagree on a count.
    """
    runs = [(mode, {}) for mode in modes] if not kernels else \
        [(f"{mode}@{k}", {"kernel": k}) for k in kernels for mode in modes]
    for name, kw in runs:
        with warnings.catch_warnings():     # the timed run says it (each warning was twice)
            warnings.simplefilter("ignore")
            run_pipeline(head(packets, min(warmup, len(packets.offset))), name.split("@")[0],
                         **kwargs, **kw)
    out: dict[str, PipelineResult] = {}
    for _ in range(max(1, repeat)):
        for name, kw in runs:
            mode = name.split("@")[0]
            r = run_pipeline(packets, mode, progress=progress(name) if progress else None,
                             **kwargs, **kw)
            if name not in out or r.elapsed_s < out[name].elapsed_s:
                out[name] = r
    first = next(iter(out.values()), None)
    for r in out.values():
        diff = [k for k in ("packets", "bytes", "flows", "active_flows", "counters")
                if getattr(r, k) != getattr(first, k)]
        if diff:
            raise RuntimeError(f"runs {first.mode}@{first.kernel} and {r.mode}@{r.kernel} "
                               f"disagree on {diff}")
    return out


def top_caches(slabinfo: str, k: int = 5) -> list[str]:
    """The header and the ``k`` lines of ``slabinfo`` text with the most memory in slabs.

    Memory is ``num_objs * objsize``, largest first; caches with no slab are left out."""
    lines = slabinfo.splitlines()
    head_ = [ln for ln in lines if ln.startswith(("slabinfo", "#"))]
    size = lambda ln: int(ln.split()[2]) * int(ln.split()[3])   # noqa: E731
    rows = [ln for ln in lines if ln and not ln.startswith(("slabinfo", "#")) and size(ln)]
    return head_ + sorted(rows, key=size, reverse=True)[:k]


def kernels(text: str) -> list[str]:
    """An argparse type: comma-separated SLUB generations (``numslab.KERNELS``).

    Each is named once."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or any(n not in numslab.KERNELS for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: generations are "
                                         f"{', '.join(numslab.KERNELS)}")
    twice = [n for k, n in enumerate(names) if n in names[:k]]
    if twice:
        raise argparse.ArgumentTypeError(f"{text!r}: {twice[0]} is named twice")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    ap = argparse.ArgumentParser(
        prog=PROG, description="Run numslab's packet-batch RX pipeline over a capture or "
        "generated traffic:\nper packet an sk_buff-like slab record, a kmalloc buffer, header "
        "parsing\nand a flow table of slab objects.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("input")
    src.add_argument("--pcap", metavar="FILE", help="capture to read (pcap us/ns either "
                     "byte order, or pcapng; - for standard input); default: generated "
                     "traffic")
    src.add_argument("--packets", type=int, metavar="N",
                     help="packets of generated traffic (default 200000)")
    src.add_argument("--seed", type=int,
                     help="seed of generated traffic (an integer >= 0; default 0)")
    run = ap.add_argument_group("pipeline")
    run.add_argument("--mode", choices=MODES,
                     help="allocation mode (default bulk; --compare runs every mode)")
    run.add_argument("--batch", type=int, default=64, help="packets per batch (default 64)")
    run.add_argument("--idle-timeout", type=float, default=30.0, metavar="SEC",
                     help="free a flow after SEC seconds without a packet (default 30)")
    run.add_argument("--compare", action="store_true",
                     help="run every mode on the same input and compare their speed")
    run.add_argument("--repeat", type=int, metavar="R",
                     help="with --compare: timed runs per mode, fastest kept (default 3)")
    run.add_argument("--cpus", type=int, default=4, help="simulated CPUs (default 4)")
    run.add_argument("--kernel", type=kernels, default=["7.0"], metavar=",".join(numslab.KERNELS),
                     help="SLUB generation(s) to model (default 7.0); with --compare, "
                          "comma-separated generations are run side by side")
    run.add_argument("--memory", default="256M", help="allocator memory (default 256M)")
    out = ap.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    out.add_argument("--top", type=int, metavar="K",
                     help="caches listed in the summary (default 5; not with --json or "
                          "--compare)")
    args = ap.parse_args(argv)
    if args.pcap == "":
        ap.error("--pcap: an empty file name (give a capture, or - for standard input)")
    generated = [f"--{a}" for a in ("packets", "seed") if getattr(args, a) is not None]
    if args.pcap is not None and generated:
        print(f"{PROG}: warning: {' and '.join(generated)} ignored with --pcap (for "
              "generated traffic only)", file=sys.stderr)
    if args.repeat is not None and not args.compare:
        print(f"{PROG}: warning: --repeat ignored without --compare (timed runs per mode)",
              file=sys.stderr)
    if args.mode is not None and args.compare:      # (it was dropped without a word)
        print(f"{PROG}: warning: --mode {args.mode} ignored with --compare (it runs every "
              "mode)", file=sys.stderr)
    if args.top is not None and (args.json or args.compare):     # (so was --top)
        print(f"{PROG}: warning: --top ignored with {'--json' if args.json else '--compare'} "
              "(caches listed in the summary)", file=sys.stderr)
    for name, default in (("packets", 200_000), ("seed", 0), ("repeat", 3), ("mode", "bulk"),
                          ("top", 5)):
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name, low in (("packets", 0), ("seed", 0), ("top", 0), ("batch", 1), ("repeat", 1),
                      ("idle_timeout", 0)):          # (the bad one named, not every rule)
        if not getattr(args, name) >= low:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= {low}")
    if not 1 <= args.cpus <= 4096:
        ap.error(f"--cpus {args.cpus}: simulated CPUs are 1..4096")
    try:
        if parse_size(args.memory) <= 0:
            ap.error(f"--memory {args.memory}: must be positive")
    except SlabError as e:
        ap.error(f"--memory: {e}")
    why = unreservable(args.memory)
    if why:                             # (every run's allocator refused it: status 1)
        ap.error(f"--memory {args.memory}: {why}")
    if len(args.kernel) > 1 and not args.compare:
        ap.error(f"--kernel {','.join(args.kernel)}: several generations need --compare")
    return args


def unreservable(memory: str) -> str:
    """Why no run can take ``memory``: its arena cannot be mapped here; ``''`` if it can.

    The allocator maps twice the arena (its sheaves' shadow half), as
    :class:`numslab.SlabAllocator` does; the mapping is undone at once (no page is touched).
    ``--memory 1T`` was refused by every run's allocator, after the traffic was made, with
    status 1 (a failure, not the bad argument it is)."""
    block = PAGE_SIZE << MAX_PAGE_ORDER
    arena = -(-parse_size(memory) // block) * block
    try:
        mmap.mmap(-1, 2 * arena, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                  | getattr(mmap, "MAP_NORESERVE", 0)).close()
    except (OSError, OverflowError, ValueError, MemoryError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return f"cannot reserve {arena:,} bytes of arena here ({reason})"
    return ""


def capture_name(args: argparse.Namespace) -> str:
    """The capture ``--pcap`` names, as messages call it (``-``: standard input)."""
    return "standard input" if args.pcap == "-" else args.pcap


def load(args: argparse.Namespace) -> tuple[Packets, str]:
    """The input packets and a description of where they came from."""
    if args.pcap:
        p = read_capture(args.pcap, mmap=False)   # a mapped file truncated meanwhile: SIGBUS
        try:                # a packet the pipeline refuses (past 4 MiB): bad input, status 2
            check_packets(p)
        except InvalidArgumentError as e:
            raise CaptureError(str(e)) from None
        return p, f"{capture_name(args)} (linktype {p.linktype})"
    return generate_traffic(args.packets, args.seed), f"generated traffic (seed {args.seed})"


def progress_bar(args: argparse.Namespace, total: int) -> Callable[[str], Any]:
    """``bar(name)``: a progress callback for one run, or None when bars are off.

    ``name`` is the run's mode (``mode@kernel`` with several generations). Bars are off with
    --quiet or when stdout is not a terminal, or closed (``>&-``). Bars appear only after
    0.5 s."""
    if args.quiet or sys.stdout is None or not sys.stdout.isatty():
        return lambda mode: None
    from tqdm import tqdm

    def bar(name: str) -> Callable[[int], Any]:
        t = tqdm(total=total, desc=name, unit="pkt", unit_scale=True, delay=0.5,
                 leave=False, file=sys.stderr)
        def update(n: int) -> None:
            t.update(n)
            if t.n >= total:
                t.close()
        return update
    return bar


@contextlib.contextmanager
def compiling_notice(args: argparse.Namespace) -> Iterator[None]:
    """Say on a terminal's stderr that Numba is compiling, if the untimed first run is slow.

    Slow: over a second (a first run on a fresh machine was silent for half a minute)."""
    timer = None
    if not args.quiet and sys.stderr is not None and sys.stderr.isatty():   # (`2>&-`: None)
        timer = threading.Timer(1.0, print, ("compiling numslab's engine and the pipeline: the "
                                             "first run on this machine only, cached for the "
                                             "next ...",), {"file": sys.stderr, "flush": True})
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


def summary(r: PipelineResult, source: str, top: int) -> str:
    """The human summary of one run."""
    c = r.counters
    lines = [
        f"input      {source}",
        f"mode       {r.mode}, batch {r.batch}, {r.batches:,} batches, kernel {r.kernel}",
        f"packets    {r.packets:,}",
        f"bytes      {r.bytes:,} on the wire ({c['captured_bytes']:,} captured)",
        f"flows      {r.flows:,} seen, {r.active_flows:,} active at the end "
        f"({c['closed_flows']:,} closed by FIN/RST, {c['expired_flows']:,} idle; "
        f"at most {c['max_active_flows']:,} at once)",
        f"traffic    IPv4 {c['ipv4']:,}, IPv6 {c['ipv6']:,}, TCP {c['tcp']:,}, "
        f"UDP {c['udp']:,}, VLAN {c['vlan']:,}, other IP {c['other_ip']:,}, "
        f"non-IP {c['non_ip']:,}, truncated {c['truncated']:,}, "
        f"bad IP header {c['bad_header']:,}",
        (f"speed      {r.ns_per_packet:,.1f} ns/packet, {r.pps:,.0f} packets/s" if r.packets
         else "speed      none measured (no packets)"),
        "leaks      none: every cache is back to its live objects of before the run "
        "(checked)",
        "caches     (slabinfo after the last batch, most memory first)"][:None if top else -1]
    lines += ["  " + ln for ln in top_caches(r.slabinfo, top) if top]   # (--top 0: neither
    return "\n".join(lines)                     # the caches' line nor slabinfo's header lines)


def compare_table(res: dict[str, PipelineResult], source: str) -> str:
    """Modes side by side with the speed-up over ``single`` (of the same generation).

    With several generations, also each run's time against the first generation's same mode."""
    r = next(iter(res.values()))
    first = r.kernel
    multi = any(x.kernel != first for x in res.values())
    lines = [f"input    {source}: {r.packets:,} packets, {r.bytes:,} bytes, "
             f"{r.flows:,} flows, {r.active_flows:,} active at the end (same in every run)",
             f"{'mode':<8} {'kernel':>6} {'ns/packet':>10} {'Mpps':>8} {'speed-up':>9}"
             + (f" {'time x ' + first:>11}" if multi else "")]
    if not r.packets:                           # nothing was timed: no speed to compare
        return "\n".join(lines[:1] + ["no packets: no mode was timed"])
    for x in res.values():
        base = res.get(f"single@{x.kernel}", res.get("single", x))
        speedup = base.ns_per_packet / x.ns_per_packet if x.ns_per_packet else 0.0
        row = f"{x.mode:<8} {x.kernel:>6} {x.ns_per_packet:10.1f} {x.pps / 1e6:8.3f} " \
              f"{speedup:8.2f}x"
        if multi:
            ref = res.get(f"{x.mode}@{first}", x)
            row += f" {x.ns_per_packet / ref.ns_per_packet:11.2f}"
        lines.append(row)
    return "\n".join(lines)


def compare_json(res: dict[str, PipelineResult], source: str) -> dict[str, Any]:
    """The comparison as one JSON object."""
    r = next(iter(res.values()))
    modes = {}
    for name, x in res.items():
        base = res.get(f"single@{x.kernel}", res.get("single", r)).ns_per_packet
        d = x.to_dict()
        d["speedup"] = base / x.ns_per_packet if x.ns_per_packet else 0.0
        modes[name] = d
    return {"mode": "compare", "source": source, "packets": r.packets, "bytes": r.bytes,
            "flows": r.flows, "active_flows": r.active_flows, "batch": r.batch,
            "ns_per_packet": {m: x.ns_per_packet for m, x in res.items()}, "modes": modes}


def warning_line(message: Any, category: type, filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """Print a warning as the CLI's other messages: ``packet_pipeline: warning: ...``.

    Python's own format echoed the source line that warned, ``p = read_capture(args.pcap)``."""
    print(f"{PROG}: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; the exit status.

    0 ok, 1 leak or failure, 2 bad input, 130 a Ctrl-C, as a shell reports it. Output cut short
    by its reader (``| head``) ends the command quietly, as ``numslab`` does."""
    try:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = warning_line
                return _main(argv)
        except KeyboardInterrupt:       # (in a first run mostly inside Numba's compiler: a
            print(f"{PROG}: interrupted", file=sys.stderr)    # traceback of 170-260 lines)
            return 130
        finally:                        # what is still buffered: here, not at exit
            if sys.stdout is not None:  # (None: started with stdout closed, `>&-`)
                sys.stdout.flush()
    except OSError as e:                # a closed pipe, or output refused (> /dev/full)
        with contextlib.suppress(OSError, ValueError):  # (no file descriptor: nothing to do)
            devnull = os.open(os.devnull, os.O_WRONLY)  # Python's own flush at exit would
            os.dup2(devnull, sys.stdout.fileno())       # fail again, with a traceback
        if not isinstance(e, BrokenPipeError):
            print(f"{PROG}: error: cannot write the output: {e.strerror or e}",
                  file=sys.stderr)
        return 1


def _main(argv: list[str] | None) -> int:
    """:func:`main`, its warnings printed by :func:`warning_line`.

    On an empty Numba cache a second process compiles the engine's units meanwhile
    (:mod:`numslab.tools.prewarm`)."""
    args = parse_args(argv)
    with prewarm(MAIN_JOB_UNITS):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Load the packets and run the pipeline as ``args`` say; the exit status."""
    try:
        packets, source = load(args)
    except CaptureError as e:           # (standard input was "-: unknown magic ...")
        where = capture_name(args)
        text = str(e) if str(e).startswith(where) else f"{where}: {e}"
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 2
    except SlabError as e:              # generated traffic it cannot make: --packets 10**15
        print(f"{PROG}: error: --packets {args.packets}: {e}", file=sys.stderr)   # (its
        return 2                        # timestamps pass int64 ns: it was a traceback)
    except OSError as e:                # (not the output's: main reports those; it said
        where = e.filename if e.filename is not None else args.pcap  # "[Errno 21] Is a
        print(f"{PROG}: error: {where}: {e.strerror or e}", file=sys.stderr)   # directory: 'x'")
        return 2
    except MemoryError as e:            # --packets 10000000000000, or a capture past RAM
        what = args.pcap if args.pcap else f"{args.packets:,} packets of generated traffic"
        print(f"{PROG}: error: {what}: out of memory ({e})", file=sys.stderr)
        return 1
    try:
        bar = progress_bar(args, len(packets.offset))
        kw = dict(batch=args.batch, idle_timeout=args.idle_timeout, nr_cpus=args.cpus,
                  memory=args.memory)
        if args.compare:
            if len(args.kernel) > 1:
                res = compare_modes(packets, repeat=args.repeat, progress=bar,
                                    kernels=args.kernel, **kw)
            else:
                res = compare_modes(packets, repeat=args.repeat, progress=bar,
                                    kernel=args.kernel[0], **kw)
            print(json.dumps(compare_json(res, source)) if args.json
                  else compare_table(res, source))
        else:
            # untimed on the first packets first, as compare_modes does, so that the speed
            # line measures the pipeline and not the JIT compiling it (a first run on an empty
            # Numba cache would otherwise report ~100x the speed of the next)
            with compiling_notice(args), warnings.catch_warnings():
                warnings.simplefilter("ignore")     # the timed run says it (it was twice)
                run_pipeline(head(packets, min(WARMUP, len(packets.offset))), args.mode,
                             kernel=args.kernel[0], **kw)
            r = run_pipeline(packets, args.mode, progress=bar(args.mode),
                             kernel=args.kernel[0], **kw)
            print(json.dumps({"source": source, **r.to_dict()}) if args.json
                  else summary(r, source, args.top))
    except LeakError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except OutOfMemoryError as e:      # ("give it more memory": the option that does it)
        print(f"{PROG}: error: {type(e).__name__}: {e} (--memory, now {args.memory})",
              file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError, ValueError, SlabError) as e:
        print(f"{PROG}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
