"""The ``numslab`` console script: ``numslab bench`` prints the slab_bulk_test01-shaped tables
(one per caller) with the kernel's published figures, and can draw them. Timings are only
checked for being finite and positive."""
from __future__ import annotations

import math
import shutil
import struct
import subprocess
import sys

import pytest

from numslab.tools import bench, cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- helpers ------------------------------------------------------------------------------
def parse_tables(text: str) -> dict[str, tuple[list[str], dict[int, list[str]]]]:
    """The tables ``numslab bench`` printed: title -> (implementations, size -> cells)."""
    out = {}
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if not lines[0].startswith("ns per alloc+free pair, "):
            continue
        title, head, rule, *rows = lines
        cols = head.split()
        assert cols[0] == "bulk" and cols[-1] == "kernel(2015)"
        assert set(rule) == {"-"} and len(rule) == len(head)
        out[title.removeprefix("ns per alloc+free pair, ")] = (
            cols[1:-1], {int(r.split()[0]): r.split()[1:] for r in rows})
    return out


def check_table(impls: list[str], rows: dict[int, list[str]], want_impls, sizes) -> None:
    """Every implementation a column, every size a row of positive timings, then the kernel
    figure where there is one."""
    assert impls == list(want_impls)
    assert list(rows) == list(sizes)
    for b, cells in rows.items():
        ref = bench.KERNEL_NS.get(b)
        assert len(cells) == len(impls) + (ref is not None)
        assert all(math.isfinite(float(x)) and float(x) > 0 for x in cells[:len(impls)])
        if ref is not None:
            assert cells[-1] == f"{ref:.1f}"


def png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ---- format_table ------------------------------------------------------------------------------
TABLE = {"deque": {1: 101.25, 3: 7.0, 16: 2.5}, "slab-bulk": {1: 9.0, 3: 8.5, 16: 1234.56}}


def test_format_table_has_every_impl_and_the_kernel_column():
    assert 3 not in bench.KERNEL_NS and {1, 16} <= set(bench.KERNEL_NS)
    lines = cli.format_table(TABLE, (1, 3, 16), "my title").splitlines()
    title, head, rule, r1, r3, r16 = lines
    assert title == "my title"
    assert head.split() == ["bulk", "deque", "slab-bulk", "kernel(2015)"]
    assert rule == "-" * len(head)
    assert r1.split() == ["1", "101.2", "9.0", f"{bench.KERNEL_NS[1]:.1f}"]
    assert r16.split() == ["16", "2.5", "1234.6", f"{bench.KERNEL_NS[16]:.1f}"]
    assert r3.split() == ["3", "7.0", "8.5"]            # no published figure: a blank
    assert r3.endswith(" " * 13)
    assert all(len(r) == len(head) for r in (r1, r3, r16))   # columns line up


def test_format_table_rows_follow_the_sizes_asked_for():
    lines = cli.format_table(TABLE, (16, 1), "t").splitlines()
    assert [int(r.split()[0]) for r in lines[3:]] == [16, 1]
    assert len(cli.format_table(TABLE, (), "t").splitlines()) == 3
    with pytest.raises(KeyError):
        cli.format_table(TABLE, (2,), "t")               # a size that was not measured


def test_format_table_columns_line_up_with_long_names():
    text = cli.format_table({"jit-stack-single": {1: 1.0}, "slab-bulk": {1: 2.0}}, (1,), "t")
    _, head, _, row = text.splitlines()
    assert len(row) == len(head)


# ---- main ------------------------------------------------------------------------------------
def test_main_bench_jit(capsys):
    assert cli.main(["bench", "--sizes", "1", "4", "--where", "jit", "--objects", "64",
                     "--repeat", "1"]) == 0
    tables = parse_tables(capsys.readouterr().out)
    assert list(tables) == ["inside @njit"]
    check_table(*tables["inside @njit"], bench.JIT_IMPLS, (1, 4))


def test_main_bench_python(capsys):
    assert cli.main(["bench", "--sizes", "3", "2", "--where", "python", "--objects", "64",
                     "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    tables = parse_tables(out)
    assert list(tables) == ["called from Python"]
    check_table(*tables["called from Python"], bench.PY_IMPLS, (3, 2))
    assert "plot written" not in out


def test_main_bench_parts(capsys):
    assert cli.main(["bench", "--sizes", "1", "--where", "jit", "--objects", "16",
                     "--repeat", "1", "--parts"]) == 0
    out = capsys.readouterr().out
    assert list(parse_tables(out)) == ["inside @njit"]
    rows = {}
    for line in out.split("ns per object of the parts")[1].splitlines()[3:]:
        if line.strip():
            name, ns, ratio = line.rsplit(None, 2)
            rows[name] = (float(ns), float(ratio))
    assert list(rows) == list(bench.PARTS)
    assert rows["jit-stack pair"][1] == 1.0
    for name, (ns, ratio) in rows.items():
        assert ratio == pytest.approx(ns / rows["jit-stack pair"][0], rel=0.02, abs=0.02)
    assert rows["parts"][0] == pytest.approx(sum(rows[k][0] for k in bench.PARTS[1:-1]),
                                             abs=0.03)


def test_format_parts():
    text = cli.format_parts({"jit-stack pair": 2.0, "check": 3.0, "parts": 7.0})
    assert text.splitlines()[3:] == ["jit-stack pair        2.00          1.00",
                                     "check                 3.00          1.50",
                                     "parts                 7.00          3.50"]


def test_main_bench_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    assert cli.main(["bench", "--sizes", "1", "2", "--where", "both", "--objects", "32",
                     "--repeat", "1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert list(parse_tables(out)) == ["called from Python", "inside @njit"]
    assert f"plot written to {png}" in out
    assert png.stat().st_size > 0
    w, h = png_size(png)                                  # one panel per table
    assert (w, h) == (round(2 * 6.5 * 110), round(4.8 * 110))


def test_plot_one_panel(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "one.png"
    table = {"deque": {1: 50.0, 8: 20.0}, "slab-bulk": {1: 30.0, 8: 6.0}}
    cli.plot({"called from Python": table}, (1, 8), str(png))
    assert png_size(png) == (round(6.5 * 110), round(4.8 * 110))


def test_plot_keeps_one_colour_per_implementation(tmp_path):
    pytest.importorskip("matplotlib")
    tables = {"called from Python": {"deque": {1: 5.0}, "slab-bulk": {1: 3.0},
                                     "slab-jit-round": {1: 1.0}},
              "inside @njit": {"jit-stack-single": {1: 2.0}, "slab-bulk": {1: 4.0}}}
    fig = cli.plot(tables, (1,), str(tmp_path / "c.png"))
    lines = [{ln.get_label(): ln for ln in ax.get_lines()} for ax in fig.axes]
    assert lines[0]["slab-bulk"].get_color() == lines[1]["slab-bulk"].get_color()
    colours = [ln.get_color() for ln in [*lines[0].values(), *lines[1].values()]
               if not ln.get_label().startswith("kernel")]
    assert len(set(map(str, colours))) == 4               # 4 implementations, 4 colours
    assert lines[0]["slab-jit-round"].get_linestyle() == ":"   # a floor, dotted
    assert lines[0]["slab-bulk"].get_linestyle() == "-"


@pytest.mark.parametrize("argv", [["frobnicate"], [], ["bench", "--where", "gpu"],
                                  ["bench", "--sizes", "x"], ["bench", "--sizes", "0"],
                                  ["bench", "--repeat", "0"], ["bench", "--objects", "-4"]])
def test_main_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert "usage: numslab" in capsys.readouterr().err


def test_console_script():
    exe = shutil.which("numslab")
    cmd = [exe] if exe else [sys.executable, "-m", "numslab.tools.cli"]
    p = subprocess.run(cmd + ["bench", "--sizes", "2", "--where", "jit", "--objects", "32",
                              "--repeat", "1"], check=False, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    tables = parse_tables(p.stdout)
    check_table(*tables["inside @njit"], bench.JIT_IMPLS, (2,))
    bad = subprocess.run(cmd + ["frobnicate"], check=False, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
