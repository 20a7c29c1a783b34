"""Bad input to numslab.net and the packet pipeline's command line: clear errors, no crash,
no hang, no silently wrong numbers."""
from __future__ import annotations

import numpy as np
import pytest

from numslab.errors import SlabError
from numslab.net import generate_traffic, run_pipeline, write_pcap


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
