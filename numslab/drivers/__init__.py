"""Tier 2, the ways into the engine: ``calls`` (from Python: native entry points of small
trampolines, and the C call gate when it is built), ``handles`` (allocators reachable from
compiled code) and ``jitapi`` (``numslab.jit``, for users' own @njit code)."""
