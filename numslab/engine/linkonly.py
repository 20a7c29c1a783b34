"""Link-only compilation of the engine's helpers.

A helper is compiled to optimised LLVM IR that units and ``numslab.jit`` functions link in, never
to machine code or a cache entry of its own.

Numba finishes every function it compiles as if Python were to call it: a CPython wrapper, a C
wrapper, the whole library made machine code by the JIT, and the library pickled into the
cache. An engine helper is only ever linked into the units and ``numslab.jit`` functions that
call it (where it is optimised again with its caller), so all of that was thrown away: on a
cold first ``kmalloc`` it was 40% of the compile (ARCHITECTURE.md, "What is compiled when").
Here a helper's library is optimised as Numba optimises any library, but stops there.

Only a helper marked ``inline=True`` (the fast paths' helpers) has its module optimised alone,
its callees linked in; any other keeps Numba's function passes only and is optimised once, in
the unit or ``numslab.jit`` function that links it (with everything else it calls). Optimised
alone too, every such helper ran LLVM's whole module pipeline twice: a tenth of a cold first
``kmalloc``'s CPU time, and nothing the compiled units gained (measured in docs/PERFORMANCE.md,
"First calls on an empty Numba cache"); a fast-path helper optimised alone is what makes the
fast paths' inlined code as tight as it is (without it the sheaves' bulk 16 inside ``@njit``
was 6-10% slower).
"""
from __future__ import annotations

import ctypes
from typing import Any

from numba import _dynfunc
from numba.core.codegen import JITCodeLibrary
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import register_pass
from numba.core.typed_passes import NativeLowering

#: The entry point's C function: ``PyObject_Call(closure, args, kwargs)``. A helper's dispatcher
#: refuses Python calls itself (``native.HelperDispatcher``); should anything call the entry
#: point directly, it raises ``TypeError`` (the closure is not callable) instead of jumping
#: into code that was never made.
_NO_CODE = ctypes.cast(ctypes.pythonapi.PyObject_Call, ctypes.c_void_p).value

#: Options a helper is compiled with on top of the engine's: no wrapper for Python or C.
NO_WRAPPERS = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}


class LinkOnlyLibrary(JITCodeLibrary):
    """A helper's code library: optimised like any other, then only linked into callers.

    It is never added to the JIT engine, so LLVM never makes machine code of it alone. Its module
    is optimised alone only if :attr:`optimise_alone` (the helper is ``inline=True``): else
    only by the callers that link it."""

    #: Whether :meth:`_optimize_final_module` runs LLVM's module passes on this library.
    optimise_alone = True

    def _optimize_final_module(self) -> None:
        if self.optimise_alone:
            super()._optimize_final_module()

    def _finalize_final_module(self) -> None:
        self._finalize_dynamic_globals()
        self._verify_declare_only_symbols()
        self._finalized = True

    def get_pointer_to_function(self, name: str) -> int:
        raise RuntimeError(f"{self.name}: a link-only helper has no machine code of its own")


@register_pass(mutates_CFG=True, analysis_only=False)
class LinkOnlyLowering(NativeLowering):
    """Numba's lowering pass into a :class:`LinkOnlyLibrary`, registering the function for callers.

    Its entry point runs no compiled code."""

    _name = "numslab_link_only_lowering"

    def run_pass(self, state: Any) -> bool:
        ctx = state.targetctx
        library = state.library = LinkOnlyLibrary(ctx.codegen(), state.func_id.func_qualname)
        library.optimise_alone = bool(state.flags.forceinline)
        outer = ctx.__dict__.get("get_executable")         # a link-only lowering around this
        made = outer or type(ctx).get_executable.__get__(ctx)

        def get_executable(lib: Any, fndesc: Any, env: Any) -> Any:
            if lib is not library:                          # not this helper's
                return made(lib, fndesc, env)
            return _dynfunc.make_function(fndesc.lookup_module(),
                                          fndesc.qualname.split(".")[-1],
                                          "numslab engine helper (compiled code only)",
                                          _NO_CODE, env, (lib,))
        ctx.get_executable = get_executable                 # under Numba's compiler lock
        try:
            return super().run_pass(state)
        finally:
            if outer is None:
                del ctx.get_executable
            else:
                ctx.get_executable = outer


class LinkOnlyCompiler(CompilerBase):
    """Numba's nopython pipeline with :class:`LinkOnlyLowering` for its lowering pass."""

    def define_pipelines(self) -> list:
        pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pm.passes = [(LinkOnlyLowering if p is NativeLowering else p, d) for p, d in pm.passes]
        return [pm]
