"""The single alloc+free pair inside @njit (issue 11): 256 live objects, each round frees one
chosen at random (xorshift64, the same sequence everywhere), allocates a new one in its place
and writes a word into it. The peer is a FIFO ring of free indices written in the loop (a
LIFO stack pair would be folded away by the compiler); numslab runs the same loop through
``numslab.jit.kmem_cache_alloc``/``kmem_cache_free`` on the benchmark cache without sheaves
(``slab``) and with 32-object sheaves (``slab-sheaves``). ``bench.ring_single_pair`` and
``bench.slab_single_pair`` are the loops; compare the impls of one run (ns per round =
time / ROUNDS)."""
from numslab.tools import bench

ROUNDS = bench.SINGLE_ROUNDS


class SinglePairJit:
    params = (list(bench.SINGLE_IMPLS), list(bench.KERNELS))
    param_names = ["impl", "kernel"]
    timeout = 300

    def setup(self, impl, kernel):
        self.run = bench.make_single_pair(impl, kernel=kernel)

    def time_rounds(self, impl, kernel):
        """ROUNDS rounds (and the set-up and release of the 256 live objects)."""
        self.run(ROUNDS)

    def track_ns_per_round(self, impl, kernel):
        """Best of 5 runs of ROUNDS rounds, in ns per round."""
        return min(bench.time_per_object(self.run, 1, ROUNDS, 1) for _ in range(5))
    track_ns_per_round.unit = "ns"
