"""Random operation sequences against a plain-Python reference model (hypothesis stateful).

After every step: live objects never overlap, each lies on a slab of its own cache at an
object boundary, every byte written into a live object is still there, the counters agree
with the model, and ``validate`` finds every invariant intact."""
from __future__ import annotations

from hypothesis import settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

import numslab
from numslab import GFP_KERNEL, SLAB_HWCACHE_ALIGN, SLAB_TYPESAFE_BY_RCU, __GFP_ZERO

KERNELS = ("7.0", "7.1", "6.18")       #: the behaviour tested here is both generations

ZERO = __GFP_ZERO   # a __GFP name inside the class body would be name-mangled

SIZES = st.sampled_from([8, 24, 64, 100, 192, 256, 500, 1024, 3000, 4096])
FLAGS = st.sampled_from([0, SLAB_HWCACHE_ALIGN, SLAB_TYPESAFE_BY_RCU])


class SlabModel(RuleBasedStateMachine):
    """The model: for each live object, its cache (or kmalloc size) and its fill byte."""

    @initialize(nodes=st.integers(1, 2), cpus=st.integers(2, 4))
    def setup(self, nodes, cpus):
        self.sa = numslab.SlabAllocator(nr_cpus=cpus, nr_nodes=nodes, memory="8M", seed=7)
        self.caches: list[numslab.KmemCache] = []
        self.live: dict[int, tuple[object, int, int]] = {}   # addr -> (owner, size, fill)
        self.fill = 0
        self.made = 0

    def _write(self, addr, owner, size):
        self.fill = (self.fill + 1) % 256
        self.sa.memory[addr:addr + size] = self.fill
        self.live[addr] = (owner, size, self.fill)

    @rule(size=SIZES, flags=FLAGS)
    def create(self, size, flags):
        if len(self.caches) < 5:
            self.made += 1
            self.caches.append(self.sa.kmem_cache_create(f"c{self.made}", size, flags=flags))

    @precondition(lambda self: self.caches)
    @rule(pick=st.integers(0, 99), cpu=st.integers(0, 3), n=st.integers(1, 40),
          zero=st.booleans())
    def alloc(self, pick, cpu, n, zero):
        c = self.caches[pick % len(self.caches)]
        cpu %= self.sa.nr_cpus
        for _ in range(n):
            a = self.sa.kmem_cache_alloc(c, GFP_KERNEL | (ZERO if zero else 0), cpu=cpu)
            if not a:
                break
            assert a not in self.live
            if zero:
                assert not self.sa.memory[a:a + c.object_size].any()
            self._write(a, c, c.object_size)

    @precondition(lambda self: self.caches)
    @rule(pick=st.integers(0, 99), node=st.integers(0, 1), cpu=st.integers(0, 3))
    def alloc_node(self, pick, node, cpu):
        c = self.caches[pick % len(self.caches)]
        node %= self.sa.nr_nodes
        a = self.sa.kmem_cache_alloc_node(c, GFP_KERNEL, node, cpu=cpu % self.sa.nr_cpus)
        if a:
            self._write(a, c, c.object_size)

    @rule(size=st.integers(1, 20000), cpu=st.integers(0, 3))
    def kmalloc(self, size, cpu):
        a = self.sa.kmalloc(size, cpu=cpu % self.sa.nr_cpus)
        if a:
            assert self.sa.ksize(a) >= size
            self._write(a, "kmalloc", size)

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 10 ** 6), cpu=st.integers(0, 3), n=st.integers(1, 30))
    def free(self, pick, cpu, n):
        addrs = sorted(self.live)
        for i in range(min(n, len(addrs))):
            a = addrs[(pick + i * 7919) % len(addrs)]
            if a not in self.live:
                continue
            owner, _, _ = self.live.pop(a)
            if owner == "kmalloc":
                self.sa.kfree(a, cpu=cpu % self.sa.nr_cpus)
            else:
                self.sa.kmem_cache_free(owner, a, cpu=cpu % self.sa.nr_cpus)

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 10 ** 6))
    def double_free_is_refused(self, pick):
        a = sorted(self.live)[pick % len(self.live)]
        owner = self.live[a][0]
        if owner == "kmalloc":
            self.sa.kfree(a)
            try:
                self.sa.kfree(a)
            except numslab.DoubleFreeError:
                pass
            except numslab.BadAddressError as e:   # a large kmalloc: its pages are free now
                assert self.live[a][1] > 8192 and "already freed" in str(e)
            else:
                raise AssertionError("double kfree accepted")
        else:
            self.sa.kmem_cache_free(owner, a)
            try:
                self.sa.kmem_cache_free(owner, a)
            except numslab.DoubleFreeError:
                pass
            else:
                raise AssertionError("double free accepted")
        del self.live[a]

    @precondition(lambda self: self.caches)
    @rule(pick=st.integers(0, 99))
    def shrink(self, pick):
        self.sa.kmem_cache_shrink(self.caches[pick % len(self.caches)])

    @precondition(lambda self: self.caches)
    @rule(pick=st.integers(0, 99))
    def destroy_if_empty(self, pick):
        c = self.caches[pick % len(self.caches)]
        if any(o is c for o, _, _ in self.live.values()):
            try:
                self.sa.kmem_cache_destroy(c)
            except numslab.CacheLeakError:
                return
            raise AssertionError("destroy of a cache with live objects accepted")
        self.sa.kmem_cache_destroy(c)
        self.caches.remove(c)

    @invariant()
    def objects_are_disjoint_and_keep_their_bytes(self):
        if not hasattr(self, "sa"):
            return
        spans = sorted((a, a + s) for a, (_, s, _) in self.live.items())
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end <= start
        st_ = self.sa.state
        for a, (owner, size, fill) in self.live.items():
            assert (self.sa.memory[a:a + size] == fill).all()
            if owner != "kmalloc":
                pfn = a >> 12
                head = pfn if st_.pg_flags[pfn] & 1 else st_.pg_head[pfn]
                assert st_.sl_cache[head] == owner._id
                assert (a - (head << 12)) % owner.slab_size == 0

    @invariant()
    def counters_match_the_model(self):
        if not hasattr(self, "sa"):
            return
        for c in self.caches:
            n = sum(1 for o, _, _ in self.live.values() if o is c)
            assert c.live_objects == n
            assert c.objects >= n
        self.sa.validate()


SlabModel.TestCase.settings = settings(max_examples=80, stateful_step_count=40,
                                       deadline=None)
TestSlabModel = SlabModel.TestCase
