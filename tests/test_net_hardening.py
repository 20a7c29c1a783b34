"""Bad input to numslab.net and the packet pipeline's command line: clear errors, no crash,
no hang, no silently wrong numbers."""
from __future__ import annotations

import mmap
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from numslab.errors import SlabError
from numslab.net import CaptureError, generate_traffic, read_capture, run_pipeline, write_pcap

sys.path.insert(0, str(Path(__file__).absolute().parent.parent / "examples"))
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
