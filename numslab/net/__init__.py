"""The packet-batch pipeline (the main job) and its packet sources, apart from the tiers.

:func:`run_pipeline` allocates and frees through ``numslab.jit`` in ``@njit`` code; capture
files (pcap, pcapng) and seeded synthetic traffic both come as a flat :class:`Packets` table of
NumPy arrays ready for ``@njit`` header parsers. It imports the engine, facade and
``numslab.jit``; nothing in the package imports it.
"""
from .capture import CaptureError, Packets, read_capture, write_pcap
from .pipeline import FLOW_DTYPE, MODES, SKB_DTYPE, LeakError, PipelineResult, run_pipeline
from .traffic import (TrafficTruth, count_flow_sessions, generate_traffic,
                      generate_traffic_with_truth)

__all__ = ["CaptureError", "FLOW_DTYPE", "LeakError", "MODES", "Packets", "PipelineResult",
           "SKB_DTYPE", "TrafficTruth", "count_flow_sessions", "generate_traffic",
           "generate_traffic_with_truth", "read_capture", "run_pipeline", "write_pcap"]
