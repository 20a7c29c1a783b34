"""The ``numslab`` command: ``numslab bench`` prints the ``slab_bulk_test01``-shaped table
(ns per alloc+free pair) for numslab and its peers, with the kernel's published figures."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from . import bench

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def format_table(table: dict[str, dict[int, float]], sizes: tuple[int, ...],
                 title: str) -> str:
    """A text table: one row per bulk size, one column per implementation, then the
    kernel's published SLUB figure (Brouer 2015, i7-4790K) where there is one."""
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
FLOORS = ("slab-jit-round",)


def plot(tables: dict[str, dict[str, dict[int, float]]], sizes: tuple[int, ...],
         path: str) -> "Figure":
    """Draw ns per object against bulk size for every implementation, one colour per
    implementation in every panel, floors dotted (needs matplotlib); returns the figure."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure     # no pyplot: the process's backend is left alone
    fig = Figure(figsize=(6.5 * len(tables), 4.8))
    axes = fig.subplots(1, len(tables), squeeze=False)
    names = list(dict.fromkeys(i for table in tables.values() for i in table))
    tab20 = colormaps["tab20"]                # one colour per implementation in every panel
    colour = {n: tab20((2 * k) % 20 + (2 * k) // 20) for k, n in enumerate(names)}
    for ax, (title, table) in zip(axes[0], tables.items()):
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


def format_parts(parts: dict[str, float]) -> str:
    """A text table of :func:`numslab.bench.slab_path_parts`: ns per object of each part
    and its ratio to the jitted stack's whole alloc+free pair."""
    stack = parts["jit-stack pair"]
    lines = ["ns per object of the parts of a bulk round of 4096, inside @njit",
             f"{'part':<15} {'ns/object':>10} {'x stack pair':>13}", "-" * 40]
    lines += [f"{k:<15} {v:10.2f} {v / stack:13.2f}" for k, v in parts.items()]
    return "\n".join(lines)


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return n


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``numslab`` console script."""
    ap = argparse.ArgumentParser(prog="numslab", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="slab_bulk_test01-shaped table against the peers")
    b.add_argument("--sizes", type=_positive, nargs="+", default=list(bench.BULK_SIZES))
    b.add_argument("--where", choices=("python", "jit", "both"), default="both",
                   help="call from Python, from inside @njit, or both")
    b.add_argument("--objects", type=_positive, default=1 << 15,
                   help="alloc+free pairs per measurement")
    b.add_argument("--repeat", type=_positive, default=5)
    b.add_argument("--plot", metavar="FILE.png", help="also draw ns per object vs bulk size")
    b.add_argument("--parts", action="store_true",
                   help="also time, part by part, what a bulk round of 4096 must do")
    args = ap.parse_args(argv)
    sizes = tuple(args.sizes)
    tables = {}
    if args.where in ("python", "both"):
        tables["called from Python"] = bench.bulk_table(sizes, bench.PY_IMPLS, False,
                                                        args.objects, args.repeat)
    if args.where in ("jit", "both"):
        tables["inside @njit"] = bench.bulk_table(sizes, bench.JIT_IMPLS, True,
                                                  args.objects, args.repeat)
    for title, table in tables.items():
        print(format_table(table, sizes, f"ns per alloc+free pair, {title}"))
        print()
    if args.parts:
        print(format_parts(bench.slab_path_parts(repeat=args.repeat)))
        print()
    if args.plot:
        plot(tables, sizes, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":   # pragma: no cover
    sys.exit(main())
