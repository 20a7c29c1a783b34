"""The lab's subcommands of ``numslab``: ``replay``, ``record``, ``snapshot`` and ``maple``.

``replay`` (a kernel kmem trace through numslab's SLUB, one configuration or several side by side),
``record`` (the kmem events of the live kernel), ``snapshot`` (its ``/sys/kernel/slab``) and
``maple`` (the maple tree's prefilled-sheaf workload on SLUB generations side by side)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import InvalidArgumentError, SlabError
from ..errors import InvalidArgumentError as BadArg
from ..lab import record as rec
from ..lab.maple import format_maple, maple_churn
from ..lab.replay import KERNELS, POLICIES, replay
from ..lab.result import format_compare, plot_results
from ..lab.snapshot import SnapshotFormatError
from ..lab.trace import TraceFormatError


def _every(text: str) -> int | str:
    """``--every``'s value: a number of events, or ``free``."""
    if text == "free":
        return text
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:                           # (a negative one was refused only after the parse)
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of events (>= 0) or "
                                         f"'free'")
    return n


def add_commands(sub: Any) -> None:
    """Add ``replay``, ``record``, ``snapshot``, ``maple`` to ``numslab``'s subparsers ``sub``."""
    r = sub.add_parser("replay", help="replay a kernel kmem trace through numslab's SLUB")
    r.add_argument("trace", help="tracefs trace/trace_pipe text, trace-cmd report or perf "
                                 "script text of the kmem events (plain, .gz, .xz; - for stdin)")
    r.add_argument("--snapshot", metavar="FILE", help="numslab snapshot JSON: cache geometry")
    r.add_argument("--kernel", choices=KERNELS, default="7.0",
                   help="the SLUB generation to replay on (default %(default)s)")
    r.add_argument("--cpus", type=cpu_count, help="simulated CPUs (default: the trace's)")
    r.add_argument("--nodes", type=positive_int, default=1,
                   help="NUMA nodes (default %(default)s)")
    r.add_argument("--policy", default="default", help=f"one of {', '.join(POLICIES)}")
    r.add_argument("--compare", metavar="CONFIG,CONFIG",
                   help="configurations side by side: KERNEL[:cpus=N][:nodes=N][:POLICY]"
                        "[:every=N|free][:warm[=random]|:cold][:slab_max_order=N]"
                        "[:slab_min_order=N][:slab_min_objects=N], e.g. 6.18,7.0 or "
                        "7.0,7.0:cpus=8,7.0:sheaves=64 or 6.18,6.18:warm or "
                        "7.0,7.0:slab_max_order=0")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--plot", metavar="FILE.png", help="draw slab memory against live bytes "
                                                     "over time, and the utilisation per cache")
    r.add_argument("--skip-bad", action="store_true", help="count malformed lines, skip them")
    r.add_argument("--samples", type=positive_int, default=256,
                   help="points of the time series (default %(default)s)")
    r.add_argument("--every", type=_every, default=0, metavar="N|free",
                   help="run the policy's shrink or compaction every N events (default: at "
                        "the sample points), or 'free': on a cache after each free that "
                        "leaves it a slab more than its live objects need")
    r.add_argument("--warm", nargs="?", const="slab", default="", choices=("slab", "random"),
                   help="start from the --snapshot's state (taken just before recording): its "
                        "live objects, slabs and partial slabs per cache; a kmem_cache_free of "
                        "an object allocated before the recording frees one of them, slab by "
                        "slab (the default) or at random")
    r.add_argument("--all", action="store_true", help="every cache in the table (with "
                   "--compare: each configuration's own table too)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = sub.add_parser("record", help="record the live kernel's kmem events (root)")
    c.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="trace text (.xz or .gz compressed by suffix)")
    c.add_argument("--seconds", type=_seconds,
                   help="record this long (without a command; default 1 second)")
    c.add_argument("--tracefs", default=rec.TRACEFS, metavar="DIR",
                   help=f"tracefs folder (default {rec.TRACEFS}, mounted if needed; another "
                        "one must be mounted already)")
    c.add_argument("--buffer-kb", type=positive_int, default=65536,
                   help="ring buffer per CPU, KiB (default 65536)")
    c.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...: record while "
                                                             "it runs")
    s = sub.add_parser("snapshot", help="the live kernel's /sys/kernel/slab as JSON")
    s.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the JSON file ('-': standard output)")
    s.add_argument("--slab-root", default=rec.SLAB_ROOT, help=argparse.SUPPRESS)
    m = sub.add_parser("maple", help="the maple tree's prefilled sheaves (will-it-scale "
                                     "mmap1 on maple_node) on SLUB generations side by side",
                       description="Each tree write prefills a sheaf of maple_node for its "
                       "worst case, takes 1-4 nodes from it, returns it and kfree_rcu()s the "
                       "nodes it replaced, on every CPU in turn; prints the SLUB counters of "
                       "the barn-refill patch's table for each generation side by side.")
    m.add_argument("--kernel", type=generations(KERNELS), default=["7.3", "next"],
                   metavar="7.3,next", help="generations, comma-separated (default 7.3,next)")
    m.add_argument("--ops", type=positive_int, default=20000, help="tree writes (default 20000)")
    m.add_argument("--cpus", type=cpu_count, default=4,
                   help="CPUs, one process each (default 4)")
    m.add_argument("--live", type=positive_int, default=4096,
                   help="nodes the trees hold (default 4096)")
    m.add_argument("--need", type=positive_int, default=7,
                   help="nodes a write preallocates (default 7)")
    m.add_argument("--grace", type=positive_int, default=32,
                   help="writes per RCU grace period (default 32)")
    m.add_argument("--json", action="store_true", help="print one JSON list")


def generations(allowed: tuple[str, ...]) -> Any:
    """An argparse type: comma-separated SLUB generations, each one of ``allowed`` and named once.

    In their order (the ``numslab`` command's ``--kernel``)."""
    def parse(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        if not names or any(n not in allowed for n in names):
            raise argparse.ArgumentTypeError(f"{text!r}: generations are "
                                             f"{', '.join(allowed)}")
        twice = [n for k, n in enumerate(names) if n in names[:k]]
        if twice:                       # a column the user asked for would be missing
            raise argparse.ArgumentTypeError(f"{text!r}: {twice[0]} is named twice")
        return names
    parse.__name__ = "generations"
    return parse


def _seconds(text: str) -> float:
    """``record --seconds``: a time of 0 or more seconds (below 1e9, as ``record`` takes)."""
    try:
        t = float(text)
    except ValueError:
        t = -1.0                        # (0.0 recorded nothing, status 0: a trial found it)
    if not 0 <= t < 1e9:                # (record's own range)
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return t


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer of at least 1")
    return n


def cpu_count(text: str) -> int:
    """An argparse type: a machine's CPUs, 1..4096."""
    n = positive_int(text)
    if n > 4096:
        raise argparse.ArgumentTypeError(f"{text!r} is more than the 4096 CPUs a machine may "
                                         f"have")
    return n


def run(args: argparse.Namespace) -> int:
    """Run a lab subcommand; its exit status (errors print one line and give 1)."""
    try:
        for opt, attr in (("trace", "trace"), ("--snapshot", "snapshot"), ("-o", "output")):
            if getattr(args, attr, None) == "":     # (the current folder was opened: "cannot
                raise InvalidArgumentError(           # read trace : Is a directory")
                    f"{opt}: an empty file name (give a file"
                    + {"record": ")", "snapshot": ", or - for standard output)"}.get(
                        args.cmd, ", or - for standard input)"))
        if args.cmd == "replay":
            return _replay(args)                # (numslab.replay starts a second compiler)
        if args.cmd == "maple":
            runs = [maple_churn(k, ops=args.ops, cpus=args.cpus, live=args.live,
                                need=args.need, used=(1, min(4, args.need)), grace=args.grace)
                    for k in args.kernel]
            print(json.dumps(runs) if args.json else format_maple(runs))
            return 0
        if args.cmd == "record":
            if args.output == "-":                  # (it wrote a file named '-')
                raise InvalidArgumentError("-o -: record writes its trace to a file (the "
                                           "command it runs prints to standard output)")
            cmd = list(args.command or [])
            if cmd[:1] == ["--"]:                   # the separator, not the command's own
                cmd = cmd[1:]
            if cmd and args.seconds is not None:    # (a usage error: it was status 1)
                raise InvalidArgumentError(f"--seconds {args.seconds:g} and a command: the "
                                           f"recording lasts as long as the command runs; "
                                           f"give one of the two")
            info = rec.record(args.output, cmd or None, args.seconds, args.tracefs,
                              args.buffer_kb)
            print(f"{info['lines']} lines written to {args.output}"
                  + (f" ({info['lost']} lines of lost events: a larger --buffer-kb?)"
                     if info["lost"] else "")
                  + (f" ({info['overwritten']} events overwritten, the oldest: the ring "
                     f"buffer was full, a larger --buffer-kb?)" if info["overwritten"] else "")
                  + (" (interrupted: what was recorded until Ctrl-C)"
                     if info["interrupted"] else ""))
            if info["interrupted"]:
                return 130                          # 128 + SIGINT, as a shell reports it
            rc = int(info["returncode"] or 0)       # a command a signal ended: -N, which
            return 128 - rc if rc < 0 else rc       # exit statuses made 256 - N (247 for
            #                                         SIGKILL): 128 + N, as a shell says
        n = rec.write_snapshot(args.output, args.slab_root)
        print(f"{n} cache entries written to "
              + ("standard output" if args.output == "-" else args.output),
              file=sys.stderr if args.output == "-" else sys.stdout)
        return 0
    except MemoryError as e:            # (a traceback: an endless standard input, a trace
        detail = f": {e}" if str(e) else ""     # or a run past the machine's memory)
        print(f"numslab {args.cmd}: out of memory (MemoryError{detail})", file=sys.stderr)
        return 1
    except InvalidArgumentError as e:   # an argument no run can take: a usage error
        print(f"numslab {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except SlabError as e:               # (the message may name the command already)
        text = str(e)
        text = text[len(args.cmd) + 2:] if text.startswith(f"{args.cmd}: ") else text
        print(f"numslab {args.cmd}: {text}", file=sys.stderr)
        # input that cannot be read or parsed: 2, as the packet pipeline's (it was 1 here)
        return 2 if isinstance(e, (TraceFormatError, SnapshotFormatError)) else 1


def check_plot(path: str) -> str:
    """Refuse, before any work, a ``--plot`` file matplotlib cannot write.

    Matplotlib missing, a folder that does not exist, a format it does not draw, a file that cannot
    be opened for writing (a folder of that name, a read-only place: they were found only when the
    figure was saved, after minutes of work, as "cannot write the output") (``SlabError``). The
    file it will write: ``path``, with ``.png`` added when it has no suffix."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise BadArg("--plot needs matplotlib: pip install matplotlib (or numslab's examples, "
                     "bench or test extra)") from None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadArg(f"--plot {path}: the folder {folder} does not exist")
    ext = os.path.splitext(path)[1][1:].lower()
    kinds = Figure().canvas.get_supported_filetypes()
    if ext and ext not in kinds:                    # no suffix: matplotlib writes a png
        raise BadArg(f"--plot {path}: matplotlib draws {', '.join(sorted(kinds))}, not "
                     f"{ext!r}")
    target = path if ext else path + ".png"
    try:
        rec.check_writable(target)
    except OSError as e:
        raise BadArg(f"--plot {path}: cannot write {target}: {e.strerror or e}") from None
    return target


def _replay(args: argparse.Namespace) -> int:
    """``numslab replay``."""
    if args.plot:
        try:
            written = check_plot(args.plot)
        except SlabError as e:              # a usage error, as for bench: status 2
            print(f"numslab replay: error: {e}", file=sys.stderr)
            return 2
    res = replay(args.trace, snapshot=args.snapshot, kernel=args.kernel, cpus=args.cpus,
                 nodes=args.nodes, policy=args.policy, compare=args.compare,
                 skip_bad=args.skip_bad, samples=args.samples, every=args.every,
                 warm=args.warm,
                 progress=False if args.no_progress or args.json else None)
    results = list(res.configs.values()) if res.configs else [res]
    if args.plot:                           # before the text: a reader that stops early
        plot_results(results, args.plot)    # (| head) ended the command before the plot
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        for r in results:                   # compared: each one's summary, then the side
            print(r.summary())              # by side; its own slabinfo table only with --all
            if len(results) == 1 or args.all:
                print(r.table(all_caches=args.all))
            print()
        if len(results) > 1:
            print(format_compare(results))
    if args.plot and not args.json:
        print(f"plot written to {written}")
    return 0
