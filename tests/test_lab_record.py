"""Recording and snapshots: a real recording on this machine (root), tracefs left as it was
however the recording ends (a fake tracefs directory), clear errors, and the commands."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

import numslab
from numslab.lab import record as rec
from numslab.lab.replay import load_snapshot
from numslab.lab.trace import read_trace
from numslab.tools import cli

from lab_oracle import DATA, SNAPSHOTS, TRACES

TRACEFS = Path(rec.TRACEFS)


def _state(root: Path) -> dict[str, str]:
    """The tracefs settings a recording touches."""
    out = {"on": (root / "tracing_on").read_text().strip(),
           "buf": (root / "buffer_size_kb").read_text().strip()}
    for e in rec.EVENTS:
        out[e] = (root / "events" / "kmem" / e / "enable").read_text().strip()
    return out


def _fake_tracefs(tmp_path: Path) -> Path:
    """A directory shaped like tracefs (regular files), events off, tracing on."""
    root = tmp_path / "tracing"
    for e in rec.EVENTS:
        d = root / "events" / "kmem" / e
        d.mkdir(parents=True)
        (d / "enable").write_text("0\n")
    (root / "tracing_on").write_text("1\n")
    (root / "buffer_size_kb").write_text("1408\n")
    (root / "trace").write_text("")
    return root


@pytest.mark.skipif(os.geteuid() != 0, reason="recording needs root")
def test_a_real_recording_replays_and_leaves_tracing_as_it_was(tmp_path):
    mounted = (TRACEFS / "events").is_dir()
    rec.ensure_tracefs(TRACEFS)     # mounted as record mounts it, unmounted again after
    try:
        _record_and_replay(tmp_path)
    finally:
        if not mounted:             # (it was left mounted: every later run found tracefs)
            subprocess.run(["umount", str(TRACEFS)], check=True)
    assert (TRACEFS / "events").is_dir() == mounted


def _record_and_replay(tmp_path):
    before = _state(TRACEFS)
    out = tmp_path / "rec.txt.xz"
    info = rec.record(out, ["ls", "-R", str(Path(numslab.__file__).parent)], buffer_kb=4096)
    after = _state(TRACEFS)
    # the size as the kernel took it back: a buffer never used reads "7 (expanded: 1408)"
    # (restored as 1408: its first use expanded it, which nothing undoes; recording in an
    # instance of its own, record leaves a top-level buffer never used as it was, still
    # reading so after), and a size is rounded up to whole ring-buffer pages (4080 bytes: 1408
    # reads back 1410)
    def kb(text):
        was = re.fullmatch(r"\d+ \(expanded: (\d+)\)", text)
        return int(was.group(1)) if was else int(text)
    assert 0 <= kb(after.pop("buf")) - kb(before["buf"]) < 4, (before, _state(TRACEFS))
    assert after == {k: v for k, v in before.items() if k != "buf"}
    assert info["returncode"] == 0 and info["lines"] > 0
    tr = read_trace(out)
    assert len(tr) == info["lines"]
    r = numslab.replay(out, kernel="7.0")
    assert r.replayed + sum(r.skipped.values()) == r.lines == info["lines"]


@pytest.mark.skipif(os.geteuid() != 0, reason="recording needs root")
def test_a_recording_leaves_the_top_level_buffer_to_its_other_users(tmp_path):
    """``record`` traced in the top-level ring buffer and emptied it before and after: what
    another user had traced there (another session's ``numslab record`` on a shared machine)
    was gone, with no ``LOST`` line. It now records in an instance of its own, removed after."""
    mounted = (TRACEFS / "events").is_dir()
    rec.ensure_tracefs(TRACEFS)
    try:
        on = (TRACEFS / "tracing_on").read_text().strip()
        mark = f"numslab-test-mark-{os.getpid()}-{os.urandom(4).hex()}"
        (TRACEFS / "tracing_on").write_text("1\n")
        try:
            (TRACEFS / "trace_marker").write_text(mark)
        finally:
            (TRACEFS / "tracing_on").write_text(on + "\n")
        out = tmp_path / "r.txt"
        info = rec.record(out, [sys.executable, "-c", "open('/dev/null').close()"],
                          buffer_kb=1024)
        assert mark in (TRACEFS / "trace").read_text(errors="replace")
        assert info["lines"] > 0 and mark not in out.read_text()
        assert not (TRACEFS / "instances" / f"numslab-{os.getpid()}").exists()
    finally:
        if not mounted:
            subprocess.run(["umount", str(TRACEFS)], check=True)


def test_the_fake_tracefs_is_restored_after_the_command_fails(tmp_path):
    root = _fake_tracefs(tmp_path)
    before = _state(root)
    info = rec.record(tmp_path / "out.txt", ["sh", "-c", "exit 3"], root=root, buffer_kb=512)
    assert info["returncode"] == 3
    assert _state(root) == before
    # and while it ran the events were on: run a command that copies the state
    cmd = ["sh", "-c", f"cat {root}/events/kmem/kmalloc/enable {root}/tracing_on "
                       f"{root}/buffer_size_kb > {tmp_path}/during"]
    rec.record(tmp_path / "out.txt", cmd, root=root, buffer_kb=512)
    assert (tmp_path / "during").read_text().split() == ["1", "1", "512"]
    assert _state(root) == before


def test_the_output_options_and_clock_are_the_readers_while_recording(tmp_path):
    """A tracefs set to print otherwise than its defaults (``options/latency-format``,
    ``context-info`` off, ``raw``, a ``trace_clock`` of counts) made ``numslab record`` write
    a trace ``numslab replay`` refused ("no '[cpu]' field", "no 'seconds.micros:'
    timestamp", as this machine's kernel printed them); a clock that prints seconds is
    kept. Each is restored after."""
    root = _fake_tracefs(tmp_path)
    names = [f for f, _ in rec.FORMAT]
    for f, default in rec.FORMAT:
        (root / f).parent.mkdir(exist_ok=True)
        (root / f).write_text(f"{1 - int(default)}\n")
    (root / "options" / "fields").unlink()          # (an option this kernel lacks)
    names.remove("options/fields")
    for clock, during in (("x86-tsc", "local"), ("mono", "mono")):
        (root / "trace_clock").write_text(f"local global counter [{clock}] mono\n")
        before = {f: (root / f).read_text() for f in [*names, "trace_clock"]}
        cmd = ["sh", "-c", "cat " + " ".join(str(root / f) for f in [*names, "trace_clock"])
               + f" > {tmp_path}/during"]
        rec.record(tmp_path / "out.txt", cmd, root=root, buffer_kb=512)
        want = [v for f, v in rec.FORMAT if f in names]
        assert (tmp_path / "during").read_text().split()[:len(want)] == want
        assert (tmp_path / "during").read_text().split()[len(want):] == (
            [during] if during == "local" else before["trace_clock"].split())
        assert {f: (root / f).read_text() for f in before} == {
            **before, "trace_clock": f"{clock}\n" if during == "local" else
            before["trace_clock"]}


def test_settings_that_leave_events_out_are_named(tmp_path):
    """An event filter, ``set_event_pid`` or a ``tracing_cpumask`` left from other work made
    a recording of some of the events only, with no word said."""
    root = _fake_tracefs(tmp_path)
    (root / "events" / "kmem" / "kmalloc" / "filter").write_text("bytes_req > 1000\n")
    (root / "events" / "kmem" / "kfree" / "filter").write_text("none\n")
    (root / "set_event_pid").write_text("123\n")
    (root / "tracing_cpumask").write_text("0\n")
    with pytest.warns(UserWarning, match=r"^record: events/kmem/kmalloc/filter 'bytes_req > "
                      r"1000'; set_event_pid '123'; tracing_cpumask 0 \(of CPUs [0-9a-f]+\): "
                      r"the recording holds only"):
        rec.record(tmp_path / "out.txt", ["true"], root=root, buffer_kb=512)
    (root / "events" / "kmem" / "kmalloc" / "filter").write_text("none\n")
    (root / "set_event_pid").write_text("")
    (root / "tracing_cpumask").write_text(f"{(1 << os.cpu_count()) - 1:x}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec.record(tmp_path / "out.txt", ["true"], root=root, buffer_kb=512)


def test_the_cpumask_is_checked_against_the_cpus_online(tmp_path, monkeypatch):
    """``tracing_cpumask`` was checked against the first ``os.cpu_count()`` CPUs: with CPUs 0
    and 2 online (1 offline) a mask of both was named as leaving events out, and a mask of 0
    and 1, which leaves CPU 2's out, was not."""
    root = _fake_tracefs(tmp_path)
    (tmp_path / "online").write_text("0,2\n")
    monkeypatch.setattr(rec, "CPU_ONLINE", str(tmp_path / "online"))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    (root / "tracing_cpumask").write_text("5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec.record(tmp_path / "out.txt", ["true"], root=root, buffer_kb=512)
    (root / "tracing_cpumask").write_text("3\n")
    with pytest.warns(UserWarning, match=r"tracing_cpumask 3 \(of CPUs 5\)"):
        rec.record(tmp_path / "out.txt", ["true"], root=root, buffer_kb=512)


def test_a_buffer_size_tracefs_prints_in_another_form_is_restored_as_it_takes_it(tmp_path):
    # before its first use the kernel prints "7 (expanded: 1408)", and "X" when CPUs differ;
    # writing either back is refused (EINVAL), so the buffer kept the recording's size:
    # restored as the expanded size, and per CPU
    root = _fake_tracefs(tmp_path)
    (root / "buffer_size_kb").write_text("7 (expanded: 1408)\n")
    rec.record(tmp_path / "out.txt", ["true"], root=root, buffer_kb=512)
    assert (root / "buffer_size_kb").read_text() == "1408\n"
    (root / "buffer_size_kb").write_text("X\n")
    for cpu, kb in ((0, "1408"), (1, "4096")):
        (root / "per_cpu" / f"cpu{cpu}").mkdir(parents=True)
        (root / "per_cpu" / f"cpu{cpu}" / "buffer_size_kb").write_text(kb + "\n")
    spread = f"for f in {root}/per_cpu/cpu*/buffer_size_kb; do echo 512 > $f; done"
    rec.record(tmp_path / "out.txt", ["sh", "-c", spread], root=root, buffer_kb=512)
    assert [(root / "per_cpu" / f"cpu{c}" / "buffer_size_kb").read_text() for c in (0, 1)] \
        == ["1408\n", "4096\n"]


def test_a_command_that_cannot_run_is_a_clear_error_and_tracefs_is_restored(tmp_path):
    root = _fake_tracefs(tmp_path)
    before = _state(root)
    with pytest.raises(rec.RecordError, match="cannot run '/nonexistent/cmd'"):
        rec.record(tmp_path / "out.txt", ["/nonexistent/cmd"], root=root, buffer_kb=512)
    assert _state(root) == before


def test_record_command_keeps_the_commands_own_double_dash(tmp_path, capsys):
    """Only the separator after the options is numslab's: a ``--`` inside the command is
    the command's."""
    from numslab.tools import cli
    root = _fake_tracefs(tmp_path)
    rc = cli.main(["record", "-o", str(tmp_path / "t.txt"), "--tracefs", str(root), "--",
                   "sh", "-c", f'echo "$*" > {tmp_path}/args', "sh", "--", "a"])
    assert rc == 0
    assert (tmp_path / "args").read_text().split() == ["--", "a"]
    rc = cli.main(["record", "-o", str(tmp_path / "t.txt"), "--tracefs", str(root), "--",
                   "/nonexistent/cmd"])
    assert rc == 1 and "cannot run" in capsys.readouterr().err


def test_an_interrupted_recording_restores_tracefs(tmp_path, monkeypatch):
    root = _fake_tracefs(tmp_path)
    before = _state(root)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rec.subprocess, "run", boom)
    # Ctrl-C: tracefs restored and what was recorded written (it was a traceback, no file)
    (root / "trace").write_text("")
    info = rec.record(tmp_path / "out.txt", ["true"], root=root)
    assert info["interrupted"] and info["returncode"] is None
    assert _state(root) == before and (tmp_path / "out.txt").exists()
    monkeypatch.setattr(rec.time, "sleep", boom)
    assert cli.main(["record", "-o", str(tmp_path / "s.txt"), "--seconds", "5", "--tracefs",
                     str(root)]) == 130
    assert _state(root) == before and (tmp_path / "s.txt").exists()


def test_an_interrupted_recording_keeps_the_lines_recorded(tmp_path, monkeypatch, capsys):
    root = _fake_tracefs(tmp_path)
    line = ("  bash-1 [000] ..... 10.000001: kmem_cache_alloc: call_site=f+0x1/0x9 "
            "ptr=00000000000000a0 name=dentry bytes_req=192 bytes_alloc=192 "
            "gfp_flags=GFP_KERNEL node=-1 accounted=false\n")

    def traced_then_interrupted(*a, **k):
        (root / "trace").write_text(line * 3)
        raise KeyboardInterrupt

    monkeypatch.setattr(rec.time, "sleep", traced_then_interrupted)
    assert cli.main(["record", "-o", str(tmp_path / "t.txt"), "--tracefs", str(root)]) == 130
    out = capsys.readouterr().out
    assert "3 lines written" in out and "(interrupted: what was recorded until Ctrl-C)" in out
    assert (tmp_path / "t.txt").read_text() == line * 3


def test_events_a_full_ring_buffer_overwrote_are_reported(tmp_path, monkeypatch, capsys):
    # a real 6.18.44 recording with --buffer-kb 16: 660 of 59,337 events kept, the rest
    # overwritten (options/overwrite); the trace has no [LOST] line, only the header's
    # counts and "##### CPU 0 buffer started ####", and record said "660 lines written"
    root = _fake_tracefs(tmp_path)
    line = ("  bash-1 [000] ..... 10.000001: kmem_cache_alloc: call_site=f+0x1/0x9 "
            "ptr=00000000000000a0 name=dentry bytes_req=192 bytes_alloc=192 "
            "gfp_flags=GFP_KERNEL node=-1 accounted=false\n")
    head = ("# tracer: nop\n#\n# entries-in-buffer/entries-written: 3/59337   #P:2\n#\n"
            "##### CPU 0 buffer started ####\n")
    monkeypatch.setattr(rec.time, "sleep",
                        lambda *a: (root / "trace").write_text(head + line * 3))
    info = rec.record(tmp_path / "t.txt", seconds=1, root=root)
    assert (info["lines"], info["lost"], info["overwritten"]) == (3, 0, 59334)
    assert cli.main(["record", "-o", str(tmp_path / "t.txt"), "--tracefs", str(root)]) == 0
    assert "(59334 events overwritten, the oldest: the ring buffer was full, a larger " \
        "--buffer-kb?)" in capsys.readouterr().out
    monkeypatch.setattr(rec.time, "sleep", lambda *a: (root / "trace").write_text(
        head.replace("3/59337", "3/3") + line * 3))
    assert rec.record(tmp_path / "t.txt", seconds=1, root=root)["overwritten"] == 0


def test_no_tracefs_is_a_clear_error(tmp_path):
    with pytest.raises(rec.RecordError, match="no tracefs"):
        rec.record(tmp_path / "o.txt", ["true"], root=tmp_path / "missing")
    root = _fake_tracefs(tmp_path)
    (root / "events" / "kmem" / "kfree" / "enable").unlink()
    with pytest.raises(rec.RecordError, match="lacks the kmem events kfree"):
        rec.record(tmp_path / "o.txt", ["true"], root=root)
    assert cli.main(["record", "-o", str(tmp_path / "o.txt"), "--tracefs",
                     str(tmp_path / "missing"), "--", "true"]) == 1


@pytest.mark.parametrize("args, match", [
    (dict(seconds=-1.0), "-1.0 is not a number of seconds"),
    (dict(seconds=float("nan")), "nan is not a number of seconds"),
    (dict(buffer_kb=0), "buffer size 0 KiB"),
    (dict(out="missing-dir/t.txt"), "cannot write .*missing-dir"),
    (dict(out="."), "cannot write"),
    # os.access let root through: recorded, then "cannot write" with the trace lost
    (dict(out="/proc/numslab-record-test.txt"), "cannot write .*proc"),
    # both: the seconds were ignored silently
    (dict(command=["true"], seconds=0.1), "0.1 seconds and a command: .* give one"),
    # a compression it does not write: plain text under that name (a kernel engineer's trial)
    (dict(out="t.txt.zst"), "writes a trace plain, .xz or .gz, not .zst"),
])
def test_bad_arguments_are_refused_before_tracefs_is_touched(tmp_path, args, match):
    root = _fake_tracefs(tmp_path)
    before = _state(root)
    (root / "trace").write_text("left alone\n")
    out = tmp_path / args.pop("out", "t.txt")
    with pytest.raises(rec.RecordError, match=match):
        rec.record(out, args.pop("command", None), root=root, **{"seconds": 0.0, **args})
    assert _state(root) == before and (root / "trace").read_text() == "left alone\n"
    assert not out.is_file()


def test_the_record_command_reports_a_bad_output_in_one_line(tmp_path, capsys):
    root = _fake_tracefs(tmp_path)
    assert cli.main(["record", "-o", str(tmp_path / "no" / "t.txt"), "--seconds", "0.01",
                     "--tracefs", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("numslab record: cannot write ") and err.count("\n") == 1
    for bad in (["--seconds", "-1"], ["--seconds", "inf"], ["--seconds", "nan"],
                ["--seconds", "abc"], ["--buffer-kb", "0"]):  # usage errors (abc recorded
        # for 0 seconds and ended with status 0 until a kernel engineer's trial)
        with pytest.raises(SystemExit) as e:
            cli.main(["record", "-o", str(tmp_path / "t.txt"), *bad, "--tracefs", str(root)])
        assert e.value.code == 2 and "numslab record: error: argument" in \
            capsys.readouterr().err
    # seconds and a command: a usage error too (status 1 until a kernel engineer's trial)
    assert cli.main(["record", "-o", str(tmp_path / "t.txt"), "--seconds", "0.5",
                     "--tracefs", str(root), "--", "true"]) == 2
    assert capsys.readouterr().err == ("numslab record: error: --seconds 0.5 and a command: "
                                       "the recording lasts as long as the command runs; give "
                                       "one of the two\n")


def test_a_command_a_signal_ends_gives_the_shells_status(tmp_path):
    """``sh -c 'kill -9 $$'``: returncode -9 was returned as is, and exited 247."""
    root = _fake_tracefs(tmp_path)
    assert cli.main(["record", "-o", str(tmp_path / "t.txt"), "--tracefs", str(root), "--",
                     "sh", "-c", "kill -9 $$"]) == 137
    assert cli.main(["record", "-o", str(tmp_path / "t.txt"), "--tracefs", str(root), "--",
                     "sh", "-c", "exit 3"]) == 3


def test_a_write_tracefs_refuses_names_its_file(tmp_path, monkeypatch):
    """``--buffer-kb 99999999999999999999``: the write (not the open) failed, ERANGE, and
    the error named ``None``."""
    root = _fake_tracefs(tmp_path)
    before = _state(root)
    write = rec._write

    def refuse(path, text):
        if path.name == "buffer_size_kb" and text != before_kb:
            raise OSError(34, "Numerical result out of range")
        write(path, text)
    before_kb = (root / "buffer_size_kb").read_text().strip()
    monkeypatch.setattr(rec, "_write", refuse)
    with pytest.raises(rec.RecordError, match=r"buffer_size_kb: Numerical result") as e:
        rec.record(tmp_path / "o.txt", ["true"], root=root)
    assert "None" not in str(e.value) and _state(root) == before


def test_not_permitted_is_a_clear_error(tmp_path):
    root = _fake_tracefs(tmp_path)
    before = _state(root)
    (root / "trace").unlink()
    (root / "trace").mkdir()                 # writing it fails as EPERM/EISDIR would
    with pytest.raises(rec.RecordError, match="cannot set up tracing|not permitted"):
        rec.record(tmp_path / "o.txt", ["true"], root=root)
    assert _state(root) == before


def test_the_snapshot_of_this_kernel_reads_back(tmp_path):
    out = tmp_path / "snap.json"
    assert cli.main(["snapshot", "-o", str(out)]) == 0
    j = json.loads(out.read_text())
    present = Path("/sys/devices/system/cpu/present").read_text().strip()    # e.g. 0-1
    assert j["kernel"] == os.uname().release and j["nr_cpus"] == sum(
        int(b) - int(a) + 1 if b else 1 for a, _, b in (r.partition("-") for r in
                                                        present.split(",")))
    snap = load_snapshot(out)
    k = snap["kmalloc-64"]
    assert int(k["object_size"]) == 64 and int(k["objs_per_slab"]) >= 1
    assert any("alias_of" in c for c in j["caches"])
    with pytest.raises(rec.RecordError):
        rec.snapshot(tmp_path / "nothing")


def test_replay_command_tables_json_compare_and_plot(tmp_path, capsys):
    png = tmp_path / "p.png"
    assert cli.main(["replay", str(DATA / TRACES["git_tar"]), "--snapshot",
                     str(DATA / SNAPSHOTS["git_tar"]), "--compare", "6.18,7.0",
                     "--plot", str(png), "--all"]) == 0
    out = capsys.readouterr().out       # (each configuration's own table: --all)
    assert out.count("Slabs/Part/Cpu") == 2 and "6.18:cpus=2" in out \
        and "%Ef at the end" in out
    assert png.stat().st_size > 10_000
    assert cli.main(["replay", str(DATA / TRACES["net"]), "--json", "--compare",
                     "7.0,7.0:cpus=4"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert set(j["configs"]) == {"7.0:cpus=2", "7.0:cpus=4"}
    # input that cannot be read or parsed exits 2, as the packet pipeline's (it was 1)
    assert cli.main(["replay", str(tmp_path / "none.txt")]) == 2
    assert "cannot read trace" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("this is not a kmem event\n")
    assert cli.main(["replay", str(tmp_path / "bad.txt"), "--no-progress"]) == 2
    assert "line 1" in capsys.readouterr().err
    # a snapshot that is a folder: "cannot read it as JSON (cannot read trace DIR...)"
    assert cli.main(["replay", str(DATA / TRACES["net"]), "--snapshot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"snapshot {tmp_path}: cannot read it (" in err and "trace" not in err
    (tmp_path / "s.json").write_text("{")
    assert cli.main(["replay", str(DATA / TRACES["net"]), "--snapshot",
                     str(tmp_path / "s.json")]) == 2
    assert "s.json: not JSON (" in capsys.readouterr().err
    # a plot named with no suffix is written as a png, and said so (it said the name given)
    assert cli.main(["replay", str(DATA / TRACES["net"]), "--plot", str(tmp_path / "q")]) == 0
    assert f"plot written to {tmp_path / 'q.png'}" in capsys.readouterr().out
    assert (tmp_path / "q.png").stat().st_size > 0 and not (tmp_path / "q").exists()
    # --compare with no configuration replayed the default alone, and every=0 (the sample
    # points, as --every 0) was "not a kernel ... every=N (N >= 1)"
    assert cli.main(["replay", str(DATA / TRACES["net"]), "--compare", ","]) == 2
    assert "numslab replay: error: compare: no configuration given" in capsys.readouterr().err
    for bad in (["--policy", "bogus"], ["--compare", "7.0,7.0"], ["--nodes", "3", "--cpus",
                                                                     "2"]):
        assert cli.main(["replay", str(DATA / TRACES["net"]), *bad]) == 2    # (they were 1)
        assert "numslab replay: error: " in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["replay", str(DATA / TRACES["net"]), "--every", "-5"])
    assert e.value.code == 2 and "'-5' is not a number of events" in capsys.readouterr().err
    assert cli.main(["replay", str(DATA / TRACES["net"]), "--json", "--every", "500",
                     "--policy", "shrink", "--compare", "7.0,7.0:every=0"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert set(j["configs"]) == {"7.0:cpus=2:shrink:every=500", "7.0:cpus=2:shrink"}


@pytest.mark.parametrize("where, says", [("nofolder/p.png", "does not exist"),
                                         ("p.txt", "not 'txt'")])
def test_a_plot_that_cannot_be_written_is_refused_before_the_replay(tmp_path, capsys,
                                                                   monkeypatch, where, says):
    # it was a FileNotFoundError or ValueError traceback after the whole replay
    import numslab.tools.labcli as labcli
    ran = []
    monkeypatch.setattr(labcli, "replay", lambda *a, **k: ran.append(a))
    assert cli.main(["replay", str(DATA / TRACES["git_tar"]), "--plot",
                     str(tmp_path / where)]) == 2       # a usage error, as the bench's
    err = capsys.readouterr().err                       # (it exited 1)
    assert says in err and "numslab replay: error:" in err and not ran
    with pytest.raises(SystemExit) as e:                # the bench's --plot alike
        cli.main(["bench", "--plot", str(tmp_path / where)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err
    assert "numslab bench: error:" in err               # the subcommand's usage, not the top's


def test_a_snapshot_that_cannot_be_written_is_one_line(tmp_path, capsys):
    # a FileNotFoundError or IsADirectoryError traceback
    slab = tmp_path / "slab"
    (slab / "dentry").mkdir(parents=True)
    (slab / "dentry" / "object_size").write_text("192\n")
    for out in (tmp_path / "nofolder" / "s.json", tmp_path):
        assert cli.main(["snapshot", "-o", str(out), "--slab-root", str(slab)]) == 1
        assert "cannot write" in capsys.readouterr().err


def test_no_other_empty_folder_than_the_kernel_s_is_mounted_as_tracefs(tmp_path):
    # --tracefs naming an empty folder mounted tracefs over it and left it mounted
    empty = tmp_path / "empty"
    empty.mkdir()
    try:
        with pytest.raises(rec.RecordError, match=f"no tracefs at {empty}"):
            rec.ensure_tracefs(empty)
    finally:
        if str(empty) in Path("/proc/mounts").read_text():
            subprocess.run(["umount", str(empty)], check=True)


def test_tracefs_is_mounted_only_on_an_empty_mount_point(tmp_path):
    # a folder with files in it was mounted over (and never unmounted)
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(rec.RecordError, match="no tracefs at"):
        rec.ensure_tracefs(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep"
    assert str(tmp_path) not in Path("/proc/mounts").read_text()


def test_a_snapshot_to_dash_goes_to_standard_output(tmp_path, capsys, monkeypatch):
    # -o - wrote a file named '-' in the current folder
    slab = tmp_path / "slab"
    (slab / "dentry").mkdir(parents=True)
    (slab / "dentry" / "object_size").write_text("192\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["snapshot", "-o", "-", "--slab-root", str(slab)]) == 0
    out, err = capsys.readouterr()
    caches = json.loads(out)["caches"]
    assert [(c["name"], int(c["object_size"])) for c in caches] == [("dentry", 192)]
    assert "1 cache entries written to standard output" in err
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("present, online, want", [("0-3,6\n", 2, 5), ("0\n", 1, 1),
                                                  ("0-63", 64, 64), (None, 3, 3), ("x", 3, 3),
                                                  ("0\n", 1, "possible")])
def test_a_snapshot_records_the_cpus_present(tmp_path, monkeypatch, present, online, want):
    """``nr_cpus`` was ``os.cpu_count()``, the CPUs online: with CPUs offline (present 0-3 and
    6, two online) it said 2 where the kernel's slab orders follow the 5 present
    (``calculate_order``'s ``num_present_cpus()``), and a replay given that count
    (``cpus=``, which its warning asks for) computed other orders than the snapshot's. It
    counts the CPUs in ``/sys/devices/system/cpu/present`` now; ``os.cpu_count()`` only when
    that list cannot be read."""
    slab = tmp_path / "slab"
    (slab / "dentry").mkdir(parents=True)
    (slab / "dentry" / "object_size").write_text("192\n")
    cpus = tmp_path / "present"
    if present is not None:
        cpus.write_text(present)
    monkeypatch.setattr(rec, "CPU_PRESENT", str(cpus), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: online)
    (tmp_path / "possible").write_text("0-7\n" if want == "possible" else "0\n")
    monkeypatch.setattr(rec, "CPU_POSSIBLE", str(tmp_path / "possible"), raising=False)
    # one CPU present: calculate_order takes nr_cpu_ids (here 8) instead
    assert rec.snapshot(slab)["nr_cpus"] == (8 if want == "possible" else want)


def test_a_recording_to_dash_is_refused(tmp_path, capsys, monkeypatch):
    # the trace went to a file named '-'; standard output is the recorded command's
    monkeypatch.chdir(tmp_path)         # (no tracefs there: an empty folder, as root, was
    #                                     mounted over and left mounted when the test failed)
    assert cli.main(["record", "-o", "-", "--tracefs", str(tmp_path / "none"), "--seconds",
                     "1"]) == 2
    assert "record writes its trace to a file" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("content", ["nothing", "files", "folders"])
def test_a_snapshot_of_a_folder_holding_no_cache_is_refused(tmp_path, capsys, content):
    # an empty --slab-root (or any other folder) wrote "0 cache entries", status 0
    root = tmp_path / "slab"
    root.mkdir()
    if content == "files":
        (root / "notes.txt").write_text("x")
    elif content == "folders":
        (root / "a" / "b").mkdir(parents=True)
    out = tmp_path / "s.json"
    assert cli.main(["snapshot", "-o", str(out), "--slab-root", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"{root} holds no slab cache" in err and "not a /sys/kernel/slab" in err, err
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="recording needs root")
def test_a_warm_replay_of_real_files_changes_their_caches_as_the_kernel_did(tmp_path):
    """Files kept in a tmpfs, recorded between two snapshots: the 6.18 replay warm-started from
    the first changes ``dentry`` and ``shmem_inode_cache`` as the second shows.

    Each file holds one dentry and one shmem inode: the workload's own ``kmem_cache_alloc``
    events (its pid's) are ``N`` of each. Sysfs ``objects`` is the live objects plus the free
    ones of the slabs CPUs hold (``cpu_slabs``: CPU slabs and CPU partial slabs), and the warm
    start seeds those slabs full: the kernel fills their free objects without its count
    moving, the replay makes new slabs for them. So the replay's change of ``objects`` is
    above the kernel's by at most the objects of the slabs CPUs held before (the kernel) and
    after (the replay), and below it by at most those the kernel's CPUs held after; its slabs
    likewise, by those numbers of slabs; ``N // 100`` more for the gaps between the snapshots
    and the recording, which no trace sees (a first snapshot's own sysfs dentries and inodes
    fall in one: one is taken first). An object allocated in the first gap and freed in the
    trace takes a seeded object in the replay (``warm.frees``; none on a quiet machine) where
    the kernel's count did not move: the replay may be below by that many more.
    docs/PERFORMANCE.md: 0-147 objects and 0-7 slabs at N = 5,000 in four runs, each under its
    bound. Other processes' dentries and inodes in the second gap, or a ring buffer they fill,
    spoil an attempt (another process creating and removing files as fast as it can spoiled
    every one), so there are three: a replay that lost the workload, or gave these caches
    another ``objs_per_slab``, fails each by hundreds of objects and tens of slabs."""
    tried = []
    for attempt in range(3):
        tried.append(_files_against_the_kernel(tmp_path / str(attempt), 5000))
        if not tried[-1]:
            break
    assert not tried[-1], tried


def _files_against_the_kernel(tmp_path: Path, n: int) -> list:
    """What disagrees (empty: nothing) between the kernel and the warm 6.18 replay of ``n``
    files made in ``/dev/shm`` while recording, for ``dentry`` and ``shmem_inode_cache``."""
    tmp_path.mkdir()
    mounted = (TRACEFS / "events").is_dir()
    rec.ensure_tracefs(TRACEFS)
    files = Path(tempfile.mkdtemp(prefix="numslab-test-", dir="/dev/shm"))
    pid = tmp_path / "pid"
    try:
        rec.snapshot()              # (the sysfs files' dentries and inodes made before)
        before = load_snapshot(rec.snapshot())
        out = tmp_path / "files.txt"
        make = (f"import os\nopen('{pid}', 'w').write(str(os.getpid()))\n"
                f"for i in range({n}):\n"
                f"    os.close(os.open('{files}/f%d' % i, os.O_CREAT | os.O_WRONLY, 0o600))\n")
        info = rec.record(out, [sys.executable, "-c", make], buffer_kb=16384)
        after = load_snapshot(rec.snapshot())
    finally:
        shutil.rmtree(files)
        if not mounted:
            subprocess.run(["umount", str(TRACEFS)], check=True)
    assert (TRACEFS / "events").is_dir() == mounted
    assert info["returncode"] == 0
    own = re.compile(rf"^\s*\S+-{pid.read_text()}\s.*kmem_cache_alloc: .* name=(\S+) ")
    made = {"dentry": 0, "shmem_inode_cache": 0}
    for line in out.read_text().splitlines():
        m = own.match(line)
        if m and m.group(1) in made:
            made[m.group(1)] += 1
    wrong = [("lost", info["lost"], "overwritten", info["overwritten"])
             ] if info["lost"] or info["overwritten"] else []
    if made["shmem_inode_cache"] != n or made["dentry"] < n:
        wrong.append(("the workload's own allocations", made))
    r = numslab.replay(out, snapshot=before, kernel="6.18", cpus=os.cpu_count(), warm=True)
    c, w = r.caches, r.warm
    assert w.names == r.names
    gap = n // 100
    for name in ("dentry", "shmem_inode_cache"):
        k = r.names.index(name)
        ops = int(before[name]["objs_per_slab"])
        held_before, held_after = (int(str(s[name]["cpu_slabs"]).split()[0])
                                   for s in (before, after))
        real = [int(str(after[name][f]).split()[0]) - int(str(before[name][f]).split()[0])
                for f in ("objects", "slabs")]
        got = [int(r.objects[k]) - int(w.objects[k]), int(c["slabs"][k]) - int(w.slabs[k])]
        above, below = held_before + int(c["cpu_slabs"][k]), held_after
        taken = int(w.frees[k])     # (0 on a quiet machine; see the docstring)
        if not (int(r.objs_per_slab[k]) == ops
                and -below * ops - gap - taken <= got[0] - real[0] <= above * ops + gap
                and -below - (gap + taken) // ops - 1 <= got[1] - real[1]
                <= above + gap // ops + 1):
            wrong.append((name, "replay", got, "real", real, "CPU-held", above, below,
                          "objects per slab", int(r.objs_per_slab[k]), ops))
    return wrong
