"""``load``'s checks of a machine file's state behind its digest (``facade/loadcheck.py``).

A file edited on purpose, its digest recomputed: the checks refuse each word that compiled code
would follow without a bound, or that would leave the machine unlike any ``save`` writes."""
from __future__ import annotations

import numpy as np
import pytest

import numslab
from numslab.engine import layout as L

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
