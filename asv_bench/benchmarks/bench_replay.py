"""Suite 9: the SLUB laboratory's trace replay, against a loop that only splits each line.

Parse plus replay of a kmem trace of over a million events (a committed real trace repeated with
shifted pointers) against a bare Python loop that only reads the same file and calls
``line.split()`` on each line, in the same run; ``track_lines_per_second_ratio`` is the replay's
lines per second over the loop's (issue 14's target: at least 2), ``track_cpu_seconds_ratio`` the
same by CPU seconds (every thread's), ``peakmem_replay`` the replay's peak memory."""
import lzma
import os
import time
from pathlib import Path

import numslab
from numslab.lab.trace import repeat_trace

DATA = Path(numslab.__file__).resolve().parents[1] / "tests" / "data" / "kmem_git_tar.txt.xz"
COPIES = 275          # 4,000 event lines each: 1.1 million events
ROUNDS = 7            # interleaved runs of each side in the ratio (best of each)


def make_trace(path: str) -> int:
    """Write the benchmark trace to ``path``; its line count."""
    text = repeat_trace(lzma.decompress(DATA.read_bytes()), COPIES)
    Path(path).write_bytes(text)
    return text.count(b"\n")


def split_loop(path: str) -> None:
    """The peer: read the file and split each line, nothing else.

    Binary mode: faster for the loop than text mode, 0.57 s against 0.66 s here."""
    with open(path, "rb") as f:
        for line in f:
            line.split()


def interleaved(path: str, kernel: str, rounds: int | None = None) -> dict[str, float]:
    """Best wall and CPU seconds of the split loop and of parse + replay, in interleaved runs.

    CPU seconds are ``time.process_time``: every thread of the process. ``rounds`` (default
    ``ROUNDS``) runs of each are interleaved in this process, which side runs first alternating by
    round (so that a busy moment of a shared machine is as likely to fall on either)."""
    with open(path, "rb") as f:
        n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
    best = {"split_wall": float("inf"), "split_cpu": float("inf"),
            "replay_wall": float("inf"), "replay_cpu": float("inf")}
    r = None
    for k in range(rounds or ROUNDS):
        for side in (("split", "replay") if k % 2 == 0 else ("replay", "split")):
            c0, t0 = time.process_time(), time.perf_counter()
            if side == "split":
                split_loop(path)
            else:
                r = replay(path, kernel)
            t1, c1 = time.perf_counter(), time.process_time()
            best[side + "_wall"] = min(best[side + "_wall"], t1 - t0)
            best[side + "_cpu"] = min(best[side + "_cpu"], c1 - c0)
    assert r is not None and r.lines == n
    best["lines"] = n
    return best


def lines_per_second_ratio(path: str, kernel: str, rounds: int | None = None) -> float:
    """Parse + replay lines per second over the split loop's.

    From the best wall times of :func:`interleaved` runs."""
    b = interleaved(path, kernel, rounds)
    return b["split_wall"] / b["replay_wall"]


def cpu_seconds_ratio(path: str, kernel: str, rounds: int | None = None) -> float:
    """The split loop's CPU seconds over parse + replay's (every thread).

    Best of :func:`interleaved` runs; what the wall ratio tends to when other work holds the
    cores."""
    b = interleaved(path, kernel, rounds)
    return b["split_cpu"] / b["replay_cpu"]


def replay(path: str, kernel: str):
    """Parse and replay the file on one configuration (2 CPUs, as traced)."""
    return numslab.replay(path, kernel=kernel, cpus=2, progress=False)


#: A few lines of the trace: what :meth:`TraceReplay.setup` replays to load the engine.
WARM_LINES = 200


class _OnTheTrace:
    """Benchmarks on the benchmark trace, written once for the class (asv's ``setup_cache``)."""

    timeout = 600
    number = 1
    repeat = 3
    trace_file = "kmem_bench_trace.txt"

    def setup_cache(self):
        path = os.path.abspath(self.trace_file)
        make_trace(path)
        return path


class TraceReplay(_OnTheTrace):
    """Parse + replay of a 1.1M-event trace against the split loop, same run."""

    params = (["7.0", "6.18"],)
    param_names = ["kernel"]

    def setup_cache(self):
        path = super().setup_cache()
        replay(path, "7.0")             # compile (Numba's cache) outside the timings
        replay(path, "6.18")
        return path

    def setup(self, path, kernel):
        # the compiled code loaded from Numba's cache in this process before any timing: under
        # ``--quick`` (one run, no warm-up) time_replay took 0.84 s where a replay takes 0.25
        # (h22's trial), most of it the loading
        with open(path, "rb") as f:
            head = b"".join(f.readline() for _ in range(WARM_LINES))
        numslab.replay(head, kernel=kernel, cpus=2, progress=False)

    def time_replay(self, path, kernel):
        replay(path, kernel)

    def peakmem_replay(self, path, kernel):
        replay(path, kernel)

    def track_lines_per_second_ratio(self, path, kernel):
        """Replay lines/s over split-loop lines/s: the best of ``ROUNDS`` runs of each.

        The runs are interleaved in this process, which side runs first alternating by round (so
        that a busy moment of a shared machine is as likely to fall on either)."""
        return lines_per_second_ratio(path, kernel)
    track_lines_per_second_ratio.unit = "x"

    def track_cpu_seconds_ratio(self, path, kernel):
        """Split-loop CPU seconds over parse + replay CPU seconds (every thread).

        Best of ``ROUNDS`` interleaved runs of each."""
        return cpu_seconds_ratio(path, kernel)
    track_cpu_seconds_ratio.unit = "x"

    def track_cpu_seconds(self, path, kernel):
        """CPU seconds of one parse + replay, every thread (best of ``ROUNDS``)."""
        return interleaved(path, kernel)["replay_cpu"]
    track_cpu_seconds.unit = "s"

    def track_events_per_second(self, path, kernel):
        """Lines per second of parse plus replay (the result's own timing)."""
        return replay(path, kernel).events_per_second
    track_events_per_second.unit = "lines/s"


class SplitLoop(_OnTheTrace):
    """The peer alone: the loop that reads the benchmark trace and splits each line.

    (Once, not per kernel: it was a method of :class:`TraceReplay`, run twice for nothing.)"""

    trace_file = "kmem_split_trace.txt"

    def time_split_loop(self, path):
        split_loop(path)
