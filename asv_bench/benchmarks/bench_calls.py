"""The cost of one call from Python (issue 11): a bulk call of 16 objects, facade against @njit.

One ``kmem_cache_alloc_bulk`` or ``kmem_cache_free_bulk`` of 16 objects, served by the CPU's main
sheaf, through the facade (a plain ``SlabAllocator``: its C call gate) against the @njit function a
user would write to do the same work through ``numslab.jit``
(``singlebench.user_alloc_bulk``/``user_free_bulk``), called normally through Numba's dispatcher
(``njit-call``) and through its native entry point (``njit-fastcall``, a harder reference: no type
dispatch). The issue's target: the facade's call at most 1.3x the peer's."""
from numslab.tools import bench, singlebench


class CallCost:
    """ns per call, best of 50 samples of 32 calls (``singlebench.call_cost``).

    The Python loop over the 32 rows is in every figure."""

    params = (list(singlebench.CALL_IMPLS), list(singlebench.CALL_OPS), list(bench.KERNELS))
    param_names = ["impl", "op", "kernel"]
    timeout = 300

    def setup(self, impl, op, kernel):
        singlebench.make_calls(impl, kernel=kernel)    # compile outside the measurement

    def track_ns_per_call(self, impl, op, kernel):
        return singlebench.call_cost_table(impls=(impl,), kernel=kernel)[impl][op]
    track_ns_per_call.unit = "ns"


class CallCostRound:
    """32 ``kmem_cache_alloc_bulk`` calls of 16 then 32 ``kmem_cache_free_bulk`` calls.

    Divide by 64 for one call."""

    params = (list(singlebench.CALL_IMPLS), list(bench.KERNELS))
    param_names = ["impl", "kernel"]
    timeout = 300

    def setup(self, impl, kernel):
        self.alloc_all, self.free_all, *_ = singlebench.make_calls(impl, kernel=kernel)

    def time_calls(self, impl, kernel):
        self.alloc_all()
        self.free_all()
