"""Bad input to numslab.net and the packet pipeline's command line: clear errors, no crash,
no hang, no silently wrong numbers."""
from __future__ import annotations

import json
import mmap
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from numslab import OutOfMemoryError, SlabAllocator
from numslab.errors import InvalidArgumentError, SlabError, WrongTypeError
from numslab.net import (CaptureError, generate_traffic, generate_traffic_with_truth,
                         read_capture, run_pipeline, write_pcap)

CLI = Path(__file__).absolute().parent.parent / "examples" / "packet_pipeline.py"
sys.path.insert(0, str(CLI.parent))
import packet_pipeline as cli  # noqa: E402


@pytest.fixture(scope="module")
def small():
    return generate_traffic(10, 0)


def test_an_offset_near_2_63_is_outside_data_not_a_wild_read(small, tmp_path):
    # (off + cap) overflowed int64 and passed the check: run_pipeline read wild memory
    off = small.offset.copy()
    off[3] = 2**63 - 50
    q = small._replace(offset=off)
    with pytest.raises(SlabError, match=r"packet 3 lies outside .* offset 9223372036854775758"):
        run_pipeline(q, "bulk")
    with pytest.raises(ValueError, match=r"packet 3 lies outside data"):
        write_pcap(tmp_path / "w.pcap", q)


def test_an_endless_stream_that_is_no_capture_is_refused_at_once():
    # /dev/zero was read whole (forever) before its magic number was looked at
    for dev in ("/dev/zero", "/dev/urandom"):
        with pytest.raises(CaptureError, match="unknown magic .* at byte 0"):
            read_capture(dev)


def test_a_capture_on_a_pipe_is_still_read(small, tmp_path):
    write_pcap(tmp_path / "a.pcap", small)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = (tmp_path / "a.pcap").read_bytes()
    t = threading.Thread(target=lambda: fifo.write_bytes(data))
    t.start()
    p = read_capture(fifo)
    t.join()
    assert p.offset.size == 10 and bytes(p.packet(9)) == bytes(small.packet(9))


def test_closed_stdin_is_a_capture_error(monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)         # python3 ... --pcap - <&-
    with pytest.raises(CaptureError, match="standard input is closed"):
        read_capture("-")


def _mapped(a) -> bool:
    while a is not None:
        if isinstance(a, mmap.mmap):
            return True
        a = getattr(a, "base", None)
    return False


def test_the_command_line_does_not_map_its_capture(small, tmp_path):
    # a mapped capture truncated during the run killed the interpreter with SIGBUS
    write_pcap(tmp_path / "a.pcap", small)
    assert _mapped(read_capture(tmp_path / "a.pcap").data)
    p, _ = cli.load(cli.parse_args(["--pcap", str(tmp_path / "a.pcap")]))
    assert not _mapped(p.data) and p.offset.size == 10


def test_a_batch_larger_than_the_input_is_bounded_by_its_packets():
    # bulk/array modes stashed `batch` flow entries (OutOfMemoryError for --batch 3000000 on
    # 3000 packets) and the stash counted as live flow_cache objects in the summary
    p = generate_traffic(3000, 0)
    ref = run_pipeline(p, "single", batch=3000)
    for mode in ("single", "bulk", "local"):
        r = run_pipeline(p, mode, batch=3_000_000)
        assert r.batches == 1 and (r.packets, r.bytes, r.flows, r.counters) == \
            (ref.packets, ref.bytes, ref.flows, ref.counters)
        assert r.caches["flow_cache"]["live_objects"] == r.active_flows
    assert run_pipeline(p, "bulk", batch=64).caches["flow_cache"]["live_objects"] == \
        ref.active_flows


@pytest.mark.parametrize("mode", ["single", "bulk"])
def test_a_batch_past_int64_is_bounded_by_the_input_not_an_overflow(small, mode):
    # 2**63 reached the compiled loop: OverflowError (bulk) or a Numba TypingError (single),
    # a traceback from the command line (--batch 99999999999999999999)
    ref = run_pipeline(small, mode, batch=10)
    for batch in (2**63, 2**64, np.uint64(2**63)):
        r = run_pipeline(small, mode, batch=batch)
        assert r.batches == 1 and r.batch == int(batch) and r.counters == ref.counters


def test_cli_input_past_memory_is_one_line_status_1(capsys):
    # generate_traffic's NumPy MemoryError escaped load(): a traceback
    assert cli.main(["--packets", "10000000000000", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory" in err and "Traceback" not in err


def test_cli_a_batch_past_int64_runs(capsys):
    assert cli.main(["--packets", "50", "--batch", "99999999999999999999", "--quiet",
                     "--json"]) == 0
    assert '"batches": 1' in capsys.readouterr().out


@pytest.mark.parametrize("column, values, match", [
    ("wirelen", lambda p: -p.wirelen, r"packet 0 has wirelen -\d+: .* 0\.\.2\*\*32-1"),
    ("wirelen", lambda p: np.full(10, 2**62), "packet 0 has wirelen 4611686018427387904"),
    ("ts_ns", lambda p: np.full(10, np.nan), r"ts_ns\[0\] is nan"),
    ("ts_ns", lambda p: np.array([-2**63 + 1] + [2**63 - 1] * 9), "ts_ns spans"),
    ("offset", lambda p: p.offset + 0.7, r"offset\[0\] is 0\.7"),
    ("caplen", lambda p: p.caplen.astype(str), "caplen must be an integer array"),
])
def test_bad_columns_are_refused_not_wrapped(small, column, values, match):
    # negative/huge wirelen wrapped into the byte counts; NaN ts_ns became -2**63
    with pytest.raises(SlabError, match=match):
        run_pipeline(small._replace(**{column: values(small)}))


@pytest.mark.parametrize("kw, err, match", [
    (dict(n_packets=1.5), WrongTypeError, "n_packets must be an integer, not 1.5"),
    (dict(n_packets="10"), WrongTypeError, "n_packets must be an integer"),
    (dict(n_packets=True), WrongTypeError, "n_packets must be an integer, not True"),
    (dict(n_packets=-1), InvalidArgumentError, "n_packets must be >= 0"),
    (dict(n_packets=10, seed=-1), InvalidArgumentError, "seed must be an integer >= 0"),
    (dict(n_packets=10, seed=1.5), WrongTypeError, "seed must be an integer"),
    (dict(n_packets=100, n_flows=2.7), WrongTypeError, "n_flows must be an integer"),
    (dict(n_packets=100, rate_pps=0), InvalidArgumentError, "rate_pps must be a finite rate"),
    (dict(n_packets=100, rate_pps=-5), InvalidArgumentError, "rate_pps"),
    (dict(n_packets=100, rate_pps=float("nan")), InvalidArgumentError, "rate_pps"),
    (dict(n_packets=100, rate_pps=1e-300), InvalidArgumentError, "pass int64 nanoseconds"),
    (dict(n_packets=100, idle_gap_s=-100), InvalidArgumentError, "idle_gap_s"),
    (dict(n_packets=100, idle_gap_s=1e300), InvalidArgumentError, "pass int64 nanoseconds"),
    (dict(n_packets=100, start_ns=2**63 - 10), InvalidArgumentError, "start_ns=9223372"),
    (dict(n_packets=100, start_ns=1.5e18), WrongTypeError, "start_ns must be an integer"),
    (dict(n_packets=100, zipf_s=float("nan")), InvalidArgumentError, "zipf_s"),
    (dict(n_packets=100, ipv6_fraction=float("nan")), InvalidArgumentError, "ipv6_fraction"),
    (dict(n_packets=100, vlan_fraction=5), InvalidArgumentError, "vlan_fraction"),
    (dict(n_packets=100, idle_fraction=2), InvalidArgumentError, "idle_fraction"),
])
def test_generate_traffic_refuses_bad_arguments(kw, err, match):
    # rate_pps=0 raised ZeroDivisionError; nan/1e-300 rates, huge gaps or starts wrapped the
    # timestamps; 1.5, "10" and True packets were taken; seed=-1's message named no seed
    with pytest.raises(err, match=match):
        generate_traffic_with_truth(**kw)


def test_generate_traffic_near_the_int64_limit_still_increases():
    p = generate_traffic(100, 0, start_ns=2**63 - 10**12, rate_pps=1000, idle_gap_s=0)
    assert (np.diff(p.ts_ns) > 0).all() and p.ts_ns[0] >= 2**63 - 10**12


def _shb(blen: int = 28) -> bytes:
    return struct.pack("<IIIHHq", 0x0A0D0D0A, blen, 0x1A2B3C4D, 1, 0, -1) + \
        struct.pack("<I", blen)


def _idb(tsresol: int) -> bytes:
    body = struct.pack("<HHI", 1, 0, 0) + struct.pack("<HHB3x", 9, 1, tsresol) + bytes(4)
    return struct.pack("<II", 1, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def _epb(units: int, frame: bytes) -> bytes:
    body = struct.pack("<IIIII", 0, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame))
    body += frame + bytes(-len(frame) % 4)
    return struct.pack("<II", 6, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def test_an_absurd_pcapng_block_length_is_corrupt_not_cut(tmp_path):
    # 0x7FFFFFF0 read as a capture cut short (exit 0); tshark calls it corrupt
    f = tmp_path / "huge.pcapng"
    f.write_bytes(struct.pack("<II", 0x0A0D0D0A, 0x7FFFFFF0) + _shb()[8:] + bytes(64))
    with pytest.raises(CaptureError, match="block length 2147483632 at byte 0 is too large"):
        read_capture(f)
    f.write_bytes(_shb()[:4])                                   # the magic number only
    with pytest.raises(CaptureError, match="ends inside its pcapng section header"):
        read_capture(f)
    f.write_bytes(_shb())                                       # a whole header: no packets
    assert read_capture(f).offset.size == 0


@pytest.mark.parametrize("major,minor", [(0, 0), (1, 0), (3, 0), (2, 5), (543, 1)])
def test_a_classic_pcap_version_libpcap_does_not_read_is_refused(tmp_path, major, minor):
    f = tmp_path / "v.pcap"
    f.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, major, minor, 0, 0, 65535, 1))
    with pytest.raises(CaptureError, match=rf"unsupported pcap version {major}\.{minor}"):
        read_capture(f)


@pytest.mark.parametrize("major,minor", [(2, 0), (2, 4), (543, 0)])
def test_the_classic_pcap_versions_libpcap_reads_are_read(tmp_path, major, minor):
    """sf-pcap.c reads 2.0 to 2.4 and 543.0 (DG/UX tcpdump)."""
    f = tmp_path / "v.pcap"
    frame = bytes(60)
    f.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, major, minor, 0, 0, 65535, 1)
                  + struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame)
    assert read_capture(f).offset.size == 1


def test_a_pcapng_timestamp_past_int64_nanoseconds_is_an_error(tmp_path):
    f = tmp_path / "t.pcapng"
    frame = bytes(60)
    f.write_bytes(_shb() + _idb(0) + _epb(30_000_000_000, frame))   # seconds: year ~2920
    with pytest.raises(CaptureError, match="byte 60: its timestamp .* past int64"):
        read_capture(f)
    f.write_bytes(_shb() + _idb(0) + _epb(9_000_000_000, frame))    # year 2255: fits
    assert read_capture(f).ts_ns[0] == 9_000_000_000 * 10**9
    f.write_bytes(_shb() + _idb(9) + _epb(2**64 - 1, frame))        # ns units past int64
    with pytest.raises(CaptureError, match="past int64"):
        read_capture(f)


def test_cli_refuses_an_empty_pcap_name_and_warns_of_ignored_options(small, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:            # it silently used generated traffic
        cli.main(["--pcap", ""])
    assert e.value.code == 2 and "--pcap: an empty file name" in capsys.readouterr().err
    write_pcap(tmp_path / "a.pcap", small)
    assert cli.main(["--pcap", str(tmp_path / "a.pcap"), "--seed", "3", "--packets", "5",
                     "--repeat", "2", "--quiet", "--json"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["packet_pipeline: warning: --packets and --seed ignored with --pcap (for "
                   "generated traffic only)",
                   "packet_pipeline: warning: --repeat ignored without --compare (timed runs "
                   "per mode)"]


@pytest.mark.filterwarnings("default::UserWarning")     # the command under default filters
def test_cli_single_mode_warns_once(small, tmp_path, capsys):
    # the untimed warm-up run said every warning too
    write_pcap(tmp_path / "a.pcap", small._replace(linktype=147))
    assert cli.main(["--pcap", str(tmp_path / "a.pcap"), "--mode", "single", "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "linktype 147 is not parsed" in err[0]


def test_cli_closed_pipe_is_quiet_and_refused_output_is_status_1(tmp_path):
    # `| true` printed "error: [Errno 32] Broken pipe" and exited 2 (bad input)
    cmd = [sys.executable, str(CLI), "--packets", "300", "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=600) == 1 and err == ""
    with open("/dev/full", "wb") as full:
        q = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=600,
                           check=False)
    assert q.returncode == 1 and q.stderr == \
        "packet_pipeline: error: cannot write the output: No space left on device\n"


def test_cli_started_with_stdout_closed_ends_without_a_traceback():
    # `>&-`: Python sets sys.stdout to None, and the final flush raised AttributeError
    for cmd in ([sys.executable, str(CLI), "--packets", "300", "--quiet"],
                [sys.executable, "-m", "numslab.tools.cli", "replay", "--help"]):
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=600, check=False, preexec_fn=lambda: os.close(1))
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_cli_without_quiet_runs_with_stdout_or_stderr_closed(monkeypatch, closed):
    # `>&-` without --quiet: the progress bar's sys.stdout.isatty() raised AttributeError
    # (a traceback, status 1); `2>&-` broke the compiling notice's sys.stderr.isatty() alike
    monkeypatch.setattr(sys, closed, None)
    assert cli.main(["--packets", "300"]) == 0


def test_run_pipeline_argument_errors_are_slab_errors(small, tmp_path):
    for kw, err in (({"idle_timeout": "30"}, WrongTypeError), ({"idle_timeout": None},
                    WrongTypeError), ({"mode": "fast"}, InvalidArgumentError),
                    ({"batch": 0}, InvalidArgumentError)):
        with pytest.raises(err):
            run_pipeline(small, **kw)
    with pytest.raises(WrongTypeError, match="linktype must be an integer, not None"):
        run_pipeline(small._replace(linktype=None))
    assert issubclass(CaptureError, SlabError) and issubclass(CaptureError, ValueError)
    with pytest.raises(InvalidArgumentError, match="snaplen 8589934592 does not fit"):
        write_pcap(tmp_path / "w.pcap", small, snaplen=2**33)   # struct.error
    with pytest.raises(WrongTypeError, match="linktype must be an integer"):
        write_pcap(tmp_path / "w.pcap", small._replace(linktype=None))


def _held(sa) -> dict:
    return {c.name: c.live_objects - c.sheaf_objects for c in sa.caches}


@pytest.mark.parametrize("mode", ["single", "bulk", "local"])
def test_an_error_inside_the_run_leaves_the_callers_allocator_clean(mode):
    # after running out of memory, or an exception from progress, the pipeline's objects
    # stayed allocated in a caller's SlabAllocator
    p = generate_traffic(20_000, 0)
    sa = SlabAllocator(memory="4M")
    before = _held(sa)
    with pytest.raises(OutOfMemoryError):
        run_pipeline(p, mode, sa=sa, batch=4096)
    assert _held(sa) == before and not any(c.name.startswith(("skbuff", "flow"))
                                           for c in sa.caches)

    def boom(n):
        raise KeyboardInterrupt
    sa = SlabAllocator()
    before = _held(sa)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(p, mode, sa=sa, progress=boom, chunk=100)
    assert _held(sa) == before
    assert run_pipeline(p, mode, sa=sa).packets == 20_000       # the allocator still works


@pytest.mark.parametrize("linktype", [2**32 + 1, 2**40, -1])
def test_write_pcap_refuses_a_linktype_past_32_bits(small, tmp_path, linktype):
    # masked to 32 bits: 2**32 + 1 was written as Ethernet, 2**40 as BSD loopback
    with pytest.raises(InvalidArgumentError, match=f"linktype {linktype} does not fit"):
        write_pcap(tmp_path / "x.pcap", small._replace(linktype=linktype))
    assert not (tmp_path / "x.pcap").exists()


def test_cli_a_capture_holding_a_packet_past_4_mib_is_bad_input(small, tmp_path, capsys):
    # the pipeline's refusal was a failure of the run (status 1, "InvalidArgumentError: ...")
    # naming no file, where unreadable input is status 2
    data = np.zeros(5 << 20, np.uint8)
    huge = small._replace(data=data, offset=np.array([0, 64]),
                          caplen=np.array([60, (5 << 20) - 64]),
                          wirelen=np.array([60, 5 << 20]), ts_ns=np.array([0, 1]))
    write_pcap(tmp_path / "huge.pcap", huge)
    assert cli.main(["--pcap", str(tmp_path / "huge.pcap"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"packet_pipeline: error: {tmp_path / 'huge.pcap'}: packet 1 "
                          "(record data at byte 116) has a captured length of 5242816 bytes")


def test_cli_an_unreadable_capture_is_named_as_the_other_errors(tmp_path, capsys):
    """A capture that cannot be opened said Python's "error: [Errno 21] Is a directory:
    '/tmp/x'"; now "error: FILE: reason", as every other input error."""
    for path, reason in ((tmp_path, "Is a directory"),
                         (tmp_path / "missing.pcap", "No such file or directory")):
        assert cli.main(["--pcap", str(path), "--quiet"]) == 2
        assert capsys.readouterr().err == f"packet_pipeline: error: {path}: {reason}\n"


def test_cli_standard_input_is_named_so(capsys, monkeypatch):
    """A capture on standard input that is not one was named "-": "error: -: unknown magic
    0x23207472 at byte 0"."""
    import io
    for data, says in ((b"# tracer: nop\n", "standard input: unknown magic 0x23207472 at byte 0"),
                       (b"", "standard input: empty capture file")):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        assert cli.main(["--pcap", "-", "--quiet"]) == 2
        assert capsys.readouterr().err.startswith(f"packet_pipeline: error: {says}")
    monkeypatch.setattr(sys, "stdin", None)
    assert cli.main(["--pcap", "-", "--quiet"]) == 2
    assert capsys.readouterr().err == ("packet_pipeline: error: standard input is closed: no "
                                       "capture to read\n")


def test_run_pipeline_wrong_packets_sa_progress_chunk_data_are_slab_errors(small):
    # a list or None as packets, a str as sa were AttributeErrors; a progress that cannot be
    # called a TypeError after the first chunk; chunk "x" a TypeError, 2.0 and -5 were taken;
    # data None a TypeError, float data (3.7 read as byte 3) and 256 (read as 0) converted
    # silently, 2-D data compiled the loop once more
    cases = [((None,), {}, WrongTypeError, "packets must be a numslab.net.Packets table"),
             (([1, 2],), {}, WrongTypeError, "not list"),
             ((small,), {"sa": "x"}, WrongTypeError, "sa must be a SlabAllocator"),
             ((small,), {"progress": 3}, WrongTypeError, "progress must be callable"),
             ((small,), {"chunk": "x"}, InvalidArgumentError, "chunk must be a positive"),
             ((small,), {"chunk": 2.0}, InvalidArgumentError, "chunk must be a positive"),
             ((small,), {"chunk": -5}, InvalidArgumentError, "chunk must be a positive"),
             ((small._replace(data=None),), {}, WrongTypeError, "data must be a uint8 array"),
             ((small._replace(data=small.data + 0.5),), {}, WrongTypeError, "not float64"),
             ((small._replace(data=small.data.astype(np.int64) + 256),), {},
              InvalidArgumentError, r"data\[0\] is 2\d\d: not a byte"),
             ((small._replace(data=small.data.reshape(1, -1)),), {}, InvalidArgumentError,
              "data must be 1-D")]
    for args, kw, err, match in cases:
        with pytest.raises(err, match=match):
            run_pipeline(*args, **kw)
    ok = small._replace(data=small.data.astype(np.int64))     # bytes in a wider integer type
    assert run_pipeline(ok, chunk=np.int64(3)).packets == run_pipeline(small).packets == 10
    signed = small._replace(data=small.data.view(np.int8))   # bytes read as signed: the same
    assert (small.data > 127).any() and \
        run_pipeline(signed).counters == run_pipeline(small).counters


def test_cli_ctrl_c_while_numslab_loads_is_one_line_and_130(tmp_path):
    # a Ctrl-C in the first 0.4-1.5 s (the script's imports) was a traceback of numslab's
    # import and death by SIGINT; the import is made to raise as a Ctrl-C there would
    code = ("import runpy, sys\n"
            "class Stop:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'numslab.net':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Stop())\n"
            f"sys.argv = [{str(CLI)!r}, '--packets', '10']\n"
            f"runpy.run_path({str(CLI)!r}, run_name='__main__')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert (p.returncode, p.stderr) == (130, "packet_pipeline: interrupted\n"), p.stderr


def test_read_and_write_capture_refuse_what_is_no_path_or_no_table(small, tmp_path):
    # read_capture(None) was a TypeError of os.stat, read_capture(3) read and closed file
    # descriptor 3; write_pcap of None or a list an AttributeError on ``data``
    r, w = os.pipe()
    try:
        for bad in (None, r, 2.5):
            with pytest.raises(WrongTypeError, match="path must be a file name"):
                read_capture(bad)
        os.fstat(r)                                  # still open
    finally:
        os.close(r)
        os.close(w)
    for bad in (None, [1, 2]):
        with pytest.raises(WrongTypeError, match="packets must be a numslab.net.Packets"):
            write_pcap(tmp_path / "w.pcap", bad)
    assert not (tmp_path / "w.pcap").exists()
    write_pcap(tmp_path / "w.pcap", small)
    assert len(read_capture(str(tmp_path / "w.pcap").encode()).offset) == 10   # bytes: a path
    # data of floats (3.7 written as byte 3) or past a byte (256 as 0) was written converted
    # without a word, as run_pipeline refused to read it
    for data, err, what in ((small.data + 0.7, WrongTypeError, "not float64"),
                            (small.data.astype(np.int64) + 256, InvalidArgumentError,
                             "not a byte")):
        with pytest.raises(err, match=what):
            write_pcap(tmp_path / "x.pcap", small._replace(data=data))
        assert not (tmp_path / "x.pcap").exists()
    write_pcap(tmp_path / "s.pcap", small._replace(data=small.data.view(np.int8)))
    assert (tmp_path / "s.pcap").read_bytes() == (tmp_path / "w.pcap").read_bytes()


def test_compare_progress_names_each_generations_run(small):
    # with several generations every bar was named by its mode alone ("bulk" twice)
    names = []
    res = cli.compare_modes(small, ("single", "bulk"), kernels=["7.0", "6.18"],
                            progress=lambda name: names.append(name) or None)
    assert names == list(res) == ["single@7.0", "bulk@7.0", "single@6.18", "bulk@6.18"]
    names.clear()
    res = cli.compare_modes(small, ("single", "bulk"), progress=lambda name: names.append(name))
    assert names == list(res) == ["single", "bulk"]


def test_cli_warns_that_compare_ignores_mode_and_json_top(small, tmp_path, capsys):
    # --compare --mode single ran every mode and dropped --mode without a word; --top with
    # --json or --compare was dropped too
    write_pcap(tmp_path / "a.pcap", small)
    assert cli.main(["--pcap", str(tmp_path / "a.pcap"), "--compare", "--mode", "single",
                     "--repeat", "1", "--quiet", "--json"]) == 0
    out = capsys.readouterr()
    assert out.err == ("packet_pipeline: warning: --mode single ignored with --compare (it runs "
                       "every mode)\n")
    assert len(json.loads(out.out)["modes"]) == 5
    assert cli.parse_args([]).mode == "bulk" and cli.parse_args(["--compare"]).mode == "bulk"
    # and --top, which only the summary reads
    for extra in (["--json"], ["--compare", "--repeat", "1"]):
        assert cli.main(["--pcap", str(tmp_path / "a.pcap"), "--top", "2", "--quiet",
                         *extra]) == 0
        assert capsys.readouterr().err == (f"packet_pipeline: warning: --top ignored with "
                                           f"{extra[0]} (caches listed in the summary)\n")
    assert cli.parse_args([]).top == 5
