"""Tier 1, the compiled engine.

The state layout and SLUB's layers as Numba kernels over raw pointers (no checks of their
arguments, no Python objects). Operations are ``units``, compiled once on their first call (see
``native``); the modules are imported here in one fixed order, which fixes every unit's slot in the
process-wide table."""
from . import native, gilguard, layout, pages, freelist, slablists, live, checks  # noqa: F401
from . import cpucache, bulk, kmalloc  # noqa: F401
from . import sheaves, prefill, leansheaves, rcusheaves, stats, ops, defrag  # noqa: F401
