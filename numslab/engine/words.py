"""Raw int64 word pointers in compiled code (``Words``) and the intrinsics on them.

A ``Words`` is a field of the state, the arena, an array's data; the intrinsics are loads and
stores marked by region, byte fills, copies and swaps. No bounds checks: the engine's kernels check
addresses themselves."""
from __future__ import annotations

import operator
from typing import Any

from llvmlite import ir
from numba import types
from numba.core.typing.templates import AbstractTemplate, infer_global, signature
from numba.extending import intrinsic, lower_builtin, models, register_model

_I64 = ir.IntType(64)
_P64 = _I64.as_pointer()
_I8P = ir.IntType(8).as_pointer()


def invariant_load(builder: Any, ptr: Any) -> Any:
    """A load the optimiser may hoist and merge: the word never changes while code runs."""
    value = builder.load(ptr)
    value.set_metadata("invariant.load", builder.module.add_metadata([]))
    return value


# ---- Words: a raw pointer to int64 words --------------------------------------------------------
class WordsType(types.Type):
    """A raw pointer to int64 words.

    ``w[i]`` loads word ``i`` and ``w[i] = v`` stores it, with no bounds check and no reference
    count. Every field of the state and the arena are Words.

    Words of a named ``region`` (a field of the state, or ``mem``, the arena) mark their loads
    and stores with LLVM type-based alias metadata of that region: the fields of a state and
    the arena never overlap, so the optimiser may keep a field's words in registers across
    stores to other regions (what lets the inlined fast paths of two calls share their loads).
    Plain ``Words`` (``words_at``: arrays passed in) carry no mark and may alias anything.
    A field kept as a column of a row table (``layout.ROW_COLS``) has a ``stride``: ``w[i]`` is
    word ``i * stride``, and the intrinsics that take a field's address refuse it."""

    def __init__(self, region: str = "", stride: int = 1) -> None:
        self.region, self.stride = region, stride
        name = f"numslab.Words[{region}]" if region else "numslab.Words"
        super().__init__(name=name if stride == 1 else f"{name}/{stride}")


Words = WordsType()
_REGIONS: dict[tuple[str, int], WordsType] = {}


def words_of(region: str, stride: int = 1) -> WordsType:
    """The Words type of a named region with ``stride`` (one instance per pair)."""
    if (region, stride) not in _REGIONS:
        _REGIONS[region, stride] = WordsType(region, stride)
    return _REGIONS[region, stride]


def _flat(*ws: Any) -> bool:
    """Whether every type in ``ws`` is Words with no stride (the address intrinsics' own)."""
    return all(isinstance(w, WordsType) and w.stride == 1 for w in ws)


def _index(context: Any, builder: Any, sig: Any, i: Any) -> Any:
    """Index ``i`` (argument 1 of ``sig``) of the Words ``sig.args[0]``, times its stride."""
    i, stride = context.cast(builder, i, sig.args[1], types.int64), sig.args[0].stride
    return i if stride == 1 else builder.mul(i, ir.Constant(_I64, stride), flags=["nsw"])


@register_model(WordsType)
class _WordsModel(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: Any) -> None:
        super().__init__(dmm, fe_type, _P64)


@infer_global(operator.getitem)
class _WordsGetItem(AbstractTemplate):
    def generic(self, args: tuple, kws: dict) -> Any:
        if len(args) == 2 and isinstance(args[0], WordsType) \
                and isinstance(args[1], types.Integer):
            return signature(types.int64, args[0], args[1])


@infer_global(operator.setitem)
class _WordsSetItem(AbstractTemplate):
    def generic(self, args: tuple, kws: dict) -> Any:
        if len(args) == 3 and isinstance(args[0], WordsType) \
                and isinstance(args[1], types.Integer) \
                and isinstance(args[2], (types.Integer, types.Boolean)):
            return signature(types.none, args[0], args[1], args[2])


def _mark_region(builder: Any, instr: Any, region: str) -> None:
    """Attach the TBAA access tag of ``region`` to a load or store (none for plain Words)."""
    if not region:
        return
    mod = builder.module
    root = mod.add_metadata([ir.MetaDataString(mod, "numslab regions")])
    node = mod.add_metadata([ir.MetaDataString(mod, f"numslab.{region}"), root,
                             ir.Constant(_I64, 0)])
    instr.set_metadata("tbaa", mod.add_metadata([node, node, ir.Constant(_I64, 0)]))


@lower_builtin(operator.getitem, WordsType, types.Integer)
def _words_get(context: Any, builder: Any, sig: Any, args: Any) -> Any:
    ptr, i = args
    value = builder.load(builder.gep(ptr, [_index(context, builder, sig, i)]))
    _mark_region(builder, value, sig.args[0].region)
    return value


@lower_builtin(operator.setitem, WordsType, types.Integer, types.Any)
def _words_set(context: Any, builder: Any, sig: Any, args: Any) -> Any:
    ptr, i, v = args
    store = builder.store(context.cast(builder, v, sig.args[2], types.int64),
                          builder.gep(ptr, [_index(context, builder, sig, i)]))
    _mark_region(builder, store, sig.args[0].region)
    return context.get_dummy_value()


@intrinsic
def fixed(typingctx: Any, w: Any, i: Any) -> Any:
    """``w[i]`` for a word that does not change while compiled code runs, as an invariant load.

    A cache's geometry: only Python, between calls, writes it. The optimiser may merge and hoist
    the load across stores."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        value = invariant_load(builder, builder.gep(args[0], [_index(context, builder, sig,
                                                                      args[1])]))
        _mark_region(builder, value, sig.args[0].region)
        return value
    if isinstance(w, WordsType) and isinstance(i, types.Integer):
        return types.int64(w, i), codegen


@intrinsic
def words_at(typingctx: Any, addr: Any) -> Any:
    """The Words at byte address ``addr`` (an int)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], _P64)
    return Words(types.int64), codegen


@intrinsic
def address(typingctx: Any, w: Any) -> Any:
    """The byte address of Words (or of a State: an ``addressable`` type) ``w``, as an int."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.ptrtoint(args[0], _I64)
    if _flat(w) or getattr(w, "addressable", False):
        return types.int64(w), codegen


@intrinsic
def byte_array(typingctx: Any, w: Any, n: Any) -> Any:
    """The ``n`` bytes at Words ``w`` as a uint8 array (no reference count: it owns nothing)."""
    arrty = types.Array(types.uint8, 1, "C")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ary = context.make_array(arrty)(context, builder)
        n = context.cast(builder, args[1], sig.args[1], types.intp)
        one = ir.Constant(n.type, 1)
        context.populate_array(ary, data=builder.bitcast(args[0], ary.data.type),
                               shape=[n], strides=[one], itemsize=one, meminfo=None)
        return ary._getvalue()
    if _flat(w) and isinstance(n, types.Integer):
        return arrty(w, n), codegen


@intrinsic
def swab(typingctx: Any, x: Any) -> Any:
    """The 8 bytes of int64 ``x`` in reverse order (the kernel's ``swab``)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        v = context.cast(builder, args[0], sig.args[0], types.int64)
        return builder.call(builder.module.declare_intrinsic("llvm.bswap", [_I64]), [v])
    if isinstance(x, types.Integer):
        return types.int64(x), codegen


@intrinsic
def shift(typingctx: Any, w: Any, i: Any) -> Any:
    """``w`` advanced by ``i`` words (``&w[i]``)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.gep(args[0], [context.cast(builder, args[1], sig.args[1], types.int64)])
    if _flat(w) and isinstance(i, types.Integer):
        return w(w, i), codegen


@intrinsic
def zero_bytes(typingctx: Any, w: Any, off: Any, n: Any) -> Any:
    """``memset`` the ``n`` bytes at byte offset ``off`` of ``w`` to zero."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        base = builder.bitcast(args[0], _I8P)
        dst = builder.gep(base, [context.cast(builder, args[1], sig.args[1], types.int64)])
        size = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.call(builder.module.declare_intrinsic("llvm.memset", [_I8P, _I64]),
                     [dst, ir.Constant(ir.IntType(8), 0), size, ir.Constant(ir.IntType(1), 0)])
        return context.get_dummy_value()
    if _flat(w) and isinstance(off, types.Integer) and isinstance(n, types.Integer):
        return types.none(w, off, n), codegen


@intrinsic
def fill_bytes(typingctx: Any, w: Any, off: Any, value: Any, n: Any) -> Any:
    """``memset`` the ``n`` bytes at byte offset ``off`` of ``w`` to ``value`` (0..255)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        base = builder.bitcast(args[0], _I8P)
        dst = builder.gep(base, [context.cast(builder, args[1], sig.args[1], types.int64)])
        byte = builder.trunc(context.cast(builder, args[2], sig.args[2], types.int64),
                             ir.IntType(8))
        size = context.cast(builder, args[3], sig.args[3], types.int64)
        builder.call(builder.module.declare_intrinsic("llvm.memset", [_I8P, _I64]),
                     [dst, byte, size, ir.Constant(ir.IntType(1), 0)])
        return context.get_dummy_value()
    if _flat(w) and all(isinstance(a, types.Integer) for a in (off, value, n)):
        return types.none(w, off, value, n), codegen


@intrinsic
def copy_bytes(typingctx: Any, dst: Any, doff: Any, src: Any, soff: Any, n: Any) -> Any:
    """``memmove`` ``n`` bytes from byte offset ``soff`` of ``src`` to ``doff`` of ``dst``."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        d = builder.gep(builder.bitcast(args[0], _I8P),
                        [context.cast(builder, args[1], sig.args[1], types.int64)])
        s = builder.gep(builder.bitcast(args[2], _I8P),
                        [context.cast(builder, args[3], sig.args[3], types.int64)])
        size = context.cast(builder, args[4], sig.args[4], types.int64)
        builder.call(builder.module.declare_intrinsic("llvm.memmove", [_I8P, _I8P, _I64]),
                     [d, s, size, ir.Constant(ir.IntType(1), 0)])
        return context.get_dummy_value()
    if _flat(dst, src):
        return types.none(dst, doff, src, soff, n), codegen
