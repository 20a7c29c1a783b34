"""A fuzzer of the capture reader (issue 13): valid pcap and pcapng files (both byte orders,
every pcapng block kind the reader knows) mutated at random (bytes flipped, length fields
set to random values, cut anywhere, garbage appended) and read. The reader's kernels index
the file with no bounds checks, so the campaign runs in a child interpreter: a crash would
show as its exit status. Every file must be read into a table whose packets all lie inside
the file, or refused with a ``CaptureError`` (a cut record warns and keeps what precedes it)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

CAMPAIGN = textwrap.dedent(r'''
    import json, os, random, struct, sys, tempfile, warnings
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from test_net_capture import epb, frames, idb, pb, pcap_bytes, shb, spb
    from numslab.net.capture import CaptureError, CaptureTruncatedWarning, read_capture

    rng = random.Random(int(sys.argv[1]))
    rounds = int(sys.argv[2])

    def base():
        fr = frames(rng.randrange(1, 12), seed=rng.randrange(1 << 30))
        be = rng.random() < 0.5
        if rng.random() < 0.5:
            recs = [(1_700_000_000 + i, i, f, len(f) + rng.randrange(0, 3)) for i, f in enumerate(fr)]
            return pcap_bytes(recs, be=be, nano=rng.random() < 0.5)
        blocks = shb(be=be) + idb(1, be=be)
        for i, f in enumerate(fr):
            kind = rng.randrange(3)
            blocks += (epb(0, 1000 * i, f, be=be) if kind == 0 else
                       pb(0, 1000 * i, f, be=be) if kind == 1 else spb(f, be=be))
        return blocks

    def mutate(b):
        b = bytearray(b)
        for _ in range(rng.randrange(1, 4)):
            how = rng.randrange(5)
            if how == 0 and b:                              # flip bytes
                for _ in range(rng.randrange(1, 8)):
                    b[rng.randrange(len(b))] = rng.randrange(256)
            elif how == 1 and len(b) >= 4:                  # a 32-bit field set at random
                p = rng.randrange(0, len(b) - 3) & ~3
                v = rng.choice([0, 1, 3, 0xFFFFFFFF, 0x7FFFFFFF, 1 << 16, len(b), len(b) + 4,
                                rng.randrange(1 << 32)])
                b[p:p + 4] = struct.pack("<I", v)
            elif how == 2:                                  # cut anywhere
                b = b[:rng.randrange(len(b) + 1)]
            elif how == 3:                                  # garbage appended
                b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            else:                                           # a block repeated
                if len(b) > 8:
                    p, q = sorted(rng.randrange(len(b)) for _ in range(2))
                    b[q:q] = b[p:q]
        return bytes(b)

    out = {"files": 0, "read": 0, "refused": 0, "cut": 0, "packets": 0, "bad": []}
    fd, path = tempfile.mkstemp(suffix=".cap")
    os.close(fd)
    for r in range(rounds):
        content = mutate(base())
        with open(path, "wb") as f:
            f.write(content)
        out["files"] += 1
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                p = read_capture(path, mmap=rng.random() < 0.5)
            out["cut"] += any(issubclass(x.category, CaptureTruncatedWarning) for x in w)
        except CaptureError:
            out["refused"] += 1
            continue
        out["read"] += 1
        n = len(p.offset)
        out["packets"] += n
        ok = (len(p.caplen) == n and len(p.wirelen) == n and len(p.ts_ns) == n
              and (n == 0 or (int(p.offset.min()) >= 0 and int(p.caplen.min()) >= 0
                              and int((p.offset + p.caplen).max()) <= p.data.size)))
        if not ok:
            out["bad"].append(content.hex())
    os.unlink(path)
    print(json.dumps(out))
''')


def test_mutated_captures_are_read_or_refused_never_crash(tmp_path):
    tests = str(Path(__file__).parent)
    script = tmp_path / "campaign.py"
    script.write_text(CAMPAIGN)
    r = subprocess.run([sys.executable, str(script), "20261203", "600", tests],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"the reader crashed (status {r.returncode}): {r.stderr[-2000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["bad"] == [], f"packets outside the file: {out['bad'][:2]}"
    assert out["files"] == 600
    # the campaign exercised every outcome: whole reads, refusals and cut records
    assert out["read"] > 50 and out["refused"] > 50 and out["cut"] > 10, out
