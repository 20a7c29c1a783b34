"""``numslab.drivers.handles``: ``sa.handle`` inside @njit code, the process table of live
allocators, generations that make a stale handle fail cleanly, and the handle's Numba type
named after the engine's ABI."""
from __future__ import annotations

import gc
import sys
import weakref

import numba
import numpy as np
import pytest

import numslab
from numslab import jit as nj
from numslab.drivers import handles
from numslab.drivers.handles import ALLOCATOR_TABLE, SlabHandle
from numslab.engine import native

KERNELS = ("7.0", "6.18")       #: the behaviour tested here is both generations


@numba.njit
def live(h, cid, addr):
    return nj.is_live(h, cid, addr)


@numba.njit
def alloc(h, cid):
    return nj.kmem_cache_alloc(h, cid)


@numba.njit
def free(h, cid, addr):
    nj.kmem_cache_free(h, cid, addr)


@numba.njit
def kmalloc(h, size):
    return nj.kmalloc(h, size)


@numba.njit
def alloc_n(h, cid, n):
    out = np.empty(n, np.int64)
    got = nj.kmem_cache_alloc_bulk(h, cid, n, out)
    return got, out


def _slot_and_generation(value: int) -> tuple[int, int]:
    return value & 0xFFFF, value >> 16


def test_a_handle_works_inside_njit(sa):
    c = sa.kmem_cache_create("c", 64)
    h = sa.handle
    a = alloc(h, c.id)
    assert live(h, c.id, a) and c.live_objects == 1
    got, out = alloc_n(h, c.id, 5)
    assert got == 5 and all(live(h, c.id, int(x)) for x in out)
    free(h, c.id, a)
    assert not live(h, c.id, a)
    sa.kmem_cache_free_bulk(c, 5, out)
    assert c.live_objects == 0
    p = kmalloc(h, 100)
    assert live(h, numslab.NIL, p)
    sa.kfree(p)


def test_a_handle_is_its_allocators_table_entry(sa):
    h = sa.handle
    slot, gen = _slot_and_generation(h.value)
    assert 0 < slot < handles.MAX_ALLOCATORS and gen > 0
    assert ALLOCATOR_TABLE[2 * slot] == sa._st
    assert ALLOCATOR_TABLE[2 * slot + 1] == gen
    assert sa.handle.value == h.value                  # one value per allocator
    other = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    assert _slot_and_generation(other.handle.value)[0] != slot


def test_a_handle_keeps_its_allocator_alive():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    cid = c.id
    a = c.alloc()
    h = sa.handle
    gone = weakref.ref(sa)
    del sa, c
    gc.collect()
    assert gone() is not None                          # the handle holds it
    assert live(h, cid, a)
    b = alloc(h, cid)
    free(h, cid, b)
    free(h, cid, a)
    assert not live(h, cid, a)
    gone().validate()


def test_a_saved_handle_value_is_refused_once_its_allocator_is_gone():
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    cid, a = c.id, c.alloc()
    h = sa.handle
    value = h.value
    slot, _ = _slot_and_generation(value)
    gone = weakref.ref(sa)
    del sa, c, h
    gc.collect()
    assert gone() is None
    assert ALLOCATOR_TABLE[2 * slot] == 0 and ALLOCATOR_TABLE[2 * slot + 1] == 0
    stale = SlabHandle(value, None)
    for call in (lambda: live(stale, cid, a), lambda: alloc(stale, cid),
                 lambda: free(stale, cid, a), lambda: kmalloc(stale, 64),
                 lambda: alloc_n(stale, cid, 3)):
        with pytest.raises(numslab.AllocatorGoneError, match="no longer exists"):
            call()


@numba.njit
def handle_back(h):
    return h, (h, 1)


def test_a_handle_given_back_by_compiled_code_is_its_allocators_handle():
    # Numba had no box for it: "cannot convert native numslab.SlabHandle to Python object"
    # for a returned handle, SystemError ("a result with an exception set") in a tuple
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    cid = c.id
    h, (again, one) = handle_back(sa.handle)
    assert type(h) is SlabHandle and h.value == again.value == sa.handle.value and one == 1
    gone = weakref.ref(sa)
    del sa, c, again
    gc.collect()
    assert gone() is not None                          # the handle given back holds it
    free(h, cid, alloc(h, cid))
    value = h.value
    del h
    gc.collect()
    assert gone() is None
    with pytest.raises(numslab.AllocatorGoneError, match="no longer exists"):
        handles.handle_of(value)


@numba.njit
def arena_of(h):
    return nj.arena(h)


@numba.njit
def owned_view(h, addr, n):
    return handles.owned_arena(h, native.words_at(addr), n)


def test_an_arena_view_keeps_the_memory_alive_not_the_allocator():
    """``numslab.jit.arena`` returned to Python stays valid after its allocator is gone, as
    ``sa.memory`` does (it was a view of an unmapped arena: the next access crashed)."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    a = sa.kmalloc(64)
    slot, _ = _slot_and_generation(sa.handle.value)
    view = arena_of(sa.handle)
    assert view.size == sa.memory.size and view.ctypes.data == sa.memory.ctypes.data
    view[a:a + 8] = 7
    assert (sa.memory[a:a + 8] == 7).all()
    refs = sys.getrefcount(sa.memory)
    for _ in range(100):                       # views dropped in compiled code and in Python
        arena_of(sa.handle)
    after = sys.getrefcount(sa.memory)          # (outside the assert: its rewrite holds one)
    assert after == refs
    gone = weakref.ref(sa)
    del sa
    gc.collect()
    assert gone() is None and handles.OWNER_TABLE[slot] == 0 and slot not in handles._owners
    view[a:a + 8] = 9                          # the mapping is the view's now
    assert (view[a:a + 8] == 9).all()


def test_no_arena_view_of_an_allocator_that_is_gone():
    """The owner is looked up under the GIL with the handle's generation: an allocator gone
    after the caller's check gives an empty view (``arena`` then raises), never a view of
    memory nobody holds."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    value, addr = sa.handle.value, sa.memory.ctypes.data
    assert owned_view(sa.handle, addr, 64).size == 64
    del sa
    gc.collect()
    assert owned_view(SlabHandle(value, None), addr, 64).size == 0


@pytest.mark.parametrize("value", [0, -1, 1, 0xFFFF, (1 << 63) - 1, -(1 << 63), True])
def test_forged_handle_values_are_refused(value):
    keep = numslab.SlabAllocator(nr_cpus=2, memory="4M")   # some slot is live meanwhile
    c = keep.kmem_cache_create("c", 64)
    with pytest.raises(numslab.AllocatorGoneError, match="no longer exists"):
        alloc(SlabHandle(value, None), c.id)
    assert c.live_objects == 0


@pytest.mark.parametrize("value, error", [(1 << 64, OverflowError), (1.5, TypeError),
                                          ("1", TypeError), (None, TypeError)])
def test_handle_values_that_are_not_int64_fail_to_unbox(value, error):
    with pytest.raises(error):
        alloc(SlabHandle(value, None), 0)



def test_anything_but_a_handle_is_refused_by_name_when_compiled():
    # int(sa.handle), or the arguments swapped, failed deep in Numba's typing of numslab's
    # helpers (after a warning that it fell back to object mode), naming none of the user's
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)

    @numba.njit
    def one(h, cid):
        return nj.kmem_cache_alloc(h, cid)

    @numba.njit
    def pages(h):
        return nj.kmalloc(h, 5000)

    for call in (lambda: one(int(sa.handle), c.id), lambda: pages(sa.handle.value),
                 lambda: live(int(sa.handle), c.id, 64)):
        with pytest.raises(TypeError, match=r"numslab.jit: the first argument must be an "
                                            r"allocator's handle \(pass sa.handle itself"):
            call()
    with pytest.raises(TypeError, match=r"numslab.jit: a cache id must be an integer, not "
                                        r"numslab.SlabHandle\[.*\] \(sa.handle is the first "
                                        r"argument\) \(numslab.jit.kmem_cache_alloc, "
                                        r"called in .*<locals>.one at test_handles.py:\d+\)$"):
        one(c.id, sa.handle)                        # swapped
    assert c.live_objects == 0
    a = one(sa.handle, c.id)                        # the handle itself compiles and runs
    assert sa.find(a)["kind"] == "object"
    sa.kmem_cache_free(c, a)


def test_a_handle_frozen_into_compiled_code_is_refused_by_name():
    # a global (or closure variable) is frozen into the machine code: it keeps no allocator
    # alive, and cached, in another process it names whichever allocator has its slot and
    # generation; lowering it failed with a bare NumbaNotImplementedError
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    frozen, cid = sa.handle, c.id

    @numba.njit
    def from_global():
        return nj.kmem_cache_alloc(frozen, cid)

    with pytest.raises(TypeError, match=r"numslab.jit: <SlabHandle slot \d+> is a global or "
                                        r"closure variable of compiled code; pass sa.handle"):
        from_global()
    assert c.live_objects == 0
    assert alloc(sa.handle, cid) > 0                # as an argument it is taken


def test_a_frozen_handle_refusal_names_the_function_and_line():
    """The refusal of a handle frozen into compiled code named neither the function nor the
    line reading it (in a module of many @njit functions, which one?), where every other
    compile-time refusal of ``numslab.jit`` names both."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    frozen, cid = sa.handle, c.id

    @numba.njit
    def reads_a_closure():
        x = cid
        return nj.kmem_cache_alloc(frozen, x)

    line = reads_a_closure.py_func.__code__.co_firstlineno + 3
    with pytest.raises(TypeError, match=r"pass sa.handle to the function as an argument "
                                        r"\(in .*reads_a_closure at test_handles.py:"
                                        + str(line) + r"\)"):
        reads_a_closure()
    assert c.live_objects == 0

def test_slots_are_reused_with_a_new_generation():
    gc.collect()                               # nothing else is freed meanwhile
    first = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = first.kmem_cache_create("c", 64)
    cid = c.id
    old = first.handle.value
    del first, c
    gc.collect()
    second = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    new = second.handle.value
    (s1, g1), (s2, g2) = _slot_and_generation(old), _slot_and_generation(new)
    assert s2 == s1 and g2 != g1 and g2 > 0
    with pytest.raises(numslab.AllocatorGoneError, match="no longer exists"):
        alloc(SlabHandle(old, None), cid)          # the slot's new allocator is not reached
    assert second.kmem_cache_create("c", 64).live_objects == 0
    d = second.find_cache("c")
    a = alloc(second.handle, d.id)
    assert d.live_objects == 1
    free(second.handle, d.id, a)


def test_every_allocator_gives_its_slot_back():
    gc.collect()
    free_before = len(handles._free_slots)
    made = [numslab.SlabAllocator(nr_cpus=1, memory="4M") for _ in range(5)]
    values = {sa.handle.value for sa in made}
    assert len(values) == 5 and len(handles._free_slots) == free_before - 5
    del made
    gc.collect()
    assert len(handles._free_slots) == free_before
    for v in values:
        slot = v & 0xFFFF
        assert ALLOCATOR_TABLE[2 * slot] == 0 or ALLOCATOR_TABLE[2 * slot + 1] != v >> 16


def test_unregister_ignores_a_stale_handle():
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    value = sa.handle.value
    slot, gen = _slot_and_generation(value)
    handles.unregister(((gen + 1) << 16) | slot)     # another generation: not this one
    assert ALLOCATOR_TABLE[2 * slot] == sa._st
    c = sa.kmem_cache_create("c", 64)
    free(sa.handle, c.id, alloc(sa.handle, c.id))


def test_the_handle_type_is_named_after_the_abi(sa):
    t = numba.typeof(sa.handle)
    assert isinstance(t, handles.SlabHandleType)
    assert native.ABI in t.name and native.ABI in str(t)
    assert t == numba.typeof(SlabHandle(0, None))
    live(sa.handle, 0, 0)
    # a user's function is compiled (and cached) for this ABI's handle type
    assert any(native.ABI in str(sig[0]) for sig in live.signatures)


def test_an_allocator_made_while_the_collector_finalizes_another_does_not_deadlock():
    """``handles.register`` allocates under its lock; the collector may run there and
    finalize an allocator that only a reference cycle held, whose finalizer unregisters it
    under the same lock, in the same thread: a plain lock hung the interpreter (a test
    module met it once the registration kept a weak method). Run in a child process, so
    that a hang fails here instead of hanging the suite."""
    import subprocess
    script = (
        "import gc, weakref, numslab\n"
        "from numslab.drivers import handles\n"
        "gc.disable()                     # the collector runs where the patches say\n"
        "real = weakref.WeakMethod\n"
        "def collecting(meth, callback=None):\n"
        "    gc.collect()\n"
        "    return real(meth, callback)\n"
        "weakref.WeakMethod = collecting\n"
        "class Owners(dict):              # an allocation inside the lock\n"
        "    def __setitem__(self, k, v):\n"
        "        gc.collect()\n"
        "        super().__setitem__(k, v)\n"
        "handles._owners = Owners(handles._owners)\n"
        "for i in range(3):\n"
        "    sa = numslab.SlabAllocator(memory='1M')\n"
        "    sa.cycle = [sa]              # only the collector frees it\n"
        "    del sa\n"
        "print('done')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-2000:]


def test_a_refused_argument_of_a_call_from_python_names_the_call_and_line():
    """A ``numslab.jit`` call made from Python (a user's ``@njit`` function run as plain
    Python under ``NUMBA_DISABLE_JIT=1``, README's way to debug it, or a direct call) with an
    argument of the wrong type was refused naming neither the call nor its line: "objs, the
    array of objects to free, must be ... not reflected list(int64)"."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    a = sa.kmem_cache_alloc(c)
    line = sys._getframe().f_lineno + 4
    with pytest.raises(TypeError, match=r"not reflected list\(int64\).* \(numslab.jit."
                                        r"kmem_cache_free_bulk, called at test_handles.py:"
                                        + str(line) + r"\)$"):
        nj.kmem_cache_free_bulk(sa.handle, c.id, 1, [a])
    with pytest.raises(TypeError, match=r"not int64 \(numslab.jit.kmem_cache_alloc, called "
                                        r"at test_handles.py:\d+\)$"):
        nj.kmem_cache_alloc(int(sa.handle), c.id)
    assert c.live_addresses().tolist() == [a]
    sa.kmem_cache_free(c, a)


def test_a_handle_in_a_jitclass_outliving_its_allocator_says_what_to_keep():
    """A handle kept in a jitclass (or a typed List or Dict) is a plain integer there and
    keeps no allocator alive: a pool class made in a function lost its allocator as the
    function returned, and its next call said only "the handle's allocator no longer exists".
    The refusal now says why and what to keep, from compiled code and from Python."""
    from numba.experimental import jitclass

    def make_pool():
        sa = numslab.SlabAllocator(nr_cpus=2, memory="4M")
        c = sa.kmem_cache_create("c", 64)

        @jitclass([("h", numba.typeof(sa.handle)), ("cid", numba.int64)])
        class Pool:
            def __init__(self, h, cid):
                self.h, self.cid = h, cid

            def get(self):
                return nj.kmem_cache_alloc(self.h, self.cid)
        return Pool(sa.handle, c.id)

    pool = make_pool()
    gc.collect()
    hint = (r"the handle's allocator no longer exists \(a handle kept in compiled code's "
            r"values, a jitclass, typed List or Dict, keeps no allocator alive: keep the "
            r"allocator in a Python name while they use it\)")
    with pytest.raises(numslab.SlabError, match=r"^numslab.jit.kmem_cache_alloc: " + hint):
        pool.get()
    with pytest.raises(numslab.SlabError, match=r"^numslab.jit: " + hint):
        pool.h


def test_help_shows_what_a_handle_is_not_ints_methods(sa):
    """``help(numslab.jit)`` gave ``SlabHandle`` some 280 lines, nearly all ``int``'s
    inherited methods, and opened with ``SlabHandle(value, owner)`` as if users made one.
    ``help`` now shows what a handle is, how to get one and how long it lasts, and the
    handle is still an ``int`` to Python and the same type to Numba."""
    import pydoc
    own = pydoc.render_doc(SlabHandle, renderer=pydoc.plaintext)
    module = pydoc.render_doc(nj, renderer=pydoc.plaintext)
    section = module[module.index("    class SlabHandle"):module.index("FUNCTIONS")]
    for text in (own, section):
        assert "inherited from builtins.int" not in text and "__add__" not in text
        assert "SlabHandle(value" not in text and "__new__" not in text
        for said in ("What it is:", "How to get one: ``sa.handle``", "Lifetime:",
                     "keeps its allocator alive", "numslab.AllocatorGoneError", "value"):
            assert said in text, said
    assert len(section.splitlines()) < 60
    h = sa.handle
    assert isinstance(h, int) and "bit_length" in dir(h) and h + 0 == h.value
    assert numba.typeof(h) is handles.slab_handle and repr(h).startswith("<SlabHandle slot ")
