"""Threads and the engine (``facade/threads.py``, ``native.ENGINE_BUSY``): a unit compiled on
its first call in the middle of an operation must not let another thread in."""
from __future__ import annotations

import os
import subprocess
import sys

import numba
import pytest
from numba import types
from numba.extending import intrinsic

import numslab
from numslab.engine import native
from numslab.engine.layout import C_MAIN, C_PARKED, SH_SIZE
from numslab.facade.threads import no_sheaf

from conftest import assert_unchanged, snapshot

KERNELS = ("7.0", "6.18")     #: the behaviour tested here is both generations'


_THREADS_CHILD = """
import random, threading, numslab
sa = numslab.SlabAllocator()
def work(seed):
    rng = random.Random(seed); held = []
    for i in range(6000):
        if held and rng.random() < 0.45:
            sa.kfree(held.pop(rng.randrange(len(held))))
        else:
            held.append(sa.kmalloc(rng.choice([16, 64, 200, 1000, 5000, 20000])))
    for a in held:
        sa.kfree(a)
threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
for t in threads: t.start()
for t in threads: t.join()
sa.validate()
print(sum(len(c) for c in sa.caches))
"""


@pytest.mark.parametrize("gate", ["1", "0"])
def test_threads_meeting_units_on_their_first_call_take_turns(gate):
    """In a fresh interpreter every unit is compiled (or loaded) on its first call, maybe in
    the middle of another's operation, and that lets other threads run: they must wait
    (native.ENGINE_BUSY), through the call gate and the Python path alike. Four threads
    churning kmalloc/kfree leave a valid machine with nothing held."""
    env = {**os.environ, "NUMSLAB_GATE": gate}
    p = subprocess.run([sys.executable, "-c", _THREADS_CHILD], capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-1] == "0"


_DEFAULT_CHILD = """
import threading, numslab
errors = []
def work(i):
    try:
        for k in range(300):
            a = numslab.kmalloc(64 + (i * 37 + k) % 200)
            numslab.kfree(a)
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
numslab.default_allocator().validate()
print(len(errors), errors[:1])
"""


def test_threads_making_the_default_allocator_at_once_share_one():
    """The module-level functions' allocator is made on first use: four threads whose first
    call comes at the same time must get the same one (they once each made their own, the
    last replacing the others, and frees met the wrong allocator as double frees)."""
    p = subprocess.run([sys.executable, "-c", _DEFAULT_CHILD], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[0] == "0", p.stdout


@intrinsic
def _park_rows(typingctx, st, how):
    """Park the state at address ``st`` as a thread compiling a unit mid-operation does
    (``how`` the literal True), or put back what was parked (False)."""
    if not isinstance(how, types.BooleanLiteral):
        return None

    def codegen(context, builder, sig, args):
        fn = native.park_rows(builder.module, how.literal_value)
        builder.call(fn, [builder.inttoptr(args[0], fn.args[0].type)])
        return context.get_dummy_value()
    return types.none(types.int64, how), codegen


park = numba.njit(lambda st: _park_rows(st, True))
unpark = numba.njit(lambda st: _park_rows(st, False))


def test_park_points_every_main_sheaf_at_no_sheaf_and_puts_them_back(sa):
    """The park sends inlined fast paths to the units and restores every row, leaving a
    row that Python changed meanwhile as it is."""
    c = sa.kmem_cache_create("parked", 64, sheaf_capacity=8)
    c.free(c.alloc())
    a = c.alloc()
    cpt = sa.state.cpu
    before = cpt.copy()
    assert sa._mem[(no_sheaf(sa) >> 3) + SH_SIZE] == -1
    assert before[c.id, :, C_MAIN].any() and not before[..., C_PARKED].any()
    park(sa._st)
    assert ((cpt[..., C_MAIN] == no_sheaf(sa)) == (before[..., C_MAIN] != 0)).all()
    assert (cpt[..., C_PARKED] == before[..., C_MAIN]).all()
    cpt[c.id, 0, C_MAIN] = 12345                 # as if Python changed it meanwhile
    unpark(sa._st)
    expect = before.copy()
    expect[c.id, 0, C_MAIN] = 12345
    assert (cpt == expect).all()
    cpt[c.id, 0, C_MAIN] = before[c.id, 0, C_MAIN]
    c.free(a)
    sa.validate()
    assert native.UNIT_TABLE[native.ENGINE_BUSY] == 0


def test_a_cache_created_while_the_fast_paths_are_parked_keeps_its_rows(sa):
    """A cache created while another thread compiles a unit mid-operation (the fast paths
    parked) had the restore write the unused slot's saved words over its own: under 6.18 a
    CPU slab of 0 instead of NIL, which validate refused ("cpu slab is not a frozen slab
    of this cache"). Only the rows parked are put back."""
    from numslab.engine.layout import C_SLAB, NIL
    old = sa.kmem_cache_create("old", 64)
    a = old.alloc()
    gone = sa.kmem_cache_create("gone", 64)
    gone.free(gone.alloc())
    sa.kmem_cache_destroy(gone)             # its slot unused when the rows are parked
    park(sa._st)
    new = sa.kmem_cache_create("new", 96)
    fresh = sa.kmem_cache_create("fresh", 128)
    rows = {c.id: sa.state.cpu[c.id].copy() for c in (new, fresh)}
    unpark(sa._st)
    for c in (new, fresh):
        assert (sa.state.cpu[c.id] == rows[c.id]).all()
        assert (sa.state.cpu[c.id, :, C_SLAB] == NIL).all()
    sa.validate()
    b, d = new.alloc(), fresh.alloc()
    new.free(b)
    fresh.free(d)
    old.free(a)
    sa.validate()


def test_sheaf_addresses_never_lists_the_parking_placeholder(sa):
    """While another thread compiles a unit mid-operation, the main sheaves point at
    ``NO_SHEAF``; ``sheaf_addresses()`` listed it as a sheaf of the allocator (0x800)."""
    c = sa.kmem_cache_create("parked", 64)
    c.free(c.alloc())
    before = sorted(sa.sheaf_addresses().tolist())
    park(sa._st)
    parked = sa.sheaf_addresses().tolist()
    unpark(sa._st)
    assert no_sheaf(sa) - sa.memory.size not in parked
    assert sorted(parked) == before                 # (the parked ones still held)
    assert sorted(sa.sheaf_addresses().tolist()) == before


_WINDOW_CHILD = """
import sys, numpy as np, numba, numslab
from numslab import jit as nj
from numslab.engine import native
from numslab.engine.layout import C_MAIN, C_PARKED
from numslab.facade.threads import no_sheaf
sa = numslab.SlabAllocator(nr_cpus=2, memory="16M", kernel=sys.argv[1])
c = sa.kmem_cache_create("c", 64, sheaf_capacity=8)
sa.kmem_cache_free(c, sa.kmem_cache_alloc(c, cpu=0), cpu=0)     # a main sheaf to park
seen = []
def watch(frame, event, arg):   # the first Python the stub runs while the engine is busy
    if event == "call" and native.UNIT_TABLE[native.ENGINE_BUSY] and not seen:
        mains = sa.state.cpu[..., C_MAIN]
        seen.append(bool(((mains == 0) | (mains == no_sheaf(sa))).all()))
@numba.njit
def bulk(h, cid, out):
    n = nj.kmem_cache_alloc_bulk(h, cid, out.shape[0], out)
    nj.kmem_cache_free_bulk(h, cid, n, out)
    return n
out = np.zeros(100, np.int64)
bulk(sa.handle, c.id, out[:0])                  # compiled: no unit called yet
before = sa.state.cpu[..., C_MAIN].copy()
sys.setprofile(watch)
n = bulk(sa.handle, c.id, out)                  # the bulk units' first calls
sys.setprofile(None)
sa.validate()
print(seen, n, (sa.state.cpu[..., C_MAIN] != 0).sum() >= (before != 0).sum(),
      int(sa.state.cpu[..., C_PARKED].any()), native.UNIT_TABLE[native.ENGINE_BUSY])
"""


@pytest.mark.parametrize("gen", KERNELS)
def test_the_fast_paths_are_parked_before_the_stub_runs_any_python(gen):
    """The park hook ran in the stub's Python, and so did its restore: the interpreter may
    switch threads at any of those steps (NumPy released the GIL for the rows' copies), and
    other threads' inlined fast paths then used a main sheaf of the CPU whose operation was
    half-way (an object in two sheaves, freed twice to its slab: "inuse + free objects !=
    objects" after threads churned while caches came and went). The compiled caller now
    parks before the stub's first step and puts the rows back after its last."""
    p = subprocess.run([sys.executable, "-c", _WINDOW_CHILD, gen], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["[True]", "100", "True", "0", "0"], p.stdout


def test_load_writes_no_sheaf_whatever_was_saved(sa, tmp_path):
    """A machine saved without ``NO_SHEAF``'s size word (an older save) gets it back on load,
    so that parked fast paths still find an empty-and-full sheaf."""
    sa._mem[(no_sheaf(sa) >> 3) + SH_SIZE] = 0
    path = tmp_path / "m.npz"
    sa.save(path)
    sa._mem[(no_sheaf(sa) >> 3) + SH_SIZE] = -1
    back = type(sa).load(path)
    assert back._mem[(no_sheaf(back) >> 3) + SH_SIZE] == -1
    back.validate()


def test_caches_created_and_destroyed_by_two_threads_at_once_get_their_own_slots():
    """``kmem_cache_create`` took the first free slot and registered it several Python steps
    later: two threads could be given one slot (both KmemCache objects naming one cache
    row; a destroy then raised KeyError). They now hold the allocator's ``slab_mutex``, as
    the kernel's do."""
    import threading
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M")
    held, lock, errors = {}, threading.Lock(), []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)             # switch the GIL often: the race in a few steps

    def work(t):
        try:
            for i in range(150):
                c = sa.kmem_cache_create(f"t{t}-{i}", 64)
                with lock:
                    assert c.id not in held, (c.name, held.get(c.id))
                    held[c.id] = c.name
                sa.kmem_cache_free(c, sa.kmem_cache_alloc(c, cpu=t), cpu=t)
                with lock:
                    del held[c.id]
                sa.kmem_cache_destroy(c)
        except BaseException as e:          # noqa: BLE001 - reported below
            errors.append(repr(e))
    try:
        workers = [threading.Thread(target=work, args=(t,)) for t in (0, 1)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert [c.name for c in sa.caches] == [c.name for c in sa.kmalloc_caches]
    sa.validate()


def test_validate_and_a_grace_period_in_another_thread_do_not_meet(monkeypatch):
    """``validate`` took the ``kfree_rcu`` list in Python, then its unit lifted the listed
    objects' marks and put them back: a ``synchronize_rcu`` in another thread in between
    freed them, and the marks went back on free objects (every later free of one raised
    DoubleFreeError). The other thread's grace period now waits for the check."""
    import threading
    from numslab.engine import checks
    sa = numslab.SlabAllocator(kernel="6.18", nr_cpus=2, memory="16M")   # the list: no sheaves
    for a in [sa.kmalloc(64) for _ in range(32)]:
        sa.kfree_rcu(a)
    assert len(sa._rcu_listed()) == 32
    real, other = checks.validate, []

    def racing(*args):                  # the other thread's grace period, as the check starts
        t = threading.Thread(target=sa.synchronize_rcu)
        t.start()
        t.join(0.5)                     # it ran to its end before; now it waits
        other.append(t)
        return real(*args)
    monkeypatch.setattr(checks, "validate", racing)
    sa.validate()
    monkeypatch.undo()
    other[0].join()
    assert len(sa._rcu_listed()) == 0
    sa.validate()
    fresh = [sa.kmalloc(64) for _ in range(64)]
    for a in fresh:                     # the objects the grace period freed, handed out again
        sa.kfree(a)
    sa.validate()


def test_slabinfo_and_a_cache_destroyed_in_another_thread_do_not_meet(monkeypatch):
    """``slabinfo`` walks every cache (the kernel holds ``slab_mutex`` for it); a cache
    destroyed by another thread during the walk raised WrongCacheError or AttributeError
    from the reader. The destroy now waits for the walk."""
    import threading
    from numslab.facade.cache import KmemCache
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M")
    victims = [sa.kmem_cache_create(f"victim{i}", 128) for i in range(3)]
    real, other = KmemCache.partial_free_approx, []

    def racing(self):
        if not other:                   # the first cache the walk reads: destroy the rest
            t = threading.Thread(target=lambda: [sa.kmem_cache_destroy(v) for v in victims])
            t.start()
            t.join(0.5)
            other.append(t)
        return real(self)
    monkeypatch.setattr(KmemCache, "partial_free_approx", racing)
    text = sa.slabinfo()
    monkeypatch.undo()
    other[0].join()
    assert all(f"victim{i} " in text for i in range(3))     # the walk saw them whole
    assert not any(c.name.startswith("victim") for c in sa.caches)
    sa.validate()


def test_destroy_refuses_in_the_engine_an_object_taken_since_its_check(monkeypatch, kernel):
    """``kmem_cache_destroy`` checked for live objects in Python and released the slabs in a
    later engine call: an object another thread took in between was released with them
    (its free then refused, ``validate`` failing on the whole allocator). The release
    checks again in the same engine call and refuses, changing nothing."""
    from numslab.facade.cache import KmemCache
    sa = numslab.SlabAllocator(kernel=kernel, nr_cpus=2, memory="16M")
    c = sa.kmem_cache_create("raced", 96)
    a = sa.kmem_cache_alloc(c)          # as if another thread took it after the check
    monkeypatch.setattr(KmemCache, "live_objects", property(lambda self: 0))
    with pytest.raises(numslab.CacheLeakError, match="another thread allocated"):
        sa.kmem_cache_destroy(c)
    monkeypatch.undo()
    assert sa.find_cache("raced") is c and c.live_objects == 1
    sa.validate()
    b = sa.kmem_cache_alloc(c)          # still a working cache
    sa.kmem_cache_free(c, a)
    sa.kmem_cache_free(c, b)
    sa.kmem_cache_destroy(c)
    sa.validate()


def test_per_cache_tables_pruned_by_two_threads_at_once():
    """``_per_cache`` pruned destroyed caches' entries while iterating its table: another
    thread pruning the same table in between (two shrinks at once) raised RuntimeError or
    KeyError. The other thread is played by the cache lookup the pruning makes."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M")
    gone = [sa.kmem_cache_create(f"gone{i}", 64) for i in range(3)]
    for c in gone:
        c.shrink()                      # entries in the _shrink_freed table
        sa.kmem_cache_destroy(c)
    table = sa.__dict__["_shrink_freed"]

    class Racing(type(sa._caches)):
        __slots__ = ()

        def token(self, cid):
            if cid in table and cid not in self:
                table.clear()           # "another thread" pruned every entry meanwhile
            return super().token(cid)
    sa._caches.__class__ = Racing
    keep = sa.kmem_cache_create("kept", 64)
    assert keep.shrink() == 0 and keep.shrink_freed == 0
    assert list(sa.__dict__["_shrink_freed"]) == [keep.id]
    sa.validate()


def _racing(work, main, seconds_switch=1e-5):
    """Run ``work(stop)`` in a second thread while ``main()`` runs here, with the
    interpreter switching threads every ``seconds_switch`` s; ``main``'s result."""
    import threading
    old = sys.getswitchinterval()
    sys.setswitchinterval(seconds_switch)
    stop = threading.Event()
    t = threading.Thread(target=work, args=(stop,))
    t.start()
    try:
        return main()
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)


def test_prefilled_sheaves_construct_under_the_constructor_lock(kernel):
    """``kmem_cache_prefill_sheaf`` and ``_refill_sheaf`` ran the constructors of new slabs
    without the lock the allocations hold: another thread got objects before their
    constructor ran, a constructor overwrote an object after its hand-out, and the two
    rewrites of the due list raised IndexError (52-108 objects a run)."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="64M", kernel=kernel)
    mem = sa.memory

    def ctor(m, addr):
        m[addr:addr + 16] = 0xC7
    c = sa.kmem_cache_create("c", 64, ctor=ctor,
                             **({"sheaf_capacity": 16} if kernel == "6.18" else {}))
    failures = []

    def prefiller(stop):
        sa.set_cpu(1)
        while not stop.is_set():
            try:
                sh = sa.kmem_cache_prefill_sheaf(c, numslab.GFP_KERNEL, 40)
                sh = sa.kmem_cache_refill_sheaf(c, numslab.GFP_KERNEL, sh, 60)
                got = [sa.kmem_cache_alloc_from_sheaf(c, numslab.GFP_KERNEL, sh)
                       for _ in range(40)]
                sa.kmem_cache_return_sheaf(c, numslab.GFP_KERNEL, sh)
                for a in got:
                    sa.kmem_cache_free(c, a)
                sa.kmem_cache_shrink(c)
            except Exception as e:                  # (any error fails the test below)
                failures.append(e)

    def allocator():
        bad = 0
        for _ in range(80):
            held = [sa.kmem_cache_alloc(c) for _ in range(60)]
            for a in held:
                bad += not (mem[a:a + 16] == 0xC7).all()    # constructed before hand-out
                mem[a + 8:a + 16] = 0x55                    # the user's data
            for a in held:
                bad += not (mem[a + 8:a + 16] == 0x55).all()    # not constructed again
                mem[a:a + 16] = 0xC7
                sa.kmem_cache_free(c, a)
        return bad
    assert _racing(prefiller, allocator) == 0 and not failures
    sa.validate()


def test_validate_never_sees_a_returned_sheaf_half_way():
    """``kmem_cache_return_sheaf`` took the sheaf off the user's list and gave it back in two
    engine calls: a ``validate`` in another thread between them found its objects held by
    nothing ("inuse + free objects != objects"; 523 of 3000 calls). It is one call now."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="16M")
    c = sa.kmem_cache_create("c", 256)
    sa.validate()

    def sheaves(stop):
        while not stop.is_set():
            sh = sa.kmem_cache_prefill_sheaf(c, numslab.GFP_KERNEL, 10)
            sa.kmem_cache_return_sheaf(c, numslab.GFP_KERNEL, sh)

    def checks():
        for _ in range(400):
            sa.validate()
    _racing(sheaves, checks)
    sa.validate()


def test_destroys_in_one_thread_and_constructors_in_another_keep_the_due_list(kernel):
    """``kmem_cache_destroy`` rewrote the list of constructors due outside the constructor
    lock: a constructor cache's allocation in another thread read it half-written
    (IndexError, the object leaked), or the destroying thread did and left its cache
    neither usable nor destroyed. The engine now takes and puts the entries, and a
    discard forgets its own."""
    import time
    sa = numslab.SlabAllocator(nr_cpus=2, memory="64M", kernel=kernel)
    mem = sa.memory

    def ctor(m, addr):
        m[addr:addr + 16] = 0xC7
    c = sa.kmem_cache_create("c", 64, ctor=ctor)
    failures = []

    def destroyer(stop):
        sa.set_cpu(1)
        i = 0
        while not stop.is_set():
            try:
                x = sa.kmem_cache_create(f"x{i}", 128)
                sa.kmem_cache_free(x, sa.kmem_cache_alloc(x))
                sa.kmem_cache_destroy(x)
            except Exception as e:              # (any error fails the test below)
                failures.append(e)
                return
            i += 1

    def constructing():
        bad, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 3 and not failures:
            held = [sa.kmem_cache_alloc(c) for _ in range(120)]
            bad += sum(not (mem[a:a + 16] == 0xC7).all() for a in held)
            for a in held:
                sa.kmem_cache_free(c, a)
            sa.kmem_cache_shrink(c)
        return bad
    assert _racing(destroyer, constructing) == 0 and not failures
    sa.validate()


@pytest.mark.parametrize("large", [False, True], ids=["object", "large"])
def test_a_free_by_another_thread_inside_kfree_rcu_s_checks_is_refused_as_alone(
        kernel, large, monkeypatch):
    """Another thread's ``kfree`` of the object in the middle of ``kfree_rcu``'s checks (frees
    take no lock, the C gate's neither; here run at that point): ``kfree_rcu`` is refused as
    it would be after the free (``DoubleFreeError``; a large kmalloc's freed pages:
    ``BadAddressError``, as a second ``kfree``), nothing changed. Before, it read the freed
    block's order (``ValueError: negative shift count``), or called the freed object no
    allocation (``BadAddressError``)."""
    from numslab.facade.kmallocapi import KmallocAPI
    sa = numslab.SlabAllocator(nr_cpus=2, memory="64M", kernel=kernel)
    c = sa.kmem_cache_create("c", 64)
    if large:       # the upper half of a buddy pair: freed, it merges and is no block's head
        blocks = [sa.kmalloc(20000) for _ in range(16)]
        x = next(b for b in blocks if b & (8 << 12) and b - (8 << 12) in blocks)
        for b in blocks:
            if b != x:
                sa.kfree(b)
    else:
        x = c.alloc()
    hook, hooked = ("_own_block", KmallocAPI._own_block) if large else \
        ("_ksize", KmallocAPI._ksize)

    def other_thread_frees_first(self, *args, **kw):
        monkeypatch.setattr(KmallocAPI, hook, hooked)       # (once)
        if large:
            sa.kfree(x)
            sa.drain_all_pages()        # (its pages merged in the buddy lists: not a head)
        else:
            c.free(x)
        after_free.append(snapshot(sa))
        return hooked(self, *args, **kw)
    after_free: list = []
    monkeypatch.setattr(KmallocAPI, hook, other_thread_frees_first)
    with pytest.raises(numslab.BadAddressError if large else numslab.DoubleFreeError,
                       match=r"kfree_rcu: .*(already freed|double free)"):
        sa.kfree_rcu(x)
    assert_unchanged(sa, after_free[0])             # as the other thread's free left it
    assert sa.kvfree_rcu_barrier() == 0 and len(c) == 0
    sa.validate()


def test_the_kfree_rcu_list_is_read_under_its_lock(monkeypatch):
    """kmem_cache_validate read the kfree_rcu list without the list's lock, then its unit
    lifted and restored the marks of that list: a grace period ending in between left a
    freed object marked as waiting (slabs isolated, validate() failing); len(c) and destroy
    iterated the list as another thread's kfree_rcu added to it (a RuntimeError)."""
    import threading
    from numslab.engine import debug
    from numslab.facade.kmallocapi import _RCU_LOCK
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", slab_debug="F")
    c = sa.kmem_cache_create("v", 64)
    held = []
    unit = debug.validate_slab_cache

    def checked(*args):
        held.append(_RCU_LOCK._is_owned())
        return unit(*args)
    monkeypatch.setattr(debug, "validate_slab_cache", checked)
    sa.kfree_rcu(c.alloc())
    assert sa.kmem_cache_validate(c) == 0 and held == [True]
    monkeypatch.undo()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    errors, stop = [], threading.Event()

    def churn():
        try:
            while not stop.is_set():
                for _ in range(50):
                    sa.kfree_rcu(c.alloc())
                sa.synchronize_rcu()
        except Exception as e:                       # pragma: no cover - the failure
            errors.append(e)
    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(3000):
            len(c)
            sa.kmem_cache_validate(c)
    except Exception as e:                           # pragma: no cover - the failure
        errors.append(e)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    assert not errors
    sa.synchronize_rcu()
    assert len(c) == 0 and not sa.isolated_slabs().size
    sa.validate()


_DESTROY_CHILD = """
import sys, threading, numpy as np, numslab
sys.setswitchinterval(1e-6)
sa = numslab.SlabAllocator(nr_cpus=2, memory="64M")
cur, stop, other = [None], [False], []
def user():
    out = np.empty(8, np.int64)
    while not stop[0]:
        c = cur[0]
        if c is None:
            continue
        try:
            n = sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, 8, out)
            if n:
                sa.kfree_bulk(n, out)
            a = sa.kmem_cache_alloc(c)
            if a:
                sa.kmem_cache_free(c, a)
        except numslab.SlabError:
            pass                    # the user's race: refused, as it may be
        except Exception as e:
            other.append(repr(e))
ts = [threading.Thread(target=user) for _ in range(3)]
for t in ts: t.start()
for i in range(800):
    try:
        c = sa.kmem_cache_create(f"c{i}", 64 * (1 + i % 2))
    except numslab.SlabError:
        break                       # every slot held by caches whose destroy was refused
    cur[0] = c
    for _ in range(3):
        try:
            sa.kmem_cache_destroy(c, force=True)
            break
        except numslab.SlabError:
            pass
stop[0] = True
for t in ts: t.join()
print("other", len(other), other[:2])
"""


@pytest.mark.parametrize("gate", ["1", "0"])
def test_a_cache_used_while_another_thread_destroys_it_never_crashes(gate):
    """Threads allocating from a cache while another destroys it and makes the next: the
    interpreter aborted ("corrupted size vs. prev_size") in 5 of 6 runs, the engine given
    the -1 of a destroyed cache (the facade read the id after Python ran, the call gate
    after asking for the thread's CPU) or a slot another cache had taken. The operations
    now read the id under the slab_mutex (the gate after the CPU), so a race is refused
    with a SlabError."""
    env = {**os.environ, "NUMSLAB_GATE": gate}
    p = subprocess.run([sys.executable, "-c", _DESTROY_CHILD], capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split("\n")[-2].startswith("other 0 "), p.stdout[-500:]


_GATE_COMPILE_CHILD = """
import numpy as np, numslab
from numslab.engine import ops
sa = numslab.SlabAllocator(nr_cpus=1, memory="8M")
assert sa._gate is not None
c = sa.kmem_cache_create("victim", 64)
unit = ops.alloc_bulk
assert unit.address == 0                        # its first call comes through the gate
real = unit.compile
made = []
def compile_while_another_thread_destroys():    # as the compiler lets other threads run
    if c.id >= 0:
        cid = c.id
        sa.kmem_cache_destroy(c)
        made.append(sa.kmem_cache_create("usurper", 64))    # in the slot it left
        assert made[0].id == cid
    return real()
unit.compile = compile_while_another_thread_destroys
out = np.zeros(8, np.int64)
try:
    print("allocated", sa.kmem_cache_alloc_bulk(c, numslab.GFP_KERNEL, 8, out))
except numslab.SlabError as e:
    print("refused", type(e).__name__, "destroyed" in str(e))
sa.validate()
print("usurper", made[0].live_objects)
"""


def test_the_gate_compiles_a_unit_before_it_reads_the_cache_id():
    """The call gate read the cache id, then called the unit's stub, which compiled it
    (running Python: other threads run) and ran it with that id: a cache destroyed
    meanwhile was handed to the engine, or the cache made in its slot (8 of its objects
    handed out as the destroyed cache's; the interpreter's heap corrupted at exit in about 1
    run in 12 of four threads churning while caches came and went). The gate now compiles
    first, then reads the id."""
    p = subprocess.run([sys.executable, "-c", _GATE_COMPILE_CHILD], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "NUMSLAB_GATE": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["refused", "WrongCacheError", "True", "usurper", "0"], p.stdout


def test_a_release_waits_for_the_threads_waiting_to_enter_the_engine(sa):
    """A thread that waits to enter the engine (another compiling a unit mid-operation)
    holds a cache id it checked before it waited; a destroy that ran first left it to run
    on a dead cache. The release refuses while threads wait, and the destroy tries again."""
    import threading
    from numslab.engine import ops
    c = sa.kmem_cache_create("waited", 64)
    c.free(c.alloc())
    native.UNIT_TABLE[native.ENGINE_WAITERS] += 1          # a thread waiting, as it were
    try:
        assert ops.cache_release(sa._st, c.id, 0, 0) == ops.RELEASE_LATER
        assert sa.find_cache("waited") is c
        t = threading.Thread(target=sa.kmem_cache_destroy, args=(c,))
        t.start()
        t.join(0.3)
        assert t.is_alive() and sa.find_cache("waited") is c     # it waits its turn
    finally:
        native.UNIT_TABLE[native.ENGINE_WAITERS] -= 1
    t.join()
    assert "waited" not in [x.name for x in sa.caches]
    sa.validate()


def test_save_writes_one_moment_of_a_machine_other_threads_are_using(tmp_path, kernel):
    """``save`` copied the state, hashed the arena and wrote it while other threads went on
    (NumPy and zlib release the GIL): every file of 30 saved beside a thread's kmalloc
    churn was 'damaged' (its digest no longer its content). It now holds the engine and
    the allocator's locks while it reads the machine, and the other threads wait."""
    import random
    import threading
    sa = numslab.SlabAllocator(nr_cpus=2, memory="8M", kernel=kernel)
    stop = threading.Event()

    def churn():
        rng, held = random.Random(1), []
        while not stop.is_set():
            if held and rng.random() < 0.5:
                sa.kfree(held.pop(rng.randrange(len(held))))
            else:
                held.append(sa.kmalloc(rng.choice([16, 64, 200, 1000, 3000])))
            if len(held) > 2000:
                for a in held:
                    sa.kfree(a)
                held.clear()
    t = threading.Thread(target=churn)
    t.start()
    try:
        for i in range(4):
            sa.save(tmp_path / f"m{i}.npz")
    finally:
        stop.set()
        t.join()
    for i in range(4):
        type(sa).load(tmp_path / f"m{i}.npz").validate()
    assert native.UNIT_TABLE[native.ENGINE_BUSY] == 0
    assert not sa.state.cpu[..., C_PARKED].any()
    sa.validate()


def test_a_wait_cut_short_waits_again(sa):
    """A Ctrl-C in ``wait_for_engine``'s sleep ended the wait (a ctypes callback cannot
    raise: the KeyboardInterrupt was printed and dropped), and the unit ran while another
    thread's operation was half-way. A unit's entry now tests the engine again after each
    wait: here a wait that returns at once, as a cut-short one does."""
    import ctypes
    import threading
    import time
    c = sa.kmem_cache_create("waiting", 64)
    c.free(c.alloc())                   # (the unit compiled before: no compile's time here)
    calls, cleared = [], []

    def short_wait():
        calls.append(1)
        time.sleep(0.001)
        return 0
    wait = ctypes.CFUNCTYPE(ctypes.c_int64)(short_wait)

    def other_thread_compiling():
        time.sleep(0.3)
        cleared.append(time.monotonic())
        native.UNIT_TABLE[native.ENGINE_BUSY] = 0
        native.UNIT_TABLE[native.ENGINE_OWNER] = 0
    old = int(native.UNIT_TABLE[native.ENGINE_WAIT])
    native.UNIT_TABLE[native.ENGINE_OWNER] = 12345          # no thread of ours
    native.UNIT_TABLE[native.ENGINE_BUSY] = 1
    native.UNIT_TABLE[native.ENGINE_WAIT] = ctypes.cast(wait, ctypes.c_void_p).value
    t = threading.Thread(target=other_thread_compiling)
    try:
        t.start()
        a = sa.kmem_cache_alloc(c)
        entered = time.monotonic()
    finally:
        t.join()
        native.UNIT_TABLE[native.ENGINE_WAIT] = old
    assert cleared and entered >= cleared[0] and len(calls) > 1
    c.free(a)
    sa.validate()


_COMPILE_CHILD = """
import os, signal, sys, time, numba, numslab
# Ctrl-C as a program on a terminal has it: a job started in the background (nohup, `&`,
# a CI runner) inherits SIGINT ignored, where Python installs no handler of its own
signal.signal(signal.SIGINT, signal.default_int_handler)
from numslab import jit as nj
from numslab.engine import ops
sa = numslab.SlabAllocator(nr_cpus=1, memory="16M")
c = sa.kmem_cache_create("c", 64)
u = ops.kmem_cache_alloc_node
assert u.address == 0                   # its first call: from compiled code
real, calls, compiled = u.compile, [], [time.monotonic()]
def compile_once_interrupted():
    calls.append(1)
    if sys.argv[1] == "sigint":             # a real one: its handler runs inside the compile
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    elif len(calls) == 1 or sys.argv[1] == "fails":
        raise KeyboardInterrupt if sys.argv[1] == "ctrl-c" else RuntimeError("no compiler")
    run = real()
    compiled.append(time.monotonic())
    return run
u.compile = compile_once_interrupted
alloc = numba.njit(lambda h, cid: nj.kmem_cache_alloc(h, cid))
try:
    alloc(sa.handle, c.id)
    time.sleep(5)                       # (the KeyboardInterrupt comes here at the latest)
    outcome = "finished"
except KeyboardInterrupt:
    outcome = "interrupted"
late = time.monotonic() - compiled[-1] > 1       # (after the operation's last compile)
del u.compile
sa.validate()
b = alloc(sa.handle, c.id)              # a later call runs as ever
sa.validate()
print(outcome, late, c.live_objects, 0 < b < sa.memory.size, len(calls),
      signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""


def test_a_ctrl_c_during_a_compile_mid_operation_raises_once_it_returns():
    """A real SIGINT while a unit compiles in the middle of an operation: said at once, and
    raised as KeyboardInterrupt once the operation has returned to Python (the object it
    allocated is the allocator's, which validates), the program's handler back after. It
    was ignored for good (a KeyboardInterrupt raised inside the compile restarted it, and one
    raised inside llvmlite's own callbacks was dropped there and failed the compile: exit 70,
    a new user's Ctrl-C during the main job's first run)."""
    p = subprocess.run([sys.executable, "-c", _COMPILE_CHILD, "sigint"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["interrupted", "False", "2", "True", "1", "True"], p.stdout
    assert "KeyboardInterrupt deferred: compiling numslab.engine.ops.kmem_cache_alloc_node" \
        in p.stderr
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr


@pytest.mark.parametrize("how", ["ctrl-c", "fails"])
def test_a_unit_that_does_not_compile_mid_operation_is_never_run_as_its_stub(how):
    """A unit whose first call, from compiled code, failed to compile (a Ctrl-C during the
    compile, or an error) returned an undefined value from its stub, a ctypes callback that
    cannot raise (an 'address' outside the arena, 0x7ffe...). A KeyboardInterrupt raised
    there now starts the compile again and is raised once the operation returns; any other
    failure exits with its traceback (the operation can neither finish nor be undone)."""
    p = subprocess.run([sys.executable, "-c", _COMPILE_CHILD, how], capture_output=True,
                       text=True, timeout=600)
    if how == "ctrl-c":
        assert p.returncode == 0, p.stderr[-2000:]
        assert p.stdout.split() == ["interrupted", "False", "2", "True", "2", "True"], p.stdout
        assert "KeyboardInterrupt deferred" in p.stderr
    else:
        assert p.returncode == 70 and "interrupted" not in p.stdout
        assert "RuntimeError: no compiler" in p.stderr and "failed to compile" in p.stderr
