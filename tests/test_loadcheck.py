"""``load``'s checks of a machine file's state behind its digest (``facade/loadcheck.py``).

A file edited on purpose, its digest recomputed: the checks refuse each word that compiled code
would follow without a bound, or that would leave the machine unlike any ``save`` writes."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab.engine import layout as L

from conftest import snapshot
from test_allocator import _save_signed

KERNELS = ("7.0", "6.18")


def _at(state: np.ndarray, field: int, i: int) -> int:
    """The index in a saved state buffer of element ``i`` of field ``field``."""
    return int(state[L.H_FIELDS + 2 * field]) + i * (L.ROW if field in L.ROW_COLS else 1)


def test_load_refuses_live_bits_that_are_no_object_nor_own_mark(kernel, tmp_path):
    """The live bitmap was taken as saved: a bit on the granule after a user's kmalloc object,
    a free one or a large kmalloc (the allocator's own mark) made their kfree refused ever
    after as "a sheaf the allocator itself uses", the free one once kmalloc handed it out; a
    cache's ``random_seq`` and ``CA_RSEQ_LEN`` set to 0 left its sequence marked, an object
    no one frees, ``find`` naming it a sheaf; bits inside an object or a free page passed too;
    ``validate`` saw none of it. Each is refused at ``load`` now, naming the bitmap word."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M", kernel=kernel)
    c = sa.kmem_cache_create("seq", 96)
    a = sa.kmem_cache_alloc(c)
    user = sa.kmalloc(64)
    slab = sa.find(user)["slab"]
    free = next(o for o in range(slab, slab + 4096, 64) if sa.find(o)["kind"] == "free object")
    big = sa.kmalloc(20000)
    seq = int(sa.state.random_seq[c.id])
    page = int(np.flatnonzero(sa.state.pg_flags & L.PG_BUDDY)[-1]) << 12
    sa.save(tmp_path / "good.npz")
    z = dict(np.load(tmp_path / "good.npz"))
    state = z["state"]
    ncols = sa.state.ca.shape[1]
    orphan = {_at(state, L.F_RANDOM_SEQ, c.id): 0,
              _at(state, L.F_CA, c.id * ncols + L.CA_RSEQ_LEN): 0,
              _at(state, L.F_CA, c.id * ncols + L.CA_RSEQ): 0}
    for bit, words in ((user + 8, {}), (free + 8, {}), (big + 8, {}), (a + 16, {}),
                       (page, {}), (seq + 8, orphan)):
        bad = state.copy()
        for i, v in words.items():
            bad[i] = v
        if not words:
            i = _at(state, L.F_LIVE, bit >> 9)
            bad[i:i + 1].view(np.uint64)[0] |= np.uint64(1 << ((bit >> 3) & 63))
        _save_signed(tmp_path / "bad.npz", {**z, "state": bad})
        with pytest.raises(numslab.MachineFileError,
                           match=rf"its state is corrupt: live\[{bit >> 9}\] is .*, its bit "
                                 rf"{(bit >> 3) & 63} \(address {bit}\) neither an object's "
                                 rf"start in a slab nor the mark of a sheaf, barn or random "
                                 rf"sequence the allocator holds"):
            numslab.SlabAllocator.load(tmp_path / "bad.npz")
    again = numslab.SlabAllocator.load(tmp_path / "good.npz")
    again.validate()
    again.kfree(user)
    again.kfree(big)
    assert again.find(seq)["kind"] == "random_seq"


def _flip_live(state: np.ndarray, addr: int) -> np.ndarray:
    """A copy of saved state buffer ``state`` with the live bit of ``addr`` set."""
    bad = state.copy()
    i = _at(state, L.F_LIVE, addr >> 9)
    bad[i:i + 1].view(np.uint64)[0] |= np.uint64(1 << ((addr >> 3) & 63))
    return bad


def test_load_refuses_a_free_object_marked_live(kernel, tmp_path):
    """A live bit set on a free object (on its slab's free list, in a CPU's sheaf, in a barn's
    sheaf) loaded: the live-bit check took any object's start. The loaded machine took a kfree
    of that object no one held (then free twice: ``validate`` failed, "free list is longer
    than the slab" under 6.18), and dropped a sheaf's entry as stale, isolating its slab.
    Refused now, naming the bitmap
    word, the object and where it is: the slab counts it free (``sl_inuse``)."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M", kernel=kernel)
    c = sa.kmem_cache_create("c", 64, sheaf_capacity=8)
    objs = [sa.kmem_cache_alloc(c, cpu=0) for _ in range(300)]
    for a in objs[:9:-1]:             # (the last ones first: CPU 0 holds the last slab)
        sa.kmem_cache_free(c, a, cpu=0)
    d = sa.kmem_cache_create("d", 96)
    kept = [sa.kmem_cache_alloc(d, cpu=0) for _ in range(3)]
    sa.kmem_cache_shrink(d)             # its slab partial, its free objects on its free list
    st = sa.state
    slab = kept[0] >> 12
    listed = int(st.sl_freelist[slab])
    assert listed and not st.pg_flags[slab] & (L.PG_FROZEN | L.PG_ISOLATED)
    main = int(st.cpu[c.id, 0, L.C_MAIN])
    barn = int(st.node[c.id, 0, L.N_BARN_FULL])
    assert main and barn

    def top(h: int) -> int:         # (of a slab no CPU holds: 6.18's are left out)
        w = (h >> 3) + L.SH_OBJECTS
        held = sa._mem[w:w + sa._mem[(h >> 3) + L.SH_SIZE]]
        return int(held[(st.pg_flags[held >> 12] & L.PG_FROZEN) == 0][-1])
    sa.save(tmp_path / "good.npz")
    z = dict(np.load(tmp_path / "good.npz"))
    for a, where in ((listed, r"on its slab's free list"),
                     (top(main), rf"in the sheaf at \d+ \(cpu\[{c.id}, 0, C_MAIN\] leads there\)"),
                     (top(barn), rf"in the sheaf at \d+ \(node\[{c.id}, 0, N_BARN_FULL\] leads "
                                 rf"there\)")):
        assert sa.find(a)["kind"] == "free object"
        _save_signed(tmp_path / "bad.npz", {**z, "state": _flip_live(z["state"], a)})
        with pytest.raises(numslab.MachineFileError,
                           match=rf"its state is corrupt: live\[{a >> 9}\] is -?\d+, its bit "
                                 rf"{(a >> 3) & 63} marks the free object at {a} \({where}\) "
                                 rf"live: its slab at {a >> 12 << 12} counts (\d+) objects in "
                                 rf"use, not the \d+ live, in sheaves or lost"):
            numslab.SlabAllocator.load(tmp_path / "bad.npz")
    again = numslab.SlabAllocator.load(tmp_path / "good.npz")
    again.validate()
    assert len(again.find_cache("c")) == 10 and len(again.find_cache("d")) == 3


@pytest.mark.parametrize("gen", ["7.0", "6.18"])
def test_load_takes_the_state_a_free_pointer_naming_a_sheaf_object_leaves(gen, tmp_path):
    """A stray write's state: a free pointer rewritten to name an object CPU 1's main sheaf
    holds. The slab layer refuses it (the object is held), isolates the slab and never hands
    the object out, which stays in the sheaf alone. It is a state ``save`` writes, and
    ``load`` takes it: the machines go on alike."""
    from test_sheaves import _half_freed_on_cpu1, _point_a_free_list_at, sheaf_objs
    for seed in range(40):
        sa, c = _half_freed_on_cpu1(gen, seed)
        main = int(sa.state.cpu[c.id, 1, L.C_MAIN])
        x = _point_a_free_list_at(sa, c, sheaf_objs(sa, main)[:-1])
        if x is not None:
            break
    refused, out = 0, []
    for _ in range(3000):
        try:
            a = sa.kmem_cache_alloc(c, cpu=0)
        except numslab.SlabCorruptionError:
            refused += 1
            continue
        out.append(a)
        if a in (0, x) or len(out) > 200:
            break
    assert refused and x not in out and sheaf_objs(sa, main).count(x) == 1
    assert sa.find(x)["kind"] == "free object" and sa.isolated_slabs()
    sa.save(tmp_path / "m.npz")
    back = numslab.SlabAllocator.load(tmp_path / "m.npz")
    for m in (sa, back):
        got = [m.kmem_cache_alloc(m.find_cache("x"), cpu=1) for _ in range(20)]
        assert x in got and len(set(got)) == 20
        m.validate()
    a, b = snapshot(sa), snapshot(back)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def _held_word(state: np.ndarray, addr: int, on: bool) -> np.ndarray:
    """A copy of saved state buffer ``state`` with the held bit of ``addr`` set or cleared."""
    bad = state.copy()
    i = _at(state, L.F_HELD, addr >> 9)
    bit = np.uint64(1 << ((addr >> 3) & 63))
    w = bad[i:i + 1].view(np.uint64)
    w[0] = w[0] | bit if on else w[0] & ~bit
    return bad


def test_load_refuses_a_held_bitmap_that_is_not_the_objects_off_the_free_lists(kernel,
                                                                                 tmp_path):
    """Field ``held`` was taken as saved: a held bit cleared on an object a sheaf holds let
    a free pointer name it and the slab layer hand it out while the sheaf held it; one cleared
    on a user's object, the same once it was freed into a sheaf; one set on a free object of
    a free list made its slab refuse its own list as corrupted; one set off an object's start
    or on a free page passed; a pending record (which no save writes) passed too, and so did
    an object live and in a sheaf (its slab counting it twice: the state a stray write left
    before the held bits). Each is refused at ``load`` now, naming the word."""
    sa = numslab.SlabAllocator(nr_cpus=2, memory="4M", kernel=kernel)
    c = sa.kmem_cache_create("c", 64, sheaf_capacity=8)
    objs = [sa.kmem_cache_alloc(c, cpu=0) for _ in range(300)]
    for a in objs[:9:-1]:
        sa.kmem_cache_free(c, a, cpu=0)
    d = sa.kmem_cache_create("d", 96, sheaf_capacity=4)    # (sheaves: it keeps held bits)
    kept = [sa.kmem_cache_alloc(d, cpu=0) for _ in range(3)]
    sa.kmem_cache_shrink(d)             # its slab partial, its free objects on its free list
    st = sa.state
    listed = int(st.sl_freelist[kept[0] >> 12])
    main = int(st.cpu[c.id, 0, L.C_MAIN])
    cached = int(sa._mem[(main >> 3) + L.SH_OBJECTS])
    page = int(np.flatnonzero(st.pg_flags & L.PG_BUDDY)[-1]) << 12
    assert sa.find(listed)["kind"] == "free object" and listed
    sa.save(tmp_path / "good.npz")
    z = dict(np.load(tmp_path / "good.npz"))
    state = z["state"]
    for a, on, what in (
            (cached, False, rf"its bit {(cached >> 3) & 63} is clear, but the object at "
                            rf"{cached} is in the sheaf at \d+"),
            (objs[0], False, rf"its bit {(objs[0] >> 3) & 63} is clear, but the object at "
                             rf"{objs[0]} is live"),
            (listed, True, rf"its bit {(listed >> 3) & 63} marks the free object at {listed} "
                           rf"held: it is neither live nor in a sheaf"),
            (kept[0] + 8, True, rf"its bit {((kept[0] + 8) >> 3) & 63} \(address "
                                rf"{kept[0] + 8}\) is no object's start"),
            (page, True, rf"its bit 0 \(address {page}\) is no object's start")):
        _save_signed(tmp_path / "bad.npz", {**z, "state": _held_word(state, a, on)})
        with pytest.raises(numslab.MachineFileError,
                           match=rf"its state is corrupt: held\[{a >> 9}\] is -?\d+, {what}"):
            numslab.SlabAllocator.load(tmp_path / "bad.npz")
    sheaves = [int(h) for h in (*st.cpu[c.id, :, L.C_MAIN], *st.cpu[c.id, :, L.C_SPARE],
                                st.node[c.id, 0, L.N_BARN_FULL]) if h]
    x = next(int(o) for h in sheaves                            # (in a slab with room)
             for o in sa._mem[(h >> 3) + L.SH_OBJECTS:(h >> 3) + L.SH_OBJECTS
                              + sa._mem[(h >> 3) + L.SH_SIZE]]
             if st.sl_inuse[o >> 12] < st.sl_objects[o >> 12])
    bad = _flip_live(state, x)              # (its slab counting it twice: the sum holds)
    bad[_at(state, L.F_SL_INUSE, x >> 12)] += 1
    _save_signed(tmp_path / "bad.npz", {**z, "state": bad})
    with pytest.raises(numslab.MachineFileError, match=rf"held\[{x >> 9}\] is -?\d+, the "
                                                       rf"object at {x} is in the sheaf at "
                                                       rf"\d+ .*and live or in a sheaf again"):
        numslab.SlabAllocator.load(tmp_path / "bad.npz")
    for field, i in ((L.F_G, L.G_PEND), (L.F_PEND, L.PD_COUNT)):
        bad = state.copy()
        bad[_at(state, field, i)] = 4
        _save_signed(tmp_path / "bad.npz", {**z, "state": bad})
        with pytest.raises(numslab.MachineFileError, match=r"is 4, not 0: save settles the "
                                                           r"pending bulk allocation"):
            numslab.SlabAllocator.load(tmp_path / "bad.npz")
    again = numslab.SlabAllocator.load(tmp_path / "good.npz")
    again.validate()


def test_load_refuses_a_file_of_the_format_before_held(tmp_path):
    """A file of format 12 (no fields ``held`` and ``pend``: its state is shorter) was refused
    only as one that "does not fit the machine it describes"; the format is later now (13 added
    them, 14 grew ``pend`` to the checked record's size, 15 saves the arena's written frames
    only), and such a file is refused as an older numslab's, as the format said."""
    import json
    from numslab.facade.persist import FORMAT
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    sa.kmem_cache_create("c", 64).alloc()
    sa.save(tmp_path / "m.npz")
    z = dict(np.load(tmp_path / "m.npz"))
    meta = json.loads(str(z["meta"]))
    held = sa.state.held.size + sa.state.pend.size
    old = {**z, "state": z["state"][:-held],
           "meta": np.array(json.dumps({**{k: v for k, v in meta.items()
                                           if k not in ("digest", "pending_takes")},
                                        "format": 12}))}
    _save_signed(tmp_path / "old.npz", old)
    assert FORMAT == 15
    with pytest.raises(numslab.MachineFileError, match=r"is not a numslab machine of format 15 "
                                                       r"\(it is format 12, written by an "
                                                       r"older numslab"):
        numslab.SlabAllocator.load(tmp_path / "old.npz")
