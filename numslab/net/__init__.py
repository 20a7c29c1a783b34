"""Packet sources for numslab's packet-batch pipeline.

Capture files (pcap, pcapng) and seeded synthetic traffic, both as a flat :class:`Packets`
table of NumPy arrays ready for ``@njit`` header parsers.
"""
from .capture import CaptureError, Packets, read_capture, write_pcap
from .traffic import (TrafficTruth, count_flow_sessions, generate_traffic,
                      generate_traffic_with_truth)

__all__ = ["CaptureError", "Packets", "TrafficTruth", "count_flow_sessions",
           "generate_traffic", "generate_traffic_with_truth", "read_capture", "write_pcap"]
