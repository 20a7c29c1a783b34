"""The maple tree's prefilled sheaves under will-it-scale ``mmap1``, on 7.3 and on ``next``.

The workload is will-it-scale ``mmap1`` on ``maple_node`` (``numslab.lab.maple``); ``next`` is 7.3
with the patch, which refills a prefilled sheaf from the barn before the slabs. Tracked per
generation: the counters that change ("mm/slub: refill prefilled sheaves from the barn") and the
slabs held. Compare the two generations of one run; the time is mostly the facade's Python calls,
five to ten a tree write."""
from numslab.lab.maple import maple_churn

OPS = 5000


class MapleChurn:
    """5000 tree writes on 4 CPUs, trees of 4096 nodes, a grace period every 32 writes."""

    params = (["7.3", "next"],)
    param_names = ["kernel"]
    timeout = 300
    number = 1
    repeat = 1

    def setup(self, kernel):
        self.run = maple_churn(kernel, ops=OPS)

    def track_ns_per_write(self, kernel):
        """Wall time a tree write, the writes alone (``maple_churn``'s ``ns_per_op``).

        A ``time_`` benchmark of the whole call timed the allocator's creation and the trees' 4096
        allocations with them."""
        return self.run["ns_per_op"]
    track_ns_per_write.unit = "ns"

    def track_sheaf_refill(self, kernel):
        """Objects refilled into sheaves from the slabs."""
        return self.run["counters"]["sheaf_refill"]
    track_sheaf_refill.unit = "objects"

    def track_barn_put_fail(self, kernel):
        """``kfree_rcu`` sheaves the full barn refused (flushed to the slabs)."""
        return self.run["counters"]["barn_put_fail"]
    track_barn_put_fail.unit = "sheaves"

    def track_alloc_slab(self, kernel):
        """New slabs made during the writes."""
        return self.run["counters"]["alloc_slab"]
    track_alloc_slab.unit = "slabs"

    def track_slabs(self, kernel):
        """Slabs the cache holds at the end."""
        return self.run["slabs"]
    track_slabs.unit = "slabs"
