"""The commands' lists for the second process that compiles engine units (``drivers.prewarm``).

The main job and ``numslab replay`` start :func:`prewarm` with the units they will need, in the
order they first call them; the child compiles them from the end of the list."""
from __future__ import annotations

import sys

from ..drivers.prewarm import main, pending, prewarm, start, stop, units_by_name  # noqa: F401
from ..lab.config import REPLAY_UNITS  # noqa: F401  (numslab replay's: the lab's own)

#: The main job's units (``examples/packet_pipeline.py``, bulk mode on 7.0, its default), in
#: the order it first calls them (tests/test_prewarm.py checks the list against a run).
MAIN_JOB_UNITS = (
    "pages.init_buddy", "sheaves.init_barns", "sheaves.kmalloc_internal", "kmalloc.kmalloc",
    "nocpu.slab_alloc_single", "slablists.new_slab", "slablists.allocate_slab",
    "pages.alloc_pages", "sheaves.init_percpu_sheaves", "sheaves.replace_empty_main",
    "sheaves.refill_sheaf", "nocpu.refill_objects", "nocpu.refill_new_slabs",
    "stats.live_objects", "ops.alloc_bulk", "ops.settle_pending", "slablists.slab_free",
    "nocpu.carve_whole_slabs", "ops.free_bulk", "ops.free_bulk_general", "bulk.free_bulk_raw",
    "stats.partial_counts",
    "stats.lost_objects",
    "rcusheaves.flush_rcu_sheaves", "ops.cache_release", "ops.kmem_cache_shrink",
    "sheaves.pcs_flush_all", "sheaves.sheaf_flush_main", "cpucache.flush_cpu",
    "sheaves.barn_shrink", "slablists.shrink_node", "slablists.discard_slab",
    "sheaves.kfree_internal", "sheaves.free_barns", "pages.free_pages")


if __name__ == "__main__":
    sys.exit(main())
