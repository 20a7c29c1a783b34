"""The single alloc+free pair inside @njit (issue 11), against a FIFO ring of free indices.

256 live objects; each round frees one chosen at random (xorshift64, the same sequence everywhere),
allocates a new one in its place and writes a word into it. The peer is a FIFO ring of free indices
written in the loop (a LIFO stack pair would be folded away by the compiler); numslab runs the same
loop through ``numslab.jit.kmem_cache_alloc``/``kmem_cache_free`` on the benchmark cache as the
generation makes it (``slab``: sheaves of 28 under 7.0, none under 6.18) and with sheaves asked for
(``slab-sheaves``). ``singlebench.ring_single_pair`` and ``singlebench.slab_single_pair`` are the
loops. ``track_ratio_to_ring`` is the issue's figure: numslab's time per round over the ring's,
both measured in one process, interleaved, best of 9 (cells timed apart swing with the machine: the
ring alone moved from 2.3 to 3.6 ns between runs here)."""
from numslab.tools import bench, singlebench

ROUNDS = singlebench.SINGLE_ROUNDS


class SinglePairJit:
    params = (list(singlebench.SINGLE_IMPLS), list(bench.KERNELS))
    param_names = ["impl", "kernel"]
    timeout = 300

    def setup(self, impl, kernel):
        self.run = singlebench.make_single_pair(impl, kernel=kernel)

    def time_rounds(self, impl, kernel):
        """ROUNDS rounds (and the set-up and release of the 256 live objects)."""
        self.run(ROUNDS)

    def track_ns_per_round(self, impl, kernel):
        """Best of 5 runs of ROUNDS rounds, in ns per round."""
        return min(bench.time_per_object(self.run, 1, ROUNDS, 1) for _ in range(5))
    track_ns_per_round.unit = "ns"


class SinglePairRatio:
    params = ([i for i in singlebench.SINGLE_IMPLS if i != "fifo-ring"], list(bench.KERNELS))
    param_names = ["impl", "kernel"]
    timeout = 300

    def track_ratio_to_ring(self, impl, kernel):
        """ns per round of ``impl`` over the FIFO ring's, same process, interleaved."""
        best = singlebench.single_pair_table(repeat=9, impls=("fifo-ring", impl), kernel=kernel)
        return best[impl] / best["fifo-ring"]
    track_ratio_to_ring.unit = "x the ring"
