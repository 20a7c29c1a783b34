"""Tier 2, the ways into the engine: ``calls``, ``gate``, ``handles`` and ``jitapi``.

``calls`` (from Python: native entry points of small trampolines), ``gate`` (the C call gate in
front of the hot facade calls, when it is built), ``handles`` (allocators reachable from compiled
code) and ``jitapi`` (``numslab.jit``, for users' own @njit code)."""
