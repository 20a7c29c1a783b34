"""The packet-batch pipeline (examples/packet_pipeline.py's engine) in every allocation mode.

It runs on built-in traffic. Under 6.18 bulk and the array modes beat ``single`` per packet;
under 7.x a batch of 64 exceeds the default sheaves (skbuff records: 60 objects), so they
reach the slab layer and no longer do (README, Performance)."""
from numslab.net import generate_traffic
from numslab.net.pipeline import run_pipeline

PACKETS = 100_000


class Pipeline:
    params = (["single", "bulk", "local", "partial", "new"],)
    param_names = ["mode"]
    timeout = 600

    def setup(self, mode):
        self.packets = generate_traffic(PACKETS, seed=0)
        run_pipeline(generate_traffic(4096, seed=1), mode)      # compile outside the timing

    def time_run(self, mode):
        run_pipeline(self.packets, mode)

    def track_ns_per_packet(self, mode):
        return min(run_pipeline(self.packets, mode).ns_per_packet for _ in range(3))
    track_ns_per_packet.unit = "ns"
