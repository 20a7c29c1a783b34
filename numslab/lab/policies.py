"""The seed's remedies against fragmentation as replay policies (issue 15).

How each one is switched on for a replayed machine, and what runs at the replay's sample points.

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
* ``leansheaves`` – sheaf-aware mobility, our design (Harding's SMO predates 7.0's
  sheaves; 7.0 only): a CPU's main sheaf holds at most a slab's objects shared among the
  CPUs. An allocation that finds the sheaves empty refills main from the partial slabs
  only (or takes one object of a new slab as ``___slab_alloc`` does when sheaves cannot
  serve), and a free that finds main at that limit first gives its objects back to their
  slabs (``engine.leansheaves.refill_main_lean``, ``flush_main_lean``): no spare or barn
  sheaves, no slab taken to fill a sheaf, so free objects parked in sheaves hold at most
  one slab of a cache, the slack ``every=free`` allows.

Remedies combine, one word of each kind (``7.0:sorted:leansheaves:mobility=100``): ``sorted``
then makes sheaf refills take from the fullest partial slabs.

The work of ``shrink`` and ``mobility`` runs at the sample points, every N events
(``every=N``) or, with ``every=free``, in the compiled replay loop on one cache after a
free that leaves it a slab more than its live objects need (``kernels._free_trigger``; a
shrink there is a compaction at ratio 0). Under ``mobility`` the replay writes each
object's pointer id in its first word, so a moved object names its owner
(``kernels.compact_remap``) and the pointer map is never remapped whole.

Eviction (``get``/``kick``) is not a replay policy: its owners free the kicked objects, and a
trace frees them later, so the replay would have to invent the workload.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidArgumentError as BadArg
from .kernels import NO_TRIGGER, compact_remap

#: Policy words this module handles (``replay.POLICIES`` lists every policy).
REMEDIES = ("sorted", "shrink", "mobility", "mobility=R", "drain=R", "leansheaves")
#: the kinds of remedy word, in the order a combination is spelt (one word of each kind)
_KINDS = ("sorted", "leansheaves", "work", "drain")


def _kind(word: str) -> str:
    """The kind of a (checked) remedy word: ``shrink`` and ``mobility`` are ``work``."""
    if word in ("shrink",) or word.startswith("mobility"):
        return "work"
    return word.split("=")[0]


def words(policy: str) -> list[str]:
    """The words of a policy (a remedy combination is spelt with ``:``)."""
    return policy.split(":")


def combine(parts: list[str]) -> str:
    """Remedy words (each checked by :func:`check`) as one policy, in canonical order.

    Raises
    ------
    SlabError
        For two words of one kind (``shrink`` and ``mobility``, two ``drain=R``...).
    """
    by_kind: dict[str, str] = {}
    for w in parts:
        k = _kind(w)
        if k in by_kind and by_kind[k] != w:
            raise BadArg(f"policies {by_kind[k]!r} and {w!r} do not combine (one "
                         f"{'shrink or mobility' if k == 'work' else k} word at most)")
        by_kind[k] = w
    return ":".join(by_kind[k] for k in _KINDS if k in by_kind)


def _word(policy: str, kind: str) -> str | None:
    """The word of ``kind`` in ``policy``, or None."""
    return next((w for w in words(policy) if _kind(w) == kind), None)


def check(text: str) -> str | None:
    """The policy ``text`` spelt canonically if it is a remedy, else None.

    Raises
    ------
    SlabError
        For a remedy word with an impossible number.
    """
    if text in ("sorted", "shrink", "mobility", "leansheaves"):
        return text
    for word in ("mobility=", "drain="):
        if text.startswith(word):
            n = text[len(word):]
            if n.isdecimal() and 0 <= int(n) <= 100:
                return f"{word}{int(n)}"
            raise BadArg(f"policy {text!r}: {word}R needs R in 0..100")
    return None


def allocator_options(policy: str) -> dict[str, Any]:
    """Keyword arguments of ``SlabAllocator`` for ``policy``."""
    return {"partial_order": "sorted"} if "sorted" in words(policy) else {}


def set_up(caches: list[Any], policy: str) -> None:
    """Switch ``policy`` on for the replay's caches (KmemCache objects), once made."""
    drain = _word(policy, "drain")
    if drain is not None:
        ratio = int(drain.split("=")[1])
        for c in caches:
            c.remote_node_defrag_ratio = ratio


def work_ratio(policy: str) -> int:
    """The compaction ratio of ``policy``'s work; ``kernels.NO_TRIGGER`` for a policy with no work.

    R of ``mobility=R`` (-1 for ``mobility``: each cache's ``defrag_used_ratio``), 0 for ``shrink``
    (a compaction that moves nothing is a ``kmem_cache_shrink``)."""
    w = _word(policy, "work")
    if w == "shrink":
        return 0
    if w is not None:
        return int(w.split("=")[1]) if "=" in w else -1
    return NO_TRIGGER


def free_work(sa: Any, caches: list[Any], policy: str, after_free: bool, npid: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                         np.ndarray, int, int] | None:
    """The replay kernel's ``work`` for ``policy``, or None when it has no work for the loop.

    None means no mobility, no ``every=free``, no ``leansheaves``; else ``(mem, nlive, floor,
    per_slab, old, new, ratio, lean)``. ``mem`` (int64 words of the arena; empty unless objects
    move) lets the replay store each object's pointer id in its first word, so that a move finds
    its owner; ``nlive`` (int64[max_caches]) the live objects per cache, kept by the loop;
    ``floor`` and ``per_slab`` (int64[max_caches]) the excess slabs a cache's last compaction left,
    and its objects per slab; ``old``/``new`` (int64[npid]) the moves' room; ``ratio`` the
    compaction ratio run after a free (``after_free``, the configuration's ``every=free``; else
    ``NO_TRIGGER``); ``lean`` 1 for ``leansheaves``, else 0.

    Raises
    ------
    SlabError
        For ``every=free`` with a policy that has no work.
    """
    moves = (_word(policy, "work") or "").startswith("mobility")
    lean = int("leansheaves" in words(policy))
    ratio = work_ratio(policy) if after_free else NO_TRIGGER
    if after_free and ratio == NO_TRIGGER:
        raise BadArg(f"every=free: policy {policy!r} has no work to run (shrink or "
                     f"mobility)")
    if not moves and not after_free and not lean:
        return None
    ncache = sa.state.ca.shape[0]
    mem = sa.memory.view(np.int64) if moves else np.zeros(0, np.int64)
    per_slab = np.zeros(ncache, np.int64)
    for c in caches:
        per_slab[c.id] = c.objs_per_slab
    room = npid if moves else 0
    return (mem, np.zeros(ncache, np.int64), np.zeros(ncache, np.int64), per_slab,
            np.empty(room, np.int64), np.empty(room, np.int64), ratio, lean)


def at_sample(caches: list[Any], policy: str, addr: np.ndarray, work: tuple | None) -> int:
    """Run ``policy``'s periodic work at a sample point: shrink or compact every cache.

    ``addr`` (int64[npid], the replay's live pointers' addresses) follows the moves (each object's
    first word in ``work``'s ``mem`` names its pointer id; ``work`` is :func:`free_work`'s).
    Objects moved."""
    w = _word(policy, "work")
    if w == "shrink":
        for c in caches:
            c.shrink()
        return 0
    if w is None:
        return 0
    ratio = work_ratio(policy)
    mem, old, new = work[0], work[4], work[5]
    moved = 0
    for c in caches:
        moved += compact_remap(c._sa.handle, c.id, ratio, 0, mem, addr, old, new)
    return moved
