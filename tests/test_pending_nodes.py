"""Pending bulk takes and the held bitmap on a 2-node machine: batches taken on one node's CPU
and freed on the other's (each remote object straight to its slab: 7.3's
``free_to_pcs_bulk_split``, the remote batches before it), batches mixing both nodes' objects,
single remote frees, shrinks; each machine checked (``check_invariants``) after every call, and
a machine with pending takes against one without them, as in ``test_fuzz_pending``."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab import GFP_KERNEL
from numslab.engine.layout import G_PEND, PD_NPEND

from test_fuzz_pending import _masks_alike, _settled, _state_and_arena

GENS = ("7.0", "7.3", "next", "6.18")


class _Pair:
    """Two 4-CPU 2-node machines (CPUs 0-1 on node 0, 2-3 on node 1), pending takes on and
    off, each with a 64-byte cache of 16-object sheaves; every call is made on both."""

    def __init__(self, gen):
        self.runs = [numslab.SlabAllocator(nr_cpus=4, nr_nodes=2, memory="4M", kernel=gen,
                                           pending_takes=p) for p in (True, False)]
        self.caches = [sa.kmem_cache_create("n", 64, sheaf_capacity=16) for sa in self.runs]
        self.pended = self.split = 0

    def call(self, f):
        """``f(sa, cache)`` on both machines: the same value or the same error, the states
        alike (the first's pending record settled in a copy), both valid."""
        got = []
        for sa, c in zip(self.runs, self.caches):
            try:
                v = f(sa, c)
                got.append(("returned", v.tolist() if isinstance(v, np.ndarray) else v))
            except numslab.SlabError as e:
                got.append(("raised", type(e).__name__, str(e)))
        assert got[0] == got[1]
        on, off = self.runs
        self.pended += int(on.state.g[G_PEND] != 0 and on.state.pend[PD_NPEND] != 0)
        a, b = _settled(on), _state_and_arena(off)
        assert np.array_equal(a[0], _masks_alike(b[0])), "the settled states differ"
        assert np.array_equal(a[1], b[1]), "the arenas differ"
        for sa in self.runs:
            sa.check_invariants()
        return got[0]

    def take(self, n, cpu):
        """A bulk allocation of ``n`` on ``cpu``: its objects."""
        def f(sa, c):
            out = np.zeros(n, np.int64)
            assert sa.kmem_cache_alloc_bulk(c, GFP_KERNEL, n, out, cpu=cpu) == n
            return out
        return np.array(self.call(f)[1], np.int64)

    def free(self, objs, cpu):
        """A bulk free of ``objs`` on ``cpu``."""
        objs = np.array(objs, np.int64)
        self.split += any(self._node(a) != cpu // 2 for a in objs.tolist())
        return self.call(lambda sa, c: sa.kmem_cache_free_bulk(c, len(objs), objs.copy(),
                                                               cpu=cpu))

    def _node(self, a):
        """The node of the object at ``a`` (the first machine's: both alike)."""
        return (a >> 12) // self.runs[0].pages_per_node


@pytest.mark.parametrize("gen", GENS)
def test_pending_batches_freed_across_nodes(gen):
    """Batches of 1 to 64 taken whole from a CPU's main sheaf on either node (pending on the
    first machine), freed whole on the same CPU, on the other node's CPU (every object remote:
    to its slab), mixed with the other node's objects (split: the local ones to the sheaves,
    the remote ones to their slabs), or one object at a time remotely; both machines alike and
    valid after every call."""
    pair = _Pair(gen)
    rng = np.random.default_rng(5)
    held: list[int] = []                        # objects allocated earlier, kept a while
    for _ in range(120):
        cpu = int(rng.integers(4))
        n = int(rng.integers(1, 17 if rng.random() < 0.8 else 65))   # (most fit a sheaf)
        out = pair.take(n, cpu)
        how = int(rng.integers(5))
        if how == 0:                            # the pending batch, exactly, back
            pair.free(out, cpu)
        elif how == 1:                          # on the other node: all remote
            pair.free(out, (cpu + 2) % 4)
        elif how == 2 and held:                 # mixed with the other node's objects
            k = int(rng.integers(1, len(held) + 1))
            batch = list(out) + held[:k]
            del held[:k]
            rng.shuffle(batch)
            pair.free(batch, int(rng.integers(4)))
        elif how == 3:                          # one at a time, remotely
            for a in out.tolist():
                pair.call(lambda sa, c, a=a: sa.kmem_cache_free(c, a, cpu=(cpu + 2) % 4))
        else:
            held.extend(out.tolist())
        if rng.random() < 0.05:
            pair.call(lambda sa, c: sa.kmem_cache_shrink(c))
    pair.free(held, 0)
    for sa, c in zip(pair.runs, pair.caches):
        assert len(c) == 0
        sa.kmem_cache_destroy(c)
        sa.check_invariants()
    assert pair.pended >= 15 and pair.split >= 20, (pair.pended, pair.split)


@pytest.mark.parametrize("gen", GENS)
def test_a_remote_free_of_a_pending_batch_sends_it_to_its_slabs(gen):
    """A batch taken pending on node 0's CPU 0 and freed on node 1's CPU 2: no object of it
    enters CPU 2's sheaves (they are remote there: to their slabs), CPU 0's main sheaf does
    not get them back, and the held bits of each leave with them."""
    pair = _Pair(gen)
    warm = pair.take(32, 0)
    pair.free(warm, 0)
    out = pair.take(16, 0)
    on = pair.runs[0]
    assert on.state.g[G_PEND] == 16
    pair.free(out, 2)
    for a in out.tolist():
        assert on.find(a)["kind"] == "free object"
        assert not (int(on.state.held[a >> 9]) >> ((a >> 3) & 63)) & 1, a


@pytest.mark.parametrize("gen", GENS)
def test_with_its_node_full_a_cpu_takes_remote_objects_never_pending(gen):
    """Node 0's pages all taken: CPU 0's bulk allocations get node 1's objects, which no sheaf
    of CPU 0 holds (a sheaf takes local objects only), so none is taken pending and their free
    on CPU 0 sends them to their slabs; both machines alike and valid throughout."""
    pair = _Pair(gen)
    for sa in pair.runs:
        sa.drain_all_pages()
    while True:
        got = {sa.alloc_pages(0) for sa in pair.runs}
        assert len(got) == 1
        if got.pop() >> 12 >= pair.runs[0].pages_per_node:
            break
    for _ in range(6):
        out = pair.take(8, 0)
        assert all(pair._node(int(a)) == 1 for a in out)
        assert pair.runs[0].state.pend[PD_NPEND] == 0      # (at most a checked record)
        pair.free(out, 0)
    assert pair.pended == 0
