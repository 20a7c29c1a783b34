"""numslab's exceptions: every refusal is a ``SlabError`` subclass, also the built-in
exception a Python user would catch for it."""
from __future__ import annotations

import ast
import gc
import weakref
from pathlib import Path

import numba
import numpy as np
import pytest

import numslab
from numslab import errors

from conftest import jit_free

PACKAGE = Path(numslab.__file__).parent
#: Where a bare ``SlabError`` may still be raised: an error code no kernel returns.
BASE_ALLOWED = {("facade/raising.py", "error")}


def _base_raises() -> list[tuple[str, int, str]]:
    """Every ``raise SlabError(...)`` / ``return SlabError(...)`` in the package's sources."""
    found = []
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            value = node.exc if isinstance(node, ast.Raise) else \
                node.value if isinstance(node, ast.Return) else None
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) \
                    and value.func.id == "SlabError":
                text = ast.unparse(value.args[0]) if value.args else ""
                found.append((str(f.relative_to(PACKAGE)), node.lineno, text))
    return found


def test_no_refusal_raises_the_bare_base_class():
    bare = [(f, line, text) for f, line, text in _base_raises()
            if not any(f == g and w in text for g, w in BASE_ALLOWED)]
    assert not bare, "raise a SlabError subclass:\n" + "\n".join(map(str, bare))


def test_every_exception_is_exported_and_a_slab_error():
    classes = [v for v in vars(errors).values()
               if isinstance(v, type) and issubclass(v, Exception) and v.__module__ ==
               errors.__name__]
    assert len(classes) >= 18
    for cls in classes:
        assert issubclass(cls, numslab.SlabError) and getattr(numslab, cls.__name__) is cls
        assert cls.__name__ in numslab.__all__ and cls.__doc__.strip()


@pytest.mark.parametrize("cls, builtin", [
    (numslab.AllocatorGoneError, ReferenceError), (numslab.MachineFileError, ValueError),
    (numslab.OutOfMemoryError, MemoryError), (numslab.InvalidArgumentError, ValueError),
    (numslab.WrongTypeError, TypeError)])
def test_each_is_also_the_builtin_exception_of_its_kind(cls, builtin):
    assert issubclass(cls, builtin)


def test_a_method_kept_past_its_allocator_is_allocator_gone():
    kmalloc = numslab.SlabAllocator(nr_cpus=1, memory="4M").kmalloc
    gc.collect()
    with pytest.raises(numslab.AllocatorGoneError, match="no longer exists") as e:
        kmalloc(64)
    assert isinstance(e.value, ReferenceError)


def test_a_constructor_that_raises_is_a_constructor_error_with_its_cause():
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")

    def ctor(mem: np.ndarray, addr: int) -> None:
        raise KeyError("no")
    c = sa.kmem_cache_create("c", 64, ctor=ctor)
    with pytest.raises(numslab.ConstructorError, match="c: the constructor raised KeyError") \
            as e:
        c.alloc()
    assert isinstance(e.value.__cause__, KeyError) and len(c) == 0
    sa.validate()
    ref = weakref.ref(sa)
    del sa, c, e
    gc.collect()
    assert ref() is None


def test_a_file_that_is_no_machine_is_a_machine_file_error(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(numslab.MachineFileError, match="is not a numslab machine") as e:
        numslab.SlabAllocator.load(tmp_path / "x.npz")
    assert isinstance(e.value, ValueError)
    # NumPy's own hint for a file of no known magic ("If you trust the file you can load
    # it ...", cut at 80 characters) asked a user to unpickle what load never does
    assert "not a NumPy .npz file" in str(e.value) and "trust" not in str(e.value)


@numba.njit
def _jit_kmalloc(h, size):
    return numslab.jit.kmalloc(h, size)


@numba.njit
def _jit_bulk(h, cid, nr, out):
    return numslab.jit.kmem_cache_alloc_bulk(h, cid, nr, out)


def test_a_size_of_the_wrong_type_is_one_class_from_python_and_njit():
    """A size, count or order that is no integer raised ``InvalidSizeError`` from Python
    (``sa.kmalloc("64")``, ``kmalloc(64.0)``) but ``WrongTypeError`` through ``numslab.jit`` in
    ``@njit`` code, and ``kmem_cache_create``'s size ``WrongTypeError`` from Python: both raise
    ``SizeTypeError`` now, a ``WrongTypeError`` (a ``TypeError``) and an ``InvalidSizeError``
    (a ``ValueError``), so that a handler of either catches it. A value out of range stays an
    ``InvalidSizeError`` alone."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    a, out = sa.kmalloc(64), np.zeros(4, np.int64)
    G = numslab.GFP_KERNEL
    wrong = [("kmalloc", lambda v: sa.kmalloc(v)),
             ("kmem_cache_create", lambda v: sa.kmem_cache_create("x", v)),
             ("kmalloc_array", lambda v: sa.kmalloc_array(v, 8)),
             ("krealloc", lambda v: sa.krealloc(a, v)),
             ("kmem_cache_alloc_bulk", lambda v: sa.kmem_cache_alloc_bulk(c, G, v, out)),
             ("kmem_cache_prefill_sheaf", lambda v: sa.kmem_cache_prefill_sheaf(c, G, v)),
             ("alloc_bulk", lambda v: c.alloc_bulk(v)),
             ("alloc_pages", lambda v: sa.alloc_pages(v)),
             ("release_memory", lambda v: sa.release_memory(v)),
             ("calculate_geometry", lambda v: numslab.calculate_geometry(v, 8, 0, False, 1)),
             ("SlabAllocator", lambda v: numslab.SlabAllocator(memory="4M", slab_min_order=v)),
             ("numslab.jit.kmalloc", lambda v: _jit_kmalloc(sa.handle, v)),
             ("numslab.jit.kmem_cache_alloc_bulk", lambda v: _jit_bulk(sa.handle, c.id, v, out))]
    assert issubclass(numslab.SizeTypeError, numslab.WrongTypeError) and \
        issubclass(numslab.SizeTypeError, numslab.InvalidSizeError)
    for name, call in wrong:
        for v in ("64", 2.0, True, None):
            if v is None and name == "SlabAllocator":
                continue                # (an order of None: the default)
            with pytest.raises(numslab.SizeTypeError, match=repr(v) if name[0] != "n" else
                               "must be an integer, not"):
                call(v)
        if not name.startswith("numslab.jit"):
            with pytest.raises(numslab.InvalidSizeError) as e:
                call(-1)
            assert not isinstance(e.value, numslab.WrongTypeError), name
    assert len(c) == 0 and sa.ksize(a) == 64


@numba.njit
def _jit_kfree(h, addr):
    numslab.jit.kfree(h, addr)


def test_an_address_of_the_wrong_type_is_one_class_from_python_and_njit():
    """An address that is no integer was a ``BadAddressError`` from Python (not a ``TypeError``:
    ``except TypeError`` missed it) and a ``WrongTypeError`` in ``@njit`` code (not a
    ``BadAddressError``): both raise ``AddressTypeError`` now, a ``WrongTypeError`` and a
    ``BadAddressError``, and free nothing (a new user's trial found the split)."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    a, b = sa.kmalloc(64), c.alloc()
    wrong = [("kfree", lambda v: sa.kfree(v)),
             ("kmem_cache_free", lambda v: sa.kmem_cache_free(c, v)),
             ("free", lambda v: c.free(v)),
             ("free_bulk", lambda v: c.free_bulk([v])),
             ("numslab.jit.kfree", lambda v: _jit_kfree(sa.handle, v)),
             ("numslab.jit.kmem_cache_free", lambda v: jit_free(sa.handle, c.id, v))]
    assert issubclass(numslab.AddressTypeError, numslab.WrongTypeError) and \
        issubclass(numslab.AddressTypeError, numslab.BadAddressError)
    for name, call in wrong:
        for v in (float(b), str(b), True):
            if name == "free_bulk" and v is True:
                continue                # (an array of bools: refused as such below)
            with pytest.raises(numslab.AddressTypeError):
                call(v)
    with pytest.raises(numslab.AddressTypeError, match="must be integers, not bool"):
        c.free_bulk(np.array([True]))
    with pytest.raises(numslab.BadAddressError) as e:
        sa.kfree(b + 8)                 # a wrong integer: a BadAddressError alone
    assert not isinstance(e.value, TypeError)
    assert len(c) == 1 and sa.ksize(a) == 64
    c.free(b)
    sa.kfree(a)
    sa.validate()


@numba.njit
def _jit_kfree_bulk(h, n, objs):
    numslab.jit.kfree_bulk(h, n, objs)


def test_zero_size_ptr_in_a_batch_free_is_named_and_an_address_outside_the_arena_too():
    """``kfree`` ignores ZERO_SIZE_PTR, what ``kmalloc(0)`` returns; a batch free refuses it, and
    the error said only that page frame 0 is reserved (a new user's trial): it names it now,
    from Python and ``@njit`` alike, and frees nothing. ``@njit``'s free of an address outside
    the arena says so, as Python's does."""
    sa = numslab.SlabAllocator(nr_cpus=1, memory="4M")
    c = sa.kmem_cache_create("c", 64)
    x, z = sa.kmalloc(64), sa.kmalloc(0)
    assert z == numslab.ZERO_SIZE_PTR
    batch = np.array([x, z], np.int64)
    for call in (lambda: sa.kfree_bulk(2, batch.copy()),
                 lambda: _jit_kfree_bulk(sa.handle, 2, batch.copy())):
        with pytest.raises(numslab.BadAddressError, match="0x10 is ZERO_SIZE_PTR, what "
                           "kmalloc\\(0\\) returns, which kfree alone ignores") as e:
            call()
        assert "element 1" in str(e.value) and sa.ksize(x) == 64
    with pytest.raises(numslab.BadAddressError, match="outside the arena.*address 0x40000000"):
        jit_free(sa.handle, c.id, 1 << 30)
    sa.kfree(z)
    sa.kfree(x)
    sa.validate()
