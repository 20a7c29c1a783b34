"""The ``numslab`` console script: ``numslab bench`` prints the slab_bulk_test01-shaped tables
(one per caller) with the kernel's published figures, and can draw them; ``--single``,
``--calls`` and ``--compile`` add issue 11's tables. Timings are only checked for being
finite and positive."""
from __future__ import annotations

import io
import json
import lzma
import math
import os
import shutil
import struct
import subprocess
import warnings
import sys

import pytest

import numslab

from numslab.tools import bench, cli, coldstart, labcli, singlebench

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
    assert list(tables) == ["inside @njit, kernel 7.0"]          # the default generation
    check_table(*tables["inside @njit, kernel 7.0"], bench.JIT_IMPLS, (1, 4))


def test_main_bench_python(capsys):
    assert cli.main(["bench", "--sizes", "3", "2", "--where", "python", "--objects", "64",
                     "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    tables = parse_tables(out)
    assert list(tables) == ["called from Python, kernel 7.0"]
    check_table(*tables["called from Python, kernel 7.0"], bench.PY_IMPLS, (3, 2))
    assert "plot written" not in out


def parse_block(text: str, title_start: str) -> list[list[str]]:
    """The rows (split into cells) of the printed block whose title starts so."""
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if lines[0].startswith(title_start):
            title, head, rule, *rows = lines
            assert set(rule) == {"-"}
            return [head.split()] + [r.split() for r in rows]
    raise AssertionError(f"no block titled {title_start!r} in:\n{text}")


def test_format_single():
    text = cli.format_single({"fifo-ring": 2.0, "slab": 30.0, "slab-sheaves": 5.0})
    title, head, rule, *rows = text.splitlines()
    assert title.startswith("ns per round of the single alloc+free pair inside @njit (256 live")
    assert head.split() == ["impl", "ns/round", "x", "fifo-ring"]
    assert rule == "-" * 40
    assert [r.split() for r in rows] == [["fifo-ring", "2.00", "1.00"],
                                         ["slab", "30.00", "15.00"],
                                         ["slab-sheaves", "5.00", "2.50"]]


def test_format_calls():
    table = {"facade": {"alloc_bulk": 60.0, "free_bulk": 50.0},
             "njit-call": {"alloc_bulk": 1200.0, "free_bulk": 1000.0},
             "njit-fastcall": {"alloc_bulk": 50.0, "free_bulk": 40.0}}
    rows = parse_block(cli.format_calls(table), "ns per call from Python")
    assert rows == [["impl", "alloc_bulk", "free_bulk"], ["facade", "60.0", "50.0"],
                    ["njit-call", "1200.0", "1000.0"], ["njit-fastcall", "50.0", "40.0"],
                    ["facade", "/", "njit-call", "0.05", "0.05"],
                    ["facade", "/", "njit-fastcall", "1.20", "1.25"]]
    # without the facade there is no ratio
    assert len(cli.format_calls({"njit-call": table["njit-call"]}).splitlines()) == 4


def test_format_compile():
    cold = {"numba-floor": 0.5, "first-kmalloc": 4.0, "public-api": 15.0}
    user = {"single": {"numslab": 0.3, "stack": 0.2}, "bulk": {"numslab": 0.1, "stack": 0.2}}
    text = cli.format_compile(cold, user)
    assert parse_block(text, "seconds in a fresh interpreter") == [
        ["case", "seconds", "x", "floor", "limit"], ["numba-floor", "0.50", "1.00"],
        ["first-kmalloc", "4.00", "8.00", "10"], ["public-api", "15.00", "30.00", "60"]]
    assert parse_block(text, "seconds to compile a user's function") == [
        ["variant", "numslab", "stack", "ratio"], ["single", "0.300", "0.200", "1.50"],
        ["bulk", "0.100", "0.200", "0.50"]]
    no_floor = cli.format_compile({"first-kmalloc": 4.0}, {})
    assert no_floor.splitlines()[-1].split() == ["first-kmalloc", "4.00", "10"]
    over = cli.format_compile({"first-kmalloc": 12.5}, {"single": {"numslab": 0.4,
                                                                   "stack": 0.2}})
    assert "first-kmalloc      12.50" in over and over.count("over the limit") == 2
    assert cli.format_compile({}, user).startswith("seconds to compile")


@pytest.mark.parametrize("error, says", [
    (MemoryError(), "out of memory (MemoryError)"),
    (MemoryError("cannot allocate 8 EiB"), "out of memory (MemoryError: cannot allocate 8 EiB)"),
    (numslab.OutOfMemoryError("the allocator ran out"),
     "out of memory (OutOfMemoryError: the allocator ran out)"),
    (numslab.InvalidSizeError("memory '1T': cannot reserve"), "memory '1T': cannot reserve")])
def test_main_bench_out_of_memory_is_one_line(capsys, monkeypatch, error, says):
    """A MemoryError in ``numslab bench`` (a measurement past the machine's memory or
    under a limit) was a Python traceback; now one line and status 1, as the lab
    commands'; the allocator's own errors too."""
    def short(*a, **k):
        raise error
    for fn in ("bulk_table", "bulk_ratio_table"):
        monkeypatch.setattr(bench, fn, short)
    for argv in (["--sizes", "1", "--where", "python"], ["--where", "none", "--ratios"]):
        assert cli.main(["bench", *argv]) == 1
        assert capsys.readouterr().err == f"numslab bench: {says}\n"


def test_main_bench_every_kernel(capsys):
    assert cli.main(["bench", "--sizes", "2", "--where", "jit", "--objects", "32",
                     "--repeat", "1", "--kernel", "6.18,7.0,7.1", "--single"]) == 0
    out = capsys.readouterr().out
    tables = parse_tables(out)
    assert list(tables) == ["inside @njit, kernel 6.18", "inside @njit, kernel 7.0",
                            "inside @njit, kernel 7.1"]
    for title, table in tables.items():             # (the floors are 7.0's: in its table)
        impls = bench.JIT_IMPLS if title.endswith("7.0") else \
            tuple(i for i in bench.JIT_IMPLS if i not in bench.RATIO_FLOORS)
        check_table(*table, impls, (2,))
    assert out.count("ns per round of the single") == 3 and ", kernel 7.1" in out


def test_main_bench_single_and_calls(capsys):
    assert cli.main(["bench", "--where", "none", "--single", "--calls", "--objects", "256",
                     "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert parse_tables(out) == {}                      # --where none: no bulk table (and a
    # --plot is refused: test_main_rejects_bad_arguments)
    single = parse_block(out, "ns per round of the single")
    assert [r[0] for r in single[1:]] == list(singlebench.SINGLE_IMPLS)
    assert all(float(x) > 0 for r in single[1:] for x in r[1:])
    assert single[1][2] == "1.00"
    calls = parse_block(out, "ns per call from Python")
    assert [r[0] for r in calls[1:len(singlebench.CALL_IMPLS) + 1]] == list(singlebench.CALL_IMPLS)
    assert len(calls) == 1 + len(singlebench.CALL_IMPLS) + len(singlebench.CALL_IMPLS) - 1
    assert all(math.isfinite(float(x)) and float(x) > 0 for r in calls[1:] for x in r[-2:])


def test_main_bench_compile(capsys, monkeypatch):
    """``--compile`` times every cold case and the user's compile (stubbed here: the real
    ones take minutes, and are the asv suite's ``timeraw`` benchmarks)."""
    asked = []
    monkeypatch.setattr(coldstart, "cold_start", lambda case: asked.append(case) or 1.0 + len(asked))
    monkeypatch.setattr(coldstart, "user_compile_table", lambda repeat: {
        v: {"numslab": 0.3, "stack": 0.2} for v in coldstart.USER_SIM_VARIANTS})
    assert cli.main(["bench", "--where", "none", "--compile", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert asked == list(coldstart.COLD_CASES)
    cold = parse_block(out, "seconds in a fresh interpreter")
    assert [r[0] for r in cold[1:]] == list(coldstart.COLD_CASES)
    user = parse_block(out, "seconds to compile a user's function")
    assert [r[0] for r in user[1:]] == list(coldstart.USER_SIM_VARIANTS)
    assert all(r[-1] == "1.50" for r in user[1:])


def test_main_bench_plot(tmp_path, capsys):
    png = tmp_path / "bench.png"
    assert cli.main(["bench", "--sizes", "1", "2", "--where", "both", "--objects", "32",
                     "--repeat", "1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert list(parse_tables(out)) == ["called from Python, kernel 7.0",
                                       "inside @njit, kernel 7.0"]
    assert f"plot written to {png}" in out
    assert png.stat().st_size > 0
    w, h = png_size(png)                                  # one panel per table
    assert (w, h) == (round(2 * 6.5 * 110), round(4.8 * 110))


def test_plot_of_many_tables_wraps_in_rows_of_three(tmp_path):
    # three kernels and two places drew six panels in one row, 4290 px wide
    table = {"slab-bulk": {1: 10.0, 2: 8.0}, "jit-stack": {1: 2.0, 2: 1.5}}
    fig = cli.plot({f"t{k}": table for k in range(4)}, (1, 2), str(tmp_path / "p.png"))
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["t0", "t1", "t2", "t3"]
    assert len(fig.axes) == 6 and png_size(tmp_path / "p.png") == (
        round(3 * 6.5 * 110), round(2 * 4.8 * 110))


def test_plot_one_panel(tmp_path):
    png = tmp_path / "one.png"
    table = {"deque": {1: 50.0, 8: 20.0}, "slab-bulk": {1: 30.0, 8: 6.0}}
    cli.plot({"called from Python": table}, (1, 8), str(png))
    assert png_size(png) == (round(6.5 * 110), round(4.8 * 110))


def test_plot_keeps_one_colour_per_implementation(tmp_path):
    tables = {"called from Python": {"deque": {1: 5.0}, "slab-bulk": {1: 3.0},
                                     "slab-jit-round": {1: 1.0}},
              "inside @njit": {"jit-stack-single": {1: 2.0}, "slab-bulk": {1: 4.0},
                               "floor-7.0": {1: 1.5}}}
    fig = cli.plot(tables, (1,), str(tmp_path / "c.png"))
    lines = [{ln.get_label(): ln for ln in ax.get_lines()} for ax in fig.axes]
    assert lines[0]["slab-bulk"].get_color() == lines[1]["slab-bulk"].get_color()
    colours = [ln.get_color() for ln in [*lines[0].values(), *lines[1].values()]
               if not ln.get_label().startswith("kernel")]
    assert len(set(map(str, colours))) == 5               # 5 implementations, 5 colours
    assert lines[0]["slab-jit-round"].get_linestyle() == ":"   # the floors, dotted
    assert lines[1]["floor-7.0"].get_linestyle() == ":"
    assert lines[0]["slab-bulk"].get_linestyle() == "-"


@pytest.mark.parametrize("argv", [["frobnicate"], [], ["bench", "--where", "gpu"],
                                  ["bench", "--parts"],
                                  ["bench", "--sizes", "x"], ["bench", "--sizes", "0"],
                                  ["bench", "--repeat", "0"], ["bench", "--objects", "-4"],
                                  ["bench", "--kernel", "5.4"], ["bench", "--kernel", ","],
                                  ["bench", "--kernel", "7.0,6.18,7.0"],
                                  ["maple", "--kernel", "next,next"],
                                  ["bench", "--sizes", "65537"],
                                  ["bench", "--sizes", "4", "16", "4"],   # (two rows of 4)
                                  # an int64 of the compiled loops: Numba's OverflowError
                                  ["bench", "--objects", str(1 << 63)],
                                  # no bulk table to draw: nothing was written, nothing said
                                  ["bench", "--where", "none", "--plot", "x.png"],
                                  # nothing to measure: it printed nothing and exited 0
                                  ["bench", "--where", "none"]])
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
    check_table(*tables["inside @njit, kernel 7.0"], bench.JIT_IMPLS, (2,))
    bad = subprocess.run(cmd + ["frobnicate"], check=False, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    # python -m numslab is the same command line (there was no numslab/__main__.py)
    m = subprocess.run([sys.executable, "-m", "numslab", "--help"], check=False,
                       capture_output=True, text=True, timeout=300)
    assert m.returncode == 0 and "usage: numslab" in m.stdout and "bench" in m.stdout


def test_plot_without_matplotlib_fails_before_measuring(monkeypatch, capsys):
    import sys as _sys
    monkeypatch.setitem(_sys.modules, "matplotlib", None)      # import matplotlib fails
    measured = []
    monkeypatch.setattr(bench, "bulk_table", lambda *a, **k: measured.append(a) or {})
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--plot", "x.png"])
    assert e.value.code == 2 and not measured
    assert "--plot needs matplotlib" in capsys.readouterr().err
    # the replay's --plot names the extras as well
    assert cli.main(["replay", "x.txt", "--plot", "x.png"]) == 2
    assert "pip install matplotlib (or numslab's examples, bench or test extra)" in \
        capsys.readouterr().err


def test_a_plot_file_that_cannot_be_written_fails_before_measuring(tmp_path, monkeypatch,
                                                                   capsys):
    """``--plot d.png`` naming a folder (or a read-only place) passed the checks and failed
    when the figure was saved, after every table was measured, as "cannot write the
    output"; now a usage error first, and a file the check opens is left as it was."""
    measured = []
    monkeypatch.setattr(bench, "bulk_table", lambda *a, **k: measured.append(a) or {})
    folder = tmp_path / "d.png"
    folder.mkdir()
    for bad in (folder, f"{tmp_path / 'noext'}/"):     # (the latter: noext/.png)
        with pytest.raises(SystemExit) as e:
            cli.main(["bench", "--plot", str(bad)])
        assert e.value.code == 2 and not measured
        assert "cannot write" in capsys.readouterr().err
    assert cli.main(["replay", str(tmp_path / "none.txt"), "--plot", str(folder)]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert labcli.check_plot(str(tmp_path / "new")) == str(tmp_path / "new.png")
    assert not (tmp_path / "new.png").exists()              # the probe's file removed
    old = tmp_path / "old.png"
    old.write_bytes(b"kept")
    assert labcli.check_plot(str(old)) == str(old) and old.read_bytes() == b"kept"


@pytest.mark.filterwarnings("default::UserWarning")     # the command under default filters
def test_replay_warnings_are_one_line_and_an_error_under_w_error(tmp_path, capsys):
    """A replay's warning (a timestamp stepping back) printed Python's format, echoing the
    source line that warned; under ``-W error`` it ended the command with a traceback.
    Now one ``numslab: warning:`` line, or one ``numslab: error:`` line and status 1."""
    def alloc(ts, ptr):
        return (f"  t-1 [000] ..... {ts}: kmem_cache_alloc: call_site=x+0x1/0x2 "
                f"ptr={ptr:016x} name=dentry bytes_req=192 bytes_alloc=192 "
                f"gfp_flags=GFP_KERNEL node=-1\n")
    lines = [alloc(f"100.{1 + i:06d}", 0x3000 + 256 * i) for i in range(40)]
    lines.insert(30, alloc("99.000000", 0x1000))
    trace = tmp_path / "reordered.txt"
    trace.write_text("".join(lines))
    assert cli.main(["replay", str(trace), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [e for e in err if e.startswith(f"numslab: warning: {trace}, line 31: its "
                                                  "timestamp 99.000000 is earlier")] and err
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli.main(["replay", str(trace), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"numslab: error: UserWarning: {trace}, line 31")


def test_output_the_system_refuses_is_one_line_and_status_1(tmp_path):
    """``numslab replay X > /dev/full`` printed a traceback (OSError ENOSPC)."""
    trace = tmp_path / "t.txt"
    trace.write_text("".join(
        f"  t-1 [000] ..... 100.{1 + i:06d}: kmem_cache_alloc: call_site=x+0x1/0x2 "
        f"ptr={0x3000 + 256 * i:016x} name=dentry bytes_req=192 bytes_alloc=192 "
        "gfp_flags=GFP_KERNEL node=-1\n" for i in range(40)))
    with open("/dev/full", "wb") as full:
        p = subprocess.run([sys.executable, "-m", "numslab", "replay", str(trace),
                            "--no-progress"], stdout=full, stderr=subprocess.PIPE, text=True,
                           check=False, timeout=600)
    assert p.returncode == 1
    assert p.stderr.strip() == "numslab: error: cannot write the output: No space left on " \
        "device"


def test_a_lab_error_names_its_command_once(tmp_path, capsys):
    """``numslab snapshot: snapshot: cannot list ...``: the prefix was doubled."""
    assert cli.main(["snapshot", "--slab-root", str(tmp_path / "none"),
                     "-o", str(tmp_path / "s.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("numslab snapshot: cannot list") and "snapshot: snapshot" not in err


def test_a_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    # a bench or replay interrupted ended in a traceback (Numba's compiler's, in a first run)
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(bench, "bulk_table", interrupted)
    assert cli.main(["bench", "--sizes", "2", "--where", "jit"]) == 130
    assert capsys.readouterr().err == "numslab: interrupted\n"


def test_no_command_names_the_commands(capsys):
    # it said "the following arguments are required: cmd", the parser's own name
    with pytest.raises(SystemExit) as e:
        cli.main([])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.rstrip().endswith("required: {bench,replay,record,snapshot,maple}"), err


def test_a_replay_s_plot_is_written_when_its_reader_stops_early(tmp_path, monkeypatch):
    """``numslab replay t --compare ... --plot p.png | head`` wrote no plot, and said nothing:
    the text came first and the closed pipe ended the command."""
    lines = [f"  t-1 [000] ..... 100.{1 + i:06d}: kmem_cache_alloc: call_site=x+0x1/0x2 "
             f"ptr={0x3000 + 256 * i:016x} name=dentry bytes_req=192 bytes_alloc=192 "
             f"gfp_flags=GFP_KERNEL node=-1\n" for i in range(40)]
    trace, png = tmp_path / "t.txt", tmp_path / "p.png"
    trace.write_text("".join(lines))

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(sys, "stdout", Closed())
    monkeypatch.setattr(cli, "_drop_stdout", lambda: None)
    assert cli.main(["replay", str(trace), "--compare", "7.0,6.18", "--no-progress",
                     "--plot", str(png)]) == 1
    assert png.stat().st_size > 0


def test_a_trace_on_standard_input_through_the_command(tmp_path):
    """``numslab replay -``: the trace read from standard input, in a fresh interpreter.

    (Here rather than in ``test_lab_trace.py``, which runs first on a cold suite: its child
    compiled the engine while the other worker did.)"""
    from lab_oracle import DATA, TRACES
    from numslab.lab.trace import parse_bytes
    raw = lzma.decompress((DATA / TRACES["net"]).read_bytes())
    r = subprocess.run([sys.executable, "-m", "numslab.tools.cli", "replay", "-", "--json",
                        "--kernel", "6.18"], input=raw, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    j = json.loads(r.stdout)
    assert j["lines"] == len(parse_bytes(raw))
    # its reader gone (``| head -1``), the command ended in a BrokenPipeError traceback
    # (the JSON, 18 kB, is more than the stdout buffer holds)
    gone, w = os.pipe()
    os.close(gone)
    r = subprocess.run([sys.executable, "-m", "numslab.tools.cli", "replay", "-", "--json",
                        "--kernel", "6.18"], input=raw, stdout=w, stderr=subprocess.PIPE,
                       timeout=300)
    os.close(w)
    assert r.returncode == 1 and b"Traceback" not in r.stderr, r.stderr.decode()[-2000:]


def test_a_replay_out_of_memory_is_one_line(monkeypatch, capsys):
    """``numslab replay - < /dev/zero`` under a memory limit (or a trace past the machine's
    memory) ended in a MemoryError traceback.

    Standard input is read a chunk at a time now: /dev/zero is refused at its 64 MiB "line",
    in memory below the limit; a run past the memory is one line, status 1."""
    import resource
    limit = 2 << 30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with open("/dev/zero", "rb") as zero:
        p = subprocess.run([sys.executable, "-m", "numslab", "replay", "-", "--no-progress"],
                           stdin=zero, capture_output=True, text=True, timeout=300,
                           preexec_fn=cap, env={**os.environ, "NUMSLAB_PREWARM": "0"})
    assert p.returncode == 2 and p.stderr == (
        "numslab replay: standard input: a line of more than 64 MiB (no line break): not "
        "trace text\n"), p.stderr

    def short(*a, **k):
        raise MemoryError
    monkeypatch.setattr(cli.labcli, "replay", short)
    assert cli.main(["replay", "-", "--no-progress"]) == 1
    assert capsys.readouterr().err == "numslab replay: out of memory (MemoryError)\n"


@pytest.mark.parametrize("argv, says", [
    (["replay", "", "--no-progress"],
     "numslab replay: error: trace: an empty file name (give a file, or - for standard "
     "input)"),
    (["replay", "-", "--snapshot", "", "--no-progress"],
     "numslab replay: error: --snapshot: an empty file name (give a file, or - for standard "
     "input)"),
    (["snapshot", "-o", ""],
     "numslab snapshot: error: -o: an empty file name (give a file, or - for standard "
     "output)"),
    (["record", "-o", "", "--seconds", "0"],
     "numslab record: error: -o: an empty file name (give a file)")])
def test_an_empty_file_name_is_a_usage_error(argv, says, capsys):
    """An empty file name opened the current folder: "cannot read trace : Is a directory",
    "cannot write : Is a directory" (status 1 for the snapshot's)."""
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == says + "\n"
    with pytest.raises(numslab.SlabError, match="^cannot read trace '': an empty file name$"):
        numslab.replay("")
    with pytest.raises(numslab.SlabError, match="^snapshot '': an empty file name$"):
        numslab.replay(b"", snapshot="")


def test_a_replay_compare_prints_the_side_by_side_not_every_table(tmp_path, capsys):
    """``numslab replay t --compare 6.18,7.0`` printed each configuration's whole slabinfo
    table before the side-by-side one (176 lines for three on the shared trace); each
    configuration's own table comes with ``--all`` now."""
    lines = [f"  t-1 [000] ..... 100.{1 + i:06d}: kmem_cache_alloc: call_site=x+0x1/0x2 "
             f"ptr={0x3000 + 256 * i:016x} name=dentry bytes_req=192 bytes_alloc=192 "
             f"gfp_flags=GFP_KERNEL node=-1\n" for i in range(40)]
    trace = tmp_path / "t.txt"
    trace.write_text("".join(lines))
    head = "Name                   Objects Objsize"
    assert cli.main(["replay", str(trace), "--compare", "7.0,6.18", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count(head) == 0 and out.count(": 40 lines, 40 replayed") == 2, out
    assert "cache (slab bytes %Ef)" in out and "dentry" in out
    assert cli.main(["replay", str(trace), "--compare", "7.0,6.18", "--no-progress",
                     "--all"]) == 0
    assert capsys.readouterr().out.count(head) == 2
    assert cli.main(["replay", str(trace), "--no-progress"]) == 0      # one: its table
    assert capsys.readouterr().out.count(head) == 1
