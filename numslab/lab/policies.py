"""The seed's remedies against fragmentation as replay policies (issue 15): how each one is
switched on for a replayed machine, and what runs at the replay's sample points.

A policy is one word of a configuration (``7.0:sorted``, ``6.18:nodes=2:drain=100``):

* ``sorted`` – node partial lists kept sorted by free objects, fewest first
  (``SlabAllocator(partial_order="sorted")``).
* ``shrink`` – ``kmem_cache_shrink`` of every cache at every sample point: the control for
  ``mobility``, which shrinks first too (sheaves and CPU slabs flushed, empty slabs freed,
  the partial lists re-ordered as the kernel's shrink does).
* ``mobility`` / ``mobility=R`` – every cache's objects movable (Harding's Slab Movable
  Objects): at every sample point each cache is compacted (``KmemCache.compact(R)``, R the
  ``defrag_used_ratio``, 30 by default; 100 packs as tightly as slabs allow) and the replay's
  pointer map follows the moves (``numslab.remap``). Every cache is taken to be movable: the
  bound of what mobility could give, as the RFC hoped ("the only way to truly solve the
  problem"); the allocator's own sheaves stay put.
* ``drain=R`` – every cache's ``remote_node_defrag_ratio`` set to R (0..100): how often a
  CPU may refill from another node's partial slabs (it matters on ``nodes=2`` and more).

Eviction (``get``/``kick``) is not a replay policy: its owners free the kicked objects, and a
trace frees them later, so the replay would have to invent the workload.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SlabError
from ..facade.defragapi import remap

#: Policy words this module handles (``replay.POLICIES`` lists every policy).
REMEDIES = ("sorted", "shrink", "mobility", "mobility=R", "drain=R")


def check(text: str) -> str | None:
    """The policy ``text`` spelt canonically if it is a remedy, else None.

    Raises
    ------
    SlabError
        For a remedy word with an impossible number.
    """
    if text in ("sorted", "shrink", "mobility"):
        return text
    for word in ("mobility=", "drain="):
        if text.startswith(word):
            n = text[len(word):]
            if n.isdigit() and 0 <= int(n) <= 100:
                return f"{word}{int(n)}"
            raise SlabError(f"policy {text!r}: {word}R needs R in 0..100")
    return None


def allocator_options(policy: str) -> dict[str, Any]:
    """Keyword arguments of ``SlabAllocator`` for ``policy``."""
    return {"partial_order": "sorted"} if policy == "sorted" else {}


def set_up(caches: list[Any], policy: str) -> None:
    """Switch ``policy`` on for the replay's caches (KmemCache objects), once made."""
    if policy.startswith("drain="):
        ratio = int(policy.split("=")[1])
        for c in caches:
            c.remote_node_defrag_ratio = ratio


def at_sample(caches: list[Any], policy: str, addr: np.ndarray) -> int:
    """Run ``policy``'s periodic work at a sample point: shrink or compact every cache.
    ``addr`` (int64[npid], the replay's live pointers' addresses) is remapped in place
    after moves. Objects moved."""
    if policy == "shrink":
        for c in caches:
            c.shrink()
        return 0
    if not policy.startswith("mobility"):
        return 0
    ratio = int(policy.split("=")[1]) if "=" in policy else None
    olds, news = [], []
    for c in caches:
        old, new = c.compact(ratio)
        if len(old):
            olds.append(old)
            news.append(new)
    if not olds:
        return 0
    old, new = np.concatenate(olds), np.concatenate(news)
    live = addr != 0
    addr[live] = remap(addr[live], old, new)
    return len(old)
