"""The ``numslab`` command: ``numslab bench`` and the SLUB laboratory's subcommands.

``numslab bench`` prints the ``slab_bulk_test01``-shaped table (ns per alloc+free pair) for numslab
and its peers, with the kernel's published figures, and on request issue 11's measures against
their peers: the single alloc+free pair inside @njit (``--single``), the cost of one bulk call from
Python (``--calls``), and the cold starts and a user's compile in fresh interpreters
(``--compile``), on one SLUB generation or both (``--kernel 7.0,7.1,6.18``); and the SLUB
laboratory's ``replay``, ``record`` and ``snapshot`` (``labcli``)."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

from ..errors import SlabError
from . import bench, coldstart, labcli, singlebench

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def format_table(table: dict[str, dict[int, float]], sizes: tuple[int, ...],
                 title: str) -> str:
    """A text table: one row per bulk size, one column per implementation, then the kernel's.

    The last column is the kernel's published SLUB figure (Brouer 2015, i7-4790K) where there is
    one."""
    impls = list(table)
    widths = [max(12, len(i)) for i in impls]
    head = f"{'bulk':>5} " + " ".join(f"{i:>{w}}" for i, w in zip(impls, widths)) \
        + f" {'kernel(2015)':>13}"
    lines = [title, head, "-" * len(head)]
    for b in sizes:
        ref = bench.KERNEL_NS.get(b)
        lines.append(f"{b:>5} " + " ".join(f"{table[i][b]:{w}.1f}" for i, w in zip(impls, widths))
                     + (f" {ref:13.1f}" if ref else f" {'':>13}"))
    return "\n".join(lines)


#: Columns that are floors rather than numslab paths (drawn dotted).
FLOORS = ("slab-jit-round", "floor-7.0", "floor-checks")


def plot(tables: dict[str, dict[str, dict[int, float]]], sizes: tuple[int, ...],
         path: str) -> "Figure":
    """Draw ns per object against bulk size for every implementation; returns the figure.

    One colour per implementation in every panel, floors dotted (needs matplotlib)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure     # no pyplot: the process's backend is left alone
    cols = min(len(tables), 3)                 # rows of three panels at most: six (three
    rows = -(-len(tables) // cols)              # kernels, two places) in one row were too wide
    fig = Figure(figsize=(6.5 * cols, 4.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(tables):]:
        ax.set_visible(False)
    names = list(dict.fromkeys(i for table in tables.values() for i in table))
    tab20 = colormaps["tab20"]                # one colour per implementation in every panel
    colour = {n: tab20((2 * k) % 20 + (2 * k) // 20) for k, n in enumerate(names)}
    for ax, (title, table) in zip(axes, tables.items()):
        for impl, row in table.items():
            ax.plot(sizes, [row[b] for b in sizes], marker="o", ms=3, label=impl,
                    color=colour[impl], ls=":" if impl in FLOORS else "-")
        ks = [b for b in sizes if b in bench.KERNEL_NS]
        ax.plot(ks, [bench.KERNEL_NS[b] for b in ks], "k--", label="kernel SLUB (2015)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("bulk size (objects per call)")
        ax.set_ylabel("ns per alloc+free pair")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def format_single(table: dict[str, float], kernel: str = "") -> str:
    """A text table of :func:`singlebench.single_pair_table`.

    ns per round of the single alloc+free pair inside @njit, and its ratio to the FIFO ring's (the
    first row); the title names ``kernel`` if given."""
    ref = next(iter(table.values()))
    lines = [f"ns per round of the single alloc+free pair inside @njit ({singlebench.SINGLE_LIVE} "
             f"live, a random one replaced each round)" + (f", kernel {kernel}" if kernel else ""),
             f"{'impl':<15} {'ns/round':>10} {'x ' + next(iter(table)):>13}", "-" * 40]
    lines += [f"{k:<15} {v:10.2f} {v / ref:13.2f}" for k, v in table.items()]
    return "\n".join(lines)


def format_calls(table: dict[str, dict[str, float]], kernel: str = "") -> str:
    """A text table of :func:`singlebench.call_cost_table`.

    ns per call from Python of ``kmem_cache_alloc_bulk`` and ``kmem_cache_free_bulk``, then the
    facade's ratio to each peer (issue 11's target: at most 1.3); the title names ``kernel`` if
    given."""
    ops = singlebench.CALL_OPS
    lines = [f"ns per call from Python, {singlebench.CALL_BULK} objects served by the sheaf"
             + (f", kernel {kernel}" if kernel else ""),
             f"{'impl':<22} " + " ".join(f"{op:>11}" for op in ops), "-" * 46]
    lines += [f"{impl:<22} " + " ".join(f"{row[op]:11.1f}" for op in ops)
              for impl, row in table.items()]
    if "facade" in table:
        lines += [f"{'facade / ' + impl:<22} "
                  + " ".join(f"{table['facade'][op] / row[op]:11.2f}" for op in ops)
                  for impl, row in table.items() if impl != "facade"]
    return "\n".join(lines)


def format_compile(cold: dict[str, float], user: dict[str, dict[str, float]]) -> str:
    """Text tables of the cold starts and of the user's compile.

    The cold starts in seconds, ratio to Numba's floor, issue 11's limit; the user's compile in
    seconds on numslab and on stacks, and their ratio."""
    lines = []
    if cold:
        floor = cold.get("numba-floor")
        lines += ["seconds in a fresh interpreter with an empty Numba cache",
                  f"{'case':<15} {'seconds':>8} {'x floor':>8} {'limit':>6}", "-" * 40]
        for case, t in cold.items():
            ratio = f"{t / floor:8.2f}" if floor else f"{'':>8}"
            limit = coldstart.COLD_LIMITS.get(case)
            over = "  over the limit" if limit and t > limit else ""
            lines.append(f"{case:<15} {t:8.2f} {ratio} " +
                         (f"{limit:6.0f}" if limit else f"{'':>6}") + over)
    if user:
        if lines:
            lines.append("")
        lines += ["seconds to compile a user's function, numslab's cache warm (limit: 1.5x)",
                  f"{'variant':<10} {'numslab':>8} {'stack':>8} {'ratio':>6}", "-" * 35]
        lines += [f"{v:<10} {r['numslab']:8.3f} {r['stack']:8.3f} "
                  f"{r['numslab'] / r['stack']:6.2f}"
                  + ("  over the limit" if r['numslab'] > 1.5 * r['stack'] else "")
                  for v, r in user.items()]
    return "\n".join(lines)


DESCRIPTION = """numslab: the Linux kernel's SLUB slab allocator for NumPy and Numba.
'bench' prints the slab_bulk_test01 table (ns per alloc+free pair) for numslab and its peers;
'record', 'snapshot' and 'replay' are the SLUB laboratory: record a kernel's kmem trace,
snapshot /sys/kernel/slab, and replay a trace through numslab's SLUB (6.18, 7.0, 7.1, 7.3 or
next), comparing generations and fragmentation remedies; 'maple' runs the maple tree's
prefilled-sheaf workload on generations side by side."""


_positive = labcli.positive_int


def _bulk(text: str) -> int:
    """An argparse type: a bulk size the peers' pools can serve (1..``bench.MAX_BULK``)."""
    n = _positive(text)
    if n > bench.MAX_BULK:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {bench.MAX_BULK} (the "
                                         f"peers' pools)")
    return n


#: The most ``--objects`` takes: the rounds are an int64 of the compiled loops.
MAX_OBJECTS = (1 << 63) - 1


def _objects(text: str) -> int:
    """An argparse type: alloc+free pairs per measurement, 1..``MAX_OBJECTS``.

    A larger one ended in Numba's OverflowError, a traceback, once the first table was being
    measured."""
    n = _positive(text)
    if n > MAX_OBJECTS:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_OBJECTS} (2**63-1: the "
                                         f"compiled loops count rounds in int64)")
    return n


_kernels = labcli.generations(bench.ALL_KERNELS)


def _warning_line(message: Any, category: type, filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Print a warning as ``numslab: warning: ...``."""
    print(f"numslab: warning: {message}", file=sys.stderr if file is None else file)


def _drop_stdout() -> None:
    """Point stdout at /dev/null.

    Python's own flush at exit would fail again on what is still buffered, with a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``numslab`` console script.

    Output cut short by its reader (``| head``) ends the command quietly, as other command-line
    tools do; a Ctrl-C is one line and status 130."""
    try:
        try:
            with warnings.catch_warnings():         # one line each, as the errors (Python's
                warnings.showwarning = _warning_line    # format echoed the warning's source)
                return _main(argv)
        finally:                                    # (what is still buffered, a usage or help
            if sys.stdout is not None:              # text too: here, not at exit; None: the
                sys.stdout.flush()                  # command started with stdout closed)
    except BrokenPipeError:
        _drop_stdout()
        return 1
    except OSError as e:                            # output the system refused (> /dev/full)
        _drop_stdout()
        print(f"numslab: error: cannot write the output: {e.strerror or e}", file=sys.stderr)
        return 1
    except Warning as e:                            # -W error made a warning an error
        print(f"numslab: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:                       # (a bench or replay: a traceback of
        print("numslab: interrupted", file=sys.stderr)  # Numba's compiler in a first run)
        return 130                                  # 128 + SIGINT, as a shell reports it


def _main(argv: list[str] | None) -> int:
    """The ``numslab`` command."""
    ap = argparse.ArgumentParser(prog="numslab", description=DESCRIPTION)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="slab_bulk_test01-shaped table against the peers")
    b.add_argument("--sizes", type=_bulk, nargs="+", default=list(bench.BULK_SIZES),
                   help="bulk sizes (default the kernel test's: "
                        f"{' '.join(map(str, bench.BULK_SIZES))})")
    b.add_argument("--where", choices=("python", "jit", "both", "none"), default="both",
                   help="the bulk tables: called from Python, inside @njit, both or none "
                        "(default both)")
    b.add_argument("--objects", type=_objects, default=1 << 15,
                   help="alloc+free pairs per measurement (rounds of --single; default "
                        "32768)")
    b.add_argument("--repeat", type=_positive, default=5,
                   help="measurements per cell, the best kept (default 5)")
    b.add_argument("--plot", metavar="FILE.png", help="also draw ns per object vs bulk size")
    b.add_argument("--single", action="store_true",
                   help="also the single alloc+free pair inside @njit against a FIFO ring")
    b.add_argument("--calls", action="store_true",
                   help="also the cost of one bulk call from Python against @njit peers")
    b.add_argument("--ratios", action="store_true",
                   help="also the same-run ratio table: numslab, the floor and the peers at "
                        "bulk 16, 64, 250 and 4096 timed in one process, interleaved, best of "
                        f"{bench.RATIO_REPEAT} samples of {bench.RATIO_PAIRS} pairs (its own "
                        "sizes and repeat; inside @njit slab-bulk under each --kernel "
                        "generation beside 7.0's, 6.18 if none)")
    b.add_argument("--kernel", type=_kernels, default=[bench.KERNEL],
                   metavar="7.0,7.1,7.3,next,6.18",
                   help="the SLUB generations to run numslab on, comma-separated "
                        f"(default {bench.KERNEL}); each gets its own tables")
    b.add_argument("--compile", action="store_true",
                   help="also cold starts and a user's compile, in fresh interpreters "
                        "(minutes)")
    labcli.add_commands(sub)
    sub.metavar = "{" + ",".join(sub.choices) + "}"     # (a missing one was "required: cmd")
    args = ap.parse_args(argv)
    if args.cmd != "bench":
        return labcli.run(args)
    if args.where == "none" and not (args.single or args.calls or args.ratios or args.compile):
        b.error("--where none and none of --single, --calls, --ratios, --compile: nothing "
                "to measure")               # (it printed nothing and exited 0)
    if args.plot:                       # before minutes of measuring, not after
        if args.where == "none":
            b.error("--plot draws the bulk tables, which --where none leaves out")
        try:
            written = labcli.check_plot(args.plot)
        except SlabError as e:
            b.error(str(e))
    sizes = tuple(args.sizes)
    twice = sorted({n for n in sizes if sizes.count(n) > 1})
    if twice:                           # (measured twice, printed as two rows)
        b.error(f"--sizes: {', '.join(map(str, twice))} given twice")
    try:
        return _bench(args, sizes, written if args.plot else "")
    except MemoryError as e:            # (a traceback; the lab commands' line, status 1)
        detail = f": {e}" if str(e) else ""
        print(f"numslab bench: out of memory ({type(e).__name__}{detail})", file=sys.stderr)
        return 1
    except SlabError as e:              # (the allocator's own error: one line, as the lab's)
        print(f"numslab bench: {e}", file=sys.stderr)
        return 1


def _bench(args: argparse.Namespace, sizes: tuple[int, ...], written: str) -> int:
    """``numslab bench`` once its arguments are checked: the tables; its exit status."""
    tables = {}
    for kernel in args.kernel:
        # (the floors are 7.0's rules and the stack's: in 7.0's tables only, as in asv)
        floors = () if kernel == bench.KERNEL else bench.RATIO_FLOORS
        if args.where in ("python", "both"):
            tables[f"called from Python, kernel {kernel}"] = bench.bulk_table(
                sizes, tuple(i for i in bench.PY_IMPLS if i not in floors), False, args.objects,
                args.repeat, kernel)
        if args.where in ("jit", "both"):
            tables[f"inside @njit, kernel {kernel}"] = bench.bulk_table(
                sizes, tuple(i for i in bench.JIT_IMPLS if i not in floors), True,
                args.objects, args.repeat, kernel)
    for title, table in tables.items():
        print(format_table(table, sizes, f"ns per alloc+free pair, {title}"))
        print()
    for kernel in args.kernel if args.single else ():
        table = singlebench.single_pair_table(args.objects, args.repeat, kernel=kernel)
        print(format_single(table, kernel))
        print()
    for kernel in args.kernel if args.calls else ():
        print(format_calls(singlebench.call_cost_table(repeat=10 * args.repeat, kernel=kernel),
                           kernel))
        print()
    if args.ratios:                     # (other generations than 7.0 beside it, same run)
        others = tuple(k for k in args.kernel if k != bench.KERNEL) or ("6.18",)
        print(bench.format_ratio_table(bench.bulk_ratio_table(generations=others)))
        print()
    if args.compile:
        cold = {case: coldstart.cold_start(case) for case in coldstart.COLD_CASES
                if case != "main-job" or coldstart.MAIN_JOB.exists()}
        print(format_compile(cold, coldstart.user_compile_table(args.repeat)))
        print()
    if args.plot and tables:
        plot(tables, sizes, args.plot)
        print(f"plot written to {written}")
    return 0


if __name__ == "__main__":   # pragma: no cover
    sys.exit(main())
