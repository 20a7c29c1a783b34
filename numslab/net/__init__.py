"""Packet sources for numslab's packet-batch pipeline.

Capture files and synthetic traffic, both as a flat :class:`Packets` table of NumPy arrays.
"""
from .capture import CaptureError, Packets, read_capture, write_pcap

__all__ = ["CaptureError", "Packets", "read_capture", "write_pcap"]
